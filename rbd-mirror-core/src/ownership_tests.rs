//! Unit tests, on the in-memory fake, of what a migration owns: only the copy it created
//! (by recorded image id) is ever removed, one copy target serves one migration, and the
//! source's originals survive a lost or damaged state file (issue 14, items 1 and 6).

use std::sync::Arc;

use crate::abort::{abort, AbortOptions};
use crate::batch::check_distinct;
use crate::error::Error;
use crate::event::NullSink;
use crate::fake::fixtures::{data, migration_of as migration, run, DEFAULT};
use crate::fake::{pair, Img, World};
use crate::features::MirrorImageMode;
use crate::plan::VolumeMigration;
use crate::state::{self, StateFile};

/// `site-a:volumes/IMAGE` copied into `site-b:cinder` as `NAME`.
fn migration_named(image: &str, name: &str) -> VolumeMigration {
    let mut m = migration(image, MirrorImageMode::Journal);
    m.dest_name = name.to_string();
    m
}

#[tokio::test]
async fn a_copy_made_by_another_migration_survives_a_rerun_and_an_abort() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, w) = pair(World::standard(DEFAULT, data()));
    let m = migration("vol1", MirrorImageMode::Journal);
    // this migration fails in its copy: the copy step had started, no image was made
    w.lock().unwrap().fail_once = Some("copy".into());
    run(&m, a.clone(), b.clone(), dir.path()).await.unwrap_err();
    let recorded = state::recorded(dir.path(), &m.id()).unwrap();
    assert!(recorded.copy_started && recorded.copy_id.is_none());
    // meanwhile another migration (another state dir, another host) made its verified copy
    // under the same name
    let theirs = Img::new(DEFAULT, vec![42; 100]);
    w.lock().unwrap().sites[1]
        .images
        .insert("cinder/vol1".into(), theirs.clone());

    let e = run(&m, a.clone(), b.clone(), dir.path()).await.unwrap_err();
    assert!(
        e.to_string().contains("was not created by migration")
            && e.to_string().contains(&theirs.id),
        "{e}"
    );
    assert_eq!(
        w.lock().unwrap().sites[1].images["cinder/vol1"],
        theirs,
        "re-run kept it"
    );

    let report = abort(
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
    assert!(
        report.notes.iter().any(|n| n.contains("left alone")),
        "{report:?}"
    );
    let w = w.lock().unwrap();
    assert_eq!(w.sites[1].images["cinder/vol1"], theirs, "abort kept it");
    assert_eq!(w.sites[0].images["volumes/vol1"].features, DEFAULT);
}

#[tokio::test]
async fn a_copy_this_migration_made_is_recorded_by_id_and_removed_by_abort() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, w) = pair(World::standard(DEFAULT, data()));
    let m = migration("vol1", MirrorImageMode::Journal);
    // stops at verify, after the copy exists
    w.lock().unwrap().fail_once = Some("digest".into());
    run(&m, a.clone(), b.clone(), dir.path()).await.unwrap_err();
    let copy_id = w.lock().unwrap().sites[1].images["cinder/vol1"].id.clone();
    let recorded = state::recorded(dir.path(), &m.id()).unwrap();
    assert_eq!(recorded.copy_id.as_deref(), Some(copy_id.as_str()));
    abort(
        dir.path(),
        &m.id(),
        a,
        b,
        crate::fake::fixtures::abort_opts(),
        Arc::new(NullSink),
    )
    .await
    .unwrap();
    assert!(!w.lock().unwrap().sites[1]
        .images
        .contains_key("cinder/vol1"));
}

#[test]
fn two_sources_with_one_copy_target_are_refused_in_a_batch() {
    let mut other_pool = migration("x", MirrorImageMode::Journal);
    other_pool.image = "images/x".parse().unwrap();
    let e = check_distinct(&[migration("x", MirrorImageMode::Journal), other_pool]).unwrap_err();
    assert!(
        e.to_string()
            .contains("would both be copied to site-b:cinder/x"),
        "{e}"
    );
    // other names in the same pool are fine
    check_distinct(&[migration_named("x", "x"), migration_named("y", "y")]).unwrap();
}

