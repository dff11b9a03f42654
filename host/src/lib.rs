//! sandgen runs generator functions compiled to WebAssembly components in
//! sandboxed workers and streams their items back.
//!
//! A plugin exports generators through the WIT contract in
//! `wit/generator.wit` (write one in Rust with the `sandgen-guest` crate, or
//! in any language with a component toolchain). The host loads it once
//! ([`Engine::load`]), creates an [`Iterable`] per generator and arguments
//! ([`Plugin::generator`]), and iterates it any number of times: each pass is
//! a plain [`Iterator`] of decoded items.
//!
//! ```no_run
//! # fn main() -> Result<(), sandgen::Error> {
//! let engine = sandgen::Engine::new()?;
//! let plugin = engine.load("plugin.wasm")?;
//! let iterable = plugin.generator("range").args(&5u64).build()?;
//! for epoch in 0..2 {
//!     for item in iterable.iter::<u64>()? {
//!         println!("epoch {epoch}: {}", item?);
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # How it runs
//!
//! Each iterable has a worker with its own wasm instance and store: a thread
//! of this process ([`Isolation::Thread`], the default) or a child process
//! ([`Isolation::Process`]) running the same code over its stdin and stdout
//! (large batches through shared memory on Linux).
//! The worker follows the protocol of SPDL's `iterate_in_subprocess`:
//! creating the iterable runs the plugin's initializer and `create` and
//! blocks until they succeeded or failed; each pass is started by the caller
//! and ended by the worker (or stopped early by dropping the pass). Items
//! travel in batches through a queue bounded by
//! [`buffer_size`](IterableBuilder::buffer_size) items, the back-pressure.
//!
//! Compiled components are cached on disk (see [`EngineBuilder`]), so only
//! the first load of a plugin pays for compilation.
//!
//! # Resume
//!
//! [`Iterable::position`] says where a run stands (a [`Position`]: JSON,
//! versioned, checksummed); [`IterableBuilder::resume`] starts a new
//! iterable there, and its passes give exactly the items the uninterrupted
//! run gives from that point. A position binds to its run (the plugin's
//! contents, generator, arguments, config, seed, workers, order and
//! sharding): anything else is refused by name.
//!
//! # The sandbox
//!
//! A guest gets nothing it is not given: no files, no environment variables,
//! no arguments, no network, an empty stdin, and at most 1 GiB of linear
//! memory. Its stdout and stderr go to the host's stderr (or a handler),
//! never into the items. See [`IterableBuilder`] for every default and the
//! options that grant more.
//!
//! # Errors
//!
//! Every failure is an [`Error`] whose [`ErrorKind`] says what happened:
//! the plugin's own errors keep its message verbatim, traps keep the guest's
//! stderr (a Rust panic's message) and a backtrace.
//!
//! # Layout
//!
//! ARCHITECTURE.md (at the repository's root) describes the parts, the
//! protocol as a state diagram and the direction of dependencies between
//! this crate's modules.
#![deny(missing_docs)]

// The modules, top layer first (ARCHITECTURE.md draws the layers; the
// test `architecture` holds the code to them).
mod entry;

mod caller;
mod engine;
mod iterable;
mod pass;
mod plugin;

mod loader;

mod worker;

mod guest;

mod imports;

mod cache;
mod compile;

mod clock;
mod codec;
mod error;
mod failure;
mod fork;
mod options;
mod position;
mod program;
mod protocol;
mod text;

/// Helpers of the unit tests.
#[cfg(test)]
mod testing {
    /// A xorshift64 stream from `seed`: the fuzz tests' dependency-free
    /// randomness, the same in every run.
    pub(crate) fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        }
    }
}

/// The generated bindings of `wit/generator.wit`; private.
mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "plugin",
        exports: { default: async },
    });
}

pub use crate::compile::{DEFAULT_LOAD_MEMORY, DEFAULT_LOAD_TIMEOUT};
pub use crate::engine::{Engine, EngineBuilder};
pub use crate::entry::{run_worker_from_args, run_worker_if_requested};
pub use crate::error::{Error, ErrorKind};
pub use crate::failure::{DEFAULT_MAX_RESTARTS, Failure, OnFailure};
pub use crate::guest::output::{GuestStream, OutputLine};
pub use crate::iterable::{Batches, Iterable, IterableBuilder, MAX_WORKERS};
pub use crate::options::{
    DEFAULT_BUFFER_BYTES, DEFAULT_BUFFER_SIZE, DEFAULT_MAX_ITEM_BYTES, DEFAULT_MEMORY_LIMIT,
    Sharding,
};
pub use crate::pass::{Batch, BatchItems, Delivered, NextBatch, Pass, RawPass};
pub use crate::plugin::{GeneratorInfo, Plugin};
pub use crate::position::{POSITION_FORMAT, Position};
pub use crate::text::{cut_text, escape_text};
pub use crate::worker::Isolation;
pub use crate::worker::process::confine::Confinement;
#[doc(no_inline)]
pub use sandgen_wire::{Array, ArrayError, Dtype, Element, Encoding};
