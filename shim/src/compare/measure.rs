//! Runs each workload in one mode and turns what the workload printed (and what the host
//! saw: first byte, bytes per second, PSS of the sandbox's processes) into metrics.

use std::io::Read;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::metrics::{self as m, ModeResult, percentile};
use super::probe::{Probe, attack_surface};
use super::procs;
use super::progress::Progress;
use super::runner::{Instance, LaunchSpec, Runtime};
use super::{CompareError, Mode, Options, Workload};

/// Any single workload run longer than this is broken.
const RUN_LIMIT: Duration = Duration::from_secs(120);
/// Launches per throughput metric (each is one long-ish run; the median is reported).
const THROUGHPUT_RUNS: usize = 3;
const STDOUT_MIB: u64 = 64;
const FSYNC_MIB: &str = "16";
/// A directory in the demo image's rootfs that is on the rootfs itself, not a tmpfs.
const FSYNC_DIR: &str = "/var/tmp";
const LATENCY_MILLIS: &str = "2000";
const NEIGHBOUR_SECONDS: &str = "4";
const NEIGHBOUR_PIDS: u64 = 64;
const NEIGHBOUR_MEMORY: u64 = 64 << 20;
const MEMHOG_MIB: &str = "256";

/// How many progress steps `measure` takes for `opts` in one mode.
pub fn steps(opts: &Options, mode: Mode) -> usize {
    if mode == Mode::Host {
        return usize::from(opts.wants(Workload::Cpu)) + usize::from(opts.wants(Workload::Syscall));
    }
    let mut n = 0;
    if opts.wants(Workload::Start) || opts.wants(Workload::Teardown) {
        n += opts.runs + 1;
    }
    n + [
        Workload::Memory,
        Workload::Syscall,
        Workload::Cpu,
        Workload::Fsync,
        Workload::Stdout,
        Workload::Probe,
        Workload::Neighbour,
    ]
    .iter()
    .filter(|w| opts.wants(**w))
    .count()
}

/// Measures every wanted workload in `rt`'s mode. A workload that fails is recorded in
/// [`ModeResult::errors`] and the others still run.
///
/// `host`, when given, runs the CPU workload alternately with this mode so the relative CPU
/// number compares samples taken under the same machine load.
pub fn measure(
    rt: &dyn Runtime,
    host: Option<&dyn Runtime>,
    opts: &Options,
    progress: &mut Progress,
) -> ModeResult {
    let mode = rt.mode();
    let mut out = ModeResult::default();
    let mut ctx = Ctx {
        rt,
        host,
        seq: 0,
        progress,
    };
    let record = |out: &mut ModeResult, w: &str, r: Result<(), CompareError>| {
        if let Err(e) = r {
            out.errors.push(format!("{w}: {e}"));
        }
    };
    if mode == Mode::Host {
        for w in [Workload::Syscall, Workload::Cpu] {
            if opts.wants(w) {
                let r = ctx.workload(&mut out, w, opts);
                record(&mut out, w.name(), r);
            }
        }
        return out;
    }
    if opts.wants(Workload::Start) || opts.wants(Workload::Teardown) {
        let r = ctx.start_teardown(&mut out, opts.runs);
        record(&mut out, "start", r);
    }
    for w in [
        Workload::Memory,
        Workload::Syscall,
        Workload::Cpu,
        Workload::Fsync,
        Workload::Stdout,
        Workload::Probe,
        Workload::Neighbour,
    ] {
        if opts.wants(w) {
            let r = ctx.workload(&mut out, w, opts);
            record(&mut out, w.name(), r);
        }
    }
    out
}

struct Ctx<'a> {
    rt: &'a dyn Runtime,
    host: Option<&'a dyn Runtime>,
    seq: usize,
    progress: &'a mut Progress,
}

/// What a finished run printed.
struct Finished {
    stdout: Vec<u8>,
    stderr: String,
    code: Option<i32>,
}

