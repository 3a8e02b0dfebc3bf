//! The host's client of the agent (used by the shim and the `ward` CLI): connects over a
//! Unix socket (shared mode) or the VMM's hybrid vsock socket (vm mode), retries transient
//! connect failures until a deadline, and puts a timeout on every call.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::protocol::address::streams_path;
use crate::protocol::agent::{HealthRequest, VersionRequest};
use crate::protocol::agent_ttrpc::AgentServiceClient;
use crate::protocol::stream::{self, StreamHeader};
use crate::protocol::{PROTOCOL_VERSION, RPC_VSOCK_PORT, STREAM_VSOCK_PORT};

/// How the host reaches an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEndpoint {
    /// An agent on the host listening on `unix:<path>`.
    Unix(PathBuf),
    /// An agent in a guest, through the VMM's hybrid vsock Unix socket.
    HybridVsock { uds: PathBuf },
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("agent at {endpoint} not reachable after {waited:?}: {last}")]
    Unreachable {
        endpoint: String,
        waited: Duration,
        last: String,
    },
    #[error("hybrid vsock handshake with {uds} for port {port} failed: {why}")]
    Handshake {
        uds: PathBuf,
        port: u32,
        why: String,
    },
    #[error("agent speaks protocol {agent}, this client {client}")]
    ProtocolMismatch { agent: u32, client: u32 },
    #[error(transparent)]
    Rpc(#[from] ttrpc::Error),
    #[error(transparent)]
    Stream(#[from] stream::StreamError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

impl std::fmt::Display for AgentEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
            Self::HybridVsock { uds } => write!(f, "hybrid-vsock:{}", uds.display()),
        }
    }
}

/// A connected agent.
#[derive(Clone)]
pub struct AgentClient {
    rpc: AgentServiceClient,
    endpoint: AgentEndpoint,
    timeout: Duration,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient")
            .field("endpoint", &self.endpoint)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl AgentClient {
    /// Connects, retrying refused or missing sockets (the agent may still be starting, or the
    /// guest still booting) until `wait` has passed, then checks the protocol version.
    pub async fn connect(endpoint: AgentEndpoint, wait: Duration) -> Result<Self, ClientError> {
        let started = Instant::now();
        let socket = loop {
            let attempt = match &endpoint {
                AgentEndpoint::Unix(path) => connect_unix(path).await,
                AgentEndpoint::HybridVsock { uds } => connect_hybrid(uds, RPC_VSOCK_PORT).await,
            };
            match attempt {
                Ok(socket) => break socket,
                Err(err) if started.elapsed() >= wait => {
                    return Err(ClientError::Unreachable {
                        endpoint: endpoint.to_string(),
                        waited: started.elapsed(),
                        last: err.to_string(),
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        let client = Self {
            rpc: AgentServiceClient::new(ttrpc::r#async::Client::new(socket.into())),
            endpoint,
            timeout: Duration::from_secs(30),
        };
        let version = client
            .rpc
            .version(client.ctx(), &VersionRequest::new())
            .await?;
        if version.protocol_version != PROTOCOL_VERSION {
            return Err(ClientError::ProtocolMismatch {
                agent: version.protocol_version,
                client: PROTOCOL_VERSION,
            });
        }
        Ok(client)
    }

    /// Every call made through [`Self::rpc`] with [`Self::ctx`] gives up after this long.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The generated client, for any RPC.
    pub fn rpc(&self) -> &AgentServiceClient {
        &self.rpc
    }

    /// A call context carrying this client's timeout.
    pub fn ctx(&self) -> ttrpc::context::Context {
        ttrpc::context::with_duration(self.timeout)
    }

    pub fn endpoint(&self) -> &AgentEndpoint {
        &self.endpoint
    }

    /// `true` when the agent answers Health in time and says it is serving.
    pub async fn healthy(&self) -> bool {
        matches!(
            self.rpc.health(self.ctx(), &HealthRequest::new()).await,
            Ok(r) if r.serving
        )
    }

    /// Opens one stdio stream of a process; the returned socket carries raw bytes.
    pub async fn open_stream(
        &self,
        header: &StreamHeader,
    ) -> Result<BufReader<UnixStream>, ClientError> {
        let socket = match &self.endpoint {
            AgentEndpoint::Unix(path) => connect_unix(&streams_path(path)).await,
            AgentEndpoint::HybridVsock { uds } => connect_hybrid(uds, STREAM_VSOCK_PORT).await,
        }?;
        let mut socket = BufReader::new(socket);
        stream::open(&mut socket, header).await?;
        Ok(socket)
    }
}

async fn connect_unix(path: &Path) -> Result<UnixStream, ClientError> {
    UnixStream::connect(path)
        .await
        .map_err(|source| ClientError::Io {
            what: format!("connecting to {}", path.display()),
            source,
        })
}

/// The VMM drops the connection when nothing in the guest listens on the port: depending on
/// timing that reads as EOF, a reset, or a broken pipe.
const CLOSED: &str = "closed before answering (nothing listens on that port yet)";

/// Firecracker-style hybrid vsock: `CONNECT <port>\n` → `OK <hostport>\n`.
async fn connect_hybrid(uds: &Path, port: u32) -> Result<UnixStream, ClientError> {
    let handshake = |why: String| ClientError::Handshake {
        uds: uds.to_owned(),
        port,
        why,
    };
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe => {
            handshake(CLOSED.into())
        }
        _ => handshake(e.to_string()),
    };
    let mut socket = connect_unix(uds).await?;
    socket
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .await
        .map_err(io)?;
    // Read the answer a byte at a time: anything after the newline belongs to the peer.
    let mut line = Vec::with_capacity(32);
    let mut byte = [0u8; 1];
    while line.len() < 64 {
        let n = tokio::io::AsyncReadExt::read(&mut socket, &mut byte)
            .await
            .map_err(io)?;
        if n == 0 {
            return Err(handshake(
                "closed before answering (nothing listens on that port yet)".into(),
            ));
        }
        if byte[0] == b'\n' {
            let answer = String::from_utf8_lossy(&line);
            return if answer.starts_with("OK ") {
                Ok(socket)
            } else {
                Err(handshake(format!("answered {answer:?}")))
            };
        }
        line.push(byte[0]);
    }
    Err(handshake("answer longer than 64 bytes".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::UnixListener;

    #[tokio::test]
    async fn hybrid_handshake_leaves_the_stream_clean() {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("vsock.sock");
        let listener = UnixListener::bind(&uds).unwrap();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 13];
            conn.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"CONNECT 1024\n");
            conn.write_all(b"OK 1073741824\nhello").await.unwrap();
        });
        let mut socket = connect_hybrid(&uds, 1024).await.unwrap();
        let mut rest = String::new();
        socket.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "hello");
    }

    #[tokio::test]
    async fn hybrid_refusal_and_unreachable_agents_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("vsock.sock");
        let listener = UnixListener::bind(&uds).unwrap();
        tokio::spawn(async move {
            let (conn, _) = listener.accept().await.unwrap();
            drop(conn);
        });
        let err = connect_hybrid(&uds, 1024).await.unwrap_err().to_string();
        assert!(
            err.contains("port 1024") && err.contains("closed before answering"),
            "{err}"
        );

        let missing = dir.path().join("missing.sock");
        let err = AgentClient::connect(
            AgentEndpoint::Unix(missing.clone()),
            Duration::from_millis(50),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains(&missing.display().to_string()), "{err}");
        assert!(err.contains("not reachable"), "{err}");
    }
}
