//! Root test: a container on read-only layers stacked with overlayfs; writes land in the
//! upper layer only.

mod common;

use std::os::unix::fs::FileTypeExt;

use common::{Bundle, default_spec, require_root, spec};
use ward_agent::container::{Container, Rootfs};

#[test]
fn overlay_copy_on_write_and_whiteouts() {
    if !require_root("overlay_copy_on_write_and_whiteouts") {
        return;
    }
    let b = Bundle::new("overlay");
    // Two layers: busybox at the bottom (the bundle's rootfs), data on top.
    let top = b.path().join("layer-data");
    std::fs::create_dir_all(top.join("data")).unwrap();
    std::fs::write(top.join("data/file"), "lower\n").unwrap();
    std::fs::write(top.join("data/gone"), "bye\n").unwrap();
    let scratch = b.path().join("scratch");

    let mut opts = b.options(spec(default_spec(&["sh", "-c", "cat /data/file; echo new > /data/file; rm /data/gone; echo x > /data/created; cat /data/file; ls /data"])));
    opts.rootfs = Some(Rootfs::Layers {
        lower: vec![top.clone(), b.rootfs()],
        scratch: scratch.clone(),
    });
    let mut c = Container::create(opts).unwrap();
    let io = c.take_io().unwrap();
    let out = common::drain(io.stdout);
    let err = common::drain(io.stderr);
    c.start().unwrap();
    assert_eq!(c.wait().unwrap().code, 0);
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    assert_eq!(out, "lower\nnew\ncreated\nfile\n", "stderr: {err}");

    let upper = scratch.join("upper/data");
    assert_eq!(
        std::fs::read_to_string(upper.join("file")).unwrap(),
        "new\n"
    );
    assert_eq!(
        std::fs::read_to_string(upper.join("created")).unwrap(),
        "x\n"
    );
    let whiteout = std::fs::symlink_metadata(upper.join("gone")).unwrap();
    assert!(
        whiteout.file_type().is_char_device(),
        "a deleted lower file is a 0:0 char device in the upper"
    );
    // The layers are untouched.
    assert_eq!(
        std::fs::read_to_string(top.join("data/file")).unwrap(),
        "lower\n"
    );
    assert_eq!(
        std::fs::read_to_string(top.join("data/gone")).unwrap(),
        "bye\n"
    );
    assert!(!top.join("data/created").exists());

    c.delete().unwrap();
    assert!(
        !scratch.join("upper").exists()
            && !scratch.join("work").exists()
            && !scratch.join("rootfs").exists()
    );
    common::assert_nothing_left(&b.id, b.path());
}

/// Detaches a loop device when dropped.
struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .args(["-d", &self.0])
            .status();
    }
}

#[test]
fn overlay_on_a_read_only_layer_device() {
    if !require_root("overlay_on_a_read_only_layer_device") {
        return;
    }
    let b = Bundle::new("layerdev");
    // The busybox rootfs as an erofs image on a read-only loop device: what vm mode attaches.
    let image = b.path().join("base.erofs");
    let mk = std::process::Command::new("mkfs.erofs")
        .arg(&image)
        .arg(b.rootfs())
        .output()
        .unwrap();
    assert!(
        mk.status.success(),
        "mkfs.erofs: {}",
        String::from_utf8_lossy(&mk.stderr)
    );
    let out = std::process::Command::new("losetup")
        .args(["-r", "-f", "--show"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "losetup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dev = Loop(String::from_utf8(out.stdout).unwrap().trim().to_string());

    let scratch = b.path().join("scratch");
    let mut opts = b.options(spec(default_spec(&[
        "sh",
        "-c",
        "echo hi > /etc/greeting; cat /etc/greeting; head -1 /etc/passwd",
    ])));
    opts.rootfs = Some(Rootfs::Layers {
        lower: vec![dev.0.clone().into()],
        scratch: scratch.clone(),
    });
    let out = common::run(opts);
    assert_eq!(out.status.code, 0, "{out:?}");
    assert_eq!(out.stdout, "hi\nroot:x:0:0:root:/root:/bin/sh\n");
    // The device's mount lived in the container's mount namespace only.
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !info.contains(&dev.0),
        "{} still mounted on the host",
        dev.0
    );
    assert!(!scratch.join("layers").exists());
    common::assert_nothing_left(&b.id, b.path());
}

/// The same tests on the guest's layout (cgroup v2), inside the nested harness.
#[test]
fn nest_overlay_on_guest_layout() {
    if !common::require_root("nest_overlay_on_guest_layout") {
        return;
    }
    common::run_self_in_l1("nest-overlay-on-guest-layout");
}
