//! Unit tests of the handover by clone (demote, promote, clone, verify, flatten, release,
//! remove the replica) and of the live wait for the cutover, against the in-memory fake.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::exec::{cutover_request_path, request_cutover};
use crate::fake::fixtures::{data, migration_of, run, DEFAULT};
use crate::fake::{pair, World, FAKE_PEER_CLIENT};
use crate::features::MirrorImageMode;
use crate::ops::SnapshotNamespace;
use crate::plan::{Handover, Live, Plan, Step, VolumeMigration};

/// The kinds of the steps of [`clone_migration`]'s plan, in order.
fn step_kinds(mode: MirrorImageMode) -> Vec<&'static str> {
    Plan::volume(
        clone_migration(mode),
        crate::plan::test_support::facts(DEFAULT),
    )
    .steps
    .iter()
    .map(Step::kind)
    .collect()
}

fn clone_migration(mode: MirrorImageMode) -> VolumeMigration {
    let mut m = migration_of("vol1", mode);
    m.handover = Handover::Clone;
    m
}

/// The end state of a handover by clone: the source as it was (primary, not mirrored, its
/// features, its data), the copy flattened with the source's data and features, no replica.
fn assert_handed_over(w: &World) {
    let src = &w.sites[0].images["volumes/vol1"];
    assert_eq!(src.features, DEFAULT, "source features restored exactly");
    assert_eq!(
        src.mirror, None,
        "source mirroring disabled (writable again)"
    );
    assert_eq!(src.data, data(), "source data untouched");
    assert!(
        !src.snaps
            .iter()
            .any(|s| matches!(s.namespace, SnapshotNamespace::Mirror { .. })),
        "no mirror snapshot left on the source"
    );
    assert!(
        !w.sites[1].images.contains_key("volumes/vol1"),
        "replica removed"
    );
    let copy = &w.sites[1].images["cinder/vol1"];
    assert_eq!(copy.data, src.data);
    assert_eq!(copy.features, DEFAULT, "the copy has the original features");
    assert_eq!(copy.parent, None, "the copy is flattened");
}

#[test]
fn a_clone_plan_demotes_promotes_clones_then_verifies_flattens_and_cleans_up() {
    let m = clone_migration(MirrorImageMode::Journal);
    let p = Plan::volume(m, crate::plan::test_support::facts(DEFAULT));
    let kinds: Vec<_> = p.steps.iter().map(Step::kind).collect();
    assert_eq!(
        kinds,
        [
            "preflight",
            "enable_features",
            "enable_mirroring",
            "wait_for_replica",
            "demote_source",
            "promote_replica",
            "clone_replica",
            "verify_handover",
            "flatten_copy",
            "release_source",
            "restore_features",
            "remove_replica"
        ]
    );
    assert_eq!(p.cutover_window(), Some(4..=6));
}

#[test]
fn a_live_clone_plan_waits_for_the_cutover_and_adopts_before_verifying() {
    let mut m = clone_migration(MirrorImageMode::Snapshot);
    m.live = Some(Live { idle_for_ms: 2000 });
    m.adopt = Some(crate::plan::Adoption {
        cloud: "dst".into(),
        target: crate::cloud::AdoptTarget::CephPool {
            pool: "cinder".into(),
        },
        name: None,
        bootable: false,
        image_metadata: Default::default(),
        no_grow: false,
    });
    let p = Plan::volume(m, crate::plan::test_support::facts(DEFAULT));
    let kinds: Vec<_> = p.steps.iter().map(Step::kind).collect();
    let at = |k: &str| kinds.iter().position(|x| *x == k).unwrap();
    assert!(at("wait_for_replica") < at("wait_for_cutover"));
    assert!(at("wait_for_cutover") < at("demote_source"));
    assert!(at("clone_replica") < at("adopt_volume"));
    assert!(at("adopt_volume") < at("verify_handover"));
    assert!(at("verify_handover") < at("release_source"));
    assert!(at("flatten_copy") < at("remove_replica"));
    assert_eq!(
        p.cutover_window(),
        Some(at("demote_source")..=at("adopt_volume"))
    );
}

#[test]
fn an_image_mirrored_before_or_bound_for_glance_is_copied_not_demoted() {
    let mut facts = crate::plan::test_support::facts(DEFAULT);
    facts.mirroring_was_enabled = true;
    let p = Plan::volume(clone_migration(MirrorImageMode::Journal), facts);
    assert!(p.steps.contains(&Step::CopyReplica));
    assert!(!p.steps.contains(&Step::DemoteSource));
}

#[tokio::test]
async fn cold_clone_handovers_end_clean_in_both_modes_and_a_rerun_finds_them_done() {
    for mode in [MirrorImageMode::Journal, MirrorImageMode::Snapshot] {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, w) = pair(World::standard(DEFAULT, data()));
        let m = clone_migration(mode);
        let s = run(&m, a.clone(), b.clone(), dir.path()).await.unwrap();
        assert!(!s.already_done);
        assert_handed_over(&w.lock().unwrap());
        let digests = w.lock().unwrap().digests.clone();
        assert!(
            digests
                .iter()
                .any(|d| d == "b:volumes/vol1@rbd-relay-handover"),
            "{mode}: the replica's snapshot was verified: {digests:?}"
        );
        let again = run(&m, a, b, dir.path()).await.unwrap();
        assert!(again.already_done, "{mode}");
    }
}

