//! A migration as data: the request ([`VolumeMigration`]), what preflight learned about the
//! source ([`SourceFacts`]) and the ordered, typed [`Step`]s. The same plan is executed,
//! printed as a dry run and recorded in the state file, so a re-run resumes exactly it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::cloud::AdoptTarget;
use crate::features::{plan_enable, plan_restore, FeatureChange, Features, MirrorImageMode};
use crate::ops::PoolMirrorMode;
use crate::spec::{ClusterSpec, ImageSpec, PoolSpec};

mod step;
pub use step::Step;

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
    /// Where the source image comes from (an image of the source cluster unless said).
    #[serde(default, skip_serializing_if = "Origin::is_image")]
    pub origin: Origin,
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

/// Where a plan's source image comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Origin {
    /// An existing image of the source cluster (`image`).
    #[default]
    Image,
    /// A bootable Cinder volume of the source cloud, uploaded to a Glance image by the
    /// plan's first step ([`Step::UploadToImage`]); `image` names that Glance image's RBD
    /// image once the upload is done, and the steps after [`Step::Preflight`] are planned
    /// when preflight has read it.
    Upload(Upload),
    /// An image already in place in the destination pool (split roles): the plan is the
    /// tenant admin's step alone (adopt or register), the Ceph admins having copied and
    /// verified the image.
    InPlace,
}

impl Origin {
    /// Whether the source is an existing image of the source cluster (the default).
    pub fn is_image(&self) -> bool {
        *self == Origin::Image
    }
}

/// The upload-to-image of a bootable volume (the runbook's bootable path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upload {
    /// The source cloud (its name in clouds.yaml).
    pub cloud: String,
    /// The Cinder volume in the source cloud.
    pub volume_id: String,
    /// Its size in GiB (the registered image's least min_disk).
    pub volume_size_gib: u64,
    /// The image name as asked (`--name`), `None` for the default.
    pub asked_name: Option<String>,
    /// The name of the image in both clouds.
    pub image_name: String,
    /// The source Glance pool (where the image's data is when Glance hides its location).
    pub pool: PoolSpec,
}

impl Upload {
    /// What the plan calls the uploaded image until the upload says which it is.
    pub fn pending_image(&self) -> ImageSpec {
        ImageSpec {
            pool: self.pool.clone(),
            image: "<image id>".into(),
        }
    }
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
    /// Image metadata to set on the adopted volume (`volume_image_metadata`: what Nova reads
    /// of a bootable volume, e.g. `hw_disk_bus`, `os_type`, the image it was made from): the
    /// source volume's, read from the source cloud for a bootable source volume.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub image_metadata: std::collections::BTreeMap<String, String>,
    /// Refuse (at preflight) an image whose size is not a whole GiB instead of growing the
    /// copy to the next GiB before the adoption ([`Step::GrowCopy`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_grow: bool,
}

/// Image metadata key of the image-level override of librbd's `rbd_journal_max_payload_bytes`
/// (librbd reads `conf_`-prefixed image metadata as that image's configuration): the
/// largest journal entry a writer of the image makes. A live journal-mode migration sets it
/// ([`Step::SetJournalPayload`]) before it enables journaling under the running writer,
/// whose librbd reads it when it opens the new journal.
pub const JOURNAL_PAYLOAD_KEY: &str = "conf_rbd_journal_max_payload_bytes";

/// The value a live journal-mode migration gives [`JOURNAL_PAYLOAD_KEY`]: 8 MiB, so a
/// write of up to 8 MiB is one journal entry instead of one per 16 KiB (librbd's default),
/// and rbd-mirror's replay keeps up with the writer (see docs/architecture.md, "Journal
/// live").
pub const JOURNAL_PAYLOAD_BYTES: u64 = 8 << 20;

/// One GiB: Cinder sizes volumes in whole GiB (manage-existing rounds an image's size up).
pub const GIB: u64 = 1 << 30;

/// Whether the plan tunes the writer's journal payload ([`Step::SetJournalPayload`] before
/// the features, [`Step::RestoreJournalPayload`] after they are back): a live journal-mode
/// migration that enables journaling itself, under a running writer whose librbd then
/// opens the new journal with the image-level override. Not a cold one: nobody writes the
/// source then (preflight refuses an image in use without `--allow-live`, and a cold copy
/// does not carry writes made after it), so the override would change nothing. Not when
/// journaling was on before: the writer's journal is already open with its own payload.
fn tunes_journal_payload(m: &VolumeMigration, change: &FeatureChange) -> bool {
    m.live.is_some()
        && m.mode == MirrorImageMode::Journal
        && change
            .enable
            .contains(crate::features::Features::JOURNALING)
}

