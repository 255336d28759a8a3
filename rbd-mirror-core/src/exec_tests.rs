//! Unit tests of the executor against the in-memory fake: full runs, resume after a failure at
//! every step, verification failures, preflight refusals that change nothing, locking.

use std::sync::Arc;

use crate::error::Error;
use crate::event::NullSink;
use crate::exec::{migrate_volume, plan_volume};
use crate::fake::fixtures::{data, migration_of, opts, run, DEFAULT};
use crate::fake::{pair, Img, World};
use crate::features::{Features, MirrorImageMode};
use crate::ops::{PoolMirrorMode, SnapshotNamespace};
use crate::plan::VolumeMigration;
use crate::wait::WaitError;

fn migration(mode: MirrorImageMode) -> VolumeMigration {
    migration_of("vol1", mode)
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
        let s = run(&migration(mode), a, b, dir.path()).await.unwrap();
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
        let again = run(&migration(mode), a2, b2, dir.path()).await.unwrap();
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
            let first = run(&migration(mode), a.clone(), b.clone(), dir.path()).await;
            let used = w.lock().unwrap().fail_once.is_none();
            assert_eq!(first.is_err(), used, "{mode} {op}: {first:?}");
            let second = run(&migration(mode), a, b, dir.path()).await;
            assert!(second.is_ok(), "{mode} {op}: {second:?}");
            assert_migrated(&w.lock().unwrap(), DEFAULT);
        }
    }
}

#[tokio::test]
async fn a_corrupt_copy_keeps_the_replica_and_is_redone() {
    for mode in [MirrorImageMode::Journal, MirrorImageMode::Snapshot] {
        let dir = tempfile::tempdir().unwrap();
        let mut world = World::standard(DEFAULT, data());
        world.corrupt_next_copy = true;
        let (a, b, w) = pair(world);
        let m = migration(mode);
        let e = run(&m, a.clone(), b.clone(), dir.path()).await.unwrap_err();
        assert!(matches!(e, Error::VerifyMismatch { .. }), "{mode}: {e}");
        {
            let ww = w.lock().unwrap();
            assert!(
                ww.sites[1].images.contains_key("volumes/vol1"),
                "{mode}: replica kept"
            );
            assert!(
                ww.sites[0].images["volumes/vol1"].mirror.is_some(),
                "{mode}: mirroring still on"
            );
        }
        run(&m, a, b, dir.path()).await.unwrap();
        assert_migrated(&w.lock().unwrap(), DEFAULT);
    }
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
        let e = run(&migration(MirrorImageMode::Journal), a, b, dir.path())
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
    let e = run(&m, a.clone(), b.clone(), dir.path()).await.unwrap_err();
    assert!(matches!(e, Error::Wait(WaitError::Stalled { .. })), "{e}");
    w.lock().unwrap().sites[1].daemon_healthy = false;
    let e = run(&m, a.clone(), b.clone(), dir.path()).await.unwrap_err();
    assert!(
        matches!(e, Error::Wait(WaitError::DaemonDown { .. })),
        "{e}"
    );
    {
        let mut ww = w.lock().unwrap();
        ww.sites[1].daemon_healthy = true;
        ww.stuck = false;
    }
    run(&m, a, b, dir.path()).await.unwrap();
    assert_migrated(&w.lock().unwrap(), DEFAULT);
}

/// Events of a run, kept for the test to read.
#[derive(Default)]
struct Kept(std::sync::Mutex<Vec<crate::event::Event>>);

impl crate::event::EventSink for Kept {
    fn emit(&self, e: crate::event::Event) {
        self.0.lock().unwrap().push(e);
    }
}

#[tokio::test]
async fn a_killed_or_hung_daemon_is_named_long_before_the_stall_limit() {
    use crate::wait::OnDaemonDown;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let mut world = World::standard(DEFAULT, data());
    world.stuck = true;
    // killed or SIGSTOPped: still listed and "healthy" in the service map, no new beacons
    world.sites[1].daemon_silent = true;
    let (a, b, w) = pair(world);
    let m = migration(MirrorImageMode::Journal);
    let mut o = opts();
    o.wait.stall_after = Duration::from_secs(30);
    o.wait.daemon_silent_after = Duration::from_millis(100);
    let t = Instant::now();
    let e = migrate_volume(&m, a.clone(), b.clone(), dir.path(), &o, Arc::new(NullSink))
        .await
        .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(
        matches!(e, Error::Wait(WaitError::DaemonNotResponding { .. })),
        "{e}"
    );
    let text = e.to_string();
    assert!(
        text.contains("rbd-mirror on site-b is down or not responding")
            && text.contains("no beacon for"),
        "{text}"
    );

    // asked to wait: it keeps waiting and says why, until the stall limit
    o.wait.on_daemon_down = OnDaemonDown::Wait;
    o.wait.stall_after = Duration::from_millis(600);
    let kept = Arc::new(Kept::default());
    let e = migrate_volume(&m, a.clone(), b.clone(), dir.path(), &o, kept.clone())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Wait(WaitError::Stalled { .. })), "{e}");
    assert!(
        e.to_string().contains("waiting for rbd-mirror on site-b"),
        "{e}"
    );
    let said = kept.0.lock().unwrap().iter().any(|ev| {
        matches!(ev, crate::event::Event::Progress(p) if p.detail.contains("down or not responding"))
    });
    assert!(said, "the progress says why it waits");

    // the daemon is back: the re-run finishes
    {
        let mut ww = w.lock().unwrap();
        ww.sites[1].daemon_silent = false;
        ww.stuck = false;
    }
    run(&m, a, b, dir.path()).await.unwrap();
    assert_migrated(&w.lock().unwrap(), DEFAULT);
}

