//! Unit tests of the executor against the in-memory fake: full runs, resume after a failure at
//! every step, verification failures, preflight refusals that change nothing, locking.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::event::NullSink;
use crate::exec::{migrate_volume, plan_volume, RunOptions};
use crate::fake::{pair, Img, World};
use crate::features::{Features, MirrorImageMode};
use crate::ops::{PoolMirrorMode, SnapshotNamespace};
use crate::plan::VolumeMigration;
use crate::spec::{ClusterSpec, PoolSpec};
use crate::wait::WaitError;

const DEFAULT: Features = Features::LAYERING
    .union(Features::EXCLUSIVE_LOCK)
    .union(Features::OBJECT_MAP)
    .union(Features::FAST_DIFF)
    .union(Features::DEEP_FLATTEN);

fn migration(mode: MirrorImageMode) -> VolumeMigration {
    let mut m = VolumeMigration::new(
        ClusterSpec::named("site-a").unwrap(),
        ClusterSpec::named("site-b").unwrap(),
        "volumes/vol1".parse().unwrap(),
        PoolSpec::new("cinder").unwrap(),
    );
    m.mode = mode;
    m
}

fn opts() -> RunOptions {
    let mut o = RunOptions::default();
    o.wait.poll = Duration::from_millis(1);
    o.wait.health_every = Duration::from_millis(1);
    o.wait.stall_after = Duration::from_millis(200);
    o
}

fn data() -> Vec<u8> {
    (0..4099u32).map(|i| (i * 7 % 251) as u8).collect()
}

fn assert_migrated(w: &World, original: Features) {
    let src = &w.sites[0].images["volumes/vol1"];
    assert_eq!(src.features, original, "source features restored exactly");
    assert_eq!(src.mirror, None, "source mirroring disabled");
    assert!(
        !src.snaps
            .iter()
            .any(|s| matches!(s.namespace, SnapshotNamespace::Mirror { .. })),
        "no mirror snapshot left"
    );
    assert!(
        !w.sites[1].images.contains_key("volumes/vol1"),
        "replica gone"
    );
    let copy = &w.sites[1].images["cinder/vol1"];
    assert_eq!(copy.data, src.data);
    assert_eq!(copy.features, original, "copy has the original features");
}

#[tokio::test]
async fn journal_and_snapshot_migrations_end_clean() {
    for mode in [MirrorImageMode::Journal, MirrorImageMode::Snapshot] {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, w) = pair(World::standard(DEFAULT, data()));
        let s = migrate_volume(
            &migration(mode),
            a,
            b,
            dir.path(),
            &opts(),
            Arc::new(NullSink),
        )
        .await
        .unwrap();
        assert!(!s.already_done);
        assert_eq!(s.bytes, 4099);
        assert_migrated(&w.lock().unwrap(), DEFAULT);
        // a re-run finds everything done
        let (a2, b2) = {
            let w2 = w.clone();
            (
                Arc::new(crate::fake::Fake {
                    side: 0,
                    name: "site-a".into(),
                    world: w2.clone(),
                }),
                Arc::new(crate::fake::Fake {
                    side: 1,
                    name: "site-b".into(),
                    world: w2,
                }),
            )
        };
        let again = migrate_volume(
            &migration(mode),
            a2,
            b2,
            dir.path(),
            &opts(),
            Arc::new(NullSink),
        )
        .await
        .unwrap();
        assert!(again.already_done);
    }
}

#[tokio::test]
async fn resume_after_a_failure_in_every_operation_converges() {
    let ops = [
        "update_features",
        "enable_mirroring",
        "journal_positions",
        "copy",
        "digest",
        "disable_mirroring",
        "remove_snapshot_by_id",
        "stat",
        "image_exists",
    ];
    for mode in [MirrorImageMode::Journal, MirrorImageMode::Snapshot] {
        for op in ops {
            let dir = tempfile::tempdir().unwrap();
            let mut world = World::standard(DEFAULT, data());
            world.sync_polls = 0;
            let (a, b, w) = pair(world);
            w.lock().unwrap().fail_once = Some(op.to_string());
            let first = migrate_volume(
                &migration(mode),
                a.clone(),
                b.clone(),
                dir.path(),
                &opts(),
                Arc::new(NullSink),
            )
            .await;
            let used = w.lock().unwrap().fail_once.is_none();
            assert_eq!(first.is_err(), used, "{mode} {op}: {first:?}");
            let second = migrate_volume(
                &migration(mode),
                a,
                b,
                dir.path(),
                &opts(),
                Arc::new(NullSink),
            )
            .await;
            assert!(second.is_ok(), "{mode} {op}: {second:?}");
            assert_migrated(&w.lock().unwrap(), DEFAULT);
        }
    }
}

