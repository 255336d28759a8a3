//! Names, ports and paths of the environment, in one place.
//!
//! Other Ceph fixtures run on the same machine (`ref-a`/`ref-b` on mon ports 3300/6789 and
//! 3310/6790 with bind range 7100-7249, `osks` on 3500/6900 with 7500-7599), so every port
//! and every file name here is chosen not to collide with them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Name of the source cluster.
pub const SITE_A: &str = "site-a";
/// Name of the destination cluster (rbd-mirror runs here).
pub const SITE_B: &str = "site-b";
/// Pool holding the source cloud's Cinder volumes; mirrored (mode `image`) on both sites.
pub const POOL_VOLUMES: &str = "volumes";
/// Pool holding the source cloud's Glance images; mirrored (mode `image`) on both sites.
pub const POOL_IMAGES: &str = "images";
/// Plain RBD pool used by the destination cloud's Cinder (exists on both sites, not mirrored).
pub const POOL_CINDER: &str = "cinder";
/// Plain RBD pool used by the destination cloud's Glance (exists on both sites, not mirrored).
pub const POOL_GLANCE: &str = "glance";
/// Pools in mirroring mode `image`, peered site-a -> site-b.
pub const MIRRORED_POOLS: [&str; 2] = [POOL_VOLUMES, POOL_IMAGES];
/// Plain RBD pools.
pub const PLAIN_POOLS: [&str; 2] = [POOL_CINDER, POOL_GLANCE];
/// cephx id of the rbd-mirror daemon on site-b (`client.rbd-mirror.b`).
pub const RBD_MIRROR_ID: &str = "rbd-mirror.b";
/// Environment variable overriding the state directory.
pub const STATE_DIR_ENV: &str = "RBD_RELAY_TESTENV_DIR";
/// State directory used when [`STATE_DIR_ENV`] is not set.
pub const DEFAULT_STATE_DIR: &str = "/var/tmp/rbd-relay-testenv";
/// Where cluster confs and keyrings go, so `rbd --cluster site-a` finds them.
pub const ETC_CEPH: &str = "/etc/ceph";

/// Placement groups per pool (one OSD: keep it small).
pub(crate) const PG_NUM: u32 = 8;
/// Capacity memstore advertises; RAM is used only as data is written.
pub(crate) const MEMSTORE_BYTES: u64 = 6 << 30;
/// Size of bluestore's sparse block file, unless [`BLUESTORE_GIB_ENV`] says otherwise.
pub(crate) const BLUESTORE_BYTES: u64 = 20 << 30;
/// Environment variable with the size of each bluestore OSD's block file in GiB (default
/// 20), for benches of images too big for two of them (a run holds the source, the replica
/// and its copy at once, and bluestore frees removed images' space lazily).
pub const BLUESTORE_GIB_ENV: &str = "RBD_RELAY_TESTENV_BLUESTORE_GIB";

/// Environment variable that, set to `1`, puts each bluestore OSD on a loop device over its
/// sparse file with bluestore's discard on. The space of removed images then goes back to
/// the host's disk. A plain file only grows: bluestore's allocator moves on through the
/// whole file before it reuses freed space, so a run that writes and removes N GiB in turn
/// takes up to the file's full size on the disk. Unset or `0`: a plain file (the default).
pub const BLUESTORE_LOOP_ENV: &str = "RBD_RELAY_TESTENV_BLUESTORE_LOOP";

/// How each bluestore OSD keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BluestoreFile {
    /// Size of the block file (and device), bytes.
    pub bytes: u64,
    /// On a loop device with discard ([`BLUESTORE_LOOP_ENV`]), not on the file itself.
    pub on_loop: bool,
}

/// The bluestore settings in effect: [`BLUESTORE_GIB_ENV`] when it holds a whole number of
/// GiB from 1 to 1024, else [`BLUESTORE_BYTES`]; and [`BLUESTORE_LOOP_ENV`].
pub(crate) fn bluestore_file() -> Result<BluestoreFile, String> {
    Ok(BluestoreFile {
        bytes: bluestore_bytes_from(std::env::var(BLUESTORE_GIB_ENV).ok().as_deref())?,
        on_loop: bluestore_on_loop_from(std::env::var(BLUESTORE_LOOP_ENV).ok().as_deref())?,
    })
}

