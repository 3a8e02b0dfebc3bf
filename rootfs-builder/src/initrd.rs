//! The guest initrd: a gzip'd newc cpio whose `/init` is the static `ward-agent`, plus the
//! empty directories the agent mounts over and a `/dev/console` node for early output.
//!
//! The archive is reproducible, so its SHA-256 names it in the cache
//! (`$WARD_CACHE/initrd/<sha256>.cpio.gz`).

use std::io::{self, Write};
use std::path::PathBuf;

use crate::cpio::{Node, Writer};
use crate::{cache, elf, sha256_hex};

/// Errors while building the initrd.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("agent {path}: {source}")]
    Agent { path: PathBuf, source: elf::Error },
    #[error("cannot write the initrd archive: {0}")]
    Archive(io::Error),
    #[error(transparent)]
    Cache(#[from] cache::Error),
}

/// What to build.
#[derive(Debug, Clone)]
pub struct InitrdSpec {
    /// The statically linked `ward-agent` to install as `/init`.
    pub agent: PathBuf,
    /// Where to write it; `None` puts it in the cache.
    pub output: Option<PathBuf>,
    /// Cache root when `output` is `None`; `None` means [`cache::cache_dir`].
    pub cache_dir: Option<PathBuf>,
}

/// A written initrd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltInitrd {
    pub path: PathBuf,
    /// Hex SHA-256 of the archive.
    pub sha256: String,
    pub size: u64,
    /// `true` when an identical archive was already at `path`.
    pub cached: bool,
}

/// Builds the initrd for `spec.agent`, refusing a dynamically linked agent.
pub fn build(spec: &InitrdSpec) -> Result<BuiltInitrd, Error> {
    let agent_err = |source| Error::Agent {
        path: spec.agent.clone(),
        source,
    };
    let agent =
        std::fs::read(&spec.agent).map_err(|e| agent_err(elf::Error::read(&spec.agent, e)))?;
    elf::check_static(&spec.agent, &agent).map_err(agent_err)?;
    let archive = archive(&agent).map_err(Error::Archive)?;
    let sha256 = sha256_hex(&archive);
    let path = match &spec.output {
        Some(p) => p.clone(),
        None => {
            cache::subdir(spec.cache_dir.as_deref(), "initrd")?.join(format!("{sha256}.cpio.gz"))
        }
    };
    let cached = spec.output.is_none() && path.exists();
    if !cached {
        cache::write_atomic(&path, &archive)?;
    }
    Ok(BuiltInitrd {
        path,
        sha256,
        size: archive.len() as u64,
        cached,
    })
}

/// The gzip'd cpio holding `agent` as `/init`.
pub fn archive(agent: &[u8]) -> io::Result<Vec<u8>> {
    // Sorted by name so the listing reads like `ls -R`; each parent precedes its children.
    let entries: [(&str, Node<'_>); 9] = [
        ("dev", Node::Dir { mode: 0o755 }),
        (
            "dev/console",
            Node::CharDev {
                mode: 0o600,
                major: 5,
                minor: 1,
            },
        ),
        (
            "init",
            Node::File {
                mode: 0o755,
                data: agent,
            },
        ),
        ("mnt", Node::Dir { mode: 0o755 }),
        ("proc", Node::Dir { mode: 0o555 }),
        ("run", Node::Dir { mode: 0o755 }),
        ("sys", Node::Dir { mode: 0o555 }),
        ("tmp", Node::Dir { mode: 0o1777 }),
        ("var", Node::Dir { mode: 0o755 }),
    ];
    // mtime 0 and no file name in the gzip header: same agent, same bytes.
    let gz = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::best());
    let mut cpio = Writer::new(gz);
    for (name, node) in &entries {
        cpio.append(name, node)?;
    }
    let mut gz = cpio.finish()?;
    gz.flush()?;
    gz.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_is_reproducible() {
        assert_eq!(archive(b"agent").unwrap(), archive(b"agent").unwrap());
        assert_ne!(archive(b"agent").unwrap(), archive(b"other").unwrap());
    }

    #[test]
    fn dynamic_agent_is_refused_and_nothing_written() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("initrd.cpio.gz");
        let e = build(&InitrdSpec {
            agent: "/bin/ls".into(),
            output: Some(out.clone()),
            cache_dir: None,
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("/bin/ls is dynamically linked"), "{e}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
