//! Start-up of sandgen's iterables, measured inside one process, the way a
//! data loader that opens one iterable per shard meets it.
//!
//! Loads PLUGIN once, then creates ITERABLES iterables of GENERATOR one
//! after another; each is built, its first item taken (the time from the
//! call that builds it to that item is "first item"), the rest of its pass
//! read, and the iterable dropped. Prints one JSON object: the load time,
//! the median, 10th and 90th percentile of the first-item times (the first
//! iterable apart: it pays for the process's first guest), the total time,
//! and the resident memory after the 1st, 100th, half and last iterables.
//!
//! Run: `cargo run -p sandgen-bench --bin sandgen-bench-startup -- \
//!   PLUGIN GENERATOR ARGS_JSON [thread|process] [ITERABLES]`

use std::time::Instant;

fn main() {
    sandgen::run_worker_if_requested();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [plugin, generator, json, rest @ ..] = args.as_slice() else {
        eprintln!(
            "usage: sandgen-bench-startup PLUGIN GENERATOR ARGS_JSON [thread|process] [ITERABLES]"
        );
        std::process::exit(2);
    };
    let isolation: sandgen::Isolation = rest
        .first()
        .map_or("thread", String::as_str)
        .parse()
        .unwrap_or_else(|e| fail(e));
    let iterables: usize = rest
        .get(1)
        .map_or(Ok(50), |n| n.parse())
        .unwrap_or_else(|e| fail(e));
    let engine = sandgen::Engine::new().unwrap_or_else(|e| fail(e));
    let loading = Instant::now();
    let plugin = engine.load(plugin).unwrap_or_else(|e| fail(e));
    let load_ms = loading.elapsed().as_secs_f64() * 1e3;
    let started = Instant::now();
    let mut first_items = Vec::with_capacity(iterables);
    let mut rss = serde_json::Map::new();
    for i in 1..=iterables {
        let building = Instant::now();
        let iterable = plugin
            .generator(generator)
            .encoding(sandgen::Encoding::Json)
            .args_raw(json.as_bytes().to_vec())
            .isolation(isolation)
            .build()
            .unwrap_or_else(|e| fail(e));
        let mut pass = iterable.iter_raw().unwrap_or_else(|e| fail(e));
        let first = pass.next_item();
        first_items.push(building.elapsed().as_secs_f64() * 1e3);
        if let Some(Err(e)) = first {
            fail(e);
        }
        while let Some(item) = pass.next_item() {
            item.unwrap_or_else(|e| fail(e));
        }
        drop(pass);
        drop(iterable);
        if i == 1 || i == 100 || i == iterables / 2 || i == iterables {
            rss.insert(i.to_string(), resident_kib().into());
        }
    }
    let total_s = started.elapsed().as_secs_f64();
    let first = first_items.first().copied();
    let mut warm = first_items.split_off(1.min(first_items.len()));
    warm.sort_by(f64::total_cmp);
    let at = |q: f64| {
        warm.get(((warm.len() as f64 - 1.0) * q).round() as usize)
            .copied()
    };
    let report = serde_json::json!({
        "iterables": iterables,
        "isolation": isolation.to_string(),
        "load_ms": load_ms,
        "first_iterable_first_item_ms": first,
        "first_item_ms": {"p10": at(0.1), "median": at(0.5), "p90": at(0.9)},
        "total_s": total_s,
        "rss_kib": rss,
        "peak_rss_kib": peak_resident_kib(),
    });
    println!("{report}");
}

fn fail(e: impl std::fmt::Display) -> ! {
    eprintln!("sandgen-bench-startup: {e}");
    std::process::exit(1);
}

/// This process's resident memory now, from /proc/self/statm.
fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4)
}

/// This process's peak resident memory, from /proc/self/status.
fn peak_resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}
