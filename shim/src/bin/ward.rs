//! `ward`: run containers without containerd (`ward run`), and manage detached ones
//! (`ps`, `logs`, `stop`, `rm`). A thin dispatcher: each command lives in `ward_shim::cli`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ward_shim::cli::{self, CliError, manage, run};

#[derive(Parser, Debug)]
#[command(
    name = "ward",
    version,
    about = "ward: secure containers, vm or shared isolation"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a command in a new container: `ward run [FLAGS] IMAGE [-- CMD…]`.
    Run(run::RunArgs),
    /// List detached containers.
    Ps(manage::PsArgs),
    /// Print a detached container's output.
    Logs(manage::LogsArgs),
    /// Stop a detached container (SIGTERM, then SIGKILL).
    Stop(manage::StopArgs),
    /// Remove a stopped detached container.
    Rm(manage::RmArgs),
    /// Run the same workloads in vm and shared isolation (and runc/crun) and compare.
    Compare(ward_shim::compare::cli::CompareArgs),
    /// The supervisor of a detached container (internal).
    #[command(name = cli::SUPERVISE_ARG, hide = true)]
    Supervise { dir: PathBuf },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            // `ward compare` reports bad flags with 2, like most tools; `run` with docker's 125.
            let compare = std::env::args().nth(1).is_some_and(|a| a == "compare");
            let code = if !e.use_stderr() {
                0
            } else if compare {
                2
            } else {
                125
            };
            return ExitCode::from(code);
        }
    };
    if let Command::Compare(a) = &cli.command {
        return ward_shim::compare::cli::run(a);
    }
    let is_run = matches!(cli.command, Command::Run(_));
    let result: Result<i32, CliError> = match &cli.command {
        Command::Run(a) => run::run(a),
        Command::Ps(a) => manage::ps(a),
        Command::Logs(a) => manage::logs(a),
        Command::Stop(a) => manage::stop(a),
        Command::Rm(a) => manage::rm(a),
        Command::Supervise { dir } => cli::supervise::supervise(dir),
        Command::Compare(_) => unreachable!("handled above"),
    };
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("ward: {e}");
            ExitCode::from(if is_run { cli::EXIT_RUN_ERROR as u8 } else { 1 })
        }
    }
}
