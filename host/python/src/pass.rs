//! `Pass`: one pass over an iterable, a Python iterator over its batches.
//! Batches are waited for and decoded without the GIL (see [`WAIT`]); only
//! making the Python objects needs it.

use std::collections::VecDeque;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use sandgen::{Batch, Batches, ErrorKind, NextBatch};

use crate::decode::{self, Decoder, Value};
use crate::errors;
use crate::json;
use crate::output::Output;
use crate::stack::{Stacked, Stacker};
use crate::wait::WAIT;

/// One pass: a Python iterator over the pass's batches, each an iterator
/// over a `list` of items made in one go (the Python side chains them into
/// items with `itertools.chain.from_iterable`, so a `for` loop pays no
/// native call per item). With `batch_size`, each element of the list is
/// one stacked batch of items. Dropping it stops the worker's pass.
///
/// Its [`state`](Pass::state) is the iterable's position before the items
/// handed to Python and not used yet: those left in the current list (its
/// iterator's length hint, no cost per item) and those in the stacker.
#[pyclass(module = "sandgen._native", weakref)]
pub(crate) struct Pass {
    /// `None` once the pass failed or was stopped. A pass that ended keeps
    /// it until closed or dropped: its position is then at its end (all
    /// its items), where `state` of a pass that ended is taken.
    batches: Option<Batches>,
    /// The pass ended: no more batches.
    ended: bool,
    iterable: Arc<sandgen::Iterable>,
    /// Which workers gave the items handed over and perhaps not used yet,
    /// as runs of `(worker, items)`: the current list's `list_items`
    /// first, then those in the stacker.
    held: VecDeque<(usize, usize)>,
    list_items: usize,
    /// Items in each element of the current list.
    per_element: usize,
    /// The iterator over the current list, as handed out.
    current: Option<Py<PyAny>>,
    decoding: Arc<Decoding>,
    /// Items received before the current worker batch.
    received: u64,
    /// `batch_size`'s batch being filled.
    stacker: Option<Stacker>,
    /// An error met after some items of a batch: raised once those items
    /// are out.
    pending: Option<PyErr>,
    /// The guests' output lines, handed on between waits.
    output: Arc<Output>,
}

/// How a pass's items become Python objects: the decoder, the item type's
/// name for messages, and the batching.
pub(crate) struct Decoding {
    pub(crate) decoder: Decoder,
    pub(crate) item_type_name: String,
    /// `batch_size`: stack this many items into each batch.
    pub(crate) batch_size: Option<usize>,
    /// Leave out the last batch when it is short.
    pub(crate) drop_last: bool,
}

/// Why an item of a worker batch was not delivered.
struct Failure {
    index: usize,
    kind: ErrorKind,
    reason: String,
}

/// A batch made ready without the GIL.
enum Prepared {
    /// Decoded items, their arrays copied out of the batch; `failed` tells
    /// which item could not be decoded (the items before it are kept).
    Values {
        values: Vec<Value<'static>>,
        failed: Option<Failure>,
    },
    /// Items stacked into the batches they completed; `received` items
    /// of the worker batch.
    Stacked {
        stacked: Vec<Stacked>,
        received: usize,
        failed: Option<Failure>,
    },
    Encoded(Batch),
}

/// One item of a worker batch, decoded (borrowing from it).
fn decode_one<'a>(decoder: &Decoder, item: &'a [u8]) -> Result<Value<'a>, String> {
    match decoder {
        Decoder::Json => json::json(item),
        Decoder::JsonShaped(shape) => json::json_shaped(item, shape),
        Decoder::Bincode(shape) => decode::bincode(item, shape),
        Decoder::Raw => Ok(Value::Bytes(item.to_vec())),
        Decoder::Bytes => decode::bytes_payload(item).map(|p| Value::Bytes(p.to_vec())),
    }
}

fn prepare(decoder: &Decoder, stacker: Option<&mut Stacker>, batch: Batch) -> Prepared {
    let decode_error = |index, reason| {
        Some(Failure {
            index,
            kind: ErrorKind::Decode,
            reason,
        })
    };
    if let Some(stacker) = stacker {
        let mut stacked = Vec::new();
        for (index, item) in batch.items().enumerate() {
            let value = match decode_one(decoder, item) {
                Ok(value) => value,
                Err(reason) => {
                    let failed = decode_error(index, reason);
                    let received = index;
                    return Prepared::Stacked {
                        stacked,
                        received,
                        failed,
                    };
                }
            };
            match stacker.push(value) {
                Ok(done) => stacked.extend(done),
                Err(reason) => {
                    let failed = Some(Failure {
                        index,
                        kind: ErrorKind::InvalidInput,
                        reason,
                    });
                    let received = index;
                    return Prepared::Stacked {
                        stacked,
                        received,
                        failed,
                    };
                }
            }
        }
        return Prepared::Stacked {
            stacked,
            received: batch.len(),
            failed: None,
        };
    }
    if matches!(decoder, Decoder::Raw | Decoder::Bytes) {
        return Prepared::Encoded(batch);
    }
    let owned = |item: &[u8]| match decoder {
        // Plain JSON values hold no array: nothing borrows from the batch.
        Decoder::Json => json::json(item),
        // Arrays are copied out of the batch here, once, without the GIL.
        _ => decode_one(decoder, item).map(Value::into_owned),
    };
    let mut values = Vec::with_capacity(batch.len());
    for (index, item) in batch.items().enumerate() {
        match owned(item) {
            Ok(value) => values.push(value),
            Err(reason) => {
                let failed = decode_error(index, reason);
                return Prepared::Values { values, failed };
            }
        }
    }
    Prepared::Values {
        values,
        failed: None,
    }
}

