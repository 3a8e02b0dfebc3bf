//! Just enough ELF parsing to tell a static executable from a dynamic one.
//!
//! A binary with a `PT_INTERP` program header needs a dynamic loader (and a libc) that
//! neither the guest initrd nor the demo image has; static-pie binaries have none and pass.

use std::io;
use std::path::{Path, PathBuf};

const PT_INTERP: u32 = 3;

/// Why a binary cannot be used as a static executable.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is not a 64-bit little-endian ELF executable ({why})")]
    NotElf { path: PathBuf, why: &'static str },
    #[error(
        "{path} is dynamically linked (it asks for the loader {interpreter}); \
         build it statically (scripts/static-bin.sh PACKAGE; \
         scripts/static-agent.sh for ward-agent)"
    )]
    Dynamic { path: PathBuf, interpreter: String },
}

impl Error {
    pub(crate) fn read(path: &Path, source: io::Error) -> Self {
        Self::Read {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Reads `path` and fails unless it is a statically linked 64-bit ELF.
pub fn require_static(path: &Path) -> Result<(), Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::read(path, e))?;
    check_static(path, &bytes)
}

/// [`require_static`] on bytes already read.
pub fn check_static(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let not_elf = |why| Error::NotElf {
        path: path.to_path_buf(),
        why,
    };
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" {
        return Err(not_elf("no ELF magic"));
    }
    if bytes[4] != 2 || bytes[5] != 1 {
        return Err(not_elf("not ELFCLASS64/ELFDATA2LSB"));
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
    let e_type = u16_at(0x10);
    if e_type != 2 && e_type != 3 {
        return Err(not_elf("neither ET_EXEC nor ET_DYN"));
    }
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into().unwrap()) as usize;
    let phentsize = usize::from(u16_at(0x36));
    let phnum = usize::from(u16_at(0x38));
    if phentsize < 56 {
        return Err(not_elf("program header entries too small"));
    }
    for i in 0..phnum {
        let off = phoff
            .checked_add(i * phentsize)
            .filter(|o| o + phentsize <= bytes.len())
            .ok_or_else(|| not_elf("program headers run past the end of the file"))?;
        let p_type = u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap());
        if p_type == PT_INTERP {
            let at = u64::from_le_bytes(bytes[off + 8..off + 16].try_into().unwrap()) as usize;
            let len = u64::from_le_bytes(bytes[off + 32..off + 40].try_into().unwrap()) as usize;
            let interpreter = bytes.get(at..at.saturating_add(len)).map_or_else(
                || "?".into(),
                |s| String::from_utf8_lossy(s).trim_end_matches('\0').to_owned(),
            );
            return Err(Error::Dynamic {
                path: path.to_path_buf(),
                interpreter,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_dynamic_binary_is_refused_with_its_loader() {
        let e = require_static(Path::new("/bin/ls"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/bin/ls is dynamically linked"), "{e}");
        assert!(e.contains("ld-linux"), "{e}");
    }

    #[test]
    fn static_busybox_passes() {
        if !Path::new("/bin/busybox").exists() {
            eprintln!("SKIP static_busybox_passes: needs busybox-static");
            return;
        }
        require_static(Path::new("/bin/busybox")).unwrap();
    }

    #[test]
    fn non_elf_is_named() {
        let e = check_static(Path::new("/x.sh"), b"#!/bin/sh\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/x.sh is not a 64-bit"), "{e}");
    }
}
