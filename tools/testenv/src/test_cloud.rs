//! The destination cloud that real-cloud tests of every crate run against, picked in one
//! place: the test environment's (`shared_with_openstack()`, started when it is not running),
//! or an external stack named by `RBD_RELAY_TEST_CLOUDS_YAML` with `RBD_RELAY_TEST_*`
//! variables (defaults: the development reference stack `osks-admin`, `osks-demo`, ...).
//! Test support: it panics with the reason when the cloud cannot be had.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The cloud a test talks to and the Ceph cluster behind it.
#[derive(Debug, Clone)]
pub struct TestCloud {
    /// clouds.yaml with both clouds.
    pub clouds_yaml: PathBuf,
    /// Cloud name of the admin user.
    pub admin_cloud: String,
    /// Cloud name of a member (non-admin) user.
    pub member_cloud: String,
    /// Cinder pool host for manage-existing (`site-b@ceph#ceph`).
    pub cinder_host: String,
    /// Ceph cluster (name) the cloud stores into.
    pub ceph_cluster: String,
    /// Pool of Cinder volumes.
    pub volume_pool: String,
    /// Pool of Glance images.
    pub image_pool: String,
    fsid: OnceLock<String>,
}

impl TestCloud {
    /// The Ceph cluster's fsid (the `rbd://FSID/...` location prefix); with an external
    /// stack `RBD_RELAY_TEST_FSID` or `ceph --cluster CLUSTER fsid`.
    ///
    /// # Panics
    /// When `ceph fsid` fails.
    pub fn fsid(&self) -> &str {
        self.fsid.get_or_init(|| {
            if let Ok(f) = std::env::var("RBD_RELAY_TEST_FSID") {
                return f;
            }
            let out = Command::new("ceph")
                .args(["--cluster", &self.ceph_cluster, "fsid"])
                .output()
                .expect("run ceph fsid");
            assert!(out.status.success(), "ceph fsid: {out:?}");
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        })
    }
}

/// The cloud tests use (see the module docs); the environment is started on first use.
///
/// # Panics
/// When the test environment cannot be started.
pub fn test_cloud() -> &'static TestCloud {
    static CLOUD: OnceLock<TestCloud> = OnceLock::new();
    CLOUD.get_or_init(|| match std::env::var("RBD_RELAY_TEST_CLOUDS_YAML") {
        Ok(path) => from_vars(path),
        // testenv blocks (and its HTTP client is blocking): keep it off any async runtime
        Err(_) => std::thread::spawn(from_testenv)
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e)),
    })
}

fn from_testenv() -> TestCloud {
    let env = crate::shared_with_openstack().expect("test environment with OpenStack");
    let os = env
        .openstack()
        .expect("the test environment has no OpenStack clouds");
    let d = &os.destination;
    TestCloud {
        clouds_yaml: os.clouds_yaml.clone(),
        admin_cloud: d.admin_cloud.clone(),
        member_cloud: d.member_cloud.clone(),
        cinder_host: d.cinder_host.clone(),
        ceph_cluster: d.ceph_cluster.clone(),
        volume_pool: d.volume_pool.clone(),
        image_pool: d.image_pool.clone(),
        fsid: OnceLock::from(d.fsid.clone()),
    }
}

fn from_vars(clouds_yaml: String) -> TestCloud {
    let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    TestCloud {
        clouds_yaml: PathBuf::from(clouds_yaml),
        admin_cloud: var("RBD_RELAY_TEST_ADMIN_CLOUD", "osks-admin"),
        member_cloud: var("RBD_RELAY_TEST_MEMBER_CLOUD", "osks-demo"),
        cinder_host: var("RBD_RELAY_TEST_CINDER_HOST", "osks@ceph#ceph"),
        ceph_cluster: var("RBD_RELAY_TEST_CEPH_CLUSTER", "osks"),
        volume_pool: var("RBD_RELAY_TEST_VOLUME_POOL", "volumes"),
        image_pool: var("RBD_RELAY_TEST_IMAGE_POOL", "images"),
        fsid: OnceLock::new(),
    }
}
