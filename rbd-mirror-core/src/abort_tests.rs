//! Unit tests of `abort`, `cleanup` and batches on the in-memory fake: what is undone when,
//! refusals that change nothing, re-runs that converge, a fresh plan after an abort, one
//! failing image of a batch not stopping the others.

use std::sync::Arc;

use crate::abort::{abort, plan_abort, undo_plan, AbortOptions, UndoPlan};
use crate::batch::{check_distinct, migrate_batch};
use crate::cleanup::cleanup;
use crate::error::Error;
use crate::event::NullSink;
use crate::exec::{migrate, Clouds};
use crate::fake::fixtures::{data, migration_of as migration, opts, run, DEFAULT};
use crate::fake::{pair, FakeCloud, Img, World};
use crate::features::{Features, MirrorImageMode};
use crate::ops::SnapshotNamespace;
use crate::plan::{Adoption, Step};
use crate::state::{self, StateFile};

/// The source exactly as before any migration, and nothing of it on the destination.
fn assert_undone(w: &World, original: Features) {
    let src = &w.sites[0].images["volumes/vol1"];
    assert_eq!(src.features, original, "source features restored exactly");
    assert_eq!(src.mirror, None, "source mirroring disabled");
    assert_eq!(src.data, data(), "source data untouched");
    assert!(
        !src.snaps
            .iter()
            .any(|s| matches!(s.namespace, SnapshotNamespace::Mirror { .. })),
        "no mirror snapshot left"
    );
    assert!(
        !w.sites[1].images.contains_key("volumes/vol1"),
        "no replica"
    );
    assert!(!w.sites[1].images.contains_key("cinder/vol1"), "no copy");
    assert!(
        !src.meta.contains_key(crate::preflight::SOURCE_MARKER_KEY),
        "the migration's marker removed"
    );
}

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
            AbortOptions::default(),
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
            AbortOptions::default(),
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
        AbortOptions::default(),
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
        AbortOptions::default(),
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
        AbortOptions::default(),
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
            AbortOptions::default(),
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
            AbortOptions::default(),
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
        AbortOptions::default(),
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
        AbortOptions::default(),
        Arc::new(NullSink),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("is finished"), "{e}");
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
        AbortOptions::default(),
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
        AbortOptions::default(),
        Arc::new(NullSink),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::Locked { .. }), "{e}");
}

#[tokio::test]
async fn cleanup_finishes_the_source_side_only_of_a_verified_copy() {
    let dir = tempfile::tempdir().unwrap();
    let mut world = World::standard(DEFAULT, data());
    world.stuck = true;
    let (a, b, w) = pair(world);
    let mut m = migration("vol1", MirrorImageMode::Journal);
    m.adopt = Some(Adoption {
        cloud: "site-b-admin".into(),
        target: crate::cloud::AdoptTarget::CephPool {
            pool: "cinder".into(),
        },
        name: None,
        bootable: false,
    });
    let (cloud, c) = FakeCloud::new(w.clone());
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
    .unwrap_err();
    // not verified: refused, pointing at resume and abort; nothing changes
    let before = w.lock().unwrap().clone();
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
    let text = e.to_string();
    assert!(
        text.contains("not verified") && text.contains("resume") && text.contains("abort"),
        "{text}"
    );
    assert_eq!(*w.lock().unwrap(), before);

    // verified, the cleanup failed: cleanup runs it, but not the adoption
    {
        let mut ww = w.lock().unwrap();
        ww.stuck = false;
        ww.fail_once = Some("disable_mirroring".into());
    }
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
    let r = cleanup(
        dir.path(),
        &m.id(),
        a.clone(),
        b.clone(),
        false,
        Arc::new(NullSink),
    )
    .await
    .unwrap();
    assert_eq!(r.ran, ["disable_mirroring", "restore_features"]);
    assert_eq!(r.remaining, ["adopt_volume"]);
    {
        let ww = w.lock().unwrap();
        let src = &ww.sites[0].images["volumes/vol1"];
        assert_eq!(src.features, DEFAULT);
        assert_eq!(src.mirror, None);
        assert!(
            !ww.sites[1].images.contains_key("volumes/vol1"),
            "replica gone"
        );
        assert_eq!(ww.sites[1].images["cinder/vol1"].data, data(), "copy kept");
    }
    assert_eq!(c.lock().unwrap().adopt_calls, 0, "no cloud step ran");
    // again: already done; --forget is refused while the adoption is still to do
    let again = cleanup(
        dir.path(),
        &m.id(),
        a.clone(),
        b.clone(),
        false,
        Arc::new(NullSink),
    )
    .await
    .unwrap();
    assert!(again.already_done && again.ran.is_empty());
    let e = cleanup(
        dir.path(),
        &m.id(),
        a.clone(),
        b.clone(),
        true,
        Arc::new(NullSink),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("adopt_volume"), "{e}");
    assert!(StateFile::path_for(dir.path(), &m.id()).exists());

    // resume later runs only what is left, the adoption
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
    assert!(s.volume.is_some());
    // now finished: --forget drops the record
    let r = cleanup(dir.path(), &m.id(), a, b, true, Arc::new(NullSink))
        .await
        .unwrap();
    assert!(r.forgotten && r.already_done);
    assert!(!StateFile::path_for(dir.path(), &m.id()).exists());
}

