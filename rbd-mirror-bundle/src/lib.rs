//! Split-role command bundles: the same [`Plan`] that `migrate` executes, rendered as one
//! POSIX shell script per role, for sites where no single person holds the source Ceph key,
//! the destination Ceph key and the destination cloud's admin credentials at once.
//!
//! Run order and handoffs (nothing handed over is a secret):
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

    /// A step of the handover by clone: bundles copy (the scripts hand a verified digest
    /// from role to role; the demote/promote cutover is not rendered as scripts yet).
    fn clone_handover(step: &Step) -> Self {
        BundleError::Unsupported {
            step: step.kind(),
            reason: "the handover by clone (demote, promote, clone) runs only with rbd-relay migrate; a bundle copies: build its plan with --handover copy".into(),
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

/// The scripts of a bundle, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Script {
    /// Ceph source admin: features and mirroring.
    Source,
    /// Ceph destination admin: wait, copy, verify (snapshot + protect for Glance).
    Destination,
    /// OpenStack tenant admin of the destination cloud: manage or register.
    Tenant,
    /// Ceph source admin again: disable mirroring, restore features.
    Cleanup,
}

impl Script {
    /// All scripts in run order.
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
        }
    }

    /// Who runs it.
    pub fn role(self) -> Role {
        match self {
            Script::Source | Script::Cleanup => Role::SourceCephAdmin,
            Script::Destination => Role::DestinationCephAdmin,
            Script::Tenant => Role::TenantAdmin,
        }
    }

    /// The script a step of a plan goes to: by [`Step::role`], except that the source's
    /// cleanup steps go to the last script (they must wait for the verified copy). Every
    /// step is named, so a new kind of step fails the build here until it has a script.
    pub fn for_step(step: &Step) -> Script {
        match step {
            Step::DisableMirroring | Step::RestoreFeatures { .. } => Script::Cleanup,
            Step::Preflight
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
            | Step::UploadToImage { .. } => match step.role() {
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
}

/// The steps of `plan` grouped by script, in run order; every step is in exactly one group.
pub fn assign(plan: &Plan) -> Vec<(Script, Vec<usize>)> {
    let mut out: Vec<(Script, Vec<usize>)> = Vec::new();
    for script in Script::ALL {
        let steps: Vec<usize> = plan
            .steps
            .iter()
            .enumerate()
            .filter(|(_, s)| Script::for_step(s) == script)
            .map(|(i, _)| i)
            .collect();
        // The source and destination scripts always run (handoffs); the cleanup script
        // also checks the digest, so it runs even when there is nothing to restore.
        if !steps.is_empty() || script != Script::Tenant {
            out.push((script, steps));
        }
    }
    out
}

/// Render `plan` as a bundle. `generated_by` is the command line that made it (for the
/// README; it must not contain secrets, the CLI passes its arguments).
pub fn render(plan: &Plan, generated_by: &str) -> Result<Bundle, BundleError> {
    let scripts = assign(plan);
    let present: Vec<Script> = scripts.iter().map(|(s, _)| *s).collect();
    let mut files = Vec::new();
    for (script, steps) in &scripts {
        let r = render::Renderer {
            plan,
            script: *script,
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
        contents: readme::readme(plan, &scripts, generated_by),
        executable: false,
    });
    Ok(Bundle { files, scripts })
}

#[cfg(test)]
mod completion_tests;
#[cfg(test)]
mod tests;
