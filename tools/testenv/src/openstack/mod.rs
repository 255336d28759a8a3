//! The two OpenStack clouds of the test environment: real Keystone, Cinder and Glance (Debian
//! 12's OpenStack Zed packages) on loopback, on top of the Ceph pair, so rbd-relay's adoption
//! (Cinder manage-existing) and registration (Glance `rbd://` location) steps run against the
//! real services, policies and start-up behaviour instead of a fake.
//!
//! # Layout
//!
//! * One Keystone (`127.0.0.1:5000`, sqlite in WAL mode, fernet tokens) shared by both clouds,
//!   with one region per cloud, named after the cloud's Ceph cluster (`site-a`, `site-b`).
//!   A destination cloud on a newer OpenStack (run from a chroot) has its own Keystone of
//!   that release instead (`keystone-dst`, `127.0.0.1:5001`, region `sites[1]` only, same
//!   users and catalog layout); the host's then serves the source region only.
//!   Users: `admin` (role admin in project `admin`), `member` (role member in project `demo`),
//!   service users `cinder` and `glance` (admin + service in project `service`). Catalog:
//!   `volumev3` and `block-storage` (Cinder) and `image` (Glance), public + internal, plus an
//!   identity endpoint, in each region, pointing at that region's services.
//! * Source cloud (region `sites[0]`, e.g. `site-a`): Cinder API on :8776 with scheduler and
//!   volume service (RBD backend `ceph`, pool `volumes`, service host `site-a`, so the pool's
//!   host string is `site-a@ceph#ceph`); Glance API on :9292 (rbd store, pool `images`).
//! * Destination cloud (region `sites[1]`, e.g. `site-b`): Cinder API on :8777 (pool
//!   `cinder`, host string `site-b@ceph#ceph`), Glance API on :9293 (pool `glance`).
//! * Ceph users `client.cinder`/`client.glance` on each site, keyrings in
//!   `/etc/ceph/SITE.client.{cinder,glance}.keyring` (see the `ceph` module).
//! * One RabbitMQ node (AMQP 5682, distribution 25682, epmd 4379) shared by both Cinders, one
//!   vhost per cloud: without that, two Cinders on one broker consume each other's
//!   `cinder-scheduler`/`cinder-volume` queues (see the `rabbit` module).
//! * `clouds.yaml` with clouds `SITE-admin` and `SITE-member` for both sites.
//!
//! Every port differs from the reference fixtures that may run on the same machine (`osks`:
//! Keystone 5010, Cinder 8786, Glance 9302, RabbitMQ 5692/25692/4389).
//!
//! # Life cycle
//!
//! Everything lives under `STATE_DIR/openstack`. [`up`] is idempotent: when every daemon is
//! alive, the recorded sites are the ones given and Keystone answers, it returns the recorded
//! [`OpenStackInfo`] at once; anything else (half-dead, other sites, a rebuilt Ceph pair) is
//! stopped, wiped and rebuilt from zero, because a Cinder or Glance database that points at
//! RBD images of a cluster that is gone is worse than none. Daemons run in their own sessions
//! (`setsid`), recorded by pid files with the process start time; [`down`] stops only those,
//! process group by process group, in the reference order (Glance and Cinder first, then
//! Keystone and RabbitMQ with our epmd, side by side), removes the keyrings it wrote and wipes
//! the state. A failed `up` leaves its daemons and logs for inspection; the next `up` or
//! `down` clears them.
//!
//! Start-up is parallel where the services allow it; about 35 s of CPU (nine Python daemons,
//! three `keystone-manage` runs, the broker) on 2 cores is the floor. RabbitMQ boots while
//! `keystone-manage` runs (schema, fernet and credential keys in parallel; the daemon starts
//! as soon as schema and keys exist and imports while `bootstrap` runs), the cephx users are
//! made and the Cinder and Glance databases are migrated (once, the sqlite file copied to the
//! second cloud). Migrated empty schemas are cached in `STATE_DIR/openstack-cache`, keyed by
//! the package versions (see `SchemaCache`). Cinder's services start once the broker is
//! up, in the order that avoids its races (see the `cinder` module), while Keystone is
//! initialised over its HTTP API. Measured: 25-30 s from nothing to both clouds ready on a
//! lightly loaded 2-core machine, 36-49 s when other builds keep it busy (load 8-11).
//! `logs/up-timings.txt` keeps the milestones of the last start.

mod ceph;
mod cinder;
mod glance;
mod info;
mod keystone;
mod process;
mod rabbit;
mod schema_cache;

pub use info::{CloudInfo, Credentials, OpenStackInfo, ServiceStatus};
use schema_cache::SchemaCache;

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde::{Deserialize, Serialize};

use crate::CephSite;
// The crate's one error type; the submodules import it from here.
pub(crate) use crate::Error;

