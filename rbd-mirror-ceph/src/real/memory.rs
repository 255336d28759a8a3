//! The engine's memory bound: how much image data a bulk operation (digest, trailing copy,
//! flatten) holds at once, and the connection settings that keep librbd within it.
//!
//! The target is a peak RSS of at most 64 MiB per migration. A process connected to both
//! clusters is already at ~33 MiB (~24 MiB of it librados'/librbd's code), so the data in
//! flight must stay within ~30 MiB at the busiest moment: the clone handover's verification
//! hashes the source and the replica's snapshot at once, and the copy handover runs the
//! trailing copy beside the source's digest. Measured on a 1 GiB image, one connection
//! (Ceph 16.2, the numbers above what connecting takes):
//!
//! - a digest in 4 MiB pieces (3 readers, 2 buffers each) peaked at +92 MiB: +40 once
//!   freed buffers went back to the system (see [`librbd::map_large_allocations`]), and
//!   +13 in 1 MiB pieces, which were also not slower (2.3-3.4 s against 5.1-7.6 s for
//!   4 MiB pieces, interleaved runs on a loaded machine): each read holds its piece twice,
//!   in our buffer and in librbd's receive buffer;
//! - the trailing copy in 4 MiB pieces peaked at +150 MiB, in 1 MiB pieces at +27, and
//!   +21 without librbd's copy of every written piece (zero-copy writes);
//! - a flatten peaked at +217 MiB; +45 with freed buffers returned (10 objects at a time,
//!   librbd's default, each read from the parent and written whole), +21 with 4 at a time.

/// Bytes one read or write of a digest or of the trailing copy moves (at most: an image
/// with smaller objects is read an object at a time). A power of two, so it divides any
/// larger object size and rbd-mirror's per-object watermark falls on piece boundaries.
pub(crate) const PIECE: usize = 1 << 20;

/// Allocations from this size up get a mapping of their own, returned to the system when
/// freed: our pieces and librbd's buffers of the same size.
pub(crate) const MAPPED_FROM: usize = PIECE;

/// Objects librbd works on at once in a flatten (and an image removal, an object map
/// rebuild) on the engine's connections: each holds a whole object (4 MiB by default).
pub(crate) const MANAGEMENT_OPS: u32 = 4;

/// The options every engine connection sets, over the conf file.
///
/// - `rbd_cache=false`: its default write-around mode acknowledges a write before the OSD
///   has it, so a read through another handle (the copy's read-back) could miss it; and
///   the engine reads and writes each byte once, which a cache cannot help.
/// - `rbd_disable_zero_copy_writes=false`: librbd writes from the caller's buffer instead
///   of a copy of it. It copies to guard against a caller changing the buffer while the
///   write is in flight; the engine's buffer is owned by the write until librbd has
///   completed it ([`librbd::PendingWrite`]), and librbd completes a zero-copy write only
///   once it has let go of the buffer. Without a cache nothing else keeps it.
/// - `rbd_concurrent_management_ops`: [`MANAGEMENT_OPS`].
/// - `rbd_journal_order`: [`JOURNAL_ORDER`].
pub(crate) fn connection_options() -> [(&'static str, String); 4] {
    [
        ("rbd_cache", "false".into()),
        ("rbd_disable_zero_copy_writes", "false".into()),
        ("rbd_concurrent_management_ops", MANAGEMENT_OPS.to_string()),
        ("rbd_journal_order", JOURNAL_ORDER.to_string()),
    ]
}

/// Object size (log2) of the journals the engine creates when it enables journaling: 4 MiB
/// instead of librbd's 16 MiB. Opening a journal (the demotion takes the image's lock,
/// which opens it and looks for entries past the commit position) reads whole journal
/// objects: librbd sets no fetch limit for its own journal (`Journal::create_journaler`),
/// and the active object set is `splay_width` (4) objects, 64 MiB at 16 MiB each after a
/// busy writer. librbd caps each entry at the object size, so nothing else changes. A
/// journal the source already had keeps its own order.
pub(crate) const JOURNAL_ORDER: u32 = 22;

/// Sets [`MAPPED_FROM`] for the process (once; see [`librbd::map_large_allocations`]).
/// Logged, not failed, where the allocator has no such setting: memory is then higher,
/// nothing else changes.
pub(crate) fn bound_allocator() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if !librbd::map_large_allocations(MAPPED_FROM) {
            tracing::debug!(
                "the allocator has no mmap threshold: freed I/O buffers may stay resident"
            );
        }
    });
}
