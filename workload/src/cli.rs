//! The command line: one subcommand with a few `--flag VALUE` options each. Parsing is pure
//! so that every usage error is unit-tested; `main` turns a [`Usage`] error into exit 2.

use std::fmt;
use std::path::PathBuf;

/// What to run, with every option resolved to its value or its default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ready,
    Idle,
    Syscall { iters: u64 },
    Cpu { millis: u64 },
    Fsync { mib: u64, dir: PathBuf },
    Stdout { mib: u64 },
    Latency { millis: u64 },
    Forkbomb { seconds: u64, max_procs: u64 },
    Memhog { mib: u64, seconds: u64 },
    Probe { host_pid: Option<u32> },
    Help,
}

/// A command line that does not say what to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage(pub String);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub const USAGE: &str = "\
usage: ward-workload COMMAND [OPTIONS]

Each command prints one JSON line on stdout when done (`stdout` prints it on stderr).
Numbers accept `_` separators and a k/m/g suffix (x1000).

  ready                               print `ready` and exit
  idle                                print `ready`, then sleep until killed
  syscall  [--iters N]                getppid loop (default 2m)           -> ns_per_call
  cpu      [--millis M]               integer hash work for ~M ms (1000)  -> ops_per_sec
  fsync    [--mib N] [--dir D]        N MiB (64) in 64 KiB writes to a file in D (/tmp),
                                      fsync after every MiB               -> mib_per_sec
  stdout   [--mib N]                  write N MiB (256) to stdout         -> elapsed_ms
  latency  [--millis M]               1 ms sleeps for M ms (2000)         -> p50/p99/max_us
  forkbomb [--seconds S] [--max-procs N]
                                      fork tree for S s (5), at most N (4096) processes
  memhog   [--mib N] [--seconds S]    touch N MiB (256) over and over for S s (5)
  probe    [--host-pid P]             isolation probes (P: a pid outside the sandbox)
";

impl Command {
    /// The subcommand's name, as typed.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Ready => "ready",
            Command::Idle => "idle",
            Command::Syscall { .. } => "syscall",
            Command::Cpu { .. } => "cpu",
            Command::Fsync { .. } => "fsync",
            Command::Stdout { .. } => "stdout",
            Command::Latency { .. } => "latency",
            Command::Forkbomb { .. } => "forkbomb",
            Command::Memhog { .. } => "memhog",
            Command::Probe { .. } => "probe",
            Command::Help => "help",
        }
    }

    /// Parses the arguments after the program name.
    pub fn parse<I, S>(args: I) -> Result<Self, Usage>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut args = args.into_iter().map(Into::into);
        let Some(name) = args.next() else {
            return Err(Usage("no command given".into()));
        };
        let rest: Vec<String> = args.collect();
        if rest.iter().any(|a| a == "--help" || a == "-h") {
            return Ok(Command::Help);
        }
        let args = rest.into_iter();
        let mut opts = Options::parse(&name, args)?;
        let cmd = match name.as_str() {
            "help" | "--help" | "-h" => Command::Help,
            "ready" => Command::Ready,
            "idle" => Command::Idle,
            "syscall" => Command::Syscall {
                iters: opts.count("iters", 2_000_000, 1)?,
            },
            "cpu" => Command::Cpu {
                millis: opts.count("millis", 1000, 1)?,
            },
            "fsync" => Command::Fsync {
                mib: opts.count("mib", 64, 1)?,
                dir: opts
                    .take("dir")
                    .map_or_else(|| "/tmp".into(), PathBuf::from),
            },
            "stdout" => Command::Stdout {
                mib: opts.count("mib", 256, 1)?,
            },
            "latency" => Command::Latency {
                millis: opts.count("millis", 2000, 1)?,
            },
            "forkbomb" => Command::Forkbomb {
                seconds: opts.count("seconds", 5, 1)?,
                max_procs: opts.count("max-procs", 4096, 1)?,
            },
            "memhog" => Command::Memhog {
                mib: opts.count("mib", 256, 1)?,
                seconds: opts.count("seconds", 5, 1)?,
            },
            "probe" => Command::Probe {
                host_pid: opts
                    .take("host-pid")
                    .map(|v| {
                        v.parse::<u32>()
                            .ok()
                            .filter(|p| *p > 0)
                            .ok_or_else(|| Usage(format!("--host-pid {v:?}: expected a pid")))
                    })
                    .transpose()?,
            },
            other => return Err(Usage(format!("unknown command {other:?}"))),
        };
        opts.finish(&name)?;
        Ok(cmd)
    }
}

/// `--name value` / `--name=value` pairs in the order given.
struct Options(Vec<(String, String)>);

