//! The supervisor of a detached container (`ward __supervise <state dir>`): its own
//! session, stdout and stderr on the container's log. It launches the container, records
//! its state, copies its output into the log, forwards `ward stop`'s signals (SIGTERM, then
//! SIGUSR1 for SIGKILL), records the exit code and tears everything down. The sandbox's
//! agent is bound to this process's life, so a killed supervisor takes its container along.

use std::path::Path;

use super::run::{RunArgs, copy_out, drain, prepare, runtime, wait_forwarding};
use super::state::{self, State, Status};
use super::{CliError, launch};

/// Runs the container described by `<dir>/launch.json`; returns the supervisor's exit code.
pub fn supervise(dir: &Path) -> Result<i32, CliError> {
    let args: RunArgs = state::read_json(dir, "launch.json")?;
    let mut st = State::load(dir)?;
    st.pid = std::process::id();
    st.save(dir)?;
    let fail = |mut st: State, e: &CliError| {
        eprintln!("ward: {e}");
        st.status = Status::Failed;
        st.error = Some(e.to_string());
        let _ = st.save(dir);
    };
    let (config, launch_spec) = match prepare(&args) {
        Ok(p) => p,
        Err(e) => {
            fail(st, &e);
            return Ok(super::EXIT_RUN_ERROR);
        }
    };
    let rt = runtime()?;
    rt.block_on(async {
        let mut running = match launch(&launch_spec, &config).await {
            Ok(r) => r,
            Err(e) => {
                fail(st, &e.into());
                return Ok(super::EXIT_RUN_ERROR);
            }
        };
        st.command = running.command().to_vec();
        st.container_pid = running.pid();
        st.status = Status::Running;
        st.save(dir)?;
        let mut outputs = Vec::new();
        if let Some(out) = running.take_stdout() {
            outputs.push(copy_out(out, tokio::io::stdout()));
        }
        if let Some(err) = running.take_stderr() {
            outputs.push(copy_out(err, tokio::io::stderr()));
        }
        // A detached container's stdin is closed at once (EOF), as docker's without -i.
        drop(running.take_stdin());
        let code = wait_forwarding(&running, false).await;
        drain(outputs).await;
        running.teardown().await;
        let code = match code {
            Ok(c) => c,
            Err(e) => {
                eprintln!("ward: {e}");
                255
            }
        };
        st.status = Status::Exited;
        st.exit_code = Some(code);
        st.save(dir)?;
        if args.rm {
            let _ = std::fs::remove_dir_all(dir);
        }
        Ok(0)
    })
}
