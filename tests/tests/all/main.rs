//! sandgen's end-to-end tests: one binary, a module per area.

mod examples;
mod loading;
mod protocol;
mod sandbox;
mod spdl;