#[tokio::test]
async fn a_copy_target_locked_by_another_migration_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, w) = pair(World::standard(DEFAULT, data()));
    let other = migration_named("vol2", "vol1");
    let _held = StateFile::lock_migration(dir.path(), &other).unwrap();
    let before = w.lock().unwrap().clone();
    let e = run(
        &migration("vol1", MirrorImageMode::Journal),
        a,
        b,
        dir.path(),
    )
    .await
    .unwrap_err();
    match &e {
        Error::TargetLocked {
            other: o, target, ..
        } => {
            assert_eq!(o, &other.id());
            assert_eq!(target, "site-b:cinder/vol1");
        }
        _ => panic!("{e}"),
    }
    assert!(e.to_string().contains(&other.id()), "{e}");
    assert_eq!(*w.lock().unwrap(), before, "nothing changed");
}

#[tokio::test]
async fn a_copy_target_recorded_by_another_migration_is_refused_across_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut world = World::standard(DEFAULT, data());
    world.sites[0]
        .images
        .insert("volumes/vol2".into(), Img::new(DEFAULT, data()));
    let (a, b, w) = pair(world);
    // the other migration (volumes/vol2 copied as vol1) stopped at verify
    let other = migration_named("vol2", "vol1");
    w.lock().unwrap().fail_once = Some("digest".into());
    run(&other, a.clone(), b.clone(), dir.path())
        .await
        .unwrap_err();
    let before = w.lock().unwrap().clone();
    let e = run(
        &migration("vol1", MirrorImageMode::Journal),
        a,
        b,
        dir.path(),
    )
    .await
    .unwrap_err();
    assert!(
        e.to_string()
            .contains(&format!("claimed by migration {}", other.id())),
        "{e}"
    );
    assert_eq!(*w.lock().unwrap(), before, "nothing changed");
}

/// Stop `m` in its wait for the replica, after it enabled journaling and mirroring on the
/// source.
async fn stop_in_the_wait(
    m: &VolumeMigration,
    a: Arc<crate::fake::Fake>,
    b: Arc<crate::fake::Fake>,
    w: &std::sync::Mutex<World>,
    dir: &std::path::Path,
) {
    w.lock().unwrap().fail_once = Some("journal_positions".into());
    run(m, a, b, dir).await.unwrap_err();
    let ww = w.lock().unwrap();
    let src = &ww.sites[0].images["volumes/vol1"];
    assert!(src.features.contains(crate::features::Features::JOURNALING));
    assert!(src.mirror.is_some());
}

fn forget_state_files(dir: &std::path::Path, m: &VolumeMigration) {
    let path = StateFile::path_for(dir, &m.id());
    std::fs::remove_file(&path).unwrap();
    let _ = std::fs::remove_file(state::backup_path(&path));
}

#[tokio::test]
async fn a_lost_state_file_takes_the_originals_from_the_source_marker() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, w) = pair(World::standard(DEFAULT, data()));
    let m = migration("vol1", MirrorImageMode::Journal);
    stop_in_the_wait(&m, a.clone(), b.clone(), &w, dir.path()).await;
    forget_state_files(dir.path(), &m);

    run(&m, a, b, dir.path()).await.unwrap();
    let ww = w.lock().unwrap();
    let src = &ww.sites[0].images["volumes/vol1"];
    assert_eq!(src.features, DEFAULT, "the true originals, not journaling");
    assert_eq!(src.mirror, None, "mirroring was off before: off again");
    assert!(src.meta.is_empty(), "marker removed: {:?}", src.meta);
    assert_eq!(ww.sites[1].images["cinder/vol1"].data, data());
}

