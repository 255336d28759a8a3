//! The executor: runs a plan step by step, emits progress, writes the state file after every
//! step, and resumes a recorded run. Every step first checks whether its effect is already
//! there, so a re-run after a crash converges.
//!
//! Safety rules enforced here, not left to callers: mirroring of the source is disabled (which
//! deletes the replica) only after the copy was verified equal to the source; a destination
//! image this run did not create is never removed.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::cloud::{AdoptedVolume, CloudError, CloudImage, CloudOps};
use crate::error::{Error, Result};
use crate::event::{Event, EventSink};
use crate::features::{plan_restore, Features};
use crate::ops::{CephOps, ErrorKind, MirrorImageState, OpsError, SnapshotNamespace};
use crate::plan::{Plan, Step, VolumeMigration};
use crate::preflight;
use crate::spec::ImageSpec;
use crate::state::{RunState, StateFile};
use crate::wait::WaitOptions;

mod background;
mod bootable;
mod cloud_steps;
pub(crate) mod cutover;
mod executor;
mod single_role;
mod undo;

pub use bootable::{bootable_request, migrate_bootable, plan_bootable, BootableMigration};
#[cfg(test)]
pub(crate) use cutover::describe_lag;
pub(crate) use cutover::handover_snapshot;
pub use cutover::{cutover_request_path, request_cutover, CutoverRequest};
pub(crate) use executor::Executor;
pub use single_role::{adopt_image, register_image};

/// Knobs of a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunOptions {
    /// How to wait for the replica.
    pub wait: WaitOptions,
}

/// What a finished migration reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Migration id.
    pub id: String,
    /// `cluster:pool/image` of the source.
    pub source: String,
    /// `cluster:pool/image` of the verified copy.
    pub copy: String,
    /// Bytes of the image.
    pub bytes: u64,
    /// sha256 of source and copy (equal).
    pub sha256: String,
    /// Seconds per step (kind, seconds), this run and earlier ones.
    pub steps: Vec<(String, f64)>,
    /// Features that could not be restored on the source.
    pub lost_features: Features,
    /// Whether this run only found everything already done.
    pub already_done: bool,
    /// The Cinder volume the destination cloud adopted the copy as (with `--adopt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<AdoptedVolume>,
    /// The Glance image the destination cloud registered the copy as (bootable path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<CloudImage>,
    /// The size in bytes the copy was grown to before its adoption (the next whole GiB,
    /// what Cinder records), when `bytes` was not a whole GiB; its first `bytes` bytes are
    /// the verified ones (`sha256`), the rest zeros.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grown_to: Option<u64>,
}

/// The clouds a plan may talk to (none for a Ceph-only migration).
#[derive(Clone, Default)]
pub struct Clouds {
    /// The destination cloud (adoption, registration).
    pub destination: Option<Arc<dyn CloudOps>>,
    /// The source cloud (upload-to-image of a bootable volume).
    pub source: Option<Arc<dyn CloudOps>>,
}

impl Clouds {
    /// Both clouds, which the bootable path needs (upload at the source, register at the
    /// destination).
    fn both_for_bootable(&self) -> Result<(Arc<dyn CloudOps>, Arc<dyn CloudOps>)> {
        match (&self.source, &self.destination) {
            (Some(s), Some(d)) => Ok((s.clone(), d.clone())),
            (None, _) => Err(Error::NotGiven {
                needed_for: "a bootable migration".into(),
                what: "the source cloud".into(),
                flag: "--source-cloud",
            }),
            (_, None) => Err(Error::NotGiven {
                needed_for: "a bootable migration".into(),
                what: "the destination cloud".into(),
                flag: "--os-cloud",
            }),
        }
    }

    fn destination_for(&self, m: &VolumeMigration) -> Result<Option<Arc<dyn CloudOps>>> {
        let wanted = m
            .adopt
            .as_ref()
            .map(|a| a.cloud.clone())
            .or_else(|| m.register.as_ref().map(|r| r.cloud.clone()));
        match (wanted, &self.destination) {
            (None, _) => Ok(None),
            (Some(_), Some(c)) => Ok(Some(c.clone())),
            (Some(cloud), None) => Err(Error::NotGiven {
                needed_for: format!("the plan, which hands the copy to cloud '{cloud}',"),
                what: "a cloud".into(),
                flag: "--os-cloud",
            }),
        }
    }
}

