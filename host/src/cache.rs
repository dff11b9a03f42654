//! The on-disk cache of compiled components.
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
//!   and paged in as the code runs, so a 36 MB entry loads in a millisecond;
//! - a plugin file is found without hashing it: a source record
//!   (`<id>.source`) maps the file's identity (device, inode, size,
//!   modification and change time, with the engine's settings) to its key.
//!   Changing a file's contents always changes its change time, which no
//!   user can set back, so a plugin rewritten in place, even with the same
//!   size and modification time, is hashed (and compiled) afresh;
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

use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use crate::compile::Artifact;
use crate::error::{Error, ErrorKind};

/// Part of every key: a new layout of the cache changes every key.
const MAGIC: &[u8; 16] = b"sandgen-cwasm-3\n";
/// Opens a check file.
const CHECK_MAGIC: &[u8; 16] = b"sandgen-check-1\n";
/// Opens a source record.
const SOURCE_MAGIC: &[u8; 16] = b"sandgen-source1\n";

/// Where compiled components are kept.
#[derive(Clone, Debug)]
pub(crate) struct Cache {
    dir: PathBuf,
    /// How long after its last change a plugin file is found by its
    /// identity ([`SETTLED`]; shorter in tests).
    settled_after: std::time::Duration,
}

/// What a compiled component is bound to: the SHA-256 of the component's
/// bytes, sandgen's version and the engine's settings.
pub(crate) type Key = [u8; 32];

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

/// What a file looks like from outside: where it is, how large, and when
/// it last changed. Writing a file's contents changes its change time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Identity([u64; 7]);

impl Identity {
    /// The identity of an open file; `None` where the platform has none.
    pub(crate) fn of(meta: &std::fs::Metadata) -> Option<Identity> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt as _;
            Some(Identity([
                meta.dev(),
                meta.ino(),
                meta.size(),
                meta.mtime() as u64,
                meta.mtime_nsec() as u64,
                meta.ctime() as u64,
                meta.ctime_nsec() as u64,
            ]))
        }
        #[cfg(not(unix))]
        {
            let _ = meta;
            None
        }
    }

    fn to_bytes(self) -> [u8; 56] {
        let mut bytes = [0; 56];
        for (chunk, value) in bytes.chunks_exact_mut(8).zip(self.0) {
            chunk.copy_from_slice(&value.to_le_bytes());
        }
        bytes
    }

    fn from_bytes(bytes: &[u8]) -> Identity {
        let mut values = [0; 7];
        for (value, chunk) in values.iter_mut().zip(bytes.chunks_exact(8)) {
            *value = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        }
        Identity(values)
    }
}

/// A plugin's component: its bytes, or a file read only when it must be
/// compiled.
pub(crate) enum Source {
    Bytes(std::sync::Arc<[u8]>),
    File {
        /// The file as it was opened when the plugin was loaded: read
        /// through this descriptor, so that a file replaced at its path
        /// since is not taken for it.
        file: std::sync::Arc<File>,
        path: PathBuf,
        /// What the file looked like when it was loaded.
        identity: Identity,
    },
}

impl Source {
    /// The component's bytes: a file is read, and must still look as it did
    /// when it was loaded (else it was written since, and what was loaded
    /// is gone).
    pub(crate) fn bytes(&self) -> Result<std::borrow::Cow<'_, [u8]>, Error> {
        match self {
            Source::Bytes(bytes) => Ok(std::borrow::Cow::Borrowed(bytes)),
            Source::File {
                file,
                path,
                identity,
            } => {
                let failed = |why: String| {
                    Error::new(
                        ErrorKind::Load,
                        format!("failed to read plugin `{}`: {why}", path.display()),
                    )
                };
                let mut bytes = Vec::new();
                read_from_start(file, &mut bytes).map_err(|e| failed(e.to_string()))?;
                let now = file.metadata().map_err(|e| failed(e.to_string()))?;
                if Identity::of(&now) != Some(*identity) {
                    return Err(failed(
                        "it was written after it was loaded; load it again".into(),
                    ));
                }
                Ok(std::borrow::Cow::Owned(bytes))
            }
        }
    }
}

