//! The AgentService server: ttrpc on a Unix socket (host) or vsock (guest), the stdio stream
//! listener beside it, and the tasks that reap processes and report OOM kills.

mod info;
mod layers;
mod process;
mod registry;
mod service;
mod streams;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};

pub use registry::RpcError;
pub use service::ServiceOptions;

use crate::protocol::address::ListenAddress;
use crate::protocol::agent_ttrpc::create_agent_service;
use crate::reaper::Reaper;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("ttrpc server on {addr}: {source}")]
    Ttrpc { addr: String, source: ttrpc::Error },
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Serves until a Shutdown RPC or SIGTERM/SIGINT; then removes every container and the
/// sockets it created.
pub async fn serve(listen: ListenAddress, opts: ServiceOptions) -> Result<(), ServeError> {
    let reaper = Reaper::start().map_err(ServeError::Signals)?;
    let service = Arc::new(service::Service::new(reaper, opts));
    let shutdown = Arc::clone(&service.shutdown);
    service.spawn_oom_watch();

    let mut sockets: Vec<PathBuf> = Vec::new();
    let streams = listen.streams();
    match &streams {
        ListenAddress::Unix(path) => {
            let _ = std::fs::remove_file(path);
            let listener = std::os::unix::net::UnixListener::bind(path).map_err(|source| {
                ServeError::Listen {
                    addr: streams.to_string(),
                    source,
                }
            })?;
            sockets.push(path.clone());
            streams::spawn_unix(listener, Arc::clone(&service.registry));
        }
        ListenAddress::Vsock { port } => {
            let registry = Arc::clone(&service.registry);
            streams::spawn_vsock(*port, registry).map_err(|source| ServeError::Listen {
                addr: streams.to_string(),
                source,
            })?;
        }
    }

    if let ListenAddress::Unix(path) = &listen {
        let _ = std::fs::remove_file(path);
        sockets.push(path.clone());
    }
    let addr = listen.rpc_ttrpc();
    let mut server = ttrpc::r#async::Server::new()
        .bind(&addr)
        .map_err(|source| ServeError::Ttrpc {
            addr: addr.clone(),
            source,
        })?
        .register_service(create_agent_service(service.clone()));
    server.start().await.map_err(|source| ServeError::Ttrpc {
        addr: addr.clone(),
        source,
    })?;
    log::info!("ward-agent serving on {listen} (streams on {streams})");

    let mut term = signal(SignalKind::terminate()).map_err(ServeError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ServeError::Signals)?;
    tokio::select! {
        () = shutdown.notified() => {}
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    service.close();
    service.remove_all().await;
    let _ = server.shutdown().await;
    for path in sockets {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}