#[tokio::test]
async fn a_cold_journal_clone_demotes_once_the_initial_sync_is_over() {
    // rbd-mirror writes the peer's commit position only every rbd_mirror_journal_commit_age
    // (5 s by default): a handover by clone does not wait for it, its promotion waits for
    // the replay up to the demotion, and verify_handover proves the content
    let dir = tempfile::tempdir().unwrap();
    let (a, b, w) = pair(World::standard(DEFAULT, data()));
    w.lock().unwrap().peer_committed = Some(1);
    let m = clone_migration(MirrorImageMode::Journal);
    tokio::time::timeout(Duration::from_secs(10), run(&m, a, b, dir.path()))
        .await
        .expect("the clone handover did not wait for the commit position")
        .unwrap();
    assert_handed_over(&w.lock().unwrap());
}

#[tokio::test]
async fn a_cold_journal_copy_waits_for_the_commit_position() {
    // the copy reads the replica itself: it must hold everything first
    let dir = tempfile::tempdir().unwrap();
    let (a, b, w) = pair(World::standard(DEFAULT, data()));
    w.lock().unwrap().peer_committed = Some(1);
    let m = migration_of("vol1", MirrorImageMode::Journal);
    assert_eq!(m.handover, Handover::Copy);
    let e = run(&m, a.clone(), b.clone(), dir.path()).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("has not replayed up to the master position"),
        "{e}"
    );
    assert!(
        !w.lock().unwrap().sites[1]
            .images
            .contains_key("cinder/vol1"),
        "copied before the replica held everything"
    );
    w.lock().unwrap().peer_committed = None;
    run(&m, a, b, dir.path()).await.unwrap();
}

#[tokio::test]
async fn a_failure_in_every_operation_of_the_cutover_converges_on_rerun() {
    let ops = [
        "demote",
        "promote",
        "create_snapshot",
        "protect_snapshot",
        "clone_image",
        "digest_snapshot",
        "flatten",
        "parent",
        "disable_mirroring",
        "unprotect_snapshot",
        "remove_snapshot",
        "remove_image_with_id",
    ];
    for mode in [MirrorImageMode::Journal, MirrorImageMode::Snapshot] {
        for op in ops {
            let dir = tempfile::tempdir().unwrap();
            let mut world = World::standard(DEFAULT, data());
            world.sync_polls = 0;
            let (a, b, w) = pair(world);
            w.lock().unwrap().fail_once = Some(op.to_string());
            let m = clone_migration(mode);
            let first = run(&m, a.clone(), b.clone(), dir.path()).await;
            let used = w.lock().unwrap().fail_once.is_none();
            assert_eq!(first.is_err(), used, "{mode} {op}: {first:?}");
            if first.is_err() {
                let ww = w.lock().unwrap();
                let src = &ww.sites[0].images["volumes/vol1"];
                assert_eq!(src.data, data(), "{mode} {op}: source data untouched");
            }
            let second = run(&m, a, b, dir.path()).await;
            assert!(second.is_ok(), "{mode} {op}: {second:?}");
            assert_handed_over(&w.lock().unwrap());
        }
    }
}

#[tokio::test]
async fn a_failed_clone_rolls_the_cutover_back_and_the_source_is_primary_again() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, w) = pair(World::standard(DEFAULT, data()));
    w.lock().unwrap().fail_once = Some("clone_image".into());
    let m = clone_migration(MirrorImageMode::Journal);
    let e = run(&m, a, b, dir.path()).await.unwrap_err();
    assert!(matches!(e, Error::Ceph { .. }), "{e}");
    let ww = w.lock().unwrap();
    let src = &ww.sites[0].images["volumes/vol1"];
    assert!(
        matches!(src.mirror, Some((_, true))),
        "the source is primary again: {:?}",
        src.mirror
    );
    // demoted again and removed: rbd-mirror never replays a replica that was primary
    // (split-brain); it syncs a new one from the source for the re-run
    assert!(
        !ww.sites[1].images.contains_key("volumes/vol1"),
        "the promoted replica is gone: {:?}",
        ww.sites[1].images.get("volumes/vol1").map(|r| &r.mirror)
    );
    assert!(
        !ww.sites[1].images.contains_key("cinder/vol1"),
        "no clone left"
    );
    let state = crate::state::recorded(dir.path(), &m.id()).unwrap();
    assert_eq!(
        state.plan.steps[state.next_step],
        Step::WaitForReplica,
        "a re-run waits for the new replica, then starts the cutover again"
    );
}

