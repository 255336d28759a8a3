//! Cancel safety of the public async functions, as a library user meets it: a future dropped
//! at any await point (a `tokio::time::timeout`, a `select!` on Ctrl-C) leaves a state that
//! the same call finishes later, with no lock left behind and the same end state as an
//! undisturbed run. Each public async function of the crate has its test here, but the
//! bootable path's (`exec_tests/cloud/bootable.rs`, beside its fake source cloud) and
//! `request_cutover`'s (`cutover_tests.rs`, beside the live wait it talks to).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use crate::abort::abort;
use crate::event::NullSink;
use crate::exec::migrate_volume;
use crate::fake::fixtures::{data, migration_of, opts, DEFAULT};
use crate::fake::{pair, World};
use crate::features::MirrorImageMode;
use crate::ops::SnapshotNamespace;
use crate::state;

/// Drop points: timeouts that fall on different awaits of a run (every fake Ceph call takes
/// [`OP_DELAY`] behind `spawn_blocking`, and the fake's sync 40 polls).
const DROP_AFTER_MS: [u64; 12] = [0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144];

/// How long each fake Ceph call takes.
const OP_DELAY: Duration = Duration::from_millis(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_dropped_at_any_await_is_finished_by_the_next_call() {
    for mode in [MirrorImageMode::Journal, MirrorImageMode::Snapshot] {
        let dir = tempfile::tempdir().unwrap();
        let mut world = World::standard(DEFAULT, data());
        world.sync_polls = 40;
        world.op_delay = OP_DELAY;
        let (a, b, w) = pair(world);
        let m = migration_of("vol1", mode);
        let mut o = opts();
        o.wait.stall_after = Duration::from_secs(30);
        let mut dropped = 0;
        for ms in DROP_AFTER_MS {
            let run = migrate_volume(&m, a.clone(), b.clone(), dir.path(), &o, Arc::new(NullSink));
            match tokio::time::timeout(Duration::from_millis(ms), run).await {
                Err(_elapsed) => {
                    dropped += 1;
                    // the dropped run holds nothing: its lock is free at once
                    assert!(
                        !state::run_active(dir.path(), &m.id()),
                        "{mode}: lock held after a drop at {ms} ms"
                    );
                }
                Ok(r) => {
                    r.unwrap();
                    break;
                }
            }
        }
        assert!(dropped >= 3, "{mode}: only {dropped} drops landed");
        // the next call finishes it (or finds it finished), to the undisturbed end state
        migrate_volume(&m, a.clone(), b.clone(), dir.path(), &o, Arc::new(NullSink))
            .await
            .unwrap();
        let w = w.lock().unwrap();
        let src = &w.sites[0].images["volumes/vol1"];
        assert_eq!(src.features, DEFAULT, "{mode}: features restored");
        assert_eq!(src.mirror, None, "{mode}: mirroring off");
        assert_eq!(src.data, data(), "{mode}: source untouched");
        assert!(!src
            .snaps
            .iter()
            .any(|s| matches!(s.namespace, SnapshotNamespace::Mirror { .. })));
        assert_eq!(w.sites[1].images["cinder/vol1"].data, data());
        assert!(
            !w.sites[1].images.contains_key("volumes/vol1"),
            "replica gone"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_dropped_at_any_await_is_finished_by_the_next_call() {
    let mut dropped = 0;
    for ms in DROP_AFTER_MS {
        let dir = tempfile::tempdir().unwrap();
        let mut world = World::standard(DEFAULT, data());
        world.stuck = true;
        let (a, b, w) = pair(world);
        let m = migration_of("vol1", MirrorImageMode::Journal);
        crate::fake::fixtures::run(&m, a.clone(), b.clone(), dir.path())
            .await
            .unwrap_err(); // stuck in the wait: features and mirroring changed
        w.lock().unwrap().op_delay = OP_DELAY;
        let id = m.id();
        let undo = abort(
            dir.path(),
            &id,
            a.clone(),
            b.clone(),
            crate::fake::fixtures::abort_opts(),
            Arc::new(NullSink),
        );
        if tokio::time::timeout(Duration::from_millis(ms), undo)
            .await
            .is_err()
        {
            dropped += 1;
        }
        assert!(
            !state::run_active(dir.path(), &m.id()),
            "lock held at {ms} ms"
        );
        abort(
            dir.path(),
            &m.id(),
            a.clone(),
            b.clone(),
            crate::fake::fixtures::abort_opts(),
            Arc::new(NullSink),
        )
        .await
        .unwrap();
        let w = w.lock().unwrap();
        let src = &w.sites[0].images["volumes/vol1"];
        assert_eq!(src.features, DEFAULT, "{ms} ms: features restored");
        assert_eq!(src.mirror, None, "{ms} ms: mirroring off");
        assert_eq!(src.data, data(), "{ms} ms: source untouched");
        assert!(!w.sites[1].images.contains_key("cinder/vol1"), "no copy");
        assert!(state::recorded(dir.path(), &m.id()).unwrap().aborted);
    }
    assert!(dropped >= 3, "only {dropped} aborts were dropped midway");
}

/// Every file of a state directory with its bytes, to prove a dropped call wrote nothing.
fn files(dir: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        std::fs::read(e.path()).unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn adopting(mode: MirrorImageMode) -> crate::plan::VolumeMigration {
    let mut m = migration_of("vol1", mode);
    m.adopt = Some(crate::plan::Adoption {
        cloud: "site-b-admin".into(),
        target: crate::cloud::AdoptTarget::CephPool {
            pool: "cinder".into(),
        },
        name: Some("disk1".into()),
        bootable: false,
        image_metadata: Default::default(),
        no_grow: false,
    });
    m
}

/// A migration that adopts its copy, dropped at any await (also after Cinder adopted it and
/// before its answer came, the fake cloud answering after [`OP_DELAY`]): the next call
/// finishes it and the cloud holds exactly one volume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_that_adopts_dropped_at_any_await_adopts_exactly_once() {
    use crate::exec::{migrate, Clouds};
    use crate::fake::FakeCloud;
    let dir = tempfile::tempdir().unwrap();
    let mut world = World::standard(DEFAULT, data());
    world.sync_polls = 40;
    world.op_delay = OP_DELAY;
    let (a, b, w) = pair(world);
    let (cloud, c) = FakeCloud::new(w.clone());
    let clouds = Clouds {
        destination: Some(cloud),
        source: None,
    };
    let m = adopting(MirrorImageMode::Snapshot);
    let mut o = opts();
    o.wait.stall_after = Duration::from_secs(30);
    let mut dropped = 0;
    let mut ms = 0;
    // small steps, so that drops fall all along the run, the adoption included
    while ms < 2000 {
        let run = migrate(
            &m,
            a.clone(),
            b.clone(),
            &clouds,
            dir.path(),
            &o,
            Arc::new(NullSink),
        );
        match tokio::time::timeout(Duration::from_millis(ms), run).await {
            Err(_) => {
                dropped += 1;
                assert!(
                    !state::run_active(dir.path(), &m.id()),
                    "lock held at {ms} ms"
                );
            }
            Ok(r) => {
                r.unwrap();
                break;
            }
        }
        ms += 3;
    }
    assert!(dropped >= 3, "only {dropped} drops landed");
    let s = migrate(&m, a, b, &clouds, dir.path(), &o, Arc::new(NullSink))
        .await
        .unwrap();
    let v = s.volume.expect("adopted");
    let cw = c.lock().unwrap().clone();
    assert_eq!(cw.volumes.len(), 1, "one volume: {:?}", cw.volumes);
    assert_eq!(cw.volumes[0].0.id, v.id);
    let w = w.lock().unwrap();
    assert_eq!(
        w.sites[1].images[&format!("cinder/{}", v.rbd_image)].data,
        data()
    );
    let src = &w.sites[0].images["volumes/vol1"];
    assert_eq!((src.features, src.mirror), (DEFAULT, None));
}

/// The read-only calls (plans, the cloud checks, the abort's plan, the wait), dropped at any
/// await, change nothing: not the clusters, not the cloud, not the state directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_calls_dropped_at_any_await_change_nothing() {
    use crate::abort::plan_abort;
    use crate::exec::{plan, plan_volume, Clouds};
    use crate::fake::FakeCloud;
    use crate::preflight::{check_adoption, check_registration};
    use crate::wait::wait_for_replica;
    let dir = tempfile::tempdir().unwrap();
    let mut world = World::standard(DEFAULT, data());
    world.stuck = true; // a run that stays in its wait: the abort has something to plan
    let (a, b, w) = pair(world);
    let (cloud, c) = FakeCloud::new(w.clone());
    let clouds = Clouds {
        destination: Some(cloud.clone()),
        source: None,
    };
    let recorded = migration_of("vol1", MirrorImageMode::Journal);
    crate::fake::fixtures::run(&recorded, a.clone(), b.clone(), dir.path())
        .await
        .unwrap_err();
    w.lock().unwrap().op_delay = OP_DELAY;
    let fresh = adopting(MirrorImageMode::Snapshot);
    let mut wait_opts = opts().wait;
    wait_opts.poll = Duration::from_millis(2);
    let (world_before, cloud_before, files_before) = (
        w.lock().unwrap().clone(),
        c.lock().unwrap().clone(),
        files(dir.path()),
    );
    let mut dropped = 0;
    for ms in DROP_AFTER_MS {
        let d = Duration::from_millis(ms);
        let sink = Arc::new(NullSink);
        dropped += usize::from(
            tokio::time::timeout(
                d,
                plan_volume(&fresh, a.clone(), b.clone(), dir.path(), sink.clone()),
            )
            .await
            .is_err(),
        );
        dropped += usize::from(
            tokio::time::timeout(
                d,
                plan(
                    &fresh,
                    a.clone(),
                    b.clone(),
                    &clouds,
                    dir.path(),
                    sink.clone(),
                ),
            )
            .await
            .is_err(),
        );
        dropped += usize::from(
            tokio::time::timeout(d, check_adoption(&fresh, cloud.as_ref()))
                .await
                .is_err(),
        );
        dropped += usize::from(
            tokio::time::timeout(d, check_registration(&fresh, cloud.as_ref()))
                .await
                .is_err(),
        );
        dropped += usize::from(
            tokio::time::timeout(
                d,
                plan_abort(
                    dir.path(),
                    &recorded.id(),
                    b.clone(),
                    crate::fake::fixtures::abort_opts(),
                ),
            )
            .await
            .is_err(),
        );
        let (image, replica) = (recorded.image.clone(), recorded.image.clone());
        dropped += usize::from(
            tokio::time::timeout(
                d,
                wait_for_replica(
                    a.clone(),
                    b.clone(),
                    &image,
                    &replica,
                    MirrorImageMode::Journal,
                    1,
                    &wait_opts,
                    &NullSink,
                ),
            )
            .await
            .is_err(),
        );
        assert_eq!(
            *w.lock().unwrap(),
            world_before,
            "{ms} ms: the clusters changed"
        );
        assert_eq!(
            *c.lock().unwrap(),
            cloud_before,
            "{ms} ms: the cloud changed"
        );
        assert_eq!(
            files(dir.path()),
            files_before,
            "{ms} ms: the state directory changed"
        );
    }
    assert!(dropped >= 10, "only {dropped} drops landed");
    // undisturbed, they answer as before the drops
    let (p, _) = plan_volume(&fresh, a.clone(), b.clone(), dir.path(), Arc::new(NullSink))
        .await
        .unwrap();
    assert!(!p.steps.is_empty());
    plan_abort(
        dir.path(),
        &recorded.id(),
        b,
        crate::fake::fixtures::abort_opts(),
    )
    .await
    .unwrap();
}

/// `cleanup`, `delete_source` and the split roles' `adopt_image`, dropped at any await:
/// the next call finishes the work, to the undisturbed end state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_delete_source_and_adopt_image_dropped_at_any_await_are_finished_by_the_next_call()
{
    use crate::cleanup::cleanup;
    use crate::delete::delete_source;
    use crate::exec::adopt_image;
    use crate::fake::{FakeCloud, Img};
    let dir = tempfile::tempdir().unwrap();
    let mut world = World::standard(DEFAULT, data());
    world.fail_once = Some("disable_mirroring".into()); // verified, the source side left
    let (a, b, w) = pair(world);
    let m = migration_of("vol1", MirrorImageMode::Journal);
    crate::fake::fixtures::run(&m, a.clone(), b.clone(), dir.path())
        .await
        .unwrap_err();
    w.lock().unwrap().op_delay = OP_DELAY;
    let id = m.id();

    let mut dropped = 0;
    for ms in DROP_AFTER_MS {
        let call = cleanup(
            dir.path(),
            &id,
            a.clone(),
            b.clone(),
            false,
            Arc::new(NullSink),
        );
        match tokio::time::timeout(Duration::from_millis(ms), call).await {
            Err(_) => dropped += 1,
            Ok(r) => {
                r.unwrap();
                break;
            }
        }
        assert!(
            !state::run_active(dir.path(), &id),
            "cleanup: lock held at {ms} ms"
        );
    }
    assert!(dropped >= 3, "cleanup: only {dropped} drops landed");
    cleanup(
        dir.path(),
        &id,
        a.clone(),
        b.clone(),
        false,
        Arc::new(NullSink),
    )
    .await
    .unwrap();
    {
        let w = w.lock().unwrap();
        let src = &w.sites[0].images["volumes/vol1"];
        assert_eq!((src.features, src.mirror), (DEFAULT, None));
    }

    let mut dropped = 0;
    for ms in DROP_AFTER_MS {
        let call = delete_source(
            dir.path(),
            &id,
            None,
            a.clone(),
            b.clone(),
            Arc::new(NullSink),
        );
        match tokio::time::timeout(Duration::from_millis(ms), call).await {
            Err(_) => dropped += 1,
            Ok(r) => {
                r.unwrap();
                break;
            }
        }
        assert!(
            !state::run_active(dir.path(), &id),
            "delete: lock held at {ms} ms"
        );
    }
    assert!(dropped >= 3, "delete_source: only {dropped} drops landed");
    delete_source(
        dir.path(),
        &id,
        None,
        a.clone(),
        b.clone(),
        Arc::new(NullSink),
    )
    .await
    .unwrap();
    {
        let w = w.lock().unwrap();
        assert!(
            !w.sites[0].images.contains_key("volumes/vol1"),
            "source deleted"
        );
        assert_eq!(w.sites[1].images["cinder/vol1"].data, data(), "copy kept");
        drop(w);
    }

    // the tenant's adoption alone, in a world of its own
    let (_, _, w) = pair(World::standard(DEFAULT, data()));
    w.lock().unwrap().sites[1]
        .images
        .insert("cinder/x".into(), Img::new(DEFAULT, data()));
    // Cinder adopts at once and answers 400 ms later: a drop at 10 ms loses the answer
    // (with 50 ms, the 10 ms timer of a loaded machine fired after the answer)
    w.lock().unwrap().op_delay = Duration::from_millis(400);
    let (cloud, c) = FakeCloud::new(w.clone());
    let image: crate::spec::ImageSpec = "cinder/x".parse().unwrap();
    let adoption = crate::plan::Adoption {
        cloud: "site-b-admin".into(),
        target: crate::cloud::AdoptTarget::CephPool {
            pool: "cinder".into(),
        },
        name: Some("disk1".into()),
        bootable: false,
        image_metadata: Default::default(),
        no_grow: false,
    };
    let call = adopt_image(cloud.clone(), &image, &adoption, Arc::new(NullSink));
    assert!(
        tokio::time::timeout(Duration::from_millis(10), call)
            .await
            .is_err(),
        "the adoption answered before the drop"
    );
    assert_eq!(
        c.lock().unwrap().volumes.len(),
        1,
        "adopted, the answer lost"
    );
    let v = adopt_image(cloud, &image, &adoption, Arc::new(NullSink))
        .await
        .unwrap();
    let c = c.lock().unwrap();
    assert_eq!(c.volumes.len(), 1, "{:?}", c.volumes);
    assert_eq!(c.volumes[0].0.id, v.id);
}

/// A batch dropped at any await (its tasks are aborted with it): the next call finishes
/// every migration of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_dropped_at_any_await_is_finished_by_the_next_call() {
    use crate::batch::migrate_batch;
    use crate::exec::Clouds;
    use crate::fake::Img;
    let dir = tempfile::tempdir().unwrap();
    let mut world = World::standard(DEFAULT, data());
    world.sites[0]
        .images
        .insert("volumes/vol2".into(), Img::new(DEFAULT, data()));
    world.sync_polls = 20;
    world.op_delay = OP_DELAY;
    let (a, b, w) = pair(world);
    let ms_list = [
        migration_of("vol1", MirrorImageMode::Journal),
        migration_of("vol2", MirrorImageMode::Snapshot),
    ];
    let mut o = opts();
    o.wait.stall_after = Duration::from_secs(30);
    let clouds = Clouds::default();
    let batch = || {
        migrate_batch(
            ms_list.to_vec(),
            a.clone(),
            b.clone(),
            &clouds,
            dir.path(),
            &o,
            2,
            |_| Arc::new(NullSink),
            |_| {},
        )
    };
    let mut dropped = 0;
    for ms in DROP_AFTER_MS {
        if tokio::time::timeout(Duration::from_millis(ms), batch())
            .await
            .is_err()
        {
            dropped += 1;
            // the aborted tasks let their locks go once they are gone (an abort lands at the
            // task's next await: a state write in flight, whose fsync took seconds on a
            // loaded disk in CI, finishes first)
            for m in &ms_list {
                let t = std::time::Instant::now();
                while state::run_active(dir.path(), &m.id()) {
                    assert!(
                        t.elapsed() < Duration::from_secs(10),
                        "lock held after a drop at {ms} ms"
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    }
    assert!(dropped >= 3, "only {dropped} drops landed");
    let items = batch().await;
    assert!(items.iter().all(|i| i.error.is_none()), "{items:?}");
    let w = w.lock().unwrap();
    for name in ["vol1", "vol2"] {
        let src = &w.sites[0].images[&format!("volumes/{name}")];
        assert_eq!((src.features, src.mirror), (DEFAULT, None), "{name}");
        assert_eq!(
            w.sites[1].images[&format!("cinder/{name}")].data,
            data(),
            "{name}"
        );
    }
}

/// The split roles' `register_image`, dropped after Glance registered the image and before
/// its answer came (the fake cloud answers 200 ms later): the next call returns that image
/// and registers nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_image_dropped_after_glance_acted_registers_once() {
    use crate::exec::register_image;
    use crate::fake::{FakeCloud, Img};
    use crate::ops::CephOps;
    let (_, b, w) = pair(World::standard(DEFAULT, data()));
    w.lock().unwrap().sites[1]
        .images
        .insert("glance/x".into(), Img::new(DEFAULT, data()));
    let image: crate::spec::ImageSpec = "glance/x".parse().unwrap();
    b.create_snapshot(&image, "snap").unwrap();
    b.protect_snapshot(&image, "snap").unwrap();
    // every call answers 200 ms after it acted (with 50 ms, the timers of a loaded machine
    // fired after the answer)
    w.lock().unwrap().op_delay = Duration::from_millis(200);
    let (cloud, c) = FakeCloud::new(w.clone());
    let r = crate::plan::Registration {
        cloud: "site-b-admin".into(),
        name: "boot".into(),
        snapshot: "snap".into(),
        min_disk_gib: 1,
    };
    // drops ever later, until one lands after Glance acted (the Ceph reads before it take
    // 200 ms each, too)
    let mut ms = 10;
    while c.lock().unwrap().images.is_empty() {
        assert!(
            ms < 4000,
            "no drop landed between Glance's act and its answer"
        );
        let call = register_image(cloud.clone(), b.clone(), &image, &r, Arc::new(NullSink));
        assert!(
            tokio::time::timeout(Duration::from_millis(ms), call)
                .await
                .is_err(),
            "the registration answered before a drop at {ms} ms"
        );
        ms += 20;
    }
    let i = register_image(cloud, b, &image, &r, Arc::new(NullSink))
        .await
        .unwrap();
    let c = c.lock().unwrap();
    assert_eq!((c.register_calls, c.images.len()), (1, 1));
    assert_eq!(c.images[0].0.id, i.id);
}
