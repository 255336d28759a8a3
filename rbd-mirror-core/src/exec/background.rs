//! The work a run does on blocking threads beside its steps: the copy of the replica into
//! the destination pool (which may trail rbd-mirror's sync) and the digests that `verify`
//! compares. Started by the wait or copy step, finished by the copy and verify steps.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::executor::Executor;
use super::*;
use crate::error::{Error, Result};
use crate::event::{Event, ProgressInfo, RateMeter};
use crate::ops::{CephOps, ErrorKind, OpsError};
use crate::plan::{Step, VolumeMigration};
use crate::spec::ImageSpec;
use crate::state::{Record, RunState};
use crate::wait;

/// Work of a run on a blocking thread beside its steps: the copy on the destination (see
/// [`CephOps::copy_trailing`]) or the source's digest. Dropping it (the run ends without
/// using it) asks the thread to stop.
pub(super) struct Background {
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

/// Whether more of the replica is final, for the copy: `Some(bytes)` final so far (`u64::MAX`:
/// all of it), `None` while the replica does not exist yet.
type Ready = Box<dyn FnMut() -> std::result::Result<Option<u64>, OpsError> + Send>;

impl Executor {
    /// Make room for the copy: a copy left by an interrupted run of this migration is
    /// removed (it is started over), any other image under the name is refused. Records
    /// that the copy is ours from now on, and starts hashing the source.
    pub(super) async fn prepare_copy(
        &self,
        m: &VolumeMigration,
        state: &mut RunState,
        file: &dyn Record,
    ) -> Result<()> {
        let target = m.copy_target();
        let dst = self.dst("copy_replica")?;
        if let Some(path) = file.file() {
            wait_for_earlier_copy(path, state).await?;
        }
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
                _ => {
                    return Err(Error::NotOurCopy {
                        cluster: dst.name().to_string(),
                        target: target.to_string(),
                        found_id: found,
                        migration: m.id(),
                        recorded_id: state.copy_id.clone(),
                    })
                }
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
        self.start_source_digest(m)
    }

