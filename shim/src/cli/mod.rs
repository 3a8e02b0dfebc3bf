//! The `ward` command line: `ward run` and the commands for detached containers, built on
//! the launch library (the same sandbox code the shim uses, without containerd).

pub mod launch;
pub mod spec;

pub use launch::{Launch, LaunchError, Running, launch};
