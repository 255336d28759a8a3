//! Command-line flags (clap) and their validation into library types.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use librbd::PeerDirection;
use rbd_mirror_core::cloud::{AdoptTarget, SourceVolume};
use rbd_mirror_core::exec::BootableMigration;
use rbd_mirror_core::features::MirrorImageMode;
use rbd_mirror_core::plan::{Adoption, Handover, Live, Registration, VolumeMigration};
use rbd_mirror_core::spec::{ClusterSpec, ImageSpec, PoolSpec};

/// Move Ceph RBD volumes and images from one OpenStack+Ceph cloud to another through
/// rbd-mirror: enable mirroring, wait for the replica, copy and verify it, clean up.
#[derive(Debug, Parser)]
#[command(
    name = "rbd-relay",
    version,
    propagate_version = true,
    after_help = crate::exit::AFTER_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Output: human text, or JSON lines (one event per line, then a result object).
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Where migration state files live (default: $RBD_RELAY_STATE_DIR,
    /// $XDG_STATE_HOME/rbd-relay or ~/.local/state/rbd-relay).
    #[arg(long, global = true, env = "RBD_RELAY_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// More log output (-v, -vv); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors and the final result.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Progress line and summary for people.
    Text,
    /// JSON lines for machines.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Migrate an image to another cluster.
    #[command(subcommand)]
    Migrate(Box<MigrateCommand>),
    /// List recorded migrations and how far they got.
    List,
    /// Only the OpenStack tenant admin's step (split roles).
    #[command(subcommand)]
    Adopt(AdoptCommand),
    /// Only the OpenStack tenant admin's step of the bootable path (split roles).
    #[command(subcommand)]
    Register(RegisterCommand),
    /// Delete the source image of a finished migration, after re-verifying the copy against
    /// it (never automatic). Asks for confirmation unless --yes.
    DeleteSource(DeleteSourceArgs),
    /// Pair two clusters for rbd-mirror on one pool: image-mode mirroring on both, site
    /// names, a bootstrapped peer. Does nothing when already paired.
    Pair(PairArgs),
    /// Mirroring health of a pool, one image, or every mirrored pool of a cluster: mode,
    /// peers, rbd-mirror daemon, image states, progress, rate, ETA.
    Status(StatusArgs),
    /// Write the plan as one shell script per role (Ceph source admin, Ceph destination
    /// admin, OpenStack tenant admin, cleanup) plus a README, for split roles.
    #[command(subcommand)]
    Bundle(Box<crate::bundle::BundleCommand>),
    /// Continue a recorded migration where it stopped (the same as re-running its command).
    Resume(crate::recorded_migration_args::ResumeArgs),
    /// Start the cutover of a live migration now (it otherwise starts once the source has had
    /// no user but rbd-mirror for --idle-for). Refused while the source is in use, naming the
    /// users, unless --force.
    Cutover(crate::recorded_migration_args::CutoverArgs),
    /// Undo a migration that will not be finished: remove the copy it made, disable the
    /// mirroring it enabled, restore the source's features. Never touches the source's data.
    Abort(crate::recorded_migration_args::AbortArgs),
    /// Finish only the source side of a migration whose copy is verified (disable mirroring,
    /// restore features), without the remaining cloud steps.
    Cleanup(crate::recorded_migration_args::CleanupArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell) to stdout.
    Completions(crate::recorded_migration_args::CompletionsArgs),
    /// Write the man page (stdout), or one page per subcommand into --out DIR.
    Man(crate::recorded_migration_args::ManArgs),
}

/// Peer direction for `pair`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Direction {
    /// The destination only receives (one-way mirroring).
    RxOnly,
    /// Both send and receive.
    RxTx,
}

impl Direction {
    pub fn peer(self) -> PeerDirection {
        match self {
            Self::RxOnly => PeerDirection::RxOnly,
            Self::RxTx => PeerDirection::RxTx,
        }
    }
}

