//! What a container is given and limited to: env, cwd, read-only root, bind mounts, CPU
//! and memory limits (with the OOM kill containerd hears of), and live updates of them.

use std::time::Duration;

use crate::harness::{
    Events, Iso, assert_nothing_left, containerd, describe, exec, kill_and_delete, own_cgroup_file,
    run, run_detached, text,
};

/// A cgroup file of container `id`: from the host's tree in shared isolation, from inside
/// the container (the guest's cgroup v2) in vm isolation.
fn cgroup_value(
    ctrd: &ward_tests::Containerd,
    iso: Iso,
    id: &str,
    v1: (&str, &str),
    v2: &str,
) -> String {
    match iso {
        Iso::Shared => {
            let ns = ctrd.namespace();
            let v1_path = |ctrl: &str| format!("/sys/fs/cgroup/{ctrl}/{ns}/{id}/{}", v1.1);
            std::fs::read_to_string(v1_path(v1.0))
                .or_else(|_| std::fs::read_to_string(v1_path("cpu,cpuacct")))
                .map(|s| s.trim().to_owned())
                .or_else(|_| {
                    std::fs::read_to_string(format!("/sys/fs/cgroup/{ns}/{id}/{v2}"))
                        .map(|s| s.split_whitespace().next().unwrap_or("").to_owned())
                })
                .expect("the container's cgroup on the host")
        }
        Iso::Vm => exec(ctrd, id, "cg", &["sh", "-c", &own_cgroup_file(v2)])
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_owned(),
    }
}

pub fn run_options_env_cwd_read_only_bind_mount_cpus(iso: Iso) {
    let (ctrd, image) = containerd(iso, "shim-opts");
    let host = tempfile::tempdir().unwrap();
    let file = host.path().join("f");
    std::fs::write(&file, "from the host\n").unwrap();
    // A file: bound from the host in shared isolation, copied into the guest in vm.
    let mount = format!(
        "type=bind,src={},dst=/host-f,options=rbind:ro",
        file.display()
    );
    let out = run(
        &ctrd,
        &image,
        "opts",
        &[
            "--env",
            "FOO=bar",
            "--cwd",
            "/tmp",
            "--read-only",
            "--mount",
            &mount,
            "--cpus",
            "0.5",
        ],
        &[
            "sh",
            "-c",
            "echo $FOO; pwd; cat /host-f; touch /x 2>/dev/null || echo ro-root; echo y 2>/dev/null > /host-f || echo ro-bind",
        ],
    );
    assert!(out.status.success(), "{}", describe(&ctrd, &out));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        &lines[..5],
        &["bar", "/tmp", "from the host", "ro-root", "ro-bind"],
        "{stdout}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "from the host\n");

    if iso == Iso::Vm {
        // A directory cannot be copied in: a clear error, and nothing left.
        let dir_mount = format!(
            "type=bind,src={},dst=/host,options=rbind:ro",
            host.path().display()
        );
        let out = run(
            &ctrd,
            &image,
            "dirbind",
            &["--mount", &dir_mount],
            &["true"],
        );
        assert!(!out.status.success(), "{}", describe(&ctrd, &out));
        let err = text(&out.stderr);
        assert!(
            err.contains("directory bind mounts are not supported with isolation vm")
                && err.contains(&host.path().display().to_string()),
            "{}",
            describe(&ctrd, &out)
        );
        let _ = ctrd.ctr(&["container", "delete", "dirbind"]);
    }

    // --cpus is the container's CFS quota.
    run_detached(&ctrd, &image, "cpus", &["--cpus", "0.5"]);
    let quota = cgroup_value(&ctrd, iso, "cpus", ("cpu", "cpu.cfs_quota_us"), "cpu.max");
    assert_eq!(quota, "50000");
    kill_and_delete(&ctrd, "cpus");
    assert_nothing_left(&ctrd, &["opts", "cpus", "dirbind"]);
}

pub fn memory_limit_oom_gives_task_oom_and_137(iso: Iso) {
    let (ctrd, image) = containerd(iso, "shim-oom");
    let events = Events::watch(&ctrd);
    // tail buffers its input looking for a newline that /dev/zero never sends.
    let out = run(
        &ctrd,
        &image,
        "oom",
        &["--memory-limit", "33554432"],
        &["tail", "/dev/zero"],
    );
    assert_eq!(out.status.code(), Some(137), "{}", describe(&ctrd, &out));
    let all = events
        .wait_for(
            &["/tasks/oom", "\"container_id\":\"oom\""],
            Duration::from_secs(10),
        )
        .unwrap_or_else(|all| panic!("no TaskOOM for oom; events:\n{all}"));
    let oom_at = all.find("/tasks/oom").unwrap();
    let exit_at = all.find("/tasks/exit").expect("a TaskExit");
    assert!(oom_at < exit_at, "TaskOOM comes before TaskExit:\n{all}");
    assert_eq!(
        all.matches("/tasks/oom").count(),
        1,
        "one OOM kill, one event:\n{all}"
    );
    assert_nothing_left(&ctrd, &["oom"]);
}

/// containerd's Update call (ctr 1.6 has no `task update`), made on the shim's own socket
/// the way containerd makes it.
pub fn update_changes_the_running_containers_limits(iso: Iso) {
    use containerd_shim_protos::protobuf::well_known_types::any::Any;
    use containerd_shim_protos::shim::shim::UpdateTaskRequest;
    use containerd_shim_protos::shim::shim_ttrpc::TaskClient;

    let (ctrd, image) = containerd(iso, "shim-update");
    run_detached(&ctrd, &image, "upd", &[]);
    let bundle = ctrd
        .dir()
        .join("state/io.containerd.runtime.v2.task")
        .join(ctrd.namespace())
        .join("upd");
    let address = std::fs::read_to_string(bundle.join("address")).expect("the shim's address");
    let client = TaskClient::new(ttrpc::Client::connect(address.trim()).expect("shim socket"));
    let mut req = UpdateTaskRequest::new();
    req.id = "upd".into();
    let mut any = Any::new();
    any.type_url = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into();
    any.value = br#"{"memory":{"limit":67108864},"cpu":{"quota":25000,"period":100000}}"#.to_vec();
    req.resources = Some(any).into();
    client
        .update(ttrpc::context::with_timeout(30_000_000_000), &req)
        .expect("Update");
    drop(client);

    let memory = cgroup_value(
        &ctrd,
        iso,
        "upd",
        ("memory", "memory.limit_in_bytes"),
        "memory.max",
    );
    assert_eq!(memory, "67108864");
    let quota = cgroup_value(&ctrd, iso, "upd", ("cpu", "cpu.cfs_quota_us"), "cpu.max");
    assert_eq!(quota, "25000");
    kill_and_delete(&ctrd, "upd");
    assert_nothing_left(&ctrd, &["upd"]);
}
