//! `ward-agent`: the AgentService server.
//!
//! - `ward-agent [--listen ADDR] [--state-dir DIR]`: serve (default `vsock://-1:1024`).
//!   As PID 1 of a ward guest it first mounts what a container host needs, brings up `lo`,
//!   and powers the VM off when it is told to shut down.
//! - `ward-agent init`: internal, the container init helper the library re-executes.

use std::path::PathBuf;
use std::process::ExitCode;

use ward_agent::protocol::address::ListenAddress;
use ward_agent::server::{ServiceOptions, serve};

const USAGE: &str =
    "usage: ward-agent [--listen unix:<path>|vsock://-1:<port>] [--state-dir <dir>]";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let first = args.next();
    if first.as_deref() == Some("init") {
        ward_agent::container::init::main();
    }
    let in_guest = std::process::id() == 1;
    ward_agent::logger::init(in_guest);
    if in_guest {
        if let Err(e) = ward_agent::guest::leave_initramfs() {
            log::error!("{e}");
            ward_agent::guest::power_off();
        }
    }

    let mut listen = ListenAddress::default();
    let mut state_dir = PathBuf::from("/run/ward/agent");
    let mut rest = first.into_iter().chain(args);
    while let Some(arg) = rest.next() {
        let value = |name: &str, v: Option<String>| {
            v.ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        let parsed = match arg.as_str() {
            "--listen" => value("--listen", rest.next())
                .and_then(|v| ListenAddress::parse(&v).map_err(|e| e.to_string()))
                .map(|a| listen = a),
            "--state-dir" => {
                value("--state-dir", rest.next()).map(|v| state_dir = PathBuf::from(v))
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            // The kernel hands init every command-line word it does not know itself
            // (`nomodule`, …): as PID 1, note them and go on rather than panic the guest.
            other if in_guest => {
                log::warn!("ignoring argument {other:?} from the kernel command line");
                Ok(())
            }
            other => Err(format!("unknown argument {other:?}\n{USAGE}")),
        };
        if let Err(e) = parsed {
            eprintln!("ward-agent: {e}");
            return ExitCode::from(2);
        }
    }

    if in_guest {
        if let Err(e) =
            ward_agent::guest::mount_basics().and_then(|()| ward_agent::guest::loopback_up())
        {
            log::error!("guest setup: {e}");
            ward_agent::guest::power_off();
        }
    }
    let opts = ServiceOptions {
        state_dir,
        init_binary: None,
        in_guest,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ward-agent: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(serve(listen, opts));
    if in_guest {
        if let Err(e) = &result {
            log::error!("{e}");
        }
        ward_agent::guest::power_off();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ward-agent: {e}");
            ExitCode::FAILURE
        }
    }
}
