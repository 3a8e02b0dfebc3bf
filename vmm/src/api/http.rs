//! A minimal HTTP/1.1 server side: one request per connection, `Content-Length` bodies,
//! `Connection: close` responses. Enough for curl and ward's own clients.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};

const MAX_HEADER_BYTES: usize = 8 * 1024;
const MAX_BODY_BYTES: usize = 64 * 1024;

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
}

/// Why a request could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("reading the request: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("request too large: {0}")]
    TooLarge(&'static str),
}

/// Reads one request from `stream`.
pub fn read_request(stream: impl Read) -> Result<Request, HttpError> {
    let mut reader = BufReader::new(stream);
    let mut header_bytes = 0;
    let mut line = String::new();
    let mut next_line = |reader: &mut BufReader<_>, line: &mut String| -> Result<(), HttpError> {
        line.clear();
        let n = reader.read_line(line)?;
        header_bytes += n;
        if header_bytes > MAX_HEADER_BYTES {
            return Err(HttpError::TooLarge("headers"));
        }
        if n == 0 {
            return Err(HttpError::Malformed(
                "connection closed in the headers".into(),
            ));
        }
        Ok(())
    };
    next_line(&mut reader, &mut line)?;
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::Malformed(format!(
            "request line {:?}",
            line.trim_end()
        )));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Malformed(format!("version {version:?}")));
    }
    let (method, path) = (method.to_owned(), path.to_owned());
    let mut content_length = 0usize;
    loop {
        next_line(&mut reader, &mut line)?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            return Err(HttpError::Malformed(format!("header {header:?}")));
        };
        if name.trim().eq_ignore_ascii_case("content-length") {
            content_length = value
                .trim()
                .parse()
                .map_err(|_| HttpError::Malformed(format!("Content-Length {:?}", value.trim())))?;
        }
    }
    if content_length > MAX_BODY_BYTES {
        return Err(HttpError::TooLarge("body"));
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body)?;
    Ok(Request { method, path, body })
}

/// A response: status and an optional JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Option<String>,
}

impl Response {
    pub fn json(status: u16, body: &impl serde::Serialize) -> Self {
        Self {
            status,
            body: Some(serde_json::to_string(body).expect("API types serialize")),
        }
    }

    pub fn no_content() -> Self {
        Self {
            status: 204,
            body: None,
        }
    }

    /// An error in Firecracker's shape: `{"fault_message": "..."}`.
    pub fn fault(status: u16, message: impl Into<String>) -> Self {
        Self::json(
            status,
            &serde_json::json!({ "fault_message": message.into() }),
        )
    }

    pub fn write_to(&self, mut out: impl Write) -> std::io::Result<()> {
        let reason = match self.status {
            200 => "OK",
            204 => "No Content",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            409 => "Conflict",
            413 => "Payload Too Large",
            _ => "Internal Server Error",
        };
        let body = self.body.as_deref().unwrap_or("");
        let mut head = format!(
            "HTTP/1.1 {} {reason}\r\nServer: ward-vmm\r\nConnection: close\r\n",
            self.status
        );
        if self.body.is_some() {
            head.push_str("Content-Type: application/json\r\n");
        }
        let _ = write!(head, "Content-Length: {}\r\n\r\n", body.len());
        out.write_all(head.as_bytes())?;
        out.write_all(body.as_bytes())?;
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_curl_requests() {
        let raw = b"PUT /vm/actions HTTP/1.1\r\nHost: localhost\r\nUser-Agent: curl/7.88.1\r\n\
                    Content-Type: application/json\r\nContent-Length: 24\r\n\r\n\
                    {\"action_type\":\"pause\"}\n";
        let req = read_request(&raw[..]).unwrap();
        assert_eq!(req.method, "PUT");
        assert_eq!(req.path, "/vm/actions");
        assert_eq!(req.body, b"{\"action_type\":\"pause\"}\n");
        let req = read_request(&b"GET /vm HTTP/1.1\r\n\r\n"[..]).unwrap();
        assert_eq!((req.method.as_str(), req.body.len()), ("GET", 0));
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            read_request(&b"hello\r\n\r\n"[..]),
            Err(HttpError::Malformed(_))
        ));
        assert!(matches!(
            read_request(&b"GET / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"[..]),
            Err(HttpError::TooLarge("body"))
        ));
    }

    #[test]
    fn writes_responses() {
        let mut out = Vec::new();
        Response::fault(404, "no route GET /x")
            .write_to(&mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"), "{text}");
        assert!(
            text.ends_with("\r\n\r\n{\"fault_message\":\"no route GET /x\"}"),
            "{text}"
        );
    }
}
