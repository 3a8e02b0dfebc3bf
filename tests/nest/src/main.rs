//! `ward-nest -- <cmd>…`: run one command inside the nested KVM harness, print its output,
//! exit with its exit status.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ward_nest::{Options, run};

#[derive(Parser, Debug)]
#[command(
    name = "ward-nest",
    about = "Run a command in a QEMU TCG machine with a real /dev/kvm"
)]
struct Args {
    /// L1 kernel (default: the cached nest-host kernel of this source tree).
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Give up (and kill QEMU) after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    #[arg(long, default_value_t = 2048)]
    mem_mib: u32,
    #[arg(long, default_value_t = 2)]
    cpus: u32,
    /// Extra tmpfs mount in L1 (repeatable); /tmp, /run and /var/lib always are.
    #[arg(long)]
    tmpfs: Vec<PathBuf>,
    /// Host directory shared read-write at the same path (repeatable).
    #[arg(long)]
    writable: Vec<PathBuf>,
    /// KEY=VALUE added to the command's environment (repeatable).
    #[arg(long, short)]
    env: Vec<String>,
    /// Copy L1's console to stderr as it boots.
    #[arg(long, short)]
    verbose: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    cmd: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut env = Vec::new();
    for pair in &args.env {
        let Some((k, v)) = pair.split_once('=') else {
            eprintln!("ward-nest: --env {pair}: expected KEY=VALUE");
            return ExitCode::from(2);
        };
        env.push((k.to_owned(), v.to_owned()));
    }
    let opts = Options {
        kernel: args.kernel,
        timeout: Duration::from_secs(args.timeout),
        memory_mib: args.mem_mib,
        cpus: args.cpus,
        tmpfs: args.tmpfs,
        writable: args.writable,
        env,
        echo_console: args.verbose,
        ..Options::default()
    };
    match run(&args.cmd, &opts) {
        Ok(out) => {
            let _ = std::io::stdout().write_all(&out.stdout);
            let _ = std::io::stderr().write_all(&out.stderr);
            if out.status != 0 {
                eprintln!("ward-nest: command exited with status {} in L1", out.status);
            }
            ExitCode::from(u8::try_from(out.status).unwrap_or(1))
        }
        Err(err) => {
            eprintln!("ward-nest: {err}");
            ExitCode::from(125)
        }
    }
}
