//! Helpers of the rbd_wrapper target: the choice of clusters, scratch images removed on drop,
//! data patterns and waits, apart so that the entry file holds the tests.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use librbd::{
    Cluster, ClusterConfig, Image, ImageOptions, IoCtx, MirrorImageState, SnapNamespaceType,
};

// ======================================================================================
// THE single place choosing the clusters.
// Default: the project's own pair, `testenv::shared()` (site-a -> site-b, mirrored pool
// `volumes`, plain pool `cinder`). `RBD_RELAY_TEST_PAIR=ref` uses the reference pair that
// ran during development instead (ref-a -> ref-b, mirrored `volumes`, plain `volumes2`).
// ======================================================================================
pub(crate) struct Pair {
    pub(crate) a: ClusterConfig,
    pub(crate) b: ClusterConfig,
    pub(crate) mirrored: &'static str,
    pub(crate) plain: &'static str,
    pub(crate) a_keyring: PathBuf,
}

pub(crate) fn pair() -> Pair {
    if std::env::var("RBD_RELAY_TEST_PAIR").as_deref() == Ok("ref") {
        return Pair {
            a: ClusterConfig::new("ref-a"),
            b: ClusterConfig::new("ref-b"),
            mirrored: "volumes",
            plain: "volumes2",
            a_keyring: "/etc/ceph/ref-a.client.admin.keyring".into(),
        };
    }
    let env = testenv::shared().expect("testenv::shared(): the local Ceph pair");
    let (a, b) = (env.site_a(), env.site_b());
    Pair {
        a: ClusterConfig::new(&a.name).conf(&a.conf),
        b: ClusterConfig::new(&b.name).conf(&b.conf),
        mirrored: env.pools().volumes,
        plain: env.pools().cinder,
        a_keyring: a.admin_keyring.clone(),
    }
}

pub(crate) fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("wrap-{prefix}-{}-{nanos:x}", std::process::id())
}

pub(crate) fn connect(cfg: &ClusterConfig) -> Cluster {
    Cluster::connect(cfg).unwrap_or_else(|e| panic!("connect {}: {e}", cfg.cluster_name))
}

pub(crate) const MIB: u64 = 1 << 20;

pub(crate) fn opts(features: u64, order: u32) -> ImageOptions {
    ImageOptions {
        features: Some(features),
        order: Some(order),
        data_pool: None,
        clone_format: None,
    }
}

/// Removes the image when dropped (disabling mirroring and removing snapshots first), so
/// a failing test leaves nothing behind.
pub(crate) struct Scratch<'a> {
    pub(crate) io: &'a IoCtx,
    pub(crate) name: String,
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        if let Ok(img) = Image::open(self.io, &self.name) {
            if img
                .mirror_info()
                .map(|i| i.state == MirrorImageState::Enabled)
                .unwrap_or(false)
            {
                let _ = img.mirror_disable(true);
            }
            if let Ok(snaps) = img.snapshots() {
                for s in snaps {
                    if s.namespace == SnapNamespaceType::User {
                        let _ = img.snap_unprotect(&s.name);
                    }
                    let _ = img.snap_remove_by_id(s.id);
                }
            }
        }
        let _ = self.io.remove_image(&self.name);
    }
}

pub(crate) fn scratch<'a>(io: &'a IoCtx, prefix: &str, size: u64, o: &ImageOptions) -> Scratch<'a> {
    let name = unique(prefix);
    io.create_image(&name, size, o)
        .unwrap_or_else(|e| panic!("create {name}: {e}"));
    Scratch { io, name }
}

pub(crate) fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

pub(crate) fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
