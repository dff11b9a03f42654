//! Guest stdout and stderr: split into lines, handed to the caller's output
//! handler (by default the host's stderr, prefixed), and the tail of stderr
//! kept for trap errors. Never mixed with items.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io::Write as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use crate::text::escape_text;

/// Which of the guest's output streams a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GuestStream {
    /// The guest's stdout.
    Stdout,
    /// The guest's stderr.
    Stderr,
}

/// One line that a guest printed, as handed to an output handler (see
/// [`IterableBuilder::on_output`](crate::IterableBuilder::on_output)).
///
/// The text is the plugin's, raw: before showing it on a terminal, pass it
/// through [`escape_text`](crate::escape_text) (its `Display` does not).
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct OutputLine<'a> {
    /// The plugin's name (its file name without extension).
    pub plugin: &'a str,
    /// The generator's name.
    pub generator: &'a str,
    /// The index of the worker whose guest printed it, among the
    /// iterable's workers (0 for a single worker).
    pub worker: usize,
    /// Which stream the line came from.
    pub stream: GuestStream,
    /// The line, without its line ending (invalid UTF-8 is replaced).
    pub text: &'a str,
    /// The line's bytes as the guest wrote them, without its line ending.
    pub bytes: &'a [u8],
}

impl fmt::Display for OutputLine<'_> {
    /// `[plugin/generator stderr] text`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stream = match self.stream {
            GuestStream::Stdout => "stdout",
            GuestStream::Stderr => "stderr",
        };
        write!(
            f,
            "[{}/{} {stream}] {}",
            self.plugin, self.generator, self.text
        )
    }
}

