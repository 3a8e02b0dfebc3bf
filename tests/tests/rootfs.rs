//! ward-rootfs end to end: the demo image imported into and run by a real containerd with
//! runc, layer images mounted by the kernel, the initrd read back by cpio(1).

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use ward_rootfs::image::{self, Add, BuiltImage, ImageSpec};
use ward_rootfs::initrd::{self, InitrdSpec};
use ward_rootfs::layer::{self, LayerFs, LayerSpec};
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
    let mut args = vec![reference, id];
    args.extend_from_slice(cmd);
    ctrd.run_runc(&args)
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
    let out = run_ctr(&ctrd, &built.reference, "id-user", &["id", "user"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "uid=1000(user) gid=1000(user) groups=1000(user)",
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

/// A read-only loop mount that is undone (and its loop device freed) when dropped.
struct Mounted {
    point: PathBuf,
}

impl Mounted {
    fn new(source: &Path, point: &Path, fstype: &str, options: &str) -> Self {
        std::fs::create_dir_all(point).unwrap();
        let out = Command::new("mount")
            .args(["-t", fstype, "-o", options])
            .arg(source)
            .arg(point)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount {}: {out:?}", source.display());
        Self {
            point: point.to_path_buf(),
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.point).status();
    }
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = [0u8; 64];
    // SAFETY: both strings are NUL-terminated; `buf` is writable for its whole length.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    usize::try_from(len).ok().map(|len| buf[..len].to_vec())
}

/// A layer that deletes `/etc/gone` and makes `/opq` opaque, as an OCI layer would.
fn whiteout_source(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::create_dir_all(src.join("opq/sub")).unwrap();
    std::fs::write(src.join("etc/keep"), "kept\n").unwrap();
    std::fs::write(src.join("etc/.wh.gone"), "").unwrap();
    std::fs::write(src.join("opq/.wh..wh..opq"), "").unwrap();
    std::fs::write(src.join("opq/sub/new"), "new\n").unwrap();
    src
}

/// Mounts `image`, checks the overlayfs form of [`whiteout_source`], then stacks it on a
/// lower layer with overlayfs and checks what a container would see.
fn check_whiteouts(image: &layer::BuiltLayer, work: &Path) {
    let options = match image.fs {
        LayerFs::Erofs => "ro,loop",
        LayerFs::Ext4 => "ro,loop,noload",
    };
    let top = work.join("top");
    let _top = Mounted::new(&image.path, &top, image.fs.name(), options);
    let gone = std::fs::symlink_metadata(top.join("etc/gone")).unwrap();
    assert!(gone.file_type().is_char_device(), "{gone:?}");
    assert_eq!(gone.rdev(), 0);
    assert!(!top.join("etc/.wh.gone").exists());
    assert!(!top.join("opq/.wh..wh..opq").exists());
    assert_eq!(
        xattr(&top.join("opq"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(
        std::fs::read_to_string(top.join("etc/keep")).unwrap(),
        "kept\n"
    );

    let lower = work.join("lower");
    std::fs::create_dir_all(lower.join("etc")).unwrap();
    std::fs::create_dir_all(lower.join("opq")).unwrap();
    std::fs::write(lower.join("etc/gone"), "old\n").unwrap();
    std::fs::write(lower.join("opq/old"), "old\n").unwrap();
    let merged = work.join("merged");
    let opts = format!("ro,lowerdir={}:{}", top.display(), lower.display());
    let _merged = Mounted::new(Path::new("overlay"), &merged, "overlay", &opts);
    assert!(merged.join("etc/keep").exists());
    assert!(
        !merged.join("etc/gone").exists(),
        "whiteout hides the lower file"
    );
    assert!(
        !merged.join("opq/old").exists(),
        "opaque dir hides the lower dir"
    );
    assert!(merged.join("opq/sub/new").exists());
}

#[test]
fn layer_whiteouts_become_overlay_whiteouts() {
    if !require("layer_whiteouts_become_overlay_whiteouts", &[Need::Root]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = whiteout_source(tmp.path());
    // The same layer as a gzip'd tar, the way it comes out of an image.
    let tgz = tmp.path().join("layer.tar.gz");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&src)
        .arg("-czf")
        .arg(&tgz)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    for (source, fs) in [
        (&src, LayerFs::Erofs),
        (&tgz, LayerFs::Erofs),
        (&src, LayerFs::Ext4),
    ] {
        let started = Instant::now();
        let built = layer::build(&LayerSpec {
            source: source.clone(),
            fs: Some(fs),
            cache_dir: Some(tmp.path().join("cache")),
        })
        .unwrap();
        eprintln!(
            "{} layer from {} in {:?}: {} bytes",
            fs.name(),
            source.display(),
            started.elapsed(),
            std::fs::metadata(&built.path).unwrap().len()
        );
        assert_eq!(built.fs, fs);
        assert!(built.path.starts_with(tmp.path().join("cache/layers")));
        assert_eq!(
            built.path.file_name().unwrap().to_string_lossy(),
            format!("{}.{}", built.key, fs.name())
        );
        let work = tmp.path().join(format!("work-{}", built.key));
        check_whiteouts(&built, &work);
    }
    // Everything unmounted, loop devices freed.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&tmp.path().to_string_lossy().into_owned()));
}

#[test]
fn layer_is_cached_by_content() {
    if !require("layer_is_cached_by_content", &[Need::Root]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = whiteout_source(tmp.path());
    let spec = LayerSpec {
        source: src.clone(),
        fs: None,
        cache_dir: Some(tmp.path().join("cache")),
    };
    let first = layer::build(&spec).unwrap();
    assert!(!first.cached);
    let meta = std::fs::metadata(&first.path).unwrap();
    let second = layer::build(&spec).unwrap();
    assert!(second.cached, "the second build reused the image");
    assert_eq!(first.path, second.path);
    let again = std::fs::metadata(&second.path).unwrap();
    assert_eq!(
        (meta.ino(), meta.mtime_nsec()),
        (again.ino(), again.mtime_nsec())
    );

    std::fs::write(src.join("etc/keep"), "changed\n").unwrap();
    let third = layer::build(&spec).unwrap();
    assert_ne!(third.path, first.path, "new content, new image");
    // Only finished images in the cache: no staging dirs, no temporary files.
    let mut names: Vec<_> = std::fs::read_dir(tmp.path().join("cache/layers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want = vec![
        first
            .path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned(),
        third
            .path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned(),
    ];
    want.sort();
    assert_eq!(names, want);
}

#[test]
fn layer_bad_source_fails_and_leaves_no_partial_file() {
    if !require(
        "layer_bad_source_fails_and_leaves_no_partial_file",
        &[Need::Root],
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let garbage = tmp.path().join("not-a-layer.tar");
    std::fs::write(
        &garbage,
        "this is not a tar archive, just text\n".repeat(40),
    )
    .unwrap();
    let missing = tmp.path().join("missing");
    for source in [&garbage, &missing] {
        let err = layer::build(&LayerSpec {
            source: source.clone(),
            fs: None,
            cache_dir: Some(cache.clone()),
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains(&*source.to_string_lossy()), "{err}");
    }
    let left: Vec<_> = std::fs::read_dir(cache.join("layers"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in the cache: {left:?}");
}

/// `zcat <initrd> | cpio <args>`: the listing or a file, as a user would inspect it.
fn cpio(initrd: &Path, args: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("zcat '{}' | cpio --quiet {args}", initrd.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "cpio {args}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn check_initrd(agent: &Path, cache: &Path) -> initrd::BuiltInitrd {
    let started = Instant::now();
    let built = initrd::build(&InitrdSpec {
        agent: agent.to_path_buf(),
        output: None,
        cache_dir: Some(cache.to_path_buf()),
    })
    .unwrap();
    eprintln!(
        "initrd for {} ({} bytes) in {:?}: {} bytes",
        agent.display(),
        std::fs::metadata(agent).unwrap().len(),
        started.elapsed(),
        built.size
    );
    assert_eq!(
        built.path,
        cache
            .join("initrd")
            .join(format!("{}.cpio.gz", built.sha256))
    );
    let listing = cpio(&built.path, "-itv");
    let init = listing
        .lines()
        .find(|l| l.ends_with(" init"))
        .unwrap_or_else(|| panic!("no init in\n{listing}"));
    assert!(init.starts_with("-rwxr-xr-x"), "{init}");
    let console = listing
        .lines()
        .find(|l| l.ends_with(" dev/console"))
        .unwrap();
    assert!(console.starts_with("crw-------"), "{console}");
    let names: Vec<&str> = listing
        .lines()
        .map(|l| l.rsplit(' ').next().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "dev",
            "dev/console",
            "init",
            "mnt",
            "proc",
            "run",
            "sys",
            "tmp",
            "var"
        ]
    );
    // /init is the agent, byte for byte.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "zcat '{}' | cpio --quiet -i --to-stdout init | cmp - '{}'",
            built.path.display(),
            agent.display()
        ))
        .status()
        .unwrap();
    assert!(out.success(), "/init differs from {}", agent.display());
    built
}

#[test]
fn initrd_has_the_static_binary_as_init() {
    // busybox-static is a real static executable, as the agent must be.
    let tmp = tempfile::tempdir().unwrap();
    let first = check_initrd(Path::new("/bin/busybox"), tmp.path());
    assert!(!first.cached);
    let again = check_initrd(Path::new("/bin/busybox"), tmp.path());
    assert!(again.cached);
    assert_eq!(first.sha256, again.sha256, "reproducible");
}

#[test]
fn initrd_refuses_a_dynamic_agent() {
    let tmp = tempfile::tempdir().unwrap();
    let err = initrd::build(&InitrdSpec {
        agent: "/bin/ls".into(),
        output: None,
        cache_dir: Some(tmp.path().to_path_buf()),
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("/bin/ls is dynamically linked"), "{err}");
    assert!(err.contains("static-agent.sh"), "{err}");
    let left: Vec<_> = std::fs::read_dir(tmp.path().join("initrd"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn static_agent_script_builds_an_agent_the_initrd_accepts() {
    let started = Instant::now();
    let out = Command::new(ward_tests::workspace_root().join("scripts/static-agent.sh"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let agent = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    eprintln!(
        "static agent {} in {:?}",
        agent.display(),
        started.elapsed()
    );
    let tmp = tempfile::tempdir().unwrap();
    check_initrd(&agent, tmp.path());
}

#[test]
fn containerd_finds_shims_in_extra_path_dirs() {
    if !require("containerd_finds_shims_in_extra_path_dirs", &[Need::Root]) {
        return;
    }
    // The way ward's shim will be found: a `containerd-shim-<name>-v2` in a directory the
    // test puts on containerd's PATH. runc's shim under another name stands in for it here.
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(
        "/usr/bin/containerd-shim-runc-v2",
        bin.join("containerd-shim-wardtest-v2"),
    )
    .unwrap();
    let built = build_image(tmp.path(), ImageSpec::default());
    let ctrd = Containerd::start(
        "extra-path",
        &Options {
            path_dirs: vec![bin],
            runtimes: vec![containerd::Runtime {
                name: "wardtest".into(),
                runtime_type: "io.containerd.wardtest.v2".into(),
                options: String::new(),
            }],
            ..Options::default()
        },
    )
    .unwrap();
    let config = std::fs::read_to_string(ctrd.dir().join("config.toml")).unwrap();
    assert!(
        config.contains("runtime_type = \"io.containerd.wardtest.v2\""),
        "{config}"
    );
    ctrd.import(&built.path);
    let out = ctrd.ctr(&[
        "run",
        "--rm",
        "--runtime",
        "io.containerd.wardtest.v2",
        &built.reference,
        "via-path",
        "echo",
        "found",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "found\n", "{out:?}");
    // Without the extra dir the same runtime name is unknown.
    let plain = Containerd::start("no-extra-path", &Options::default()).unwrap();
    plain.import(&built.path);
    let out = plain.ctr(&[
        "run",
        "--rm",
        "--runtime",
        "io.containerd.wardtest.v2",
        &built.reference,
        "no-path",
        "true",
    ]);
    assert!(!out.status.success(), "{out:?}");
}

#[test]
fn layer_keeps_sources_already_in_overlay_form() {
    if !require("layer_keeps_sources_already_in_overlay_form", &[Need::Root]) {
        return;
    }
    // containerd's overlay snapshots hold whiteouts as 0:0 devices and opaque xattrs already:
    // the shim turns those directories into layer images as they are.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("snapshot");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::create_dir_all(src.join("opq/sub")).unwrap();
    std::fs::write(src.join("etc/keep"), "kept\n").unwrap();
    std::fs::write(src.join("opq/sub/new"), "new\n").unwrap();
    let st = Command::new("mknod")
        .arg(src.join("etc/gone"))
        .args(["c", "0", "0"])
        .status()
        .unwrap();
    assert!(st.success());
    let spec = LayerSpec {
        source: src.clone(),
        fs: Some(LayerFs::Erofs),
        cache_dir: Some(tmp.path().join("cache")),
    };
    let plain = layer::build(&spec).unwrap();
    let p = std::ffi::CString::new(src.join("opq").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: NUL-terminated strings and a 1-byte value that outlive the call.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            c"y".as_ptr().cast(),
            1,
            0,
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    let built = layer::build(&spec).unwrap();
    assert_ne!(
        plain.path, built.path,
        "the opaque xattr is part of the content"
    );
    check_whiteouts(&built, &tmp.path().join("work"));
}

#[test]
fn containerd_start_failure_is_reported_and_cleaned_up() {
    if !require(
        "containerd_start_failure_is_reported_and_cleaned_up",
        &[Need::Root],
    ) {
        return;
    }
    let err = Containerd::start(
        "bad-config",
        &Options {
            extra_config: "[this is not toml\n".into(),
            ..Options::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("containerd exited at start"), "{err}");
    assert!(
        err.contains("toml"),
        "containerd's own words are included: {err}"
    );
    let left: Vec<_> = std::fs::read_dir("/tmp")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ward-ctrd-bad-config-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn image_archive_is_read_by_skopeo_and_umoci() {
    if !require("image_archive_is_read_by_skopeo_and_umoci", &[Need::Root]) {
        return;
    }
    // Two other OCI implementations agree with containerd: skopeo finds the manifest by the
    // archive's index, umoci finds it by the ref.name tag and checks every digest unpacking.
    let tmp = tempfile::tempdir().unwrap();
    let built = build_image(tmp.path(), ImageSpec::default());
    let out = Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci-archive:{}", built.path.display()))
        .output()
        .expect("skopeo is installed");
    let inspect = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(inspect.contains(&built.manifest_digest), "{inspect}");

    let layout = tmp.path().join("layout");
    std::fs::create_dir(&layout).unwrap();
    let st = Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-xf")
        .arg(&built.path)
        .status()
        .unwrap();
    assert!(st.success());
    let bundle = tmp.path().join("bundle");
    let out = Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:latest", layout.display()))
        .arg(&bundle)
        .output()
        .expect("umoci is installed");
    assert!(out.status.success(), "{out:?}");
    let rootfs = bundle.join("rootfs");
    assert_eq!(
        std::fs::read_link(rootfs.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert_eq!(
        std::fs::metadata(rootfs.join("home/user")).unwrap().uid(),
        1000
    );
    assert_eq!(
        std::fs::metadata(rootfs.join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );
}

#[test]
fn layer_builds_racing_for_one_source_agree() {
    if !require("layer_builds_racing_for_one_source_agree", &[Need::Root]) {
        return;
    }
    // Sandboxes starting together convert the same layer together: each gets the same
    // complete image, a watcher never sees a partial one, and no temporary file remains.
    let tmp = tempfile::tempdir().unwrap();
    let src = whiteout_source(tmp.path());
    std::fs::copy("/bin/busybox", src.join("busybox")).unwrap();
    let cache = tmp.path().join("cache");
    let spec = LayerSpec {
        source: src,
        fs: Some(LayerFs::Erofs),
        cache_dir: Some(cache.clone()),
    };
    let reference = layer::build(&LayerSpec {
        cache_dir: Some(tmp.path().join("reference")),
        ..spec.clone()
    })
    .unwrap();
    let want = std::fs::read(&reference.path).unwrap();
    let final_path = cache
        .join("layers")
        .join(reference.path.file_name().unwrap());
    let done = std::sync::atomic::AtomicBool::new(false);
    let built = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut seen = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(bytes) = std::fs::read(&final_path) {
                    assert_eq!(bytes.len(), want.len(), "partial image visible");
                    seen += 1;
                }
            }
            seen
        });
        let builders: Vec<_> = (0..4)
            .map(|_| s.spawn(|| layer::build(&spec).unwrap()))
            .collect();
        let built: Vec<_> = builders.into_iter().map(|h| h.join().unwrap()).collect();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        eprintln!("watcher read the image {} times", watcher.join().unwrap());
        built
    });
    for b in &built {
        assert_eq!(b.path, final_path);
    }
    // Reproducible: a build in another cache wrote the very same bytes.
    assert_eq!(std::fs::read(&final_path).unwrap(), want);
    let names: Vec<_> = std::fs::read_dir(cache.join("layers"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [final_path.file_name().unwrap()]);
}

#[test]
fn containerd_with_cri_accepts_extra_runtimes() {
    if !require("containerd_with_cri_accepts_extra_runtimes", &[Need::Root]) {
        return;
    }
    // Kubernetes reaches a runtime through the CRI plugin's runtime table: the entries the
    // harness writes must be ones CRI loads.
    let ctrd = Containerd::start(
        "cri",
        &Options {
            cri: true,
            runtimes: vec![containerd::Runtime {
                name: "ward".into(),
                runtime_type: "io.containerd.ward.v2".into(),
                options: "  ConfigPath = \"/etc/ward/config.toml\"".into(),
            }],
            ..Options::default()
        },
    )
    .unwrap();
    let plugins = ctrd.ctr_ok(&["plugins", "ls"]);
    let cri = plugins
        .lines()
        .find(|l| l.contains("io.containerd.grpc.v1") && l.contains(" cri "))
        .unwrap_or_else(|| panic!("no CRI plugin in\n{plugins}"));
    assert!(cri.trim_end().ends_with("ok"), "{cri}\n{}", ctrd.log());
    assert!(
        ctrd.log().contains("io.containerd.ward.v2"),
        "CRI config logged the runtime"
    );
}
