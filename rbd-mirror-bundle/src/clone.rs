//! The scripts of the handover by clone, the split-role twin of the engine's cutover
//! (`rbd_mirror_core::exec::cutover`): the destination admin waits until the replica is in
//! sync (`2-destination-ceph-admin.sh`), the source admin (live: once the source has had no
//! user but rbd-mirror for a while, or when told `go`) demotes the source
//! (`3-source-ceph-admin-cutover.sh`), the destination admin promotes the replica without
//! force, snapshots it and clones the snapshot under the copy name
//! (`4-destination-ceph-admin-handover.sh`): usable, and adopted by the tenant admin
//! (`5-tenant-admin.sh`). Off the critical path the destination admin reads the replica's
//! snapshot, flattens the clone and reads it back (`6-destination-ceph-admin-verify.sh`); the
//! source admin proves the demoted source equal to that digest, and only then releases it and
//! restores its features (`7-source-ceph-admin-release.sh`); the destination admin removes the
//! replica (`8-destination-ceph-admin-remove-replica.sh`). Between the demotion and the
//! handover, a failure names the roll back: `rollback-1-destination-ceph-admin.sh` (remove the
//! clone, demote the replica), then `rollback-2-source-ceph-admin.sh` (promote the source).
//!
//! Every handoff is the values the next script needs plus a token binding them to the plan
//! (`handoff_token` in `sh/common.sh`): a check against running scripts out of order or mixing
//! bundles up, not a signature.

use std::fmt::Write as _;

use rbd_mirror_core::features::{plan_restore, Features};
use rbd_mirror_core::plan::{Plan, Step};

use crate::quote::names;
use crate::render::Renderer;
use crate::template::{section, CLEANUP, CLONE_DESTINATION, CLONE_SOURCE, SOURCE};
use crate::{sh_quote, BundleError};

pub(crate) const SOURCE_FUNCTIONS: &str = section(CLONE_SOURCE, "functions");
pub(crate) const SOURCE_USERS: &str = section(CLONE_SOURCE, "users");
const CUTOVER_PRECONDITIONS: &str = section(CLONE_SOURCE, "cutover_preconditions");
const STEP_WAIT_FOR_CUTOVER: &str = section(CLONE_SOURCE, "step_wait_for_cutover");
const COLD_USERS: &str = section(CLONE_SOURCE, "cold_users");
const STEP_DEMOTE_SOURCE: &str = section(CLONE_SOURCE, "step_demote_source");
const CUTOVER_HANDOFF: &str = section(CLONE_SOURCE, "cutover_handoff");
const RELEASE_PRECONDITIONS: &str = section(CLONE_SOURCE, "release_preconditions");
const STEP_RELEASE_SOURCE: &str = section(CLONE_SOURCE, "step_release_source");
const STEP_GROW_CLONE: &str = section(CLONE_DESTINATION, "step_grow_copy");
const RELEASE_HANDOFF: &str = section(CLONE_SOURCE, "release_handoff");
const ROLLBACK_SOURCE_PRECONDITIONS: &str = section(CLONE_SOURCE, "rollback_preconditions");
const ROLLBACK_PROMOTE_SOURCE: &str = section(CLONE_SOURCE, "rollback_promote_source");
const STEP_RESTORE_FEATURES: &str = section(CLEANUP, "step_restore_features");
const FEATURES_AS_BEFORE: &str = section(CLEANUP, "features_as_before");

