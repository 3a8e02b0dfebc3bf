//! The demo OCI image: busybox-static with its applets, a root and a 1000 user, plus any
//! files the caller adds, written as an OCI image archive that `ctr images import` accepts.
//!
//! The archive is an oci-layout tarball (`oci-layout`, `index.json`, `blobs/sha256/…`) with
//! one gzip'd layer. Same inputs give the same bytes, so the manifest digest names the image.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use crate::tree::{self, Tree};
use crate::{cache, elf, sha256_hex};

/// The reference the demo image gets when the caller names none.
pub const DEFAULT_REFERENCE: &str = "ward.local/demo:latest";
/// Where Debian's busybox-static installs busybox.
pub const DEFAULT_BUSYBOX: &str = "/bin/busybox";

const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Errors while building the image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid image reference {reference:?}: {why}")]
    BadReference {
        reference: String,
        why: &'static str,
    },
    #[error("busybox {path}: {source}")]
    Busybox { path: PathBuf, source: elf::Error },
    #[error("cannot list the applets of {path}: {why}")]
    Applets { path: PathBuf, why: String },
    #[error("cannot add {src} as {dst}: {source}")]
    Add {
        src: PathBuf,
        dst: String,
        source: tree::Error,
    },
    #[error(transparent)]
    Tree(#[from] tree::Error),
    #[error("cannot compress the layer: {0}")]
    Compress(io::Error),
    #[error(transparent)]
    Cache(#[from] cache::Error),
    #[error("cannot write the image archive {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// A file or directory from the host to put into the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Add {
    pub src: PathBuf,
    /// Absolute path inside the image.
    pub dst: String,
}

/// What to build.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// Full reference, e.g. `ward.local/demo:latest`.
    pub reference: String,
    /// Where to write the archive; `None` puts it in the cache as `images/<digest>.oci.tar`.
    pub output: Option<PathBuf>,
    /// A statically linked busybox to install as `/bin/busybox`.
    pub busybox: PathBuf,
    pub adds: Vec<Add>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
}

impl Default for ImageSpec {
    fn default() -> Self {
        Self {
            reference: DEFAULT_REFERENCE.into(),
            output: None,
            busybox: DEFAULT_BUSYBOX.into(),
            adds: Vec::new(),
            entrypoint: Vec::new(),
            cmd: vec!["sh".into()],
        }
    }
}

/// A written image archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    pub path: PathBuf,
    pub reference: String,
    /// `sha256:<hex>` of the manifest: what containerd shows as the image digest.
    pub manifest_digest: String,
    /// Size of the archive in bytes.
    pub size: u64,
}

/// Builds the image described by `spec` and writes its archive.
pub fn build(spec: &ImageSpec) -> Result<BuiltImage, Error> {
    let tag = validate_reference(&spec.reference)?;
    let rootfs = rootfs_tree(spec)?;
    let layer_tar = rootfs.write_tar(Vec::new())?;
    let layer_gz = gzip(&layer_tar).map_err(Error::Compress)?;
    let diff_id = format!("sha256:{}", sha256_hex(&layer_tar));

    let config = serde_json::to_vec(&ImageConfig {
        architecture: "amd64",
        os: "linux",
        config: RunConfig {
            env: vec![PATH_ENV.into()],
            entrypoint: (!spec.entrypoint.is_empty()).then(|| spec.entrypoint.clone()),
            cmd: (!spec.cmd.is_empty()).then(|| spec.cmd.clone()),
            working_dir: "/",
        },
        rootfs: RootFs {
            kind: "layers",
            diff_ids: vec![diff_id],
        },
        history: vec![History {
            created_by: "ward-rootfs image",
        }],
    })
    .expect("image config serializes");
    let config_desc = Descriptor::of(MEDIA_CONFIG, &config);
    let layer_desc = Descriptor::of(MEDIA_LAYER_GZIP, &layer_gz);
    let manifest = serde_json::to_vec(&Manifest {
        schema_version: 2,
        media_type: MEDIA_MANIFEST,
        config: config_desc.clone(),
        layers: vec![layer_desc.clone()],
    })
    .expect("manifest serializes");
    let mut manifest_desc = Descriptor::of(MEDIA_MANIFEST, &manifest);
    let manifest_digest = manifest_desc.digest.clone();
    manifest_desc.annotations = Some(Annotations {
        containerd_name: spec.reference.clone(),
        ref_name: tag.to_owned(),
    });
    manifest_desc.platform = Some(Platform {
        architecture: "amd64",
        os: "linux",
    });
    let index = serde_json::to_vec(&Index {
        schema_version: 2,
        media_type: MEDIA_INDEX,
        manifests: vec![manifest_desc],
    })
    .expect("index serializes");

    let mut layout = Tree::new();
    layout.file(
        "/oci-layout",
        0o644,
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    )?;
    layout.file("/index.json", 0o644, index)?;
    for (desc, blob) in [
        (&config_desc, config),
        (&layer_desc, layer_gz),
        (&Descriptor::of(MEDIA_MANIFEST, &manifest), manifest),
    ] {
        let hex = desc.digest.trim_start_matches("sha256:");
        layout.file(&format!("/blobs/sha256/{hex}"), 0o644, blob)?;
    }

    let path = match &spec.output {
        Some(p) => p.clone(),
        None => cache::subdir(None, "images")?.join(format!(
            "{}.oci.tar",
            manifest_digest.trim_start_matches("sha256:")
        )),
    };
    let write_err = |source| Error::Write {
        path: path.clone(),
        source,
    };
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(cache::parent_dir(&path))
        .map_err(write_err)?;
    let mut out = layout.write_tar(io::BufWriter::new(tmp))?;
    out.flush().map_err(write_err)?;
    let tmp = out.into_inner().map_err(|e| write_err(e.into_error()))?;
    let size = tmp.as_file().metadata().map_err(write_err)?.len();
    cache::persist(tmp, &path)?;
    Ok(BuiltImage {
        path,
        reference: spec.reference.clone(),
        manifest_digest,
        size,
    })
}