#[tokio::test]
async fn a_failing_image_does_not_stop_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut world = World::standard(DEFAULT, data());
    world.sync_polls = 0;
    world.sites[0]
        .images
        .insert("volumes/vol2".into(), Img::new(DEFAULT, vec![2; 999]));
    let (a, b, w) = pair(world);
    let ms: Vec<_> = ["vol1", "missing", "vol2"]
        .iter()
        .map(|i| migration(i, MirrorImageMode::Journal))
        .collect();
    check_distinct(&ms).unwrap();
    let mut twice = ms.clone();
    twice.push(ms[0].clone());
    assert!(check_distinct(&twice)
        .unwrap_err()
        .to_string()
        .contains("given twice"));

    let done = std::sync::Mutex::new(Vec::new());
    let items = migrate_batch(
        ms.clone(),
        a,
        b,
        &Clouds::default(),
        dir.path(),
        &opts(),
        2,
        |_| Arc::new(NullSink),
        |i| done.lock().unwrap().push(i.id.clone()),
    )
    .await;
    assert_eq!(items.len(), 3);
    assert_eq!(done.lock().unwrap().len(), 3);
    let ids: Vec<_> = items.iter().map(|i| i.id.clone()).collect();
    assert_eq!(
        ids,
        ms.iter().map(|m| m.id()).collect::<Vec<_>>(),
        "input order"
    );
    assert!(items[0].ok() && items[2].ok(), "{items:?}");
    assert!(!items[1].ok());
    assert!(
        items[1]
            .error
            .as_deref()
            .unwrap()
            .contains("does not exist"),
        "{items:?}"
    );
    let ww = w.lock().unwrap();
    assert_eq!(ww.sites[1].images["cinder/vol1"].data, data());
    assert_eq!(ww.sites[1].images["cinder/vol2"].data, vec![2; 999]);
}

/// A finished migration on the fake, its state file moved to `outside.json` beside the state
/// directory `root/state`. Returns (root, the fake clusters, the migration id).
async fn finished_state_outside_the_state_dir() -> (
    tempfile::TempDir,
    Arc<dyn crate::ops::CephOps>,
    Arc<dyn crate::ops::CephOps>,
    String,
) {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("state");
    let (a, b, _w) = pair(World::standard(DEFAULT, data()));
    let m = migration("vol1", MirrorImageMode::Journal);
    run(&m, a.clone(), b.clone(), &dir).await.unwrap();
    std::fs::rename(
        StateFile::path_for(&dir, &m.id()),
        root.path().join("outside.json"),
    )
    .unwrap();
    (root, a, b, m.id())
}

#[tokio::test]
async fn cleanup_forget_with_a_path_as_migration_id_is_refused_and_deletes_nothing() {
    let (root, a, b, _) = finished_state_outside_the_state_dir().await;
    let dir = root.path().join("state");
    let outside = root.path().join("outside.json");
    let absolute = root.path().join("outside").display().to_string();
    for id in ["../outside", absolute.as_str(), "", ".hidden", "a/b"] {
        let e = cleanup(&dir, id, a.clone(), b.clone(), true, Arc::new(NullSink))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::Spec(s) if s.what == "migration id")
                && e.to_string().contains("as `rbd-relay list` shows it"),
            "{id}: {e}"
        );
        assert!(outside.exists(), "{id}: the file outside was deleted");
        for e in [
            abort(
                &dir,
                id,
                a.clone(),
                b.clone(),
                AbortOptions::default(),
                Arc::new(NullSink),
            )
            .await
            .unwrap_err(),
            state::resumable(&dir, id).unwrap_err(),
            crate::delete::delete_source(&dir, id, None, a.clone(), b.clone(), Arc::new(NullSink))
                .await
                .unwrap_err(),
        ] {
            assert!(matches!(&e, Error::Spec(_)), "{id}: {e}");
        }
    }
    assert!(outside.exists());
}

