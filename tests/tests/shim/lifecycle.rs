//! Running, detaching, pausing, killing and deleting tasks; output, exit codes, ttys, logs.

use std::time::Duration;

use crate::harness::{
    Iso, RUNTIME, assert_nothing_left, containerd, ctr_with_tty, describe, exec, kill_and_delete,
    own_cgroup_file, run, run_detached, task_status, text, wait_status,
};

pub fn run_prints_output_and_returns_exit_codes(iso: Iso) {
    let (ctrd, image) = containerd(iso, "shim-run");
    let out = run(&ctrd, &image, "hi", &[], &["echo", "hi"]);
    assert!(out.status.success(), "{}", describe(&ctrd, &out));
    assert_eq!(text(&out.stdout), "hi\n", "{}", describe(&ctrd, &out));

    let out = run(
        &ctrd,
        &image,
        "fortytwo",
        &[],
        &["sh", "-c", "echo out; echo err >&2; exit 42"],
    );
    assert_eq!(out.status.code(), Some(42), "{}", describe(&ctrd, &out));
    assert_eq!(text(&out.stdout), "out\n");
    assert!(
        text(&out.stderr).contains("err"),
        "{}",
        describe(&ctrd, &out)
    );
    assert_nothing_left(&ctrd, &["hi", "fortytwo"]);
}

/// The kernel a container sees: the host's in shared isolation, the guest's (its release
/// carries `-ward`) in vm isolation.
pub fn container_sees_the_kernel_of_its_isolation(iso: Iso) {
    let (ctrd, image) = containerd(iso, "shim-kernel");
    let out = run(&ctrd, &image, "kernel", &[], &["uname", "-r"]);
    assert!(out.status.success(), "{}", describe(&ctrd, &out));
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let host = host.trim();
    let seen = text(&out.stdout).trim().to_owned();
    match iso {
        Iso::Shared => assert_eq!(seen, host),
        Iso::Vm => {
            assert_ne!(seen, host, "a VM's container must not see the host kernel");
            assert!(seen.ends_with("-ward"), "the guest kernel: {seen}");
        }
    }
    assert_nothing_left(&ctrd, &["kernel"]);
}

pub fn detached_task_ps_pause_resume_metrics_kill_delete(iso: Iso) {
    let (ctrd, image) = containerd(iso, "shim-detached");
    run_detached(&ctrd, &image, "det", &[]);
    assert_eq!(task_status(&ctrd, "det"), "RUNNING");

    let ps = ctrd.ctr_ok(&["task", "ps", "det"]);
    let pids: Vec<u32> = ps
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(pids.len(), 1, "{ps}");
    // The pid ps reports is the agent's view: the host's in shared isolation, the guest's
    // in a VM, where the container's own /proc names the same process.
    let comm = match iso {
        Iso::Shared => std::fs::read_to_string(format!("/proc/{}/comm", pids[0])).unwrap(),
        Iso::Vm => exec(&ctrd, "det", "comm", &["cat", "/proc/1/comm"]),
    };
    assert_eq!(
        comm.trim(),
        "sleep",
        "ctr task ps names the container's process"
    );

    ctrd.ctr_ok(&["task", "pause", "det"]);
    assert_eq!(task_status(&ctrd, "det"), "PAUSED");
    if iso == Iso::Shared {
        // Paused means frozen by the kernel, not only reported so.
        let freezer = format!(
            "/sys/fs/cgroup/freezer/{}/det/freezer.state",
            ctrd.namespace()
        );
        if let Ok(state) = std::fs::read_to_string(&freezer) {
            assert_eq!(state.trim(), "FROZEN", "{freezer}");
        } else {
            let events = format!("/sys/fs/cgroup/{}/det/cgroup.events", ctrd.namespace());
            let events = std::fs::read_to_string(&events).expect("a freezer for the container");
            assert!(events.contains("frozen 1"), "{events}");
        }
    }
    ctrd.ctr_ok(&["task", "resume", "det"]);
    assert_eq!(task_status(&ctrd, "det"), "RUNNING");
    if iso == Iso::Vm {
        // Frozen and thawed in the guest: the container's cgroup says so from inside.
        let events = exec(
            &ctrd,
            "det",
            "events",
            &["sh", "-c", &own_cgroup_file("cgroup.events")],
        );
        assert!(events.contains("frozen 0"), "{events}");
    }

    let metrics = ctrd.ctr_ok(&["task", "metrics", "--format", "json", "det"]);
    let v: serde_json::Value = serde_json::from_str(&metrics).expect("metrics are JSON");
    assert_eq!(v["pids"]["current"], 1, "{metrics}");
    let usage = v["memory"]["usage"]["usage"]
        .as_u64()
        .or_else(|| v["memory"]["usage"].as_u64())
        .unwrap_or(0);
    assert!(usage > 0, "{metrics}");

    let out = ctrd.ctr(&["task", "checkpoint", "det"]);
    assert!(!out.status.success(), "{}", describe(&ctrd, &out));
    assert!(
        text(&out.stderr).contains("not implemented"),
        "{}",
        describe(&ctrd, &out)
    );
    assert_eq!(task_status(&ctrd, "det"), "RUNNING");

    kill_and_delete(&ctrd, "det");
    assert_nothing_left(&ctrd, &["det"]);
}