/// All of a file, from its start, whatever its position.
fn read_from_start(file: &File, bytes: &mut Vec<u8>) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt as _;
        let mut buf = vec![0; 1 << 20];
        loop {
            let n = match file.read_at(&mut buf, bytes.len() as u64) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Ok(());
            }
            bytes.extend_from_slice(&buf[..n]);
        }
    }
    #[cfg(not(unix))]
    {
        use std::io::Seek as _;
        let mut file = file;
        file.seek(std::io::SeekFrom::Start(0))?;
        file.read_to_end(bytes).map(drop)
    }
}

/// How long after its last change a plugin file's identity is trusted to
/// stand for its contents. A file's change time comes from a clock that may
/// advance only every few milliseconds (or whole seconds on some file
/// systems), so a file written again within the same tick would keep its
/// identity; one last changed longer ago than this cannot be written again
/// unseen (the "racy git" rule). A file younger than this is hashed on
/// every load.
pub(crate) const SETTLED: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether a file with `identity` last changed at least `after` ago.
fn settled(identity: &Identity, after: std::time::Duration) -> bool {
    let [.., mtime, mtime_ns, ctime, ctime_ns] = identity.0;
    let last = std::time::UNIX_EPOCH
        + std::time::Duration::new(
            mtime.max(ctime),
            if ctime >= mtime { ctime_ns } else { mtime_ns } as u32,
        );
    std::time::SystemTime::now()
        .duration_since(last)
        .is_ok_and(|age| age >= after)
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
        Cache {
            dir,
            settled_after: SETTLED,
        }
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
        compile: impl FnOnce(&[u8]) -> Result<Artifact, Error>,
    ) -> Result<Compiled, Error> {
        if let Err(why) = self.usable() {
            warn_once(&self.dir, &why);
            return Ok(Compiled {
                component: compile(&source.bytes()?)?.into_component(engine)?.0,
                entry: None,
            });
        }
        // A file whose identity was seen before needs no reading at all.
        let record = match source {
            Source::File { identity, .. } => Some(self.source_record(engine, identity)),
            Source::Bytes(_) => None,
        };
        let known = record
            .as_ref()
            .and_then(|record| read_source_record(record));
        if let Some(key) = known
            && let Ok(component) = load(engine, &self.entry(key))
        {
            return Ok(Compiled {
                component,
                entry: Some(self.entry(key)),
            });
        }
        // Read (and hashed) when its key is not known or its entry unusable.
        let bytes = source.bytes()?;
        let key = key(engine, &bytes);
        let entry = self.entry(key);
        let remember = |cache: &Cache| {
            if let (Some(record), Source::File { identity, .. }) = (&record, source)
                && settled(identity, cache.settled_after)
            {
                let _ = cache.write_private(record, &source_record(&key), None);
            }
        };
        if let Ok(component) = load(engine, &entry) {
            remember(self);
            return Ok(Compiled {
                component,
                entry: Some(entry),
            });
        }
        let (component, serialized) = compile(&bytes)?.into_component(engine)?;
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

    /// Where the key of a plugin file with `identity` is recorded, for this
    /// engine's settings.
    fn source_record(&self, engine: &wasmtime::Engine, identity: &Identity) -> PathBuf {
        let mut hasher = Sha256::new();
        hasher.update(SOURCE_MAGIC);
        hasher.update(MAGIC);
        hasher.update(env!("CARGO_PKG_VERSION").as_bytes());
        hasher.update(settings(engine));
        hasher.update(identity.to_bytes());
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

/// A check file: the magic, the entry's key, the SHA-256 of its compiled
/// file, what that file looked like when it was verified, and a SHA-256 of
/// all of these.
fn check_record(key: &Key, digest: &[u8; 32], identity: Option<Identity>) -> Vec<u8> {
    let mut record = CHECK_MAGIC.to_vec();
    record.extend_from_slice(key);
    record.extend_from_slice(digest);
    record.extend_from_slice(&identity.map_or([0; 56], Identity::to_bytes));
    let seal: [u8; 32] = Sha256::digest(&record).into();
    record.extend_from_slice(&seal);
    record
}

/// A source record: the magic, the key, and a SHA-256 of both.
fn source_record(key: &Key) -> Vec<u8> {
    let mut record = SOURCE_MAGIC.to_vec();
    record.extend_from_slice(key);
    let seal: [u8; 32] = Sha256::digest(&record).into();
    record.extend_from_slice(&seal);
    record
}

/// The fields of a sealed record of `len` bytes that opens with `magic`,
/// when it is one, intact, in a trusted file.
fn read_record(path: &Path, magic: &[u8; 16], len: usize) -> Option<Vec<u8>> {
    let file = open_entry_file(path).ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() != len as u64 || trusted(&meta).is_err() {
        return None;
    }
    let mut record = Vec::with_capacity(len);
    file.take(len as u64 + 1).read_to_end(&mut record).ok()?;
    if record.len() != len {
        return None;
    }
    let (fields, seal) = record.split_at_checked(len.checked_sub(32)?)?;
    let sealed: [u8; 32] = Sha256::digest(fields).into();
    (fields.starts_with(magic) && seal == sealed).then(|| fields[16..].to_vec())
}

/// The key a source record holds, if it is intact.
fn read_source_record(path: &Path) -> Option<Key> {
    read_record(path, SOURCE_MAGIC, 16 + 32 + 32)?
        .try_into()
        .ok()
}

/// Opens a file of the cache for reading, without following a link or
/// blocking on a FIFO planted at its path.
fn open_entry_file(path: &Path) -> std::io::Result<File> {
    let mut options = File::options();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(
        &mut options,
        (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32,
    );
    options.open(path)
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
fn key(engine: &wasmtime::Engine, bytes: &[u8]) -> Key {
    let mut hasher = Sha256::new();
    hasher.update(MAGIC);
    hasher.update(env!("CARGO_PKG_VERSION").as_bytes());
    hasher.update(settings(engine));
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
    fn compile(engine: &wasmtime::Engine) -> impl FnOnce(&[u8]) -> Result<Artifact, Error> {
        move |bytes| crate::compile::in_process(engine, "empty", bytes).map(Artifact::Component)
    }

    /// Replaces a cache file by renaming a new one over it (as the cache
    /// does: never in place, as a mapped file must not shrink).
    fn replace(path: &Path, contents: &[u8]) {
        let aside = path.with_extension("replacing");
        std::fs::write(&aside, contents).unwrap();
        std::fs::rename(&aside, path).unwrap();
    }

    fn empty() -> Source {
        Source::Bytes(EMPTY_COMPONENT.into())
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
            .load_or_compile(&engine, &empty(), compile(&engine))
            .unwrap();
        let entry = first.entry.expect("stored");
        let file = entry.path.clone();
        assert!(load(&engine, &entry).is_ok());

        // Flip one byte of the payload: the checksum catches it, and the
        // next load recompiles and repairs the entry.
        let mut data = std::fs::read(&file).unwrap();
        let last = data.len() - 1;
        data[last] ^= 0xff;
        replace(&file, &data);
        let err = load(&engine, &entry).err().unwrap();
        assert!(err.to_string().contains("checksum does not match"), "{err}");
        let again = cache
            .load_or_compile(&engine, &empty(), compile(&engine))
            .unwrap();
        assert_eq!(again.entry.as_ref(), Some(&entry));
        assert!(load(&engine, &entry).is_ok());

        // Not a compiled file at all.
        replace(&file, b"garbage");
        let err = load(&engine, &entry).err().unwrap();
        assert!(err.to_string().contains("checksum does not match"), "{err}");

        // A missing or damaged check file: the entry is not used.
        cache
            .load_or_compile(&engine, &empty(), compile(&engine))
            .unwrap();
        let check = entry.check_path();
        let mut record = std::fs::read(&check).unwrap();
        record[20] ^= 1;
        std::fs::write(&check, &record).unwrap();
        let err = load(&engine, &entry).err().unwrap();
        assert!(
            err.to_string().contains("check file is missing or damaged"),
            "{err}"
        );
        std::fs::remove_file(&check).unwrap();
        let err = load(&engine, &entry).err().unwrap();
        assert!(
            err.to_string().contains("check file is missing or damaged"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A compiled file that looks as it did when it was verified is not
    /// read; one that does not (here: touched, same bytes) is verified by
    /// its checksum, and its check file brought up to date.
    #[test]
    fn an_entry_is_verified_again_only_when_it_looks_changed() {
        let engine = wasmtime::Engine::default();
        let dir = temp_dir("identity");
        let cache = Cache::new(dir.clone());
        let entry = cache
            .load_or_compile(&engine, &empty(), compile(&engine))
            .unwrap()
            .entry
            .unwrap();
        let check = std::fs::read(entry.check_path()).unwrap();
        assert!(load(&engine, &entry).is_ok());
        assert_eq!(
            std::fs::read(entry.check_path()).unwrap(),
            check,
            "rewritten"
        );
        let file = File::options().write(true).open(&entry.path).unwrap();
        file.set_modified(std::time::SystemTime::UNIX_EPOCH)
            .unwrap();
        drop(file);
        assert!(load(&engine, &entry).is_ok());
        let updated = std::fs::read(entry.check_path()).unwrap();
        assert_ne!(updated, check, "the new identity is recorded");
        assert!(load(&engine, &entry).is_ok());
        assert_eq!(std::fs::read(entry.check_path()).unwrap(), updated);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A plugin file seen before (and settled: last changed long enough
    /// ago) is found by its identity without being read (here what would be
    /// read is an empty file); a file rewritten in place with the same size
    /// and modification time has another identity (its change time moved),
    /// so its new contents are compiled.
    #[test]
    fn plugin_files_are_found_by_identity_and_rewrites_are_seen() {
        let engine = wasmtime::Engine::default();
        let dir = temp_dir("sources");
        let mut cache = Cache::new(dir.clone());
        cache.settled_after = std::time::Duration::ZERO;
        std::fs::create_dir_all(&dir).unwrap();
        // Two components of the same size: a custom section named `a` or `b`.
        let plugin = dir.join("plugin.wasm");
        let with_section = |name: u8| [EMPTY_COMPONENT, &[0, 2, 1, name]].concat();
        std::fs::write(&plugin, with_section(b'a')).unwrap();
        let source_of = |path: &Path| {
            let file = File::open(path).unwrap();
            let identity = Identity::of(&file.metadata().unwrap()).unwrap();
            Source::File {
                file: std::sync::Arc::new(file),
                path: path.to_owned(),
                identity,
            }
        };
        let first = source_of(&plugin);
        let a = cache
            .load_or_compile(&engine, &first, compile(&engine))
            .unwrap()
            .entry
            .unwrap();
        let Source::File { identity, .. } = first else {
            unreachable!()
        };
        std::fs::write(dir.join("empty"), b"").unwrap();
        let unread = Source::File {
            file: std::sync::Arc::new(File::open(dir.join("empty")).unwrap()),
            path: dir.join("no-such-file.wasm"),
            identity,
        };
        let compiled = cache.load_or_compile(&engine, &unread, |_| panic!("compiled"));
        assert_eq!(compiled.unwrap().entry, Some(a.clone()));

        let modified = std::fs::metadata(&plugin).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut file = File::options().write(true).open(&plugin).unwrap();
        file.write_all(&with_section(b'b')).unwrap();
        file.set_modified(modified).unwrap();
        drop(file);
        let meta = std::fs::metadata(&plugin).unwrap();
        assert_eq!((meta.len(), meta.modified().unwrap()), (12, modified));
        let b = cache
            .load_or_compile(&engine, &source_of(&plugin), compile(&engine))
            .unwrap()
            .entry
            .unwrap();
        assert_ne!(a, b, "the rewritten file was taken for the old one");
        assert_eq!(b.key, key(&engine, &with_section(b'b')));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A plugin file changed just now is not found by its identity: it
    /// could be written again within the same tick of the clock that stamps
    /// its change time. It is read (and hashed) on every load until it has
    /// settled.
    #[test]
    fn a_fresh_plugin_file_is_not_recorded() {
        let engine = wasmtime::Engine::default();
        let dir = temp_dir("fresh");
        let cache = Cache::new(dir.clone());
        std::fs::create_dir_all(&dir).unwrap();
        let plugin = dir.join("plugin.wasm");
        std::fs::write(&plugin, EMPTY_COMPONENT).unwrap();
        let file = File::open(&plugin).unwrap();
        let identity = Identity::of(&file.metadata().unwrap()).unwrap();
        let source = Source::File {
            file: std::sync::Arc::new(file),
            path: plugin,
            identity,
        };
        assert!(!settled(&identity, SETTLED));
        cache
            .load_or_compile(&engine, &source, compile(&engine))
            .unwrap();
        let records = std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "source")
            })
            .count();
        assert_eq!(records, 0);
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
                            .load_or_compile(&engine, &empty(), compile(&engine))
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
        // Only the entry itself (compiled file and check file) is left: no
        // partial files.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
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
            .load_or_compile(&engine, &empty(), compile(&engine))
            .unwrap();
        assert!(compiled.entry.is_none());
    }
}
