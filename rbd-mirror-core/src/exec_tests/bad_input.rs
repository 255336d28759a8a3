//! Bad input through the library's entry points (`migrate_volume`, `plan_volume`,
//! `check_source`): each refusal names the thing and the next command, lists every problem
//! it found, and leaves both fake clusters and the state directory as they were.

use super::*;
use crate::ops::CephOps;
use crate::preflight::check_source;
use crate::spec::PoolSpec;

/// Run `m` on `world`; its preflight refusal text, after checking that nothing changed on
/// either cluster and no state was recorded. Also asserts that a dry run (`plan_volume`) is
/// refused the same way.
async fn refused(world: World, m: &VolumeMigration) -> String {
    let dir = tempfile::tempdir().unwrap();
    let before = world.clone();
    let (a, b, w) = pair(world);
    let planned = plan_volume(m, a.clone(), b.clone(), dir.path(), Arc::new(NullSink))
        .await
        .unwrap_err();
    let e = run(m, a, b, dir.path()).await.unwrap_err();
    assert!(matches!(e, Error::Preflight(_)), "{e}");
    assert_eq!(
        planned.to_string(),
        e.to_string(),
        "the dry run says the same"
    );
    assert!(*w.lock().unwrap() == before, "something changed: {e}");
    let recorded: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    assert!(recorded.is_empty(), "state recorded: {recorded:?}");
    e.to_string()
}

fn journal() -> VolumeMigration {
    migration(MirrorImageMode::Journal)
}

#[tokio::test]
async fn a_source_pool_in_pool_mode_is_refused_naming_the_pool_and_the_mode_switch() {
    let mut world = World::standard(DEFAULT, data());
    world.sites[0]
        .pools
        .insert("volumes".into(), PoolMirrorMode::Pool);
    let text = refused(world, &journal()).await;
    assert!(
        text.contains("pool 'volumes' on site-a mirrors in pool mode"),
        "{text}"
    );
    assert!(text.contains("rbd mirror pool enable POOL image"), "{text}");
    assert!(!text.contains("on site-b mirrors"), "{text}");
}

#[tokio::test]
async fn a_destination_pool_in_pool_mode_is_refused_naming_its_cluster() {
    let mut world = World::standard(DEFAULT, data());
    world.sites[1]
        .pools
        .insert("volumes".into(), PoolMirrorMode::Pool);
    let text = refused(world, &journal()).await;
    assert!(
        text.contains("pool 'volumes' on site-b mirrors in pool mode"),
        "{text}"
    );
}

#[tokio::test]
async fn mirroring_off_on_both_sides_names_both_clusters_in_one_refusal() {
    let mut world = World::standard(DEFAULT, data());
    for s in &mut world.sites {
        s.pools.insert("volumes".into(), PoolMirrorMode::Disabled);
    }
    let text = refused(world, &journal()).await;
    for site in ["site-a", "site-b"] {
        assert!(
            text.contains(&format!("mirroring is off for pool 'volumes' on {site}"))
                && text.contains(&format!(
                    "rbd --cluster {site} mirror pool enable volumes image"
                )),
            "{site}: {text}"
        );
    }
    assert!(text.contains("--enable-pool-mirroring"), "{text}");
}

#[tokio::test]
async fn an_image_mirrored_in_the_other_mode_is_refused_naming_the_mode() {
    let mut world = World::standard(DEFAULT, data());
    world.sites[0]
        .images
        .get_mut("volumes/vol1")
        .unwrap()
        .mirror = Some((MirrorImageMode::Snapshot, true));
    world.sync_polls = 0;
    world.replicate(); // its replica, made and synced by rbd-mirror long ago
    let text = refused(world, &journal()).await;
    assert!(
        text.contains("site-a:volumes/vol1 is already mirrored in snapshot mode")
            && text.contains("--mode matching the existing mirroring"),
        "{text}"
    );
}

