use std::fmt;

use serde::{Deserialize, Serialize};

/// What went wrong, in terms a caller can act on.
///
/// Returned by [`Error::kind`]. New kinds may be added, so match with a
/// wildcard arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An option or argument given to sandgen is invalid (for example a
    /// value that cannot be encoded, or a `buffer_size` of 0).
    InvalidInput,
    /// The plugin could not be loaded: a missing file, not WebAssembly, a
    /// core module instead of a component, or a component that does not
    /// compile.
    Load,
    /// Compiling the plugin went past a load limit: its deadline or its
    /// memory (see [`EngineBuilder::load_timeout`](crate::EngineBuilder::load_timeout)
    /// and [`load_memory`](crate::EngineBuilder::load_memory)).
    LoadLimit,
    /// The component is not a sandgen plugin: it does not export
    /// `sandgen:generator/generator@0.1.0`, or it imports something sandgen
    /// does not provide.
    Incompatible,
    /// The plugin's initializer reported an error.
    InitializerFailed,
    /// The plugin reported an error from `create`, for example for bad
    /// arguments or an unknown generator name.
    CreateFailed,
    /// The plugin reported an error while starting or running a pass.
    IterationFailed,
    /// The guest trapped (a panic, `unreachable`, an out-of-bounds access).
    /// [`Error::guest_stderr`] holds what the guest printed last, which for a
    /// Rust guest includes the panic message.
    Trap,
    /// The guest ran out of stack (unbounded recursion).
    StackOverflow,
    /// The guest hit its memory limit: it trapped, or reported an error
    /// (Python's `MemoryError`, JavaScript's "out of memory", a failed
    /// `try_reserve`), after the limit refused it memory in the same call.
    /// [`Error::plugin_message`] then holds the plugin's own words. Also
    /// the guest's other bounded holdings: more core instances, memories or
    /// tables than a store holds, or more than 256 WASI handles (open files,
    /// streams) at once.
    MemoryLimit,
    /// The guest used up its fuel budget.
    FuelExhausted,
    /// No status arrived from the worker within the configured timeout.
    Timeout,
    /// The plugin broke the WIT contract, for example with malformed frames,
    /// or a worker process sent messages that make no sense (a batch
    /// outside its shared region, more items than the caller had room for).
    Protocol,
    /// An item could not be decoded into the requested type.
    Decode,
    /// The worker ended without reporting why (a crash or a kill).
    WorkerDied,
    /// A pass over this iterable is already in progress.
    Busy,
    /// The worker has shut down after an earlier error; create a new
    /// iterable.
    Closed,
}

impl ErrorKind {
    /// The kind's name in snake case (`"memory_limit"`), as language
    /// bindings and machine-readable output spell it.
    ///
    /// ```
    /// assert_eq!(sandgen::ErrorKind::MemoryLimit.name(), "memory_limit");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Load => "load",
            ErrorKind::LoadLimit => "load_limit",
            ErrorKind::Incompatible => "incompatible",
            ErrorKind::InitializerFailed => "initializer_failed",
            ErrorKind::CreateFailed => "create_failed",
            ErrorKind::IterationFailed => "iteration_failed",
            ErrorKind::Trap => "trap",
            ErrorKind::StackOverflow => "stack_overflow",
            ErrorKind::MemoryLimit => "memory_limit",
            ErrorKind::FuelExhausted => "fuel_exhausted",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Decode => "decode",
            ErrorKind::WorkerDied => "worker_died",
            ErrorKind::Busy => "busy",
            ErrorKind::Closed => "closed",
        }
    }
}

/// An error from sandgen: a [`kind`](Error::kind), a one-line message that
/// names what failed and includes the plugin's own message verbatim, and
/// where it applies the guest's last stderr output and a short backtrace.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    plugin_message: Option<String>,
    guest_stderr: Option<String>,
    backtrace: Option<String>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            plugin_message: None,
            guest_stderr: None,
            backtrace: None,
        }
    }

    /// An error reported by the plugin itself: `context: plugin message`.
    /// A message longer than 64 KiB is cut (and says so).
    pub(crate) fn plugin(
        kind: ErrorKind,
        context: impl fmt::Display,
        mut plugin_message: String,
    ) -> Self {
        const MAX: usize = 64 * 1024;
        if plugin_message.len() > MAX {
            let mut cut = MAX;
            while !plugin_message.is_char_boundary(cut) {
                cut -= 1;
            }
            plugin_message.truncate(cut);
            plugin_message.push_str(" [message cut at 64 KiB]");
        }
        let mut error = Error::new(kind, format!("{context}: {plugin_message}"));
        error.plugin_message = Some(plugin_message);
        error
    }

    pub(crate) fn with_guest_stderr(mut self, stderr: Option<String>) -> Self {
        self.guest_stderr = stderr.filter(|s| !s.is_empty());
        self
    }

    pub(crate) fn with_backtrace(mut self, backtrace: Option<String>) -> Self {
        self.backtrace = backtrace;
        self
    }

    /// Ends the message with a hint of how to fix what failed.
    pub(crate) fn hint(mut self, hint: impl fmt::Display) -> Self {
        self.message = format!("{} ({hint})", self.message);
        self
    }

    /// Prefixes the message with more context.
    pub(crate) fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message the plugin reported, verbatim, when the plugin reported
    /// the error itself (initializer, create or iteration failures).
    pub fn plugin_message(&self) -> Option<&str> {
        self.plugin_message.as_deref()
    }

    /// The last lines the guest wrote to stderr before a trap (bounded); for
    /// a Rust guest this includes the panic message.
    pub fn guest_stderr(&self) -> Option<&str> {
        self.guest_stderr.as_deref()
    }

    /// The guest's stack at a trap, innermost frame first, when known.
    pub fn backtrace(&self) -> Option<&str> {
        self.backtrace.as_deref()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Error");
        s.field("kind", &self.kind).field("message", &self.message);
        if let Some(m) = &self.plugin_message {
            s.field("plugin_message", m);
        }
        if let Some(e) = &self.guest_stderr {
            s.field("guest_stderr", e);
        }
        if let Some(b) = &self.backtrace {
            s.field("backtrace", b);
        }
        s.finish()
    }
}

impl std::error::Error for Error {}
