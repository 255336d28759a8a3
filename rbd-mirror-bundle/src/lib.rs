//! Split-role command bundles: the same [`Plan`] that `migrate` executes, rendered as one
//! POSIX shell script per role, for sites where no single person holds the source Ceph key,
//! the destination Ceph key and the destination cloud's admin credentials at once.
//!
//! A plan that hands over by clone (the default of `migrate` and `bundle`) renders the
//! cutover as its own scripts per role (see `clone.rs`): 1 source setup, 2 destination (the
//! replica in sync), 3 source cutover (live: the wait for an idle source; the demotion),
//! 4 destination handover (promote, snapshot, clone), 5 tenant (adopt), 6 destination (the
//! replica snapshot's digest, flatten, read back), 7 source release (the proof against the
//! demoted source, mirroring off, features back), 8 destination (the replica removed), and the
//! roll back scripts the failing ones name. [`Flow`] tells the two apart.
//!
//! Run order and handoffs of a plan that copies (nothing handed over is a secret):
//!
//! 1. `1-source-ceph-admin.sh` (Ceph source admin, `rbd`): checks the source image against
//!    the facts recorded in the plan, enables the features and mirroring, waits for the
//!    mode's completion signal on the source side, computes the source's sha256 and prints
//!    the destination admin's command line with that digest (and, in snapshot mode, the id
//!    of the primary mirror snapshot to wait for).
//! 2. `2-destination-ceph-admin.sh DIGEST [SNAP_ID]` (Ceph destination admin, `rbd`,
//!    `ceph`): checks its pools, waits for the replica (snapshot mode: the complete
//!    non-primary mirror snapshot of SNAP_ID; both modes: the replica's content equals
//!    DIGEST), copies it, sets the copy's features, verifies the copy's digest equals DIGEST,
//!    snapshots + protects for Glance, and only then prints the verified-copy handoff: the
//!    digest, the copy's image id, the destination fsid and a verification token binding
//!    them to the plan (`verification_token` in `sh/common.sh`), on the next role's command line.
//! 3. `3-tenant-admin.sh DIGEST COPY_ID FSID TOKEN` (OpenStack tenant admin, `openstack`,
//!    `curl`): checks the handoff, then Cinder manage-existing of the copy, or Glance
//!    registration by rbd:// location; waits until the volume is `available` / the image
//!    `active`; passes the handoff on.
//! 4. `4-source-ceph-admin-cleanup.sh DIGEST COPY_ID FSID TOKEN` (Ceph source admin): refuses
//!    unless it is given script 2's handoff (the token recomputes, the fsid is not the
//!    source's own) and the source's digest equals DIGEST; only then disables mirroring
//!    (which deletes the replica) and restores the original features. Script 1's output
//!    alone (the digest) is refused: it proves no copy exists.
//!
//! Every name is written once, at the top of a script, through [`sh_quote`]; the body uses
//! only variables. Cluster names, conf paths and cephx ids are variables overridable from the
//! environment (`SRC_CLUSTER`, `SRC_CONF`, `SRC_ID`, `DST_*`, `OS_CLOUD`); no key or token is
//! ever written into a script.
//!
//! The shell text is in `sh/*.sh` (see `template.rs`); the Rust side writes the names and
//! picks the sections: `render.rs` the start every script has, `source.rs`,
//! `destination.rs`, `tenant.rs` and `cleanup.rs` the roles' bodies, `readme.rs` the README.

use thiserror::Error;

use rbd_mirror_core::plan::{Plan, Role, Step};

mod cleanup;
mod clone;
mod destination;
mod quote;
mod readme;
mod render;
mod source;
mod template;
mod tenant;

pub use quote::sh_quote;

/// Why a plan cannot be rendered as a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BundleError {
    /// The plan has a step the bundle cannot express.
    #[error("step {step} cannot be rendered as a script: {reason}")]
    Unsupported {
        /// The step's kind.
        step: &'static str,
        /// Why.
        reason: String,
    },
}

impl BundleError {
    /// The upload-to-image of a bootable volume: `rbd-relay bundle bootable` runs it before
    /// it renders the plan of the uploaded image, so it is never a script's step.
    fn upload_step(step: &Step) -> Self {
        BundleError::Unsupported {
            step: step.kind(),
            reason: "the upload-to-image runs before a bundle is rendered (rbd-relay bundle bootable), never in a script".into(),
        }
    }

    /// A step of an abort's undo plan: never in a migration's plan, so never in a bundle.
    fn undo_step(step: &Step) -> Self {
        BundleError::Unsupported {
            step: step.kind(),
            reason: "an undo step of rbd-relay abort, never part of a migration's plan".into(),
        }
    }

    /// `step` was handed to the renderer of a script it does not belong to.
    fn not_in(step: &Step, script: &str) -> Self {
        BundleError::Unsupported {
            step: step.kind(),
            reason: format!("not a step of the {script} script"),
        }
    }
}

