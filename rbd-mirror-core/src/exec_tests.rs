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

// ---- adoption in the destination cloud

mod adopt {
    use super::*;
    use crate::cloud::AdoptTarget;
    use crate::exec::{migrate, plan, Clouds};
    use crate::fake::FakeCloud;
    use crate::plan::Adoption;

    fn adopting(target: AdoptTarget) -> VolumeMigration {
        let mut m = migration(MirrorImageMode::Snapshot);
        m.adopt = Some(Adoption {
            cloud: "site-b-admin".into(),
            target,
            name: Some("disk1".into()),
            bootable: false,
        });
        m
    }

    fn by_pool() -> VolumeMigration {
        adopting(AdoptTarget::CephPool {
            pool: "cinder".into(),
        })
    }

    #[tokio::test]
    async fn adopted_copy_is_renamed_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, w) = pair(World::standard(DEFAULT, data()));
        let (cloud, c) = FakeCloud::new(w.clone());
        let clouds = Clouds {
            destination: Some(cloud),
            source: None,
        };
        let s = migrate(
            &by_pool(),
            a.clone(),
            b.clone(),
            &clouds,
            dir.path(),
            &opts(),
            Arc::new(NullSink),
        )
        .await
        .unwrap();
        let v = s.volume.clone().expect("adopted volume in the summary");
        assert_eq!(v.status, "available");
        assert_eq!(v.name.as_deref(), Some("disk1"));
        assert_eq!(v.rbd_image, format!("volume-{}", v.id));
        {
            let ww = w.lock().unwrap();
            assert!(!ww.sites[1].images.contains_key("cinder/vol1"));
            let copy = &ww.sites[1].images[&format!("cinder/{}", v.rbd_image)];
            assert_eq!(copy.data, ww.sites[0].images["volumes/vol1"].data);
            assert_eq!(ww.sites[0].images["volumes/vol1"].features, DEFAULT);
        }
        let cw = c.lock().unwrap().clone();
        assert_eq!(cw.volumes.len(), 1);
        assert_eq!(cw.volumes[0].1[crate::cloud::MARKER_KEY], s.id);
        // a re-run finds it done, adopts nothing more
        let again = migrate(
            &by_pool(),
            a,
            b,
            &clouds,
            dir.path(),
            &opts(),
            Arc::new(NullSink),
        )
        .await
        .unwrap();
        assert!(again.already_done);
        assert_eq!(again.volume, Some(v));
        assert_eq!(c.lock().unwrap().adopt_calls, 1);
    }

    #[tokio::test]
    async fn member_credentials_are_refused_before_any_change() {
        let dir = tempfile::tempdir().unwrap();
        let world = World::standard(DEFAULT, data());
        let before = world.clone();
        let (a, b, w) = pair(world);
        let (cloud, c) = FakeCloud::new(w.clone());
        c.lock().unwrap().admin = false;
        let clouds = Clouds {
            destination: Some(cloud),
            source: None,
        };
        let e = migrate(
            &by_pool(),
            a.clone(),
            b.clone(),
            &clouds,
            dir.path(),
            &opts(),
            Arc::new(NullSink),
        )
        .await
        .unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, Error::Preflight(_)), "{text}");
        assert!(text.contains("needs an admin role"), "{text}");
        assert!(text.contains("nothing was changed"), "{text}");
        assert_eq!(*w.lock().unwrap(), before);
        assert!(c.lock().unwrap().volumes.is_empty());
        assert_eq!(c.lock().unwrap().adopt_calls, 0);
        // the dry run refuses the same way
        let e = plan(&by_pool(), a, b, &clouds, dir.path(), Arc::new(NullSink))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Preflight(_)), "{e}");
    }

    #[tokio::test]
    async fn wrong_host_and_wrong_pool_are_refused_before_any_change() {
        let dir = tempfile::tempdir().unwrap();
        let world = World::standard(DEFAULT, data());
        let before = world.clone();
        let (a, b, w) = pair(world);
        let (cloud, c) = FakeCloud::new(w.clone());
        c.lock()
            .unwrap()
            .hosts
            .insert("site-b@other#other".into(), "other".into());
        let clouds = Clouds {
            destination: Some(cloud),
            source: None,
        };
        let wrong = adopting(AdoptTarget::Host {
            host: "nohost@ceph#ceph".into(),
        });
        let e = migrate(
            &wrong,
            a.clone(),
            b.clone(),
            &clouds,
            dir.path(),
            &opts(),
            Arc::new(NullSink),
        )
        .await
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("Host nohost@ceph#ceph could not be found"),
            "{e}"
        );
        let other_pool = adopting(AdoptTarget::Host {
            host: "site-b@other#other".into(),
        });
        let e = migrate(
            &other_pool,
            a,
            b,
            &clouds,
            dir.path(),
            &opts(),
            Arc::new(NullSink),
        )
        .await
        .unwrap_err();
        assert!(
            e.to_string().contains("stores into Ceph pool 'other'"),
            "{e}"
        );
        assert_eq!(*w.lock().unwrap(), before);
        assert_eq!(c.lock().unwrap().adopt_calls, 0);
    }

    #[tokio::test]
    async fn lost_adopt_answer_resumes_without_a_second_volume() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, w) = pair(World::standard(DEFAULT, data()));
        let (cloud, c) = FakeCloud::new(w.clone());
        c.lock().unwrap().lose_next_adopt_answer = true;
        let clouds = Clouds {
            destination: Some(cloud),
            source: None,
        };
        let m = by_pool();
        let e = migrate(
            &m,
            a.clone(),
            b.clone(),
            &clouds,
            dir.path(),
            &opts(),
            Arc::new(NullSink),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, Error::Cloud { .. }), "{e}");
        assert!(e.to_string().contains("connection reset"), "{e}");
        let s = migrate(&m, a, b, &clouds, dir.path(), &opts(), Arc::new(NullSink))
            .await
            .unwrap();
        let cw = c.lock().unwrap().clone();
        assert_eq!(
            cw.adopt_calls, 1,
            "the interrupted adoption is found, not redone"
        );
        assert_eq!(cw.volumes.len(), 1);
        assert_eq!(s.volume.unwrap().id, cw.volumes[0].0.id);
    }

    #[tokio::test]
    async fn failed_adopt_record_is_forgotten_and_adoption_redone() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, w) = pair(World::standard(DEFAULT, data()));
        let (cloud, c) = FakeCloud::new(w.clone());
        c.lock().unwrap().error_record_next_adopt = true;
        let clouds = Clouds {
            destination: Some(cloud),
            source: None,
        };
        let m = by_pool();
        migrate(
            &m,
            a.clone(),
            b.clone(),
            &clouds,
            dir.path(),
            &opts(),
            Arc::new(NullSink),
        )
        .await
        .unwrap_err();
        assert!(
            w.lock().unwrap().sites[1]
                .images
                .contains_key("cinder/vol1"),
            "the copy keeps its name after a failed adoption"
        );
        let s = migrate(&m, a, b, &clouds, dir.path(), &opts(), Arc::new(NullSink))
            .await
            .unwrap();
        let cw = c.lock().unwrap().clone();
        assert_eq!(cw.adopt_calls, 2);
        assert_eq!(cw.volumes.len(), 1, "the failed record was forgotten");
        assert_eq!(cw.volumes[0].0.status, "available");
        assert_eq!(s.volume.unwrap().id, cw.volumes[0].0.id);
    }

    #[tokio::test]
    async fn resume_after_a_failure_in_every_operation_still_adopts_once() {
        for op in ["copy", "digest", "disable_mirroring", "update_features"] {
            let dir = tempfile::tempdir().unwrap();
            let mut world = World::standard(DEFAULT, data());
            world.fail_once = Some(op.into());
            let (a, b, w) = pair(world);
            let (cloud, c) = FakeCloud::new(w.clone());
            let clouds = Clouds {
                destination: Some(cloud),
                source: None,
            };
            let m = by_pool();
            let mut runs = 0;
            let s = loop {
                runs += 1;
                assert!(runs < 5, "{op}: no convergence");
                match migrate(
                    &m,
                    a.clone(),
                    b.clone(),
                    &clouds,
                    dir.path(),
                    &opts(),
                    Arc::new(NullSink),
                )
                .await
                {
                    Ok(s) => break s,
                    Err(_) => continue,
                }
            };
            assert!(s.volume.is_some(), "{op}");
            assert_eq!(c.lock().unwrap().volumes.len(), 1, "{op}");
        }
    }

    #[tokio::test]
    async fn plan_without_cloud_is_refused_and_dry_run_lists_adoption() {
        let dir = tempfile::tempdir().unwrap();
        let world = World::standard(DEFAULT, data());
        let before = world.clone();
        let (a, b, w) = pair(world);
        let e = migrate(
            &by_pool(),
            a.clone(),
            b.clone(),
            &Clouds::default(),
            dir.path(),
            &opts(),
            Arc::new(NullSink),
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("--os-cloud"), "{e}");
        let (cloud, c) = FakeCloud::new(w.clone());
        let clouds = Clouds {
            destination: Some(cloud),
            source: None,
        };
        let (p, recorded) = plan(&by_pool(), a, b, &clouds, dir.path(), Arc::new(NullSink))
            .await
            .unwrap();
        assert!(recorded.is_none());
        assert_eq!(p.steps.last().unwrap().kind(), "adopt_volume");
        assert!(p.render().contains("OpenStack tenant admin"));
        assert_eq!(*w.lock().unwrap(), before);
        assert_eq!(c.lock().unwrap().adopt_calls, 0);
    }
}