/// The host Keystone's port.
pub const KEYSTONE_PORT: u16 = 5000;
/// Port of the destination cloud's own Keystone (run when the destination runs a newer
/// OpenStack release from a chroot).
pub const DESTINATION_KEYSTONE_PORT: u16 = 5001;
/// Cinder API port of the source cloud.
pub const SOURCE_CINDER_PORT: u16 = 8776;
/// Cinder API port of the destination cloud.
pub const DESTINATION_CINDER_PORT: u16 = 8777;
/// Glance API port of the source cloud.
pub const SOURCE_GLANCE_PORT: u16 = 9292;
/// Glance API port of the destination cloud.
pub const DESTINATION_GLANCE_PORT: u16 = 9293;
/// RabbitMQ AMQP port.
pub const RABBIT_PORT: u16 = 5682;
/// RabbitMQ Erlang distribution port.
pub const RABBIT_DIST_PORT: u16 = 25682;
/// Port of the epmd our RabbitMQ node registers with.
pub const RABBIT_EPMD_PORT: u16 = 4379;
/// Cinder backend name (`enabled_backends`, `volume_backend_name`, the `#pool` part).
pub const BACKEND: &str = "ceph";

/// Debian's python (python3-cinder, python3-rbd live there; never a pyenv shim).
const PYTHON: &str = "/usr/bin/python3";

/// How one cloud is laid out (internal: derived from its site and role).
#[derive(Debug, Clone)]
pub(crate) struct CloudPlan {
    pub(crate) site: CephSite,
    pub(crate) cinder_port: u16,
    pub(crate) glance_port: u16,
    /// Cinder's pool.
    pub(crate) volume_pool: String,
    /// Glance's pool.
    pub(crate) image_pool: String,
    /// Pool Cinder may read (the site's image pool, for clones of images).
    pub(crate) read_only_pool: String,
    /// More pools Cinder may read: on the destination, the pool rbd-mirror replicates
    /// volumes into, so that a volume cloned from a promoted replica (rbd-relay's cutover)
    /// opens until it is flattened, like a volume cloned from a Glance image.
    pub(crate) read_also: Vec<String>,
    /// The Debian root file system this cloud's Cinder and Glance run from (the newer
    /// OpenStack of a newer site-b), `None` for the host's packages.
    pub(crate) chroot: Option<PathBuf>,
    /// The Keystone this cloud's services validate tokens against and whose catalog lists
    /// them.
    pub(crate) keystone: keystone::Keystone,
}

impl CloudPlan {
    fn cinder_host(&self) -> String {
        format!("{}@{BACKEND}#{BACKEND}", self.site.name)
    }
}

/// `program args` as a command line, run inside `chroot` when there is one
/// (`chroot ROOT program args`: the state directory and `/etc/ceph` are mounted there at
/// their host paths, so every path stays the same).
pub(crate) fn in_root(
    chroot: Option<&Path>,
    program: &Path,
    args: &[String],
) -> (PathBuf, Vec<String>) {
    match chroot {
        None => (program.to_path_buf(), args.to_vec()),
        Some(root) => {
            let mut a = vec![root.display().to_string(), program.display().to_string()];
            a.extend(args.iter().cloned());
            (PathBuf::from("chroot"), a)
        }
    }
}

/// [`in_root`] as a `Command`.
pub(crate) fn command_in(chroot: Option<&Path>, program: &Path) -> std::process::Command {
    let (p, a) = in_root(chroot, program, &[]);
    let mut c = std::process::Command::new(p);
    c.args(a);
    c
}

fn plans(sites: &[CephSite], destination_root: Option<&Path>) -> Result<[CloudPlan; 2], Error> {
    let [src, dst] = sites else {
        return Err(Error::Sites(sites.len()));
    };
    let host_keystone = keystone::Keystone::host(&src.name);
    // a destination on a newer OpenStack has its own Keystone, of that release
    let dst_keystone = match destination_root {
        Some(r) => keystone::Keystone::destination(&dst.name, r),
        None => host_keystone.clone(),
    };
    Ok([
        CloudPlan {
            site: src.clone(),
            cinder_port: SOURCE_CINDER_PORT,
            glance_port: SOURCE_GLANCE_PORT,
            volume_pool: "volumes".into(),
            image_pool: "images".into(),
            read_only_pool: "images".into(),
            read_also: vec![],
            chroot: None,
            keystone: host_keystone,
        },
        CloudPlan {
            site: dst.clone(),
            cinder_port: DESTINATION_CINDER_PORT,
            glance_port: DESTINATION_GLANCE_PORT,
            volume_pool: "cinder".into(),
            image_pool: "glance".into(),
            read_only_pool: "glance".into(),
            read_also: vec!["volumes".into()],
            chroot: destination_root.map(Path::to_path_buf),
            keystone: dst_keystone,
        },
    ])
}

/// Writes a file.
pub(crate) fn write(path: &Path, text: &str) -> Result<(), Error> {
    fs::write(path, text).map_err(|e| Error::io("write", path, e))
}

/// Puts an sqlite database in WAL mode (persistent in the file).
pub(crate) fn sqlite_wal(db: &Path) -> Result<(), Error> {
    process::run(
        std::process::Command::new(PYTHON)
            .args([
                "-c",
                "import sqlite3,sys; sqlite3.connect(sys.argv[1]).execute('PRAGMA journal_mode=WAL')",
            ])
            .arg(db),
    )
    .map(|_| ())
}

/// The entry-point shim `name` (`cinder-api`, `glance-manage`, ...).
pub(crate) fn shim(root: &Path, name: &str) -> PathBuf {
    root.join("bin").join(name)
}