fn cloud_err(step: &str, cloud: &dyn CloudOps) -> impl FnOnce(CloudError) -> Error {
    let (step, cloud) = (step.to_string(), cloud.name().to_string());
    move |error| Error::Cloud { step, cloud, error }
}

/// Run `f` on a blocking thread, turning failures into [`Error::Ceph`] with context.
pub(crate) async fn on_ceph<T: Send + 'static>(
    step: &str,
    cluster: String,
    target: String,
    f: impl FnOnce() -> std::result::Result<T, OpsError> + Send + 'static,
) -> Result<T> {
    let ctx = |source: OpsError| Error::Ceph {
        step: step.to_string(),
        cluster: cluster.clone(),
        target: target.clone(),
        source,
    };
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| {
            ctx(OpsError::new(
                ErrorKind::Other,
                "blocking task",
                e.to_string(),
            ))
        })?
        .map_err(ctx)
}

/// Bring an image's features to `wanted` as far as librbd allows (deep-flatten never comes
/// back), one feature at a time in dependency order. Features are re-read before each change,
/// so a re-run, or librbd's own implied changes (disabling object-map also drops fast-diff),
/// never cause a redundant call (librbd refuses to enable an enabled feature). Returns
/// whether anything had to change.
pub(crate) fn converge_features(
    ops: &dyn CephOps,
    image: &ImageSpec,
    wanted: Features,
) -> std::result::Result<bool, OpsError> {
    let (change, _) = plan_restore(ops.stat(image)?.features, wanted);
    if change.is_empty() {
        return Ok(false);
    }
    for f in change.disable.disable_order() {
        if ops.stat(image)?.features.contains(f) {
            ops.update_features(image, f, false)?;
        }
    }
    for f in change.enable.enable_order() {
        if !ops.stat(image)?.features.contains(f) {
            ops.update_features(image, f, true)?;
        }
    }
    Ok(true)
}

/// Bring image metadata [`crate::plan::JOURNAL_PAYLOAD_KEY`] of `image` to `wanted` (that
/// value, or no key for `None`). Returns whether it already was.
pub(crate) fn converge_journal_payload(
    ops: &dyn CephOps,
    image: &ImageSpec,
    wanted: Option<&str>,
) -> std::result::Result<bool, OpsError> {
    let key = crate::plan::JOURNAL_PAYLOAD_KEY;
    if ops.metadata_get(image, key)?.as_deref() == wanted {
        return Ok(true);
    }
    match wanted {
        Some(v) => ops.metadata_set(image, key, v)?,
        None => ops.metadata_remove(image, key)?,
    }
    Ok(false)
}

/// Remove an image this migration created (a partial or discarded copy). A killed run's
/// watch on it lingers until the OSD times it out (~30 s), so `EBUSY` is retried for up to
/// 90 s. An image that is already gone is fine (a re-run converges).
pub(crate) async fn remove_own_image(
    step: &str,
    dst: &Arc<dyn CephOps>,
    target: &ImageSpec,
    id: &str,
    events: &dyn EventSink,
) -> Result<()> {
    use backon::{ConstantBuilder, Retryable};
    let remove = || {
        let (d, t, id) = (dst.clone(), target.clone(), id.to_string());
        on_ceph(
            step,
            dst.name().to_string(),
            target.to_string(),
            move || match d.remove_image_with_id(&t, &id) {
                Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
                r => r,
            },
        )
    };
    let mut warned = false;
    remove
        .retry(
            ConstantBuilder::default()
                .with_delay(std::time::Duration::from_secs(1))
                .with_max_times(90),
        )
        .when(|e: &Error| matches!(e, Error::Ceph { source, .. } if source.kind == ErrorKind::Busy))
        .notify(|_, _| {
            if !warned {
                warned = true;
                events.emit(Event::Warning {
                    message: format!(
                        "{}:{target} (the copy of the interrupted run) is still watched by that run's dead client; waiting until Ceph expires the watch (about 30 s)",
                        dst.name()
                    ),
                });
            }
        })
        .await
}