#[tokio::test]
async fn a_live_migration_waits_while_the_source_is_in_use_and_cuts_over_once_idle() {
    let dir = tempfile::tempdir().unwrap();
    let mut world = World::standard(DEFAULT, data());
    // an instance, and rbd-mirror's own watch (which never holds the cutover back)
    world.sites[0]
        .images
        .get_mut("volumes/vol1")
        .unwrap()
        .watchers = vec![
        "client.admin@10.0.0.5:0/1".into(),
        format!("{FAKE_PEER_CLIENT}@10.0.0.9:0/2"),
    ];
    let (a, b, w) = pair(world);
    let mut m = clone_migration(MirrorImageMode::Journal);
    m.allow_live = true;
    m.live = Some(Live { idle_for_ms: 50 });
    let run = tokio::spawn({
        let (m, a, b, d) = (m.clone(), a.clone(), b.clone(), dir.path().to_path_buf());
        async move { run(&m, a, b, &d).await }
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    {
        let ww = w.lock().unwrap();
        assert!(
            matches!(ww.sites[0].images["volumes/vol1"].mirror, Some((_, true))),
            "still primary while in use"
        );
        assert!(!run.is_finished());
    }
    // the instance shuts down; rbd-mirror's watch stays
    w.lock().unwrap().sites[0]
        .images
        .get_mut("volumes/vol1")
        .unwrap()
        .watchers
        .retain(|x| x.starts_with(FAKE_PEER_CLIENT));
    let s = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the cutover started once the source was idle")
        .unwrap()
        .unwrap();
    assert!(!s.already_done);
    let mut ww = w.lock().unwrap().clone();
    ww.sites[0]
        .images
        .get_mut("volumes/vol1")
        .unwrap()
        .watchers
        .clear();
    assert_handed_over(&ww);
}

/// The source's primary mirror snapshots, oldest first.
fn primary_mirror_snapshots(w: &World) -> Vec<u64> {
    w.sites[0].images["volumes/vol1"]
        .snaps
        .iter()
        .filter(|s| matches!(s.namespace, SnapshotNamespace::Mirror { primary: true, .. }))
        .map(|s| s.id)
        .collect()
}

#[tokio::test]
async fn a_live_snapshot_migration_keeps_the_replica_close_and_demotes_only_once_it_synced_the_idle_source(
) {
    let dir = tempfile::tempdir().unwrap();
    let mut world = World::standard(DEFAULT, data());
    world.sites[0]
        .images
        .get_mut("volumes/vol1")
        .unwrap()
        .watchers = vec!["client.admin@10.0.0.5:0/1".into()];
    let (a, b, w) = pair(world);
    let mut m = clone_migration(MirrorImageMode::Snapshot);
    m.allow_live = true;
    m.live = Some(Live { idle_for_ms: 50 });
    let run = tokio::spawn({
        let (m, a, b, d) = (m.clone(), a.clone(), b.clone(), dir.path().to_path_buf());
        async move { run(&m, a, b, &d).await }
    });
    // in use: mirror snapshots while the replica keeps up
    tokio::time::sleep(Duration::from_millis(600)).await;
    let in_use = primary_mirror_snapshots(&w.lock().unwrap());
    assert!(
        in_use.len() >= 2,
        "the enabling snapshot and at least one taken in use: {in_use:?}"
    );
    // rbd-mirror falls behind, and the instance shuts down
    {
        let mut ww = w.lock().unwrap();
        ww.stuck = true;
        ww.sites[0]
            .images
            .get_mut("volumes/vol1")
            .unwrap()
            .watchers
            .clear();
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    {
        let ww = w.lock().unwrap();
        let idle = primary_mirror_snapshots(&ww);
        assert!(
            idle.last() > in_use.last(),
            "a mirror snapshot of the idle source: {idle:?} after {in_use:?}"
        );
        assert!(
            matches!(ww.sites[0].images["volumes/vol1"].mirror, Some((_, true))),
            "idle for longer than --idle-for, but still primary while the replica lacks the last snapshot"
        );
        assert!(!run.is_finished());
    }
    w.lock().unwrap().stuck = false;
    let s = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the cutover went ahead once the replica synced")
        .unwrap()
        .unwrap();
    assert!(!s.already_done);
    assert_handed_over(&w.lock().unwrap());
}

/// The run of a live migration (journal mode, a minute's idle time) whose source an instance
/// holds (a watch), once it waits for the cutover: its state directory, both sites, the
/// world, the running task and the migration's id.
async fn live_run_waiting_for_the_cutover() -> (
    tempfile::TempDir,
    Arc<crate::fake::Fake>,
    Arc<crate::fake::Fake>,
    Arc<std::sync::Mutex<World>>,
    tokio::task::JoinHandle<crate::error::Result<crate::exec::Summary>>,
    String,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut world = World::standard(DEFAULT, data());
    world.sites[0]
        .images
        .get_mut("volumes/vol1")
        .unwrap()
        .watchers = vec!["client.admin@10.0.0.5:0/1".into()];
    let (a, b, w) = pair(world);
    let mut m = clone_migration(MirrorImageMode::Journal);
    m.allow_live = true;
    m.live = Some(Live {
        idle_for_ms: 60_000,
    });
    let task = tokio::spawn({
        let (m, a, b, d) = (m.clone(), a.clone(), b.clone(), dir.path().to_path_buf());
        async move { run(&m, a, b, &d).await }
    });
    let id = m.id();
    for _ in 0..100 {
        if crate::state::recorded(dir.path(), &id)
            .is_ok_and(|s| matches!(s.plan.steps[s.next_step], Step::WaitForCutover { .. }))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (dir, a, b, w, task, id)
}

/// The instance of [`live_run_waiting_for_the_cutover`] is cut off: the requested cutover
/// runs and the migration ends handed over.
async fn cut_off_and_handed_over(
    w: &std::sync::Mutex<World>,
    task: tokio::task::JoinHandle<crate::error::Result<crate::exec::Summary>>,
) {
    w.lock().unwrap().sites[0]
        .images
        .get_mut("volumes/vol1")
        .unwrap()
        .watchers
        .clear();
    let s = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the requested cutover ran")
        .unwrap()
        .unwrap();
    assert!(!s.already_done);
    assert_handed_over(&w.lock().unwrap());
}

#[tokio::test]
async fn cutover_refuses_while_in_use_naming_the_users_and_force_goes_ahead() {
    let (dir, a, b, w, task, id) = live_run_waiting_for_the_cutover().await;
    let before = w.lock().unwrap().clone();
    let e = request_cutover(dir.path(), &id, a.clone(), b.clone(), false)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::SourceInUse { users, .. } if users.contains("client.admin")),
        "{e}"
    );
    assert!(!cutover_request_path(dir.path(), &id).exists());
    assert_eq!(
        *w.lock().unwrap(),
        before,
        "a refused cutover changes nothing"
    );
    let r = request_cutover(dir.path(), &id, a.clone(), b.clone(), true)
        .await
        .unwrap();
    assert!(r.force);
    // the instance is cut off (its watch ends with the demotion in real life)
    cut_off_and_handed_over(&w, task).await;
}

#[tokio::test]
async fn cutover_of_a_migration_that_is_not_live_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, _w) = pair(World::standard(DEFAULT, data()));
    let m = clone_migration(MirrorImageMode::Journal);
    run(&m, a.clone(), b.clone(), dir.path()).await.unwrap();
    let e = request_cutover(dir.path(), &m.id(), a, b, false)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotLive { .. }), "{e}");
    let _ = Arc::new(());
}

