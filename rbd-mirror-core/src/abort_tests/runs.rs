//! Aborting a run: what is undone at each point, what is never removed, refusals that change
//! nothing, and re-runs that converge.

use std::sync::Arc;

use crate::abort::{abort, AbortOptions};
use crate::cleanup::cleanup;
use crate::error::Error;
use crate::event::NullSink;
use crate::exec::{migrate, Clouds};
use crate::fake::fixtures::{data, migration_of as migration, opts, run, DEFAULT};
use crate::fake::{pair, FakeCloud, Img, World};
use crate::features::{Features, MirrorImageMode};
use crate::plan::Adoption;
use crate::state::{self, StateFile};

use super::assert_undone;

#[tokio::test]
async fn abort_mid_wait_undoes_everything_and_a_rerun_is_a_no_op() {
    for mode in [MirrorImageMode::Journal, MirrorImageMode::Snapshot] {
        let dir = tempfile::tempdir().unwrap();
        let mut world = World::standard(DEFAULT, data());
        world.stuck = true;
        let (a, b, w) = pair(world);
        let m = migration("vol1", mode);
        let e = run(&m, a.clone(), b.clone(), dir.path()).await.unwrap_err();
        assert!(matches!(e, Error::Wait(_)), "{e}");
        assert!(w.lock().unwrap().sites[1]
            .images
            .contains_key("volumes/vol1"));

        let r = abort(
            dir.path(),
            &m.id(),
            a.clone(),
            b.clone(),
            crate::fake::fixtures::abort_opts(),
            Arc::new(NullSink),
        )
        .await
        .unwrap();
        assert!(
            r.undone.iter().any(|u| u.contains("disabled mirroring")),
            "{mode}: {r:?}"
        );
        if mode == MirrorImageMode::Journal {
            assert!(
                r.undone.iter().any(|u| u.contains("restored the features")),
                "{r:?}"
            );
        }
        assert_undone(&w.lock().unwrap(), DEFAULT);
        let st = state::recorded(dir.path(), &m.id()).unwrap();
        assert!(st.aborted);
        assert_eq!(st.outcome, "aborted");

        // again: nothing left to undo, still a success, nothing changes
        let before = w.lock().unwrap().clone();
        let again = abort(
            dir.path(),
            &m.id(),
            a.clone(),
            b.clone(),
            crate::fake::fixtures::abort_opts(),
            Arc::new(NullSink),
        )
        .await
        .unwrap();
        assert!(again.undone.is_empty(), "{again:?}");
        assert_eq!(*w.lock().unwrap(), before);

        // a later migrate of the same image starts a fresh plan and finishes
        w.lock().unwrap().stuck = false;
        let s = run(&m, a, b, dir.path()).await.unwrap();
        assert!(!s.already_done);
        assert!(!state::recorded(dir.path(), &m.id()).unwrap().aborted);
        assert!(w.lock().unwrap().sites[1]
            .images
            .contains_key("cinder/vol1"));
    }
}

#[tokio::test]
async fn abort_removes_an_unverified_copy_this_run_made() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, w) = pair(World::standard(DEFAULT, data()));
    // snapshot mode: verify digests both images then (journal mode may have hashed the
    // source during the wait already, and the injected failure would hit that instead)
    w.lock().unwrap().fail_once = Some("digest".into());
    let m = migration("vol1", MirrorImageMode::Snapshot);
    run(&m, a.clone(), b.clone(), dir.path()).await.unwrap_err();
    assert!(w.lock().unwrap().sites[1]
        .images
        .contains_key("cinder/vol1"));
    let r = abort(
        dir.path(),
        &m.id(),
        a,
        b,
        crate::fake::fixtures::abort_opts(),
        Arc::new(NullSink),
    )
    .await
    .unwrap();
    assert!(
        r.undone[0].contains("removed the copy site-b:cinder/vol1"),
        "{r:?}"
    );
    assert_undone(&w.lock().unwrap(), DEFAULT);
}

#[tokio::test]
async fn abort_never_removes_an_image_this_run_did_not_create() {
    let dir = tempfile::tempdir().unwrap();
    let mut world = World::standard(DEFAULT, data());
    world.stuck = true;
    let (a, b, w) = pair(world);
    let m = migration("vol1", MirrorImageMode::Journal);
    run(&m, a.clone(), b.clone(), dir.path()).await.unwrap_err();
    // someone else puts an image where the copy would go
    w.lock().unwrap().sites[1].images.insert(
        "cinder/vol1".into(),
        Img::new(Features::LAYERING, vec![1; 10]),
    );
    let r = abort(
        dir.path(),
        &m.id(),
        a,
        b,
        crate::fake::fixtures::abort_opts(),
        Arc::new(NullSink),
    )
    .await
    .unwrap();
    assert!(!r.undone.iter().any(|u| u.contains("copy")), "{r:?}");
    assert_eq!(
        w.lock().unwrap().sites[1].images["cinder/vol1"].data,
        vec![1; 10]
    );
}

