//! Helpers of the migrate_real target (fixture, rbd CLI inspection, the end-state check, one
//! migration run and check), apart so that the entry file holds the tests.

use std::sync::Arc;
use std::time::Duration;

use rbd_mirror_ceph::real::RbdCeph;
use rbd_mirror_core::event::NullSink;
use rbd_mirror_core::exec::{migrate_volume, RunOptions};
use rbd_mirror_core::features::MirrorImageMode;
use rbd_mirror_core::ops::CephOps;
use rbd_mirror_core::plan::VolumeMigration;
use rbd_mirror_core::spec::{ClusterSpec, PoolSpec};
use testenv::probe::{rbd, rbd_json, sha, wait_gone};

/// How long rbd-mirror may take to remove a replica once mirroring of its primary is off.
pub(crate) const REPLICA_GONE_LIMIT: Duration = Duration::from_secs(60);

pub(crate) fn features(site: &str, image: &str) -> Vec<String> {
    let v = rbd_json(site, &["info", image]);
    let mut f: Vec<String> = v["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    f.sort();
    f
}

/// Write `len` bytes of a pattern at `offset` through the library's own image handle.
pub(crate) fn write_at(site: &str, image: &str, offset: u64, len: usize, seed: u8) {
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    let env = testenv::shared().unwrap();
    let conf = if site == env.site_a().name {
        env.site_a().conf.clone()
    } else {
        env.site_b().conf.clone()
    };
    let c =
        librbd::Cluster::connect(&librbd::ClusterConfig::new(site.to_string()).conf(conf)).unwrap();
    let (pool, name) = image.split_once('/').unwrap();
    let img = c.ioctx(pool).unwrap().open_image(name).unwrap();
    img.write_at(offset, &data).unwrap();
    img.flush().unwrap();
}

pub(crate) struct Fixture {
    pub(crate) src: Arc<dyn CephOps>,
    pub(crate) dst: Arc<dyn CephOps>,
    pub(crate) a: String,
    pub(crate) b: String,
    pub(crate) state: tempfile::TempDir,
    pub(crate) _logs: testenv::LogGuard,
}

pub(crate) fn fixture() -> Fixture {
    let env = testenv::shared().expect("testenv (run `testenv up` or `make test`)");
    let logs = env.log_guard();
    let a = env.site_a().name.clone();
    let b = env.site_b().name.clone();
    let src =
        RbdCeph::connect(&ClusterSpec::with_conf(&a, env.site_a().conf.clone()).unwrap()).unwrap();
    let dst =
        RbdCeph::connect(&ClusterSpec::with_conf(&b, env.site_b().conf.clone()).unwrap()).unwrap();
    Fixture {
        src: Arc::new(src),
        dst: Arc::new(dst),
        a,
        b,
        state: tempfile::tempdir().unwrap(),
        _logs: logs,
    }
}

pub(crate) fn migration(f: &Fixture, image: &str, mode: MirrorImageMode) -> VolumeMigration {
    let mut m = VolumeMigration::new(
        ClusterSpec::named(&f.a).unwrap(),
        ClusterSpec::named(&f.b).unwrap(),
        format!("volumes/{image}").parse().unwrap(),
        PoolSpec::new("cinder").unwrap(),
    );
    m.mode = mode;
    m
}

pub(crate) fn assert_end_state(
    f: &Fixture,
    image: &str,
    original_features: &[String],
    source_sha: &str,
) {
    let src = format!("volumes/{image}");
    let copy = format!("cinder/{image}");
    assert_eq!(
        features(&f.a, &src),
        original_features,
        "source features restored exactly"
    );
    let info = rbd_json(&f.a, &["info", &src]);
    let mirroring = info
        .get("mirroring")
        .and_then(|m| m["state"].as_str())
        .unwrap_or("disabled");
    assert_eq!(mirroring, "disabled", "source mirroring disabled");
    let snaps = rbd_json(&f.a, &["snap", "ls", "--all", &src]);
    assert!(
        !snaps
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["namespace"]["type"] == "mirror"),
        "no mirror snapshot left: {snaps}"
    );
    assert_eq!(
        sha(&f.b, &copy),
        source_sha,
        "copy content equals the source"
    );
    assert_eq!(sha(&f.a, &src), source_sha, "source content unchanged");
    assert_eq!(
        features(&f.b, &copy),
        original_features,
        "copy has the source's features"
    );
    wait_gone(&f.b, &src, REPLICA_GONE_LIMIT);
}

pub(crate) async fn migrate_and_check(
    mode: MirrorImageMode,
    size: u64,
    sparse: bool,
    snapshot: bool,
) {
    let f = fixture();
    let image = testenv::unique_name(&format!("mig-{mode}"));
    let spec = format!("volumes/{image}");
    rbd(&f.a, &["create", "--size", &format!("{size}B"), &spec]);
    if sparse {
        write_at(&f.a, &spec, 0, 4096, 1);
        write_at(&f.a, &spec, size / 2, 65536, 2);
        write_at(&f.a, &spec, size - 777, 777, 3);
    } else {
        let mut off = 0;
        while off < size {
            let n = (size - off).min(3 << 20) as usize;
            write_at(&f.a, &spec, off, n, (off >> 20) as u8);
            off += n as u64;
        }
    }
    if snapshot {
        rbd(&f.a, &["snap", "create", &format!("{spec}@before")]);
        write_at(&f.a, &spec, 8192, 4096, 9);
    }
    let original = features(&f.a, &spec);
    assert!(
        original.contains(&"object-map".to_string())
            && original.contains(&"deep-flatten".to_string())
    );
    let source_sha = sha(&f.a, &spec);

    let m = migration(&f, &image, mode);
    let summary = migrate_volume(
        &m,
        f.src.clone(),
        f.dst.clone(),
        f.state.path(),
        &RunOptions::default(),
        Arc::new(NullSink),
    )
    .await
    .unwrap_or_else(|e| panic!("migration of {spec} ({mode}) failed: {e}"));
    assert_eq!(summary.sha256, source_sha);
    assert_eq!(summary.bytes, size);
    assert_end_state(&f, &image, &original, &source_sha);
    if snapshot {
        let snaps = rbd_json(&f.a, &["snap", "ls", &spec]);
        assert_eq!(
            snaps[0]["name"], "before",
            "user snapshot kept on the source"
        );
    }
    rbd(&f.a, &["snap", "purge", &spec]);
    rbd(&f.a, &["rm", "--no-progress", &spec]);
    rbd(&f.b, &["rm", "--no-progress", &format!("cinder/{image}")]);
}