/// The step growing the copy to the next whole GiB before its adoption, when it is adopted,
/// its size is not a whole GiB and growing is not refused (`--no-grow`, then preflight
/// refuses the image instead). Cinder records the rounded size; later Cinder operations
/// (backup, upload to image, retype, extend) trust it.
fn grow_before_adoption(m: &VolumeMigration, facts: &SourceFacts) -> Option<Step> {
    let a = m.adopt.as_ref()?;
    if a.no_grow || facts.size.is_multiple_of(GIB) {
        return None;
    }
    Some(Step::GrowCopy {
        size: facts.size.div_ceil(GIB) * GIB,
    })
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
            origin: Origin::Image,
        }
    }

    /// The request of a bootable volume's move through Glance, before the upload: the
    /// source image is the Glance image the upload makes ([`Upload::pending_image`] until
    /// then), registered at the end in `dst_cloud` as `upload.image_name`.
    pub fn bootable(
        source: ClusterSpec,
        destination: ClusterSpec,
        upload: Upload,
        into: PoolSpec,
        mode: MirrorImageMode,
        dst_cloud: &str,
    ) -> Self {
        let mut m = Self::new(source, destination, upload.pending_image(), into);
        m.mode = mode;
        m.register = Some(Registration {
            cloud: dst_cloud.to_string(),
            name: upload.image_name.clone(),
            snapshot: "snap".into(),
            min_disk_gib: upload.volume_size_gib,
        });
        m.origin = Origin::Upload(upload);
        m
    }

    /// The tenant admin's step alone on `image`, already in the destination pool of
    /// `cluster` (split roles): adopt it (`adopt`) or register it (`register`).
    pub fn in_place(
        cluster: ClusterSpec,
        image: ImageSpec,
        adopt: Option<Adoption>,
        register: Option<Registration>,
    ) -> Self {
        let into = image.pool.clone();
        let mut m = Self::new(cluster.clone(), cluster, image, into);
        m.adopt = adopt;
        m.register = register;
        m.origin = Origin::InPlace;
        m
    }

    /// The request as the caller makes it, without what the run learns on the way (the
    /// uploaded image): a recorded run continues only the same request.
    pub fn as_requested(&self) -> Self {
        let mut m = self.clone();
        if let Origin::Upload(u) = &self.origin {
            m.image = u.pending_image();
            m.dest_name = m.image.image.clone();
            if let Some(r) = &mut m.register {
                r.min_disk_gib = u.volume_size_gib;
            }
        }
        m
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
        let raw = match &self.origin {
            Origin::Image => format!(
                "{}_{}_to_{}_{}",
                self.source.name,
                self.image,
                self.destination.name,
                self.copy_target()
            ),
            // known before the upload, so the same before and after it
            Origin::Upload(u) => format!(
                "{}_volume_{}_to_{}_{}",
                self.source.name, u.volume_id, self.destination.name, self.into
            ),
            // the marker earlier versions gave the volume or image in the cloud
            Origin::InPlace => format!(
                "{}_{}_{}",
                if self.adopt.is_some() {
                    "adopt"
                } else {
                    "register"
                },
                self.image.pool,
                self.image.image
            ),
        };
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
        match &self.origin {
            Origin::Upload(u) => format!("{}:upload of volume {}", self.source.name, u.volume_id),
            Origin::Image | Origin::InPlace => format!("{}:{}", self.source.name, self.image),
        }
    }

    /// The copy target as `CLUSTER:POOL/NAME`: what the state directory's target lock is
    /// named after, so that two migrations into one copy name never run at once.
    pub fn target_lock_name(&self) -> String {
        match &self.origin {
            // the copy is named after the uploaded image's id, which no other plan has
            Origin::Upload(u) => format!(
                "{}:{}/upload of volume {}",
                self.destination.name, self.into, u.volume_id
            ),
            Origin::Image | Origin::InPlace => {
                format!("{}:{}", self.destination.name, self.copy_target())
            }
        }
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
    /// The image's own value of [`JOURNAL_PAYLOAD_KEY`] before the migration (read by
    /// preflight of a live journal-mode migration), `None` when it had none: what
    /// [`Step::RestoreJournalPayload`] puts back. Plans recorded before it existed had none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_payload_before: Option<String>,
}

