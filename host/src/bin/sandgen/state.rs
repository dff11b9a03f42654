//! Part of the `sandgen` binary (`main.rs`), not of the library: the items
//! of `run` on their way to stdout, and with `--save-state` the run's
//! position in a file that always matches what reached stdout; `--resume`
//! reads it back.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use sandgen::{Iterable, Position};

/// Items are written to stdout in chunks of about this many bytes.
const CHUNK: usize = 64 * 1024;
/// With `--save-state`, items reach stdout (and the file their position)
/// at least this often while they come.
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// Reads the position saved in `path` (`--resume`).
pub(crate) fn read(path: &Path) -> anyhow::Result<Position> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --resume {}", path.display()))?;
    Position::from_json(&text).with_context(|| format!("invalid --resume {}", path.display()))
}

/// The items on their way to stdout: whole lines, written in chunks; with
/// a state file, each chunk is followed by the position after its items,
/// so that the file never counts an item that did not reach stdout.
pub(crate) struct Out<'a> {
    stdout: io::StdoutLock<'static>,
    buf: Vec<u8>,
    state: Option<StateFile<'a>>,
}

/// Where `--save-state` writes, and when it last did.
struct StateFile<'a> {
    path: &'a Path,
    iterable: &'a Iterable,
    saved: Instant,
}

impl<'a> Out<'a> {
    pub(crate) fn new(state: Option<(&'a Path, &'a Iterable)>) -> Out<'a> {
        Out {
            stdout: io::stdout().lock(),
            buf: Vec::with_capacity(CHUNK + 4096),
            state: state.map(|(path, iterable)| StateFile {
                path,
                iterable,
                saved: Instant::now(),
            }),
        }
    }

    /// Adds one item's line.
    pub(crate) fn line(&mut self, line: &[u8]) -> Result<(), Output> {
        self.buf.extend_from_slice(line);
        self.buf.push(b'\n');
        let due = self
            .state
            .as_ref()
            .is_some_and(|state| state.saved.elapsed() >= SAVE_EVERY);
        if self.buf.len() >= CHUNK || due {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes what is buffered to stdout, then the position after it.
    pub(crate) fn flush(&mut self) -> Result<(), Output> {
        self.stdout
            .write_all(&self.buf)
            .and_then(|()| self.stdout.flush())
            .map_err(Output::Stdout)?;
        self.buf.clear();
        if let Some(state) = &mut self.state {
            save(state.path, &state.iterable.position()).map_err(Output::State)?;
            state.saved = Instant::now();
        }
        Ok(())
    }
}

/// What writing the run's output met.
pub(crate) enum Output {
    Stdout(io::Error),
    State(anyhow::Error),
}

/// Writes `position` to `path` atomically: to a file beside it, renamed
/// over it (a reader, or a run killed at any moment, finds the old
/// position or the new one, whole).
pub(crate) fn save(path: &Path, position: &Position) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("invalid --save-state {}: name a file", path.display()))?;
    let mut temporary = PathBuf::from(path);
    temporary.set_file_name(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&temporary, format!("{}\n", position.to_json()))
        .and_then(|()| std::fs::rename(&temporary, path))
        .with_context(|| format!("cannot write --save-state {}", path.display()))
}

/// Closes `iterable` on SIGINT or SIGTERM (its pass then ends with
/// `Closed`, its position where it stopped): the flag says it happened.
#[cfg(not(unix))]
pub(crate) fn close_on_interrupt(_: &Arc<Iterable>) -> anyhow::Result<Arc<AtomicBool>> {
    Ok(Arc::new(AtomicBool::new(false)))
}

/// Closes `iterable` on SIGINT or SIGTERM (its pass then ends with
/// `Closed`, its position where it stopped): the flag says it happened. A
/// second signal ends the process as it would have without this handler.
/// The handler holds the iterable weakly: dropping it still ends the
/// workers.
#[cfg(unix)]
pub(crate) fn close_on_interrupt(iterable: &Arc<Iterable>) -> anyhow::Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let interrupted = Arc::new(AtomicBool::new(false));
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("cannot handle SIGINT and SIGTERM to save the state")?;
    let flag = Arc::clone(&interrupted);
    let iterable = Arc::downgrade(iterable);
    std::thread::Builder::new()
        .name("sandgen-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if flag.swap(true, Ordering::SeqCst) {
                    let _ = signal_hook::low_level::emulate_default_handler(signal);
                }
                if let Some(iterable) = iterable.upgrade() {
                    iterable.close();
                }
            }
        })
        .context("cannot start the thread that handles SIGINT")?;
    Ok(interrupted)
}
