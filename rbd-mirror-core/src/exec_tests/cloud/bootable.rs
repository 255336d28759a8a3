//! The bootable path against the fakes: the upload-to-image is the plan's first step, run
//! and recorded by the executor like the others, and found again by a re-run.

use super::*;
use crate::cloud::{
    AdoptCheck, AdoptSpec, AdoptTarget, AdoptedVolume, BoxFuture, CloudError, CloudErrorKind,
    CloudImage, CloudOps, CloudResult, RegisterSpec, SourceVolume,
};
use crate::exec::{migrate_bootable, plan_bootable, BootableMigration, Clouds};
use crate::fake::FakeCloud;
use crate::plan::Step;
use std::sync::Mutex;
use std::time::Duration;

/// The source cloud: one bootable volume, whose upload puts an image into the
/// source's `images` pool.
struct SourceCloud {
    world: Arc<Mutex<World>>,
    uploads: Mutex<Vec<CloudImage>>,
    lose_next_answer: Mutex<bool>,
}

fn no<T: Send + 'static>() -> BoxFuture<'static, CloudResult<T>> {
    Box::pin(async { Err(CloudError::new(CloudErrorKind::Other, "not the source's")) })
}

impl CloudOps for SourceCloud {
    fn name(&self) -> &str {
        "site-a-admin"
    }
    fn check_adopt<'a>(&'a self, _: &'a AdoptTarget) -> BoxFuture<'a, CloudResult<AdoptCheck>> {
        no()
    }
    fn adopt<'a>(&'a self, _: &'a AdoptSpec) -> BoxFuture<'a, CloudResult<AdoptedVolume>> {
        no()
    }
    fn set_image_metadata<'a>(
        &'a self,
        _: &'a str,
        _: &'a std::collections::BTreeMap<String, String>,
    ) -> BoxFuture<'a, CloudResult<()>> {
        no()
    }
    fn find_adopted<'a>(&'a self, _: &'a str) -> BoxFuture<'a, CloudResult<Vec<AdoptedVolume>>> {
        no()
    }
    fn forget_volume<'a>(&'a self, _: &'a str) -> BoxFuture<'a, CloudResult<()>> {
        no()
    }
    fn source_volume<'a>(&'a self, id: &'a str) -> BoxFuture<'a, CloudResult<SourceVolume>> {
        Box::pin(async move {
            Ok(SourceVolume {
                id: id.to_string(),
                name: Some("boot".into()),
                size_gib: 3,
                status: "available".into(),
                bootable: true,
                image_metadata: Default::default(),
                pool: "volumes".into(),
                image: format!("volume-{id}"),
            })
        })
    }
    fn check_register(&self) -> BoxFuture<'_, CloudResult<()>> {
        no()
    }
    fn register_image<'a>(&'a self, _: &'a RegisterSpec) -> BoxFuture<'a, CloudResult<CloudImage>> {
        no()
    }
    fn find_images<'a>(&'a self, _: &'a str) -> BoxFuture<'a, CloudResult<Vec<CloudImage>>> {
        no()
    }
    fn get_image<'a>(&'a self, _: &'a str) -> BoxFuture<'a, CloudResult<CloudImage>> {
        no()
    }
    fn images_named<'a>(&'a self, name: &'a str) -> BoxFuture<'a, CloudResult<Vec<CloudImage>>> {
        Box::pin(async move {
            let up = self.uploads.lock().unwrap();
            Ok(up
                .iter()
                .filter(|i| i.name.as_deref() == Some(name))
                .cloned()
                .collect())
        })
    }
    fn upload_to_image<'a>(
        &'a self,
        _volume_id: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, CloudResult<CloudImage>> {
        Box::pin(async move {
            let mut up = self.uploads.lock().unwrap();
            let id = format!("up-{}", up.len() + 1);
            self.world.lock().unwrap().sites[0]
                .images
                .insert(format!("images/{id}"), Img::new(DEFAULT, data()));
            let image = CloudImage {
                id: id.clone(),
                name: Some(name.to_string()),
                status: "active".into(),
                min_disk_gib: 0,
                size: None,
                rbd: Some(("images".into(), id)),
            };
            up.push(image.clone());
            if std::mem::take(&mut *self.lose_next_answer.lock().unwrap()) {
                return Err(CloudError::new(CloudErrorKind::Other, "connection reset"));
            }
            Ok(image)
        })
    }
}

