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
    /// How the destination image is made from the replica. Plans recorded before this
    /// field existed copied (`copy`).
    #[serde(default)]
    pub handover: Handover,
    /// Live migration: the cutover waits until the source has had no user but rbd-mirror
    /// for this long (or an operator runs `rbd-relay cutover ID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<Live>,
}

/// How the destination image is made from rbd-mirror's replica.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Handover {
    /// Copy the complete replica into the destination pool (a second full copy), verify,
    /// then disable mirroring (which deletes the replica). The source is never demoted.
    #[default]
    Copy,
    /// Demote the source, promote the replica, clone a snapshot of it under the copy name
    /// (usable at once), then verify, flatten and remove the replica off the critical path.
    Clone,
}

/// The live part of a migration: when the cutover starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Live {
    /// The source must have had no user but rbd-mirror for this many milliseconds.
    pub idle_for_ms: u64,
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
    /// A migration with defaults: journal mode, same image name, cold, handed over by copy
    /// (set `handover` to [`Handover::Clone`] for no second full copy).
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
            handover: Handover::Copy,
            live: None,
        }
    }

    /// Whether this migration hands over a clone of the promoted replica (no second full
    /// copy). Only when rbd-relay owns the image's mirroring (it was off before: another
    /// user's mirrored image is never demoted) and the result goes to Cinder or stays a
    /// plain image (the Glance path copies, then snapshots the copy).
    pub fn hands_over_clone(&self, facts: &SourceFacts) -> bool {
        self.clones_unless_mirrored(facts.mirroring_was_enabled)
    }

    /// [`VolumeMigration::hands_over_clone`] before the facts are complete (preflight):
    /// whether the image's mirroring was enabled before is all it needs of them.
    pub fn clones_unless_mirrored(&self, mirroring_was_enabled: bool) -> bool {
        self.handover == Handover::Clone && !mirroring_was_enabled && self.register.is_none()
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
            Step::WaitForCutover { .. } => "wait_for_cutover",
            Step::DemoteSource => "demote_source",
            Step::PromoteReplica => "promote_replica",
            Step::CloneReplica { .. } => "clone_replica",
            Step::VerifyHandover { .. } => "verify_handover",
            Step::FlattenCopy => "flatten_copy",
            Step::ReleaseSource => "release_source",
            Step::RemoveReplica { .. } => "remove_replica",
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
            | Step::RestoreFeatures { .. }
            | Step::WaitForCutover { .. }
            | Step::DemoteSource
            | Step::ReleaseSource => Role::SourceCephAdmin,
            Step::WaitForReplica
            | Step::PromoteReplica
            | Step::CloneReplica { .. }
            | Step::VerifyHandover { .. }
            | Step::FlattenCopy
            | Step::RemoveReplica { .. }
            | Step::CopyReplica
            | Step::SetCopyFeatures { .. }
            | Step::Verify
            | Step::SnapshotAndProtect { .. } => Role::DestinationCephAdmin,
            Step::AdoptVolume { .. } | Step::RegisterImage { .. } | Step::CheckMinDisk { .. } => {
                Role::TenantAdmin
            }
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
    /// The rest of [`Plan::volume`] for a handover by clone: (live: wait for the cutover)
    /// demote, promote, clone (usable), adopt, then off the critical path verify, flatten,
    /// put the source back, remove the replica.
    fn clone_handover(
        migration: VolumeMigration,
        facts: SourceFacts,
        mut steps: Vec<Step>,
        restore: FeatureChange,
        lost: Features,
    ) -> Self {
        let snap = crate::exec::handover_snapshot().to_string();
        if let Some(live) = migration.live {
            steps.push(Step::WaitForCutover {
                idle_for_ms: live.idle_for_ms,
            });
        }
        steps.push(Step::DemoteSource);
        steps.push(Step::PromoteReplica);
        steps.push(Step::CloneReplica {
            snap: snap.clone(),
            features: facts.features - lost,
        });
        if let Some(a) = &migration.adopt {
            steps.push(Step::AdoptVolume {
                cloud: a.cloud.clone(),
                target: a.target.clone(),
                name: a.name.clone(),
            });
        }
        steps.push(Step::VerifyHandover { snap: snap.clone() });
        steps.push(Step::FlattenCopy);
        steps.push(Step::ReleaseSource);
        if !restore.is_empty() {
            steps.push(Step::RestoreFeatures {
                change: restore,
                lost,
            });
        }
        steps.push(Step::RemoveReplica { snap });
        Self {
            version: PLAN_VERSION,
            id: migration.id(),
            migration,
            facts,
            steps,
        }
    }

    /// The steps of the cutover a failure rolls back (source demoted, nothing handed
    /// over yet): from the demotion to the clone, and the adoption when there is one.
    /// `None` for a plan that copies.
    pub fn cutover_window(&self) -> Option<std::ops::RangeInclusive<usize>> {
        let start = self.steps.iter().position(|s| *s == Step::DemoteSource)?;
        let end = self
            .steps
            .iter()
            .position(|s| matches!(s, Step::VerifyHandover { .. }))?;
        Some(start..=end.saturating_sub(1))
    }

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
        let (restore, lost) = plan_restore(during, facts.features);
        if migration.hands_over_clone(&facts) {
            return Self::clone_handover(migration, facts, steps, restore, lost);
        }
        steps.push(Step::CopyReplica);
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
        for (i, s) in self.steps.iter().enumerate() {
            out.push_str(&format!("{:>2}. [{}] {}\n", i + 1, s.role(), s.describe(m)));
        }
        out
    }
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