// ---- registration in the destination Glance (bootable path)

mod register {
    use super::*;
    use crate::exec::{migrate, Clouds};
    use crate::fake::FakeCloud;
    use crate::plan::Registration;

    fn registering(min_disk_gib: u64) -> VolumeMigration {
        let mut m = migration(MirrorImageMode::Journal);
        m.register = Some(Registration {
            cloud: "site-b-admin".into(),
            name: "boot-img".into(),
            snapshot: "snap".into(),
            min_disk_gib,
        });
        m
    }

    #[tokio::test]
    async fn copy_is_snapshotted_protected_and_registered_once() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, w) = pair(World::standard(DEFAULT, data()));
        let (cloud, c) = FakeCloud::new(w.clone());
        let clouds = Clouds {
            destination: Some(cloud),
            source: None,
        };
        let m = registering(3);
        let kinds: Vec<_> =
            crate::plan::Plan::volume(m.clone(), crate::plan::tests::facts(DEFAULT))
                .steps
                .iter()
                .map(|s| s.kind())
                .collect();
        assert_eq!(
            &kinds[kinds.len() - 3..],
            ["snapshot_and_protect", "register_image", "check_min_disk"]
        );
        let s = migrate(
            &m,
            a.clone(),
            b.clone(),
            &clouds,
            dir.path(),
            &opts(),
            Arc::new(NullSink),
        )
        .await
        .unwrap();
        let i = s.image.clone().expect("registered image in the summary");
        assert_eq!(i.status, "active");
        assert_eq!(i.min_disk_gib, 3);
        {
            let ww = w.lock().unwrap();
            let copy = &ww.sites[1].images["cinder/vol1"];
            assert!(copy.snaps.iter().any(|x| x.name == "snap" && x.protected));
            assert_migrated(&ww, DEFAULT);
        }
        let cw = c.lock().unwrap().clone();
        assert_eq!(cw.images.len(), 1);
        assert_eq!(cw.images[0].2, "rbd://fsid-1/cinder/vol1/snap");
        let again = migrate(&m, a, b, &clouds, dir.path(), &opts(), Arc::new(NullSink))
            .await
            .unwrap();
        assert!(again.already_done);
        assert_eq!(c.lock().unwrap().register_calls, 1);
    }

    #[tokio::test]
    async fn lost_register_answer_resumes_without_a_second_image() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, w) = pair(World::standard(DEFAULT, data()));
        let (cloud, c) = FakeCloud::new(w.clone());
        c.lock().unwrap().lose_next_register_answer = true;
        let clouds = Clouds {
            destination: Some(cloud),
            source: None,
        };
        let m = registering(1);
        let e = migrate(
            &m,
            a.clone(),
            b.clone(),
            &clouds,
            dir.path(),
            &opts(),
            Arc::new(NullSink),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, Error::Cloud { .. }), "{e}");
        let s = migrate(&m, a, b, &clouds, dir.path(), &opts(), Arc::new(NullSink))
            .await
            .unwrap();
        let cw = c.lock().unwrap().clone();
        assert_eq!(cw.register_calls, 1);
        assert_eq!(cw.images.len(), 1);
        assert_eq!(s.image.unwrap().id, cw.images[0].0.id);
    }

    #[tokio::test]
    async fn member_credentials_are_refused_before_any_change() {
        let dir = tempfile::tempdir().unwrap();
        let world = World::standard(DEFAULT, data());
        let before = world.clone();
        let (a, b, w) = pair(world);
        let (cloud, c) = FakeCloud::new(w.clone());
        c.lock().unwrap().admin = false;
        let clouds = Clouds {
            destination: Some(cloud),
            source: None,
        };
        let e = migrate(
            &registering(1),
            a,
            b,
            &clouds,
            dir.path(),
            &opts(),
            Arc::new(NullSink),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, Error::Preflight(_)), "{e}");
        assert!(e.to_string().contains("rbd:// location"), "{e}");
        assert_eq!(*w.lock().unwrap(), before);
        assert_eq!(c.lock().unwrap().register_calls, 0);
    }

    #[tokio::test]
    async fn too_small_min_disk_is_an_error_naming_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, w) = pair(World::standard(DEFAULT, data()));
        let (cloud, c) = FakeCloud::new(w.clone());
        c.lock().unwrap().drop_min_disk = true;
        let clouds = Clouds {
            destination: Some(cloud),
            source: None,
        };
        let m = registering(5);
        let e = migrate(
            &m,
            a.clone(),
            b.clone(),
            &clouds,
            dir.path(),
            &opts(),
            Arc::new(NullSink),
        )
        .await
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("min_disk 0 GiB, less than the source volume's 5 GiB"),
            "{text}"
        );
        assert!(text.contains("openstack image set --min-disk 5"), "{text}");
        // fixed by hand, the re-run passes the check without registering again
        for (i, _, _) in &mut c.lock().unwrap().images {
            i.min_disk_gib = 5;
        }
        let s = migrate(&m, a, b, &clouds, dir.path(), &opts(), Arc::new(NullSink))
            .await
            .unwrap();
        assert_eq!(s.image.unwrap().min_disk_gib, 5);
        assert_eq!(c.lock().unwrap().register_calls, 1);
    }
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

