//! The worker protocol (design §2): commands from the caller, statuses from
//! the worker. The same messages go through crossbeam channels for a thread
//! worker and, serialized, over pipes for a process worker.

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::codec::Batch;

/// Caller → worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Command {
    /// Start a new pass (from Stand By).
    StartIteration,
    /// End the current pass; the worker answers `IterationFinished`.
    StopIteration,
    /// End the worker quietly.
    Abort,
    /// Back-pressure credit: the caller has taken this many items (and
    /// bytes) of the current pass off the queue, so the worker may produce
    /// that much more.
    Consumed { items: u32, bytes: u64 },
}

/// Worker → caller.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Status {
    InitializationSucceeded,
    InitializationFailed(Error),
    IterationStarted,
    /// Items of the current pass (SPDL's ITERATOR_SUCCESS), a batch at a time.
    Items(Batch),
    IteratorFailed(Error),
    IterationFinished,
    UnexpectedCommand(Command),
}
