//! Frames: how a batch of items travels. A batch is a byte buffer of
//! frames, each a 4-byte little-endian length followed by that many bytes
//! of one encoded item (`wit/generator.wit`, `next`).

/// Appends one frame to `buf`: a length, then what `write` appends.
///
/// # Errors
///
/// What `write` returns (`buf` is then as it was), or an item larger than
/// 4 GiB, the most a frame can hold.
#[inline]
pub fn push<E: From<crate::CodecError>>(
    buf: &mut Vec<u8>,
    write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
) -> Result<(), E> {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    if let Err(error) = write(buf) {
        buf.truncate(start);
        return Err(error);
    }
    let Ok(len) = u32::try_from(buf.len() - start - 4) else {
        buf.truncate(start);
        return Err(crate::CodecError(
            "an item is larger than 4 GiB, the most a frame can hold".into(),
        )
        .into());
    };
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

/// Checks a batch returned by `next` against the contract and counts its
/// frames.
///
/// # Errors
///
/// A message that says which rule the batch broke, and where.
///
/// A batch is frames (4-byte little-endian length, then that many bytes); at
/// most `max_items` of them; no frame may start at or after `max_bytes`; no
/// item may be larger than `max_item`.
pub fn validate_batch(
    buf: &[u8],
    max_items: u32,
    max_bytes: u32,
    max_item: u32,
) -> Result<u32, String> {
    let mut offset = 0usize;
    let mut count = 0u32;
    while offset < buf.len() {
        if count >= max_items {
            return Err(format!(
                "the plugin returned more items than the {max_items} asked for"
            ));
        }
        if count > 0 && offset >= max_bytes as usize {
            return Err(format!(
                "the plugin added an item after its buffer reached max-bytes ({max_bytes} bytes)"
            ));
        }
        let Some(header) = buf.get(offset..offset + 4) else {
            return Err(format!(
                "malformed frame at byte {offset}: {} bytes left, too few for a 4-byte length",
                buf.len() - offset
            ));
        };
        let len = u32::from_le_bytes(header.try_into().expect("4 bytes"));
        if len > max_item {
            return Err(format!(
                "item {count} of the batch has {len} bytes, more than the largest item allowed ({max_item} bytes)"
            ));
        }
        let len = len as usize;
        let end = offset + 4 + len;
        if end > buf.len() {
            return Err(format!(
                "malformed frame at byte {offset}: its length {len} overruns the {}-byte buffer",
                buf.len()
            ));
        }
        offset = end;
        count += 1;
    }
    Ok(count)
}

/// Reads the frames of a validated batch one by one.
#[derive(Debug, Default)]
pub struct Frames {
    buf: Vec<u8>,
    offset: usize,
    left: u32,
}

impl Frames {
    /// The frames of `buf`, which [`validate_batch`] counted as `count`.
    pub fn new(buf: Vec<u8>, count: u32) -> Self {
        Frames {
            buf,
            offset: 0,
            left: count,
        }
    }

    /// Items not yet read.
    #[inline]
    pub fn left(&self) -> u32 {
        self.left
    }

    /// The batch's size in bytes.
    #[inline]
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    /// The next item's bytes. The batch was validated when it was made;
    /// the bounds are checked again all the same, so a broken batch ends
    /// early instead of panicking.
    #[inline]
    pub fn next_frame(&mut self) -> Option<&[u8]> {
        let (frame, end) = frame_at(&self.buf, self.offset, self.left)?;
        self.offset = end;
        self.left -= 1;
        Some(frame)
    }

    /// The batch's buffer, for reuse.
    pub fn into_buf(self) -> Vec<u8> {
        self.buf
    }

    /// A reader of the items not yet read, borrowing the batch.
    pub fn view(&self) -> FramesView<'_> {
        FramesView {
            buf: &self.buf[self.offset.min(self.buf.len())..],
            left: self.left,
        }
    }
}

