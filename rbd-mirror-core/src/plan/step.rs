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
    /// Live journal mode: set the source image's own override of the writer's journal
    /// payload (image metadata [`crate::plan::JOURNAL_PAYLOAD_KEY`]) before journaling is
    /// enabled under the running writer, so its journal entries are up to `bytes` each
    /// (fewer entries: rbd-mirror's replay keeps up). The image's original value is in the
    /// facts and goes back with [`Step::RestoreJournalPayload`].
    SetJournalPayload {
        /// The payload in bytes.
        bytes: u64,
    },
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
    /// Put the source image's journal payload override back as it was before
    /// [`Step::SetJournalPayload`]: its original value, or none (the key removed). In a
    /// plan after the features are back, and the undo of [`Step::SetJournalPayload`].
    RestoreJournalPayload {
        /// The image's own value before the migration, `None` when it had none.
        original: Option<String>,
    },
    /// Grow the copy to `size` bytes, the next whole GiB, right before its adoption: Cinder
    /// records a volume of that size whatever the image's, and later Cinder operations
    /// trust the record. Growing keeps every byte (the new ones read as zeros).
    GrowCopy {
        /// The size in bytes (a whole number of GiB).
        size: u64,
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
    /// Live: wait, while rbd-mirror keeps replicating, until the source has had no user
    /// but rbd-mirror for `idle_for_ms`, or an operator asks (`rbd-relay cutover ID`).
    WaitForCutover {
        /// Milliseconds without users that start the cutover.
        idle_for_ms: u64,
    },
    /// Demote the source (read-only from here). Every failure before the handover promotes
    /// it again.
    DemoteSource,
    /// Promote the replica once it holds everything up to the demotion.
    PromoteReplica,
    /// Snapshot the promoted replica and clone it under the copy name, with the source's
    /// original features: the destination image, usable now.
    CloneReplica {
        /// The replica's snapshot the clone hangs from.
        snap: String,
        /// Features of the clone.
        features: Features,
    },
    /// Compare the demoted source with the replica's snapshot (both immutable) by sha256.
    VerifyHandover {
        /// The replica's snapshot.
        snap: String,
    },
    /// Flatten the clone so it no longer needs the replica.
    FlattenCopy,
    /// Put the verified source back: mirroring off (it becomes writable again), no mirror
    /// snapshot of this migration left.
    ReleaseSource,
    /// Remove the replica: its mirroring, its snapshot, the image.
    RemoveReplica {
        /// The replica's snapshot the clone hung from.
        snap: String,
    },
    // The undo steps of an abort (see [`crate::abort::undo_plan`]); never in a migration's plan.
    /// Undo: remove the copy on the destination, only the image under the copy name with the
    /// id the copy recorded when it created it (another migration's image is left alone).
    RemoveCopy {
        /// The id (`rbd_get_id`) of the copy this migration created.
        image_id: String,
    },
    /// Undo: disable mirroring of the source image, which this migration enabled (rbd-mirror
    /// then removes the replica; the source's data is untouched).
    DisableSourceMirroring,
    /// Undo: remove the mirror snapshots of the source except those from before the migration,
    /// and (once its mirroring is off) the rbd-mirror sync points an interrupted image sync
    /// left behind.
    RemoveMirrorSnapshots {
        /// Ids of the mirror snapshots that existed before the migration (kept).
        kept: Vec<u64>,
    },
    /// Undo: bring the source's features back to exactly the recorded original ones (as far
    /// as librbd allows).
    RestoreOriginalFeatures {
        /// The features before the migration.
        original: Features,
    },
    /// Undo, always last: remove this migration's marker from the source image (see
    /// [`crate::preflight::SourceMarker`]); another run's marker is left as it is.
    RemoveSourceMarker,
    /// Undo of a demotion: promote the source again (without force when the replica is not
    /// primary, else forced), so it is writable for its users.
    PromoteSource,
    /// Undo of the replica's promotion: remove the handover snapshot, then demote the
    /// replica while the source is still mirrored (rbd-mirror then removes it with the
    /// source's mirroring), or remove it (by its recorded id) once the source is not.
    DemoteReplica {
        /// The handover snapshot on the replica.
        snap: String,
    },
}

