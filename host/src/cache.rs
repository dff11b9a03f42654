//! The on-disk cache of compiled components.
//!
//! A compiled component (`.cwasm`) is native code: loading one is `unsafe`
//! and must only ever see bytes this host produced from the very component
//! being loaded. So:
//!
//! - an entry is named and bound by its key: a SHA-256 of the component's
//!   bytes, sandgen's version and the engine's settings. The key is written
//!   into the entry and covered by its checksum, and an entry whose key is
//!   not the one expected for the component at hand (another plugin's entry
//!   copied over it, say) is refused and recompiled, never loaded;
//! - each entry carries a SHA-256 of its key and payload, checked before the
//!   payload is handed to wasmtime, so a truncated or corrupted file is
//!   recompiled, not loaded;
//! - the directory and every entry must be the user's own and writable by
//!   nobody else, and neither may be a symbolic link; otherwise sandgen
//!   warns once and compiles in memory. The directory is created private to
//!   the user (0700), and there is no shared fallback location: without a
//!   cache directory to use, plugins compile in memory.
//!
//! What remains: someone who can write the user's own cache directory can
//! write an entry with a matching key and checksum, made of native code of
//! their choosing, and sandgen will run it. Such a person can already run
//! code as that user (through the shell's start-up files, say); that is
//! outside the threat model (SECURITY.md).

use std::hash::{Hash, Hasher};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use crate::compile::Artifact;
use crate::error::{Error, ErrorKind};

const MAGIC: &[u8; 16] = b"sandgen-cwasm-2\n";

/// Where compiled components are kept.
#[derive(Clone, Debug)]
pub(crate) struct Cache {
    dir: PathBuf,
}

/// What a compiled component is bound to: the SHA-256 of the component's
/// bytes, sandgen's version and the engine's settings.
pub(crate) type Key = [u8; 32];

/// An entry of the cache: its file and the key it must carry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) path: PathBuf,
    pub(crate) key: Key,
}

/// The default cache directory: `$SANDGEN_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/sandgen`, else `~/.cache/sandgen`; `None` (compile in
/// memory) when none of them is set.
pub(crate) fn default_dir() -> Option<PathBuf> {
    let env = |key| {
        std::env::var_os(key)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("SANDGEN_CACHE_DIR")
        .or_else(|| env("XDG_CACHE_HOME").map(|dir| dir.join("sandgen")))
        .or_else(|| env("HOME").map(|home| home.join(".cache").join("sandgen")))
}

/// A compilation: the component, and the cache entry that holds it (for a
/// worker process to load), if it could be stored.
pub(crate) struct Compiled {
    pub(crate) component: Component,
    pub(crate) entry: Option<Entry>,
}

impl Cache {
    pub(crate) fn new(dir: PathBuf) -> Cache {
        Cache { dir }
    }

    /// The compiled `bytes`, from the cache when a valid entry exists,
    /// otherwise compiled now and stored (best effort: a cache that cannot
    /// be written only costs the next load a compilation). A cache directory
    /// that is not safe to trust is not used at all (one warning).
    pub(crate) fn load_or_compile(
        &self,
        engine: &wasmtime::Engine,
        bytes: &[u8],
        compile: impl FnOnce() -> Result<Artifact, Error>,
    ) -> Result<Compiled, Error> {
        if let Err(why) = self.usable() {
            warn_once(&self.dir, &why);
            return Ok(Compiled {
                component: compile()?.into_component(engine)?.0,
                entry: None,
            });
        }
        let key = key(engine, bytes);
        let entry = Entry {
            path: self.dir.join(format!("{}.cwasm", hex(&key))),
            key,
        };
        if let Ok(component) = load(engine, &entry) {
            return Ok(Compiled {
                component,
                entry: Some(entry),
            });
        }
        let (component, serialized) = compile()?.into_component(engine)?;
        let stored = serialized
            .or_else(|| component.serialize().ok())
            .and_then(|payload| self.store(&entry, &payload).ok());
        Ok(Compiled {
            component,
            entry: stored.map(|()| entry),
        })
    }

    /// Whether the directory may hold native code that this process runs:
    /// created private if missing; otherwise the user's own, writable by
    /// nobody else, and not a link. `Ok` also when it cannot be created (then
    /// nothing is stored).
    fn usable(&self) -> Result<(), String> {
        if std::fs::symlink_metadata(&self.dir).is_err() {
            let _ = create_private_dir(&self.dir);
        }
        match std::fs::symlink_metadata(&self.dir) {
            Ok(meta) if meta.file_type().is_symlink() => Err("it is a symbolic link".into()),
            Ok(meta) if !meta.is_dir() => Err("it is not a directory".into()),
            Ok(meta) => trusted(&meta),
            Err(_) => Ok(()),
        }
    }

    fn store(&self, entry: &Entry, payload: &[u8]) -> std::io::Result<()> {
        // Write aside under a name of our own, then rename: readers never see
        // a partial file, and concurrent writers never share one.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let partial = entry
            .path
            .with_extension(format!("{}-{n}.partial", std::process::id()));
        let mut options = std::fs::File::options();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut out = options.open(&partial)?;
        out.write_all(MAGIC)?;
        out.write_all(&entry.key)?;
        out.write_all(&checksum(&entry.key, payload))?;
        out.write_all(payload)?;
        out.sync_all()?;
        drop(out);
        std::fs::rename(&partial, &entry.path).inspect_err(|_| {
            let _ = std::fs::remove_file(&partial);
        })
    }
}

/// The SHA-256 of an entry's key and payload: what its header carries.
fn checksum(key: &Key, payload: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(key);
    hasher.update(payload);
    hasher.finalize().into()
}

/// Whether a file or directory is the user's own and writable by nobody
/// else.
fn trusted(meta: &std::fs::Metadata) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me {
            return Err(format!(
                "it belongs to user {}, not to this user ({me})",
                meta.uid()
            ));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(format!(
                "it is writable by others (mode {:o}); make it private with `chmod go-w`",
                meta.mode() & 0o7777
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    Ok(())
}

/// Warns, once per process, that a cache directory is not used.
fn warn_once(dir: &Path, why: &str) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        eprintln!(
            "sandgen: warning: not using the compile cache `{}`: {why}; plugins are compiled in \
             memory on every load, and process isolation is not available",
            dir.display()
        );
    });
}