/// The image's root filesystem.
pub fn rootfs_tree(spec: &ImageSpec) -> Result<Tree, Error> {
    let busybox_err = |source| Error::Busybox {
        path: spec.busybox.clone(),
        source,
    };
    // A dynamic busybox would find no libc in the image and fail with a baffling ENOENT.
    elf::require_static(&spec.busybox).map_err(busybox_err)?;
    let busybox = std::fs::read(&spec.busybox)
        .map_err(|e| busybox_err(elf::Error::read(&spec.busybox, e)))?;

    let mut t = Tree::new();
    for d in [
        "/dev", "/proc", "/sys", "/run", "/var", "/etc", "/bin", "/usr",
    ] {
        t.dir(d, 0o755)?;
    }
    t.dir("/tmp", 0o1777)?;
    t.dir("/var/tmp", 0o1777)?;
    t.dir("/root", 0o700)?;
    t.dir_owned("/home/user", 0o755, 1000)?;
    t.file("/bin/busybox", 0o755, busybox)?;
    for applet in applets(&spec.busybox)? {
        t.symlink(&format!("/bin/{applet}"), "busybox")?;
    }
    // Everything lives in /bin; the usual other places point there so scripts with
    // `#!/usr/bin/env sh` or `/sbin/...` work.
    t.symlink("/sbin", "bin")?;
    t.symlink("/usr/bin", "../bin")?;
    t.symlink("/usr/sbin", "../bin")?;
    t.file(
        "/etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n\
          nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
            .to_vec(),
    )?;
    t.file(
        "/etc/group",
        0o644,
        b"root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n".to_vec(),
    )?;
    t.file("/etc/hostname", 0o644, b"ward\n".to_vec())?;
    t.file(
        "/etc/hosts",
        0o644,
        b"127.0.0.1\tlocalhost\n::1\tlocalhost\n".to_vec(),
    )?;
    for add in &spec.adds {
        t.add_host(&add.src, &add.dst)
            .map_err(|source| Error::Add {
                src: add.src.clone(),
                dst: add.dst.clone(),
                source,
            })?;
    }
    Ok(t)
}

