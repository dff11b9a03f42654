//! The wire format between a caller and its worker process. Each
//! direction opens with a preamble (magic and protocol version, so that a
//! caller and a worker program of different sandgen versions refuse each
//! other clearly); then each message is a frame `[u64 little-endian
//! length][tag byte][payload]`. Item batches (the hot path) are written and
//! read without an intermediate copy, or cross through shared memory
//! (`shared.rs`) with only their place in it on the pipe; other messages
//! are bincode with a size limit (`sandgen_wire::message`).

use std::io::{self, Read, Write};

use sandgen_wire::message;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::cache::Entry;
use crate::guest::output::GuestStream;
use crate::protocol::{Status, WorkerBatch};
use crate::worker::task::Task;

/// The largest non-item message accepted (the handshake carries the
/// generator's arguments and config).
pub(crate) const MAX_MESSAGE: usize = message::MAX;

/// The largest report a worker process sends besides item batches: an
/// error (a plugin message is cut at 64 KiB, a stderr tail is 4 KiB) or an
/// output line (at most 16 KiB), with room to spare.
const MAX_REPORT: usize = 1 << 20;

/// The version of this protocol: what a caller and a worker program must
/// agree on. Raise it with any change to the messages below or to
/// [`Command`](crate::protocol::Command), [`Status`], [`Task`](crate::worker::task::Task)
/// or what they contain.
pub(crate) const PROTOCOL: u32 = 7;

/// The first argument that makes a program a worker process.
pub(crate) const WORKER_ARG: &str = "__sandgen-worker";

/// The caller's first message after its preamble: everything the worker
/// needs.
#[derive(Serialize, Deserialize)]
pub(crate) struct Hello {
    /// The plugin's name, for messages and output prefixes.
    pub(crate) plugin: String,
    /// The compiled component in the compile cache, and the key it must
    /// carry (the worker has no component bytes to compute it from).
    pub(crate) compiled: Entry,
    pub(crate) task: Task,
    /// The size of the shared region (header page and ring) whose
    /// descriptor the caller sent with its preamble, if it made one.
    pub(crate) shared: Option<u64>,
}

/// Opens each direction of the stream, before any frame: the magic, then
/// [`PROTOCOL`] as a little-endian u32. Fixed forever, so that two
/// versions can always tell that they differ.
const MAGIC: &[u8; 8] = b"sandgen\0";

const TAG_MESSAGE: u8 = 0;
const TAG_ITEMS: u8 = 1;
/// Worker → caller: an item batch in the shared region.
const TAG_SHARED: u8 = 2;

/// Worker process → parent, besides item batches.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Report {
    Status(Status),
    /// A line the guest printed.
    Output {
        stderr: bool,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// An item batch of `count` items in the shared region: `len` bytes at
    /// `offset`, as the worker claims (the caller checks both).
    Shared {
        offset: u64,
        len: u64,
        count: u32,
    },
}

impl Report {
    pub(crate) fn output(stream: GuestStream, bytes: &[u8]) -> Report {
        Report::Output {
            stderr: stream == GuestStream::Stderr,
            bytes: bytes.to_owned(),
        }
    }
}

fn bad(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// This side's preamble: the magic and the protocol version.
pub(crate) fn preamble() -> [u8; 12] {
    let mut preamble = [0; 12];
    preamble[..8].copy_from_slice(MAGIC);
    preamble[8..].copy_from_slice(&PROTOCOL.to_le_bytes());
    preamble
}

/// Writes this side's preamble.
pub(crate) fn write_preamble(w: &mut impl Write) -> io::Result<()> {
    w.write_all(&preamble())
}

/// What the other side opened its stream with.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Preamble {
    /// A sandgen speaking this protocol.
    Matches,
    /// A sandgen speaking another version of it.
    Version(u32),
    /// Not sandgen: the first bytes that arrived.
    Foreign(Vec<u8>),
    /// The stream ended before a preamble.
    Ended,
}