#[tokio::test]
async fn a_state_file_whose_next_step_is_past_the_plan_is_refused_as_damaged() {
    let (root, a, b, id) = finished_state_outside_the_state_dir().await;
    let dir = root.path().join("state");
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.path().join("outside.json")).unwrap()).unwrap();
    // no backup to fall back to (with one, a damaged file is replaced by it: see
    // ownership_tests::a_truncated_state_file_is_recovered_from_its_backup)
    let _ = std::fs::remove_file(dir.join(format!("{id}.json.bak")));
    for next in [99u64, u64::MAX] {
        json["next_step"] = next.into();
        let path = StateFile::path_for(&dir, &id);
        let text = serde_json::to_vec(&json).unwrap();
        std::fs::write(&path, &text).unwrap();
        let damaged = |e: Error| {
            assert!(
                matches!(&e, Error::State { .. })
                    && e.to_string()
                        .contains(&format!("damaged: next_step {next} is past the plan's")),
                "{e}"
            );
        };
        damaged(
            cleanup(&dir, &id, a.clone(), b.clone(), true, Arc::new(NullSink))
                .await
                .unwrap_err(),
        );
        damaged(
            abort(
                &dir,
                &id,
                a.clone(),
                b.clone(),
                AbortOptions::default(),
                Arc::new(NullSink),
            )
            .await
            .unwrap_err(),
        );
        damaged(state::resumable(&dir, &id).unwrap_err());
        assert_eq!(std::fs::read(&path).unwrap(), text, "the file was changed");
        // list reports it as unreadable instead of failing as a whole
        let (good, bad) = state::list_all(&dir).unwrap();
        assert!(good.is_empty() && bad.len() == 1, "{bad:?}");
    }
}

/// The recorded state of a journal-mode plan of `volumes/vol1` (features [`DEFAULT`], never
/// mirrored) stopped before step `next_step`.
fn recorded_at(next_step: usize) -> state::RunState {
    let m = migration("vol1", MirrorImageMode::Journal);
    let mut st = state::RunState::new(crate::plan::Plan::volume(
        m,
        crate::plan::tests::facts(DEFAULT),
    ));
    st.next_step = next_step;
    st
}

fn kinds(steps: &[Step]) -> Vec<&'static str> {
    steps.iter().map(Step::kind).collect()
}

fn position(st: &state::RunState, kind: &str) -> usize {
    st.plan.steps.iter().position(|s| s.kind() == kind).unwrap()
}

#[test]
fn the_undo_plan_undoes_exactly_what_the_recorded_progress_may_have_done() {
    // nothing done (only preflight): nothing to undo
    let p = undo_plan(&recorded_at(0));
    assert!(p.steps.is_empty() && p.notes.is_empty(), "{p:?}");
    assert!(p.render().contains("nothing to undo"), "{}", p.render());

    // the features step ran or was interrupted in the middle: the features, the marker
    let st = recorded_at(1);
    assert_eq!(st.plan.steps[1].kind(), "enable_features");
    assert_eq!(
        undo_plan(&st).steps,
        [
            Step::RestoreOriginalFeatures { original: DEFAULT },
            Step::RemoveSourceMarker
        ]
    );

    // mirroring enabled, stopped in the wait: mirroring, its snapshots, then the features
    let mut st = recorded_at(0);
    st.next_step = position(&st, "wait_for_replica");
    st.plan.facts.mirror_snapshots_before = vec![7];
    assert_eq!(
        undo_plan(&st).steps,
        [
            Step::DisableSourceMirroring,
            Step::RemoveMirrorSnapshots { kept: vec![7] },
            Step::RestoreOriginalFeatures { original: DEFAULT },
            Step::RemoveSourceMarker
        ]
    );

    // a copy started but its id not recorded (killed in between): no copy is removed
    st.next_step = position(&st, "verify");
    st.copy_started = true;
    assert!(!kinds(&undo_plan(&st).steps).contains(&"remove_copy"));
    // a copy made with a recorded id: that image first
    st.copy_id = Some("id-of-ours".into());
    let p = undo_plan(&st);
    assert_eq!(
        kinds(&p.steps),
        [
            "remove_copy",
            "disable_source_mirroring",
            "remove_mirror_snapshots",
            "restore_original_features",
            "remove_source_marker"
        ]
    );
    assert_eq!(
        p.steps[0],
        Step::RemoveCopy {
            image_id: "id-of-ours".into()
        }
    );
    // printed like a migration's plan: numbered, with the role that runs each step
    let text = p.render();
    assert!(
        text.contains(" 1. [Ceph destination admin] remove the copy site-b:cinder/vol1 if this migration created it (image id id-of-ours")
            && text.contains(" 5. [Ceph source admin] remove this migration's marker from site-a:volumes/vol1"),
        "{text}"
    );
    // the undo plan is data: it round-trips through the state file's JSON
    let j = serde_json::to_string(&p).unwrap();
    assert_eq!(serde_json::from_str::<UndoPlan>(&j).unwrap(), p);
}