impl Ctx<'_> {
    fn mode(&self) -> Mode {
        self.rt.mode()
    }

    fn spec(&mut self, args: &[&str]) -> LaunchSpec {
        self.seq += 1;
        let id = format!(
            "compare-{}-{}-{}-{}",
            self.mode(),
            args.first().copied().unwrap_or("run"),
            std::process::id(),
            self.seq
        );
        LaunchSpec::new(id, args)
    }

    fn step(&mut self, what: &str) {
        let line = format!("{}: {what}", self.mode());
        self.progress.step(&line);
    }

    fn workload(
        &mut self,
        out: &mut ModeResult,
        w: Workload,
        opts: &Options,
    ) -> Result<(), CompareError> {
        if w != Workload::Start && w != Workload::Teardown {
            self.step(w.name());
        }
        let runs = opts.runs.clamp(1, THROUGHPUT_RUNS);
        match w {
            Workload::Memory => self.memory(out, runs),
            Workload::Syscall => self.median_field(
                out,
                &["syscall", "--iters", "1000000"],
                "ns_per_call",
                m::SYSCALL,
                runs,
            ),
            Workload::Cpu => self.cpu(out, runs),
            Workload::Fsync => self.median_field(
                out,
                &["fsync", "--mib", FSYNC_MIB, "--dir", FSYNC_DIR],
                "mib_per_sec",
                m::FSYNC,
                runs,
            ),
            Workload::Stdout => self.stdout(out, runs),
            Workload::Probe => self.probe(out),
            Workload::Neighbour => self.neighbour(out),
            Workload::Start | Workload::Teardown => Ok(()),
        }
    }

    /// Start (launch → first byte of `ready`) and teardown (exit seen → all gone), one
    /// warm-up run first.
    fn start_teardown(&mut self, out: &mut ModeResult, runs: usize) -> Result<(), CompareError> {
        let mut start = Vec::with_capacity(runs);
        let mut teardown = Vec::with_capacity(runs);
        for i in 0..=runs {
            self.step(&format!("start/teardown {i}/{runs}"));
            let spec = self.spec(&["ready"]);
            let t0 = Instant::now();
            let mut inst = self.rt.launch(&spec)?;
            let mut stdout = take_stdout(self.mode(), inst.as_mut())?;
            let stderr = drain(inst.take_stderr());
            let mut first = [0u8; 1];
            let got = stdout.read(&mut first);
            let t1 = Instant::now();
            let mut rest = Vec::new();
            let _ = stdout.read_to_end(&mut rest);
            let waited = inst.wait(RUN_LIMIT);
            let t2 = Instant::now();
            let torn = inst.teardown();
            let t3 = Instant::now();
            let text = [&first[..], &rest].concat();
            let stderr = join(stderr);
            if !matches!(got, Ok(1)) || !text.starts_with(b"ready") {
                return Err(self.bad_output("ready", &text, &stderr, "ready"));
            }
            waited?;
            torn?;
            if i > 0 {
                start.push(ms(t1 - t0));
                teardown.push(ms(t3 - t2));
            }
        }
        for (key, samples, p) in [
            (m::START_P50, &start, 50.0),
            (m::START_P95, &start, 95.0),
            (m::TEARDOWN_P50, &teardown, 50.0),
            (m::TEARDOWN_P95, &teardown, 95.0),
        ] {
            if let Some(v) = percentile(samples, p) {
                out.set(key, v, samples.len());
            }
        }
        Ok(())
    }

    /// PSS of every host process of a sandbox whose container idles after `ready`.
    fn memory(&mut self, out: &mut ModeResult, runs: usize) -> Result<(), CompareError> {
        let mut samples = Vec::new();
        for _ in 0..runs {
            let spec = self.spec(&["idle"]);
            let mut inst = self.rt.launch(&spec)?;
            let mut stdout = take_stdout(self.mode(), inst.as_mut())?;
            let stderr = drain(inst.take_stderr());
            let mut line = [0u8; 6];
            let ok = stdout.read_exact(&mut line).is_ok() && line.starts_with(b"ready");
            let measured = if ok {
                // Let the runtime finish what it does after start (runc's cleanup of its
                // init helpers, the agent's bookkeeping) so what is measured is the idle cost.
                std::thread::sleep(Duration::from_millis(300));
                Some(procs::tree_pss_kib(&inst.host_pids()))
            } else {
                None
            };
            let _ = inst.kill();
            let _ = inst.wait(RUN_LIMIT);
            let torn = inst.teardown();
            drop(stdout);
            let stderr = join(stderr);
            match measured {
                Some((kib, procs)) if kib > 0 && procs > 0 => samples.push(kib as f64 / 1024.0),
                _ => return Err(self.bad_output("idle", &line, &stderr, "ready")),
            }
            torn?;
        }
        if let Some(v) = percentile(&samples, 50.0) {
            out.set(m::MEMORY, v, samples.len());
        }
        Ok(())
    }

    /// Runs `args` to its end `runs` times and reports the median of the JSON `field`.
    fn median_field(
        &mut self,
        out: &mut ModeResult,
        args: &[&str],
        field: &str,
        key: &str,
        runs: usize,
    ) -> Result<(), CompareError> {
        let mut samples = Vec::new();
        for _ in 0..runs {
            let spec = self.spec(args);
            let done = self.run_to_end(&spec)?;
            samples.push(self.field(args[0], &done, field)?);
        }
        if let Some(v) = percentile(&samples, 50.0) {
            out.set(key, v, samples.len());
        }
        Ok(())
    }

    /// CPU ops/s, and relative to the host when a host runtime alternates with this mode.
    fn cpu(&mut self, out: &mut ModeResult, runs: usize) -> Result<(), CompareError> {
        let args = ["cpu", "--millis", "500"];
        let mut mine = Vec::new();
        let mut host = Vec::new();
        for _ in 0..runs {
            let spec = self.spec(&args);
            let done = self.run_to_end(&spec)?;
            mine.push(self.field("cpu", &done, "ops_per_sec")?);
            if let Some(h) = self.host.filter(|h| h.mode() != self.mode()) {
                let done = run_on(h, &spec)?;
                host.push(self.field("cpu", &done, "ops_per_sec")?);
            }
        }
        let mode = percentile(&mine, 50.0);
        if let Some(v) = mode {
            out.set(m::CPU, v, mine.len());
        }
        if let (Some(v), Some(h)) = (mode, percentile(&host, 50.0)) {
            if h > 0.0 {
                out.set(m::CPU_RELATIVE, v / h, mine.len());
            }
        }
        Ok(())
    }

    /// Bytes per second of the container's stdout as the host reads it, first byte to EOF.
    fn stdout(&mut self, out: &mut ModeResult, runs: usize) -> Result<(), CompareError> {
        let mib = STDOUT_MIB.to_string();
        let mut samples = Vec::new();
        for _ in 0..runs {
            let spec = self.spec(&["stdout", "--mib", &mib]);
            let mut inst = self.rt.launch(&spec)?;
            let mut stdout = take_stdout(self.mode(), inst.as_mut())?;
            let stderr = drain(inst.take_stderr());
            let mut buf = vec![0u8; 1 << 16];
            let mut total = 0u64;
            let mut first = None;
            loop {
                match stdout.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        first.get_or_insert_with(Instant::now);
                        total += n as u64;
                    }
                }
            }
            let elapsed = first.map(|t| t.elapsed());
            let waited = inst.wait(RUN_LIMIT);
            let torn = inst.teardown();
            let stderr = join(stderr);
            waited?;
            torn?;
            let expected = STDOUT_MIB << 20;
            match elapsed {
                Some(d) if total == expected && !d.is_zero() => {
                    samples.push(total as f64 / f64::from(1 << 20) / d.as_secs_f64());
                }
                _ => {
                    return Err(self.bad_output(
                        "stdout",
                        format!("{total} bytes").as_bytes(),
                        &stderr,
                        "64 MiB on stdout",
                    ));
                }
            }
        }
        if let Some(v) = percentile(&samples, 50.0) {
            out.set(m::STDOUT, v, samples.len());
        }
        Ok(())
    }

    fn probe(&mut self, out: &mut ModeResult) -> Result<(), CompareError> {
        // Our own pid: a host process outside every container.
        let me = std::process::id().to_string();
        let spec = self.spec(&["probe", "--host-pid", &me]);
        let done = self.run_to_end(&spec)?;
        let line = last_line(&done.stdout);
        let probe = Probe::parse(&line).map_err(|_| {
            self.bad_output("probe", &done.stdout, &done.stderr, "a probe JSON line")
        })?;
        let shares = self.mode().shares_host_kernel();
        out.set(m::ATTACK_SURFACE, attack_surface(shares, &probe) as f64, 1);
        if !shares {
            out.set(m::GUEST_KERNEL_SYSCALLS, probe.syscalls_reachable as f64, 1);
        }
        out.probe = Some(probe);
        Ok(())
    }

    /// Sandbox A's wake-up lateness p99 alone, then next to a neighbour B that fork-bombs
    /// and then hogs memory (each within its own limits). Each ratio is against the mean of
    /// the alone runs just before and just after it, so a load change on the machine during
    /// the measurement moves both sides.
    fn neighbour(&mut self, out: &mut ModeResult) -> Result<(), CompareError> {
        let mut alone = vec![self.latency_p99()?];
        out.set(m::LATENCY_ALONE, alone[0], 1);
        let max_procs = NEIGHBOUR_PIDS.to_string();
        let mut failed = Vec::new();
        for (key, forkbomb) in [(m::NEIGHBOUR_FORKBOMB, true), (m::NEIGHBOUR_MEMHOG, false)] {
            let mut spec_b = if forkbomb {
                let mut s = self.spec(&["forkbomb", "--seconds", NEIGHBOUR_SECONDS]);
                if self.rt.supports_pids_limit() {
                    s.limits.pids = Some(NEIGHBOUR_PIDS);
                } else {
                    // The bomb's own bound stands in for the pids limit this runtime lacks.
                    s.args.extend(["--max-procs".into(), max_procs.clone()]);
                    out.notes.push(format!(
                        "the fork bomb capped itself at {NEIGHBOUR_PIDS} processes: {} cannot set a pids limit",
                        self.mode()
                    ));
                }
                s
            } else {
                let mut s = self.spec(&[
                    "memhog",
                    "--mib",
                    MEMHOG_MIB,
                    "--seconds",
                    NEIGHBOUR_SECONDS,
                ]);
                s.limits.memory_bytes = Some(NEIGHBOUR_MEMORY);
                s
            };
            spec_b.id.push_str("-b");
            // One neighbour failing (its sandbox did not start) leaves the other to measure.
            match self.next_to(&spec_b) {
                Ok(with) => {
                    let after = self.latency_p99()?;
                    let before = alone[alone.len() - 1];
                    alone.push(after);
                    let base = f64::midpoint(before, after);
                    if base > 0.0 {
                        out.set(key, with / base, 1);
                    }
                }
                Err(e) => failed.push(format!("{key}: {e}")),
            }
        }
        if let Some(v) = percentile(&alone, 50.0) {
            out.set(m::LATENCY_ALONE, v, alone.len());
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(CompareError::launch(self.mode(), failed.join("; ")))
        }
    }

    /// A's latency p99 while neighbour `spec_b` runs in its own sandbox.
    fn next_to(&mut self, spec_b: &LaunchSpec) -> Result<f64, CompareError> {
        let mut b = self.rt.launch(spec_b)?;
        let b_out = drain(b.take_stdout());
        let b_err = drain(b.take_stderr());
        let with = self.latency_p99();
        let _ = b.kill();
        let _ = b.wait(RUN_LIMIT);
        let torn = b.teardown();
        drop((join(b_out), join(b_err)));
        let with = with?;
        torn?;
        Ok(with)
    }

    /// One `latency` run: its wake-up lateness p99 in µs.
    fn latency_p99(&mut self) -> Result<f64, CompareError> {
        let spec = self.spec(&["latency", "--millis", LATENCY_MILLIS]);
        let done = self.run_to_end(&spec)?;
        self.field("latency", &done, "p99_us")
    }

    fn run_to_end(&mut self, spec: &LaunchSpec) -> Result<Finished, CompareError> {
        run_on(self.rt, spec)
    }

    /// The number `field` of the JSON line the workload `name` printed last.
    fn field(&self, name: &str, done: &Finished, field: &str) -> Result<f64, CompareError> {
        let line = last_line(&done.stdout);
        serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v.get(field)?.as_f64())
            .filter(|_| done.code.is_none_or(|c| c == 0))
            .ok_or_else(|| {
                self.bad_output(
                    name,
                    &done.stdout,
                    &done.stderr,
                    "a JSON line with a number field (exit 0)",
                )
            })
    }

    fn bad_output(
        &self,
        workload: &str,
        stdout: &[u8],
        stderr: &(impl AsRef<[u8]> + ?Sized),
        expected: &'static str,
    ) -> CompareError {
        let mut output = tail(&String::from_utf8_lossy(stdout), 300);
        let stderr = String::from_utf8_lossy(stderr.as_ref());
        if !stderr.trim().is_empty() {
            output.push_str(" / stderr: ");
            output.push_str(&tail(&stderr, 300));
        }
        CompareError::WorkloadOutput {
            mode: self.mode(),
            workload: workload.to_owned(),
            output,
            expected,
        }
    }
}

