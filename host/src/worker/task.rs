//! What a worker runs, and the caller's ends of its queues.

use crossbeam_channel::{Receiver, Sender};
use sandgen_wire::Encoding;
use serde::{Deserialize, Serialize};

use crate::options::{Flow, Grants, Limits};
use crate::protocol::{Command, Status};

/// What a worker runs, apart from the component itself: the same in both
/// flavours (a worker process receives it in its handshake).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Task {
    pub(crate) generator: String,
    pub(crate) encoding: Encoding,
    #[serde(with = "serde_bytes")]
    pub(crate) config: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub(crate) args: Vec<u8>,
    pub(crate) grants: Grants,
    pub(crate) limits: Limits,
    pub(crate) flow: Flow,
}

/// A name for a thread of a worker of `generator`: the caller chose the
/// name, and a thread name may hold no NUL (std panics on one).
pub(crate) fn thread_name(role: &str, generator: &str) -> String {
    format!("sandgen-{role}{}", generator.replace('\0', "?"))
}

/// The caller's ends of a worker's queues: commands in, statuses out.
pub(crate) struct Queues {
    pub(crate) commands: Sender<Command>,
    pub(crate) statuses: Receiver<Status>,
}

/// The worker's ends of its queues.
pub(crate) struct WorkerQueues {
    pub(crate) commands: Receiver<Command>,
    pub(crate) statuses: Sender<Status>,
}

/// Where a worker's statuses go: the caller's queue for a worker thread;
/// in a worker process, straight to the caller's pipe (and shared region),
/// from the worker's own thread.
pub(crate) trait Reports {
    /// Reports `status`; `false` when nobody listens any more.
    fn report(&self, status: Status) -> bool;
}

impl Reports for Sender<Status> {
    fn report(&self, status: Status) -> bool {
        self.send(status).is_ok()
    }
}

/// A fresh pair of queues (unbounded: the back-pressure is the credit the
/// caller returns with `Command::Consumed`, not the queue's capacity).
pub(crate) fn queues() -> (Queues, WorkerQueues) {
    let (commands, command_rx) = crossbeam_channel::unbounded();
    let (status_tx, statuses) = crossbeam_channel::unbounded();
    (
        Queues { commands, statuses },
        WorkerQueues {
            commands: command_rx,
            statuses: status_tx,
        },
    )
}
