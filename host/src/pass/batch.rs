//! What a pass hands over: batches of encoded items.

use sandgen_wire::frame::{Frames, FramesView};

/// What [`Batches::next_batch_within`](crate::Batches::next_batch_within) found.
#[derive(Debug)]
pub enum NextBatch {
    /// A batch of items.
    Batch(Batch),
    /// The pass ended.
    End,
    /// Nothing arrived in the time given; the pass goes on (ask again).
    Pending,
}

/// One batch of encoded items, in the order they are delivered.
#[derive(Debug, Default)]
pub struct Batch {
    frames: Frames,
}

impl Batch {
    pub(crate) fn new(frames: Frames) -> Batch {
        Batch { frames }
    }

    /// How many items the batch holds.
    pub fn len(&self) -> usize {
        self.frames.left() as usize
    }

    /// Whether the batch holds no item.
    pub fn is_empty(&self) -> bool {
        self.frames.left() == 0
    }

    /// The batch's size in bytes, framing included.
    pub fn bytes(&self) -> usize {
        self.frames.bytes()
    }

    /// Each item's encoded bytes, without copying them.
    pub fn items(&self) -> BatchItems<'_> {
        BatchItems {
            frames: self.frames.view(),
        }
    }
}

/// The items of a [`Batch`]; made by [`Batch::items`].
#[derive(Debug)]
pub struct BatchItems<'a> {
    frames: FramesView<'a>,
}

impl<'a> Iterator for BatchItems<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        self.frames.next_frame()
    }
}
