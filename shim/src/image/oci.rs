//! Reading an OCI image: blobs from an `oci-archive` tarball (read in place, by offset) or
//! an OCI layout directory, every blob checked against its digest, and the index →
//! manifest → config walk that picks linux/amd64 out of a multi-platform index.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::ImageError;

const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Index, manifest and config blobs are small; anything bigger is not what it claims.
const MAX_JSON_BLOB: u64 = 16 << 20;

#[derive(Debug, Clone, Deserialize)]
pub(super) struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
}

#[derive(Debug, Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Manifest {
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct ConfigFile {
    #[serde(default)]
    pub config: Option<RunConfig>,
    #[serde(default)]
    pub rootfs: Option<RootFs>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct RunConfig {
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// Where an image's files are.
#[derive(Debug)]
pub(super) enum Source {
    /// An OCI layout tarball: member name → (data offset, size).
    Archive {
        path: PathBuf,
        members: HashMap<String, (u64, u64)>,
    },
    /// An OCI layout directory.
    Layout(PathBuf),
}

/// The hex part of a `sha256:` digest, checked so it can name a file.
pub(super) fn digest_hex<'a>(image: &Path, digest: &'a str) -> Result<&'a str, ImageError> {
    match digest.strip_prefix("sha256:") {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(hex),
        _ => Err(ImageError::BadDigest {
            image: image.to_owned(),
            digest: digest.to_owned(),
        }),
    }
}

impl Source {
    /// Opens `path` as an archive (a regular file) or a layout (a directory).
    pub fn open(path: &Path) -> Result<Self, ImageError> {
        let meta = std::fs::metadata(path).map_err(|source| ImageError::Open {
            image: path.to_owned(),
            source,
        })?;
        let not_oci = |why: String| ImageError::NotOci {
            image: path.to_owned(),
            why,
        };
        if meta.is_dir() {
            if !path.join("index.json").is_file() {
                return Err(not_oci("the directory has no index.json".into()));
            }
            return Ok(Self::Layout(path.to_owned()));
        }
        let file = File::open(path).map_err(|source| ImageError::Open {
            image: path.to_owned(),
            source,
        })?;
        let mut archive = tar::Archive::new(file);
        let mut members = HashMap::new();
        let entries = archive
            .entries_with_seek()
            .map_err(|e| not_oci(format!("not a tar archive: {e}")))?;
        for entry in entries {
            let entry = entry.map_err(|e| not_oci(format!("not a tar archive: {e}")))?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let name = entry
                .path()
                .map_err(|e| not_oci(format!("bad member name: {e}")))?
                .to_string_lossy()
                .trim_start_matches("./")
                .to_owned();
            members.insert(name, (entry.raw_file_position(), entry.size()));
        }
        if !members.contains_key("index.json") {
            return Err(not_oci("the archive has no index.json".into()));
        }
        Ok(Self::Archive {
            path: path.to_owned(),
            members,
        })
    }

    pub fn path(&self) -> &Path {
        match self {
            Self::Archive { path, .. } | Self::Layout(path) => path,
        }
    }

    /// A reader over the member `name` (`index.json`, `blobs/sha256/<hex>`).
    fn open_member(&self, name: &str) -> Result<(Box<dyn Read + Send>, u64), ImageError> {
        let missing = || ImageError::MissingBlob {
            image: self.path().to_owned(),
            name: name.to_owned(),
        };
        match self {
            Self::Layout(dir) => {
                let p = dir.join(name);
                let f = File::open(&p).map_err(|e| match e.kind() {
                    io::ErrorKind::NotFound => missing(),
                    _ => ImageError::Read {
                        path: p.clone(),
                        source: e,
                    },
                })?;
                let size = f.metadata().map_or(0, |m| m.len());
                Ok((Box::new(f), size))
            }
            Self::Archive { path, members } => {
                let &(offset, size) = members.get(name).ok_or_else(missing)?;
                let read_err = |source| ImageError::Read {
                    path: path.clone(),
                    source,
                };
                let mut f = File::open(path).map_err(read_err)?;
                f.seek(SeekFrom::Start(offset)).map_err(read_err)?;
                Ok((Box::new(f.take(size)), size))
            }
        }
    }