/// Whether a step of `state` that changes the source image is still to run.
fn source_changes_left(state: &RunState) -> bool {
    state.plan.steps[state.next_step.min(state.plan.steps.len())..]
        .iter()
        .any(|s| match s {
            Step::EnablePoolMirroring
            | Step::SetJournalPayload { .. }
            | Step::EnableFeatures { .. }
            | Step::EnableMirroring { .. }
            | Step::DisableMirroring
            | Step::RestoreFeatures { .. }
            | Step::RestoreJournalPayload { .. }
            | Step::DemoteSource
            | Step::ReleaseSource
            | Step::DisableSourceMirroring
            | Step::RemoveMirrorSnapshots { .. }
            | Step::RestoreOriginalFeatures { .. }
            | Step::RemoveSourceMarker
            | Step::PromoteSource => true,
            Step::Preflight
            | Step::WaitForCutover { .. }
            | Step::PromoteReplica
            | Step::CloneReplica { .. }
            | Step::VerifyHandover { .. }
            | Step::FlattenCopy
            | Step::RemoveReplica { .. }
            | Step::DemoteReplica { .. }
            | Step::WaitForReplica
            | Step::CopyReplica
            | Step::SetCopyFeatures { .. }
            | Step::Verify
            | Step::GrowCopy { .. }
            | Step::AdoptVolume { .. }
            | Step::SnapshotAndProtect { .. }
            | Step::RegisterImage { .. }
            | Step::CheckMinDisk { .. }
            | Step::RemoveCopy { .. }
            | Step::UploadToImage { .. } => false,
        })
}

/// Put this run's [`preflight::SourceMarker`] on the source image before the run's first
/// change to it (when a change is still to come): the originals it records are the plan's.
/// A marker already there is kept when it is this run's (it holds the originals from
/// before the first change) and refused, naming its run, when it is another's.
pub(crate) async fn mark_source(
    src: &Arc<dyn CephOps>,
    state: &RunState,
    state_dir: &Path,
) -> Result<()> {
    if !source_changes_left(state) {
        return Ok(());
    }
    let m = state.plan.migration.clone();
    let ours = preflight::SourceMarker::new(&m, state_dir, &state.plan.facts);
    let s = src.clone();
    let found = on_ceph(
        "mark_source",
        src.name().to_string(),
        m.image.to_string(),
        move || preflight::read_marker_ops(s.as_ref(), &m),
    )
    .await?;
    match found {
        None => {
            let (s, image) = (src.clone(), state.plan.migration.image.clone());
            let text = serde_json::to_string(&ours).map_err(|e| Error::TaskFailed {
                step: "mark_source",
                reason: e.to_string(),
            })?;
            on_ceph(
                "mark_source",
                src.name().to_string(),
                image.to_string(),
                move || s.metadata_set(&image, preflight::SOURCE_MARKER_KEY, &text),
            )
            .await
        }
        Some(Ok(marker)) if marker.is_run_of(&state.plan.migration, state_dir) => Ok(()),
        Some(Ok(marker)) => Err(Error::SourceClaimed {
            cluster: src.name().to_string(),
            image: state.plan.migration.image.to_string(),
            holder: marker.describe(),
            migration: marker.migration,
        }),
        Some(Err(text)) => Err(Error::SourceMarkerUnreadable {
            cluster: src.name().to_string(),
            image: state.plan.migration.image.to_string(),
            text,
            key: preflight::SOURCE_MARKER_KEY,
        }),
    }
}

/// Remove this run's marker from the source image once no change to the source is left to
/// do or undo (the source is as it was, or stays as the migration left it for good). A
/// marker of another run, or none (a bundle run never sets one), is left as it is.
pub(crate) async fn unmark_source(
    src: &Arc<dyn CephOps>,
    state: &RunState,
    state_dir: &Path,
) -> Result<()> {
    if source_changes_left(state) && !state.aborted {
        return Ok(());
    }
    let (m, dir) = (state.plan.migration.clone(), state_dir.to_path_buf());
    let s = src.clone();
    on_ceph(
        "unmark_source",
        src.name().to_string(),
        m.image.to_string(),
        move || match preflight::read_marker_ops(s.as_ref(), &m) {
            Ok(Some(Ok(marker))) if marker.is_run_of(&m, &dir) => {
                s.metadata_remove(&m.image, preflight::SOURCE_MARKER_KEY)
            }
            Ok(_) => Ok(()),
            // the source image is gone (deleted after the migration): nothing to unmark
            Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        },
    )
    .await
}

