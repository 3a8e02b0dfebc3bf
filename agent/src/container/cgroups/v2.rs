//! cgroup v2: one directory in the unified hierarchy; controllers are enabled in every
//! ancestor's `cgroup.subtree_control` on the way down.
//!
//! Device rules become a BPF program attached to the cgroup (see `devices_bpf.rs`).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::LinuxResources;

use super::stats::Stats;
use super::{CGROUP_ROOT, CgroupManager, devnum, keyed, procs, read, read_u64, remove_dir, write};
use crate::container::error::{Error, Result};

/// A container's cgroup in the unified hierarchy.
#[derive(Debug)]
pub struct V2 {
    dir: PathBuf,
    /// The device program attached now, replaced on update.
    device_prog: std::sync::Mutex<Option<std::os::fd::OwnedFd>>,
}

impl V2 {
    pub fn new(rel: &Path) -> Self {
        Self {
            dir: Path::new(CGROUP_ROOT).join(rel),
            device_prog: std::sync::Mutex::new(None),
        }
    }
}

/// OCI cpu shares (2..262144) to cgroup v2 cpu.weight (1..10000), as runc converts.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        100
    } else {
        1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
    }
}

/// OCI blkio weight (10..1000) to io.weight (1..10000).
pub fn blkio_to_io_weight(w: u16) -> u64 {
    1 + (u64::from(w).clamp(10, 1000) - 10) * 9999 / 990
}

impl CgroupManager for V2 {
    fn create(&self) -> Result<()> {
        fs::create_dir_all(&self.dir).map_err(|e| Error::io("mkdir cgroup", &self.dir, e))?;
        let root = Path::new(CGROUP_ROOT);
        let available = read(root, "cgroup.controllers").unwrap_or_default();
        let enable: Vec<String> = available
            .split_whitespace()
            .map(|c| format!("+{c}"))
            .collect();
        // Enable in the root and every ancestor (not in the leaf: a cgroup with processes may
        // not have controllers enabled for children).
        let mut dir = root.to_path_buf();
        let rel = self
            .dir
            .strip_prefix(root)
            .unwrap_or(&self.dir)
            .to_path_buf();
        for comp in rel.components() {
            for c in &enable {
                // Each controller separately: one the parent lacks must not block the rest.
                let _ = write(&dir, "cgroup.subtree_control", c);
            }
            dir.push(comp);
        }
        Ok(())
    }

    fn add(&self, pid: i32) -> Result<()> {
        write(&self.dir, "cgroup.procs", pid.to_string())
    }

    fn apply(&self, res: &LinuxResources) -> Result<()> {
        let d = &self.dir;
        if let Some(mem) = res.memory() {
            if let Some(l) = mem.limit() {
                write(
                    d,
                    "memory.max",
                    if l < 0 { "max".into() } else { l.to_string() },
                )?;
            }
            if let Some(r) = mem.reservation() {
                write(d, "memory.low", r.to_string())?;
            }
            // OCI swap is memory+swap; v2 limits swap alone.
            if let (Some(s), Some(l)) = (mem.swap(), mem.limit()) {
                let v = if s < 0 {
                    "max".into()
                } else {
                    (s - l).max(0).to_string()
                };
                if d.join("memory.swap.max").exists() {
                    write(d, "memory.swap.max", v)?;
                }
            }
            if mem.disable_oom_killer() == Some(true) {
                log::warn!(
                    "cgroup v2 has no switch to disable the OOM killer; ignoring disableOOMKiller"
                );
            }
        }
        if let Some(p) = res.pids() {
            write(
                d,
                "pids.max",
                if p.limit() > 0 {
                    p.limit().to_string()
                } else {
                    "max".into()
                },
            )?;
        }
        if let Some(cpu) = res.cpu() {
            if let Some(s) = cpu.shares() {
                write(d, "cpu.weight", shares_to_weight(s).to_string())?;
            }
            if cpu.quota().is_some() || cpu.period().is_some() {
                let q = cpu
                    .quota()
                    .filter(|q| *q > 0)
                    .map_or("max".into(), |q| q.to_string());
                write(
                    d,
                    "cpu.max",
                    format!("{q} {}", cpu.period().unwrap_or(100_000)),
                )?;
            }
            if let Some(c) = cpu.cpus() {
                write(d, "cpuset.cpus", c)?;
            }
            if let Some(m) = cpu.mems() {
                write(d, "cpuset.mems", m)?;
            }
        }
        if let Some(b) = res.block_io() {
            if let Some(w) = b.weight() {
                write(d, "io.weight", format!("default {}", blkio_to_io_weight(w)))?;
            }
            let throttles = [
                ("rbps", b.throttle_read_bps_device()),
                ("wbps", b.throttle_write_bps_device()),
                ("riops", b.throttle_read_iops_device()),
                ("wiops", b.throttle_write_iops_device()),
            ];
            for (key, list) in throttles {
                for t in list.as_deref().unwrap_or_default() {
                    write(
                        d,
                        "io.max",
                        format!("{} {key}={}", devnum(t.major(), t.minor()), t.rate()),
                    )?;
                }
            }
        }
        for h in res.hugepage_limits().as_deref().unwrap_or_default() {
            write(
                d,
                &format!("hugetlb.{}.max", h.page_size()),
                h.limit().to_string(),
            )?;
        }
        if let Some(rules) = res.devices().as_ref().filter(|r| !r.is_empty()) {
            let prog = super::devices_bpf::load(rules)?;
            let mut current = self
                .device_prog
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            super::devices_bpf::attach(&self.dir, &prog, current.as_ref())?;
            *current = Some(prog);
        }
        Ok(())
    }