#[pymethods]
impl Pass {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// An iterator over the next batch's items (a non-empty list).
    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        // The caller asks for more once the current list is used.
        drop_front(&mut self.held, self.list_items);
        self.list_items = 0;
        self.current = None;
        if let Some(error) = self.pending.take() {
            return Err(error);
        }
        let items = self.next_list(py)?;
        let Some((items, per_element)) = items else {
            return Ok(None);
        };
        self.per_element = per_element;
        self.list_items = items.len() * per_element;
        let iterator = PyList::new(py, items)?.into_any().try_iter()?.into_any();
        self.current = Some(iterator.clone().unbind());
        Ok(Some(iterator))
    }

    /// The iterable's position, as JSON, before the items handed over and
    /// not used yet; at the end of the pass (ended, still open), after all
    /// its items.
    fn state(&self, py: Python<'_>) -> PyResult<String> {
        let remaining = match &self.current {
            Some(iterator) => {
                let hint = py.import("operator")?.getattr("length_hint")?;
                hint.call1((iterator.bind(py),))?.extract::<usize>()?
            }
            None => 0,
        };
        let remaining = remaining
            .saturating_mul(self.per_element)
            .min(self.list_items);
        let mut unused = self.held.clone();
        drop_front(&mut unused, self.list_items - remaining);
        let unused: Vec<(usize, usize)> = unused.into();
        Ok(self.iterable.position_before(&unused).to_json())
    }

    /// Whether the pass may still give items (not ended, failed or closed).
    #[getter]
    fn live(&self) -> bool {
        self.batches.is_some() && !self.ended
    }

    /// Ends the pass early: the worker stops producing.
    fn close(&mut self) {
        self.batches = None;
    }
}

/// Leaves out the first `items` items of `runs`.
fn drop_front(runs: &mut VecDeque<(usize, usize)>, mut items: usize) {
    while items > 0 {
        let Some(front) = runs.front_mut() else {
            return;
        };
        if front.1 > items {
            front.1 -= items;
            return;
        }
        items -= front.1;
        runs.pop_front();
    }
}

/// Takes the last `items` items off `runs`, and gives their runs.
fn take_back(runs: &mut VecDeque<(usize, usize)>, mut items: usize) -> Vec<(usize, usize)> {
    let mut taken = Vec::new();
    while items > 0 {
        let Some(back) = runs.back_mut() else {
            break;
        };
        if back.1 > items {
            back.1 -= items;
            taken.push((back.0, items));
            break;
        }
        items -= back.1;
        taken.push(*back);
        runs.pop_back();
    }
    taken.reverse();
    taken
}

impl Pass {
    /// A pass over `batches`, whose items `decoding` makes Python objects.
    pub(crate) fn new(
        iterable: Arc<sandgen::Iterable>,
        batches: Batches,
        decoding: Arc<Decoding>,
        output: Arc<Output>,
    ) -> Pass {
        Pass {
            batches: Some(batches),
            ended: false,
            iterable,
            held: VecDeque::new(),
            list_items: 0,
            per_element: 1,
            current: None,
            stacker: decoding.batch_size.map(Stacker::new),
            decoding,
            received: 0,
            pending: None,
            output,
        }
    }

