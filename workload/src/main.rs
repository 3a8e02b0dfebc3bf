//! `ward-workload`: the benchmark and probe binary baked into ward's demo image, so that
//! `ward compare` runs exactly the same code in a microVM, in a shared-kernel sandbox and
//! under runc/crun. Each subcommand does one thing and prints one JSON line (see
//! docs/workload.md). Exit codes: 0 done, 1 the workload failed, 2 usage error.

mod bench;
mod cli;
mod probe;
mod stress;
mod sys;

use std::process::ExitCode;

use cli::{Command, USAGE};
use serde_json::Value;

fn main() -> ExitCode {
    let cmd = match Command::parse(std::env::args().skip(1)) {
        Ok(cmd) => cmd,
        Err(usage) => {
            eprintln!("ward-workload: {usage}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let name = cmd.name();
    match run(cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ward-workload {name}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: Command) -> Result<(), sys::Error> {
    let line = match cmd {
        Command::Help => {
            print!("{USAGE}");
            return Ok(());
        }
        Command::Ready => {
            return sys::write_all_fd(1, b"ready\n")
                .map_err(|e| sys::Error::new("writing `ready` to stdout", e));
        }
        Command::Idle => return stress::idle(),
        Command::Syscall { iters } => bench::syscall(iters),
        Command::Cpu { millis } => bench::cpu(millis),
        Command::Fsync { mib, dir } => bench::fsync(mib, &dir)?,
        Command::Stdout { mib } => {
            // stdout carries the payload: the report goes to stderr.
            eprintln!("{}", bench::stdout(mib)?);
            return Ok(());
        }
        Command::Latency { millis } => bench::latency(millis),
        Command::Forkbomb { seconds, max_procs } => stress::forkbomb(seconds, max_procs)?,
        Command::Memhog { mib, seconds } => stress::memhog(mib, seconds)?,
        Command::Probe { host_pid } => probe::probe(host_pid),
    };
    print_line(&line)
}

fn print_line(v: &Value) -> Result<(), sys::Error> {
    sys::write_all_fd(1, format!("{v}\n").as_bytes())
        .map_err(|e| sys::Error::new("writing the result to stdout", e))
}
