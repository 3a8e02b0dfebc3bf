//! The demo image `ward run` and `ward compare` use: the busybox image plus a static
//! `ward-workload` (the benchmark and probe binary) at `/usr/bin/ward-workload`, and where
//! to find that binary on this machine.

use std::path::{Path, PathBuf};

use crate::elf;
use crate::image::{self, Add, BuiltImage, DEFAULT_REFERENCE, ImageSpec};

/// Where the workload binary sits inside the image. `/usr/bin` is a symlink to `/bin` in
/// the busybox image, so the file itself is `/bin/ward-workload`.
pub const WORKLOAD_IN_IMAGE: &str = "/usr/bin/ward-workload";
const WORKLOAD_FILE: &str = "/bin/ward-workload";
const WORKLOAD_NAME: &str = "ward-workload";
const HOW_TO_BUILD: &str = "build one with `scripts/static-bin.sh ward-workload` \
     (or pass the path of a static ward-workload)";

/// Errors while finding the workload or building the demo image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no static {WORKLOAD_NAME} found; looked at {looked}; {HOW_TO_BUILD}")]
    NotFound { looked: String },
    /// Not a static executable (the ELF error names the path).
    #[error("{WORKLOAD_NAME}: {0}")]
    Workload(elf::Error),
    #[error(transparent)]
    Image(#[from] image::Error),
}

/// The demo image's spec: the default busybox image (`ward.local/demo:latest`, command
/// `sh`) with `workload` installed as [`WORKLOAD_IN_IMAGE`].
pub fn demo_spec(workload: &Path) -> ImageSpec {
    ImageSpec {
        reference: DEFAULT_REFERENCE.into(),
        adds: vec![Add {
            src: workload.to_path_buf(),
            dst: WORKLOAD_FILE.into(),
        }],
        ..ImageSpec::default()
    }
}

/// Builds the demo image with `workload` (which must be statically linked) into `output`
/// (`None`: the cache, named by the manifest digest).
pub fn build(workload: &Path, output: Option<PathBuf>) -> Result<BuiltImage, Error> {
    elf::require_static(workload).map_err(Error::Workload)?;
    let spec = ImageSpec {
        output,
        ..demo_spec(workload)
    };
    Ok(image::build(&spec)?)
}

/// Finds a statically linked `ward-workload`: next to the running executable (where an
/// install puts it), then in the workspace's `target/x86_64-unknown-linux-musl/release/`
/// and `target/x86_64-unknown-linux-gnu/release/` (what `scripts/static-bin.sh` builds).
/// The error names every place looked at and why each did not do.
pub fn find_static_workload() -> Result<PathBuf, Error> {
    find_in(&candidates())
}

/// The places [`find_static_workload`] looks, in order, without duplicates.
pub fn candidates() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let exe = std::env::current_exe().ok();
    if let Some(dir) = exe.as_deref().and_then(Path::parent) {
        dirs.push(dir.to_path_buf());
    }
    let mut targets = Vec::new();
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        targets.push(PathBuf::from(t));
    }
    // An executable run from a build tree (`target/debug/ward-rootfs`, or a test binary in
    // `target/debug/deps/`) names its target directory.
    if let Some(exe) = &exe {
        targets.extend(
            exe.ancestors()
                .filter(|a| a.file_name().is_some_and(|n| n == "target"))
                .map(Path::to_path_buf),
        );
    }
    targets.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    for t in targets {
        for triple in ["x86_64-unknown-linux-musl", "x86_64-unknown-linux-gnu"] {
            dirs.push(t.join(triple).join("release"));
        }
    }
    let mut out: Vec<PathBuf> = Vec::new();
    for d in dirs {
        let path = normalize(&d.join(WORKLOAD_NAME));
        if !out.contains(&path) {
            out.push(path);
        }
    }
    out
}

