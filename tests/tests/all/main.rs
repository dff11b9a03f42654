//! sandgen's end-to-end tests: one binary, a module per area.

mod examples;
mod faults;
mod loading;
mod protocol;
mod sandbox;
mod spdl;
