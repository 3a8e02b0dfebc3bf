//! OCI hooks that run in the runtime's namespaces: `createRuntime` and `prestart` (once the
//! container is built, before create returns), `poststart` and `poststop`. Each gets the
//! container's state as JSON on stdin, its own args/env, and its timeout.
//!
//! `createContainer` and `startContainer` (which run inside the container) are not run; the
//! library warns when a spec has them.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::{Hook, Hooks};

use super::error::{Error, Result};
use super::lifecycle::State;

/// Which hooks to run.
#[derive(Debug, Clone, Copy)]
pub enum Phase {
    CreateRuntime,
    Prestart,
    Poststart,
    Poststop,
}

fn list(hooks: &Hooks, phase: Phase) -> &[Hook] {
    #[allow(deprecated)] // prestart is deprecated in the spec but still what users write
    let v = match phase {
        Phase::CreateRuntime => hooks.create_runtime(),
        Phase::Prestart => hooks.prestart(),
        Phase::Poststart => hooks.poststart(),
        Phase::Poststop => hooks.poststop(),
    };
    v.as_deref().unwrap_or_default()
}

/// Warns about hooks ward does not run.
pub fn warn_unsupported(id: &str, hooks: Option<&Hooks>) {
    if let Some(h) = hooks {
        if h.create_container().as_ref().is_some_and(|v| !v.is_empty())
            || h.start_container().as_ref().is_some_and(|v| !v.is_empty())
        {
            log::warn!("container {id}: createContainer/startContainer hooks are not run by ward");
        }
    }
}

/// Runs every hook of `phase`, in order; the first failure stops and is returned.
pub fn run(hooks: Option<&Hooks>, phase: Phase, state: &State) -> Result<()> {
    let Some(hooks) = hooks else { return Ok(()) };
    let input = serde_json::to_vec(state).map_err(|e| Error::Hook {
        phase: format!("{phase:?}"),
        path: std::path::PathBuf::default(),
        reason: e.to_string(),
    })?;
    for hook in list(hooks, phase) {
        run_one(hook, phase, &input)?;
    }
    Ok(())
}

fn run_one(hook: &Hook, phase: Phase, input: &[u8]) -> Result<()> {
    let fail = |reason: String| Error::Hook {
        phase: format!("{phase:?}"),
        path: hook.path().clone(),
        reason,
    };
    let mut cmd = Command::new(hook.path());
    if let Some(args) = hook.args() {
        if let Some((arg0, rest)) = args.split_first() {
            cmd.arg0(arg0).args(rest);
        }
    }
    cmd.env_clear().envs(
        hook.env()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .filter_map(|e| e.split_once('=')),
    );
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| fail(format!("spawn: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input); // a hook may not read its state
    }
    let deadline = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Instant::now() + Duration::from_secs(t as u64));
    loop {
        if let Some(status) = child.try_wait().map_err(|e| fail(format!("wait: {e}")))? {
            if status.success() {
                return Ok(());
            }
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            return Err(fail(format!("{status}: {}", err.trim())));
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(format!(
                "timed out after {}s",
                hook.timeout().unwrap_or(0)
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
