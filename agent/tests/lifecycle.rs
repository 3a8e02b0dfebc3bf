//! Root tests of the container lifecycle on the host kernel: exit codes, signals, state.

mod common;

use common::{Bundle, default_spec, require_root, run, spec};
use nix::sys::signal::Signal;
use ward_agent::container::{Container, Status};

#[test]
fn exit_code_is_reported() {
    if !require_root("exit_code_is_reported") {
        return;
    }
    let b = Bundle::new("exit42");
    let out = run(b.options(spec(default_spec(&[
        "sh",
        "-c",
        "echo hello; echo oops >&2; exit 42",
    ]))));
    assert_eq!(out.status.code, 42, "{out:?}");
    assert_eq!(out.stdout, "hello\n");
    assert_eq!(out.stderr, "oops\n");
    common::assert_nothing_left(&b.id, b.path());
}

#[test]
fn sigkill_is_137_and_state_follows() {
    if !require_root("sigkill_is_137_and_state_follows") {
        return;
    }
    let b = Bundle::new("sigkill");
    let mut c = Container::create(b.options(spec(default_spec(&["sleep", "100"])))).unwrap();
    assert_eq!(c.state().status, Status::Created);
    c.start().unwrap();
    assert_eq!(c.state().status, Status::Running);
    c.signal(Signal::SIGKILL, false).unwrap();
    let st = c.wait().unwrap();
    assert_eq!((st.code, st.signal, st.oom_killed), (137, Some(9), false));
    assert_eq!(c.state().status, Status::Stopped);
    c.delete().unwrap();
    common::assert_nothing_left(&b.id, b.path());
}

#[test]
fn a_dropped_container_is_deleted() {
    if !require_root("a_dropped_container_is_deleted") {
        return;
    }
    let b = Bundle::new("dropped");
    // No PID namespace: the background sleep survives its parent unless delete kills it.
    let secs = format!("{}", 100_000 + std::process::id());
    let mut s = default_spec(&["sh", "-c", &format!("sleep {secs} & sleep {secs}")]);
    s["linux"]["namespaces"] = serde_json::json!([{ "type": "mount" }, { "type": "uts" }]);
    s["mounts"]
        .as_array_mut()
        .unwrap()
        .retain(|m| m["type"] != "proc" && m["type"] != "mqueue");
    s["linux"]["maskedPaths"] = serde_json::json!([]);
    s["linux"]["readonlyPaths"] = serde_json::json!([]);
    let mut c = Container::create(b.options(spec(s))).unwrap();
    c.start().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    // sh execs its last command: two sleeps.
    assert_eq!(c.stats().unwrap().pids_current, 2);
    drop(c);
    let sleeping = std::fs::read_dir("/proc").unwrap().flatten().filter(|e| {
        std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
            String::from_utf8_lossy(&c).replace('\0', " ").trim() == format!("sleep {secs}")
        })
    });
    assert_eq!(
        sleeping.count(),
        0,
        "a sleep of the dropped container survived"
    );
    let left = common::leftovers(&b.id, b.path());
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn concurrent_containers_from_many_threads() {
    if !require_root("concurrent_containers_from_many_threads") {
        return;
    }
    // The AgentService calls the library from a multithreaded runtime: spawns race each
    // other, and no descriptor may leak from one container into another or stay behind.
    let fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    let before = fds();
    let handles: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let mut ids = Vec::new();
                for n in 0..3 {
                    let b = Bundle::new(&format!("conc{t}x{n}"));
                    let script = format!("echo {t}-{n}; ls /proc/self/fd | wc -l");
                    let out = common::run(b.options(spec(default_spec(&["sh", "-c", &script]))));
                    // ls sees 0, 1, 2 and its own directory fd: nothing inherited.
                    assert_eq!(out.stdout, format!("{t}-{n}\n4\n"), "{out:?}");
                    ids.push(b.id.clone());
                }
                ids
            })
        })
        .collect();
    let ids: Vec<String> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    for id in &ids {
        let left = common::leftovers(id, std::path::Path::new("/nonexistent-bundle"));
        assert!(left.is_empty(), "{left:?}");
    }
    assert_eq!(fds(), before, "descriptors leaked");
}

#[test]
fn hooks_get_the_state_on_stdin() {
    if !require_root("hooks_get_the_state_on_stdin") {
        return;
    }
    let b = Bundle::new("hooks");
    let out_dir = b.path().join("hook-out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let hook = |name: &str| {
        serde_json::json!({
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("cat > {}/{name}.json; echo $WHO > {}/{name}.env", out_dir.display(), out_dir.display())],
            "env": ["WHO=ward-test"],
            "timeout": 5
        })
    };
    let mut s = default_spec(&["true"]);
    s["hooks"] = serde_json::json!({
        "createRuntime": [hook("createRuntime")],
        "prestart": [hook("prestart")],
        "poststart": [hook("poststart")],
        "poststop": [hook("poststop")]
    });
    let out = run(b.options(spec(s)));
    assert_eq!(out.status.code, 0);
    for (name, status) in [
        ("createRuntime", "created"),
        ("prestart", "created"),
        ("poststart", "running"),
        ("poststop", "stopped"),
    ] {
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out_dir.join(format!("{name}.json"))).unwrap())
                .unwrap();
        assert_eq!(state["id"], b.id.as_str(), "{name}: {state}");
        assert_eq!(state["status"], status, "{name}: {state}");
        assert!(state["pid"].as_i64().unwrap() > 0, "{name}: {state}");
        assert_eq!(
            std::fs::read_to_string(out_dir.join(format!("{name}.env"))).unwrap(),
            "ward-test\n"
        );
    }

    // A failing prestart hook fails create and leaves nothing behind.
    let b = Bundle::new("hookfail");
    let mut s = default_spec(&["true"]);
    s["hooks"] = serde_json::json!({ "prestart": [{ "path": "/bin/sh", "args": ["sh", "-c", "echo nope >&2; exit 3"] }] });
    let err = Container::create(b.options(spec(s)))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Prestart hook /bin/sh") && err.contains("nope"),
        "{err}"
    );
    common::assert_nothing_left(&b.id, b.path());
}

/// The same tests on the guest's layout (cgroup v2), inside the nested harness.
#[test]
fn nest_lifecycle_on_cgroup_v2() {
    if !common::require_root("nest_lifecycle_on_cgroup_v2") {
        return;
    }
    common::run_self_in_l1("nest-lifecycle-on-cgroup-v2");
}