pub(crate) const DESTINATION_FUNCTIONS: &str = section(CLONE_DESTINATION, "functions");
const SYNC_ARGUMENTS: &str = section(CLONE_DESTINATION, "sync_arguments");
const SYNC_PRECONDITIONS: &str = section(CLONE_DESTINATION, "sync_preconditions");
const STEP_WAIT_IN_SYNC: &str = section(CLONE_DESTINATION, "step_wait_in_sync");
const SYNC_HANDOFF: &str = section(CLONE_DESTINATION, "sync_handoff");
const HANDOVER_PRECONDITIONS: &str = section(CLONE_DESTINATION, "handover_preconditions");
const STEP_PROMOTE_REPLICA: &str = section(CLONE_DESTINATION, "step_promote_replica");
const STEP_CLONE_REPLICA: &str = section(CLONE_DESTINATION, "step_clone_replica");
const HANDOVER_HANDOFF: &str = section(CLONE_DESTINATION, "handover_handoff");
const VERIFY_PRECONDITIONS: &str = section(CLONE_DESTINATION, "verify_preconditions");
const STEP_VERIFY_HANDOVER: &str = section(CLONE_DESTINATION, "step_verify_handover");
const STEP_FLATTEN_COPY: &str = section(CLONE_DESTINATION, "step_flatten_copy");
const COPY_JOURNAL_PAYLOAD: &str = section(CLONE_DESTINATION, "copy_journal_payload");
const VERIFY_HANDOFF: &str = section(CLONE_DESTINATION, "verify_handoff");
const REMOVE_PRECONDITIONS: &str = section(CLONE_DESTINATION, "remove_preconditions");
const STEP_REMOVE_REPLICA: &str = section(CLONE_DESTINATION, "step_remove_replica");
const ROLLBACK_DESTINATION: &str = section(CLONE_DESTINATION, "rollback_destination");
/// The source script's handoff in the clone flow: the snapshot id (snapshot mode) or nothing.
pub(crate) const SOURCE_SYNC_HANDOFF: &str = section(SOURCE, "sync_handoff");

/// The cephx user `rbd mirror pool peer bootstrap` makes for the destination's rbd-mirror on
/// the source cluster: its watch on a snapshot-mode primary is not an instance's.
const DEFAULT_MIRROR_PEER_CLIENT: &str = "client.rbd-mirror-peer";

/// How long the handover retries the promotion of the replica (as the engine does).
const PROMOTE_PATIENCE_S: u64 = 120;

/// The features `rbd clone` can give the image it creates.
const CLONABLE: Features = Features::LAYERING
    .union(Features::EXCLUSIVE_LOCK)
    .union(Features::OBJECT_MAP)
    .union(Features::FAST_DIFF)
    .union(Features::DEEP_FLATTEN)
    .union(Features::STRIPINGV2)
    .union(Features::JOURNALING);

