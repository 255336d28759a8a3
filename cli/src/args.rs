//! Command-line flags (clap) and their validation into library types.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use rbd_mirror_core::features::MirrorImageMode;
use rbd_mirror_core::plan::VolumeMigration;
use rbd_mirror_core::spec::{ClusterSpec, ImageSpec, PoolSpec};

/// Move Ceph RBD volumes and images from one OpenStack+Ceph cloud to another through
/// rbd-mirror: enable mirroring, wait for the replica, copy and verify it, clean up.
#[derive(Debug, Parser)]
#[command(name = "rbd-relay", version, propagate_version = true)]
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
    Migrate(MigrateCommand),
    /// List recorded migrations and how far they got.
    List,
}

#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
    /// Migrate one RBD volume: mirror, wait, copy into --into, verify, clean up.
    Volume(VolumeArgs),
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
    /// Source image: POOL/IMAGE or POOL/NAMESPACE/IMAGE (its pool must be mirrored).
    pub image: String,
    /// Destination pool to copy the replica into (e.g. the destination Cinder pool).
    #[arg(long)]
    pub into: String,
    /// Name of the copy (default: the source image name).
    #[arg(long)]
    pub name: Option<String>,
    /// Mirroring mode.
    #[arg(long, default_value = "journal", value_parser = ["journal", "snapshot"])]
    pub mode: String,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Accept an image in use (watchers); writes after the copy are not in the copy.
    #[arg(long)]
    pub live: bool,
    /// Also disable object-map, fast-diff and deep-flatten like the old runbook
    /// (deep-flatten can never be enabled again).
    #[arg(long)]
    pub disable_object_map: bool,
    /// Enable image-mode mirroring on the pool on both clusters when it is off.
    #[arg(long)]
    pub enable_pool_mirroring: bool,
    /// Seconds without replication progress before giving up (a re-run continues).
    #[arg(long, default_value_t = 300)]
    pub stall_timeout: u64,
}

impl VolumeArgs {
    pub fn to_migration(&self) -> Result<VolumeMigration> {
        let image: ImageSpec = self.image.parse()?;
        let into: PoolSpec = self.into.parse().context("--into")?;
        let mut m = VolumeMigration::new(
            self.clusters.source()?,
            self.clusters.destination()?,
            image,
            into,
        );
        if let Some(n) = &self.name {
            m.dest_name = m.copy_target().renamed(n).context("--name")?.image;
        }
        m.mode = self.mode.parse::<MirrorImageMode>()?;
        m.allow_live = self.live;
        m.disable_map_features = self.disable_object_map;
        m.enable_pool_mirroring = self.enable_pool_mirroring;
        if m.source.name == m.destination.name && m.source.conf == m.destination.conf {
            anyhow::bail!(
                "--from and --to are the same cluster ('{}'); rbd-relay moves images between two clusters",
                m.source.name
            );
        }
        Ok(m)
    }
}
