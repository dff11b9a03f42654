//! Bulk item batches from a worker process to its caller through shared
//! memory instead of the pipe (Linux).
//!
//! The caller creates a memfd region ([`Region`]) sized by the iterable's
//! buffer bytes, seals it against shrinking and growing (so that a hostile
//! worker cannot truncate it under the caller's mapping and make it fault
//! with SIGBUS), and passes its descriptor to the worker process over the
//! socket that is the worker's stdin, with the first bytes it sends
//! ([`send_with_region`], [`receive_region`]; no `fork` needed to place a
//! descriptor in the child). The region is one header page, then the ring
//! of batches.
//! The worker ([`Ring`]) copies each large batch into the ring and sends
//! only `(offset, length, count)` over the pipe; the caller checks that the
//! range lies inside the ring, copies the batch out into memory of its own
//! and validates those bytes (so a worker that rewrites the ring meanwhile
//! changes nothing that was checked), then counts the batch as copied in
//! the header, where the worker reads which of its batches it may
//! overwrite. The caller maps the ring read-only and never reads the
//! header: nothing the worker writes there can mislead it.
//!
//! Ranges are used in order, as a ring: a batch goes after the newest one
//! still held, or at the start of the ring when that is free; when neither
//! has room (the caller is behind, or the batch is larger than the ring),
//! the batch goes over the pipe as before. Nothing ever waits for room in
//! the ring, so back-pressure and buffer limits are exactly those of the
//! pipe.

use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{MemfdFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// Batches smaller than this go over the pipe: for them one write of the
/// whole batch costs less than a copy into the ring.
pub(crate) const MIN_SHARED_BATCH: usize = 16 * 1024;

/// One mapping of part of a region, unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; the methods that
// read and write it take care of the other process's accesses.
unsafe impl Send for Mapping {}

impl Mapping {
    fn new(fd: BorrowedFd<'_>, offset: usize, len: usize, prot: ProtFlags) -> io::Result<Mapping> {
        // SAFETY: a fresh shared mapping of a file the caller sized (and
        // sealed), at an address of the kernel's choosing: it aliases no
        // Rust object.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                MapFlags::SHARED,
                fd,
                offset as u64,
            )
        }?;
        Ok(Mapping {
            ptr: NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?,
            len,
        })
    }

    /// The header's counter of batches copied out: its first 8 bytes.
    fn counter(&self) -> &AtomicU64 {
        // SAFETY: the mapping starts page-aligned and is at least a page
        // long, so it holds an aligned u64 for as long as `self` lives; it
        // is only ever accessed atomically (by either process).
        unsafe { self.ptr.cast::<AtomicU64>().as_ref() }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping this value made; no reference
        // into it outlives the value.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// The caller's side: the region it created, its header writable, its
/// ring read-only.
pub(crate) struct Region {
    header: Mapping,
    ring: Mapping,
    /// Batches copied out so far (what the header tells the worker).
    copied: u64,
}

impl Region {
    /// Creates a sealed region whose ring holds at least `ring_len` bytes
    /// (whole pages), and the descriptor to send to the worker process
    /// (close-on-exec: no other child inherits it).
    pub(crate) fn create(ring_len: usize) -> io::Result<(Region, OwnedFd)> {
        let page = rustix::param::page_size();
        let ring_len = ring_len
            .max(1)
            .checked_next_multiple_of(page)
            .ok_or_else(|| io::Error::other("shared region too large"))?;
        // Never executable (kernels that enforce `vm.memfd_noexec` refuse
        // memfds that do not say so; older kernels do not know the flag).
        let flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
        let fd = rustix::fs::memfd_create("sandgen-items", flags | MemfdFlags::NOEXEC_SEAL)
            .or_else(|e| match e {
                rustix::io::Errno::INVAL => rustix::fs::memfd_create("sandgen-items", flags),
                e => Err(e),
            })?;
        rustix::fs::ftruncate(&fd, (page + ring_len) as u64)?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
        let header = Mapping::new(fd.as_fd(), 0, page, ProtFlags::READ | ProtFlags::WRITE)?;
        let ring = Mapping::new(fd.as_fd(), page, ring_len, ProtFlags::READ)?;
        let region = Region {
            header,
            ring,
            copied: 0,
        };
        Ok((region, fd))
    }

    /// The whole region's size, which the worker is told.
    pub(crate) fn size(&self) -> usize {
        self.header.len + self.ring.len
    }

    /// A copy of the `len` bytes at `offset` in the ring, in `into` (its
    /// contents replaced), after checking that they lie inside the ring:
    /// the worker wrote both numbers, so neither is trusted. The copy is
    /// what the caller then validates and uses; the worker can no longer
    /// change it, and is told that it may reuse the room.
    pub(crate) fn copy_out(
        &mut self,
        offset: u64,
        len: u64,
        mut into: Vec<u8>,
    ) -> Result<Vec<u8>, String> {
        let range = checked_range(offset, len, self.ring.len).ok_or_else(|| {
            format!(
                "a shared batch of {len} bytes at offset {offset} lies outside the {}-byte ring",
                self.ring.len
            )
        })?;
        into.clear();
        into.reserve_exact(range.len());
        let mut copy = into;
        // SAFETY: the range lies inside the ring's mapping (checked above),
        // which stays mapped while `self` lives, and the region cannot
        // shrink (sealed), so every byte is readable; the destination has
        // room for `range.len()` bytes, all of which are written before
        // `set_len`. The worker may write the same bytes meanwhile (a race
        // with another process, which Rust's model cannot describe): the
        // copy then holds some mix of old and new bytes, plain data that
        // the validation of the copy deals with; nothing here reads the
        // ring twice or trusts what it read.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ring.ptr.as_ptr().add(range.start),
                copy.as_mut_ptr(),
                range.len(),
            );
            copy.set_len(range.len());
        }
        self.copied += 1;
        self.header.counter().store(self.copied, Ordering::Release);
        Ok(copy)
    }
}