#[test]
fn mirroring_on_before_is_kept_and_pool_modes_and_lost_features_are_only_noted() {
    let mut f = crate::plan::tests::facts(DEFAULT | Features::JOURNALING);
    f.mirroring_was_enabled = true;
    let m = migration("vol1", MirrorImageMode::Journal);
    let mut st = state::RunState::new(crate::plan::Plan::volume(m.clone(), f));
    st.next_step = position(&st, "wait_for_replica");
    assert_eq!(undo_plan(&st).steps, [Step::RemoveSourceMarker]);

    let mut m = m;
    m.enable_pool_mirroring = true;
    m.disable_map_features = true;
    let mut f = crate::plan::tests::facts(DEFAULT);
    f.destination_pool_mode = crate::ops::PoolMirrorMode::Disabled;
    let mut st = state::RunState::new(crate::plan::Plan::volume(m, f));
    st.next_step = position(&st, "wait_for_replica");
    let p = undo_plan(&st);
    assert!(!kinds(&p.steps).contains(&"enable_pool_mirroring"));
    assert!(
        p.notes
            .iter()
            .any(|n| n.contains("mirror pool disable volumes")),
        "{p:?}"
    );
    assert!(
        p.notes
            .iter()
            .any(|n| n.contains("deep-flatten cannot be enabled again")),
        "{p:?}"
    );
}

#[tokio::test]
async fn a_dry_run_shows_the_undo_plan_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, w) = pair(World::standard(DEFAULT, data()));
    w.lock().unwrap().fail_once = Some("disable_mirroring".into());
    let m = migration("vol1", MirrorImageMode::Journal);
    run(&m, a.clone(), b.clone(), dir.path()).await.unwrap_err(); // verified copy
    let before = w.lock().unwrap().clone();
    let path = StateFile::path_for(dir.path(), &m.id());
    let file_before = std::fs::read(&path).unwrap();

    // a verified copy: refused as the abort would be
    let e = plan_abort(dir.path(), &m.id(), b.clone(), AbortOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::AbortRefusedVerifiedCopy { copy, .. } if copy == "site-b:cinder/vol1"),
        "{e}"
    );
    let p = plan_abort(
        dir.path(),
        &m.id(),
        b.clone(),
        AbortOptions {
            discard_verified_copy: true,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        kinds(&p.steps),
        [
            "remove_copy",
            "disable_source_mirroring",
            "remove_mirror_snapshots",
            "restore_original_features",
            "remove_source_marker"
        ]
    );
    assert_eq!(p.next_step, 0);
    assert_eq!(
        *w.lock().unwrap(),
        before,
        "nothing changed on the clusters"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        file_before,
        "nor in the state"
    );
    drop(a);
}