/// Python that every Cinder and Glance entry point of the test clouds runs before the
/// service: sqlite transactions begin `IMMEDIATE`.
///
/// The test clouds keep their databases in sqlite; three Cinder processes (api, scheduler,
/// volume) write one file. oslo.db begins every sqlite transaction with a deferred `BEGIN`,
/// so a transaction that reads and then writes (the quota reservation of Cinder's
/// manage-existing) fails at once with "database is locked" when another process writes
/// meanwhile: sqlite refuses that lock upgrade instead of waiting, to avoid a deadlock, so
/// no busy timeout helps. Such a failed manage ends in `error_managing`. Taking the write
/// lock at `BEGIN` makes every transaction queue on the busy timeout instead (the
/// connections set `?timeout=60`). This listener on every engine runs before oslo.db's own
/// `begin` listener, which then sees the transaction begun and emits nothing. Production
/// clouds use MySQL or PostgreSQL, where none of this applies.
pub const SQLITE_BEGIN_IMMEDIATE: &str = "\
import sqlalchemy
import sqlalchemy.event
from sqlalchemy.engine import Engine


@sqlalchemy.event.listens_for(Engine, 'begin')
def _testenv_begin_immediate(conn):
    # test clouds only: see testenv::openstack::SQLITE_BEGIN_IMMEDIATE
    if conn.engine.dialect.name == 'sqlite' and 'in_transaction' not in conn.info:
        conn.execute(sqlalchemy.text('BEGIN IMMEDIATE'))
        conn.info['in_transaction'] = True


";

/// The busy timeout of the test clouds' sqlite connections (a query of their
/// `connection` URL): with [`SQLITE_BEGIN_IMMEDIATE`], a transaction waits this long for
/// another process's write lock.
pub(crate) const SQLITE_BUSY_TIMEOUT: &str = "?timeout=60";

/// python3-cinder and python3-glance ship no `/usr/bin` scripts: write `bin/PROJECT-CMD`
/// calling `PROJECT.cmd.CMD.main`, after [`SQLITE_BEGIN_IMMEDIATE`].
fn write_shims(root: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    for (project, cmd) in [
        ("cinder", "api"),
        ("cinder", "scheduler"),
        ("cinder", "volume"),
        ("cinder", "manage"),
        ("glance", "api"),
        ("glance", "manage"),
    ] {
        let path = shim(root, &format!("{project}-{cmd}"));
        write(
            &path,
            &format!(
                "#!{PYTHON}\nimport sys\n{SQLITE_BEGIN_IMMEDIATE}from {project}.cmd.{cmd} import main\nsys.exit(main())\n"
            ),
        )?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::io("chmod", &path, e))?;
    }
    Ok(())
}

fn info_path(root: &Path) -> PathBuf {
    root.join("info.json")
}

fn sites_path(root: &Path) -> PathBuf {
    root.join("sites.json")
}

