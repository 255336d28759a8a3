//! The typed steps of a plan: what each does (`describe`, for a dry run), who runs it
//! (`role`, for split roles) and its short name (`kind`, in events and JSON). Every match
//! here names every step, so a new step fails the build until it is described.

use serde::{Deserialize, Serialize};

use super::{Origin, Role, VolumeMigration};
use crate::cloud::AdoptTarget;
use crate::features::{FeatureChange, Features, MirrorImageMode};

/// One typed step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "step")]
pub enum Step {
    /// Read-only checks; nothing changes.
    Preflight,
    /// Set image-mode mirroring on the source and destination pools.
    EnablePoolMirroring,
    /// Change the source image's features so it can be mirrored.
    EnableFeatures {
        /// The change.
        change: FeatureChange,
    },
    /// Enable mirroring of the source image.
    EnableMirroring {
        /// Mode.
        mode: MirrorImageMode,
    },
    /// Wait until the replica on the destination is complete.
    WaitForReplica,
    /// Copy the replica into the destination pool.
    CopyReplica,
    /// Make the copy's features the source's original ones (the replica carries journaling).
    SetCopyFeatures {
        /// Features the copy should end with.
        features: Features,
    },
    /// Compare the content of the source and the copy.
    Verify,
    /// Disable mirroring of the source image (deletes the replica, not the copy).
    DisableMirroring,
    /// Put the source's features back.
    RestoreFeatures {
        /// The change.
        change: FeatureChange,
        /// Features that cannot come back (deep-flatten once disabled).
        lost: Features,
    },
    /// Adopt the verified copy as a Cinder volume (manage-existing); Cinder renames the RBD
    /// image to `volume-<id>`.
    AdoptVolume {
        /// The destination cloud.
        cloud: String,
        /// Where Cinder adopts from.
        target: AdoptTarget,
        /// Name of the new volume.
        name: Option<String>,
    },
    /// Create the snapshot Glance reads on the copy and protect it.
    SnapshotAndProtect {
        /// Snapshot name (`snap`).
        snap: String,
    },
    /// Register the copy's snapshot as a Glance image by its rbd:// location.
    RegisterImage {
        /// The destination cloud.
        cloud: String,
        /// Image name.
        name: String,
    },
    /// Check that the registered image's min_disk is at least the source volume's size.
    CheckMinDisk {
        /// The least acceptable min_disk in GiB.
        min_gib: u64,
    },
    /// Upload a bootable volume of the source cloud to a Glance image (Cinder
    /// upload-to-image): the image is the plan's source from then on.
    UploadToImage {
        /// The source cloud.
        cloud: String,
        /// The Cinder volume.
        volume_id: String,
        /// Its size in GiB.
        size_gib: u64,
        /// Name of the image.
        image_name: String,
    },
}

impl Step {
    /// Short kind name (`wait_for_replica`), also used in events and JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Preflight => "preflight",
            Step::EnablePoolMirroring => "enable_pool_mirroring",
            Step::EnableFeatures { .. } => "enable_features",
            Step::EnableMirroring { .. } => "enable_mirroring",
            Step::WaitForReplica => "wait_for_replica",
            Step::CopyReplica => "copy_replica",
            Step::SetCopyFeatures { .. } => "set_copy_features",
            Step::Verify => "verify",
            Step::DisableMirroring => "disable_mirroring",
            Step::RestoreFeatures { .. } => "restore_features",
            Step::AdoptVolume { .. } => "adopt_volume",
            Step::SnapshotAndProtect { .. } => "snapshot_and_protect",
            Step::RegisterImage { .. } => "register_image",
            Step::CheckMinDisk { .. } => "check_min_disk",
            Step::UploadToImage { .. } => "upload_to_image",
        }
    }

    /// Who runs it when roles are split.
    pub fn role(&self) -> Role {
        match self {
            Step::Preflight
            | Step::EnablePoolMirroring
            | Step::EnableFeatures { .. }
            | Step::EnableMirroring { .. }
            | Step::DisableMirroring
            | Step::RestoreFeatures { .. } => Role::SourceCephAdmin,
            Step::WaitForReplica
            | Step::CopyReplica
            | Step::SetCopyFeatures { .. }
            | Step::Verify
            | Step::SnapshotAndProtect { .. } => Role::DestinationCephAdmin,
            // the upload is the source cloud's tenant admin's: see `describe`
            Step::AdoptVolume { .. }
            | Step::RegisterImage { .. }
            | Step::CheckMinDisk { .. }
            | Step::UploadToImage { .. } => Role::TenantAdmin,
        }
    }

    /// What the step does, for a dry run.
    pub fn describe(&self, m: &VolumeMigration) -> String {
        let (src, dst) = (&m.source.name, &m.destination.name);
        match self {
            Step::Preflight => format!(
                "check {src}:{} and {dst}:{} (read only)",
                m.image,
                m.copy_target()
            ),
            Step::EnablePoolMirroring => format!(
                "enable image-mode mirroring on pool {} on {src} and {dst}",
                m.image.pool
            ),
            Step::EnableFeatures { change } => {
                format!("{change} on {src}:{}", m.image)
            }
            Step::EnableMirroring { mode } => {
                format!("enable {mode}-mode mirroring of {src}:{}", m.image)
            }
            Step::WaitForReplica => format!(
                "wait until the replica {dst}:{} is complete (exact signal, with progress)",
                m.replica()
            ),
            Step::CopyReplica => format!("copy {dst}:{} to {dst}:{}", m.replica(), m.copy_target()),
            Step::SetCopyFeatures { features } => {
                format!(
                    "set the features of {dst}:{} to {features}",
                    m.copy_target()
                )
            }
            Step::Verify => format!(
                "verify that {dst}:{} has the same content as {src}:{} (sha256 of both)",
                m.copy_target(),
                m.image
            ),
            Step::DisableMirroring => format!(
                "disable mirroring of {src}:{} (removes the replica on {dst}, keeps the copy)",
                m.image
            ),
            Step::RestoreFeatures { change, lost } => {
                let mut s = format!("{change} on {src}:{} (back to the original)", m.image);
                if !lost.is_empty() {
                    s.push_str(&format!("; {lost} cannot be restored"));
                }
                s
            }
            Step::AdoptVolume {
                cloud,
                target,
                name,
            } => format!(
                "adopt {dst}:{} as a Cinder volume{} in cloud {cloud} ({target}); Cinder renames the image to volume-<id>",
                m.copy_target(),
                name.as_ref()
                    .map(|n| format!(" named '{n}'"))
                    .unwrap_or_default()
            ),
            Step::SnapshotAndProtect { snap } => format!(
                "create snapshot {dst}:{}@{snap} and protect it",
                m.copy_target()
            ),
            Step::RegisterImage { cloud, name } => format!(
                "register image '{name}' in cloud {cloud} at rbd://<{dst} fsid>/{}/{}",
                m.copy_target(),
                m.register
                    .as_ref()
                    .map_or("snap", |r| r.snapshot.as_str())
            ),
            Step::CheckMinDisk { min_gib } => format!(
                "check that the registered image's min_disk is at least {min_gib} GiB (the source volume's size)"
            ),
            Step::UploadToImage {
                cloud,
                volume_id,
                size_gib,
                image_name,
            } => format!(
                "upload volume {volume_id} ({size_gib} GiB) to image '{image_name}' in the source cloud {cloud} (Cinder upload-to-image; the data lands in {src}:{})",
                match &m.origin {
                    Origin::Upload(u) => u.pending_image(),
                    Origin::Image | Origin::InPlace => m.image.clone(),
                }
            ),
        }
    }
}