#[tokio::test]
async fn a_hung_daemon_is_named_in_time_while_the_map_still_lists_its_killed_predecessor() {
    use crate::wait::OnDaemonDown;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let mut world = World::standard(DEFAULT, data());
    world.stuck = true;
    // a restarted daemon that hangs, listed beside the killed instance it replaced (same id)
    world.sites[1].daemon_silent = true;
    world.sites[1].killed_instance_listed = true;
    let (a, b, _w) = pair(world);
    let m = migration(MirrorImageMode::Snapshot);
    let mut o = opts();
    o.wait.stall_after = Duration::from_secs(30);
    o.wait.daemon_silent_after = Duration::from_millis(100);
    o.wait.health_every = Duration::from_millis(20);
    o.wait.on_daemon_down = OnDaemonDown::Wait;
    o.wait.deadline = Duration::from_secs(3);
    let kept = Arc::new(Kept::default());
    let t = Instant::now();
    let e = migrate_volume(&m, a, b, dir.path(), &o, kept.clone())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Wait(WaitError::Timeout { .. })), "{e}");
    let shown = kept.0.lock().unwrap().iter().find_map(|ev| match ev {
        crate::event::Event::Progress(p) if p.detail.contains("down or not responding") => {
            Some(p.detail.clone())
        }
        _ => None,
    });
    let shown = shown.unwrap_or_else(|| panic!("never shown within {:?}", t.elapsed()));
    assert!(
        shown.contains("b (instance 4100): no beacon for")
            && shown.contains("b (instance 4200): no beacon for"),
        "{shown}"
    );
}

#[tokio::test]
async fn a_missing_source_does_not_hide_the_destinations_problems() {
    // the image and the destination pool are both missing: one refusal names both
    let mut world = World::standard(DEFAULT, data());
    world.sites[0].images.clear();
    world.sites[1].pools.remove("cinder");
    world.sites[1].daemon_healthy = false;
    let text = refused_by_preflight(world).await;
    assert!(
        text.contains("image 'volumes/vol1' does not exist"),
        "{text}"
    );
    assert!(
        text.contains("destination pool 'cinder' does not exist"),
        "{text}"
    );
    assert!(text.contains("no healthy rbd-mirror daemon"), "{text}");

    // the source pool is missing too: the copy's target is still checked
    let mut world = World::standard(DEFAULT, data());
    world.sites[0].pools.remove("volumes");
    world.sites[0].images.clear();
    world.sites[1]
        .images
        .insert("cinder/vol1".into(), Img::new(DEFAULT, vec![1]));
    let text = refused_by_preflight(world).await;
    assert!(
        text.contains("pool 'volumes' does not exist on site-a"),
        "{text}"
    );
    assert!(text.contains("site-b:cinder/vol1 already exists"), "{text}");
}

#[tokio::test]
async fn two_runs_on_one_migration_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let m = migration(MirrorImageMode::Journal);
    let _held = crate::state::StateFile::lock(dir.path(), &m.id(), "x").unwrap();
    let (a, b, _w) = pair(World::standard(DEFAULT, data()));
    let e = run(&m, a, b, dir.path()).await.unwrap_err();
    assert!(matches!(e, Error::Locked { .. }), "{e}");
}

#[tokio::test]
async fn runbook_option_reports_deep_flatten_lost() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, w) = pair(World::standard(DEFAULT, data()));
    let mut m = migration(MirrorImageMode::Journal);
    m.disable_map_features = true;
    let s = run(&m, a, b, dir.path()).await.unwrap();
    assert_eq!(s.lost_features, Features::DEEP_FLATTEN);
    let ww = w.lock().unwrap();
    assert_eq!(
        ww.sites[0].images["volumes/vol1"].features,
        DEFAULT - Features::DEEP_FLATTEN
    );
}

