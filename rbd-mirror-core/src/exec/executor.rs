//! The executor proper: runs the steps of a recorded plan one by one, each first checking
//! whether its effect is already there (so a re-run converges), saving the state after each.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::*;
use crate::cloud::{AdoptSpec, AdoptedVolume, CloudOps, RegisterSpec, MARKER_KEY};
use crate::error::{Error, Result};
use crate::event::{Event, EventSink, ProgressInfo, RateMeter};
use crate::features::MirrorImageMode;
use crate::ops::{
    CephOps, ErrorKind, MirrorImageState, OpsError, PoolMirrorMode, SnapshotNamespace,
};
use crate::plan::{Step, VolumeMigration};
use crate::spec::ImageSpec;
use crate::state::{RunState, StateFile};
use crate::wait::{self};

/// Runs the steps of a recorded plan (shared by [`migrate`] and [`crate::cleanup`]).
pub(crate) struct Executor {
    pub(super) src: Arc<dyn CephOps>,
    pub(super) dst: Arc<dyn CephOps>,
    pub(super) dst_cloud: Option<Arc<dyn CloudOps>>,
    pub(super) events: Arc<dyn EventSink>,
    pub(super) opts: RunOptions,
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

    /// Run the state's active steps (the plan's, or an abort's undo plan: see
    /// [`RunState::active_steps`]) from the next one on while `take` accepts the next one,
    /// saving the state after every step (and the failure when one fails).
    pub(crate) async fn run_steps(
        &self,
        state: &mut RunState,
        file: &StateFile,
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
                state.outcome = format!("failed at {}: {e}", step.kind());
                let _ = self.save(state, file);
                self.roll_back_failed_cutover(index, state, file).await;
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

    /// A step of the cutover window failed (the source is demoted, nothing handed over):
    /// promote the source again and start over from the wait before the demotion. A roll
    /// back that fails itself is reported; `abort` or a re-run finish it.
    async fn roll_back_failed_cutover(&self, index: usize, state: &mut RunState, file: &StateFile) {
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
        match self.roll_back_cutover(state, file, restart_at).await {
            Ok(()) => self.events.emit(Event::Warning {
                message: format!(
                    "the cutover was rolled back: {}:{} is primary and writable again; re-run to try the cutover again",
                    self.src.name(),
                    state.plan.migration.image
                ),
            }),
            Err(e) => self.events.emit(Event::Warning {
                message: format!(
                    "rolling the cutover back failed ({e}); {}:{} may still be demoted: run `rbd-relay abort {}` to put it back",
                    self.src.name(),
                    state.plan.migration.image,
                    state.plan.id
                ),
            }),
        }
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
                let mut wait_opts = self.opts.wait.clone();
                wait_opts.initial_sync_only = m.live.is_some();
                let waited = wait::wait_for_replica(
                    src,
                    dst,
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
            Step::WaitForCutover { idle_for_ms } => {
                self.wait_for_cutover(&m, file, std::time::Duration::from_millis(*idle_for_ms))
                    .await
            }
            Step::DemoteSource => {
                if self.demote_source(&m).await? {
                    self.skipped(index, step, "the source is already demoted");
                }
                Ok(())
            }
            Step::PromoteReplica => {
                if self.promote_replica(&m, state, file).await? {
                    self.skipped(index, step, "the replica is already primary");
                }
                Ok(())
            }
            Step::CloneReplica { snap, features } => {
                if self.clone_replica(&m, state, file, snap, *features).await? {
                    self.skipped(index, step, "the clone is already there");
                }
                Ok(())
            }
            Step::VerifyHandover { snap } => self.verify_handover(&m, state, file, snap).await,
            Step::FlattenCopy => {
                if self.flatten_copy(&m, state).await? {
                    self.skipped(index, step, "the copy has no parent");
                }
                Ok(())
            }
            Step::ReleaseSource => {
                if self.release_source(&m, state).await? {
                    self.skipped(index, step, "mirroring of the source is already off");
                }
                Ok(())
            }
            Step::RemoveReplica { snap } => {
                if self.remove_replica(&m, state, snap).await? {
                    self.skipped(index, step, "the replica is already gone");
                }
                Ok(())
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
            Step::RemoveCopy { image_id } => {
                let work = undo::remove_copy(&dst, &m, image_id, self.events.as_ref());
                undo::record(work, index, step, state, self.events.as_ref()).await
            }
            Step::DisableSourceMirroring => {
                let work = undo::disable_source_mirroring(&src, &m);
                undo::record(work, index, step, state, self.events.as_ref()).await
            }
            Step::RemoveMirrorSnapshots { kept } => {
                let work = undo::remove_mirror_snapshots(&src, &m, kept);
                undo::record(work, index, step, state, self.events.as_ref()).await
            }
            Step::RestoreOriginalFeatures { original } => {
                let work = undo::restore_original_features(&src, &m, *original);
                undo::record(work, index, step, state, self.events.as_ref()).await
            }
            Step::RemoveSourceMarker => {
                let work = undo::remove_source_marker(&src, &m, file.dir());
                undo::record(work, index, step, state, self.events.as_ref()).await
            }
            Step::PromoteSource => {
                let work = undo::promote_source(&src, &dst, &m);
                undo::record(work, index, step, state, self.events.as_ref()).await
            }
            Step::DemoteReplica { snap } => {
                let work = undo::demote_replica(&src, &dst, &m, snap, state.replica_id.clone());
                undo::record(work, index, step, state, self.events.as_ref()).await
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
    pub(super) fn save(&self, state: &mut RunState, file: &StateFile) -> Result<()> {
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
