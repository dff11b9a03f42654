//! The guests' output lines, for the Python callable `on_output(worker,
//! stream, line)` (by default the `sandgen.plugin` logger).
//!
//! The library hands a line to its handler on whatever thread runs the
//! guest (a worker thread, or a worker process's reader). Calling Python
//! there would make a guest wait for the GIL and, at interpreter exit, call
//! into a Python that is going away; so the handler only queues the line,
//! and the caller's thread hands the queue to the callable whenever it is
//! in the extension anyway: after starting the workers, while waiting for
//! and after each batch, at the end of a pass, on errors and on close.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use sandgen::{GuestStream, OutputLine};

/// `text` with what could drive a terminal escaped (control characters,
/// bidi controls; `sandgen::escape_text`): how the default `on_output` logs
/// a plugin's lines.
#[pyfunction]
pub(crate) fn escape_text(text: &str) -> String {
    sandgen::escape_text(text.as_bytes()).into_owned()
}

/// Lines queued but not handed on beyond this many, or this many bytes,
/// are dropped (a guest that prints while nobody reads its items), and
/// counted.
const MAX_QUEUED: usize = 10_000;
const MAX_QUEUED_BYTES: usize = 4 << 20;

/// One iterable's queue of lines, and the callable it goes to.
pub(crate) struct Output {
    queue: Mutex<Queue>,
    callback: Py<PyAny>,
}

#[derive(Default)]
struct Queue {
    lines: VecDeque<(usize, &'static str, String)>,
    /// The bytes of the lines' text.
    bytes: usize,
    dropped: u64,
}

impl Output {
    pub(crate) fn new(callback: Py<PyAny>) -> Arc<Output> {
        Arc::new(Output {
            queue: Mutex::new(Queue::default()),
            callback,
        })
    }

    /// The library's output handler, which queues each line.
    pub(crate) fn handler(self: &Arc<Self>) -> impl Fn(&OutputLine<'_>) + Send + Sync + 'static {
        let output = Arc::clone(self);
        move |line| {
            let stream = match line.stream {
                GuestStream::Stdout => "stdout",
                _ => "stderr",
            };
            let mut queue = output.lock();
            if queue.lines.len() < MAX_QUEUED && queue.bytes + line.text.len() <= MAX_QUEUED_BYTES {
                queue.bytes += line.text.len();
                queue
                    .lines
                    .push_back((line.worker, stream, line.text.to_owned()));
            } else {
                queue.dropped += 1;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // The queue stays consistent whatever panicked while it was held.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands every queued line to the callable, in order. An exception it
    /// raises is reported as unraisable (as `logging` reports a failing
    /// handler): the items and errors of the pass still come.
    pub(crate) fn deliver(&self, py: Python<'_>) {
        loop {
            let (lines, dropped) = {
                let mut queue = self.lock();
                if queue.lines.is_empty() && queue.dropped == 0 {
                    return;
                }
                queue.bytes = 0;
                (
                    std::mem::take(&mut queue.lines),
                    std::mem::take(&mut queue.dropped),
                )
            };
            for (worker, stream, text) in lines {
                self.call(py, worker, stream, &text);
            }
            if dropped > 0 {
                let text = format!(
                    "sandgen: {dropped} more output line(s) of the plugin were dropped: more than \
                     {MAX_QUEUED} lines or {MAX_QUEUED_BYTES} bytes were waiting while no items \
                     were read"
                );
                self.call(py, 0, "stderr", &text);
            }
        }
    }

    fn call(&self, py: Python<'_>, worker: usize, stream: &str, text: &str) {
        if let Err(error) = self.callback.call1(py, (worker, stream, text)) {
            error.write_unraisable(py, Some(self.callback.bind(py)));
        }
    }
}
