//! ward-agent as the `/init` of a real guest: ward-vmm boots the guest kernel with the
//! initrd `ward-rootfs` builds around the static agent, a layer image attached as a
//! read-only drive, and vsock; a host-side client (`agent-probe`) reaches the agent over
//! hybrid vsock, runs a container from the layer found by its drive serial, reads its
//! output over a stream connection and shuts the guest down, which ends ward-vmm with 0.
//! Nested harness (the host KVM here cannot boot Linux), one L1 boot.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ward_nest::{KernelKind, Options, kernel_path};
use ward_rootfs::initrd::{InitrdSpec, build as build_initrd};
use ward_rootfs::layer::{LayerFs, LayerSpec, build as build_layer};
use ward_tests::guest::{scratch_dir, vmm_binary};
use ward_tests::{Need, require};

/// A busybox rootfs with a marker file, as a directory to turn into a layer image.
fn layer_source(dir: &Path) -> PathBuf {
    let root = dir.join("layer-src");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in ["sh", "echo", "uname", "cat", "ls"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    for d in ["proc", "dev", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("layer-marker"), "from the erofs drive\n").unwrap();
    root
}

const L1_SCRIPT: &str = r#"
set -u
VMM=$1; CFG=$2; PROBE=$3
mkdir -p /run/wt
$VMM --config "$CFG" --serial /run/wt/console.log &
vmm=$!
$PROBE /run/wt/vsock.sock layer0
echo "probe-exit=$?"
wait $vmm
echo "vmm-exit=$?"
echo "--- guest console"
cat /run/wt/console.log
"#;

#[test]
fn nest_agent_is_guest_init_and_runs_a_container_from_a_layer_drive() {
    if !require(
        "nest_agent_is_guest_init_and_runs_a_container_from_a_layer_drive",
        &[Need::Root],
    ) {
        return;
    }
    let dir = scratch_dir("guest-agent");
    let agent = ward_tests::guest::static_binary("ward-agent");
    let initrd = build_initrd(&InitrdSpec {
        agent,
        output: Some(dir.join("initrd.cpio.gz")),
        cache_dir: None,
    })
    .expect("building the initrd");
    let layer = build_layer(&LayerSpec {
        source: layer_source(&dir),
        fs: Some(LayerFs::Erofs),
        cache_dir: Some(dir.join("cache")),
    })
    .expect("building the layer image");

    let config = serde_json::json!({
        "kernel": kernel_path(KernelKind::Guest),
        "initrd": initrd.path,
        "cmdline": "console=ttyS0 reboot=k panic=-1 pci=off nomodule i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd",
        "vcpus": 1,
        "mem_mib": 256,
        "drives": [{ "id": "layer0", "path": layer.path, "read_only": true, "serial": "layer0" }],
        "vsock": { "guest_cid": 3, "uds_path": "/run/wt/vsock.sock" },
        "rng": true
    });
    let cfg = dir.join("vm.json");
    std::fs::write(&cfg, serde_json::to_vec_pretty(&config).unwrap()).unwrap();

    let vmm = vmm_binary();
    let probe = PathBuf::from(env!("CARGO_BIN_EXE_agent-probe"));
    let args = [
        "sh".to_string(),
        "-c".into(),
        L1_SCRIPT.into(),
        "l1".into(),
        vmm.display().to_string(),
        cfg.display().to_string(),
        probe.display().to_string(),
    ];
    let out = ward_nest::run(
        &args,
        &Options {
            timeout: Duration::from_secs(420),
            label: format!("nest-guest-agent-{}", std::process::id()),
            ..Options::default()
        },
    )
    .expect("nested harness");
    let text = format!("{}\n{}", out.stdout_str(), out.stderr_str());
    let has = |needle: &str| text.contains(needle);
    assert!(has("probe-exit=0"), "{text}");
    assert!(has("in_guest=true cgroup=2"), "{text}");
    assert!(
        has("kernel=6.12"),
        "the guest kernel, not the host's: {text}"
    );
    assert!(has("container-out=hello-from-guest"), "{text}");
    assert!(has("container-out=6.12"), "{text}");
    assert!(
        has("container-out=sh"),
        "the user's process is PID 1: {text}"
    );
    assert!(
        has("container-out=/layer-marker"),
        "rootfs from the layer drive: {text}"
    );
    assert!(has("container-exit=0"), "{text}");
    assert!(has("removed=ok") && has("shutdown=ok"), "{text}");
    assert!(
        has("vmm-exit=0"),
        "Shutdown must end the VM cleanly: {text}"
    );
}
