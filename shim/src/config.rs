//! The shim's configuration: the file named by the runtime options (`ctr run
//! --runtime-config-path`, a CRI runtime's `ConfigPath`), else `$WARD_CONFIG` (which shims
//! inherit from containerd's environment), else `/etc/ward/config.toml`, with built-in
//! defaults when none exists. The isolation it picks can be overridden per container by
//! the `io.ward.isolation` annotation.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where the configuration lives unless the runtime options name another file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ward/config.toml";
/// Environment variable naming the config file when the runtime options name none.
pub const CONFIG_ENV: &str = "WARD_CONFIG";
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
    /// vm isolation: the microVM of each sandbox (`[vm]` table).
    pub vm: VmConfig,
}

/// `[vm]`: what a vm-isolated sandbox boots and how big it is. A VM gets `cpus` vCPUs (or
/// more, when its first container's CPU limit needs more) and `memory_mib` plus its first
/// container's memory limit.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VmConfig {
    /// Base vCPUs of every VM.
    pub cpus: u8,
    /// Base memory of every VM, MiB: the guest kernel, the agent and page cache.
    pub memory_mib: u32,
    /// Empty drive slots each VM starts with; each distinct image layer of its containers
    /// takes one (at most 16).
    pub drive_slots: u8,
    /// Seconds a VM has to boot and answer on vsock.
    pub boot_timeout_secs: u64,
    /// Guest kernel (`vmlinux`); default: the one `guest-kernel/build.sh guest` put in the
    /// cache for this version of ward.
    pub kernel: Option<PathBuf>,
    /// Guest initrd; default: built (once, cached) around the static agent `guest_agent`.
    pub initrd: Option<PathBuf>,
    /// Statically linked `ward-agent` for the initrd; default: looked for beside the shim's
    /// executable and in the build tree (see `docs/vm-isolation.md`).
    pub guest_agent: Option<PathBuf>,
    /// `ward-vmm`; default: beside the shim's executable.
    pub vmm_path: Option<PathBuf>,
    /// Layer images and initrds; default: `$WARD_CACHE` (`~/.cache/ward`).
    pub cache_dir: Option<PathBuf>,
    /// Extra kernel command line words.
    pub kernel_args: String,
}

impl Default for VmConfig {
    fn default() -> Self {
        Self {
            cpus: 1,
            memory_mib: 128,
            drive_slots: 8,
            boot_timeout_secs: 30,
            kernel: None,
            initrd: None,
            guest_agent: None,
            vmm_path: None,
            cache_dir: None,
            kernel_args: String::new(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            // shared works on every Linux host; vm needs a KVM that can boot a Linux guest.
            isolation: Isolation::Shared,
            agent_path: None,
            run_dir: PathBuf::from("/run/ward"),
            vm: VmConfig::default(),
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
    /// Loads `path`, else `$WARD_CONFIG`, else [`DEFAULT_CONFIG_PATH`]. A missing default file
    /// means the built-in defaults; a missing file that was asked for by name is an error.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let from_env = std::env::var_os(CONFIG_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        let (path, required) = match (path, &from_env) {
            (Some(p), _) => (p, true),
            (None, Some(p)) => (p.as_path(), true),
            (None, None) => (Path::new(DEFAULT_CONFIG_PATH), false),
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
        self.agent_path
            .clone()
            .unwrap_or_else(|| beside_exe("ward-agent"))
    }

    /// `ward-vmm`: the configured one, else beside the running executable.
    pub fn vmm_binary(&self) -> PathBuf {
        self.vm
            .vmm_path
            .clone()
            .unwrap_or_else(|| beside_exe("ward-vmm"))
    }
}

/// `name` in the directory of the running executable (`name` alone if that is unknown).
pub fn beside_exe(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
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
    fn vm_table_has_defaults_and_rejects_unknown_keys() {
        let c = Config::parse("[vm]\nmemory_mib = 256\n", Path::new("x")).unwrap();
        assert_eq!(c.vm.memory_mib, 256);
        assert_eq!(c.vm.cpus, 1);
        assert_eq!(c.vm.drive_slots, 8);
        let err = Config::parse("[vm]\nmemory = 256\n", Path::new("x")).unwrap_err();
        assert!(err.to_string().contains("memory"), "{err}");
    }

    #[test]
    fn a_named_missing_file_is_an_error_the_default_one_is_not() {
        assert!(Config::load(Some(Path::new("/nonexistent/ward.toml"))).is_err());
    }
}
