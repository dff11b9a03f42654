//! The on-disk cache of compiled components: the cache itself (this
//! file), the plugin files it finds by their contents (`source.rs`), the format
//! of its records (`record.rs`) and the trust it places in its directory
//! (`trust.rs`).
//!
//! A compiled component (`.cwasm`) is native code: loading one is `unsafe`
//! and must only ever see bytes this host produced from the very component
//! being loaded. So:
//!
//! - an entry is named and bound by its key: a SHA-256 of the component's
//!   bytes, sandgen's version and the engine's settings. The key is written
//!   into the entry's check file (`<key>.check`, beside `<key>.cwasm`) and
//!   covered by its checksum, and an entry whose key is not the one expected
//!   for the component at hand (another plugin's entry copied over it, say)
//!   is refused and recompiled, never loaded;
//! - the check file also holds a SHA-256 of the compiled file, verified when
//!   the entry is written, and again whenever the file no longer looks as it
//!   did then (its device, inode, size, modification or change time
//!   differ): a truncated, rewritten or replaced file is recompiled, not
//!   loaded. A file that looks unchanged is not read at all: it is mapped,
//!   and paged in as the code runs, so even a large entry loads at once
//!   (BENCHMARKS.md "Start-up");
//! - a plugin file is found by its contents: every load reads all of it (in
//!   chunks) for its [`Fingerprint`], an XXH3-128 of its bytes, and a
//!   source record (`<id>.source`, named by that fingerprint and the
//!   engine's settings) maps it to its key, with the fingerprint sealed in
//!   the record, so that a record copied over another's is refused. No
//!   timestamp is trusted for a plugin file: bytes written through a shared
//!   writable mapping change none. XXH3 is not a cryptographic hash, and
//!   need not be: someone who makes a file collide with another plugin's
//!   fingerprint gets that other plugin's compiled code run, which they
//!   could as well have by copying its bytes (SECURITY.md);
//! - the directory and every file must be the user's own and writable by
//!   nobody else, and none may be a symbolic link; otherwise sandgen warns
//!   once and compiles in memory. The directory is created private to the
//!   user (0700), and there is no shared fallback location: without a cache
//!   directory to use, plugins compile in memory.
//!
//! What remains: someone who can write the user's own cache directory can
//! write an entry with a matching key and checksum, made of native code of
//! their choosing, and sandgen will run it. Such a person can already run
//! code as that user (through the shell's start-up files, say); that is
//! outside the threat model (SECURITY.md). A compiled file whose bytes
//! change without any change to its metadata (a disk's bit rot, a write to
//! the block device) is not caught until its metadata changes.

mod record;
mod source;
mod trust;

use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use crate::cache::record::{
    CHECK_MAGIC, SOURCE_MAGIC, check_record, read_record, read_source_record, source_record,
};
use crate::cache::source::read_from_start;
pub(crate) use crate::cache::source::{Fingerprint, Identity, Source};
use crate::cache::trust::{create_private_dir, open_entry_file, trusted, warn_once};
use crate::compile::Artifact;
use crate::error::{Error, ErrorKind};

/// Part of every key: a new layout of the cache changes every key.
const MAGIC: &[u8; 16] = b"sandgen-cwasm-4\n";

/// Where compiled components are kept.
#[derive(Clone, Debug)]
pub(crate) struct Cache {
    dir: PathBuf,
}

/// What a compiled component is bound to: the SHA-256 of the component's
/// bytes (its [`Digest`]), sandgen's version and the engine's settings.
pub(crate) type Key = [u8; 32];

/// The SHA-256 of a component's bytes.
pub(crate) type ContentDigest = [u8; 32];

/// An entry of the cache: its compiled file and the key it must carry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) path: PathBuf,
    pub(crate) key: Key,
}

impl Entry {
    /// The check file beside the compiled file.
    fn check_path(&self) -> PathBuf {
        self.path.with_extension("check")
    }
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

