//! The one place where librbd/librados return codes become typed errors.
//!
//! Every C call in [this crate] goes through [`check`] (or [`check_len`] for calls that
//! return a byte count), so a negative errno is mapped to an [`ErrorKind`] exactly once and
//! always carries the C function name and the pool/image it was about.

use std::ffi::{CStr, CString};

use libc::{c_char, c_int};

/// What went wrong, independent of which call failed. Mapped from the negative errno
/// librbd/librados return; `errno` on [`RbdError`] keeps the raw value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// `ENOENT`: pool, image, snapshot, peer or object does not exist.
    NotFound,
    /// `EEXIST`: the image/snapshot/peer already exists.
    Exists,
    /// `EBUSY`: the image is in use (watchers, lock, protected snapshot, children).
    Busy,
    /// `EACCES`/`EPERM`: cephx capabilities refuse the operation, or librbd refuses it
    /// on a non-primary image.
    PermissionDenied,
    /// `EINVAL`: librbd rejected an argument (e.g. a feature dependency), or a name
    /// contained a NUL byte.
    InvalidArgument,
    /// `EROFS`: the image was opened read-only (or is a non-primary replica).
    ReadOnly,
    /// `EOPNOTSUPP`/`ENOSYS`: not supported by this image, pool or cluster.
    NotSupported,
    /// `ETIMEDOUT`: a monitor/OSD did not answer within the configured timeout.
    TimedOut,
    /// `ECANCELED`: the operation was cancelled.
    Canceled,
    /// `ENOTEMPTY`: e.g. an image still has snapshots.
    NotEmpty,
    /// `EBADMSG`: a reply (JSON, an encoded journal client) could not be decoded.
    Malformed,
    /// Any other errno (positive value).
    Other(i32),
}

impl ErrorKind {
    /// Maps a positive errno value to a kind.
    pub fn from_errno(errno: i32) -> Self {
        match errno {
            libc::ENOENT => Self::NotFound,
            libc::EEXIST => Self::Exists,
            libc::EBUSY => Self::Busy,
            libc::EACCES | libc::EPERM => Self::PermissionDenied,
            libc::EINVAL => Self::InvalidArgument,
            libc::EROFS => Self::ReadOnly,
            libc::EOPNOTSUPP | libc::ENOSYS => Self::NotSupported,
            libc::ETIMEDOUT => Self::TimedOut,
            libc::ECANCELED => Self::Canceled,
            libc::ENOTEMPTY => Self::NotEmpty,
            libc::EBADMSG => Self::Malformed,
            other => Self::Other(other),
        }
    }
}

/// A failed librbd/librados call: which C function (`op`), about what (`context`: pool,
/// image, snapshot), the kind and the raw errno.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{op} failed for {context}: {} (errno {errno}){}", strerror(*errno), detail_suffix(detail))]
pub struct RbdError {
    /// Kind of failure, for callers that branch on it.
    pub kind: ErrorKind,
    /// The C function that failed, e.g. `"rbd_open"`.
    pub op: &'static str,
    /// What the call was about, e.g. `"pool volumes, image vol-1"`.
    pub context: String,
    /// The positive errno value.
    pub errno: i32,
    /// Extra text from the cluster (a mon/mgr command's status string) or the decoder.
    pub detail: Option<String>,
}

fn detail_suffix(detail: &Option<String>) -> String {
    match detail {
        Some(d) if !d.is_empty() => format!(": {d}"),
        _ => String::new(),
    }
}