/// Refuse a fresh plan whose copy target another migration recorded in `state_dir` still
/// claims (not aborted, its copy not handed to a cloud): one would find the other's copy
/// under its name. Nothing has been changed when this fails.
fn check_target_unclaimed(m: &VolumeMigration, state_dir: &Path) -> Result<()> {
    let target = m.target_lock_name();
    for (_, other) in crate::state::list(state_dir)? {
        let o = &other.plan.migration;
        if other.plan.id != m.id()
            && o.target_lock_name() == target
            && !other.aborted
            && !other.handed_to_cloud()
        {
            return Err(Error::TargetClaimed {
                target,
                other: other.plan.id.clone(),
                other_source: format!("{}:{}", o.source.name, o.image),
                other_outcome: other.outcome.clone(),
            });
        }
    }
    Ok(())
}

/// Read-only: run preflight and build the plan (or return the recorded one), for `--dry-run`.
///
/// Cancel safety: read only; dropping it at any await changes nothing (test:
/// `cancel_tests::read_only_calls_dropped_at_any_await_change_nothing`).
pub async fn plan_volume(
    m: &VolumeMigration,
    src: Arc<dyn CephOps>,
    dst: Arc<dyn CephOps>,
    state_dir: &Path,
    events: Arc<dyn EventSink>,
) -> Result<(Plan, Option<RunState>)> {
    plan(m, src, dst, &Clouds::default(), state_dir, events).await
}

/// [`plan_volume`] with the clouds: a plan that adopts the copy also runs the cloud part of
/// preflight (read only).
///
/// Cancel safety: read only; dropping it at any await changes nothing (test:
/// `cancel_tests::read_only_calls_dropped_at_any_await_change_nothing`).
pub async fn plan(
    m: &VolumeMigration,
    src: Arc<dyn CephOps>,
    dst: Arc<dyn CephOps>,
    clouds: &Clouds,
    state_dir: &Path,
    events: Arc<dyn EventSink>,
) -> Result<(Plan, Option<RunState>)> {
    if let Some(state) = crate::state::load(&StateFile::path_for(state_dir, &m.id()))? {
        if !state.aborted {
            return Ok((state.plan.clone(), Some(state)));
        }
    }
    let cloud = clouds.destination_for(m)?;
    if !m.origin.is_image() {
        if let Some(c) = &cloud {
            preflight::check_adoption(m, c.as_ref()).await?;
            preflight::check_registration(m, c.as_ref()).await?;
        }
        // the source image is made by the plan's first step: preflight reads it then
        return Ok((Plan::awaiting_upload(m.clone()), None));
    }
    let facts = preflight_all(m, src, dst, cloud.as_deref(), state_dir, events).await?;
    Ok((Plan::volume(m.clone(), facts), None))
}

/// The cloud part and the Ceph part of preflight (both read only), both run: their problems
/// make one refusal, so that a wrong Cinder host or cloud credentials do not hide a missing
/// source image or destination pool (and the other way round).
async fn preflight_all(
    m: &VolumeMigration,
    src: Arc<dyn CephOps>,
    dst: Arc<dyn CephOps>,
    cloud: Option<&dyn crate::cloud::CloudOps>,
    state_dir: &Path,
    events: Arc<dyn EventSink>,
) -> Result<crate::plan::SourceFacts> {
    let mut problems = Vec::new();
    if let Some(c) = cloud {
        let adoption = preflight::check_adoption(m, c).await.map(|_| ());
        let registration = preflight::check_registration(m, c).await;
        for checked in [adoption, registration] {
            match checked {
                Ok(()) => {}
                Err(Error::Preflight(p)) => problems.extend(p),
                Err(e) => return Err(e),
            }
        }
    }
    match read_source(m, src, dst, state_dir, events).await {
        Ok(facts) if problems.is_empty() => Ok(facts),
        Ok(_) => Err(Error::Preflight(problems)),
        Err(Error::Preflight(p)) => {
            problems.extend(p);
            Err(Error::Preflight(problems))
        }
        Err(e) => Err(e),
    }
}