    /// The compiled component of `source`, from the cache when a valid
    /// entry exists, otherwise compiled now and stored (best effort: a cache
    /// that cannot be written only costs the next load a compilation). A
    /// cache directory that is not safe to trust is not used at all (one
    /// warning).
    pub(crate) fn load_or_compile(
        &self,
        engine: &wasmtime::Engine,
        source: &Source,
        compile: impl FnOnce(&Source) -> Result<Artifact, Error>,
    ) -> Result<Compiled, Error> {
        if let Err(why) = self.usable() {
            warn_once(&self.dir, &why);
            return Ok(Compiled {
                component: compile(source)?.into_component(engine)?.0,
                entry: None,
            });
        }
        // A file whose contents were seen before needs no hashing.
        let record = match source {
            Source::File { fingerprint, .. } => {
                Some((self.source_record(engine, fingerprint), *fingerprint))
            }
            Source::Bytes(_) => None,
        };
        let known = record
            .as_ref()
            .and_then(|(path, fingerprint)| read_source_record(path, fingerprint));
        if let Some(key) = known
            && let Ok(component) = load(engine, &self.entry(key))
        {
            return Ok(Compiled {
                component,
                entry: Some(self.entry(key)),
            });
        }
        // Hashed when its key is not known or its entry unusable.
        let key = key(engine, &digest(source)?);
        let entry = self.entry(key);
        let remember = |cache: &Cache| {
            if let Some((path, fingerprint)) = &record {
                let _ = cache.write_private(path, &source_record(fingerprint, &key), None);
            }
        };
        if let Ok(component) = load(engine, &entry) {
            remember(self);
            return Ok(Compiled {
                component,
                entry: Some(entry),
            });
        }
        let (component, serialized) = compile(source)?.into_component(engine)?;
        let stored = serialized
            .or_else(|| component.serialize().ok())
            .and_then(|payload| self.store(engine, &entry, &payload).ok());
        if stored.is_none() {
            return Ok(Compiled {
                component,
                entry: None,
            });
        }
        remember(self);
        // Loaded again from the stored file: mapped, so that instances map
        // their memory images from it instead of copying them.
        let component = load(engine, &entry).unwrap_or(component);
        Ok(Compiled {
            component,
            entry: Some(entry),
        })
    }

    fn entry(&self, key: Key) -> Entry {
        Entry {
            path: self.dir.join(format!("{}.cwasm", hex(&key))),
            key,
        }
    }

    /// Where the key of a plugin file with `fingerprint` is recorded, for
    /// this engine's settings.
    fn source_record(&self, engine: &wasmtime::Engine, fingerprint: &Fingerprint) -> PathBuf {
        let mut hasher = Sha256::new();
        hasher.update(SOURCE_MAGIC);
        hasher.update(MAGIC);
        hasher.update(env!("CARGO_PKG_VERSION").as_bytes());
        hasher.update(settings(engine));
        hasher.update(fingerprint.to_bytes());
        let id: [u8; 32] = hasher.finalize().into();
        self.dir.join(format!("{}.source", hex(&id)))
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

    /// Stores a compiled component: the compiled file, then its check file
    /// (a reader that finds the first without the second recompiles). A
    /// valid compiled file another writer stored meanwhile is kept, not
    /// replaced: a file is never swapped under a process that maps it (on
    /// a network file system, that would fault its readers).
    fn store(
        &self,
        engine: &wasmtime::Engine,
        entry: &Entry,
        payload: &[u8],
    ) -> std::io::Result<()> {
        let digest: [u8; 32] = Sha256::digest(payload).into();
        let keep = |_: &Path| load(engine, entry).is_ok();
        let Some(identity) = self.write_private(&entry.path, payload, Some(&keep))? else {
            // Another writer's valid entry, with its own check file.
            return Ok(());
        };
        self.write_private(
            &entry.check_path(),
            &check_record(&entry.key, &digest, identity),
            None,
        )
        .map(drop)
    }

    /// Writes `contents` to `path`: aside under a name of our own, then
    /// put in place, so that readers never see a partial file, concurrent
    /// writers never share one, and a file already mapped by a reader is
    /// never changed. Returns the identity of the file written (taken from
    /// its own descriptor after it is in place, as that changes its change
    /// time), or `None` when `keep` says that a file already at `path` is
    /// to be kept instead (then the new one is dropped).
    fn write_private(
        &self,
        path: &Path,
        contents: &[u8],
        keep: Option<&dyn Fn(&Path) -> bool>,
    ) -> std::io::Result<Option<Option<Identity>>> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut partial = path.as_os_str().to_owned();
        partial.push(format!(".{}-{n}.partial", std::process::id()));
        let partial = PathBuf::from(partial);
        let mut options = File::options();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut out = options.open(&partial)?;
        let placed = out
            .write_all(contents)
            .and_then(|()| out.sync_all())
            .and_then(|()| match keep {
                // Put in place only where nothing is (a hard link fails
                // on an existing name), unless what is there is not to
                // be kept.
                Some(keep) => match std::fs::hard_link(&partial, path) {
                    Ok(()) => std::fs::remove_file(&partial).map(|()| true),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && keep(path) => {
                        std::fs::remove_file(&partial).map(|()| false)
                    }
                    Err(_) => std::fs::rename(&partial, path).map(|()| true),
                },
                None => std::fs::rename(&partial, path).map(|()| true),
            })
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&partial);
            })?;
        if !placed {
            return Ok(None);
        }
        Ok(Some(
            out.metadata().ok().and_then(|meta| Identity::of(&meta)),
        ))
    }
}

