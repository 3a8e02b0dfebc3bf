//! What `ward run -d` keeps per container under `<run_dir>/cli/<id>/`: `state.json` (written
//! by the CLI and the supervisor, always by rename so a reader sees a whole file),
//! `launch.json` (what the supervisor must launch) and `log` (the container's output).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::CliError;
use crate::config::Config;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The supervisor is starting the container.
    Created,
    Running,
    Exited,
    /// The launch failed; `error` says why.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub id: String,
    pub image: String,
    pub isolation: String,
    /// The container's argv (known once the image is loaded).
    pub command: Vec<String>,
    pub status: Status,
    pub exit_code: Option<i32>,
    /// Unix seconds.
    pub created: u64,
    /// The supervisor's pid.
    pub pid: u32,
    /// The container's init pid (as the agent sees it).
    pub container_pid: u32,
    pub error: Option<String>,
}

/// `<run_dir>/cli`.
pub fn root(config: &Config) -> PathBuf {
    config.run_dir.join("cli")
}

/// `<run_dir>/cli/<id>`.
pub fn dir(config: &Config, id: &str) -> PathBuf {
    root(config).join(id)
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CliError + '_ {
    move |source| CliError::State {
        path: path.to_owned(),
        source,
    }
}

/// Writes `value` as `<dir>/<name>` atomically.
pub fn write_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<(), CliError> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let bytes = serde_json::to_vec_pretty(value).expect("state serializes");
    std::fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_err(&path))
}

pub fn read_json<T: serde::de::DeserializeOwned>(dir: &Path, name: &str) -> Result<T, CliError> {
    let path = dir.join(name);
    let bytes = std::fs::read(&path).map_err(io_err(&path))?;
    serde_json::from_slice(&bytes).map_err(|e| CliError::State {
        path,
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}

impl State {
    pub fn load(dir: &Path) -> Result<Self, CliError> {
        read_json(dir, "state.json")
    }

    pub fn save(&self, dir: &Path) -> Result<(), CliError> {
        write_json(dir, "state.json", self)
    }

    /// `true` while the supervisor process is alive.
    pub fn supervisor_alive(&self) -> bool {
        self.pid != 0
            && std::fs::read(format!("/proc/{}/cmdline", self.pid)).is_ok_and(|raw| {
                String::from_utf8_lossy(&raw).contains(super::SUPERVISE_ARG)
                    && String::from_utf8_lossy(&raw).contains(&self.id)
            })
    }

    /// Created or running with a live supervisor.
    pub fn is_running(&self) -> bool {
        matches!(self.status, Status::Created | Status::Running) && self.supervisor_alive()
    }

    /// What `ward ps` shows: `running`, `exited (N)`, `failed`, or `dead` for a container
    /// whose supervisor vanished.
    pub fn status_text(&self) -> String {
        match self.status {
            Status::Created | Status::Running if !self.supervisor_alive() => "dead".into(),
            Status::Created => "created".into(),
            Status::Running => "running".into(),
            Status::Exited => format!("exited ({})", self.exit_code.unwrap_or(-1)),
            Status::Failed => "failed".into(),
        }
    }
}

/// Every container with a state dir, oldest first.
pub fn list(config: &Config) -> Vec<State> {
    let mut out: Vec<State> = std::fs::read_dir(root(config))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| State::load(&e.path()).ok())
        .collect();
    out.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
    out
}

/// The state of container `id`, or a clear error naming it.
pub fn find(config: &Config, id: &str) -> Result<(PathBuf, State), CliError> {
    let d = dir(config, id);
    if super::launch::validate_id(id).is_err() || !d.join("state.json").exists() {
        return Err(CliError::NoSuchContainer {
            id: id.to_owned(),
            dir: root(config),
        });
    }
    Ok((d.clone(), State::load(&d)?))
}

/// `5s ago`, `3m ago`, `2h ago`, `4d ago`.
pub fn ago(then: u64) -> String {
    let s = now().saturating_sub(then);
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}
