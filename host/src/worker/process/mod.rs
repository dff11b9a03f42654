//! The process flavour: the worker runs in a child process (the `sandgen`
//! binary, or any program that calls
//! [`run_worker_if_requested`](crate::run_worker_if_requested)), speaking
//! the protocol over its stdin and stdout. Inside the child the very same
//! thread flavour runs; the parent feeds the same status queue that a
//! worker thread feeds, so everything on the caller's side is shared.
//!
//! - [`parent`]: starts the child and forwards commands to it.
//! - [`reader`]: reads its reports, reaps it and reports its death.
//! - [`child`]: the worker program's side (`entry.rs` starts it).
//! - [`wire`]: the framing and the versioned handshake between them.
//! - [`shared`]: the shared-memory region large item batches cross.
//! - [`confine`]: the OS confinement a child applies to itself before any
//!   guest code runs.

pub(crate) mod child;
pub(crate) mod confine;
mod parent;
mod reader;
#[cfg(target_os = "linux")]
mod shared;
mod wire;

pub(crate) use crate::worker::process::parent::{
    ProcessSpec, ProcessWorker, Recycler, check_start,
};
pub(crate) use crate::worker::process::wire::WORKER_ARG;
