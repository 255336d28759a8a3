//! Undoing a migration that will not be finished (`rbd-relay abort ID`): put the source back
//! as it was and remove what this migration made on the destination, without ever touching
//! the source's data.
//!
//! An abort is a plan like a migration: [`undo_plan`] derives typed undo [`Step`]s from the
//! recorded state (which steps ran or may have run, the id of the copy it created, the
//! source's original features and mirror snapshots), the plan is recorded in the state file
//! ([`crate::state::UndoRun`]) and the migration's executor runs it, saving the state after
//! every step: an interrupted abort continues where it stopped, and `--dry-run`
//! ([`plan_abort`]) prints it without changing anything. What is undone, each only when
//! needed (every undo step first looks whether its effect is already there, so a re-run
//! converges, and a second abort is a no-op):
//!
//! - the destination copy, only if this migration created it (the image under the copy name
//!   has the id recorded when the copy created it: another migration's copy under the same
//!   name is left alone and named) and it was not handed to a cloud; a *verified* copy only
//!   with [`AbortOptions::discard_verified_copy`] (otherwise `cleanup` is the way: keep the
//!   copy, finish the source side);
//! - mirroring of the source image, only if it was off before the migration (disabling it
//!   deletes the replica on the destination; the source image itself is untouched);
//! - mirror snapshots of the source that did not exist before the migration;
//! - the source's features, back to exactly the recorded original ones (as far as librbd
//!   allows: a deep-flatten disabled with `--disable-object-map` cannot come back);
//! - the source's journal payload override (image metadata
//!   `conf_rbd_journal_max_payload_bytes`, set by a live journal-mode migration), back to
//!   the image's own value, or removed when it had none;
//! - the migration's marker on the source (image metadata, see
//!   [`crate::preflight::SourceMarker`]), last.
//!
//! Pool mirror modes are left as they are and only reported: other images may be mirrored
//! through the same pool and peers by now. After adoption or registration abort refuses:
//! the destination cloud owns the copy then. The state is marked `aborted`, so a later
//! `migrate` of the same image starts a fresh plan.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::event::EventSink;
use crate::exec::{on_ceph, Executor, RunOptions};
use crate::features::plan_restore;
use crate::ops::{CephOps, ErrorKind};
use crate::plan::{render_steps, Step, VolumeMigration};
use crate::state::{self, RunState, UndoRun};

/// Choices of an abort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortOptions {
    /// Also remove a copy that was already verified equal to the source (refused without).
    pub discard_verified_copy: bool,
    /// Journal mode: after the source's mirroring is off, how long to keep looking for a
    /// sync point rbd-mirror makes late. A disable that lands as the daemon starts an image
    /// sync can be followed by the sync point's snapshot (measured on 16.2: at once or
    /// within 0.14 s after the disable returned, 2 times in 22 tries at the sync's start).
    #[serde(default = "default_sync_point_watch")]
    pub sync_point_watch: Duration,
}

fn default_sync_point_watch() -> Duration {
    Duration::from_secs(3)
}

impl Default for AbortOptions {
    fn default() -> Self {
        AbortOptions {
            discard_verified_copy: false,
            sync_point_watch: default_sync_point_watch(),
        }
    }
}

/// What [`abort`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortReport {
    /// Migration id.
    pub id: String,
    /// `cluster:pool/image` of the source.
    pub source: String,
    /// `cluster:pool/image` of the copy.
    pub copy: String,
    /// What this call undid, one line each.
    pub undone: Vec<String>,
    /// Things the operator should know (left as they are on purpose).
    pub notes: Vec<String>,
}

/// The undo plan of a migration: what [`abort`] runs, what `abort --dry-run` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UndoPlan {
    /// Migration id.
    pub id: String,
    /// The migration undone (the steps are described in its terms).
    pub migration: VolumeMigration,
    /// The undo steps, in the order they run.
    pub steps: Vec<Step>,
    /// The next step to run: 0, or where an interrupted abort of this plan stopped.
    pub next_step: usize,
    /// Things left as they are on purpose, for the operator.
    pub notes: Vec<String>,
}

