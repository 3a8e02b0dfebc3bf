//! cgroup v1: one directory per mounted hierarchy (cpu, cpuacct, cpuset, memory, pids,
//! blkio, devices, freezer, hugetlb…), each controller written in its own hierarchy.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources};

use super::stats::Stats;
use super::{CgroupManager, devnum, keyed, procs, read, read_u64, remove_dir, write};
use crate::container::error::{Error, Result};

/// Controllers ward manages in v1 (named hierarchies such as name=systemd are left alone).
const KNOWN: [&str; 12] = [
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "net_prio",
    "blkio",
    "perf_event",
    "hugetlb",
    "pids",
];

/// One mounted v1 hierarchy.
#[derive(Debug, Clone)]
pub struct Hierarchy {
    pub mount_point: PathBuf,
    /// The controllers it carries (also the mount options to mount it again).
    pub options: Vec<String>,
}

/// The v1 hierarchies mounted in our mount namespace, from /proc/self/mountinfo.
pub fn hierarchies() -> Vec<Hierarchy> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut r = right.split_whitespace();
        if r.next() != Some("cgroup") {
            continue;
        }
        let supers = r.nth(1).unwrap_or_default();
        let options: Vec<String> = supers
            .split(',')
            .filter(|o| KNOWN.contains(o))
            .map(String::from)
            .collect();
        let Some(mp) = left.split_whitespace().nth(4) else {
            continue;
        };
        if !options.is_empty() && !out.iter().any(|h: &Hierarchy| h.options == options) {
            out.push(Hierarchy {
                mount_point: PathBuf::from(mp),
                options,
            });
        }
    }
    out
}

/// A container's cgroup across the v1 hierarchies.
#[derive(Debug)]
pub struct V1 {
    rel: PathBuf,
    dirs: Vec<(Hierarchy, PathBuf)>,
}

impl V1 {
    pub fn new(rel: &Path) -> Result<Self> {
        let dirs: Vec<_> = hierarchies()
            .into_iter()
            .map(|h| {
                let d = h.mount_point.join(rel);
                (h, d)
            })
            .collect();
        if dirs.is_empty() {
            return Err(Error::CgroupSetup(
                "no cgroup v1 hierarchy is mounted".into(),
            ));
        }
        Ok(Self {
            rel: rel.to_path_buf(),
            dirs,
        })
    }

    /// The directory of the hierarchy carrying `controller`.
    fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(h, _)| h.options.iter().any(|o| o == controller))
            .map(|(_, d)| d.as_path())
    }

    fn need(&self, controller: &str) -> Result<&Path> {
        self.dir(controller).ok_or_else(|| {
            Error::CgroupSetup(format!(
                "controller {controller} is not mounted (cgroup {})",
                self.rel.display()
            ))
        })
    }

    fn apply_devices(&self, rules: &[LinuxDeviceCgroup]) -> Result<()> {
        let dir = self.need("devices")?;
        for r in rules {
            let typ = match r.typ() {
                Some(LinuxDeviceType::C) => "c",
                Some(LinuxDeviceType::B) => "b",
                _ => "a",
            };
            let major = r.major().map_or("*".to_string(), |m| m.to_string());
            let minor = r.minor().map_or("*".to_string(), |m| m.to_string());
            let access = r.access().clone().unwrap_or_else(|| "rwm".into());
            let file = if r.allow() {
                "devices.allow"
            } else {
                "devices.deny"
            };
            write(dir, file, format!("{typ} {major}:{minor} {access}"))?;
        }
        Ok(())
    }
}

/// Fills an empty cpuset.cpus/mems from the parent, top down: a v1 cpuset cgroup refuses
/// tasks until both are set.
fn inherit_cpuset(dir: &Path) -> Result<()> {
    if let Some(parent) = dir.parent() {
        if read(parent, "cpuset.cpus").is_ok_and(|s| s.is_empty()) {
            inherit_cpuset(parent)?;
        }
        for f in ["cpuset.cpus", "cpuset.mems"] {
            if read(dir, f)?.is_empty() {
                write(dir, f, read(parent, f)?)?;
            }
        }
    }
    Ok(())
}

