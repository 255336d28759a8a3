//! Real local test environment for rbd-relay: two Ceph clusters (`site-a` the source,
//! `site-b` the destination) with an rbd-mirror daemon, and optionally two OpenStack clouds
//! (Keystone, Cinder, Glance) on top of them.
//!
//! Everything runs on loopback as real daemons from Debian's packages; nothing is mocked.
//! Tests share one environment per machine (started once, guarded by a file lock) and use
//! [`unique_name`] so they can run side by side:
//!
//! ```no_run
//! let env = testenv::shared()?;
//! let _logs = env.log_guard(); // prints daemon logs if the test panics
//! let image = testenv::unique_name("img");
//! // rbd --cluster site-a create volumes/<image> ...
//! # Ok::<(), testenv::Error>(())
//! ```
//!
//! From a shell (as root): `testenv up [--openstack] [--objectstore bluestore]`,
//! `eval "$(testenv env)"`, `testenv status`, `testenv down`.
//!
//! # What runs
//!
//! | | site-a (source) | site-b (destination) |
//! |---|---|---|
//! | daemons | mon.a, mgr.x, osd.0 | mon.a, mgr.x, osd.0, rbd-mirror (`client.rbd-mirror.b`) |
//! | mon v2 / v1 | 3400 / 6840 | 3410 / 6850 |
//! | mgr/OSD ports | 7300-7349 | 7350-7399 |
//! | mirrored pools (mode `image`) | `volumes`, `images` | `volumes`, `images` (peer: site-a, rx-only) |
//! | plain RBD pools | `cinder`, `glance` | `cinder`, `glance` |
//!
//! Confs and keyrings are `/etc/ceph/site-{a,b}.conf` and
//! `/etc/ceph/site-{a,b}.client.admin.keyring`, so `rbd --cluster site-a` just works. Daemon
//! data, pid files, admin sockets and logs live under the state directory
//! (`/var/tmp/rbd-relay-testenv`, or `$RBD_RELAY_TESTENV_DIR`): `site-X/{mon.a,mgr.x,osd.0}`,
//! `site-X/run`, `site-X/log` (rbd-mirror logs to `site-b/log/rbd-mirror.log`), plus
//! `state.json` ([`Env`]'s contents) and `lock`. OSDs use memstore unless bluestore (a
//! sparse 20 GiB file in the OSD directory) is asked for, for GiB-sized images.

pub mod openstack;
pub mod probe;
pub mod writer;

mod chroot;
mod cluster;
mod conf;
mod env;
mod error;
mod health;
mod layout;
mod loopdev;
mod process;
mod roles;
mod state;
mod test_cloud;

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use cluster::{DaemonProcessStatus, Teardown};
pub use env::{Env, LogGuard, Pools, POOLS};
pub use error::{Error, Result};
pub use health::running_release;
pub use layout::{
    conf_path, default_state_dir, keyring_path, Daemon, Objectstore, Release, UnknownObjectstore,
    UnknownRelease, BLUESTORE_GIB_ENV, BLUESTORE_LOOP_ENV, DEFAULT_STATE_DIR, ETC_CEPH,
    MIRRORED_POOLS, PLAIN_POOLS, POOL_CINDER, POOL_GLANCE, POOL_IMAGES, POOL_VOLUMES,
    RBD_MIRROR_ID, SITE_A, SITE_B, STATE_DIR_ENV,
};
pub use roles::{RoleUser, RoleUsers, DESTINATION_ADMIN_ID, SOURCE_ADMIN_ID};
pub use test_cloud::{test_cloud, TestCloud};

use cluster::Assessment;
use layout::{Layout, SITES};

/// One Ceph cluster of the pair, as a client sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CephSite {
    /// Cluster name (`site-a` or `site-b`): `rbd --cluster NAME` finds its conf.
    pub name: String,
    /// Path of the cluster's ceph.conf (`/etc/ceph/NAME.conf`).
    pub conf: PathBuf,
    /// Path of the `client.admin` keyring.
    pub admin_keyring: PathBuf,
    /// Cluster fsid.
    pub fsid: String,
}

/// Environment variable choosing the objectstore when [`shared`] has to build the pair
/// (`memstore`, the default, or `bluestore`).
pub const OBJECTSTORE_ENV: &str = "RBD_RELAY_TESTENV_OBJECTSTORE";