fn strerror(errno: i32) -> String {
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    // io::Error appends " (os error N)"; the errno is printed separately
    match text.rfind(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

impl RbdError {
    /// Builds an error from a positive errno value.
    pub fn new(op: &'static str, context: impl Into<String>, errno: i32) -> Self {
        Self {
            kind: ErrorKind::from_errno(errno),
            op,
            context: context.into(),
            errno,
            detail: None,
        }
    }

    /// Adds the cluster's (or decoder's) explanation.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// A reply that could not be decoded (`EBADMSG`).
    pub fn malformed(op: &'static str, context: impl Into<String>, why: impl Into<String>) -> Self {
        Self::new(op, context, libc::EBADMSG).with_detail(why)
    }

    /// True if the kind is [`ErrorKind::NotFound`].
    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }
}

/// Result of the wrapper.
pub type Result<T> = std::result::Result<T, RbdError>;

/// The gate: a negative return becomes an [`RbdError`], anything else is returned as is.
pub(crate) fn check(
    ret: c_int,
    op: &'static str,
    context: impl FnOnce() -> String,
) -> Result<c_int> {
    if ret < 0 {
        Err(RbdError::new(op, context(), -ret))
    } else {
        Ok(ret)
    }
}

/// [`check`] for calls returning `ssize_t`/`int64_t` byte counts.
pub(crate) fn check_len(
    ret: isize,
    op: &'static str,
    context: impl FnOnce() -> String,
) -> Result<usize> {
    if ret < 0 {
        let errno = i32::try_from(-ret).unwrap_or(libc::EIO);
        Err(RbdError::new(op, context(), errno))
    } else {
        Ok(ret.unsigned_abs())
    }
}

/// A Rust string as a C string; an embedded NUL is an [`ErrorKind::InvalidArgument`].
pub(crate) fn cstring(
    s: &str,
    op: &'static str,
    context: impl FnOnce() -> String,
) -> Result<CString> {
    CString::new(s).map_err(|_| {
        RbdError::new(op, context(), libc::EINVAL)
            .with_detail(format!("name {s:?} contains a NUL byte"))
    })
}

/// Copies a C string owned by librbd into a Rust `String` (lossy); NULL becomes "".
///
/// # Safety
/// `p` must be NULL or point to a NUL-terminated string valid for the duration of the call.
pub(crate) unsafe fn from_c(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: the caller guarantees `p` is a valid NUL-terminated string.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

/// Reads a NUL-terminated string out of a buffer librbd filled (no NUL: whole buffer).
pub(crate) fn from_buf(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Calls `f(buf, &mut len)` for the C calls that report the needed length through `len`
/// and return `-ERANGE` when the buffer is too small; grows and retries.
pub(crate) fn grow_string_with_len(
    op: &'static str,
    context: impl Fn() -> String,
    mut f: impl FnMut(*mut c_char, *mut usize) -> c_int,
) -> Result<String> {
    let mut cap = 256usize;
    for _ in 0..16 {
        let mut buf = vec![0u8; cap];
        let mut len = cap;
        let ret = f(buf.as_mut_ptr().cast(), &mut len);
        if ret == -libc::ERANGE {
            cap = len.max(cap * 2);
            continue;
        }
        check(ret, op, &context)?;
        buf.truncate(len.min(cap));
        return Ok(from_buf(&buf));
    }
    Err(RbdError::new(op, context(), libc::ERANGE).with_detail("buffer kept growing"))
}

/// Like [`grow_string_with_len`] for calls that take only a capacity (`rbd_get_id`): the
/// buffer doubles on `-ERANGE` up to 1 MiB.
pub(crate) fn grow_string_fixed(
    op: &'static str,
    context: impl Fn() -> String,
    mut f: impl FnMut(*mut c_char, usize) -> c_int,
) -> Result<String> {
    let mut cap = 64usize;
    while cap <= 1 << 20 {
        let mut buf = vec![0u8; cap];
        let ret = f(buf.as_mut_ptr().cast(), cap);
        if ret == -libc::ERANGE {
            cap *= 2;
            continue;
        }
        check(ret, op, &context)?;
        return Ok(from_buf(&buf));
    }
    Err(RbdError::new(op, context(), libc::ERANGE).with_detail("value larger than 1 MiB"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_errno_maps_to_kind_and_keeps_context() {
        let err = check(-libc::ENOENT, "rbd_open", || "pool p, image i".into()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound);
        assert_eq!(err.errno, libc::ENOENT);
        assert!(
            err.to_string()
                .contains("rbd_open failed for pool p, image i"),
            "{err}"
        );
        assert_eq!(check(3, "x", String::new).unwrap(), 3);
        assert_eq!(ErrorKind::from_errno(libc::EROFS), ErrorKind::ReadOnly);
        assert_eq!(
            ErrorKind::from_errno(libc::EPERM),
            ErrorKind::PermissionDenied
        );
        assert_eq!(
            ErrorKind::from_errno(libc::EXDEV),
            ErrorKind::Other(libc::EXDEV)
        );
    }

    #[test]
    fn grow_string_retries_on_erange_with_reported_len() {
        let value = "x".repeat(1000);
        let mut calls = 0;
        let got = grow_string_with_len("f", String::new, |buf, len| {
            calls += 1;
            // SAFETY: test stub writes within the capacity it was given.
            unsafe {
                if *len < value.len() + 1 {
                    *len = value.len() + 1;
                    return -libc::ERANGE;
                }
                std::ptr::copy_nonoverlapping(value.as_ptr(), buf.cast(), value.len());
                *buf.add(value.len()) = 0;
                *len = value.len() + 1;
            }
            0
        })
        .unwrap();
        assert_eq!(got, value);
        assert_eq!(calls, 2);
    }

    #[test]
    fn nul_in_name_is_invalid_argument() {
        let err = cstring("a\0b", "rbd_open", || "x".into()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument);
    }
}
