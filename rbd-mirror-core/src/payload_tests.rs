//! Unit tests of the writer's journal payload of a live journal-mode migration
//! ([`Step::SetJournalPayload`], [`Step::RestoreJournalPayload`]) on the in-memory fake: in
//! which plans it is, that a finished run and an abort from any point leave the source's
//! image metadata as it was (the user's own value put back, not removed), and that a fresh
//! plan after a lost state takes the original from the source's marker.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::event::NullSink;
use crate::fake::fixtures::{data, migration_of, run, DEFAULT};
use crate::fake::{pair, World};
use crate::features::{Features, MirrorImageMode};
use crate::plan::{
    Handover, Live, Plan, Step, VolumeMigration, JOURNAL_PAYLOAD_BYTES, JOURNAL_PAYLOAD_KEY,
};

fn live(mode: MirrorImageMode, handover: Handover) -> VolumeMigration {
    let mut m = migration_of("vol1", mode);
    m.handover = handover;
    m.allow_live = true;
    m.live = Some(Live { idle_for_ms: 10 });
    m
}

fn kinds(p: &Plan) -> Vec<&'static str> {
    p.steps.iter().map(Step::kind).collect()
}

/// The source's value of the payload key now.
fn payload(w: &World) -> Option<String> {
    w.sites[0].images["volumes/vol1"]
        .meta
        .get(JOURNAL_PAYLOAD_KEY)
        .cloned()
}

/// A world whose source has `original` as its own payload override (or none).
fn world_with(original: Option<&str>) -> World {
    let mut w = World::standard(DEFAULT, data());
    if let Some(v) = original {
        w.sites[0]
            .images
            .get_mut("volumes/vol1")
            .unwrap()
            .meta
            .insert(JOURNAL_PAYLOAD_KEY.into(), v.into());
    }
    w
}

#[test]
fn a_live_journal_plan_sets_the_payload_right_before_the_features_and_puts_it_back_right_after_them(
) {
    for handover in [Handover::Clone, Handover::Copy] {
        let mut facts = crate::plan::test_support::facts(DEFAULT);
        facts.journal_payload_before = Some("65536".into());
        let p = Plan::volume(live(MirrorImageMode::Journal, handover), facts);
        let k = kinds(&p);
        let at = |kind: &str| k.iter().position(|x| *x == kind).unwrap();
        assert_eq!(
            at("set_journal_payload") + 1,
            at("enable_features"),
            "{k:?}"
        );
        assert_eq!(
            at("restore_features") + 1,
            at("restore_journal_payload"),
            "{k:?}"
        );
        assert!(p.steps.contains(&Step::SetJournalPayload {
            bytes: JOURNAL_PAYLOAD_BYTES
        }));
        assert!(p.steps.contains(&Step::RestoreJournalPayload {
            original: Some("65536".into())
        }));
        // the dry run names the key, the value and the original
        let text = p.render();
        assert!(
            text.contains("set image metadata conf_rbd_journal_max_payload_bytes = 8388608"),
            "{text}"
        );
        assert!(text.contains("back to its original 65536"), "{text}");
    }
}

#[test]
fn cold_snapshot_mode_and_an_image_journaled_before_leave_the_payload_alone() {
    let facts = || crate::plan::test_support::facts(DEFAULT);
    let cold = migration_of("vol1", MirrorImageMode::Journal);
    let snapshot = live(MirrorImageMode::Snapshot, Handover::Clone);
    let mut journaled = facts();
    journaled.features = DEFAULT | Features::JOURNALING;
    for p in [
        Plan::volume(cold, facts()),
        Plan::volume(snapshot, facts()),
        Plan::volume(live(MirrorImageMode::Journal, Handover::Clone), journaled),
    ] {
        let k = kinds(&p);
        assert!(!k.contains(&"set_journal_payload"), "{k:?}");
        assert!(!k.contains(&"restore_journal_payload"), "{k:?}");
    }
}

#[tokio::test]
async fn a_live_journal_migration_ends_with_the_users_own_payload_back_or_none() {
    for original in [None, Some("65536")] {
        for handover in [Handover::Clone, Handover::Copy] {
            let dir = tempfile::tempdir().unwrap();
            let (a, b, w) = pair(world_with(original));
            let m = live(MirrorImageMode::Journal, handover);
            let (plan, _) =
                crate::exec::plan_volume(&m, a.clone(), b.clone(), dir.path(), Arc::new(NullSink))
                    .await
                    .unwrap();
            assert_eq!(
                plan.facts.journal_payload_before.as_deref(),
                original,
                "preflight read the user's own value"
            );
            let s = run(&m, a, b, dir.path()).await.unwrap();
            assert!(!s.already_done);
            let ww = w.lock().unwrap();
            assert_eq!(
                payload(&ww).as_deref(),
                original,
                "{handover:?}: the source's payload as it was"
            );
            assert!(!ww.sites[0].images["volumes/vol1"]
                .meta
                .contains_key(crate::preflight::SOURCE_MARKER_KEY));
        }
    }
}

