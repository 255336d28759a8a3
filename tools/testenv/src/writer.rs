//! A stand-in for a VM writing to its volume, for tests and the benchmark of a live
//! migration: [`Writer`] opens an image with librbd (so it is a watcher and takes the
//! exclusive lock on its first write, as qemu does) and writes random 4-64 KiB blocks at
//! random offsets at about a given rate until stopped. `testenv write` runs one from a
//! shell.
//!
//! The writer's connection runs without the librbd cache: a write counts as done when the
//! OSD has it, so [`WriteReport::last_write`] is when the image last changed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use librbd::{Cluster, ClusterConfig};

use crate::{CephSite, Error, Result};

/// Smallest and largest block written, in bytes (4 KiB aligned, like a guest's I/O).
const MIN_BLOCK: u64 = 4 << 10;
const MAX_BLOCK: u64 = 64 << 10;

/// What a stopped [`Writer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteReport {
    /// When the last write completed (`None`: none did).
    pub last_write: Option<Instant>,
    /// Bytes written.
    pub bytes: u64,
    /// Writes made.
    pub writes: u64,
}

/// A thread writing random blocks into an open image at about a fixed rate.
#[derive(Debug)]
pub struct Writer {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<WriteReport>>,
    what: String,
}

/// xorshift64*: plenty for offsets and payloads, and no dependency.
struct Rng(u64);

impl Rng {
    fn seeded() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Self((nanos ^ u64::from(std::process::id()) << 32) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

impl Writer {
    /// Opens `pool/image` on `site` read-write (errors come back here) and starts writing
    /// about `rate_mib_per_s` MiB/s of random 4-64 KiB blocks at random 4 KiB-aligned
    /// offsets on a thread of its own. The image must be at least 64 KiB.
    pub fn start(site: &CephSite, pool: &str, image: &str, rate_mib_per_s: f64) -> Result<Self> {
        let config = ClusterConfig::new(site.name.clone())
            .conf(site.conf.clone())
            .option("rbd_cache", "false");
        let cluster = Cluster::connect(&config)?;
        let img = cluster.ioctx(pool)?.open_image(image)?;
        let size = img.size()?;
        let what = format!("{}:{pool}/{image}", site.name);
        if size < MAX_BLOCK {
            return Err(Error::Writer(format!(
                "{what} has {size} bytes, less than one {MAX_BLOCK}-byte block"
            )));
        }
        let rate = (rate_mib_per_s.max(0.001) * f64::from(1u32 << 20)) as u64;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("testenv-writer".into())
            .spawn(move || -> Result<WriteReport> {
                let mut rng = Rng::seeded();
                let mut report = WriteReport {
                    last_write: None,
                    bytes: 0,
                    writes: 0,
                };
                let mut buf = vec![0u8; MAX_BLOCK as usize];
                let started = Instant::now();
                while !stop_flag.load(Ordering::Relaxed) {
                    let blocks = MAX_BLOCK / MIN_BLOCK;
                    let len = MIN_BLOCK * (1 + rng.next() % blocks);
                    let offset = (rng.next() % ((size - len) / MIN_BLOCK + 1)) * MIN_BLOCK;
                    let data = &mut buf[..len as usize];
                    rng.fill(data);
                    img.write_at(offset, data)?;
                    report.last_write = Some(Instant::now());
                    report.bytes += len;
                    report.writes += 1;
                    // pace: sleep until the bytes written fit the rate
                    let due = Duration::from_secs_f64(report.bytes as f64 / rate as f64);
                    loop {
                        let elapsed = started.elapsed();
                        if elapsed >= due || stop_flag.load(Ordering::Relaxed) {
                            break;
                        }
                        // short naps so a stop is seen within 20 ms
                        std::thread::sleep((due - elapsed).min(Duration::from_millis(20)));
                    }
                }
                img.flush()?;
                img.close()?;
                drop(cluster);
                Ok(report)
            })
            .map_err(|e| Error::Spawn {
                command: format!("writer thread for {what}"),
                source: e,
            })?;
        Ok(Self { stop, thread, what })
    }

    /// Whether the writer has stopped by itself (a failed write).
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Stops writing, flushes and closes the image (it is no watcher any more when this
    /// returns); returns what was written, or the write that failed.
    pub fn stop(self) -> Result<WriteReport> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| Error::ThreadPanicked(self.what))?
    }
}
