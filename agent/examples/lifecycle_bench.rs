//! Times create+start+wait+delete of `/bin/true` in a busybox bundle, 50 times each, for
//! ward's container library, `runc run` and `crun run` on the same bundle, in one run.
//!
//! `cargo build --release -p ward-agent --bins --examples && sudo target/release/examples/lifecycle_bench [runs]`

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio as ProcStdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ward_agent::container::{Container, CreateOptions, Stdio};

fn busybox_rootfs(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir.join("bin"))?;
    std::fs::copy("/bin/busybox", dir.join("bin/busybox"))
        .context("busybox-static at /bin/busybox")?;
    for applet in ["sh", "true"] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet))?;
    }
    for d in ["proc", "sys", "dev", "tmp", "etc"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    Ok(())
}

/// The spec `runc spec` writes, running /bin/true.
fn config() -> serde_json::Value {
    let caps = serde_json::json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false, "user": { "uid": 0, "gid": 0 }, "args": ["/bin/true"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "cwd": "/",
            "capabilities": { "bounding": caps, "effective": caps, "permitted": caps },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }], "noNewPrivileges": true
        },
        "root": { "path": "rootfs", "readonly": true },
        "hostname": "bench",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"] }
        ],
        "linux": {
            "resources": { "devices": [{ "allow": false, "access": "rwm" }] },
            "namespaces": [{ "type": "pid" }, { "type": "network" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" }],
            "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/sched_debug", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

/// One ward run; returns the time of each phase (create, start, wait, delete).
fn ward_once(bundle: &Path, id: &str, agent: &Path) -> Result<[Duration; 4]> {
    let mut opts = CreateOptions::from_bundle(id, bundle)?;
    opts.stdio = Stdio::Null;
    opts.state_dir = bundle.join("ward-state");
    opts.init_binary = Some(agent.to_path_buf());
    let t0 = Instant::now();
    let mut c = Container::create(opts)?;
    let t1 = Instant::now();
    c.start()?;
    let t2 = Instant::now();
    let st = c.wait()?;
    let t3 = Instant::now();
    c.delete()?;
    let t4 = Instant::now();
    if st.code != 0 {
        bail!("ward: /bin/true exited {}", st.code);
    }
    Ok([t1 - t0, t2 - t1, t3 - t2, t4 - t3])
}

fn cli_once(runtime: &str, bundle: &Path, id: &str) -> Result<()> {
    let mut cmd = Command::new(runtime);
    let st = cmd
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(ProcStdio::null())
        .stdout(ProcStdio::null())
        .stderr(ProcStdio::inherit())
        .status()?;
    if !st.success() {
        bail!("{runtime} run exited {st}");
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() -> Result<()> {
    let runs: usize = std::env::args().nth(1).map_or(Ok(50), |s| s.parse())?;
    // crun 1.8 refuses a hybrid layout whose v2 hierarchy carries a controller (hugetlb
    // here). In a private mount namespace without /sys/fs/cgroup/unified all three runtimes
    // see the same pure v1 layout and each creates its cgroups.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_SLAVE | nix::mount::MsFlags::MS_REC,
        None::<&str>,
    )?;
    let _ = nix::mount::umount2("/sys/fs/cgroup/unified", nix::mount::MntFlags::MNT_DETACH);
    let exe = std::env::current_exe()?;
    let agent: PathBuf = exe
        .parent()
        .and_then(Path::parent)
        .context("examples dir")?
        .join("ward-agent");
    if !agent.exists() {
        bail!(
            "{} missing: cargo build -p ward-agent --bins first",
            agent.display()
        );
    }
    let dir = tempfile::Builder::new()
        .prefix("ward-bench-")
        .tempdir_in("/tmp")?;
    busybox_rootfs(&dir.path().join("rootfs"))?;
    std::fs::write(
        dir.path().join("config.json"),
        serde_json::to_vec_pretty(&config())?,
    )?;

    // Interleaved (ward, runc, crun, ward, …) so a load change on the machine hits all three.
    let names = ["ward", "runc", "crun"];
    let mut results: Vec<(&str, Vec<Duration>)> = names
        .iter()
        .map(|n| (*n, Vec::with_capacity(runs)))
        .collect();
    let mut phases: [Vec<Duration>; 4] = Default::default();
    for i in 0..runs + 3 {
        for (name, times) in &mut results {
            let id = format!("bench-{name}-{i}-{}", std::process::id());
            let t = Instant::now();
            match *name {
                "ward" => {
                    let p = ward_once(dir.path(), &id, &agent)?;
                    if i >= 3 {
                        for (all, d) in phases.iter_mut().zip(p) {
                            all.push(d);
                        }
                    }
                }
                _ => cli_once(name, dir.path(), &id)?,
            }
            if i >= 3 {
                times.push(t.elapsed()); // the first 3 warm caches
            }
        }
    }
    for (_, times) in &mut results {
        times.sort();
    }
    let ward_p50 = percentile(&results[0].1, 0.5);
    println!("create+start+wait+delete of /bin/true, {runs} runs each, interleaved, same bundle:");
    println!(
        "{:<6} {:>10} {:>10} {:>10} {:>12}",
        "", "p50 ms", "p95 ms", "min ms", "p50 / ward"
    );
    for (name, t) in &results {
        let p50 = percentile(t, 0.5);
        println!(
            "{name:<6} {:>10.2} {:>10.2} {:>10.2} {:>12.2}",
            p50.as_secs_f64() * 1e3,
            percentile(t, 0.95).as_secs_f64() * 1e3,
            t[0].as_secs_f64() * 1e3,
            p50.as_secs_f64() / ward_p50.as_secs_f64()
        );
    }
    print!("ward phases p50 ms:");
    for (name, mut t) in ["create", "start", "wait", "delete"]
        .into_iter()
        .zip(phases)
    {
        t.sort();
        print!(" {name} {:.2}", percentile(&t, 0.5).as_secs_f64() * 1e3);
    }
    println!();
    Ok(())
}
