//! Example host: embeds sandgen in a Rust program to feed a training loop
//! with token windows from the tokenize example, two epochs over one worker,
//! in a worker thread or a worker process.
//!
//! Build the plugin: `cargo build --release --target wasm32-wasip2 -p example-tokenize`
//! Run:              `cargo run -p sandgen --example embed -- target/wasm32-wasip2/release/example_tokenize.wasm [thread|process]`
//!
//! In process isolation the worker is this very program: it calls
//! `sandgen::run_worker_if_requested()` first thing in `main`.

use std::time::Duration;

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    // A worker process started by this program runs here, and exits.
    sandgen::run_worker_if_requested();
    let usage = "usage: embed PATH/TO/example_tokenize.wasm [thread|process]";
    let path = std::env::args().nth(1).context(usage)?;
    let isolation: sandgen::Isolation = match std::env::args().nth(2) {
        Some(mode) => mode.parse().context(usage)?,
        None => sandgen::Isolation::default(),
    };
    let engine = sandgen::Engine::new()?;
    let plugin = engine.load(&path)?;
    for info in plugin.generators()? {
        println!("generator {}: {}", info.name, info.description);
    }

    // The plugin's own `Args`, field for field: with the bincode encoding
    // (the default for Rust callers), arguments are the struct's bincode.
    #[derive(serde::Serialize)]
    struct Args<'a> {
        text: Option<&'a str>,
        path: Option<&'a str>,
        window: usize,
        stride: Option<usize>,
        vocab_size: Option<u32>,
        shuffle_seed: Option<u64>,
    }
    let text = "It was the best of times, it was the worst of times.\n\n\
                It was the age of wisdom, it was the age of foolishness.";
    let iterable = plugin
        .generator("windows")
        .args(&Args {
            text: Some(text),
            path: None,
            window: 8,
            stride: None,
            vocab_size: None,
            shuffle_seed: Some(42),
        })
        .buffer_size(64)
        .timeout(Duration::from_secs(10))
        .isolation(isolation)
        .build()?;
    for epoch in 0..2 {
        let mut tokens = 0;
        for window in iterable.iter::<Vec<u32>>()? {
            let window = window?;
            tokens += window.len();
            println!("epoch {epoch}: {window:?}");
        }
        println!("epoch {epoch}: {tokens} tokens");
    }
    println!("worker process: {:?}", iterable.worker_pid().is_some());
    Ok(())
}