impl UndoPlan {
    /// The dry-run text: a header, then one numbered line per step with the role that runs
    /// it (as a migration's plan prints), then the notes.
    pub fn render(&self) -> String {
        let m = &self.migration;
        let mut out = format!(
            "undo plan {}: put {}:{} back as it was, remove what the migration made on {}\n",
            self.id, m.source.name, m.image, m.destination.name
        );
        if self.steps.is_empty() {
            out.push_str("    nothing to undo: the migration changed nothing yet\n");
        }
        out.push_str(&render_steps(&self.steps, m));
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        out
    }
}

/// What undoes one step of a migration's plan: undo steps, and notes on what is left as it
/// is on purpose.
#[derive(Default)]
struct UndoOf {
    steps: Vec<Step>,
    notes: Vec<String>,
}

impl UndoOf {
    fn steps(steps: Vec<Step>) -> Self {
        Self {
            steps,
            notes: Vec::new(),
        }
    }
}

/// The undo of `step` of `state`'s plan, a step that ran or may have run. Every step a plan
/// can hold has its arm here (no catch-all): a new forward step says here what undoes it.
/// A step that changes the source also undoes the marker written before the run's first
/// change to it ([`Step::RemoveSourceMarker`], which [`undo_plan`] puts last).
fn undo_of(step: &Step, state: &RunState) -> UndoOf {
    let (m, facts) = (&state.plan.migration, &state.plan.facts);
    let source = format!("{}:{}", m.source.name, m.image);
    match step {
        // read only
        Step::Preflight | Step::Verify | Step::CheckMinDisk { .. } => UndoOf::default(),
        // pool modes stay: other images may be mirrored through the pool and peers by now
        Step::EnablePoolMirroring => UndoOf {
            steps: vec![Step::RemoveSourceMarker],
            notes: vec![format!(
                "image-mode mirroring of pool {} was turned on by this migration and is left on (other images may use it); if nothing else is mirrored: rbd --cluster {} mirror pool disable {} (and the same on {})",
                m.image.pool, m.source.name, m.image.pool, m.destination.name
            )],
        },
        Step::EnableFeatures { change } => {
            let (_, lost) = plan_restore(change.apply(facts.features), facts.features);
            UndoOf {
                steps: vec![
                    Step::RestoreOriginalFeatures {
                        original: facts.features,
                    },
                    Step::RemoveSourceMarker,
                ],
                notes: if lost.is_empty() {
                    Vec::new()
                } else {
                    vec![format!(
                        "{lost} cannot be enabled again on {source} (disabled with --disable-object-map)"
                    )]
                },
            }
        }
        // the writer's journal payload: the image's own value back (or none)
        Step::SetJournalPayload { .. } => UndoOf::steps(vec![
            Step::RestoreJournalPayload {
                original: facts.journal_payload_before.clone(),
            },
            Step::RemoveSourceMarker,
        ]),
        // mirroring that was on before the migration stays on
        Step::EnableMirroring { .. } if facts.mirroring_was_enabled => {
            UndoOf::steps(vec![Step::RemoveSourceMarker])
        }
        Step::EnableMirroring { .. } => UndoOf::steps(vec![
            Step::DisableSourceMirroring,
            Step::RemoveMirrorSnapshots {
                kept: facts.mirror_snapshots_before.clone(),
            },
            Step::RemoveSourceMarker,
        ]),
        // the copy, made by the copy step or, in snapshot mode, already with the wait (it
        // trails rbd-mirror's sync): only the image with the id its creation recorded
        Step::WaitForReplica | Step::CopyReplica => match &state.copy_id {
            Some(id) => UndoOf::steps(vec![Step::RemoveCopy {
                image_id: id.clone(),
            }]),
            None => UndoOf::default(),
        },
        // on the copy: they go with it (a copy with snapshots is refused by RemoveCopy)
        Step::SetCopyFeatures { .. } | Step::SnapshotAndProtect { .. } | Step::GrowCopy { .. } => {
            UndoOf::default()
        }
        // they put the source back themselves
        Step::DisableMirroring
        | Step::RestoreFeatures { .. }
        | Step::RestoreJournalPayload { .. } => {
            UndoOf::steps(vec![Step::RemoveSourceMarker])
        }
        // once sent, the cloud owns the copy and abort refuses (RunState::handed_to_cloud);
        // before that they changed nothing
        Step::AdoptVolume { .. } | Step::RegisterImage { .. } => UndoOf::default(),
        // the upload made a Glance image in the source cloud: it stays (a bootable
        // migration's image is the source's copy there; remove it in that cloud if unwanted)
        Step::UploadToImage { .. } => UndoOf::default(),
        // the handover by clone: read only, or on the copy (it goes with it)
        Step::WaitForCutover { .. } | Step::VerifyHandover { .. } | Step::FlattenCopy => {
            UndoOf::default()
        }
        // the source was demoted: promoted again (after the replica's promotion is undone)
        Step::DemoteSource => UndoOf::steps(vec![Step::PromoteSource, Step::RemoveSourceMarker]),
        Step::PromoteReplica => UndoOf::steps(vec![Step::DemoteReplica {
            snap: crate::exec::handover_snapshot().to_string(),
        }]),
        // the clone: only the image with the id its creation recorded
        Step::CloneReplica { .. } => match &state.copy_id {
            Some(id) => UndoOf::steps(vec![Step::RemoveCopy {
                image_id: id.clone(),
            }]),
            None => UndoOf::default(),
        },
        // they put the source back themselves; the replica goes with its own undo
        Step::ReleaseSource => UndoOf::steps(vec![Step::RemoveSourceMarker]),
        Step::RemoveReplica { .. } => UndoOf::default(),
        // undo steps are never in a migration's plan
        Step::RemoveCopy { .. }
        | Step::DisableSourceMirroring
        | Step::RemoveMirrorSnapshots { .. }
        | Step::RestoreOriginalFeatures { .. }
        | Step::RemoveSourceMarker
        | Step::PromoteSource
        | Step::DemoteReplica { .. } => UndoOf::default(),
    }
}