#[tokio::test]
async fn an_abort_after_a_lost_state_file_restores_the_originals_from_the_marker() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, w) = pair(World::standard(DEFAULT, data()));
    let m = migration("vol1", MirrorImageMode::Journal);
    stop_in_the_wait(&m, a.clone(), b.clone(), &w, dir.path()).await;
    forget_state_files(dir.path(), &m);
    // the fresh plan records the marker's originals; it stops again and is aborted
    stop_in_the_wait(&m, a.clone(), b.clone(), &w, dir.path()).await;
    abort(
        dir.path(),
        &m.id(),
        a,
        b,
        crate::fake::fixtures::abort_opts(),
        Arc::new(NullSink),
    )
    .await
    .unwrap();
    let ww = w.lock().unwrap();
    let src = &ww.sites[0].images["volumes/vol1"];
    assert_eq!(src.features, DEFAULT);
    assert_eq!(src.mirror, None);
    assert!(src.meta.is_empty(), "marker removed: {:?}", src.meta);
}

#[tokio::test]
async fn a_marker_of_another_migration_or_state_dir_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let (a, b, w) = pair(World::standard(DEFAULT, data()));
    let m = migration("vol1", MirrorImageMode::Journal);
    // the same migration started from another state directory (another host, say)
    stop_in_the_wait(&m, a.clone(), b.clone(), &w, other_dir.path()).await;
    let before = w.lock().unwrap().clone();
    let e = run(&m, a.clone(), b.clone(), dir.path()).await.unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("is being migrated by migration") && text.contains(&m.id()),
        "{text}"
    );
    assert!(
        text.contains(
            &std::fs::canonicalize(other_dir.path())
                .unwrap()
                .display()
                .to_string()
        ),
        "{text}"
    );
    // (the fake's rbd-mirror goes on syncing the replica of the stopped run meanwhile)
    assert!(
        w.lock().unwrap().sites[0] == before.sites[0],
        "nothing changed on the source"
    );

    // another migration of the image (another copy name)
    let mut renamed = m.clone();
    renamed.dest_name = "vol1-copy".into();
    let e = run(&renamed, a, b, dir.path()).await.unwrap_err();
    assert!(e.to_string().contains(&m.id()), "{e}");
    let ww = w.lock().unwrap();
    assert!(
        ww.sites[0] == before.sites[0] && !ww.sites[1].images.contains_key("cinder/vol1-copy"),
        "nothing changed"
    );
}

#[tokio::test]
async fn a_state_file_of_an_unknown_plan_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, w) = pair(World::standard(DEFAULT, data()));
    let m = migration("vol1", MirrorImageMode::Journal);
    stop_in_the_wait(&m, a.clone(), b.clone(), &w, dir.path()).await;
    let path = StateFile::path_for(dir.path(), &m.id());
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    json["plan"]["version"] = 99.into();
    std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    let before = w.lock().unwrap().clone();
    let e = run(&m, a, b, dir.path()).await.unwrap_err();
    assert!(
        e.to_string().contains("newer rbd-relay (plan version 99"),
        "{e}"
    );
    assert_eq!(*w.lock().unwrap(), before, "nothing changed");
    assert!(state::load(&path).is_err(), "not replaced by the backup");
}

#[tokio::test]
async fn a_truncated_state_file_is_recovered_from_its_backup() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, w) = pair(World::standard(DEFAULT, data()));
    let m = migration("vol1", MirrorImageMode::Journal);
    stop_in_the_wait(&m, a.clone(), b.clone(), &w, dir.path()).await;
    let path = StateFile::path_for(dir.path(), &m.id());
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let loaded = state::load_checked(&path).unwrap().unwrap();
    let why = loaded.recovered.expect("recovered from the backup");
    assert!(why.contains(".json.bak"), "{why}");
    assert_eq!(loaded.state.plan.facts.features, DEFAULT);

    run(&m, a, b, dir.path()).await.unwrap();
    let ww = w.lock().unwrap();
    let src = &ww.sites[0].images["volumes/vol1"];
    assert_eq!(src.features, DEFAULT);
    assert_eq!(src.mirror, None);
}
