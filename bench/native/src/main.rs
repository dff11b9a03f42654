//! Native baselines for `bench/run.sh`: the workloads of `sandgen bench`
//! without any sandbox.
//!
//! - `native`: a plain Rust iterator whose items are encoded with bincode
//!   (as a plugin encodes them) and decoded again by the consumer (as a typed
//!   sandgen caller would), in one thread.
//! - `crossbeam`: the same items produced on one thread and handed over,
//!   encoded, through a bounded crossbeam channel (1024 items) to another.
//!
//! Prints one JSON object per workload and baseline, with the fields of
//! `sandgen bench`.
//!
//! Run: `cargo run -p sandgen-bench -- ints 200000` (or `bytes N SIZE`).

use std::time::Instant;

use serde_bytes::ByteBuf;

const BINCODE: bincode::config::Configuration = bincode::config::standard();

#[derive(Clone, Copy)]
enum Workload {
    Ints(u64),
    Bytes { n: u64, size: usize },
}

impl Workload {
    /// The items, encoded into a reused buffer, handed to `sink` one by one.
    fn produce(&self, mut sink: impl FnMut(&[u8])) {
        let mut buf = Vec::with_capacity(64);
        match *self {
            Workload::Ints(n) => {
                for i in 0..n {
                    buf.clear();
                    bincode::serde::encode_into_std_write(i, &mut buf, BINCODE).unwrap();
                    sink(&buf);
                }
            }
            Workload::Bytes { n, size } => {
                for i in 0..n {
                    let item = ByteBuf::from(vec![i as u8; size]);
                    buf.clear();
                    bincode::serde::encode_into_std_write(&item, &mut buf, BINCODE).unwrap();
                    sink(&buf);
                }
            }
        }
    }

    /// Decodes one item as a typed caller would; returns a checksum part.
    fn consume(&self, bytes: &[u8]) -> u64 {
        match self {
            Workload::Ints(_) => {
                bincode::serde::decode_from_slice::<u64, _>(bytes, BINCODE)
                    .unwrap()
                    .0
            }
            Workload::Bytes { .. } => {
                let item: ByteBuf = bincode::serde::decode_from_slice(bytes, BINCODE).unwrap().0;
                item.len() as u64
            }
        }
    }
}

fn report(name: &str, items: u64, bytes: u64, seconds: f64, first_item: f64) {
    let value = serde_json::json!({
        "baseline": name,
        "items": items,
        "bytes": bytes,
        "seconds": seconds,
        "items_per_second": items as f64 / seconds,
        "megabytes_per_second": bytes as f64 / seconds / 1e6,
        "first_item_ms": first_item * 1e3,
    });
    println!("{value}");
}

fn native(workload: &Workload) {
    let started = Instant::now();
    let (mut items, mut bytes, mut sum, mut first) = (0u64, 0u64, 0u64, None);
    workload.produce(|item| {
        first.get_or_insert_with(|| started.elapsed().as_secs_f64());
        items += 1;
        bytes += item.len() as u64;
        sum = sum.wrapping_add(workload.consume(item));
    });
    let seconds = started.elapsed().as_secs_f64();
    std::hint::black_box(sum);
    report("native", items, bytes, seconds, first.unwrap_or_default());
}

fn crossbeam(workload: Workload) {
    let (tx, rx) = crossbeam_channel::bounded::<Vec<u8>>(1024);
    let started = Instant::now();
    let producer =
        std::thread::spawn(move || workload.produce(|item| tx.send(item.to_vec()).unwrap()));
    let (mut items, mut bytes, mut sum, mut first) = (0u64, 0u64, 0u64, None);
    for item in rx {
        first.get_or_insert_with(|| started.elapsed().as_secs_f64());
        items += 1;
        bytes += item.len() as u64;
        sum = sum.wrapping_add(workload.consume(&item));
    }
    producer.join().unwrap();
    let seconds = started.elapsed().as_secs_f64();
    std::hint::black_box(sum);
    report(
        "crossbeam",
        items,
        bytes,
        seconds,
        first.unwrap_or_default(),
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize| -> u64 {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("usage: sandgen-bench-native ints N | bytes N SIZE"))
    };
    let workload = || match args.first().map(String::as_str) {
        Some("ints") => Workload::Ints(number(1)),
        Some("bytes") => Workload::Bytes {
            n: number(1),
            size: number(2) as usize,
        },
        _ => panic!("usage: sandgen-bench-native ints N | bytes N SIZE"),
    };
    native(&workload());
    crossbeam(workload());
}
