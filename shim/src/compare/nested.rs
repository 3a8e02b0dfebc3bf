//! vm mode where this host's KVM cannot boot Linux (PVM, see `docs/testing.md`): the same
//! `ward compare`, limited to `--modes vm,shared`, runs inside the nested QEMU harness
//! (`ward_nest`) and its JSON is merged here. Its times are emulated, so the report marks
//! them and puts the shared mode measured in the same L1 next to them for a fair ratio.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::metrics::Report;
use super::report::json;
use super::rootfs::WORKLOAD_ENV;
use super::{CompareError, Mode, Options};
use crate::config::Config;
use crate::image::ImageRef;

use crate::cli::nest::IN_NEST_ENV;

/// The one stderr line saying where vm runs.
pub const NOTICE: &str = "this host's KVM (kvm_pvm) cannot boot Linux: the vm mode runs inside the nested QEMU harness; its times are emulated (compare vm/shared, both measured there)";

/// Whether vm mode must run nested here (as for `ward run`).
pub use crate::cli::nest::needed;

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

/// Boots L1, runs the inner comparison of `image` and parses its report. `config` is the
/// host's ward config; what L1 needs of it is written to `scratch`.
pub fn run_vm(
    opts: &Options,
    config: &Config,
    image: &Path,
    scratch: &Path,
) -> Result<Report, CompareError> {
    // The host's / (the cache included) is read-only in L1: unpack the image's layers and
    // build the initrd here, so the inner run only reads them.
    crate::image::load(&ImageRef::Path(image.to_owned()), None)
        .map_err(|e| CompareError::Rootfs(e.to_string()))?;
    let inner_config = write_inner_config(config, scratch)?;
    let exe = std::env::current_exe().map_err(|e| CompareError::io("finding ward's path", e))?;
    let mut cmd = vec![exe.display().to_string()];
    cmd.extend(inner_args(opts, image));
    cmd.extend(["--config".to_owned(), inner_config.display().to_string()]);
    let mut env = vec![(IN_NEST_ENV.to_owned(), "1".to_owned())];
    if let Some(w) = std::env::var_os(WORKLOAD_ENV) {
        env.push((WORKLOAD_ENV.to_owned(), w.to_string_lossy().into_owned()));
    }
    let nest = ward_nest::Options {
        // Long: every instruction a guest kernel runs at CPL0 is emulated by TCG.
        timeout: Duration::from_secs(1800),
        // The inner run's scratch (rootfs copy, bundles) goes to /var/tmp and its layer
        // images to /var/lib (a tmpfs already): both read-only in L1 otherwise. Our own
        // scratch dir (the config) stays visible under the new /var/tmp.
        tmpfs: vec!["/var/tmp".into()],
        visible: vec![
            scratch.to_owned(),
            std::env::current_dir().unwrap_or_else(|_| "/".into()),
        ],
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

/// The ward config of the inner run: the host's `[vm]` settings, with the guest kernel and
/// an initrd built here, and layer images in a tmpfs of L1.
fn write_inner_config(config: &Config, scratch: &Path) -> Result<PathBuf, CompareError> {
    let vm = &config.vm;
    // What the shim itself would boot: resolved (and the initrd built) here, where the
    // cache is writable; L1 only reads them.
    let nested = |e: crate::sandbox::vm::BootError| CompareError::Nested(e.to_string());
    let kernel = crate::sandbox::vm::guest_kernel(config).map_err(nested)?;
    let initrd = crate::sandbox::vm::guest_initrd(config).map_err(nested)?;
    let q = |p: &Path| toml_string(&p.display().to_string());
    let mut lines = Vec::new();
    if let Some(agent) = &config.agent_path {
        lines.push(format!("agent_path = {}", q(agent)));
    }
    lines.extend([
        "[vm]".to_owned(),
        format!("kernel = {}", q(&kernel)),
        format!("initrd = {}", q(&initrd)),
        "cache_dir = \"/var/lib/ward-cache\"".to_owned(),
        format!("cpus = {}", vm.cpus),
        format!("memory_mib = {}", vm.memory_mib),
        format!("drive_slots = {}", vm.drive_slots),
        // Booting under TCG is slower than on hardware.
        format!("boot_timeout_secs = {}", vm.boot_timeout_secs.max(120)),
        format!("kernel_args = {}", toml_string(&vm.kernel_args)),
    ]);
    if let Some(vmm) = &vm.vmm_path {
        lines.push(format!("vmm_path = {}", q(vmm)));
    }
    let text = lines.join("\n") + "\n";
    let path = scratch.join("ward-nested.toml");
    std::fs::write(&path, text)
        .map_err(|e| CompareError::io(format!("writing {}", path.display()), e))?;
    Ok(path)
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
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

    #[test]
    fn the_inner_config_keeps_the_vm_settings_and_moves_the_cache_to_a_tmpfs() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("vmlinux");
        std::fs::write(&kernel, b"k").unwrap();
        let mut host = Config::default();
        host.vm.kernel = Some(kernel.clone());
        let initrd = dir.path().join("initrd \"x\".gz");
        std::fs::write(&initrd, b"i").unwrap();
        host.vm.initrd = Some(initrd);
        host.vm.memory_mib = 300;
        let path = write_inner_config(&host, dir.path()).unwrap();
        let inner = Config::load(Some(&path)).unwrap();
        assert_eq!(inner.vm.kernel, Some(kernel));
        assert_eq!(inner.vm.initrd, host.vm.initrd);
        assert_eq!(inner.vm.memory_mib, 300);
        assert_eq!(
            inner.vm.cache_dir,
            Some(PathBuf::from("/var/lib/ward-cache"))
        );
        assert!(inner.vm.boot_timeout_secs >= 120);
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_string(r#"a"b\c"#), r#""a\"b\\c""#);
        let parsed: toml::Value =
            toml::from_str(&format!("k = {}", toml_string(r#"a"b\c"#))).unwrap();
        assert_eq!(parsed["k"].as_str(), Some(r#"a"b\c"#));
    }
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
            config: None,
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