const VOLUME: &str = "0b6f2ac5-8d47-4d0e-9b1e-2f1f2a3b4c5d";

/// The request, the two clusters, both clouds, the source cloud and the destination's record.
type Setup = (
    BootableMigration,
    Arc<crate::fake::Fake>,
    Arc<crate::fake::Fake>,
    Clouds,
    Arc<SourceCloud>,
    Arc<Mutex<crate::fake::CloudWorld>>,
);

fn setup() -> Setup {
    let (a, b, w) = pair(World::standard(DEFAULT, data()));
    for s in &mut w.lock().unwrap().sites {
        s.pools.insert("images".into(), PoolMirrorMode::Image);
        s.pools.insert("glance".into(), PoolMirrorMode::Disabled);
    }
    let (dst, c) = FakeCloud::new(w.clone());
    let src = Arc::new(SourceCloud {
        world: w,
        uploads: Mutex::default(),
        lose_next_answer: Mutex::new(false),
    });
    let clouds = Clouds {
        destination: Some(dst),
        source: Some(src.clone()),
    };
    let bm = BootableMigration {
        source: crate::spec::ClusterSpec::named("site-a").unwrap(),
        destination: crate::spec::ClusterSpec::named("site-b").unwrap(),
        volume_id: VOLUME.into(),
        source_image_pool: crate::spec::PoolSpec::new("images").unwrap(),
        into: crate::spec::PoolSpec::new("glance").unwrap(),
        name: None,
        mode: MirrorImageMode::Journal,
    };
    (bm, a, b, clouds, src, c)
}

#[tokio::test]
async fn the_dry_run_plans_the_upload_first_and_changes_nothing() {
    let (bm, a, b, clouds, src, _) = setup();
    let dir = tempfile::tempdir().unwrap();
    let (p, recorded) = plan_bootable(&bm, a, b, &clouds, dir.path(), Arc::new(NullSink))
        .await
        .unwrap();
    assert!(recorded.is_none());
    let kinds: Vec<_> = p.steps.iter().map(Step::kind).collect();
    assert_eq!(kinds, ["upload_to_image", "preflight"]);
    let text = p.render();
    assert!(
        text.contains(&format!(
            "upload volume {VOLUME} (3 GiB) to image 'boot-image'"
        )),
        "{text}"
    );
    assert!(text.contains("min_disk is at least 3 GiB"), "{text}");
    assert!(src.uploads.lock().unwrap().is_empty());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn one_plan_uploads_moves_and_registers_and_a_rerun_finds_it_done() {
    let (bm, a, b, clouds, src, c) = setup();
    let dir = tempfile::tempdir().unwrap();
    let s = migrate_bootable(
        &bm,
        a.clone(),
        b.clone(),
        &clouds,
        dir.path(),
        &opts(),
        Arc::new(NullSink),
    )
    .await
    .unwrap();
    assert_eq!(s.source, "site-a:images/up-1");
    assert_eq!(s.copy, "site-b:glance/up-1");
    assert_eq!(s.image.as_ref().unwrap().min_disk_gib, 3);
    assert_eq!(s.steps[0].0, "upload_to_image");
    assert_eq!(s.steps[1].0, "preflight");
    let recorded = crate::state::list(dir.path()).unwrap();
    assert_eq!(recorded.len(), 1, "one state file for the whole path");
    assert!(recorded[0].1.finished());
    assert!(recorded[0].1.uploaded.is_some());
    let again = migrate_bootable(&bm, a, b, &clouds, dir.path(), &opts(), Arc::new(NullSink))
        .await
        .unwrap();
    assert!(again.already_done);
    assert_eq!(src.uploads.lock().unwrap().len(), 1);
    assert_eq!(c.lock().unwrap().register_calls, 1);
}

#[tokio::test]
async fn an_upload_whose_answer_was_lost_is_taken_over_by_the_rerun() {
    let (bm, a, b, clouds, src, _) = setup();
    let dir = tempfile::tempdir().unwrap();
    *src.lose_next_answer.lock().unwrap() = true;
    let e = migrate_bootable(
        &bm,
        a.clone(),
        b.clone(),
        &clouds,
        dir.path(),
        &opts(),
        Arc::new(NullSink),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e, Error::Cloud { ref step, .. } if step == "upload_to_image"),
        "{e}"
    );
    let s = migrate_bootable(&bm, a, b, &clouds, dir.path(), &opts(), Arc::new(NullSink))
        .await
        .unwrap();
    assert_eq!(src.uploads.lock().unwrap().len(), 1, "no second upload");
    assert_eq!(s.source, "site-a:images/up-1");
}

