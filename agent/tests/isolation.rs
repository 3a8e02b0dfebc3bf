//! Root tests: what a process inside a container can see and do — namespaces, masked and
//! read-only paths, user and capabilities, seccomp, terminal.

mod common;

use std::io::Read;

use common::{Bundle, default_spec, require_root, run, spec};
use ward_agent::container::{Container, Stdio};

#[test]
fn namespaces_are_isolated() {
    if !require_root("namespaces_are_isolated") {
        return;
    }
    let b = Bundle::new("ns");
    let mut kinds = vec!["pid", "mnt", "uts", "ipc", "net", "cgroup"];
    let time_ns = std::path::Path::new("/proc/self/ns/time").exists(); // CONFIG_TIME_NS
    if time_ns {
        kinds.push("time");
    }
    let script = format!(
        "for n in {}; do readlink /proc/self/ns/$n; done; echo ---; ps -o pid,comm; echo ---; hostname",
        kinds.join(" ")
    );
    let mut s = default_spec(&["sh", "-c", &script]);
    if time_ns {
        s["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({ "type": "time" }));
    }
    let out = run(b.options(spec(s)));
    assert_eq!(out.status.code, 0, "{out:?}");
    let parts: Vec<&str> = out.stdout.split("---\n").collect();
    assert_eq!(parts.len(), 3, "{out:?}");
    for (kind, inside) in kinds.iter().zip(parts[0].lines()) {
        let host = std::fs::read_link(format!("/proc/self/ns/{kind}")).unwrap();
        assert_ne!(
            inside,
            host.to_string_lossy(),
            "{kind} namespace is the host's"
        );
    }
    // Only the shell (PID 1) and ps itself.
    let ps: Vec<&str> = parts[1].lines().skip(1).collect();
    assert_eq!(ps.len(), 2, "ps saw {ps:?}");
    assert!(ps[0].trim().starts_with("1 "), "{ps:?}");
    assert_eq!(parts[2].trim(), "ward");
}

#[test]
fn masked_and_readonly_paths() {
    if !require_root("masked_and_readonly_paths") {
        return;
    }
    let b = Bundle::new("masks");
    std::fs::create_dir_all(b.rootfs().join("secret")).unwrap();
    std::fs::write(b.rootfs().join("secret/key"), "hunter2").unwrap();
    std::fs::write(b.rootfs().join("etc/token"), "t0ken").unwrap();
    let mut s = default_spec(&[
        "sh",
        "-c",
        "ls /secret | wc -l; cat /etc/token | wc -c; \
         echo x > /proc/sys/kernel/hostname && echo WROTE; touch /newfile && echo TOUCHED; echo done",
    ]);
    s["linux"]["maskedPaths"].as_array_mut().unwrap().extend([
        serde_json::json!("/secret"),
        serde_json::json!("/etc/token"),
    ]);
    s["root"]["readonly"] = serde_json::json!(true);
    let out = run(b.options(spec(s)));
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines, ["0", "0", "done"], "{out:?}");
    assert!(out.stderr.contains("Read-only file system"), "{out:?}");
    assert_eq!(
        out.stderr.matches("Read-only file system").count(),
        2,
        "{out:?}"
    );
    // The host's files are untouched.
    assert_eq!(
        std::fs::read_to_string(b.rootfs().join("secret/key")).unwrap(),
        "hunter2"
    );
}

#[test]
fn user_groups_and_capabilities() {
    if !require_root("user_groups_and_capabilities") {
        return;
    }
    let b = Bundle::new("user");
    let mut s = default_spec(&["sh", "-c", "id; grep CapEff /proc/self/status"]);
    s["process"]["user"] = serde_json::json!({ "uid": 1000, "gid": 1000, "additionalGids": [10] });
    let out = run(b.options(spec(s)));
    assert_eq!(out.status.code, 0, "{out:?}");
    let mut lines = out.stdout.lines();
    assert_eq!(
        lines.next(),
        Some("uid=1000(user) gid=1000(user) groups=10(wheel)"),
        "{out:?}"
    );
    // A non-root user keeps only the ambient set (none raised here: not inheritable).
    assert_eq!(
        lines
            .next()
            .map(str::split_whitespace)
            .and_then(|mut w| w.nth(1)),
        Some("0000000000000000")
    );

    // Root without CAP_SYS_ADMIN cannot change the hostname of its own UTS namespace,
    // nor chown without CAP_CHOWN.
    let b = Bundle::new("caps");
    let out = run(b.options(spec(default_spec(&[
        "sh",
        "-c",
        "hostname other; touch /tmp/f; chown 5 /tmp/f; grep CapEff /proc/self/status",
    ]))));
    assert!(
        out.stderr
            .contains("hostname: sethostname: Operation not permitted"),
        "{out:?}"
    );
    assert!(
        out.stderr
            .contains("chown: /tmp/f: Operation not permitted"),
        "{out:?}"
    );
    // CAP_KILL (5), CAP_NET_BIND_SERVICE (10), CAP_AUDIT_WRITE (29).
    assert!(out.stdout.contains("0000000020000420"), "{out:?}");
}

