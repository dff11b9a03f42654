//! The worker protocol: commands from the caller, statuses from the worker
//! (ARCHITECTURE.md has the state diagram). The same messages go through
//! crossbeam channels for a worker thread and, framed, over pipes for a
//! worker process (`worker/process/wire.rs`).

use serde::{Deserialize, Serialize};

use crate::error::Error;

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
    /// Run a new pass to its end (from Stand By) without sending its items:
    /// the worker answers `IterationStarted`, an empty `Items` batch for
    /// each batch it drops (so the caller hears from it), and
    /// `IterationFinished`. A restarted worker replaying a pass that had
    /// restarts first passes over the items before where the last of them
    /// resumed (`delivered`, `past` as in `ResumeIteration`), as that pass
    /// did; `careful` as in `ResumeIteration`.
    SkipIteration {
        delivered: u64,
        past: u64,
        careful: u64,
    },
    /// Start a new pass (from Stand By) past the first `delivered` items the
    /// worker delivered before a position: the worker produces them and
    /// drops them (answering with an empty `Items` batch for each batch it
    /// drops, as `SkipIteration`), then goes on as after `StartIteration`.
    /// A restarted worker also drops the stream's items before `past` (the
    /// item that failed, passed over), and asks for one item at a time
    /// before the stream's item `careful` (to find the item a trap in a
    /// batch of several was at).
    ResumeIteration {
        delivered: u64,
        past: u64,
        careful: u64,
    },
}

/// Worker → caller.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Status {
    InitializationSucceeded,
    InitializationFailed(Error),
    IterationStarted,
    /// Items of the current pass (SPDL's ITERATOR_SUCCESS), a batch at a time.
    Items(WorkerBatch),
    IteratorFailed(Error),
    IterationFinished,
    UnexpectedCommand(Command),
    /// The worker runs and has the plugin loaded (a worker process has
    /// started and read its compiled component); initialization begins.
    /// The caller's inactivity timeout restarts here, so that it counts
    /// the plugin's time, not the start of a worker process.
    Loaded,
    /// Sent just before `IteratorFailed` when a `next` call of the pass
    /// failed: `item`, the index in the pass's stream of the first item the
    /// call was to give; `asked`, how many it asked for (items before a
    /// plugin's error come in the call before, so for an error, and for a
    /// trap in a call that asked for one, `item` is the one that failed).
    /// Last, so that the others keep their tags on the wire.
    FailedAt {
        item: u64,
        asked: u32,
        /// The call was dropping items before where the worker resumed.
        dropping: bool,
    },
}

/// A batch of items as the worker sends it: frames checked by
/// [`sandgen_wire::frame::validate_batch`], and their count.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct WorkerBatch {
    #[serde(with = "serde_bytes")]
    pub(crate) frames: Vec<u8>,
    pub(crate) count: u32,
}
