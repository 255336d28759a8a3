//! The volume migration engine against the real local Ceph pair (testenv): journal and
//! snapshot mode, default features with object-map/fast-diff/deep-flatten, user snapshots,
//! sizes not a multiple of the object size, sparse images; preflight refusals that change
//! nothing. Setup and inspection use the `rbd` CLI, an independent view of the result.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rbd_mirror_ceph::real::RbdCeph;
use rbd_mirror_core::error::Error;
use rbd_mirror_core::event::NullSink;
use rbd_mirror_core::exec::{migrate_volume, RunOptions};
use rbd_mirror_core::features::MirrorImageMode;
use rbd_mirror_core::ops::CephOps;
use rbd_mirror_core::plan::VolumeMigration;
use rbd_mirror_core::spec::{ClusterSpec, ImageSpec, PoolSpec};
use serde_json::Value;
use testenv::probe::{exists, rbd, rbd_json, sha, wait_gone};

#[path = "migrate_real/helpers.rs"]
mod helpers;
use helpers::*;

#[tokio::test(flavor = "multi_thread")]
async fn journal_mode_odd_size_full_image() {
    migrate_and_check(MirrorImageMode::Journal, (9 << 20) + 12345, false, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn journal_mode_sparse_image_with_snapshot() {
    migrate_and_check(MirrorImageMode::Journal, 64 << 20, true, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_mode_odd_size_full_image() {
    migrate_and_check(MirrorImageMode::Snapshot, (7 << 20) + 4097, false, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_mode_sparse_image_with_snapshot() {
    migrate_and_check(MirrorImageMode::Snapshot, 48 << 20, true, true).await;
}

/// Preflight refusals on the real clusters: each names the thing, and nothing changes.
///
/// Over 120 lines on purpose: a list of refusals against one source image, then one
/// "nothing changed, no state recorded" check over all of them; split up, each refusal would
/// need its own image and its own check.
#[tokio::test(flavor = "multi_thread")]
async fn preflight_refusals_change_nothing() {
    let f = fixture();
    let image = testenv::unique_name("pre");
    let spec = format!("volumes/{image}");
    rbd(&f.a, &["create", "--size", "8M", &spec]);
    let before = (
        features(&f.a, &spec),
        rbd_json(&f.a, &["info", &spec])["mirroring"].clone(),
    );

    let check = |e: Error, needle: &str| {
        assert!(matches!(e, Error::Preflight(_)), "{needle}: {e}");
        assert!(
            e.to_string().contains(needle),
            "expected '{needle}' in: {e}"
        );
    };
    // missing image
    let m = migration(&f, &format!("{image}-missing"), MirrorImageMode::Journal);
    check(
        migrate_volume(
            &m,
            f.src.clone(),
            f.dst.clone(),
            f.state.path(),
            &RunOptions::default(),
            Arc::new(NullSink),
        )
        .await
        .unwrap_err(),
        "does not exist",
    );
    // destination name taken
    rbd(
        &f.b,
        &["create", "--size", "1M", &format!("cinder/{image}")],
    );
    let m = migration(&f, &image, MirrorImageMode::Journal);
    check(
        migrate_volume(
            &m,
            f.src.clone(),
            f.dst.clone(),
            f.state.path(),
            &RunOptions::default(),
            Arc::new(NullSink),
        )
        .await
        .unwrap_err(),
        "already exists",
    );
    rbd(&f.b, &["rm", "--no-progress", &format!("cinder/{image}")]);
    // destination pool missing
    let mut m = migration(&f, &image, MirrorImageMode::Journal);
    m.into = PoolSpec::new("no-such-pool").unwrap();
    check(
        migrate_volume(
            &m,
            f.src.clone(),
            f.dst.clone(),
            f.state.path(),
            &RunOptions::default(),
            Arc::new(NullSink),
        )
        .await
        .unwrap_err(),
        "no-such-pool",
    );
    // in use: a read-write open registers a watcher
    {
        let env = testenv::shared().unwrap();
        let c = librbd::Cluster::connect(
            &librbd::ClusterConfig::new(f.a.clone()).conf(env.site_a().conf.clone()),
        )
        .unwrap();
        let io = c.ioctx("volumes").unwrap();
        let _open = io.open_image(&image).unwrap();
        let m = migration(&f, &image, MirrorImageMode::Journal);
        check(
            migrate_volume(
                &m,
                f.src.clone(),
                f.dst.clone(),
                f.state.path(),
                &RunOptions::default(),
                Arc::new(NullSink),
            )
            .await
            .unwrap_err(),
            "in use",
        );
    }
    // not primary: the replica of a mirrored image on site-b
    let mirrored = testenv::unique_name("pre-np");
    let mspec = format!("volumes/{mirrored}");
    rbd(&f.a, &["create", "--size", "4M", &mspec]);
    rbd(&f.a, &["mirror", "image", "enable", &mspec, "snapshot"]);
    let t = Instant::now();
    // wait until the replica exists and its mirror record says non-primary
    let replica_ready = || {
        exists(&f.b, &mspec)
            && rbd_json(&f.b, &["info", &mspec])["mirroring"]["primary"] == Value::Bool(false)
    };
    while !replica_ready() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "replica never became a non-primary mirror image"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut m = migration(&f, &mirrored, MirrorImageMode::Snapshot);
    m.source = ClusterSpec::named(&f.b).unwrap();
    m.destination = ClusterSpec::named(&f.a).unwrap();
    check(
        migrate_volume(
            &m,
            f.dst.clone(),
            f.src.clone(),
            f.state.path(),
            &RunOptions::default(),
            Arc::new(NullSink),
        )
        .await
        .unwrap_err(),
        "not primary",
    );
    rbd(&f.a, &["mirror", "image", "disable", &mspec]);
    rbd(&f.a, &["rm", "--no-progress", &mspec]);

    // nothing changed, no state recorded
    let after = (
        features(&f.a, &spec),
        rbd_json(&f.a, &["info", &spec])["mirroring"].clone(),
    );
    assert_eq!(before, after);
    assert!(!exists(&f.b, &spec), "no replica was started");
    let recorded: Vec<_> = std::fs::read_dir(f.state.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .collect();
    assert!(recorded.is_empty(), "no state file written");
    rbd(&f.a, &["rm", "--no-progress", &spec]);
}

/// `copy_trailing` copies only what its `ready` watermark says is final, and hashes what it
/// reads back: the part of the source beyond the watermark is rewritten after the copy has
/// caught up with the watermark and before it is released, so a copier that read ahead
/// would hold the old data. A hole stays a hole in the copy.
#[tokio::test(flavor = "multi_thread")]
async fn trailing_copy_takes_only_released_bytes_and_hashes_what_it_wrote() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let f = fixture();
    let image = testenv::unique_name("trail");
    let (src, copy) = (
        format!("cinder/{image}-src"),
        format!("cinder/{image}-copy"),
    );
    const MIB: u64 = 1 << 20;
    let size = 24 * MIB + 5000; // 7 objects of 4 MiB, the last one short
    rbd(&f.b, &["create", "--size", &format!("{size}B"), &src]);
    write_at(&f.b, &src, 0, (12 * MIB) as usize, 1); // objects 0-2
    write_at(&f.b, &src, 16 * MIB, (size - 16 * MIB) as usize, 2); // object 3 stays a hole
    let released = Arc::new(AtomicU64::new(12 * MIB));
    let done = Arc::new(AtomicU64::new(0));
    let (dst, r, d) = (f.dst.clone(), released.clone(), done.clone());
    let (s, c) = (src.parse().unwrap(), copy.parse().unwrap());
    let copier = std::thread::spawn(move || {
        dst.copy_trailing(
            &s,
            &c,
            &mut || Ok(Some(r.load(Ordering::SeqCst))),
            &mut |n, _| {
                d.store(n, Ordering::SeqCst);
                true
            },
            &mut |_| Ok(()),
        )
    });
    let t = Instant::now();
    while done.load(Ordering::SeqCst) < 12 * MIB {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the released part was not copied"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        done.load(Ordering::SeqCst),
        12 * MIB,
        "copied past the watermark"
    );
    write_at(&f.b, &src, 16 * MIB, (size - 16 * MIB) as usize, 3);
    released.store(u64::MAX, Ordering::SeqCst);
    let digest = copier.join().unwrap().unwrap();
    let want = sha(&f.b, &src);
    assert_eq!(digest, want, "the digest is the source's final content");
    assert_eq!(sha(&f.b, &copy), want, "the copy holds the rewritten data");
    let du = rbd_json(&f.b, &["du", &copy]);
    let used = du["images"][0]["used_size"].as_u64().unwrap();
    assert!(
        used <= size - 4 * MIB,
        "the hole was written: used {used} of {size}"
    );
    rbd(&f.b, &["rm", "--no-progress", &src]);
    rbd(&f.b, &["rm", "--no-progress", &copy]);
}

/// A 1 GiB sparse image with 64 KiB of data every 64 MiB: large enough that a digest or a
/// trailing copy is still reading when it is cancelled, small in the (shared) memstore.
fn large_sparse_image(f: &Fixture, spec: &str) -> u64 {
    const MIB: u64 = 1 << 20;
    let size = 1024 * MIB;
    rbd(&f.b, &["create", "--size", &format!("{size}B"), spec]);
    for (i, offset) in (0..size).step_by((64 * MIB) as usize).enumerate() {
        write_at(&f.b, spec, offset + 3 * MIB, 64 << 10, i as u8);
    }
    size
}

/// Run `call` on another thread with a progress callback that cancels once `cancel_at`
/// bytes are done; returns what it returned, or fails the test if it has not returned 30 s
/// after the cancel (it hangs).
fn cancelled_midway<T: Send + 'static>(
    cancel_at: u64,
    call: impl FnOnce(&mut (dyn FnMut(u64, u64) -> bool + Send)) -> T + Send + 'static,
) -> T {
    use std::sync::atomic::{AtomicBool, Ordering};
    let cancelled = Arc::new(AtomicBool::new(false));
    let flag = cancelled.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut progress = |done: u64, _total: u64| {
            if done >= cancel_at {
                flag.store(true, Ordering::SeqCst);
            }
            !flag.load(Ordering::SeqCst)
        };
        let _ = tx.send(call(&mut progress));
    });
    let t = Instant::now();
    while !cancelled.load(Ordering::SeqCst) {
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "never reached the cancel point"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    rx.recv_timeout(Duration::from_secs(30))
        .expect("did not return within 30 s of the cancel (hung)")
}

/// Cancelling the digest of a large image in the middle returns promptly with `Cancelled`
/// (issue 14 item 2: its reader threads waited forever on the hasher's channels, and verify,
/// delete-source and a failed migration's exit never returned).
#[tokio::test(flavor = "multi_thread")]
async fn a_digest_of_a_large_image_cancelled_midway_returns_promptly() {
    let f = fixture();
    let spec = format!("cinder/{}", testenv::unique_name("digest-cancel"));
    let size = large_sparse_image(&f, &spec);
    let (dst, image) = (f.dst.clone(), spec.parse().unwrap());
    let result = cancelled_midway(size / 3, move |progress| dst.digest(&image, progress));
    rbd(&f.b, &["rm", "--no-progress", &spec]);
    let err = result.expect_err("a cancelled digest must fail");
    assert_eq!(
        err.kind,
        rbd_mirror_core::ops::ErrorKind::Cancelled,
        "{err}"
    );
}

/// The same for the trailing copy, whose threads own their channels: a cancel in the middle
/// of a large image returns promptly with `Cancelled`.
#[tokio::test(flavor = "multi_thread")]
async fn a_trailing_copy_of_a_large_image_cancelled_midway_returns_promptly() {
    let f = fixture();
    let name = testenv::unique_name("trail-cancel");
    let (src, copy) = (format!("cinder/{name}-src"), format!("cinder/{name}-copy"));
    let size = large_sparse_image(&f, &src);
    let (dst, s, c) = (f.dst.clone(), src.parse().unwrap(), copy.parse().unwrap());
    let result = cancelled_midway(size / 3, move |progress| {
        dst.copy_trailing(
            &s,
            &c,
            &mut || Ok(Some(u64::MAX)),
            progress,
            &mut |_| Ok(()),
        )
    });
    rbd(&f.b, &["rm", "--no-progress", &src]);
    if exists(&f.b, &copy) {
        rbd(&f.b, &["rm", "--no-progress", &copy]);
    }
    let err = result.expect_err("a cancelled copy must fail");
    assert_eq!(
        err.kind,
        rbd_mirror_core::ops::ErrorKind::Cancelled,
        "{err}"
    );
}

/// A small pool this file owns on `site`, created when missing (kept between runs: removing
/// a pool needs `mon_allow_pool_delete`, a cluster-wide switch the shared clusters keep off).
fn own_pool(site: &str, pool: &str) {
    let out = Command::new("ceph")
        .args(["--cluster", site, "osd", "pool", "create", pool, "8"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ceph osd pool create {pool}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    rbd(site, &["pool", "init", pool]);
    // the monitors list a new pool's usage (`ceph df`) only after the next PG stats report;
    // until then preflight rightly says "re-run in a few seconds"
    let t = Instant::now();
    loop {
        let out = Command::new("ceph")
            .args(["--cluster", site, "df", "--format", "json"])
            .output()
            .unwrap();
        let df: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let listed = df["pools"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["name"] == pool));
        if listed {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "ceph df never listed the new pool {pool}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Migrate and return preflight's refusal text, checking that no replica was started.
async fn refused(f: &Fixture, m: &VolumeMigration) -> String {
    let e = migrate_volume(
        m,
        f.src.clone(),
        f.dst.clone(),
        f.state.path(),
        &RunOptions::default(),
        Arc::new(NullSink),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::Preflight(_)), "{e}");
    assert!(
        !exists(&f.b, &m.replica().to_string()),
        "no replica was started"
    );
    e.to_string()
}

/// A source image whose data lives in a data pool (`rbd create --data-pool`) migrates into a
/// copy with the same data pool (it was dropped: the copy's data went into its own pool).
#[tokio::test(flavor = "multi_thread")]
async fn a_source_with_a_data_pool_migrates_into_a_copy_with_the_same_data_pool() {
    const DATA_POOL: &str = "relay-test-datapool";
    let f = fixture();
    own_pool(&f.a, DATA_POOL);
    own_pool(&f.b, DATA_POOL);
    let image = testenv::unique_name("datapool");
    let spec = format!("volumes/{image}");
    let size: u64 = 12 << 20;
    rbd(
        &f.a,
        &[
            "create",
            "--size",
            &format!("{size}B"),
            "--data-pool",
            DATA_POOL,
            &spec,
        ],
    );
    write_at(&f.a, &spec, 0, 4 << 20, 1);
    write_at(&f.a, &spec, size - 5000, 5000, 2);
    assert_eq!(rbd_json(&f.a, &["info", &spec])["data_pool"], DATA_POOL);
    let source_sha = sha(&f.a, &spec);
    let m = migration(&f, &image, MirrorImageMode::Snapshot);
    let summary = migrate_volume(
        &m,
        f.src.clone(),
        f.dst.clone(),
        f.state.path(),
        &RunOptions::default(),
        Arc::new(NullSink),
    )
    .await;
    let copy = format!("cinder/{image}");
    let copy_data_pool =
        exists(&f.b, &copy).then(|| rbd_json(&f.b, &["info", &copy])["data_pool"].clone());
    let copy_sha = exists(&f.b, &copy).then(|| sha(&f.b, &copy));
    rbd(&f.a, &["rm", "--no-progress", &spec]);
    if exists(&f.b, &copy) {
        rbd(&f.b, &["rm", "--no-progress", &copy]);
    }
    let summary = summary.unwrap_or_else(|e| panic!("migration of {spec} failed: {e}"));
    assert_eq!(summary.sha256, source_sha);
    assert_eq!(
        copy_sha.as_deref(),
        Some(source_sha.as_str()),
        "copy content"
    );
    assert_eq!(
        copy_data_pool,
        Some(Value::from(DATA_POOL)),
        "the copy keeps the data pool"
    );
}

/// Preflight refuses, changing nothing: a data pool the destination lacks, an image larger
/// than the destination pools' room (provisioned size counts), a pool quota too small.
#[tokio::test(flavor = "multi_thread")]
async fn preflight_refuses_a_missing_data_pool_and_a_destination_without_room() {
    const SOURCE_ONLY: &str = "relay-test-datapool-a-only";
    const QUOTA_POOL: &str = "relay-test-quota";
    let f = fixture();
    // a data pool only the source has
    own_pool(&f.a, SOURCE_ONLY);
    let image = testenv::unique_name("room");
    let spec = format!("volumes/{image}");
    rbd(
        &f.a,
        &["create", "--size", "8M", "--data-pool", SOURCE_ONLY, &spec],
    );
    let text = refused(&f, &migration(&f, &image, MirrorImageMode::Snapshot)).await;
    rbd(&f.a, &["rm", "--no-progress", &spec]);
    assert!(
        text.contains(&format!(
            "keeps its data in pool '{SOURCE_ONLY}' (a data pool), and {} has no pool",
            f.b
        )),
        "{text}"
    );
    // 64 GiB provisioned (sparse, nothing written) against a few GiB of memstore
    rbd(&f.a, &["create", "--size", "64G", &spec]);
    let text = refused(&f, &migration(&f, &image, MirrorImageMode::Snapshot)).await;
    assert!(
        text.contains(&format!(
            "not enough room in pool 'volumes' on {} for the replica",
            f.b
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "not enough room in pool 'cinder' on {} for the copy",
            f.b
        )),
        "{text}"
    );
    assert!(
        text.contains("needs 68719476736 bytes (64.0 GiB)"),
        "{text}"
    );
    rbd(&f.a, &["rm", "--no-progress", &spec]);
    // a copy pool with a 64 MiB quota, a 256 MiB image
    own_pool(&f.b, QUOTA_POOL);
    let quota = Command::new("ceph")
        .args([
            "--cluster",
            &f.b,
            "osd",
            "pool",
            "set-quota",
            QUOTA_POOL,
            "max_bytes",
            "67108864",
        ])
        .status()
        .unwrap();
    assert!(quota.success());
    rbd(&f.a, &["create", "--size", "256M", &spec]);
    let mut m = migration(&f, &image, MirrorImageMode::Snapshot);
    m.into = PoolSpec::new(QUOTA_POOL).unwrap();
    let text = refused(&f, &m).await;
    rbd(&f.a, &["rm", "--no-progress", &spec]);
    assert!(
        text.contains(&format!(
            "not enough room in pool '{QUOTA_POOL}' on {} for the copy",
            f.b
        )),
        "{text}"
    );
    assert!(text.contains("quota 67108864 bytes (64.0 MiB)"), "{text}");
    assert!(
        !exists(&f.b, &format!("{QUOTA_POOL}/{image}")),
        "no copy made"
    );
}

/// Run options whose wait gives up at once: the run stops in the wait for the replica,
/// after it changed the source's features and enabled its mirroring.
fn stop_in_the_wait() -> RunOptions {
    let mut o = RunOptions::default();
    o.wait.deadline = Duration::from_millis(1);
    o.wait.poll = Duration::from_millis(1);
    o
}

/// The source's marker (image metadata `rbd-relay.migration`), when set.
fn marker(site: &str, image: &str) -> Option<String> {
    let out = Command::new("rbd")
        .args([
            "--cluster",
            site,
            "image-meta",
            "get",
            image,
            rbd_mirror_core::preflight::SOURCE_MARKER_KEY,
        ])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn mirroring_state(site: &str, image: &str) -> String {
    rbd_json(site, &["info", image])
        .get("mirroring")
        .and_then(|m| m["state"].as_str())
        .unwrap_or("disabled")
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_state_file_deleted_mid_migration_still_lets_abort_restore_the_true_features() {
    let f = fixture();
    let image = testenv::unique_name("lost-state");
    let spec = format!("volumes/{image}");
    rbd(&f.a, &["create", "--size", "8M", &spec]);
    write_at(&f.a, &spec, 0, 65536, 5);
    let original = features(&f.a, &spec);
    assert!(!original.contains(&"journaling".to_string()));
    let m = migration(&f, &image, MirrorImageMode::Journal);
    let run = |opts: RunOptions| {
        let (src, dst, m, dir) = (f.src.clone(), f.dst.clone(), m.clone(), f.state.path());
        async move { migrate_volume(&m, src, dst, dir, &opts, Arc::new(NullSink)).await }
    };

    run(stop_in_the_wait()).await.unwrap_err();
    assert!(features(&f.a, &spec).contains(&"journaling".to_string()));
    assert_eq!(mirroring_state(&f.a, &spec), "enabled");
    assert!(
        marker(&f.a, &spec).is_some(),
        "marker written before the changes"
    );
    // the state file (and its backup) is lost
    let path = rbd_mirror_core::state::StateFile::path_for(f.state.path(), &m.id());
    std::fs::remove_file(&path).unwrap();
    let _ = std::fs::remove_file(rbd_mirror_core::state::backup_path(&path));

    // a fresh plan takes the originals from the marker, not from the changed image
    run(stop_in_the_wait()).await.unwrap_err();
    let recorded = rbd_mirror_core::state::recorded(f.state.path(), &m.id()).unwrap();
    assert!(!recorded.plan.facts.mirroring_was_enabled);
    assert!(!recorded
        .plan
        .facts
        .features
        .contains(rbd_mirror_core::features::Features::JOURNALING));

    rbd_mirror_core::abort::abort(
        f.state.path(),
        &m.id(),
        f.src.clone(),
        f.dst.clone(),
        Default::default(),
        Arc::new(NullSink),
    )
    .await
    .unwrap();
    assert_eq!(
        features(&f.a, &spec),
        original,
        "the true original features"
    );
    assert_eq!(mirroring_state(&f.a, &spec), "disabled");
    assert_eq!(marker(&f.a, &spec), None, "marker removed");
    wait_gone(&f.b, &spec, REPLICA_GONE_LIMIT);
    rbd(&f.a, &["rm", "--no-progress", &spec]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_under_the_copy_name_not_made_by_this_run_survives_a_rerun_and_an_abort() {
    let f = fixture();
    let image = testenv::unique_name("not-ours");
    let spec = format!("volumes/{image}");
    let copy = format!("cinder/{image}");
    rbd(&f.a, &["create", "--size", "8M", &spec]);
    write_at(&f.a, &spec, 0, 65536, 6);
    let original = features(&f.a, &spec);
    // snapshot mode prepares the copy as the wait starts: the copy step has started
    let m = migration(&f, &image, MirrorImageMode::Snapshot);
    migrate_volume(
        &m,
        f.src.clone(),
        f.dst.clone(),
        f.state.path(),
        &stop_in_the_wait(),
        Arc::new(NullSink),
    )
    .await
    .unwrap_err();
    let recorded = rbd_mirror_core::state::recorded(f.state.path(), &m.id()).unwrap();
    assert!(recorded.copy_started);
    if exists(&f.b, &copy) {
        // the trailing copy got to create its image before the run stopped: recorded
        assert!(recorded.copy_id.is_some());
        rbd(&f.b, &["rm", "--no-progress", &copy]);
    }
    // another migration's copy takes the name
    rbd(&f.b, &["create", "--size", "1M", &copy]);
    write_at(&f.b, &copy, 0, 4096, 7);
    let theirs = rbd_json(&f.b, &["info", &copy])["id"].clone();
    let theirs_sha = sha(&f.b, &copy);

    let e = migrate_volume(
        &m,
        f.src.clone(),
        f.dst.clone(),
        f.state.path(),
        &RunOptions::default(),
        Arc::new(NullSink),
    )
    .await
    .unwrap_err();
    assert!(
        e.to_string().contains("was not created by migration"),
        "{e}"
    );
    assert_eq!(
        rbd_json(&f.b, &["info", &copy])["id"],
        theirs,
        "kept by the re-run"
    );

    let report = rbd_mirror_core::abort::abort(
        f.state.path(),
        &m.id(),
        f.src.clone(),
        f.dst.clone(),
        rbd_mirror_core::abort::AbortOptions {
            discard_verified_copy: true,
            ..Default::default()
        },
        Arc::new(NullSink),
    )
    .await
    .unwrap();
    assert!(
        report.notes.iter().any(|n| n.contains("left alone")),
        "{report:?}"
    );
    assert_eq!(
        rbd_json(&f.b, &["info", &copy])["id"],
        theirs,
        "kept by the abort"
    );
    assert_eq!(sha(&f.b, &copy), theirs_sha);
    assert_eq!(features(&f.a, &spec), original);
    wait_gone(&f.b, &spec, REPLICA_GONE_LIMIT);
    rbd(&f.a, &["snap", "purge", &spec]);
    rbd(&f.a, &["rm", "--no-progress", &spec]);
    rbd(&f.b, &["rm", "--no-progress", &copy]);
}

#[tokio::test(flavor = "multi_thread")]
async fn removal_by_id_leaves_an_image_with_another_id_and_metadata_round_trips() {
    let f = fixture();
    let name = testenv::unique_name("by-id");
    let spec = format!("cinder/{name}");
    rbd(&f.b, &["create", "--size", "1M", &spec]);
    let image: rbd_mirror_core::spec::ImageSpec = spec.parse().unwrap();
    let id = rbd_json(&f.b, &["info", &spec])["id"]
        .as_str()
        .unwrap()
        .to_string();

    let key = "rbd-relay.test";
    assert_eq!(f.dst.metadata_get(&image, key).unwrap(), None);
    f.dst.metadata_set(&image, key, "{\"a\": 1}").unwrap();
    assert_eq!(
        f.dst.metadata_get(&image, key).unwrap().as_deref(),
        Some("{\"a\": 1}")
    );
    f.dst.metadata_remove(&image, key).unwrap();
    f.dst.metadata_remove(&image, key).unwrap(); // not set: fine
    assert_eq!(f.dst.metadata_get(&image, key).unwrap(), None);

    let e = f
        .dst
        .remove_image_with_id(&image, "not-its-id")
        .unwrap_err();
    assert_eq!(e.kind, rbd_mirror_core::ops::ErrorKind::Exists, "{e}");
    assert!(
        exists(&f.b, &spec),
        "an image with another id is left alone"
    );

    f.dst.remove_image_with_id(&image, &id).unwrap();
    assert!(!exists(&f.b, &spec));
    let trash = rbd_json(&f.b, &["trash", "ls", "cinder"]);
    assert!(
        !trash
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == id.as_str()),
        "removed from the trash too: {trash}"
    );
    // gone: removing again is fine
    f.dst.remove_image_with_id(&image, &id).unwrap();
}

/// The engine's connections run librbd within the memory bound (see `real/memory.rs`): no
/// cache, writes from the engine's own buffer, 4 objects at a time in a flatten, 4 MiB
/// journal objects. Read back from librados itself, over whatever the conf file says.
#[test]
fn an_engine_connection_has_no_cache_zero_copy_writes_four_management_ops_and_4_mib_journal_objects(
) {
    let env = testenv::shared().expect("testenv (run `testenv up` or `make test`)");
    let a = env.site_a().name.clone();
    let ceph = rbd_mirror_ceph::real::RbdCeph::connect(
        &ClusterSpec::with_conf(&a, env.site_a().conf.clone()).unwrap(),
    )
    .unwrap();
    let get = |key: &str| ceph.cluster().conf_get(key).unwrap();
    assert_eq!(get("rbd_cache"), "false");
    assert_eq!(get("rbd_disable_zero_copy_writes"), "false");
    assert_eq!(get("rbd_concurrent_management_ops"), "4");
    assert_eq!(get("rbd_journal_order"), "22");
    // librados' own defaults differ, so the values above are this connection's
    let plain = librbd::Cluster::connect(
        &librbd::ClusterConfig::new(a.clone()).conf(env.site_a().conf.clone()),
    )
    .unwrap();
    assert_eq!(
        plain.conf_get("rbd_disable_zero_copy_writes").unwrap(),
        "true"
    );
    assert_eq!(
        plain.conf_get("rbd_concurrent_management_ops").unwrap(),
        "10"
    );
    assert_eq!(plain.conf_get("rbd_journal_order").unwrap(), "24");
}

/// Preflight of a live journal-mode migration reads the destination daemons' running
/// configuration from the manager (`config show rbd-mirror.<gid>`): testenv's daemon polls
/// the journal every 1 s (its conf file says so), which the reply must show.
#[test]
fn the_destination_daemons_running_configuration_is_read_from_the_manager() {
    use rbd_mirror_core::ops::CephOps;
    let env = testenv::shared().expect("testenv (run `testenv up` or `make test`)");
    let b = rbd_mirror_ceph::real::RbdCeph::connect(
        &ClusterSpec::with_conf(&env.site_b().name, env.site_b().conf.clone()).unwrap(),
    )
    .unwrap();
    let configs = b
        .mirror_daemon_config(&PoolSpec::new("volumes").unwrap())
        .unwrap();
    assert!(!configs.is_empty(), "one daemon at least");
    for c in &configs {
        assert!(c.daemon.starts_with("rbd-mirror."), "{c:?}");
        let poll = c
            .non_default
            .get("rbd_mirror_journal_poll_age")
            .map(|v| v.trim().parse::<f64>().unwrap());
        assert_eq!(poll, Some(1.0), "{c:?}");
    }
}

/// Preflight reads a clone (and so its parent) through one pinned read-only handle: one open
/// and one close of the clone instead of one per read (librbd 16.2.15 was seen to abort the
/// process in such a close). Pinned reads answer as unpinned ones, and the pin is gone after.
#[test]
fn preflight_opens_a_clone_once_and_pinned_reads_answer_as_unpinned_ones() {
    let env = testenv::shared().expect("testenv (run `testenv up` or `make test`)");
    let _logs = env.log_guard();
    let (a, b) = (env.site_a(), env.site_b());
    let src = RbdCeph::connect(&ClusterSpec::with_conf(&a.name, a.conf.clone()).unwrap()).unwrap();
    let dst = RbdCeph::connect(&ClusterSpec::with_conf(&b.name, b.conf.clone()).unwrap()).unwrap();
    let parent = testenv::unique_name("pin-parent");
    let child = testenv::unique_name("pin-child");
    let (parent, base, child) = (
        format!("volumes/{parent}"),
        format!("volumes/{parent}@base"),
        format!("volumes/{child}"),
    );
    let run_all = |commands: &[&[&str]]| {
        commands.iter().for_each(|c| {
            rbd(&a.name, c);
        })
    };
    run_all(&[
        &["create", "--size", "8M", &parent],
        &["snap", "create", &base],
        &["snap", "protect", &base],
        &["clone", &base, &child],
    ]);
    let spec: ImageSpec = child.parse().unwrap();

    let reads = || {
        (
            src.stat(&spec).unwrap(),
            src.snapshots(&spec).unwrap(),
            src.parent(&spec).unwrap(),
            src.mirror_image(&spec).unwrap(),
            src.watchers(&spec).unwrap(),
            src.data_pool(&spec).unwrap(),
        )
    };
    let unpinned = reads();
    let before = src.image_opens();
    let pinned = {
        let pin = src.pin_read_only(&spec);
        assert!(pin.holds());
        let pinned = reads();
        assert!(src.image_exists(&spec).unwrap());
        pinned
    };
    assert_eq!(src.image_opens() - before, 1, "six reads through the pin");
    assert_eq!(pinned, unpinned);
    // the pin is released: the next read opens the image again
    src.stat(&spec).unwrap();
    assert_eq!(src.image_opens() - before, 2);
    // a pin of a missing image holds nothing, and the image is still reported missing
    let missing: ImageSpec = format!("{child}-missing").parse().unwrap();
    assert!(!src.pin_read_only(&missing).holds());
    assert!(!src.image_exists(&missing).unwrap());

    // preflight of the clone (refused: its parent is not mirrored) opens the clone once and
    // its parent once (the parent's mirroring)
    let mut m = VolumeMigration::new(
        ClusterSpec::named(&a.name).unwrap(),
        ClusterSpec::named(&b.name).unwrap(),
        spec.clone(),
        PoolSpec::new("cinder").unwrap(),
    );
    m.mode = MirrorImageMode::Snapshot;
    let before = src.image_opens();
    let e = rbd_mirror_core::preflight::check_volume(&m, &src, &dst, &NullSink).unwrap_err();
    assert!(e.to_string().contains("flatten"), "{e}");
    assert_eq!(src.image_opens() - before, 2, "{e}");
    // and so does a migration's whole read of the source (marker, preflight, originals)
    let (src, dst) = (Arc::new(src), Arc::new(dst));
    let state = tempfile::tempdir().unwrap();
    let before = src.image_opens();
    let e = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(migrate_volume(
            &m,
            src.clone(),
            dst,
            state.path(),
            &RunOptions::default(),
            Arc::new(NullSink),
        ))
        .unwrap_err();
    assert!(matches!(e, Error::Preflight(_)), "{e}");
    assert_eq!(src.image_opens() - before, 2, "{e}");

    run_all(&[
        &["rm", "--no-progress", &child],
        &["snap", "unprotect", &base],
        &["snap", "purge", "--no-progress", &parent],
        &["rm", "--no-progress", &parent],
    ]);
}
