//! A migration as data: the request ([`VolumeMigration`]), what preflight learned about the
//! source ([`SourceFacts`]) and the ordered, typed [`Step`]s. The same plan is executed,
//! printed as a dry run and recorded in the state file, so a re-run resumes exactly it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::cloud::AdoptTarget;
use crate::features::{plan_enable, plan_restore, FeatureChange, Features, MirrorImageMode};
use crate::ops::PoolMirrorMode;
use crate::spec::{ClusterSpec, ImageSpec, PoolSpec};

/// Version of the plan/state format.
pub const PLAN_VERSION: u32 = 1;

/// What the caller asks for: move one image from one cluster to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMigration {
    /// Source cluster.
    pub source: ClusterSpec,
    /// Destination cluster.
    pub destination: ClusterSpec,
    /// Source image (its pool must be mirrored to the same pool name on the destination).
    pub image: ImageSpec,
    /// Destination pool to copy the replica into (e.g. the destination Cinder pool).
    pub into: PoolSpec,
    /// Name of the copy in `into` (default: the source image name).
    pub dest_name: String,
    /// Mirroring mode.
    pub mode: MirrorImageMode,
    /// Also disable object-map, fast-diff and deep-flatten (the runbook's way; never default).
    pub disable_map_features: bool,
    /// Accept an image in use (watchers present).
    pub allow_live: bool,
    /// Enable image-mode mirroring on the pools when it is off.
    pub enable_pool_mirroring: bool,
    /// Accept a destination with less room than the image's provisioned size for the
    /// replica and the copy (a thin image that will not fill up): a warning, not a refusal.
    #[serde(default)]
    pub allow_overcommit: bool,
    /// Adopt the verified copy as a Cinder volume in the destination cloud at the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopt: Option<Adoption>,
    /// Register the verified copy as a Glance image in the destination cloud at the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub register: Option<Registration>,
}

/// How the verified copy becomes a Glance image in the destination cloud (the runbook's
/// bootable path): snapshot + protect it, register `rbd://fsid/pool/image/snap`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The destination cloud (its name in clouds.yaml).
    pub cloud: String,
    /// Name of the new image.
    pub name: String,
    /// The protected snapshot Glance reads (`snap`).
    pub snapshot: String,
    /// Minimum disk of the image in GiB: at least the source volume's size.
    pub min_disk_gib: u64,
}

/// How the verified copy becomes a Cinder volume in the destination cloud.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adoption {
    /// The destination cloud (its name in clouds.yaml).
    pub cloud: String,
    /// Where Cinder adopts from (default: the backend of the `into` pool).
    pub target: AdoptTarget,
    /// Name of the new volume.
    pub name: Option<String>,
    /// Mark the volume bootable.
    pub bootable: bool,
}

impl VolumeMigration {
    /// A migration with defaults: journal mode, same image name, cold.
    pub fn new(
        source: ClusterSpec,
        destination: ClusterSpec,
        image: ImageSpec,
        into: PoolSpec,
    ) -> Self {
        let dest_name = image.image.clone();
        Self {
            source,
            destination,
            image,
            into,
            dest_name,
            mode: MirrorImageMode::Journal,
            disable_map_features: false,
            allow_live: false,
            enable_pool_mirroring: false,
            allow_overcommit: false,
            adopt: None,
            register: None,
        }
    }

    /// A stable id naming this migration (state file name, locks, `resume ID`).
    pub fn id(&self) -> String {
        let raw = format!(
            "{}_{}_to_{}_{}",
            self.source.name,
            self.image,
            self.destination.name,
            self.copy_target()
        );
        raw.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }

    /// The source image as `CLUSTER:POOL/IMAGE`: what the state directory's image lock is
    /// named after, so that two migrations of one image never run at once.
    pub fn lock_name(&self) -> String {
        format!("{}:{}", self.source.name, self.image)
    }

    /// The copy target as `CLUSTER:POOL/NAME`: what the state directory's target lock is
    /// named after, so that two migrations into one copy name never run at once.
    pub fn target_lock_name(&self) -> String {
        format!("{}:{}", self.destination.name, self.copy_target())
    }

    /// Where rbd-mirror puts the replica: the same pool and name on the destination.
    pub fn replica(&self) -> ImageSpec {
        self.image.clone()
    }

    /// The destination copy.
    pub fn copy_target(&self) -> ImageSpec {
        ImageSpec {
            pool: self.into.clone(),
            image: self.dest_name.clone(),
        }
    }
}

/// What preflight read from the source before anything changed: what cleanup restores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFacts {
    /// Features before the migration.
    pub features: Features,
    /// Size in bytes.
    pub size: u64,
    /// Object size in bytes.
    pub object_size: u64,
    /// Image id.
    pub image_id: String,
    /// User snapshots (names).
    pub snapshots: Vec<String>,
    /// Mirror snapshot ids that existed before (never removed by cleanup).
    pub mirror_snapshots_before: Vec<u64>,
    /// Source pool mirror mode before the migration.
    pub source_pool_mode: PoolMirrorMode,
    /// Destination pool mirror mode before the migration.
    pub destination_pool_mode: PoolMirrorMode,
    /// Mirroring was already enabled on the image before (then cleanup leaves it on).
    pub mirroring_was_enabled: bool,
    /// Clients watching the image at preflight.
    pub watchers: Vec<String>,
}