/// Runs `spec` on `rt` to its end: what it printed, and its exit code.
fn run_on(rt: &dyn Runtime, spec: &LaunchSpec) -> Result<Finished, CompareError> {
    let mut inst = rt.launch(spec)?;
    let stdout = drain(inst.take_stdout());
    let stderr = drain(inst.take_stderr());
    let waited = inst.wait(RUN_LIMIT);
    if waited.is_err() {
        let _ = inst.kill();
    }
    let torn = inst.teardown();
    let stdout = join(stdout);
    let stderr = String::from_utf8_lossy(&join(stderr)).into_owned();
    let code = waited?;
    torn?;
    Ok(Finished {
        stdout,
        stderr,
        code,
    })
}

fn take_stdout(mode: Mode, inst: &mut dyn Instance) -> Result<Box<dyn Read + Send>, CompareError> {
    inst.take_stdout()
        .ok_or_else(|| CompareError::launch(mode, "the runtime gave no stdout"))
}

/// Reads `r` to its end on a thread, so a full pipe never blocks the workload.
fn drain(r: Option<Box<dyn Read + Send>>) -> Option<JoinHandle<Vec<u8>>> {
    r.map(|mut r| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    })
}

fn join(h: Option<JoinHandle<Vec<u8>>>) -> Vec<u8> {
    h.and_then(|h| h.join().ok()).unwrap_or_default()
}

fn last_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .to_owned()
}

fn tail(s: &str, max: usize) -> String {
    let s = s.trim();
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].to_owned()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_non_empty_line_is_the_result() {
        assert_eq!(last_line(b"noise\n{\"a\":1}\n\n"), "{\"a\":1}");
        assert_eq!(last_line(b""), "");
    }
}
