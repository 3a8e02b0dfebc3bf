//! The OCI runtime spec `ward run` hands the agent, with `ctr run`'s defaults: new
//! pid/ipc/uts/mount/network/cgroup namespaces, the standard mounts, containerd's default
//! capabilities, no new privileges, masked and read-only paths; then the image's process
//! (entrypoint + cmd, env, cwd, user) and the flags (args, env, resources, binds, tty).

use std::path::PathBuf;
use std::str::FromStr;

use serde_json::{Value, json};

use super::launch::{Launch, LaunchError};
use crate::image::Image;

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// CFS period the `--cpus` quota is a share of (docker's).
pub const CPU_PERIOD_US: u64 = 100_000;

/// containerd's default capability set (`oci.WithDefaultSpec`).
const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// A `-v SRC:DST[:ro|:rw]` bind mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub source: PathBuf,
    pub destination: String,
    pub readonly: bool,
}

impl FromStr for Bind {
    type Err = LaunchError;
    fn from_str(s: &str) -> Result<Self, LaunchError> {
        let bad = |why: &str| LaunchError::Invalid {
            what: "bind mount (-v)",
            value: s.to_owned(),
            why: why.to_owned(),
        };
        let parts: Vec<&str> = s.split(':').collect();
        let (src, dst, readonly) = match parts.as_slice() {
            [src, dst] | [src, dst, "rw"] => (*src, *dst, false),
            [src, dst, "ro"] => (*src, *dst, true),
            [_, _, mode] => return Err(bad(&format!("mode {mode:?} is not ro or rw"))),
            _ => return Err(bad("want SRC:DST[:ro|rw]")),
        };
        if !src.starts_with('/') || !dst.starts_with('/') {
            return Err(bad("SRC and DST must be absolute paths"));
        }
        if dst.split('/').any(|c| c == "..") {
            return Err(bad("DST must not contain .."));
        }
        Ok(Self {
            source: PathBuf::from(src),
            destination: dst.to_owned(),
            readonly,
        })
    }
}

/// `64m`, `1g`, `512k`, `1048576` (bytes); zero and garbage are errors.
pub fn parse_memory(s: &str) -> Result<u64, LaunchError> {
    let bad = |why: &str| LaunchError::Invalid {
        what: "memory limit (--memory)",
        value: s.to_owned(),
        why: why.to_owned(),
    };
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (digits, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&t[..i], c),
        _ => (t, ' '),
    };
    let shift = match unit {
        ' ' => 0,
        'k' => 10,
        'm' => 20,
        'g' => 30,
        't' => 40,
        _ => return Err(bad("want a number with an optional unit k, m, g or t")),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| bad("want a number with an optional unit k, m, g or t"))?;
    let bytes = n.checked_mul(1 << shift).ok_or_else(|| bad("too large"))?;
    if bytes == 0 {
        return Err(bad("must be more than 0"));
    }
    // The kernel refuses limits below a few pages, and docker refuses below 6 MiB.
    if bytes < 4 << 20 {
        return Err(bad("must be at least 4m"));
    }
    Ok(bytes)
}

/// `0.5`, `2`: a positive number of CPUs.
/// `--pids-limit`: a positive number of processes.
pub fn parse_pids(s: &str) -> Result<i64, LaunchError> {
    match s.trim().parse::<i64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(LaunchError::Invalid {
            what: "process limit (--pids-limit)",
            value: s.to_owned(),
            why: "want a whole number above 0".to_owned(),
        }),
    }
}

pub fn parse_cpus(s: &str) -> Result<f64, LaunchError> {
    let bad = |why: &str| LaunchError::Invalid {
        what: "CPU limit (--cpus)",
        value: s.to_owned(),
        why: why.to_owned(),
    };
    let n: f64 = s
        .trim()
        .parse()
        .map_err(|_| bad("want a number like 0.5 or 2"))?;
    if !n.is_finite() || n < 0.01 {
        return Err(bad("must be at least 0.01"));
    }
    Ok(n)
}

/// The process's argv: entrypoint + (the given args, else the image's cmd).
pub fn command(image: &Image, args: &[String]) -> Vec<String> {
    let mut argv = image.config.entrypoint.clone();
    if args.is_empty() {
        argv.extend(image.config.cmd.iter().cloned());
    } else {
        argv.extend(args.iter().cloned());
    }
    argv
}

