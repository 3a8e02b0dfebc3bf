//! The timed workloads: system-call cost, CPU throughput, durable writes, stdout throughput
//! and timer wake-up latency. Each returns the JSON object it reports.

use std::fs;
use std::io::Write;
use std::path::Path;

use serde_json::{Value, json};

use crate::sys::{self, Error};

const CHUNK: usize = 64 * 1024;
const MIB: usize = 1024 * 1024;

/// `iters` raw getppid(2) calls: the cheapest system call that really enters the kernel
/// (glibc and musl cache nothing for it), so the number is the kernel entry/exit cost.
pub fn syscall(iters: u64) -> Value {
    let start = sys::monotonic_ns();
    for _ in 0..iters {
        // SAFETY: getppid takes no arguments and cannot fail.
        std::hint::black_box(unsafe { libc::syscall(libc::SYS_getppid) });
    }
    let elapsed = sys::monotonic_ns() - start;
    json!({
        "workload": "syscall",
        "iters": iters,
        "ns_per_call": round3(elapsed as f64 / iters as f64),
    })
}

/// Rounds of an FNV-style multiply plus an xorshift: pure integer work with a dependency
/// chain, no memory traffic, the same on every CPU.
pub fn work_unit(seed: u64, rounds: u64) -> u64 {
    let mut h = seed ^ 0xcbf2_9ce4_8422_2325;
    for i in 0..rounds {
        h = (h ^ i).wrapping_mul(0x0100_0000_01b3);
        h ^= h >> 29;
    }
    h
}

const CPU_BATCH: u64 = 50_000;

/// [`work_unit`] batches until `millis` have passed; reports rounds per second.
pub fn cpu(millis: u64) -> Value {
    let start = sys::monotonic_ns();
    let deadline = start + millis * 1_000_000;
    let (mut ops, mut acc, mut now) = (0u64, 0u64, start);
    while now < deadline {
        acc = std::hint::black_box(work_unit(acc, CPU_BATCH));
        ops += CPU_BATCH;
        now = sys::monotonic_ns();
    }
    let elapsed_ms = (now - start) as f64 / 1e6;
    json!({
        "workload": "cpu",
        "ops": ops,
        "elapsed_ms": round3(elapsed_ms),
        "ops_per_sec": round3(ops as f64 / (elapsed_ms / 1e3)),
    })
}

/// Writes `mib` MiB in 64 KiB writes to a new file in `dir`, fsync(2) after every MiB, then
/// removes the file (also when a write fails). The rate includes every fsync.
pub fn fsync(mib: u64, dir: &Path) -> Result<Value, Error> {
    let path = dir.join(format!(".ward-workload-fsync-{}", std::process::id()));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| Error::new(format!("cannot create {}", path.display()), e))?;
    // Not zeros: a filesystem may not store zero pages as data.
    let chunk: Vec<u8> = (0..CHUNK).map(|i| (i % 251) as u8 + 1).collect();
    let start = sys::monotonic_ns();
    let written = (|| {
        for m in 0..mib {
            for _ in 0..MIB / CHUNK {
                file.write_all(&chunk)
                    .map_err(|e| Error::new(format!("writing MiB {m} of {}", path.display()), e))?;
            }
            file.sync_all()
                .map_err(|e| Error::new(format!("fsync of {} after MiB {m}", path.display()), e))?;
        }
        Ok(())
    })();
    let elapsed_ms = (sys::monotonic_ns() - start) as f64 / 1e6;
    drop(file);
    let removed =
        fs::remove_file(&path).map_err(|e| Error::new(format!("removing {}", path.display()), e));
    written?;
    removed?;
    Ok(json!({
        "workload": "fsync",
        "mib": mib,
        "elapsed_ms": round3(elapsed_ms),
        "mib_per_sec": round3(mib as f64 / (elapsed_ms / 1e3)),
    }))
}

