//! `--format table`: aligned columns for a terminal, one column per mode.

use super::{Row, columns, footer, header, rows};
use crate::compare::metrics::Report;

pub fn render(r: &Report) -> String {
    let cols = columns(r);
    let rows = rows(r);
    let label_w = rows
        .iter()
        .map(|row| match row {
            Row::Section(s) => s.chars().count(),
            Row::Data {
                label, unit: "", ..
            } => label.chars().count() + 2,
            Row::Data { label, unit, .. } => label.chars().count() + unit.chars().count() + 5,
        })
        .max()
        .unwrap_or(0);
    let mut widths: Vec<usize> = cols.iter().map(|c| c.chars().count()).collect();
    for row in &rows {
        if let Row::Data { cells, .. } = row {
            for (w, c) in widths.iter_mut().zip(cells) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    for line in header(r) {
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str(&pad_right("", label_w));
    for (c, w) in cols.iter().zip(&widths) {
        out.push_str("  ");
        out.push_str(&pad_left(c, *w));
    }
    out.push('\n');
    for row in &rows {
        match row {
            Row::Section(s) => {
                out.push_str(&s.to_uppercase());
                out.push('\n');
            }
            Row::Data { label, unit, cells } => {
                let name = if unit.is_empty() {
                    format!("  {label}")
                } else {
                    format!("  {label} [{unit}]")
                };
                out.push_str(&pad_right(&name, label_w));
                for (c, w) in cells.iter().zip(&widths) {
                    out.push_str("  ");
                    out.push_str(&pad_left(c, *w));
                }
                out.push('\n');
            }
        }
    }
    for line in footer(r) {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn pad_right(s: &str, w: usize) -> String {
    format!("{s}{}", " ".repeat(w.saturating_sub(s.chars().count())))
}

fn pad_left(s: &str, w: usize) -> String {
    format!("{}{s}", " ".repeat(w.saturating_sub(s.chars().count())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::report::tests::sample_report;

    #[test]
    fn columns_line_up() {
        let text = render(&sample_report());
        let lines: Vec<&str> = text.lines().collect();
        let head = lines
            .iter()
            .find(|l| l.trim_start().starts_with("shared"))
            .unwrap();
        let start = lines.iter().find(|l| l.contains("start p50")).unwrap();
        assert_eq!(head.chars().count(), start.chars().count(), "{text}");
        assert!(
            text.contains("COST") && text.contains("ISOLATION"),
            "{text}"
        );
        assert!(text.contains("note: crun is not installed"), "{text}");
    }
}