#[tokio::test]
async fn a_verified_copy_needs_the_flag_and_the_refusal_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, w) = pair(World::standard(DEFAULT, data()));
    w.lock().unwrap().fail_once = Some("disable_mirroring".into());
    let m = migration("vol1", MirrorImageMode::Journal);
    run(&m, a.clone(), b.clone(), dir.path()).await.unwrap_err();
    let before = w.lock().unwrap().clone();
    let state_before = state::recorded(dir.path(), &m.id()).unwrap();
    let e = abort(
        dir.path(),
        &m.id(),
        a.clone(),
        b.clone(),
        crate::fake::fixtures::abort_opts(),
        Arc::new(NullSink),
    )
    .await
    .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("already verified") && text.contains("rbd-relay cleanup"),
        "{text}"
    );
    assert!(text.contains("--discard-verified-copy"), "{text}");
    assert_eq!(*w.lock().unwrap(), before);
    assert_eq!(state::recorded(dir.path(), &m.id()).unwrap(), state_before);

    abort(
        dir.path(),
        &m.id(),
        a,
        b,
        AbortOptions {
            discard_verified_copy: true,
            ..crate::fake::fixtures::abort_opts()
        },
        Arc::new(NullSink),
    )
    .await
    .unwrap();
    assert_undone(&w.lock().unwrap(), DEFAULT);
}

#[tokio::test]
async fn abort_converges_after_a_failure_in_every_undo_operation() {
    for op in [
        "image_exists",
        "snapshots",
        "remove_image",
        "mirror_image",
        "disable_mirroring",
        "remove_snapshot_by_id",
        "stat",
        "update_features",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, w) = pair(World::standard(DEFAULT, data()));
        w.lock().unwrap().fail_once = Some("digest".into());
        let m = migration("vol1", MirrorImageMode::Snapshot);
        run(&m, a.clone(), b.clone(), dir.path()).await.unwrap_err();
        // snapshot mode with a changed feature set, so every undo step has work
        {
            let mut ww = w.lock().unwrap();
            let i = ww.sites[0].images.get_mut("volumes/vol1").unwrap();
            i.features -= Features::FAST_DIFF;
        }
        let mut st = state::recorded(dir.path(), &m.id()).unwrap();
        st.plan.steps.insert(
            1,
            crate::plan::Step::EnableFeatures {
                change: crate::features::FeatureChange::default(),
            },
        );
        st.next_step += 1;
        StateFile::lock(dir.path(), &m.id(), "x")
            .unwrap()
            .save(&st)
            .unwrap();

        w.lock().unwrap().fail_once = Some(op.to_string());
        let first = abort(
            dir.path(),
            &m.id(),
            a.clone(),
            b.clone(),
            crate::fake::fixtures::abort_opts(),
            Arc::new(NullSink),
        )
        .await;
        let used = w.lock().unwrap().fail_once.is_none();
        assert_eq!(first.is_err(), used, "{op}: {first:?}");
        abort(
            dir.path(),
            &m.id(),
            a,
            b,
            crate::fake::fixtures::abort_opts(),
            Arc::new(NullSink),
        )
        .await
        .unwrap_or_else(|e| panic!("{op}: {e}"));
        assert_undone(&w.lock().unwrap(), DEFAULT);
    }
}

#[tokio::test]
async fn abort_leaves_mirroring_that_was_on_before() {
    let dir = tempfile::tempdir().unwrap();
    let with_journal = DEFAULT | Features::JOURNALING;
    let mut world = World::standard(with_journal, data());
    world.sites[0]
        .images
        .get_mut("volumes/vol1")
        .unwrap()
        .mirror = Some((MirrorImageMode::Journal, true));
    world.stuck = true;
    let (a, b, w) = pair(world);
    let m = migration("vol1", MirrorImageMode::Journal);
    run(&m, a.clone(), b.clone(), dir.path()).await.unwrap_err();
    let r = abort(
        dir.path(),
        &m.id(),
        a,
        b,
        crate::fake::fixtures::abort_opts(),
        Arc::new(NullSink),
    )
    .await
    .unwrap();
    assert!(r.undone.is_empty(), "{r:?}");
    let ww = w.lock().unwrap();
    let src = &ww.sites[0].images["volumes/vol1"];
    assert_eq!(src.mirror, Some((MirrorImageMode::Journal, true)));
    assert_eq!(src.features, with_journal);
}

