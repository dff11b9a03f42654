//! The trust the cache places in its directory: every file the user's own,
//! writable by nobody else, never a link; the directory private.

use std::fs::File;
use std::path::Path;

/// Opens a file of the cache for reading, without following a link or
/// blocking on a FIFO planted at its path.
pub(super) fn open_entry_file(path: &Path) -> std::io::Result<File> {
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
pub(super) fn trusted(meta: &std::fs::Metadata) -> Result<(), String> {
    #[cfg(unix)]
    {
        trusted_by(meta, rustix::process::geteuid().as_raw())
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        Ok(())
    }
}

/// Whether a file or directory belongs to user `me` and is writable by
/// nobody else.
#[cfg(unix)]
fn trusted_by(meta: &std::fs::Metadata, me: u32) -> Result<(), String> {
    {
        use std::os::unix::fs::MetadataExt as _;
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
    Ok(())
}

/// Warns, once per process, that a cache directory is not used.
pub(super) fn warn_once(dir: &Path, why: &str) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        eprintln!(
            "sandgen: warning: not using the compile cache `{}`: {why}; plugins are compiled in \
             memory on every load, and process isolation is not available",
            dir.display()
        );
    });
}

pub(super) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    /// A file of another user, or writable by group or others, is not
    /// trusted; the user's own private file is. (The end-to-end test gives a
    /// cache file away with `chown`, which needs root: this check holds for
    /// anyone.)
    #[test]
    fn only_the_users_own_private_files_are_trusted() {
        let path = std::env::temp_dir().join(format!("sandgen-trust-{}", std::process::id()));
        std::fs::write(&path, b"entry").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        let me = rustix::process::geteuid().as_raw();
        assert_eq!(trusted_by(&meta, me), Ok(()));
        let other = me.wrapping_add(1);
        let refused = trusted_by(&meta, other).unwrap_err();
        assert!(
            refused.starts_with(&format!(
                "it belongs to user {me}, not to this user ({other})"
            )),
            "{refused}"
        );
        for mode in [0o620, 0o602, 0o666] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let meta = std::fs::metadata(&path).unwrap();
            let refused = trusted_by(&meta, me).unwrap_err();
            assert!(
                refused.contains("writable by others"),
                "{mode:o}: {refused}"
            );
        }
        std::fs::remove_file(&path).unwrap();
    }
}