#[tokio::test]
async fn a_bootable_volume_id_that_is_not_a_uuid_is_refused_before_any_file_or_call() {
    use crate::exec::{migrate_bootable, plan_bootable, BootableMigration, Clouds};
    use crate::fake::FakeCloud;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("state");
    let (a, b, w) = pair(World::standard(DEFAULT, data()));
    let (cloud, calls) = FakeCloud::new(w.clone());
    let clouds = Clouds {
        destination: Some(cloud.clone()),
        source: Some(cloud),
    };
    for id in ["../escaped", "/tmp/x", "vol-1", ""] {
        let bm = BootableMigration {
            source: crate::spec::ClusterSpec::named("site-a").unwrap(),
            destination: crate::spec::ClusterSpec::named("site-b").unwrap(),
            volume_id: id.into(),
            source_image_pool: crate::spec::PoolSpec::new("images").unwrap(),
            into: crate::spec::PoolSpec::new("glance").unwrap(),
            name: None,
            mode: MirrorImageMode::Journal,
        };
        let e = migrate_bootable(
            &bm,
            a.clone(),
            b.clone(),
            &clouds,
            &dir,
            &opts(),
            Arc::new(NullSink),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&e, Error::Spec(s) if s.what == "Cinder volume id"),
            "{id}: {e}"
        );
        let e = plan_bootable(&bm, a.clone(), b.clone(), &clouds, &dir, Arc::new(NullSink))
            .await
            .unwrap_err();
        assert!(matches!(&e, Error::Spec(_)), "{id}: {e}");
    }
    assert!(!dir.exists(), "a lock or record file was made");
    assert!(!root.path().join("escaped.lock").exists());
    let c = calls.lock().unwrap();
    assert!(c.images.is_empty() && c.register_calls == 0 && c.adopt_calls == 0);
}

