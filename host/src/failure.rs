//! What a pass does when one of its workers fails ([`OnFailure`]), and the
//! record of each failure it survived ([`Failure`]).

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, ErrorKind};
use crate::text::{cut_text, escape_text};

/// How many times a pass restarts its workers, by default, before a
/// failure ends it.
pub const DEFAULT_MAX_RESTARTS: u32 = 3;

/// What a pass does when one of its workers fails.
///
/// Parses from and prints as `stop`, `restart` or `skip`:
///
/// ```
/// use sandgen::OnFailure;
///
/// assert_eq!("skip".parse::<OnFailure>().unwrap(), OnFailure::Skip);
/// assert_eq!(OnFailure::default().to_string(), "stop");
/// assert!("retry".parse::<OnFailure>().is_err());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OnFailure {
    /// The first failure of any worker ends the pass with its error.
    #[default]
    Stop,
    /// A worker that died, timed out, trapped, hit its memory or fuel
    /// limit, or whose plugin reported an error is started afresh (a new
    /// instance; a new process in process isolation) and resumed where it
    /// stood: no item is lost or given twice. The other workers keep
    /// going. At most [`max_restarts`](crate::IterableBuilder::max_restarts)
    /// times per pass.
    Restart,
    /// As [`Restart`](OnFailure::Restart), but after a plugin error or a
    /// trap (or the memory limit) while producing an item, the new worker
    /// resumes after that item, which is left out. A plugin with the skip
    /// of `wit/resume.wit` passes over it without producing it again; one
    /// without replays the pass, meets the same failure, and the pass ends
    /// once its restarts are spent.
    Skip,
}

impl OnFailure {
    /// Every mode, in the order the docs list them.
    pub const ALL: [OnFailure; 3] = [OnFailure::Stop, OnFailure::Restart, OnFailure::Skip];
}

impl fmt::Display for OnFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OnFailure::Stop => "stop",
            OnFailure::Restart => "restart",
            OnFailure::Skip => "skip",
        })
    }
}

impl FromStr for OnFailure {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        OnFailure::ALL
            .into_iter()
            .find(|mode| mode.to_string() == s)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "unknown on_failure `{}`: use `stop`, `restart` or `skip`",
                        escape_text(cut_text(s, 64).as_bytes())
                    ),
                )
            })
    }
}

/// Whether a failure of this kind may be restarted: the worker's own end
/// (a plugin error, a trap, a limit, a timeout, a death), not a broken
/// contract or the caller's doing.
pub(crate) fn restartable(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::IterationFailed
            | ErrorKind::Trap
            | ErrorKind::StackOverflow
            | ErrorKind::MemoryLimit
            | ErrorKind::FuelExhausted
            | ErrorKind::Timeout
            | ErrorKind::WorkerDied
    )
}

/// Whether a failure of this kind is the item's own, which
/// [`OnFailure::Skip`] passes over: the plugin's error, or a trap while
/// producing it.
pub(crate) fn item_failure(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::IterationFailed
            | ErrorKind::Trap
            | ErrorKind::StackOverflow
            | ErrorKind::MemoryLimit
    )
}

/// A failure a pass survived: the worker was restarted, or restarted past
/// the item that failed ([`Iterable::failures`](crate::Iterable::failures)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub(crate) worker: usize,
    pub(crate) pass: u64,
    pub(crate) position: u64,
    pub(crate) skipped: Option<u64>,
    pub(crate) error: Error,
    /// Where the new worker resumed: the worker's items delivered, and the
    /// stream's items it passed over (`past`), for a later restart that
    /// replays this pass.
    pub(crate) resumed: (u64, u64),
}

impl Failure {
    /// The worker that failed, by index.
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// The pass it failed in, counted from 0 over the iterable's life.
    pub fn pass(&self) -> u64 {
        self.pass
    }

    /// How many items the worker had delivered in that pass when it
    /// failed: where the new worker resumed (with [`skipped`](Self::skipped),
    /// after the item it passed over).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// With [`OnFailure::Skip`], the item passed over: its index in the
    /// worker's stream of the pass (with items sharding, the stream all
    /// workers produce); `None` when the worker was resumed where it stood.
    pub fn skipped(&self) -> Option<u64> {
        self.skipped
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.error.kind()
    }

    /// The error, as the pass would have ended with it.
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// `"restart"` or `"skip"`: what the pass did.
    pub fn action(&self) -> &'static str {
        if self.skipped.is_some() {
            "skip"
        } else {
            "restart"
        }
    }
}

/// One line, every byte the plugin chose escaped:
///
/// `worker 1 restarted in pass 0 after 41 items (trap): ...`
impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let done = match self.skipped {
            Some(item) => format!("restarted past item {item}"),
            None => "restarted".to_owned(),
        };
        write!(
            f,
            "worker {} {done} in pass {} after {} items ({}): {}",
            self.worker,
            self.pass,
            self.position,
            self.error.kind().name(),
            escape_text(self.error.to_string().as_bytes())
        )
    }
}
