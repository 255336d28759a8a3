//! The undo plan made from recorded progress, its dry run, and an abort interrupted midway
//! and continued.

use std::sync::Arc;

use crate::abort::{abort, plan_abort, undo_plan, AbortOptions, UndoPlan};
use crate::cleanup::cleanup;
use crate::error::Error;
use crate::event::NullSink;
use crate::fake::fixtures::{data, migration_of as migration, run, DEFAULT};
use crate::fake::{pair, World};
use crate::features::{Features, MirrorImageMode};
use crate::plan::Step;
use crate::state::{self, StateFile};

use super::assert_undone;

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
    let e = plan_abort(
        dir.path(),
        &m.id(),
        b.clone(),
        crate::fake::fixtures::abort_opts(),
    )
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
            ..crate::fake::fixtures::abort_opts()
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
        crate::fake::fixtures::abort_opts(),
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
    let p = plan_abort(
        dir.path(),
        &m.id(),
        b.clone(),
        crate::fake::fixtures::abort_opts(),
    )
    .await
    .unwrap();
    assert_eq!((p.next_step, p.steps.len()), (2, 4));

    // the next abort continues at the features: it reports only what it did itself
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
        crate::fake::fixtures::abort_opts(),
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
        crate::fake::fixtures::abort_opts(),
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