/// `offset..offset + len` when it lies inside `0..size`.
fn checked_range(offset: u64, len: u64, size: usize) -> Option<std::ops::Range<usize>> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    (end <= size).then_some(start..end)
}

/// The worker's side: the region mapped, and the batches written to the
/// ring that the caller had not copied out when last looked, oldest first.
pub(crate) struct Ring {
    header: Mapping,
    ring: Mapping,
    held: VecDeque<(usize, usize)>,
    /// The caller's count of batches copied out, when last read.
    copied: u64,
}

impl Ring {
    /// Maps the region the caller sent, of the size the caller named; the
    /// descriptor is closed (the mappings stay).
    pub(crate) fn from_fd(fd: OwnedFd, size: usize) -> io::Result<Ring> {
        let actual = rustix::fs::fstat(&fd)?.st_size;
        if u64::try_from(actual).ok() != Some(size as u64) {
            return Err(io::Error::other(format!(
                "the region sent has {actual} bytes, not the {size} the caller named"
            )));
        }
        Ring::new(fd.as_fd(), size)
    }

    fn new(fd: BorrowedFd<'_>, size: usize) -> io::Result<Ring> {
        let page = rustix::param::page_size();
        let ring_len = size
            .checked_sub(page)
            .filter(|&len| len > 0)
            .ok_or_else(|| io::Error::other(format!("a {size}-byte region has no ring")))?;
        // The header is mapped writable although the worker only reads it:
        // an atomic load from read-only memory is not defined for every
        // width on every platform, and the worker could remap it anyway.
        Ok(Ring {
            header: Mapping::new(fd, 0, page, ProtFlags::READ | ProtFlags::WRITE)?,
            ring: Mapping::new(fd, page, ring_len, ProtFlags::READ | ProtFlags::WRITE)?,
            held: VecDeque::new(),
            copied: 0,
        })
    }

    /// Copies `bytes` into the ring and returns their offset, or `None`
    /// when there is no room for them now.
    pub(crate) fn put(&mut self, bytes: &[u8]) -> Option<u64> {
        // What the caller has copied out since the last look is free again.
        let copied = self.header.counter().load(Ordering::Acquire);
        while self.copied < copied && self.held.pop_front().is_some() {
            self.copied += 1;
        }
        self.copied = self.copied.max(copied);
        let offset = place(&self.held, bytes.len(), self.ring.len)?;
        // SAFETY: `place` returned a range inside the ring's mapping that
        // overlaps no batch the caller may still be reading; `bytes` is
        // ordinary memory of this process, not the region.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.ring.ptr.as_ptr().add(offset),
                bytes.len(),
            );
        }
        self.held.push_back((offset, bytes.len()));
        Some(offset as u64)
    }
}

