//! The shim's configuration: `/etc/ward/config.toml`, or the file named by the runtime
//! options (`ctr run --runtime-config-path`, a CRI runtime's `ConfigPath`), with built-in
//! defaults when neither exists. The isolation it picks can be overridden per container by
//! the `io.ward.isolation` annotation.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where the configuration lives unless the runtime options name another file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ward/config.toml";
/// Per-container override of the configured isolation.
pub const ISOLATION_ANNOTATION: &str = "io.ward.isolation";

/// Which boundary separates a sandbox's containers from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// A KVM microVM per sandbox, the agent inside it.
    Vm,
    /// The agent on the host; containers share the host kernel (like runc).
    Shared,
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Vm => "vm",
            Self::Shared => "shared",
        })
    }
}

impl std::str::FromStr for Isolation {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "vm" => Ok(Self::Vm),
            "shared" => Ok(Self::Shared),
            other => Err(ConfigError::Isolation(other.to_owned())),
        }
    }
}

/// `config.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The isolation of sandboxes whose containers do not ask for another.
    pub isolation: Isolation,
    /// The `ward-agent` binary for shared isolation; default: next to the shim's executable.
    pub agent_path: Option<PathBuf>,
    /// Where per-sandbox sockets and state live (`<run_dir>/<sandbox>/agent.sock`).
    pub run_dir: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            // vm isolation is not built yet: the built-in default is the one that works.
            isolation: Isolation::Shared,
            agent_path: None,
            run_dir: PathBuf::from("/run/ward"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading ward config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing ward config {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("isolation {0:?} is unknown (want \"vm\" or \"shared\")")]
    Isolation(String),
}

impl Config {
    /// Loads `path`, or [`DEFAULT_CONFIG_PATH`] when `None`. A missing default file means the
    /// built-in defaults; a missing file that was asked for by name is an error.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let (path, required) = match path {
            Some(p) => (p, true),
            None => (Path::new(DEFAULT_CONFIG_PATH), false),
        };
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Parses a config file's text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// The isolation for a container with these OCI annotations.
    pub fn isolation_for(
        &self,
        annotations: &HashMap<String, String>,
    ) -> Result<Isolation, ConfigError> {
        annotations
            .get(ISOLATION_ANNOTATION)
            .map_or(Ok(self.isolation), |v| v.parse())
    }

    /// The agent binary: the configured one, else `ward-agent` beside the running executable.
    pub fn agent_binary(&self) -> PathBuf {
        if let Some(p) = &self.agent_path {
            return p.clone();
        }
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join("ward-agent")))
            .unwrap_or_else(|| PathBuf::from("ward-agent"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_isolation_and_rejects_unknown_values() {
        let c = Config::parse("isolation = \"vm\"\n", Path::new("x")).unwrap();
        assert_eq!(c.isolation, Isolation::Vm);
        assert_eq!(c.run_dir, PathBuf::from("/run/ward"));
        let err = Config::parse("isolation = \"gvisor\"\n", Path::new("/etc/x.toml")).unwrap_err();
        assert!(err.to_string().contains("/etc/x.toml"), "{err}");
        assert!(Config::parse("isolaton = \"vm\"\n", Path::new("x")).is_err());
    }

    #[test]
    fn annotation_overrides_the_configured_isolation() {
        let c = Config::default();
        let mut a = HashMap::new();
        assert_eq!(c.isolation_for(&a).unwrap(), Isolation::Shared);
        a.insert(ISOLATION_ANNOTATION.into(), "vm".into());
        assert_eq!(c.isolation_for(&a).unwrap(), Isolation::Vm);
        a.insert(ISOLATION_ANNOTATION.into(), "VM!".into());
        assert!(c.isolation_for(&a).unwrap_err().to_string().contains("VM!"));
    }

    #[test]
    fn a_named_missing_file_is_an_error_the_default_one_is_not() {
        assert!(Config::load(Some(Path::new("/nonexistent/ward.toml"))).is_err());
    }
}