/// Preflight of the source image (read only): the facts the plan is built from. A lost
/// state file's originals come from the source's marker.
async fn read_source(
    m: &VolumeMigration,
    src: Arc<dyn CephOps>,
    dst: Arc<dyn CephOps>,
    state_dir: &Path,
    events: Arc<dyn EventSink>,
) -> Result<crate::plan::SourceFacts> {
    let (m, dir) = (m.clone(), state_dir.to_path_buf());
    tokio::task::spawn_blocking(move || {
        // the marker, preflight and the originals all read the source through one handle
        // (see CephOps::pin_read_only)
        let _one_handle = src.pin_read_only(&m.image);
        // another run's marker first: its changes to the image are not this image's
        // problems (and its warnings would mislead), so the refusal names that run, and
        // lists what else the checks find
        if let Some(p) = crate::source_marker::claimed_by_another(&m, src.as_ref(), &dir)? {
            let mut problems = vec![p];
            if let Err(Error::Preflight(more)) =
                preflight::check_volume(&m, src.as_ref(), dst.as_ref(), &crate::event::NullSink)
            {
                problems.extend(more);
            }
            return Err(Error::Preflight(problems));
        }
        let now = preflight::check_volume(&m, src.as_ref(), dst.as_ref(), events.as_ref())?;
        preflight::originals(&m, src.as_ref(), &dir, now, events.as_ref())
    })
    .await
    .map_err(|e| Error::TaskFailed {
        step: "preflight",
        reason: e.to_string(),
    })?
}

/// Migrate one volume: preflight, plan, execute; or resume the recorded run of the same
/// migration. The state file lives in `state_dir`.
///
/// Cancel safety: safe to drop at any await (a `timeout`, a `select!` on Ctrl-C): every
/// finished step is recorded in the state file before the next starts and the lock goes with
/// the future, so the next call with the same migration resumes and ends as an undisturbed run;
/// a Ceph call in flight on a blocking thread still ends, and the resumed step repeats it
/// idempotently (test:
/// `cancel_tests::a_migration_dropped_at_any_await_is_finished_by_the_next_call`).
pub async fn migrate_volume(
    m: &VolumeMigration,
    src: Arc<dyn CephOps>,
    dst: Arc<dyn CephOps>,
    state_dir: &Path,
    opts: &RunOptions,
    events: Arc<dyn EventSink>,
) -> Result<Summary> {
    migrate(m, src, dst, &Clouds::default(), state_dir, opts, events).await
}

/// [`migrate_volume`] with the clouds, for plans that end in the destination cloud
/// (`m.adopt`, `m.register`) or start in the source cloud (the upload of a bootable volume,
/// see [`migrate_bootable`]). The cloud part of preflight runs before any Ceph change and
/// again on a resumed run until the cloud steps are done.
///
/// Cancel safety: as [`migrate_volume`]; a cloud step dropped after the cloud acted (its answer
/// lost) is found again by the migration's marker on the next call, never done twice (test:
/// `cancel_tests::a_migration_that_adopts_dropped_at_any_await_adopts_exactly_once`).
pub async fn migrate(
    m: &VolumeMigration,
    src: Arc<dyn CephOps>,
    dst: Arc<dyn CephOps>,
    clouds: &Clouds,
    state_dir: &Path,
    opts: &RunOptions,
    events: Arc<dyn EventSink>,
) -> Result<Summary> {
    let dst_cloud = clouds.destination_for(m)?;
    let file = StateFile::lock_migration(state_dir, m)?;
    let mut state = match recorded_run(&file, m, events.as_ref())? {
        Some(s) => {
            if !s.finished() {
                if let Some(c) = &dst_cloud {
                    if s.adopted.is_none() {
                        preflight::check_adoption(m, c.as_ref()).await?;
                    }
                    if s.registered.is_none() {
                        preflight::check_registration(m, c.as_ref()).await?;
                    }
                }
            }
            s
        }
        None => {
            let (src, dst, events) = (src.clone(), dst.clone(), events.clone());
            fresh_run(m, src, dst, dst_cloud.as_deref(), &file, state_dir, events).await?
        }
    };
    let already_done = state.finished();
    let exec = Executor::new(src.clone(), dst, dst_cloud, events, opts.clone())
        .with_source_cloud(clouds.source.clone());
    // a plan that makes its source image first (the upload) marks it once preflight has
    // planned the changes to it
    if state.plan.awaits_preflight() {
        exec.run_steps(&mut state, &file, |s| {
            matches!(s, Step::UploadToImage { .. } | Step::Preflight)
        })
        .await?;
    }
    mark_source(&src, &state, state_dir).await?;
    exec.run_steps(&mut state, &file, |_| true).await?;
    unmark_source(&src, &state, state_dir).await?;
    Ok(summary(&state, already_done))
}