/// A clone migration stopped (as a killed process would be) as each step of the cutover
/// and after it starts, then aborted: the source is primary, not mirrored, with its
/// features and data, and nothing of the migration is left on the destination.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_after_a_clone_migration_stopped_at_any_cutover_step_puts_everything_back() {
    use crate::abort::{abort, AbortOptions};
    use crate::event::NullSink;
    for mode in [MirrorImageMode::Journal, MirrorImageMode::Snapshot] {
        let kinds = step_kinds(mode);
        let first = kinds.iter().position(|k| *k == "demote_source").unwrap();
        for stop_at in first..kinds.len() {
            let dir = tempfile::tempdir().unwrap();
            let mut world = World::standard(DEFAULT, data());
            world.sync_polls = 2;
            world.op_delay = Duration::from_millis(2);
            let (a, b, w) = pair(world);
            let m = clone_migration(mode);
            // stopped once the state says step `stop_at` is the next to run, as by a kill
            let stopped_at =
                crate::fake::fixtures::drop_run_at(&m, a.clone(), b.clone(), dir.path(), stop_at)
                    .await;
            let Some(at) = stopped_at else {
                panic!("{mode}: the run never reached step {}", kinds[stop_at]);
            };
            let verified = crate::state::recorded(dir.path(), &m.id())
                .unwrap()
                .verified();
            let r = abort(
                dir.path(),
                &m.id(),
                a.clone(),
                b.clone(),
                AbortOptions {
                    discard_verified_copy: verified,
                    ..crate::fake::fixtures::abort_opts()
                },
                Arc::new(NullSink),
            )
            .await;
            let what = format!("{mode}, stopped at {}", kinds[at.min(kinds.len() - 1)]);
            if let Err(e) = &r {
                // a finished migration is refused; anything else must succeed
                assert!(
                    matches!(e, Error::AbortRefusedFinished { .. }),
                    "{what}: {e}"
                );
                continue;
            }
            let ww = w.lock().unwrap();
            let src = &ww.sites[0].images["volumes/vol1"];
            assert_eq!(src.mirror, None, "{what}: source not mirrored");
            assert_eq!(src.features, DEFAULT, "{what}: features back");
            assert_eq!(src.data, data(), "{what}: data untouched");
            assert!(
                !ww.sites[1].images.contains_key("volumes/vol1"),
                "{what}: no replica left: {:?}",
                ww.sites[1].images.keys().collect::<Vec<_>>()
            );
            assert!(
                !ww.sites[1].images.contains_key("cinder/vol1"),
                "{what}: no copy left"
            );
        }
    }
}

