//! vm mode where this host's KVM cannot boot Linux (PVM, see `docs/testing.md`): the same
//! `ward compare`, limited to `--modes vm,shared`, runs inside the nested QEMU harness
//! (`ward_nest`) and its JSON is merged here. Its times are emulated, so the report marks
//! them and puts the shared mode measured in the same L1 next to them for a fair ratio.

use std::path::Path;
use std::time::Duration;

use super::metrics::Report;
use super::report::json;
use super::rootfs::WORKLOAD_ENV;
use super::{CompareError, Mode, Options};
use crate::image::ImageRef;

/// Set inside the nested machine (as `ward run` does), so nothing there nests again.
const IN_NEST_ENV: &str = "WARD_IN_NEST";

/// The one stderr line saying where vm runs.
pub const NOTICE: &str = "this host's KVM (kvm_pvm) cannot boot Linux: the vm mode runs inside the nested QEMU harness; its times are emulated (compare vm/shared, both measured there)";

/// Whether vm mode must run nested here.
pub fn needed() -> bool {
    ward_nest::host_kvm_is_pvm() && std::env::var_os(IN_NEST_ENV).is_none()
}

/// The arguments of the inner `ward compare`, running the image archive `image`.
pub fn inner_args(opts: &Options, image: &Path) -> Vec<String> {
    let workloads: Vec<&str> = opts.workloads.iter().map(|w| w.name()).collect();
    vec![
        "compare".into(),
        "--modes".into(),
        "vm,shared".into(),
        "--format".into(),
        "json".into(),
        "--runs".into(),
        opts.runs.to_string(),
        "--workloads".into(),
        workloads.join(","),
        "--image".into(),
        image.display().to_string(),
    ]
}

/// Boots L1, runs the inner comparison of `image` and parses its report.
pub fn run_vm(opts: &Options, image: &Path) -> Result<Report, CompareError> {
    // The host's / (the cache included) is read-only in L1: unpack the image's layers here
    // so the inner run only reads them.
    crate::image::load(&ImageRef::Path(image.to_owned()), None)
        .map_err(|e| CompareError::Rootfs(e.to_string()))?;
    let exe = std::env::current_exe().map_err(|e| CompareError::io("finding ward's path", e))?;
    let mut cmd = vec![exe.display().to_string()];
    cmd.extend(inner_args(opts, image));
    let mut env = vec![(IN_NEST_ENV.to_owned(), "1".to_owned())];
    if let Some(w) = std::env::var_os(WORKLOAD_ENV) {
        env.push((WORKLOAD_ENV.to_owned(), w.to_string_lossy().into_owned()));
    }
    let nest = ward_nest::Options {
        // Long: every instruction a guest kernel runs at CPL0 is emulated by TCG.
        timeout: Duration::from_secs(1800),
        // The rootfs copy and bundles go to /var/tmp, read-only in L1 otherwise.
        tmpfs: vec!["/var/tmp".into()],
        label: format!("ward-compare-{}", std::process::id()),
        env,
        ..ward_nest::Options::default()
    };
    let out = ward_nest::run(&cmd, &nest).map_err(|e| CompareError::Nested(e.to_string()))?;
    if out.status != 0 {
        let err = out.stderr_str();
        let tail: Vec<&str> = err.lines().rev().take(5).collect();
        return Err(CompareError::Nested(format!(
            "the inner ward compare exited {}: {}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        )));
    }
    json::parse(&out.stdout_str())
}

/// Takes vm from the nested report (times emulated) and its shared as the reference.
pub fn merge(report: &mut Report, inner: Report) {
    let mut vm = None;
    let mut shared = None;
    for (mode, res) in inner.modes {
        match mode {
            Mode::Vm => vm = Some(res),
            Mode::Shared => shared = Some(res),
            _ => {}
        }
    }
    match vm {
        Some(res) => {
            report.modes.push((Mode::Vm, res));
            report.emulated.insert(Mode::Vm.name().into(), true);
        }
        None => report
            .notes
            .push("vm: the nested run reported no vm results".into()),
    }
    report.nested_shared = shared;
    for n in inner.notes {
        report.notes.push(format!("nested: {n}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::metrics::{self, ModeResult};
    use crate::compare::{Format, Workload};

    #[test]
    fn the_inner_run_is_vm_and_shared_in_json() {
        let opts = Options {
            runs: 3,
            workloads: vec![Workload::Start, Workload::Probe],
            format: Format::Table,
            svg: None,
            modes: vec![Mode::Shared, Mode::Vm],
            image: None,
        };
        assert_eq!(
            inner_args(&opts, Path::new("/c/demo.oci.tar")).join(" "),
            "compare --modes vm,shared --format json --runs 3 --workloads start,probe --image /c/demo.oci.tar"
        );
    }

    #[test]
    fn merging_marks_vm_emulated_and_keeps_l1_shared_apart() {
        let mut vm = ModeResult::default();
        vm.set(metrics::START_P50, 800.0, 3);
        let mut l1_shared = ModeResult::default();
        l1_shared.set(metrics::START_P50, 200.0, 3);
        let mut host_shared = ModeResult::default();
        host_shared.set(metrics::START_P50, 10.0, 3);
        let inner = Report {
            modes: vec![(Mode::Shared, l1_shared), (Mode::Vm, vm)],
            ..Report::default()
        };
        let mut r = Report {
            modes: vec![(Mode::Shared, host_shared)],
            ..Report::default()
        };
        merge(&mut r, inner);
        assert_eq!(r.emulated.get("vm"), Some(&true));
        assert_eq!(
            r.mode(Mode::Shared).unwrap().get(metrics::START_P50),
            Some(10.0)
        );
        assert_eq!(r.vm_over_shared(metrics::START_P50), Some(4.0));
    }
}
