//! containerd's rootfs mounts as read-only layers for a VM: every lower directory of the
//! overlay (and a non-empty upper) becomes a cached layer image, attached once per sandbox
//! to a free drive slot and named by its serial, which the agent finds in the guest.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use containerd_shim_protos::api::Mount;

/// The guest reads at most 20 bytes of serial; `w` plus 16 hex digits of the layer's key.
const SERIAL_HEX: usize = 16;

/// The directories behind a container's rootfs mounts, top layer first.
pub fn layer_dirs(bundle: &Path, mounts: &[Mount]) -> Result<Vec<PathBuf>, String> {
    match mounts {
        // The bundle's rootfs is already there (e.g. `ctr run --rootfs`).
        [] => {
            let dir = crate::rootfs::rootfs_dir(bundle);
            if dir.is_dir() {
                Ok(vec![dir])
            } else {
                Err(format!("no rootfs mounts and no {}", dir.display()))
            }
        }
        [m] if m.type_ == "overlay" => {
            let mut dirs = Vec::new();
            let option = |key: &str| {
                m.options
                    .iter()
                    .find_map(|o| o.strip_prefix(key).map(str::to_owned))
            };
            // What containerd's snapshot already holds above the image (usually nothing).
            if let Some(upper) = option("upperdir=") {
                let upper = PathBuf::from(upper);
                if std::fs::read_dir(&upper).is_ok_and(|mut d| d.next().is_some()) {
                    dirs.push(upper);
                }
            }
            let lower = option("lowerdir=").ok_or("overlay mount without lowerdir")?;
            dirs.extend(
                lower
                    .split(':')
                    .filter(|d| !d.is_empty())
                    .map(PathBuf::from),
            );
            Ok(dirs)
        }
        [m] if m.type_ == "bind" || m.options.iter().any(|o| o == "bind" || o == "rbind") => {
            Ok(vec![PathBuf::from(&m.source)])
        }
        [m] => Err(format!(
            "rootfs mount type {:?} ({}) is not supported with isolation vm",
            m.type_, m.source
        )),
        _ => Err(format!(
            "{} rootfs mounts: isolation vm takes one overlay or bind mount",
            mounts.len()
        )),
    }
}

/// The serial a layer image's drive carries.
pub fn serial_of(key: &str) -> String {
    format!("w{}", &key[..SERIAL_HEX.min(key.len())])
}

/// Which drive slot holds which layer, for one sandbox.
#[derive(Debug)]
pub struct DriveSlots {
    /// Slot index → layer key.
    used: Vec<Option<String>>,
    by_key: HashMap<String, usize>,
}

/// Where a layer sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Already attached: nothing to do.
    Attached(usize),
    /// Attach it to this free slot, then [`DriveSlots::commit`].
    Free(usize),
}

impl DriveSlots {
    pub fn new(slots: usize) -> Self {
        Self {
            used: vec![None; slots],
            by_key: HashMap::new(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.used.len()
    }

    /// Where layer `key` goes, or `None` when every slot is taken.
    pub fn place(&self, key: &str) -> Option<Placement> {
        if let Some(&slot) = self.by_key.get(key) {
            return Some(Placement::Attached(slot));
        }
        self.used
            .iter()
            .position(Option::is_none)
            .map(Placement::Free)
    }

    /// Records that `slot` now holds `key`.
    pub fn commit(&mut self, slot: usize, key: &str) {
        self.used[slot] = Some(key.to_owned());
        self.by_key.insert(key.to_owned(), slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(type_: &str, source: &str, options: &[&str]) -> Mount {
        let mut m = Mount::new();
        m.type_ = type_.into();
        m.source = source.into();
        m.options = options.iter().map(|s| (*s).to_owned()).collect();
        m
    }

    #[test]
    fn overlay_lowers_top_first_and_a_non_empty_upper_on_top() {
        let upper = tempfile::tempdir().unwrap();
        let bundle = tempfile::tempdir().unwrap();
        let m = mount(
            "overlay",
            "overlay",
            &[
                "index=off",
                &format!("upperdir={}", upper.path().display()),
                "lowerdir=/s/3/fs:/s/2/fs:/s/1/fs",
                "workdir=/s/4/work",
            ],
        );
        let dirs = layer_dirs(bundle.path(), std::slice::from_ref(&m)).unwrap();
        assert_eq!(dirs, ["/s/3/fs", "/s/2/fs", "/s/1/fs"].map(PathBuf::from));
        std::fs::write(upper.path().join("added"), "x").unwrap();
        let dirs = layer_dirs(bundle.path(), &[m]).unwrap();
        assert_eq!(dirs[0], upper.path());
        assert_eq!(dirs.len(), 4);
    }

    #[test]
    fn bind_and_prepared_rootfs_are_one_layer_others_are_refused() {
        let bundle = tempfile::tempdir().unwrap();
        let dirs = layer_dirs(bundle.path(), &[mount("bind", "/s/1/fs", &["rbind", "ro"])]);
        assert_eq!(dirs.unwrap(), [PathBuf::from("/s/1/fs")]);
        assert!(
            layer_dirs(bundle.path(), &[])
                .unwrap_err()
                .contains("rootfs")
        );
        std::fs::create_dir(bundle.path().join("rootfs")).unwrap();
        assert_eq!(layer_dirs(bundle.path(), &[]).unwrap().len(), 1);
        let err = layer_dirs(bundle.path(), &[mount("nfs", "srv:/x", &[])]).unwrap_err();
        assert!(err.contains("nfs"), "{err}");
    }

    #[test]
    fn a_layer_takes_one_slot_per_sandbox() {
        let mut slots = DriveSlots::new(2);
        assert_eq!(slots.place("a"), Some(Placement::Free(0)));
        slots.commit(0, "a");
        assert_eq!(slots.place("a"), Some(Placement::Attached(0)));
        assert_eq!(slots.place("b"), Some(Placement::Free(1)));
        slots.commit(1, "b");
        assert_eq!(slots.place("c"), None);
        assert_eq!(serial_of("0123456789abcdef0123"), "w0123456789abcdef");
    }
}
