//! An open image's data: reads, writes (sync and in flight, [`PendingWrite`]), flush,
//! digests, and copies to other images with progress.

use std::ptr;

use librbd_sys as sys;
use sha2::{Digest, Sha256};

use super::{run_with_progress, Image, ImageOptions};
use crate::cluster::IoCtx;
use crate::error::{check, check_len, cstring, RbdError, Result};

/// Writes in flight on an image ([`Image::write_runs_async`]), owning their buffer. Dropping
/// it waits for them, so the buffer is never freed while librbd may still read it. To wait
/// with a bound, poll [`PendingWrite::is_complete`], and [`PendingWrite::abandon`] writes
/// that are not done in time (a cluster that holds I/O may keep them for minutes).
pub struct PendingWrite<'a> {
    _image: &'a Image,
    completions: Vec<sys::rbd_completion_t>,
    lens: Vec<usize>,
    buf: Vec<u8>,
    ctx: String,
}

impl PendingWrite<'_> {
    /// Whether every write has completed (`rbd_aio_is_complete`), without blocking: once
    /// true, [`PendingWrite::wait`] returns at once.
    pub fn is_complete(&self) -> bool {
        self.completions.iter().all(|&c| {
            // SAFETY: a submitted completion owned by self, not released yet (only wait,
            // drop and abandon release or give it up, and each consumes self).
            unsafe { sys::rbd_aio_is_complete(c) == 1 }
        })
    }

    /// What the writes are (`cluster ..., image ..., offset ...`), for messages.
    pub fn context(&self) -> &str {
        &self.ctx
    }

    /// Gives up on writes that are not complete, without waiting: they stay in flight, and
    /// their completions and buffer are leaked, never released or freed, so librbd may read
    /// the buffer and complete them whenever it does (or never). The cost is their memory
    /// (at most the buffer, `rbd_aio_write`'s bookkeeping) until the process ends. Whether
    /// they reach the image is not known: the caller must treat the range as not written.
    pub fn abandon(self) {
        std::mem::forget(self);
    }

    /// A timed-out error for these writes, given up on after `waited` (abandoned, see
    /// [`PendingWrite::abandon`]): `rbd_aio_write` with `ETIMEDOUT`, their context and why.
    pub fn abandon_timed_out(self, waited: std::time::Duration) -> RbdError {
        let e =
            RbdError::new("rbd_aio_write", self.ctx.clone(), libc::ETIMEDOUT).with_detail(format!(
                "not complete {:.0} s after it was sent (given up on, left in flight)",
                waited.as_secs_f64()
            ));
        self.abandon();
        e
    }

    /// Waits for every write; returns the buffer, or the first failure.
    pub fn wait(mut self) -> Result<Vec<u8>> {
        let mut first_err = None;
        for (c, len) in std::mem::take(&mut self.completions)
            .into_iter()
            .zip(std::mem::take(&mut self.lens))
        {
            // SAFETY: a submitted completion, waited for and released exactly once here.
            let ret = unsafe {
                sys::rbd_aio_wait_for_complete(c);
                let ret = sys::rbd_aio_get_return_value(c);
                sys::rbd_aio_release(c);
                ret
            };
            if first_err.is_none() {
                if let Err(e) = check_len(ret, "rbd_aio_write", || self.ctx.clone()) {
                    first_err = Some(e);
                } else if ret > 0 && ret as usize != len {
                    first_err = Some(
                        RbdError::new("rbd_aio_write", self.ctx.clone(), libc::EIO)
                            .with_detail(format!("short write: {ret} of {len} bytes")),
                    );
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(std::mem::take(&mut self.buf)),
        }
    }
}

impl Drop for PendingWrite<'_> {
    fn drop(&mut self) {
        for c in self.completions.drain(..) {
            // SAFETY: a submitted completion not yet released; waiting first keeps the
            // buffer alive until librbd is done with it.
            unsafe {
                sys::rbd_aio_wait_for_complete(c);
                sys::rbd_aio_release(c);
            }
        }
    }
}

