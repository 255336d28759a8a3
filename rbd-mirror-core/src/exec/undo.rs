//! The undo steps of an abort ([`crate::abort`]), one function each, run by the executor like
//! any step: each first looks whether its effect is already there (the thing is gone, off,
//! back as it was), so an interrupted abort re-run converges and a second abort changes
//! nothing. None of them touches the source's data.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{converge_features, on_ceph, remove_own_image};
use crate::error::{Error, Result};
use crate::event::{Event, EventSink};
use crate::features::Features;
use crate::ops::{CephOps, ErrorKind, MirrorImageState};
use crate::plan::{Step, VolumeMigration};
use crate::preflight;
use crate::state::RunState;

/// How often a sync-point watch looks again.
const SYNC_POINT_POLL: Duration = Duration::from_millis(200);

/// What one undo step found.
pub(crate) enum Undone {
    /// It put this back (one line of the abort's report).
    Changed(String),
    /// It changed only rbd-relay's own bookkeeping (not listed among what was undone).
    Unreported,
    /// Nothing was left to undo, for this reason.
    NothingLeft(String),
}

/// Run undo step `step` (`work`) and record what it found: a change among the undo run's
/// `undone` lines, nothing to do as a skipped step.
pub(super) async fn record(
    work: impl Future<Output = Result<Undone>>,
    index: usize,
    step: &Step,
    state: &mut RunState,
    events: &dyn EventSink,
) -> Result<()> {
    match work.await? {
        Undone::Changed(what) => {
            if let Some(u) = &mut state.undo {
                u.undone.push(what);
            }
        }
        Undone::Unreported => {}
        Undone::NothingLeft(reason) => events.emit(Event::StepSkipped {
            index,
            step: step.kind().into(),
            reason,
        }),
    }
    Ok(())
}

/// [`Step::RemoveCopy`]: remove the image under the copy name if it has the id the copy
/// recorded when it created it; an image with another id is left alone (it may be another
/// migration's copy), and a copy with snapshots is refused.
pub(super) async fn remove_copy(
    dst: &Arc<dyn CephOps>,
    m: &VolumeMigration,
    image_id: &str,
    events: &dyn EventSink,
) -> Result<Undone> {
    let target = m.copy_target();
    let copy = format!("{}:{target}", dst.name());
    let (d, t) = (dst.clone(), target.clone());
    let found = on_ceph(
        "remove_copy",
        dst.name().to_string(),
        target.to_string(),
        move || match d.stat(&t) {
            Ok(st) => Ok(Some((st.id, d.snapshots(&t)?))),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        },
    )
    .await?;
    let snaps = match found {
        None => return Ok(Undone::NothingLeft("the copy is already gone".into())),
        Some((id, _)) if id != image_id => {
            return Ok(Undone::NothingLeft(format!(
                "{copy} has image id {id}, not this migration's copy ({image_id}): left alone"
            )))
        }
        Some((_, snaps)) => snaps,
    };
    if !snaps.is_empty() {
        return Err(Error::CopyHasSnapshots {
            copy,
            snapshots: snaps.into_iter().map(|s| s.name).collect(),
        });
    }
    remove_own_image("remove_copy", dst, &target, image_id, events).await?;
    Ok(Undone::Changed(format!("removed the copy {copy}")))
}

