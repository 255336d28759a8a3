//! The copy that trails rbd-mirror: copies a replica into the destination pool while
//! rbd-mirror is still syncing it, and reads every written piece back to hash the copy.
//!
//! Without it, a migration is three passes one after the other: rbd-mirror's sync, the copy
//! (`rbd_copy`), then a verification that reads the copy again. In snapshot mode rbd-mirror
//! copies objects in order and records how many leading objects are done
//! (`last_copied_object_number` of the replica's non-primary mirror snapshot), so the copy
//! can follow right behind; and hashing what is read back from the cluster right after each
//! flush makes the copy's digest ready when the copy ends. The pieces flow through
//! threads, each with its own image handle:
//!
//! - source readers read pieces the caller's `ready` watermark allows, in turns;
//! - one writer writes the non-zero 4 KiB runs of each piece in order (holes stay holes)
//!   and flushes every few pieces; it never blocks on a write in flight, so a destination
//!   that holds I/O is named in time (see [`WRITE_LIMIT`]);
//! - checkers read flushed pieces back through their own read-only handles;
//! - a hasher hashes them in order.
//!
//! The calling thread polls `ready` and reports progress. The first error stops everything.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use librbd::{self as rbd, Image};
use rbd_mirror_core::ops::{ErrorKind, OpsError, OpsResult, Progress, Ready};

use crate::real::{ops_error, OrOps};

/// Source reader threads (each with its own handle on the source).
pub(crate) const READERS: usize = 2;
/// Checker threads (each with its own read-only handle on the copy).
pub(crate) const CHECKERS: usize = 2;
/// Pieces the writer has in flight at once (`rbd_aio_write`): one synchronous write at a
/// time waits on the OSD for every piece (about 6 ms per 4 MiB here). Pieces are at most
/// 1 MiB (the engine's memory bound, see `real/memory.rs`), so this holds at most 4 MiB.
/// 4, not 6: the copy trails rbd-mirror, and its readers' buffers (the window plus one being
/// read per reader) were 2 MiB of the copy handover's peak RSS (session 8, see
/// docs/architecture.md).
const WINDOW: usize = 4;
/// How long the writer waits for a write after sending it before it gives up on it and fails
/// the copy, naming the copy (the writes are left in flight, see
/// [`rbd::PendingWrite::abandon`]). Ceph's client fails one op after its op timeout (30 s in
/// rbd-relay), but a write can be more than one op in a row (the exclusive lock, the object
/// map, the data), and paused OSDs held one for 59.5 s and 89.6 s before it failed.
const WRITE_LIMIT: Duration = Duration::from_secs(40);
/// The longest nap between two looks at a write in flight (naps start at 100 µs and double,
/// so a write done in a few milliseconds is seen done soon after).
const WRITE_POLL_MAX: Duration = Duration::from_millis(2);
/// Buffers per reader: enough for its share of the writer's window plus one being read.
const READ_AHEAD: usize = WINDOW.div_ceil(READERS) + 1;
/// Buffers per checker: one, the hasher takes the checkers' pieces in turns, so while it
/// hashes one checker's piece the other checker reads the next (2 each held 2 MiB more at
/// the copy handover's peak, session 8).
const AHEAD: usize = 1;
/// How often `ready` is polled while the copy waits for the source.
const POLL: Duration = Duration::from_millis(100);
/// Granularity of hole detection: all-zero blocks of this size are not written.
const BLOCK: usize = 4096;

/// The handles a trailing copy works with.
pub(crate) struct Handles {
    /// Read-only handles on the source, one per reader thread.
    pub readers: Vec<Image>,
    /// The read-write handle on the new copy.
    pub writer: Image,
    /// Read-only handles on the copy, one per checker thread.
    pub checkers: Vec<Image>,
}

/// A counter threads wait on: pieces ready to read, pieces flushed.
struct Gate {
    value: Mutex<u64>,
    moved: Condvar,
}