#[tokio::test]
async fn abort_refuses_after_adoption_and_when_finished() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, w) = pair(World::standard(DEFAULT, data()));
    let mut m = migration("vol1", MirrorImageMode::Journal);
    m.adopt = Some(Adoption {
        cloud: "site-b-admin".into(),
        target: crate::cloud::AdoptTarget::CephPool {
            pool: "cinder".into(),
        },
        name: None,
        bootable: false,
        image_metadata: Default::default(),
        no_grow: false,
    });
    let (cloud, _) = FakeCloud::new(w.clone());
    let clouds = Clouds {
        destination: Some(cloud),
        source: None,
    };
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
    .unwrap();
    let before = w.lock().unwrap().clone();
    let e = abort(
        dir.path(),
        &m.id(),
        a.clone(),
        b.clone(),
        AbortOptions {
            discard_verified_copy: true,
            ..crate::fake::fixtures::abort_opts()
        },
        Arc::new(NullSink),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("owns it now"), "{e}");
    assert_eq!(*w.lock().unwrap(), before);

    let dir = tempfile::tempdir().unwrap();
    let m = migration("vol1", MirrorImageMode::Journal);
    let (a, b, _w) = pair(World::standard(DEFAULT, data()));
    run(&m, a.clone(), b.clone(), dir.path()).await.unwrap();
    let e = abort(
        dir.path(),
        &m.id(),
        a,
        b,
        crate::fake::fixtures::abort_opts(),
        Arc::new(NullSink),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("is finished"), "{e}");
}

/// A copy to be grown for Cinder (4099 bytes, not a whole GiB): a failure at the grow
/// leaves nothing sent to the cloud, so abort (with the flag: the copy is verified) removes
/// the copy and puts the source back; without the abort, a re-run grows and adopts it.
#[tokio::test]
async fn a_failure_at_the_grow_is_aborted_with_the_copy_removed_or_resumed_to_a_grown_volume() {
    for abort_it in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, w) = pair(World::standard(DEFAULT, data()));
        let mut m = migration("vol1", MirrorImageMode::Journal);
        m.adopt = Some(Adoption {
            cloud: "site-b-admin".into(),
            target: crate::cloud::AdoptTarget::CephPool {
                pool: "cinder".into(),
            },
            name: None,
            bootable: false,
            image_metadata: Default::default(),
            no_grow: false,
        });
        let (cloud, c) = FakeCloud::new(w.clone());
        let clouds = Clouds {
            destination: Some(cloud),
            source: None,
        };
        w.lock().unwrap().fail_once = Some("grow".into());
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
        assert!(e.to_string().contains("injected failure"), "{e}");
        let r = state::recorded(dir.path(), &m.id()).unwrap();
        assert_eq!(r.plan.steps[r.next_step].kind(), "grow_copy");
        assert_eq!(c.lock().unwrap().adopt_calls, 0);
        if abort_it {
            abort(
                dir.path(),
                &m.id(),
                a,
                b,
                AbortOptions {
                    discard_verified_copy: true,
                    ..crate::fake::fixtures::abort_opts()
                },
                Arc::new(NullSink),
            )
            .await
            .unwrap();
            assert_undone(&w.lock().unwrap(), DEFAULT);
        } else {
            let s = migrate(&m, a, b, &clouds, dir.path(), &opts(), Arc::new(NullSink))
                .await
                .unwrap();
            assert_eq!(s.grown_to, Some(1 << 30));
            let v = s.volume.unwrap();
            let ww = w.lock().unwrap();
            let copy = &ww.sites[1].images[&format!("cinder/{}", v.rbd_image)];
            assert_eq!(copy.size(), 1 << 30);
            assert_eq!(copy.data, data());
        }
    }
}

#[tokio::test]
async fn unknown_ids_and_held_locks_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, w) = pair(World::standard(DEFAULT, data()));
    let e = abort(
        dir.path(),
        "nope",
        a.clone(),
        b.clone(),
        crate::fake::fixtures::abort_opts(),
        Arc::new(NullSink),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::UnknownMigration { .. }), "{e}");
    assert!(e.to_string().contains("rbd-relay list"), "{e}");
    let e = cleanup(
        dir.path(),
        "nope",
        a.clone(),
        b.clone(),
        false,
        Arc::new(NullSink),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::UnknownMigration { .. }), "{e}");

    let m = migration("vol1", MirrorImageMode::Journal);
    {
        let mut world = World::standard(DEFAULT, data());
        world.stuck = true;
        *w.lock().unwrap() = world;
    }
    run(&m, a.clone(), b.clone(), dir.path()).await.unwrap_err();
    let _held = StateFile::lock(dir.path(), &m.id(), "volumes/vol1").unwrap();
    let e = abort(
        dir.path(),
        &m.id(),
        a,
        b,
        crate::fake::fixtures::abort_opts(),
        Arc::new(NullSink),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::Locked { .. }), "{e}");
}

