//! The pipelined SHA-256 of an image (several reader threads, one hasher): the speed of a
//! digest, with its own unit tests of ordering, read errors and cancels.

use sha2::{Digest, Sha256};

use librbd::{self as rbd, Image, RbdError};
use rbd_mirror_core::ops::{ErrorKind, OpsError, OpsResult, Progress};

use super::ops_error;

/// Reader threads (each with its own image handle) of a digest.
///
/// 2, not 3: the copy handover runs the source's digest beside the trailing copy, and with
/// 3 readers its peak RSS reached 63-64.07 MiB (4 GiB bluestore, session 13), at the 64 MiB
/// bound. With 2 (one handle and 2 MiB of pieces less) the same bench gave 61 MiB, and the
/// digests were not slower: `verify_handover` 11.73-12.36 s against 11.04-14.18 s with 3
/// (docs/architecture.md, sessions 12 and 13).
pub(super) const DIGEST_READERS: usize = 2;

/// What a digest reader needs from an image: a positioned read. Implemented by
/// [`rbd::Image`]; unit tests implement it to inject failures and slow reads.
pub(crate) trait ReadAt: Send {
    /// Read into `buf` at `offset`; returns the bytes read (short only at the end).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, RbdError>;
}

impl ReadAt for Image {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, RbdError> {
        Image::read_at(self, offset, buf)
    }
}

/// SHA-256 of the first `size` bytes of an image, with reading and hashing overlapped: each
/// of `readers` (one open handle per reader thread) reads every `readers.len()`-th
/// `chunk`-sized piece a little ahead, while this thread hashes the pieces in order. One
/// synchronous read at a time left the hash waiting on reads; with several readers it runs
/// at hashing speed. Holes read as zeros.
///
/// Every thread ends on a read error or a cancel: the hasher's ends of the channels live
/// inside the scope and are dropped before the scope joins the readers, so a reader blocked
/// on a channel sees it closed (they once lived outside the scope and the join waited for
/// readers that waited for the hasher: a cancelled or failed digest never returned).
pub(crate) fn pipelined_sha256<R: ReadAt>(
    readers: Vec<R>,
    size: u64,
    chunk: usize,
    progress: Progress<'_>,
) -> OpsResult<String> {
    use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
    type Piece = Result<(Vec<u8>, usize), rbd::RbdError>;
    const AHEAD: usize = 2; // buffers per reader
    let lanes = readers.len().max(1) as u64;
    let chunk64 = chunk as u64;
    let pieces = size.div_ceil(chunk64);
    std::thread::scope(|scope| {
        // owned by this closure: dropped when it returns, before the scope joins the readers
        let mut full: Vec<Receiver<Piece>> = Vec::new();
        let mut free: Vec<SyncSender<Vec<u8>>> = Vec::new();
        for (lane, img) in readers.into_iter().enumerate() {
            let (full_tx, full_rx) = sync_channel::<Piece>(AHEAD);
            let (free_tx, free_rx) = sync_channel::<Vec<u8>>(AHEAD);
            for _ in 0..AHEAD {
                // cannot fail: the channel has room for every buffer and its receiver lives
                let _ = free_tx.send(vec![0u8; chunk]);
            }
            full.push(full_rx);
            free.push(free_tx);
            scope.spawn(move || {
                let mut piece = lane as u64;
                while piece < pieces {
                    let Ok(mut buf) = free_rx.recv() else {
                        return; // the hasher stopped (cancelled or failed)
                    };
                    let off = piece * chunk64;
                    let n = usize::try_from(size - off).map_or(chunk, |left| left.min(chunk));
                    let read = img.read_at(off, &mut buf[..n]).map(|got| {
                        // librbd returns short reads only at the end of the image
                        buf[got.min(n)..n].fill(0);
                        (buf, n)
                    });
                    let failed = read.is_err();
                    if full_tx.send(read).is_err() || failed {
                        return;
                    }
                    piece += lanes;
                }
            });
        }
        let mut hasher = Sha256::new();
        let mut done = 0u64;
        for piece in 0..pieces {
            let lane = (piece % lanes) as usize;
            let (buf, n) = match full.get(lane).map(Receiver::recv) {
                Some(Ok(Ok(x))) => x,
                Some(Ok(Err(e))) => return Err(ops_error(e)),
                _ => {
                    return Err(OpsError::new(
                        ErrorKind::Other,
                        "digest",
                        "a reader stopped before the end of the image",
                    ))
                }
            };
            hasher.update(&buf[..n]);
            done += n as u64;
            if let Some(tx) = free.get(lane) {
                let _ = tx.send(buf);
            }
            if !progress(done, size) {
                return Err(OpsError::new(ErrorKind::Cancelled, "digest", "cancelled"));
            }
        }
        Ok(hex::encode(hasher.finalize()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// An image in memory whose bytes are `offset % 251`, failing the read of one piece.
    struct MemoryImage {
        size: u64,
        fail_at: Option<u64>,
    }

    impl ReadAt for MemoryImage {
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, RbdError> {
            if self.fail_at == Some(offset) {
                return Err(RbdError::new(
                    "rbd_read",
                    format!("offset {offset}"),
                    libc::EIO,
                ));
            }
            let n = usize::try_from(self.size.saturating_sub(offset))
                .map_or(buf.len(), |left| left.min(buf.len()));
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = ((offset + i as u64) % 251) as u8;
            }
            Ok(n)
        }
    }

    const CHUNK: usize = 4096;
    /// Many more pieces than the readers buffer ahead, like a large image.
    const PIECES: u64 = 256;

    /// Run a digest over three readers on another thread; `None` when it has not returned
    /// within 10 s (it hangs), so a regression fails instead of hanging the test run.
    fn digest_within_timeout(
        fail_at: Option<u64>,
        cancel_after: Option<u64>,
    ) -> Option<OpsResult<String>> {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let size = PIECES * CHUNK as u64;
            let readers = (0..3)
                .map(|_| MemoryImage { size, fail_at })
                .collect::<Vec<_>>();
            let mut progress = |done: u64, _total: u64| cancel_after.is_none_or(|at| done < at);
            let _ = tx.send(pipelined_sha256(readers, size, CHUNK, &mut progress));
        });
        rx.recv_timeout(Duration::from_secs(10)).ok()
    }

    #[test]
    fn a_digest_hashes_every_piece_in_order() {
        let size = PIECES * CHUNK as u64 - 100; // a short last piece
        let mut expected = Sha256::new();
        expected.update((0..size).map(|o| (o % 251) as u8).collect::<Vec<_>>());
        let readers = (0..3)
            .map(|_| MemoryImage {
                size,
                fail_at: None,
            })
            .collect::<Vec<_>>();
        let got = pipelined_sha256(readers, size, CHUNK, &mut |_, _| true);
        assert_eq!(got, Ok(hex::encode(expected.finalize())));
    }

    #[test]
    fn a_digest_returns_the_read_error_from_the_middle_of_the_image() {
        let at = PIECES / 2 * CHUNK as u64;
        let result =
            digest_within_timeout(Some(at), None).expect("the digest hung on a read error");
        let err = result.expect_err("a failed read must fail the digest");
        assert_eq!(err.kind, ErrorKind::Other);
        assert!(err.message.contains(&format!("offset {at}")), "{err}");
    }

    #[test]
    fn a_digest_cancelled_in_the_middle_of_the_image_returns() {
        let result = digest_within_timeout(None, Some(PIECES / 3 * CHUNK as u64))
            .expect("the digest hung on a cancel");
        let err = result.expect_err("a cancelled digest must fail");
        assert_eq!(err.kind, ErrorKind::Cancelled);
    }
}
