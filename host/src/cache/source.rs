//! Plugin files as the cache finds them: by their identity (what a file
//! looks like from outside), read only when they must be compiled.

use std::fs::File;
use std::path::PathBuf;

use crate::error::{Error, ErrorKind};
use crate::text::{ECHO, cut_text};

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
                        format!(
                            "failed to read plugin `{}`: {why}",
                            cut_text(&path.display().to_string(), ECHO)
                        ),
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
pub(super) fn read_from_start(file: &File, bytes: &mut Vec<u8>) -> std::io::Result<()> {
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
pub(crate) fn settled(identity: &Identity, after: std::time::Duration) -> bool {
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
