//! A container spec made for the host, adapted to the guest: files bind-mounted from the
//! host (`/etc/hosts`, `/etc/resolv.conf`, …) are copied into the guest and bound from
//! there; namespaces joined by path (a CNI netns) become new namespaces of the guest.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::Value;
use ward_agent::protocol::agent::FileCopy;

/// Largest host file a bind mount may copy into the guest.
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// Where copied files live in the guest, per container.
const GUEST_FILES: &str = "/run/ward-files";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("config.json is not valid JSON: {0}")]
    Json(String),
    #[error(
        "bind mount of directory {source_path} on {destination}: directory bind mounts are not supported with isolation vm yet (files of up to 1 MiB are copied in)"
    )]
    DirectoryBind {
        source_path: String,
        destination: String,
    },
    #[error("bind mount of {source_path} on {destination}: {why}")]
    File {
        source_path: String,
        destination: String,
        why: String,
    },
}

/// The guest's version of `spec_json` for `container`, plus the files to copy in first.
pub fn for_guest(container: &str, spec_json: &[u8]) -> Result<(Vec<u8>, Vec<FileCopy>), SpecError> {
    let mut spec: Value =
        serde_json::from_slice(spec_json).map_err(|e| SpecError::Json(e.to_string()))?;
    let mut files = Vec::new();
    if let Some(mounts) = spec.get_mut("mounts").and_then(Value::as_array_mut) {
        for (i, m) in mounts.iter_mut().enumerate() {
            if !is_bind(m) {
                continue;
            }
            let source = m["source"].as_str().unwrap_or_default().to_owned();
            let destination = m["destination"].as_str().unwrap_or_default().to_owned();
            // The guest has its own /dev, /proc and /sys: bind those of the guest.
            if ["/dev/", "/proc/", "/sys/"]
                .iter()
                .any(|p| source.starts_with(p))
            {
                continue;
            }
            let meta = std::fs::metadata(&source).map_err(|e| SpecError::File {
                source_path: source.clone(),
                destination: destination.clone(),
                why: e.to_string(),
            })?;
            if meta.is_dir() {
                // A pod's shared /dev/shm: the guest's tmpfs serves the same purpose.
                if destination == "/dev/shm" {
                    *m = serde_json::json!({
                        "destination": "/dev/shm",
                        "type": "tmpfs",
                        "source": "shm",
                        "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
                    });
                    continue;
                }
                return Err(SpecError::DirectoryBind {
                    source_path: source,
                    destination,
                });
            }
            if meta.len() > MAX_FILE_BYTES {
                return Err(SpecError::File {
                    source_path: source,
                    destination,
                    why: format!(
                        "{} bytes is over the {MAX_FILE_BYTES} bytes copied into a VM",
                        meta.len()
                    ),
                });
            }
            let data = std::fs::read(&source).map_err(|e| SpecError::File {
                source_path: source.clone(),
                destination: destination.clone(),
                why: e.to_string(),
            })?;
            let name = Path::new(&destination)
                .file_name()
                .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
            let guest_path = format!("{GUEST_FILES}/{container}/{i}-{name}");
            files.push(FileCopy {
                path: guest_path.clone(),
                data,
                mode: meta.permissions().mode() & 0o7777,
                uid: std::os::unix::fs::MetadataExt::uid(&meta),
                gid: std::os::unix::fs::MetadataExt::gid(&meta),
                ..FileCopy::default()
            });
            m["source"] = Value::String(guest_path);
        }
    }
    if let Some(namespaces) = spec
        .pointer_mut("/linux/namespaces")
        .and_then(Value::as_array_mut)
    {
        for ns in namespaces {
            if let Some(obj) = ns.as_object_mut() {
                obj.remove("path");
            }
        }
    }
    let json = serde_json::to_vec(&spec).map_err(|e| SpecError::Json(e.to_string()))?;
    Ok((json, files))
}

fn is_bind(m: &Value) -> bool {
    m["type"].as_str() == Some("bind")
        || m["options"].as_array().is_some_and(|o| {
            o.iter()
                .any(|v| matches!(v.as_str(), Some("bind" | "rbind")))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(mounts: &Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "mounts": mounts,
            "linux": {"namespaces": [{"type": "pid"}, {"type": "network", "path": "/var/run/netns/cni-1"}]}
        }))
        .unwrap()
    }

    #[test]
    fn files_are_copied_in_and_bound_from_the_guest() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, "127.0.0.1 localhost\n").unwrap();
        let json = spec(&serde_json::json!([
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/etc/hosts", "type": "bind", "source": hosts, "options": ["rbind", "ro"]},
            {"destination": "/dev/null2", "type": "bind", "source": "/dev/null", "options": ["bind"]},
        ]));
        let (out, files) = for_guest("c1", &json).unwrap();
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].path, "/run/ward-files/c1/1-hosts");
        assert_eq!(files[0].data, b"127.0.0.1 localhost\n");
        assert_eq!(out["mounts"][1]["source"], "/run/ward-files/c1/1-hosts");
        assert_eq!(out["mounts"][2]["source"], "/dev/null");
        assert!(out["linux"]["namespaces"][1].get("path").is_none());
        assert_eq!(out["linux"]["namespaces"][1]["type"], "network");
    }

    #[test]
    fn directory_binds_are_refused_by_name_except_a_pods_shm() {
        let dir = tempfile::tempdir().unwrap();
        let json = spec(&serde_json::json!([
            {"destination": "/data", "type": "bind", "source": dir.path(), "options": ["rbind"]},
        ]));
        let err = for_guest("c1", &json).unwrap_err().to_string();
        assert!(
            err.contains("/data") && err.contains("not supported"),
            "{err}"
        );
        let json = spec(&serde_json::json!([
            {"destination": "/dev/shm", "type": "bind", "source": dir.path(), "options": ["rbind"]},
        ]));
        let (out, _) = for_guest("c1", &json).unwrap();
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(out["mounts"][0]["type"], "tmpfs");
        let json = spec(&serde_json::json!([
            {"destination": "/x", "type": "bind", "source": "/nonexistent/x", "options": ["rbind"]},
        ]));
        assert!(
            for_guest("c1", &json)
                .unwrap_err()
                .to_string()
                .contains("/nonexistent/x")
        );
    }
}