    /// Snapshot mode: start the copy with the wait, trailing rbd-mirror's sync of the
    /// source's newest primary mirror snapshot (see [`wait::replica_final_bytes`]). The
    /// image is not in use (no live migration), so what rbd-mirror has copied for that
    /// snapshot does not change any more.
    pub(super) async fn start_trailing_copy(
        &self,
        m: &VolumeMigration,
        state: &mut RunState,
        file: &dyn Record,
    ) -> Result<()> {
        let src = self.src("copy_replica")?;
        let image = m.image.clone();
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
        let (dst, replica) = (self.dst("copy_replica")?, m.replica());
        let object_size = state.plan.facts.object_size;
        let ready = move || -> std::result::Result<Option<u64>, OpsError> {
            match dst.snapshots(&replica) {
                Ok(snaps) => Ok(Some(wait::replica_final_bytes(&snaps, want, object_size))),
                Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        };
        let running = self.spawn_copy(m, file.file(), Box::new(ready))?;
        if let Ok(mut slot) = self.copy.lock() {
            *slot = Some(running);
        }
        Ok(())
    }

    /// Start copying the replica into the destination pool on a blocking thread. Its
    /// progress is reported as `copy` events as soon as a first piece is done, then twice a
    /// second, and at the end (during the wait too, for a copy trailing the sync). The new
    /// image's id goes into the state file (`state_path`) before anything is written to it.
    pub(super) fn spawn_copy(
        &self,
        m: &VolumeMigration,
        state_path: Option<&Path>,
        mut ready: Ready,
    ) -> Result<Background> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let cancel = Arc::new(AtomicBool::new(false));
        let stop = cancel.clone();
        let events = self.events.clone();
        let (dst, replica, target) = (self.dst("copy_replica")?, m.replica(), m.copy_target());
        let (slot, state_path) = (
            self.created_copy_id.clone(),
            state_path.map(Path::to_path_buf),
        );
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
                    let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
                    *slot = Some(id.to_string());
                    record_created_id(state_path.as_deref(), id)
                };
                // held while this thread may create or record the copy: a later run of the
                // same migration waits for it (see `wait_for_earlier_copy`), so it never
                // finds a copy of ours whose id is not recorded yet
                let _held = match &state_path {
                    Some(path) => Some(hold_copy_lock(path)?),
                    None => None,
                };
                if stop.load(Ordering::Relaxed) {
                    return Err(OpsError::new(
                        ErrorKind::Cancelled,
                        "copy",
                        "the run that started this copy has ended",
                    ));
                }
                dst.copy_trailing(&replica, &target, &mut *ready, &mut progress, &mut created)
            },
        ));
        Ok(Background { task, cancel })
    }

    /// Wait for the copy to end; returns the copy's digest.
    pub(super) async fn finish_copy(&self, mut running: Background) -> Result<String> {
        (&mut running.task).await.map_err(|e| Error::Ceph {
            step: "copy_replica".into(),
            cluster: self
                .dst("copy_replica")
                .map(|d| d.name().to_string())
                .unwrap_or_default(),
            target: String::new(),
            source: OpsError::new(ErrorKind::Other, "copy task", e.to_string()),
        })?
    }

    /// Stop a copy that is still running (the run failed before the copy step).
    pub(super) async fn stop_copy(&self) {
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
    pub(super) fn start_source_digest(&self, m: &VolumeMigration) -> Result<()> {
        if self
            .early_source_digest
            .lock()
            .map(|d| d.is_some())
            .unwrap_or(false)
        {
            return Ok(()); // already started with the wait
        }
        let (src, image) = (self.src("verify")?, m.image.clone());
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
        Ok(())
    }

    /// The source digest started with the copy in this process, if any: `None` when there
    /// is none (a run resumed at `verify`) or its task did not finish; its error otherwise.
    async fn take_source_digest(&self) -> Option<Result<String>> {
        let mut early = self.early_source_digest.lock().ok()?.take()?;
        (&mut early.task).await.ok()
    }

    /// Compare the digests of the source and the copy (those computed during the copy when
    /// there are); a mismatch sends the next run back to the wait, to copy again.
    pub(super) async fn verify(
        &self,
        m: &VolumeMigration,
        state: &mut RunState,
        file: &dyn Record,
    ) -> Result<()> {
        let size = state.plan.facts.size;
        let (src, dst) = (self.src("verify")?, self.dst("verify")?);
        let early = self.take_source_digest().await;
        let early_copy = self
            .early_copy_digest
            .lock()
            .map(|mut d| d.take())
            .unwrap_or(None);
        let (a, b) = match (early, early_copy) {
            // both hashed during the copy: the copy as read back right after it was written
            (Some(a), Some(b)) => (a?, b),
            (Some(a), None) => (a?, self.digest(dst.clone(), m.copy_target(), "copy").await?),
            (None, _) => {
                let (a, b) = tokio::join!(
                    self.digest(src.clone(), m.image.clone(), "source"),
                    self.digest(dst.clone(), m.copy_target(), "copy")
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
                source_image: format!("{}:{}", src.name(), m.image),
                source_digest: a,
                copy: format!("{}:{}", dst.name(), m.copy_target()),
                copy_digest: b,
            });
        }
        self.events.emit(Event::Progress(ProgressInfo::done(
            "verify",
            format!("{size} bytes equal, sha256 {a}"),
        )));
        Ok(())
    }

    /// The sha256 of `image` on `c`, with `verify` progress events labelled `label`.
    async fn digest(
        &self,
        c: Arc<dyn CephOps>,
        image: ImageSpec,
        label: &'static str,
    ) -> Result<String> {
        let events = self.events.clone();
        let name = format!("{}:{image}", c.name());
        let c2 = c.clone();
        on_ceph("verify", c.name().to_string(), name, move || {
            let mut last = Instant::now() - std::time::Duration::from_secs(2);
            let mut cb = |done: u64, total: u64| -> bool {
                if last.elapsed().as_millis() >= 1000 {
                    last = Instant::now();
                    events.emit(Event::Progress(ProgressInfo {
                        phase: "verify".into(),
                        percent: (total > 0).then(|| 100.0 * done as f64 / total as f64),
                        bytes_per_second: None,
                        eta_seconds: None,
                        detail: label.into(),
                    }));
                }
                true
            };
            c2.digest(&image, &mut cb)
        })
        .await
    }
}

/// The lock a copy thread holds while it may create or record the copy (`ID.copy.lock`
/// beside the state file). A run whose future was dropped leaves its blocking copy thread
/// running until it sees the cancel flag; the next run waits for that thread here.
fn copy_lock_path(state_path: &Path) -> std::path::PathBuf {
    state_path.with_extension("copy.lock")
}

/// Take the copy lock (blocking): the copy thread's side.
fn hold_copy_lock(state_path: &Path) -> std::result::Result<std::fs::File, OpsError> {
    let lock = || -> std::io::Result<std::fs::File> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(copy_lock_path(state_path))?;
        f.lock()?;
        Ok(f)
    };
    lock().map_err(|e| OpsError::new(ErrorKind::Other, "copy lock", e.to_string()))
}

/// Wait until no copy thread of an earlier (dropped) run of this migration is still at
/// work, then take over the copy id it may have recorded in the state file meanwhile.
async fn wait_for_earlier_copy(state_path: &Path, state: &mut RunState) -> Result<()> {
    let path = state_path.to_path_buf();
    let held = tokio::task::spawn_blocking(move || hold_copy_lock(&path))
        .await
        .map_err(|e| Error::State {
            path: copy_lock_path(state_path),
            reason: e.to_string(),
        })?
        .map_err(|e| Error::State {
            path: copy_lock_path(state_path),
            reason: e.to_string(),
        })?;
    drop(held);
    if state.copy_id.is_none() {
        if let Some(recorded) = crate::state::load(state_path)? {
            state.copy_id = recorded.copy_id;
        }
    }
    Ok(())
}