fn load_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, Error> {
    match fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| Error::StateFile {
                path: path.to_path_buf(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

fn save_json<T: Serialize>(path: &Path, value: &T) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(value).map_err(|source| Error::StateFile {
        path: path.to_path_buf(),
        source,
    })?;
    let tmp = path.with_extension("tmp");
    write(&tmp, &text)?;
    fs::rename(&tmp, path).map_err(|e| Error::io("rename", path, e))
}

/// Serialises `up` and `down` of one state directory across processes.
fn lock(state_dir: &Path) -> Result<fs::File, Error> {
    fs::create_dir_all(state_dir).map_err(|e| Error::io("create", state_dir, e))?;
    let path = state_dir.join("openstack.lock");
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io("open", &path, e))?;
    f.lock().map_err(|e| Error::io("lock", &path, e))?;
    Ok(f)
}

/// The distinct Keystones of `plans` (one, or two when the destination has its own).
fn keystones(plans: &[CloudPlan; 2]) -> Vec<&keystone::Keystone> {
    let mut v = vec![&plans[0].keystone];
    if plans[1].keystone != plans[0].keystone {
        v.push(&plans[1].keystone);
    }
    v
}

/// The chroot the destination cloud was recorded to run from (by a possibly half-finished
/// `up`).
fn recorded_destination_root(root: &Path) -> Option<PathBuf> {
    load_json::<Option<PathBuf>>(&root.join("destination-root.json"))
        .ok()
        .flatten()
        .flatten()
}

/// The Keystone daemon records under `root`: the host's, and the destination's own when
/// the destination was recorded to run from a chroot.
fn keystone_daemons(root: &Path) -> Vec<process::Daemon> {
    let mut v = vec![process::Daemon::new(root, keystone::HOST_NAME)];
    if recorded_destination_root(root).is_some() {
        v.push(process::Daemon::new(root, keystone::DESTINATION_NAME));
    }
    v
}

/// The daemons of clouds on `sites`, in start order.
fn daemons(root: &Path, sites: &[String]) -> Vec<process::Daemon> {
    let mut v = vec![rabbit::daemon(root)];
    v.extend(keystone_daemons(root));
    for s in sites {
        for svc in cinder::SERVICES {
            v.push(cinder::daemon(root, s, svc));
        }
        v.push(glance::daemon(root, s));
    }
    v
}

/// Site names recorded by a (possibly half-finished) `up`, else from the pid files.
fn recorded_sites(root: &Path) -> Vec<String> {
    load_json::<Vec<String>>(&sites_path(root))
        .ok()
        .flatten()
        .unwrap_or_default()
}

fn http_client() -> Result<Client, Error> {
    Client::builder()
        .timeout(Duration::from_secs(90))
        .build()
        .map_err(|e| Error::http("BUILD", "(client)", e))
}

/// Brings both clouds up on `sites` (`sites[0]` the source, `sites[1]` the destination) and
/// returns how to reach them. Idempotent (see the module documentation).
pub fn up(state_dir: &Path, sites: &[CephSite]) -> Result<OpenStackInfo, Error> {
    up_with(state_dir, sites, None)
}

/// [`up`], with the destination cloud's Cinder and Glance run from the Debian root file
/// system `destination_root` (its newer OpenStack release, see `chroot::ensure_openstack`)
/// when given, with its own Keystone from there too. The source cloud's Keystone and the
/// RabbitMQ node stay the host's.
pub fn up_with(
    state_dir: &Path,
    sites: &[CephSite],
    destination_root: Option<&Path>,
) -> Result<OpenStackInfo, Error> {
    let t0 = Instant::now();
    let plans = plans(sites, destination_root)?;
    let _lock = lock(state_dir)?;
    let root = state_dir.join("openstack");
    let http = http_client()?;
    let names: Vec<String> = sites.iter().map(|s| s.name.clone()).collect();

    if let Some(info) = load_json::<OpenStackInfo>(&info_path(&root))? {
        let all_alive = daemons(&root, &names).iter().all(|d| d.pid().is_some());
        let same_root = recorded_destination_root(&root).as_deref() == destination_root;
        let answer = keystones(&plans).iter().all(|k| k.responds(&http));
        if info.matches(sites) && same_root && all_alive && answer {
            tracing::info!("openstack: already running");
            return Ok(info);
        }
        tracing::info!("openstack: stale or half-dead clouds: rebuilding");
    }
    if root.exists() {
        stop_and_wipe(&root)?;
    }
    check_ports()?;
    for sub in ["run", "logs", "bin", "ceph"] {
        let p = root.join(sub);
        fs::create_dir_all(&p).map_err(|e| Error::io("create", &p, e))?;
    }
    save_json(&sites_path(&root), &names)?;
    save_json(&root.join("destination-root.json"), &destination_root)?;
    let info = build(&root, &http, &plans).inspect_err(|e| {
        tracing::error!("openstack up failed after {:?}: {e}", t0.elapsed());
    })?;
    save_json(&info_path(&root), &info)?;
    tracing::info!("openstack: both clouds ready in {:.1?}", t0.elapsed());
    Ok(info)
}

fn check_ports() -> Result<(), Error> {
    for (port, what) in [
        (KEYSTONE_PORT, "keystone"),
        (DESTINATION_KEYSTONE_PORT, "destination keystone"),
        (SOURCE_CINDER_PORT, "source cinder-api"),
        (DESTINATION_CINDER_PORT, "destination cinder-api"),
        (SOURCE_GLANCE_PORT, "source glance-api"),
        (DESTINATION_GLANCE_PORT, "destination glance-api"),
        (RABBIT_PORT, "rabbitmq"),
        (RABBIT_DIST_PORT, "rabbitmq distribution"),
    ] {
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            return Err(Error::PortInUse { port, what });
        }
    }
    Ok(())
}

/// Joins a scoped thread, turning a panic into an error.
fn join<T>(
    h: thread::ScopedJoinHandle<'_, Result<T, Error>>,
    what: &'static str,
) -> Result<T, Error> {
    h.join()
        .map_err(|_| Error::ThreadPanicked(what.to_string()))?
}