#[test]
fn seccomp_returns_the_spec_errno() {
    if !require_root("seccomp_returns_the_spec_errno") {
        return;
    }
    let b = Bundle::new("seccomp");
    let mut s = default_spec(&["sh", "-c", "mkdir /tmp/d; echo rc=$?; ls -d /tmp"]);
    s["linux"]["seccomp"] = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{ "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 122 }]
    });
    let out = run(b.options(spec(s)));
    assert!(
        out.stderr.contains("Disk quota exceeded"),
        "EDQUOT (122) expected: {out:?}"
    );
    assert_eq!(out.stdout, "rc=1\n/tmp\n");
}

#[test]
fn seccomp_argument_conditions() {
    if !require_root("seccomp_argument_conditions") {
        return;
    }
    let b = Bundle::new("seccompargs");
    // kill(pid, SIGUSR1) is refused with EACCES; kill(pid, 0) goes through.
    let mut s = default_spec(&[
        "sh",
        "-c",
        "kill -0 $$ && echo zero-ok; kill -USR1 $$ || echo usr1-refused",
    ]);
    s["linux"]["seccomp"] = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{ "names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
                       "args": [{ "index": 1, "value": 10, "op": "SCMP_CMP_EQ" }] }]
    });
    let out = run(b.options(spec(s)));
    assert_eq!(out.stdout, "zero-ok\nusr1-refused\n", "{out:?}");
    assert!(
        out.stderr.contains("Permission denied"),
        "EACCES (13) expected: {out:?}"
    );
}

#[test]
fn terminal_mode_gives_a_pty() {
    if !require_root("terminal_mode_gives_a_pty") {
        return;
    }
    let b = Bundle::new("pty");
    let mut s = default_spec(&[
        "sh",
        "-c",
        "tty; test -t 0 && test -t 1 && echo isatty; read line; stty size; echo got:$line",
    ]);
    s["process"]["terminal"] = serde_json::json!(true);
    let mut opts = b.options(spec(s));
    opts.stdio = Stdio::Terminal;
    let mut c = Container::create(opts).unwrap();
    let io = c.take_io().unwrap();
    let mut master = io
        .terminal
        .as_ref()
        .expect("a pty master")
        .try_clone()
        .unwrap();
    assert!(io.stdout.is_none());
    c.start().unwrap();
    io.resize(33, 101).unwrap();
    std::io::Write::write_all(&mut master, b"hello\n").unwrap();
    let status = c.wait().unwrap();
    let mut out = Vec::new();
    let _ = master.read_to_end(&mut out); // EIO once the slave side is gone
    let out = String::from_utf8_lossy(&out);
    assert_eq!(status.code, 0, "{out}");
    assert!(out.contains("isatty"), "{out}");
    // The pty lives in the container's own devpts instance, as with runc.
    assert!(out.contains("/dev/pts/0"), "{out}");
    assert!(out.contains("got:hello"), "{out}");
    assert!(out.contains("33 101"), "window size set by resize: {out}");
    c.delete().unwrap();
}

#[test]
fn namespaces_joined_by_path_and_identity() {
    if !require_root("namespaces_joined_by_path_and_identity") {
        return;
    }
    let a = Bundle::new("nsowner");
    let mut sa = default_spec(&["sleep", "100"]);
    sa["hostname"] = serde_json::json!("owner");
    let mut owner = Container::create(a.options(spec(sa))).unwrap();
    owner.start().unwrap();
    let pid = owner.pid().unwrap();

    // The second container joins the first one's network and UTS namespaces by path, and
    // sets a domainname and a sysctl of its own IPC namespace.
    let b = Bundle::new("nsjoiner");
    let mut sb = default_spec(&[
        "sh",
        "-c",
        "readlink /proc/self/ns/net; hostname; cat /proc/sys/kernel/domainname; cat /proc/sys/kernel/msgmax",
    ]);
    sb["linux"]["namespaces"] = serde_json::json!([
        { "type": "pid" }, { "type": "ipc" }, { "type": "mount" },
        { "type": "network", "path": format!("/proc/{pid}/ns/net") },
        { "type": "uts", "path": format!("/proc/{pid}/ns/uts") }
    ]);
    sb.as_object_mut().unwrap().remove("hostname"); // joined UTS: the owner's name
    sb["domainname"] = serde_json::json!("example.test");
    sb["linux"]["sysctl"] = serde_json::json!({ "kernel.msgmax": "4242" });
    let out = common::run(b.options(spec(sb)));
    assert_eq!(out.status.code, 0, "{out:?}");
    let owner_net = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        [owner_net.to_str().unwrap(), "owner", "example.test", "4242"],
        "{out:?}"
    );
    // The host's value is untouched.
    assert_ne!(
        std::fs::read_to_string("/proc/sys/kernel/msgmax")
            .unwrap()
            .trim(),
        "4242"
    );
    owner.delete().unwrap();
}

