//! Finishing only the source side of a migration whose copy is verified: disable mirroring
//! (which deletes the replica, never the copy), remove the mirror snapshots the tool made and
//! restore the original features, without running the plan's remaining cloud steps.
//!
//! It exists for split roles: the adoption or registration may be done by someone else (or
//! later), while the source's admin wants the source back to how it was now. It runs the
//! same executor steps as [`crate::exec::migrate`], so the state file advances the same way
//! and a later `resume` runs only what is left (the cloud steps).

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::event::EventSink;
use crate::exec::{unmark_source, Executor, RunOptions};
use crate::ops::CephOps;
use crate::plan::Step;
use crate::state;

/// What [`cleanup`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanupReport {
    /// Migration id.
    pub id: String,
    /// `cluster:pool/image` of the source.
    pub source: String,
    /// `cluster:pool/image` of the verified copy.
    pub copy: String,
    /// Steps this call ran (kinds).
    pub ran: Vec<String>,
    /// The source side was already cleaned up (nothing ran).
    pub already_done: bool,
    /// Steps of the plan still to do (the cloud steps), for `rbd-relay resume`.
    pub remaining: Vec<String>,
    /// The state record was removed (`--forget`).
    pub forgotten: bool,
}

/// Clean up the source side of migration `id` (recorded in `state_dir`) whose copy is
/// verified: run the plan's `disable_mirroring` and `restore_features` steps that have not run
/// yet, and nothing after them. Refuses when the copy is not verified (see `resume` and
/// `abort`) or the migration was aborted. With `forget`, the state record of a migration that
/// is then finished is removed (`delete-source` needs it: run that first).
///
/// Cancel safety: safe to drop at any await: each step it runs is recorded before the next, so
/// the next call runs what is left (test:
/// `cancel_tests::cleanup_delete_source_and_adopt_image_dropped_at_any_await_are_finished_by_the_next_call`).
pub async fn cleanup(
    state_dir: &Path,
    id: &str,
    src: Arc<dyn CephOps>,
    dst: Arc<dyn CephOps>,
    forget: bool,
    events: Arc<dyn EventSink>,
) -> Result<CleanupReport> {
    let (file, mut state) = state::lock_recorded(state_dir, id)?;
    let m = state.plan.migration.clone();
    let source = format!("{}:{}", m.source.name, m.image);
    let copy = format!("{}:{}", m.destination.name, m.copy_target());
    if state.aborted {
        return Err(Error::CleanupRefusedAborted { id: id.to_string() });
    }
    if state.aborting() {
        return Err(Error::abort_unfinished(&state));
    }
    let verify_at = state
        .plan
        .steps
        .iter()
        .position(|s| matches!(s, Step::Verify | Step::VerifyHandover { .. }));
    let verified = state.verified() && verify_at.is_some_and(|v| state.next_step > v);
    if !verified {
        return Err(Error::CleanupRefusedUnverified {
            id: id.to_string(),
            copy,
            next: state.next_step + 1,
            steps: state.plan.steps.len(),
            outcome: state.outcome.clone(),
        });
    }
    let before = state.next_step;
    let exec = Executor::new(src.clone(), dst, None, events, RunOptions::default());
    exec.run_steps(&mut state, &file, |s| {
        // a copy: the source's two steps; a clone: the rest of the plan after the
        // verification, all on the clusters (flatten, release, features, the replica)
        matches!(
            s,
            Step::DisableMirroring
                | Step::RestoreFeatures { .. }
                | Step::RestoreJournalPayload { .. }
                | Step::FlattenCopy
                | Step::ReleaseSource
                | Step::RemoveReplica { .. }
        )
    })
    .await?;
    // the source is restored: its marker goes (see `crate::preflight::SourceMarker`)
    unmark_source(&src, &state, state_dir).await?;
    let ran: Vec<String> = state.plan.steps[before..state.next_step]
        .iter()
        .map(|s| s.kind().to_string())
        .collect();
    let remaining: Vec<String> = state.plan.steps[state.next_step..]
        .iter()
        .map(|s| s.kind().to_string())
        .collect();
    if !state.finished() && !ran.is_empty() {
        state.outcome = format!(
            "source cleaned up; still to do: {} (rbd-relay resume {id})",
            remaining.join(", ")
        );
        file.save(&state)?;
    }
    let mut forgotten = false;
    if forget {
        if !state.finished() {
            return Err(Error::ForgetRefusedUnfinished {
                id: id.to_string(),
                remaining,
            });
        }
        file.remove()?;
        forgotten = true;
    }
    Ok(CleanupReport {
        id: id.to_string(),
        source,
        copy,
        already_done: ran.is_empty(),
        ran,
        remaining,
        forgotten,
    })
}