/// A live journal migration stopped (as a killed process would be) before each of its
/// steps, then aborted: the source's payload key is the user's own value again (or
/// absent), and it was this migration's 8 MiB while the steps between the set and the
/// restore ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_of_a_live_journal_migration_stopped_at_any_step_puts_the_payload_back() {
    use crate::abort::{abort, AbortOptions};
    for handover in [Handover::Clone, Handover::Copy] {
        for original in [None, Some("65536")] {
            let mut facts = crate::plan::test_support::facts(DEFAULT);
            facts.journal_payload_before = original.map(str::to_string);
            let plan = Plan::volume(live(MirrorImageMode::Journal, handover), facts);
            let k = kinds(&plan);
            let set = k.iter().position(|x| *x == "set_journal_payload").unwrap();
            let restore = k
                .iter()
                .position(|x| *x == "restore_journal_payload")
                .unwrap();
            let mut tuned_seen = false;
            for stop_at in 1..k.len() {
                let dir = tempfile::tempdir().unwrap();
                let mut world = world_with(original);
                world.sync_polls = 2;
                world.op_delay = Duration::from_millis(2);
                let (a, b, w) = pair(world);
                let m = live(MirrorImageMode::Journal, handover);
                // stopped once the state says step `stop_at` is the next to run, as by a kill
                let stopped_at = crate::fake::fixtures::drop_run_at(
                    &m,
                    a.clone(),
                    b.clone(),
                    dir.path(),
                    stop_at,
                )
                .await;
                let Some(at) = stopped_at else {
                    panic!("{handover:?}: the run never reached step {}", k[stop_at]);
                };
                let what = format!(
                    "{handover:?}, original {original:?}, stopped before {}",
                    k[at.min(k.len() - 1)]
                );
                if at > set && at < restore {
                    assert_eq!(
                        payload(&w.lock().unwrap()),
                        Some(JOURNAL_PAYLOAD_BYTES.to_string()),
                        "{what}: the migration's payload while it runs"
                    );
                    tuned_seen = true;
                }
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
                if let Err(e) = &r {
                    // a finished migration is refused; anything else must succeed
                    assert!(
                        matches!(e, Error::AbortRefusedFinished { .. }),
                        "{what}: {e}"
                    );
                }
                let ww = w.lock().unwrap();
                assert_eq!(
                    payload(&ww).as_deref(),
                    original,
                    "{what}: the source's own payload back, or none"
                );
                let src = &ww.sites[0].images["volumes/vol1"];
                assert_eq!(src.features, DEFAULT, "{what}: features back");
                assert!(
                    !src.meta.contains_key(crate::preflight::SOURCE_MARKER_KEY),
                    "{what}: marker removed"
                );
            }
            assert!(
                tuned_seen,
                "{handover:?}: a stop saw the migration's payload"
            );
        }
    }
}

/// The state file lost after the payload was set: the fresh plan takes the user's original
/// from the source's marker (not the 8 MiB it finds), and the run puts that back.
#[tokio::test]
async fn a_fresh_plan_after_a_lost_state_restores_the_original_recorded_in_the_marker() {
    let dir = tempfile::tempdir().unwrap();
    let mut world = world_with(Some("65536"));
    // the run stops after the payload and the features, at the mirroring's enable
    world.fail_once = Some("enable_mirroring".into());
    let (a, b, w) = pair(world);
    let m = live(MirrorImageMode::Journal, Handover::Clone);
    let stopped = run(&m, a.clone(), b.clone(), dir.path()).await;
    assert!(stopped.is_err(), "the run stops at enable_mirroring");
    assert_eq!(
        payload(&w.lock().unwrap()),
        Some(JOURNAL_PAYLOAD_BYTES.to_string())
    );
    std::fs::remove_dir_all(dir.path()).unwrap();
    std::fs::create_dir_all(dir.path()).unwrap();
    let (plan, _) =
        crate::exec::plan_volume(&m, a.clone(), b.clone(), dir.path(), Arc::new(NullSink))
            .await
            .unwrap();
    assert!(
        plan.steps.contains(&Step::RestoreJournalPayload {
            original: Some("65536".into())
        }),
        "{:?}",
        plan.steps
    );
    run(&m, a, b, dir.path()).await.unwrap();
    assert_eq!(payload(&w.lock().unwrap()).as_deref(), Some("65536"));
}
