//! Where the agent listens and how the host reaches it.
//!
//! - `unix:<path>`: host mode. RPCs on `<path>`, stdio streams on `<path>.streams`.
//! - `vsock://-1:<port>` (or `vsock:<port>`): guest mode. RPCs on `<port>`, streams on
//!   `<port> + 1`. The host reaches them through the VMM's hybrid vsock Unix socket by
//!   writing `CONNECT <port>\n` and reading `OK <hostport>\n`.

use std::fmt;
use std::path::{Path, PathBuf};

use super::RPC_VSOCK_PORT;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddress {
    Unix(PathBuf),
    Vsock { port: u32 },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "listen address {0:?} is not `unix:<absolute path>`, `vsock://-1:<port>` or `vsock:<port>`"
)]
pub struct AddressError(pub String);

impl ListenAddress {
    pub fn parse(text: &str) -> Result<Self, AddressError> {
        let bad = || AddressError(text.to_owned());
        if let Some(path) = text.strip_prefix("unix:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            return if Path::new(path).is_absolute() {
                Ok(Self::Unix(PathBuf::from(path)))
            } else {
                Err(bad())
            };
        }
        let port = text
            .strip_prefix("vsock://-1:")
            .or_else(|| text.strip_prefix("vsock:"))
            .ok_or_else(bad)?;
        let port: u32 = port.parse().map_err(|_| bad())?;
        if port == 0 || port == u32::MAX {
            return Err(bad());
        }
        Ok(Self::Vsock { port })
    }

    /// The address ttrpc's server binds for RPCs.
    pub fn rpc_ttrpc(&self) -> String {
        match self {
            Self::Unix(path) => format!("unix://{}", path.display()),
            Self::Vsock { port } => format!("vsock://-1:{port}"),
        }
    }

    /// The stdio stream listener beside the RPC one.
    #[must_use]
    pub fn streams(&self) -> Self {
        match self {
            Self::Unix(path) => Self::Unix(streams_path(path)),
            Self::Vsock { port } => Self::Vsock { port: port + 1 },
        }
    }
}

impl Default for ListenAddress {
    fn default() -> Self {
        Self::Vsock {
            port: RPC_VSOCK_PORT,
        }
    }
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
            Self::Vsock { port } => write!(f, "vsock://-1:{port}"),
        }
    }
}

/// `<path>.streams`.
pub fn streams_path(rpc: &Path) -> PathBuf {
    let mut name = rpc.as_os_str().to_owned();
    name.push(".streams");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(
            ListenAddress::parse("unix:/run/ward/s1/agent.sock").unwrap(),
            ListenAddress::Unix("/run/ward/s1/agent.sock".into())
        );
        assert_eq!(
            ListenAddress::parse("unix:///run/a.sock").unwrap(),
            ListenAddress::Unix("/run/a.sock".into())
        );
        assert_eq!(
            ListenAddress::parse("vsock://-1:1024").unwrap(),
            ListenAddress::Vsock { port: 1024 }
        );
        assert_eq!(
            ListenAddress::parse("vsock:2000").unwrap(),
            ListenAddress::Vsock { port: 2000 }
        );
        for bad in [
            "unix:rel/path",
            "tcp://1.2.3.4:5",
            "vsock://-1:x",
            "vsock:0",
            "",
        ] {
            let err = ListenAddress::parse(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn streams_sit_beside_rpcs() {
        let unix = ListenAddress::parse("unix:/run/a.sock").unwrap();
        assert_eq!(unix.rpc_ttrpc(), "unix:///run/a.sock");
        assert_eq!(
            unix.streams(),
            ListenAddress::Unix("/run/a.sock.streams".into())
        );
        assert_eq!(
            ListenAddress::default().streams(),
            ListenAddress::Vsock { port: 1025 }
        );
        assert_eq!(ListenAddress::default().to_string(), "vsock://-1:1024");
    }
}
