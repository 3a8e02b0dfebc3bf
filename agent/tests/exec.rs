//! Root test: exec into a running container with another user, env and cwd.

mod common;

use common::{Bundle, default_spec, require_root, spec};
use nix::sys::signal::Signal;
use oci_spec::runtime::Process;
use ward_agent::container::{Container, Stdio};

#[test]
fn exec_with_another_user_and_env() {
    if !require_root("exec_with_another_user_and_env") {
        return;
    }
    let b = Bundle::new("exec");
    let mut c = Container::create(b.options(spec(default_spec(&["sleep", "100"])))).unwrap();
    c.start().unwrap();
    let process: Process = serde_json::from_value(serde_json::json!({
        "user": { "uid": 1000, "gid": 1000 },
        "args": ["sh", "-c", "id -u; echo $FOO; pwd; cat /proc/1/comm; hostname; grep PPid /proc/self/status"],
        "env": ["PATH=/bin", "FOO=bar"],
        "cwd": "/tmp"
    }))
    .unwrap();
    let mut p = c.exec(&process, Stdio::Pipes).unwrap();
    let io = p.take_io().unwrap();
    let (out, err) = (common::drain(io.stdout), common::drain(io.stderr));
    let st = p.wait().unwrap();
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    assert_eq!(st.code, 0, "{err}");
    // Same PID namespace as the container (PID 1 is its sleep), same hostname; its parent is
    // the library, outside the namespace (PPid 0), so the container's PID 1 never has to
    // reap it.
    assert_eq!(
        out, "1000\nbar\n/tmp\nsleep\nward\nPPid:\t0\n",
        "stderr: {err}"
    );

    // An exec of a missing binary fails with a clear error.
    let mut bad = process.clone();
    bad.set_args(Some(vec!["/no/such".into()]));
    let err = c.exec(&bad, Stdio::Null).unwrap_err().to_string();
    assert!(err.contains("/no/such"), "{err}");

    c.signal(Signal::SIGKILL, true).unwrap();
    assert_eq!(c.wait().unwrap().code, 137);
    c.delete().unwrap();
    common::assert_nothing_left(&b.id, b.path());
}

#[test]
fn exec_with_a_terminal() {
    if !require_root("exec_with_a_terminal") {
        return;
    }
    let b = Bundle::new("exectty");
    let mut c = Container::create(b.options(spec(default_spec(&["sleep", "100"])))).unwrap();
    c.start().unwrap();
    let process: Process = serde_json::from_value(serde_json::json!({
        "terminal": true,
        "user": { "uid": 0, "gid": 0 },
        "args": ["sh", "-c", "tty; read x; echo got:$x"],
        "env": ["PATH=/bin"],
        "cwd": "/"
    }))
    .unwrap();
    let mut p = c.exec(&process, Stdio::Terminal).unwrap();
    let mut master = p.take_io().unwrap().terminal.expect("pty master");
    std::io::Write::write_all(&mut master, b"ping\n").unwrap();
    assert_eq!(p.wait().unwrap().code, 0);
    let mut out = Vec::new();
    let _ = std::io::Read::read_to_end(&mut master, &mut out);
    let out = String::from_utf8_lossy(&out);
    assert!(
        out.contains("/dev/pts/0") && out.contains("got:ping"),
        "{out}"
    );
    c.delete().unwrap();
}

/// The same tests on the guest's layout (cgroup v2), inside the nested harness.
#[test]
fn nest_exec_on_cgroup_v2() {
    if !common::require_root("nest_exec_on_cgroup_v2") {
        return;
    }
    common::run_self_in_l1("nest-exec-on-cgroup-v2");
}