/// Reads the other side's preamble.
pub(crate) fn read_preamble(r: &mut impl Read) -> io::Result<Preamble> {
    let mut head = [0u8; 12];
    let mut got = 0;
    while got < head.len() {
        match r.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if got == 0 {
        return Ok(Preamble::Ended);
    }
    if got < head.len() || &head[..8] != MAGIC {
        return Ok(Preamble::Foreign(head[..got].to_vec()));
    }
    let version = u32::from_le_bytes(head[8..].try_into().expect("4 bytes"));
    Ok(if version == PROTOCOL {
        Preamble::Matches
    } else {
        Preamble::Version(version)
    })
}

/// Any message that is not an item batch (the handshake, commands).
pub(crate) fn write<T: Serialize>(w: &mut impl Write, value: &T) -> io::Result<()> {
    let payload = message::encode(value).map_err(bad)?;
    w.write_all(&(payload.len() as u64 + 1).to_le_bytes())?;
    w.write_all(&[TAG_MESSAGE])?;
    w.write_all(&payload)
}

/// Reads one frame's header: `None` at a clean end of stream.
fn read_header(r: &mut impl Read) -> io::Result<Option<(u8, u64)>> {
    let mut len = [0u8; 8];
    match r.read_exact(&mut len[..1]) {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        other => other?,
    }
    r.read_exact(&mut len[1..])?;
    let len = u64::from_le_bytes(len);
    if len == 0 {
        return Err(bad("empty frame"));
    }
    let mut tag = [0u8];
    r.read_exact(&mut tag)?;
    Ok(Some((tag[0], len - 1)))
}

fn read_payload(r: &mut impl Read, len: u64, limit: usize) -> io::Result<Vec<u8>> {
    let len = usize::try_from(len)
        .ok()
        .filter(|&l| l <= limit)
        .ok_or_else(|| {
            bad(format!(
                "a {len}-byte message is larger than the {limit} bytes allowed"
            ))
        })?;
    // Grow with the data that really arrives, not with what the header
    // claims.
    let mut payload = Vec::with_capacity(len.min(1 << 20));
    r.take(len as u64).read_to_end(&mut payload)?;
    if payload.len() != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the stream ended inside a message",
        ));
    }
    Ok(payload)
}

fn decode<T: DeserializeOwned>(payload: &[u8]) -> io::Result<T> {
    message::decode(payload).map_err(bad)
}

/// Reads one non-item message; `None` at a clean end of stream.
pub(crate) fn read<T: DeserializeOwned>(r: &mut impl Read) -> io::Result<Option<T>> {
    let Some((tag, len)) = read_header(r)? else {
        return Ok(None);
    };
    if tag != TAG_MESSAGE {
        return Err(bad(format!("unexpected frame tag {tag}")));
    }
    decode(&read_payload(r, len, MAX_MESSAGE)?).map(Some)
}

/// Worker process side: a report, or an item batch without copying it.
pub(crate) fn write_report(w: &mut impl Write, report: Report) -> io::Result<()> {
    match report {
        Report::Status(Status::Items(batch)) => {
            w.write_all(&(batch.frames.len() as u64 + 5).to_le_bytes())?;
            w.write_all(&[TAG_ITEMS])?;
            w.write_all(&batch.count.to_le_bytes())?;
            w.write_all(&batch.frames)
        }
        Report::Shared { offset, len, count } => {
            w.write_all(&21u64.to_le_bytes())?;
            w.write_all(&[TAG_SHARED])?;
            w.write_all(&count.to_le_bytes())?;
            w.write_all(&offset.to_le_bytes())?;
            w.write_all(&len.to_le_bytes())
        }
        other => write(w, &other),
    }
}

