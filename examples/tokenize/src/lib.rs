//! Example plugin: tokenizes text into fixed-length windows of token ids for
//! language-model training (hashed word-level vocabulary, padding id 0, one
//! end-of-document id), with an optional per-epoch shuffle of the windows.
//! Several workers share the windows: each yields every n-th of the order.
//!
//! Build: `cargo build --release --target wasm32-wasip2 -p example-tokenize`
//! Run:   `sandgen run target/wasm32-wasip2/release/example_tokenize.wasm windows --args '{"text": "the quick brown fox jumps over the lazy dog", "window": 4}'`

use std::fs;

use sandgen_guest::{Error, Generator, export_plugin};
use serde::Deserialize;

/// Token id 0 pads the last window.
const PAD: u32 = 0;
/// Token id 1 ends each document.
const EOD: u32 = 1;
/// Ids below this are reserved.
const FIRST_WORD_ID: u32 = 2;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    /// The text to tokenize; documents are separated by blank lines.
    #[serde(default)]
    text: Option<String>,
    /// Or a file to read it from (grant its directory with `--dir`).
    #[serde(default)]
    path: Option<String>,
    /// Tokens per window.
    window: usize,
    /// How far each window starts after the previous one (default: `window`,
    /// no overlap).
    #[serde(default)]
    stride: Option<usize>,
    /// Size of the hashed vocabulary (default 32768).
    #[serde(default)]
    vocab_size: Option<u32>,
    /// Shuffle the windows with this seed; each pass uses the next seed.
    #[serde(default)]
    shuffle_seed: Option<u64>,
}

struct Windows {
    tokens: Vec<u32>,
    window: usize,
    stride: usize,
    seed: Option<u64>,
}

/// FNV-1a: a stable hash, so ids do not change between runs or machines.
fn fnv1a(word: &str) -> u64 {
    word.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn tokenize(text: &str, vocab: u32) -> Vec<u32> {
    let mut tokens = Vec::new();
    for document in text.split("\n\n").filter(|d| !d.trim().is_empty()) {
        let words = document
            .split(|c: char| !c.is_alphanumeric() && c != '\'')
            .filter(|w| !w.is_empty())
            .map(|w| w.to_lowercase());
        tokens.extend(
            words.map(|w| FIRST_WORD_ID + (fnv1a(&w) % u64::from(vocab - FIRST_WORD_ID)) as u32),
        );
        tokens.push(EOD);
    }
    tokens
}

/// A small, seeded permutation (xorshift64* Fisher–Yates).
fn shuffle(order: &mut [usize], seed: u64) {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for i in (1..order.len()).rev() {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let r = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
        order.swap(i, (r % (i as u64 + 1)) as usize);
    }
}

impl Generator for Windows {
    const NAME: &'static str = "windows";
    const DESCRIPTION: &'static str = "yields fixed-length windows of token ids from {text | path, window, stride?, vocab_size?, shuffle_seed?}";
    type Args = Args;
    type Item = Vec<u32>;
    type Iter = std::vec::IntoIter<Vec<u32>>;

    fn create(args: Args) -> Result<Self, Error> {
        let text = match (args.text, &args.path) {
            (Some(text), None) => text,
            (None, Some(path)) => fs::read_to_string(path)
                .map_err(|e| Error::msg(format!("cannot read {path}: {e}")))?,
            _ => return Err(Error::msg("give exactly one of `text` and `path`")),
        };
        let stride = args.stride.unwrap_or(args.window);
        if args.window == 0 || stride == 0 {
            return Err(Error::msg("`window` and `stride` must be at least 1"));
        }
        let vocab = args.vocab_size.unwrap_or(32768);
        if vocab <= FIRST_WORD_ID {
            return Err(Error::msg(format!(
                "`vocab_size` must be larger than {FIRST_WORD_ID}"
            )));
        }
        Ok(Windows {
            tokens: tokenize(&text, vocab),
            window: args.window,
            stride,
            seed: args.shuffle_seed,
        })
    }

    fn iter(&mut self) -> Result<Self::Iter, Error> {
        let starts: Vec<usize> = (0..self.tokens.len()).step_by(self.stride).collect();
        let mut order: Vec<usize> = (0..starts.len()).collect();
        if let Some(seed) = &mut self.seed {
            shuffle(&mut order, *seed);
            *seed = seed.wrapping_add(1);
        }
        // Each worker of the iterable takes its share of the (same) order:
        // every window once across the workers, in the order's order.
        let windows = sandgen_guest::worker().shard(order).map(|i| {
            let start = starts[i];
            let end = (start + self.window).min(self.tokens.len());
            let mut window = self.tokens[start..end].to_vec();
            window.resize(self.window, PAD);
            window
        });
        Ok(windows.collect::<Vec<_>>().into_iter())
    }
}

export_plugin!(generators: [Windows]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_end_with_eod_and_windows_are_padded() {
        let mut w = Windows::create(Args {
            text: Some("a b\n\nc".into()),
            path: None,
            window: 3,
            stride: None,
            vocab_size: Some(100),
            shuffle_seed: None,
        })
        .unwrap();
        let windows: Vec<Vec<u32>> = w.iter().unwrap().collect();
        assert_eq!(windows.len(), 2);
        assert_eq!(windows[1][1..], [EOD, PAD]);
        assert_eq!(windows[0].len(), 3);
        assert!(windows.iter().flatten().all(|&t| t < 100));
    }

    #[test]
    fn shuffle_changes_each_pass_and_keeps_every_window() {
        let text = (0..64)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let mut w = Windows::create(Args {
            text: Some(text),
            path: None,
            window: 4,
            stride: None,
            vocab_size: None,
            shuffle_seed: Some(7),
        })
        .unwrap();
        let first: Vec<Vec<u32>> = w.iter().unwrap().collect();
        let second: Vec<Vec<u32>> = w.iter().unwrap().collect();
        assert_ne!(first, second);
        let (mut a, mut b) = (first.clone(), second.clone());
        a.sort();
        b.sort();
        assert_eq!(a, b);
    }
}
