//! The worker protocol (design §2): commands from the caller, statuses from
//! the worker. The same messages go through crossbeam channels for a thread
//! worker and, serialized, over pipes for a process worker.

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::codec::Batch;

/// Caller → worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Command {
    /// Start a new pass (from Stand By).
    StartIteration,
    /// End the current pass; the worker answers `IterationFinished`.
    StopIteration,
    /// End the worker quietly.
    Abort,
    /// Back-pressure credit: the caller has taken this many items (and
    /// bytes) of the current pass off the queue, so the worker may produce
    /// that much more.
    Consumed { items: u32, bytes: u64 },
}

/// Worker → caller.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Status {
    InitializationSucceeded,
    InitializationFailed(Error),
    IterationStarted,
    /// Items of the current pass (SPDL's ITERATOR_SUCCESS), a batch at a time.
    Items(Batch),
    IteratorFailed(Error),
    IterationFinished,
    UnexpectedCommand(Command),
}

/// The wire format between a parent and its worker process: each message is
/// a frame `[u64 little-endian length][tag byte][payload]`. Item batches
/// (the hot path) are written and read without an intermediate copy; other
/// messages are bincode with a size limit.
pub(crate) mod wire {
    use std::io::{self, Read, Write};

    use serde::{Deserialize, Serialize};

    use super::Status;
    use crate::codec::Batch;
    use crate::output::GuestStream;

    /// The largest non-item message accepted (the setup carries the
    /// generator's arguments and config).
    pub(crate) const MAX_MESSAGE: usize = 256 << 20;
    const CONFIG: bincode::config::Configuration<
        bincode::config::LittleEndian,
        bincode::config::Varint,
        bincode::config::Limit<MAX_MESSAGE>,
    > = bincode::config::standard().with_limit::<MAX_MESSAGE>();

    const TAG_MESSAGE: u8 = 0;
    const TAG_ITEMS: u8 = 1;

    /// Worker process → parent, besides item batches.
    #[derive(Debug, Serialize, Deserialize)]
    pub(crate) enum Report {
        Status(Status),
        /// A line the guest printed.
        Output {
            stderr: bool,
            text: String,
        },
    }

    impl Report {
        pub(crate) fn output(stream: GuestStream, text: &str) -> Report {
            Report::Output {
                stderr: stream == GuestStream::Stderr,
                text: text.to_owned(),
            }
        }
    }

    fn bad(what: impl std::fmt::Display) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, what.to_string())
    }

    /// Any message that is not an item batch (the setup, commands).
    pub(crate) fn write<T: Serialize>(w: &mut impl Write, value: &T) -> io::Result<()> {
        let payload = bincode::serde::encode_to_vec(value, CONFIG).map_err(bad)?;
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

    fn decode<T: for<'de> Deserialize<'de>>(payload: &[u8]) -> io::Result<T> {
        let (value, read) = bincode::serde::decode_from_slice(payload, CONFIG).map_err(bad)?;
        if read != payload.len() {
            return Err(bad("trailing bytes after a message"));
        }
        Ok(value)
    }

    /// Reads one non-item message; `None` at a clean end of stream.
    pub(crate) fn read<T: for<'de> Deserialize<'de>>(r: &mut impl Read) -> io::Result<Option<T>> {
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
            TAG_MESSAGE => decode(&read_payload(r, len, MAX_MESSAGE)?).map(Some),
            TAG_ITEMS => {
                let len = len
                    .checked_sub(4)
                    .ok_or_else(|| bad("an item frame without a count"))?;
                let mut count = [0u8; 4];
                r.read_exact(&mut count)?;
                let frames = read_payload(r, len, max_batch)?;
                Ok(Some(Report::Status(Status::Items(Batch {
                    frames,
                    count: u32::from_le_bytes(count),
                }))))
            }
            other => Err(bad(format!("unexpected frame tag {other}"))),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::protocol::Command;
        use crate::{Error, ErrorKind};

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
            let batch = Batch {
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
                Report::Status(Status::Items(Batch {
                    frames: vec![0; 100],
                    count: 1,
                })),
            )
            .unwrap();
            assert!(read_report(&mut buf.as_slice(), 10).is_err());
            assert!(read_report(&mut &buf[..50], 1000).is_err());
            // A huge length is refused before anything is allocated.
            let mut huge = u64::MAX.to_le_bytes().to_vec();
            huge.push(TAG_MESSAGE);
            assert!(read::<Command>(&mut huge.as_slice()).is_err());
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
                    text: "line".into(),
                },
                Report::Status(Status::Items(Batch {
                    frames: vec![2, 0, 0, 0, 1, 2],
                    count: 1,
                })),
            ] {
                let mut buf = Vec::new();
                write_report(&mut buf, report).unwrap();
                seeds.push(buf);
            }
            let mut state = 0x9e37_79b9_7f4a_7c15u64;
            let mut next = || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state
            };
            let mut decoded = 0u64;
            for i in 0..iterations {
                let mut buf = seeds[(i % seeds.len() as u64) as usize].clone();
                for _ in 0..1 + next() % 4 {
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
        }
    }
}