/// [`Step::DisableSourceMirroring`]: disable mirroring of the source unless it is off. A
/// `disabling` image is disabled again: a run killed in the middle of disabling left it so,
/// and disabling again completes it. Then the replica that rbd-mirror will not remove (it
/// cannot replay it) goes too ([`super::remove_orphaned_replica`]).
pub(super) async fn disable_source_mirroring(
    src: &Arc<dyn CephOps>,
    dst: &Arc<dyn CephOps>,
    m: &VolumeMigration,
    replica_id: Option<String>,
) -> Result<Undone> {
    let (s, d, image, replica) = (src.clone(), dst.clone(), m.image.clone(), m.replica());
    let (disabled, orphan_removed) = on_ceph(
        "disable_source_mirroring",
        src.name().to_string(),
        m.image.to_string(),
        move || {
            let mi = s.mirror_image(&image)?;
            // known only while mirroring is on: read before the disable
            let global_id = (mi.state != MirrorImageState::Disabled).then_some(mi.global_id);
            if global_id.is_some() {
                s.disable_mirroring(&image, false)?;
            }
            let disabled = global_id.is_some();
            let removed = super::remove_orphaned_replica(
                d.as_ref(),
                &replica,
                global_id.as_deref(),
                replica_id.as_deref(),
            )?;
            Ok((disabled, removed))
        },
    )
    .await?;
    let replica = format!("{}:{}", m.destination.name, m.replica());
    Ok(match (disabled, orphan_removed) {
        (_, true) => Undone::Changed(format!(
            "disabled mirroring of {}:{}, and removed the replica {replica} (rbd-mirror could not replay it any more, and does not remove such a replica)",
            src.name(),
            m.image,
        )),
        (true, false) => Undone::Changed(format!(
            "disabled mirroring of {}:{} (rbd-mirror removes the replica {replica})",
            src.name(),
            m.image,
        )),
        (false, false) => Undone::NothingLeft("mirroring is already off".into()),
    })
}

/// [`Step::RemoveMirrorSnapshots`]: remove the source's mirror snapshots except `kept`, and
/// rbd-mirror's sync points left behind except the user snapshots from before
/// (`user_before`); then, for `watch`, remove any sync point the daemon makes late (it may
/// create one just after the disable it raced, see
/// [`crate::abort::AbortOptions::sync_point_watch`]).
pub(super) async fn remove_mirror_snapshots(
    src: &Arc<dyn CephOps>,
    m: &VolumeMigration,
    kept: &[u64],
    user_before: &[String],
    watch: Duration,
) -> Result<Undone> {
    let until = Instant::now() + watch;
    let (s, image) = (src.clone(), m.image.clone());
    // read once: the watch below does not change it (a sync point in use while mirroring is
    // on, as after an abort of a migration that found it on, is the daemon's)
    let mirroring_off = on_ceph(
        "remove_mirror_snapshots",
        src.name().to_string(),
        m.image.to_string(),
        move || Ok(s.mirror_image(&image)?.state == MirrorImageState::Disabled),
    )
    .await?;
    let mut removed = 0;
    loop {
        let (s, image) = (src.clone(), m.image.clone());
        let (kept, user_before) = (kept.to_vec(), user_before.to_vec());
        removed += on_ceph(
            "remove_mirror_snapshots",
            src.name().to_string(),
            m.image.to_string(),
            move || {
                let kept = super::KeptSnapshots {
                    mirror_ids: &kept,
                    user_names: &user_before,
                };
                super::remove_mirror_snapshots_except(s.as_ref(), &image, kept, mirroring_off)
            },
        )
        .await?;
        if Instant::now() >= until {
            break;
        }
        tokio::time::sleep(SYNC_POINT_POLL.min(until - Instant::now())).await;
    }
    Ok(if removed > 0 {
        Undone::Changed(format!(
            "removed {removed} mirror snapshot(s) of {}:{}",
            src.name(),
            m.image
        ))
    } else {
        Undone::NothingLeft("no mirror snapshot made by this migration".into())
    })
}

/// [`Step::RestoreOriginalFeatures`]: bring the source's features to `original` as far as
/// librbd allows (see [`converge_features`]).
pub(super) async fn restore_original_features(
    src: &Arc<dyn CephOps>,
    m: &VolumeMigration,
    original: Features,
) -> Result<Undone> {
    let (s, image) = (src.clone(), m.image.clone());
    let changed = on_ceph(
        "restore_original_features",
        src.name().to_string(),
        m.image.to_string(),
        move || converge_features(s.as_ref(), &image, original),
    )
    .await?;
    Ok(if changed {
        Undone::Changed(format!(
            "restored the features of {}:{} to {original}",
            src.name(),
            m.image
        ))
    } else {
        Undone::NothingLeft("features are already the original ones".into())
    })
}

