//! `Pass`: one pass over an iterable, a Python iterator over its batches.
//! Batches are waited for and decoded without the GIL (see [`WAIT`]); only
//! making the Python objects needs it.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use sandgen::{Batch, Batches, ErrorKind, NextBatch};

use crate::decode::{self, Decoder, Value};
use crate::errors;
use crate::output::Output;
use crate::wait::WAIT;

/// One pass: a Python iterator over the pass's batches, each a `list` of
/// items made in one go (the Python side chains them into items with
/// `itertools.chain.from_iterable`, so a `for` loop pays no native call per
/// item). Dropping it stops the worker's pass.
#[pyclass(module = "sandgen._native")]
pub(crate) struct Pass {
    /// `None` once the pass ended, failed or was stopped.
    batches: Option<Batches>,
    decoder: Arc<Decoder>,
    item_type_name: String,
    /// Items handed out before the current batch.
    delivered: u64,
    /// An error met after some items of a batch: raised once those items
    /// are out.
    pending: Option<PyErr>,
    /// The guests' output lines, handed on between waits.
    output: Arc<Output>,
}

/// A batch made ready without the GIL.
enum Prepared {
    /// Decoded items; `failed` tells which item could not be decoded (the
    /// items before it are kept).
    Values {
        values: Vec<Value>,
        failed: Option<(usize, String)>,
    },
    Encoded(Batch),
}

fn prepare(decoder: &Decoder, batch: Batch) -> Prepared {
    let decode = |one: &dyn Fn(&[u8]) -> Result<Value, String>| {
        let mut values = Vec::with_capacity(batch.len());
        for (index, item) in batch.items().enumerate() {
            match one(item) {
                Ok(value) => values.push(value),
                Err(reason) => {
                    return Prepared::Values {
                        values,
                        failed: Some((index, reason)),
                    };
                }
            }
        }
        Prepared::Values {
            values,
            failed: None,
        }
    };
    match decoder {
        Decoder::Json => decode(&decode::json),
        Decoder::Bincode(shape) => decode(&|item| decode::bincode(item, shape)),
        Decoder::Raw | Decoder::Bytes => Prepared::Encoded(batch),
    }
}

#[pymethods]
impl Pass {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// The next batch's items, as a non-empty list.
    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyList>>> {
        if let Some(error) = self.pending.take() {
            return Err(error);
        }
        loop {
            let Some(batches) = self.batches.as_mut() else {
                return Ok(None);
            };
            let decoder = &*self.decoder;
            let next = py.detach(|| {
                batches.next_batch_within(WAIT).map(|next| match next {
                    NextBatch::Batch(batch) => Some(Some(prepare(decoder, batch))),
                    NextBatch::End => Some(None),
                    // Pending, or an outcome a later library may add.
                    _ => None,
                })
            });
            self.output.deliver(py);
            match next {
                Err(error) => {
                    self.batches = None;
                    return Err(errors::from_sandgen(py, &error));
                }
                Ok(None) => py.check_signals()?,
                Ok(Some(None)) => {
                    self.batches = None;
                    return Ok(None);
                }
                Ok(Some(Some(prepared))) => {
                    let items = self.finish(py, prepared)?;
                    if let Some(error) = self.pending.take() {
                        if items.is_empty() {
                            return Err(error);
                        }
                        self.pending = Some(error);
                    }
                    self.delivered += items.len() as u64;
                    if !items.is_empty() {
                        return Ok(Some(PyList::new(py, items)?));
                    }
                }
            }
        }
    }

    /// Ends the pass early: the worker stops producing.
    fn close(&mut self) {
        self.batches = None;
    }
}

impl Pass {
    /// A pass over `batches`, whose items `decoder` decodes
    /// (`item_type_name` names their type in messages).
    pub(crate) fn new(
        batches: Batches,
        decoder: Arc<Decoder>,
        item_type_name: String,
        output: Arc<Output>,
    ) -> Pass {
        Pass {
            batches: Some(batches),
            decoder,
            item_type_name,
            delivered: 0,
            pending: None,
            output,
        }
    }

    /// Makes a prepared batch Python objects; an item that cannot be decoded
    /// ends the pass, with the error kept in `pending`.
    fn finish(&mut self, py: Python<'_>, prepared: Prepared) -> PyResult<Vec<Py<PyAny>>> {
        match prepared {
            Prepared::Values { values, failed } => {
                let shape = match &*self.decoder {
                    Decoder::Bincode(shape) => Some(shape),
                    _ => None,
                };
                let items = values
                    .into_iter()
                    .map(|value| value.into_py(py, shape))
                    .collect::<PyResult<Vec<_>>>()?;
                if let Some((index, reason)) = failed {
                    self.pending = Some(self.decode_error(py, index, &reason));
                }
                Ok(items)
            }
            Prepared::Encoded(batch) => {
                let mut items = Vec::with_capacity(batch.len());
                for (index, item) in batch.items().enumerate() {
                    let payload = match &*self.decoder {
                        Decoder::Bytes => match decode::bytes_payload(item) {
                            Ok(payload) => payload,
                            Err(reason) => {
                                self.pending = Some(self.decode_error(py, index, &reason));
                                break;
                            }
                        },
                        _ => item,
                    };
                    items.push(PyBytes::new(py, payload).into_any().unbind());
                }
                Ok(items)
            }
        }
    }

    /// Ends the pass with a decode error for item `index` of the batch.
    fn decode_error(&mut self, py: Python<'_>, index: usize, reason: &str) -> PyErr {
        let generator = self
            .batches
            .as_ref()
            .map(|b| b.iterable().generator().to_owned())
            .unwrap_or_default();
        self.batches = None;
        let what = match &*self.decoder {
            Decoder::Json => "JSON".to_owned(),
            _ => format!("item_type {}", self.item_type_name),
        };
        errors::new(
            py,
            ErrorKind::Decode,
            &format!(
                "cannot decode item {} of generator {generator} as {what}: {reason}",
                self.delivered + index as u64
            ),
        )
    }
}