/// The image's env with `extra` (`K=V`) laid over it, key by key; PATH always set.
pub fn environment(image_env: &[String], extra: &[String], tty: bool) -> Vec<String> {
    let key = |kv: &str| kv.split('=').next().unwrap_or_default().to_owned();
    let mut env: Vec<String> = Vec::new();
    let defaults = [DEFAULT_PATH.to_owned()]
        .into_iter()
        .chain(tty.then(|| "TERM=xterm".to_owned()));
    for kv in defaults
        .chain(image_env.iter().cloned())
        .chain(extra.iter().cloned())
    {
        let k = key(&kv);
        env.retain(|e| key(e) != k);
        env.push(kv);
    }
    env
}

/// `uid[:gid]` or `name[:group]`, names looked up in the layers' `/etc/passwd` and
/// `/etc/group` (top layer first).
pub fn resolve_user(user: &str, layers: &[PathBuf]) -> Result<(u32, u32), LaunchError> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let bad = |why: String| LaunchError::Invalid {
        what: "image user",
        value: user.to_owned(),
        why,
    };
    let (u, g) = user
        .split_once(':')
        .map_or((user, None), |(u, g)| (u, Some(g)));
    let (uid, primary) = if let Ok(uid) = u.parse::<u32>() {
        (
            uid,
            lookup(layers, "etc/passwd", |f| f[2] == u).and_then(|f| f[3].parse().ok()),
        )
    } else {
        let f = lookup(layers, "etc/passwd", |f| f[0] == u)
            .ok_or_else(|| bad(format!("no user {u:?} in the image's /etc/passwd")))?;
        let uid = f[2]
            .parse()
            .map_err(|_| bad(format!("bad uid {:?} for {u:?}", f[2])))?;
        (uid, f[3].parse().ok())
    };
    let gid = match g {
        None => primary.unwrap_or(0),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => lookup(layers, "etc/group", |f| f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| bad(format!("no group {g:?} in the image's /etc/group")))?,
        },
    };
    Ok((uid, gid))
}

fn lookup(layers: &[PathBuf], file: &str, want: impl Fn(&[&str]) -> bool) -> Option<Vec<String>> {
    let text = layers
        .iter()
        .rev()
        .find_map(|l| std::fs::read_to_string(l.join(file)).ok())?;
    text.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && want(f))
        .map(|f| f.into_iter().map(str::to_owned).collect())
}