/// The undo plan of `state`, from what is recorded alone (never from how the images look
/// now, so an interrupted abort finds the same plan): the undo of every step that ran or
/// may have run (those before the next step, and the next one, which a killed run may have
/// left half done), latest first, each undo step once, the marker last.
pub fn undo_plan(state: &RunState) -> UndoPlan {
    let reached = (state.next_step + 1).min(state.plan.steps.len());
    let (mut steps, mut notes) = (Vec::new(), Vec::new());
    for step in state.plan.steps[..reached].iter().rev() {
        let undo = undo_of(step, state);
        for s in undo.steps {
            if !steps.contains(&s) {
                steps.push(s);
            }
        }
        notes.extend(undo.notes);
    }
    // the source is as it was by then: its marker goes last
    if let Some(i) = steps.iter().position(|s| *s == Step::RemoveSourceMarker) {
        let marker = steps.remove(i);
        steps.push(marker);
    }
    UndoPlan {
        id: state.plan.id.clone(),
        migration: state.plan.migration.clone(),
        steps,
        next_step: 0,
        notes,
    }
}

/// The undo plan of `state` (the recorded one when an abort started), after the refusals
/// that change nothing: a copy handed to a cloud, a finished migration, a verified copy
/// without [`AbortOptions::discard_verified_copy`]. Reads the image under the copy name
/// (only), to refuse or to note one that is not this migration's.
async fn checked_plan(
    state: &RunState,
    dst: &Arc<dyn CephOps>,
    opts: AbortOptions,
) -> Result<UndoPlan> {
    let (id, m) = (&state.plan.id, &state.plan.migration);
    let target = m.copy_target();
    let copy = format!("{}:{target}", dst.name());
    if state.handed_to_cloud() {
        let handed = match (&state.adopted, &state.registered) {
            (Some(v), _) => format!("Cinder volume {}", v.id),
            (_, Some(i)) => format!("Glance image {}", i.id),
            _ => "the request was sent".to_string(),
        };
        let cloud = m
            .adopt
            .as_ref()
            .map(|a| a.cloud.clone())
            .or_else(|| m.register.as_ref().map(|r| r.cloud.clone()))
            .unwrap_or_default();
        return Err(Error::AbortRefusedAfterHandover {
            id: id.clone(),
            cloud,
            handed,
        });
    }
    if state.finished() && !state.aborted {
        return Err(Error::AbortRefusedFinished {
            id: id.clone(),
            cluster: dst.name().to_string(),
            target: target.to_string(),
        });
    }
    let mut plan = undo_plan(state);
    if let Some(u) = &state.undo {
        plan.steps = u.steps.clone();
        if state.aborting() {
            plan.next_step = u.next_step;
        }
    }
    let removes_copy = plan.steps[plan.next_step..]
        .iter()
        .any(|s| matches!(s, Step::RemoveCopy { .. }));
    if !state.copy_started && !removes_copy {
        return Ok(plan);
    }
    let (d, t) = (dst.clone(), target.clone());
    let under_name = on_ceph(
        "abort",
        dst.name().to_string(),
        target.to_string(),
        move || match d.stat(&t) {
            Ok(st) => Ok(Some(st.id)),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        },
    )
    .await?;
    match (&under_name, &state.copy_id) {
        (Some(found), Some(ours)) if found == ours => {
            if removes_copy && state.verified() && !opts.discard_verified_copy {
                return Err(Error::AbortRefusedVerifiedCopy {
                    id: id.clone(),
                    copy,
                });
            }
        }
        (Some(found), _) => plan.notes.push(format!(
            "{copy} (image id {found}) was not created by migration {id} and is left alone (it may be another migration's copy)"
        )),
        (None, _) => {}
    }
    Ok(plan)
}

