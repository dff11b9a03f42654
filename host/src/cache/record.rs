//! The format of the cache's records: check files (`<key>.check`) and
//! source records (`<id>.source`), each a magic, its contents and a
//! SHA-256 of both.

use std::io::Read as _;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::cache::trust::{open_entry_file, trusted};
use crate::cache::{Fingerprint, Identity, Key};

/// Opens a check file.
pub(super) const CHECK_MAGIC: &[u8; 16] = b"sandgen-check-1\n";
/// Opens a source record.
pub(super) const SOURCE_MAGIC: &[u8; 16] = b"sandgen-source2\n";

/// A check file: the magic, the entry's key, the SHA-256 of its compiled
/// file, what that file looked like when it was verified, and a SHA-256 of
/// all of these.
pub(super) fn check_record(key: &Key, digest: &[u8; 32], identity: Option<Identity>) -> Vec<u8> {
    let mut record = CHECK_MAGIC.to_vec();
    record.extend_from_slice(key);
    record.extend_from_slice(digest);
    record.extend_from_slice(&identity.map_or([0; 56], Identity::to_bytes));
    let seal: [u8; 32] = Sha256::digest(&record).into();
    record.extend_from_slice(&seal);
    record
}

/// A source record: the magic, the fingerprint of the plugin file's
/// contents, the key of the component they are, and a SHA-256 of these.
/// The fingerprint sealed in it binds it to those contents: a record copied
/// over another file's record is refused.
pub(super) fn source_record(fingerprint: &Fingerprint, key: &Key) -> Vec<u8> {
    let mut record = SOURCE_MAGIC.to_vec();
    record.extend_from_slice(&fingerprint.to_bytes());
    record.extend_from_slice(key);
    let seal: [u8; 32] = Sha256::digest(&record).into();
    record.extend_from_slice(&seal);
    record
}

/// The fields of a sealed record of `len` bytes that opens with `magic`,
/// when it is one, intact, in a trusted file.
pub(super) fn read_record(path: &Path, magic: &[u8; 16], len: usize) -> Option<Vec<u8>> {
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

/// The key a source record holds, if it is intact and made for contents
/// with `fingerprint`.
pub(super) fn read_source_record(path: &Path, fingerprint: &Fingerprint) -> Option<Key> {
    let fields = read_record(path, SOURCE_MAGIC, 16 + 24 + 32 + 32)?;
    let (recorded, key) = fields.split_at(24);
    (recorded == fingerprint.to_bytes()).then(|| key.try_into().ok())?
}
