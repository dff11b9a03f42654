//! Example host: embeds sandgen in a Rust program to feed a training loop
//! with token windows from the tokenize example, two epochs over one worker.
//!
//! Build the plugin: `cargo build --release --target wasm32-wasip2 -p example-tokenize`
//! Run:              `cargo run -p example-embed -- target/wasm32-wasip2/release/example_tokenize.wasm`

use std::time::Duration;

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .context("usage: example-embed PATH/TO/example_tokenize.wasm")?;
    let engine = sandgen::Engine::new()?;
    let plugin = engine.load(&path)?;
    for info in plugin.generators()? {
        println!("generator {}: {}", info.name, info.description);
    }

    #[derive(serde::Serialize)]
    struct Args<'a> {
        text: &'a str,
        window: usize,
        shuffle_seed: u64,
    }
    let text = "It was the best of times, it was the worst of times.\n\n\
                It was the age of wisdom, it was the age of foolishness.";
    let iterable = plugin
        .generator("windows")
        .args(&Args {
            text,
            window: 8,
            shuffle_seed: 42,
        })
        .buffer_size(64)
        .timeout(Duration::from_secs(10))
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
    Ok(())
}
