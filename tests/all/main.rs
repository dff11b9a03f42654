//! sandgen's end-to-end tests: one binary, a module per area, helpers in
//! `util`. They are the `sandgen` package's integration tests (see
//! host/Cargo.toml), so they can run the `sandgen` binary too.

#[macro_use]
mod util;

mod architecture;
mod batches;
mod cache;
mod cli;
mod compiling;
mod confinement;
mod conformance;
mod epochs;
mod examples;
mod failures;
mod faults;
mod images;
mod languages;
mod loading;
mod output;
mod process;
mod protocol;
mod resume;
mod resume_fast;
mod resume_kills;
mod sandbox;
mod sharding;
mod spdl;
mod transport;
mod workers;
