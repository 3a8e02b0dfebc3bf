//! Stdio stream connections: one connection per stream of a process, opened by the host.
//!
//! The host writes one header line naming the container, the exec (or `-` for the
//! container's init) and the stream, and the agent answers `OK` or `ERR <why>`; after that
//! the connection carries raw bytes. The agent reads a process's output only while a stream
//! is attached, so output written before the host connects waits in the pipe (the process
//! blocks when it is full) and is never lost; closing the stdin stream is EOF for the process.

use std::fmt;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

const MAGIC: &str = "WARD-STREAM";
const VERSION: &str = "1";
/// No header is longer: the agent stops reading there rather than buffer without bound.
pub const MAX_HEADER_LEN: usize = 1024;
const MAX_ID_LEN: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Stdin,
    Stdout,
    Stderr,
}

impl StreamKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Stdin => "stdin",
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// Which stream of which process a connection carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHeader {
    pub container_id: String,
    /// `None` for the container's init process.
    pub exec_id: Option<String>,
    pub kind: StreamKind,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StreamError {
    #[error(
        "stream header {0:?} is malformed: expected `{MAGIC} {VERSION} <container> <exec|-> <stdin|stdout|stderr>`"
    )]
    Malformed(String),
    #[error("stream header version {0:?} is not supported (want {VERSION})")]
    Version(String),
    #[error("stream kind {0:?} is unknown (want stdin, stdout or stderr)")]
    Kind(String),
    #[error("{what} {id:?} is not a valid id (1..={MAX_ID_LEN} printable, non-space characters)")]
    Id { what: &'static str, id: String },
    #[error("stream header longer than {MAX_HEADER_LEN} bytes")]
    TooLong,
    #[error("stream refused by the agent: {0}")]
    Refused(String),
    #[error("stream connection closed before the header was complete")]
    Eof,
    #[error("stream i/o: {0}")]
    Io(String),
}

impl From<std::io::Error> for StreamError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e.to_string())
    }
}

fn check_id(what: &'static str, id: &str) -> Result<(), StreamError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id != "-"
        && id.chars().all(|c| c.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(StreamError::Id {
            what,
            id: id.to_owned(),
        })
    }
}

impl StreamHeader {
    pub fn new(
        container_id: &str,
        exec_id: Option<&str>,
        kind: StreamKind,
    ) -> Result<Self, StreamError> {
        check_id("container id", container_id)?;
        if let Some(exec) = exec_id {
            check_id("exec id", exec)?;
        }
        Ok(Self {
            container_id: container_id.to_owned(),
            exec_id: exec_id.map(str::to_owned),
            kind,
        })
    }

    /// Parses one header line (without or with its trailing newline).
    pub fn parse(line: &str) -> Result<Self, StreamError> {
        let fields: Vec<&str> = line.trim_end_matches(['\n', '\r']).split(' ').collect();
        let [magic, version, container, exec, kind] = fields[..] else {
            return Err(StreamError::Malformed(line.to_owned()));
        };
        if magic != MAGIC {
            return Err(StreamError::Malformed(line.to_owned()));
        }
        if version != VERSION {
            return Err(StreamError::Version(version.to_owned()));
        }
        let kind = match kind {
            "stdin" => StreamKind::Stdin,
            "stdout" => StreamKind::Stdout,
            "stderr" => StreamKind::Stderr,
            other => return Err(StreamError::Kind(other.to_owned())),
        };
        Self::new(container, (exec != "-").then_some(exec), kind)
    }
}

impl fmt::Display for StreamHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exec = self.exec_id.as_deref().unwrap_or("-");
        writeln!(
            f,
            "{MAGIC} {VERSION} {} {exec} {}",
            self.container_id,
            self.kind.as_str()
        )
    }
}

/// Reads one `\n`-terminated line of at most [`MAX_HEADER_LEN`] bytes.
async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R) -> Result<String, StreamError> {
    let mut line = Vec::new();
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Err(StreamError::Eof);
        }
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        if line.len() + chunk.len() > MAX_HEADER_LEN {
            return Err(StreamError::TooLong);
        }
        line.extend_from_slice(chunk);
        let n = chunk.len();
        reader.consume(n);
        if done {
            return String::from_utf8(line).map_err(|e| StreamError::Malformed(e.to_string()));
        }
    }
}

/// Agent side: reads the header a host sent. The caller answers with [`accept`] or [`refuse`].
pub async fn read_header<R: AsyncBufRead + Unpin>(
    reader: &mut R,
) -> Result<StreamHeader, StreamError> {
    StreamHeader::parse(&read_line(reader).await?)
}

