//! The executor proper: runs the steps of a recorded plan one by one, each first checking
//! whether its effect is already there (so a re-run converges), saving the state after each.
//! One function per step; the copy and the digests that run beside the steps are in
//! `background.rs`, the steps that talk to a cloud in `cloud_steps.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::background::Background;
use super::*;
use crate::cloud::CloudOps;
use crate::error::{Error, Result};
use crate::event::{Event, EventSink};
use crate::features::{FeatureChange, Features, MirrorImageMode};
use crate::ops::{CephOps, MirrorImageState, PoolMirrorMode, SnapshotNamespace};
use crate::plan::Step;
use crate::state::{Record, RunState};
use crate::wait;

/// What an undo step works with (see [`Executor::undo_context`]).
struct UndoContext {
    src: Arc<dyn CephOps>,
    dst: Arc<dyn CephOps>,
    m: crate::plan::VolumeMigration,
    events: Arc<dyn EventSink>,
    dir: std::path::PathBuf,
}

/// Runs the steps of a recorded plan (shared by [`migrate`], the bootable path, the split
/// roles' tenant step and [`crate::cleanup`]).
pub(crate) struct Executor {
    /// The source cluster (none for the tenant step alone).
    src: Option<Arc<dyn CephOps>>,
    /// The destination cluster (none for an adoption alone).
    dst: Option<Arc<dyn CephOps>>,
    pub(super) dst_cloud: Option<Arc<dyn CloudOps>>,
    /// The source cloud (the upload of a bootable volume).
    pub(super) src_cloud: Option<Arc<dyn CloudOps>>,
    pub(super) events: Arc<dyn EventSink>,
    pub(super) opts: RunOptions,
    /// The source digest, computed on the source cluster while the copy is made on the
    /// destination; `verify` then only has to read the copy.
    pub(super) early_source_digest: std::sync::Mutex<Option<Background>>,
    /// The copy, once started: with the wait in snapshot mode (it trails rbd-mirror's
    /// sync), else by the copy step.
    pub(super) copy: std::sync::Mutex<Option<Background>>,
    /// The copy's digest as read back while it was written; `verify` uses it instead of
    /// reading the copy again.
    pub(super) early_copy_digest: std::sync::Mutex<Option<String>>,
    /// The destination's rbd-mirror daemons as the cutover's steps watched them (their
    /// beacons seen so far), kept from one step to the next.
    pub(super) daemon_watch: std::sync::Mutex<crate::wait::DaemonWatch>,
    /// The id of the copy this run created, set by the copy's thread as soon as the image
    /// exists (and written to the state file there and then); every later save of the
    /// state by this executor carries it, under this same lock, so no save drops it.
    pub(super) created_copy_id: Arc<std::sync::Mutex<Option<String>>>,
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
        let mut e = Self::for_cloud_steps(Some(dst), dst_cloud, events);
        e.src = Some(src);
        e.opts = opts;
        e
    }

    /// An executor for the tenant admin's step alone (split roles): the destination cloud,
    /// and the destination cluster when the step reads it (a registration).
    pub(crate) fn for_cloud_steps(
        dst: Option<Arc<dyn CephOps>>,
        dst_cloud: Option<Arc<dyn CloudOps>>,
        events: Arc<dyn EventSink>,
    ) -> Self {
        Self {
            src: None,
            dst,
            dst_cloud,
            src_cloud: None,
            events,
            opts: RunOptions::default(),
            early_source_digest: std::sync::Mutex::new(None),
            copy: std::sync::Mutex::new(None),
            early_copy_digest: std::sync::Mutex::new(None),
            created_copy_id: Arc::default(),
            daemon_watch: std::sync::Mutex::default(),
        }
    }

    /// The same executor with the source cloud (for the upload of a bootable volume).
    pub(crate) fn with_source_cloud(mut self, cloud: Option<Arc<dyn CloudOps>>) -> Self {
        self.src_cloud = cloud;
        self
    }

    /// The source cluster, or the refusal of a step that needs it when none was given.
    pub(super) fn src(&self, step: &str) -> Result<Arc<dyn CephOps>> {
        self.src.clone().ok_or_else(|| Error::NotGiven {
            needed_for: format!("step {step}"),
            what: "the source cluster".into(),
            flag: "--from",
        })
    }

    /// The destination cluster, or the refusal of a step that needs it when none was given.
    pub(super) fn dst(&self, step: &str) -> Result<Arc<dyn CephOps>> {
        self.dst.clone().ok_or_else(|| Error::NotGiven {
            needed_for: format!("step {step}"),
            what: "the destination cluster".into(),
            flag: "--to",
        })
    }

    /// Run the plan's steps from `state.next_step` on while `take` accepts the next one,
    /// saving the state after every step (and the failure when one fails).
    pub(crate) async fn run_steps(
        &self,
        state: &mut RunState,
        file: &dyn Record,
        take: impl Fn(&Step) -> bool,
    ) -> Result<()> {
        while !state.active_done() && take(&state.active_steps()[state.active_next()]) {
            let index = state.active_next();
            let step = state.active_steps()[index].clone();
            self.events.emit(Event::StepStarted {
                index,
                step: step.kind().into(),
                description: step.describe(&state.plan.migration),
            });
            let t = Instant::now();
            let result = self.run_step(&step, index, state, file).await;
            if let Err(e) = result {
                let e = self.explain_failure(state, e).await;
                state.outcome = format!("failed at {}: {e}", step.kind());
                let _ = self.save(state, file);
                if state.undo.is_none() {
                    self.roll_back_failed_cutover(index, state, file).await;
                }
                return Err(e);
            }
            state.active_step_ran(index, t.elapsed().as_secs_f64());
            self.save(state, file)?;
            self.events.emit(Event::StepDone {
                index,
                step: step.kind().into(),
                seconds: t.elapsed().as_secs_f64(),
            });
        }
        Ok(())
    }

    /// A Ceph call on the destination that timed out or found no space: when a pool this
    /// migration writes to there (the copy's or the replica's) is full, say so, naming the
    /// pool, its quota and the command that lifts it (Ceph holds writes to a full pool until
    /// they time out, so the call itself says only "timed out").
    async fn explain_failure(&self, state: &RunState, e: Error) -> Error {
        let Error::Ceph {
            step,
            cluster,
            target,
            source,
        } = e
        else {
            return e;
        };
        let full_or_timeout = source.kind == crate::ops::ErrorKind::TimedOut
            || ["quota", "No space", "errno 28)", "errno 122)"]
                .iter()
                .any(|w| source.message.contains(w));
        let dst = match &self.dst {
            Some(d) if d.name() == cluster && full_or_timeout => d.clone(),
            _ => {
                return Error::Ceph {
                    step,
                    cluster,
                    target,
                    source,
                }
            }
        };
        let m = &state.plan.migration;
        let mut pools = vec![m.copy_target().pool.pool.clone()];
        if !pools.contains(&m.replica().pool.pool) {
            pools.push(m.replica().pool.pool.clone());
        }
        for pool in pools {
            let (d, p) = (dst.clone(), pool.clone());
            let Ok(Ok(space)) = tokio::task::spawn_blocking(move || d.pool_space(&p)).await else {
                continue;
            };
            if space.available() > 0 {
                continue;
            }
            let why = match space.quota_max_bytes {
                Some(q) if space.stored >= q => format!(
                    "its quota max_bytes {q} is reached, {} bytes stored",
                    space.stored
                ),
                _ => format!("no room left on its OSDs, max_avail {}", space.max_avail),
            };
            return Error::PoolFull {
                step,
                cluster,
                pool,
                why,
                source,
            };
        }
        Error::Ceph {
            step,
            cluster,
            target,
            source,
        }
    }

    /// A step of the cutover window failed (the source is demoted, nothing handed over):
    /// promote the source again and start over from the wait before the demotion. A roll
    /// back that fails itself is reported; `abort` or a re-run finish it.
    async fn roll_back_failed_cutover(
        &self,
        index: usize,
        state: &mut RunState,
        file: &dyn Record,
    ) {
        let Some(window) = state.plan.cutover_window() else {
            return;
        };
        if !window.contains(&index) || state.handed_to_cloud() {
            return;
        }
        let restart_at = match state
            .plan
            .steps
            .iter()
            .position(|s| matches!(s, Step::WaitForCutover { .. }))
        {
            Some(wait) => wait,
            None => *window.start(),
        };
        let source = format!(
            "{}:{}",
            state.plan.migration.source.name, state.plan.migration.image
        );
        match self.roll_back_cutover(state, file, restart_at).await {
            Ok(()) => self.events.emit(Event::Warning {
                message: format!(
                    "the cutover was rolled back: {source} is primary and writable again; re-run to try the cutover again"
                ),
            }),
            Err(e) => self.events.emit(Event::Warning {
                message: format!(
                    "rolling the cutover back failed ({e}); {source} may still be demoted: run `rbd-relay abort {}` to put it back",
                    state.plan.id
                ),
            }),
        }
    }

    pub(super) fn skipped(&self, index: usize, step: &Step, reason: &str) {
        self.events.emit(Event::StepSkipped {
            index,
            step: step.kind().into(),
            reason: reason.into(),
        });
    }

    /// One step: each variant to its own function.
    async fn run_step(
        &self,
        step: &Step,
        index: usize,
        state: &mut RunState,
        file: &dyn Record,
    ) -> Result<()> {
        match step {
            Step::Preflight => self.preflight(state, file).await,
            Step::EnablePoolMirroring => self.enable_pool_mirroring(state).await,
            Step::SetJournalPayload { bytes } => {
                let value = bytes.to_string();
                if self.set_journal_payload(step, state, Some(value)).await? {
                    self.skipped(index, step, "the payload is already set");
                }
                Ok(())
            }
            Step::EnableFeatures { change } => {
                self.enable_features(step, index, state, change).await
            }
            Step::EnableMirroring { mode } => {
                self.enable_mirroring(step, index, state, *mode).await
            }
            Step::WaitForReplica => self.wait_for_replica(index, state, file).await,
            Step::CopyReplica => self.copy_replica(state, file).await,
            Step::SetCopyFeatures { features } => self.set_copy_features(state, *features).await,
            Step::Verify => {
                let m = state.plan.migration.clone();
                self.verify(&m, state, file).await
            }
            Step::DisableMirroring => self.disable_mirroring(step, index, state).await,
            Step::RestoreFeatures { .. } => self.restore_features(state).await,
            Step::RestoreJournalPayload { original } => {
                if self
                    .set_journal_payload(step, state, original.clone())
                    .await?
                {
                    self.skipped(index, step, "the payload is already as it was");
                } else if let Some(u) = &mut state.undo {
                    // the undo of an abort: one line of its report
                    let m = &state.plan.migration;
                    u.undone.push(format!(
                        "put image metadata {} of {}:{} back ({})",
                        crate::plan::JOURNAL_PAYLOAD_KEY,
                        m.source.name,
                        m.image,
                        original
                            .as_ref()
                            .map_or("removed: it had none".to_string(), |v| format!(
                                "{v}, its own value"
                            ))
                    ));
                }
                Ok(())
            }
            Step::GrowCopy { size } => {
                let m = state.plan.migration.clone();
                if self.grow_copy(&m, state, *size).await? {
                    self.skipped(index, step, "the copy already has that size");
                }
                Ok(())
            }
            Step::AdoptVolume { target, name, .. } => {
                self.adopt(step, index, state, file, target.clone(), name.clone())
                    .await
            }
            Step::SnapshotAndProtect { snap } => {
                self.snapshot_and_protect(step, index, state, snap).await
            }
            Step::RegisterImage { name, .. } => {
                self.register(step, index, state, file, name.clone()).await
            }
            Step::CheckMinDisk { min_gib } => self.check_min_disk(state, file, *min_gib).await,
            Step::UploadToImage {
                volume_id,
                image_name,
                ..
            } => {
                self.upload_to_image(step, index, state, file, volume_id, image_name)
                    .await
            }
            Step::WaitForCutover { idle_for_ms } => {
                let m = state.plan.migration.clone();
                let idle_for = std::time::Duration::from_millis(*idle_for_ms);
                self.wait_for_cutover(&m, file, idle_for).await
            }
            Step::DemoteSource => {
                let m = state.plan.migration.clone();
                self.record_replica_id(&m, state, file).await?;
                if self.demote_source(&m).await? {
                    self.skipped(index, step, "the source is already demoted");
                }
                Ok(())
            }
            Step::PromoteReplica => {
                let m = state.plan.migration.clone();
                if self.promote_replica(&m, state, file).await? {
                    self.skipped(index, step, "the replica is already primary");
                }
                Ok(())
            }
            Step::CloneReplica { snap, features } => {
                let m = state.plan.migration.clone();
                if self.clone_replica(&m, state, file, snap, *features).await? {
                    self.skipped(index, step, "the clone is already there");
                }
                Ok(())
            }
            Step::VerifyHandover { snap } => {
                let m = state.plan.migration.clone();
                self.verify_handover(&m, state, file, snap).await
            }
            Step::FlattenCopy => {
                let m = state.plan.migration.clone();
                if self.flatten_copy(&m, state, file).await? {
                    self.skipped(index, step, "the copy has no parent");
                }
                Ok(())
            }
            Step::ReleaseSource => {
                let m = state.plan.migration.clone();
                if self.release_source(&m, state).await? {
                    self.skipped(index, step, "mirroring of the source is already off");
                }
                Ok(())
            }
            Step::RemoveReplica { snap } => {
                let m = state.plan.migration.clone();
                if self.remove_replica(&m, state, snap).await? {
                    self.skipped(index, step, "the replica is already gone");
                }
                Ok(())
            }
            Step::RemoveCopy { image_id } => {
                let u = self.undo_context(step, state, file)?;
                let work = undo::remove_copy(&u.dst, &u.m, image_id, u.events.as_ref());
                undo::record(work, index, step, state, u.events.as_ref()).await
            }
            Step::DisableSourceMirroring => {
                let u = self.undo_context(step, state, file)?;
                let work =
                    undo::disable_source_mirroring(&u.src, &u.dst, &u.m, state.replica_id.clone());
                undo::record(work, index, step, state, u.events.as_ref()).await
            }
            Step::RemoveMirrorSnapshots { kept } => {
                let u = self.undo_context(step, state, file)?;
                let before = state.plan.facts.snapshots.clone();
                let watch = match u.m.mode {
                    MirrorImageMode::Journal => self.opts.wait.sync_point_watch,
                    MirrorImageMode::Snapshot => Duration::ZERO,
                };
                let work = undo::remove_mirror_snapshots(&u.src, &u.m, kept, &before, watch);
                undo::record(work, index, step, state, u.events.as_ref()).await
            }
            Step::RestoreOriginalFeatures { original } => {
                let u = self.undo_context(step, state, file)?;
                let work = undo::restore_original_features(&u.src, &u.m, *original);
                undo::record(work, index, step, state, u.events.as_ref()).await
            }
            Step::RemoveSourceMarker => {
                let u = self.undo_context(step, state, file)?;
                let work = undo::remove_source_marker(&u.src, &u.m, &u.dir);
                undo::record(work, index, step, state, u.events.as_ref()).await
            }
            Step::PromoteSource => {
                let u = self.undo_context(step, state, file)?;
                let work = undo::promote_source(&u.src, &u.dst, &u.m);
                undo::record(work, index, step, state, u.events.as_ref()).await
            }
            Step::DemoteReplica { snap } => {
                let u = self.undo_context(step, state, file)?;
                let work =
                    undo::demote_replica(&u.src, &u.dst, &u.m, snap, state.replica_id.clone());
                undo::record(work, index, step, state, u.events.as_ref()).await
            }
        }
    }

    /// What an undo step works with: both clusters, the migration, the state directory.
    fn undo_context(
        &self,
        step: &Step,
        state: &RunState,
        file: &dyn Record,
    ) -> Result<UndoContext> {
        let kind = step.kind();
        Ok(UndoContext {
            src: self.src(kind)?,
            dst: self.dst(kind)?,
            m: state.plan.migration.clone(),
            events: self.events.clone(),
            dir: file
                .file()
                .and_then(|p| p.parent())
                .map(|d| d.to_path_buf())
                .unwrap_or_default(),
        })
    }

    /// Preflight ran before the state was first written, except for a plan that awaits it
    /// (a bootable plan, whose source image the upload made): then it reads the image now
    /// and plans the steps after it.
    async fn preflight(&self, state: &mut RunState, file: &dyn Record) -> Result<()> {
        if !state.plan.awaits_preflight() {
            return Ok(());
        }
        let (src, dst) = (self.src("preflight")?, self.dst("preflight")?);
        let dir = file
            .file()
            .and_then(|f| f.parent())
            .map(|d| d.to_path_buf())
            .unwrap_or_default();
        let (m, events) = (state.plan.migration.clone(), self.events.clone());
        let facts = tokio::task::spawn_blocking(move || {
            let now = preflight::check_volume(&m, src.as_ref(), dst.as_ref(), events.as_ref())?;
            preflight::originals(&m, src.as_ref(), &dir, now, events.as_ref())
        })
        .await
        .map_err(|e| Error::TaskFailed {
            step: "preflight",
            reason: e.to_string(),
        })??;
        state.plan.planned_after_preflight(facts);
        Ok(())
    }

    async fn enable_pool_mirroring(&self, state: &RunState) -> Result<()> {
        let kind = "enable_pool_mirroring";
        for c in [self.src(kind)?, self.dst(kind)?] {
            let pool = state.plan.migration.image.pool.clone();
            let c2 = c.clone();
            on_ceph(kind, c.name().to_string(), pool.to_string(), move || {
                if c2.pool_mirror_mode(&pool)? == PoolMirrorMode::Disabled {
                    c2.set_pool_mirror_mode(&pool, PoolMirrorMode::Image)?;
                }
                Ok(())
            })
            .await?;
        }
        Ok(())
    }

    /// Bring the source's journal payload override ([`crate::plan::JOURNAL_PAYLOAD_KEY`])
    /// to `wanted`: that value, or no key at all for `None`. Returns whether it already was
    /// (a re-run converges; a user's own original is set back, never removed).
    async fn set_journal_payload(
        &self,
        step: &Step,
        state: &RunState,
        wanted: Option<String>,
    ) -> Result<bool> {
        let src = self.src(step.kind())?;
        let image = state.plan.migration.image.clone();
        on_ceph(
            step.kind(),
            src.name().to_string(),
            image.to_string(),
            move || converge_journal_payload(src.as_ref(), &image, wanted.as_deref()),
        )
        .await
    }

    async fn enable_features(
        &self,
        step: &Step,
        index: usize,
        state: &RunState,
        change: &FeatureChange,
    ) -> Result<()> {
        let wanted = change.apply(state.plan.facts.features);
        let src = self.src(step.kind())?;
        let image = state.plan.migration.image.clone();
        let changed = on_ceph(
            step.kind(),
            src.name().to_string(),
            image.to_string(),
            move || converge_features(src.as_ref(), &image, wanted),
        )
        .await?;
        if !changed {
            self.skipped(index, step, "features already set");
        }
        Ok(())
    }

    async fn enable_mirroring(
        &self,
        step: &Step,
        index: usize,
        state: &RunState,
        mode: MirrorImageMode,
    ) -> Result<()> {
        let src = self.src(step.kind())?;
        let image = state.plan.migration.image.clone();
        let already = on_ceph(
            step.kind(),
            src.name().to_string(),
            image.to_string(),
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

    async fn wait_for_replica(
        &self,
        index: usize,
        state: &mut RunState,
        file: &dyn Record,
    ) -> Result<()> {
        let kind = "wait_for_replica";
        let m = state.plan.migration.clone();
        let copy_next = state.plan.steps.get(index + 1) == Some(&Step::CopyReplica);
        if copy_next && !m.allow_live {
            // the image is not in use, so its content is final: hash it while rbd-mirror
            // maps the image (about 2 s of waiting) and syncs it
            self.start_source_digest(&m)?;
            if m.mode == MirrorImageMode::Snapshot {
                self.start_trailing_copy(&m, state, file).await?;
            }
        }
        let mut wait_opts = self.opts.wait.clone();
        // Journal mode: once the initial sync is over, a handover by clone (cold or live)
        // can demote. Its promotion (without force) waits until the replica has replayed
        // everything up to the demotion, and verify_handover proves the content after it,
        // so waiting here for the peer's commit position to reach the master's as well
        // (which rbd-mirror writes only every rbd_mirror_journal_commit_age, 5 s by
        // default) would only delay the demotion. A copy reads the replica: it waits for
        // the position.
        let demotes_next = state.plan.steps.get(index + 1) == Some(&Step::DemoteSource);
        wait_opts.initial_sync_only = m.live.is_some() || demotes_next;
        let waited = wait::wait_for_replica(
            self.src(kind)?,
            self.dst(kind)?,
            &m.image,
            &m.replica(),
            m.mode,
            state.plan.facts.objects(),
            &wait_opts,
            self.events.as_ref(),
        )
        .await;
        if waited.is_err() {
            self.stop_copy().await;
        }
        waited?;
        Ok(())
    }

    async fn copy_replica(&self, state: &mut RunState, file: &dyn Record) -> Result<()> {
        let m = state.plan.migration.clone();
        let running = self.copy.lock().map(|mut c| c.take()).unwrap_or(None);
        let running = match running {
            Some(r) => r,
            None => {
                self.prepare_copy(&m, state, file).await?;
                // the replica is complete: everything is final
                self.spawn_copy(&m, file.file(), Box::new(|| Ok(Some(u64::MAX))))?
            }
        };
        let digest = self.finish_copy(running).await?;
        if let Ok(mut slot) = self.early_copy_digest.lock() {
            *slot = Some(digest);
        }
        Ok(())
    }

    async fn set_copy_features(&self, state: &RunState, wanted: Features) -> Result<()> {
        let kind = "set_copy_features";
        let dst = self.dst(kind)?;
        let target = state.plan.migration.copy_target();
        let t = target.clone();
        on_ceph(
            kind,
            dst.name().to_string(),
            target.to_string(),
            move || converge_features(dst.as_ref(), &t, wanted).map(|_| ()),
        )
        .await
    }

    /// Disable mirroring of the source (deleting the replica), only once the copy is
    /// verified, and remove the mirror snapshots this migration made.
    async fn disable_mirroring(&self, step: &Step, index: usize, state: &RunState) -> Result<()> {
        if !state.verified() {
            return Err(Error::NotVerified {
                step: "disable_mirroring",
                consequence: "mirroring stays on so the replica is kept",
            });
        }
        let src = self.src(step.kind())?;
        let image = state.plan.migration.image.clone();
        let facts = state.plan.facts.clone();
        let already = on_ceph(
            step.kind(),
            src.name().to_string(),
            image.to_string(),
            move || {
                let mi = src.mirror_image(&image)?;
                let already = mi.state == MirrorImageState::Disabled;
                if !already {
                    src.disable_mirroring(&image, false)?;
                }
                // no mirror snapshot made by this migration is left behind
                // mirroring is off now: disabled just above, or already
                remove_mirror_snapshots_except(
                    src.as_ref(),
                    &image,
                    KeptSnapshots::of(&facts),
                    true,
                )?;
                Ok(already)
            },
        )
        .await?;
        if already {
            self.skipped(index, step, "mirroring already disabled");
        }
        Ok(())
    }

    async fn restore_features(&self, state: &RunState) -> Result<()> {
        let kind = "restore_features";
        let src = self.src(kind)?;
        let original = state.plan.facts.features;
        let image = state.plan.migration.image.clone();
        on_ceph(kind, src.name().to_string(), image.to_string(), move || {
            converge_features(src.as_ref(), &image, original).map(|_| ())
        })
        .await
    }

    /// Create the snapshot Glance reads on the verified copy and protect it.
    async fn snapshot_and_protect(
        &self,
        step: &Step,
        index: usize,
        state: &RunState,
        snap: &str,
    ) -> Result<()> {
        if !state.copy_cleared() {
            return Err(Error::NotVerified {
                step: "snapshot_and_protect",
                consequence: "it is not handed to Glance",
            });
        }
        let dst = self.dst(step.kind())?;
        let target = state.plan.migration.copy_target();
        let (d, t, snap) = (dst.clone(), target.clone(), snap.to_string());
        let already = on_ceph(
            step.kind(),
            dst.name().to_string(),
            target.to_string(),
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

    /// Save the state, with the copy's id when the copy has just recorded one (see
    /// [`Executor::created_copy_id`]).
    pub(super) fn save(&self, state: &mut RunState, file: &dyn Record) -> Result<()> {
        let recorded = self.created_copy_id.lock();
        if let Ok(Some(id)) = recorded.as_deref() {
            state.copy_id = Some(id.clone());
        }
        file.save(state)
    }
}
