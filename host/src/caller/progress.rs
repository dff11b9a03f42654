//! What the passes of one iterable delivered: the numbers a
//! [`Position`](crate::Position) is made of, kept by the pass as it
//! delivers (plain stores, no read-modify-write on the per-item path), and
//! the plan of a resumed iterable's first pass.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Where each worker of a resumed iterable's first pass starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Resume {
    /// Items each worker delivered before the position.
    pub(crate) delivered: Vec<u64>,
    /// In order, the worker whose item comes next.
    pub(crate) next_worker: usize,
}

/// The counts of one iterable's passes.
pub(crate) struct Progress {
    /// Items each worker delivered in the live (or last) pass.
    delivered: Vec<AtomicU64>,
    /// In order, the worker whose item comes next in that pass.
    next_worker: AtomicUsize,
    /// The passes, changed as one (a position taken from another thread
    /// sees a pass begin or end whole).
    passes: Mutex<Passes>,
}

#[derive(Default)]
struct Passes {
    /// Passes begun, skipped ones too.
    begun: u64,
    /// A pass is live (begun, not yet dropped).
    live: bool,
    /// The last pass failed: its position stays where it failed (a pass
    /// that ended or was stopped is over, and the next one starts afresh).
    failed: bool,
    /// A resumed iterable's plan for its next pass.
    plan: Option<Resume>,
}

/// Where an iterable stands: the pass, each worker's items in it, the
/// next worker.
pub(crate) type Snapshot = (u64, Vec<u64>, usize);

impl Progress {
    pub(crate) fn new(workers: usize) -> Progress {
        Progress {
            delivered: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            next_worker: AtomicUsize::new(0),
            passes: Mutex::new(Passes::default()),
        }
    }

    fn passes(&self) -> MutexGuard<'_, Passes> {
        self.passes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets where the next pass starts: pass `begun` (the passes before it
    /// were run), each worker past the items of `resume`.
    pub(crate) fn resume_at(&self, begun: u64, resume: Resume) {
        let mut passes = self.passes();
        passes.begun = begun;
        passes.plan = Some(resume);
    }

    /// A pass begins: counted, its counts reset (to the plan's, when the
    /// iterable was resumed and this is its first pass, whose plan it
    /// returns).
    pub(crate) fn begin(&self) -> Option<Resume> {
        let mut passes = self.passes();
        let plan = passes.plan.take();
        for (worker, count) in self.delivered.iter().enumerate() {
            let start = plan.as_ref().map_or(0, |plan| plan.delivered[worker]);
            count.store(start, Ordering::Relaxed);
        }
        let next = plan.as_ref().map_or(0, |plan| plan.next_worker);
        self.next_worker.store(next, Ordering::Relaxed);
        passes.failed = false;
        passes.live = true;
        passes.begun += 1;
        plan
    }

    /// The live (or last) pass, counted from 0.
    pub(crate) fn pass(&self) -> u64 {
        self.passes().begun.saturating_sub(1)
    }

    /// The live pass failed.
    pub(crate) fn fail(&self) {
        self.passes().failed = true;
    }

    /// The live pass is dropped.
    pub(crate) fn end(&self) {
        self.passes().live = false;
    }

    /// Worker `worker` has delivered `items` in the live pass, and in
    /// order `next` gives the next item.
    pub(crate) fn delivered(&self, worker: usize, items: u64, next: usize) {
        self.delivered[worker].store(items, Ordering::Relaxed);
        self.next_worker.store(next, Ordering::Relaxed);
    }

    /// Where the iterable stands: in the live pass or the one that failed,
    /// or before the next one; in a pass, before the `unused` items the
    /// caller holds (runs of `(worker, items)` in delivery order).
    pub(crate) fn snapshot_before(&self, unused: &[(usize, usize)]) -> Snapshot {
        let passes = self.passes();
        if passes.live || passes.failed {
            let mut delivered: Vec<u64> = self
                .delivered
                .iter()
                .map(|count| count.load(Ordering::Relaxed))
                .collect();
            let mut next = self.next_worker.load(Ordering::Relaxed);
            for &(worker, items) in unused {
                if let Some(count) = delivered.get_mut(worker) {
                    *count = count.saturating_sub(items as u64);
                }
            }
            if let Some(&(first, _)) = unused.iter().find(|&&(w, n)| n > 0 && w < delivered.len()) {
                // In order, the first unused item comes next again.
                next = first;
            }
            return (passes.begun.saturating_sub(1), delivered, next);
        }
        match &passes.plan {
            Some(plan) => (passes.begun, plan.delivered.clone(), plan.next_worker),
            None => (passes.begun, vec![0; self.delivered.len()], 0),
        }
    }
}
