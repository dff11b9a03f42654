//! The epoch clock: a thread that ticks every [`EPOCH_TICK`] while at least
//! one [`ClockGuard`] lives (a guest is instantiated), and sleeps otherwise.
//! Each tick advances the engines' epochs, which is how a guest spinning in
//! wasm code notices an interrupt (teardown or timeout).

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the epoch advances while guests run: the granularity at which
/// a running guest notices an interrupt.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(1);

/// The clock thread; stops when dropped.
pub(crate) struct Ticker {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    active: usize,
    shutdown: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Ticker {
    /// Starts the thread, which calls `tick` every [`EPOCH_TICK`] while a
    /// guard lives.
    pub(crate) fn start(tick: impl Fn() + Send + 'static) -> std::io::Result<Ticker> {
        let shared = Arc::new(Shared::default());
        let clock = shared.clone();
        let thread = std::thread::Builder::new()
            .name("sandgen-epoch".into())
            .spawn(move || {
                loop {
                    let mut state = clock.lock();
                    while state.active == 0 && !state.shutdown {
                        state = clock.wake.wait(state).unwrap_or_else(|e| e.into_inner());
                    }
                    if state.shutdown {
                        return;
                    }
                    drop(state);
                    std::thread::sleep(EPOCH_TICK);
                    tick();
                }
            })?;
        Ok(Ticker {
            shared,
            thread: Some(thread),
        })
    }

    /// A handle that can start guards later, from any thread.
    pub(crate) fn handle(&self) -> Clock {
        Clock {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A cheap handle on a [`Ticker`]'s clock.
#[derive(Clone)]
pub(crate) struct Clock {
    shared: Arc<Shared>,
}

impl Clock {
    /// Keeps the clock running while the guard lives.
    pub(crate) fn activate(&self) -> ClockGuard {
        self.shared.lock().active += 1;
        self.shared.wake.notify_one();
        ClockGuard {
            shared: self.shared.clone(),
        }
    }
}

/// Keeps the epoch clock running while it lives.
pub(crate) struct ClockGuard {
    shared: Arc<Shared>,
}

impl Drop for ClockGuard {
    fn drop(&mut self) {
        self.shared.lock().active -= 1;
    }
}