#[tokio::test]
async fn the_upload_mark_of_an_earlier_version_is_taken_over() {
    let (bm, a, b, clouds, src, _) = setup();
    let dir = tempfile::tempdir().unwrap();
    // the earlier version sent the upload, then died before recording its answer
    *src.lose_next_answer.lock().unwrap() = true;
    let _ = src.upload_to_image(VOLUME, "boot-image").await;
    let mark = dir.path().join(format!("bootable_{VOLUME}.uploading"));
    std::fs::write(&mark, "boot-image").unwrap();
    let s = migrate_bootable(&bm, a, b, &clouds, dir.path(), &opts(), Arc::new(NullSink))
        .await
        .unwrap();
    assert_eq!(src.uploads.lock().unwrap().len(), 1, "no second upload");
    assert_eq!(s.source, "site-a:images/up-1");
    assert!(!mark.exists(), "the mark is taken over by the state file");
}

/// Cancel safety of `migrate_bootable` and `plan_bootable`: the bootable path dropped at any
/// await (each Ceph call and each cloud answer of the destination taking a few ms, so some
/// drops fall after the cloud acted) is finished by the next call with one upload and one
/// registration; the plan, dropped anywhere, uploads and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bootable_path_dropped_at_any_await_uploads_and_registers_once() {
    let mut dropped = 0;
    for ms in [0u64, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144] {
        let (bm, a, b, clouds, src, c) = setup();
        src.world.lock().unwrap().op_delay = Duration::from_millis(2);
        let dir = tempfile::tempdir().unwrap();
        let planned = plan_bootable(
            &bm,
            a.clone(),
            b.clone(),
            &clouds,
            dir.path(),
            Arc::new(NullSink),
        );
        let _ = tokio::time::timeout(Duration::from_millis(ms), planned).await;
        assert!(
            src.uploads.lock().unwrap().is_empty(),
            "{ms} ms: the plan uploaded"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "{ms} ms: the plan wrote a file"
        );
        let o = opts();
        let run = migrate_bootable(
            &bm,
            a.clone(),
            b.clone(),
            &clouds,
            dir.path(),
            &o,
            Arc::new(NullSink),
        );
        if tokio::time::timeout(Duration::from_millis(ms), run)
            .await
            .is_err()
        {
            dropped += 1;
        }
        let s = migrate_bootable(&bm, a, b, &clouds, dir.path(), &opts(), Arc::new(NullSink))
            .await
            .unwrap_or_else(|e| panic!("{ms} ms: the next call failed: {e}"));
        assert_eq!(s.source, "site-a:images/up-1", "{ms} ms");
        assert_eq!(src.uploads.lock().unwrap().len(), 1, "{ms} ms: one upload");
        assert_eq!(
            c.lock().unwrap().register_calls,
            1,
            "{ms} ms: one registration"
        );
        let recorded = crate::state::list(dir.path()).unwrap();
        assert_eq!(recorded.len(), 1, "{ms} ms: one state file");
        assert!(recorded[0].1.finished(), "{ms} ms");
    }
    assert!(dropped >= 3, "only {dropped} runs were dropped midway");
}