/// Adds a user snapshot named `name` to the source `volumes/vol1`, as rbd-mirror's journal
/// image sync makes its sync points there.
fn add_source_snapshot(w: &mut World, name: &str) {
    w.next_snap += 1;
    let id = w.next_snap;
    let src = w.sites[0].images.get_mut("volumes/vol1").unwrap();
    src.snaps.push(crate::ops::SnapshotInfo {
        id,
        name: name.into(),
        namespace: crate::ops::SnapshotNamespace::User,
        protected: false,
    });
}

fn source_snapshot_names(w: &World) -> Vec<String> {
    w.sites[0].images["volumes/vol1"]
        .snaps
        .iter()
        .map(|s| s.name.clone())
        .collect()
}

/// Seen in CI: an abort mid-sync (journal mode) left rbd-mirror's sync point
/// `.rbd-mirror.<uuid>.<uuid>` on the source (the daemon records a sync point, then makes
/// the snapshot; a disable in between misses it), and the source then could not be removed.
/// The abort removes such a sync point once mirroring is off; a user snapshot with the same
/// prefix from before the migration is the user's and kept; while mirroring is on (the
/// cleanup refused), a sync point is the daemon's and untouched.
#[tokio::test]
async fn abort_mid_sync_removes_a_sync_point_left_by_rbd_mirror_and_keeps_older_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let mut world = World::standard(DEFAULT, data());
    world.stuck = true;
    add_source_snapshot(
        &mut world,
        ".rbd-mirror.0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9.11111111-2222-4333-8444-555555555555",
    );
    add_source_snapshot(&mut world, "users-own");
    let (a, b, w) = pair(world);
    let m = migration("vol1", MirrorImageMode::Journal);
    let e = run(&m, a.clone(), b.clone(), dir.path()).await.unwrap_err();
    assert!(matches!(e, Error::Wait(_)), "{e}");
    let sync_point =
        ".rbd-mirror.0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9.5f3d2a1b-0c9e-4d8f-a7b6-c5d4e3f2a1b0";
    add_source_snapshot(&mut w.lock().unwrap(), sync_point);
    // a user's snapshot made meanwhile, named with the prefix but not as the daemon names
    add_source_snapshot(
        &mut w.lock().unwrap(),
        ".rbd-mirror.users-own.made-meanwhile",
    );

    // the refused cleanup changes nothing: mirroring is on, the sync point is the daemon's
    let e = cleanup(
        dir.path(),
        &m.id(),
        a.clone(),
        b.clone(),
        false,
        Arc::new(NullSink),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::CleanupRefusedUnverified { .. }), "{e}");
    assert!(source_snapshot_names(&w.lock().unwrap()).contains(&sync_point.to_string()));

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
    assert_undone(&w, DEFAULT);
    assert_eq!(
        source_snapshot_names(&w),
        vec![
            ".rbd-mirror.0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9.11111111-2222-4333-8444-555555555555"
                .to_string(),
            "users-own".into(),
            ".rbd-mirror.users-own.made-meanwhile".into(),
        ],
        "the sync point removed, the snapshots from before kept"
    );
}

/// rbd-mirror can make its sync point just after the disable it raced (measured: up to
/// 0.14 s later): the abort keeps looking for `sync_point_watch`. Without the watch, such a
/// late sync point stays behind (what the watch is for).
#[tokio::test]
async fn a_sync_point_made_just_after_the_disable_is_removed_by_the_aborts_watch() {
    let late =
        ".rbd-mirror.0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9.9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d";
    for (watch, left) in [
        (std::time::Duration::from_secs(1), vec![]),
        (std::time::Duration::ZERO, vec![late.to_string()]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut world = World::standard(DEFAULT, data());
        world.stuck = true;
        let (a, b, w) = pair(world);
        let m = migration("vol1", MirrorImageMode::Journal);
        run(&m, a.clone(), b.clone(), dir.path()).await.unwrap_err();
        // made at the second look at the source's snapshots once its mirroring is off
        w.lock().unwrap().late_sync_point = Some((2, late.to_string()));
        let started = std::time::Instant::now();
        abort(
            dir.path(),
            &m.id(),
            a.clone(),
            b.clone(),
            AbortOptions {
                sync_point_watch: watch,
                ..crate::fake::fixtures::abort_opts()
            },
            Arc::new(NullSink),
        )
        .await
        .unwrap();
        assert!(started.elapsed() >= watch, "{watch:?}");
        // a later look: the daemon has made its sync point by now
        crate::ops::CephOps::snapshots(a.as_ref(), &m.image).unwrap();
        let w = w.lock().unwrap();
        assert_eq!(w.late_sync_point, None, "the daemon made it ({watch:?})");
        assert_eq!(source_snapshot_names(&w), left, "watch {watch:?}");
    }
}
