//! Root tests: bad specs fail with an error that names the problem, and leave nothing
//! behind (no cgroup directory, mount, child process or state directory).

mod common;

use common::{Bundle, assert_nothing_left, default_spec, leftovers, require_root, spec};
use serde_json::json;
use ward_agent::container::{Container, CreateOptions, Rootfs};

/// Creates a container from `s` on `b`, expects failure; returns the message.
fn create_fails(b: &Bundle, s: serde_json::Value) -> String {
    let err = Container::create(b.options(spec(s)))
        .expect_err("create must fail")
        .to_string();
    let left = leftovers(&b.id, b.path());
    assert!(left.is_empty(), "after {err:?}, left behind: {left:?}");
    err
}

#[test]
fn missing_rootfs() {
    if !require_root("missing_rootfs") {
        return;
    }
    let b = Bundle::new("norootfs");
    let mut opts = b.options(spec(default_spec(&["true"])));
    opts.rootfs = Some(Rootfs::Path(b.path().join("nope")));
    let err = Container::create(opts).unwrap_err().to_string();
    assert!(
        err.contains("rootfs") && err.contains("nope") && err.contains("does not exist"),
        "{err}"
    );
    assert_nothing_left(&b.id, b.path());
}

#[test]
fn unknown_namespace_type() {
    if !require_root("unknown_namespace_type") {
        return;
    }
    let b = Bundle::new("badns");
    let mut s = default_spec(&["true"]);
    s["linux"]["namespaces"] = json!([{ "type": "pid" }, { "type": "bogus" }]);
    b.write_config(&s);
    let err = CreateOptions::from_bundle(&b.id, b.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("config.json") && err.contains("bogus"),
        "{err}"
    );
    assert_nothing_left(&b.id, b.path());
}

#[test]
fn malformed_mounts() {
    if !require_root("malformed_mounts") {
        return;
    }
    let b = Bundle::new("badmount");
    let mut s = default_spec(&["true"]);
    s["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "destination": "relative/dir", "type": "tmpfs", "source": "tmpfs" }));
    let err = create_fails(&b, s);
    assert!(err.contains("relative/dir is not absolute"), "{err}");

    let mut s = default_spec(&["true"]);
    s["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "destination": "/data", "source": "/no/such/dir", "options": ["rbind"] }));
    let err = create_fails(&b, s);
    assert!(
        err.contains("bind source /no/such/dir does not exist"),
        "{err}"
    );

    // Only the kernel can tell: fails inside init, after the cgroup and helper exist.
    let mut s = default_spec(&["true"]);
    s["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "destination": "/data", "type": "nosuchfs", "source": "x" }));
    let err = create_fails(&b, s);
    assert!(
        err.contains("mount nosuchfs x on") && err.contains("ENODEV"),
        "{err}"
    );
}

#[test]
fn impossible_uid_map() {
    if !require_root("impossible_uid_map") {
        return;
    }
    let b = Bundle::new("badmap");
    let mut s = default_spec(&["true"]);
    s["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "type": "user" }));
    // Overlapping container ranges: the kernel refuses the map.
    s["linux"]["uidMappings"] = json!([{ "containerID": 0, "hostID": 100_000, "size": 100 }, { "containerID": 50, "hostID": 200_000, "size": 100 }]);
    s["linux"]["gidMappings"] = json!([{ "containerID": 0, "hostID": 100_000, "size": 65536 }]);
    let err = create_fails(&b, s);
    assert!(
        err.contains("uid_map") && err.contains("0 100000 100"),
        "{err}"
    );
}

#[test]
fn missing_binary_fails_at_start_and_delete_cleans_up() {
    if !require_root("missing_binary_fails_at_start_and_delete_cleans_up") {
        return;
    }
    let b = Bundle::new("nobin");
    let mut c = Container::create(b.options(spec(default_spec(&["/bin/no-such-binary"])))).unwrap();
    let err = c.start().unwrap_err().to_string();
    assert!(
        err.contains("/bin/no-such-binary") && err.contains("ENOENT"),
        "{err}"
    );
    c.delete().unwrap();
    assert_nothing_left(&b.id, b.path());
}

#[test]
fn user_namespace_with_valid_maps_runs() {
    if !require_root("user_namespace_with_valid_maps_runs") {
        return;
    }
    let b = Bundle::new("userns");
    let mut s = default_spec(&["sh", "-c", "id -u; cat /proc/self/uid_map"]);
    s["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "type": "user" }));
    s["linux"]["uidMappings"] = json!([{ "containerID": 0, "hostID": 100_000, "size": 65536 }]);
    s["linux"]["gidMappings"] = json!([{ "containerID": 0, "hostID": 100_000, "size": 65536 }]);
    // The rootfs must be usable by the mapped root.
    std::process::Command::new("chown")
        .args(["-R", "100000:100000"])
        .arg(b.rootfs())
        .status()
        .unwrap();
    let out = common::run(b.options(spec(s)));
    assert_eq!(out.status.code, 0, "{out:?}");
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next(), Some("0"));
    assert_eq!(
        lines
            .next()
            .map(|l| l.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["0", "100000", "65536"])
    );
}

#[test]
fn unsupported_seccomp_action() {
    if !require_root("unsupported_seccomp_action") {
        return;
    }
    let b = Bundle::new("badseccomp");
    let mut s = default_spec(&["true"]);
    s["linux"]["seccomp"] = json!({ "defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{ "names": ["mkdir"], "action": "SCMP_ACT_NOTIFY" }] });
    let err = create_fails(&b, s);
    assert!(err.contains("SCMP_ACT_NOTIFY is not supported"), "{err}");
}

#[test]
fn user_namespace_without_network_namespace_gets_sys() {
    if !require_root("user_namespace_without_network_namespace_gets_sys") {
        return;
    }
    let b = Bundle::new("usernonet");
    let mut s = default_spec(&["sh", "-c", "id -u; test -d /sys/kernel && echo sys-ok"]);
    s["linux"]["namespaces"] = json!([{ "type": "pid" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" }, { "type": "user" }]);
    s["linux"]["uidMappings"] = json!([{ "containerID": 0, "hostID": 100_000, "size": 65536 }]);
    s["linux"]["gidMappings"] = json!([{ "containerID": 0, "hostID": 100_000, "size": 65536 }]);
    s["mounts"]
        .as_array_mut()
        .unwrap()
        .retain(|m| m["type"] != "cgroup" && m["type"] != "mqueue");
    std::process::Command::new("chown")
        .args(["-R", "100000:100000"])
        .arg(b.rootfs())
        .status()
        .unwrap();
    let out = common::run(b.options(spec(s)));
    assert_eq!(out.stdout, "0\nsys-ok\n", "{out:?}");
}

/// The same tests on the guest's layout (cgroup v2), inside the nested harness.
#[test]
fn nest_bad_specs_leave_nothing_on_cgroup_v2() {
    if !common::require_root("nest_bad_specs_leave_nothing_on_cgroup_v2") {
        return;
    }
    common::run_self_in_l1("nest-bad-specs-leave-nothing-on-cgroup-v2");
}