#[tokio::test]
async fn a_live_clone_migration_with_adoption_hands_the_clone_to_cinder_before_verifying() {
    use crate::exec::{migrate, Clouds};
    use crate::fake::FakeCloud;
    let dir = tempfile::tempdir().unwrap();
    let (a, b, w) = pair(World::standard(DEFAULT, data()));
    let (cloud, c) = FakeCloud::new(w.clone());
    let clouds = Clouds {
        destination: Some(cloud),
        source: None,
    };
    let mut m = clone_migration(MirrorImageMode::Journal);
    m.allow_live = true;
    m.live = Some(Live { idle_for_ms: 10 });
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
    let o = crate::fake::fixtures::opts();
    let s = migrate(
        &m,
        a.clone(),
        b.clone(),
        &clouds,
        dir.path(),
        &o,
        Arc::new(crate::event::NullSink),
    )
    .await
    .unwrap();
    let v = s.volume.clone().expect("adopted volume in the summary");
    assert_eq!(v.status, "available");
    let ww = w.lock().unwrap();
    let copy = &ww.sites[1].images[&format!("cinder/{}", v.rbd_image)];
    assert_eq!(copy.data, data());
    assert_eq!(copy.parent, None, "the adopted volume was flattened");
    assert!(
        !ww.sites[1].images.contains_key("volumes/vol1"),
        "replica removed"
    );
    let src = &ww.sites[0].images["volumes/vol1"];
    assert_eq!(src.mirror, None);
    assert_eq!(src.features, DEFAULT);
    assert_eq!(c.lock().unwrap().adopt_calls, 1);
    let state = crate::state::recorded(dir.path(), &m.id()).unwrap();
    let kinds: Vec<_> = state.plan.steps.iter().map(Step::kind).collect();
    let at = |k: &str| kinds.iter().position(|x| *x == k).unwrap();
    assert!(at("adopt_volume") < at("verify_handover"));
    assert!(state.verified());
}

#[test]
fn preflight_of_a_live_clone_says_the_cutover_waits_and_a_live_copy_says_later_writes_are_lost() {
    let mut world = World::standard(DEFAULT, data());
    world.sites[0]
        .images
        .get_mut("volumes/vol1")
        .unwrap()
        .watchers = vec!["client.admin@10.0.0.5:0/1".into()];
    let (a, b, _) = pair(world);
    let warnings_of = |m: &VolumeMigration| -> Vec<String> {
        let warnings = std::sync::Mutex::new(Vec::new());
        let sink = |e: crate::event::Event| {
            if let crate::event::Event::Warning { message } = e {
                warnings.lock().unwrap().push(message);
            }
        };
        crate::preflight::check_volume(m, a.as_ref(), b.as_ref(), &sink).unwrap();
        warnings.into_inner().unwrap()
    };
    let mut live_clone = clone_migration(MirrorImageMode::Journal);
    live_clone.allow_live = true;
    live_clone.live = Some(Live { idle_for_ms: 2000 });
    let w = warnings_of(&live_clone);
    assert!(
        w.iter()
            .any(|x| x.contains("in use") && x.contains("the cutover waits")),
        "{w:?}"
    );
    assert!(!w.iter().any(|x| x.contains("not in the copy")), "{w:?}");

    let mut live_copy = migration_of("vol1", MirrorImageMode::Journal);
    live_copy.allow_live = true;
    let w = warnings_of(&live_copy);
    assert!(w.iter().any(|x| x.contains("not in the copy")), "{w:?}");
}

/// A clone migration stopped once verified (at its flatten) is finished by `cleanup`: the
/// flatten, the source's release and features, the replica's removal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_finishes_a_clone_migration_stopped_after_its_verification() {
    use crate::event::NullSink;
    let dir = tempfile::tempdir().unwrap();
    let mut world = World::standard(DEFAULT, data());
    world.op_delay = Duration::from_millis(2);
    let (a, b, w) = pair(world);
    let m = clone_migration(MirrorImageMode::Journal);
    let flatten_at = Plan::volume(m.clone(), crate::plan::test_support::facts(DEFAULT))
        .steps
        .iter()
        .position(|s| *s == Step::FlattenCopy)
        .unwrap();
    let task = tokio::spawn({
        let (m, a, b, d) = (m.clone(), a.clone(), b.clone(), dir.path().to_path_buf());
        async move {
            let o = crate::fake::fixtures::opts();
            crate::exec::migrate_volume(&m, a, b, &d, &o, Arc::new(NullSink)).await
        }
    });
    let mut stopped = false;
    for _ in 0..5000 {
        if crate::state::recorded(dir.path(), &m.id()).is_ok_and(|s| s.next_step >= flatten_at) {
            task.abort();
            stopped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(stopped, "the run reached the flatten");
    let _ = task.await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    crate::cleanup::cleanup(dir.path(), &m.id(), a, b, false, Arc::new(NullSink))
        .await
        .unwrap();
    assert_handed_over(&w.lock().unwrap());
    assert!(crate::state::recorded(dir.path(), &m.id())
        .unwrap()
        .finished());
}

#[tokio::test]
async fn a_daemon_lost_at_the_cutover_is_named_the_cutover_rolled_back_and_a_rerun_finishes() {
    use crate::wait::WaitError;
    let dir = tempfile::tempdir().unwrap();
    let (a, b, w) = pair(World::standard(DEFAULT, data()));
    let m = clone_migration(MirrorImageMode::Snapshot);
    // a first run stops just before the demotion
    w.lock().unwrap().fail_once = Some("demote".into());
    run(&m, a.clone(), b.clone(), dir.path()).await.unwrap_err();
    // the daemon hangs: the demotion never reaches the replica, its beacon stands still
    {
        let mut ww = w.lock().unwrap();
        ww.stuck = true;
        ww.sites[1].daemon_silent = true;
    }
    let mut o = crate::fake::fixtures::opts();
    o.wait.daemon_silent_after = Duration::from_millis(50);
    let started = std::time::Instant::now();
    let e = crate::exec::migrate_volume(
        &m,
        a.clone(),
        b.clone(),
        dir.path(),
        &o,
        Arc::new(crate::event::NullSink),
    )
    .await
    .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        matches!(e, Error::Wait(WaitError::DaemonNotResponding { .. })),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("rbd-mirror on site-b is down or not responding"),
        "{e}"
    );
    {
        let ww = w.lock().unwrap();
        let src = &ww.sites[0].images["volumes/vol1"];
        assert!(
            matches!(src.mirror, Some((_, true))),
            "the source is primary again: {:?}",
            src.mirror
        );
        assert_eq!(src.data, data());
    }
    // the daemon is back: the re-run cuts over and finishes
    {
        let mut ww = w.lock().unwrap();
        ww.stuck = false;
        ww.sites[1].daemon_silent = false;
    }
    run(&m, a, b, dir.path()).await.unwrap();
    assert_handed_over(&w.lock().unwrap());
}

