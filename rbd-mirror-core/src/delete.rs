//! Deleting the source image after a finished migration: never automatic, always a separate,
//! explicit call that first re-verifies the destination copy against the source.
//!
//! Refuses when the migration is not finished, the copy is gone or differs, the source is in
//! use, still mirrored, or has snapshots. Nothing is changed unless every check passes.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::event::{Event, EventSink, ProgressInfo};
use crate::exec::on_ceph;
use crate::ops::{CephOps, ErrorKind, MirrorImageState, OpsError, SnapshotNamespace};
use crate::spec::ImageSpec;
use crate::state::{self, StateFile};

/// What [`delete_source`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteReport {
    /// `cluster:pool/image` of the deleted source.
    pub source: String,
    /// `cluster:pool/image` of the copy it was verified against.
    pub copy: String,
    /// sha256 both had.
    pub sha256: String,
    /// The source was already gone (nothing done).
    pub already_deleted: bool,
}

/// Run `f` on a blocking thread as a `delete-source` call on `target` of `cluster`.
async fn blocking<T: Send + 'static>(
    step: &str,
    cluster: &dyn CephOps,
    target: &ImageSpec,
    f: impl FnOnce() -> std::result::Result<T, OpsError> + Send + 'static,
) -> Result<T> {
    on_ceph(step, cluster.name().to_string(), target.to_string(), f).await
}

/// Whether `result`, a read of `source` after it was seen to exist, failed because the
/// source is gone now: removed by an earlier call that was dropped while its removal ran
/// (a blocking call is not stopped by the drop, and its lock went with the dropped future).
async fn gone_meanwhile<T>(
    result: &Result<T>,
    src: &Arc<dyn CephOps>,
    source: &ImageSpec,
) -> Result<bool> {
    let not_found = matches!(
        result,
        Err(Error::Ceph { source: e, .. }) if e.kind == ErrorKind::NotFound
    );
    if !not_found {
        return Ok(false);
    }
    let (s, i) = (src.clone(), source.clone());
    Ok(!blocking("delete-source", src.as_ref(), source, move || {
        s.image_exists(&i)
    })
    .await?)
}

