//! Unit tests of `delete_source` on the in-memory fake: it re-verifies, refuses unsafe cases
//! and changes nothing when it refuses.

use std::sync::Arc;

use crate::delete::delete_source;
use crate::error::Error;
use crate::event::NullSink;
use crate::fake::fixtures::{migration_of, run};
use crate::fake::{pair, World};
use crate::features::Features;
use crate::plan::VolumeMigration;

fn migration() -> VolumeMigration {
    migration_of("vol1", crate::features::MirrorImageMode::Journal)
}

#[tokio::test]
async fn deletes_only_after_re_verifying() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, w) = pair(World::standard(
        Features::LAYERING | Features::EXCLUSIVE_LOCK,
        vec![7; 1000],
    ));
    let m = migration();
    // not recorded yet
    let e = delete_source(
        dir.path(),
        &m.id(),
        None,
        a.clone(),
        b.clone(),
        Arc::new(NullSink),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::State { .. }), "{e}");
    run(&m, a.clone(), b.clone(), dir.path()).await.unwrap();

    // in use: refused, nothing changed
    w.lock().unwrap().sites[0]
        .images
        .get_mut("volumes/vol1")
        .unwrap()
        .watchers = vec!["c".into()];
    let e = delete_source(
        dir.path(),
        &m.id(),
        None,
        a.clone(),
        b.clone(),
        Arc::new(NullSink),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("in use"), "{e}");
    w.lock().unwrap().sites[0]
        .images
        .get_mut("volumes/vol1")
        .unwrap()
        .watchers
        .clear();

    // the copy changed since: refused by the re-verification
    w.lock().unwrap().sites[1]
        .images
        .get_mut("cinder/vol1")
        .unwrap()
        .data[0] ^= 1;
    let e = delete_source(
        dir.path(),
        &m.id(),
        None,
        a.clone(),
        b.clone(),
        Arc::new(NullSink),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::VerifyMismatch { .. }), "{e}");
    assert!(
        w.lock().unwrap().sites[0]
            .images
            .contains_key("volumes/vol1"),
        "source kept"
    );
    w.lock().unwrap().sites[1]
        .images
        .get_mut("cinder/vol1")
        .unwrap()
        .data[0] ^= 1;

    let r = delete_source(
        dir.path(),
        &m.id(),
        None,
        a.clone(),
        b.clone(),
        Arc::new(NullSink),
    )
    .await
    .unwrap();
    assert!(!r.already_deleted);
    assert!(!w.lock().unwrap().sites[0]
        .images
        .contains_key("volumes/vol1"));
    let again = delete_source(dir.path(), &m.id(), None, a, b, Arc::new(NullSink))
        .await
        .unwrap();
    assert!(again.already_deleted);
}

#[tokio::test]
async fn refuses_an_unfinished_migration() {
    let dir = tempfile::tempdir().unwrap();
    let mut world = World::standard(Features::LAYERING, vec![1; 100]);
    world.fail_once = Some("copy".into());
    let (a, b, w) = pair(world);
    let m = migration();
    assert!(run(&m, a.clone(), b.clone(), dir.path()).await.is_err());
    let e = delete_source(dir.path(), &m.id(), None, a, b, Arc::new(NullSink))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not finished"), "{e}");
    assert!(w.lock().unwrap().sites[0]
        .images
        .contains_key("volumes/vol1"));
}