/// The frame that starts at `offset` of `buf`, when `left` is not zero and
/// it fits, and where it ends.
#[inline]
fn frame_at(buf: &[u8], offset: usize, left: u32) -> Option<(&[u8], usize)> {
    if left == 0 {
        return None;
    }
    let header: [u8; 4] = buf.get(offset..offset.checked_add(4)?)?.try_into().ok()?;
    let start = offset + 4;
    let end = start.checked_add(u32::from_le_bytes(header) as usize)?;
    Some((buf.get(start..end)?, end))
}

/// Reads the frames of a validated batch one by one, borrowing it; made by
/// [`Frames::view`].
#[derive(Debug, Clone)]
pub struct FramesView<'a> {
    buf: &'a [u8],
    left: u32,
}

impl<'a> FramesView<'a> {
    /// The next item's bytes, bounds checked as in [`Frames::next_frame`].
    #[inline]
    pub fn next_frame(&mut self) -> Option<&'a [u8]> {
        let (frame, end) = frame_at(self.buf, 0, self.left)?;
        self.buf = &self.buf[end..];
        self.left -= 1;
        Some(frame)
    }

    /// Items not yet read.
    #[inline]
    pub fn left(&self) -> u32 {
        self.left
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(items: &[&[u8]]) -> Vec<u8> {
        let mut buf = Vec::new();
        for item in items {
            buf.extend_from_slice(&(item.len() as u32).to_le_bytes());
            buf.extend_from_slice(item);
        }
        buf
    }

    #[test]
    fn valid_batches_are_counted_and_split() {
        let buf = frames(&[b"a", b"", b"ccc"]);
        assert_eq!(validate_batch(&buf, 3, 1000, u32::MAX), Ok(3));
        let mut f = Frames::new(buf, 3);
        assert_eq!(f.next_frame(), Some(&b"a"[..]));
        assert_eq!(f.next_frame(), Some(&b""[..]));
        assert_eq!(f.next_frame(), Some(&b"ccc"[..]));
        assert_eq!(f.next_frame(), None);
    }

    #[test]
    fn a_view_reads_the_frames_left() {
        let mut f = Frames::new(frames(&[b"a", b"", b"ccc"]), 3);
        f.next_frame();
        let mut view = f.view();
        assert_eq!(view.left(), 2);
        assert_eq!(view.next_frame(), Some(&b""[..]));
        assert_eq!(view.next_frame(), Some(&b"ccc"[..]));
        assert_eq!(view.next_frame(), None);
        assert_eq!(view.left(), 0);
        // The view borrows: the frames themselves were not read.
        assert_eq!(f.left(), 2);
    }

    #[test]
    fn overrunning_length_is_refused() {
        let mut buf = frames(&[b"abc"]);
        buf[0] = 200;
        let err = validate_batch(&buf, 10, 1000, u32::MAX).unwrap_err();
        assert_eq!(
            err,
            "malformed frame at byte 0: its length 200 overruns the 7-byte buffer"
        );
        assert!(
            validate_batch(&[1, 0], 10, 1000, u32::MAX)
                .unwrap_err()
                .contains("too few for a 4-byte length")
        );
    }

    #[test]
    fn too_many_items_or_bytes_are_refused() {
        let buf = frames(&[b"a", b"b", b"c"]);
        assert!(
            validate_batch(&buf, 2, 1000, u32::MAX)
                .unwrap_err()
                .contains("more items than the 2 asked for")
        );
        // Frames are 5 bytes: the third starts at 10, at max-bytes.
        assert!(
            validate_batch(&buf, 10, 10, u32::MAX)
                .unwrap_err()
                .contains("max-bytes")
        );
        assert_eq!(validate_batch(&buf, 10, 11, u32::MAX), Ok(3));
        // One item larger than max-bytes alone is fine.
        assert_eq!(
            validate_batch(&frames(&[b"abcdef"]), 10, 1, u32::MAX),
            Ok(1)
        );
    }

    #[test]
    fn items_over_the_maximum_are_refused() {
        let buf = frames(&[b"ab", b"abcd"]);
        assert_eq!(validate_batch(&buf, 10, 1000, 4), Ok(2));
        assert_eq!(
            validate_batch(&buf, 10, 1000, 3).unwrap_err(),
            "item 1 of the batch has 4 bytes, more than the largest item allowed (3 bytes)"
        );
    }
}