#[test]
fn process_attributes_rlimits_umask_oom_score() {
    if !require_root("process_attributes_rlimits_umask_oom_score") {
        return;
    }
    let b = Bundle::new("procattr");
    let mut s = default_spec(&[
        "sh",
        "-c",
        "ulimit -n; umask; cat /proc/self/oom_score_adj; echo $GREETING; pwd",
    ]);
    s["process"]["rlimits"] =
        serde_json::json!([{ "type": "RLIMIT_NOFILE", "hard": 321, "soft": 123 }]);
    s["process"]["user"]["umask"] = serde_json::json!(0o027);
    s["process"]["oomScoreAdj"] = serde_json::json!(500);
    s["process"]["env"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!("GREETING=hi"));
    s["process"]["cwd"] = serde_json::json!("/etc");
    let out = common::run(b.options(spec(s)));
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines, ["123", "0027", "500", "hi", "/etc"], "{out:?}");
}

#[test]
fn device_cgroup_allows_only_listed_devices() {
    if !require_root("device_cgroup_allows_only_listed_devices") {
        return;
    }
    let b = Bundle::new("devices");
    let mut s = default_spec(&[
        "sh",
        "-c",
        "mknod /tmp/null c 1 3 && echo allowed; mknod /tmp/fuse c 10 229 || echo denied",
    ]);
    for set in ["bounding", "effective", "permitted"] {
        s["process"]["capabilities"][set]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!("CAP_MKNOD"));
    }
    let out = common::run(b.options(spec(s)));
    assert_eq!(out.stdout, "allowed\ndenied\n", "{out:?}");
    assert!(out.stderr.contains("Operation not permitted"), "{out:?}");
}

/// containerd's default device list is long; on cgroup v2 it once made the verifier's log
/// outgrow its buffer, which fails the BPF load itself.
#[test]
fn a_long_device_rule_list_as_containerd_writes_it() {
    if !require_root("a_long_device_rule_list_as_containerd_writes_it") {
        return;
    }
    let b = Bundle::new("devlist");
    let mut s = default_spec(&["sh", "-c", "echo ok > /dev/null && echo written"]);
    let mut rules = vec![serde_json::json!({ "allow": false, "access": "rwm" })];
    for (kind, major, minor) in [
        ("c", 1, 3),
        ("c", 1, 5),
        ("c", 1, 7),
        ("c", 1, 8),
        ("c", 1, 9),
        ("c", 5, 0),
        ("c", 5, 1),
        ("c", 5, 2),
        ("c", 10, 200),
        ("c", 10, 229),
        ("c", 4, 0),
        ("c", 4, 1),
    ] {
        rules.push(serde_json::json!({ "allow": true, "type": kind, "major": major, "minor": minor, "access": "rwm" }));
    }
    rules.push(serde_json::json!({ "allow": true, "type": "c", "major": 136, "access": "rwm" }));
    rules.push(serde_json::json!({ "allow": true, "type": "c", "access": "m" }));
    rules.push(serde_json::json!({ "allow": true, "type": "b", "access": "m" }));
    s["linux"]["resources"]["devices"] = serde_json::Value::Array(rules);
    let out = common::run(b.options(spec(s)));
    assert_eq!(out.stdout, "written\n", "{out:?}");
}

#[test]
fn spec_mounts_with_their_options() {
    if !require_root("spec_mounts_with_their_options") {
        return;
    }
    let b = Bundle::new("mountopts");
    let shared = b.path().join("shared");
    std::fs::create_dir_all(shared.join("sub")).unwrap();
    std::fs::write(shared.join("file"), "from host\n").unwrap();
    let mut s = default_spec(&[
        "sh",
        "-c",
        "cat /data/file; touch /data/x || echo ro-ok; cp /bin/busybox /scratch/bb; /scratch/bb true || echo noexec-ok; \
         grep ' /scratch ' /proc/self/mountinfo | grep -q 'nosuid,nodev,noexec' && echo flags-ok",
    ]);
    let mounts = s["mounts"].as_array_mut().unwrap();
    mounts.push(serde_json::json!({ "destination": "/data", "type": "bind", "source": shared, "options": ["rbind", "ro", "rprivate"] }));
    mounts.push(serde_json::json!({ "destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "noexec", "size=8m"] }));
    let out = common::run(b.options(spec(s)));
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        ["from host", "ro-ok", "noexec-ok", "flags-ok"],
        "{out:?}"
    );
    assert!(!shared.join("x").exists());
}

/// The same tests on the guest's layout (cgroup v2), inside the nested harness.
#[test]
fn nest_isolation_on_cgroup_v2() {
    if !common::require_root("nest_isolation_on_cgroup_v2") {
        return;
    }
    common::run_self_in_l1("nest-isolation-on-cgroup-v2");
}
