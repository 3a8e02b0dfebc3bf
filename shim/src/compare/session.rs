//! One `ward compare` run from options to [`Report`]: prepares the demo rootfs, builds a
//! runtime per mode (a missing baseline is a note), hands vm to the nested harness where
//! this host's KVM cannot boot Linux, measures, and derives the relative numbers.

use super::measure;
use super::metrics::{self as m, HostInfo, Report};
use super::nested;
use super::progress::Progress;
use super::rootfs;
use super::runner::Runtime;
use super::runner::host::HostRuntime;
use super::runner::oci::OciRuntime;
use super::runner::ward::WardRuntime;
use super::{CompareError, Mode, Options, Workload};
use crate::config::Config;
use crate::image::ImageRef;

/// Runs the comparison `opts` describes. Per-workload failures end up in the report
/// (`errors` of the mode); only setup failures are errors here.
pub fn run(opts: &Options, quiet: bool) -> Result<Report, CompareError> {
    let mut report = Report {
        host: HostInfo::detect(),
        runs: opts.runs,
        ..Report::default()
    };
    let mut modes = opts.modes.clone();
    if opts.wants(Workload::Cpu) && !modes.contains(&Mode::Host) {
        modes.push(Mode::Host);
    }
    let nest_vm = modes.contains(&Mode::Vm) && nested::needed();
    let local: Vec<Mode> = modes
        .iter()
        .copied()
        .filter(|m| !(nest_vm && *m == Mode::Vm))
        .collect();
    let total = local
        .iter()
        .map(|m| measure::steps(opts, *m))
        .sum::<usize>()
        + 1
        + usize::from(nest_vm);
    let mut progress = Progress::new(total, quiet);
    if nest_vm {
        progress.note(nested::NOTICE);
    }

    progress.step("preparing the demo image rootfs");
    let scratch = rootfs::scratch_dir()?;
    let root = rootfs::demo_rootfs(scratch.path())?;
    let image = match &opts.image {
        Some(path) => path.clone(),
        None => rootfs::demo_archive()?,
    };
    let config =
        Config::load(opts.config.as_deref()).map_err(|e| CompareError::Config(e.to_string()))?;

    let host = HostRuntime::new(&root);
    for mode in &modes {
        if nest_vm && *mode == Mode::Vm {
            progress.step("vm: in the nested harness (takes minutes)");
            match nested::run_vm(opts, &config, &image, scratch.path()) {
                Ok(inner) => nested::merge(&mut report, inner),
                Err(e) => report.notes.push(format!("vm: {e}")),
            }
            continue;
        }
        let rt: Box<dyn Runtime> = match mode {
            Mode::Shared | Mode::Vm => Box::new(WardRuntime::new(
                *mode,
                config.clone(),
                ImageRef::Path(image.clone()),
            )?),
            Mode::Runc | Mode::Crun => match OciRuntime::find(*mode, &root, scratch.path()) {
                Ok(rt) => Box::new(rt),
                Err(why) => {
                    report.notes.push(format!("{mode} baseline skipped: {why}"));
                    continue;
                }
            },
            Mode::Host => Box::new(HostRuntime::new(&root)),
        };
        let result = measure::measure(rt.as_ref(), Some(&host), opts, &mut progress);
        report.modes.push((*mode, result));
    }
    progress.finish();
    derive(&mut report);
    Ok(report)
}

/// Numbers computed from others: the host's CPU relative to itself (1 by definition), and
/// for modes measured elsewhere (nested) without their own host samples, relative to the
/// host column.
pub fn derive(report: &mut Report) {
    let host_cpu = report.mode(Mode::Host).and_then(|r| r.get(m::CPU));
    if let Some(host_cpu) = host_cpu.filter(|v| *v > 0.0) {
        for (_, res) in &mut report.modes {
            if res.values.contains_key(m::CPU_RELATIVE) {
                continue;
            }
            if let Some(cpu) = res.values.get(m::CPU).copied() {
                res.set(m::CPU_RELATIVE, cpu.value / host_cpu, cpu.n);
            }
        }
    }
}