impl Step {
    /// Short kind name (`wait_for_replica`), also used in events and JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Preflight => "preflight",
            Step::EnablePoolMirroring => "enable_pool_mirroring",
            Step::SetJournalPayload { .. } => "set_journal_payload",
            Step::EnableFeatures { .. } => "enable_features",
            Step::EnableMirroring { .. } => "enable_mirroring",
            Step::WaitForReplica => "wait_for_replica",
            Step::CopyReplica => "copy_replica",
            Step::SetCopyFeatures { .. } => "set_copy_features",
            Step::Verify => "verify",
            Step::DisableMirroring => "disable_mirroring",
            Step::RestoreFeatures { .. } => "restore_features",
            Step::RestoreJournalPayload { .. } => "restore_journal_payload",
            Step::GrowCopy { .. } => "grow_copy",
            Step::AdoptVolume { .. } => "adopt_volume",
            Step::SnapshotAndProtect { .. } => "snapshot_and_protect",
            Step::RegisterImage { .. } => "register_image",
            Step::CheckMinDisk { .. } => "check_min_disk",
            Step::UploadToImage { .. } => "upload_to_image",
            Step::WaitForCutover { .. } => "wait_for_cutover",
            Step::DemoteSource => "demote_source",
            Step::PromoteReplica => "promote_replica",
            Step::CloneReplica { .. } => "clone_replica",
            Step::VerifyHandover { .. } => "verify_handover",
            Step::FlattenCopy => "flatten_copy",
            Step::ReleaseSource => "release_source",
            Step::RemoveReplica { .. } => "remove_replica",
            Step::RemoveCopy { .. } => "remove_copy",
            Step::DisableSourceMirroring => "disable_source_mirroring",
            Step::RemoveMirrorSnapshots { .. } => "remove_mirror_snapshots",
            Step::RestoreOriginalFeatures { .. } => "restore_original_features",
            Step::RemoveSourceMarker => "remove_source_marker",
            Step::PromoteSource => "promote_source",
            Step::DemoteReplica { .. } => "demote_replica",
        }
    }

    /// Who runs it when roles are split.
    pub fn role(&self) -> Role {
        match self {
            Step::Preflight
            | Step::EnablePoolMirroring
            | Step::SetJournalPayload { .. }
            | Step::EnableFeatures { .. }
            | Step::EnableMirroring { .. }
            | Step::DisableMirroring
            | Step::RestoreFeatures { .. }
            | Step::RestoreJournalPayload { .. }
            | Step::WaitForCutover { .. }
            | Step::DemoteSource
            | Step::ReleaseSource
            | Step::PromoteSource
            | Step::DisableSourceMirroring
            | Step::RemoveMirrorSnapshots { .. }
            | Step::RestoreOriginalFeatures { .. }
            | Step::RemoveSourceMarker => Role::SourceCephAdmin,
            Step::WaitForReplica
            | Step::PromoteReplica
            | Step::CloneReplica { .. }
            | Step::VerifyHandover { .. }
            | Step::FlattenCopy
            | Step::RemoveReplica { .. }
            | Step::RemoveCopy { .. }
            | Step::DemoteReplica { .. }
            | Step::CopyReplica
            | Step::SetCopyFeatures { .. }
            | Step::Verify
            | Step::SnapshotAndProtect { .. }
            | Step::GrowCopy { .. } => Role::DestinationCephAdmin,
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
            Step::SetJournalPayload { bytes } => format!(
                "set image metadata {} = {bytes} on {src}:{} before journaling is enabled (the running writer's journal entries up to {} MiB each, so rbd-mirror's replay keeps up; the original is put back with the features)",
                crate::plan::JOURNAL_PAYLOAD_KEY,
                m.image,
                bytes >> 20
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
            Step::RestoreJournalPayload { original } => match original {
                Some(v) => format!(
                    "set image metadata {} of {src}:{} back to its original {v}",
                    crate::plan::JOURNAL_PAYLOAD_KEY,
                    m.image
                ),
                None => format!(
                    "remove image metadata {} from {src}:{} (it had none before the migration)",
                    crate::plan::JOURNAL_PAYLOAD_KEY,
                    m.image
                ),
            },
            Step::GrowCopy { size } => format!(
                "grow {dst}:{} to {size} bytes ({} GiB, the size Cinder records; every byte stays, the new ones read as zeros)",
                m.copy_target(),
                size / crate::plan::GIB
            ),
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
            Step::WaitForCutover { idle_for_ms } => format!(
                "keep replicating {src}:{} while it is in use; cut over once it has had no user but rbd-mirror for {:.1} s, or when asked (rbd-relay cutover {})",
                m.image,
                *idle_for_ms as f64 / 1000.0,
                m.id()
            ),
            Step::DemoteSource => format!(
                "demote {src}:{} (read-only from here; promoted again if the cutover fails)",
                m.image
            ),
            Step::PromoteReplica => format!(
                "promote the replica {dst}:{} once it holds everything up to the demotion",
                m.replica()
            ),
            Step::CloneReplica { snap, features } => format!(
                "snapshot {dst}:{}@{snap} and clone it to {dst}:{} with features {features}: the destination image, usable now",
                m.replica(),
                m.copy_target()
            ),
            Step::VerifyHandover { snap } => format!(
                "verify that {dst}:{}@{snap} has the same content as the demoted {src}:{} (sha256 of both)",
                m.replica(),
                m.image
            ),
            Step::FlattenCopy => format!(
                "flatten {dst}:{} (it no longer needs the replica)",
                m.copy_target()
            ),
            Step::ReleaseSource => format!(
                "disable mirroring of {src}:{} (it is writable again, its data untouched)",
                m.image
            ),
            Step::RemoveReplica { snap } => format!(
                "remove the replica {dst}:{} and its snapshot {snap}",
                m.replica()
            ),
            Step::RemoveCopy { image_id } => format!(
                "remove the copy {dst}:{} if this migration created it (image id {image_id}; an image with another id is left alone)",
                m.copy_target()
            ),
            Step::DisableSourceMirroring => format!(
                "disable mirroring of {src}:{} if this migration enabled it (removes the replica on {dst}; the source's data is untouched)",
                m.image
            ),
            Step::RemoveMirrorSnapshots { kept } => {
                let mut s = format!(
                    "remove the mirror snapshots and rbd-mirror sync points of {src}:{} made by this migration",
                    m.image
                );
                if !kept.is_empty() {
                    s.push_str(&format!(
                        " (the {} from before it are kept)",
                        kept.len()
                    ));
                }
                s
            }
            Step::RestoreOriginalFeatures { original } => format!(
                "give {src}:{} its original features back ({original})",
                m.image
            ),
            Step::RemoveSourceMarker => format!(
                "remove this migration's marker from {src}:{} (image metadata {})",
                m.image,
                crate::preflight::SOURCE_MARKER_KEY
            ),
            Step::PromoteSource => format!(
                "promote {src}:{} again if it is demoted (writable for its users again)",
                m.image
            ),
            Step::DemoteReplica { snap } => format!(
                "remove the snapshot {snap} of the replica {dst}:{} and demote it if it was promoted (removed instead once the source is not mirrored)",
                m.replica()
            ),
        }
    }
}