/// Cancel safety of `request_cutover`: dropped at any await, it has either written the whole
/// request or nothing (never a torn file the run would misread), holds no lock, and the next
/// call asks for the cutover, which the run then makes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cutover_request_dropped_at_any_await_is_whole_or_absent_and_the_next_call_asks() {
    let (dir, a, b, w, task, id) = live_run_waiting_for_the_cutover().await;
    // every Ceph call of the request (reading the users) now takes a few ms
    w.lock().unwrap().op_delay = Duration::from_millis(3);
    let path = cutover_request_path(dir.path(), &id);
    let mut dropped = 0;
    for ms in [0u64, 1, 2, 3, 4, 5, 6, 8, 10, 13] {
        let ask = request_cutover(dir.path(), &id, a.clone(), b.clone(), true);
        match tokio::time::timeout(Duration::from_millis(ms), ask).await {
            Err(_elapsed) => dropped += 1,
            Ok(r) => assert!(r.unwrap().force),
        }
        if let Ok(bytes) = std::fs::read(&path) {
            let v: serde_json::Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("a torn request after a drop at {ms} ms: {e}"));
            assert_eq!(v["force"], true, "{ms} ms");
            // start over: the next drop point must write it again or nothing
            std::fs::remove_file(&path).unwrap();
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".tmp"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "{ms} ms: temp files left: {leftovers:?}"
        );
    }
    assert!(dropped >= 3, "only {dropped} requests were dropped midway");
    // the next call asks; the run cuts over once the instance is cut off
    request_cutover(dir.path(), &id, a.clone(), b.clone(), true)
        .await
        .unwrap();
    w.lock().unwrap().op_delay = Duration::ZERO;
    cut_off_and_handed_over(&w, task).await;
}

#[test]
fn the_live_wait_says_what_a_shutdown_now_would_cost_from_the_journal_replay_rate() {
    use crate::exec::describe_lag;
    use crate::status::SyncProgress;
    let behind = SyncProgress::JournalReplay {
        entries_behind_primary: 1200,
        bytes_per_second: 0.0,
        positions_equal: false,
        entries_per_second: 100.0,
    };
    let text = describe_lag(Some(&behind), Duration::from_secs(2));
    assert!(text.contains("1200 journal entries behind"), "{text}");
    assert!(text.contains("about 14 s of downtime"), "{text}");
    assert!(text.contains("12 s to catch up"), "{text}");

    let caught_up = SyncProgress::JournalReplay {
        entries_behind_primary: 0,
        bytes_per_second: 0.0,
        positions_equal: true,
        entries_per_second: 0.0,
    };
    let text = describe_lag(Some(&caught_up), Duration::from_secs(2));
    assert!(text.contains("about 2 s of downtime"), "{text}");

    let no_rate = SyncProgress::JournalReplay {
        entries_behind_primary: 5,
        bytes_per_second: 0.0,
        positions_equal: false,
        entries_per_second: 0.0,
    };
    let text = describe_lag(Some(&no_rate), Duration::from_secs(2));
    assert!(text.contains("no replay rate"), "{text}");
    assert!(
        !text.contains("downtime"),
        "no estimate without a rate: {text}"
    );
    assert_eq!(describe_lag(None, Duration::from_secs(2)), "lag unknown");
}

/// Preflight's warnings for a live journal-mode migration on a world set up by `setup`.
fn live_journal_preflight_warnings(setup: impl FnOnce(&mut World)) -> Vec<String> {
    let mut world = World::standard(DEFAULT, data());
    setup(&mut world);
    let (a, b, w) = pair(world);
    let before = w.lock().unwrap().clone();
    let warnings = std::sync::Mutex::new(Vec::new());
    let sink = |e: crate::event::Event| {
        if let crate::event::Event::Warning { message } = e {
            warnings.lock().unwrap().push(message);
        }
    };
    let mut m = clone_migration(MirrorImageMode::Journal);
    m.allow_live = true;
    m.live = Some(Live { idle_for_ms: 2000 });
    crate::preflight::check_volume(&m, a.as_ref(), b.as_ref(), &sink).unwrap();
    assert_eq!(*w.lock().unwrap(), before, "preflight changes nothing");
    warnings.into_inner().unwrap()
}

