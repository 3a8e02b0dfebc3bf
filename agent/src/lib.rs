//! ward-agent: the container library and the AgentService that exposes it.
//!
//! The same code runs as PID 1 in a ward guest (reached over vsock) and on the host
//! (reached over a Unix socket). See `docs/agent.md` and `docs/container.md`.

pub mod client;
pub mod container;
pub mod guest;
pub mod logger;
pub mod protocol;
pub mod reaper;
pub mod server;