/// Loads a cache entry written by [`Cache::store`], after checking that it
/// is trusted, carries `entry.key`, and is intact: by its recorded identity
/// when the file still looks as it did when it was verified, else by its
/// checksum (and then the check file is brought up to date). The compiled
/// file is mapped, not read.
///
/// # Errors
///
/// When the file or its check file is missing, not trusted, not a sandgen
/// cache file, bound to another component or engine, corrupted, or made by
/// an incompatible engine.
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
    let mut file = open_entry_file(&entry.path).map_err(|e| bad(e.to_string()))?;
    let meta = file.metadata().map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() {
        return Err(bad("it is not a regular file".into()));
    }
    trusted(&meta).map_err(bad)?;
    let check = read_record(&entry.check_path(), CHECK_MAGIC, 16 + 32 + 32 + 56 + 32)
        .ok_or_else(|| bad("its check file is missing or damaged".into()))?;
    let (key, rest) = check.split_at(32);
    let (digest, identity) = rest.split_at(32);
    if key != entry.key {
        return Err(bad(
            "it was compiled from another component or engine (its key does not match)".into(),
        ));
    }
    let identity = Identity::from_bytes(identity);
    if Identity::of(&meta) != Some(identity) {
        // Changed, copied or restored since it was verified: verify again.
        let mut hasher = Sha256::new();
        let mut buf = vec![0; 1 << 20];
        loop {
            let n = file.read(&mut buf).map_err(|e| bad(e.to_string()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        if hasher.finalize().as_slice() != digest {
            return Err(bad("its checksum does not match (corrupted)".into()));
        }
        let digest: [u8; 32] = digest.try_into().expect("32 bytes");
        let record = check_record(&entry.key, &digest, Identity::of(&meta));
        if let Some(dir) = entry.path.parent() {
            let _ = Cache::new(dir.to_owned()).write_private(&entry.check_path(), &record, None);
        }
    }
    // SAFETY: the file is byte for byte what `Component::serialize` of this
    // host wrote for exactly this component and engine (the key and the
    // checksum above, or the identity it had when they were checked), in a
    // file and directory that only this user can write, and the cache never
    // changes a file in place (new entries are renamed over old ones), so
    // the mapping stays as checked; wasmtime checks the engine settings
    // again. It is opened again through this descriptor (or read through
    // it, where the system has no way to), so that it is the very file
    // checked. Both arms below rely on this.
    let component = match same_file_path(&file).filter(|path| path.exists()) {
        // SAFETY: as above: the very file checked, mapped.
        Some(same_file) => unsafe { Component::deserialize_file(engine, same_file) },
        None => {
            // No way to open this very file again: read it through the
            // descriptor checked, and load it from memory.
            let mut bytes = Vec::new();
            read_from_start(&file, &mut bytes).map_err(|e| bad(e.to_string()))?;
            // SAFETY: as above: the very file checked, read.
            unsafe { Component::deserialize(engine, &bytes) }
        }
    };
    component.map_err(|e| bad(format!("{e:#}")))
}

/// A path that opens the file behind `file` itself (Linux).
fn same_file_path(file: &File) -> Option<PathBuf> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd as _;
        Some(PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd())))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = file;
        None
    }
}

/// The engine's settings that compiled code depends on.
fn settings(engine: &wasmtime::Engine) -> [u8; 8] {
    let mut settings = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut settings);
    settings.finish().to_le_bytes()
}

/// The cache key: what the compiled code depends on.
fn key(engine: &wasmtime::Engine, digest: &ContentDigest) -> Key {
    let mut hasher = Sha256::new();
    hasher.update(MAGIC);
    hasher.update(env!("CARGO_PKG_VERSION").as_bytes());
    hasher.update(settings(engine));
    hasher.update(digest);
    hasher.finalize().into()
}

/// The SHA-256 of a component's bytes, read in chunks.
pub(crate) fn digest(source: &Source) -> Result<ContentDigest, Error> {
    let mut hasher = Sha256::new();
    source.stream(&mut |chunk| {
        hasher.update(chunk);
        Ok(())
    })?;
    Ok(hasher.finalize().into())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
