//! How much of the cgroup tree outside our own cgroup is visible. For every cgroup
//! filesystem mounted under /sys/fs/cgroup (v1 hierarchies and the v2 tree), the
//! directories one and two levels below the mount point are counted, except our own
//! cgroup, its ancestors and its descendants. A runc container (own cgroup bind-mounted, or
//! a cgroup namespace) sees 0; the host sees every slice and service; a VM guest sees only
//! the guest's own cgroups.

use std::fs;
use std::path::{Path, PathBuf};

/// A cgroup filesystem mount and where our own cgroup sits inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    pub mountpoint: PathBuf,
    /// Our cgroup relative to the mount point (`""`: the mount point itself); `None` when
    /// it lies outside what this mount shows.
    pub own: Option<String>,
}

/// Pairs the cgroup mounts under /sys/fs/cgroup in `mountinfo` (/proc/self/mountinfo) with
/// our cgroup in each from `self_cgroup` (/proc/self/cgroup). A mount point mounted over
/// keeps only its last (visible) mount.
pub fn mounts(mountinfo: &str, self_cgroup: &str) -> Vec<CgroupMount> {
    let mut out: Vec<CgroupMount> = Vec::new();
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        let (Some(root), Some(mountpoint), Some(fstype)) = (pre.get(3), pre.get(4), post.first())
        else {
            continue;
        };
        if !(mountpoint.starts_with("/sys/fs/cgroup")) {
            continue;
        }
        let own_path = match *fstype {
            "cgroup2" => own_cgroup(self_cgroup, |id, ctrls| id == "0" && ctrls.is_empty()),
            "cgroup" => {
                let opts: Vec<&str> = post.get(2).copied().unwrap_or("").split(',').collect();
                own_cgroup(self_cgroup, |id, ctrls| {
                    id != "0" && !ctrls.is_empty() && ctrls.split(',').all(|c| opts.contains(&c))
                })
            }
            _ => continue,
        };
        let own = own_path.and_then(|p| relative_to(&p, &unescape(root)));
        let mountpoint = PathBuf::from(unescape(mountpoint));
        out.retain(|m| m.mountpoint != mountpoint);
        out.push(CgroupMount { mountpoint, own });
    }
    out
}

/// The path of the /proc/self/cgroup line whose `id:controllers` `matches`.
fn own_cgroup(self_cgroup: &str, matches: impl Fn(&str, &str) -> bool) -> Option<String> {
    self_cgroup.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (id, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        matches(id, ctrls).then(|| path.to_owned())
    })
}

/// `path` relative to `root` (both absolute cgroup paths), `None` when outside it.
fn relative_to(path: &str, root: &str) -> Option<String> {
    let root = root.trim_end_matches('/');
    let rest = path.strip_prefix(root)?;
    if !rest.is_empty() && !rest.starts_with('/') {
        return None;
    }
    Some(rest.trim_matches('/').to_owned())
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// True when `dir` (relative to a mount) is `own`, above it or below it.
pub fn is_own(dir: &str, own: Option<&str>) -> bool {
    let Some(own) = own else {
        return false;
    };
    let under = |a: &str, b: &str| b.is_empty() || a == b || a.starts_with(&format!("{b}/"));
    under(own, dir) || under(dir, own)
}

/// Directories at depth 1 and 2 under each mount that are not our own (see [`is_own`]).
pub fn count_foreign(mounts: &[CgroupMount]) -> u64 {
    let mut n = 0;
    for m in mounts {
        for (rel, path) in subdirs(&m.mountpoint, "") {
            if !is_own(&rel, m.own.as_deref()) {
                n += 1;
            }
            n += subdirs(&path, &rel)
                .iter()
                .filter(|(r, _)| !is_own(r, m.own.as_deref()))
                .count() as u64;
        }
    }
    n
}

fn subdirs(dir: &Path, rel: &str) -> Vec<(String, PathBuf)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let r = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            (r, e.path())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // A runc container on a cgroup v1 host: the container's cgroup is bind-mounted.
    const RUNC_V1_MOUNTS: &str = "\
1 0 0:5 / / rw - overlay overlay rw
2 1 0:30 / /sys/fs/cgroup ro - tmpfs tmpfs ro
3 2 0:31 /ctrd/ns/ctr1 /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory
4 2 0:32 /ctrd/ns/ctr1 /sys/fs/cgroup/cpu,cpuacct ro - cgroup cgroup rw,cpu,cpuacct
5 2 0:33 /ctrd/ns/ctr1 /sys/fs/cgroup/systemd ro - cgroup cgroup rw,xattr,name=systemd
";
    const RUNC_V1_SELF: &str = "\
12:memory:/ctrd/ns/ctr1
4:cpu,cpuacct:/ctrd/ns/ctr1
1:name=systemd:/ctrd/ns/ctr1
0::/
";
    // A v2 host process in a user session.
    const HOST_V2_MOUNTS: &str = "\
30 22 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
31 22 0:27 / /proc/whatever rw - cgroup2 cgroup2 rw
";
    const HOST_V2_SELF: &str = "0::/user.slice/user-0.slice/session-1.scope\n";

    #[test]
    fn v1_container_mounts_its_own_cgroup() {
        let m = mounts(RUNC_V1_MOUNTS, RUNC_V1_SELF);
        assert_eq!(
            m,
            vec![
                CgroupMount {
                    mountpoint: "/sys/fs/cgroup/memory".into(),
                    own: Some(String::new()),
                },
                CgroupMount {
                    mountpoint: "/sys/fs/cgroup/cpu,cpuacct".into(),
                    own: Some(String::new()),
                },
                CgroupMount {
                    mountpoint: "/sys/fs/cgroup/systemd".into(),
                    own: Some(String::new()),
                },
            ]
        );
        // Everything below the mount point is ours.
        assert!(is_own("child", Some("")));
    }

    #[test]
    fn v2_host_excludes_only_its_own_branch() {
        let m = mounts(HOST_V2_MOUNTS, HOST_V2_SELF);
        assert_eq!(
            m,
            vec![CgroupMount {
                mountpoint: "/sys/fs/cgroup".into(),
                own: Some("user.slice/user-0.slice/session-1.scope".into()),
            }]
        );
        let own = m[0].own.as_deref();
        assert!(is_own("user.slice", own));
        assert!(is_own("user.slice/user-0.slice", own));
        assert!(!is_own("system.slice", own));
        assert!(!is_own("user.slice/user-1000.slice", own));
        assert!(!is_own("user.slic", own));
    }

    #[test]
    fn cgroup_outside_the_mount_excludes_nothing() {
        let m = mounts(
            "3 2 0:31 /other /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
            "5:memory:/mine\n",
        );
        assert_eq!(m[0].own, None);
        assert!(!is_own("anything", None));
        assert_eq!(relative_to("/a/bc", "/a/b"), None);
        assert_eq!(relative_to("/a/b/c", "/a/b").as_deref(), Some("c"));
        assert_eq!(relative_to("/a", "/").as_deref(), Some("a"));
    }
}
