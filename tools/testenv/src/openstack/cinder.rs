//! One Cinder deployment (api, scheduler, volume with the RBD driver) per cloud.
//!
//! Start-up order matters (found on the reference stack): cinder-volume first; the scheduler
//! only after the volume service's first state report (its RPC server is consuming by then),
//! so the scheduler's start-up "send me your capabilities" fanout is answered at once.
//! Otherwise the pool stays unknown until the next stats poll and manage fails with "No valid
//! backend". An RPC call (get_pools) sent before the scheduler's queue exists is silently
//! dropped and the API hangs for `rpc_response_timeout` (60 s), so the scheduler's first report
//! is awaited too, and readiness means the pool is listed by `scheduler-stats/get_pools`.
//!
//! python3-cinder ships no `/usr/bin` entry points (the daemon packages that do also pull in
//! dbconfig, uwsgi and init scripts), so small shims under `bin/` call `cinder.cmd.*.main`.
//! oslo.log names its file after argv\[0\], hence one shim per service.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::Method;

use super::process::{self, Daemon};
use super::{keystone, rabbit, CloudPlan, Error, BACKEND, PYTHON};

/// The three services, in start order.
pub(crate) const SERVICES: [&str; 3] = ["cinder-volume", "cinder-api", "cinder-scheduler"];

/// The directory of the cloud's Cinder files.
pub(crate) fn dir(root: &Path, site: &str) -> PathBuf {
    root.join(format!("cinder-{site}"))
}

/// The daemon record of `service` (`cinder-volume`, ...) of `site`.
pub(crate) fn daemon(root: &Path, site: &str, service: &str) -> Daemon {
    Daemon::new(root, &format!("{service}.{site}"))
}

fn conf_path(root: &Path, site: &str) -> PathBuf {
    dir(root, site).join("cinder.conf")
}

/// The sqlite database of the cloud's Cinder.
pub(crate) fn db_path(root: &Path, site: &str) -> PathBuf {
    dir(root, site).join("cinder.sqlite")
}

/// Writes cinder.conf and api-paste.ini of one cloud.
pub(crate) fn write_conf(root: &Path, plan: &CloudPlan) -> Result<(), Error> {
    let site = &plan.site.name;
    let d = dir(root, site);
    for sub in ["state", "log", "lock"] {
        let p = d.join(sub);
        std::fs::create_dir_all(&p).map_err(|e| Error::io("create", &p, e))?;
    }
    let ds = d.display();
    let paste = d.join("api-paste.ini");
    super::write(
        &conf_path(root, site),
        &format!(
            "[DEFAULT]\n\
             auth_strategy = keystone\n\
             api_paste_config = {paste}\n\
             transport_url = {transport}\n\
             state_path = {ds}/state\n\
             log_dir = {ds}/log\n\
             debug = false\n\
             host = {site}\n\
             my_ip = 127.0.0.1\n\
             osapi_volume_listen = 127.0.0.1\n\
             osapi_volume_listen_port = {port}\n\
             osapi_volume_workers = 1\n\
             enabled_backends = {BACKEND}\n\
             glance_api_servers = http://127.0.0.1:{glance_port}\n\
             report_interval = 2\n\
             # test env: stop within seconds on SIGTERM (default 60 s of draining)\n\
             graceful_shutdown_timeout = 3\n\
             periodic_interval = 5\n\
             # re-publish pool stats to the scheduler every 10 s (default 60)\n\
             backend_stats_polling_interval = 10\n\
             [database]\n\
             connection = sqlite:///{db}{busy}\n\
             [oslo_concurrency]\n\
             lock_path = {ds}/lock\n\
             [coordination]\n\
             backend_url = file://{ds}/lock\n\
             [{BACKEND}]\n\
             volume_driver = cinder.volume.drivers.rbd.RBDDriver\n\
             volume_backend_name = {BACKEND}\n\
             rbd_pool = {pool}\n\
             rbd_ceph_conf = {ceph_conf}\n\
             rbd_user = cinder\n\
             rados_connect_timeout = 10\n\
             {authtoken}",
            paste = paste.display(),
            transport = rabbit::transport_url(site),
            port = plan.cinder_port,
            glance_port = plan.glance_port,
            db = db_path(root, site).display(),
            // transactions begin IMMEDIATE (the shims: SQLITE_BEGIN_IMMEDIATE) and wait
            // this long for another process's write lock
            busy = super::SQLITE_BUSY_TIMEOUT,
            pool = plan.volume_pool,
            ceph_conf = super::ceph::client_conf_path(root, site).display(),
            authtoken = plan.keystone.authtoken_section("cinder", site),
        ),
    )?;
    super::write(&paste, &paste_ini(&d))
}