/// How the plan hands the destination image over, which decides the bundle's scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flow {
    /// The replica is copied and verified before anything is handed over (scripts 1-4).
    Copy,
    /// The source is demoted, the replica promoted and cloned (scripts 1-8 and the two
    /// roll-back scripts).
    Clone,
}

impl Flow {
    /// The flow of `plan`: by clone when it demotes the source.
    pub fn of(plan: &Plan) -> Flow {
        if plan.steps.contains(&Step::DemoteSource) {
            Flow::Clone
        } else {
            Flow::Copy
        }
    }

    /// The scripts of this flow in run order (the tenant's only with a step for it).
    pub fn sequence(self) -> &'static [Script] {
        match self {
            Flow::Copy => &[
                Script::Source,
                Script::Destination,
                Script::Tenant,
                Script::Cleanup,
            ],
            Flow::Clone => &[
                Script::Source,
                Script::Destination,
                Script::Cutover,
                Script::Handover,
                Script::AdoptHandedOver,
                Script::VerifyHandover,
                Script::Release,
                Script::RemoveReplica,
            ],
        }
    }

    /// The scripts that roll a failed cutover back (not in the run order: the others name
    /// them when they fail after the demotion).
    pub fn rollback(self) -> &'static [Script] {
        match self {
            Flow::Copy => &[],
            Flow::Clone => &[Script::RollbackDestination, Script::RollbackSource],
        }
    }
}

/// The scripts of a bundle, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Script {
    /// Ceph source admin: features and mirroring.
    Source,
    /// Ceph destination admin: wait, copy, verify (snapshot + protect for Glance); by
    /// clone: wait until the replica is in sync.
    Destination,
    /// OpenStack tenant admin of the destination cloud: manage or register.
    Tenant,
    /// Ceph source admin again: disable mirroring, restore features.
    Cleanup,
    /// By clone, Ceph source admin: (live: wait until the source is idle) demote the source.
    Cutover,
    /// By clone, Ceph destination admin: promote the replica, snapshot and clone it.
    Handover,
    /// By clone, OpenStack tenant admin: adopt the handed over clone.
    AdoptHandedOver,
    /// By clone, Ceph destination admin: digest of the replica's snapshot, flatten, read back.
    VerifyHandover,
    /// By clone, Ceph source admin: prove the demoted source equal, release it, features back.
    Release,
    /// By clone, Ceph destination admin: remove the replica.
    RemoveReplica,
    /// Roll back, Ceph destination admin: remove the clone, demote the replica.
    RollbackDestination,
    /// Roll back, Ceph source admin: promote the source again.
    RollbackSource,
}

impl Script {
    /// The scripts of the handover by copy in run order.
    pub const ALL: [Script; 4] = [
        Script::Source,
        Script::Destination,
        Script::Tenant,
        Script::Cleanup,
    ];

