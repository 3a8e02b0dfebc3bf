//! `containerd-shim-ward-v2`: containerd starts it as `start`, `delete` or the shim server.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use containerd_shim::asynchronous::Shim;
use containerd_shim::protos::shim_async::create_task;
use containerd_shim::protos::ttrpc::r#async::Server;
use containerd_shim::protos::ttrpc::r#async::transport::Listener;
use containerd_shim::publisher::RemotePublisher;
use ward_shim::shim::WardShim;

const RUNTIME_ID: &str = "io.containerd.ward.v2";

// A current-thread runtime: the agent's parent-death signal follows the thread that spawned
// it, which must live as long as the shim.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<_> = std::env::args_os().collect();
    let flags = containerd_shim::parse(&args[1..])?;
    match flags.action.as_str() {
        "start" => start().await,
        "delete" => {
            containerd_shim::asynchronous::run::<WardShim>(RUNTIME_ID, None).await;
            Ok(())
        }
        _ if flags.info || flags.version || flags.socket.is_empty() => {
            containerd_shim::asynchronous::run::<WardShim>(RUNTIME_ID, None).await;
            Ok(())
        }
        _ => serve(&flags).await,
    }
}

/// The shim server. containerd-shim 0.12 registers the task service only as
/// `containerd.task.v3.Task` (containerd 2.x); containerd 1.x calls
/// `containerd.task.v2.Task`, the same messages under the older name. So the server is set
/// up here, with the service under both names.
async fn serve(flags: &containerd_shim::Flags) -> anyhow::Result<()> {
    containerd_shim::logger::init(flags.debug, "info", &flags.namespace, &flags.id)?;
    let mut config = containerd_shim::Config::default();
    let mut shim = WardShim::new(RUNTIME_ID, flags, &mut config).await;
    let ttrpc_address = std::env::var("TTRPC_ADDRESS")
        .map_err(|_| anyhow::anyhow!("TTRPC_ADDRESS not set by containerd"))?;
    let publisher = RemotePublisher::new(&ttrpc_address).await?;
    let task: Arc<dyn containerd_shim::Task + Send + Sync> =
        Arc::new(shim.create_task_service(publisher).await);

    let path = flags
        .socket
        .strip_prefix("unix://")
        .unwrap_or(&flags.socket)
        .to_owned();
    let listener = match std::os::unix::net::UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            // Another container of the sandbox: its shim already serves this socket.
            if std::os::unix::net::UnixStream::connect(&path).is_ok() {
                std::fs::write("address", &flags.socket)?;
                signal_server_started();
                return Ok(());
            }
            std::fs::remove_file(&path)?;
            std::os::unix::net::UnixListener::bind(&path)?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = std::path::Path::new(&path).parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::os::unix::net::UnixListener::bind(&path)?
        }
        Err(e) => return Err(anyhow::anyhow!("binding shim socket {path}: {e}")),
    };
    let mut services = create_task(task.clone());
    for (name, service) in create_task(task) {
        services.insert(name.replace(".v3.", ".v2."), service);
    }
    let mut server = Server::new().add_listener(Listener::try_from(listener)?);
    for (name, service) in services {
        server = server.register_service(std::collections::HashMap::from([(name, service)]));
    }
    server.start().await?;
    signal_server_started();
    log::info!("ward shim {} serving on {}", flags.id, flags.socket);
    shim.wait().await;
    server.shutdown().await.unwrap_or_default();
    let _ = std::fs::remove_file(&path);
    Ok(())
}

/// containerd's `start` waits for EOF on the server's stdout: point it at stderr.
fn signal_server_started() {
    // SAFETY: dup2(2) between two of our own standard fds.
    unsafe { libc::dup2(2, 1) };
}

/// `start`, answering with the bare shim address. containerd-shim 0.12 answers in JSON
/// (`{"version":3,"address":…}`), which only containerd 1.7 and later parse; a bare address
/// is understood by every containerd since 1.2 (1.6 is what Debian ships).
async fn start() -> anyhow::Result<()> {
    // Close-on-exec throughout: the shim server spawned below must not hold containerd's
    // pipe (containerd reads our answer until EOF).
    let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // SAFETY: fcntl(2) duplicating our own stdout; the new fd is owned by `saved` alone.
    let saved = unsafe { libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3) };
    if saved < 0 {
        anyhow::bail!("saving stdout: {}", std::io::Error::last_os_error());
    }
    // SAFETY: `saved` is a fresh fd nobody else owns.
    let saved = unsafe { OwnedFd::from_raw_fd(saved) };
    // SAFETY: dup2(2) onto fd 1 with a pipe end we own; stdout is restored below.
    if unsafe { libc::dup2(writer.as_raw_fd(), 1) } < 0 {
        anyhow::bail!("redirecting stdout: {}", std::io::Error::last_os_error());
    }
    drop(writer);
    containerd_shim::asynchronous::run::<ward_shim::shim::WardShim>(RUNTIME_ID, None).await;
    // SAFETY: dup2(2) restoring the saved stdout; this also closes the pipe's last writer.
    if unsafe { libc::dup2(saved.as_raw_fd(), 1) } < 0 {
        anyhow::bail!("restoring stdout: {}", std::io::Error::last_os_error());
    }
    let mut reply = Vec::new();
    std::fs::File::from(reader).read_to_end(&mut reply)?;
    // Legacy protocol: JSON, answered with the bare address. Anything else (containerd
    // 2.3's bootstrap protocol, protobuf) passes through untouched.
    let answer = serde_json::from_slice::<serde_json::Value>(&reply)
        .ok()
        .and_then(|v| v.get("address")?.as_str().map(|a| a.as_bytes().to_vec()))
        .unwrap_or(reply);
    let mut stdout = std::io::stdout();
    stdout.write_all(&answer)?;
    stdout.flush()?;
    Ok(())
}