impl SourceFacts {
    /// The facts of a plan whose source image preflight has not read yet (see
    /// [`Plan::awaiting_upload`]): empty, and used by no step of such a plan.
    pub fn not_read() -> Self {
        Self {
            features: Features::empty(),
            size: 0,
            object_size: 0,
            image_id: String::new(),
            snapshots: Vec::new(),
            mirror_snapshots_before: Vec::new(),
            source_pool_mode: PoolMirrorMode::Disabled,
            destination_pool_mode: PoolMirrorMode::Disabled,
            mirroring_was_enabled: false,
            watchers: Vec::new(),
            journal_payload_before: None,
        }
    }

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
        restore_payload: Option<Step>,
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
        steps.extend(grow_before_adoption(&migration, &facts));
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
        steps.extend(restore_payload);
        steps.push(Step::RemoveReplica { snap });
        Self {
            version: PLAN_VERSION,
            id: migration.id(),
            migration,
            facts,
            steps,
        }
    }

    /// The size the copy is grown to before its adoption ([`Step::GrowCopy`]), if it is:
    /// its first `facts.size` bytes are then the verified content, the rest zeros.
    pub fn grown_to(&self) -> Option<u64> {
        self.steps.iter().find_map(|s| match s {
            Step::GrowCopy { size } => Some(*size),
            _ => None,
        })
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
        let payload = tunes_journal_payload(&migration, &change);
        if payload {
            steps.push(Step::SetJournalPayload {
                bytes: JOURNAL_PAYLOAD_BYTES,
            });
        }
        if !change.is_empty() {
            steps.push(Step::EnableFeatures { change });
        }
        steps.push(Step::EnableMirroring {
            mode: migration.mode,
        });
        steps.push(Step::WaitForReplica);
        let (restore, lost) = plan_restore(during, facts.features);
        let restore_payload = payload.then(|| Step::RestoreJournalPayload {
            original: facts.journal_payload_before.clone(),
        });
        if migration.hands_over_clone(&facts) {
            return Self::clone_handover(migration, facts, steps, restore, lost, restore_payload);
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
            steps.extend(restore_payload);
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
        steps.extend(grow_before_adoption(&migration, &facts));
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

    /// The plan of a bootable volume's move before its upload: upload, then preflight of
    /// the uploaded image, which plans the steps after it ([`Plan::planned_after_preflight`]).
    /// The facts are not read yet (the image does not exist); no step uses them.
    pub fn awaiting_upload(migration: VolumeMigration) -> Self {
        let steps = match &migration.origin {
            Origin::Upload(u) => vec![
                Step::UploadToImage {
                    cloud: u.cloud.clone(),
                    volume_id: u.volume_id.clone(),
                    size_gib: u.volume_size_gib,
                    image_name: u.image_name.clone(),
                },
                Step::Preflight,
            ],
            Origin::Image | Origin::InPlace => vec![Step::Preflight],
        };
        Self {
            version: PLAN_VERSION,
            id: migration.id(),
            migration,
            facts: SourceFacts::not_read(),
            steps,
        }
    }

    /// The plan of the tenant admin's step alone on an image already in place (split
    /// roles, [`Origin::InPlace`]): adopt it, or register it. The Ceph admins copied and
    /// verified it; there are no source facts.
    pub fn in_place(migration: VolumeMigration) -> Self {
        let mut steps = Vec::new();
        if let Some(r) = &migration.register {
            steps.push(Step::RegisterImage {
                cloud: r.cloud.clone(),
                name: r.name.clone(),
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
            facts: SourceFacts::not_read(),
            steps,
        }
    }

    /// Whether the steps after preflight are still to be planned (a bootable plan before
    /// preflight read the uploaded image).
    pub fn awaits_preflight(&self) -> bool {
        self.steps.last() == Some(&Step::Preflight)
    }

    /// Plan the steps after preflight from the facts it read, keeping the steps done before
    /// it (the upload).
    pub fn planned_after_preflight(&mut self, facts: SourceFacts) {
        let done = self
            .steps
            .iter()
            .take_while(|s| **s != Step::Preflight)
            .cloned();
        let full = Plan::volume(self.migration.clone(), facts);
        self.steps = done.chain(full.steps).collect();
        self.facts = full.facts;
    }

    /// What follows preflight while the plan awaits it, for a dry run: the steps as far as
    /// they are known before the source image is read (its features decide the rest).
    pub fn outline_after_preflight(&self) -> Vec<String> {
        if !self.awaits_preflight() {
            return Vec::new();
        }
        let m = &self.migration;
        let (s, d) = (&m.source.name, &m.destination.name);
        let image = &m.image;
        let mut lines = vec![
            format!("[{}] preflight, enable the mirroring features and {}-mode mirroring of {s}:{image}", Role::SourceCephAdmin, m.mode),
            format!("[{}] wait for the replica, copy it to {d}:{}/<image id>, verify (sha256)", Role::DestinationCephAdmin, m.into),
            format!("[{}] disable mirroring of {s}:{image} and restore its features", Role::SourceCephAdmin),
        ];
        if let Some(r) = &m.register {
            lines.push(format!(
                "[{}] create snapshot {d}:{}/<image id>@{} and protect it",
                Role::DestinationCephAdmin,
                m.into,
                r.snapshot
            ));
            lines.push(format!(
                "[{}] register image '{}' in cloud {} at rbd://<{d} fsid>/{}/<image id>/{}",
                Role::TenantAdmin,
                r.name,
                r.cloud,
                m.into,
                r.snapshot
            ));
            lines.push(format!(
                "[{}] check that its min_disk is at least {} GiB (the source volume's size)",
                Role::TenantAdmin,
                r.min_disk_gib
            ));
        }
        lines
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
        let outline = self.outline_after_preflight();
        if outline.is_empty() {
            out.push_str(&format!(
                "source: {} bytes, features {}, {} user snapshot(s)\n",
                self.facts.size,
                self.facts.features,
                self.facts.snapshots.len()
            ));
        } else {
            out.push_str("source: read by preflight once the upload made it\n");
        }
        out.push_str(&render_steps(&self.steps, m));
        if !outline.is_empty() {
            out.push_str("    then, planned exactly once preflight has read the image:\n");
            for line in outline {
                out.push_str(&format!("    - {line}\n"));
            }
        }
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
            journal_payload_before: None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
