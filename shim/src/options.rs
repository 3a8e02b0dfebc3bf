//! What the shim reads from containerd besides the task request: the OCI annotations of
//! the bundle's spec (sandbox grouping, isolation override) and the runtime options'
//! config path.

use std::collections::HashMap;
use std::path::PathBuf;

use containerd_shim_protos::protobuf::CodedInputStream;
use containerd_shim_protos::protobuf::well_known_types::any::Any;

/// The CRI annotation naming a container's pod sandbox.
pub const CRI_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// The `annotations` of an OCI spec (empty when absent or unparsable).
pub fn annotations(spec_json: &[u8]) -> HashMap<String, String> {
    #[derive(serde::Deserialize)]
    struct Spec {
        #[serde(default)]
        annotations: HashMap<String, String>,
    }
    serde_json::from_slice::<Spec>(spec_json)
        .map(|s| s.annotations)
        .unwrap_or_default()
}

/// The config path in containerd's generic runtime options
/// (`runtimeoptions.v1.Options { type_url = 1; config_path = 2; config_body = 3 }`), which
/// both `ctr run --runtime-config-path` and a CRI runtime's `ConfigPath` produce.
pub fn config_path(options: &Any) -> Option<PathBuf> {
    if !options.type_url.ends_with("runtimeoptions.v1.Options") {
        return None;
    }
    let mut input = CodedInputStream::from_bytes(&options.value);
    while let Ok(Some(tag)) = input.read_raw_tag_or_eof() {
        // Every field of that message is a string (wire type 2).
        if tag & 7 != 2 {
            return None;
        }
        let value = input.read_string().ok()?;
        if tag >> 3 == 2 && !value.is_empty() {
            return Some(PathBuf::from(value));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_annotations_and_tolerates_specs_without_them() {
        let a = annotations(br#"{"ociVersion":"1.0.2","annotations":{"io.ward.isolation":"vm"}}"#);
        assert_eq!(a["io.ward.isolation"], "vm");
        assert!(annotations(br#"{"ociVersion":"1.0.2"}"#).is_empty());
    }

    #[test]
    fn finds_the_config_path_in_runtime_options() {
        let mut any = Any::new();
        any.type_url = "runtimeoptions.v1.Options".into();
        // field 1 "x", field 2 "/etc/w.toml"
        let mut v = vec![0x0a, 1, b'x', 0x12, 11];
        v.extend_from_slice(b"/etc/w.toml");
        any.value = v;
        assert_eq!(config_path(&any), Some(PathBuf::from("/etc/w.toml")));
        any.type_url = "containerd.runc.v1.Options".into();
        assert_eq!(config_path(&any), None);
    }
}