#[tokio::test]
async fn an_abort_interrupted_midway_continues_its_recorded_plan_and_blocks_other_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut world = World::standard(DEFAULT, data());
    world.stuck = true;
    let (a, b, w) = pair(world);
    let m = migration("vol1", MirrorImageMode::Journal);
    run(&m, a.clone(), b.clone(), dir.path()).await.unwrap_err();

    // the abort fails in its third step (the features), after mirroring was disabled
    w.lock().unwrap().fail_once = Some("update_features".into());
    let e = abort(
        dir.path(),
        &m.id(),
        a.clone(),
        b.clone(),
        AbortOptions::default(),
        Arc::new(NullSink),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e, Error::Ceph { ref step, .. } if step == "restore_original_features"),
        "{e}"
    );
    let st = state::recorded(dir.path(), &m.id()).unwrap();
    let u = st.undo.clone().unwrap();
    assert_eq!(
        kinds(&u.steps),
        [
            "disable_source_mirroring",
            "remove_mirror_snapshots",
            "restore_original_features",
            "remove_source_marker"
        ]
    );
    assert_eq!(u.next_step, 2, "{st:?}");
    assert!(st.aborting() && !st.aborted);
    assert!(st
        .outcome
        .starts_with("failed at restore_original_features"));
    assert_eq!(
        w.lock().unwrap().sites[0].images["volumes/vol1"].mirror,
        None
    );

    // a half-undone migration is neither resumed, migrated on nor cleaned up
    let before = w.lock().unwrap().clone();
    for e in [
        run(&m, a.clone(), b.clone(), dir.path()).await.unwrap_err(),
        state::resumable(dir.path(), &m.id()).unwrap_err(),
        cleanup(
            dir.path(),
            &m.id(),
            a.clone(),
            b.clone(),
            false,
            Arc::new(NullSink),
        )
        .await
        .unwrap_err(),
    ] {
        assert!(
            matches!(
                &e,
                Error::AbortUnfinished {
                    next: 3,
                    steps: 4,
                    ..
                }
            ) && e
                .to_string()
                .contains("finish the abort with `rbd-relay abort"),
            "{e}"
        );
    }
    assert_eq!(*w.lock().unwrap(), before);
    // the dry run shows where it stopped
    let p = plan_abort(dir.path(), &m.id(), b.clone(), AbortOptions::default())
        .await
        .unwrap();
    assert_eq!((p.next_step, p.steps.len()), (2, 4));

    // the next abort continues at the features: it reports only what it did itself
    let r = abort(
        dir.path(),
        &m.id(),
        a.clone(),
        b.clone(),
        AbortOptions::default(),
        Arc::new(NullSink),
    )
    .await
    .unwrap();
    assert_eq!(
        r.undone,
        ["restored the features of site-a:volumes/vol1 to layering, exclusive-lock, object-map, fast-diff, deep-flatten"]
    );
    assert_undone(&w.lock().unwrap(), DEFAULT);
    let st = state::recorded(dir.path(), &m.id()).unwrap();
    assert!(st.aborted && !st.aborting() && st.outcome == "aborted");
    let u = st.undo.unwrap();
    assert_eq!((u.next_step, u.undone.len()), (4, 2), "{u:?}");
}

#[tokio::test]
async fn an_abort_killed_between_two_undo_steps_is_listed_as_interrupted_and_continued() {
    let dir = tempfile::tempdir().unwrap();
    let mut world = World::standard(DEFAULT, data());
    world.stuck = true;
    let (a, b, w) = pair(world);
    let m = migration("vol1", MirrorImageMode::Journal);
    run(&m, a.clone(), b.clone(), dir.path()).await.unwrap_err();
    // the first undo step (disable mirroring) done, the second fails
    w.lock().unwrap().fail_once = Some("snapshots".into());
    abort(
        dir.path(),
        &m.id(),
        a.clone(),
        b.clone(),
        AbortOptions::default(),
        Arc::new(NullSink),
    )
    .await
    .unwrap_err();
    // as a kill there leaves it: the outcome still "aborting", no process holding the lock
    {
        let lock = StateFile::lock(dir.path(), &m.id(), "x").unwrap();
        let mut st = state::recorded(dir.path(), &m.id()).unwrap();
        assert_eq!(st.undo.as_ref().unwrap().next_step, 1);
        st.outcome = "aborting".into();
        lock.save(&st).unwrap();
        let listed = state::describe_outcome(&st, false);
        assert!(
            listed.starts_with("abort interrupted at undo step 2/4")
                && listed.contains(&format!("`rbd-relay abort {}` continues", m.id())),
            "{listed}"
        );
    }
    let r = abort(
        dir.path(),
        &m.id(),
        a,
        b,
        AbortOptions::default(),
        Arc::new(NullSink),
    )
    .await
    .unwrap();
    assert!(
        !r.undone.iter().any(|u| u.contains("disabled mirroring")),
        "continued after the step that was done: {r:?}"
    );
    assert!(
        r.undone.iter().any(|u| u.contains("restored the features")),
        "{r:?}"
    );
    assert_undone(&w.lock().unwrap(), DEFAULT);
}
