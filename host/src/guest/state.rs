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
    /// The guest paths of the granted directories (for messages).
    pub(crate) granted: Vec<String>,
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
            limiter: MemoryLimiter::new(limits.memory),
            fuel: limits.fuel,
            granted: grants.dirs.iter().map(|dir| dir.guest.clone()).collect(),
        })
    }
}

/// The most core instances a plugin's store may hold (the Python and
/// JavaScript plugins of the tests need between 9 and 16).
pub(crate) const MAX_INSTANCES: usize = 64;
/// The most linear memories a plugin's store may hold.
pub(crate) const MAX_MEMORIES: usize = 16;
/// The most tables a plugin's store may hold.
pub(crate) const MAX_TABLES: usize = 64;
/// The most table elements, all tables together (each is host memory).
const MAX_TABLE_ELEMENTS: u64 = 1_000_000;

/// Caps what a plugin's store can allocate, all of it together: the sum of
/// its linear memories (their initial sizes included) against the memory
/// cap, the sum of its tables' elements, and the number of instances,
/// memories and tables. Remembers a refused growth, so that the trap that
/// usually follows is reported as a memory limit.
pub(crate) struct MemoryLimiter {
    /// Bytes of linear memory, all memories together.
    memory: Tally,
    /// Elements, all tables together.
    elements: Tally,
    /// What the store's memories would have held together had a refused
    /// growth been allowed.
    pub(crate) denied: Option<u64>,
}

/// A running total against a maximum, with the last growth it allowed (to
/// give back if the growth then failed).
struct Tally {
    max: u64,
    used: u64,
    growing: u64,
}

impl Tally {
    fn new(max: u64) -> Self {
        Tally {
            max,
            used: 0,
            growing: 0,
        }
    }

    /// Counts a growth from `current` to `desired`, if the total stays
    /// within the maximum; otherwise `Err` with the total it would have
    /// reached.
    fn grow(&mut self, current: usize, desired: usize) -> Result<(), u64> {
        let growth = (desired as u64).saturating_sub(current as u64);
        let after = self.used.saturating_add(growth);
        if after > self.max {
            return Err(after);
        }
        self.used = after;
        self.growing = growth;
        Ok(())
    }

    /// Gives back the last growth, which failed.
    fn failed(&mut self) {
        self.used -= std::mem::take(&mut self.growing);
    }
}

impl MemoryLimiter {
    pub(crate) fn new(max_bytes: u64) -> Self {
        MemoryLimiter {
            memory: Tally::new(max_bytes),
            elements: Tally::new(MAX_TABLE_ELEMENTS),
            denied: None,
        }
    }

    pub(crate) fn max_bytes(&self) -> u64 {
        self.memory.max
    }

    /// Forgets a refused growth before a new guest call: a guest that
    /// handled one (`try_reserve`) and trapped later for another reason is
    /// not reported as out of memory.
    pub(crate) fn forget(&mut self) {
        self.denied = None;
    }
}

impl ResourceLimiter for MemoryLimiter {
    /// Also called with `current` 0 when a memory is created.
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grown = self.memory.grow(current, desired);
        if let Err(after) = grown {
            self.denied = Some(after);
        }
        Ok(grown.is_ok())
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.memory.failed();
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.elements.grow(current, desired).is_ok())
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.elements.failed();
        Ok(())
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn the_cap_covers_all_memories_together() {
        let mut limiter = MemoryLimiter::new(64 << 20);
        // Twenty memories of 3 MiB each are created: 21 of them fit in 64.
        for _ in 0..21 {
            assert!(limiter.memory_growing(0, 3 * MIB, None).unwrap());
        }
        assert!(!limiter.memory_growing(0, 3 * MIB, None).unwrap());
        assert_eq!(limiter.denied, Some(66 << 20));
        // Growing one of them counts only the growth.
        assert!(limiter.memory_growing(3 * MIB, 4 * MIB, None).unwrap());
        assert!(!limiter.memory_growing(4 * MIB, 6 * MIB, None).unwrap());
    }

    #[test]
    fn a_failed_growth_is_given_back() {
        let mut limiter = MemoryLimiter::new(10 << 20);
        assert!(limiter.memory_growing(0, 8 * MIB, None).unwrap());
        limiter
            .memory_grow_failed(wasmtime::Error::msg("no memory"))
            .unwrap();
        assert!(limiter.memory_growing(0, 8 * MIB, None).unwrap());
    }

    #[test]
    fn table_elements_are_capped_all_tables_together() {
        let mut limiter = MemoryLimiter::new(1 << 30);
        assert!(limiter.table_growing(0, 600_000, None).unwrap());
        assert!(!limiter.table_growing(0, 600_000, None).unwrap());
        assert!(limiter.table_growing(0, 400_000, None).unwrap());
    }
}
