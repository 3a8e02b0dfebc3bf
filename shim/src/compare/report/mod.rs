//! Rendering a [`Report`]: the rows every text format shares (built here once), then one
//! file per format.

pub mod json;
pub mod markdown;
pub mod svg;
pub mod table;

use crate::compare::Mode;
use crate::compare::metrics::{Group, METRICS, MetricDef, ModeResult, Report};

/// One line of a text table.
#[derive(Debug, Clone, PartialEq)]
pub enum Row {
    Section(&'static str),
    Data {
        label: String,
        unit: &'static str,
        cells: Vec<String>,
    },
}

/// The measured columns: one per mode, and after vm the shared run of the same nested L1
/// when vm ran there.
pub fn results(r: &Report) -> Vec<(String, &ModeResult)> {
    let mut out = Vec::new();
    for (m, res) in &r.modes {
        if r.emulated.get(m.name()).copied().unwrap_or(false) {
            out.push((format!("{m} (emulated)"), res));
        } else {
            out.push((m.name().to_owned(), res));
        }
        if *m == Mode::Vm {
            if let Some(l1) = &r.nested_shared {
                out.push(("shared (L1, emulated)".to_owned(), l1));
            }
        }
    }
    out
}

/// Column titles: one per result, plus `vm/shared` when both ran.
pub fn columns(r: &Report) -> Vec<String> {
    let mut cols: Vec<String> = results(r).into_iter().map(|(t, _)| t).collect();
    if has_vm_ratio(r) {
        cols.push("vm/shared".into());
    }
    cols
}

fn has_vm_ratio(r: &Report) -> bool {
    r.mode(Mode::Vm).is_some() && (r.mode(Mode::Shared).is_some() || r.nested_shared.is_some())
}

/// A number with about three significant digits.
pub fn number(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A metric's value as a table cell: counts as whole numbers.
fn cell(m: &MetricDef, v: f64) -> String {
    if m.unit == "syscalls" {
        format!("{v:.0}")
    } else {
        number(v)
    }
}

fn yes_no(b: bool) -> String {
    if b { "yes".into() } else { "no".into() }
}

/// The rows of the table: cost metrics, then the isolation probes and metrics.
pub fn rows(r: &Report) -> Vec<Row> {
    let mut rows = vec![Row::Section("cost")];
    let ratio = has_vm_ratio(r);
    let results = results(r);
    for m in METRICS.iter().filter(|m| m.group == Group::Cost) {
        let cells: Vec<String> = results
            .iter()
            .map(|(_, res)| res.get(m.key).map_or_else(|| "-".into(), number))
            .chain(ratio.then(|| {
                r.vm_over_shared(m.key)
                    .map_or_else(|| "-".into(), |x| format!("{}x", number(x)))
            }))
            .collect();
        if cells.iter().any(|c| c != "-") {
            rows.push(Row::Data {
                label: m.label.to_owned(),
                unit: m.unit,
                cells,
            });
        }
    }
    rows.push(Row::Section("isolation"));
    let probe_row = |label: &str, f: &dyn Fn(&ModeResult) -> Option<String>| Row::Data {
        label: label.to_owned(),
        unit: "",
        cells: results
            .iter()
            .map(|(_, res)| f(res).unwrap_or_else(|| "-".into()))
            .chain(ratio.then(String::new))
            .collect(),
    };
    let probed = results.iter().any(|(_, res)| res.probe.is_some());
    let host_kernel = r.host.kernel_release.clone();
    let mut probes = Vec::new();
    probes.push(probe_row("kernel seen", &|res| {
        let p = res.probe.as_ref()?;
        let same = p.kernel_release == host_kernel;
        Some(format!(
            "{}{}",
            p.kernel_release,
            if same { " (host)" } else { "" }
        ))
    }));
    probes.push(probe_row("hypervisor flag in cpuinfo", &|res| {
        Some(yes_no(res.probe.as_ref()?.hypervisor))
    }));
    probes.push(probe_row("host process visible", &|res| {
        Some(
            res.probe
                .as_ref()?
                .host_pid_visible
                .map_or("?".into(), yes_no),
        )
    }));
    probes.push(probe_row("pids visible in /proc", &|res| {
        Some(res.probe.as_ref()?.visible_pids.to_string())
    }));
    probes.push(probe_row("kernel log readable", &|res| {
        Some(yes_no(res.probe.as_ref()?.kernel_log_readable))
    }));
    probes.push(probe_row("host cgroup dirs visible", &|res| {
        Some(res.probe.as_ref()?.host_cgroups_visible.to_string())
    }));
    probes.push(probe_row("kallsyms addresses", &|res| {
        Some(yes_no(res.probe.as_ref()?.kallsyms_addresses))
    }));
    probes.push(probe_row("seccomp mode", &|res| {
        Some(res.probe.as_ref()?.seccomp_mode.to_string())
    }));
    if probed {
        rows.extend(probes);
    }
    for m in METRICS.iter().filter(|m| m.group == Group::Isolation) {
        let cells: Vec<String> = results
            .iter()
            .map(|(_, res)| res.get(m.key).map_or_else(|| "-".into(), |v| cell(m, v)))
            .chain(ratio.then(String::new))
            .collect();
        if cells.iter().any(|c| c != "-" && !c.is_empty()) {
            rows.push(Row::Data {
                label: m.label.to_owned(),
                unit: m.unit,
                cells,
            });
        }
    }
    rows
}

/// Lines above the table: the machine, and what is emulated.
pub fn header(r: &Report) -> Vec<String> {
    let mut lines = vec![format!(
        "ward compare: host kernel {}, {} CPUs, KVM {}, {} runs per latency metric",
        r.host.kernel_release, r.host.cpus, r.host.kvm, r.runs
    )];
    let emulated: Vec<&str> = r
        .emulated
        .iter()
        .filter(|(_, e)| **e)
        .map(|(m, _)| m.as_str())
        .collect();
    if !emulated.is_empty() {
        lines.push(format!(
            "times emulated: {} ran in the nested QEMU harness (this host's KVM cannot boot Linux); its absolute times are meaningless, compare the vm/shared column (shared measured in the same L1)",
            emulated.join(", ")
        ));
    }
    lines
}

/// Lines below the table: notes and per-mode errors.
pub fn footer(r: &Report) -> Vec<String> {
    let mut lines: Vec<String> = r.notes.iter().map(|n| format!("note: {n}")).collect();
    for (m, res) in &r.modes {
        for n in &res.notes {
            lines.push(format!("note: {m}: {n}"));
        }
        for e in &res.errors {
            lines.push(format!("error: {m}: {e}"));
        }
    }
    lines
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::compare::metrics::{self, HostInfo};
    use crate::compare::probe::Probe;

    pub(crate) fn sample_report() -> Report {
        let probe = |kernel: &str, reach| Probe {
            kernel_release: kernel.into(),
            hypervisor: false,
            host_pid_visible: Some(false),
            visible_pids: 1,
            kernel_log_readable: false,
            host_cgroups_visible: 0,
            kallsyms_addresses: false,
            syscalls_probed: 400,
            syscalls_reachable: reach,
            seccomp_mode: serde_json::json!(0),
        };
        let mut shared = ModeResult::default();
        shared.set(metrics::START_P50, 20.0, 10);
        shared.set(metrics::MEMORY, 9.5, 3);
        shared.probe = Some(probe("6.18.0", 330));
        let mut vm = ModeResult::default();
        vm.set(metrics::START_P50, 900.0, 10);
        vm.probe = Some(probe("6.12.0", 280));
        Report {
            host: HostInfo {
                kernel_release: "6.18.0".into(),
                cpus: 2,
                kvm: "pvm".into(),
            },
            runs: 10,
            emulated: [("vm".to_owned(), true)].into(),
            modes: vec![(Mode::Shared, shared), (Mode::Vm, vm)],
            nested_shared: None,
            notes: vec!["crun is not installed".into()],
        }
    }

    #[test]
    fn rows_carry_values_ratios_and_probes() {
        let r = sample_report();
        assert_eq!(columns(&r), ["shared", "vm (emulated)", "vm/shared"]);
        let rows = rows(&r);
        let find = |label: &str| {
            rows.iter()
                .find_map(|row| match row {
                    Row::Data {
                        label: l, cells, ..
                    } if l.starts_with(label) => Some(cells.clone()),
                    _ => None,
                })
                .unwrap()
        };
        assert_eq!(find("start p50"), ["20.0", "900", "45.0x"]);
        assert_eq!(find("kernel seen"), ["6.18.0 (host)", "6.12.0", ""]);
        assert!(header(&r)[1].starts_with("times emulated: vm"));

        let mut nested = r.clone();
        let mut l1 = ModeResult::default();
        l1.set(metrics::START_P50, 300.0, 10);
        nested.nested_shared = Some(l1);
        assert_eq!(
            columns(&nested),
            [
                "shared",
                "vm (emulated)",
                "shared (L1, emulated)",
                "vm/shared"
            ]
        );
        let rows = super::rows(&nested);
        let start = rows
            .iter()
            .find_map(|row| match row {
                Row::Data { label, cells, .. } if label.starts_with("start p50") => Some(cells),
                _ => None,
            })
            .unwrap();
        assert_eq!(start, &["20.0", "900", "300", "3.00x"]);
    }
}
