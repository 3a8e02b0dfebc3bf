//! Things dying under a running task: the shim, the agent, the VM. containerd hears of
//! the exit, and nothing is left on the host.

use std::time::Duration;

use crate::harness::{
    Events, Iso, assert_nothing_left, containerd, describe, run, run_detached, sandbox_processes,
    shims_of, task_status, text,
};

pub fn sigkilled_shim_is_cleaned_up_by_shim_delete(iso: Iso) {
    let (ctrd, image) = containerd(iso, "shim-crash");
    let events = Events::watch(&ctrd);
    run_detached(&ctrd, &image, "crash", &[]);
    let shims = shims_of(&ctrd);
    assert_eq!(shims.len(), 1, "one shim serves the task: {shims:?}");
    let sandbox = sandbox_processes("crash");
    assert_eq!(
        sandbox.len(),
        1,
        "one agent (or VM) serves the sandbox: {sandbox:?}"
    );
    // SAFETY: kill(2) on the shim's pid, read from /proc just now.
    unsafe { libc::kill(shims[0] as libc::pid_t, libc::SIGKILL) };

    let all = events
        .wait_for(
            &["/tasks/exit", "\"container_id\":\"crash\""],
            Duration::from_secs(20),
        )
        .unwrap_or_else(|all| {
            panic!(
                "containerd reported no exit; events:\n{all}\n{}",
                ctrd.log()
            )
        });
    assert!(all.contains("\"exit_status\":137"), "{all}");
    let _ = ctrd.ctr(&["task", "delete", "crash"]);
    ctrd.ctr_ok(&["container", "delete", "crash"]);
    assert_nothing_left(&ctrd, &["crash"]);
}

/// The process that carries the containers dies with SIGKILL: the host agent (shared), or
/// `ward-vmm` with the whole guest (vm). Every task exits within seconds, the reason is in
/// containerd's log, and nothing is left.
pub fn a_dead_agent_or_vmm_takes_its_containers_down_and_leaves_nothing(iso: Iso) {
    let (ctrd, image) = containerd(iso, "shim-agent-dies");
    let events = Events::watch(&ctrd);
    run_detached(&ctrd, &image, "orphan", &[]);
    let ps = ctrd.ctr_ok(&["task", "ps", "orphan"]);
    let pid: u32 = ps
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .expect("the container's pid");
    let carrier = sandbox_processes("orphan");
    assert_eq!(carrier.len(), 1, "{carrier:?}");
    // SAFETY: kill(2) on the agent's or VMM's pid, read from /proc just now.
    unsafe { libc::kill(carrier[0] as libc::pid_t, libc::SIGKILL) };

    let started = std::time::Instant::now();
    events
        .wait_for(
            &["/tasks/exit", "\"container_id\":\"orphan\""],
            Duration::from_secs(10),
        )
        .unwrap_or_else(|all| panic!("no TaskExit after the agent/VMM died; events:\n{all}"));
    eprintln!(
        "task exit reported {:?} after the SIGKILL",
        started.elapsed()
    );
    if iso == Iso::Shared {
        // Gone, or a zombie waiting for whoever inherited it: not running any more.
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = state
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .next();
        assert!(
            matches!(state, None | Some("Z" | "X")),
            "the container's process outlived its agent: state {state:?}"
        );
    } else {
        assert!(
            ctrd.log().contains("ward-vmm") && ctrd.log().contains("killed by signal 9"),
            "the reason is in containerd's log:\n{}",
            ctrd.log()
        );
    }
    assert_eq!(task_status(&ctrd, "orphan"), "STOPPED");
    ctrd.ctr_ok(&["task", "delete", "orphan"]);
    ctrd.ctr_ok(&["container", "delete", "orphan"]);
    assert_nothing_left(&ctrd, &["orphan"]);
}

/// Isolation from the config file and the annotation (host only: the annotation's vm
/// answer depends on the host's KVM).
pub fn isolation_comes_from_the_config_file_and_the_annotation(iso: Iso) {
    let (ctrd, image) = containerd(iso, "shim-isolation");
    let dir = tempfile::tempdir().unwrap();
    let vm = dir.path().join("vm.toml");
    std::fs::write(&vm, "isolation = \"vm\"\n").unwrap();
    let vm = vm.to_string_lossy().into_owned();

    // Here the host's KVM (PVM) cannot boot Linux: asking for vm, by config or annotation,
    // says so at once. Where KVM can boot Linux, the same runs succeed.
    let pvm = std::path::Path::new("/sys/module/kvm_pvm").exists();
    for (id, extra) in [
        ("byconfig", vec!["--runtime-config-path", vm.as_str()]),
        ("byannotation", vec!["--annotation", "io.ward.isolation=vm"]),
    ] {
        let out = run(&ctrd, &image, id, &extra, &["echo", "hi"]);
        if pvm {
            assert!(!out.status.success(), "{}", describe(&ctrd, &out));
            assert!(
                text(&out.stderr).contains("cannot boot a Linux guest"),
                "{}",
                describe(&ctrd, &out)
            );
        } else {
            assert_eq!(text(&out.stdout), "hi\n", "{}", describe(&ctrd, &out));
        }
        let _ = ctrd.ctr(&["container", "delete", id]);
    }
    // The annotation overrides the config file.
    let out = run(
        &ctrd,
        &image,
        "overridden",
        &[
            "--runtime-config-path",
            &vm,
            "--annotation",
            "io.ward.isolation=shared",
        ],
        &["echo", "shared"],
    );
    assert!(out.status.success(), "{}", describe(&ctrd, &out));
    assert_eq!(text(&out.stdout), "shared\n");
    // A config file that is not there is an error naming it.
    let out = run(
        &ctrd,
        &image,
        "missing",
        &["--runtime-config-path", "/nonexistent/ward.toml"],
        &["true"],
    );
    assert!(
        text(&out.stderr).contains("/nonexistent/ward.toml"),
        "{}",
        describe(&ctrd, &out)
    );
    let _ = ctrd.ctr(&["container", "delete", "missing"]);
    assert_nothing_left(
        &ctrd,
        &["byconfig", "byannotation", "overridden", "missing"],
    );
}