#[derive(Debug, Args)]
pub struct PairArgs {
    #[command(flatten)]
    pub clusters: ClusterArgs,
    /// The pool to mirror (same name on both clusters; it must exist on both).
    #[arg(long)]
    pub pool: String,
    /// Peer direction given to the bootstrap import on --to.
    #[arg(long, value_enum, default_value_t = Direction::RxOnly)]
    pub direction: Direction,
    /// Return once the peers are configured, without waiting for the rbd-mirror daemon on
    /// --to to connect to the pool on --from.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for the rbd-mirror daemon on --to to connect, in seconds.
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub wait_timeout: u64,
}

impl PairArgs {
    pub fn validate(&self) -> Result<(ClusterSpec, ClusterSpec, PoolSpec)> {
        let pool = PoolSpec::new(&self.pool).context("--pool")?;
        Ok((self.clusters.source()?, self.clusters.destination()?, pool))
    }
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// POOL or POOL/IMAGE; without it, every pool with mirroring enabled on --cluster.
    pub target: Option<String>,
    /// The cluster to ask (usually the receiving one), like rbd --cluster.
    #[arg(long)]
    pub cluster: String,
    /// Conf file (default /etc/ceph/CLUSTER.conf).
    #[arg(long)]
    pub conf: Option<PathBuf>,
    /// cephx client id (default admin).
    #[arg(long, default_value = "admin")]
    pub id: String,
    /// Refresh every 2 s until Ctrl-C (or --watch-seconds).
    #[arg(long)]
    pub watch: bool,
    /// Stop watching after this many seconds.
    #[arg(long, requires = "watch")]
    pub watch_seconds: Option<u64>,
}

/// What `status` reports on: a pool, or one image of it.
pub type StatusTarget = (PoolSpec, Option<String>);

impl StatusArgs {
    /// Cluster, and the pool with an optional image name (none: every mirrored pool).
    pub fn validate(&self) -> Result<(ClusterSpec, Option<StatusTarget>)> {
        let cluster = spec(&self.cluster, self.conf.as_ref(), &self.id).context("--cluster")?;
        let Some(target) = &self.target else {
            return Ok((cluster, None));
        };
        let (pool, image) = match target.split_once('/') {
            Some((p, i)) if !i.is_empty() && !i.contains('/') => (p, Some(i.to_string())),
            Some(_) => anyhow::bail!("'{target}': give POOL or POOL/IMAGE"),
            None => (target.as_str(), None),
        };
        let pool = PoolSpec::new(pool).with_context(|| format!("'{target}'"))?;
        Ok((cluster, Some((pool, image))))
    }
}

#[derive(Debug, Args)]
pub struct DeleteSourceArgs {
    /// Migration id, as `rbd-relay list` shows it.
    pub id: String,
    /// The destination copy to verify against (default: the recorded copy, or the adopted
    /// volume's `volume-<id>` image).
    #[arg(long)]
    pub copy: Option<String>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Subcommand)]
pub enum RegisterCommand {
    /// Register POOL/IMAGE@snap (in the destination Glance pool, snapshot protected) as a
    /// Glance image by its rbd:// location.
    Image(RegisterArgs),
}

#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// The RBD image in the destination Glance pool: POOL/IMAGE.
    pub image: String,
    /// Destination cloud, as named in clouds.yaml; needs an admin role there.
    #[arg(long, env = "OS_CLOUD")]
    pub os_cloud: Option<String>,
    /// The destination Ceph cluster (for its fsid and to check the snapshot).
    #[arg(long)]
    pub to: String,
    /// Destination conf file (default /etc/ceph/TO.conf).
    #[arg(long)]
    pub to_conf: Option<PathBuf>,
    /// Destination cephx client id (default admin).
    #[arg(long, default_value = "admin")]
    pub to_id: String,
    /// Image name (default: the RBD image name).
    #[arg(long)]
    pub name: Option<String>,
    /// Minimum disk in GiB (use at least the source volume's size).
    #[arg(long, default_value_t = 0)]
    pub min_disk: u64,
    /// The protected snapshot Glance reads.
    #[arg(long, default_value = "snap")]
    pub snapshot: String,
}

