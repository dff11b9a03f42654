//! WASI 0.2 (every minor version that wasmtime-wasi links: Rust guests
//! import 0.2.6, Python 0.2.9, JavaScript 0.2.12), confined: no preopens,
//! no environment, no arguments, no network, empty stdin, unless the
//! iterable's [`Grants`] say otherwise. Directories are granted read-only.

use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::cli::StdoutStream;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView};

use crate::error::{Error, ErrorKind};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{Rng as _, SeedableRng as _};

use crate::options::{Grants, RandomStream};
use crate::text::{ECHO, cut_text};

/// The most WASI handles (open files, directory streams, streams,
/// pollables) one guest holds at once: each open file holds a descriptor of
/// its host process, which in thread isolation is the caller's, so a guest
/// cannot take the caller's descriptors (a worker process also has at most
/// 256 open files of its own). One more traps the guest
/// ([`ErrorKind::MemoryLimit`](crate::ErrorKind::MemoryLimit)).
pub(crate) const MAX_HANDLES: usize = 256;

/// One guest's WASI state.
pub(crate) struct WasiState {
    ctx: WasiCtx,
    table: ResourceTable,
}

impl WasiState {
    /// The context for `grants`, with the guest's stdout and stderr going to
    /// the given streams.
    pub(crate) fn new(
        grants: &Grants,
        stdout: impl StdoutStream + 'static,
        stderr: impl StdoutStream + 'static,
    ) -> Result<WasiState, Error> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdin(MemoryInputPipe::new(Vec::new()))
            .stdout(stdout)
            .stderr(stderr)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        for (key, value) in &grants.env {
            wasi.env(key, value);
        }
        if let Some(seeded) = &grants.random {
            // A named, portable generator (xoshiro256++), so that a seed
            // gives the same stream with any build on any machine.
            let rng = |stream| Xoshiro256PlusPlus::seed_from_u64(seeded.stream_seed(stream));
            let mut seed = rng(RandomStream::InsecureSeed);
            let insecure_seed = (u128::from(seed.next_u64()) << 64) | u128::from(seed.next_u64());
            wasi.secure_random(rng(RandomStream::Random))
                .insecure_random(rng(RandomStream::Insecure))
                .insecure_random_seed(insecure_seed);
        }
        for dir in &grants.dirs {
            wasi.preopened_dir(&dir.host, &dir.guest, FsPerms::ReadOnly)
                .map_err(|e| {
                    Error::new(
                        ErrorKind::InvalidInput,
                        format!(
                            "cannot grant directory `{}`: {e:#}",
                            cut_text(&dir.host.display().to_string(), ECHO)
                        ),
                    )
                })?;
        }
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_HANDLES);
        Ok(WasiState {
            ctx: wasi.build(),
            table,
        })
    }

    /// The view wasmtime-wasi's host implementation works on.
    pub(crate) fn view(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

/// Links WASI 0.2 (async bindings: a guest blocked in a host call can be
/// interrupted).
pub(crate) fn add_to_linker<T: wasmtime_wasi::WasiView + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)
}
