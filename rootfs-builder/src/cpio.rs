//! A writer for the "newc" cpio format the kernel unpacks as an initramfs.
//!
//! Inode numbers are assigned in order and mtimes are zero, so the same entries in the same
//! order always give the same bytes.

use std::fmt::Write as _;
use std::io::{self, Write};

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFCHR: u32 = 0o020_000;

/// One entry to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node<'a> {
    Dir { mode: u32 },
    File { mode: u32, data: &'a [u8] },
    CharDev { mode: u32, major: u32, minor: u32 },
}

/// Streams newc entries to `out`; call [`Writer::finish`] to write the trailer.
#[derive(Debug)]
pub struct Writer<W: Write> {
    out: W,
    next_ino: u32,
    written: u64,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            next_ino: 1,
            written: 0,
        }
    }

    /// Appends `name` (relative, no leading `/`).
    pub fn append(&mut self, name: &str, node: &Node<'_>) -> io::Result<()> {
        let (mode, data, rdev) = match *node {
            Node::Dir { mode } => (S_IFDIR | mode, &[][..], (0, 0)),
            Node::File { mode, data } => (S_IFREG | mode, data, (0, 0)),
            Node::CharDev { mode, major, minor } => (S_IFCHR | mode, &[][..], (major, minor)),
        };
        let nlink = if matches!(node, Node::Dir { .. }) {
            2
        } else {
            1
        };
        let ino = self.next_ino;
        self.next_ino += 1;
        self.entry(ino, mode, nlink, rdev, name, data)
    }

    /// Writes the `TRAILER!!!` entry and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.entry(0, 0, 1, (0, 0), "TRAILER!!!", &[])?;
        // Pad the archive to 512 bytes as cpio(1) does; the kernel ignores the zeros.
        let pad = (512 - self.written % 512) % 512;
        self.out.write_all(&vec![0; pad as usize])?;
        Ok(self.out)
    }

    fn entry(
        &mut self,
        ino: u32,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        name: &str,
        data: &[u8],
    ) -> io::Result<()> {
        let size = u32::try_from(data.len())
            .map_err(|_| io::Error::other(format!("{name} is larger than 4 GiB")))?;
        let namesize = name.len() + 1;
        let fields = [
            ino,
            mode,
            0,
            0,
            nlink,
            0,
            size,
            0,
            0,
            rdev.0,
            rdev.1,
            namesize as u32,
            0,
        ];
        let header = fields.iter().fold(String::from("070701"), |mut h, f| {
            let _ = write!(h, "{f:08x}");
            h
        });
        self.write_padded(header.as_bytes(), &[name.as_bytes(), b"\0"].concat())?;
        self.write_padded(&[], data)
    }

    /// Writes `head` + `body` and pads to a multiple of 4 from the start of the archive.
    fn write_padded(&mut self, head: &[u8], body: &[u8]) -> io::Result<()> {
        self.out.write_all(head)?;
        self.out.write_all(body)?;
        self.written += (head.len() + body.len()) as u64;
        let pad = (4 - self.written % 4) % 4;
        self.out.write_all(&[0; 3][..pad as usize])?;
        self.written += pad;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[test]
    fn cpio_tool_reads_what_we_write() {
        let mut w = Writer::new(Vec::new());
        w.append("dev", &Node::Dir { mode: 0o755 }).unwrap();
        w.append(
            "hello",
            &Node::File {
                mode: 0o755,
                data: b"hi there\n",
            },
        )
        .unwrap();
        w.append(
            "x",
            &Node::File {
                mode: 0o644,
                data: b"",
            },
        )
        .unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % 512, 0);
        let mut child = Command::new("cpio")
            .args(["-it", "--quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("cpio is installed");
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout), "dev\nhello\nx\n");
    }
}
