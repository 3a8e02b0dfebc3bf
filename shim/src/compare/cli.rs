//! `ward compare`'s command line: flags → [`Options`], then the run and the output. Bad
//! flags (an unknown workload, mode or format) exit 2 with the valid values listed.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser};

use super::report::{json, markdown, svg, table};
use super::{Format, Mode, Options, Workload, session};

/// Runs the same workloads in ward's shared and vm isolation (and runc/crun as baselines)
/// and prints cost and isolation side by side.
#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// Samples per latency metric (start, teardown); throughput metrics take up to 3.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub runs: u32,
    /// Comma list of: start, teardown, memory, syscall, cpu, fsync, stdout, probe, neighbour.
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = parse_workload)]
    pub workloads: Vec<Workload>,
    /// table, json or markdown.
    #[arg(long, default_value = "table", value_parser = parse_format)]
    pub format: Format,
    /// Also write a bar chart of the cost metrics to FILE.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Baseline runtimes: a comma list of runc, crun, or `none`.
    #[arg(long, value_name = "LIST", default_value = "runc,crun")]
    pub baseline: String,
    /// The exact modes to run (used for the nested run of vm mode).
    #[arg(long, hide = true, value_delimiter = ',', value_parser = parse_mode)]
    pub modes: Vec<Mode>,
    /// The ward config file for ward's modes (default: /etc/ward/config.toml, if present).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The image archive for ward's modes (used for the nested run, where the cache is
    /// read-only).
    #[arg(long, hide = true, value_name = "ARCHIVE")]
    pub image: Option<PathBuf>,
    /// No progress line on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Parser)]
#[command(name = "ward compare")]
struct Standalone {
    #[command(flatten)]
    args: CompareArgs,
}

fn parse_workload(s: &str) -> Result<Workload, String> {
    s.trim()
        .parse()
        .map_err(|e: super::CompareError| e.to_string())
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    s.trim()
        .parse()
        .map_err(|e: super::CompareError| e.to_string())
}

fn parse_format(s: &str) -> Result<Format, String> {
    match s {
        "table" => Ok(Format::Table),
        "json" => Ok(Format::Json),
        "markdown" | "md" => Ok(Format::Markdown),
        _ => Err(format!(
            "unknown format {s:?}; valid: table, json, markdown"
        )),
    }
}

/// The baselines of `--baseline`.
pub fn parse_baselines(s: &str) -> Result<Vec<Mode>, String> {
    if s.trim() == "none" {
        return Ok(Vec::new());
    }
    s.split(',')
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .map(|b| match b {
            "runc" => Ok(Mode::Runc),
            "crun" => Ok(Mode::Crun),
            _ => Err(format!(
                "unknown baseline {b:?}; valid: runc, crun, or none"
            )),
        })
        .collect()
}

impl CompareArgs {
    /// The options these flags ask for.
    pub fn options(&self) -> Result<Options, String> {
        let workloads = if self.workloads.is_empty() {
            Workload::ALL.to_vec()
        } else {
            let mut w = self.workloads.clone();
            w.sort();
            w.dedup();
            w
        };
        let modes = if self.modes.is_empty() {
            let mut m = vec![Mode::Shared, Mode::Vm];
            m.extend(parse_baselines(&self.baseline)?);
            m
        } else {
            self.modes.clone()
        };
        if let Some(svg) = &self.svg {
            let dir = svg.parent().filter(|d| !d.as_os_str().is_empty());
            if dir.is_some_and(|d| !d.is_dir()) {
                return Err(format!(
                    "--svg {}: directory {} does not exist",
                    svg.display(),
                    dir.map(|d| d.display().to_string()).unwrap_or_default()
                ));
            }
        }
        let mut seen = Vec::new();
        for m in modes {
            if !seen.contains(&m) {
                seen.push(m);
            }
        }
        Ok(Options {
            runs: self.runs as usize,
            workloads,
            format: self.format,
            svg: self.svg.clone(),
            modes: seen,
            image: self.image.clone(),
            config: self.config.clone(),
        })
    }
}

/// `ward compare …` with the words after `compare`; for a binary without its own parser.
pub fn main_from<I, S>(args: I) -> ExitCode
where
    I: IntoIterator<Item = S>,
    S: Into<std::ffi::OsString> + Clone,
{
    let args = std::iter::once(std::ffi::OsString::from("ward compare"))
        .chain(args.into_iter().map(Into::into));
    match Standalone::try_parse_from(args) {
        Ok(s) => run(&s.args),
        Err(e) => {
            let _ = e.print();
            ExitCode::from(if e.use_stderr() { 2 } else { 0 })
        }
    }
}

/// Runs `ward compare` with parsed flags: the report on stdout, the chart in `--svg`.
pub fn run(args: &CompareArgs) -> ExitCode {
    let opts = match args.options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("ward compare: {e}");
            return ExitCode::from(2);
        }
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "ward compare: needs root (it creates containers, cgroups and mounts); run it with sudo"
        );
        return ExitCode::from(1);
    }
    let report = match session::run(&opts, args.quiet) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ward compare: {e}");
            return ExitCode::from(1);
        }
    };
    let text = match opts.format {
        Format::Table => table::render(&report),
        Format::Json => json::render(&report),
        Format::Markdown => markdown::render(&report),
    };
    print!("{text}");
    if let Some(path) = &opts.svg {
        if let Err(e) = std::fs::write(path, svg::render(&report)) {
            eprintln!("ward compare: writing {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, String> {
        let all = std::iter::once("ward compare").chain(args.iter().copied());
        Standalone::try_parse_from(all)
            .map_err(|e| e.to_string())
            .and_then(|s| s.args.options())
    }

    #[test]
    fn defaults_are_every_workload_both_modes_and_both_baselines() {
        let o = parse(&[]).unwrap();
        assert_eq!(o.runs, 10);
        assert_eq!(o.workloads, Workload::ALL);
        assert_eq!(o.modes, [Mode::Shared, Mode::Vm, Mode::Runc, Mode::Crun]);
        assert_eq!(o.format, Format::Table);
    }

    #[test]
    fn lists_parse() {
        let o = parse(&[
            "--workloads",
            "probe,start",
            "--baseline",
            "none",
            "--format",
            "json",
        ])
        .unwrap();
        assert_eq!(o.workloads, [Workload::Start, Workload::Probe]);
        assert_eq!(o.modes, [Mode::Shared, Mode::Vm]);
        assert_eq!(o.format, Format::Json);
        let o = parse(&["--modes", "vm,shared"]).unwrap();
        assert_eq!(o.modes, [Mode::Vm, Mode::Shared]);
    }

    #[test]
    fn an_unknown_workload_names_the_valid_ones() {
        let e = parse(&["--workloads", "start,bogus"]).unwrap_err();
        assert!(e.contains("\"bogus\""), "{e}");
        assert!(
            e.contains("start, teardown, memory, syscall, cpu, fsync, stdout, probe, neighbour"),
            "{e}"
        );
        let e = parse(&["--baseline", "docker"]).unwrap_err();
        assert!(e.contains("unknown baseline \"docker\""), "{e}");
        assert!(parse(&["--runs", "0"]).is_err());
        let e = parse(&["--svg", "/nonexistent-dir/x.svg"]).unwrap_err();
        assert!(
            e.contains("directory /nonexistent-dir does not exist"),
            "{e}"
        );
        assert!(
            parse(&["--format", "xml"])
                .unwrap_err()
                .contains("valid: table, json, markdown")
        );
    }
}