fn build(root: &Path, http: &Client, plans: &[CloudPlan; 2]) -> Result<OpenStackInfo, Error> {
    let t0 = Instant::now();
    // Start-up milestones: logged, and kept in logs/up-timings.txt for later comparison.
    let timings = std::sync::Mutex::new(String::new());
    let step = |what: &str| {
        let line = format!("[{:5.1}s] {what}", t0.elapsed().as_secs_f64());
        tracing::info!("openstack {line}");
        if let Ok(mut t) = timings.lock() {
            t.push_str(&line);
            t.push('\n');
        }
    };
    let [src, dst] = plans;
    let vhosts = [src.site.name.as_str(), dst.site.name.as_str()];

    // Every chain starts as soon as what it needs is there; the critical paths are Keystone
    // (manage -> daemon -> init) and Cinder (db sync -> volume -> first report -> scheduler).
    rabbit::start(root, &vhosts)?;
    let cache = root
        .parent()
        .map(SchemaCache::new)
        .unwrap_or(SchemaCache { dir: None });
    write_shims(root)?;
    for k in keystones(plans) {
        k.write_conf(root)?;
    }
    for p in plans {
        cinder::write_conf(root, p)?;
        glance::write_conf(root, p)?;
    }
    step("rabbitmq starting, configs written");
    // each Keystone's catalog: the regions of the clouds that use it
    let regions = |k: &keystone::Keystone| -> Vec<keystone::RegionServices> {
        plans
            .iter()
            .filter(|p| p.keystone == *k)
            .map(|p| keystone::RegionServices {
                region: p.site.name.clone(),
                cinder: format!("http://127.0.0.1:{}", p.cinder_port),
                glance: format!("http://127.0.0.1:{}", p.glance_port),
            })
            .collect()
    };
    let long = Duration::from_secs(90);
    // A destination on another OpenStack release has its own schema: migrated by its own
    // glance-manage/cinder-manage, cached under the chroot's package versions.
    let dst_cache = dst.chroot.as_deref().map(|c| {
        root.parent()
            .map(|p| SchemaCache::new_in(p, Some(c)))
            .unwrap_or(SchemaCache { dir: None })
    });
    let dst_cache = &dst_cache;
    let ids = thread::scope(|s| {
        let ks: Vec<_> = keystones(plans)
            .into_iter()
            .map(|k| {
                let (cache, step, regions) = (&cache, &step, &regions);
                s.spawn(move || {
                    // a chroot's Keystone: its schema is its release's (cached under the
                    // chroot's package versions)
                    let cache = match (&k.chroot, dst_cache) {
                        (Some(_), Some(c)) => c,
                        _ => cache,
                    };
                    let name = k.name;
                    k.prepare(root, cache)?;
                    step(&format!("{name}: keystone-manage done"));
                    k.wait_ready(root, http, long)?;
                    step(&format!("{name} answers"));
                    let ids = keystone::init(http, k, &regions(k))?;
                    step(&format!("{name} initialised"));
                    Ok((k.name, ids))
                })
            })
            .collect();
        let users: Vec<_> = plans
            .iter()
            .map(|p| {
                s.spawn(move || {
                    ceph::check_pools(p)?;
                    ceph::prepare(root, p)
                })
            })
            .collect();
        let glances = s.spawn(|| {
            let db = glance::db_path(root, &src.site.name);
            cache.migrated("glance", &db, || glance::db_sync(root, src))?;
            match dst_cache {
                None => copy(&db, &glance::db_path(root, &dst.site.name))?,
                Some(c) => c.migrated("glance", &glance::db_path(root, &dst.site.name), || {
                    glance::db_sync(root, dst)
                })?,
            }
            step("glance database ready");
            Ok(())
        });
        let db = cinder::db_path(root, &src.site.name);
        cache.migrated("cinder", &db, || cinder::db_sync(root, src))?;
        match dst_cache {
            None => copy(&db, &cinder::db_path(root, &dst.site.name))?,
            Some(c) => c.migrated("cinder", &cinder::db_path(root, &dst.site.name), || {
                cinder::db_sync(root, dst)
            })?,
        }
        step("cinder database ready");
        for u in users {
            join(u, "ceph users")?;
        }
        step("ceph users ready");
        rabbit::wait_ready(root, long)?;
        step("rabbitmq ready");
        let cinders: Vec<_> = plans
            .iter()
            .map(|p| s.spawn(move || cinder::start(root, p, long)))
            .collect();
        join(glances, "glance db sync")?;
        for p in plans {
            glance::start(root, p)?;
        }
        for c in cinders {
            join(c, "cinder start")?;
        }
        step("cinder volume + scheduler reported");
        ks.into_iter()
            .map(|h| join(h, "keystone"))
            .collect::<Result<Vec<_>, Error>>()
    })?;

    wait_apis_ready(root, http, plans, long)?;
    step("cinder pools listed, glance healthy");
    if let Ok(t) = timings.lock() {
        // diagnostics only
        let _ = fs::write(root.join("logs").join("up-timings.txt"), t.as_bytes());
    }

    let info = describe_clouds(root, plans, &ids);
    write(&info.clouds_yaml, &clouds_yaml(&info))?;
    Ok(info)
}

/// Waits until the APIs answer through Keystone and the schedulers know their pools.
fn wait_apis_ready(
    root: &Path,
    http: &Client,
    plans: &[CloudPlan; 2],
    long: Duration,
) -> Result<(), Error> {
    thread::scope(|s| {
        let waits: Vec<_> = plans
            .iter()
            .map(|p| {
                s.spawn(move || {
                    // a token of the Keystone this cloud's Cinder validates against
                    let token = keystone::issue_token(
                        http,
                        &p.keystone,
                        "admin",
                        keystone::ADMIN_PASSWORD,
                        "admin",
                    )?;
                    glance::wait_ready(root, http, p, long)?;
                    cinder::wait_pool(root, http, p, &token, &p.cinder_host(), long)
                })
            })
            .collect();
        for w in waits {
            join(w, "readiness")?;
        }
        Ok::<(), Error>(())
    })
}

