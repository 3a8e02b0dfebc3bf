//! `--format json`: the stable schema documented in `docs/compare.md`, and its parser (the
//! nested run hands its result back as this JSON).

use serde_json::{Map, Value, json};

use crate::compare::metrics::{HostInfo, METRICS, ModeResult, Report, Sample};
use crate::compare::probe::Probe;
use crate::compare::{CompareError, Mode};

/// Version of the schema below; bumped on any incompatible change.
pub const SCHEMA: u64 = 1;

pub fn to_value(r: &Report) -> Value {
    let units: Map<String, Value> = METRICS
        .iter()
        .map(|m| (m.key.to_owned(), Value::from(m.unit)))
        .collect();
    let modes: Map<String, Value> = r
        .modes
        .iter()
        .map(|(m, res)| (m.name().to_owned(), mode_value(res)))
        .collect();
    let ratios: Map<String, Value> = METRICS
        .iter()
        .filter_map(|m| Some((m.key.to_owned(), Value::from(r.vm_over_shared(m.key)?))))
        .collect();
    json!({
        "schema": SCHEMA,
        "host": {
            "kernel_release": r.host.kernel_release,
            "cpus": r.host.cpus,
            "kvm": r.host.kvm,
        },
        "runs": r.runs,
        "emulated": r.emulated,
        "units": units,
        "modes": modes,
        "nested_shared": r.nested_shared.as_ref().map(mode_value),
        "vm_over_shared": ratios,
        "notes": r.notes,
    })
}

pub fn render(r: &Report) -> String {
    let mut s = serde_json::to_string_pretty(&to_value(r)).unwrap_or_default();
    s.push('\n');
    s
}

fn mode_value(res: &ModeResult) -> Value {
    let mut obj = Map::new();
    let mut samples = Map::new();
    for (k, s) in &res.values {
        // Counts are whole numbers; print them as such.
        let count = crate::compare::metrics::metric(k).is_some_and(|m| m.unit == "syscalls");
        let value = if count {
            Value::from(s.value.round() as u64)
        } else {
            Value::from(s.value)
        };
        obj.insert(k.clone(), value);
        samples.insert(k.clone(), Value::from(s.n));
    }
    obj.insert("samples".into(), Value::Object(samples));
    obj.insert(
        "probe".into(),
        res.probe
            .as_ref()
            .and_then(|p| serde_json::to_value(p).ok())
            .unwrap_or(Value::Null),
    );
    obj.insert("errors".into(), json!(res.errors));
    obj.insert("notes".into(), json!(res.notes));
    Value::Object(obj)
}

/// Parses what [`render`] wrote.
pub fn parse(text: &str) -> Result<Report, CompareError> {
    let bad = |why: String| CompareError::Nested(format!("report JSON: {why}"));
    let v: Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    if v["schema"].as_u64() != Some(SCHEMA) {
        return Err(bad(format!("schema {} (want {SCHEMA})", v["schema"])));
    }
    let host = HostInfo {
        kernel_release: v["host"]["kernel_release"]
            .as_str()
            .unwrap_or_default()
            .into(),
        cpus: v["host"]["cpus"].as_u64().unwrap_or(0) as usize,
        kvm: v["host"]["kvm"].as_str().unwrap_or_default().into(),
    };
    let mut modes = Vec::new();
    if let Some(obj) = v["modes"].as_object() {
        for (name, val) in obj {
            let mode: Mode = name.parse()?;
            modes.push((mode, parse_mode(val)));
        }
    }
    modes.sort_by_key(|(m, _)| *m);
    Ok(Report {
        host,
        runs: v["runs"].as_u64().unwrap_or(0) as usize,
        emulated: serde_json::from_value(v["emulated"].clone()).unwrap_or_default(),
        modes,
        nested_shared: (!v["nested_shared"].is_null()).then(|| parse_mode(&v["nested_shared"])),
        notes: serde_json::from_value(v["notes"].clone()).unwrap_or_default(),
    })
}

fn parse_mode(v: &Value) -> ModeResult {
    let mut r = ModeResult::default();
    for m in METRICS {
        if let Some(value) = v[m.key].as_f64() {
            let n = v["samples"][m.key].as_u64().unwrap_or(1) as usize;
            r.values.insert(m.key.to_owned(), Sample { value, n });
        }
    }
    r.probe = serde_json::from_value::<Probe>(v["probe"].clone()).ok();
    r.errors = serde_json::from_value(v["errors"].clone()).unwrap_or_default();
    r.notes = serde_json::from_value(v["notes"].clone()).unwrap_or_default();
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::metrics;

    #[test]
    fn a_report_survives_the_round_trip() {
        let mut shared = ModeResult::default();
        shared.set(metrics::START_P50, 12.5, 10);
        shared.errors.push("fsync: boom".into());
        let r = Report {
            host: HostInfo {
                kernel_release: "6.18".into(),
                cpus: 2,
                kvm: "pvm".into(),
            },
            runs: 10,
            modes: vec![(Mode::Shared, shared)],
            notes: vec!["crun is not installed".into()],
            ..Report::default()
        };
        let text = render(&r);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["modes"]["shared"]["start_p50_ms"], 12.5);
        assert_eq!(v["modes"]["shared"]["samples"]["start_p50_ms"], 10);
        assert_eq!(v["units"]["start_p50_ms"], "ms");
        assert_eq!(parse(&text).unwrap(), r);
    }

    #[test]
    fn a_foreign_schema_is_refused() {
        assert!(parse(r#"{"schema": 99}"#).is_err());
        assert!(parse("not json").is_err());
    }
}
