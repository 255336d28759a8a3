//! Preflight's room checks: the copy pool, the replica's pool quota and the data pool
//! must hold the image before anything changes.

use super::*;

fn space(max_avail: u64, stored: u64, quota: Option<u64>) -> crate::ops::PoolSpace {
    crate::ops::PoolSpace {
        max_avail,
        stored,
        quota_max_bytes: quota,
    }
}

#[tokio::test]
async fn a_copy_pool_without_room_for_the_image_is_refused_naming_pool_and_bytes() {
    // data() is 4099 bytes: the copy needs them in `cinder`
    let mut world = World::standard(DEFAULT, data());
    world.sites[1]
        .space
        .insert("cinder".into(), space(4000, 0, None));
    let text = refused_by_preflight(world).await;
    assert!(
        text.contains("not enough room in pool 'cinder' on site-b"),
        "{text}"
    );
    assert!(text.contains("for the copy of volumes/vol1"), "{text}");
    assert!(text.contains("needs 4099 bytes"), "{text}");
    assert!(text.contains("3.9 KiB) available"), "{text}");
    assert!(text.contains("free space in pool 'cinder'"), "{text}");
}

#[tokio::test]
async fn a_pool_quota_too_small_for_the_replica_is_refused_naming_the_quota() {
    // plenty of disk, but the quota leaves 5000 - 2000 = 3000 bytes for the replica's 4099
    let mut world = World::standard(DEFAULT, data());
    world.sites[1]
        .space
        .insert("volumes".into(), space(1 << 40, 2000, Some(5000)));
    let text = refused_by_preflight(world).await;
    assert!(
        text.contains("not enough room in pool 'volumes' on site-b for the replica"),
        "{text}"
    );
    assert!(text.contains("3000 bytes (2.9 KiB) available"), "{text}");
    assert!(text.contains("quota 5000 bytes"), "{text}");
    assert!(
        text.contains("osd pool set-quota volumes max_bytes"),
        "{text}"
    );
}

#[tokio::test]
async fn room_for_exactly_the_replica_and_the_copy_is_enough() {
    let mut world = World::standard(DEFAULT, data());
    world.sites[1]
        .space
        .insert("volumes".into(), space(1 << 40, 1000, Some(1000 + 4099)));
    world.sites[1]
        .space
        .insert("cinder".into(), space(4099, 0, None));
    let dir = tempfile::tempdir().unwrap();
    let (a, b, w) = pair(world);
    run(&migration(MirrorImageMode::Journal), a, b, dir.path())
        .await
        .unwrap();
    assert_migrated(&w.lock().unwrap(), DEFAULT);
}

/// A world whose source image keeps its data in pool `ec`, which exists on the source and,
/// when `on_destination`, on the destination.
fn world_with_data_pool(on_destination: bool) -> World {
    let mut world = World::standard(DEFAULT, data());
    world.sites[0]
        .pools
        .insert("ec".into(), PoolMirrorMode::Disabled);
    if on_destination {
        world.sites[1]
            .pools
            .insert("ec".into(), PoolMirrorMode::Disabled);
    }
    world.sites[0]
        .images
        .get_mut("volumes/vol1")
        .unwrap()
        .data_pool = Some("ec".into());
    world
}

#[tokio::test]
async fn a_data_pool_missing_on_the_destination_is_refused_naming_it() {
    let text = refused_by_preflight(world_with_data_pool(false)).await;
    assert!(
        text.contains("site-a:volumes/vol1 keeps its data in pool 'ec' (a data pool), and site-b has no pool 'ec'"),
        "{text}"
    );
    assert!(text.contains("osd pool create ec"), "{text}");
}

#[tokio::test]
async fn the_replica_and_the_copy_both_count_against_the_data_pool() {
    // both write their data into `ec`: 2 x 4099 bytes do not fit in 8000
    let mut world = world_with_data_pool(true);
    world.sites[1]
        .space
        .insert("ec".into(), space(8000, 0, None));
    let text = refused_by_preflight(world).await;
    assert!(
        text.contains("not enough room in pool 'ec' on site-b for the replica and the copy"),
        "{text}"
    );
    assert!(text.contains("needs 8198 bytes"), "{text}");
}