/// What `up` should ensure.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpOptions {
    /// Objectstore of the OSDs. `None`: keep whatever runs, build with memstore (or
    /// [`OBJECTSTORE_ENV`]). `Some(x)` and a pair with another objectstore runs: rebuild.
    pub objectstore: Option<Objectstore>,
    /// Also bring up the OpenStack clouds.
    pub openstack: bool,
    /// Ceph release of site-b. `None`: keep whatever runs, build with Pacific (the host's,
    /// or [`SITE_B_RELEASE_ENV`]). `Some(r)` and a pair with another release runs: rebuild.
    pub site_b_release: Option<Release>,
}

/// Environment variable choosing site-b's Ceph release when [`shared`] has to build the
/// pair (`pacific`, the default, `reef` or `tentacle`).
pub const SITE_B_RELEASE_ENV: &str = "RBD_RELAY_TESTENV_SITE_B_RELEASE";

fn site_b_release_from_env() -> Result<Release> {
    match std::env::var(SITE_B_RELEASE_ENV) {
        Ok(v) if !v.is_empty() => v.parse().map_err(|e: UnknownRelease| Error::Parse {
            command: format!("${SITE_B_RELEASE_ENV}"),
            detail: e.to_string(),
        }),
        _ => Ok(Release::default()),
    }
}

/// What `up` had to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpOutcome {
    /// Everything was running: nothing done.
    AlreadyUp,
    /// The clusters were running but rbd-mirror was not: it was restarted.
    RbdMirrorRestarted,
    /// Nothing existed: built from scratch.
    Built,
    /// Something existed but was not (all) up, or had another objectstore: torn down and
    /// built from scratch (new fsids and keys).
    Rebuilt {
        /// Why the old pair was not kept.
        reason: String,
    },
}

/// Result of [`up`].
#[derive(Debug, Clone)]
pub struct UpReport {
    /// What was done.
    pub outcome: UpOutcome,
    /// How long it took (including waiting for the lock).
    pub elapsed: Duration,
    /// The running environment.
    pub env: Env,
}

/// Result of [`down`].
#[derive(Debug, Clone)]
pub struct DownReport {
    /// What was stopped.
    pub teardown: Teardown,
    /// How long it took.
    pub elapsed: Duration,
}

/// What runs, as [`status`] sees it.
#[derive(Debug, Clone)]
pub struct Status {
    /// The state directory looked at.
    pub state_dir: PathBuf,
    /// The state file exists and mon/mgr/OSD of both sites run.
    pub up: bool,
    /// Objectstore recorded in the state file.
    pub objectstore: Option<Objectstore>,
    /// `(site, release)` as each site's running daemons report it (`ceph versions`), for
    /// sites whose mon runs; errors as text.
    pub releases: Vec<(String, String)>,
    /// Every daemon of both sites.
    pub daemons: Vec<DaemonProcessStatus>,
    /// `(site, ceph health)`, for sites whose mon runs; errors as text.
    pub health: Vec<(String, String)>,
    /// `(pool, rbd mirror pool status summary)` on site-b, when its mon runs.
    pub mirroring: Vec<(String, String)>,
    /// The clouds' services (empty when they were never started).
    pub openstack: Vec<openstack::ServiceStatus>,
}

/// Holds the environment's file lock (released on drop).
struct DirLock {
    _file: File,
}

/// Creates the state directory, takes its lock and returns its layout (with the
/// directory's canonical path: confs record it, and a pair is recognised by it).
fn lock(state_dir: &Path) -> Result<(Layout, DirLock)> {
    std::fs::create_dir_all(state_dir).map_err(|e| Error::io("create", state_dir, e))?;
    let root = std::fs::canonicalize(state_dir).map_err(|e| Error::io("resolve", state_dir, e))?;
    let layout = Layout::new(root);
    let path = layout.lock_file();
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io("open", &path, e))?;
    file.lock().map_err(|source| Error::Lock { path, source })?;
    Ok((layout, DirLock { _file: file }))
}

fn objectstore_from_env() -> Result<Objectstore> {
    match std::env::var(OBJECTSTORE_ENV) {
        Ok(v) if !v.is_empty() => v.parse().map_err(|e: UnknownObjectstore| Error::Parse {
            command: format!("${OBJECTSTORE_ENV}"),
            detail: e.to_string(),
        }),
        _ => Ok(Objectstore::default()),
    }
}

