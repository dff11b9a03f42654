//! Plugin files as the cache finds them: by their contents, read in chunks
//! (never held whole by the caller) at every load to take their
//! [`Fingerprint`], and again when they must be hashed or compiled; and the
//! [`Identity`] of the cache's own files (what a file looks like from
//! outside), by which an entry already verified is known.

use std::fs::File;
use std::path::PathBuf;

use crate::error::{Error, ErrorKind};
use crate::text::{ECHO, cut_text};

/// What a file looks like from outside: where it is, how large, and when
/// it last changed. Used for the cache's own files, which only the cache
/// writes (never in place) and only their owner can write: never for plugin
/// files, whose contents can change with no change to their metadata.
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

    pub(crate) fn to_bytes(self) -> [u8; 56] {
        let mut bytes = [0; 56];
        for (chunk, value) in bytes.chunks_exact_mut(8).zip(self.0) {
            chunk.copy_from_slice(&value.to_le_bytes());
        }
        bytes
    }

    pub(crate) fn from_bytes(bytes: &[u8]) -> Identity {
        let mut values = [0; 7];
        for (value, chunk) in values.iter_mut().zip(bytes.chunks_exact(8)) {
            *value = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        }
        Identity(values)
    }
}

/// What a plugin file held when it was loaded: its length and a hash of
/// its bytes, taken by reading all of it at every load. Nothing about a
/// file's metadata can stand for its contents: bytes written through a
/// shared writable mapping whose pages were already dirty change no
/// timestamp at all.
///
/// The hash is an XXH3-128 of the XXH3-128s of the file's blocks of
/// [`BLOCK`] bytes (1 MiB), so that the blocks can be read and hashed on several
/// threads at once; it does not depend on how many there are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    pub(crate) len: u64,
    pub(crate) hash: u128,
}

/// The blocks a [`Fingerprint`] hashes one by one.
pub(crate) const BLOCK: u64 = 1 << 20;

impl Fingerprint {
    /// Reads all of `file` (in chunks of 256 KiB per thread: the caller
    /// never holds it whole), its blocks shared among up to 4 threads.
    pub(crate) fn of(file: &File) -> std::io::Result<Fingerprint> {
        let len = file.metadata()?.len();
        let blocks = len.div_ceil(BLOCK).max(1);
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get() as u64)
            .clamp(1, 4)
            .min(blocks);
        let hashes: Vec<std::io::Result<Vec<(u128, u64)>>> = if threads == 1 {
            vec![hash_blocks(file, 0..blocks)]
        } else {
            let per = blocks.div_ceil(threads);
            std::thread::scope(|scope| {
                let runs: Vec<_> = (0..threads)
                    .map(|t| {
                        let range = t * per..((t + 1) * per).min(blocks);
                        scope.spawn(move || hash_blocks(file, range))
                    })
                    .collect();
                runs.into_iter()
                    .map(|run| {
                        run.join().unwrap_or_else(|_| {
                            Err(std::io::Error::other("a hashing thread failed"))
                        })
                    })
                    .collect()
            })
        };
        let mut all = xxhash_rust::xxh3::Xxh3::new();
        let mut read = 0;
        for hashes in hashes {
            for (hash, block_len) in hashes? {
                all.update(&hash.to_le_bytes());
                read += block_len;
            }
        }
        // A file that grew or shrank meanwhile was not read as one.
        if file.metadata()?.len() != read {
            return Err(std::io::Error::other(
                "it changed while it was read; load it again",
            ));
        }
        Ok(Fingerprint {
            len: read,
            hash: all.digest128(),
        })
    }

    pub(crate) fn to_bytes(self) -> [u8; 24] {
        let mut bytes = [0; 24];
        bytes[..8].copy_from_slice(&self.len.to_le_bytes());
        bytes[8..].copy_from_slice(&self.hash.to_le_bytes());
        bytes
    }
}

/// A [`Fingerprint`] taken of bytes fed in order, in chunks of any size.
pub(crate) struct FingerprintHasher {
    all: xxhash_rust::xxh3::Xxh3,
    block: xxhash_rust::xxh3::Xxh3,
    in_block: u64,
    len: u64,
}

impl FingerprintHasher {
    pub(crate) fn new() -> FingerprintHasher {
        FingerprintHasher {
            all: xxhash_rust::xxh3::Xxh3::new(),
            block: xxhash_rust::xxh3::Xxh3::new(),
            in_block: 0,
            len: 0,
        }
    }

    pub(crate) fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let take = (BLOCK - self.in_block).min(bytes.len() as u64) as usize;
            self.block.update(&bytes[..take]);
            self.in_block += take as u64;
            self.len += take as u64;
            bytes = &bytes[take..];
            if self.in_block == BLOCK {
                self.all.update(&self.block.digest128().to_le_bytes());
                self.block.reset();
                self.in_block = 0;
            }
        }
    }

    pub(crate) fn finish(mut self) -> Fingerprint {
        // The last, partial block (and the one block of an empty file).
        if self.in_block > 0 || self.len == 0 {
            self.all.update(&self.block.digest128().to_le_bytes());
        }
        Fingerprint {
            len: self.len,
            hash: self.all.digest128(),
        }
    }
}