/// Delete the source image of the finished migration `id` recorded in `state_dir`, after
/// re-verifying that `copy` (default: the plan's copy target, or `volume-<id>` when it was
/// adopted by Cinder) holds the same content.
///
/// Cancel safety: safe to drop at any await: it deletes only after re-verifying, and the next
/// call either deletes or finds the source already deleted (test:
/// `cancel_tests::cleanup_delete_source_and_adopt_image_dropped_at_any_await_are_finished_by_the_next_call`).
pub async fn delete_source(
    state_dir: &Path,
    id: &str,
    copy: Option<ImageSpec>,
    src: Arc<dyn CephOps>,
    dst: Arc<dyn CephOps>,
    events: Arc<dyn EventSink>,
) -> Result<DeleteReport> {
    state::check_migration_id(id)?;
    let run = state::load(&StateFile::path_for(state_dir, id))?.ok_or_else(|| Error::State {
        path: StateFile::path_for(state_dir, id),
        reason: format!("no migration '{id}' is recorded; see `rbd-relay list`"),
    })?;
    let _lock = StateFile::lock(state_dir, id, &run.plan.migration.lock_name())?;
    let m = &run.plan.migration;
    let source = m.image.clone();
    // an adopted copy was renamed by Cinder to volume-<id> in the same pool
    let copy = match (copy, &run.adopted) {
        (Some(c), _) => c,
        (None, Some(a)) => m.copy_target().renamed(&a.rbd_image)?,
        (None, None) => m.copy_target(),
    };
    let label = (
        format!("{}:{source}", src.name()),
        format!("{}:{copy}", dst.name()),
    );
    if !run.finished() || !run.verified() {
        return Err(Error::DeleteRefusedUnfinished {
            id: id.to_string(),
            outcome: run.outcome.clone(),
        });
    }
    let (s, i) = (src.clone(), source.clone());
    if !blocking("delete-source", src.as_ref(), &source, move || {
        s.image_exists(&i)
    })
    .await?
    {
        return Ok(DeleteReport {
            source: label.0,
            copy: label.1,
            sha256: run.copy_digest.clone().unwrap_or_default(),
            already_deleted: true,
        });
    }
    let (d, c) = (dst.clone(), copy.clone());
    if !blocking("delete-source", dst.as_ref(), &copy, move || {
        d.image_exists(&c)
    })
    .await?
    {
        return Err(Error::DeleteRefusedNoCopy { copy: label.1 });
    }
    let already_deleted = DeleteReport {
        source: label.0.clone(),
        copy: label.1.clone(),
        sha256: run.copy_digest.clone().unwrap_or_default(),
        already_deleted: true,
    };
    // the source must be idle, unmirrored and without snapshots
    let (s, i) = (src.clone(), source.clone());
    let checked = blocking("delete-source", src.as_ref(), &source, move || {
        Ok((s.watchers(&i)?, s.mirror_image(&i)?, s.snapshots(&i)?))
    })
    .await;
    if gone_meanwhile(&checked, &src, &source).await? {
        return Ok(already_deleted);
    }
    let (watchers, mirror, snaps) = checked?;
    if !watchers.is_empty() {
        return Err(Error::DeleteRefusedInUse {
            source_image: label.0,
            watchers,
        });
    }
    if mirror.state != MirrorImageState::Disabled {
        return Err(Error::DeleteRefusedMirrored {
            source_image: label.0,
        });
    }
    if !snaps.is_empty() {
        return Err(Error::DeleteRefusedSnapshots {
            source_image: label.0,
            user_snapshots: snaps
                .iter()
                .filter(|s| s.namespace == SnapshotNamespace::User)
                .map(|s| s.name.clone())
                .collect(),
        });
    }
    // re-verify now, not trusting the recorded digests
    events.emit(Event::Progress(ProgressInfo {
        phase: "verify".into(),
        percent: Some(0.0),
        bytes_per_second: None,
        eta_seconds: None,
        detail: format!("re-verifying {} against {}", label.1, label.0),
    }));
    let (s, i) = (src.clone(), source.clone());
    let (d, c) = (dst.clone(), copy.clone());
    let (s2_src, i2_src) = (src.clone(), source.clone());
    // a copy grown to a whole GiB for Cinder: its first (source size) bytes are compared
    let grown = run.plan.grown_to().is_some();
    let (a, b) = tokio::join!(
        blocking("delete-source", src.as_ref(), &source, move || s
            .digest(&i, &mut |_, _| true)),
        blocking("delete-source", dst.as_ref(), &copy, move || {
            if grown {
                let (s2, i2) = (s2_src, i2_src);
                let len = s2.stat(&i2)?.size;
                d.digest_first(&c, len, &mut |_, _| true)
            } else {
                d.digest(&c, &mut |_, _| true)
            }
        }),
    );
    if gone_meanwhile(&a, &src, &source).await? {
        return Ok(already_deleted);
    }
    let (a, b) = (a?, b?);
    if a != b {
        return Err(Error::VerifyMismatch {
            source_image: label.0,
            source_digest: a,
            copy: label.1,
            copy_digest: b,
        });
    }
    let (s, i) = (src.clone(), source.clone());
    blocking("delete-source", src.as_ref(), &source, move || {
        match s.remove_image(&i) {
            Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
            r => r,
        }
    })
    .await?;
    events.emit(Event::Warning {
        message: format!(
            "deleted {} (verified equal to {}, sha256 {a})",
            label.0, label.1
        ),
    });
    Ok(DeleteReport {
        source: label.0,
        copy: label.1,
        sha256: a,
        already_deleted: false,
    })
}
