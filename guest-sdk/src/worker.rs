//! Which worker of an iterable this instance is: the host runs one instance
//! per worker and tells each its index, the number of workers and the seed,
//! in environment variables.

/// This instance's place among the workers of its iterable.
///
/// ```
/// # use sandgen_guest::Worker;
/// // Shard the input: worker `id` of `count` takes every `count`-th line.
/// let worker = Worker { id: 1, count: 3, seed: None };
/// let mine: Vec<u32> = worker.shard(0..10).collect();
/// assert_eq!(mine, [1, 4, 7]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Worker {
    /// This worker's index, from 0 (`SANDGEN_WORKER_ID`).
    pub id: u32,
    /// How many workers the iterable runs (`SANDGEN_NUM_WORKERS`).
    pub count: u32,
    /// The iterable's seed, when the caller gave one (`SANDGEN_SEED`). The
    /// guest's random sources are then already seeded from it; use it to
    /// derive anything else that must be reproducible.
    pub seed: Option<u64>,
}

impl Worker {
    /// This worker's share of `items`: every `count`-th item, from the
    /// `id`-th. With the caller's default order (round-robin by worker),
    /// the workers' items then come in the order of `items`.
    pub fn shard<I: IntoIterator>(
        &self,
        items: I,
    ) -> std::iter::StepBy<std::iter::Skip<I::IntoIter>> {
        items
            .into_iter()
            .skip(self.id as usize)
            .step_by(self.count.max(1) as usize)
    }
}

/// This instance's worker info, read from its environment; worker 0 of 1
/// without a seed when the host did not set them.
pub fn worker() -> Worker {
    let read = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    Worker {
        id: read("SANDGEN_WORKER_ID").map_or(0, |v| v as u32),
        count: read("SANDGEN_NUM_WORKERS").map_or(1, |v| (v as u32).max(1)),
        seed: read("SANDGEN_SEED"),
    }
}