fn bluestore_on_loop_from(value: Option<&str>) -> Result<bool, String> {
    match value.map(str::trim) {
        None | Some("") | Some("0") => Ok(false),
        Some("1") => Ok(true),
        Some(v) => Err(format!(
            "{BLUESTORE_LOOP_ENV}={v}: set it to 1 to put each bluestore OSD on a loop device with discard, to 0 or unset it for a plain file"
        )),
    }
}

fn bluestore_bytes_from(value: Option<&str>) -> Result<u64, String> {
    match value.map(str::trim) {
        None | Some("") => Ok(BLUESTORE_BYTES),
        Some(v) => match v.parse::<u64>() {
            Ok(gib @ 1..=1024) => Ok(gib << 30),
            _ => Err(format!(
                "{BLUESTORE_GIB_ENV}={v}: give the size of each bluestore OSD's block file as a whole number of GiB from 1 to 1024 (default 20), or unset it"
            )),
        },
    }
}

#[cfg(test)]
mod bluestore_size_tests {
    use super::*;

    #[test]
    fn bluestore_goes_on_a_loop_device_only_when_asked_with_1() {
        for off in [None, Some(""), Some("0"), Some(" 0 ")] {
            assert_eq!(bluestore_on_loop_from(off), Ok(false), "{off:?}");
        }
        assert_eq!(bluestore_on_loop_from(Some("1")), Ok(true));
        for bad in ["yes", "true", "2", "-1"] {
            let e = bluestore_on_loop_from(Some(bad)).unwrap_err();
            assert!(e.contains(BLUESTORE_LOOP_ENV) && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn the_bluestore_size_is_twenty_gib_unless_a_whole_number_of_gib_is_given() {
        assert_eq!(bluestore_bytes_from(None), Ok(20 << 30));
        assert_eq!(bluestore_bytes_from(Some("")), Ok(20 << 30));
        assert_eq!(bluestore_bytes_from(Some("48")), Ok(48 << 30));
        for bad in ["0", "-1", "1.5", "20G", "4096"] {
            let e = bluestore_bytes_from(Some(bad)).unwrap_err();
            assert!(e.contains(BLUESTORE_GIB_ENV) && e.contains(bad), "{e}");
        }
    }
}

/// The state directory in effect: `$RBD_RELAY_TESTENV_DIR` or [`DEFAULT_STATE_DIR`].
pub fn default_state_dir() -> PathBuf {
    match std::env::var_os(STATE_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(DEFAULT_STATE_DIR),
    }
}

/// How the OSDs store data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Objectstore {
    /// In RAM: fastest start, data gone when the OSD stops. Fine for images of a few hundred MiB.
    #[default]
    Memstore,
    /// On a sparse file in the state directory: for GiB-sized images.
    Bluestore,
}

impl Objectstore {
    /// The value of `osd_objectstore`.
    pub fn as_str(self) -> &'static str {
        match self {
            Objectstore::Memstore => "memstore",
            Objectstore::Bluestore => "bluestore",
        }
    }
}

impl fmt::Display for Objectstore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error of [`Objectstore::from_str`].
#[derive(Debug, thiserror::Error)]
#[error("unknown objectstore {0:?} (expected memstore or bluestore)")]
pub struct UnknownObjectstore(String);

impl FromStr for Objectstore {
    type Err = UnknownObjectstore;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "memstore" => Ok(Objectstore::Memstore),
            "bluestore" => Ok(Objectstore::Bluestore),
            other => Err(UnknownObjectstore(other.to_string())),
        }
    }
}

/// Fixed network settings of one site.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SiteSpec {
    pub name: &'static str,
    pub mon_v2: u16,
    pub mon_v1: u16,
    pub bind_min: u16,
    pub bind_max: u16,
    /// The site runs the rbd-mirror daemon (pulls from the other site).
    pub runs_rbd_mirror: bool,
}

impl SiteSpec {
    /// `mon_host` value.
    pub fn mon_host(&self) -> String {
        format!(
            "[v2:127.0.0.1:{},v1:127.0.0.1:{}]",
            self.mon_v2, self.mon_v1
        )
    }
}

/// Both sites: site-a first (source), then site-b (destination, runs rbd-mirror).
pub(crate) const SITES: [SiteSpec; 2] = [
    SiteSpec {
        name: SITE_A,
        mon_v2: 3400,
        mon_v1: 6840,
        bind_min: 7300,
        bind_max: 7349,
        runs_rbd_mirror: false,
    },
    SiteSpec {
        name: SITE_B,
        mon_v2: 3410,
        mon_v1: 6850,
        bind_min: 7350,
        bind_max: 7399,
        runs_rbd_mirror: true,
    },
];

