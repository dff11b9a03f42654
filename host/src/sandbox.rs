//! What a guest may do: the WASI context (no preopens, no environment, no
//! arguments, no network, empty stdin unless granted) and its memory limit.

use std::path::PathBuf;
use std::time::Duration;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::output::{GuestOutput, GuestStream};
use crate::{Error, ErrorKind};

/// The default cap on a guest's linear memory: 1 GiB.
pub const DEFAULT_MEMORY_LIMIT: u64 = 1024 * 1024 * 1024;
/// The default number of items a worker may run ahead of the caller.
pub const DEFAULT_BUFFER_SIZE: usize = 1024;
/// The default number of bytes a worker may run ahead of the caller (at
/// least one batch always fits).
pub const DEFAULT_BUFFER_BYTES: usize = 16 * 1024 * 1024;

/// The default largest item a plugin may return: 1 GiB.
pub const DEFAULT_MAX_ITEM_BYTES: u32 = 1 << 30;

/// A host directory granted to the guest, read-only.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct DirGrant {
    pub(crate) host: PathBuf,
    pub(crate) guest: String,
}

/// Everything about an iterable's worker that is not the plugin itself.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Options {
    pub(crate) buffer_size: usize,
    pub(crate) buffer_bytes: usize,
    pub(crate) timeout: Option<Duration>,
    pub(crate) memory_limit: u64,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) dirs: Vec<DirGrant>,
    pub(crate) fuel: Option<u64>,
    pub(crate) max_item_bytes: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            buffer_size: DEFAULT_BUFFER_SIZE,
            buffer_bytes: DEFAULT_BUFFER_BYTES,
            timeout: None,
            memory_limit: DEFAULT_MEMORY_LIMIT,
            env: Vec::new(),
            dirs: Vec::new(),
            fuel: None,
            max_item_bytes: DEFAULT_MAX_ITEM_BYTES,
        }
    }
}

impl Options {
    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.buffer_size == 0 {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "buffer size must be at least 1 item",
            ));
        }
        if self.buffer_bytes == 0 {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "buffer bytes must be at least 1",
            ));
        }
        if self.fuel == Some(0) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "fuel must be at least 1",
            ));
        }
        if self.timeout == Some(Duration::ZERO) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "timeout must be longer than zero",
            ));
        }
        for dir in &self.dirs {
            if !dir.host.is_dir() {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "cannot grant directory `{}`: it is not a directory on the host",
                        dir.host.display()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The data of one guest's store.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    /// The fuel budget per pass, if any (for messages).
    pub(crate) fuel: Option<u64>,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl HostState {
    pub(crate) fn new(options: &Options, output: &GuestOutput) -> Result<HostState, Error> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdin(MemoryInputPipe::new(Vec::new()))
            .stdout(output.stream(GuestStream::Stdout))
            .stderr(output.stream(GuestStream::Stderr))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        for (key, value) in &options.env {
            wasi.env(key, value);
        }
        for dir in &options.dirs {
            wasi.preopened_dir(&dir.host, &dir.guest, FsPerms::ReadOnly)
                .map_err(|e| {
                    Error::new(
                        ErrorKind::InvalidInput,
                        format!("cannot grant directory `{}`: {e:#}", dir.host.display()),
                    )
                })?;
        }
        Ok(HostState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                max_bytes: options.memory_limit,
                denied: None,
            },
            fuel: options.fuel,
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
