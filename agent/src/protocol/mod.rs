//! The agent protocol (`proto/agent.proto`, package `ward.agent.v1`): generated messages and
//! ttrpc bindings shared by the agent's server and the shim's client, plus the framing of
//! the stdio stream connections that carry process I/O beside the RPCs.

pub mod address;
pub mod stream;

/// Generated rust-protobuf messages.
#[allow(warnings, clippy::all, clippy::pedantic)]
pub mod agent {
    include!(concat!(env!("OUT_DIR"), "/gen/agent.rs"));
}

/// Generated ttrpc client and server bindings.
#[allow(warnings, clippy::all, clippy::pedantic)]
pub mod agent_ttrpc {
    include!(concat!(env!("OUT_DIR"), "/gen/agent_ttrpc.rs"));
}

/// Bumped when a message or RPC changes incompatibly; the shim checks it against `Version`.
pub const PROTOCOL_VERSION: u32 = 1;

/// vsock port of the RPC server in a guest.
pub const RPC_VSOCK_PORT: u32 = 1024;
/// vsock port of the stdio stream listener in a guest.
pub const STREAM_VSOCK_PORT: u32 = 1025;