#[tokio::test]
async fn a_corrupt_copy_keeps_the_replica_and_is_redone() {
    let dir = tempfile::tempdir().unwrap();
    let mut world = World::standard(DEFAULT, data());
    world.corrupt_next_copy = true;
    let (a, b, w) = pair(world);
    let m = migration(MirrorImageMode::Journal);
    let e = migrate_volume(
        &m,
        a.clone(),
        b.clone(),
        dir.path(),
        &opts(),
        Arc::new(NullSink),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::VerifyMismatch { .. }), "{e}");
    {
        let ww = w.lock().unwrap();
        assert!(
            ww.sites[1].images.contains_key("volumes/vol1"),
            "replica kept"
        );
        assert!(
            ww.sites[0].images["volumes/vol1"].mirror.is_some(),
            "mirroring still on"
        );
    }
    migrate_volume(&m, a, b, dir.path(), &opts(), Arc::new(NullSink))
        .await
        .unwrap();
    assert_migrated(&w.lock().unwrap(), DEFAULT);
}

#[tokio::test]
async fn preflight_refusals_change_nothing() {
    type Breaker = fn(&mut World);
    let cases: Vec<(&str, Breaker)> = vec![
        ("does not exist", |w| {
            w.sites[0].images.clear();
        }),
        ("not primary", |w| {
            w.sites[0].images.get_mut("volumes/vol1").unwrap().mirror =
                Some((MirrorImageMode::Journal, false));
        }),
        ("mirroring is off", |w| {
            w.sites[1]
                .pools
                .insert("volumes".into(), PoolMirrorMode::Disabled);
        }),
        ("no mirror peer", |w| w.sites[1].has_peer = false),
        ("no healthy rbd-mirror", |w| {
            w.sites[1].daemon_healthy = false
        }),
        ("already exists", |w| {
            w.sites[1]
                .images
                .insert("cinder/vol1".into(), Img::new(DEFAULT, vec![1]));
        }),
        ("in use", |w| {
            w.sites[0].images.get_mut("volumes/vol1").unwrap().watchers =
                vec!["10.0.0.1:0/1".into()];
        }),
        ("destination pool", |w| {
            w.sites[1].pools.remove("cinder");
        }),
    ];
    for (needle, breaker) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut world = World::standard(DEFAULT, data());
        breaker(&mut world);
        let before = world.clone();
        let (a, b, w) = pair(world);
        let e = migrate_volume(
            &migration(MirrorImageMode::Journal),
            a,
            b,
            dir.path(),
            &opts(),
            Arc::new(NullSink),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, Error::Preflight(_)), "{needle}: {e}");
        assert!(e.to_string().contains(needle), "{needle}: {e}");
        assert_eq!(*w.lock().unwrap(), before, "{needle}: nothing changed");
        assert!(std::fs::read_dir(dir.path()).unwrap().all(|e| !e
            .unwrap()
            .path()
            .to_string_lossy()
            .ends_with(".json")));
    }
}

#[tokio::test]
async fn dry_run_plans_without_changing_anything() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::standard(DEFAULT, data());
    let before = world.clone();
    let (a, b, w) = pair(world);
    let (plan, state) = plan_volume(
        &migration(MirrorImageMode::Journal),
        a,
        b,
        dir.path(),
        Arc::new(NullSink),
    )
    .await
    .unwrap();
    assert!(state.is_none());
    assert!(plan.render().contains("enable journaling"));
    assert_eq!(*w.lock().unwrap(), before);
}

#[tokio::test]
async fn stalled_sync_and_down_daemon_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut world = World::standard(DEFAULT, data());
    world.stuck = true;
    let (a, b, w) = pair(world);
    let m = migration(MirrorImageMode::Snapshot);
    let e = migrate_volume(
        &m,
        a.clone(),
        b.clone(),
        dir.path(),
        &opts(),
        Arc::new(NullSink),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::Wait(WaitError::Stalled { .. })), "{e}");
    w.lock().unwrap().sites[1].daemon_healthy = false;
    let e = migrate_volume(
        &m,
        a.clone(),
        b.clone(),
        dir.path(),
        &opts(),
        Arc::new(NullSink),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e, Error::Wait(WaitError::DaemonDown { .. })),
        "{e}"
    );
    {
        let mut ww = w.lock().unwrap();
        ww.sites[1].daemon_healthy = true;
        ww.stuck = false;
    }
    migrate_volume(&m, a, b, dir.path(), &opts(), Arc::new(NullSink))
        .await
        .unwrap();
    assert_migrated(&w.lock().unwrap(), DEFAULT);
}

#[tokio::test]
async fn two_runs_on_one_migration_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let m = migration(MirrorImageMode::Journal);
    let _held = crate::state::StateFile::lock(dir.path(), &m.id(), "x").unwrap();
    let (a, b, _w) = pair(World::standard(DEFAULT, data()));
    let e = migrate_volume(&m, a, b, dir.path(), &opts(), Arc::new(NullSink))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Locked { .. }), "{e}");
}

#[tokio::test]
async fn runbook_option_reports_deep_flatten_lost() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, w) = pair(World::standard(DEFAULT, data()));
    let mut m = migration(MirrorImageMode::Journal);
    m.disable_map_features = true;
    let s = migrate_volume(&m, a, b, dir.path(), &opts(), Arc::new(NullSink))
        .await
        .unwrap();
    assert_eq!(s.lost_features, Features::DEEP_FLATTEN);
    let ww = w.lock().unwrap();
    assert_eq!(
        ww.sites[0].images["volumes/vol1"].features,
        DEFAULT - Features::DEEP_FLATTEN
    );
}
