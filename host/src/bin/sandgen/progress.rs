//! Part of the `sandgen` binary (`main.rs`), not of the library: the live
//! progress line of `run` and `bench` on stderr, shown only when stderr is
//! a terminal: items, bytes and rates, and each worker's items when there
//! are several.

use std::io::IsTerminal as _;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sandgen::Delivered;

/// The bar, while one is shown: guest output lines are printed above it.
static BAR: OnceLock<ProgressBar> = OnceLock::new();

/// How often the line is redrawn at most.
const REDRAW: Duration = Duration::from_millis(100);

/// Items between two looks at the clock.
const CHECK_EVERY: u32 = 1024;

pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
    last: Instant,
    /// Items since the clock was last read.
    since_check: u32,
    /// Items and bytes of earlier passes.
    earlier: Delivered,
}

impl Progress {
    /// A progress line on stderr, when stderr is a terminal; otherwise
    /// nothing is ever drawn.
    pub(crate) fn new() -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(10));
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg}").expect("a valid template"),
            );
            let _ = BAR.set(bar.clone());
            bar
        });
        let now = Instant::now();
        Progress {
            bar,
            started: now,
            last: now,
            since_check: 0,
            earlier: Delivered::default(),
        }
    }

    /// Called after each item with what the pass delivered so far.
    pub(crate) fn item(&mut self, delivered: &[Delivered]) {
        let Some(bar) = &self.bar else { return };
        self.since_check += 1;
        if self.since_check < CHECK_EVERY && self.started != self.last {
            return;
        }
        self.since_check = 0;
        let now = Instant::now();
        if now.duration_since(self.last) < REDRAW && self.started != self.last {
            return;
        }
        self.last = now;
        bar.set_message(line(
            self.earlier,
            delivered,
            now.duration_since(self.started),
        ));
        bar.tick();
    }

    /// Called at the end of each pass.
    pub(crate) fn pass_done(&mut self, delivered: &[Delivered]) {
        for d in delivered {
            self.earlier.items += d.items;
            self.earlier.bytes += d.bytes;
        }
    }

    /// Removes the line (as dropping it does, on an error too).
    pub(crate) fn finish(self) {}
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The text of the line.
fn line(earlier: Delivered, delivered: &[Delivered], elapsed: Duration) -> String {
    let items = earlier.items + delivered.iter().map(|d| d.items).sum::<u64>();
    let bytes = earlier.bytes + delivered.iter().map(|d| d.bytes).sum::<u64>();
    let seconds = elapsed.as_secs_f64().max(1e-9);
    let mut text = format!(
        "{items} items, {}, {}/s, {}/s",
        megabytes(bytes as f64),
        count(items as f64 / seconds),
        megabytes(bytes as f64 / seconds),
    );
    if delivered.len() > 1 {
        let workers: Vec<String> = delivered
            .iter()
            .enumerate()
            .map(|(i, d)| format!("w{i} {}", d.items))
            .collect();
        text.push_str(&format!(" [{}]", workers.join(" · ")));
    }
    text
}

fn megabytes(bytes: f64) -> String {
    format!("{:.1} MB", bytes / 1e6)
}

fn count(n: f64) -> String {
    if n >= 1e6 {
        format!("{:.1} M items", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1} k items", n / 1e3)
    } else {
        format!("{n:.0} items")
    }
}

/// Writes `text` to stderr, above the progress line when one is shown.
pub(crate) fn eprint_line(text: &str) {
    let write = || {
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), "{text}");
    };
    match BAR.get() {
        Some(bar) if !bar.is_finished() => bar.suspend(write),
        _ => write(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_counts_items_bytes_rates_and_workers() {
        let delivered = [
            Delivered {
                items: 1500,
                bytes: 3_000_000,
            },
            Delivered {
                items: 500,
                bytes: 1_000_000,
            },
        ];
        let text = line(Delivered::default(), &delivered, Duration::from_secs(2));
        assert_eq!(
            text,
            "2000 items, 4.0 MB, 1.0 k items/s, 2.0 MB/s [w0 1500 · w1 500]"
        );
        let one = line(
            Delivered {
                items: 10,
                bytes: 10,
            },
            &[Delivered {
                items: 2_000_000,
                bytes: 0,
            }],
            Duration::from_secs(1),
        );
        assert_eq!(one, "2000010 items, 0.0 MB, 2.0 M items/s, 0.0 MB/s");
    }
}