impl RegisterArgs {
    pub fn to_request(&self) -> Result<(ImageSpec, ClusterSpec, Registration)> {
        let image: ImageSpec = self.image.parse()?;
        let Some(cloud) = self.os_cloud.clone() else {
            anyhow::bail!(
                "registering needs the destination cloud: give --os-cloud (or set OS_CLOUD)"
            );
        };
        let cluster = spec(&self.to, self.to_conf.as_ref(), &self.to_id).context("--to")?;
        let r = Registration {
            cloud,
            name: self.name.clone().unwrap_or_else(|| image.image.clone()),
            snapshot: self.snapshot.clone(),
            min_disk_gib: self.min_disk,
        };
        Ok((image, cluster, r))
    }
}

#[derive(Debug, Args)]
pub struct BootableArgs {
    #[command(flatten)]
    pub clusters: ClusterArgs,
    /// The bootable Cinder volume's id in the source cloud.
    pub volume_id: String,
    /// The source cloud (clouds.yaml name); needs an admin role there.
    #[arg(long)]
    pub source_cloud: String,
    /// The destination cloud (clouds.yaml name); needs an admin role there.
    #[arg(long, env = "OS_CLOUD")]
    pub os_cloud: Option<String>,
    /// The destination Glance pool to copy the image into (the destination Glance's
    /// rbd_store_pool; not the mirrored pool, where the replica lives).
    #[arg(long)]
    pub into: String,
    /// The source Glance pool (used when Glance hides image locations).
    #[arg(long, default_value = "images")]
    pub source_pool: String,
    /// Name of the image in both clouds (default: the volume's name followed by '-image').
    #[arg(long)]
    pub name: Option<String>,
    /// Mirroring mode.
    #[arg(long, default_value = "journal", value_parser = ["journal", "snapshot"])]
    pub mode: String,
    /// Seconds without replication progress before giving up (a re-run continues).
    #[arg(long, default_value_t = 300, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub stall_timeout: u64,
    /// While the destination's rbd-mirror daemon is down or not responding (no beacon for
    /// 6 s): stop with an error at once (a re-run continues), or keep waiting for it, saying
    /// so, until --stall-timeout.
    #[arg(long, value_enum, default_value_t = OnDaemonDownArg::Fail)]
    pub on_daemon_down: OnDaemonDownArg,
    /// Check the clouds and print what would be done; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

impl BootableArgs {
    pub fn to_migration(&self) -> Result<(BootableMigration, String)> {
        rbd_mirror_core::spec::check_volume_id(&self.volume_id)?;
        let Some(cloud) = self.os_cloud.clone() else {
            anyhow::bail!(
                "the bootable path needs the destination cloud: give --os-cloud (or set OS_CLOUD)"
            );
        };
        if self.into == self.source_pool {
            anyhow::bail!(
                "--into {} is the mirrored Glance pool, where the replica itself appears; give the destination Glance's own pool (its rbd_store_pool), e.g. --into glance",
                self.into
            );
        }
        let b = BootableMigration {
            source: self.clusters.source()?,
            destination: self.clusters.destination()?,
            volume_id: self.volume_id.clone(),
            source_image_pool: self.source_pool.parse().context("--source-pool")?,
            into: self.into.parse().context("--into")?,
            name: self.name.clone(),
            mode: self.mode.parse::<MirrorImageMode>()?,
        };
        Ok((b, cloud))
    }
}

#[derive(Debug, Subcommand)]
pub enum AdoptCommand {
    /// Adopt an RBD image already in the destination Cinder pool as a Cinder volume
    /// (manage-existing; Cinder renames the image to volume-ID).
    Volume(AdoptArgs),
}

/// Where and how the destination cloud adopts (shared by `migrate volume --adopt` and
/// `adopt volume`).
#[derive(Debug, Args)]
pub struct CloudArgs {
    /// Destination cloud, as named in clouds.yaml (OS_CLIENT_CONFIG_FILE, OS_CLOUD and OS_*
    /// are read like the openstack CLI does); needs an admin role there.
    #[arg(long, env = "OS_CLOUD")]
    pub os_cloud: Option<String>,
    /// Cinder host string to adopt into (host@backend#pool, as 'cinder get-pools' prints);
    /// default: the backend that stores into the destination pool.
    #[arg(long)]
    pub cinder_host: Option<String>,
    /// Mark the adopted volume bootable. With --source-cloud, a bootable source volume is
    /// adopted bootable with its image metadata without this flag.
    #[arg(long)]
    pub bootable: bool,
}

impl CloudArgs {
    fn adoption(&self, pool: &PoolSpec, name: Option<String>) -> Result<Adoption> {
        let Some(cloud) = self.os_cloud.clone() else {
            anyhow::bail!(
                "adopting needs the destination cloud: give --os-cloud (or set OS_CLOUD)"
            );
        };
        let target = match &self.cinder_host {
            Some(h) => AdoptTarget::Host { host: h.clone() },
            None => AdoptTarget::CephPool {
                pool: pool.pool.clone(),
            },
        };
        Ok(Adoption {
            cloud,
            target,
            name,
            bootable: self.bootable,
            image_metadata: Default::default(),
            no_grow: false,
        })
    }
}

#[derive(Debug, Args)]
pub struct AdoptArgs {
    /// The RBD image in the destination Cinder pool: POOL/IMAGE.
    pub image: String,
    #[command(flatten)]
    pub cloud: CloudArgs,
    /// Name of the new volume.
    #[arg(long)]
    pub name: Option<String>,
}

impl AdoptArgs {
    pub fn to_request(&self) -> Result<(ImageSpec, Adoption)> {
        let image: ImageSpec = self.image.parse()?;
        let a = self.cloud.adoption(&image.pool, self.name.clone())?;
        Ok((image, a))
    }
}

#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
    /// Migrate one RBD volume: mirror, wait, copy into --into, verify, clean up.
    Volume(VolumeArgs),
    /// Migrate a bootable volume through Glance: upload-to-image at the source, mirror the
    /// image, copy it into the destination Glance pool, verify, clean up, snapshot + protect,
    /// register, check min_disk.
    Bootable(BootableArgs),
}

