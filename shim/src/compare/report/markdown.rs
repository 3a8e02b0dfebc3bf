//! `--format markdown`: the same rows as a GitHub table, for issues and docs.

use std::fmt::Write;

use super::{Row, columns, footer, header, rows};
use crate::compare::metrics::Report;

pub fn render(r: &Report) -> String {
    let cols = columns(r);
    let mut out = String::new();
    for line in header(r) {
        let _ = write!(out, "{line}\n\n");
    }
    out.push_str("| metric |");
    for c in &cols {
        let _ = write!(out, " {c} |");
    }
    out.push_str("\n| --- |");
    for _ in &cols {
        out.push_str(" ---: |");
    }
    out.push('\n');
    for row in rows(r) {
        match row {
            Row::Section(s) => {
                let _ = writeln!(out, "| **{s}** |{}", " |".repeat(cols.len()));
            }
            Row::Data { label, unit, cells } => {
                let unit = if unit.is_empty() {
                    String::new()
                } else {
                    format!(" ({unit})")
                };
                let _ = write!(out, "| {}{unit} |", escape(&label));
                for c in cells {
                    let _ = write!(out, " {} |", escape(&c));
                }
                out.push('\n');
            }
        }
    }
    let foot = footer(r);
    if !foot.is_empty() {
        out.push('\n');
        for line in foot {
            let _ = writeln!(out, "- {}", escape(&line));
        }
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::report::tests::sample_report;

    #[test]
    fn every_row_has_every_column() {
        let text = render(&sample_report());
        let rows: Vec<&str> = text.lines().filter(|l| l.starts_with('|')).collect();
        let bars = rows[0].matches('|').count();
        assert!(
            rows.iter().all(|l| l.matches('|').count() == bars),
            "{text}"
        );
        assert!(text.contains("| start p50"), "{text}");
    }
}
