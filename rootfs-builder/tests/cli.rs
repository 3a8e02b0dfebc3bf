//! The `ward-rootfs` command as a user runs it: what it prints, how it fails, exit codes.
//! Each run gets its own `WARD_CACHE`, so nothing touches the user's cache.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_ward-rootfs");

fn run(cache: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("WARD_CACHE", cache)
        .output()
        .expect("running ward-rootfs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn image_prints_its_path_and_defaults_to_the_cache() {
    let cache = tempfile::tempdir().unwrap();
    let out = run(cache.path(), &["image"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let path = stdout(&out);
    assert!(
        path.starts_with(&*cache.path().join("images").to_string_lossy()),
        "{path}"
    );
    assert!(
        path.ends_with(".oci.tar") && Path::new(&path).is_file(),
        "{path}"
    );
    assert!(
        stderr(&out).contains("ward.local/demo:latest sha256:"),
        "{}",
        stderr(&out)
    );

    // Same inputs, same digest, same file name.
    let again = run(cache.path(), &["image"]);
    assert_eq!(stdout(&again), path);
}

#[test]
fn image_with_output_add_and_name() {
    let dir = tempfile::tempdir().unwrap();
    let extra = dir.path().join("hello.txt");
    std::fs::write(&extra, "hi\n").unwrap();
    let output = dir.path().join("out.tar");
    let out = run(
        dir.path(),
        &[
            "image",
            "--output",
            &output.to_string_lossy(),
            "--name",
            "ward.local/cli:t1",
            "--add",
            &format!("{}:/srv/hello.txt", extra.display()),
            "--entrypoint",
            "cat",
            "--cmd",
            "/srv/hello.txt",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), output.to_string_lossy());
    let listing = Command::new("tar")
        .arg("-tf")
        .arg(&output)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.contains("index.json") && listing.contains("oci-layout"),
        "{listing}"
    );
    let index = Command::new("tar")
        .arg("-xOf")
        .arg(&output)
        .arg("index.json")
        .output()
        .unwrap();
    let index = String::from_utf8_lossy(&index.stdout);
    assert!(
        index.contains(r#""io.containerd.image.name":"ward.local/cli:t1""#),
        "{index}"
    );
    assert!(
        index.contains(r#""org.opencontainers.image.ref.name":"t1""#),
        "{index}"
    );
}

#[test]
fn bad_arguments_say_what_is_wrong() {
    let cache = tempfile::tempdir().unwrap();
    for (args, want) in [
        (&["image", "--add", "nocolon"][..], "expected SRC:DST"),
        (
            &["image", "--name", "Bad Name"][..],
            "invalid image reference \"Bad Name\"",
        ),
        (
            &["initrd", "--agent", "/bin/ls"][..],
            "/bin/ls is dynamically linked",
        ),
        (
            &["initrd", "--agent", "/nonexistent/agent"][..],
            "/nonexistent/agent",
        ),
        (
            &["layer", "--fs", "xfs", "/tmp"][..],
            "unknown layer filesystem \"xfs\"",
        ),
        (&["layer", "/nonexistent/layer"][..], "/nonexistent/layer"),
        (
            &["demo", "--workload", "/bin/ls"][..],
            "ward-workload: /bin/ls is dynamically linked",
        ),
        (
            &["demo", "--workload", "/nonexistent/ward-workload"][..],
            "cannot read /nonexistent/ward-workload",
        ),
    ] {
        let out = run(cache.path(), args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), "", "{args:?}");
    }
    // Nothing half-written anywhere in the cache.
    let mut left = Vec::new();
    for kind in ["images", "initrd", "layers"] {
        if let Ok(d) = std::fs::read_dir(cache.path().join(kind)) {
            left.extend(d.map(|e| e.unwrap().path()));
        }
    }
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn demo_installs_the_workload_under_usr_bin() {
    if !Path::new("/bin/busybox").exists() {
        eprintln!("SKIP demo_installs_the_workload_under_usr_bin: needs busybox-static");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("demo.tar");
    // Any static executable stands in for ward-workload here.
    let out = run(
        dir.path(),
        &[
            "demo",
            "--workload",
            "/bin/busybox",
            "-o",
            &output.to_string_lossy(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), output.to_string_lossy());
    assert!(
        stderr(&out).contains("ward.local/demo:latest sha256:"),
        "{}",
        stderr(&out)
    );
    // The layer is the one gzip'd blob: list it and find the workload.
    let layer = Command::new("sh")
        .arg("-c")
        .arg(r#"cd "$1" && tar -xf "$2" && for b in blobs/sha256/*; do tar -tzf "$b" 2>/dev/null; done"#)
        .args(["sh", &dir.path().to_string_lossy(), &output.to_string_lossy()])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&layer.stdout);
    assert!(
        listing
            .lines()
            .any(|l| l.trim_start_matches("./") == "bin/ward-workload"),
        "{listing}"
    );
    assert!(
        listing
            .lines()
            .any(|l| l.trim_start_matches("./") == "usr/bin"),
        "{listing}"
    );
}

#[test]
fn initrd_goes_to_the_cache_named_by_its_hash() {
    let cache = tempfile::tempdir().unwrap();
    let out = run(cache.path(), &["initrd", "--agent", "/bin/busybox"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let path = stdout(&out);
    assert!(
        path.starts_with(&*cache.path().join("initrd").to_string_lossy()),
        "{path}"
    );
    assert!(path.ends_with(".cpio.gz"), "{path}");
    let again = run(cache.path(), &["initrd", "--agent", "/bin/busybox"]);
    assert_eq!(stdout(&again), path);
}
