//! How the process's allocator treats the large I/O buffers librbd and its callers churn
//! through: one place for the process-wide `mallopt` this needs.
//!
//! Every read librbd serves allocates a receive buffer as large as the read (on one of
//! librados' messenger threads), and every write without zero-copy a copy of the data;
//! flatten reads and writes whole objects. glibc serves such a buffer with its own mapping
//! (`mmap`) only until the first one is freed: from then on its dynamic threshold moves
//! up to that size and the next ones come from the per-thread arenas, which keep what was
//! freed in them. Measured on a 1 GiB image (Ceph 16.2, 4 MiB pieces): a digest peaked at
//! 119 MiB instead of 67 MiB, a flatten at 244 MiB instead of 72 MiB, with the arenas
//! holding 60-180 MiB that nothing used any more.

/// Serve every allocation of `min_bytes` or more with a mapping of its own, returned to the
/// system when it is freed (glibc `mallopt(M_MMAP_THRESHOLD)`; setting it also turns off
/// the dynamic threshold described in the module header). Process-wide and idempotent;
/// smaller allocations are unchanged. Returns false where the allocator has no such
/// setting (not glibc) or refused the value.
pub fn map_large_allocations(min_bytes: usize) -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let Ok(value) = libc::c_int::try_from(min_bytes) else {
            return false;
        };
        // SAFETY: mallopt takes the allocator's own lock and only changes where later
        // allocations come from; no memory is touched, and it is safe to call from any
        // thread at any time.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, value) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = min_bytes;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether glibc served `buf` with a mapping of its own: the `IS_MMAPPED` bit (2) of
    /// the chunk's size word, which glibc keeps right before the block it returns.
    #[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
    fn is_own_mapping(buf: &[u8]) -> bool {
        // SAFETY: `buf` is a live block from glibc's malloc (Vec<u8> through Rust's System
        // allocator, alignment 1); the 8 bytes before it are its chunk's size word, part
        // of the same allocation, and only read here.
        let size_word = unsafe { buf.as_ptr().cast::<usize>().sub(1).read_unaligned() };
        size_word & 2 != 0
    }

    /// Without the setting, every buffer after the first would come from an arena: the
    /// first one freed raises glibc's dynamic threshold above its size.
    #[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
    #[test]
    fn buffers_from_the_threshold_up_get_a_mapping_of_their_own_each_time() {
        const SIZE: usize = 3 << 20;
        assert!(map_large_allocations(1 << 20));
        for round in 0..3 {
            let buf = vec![1u8; SIZE];
            assert!(is_own_mapping(&buf), "buffer {round} came from an arena");
        }
    }
}
