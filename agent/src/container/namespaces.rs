//! Linux namespaces: which ones a spec asks for, the clone flags and /proc names for each,
//! and the uid/gid maps the library writes for a new user namespace.
//!
//! The helper creates or joins them (see `init`); this file holds the parts both sides share.

use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};

use super::error::{Error, Result};
use super::protocol::NamespacePlan;

/// The clone/unshare/setns flag of a namespace kind.
pub fn clone_flag(kind: LinuxNamespaceType) -> CloneFlags {
    match kind {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// The name of a namespace kind under /proc/<pid>/ns/.
pub fn proc_name(kind: LinuxNamespaceType) -> &'static str {
    match kind {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

/// The order namespaces are joined in: user first (it grants the capabilities needed to join
/// the others), mount last but one (paths opened earlier stay valid), cgroup after the
/// process is in its cgroup.
pub const JOIN_ORDER: [LinuxNamespaceType; 8] = [
    LinuxNamespaceType::User,
    LinuxNamespaceType::Ipc,
    LinuxNamespaceType::Uts,
    LinuxNamespaceType::Network,
    LinuxNamespaceType::Pid,
    LinuxNamespaceType::Time,
    LinuxNamespaceType::Mount,
    LinuxNamespaceType::Cgroup,
];

/// The namespaces `linux.namespaces` asks for, validated: no kind twice, join paths exist.
pub fn plan(id: &str, spec: &Spec) -> Result<Vec<NamespacePlan>> {
    let mut out: Vec<NamespacePlan> = Vec::new();
    let Some(list) = spec.linux().as_ref().and_then(|l| l.namespaces().clone()) else {
        return Ok(out);
    };
    for ns in list {
        if out.iter().any(|p| p.kind == ns.typ()) {
            return Err(Error::InvalidSpec {
                id: id.into(),
                field: "linux.namespaces",
                reason: format!("namespace {} listed twice", proc_name(ns.typ())),
            });
        }
        if let Some(path) = ns.path() {
            if !path.exists() {
                return Err(Error::InvalidSpec {
                    id: id.into(),
                    field: "linux.namespaces.path",
                    reason: format!(
                        "{} namespace path {} does not exist",
                        proc_name(ns.typ()),
                        path.display()
                    ),
                });
            }
        }
        out.push(NamespacePlan {
            kind: ns.typ(),
            path: ns.path().clone(),
        });
    }
    Ok(out)
}

/// Whether the plan creates a new user namespace (the library then writes its id maps).
pub fn creates_user_ns(plan: &[NamespacePlan]) -> bool {
    plan.iter()
        .any(|p| p.kind == LinuxNamespaceType::User && p.path.is_none())
}

/// Renders mappings in /proc/<pid>/uid_map format.
pub fn render_map(maps: &[LinuxIdMapping]) -> String {
    use std::fmt::Write;
    maps.iter().fold(String::new(), |mut out, m| {
        let _ = writeln!(out, "{} {} {}", m.container_id(), m.host_id(), m.size());
        out
    })
}

/// Writes `setgroups`, `uid_map` and `gid_map` of `pid` from the spec's mappings.
pub fn write_id_maps(id: &str, pid: i32, spec: &Spec) -> Result<()> {
    let linux = spec.linux().as_ref();
    let uid = linux
        .and_then(|l| l.uid_mappings().clone())
        .unwrap_or_default();
    let gid = linux
        .and_then(|l| l.gid_mappings().clone())
        .unwrap_or_default();
    if uid.is_empty() || gid.is_empty() {
        return Err(Error::InvalidSpec {
            id: id.into(),
            field: "linux.uidMappings",
            reason: "a new user namespace needs uidMappings and gidMappings".into(),
        });
    }
    let write = |map: &'static str, value: String| {
        fs::write(format!("/proc/{pid}/{map}"), &value).map_err(|source| Error::IdMap {
            id: id.into(),
            map,
            pid,
            value,
            source,
        })
    };
    write("uid_map", render_map(&uid))?;
    write("gid_map", render_map(&gid))?;
    Ok(())
}

/// The namespaces of `pid` that differ from ours, as paths in [`JOIN_ORDER`]: what `exec`
/// joins (joining one's own user namespace is an error, the others would be no-ops).
pub fn of_process(pid: i32) -> Vec<NamespacePlan> {
    let mut out = Vec::new();
    for kind in JOIN_ORDER {
        let theirs = PathBuf::from(format!("/proc/{pid}/ns/{}", proc_name(kind)));
        let ours = PathBuf::from(format!("/proc/self/ns/{}", proc_name(kind)));
        let (Ok(t), Ok(o)) = (fs::read_link(&theirs), fs::read_link(&ours)) else {
            continue; // kernel without this namespace kind
        };
        if t != o {
            out.push(NamespacePlan {
                kind,
                path: Some(theirs),
            });
        }
    }
    out
}

/// Opens a namespace file given by path in the spec.
pub fn open_path(path: &Path) -> Result<OwnedFd> {
    fs::File::open(path)
        .map(OwnedFd::from)
        .map_err(|e| Error::io("open namespace", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxIdMappingBuilder;

    #[test]
    fn renders_maps_one_per_line() {
        let m = LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(100_000u32)
            .size(65536u32)
            .build()
            .unwrap();
        assert_eq!(render_map(&[m]), "0 100000 65536\n");
    }

    #[test]
    fn duplicate_namespace_is_rejected() {
        let spec: Spec = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","linux":{"namespaces":[{"type":"pid"},{"type":"pid"}]}}"#,
        )
        .unwrap();
        let err = plan("c1", &spec).unwrap_err().to_string();
        assert!(err.contains("namespace pid listed twice"), "{err}");
    }
}
