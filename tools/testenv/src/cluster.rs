//! Building, checking and tearing down the Ceph pair: the Rust port of the shell reference
//! (`up.sh`/`down.sh`), keeping what made it fast and safe:
//! - keys for every entity are generated up front and imported by `ceph-mon --mkfs`, so no
//!   `ceph auth` round trip is needed later;
//! - all mon commands of a site (`osd new` and the pool creates) go through one `ceph` run
//!   (the Python CLI costs ~0.2 s per start) while `ceph-osd --mkfs` runs;
//! - both sites are built in parallel, `rbd pool init` runs in parallel per pool;
//! - teardown goes rbd-mirror (needs the OSDs for a clean exit), then OSDs (they tell the mon
//!   they go down, otherwise wait 5 s), then mgr + mon; SIGTERM first, SIGKILL after a grace;
//! - a daemon is ours only when its pid file names it and its command line says
//!   `--cluster <site>`.

use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::chroot;
use crate::conf;
use crate::error::{Error, Result};
use crate::health::{wait_healthy, wait_rbd_mirror_healthy};
use crate::layout::{
    conf_path, keyring_path, Daemon, Layout, Objectstore, Release, SiteSpec, ETC_CEPH,
    MIRRORED_POOLS, PG_NUM, PLAIN_POOLS, RBD_MIRROR_ID, SITES, SITE_A, SITE_B,
};
use crate::process::{self, Target};
use crate::state::{State, STATE_VERSION};
use crate::CephSite;

/// Health checks muted on a site that runs a newer release from a chroot. Debian 13's Reef
/// (18.2.7) mgr cannot load any Python module: `mgr_util` imports `bcrypt`, a PyO3 module,
/// and PyO3 refuses sub-interpreters (ceph tracker 64213), so every module, always-on ones
/// included, reports a failed dependency and the cluster would never be HEALTH_OK. rbd-relay
/// needs no mgr module (the service map that `rbd mirror pool status` reads is mgr core), so
/// the check is muted rather than the cluster's packages patched. What stops working with
/// it (`rbd mirror snapshot schedule`, `rbd task`, `rbd perf`) is listed in
/// docs/compatibility.md.
///
/// Tentacle (20.2) only lets the host's Pacific clients in with AES-128 keys allowed (see
/// `conf::render`), and then warns about exactly that (AUTH_*): expected here, muted.
const MUTED_ON_NEWER_RELEASES: [&str; 5] = [
    "MGR_MODULE_DEPENDENCY",
    "AUTH_EMERGENCY_CIPHERS_SET",
    "AUTH_INSECURE_CLIENT_KEY_TYPE",
    "AUTH_INSECURE_KEYS_CREATABLE",
    "AUTH_INSECURE_SERVICE_KEY_TYPE",
];

/// Limit for one `ceph` (Python CLI) call.
pub(crate) const CEPH_LIMIT: Duration = Duration::from_secs(60);
/// Limit for one `rbd` call during setup.
const RBD_LIMIT: Duration = Duration::from_secs(120);
/// Limit for a daemon to initialise and daemonize.
const DAEMON_START_LIMIT: Duration = Duration::from_secs(60);
/// How long the rbd-mirror pid file may take to appear.
const RBD_MIRROR_START_LIMIT: Duration = Duration::from_secs(30);
/// How long a fresh site may take to report HEALTH_OK.
pub(crate) const HEALTH_LIMIT: Duration = Duration::from_secs(90);
/// SIGTERM -> SIGKILL grace period per teardown phase.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Runs `ceph --cluster <site>` with a bounded connect time.
pub(crate) fn ceph(
    site: &str,
    args: &[&str],
    stdin: Option<&[u8]>,
    limit: Duration,
) -> Result<process::Output> {
    let mut all = vec!["--cluster", site, "--connect-timeout", "15"];
    all.extend_from_slice(args);
    process::run("ceph", &all, stdin, limit)
}