/// Writes `mib` MiB of text lines to fd 1 with write(2) as fast as the reader takes them.
/// The JSON goes to stderr, so stdout carries exactly `mib` MiB.
pub fn stdout(mib: u64) -> Result<Value, Error> {
    // 64-byte lines: readable if someone looks, and a whole number of them per chunk.
    let line = b"ward-workload stdout: 0123456789abcdefghijklmnopqrstuvwxyz.....\n";
    let chunk: Vec<u8> = line.iter().copied().cycle().take(CHUNK).collect();
    let start = sys::monotonic_ns();
    for m in 0..mib {
        for _ in 0..MIB / CHUNK {
            sys::write_all_fd(1, &chunk)
                .map_err(|e| Error::new(format!("writing MiB {m} to stdout"), e))?;
        }
    }
    let elapsed_ms = (sys::monotonic_ns() - start) as f64 / 1e6;
    Ok(json!({
        "workload": "stdout",
        "mib": mib,
        "elapsed_ms": round3(elapsed_ms),
    }))
}

/// The fixed work done after every wake-up (about 20-50 µs on a current CPU): enough that
/// the next sleep does not start right on a timer tick.
const LATENCY_WORK_ROUNDS: u64 = 20_000;

/// Sleeps 1 ms with an absolute `clock_nanosleep` deadline, again and again for `millis`,
/// and records how late each wake-up came (time from the deadline to running again).
pub fn latency(millis: u64) -> Value {
    let start = sys::monotonic_ns();
    let end = start + millis * 1_000_000;
    let mut late_ns = Vec::with_capacity(millis as usize);
    let mut acc = 0;
    loop {
        let deadline = sys::monotonic_ns() + 1_000_000;
        if deadline > end && !late_ns.is_empty() {
            break;
        }
        sys::sleep_until_ns(deadline);
        late_ns.push(sys::monotonic_ns().saturating_sub(deadline));
        acc = std::hint::black_box(work_unit(acc, LATENCY_WORK_ROUNDS));
    }
    late_ns.sort_unstable();
    let us = |p| percentile(&late_ns, p).map_or(0.0, |ns| round3(ns as f64 / 1e3));
    json!({
        "workload": "latency",
        "samples": late_ns.len(),
        "p50_us": us(50.0),
        "p99_us": us(99.0),
        "max_us": us(100.0),
    })
}

/// Nearest-rank percentile of `sorted` (ascending): the smallest value with at least `p`
/// percent of the samples at or below it. `None` for no samples.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Three decimals are plenty for every reported number and keep the lines short.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7], 0.0), Some(7));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        let hundred: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&hundred, 50.0), Some(50));
        assert_eq!(percentile(&hundred, 99.0), Some(99));
        assert_eq!(percentile(&hundred, 100.0), Some(100));
        // One outlier in 1000 samples shows in max but not in p99.
        let mut samples = vec![10u64; 999];
        samples.push(5000);
        assert_eq!(percentile(&samples, 99.0), Some(10));
        assert_eq!(percentile(&samples, 100.0), Some(5000));
        assert_eq!(percentile(&[1, 2, 3, 4], 50.0), Some(2));
    }

    #[test]
    fn work_unit_is_deterministic_and_mixes() {
        assert_eq!(work_unit(1, 1000), work_unit(1, 1000));
        assert_ne!(work_unit(1, 1000), work_unit(2, 1000));
        assert_ne!(work_unit(1, 1000), work_unit(1, 1001));
    }

    #[test]
    fn fsync_leaves_no_file_and_reports_a_rate() {
        let dir = std::env::temp_dir().join(format!("ward-workload-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let v = fsync(2, &dir).unwrap();
        assert_eq!(v["mib"], 2);
        assert!(v["mib_per_sec"].as_f64().unwrap() > 0.0, "{v}");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        fs::remove_dir(&dir).unwrap();
        let e = fsync(1, Path::new("/nonexistent/dir"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot create /nonexistent/dir/.ward-workload-fsync-"),
            "{e}"
        );
    }
}