impl SourceFacts {
    /// Number of objects of the image.
    pub fn objects(&self) -> u64 {
        if self.object_size == 0 {
            0
        } else {
            self.size.div_ceil(self.object_size)
        }
    }
}

/// Who runs a step when roles are split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Ceph admin of the source cluster.
    SourceCephAdmin,
    /// Ceph admin of the destination cluster.
    DestinationCephAdmin,
    /// OpenStack tenant admin of the destination cloud.
    TenantAdmin,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::SourceCephAdmin => "Ceph source admin",
            Role::DestinationCephAdmin => "Ceph destination admin",
            Role::TenantAdmin => "OpenStack tenant admin",
        })
    }
}

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
    /// Undo: remove the mirror snapshots of the source except those from before the migration.
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
            Step::RemoveCopy { .. } => "remove_copy",
            Step::DisableSourceMirroring => "disable_source_mirroring",
            Step::RemoveMirrorSnapshots { .. } => "remove_mirror_snapshots",
            Step::RestoreOriginalFeatures { .. } => "restore_original_features",
            Step::RemoveSourceMarker => "remove_source_marker",
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
            Step::AdoptVolume { .. } | Step::RegisterImage { .. } | Step::CheckMinDisk { .. } => {
                Role::TenantAdmin
            }
            Step::RemoveCopy { .. } => Role::DestinationCephAdmin,
            Step::DisableSourceMirroring
            | Step::RemoveMirrorSnapshots { .. }
            | Step::RestoreOriginalFeatures { .. }
            | Step::RemoveSourceMarker => Role::SourceCephAdmin,
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
                    "remove the mirror snapshots of {src}:{} made by this migration",
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
        }
    }
}

/// A whole migration plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Format version.
    pub version: u32,
    /// Stable id.
    pub id: String,
    /// The request.
    pub migration: VolumeMigration,
    /// What the source looked like before.
    pub facts: SourceFacts,
    /// Ordered steps.
    pub steps: Vec<Step>,
}

impl Plan {
    /// Build the plan of a volume migration from the request and the source's facts.
    pub fn volume(migration: VolumeMigration, facts: SourceFacts) -> Self {
        let mut steps = vec![Step::Preflight];
        let pools_off = facts.source_pool_mode == PoolMirrorMode::Disabled
            || facts.destination_pool_mode == PoolMirrorMode::Disabled;
        if migration.enable_pool_mirroring && pools_off {
            steps.push(Step::EnablePoolMirroring);
        }
        let change = if facts.mirroring_was_enabled {
            FeatureChange::default()
        } else {
            plan_enable(
                facts.features,
                migration.mode,
                migration.disable_map_features,
            )
        };
        let during = change.apply(facts.features);
        if !change.is_empty() {
            steps.push(Step::EnableFeatures { change });
        }
        steps.push(Step::EnableMirroring {
            mode: migration.mode,
        });
        steps.push(Step::WaitForReplica);
        steps.push(Step::CopyReplica);
        let (restore, lost) = plan_restore(during, facts.features);
        steps.push(Step::SetCopyFeatures {
            features: facts.features - lost,
        });
        steps.push(Step::Verify);
        if !facts.mirroring_was_enabled {
            steps.push(Step::DisableMirroring);
            if !restore.is_empty() {
                steps.push(Step::RestoreFeatures {
                    change: restore,
                    lost,
                });
            }
        }
        if let Some(r) = &migration.register {
            steps.push(Step::SnapshotAndProtect {
                snap: r.snapshot.clone(),
            });
            steps.push(Step::RegisterImage {
                cloud: r.cloud.clone(),
                name: r.name.clone(),
            });
            steps.push(Step::CheckMinDisk {
                min_gib: r.min_disk_gib,
            });
        }
        if let Some(a) = &migration.adopt {
            steps.push(Step::AdoptVolume {
                cloud: a.cloud.clone(),
                target: a.target.clone(),
                name: a.name.clone(),
            });
        }
        Self {
            version: PLAN_VERSION,
            id: migration.id(),
            migration,
            facts,
            steps,
        }
    }

    /// The dry-run text: one numbered line per step, with the role that runs it.
    pub fn render(&self) -> String {
        let m = &self.migration;
        let mut out = format!(
            "plan {}: {}:{} -> {}:{} ({} mode)\n",
            self.id,
            m.source.name,
            m.image,
            m.destination.name,
            m.copy_target(),
            m.mode
        );
        out.push_str(&format!(
            "source: {} bytes, features {}, {} user snapshot(s)\n",
            self.facts.size,
            self.facts.features,
            self.facts.snapshots.len()
        ));
        out.push_str(&render_steps(&self.steps, m));
        out
    }
}

