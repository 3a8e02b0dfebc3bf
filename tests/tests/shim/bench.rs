//! `ctr run --rm <image> true` under ward and runc in the same run, and the host memory of
//! one idle sandbox. Prints the numbers; asserts only that every run worked.

use std::time::{Duration, Instant};

use crate::harness::{
    Iso, RUNTIME, assert_nothing_left, bin_dir, containerd, describe, kill_and_delete,
    run_detached, sandbox_processes, shims_of,
};

fn p50(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A `/proc/<pid>/…` field in KiB (`VmRSS:` of status, `Pss:` of smaps_rollup).
fn kib(pid: u32, file: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// shared: ward vs runc, 30 runs each. vm (in L1, times emulated): ward vm vs ward shared
/// vs runc, 5 runs each, and the PSS of an idle VM sandbox (shim + VMM).
pub fn bench_ctr_run_rm_true_against_runc(iso: Iso) {
    let (ctrd, image) = containerd(iso, "shim-bench");
    let mut modes: Vec<(&str, Vec<&str>)> =
        vec![("runc", vec!["--runtime", "io.containerd.runc.v2"])];
    match iso {
        Iso::Shared => modes.push(("ward-shared", vec!["--runtime", RUNTIME])),
        Iso::Vm => {
            modes.push((
                "ward-shared",
                vec![
                    "--runtime",
                    RUNTIME,
                    "--annotation",
                    "io.ward.isolation=shared",
                ],
            ));
            modes.push(("ward-vm", vec!["--runtime", RUNTIME]));
        }
    }
    let runs = if iso == Iso::Vm { 5 } else { 30 };
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); modes.len()];
    for i in 0..runs {
        for (m, (name, flags)) in modes.iter().enumerate() {
            let id = format!("b{i}-{name}");
            let mut args = vec!["run", "--rm"];
            args.extend_from_slice(flags);
            args.extend_from_slice(&[&image, &id, "true"]);
            let started = Instant::now();
            let out = ctrd.ctr(&args);
            times[m].push(started.elapsed());
            assert!(out.status.success(), "{name}: {}", describe(&ctrd, &out));
        }
    }
    let p50s: Vec<Duration> = times.into_iter().map(p50).collect();
    let runc = p50s[0];
    let line: Vec<String> = modes
        .iter()
        .zip(&p50s)
        .map(|((name, _), t)| {
            format!(
                "{name} {t:?} ({:.2}x runc)",
                t.as_secs_f64() / runc.as_secs_f64()
            )
        })
        .collect();
    eprintln!(
        "BENCH ctr run --rm true, p50 of {runs}{}: {}",
        if iso == Iso::Vm {
            ", inside the nested harness (times emulated: compare ratios)"
        } else {
            ""
        },
        line.join(", ")
    );

    run_detached(&ctrd, &image, "idle", &[]);
    std::thread::sleep(Duration::from_millis(500));
    let shim = shims_of(&ctrd);
    let carrier = sandbox_processes("idle");
    let sum = |pids: &[u32], file: &str, field: &str| -> u64 {
        pids.iter().map(|p| kib(*p, file, field)).sum()
    };
    let (shim_pss, carrier_pss) = (
        sum(&shim, "smaps_rollup", "Pss:"),
        sum(&carrier, "smaps_rollup", "Pss:"),
    );
    let (shim_rss, carrier_rss) = (
        sum(&shim, "status", "VmRSS:"),
        sum(&carrier, "status", "VmRSS:"),
    );
    let carrier_name = if iso == Iso::Vm { "ward-vmm" } else { "agent" };
    eprintln!(
        "BENCH idle {iso:?} sandbox (binaries in {}): PSS shim {shim_pss} KiB + {carrier_name} {carrier_pss} KiB = {} KiB; RSS {} KiB",
        bin_dir().display(),
        shim_pss + carrier_pss,
        shim_rss + carrier_rss
    );
    assert!(shim_rss > 0 && carrier_rss > 0);
    kill_and_delete(&ctrd, "idle");
    assert_nothing_left(&ctrd, &["idle"]);
}