/// Brings the pair up in `state_dir` (idempotent; see [`UpOutcome`]), holding the
/// environment's file lock meanwhile. Must run as root.
///
/// All running: returns at once. Only rbd-mirror dead: restarts it. Anything else that is
/// half there: tears it down (SIGKILL, the data is thrown away) and builds a new pair.
pub fn up(state_dir: &Path, opts: &UpOptions) -> Result<UpReport> {
    let t0 = Instant::now();
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::NotRoot);
    }
    let (layout, _lock) = lock(state_dir)?;
    let (state, outcome) = match cluster::assess(&layout) {
        Assessment::Up(state)
            if opts.objectstore.is_none_or(|o| o == state.objectstore)
                && opts
                    .site_b_release
                    .is_none_or(|r| r == state.site_b_release) =>
        {
            let mirror_pid = layout.pid_file(SITE_B, Daemon::RbdMirror);
            if process::live_pid(&mirror_pid, SITE_B).is_some() {
                (state, UpOutcome::AlreadyUp)
            } else {
                let b_root = cluster::site_b_chroot(&layout, state.site_b_release)?;
                let pid = cluster::start_rbd_mirror(&layout, b_root.as_deref())?;
                health::wait_rbd_mirror_healthy()?;
                tracing::info!(pid, "clusters were up; rbd-mirror restarted");
                (state, UpOutcome::RbdMirrorRestarted)
            }
        }
        Assessment::Up(state) => {
            let store = opts.objectstore.unwrap_or(state.objectstore);
            let release = opts.site_b_release.unwrap_or(state.site_b_release);
            let reason = format!(
                "running with {} and site-b on {}, {store} and site-b on {release} requested",
                state.objectstore, state.site_b_release,
            );
            tracing::info!(%reason, "tearing down for a rebuild");
            cluster::teardown(&layout, false)?;
            (
                Box::new(cluster::build(&layout, store, release)?),
                UpOutcome::Rebuilt { reason },
            )
        }
        Assessment::Partial(reason) => {
            tracing::info!(%reason, "found partial/stale state: tearing down first");
            cluster::teardown(&layout, true)?;
            let store = match opts.objectstore {
                Some(s) => s,
                None => objectstore_from_env()?,
            };
            let release = match opts.site_b_release {
                Some(r) => r,
                None => site_b_release_from_env()?,
            };
            (
                Box::new(cluster::build(&layout, store, release)?),
                UpOutcome::Rebuilt { reason },
            )
        }
        Assessment::Nothing => {
            let store = match opts.objectstore {
                Some(s) => s,
                None => objectstore_from_env()?,
            };
            let release = match opts.site_b_release {
                Some(r) => r,
                None => site_b_release_from_env()?,
            };
            (
                Box::new(cluster::build(&layout, store, release)?),
                UpOutcome::Built,
            )
        }
    };
    let mut state = *state;
    // the per-role users of split-role bundles (idempotent; skipped when an earlier `up`
    // wrote their keyrings, to keep `shared()` fast)
    if outcome != UpOutcome::AlreadyUp || !roles::keyrings_present() {
        roles::ensure()?;
    }
    if opts.openstack {
        // Idempotent on its side: returns at once when the clouds run on these sites.
        // A site-b on Reef gets its cloud's Cinder and Glance from the same chroot (2025.1).
        let cloud_root = chroot::ensure_openstack(layout.root(), state.site_b_release)?;
        let info = openstack::up_with(layout.root(), &state.sites, cloud_root.as_deref())?;
        if state.openstack.as_ref() != Some(&info) {
            state.openstack = Some(info);
            state.save(&layout.state_file())?;
        }
    }
    let env = Env::from_state(layout.root(), state)?;
    Ok(UpReport {
        outcome,
        elapsed: t0.elapsed(),
        env,
    })
}

/// Stops everything this environment started in `state_dir` (clouds first via
/// [`openstack::down`], then rbd-mirror, OSDs, mgr + mon; SIGTERM, SIGKILL after 5 s) and wipes its state and the
/// `/etc/ceph/site-{a,b}.*` files. Safe to run when nothing is up. Must run as root.
pub fn down(state_dir: &Path) -> Result<DownReport> {
    let t0 = Instant::now();
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::NotRoot);
    }
    let (layout, _lock) = lock(state_dir)?;
    let teardown = cluster::teardown(&layout, false)?;
    Ok(DownReport {
        teardown,
        elapsed: t0.elapsed(),
    })
}

