//! The flow control of one pass of a worker: the caller's credit, the
//! slow start of its batches, and what a resumed or restarted pass drops
//! first.

use sandgen_wire::frame::Frames;

use crate::options::{Flow, Stride};
use crate::protocol::WorkerBatch;
use crate::worker::machine::{MAX_BATCH_BYTES, MAX_BATCH_ITEMS};

/// The flow control of a pass: what the caller has not taken yet, and how
/// large the next batch may be.
#[derive(Debug)]
pub(super) struct Credit {
    /// Items and bytes produced that the caller has not consumed yet.
    pub(super) items_ahead: usize,
    pub(super) bytes_ahead: usize,
    /// How many items the next `next` call asks for (slow start).
    pub(super) batch_items: usize,
    /// Items of this pass's stream seen so far (kept or not).
    pub(super) seen: u64,
    /// The pass is run without sending its items (`SkipIteration`).
    pub(super) skip: bool,
    /// Items of the stream still to drop before the pass goes on as usual
    /// (`ResumeIteration`).
    pub(super) to_skip: u64,
    /// Before the stream's item `careful`, each `next` call asks for one
    /// item (a restarted worker finding the item that trapped).
    pub(super) careful: u64,
}

impl Credit {
    /// Slow start: the first call of a pass asks for one item, and each call
    /// twice as many as the last, so the first items come at once.
    pub(super) fn new(skip: bool) -> Credit {
        Credit {
            items_ahead: 0,
            bytes_ahead: 0,
            batch_items: 1,
            seen: 0,
            skip,
            to_skip: 0,
            careful: 0,
        }
    }

    /// A pass resumed after this worker delivered `delivered` items: the
    /// items of the stream it drops first (with a stride, those up to and
    /// with its last delivered one; the others' items after it are made
    /// and left out as in any pass, so an error among them still fails it),
    /// and at least those before the stream's item `past` (a restarted
    /// worker passing over the item that failed). Before the stream's item
    /// `careful` it asks for one item at a time.
    pub(super) fn resuming(delivered: u64, past: u64, careful: u64, flow: Flow) -> Credit {
        let mut credit = Credit::new(false);
        let position = match flow.keep {
            Some(_) if delivered == 0 => 0,
            Some(stride) => stride
                .offset
                .saturating_add((delivered - 1).saturating_mul(stride.step))
                .saturating_add(1),
            None => delivered,
        };
        credit.to_skip = position.max(past);
        credit.careful = careful;
        credit
    }

    /// Whether the caller has no room for another batch.
    pub(super) fn full(&self, flow: Flow) -> bool {
        self.items_ahead >= flow.buffer_size || self.bytes_ahead >= flow.buffer_bytes
    }

    /// The caller took this much off its queue.
    pub(super) fn returned(&mut self, items: u32, bytes: u64) {
        self.items_ahead = self.items_ahead.saturating_sub(items as usize);
        self.bytes_ahead = self
            .bytes_ahead
            .saturating_sub(usize::try_from(bytes).unwrap_or(usize::MAX));
    }

    /// The bounds of the next batch (items, bytes). A batch is at most half
    /// of the buffer, so that two are in flight: the worker produces while
    /// the caller consumes.
    pub(super) fn next_bounds(&mut self, flow: Flow) -> (u32, u32) {
        if self.seen < self.careful {
            let max_bytes =
                (flow.buffer_bytes.saturating_sub(self.bytes_ahead)).clamp(1, MAX_BATCH_BYTES);
            return (1, max_bytes as u32);
        }
        if self.skip {
            // Nothing reaches the caller: the largest batches the guest gives.
            return (MAX_BATCH_ITEMS as u32, MAX_BATCH_BYTES as u32);
        }
        let batch_cap = (flow.buffer_size / 2).clamp(1, MAX_BATCH_ITEMS);
        let batch_bytes = (flow.buffer_bytes / 2).clamp(1, MAX_BATCH_BYTES);
        let max_items = (flow.buffer_size - self.items_ahead).min(self.batch_items) as u32;
        self.batch_items = (self.batch_items * 2).min(batch_cap);
        let max_bytes = (flow.buffer_bytes - self.bytes_ahead).clamp(1, batch_bytes) as u32;
        (max_items, max_bytes)
    }

    /// This worker's share of `batch`, the next items of the pass's stream:
    /// the items that `stride` keeps, framed again.
    pub(super) fn keep(&mut self, stride: Stride, batch: WorkerBatch) -> WorkerBatch {
        let mut frames = Frames::new(batch.frames, batch.count);
        let mut kept = Vec::new();
        let mut count = 0;
        while let Some(item) = frames.next_frame() {
            if stride.keeps(self.seen) {
                kept.extend_from_slice(&(item.len() as u32).to_le_bytes());
                kept.extend_from_slice(item);
                count += 1;
            }
            self.seen += 1;
        }
        WorkerBatch {
            frames: kept,
            count,
        }
    }

    /// A batch went to the caller.
    pub(super) fn produced(&mut self, batch: &WorkerBatch) {
        self.items_ahead += batch.count as usize;
        self.bytes_ahead += batch.frames.len();
    }
}