pub(crate) type OutputHandler = Arc<dyn Fn(&OutputLine<'_>) + Send + Sync>;

/// `handler` for the lines of worker `worker` (each guest numbers its own
/// lines 0).
pub(crate) fn for_worker(handler: &OutputHandler, worker: usize) -> OutputHandler {
    if worker == 0 {
        return Arc::clone(handler);
    }
    let handler = Arc::clone(handler);
    Arc::new(move |line| handler(&OutputLine { worker, ..*line }))
}

/// The default handler: each line to the host's stderr, prefixed and
/// escaped (`escaped_line`), so that a plugin cannot drive the terminal.
pub(crate) fn stderr_handler() -> OutputHandler {
    Arc::new(|line| {
        let _ = writeln!(std::io::stderr().lock(), "{}", escaped_line(line));
    })
}

/// `[plugin/generator stream] text`, with control characters, bidi controls
/// and invalid UTF-8 escaped ([`escape_text`]).
fn escaped_line(line: &OutputLine<'_>) -> String {
    let stream = match line.stream {
        GuestStream::Stdout => "stdout",
        GuestStream::Stderr => "stderr",
    };
    format!(
        "[{}/{} {stream}] {}",
        escape_text(line.plugin.as_bytes()),
        escape_text(line.generator.as_bytes()),
        escape_text(line.bytes)
    )
}

/// A line longer than this is passed on in pieces.
const MAX_LINE: usize = 16 * 1024;
/// How much of the guest's stderr is kept for errors.
const TAIL: usize = 4 * 1024;

struct State {
    plugin: Arc<str>,
    generator: Arc<str>,
    handler: OutputHandler,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    tail: VecDeque<u8>,
}

impl State {
    fn write(&mut self, stream: GuestStream, bytes: &[u8]) {
        if stream == GuestStream::Stderr {
            self.tail.extend(bytes.iter().copied());
            let excess = self.tail.len().saturating_sub(TAIL);
            self.tail.drain(..excess);
        }
        let mut partial = std::mem::take(self.partial(stream));
        partial.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(pos) = partial[start..].iter().position(|&b| b == b'\n') {
            // A long line goes out in pieces of at most MAX_LINE, as the
            // tail of an unfinished one does below.
            let mut line = &partial[start..start + pos];
            while line.len() > MAX_LINE {
                self.emit(stream, &line[..MAX_LINE]);
                line = &line[MAX_LINE..];
            }
            self.emit(stream, line);
            start += pos + 1;
        }
        while partial.len() - start > MAX_LINE {
            self.emit(stream, &partial[start..start + MAX_LINE]);
            start += MAX_LINE;
        }
        partial.drain(..start);
        *self.partial(stream) = partial;
    }

    fn partial(&mut self, stream: GuestStream) -> &mut Vec<u8> {
        match stream {
            GuestStream::Stdout => &mut self.stdout,
            GuestStream::Stderr => &mut self.stderr,
        }
    }

    fn emit(&self, stream: GuestStream, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let text = String::from_utf8_lossy(line);
        (self.handler)(&OutputLine {
            plugin: &self.plugin,
            generator: &self.generator,
            worker: 0,
            stream,
            text: &text,
            bytes: line,
        });
    }

    fn flush(&mut self) {
        for stream in [GuestStream::Stdout, GuestStream::Stderr] {
            let partial = std::mem::take(self.partial(stream));
            if !partial.is_empty() {
                self.emit(stream, &partial);
            }
        }
    }
}

/// The capture of one guest's output; cheap to clone.
#[derive(Clone)]
pub(crate) struct GuestOutput {
    state: Arc<Mutex<State>>,
}

impl GuestOutput {
    pub(crate) fn new(plugin: &str, generator: &str, handler: OutputHandler) -> Self {
        GuestOutput {
            state: Arc::new(Mutex::new(State {
                plugin: plugin.into(),
                generator: generator.into(),
                handler,
                stdout: Vec::new(),
                stderr: Vec::new(),
                tail: VecDeque::new(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A handler that panicked poisons the lock; the output state itself
        // stays consistent, so keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stream for one of the guest's outputs.
    pub(crate) fn stream(&self, stream: GuestStream) -> OutputPipe {
        OutputPipe {
            output: self.clone(),
            stream,
        }
    }

    /// Passes on what is left of unfinished lines.
    pub(crate) fn flush(&self) {
        self.lock().flush();
    }

    /// The last bytes the guest wrote to stderr, as text.
    pub(crate) fn stderr_tail(&self) -> Option<String> {
        let state = self.lock();
        if state.tail.is_empty() {
            return None;
        }
        let (a, b) = state.tail.as_slices();
        let bytes = [a, b].concat();
        let text = String::from_utf8_lossy(&bytes);
        // Drop a partial first line when the tail was cut.
        let text = if state.tail.len() >= TAIL {
            text.split_once('\n').map_or(&*text, |(_, rest)| rest)
        } else {
            &text
        };
        Some(text.trim_end().to_owned())
    }
}

/// One of a guest's output streams, as WASI sees it.
#[derive(Clone)]
pub(crate) struct OutputPipe {
    output: GuestOutput,
    stream: GuestStream,
}

impl OutputPipe {
    fn write_bytes(&self, bytes: &[u8]) {
        self.output.lock().write(self.stream, bytes);
    }
}

impl IsTerminal for OutputPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for OutputPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for OutputPipe {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl Pollable for OutputPipe {
    fn ready<'a, 'b>(&'a mut self) -> Pin<Box<dyn Future<Output = ()> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(std::future::ready(()))
    }
}

impl tokio::io::AsyncWrite for OutputPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A one-line summary of a guest's stderr tail: a Rust panic's location and
/// message when there is one, otherwise the last non-empty line.
pub(crate) fn summarize_stderr(tail: &str) -> Option<String> {
    let lines: Vec<&str> = tail.lines().collect();
    if let Some(at) = lines.iter().rposition(|l| l.contains("panicked at ")) {
        let head = lines[at];
        let location = head[head.find("panicked at ").expect("found") + "panicked at ".len()..]
            .trim_end_matches(':');
        let message: Vec<&str> = lines[at + 1..]
            .iter()
            .take_while(|l| !l.starts_with("note: "))
            .copied()
            .collect();
        return Some(format!("panicked at {location}: {}", message.join(" / ")));
    }
    lines
        .iter()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture() -> (GuestOutput, Arc<Mutex<Vec<String>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let output = GuestOutput::new(
            "p",
            "g",
            Arc::new(move |line: &OutputLine<'_>| sink.lock().unwrap().push(line.to_string())),
        );
        (output, lines)
    }

    #[test]
    fn the_default_handler_escapes_what_would_drive_a_terminal() {
        let raw = b"\x1b[2J\x1b]52;c;cGF3bmVk\x07\0\xe2\x80\xaeevil\xff";
        let line = OutputLine {
            plugin: "p\x1b",
            generator: "g",
            worker: 0,
            stream: GuestStream::Stderr,
            text: &String::from_utf8_lossy(raw),
            bytes: raw,
        };
        assert_eq!(
            escaped_line(&line),
            r"[p\x1b/g stderr] \x1b[2J\x1b]52;c;cGF3bmVk\x07\x00\u{202e}evil\xff"
        );
    }

    #[test]
    fn lines_are_split_prefixed_and_flushed() {
        let (output, lines) = capture();
        let out = output.stream(GuestStream::Stdout);
        out.write_bytes(b"one\ntw");
        out.write_bytes(b"o\r\nthree");
        output.stream(GuestStream::Stderr).write_bytes(b"err\n");
        output.flush();
        assert_eq!(
            *lines.lock().unwrap(),
            [
                "[p/g stdout] one",
                "[p/g stdout] two",
                "[p/g stderr] err",
                "[p/g stdout] three"
            ]
        );
    }

    #[test]
    fn stderr_tail_is_bounded() {
        let (output, _) = capture();
        assert_eq!(output.stderr_tail(), None);
        let err = output.stream(GuestStream::Stderr);
        for i in 0..2000 {
            err.write_bytes(format!("line {i}\n").as_bytes());
        }
        let tail = output.stderr_tail().unwrap();
        assert!(tail.len() <= TAIL);
        assert!(tail.starts_with("line "));
        assert!(tail.ends_with("line 1999"));
    }

    #[test]
    fn panics_are_summarized() {
        let tail = "starting\n\nthread '<unnamed>' panicked at src/lib.rs:12:9:\nboom: 3\nnote: run with `RUST_BACKTRACE=1`";
        assert_eq!(
            summarize_stderr(tail).unwrap(),
            "panicked at src/lib.rs:12:9: boom: 3"
        );
        assert_eq!(summarize_stderr("a\nlast words\n\n").unwrap(), "last words");
    }
}
