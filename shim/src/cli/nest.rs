//! `ward run --isolation vm` where this host's KVM cannot boot Linux (PVM): the same
//! `ward run` runs inside the nested harness (an emulated machine with a real KVM), and
//! its output and exit code become ours. On hosts with VT-x/AMD-V none of this runs.

use std::io::Write;

use super::CliError;
use super::run::RunArgs;
use crate::config::Config;
use crate::image::{self, ImageRef};

/// Set inside the nested machine, so the inner `ward run` does not nest again.
const IN_NEST_ENV: &str = "WARD_IN_NEST";

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

/// Runs `ward run args` inside the nested harness; returns the inner exit code.
pub fn rerun(args: &RunArgs, config: &Config) -> Result<i32, CliError> {
    eprintln!("{NOTICE}");
    if args.detach || args.tty || args.interactive {
        return Err(CliError::Usage {
            what: "flag",
            value: if args.detach { "-d" } else { "-i/-t" }.into(),
            why: "not available with --isolation vm through the nested harness (it lives for one command, without a terminal)".into(),
        });
    }
    // The host's / is read-only in the nested machine: load (and cache) the image here, so
    // the inner run only reads. TODO: the config's cache_dir once `Config` has it.
    let _ = config;
    let loaded =
        image::load(&ImageRef::parse(&args.image), None).map_err(|e| CliError::Launch(e.into()))?;
    let exe = std::env::current_exe().map_err(|source| CliError::Io {
        what: "finding the ward executable".into(),
        source,
    })?;
    let mut cmd = vec![exe.display().to_string()];
    cmd.extend(argv(args, &loaded.path.display().to_string()));
    let mut opts = ward_nest::Options {
        env: vec![(IN_NEST_ENV.into(), "1".into())],
        label: format!("ward-run-{}", std::process::id()),
        ..ward_nest::Options::default()
    };
    // The config file may sit under a path the nested machine covers with a tmpfs.
    if let Some(dir) = args.config.as_ref().and_then(|c| c.parent()) {
        opts.visible.push(dir.to_owned());
    }
    let out = ward_nest::run(&cmd, &opts).map_err(|e| CliError::Nest(e.to_string()))?;
    let _ = std::io::stdout().write_all(&out.stdout);
    let _ = std::io::stderr().write_all(&out.stderr);
    Ok(out.status)
}

#[cfg(test)]
mod tests {
    use super::*;

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