/// The daemons of the environment, in start order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Daemon {
    /// `ceph-mon -i a`.
    Mon,
    /// `ceph-mgr -i x`.
    Mgr,
    /// `ceph-osd -i 0`.
    Osd,
    /// `rbd-mirror --id rbd-mirror.b` (site-b only).
    RbdMirror,
}

impl Daemon {
    /// The cephx entity name, which is also part of the pid file, asok and log names.
    pub fn entity(self) -> String {
        match self {
            Daemon::Mon => "mon.a".into(),
            Daemon::Mgr => "mgr.x".into(),
            Daemon::Osd => "osd.0".into(),
            Daemon::RbdMirror => format!("client.{RBD_MIRROR_ID}"),
        }
    }

    /// The daemons that run on a site.
    pub(crate) fn on(spec: &SiteSpec) -> Vec<Daemon> {
        let mut all = vec![Daemon::Mon, Daemon::Mgr, Daemon::Osd];
        if spec.runs_rbd_mirror {
            all.push(Daemon::RbdMirror);
        }
        all
    }
}

impl fmt::Display for Daemon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.entity())
    }
}

/// Paths inside the state directory.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Layout { root: root.into() }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn site_dir(&self, site: &str) -> PathBuf {
        self.root.join(site)
    }
    pub fn run_dir(&self, site: &str) -> PathBuf {
        self.site_dir(site).join("run")
    }
    pub fn log_dir(&self, site: &str) -> PathBuf {
        self.site_dir(site).join("log")
    }
    pub fn pid_file(&self, site: &str, daemon: Daemon) -> PathBuf {
        self.run_dir(site)
            .join(format!("{site}-{}.pid", daemon.entity()))
    }
    pub fn asok(&self, site: &str, daemon: Daemon) -> PathBuf {
        self.run_dir(site)
            .join(format!("{site}-{}.asok", daemon.entity()))
    }
    pub fn state_file(&self) -> PathBuf {
        self.root.join("state.json")
    }
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("lock")
    }
}

/// `/etc/ceph/<site>.conf`.
pub fn conf_path(site: &str) -> PathBuf {
    Path::new(ETC_CEPH).join(format!("{site}.conf"))
}

/// `/etc/ceph/<site>.<entity>.keyring` (what `[client] keyring` in the conf points at).
pub fn keyring_path(site: &str, entity: &str) -> PathBuf {
    Path::new(ETC_CEPH).join(format!("{site}.{entity}.keyring"))
}

/// The Ceph release a site runs. site-a always runs the host's (Debian 12: Pacific);
/// site-b may run a newer one from a Debian chroot, to test a migration from an old cloud
/// into a new one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Release {
    /// Ceph 16.2, the host's own packages (no chroot).
    #[default]
    Pacific,
    /// Ceph 18.2, from a Debian 13 (trixie) chroot.
    Reef,
    /// Ceph 20.2, from a Debian unstable (sid) chroot.
    Tentacle,
}

impl Release {
    /// The release name as `ceph versions` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Release::Pacific => "pacific",
            Release::Reef => "reef",
            Release::Tentacle => "tentacle",
        }
    }

    /// The OpenStack release a destination cloud on this site runs, when it is not the
    /// host's (Zed): Reef's trixie chroot carries OpenStack 2025.1 (Keystone 27, Cinder 26,
    /// Glance 30). Tentacle's sid chroot has no cloud: it stays the host's.
    pub fn openstack_release(self) -> Option<&'static str> {
        match self {
            Release::Reef => Some("2025.1"),
            Release::Pacific | Release::Tentacle => None,
        }
    }

    /// The Debian suite whose packages carry this release, when it is not the host's.
    pub fn chroot_suite(self) -> Option<&'static str> {
        match self {
            Release::Pacific => None,
            Release::Reef => Some("trixie"),
            Release::Tentacle => Some("sid"),
        }
    }
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error of [`Release::from_str`].
#[derive(Debug, thiserror::Error)]
#[error("unknown Ceph release {0:?} (expected pacific, reef or tentacle)")]
pub struct UnknownRelease(String);

impl FromStr for Release {
    type Err = UnknownRelease;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pacific" => Ok(Release::Pacific),
            "reef" => Ok(Release::Reef),
            "tentacle" => Ok(Release::Tentacle),
            other => Err(UnknownRelease(other.to_string())),
        }
    }
}