/// Which two clusters, like `rbd --cluster`.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Source cluster name (conf /etc/ceph/NAME.conf, like rbd --cluster).
    #[arg(long)]
    pub from: String,
    /// Destination cluster name.
    #[arg(long)]
    pub to: String,
    /// Source conf file (default /etc/ceph/FROM.conf).
    #[arg(long)]
    pub from_conf: Option<PathBuf>,
    /// Source cephx client id (default admin).
    #[arg(long, default_value = "admin")]
    pub from_id: String,
    /// Destination conf file (default /etc/ceph/TO.conf).
    #[arg(long)]
    pub to_conf: Option<PathBuf>,
    /// Destination cephx client id (default admin).
    #[arg(long, default_value = "admin")]
    pub to_id: String,
}

impl ClusterArgs {
    pub fn source(&self) -> Result<ClusterSpec> {
        spec(&self.from, self.from_conf.as_ref(), &self.from_id).context("--from")
    }
    pub fn destination(&self) -> Result<ClusterSpec> {
        spec(&self.to, self.to_conf.as_ref(), &self.to_id).context("--to")
    }
}

fn spec(name: &str, conf: Option<&PathBuf>, id: &str) -> Result<ClusterSpec> {
    let s = match conf {
        Some(c) => ClusterSpec::with_conf(name, c.clone())?,
        None => ClusterSpec::named(name)?,
    };
    Ok(s.client(id)?)
}

