//! What a pass hands over: batches of encoded items.

use sandgen_wire::Encoding;
use sandgen_wire::frame::{Frames, FramesView};
use serde::Deserialize;

use crate::codec;
use crate::error::Error;
use crate::worker::Recycler;

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
    /// Which worker gave the items: runs of `(worker, items)`, in order.
    workers: Vec<(usize, usize)>,
    /// Where the buffer goes once the batch is dropped (a worker
    /// process's reader fills it again).
    home: Option<Recycler>,
}

impl Batch {
    /// A batch of items merged from several workers, `workers` saying
    /// whose each run of them is.
    pub(crate) fn merged(frames: Frames, workers: Vec<(usize, usize)>) -> Batch {
        Batch {
            frames,
            workers,
            home: None,
        }
    }

    /// A batch of `worker`'s items, whose buffer goes back to `home` when
    /// it is dropped.
    pub(crate) fn returning(worker: usize, frames: Frames, home: Option<Recycler>) -> Batch {
        let items = frames.left() as usize;
        let workers = if items > 0 {
            vec![(worker, items)]
        } else {
            Vec::new()
        };
        Batch {
            frames,
            workers,
            home,
        }
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

    /// Which worker gave the items, in order: runs of `(worker, items)`
    /// whose items add up to [`len`](Batch::len). A batch read as it comes
    /// (unordered, or with one worker) is one worker's; in order with
    /// several workers, each item is the next worker's.
    ///
    /// A caller that holds items it was handed but has not used yet gives
    /// their runs to [`Iterable::position_before`](crate::Iterable::position_before).
    pub fn workers(&self) -> &[(usize, usize)] {
        &self.workers
    }

    /// Each item's encoded bytes, without copying them.
    pub fn items(&self) -> BatchItems<'_> {
        BatchItems {
            frames: self.frames.view(),
        }
    }

    /// Each item decoded as `T`, which may borrow from the batch: an
    /// [`Array`](crate::Array)'s data is then a view of the batch's bytes
    /// (in bincode), with no copy. `encoding` is the iterable's
    /// ([`Batches::encoding`](crate::Batches::encoding)).
    ///
    /// An item that is not a `T` is an [`ErrorKind::Decode`](crate::ErrorKind::Decode) error.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), sandgen::Error> {
    /// use sandgen::{Array, Dtype, Engine};
    ///
    /// let plugin = Engine::new()?.load("images.wasm")?;
    /// let iterable = std::sync::Arc::new(plugin.generator("images").args(&16u64).build()?);
    /// let mut batches = iterable.batches()?;
    /// while let Some(batch) = batches.next_batch() {
    ///     let batch = batch?;
    ///     for item in batch.decode::<(Array<'_>, u64)>(batches.encoding()) {
    ///         let (image, label) = item?;
    ///         assert_eq!(image.dtype(), Dtype::Uint8);
    ///         println!("{label}: {:?} in {} bytes", image.shape(), image.data().len());
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn decode<'a, T: Deserialize<'a> + 'a>(
        &'a self,
        encoding: Encoding,
    ) -> impl Iterator<Item = Result<T, Error>> + 'a {
        self.items()
            .map(move |item| codec::decode_item(encoding, item))
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        if let Some(home) = self.home.take() {
            home.recycle(std::mem::take(&mut self.frames).into_buf());
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
