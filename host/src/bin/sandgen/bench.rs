//! Part of the `sandgen` binary (`main.rs`), not of the library: `sandgen
//! bench`, which iterates a generator and does with every item what a
//! consumer would, so that its figures compare like for like with a
//! consumer that decodes what it receives (SPDL's unpickling loop, a native
//! iterator's `bincode` decode).

use std::hint::black_box;
use std::io::{self, Write};
use std::time::Instant;

use sandgen::Encoding;
use serde_bytes::ByteBuf;

use crate::{Failure, RunArgs, build, load, progress, usage};

/// What `sandgen bench` does with each item it receives.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Decode {
    /// JSON items, each parsed into a value (any generator).
    Json,
    /// bincode items, each decoded as an unsigned integer (summed).
    U64,
    /// bincode items, each decoded as a byte string into a buffer of its
    /// own (one copy of its bytes).
    Bytes,
    /// bincode items counted and not read: the transport alone, not a
    /// consumer's work.
    None,
}

impl Decode {
    fn name(self) -> &'static str {
        match self {
            Decode::Json => "json",
            Decode::U64 => "u64",
            Decode::Bytes => "bytes",
            Decode::None => "none",
        }
    }

    fn encoding(self) -> Encoding {
        match self {
            Decode::Json => Encoding::Json,
            Decode::U64 | Decode::Bytes | Decode::None => Encoding::Bincode,
        }
    }

    /// Copies of an item's bytes the consumer makes, after the item left
    /// the worker: decoding a byte string copies it into its own buffer;
    /// `u64` and `none` read the delivered bytes in place. Parsing JSON
    /// builds a value whose strings and arrays are allocations of their
    /// own, which are not counted as copies: `None`.
    fn copies(self) -> Option<u64> {
        match self {
            Decode::Json => None,
            Decode::Bytes => Some(1),
            Decode::U64 | Decode::None => Some(0),
        }
    }

    /// Does the work with one item; returns what adds to the checksum.
    fn consume(self, index: u64, item: &[u8]) -> Result<u64, Failure> {
        let failed = |what: &str, error: sandgen_wire::CodecError| {
            usage(anyhow::anyhow!(
                "item {index} is not {what}: {}; choose the --decode that matches \
                 what the generator yields (json, u64, bytes or none)",
                error.message()
            ))
        };
        Ok(match self {
            Decode::Json => {
                let value: serde_json::Value =
                    Encoding::Json.decode(item).map_err(|e| failed("JSON", e))?;
                json_sum(black_box(&value))
            }
            Decode::U64 => Encoding::Bincode
                .decode::<u64>(item)
                .map_err(|e| failed("a bincode u64", e))?,
            Decode::Bytes => {
                let bytes: ByteBuf = Encoding::Bincode
                    .decode(item)
                    .map_err(|e| failed("a bincode byte string", e))?;
                black_box(&bytes).len() as u64
            }
            Decode::None => item.len() as u64,
        })
    }
}

/// What a parsed JSON value adds to the checksum: its numbers (as integers),
/// the lengths of its strings, its true booleans, through every array and
/// object; so that a checksum depends on what was parsed.
fn json_sum(value: &serde_json::Value) -> u64 {
    use serde_json::Value;
    match value {
        Value::Null => 0,
        Value::Bool(b) => u64::from(*b),
        Value::Number(n) => n
            .as_u64()
            .unwrap_or_else(|| n.as_f64().unwrap_or(0.0) as u64),
        Value::String(s) => s.len() as u64,
        Value::Array(items) => items.iter().map(json_sum).fold(0, u64::wrapping_add),
        Value::Object(fields) => fields
            .iter()
            .map(|(k, v)| json_sum(v).wrapping_add(k.len() as u64))
            .fold(0, u64::wrapping_add),
    }
}

pub(crate) fn bench(args: RunArgs, decode: Decode) -> Result<(), Failure> {
    let loading = Instant::now();
    let plugin = load(&args)?;
    let load_ms = loading.elapsed().as_secs_f64() * 1e3;
    // "Call to first item": from building the iterable (worker start,
    // instantiation, initializer, create) to the first item, like SPDL's
    // iterate_in_subprocess call; loading the plugin is `load_ms`.
    let started = Instant::now();
    let iterable = build(&plugin, &args, decode.encoding(), None)?;
    let mut first_item = None;
    let (mut items, mut bytes, mut checksum) = (0u64, 0u64, 0u64);
    let mut left = args.take.unwrap_or(u64::MAX);
    let mut progress = progress::Progress::new();
    let iterating = Instant::now();
    'passes: for _ in 0..args.passes {
        if left == 0 {
            break;
        }
        let mut pass = iterable.iter_raw()?;
        while let Some(item) = pass.next_item() {
            let item = item?;
            first_item.get_or_insert_with(|| started.elapsed());
            checksum = checksum.wrapping_add(decode.consume(items, item)?);
            items += 1;
            bytes += item.len() as u64;
            left -= 1;
            progress.item(pass.delivered());
            if left == 0 {
                break 'passes;
            }
        }
        progress.pass_done(pass.delivered());
    }
    let seconds = iterating.elapsed().as_secs_f64();
    progress.finish();
    drop(iterable);
    let report = serde_json::json!({
        "decode": decode.name(),
        "items": items,
        "bytes": bytes,
        "checksum": checksum,
        "consumer_copies_per_item": decode.copies(),
        "seconds": seconds,
        "items_per_second": if seconds > 0.0 { items as f64 / seconds } else { 0.0 },
        "megabytes_per_second": if seconds > 0.0 { bytes as f64 / seconds / 1e6 } else { 0.0 },
        "first_item_ms": first_item.map(|d| d.as_secs_f64() * 1e3),
        "load_ms": load_ms,
    });
    // A closed stdout has nobody left to tell.
    let _ = writeln!(io::stdout().lock(), "{report}");
    Ok(())
}