    fn freeze(&self, frozen: bool) -> Result<()> {
        write(&self.dir, "cgroup.freeze", if frozen { "1" } else { "0" })?;
        let want = u64::from(frozen);
        for _ in 0..500 {
            if keyed(&self.dir, "cgroup.events", "frozen") == Some(want) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Err(Error::CgroupSetup(format!(
            "{}: cgroup.events never showed frozen {want}",
            self.dir.display()
        )))
    }

    fn stats(&self) -> Result<Stats> {
        let d = &self.dir;
        let mut s = Stats {
            cpu_usage_ns: keyed(d, "cpu.stat", "usage_usec").unwrap_or(0) * 1000,
            cpu_user_ns: keyed(d, "cpu.stat", "user_usec").unwrap_or(0) * 1000,
            cpu_system_ns: keyed(d, "cpu.stat", "system_usec").unwrap_or(0) * 1000,
            cpu_throttled_periods: keyed(d, "cpu.stat", "nr_throttled").unwrap_or(0),
            cpu_throttled_ns: keyed(d, "cpu.stat", "throttled_usec").unwrap_or(0) * 1000,
            memory_usage: read_u64(d, "memory.current").unwrap_or(0),
            memory_max_usage: read_u64(d, "memory.peak").unwrap_or(0),
            memory_limit: read_u64(d, "memory.max").unwrap_or(u64::MAX),
            memory_cache: keyed(d, "memory.stat", "file").unwrap_or(0),
            pids_current: read_u64(d, "pids.current").unwrap_or(0),
            pids_limit: read_u64(d, "pids.max").unwrap_or(u64::MAX),
            ..Stats::default()
        };
        for line in read(d, "io.stat").unwrap_or_default().lines() {
            for kv in line.split_whitespace().skip(1) {
                let Some((k, v)) = kv.split_once('=') else {
                    continue;
                };
                let v: u64 = v.parse().unwrap_or(0);
                match k {
                    "rbytes" => s.io_read_bytes += v,
                    "wbytes" => s.io_write_bytes += v,
                    "rios" => s.io_read_ops += v,
                    "wios" => s.io_write_ops += v,
                    _ => {}
                }
            }
        }
        s.oom_kills = self.oom_kill_count();
        Ok(s)
    }

    fn oom_kill_count(&self) -> u64 {
        keyed(&self.dir, "memory.events", "oom_kill").unwrap_or(0)
    }

    fn oom_watch(&self) -> Result<super::oom::OomWatch> {
        super::oom::OomWatch::v2(&self.dir)
    }

    fn pids(&self) -> Vec<i32> {
        procs(&self.dir)
    }

    fn destroy(&self) -> Result<()> {
        remove_dir(&self.dir)
    }

    fn is_v2(&self) -> bool {
        true
    }

    fn path(&self) -> PathBuf {
        self.dir.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_match_runc() {
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(blkio_to_io_weight(10), 1);
        assert_eq!(blkio_to_io_weight(1000), 10_000);
    }
}
