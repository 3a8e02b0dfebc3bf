//! ward's containerd shim (`containerd-shim-ward-v2`): the task service, sandbox grouping,
//! and the isolation kinds behind the [`sandbox::Sandbox`] trait.

pub mod cgroups;
pub mod cli;
pub mod compare;
pub mod config;
pub mod image;
pub mod options;
pub mod rootfs;
pub mod sandbox;
pub mod shim;
pub mod task;