impl Gate {
    fn new() -> Self {
        Self {
            value: Mutex::new(0),
            moved: Condvar::new(),
        }
    }

    fn get(&self) -> u64 {
        self.value.lock().map(|v| *v).unwrap_or(0)
    }

    /// Raise the counter to `to` (never lowers it).
    fn raise(&self, to: u64) {
        if let Ok(mut v) = self.value.lock() {
            if to > *v {
                *v = to;
                self.moved.notify_all();
            }
        }
    }

    /// Wait until the counter is above `piece`; false when `stop` is set first.
    fn wait_above(&self, piece: u64, stop: &AtomicBool) -> bool {
        let Ok(mut v) = self.value.lock() else {
            return false;
        };
        loop {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            if *v > piece {
                return true;
            }
            match self.moved.wait_timeout(v, Duration::from_millis(50)) {
                Ok((guard, _)) => v = guard,
                Err(_) => return false,
            }
        }
    }
}

/// What the threads share.
struct Shared {
    ready: Gate,
    flushed: Gate,
    hashed_bytes: AtomicU64,
    stop: AtomicBool,
    error: Mutex<Option<OpsError>>,
}

impl Shared {
    /// Record the first error and stop every thread.
    fn fail(&self, e: OpsError) {
        if let Ok(mut slot) = self.error.lock() {
            slot.get_or_insert(e);
        }
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Let go of a copy thread's image handle: closed here after a clean end, but after a failure
/// closed by a thread of its own that nobody waits for. `rbd_close` waits for the handle's
/// watch and ops without a timeout, so with an OSD that does not answer (or a cluster that
/// holds I/O) closing it here would keep the copy from reporting its error, forever.
fn let_go(img: Image, shared: &Shared) {
    let failed = shared.error.lock().map_or(true, |e| e.is_some());
    if failed {
        std::thread::spawn(move || drop(img));
    } else {
        drop(img);
    }
}

/// How [`wait_bounded`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waited {
    /// Done.
    Done,
    /// Another thread failed (or the copy was cancelled) first.
    Stopped,
    /// The deadline passed first.
    TimedOut,
}

/// Look at `done` until it is true, `stop` is set or `deadline` passes, napping between
/// looks (from 100 µs, doubling up to [`WRITE_POLL_MAX`]); `done` is looked at first, so
/// what is done at the deadline counts as done.
fn wait_bounded(mut done: impl FnMut() -> bool, stop: &AtomicBool, deadline: Instant) -> Waited {
    let mut nap = Duration::from_micros(100);
    loop {
        if done() {
            return Waited::Done;
        }
        if stop.load(Ordering::Relaxed) {
            return Waited::Stopped;
        }
        let now = Instant::now();
        if now >= deadline {
            return Waited::TimedOut;
        }
        std::thread::sleep(nap.min(deadline - now));
        nap = (nap * 2).min(WRITE_POLL_MAX);
    }
}

fn cancelled() -> OpsError {
    OpsError::new(ErrorKind::Cancelled, "copy", "cancelled")
}

fn is_zero(block: &[u8]) -> bool {
    block.iter().fold(0u8, |acc, b| acc | b) == 0
}

/// The byte ranges of `data` made of non-zero `BLOCK`-sized blocks (the rest are holes).
fn data_runs(data: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, block) in data.chunks(BLOCK).enumerate() {
        if is_zero(block) {
            continue;
        }
        let (from, to) = (i * BLOCK, i * BLOCK + block.len());
        match runs.last_mut() {
            Some(last) if last.end == from => last.end = to,
            _ => runs.push(from..to),
        }
    }
    runs
}