/// Runs `rbd --cluster <site>` with bounded op times.
pub(crate) fn rbd(site: &str, args: &[&str], stdin: Option<&[u8]>) -> Result<process::Output> {
    let mut all = vec![
        "--cluster",
        site,
        "--rados-osd-op-timeout",
        "60",
        "--rados-mon-op-timeout",
        "30",
    ];
    all.extend_from_slice(args);
    process::run("rbd", &all, stdin, RBD_LIMIT)
}

/// Runs several mon commands through one `ceph` process (its interactive mode reads one
/// command per line from stdin). That mode exits 0 even when a command fails, so any
/// `Error ...` line on stderr is a failure.
fn ceph_batch(site: &str, commands: &[String]) -> Result<()> {
    let input = commands.join("\n") + "\n";
    let out = ceph(site, &[], Some(input.as_bytes()), CEPH_LIMIT)?;
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("Error"))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Command {
            command: format!("ceph --cluster {site} <<< {commands:?}"),
            status: "error reported".into(),
            stderr: errors.join("; "),
        })
    }
}

/// Joins scoped worker threads, turning a panic into an error.
fn join_all<T>(handles: Vec<(String, thread::ScopedJoinHandle<'_, Result<T>>)>) -> Result<Vec<T>> {
    let mut out = Vec::with_capacity(handles.len());
    let mut first_err = None;
    for (label, h) in handles {
        match h.join() {
            Ok(Ok(v)) => out.push(v),
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(_) => {
                first_err.get_or_insert(Error::ThreadPanicked(label));
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

fn create_dir(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(|e| Error::io("create", path, e))
}

fn remove_file_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("remove", path, e)),
        _ => Ok(()),
    }
}

/// A cephx entity created at mkfs time: its name, where its keyring goes and its caps.
struct Key {
    entity: String,
    keyring: PathBuf,
    caps: Vec<(&'static str, &'static str)>,
}

fn keys_for(layout: &Layout, spec: &SiteSpec) -> Vec<Key> {
    let dir = layout.site_dir(spec.name);
    let mut keys = vec![
        Key {
            entity: "mon.".into(),
            keyring: dir.join("mon.keyring"),
            caps: vec![("mon", "allow *")],
        },
        Key {
            entity: "client.admin".into(),
            keyring: keyring_path(spec.name, "client.admin"),
            caps: vec![
                ("mon", "allow *"),
                ("osd", "allow *"),
                ("mgr", "allow *"),
                ("mds", "allow *"),
            ],
        },
        Key {
            entity: "mgr.x".into(),
            keyring: dir.join("mgr.x").join("keyring"),
            caps: vec![
                ("mon", "allow profile mgr"),
                ("osd", "allow *"),
                ("mds", "allow *"),
            ],
        },
        Key {
            entity: "osd.0".into(),
            keyring: dir.join("osd.0").join("keyring"),
            caps: vec![
                ("mon", "allow profile osd"),
                ("mgr", "allow profile osd"),
                ("osd", "allow *"),
            ],
        },
    ];
    if spec.runs_rbd_mirror {
        // Same caps as Ceph's own qa helpers give the daemon.
        keys.push(Key {
            entity: format!("client.{RBD_MIRROR_ID}"),
            keyring: keyring_path(spec.name, &format!("client.{RBD_MIRROR_ID}")),
            caps: vec![
                ("mon", "profile rbd-mirror"),
                ("osd", "profile rbd"),
                ("mgr", "profile rbd"),
            ],
        });
    }
    keys
}

/// Generates every key into its own keyring and returns the concatenation, which
/// `ceph-mon --mkfs --keyring` imports (keys and caps) into the auth database.
fn generate_keys(keys: &[Key]) -> Result<String> {
    let mut all = String::new();
    for key in keys {
        let path = key.keyring.to_string_lossy().into_owned();
        let mut args = vec!["--create-keyring", &path, "--gen-key", "-n", &key.entity];
        for (service, cap) in &key.caps {
            args.extend_from_slice(&["--cap", service, cap]);
        }
        process::run("ceph-authtool", &args, None, Duration::from_secs(30))?;
        let text =
            fs::read_to_string(&key.keyring).map_err(|e| Error::io("read", &key.keyring, e))?;
        all.push_str(&text);
        all.push('\n');
    }
    Ok(all)
}

fn daemon_args(site: &str, daemon: Daemon) -> Vec<String> {
    let args = match daemon {
        Daemon::Mon => vec!["ceph-mon", "--cluster", site, "-i", "a"],
        Daemon::Mgr => vec!["ceph-mgr", "--cluster", site, "-i", "x"],
        Daemon::Osd => vec!["ceph-osd", "--cluster", site, "-i", "0"],
        Daemon::RbdMirror => vec!["rbd-mirror", "--cluster", site, "--id", RBD_MIRROR_ID],
    };
    args.into_iter().map(String::from).collect()
}

/// `program args` as run for a site: as is on the host, or through `chroot ROOT` for a site
/// whose release comes from a chroot (the program then sees the same paths: see [`chroot`]).
fn site_command(chroot_root: Option<&Path>, program: &str, args: &[&str]) -> Vec<String> {
    let mut all = Vec::new();
    if let Some(root) = chroot_root {
        all.push("chroot".to_string());
        all.push(root.to_string_lossy().into_owned());
    }
    all.push(program.to_string());
    all.extend(args.iter().map(|a| a.to_string()));
    all
}

/// Runs a Ceph program of a site's own release (see [`site_command`]).
fn run_on_site(
    chroot_root: Option<&Path>,
    program: &str,
    args: &[&str],
    limit: Duration,
) -> Result<process::Output> {
    let all = site_command(chroot_root, program, args);
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    process::run(refs[0], &refs[1..], None, limit)
}

/// The chroot site-b runs in for `release` (built when missing), with the host paths its
/// daemons need mounted into it; `None` for the host's own release.
pub(crate) fn site_b_chroot(layout: &Layout, release: Release) -> Result<Option<PathBuf>> {
    let root = chroot::ensure(layout.root(), release)?;
    if let Some(root) = &root {
        chroot::mount_into(root, layout.root())?;
    }
    Ok(root)
}

/// Starts one daemon (it daemonizes and writes its pid file).
fn start(layout: &Layout, site: &str, daemon: Daemon, chroot_root: Option<&Path>) -> Result<()> {
    let plain = daemon_args(site, daemon);
    let plain: Vec<&str> = plain.iter().map(String::as_str).collect();
    let args = site_command(chroot_root, plain[0], &plain[1..]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let log = layout
        .log_dir(site)
        .join(format!("start-{}.out", daemon.entity()));
    process::start_daemon(refs[0], &refs[1..], &log, DAEMON_START_LIMIT)
}

/// mkfs and start mon, mgr and OSD of one site; create and initialise its pools.
fn make_cluster(
    layout: &Layout,
    spec: &SiteSpec,
    objectstore: Objectstore,
    chroot_root: Option<&Path>,
    release: Release,
) -> Result<CephSite> {
    let t0 = Instant::now();
    let site = spec.name;
    let dir = layout.site_dir(site);
    for sub in ["run", "log", "crash", "mon.a", "mgr.x", "osd.0"] {
        create_dir(&dir.join(sub))?;
    }
    let fsid = Uuid::new_v4().to_string();
    let osd_uuid = Uuid::new_v4().to_string();
    let conf = conf_path(site);
    let bluestore = crate::layout::bluestore_file().map_err(Error::BadSetting)?;
    fs::write(
        &conf,
        conf::render(spec, &fsid, &dir, objectstore, release, bluestore),
    )
    .map_err(|e| Error::io("write", &conf, e))?;
    if objectstore == Objectstore::Bluestore && bluestore.on_loop {
        crate::loopdev::attach(&dir.join("osd.0"), bluestore.bytes)?;
    }

    mkfs_mon(layout, spec, &dir, &fsid, chroot_root)?;
    start(layout, site, Daemon::Mon, chroot_root)?;
    start(layout, site, Daemon::Mgr, chroot_root)?; // retries until the mon answers
    tracing::info!(site, elapsed = ?t0.elapsed(), "mon and mgr started");

    add_osd_and_pools(layout, site, &osd_uuid, chroot_root)?;
    tracing::info!(site, elapsed = ?t0.elapsed(), "osd started, pools created");

    init_pools(site)?;
    tracing::info!(site, elapsed = ?t0.elapsed(), "pools initialised, mirroring enabled");
    Ok(CephSite {
        name: site.to_string(),
        conf,
        admin_keyring: keyring_path(site, "client.admin"),
        fsid,
    })
}

/// The mon's store: every key of the site generated up front (imported by `ceph-mon
/// --mkfs`, so no `ceph auth` round trip later), the monmap, the mkfs.
fn mkfs_mon(
    layout: &Layout,
    spec: &SiteSpec,
    dir: &Path,
    fsid: &str,
    chroot_root: Option<&Path>,
) -> Result<()> {
    let site = spec.name;
    let mkfs_keyring = dir.join("mkfs.keyring");
    let keys = keys_for(layout, spec);
    let all_keys = generate_keys(&keys)?;
    fs::write(&mkfs_keyring, all_keys).map_err(|e| Error::io("write", &mkfs_keyring, e))?;

    let monmap = dir.join("monmap");
    let monmap_s = monmap.to_string_lossy().into_owned();
    let mon_host = spec.mon_host();
    run_on_site(
        chroot_root,
        "monmaptool",
        &[
            "--create",
            "--clobber",
            "--fsid",
            fsid,
            "--addv",
            "a",
            &mon_host,
            &monmap_s,
        ],
        Duration::from_secs(30),
    )?;
    let kr = mkfs_keyring.to_string_lossy().into_owned();
    run_on_site(
        chroot_root,
        "ceph-mon",
        &[
            "--cluster",
            site,
            "--mkfs",
            "-i",
            "a",
            "--monmap",
            &monmap_s,
            "--keyring",
            &kr,
        ],
        Duration::from_secs(60),
    )?;
    // The mon keeps its own key in mon.a/keyring now; the combined keyring held every
    // secret of the site, so it goes.
    remove_file_if_exists(&mkfs_keyring)?;
    remove_file_if_exists(&dir.join("mon.keyring"))?;
    Ok(())
}

/// Registers osd.0 and creates the pools in one `ceph` run while the OSD's mkfs runs, then
/// starts the OSD.
fn add_osd_and_pools(
    layout: &Layout,
    site: &str,
    osd_uuid: &str,
    chroot_root: Option<&Path>,
) -> Result<()> {
    // Register osd.0 (its key is already in the auth db) and create the pools in one
    // `ceph` run while the OSD's mkfs runs.
    let mut commands = vec![format!("osd new {osd_uuid} 0")];
    if chroot_root.is_some() {
        for code in MUTED_ON_NEWER_RELEASES {
            commands.push(format!("health mute {code} --sticky"));
        }
    }
    for pool in MIRRORED_POOLS.iter().chain(PLAIN_POOLS.iter()) {
        commands.push(format!("osd pool create {pool} {PG_NUM} {PG_NUM}"));
    }
    let osd_mkfs_log = layout.log_dir(site).join("osd-mkfs.out");
    thread::scope(|s| -> Result<()> {
        let mon_cmds = s.spawn(|| ceph_batch(site, &commands));
        let mkfs = run_on_site(
            chroot_root,
            "ceph-osd",
            &[
                "--cluster",
                site,
                "-i",
                "0",
                "--mkfs",
                "--osd-uuid",
                osd_uuid,
            ],
            Duration::from_secs(120),
        );
        if let Ok(out) = &mkfs {
            // Kept for debugging; the daemon log has the details too.
            let _ = fs::write(&osd_mkfs_log, format!("{}{}", out.stdout, out.stderr));
        }
        let mon_result = mon_cmds
            .join()
            .map_err(|_| Error::ThreadPanicked(format!("{site} mon commands")))?;
        mkfs?;
        mon_result
    })?;
    start(layout, site, Daemon::Osd, chroot_root)?;
    Ok(())
}

/// `rbd pool init` of every pool (in parallel) and image-mode mirroring on the mirrored ones.
fn init_pools(site: &str) -> Result<()> {
    // `rbd pool init` blocks until the pool's PGs are active, i.e. until the OSD is up.
    thread::scope(|s| {
        let handles = MIRRORED_POOLS
            .iter()
            .map(|p| (p, true))
            .chain(PLAIN_POOLS.iter().map(|p| (p, false)))
            .map(|(pool, mirrored)| {
                let h = s.spawn(move || -> Result<()> {
                    rbd(site, &["pool", "init", pool], None)?;
                    if mirrored {
                        rbd(
                            site,
                            &[
                                "mirror",
                                "pool",
                                "enable",
                                "--site-name",
                                site,
                                pool,
                                "image",
                            ],
                            None,
                        )?;
                    }
                    Ok(())
                });
                (format!("{site} pool {pool}"), h)
            })
            .collect();
        join_all(handles)
    })?;
    Ok(())
}

/// Peers site-b to site-a for every mirrored pool: one bootstrap token made on site-a,
/// imported on site-b rx-only (site-b pulls, site-a never pulls from site-b). The token
/// holds a key, so it only ever travels through a pipe.
fn connect_peers() -> Result<()> {
    let token = rbd(
        SITE_A,
        &[
            "mirror",
            "pool",
            "peer",
            "bootstrap",
            "create",
            "--site-name",
            SITE_A,
            MIRRORED_POOLS[0],
        ],
        None,
    )?
    .stdout;
    for pool in MIRRORED_POOLS {
        rbd(
            SITE_B,
            &[
                "mirror",
                "pool",
                "peer",
                "bootstrap",
                "import",
                "--site-name",
                SITE_B,
                "--direction",
                "rx-only",
                pool,
                "-",
            ],
            Some(token.trim().as_bytes()),
        )?;
    }
    Ok(())
}

/// Starts rbd-mirror on site-b and waits for its pid file.
pub(crate) fn start_rbd_mirror(layout: &Layout, chroot_root: Option<&Path>) -> Result<i32> {
    start(layout, SITE_B, Daemon::RbdMirror, chroot_root)?;
    let pid_file = layout.pid_file(SITE_B, Daemon::RbdMirror);
    let deadline = Instant::now() + RBD_MIRROR_START_LIMIT;
    loop {
        if let Some(pid) = process::live_pid(&pid_file, SITE_B) {
            return Ok(pid);
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: format!("rbd-mirror pid file {}", pid_file.display()),
                limit: RBD_MIRROR_START_LIMIT,
                last_seen: None,
            });
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Builds the pair from nothing (the caller has torn down any leftovers) and writes the
/// state file once both sites are HEALTH_OK.
pub(crate) fn build(
    layout: &Layout,
    objectstore: Objectstore,
    site_b_release: Release,
) -> Result<State> {
    let t0 = Instant::now();
    create_dir(layout.root())?;
    create_dir(Path::new(ETC_CEPH))?;
    let b_root = site_b_chroot(layout, site_b_release)?;
    let b_root = b_root.as_deref();
    tracing::info!(%objectstore, %site_b_release, "creating site-a and site-b in parallel");
    let sites = thread::scope(|s| {
        let handles = SITES
            .iter()
            .map(|spec| {
                (
                    spec.name.to_string(),
                    s.spawn(move || {
                        let (root, release) = if spec.name == SITE_B {
                            (b_root, site_b_release)
                        } else {
                            (None, Release::Pacific)
                        };
                        make_cluster(layout, spec, objectstore, root, release)
                    }),
                )
            })
            .collect();
        join_all(handles)
    })?;
    tracing::info!(elapsed = ?t0.elapsed(), "both clusters up, pools ready");
    connect_peers()?;
    tracing::info!(elapsed = ?t0.elapsed(), "peers connected (site-a -> site-b, rx-only)");
    let pid = start_rbd_mirror(layout, b_root)?;
    tracing::info!(elapsed = ?t0.elapsed(), pid, "rbd-mirror started");
    thread::scope(|s| {
        let mut handles: Vec<(String, thread::ScopedJoinHandle<'_, Result<()>>)> = SITES
            .iter()
            .map(|spec| {
                (
                    spec.name.to_string(),
                    s.spawn(move || wait_healthy(spec.name)),
                )
            })
            .collect();
        handles.push(("rbd-mirror health".into(), s.spawn(wait_rbd_mirror_healthy)));
        join_all(handles)
    })?;
    tracing::info!(elapsed = ?t0.elapsed(), "both clusters HEALTH_OK, rbd-mirror healthy");
    let state = State {
        version: STATE_VERSION,
        objectstore,
        sites,
        site_b_release,
        rbd_mirror_asok: layout.asok(SITE_B, Daemon::RbdMirror),
        openstack: None,
    };
    state.save(&layout.state_file())?;
    Ok(state)
}

/// What [`assess`] found.
#[derive(Debug)]
pub(crate) enum Assessment {
    /// State file present, confs present, mon/mgr/OSD of both sites alive (rbd-mirror may
    /// be down).
    Up(Box<State>),
    /// Nothing of the environment exists.
    Nothing,
    /// Something exists but the pair is not up; the reason says what.
    Partial(String),
}

/// Looks at the state file, the confs and the pid files (no Ceph call: fast).
pub(crate) fn assess(layout: &Layout) -> Assessment {
    let state = State::load(&layout.state_file());
    let mut missing = Vec::new();
    for spec in &SITES {
        let mut files = vec![
            conf_path(spec.name),
            keyring_path(spec.name, "client.admin"),
        ];
        if spec.runs_rbd_mirror {
            files.push(keyring_path(spec.name, &format!("client.{RBD_MIRROR_ID}")));
        }
        for f in files {
            if !f.exists() {
                missing.push(format!("{} missing", f.display()));
            }
        }
        for daemon in [Daemon::Mon, Daemon::Mgr, Daemon::Osd] {
            if process::live_pid(&layout.pid_file(spec.name, daemon), spec.name).is_none() {
                missing.push(format!("{}/{daemon} not running", spec.name));
            }
        }
    }
    match state {
        Ok(Some(state)) if missing.is_empty() && state.sites.len() == SITES.len() => {
            Assessment::Up(Box::new(state))
        }
        Ok(Some(_)) => Assessment::Partial(missing.join(", ")),
        Err(e) => Assessment::Partial(e.to_string()),
        Ok(None) => {
            let leftovers = SITES.iter().any(|s| {
                layout.site_dir(s.name).exists()
                    || conf_path(s.name).exists()
                    || !etc_files(s.name).is_empty()
            });
            if leftovers {
                Assessment::Partial(
                    "no state file, but site directories or /etc/ceph files exist".into(),
                )
            } else {
                Assessment::Nothing
            }
        }
    }
}

/// `/etc/ceph/<site>.conf` and `/etc/ceph/<site>.*.keyring`.
fn etc_files(site: &str) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(ETC_CEPH) else {
        return Vec::new();
    };
    let prefix = format!("{site}.");
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let ours = name == format!("{site}.conf")
                || (name.starts_with(&prefix) && name.ends_with(".keyring"));
            ours.then(|| e.path())
        })
        .collect()
}

/// The state directory a site's `/etc/ceph` conf was written for (its `run_dir` line).
fn conf_owner(site: &str) -> Option<PathBuf> {
    let text = fs::read_to_string(conf_path(site)).ok()?;
    let run_dir = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("run_dir = "))?;
    Path::new(run_dir.trim())
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
}

/// Refuses to touch a pair that was built from another state directory: cluster names,
/// ports and /etc/ceph files are fixed, so wiping "our" leftovers would break it.
pub(crate) fn check_owner(layout: &Layout) -> Result<()> {
    for spec in &SITES {
        if let Some(owner) = conf_owner(spec.name) {
            if owner != layout.root() {
                return Err(Error::OtherStateDir {
                    site: spec.name.to_string(),
                    owner,
                });
            }
        }
    }
    Ok(())
}

/// What a teardown ([`crate::down`], or `up` replacing a broken pair) did.
#[derive(Debug, Clone, Default)]
pub struct Teardown {
    /// Processes signalled.
    pub stopped: usize,
    /// Processes that needed SIGKILL after the grace period.
    pub killed: Vec<String>,
}

/// Stops the clouds (`openstack::down`), then every daemon named by our pid files (rbd-mirror, then OSDs, then mgr + mon; both
/// sites per phase) and removes the site directories, the state file and the /etc/ceph
/// files of both sites. `fast` sends SIGKILL at once (for throw-away leftovers).
pub(crate) fn teardown(layout: &Layout, fast: bool) -> Result<Teardown> {
    check_owner(layout)?;
    let mut report = Teardown::default();
    // The clouds use the pair: they go first.
    crate::openstack::down(layout.root())?;
    let phases: [&[Daemon]; 3] = [
        &[Daemon::RbdMirror],
        &[Daemon::Osd],
        &[Daemon::Mgr, Daemon::Mon],
    ];
    for phase in phases {
        let mut targets = Vec::new();
        for spec in &SITES {
            for daemon in phase {
                if let Some(pid) =
                    process::live_pid(&layout.pid_file(spec.name, *daemon), spec.name)
                {
                    targets.push(Target {
                        label: format!("{}/{daemon}", spec.name),
                        pid,
                    });
                }
            }
        }
        report.stopped += targets.len();
        report
            .killed
            .extend(process::stop_all(&targets, STOP_GRACE, fast));
    }
    // what a chroot'ed site-b had mounted goes before its files do
    for root in chroot::all_roots(layout.root()) {
        let n = chroot::unmount_all(&root);
        if n > 0 {
            tracing::info!(chroot = %root.display(), mounts = n, "unmounted");
        }
    }
    for spec in &SITES {
        let dir = layout.site_dir(spec.name);
        // a loop device would keep the removed file's space in use
        crate::loopdev::detach_all(&dir.join("osd.0"))?;
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io("remove", dir, e))
            }
            _ => {}
        }
        for f in etc_files(spec.name) {
            remove_file_if_exists(&f)?;
        }
    }
    remove_file_if_exists(&layout.state_file())?;
    remove_file_if_exists(&layout.state_file().with_extension("json.tmp"))?;
    Ok(report)
}