/// What the clouds look like to a client, once they run.
fn describe_clouds(
    root: &Path,
    plans: &[CloudPlan; 2],
    ids: &[(&'static str, keystone::Ids)],
) -> OpenStackInfo {
    let [src, dst] = plans;
    let ids_of = |k: &keystone::Keystone| {
        ids.iter()
            .find(|(name, _)| *name == k.name)
            .map(|(_, i)| i.clone())
            .unwrap_or(keystone::Ids {
                admin_project: String::new(),
                member_project: String::new(),
            })
    };
    let host_ids = ids_of(&src.keystone);
    let keystone_url = format!("{}/v3", src.keystone.base_url());
    let cloud = |p: &CloudPlan| CloudInfo {
        region: p.site.name.clone(),
        admin_cloud: format!("{}-admin", p.site.name),
        member_cloud: format!("{}-member", p.site.name),
        keystone_url: format!("{}/v3", p.keystone.base_url()),
        admin_project_id: ids_of(&p.keystone).admin_project,
        member_project_id: ids_of(&p.keystone).member_project,
        cinder_url: format!("http://127.0.0.1:{}/v3", p.cinder_port),
        glance_url: format!("http://127.0.0.1:{}", p.glance_port),
        cinder_host: p.cinder_host(),
        ceph_cluster: p.site.name.clone(),
        fsid: p.site.fsid.clone(),
        volume_pool: p.volume_pool.clone(),
        image_pool: p.image_pool.clone(),
        service_ceph_conf: ceph::client_conf_path(root, &p.site.name),
    };
    OpenStackInfo {
        clouds_yaml: root.join("clouds.yaml"),
        keystone_url: keystone_url.clone(),
        admin: Credentials {
            username: "admin".into(),
            password: keystone::ADMIN_PASSWORD.into(),
            project_name: "admin".into(),
            project_id: host_ids.admin_project.clone(),
        },
        member: Credentials {
            username: "member".into(),
            password: keystone::MEMBER_PASSWORD.into(),
            project_name: "demo".into(),
            project_id: host_ids.member_project,
        },
        source: cloud(src),
        destination: cloud(dst),
    }
}

fn copy(from: &Path, to: &Path) -> Result<(), Error> {
    fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| Error::io("copy to", to, e))
}

/// clouds.yaml for openstacksdk/openstackclient: admin and member per cloud.
fn clouds_yaml(info: &OpenStackInfo) -> String {
    let mut y = String::from("clouds:\n");
    for c in [&info.source, &info.destination] {
        for (name, cred) in [
            (&c.admin_cloud, &info.admin),
            (&c.member_cloud, &info.member),
        ] {
            y.push_str(&format!(
                "  {name}:\n    auth:\n      auth_url: {url}\n      username: {user}\n      \
                 password: {pw}\n      project_name: {project}\n      user_domain_name: Default\n      \
                 project_domain_name: Default\n    region_name: {region}\n    interface: public\n    \
                 identity_api_version: 3\n",
                url = c.keystone_url.trim_end_matches("/v3"),
                user = cred.username,
                pw = cred.password,
                project = cred.project_name,
                region = c.region,
            ));
        }
    }
    y
}

/// Stops every recorded daemon in the reference order and wipes `root` and our keyrings.
fn stop_and_wipe(root: &Path) -> Result<(), Error> {
    let t0 = Instant::now();
    let step = |what: &str| {
        tracing::info!(
            "openstack down [{:5.1}s] {what}",
            t0.elapsed().as_secs_f64()
        )
    };
    let sites = recorded_sites(root);
    let grace = Duration::from_secs(15);
    // 1. Glance and Cinder (in parallel: each takes ~2 s to exit on SIGTERM)
    let mut services = Vec::new();
    for s in &sites {
        services.push(glance::daemon(root, s));
        for svc in cinder::SERVICES {
            services.push(cinder::daemon(root, s, svc));
        }
    }
    // pid files of sites not recorded (should not happen, but never leave a daemon behind)
    if let Ok(rd) = fs::read_dir(root.join("run")) {
        for e in rd.flatten() {
            let name = e
                .file_name()
                .to_string_lossy()
                .trim_end_matches(".pid")
                .to_string();
            let keystone = name == keystone::HOST_NAME || name == keystone::DESTINATION_NAME;
            if name != "rabbitmq" && !keystone && !services.iter().any(|d| d.name == name) {
                services.push(process::Daemon::new(root, &name));
            }
        }
    }
    thread::scope(|s| {
        let hs: Vec<_> = services
            .iter()
            .map(|d| s.spawn(move || process::stop(&d.pid_file, grace)))
            .collect();
        for h in hs {
            join(h, "stop")?;
        }
        Ok::<(), Error>(())
    })?;
    step("cinder and glance stopped");
    // 2. The Keystones (Cinder/Glance may validate tokens while stopping) and RabbitMQ,
    //    then our epmd: nothing uses either once Cinder and Glance are gone, so side by side.
    //    Both Keystone records are tried: a half-finished `up` may not have recorded the
    //    destination's chroot yet.
    let keystones = [keystone::HOST_NAME, keystone::DESTINATION_NAME]
        .map(|name| process::Daemon::new(root, name));
    thread::scope(|s| {
        let ks: Vec<_> = keystones
            .iter()
            .map(|d| s.spawn(move || process::stop(&d.pid_file, grace).map(|_| ())))
            .collect();
        let mq = s.spawn(|| rabbit::stop(root));
        for h in ks {
            join(h, "stop keystone")?;
        }
        join(mq, "stop rabbitmq")
    })?;
    step("keystones and rabbitmq stopped");
    // 4. state
    for s in &sites {
        ceph::remove_keyrings(s)?;
    }
    match fs::remove_dir_all(root) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", root, e)),
    }
}

/// Stops what [`up`] started under `state_dir` (only processes recorded in its pid files)
/// and wipes the clouds' state. Safe to run when nothing is up.
pub fn down(state_dir: &Path) -> Result<(), Error> {
    if !state_dir.join("openstack").exists() {
        return Ok(());
    }
    let _lock = lock(state_dir)?;
    stop_and_wipe(&state_dir.join("openstack"))
}

