//! Processes added to running containers, and containers added to a running sandbox.

use std::path::Path;

use crate::harness::{
    Iso, assert_nothing_left, containerd, ctr_with_stdin, ctr_with_tty, describe, exec,
    kill_and_delete, run_detached, sandbox_processes, shims_of, task_status, text,
};

pub fn exec_with_and_without_tty_and_as_another_user(iso: Iso) {
    let (ctrd, image) = containerd(iso, "shim-exec");
    run_detached(&ctrd, &image, "ex", &[]);

    let out = ctrd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "plain",
        "ex",
        "sh",
        "-c",
        "echo out; echo err >&2; [ -t 0 ] || echo no-tty; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&ctrd, &out));
    assert_eq!(text(&out.stdout), "out\nno-tty\n");
    assert_eq!(text(&out.stderr), "err\n");
    // ctr deleted that exec when it ended: its id can be used again.
    assert_eq!(exec(&ctrd, "ex", "plain", &["echo", "again"]), "again\n");

    // stdin reaches the process and its EOF (ctr's CloseIO) ends it.
    let out = ctr_with_stdin(
        &ctrd,
        &[
            "task",
            "exec",
            "--exec-id",
            "stdin",
            "ex",
            "sh",
            "-c",
            "cat; echo done",
        ],
        b"piped in\n",
    );
    assert!(out.status.success(), "{}", describe(&ctrd, &out));
    assert_eq!(text(&out.stdout), "piped in\ndone\n");
    // More than a pipe holds: every byte arrives before the EOF.
    let big = vec![b'x'; 1 << 20];
    let out = ctr_with_stdin(
        &ctrd,
        &["task", "exec", "--exec-id", "big", "ex", "wc", "-c"],
        &big,
    );
    assert!(out.status.success(), "{}", describe(&ctrd, &out));
    assert_eq!(text(&out.stdout).trim(), "1048576");

    let out = ctrd.ctr(&[
        "task",
        "exec",
        "--user",
        "1000",
        "--exec-id",
        "user",
        "ex",
        "id",
        "-u",
    ]);
    assert!(out.status.success(), "{}", describe(&ctrd, &out));
    assert_eq!(text(&out.stdout), "1000\n");

    let out = ctr_with_tty(
        &ctrd,
        &[
            "task",
            "exec",
            "-t",
            "--exec-id",
            "tty",
            "ex",
            "sh",
            "-c",
            "[ -t 0 ] && [ -t 1 ] && echo on-a-tty; exit 5",
        ],
    );
    assert_eq!(out.status.code(), Some(5), "{}", describe(&ctrd, &out));
    assert!(
        text(&out.stdout).contains("on-a-tty"),
        "{}",
        describe(&ctrd, &out)
    );

    kill_and_delete(&ctrd, "ex");
    assert_nothing_left(&ctrd, &["ex"]);
}

/// Two containers of one CRI sandbox (the sandbox-id annotation) share one shim and one
/// agent; in vm isolation that is one VM, which both see as their kernel's boot.
pub fn containers_of_a_cri_sandbox_share_one_shim_and_agent(iso: Iso) {
    let (ctrd, image) = containerd(iso, "shim-group");
    let pod = ["--annotation", "io.kubernetes.cri.sandbox-id=pod"];
    run_detached(&ctrd, &image, "pod", &pod);
    run_detached(&ctrd, &image, "app", &pod);
    assert_eq!(shims_of(&ctrd).len(), 1, "app joined pod's shim");
    assert_eq!(
        sandbox_processes("pod").len(),
        1,
        "one agent (or VM) for the pod"
    );
    assert!(!Path::new("/run/ward/app").exists());
    assert_eq!(exec(&ctrd, "app", "x", &["echo", "in-app"]), "in-app\n");
    // One kernel boot for both containers: the same boot id, and in a VM not the host's.
    let boot_id = |id: &str| {
        exec(
            &ctrd,
            id,
            "boot",
            &["cat", "/proc/sys/kernel/random/boot_id"],
        )
    };
    let (a, b) = (boot_id("pod"), boot_id("app"));
    assert_eq!(a, b, "both containers run on one kernel");
    let host = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    match iso {
        Iso::Shared => assert_eq!(a, host),
        Iso::Vm => assert_ne!(a, host, "the pod's VM has a kernel of its own"),
    }

    // The sandbox outlives its first container while another still runs.
    for id in ["pod", "app"] {
        kill_and_delete(&ctrd, id);
        if id == "pod" {
            assert_eq!(shims_of(&ctrd).len(), 1, "the shim serves app still");
            assert_eq!(task_status(&ctrd, "app"), "RUNNING");
        }
    }
    assert_nothing_left(&ctrd, &["pod", "app"]);
}
