//! Small conversions between containerd's task API and the agent's protocol: errors with
//! their codes, timestamps, and the agent requests more than one task call makes.

use std::time::Duration;

use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use ttrpc::Code;
use ward_agent::protocol::agent;

use crate::sandbox::Sandbox;

pub(super) fn status(code: Code, msg: impl std::fmt::Display) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, msg))
}

/// Agent errors keep their code; anything else is internal.
pub(super) fn agent_err(what: &str, e: ttrpc::Error) -> ttrpc::Error {
    match e {
        ttrpc::Error::RpcStatus(s) => {
            let code = s.code();
            // containerd treats a signal to a finished process as "not found".
            let code = if code == Code::FAILED_PRECONDITION && what.starts_with("kill") {
                Code::NOT_FOUND
            } else {
                code
            };
            status(code, format!("{what}: {}", s.message()))
        }
        other => status(Code::INTERNAL, format!("{what}: {other}")),
    }
}

pub(super) fn not_found(id: &str, exec: &str) -> ttrpc::Error {
    if exec.is_empty() {
        status(Code::NOT_FOUND, format!("task {id} not found"))
    } else {
        status(
            Code::NOT_FOUND,
            format!("exec {exec} of task {id} not found"),
        )
    }
}

pub(super) fn now() -> Timestamp {
    nanos_to_timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64),
    )
}

pub(super) fn nanos_to_timestamp(nanos: i64) -> Timestamp {
    let mut ts = Timestamp::new();
    ts.seconds = nanos / 1_000_000_000;
    ts.nanos = (nanos % 1_000_000_000) as i32;
    ts
}

/// A context without deadline, for calls that block until something happens.
pub(super) fn no_deadline() -> ttrpc::context::Context {
    ttrpc::context::Context::default()
}

pub(super) async fn remove(sb: &dyn Sandbox, id: &str) {
    let mut req = agent::RemoveContainerRequest::new();
    req.container_id = id.to_owned();
    req.timeout_ms = 0;
    let mut ctx = sb.agent().ctx();
    ctx.timeout_nano = Duration::from_secs(30).as_nanos() as i64;
    if let Err(e) = sb.agent().rpc().remove_container(ctx, &req).await {
        log::warn!("removing container {id}: {e}");
    }
}

pub(super) fn container_request(id: &str) -> agent::ContainerRequest {
    let mut r = agent::ContainerRequest::new();
    id.clone_into(&mut r.container_id);
    r
}