/// The recorded, not aborted, run of `m` (read under its lock), or `None` for a fresh one.
/// Another request under the same id is refused.
fn recorded_run(
    file: &StateFile,
    m: &VolumeMigration,
    events: &dyn EventSink,
) -> Result<Option<RunState>> {
    let loaded = crate::state::load_checked(file.path())?;
    if let Some(why) = loaded.as_ref().and_then(|l| l.recovered.clone()) {
        events.emit(Event::Warning {
            message: format!("state file {}: {why}", file.path().display()),
        });
    }
    let Some(s) = loaded.map(|l| l.state) else {
        return Ok(None);
    };
    if s.aborted {
        events.emit(Event::Warning {
            message: format!(
                "migration {} was aborted earlier; starting a fresh plan",
                s.plan.id
            ),
        });
        return Ok(None);
    }
    if s.aborting() {
        return Err(Error::abort_unfinished(&s));
    }
    if s.plan.migration.as_requested() != m.as_requested() {
        return Err(Error::State {
            path: file.path().to_path_buf(),
            reason: format!(
                "a migration with this id but other options is recorded; continue it as recorded (`rbd-relay resume {id}`), undo it to start over with these options (`rbd-relay abort {id}`; once finished: `rbd-relay cleanup {id} --forget`), or choose another --name",
                id = s.plan.id
            ),
        });
    }
    if !s.finished() {
        events.emit(Event::Warning {
            message: format!(
                "resuming migration {} at step {} of {}",
                s.plan.id,
                s.next_step + 1,
                s.plan.steps.len()
            ),
        });
    }
    Ok(Some(s))
}

/// The first state of a fresh run, written: preflight (the cloud part, then the source
/// image's) and the plan. A plan that makes its source image first (the upload of a
/// bootable volume) starts at that step instead; its preflight step reads the image.
async fn fresh_run(
    m: &VolumeMigration,
    src: Arc<dyn CephOps>,
    dst: Arc<dyn CephOps>,
    dst_cloud: Option<&dyn crate::cloud::CloudOps>,
    file: &StateFile,
    state_dir: &Path,
    events: Arc<dyn EventSink>,
) -> Result<RunState> {
    check_target_unclaimed(m, state_dir)?;
    if !m.origin.is_image() {
        if let Some(c) = dst_cloud {
            preflight::check_registration(m, c).await?;
        }
        let mut s = RunState::new(Plan::awaiting_upload(m.clone()));
        s.upload_started = bootable::legacy_upload_started(state_dir, m);
        file.save(&s)?;
        bootable::forget_legacy_upload_mark(state_dir, m);
        return Ok(s);
    }
    events.emit(Event::StepStarted {
        index: 0,
        step: "preflight".into(),
        description: Step::Preflight.describe(m),
    });
    let t = Instant::now();
    let facts = preflight_all(m, src, dst, dst_cloud, state_dir, events.clone()).await?;
    let mut s = RunState::new(Plan::volume(m.clone(), facts));
    s.next_step = 1;
    s.step_seconds.push(t.elapsed().as_secs_f64());
    file.save(&s)?;
    events.emit(Event::StepDone {
        index: 0,
        step: "preflight".into(),
        seconds: t.elapsed().as_secs_f64(),
    });
    Ok(s)
}

/// What a run of `state` reports.
fn summary(state: &RunState, already_done: bool) -> Summary {
    let p = &state.plan;
    let lost = p
        .steps
        .iter()
        .find_map(|s| {
            if let Step::RestoreFeatures { lost, .. } = s {
                Some(*lost)
            } else {
                None
            }
        })
        .unwrap_or_default();
    Summary {
        id: p.id.clone(),
        source: format!("{}:{}", p.migration.source.name, p.migration.image),
        copy: format!(
            "{}:{}",
            p.migration.destination.name,
            p.migration.copy_target()
        ),
        bytes: p.facts.size,
        sha256: state.copy_digest.clone().unwrap_or_default(),
        steps: p
            .steps
            .iter()
            .map(|s| s.kind().to_string())
            .zip(state.step_seconds.iter().copied())
            .collect(),
        lost_features: lost,
        already_done,
        volume: state.adopted.clone(),
        image: state.registered.clone(),
        grown_to: p.grown_to(),
    }
}

