//! The data of one guest's store: its imports' state and its limits.

use wasmtime::ResourceLimiter;
use wasmtime_wasi::{WasiCtxView, WasiView};

use crate::error::Error;
use crate::guest::output::{GuestOutput, GuestStream};
use crate::imports::wasi::WasiState;
use crate::options::{Grants, Limits};

/// The data of one guest's store.
pub(crate) struct HostState {
    wasi: WasiState,
    pub(crate) limiter: MemoryLimiter,
    /// The fuel budget per pass, if any (for messages).
    pub(crate) fuel: Option<u64>,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        self.wasi.view()
    }
}

impl HostState {
    pub(crate) fn new(
        grants: &Grants,
        limits: &Limits,
        output: &GuestOutput,
    ) -> Result<HostState, Error> {
        Ok(HostState {
            wasi: WasiState::new(
                grants,
                output.stream(GuestStream::Stdout),
                output.stream(GuestStream::Stderr),
            )?,
            limiter: MemoryLimiter {
                max_bytes: limits.memory,
                denied: None,
            },
            fuel: limits.fuel,
        })
    }
}

/// Caps linear memory and remembers a refused growth, so that the trap that
/// usually follows is reported as a memory limit.
pub(crate) struct MemoryLimiter {
    max_bytes: u64,
    /// The size a refused growth asked for.
    pub(crate) denied: Option<u64>,
}

impl MemoryLimiter {
    pub(crate) fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Forgets a refused growth before a new guest call: a guest that
    /// handled one (`try_reserve`) and trapped later for another reason is
    /// not reported as out of memory.
    pub(crate) fn forget(&mut self) {
        self.denied = None;
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.max_bytes {
            self.denied = Some(desired as u64);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Table elements are host memory too; a million is far more than any
        // real plugin needs.
        Ok(desired <= 1_000_000)
    }
}
