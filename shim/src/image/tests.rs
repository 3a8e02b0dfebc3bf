//! Small images generated on the fly: layouts and archives, good and broken.

use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use serde_json::json;
use sha2::{Digest, Sha256};

use super::*;

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

fn put_blob(dir: &Path, bytes: &[u8]) -> String {
    let d = sha(bytes);
    let p = dir
        .join("blobs/sha256")
        .join(d.trim_start_matches("sha256:"));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
    d
}

/// A tar with the given regular files.
fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Writes an OCI layout with `layers` (uncompressed tars, bottom first; every other one
/// gzip'd) under `dir`, wrapped in an index with an arm64 decoy before the amd64 manifest.
fn layout(dir: &Path, layers: &[Vec<u8>]) -> String {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let (blob, media) = if i % 2 == 0 {
            (gzip(l), "application/vnd.oci.image.layer.v1.tar+gzip")
        } else {
            (l.clone(), "application/vnd.oci.image.layer.v1.tar")
        };
        let d = put_blob(dir, &blob);
        descs.push(json!({"mediaType": media, "digest": d, "size": blob.len()}));
        diff_ids.push(sha(l));
    }
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/bin/ep"], "Cmd": ["a", "b"], "Env": ["PATH=/bin", "X=1"],
                   "WorkingDir": "/work", "User": "1000:1000"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids}
    }))
    .unwrap();
    let cd = put_blob(dir, &config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": descs
    }))
    .unwrap();
    let md = put_blob(dir, &manifest);
    let decoy = put_blob(dir, b"{}");
    let index = json!({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": decoy, "size": 2,
         "platform": {"os": "linux", "architecture": "arm64"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": manifest.len(),
         "platform": {"os": "linux", "architecture": "amd64"}}
    ]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    md
}

/// The layout `dir` as an archive file.
fn archive_of(dir: &Path, out: &Path) {
    let mut b = tar::Builder::new(std::fs::File::create(out).unwrap());
    b.append_dir_all(".", dir).unwrap();
    b.finish().unwrap();
}

fn two_layers() -> Vec<Vec<u8>> {
    vec![
        tar_of(&[("etc/base", b"base\n"), ("etc/shadowed", b"old\n")]),
        tar_of(&[("etc/shadowed", b"new\n"), ("top", b"top\n")]),
    ]
}

#[test]
fn loads_a_layout_directory_bottom_layer_first() {
    let t = tempfile::tempdir().unwrap();
    let md = layout(&t.path().join("img"), &two_layers());
    let cache = t.path().join("cache");
    let img = load(&ImageRef::Path(t.path().join("img")), Some(&cache)).unwrap();
    assert_eq!(img.manifest_digest, md);
    assert_eq!(img.layers.len(), 2);
    assert!(
        img.layers
            .iter()
            .all(|l| l.starts_with(cache.join("images/layers")))
    );
    assert_eq!(
        std::fs::read_to_string(img.layers[0].join("etc/shadowed")).unwrap(),
        "old\n"
    );
    assert_eq!(
        std::fs::read_to_string(img.layers[1].join("top")).unwrap(),
        "top\n"
    );
    assert_eq!(img.config.entrypoint, ["/bin/ep"]);
    assert_eq!(img.config.cmd, ["a", "b"]);
    assert_eq!(img.config.env, ["PATH=/bin", "X=1"]);
    assert_eq!(img.config.working_dir, "/work");
    assert_eq!(img.config.user, "1000:1000");
    // Loaded again: the cached directories, nothing left from the unpacking.
    let again = load(&ImageRef::Path(t.path().join("img")), Some(&cache)).unwrap();
    assert_eq!(again.layers, img.layers);
    let names: Vec<_> = std::fs::read_dir(cache.join("images/layers"))
        .unwrap()
        .collect();
    assert_eq!(names.len(), 2);
}

#[test]
fn loads_the_same_image_from_an_archive() {
    let t = tempfile::tempdir().unwrap();
    let md = layout(&t.path().join("img"), &two_layers());
    archive_of(&t.path().join("img"), &t.path().join("img.tar"));
    let img = load(
        &ImageRef::Path(t.path().join("img.tar")),
        Some(&t.path().join("cache")),
    )
    .unwrap();
    assert_eq!(img.manifest_digest, md);
    assert_eq!(
        std::fs::read_to_string(img.layers[1].join("etc/shadowed")).unwrap(),
        "new\n"
    );
}

#[test]
fn whiteouts_become_overlayfs_whiteouts() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP whiteouts_become_overlayfs_whiteouts: needs root (mknod)");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let layers = vec![
        tar_of(&[("gone", b"x"), ("kept", b"y")]),
        tar_of(&[(".wh.gone", b"")]),
    ];
    layout(&t.path().join("img"), &layers);
    let img = load(
        &ImageRef::Path(t.path().join("img")),
        Some(&t.path().join("c")),
    )
    .unwrap();
    let m = std::fs::symlink_metadata(img.layers[1].join("gone")).unwrap();
    assert!(m.file_type().is_char_device());
    assert!(!img.layers[1].join(".wh.gone").exists());
}

#[test]
fn a_missing_path_is_an_error_naming_it() {
    let err = load(&ImageRef::Path("/nonexistent/img.tar".into()), None).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/img.tar"), "{err}");
}

#[test]
fn files_and_directories_that_are_not_oci_images_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let text = t.path().join("notes.txt");
    std::fs::write(&text, "hello").unwrap();
    let err = load(&ImageRef::Path(text.clone()), Some(t.path())).unwrap_err();
    assert!(matches!(err, ImageError::NotOci { .. }), "{err}");
    assert!(err.to_string().contains("notes.txt"), "{err}");
    let err = load(&ImageRef::Path(t.path().to_owned()), Some(t.path())).unwrap_err();
    assert!(err.to_string().contains("no index.json"), "{err}");
}

#[test]
fn a_missing_blob_is_named() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("img");
    layout(&img, &two_layers());
    let layer = sha(&gzip(&two_layers()[0]));
    std::fs::remove_file(
        img.join("blobs/sha256")
            .join(layer.trim_start_matches("sha256:")),
    )
    .unwrap();
    let err = load(&ImageRef::Path(img), Some(&t.path().join("c"))).unwrap_err();
    assert!(matches!(err, ImageError::MissingBlob { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(layer.trim_start_matches("sha256:")),
        "{err}"
    );
}

#[test]
fn a_corrupt_layer_fails_its_digest_and_leaves_nothing_in_the_cache() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("img");
    let layers = two_layers();
    layout(&img, &layers);
    // Same size, other bytes: the uncompressed second layer with one byte changed.
    let blob = img
        .join("blobs/sha256")
        .join(sha(&layers[1]).trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&blob).unwrap();
    let at = bytes.windows(4).position(|w| w == b"new\n").unwrap();
    bytes[at] = b'N';
    std::fs::write(&blob, bytes).unwrap();
    let cache = t.path().join("c");
    let err = load(&ImageRef::Path(img), Some(&cache)).unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    let left: Vec<_> = std::fs::read_dir(cache.join("images/layers"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    // The good bottom layer is cached; the bad one left neither a directory nor a temp.
    assert_eq!(left.len(), 1, "{left:?}");
}
