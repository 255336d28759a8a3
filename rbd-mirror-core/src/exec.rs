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

use crate::cloud::{
    AdoptSpec, AdoptedVolume, CloudError, CloudImage, CloudOps, RegisterSpec, MARKER_KEY,
};
use crate::error::{Error, Result};
use crate::event::{Event, EventSink, ProgressInfo, RateMeter};
use crate::features::{plan_restore, Features, MirrorImageMode};
use crate::ops::{
    CephOps, ErrorKind, MirrorImageState, OpsError, PoolMirrorMode, SnapshotNamespace,
};
use crate::plan::{Plan, Step, VolumeMigration};
use crate::preflight;
use crate::spec::ImageSpec;
use crate::state::{RunState, StateFile};
use crate::wait::{self, WaitOptions};

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
            _ => Err(Error::Unsafe(
                "a bootable migration needs the source cloud (--source-cloud) and the destination cloud (--os-cloud)".into(),
            )),
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
            (Some(cloud), None) => Err(Error::Unsafe(format!(
                "the plan hands the copy to cloud '{cloud}', but no cloud was given (--os-cloud)"
            ))),
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
            | Step::EnableFeatures { .. }
            | Step::EnableMirroring { .. }
            | Step::DisableMirroring
            | Step::RestoreFeatures { .. } => true,
            Step::Preflight
            | Step::WaitForReplica
            | Step::CopyReplica
            | Step::SetCopyFeatures { .. }
            | Step::Verify
            | Step::AdoptVolume { .. }
            | Step::SnapshotAndProtect { .. }
            | Step::RegisterImage { .. }
            | Step::CheckMinDisk { .. } => false,
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
            let text = serde_json::to_string(&ours)
                .map_err(|e| Error::Unsafe(format!("cannot write the source marker: {e}")))?;
            on_ceph(
                "mark_source",
                src.name().to_string(),
                image.to_string(),
                move || s.metadata_set(&image, preflight::SOURCE_MARKER_KEY, &text),
            )
            .await
        }
        Some(Ok(marker)) if marker.is_run_of(&state.plan.migration, state_dir) => Ok(()),
        Some(Ok(marker)) => Err(Error::Unsafe(format!(
            "{}:{} is being migrated by {}; continue or abort that migration where it runs (rbd-relay resume/abort {}): two runs must not change one image",
            src.name(),
            state.plan.migration.image,
            marker.describe(),
            marker.migration
        ))),
        Some(Err(text)) => Err(Error::Unsafe(format!(
            "{}:{} carries an unreadable rbd-relay marker ({text}); look at it with `rbd --cluster {} image-meta get {} {}`",
            src.name(),
            state.plan.migration.image,
            src.name(),
            state.plan.migration.image,
            preflight::SOURCE_MARKER_KEY
        ))),
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
            return Err(Error::Unsafe(format!(
                "the copy target {target} is claimed by migration {} (of {}:{}, {}); two migrations must not share a copy target: give this one another --name or --into, or abort that one first (`rbd-relay abort {}`)",
                other.plan.id, o.source.name, o.image, other.outcome, other.plan.id
            )));
        }
    }
    Ok(())
}

/// The refusal of an image under the copy name that this migration did not create (its id
/// is not the recorded one): it may be another migration's copy, even a verified one, so it
/// is never removed.
fn not_our_copy(
    cluster: &str,
    target: &ImageSpec,
    found: &str,
    id: &str,
    state: &RunState,
) -> Error {
    let recorded = match &state.copy_id {
        Some(ours) => format!("this migration's copy had id {ours}"),
        None => "this migration recorded no copy of its own".to_string(),
    };
    Error::Unsafe(format!(
        "{cluster}:{target} (image id {found}) was not created by migration {id} ({recorded}); it may be another migration's copy, so it is left alone: if it is not wanted, remove or rename it yourself (rbd --cluster {cluster} rm {target}), or give this migration another --name or --into, then re-run"
    ))
}

/// Read-only: run preflight and build the plan (or return the recorded one), for `--dry-run`.
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
    if let Some(c) = clouds.destination_for(m)? {
        preflight::check_adoption(m, c.as_ref()).await?;
        preflight::check_registration(m, c.as_ref()).await?;
    }
    let (mm, dir) = (m.clone(), state_dir.to_path_buf());
    let facts = tokio::task::spawn_blocking(move || {
        let now = preflight::check_volume(&mm, src.as_ref(), dst.as_ref(), events.as_ref())?;
        // as the run would: a lost state file's originals come from the source's marker
        preflight::originals(&mm, src.as_ref(), &dir, now, events.as_ref())
    })
    .await
    .map_err(|e| Error::Unsafe(format!("preflight task failed: {e}")))??;
    Ok((Plan::volume(m.clone(), facts), None))
}

/// Migrate one volume: preflight, plan, execute; or resume the recorded run of the same
/// migration. The state file lives in `state_dir`.
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
/// (`m.adopt`). The cloud part of preflight runs before any Ceph change and again on a
/// resumed run until the adoption is done.
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
    let loaded = crate::state::load_checked(file.path())?;
    if let Some(why) = loaded.as_ref().and_then(|l| l.recovered.clone()) {
        events.emit(Event::Warning {
            message: format!("state file {}: {why}", file.path().display()),
        });
    }
    let recorded = match loaded.map(|l| l.state) {
        Some(s) if s.aborted => {
            events.emit(Event::Warning {
                message: format!(
                    "migration {} was aborted earlier; starting a fresh plan",
                    s.plan.id
                ),
            });
            None
        }
        other => other,
    };
    let mut state = match recorded {
        Some(s) => {
            if &s.plan.migration != m {
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
            check_target_unclaimed(m, state_dir)?;
            events.emit(Event::StepStarted {
                index: 0,
                step: "preflight".into(),
                description: Step::Preflight.describe(m),
            });
            let t = Instant::now();
            if let Some(c) = &dst_cloud {
                preflight::check_adoption(m, c.as_ref()).await?;
                preflight::check_registration(m, c.as_ref()).await?;
            }
            let (s2, d2, e2, mm) = (src.clone(), dst.clone(), events.clone(), m.clone());
            let dir = state_dir.to_path_buf();
            let facts = tokio::task::spawn_blocking(move || {
                let now = preflight::check_volume(&mm, s2.as_ref(), d2.as_ref(), e2.as_ref())?;
                preflight::originals(&mm, s2.as_ref(), &dir, now, e2.as_ref())
            })
            .await
            .map_err(|e| Error::Unsafe(format!("preflight task failed: {e}")))??;
            let mut s = RunState::new(Plan::volume(m.clone(), facts));
            s.next_step = 1;
            s.step_seconds.push(t.elapsed().as_secs_f64());
            file.save(&s)?;
            events.emit(Event::StepDone {
                index: 0,
                step: "preflight".into(),
                seconds: t.elapsed().as_secs_f64(),
            });
            s
        }
    };
    let already_done = state.finished();
    mark_source(&src, &state, state_dir).await?;
    let exec = Executor::new(src.clone(), dst, dst_cloud, events, opts.clone());
    exec.run_steps(&mut state, &file, |_| true).await?;
    unmark_source(&src, &state, state_dir).await?;
    let p = &state.plan;
    let lost = p
        .steps
        .iter()
        .find_map(|s| match s {
            Step::RestoreFeatures { lost, .. } => Some(*lost),
            _ => None,
        })
        .unwrap_or_default();
    Ok(Summary {
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
    })
}