/// The XXH3-128 and length of each block of `file` in `blocks`.
fn hash_blocks(file: &File, blocks: std::ops::Range<u64>) -> std::io::Result<Vec<(u128, u64)>> {
    // Small enough to stay in the core's cache between the read and the hash.
    let mut buf = vec![0; 256 << 10];
    let mut hashes = Vec::with_capacity(blocks.clone().count());
    for block in blocks {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        let start = block * BLOCK;
        let mut at = start;
        loop {
            let want = (start + BLOCK - at).min(buf.len() as u64) as usize;
            if want == 0 {
                break;
            }
            let n = read_at(file, &mut buf[..want], at)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            at += n as u64;
        }
        hashes.push((hasher.digest128(), at - start));
    }
    Ok(hashes)
}

/// A plugin's component: its bytes, or a file read again (in chunks) each
/// time it must be hashed or compiled.
#[derive(Clone)]
pub(crate) enum Source {
    Bytes(std::sync::Arc<[u8]>),
    File {
        /// The file as it was opened when the plugin was loaded: read
        /// through this descriptor, so that a file replaced at its path
        /// since is not taken for it.
        file: std::sync::Arc<File>,
        path: PathBuf,
        /// What the file held when it was loaded.
        fingerprint: Fingerprint,
    },
}

impl Source {
    /// The component's length in bytes.
    pub(crate) fn len(&self) -> u64 {
        match self {
            Source::Bytes(bytes) => bytes.len() as u64,
            Source::File { fingerprint, .. } => fingerprint.len,
        }
    }

    /// What a position names the plugin by: the fingerprint of its
    /// contents, `xxh3-128:<hash>:<length>`.
    pub(crate) fn content_id(&self) -> String {
        let fingerprint = self.fingerprint();
        format!("xxh3-128:{:032x}:{}", fingerprint.hash, fingerprint.len)
    }

    /// The fingerprint of the component's contents (a file's was taken
    /// when it was loaded).
    pub(crate) fn fingerprint(&self) -> Fingerprint {
        match self {
            Source::Bytes(bytes) => {
                let mut hasher = FingerprintHasher::new();
                hasher.update(bytes);
                hasher.finish()
            }
            Source::File { fingerprint, .. } => *fingerprint,
        }
    }

    /// Feeds the component's bytes to `sink`, in chunks. A file must still
    /// hold what it held when it was loaded, else what was loaded is gone:
    /// the error comes after the last chunk, so a sink must not act on what
    /// it was fed before this returns `Ok`.
    pub(crate) fn stream(
        &self,
        sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<(), Error> {
        match self {
            Source::Bytes(bytes) => sink(bytes).map_err(|e| {
                Error::new(
                    ErrorKind::Load,
                    format!("failed to pass on the plugin's bytes: {e}"),
                )
            }),
            Source::File {
                file,
                path,
                fingerprint,
            } => {
                let failed = |why: String| {
                    Error::new(
                        ErrorKind::Load,
                        format!(
                            "failed to read plugin `{}`: {why}",
                            cut_text(&path.display().to_string(), ECHO)
                        ),
                    )
                };
                let mut hasher = FingerprintHasher::new();
                read_chunks(file, &mut |chunk| {
                    hasher.update(chunk);
                    sink(chunk)
                })
                .map_err(|e| failed(e.to_string()))?;
                if hasher.finish() != *fingerprint {
                    return Err(failed(
                        "it was written after it was loaded; load it again".into(),
                    ));
                }
                Ok(())
            }
        }
    }

    /// The component's bytes, in memory (to compile in this process).
    pub(crate) fn bytes(&self) -> Result<std::borrow::Cow<'_, [u8]>, Error> {
        match self {
            Source::Bytes(bytes) => Ok(std::borrow::Cow::Borrowed(bytes)),
            Source::File { .. } => {
                let mut bytes = Vec::with_capacity(usize::try_from(self.len()).unwrap_or(0));
                self.stream(&mut |chunk| {
                    bytes.extend_from_slice(chunk);
                    Ok(())
                })?;
                Ok(std::borrow::Cow::Owned(bytes))
            }
        }
    }
}

/// Feeds all of a file, from its start, to `sink` in chunks of at most 1 MiB;
/// returns how many bytes it read.
pub(crate) fn read_chunks(
    file: &File,
    sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<u64> {
    let mut buf = vec![0; 1 << 20];
    let mut at = 0u64;
    loop {
        let n = read_at(file, &mut buf, at)?;
        if n == 0 {
            return Ok(at);
        }
        sink(&buf[..n])?;
        at += n as u64;
    }
}

/// Reads at `at` into `buf`, again when interrupted.
fn read_at(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    #[cfg(unix)]
    loop {
        match std::os::unix::fs::FileExt::read_at(file, buf, at) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
    #[cfg(not(unix))]
    {
        use std::io::{Read as _, Seek as _};
        let mut file = file;
        file.seek(std::io::SeekFrom::Start(at))?;
        file.read(buf)
    }
}

/// All of a file, from its start, whatever its position.
pub(super) fn read_from_start(file: &File, bytes: &mut Vec<u8>) -> std::io::Result<()> {
    read_chunks(file, &mut |chunk| {
        bytes.extend_from_slice(chunk);
        Ok(())
    })
    .map(drop)
}