/// Run a journal-mode migration of `world`; returns its preflight refusal text after
/// checking that nothing changed and no state was recorded.
async fn refused_by_preflight(world: World) -> String {
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

fn space(max_avail: u64, stored: u64, quota: Option<u64>) -> crate::ops::PoolSpace {
    crate::ops::PoolSpace {
        max_avail,
        stored,
        quota_max_bytes: quota,
    }
}

#[tokio::test]
async fn a_copy_pool_without_room_for_the_image_is_refused_naming_pool_and_bytes() {
    // data() is 4099 bytes: the copy needs them in `cinder`
    let mut world = World::standard(DEFAULT, data());
    world.sites[1]
        .space
        .insert("cinder".into(), space(4000, 0, None));
    let text = refused_by_preflight(world).await;
    assert!(
        text.contains("not enough room in pool 'cinder' on site-b"),
        "{text}"
    );
    assert!(text.contains("for the copy of volumes/vol1"), "{text}");
    assert!(text.contains("needs 4099 bytes"), "{text}");
    assert!(text.contains("3.9 KiB) available"), "{text}");
    assert!(text.contains("free space in pool 'cinder'"), "{text}");
}

#[tokio::test]
async fn a_pool_quota_too_small_for_the_replica_is_refused_naming_the_quota() {
    // plenty of disk, but the quota leaves 5000 - 2000 = 3000 bytes for the replica's 4099
    let mut world = World::standard(DEFAULT, data());
    world.sites[1]
        .space
        .insert("volumes".into(), space(1 << 40, 2000, Some(5000)));
    let text = refused_by_preflight(world).await;
    assert!(
        text.contains("not enough room in pool 'volumes' on site-b for the replica"),
        "{text}"
    );
    assert!(text.contains("3000 bytes (2.9 KiB) available"), "{text}");
    assert!(text.contains("quota 5000 bytes"), "{text}");
    assert!(
        text.contains("osd pool set-quota volumes max_bytes"),
        "{text}"
    );
}

#[tokio::test]
async fn room_for_exactly_the_replica_and_the_copy_is_enough() {
    let mut world = World::standard(DEFAULT, data());
    world.sites[1]
        .space
        .insert("volumes".into(), space(1 << 40, 1000, Some(1000 + 4099)));
    world.sites[1]
        .space
        .insert("cinder".into(), space(4099, 0, None));
    let dir = tempfile::tempdir().unwrap();
    let (a, b, w) = pair(world);
    run(&migration(MirrorImageMode::Journal), a, b, dir.path())
        .await
        .unwrap();
    assert_migrated(&w.lock().unwrap(), DEFAULT);
}

/// A world whose source image keeps its data in pool `ec`, which exists on the source and,
/// when `on_destination`, on the destination.
fn world_with_data_pool(on_destination: bool) -> World {
    let mut world = World::standard(DEFAULT, data());
    world.sites[0]
        .pools
        .insert("ec".into(), PoolMirrorMode::Disabled);
    if on_destination {
        world.sites[1]
            .pools
            .insert("ec".into(), PoolMirrorMode::Disabled);
    }
    world.sites[0]
        .images
        .get_mut("volumes/vol1")
        .unwrap()
        .data_pool = Some("ec".into());
    world
}

#[tokio::test]
async fn a_data_pool_missing_on_the_destination_is_refused_naming_it() {
    let text = refused_by_preflight(world_with_data_pool(false)).await;
    assert!(
        text.contains("site-a:volumes/vol1 keeps its data in pool 'ec' (a data pool), and site-b has no pool 'ec'"),
        "{text}"
    );
    assert!(text.contains("osd pool create ec"), "{text}");
}

#[tokio::test]
async fn the_replica_and_the_copy_both_count_against_the_data_pool() {
    // both write their data into `ec`: 2 x 4099 bytes do not fit in 8000
    let mut world = world_with_data_pool(true);
    world.sites[1]
        .space
        .insert("ec".into(), space(8000, 0, None));
    let text = refused_by_preflight(world).await;
    assert!(
        text.contains("not enough room in pool 'ec' on site-b for the replica and the copy"),
        "{text}"
    );
    assert!(text.contains("needs 8198 bytes"), "{text}");
}

#[tokio::test]
async fn a_copy_keeps_the_source_data_pool() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, w) = pair(world_with_data_pool(true));
    run(&migration(MirrorImageMode::Snapshot), a, b, dir.path())
        .await
        .unwrap();
    let w = w.lock().unwrap();
    assert_eq!(
        w.sites[1].images["cinder/vol1"].data_pool.as_deref(),
        Some("ec"),
        "the copy's data stays in the data pool"
    );
}

#[tokio::test]
async fn allow_overcommit_turns_a_shortage_into_a_warning_and_migrates() {
    let mut world = World::standard(DEFAULT, data());
    world.sites[1]
        .space
        .insert("cinder".into(), space(4000, 0, None));
    let warnings = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = {
        let warnings = warnings.clone();
        move |e: crate::event::Event| {
            if let crate::event::Event::Warning { message } = e {
                warnings.lock().unwrap().push(message);
            }
        }
    };
    let mut m = migration(MirrorImageMode::Journal);
    m.allow_overcommit = true;
    let dir = tempfile::tempdir().unwrap();
    let (a, b, w) = pair(world);
    migrate_volume(&m, a, b, dir.path(), &opts(), Arc::new(sink))
        .await
        .unwrap();
    assert_migrated(&w.lock().unwrap(), DEFAULT);
    let warnings = warnings.lock().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("not enough room in pool 'cinder'")
                && w.contains("--allow-overcommit")),
        "{warnings:?}"
    );
}