/// Parent side: the next report; `None` at a clean end of stream. Item
/// batches are read straight into their buffer, up to `max_batch`
/// bytes; the caller validates their frames.
pub(crate) fn read_report(r: &mut impl Read, max_batch: usize) -> io::Result<Option<Report>> {
    let Some((tag, len)) = read_header(r)? else {
        return Ok(None);
    };
    match tag {
        TAG_MESSAGE => decode(&read_payload(r, len, MAX_REPORT)?).map(Some),
        TAG_ITEMS => {
            let len = len
                .checked_sub(4)
                .ok_or_else(|| bad("an item frame without a count"))?;
            let mut count = [0u8; 4];
            r.read_exact(&mut count)?;
            let frames = read_payload(r, len, max_batch)?;
            Ok(Some(Report::Status(Status::Items(WorkerBatch {
                frames,
                count: u32::from_le_bytes(count),
            }))))
        }
        TAG_SHARED => {
            if len != 20 {
                return Err(bad(format!(
                    "a shared batch message of {len} bytes, not 20"
                )));
            }
            let mut fields = [0u8; 20];
            r.read_exact(&mut fields)?;
            let (count, place) = fields.split_at(4);
            let (offset, len) = place.split_at(8);
            Ok(Some(Report::Shared {
                offset: u64::from_le_bytes(offset.try_into().expect("8 bytes")),
                len: u64::from_le_bytes(len.try_into().expect("8 bytes")),
                count: u32::from_le_bytes(count.try_into().expect("4 bytes")),
            }))
        }
        other => Err(bad(format!("unexpected frame tag {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Error, ErrorKind};
    use crate::protocol::Command;

    fn round_trip(report: Report) -> Report {
        let mut buf = Vec::new();
        write_report(&mut buf, report).unwrap();
        let mut reader = buf.as_slice();
        let back = read_report(&mut reader, 1 << 20).unwrap().unwrap();
        assert!(read_report(&mut reader, 1 << 20).unwrap().is_none());
        back
    }

    #[test]
    fn reports_round_trip() {
        let batch = WorkerBatch {
            frames: vec![1, 0, 0, 0, 42],
            count: 1,
        };
        match round_trip(Report::Status(Status::Items(batch))) {
            Report::Status(Status::Items(b)) => {
                assert_eq!((b.frames, b.count), (vec![1, 0, 0, 0, 42], 1))
            }
            other => panic!("{other:?}"),
        }
        let error = Error::new(ErrorKind::Trap, "boom");
        match round_trip(Report::Status(Status::IteratorFailed(error.clone()))) {
            Report::Status(Status::IteratorFailed(e)) => assert_eq!(e, error),
            other => panic!("{other:?}"),
        }
        let shared = Report::Shared {
            offset: 1 << 40,
            len: 65_540,
            count: 7,
        };
        match round_trip(shared) {
            Report::Shared { offset, len, count } => {
                assert_eq!((offset, len, count), (1 << 40, 65_540, 7))
            }
            other => panic!("{other:?}"),
        }
        let mut buf = Vec::new();
        write(&mut buf, &Command::Consumed { items: 3, bytes: 9 }).unwrap();
        assert_eq!(
            read::<Command>(&mut buf.as_slice()).unwrap(),
            Some(Command::Consumed { items: 3, bytes: 9 })
        );
    }

    #[test]
    fn oversized_and_truncated_frames_are_errors() {
        let mut buf = Vec::new();
        write_report(
            &mut buf,
            Report::Status(Status::Items(WorkerBatch {
                frames: vec![0; 100],
                count: 1,
            })),
        )
        .unwrap();
        let oversized = read_report(&mut buf.as_slice(), 10).unwrap_err();
        assert_eq!(
            oversized.to_string(),
            "a 100-byte message is larger than the 10 bytes allowed"
        );
        let truncated = read_report(&mut &buf[..50], 1000).unwrap_err();
        assert_eq!(truncated.kind(), io::ErrorKind::UnexpectedEof);
        // A huge length is refused for its size, before anything is read
        // or allocated.
        let mut huge = u64::MAX.to_le_bytes().to_vec();
        huge.push(TAG_MESSAGE);
        huge.extend_from_slice(&[0; 64]);
        let refused = read::<Command>(&mut huge.as_slice()).unwrap_err();
        assert!(
            refused
                .to_string()
                .ends_with(&format!("larger than the {MAX_MESSAGE} bytes allowed")),
            "{refused}"
        );
    }

    /// Random and mutated streams: the decoder never panics. Set
    /// `SANDGEN_FUZZ_ITERATIONS` for a longer run.
    #[test]
    fn fuzz_report_decoder() {
        let iterations: u64 = std::env::var("SANDGEN_FUZZ_ITERATIONS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(50_000);
        let mut seeds = Vec::new();
        for report in [
            Report::Status(Status::IterationStarted),
            Report::Status(Status::IteratorFailed(Error::new(ErrorKind::Trap, "x"))),
            Report::Output {
                stderr: true,
                bytes: b"line".to_vec(),
            },
            Report::Status(Status::Items(WorkerBatch {
                frames: vec![2, 0, 0, 0, 1, 2],
                count: 1,
            })),
            Report::Shared {
                offset: 4096,
                len: 6,
                count: 1,
            },
        ] {
            let mut buf = Vec::new();
            write_report(&mut buf, report).unwrap();
            seeds.push(buf);
        }
        let mut next = crate::testing::xorshift(0x9e37_79b9_7f4a_7c15u64);
        let mut decoded = 0u64;
        for i in 0..iterations {
            // A stream of every seed message, from a rotating start, with a
            // few mutations: the messages before the first one decode, so
            // the decoder is exercised past the first bytes.
            let start = (i % seeds.len() as u64) as usize;
            let mut buf: Vec<u8> = (0..seeds.len())
                .flat_map(|k| seeds[(start + k) % seeds.len()].iter().copied())
                .collect();
            for _ in 0..1 + next() % 3 {
                let at = (next() % buf.len() as u64) as usize;
                match next() % 3 {
                    0 => buf[at] = next() as u8,
                    1 => buf.truncate(at),
                    _ => buf.insert(at, next() as u8),
                }
                if buf.is_empty() {
                    break;
                }
            }
            let mut reader = buf.as_slice();
            while let Ok(Some(_)) = read_report(&mut reader, 1 << 16) {
                decoded += 1;
            }
            let _ = read::<Command>(&mut buf.as_slice());
        }
        eprintln!("fuzzed {iterations} streams, {decoded} messages decoded");
        // The mutations must leave many streams readable, or the fuzzer
        // only ever tests the first bytes of the decoder.
        assert!(
            decoded >= iterations,
            "only {decoded} messages decoded from {iterations} mutated streams"
        );
    }
}