#[derive(Debug, Args)]
pub struct VolumeArgs {
    #[command(flatten)]
    pub clusters: ClusterArgs,
    /// Source image(s): POOL/IMAGE or POOL/NAMESPACE/IMAGE (its pool must be mirrored); with
    /// --source-cloud, Cinder volume ids in that cloud. Several run as a batch.
    #[arg(required_unless_present = "from_file")]
    pub images: Vec<String>,
    /// Read the images from a file: one POOL/IMAGE per line, '#' comments and blank lines
    /// allowed ('-' reads stdin).
    #[arg(long, value_name = "LIST")]
    pub from_file: Option<PathBuf>,
    /// How many images of a batch migrate at once.
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallel: u16,
    /// Destination pool to copy the replica into (e.g. the destination Cinder pool).
    #[arg(long)]
    pub into: String,
    /// Name of the copy (default: the source image name); with --adopt, the name of the new
    /// Cinder volume (default: the source volume's name with --source-cloud).
    #[arg(long)]
    pub name: Option<String>,
    /// After the verified copy and the cleanup, adopt the copy as a Cinder volume in the
    /// destination cloud (--os-cloud).
    #[arg(long)]
    pub adopt: bool,
    #[command(flatten)]
    pub cloud: CloudArgs,
    /// With --adopt: refuse (at preflight, before anything changes) an image whose size is
    /// not a whole GiB, instead of growing the copy to the next GiB before the adoption
    /// (Cinder records whole GiB; growing keeps every byte).
    #[arg(long)]
    pub no_grow: bool,
    /// The source is a Cinder volume of this cloud (IMAGE is its id); needs an admin role
    /// there to see where the volume is stored.
    #[arg(long)]
    pub source_cloud: Option<String>,
    /// Mirroring mode.
    #[arg(long, default_value = "journal", value_parser = ["journal", "snapshot"])]
    pub mode: String,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Migrate while the image is in use: rbd-mirror replicates while the instance runs;
    /// the cutover (seconds, whatever the size) starts once the source has had no user but
    /// rbd-mirror for --idle-for (shut the instance off or detach the volume), or when
    /// `rbd-relay cutover ID` is run. With --handover copy: accept an image in use, and
    /// writes after the copy are not in it.
    #[arg(long)]
    pub live: bool,
    /// With --live: seconds the source must have had no user before the cutover starts
    /// (default 2).
    #[arg(long, value_name = "SECONDS")]
    pub idle_for: Option<f64>,
    /// How the destination image is made. clone: demote the source, promote the replica and
    /// clone it (no second full copy: usable about a second after the demotion; verified,
    /// flattened and the source put back after that). copy: copy the replica and verify
    /// before anything is handed over (the source is never demoted). Images mirrored before
    /// the migration are always copied. Default: clone.
    #[arg(long, value_enum)]
    pub handover: Option<HandoverArg>,
    /// Also disable object-map, fast-diff and deep-flatten like the old runbook
    /// (deep-flatten can never be enabled again).
    #[arg(long)]
    pub disable_object_map: bool,
    /// Enable image-mode mirroring on the pool on both clusters when it is off.
    #[arg(long)]
    pub enable_pool_mirroring: bool,
    /// Accept a destination pool with less room than the image's provisioned size for the
    /// replica and the copy (a thin image that will not fill up): a warning, not a refusal.
    #[arg(long)]
    pub allow_overcommit: bool,
    /// Seconds without replication progress before giving up (a re-run continues).
    #[arg(long, default_value_t = 300, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub stall_timeout: u64,
    /// While the destination's rbd-mirror daemon is down or not responding (no beacon for
    /// 6 s): stop with an error at once (a re-run continues), or keep waiting for it, saying
    /// so, until --stall-timeout.
    #[arg(long, value_enum, default_value_t = OnDaemonDownArg::Fail)]
    pub on_daemon_down: OnDaemonDownArg,
}