/// Remove user snapshot `snap` of `image` if it is there, unprotecting it first: the
/// handover snapshot of a replica (the cutover's roll back, the undo, the replica's removal).
pub(crate) fn remove_snapshot_if_there(
    ops: &dyn CephOps,
    image: &ImageSpec,
    snap: &str,
) -> std::result::Result<(), OpsError> {
    if let Some(s) = ops.snapshots(image)?.into_iter().find(|s| s.name == snap) {
        if s.protected {
            ops.unprotect_snapshot(image, snap)?;
        }
        ops.remove_snapshot(image, snap)?;
    }
    Ok(())
}

/// Remove the replica `image` this migration promoted (its id is `replica_id`, checked by
/// the caller): mirroring of it off, the handover snapshot `snap` and the copies of the
/// source's own snapshots (rbd-mirror replicated them; an image with snapshots cannot be
/// removed) gone, then the image, by id. Used once the copy no longer hangs from it, and
/// for a replica promoted and demoted again (see [`remove_demoted_replica`]).
pub(crate) fn remove_promoted_replica(
    d: &dyn CephOps,
    image: &ImageSpec,
    replica_id: &str,
    snap: &str,
) -> std::result::Result<(), OpsError> {
    let mi = d.mirror_image(image)?;
    if mi.state != MirrorImageState::Disabled {
        d.disable_mirroring(image, !mi.primary)?;
    }
    remove_snapshot_if_there(d, image, snap)?;
    for s in d.snapshots(image)? {
        if s.namespace == SnapshotNamespace::User {
            if s.protected {
                d.unprotect_snapshot(image, &s.name)?;
            }
            d.remove_snapshot(image, &s.name)?;
        }
    }
    d.remove_image_with_id(image, replica_id)
}