#[test]
fn preflight_of_a_live_journal_migration_names_the_daemons_slow_default_poll_and_the_setting() {
    let w = live_journal_preflight_warnings(|_| {});
    let slow: Vec<_> = w.iter().filter(|x| x.contains("polls journals")).collect();
    assert_eq!(slow.len(), 1, "{w:?}");
    assert!(slow[0].contains("rbd-mirror.4129 every 5 s"), "{w:?}");
    assert!(
        slow[0].contains("rbd_mirror_journal_poll_age 1"),
        "names the setting: {w:?}"
    );
}

#[test]
fn preflight_of_a_live_journal_migration_is_quiet_about_a_tuned_daemon() {
    let w = live_journal_preflight_warnings(|w| {
        w.sites[1]
            .daemon_config
            .insert("rbd_mirror_journal_poll_age".into(), "1.000000".into());
    });
    assert!(!w.iter().any(|x| x.contains("rbd_mirror_journal")), "{w:?}");
}

#[test]
fn preflight_of_a_live_journal_migration_only_warns_when_the_daemons_config_cannot_be_read() {
    let w = live_journal_preflight_warnings(|w| w.sites[1].daemon_config_refused = true);
    assert!(
        w.iter()
            .any(|x| x.contains("could not read the running configuration")),
        "{w:?}"
    );
}

/// A journal replay description as rbd-mirror writes it, `behind` entries behind.
fn replaying(behind: u64) -> String {
    format!(
        "replaying, {{\"bytes_per_second\":65536.0,\"entries_behind_primary\":{behind},\"entries_per_second\":100.0,\"non_primary_position\":{{\"entry_tid\":1,\"object_number\":0,\"tag_tid\":1}},\"primary_position\":{{\"entry_tid\":{},\"object_number\":0,\"tag_tid\":1}}}}",
        behind + 1
    )
}

/// A first run stopped just before the demotion, and rbd-mirror that will not replay the
/// demotion until the test lets it (`stuck`), reporting `replaying(behind)` meanwhile.
async fn stopped_before_the_demotion_with_a_backlog(
    behind: u64,
) -> (
    tempfile::TempDir,
    Arc<dyn crate::ops::CephOps>,
    Arc<dyn crate::ops::CephOps>,
    Arc<std::sync::Mutex<World>>,
    VolumeMigration,
) {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, w) = pair(World::standard(DEFAULT, data()));
    let m = clone_migration(MirrorImageMode::Journal);
    w.lock().unwrap().fail_once = Some("demote".into());
    run(&m, a.clone(), b.clone(), dir.path()).await.unwrap_err();
    {
        let mut ww = w.lock().unwrap();
        ww.stuck = true;
        ww.replica_description = Some(replaying(behind));
    }
    (dir, a, b, w, m)
}

