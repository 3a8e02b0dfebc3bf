//! Task events for containerd (`/tasks/create`, `/tasks/exit`, …), published through
//! containerd's ttrpc event service in the order the task service produces them.

use containerd_shim::publisher::RemotePublisher;
use containerd_shim_protos::protobuf::MessageDyn;
use containerd_shim_protos::topics;
use containerd_shim_protos::ttrpc::context::Context;

pub use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};

/// Publishes events in containerd's namespace; a failure is logged, never fatal to the task.
pub struct Events {
    publisher: RemotePublisher,
    namespace: String,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// An event and its topic.
pub trait Topic: MessageDyn {
    const TOPIC: &'static str;
}

macro_rules! topic {
    ($($t:ty => $topic:expr),* $(,)?) => {
        $(impl Topic for $t { const TOPIC: &'static str = $topic; })*
    };
}

topic! {
    TaskCreate => topics::TASK_CREATE_EVENT_TOPIC,
    TaskStart => topics::TASK_START_EVENT_TOPIC,
    TaskExit => topics::TASK_EXIT_EVENT_TOPIC,
    TaskDelete => topics::TASK_DELETE_EVENT_TOPIC,
    TaskExecAdded => topics::TASK_EXEC_ADDED_EVENT_TOPIC,
    TaskExecStarted => topics::TASK_EXEC_STARTED_EVENT_TOPIC,
    TaskPaused => topics::TASK_PAUSED_EVENT_TOPIC,
    TaskResumed => topics::TASK_RESUMED_EVENT_TOPIC,
    TaskOOM => topics::TASK_OOM_EVENT_TOPIC,
}

impl Events {
    pub fn new(publisher: RemotePublisher, namespace: &str) -> Self {
        Self {
            publisher,
            namespace: namespace.to_owned(),
        }
    }

    pub async fn publish<E: Topic + 'static>(&self, event: E) {
        if let Err(e) = self
            .publisher
            .publish(
                Context::default(),
                E::TOPIC,
                &self.namespace,
                Box::new(event),
            )
            .await
        {
            log::warn!("publishing {}: {e}", E::TOPIC);
        }
    }
}