/// The runtime spec for `launch` of `image`. The rootfs itself is passed beside it.
pub fn runtime_spec(launch: &Launch, image: &Image) -> Result<Value, LaunchError> {
    let args = command(image, &launch.args);
    if args.is_empty() {
        return Err(LaunchError::NoCommand {
            image: launch.image.to_string(),
        });
    }
    for b in &launch.binds {
        if !b.source.exists() {
            return Err(LaunchError::Invalid {
                what: "bind mount (-v)",
                value: b.source.display().to_string(),
                why: "the source does not exist".into(),
            });
        }
    }
    let (uid, gid) = resolve_user(&image.config.user, &image.layers)?;
    let cwd = if image.config.working_dir.is_empty() {
        "/".to_owned()
    } else {
        image.config.working_dir.clone()
    };
    let caps = json!(DEFAULT_CAPS);
    let mut mounts = vec![
        json!({ "destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"] }),
        json!({ "destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] }),
        json!({ "destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] }),
        json!({ "destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] }),
        json!({ "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"] }),
        json!({ "destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"] }),
        json!({ "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] }),
    ];
    for b in &launch.binds {
        let mut options = vec!["rbind", "rprivate"];
        if b.readonly {
            options.push("ro");
        }
        mounts.push(json!({
            "destination": b.destination, "type": "bind",
            "source": b.source.display().to_string(), "options": options,
        }));
    }
    let mut resources = json!({ "devices": [{ "allow": false, "access": "rwm" }] });
    if let Some(bytes) = launch.memory {
        resources["memory"] = json!({ "limit": bytes });
    }
    if let Some(max) = launch.pids {
        resources["pids"] = json!({ "limit": max });
    }
    if let Some(cpus) = launch.cpus {
        resources["cpu"] = json!({
            "quota": (cpus * CPU_PERIOD_US as f64).round() as i64,
            "period": CPU_PERIOD_US,
        });
    }
    Ok(json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": launch.tty,
            "user": { "uid": uid, "gid": gid },
            "args": args,
            "env": environment(&image.config.env, &launch.env, launch.tty),
            "cwd": cwd,
            "capabilities": { "bounding": caps, "effective": caps, "permitted": caps },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs", "readonly": false },
        "hostname": hostname(&launch.id),
        "mounts": mounts,
        "linux": {
            "cgroupsPath": format!("/ward/{}", launch.id),
            "resources": resources,
            "namespaces": [{ "type": "pid" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" }, { "type": "network" }, { "type": "cgroup" }],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    }))
}

/// Hostnames are at most 64 bytes.
fn hostname(id: &str) -> &str {
    &id[..id.len().min(63)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_limits_are_positive_whole_numbers() {
        assert_eq!(parse_pids("64").unwrap(), 64);
        for bad in ["0", "-1", "1.5", "many"] {
            let err = parse_pids(bad).unwrap_err().to_string();
            assert!(err.contains("--pids-limit") && err.contains(bad), "{err}");
        }
    }

    #[test]
    fn memory_sizes_parse_and_zero_or_garbage_do_not() {
        assert_eq!(parse_memory("64m").unwrap(), 64 << 20);
        assert_eq!(parse_memory("1g").unwrap(), 1 << 30);
        assert_eq!(parse_memory("16MB").unwrap(), 16 << 20);
        assert_eq!(parse_memory("8388608").unwrap(), 8 << 20);
        for bad in ["0", "0m", "lots", "12x", "", "-5m", "1k"] {
            let err = parse_memory(bad).unwrap_err().to_string();
            assert!(err.contains("--memory") && err.contains(bad), "{err}");
        }
    }

    #[test]
    fn cpus_must_be_positive_numbers() {
        assert!((parse_cpus("0.5").unwrap() - 0.5).abs() < f64::EPSILON);
        assert!(parse_cpus("0").is_err());
        assert!(parse_cpus("many").unwrap_err().to_string().contains("many"));
    }

    #[test]
    fn binds_parse_with_modes_and_reject_relative_paths() {
        let b: Bind = "/src:/dst:ro".parse().unwrap();
        assert_eq!(
            (b.source, b.destination.as_str(), b.readonly),
            ("/src".into(), "/dst", true)
        );
        for bad in ["src:/dst", "/src", "/a:/b:rx", "/a:/b/../etc"] {
            let err = bad.parse::<Bind>().unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn env_flags_override_the_image_key_by_key() {
        let env = environment(
            &["PATH=/bin".into(), "A=1".into()],
            &["A=2".into(), "B=3".into()],
            false,
        );
        assert_eq!(env, ["PATH=/bin", "A=2", "B=3"]);
    }

    #[test]
    fn users_resolve_by_number_or_name_from_the_top_layer() {
        let t = tempfile::tempdir().unwrap();
        let (low, top) = (t.path().join("l"), t.path().join("t"));
        std::fs::create_dir_all(low.join("etc")).unwrap();
        std::fs::create_dir_all(top.join("etc")).unwrap();
        std::fs::write(low.join("etc/passwd"), "app:x:5:5::/:/bin/sh\n").unwrap();
        std::fs::write(top.join("etc/passwd"), "app:x:1000:1001::/:/bin/sh\n").unwrap();
        std::fs::write(top.join("etc/group"), "staff:x:50:\n").unwrap();
        let layers = [low, top];
        assert_eq!(resolve_user("", &layers).unwrap(), (0, 0));
        assert_eq!(resolve_user("7:8", &layers).unwrap(), (7, 8));
        assert_eq!(resolve_user("app", &layers).unwrap(), (1000, 1001));
        assert_eq!(resolve_user("app:staff", &layers).unwrap(), (1000, 50));
        assert!(
            resolve_user("nobody", &layers)
                .unwrap_err()
                .to_string()
                .contains("nobody")
        );
    }
}
