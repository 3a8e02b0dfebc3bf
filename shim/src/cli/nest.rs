//! `ward run --isolation vm` where this host's KVM cannot boot Linux (PVM): the same
//! `ward run` runs inside the nested harness (an emulated machine with a real KVM), and
//! its output and exit code become ours. On hosts with VT-x/AMD-V none of this runs.

use std::io::Write;

use std::path::Path;

use super::CliError;
use super::run::RunArgs;
use crate::config::DEFAULT_CONFIG_PATH;
use crate::image::{self, ImageRef};

/// Set inside the nested machine, so the inner `ward run` does not nest again.
pub const IN_NEST_ENV: &str = "WARD_IN_NEST";

pub const NOTICE: &str = "ward: this host's KVM cannot boot Linux (PVM); running the VM inside the nested harness (times are emulated)";

/// `true` when vm isolation must go through the nested harness here.
pub fn needed() -> bool {
    ward_nest::host_kvm_is_pvm() && std::env::var_os(IN_NEST_ENV).is_none()
}

/// The `ward run` argv for `args` with `image` in place of the image argument.
fn argv(args: &RunArgs, image: &str) -> Vec<String> {
    let mut v = vec!["run".to_owned(), "--isolation".into(), "vm".into()];
    let mut opt = |flag: &str, value: &Option<String>| {
        if let Some(x) = value {
            v.push(flag.to_owned());
            v.push(x.clone());
        }
    };
    opt("--cpus", &args.cpus);
    opt("--memory", &args.memory);
    opt("--pids-limit", &args.pids_limit);
    opt("--name", &args.name);
    opt(
        "--config",
        &args.config.as_ref().map(|c| c.display().to_string()),
    );
    for e in &args.env {
        v.extend(["-e".to_owned(), e.clone()]);
    }
    for b in &args.volumes {
        v.extend(["-v".to_owned(), b.clone()]);
    }
    v.push(image.to_owned());
    if !args.command.is_empty() {
        v.push("--".into());
        v.extend(args.command.iter().cloned());
    }
    v
}

/// Where the inner run keeps sandboxes and layer images: tmpfs in the nested machine (the
/// host's / is read-only there).
const INNER_RUN_DIR: &str = "/run/ward";
const INNER_CACHE_DIR: &str = "/var/lib/ward-cache";

/// The user's config (or none) with the run dir and the vm cache moved to the nested
/// machine's tmpfs; everything else (kernel, sizing, binaries) stays as given.
fn inner_config(path: Option<&Path>) -> Result<String, CliError> {
    let path = path.unwrap_or(Path::new(DEFAULT_CONFIG_PATH));
    let mut table: toml::Table = match std::fs::read_to_string(path) {
        Ok(text) => text
            .parse()
            .map_err(|e| CliError::Nest(format!("{}: {e}", path.display())))?,
        Err(_) => toml::Table::new(),
    };
    table.insert("run_dir".into(), INNER_RUN_DIR.into());
    let vm = table
        .entry("vm")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(vm) = vm {
        vm.insert("cache_dir".into(), INNER_CACHE_DIR.into());
    }
    toml::to_string(&table).map_err(|e| CliError::Nest(e.to_string()))
}

/// Runs `ward run args` inside the nested harness; returns the inner exit code.
pub fn rerun(args: &RunArgs) -> Result<i32, CliError> {
    eprintln!("{NOTICE}");
    if args.detach || args.tty || args.interactive {
        return Err(CliError::Usage {
            what: "flag",
            value: if args.detach { "-d" } else { "-i/-t" }.into(),
            why: "not available with --isolation vm through the nested harness (it lives for one command, without a terminal)".into(),
        });
    }
    let io = |what: &str| {
        let what = what.to_owned();
        move |source| CliError::Io { what, source }
    };
    // The image's archive or layout as a host path the nested machine can read.
    let image = match ImageRef::parse(&args.image) {
        ImageRef::Demo => image::demo_image().map_err(|e| CliError::Launch(e.into()))?,
        ImageRef::Path(p) => {
            std::fs::canonicalize(&p).map_err(io(&format!("image {}", p.display())))?
        }
    };
    let scratch =
        ward_rootfs::cache::subdir(None, "nest-run").map_err(|e| CliError::Nest(e.to_string()))?;
    let config = scratch.join(format!("ward-run-{}.toml", std::process::id()));
    std::fs::write(&config, inner_config(args.config.as_deref())?)
        .map_err(io(&format!("writing {}", config.display())))?;
    let mut inner = args.clone();
    inner.config = Some(config.clone());
    let exe = std::env::current_exe().map_err(io("finding the ward executable"))?;
    let mut cmd = vec![exe.display().to_string()];
    cmd.extend(argv(&inner, &image.display().to_string()));
    let mut opts = ward_nest::Options {
        env: vec![(IN_NEST_ENV.into(), "1".into())],
        label: format!("ward-run-{}", std::process::id()),
        ..ward_nest::Options::default()
    };
    // Under a path the nested machine covers with a tmpfs, these would be hidden.
    opts.visible.extend(
        [image.parent(), Some(scratch.as_path())]
            .into_iter()
            .flatten()
            .map(Path::to_owned),
    );
    let out = ward_nest::run(&cmd, &opts);
    let _ = std::fs::remove_file(&config);
    let out = out.map_err(|e| CliError::Nest(e.to_string()))?;
    let _ = std::io::stdout().write_all(&out.stdout);
    let _ = std::io::stderr().write_all(&out.stderr);
    Ok(out.status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inner_config_moves_run_and_cache_dirs_and_keeps_the_rest() {
        let t = tempfile::tempdir().unwrap();
        let user = t.path().join("ward.toml");
        std::fs::write(
            &user,
            "isolation = \"vm\"\nrun_dir = \"/srv/ward\"\n[vm]\ncpus = 2\n",
        )
        .unwrap();
        let text = inner_config(Some(&user)).unwrap();
        let c = crate::config::Config::parse(&text, &user).unwrap();
        assert_eq!(c.run_dir, Path::new(INNER_RUN_DIR));
        assert_eq!(c.vm.cache_dir.as_deref(), Some(Path::new(INNER_CACHE_DIR)));
        assert_eq!(c.vm.cpus, 2);
        assert_eq!(c.isolation, crate::config::Isolation::Vm);
        let none = inner_config(Some(&t.path().join("missing.toml"))).unwrap();
        assert!(crate::config::Config::parse(&none, &user).is_ok(), "{none}");
    }

    #[test]
    fn the_inner_command_keeps_every_flag_and_the_resolved_image() {
        let args = RunArgs {
            memory: Some("64m".into()),
            env: vec!["A=1".into()],
            volumes: vec!["/a:/b:ro".into()],
            image: "demo".into(),
            command: vec!["echo".into(), "-n".into()],
            ..RunArgs::default()
        };
        assert_eq!(
            argv(&args, "/cache/x.oci.tar").join(" "),
            "run --isolation vm --memory 64m -e A=1 -v /a:/b:ro /cache/x.oci.tar -- echo -n"
        );
    }
}