    /// The blob `digest`, unverified: the caller hashes what it reads.
    pub fn open_blob(&self, digest: &str) -> Result<Box<dyn Read + Send>, ImageError> {
        let hex = digest_hex(self.path(), digest)?;
        Ok(self.open_member(&format!("blobs/sha256/{hex}"))?.0)
    }

    /// A small blob read whole and checked against its digest.
    fn read_blob(&self, digest: &str) -> Result<Vec<u8>, ImageError> {
        let hex = digest_hex(self.path(), digest)?;
        let name = format!("blobs/sha256/{hex}");
        let bytes = self.read_small(&name)?;
        let actual = format!("{:x}", Sha256::digest(&bytes));
        if actual != hex {
            return Err(ImageError::DigestMismatch {
                image: self.path().to_owned(),
                blob: digest.to_owned(),
                actual: format!("sha256:{actual}"),
            });
        }
        Ok(bytes)
    }

    fn read_small(&self, name: &str) -> Result<Vec<u8>, ImageError> {
        let (mut r, size) = self.open_member(name)?;
        if size > MAX_JSON_BLOB {
            return Err(ImageError::NotOci {
                image: self.path().to_owned(),
                why: format!("{name} is {size} bytes, too big for JSON metadata"),
            });
        }
        let mut bytes = Vec::with_capacity(size as usize);
        r.read_to_end(&mut bytes)
            .map_err(|source| ImageError::Read {
                path: self.path().join(name),
                source,
            })?;
        Ok(bytes)
    }

    fn json<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        bytes: &[u8],
    ) -> Result<T, ImageError> {
        serde_json::from_slice(bytes).map_err(|e| ImageError::NotOci {
            image: self.path().to_owned(),
            why: format!("{what}: {e}"),
        })
    }

    /// index.json → the linux/amd64 manifest (through nested indexes) and its config.
    pub fn manifest(&self) -> Result<(String, Manifest, ConfigFile), ImageError> {
        let index: Index = self.json("index.json", &self.read_small("index.json")?)?;
        let mut candidates = index.manifests;
        for _ in 0..4 {
            let chosen = pick(&candidates).ok_or_else(|| ImageError::NotOci {
                image: self.path().to_owned(),
                why: "the index lists no linux/amd64 manifest".into(),
            })?;
            let bytes = self.read_blob(&chosen.digest)?;
            if chosen.media_type == MEDIA_INDEX || chosen.media_type == MEDIA_DOCKER_LIST {
                let nested: Index = self.json(&chosen.digest, &bytes)?;
                candidates = nested.manifests;
                continue;
            }
            let manifest: Manifest = self.json(&chosen.digest, &bytes)?;
            let config: ConfigFile = self.json(
                &manifest.config.digest,
                &self.read_blob(&manifest.config.digest)?,
            )?;
            return Ok((chosen.digest, manifest, config));
        }
        Err(ImageError::NotOci {
            image: self.path().to_owned(),
            why: "indexes nested too deep".into(),
        })
    }
}

/// The linux/amd64 entry; an entry without a platform matches anything.
fn pick(manifests: &[Descriptor]) -> Option<Descriptor> {
    manifests
        .iter()
        .find(|d| {
            d.platform
                .as_ref()
                .is_none_or(|p| p.os == "linux" && p.architecture == "amd64")
        })
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(os: &str, arch: &str, digest: &str) -> Descriptor {
        Descriptor {
            media_type: String::new(),
            digest: digest.into(),
            platform: Some(Platform {
                architecture: arch.into(),
                os: os.into(),
            }),
        }
    }

    #[test]
    fn picks_linux_amd64_out_of_an_index() {
        let m = [desc("linux", "arm64", "a"), desc("linux", "amd64", "b")];
        assert_eq!(pick(&m).unwrap().digest, "b");
        assert!(pick(&[desc("windows", "amd64", "c")]).is_none());
    }

    #[test]
    fn digests_must_be_sha256_hex() {
        let p = Path::new("/img");
        assert!(digest_hex(p, &format!("sha256:{}", "a".repeat(64))).is_ok());
        let err = digest_hex(p, "sha256:../../etc/passwd").unwrap_err();
        assert!(err.to_string().contains("/img"), "{err}");
        assert!(digest_hex(p, "md5:abc").is_err());
    }
}