    /// The next list's items and how many items each holds; `None` at the
    /// end of the pass. An item that cannot be decoded or stacked ends the
    /// pass after the items before it (the error is then `pending`).
    fn next_list(&mut self, py: Python<'_>) -> PyResult<Option<(Vec<Py<PyAny>>, usize)>> {
        loop {
            let Some(batches) = self.batches.as_mut().filter(|_| !self.ended) else {
                return Ok(None);
            };
            let decoder = &self.decoding.decoder;
            let stacker = self.stacker.as_mut();
            let next = py.detach(|| {
                batches.next_batch_within(WAIT).map(|next| match next {
                    NextBatch::Batch(batch) => {
                        let runs = batch.workers().to_vec();
                        let len = batch.len();
                        Some(Some((runs, len, prepare(decoder, stacker, batch))))
                    }
                    NextBatch::End => Some(None),
                    // Pending, or an outcome a later library may add.
                    _ => None,
                })
            });
            self.output.deliver(py);
            match next {
                Err(error) => {
                    // Items waiting for their batch are not delivered: the
                    // position stays before them.
                    self.refuse_stacked();
                    self.batches = None;
                    return Err(errors::from_sandgen(py, &error));
                }
                Ok(None) => py.check_signals()?,
                Ok(Some(None)) => {
                    // The pass stays open, its position after all its items.
                    self.ended = true;
                    // The last, short batch.
                    let Some(last) = self.stacker.as_mut().and_then(Stacker::finish) else {
                        return Ok(None);
                    };
                    let count = last.len();
                    if self.decoding.drop_last {
                        // Left out: used, as far as positions go.
                        take_back(&mut self.held, count);
                        return Ok(None);
                    }
                    let batch = last.into_py(py, self.decoding.decoder.shape())?;
                    return Ok(Some((vec![batch], count)));
                }
                Ok(Some(Some((runs, len, prepared)))) => {
                    self.held.extend(runs);
                    let per_element = match prepared {
                        Prepared::Stacked { .. } => self.stacker.as_ref().map_or(1, |s| s.size()),
                        _ => 1,
                    };
                    let items = self.finish(py, prepared, len)?;
                    if let Some(error) = self.pending.take() {
                        if items.is_empty() {
                            return Err(error);
                        }
                        self.pending = Some(error);
                    }
                    if !items.is_empty() {
                        return Ok(Some((items, per_element)));
                    }
                }
            }
        }
    }

    /// Makes a prepared batch Python objects; an item that cannot be decoded
    /// (or stacked) ends the pass, with the error kept in `pending`.
    /// `len` is the worker batch's length.
    fn finish(
        &mut self,
        py: Python<'_>,
        prepared: Prepared,
        len: usize,
    ) -> PyResult<Vec<Py<PyAny>>> {
        let shape = self.decoding.decoder.shape();
        let (items, failed, received) = match prepared {
            Prepared::Values { values, failed } => {
                let received = values.len();
                let items = values
                    .into_iter()
                    .map(|value| value.into_py(py, shape))
                    .collect::<PyResult<Vec<_>>>()?;
                (items, failed, received)
            }
            Prepared::Stacked {
                stacked,
                received,
                failed,
            } => {
                let items = stacked
                    .into_iter()
                    .map(|batch| batch.into_py(py, shape))
                    .collect::<PyResult<Vec<_>>>()?;
                (items, failed, received)
            }
            Prepared::Encoded(batch) => {
                let mut items = Vec::with_capacity(batch.len());
                let mut failed = None;
                for (index, item) in batch.items().enumerate() {
                    let payload = match self.decoding.decoder {
                        Decoder::Bytes => match decode::bytes_payload(item) {
                            Ok(payload) => payload,
                            Err(reason) => {
                                let kind = ErrorKind::Decode;
                                failed = Some(Failure {
                                    index,
                                    kind,
                                    reason,
                                });
                                break;
                            }
                        },
                        _ => item,
                    };
                    items.push(PyBytes::new(py, payload).into_any().unbind());
                }
                let received = items.len();
                (items, failed, received)
            }
        };
        // A failure's index counts from the batch's first item.
        if let Some(failure) = failed {
            // The items from the failed one on, and those stacked for a
            // batch that now never fills, are not delivered: the position
            // stays before them.
            let stacked = self.drop_stacked();
            let unused = take_back(&mut self.held, len - failure.index + stacked);
            if let Some(batches) = self.batches.as_mut() {
                batches.refuse(&unused);
            }
            self.pending = Some(self.item_error(py, failure));
        }
        self.received += received as u64;
        Ok(items)
    }

    /// Empties the stacker: how many items it held.
    fn drop_stacked(&mut self) -> usize {
        self.stacker.as_mut().map_or(0, |s| {
            let held = s.held();
            s.finish();
            held
        })
    }

    /// The pass failed: the items waiting in the stacker were never
    /// delivered, and the position goes back before them.
    fn refuse_stacked(&mut self) {
        let stacked = self.drop_stacked();
        let unused = take_back(&mut self.held, stacked);
        if let Some(batches) = self.batches.as_mut()
            && !unused.is_empty()
        {
            batches.refuse(&unused);
        }
    }

    /// Ends the pass with the error of item `failure.index` of the batch.
    fn item_error(&mut self, py: Python<'_>, failure: Failure) -> PyErr {
        let generator = self
            .batches
            .as_ref()
            .map(|b| b.iterable().generator().to_owned())
            .unwrap_or_default();
        self.batches = None;
        let index = self.received + failure.index as u64;
        let what = match (
            &self.decoding.decoder,
            self.decoding.item_type_name.as_str(),
        ) {
            (Decoder::Json, _) => "JSON".to_owned(),
            (_, name) => format!("item_type {name}"),
        };
        let message = match failure.kind {
            ErrorKind::Decode => format!(
                "cannot decode item {index} of generator {generator} as {what}: {}",
                failure.reason
            ),
            _ => format!(
                "cannot stack item {index} of generator {generator} into a batch of {}: {}",
                self.decoding.batch_size.unwrap_or(1),
                failure.reason
            ),
        };
        errors::new(py, failure.kind, &message)
    }
}