/// Loads a cache entry written by [`Cache::store`], after checking that it
/// is trusted, carries `entry.key`, and is intact.
///
/// # Errors
///
/// When the file is missing, not trusted, not a sandgen cache file, bound to
/// another component or engine, corrupted, or made by an incompatible
/// engine.
pub(crate) fn load(engine: &wasmtime::Engine, entry: &Entry) -> Result<Component, Error> {
    let bad = |why: String| {
        Error::new(
            ErrorKind::Load,
            format!(
                "cannot use the compiled component `{}`: {why}",
                entry.path.display()
            ),
        )
    };
    // The directory too (a worker process meets it here first).
    if let Some(dir) = entry.path.parent() {
        let meta = std::fs::symlink_metadata(dir).map_err(|e| bad(e.to_string()))?;
        if meta.file_type().is_symlink() {
            return Err(bad("its directory is a symbolic link".into()));
        }
        trusted(&meta).map_err(|why| bad(format!("its directory: {why}")))?;
    }
    let mut options = std::fs::File::options();
    options.read(true);
    // Neither follow a link nor block on a FIFO planted at the entry's path.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(
        &mut options,
        (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32,
    );
    let mut file = options.open(&entry.path).map_err(|e| bad(e.to_string()))?;
    let meta = file.metadata().map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() {
        return Err(bad("it is not a regular file".into()));
    }
    trusted(&meta).map_err(bad)?;
    let mut data = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut data)
        .map_err(|e| bad(e.to_string()))?;
    let rest = data
        .strip_prefix(MAGIC.as_slice())
        .filter(|rest| rest.len() >= 64)
        .ok_or_else(|| bad("not a sandgen cache file".into()))?;
    let (key, rest) = rest.split_at(32);
    let (digest, payload) = rest.split_at(32);
    if key != entry.key {
        return Err(bad(
            "it was compiled from another component or engine (its key does not match)".into(),
        ));
    }
    if checksum(&entry.key, payload).as_slice() != digest {
        return Err(bad("its checksum does not match (corrupted)".into()));
    }
    // SAFETY: the payload is byte for byte what `Component::serialize` of
    // this host wrote for exactly this component and engine (the key and the
    // checksum above), in a file and directory that only this user can
    // write; wasmtime checks the engine settings again.
    unsafe { Component::deserialize(engine, payload) }.map_err(|e| bad(format!("{e:#}")))
}

/// The cache key: what the compiled code depends on.
fn key(engine: &wasmtime::Engine, bytes: &[u8]) -> Key {
    let mut settings = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut settings);
    let mut hasher = Sha256::new();
    hasher.update(MAGIC);
    hasher.update(env!("CARGO_PKG_VERSION").as_bytes());
    hasher.update(settings.finish().to_le_bytes());
    hasher.update(bytes);
    hasher.finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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

    /// Compiles the empty component in this process.
    fn compile(engine: &wasmtime::Engine) -> impl FnOnce() -> Result<Artifact, Error> {
        move || {
            crate::compile::in_process(engine, "empty", EMPTY_COMPONENT).map(Artifact::Component)
        }
    }

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
            .load_or_compile(&engine, EMPTY_COMPONENT, compile(&engine))
            .unwrap();
        let entry = first.entry.expect("stored");
        let file = entry.path.clone();
        assert!(load(&engine, &entry).is_ok());

        // Flip one byte of the payload: the checksum catches it, and the
        // next load recompiles and repairs the entry.
        let mut data = std::fs::read(&file).unwrap();
        let last = data.len() - 1;
        data[last] ^= 0xff;
        std::fs::write(&file, &data).unwrap();
        let err = load(&engine, &entry).err().unwrap();
        assert!(err.to_string().contains("checksum does not match"), "{err}");
        let again = cache
            .load_or_compile(&engine, EMPTY_COMPONENT, compile(&engine))
            .unwrap();
        assert_eq!(again.entry.as_ref(), Some(&entry));
        assert!(load(&engine, &entry).is_ok());

        // Not a cache file at all.
        std::fs::write(&file, b"garbage").unwrap();
        assert!(
            load(&engine, &entry)
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
        let entries: Vec<Entry> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        cache
                            .load_or_compile(&engine, EMPTY_COMPONENT, compile(&engine))
                            .unwrap()
                            .entry
                    })
                })
                .collect();
            workers
                .into_iter()
                .filter_map(|w| w.join().unwrap())
                .collect()
        });
        assert!(!entries.is_empty());
        for entry in &entries {
            assert!(load(&engine, entry).is_ok());
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
            .load_or_compile(&engine, EMPTY_COMPONENT, compile(&engine))
            .unwrap();
        assert!(compiled.entry.is_none());
    }
}