/// The migration of `m` run again (in a task) with a 300 ms promote patience, and the
/// details of the promote wait's progress events as they come.
#[allow(clippy::type_complexity)]
fn migrating_with_a_300_ms_promote_patience(
    dir: &tempfile::TempDir,
    a: &Arc<dyn crate::ops::CephOps>,
    b: &Arc<dyn crate::ops::CephOps>,
    m: &VolumeMigration,
) -> (
    tokio::task::JoinHandle<crate::error::Result<crate::exec::Summary>>,
    Arc<std::sync::Mutex<Vec<String>>>,
) {
    let mut o = crate::fake::fixtures::opts();
    o.wait.promote_patience = Duration::from_millis(300);
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = {
        let seen = seen.clone();
        move |e: crate::event::Event| {
            if let crate::event::Event::Progress(p) = e {
                if p.phase == "promote_replica" {
                    seen.lock().unwrap().push(p.detail);
                }
            }
        }
    };
    let task = tokio::spawn({
        let (m, a, b, d) = (m.clone(), a.clone(), b.clone(), dir.path().to_path_buf());
        async move { crate::exec::migrate_volume(&m, a, b, &d, &o, Arc::new(sink)).await }
    });
    (task, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_promote_wait_says_how_far_the_replay_is_and_outwaits_its_patience_while_it_progresses()
{
    let (dir, a, b, w, m) = stopped_before_the_demotion_with_a_backlog(2000).await;
    let started = std::time::Instant::now();
    let (task, seen) = migrating_with_a_300_ms_promote_patience(&dir, &a, &b, &m);
    // rbd-mirror replays the backlog for 1.5 s, five times the patience, then the demotion
    for behind in (0..15).rev() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        w.lock().unwrap().replica_description = Some(replaying(behind * 100 + 1));
        assert!(!task.is_finished(), "promoted before the replay was done");
    }
    {
        let mut ww = w.lock().unwrap();
        ww.stuck = false;
        ww.replica_description = None;
    }
    let s = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("promoted once the demotion was replayed")
        .unwrap()
        .unwrap();
    assert!(!s.already_done);
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert_handed_over(&w.lock().unwrap());
    let seen = seen.lock().unwrap();
    assert!(
        seen.iter().any(
            |d| d.contains("for rbd-mirror to replay up to the demotion")
                && d.contains("journal entries behind, replayed at 100/s, about")
        ),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promote_wait_without_replay_progress_gives_up_after_its_patience_and_rolls_back() {
    let (dir, a, b, w, m) = stopped_before_the_demotion_with_a_backlog(2000).await;
    let mut o = crate::fake::fixtures::opts();
    o.wait.promote_patience = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let e = crate::exec::migrate_volume(
        &m,
        a.clone(),
        b.clone(),
        dir.path(),
        &o,
        Arc::new(crate::event::NullSink),
    )
    .await
    .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(matches!(e, Error::ReplicaNotCaughtUp { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("reported no replay progress for the last"),
        "{e}"
    );
    {
        let ww = w.lock().unwrap();
        let src = &ww.sites[0].images["volumes/vol1"];
        assert!(
            matches!(src.mirror, Some((_, true))),
            "the source is primary again: {:?}",
            src.mirror
        );
        assert_eq!(src.data, data());
    }
    {
        let mut ww = w.lock().unwrap();
        ww.stuck = false;
        ww.replica_description = None;
    }
    run(&m, a, b, dir.path()).await.unwrap();
    assert_handed_over(&w.lock().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_seen_only_in_the_journal_positions_keeps_the_promote_wait_going() {
    // rbd-mirror rewrites its status every 30 s: between two, the replay shows only as the
    // peer's commit position moving in the source's journal
    let (dir, a, b, w, m) = stopped_before_the_demotion_with_a_backlog(2000).await;
    w.lock().unwrap().peer_committed = Some(100);
    let (task, seen) = migrating_with_a_300_ms_promote_patience(&dir, &a, &b, &m);
    for committed in 1..=15 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        w.lock().unwrap().peer_committed = Some(100 + committed * 50);
        assert!(
            !task.is_finished(),
            "gave up or promoted while the replay moved"
        );
    }
    {
        let mut ww = w.lock().unwrap();
        ww.stuck = false;
        ww.replica_description = None;
        ww.peer_committed = None;
    }
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("promoted once the demotion was replayed")
        .unwrap()
        .unwrap();
    assert_handed_over(&w.lock().unwrap());
    let seen = seen.lock().unwrap();
    assert!(
        seen.iter()
            .any(|d| d.contains("entries replayed since this wait began")),
        "{seen:?}"
    );
}

#[test]
fn the_journal_lag_is_the_masters_entry_less_the_peers_and_its_rate_the_peers_advance() {
    use crate::exec::cutover::JournalLag;
    use crate::ops::JournalPosition;
    use crate::status::SyncProgress;
    let at = |tag_tid, entry_tid| JournalPosition {
        object_number: 0,
        tag_tid,
        entry_tid,
    };
    let t0 = std::time::Instant::now();
    let mut lag = JournalLag::default();
    let first = lag.sample(Some(at(3, 1000)), at(3, 400), t0).unwrap();
    assert!(matches!(
        first,
        SyncProgress::JournalReplay { entries_behind_primary: 600, entries_per_second, .. } if entries_per_second == 0.0
    ));
    let second = lag
        .sample(Some(at(3, 1500)), at(3, 900), t0 + Duration::from_secs(5))
        .unwrap();
    assert!(matches!(
        second,
        SyncProgress::JournalReplay { entries_behind_primary: 600, entries_per_second, .. } if (entries_per_second - 100.0).abs() < 1e-9
    ));
    assert_eq!(second.eta_seconds(), Some(6.0));
    // nothing written yet: nothing behind
    assert!(matches!(
        lag.sample(None, at(3, 900), t0 + Duration::from_secs(6)),
        Some(SyncProgress::JournalReplay {
            entries_behind_primary: 0,
            positions_equal: true,
            ..
        })
    ));
    // entry ids count within a tag: positions in two tags are not compared
    assert_eq!(lag.sample(Some(at(4, 10)), at(3, 900), t0), None);
}

/// The replica's id is in the state file before the source is demoted: a run stopped right
/// after the demotion (as by a kill) leaves abort the id of the replica it may have to
/// remove (rbd-mirror never replays a replica again once the source was demoted and
/// promoted back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replicas_id_is_recorded_before_the_source_is_demoted() {
    for mode in [MirrorImageMode::Journal, MirrorImageMode::Snapshot] {
        let kinds = step_kinds(mode);
        let promote = kinds.iter().position(|k| *k == "promote_replica").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut world = World::standard(DEFAULT, data());
        world.sync_polls = 2;
        // slow enough calls that the run is seen between the demotion and the promotion
        world.op_delay = Duration::from_millis(5);
        let (a, b, w) = pair(world);
        let m = clone_migration(mode);
        let stopped = crate::fake::fixtures::drop_run_at(&m, a, b, dir.path(), promote).await;
        assert_eq!(stopped, Some(promote), "{mode}: stopped after the demotion");
        let state = crate::state::recorded(dir.path(), &m.id()).unwrap();
        let ww = w.lock().unwrap();
        assert!(
            ww.sites[0].images["volumes/vol1"].demoted,
            "{mode}: demoted"
        );
        assert_eq!(
            state.replica_id.as_deref(),
            Some(ww.sites[1].images["volumes/vol1"].id.as_str()),
            "{mode}: the replica's id recorded before the demotion"
        );
    }
}
