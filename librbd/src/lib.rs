//! Safe wrapper over librbd and librados (both declared in `librbd-sys`).
//!
//! The only place in the library that touches raw handles: every handle is owned by a type
//! here whose `Drop` frees it, and no raw pointer leaves this module. Negative return codes
//! become [`RbdError`] in one place (`check` in `error.rs`); output buffers grow on `-ERANGE`; progress
//! callbacks never let a panic cross into C.
//!
//! Ownership: [`Cluster`] (`rados_t`) is shared by the [`IoCtx`]s (`rados_ioctx_t`) and
//! [`Image`]s (`rbd_image_t`) made from it, so it is shut down once, after the last of them.
//! `Cluster` and `IoCtx` are `Send + Sync`, `Image` is `Send`: all can move into
//! `tokio::task::spawn_blocking`.
#![allow(unsafe_code)]

mod cluster;
mod error;
mod image;
mod journal;
mod memory;
mod mirror;

pub use cluster::{
    leave_connections_to_process_exit, Cluster, ClusterConfig, IoCtx, MirrorDaemon,
    MirrorDaemonHealth, MirrorHealth,
};
pub use error::{ErrorKind, RbdError, Result};
pub use image::{
    librbd_version, Image, ImageEntry, ImageInfo, ImageOptions, ParentSpec, PendingWrite, SnapInfo,
    SnapNamespaceType, Watcher,
};
pub use journal::{
    JournalClient, JournalClientMeta, JournalClientState, JournalLag, JournalPosition,
    JournalStatus, MirrorPeerState,
};
pub use librbd_sys::{
    RBD_FEATURE_DATA_POOL, RBD_FEATURE_DEEP_FLATTEN, RBD_FEATURE_EXCLUSIVE_LOCK,
    RBD_FEATURE_FAST_DIFF, RBD_FEATURE_JOURNALING, RBD_FEATURE_LAYERING, RBD_FEATURE_NON_PRIMARY,
    RBD_FEATURE_OBJECT_MAP, RBD_FEATURE_OPERATIONS, RBD_FEATURE_STRIPINGV2,
    RBD_FLAG_FAST_DIFF_INVALID, RBD_FLAG_OBJECT_MAP_INVALID,
};
pub use memory::map_large_allocations;
pub use mirror::{
    MirrorImageGlobalStatus, MirrorImageInfo, MirrorImageMode, MirrorImageState, MirrorMode,
    MirrorPeerSite, MirrorSiteStatus, MirrorSnapshotNamespace, MirrorStatusState, PeerDirection,
    SnapMirrorState,
};

/// End the process at once with exit status `code`, without running exit handlers or the
/// C++ static destructors of librados and librbd. For a process that stops (on SIGINT or
/// SIGTERM) while a blocking Ceph call still runs on another thread: a normal exit tears
/// the Ceph libraries' global state down under that call, and the process can then die by
/// a signal (no exit status 130/143) after it already said that it stopped cleanly. Flush
/// everything that must be printed before calling this.
pub fn exit_immediately(code: u8) -> ! {
    // SAFETY: `_exit` takes a plain int and never returns; it runs no handler and touches no
    // Rust or C++ state, so nothing can observe a half-torn-down library afterwards.
    unsafe { libc::_exit(i32::from(code)) }
}

/// The text [`explain_aborts`] writes, kept for its signal handler (a static: the handler
/// may only read memory that is never freed).
static ABORT_TEXT: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// Write `text` to stderr if the process is aborted (SIGABRT), then die of that signal as
/// before (exit status 134, a core file where enabled). For a program whose abort would
/// otherwise end on librados' or librbd's own last words only (`terminate called after
/// throwing an instance of ...`): Ceph 16.2's client libraries were seen to abort the
/// process from one of their threads during an image close under load, so the program can
/// say what that means and what to do. Process-wide; the first call's text wins. Returns
/// false where the handler could not be installed.
pub fn explain_aborts(text: &'static str) -> bool {
    let _ = ABORT_TEXT.set(text);
    extern "C" fn on_abort(_: libc::c_int) {
        if let Some(text) = ABORT_TEXT.get() {
            // SAFETY: `write` is async-signal-safe; the buffer is a `'static` str, valid for
            // its length. A short or failed write is ignored: the process dies anyway.
            unsafe { libc::write(2, text.as_ptr().cast(), text.len()) };
        }
        // the action is the default again (SA_RESETHAND): raise it once more so that a
        // SIGABRT sent by another process also ends the process (abort() would re-raise on
        // its own); delivered at the latest when this handler returns
        // SAFETY: `raise` is async-signal-safe.
        unsafe { libc::raise(libc::SIGABRT) };
    }
    // SAFETY: a zeroed sigaction is a valid start (empty mask, no flags); the handler is a
    // plain `extern "C" fn` that only makes async-signal-safe calls, and `sigaction` copies
    // the struct before returning.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_abort as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut action.sa_mask);
        // the handler runs once: SA_RESETHAND restores the default before it is entered
        action.sa_flags = libc::SA_RESETHAND;
        libc::sigaction(libc::SIGABRT, &action, std::ptr::null_mut()) == 0
    }
}