#[tokio::test]
async fn an_unrelated_image_under_the_replicas_name_is_refused() {
    let mut world = World::standard(DEFAULT, data());
    world.sites[1]
        .images
        .insert("volumes/vol1".into(), Img::new(DEFAULT, vec![9; 10]));
    let text = refused(world, &journal()).await;
    assert!(
        text.contains("site-b:volumes/vol1 already exists and is not a replica of this image")
            && text.contains("rename or remove that image"),
        "{text}"
    );
}

#[tokio::test]
async fn a_copy_into_the_mirrored_pool_under_the_same_name_is_refused() {
    let mut m = journal();
    m.into = PoolSpec::new("volumes").unwrap();
    let text = refused(World::standard(DEFAULT, data()), &m).await;
    assert!(
        text.contains("the copy volumes/vol1 would replace the replica itself")
            && text.contains("give --into a pool other than the mirrored pool"),
        "{text}"
    );
}

/// `volumes/vol1` as a clone of `volumes/base@s`; the parent mirrored or not.
fn clone_world(parent_mirrored: bool) -> World {
    let mut world = World::standard(DEFAULT, data());
    let mut base = Img::new(DEFAULT, data());
    if parent_mirrored {
        base.mirror = Some((MirrorImageMode::Journal, true));
        base.features |= Features::JOURNALING;
    }
    world.sites[0].images.insert("volumes/base".into(), base);
    world.sync_polls = 0;
    world.replicate(); // a mirrored parent's replica, made and synced long ago
    world.sites[0]
        .images
        .get_mut("volumes/vol1")
        .unwrap()
        .parent = Some(("volumes/base".into(), "s".into()));
    world
}

#[tokio::test]
async fn a_clone_whose_parent_is_not_mirrored_is_refused_before_its_features_change() {
    let text = refused(clone_world(false), &journal()).await;
    assert!(
        text.contains(
            "site-a:volumes/vol1 is a clone of volumes/base@s, which is not mirrored; rbd-mirror mirrors a clone only together with its parent"
        ) && text.contains("rbd --cluster site-a flatten volumes/vol1"),
        "{text}"
    );
}

#[tokio::test]
async fn a_clone_whose_parent_is_mirrored_passes_the_parent_check() {
    // the check refuses only what librbd would refuse: with the parent mirrored, the
    // preflight has nothing to say about the parent
    let dir = tempfile::tempdir().unwrap();
    let (a, b, w) = pair(clone_world(true));
    let before = w.lock().unwrap().clone();
    let (plan, _) = plan_volume(&journal(), a, b, dir.path(), Arc::new(NullSink))
        .await
        .unwrap();
    assert!(!plan.render().is_empty());
    assert_eq!(*w.lock().unwrap(), before);
}

#[tokio::test]
async fn without_the_parent_check_the_clone_would_fail_after_a_change() {
    // the fake refuses to mirror a clone of an unmirrored parent as librbd does: the reason
    // the check runs in preflight
    let (a, _, _) = pair(clone_world(false));
    let spec: crate::spec::ImageSpec = "volumes/vol1".parse().unwrap();
    let e = a
        .enable_mirroring(&spec, MirrorImageMode::Snapshot)
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("mirroring is not enabled for the parent"),
        "{e}"
    );
}