/// What runs in `state_dir`: every daemon (alive or not, memory), `ceph health` of each
/// site whose mon runs, rbd-mirror's pool status. Does not take the lock.
pub fn status(state_dir: &Path) -> Status {
    let layout = Layout::new(state_dir);
    let state = state::State::load(&layout.state_file()).ok().flatten();
    let daemons = cluster::daemons(&layout);
    let mon_alive = |site: &str| {
        daemons
            .iter()
            .any(|d| d.site == site && d.daemon == Daemon::Mon && d.alive())
    };
    let up = state.is_some()
        && daemons
            .iter()
            .filter(|d| d.daemon != Daemon::RbdMirror)
            .all(DaemonProcessStatus::alive);
    let mut health = Vec::new();
    for spec in &SITES {
        if mon_alive(spec.name) {
            let h = health::health(spec.name, Duration::from_secs(10))
                .unwrap_or_else(|e| format!("unknown: {e}"));
            health.push((spec.name.to_string(), h));
        }
    }
    let mut releases = Vec::new();
    for spec in &SITES {
        if mon_alive(spec.name) {
            let r = health::running_release(spec.name).unwrap_or_else(|e| format!("unknown: {e}"));
            releases.push((spec.name.to_string(), r));
        }
    }
    let mut mirroring = Vec::new();
    if mon_alive(SITE_B) && state.is_some() {
        for pool in MIRRORED_POOLS {
            let m = health::mirror_pool_health(pool).unwrap_or_else(|e| format!("unknown: {e}"));
            mirroring.push((pool.to_string(), m));
        }
    }
    Status {
        state_dir: state_dir.to_path_buf(),
        up,
        objectstore: state.map(|s| s.objectstore),
        releases,
        daemons,
        health,
        mirroring,
        openstack: openstack::status(state_dir),
    }
}

/// Builds (once) the chroot that site-b runs in for `release`, cached beside `state_dir`,
/// and returns its root (`None` for the host's own release). Needs the package archive:
/// run it before entering a private network namespace. Must run as root.
pub fn prepare_chroot(state_dir: &Path, release: Release) -> Result<Option<PathBuf>> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::NotRoot);
    }
    std::fs::create_dir_all(state_dir).map_err(|e| Error::io("create", state_dir, e))?;
    let root = std::fs::canonicalize(state_dir).map_err(|e| Error::io("resolve", state_dir, e))?;
    chroot::ensure(&root, release)
}

/// [`prepare_chroot`], with the suite's OpenStack installed too (for `up --openstack` with
/// that site-b release; see [`Release::openstack_release`]). `Ok(None)` when that release's
/// cloud runs from the host's packages.
pub fn prepare_openstack_chroot(state_dir: &Path, release: Release) -> Result<Option<PathBuf>> {
    prepare_chroot(state_dir, release)?;
    let root = std::fs::canonicalize(state_dir).map_err(|e| Error::io("resolve", state_dir, e))?;
    chroot::ensure_openstack(&root, release)
}

/// The environment for tests: ensures the pair is up in [`default_state_dir`] (fast when
/// it already is, built when not) under the environment's file lock, and returns it.
pub fn shared() -> Result<Env> {
    up(&default_state_dir(), &UpOptions::default()).map(|r| r.env)
}

/// Like [`shared`], and also ensures the OpenStack clouds run on the pair
/// ([`Env::openstack`] is then `Some`).
pub fn shared_with_openstack() -> Result<Env> {
    let opts = UpOptions {
        openstack: true,
        ..UpOptions::default()
    };
    up(&default_state_dir(), &opts).map(|r| r.env)
}

/// A name no other test (in this or another process) uses: `<prefix>-<pid>-<n>-<random>`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}-{n}-{}", std::process::id(), &random[..6])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ_per_call_and_carry_the_pid() {
        let a = unique_name("img");
        let b = unique_name("img");
        assert_ne!(a, b);
        assert!(
            a.starts_with(&format!("img-{}-", std::process::id())),
            "{a}"
        );
    }
}
