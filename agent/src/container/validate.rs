//! Checks done before anything is created, so a bad spec fails with a clear message and
//! leaves nothing behind.

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use oci_spec::runtime::Spec;

use super::error::{Error, Result};
use super::mounts::parse_options;

/// Ids name directories and cgroups: keep them to a safe alphabet.
pub fn id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && !id.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidSpec {
            id: id.into(),
            field: "id",
            reason: format!("{id:?} must be non-empty [A-Za-z0-9_.-]"),
        })
    }
}

fn invalid(id: &str, field: &'static str, reason: String) -> Error {
    Error::InvalidSpec {
        id: id.into(),
        field,
        reason,
    }
}

/// The parts of a spec the kernel would reject late and obscurely.
pub fn spec(id: &str, spec: &Spec) -> Result<()> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| invalid(id, "process", "missing".into()))?;
    if process.args().as_ref().is_none_or(Vec::is_empty) {
        return Err(invalid(id, "process.args", "empty".into()));
    }
    if !process.cwd().is_absolute() {
        return Err(invalid(
            id,
            "process.cwd",
            format!("{} is not absolute", process.cwd().display()),
        ));
    }
    // Warnings go to the caller's logger (the init helper has none), and a bad seccomp
    // profile fails here, before anything exists.
    if process.apparmor_profile().is_some() {
        log::warn!(
            "container {id}: process.apparmorProfile is ignored: ward does not load AppArmor profiles"
        );
    }
    if process.selinux_label().is_some() {
        log::warn!(
            "container {id}: process.selinuxLabel is ignored: ward does not apply SELinux labels"
        );
    }
    super::hooks::warn_unsupported(id, spec.hooks().as_ref());
    if let Some(profile) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        super::seccomp::compile_profile(profile)?;
    }
    for (i, m) in spec
        .mounts()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let dest = m.destination();
        if !dest.is_absolute() {
            return Err(invalid(
                id,
                "mounts.destination",
                format!("mounts[{i}]: {} is not absolute", dest.display()),
            ));
        }
        let opts = parse_options(m.options().as_deref().unwrap_or_default());
        let bind = opts.flags.contains(MsFlags::MS_BIND) || m.typ().as_deref() == Some("bind");
        if bind {
            let src = m.source().as_ref().ok_or_else(|| {
                invalid(
                    id,
                    "mounts.source",
                    format!("mounts[{i}] ({}): a bind needs a source", dest.display()),
                )
            })?;
            if !src.exists() {
                return Err(invalid(
                    id,
                    "mounts.source",
                    format!(
                        "mounts[{i}] ({}): bind source {} does not exist",
                        dest.display(),
                        src.display()
                    ),
                ));
            }
        } else if m.typ().as_ref().is_none_or(String::is_empty) {
            return Err(invalid(
                id,
                "mounts.type",
                format!("mounts[{i}] ({}): no type and not a bind", dest.display()),
            ));
        }
    }
    Ok(())
}

/// `root.path`, resolved against the bundle.
pub fn root_path(id: &str, spec: &Spec, bundle: Option<&Path>) -> Result<PathBuf> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| invalid(id, "root", "missing and no rootfs given".into()))?;
    let p = root.path();
    Ok(match bundle {
        Some(b) if p.is_relative() => b.join(p),
        _ => p.clone(),
    })
}

/// Whether `path` is a block device (a layer image attached as a drive).
pub fn is_block_device(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device())
}

/// A rootfs or layer directory must exist.
pub fn rootfs_dir(id: &str, path: &Path) -> Result<()> {
    if path.is_dir() {
        Ok(())
    } else {
        Err(Error::MissingRootfs {
            id: id.into(),
            path: path.to_path_buf(),
        })
    }
}