impl VolumeArgs {
    /// The migration of `image` (one of [`crate::recorded_migration_args::image_list`]); `source` is the
    /// Cinder volume `image` names with --source-cloud.
    pub fn to_migration(
        &self,
        image: &str,
        source: Option<&SourceVolume>,
    ) -> Result<VolumeMigration> {
        let image: ImageSpec = match source {
            Some(v) => format!("{}/{}", v.pool, v.image)
                .parse()
                .with_context(|| format!("the RBD image of volume {}", v.id))?,
            None => image.parse()?,
        };
        let into: PoolSpec = self.into.parse().context("--into")?;
        let mut m = VolumeMigration::new(
            self.clusters.source()?,
            self.clusters.destination()?,
            image,
            into.clone(),
        );
        if self.adopt {
            let name = self.name.clone().or_else(|| {
                source
                    .and_then(|v| v.name.clone())
                    .filter(|n| !n.is_empty())
            });
            let mut a = self.cloud.adoption(&into, name)?;
            // a bootable source volume is adopted as a bootable volume with its image
            // metadata (what Nova reads when it boots from it)
            if let Some(v) = source.filter(|v| v.bootable) {
                a.bootable = true;
                a.image_metadata = v.image_metadata.clone();
            }
            a.no_grow = self.no_grow;
            m.adopt = Some(a);
        } else if let Some(n) = &self.name {
            m.dest_name = m.copy_target().renamed(n).context("--name")?.image;
        }
        if !self.adopt && (self.cloud.cinder_host.is_some() || self.cloud.bootable || self.no_grow)
        {
            anyhow::bail!(
                "--cinder-host, --bootable and --no-grow apply to the adoption: add --adopt"
            );
        }
        m.mode = self.mode.parse::<MirrorImageMode>()?;
        m.allow_live = self.live;
        m.handover = self.handover.unwrap_or(HandoverArg::Clone).into();
        if self.live && m.handover == Handover::Clone {
            let idle_for = self.idle_for.unwrap_or(2.0);
            if !(idle_for.is_finite() && (0.0..=3600.0).contains(&idle_for)) {
                anyhow::bail!(
                    "--idle-for {idle_for}: give the seconds without users that start the cutover, 0 to 3600"
                );
            }
            m.live = Some(Live {
                idle_for_ms: (idle_for * 1000.0).round() as u64,
            });
        } else if let Some(idle_for) = self.idle_for {
            anyhow::bail!(
                "--idle-for {idle_for} applies only to a live migration that cuts over (--live, with the default --handover clone); add --live, or drop --idle-for"
            );
        }
        m.disable_map_features = self.disable_object_map;
        m.enable_pool_mirroring = self.enable_pool_mirroring;
        m.allow_overcommit = self.allow_overcommit;
        if m.source.name == m.destination.name && m.source.conf == m.destination.conf {
            anyhow::bail!(
                "--from and --to are the same cluster ('{}'); rbd-relay moves images between two clusters",
                m.source.name
            );
        }
        Ok(m)
    }
}

/// `--handover`: how the destination image is made from the replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HandoverArg {
    /// Demote the source, promote the replica, clone it (no second full copy).
    Clone,
    /// Copy the replica (a second full copy; the source is never demoted).
    Copy,
}

impl From<HandoverArg> for Handover {
    fn from(a: HandoverArg) -> Self {
        match a {
            HandoverArg::Clone => Handover::Clone,
            HandoverArg::Copy => Handover::Copy,
        }
    }
}

/// `--on-daemon-down`: what a wait does while no rbd-mirror daemon of the destination responds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnDaemonDownArg {
    /// Stop with an error naming the daemon; a re-run continues.
    Fail,
    /// Keep waiting, saying why, until --stall-timeout.
    Wait,
}

impl From<OnDaemonDownArg> for rbd_mirror_core::wait::OnDaemonDown {
    fn from(a: OnDaemonDownArg) -> Self {
        match a {
            OnDaemonDownArg::Fail => Self::Fail,
            OnDaemonDownArg::Wait => Self::Wait,
        }
    }
}