#[tokio::test]
async fn a_copy_keeps_the_source_data_pool() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, w) = pair(world_with_data_pool(true));
    run(&migration(MirrorImageMode::Snapshot), a, b, dir.path())
        .await
        .unwrap();
    let w = w.lock().unwrap();
    assert_eq!(
        w.sites[1].images["cinder/vol1"].data_pool.as_deref(),
        Some("ec"),
        "the copy's data stays in the data pool"
    );
}

#[tokio::test]
async fn allow_overcommit_turns_a_shortage_into_a_warning_and_migrates() {
    let mut world = World::standard(DEFAULT, data());
    world.sites[1]
        .space
        .insert("cinder".into(), space(4000, 0, None));
    let warnings = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = {
        let warnings = warnings.clone();
        move |e: crate::event::Event| {
            if let crate::event::Event::Warning { message } = e {
                warnings.lock().unwrap().push(message);
            }
        }
    };
    let mut m = migration(MirrorImageMode::Journal);
    m.allow_overcommit = true;
    let dir = tempfile::tempdir().unwrap();
    let (a, b, w) = pair(world);
    migrate_volume(&m, a, b, dir.path(), &opts(), Arc::new(sink))
        .await
        .unwrap();
    assert_migrated(&w.lock().unwrap(), DEFAULT);
    let warnings = warnings.lock().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("not enough room in pool 'cinder'")
                && w.contains("--allow-overcommit")),
        "{warnings:?}"
    );
}

#[tokio::test]
async fn a_copy_that_times_out_on_a_full_pool_names_the_pool_its_quota_and_the_command() {
    // the quota is reached during the copy (accepted at preflight with --allow-overcommit):
    // Ceph holds the write until it times out
    let dir = tempfile::tempdir().unwrap();
    let mut world = World::standard(DEFAULT, data());
    world.sites[1]
        .space
        .insert("cinder".into(), space(1 << 40, 6000, Some(5000)));
    world.fail_once = Some("copy".into());
    world.fail_once_kind = Some(crate::ops::ErrorKind::TimedOut);
    let (a, b, w) = pair(world);
    let mut m = migration(MirrorImageMode::Journal);
    m.allow_overcommit = true;
    let e = run(&m, a.clone(), b.clone(), dir.path()).await.unwrap_err();
    assert!(matches!(e, Error::PoolFull { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains("pool 'cinder' is full"), "{text}");
    assert!(
        text.contains("its quota max_bytes 5000 is reached, 6000 bytes stored"),
        "{text}"
    );
    assert!(
        text.contains("ceph --cluster site-b osd pool set-quota cinder max_bytes 0"),
        "{text}"
    );
    assert_eq!(
        w.lock().unwrap().sites[0].images["volumes/vol1"].data,
        data(),
        "the source is untouched"
    );

    // the quota lifted, the re-run finishes
    w.lock().unwrap().sites[1].space.remove("cinder");
    run(&m, a, b, dir.path()).await.unwrap();
    assert_migrated(&w.lock().unwrap(), DEFAULT);
}

#[tokio::test]
async fn a_timeout_on_a_pool_with_room_stays_a_timeout_naming_the_unanswering_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let mut world = World::standard(DEFAULT, data());
    world.fail_once = Some("copy".into());
    world.fail_once_kind = Some(crate::ops::ErrorKind::TimedOut);
    let (a, b, _w) = pair(world);
    let m = migration(MirrorImageMode::Journal);
    let e = run(&m, a, b, dir.path()).await.unwrap_err();
    assert!(matches!(e, Error::Ceph { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains("site-b did not answer in time"), "{text}");
    assert!(text.contains("re-run to continue"), "{text}");
}

#[tokio::test]
async fn a_pool_mirror_mode_that_cannot_be_read_is_not_also_called_off() {
    // an OSD that does not answer: the mode is unknown, not "off"
    let dir = tempfile::tempdir().unwrap();
    let mut world = World::standard(DEFAULT, data());
    world.fail_once = Some("pool_mirror_mode".into());
    world.fail_once_kind = Some(crate::ops::ErrorKind::TimedOut);
    let (a, b, _w) = pair(world);
    let e = run(&migration(MirrorImageMode::Journal), a, b, dir.path())
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, Error::Preflight(_)), "{text}");
    assert!(
        text.contains("cannot read mirror mode of pool volumes on site-a"),
        "{text}"
    );
    assert!(!text.contains("mirroring is off"), "{text}");
}
