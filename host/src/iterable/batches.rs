//! [`Batches`]: the owned pass, which holds its share of the iterable (so
//! a language binding can keep it in an object of its own) and yields
//! whole batches.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use sandgen_wire::Encoding;

use crate::caller::Workers;
use crate::error::Error;
use crate::iterable::Iterable;
use crate::pass::{Batch, NextBatch, PassCore};

/// The iterable a [`Batches`] holds, seen as its workers.
struct Owned(Arc<Iterable>);

impl Deref for Owned {
    type Target = Workers;

    fn deref(&self) -> &Workers {
        self.0.caller()
    }
}

/// One pass over an [`Iterable`], yielding whole batches of encoded items;
/// made by [`Iterable::batches`].
///
/// It holds its share of the iterable, so it may outlive the caller's
/// handle; [`Iterable::close`] ends it with
/// [`ErrorKind::Closed`](crate::ErrorKind::Closed). Dropping it before the
/// end stops the workers' production at once, as for [`Pass`](crate::Pass).
pub struct Batches {
    core: PassCore<Owned>,
}

impl std::fmt::Debug for Batches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batches")
            .field("generator", &self.core.workers.generator())
            .finish_non_exhaustive()
    }
}

impl Batches {
    pub(crate) fn start(iterable: Arc<Iterable>) -> Result<Self, Error> {
        Ok(Batches {
            core: PassCore::start(Owned(iterable), false, false)?,
        })
    }

    /// A pass that the workers run without sending its items: it yields no
    /// batch, and [`NextBatch::End`] once every worker ran it to its end.
    pub(crate) fn skip(iterable: Arc<Iterable>) -> Result<Self, Error> {
        Ok(Batches {
            core: PassCore::start(Owned(iterable), false, true)?,
        })
    }

    /// The next batch, waiting as long as the inactivity timeout allows;
    /// `None` at the end of the pass or after an error.
    pub fn next_batch(&mut self) -> Option<Result<Batch, Error>> {
        match self.core.next_batch(None) {
            Ok(NextBatch::Batch(batch)) => Some(Ok(batch)),
            Ok(NextBatch::End | NextBatch::Pending) => None,
            Err(error) => Some(Err(error)),
        }
    }

    /// The next batch, waiting at most `wait` for it (less when the
    /// inactivity timeout ends first, which is an
    /// [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) error as in
    /// [`next_batch`](Self::next_batch)). The inactivity timeout counts the
    /// time spent waiting, across calls. For callers that must look up
    /// between waits (a language binding checking for a user's interrupt).
    ///
    /// # Errors
    ///
    /// The errors of the pass, as for [`Iterable::iter`].
    pub fn next_batch_within(&mut self, wait: Duration) -> Result<NextBatch, Error> {
        self.core.next_batch(Some(wait))
    }

    /// Ends the pass early, as dropping it does: the workers stop producing.
    pub fn stop(&mut self) {
        self.core.stop();
    }

    /// The caller cannot use the last items it was handed, `unused` (runs
    /// of `(worker, items)` in delivery order, as
    /// [`Batch::workers`](crate::Batch::workers) gives them): an item that
    /// does not decode, and those it held after it. The pass fails there:
    /// the workers stop, and the iterable's
    /// [`position`](Iterable::position) stays before those items, as after
    /// a plugin's error at the first of them.
    pub fn refuse(&mut self, unused: &[(usize, usize)]) {
        self.core.refuse(unused);
    }

    /// The iterable this pass runs over.
    pub fn iterable(&self) -> &Iterable {
        &self.core.workers.0
    }

    /// The encoding of the items.
    pub fn encoding(&self) -> Encoding {
        self.core.workers.encoding()
    }
}
