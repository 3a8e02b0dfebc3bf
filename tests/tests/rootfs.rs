//! ward-rootfs end to end: the demo image imported into and run by a real containerd with
//! runc, layer images mounted by the kernel, the initrd read back by cpio(1).

use std::path::{Path, PathBuf};
use std::time::Instant;

use ward_rootfs::image::{self, Add, BuiltImage, ImageSpec};
use ward_tests::containerd::{self, Containerd, Options};
use ward_tests::{Need, processes_matching, require};

const RUNC: &str = "io.containerd.runc.v2";

fn build_image(dir: &Path, spec: ImageSpec) -> BuiltImage {
    let started = Instant::now();
    let built = image::build(&ImageSpec {
        output: Some(dir.join("demo.oci.tar")),
        ..spec
    })
    .expect("building the demo image");
    eprintln!(
        "built {} ({} bytes) in {:?}",
        built.reference,
        built.size,
        started.elapsed()
    );
    built
}

fn run_ctr(ctrd: &Containerd, reference: &str, id: &str, cmd: &[&str]) -> std::process::Output {
    let mut args = vec!["run", "--rm", "--runtime", RUNC, reference, id];
    args.extend_from_slice(cmd);
    ctrd.ctr(&args)
}

#[test]
fn image_runs_under_containerd_with_runc() {
    if !require("image_runs_under_containerd_with_runc", &[Need::Root]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let built = build_image(tmp.path(), ImageSpec::default());
    let ctrd = Containerd::start("image-runc", &Options::default()).unwrap();
    ctrd.import(&built.path);
    let images = ctrd.ctr_ok(&["images", "ls"]);
    assert!(
        images.contains(image::DEFAULT_REFERENCE) && images.contains(&built.manifest_digest),
        "{images}"
    );

    let started = Instant::now();
    let out = run_ctr(&ctrd, &built.reference, "echo", &["echo", "hi"]);
    eprintln!("ctr run --rm echo hi: {:?}", started.elapsed());
    assert!(out.status.success(), "{out:?}\n{}", ctrd.log());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");

    let out = run_ctr(&ctrd, &built.reference, "exit42", &["sh", "-c", "exit 42"]);
    assert_eq!(out.status.code(), Some(42), "{out:?}");

    // The image's users resolve: `id` reads /etc/passwd and /etc/group from the layer.
    let out = run_ctr(&ctrd, &built.reference, "id", &["id"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "uid=0(root) gid=0(root) groups=0(root)",
        "{out:?}"
    );
    // --rm removed everything the runs created.
    assert_eq!(ctrd.ctr_ok(&["containers", "ls", "-q"]), "");
}

#[test]
fn added_files_and_entrypoint_reach_the_container() {
    if !require(
        "added_files_and_entrypoint_reach_the_container",
        &[Need::Root],
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let extra = tmp.path().join("greeting");
    std::fs::write(&extra, "hello from the host\n").unwrap();
    let built = build_image(
        tmp.path(),
        ImageSpec {
            reference: "ward.local/extra:v1".into(),
            adds: vec![Add {
                src: extra,
                dst: "/srv/greeting".into(),
            }],
            entrypoint: vec!["cat".into()],
            cmd: vec!["/srv/greeting".into()],
            ..ImageSpec::default()
        },
    );
    let ctrd = Containerd::start("image-extra", &Options::default()).unwrap();
    ctrd.import(&built.path);
    let out = run_ctr(&ctrd, "ward.local/extra:v1", "cat", &[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from the host\n"
    );
}

#[test]
fn two_containerds_run_side_by_side() {
    if !require("two_containerds_run_side_by_side", &[Need::Root]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let built = build_image(tmp.path(), ImageSpec::default());
    let a = Containerd::start("side-a", &Options::default()).unwrap();
    let b = Containerd::start("side-b", &Options::default()).unwrap();
    assert_ne!(a.socket(), b.socket());
    a.import(&built.path);
    // b has its own content store: the image is not there until imported.
    assert_eq!(b.ctr_ok(&["images", "ls", "-q"]), "");
    b.import(&built.path);

    // The same container id in both, at the same time.
    let outs = std::thread::scope(|s| {
        let ha = s.spawn(|| {
            run_ctr(
                &a,
                &built.reference,
                "same",
                &["sh", "-c", "sleep 1; echo a"],
            )
        });
        let hb = s.spawn(|| {
            run_ctr(
                &b,
                &built.reference,
                "same",
                &["sh", "-c", "sleep 1; echo b"],
            )
        });
        [ha.join().unwrap(), hb.join().unwrap()]
    });
    assert_eq!(
        String::from_utf8_lossy(&outs[0].stdout),
        "a\n",
        "{:?}",
        outs[0]
    );
    assert_eq!(
        String::from_utf8_lossy(&outs[1].stdout),
        "b\n",
        "{:?}",
        outs[1]
    );

    drop(a);
    let out = run_ctr(&b, &built.reference, "after", &["echo", "still here"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "still here\n",
        "{out:?}"
    );
}

#[test]
fn containerd_drop_leaves_nothing_behind() {
    if !require("containerd_drop_leaves_nothing_behind", &[Need::Root]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let built = build_image(tmp.path(), ImageSpec::default());
    let ctrd = Containerd::start("drop-clean", &Options::default()).unwrap();
    ctrd.import(&built.path);
    // A task still running when the test ends: its shim, process and rootfs mount must go.
    ctrd.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        RUNC,
        &built.reference,
        "sleeper",
        "sleep",
        "1000",
    ]);
    let dir = ctrd.dir().to_path_buf();
    let socket = ctrd.socket().to_string_lossy().into_owned();
    assert!(
        !containerd::mounts_under(&dir).is_empty(),
        "the task's rootfs is mounted"
    );
    assert!(!processes_matching(&socket).is_empty(), "the shim runs");
    drop(ctrd);
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert_eq!(containerd::mounts_under(&dir), Vec::<PathBuf>::new());
    assert_eq!(processes_matching(&socket), Vec::<u32>::new());
}

#[test]
fn image_is_reproducible() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let first = build_image(a.path(), ImageSpec::default());
    let second = build_image(b.path(), ImageSpec::default());
    assert_eq!(first.manifest_digest, second.manifest_digest);
    assert_eq!(
        std::fs::read(&first.path).unwrap(),
        std::fs::read(&second.path).unwrap()
    );
    let other = build_image(
        b.path(),
        ImageSpec {
            reference: "ward.local/demo:other".into(),
            cmd: vec!["true".into()],
            ..ImageSpec::default()
        },
    );
    assert_ne!(first.manifest_digest, other.manifest_digest);
}

#[test]
fn image_with_missing_add_fails_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let err = image::build(&ImageSpec {
        output: Some(tmp.path().join("out.tar")),
        adds: vec![Add {
            src: "/nonexistent/ward-file".into(),
            dst: "/x".into(),
        }],
        ..ImageSpec::default()
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("/nonexistent/ward-file"), "{err}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}