/// The replica's snapshot the destination image hangs from (the plan's [`Step::CloneReplica`]).
pub(crate) fn handover_snap(plan: &Plan) -> String {
    plan.steps
        .iter()
        .find_map(|s| match s {
            Step::CloneReplica { snap, .. } => Some(snap.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// The features the destination image ends with (the plan's [`Step::CloneReplica`]).
fn clone_features(plan: &Plan) -> Features {
    plan.steps
        .iter()
        .find_map(|s| match s {
            Step::CloneReplica { features, .. } => Some(*features),
            _ => None,
        })
        .unwrap_or(plan.facts.features)
}

impl Renderer<'_> {
    /// The steps of this script, each with its section from `section_of`.
    fn clone_steps(
        &self,
        s: &mut String,
        section_of: impl Fn(&Step) -> Option<&'static str>,
    ) -> Result<(), BundleError> {
        for &i in self.steps {
            let step = &self.plan.steps[i];
            let text = section_of(step)
                .ok_or_else(|| BundleError::not_in(step, self.script.file_name()))?;
            self.step_header(s, i);
            s.push_str(text);
        }
        Ok(())
    }

    /// `2-destination-ceph-admin.sh` of a handover by clone: the replica is in sync.
    pub(crate) fn destination_in_sync(&self, s: &mut String) -> Result<(), BundleError> {
        let _ = writeln!(
            s,
            "MODE={}",
            sh_quote(&self.plan.migration.mode.to_string())
        );
        s.push_str(SYNC_ARGUMENTS);
        s.push_str(SYNC_PRECONDITIONS);
        self.clone_steps(s, |step| match step {
            Step::WaitForReplica => Some(STEP_WAIT_IN_SYNC),
            _ => None,
        })?;
        s.push_str(SYNC_HANDOFF);
        if self.plan.migration.live.is_some() {
            s.push_str("say \"live: the source admin's script waits until the source has had no user but rbd-mirror (the instance shut off or the volume detached), or cuts over at once given a last argument go\"\n");
        }
        self.hand_to_next(s);
        Ok(())
    }

    /// `3-source-ceph-admin-cutover.sh`: (live: wait until idle or `go`) demote the source.
    pub(crate) fn cutover(&self, s: &mut String) -> Result<(), BundleError> {
        let m = &self.plan.migration;
        let _ = writeln!(s, "MODE={}", sh_quote(&m.mode.to_string()));
        let _ = writeln!(
            s,
            "# the destination rbd-mirror's cephx user on this cluster (its watch is not a user)"
        );
        let _ = writeln!(
            s,
            "MIRROR_PEER_CLIENT=${{MIRROR_PEER_CLIENT:-{}}}",
            sh_quote(DEFAULT_MIRROR_PEER_CLIENT)
        );
        s.push_str(CUTOVER_PRECONDITIONS);
        let live = self
            .plan
            .steps
            .iter()
            .any(|st| matches!(st, Step::WaitForCutover { .. }));
        for &i in self.steps {
            let step = &self.plan.steps[i];
            self.step_header(s, i);
            match step {
                Step::WaitForCutover { idle_for_ms } => {
                    // whole seconds, rounded up: the script measures time with `date +%s`
                    let _ = writeln!(s, "IDLE_FOR={}", idle_for_ms.div_ceil(1000));
                    s.push_str(STEP_WAIT_FOR_CUTOVER);
                }
                Step::DemoteSource => {
                    // a cold plan: the demotion checks first that nothing uses the source
                    if !live {
                        s.push_str(COLD_USERS);
                    }
                    s.push_str(STEP_DEMOTE_SOURCE);
                }
                _ => return Err(BundleError::not_in(step, self.script.file_name())),
            }
        }
        s.push_str(CUTOVER_HANDOFF);
        self.hand_to_next(s);
        Ok(())
    }

    /// `4-destination-ceph-admin-handover.sh`: promote the replica, snapshot and clone it.
    pub(crate) fn handover(&self, s: &mut String) -> Result<(), BundleError> {
        let features = clone_features(self.plan);
        let _ = writeln!(s, "CLONE_FEATURES={}", sh_quote(&names(features)));
        let _ = writeln!(
            s,
            "CLONE_CREATE_FEATURES={}",
            sh_quote(&names(features & CLONABLE))
        );
        let _ = writeln!(s, "PROMOTE_PATIENCE={PROMOTE_PATIENCE_S}");
        if let Some(size) = self.plan.grown_to() {
            let _ = writeln!(s, "GROW_BYTES={size}\nGROW_GIB={}", size >> 30);
        }
        s.push_str(HANDOVER_PRECONDITIONS);
        self.clone_steps(s, |step| match step {
            Step::PromoteReplica => Some(STEP_PROMOTE_REPLICA),
            Step::CloneReplica { .. } => Some(STEP_CLONE_REPLICA),
            Step::GrowCopy { .. } => Some(STEP_GROW_CLONE),
            _ => None,
        })?;
        s.push_str(HANDOVER_HANDOFF);
        self.hand_to_next(s);
        Ok(())
    }

    /// `6-destination-ceph-admin-verify.sh`: the replica's snapshot, the flatten, the read back.
    pub(crate) fn verify_handover(&self, s: &mut String) -> Result<(), BundleError> {
        let _ = writeln!(
            s,
            "CLONE_FEATURES={}",
            sh_quote(&names(clone_features(self.plan)))
        );
        if self.plan.grown_to().is_some() {
            // the clone was grown to a whole GiB for Cinder: the read-back covers the source's size
            let _ = writeln!(s, "SOURCE_SIZE={}", self.plan.facts.size);
        }
        let payload = self.payload_originals(s).is_some();
        s.push_str(VERIFY_PRECONDITIONS);
        self.clone_steps(s, |step| match step {
            Step::VerifyHandover { .. } => Some(STEP_VERIFY_HANDOVER),
            Step::FlattenCopy => Some(STEP_FLATTEN_COPY),
            _ => None,
        })?;
        if payload {
            s.push_str(COPY_JOURNAL_PAYLOAD);
        }
        s.push_str(VERIFY_HANDOFF);
        self.hand_to_next(s);
        Ok(())
    }

    /// `7-source-ceph-admin-release.sh`: the proof against the demoted source, the release,
    /// the features back.
    pub(crate) fn release(&self, s: &mut String) -> Result<(), BundleError> {
        let p = self.plan;
        let original = p.facts.features;
        let (_, unchanged) = plan_restore(original, original);
        let lost = p
            .steps
            .iter()
            .find_map(|st| match st {
                Step::RestoreFeatures { lost, .. } => Some(*lost),
                _ => None,
            })
            .unwrap_or(unchanged);
        let before: Vec<String> = p
            .facts
            .mirror_snapshots_before
            .iter()
            .map(u64::to_string)
            .collect();
        let _ = writeln!(s, "# facts recorded by the plan's read-only preflight");
        let _ = writeln!(s, "ORIGINAL_FEATURES={}", sh_quote(&names(original)));
        let _ = writeln!(
            s,
            "RESTORABLE_FEATURES={}",
            sh_quote(&names(original - lost))
        );
        let _ = writeln!(s, "MIRROR_SNAPSHOTS_BEFORE={}", sh_quote(&before.join(" ")));
        let _ = writeln!(
            s,
            "SYNC_POINTS_BEFORE={}",
            sh_quote(&crate::render::sync_points_before(p))
        );
        self.payload_variables(s);
        s.push_str(RELEASE_PRECONDITIONS);
        self.clone_steps(s, |step| match step {
            Step::ReleaseSource => Some(STEP_RELEASE_SOURCE),
            Step::RestoreFeatures { .. } => Some(STEP_RESTORE_FEATURES),
            Step::RestoreJournalPayload { .. } => {
                Some(crate::cleanup::STEP_RESTORE_JOURNAL_PAYLOAD)
            }
            _ => None,
        })?;
        let restores = self
            .steps
            .iter()
            .any(|&i| matches!(p.steps[i], Step::RestoreFeatures { .. }));
        if !restores {
            s.push_str(FEATURES_AS_BEFORE);
        }
        if !lost.is_empty() {
            let note = format!(
                "note: {lost} was disabled for the migration and can never be enabled again"
            );
            let _ = writeln!(s, "say {}", sh_quote(&note));
        }
        s.push_str(RELEASE_HANDOFF);
        self.hand_to_next(s);
        Ok(())
    }

    /// `8-destination-ceph-admin-remove-replica.sh`: the replica goes, the migration is done.
    pub(crate) fn remove_replica(&self, s: &mut String) -> Result<(), BundleError> {
        s.push_str(REMOVE_PRECONDITIONS);
        self.clone_steps(s, |step| match step {
            Step::RemoveReplica { .. } => Some(STEP_REMOVE_REPLICA),
            _ => None,
        })?;
        s.push_str("\nsay \"done: the migration is complete. The source image itself is kept; deleting it is a separate decision.\"\n");
        Ok(())
    }

    /// `rollback-1-destination-ceph-admin.sh`: the clone removed, the replica demoted.
    pub(crate) fn rollback_destination(&self, s: &mut String) {
        s.push_str(ROLLBACK_DESTINATION);
        self.hand_to_next(s);
    }

    /// `rollback-2-source-ceph-admin.sh`: the source promoted again.
    pub(crate) fn rollback_source(&self, s: &mut String) {
        s.push_str(ROLLBACK_SOURCE_PRECONDITIONS);
        s.push_str(ROLLBACK_PROMOTE_SOURCE);
    }
}