#[tokio::test]
async fn one_refusal_lists_every_problem_of_source_destination_and_names() {
    // five problems at once: pool mode on the source, the image in use, an unrelated image
    // under the replica's name, the copy's name taken, no daemon on the destination
    let mut world = World::standard(DEFAULT, data());
    world.sites[0]
        .pools
        .insert("volumes".into(), PoolMirrorMode::Pool);
    world.sites[0]
        .images
        .get_mut("volumes/vol1")
        .unwrap()
        .watchers = vec!["10.0.0.9:0/1".into()];
    world.sites[1]
        .images
        .insert("volumes/vol1".into(), Img::new(DEFAULT, vec![1]));
    world.sites[1]
        .images
        .insert("cinder/vol1".into(), Img::new(DEFAULT, vec![2]));
    world.sites[1].daemon_healthy = false;
    let text = refused(world, &journal()).await;
    for needle in [
        "pool 'volumes' on site-a mirrors in pool mode",
        "site-a:volumes/vol1 is in use (watchers: 10.0.0.9:0/1)",
        "site-b:volumes/vol1 already exists and is not a replica",
        "site-b:cinder/vol1 already exists; choose another --name",
        "no healthy rbd-mirror daemon runs for site-b",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
}

#[tokio::test]
async fn check_source_names_a_missing_source_pool_and_changes_nothing() {
    let mut world = World::standard(DEFAULT, data());
    world.sites[0].pools.remove("volumes");
    world.sites[0].images.clear();
    let before = world.clone();
    let (a, _, w) = pair(world);
    let e = check_source(&journal(), a.as_ref(), &NullSink).unwrap_err();
    assert!(
        e.to_string()
            .contains("pool 'volumes' does not exist on site-a"),
        "{e}"
    );
    assert_eq!(*w.lock().unwrap(), before);
}

#[tokio::test]
async fn check_source_refuses_a_clone_of_an_unmirrored_parent_too() {
    let world = clone_world(false);
    let before = world.clone();
    let (a, _, w) = pair(world);
    let e = check_source(&journal(), a.as_ref(), &NullSink).unwrap_err();
    assert!(
        e.to_string().contains("is a clone of volumes/base@s"),
        "{e}"
    );
    assert_eq!(*w.lock().unwrap(), before);
}

#[tokio::test]
async fn a_state_dir_that_is_a_file_is_refused_naming_it_before_any_ceph_call() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state");
    std::fs::write(&file, b"not a directory").unwrap();
    let world = World::standard(DEFAULT, data());
    let before = world.clone();
    let (a, b, w) = pair(world);
    let e = run(&journal(), a, b, &file).await.unwrap_err();
    assert!(
        matches!(&e, Error::State { path, .. } if path == &file)
            && e.to_string().contains("cannot create directory"),
        "{e}"
    );
    assert_eq!(*w.lock().unwrap(), before);
    assert_eq!(std::fs::read(&file).unwrap(), b"not a directory");
}

#[tokio::test]
async fn a_wrong_cinder_host_does_not_hide_a_missing_source_image() {
    use crate::cloud::AdoptTarget;
    use crate::exec::{migrate, plan, Clouds};
    use crate::fake::FakeCloud;
    use crate::plan::Adoption;
    let mut world = World::standard(DEFAULT, data());
    world.sites[0].images.clear();
    let before = world.clone();
    let (a, b, w) = pair(world);
    let (cloud, c) = FakeCloud::new(w.clone());
    let clouds = Clouds {
        destination: Some(cloud),
        source: None,
    };
    let mut m = journal();
    m.adopt = Some(Adoption {
        cloud: "site-b-admin".into(),
        target: AdoptTarget::Host {
            host: "nohost@ceph#ceph".into(),
        },
        name: None,
        bootable: false,
        image_metadata: Default::default(),
        no_grow: false,
    });
    let dir = tempfile::tempdir().unwrap();
    let planned = plan(
        &m,
        a.clone(),
        b.clone(),
        &clouds,
        dir.path(),
        Arc::new(NullSink),
    )
    .await
    .unwrap_err();
    let e = migrate(&m, a, b, &clouds, dir.path(), &opts(), Arc::new(NullSink))
        .await
        .unwrap_err();
    for text in [e.to_string(), planned.to_string()] {
        assert!(
            text.contains("Host nohost@ceph#ceph could not be found")
                && text.contains("give --cinder-host as 'cinder get-pools'"),
            "{text}"
        );
        assert!(
            text.contains("image 'volumes/vol1' does not exist on site-a"),
            "{text}"
        );
    }
    assert_eq!(*w.lock().unwrap(), before);
    assert_eq!(c.lock().unwrap().adopt_calls, 0);
}
