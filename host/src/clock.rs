//! The epoch clock: a thread that ticks every [`EPOCH_TICK`] while at least
//! one [`ClockGuard`] lives (a guest is instantiated), and sleeps otherwise.
//! It lives as long as any [`Clock`] handle: a guest holds one, so a guest
//! stays interruptible after its engine and plugin were dropped. The
//! process keeps one clock for all its engines (`loader.rs`), so in
//! practice the thread, once started, sleeps between guests until the
//! process ends.
//! Each tick advances the engines' epochs, which is how a guest spinning in
//! wasm code notices an interrupt (teardown or timeout).

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the epoch advances while guests run: the granularity at which
/// a running guest notices an interrupt.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(1);

/// The clock: its thread, shared by every handle; the thread stops when the
/// last handle is dropped (an engine, a plugin, or a guest still running
/// after both were dropped keeps it going).
#[derive(Clone)]
pub(crate) struct Clock {
    ticker: Arc<Ticker>,
}

struct Ticker {
    activity: Arc<Activity>,
    /// What each tick does.
    tick: Arc<dyn Fn() + Send + Sync + 'static>,
    /// Started by the first activation: a worker process confines itself
    /// before it runs any guest, and a thread started after that is
    /// confined with it.
    thread: Mutex<Ticking>,
}

/// The thread, once started, and the fork generation it runs in: a forked
/// child has no such thread and starts its own (`fork.rs`).
enum Ticking {
    NotStarted,
    Started {
        handle: JoinHandle<()>,
        generation: u64,
    },
    Failed,
}

#[derive(Default)]
struct Activity {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    active: usize,
    shutdown: bool,
}

impl Activity {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Clock {
    /// Starts the thread, which calls `tick` every [`EPOCH_TICK`] while a
    /// guard lives.
    pub(crate) fn start(tick: impl Fn() + Send + Sync + 'static) -> std::io::Result<Clock> {
        Ok(Clock {
            ticker: Arc::new(Ticker {
                activity: Arc::new(Activity::default()),
                tick: Arc::new(tick),
                thread: Mutex::new(Ticking::NotStarted),
            }),
        })
    }

    /// Starts the ticking thread, once per process (again in a forked
    /// child, whose copy of the clock has no thread).
    fn ensure_started(&self) -> std::io::Result<()> {
        let mut thread = self.ticker.thread.lock().unwrap_or_else(|e| e.into_inner());
        let generation = crate::fork::generation();
        match &*thread {
            Ticking::Started { generation: g, .. } if *g == generation => return Ok(()),
            Ticking::Failed => return Err(std::io::Error::other("the epoch clock has stopped")),
            Ticking::Started { .. } => {
                // Forked: the guests counted active ran on threads this
                // process does not have; the parent's thread handle is
                // left alone (it cannot be joined here).
                let Ticking::Started { handle, .. } =
                    std::mem::replace(&mut *thread, Ticking::NotStarted)
                else {
                    unreachable!("matched above")
                };
                std::mem::forget(handle);
                self.ticker.activity.lock().active = 0;
            }
            Ticking::NotStarted => {}
        }
        // A thread that cannot start now (a transient limit on threads) is
        // tried again by the next guest.
        *thread = Ticking::NotStarted;
        let tick = self.ticker.tick.clone();
        let clock = self.ticker.activity.clone();
        let handle = std::thread::Builder::new()
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
        *thread = Ticking::Started { handle, generation };
        Ok(())
    }

    pub(crate) fn activate(&self) -> std::io::Result<ClockGuard> {
        self.ensure_started()?;
        self.ticker.activity.lock().active += 1;
        self.ticker.activity.wake.notify_one();
        Ok(ClockGuard {
            clock: self.clone(),
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.activity.lock().shutdown = true;
        self.activity.wake.notify_one();
        let thread = std::mem::replace(
            &mut *self.thread.lock().unwrap_or_else(|e| e.into_inner()),
            Ticking::Failed,
        );
        if let Ticking::Started { handle, generation } = thread
            && generation == crate::fork::generation()
        {
            let _ = handle.join();
        }
    }
}

/// Keeps the epoch clock running (and its thread alive) while it lives.
pub(crate) struct ClockGuard {
    clock: Clock,
}

impl Drop for ClockGuard {
    fn drop(&mut self) {
        let mut state = self.clock.ticker.activity.lock();
        state.active = state.active.saturating_sub(1);
    }
}