/// Read `buf.len()` bytes at `offset`, holes as zeros; a short read (past the end) fails.
fn read_piece(img: &Image, offset: u64, buf: &mut [u8]) -> OpsResult<()> {
    let got = img.read_at(offset, buf).ops()?;
    if got != buf.len() {
        return Err(OpsError::new(
            ErrorKind::Other,
            "copy",
            format!(
                "short read at {offset}: {got} of {} bytes (did the image shrink?)",
                buf.len()
            ),
        ));
    }
    Ok(())
}

/// How an image is cut into pieces.
struct Layout {
    size: u64,
    chunk: usize,
    pieces: u64,
}

impl Layout {
    /// Offset and length of `piece` (the last one may be short).
    fn piece(&self, piece: u64) -> (u64, usize) {
        let off = piece * self.chunk as u64;
        let len = usize::try_from(self.size - off).map_or(self.chunk, |left| left.min(self.chunk));
        (off, len)
    }
}

/// A piece read: its buffer and how much of it is the piece.
type Piece = (Vec<u8>, usize);

/// A piece being written: its number, when its write was sent, the write.
type InFlight<'a> = (u64, Instant, rbd::PendingWrite<'a>);

/// One reader thread per handle: the thread of lane `l` reads pieces `l`, `l + lanes`, ...
/// each once `gate` is above it, into `buffers` buffers of its own that the consumer sends
/// back. Returns, per lane, the pieces read (in order) and where to return buffers.
fn spawn_readers<'scope, 'env>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    handles: Vec<Image>,
    gate: &'env Gate,
    shared: &'env Shared,
    buffers: usize,
    layout: &'env Layout,
) -> Vec<(Receiver<Piece>, SyncSender<Vec<u8>>)> {
    let lanes = handles.len().max(1) as u64;
    let mut out = Vec::new();
    for (lane, img) in handles.into_iter().enumerate() {
        let (full_tx, full_rx) = sync_channel::<Piece>(buffers);
        let (free_tx, free_rx) = sync_channel::<Vec<u8>>(buffers);
        for _ in 0..buffers {
            let _ = free_tx.send(vec![0u8; layout.chunk]);
        }
        out.push((full_rx, free_tx));
        scope.spawn(move || {
            let read_lane = || {
                let mut piece = lane as u64;
                while piece < layout.pieces {
                    if !gate.wait_above(piece, &shared.stop) {
                        return;
                    }
                    let Ok(mut buf) = free_rx.recv() else { return };
                    let (off, n) = layout.piece(piece);
                    if let Err(e) = read_piece(&img, off, &mut buf[..n]) {
                        return shared.fail(e);
                    }
                    if full_tx.send((buf, n)).is_err() {
                        return;
                    }
                    piece += lanes;
                }
            };
            read_lane();
            let_go(img, shared);
        });
    }
    out
}