impl Image {
    // ---- I/O ---------------------------------------------------------------------------

    /// Reads up to `buf.len()` bytes at `offset` (`rbd_read`); returns the count read
    /// (short only at the end of the image). Holes read as zeros.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        // SAFETY: buf is writable for buf.len() bytes.
        let ret = unsafe { sys::rbd_read(self.raw, offset, buf.len(), buf.as_mut_ptr().cast()) };
        check_len(ret, "rbd_read", || format!("{}, offset {offset}", self.ctx))
    }

    /// Writes `buf` at `offset` (`rbd_write`); `ReadOnly` on a read-only handle.
    pub fn write_at(&self, offset: u64, buf: &[u8]) -> Result<usize> {
        // SAFETY: buf is readable for buf.len() bytes.
        let ret = unsafe { sys::rbd_write(self.raw, offset, buf.len(), buf.as_ptr().cast()) };
        check_len(ret, "rbd_write", || {
            format!("{}, offset {offset}", self.ctx)
        })
    }

    /// Starts writing the `runs` (byte ranges) of `buf`, each at `offset` plus its start,
    /// all at once (`rbd_aio_write`); the returned [`PendingWrite`] owns the buffer until
    /// the writes are done. A run outside `buf` is `InvalidArgument`.
    pub fn write_runs_async(
        &self,
        offset: u64,
        buf: Vec<u8>,
        runs: &[std::ops::Range<usize>],
    ) -> Result<PendingWrite<'_>> {
        let ctx = || format!("{}, offset {offset}", self.ctx);
        let mut pending = PendingWrite {
            _image: self,
            completions: Vec::with_capacity(runs.len()),
            lens: Vec::with_capacity(runs.len()),
            buf,
            ctx: ctx(),
        };
        for run in runs {
            let Some(data) = pending.buf.get(run.clone()) else {
                return Err(
                    RbdError::new("rbd_aio_write", ctx(), libc::EINVAL).with_detail(format!(
                        "run {run:?} outside a buffer of {}",
                        pending.buf.len()
                    )),
                );
            };
            let (ptr, len) = (data.as_ptr(), data.len());
            let mut c: sys::rbd_completion_t = ptr::null_mut();
            // SAFETY: valid out-pointer; no callback, so no Rust code runs on librbd's threads.
            let ret = unsafe { sys::rbd_aio_create_completion(ptr::null_mut(), None, &mut c) };
            check(ret, "rbd_aio_create_completion", ctx)?;
            // SAFETY: valid image and completion; `ptr..ptr+len` lies in `pending.buf`, a
            // heap buffer that is neither moved nor freed until every completion has been
            // waited for (PendingWrite::wait or Drop), and the image outlives `pending`.
            let ret = unsafe {
                sys::rbd_aio_write(self.raw, offset + run.start as u64, len, ptr.cast(), c)
            };
            if ret < 0 {
                // SAFETY: never submitted, so nothing will complete it: release it now.
                unsafe { sys::rbd_aio_release(c) };
                check(ret, "rbd_aio_write", ctx)?;
            }
            pending.completions.push(c);
            pending.lens.push(len);
        }
        Ok(pending)
    }

    /// Flushes cached writes (`rbd_flush`).
    pub fn flush(&self) -> Result<()> {
        // SAFETY: valid image.
        let ret = unsafe { sys::rbd_flush(self.raw) };
        check(ret, "rbd_flush", || self.c())?;
        Ok(())
    }

    /// SHA-256 of the whole image (head or the snapshot it is set to), read in object-size
    /// chunks with [`Image::read_at`]; holes count as zeros. Returns lowercase hex.
    pub fn sha256(&self) -> Result<String> {
        let size = self.size()?;
        self.sha256_range(0, size)
    }

    /// SHA-256 (hex) of `len` bytes from `offset`, read in object-size chunks. A range
    /// past the end of the image is `InvalidArgument`.
    pub fn sha256_range(&self, offset: u64, len: u64) -> Result<String> {
        let info = self.stat()?;
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= info.size)
            .ok_or_else(|| {
                RbdError::new("rbd_read", self.c(), libc::EINVAL)
                    .with_detail(format!("range {offset}+{len} exceeds size {}", info.size))
            })?;
        let chunk = usize::try_from(info.obj_size.clamp(4096, 64 << 20)).unwrap_or(4 << 20);
        let mut buf = vec![0u8; chunk];
        let mut hasher = Sha256::new();
        let mut pos = offset;
        while pos < end {
            let want = usize::try_from((end - pos).min(chunk as u64)).unwrap_or(chunk);
            let got = self.read_at(pos, &mut buf[..want])?;
            if got != want {
                return Err(RbdError::new("rbd_read", self.c(), libc::EIO)
                    .with_detail(format!("short read at {pos}: {got} of {want} bytes")));
            }
            hasher.update(&buf[..want]);
            pos += want as u64;
        }
        Ok(hex::encode(hasher.finalize()))
    }

    // ---- copies ------------------------------------------------------------------------

    /// Copies the image head (no snapshots) to a new image `dest_name` in `dest`
    /// (`rbd_copy_with_progress4`, sparse size 4 KiB: zero runs stay holes).
    ///
    /// `progress(done, total)` counts bytes (the last call is `(size, size)`). It is
    /// called from the thread making the call, while librbd works; a
    /// panic inside it is caught and resumed after librbd returns. Returning `false` asks
    /// to stop: the closure is not called again and librbd gets a non-zero return, but
    /// librbd 16.2 ignores progress return values, so the copy still runs to the end.
    pub fn copy_to(
        &self,
        dest: &IoCtx,
        dest_name: &str,
        opts: &ImageOptions,
        mut progress: impl FnMut(u64, u64) -> bool + Send,
    ) -> Result<()> {
        let ctx = || format!("{} -> {}", self.ctx, dest.image_ctx(dest_name));
        let name_c = cstring(dest_name, "rbd_copy_with_progress4", ctx)?;
        let raw_opts = opts.to_raw("rbd_copy_with_progress4", &ctx)?;
        let ret = run_with_progress(&mut progress, |cb, data| {
            // SAFETY: valid source image, destination ioctx, name and options; cb/data
            // stay valid until the call returns (data points into run_with_progress).
            unsafe {
                sys::rbd_copy_with_progress4(
                    self.raw,
                    dest.raw,
                    name_c.as_ptr(),
                    raw_opts.0,
                    cb,
                    data,
                    4096,
                )
            }
        });
        check(ret, "rbd_copy_with_progress4", ctx)?;
        Ok(())
    }

    /// Deep copy: the head and all snapshots, to a new image `dest_name` in `dest`
    /// (`rbd_deep_copy_with_progress`). Here `progress(done, total)` counts objects of the
    /// image (done == total at the end); panic and stop behave as in [`Image::copy_to`].
    pub fn deep_copy_to(
        &self,
        dest: &IoCtx,
        dest_name: &str,
        opts: &ImageOptions,
        mut progress: impl FnMut(u64, u64) -> bool + Send,
    ) -> Result<()> {
        let ctx = || format!("{} -> {}", self.ctx, dest.image_ctx(dest_name));
        let name_c = cstring(dest_name, "rbd_deep_copy_with_progress", ctx)?;
        let raw_opts = opts.to_raw("rbd_deep_copy_with_progress", &ctx)?;
        let ret = run_with_progress(&mut progress, |cb, data| {
            // SAFETY: as in copy_to.
            unsafe {
                sys::rbd_deep_copy_with_progress(
                    self.raw,
                    dest.raw,
                    name_c.as_ptr(),
                    raw_opts.0,
                    cb,
                    data,
                )
            }
        });
        check(ret, "rbd_deep_copy_with_progress", ctx)?;
        Ok(())
    }
}
