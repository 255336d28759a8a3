//! `4-source-ceph-admin-cleanup.sh`: refuses unless given the destination's verified-copy
//! handoff and the source's digest still equals it; only then disables mirroring (which
//! deletes the replica) and restores the original features.

use std::fmt::Write as _;

use rbd_mirror_core::features::plan_restore;
use rbd_mirror_core::plan::Step;

use crate::quote::names;
use crate::render::Renderer;
use crate::template::{section, CLEANUP};
use crate::{sh_quote, BundleError};

const PRECONDITIONS: &str = section(CLEANUP, "preconditions");
const NOTHING_TO_CLEAN_UP: &str = section(CLEANUP, "nothing_to_clean_up");
const STEP_DISABLE_MIRRORING: &str = section(CLEANUP, "step_disable_mirroring");
const STEP_RESTORE_FEATURES: &str = section(CLEANUP, "step_restore_features");
const FEATURES_AS_BEFORE: &str = section(CLEANUP, "features_as_before");
pub(crate) const STEP_RESTORE_JOURNAL_PAYLOAD: &str =
    section(CLEANUP, "step_restore_journal_payload");

impl Renderer<'_> {
    /// The body of the cleanup script.
    pub(crate) fn cleanup(&self, s: &mut String) -> Result<(), BundleError> {
        let p = self.plan;
        let original = p.facts.features;
        let (_, lost) = plan_restore(original, original);
        let lost = p
            .steps
            .iter()
            .find_map(|st| {
                if let Step::RestoreFeatures { lost, .. } = st {
                    Some(*lost)
                } else {
                    None
                }
            })
            .unwrap_or(lost);
        let carries = |wanted: &Step| self.steps.iter().any(|&i| p.steps[i] == *wanted);
        let restores = self
            .steps
            .iter()
            .any(|&i| matches!(p.steps[i], Step::RestoreFeatures { .. }));
        let before: Vec<String> = p
            .facts
            .mirror_snapshots_before
            .iter()
            .map(u64::to_string)
            .collect();
        let _ = writeln!(s, "# facts recorded by the plan's read-only preflight");
        let _ = writeln!(s, "ORIGINAL_FEATURES={}", sh_quote(&names(original)));
        if !self.steps.is_empty() {
            let restorable = names(original - lost);
            let _ = writeln!(s, "RESTORABLE_FEATURES={}", sh_quote(&restorable));
        }
        self.payload_variables(s);
        if carries(&Step::DisableMirroring) {
            let _ = writeln!(s, "MIRROR_SNAPSHOTS_BEFORE={}", sh_quote(&before.join(" ")));
            let _ = writeln!(
                s,
                "SYNC_POINTS_BEFORE={}",
                sh_quote(&crate::render::sync_points_before(p))
            );
        }
        s.push_str(PRECONDITIONS);
        if self.steps.is_empty() {
            s.push_str(NOTHING_TO_CLEAN_UP);
        }
        for &i in self.steps {
            self.step_header(s, i);
            s.push_str(cleanup_step(&p.steps[i])?);
        }
        if !self.steps.is_empty() && !restores {
            s.push_str(FEATURES_AS_BEFORE);
        }
        if !lost.is_empty() {
            let note = format!(
                "note: {lost} was disabled for the migration and can never be enabled again"
            );
            let _ = writeln!(s, "say {}", sh_quote(&note));
        }
        s.push_str("\nsay \"done: the migration is complete. The source image itself is kept; deleting it is a separate decision.\"\n");
        Ok(())
    }
}

/// The section of `step` in the cleanup script.
fn cleanup_step(step: &Step) -> Result<&'static str, BundleError> {
    match step {
        Step::UploadToImage { .. } => Err(BundleError::upload_step(step)),
        Step::RemoveCopy { .. }
        | Step::DisableSourceMirroring
        | Step::RemoveMirrorSnapshots { .. }
        | Step::RestoreOriginalFeatures { .. }
        | Step::RemoveSourceMarker
        | Step::PromoteSource
        | Step::DemoteReplica { .. } => Err(BundleError::undo_step(step)),
        Step::WaitForCutover { .. }
        | Step::DemoteSource
        | Step::PromoteReplica
        | Step::CloneReplica { .. }
        | Step::VerifyHandover { .. }
        | Step::FlattenCopy
        | Step::ReleaseSource
        | Step::RemoveReplica { .. } => Err(BundleError::not_in(step, "cleanup")),
        Step::DisableMirroring => Ok(STEP_DISABLE_MIRRORING),
        Step::RestoreFeatures { .. } => Ok(STEP_RESTORE_FEATURES),
        Step::RestoreJournalPayload { .. } => Ok(STEP_RESTORE_JOURNAL_PAYLOAD),
        Step::Preflight
        | Step::SetJournalPayload { .. }
        | Step::EnablePoolMirroring
        | Step::EnableFeatures { .. }
        | Step::EnableMirroring { .. }
        | Step::WaitForReplica
        | Step::CopyReplica
        | Step::SetCopyFeatures { .. }
        | Step::Verify
        | Step::AdoptVolume { .. }
        | Step::GrowCopy { .. }
        | Step::SnapshotAndProtect { .. }
        | Step::RegisterImage { .. }
        | Step::CheckMinDisk { .. } => Err(BundleError::not_in(step, "cleanup")),
    }
}