/// After a cutover is undone (the replica this migration promoted demoted again, the source
/// primary again): remove that replica if it is the one this migration recorded
/// (`replica_id`). rbd-mirror never takes back a replica that was primary: demoted again it
/// stays in split-brain ("error bootstrapping replay"), is never replayed, and is not
/// removed when the source's mirroring is disabled. Only once the source is primary again:
/// with the source demoted, a daemon mirroring towards the source could take the replica's
/// removal for the primary's and remove the source. rbd-mirror opens the demoted replica
/// for a moment (its bootstrap, which finds the split-brain): a removal refused as busy is
/// tried again for up to [`DEMOTED_REPLICA_BUSY_FOR`]. Returns whether it removed it; while
/// the source stays mirrored, rbd-mirror then syncs a new replica from it.
pub(crate) fn remove_demoted_replica(
    d: &dyn CephOps,
    image: &ImageSpec,
    replica_id: &str,
    snap: &str,
) -> std::result::Result<bool, OpsError> {
    let started = Instant::now();
    loop {
        if !d.image_exists(image)? || d.stat(image)?.id != replica_id {
            return Ok(false);
        }
        if d.mirror_image(image)?.primary {
            return Ok(false);
        }
        match remove_promoted_replica(d, image, replica_id, snap) {
            Ok(()) => return Ok(true),
            // rbd-mirror removed it meanwhile
            Err(e) if e.kind == ErrorKind::NotFound => return Ok(false),
            Err(e) if e.kind == ErrorKind::Busy && started.elapsed() < DEMOTED_REPLICA_BUSY_FOR => {
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Once the source's mirroring is disabled (abort): the replica rbd-mirror will not remove.
/// A replica that cannot be replayed (split-brain after a demotion and promotion of the
/// source, or a promotion of the replica; Ceph 16.2 reports "error bootstrapping replay")
/// is never removed by rbd-mirror when the source's mirroring is disabled. So: the image
/// under the replica's name, not primary, identified as this migration's replica by the
/// source's mirror global id (read before the disable) or by the id recorded before the
/// source's demotion (and again at the promotion), is watched for up to [`ORPHANED_REPLICA_WATCH`]: gone (rbd-mirror removed it)
/// is the end; in error for rbd-mirror (its status) and open by nobody, it is removed here.
/// A replica rbd-mirror replays is left to rbd-mirror (it removes it), so the two never
/// race. Returns whether it removed it.
pub(crate) fn remove_orphaned_replica(
    d: &dyn CephOps,
    image: &ImageSpec,
    source_global_id: Option<&str>,
    replica_id: Option<&str>,
) -> std::result::Result<bool, OpsError> {
    let started = Instant::now();
    // one look: Some(removed) ends the watch; rbd-mirror may remove the image between any
    // two calls (NotFound: gone, the end)
    let look = || -> std::result::Result<Option<bool>, OpsError> {
        if !d.image_exists(image)? {
            return Ok(Some(false));
        }
        let mi = d.mirror_image(image)?;
        let id = d.stat(image)?.id;
        let ours = source_global_id
            .is_some_and(|g| mi.state != MirrorImageState::Disabled && mi.global_id == g)
            || replica_id.is_some_and(|r| r == id);
        if mi.primary || !ours {
            return Ok(Some(false));
        }
        let unreplayable = d
            .mirror_status(image)?
            .is_some_and(|st| st.state == crate::status::MirrorState::Error);
        if unreplayable && d.watchers(image)?.is_empty() {
            match remove_promoted_replica(d, image, &id, handover_snapshot()) {
                Ok(()) => return Ok(Some(true)),
                Err(e) if e.kind == ErrorKind::Busy => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    };
    loop {
        match look() {
            Ok(Some(removed)) => return Ok(removed),
            Ok(None) => {}
            Err(e) if e.kind == ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        }
        if started.elapsed() >= ORPHANED_REPLICA_WATCH {
            return Ok(false);
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// How long [`remove_orphaned_replica`] watches a replica that rbd-mirror still has open.
pub(crate) const ORPHANED_REPLICA_WATCH: std::time::Duration = std::time::Duration::from_secs(15);

/// How long [`remove_demoted_replica`] tries again while rbd-mirror has the replica open.
pub(crate) const DEMOTED_REPLICA_BUSY_FOR: std::time::Duration = std::time::Duration::from_secs(15);

/// Record the id of the image a copy or clone just created in the state file at `path`
/// (when the run has one), before anything is written into the image: a later run then
/// knows the image under the copy name is this migration's.
pub(crate) fn record_created_id(
    path: Option<&Path>,
    id: &str,
) -> std::result::Result<(), OpsError> {
    let record = || -> Result<()> {
        let Some(path) = path else {
            return Ok(());
        };
        if let Some(mut state) = crate::state::load(path)? {
            state.copy_id = Some(id.to_string());
            crate::state::save_to(path, &state)?;
        }
        Ok(())
    };
    record().map_err(|e| OpsError::new(ErrorKind::Other, "record created image id", e.to_string()))
}

/// What a sweep of the source's snapshots keeps: what was there before the migration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeptSnapshots<'a> {
    /// Ids of the mirror snapshots from before the migration.
    pub(crate) mirror_ids: &'a [u64],
    /// Names of the user snapshots from before the migration.
    pub(crate) user_names: &'a [String],
}

impl<'a> KeptSnapshots<'a> {
    /// What preflight recorded in `facts`.
    pub(crate) fn of(facts: &'a crate::plan::SourceFacts) -> Self {
        KeptSnapshots {
            mirror_ids: &facts.mirror_snapshots_before,
            user_names: &facts.snapshots,
        }
    }
}

/// Remove the mirror snapshots of `image` whose ids are not kept (those from before the
/// migration) and, when the caller knows mirroring of `image` is off (`mirroring_off`), the
/// rbd-mirror sync points (user snapshots named as the daemon names them,
/// [`crate::ops::is_sync_point_name`]) that were not there before; returns how many went.
///
/// A journal-mode image sync records its sync point in the journal client and then creates
/// the snapshot; disabling mirroring removes the recorded ones, so a disable that lands
/// between the two (an abort mid-sync) leaves the snapshot behind (seen in CI: the source
/// then could not be removed, "image has snapshots"). No snapshot a migration caused is
/// left.
pub(crate) fn remove_mirror_snapshots_except(
    ops: &dyn CephOps,
    image: &ImageSpec,
    kept: KeptSnapshots<'_>,
    mirroring_off: bool,
) -> std::result::Result<usize, OpsError> {
    let mut removed = 0;
    for s in ops.snapshots(image)? {
        let ours = match s.namespace {
            crate::ops::SnapshotNamespace::Mirror { .. } => !kept.mirror_ids.contains(&s.id),
            // a sync point in use while mirroring is on is the daemon's, never touched
            crate::ops::SnapshotNamespace::User => {
                mirroring_off
                    && crate::ops::is_sync_point_name(&s.name)
                    && !kept.user_names.contains(&s.name)
            }
            crate::ops::SnapshotNamespace::Other => false,
        };
        if ours {
            ops.remove_snapshot_by_id(image, s.id)?;
            removed += 1;
        }
    }
    Ok(removed)
}
