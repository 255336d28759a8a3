//! `1-source-ceph-admin.sh`: checks the source against the plan's facts, enables features
//! and mirroring, waits for the mode's completion signal on the source side and hands over
//! the digest (and, in snapshot mode, the primary mirror snapshot's id).

use std::fmt::Write as _;

use rbd_mirror_core::features::MirrorImageMode;
use rbd_mirror_core::plan::Step;

use crate::clone::SOURCE_SYNC_HANDOFF;
use crate::quote::names;
use crate::render::{next_command, Renderer};
use crate::template::{section, SOURCE};
use crate::{sh_quote, BundleError, Flow};

const PRECONDITIONS: &str = section(SOURCE, "preconditions");
const POOL_MODE_IMAGE_OR_DISABLED: &str = section(SOURCE, "pool_mode_image_or_disabled");
const POOL_MODE_IMAGE: &str = section(SOURCE, "pool_mode_image");
const PRECONDITIONS_HOLD: &str = section(SOURCE, "preconditions_hold");
const STEP_PREFLIGHT: &str = section(SOURCE, "step_preflight");
const STEP_ENABLE_POOL_MIRRORING: &str = section(SOURCE, "step_enable_pool_mirroring");
const STEP_SET_JOURNAL_PAYLOAD: &str = section(SOURCE, "step_set_journal_payload");
const STEP_ENABLE_FEATURES: &str = section(SOURCE, "step_enable_features");
const STEP_ENABLE_MIRRORING: &str = section(SOURCE, "step_enable_mirroring");
const HANDOFF_JOURNAL: &str = section(SOURCE, "handoff_journal");
const HANDOFF_SNAPSHOT: &str = section(SOURCE, "handoff_snapshot");
const HANDOFF_JOURNAL_REPLAYING: &str = section(SOURCE, "handoff_journal_replaying");
const DIGEST_HANDOFF: &str = section(SOURCE, "digest_handoff");

impl Renderer<'_> {
    /// The body of the source script.
    pub(crate) fn source(&self, s: &mut String) -> Result<(), BundleError> {
        let p = self.plan;
        let m = &p.migration;
        let original = p.facts.features;
        let during = p
            .steps
            .iter()
            .find_map(|st| {
                if let Step::EnableFeatures { change } = st {
                    Some(change.apply(original))
                } else {
                    None
                }
            })
            .unwrap_or(original);
        let _ = writeln!(s, "# facts recorded by the plan's read-only preflight");
        let _ = writeln!(s, "ORIGINAL_FEATURES={}", sh_quote(&names(original)));
        let _ = writeln!(s, "MIGRATION_FEATURES={}", sh_quote(&names(during)));
        let _ = writeln!(s, "MODE={}", sh_quote(&m.mode.to_string()));
        let _ = writeln!(s, "ALLOW_LIVE={}", if m.allow_live { "yes" } else { "no" });
        let mirrored = if p.facts.mirroring_was_enabled {
            "yes"
        } else {
            "no"
        };
        let _ = writeln!(s, "MIRRORED_BEFORE={mirrored}");
        self.payload_variables(s);
        let flow = Flow::of(p);
        let in_use = match flow {
            Flow::Copy => "writes after the copy are not in the copy",
            Flow::Clone => "rbd-mirror replicates while it runs; the cutover waits until it is shut off or the volume detached",
        };
        let _ = writeln!(s, "IN_USE_NOTE={}", sh_quote(in_use));
        s.push_str(PRECONDITIONS);
        s.push_str(if p.steps.contains(&Step::EnablePoolMirroring) {
            POOL_MODE_IMAGE_OR_DISABLED
        } else {
            POOL_MODE_IMAGE
        });
        s.push_str(PRECONDITIONS_HOLD);
        for &i in self.steps {
            self.step_header(s, i);
            s.push_str(source_step(&p.steps[i])?);
        }
        match (flow, m.mode) {
            (Flow::Copy, MirrorImageMode::Journal) => {
                s.push_str(HANDOFF_JOURNAL);
                s.push_str(DIGEST_HANDOFF);
            }
            (Flow::Copy, MirrorImageMode::Snapshot) => {
                s.push_str(HANDOFF_SNAPSHOT);
                s.push_str(DIGEST_HANDOFF);
            }
            // by clone the source keeps changing until the cutover: no digest now
            (Flow::Clone, MirrorImageMode::Journal) => {
                s.push_str(HANDOFF_JOURNAL_REPLAYING);
                s.push_str(SOURCE_SYNC_HANDOFF);
            }
            (Flow::Clone, MirrorImageMode::Snapshot) => {
                s.push_str(HANDOFF_SNAPSHOT);
                s.push_str(SOURCE_SYNC_HANDOFF);
            }
        }
        let next = self.next_script().map_or("", |x| x.file_name());
        next_command(s, "the Ceph destination admin runs", next);
        Ok(())
    }
}

/// The section of `step` in the source script.
fn source_step(step: &Step) -> Result<&'static str, BundleError> {
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
        | Step::RemoveReplica { .. } => Err(BundleError::not_in(step, "source")),
        Step::Preflight => Ok(STEP_PREFLIGHT),
        Step::SetJournalPayload { .. } => Ok(STEP_SET_JOURNAL_PAYLOAD),
        Step::EnablePoolMirroring => Ok(STEP_ENABLE_POOL_MIRRORING),
        Step::EnableFeatures { .. } => Ok(STEP_ENABLE_FEATURES),
        Step::EnableMirroring { .. } => Ok(STEP_ENABLE_MIRRORING),
        Step::WaitForReplica
        | Step::CopyReplica
        | Step::SetCopyFeatures { .. }
        | Step::Verify
        | Step::DisableMirroring
        | Step::RestoreFeatures { .. }
        | Step::RestoreJournalPayload { .. }
        | Step::AdoptVolume { .. }
        | Step::GrowCopy { .. }
        | Step::SnapshotAndProtect { .. }
        | Step::RegisterImage { .. }
        | Step::CheckMinDisk { .. } => Err(BundleError::not_in(step, "source")),
    }
}
