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

    /// The start of the mapping of this process that contains `addr` (`/proc/self/maps`).
    fn mapping_start_of(addr: usize) -> Option<usize> {
        let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
        maps.lines().find_map(|line| {
            let (from, to) = line.split_whitespace().next()?.split_once('-')?;
            let (from, to) = (
                usize::from_str_radix(from, 16).ok()?,
                usize::from_str_radix(to, 16).ok()?,
            );
            (from..to).contains(&addr).then_some(from)
        })
    }

    /// A buffer glibc maps on its own starts right after its 16-byte chunk header at the
    /// start of its mapping; one from an arena (the main heap, or a 64 MiB heap of a
    /// thread's arena) does not. Without the setting, every buffer after the first would
    /// come from an arena: the first one freed raises glibc's dynamic threshold above it.
    #[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
    #[test]
    fn buffers_from_the_threshold_up_get_a_mapping_of_their_own_each_time() {
        const SIZE: usize = 3 << 20;
        assert!(map_large_allocations(1 << 20));
        for round in 0..3 {
            let mut buf: Vec<u8> = Vec::with_capacity(SIZE);
            buf.resize(SIZE, 1);
            let at = buf.as_ptr() as usize;
            let start = mapping_start_of(at).expect("the buffer is mapped");
            assert_eq!(at - start, 16, "buffer {round} is not a mapping of its own");
        }
    }
}