/// Copy `size` bytes in `chunk`-sized pieces from the readers' image to the writer's,
/// trailing `ready` (see the module header); returns the hex SHA-256 of the copy as read
/// back. `first_ready` is the first answer of `ready` (bytes final).
pub(crate) fn trailing_copy(
    handles: Handles,
    size: u64,
    chunk: usize,
    first_ready: u64,
    ready: Ready<'_>,
    progress: Progress<'_>,
) -> OpsResult<String> {
    let chunk64 = chunk as u64;
    let pieces = size.div_ceil(chunk64);
    let pieces_final = |bytes: u64| {
        if bytes >= size {
            pieces
        } else {
            bytes / chunk64
        }
    };
    let shared = Shared {
        ready: Gate::new(),
        flushed: Gate::new(),
        hashed_bytes: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        error: Mutex::new(None),
    };
    shared.ready.raise(pieces_final(first_ready));
    let layout = Layout {
        size,
        chunk,
        pieces,
    };
    let Handles {
        readers,
        writer,
        checkers,
    } = handles;
    let digest = std::thread::scope(|scope| {
        let shared = &shared;
        // source readers -> writer
        let lanes = readers.len().max(1) as u64;
        let from_readers =
            spawn_readers(scope, readers, &shared.ready, shared, READ_AHEAD, &layout);
        // the writer: in order, up to WINDOW pieces in flight; a piece counts as written
        // (readable through other handles: there is no librbd cache) once it and every
        // piece before it have completed. It never blocks on a write: it looks until the
        // write is done, another thread failed, or WRITE_LIMIT passed since it was sent
        // (then it fails the copy), so a destination that holds I/O is named in time.
        scope.spawn(move || {
            let mut in_flight = std::collections::VecDeque::new();
            let mut write_all = || {
                let finish_oldest = |in_flight: &mut std::collections::VecDeque<InFlight<'_>>| {
                    let Some((piece, sent, write)) = in_flight.pop_front() else {
                        return true;
                    };
                    let waited =
                        wait_bounded(|| write.is_complete(), &shared.stop, sent + WRITE_LIMIT);
                    match waited {
                        Waited::Done => {}
                        Waited::Stopped => {
                            write.abandon();
                            return false;
                        }
                        Waited::TimedOut => {
                            let e = write.abandon_timed_out(sent.elapsed());
                            shared.fail(ops_error(e));
                            return false;
                        }
                    }
                    match write.wait() {
                        Ok(buf) => {
                            if let Some((_, free)) = from_readers.get((piece % lanes) as usize) {
                                let _ = free.send(buf);
                            }
                            shared.flushed.raise(piece + 1);
                            true
                        }
                        Err(e) => {
                            shared.fail(ops_error(e));
                            false
                        }
                    }
                };
                for piece in 0..pieces {
                    let Some((full, _)) = from_readers.get((piece % lanes) as usize) else {
                        return;
                    };
                    // while the next piece is not read yet (the source is behind), finish what
                    // is in flight, so the checkers can go on
                    let (buf, n) = loop {
                        match full.try_recv() {
                            Ok(piece) => break piece,
                            Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
                            Err(std::sync::mpsc::TryRecvError::Empty) if in_flight.is_empty() => {
                                match full.recv() {
                                    Ok(piece) => break piece,
                                    Err(_) => return,
                                }
                            }
                            Err(std::sync::mpsc::TryRecvError::Empty) => {
                                if !finish_oldest(&mut in_flight) {
                                    return;
                                }
                            }
                        }
                    };
                    if shared.stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let runs = data_runs(&buf[..n]);
                    match writer.write_runs_async(piece * chunk64, buf, &runs) {
                        Ok(write) => in_flight.push_back((piece, Instant::now(), write)),
                        Err(e) => return shared.fail(ops_error(e)),
                    }
                    if in_flight.len() >= WINDOW && !finish_oldest(&mut in_flight) {
                        return;
                    }
                }
                while !in_flight.is_empty() {
                    if !finish_oldest(&mut in_flight) {
                        return;
                    }
                }
                if let Err(e) = writer.flush() {
                    shared.fail(ops_error(e));
                }
            };
            write_all();
            if shared.error.lock().map_or(true, |e| e.is_some()) {
                // each dropped write waits for its completion, which a cluster that does
                // not answer may never give: after a failure they are abandoned (left in
                // flight, their buffers kept), so the error is reported now
                for (_, _, write) in in_flight {
                    write.abandon();
                }
            } else {
                drop(in_flight);
            }
            let_go(writer, shared);
        });
        // checkers -> hasher
        let check_lanes = checkers.len().max(1) as u64;
        let to_hasher = spawn_readers(scope, checkers, &shared.flushed, shared, AHEAD, &layout);
        let hasher = scope.spawn(move || {
            let mut sha = Sha256::new();
            for piece in 0..pieces {
                let lane = (piece % check_lanes) as usize;
                let (full, free) = to_hasher.get(lane)?;
                let (buf, n) = full.recv().ok()?;
                sha.update(&buf[..n]);
                shared.hashed_bytes.fetch_add(n as u64, Ordering::Relaxed);
                let _ = free.send(buf);
            }
            Some(hex::encode(sha.finalize()))
        });
        // this thread: poll `ready` while the source is behind, report progress
        let mut polled = Instant::now();
        while !hasher.is_finished() {
            if shared.ready.get() < pieces && polled.elapsed() >= POLL {
                polled = Instant::now();
                match ready() {
                    Ok(Some(bytes)) => shared.ready.raise(pieces_final(bytes)),
                    Ok(None) => shared.fail(OpsError::new(
                        ErrorKind::NotFound,
                        "copy",
                        "the image being copied disappeared",
                    )),
                    Err(e) => shared.fail(e),
                }
            }
            if !progress(shared.hashed_bytes.load(Ordering::Relaxed), size) {
                shared.fail(cancelled());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        hasher.join().ok().flatten()
    });
    if let Some(e) = shared.error.lock().ok().and_then(|mut e| e.take()) {
        return Err(e);
    }
    let digest = digest.ok_or_else(|| {
        OpsError::new(
            ErrorKind::Other,
            "copy",
            "a copy thread stopped before the end",
        )
    })?;
    progress(size, size);
    Ok(digest)
}

/// Poll `ready` until the source exists; false-returning `progress` cancels.
pub(crate) fn wait_for_source(ready: Ready<'_>, progress: Progress<'_>) -> OpsResult<u64> {
    loop {
        if let Some(bytes) = ready()? {
            return Ok(bytes);
        }
        if !progress(0, 0) {
            return Err(cancelled());
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_runs_skip_zero_blocks_and_merge_neighbours() {
        let mut data = vec![0u8; 5 * BLOCK + 100];
        data[BLOCK + 7] = 1; // block 1
        data[2 * BLOCK] = 1; // block 2, next to 1
        data[5 * BLOCK + 99] = 1; // the short last block
        assert_eq!(
            data_runs(&data),
            [BLOCK..3 * BLOCK, 5 * BLOCK..5 * BLOCK + 100]
        );
        assert!(data_runs(&[0u8; 3 * BLOCK]).is_empty());
    }

    #[test]
    fn zero_blocks_are_detected() {
        assert!(is_zero(&[0u8; BLOCK]));
        let mut b = [0u8; BLOCK];
        b[BLOCK - 1] = 1;
        assert!(!is_zero(&b));
    }

    #[test]
    fn a_bounded_wait_ends_when_done_when_stopped_or_at_its_deadline() {
        let stop = AtomicBool::new(false);
        let far = Instant::now() + Duration::from_secs(60);
        // done after a few looks
        let mut looks = 0;
        let done_soon = |looks: &mut u32| {
            *looks += 1;
            *looks >= 3
        };
        assert_eq!(
            wait_bounded(|| done_soon(&mut looks), &stop, far),
            Waited::Done
        );
        assert_eq!(looks, 3);
        // never done: the deadline ends it, not much later
        let t = Instant::now();
        let deadline = t + Duration::from_millis(50);
        assert_eq!(wait_bounded(|| false, &stop, deadline), Waited::TimedOut);
        assert!(t.elapsed() >= Duration::from_millis(50));
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        // done at the deadline counts as done
        assert_eq!(wait_bounded(|| true, &stop, t), Waited::Done);
        // another thread failed: stops at once, long before the deadline
        stop.store(true, Ordering::Relaxed);
        let t = Instant::now();
        assert_eq!(wait_bounded(|| false, &stop, far), Waited::Stopped);
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn gate_waits_until_raised_or_stopped() {
        let gate = Gate::new();
        let stop = AtomicBool::new(false);
        gate.raise(3);
        gate.raise(1); // never lowers
        assert_eq!(gate.get(), 3);
        assert!(gate.wait_above(2, &stop));
        stop.store(true, Ordering::Relaxed);
        assert!(!gate.wait_above(3, &stop));
    }
}
