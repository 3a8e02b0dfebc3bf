//! `ward ps`, `ward logs`, `ward stop`, `ward rm`: detached containers, through the state
//! their supervisors keep under `<run_dir>/cli/`.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::CliError;
use super::state::{self, State};
use crate::config::Config;

/// How long `ward stop` waits after SIGKILL before it gives up on the supervisor.
const KILL_WAIT: Duration = Duration::from_secs(30);

#[derive(clap::Args, Debug, Clone)]
pub struct PsArgs {
    /// Show every container, not only running ones.
    #[arg(long, short = 'a')]
    pub all: bool,
    /// ward config file (its run_dir holds the containers).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct LogsArgs {
    /// Keep printing output as it comes, until the container exits.
    #[arg(long, short = 'f')]
    pub follow: bool,
    #[arg(long)]
    pub config: Option<PathBuf>,
    pub id: String,
}

#[derive(clap::Args, Debug, Clone)]
pub struct StopArgs {
    /// Seconds between SIGTERM and SIGKILL.
    #[arg(long, short = 't', default_value_t = 10)]
    pub time: u64,
    #[arg(long)]
    pub config: Option<PathBuf>,
    pub id: String,
}

#[derive(clap::Args, Debug, Clone)]
pub struct RmArgs {
    /// Kill a running container first.
    #[arg(long, short = 'f')]
    pub force: bool,
    #[arg(long)]
    pub config: Option<PathBuf>,
    pub id: String,
}

/// `ward ps`.
pub fn ps(args: &PsArgs) -> Result<i32, CliError> {
    let config = Config::load(args.config.as_deref())?;
    let rows: Vec<[String; 6]> = state::list(&config)
        .into_iter()
        .filter(|s| args.all || s.is_running())
        .map(|s| {
            [
                s.id.clone(),
                s.image.clone(),
                s.isolation.clone(),
                s.status_text(),
                state::ago(s.created),
                s.command.join(" "),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["ID", "IMAGE", "ISOLATION", "STATUS", "CREATED", "COMMAND"],
            &rows
        )
    );
    Ok(0)
}

/// Left-aligned columns, three spaces apart; the last column is not padded.
fn table(header: &[&str; 6], rows: &[[String; 6]]) -> String {
    let mut widths = header.map(str::len);
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                let _ = write!(s, "{c:<w$}   ", w = widths[i]);
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// `ward logs`.
pub fn logs(args: &LogsArgs) -> Result<i32, CliError> {
    let config = Config::load(args.config.as_deref())?;
    let (dir, _) = state::find(&config, &args.id)?;
    let path = dir.join("log");
    let io = |source| CliError::State {
        path: path.clone(),
        source,
    };
    let mut f = std::fs::File::open(&path).map_err(io)?;
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; 64 << 10];
    // After the supervisor is gone: one more read to the end, then stop.
    let mut last = false;
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n > 0 {
            if out.write_all(&buf[..n]).is_err() {
                return Ok(0);
            }
            continue;
        }
        let _ = out.flush();
        if !args.follow || last {
            return Ok(0);
        }
        match State::load(&dir) {
            Ok(s) if s.supervisor_alive() => std::thread::sleep(Duration::from_millis(50)),
            _ => last = true,
        }
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory effects; a pid that already exited is ESRCH.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

/// Waits until the supervisor of `st` is gone; `false` after `limit`.
fn wait_gone(st: &State, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while st.supervisor_alive() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// SIGTERM to the container through its supervisor, SIGKILL after `grace`; returns once
/// the supervisor has torn everything down.
fn stop_container(st: &State, grace: Duration) -> Result<(), CliError> {
    if !st.supervisor_alive() {
        return Ok(());
    }
    signal(st.pid, libc::SIGTERM);
    if wait_gone(st, grace) {
        return Ok(());
    }
    signal(st.pid, libc::SIGUSR1);
    if wait_gone(st, KILL_WAIT) {
        return Ok(());
    }
    // The supervisor hangs: killing it makes its agent remove the container.
    signal(st.pid, libc::SIGKILL);
    if wait_gone(st, KILL_WAIT) {
        return Ok(());
    }
    Err(CliError::DidNotStop { id: st.id.clone() })
}

/// `ward stop`.
pub fn stop(args: &StopArgs) -> Result<i32, CliError> {
    let config = Config::load(args.config.as_deref())?;
    let (_, st) = state::find(&config, &args.id)?;
    stop_container(&st, Duration::from_secs(args.time))?;
    println!("{}", st.id);
    Ok(0)
}

/// `ward rm`.
pub fn rm(args: &RmArgs) -> Result<i32, CliError> {
    let config = Config::load(args.config.as_deref())?;
    let (dir, st) = state::find(&config, &args.id)?;
    if st.supervisor_alive() {
        if !args.force {
            return Err(CliError::StillRunning { id: st.id });
        }
        stop_container(&st, Duration::ZERO)?;
    }
    std::fs::remove_dir_all(&dir).map_err(|source| CliError::State { path: dir, source })?;
    println!("{}", st.id);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_columns_line_up() {
        let rows = [[
            "a-long-id".to_owned(),
            "demo".into(),
            "shared".into(),
            "running".into(),
            "1s ago".into(),
            "sleep 9".into(),
        ]];
        let t = table(
            &["ID", "IMAGE", "ISOLATION", "STATUS", "CREATED", "COMMAND"],
            &rows,
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0].find("IMAGE"), lines[1].find("demo"));
        assert_eq!(lines[0].find("COMMAND"), lines[1].find("sleep 9"));
    }
}