/// One daemon as `status` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonProcessStatus {
    /// Site it belongs to.
    pub site: String,
    /// Which daemon.
    pub daemon: Daemon,
    /// Its pid when it runs (pid file + live process + `--cluster <site>`).
    pub pid: Option<i32>,
    /// Resident memory now, KiB.
    pub rss_kib: Option<u64>,
    /// Peak resident memory (VmHWM), KiB.
    pub peak_rss_kib: Option<u64>,
}

impl DaemonProcessStatus {
    /// Is the daemon running?
    pub fn alive(&self) -> bool {
        self.pid.is_some()
    }
}

/// The daemons of both sites.
pub(crate) fn daemons(layout: &Layout) -> Vec<DaemonProcessStatus> {
    let mut all = Vec::new();
    for spec in &SITES {
        for daemon in Daemon::on(spec) {
            let pid = process::live_pid(&layout.pid_file(spec.name, daemon), spec.name);
            let rss = pid.and_then(process::rss_kib);
            all.push(DaemonProcessStatus {
                site: spec.name.to_string(),
                daemon,
                pid,
                rss_kib: rss.map(|r| r.0),
                peak_rss_kib: rss.map(|r| r.1),
            });
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chrooted_site_runs_its_programs_through_chroot() {
        assert_eq!(
            site_command(Some(Path::new("/c/trixie-ceph")), "ceph-mon", &["-i", "a"]),
            ["chroot", "/c/trixie-ceph", "ceph-mon", "-i", "a"]
        );
        assert_eq!(
            site_command(None, "ceph-mon", &["-i", "a"]),
            ["ceph-mon", "-i", "a"]
        );
    }
}