/// The applets `busybox --list` names, sorted.
fn applets(busybox: &Path) -> Result<Vec<String>, Error> {
    let err = |why: String| Error::Applets {
        path: busybox.to_path_buf(),
        why,
    };
    let out = Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(|e| err(e.to_string()))?;
    if !out.status.success() {
        return Err(err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|n| !n.is_empty() && !n.contains('/') && *n != "busybox")
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    if !names.iter().any(|n| n == "sh") {
        return Err(err("it has no `sh` applet".into()));
    }
    Ok(names)
}

/// Checks `name[:tag]` loosely (what containerd would refuse anyway, said earlier and more
/// clearly) and returns the tag (`latest` when none is given).
fn validate_reference(reference: &str) -> Result<&str, Error> {
    let bad = |why| Error::BadReference {
        reference: reference.into(),
        why,
    };
    if reference.is_empty() {
        return Err(bad("it is empty"));
    }
    if reference.contains('@') {
        return Err(bad("digest references cannot name a built image"));
    }
    let last = reference.rsplit('/').next().unwrap_or(reference);
    let (name, tag) = match last.split_once(':') {
        Some((n, t)) => (n, t),
        None => (last, "latest"),
    };
    let repo_ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c);
    if name.is_empty() || !name.chars().all(repo_ok) {
        return Err(bad(
            "the repository must be lower-case letters, digits, `.`, `_`, `-`",
        ));
    }
    let tag_ok = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
    if tag.is_empty() || tag.len() > 128 || !tag.chars().all(tag_ok) {
        return Err(bad("the tag must be 1-128 letters, digits, `.`, `_`, `-`"));
    }
    Ok(tag)
}

fn gzip(bytes: &[u8]) -> io::Result<Vec<u8>> {
    // GzBuilder writes mtime 0 and no file name: the same tar gives the same blob.
    let mut enc = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes)?;
    enc.finish()
}

#[derive(Serialize, Clone)]
struct Descriptor {
    #[serde(rename = "mediaType")]
    media_type: &'static str,
    digest: String,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<Annotations>,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<Platform>,
}

impl Descriptor {
    fn of(media_type: &'static str, blob: &[u8]) -> Self {
        Self {
            media_type,
            digest: format!("sha256:{}", sha256_hex(blob)),
            size: blob.len() as u64,
            annotations: None,
            platform: None,
        }
    }
}

#[derive(Serialize, Clone)]
struct Annotations {
    #[serde(rename = "io.containerd.image.name")]
    containerd_name: String,
    #[serde(rename = "org.opencontainers.image.ref.name")]
    ref_name: String,
}

#[derive(Serialize, Clone)]
struct Platform {
    architecture: &'static str,
    os: &'static str,
}

#[derive(Serialize)]
struct Index {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'static str,
    manifests: Vec<Descriptor>,
}

#[derive(Serialize)]
struct Manifest {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'static str,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Serialize)]
struct ImageConfig {
    architecture: &'static str,
    os: &'static str,
    config: RunConfig,
    rootfs: RootFs,
    history: Vec<History>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RunConfig {
    env: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entrypoint: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cmd: Option<Vec<String>>,
    working_dir: &'static str,
}

#[derive(Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<String>,
}

#[derive(Serialize)]
struct History {
    created_by: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_checked_and_tagged() {
        assert_eq!(
            validate_reference("ward.local/demo:latest").unwrap(),
            "latest"
        );
        assert_eq!(validate_reference("localhost:5000/a/b").unwrap(), "latest");
        assert_eq!(validate_reference("demo:v1.2").unwrap(), "v1.2");
        for bad in ["", "Demo:1", "demo:", "demo@sha256:00", "a/b c"] {
            let e = validate_reference(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn rootfs_has_busybox_applets_and_users() {
        if !Path::new(DEFAULT_BUSYBOX).exists() {
            eprintln!("SKIP rootfs_has_busybox_applets_and_users: needs busybox-static");
            return;
        }
        let t = rootfs_tree(&ImageSpec::default()).unwrap();
        for applet in ["sh", "echo", "cat", "ls", "id", "sleep", "mount", "grep"] {
            let e = t.get(&format!("/bin/{applet}")).unwrap();
            assert_eq!(e.kind, tree::Kind::Symlink("busybox".into()), "{applet}");
        }
        let tree::Kind::File(passwd) = &t.get("/etc/passwd").unwrap().kind else {
            panic!("no /etc/passwd");
        };
        let passwd = String::from_utf8_lossy(passwd);
        assert!(passwd.contains("root:x:0:0:"), "{passwd}");
        assert!(passwd.contains(":1000:1000:"), "{passwd}");
        assert_eq!(t.get("/home/user").unwrap().uid, 1000);
    }

    #[test]
    fn dynamic_busybox_is_refused() {
        let spec = ImageSpec {
            busybox: "/bin/ls".into(),
            ..ImageSpec::default()
        };
        let e = rootfs_tree(&spec).unwrap_err().to_string();
        assert!(
            e.contains("/bin/ls") && e.contains("dynamically linked"),
            "{e}"
        );
    }
}