/// [`Step::RemoveSourceMarker`]: remove this run's marker (this migration, host and state
/// directory) from the source; another run's marker, or none, is left as it is.
pub(super) async fn remove_source_marker(
    src: &Arc<dyn CephOps>,
    m: &VolumeMigration,
    state_dir: &Path,
) -> Result<Undone> {
    let (s, mm, dir) = (src.clone(), m.clone(), state_dir.to_path_buf());
    let removed = on_ceph(
        "remove_source_marker",
        src.name().to_string(),
        m.image.to_string(),
        move || match preflight::read_marker_ops(s.as_ref(), &mm) {
            Ok(Some(Ok(marker))) if marker.is_run_of(&mm, &dir) => s
                .metadata_remove(&mm.image, preflight::SOURCE_MARKER_KEY)
                .map(|()| true),
            Ok(_) => Ok(false),
            // the source image is gone: nothing to unmark
            Err(e) if e.kind == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        },
    )
    .await?;
    Ok(if removed {
        Undone::Unreported
    } else {
        Undone::NothingLeft("no marker of this migration on the source".into())
    })
}

/// [`Step::PromoteSource`]: promote the source again if it is demoted: without force while
/// the replica is not primary, else forced (the replica's promotion is undone before this,
/// so a forced promote means the replica could not be demoted). Nothing when the source is
/// primary or not mirrored.
pub(super) async fn promote_source(
    src: &Arc<dyn CephOps>,
    dst: &Arc<dyn CephOps>,
    m: &VolumeMigration,
) -> Result<Undone> {
    let (s, d, image, replica) = (src.clone(), dst.clone(), m.image.clone(), m.replica());
    let source = format!("{}:{}", src.name(), m.image);
    let promoted = on_ceph(
        "promote_source",
        src.name().to_string(),
        m.image.to_string(),
        move || {
            let mi = s.mirror_image(&image)?;
            if mi.state != MirrorImageState::Enabled || mi.primary {
                return Ok(false);
            }
            let replica_primary = d.image_exists(&replica)? && d.mirror_image(&replica)?.primary;
            match s.promote(&image, false) {
                Ok(()) => {}
                Err(_) if replica_primary => s.promote(&image, true)?,
                Err(e) if e.kind == ErrorKind::Busy => s.promote(&image, true)?,
                Err(e) => return Err(e),
            }
            Ok(true)
        },
    )
    .await?;
    Ok(if promoted {
        Undone::Changed(format!("promoted {source} again (writable)"))
    } else {
        Undone::NothingLeft(format!("{source} is not demoted"))
    })
}

/// [`Step::DemoteReplica`]: the replica's handover snapshot goes (the copy that hung from
/// it was removed before), then the replica is demoted while the source is still mirrored
/// (rbd-mirror removes it when the source's mirroring is disabled), or removed by its
/// recorded id once the source is not mirrored any more.
pub(super) async fn demote_replica(
    src: &Arc<dyn CephOps>,
    dst: &Arc<dyn CephOps>,
    m: &VolumeMigration,
    snap: &str,
    replica_id: Option<String>,
) -> Result<Undone> {
    let (s, d, image, replica, sn) = (
        src.clone(),
        dst.clone(),
        m.image.clone(),
        m.replica(),
        snap.to_string(),
    );
    let name = format!("{}:{}", dst.name(), m.replica());
    let done = on_ceph(
        "demote_replica",
        dst.name().to_string(),
        m.replica().to_string(),
        move || {
            if !d.image_exists(&replica)? {
                return Ok(None);
            }
            let mi = d.mirror_image(&replica)?;
            if !mi.primary {
                return Ok(None);
            }
            super::remove_snapshot_if_there(d.as_ref(), &replica, &sn)?;
            let source_mirrored = s.mirror_image(&image)?.state == MirrorImageState::Enabled;
            if source_mirrored {
                d.demote(&replica)?;
                return Ok(Some("demoted"));
            }
            match replica_id {
                Some(id) if d.stat(&replica)?.id == id => {
                    if mi.state != MirrorImageState::Disabled {
                        d.disable_mirroring(&replica, false)?;
                    }
                    d.remove_image_with_id(&replica, &id)?;
                    Ok(Some("removed"))
                }
                _ => Ok(None),
            }
        },
    )
    .await?;
    Ok(match done {
        Some(how) => Undone::Changed(format!("{how} the promoted replica {name}")),
        None => Undone::NothingLeft(format!(
            "{name} is not a promoted replica of this migration"
        )),
    })
}