pub async fn accept<W: AsyncWrite + Unpin>(writer: &mut W) -> Result<(), StreamError> {
    writer.write_all(b"OK\n").await?;
    Ok(writer.flush().await?)
}

pub async fn refuse<W: AsyncWrite + Unpin>(writer: &mut W, why: &str) -> Result<(), StreamError> {
    let why = why.replace('\n', " ");
    writer.write_all(format!("ERR {why}\n").as_bytes()).await?;
    Ok(writer.flush().await?)
}

/// Host side: sends the header and waits for the agent's answer.
pub async fn open<S: AsyncBufRead + AsyncWrite + Unpin>(
    conn: &mut S,
    header: &StreamHeader,
) -> Result<(), StreamError> {
    conn.write_all(header.to_string().as_bytes()).await?;
    conn.flush().await?;
    let answer = read_line(conn).await?;
    match answer.trim_end() {
        "OK" => Ok(()),
        other => Err(StreamError::Refused(
            other.strip_prefix("ERR ").unwrap_or(other).to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{BufReader, duplex};

    #[test]
    fn header_round_trips() {
        for (exec, kind) in [(None, StreamKind::Stdout), (Some("e1"), StreamKind::Stdin)] {
            let h = StreamHeader::new("c1", exec, kind).unwrap();
            assert_eq!(StreamHeader::parse(&h.to_string()).unwrap(), h);
        }
        assert_eq!(
            StreamHeader::new("abc", None, StreamKind::Stderr)
                .unwrap()
                .to_string(),
            "WARD-STREAM 1 abc - stderr\n"
        );
    }

    #[test]
    fn bad_headers_say_what_is_wrong() {
        assert!(matches!(
            StreamHeader::parse("hello"),
            Err(StreamError::Malformed(_))
        ));
        assert_eq!(
            StreamHeader::parse("WARD-STREAM 2 c - stdout"),
            Err(StreamError::Version("2".into()))
        );
        assert_eq!(
            StreamHeader::parse("WARD-STREAM 1 c - stdfoo"),
            Err(StreamError::Kind("stdfoo".into()))
        );
        let long = "x".repeat(MAX_ID_LEN + 1);
        assert!(matches!(
            StreamHeader::parse(&format!("WARD-STREAM 1 {long} - stdout")),
            Err(StreamError::Id {
                what: "container id",
                ..
            })
        ));
        assert!(StreamHeader::new("a\u{7f}", None, StreamKind::Stdout).is_err());
        assert!(StreamHeader::new("-", None, StreamKind::Stdout).is_err());
    }

    #[tokio::test]
    async fn handshake_then_raw_bytes() {
        let (host, agent) = duplex(4096);
        let agent_side = tokio::spawn(async move {
            let mut agent = BufReader::new(agent);
            let header = read_header(&mut agent).await.unwrap();
            accept(&mut agent).await.unwrap();
            let mut rest = String::new();
            tokio::io::AsyncReadExt::read_to_string(&mut agent, &mut rest)
                .await
                .unwrap();
            (header, rest)
        });
        let mut host = BufReader::new(host);
        let header = StreamHeader::new("c1", Some("e1"), StreamKind::Stdin).unwrap();
        open(&mut host, &header).await.unwrap();
        host.write_all(b"payload").await.unwrap();
        drop(host);
        let (seen, rest) = agent_side.await.unwrap();
        assert_eq!(seen, header);
        assert_eq!(rest, "payload");
    }

    #[tokio::test]
    async fn refusal_and_oversized_headers() {
        let (host, agent) = duplex(4096);
        tokio::spawn(async move {
            let mut agent = BufReader::new(agent);
            let _ = read_header(&mut agent).await;
            refuse(&mut agent, "container \"c9\" not found")
                .await
                .unwrap();
        });
        let mut host = BufReader::new(host);
        let header = StreamHeader::new("c9", None, StreamKind::Stdout).unwrap();
        assert_eq!(
            open(&mut host, &header).await,
            Err(StreamError::Refused("container \"c9\" not found".into()))
        );

        let (mut host, agent) = duplex(8192);
        host.write_all(&[b'x'; MAX_HEADER_LEN + 10]).await.unwrap();
        let mut agent = BufReader::new(agent);
        assert_eq!(read_header(&mut agent).await, Err(StreamError::TooLong));
    }
}