impl Options {
    fn parse(command: &str, args: impl Iterator<Item = String>) -> Result<Self, Usage> {
        let mut pairs = Vec::new();
        let mut args = args;
        while let Some(arg) = args.next() {
            let Some(flag) = arg.strip_prefix("--") else {
                return Err(Usage(format!("{command}: unexpected argument {arg:?}")));
            };
            let (name, value) = if let Some((n, v)) = flag.split_once('=') {
                (n.to_owned(), v.to_owned())
            } else {
                let value = args
                    .next()
                    .ok_or_else(|| Usage(format!("{command}: --{flag} needs a value")))?;
                (flag.to_owned(), value)
            };
            if pairs.iter().any(|(n, _)| *n == name) {
                return Err(Usage(format!("{command}: --{name} given twice")));
            }
            pairs.push((name, value));
        }
        Ok(Self(pairs))
    }

    fn take(&mut self, name: &str) -> Option<String> {
        let at = self.0.iter().position(|(n, _)| n == name)?;
        Some(self.0.remove(at).1)
    }

    fn count(&mut self, name: &str, default: u64, min: u64) -> Result<u64, Usage> {
        let Some(raw) = self.take(name) else {
            return Ok(default);
        };
        match parse_count(&raw) {
            Some(n) if n >= min => Ok(n),
            Some(n) => Err(Usage(format!("--{name} {n}: must be at least {min}"))),
            None => Err(Usage(format!(
                "--{name} {raw:?}: expected a whole number (optionally with k, m or g)"
            ))),
        }
    }

    /// Fails on any option the command did not take.
    fn finish(self, command: &str) -> Result<(), Usage> {
        match self.0.first() {
            Some((name, _)) => Err(Usage(format!("{command}: unknown option --{name}"))),
            None => Ok(()),
        }
    }
}

/// `1500`, `1_500`, `2k`, `3M`, `1g`: decimal multipliers (x1000), since these are counts of
/// iterations, MiB and milliseconds rather than byte sizes. `None` on anything else or on
/// overflow.
pub fn parse_count(raw: &str) -> Option<u64> {
    let digits: String = raw.chars().filter(|c| *c != '_').collect();
    let (num, mult) = match digits.chars().last()? {
        'k' | 'K' => (&digits[..digits.len() - 1], 1_000),
        'm' | 'M' => (&digits[..digits.len() - 1], 1_000_000),
        'g' | 'G' => (&digits[..digits.len() - 1], 1_000_000_000),
        _ => (digits.as_str(), 1),
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    num.parse::<u64>().ok()?.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, Usage> {
        Command::parse(args.iter().copied())
    }

    #[test]
    fn counts_take_separators_and_suffixes() {
        assert_eq!(parse_count("1500"), Some(1500));
        assert_eq!(parse_count("1_500"), Some(1500));
        assert_eq!(parse_count("2k"), Some(2000));
        assert_eq!(parse_count("3M"), Some(3_000_000));
        assert_eq!(parse_count("1g"), Some(1_000_000_000));
        for bad in [
            "",
            "k",
            "-1",
            "1.5",
            "12x",
            "0x10",
            "1 k",
            "99999999999999999999",
        ] {
            assert_eq!(parse_count(bad), None, "{bad:?}");
        }
        assert_eq!(parse_count("18446744073709552k"), None, "overflow");
    }

    #[test]
    fn defaults_and_both_flag_forms() {
        assert_eq!(
            parse(&["syscall"]).unwrap(),
            Command::Syscall { iters: 2_000_000 }
        );
        assert_eq!(
            parse(&["fsync", "--mib", "8", "--dir=/var/tmp"]).unwrap(),
            Command::Fsync {
                mib: 8,
                dir: "/var/tmp".into()
            }
        );
        assert_eq!(
            parse(&["probe", "--host-pid", "4242"]).unwrap(),
            Command::Probe {
                host_pid: Some(4242)
            }
        );
        assert_eq!(
            parse(&["probe"]).unwrap(),
            Command::Probe { host_pid: None }
        );
        assert_eq!(parse(&["--help"]).unwrap(), Command::Help);
    }

    #[test]
    fn usage_errors_name_the_culprit() {
        let cases: &[(&[&str], &str)] = &[
            (&[], "no command given"),
            (&["bogus"], "unknown command \"bogus\""),
            (&["cpu", "--iters", "5"], "cpu: unknown option --iters"),
            (&["cpu", "--millis"], "cpu: --millis needs a value"),
            (&["cpu", "--millis", "soon"], "--millis \"soon\""),
            (&["cpu", "--millis", "0"], "--millis 0: must be at least 1"),
            (&["cpu", "--millis", "1", "--millis", "2"], "given twice"),
            (&["ready", "now"], "ready: unexpected argument \"now\""),
            (&["probe", "--host-pid", "0"], "--host-pid \"0\""),
        ];
        for (args, want) in cases {
            let e = parse(args).unwrap_err().to_string();
            assert!(e.contains(want), "{args:?}: {e}");
        }
    }
}
