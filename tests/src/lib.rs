//! The guests of sandgen's end-to-end tests (`tests/all`), built from
//! source for `wasm32-wasip2` by build.rs: fixtures and example plugins.

/// Paths of the guests built from source by build.rs.
pub mod artifacts {
    include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));
}
