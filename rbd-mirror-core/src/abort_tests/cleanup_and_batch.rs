//! `cleanup` of the source side, batches where one image fails, and state files that are
//! refused (outside the state directory, damaged).

use std::sync::Arc;

use crate::abort::abort;
use crate::batch::{check_distinct, migrate_batch};
use crate::cleanup::cleanup;
use crate::error::Error;
use crate::event::NullSink;
use crate::exec::{migrate, Clouds};
use crate::fake::fixtures::{data, migration_of as migration, opts, run, DEFAULT};
use crate::fake::{pair, FakeCloud, Img, World};
use crate::features::MirrorImageMode;
use crate::plan::Adoption;
use crate::state::{self, StateFile};

/// Over 120 lines on purpose: one migration's life through cleanup (refused before the copy
/// is verified, run, re-run, resume, `--forget`), each stage starting from the one before.
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
        image_metadata: Default::default(),
        no_grow: false,
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
    // the copy (4099 bytes) is grown to a whole GiB right before its adoption: left too
    assert_eq!(r.remaining, ["grow_copy", "adopt_volume"]);
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
                crate::fake::fixtures::abort_opts(),
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
                crate::fake::fixtures::abort_opts(),
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