/// The first of `candidates` that is a static executable.
pub fn find_in(candidates: &[PathBuf]) -> Result<PathBuf, Error> {
    let mut looked = Vec::new();
    for path in candidates {
        if !path.exists() {
            looked.push(format!("{} (missing)", path.display()));
            continue;
        }
        match elf::require_static(path) {
            Ok(()) => return Ok(path.clone()),
            Err(elf::Error::Dynamic { .. }) => {
                looked.push(format!("{} (dynamically linked)", path.display()));
            }
            Err(e) => looked.push(format!("{} ({e})", path.display())),
        }
    }
    Err(Error::NotFound {
        looked: looked.join(", "),
    })
}

/// `a/b/../c` → `a/c` without touching the filesystem (paths built from
/// `CARGO_MANIFEST_DIR/..` read better in error messages that way).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir if out.file_name().is_some() => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree;

    #[test]
    fn demo_spec_adds_the_workload_to_the_busybox_image() {
        let spec = demo_spec(Path::new("/x/ward-workload"));
        assert_eq!(spec.reference, "ward.local/demo:latest");
        assert_eq!(spec.busybox, PathBuf::from(image::DEFAULT_BUSYBOX));
        assert_eq!(spec.cmd, vec!["sh".to_string()]);
        assert_eq!(
            spec.adds,
            vec![Add {
                src: "/x/ward-workload".into(),
                dst: "/bin/ward-workload".into()
            }]
        );
    }

    #[test]
    fn workload_lands_where_usr_bin_points() {
        if !Path::new(image::DEFAULT_BUSYBOX).exists() {
            eprintln!("SKIP workload_lands_where_usr_bin_points: needs busybox-static");
            return;
        }
        // Any static file stands in for the workload here: busybox itself.
        let t = image::rootfs_tree(&demo_spec(Path::new(image::DEFAULT_BUSYBOX))).unwrap();
        assert_eq!(
            t.get("/usr/bin").unwrap().kind,
            tree::Kind::Symlink("../bin".into())
        );
        let e = t.get("/bin/ward-workload").unwrap();
        assert!(matches!(e.kind, tree::Kind::File(_)));
        assert_eq!(e.mode & 0o111, 0o111);
    }

    #[test]
    fn not_found_names_every_place_and_why() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("a/ward-workload");
        let dynamic = PathBuf::from("/bin/ls");
        let e = find_in(&[missing.clone(), dynamic])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("{} (missing)", missing.display())),
            "{e}"
        );
        assert!(e.contains("/bin/ls (dynamically linked)"), "{e}");
        assert!(e.contains("scripts/static-bin.sh ward-workload"), "{e}");
    }

    #[test]
    fn first_static_candidate_wins() {
        if !Path::new(image::DEFAULT_BUSYBOX).exists() {
            eprintln!("SKIP first_static_candidate_wins: needs busybox-static");
            return;
        }
        let found = find_in(&[
            "/nonexistent/ward-workload".into(),
            "/bin/ls".into(),
            image::DEFAULT_BUSYBOX.into(),
        ])
        .unwrap();
        assert_eq!(found, PathBuf::from(image::DEFAULT_BUSYBOX));
    }

    #[test]
    fn candidates_include_the_workspace_release_dirs() {
        let c = candidates();
        let root = normalize(&Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
        for triple in ["x86_64-unknown-linux-musl", "x86_64-unknown-linux-gnu"] {
            let want = root
                .join("target")
                .join(triple)
                .join("release/ward-workload");
            assert!(c.contains(&want), "{want:?} not in {c:?}");
        }
        let exe_dir = std::env::current_exe()
            .unwrap()
            .parent()
            .unwrap()
            .to_path_buf();
        assert_eq!(c[0], exe_dir.join("ward-workload"));
    }

    #[test]
    fn dynamic_workload_is_refused_before_building() {
        let e = build(Path::new("/bin/ls"), None).unwrap_err().to_string();
        assert!(
            e.starts_with("ward-workload: /bin/ls is dynamically linked"),
            "{e}"
        );
    }
}
