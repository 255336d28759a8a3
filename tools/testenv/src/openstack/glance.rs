//! One Glance API per cloud, with the rbd store on the cloud's image pool.
//!
//! `show_multiple_locations` and `show_image_direct_url` are on, as in clouds that boot from
//! RBD copy-on-write clones: they are what lets rbd-relay register an image by its
//! `rbd://FSID/POOL/IMAGE/snap` location. Debian's glanceclient 4.1.0 cannot add locations;
//! the API can (JSON patch, `application/openstack-images-v2.1-json-patch`). Legacy policies
//! (`enforce_new_defaults = False`), like the Zed default. `workers = 0` serves in the parent
//! process: one process per API.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::blocking::Client;

use super::process::{self, Daemon};
use super::{CloudPlan, Error};

/// The directory of the cloud's Glance files.
pub(crate) fn dir(root: &Path, site: &str) -> PathBuf {
    root.join(format!("glance-{site}"))
}

/// The daemon record of the cloud's glance-api.
pub(crate) fn daemon(root: &Path, site: &str) -> Daemon {
    Daemon::new(root, &format!("glance-api.{site}"))
}

fn conf_path(root: &Path, site: &str) -> PathBuf {
    dir(root, site).join("glance-api.conf")
}

/// The sqlite database of the cloud's Glance.
pub(crate) fn db_path(root: &Path, site: &str) -> PathBuf {
    dir(root, site).join("glance.sqlite")
}

/// Writes glance-api.conf and its paste file.
pub(crate) fn write_conf(root: &Path, plan: &CloudPlan) -> Result<(), Error> {
    let site = &plan.site.name;
    let d = dir(root, site);
    for sub in ["log", "staging", "cache", "lock"] {
        let p = d.join(sub);
        std::fs::create_dir_all(&p).map_err(|e| Error::io("create", &p, e))?;
    }
    let ds = d.display();
    super::write(
        &conf_path(root, site),
        &format!(
            "[DEFAULT]\n\
             bind_host = 127.0.0.1\n\
             bind_port = {port}\n\
             workers = 0\n\
             debug = false\n\
             log_file = {ds}/log/glance-api.log\n\
             use_stderr = false\n\
             show_multiple_locations = True\n\
             show_image_direct_url = True\n\
             image_cache_dir = {ds}/cache\n\
             node_staging_uri = file://{ds}/staging\n\
             enforce_secure_rbac = False\n\
             [database]\n\
             connection = sqlite:///{db}{busy}\n\
             [paste_deploy]\n\
             config_file = {ds}/glance-api-paste.ini\n\
             flavor = keystone\n\
             [oslo_policy]\n\
             enforce_new_defaults = False\n\
             [oslo_concurrency]\n\
             lock_path = {ds}/lock\n\
             [glance_store]\n\
             stores = rbd,http\n\
             default_store = rbd\n\
             rbd_store_pool = {pool}\n\
             rbd_store_user = glance\n\
             rbd_store_ceph_conf = {ceph_conf}\n\
             rbd_store_chunk_size = 8\n\
             rados_connect_timeout = 10\n\
             {authtoken}",
            port = plan.glance_port,
            db = db_path(root, site).display(),
            busy = super::SQLITE_BUSY_TIMEOUT,
            pool = plan.image_pool,
            ceph_conf = super::ceph::client_conf_path(root, site).display(),
            authtoken = plan.keystone.authtoken_section("glance", site),
        ),
    )?;
    super::write(
        &d.join("glance-api-paste.ini"),
        &format!(
            "[pipeline:glance-api-keystone]\n\
             pipeline = cors healthcheck http_proxy_to_wsgi versionnegotiation authtoken context rootapp\n\
             [filter:authtoken]\n\
             paste.filter_factory = keystonemiddleware.auth_token:filter_factory\n\
             delay_auth_decision = true\n\
             [composite:rootapp]\n\
             paste.composite_factory = glance.api:root_app_factory\n\
             /: apiversions\n\
             /v2: apiv2app\n\
             [app:apiversions]\n\
             paste.app_factory = glance.api.versions:create_resource\n\
             [app:apiv2app]\n\
             paste.app_factory = glance.api.v2.router:API.factory\n\
             [filter:healthcheck]\n\
             paste.filter_factory = oslo_middleware:Healthcheck.factory\n\
             backends = disable_by_file\n\
             disable_by_file_path = {ds}/healthcheck_disable\n\
             [filter:versionnegotiation]\n\
             paste.filter_factory = glance.api.middleware.version_negotiation:VersionNegotiationFilter.factory\n\
             [filter:context]\n\
             paste.filter_factory = glance.api.middleware.context:ContextMiddleware.factory\n\
             [filter:cors]\n\
             paste.filter_factory = oslo_middleware.cors:filter_factory\n\
             oslo_config_project = glance\n\
             oslo_config_program = glance-api\n\
             [filter:http_proxy_to_wsgi]\n\
             paste.filter_factory = oslo_middleware:HTTPProxyToWSGI.factory\n"
        ),
    )
}

/// `glance-manage db_sync` into the cloud's database.
pub(crate) fn db_sync(root: &Path, plan: &CloudPlan) -> Result<(), Error> {
    process::run(
        super::command_in(plan.chroot.as_deref(), &super::shim(root, "glance-manage"))
            .arg("--config-file")
            .arg(conf_path(root, &plan.site.name))
            .arg("db_sync"),
    )?;
    Ok(())
}

/// Starts the API.
pub(crate) fn start(root: &Path, plan: &CloudPlan) -> Result<(), Error> {
    let site = &plan.site.name;
    let (program, args) = super::in_root(
        plan.chroot.as_deref(),
        &super::shim(root, "glance-api"),
        &[
            "--config-file".into(),
            conf_path(root, site).display().to_string(),
        ],
    );
    daemon(root, site).start(&program, &args, &[])?;
    Ok(())
}

/// Waits for `/healthcheck` to answer 200.
pub(crate) fn wait_ready(
    root: &Path,
    http: &Client,
    plan: &CloudPlan,
    timeout: Duration,
) -> Result<(), Error> {
    let site = &plan.site.name;
    let dmn = daemon(root, site);
    let url = format!("http://127.0.0.1:{}/healthcheck", plan.glance_port);
    process::wait_for(
        &format!("glance-api.{site} healthcheck"),
        timeout,
        Duration::from_millis(250),
        || {
            dmn.ensure_running()?;
            Ok(http
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .is_ok_and(|r| r.status().is_success()))
        },
    )
}