/// The undo plan [`abort`] would run now, for `abort --dry-run`: read only, no lock taken.
/// Refuses as [`abort`] would.
///
/// Cancel safety: read only; dropping it at any await changes nothing.
pub async fn plan_abort(
    state_dir: &Path,
    id: &str,
    dst: Arc<dyn CephOps>,
    opts: AbortOptions,
) -> Result<UndoPlan> {
    let state = state::recorded(state_dir, id)?;
    checked_plan(&state, &dst, opts).await
}

/// Abort migration `id` recorded in `state_dir`: run its undo plan (see the module docs),
/// or continue the one an interrupted abort recorded, and mark the state `aborted`. Takes
/// the migration's lock.
///
/// Cancel safety: safe to drop at any await: the undo plan is recorded and each undo step with
/// it, so the next call continues it (test:
/// `cancel_tests::an_abort_dropped_at_any_await_is_finished_by_the_next_call`).
pub async fn abort(
    state_dir: &Path,
    id: &str,
    src: Arc<dyn CephOps>,
    dst: Arc<dyn CephOps>,
    opts: AbortOptions,
    events: Arc<dyn EventSink>,
) -> Result<AbortReport> {
    let (file, mut state) = state::lock_recorded(state_dir, id)?;
    let plan = checked_plan(&state, &dst, opts).await?;
    if !state.aborting() {
        // a fresh abort, or again over an aborted one: every step looks once more
        state.undo = Some(UndoRun::new(plan.steps.clone()));
        if !state.aborted {
            state.outcome = "aborting".into();
        }
        file.save(&state)?;
    }
    let before = state.undo.as_ref().map_or(0, |u| u.undone.len());
    let mut run = RunOptions::default();
    run.wait.sync_point_watch = opts.sync_point_watch;
    let exec = Executor::new(src.clone(), dst.clone(), None, events, run);
    exec.run_steps(&mut state, &file, |_| true).await?;
    if !state.aborted {
        // an empty undo plan: nothing ran to mark it
        state.mark_aborted();
        file.save(&state)?;
    }
    let m = &state.plan.migration;
    Ok(AbortReport {
        id: id.to_string(),
        source: format!("{}:{}", src.name(), m.image),
        copy: format!("{}:{}", dst.name(), m.copy_target()),
        undone: state
            .undo
            .as_ref()
            .map(|u| u.undone[before..].to_vec())
            .unwrap_or_default(),
        notes: plan.notes,
    })
}
