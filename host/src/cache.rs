//! The on-disk cache of compiled components.
//!
//! A compiled component (`.cwasm`) is native code: loading one is `unsafe`
//! and must only ever see bytes this host produced. Entries are keyed by a
//! SHA-256 of the component, sandgen's and wasmtime's versions and the engine
//! settings (so a foreign or stale entry is never even looked up), and each
//! file carries a SHA-256 of its payload that is checked before the payload
//! is handed to wasmtime (so a truncated or corrupted file is recompiled, not
//! loaded). The directory is created private to the user. Someone who can
//! write to it can already run code as that user; that is outside the threat
//! model.

use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use crate::error::{Error, ErrorKind};

const MAGIC: &[u8; 16] = b"sandgen-cwasm-1\n";

/// Where compiled components are kept.
#[derive(Clone, Debug)]
pub(crate) struct Cache {
    dir: PathBuf,
}

/// The default cache directory: `$SANDGEN_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/sandgen`, else `~/.cache/sandgen`, else a folder in the
/// system's temporary directory.
pub(crate) fn default_dir() -> PathBuf {
    let env = |key| {
        std::env::var_os(key)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = env("SANDGEN_CACHE_DIR") {
        return dir;
    }
    if let Some(dir) = env("XDG_CACHE_HOME") {
        return dir.join("sandgen");
    }
    if let Some(home) = env("HOME") {
        return home.join(".cache").join("sandgen");
    }
    std::env::temp_dir().join("sandgen-cache")
}

/// A cached compilation: the component, and the file that holds it (for a
/// worker process to load).
pub(crate) struct Compiled {
    pub(crate) component: Component,
    pub(crate) file: Option<PathBuf>,
}

impl Cache {
    pub(crate) fn new(dir: PathBuf) -> Cache {
        Cache { dir }
    }

    /// The compiled `bytes`, from the cache when a valid entry exists,
    /// otherwise compiled now and stored (best effort: a cache that cannot
    /// be written only costs the next load a compilation).
    pub(crate) fn load_or_compile(
        &self,
        engine: &wasmtime::Engine,
        origin: &str,
        bytes: &[u8],
    ) -> Result<Compiled, Error> {
        let file = self.dir.join(format!("{}.cwasm", key(engine, bytes)));
        if let Ok(component) = load(engine, &file) {
            return Ok(Compiled {
                component,
                file: Some(file),
            });
        }
        let component = Component::new(engine, bytes).map_err(|e| {
            Error::new(
                ErrorKind::Load,
                format!("failed to compile plugin `{origin}`: {e:#}"),
            )
        })?;
        let stored = component
            .serialize()
            .ok()
            .and_then(|payload| self.store(&file, &payload).ok());
        Ok(Compiled {
            component,
            file: stored.map(|()| file),
        })
    }

    fn store(&self, file: &Path, payload: &[u8]) -> std::io::Result<()> {
        create_private_dir(&self.dir)?;
        // Write aside under a name of our own, then rename: readers never see
        // a partial file, and concurrent writers never share one.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let partial = file.with_extension(format!("{}-{n}.partial", std::process::id()));
        let mut out = std::fs::File::options()
            .write(true)
            .create_new(true)
            .open(&partial)?;
        out.write_all(MAGIC)?;
        out.write_all(&Sha256::digest(payload))?;
        out.write_all(payload)?;
        out.sync_all()?;
        drop(out);
        std::fs::rename(&partial, file).inspect_err(|_| {
            let _ = std::fs::remove_file(&partial);
        })
    }
}

/// Loads a cache file written by [`Cache::store`], after checking it.
///
/// # Errors
///
/// When the file is missing, not a sandgen cache file, corrupted, or made by
/// an incompatible engine.
pub(crate) fn load(engine: &wasmtime::Engine, file: &Path) -> Result<Component, Error> {
    let bad = |why: String| {
        Error::new(
            ErrorKind::Load,
            format!(
                "cannot use the compiled component `{}`: {why}",
                file.display()
            ),
        )
    };
    let data = std::fs::read(file).map_err(|e| bad(e.to_string()))?;
    let payload = data
        .strip_prefix(MAGIC.as_slice())
        .filter(|rest| rest.len() >= 32)
        .ok_or_else(|| bad("not a sandgen cache file".into()))?;
    let (digest, payload) = payload.split_at(32);
    if Sha256::digest(payload).as_slice() != digest {
        return Err(bad("its checksum does not match (corrupted)".into()));
    }
    // SAFETY: the payload is byte for byte what `Component::serialize` of
    // this host wrote (the checksum above), under a key that includes the
    // engine's compatibility hash; wasmtime checks the engine settings again.
    unsafe { Component::deserialize(engine, payload) }.map_err(|e| bad(format!("{e:#}")))
}

/// The cache key: what the compiled code depends on.
fn key(engine: &wasmtime::Engine, bytes: &[u8]) -> String {
    let mut settings = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut settings);
    let mut hasher = Sha256::new();
    hasher.update(MAGIC);
    hasher.update(env!("CARGO_PKG_VERSION").as_bytes());
    hasher.update(settings.finish().to_le_bytes());
    hasher.update(bytes);
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component with no imports or exports: the smallest there is.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sandgen-cache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn second_load_comes_from_the_file_and_corruption_is_caught() {
        let engine = wasmtime::Engine::default();
        let dir = temp_dir("roundtrip");
        let cache = Cache::new(dir.clone());
        let first = cache
            .load_or_compile(&engine, "empty", EMPTY_COMPONENT)
            .unwrap();
        let file = first.file.expect("stored");
        assert!(load(&engine, &file).is_ok());

        // Flip one byte of the payload: the checksum catches it, and the
        // next load recompiles and repairs the entry.
        let mut data = std::fs::read(&file).unwrap();
        let last = data.len() - 1;
        data[last] ^= 0xff;
        std::fs::write(&file, &data).unwrap();
        let err = load(&engine, &file).err().unwrap();
        assert!(err.to_string().contains("checksum does not match"), "{err}");
        let again = cache
            .load_or_compile(&engine, "empty", EMPTY_COMPONENT)
            .unwrap();
        assert_eq!(again.file.as_deref(), Some(file.as_path()));
        assert!(load(&engine, &file).is_ok());

        // Not a cache file at all.
        std::fs::write(&file, b"garbage").unwrap();
        assert!(
            load(&engine, &file)
                .err()
                .unwrap()
                .to_string()
                .contains("not a sandgen cache file")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn concurrent_writers_leave_a_valid_entry() {
        let engine = wasmtime::Engine::default();
        let dir = temp_dir("concurrent");
        let cache = Cache::new(dir.clone());
        let files: Vec<PathBuf> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        cache
                            .load_or_compile(&engine, "empty", EMPTY_COMPONENT)
                            .unwrap()
                            .file
                    })
                })
                .collect();
            workers
                .into_iter()
                .filter_map(|w| w.join().unwrap())
                .collect()
        });
        assert!(!files.is_empty());
        for file in &files {
            assert!(load(&engine, file).is_ok());
        }
        // Only the entry itself is left: no partial files.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn keys_depend_on_engine_settings_and_bytes() {
        let plain = wasmtime::Engine::default();
        let mut config = wasmtime::Config::new();
        config.consume_fuel(true);
        let fueled = wasmtime::Engine::new(&config).unwrap();
        assert_ne!(key(&plain, EMPTY_COMPONENT), key(&fueled, EMPTY_COMPONENT));
        assert_ne!(key(&plain, EMPTY_COMPONENT), key(&plain, b"other"));
        assert_eq!(key(&plain, EMPTY_COMPONENT), key(&plain, EMPTY_COMPONENT));
    }

    #[test]
    fn unwritable_cache_still_compiles() {
        let engine = wasmtime::Engine::default();
        let cache = Cache::new(PathBuf::from("/proc/definitely/not/writable"));
        let compiled = cache
            .load_or_compile(&engine, "empty", EMPTY_COMPONENT)
            .unwrap();
        assert!(compiled.file.is_none());
    }
}
