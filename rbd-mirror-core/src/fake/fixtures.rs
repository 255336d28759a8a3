//! Shared fixtures of the unit tests that run migrations on the fake.

use std::time::Duration;

use crate::exec::RunOptions;
use crate::features::{Features, MirrorImageMode};
use crate::plan::VolumeMigration;
use crate::spec::{ClusterSpec, PoolSpec};

/// The features of a freshly created image (Ceph 16.2 defaults).
pub const DEFAULT: Features = Features::LAYERING
    .union(Features::EXCLUSIVE_LOCK)
    .union(Features::OBJECT_MAP)
    .union(Features::FAST_DIFF)
    .union(Features::DEEP_FLATTEN);

/// `site-a:volumes/IMAGE` into `site-b:cinder` in `mode`.
pub fn migration_of(image: &str, mode: MirrorImageMode) -> VolumeMigration {
    let mut m = VolumeMigration::new(
        ClusterSpec::named("site-a").unwrap(),
        ClusterSpec::named("site-b").unwrap(),
        format!("volumes/{image}").parse().unwrap(),
        PoolSpec::new("cinder").unwrap(),
    );
    m.mode = mode;
    m
}

/// Waits that poll at once and call 200 ms without progress a stall.
pub fn opts() -> RunOptions {
    let mut o = RunOptions::default();
    o.wait.poll = Duration::from_millis(1);
    o.wait.health_every = Duration::from_millis(1);
    o.wait.stall_after = Duration::from_millis(200);
    o
}

/// Abort options of the tests: no watch for a late sync point (the fake daemon makes
/// none, except where a test asks for one and sets its own watch).
pub fn abort_opts() -> crate::abort::AbortOptions {
    crate::abort::AbortOptions {
        sync_point_watch: Duration::ZERO,
        ..Default::default()
    }
}

/// 4099 bytes (not a multiple of anything) of a repeating pattern.
pub fn data() -> Vec<u8> {
    (0..4099u32).map(|i| (i * 7 % 251) as u8).collect()
}

/// `migrate_volume` with [`opts`] and no event sink: the call most tests make.
pub async fn run(
    m: &VolumeMigration,
    src: std::sync::Arc<dyn crate::ops::CephOps>,
    dst: std::sync::Arc<dyn crate::ops::CephOps>,
    dir: &std::path::Path,
) -> crate::error::Result<crate::exec::Summary> {
    crate::exec::migrate_volume(
        m,
        src,
        dst,
        dir,
        &opts(),
        std::sync::Arc::new(crate::event::NullSink),
    )
    .await
}

/// Runs `m` with [`opts`] and drops the run (as a killed process stops) once its state file
/// in `dir` says step `stop_at` is the next to run; then waits for the dropped run's blocking
/// call to end, as a killed process's would. Returns the step it stopped before, `None` if
/// the run ended first.
pub async fn drop_run_at(
    m: &VolumeMigration,
    a: std::sync::Arc<crate::fake::Fake>,
    b: std::sync::Arc<crate::fake::Fake>,
    dir: &std::path::Path,
    stop_at: usize,
) -> Option<usize> {
    let task = tokio::spawn({
        let (m, d) = (m.clone(), dir.to_path_buf());
        async move {
            crate::exec::migrate_volume(
                &m,
                a,
                b,
                &d,
                &opts(),
                std::sync::Arc::new(crate::event::NullSink),
            )
            .await
        }
    });
    let mut stopped_at = None;
    for _ in 0..5000 {
        if let Ok(st) = crate::state::recorded(dir, &m.id()) {
            if st.next_step >= stop_at {
                task.abort();
                stopped_at = Some(st.next_step);
                break;
            }
        }
        if task.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let _ = task.await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    stopped_at
}
