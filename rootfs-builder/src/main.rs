//! `ward-rootfs`: builds the demo OCI image, read-only layer images and the guest initrd.
//! Each subcommand prints the path of what it wrote on stdout (details go to stderr).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use ward_rootfs::{demo, image, initrd, layer};

#[derive(Parser, Debug)]
#[command(name = "ward-rootfs", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Build the busybox demo image as an OCI archive for `ctr images import`.
    Image {
        /// Archive to write (default: $WARD_CACHE/images/<manifest digest>.oci.tar).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Image reference recorded in the archive.
        #[arg(long, default_value = image::DEFAULT_REFERENCE)]
        name: String,
        /// Extra host file or directory, as SRC:DST (DST absolute, inside the image).
        #[arg(long = "add", value_name = "SRC:DST")]
        adds: Vec<String>,
        /// Entrypoint; repeat for each argument.
        #[arg(long, value_name = "ARG")]
        entrypoint: Vec<String>,
        /// Default command; repeat for each argument (default: sh).
        #[arg(long, value_name = "ARG")]
        cmd: Vec<String>,
        /// Statically linked busybox to install.
        #[arg(long, default_value = image::DEFAULT_BUSYBOX)]
        busybox: PathBuf,
    },
    /// Build the demo image `ward run` and `ward compare` use: busybox plus a static
    /// ward-workload at /usr/bin/ward-workload, as ward.local/demo:latest.
    Demo {
        /// Static ward-workload (default: found next to this executable or in the
        /// workspace's target/<musl|gnu>/release, see scripts/static-bin.sh).
        #[arg(long)]
        workload: Option<PathBuf>,
        /// Archive to write (default: $WARD_CACHE/images/<manifest digest>.oci.tar).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Turn a directory or tar layer into a cached read-only layer image.
    Layer {
        /// Directory or tar (optionally gzip'd) layer.
        source: PathBuf,
        /// Filesystem of the image (default: erofs, ext4 when mkfs.erofs is missing).
        #[arg(long)]
        fs: Option<String>,
    },
    /// Build the guest initrd with a static ward-agent as /init.
    Initrd {
        /// Statically linked ward-agent (see scripts/static-agent.sh).
        #[arg(long)]
        agent: PathBuf,
        /// Where to write it (default: $WARD_CACHE/initrd/<sha256>.cpio.gz).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ward-rootfs: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Image {
            output,
            name,
            adds,
            entrypoint,
            cmd,
            busybox,
        } => {
            let adds = adds
                .iter()
                .map(|a| parse_add(a))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let mut spec = image::ImageSpec {
                reference: name,
                output,
                busybox,
                adds,
                entrypoint,
                ..image::ImageSpec::default()
            };
            if !cmd.is_empty() {
                spec.cmd = cmd;
            } else if !spec.entrypoint.is_empty() {
                // An explicit entrypoint without --cmd runs on its own, as `docker build` does.
                spec.cmd.clear();
            }
            let built = image::build(&spec).context("building the image")?;
            eprintln!(
                "image {} {} ({} bytes)",
                built.reference, built.manifest_digest, built.size
            );
            println!("{}", built.path.display());
        }
        Cmd::Demo { workload, output } => {
            let workload = match workload {
                Some(w) => w,
                None => demo::find_static_workload()?,
            };
            let built = demo::build(&workload, output).context("building the demo image")?;
            eprintln!(
                "image {} {} ({} bytes, workload {})",
                built.reference,
                built.manifest_digest,
                built.size,
                workload.display()
            );
            println!("{}", built.path.display());
        }
        Cmd::Layer { source, fs } => {
            let fs = fs.map(|f| f.parse()).transpose()?;
            let built = layer::build(&layer::LayerSpec {
                source,
                fs,
                cache_dir: None,
            })
            .context("building the layer image")?;
            eprintln!(
                "layer {} {}",
                built.fs.name(),
                if built.cached { "(cached)" } else { "(built)" }
            );
            println!("{}", built.path.display());
        }
        Cmd::Initrd { agent, output } => {
            let built = initrd::build(&initrd::InitrdSpec {
                agent,
                output,
                cache_dir: None,
            })
            .context("building the initrd")?;
            eprintln!("initrd sha256:{} ({} bytes)", built.sha256, built.size);
            println!("{}", built.path.display());
        }
    }
    Ok(())
}

fn parse_add(arg: &str) -> anyhow::Result<image::Add> {
    let Some((src, dst)) = arg.split_once(':') else {
        bail!("--add {arg:?}: expected SRC:DST");
    };
    if src.is_empty() || !dst.starts_with('/') {
        bail!("--add {arg:?}: expected SRC:DST with an absolute DST inside the image");
    }
    Ok(image::Add {
        src: src.into(),
        dst: dst.into(),
    })
}
