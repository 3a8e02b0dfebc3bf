//! AgentService numbers over a Unix socket (shared mode), against a real `ward-agent`:
//! Health round trip p50/p99, stdout stream throughput, agent RSS idle and with 10
//! containers. Needs root. `cargo bench -p ward-agent --bench agent`.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use ward_agent::client::{AgentClient, AgentEndpoint};
use ward_agent::protocol::agent::{
    ContainerRequest, CreateContainerRequest, HealthRequest, RemoveContainerRequest, StdioConfig,
    Storage,
};
use ward_agent::protocol::stream::{StreamHeader, StreamKind};

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn create(client: &AgentClient, rootfs: &str, id: &str, args: &[&str]) {
    let mut req = CreateContainerRequest::new();
    req.container_id = id.into();
    req.spec_json = serde_json::to_vec(&common::default_spec(args)).unwrap();
    let mut layer = Storage::new();
    layer.source = rootfs.into();
    req.layers.push(layer);
    let mut stdio = StdioConfig::new();
    stdio.stdout = true;
    req.stdio = Some(stdio).into();
    client
        .rpc()
        .create_container(client.ctx(), &req)
        .await
        .unwrap();
    let mut start = ContainerRequest::new();
    start.container_id = id.into();
    client
        .rpc()
        .start_container(client.ctx(), &start)
        .await
        .unwrap();
}

async fn remove(client: &AgentClient, id: &str) {
    let mut req = RemoveContainerRequest::new();
    req.container_id = id.into();
    req.timeout_ms = 500;
    client
        .rpc()
        .remove_container(client.ctx(), &req)
        .await
        .unwrap();
}

#[tokio::main]
async fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP agent bench: needs root");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("ward-agent-bench-")
        .tempdir_in("/tmp")
        .unwrap();
    common::busybox_rootfs(&dir.path().join("rootfs"));
    let rootfs = dir.path().join("rootfs").display().to_string();
    let sock = dir.path().join("agent.sock");
    let mut agent: Child = Command::new(env!("CARGO_BIN_EXE_ward-agent"))
        .arg("--listen")
        .arg(format!("unix:{}", sock.display()))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env("WARD_AGENT_LOG", "warn")
        .spawn()
        .unwrap();
    let client = AgentClient::connect(AgentEndpoint::Unix(sock), Duration::from_secs(10))
        .await
        .unwrap();

    // Health round trips.
    for _ in 0..100 {
        client
            .rpc()
            .health(client.ctx(), &HealthRequest::new())
            .await
            .unwrap();
    }
    let mut rtt: Vec<Duration> = Vec::with_capacity(2000);
    for _ in 0..2000 {
        let t = Instant::now();
        client
            .rpc()
            .health(client.ctx(), &HealthRequest::new())
            .await
            .unwrap();
        rtt.push(t.elapsed());
    }
    rtt.sort();
    let idle_rss = rss_kib(agent.id());

    // Stdout throughput: 512 MiB of zeros through the pipe, the agent and the stream socket.
    create(
        &client,
        &rootfs,
        "tput",
        &["dd", "if=/dev/zero", "bs=1M", "count=512"],
    )
    .await;
    let header = StreamHeader::new("tput", None, StreamKind::Stdout).unwrap();
    let mut stream = client.open_stream(&header).await.unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let (mut total, t) = (0usize, Instant::now());
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        total += n;
    }
    let mbps = total as f64 / f64::from(1u32 << 20) / t.elapsed().as_secs_f64();
    remove(&client, "tput").await;

    // RSS with 10 idle containers.
    for i in 0..10 {
        create(&client, &rootfs, &format!("idle{i}"), &["sleep", "300"]).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let busy_rss = rss_kib(agent.id());
    for i in 0..10 {
        remove(&client, &format!("idle{i}")).await;
    }

    println!("| metric | value |");
    println!("| --- | --- |");
    println!(
        "| Health RTT p50 (unix socket) | {:.1} µs |",
        percentile(&rtt, 0.5).as_secs_f64() * 1e6
    );
    println!(
        "| Health RTT p99 | {:.1} µs |",
        percentile(&rtt, 0.99).as_secs_f64() * 1e6
    );
    println!(
        "| stdout stream throughput ({} MiB) | {mbps:.0} MiB/s |",
        total >> 20
    );
    println!("| agent RSS idle | {:.1} MiB |", idle_rss as f64 / 1024.0);
    println!(
        "| agent RSS with 10 containers | {:.1} MiB |",
        busy_rss as f64 / 1024.0
    );

    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.id() as i32),
        nix::sys::signal::SIGTERM,
    );
    let _ = agent.wait();
}