/// A dependency-free fuzzer for the frame validator and splitter: random and
/// mutated batches, checked against a straightforward model. `cargo test`
/// runs a smoke run; set `SANDGEN_FUZZ_ITERATIONS` for a longer one.
#[cfg(test)]
mod fuzz {
    use super::*;

    /// xorshift64*: reproducible cases from a seed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
    }

    /// The contract, read as plainly as possible: the frames' (start, end)
    /// of the items, or `None` when the batch breaks it.
    fn model(
        buf: &[u8],
        max_items: u32,
        max_bytes: u32,
        max_item: u32,
    ) -> Option<Vec<(usize, usize)>> {
        let mut items = Vec::new();
        let mut at = 0;
        while at < buf.len() {
            let starts_too_late = !items.is_empty() && at >= max_bytes as usize;
            if items.len() as u64 >= u64::from(max_items) || starts_too_late || buf.len() - at < 4 {
                return None;
            }
            let len = u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
            if len > max_item || buf.len() - at - 4 < len as usize {
                return None;
            }
            items.push((at + 4, at + 4 + len as usize));
            at += 4 + len as usize;
        }
        Some(items)
    }

    fn batch(rng: &mut Rng) -> Vec<u8> {
        let mut buf = Vec::new();
        if rng.below(4) == 0 {
            // Pure noise.
            for _ in 0..rng.below(64) {
                buf.push(rng.next() as u8);
            }
            return buf;
        }
        for _ in 0..rng.below(8) {
            let len = rng.below(20) as usize;
            buf.extend_from_slice(&(len as u32).to_le_bytes());
            buf.extend((0..len).map(|_| rng.next() as u8));
        }
        // Mutate some: flip a byte, cut, or append.
        match rng.below(4) {
            0 if !buf.is_empty() => {
                let at = rng.below(buf.len() as u64) as usize;
                buf[at] = rng.next() as u8;
            }
            1 => {
                let keep = rng.below(buf.len() as u64 + 1) as usize;
                buf.truncate(keep);
            }
            2 => buf.extend((0..rng.below(6)).map(|_| rng.next() as u8)),
            _ => {}
        }
        buf
    }

    #[test]
    fn frames_never_panic_and_match_the_model() {
        let iterations: u64 = std::env::var("SANDGEN_FUZZ_ITERATIONS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(50_000);
        let mut rng = Rng(0x005e_ed0f_5a4d_6e4e);
        let mut valid = 0u64;
        for _ in 0..iterations {
            let buf = batch(&mut rng);
            let max_items = 1 + rng.below(10) as u32;
            let max_bytes = 1 + rng.below(200) as u32;
            let max_item = if rng.below(2) == 0 {
                u32::MAX
            } else {
                rng.below(25) as u32
            };
            let got = validate_batch(&buf, max_items, max_bytes, max_item);
            let want = model(&buf, max_items, max_bytes, max_item);
            assert_eq!(
                got.is_ok(),
                want.is_some(),
                "batch {buf:?} ({max_items}, {max_bytes}, {max_item}): {got:?}"
            );
            if let (Ok(count), Some(items)) = (got, want) {
                valid += 1;
                assert_eq!(count as usize, items.len());
                let mut frames = Frames::new(buf.clone(), count);
                for (start, end) in items {
                    assert_eq!(frames.next_frame(), Some(&buf[start..end]));
                }
                assert_eq!(frames.next_frame(), None);
            }
        }
        eprintln!("fuzzed {iterations} batches, {valid} of them valid");
        // Valid batches are where the splitter is checked against the
        // model: a generator that made none would test nothing.
        assert!(
            valid >= iterations / 20,
            "only {valid} of {iterations} batches were valid"
        );
    }
}