/// Debian cinder-common's api-paste.ini (keystone flavour), with our healthcheck file.
fn paste_ini(d: &Path) -> String {
    format!(
        "[composite:osapi_volume]\n\
         use = call:cinder.api:root_app_factory\n\
         /: apiversions\n\
         /healthcheck: healthcheck\n\
         /v3: openstack_volume_api_v3\n\
         [composite:openstack_volume_api_v3]\n\
         use = call:cinder.api.middleware.auth:pipeline_factory\n\
         noauth = request_id cors http_proxy_to_wsgi faultwrap sizelimit noauth apiv3\n\
         keystone = request_id cors http_proxy_to_wsgi faultwrap sizelimit authtoken keystonecontext apiv3\n\
         [filter:request_id]\n\
         paste.filter_factory = cinder.api.middleware.request_id:RequestId.factory\n\
         [filter:http_proxy_to_wsgi]\n\
         paste.filter_factory = oslo_middleware.http_proxy_to_wsgi:HTTPProxyToWSGI.factory\n\
         [filter:cors]\n\
         paste.filter_factory = oslo_middleware.cors:filter_factory\n\
         oslo_config_project = cinder\n\
         [filter:faultwrap]\n\
         paste.filter_factory = cinder.api.middleware.fault:FaultWrapper.factory\n\
         [filter:noauth]\n\
         paste.filter_factory = cinder.api.middleware.auth:NoAuthMiddleware.factory\n\
         [filter:authtoken]\n\
         paste.filter_factory = keystonemiddleware.auth_token:filter_factory\n\
         [filter:keystonecontext]\n\
         paste.filter_factory = cinder.api.middleware.auth:CinderKeystoneContext.factory\n\
         [filter:sizelimit]\n\
         paste.filter_factory = oslo_middleware.sizelimit:RequestBodySizeLimiter.factory\n\
         [app:apiv3]\n\
         paste.app_factory = cinder.api.v3.router:APIRouter.factory\n\
         [pipeline:apiversions]\n\
         pipeline = request_id cors http_proxy_to_wsgi faultwrap osvolumeversionapp\n\
         [app:osvolumeversionapp]\n\
         paste.app_factory = cinder.api.versions:Versions.factory\n\
         [pipeline:healthcheck]\n\
         pipeline = request_id healthcheckapp\n\
         [app:healthcheckapp]\n\
         paste.app_factory = oslo_middleware:Healthcheck.app_factory\n\
         backends = disable_by_file\n\
         disable_by_file_path = {}/healthcheck_disable\n",
        d.display()
    )
}

/// `cinder-manage db sync` into the cloud's database. Not WAL (unlike Keystone's): in WAL
/// mode a read transaction that turns into a write after another process committed fails
/// at once with "database is locked" (no busy wait), which broke quota reservations in
/// manage-existing while the volume service wrote its state reports.
pub(crate) fn db_sync(root: &Path, plan: &CloudPlan) -> Result<(), Error> {
    let site = &plan.site.name;
    let log = dir(root, site).join("log").join("dbsync.log");
    let out = process::run(
        super::command_in(plan.chroot.as_deref(), &super::shim(root, "cinder-manage"))
            .arg("--config-file")
            .arg(conf_path(root, site))
            .args(["db", "sync"]),
    );
    if let Ok(o) = &out {
        let _ = std::fs::write(&log, &o.stderr);
    }
    out.map(|_| ())
}

fn start_service(root: &Path, plan: &CloudPlan, service: &str) -> Result<(), Error> {
    let site = &plan.site.name;
    let (program, args) = super::in_root(
        plan.chroot.as_deref(),
        &super::shim(root, service),
        &[
            "--config-file".into(),
            conf_path(root, site).display().to_string(),
        ],
    );
    daemon(root, site, service).start(&program, &args, &[])?;
    Ok(())
}

/// Did the `topic` service of the database at `db` report at least once?
fn first_report(db: &Path, topic: &str) -> Result<bool, Error> {
    let out = Command::new(PYTHON)
        .args([
            "-c",
            "import sqlite3,sys\n\
             c = sqlite3.connect(sys.argv[1], timeout=5)\n\
             r = c.execute(\"select max(report_count) from services where topic=? and deleted=0\", (sys.argv[2],)).fetchone()[0]\n\
             print(r or 0)",
        ])
        .arg(db)
        .arg(topic)
        .output()
        .map_err(|source| Error::Spawn {
            command: format!("{PYTHON} -c <report count query>"),
            source,
        })?;
    let n: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    Ok(n >= 1)
}

/// Starts cinder-volume and cinder-api, waits for the volume service's first report, then
/// starts the scheduler and waits for its first report. Needs the broker up.
pub(crate) fn start(root: &Path, plan: &CloudPlan, timeout: Duration) -> Result<(), Error> {
    let site = &plan.site.name;
    let db = db_path(root, site);
    start_service(root, plan, "cinder-volume")?;
    start_service(root, plan, "cinder-api")?;
    let volume = daemon(root, site, "cinder-volume");
    process::wait_for(
        &format!("first report of cinder-volume.{site}"),
        timeout,
        Duration::from_millis(250),
        || {
            volume.ensure_running()?;
            first_report(&db, "cinder-volume")
        },
    )?;
    start_service(root, plan, "cinder-scheduler")?;
    let scheduler = daemon(root, site, "cinder-scheduler");
    process::wait_for(
        &format!("first report of cinder-scheduler.{site}"),
        timeout,
        Duration::from_millis(250),
        || {
            scheduler.ensure_running()?;
            first_report(&db, "cinder-scheduler")
        },
    )
}

/// Waits until the API answers and the scheduler lists the backend's pool (`host`).
pub(crate) fn wait_pool(
    root: &Path,
    http: &Client,
    plan: &CloudPlan,
    token: &keystone::Token,
    host: &str,
    timeout: Duration,
) -> Result<(), Error> {
    let site = &plan.site.name;
    let api = daemon(root, site, "cinder-api");
    let url = format!(
        "http://127.0.0.1:{}/v3/{}/scheduler-stats/get_pools",
        plan.cinder_port, token.project_id
    );
    process::wait_for(
        &format!("pool {host} in cinder.{site}'s scheduler"),
        timeout,
        Duration::from_millis(300),
        || {
            api.ensure_running()?;
            match keystone::call(http, &token.token, Method::GET, &url, None) {
                Ok(v) => Ok(v["pools"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|p| p["name"].as_str() == Some(host)))),
                // not listening yet, or 5xx while starting
                Err(_) => Ok(false),
            }
        },
    )
}