/// The clouds' log files under `state_dir` that exist (service logs and each daemon's
/// stdout/stderr), for printing when a test fails.
pub fn log_files(state_dir: &Path) -> Vec<PathBuf> {
    let root = state_dir.join("openstack");
    let mut files = Vec::new();
    let mut add_dir = |dir: PathBuf, ext: &str| {
        if let Ok(rd) = fs::read_dir(&dir) {
            let mut v: Vec<PathBuf> = rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == ext))
                .collect();
            v.sort();
            files.extend(v);
        }
    };
    add_dir(root.join("logs"), "out");
    for name in [keystone::HOST_NAME, keystone::DESTINATION_NAME] {
        add_dir(root.join(name).join("log"), "log");
    }
    for site in recorded_sites(&root) {
        add_dir(cinder::dir(&root, &site).join("log"), "log");
        add_dir(glance::dir(&root, &site).join("log"), "log");
    }
    files
}

/// Every daemon of the clouds recorded under `state_dir`, with its pid and liveness.
pub fn status(state_dir: &Path) -> Vec<ServiceStatus> {
    let root = state_dir.join("openstack");
    if !root.exists() {
        return Vec::new();
    }
    daemons(&root, &recorded_sites(&root))
        .into_iter()
        .map(|d| {
            let rec = process::read_pid_file(&d.pid_file);
            ServiceStatus {
                name: d.name,
                pid: rec.map(|r| r.pid),
                alive: rec.is_some_and(process::is_alive),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn cloud(site: &str, cinder: u16) -> CloudInfo {
        CloudInfo {
            region: site.into(),
            admin_cloud: format!("{site}-admin"),
            member_cloud: format!("{site}-member"),
            keystone_url: "http://127.0.0.1:5000/v3".into(),
            cinder_url: format!("http://127.0.0.1:{cinder}/v3"),
            cinder_host: format!("{site}@ceph#ceph"),
            ceph_cluster: site.into(),
            ..CloudInfo::default()
        }
    }

    fn info() -> OpenStackInfo {
        OpenStackInfo {
            clouds_yaml: "/x/clouds.yaml".into(),
            keystone_url: "http://127.0.0.1:5000/v3".into(),
            admin: Credentials {
                username: "admin".into(),
                password: "it's".into(),
                project_name: "admin".into(),
                project_id: "abc123".into(),
            },
            member: Credentials::default(),
            source: cloud("site-a", 8776),
            destination: cloud("site-b", 8777),
        }
    }

    #[test]
    fn env_lines_quote_every_value_and_carry_the_admin_project_in_cinder_urls() {
        let lines = info().env_lines();
        assert!(lines.contains(&"export RBD_RELAY_SRC_CINDER_HOST='site-a@ceph#ceph'".to_string()));
        assert!(lines.contains(
            &"export RBD_RELAY_DST_CINDER_URL='http://127.0.0.1:8777/v3/abc123'".to_string()
        ));
        assert!(lines
            .iter()
            .all(|l| l.starts_with("export ") && l.ends_with('\'')));
        let mut i = info();
        i.clouds_yaml = "/tmp/it's/clouds.yaml".into();
        assert!(i
            .env_lines()
            .contains(&r"export OS_CLIENT_CONFIG_FILE='/tmp/it'\''s/clouds.yaml'".to_string()));
    }

    #[test]
    fn clouds_yaml_has_admin_and_member_clouds_per_region() {
        let y = clouds_yaml(&info());
        for name in [
            "site-a-admin:",
            "site-a-member:",
            "site-b-admin:",
            "site-b-member:",
        ] {
            assert!(y.contains(name), "{name} in\n{y}");
        }
        assert_eq!(y.matches("region_name: site-b").count(), 2);
        assert!(y.contains("auth_url: http://127.0.0.1:5000\n"));
        assert_eq!(y.matches("identity_api_version: 3").count(), 4);
    }

    #[test]
    fn info_matches_only_the_same_sites() {
        let site = |name: &str, fsid: &str| CephSite {
            name: name.into(),
            conf: PathBuf::new(),
            admin_keyring: PathBuf::new(),
            fsid: fsid.into(),
        };
        let mut i = info();
        i.source.fsid = "f1".into();
        i.destination.fsid = "f2".into();
        assert!(i.matches(&[site("site-a", "f1"), site("site-b", "f2")]));
        // a rebuilt pair (new fsid) means the clouds' databases point at nothing
        assert!(!i.matches(&[site("site-a", "f1"), site("site-b", "new")]));
        assert!(!i.matches(&[site("site-a", "f1")]));
    }

    #[test]
    fn a_daemon_runs_in_its_own_process_group_and_stop_ends_the_group() {
        let dir = std::env::temp_dir().join(format!("t2-proc-{}", std::process::id()));
        fs::create_dir_all(dir.join("run")).unwrap();
        fs::create_dir_all(dir.join("logs")).unwrap();
        let d = process::Daemon::new(&dir, "sleeper");
        // a shell with a child: both must go
        let pid = d
            .start(
                Path::new("/bin/sh"),
                &["-c".into(), "sleep 60 & sleep 60; wait".into()],
                &[],
            )
            .unwrap();
        assert_eq!(d.pid(), Some(pid));
        assert_eq!(
            nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid)))
                .unwrap()
                .as_raw(),
            pid
        );
        // starting again is a no-op
        assert_eq!(
            d.start(Path::new("/bin/sh"), &["-c".into(), "exit 1".into()], &[])
                .unwrap(),
            pid
        );
        assert_eq!(
            process::stop(&d.pid_file, Duration::from_secs(5)).unwrap(),
            Some(pid)
        );
        assert!(nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), None).is_err());
        assert_eq!(d.pid(), None);
        assert!(!d.pid_file.exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_reused_pid_is_not_taken_for_ours() {
        let dir = std::env::temp_dir().join(format!("t2-pid-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let f = dir.join("x.pid");
        // our own pid, but another start time: a different process as far as we know
        fs::write(&f, format!("{} 1\n", std::process::id())).unwrap();
        assert_eq!(process::alive_pid(&f), None);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_cloud_in_a_chroot_runs_its_shims_through_chroot_at_the_same_paths() {
        let shim = Path::new("/var/tmp/x/openstack/bin/cinder-api");
        let args = vec!["--config-file".to_string(), "/var/tmp/x/c.conf".to_string()];
        let (p, a) = in_root(None, shim, &args);
        assert_eq!((p.as_path(), a.clone()), (shim, args.clone()));
        let (p, a) = in_root(
            Some(Path::new("/var/tmp/rbd-relay-chroots/trixie-ceph")),
            shim,
            &args,
        );
        assert_eq!(p, Path::new("chroot"));
        assert_eq!(
            a,
            [
                "/var/tmp/rbd-relay-chroots/trixie-ceph",
                "/var/tmp/x/openstack/bin/cinder-api",
                "--config-file",
                "/var/tmp/x/c.conf"
            ]
        );
        let site = |name: &str| CephSite {
            name: name.into(),
            conf: PathBuf::new(),
            admin_keyring: PathBuf::new(),
            fsid: String::new(),
        };
        let root = Path::new("/r");
        let [src, dst] = plans(&[site("site-a"), site("site-b")], Some(root)).unwrap();
        assert_eq!(src.chroot, None, "the source cloud stays the host's");
        assert_eq!(dst.chroot.as_deref(), Some(root));
    }

    #[test]
    fn a_destination_in_a_chroot_gets_its_own_keystone_from_that_chroot_and_the_source_keeps_the_hosts(
    ) {
        let site = |name: &str| CephSite {
            name: name.into(),
            conf: PathBuf::new(),
            admin_keyring: PathBuf::new(),
            fsid: String::new(),
        };
        let sites = [site("site-a"), site("site-b")];
        let root = Path::new("/r");
        let [src, dst] = plans(&sites, Some(root)).unwrap();
        assert_eq!(src.keystone, keystone::Keystone::host("site-a"));
        assert_eq!(dst.keystone.name, keystone::DESTINATION_NAME);
        assert_eq!(dst.keystone.port, DESTINATION_KEYSTONE_PORT);
        assert_eq!(dst.keystone.region, "site-b");
        assert_eq!(dst.keystone.chroot.as_deref(), Some(root));
        let both = plans(&sites, Some(root)).unwrap();
        assert_eq!(keystones(&both).len(), 2);
        // the destination's services validate tokens against their own Keystone
        let section = dst.keystone.authtoken_section("cinder", "site-b");
        assert!(
            section.contains("auth_url = http://127.0.0.1:5001\n"),
            "{section}"
        );
        assert!(section.contains("www_authenticate_uri = http://127.0.0.1:5001\n"));
        // on the host's OpenStack, both clouds share the host's Keystone
        let shared = plans(&sites, None).unwrap();
        assert_eq!(shared[1].keystone, shared[0].keystone);
        assert_eq!(keystones(&shared).len(), 1);
        assert!(shared[1]
            .keystone
            .authtoken_section("glance", "site-b")
            .contains("auth_url = http://127.0.0.1:5000\n"));
    }

    #[test]
    fn each_cloud_in_clouds_yaml_and_the_env_points_at_its_own_keystone() {
        let mut i = info();
        i.destination.keystone_url = "http://127.0.0.1:5001/v3".into();
        i.destination.admin_project_id = "dst999".into();
        let y = clouds_yaml(&i);
        let (a, b) = y.split_once("  site-b-admin:").unwrap();
        assert_eq!(a.matches("auth_url: http://127.0.0.1:5000\n").count(), 2);
        assert_eq!(b.matches("auth_url: http://127.0.0.1:5001\n").count(), 2);
        assert!(!b.contains(":5000"));
        let lines = i.env_lines();
        assert!(lines.contains(
            &"export RBD_RELAY_DST_CINDER_URL='http://127.0.0.1:8777/v3/dst999'".to_string()
        ));
        assert!(lines.contains(
            &"export RBD_RELAY_SRC_CINDER_URL='http://127.0.0.1:8776/v3/abc123'".to_string()
        ));
        assert!(lines
            .contains(&"export RBD_RELAY_DST_KEYSTONE_URL='http://127.0.0.1:5001/v3'".to_string()));
    }

    #[test]
    fn tail_cuts_on_a_char_boundary() {
        assert_eq!(process::tail("abc", 10), "abc");
        // byte 4 is inside '€': the cut moves forward to the next boundary
        assert_eq!(process::tail("aé€z", 3), "...z");
        assert_eq!(process::tail("aé€z", 4), "...€z");
    }
}