#[tokio::test]
async fn the_source_is_hashed_during_the_copy_and_verify_reads_nothing_again() {
    for mode in [MirrorImageMode::Journal, MirrorImageMode::Snapshot] {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, w) = pair(World::standard(DEFAULT, data()));
        run(&migration(mode), a, b, dir.path()).await.unwrap();
        let w = w.lock().unwrap();
        // the copy's digest comes from the copy itself (read back as written)
        assert_eq!(w.digests, ["a:volumes/vol1"], "{mode}");
        assert_migrated(&w, DEFAULT);
    }
}

#[tokio::test]
async fn snapshot_mode_copies_during_the_sync_journal_mode_after_it() {
    for (mode, during) in [
        (MirrorImageMode::Snapshot, true),
        (MirrorImageMode::Journal, false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut world = World::standard(DEFAULT, data());
        world.sync_polls = 20;
        let (a, b, w) = pair(world);
        run(&migration(mode), a, b, dir.path()).await.unwrap();
        let w = w.lock().unwrap();
        let left = w.copy_started_with_polls_left.unwrap();
        assert_eq!(
            left > 0,
            during,
            "{mode}: copy started with {left} polls left"
        );
        assert_migrated(&w, DEFAULT);
    }
}

#[tokio::test]
async fn a_live_snapshot_migration_copies_after_the_sync() {
    let dir = tempfile::tempdir().unwrap();
    let mut world = World::standard(DEFAULT, data());
    world.sync_polls = 20;
    world.sites[0]
        .images
        .get_mut("volumes/vol1")
        .unwrap()
        .watchers
        .push("client.4242 10.0.0.9:0/1".into());
    let (a, b, w) = pair(world);
    let mut m = migration(MirrorImageMode::Snapshot);
    m.allow_live = true;
    run(&m, a, b, dir.path()).await.unwrap();
    assert_eq!(w.lock().unwrap().copy_started_with_polls_left, Some(0));
}

#[tokio::test]
async fn a_run_resumed_at_verify_hashes_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, w) = pair(World::standard(DEFAULT, data()));
    w.lock().unwrap().fail_once = Some("digest".into()); // the source digest during the copy
    let first = run(
        &migration(MirrorImageMode::Journal),
        a.clone(),
        b.clone(),
        dir.path(),
    )
    .await;
    assert!(first.is_err(), "{first:?}");
    w.lock().unwrap().digests.clear();
    run(&migration(MirrorImageMode::Journal), a, b, dir.path())
        .await
        .unwrap();
    let w = w.lock().unwrap();
    assert_eq!(w.digests.len(), 2, "{:?}", w.digests);
    assert_migrated(&w, DEFAULT);
}

#[tokio::test]
async fn a_destination_daemon_not_yet_connected_refuses_snapshot_mode_and_warns_in_journal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let mut world = World::standard(DEFAULT, data());
    world.sites[0].has_peer = false; // site-b's rbd-mirror has not pinged site-a's pool yet
    let before = world.clone();
    let (a, b, w) = pair(world.clone());
    let e = run(&migration(MirrorImageMode::Snapshot), a, b, dir.path())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Preflight(_)), "{e}");
    assert!(e.to_string().contains("has not connected"), "{e}");
    assert!(e.to_string().contains("rbd-relay pair"), "{e}");
    assert_eq!(*w.lock().unwrap(), before, "nothing changed");

    let warnings = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = {
        let warnings = warnings.clone();
        move |e: crate::event::Event| {
            if let crate::event::Event::Warning { message } = e {
                warnings.lock().unwrap().push(message);
            }
        }
    };
    let (a, b, w) = pair(world);
    migrate_volume(
        &migration(MirrorImageMode::Journal),
        a,
        b,
        dir.path(),
        &opts(),
        Arc::new(sink),
    )
    .await
    .unwrap();
    assert_migrated(&w.lock().unwrap(), DEFAULT);
    assert!(
        warnings
            .lock()
            .unwrap()
            .iter()
            .any(|m| m.contains("has not connected")),
        "{:?}",
        warnings.lock().unwrap()
    );
}

/// Run a journal-mode migration of `world`; returns its preflight refusal text after
/// checking that nothing changed and no state was recorded.
pub(crate) async fn refused_by_preflight(world: World) -> String {
    let dir = tempfile::tempdir().unwrap();
    let before = world.clone();
    let (a, b, w) = pair(world);
    let e = run(&migration(MirrorImageMode::Journal), a, b, dir.path())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Preflight(_)), "{e}");
    assert_eq!(*w.lock().unwrap(), before, "nothing changed");
    assert!(
        std::fs::read_dir(dir.path()).unwrap().all(|e| !e
            .unwrap()
            .path()
            .to_string_lossy()
            .ends_with(".json")),
        "no state recorded"
    );
    e.to_string()
}

mod bad_input;
mod cloud;
mod room;
