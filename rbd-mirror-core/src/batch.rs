//! Several migrations in one call (`rbd-relay migrate volume A B C --parallel N`): each image
//! is its own plan, state file and lock, run by [`crate::exec::migrate`] exactly as a single
//! run would; at most `parallel` run at once, and one image failing never stops the others.
//! The results come back in the order the images were given, for the summary table.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::event::EventSink;
use crate::exec::{migrate, Clouds, RunOptions, Summary};
use crate::ops::CephOps;
use crate::plan::VolumeMigration;

/// The outcome of one image of a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchItem {
    /// Migration id.
    pub id: String,
    /// `cluster:pool/image` of the source.
    pub source: String,
    /// Wall-clock seconds this run spent on it.
    pub seconds: f64,
    /// The summary, when it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    /// The error, when it failed (the whole message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl BatchItem {
    /// Whether this image's migration succeeded.
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

/// Refuse a batch that names one migration twice (the second would only wait for the lock
/// of the first, or find it done), or two sources with one copy target (`poolA/x` and
/// `poolB/x` both copied `--into P` as `x`: one would find the other's copy under its
/// name); nothing has been changed when this fails.
pub fn check_distinct(migrations: &[VolumeMigration]) -> Result<()> {
    let mut seen = BTreeSet::new();
    let mut targets = std::collections::BTreeMap::new();
    for m in migrations {
        if !seen.insert(m.id()) {
            return Err(Error::BatchImageTwice {
                image: m.image.to_string(),
                id: m.id(),
            });
        }
        if let Some(first) = targets.insert(m.target_lock_name(), m.image.clone()) {
            return Err(Error::BatchSharedCopyTarget {
                first: first.to_string(),
                second: m.image.to_string(),
                target: m.target_lock_name(),
            });
        }
    }
    Ok(())
}

/// Run `migrations` with at most `parallel` at once (at least 1). `sink_for` gives the
/// event sink of each migration (e.g. one that tags events with the id); `on_done` is called
/// as each one ends. Never fails as a whole: each image's result is in its [`BatchItem`].
///
/// Cancel safety: safe to drop at any await: its tasks are aborted with it (each one a
/// [`migrate`], cancel-safe), their locks go once they are gone, and the next call finishes
/// every migration (test:
/// `cancel_tests::a_batch_dropped_at_any_await_is_finished_by_the_next_call`).
#[allow(clippy::too_many_arguments)]
pub async fn migrate_batch(
    migrations: Vec<VolumeMigration>,
    src: Arc<dyn CephOps>,
    dst: Arc<dyn CephOps>,
    clouds: &Clouds,
    state_dir: &Path,
    opts: &RunOptions,
    parallel: usize,
    sink_for: impl Fn(&VolumeMigration) -> Arc<dyn EventSink>,
    on_done: impl Fn(&BatchItem),
) -> Vec<BatchItem> {
    let limit = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, m) in migrations.iter().cloned().enumerate() {
        let (src, dst, clouds) = (src.clone(), dst.clone(), clouds.clone());
        let (dir, opts, limit) = (state_dir.to_path_buf(), opts.clone(), limit.clone());
        let events = sink_for(&m);
        tasks.spawn(async move {
            // the semaphore is never closed, so acquiring only waits
            let _permit = limit.acquire_owned().await;
            let t = Instant::now();
            let r = migrate(&m, src, dst, &clouds, &dir, &opts, events).await;
            let item = BatchItem {
                id: m.id(),
                source: format!("{}:{}", m.source.name, m.image),
                seconds: t.elapsed().as_secs_f64(),
                error: r.as_ref().err().map(|e| e.to_string()),
                summary: r.ok(),
            };
            (i, item)
        });
    }
    let mut items: Vec<Option<BatchItem>> = vec![None; migrations.len()];
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((i, item)) => {
                on_done(&item);
                items[i] = Some(item);
            }
            Err(e) => {
                // a panicking task: its image gets an error item below
                tracing::error!("a batch task failed: {e}");
            }
        }
    }
    items
        .into_iter()
        .zip(migrations.iter())
        .map(|(item, m)| {
            item.unwrap_or_else(|| BatchItem {
                id: m.id(),
                source: format!("{}:{}", m.source.name, m.image),
                seconds: 0.0,
                summary: None,
                error: Some("the migration task ended unexpectedly (see the log)".into()),
            })
        })
        .collect()
}