impl CgroupManager for V1 {
    fn create(&self) -> Result<()> {
        for (h, d) in &self.dirs {
            fs::create_dir_all(d).map_err(|e| Error::io("mkdir cgroup", d, e))?;
            if h.options.iter().any(|o| o == "cpuset") {
                inherit_cpuset(d)?;
            }
        }
        Ok(())
    }

    fn add(&self, pid: i32) -> Result<()> {
        for (_, d) in &self.dirs {
            write(d, "cgroup.procs", pid.to_string())?;
        }
        Ok(())
    }

    fn apply(&self, res: &LinuxResources) -> Result<()> {
        if let Some(mem) = res.memory() {
            let dir = self.need("memory")?;
            if let Some(limit) = mem.limit() {
                // memsw must stay >= the limit: raise it first, lower it after.
                let swap = mem.swap();
                let has_memsw = dir.join("memory.memsw.limit_in_bytes").exists();
                if let (Some(s), true) = (swap, has_memsw) {
                    if write(dir, "memory.memsw.limit_in_bytes", s.to_string()).is_ok() {
                        write(dir, "memory.limit_in_bytes", limit.to_string())?;
                    } else {
                        write(dir, "memory.limit_in_bytes", limit.to_string())?;
                        write(dir, "memory.memsw.limit_in_bytes", s.to_string())?;
                    }
                } else {
                    write(dir, "memory.limit_in_bytes", limit.to_string())?;
                }
            }
            if let Some(r) = mem.reservation() {
                write(dir, "memory.soft_limit_in_bytes", r.to_string())?;
            }
            if let Some(s) = mem.swappiness() {
                write(dir, "memory.swappiness", s.to_string())?;
            }
            if mem.disable_oom_killer() == Some(true) {
                write(dir, "memory.oom_control", "1")?;
            }
        }
        if let Some(p) = res.pids() {
            let v = if p.limit() > 0 {
                p.limit().to_string()
            } else {
                "max".into()
            };
            write(self.need("pids")?, "pids.max", v)?;
        }
        if let Some(cpu) = res.cpu() {
            if let Some(s) = cpu.shares() {
                write(self.need("cpu")?, "cpu.shares", s.to_string())?;
            }
            if let Some(p) = cpu.period() {
                write(self.need("cpu")?, "cpu.cfs_period_us", p.to_string())?;
            }
            if let Some(q) = cpu.quota() {
                write(self.need("cpu")?, "cpu.cfs_quota_us", q.to_string())?;
            }
            if let Some(c) = cpu.cpus() {
                write(self.need("cpuset")?, "cpuset.cpus", c)?;
            }
            if let Some(m) = cpu.mems() {
                write(self.need("cpuset")?, "cpuset.mems", m)?;
            }
        }
        if let Some(b) = res.block_io() {
            let dir = self.need("blkio")?;
            if let Some(w) = b.weight() {
                let file = if dir.join("blkio.weight").exists() {
                    "blkio.weight"
                } else {
                    "blkio.bfq.weight"
                };
                write(dir, file, w.to_string())?;
            }
            let throttles = [
                (
                    "blkio.throttle.read_bps_device",
                    b.throttle_read_bps_device(),
                ),
                (
                    "blkio.throttle.write_bps_device",
                    b.throttle_write_bps_device(),
                ),
                (
                    "blkio.throttle.read_iops_device",
                    b.throttle_read_iops_device(),
                ),
                (
                    "blkio.throttle.write_iops_device",
                    b.throttle_write_iops_device(),
                ),
            ];
            for (file, list) in throttles {
                for t in list.as_deref().unwrap_or_default() {
                    write(
                        dir,
                        file,
                        format!("{} {}", devnum(t.major(), t.minor()), t.rate()),
                    )?;
                }
            }
        }
        for h in res.hugepage_limits().as_deref().unwrap_or_default() {
            write(
                self.need("hugetlb")?,
                &format!("hugetlb.{}.limit_in_bytes", h.page_size()),
                h.limit().to_string(),
            )?;
        }
        if let Some(rules) = res.devices() {
            self.apply_devices(rules)?;
        }
        Ok(())
    }