pub fn run_killed_with_sigkill_exits_137(iso: Iso) {
    let (ctrd, image) = containerd(iso, "shim-kill");
    std::thread::scope(|s| {
        let fg = s.spawn(|| run(&ctrd, &image, "victim", &[], &["sleep", "1000"]));
        wait_status(&ctrd, "victim", "RUNNING");
        ctrd.ctr_ok(&["task", "kill", "-s", "KILL", "victim"]);
        let out = fg.join().unwrap();
        assert_eq!(out.status.code(), Some(137), "{}", describe(&ctrd, &out));
    });
    assert_nothing_left(&ctrd, &["victim"]);
}

pub fn run_with_tty(iso: Iso) {
    let (ctrd, image) = containerd(iso, "shim-run-tty");
    let out = ctr_with_tty(
        &ctrd,
        &[
            "run",
            "--rm",
            "-t",
            "--runtime",
            RUNTIME,
            &image,
            "tty",
            "sh",
            "-c",
            "[ -t 0 ] && [ -t 1 ] && echo on-a-tty",
        ],
    );
    assert!(out.status.success(), "{}", describe(&ctrd, &out));
    assert!(
        text(&out.stdout).contains("on-a-tty"),
        "{}",
        describe(&ctrd, &out)
    );
    assert_nothing_left(&ctrd, &["tty"]);
}

/// 20 containers one after another (10 VMs: each boots a guest, emulated here).
pub fn containers_in_a_loop_leave_nothing_behind(iso: Iso) {
    let (ctrd, image) = containerd(iso, "shim-loop");
    let count = match iso {
        Iso::Shared => 20,
        Iso::Vm => 10,
    };
    let ids: Vec<String> = (0..count).map(|i| format!("loop{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let out = run(&ctrd, &image, id, &[], &["sh", "-c", &format!("echo {i}")]);
        assert!(out.status.success(), "{}", describe(&ctrd, &out));
        assert_eq!(
            text(&out.stdout),
            format!("{i}\n"),
            "{}",
            describe(&ctrd, &out)
        );
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_nothing_left(&ctrd, &refs);
    assert_eq!(ctrd.ctr_ok(&["containers", "ls", "-q"]), "");
}

pub fn log_uris_file_and_binary_receive_the_output(iso: Iso) {
    let (ctrd, image) = containerd(iso, "shim-logs");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();

    let log = format!("file://{d}/task.log");
    let out = run(
        &ctrd,
        &image,
        "tofile",
        &["--log-uri", &log],
        &["sh", "-c", "echo one; echo two >&2"],
    );
    assert!(out.status.success(), "{}", describe(&ctrd, &out));
    let logged = std::fs::read_to_string(dir.path().join("task.log")).unwrap();
    assert!(
        logged.contains("one\n") && logged.contains("two\n"),
        "{logged:?}"
    );

    // containerd's logging binary protocol: stdout on fd 3, stderr on fd 4, fd 5 closed
    // when ready, the URI's query as flags.
    let logger = dir.path().join("logger.sh");
    std::fs::write(
        &logger,
        format!(
            "#!/bin/sh\nexec 5>&-\ncat <&3 > {d}/out &\ncat <&4 > {d}/err\nwait\necho \"$CONTAINER_ID $*\" > {d}/args\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&logger, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let uri = format!("binary://{}?level=debug", logger.display());
    let out = run(
        &ctrd,
        &image,
        "tobinary",
        &["--log-uri", &uri],
        &["sh", "-c", "echo three; echo four >&2"],
    );
    assert!(out.status.success(), "{}", describe(&ctrd, &out));
    let read = |name: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(s) = std::fs::read_to_string(dir.path().join(name)) {
                if !s.is_empty() {
                    return s;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "logger wrote no {name}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert_eq!(read("out"), "three\n");
    assert_eq!(read("err"), "four\n");
    assert_eq!(read("args"), "tobinary -level debug\n");
    assert_nothing_left(&ctrd, &["tofile", "tobinary"]);
}
