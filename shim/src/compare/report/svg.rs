//! `--svg FILE`: a hand-written SVG bar chart of the cost metrics, one group per metric,
//! one bar per mode, each group scaled to its own largest value.

use std::fmt::Write;

use super::{number, results};
use crate::compare::metrics::{Group, METRICS, Report};

const WIDTH: f64 = 860.0;
const LABEL_W: f64 = 300.0;
const BAR_H: f64 = 16.0;
const GAP: f64 = 14.0;
const COLOURS: [&str; 6] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1",
];

#[allow(clippy::many_single_char_names)] // x, y, w: coordinates
pub fn render(r: &Report) -> String {
    let cols = results(r);
    let metrics: Vec<_> = METRICS
        .iter()
        .filter(|m| m.group == Group::Cost)
        .filter(|m| cols.iter().any(|(_, res)| res.get(m.key).is_some()))
        .collect();
    let n_modes = cols.len().max(1) as f64;
    let group_h = n_modes * BAR_H + GAP + 18.0;
    let height = 60.0 + group_h * metrics.len() as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="white"/>"#
    );
    let title = format!(
        "ward compare: host kernel {}, {} runs{}",
        r.host.kernel_release,
        r.runs,
        if r.emulated.values().any(|e| *e) {
            " (vm times emulated)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        s,
        r#"<text x="10" y="20" font-size="15" font-weight="bold">{}</text>"#,
        escape(&title)
    );
    // Legend.
    let mut x = 10.0;
    for (i, (m, _)) in cols.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="30" width="12" height="12" fill="{colour}"/><text x="{}" y="41">{}</text>"#,
            x + 16.0,
            escape(m)
        );
        x += 30.0 + 7.0 * m.chars().count() as f64;
    }
    let mut y = 60.0;
    for m in metrics {
        let max = cols
            .iter()
            .filter_map(|(_, res)| res.get(m.key))
            .fold(0.0_f64, f64::max);
        let better = if m.lower_is_better {
            "lower is better"
        } else {
            "higher is better"
        };
        let _ = writeln!(
            s,
            r#"<text x="10" y="{}" font-weight="bold">{} [{}]</text><text x="10" y="{}" fill="gray">{better}</text>"#,
            y + 12.0,
            escape(m.label),
            escape(m.unit),
            y + 26.0
        );
        for (i, (_, res)) in cols.iter().enumerate() {
            let by = y + i as f64 * BAR_H;
            let Some(v) = res.get(m.key) else { continue };
            let w = if max > 0.0 {
                (v / max * (WIDTH - LABEL_W - 80.0)).max(1.0)
            } else {
                1.0
            };
            let colour = COLOURS[i % COLOURS.len()];
            let _ = writeln!(
                s,
                r#"<rect x="{LABEL_W}" y="{by}" width="{w:.1}" height="{}" fill="{colour}"/><text x="{:.1}" y="{}">{}</text>"#,
                BAR_H - 3.0,
                LABEL_W + w + 4.0,
                by + BAR_H - 5.0,
                number(v)
            );
        }
        y += group_h;
    }
    s.push_str("</svg>\n");
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::report::tests::sample_report;

    #[test]
    fn the_chart_has_a_bar_per_measured_value() {
        let svg = render(&sample_report());
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
        // background + 2 legend boxes + start p50 (2 modes) + memory (1 mode)
        assert_eq!(svg.matches("<rect").count(), 6, "{svg}");
        assert!(svg.contains("→") || svg.contains("start p50"));
    }
}