/// The caller's side: sends `bytes` (the preamble) over the worker's stdin
/// socket with the region's descriptor attached.
pub(crate) fn send_with_region(
    socket: BorrowedFd<'_>,
    bytes: &[u8],
    region: BorrowedFd<'_>,
) -> io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [region];
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("no room to send a descriptor"));
    }
    let mut sent = loop {
        match rustix::net::sendmsg(
            socket,
            &[IoSlice::new(bytes)],
            &mut control,
            SendFlags::NOSIGNAL,
        ) {
            Ok(sent) => break sent,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    };
    while sent < bytes.len() {
        match rustix::net::send(socket, &bytes[sent..], SendFlags::NOSIGNAL) {
            Ok(n) => sent += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The worker's side: the first bytes on stdin (at most `buf.len()`), and
/// the region's descriptor when the caller sent one with them. A stdin that
/// is not a socket (a caller that sends no region) gives no bytes and no
/// descriptor, and nothing is read from it.
pub(crate) fn receive_region(
    stdin: BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<(usize, Option<OwnedFd>)> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = loop {
        match rustix::net::recvmsg(
            stdin,
            &mut [IoSliceMut::new(buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(received) => break received,
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::NOTSOCK) => return Ok((0, None)),
            Err(e) => return Err(e.into()),
        }
    };
    let region = control
        .drain()
        .filter_map(|message| match message {
            RecvAncillaryMessage::ScmRights(fds) => Some(fds),
            _ => None,
        })
        .flatten()
        .next();
    Ok((received.bytes, region))
}

/// Where a batch of `len` bytes goes in a ring of `size` bytes that holds
/// `held` (offset, length) ranges, oldest first: right after the newest,
/// else at the start, as long as it overlaps none of them.
fn place(held: &VecDeque<(usize, usize)>, len: usize, size: usize) -> Option<usize> {
    let (Some(&(oldest, _)), Some(&(newest, newest_len))) = (held.front(), held.back()) else {
        return (len <= size).then_some(0);
    };
    let head = newest + newest_len;
    if head > oldest {
        // Held: oldest..head, unwrapped. Room after it, or before it.
        if len <= size - head {
            Some(head)
        } else if len <= oldest {
            Some(0)
        } else {
            None
        }
    } else {
        // Held: oldest..size, then 0..head. Room between them.
        (len <= oldest - head).then_some(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_fill_the_ring_in_order_and_wrap_when_the_start_is_free() {
        let size = 4096;
        let mut held = VecDeque::new();
        assert_eq!(place(&held, size + 1, size), None, "larger than the ring");
        assert_eq!(place(&held, size, size), Some(0));
        held.push_back((0, 1000));
        held.push_back((1000, 2000));
        assert_eq!(place(&held, 1096, size), Some(3000));
        assert_eq!(place(&held, 1097, size), None, "no room after, none before");
        held.push_back((3000, 1096));
        held.pop_front();
        assert_eq!(
            place(&held, 1001, size),
            None,
            "1000 free at the start only"
        );
        assert_eq!(place(&held, 1000, size), Some(0));
        held.push_back((0, 600));
        // Wrapped: held 1000..4096 and 0..600; 400 bytes free between.
        assert_eq!(place(&held, 400, size), Some(600));
        assert_eq!(place(&held, 401, size), None);
    }

    /// Both sides in one process, through one region: a long random run
    /// of batches put by the worker and copied out by the caller, oldest
    /// first, against a model. Every copy reads as written (the worker
    /// never overwrote a batch the caller had not copied), and the worker
    /// reuses what the caller copied.
    #[test]
    fn the_worker_never_overwrites_a_batch_the_caller_has_not_copied() {
        let (mut region, fd) = Region::create(1 << 16).unwrap();
        let mut ring = Ring::new(fd.as_fd(), region.size()).unwrap();
        let size = region.ring.len;
        let mut model: VecDeque<(u64, Vec<u8>)> = VecDeque::new();
        let mut next = crate::testing::xorshift(0x2545_f491_4f6c_dd1du64);
        let (mut put, mut refused) = (0, 0);
        for i in 0..20_000u32 {
            if next().is_multiple_of(3) {
                if let Some((offset, bytes)) = model.pop_front() {
                    let copy = region
                        .copy_out(offset, bytes.len() as u64, Vec::new())
                        .unwrap();
                    assert!(
                        copy == bytes,
                        "a batch was overwritten before it was copied"
                    );
                }
                continue;
            }
            let len = 1 + (next() % (size as u64 / 3)) as usize;
            let bytes = vec![i as u8; len];
            match ring.put(&bytes) {
                Some(offset) => {
                    assert!(offset as usize + len <= size);
                    put += 1;
                    model.push_back((offset, bytes));
                }
                None => refused += 1,
            }
        }
        assert!(put > 5_000 && refused > 100, "{put} put, {refused} refused");
    }

    #[test]
    fn the_caller_reads_only_inside_its_ring_and_the_region_cannot_shrink() {
        let page = rustix::param::page_size();
        let (mut region, fd) = Region::create(page * 2 + 1).unwrap();
        assert_eq!(region.size(), page * 4, "a header page, and whole pages");
        let ring_len = (page * 3) as u64;
        // The descriptor crosses a socket as the caller sends it.
        let (caller, worker) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::STREAM,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        send_with_region(caller.as_fd(), b"preamble", fd.as_fd()).unwrap();
        let mut buf = [0u8; 12];
        let (got, sent) = receive_region(worker.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..got], b"preamble");
        let mut ring = Ring::from_fd(sent.unwrap(), region.size()).unwrap();
        let offset = ring.put(b"hello").unwrap();
        // The copy replaces what its buffer held.
        assert_eq!(region.copy_out(offset, 5, vec![1; 9]).unwrap(), b"hello");
        assert_eq!(region.copy_out(ring_len, 0, Vec::new()).unwrap(), b"");
        for (offset, len) in [
            (ring_len, 1),
            (ring_len - 8, 9),
            (u64::MAX, 2),
            (1, u64::MAX),
        ] {
            assert_eq!(
                region.copy_out(offset, len, Vec::new()).unwrap_err(),
                format!(
                    "a shared batch of {len} bytes at offset {offset} lies outside the {ring_len}-byte ring"
                )
            );
        }
        // A hostile worker cannot truncate the region under the caller's
        // mappings (a read there would fault), nor grow it, nor unseal it.
        assert!(rustix::fs::ftruncate(&fd, page as u64).is_err());
        assert!(rustix::fs::ftruncate(&fd, 1 << 20).is_err());
        assert!(rustix::fs::fcntl_add_seals(&fd, SealFlags::WRITE).is_err());
        assert_eq!(region.copy_out(offset, 5, Vec::new()).unwrap(), b"hello");
        // Each copy tells the worker, through the header, that the room is
        // free again.
        assert_eq!(region.header.counter().load(Ordering::Acquire), 3);
        assert_eq!(ring.header.counter().load(Ordering::Acquire), 3);
    }

    /// The caller's check of what a worker claims: random and hostile
    /// (offset, length) pairs never read outside the region, and every
    /// pair inside it is accepted. Set `SANDGEN_FUZZ_ITERATIONS` for a
    /// longer run.
    #[test]
    fn fuzz_shared_batch_claims() {
        let iterations: u64 = std::env::var("SANDGEN_FUZZ_ITERATIONS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(50_000);
        let (mut region, _fd) = Region::create(8192).unwrap();
        let size = region.ring.len as u64;
        let mut next = crate::testing::xorshift(0x9e37_79b9_7f4a_7c15u64);
        let edges = [
            0,
            1,
            size - 1,
            size,
            size + 1,
            u64::MAX / 2,
            u64::MAX - 1,
            u64::MAX,
        ];
        let (mut accepted, mut refused) = (0u64, 0u64);
        for _ in 0..iterations {
            let mut pick = || match next() % 3 {
                0 => edges[(next() % edges.len() as u64) as usize],
                1 => next() % (size + 2),
                _ => next(),
            };
            let (offset, len) = (pick(), pick());
            let inside = offset.checked_add(len).is_some_and(|end| end <= size);
            match region.copy_out(offset, len, Vec::new()) {
                Ok(copy) => {
                    assert!(inside, "{offset}+{len} accepted");
                    assert_eq!(copy.len() as u64, len);
                    accepted += 1;
                }
                Err(_) => {
                    assert!(!inside, "{offset}+{len} refused");
                    refused += 1;
                }
            }
        }
        assert!(accepted > iterations / 10 && refused > iterations / 10);
    }
}