/// The numbered lines of a dry run, one per step with the role that runs it (a migration's
/// plan and an abort's undo plan print alike).
pub fn render_steps(steps: &[Step], m: &VolumeMigration) -> String {
    let mut out = String::new();
    for (i, s) in steps.iter().enumerate() {
        out.push_str(&format!("{:>2}. [{}] {}\n", i + 1, s.role(), s.describe(m)));
    }
    out
}

/// Sample facts for tests of crates that render or run plans (the bundle renderer's tests).
#[cfg(any(test, feature = "test-support"))]
#[doc(hidden)]
pub mod test_support {
    use super::*;

    /// Facts of a 10 MiB image with `features`, in image-mode pools, never mirrored.
    pub fn facts(features: Features) -> SourceFacts {
        SourceFacts {
            features,
            size: 10 << 20,
            object_size: 4 << 20,
            image_id: "abc".into(),
            snapshots: vec![],
            mirror_snapshots_before: vec![],
            source_pool_mode: PoolMirrorMode::Image,
            destination_pool_mode: PoolMirrorMode::Image,
            mirroring_was_enabled: false,
            watchers: vec![],
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) use super::test_support::facts;

    fn migration() -> VolumeMigration {
        VolumeMigration::new(
            ClusterSpec::named("site-a").unwrap(),
            ClusterSpec::named("site-b").unwrap(),
            "volumes/vol1".parse().unwrap(),
            PoolSpec::new("cinder").unwrap(),
        )
    }

    #[test]
    fn journal_plan_has_all_steps_in_order() {
        let f = Features::LAYERING | Features::EXCLUSIVE_LOCK | Features::OBJECT_MAP;
        let p = Plan::volume(migration(), facts(f));
        let kinds: Vec<_> = p.steps.iter().map(Step::kind).collect();
        assert_eq!(
            kinds,
            [
                "preflight",
                "enable_features",
                "enable_mirroring",
                "wait_for_replica",
                "copy_replica",
                "set_copy_features",
                "verify",
                "disable_mirroring",
                "restore_features"
            ]
        );
        assert_eq!(p.facts.objects(), 3);
        assert!(p
            .render()
            .contains("enable journaling on site-a:volumes/vol1"));
        assert_eq!(p.id, "site-a_volumes_vol1_to_site-b_cinder_vol1");
    }

    #[test]
    fn snapshot_plan_changes_no_features() {
        let mut m = migration();
        m.mode = MirrorImageMode::Snapshot;
        let p = Plan::volume(m, facts(Features::LAYERING));
        assert!(!p.steps.iter().any(|s| matches!(
            s,
            Step::EnableFeatures { .. } | Step::RestoreFeatures { .. }
        )));
    }

    #[test]
    fn plan_round_trips_through_json() {
        let p = Plan::volume(migration(), facts(Features::LAYERING));
        let j = serde_json::to_string_pretty(&p).unwrap();
        let back: Plan = serde_json::from_str(&j).unwrap();
        assert_eq!(p, back);
    }

    #[test]
    fn adoption_is_the_last_step_and_the_tenant_admins() {
        let mut m = migration();
        m.adopt = Some(Adoption {
            cloud: "site-b-admin".into(),
            target: AdoptTarget::CephPool {
                pool: "cinder".into(),
            },
            name: Some("disk1".into()),
            bootable: false,
        });
        let p = Plan::volume(m, facts(Features::LAYERING | Features::EXCLUSIVE_LOCK));
        let last = p.steps.last().unwrap();
        assert_eq!(last.kind(), "adopt_volume");
        assert_eq!(last.role(), Role::TenantAdmin);
        let verify = p.steps.iter().position(|s| *s == Step::Verify).unwrap();
        assert!(verify < p.steps.len() - 1);
        let text = p.render();
        assert!(
            text.contains("[OpenStack tenant admin] adopt site-b:cinder/vol1 as a Cinder volume named 'disk1' in cloud site-b-admin"),
            "{text}"
        );
        let j = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Plan>(&j).unwrap(), p);
    }

    #[test]
    fn plan_without_adoption_reads_old_state_files() {
        let p = Plan::volume(migration(), facts(Features::LAYERING));
        let mut v = serde_json::to_value(&p).unwrap();
        assert!(v["migration"].get("adopt").is_none());
        v["migration"].as_object_mut().unwrap().remove("adopt");
        assert_eq!(serde_json::from_value::<Plan>(v).unwrap(), p);
    }

    #[test]
    fn already_mirrored_image_is_left_mirrored() {
        let mut f = facts(Features::LAYERING | Features::EXCLUSIVE_LOCK | Features::JOURNALING);
        f.mirroring_was_enabled = true;
        let p = Plan::volume(migration(), f);
        assert!(!p.steps.contains(&Step::DisableMirroring));
    }
}
