//! The AgentService end to end: a real `ward-agent` process on a Unix socket, driven through
//! the real ttrpc client, running real containers (root).

mod common;

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::process::{Child, Command};

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use ttrpc::Code;
use ward_agent::client::{AgentClient, AgentEndpoint};
use ward_agent::protocol::agent::{
    ContainerRequest, CreateContainerRequest, ExecProcessRequest, GetOOMEventRequest,
    GuestInfoRequest, HealthRequest, ProcessRequest, RemoveContainerRequest, ResizePtyRequest,
    SignalProcessRequest, StdioConfig, Storage,
};
use ward_agent::protocol::stream::{StreamHeader, StreamKind};

use common::{busybox_rootfs, default_spec, require_root};

/// A ward-agent process with its own socket, state and a busybox rootfs to share.
struct Agent {
    child: Child,
    dir: tempfile::TempDir,
    client: AgentClient,
}

impl Agent {
    async fn start(test: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("ward-agent-{test}-"))
            .tempdir_in("/tmp")
            .unwrap();
        busybox_rootfs(&dir.path().join("rootfs"));
        let sock = dir.path().join("agent.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_ward-agent"))
            .arg("--listen")
            .arg(format!("unix:{}", sock.display()))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .spawn()
            .expect("spawning ward-agent");
        let client = AgentClient::connect(AgentEndpoint::Unix(sock), Duration::from_secs(10))
            .await
            .expect("connecting to the agent");
        Self { child, dir, client }
    }

    fn layer(&self) -> Storage {
        let mut s = Storage::new();
        s.source = self.dir.path().join("rootfs").display().to_string();
        s
    }

    /// Creates `id` running `args` on an overlay of the shared rootfs (each container gets
    /// its own writable upper).
    async fn create(&self, id: &str, spec: Value, stdio: StdioConfig) -> Result<u32, ttrpc::Error> {
        let mut req = CreateContainerRequest::new();
        req.container_id = id.into();
        req.sandbox_id = "sb".into();
        req.spec_json = serde_json::to_vec(&spec).unwrap();
        req.layers.push(self.layer());
        req.stdio = Some(stdio).into();
        let r = self
            .client
            .rpc()
            .create_container(self.client.ctx(), &req)
            .await?;
        Ok(r.pid)
    }

    async fn start_container(&self, id: &str) {
        let mut req = ContainerRequest::new();
        req.container_id = id.into();
        self.client
            .rpc()
            .start_container(self.client.ctx(), &req)
            .await
            .expect("start");
    }

    async fn read_stream(&self, id: &str, exec: Option<&str>, kind: StreamKind) -> Vec<u8> {
        let header = StreamHeader::new(id, exec, kind).unwrap();
        let mut s = self.client.open_stream(&header).await.expect("open stream");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        buf
    }

    async fn wait(&self, id: &str, exec: &str) -> i32 {
        let mut req = ProcessRequest::new();
        req.container_id = id.into();
        req.exec_id = exec.into();
        self.client
            .rpc()
            .wait_process(ttrpc::context::with_duration(Duration::from_secs(60)), &req)
            .await
            .expect("wait")
            .exit_status
    }

    async fn remove(&self, id: &str) {
        let mut req = RemoveContainerRequest::new();
        req.container_id = id.into();
        req.timeout_ms = 1000;
        self.client
            .rpc()
            .remove_container(self.client.ctx(), &req)
            .await
            .expect("remove");
    }

    async fn healthy(&self) -> bool {
        self.client.healthy().await
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

fn pipes(stdin: bool) -> StdioConfig {
    let mut s = StdioConfig::new();
    s.stdin = stdin;
    s.stdout = true;
    s.stderr = true;
    s
}

fn message(err: &ttrpc::Error) -> String {
    match err {
        ttrpc::Error::RpcStatus(s) => s.message().to_owned(),
        other => panic!("not an RPC status: {other:?}"),
    }
}

fn code(err: &ttrpc::Error) -> Code {
    match err {
        ttrpc::Error::RpcStatus(s) => s.code(),
        other => panic!("not an RPC status: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_containers_full_lifecycle_with_exec() {
    if !require_root("two_containers_full_lifecycle_with_exec") {
        return;
    }
    let agent = Agent::start("two").await;
    let info = agent
        .client
        .rpc()
        .guest_info(agent.client.ctx(), &GuestInfoRequest::new())
        .await
        .unwrap();
    assert!(!info.kernel_release.is_empty() && info.memory_total_bytes > 0 && !info.in_guest);

    for id in ["c1", "c2"] {
        agent
            .create(
                id,
                default_spec(&["sh", "-c", &format!("echo hello from {id}; sleep 30")]),
                pipes(false),
            )
            .await
            .unwrap();
    }
    for id in ["c1", "c2"] {
        agent.start_container(id).await;
    }
    // Exec while running, with its own env.
    let mut exec = ExecProcessRequest::new();
    exec.container_id = "c1".into();
    exec.exec_id = "e1".into();
    exec.process_json = serde_json::to_vec(&json!({
        "args": ["sh", "-c", "echo exec sees $GREETING; hostname"],
        "env": ["GREETING=hi", "PATH=/bin"],
        "cwd": "/",
        "user": {"uid": 0, "gid": 0}
    }))
    .unwrap();
    exec.stdio = Some(pipes(false)).into();
    agent
        .client
        .rpc()
        .exec_process(agent.client.ctx(), &exec)
        .await
        .unwrap();
    let out = agent
        .read_stream("c1", Some("e1"), StreamKind::Stdout)
        .await;
    assert_eq!(String::from_utf8_lossy(&out), "exec sees hi\nward\n");
    assert_eq!(agent.wait("c1", "e1").await, 0);

    // Kill both once each has printed its line (on a loaded machine the exec above can
    // finish before the container's own shell runs its echo); the whole output is that
    // line, and the exit is 128 + SIGKILL.
    for id in ["c1", "c2"] {
        let header = StreamHeader::new(id, None, StreamKind::Stdout).unwrap();
        let mut stream = agent
            .client
            .open_stream(&header)
            .await
            .expect("open stream");
        let mut out = Vec::new();
        while !out.ends_with(b"\n") {
            let mut buf = [0u8; 256];
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "stdout of {id} ended before its first line");
            out.extend_from_slice(&buf[..n]);
        }
        let mut sig = SignalProcessRequest::new();
        sig.container_id = id.into();
        sig.signal = 9;
        agent
            .client
            .rpc()
            .signal_process(agent.client.ctx(), &sig)
            .await
            .unwrap();
        stream.read_to_end(&mut out).await.unwrap();
        assert_eq!(String::from_utf8_lossy(&out), format!("hello from {id}\n"));
        assert_eq!(agent.wait(id, "").await, 137);
        agent.remove(id).await;
    }
    assert!(agent.healthy().await);
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_megabytes_of_output_survive_an_early_exit() {
    if !require_root("ten_megabytes_of_output_survive_an_early_exit") {
        return;
    }
    let agent = Agent::start("bigout").await;
    // ~10 MB on each stream, then exit at once; the host attaches only afterwards.
    let script = "seq 1 1400000; seq 1400000 -1 1 >&2";
    agent
        .create("big", default_spec(&["sh", "-c", script]), pipes(false))
        .await
        .unwrap();
    agent.start_container("big").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (out, err) = tokio::join!(
        agent.read_stream("big", None, StreamKind::Stdout),
        agent.read_stream("big", None, StreamKind::Stderr)
    );
    let lines = |it: &mut dyn Iterator<Item = u32>| {
        it.fold(String::new(), |mut s, i| {
            let _ = writeln!(s, "{i}");
            s
        })
    };
    let expected = lines(&mut (1..=1_400_000));
    let expected_rev = lines(&mut (1..=1_400_000).rev());
    assert!(expected.len() > 10_000_000);
    assert!(
        out == expected.as_bytes(),
        "stdout differs: {} bytes, want {}",
        out.len(),
        expected.len()
    );
    assert!(
        err == expected_rev.as_bytes(),
        "stderr differs: {} bytes",
        err.len()
    );
    assert_eq!(agent.wait("big", "").await, 0);
    // Waiting again, after the exit, returns the same status at once.
    assert_eq!(agent.wait("big", "").await, 0);
    agent.remove("big").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stdin_round_trip_and_eof() {
    if !require_root("stdin_round_trip_and_eof") {
        return;
    }
    let agent = Agent::start("stdin").await;
    agent
        .create("cat", default_spec(&["cat"]), pipes(true))
        .await
        .unwrap();
    agent.start_container("cat").await;
    let header = StreamHeader::new("cat", None, StreamKind::Stdin).unwrap();
    let mut stdin = agent.client.open_stream(&header).await.unwrap();
    stdin.write_all(b"round trip\n").await.unwrap();
    drop(stdin); // EOF
    let out = agent.read_stream("cat", None, StreamKind::Stdout).await;
    assert_eq!(out, b"round trip\n");
    assert_eq!(agent.wait("cat", "").await, 0);
    agent.remove("cat").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pty_resize_reaches_the_process() {
    if !require_root("pty_resize_reaches_the_process") {
        return;
    }
    let agent = Agent::start("pty").await;
    let mut spec = default_spec(&["sh", "-c", "sleep 1; stty size"]);
    spec["process"]["terminal"] = json!(true);
    let mut stdio = StdioConfig::new();
    stdio.terminal = true;
    stdio.stdout = true;
    agent.create("tty", spec, stdio).await.unwrap();
    let mut resize = ResizePtyRequest::new();
    resize.container_id = "tty".into();
    resize.rows = 40;
    resize.cols = 100;
    agent
        .client
        .rpc()
        .resize_pty(agent.client.ctx(), &resize)
        .await
        .unwrap();
    agent.start_container("tty").await;
    let out = agent.read_stream("tty", None, StreamKind::Stdout).await;
    assert_eq!(String::from_utf8_lossy(&out).trim(), "40 100");
    assert_eq!(agent.wait("tty", "").await, 0);
    agent.remove("tty").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oom_event_and_stats() {
    if !require_root("oom_event_and_stats") {
        return;
    }
    let agent = Agent::start("oom").await;
    // A busy container: its CPU usage grows between two stats calls.
    agent
        .create(
            "busy",
            default_spec(&["sh", "-c", "while :; do :; done"]),
            pipes(false),
        )
        .await
        .unwrap();
    agent.start_container("busy").await;
    let mut req = ContainerRequest::new();
    req.container_id = "busy".into();
    let first = agent
        .client
        .rpc()
        .stats_container(agent.client.ctx(), &req)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = agent
        .client
        .rpc()
        .stats_container(agent.client.ctx(), &req)
        .await
        .unwrap();
    assert!(
        second.cpu_usage_ns > first.cpu_usage_ns + 100_000_000,
        "{first:?} -> {second:?}"
    );
    assert!(second.pids_current >= 1 && second.memory_usage_bytes > 0);
    agent.remove("busy").await;

    let oom_wait = {
        let client = agent.client.clone();
        tokio::spawn(async move {
            client
                .rpc()
                .get_oom_event(
                    ttrpc::context::with_duration(Duration::from_secs(60)),
                    &GetOOMEventRequest::new(),
                )
                .await
        })
    };
    let mut spec = default_spec(&["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"]);
    spec["linux"]["resources"]["memory"] = json!({ "limit": 32 << 20, "swap": 32 << 20 });
    agent.create("hog", spec, pipes(false)).await.unwrap();
    agent.start_container("hog").await;
    assert_eq!(agent.wait("hog", "").await, 137);
    let event = oom_wait.await.unwrap().expect("OOM event");
    assert_eq!(event.container_id, "hog");
    agent.remove("hog").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_ids_and_malformed_requests_keep_their_codes() {
    if !require_root("unknown_ids_and_malformed_requests_keep_their_codes") {
        return;
    }
    let agent = Agent::start("codes").await;
    let mut req = ContainerRequest::new();
    req.container_id = "nope".into();
    let err = agent
        .client
        .rpc()
        .start_container(agent.client.ctx(), &req)
        .await
        .unwrap_err();
    assert_eq!(code(&err), Code::NOT_FOUND);
    assert!(message(&err).contains("\"nope\""), "{err:?}");
    let mut wait = ProcessRequest::new();
    wait.container_id = "nope".into();
    let err = agent
        .client
        .rpc()
        .wait_process(agent.client.ctx(), &wait)
        .await
        .unwrap_err();
    assert_eq!(code(&err), Code::NOT_FOUND);

    // Malformed: not JSON, a bad id, an invalid spec.
    let mut bad = CreateContainerRequest::new();
    bad.container_id = "bad".into();
    bad.spec_json = b"{not json".to_vec();
    let err = agent
        .client
        .rpc()
        .create_container(agent.client.ctx(), &bad)
        .await
        .unwrap_err();
    assert_eq!(code(&err), Code::INVALID_ARGUMENT);
    let err = agent
        .create("../escape", default_spec(&["true"]), pipes(false))
        .await
        .unwrap_err();
    assert_eq!(code(&err), Code::INVALID_ARGUMENT);
    let mut spec = default_spec(&["true"]);
    spec["linux"]["namespaces"] = json!([{ "type": "bogus" }]);
    let err = agent.create("badns", spec, pipes(false)).await.unwrap_err();
    assert_eq!(code(&err), Code::INVALID_ARGUMENT, "{err:?}");

    // Duplicates.
    agent
        .create("dup", default_spec(&["sleep", "30"]), pipes(false))
        .await
        .unwrap();
    let err = agent
        .create("dup", default_spec(&["sleep", "30"]), pipes(false))
        .await
        .unwrap_err();
    assert_eq!(code(&err), Code::ALREADY_EXISTS);
    agent.remove("dup").await;

    // A command that cannot exec: Start says why, and the process counts as exited (127),
    // so Wait answers and Remove does not wait for an exit the reaper never saw.
    agent
        .create("noexec", default_spec(&["/no/such/cmd"]), pipes(false))
        .await
        .unwrap();
    let mut req = ContainerRequest::new();
    req.container_id = "noexec".into();
    let err = agent
        .client
        .rpc()
        .start_container(agent.client.ctx(), &req)
        .await
        .unwrap_err();
    assert!(message(&err).contains("/no/such/cmd"), "{err:?}");
    let mut wait = ProcessRequest::new();
    wait.container_id = "noexec".into();
    let waited = tokio::time::timeout(
        Duration::from_secs(5),
        agent.client.rpc().wait_process(agent.client.ctx(), &wait),
    )
    .await
    .expect("Wait answers for a process that failed to exec")
    .unwrap();
    assert_eq!(waited.exit_status, 127);
    agent.remove("noexec").await;

    assert!(agent.healthy().await);
    let health = agent
        .client
        .rpc()
        .health(agent.client.ctx(), &HealthRequest::new())
        .await
        .unwrap();
    assert!(health.serving);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_dying_mid_stream_leaves_the_agent_healthy() {
    if !require_root("a_client_dying_mid_stream_leaves_the_agent_healthy") {
        return;
    }
    let agent = Agent::start("midstream").await;
    agent
        .create("yes", default_spec(&["yes", "ward"]), pipes(false))
        .await
        .unwrap();
    agent.start_container("yes").await;
    // A client reads part of the stream, then vanishes: its socket is closed under the
    // agent's copy (what the kernel does when a client process is killed).
    let sock = agent.dir.path().join("agent.sock.streams");
    let mut raw = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    raw.write_all(b"WARD-STREAM 1 yes - stdout\n").unwrap();
    let mut buf = vec![0u8; 100_000];
    raw.read_exact(&mut buf).unwrap();
    assert!(buf.starts_with(b"OK\nward\n"), "{:?}", &buf[..16]);
    drop(raw);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(agent.healthy().await);
    agent.remove("yes").await;
    assert!(agent.healthy().await);
    // A fresh client works as well.
    let again = AgentClient::connect(
        AgentEndpoint::Unix(agent.dir.path().join("agent.sock")),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert!(again.healthy().await);
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_ends_pending_calls_removes_containers_and_exits() {
    if !require_root("shutdown_ends_pending_calls_removes_containers_and_exits") {
        return;
    }
    let mut agent = Agent::start("shutdown").await;
    agent
        .create("left", default_spec(&["sleep", "300"]), pipes(false))
        .await
        .unwrap();
    agent.start_container("left").await;
    let mut list = ContainerRequest::new();
    list.container_id = "left".into();
    let pids = agent
        .client
        .rpc()
        .list_processes(agent.client.ctx(), &list)
        .await
        .unwrap()
        .pids;
    assert!(!pids.is_empty());
    // A long poll in flight must not hold the agent up.
    let pending = {
        let client = agent.client.clone();
        tokio::spawn(async move {
            client
                .rpc()
                .get_oom_event(
                    ttrpc::context::with_duration(Duration::from_secs(120)),
                    &GetOOMEventRequest::new(),
                )
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    agent
        .client
        .rpc()
        .shutdown(
            agent.client.ctx(),
            &ward_agent::protocol::agent::ShutdownRequest::new(),
        )
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = agent.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "agent still running 10 s after Shutdown"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    assert_eq!(
        code(&pending.await.unwrap().unwrap_err()),
        Code::FAILED_PRECONDITION
    );
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "container process {pid} survived"
        );
    }
    assert!(!agent.dir.path().join("agent.sock").exists());
    assert!(!agent.dir.path().join("agent.sock.streams").exists());
}
