//! containerd → `containerd-shim-ward-v2` → host `ward-agent` (shared isolation), end to end
//! with a real containerd, the real shim and agent binaries, and real containers (root).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use ward_rootfs::image::{self, ImageSpec};
use ward_tests::containerd::{Options, Runtime};
use ward_tests::{Containerd, Need, require};

const RUNTIME: &str = "io.containerd.ward.v2";

/// The cargo target dir holding this test build's binaries (`target/debug`).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .to_path_buf();
    for bin in ["containerd-shim-ward-v2", "ward-agent"] {
        assert!(
            dir.join(bin).exists(),
            "{} missing: build it first (cargo build -p ward-shim -p ward-agent)",
            dir.join(bin).display()
        );
    }
    dir
}

/// The demo image archive, built once per test binary.
fn image_archive() -> &'static (PathBuf, String) {
    static IMAGE: OnceLock<(PathBuf, String)> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("ward-shim-image-")
            .tempdir()
            .unwrap()
            .keep();
        let built = image::build(&ImageSpec {
            output: Some(dir.join("demo.oci.tar")),
            ..ImageSpec::default()
        })
        .expect("building the demo image");
        (built.path, built.reference)
    })
}

/// A containerd that knows the ward runtime, with the demo image imported.
fn containerd(label: &str) -> (Containerd, String) {
    let ctrd = Containerd::start(
        label,
        &Options {
            runtimes: vec![Runtime {
                name: "ward".into(),
                runtime_type: RUNTIME.into(),
                options: String::new(),
            }],
            path_dirs: vec![bin_dir()],
            ..Options::default()
        },
    )
    .expect("starting containerd");
    let (archive, reference) = image_archive();
    ctrd.import(archive);
    (ctrd, reference.clone())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn describe(ctrd: &Containerd, out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}\ncontainerd log:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr),
        ctrd.log()
    )
}

/// `ctr run --rm --runtime ward <extra…> <image> <id> <args…>`.
fn run(ctrd: &Containerd, image: &str, id: &str, extra: &[&str], args: &[&str]) -> Output {
    let mut v = vec!["run", "--rm", "--runtime", RUNTIME];
    v.extend_from_slice(extra);
    v.push(image);
    v.push(id);
    v.extend_from_slice(args);
    ctrd.ctr(&v)
}

/// Asserts nothing of the namespace is left: shims, agents, sandbox dirs, cgroups, mounts.
fn assert_nothing_left(ctrd: &Containerd, ids: &[&str]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let shims = ward_tests::processes_matching(&ctrd.socket().to_string_lossy());
        let agents: Vec<_> = ids
            .iter()
            .flat_map(|id| ward_tests::processes_matching(&format!("/run/ward/{id}/")))
            .collect();
        let dirs: Vec<_> = ids
            .iter()
            .map(|id| Path::new("/run/ward").join(id))
            .filter(|d| d.exists())
            .collect();
        let cgroups: Vec<_> = std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|c| c.path().join(ctrd.namespace()))
            .filter(|p| {
                std::fs::read_dir(p)
                    .is_ok_and(|mut d| d.any(|e| e.is_ok_and(|e| e.path().is_dir())))
            })
            .collect();
        let mounts = ward_tests::containerd::mounts_under(&ctrd.dir().join("state"));
        if shims.is_empty()
            && agents.is_empty()
            && dirs.is_empty()
            && cgroups.is_empty()
            && mounts.is_empty()
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left behind: shims {shims:?}, agents {agents:?}, dirs {dirs:?}, cgroups {cgroups:?}, mounts {mounts:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn run_prints_output_and_returns_exit_codes() {
    if !require("run_prints_output_and_returns_exit_codes", &[Need::Root]) {
        return;
    }
    let (ctrd, image) = containerd("shim-run");
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