    /// The file name (`1-source-ceph-admin.sh`...).
    pub fn file_name(self) -> &'static str {
        match self {
            Script::Source => "1-source-ceph-admin.sh",
            Script::Destination => "2-destination-ceph-admin.sh",
            Script::Tenant => "3-tenant-admin.sh",
            Script::Cleanup => "4-source-ceph-admin-cleanup.sh",
            Script::Cutover => "3-source-ceph-admin-cutover.sh",
            Script::Handover => "4-destination-ceph-admin-handover.sh",
            Script::AdoptHandedOver => "5-tenant-admin.sh",
            Script::VerifyHandover => "6-destination-ceph-admin-verify.sh",
            Script::Release => "7-source-ceph-admin-release.sh",
            Script::RemoveReplica => "8-destination-ceph-admin-remove-replica.sh",
            Script::RollbackDestination => "rollback-1-destination-ceph-admin.sh",
            Script::RollbackSource => "rollback-2-source-ceph-admin.sh",
        }
    }

    /// Who runs it.
    pub fn role(self) -> Role {
        match self {
            Script::Source
            | Script::Cleanup
            | Script::Cutover
            | Script::Release
            | Script::RollbackSource => Role::SourceCephAdmin,
            Script::Destination
            | Script::Handover
            | Script::VerifyHandover
            | Script::RemoveReplica
            | Script::RollbackDestination => Role::DestinationCephAdmin,
            Script::Tenant | Script::AdoptHandedOver => Role::TenantAdmin,
        }
    }

    /// The script a step of a plan of `flow` goes to: by [`Step::role`], except that the
    /// copy's cleanup steps go to the last script (they must wait for the verified copy),
    /// and the clone handover's steps go to the script of their moment in the cutover. Every
    /// step is named (`RestoreFeatures` in both flows' arms), so a new kind of step fails the
    /// build here until it has a script.
    pub fn for_step(step: &Step, flow: Flow) -> Script {
        match (flow, step) {
            (
                Flow::Copy,
                Step::DisableMirroring
                | Step::RestoreFeatures { .. }
                | Step::RestoreJournalPayload { .. },
            ) => Script::Cleanup,
            (Flow::Clone, Step::WaitForCutover { .. } | Step::DemoteSource) => Script::Cutover,
            (
                Flow::Clone,
                Step::PromoteReplica | Step::CloneReplica { .. } | Step::GrowCopy { .. },
            ) => Script::Handover,
            (Flow::Clone, Step::AdoptVolume { .. }) => Script::AdoptHandedOver,
            (Flow::Clone, Step::VerifyHandover { .. } | Step::FlattenCopy) => {
                Script::VerifyHandover
            }
            (
                Flow::Clone,
                Step::ReleaseSource
                | Step::RestoreFeatures { .. }
                | Step::RestoreJournalPayload { .. },
            ) => Script::Release,
            (Flow::Clone, Step::RemoveReplica { .. }) => Script::RemoveReplica,
            (
                _,
                Step::Preflight
                | Step::EnablePoolMirroring
                | Step::SetJournalPayload { .. }
                | Step::EnableFeatures { .. }
                | Step::EnableMirroring { .. }
                | Step::WaitForReplica
                | Step::CopyReplica
                | Step::SetCopyFeatures { .. }
                | Step::Verify
                | Step::DisableMirroring
                | Step::AdoptVolume { .. }
                | Step::GrowCopy { .. }
                | Step::SnapshotAndProtect { .. }
                | Step::RegisterImage { .. }
                | Step::CheckMinDisk { .. }
                | Step::WaitForCutover { .. }
                | Step::DemoteSource
                | Step::PromoteReplica
                | Step::CloneReplica { .. }
                | Step::VerifyHandover { .. }
                | Step::FlattenCopy
                | Step::ReleaseSource
                | Step::RemoveReplica { .. }
                | Step::RemoveCopy { .. }
                | Step::DisableSourceMirroring
                | Step::RemoveMirrorSnapshots { .. }
                | Step::RestoreOriginalFeatures { .. }
                | Step::RemoveSourceMarker
                | Step::PromoteSource
                | Step::DemoteReplica { .. }
                | Step::UploadToImage { .. },
            ) => match step.role() {
                Role::SourceCephAdmin => Script::Source,
                Role::DestinationCephAdmin => Script::Destination,
                Role::TenantAdmin => Script::Tenant,
            },
        }
    }
}

/// One file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleFile {
    /// File name inside the bundle directory.
    pub name: String,
    /// Contents.
    pub contents: String,
    /// Whether it is a script (written executable).
    pub executable: bool,
}

/// A rendered bundle: the scripts in run order, then `README.md`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The files.
    pub files: Vec<BundleFile>,
    /// The scripts present, in run order, each with the plan's step indexes it carries.
    pub scripts: Vec<(Script, Vec<usize>)>,
    /// The roll-back scripts (a handover by clone), in their order; they carry no plan step.
    pub rollback: Vec<Script>,
}

/// The steps of `plan` grouped by script, in run order; every step is in exactly one group.
pub fn assign(plan: &Plan) -> Vec<(Script, Vec<usize>)> {
    let flow = Flow::of(plan);
    let mut out: Vec<(Script, Vec<usize>)> = Vec::new();
    for &script in flow.sequence() {
        let steps: Vec<usize> = plan
            .steps
            .iter()
            .enumerate()
            .filter(|(_, s)| Script::for_step(s, flow) == script)
            .map(|(i, _)| i)
            .collect();
        // The Ceph scripts always run (handoffs); the cleanup script also checks the digest,
        // so it runs even when there is nothing to restore.
        if !steps.is_empty() || script.role() != Role::TenantAdmin {
            out.push((script, steps));
        }
    }
    out
}

/// Render `plan` as a bundle. `generated_by` is the command line that made it (for the
/// README; it must not contain secrets, the CLI passes its arguments).
pub fn render(plan: &Plan, generated_by: &str) -> Result<Bundle, BundleError> {
    let scripts = assign(plan);
    let rollback = Flow::of(plan).rollback().to_vec();
    let present: Vec<Script> = scripts.iter().map(|(s, _)| *s).collect();
    let mut files = Vec::new();
    let all = scripts
        .iter()
        .map(|(s, steps)| (*s, steps.as_slice()))
        .chain(rollback.iter().map(|s| (*s, &[][..])));
    for (script, steps) in all {
        let r = render::Renderer {
            plan,
            script,
            steps,
            present: &present,
        };
        files.push(BundleFile {
            name: script.file_name().to_string(),
            contents: r.render()?,
            executable: true,
        });
    }
    files.push(BundleFile {
        name: "README.md".into(),
        contents: readme::readme(plan, &scripts, &rollback, generated_by),
        executable: false,
    });
    Ok(Bundle {
        files,
        scripts,
        rollback,
    })
}

#[cfg(test)]
mod completion_tests;
#[cfg(test)]
mod tests;
