//! The `/init` of L1: mount what the command needs, run it with its output on the result
//! share, record its status, power off.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Where the read-write result share is mounted inside L1.
pub const RESULT_MOUNT: &str = "/run/ward-nest";
/// 9p mount tags.
pub const ROOT_TAG: &str = "hostroot";
pub const RESULT_TAG: &str = "nestres";

/// tmpfs in L1 whatever the caller asks for.
pub const DEFAULT_TMPFS: [&str; 3] = ["/tmp", "/run", "/var/lib"];

/// Environment variables passed from the caller into L1 when set.
const INHERITED_ENV: [&str; 6] = [
    "PATH",
    "HOME",
    "WARD_CACHE",
    "RUST_LOG",
    "RUST_BACKTRACE",
    "WARD_TEST_VERBOSE",
];

/// A host directory shared into L1 over 9p at the same path.
#[derive(Debug, Clone)]
pub struct Share {
    pub tag: String,
    pub path: PathBuf,
    pub readonly: bool,
}

pub struct Script<'a> {
    pub cmd: &'a [&'a str],
    /// Every tmpfs mount point, defaults included.
    pub tmpfs: &'a [PathBuf],
    /// Mounted after the tmpfs, so they show through them.
    pub shares: &'a [Share],
    pub env: &'a [(String, String)],
    pub cwd: Option<&'a Path>,
}

/// Single-quotes `s` for POSIX sh.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl Script<'_> {
    pub fn render(&self) -> String {
        let mut s = String::from(
            "#!/bin/sh\n\
             # ward-nest L1 init (generated)\n\
             export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
             mount -t proc proc /proc\n\
             mount -t sysfs sysfs /sys\n\
             mount -t devtmpfs devtmpfs /dev\n\
             mkdir -p /dev/pts /dev/shm\n\
             mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts\n\
             mount -t tmpfs -o mode=1777 shm /dev/shm\n\
             mount -t cgroup2 cgroup2 /sys/fs/cgroup\n",
        );
        for dir in self.tmpfs {
            let mode = if dir == Path::new("/tmp") {
                "1777"
            } else {
                "755"
            };
            let _ = writeln!(
                s,
                "mount -t tmpfs -o mode={mode} tmpfs {}",
                quote(&dir.to_string_lossy())
            );
        }
        let opts = "trans=virtio,version=9p2000.L,msize=262144";
        let _ = writeln!(s, "mkdir -p {RESULT_MOUNT}");
        let _ = writeln!(
            s,
            "mount -t 9p -o {opts} {RESULT_TAG} {RESULT_MOUNT} || poweroff_now"
        );
        for share in self.shares {
            let path = quote(&share.path.to_string_lossy());
            let mode = if share.readonly {
                "ro"
            } else {
                "rw,cache=none"
            };
            let tag = &share.tag;
            let _ = writeln!(
                s,
                "mkdir -p {path} && mount -t 9p -o {opts},{mode} {tag} {path}"
            );
        }
        s.push_str("ip link set lo up 2>/dev/null\nhostname ward-nest 2>/dev/null\n");
        for name in INHERITED_ENV {
            if let Ok(value) = std::env::var(name) {
                let _ = writeln!(s, "export {name}={}", quote(&value));
            }
        }
        for (name, value) in self.env {
            let _ = writeln!(s, "export {name}={}", quote(value));
        }
        if let Some(cwd) = self.cwd {
            let _ = writeln!(s, "cd {} || exit_status=125", quote(&cwd.to_string_lossy()));
        }
        let argv: Vec<String> = self.cmd.iter().map(|a| quote(a)).collect();
        let _ = writeln!(
            s,
            "[ -z \"$exit_status\" ] && {{ {} </dev/null >{RESULT_MOUNT}/stdout 2>{RESULT_MOUNT}/stderr; exit_status=$?; }}",
            argv.join(" ")
        );
        let _ = writeln!(s, "echo \"$exit_status\" >{RESULT_MOUNT}/status");
        // Leave the result share consistent, then reset: with `reboot=t -no-reboot` QEMU exits.
        let _ = writeln!(s, "sync; umount {RESULT_MOUNT}");
        s.push_str("echo b >/proc/sysrq-trigger\nsleep 5\n");
        s.replace("poweroff_now", "echo b >/proc/sysrq-trigger")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_survives_single_quotes() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn render_runs_the_argv_and_records_status() {
        let tmpfs = [PathBuf::from("/tmp"), PathBuf::from("/srv/x")];
        let env = [("FOO".to_string(), "a'b".to_string())];
        let shares = [Share {
            tag: "w0".into(),
            path: "/tmp/out dir".into(),
            readonly: false,
        }];
        let script = Script {
            cmd: &["sh", "-c", "echo 'hi'"],
            tmpfs: &tmpfs,
            shares: &shares,
            env: &env,
            cwd: Some(Path::new("/work")),
        }
        .render();
        assert!(script.starts_with("#!/bin/sh\n"));
        assert!(script.contains("mount -t tmpfs -o mode=1777 tmpfs '/tmp'"));
        assert!(script.contains("mount -t tmpfs -o mode=755 tmpfs '/srv/x'"));
        assert!(script.contains("rw,cache=none w0 '/tmp/out dir'"));
        assert!(script.contains(r"export FOO='a'\''b'"));
        assert!(script.contains(r"'sh' '-c' 'echo '\''hi'\'''"));
        assert!(script.contains("cd '/work'"));
        assert!(script.contains(&format!("{RESULT_MOUNT}/status")));
    }
}