    fn freeze(&self, frozen: bool) -> Result<()> {
        let dir = self.need("freezer")?;
        let want = if frozen { "FROZEN" } else { "THAWED" };
        for _ in 0..500 {
            write(dir, "freezer.state", want)?;
            if read(dir, "freezer.state")? == want {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Err(Error::CgroupSetup(format!(
            "{}: freezer.state never reached {want}",
            dir.display()
        )))
    }

    fn stats(&self) -> Result<Stats> {
        let mut s = Stats {
            memory_limit: u64::MAX,
            pids_limit: u64::MAX,
            ..Stats::default()
        };
        if let Some(d) = self.dir("cpuacct") {
            s.cpu_usage_ns = read_u64(d, "cpuacct.usage").unwrap_or(0);
            // cpuacct.stat counts USER_HZ ticks (100 per second on Linux).
            s.cpu_user_ns = keyed(d, "cpuacct.stat", "user").unwrap_or(0) * 10_000_000;
            s.cpu_system_ns = keyed(d, "cpuacct.stat", "system").unwrap_or(0) * 10_000_000;
        }
        if let Some(d) = self.dir("cpu") {
            s.cpu_throttled_periods = keyed(d, "cpu.stat", "nr_throttled").unwrap_or(0);
            s.cpu_throttled_ns = keyed(d, "cpu.stat", "throttled_time").unwrap_or(0);
        }
        if let Some(d) = self.dir("memory") {
            s.memory_usage = read_u64(d, "memory.usage_in_bytes").unwrap_or(0);
            s.memory_max_usage = read_u64(d, "memory.max_usage_in_bytes").unwrap_or(0);
            // v1 says "unlimited" as the largest page-aligned i64.
            s.memory_limit = read_u64(d, "memory.limit_in_bytes")
                .filter(|l| *l < (i64::MAX as u64) & !0xfff)
                .unwrap_or(u64::MAX);
            s.memory_cache = keyed(d, "memory.stat", "total_cache").unwrap_or(0);
        }
        if let Some(d) = self.dir("pids") {
            s.pids_current = read_u64(d, "pids.current").unwrap_or(0);
            s.pids_limit = read_u64(d, "pids.max").unwrap_or(u64::MAX);
        }
        if let Some(d) = self.dir("blkio") {
            let sum = |file: &str, op: &str| -> u64 {
                read(d, file)
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| {
                        let f: Vec<&str> = l.split_whitespace().collect();
                        (f.len() == 3 && f[1] == op)
                            .then(|| f[2].parse::<u64>().ok())
                            .flatten()
                    })
                    .sum()
            };
            s.io_read_bytes = sum("blkio.throttle.io_service_bytes_recursive", "Read");
            s.io_write_bytes = sum("blkio.throttle.io_service_bytes_recursive", "Write");
            s.io_read_ops = sum("blkio.throttle.io_serviced_recursive", "Read");
            s.io_write_ops = sum("blkio.throttle.io_serviced_recursive", "Write");
        }
        s.oom_kills = self.oom_kill_count();
        Ok(s)
    }

    fn oom_kill_count(&self) -> u64 {
        self.dir("memory")
            .and_then(|d| keyed(d, "memory.oom_control", "oom_kill"))
            .unwrap_or(0)
    }

    fn oom_watch(&self) -> Result<super::oom::OomWatch> {
        super::oom::OomWatch::v1(self.need("memory")?)
    }

    fn pids(&self) -> Vec<i32> {
        let mut all: Vec<i32> = self.dirs.iter().flat_map(|(_, d)| procs(d)).collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    fn destroy(&self) -> Result<()> {
        let mut first_err = None;
        for (_, d) in &self.dirs {
            if let Err(e) = remove_dir(d) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn is_v2(&self) -> bool {
        false
    }

    fn path(&self) -> PathBuf {
        self.dir("memory")
            .map_or_else(|| self.dirs[0].1.clone(), Path::to_path_buf)
    }
}
