//! `2-destination-ceph-admin.sh`: checks the destination's pools, waits for the replica
//! (complete, with the source's digest), copies it, sets the copy's features, verifies its
//! digest, snapshots and protects it for Glance, and only then hands over the verified copy.

use std::fmt::Write as _;

use rbd_mirror_core::features::Features;
use rbd_mirror_core::plan::Step;

use crate::quote::names;
use crate::render::{next_command, Renderer};
use crate::template::{section, DESTINATION};
use crate::{sh_quote, BundleError, Script};

const ARGUMENTS: &str = section(DESTINATION, "arguments");
const ENABLE_POOL_MIRRORING: &str = section(DESTINATION, "enable_pool_mirroring");
const PRECONDITIONS: &str = section(DESTINATION, "preconditions");
const STEP_WAIT_FOR_REPLICA: &str = section(DESTINATION, "step_wait_for_replica");
const STEP_COPY_REPLICA: &str = section(DESTINATION, "step_copy_replica");
const STEP_SET_COPY_FEATURES: &str = section(DESTINATION, "step_set_copy_features");
const STEP_VERIFY: &str = section(DESTINATION, "step_verify");
const STEP_SNAPSHOT_AND_PROTECT: &str = section(DESTINATION, "step_snapshot_and_protect");
const STEP_GROW_COPY: &str = section(DESTINATION, "step_grow_copy");
/// Reached only after the verify step passed: the verified-copy handoff `DIGEST COPY_ID FSID
/// TOKEN` the tenant and cleanup scripts require. Script 1 prints only the digest, so running
/// the cleanup right after it is refused; the copy's image id survives Cinder's rename, and
/// the token (see `verification_token` in `sh/common.sh`) binds the three values to this
/// plan, so a mistyped or foreign handoff is refused too.
const VERIFIED_HANDOFF: &str = section(DESTINATION, "verified_handoff");

/// The features `rbd cp` can give an image it creates.
const CREATABLE: Features = Features::LAYERING
    .union(Features::EXCLUSIVE_LOCK)
    .union(Features::OBJECT_MAP)
    .union(Features::FAST_DIFF)
    .union(Features::DEEP_FLATTEN)
    .union(Features::STRIPINGV2);

impl Renderer<'_> {
    /// The body of the destination script.
    pub(crate) fn destination(&self, s: &mut String) -> Result<(), BundleError> {
        let p = self.plan;
        let m = &p.migration;
        let lost = p
            .steps
            .iter()
            .find_map(|st| {
                if let Step::SetCopyFeatures { features } = st {
                    Some(*features)
                } else {
                    None
                }
            })
            .unwrap_or(p.facts.features);
        let snapshot = p.steps.iter().find_map(|st| {
            if let Step::SnapshotAndProtect { snap } = st {
                Some(snap.clone())
            } else {
                None
            }
        });
        let _ = writeln!(s, "COPY_FEATURES={}", sh_quote(&names(lost)));
        let _ = writeln!(s, "MODE={}", sh_quote(&m.mode.to_string()));
        if let Some(snap) = &snapshot {
            let _ = writeln!(s, "GLANCE_SNAP={}", sh_quote(snap));
        }
        if let Some(size) = p.grown_to() {
            // the copy is grown to a whole GiB for Cinder: digests cover the source's size
            let _ = writeln!(
                s,
                "SOURCE_SIZE={}\nGROW_BYTES={size}\nGROW_GIB={}",
                p.facts.size,
                size / rbd_mirror_core::plan::GIB
            );
        }
        s.push_str(ARGUMENTS);
        if p.steps.contains(&Step::EnablePoolMirroring) {
            s.push_str(ENABLE_POOL_MIRRORING);
        }
        s.push_str(PRECONDITIONS);
        for &i in self.steps {
            self.step_header(s, i);
            let step = &p.steps[i];
            if let Step::CopyReplica = step {
                let _ = writeln!(
                    s,
                    "COPY_CREATE_FEATURES={}",
                    sh_quote(&names(lost & CREATABLE))
                );
            }
            s.push_str(destination_step(step)?);
        }
        s.push_str(VERIFIED_HANDOFF);
        match self.next_script() {
            Some(Script::Tenant) => next_command(
                s,
                "the OpenStack tenant admin runs",
                Script::Tenant.file_name(),
            ),
            _ => next_command(
                s,
                "the Ceph source admin runs the cleanup",
                Script::Cleanup.file_name(),
            ),
        }
        Ok(())
    }
}

/// The section of `step` in the destination script.
fn destination_step(step: &Step) -> Result<&'static str, BundleError> {
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
        | Step::RemoveReplica { .. } => Err(BundleError::not_in(step, "destination")),
        Step::WaitForReplica => Ok(STEP_WAIT_FOR_REPLICA),
        Step::CopyReplica => Ok(STEP_COPY_REPLICA),
        Step::SetCopyFeatures { .. } => Ok(STEP_SET_COPY_FEATURES),
        Step::Verify => Ok(STEP_VERIFY),
        Step::SnapshotAndProtect { .. } => Ok(STEP_SNAPSHOT_AND_PROTECT),
        Step::GrowCopy { .. } => Ok(STEP_GROW_COPY),
        Step::Preflight
        | Step::EnablePoolMirroring
        | Step::SetJournalPayload { .. }
        | Step::RestoreJournalPayload { .. }
        | Step::EnableFeatures { .. }
        | Step::EnableMirroring { .. }
        | Step::DisableMirroring
        | Step::RestoreFeatures { .. }
        | Step::AdoptVolume { .. }
        | Step::RegisterImage { .. }
        | Step::CheckMinDisk { .. } => Err(BundleError::not_in(step, "destination")),
    }
}
