//! Cancel safety of the public async functions, as a library user meets it: a future dropped
//! at any await point (a `tokio::time::timeout`, a `select!` on Ctrl-C) leaves a state that
//! the same call finishes later, with no lock left behind and the same end state as an
//! undisturbed run.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use crate::abort::{abort, AbortOptions};
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
            AbortOptions::default(),
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
            AbortOptions::default(),
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
