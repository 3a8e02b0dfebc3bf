//! agent-probe: drives a ward-agent running as a guest's `/init`, through the VMM's hybrid
//! vsock socket, the way the shim will: GuestInfo, a container built from a layer drive
//! (found by its serial), its output over a stream connection, its exit, removal, Shutdown.
//! Prints `key=value` lines for the nested test to check.
//!
//! `agent-probe <vsock uds> <layer serial>`

use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::AsyncReadExt;
use ward_agent::client::{AgentClient, AgentEndpoint};
use ward_agent::protocol::agent::{
    ContainerRequest, CreateContainerRequest, GuestInfoRequest, ProcessRequest,
    RemoveContainerRequest, ShutdownRequest, StdioConfig, Storage,
};
use ward_agent::protocol::stream::{StreamHeader, StreamKind};

const SPEC: &str = r#"{
  "ociVersion": "1.0.2",
  "process": {
    "args": ["sh", "-c", "echo hello-from-guest; uname -r; cat /proc/1/comm; ls /layer-marker"],
    "env": ["PATH=/bin"],
    "cwd": "/",
    "user": {"uid": 0, "gid": 0}
  },
  "root": {"path": "rootfs"},
  "hostname": "guest-container",
  "mounts": [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]}
  ],
  "linux": {
    "resources": {"memory": {"limit": 67108864}},
    "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "uts"}, {"type": "ipc"}, {"type": "network"}]
  }
}"#;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [uds, serial] = &args[..] else {
        anyhow::bail!("usage: agent-probe <vsock uds> <layer serial>");
    };
    let t = std::time::Instant::now();
    let client = AgentClient::connect(
        AgentEndpoint::HybridVsock { uds: uds.into() },
        Duration::from_secs(120),
    )
    .await
    .context("connecting to the guest agent")?;
    println!("connected-after-ms={}", t.elapsed().as_millis());
    let info = client
        .rpc()
        .guest_info(client.ctx(), &GuestInfoRequest::new())
        .await?;
    println!(
        "guest-info kernel={} in_guest={} cgroup={} cpus={} mem_mib={}",
        info.kernel_release,
        info.in_guest,
        info.cgroup_version,
        info.cpus,
        info.memory_total_bytes >> 20
    );

    let mut req = CreateContainerRequest::new();
    req.container_id = "c1".into();
    req.sandbox_id = "sb".into();
    req.spec_json = SPEC.as_bytes().to_vec();
    let mut layer = Storage::new();
    layer.device_serial.clone_from(serial);
    layer.fstype = "erofs".into();
    req.layers.push(layer);
    let mut stdio = StdioConfig::new();
    stdio.stdout = true;
    stdio.stderr = true;
    req.stdio = Some(stdio).into();
    client
        .rpc()
        .create_container(client.ctx(), &req)
        .await
        .context("CreateContainer")?;
    let mut start = ContainerRequest::new();
    start.container_id = "c1".into();
    client
        .rpc()
        .start_container(client.ctx(), &start)
        .await
        .context("StartContainer")?;

    let mut out = String::new();
    let mut stream = client
        .open_stream(&StreamHeader::new("c1", None, StreamKind::Stdout)?)
        .await
        .context("stdout stream")?;
    stream.read_to_string(&mut out).await?;
    for line in out.lines() {
        println!("container-out={line}");
    }
    let mut wait = ProcessRequest::new();
    wait.container_id = "c1".into();
    let exit = client.rpc().wait_process(client.ctx(), &wait).await?;
    println!("container-exit={}", exit.exit_status);
    let mut remove = RemoveContainerRequest::new();
    remove.container_id = "c1".into();
    client
        .rpc()
        .remove_container(client.ctx(), &remove)
        .await
        .context("RemoveContainer")?;
    println!("removed=ok");
    client
        .rpc()
        .shutdown(client.ctx(), &ShutdownRequest::new())
        .await
        .context("Shutdown")?;
    println!("shutdown=ok");
    Ok(())
}