/// Runs the steps of a recorded plan (shared by [`migrate`] and [`crate::cleanup`]).
pub(crate) struct Executor {
    src: Arc<dyn CephOps>,
    dst: Arc<dyn CephOps>,
    dst_cloud: Option<Arc<dyn CloudOps>>,
    events: Arc<dyn EventSink>,
    opts: RunOptions,
    /// The source digest, computed on the source cluster while the copy is made on the
    /// destination; `verify` then only has to read the copy.
    early_source_digest: std::sync::Mutex<Option<Background>>,
    /// The copy, once started: with the wait in snapshot mode (it trails rbd-mirror's
    /// sync), else by the copy step.
    copy: std::sync::Mutex<Option<Background>>,
    /// The copy's digest as read back while it was written; `verify` uses it instead of
    /// reading the copy again.
    early_copy_digest: std::sync::Mutex<Option<String>>,
    /// The id of the copy this run created, set by the copy's thread as soon as the image
    /// exists (and written to the state file there and then); every later save of the
    /// state by this executor carries it, under this same lock, so no save drops it.
    created_copy_id: Arc<std::sync::Mutex<Option<String>>>,
}

/// Work of a run on a blocking thread beside its steps: the copy on the destination (see
/// [`CephOps::copy_trailing`]) or the source's digest. Dropping it (the run ends without
/// using it) asks the thread to stop.
struct Background {
    task: tokio::task::JoinHandle<Result<String>>,
    /// Checked by the thread between pieces.
    cancel: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Background {
    fn drop(&mut self) {
        self.cancel
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Executor {
    /// An executor over the two clusters (and the destination cloud, for cloud steps).
    pub(crate) fn new(
        src: Arc<dyn CephOps>,
        dst: Arc<dyn CephOps>,
        dst_cloud: Option<Arc<dyn CloudOps>>,
        events: Arc<dyn EventSink>,
        opts: RunOptions,
    ) -> Self {
        Self {
            src,
            dst,
            dst_cloud,
            events,
            opts,
            early_source_digest: std::sync::Mutex::new(None),
            copy: std::sync::Mutex::new(None),
            early_copy_digest: std::sync::Mutex::new(None),
            created_copy_id: Arc::default(),
        }
    }

    /// Run the plan's steps from `state.next_step` on while `take` accepts the next one,
    /// saving the state after every step (and the failure when one fails).
    pub(crate) async fn run_steps(
        &self,
        state: &mut RunState,
        file: &StateFile,
        take: impl Fn(&Step) -> bool,
    ) -> Result<()> {
        while !state.finished() && take(&state.plan.steps[state.next_step]) {
            let index = state.next_step;
            let step = state.plan.steps[index].clone();
            self.events.emit(Event::StepStarted {
                index,
                step: step.kind().into(),
                description: step.describe(&state.plan.migration),
            });
            let t = Instant::now();
            let result = self.run_step(&step, index, state, file).await;
            if let Err(e) = result {
                state.outcome = format!("failed at {}: {e}", step.kind());
                let _ = self.save(state, file);
                return Err(e);
            }
            state.next_step = index + 1;
            state.step_seconds.push(t.elapsed().as_secs_f64());
            if state.finished() {
                state.outcome = "finished".into();
            }
            self.save(state, file)?;
            self.events.emit(Event::StepDone {
                index,
                step: step.kind().into(),
                seconds: t.elapsed().as_secs_f64(),
            });
        }
        Ok(())
    }

    fn skipped(&self, index: usize, step: &Step, reason: &str) {
        self.events.emit(Event::StepSkipped {
            index,
            step: step.kind().into(),
            reason: reason.into(),
        });
    }

    async fn run_step(
        &self,
        step: &Step,
        index: usize,
        state: &mut RunState,
        file: &StateFile,
    ) -> Result<()> {
        let m = state.plan.migration.clone();
        let kind = step.kind();
        let (src, dst) = (self.src.clone(), self.dst.clone());
        match step {
            Step::Preflight => Ok(()),
            Step::EnablePoolMirroring => {
                for c in [src, dst] {
                    let pool = m.image.pool.clone();
                    let c2 = c.clone();
                    on_ceph(
                        kind,
                        c.name().to_string(),
                        pool.clone().to_string(),
                        move || {
                            if c2.pool_mirror_mode(&pool)? == PoolMirrorMode::Disabled {
                                c2.set_pool_mirror_mode(&pool, PoolMirrorMode::Image)?;
                            }
                            Ok(())
                        },
                    )
                    .await?;
                }
                Ok(())
            }
            Step::EnableFeatures { change } => {
                let wanted = change.apply(state.plan.facts.features);
                let image = m.image.clone();
                let changed = on_ceph(
                    kind,
                    src.name().to_string(),
                    m.image.to_string(),
                    move || converge_features(src.as_ref(), &image, wanted),
                )
                .await?;
                if !changed {
                    self.skipped(index, step, "features already set");
                }
                Ok(())
            }
            Step::EnableMirroring { mode } => {
                let mode = *mode;
                let image = m.image.clone();
                let already = on_ceph(
                    kind,
                    src.name().to_string(),
                    m.image.to_string(),
                    move || {
                        let mi = src.mirror_image(&image)?;
                        if mi.state == MirrorImageState::Enabled {
                            return Ok(true);
                        }
                        src.enable_mirroring(&image, mode)?;
                        Ok(false)
                    },
                )
                .await?;
                if already {
                    self.skipped(index, step, "mirroring already enabled");
                }
                Ok(())
            }
            Step::WaitForReplica => {
                let copy_next = state.plan.steps.get(index + 1) == Some(&Step::CopyReplica);
                if copy_next && !m.allow_live {
                    // the image is not in use, so its content is final: hash it while
                    // rbd-mirror maps the image (about 2 s of waiting) and syncs it
                    self.start_source_digest(&m);
                    if m.mode == MirrorImageMode::Snapshot {
                        self.start_trailing_copy(&m, state, file).await?;
                    }
                }
                let waited = wait::wait_for_replica(
                    src,
                    dst,
                    &m.image,
                    &m.replica(),
                    m.mode,
                    state.plan.facts.objects(),
                    &self.opts.wait,
                    self.events.as_ref(),
                )
                .await;
                if waited.is_err() {
                    self.stop_copy().await;
                }
                waited?;
                Ok(())
            }
            Step::CopyReplica => {
                let running = self.copy.lock().map(|mut c| c.take()).unwrap_or(None);
                let running = match running {
                    Some(r) => r,
                    None => {
                        self.prepare_copy(&m, state, file).await?;
                        // the replica is complete: everything is final
                        self.spawn_copy(&m, file.path(), Box::new(|| Ok(Some(u64::MAX))))
                    }
                };
                let digest = self.finish_copy(running).await?;
                if let Ok(mut slot) = self.early_copy_digest.lock() {
                    *slot = Some(digest);
                }
                Ok(())
            }
            Step::SetCopyFeatures { features } => {
                let wanted = *features;
                let target = m.copy_target();
                let t = target.clone();
                on_ceph(
                    kind,
                    dst.name().to_string(),
                    target.to_string(),
                    move || converge_features(dst.as_ref(), &t, wanted).map(|_| ()),
                )
                .await
            }
            Step::Verify => self.verify(&m, state, file).await,
            Step::DisableMirroring => {
                if !state.verified() {
                    return Err(Error::Unsafe(
                        "the copy has not been verified; mirroring stays on so the replica is kept"
                            .into(),
                    ));
                }
                let image = m.image.clone();
                let before = state.plan.facts.mirror_snapshots_before.clone();
                let already = on_ceph(
                    kind,
                    src.name().to_string(),
                    m.image.to_string(),
                    move || {
                        let mi = src.mirror_image(&image)?;
                        let already = mi.state == MirrorImageState::Disabled;
                        if !already {
                            src.disable_mirroring(&image, false)?;
                        }
                        // no mirror snapshot made by this migration is left behind
                        for s in src.snapshots(&image)? {
                            if matches!(s.namespace, SnapshotNamespace::Mirror { .. })
                                && !before.contains(&s.id)
                            {
                                src.remove_snapshot_by_id(&image, s.id)?;
                            }
                        }
                        Ok(already)
                    },
                )
                .await?;
                if already {
                    self.skipped(index, step, "mirroring already disabled");
                }
                Ok(())
            }
            Step::RestoreFeatures { .. } => {
                let original = state.plan.facts.features;
                let image = m.image.clone();
                on_ceph(
                    kind,
                    src.name().to_string(),
                    m.image.to_string(),
                    move || converge_features(src.as_ref(), &image, original).map(|_| ()),
                )
                .await
            }
            Step::AdoptVolume { target, name, .. } => {
                self.adopt(step, index, state, file, target.clone(), name.clone())
                    .await
            }
            Step::SnapshotAndProtect { snap } => {
                if !state.verified() {
                    return Err(Error::Unsafe(
                        "the copy has not been verified; it is not handed to Glance".into(),
                    ));
                }
                let (d, t, snap) = (dst.clone(), m.copy_target(), snap.clone());
                let already = on_ceph(
                    kind,
                    dst.name().to_string(),
                    m.copy_target().to_string(),
                    move || {
                        let snaps = d.snapshots(&t)?;
                        let found = snaps
                            .iter()
                            .find(|s| s.name == snap && s.namespace == SnapshotNamespace::User);
                        let already = found.is_some_and(|s| s.protected);
                        if found.is_none() {
                            d.create_snapshot(&t, &snap)?;
                        }
                        if !already {
                            d.protect_snapshot(&t, &snap)?;
                        }
                        Ok(already)
                    },
                )
                .await?;
                if already {
                    self.skipped(index, step, "snapshot already there and protected");
                }
                Ok(())
            }
            Step::RegisterImage { name, .. } => {
                self.register(step, index, state, file, name.clone()).await
            }
            Step::CheckMinDisk { min_gib } => {
                let Some(image) = state.registered.clone() else {
                    return Err(Error::Unsafe(
                        "no registered image recorded; re-run to register it first".into(),
                    ));
                };
                let cloud = self.cloud()?;
                let now = cloud
                    .get_image(&image.id)
                    .await
                    .map_err(cloud_err(kind, cloud.as_ref()))?;
                if now.min_disk_gib < *min_gib {
                    return Err(Error::Unsafe(format!(
                        "image {} in cloud {} has min_disk {} GiB, less than the source volume's {min_gib} GiB: instances booted from it could get a smaller disk; set it with: openstack image set --min-disk {min_gib} {}",
                        image.id,
                        cloud.name(),
                        now.min_disk_gib,
                        image.id
                    )));
                }
                state.registered = Some(now);
                Ok(())
            }
        }
    }

    fn cloud(&self) -> Result<Arc<dyn CloudOps>> {
        self.dst_cloud.clone().ok_or_else(|| {
            Error::Unsafe(
                "this step needs the destination cloud, but no cloud was given (--os-cloud)".into(),
            )
        })
    }

    /// Register the protected snapshot of the verified copy in the destination Glance.
    /// Idempotent: an image an interrupted run registered (found by the marker property) is
    /// taken over.
    async fn register(
        &self,
        step: &Step,
        index: usize,
        state: &mut RunState,
        file: &StateFile,
        name: String,
    ) -> Result<()> {
        let kind = step.kind();
        if let Some(i) = &state.registered {
            self.skipped(
                index,
                step,
                &format!("already registered as image {}", i.id),
            );
            return Ok(());
        }
        if !state.verified() {
            return Err(Error::Unsafe(
                "the copy has not been verified; it is not handed to Glance".into(),
            ));
        }
        let cloud = self.cloud()?;
        let m = state.plan.migration.clone();
        let Some(r) = m.register.clone() else {
            return Err(Error::Unsafe("the plan has no registration".into()));
        };
        let marker = state.plan.id.clone();
        if state.register_started {
            let found = cloud
                .find_images(&marker)
                .await
                .map_err(cloud_err(kind, cloud.as_ref()))?;
            if let Some(i) = found.iter().find(|i| i.status == "active") {
                self.skipped(
                    index,
                    step,
                    &format!("the interrupted run registered it as image {}", i.id),
                );
                state.registered = Some(i.clone());
                return Ok(());
            }
            if let Some(i) = found.first() {
                return Err(Error::Unsafe(format!(
                    "cloud {} has image {} (status {}) from the interrupted registration; check it (deleting an image with an rbd:// location deletes its data: remove the location first), then re-run",
                    cloud.name(),
                    i.id,
                    i.status
                )));
            }
        }
        let d = self.dst.clone();
        let fsid = on_ceph(
            kind,
            self.dst.name().to_string(),
            "fsid".into(),
            move || d.fsid(),
        )
        .await?;
        state.register_started = true;
        self.save(state, file)?;
        let target = m.copy_target();
        let mut properties = std::collections::BTreeMap::new();
        properties.insert(MARKER_KEY.to_string(), marker);
        let spec = RegisterSpec {
            name,
            fsid,
            pool: target.pool.pool.clone(),
            image: target.image.clone(),
            snapshot: r.snapshot.clone(),
            min_disk_gib: r.min_disk_gib,
            properties,
        };
        let i = cloud
            .register_image(&spec)
            .await
            .map_err(cloud_err(kind, cloud.as_ref()))?;
        self.events.emit(Event::Progress(ProgressInfo::done(
            "register",
            format!(
                "image {} is {} (min_disk {} GiB), at rbd://{}/{}/{}/{}",
                i.id, i.status, i.min_disk_gib, spec.fsid, spec.pool, spec.image, spec.snapshot
            ),
        )));
        state.registered = Some(i);
        Ok(())
    }

    /// Adopt the verified copy in the destination cloud. Idempotent: a volume an interrupted
    /// run adopted (found by the marker in its metadata) is taken over; one that failed is
    /// forgotten again before a new attempt.
    async fn adopt(
        &self,
        step: &Step,
        index: usize,
        state: &mut RunState,
        file: &StateFile,
        target: crate::cloud::AdoptTarget,
        name: Option<String>,
    ) -> Result<()> {
        let kind = step.kind();
        if let Some(v) = &state.adopted {
            self.skipped(index, step, &format!("already adopted as volume {}", v.id));
            return Ok(());
        }
        if !state.verified() {
            return Err(Error::Unsafe(
                "the copy has not been verified; it is not handed to Cinder".into(),
            ));
        }
        let Some(cloud) = self.dst_cloud.clone() else {
            return Err(Error::Unsafe(
                "this step adopts the copy in the destination cloud, but no cloud was given (--os-cloud)".into(),
            ));
        };
        let m = state.plan.migration.clone();
        let marker = state.plan.id.clone();
        if state.adopt_started {
            if let Some(v) = self.find_adopted(cloud.as_ref(), kind, &marker).await? {
                self.skipped(
                    index,
                    step,
                    &format!("the interrupted run adopted it as volume {}", v.id),
                );
                state.adopted = Some(v);
                return Ok(());
            }
        }
        let target_image = m.copy_target();
        let (d, t) = (self.dst.clone(), target_image.clone());
        let exists = on_ceph(
            kind,
            self.dst.name().to_string(),
            target_image.to_string(),
            move || d.image_exists(&t),
        )
        .await?;
        if !exists {
            return Err(Error::Unsafe(format!(
                "{}:{target_image} is gone and cloud {} has no volume adopted by migration {marker}; check the pool (was it renamed or managed by hand?)",
                self.dst.name(),
                cloud.name()
            )));
        }
        state.adopt_started = true;
        self.save(state, file)?;
        let mut metadata = std::collections::BTreeMap::new();
        metadata.insert(MARKER_KEY.to_string(), marker);
        metadata.insert(
            "rbd_relay_source".to_string(),
            format!("{}:{}", m.source.name, m.image),
        );
        let spec = AdoptSpec {
            target,
            rbd_image: m.dest_name.clone(),
            name,
            bootable: m.adopt.as_ref().is_some_and(|a| a.bootable),
            metadata,
        };
        let v = cloud
            .adopt(&spec)
            .await
            .map_err(cloud_err(kind, cloud.as_ref()))?;
        self.events.emit(Event::Progress(ProgressInfo::done(
            "adopt",
            format!(
                "volume {} ({} GiB) is {}, backed by {}/{}",
                v.id, v.size_gib, v.status, m.into, v.rbd_image
            ),
        )));
        state.adopted = Some(v);
        Ok(())
    }

    /// The volume an earlier run adopted: an available one is returned; failed records are
    /// forgotten (the RBD image stays); one still being managed is waited for.
    async fn find_adopted(
        &self,
        cloud: &dyn CloudOps,
        kind: &str,
        marker: &str,
    ) -> Result<Option<AdoptedVolume>> {
        let deadline = Instant::now() + std::time::Duration::from_secs(600);
        loop {
            let found = cloud
                .find_adopted(marker)
                .await
                .map_err(cloud_err(kind, cloud))?;
            if let Some(v) = found.iter().find(|v| v.status == "available") {
                return Ok(Some(v.clone()));
            }
            let mut pending = false;
            for v in &found {
                if v.status.starts_with("error") {
                    self.events.emit(Event::Warning {
                        message: format!(
                            "volume {} of the interrupted adoption ended in '{}'; forgetting its record (the RBD image stays) and adopting again",
                            v.id, v.status
                        ),
                    });
                    cloud
                        .forget_volume(&v.id)
                        .await
                        .map_err(cloud_err(kind, cloud))?;
                } else {
                    pending = true;
                }
            }
            if !pending {
                return Ok(None);
            }
            if Instant::now() > deadline {
                return Err(Error::Unsafe(format!(
                    "cloud {} still has volume(s) of migration {marker} being adopted after 10 minutes: {}; check them, then re-run",
                    cloud.name(),
                    found
                        .iter()
                        .map(|v| format!("{} ({})", v.id, v.status))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        }
    }

    /// Save the state, with the copy's id when the copy has just recorded one (see
    /// [`Executor::created_copy_id`]).
    fn save(&self, state: &mut RunState, file: &StateFile) -> Result<()> {
        let recorded = self.created_copy_id.lock();
        if let Ok(Some(id)) = recorded.as_deref() {
            state.copy_id = Some(id.clone());
        }
        file.save(state)
    }

    /// Make room for the copy: a copy left by an interrupted run of this migration is
    /// removed (it is started over), any other image under the name is refused. Records
    /// that the copy is ours from now on, and starts hashing the source.
    async fn prepare_copy(
        &self,
        m: &VolumeMigration,
        state: &mut RunState,
        file: &StateFile,
    ) -> Result<()> {
        let target = m.copy_target();
        let dst = self.dst.clone();
        let (d, t) = (dst.clone(), target.clone());
        let exists = on_ceph(
            "copy_replica",
            dst.name().to_string(),
            target.to_string(),
            move || d.image_exists(&t),
        )
        .await?;
        if exists {
            let (d, t) = (dst.clone(), target.clone());
            let found = on_ceph(
                "copy_replica",
                dst.name().to_string(),
                target.to_string(),
                move || d.stat(&t),
            )
            .await?
            .id;
            match &state.copy_id {
                // a partial copy of an interrupted run: ours, start it over. A killed run's
                // watch on it lingers until the OSD times it out (~30 s): retry
                Some(ours) if *ours == found => {
                    remove_own_image("copy_replica", &dst, &target, ours, self.events.as_ref())
                        .await?
                }
                _ => return Err(not_our_copy(dst.name(), &target, &found, &m.id(), state)),
            }
        }
        state.copy_started = true;
        state.copy_id = None;
        if let Ok(mut slot) = self.created_copy_id.lock() {
            *slot = None;
        }
        state.source_digest = None;
        state.copy_digest = None;
        self.save(state, file)?;
        self.start_source_digest(m);
        Ok(())
    }

    /// Snapshot mode: start the copy with the wait, trailing rbd-mirror's sync of the
    /// source's newest primary mirror snapshot (see [`wait::replica_final_bytes`]). The
    /// image is not in use (no live migration), so what rbd-mirror has copied for that
    /// snapshot does not change any more.
    async fn start_trailing_copy(
        &self,
        m: &VolumeMigration,
        state: &mut RunState,
        file: &StateFile,
    ) -> Result<()> {
        let (src, image) = (self.src.clone(), m.image.clone());
        let snaps = on_ceph(
            "copy_replica",
            src.name().to_string(),
            m.image.to_string(),
            move || src.snapshots(&image),
        )
        .await?;
        let Some(want) = wait::newest_primary_mirror_snapshot(&snaps) else {
            return Ok(()); // nothing to trail: the copy step copies after the wait
        };
        self.prepare_copy(m, state, file).await?;
        let (dst, replica) = (self.dst.clone(), m.replica());
        let object_size = state.plan.facts.object_size;
        let ready = move || -> std::result::Result<Option<u64>, OpsError> {
            match dst.snapshots(&replica) {
                Ok(snaps) => Ok(Some(wait::replica_final_bytes(&snaps, want, object_size))),
                Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        };
        let running = self.spawn_copy(m, file.path(), Box::new(ready));
        if let Ok(mut slot) = self.copy.lock() {
            *slot = Some(running);
        }
        Ok(())
    }

    /// Start copying the replica into the destination pool on a blocking thread. Its
    /// progress is reported as `copy` events as soon as a first piece is done, then twice a
    /// second, and at the end (during the wait too, for a copy trailing the sync).
    fn spawn_copy(
        &self,
        m: &VolumeMigration,
        state_path: &Path,
        mut ready: Box<dyn FnMut() -> std::result::Result<Option<u64>, OpsError> + Send>,
    ) -> Background {
        use std::sync::atomic::{AtomicBool, Ordering};
        let cancel = Arc::new(AtomicBool::new(false));
        let stop = cancel.clone();
        let events = self.events.clone();
        let (dst, replica, target) = (self.dst.clone(), m.replica(), m.copy_target());
        let (slot, state_path) = (self.created_copy_id.clone(), state_path.to_path_buf());
        let task = tokio::spawn(on_ceph(
            "copy_replica",
            dst.name().to_string(),
            target.to_string(),
            move || {
                let mut meter = RateMeter::default();
                let mut last: Option<Instant> = None;
                let mut progress = |done: u64, total: u64| -> bool {
                    let due = last.is_none_or(|t| t.elapsed().as_millis() >= 500);
                    if total > 0 && done > 0 && (due || done == total) {
                        last = Some(Instant::now());
                        let (rate, eta) = meter.sample(done, total);
                        events.emit(Event::Progress(ProgressInfo {
                            phase: "copy".into(),
                            percent: Some(100.0 * done as f64 / total as f64),
                            bytes_per_second: rate,
                            eta_seconds: eta,
                            detail: String::new(),
                        }));
                    }
                    !stop.load(Ordering::Relaxed)
                };
                // record the new image's id before anything is written into it
                let mut created = |id: &str| -> std::result::Result<(), OpsError> {
                    let record = || -> Result<()> {
                        let mut slot = slot
                            .lock()
                            .map_err(|_| Error::Unsafe("the copy id record is poisoned".into()))?;
                        *slot = Some(id.to_string());
                        if let Some(mut state) = crate::state::load(&state_path)? {
                            state.copy_id = Some(id.to_string());
                            crate::state::save_to(&state_path, &state)?;
                        }
                        Ok(())
                    };
                    record().map_err(|e| {
                        OpsError::new(ErrorKind::Other, "record copy id", e.to_string())
                    })
                };
                dst.copy_trailing(&replica, &target, &mut *ready, &mut progress, &mut created)
            },
        ));
        Background { task, cancel }
    }

    /// Wait for the copy to end; returns the copy's digest.
    async fn finish_copy(&self, mut running: Background) -> Result<String> {
        (&mut running.task).await.map_err(|e| Error::Ceph {
            step: "copy_replica".into(),
            cluster: self.dst.name().to_string(),
            target: String::new(),
            source: OpsError::new(ErrorKind::Other, "copy task", e.to_string()),
        })?
    }

    /// Stop a copy that is still running (the run failed before the copy step).
    async fn stop_copy(&self) {
        let running = self.copy.lock().map(|mut c| c.take()).unwrap_or(None);
        if let Some(mut running) = running {
            running
                .cancel
                .store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = (&mut running.task).await;
        }
    }

    /// Hash the source on its cluster while the destination works: `verify` then only
    /// compares. An image that is not in use is hashed from the start of the wait (its
    /// content cannot change); a live one when the copy starts, after the replica is
    /// complete. Started once per run.
    fn start_source_digest(&self, m: &VolumeMigration) {
        if self
            .early_source_digest
            .lock()
            .map(|d| d.is_some())
            .unwrap_or(false)
        {
            return; // already started with the wait
        }
        let (src, image) = (self.src.clone(), m.image.clone());
        let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = cancel.clone();
        let task = tokio::spawn(async move {
            let name = format!("{}:{image}", src.name());
            let c = src.clone();
            on_ceph("verify", src.name().to_string(), name, move || {
                c.digest(&image, &mut |_, _| {
                    !stop.load(std::sync::atomic::Ordering::Relaxed)
                })
            })
            .await
        });
        if let Ok(mut slot) = self.early_source_digest.lock() {
            *slot = Some(Background { task, cancel });
        }
    }

    /// The source digest started with the copy in this process, if any: `None` when there
    /// is none (a run resumed at `verify`) or its task did not finish; its error otherwise.
    async fn take_source_digest(&self) -> Option<Result<String>> {
        let mut early = self.early_source_digest.lock().ok()?.take()?;
        (&mut early.task).await.ok()
    }

    async fn verify(
        &self,
        m: &VolumeMigration,
        state: &mut RunState,
        file: &StateFile,
    ) -> Result<()> {
        let size = state.plan.facts.size;
        let digest = |c: Arc<dyn CephOps>, image: ImageSpec, label: &'static str| {
            let events = self.events.clone();
            let name = format!("{}:{image}", c.name());
            async move {
                let c2 = c.clone();
                on_ceph(
                    "verify",
                    c.name().to_string(),
                    name.to_string(),
                    move || {
                        let mut last = Instant::now() - std::time::Duration::from_secs(2);
                        let mut cb = |done: u64, total: u64| -> bool {
                            if last.elapsed().as_millis() >= 1000 {
                                last = Instant::now();
                                events.emit(Event::Progress(ProgressInfo {
                                    phase: "verify".into(),
                                    percent: (total > 0)
                                        .then(|| 100.0 * done as f64 / total as f64),
                                    bytes_per_second: None,
                                    eta_seconds: None,
                                    detail: label.into(),
                                }));
                            }
                            true
                        };
                        c2.digest(&image, &mut cb)
                    },
                )
                .await
            }
        };
        let early = self.take_source_digest().await;
        let early_copy = self
            .early_copy_digest
            .lock()
            .map(|mut d| d.take())
            .unwrap_or(None);
        let (a, b) = match (early, early_copy) {
            // both hashed during the copy: the copy as read back right after it was written
            (Some(a), Some(b)) => (a?, b),
            (Some(a), None) => (a?, digest(self.dst.clone(), m.copy_target(), "copy").await?),
            (None, _) => {
                let (a, b) = tokio::join!(
                    digest(self.src.clone(), m.image.clone(), "source"),
                    digest(self.dst.clone(), m.copy_target(), "copy")
                );
                (a?, b?)
            }
        };
        state.source_digest = Some(a.clone());
        state.copy_digest = Some(b.clone());
        if a != b {
            // go back to waiting + copying on the next run; the copy is ours and is redone
            let restart = state
                .plan
                .steps
                .iter()
                .position(|s| *s == Step::WaitForReplica)
                .unwrap_or(0);
            state.next_step = restart;
            state.outcome = "verification failed".into();
            self.save(state, file)?;
            return Err(Error::VerifyMismatch {
                source_image: format!("{}:{}", self.src.name(), m.image),
                source_digest: a,
                copy: format!("{}:{}", self.dst.name(), m.copy_target()),
                copy_digest: b,
            });
        }
        self.events.emit(Event::Progress(ProgressInfo::done(
            "verify",
            format!("{size} bytes equal, sha256 {a}"),
        )));
        Ok(())
    }
}

/// The tenant admin's step alone (split roles): adopt an RBD image that is already in the
/// destination Cinder pool as a volume. Read-only checks first (admin credentials, host
/// resolvable and storing into `image`'s pool); idempotent: a re-run returns the volume an
/// earlier run adopted (found by the marker in its metadata) instead of adopting again.
pub async fn adopt_image(
    cloud: Arc<dyn CloudOps>,
    image: &ImageSpec,
    adoption: &crate::plan::Adoption,
    events: Arc<dyn EventSink>,
) -> Result<AdoptedVolume> {
    let kind = "adopt_volume";
    let marker = format!("adopt_{}_{}", image.pool, image.image);
    let check = cloud
        .check_adopt(&adoption.target)
        .await
        .map_err(cloud_err(kind, cloud.as_ref()))?;
    if let Some(pool) = &check.pool {
        if pool != &image.pool.pool {
            return Err(Error::Preflight(vec![crate::preflight::Problem {
                what: format!(
                    "Cinder host {} of cloud {} stores into Ceph pool '{pool}', not '{}'",
                    check.host,
                    cloud.name(),
                    image.pool
                ),
                fix: "give the --cinder-host whose backend stores into the image's pool".into(),
            }]));
        }
    }
    let found = cloud
        .find_adopted(&marker)
        .await
        .map_err(cloud_err(kind, cloud.as_ref()))?;
    if let Some(v) = found.iter().find(|v| v.status == "available") {
        events.emit(Event::Warning {
            message: format!("{image} was already adopted as volume {}", v.id),
        });
        return Ok(v.clone());
    }
    for v in found.iter().filter(|v| v.status.starts_with("error")) {
        cloud
            .forget_volume(&v.id)
            .await
            .map_err(cloud_err(kind, cloud.as_ref()))?;
    }
    let mut metadata = std::collections::BTreeMap::new();
    metadata.insert(MARKER_KEY.to_string(), marker);
    let spec = AdoptSpec {
        target: adoption.target.clone(),
        rbd_image: image.image.clone(),
        name: adoption.name.clone(),
        bootable: adoption.bootable,
        metadata,
    };
    cloud
        .adopt(&spec)
        .await
        .map_err(cloud_err(kind, cloud.as_ref()))
}

/// The tenant admin's registration alone (split roles): register `image@snapshot` (already
/// in the destination Glance pool, snapshot protected by the Ceph destination admin) as a
/// Glance image by its rbd:// location. Read-only checks first (admin credentials, snapshot
/// there and protected); idempotent: a re-run returns the image an earlier run registered.
pub async fn register_image(
    cloud: Arc<dyn CloudOps>,
    dst: Arc<dyn CephOps>,
    image: &ImageSpec,
    registration: &crate::plan::Registration,
    events: Arc<dyn EventSink>,
) -> Result<CloudImage> {
    let kind = "register_image";
    let problem =
        |what: String, fix: String| Error::Preflight(vec![crate::preflight::Problem { what, fix }]);
    cloud.check_register().await.map_err(|e| {
        problem(
            format!("cloud {}: {e}", cloud.name()),
            "use the destination cloud's admin credentials (--os-cloud)".into(),
        )
    })?;
    let (d, i, snap) = (dst.clone(), image.clone(), registration.snapshot.clone());
    let (fsid, protected) = on_ceph(kind, dst.name().to_string(), image.to_string(), move || {
        let snaps = d.snapshots(&i)?;
        let p = snaps
            .iter()
            .find(|s| s.name == snap && s.namespace == SnapshotNamespace::User)
            .map(|s| s.protected);
        Ok((d.fsid()?, p))
    })
    .await?;
    if protected != Some(true) {
        let (c, snap) = (dst.name(), &registration.snapshot);
        return Err(problem(
            format!(
                "{c}:{image}@{snap} {}",
                if protected.is_none() { "does not exist" } else { "is not protected" }
            ),
            format!("the Ceph destination admin runs: rbd --cluster {c} snap create {image}@{snap}; rbd --cluster {c} snap protect {image}@{snap}"),
        ));
    }
    let marker = format!("register_{}_{}", image.pool, image.image);
    let found = cloud
        .find_images(&marker)
        .await
        .map_err(cloud_err(kind, cloud.as_ref()))?;
    if let Some(i) = found.iter().find(|i| i.status == "active") {
        events.emit(Event::Warning {
            message: format!("{image} was already registered as image {}", i.id),
        });
        return Ok(i.clone());
    }
    let mut properties = std::collections::BTreeMap::new();
    properties.insert(MARKER_KEY.to_string(), marker);
    let spec = RegisterSpec {
        name: registration.name.clone(),
        fsid,
        pool: image.pool.pool.clone(),
        image: image.image.clone(),
        snapshot: registration.snapshot.clone(),
        min_disk_gib: registration.min_disk_gib,
        properties,
    };
    cloud
        .register_image(&spec)
        .await
        .map_err(cloud_err(kind, cloud.as_ref()))
}

/// A bootable volume's move through Glance (the runbook's second half): upload-to-image in
/// the source cloud, mirror the Glance image, copy it into the destination Glance pool,
/// verify, clean up the source, snapshot + protect, register, check min_disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootableMigration {
    /// Source cluster.
    pub source: crate::spec::ClusterSpec,
    /// Destination cluster.
    pub destination: crate::spec::ClusterSpec,
    /// The Cinder volume in the source cloud.
    pub volume_id: String,
    /// The source Glance pool (used when Glance does not show the image's location).
    pub source_image_pool: crate::spec::PoolSpec,
    /// The destination Glance pool.
    pub into: crate::spec::PoolSpec,
    /// Name of the image (default: `<volume name>-image`).
    pub name: Option<String>,
    /// Mirroring mode.
    pub mode: crate::features::MirrorImageMode,
}

/// What the upload-to-image step recorded (the rest of the run is an ordinary plan).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct UploadRecord {
    volume_id: String,
    volume_size_gib: u64,
    image: CloudImage,
    image_name: String,
    pool: String,
    rbd_image: String,
}

/// Not `*.json`: `rbd-relay list` reads those as migration state files.
fn upload_record_path(dir: &Path, volume_id: &str) -> std::path::PathBuf {
    dir.join(format!("bootable_{volume_id}.upload"))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let err = |reason: String| Error::State {
        path: path.to_path_buf(),
        reason,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| err(e.to_string()))?;
    tmp.write_all(bytes).map_err(|e| err(e.to_string()))?;
    tmp.as_file().sync_all().map_err(|e| err(e.to_string()))?;
    tmp.persist(path).map_err(|e| err(e.to_string()))?;
    Ok(())
}

fn save_upload_record(path: &Path, r: &UploadRecord) -> Result<()> {
    let json = serde_json::to_vec_pretty(r).map_err(|e| Error::State {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    write_atomically(path, &json)
}

/// The image an interrupted upload made (the run died after asking Cinder): found by name;
/// waited for while Cinder still writes it. `None` when there is none (upload again).
async fn find_upload(
    cloud: &dyn CloudOps,
    name: &str,
    events: &dyn EventSink,
) -> Result<Option<CloudImage>> {
    let kind = "upload_to_image";
    let deadline = Instant::now() + std::time::Duration::from_secs(3600);
    loop {
        let found: Vec<CloudImage> = cloud
            .images_named(name)
            .await
            .map_err(cloud_err(kind, cloud))?
            .into_iter()
            .filter(|i| !matches!(i.status.as_str(), "killed" | "deleted" | "pending_delete"))
            .collect();
        match found.as_slice() {
            [] => return Ok(None),
            [one] if one.status == "active" => {
                events.emit(Event::Warning {
                    message: format!(
                        "the interrupted run's upload made image {} in cloud {}; using it",
                        one.id,
                        cloud.name()
                    ),
                });
                return Ok(Some(one.clone()));
            }
            [one] => {
                if Instant::now() > deadline {
                    return Err(Error::Unsafe(format!(
                        "image {} of the interrupted upload is still '{}' after an hour; check it in cloud {}, then re-run",
                        one.id,
                        one.status,
                        cloud.name()
                    )));
                }
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
            many => {
                return Err(Error::Unsafe(format!(
                    "cloud {} has {} images named '{name}' ({}); the interrupted upload cannot be told apart: remove the extra ones or give another --name, then re-run",
                    cloud.name(),
                    many.len(),
                    many.iter()
                        .map(|i| format!("{} {}", i.id, i.status))
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
        }
    }
}

fn load_upload_record(path: &Path) -> Result<Option<UploadRecord>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::State {
                path: path.to_path_buf(),
                reason: format!("unreadable ({e})"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::State {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

/// Migrate a bootable volume through Glance; resumes a recorded run. The cloud checks
/// (source volume readable, destination credentials may register locations) run before the
/// upload and before any Ceph change. Returns the Ceph plan's summary, whose `image` is the
/// registered destination image.
pub async fn migrate_bootable(
    b: &BootableMigration,
    src: Arc<dyn CephOps>,
    dst: Arc<dyn CephOps>,
    clouds: &Clouds,
    state_dir: &Path,
    opts: &RunOptions,
    events: Arc<dyn EventSink>,
) -> Result<Summary> {
    crate::spec::check_volume_id(&b.volume_id)?;
    let (src_cloud, dst_cloud) = clouds.both_for_bootable()?;
    let lock_id = format!("bootable_{}", b.volume_id);
    let lock = StateFile::lock(state_dir, &lock_id, &b.volume_id)?;
    let record_path = upload_record_path(state_dir, &b.volume_id);
    let record = match load_upload_record(&record_path)? {
        Some(r) => r,
        None => {
            let (vol, image_name) =
                check_bootable(b, src_cloud.as_ref(), dst_cloud.as_ref()).await?;
            events.emit(Event::StepStarted {
                index: 0,
                step: "upload_to_image".into(),
                description: format!(
                    "upload volume {} ({} GiB) to image '{image_name}' in cloud {} (source tenant)",
                    vol.id,
                    vol.size_gib,
                    src_cloud.name()
                ),
            });
            let t = Instant::now();
            let started = record_path.with_extension("uploading");
            let earlier = if started.exists() {
                find_upload(src_cloud.as_ref(), &image_name, events.as_ref()).await?
            } else {
                None
            };
            let img = match earlier {
                Some(i) => i,
                None => {
                    write_atomically(&started, image_name.as_bytes())?;
                    src_cloud
                        .upload_to_image(&vol.id, &image_name)
                        .await
                        .map_err(cloud_err("upload_to_image", src_cloud.as_ref()))?
                }
            };
            let (pool, rbd_image) = img
                .rbd
                .clone()
                .unwrap_or_else(|| (b.source_image_pool.pool.clone(), img.id.clone()));
            let r = UploadRecord {
                volume_id: vol.id.clone(),
                volume_size_gib: vol.size_gib,
                image: img,
                image_name,
                pool,
                rbd_image,
            };
            save_upload_record(&record_path, &r)?;
            let _ = std::fs::remove_file(&started);
            events.emit(Event::StepDone {
                index: 0,
                step: "upload_to_image".into(),
                seconds: t.elapsed().as_secs_f64(),
            });
            r
        }
    };
    drop(lock);
    let m = bootable_plan_request(b, &record, dst_cloud.name())?;
    migrate(&m, src, dst, clouds, state_dir, opts, events).await
}

/// The Ceph plan's request of a bootable migration whose upload-to-image is done (by the
/// source tenant admin, for a split-role bundle): `image` is the uploaded image in the
/// source cloud, `volume_size_gib` the source volume's size, `dst_cloud` the destination
/// cloud's name. The same request `migrate bootable` builds after its upload step.
pub fn bootable_request(
    b: &BootableMigration,
    image: &CloudImage,
    image_name: &str,
    volume_size_gib: u64,
    dst_cloud: &str,
) -> Result<VolumeMigration> {
    let (pool, rbd_image) = image
        .rbd
        .clone()
        .unwrap_or_else(|| (b.source_image_pool.pool.clone(), image.id.clone()));
    let record = UploadRecord {
        volume_id: b.volume_id.clone(),
        volume_size_gib,
        image: image.clone(),
        image_name: image_name.to_string(),
        pool,
        rbd_image,
    };
    bootable_plan_request(b, &record, dst_cloud)
}

/// The Ceph plan's request once the volume is uploaded.
fn bootable_plan_request(
    b: &BootableMigration,
    record: &UploadRecord,
    dst_cloud: &str,
) -> Result<VolumeMigration> {
    let image: ImageSpec = format!("{}/{}", record.pool, record.rbd_image).parse()?;
    let mut m = VolumeMigration::new(
        b.source.clone(),
        b.destination.clone(),
        image,
        b.into.clone(),
    );
    m.mode = b.mode;
    m.register = Some(crate::plan::Registration {
        cloud: dst_cloud.to_string(),
        name: record.image_name.clone(),
        snapshot: "snap".into(),
        min_disk_gib: record.volume_size_gib.max(record.image.min_disk_gib),
    });
    Ok(m)
}

/// The cloud checks of the bootable path (read only): the source volume is readable, the
/// destination credentials may register locations. Returns the volume and the image name.
async fn check_bootable(
    b: &BootableMigration,
    src_cloud: &dyn CloudOps,
    dst_cloud: &dyn CloudOps,
) -> Result<(crate::cloud::SourceVolume, String)> {
    let pre = |e: CloudError, c: &dyn CloudOps, fix: &str| {
        Error::Preflight(vec![crate::preflight::Problem {
            what: format!("cloud {}: {e}", c.name()),
            fix: fix.to_string(),
        }])
    };
    let vol = src_cloud.source_volume(&b.volume_id).await.map_err(|e| {
        pre(
            e,
            src_cloud,
            "give --source-cloud a cloud entry with the admin role in the source cloud and an existing volume id",
        )
    })?;
    dst_cloud.check_register().await.map_err(|e| {
        pre(
            e,
            dst_cloud,
            "give --os-cloud a cloud entry with the admin role in the destination cloud",
        )
    })?;
    let image_name = b.name.clone().unwrap_or_else(|| {
        format!(
            "{}-image",
            vol.name
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| vol.id.clone())
        )
    });
    Ok((vol, image_name))
}

/// The dry run of a bootable migration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootableDryRun {
    /// The upload still to do (`None` when a run recorded it).
    pub upload: Option<String>,
    /// What follows the upload, in order, while the image id is not known yet.
    pub then: Vec<String>,
    /// The Ceph plan, once the upload is recorded (and its recorded state).
    pub plan: Option<(Plan, Option<RunState>)>,
}

/// Read-only: the cloud checks and what a bootable migration would do (`--dry-run`).
pub async fn plan_bootable(
    b: &BootableMigration,
    src: Arc<dyn CephOps>,
    dst: Arc<dyn CephOps>,
    clouds: &Clouds,
    state_dir: &Path,
    events: Arc<dyn EventSink>,
) -> Result<BootableDryRun> {
    crate::spec::check_volume_id(&b.volume_id)?;
    let (src_cloud, dst_cloud) = clouds.both_for_bootable()?;
    if let Some(r) = load_upload_record(&upload_record_path(state_dir, &b.volume_id))? {
        let m = bootable_plan_request(b, &r, dst_cloud.name())?;
        let p = plan(&m, src, dst, clouds, state_dir, events).await?;
        return Ok(BootableDryRun {
            upload: None,
            then: vec![],
            plan: Some(p),
        });
    }
    let (vol, name) = check_bootable(b, src_cloud.as_ref(), dst_cloud.as_ref()).await?;
    let (s, d) = (&b.source.name, &b.destination.name);
    let pool = &b.source_image_pool;
    Ok(BootableDryRun {
        upload: Some(format!(
            "[OpenStack source tenant] upload volume {} ({} GiB) to image '{name}' in cloud {} (Cinder upload-to-image; the data lands in {s}:{pool}/<image id>)",
            vol.id,
            vol.size_gib,
            src_cloud.name()
        )),
        then: vec![
            format!("[Ceph source admin] preflight, enable the mirroring features and {}-mode mirroring of {s}:{pool}/<image id>", b.mode),
            format!("[Ceph destination admin] wait for the replica, copy it to {d}:{}/<image id>, verify (sha256)", b.into),
            format!("[Ceph source admin] disable mirroring of {s}:{pool}/<image id> and restore its features"),
            format!("[Ceph destination admin] create snapshot {d}:{}/<image id>@snap and protect it", b.into),
            format!("[OpenStack tenant admin] register image '{name}' in cloud {} at rbd://<{d} fsid>/{}/<image id>/snap", dst_cloud.name(), b.into),
            format!("[OpenStack tenant admin] check that its min_disk is at least {} GiB (the source volume's size)", vol.size_gib),
        ],
        plan: None,
    })
}
