//! Unit tests of the fake itself: it must behave as librbd and rbd-mirror do, or the
//! engine tests that rely on it prove nothing.

use super::fixtures::{data, DEFAULT};
use super::*;

fn spec(s: &str) -> ImageSpec {
    s.parse().unwrap()
}

/// A pair with `volumes/vol1` mirrored in journal mode and its replica caught up.
fn mirrored() -> (Arc<Fake>, Arc<Fake>, Arc<Mutex<World>>) {
    let (a, b, w) = pair(World::standard(DEFAULT | Features::JOURNALING, data()));
    a.enable_mirroring(&spec("volumes/vol1"), MirrorImageMode::Journal)
        .unwrap();
    w.lock().unwrap().sync_polls = 2;
    (a, b, w)
}

#[test]
fn a_replica_is_promoted_without_force_only_after_it_replayed_the_demotion() {
    let (a, b, w) = mirrored();
    let vol = spec("volumes/vol1");
    let e = b.promote(&vol, false).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Busy, "the source is still primary");
    let e = b.create_snapshot(&vol, "s").unwrap_err();
    assert_eq!(e.kind, ErrorKind::ReadOnly, "a replica is read-only");
    w.lock().unwrap().stuck = true;
    a.demote(&vol).unwrap();
    assert!(!a.mirror_image(&vol).unwrap().primary);
    assert_eq!(
        a.create_snapshot(&vol, "s").unwrap_err().kind,
        ErrorKind::ReadOnly
    );
    assert_eq!(a.demote(&vol).unwrap_err().kind, ErrorKind::InvalidArgument);
    let e = b.promote(&vol, false).unwrap_err();
    assert_eq!(
        e.kind,
        ErrorKind::Busy,
        "the demotion has not been replayed"
    );
    w.lock().unwrap().stuck = false;
    let mut refusals = 0;
    while let Err(e) = b.promote(&vol, false) {
        assert_eq!(e.kind, ErrorKind::Busy);
        refusals += 1;
        assert!(refusals < 10);
    }
    let m = b.mirror_image(&vol).unwrap();
    assert!(m.primary);
    assert_eq!(
        b.stat(&vol).unwrap().features & Features::NON_PRIMARY,
        Features::empty()
    );
    assert_eq!(
        b.promote(&vol, false).unwrap_err().kind,
        ErrorKind::InvalidArgument
    );
    // the promoted replica no longer follows the demoted source
    w.lock().unwrap().sites[0]
        .images
        .get_mut("volumes/vol1")
        .unwrap()
        .data[0] ^= 1;
    b.stat(&vol).unwrap();
    assert_eq!(
        w.lock().unwrap().sites[1].images["volumes/vol1"].data,
        data()
    );
}

#[test]
fn a_clone_of_a_promoted_replica_has_its_parent_until_flattened_and_the_cleanup_keeps_it() {
    let (a, b, w) = mirrored();
    let vol = spec("volumes/vol1");
    let copy = spec("cinder/copy");
    a.demote(&vol).unwrap();
    while b.promote(&vol, false).is_err() {}
    b.create_snapshot(&vol, "cutover").unwrap();
    let mut ids = Vec::new();
    b.clone_image(&vol, "cutover", &copy, DEFAULT, &mut |id| {
        ids.push(id.to_string());
        Ok(())
    })
    .unwrap();
    assert_eq!(ids, [b.stat(&copy).unwrap().id]);
    assert_eq!(
        b.clone_image(&vol, "cutover", &copy, DEFAULT, &mut |_| Ok(()))
            .unwrap_err()
            .kind,
        ErrorKind::Exists
    );
    assert_eq!(
        b.parent(&copy).unwrap(),
        Some((vol.clone(), "cutover".to_string()))
    );
    assert_eq!(b.parent(&vol).unwrap(), None);
    let want = a.digest(&vol, &mut |_, _| true).unwrap();
    assert_eq!(
        b.digest_snapshot(&vol, "cutover", &mut |_, _| true)
            .unwrap(),
        want
    );
    assert_eq!(b.digest(&copy, &mut |_, _| true).unwrap(), want);

    let e = b.flatten(&copy, &mut |_, _| false).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Cancelled);
    assert!(
        b.parent(&copy).unwrap().is_some(),
        "a cancelled flatten leaves a clone"
    );
    b.flatten(&copy, &mut |_, _| true).unwrap();
    assert_eq!(b.parent(&copy).unwrap(), None);
    assert_eq!(
        b.flatten(&copy, &mut |_, _| true).unwrap_err().kind,
        ErrorKind::InvalidArgument
    );

    // the demoted source becomes a plain image again; the promoted replica stays
    a.disable_mirroring(&vol, true).unwrap();
    let m = a.mirror_image(&vol).unwrap();
    assert_eq!(m.state, MirrorImageState::Disabled);
    assert!(m.primary);
    a.create_snapshot(&vol, "writable-again").unwrap();
    assert!(b.image_exists(&vol).unwrap());
    b.disable_mirroring(&vol, false).unwrap();
    assert!(a.image_exists(&vol).unwrap(), "the source is no replica");
    b.unprotect_snapshot(&vol, "cutover").unwrap();
    b.remove_snapshot(&vol, "cutover").unwrap();
    b.remove_snapshot(&vol, "cutover").unwrap();
    assert!(b.snapshots(&vol).unwrap().is_empty());
    b.remove_image(&vol).unwrap();
    assert_eq!(w.lock().unwrap().sites[1].images.len(), 1, "only the copy");
}

#[test]
fn a_snapshot_with_a_clone_moves_to_the_trash_and_goes_with_the_flatten() {
    let (a, _b, _w) = pair(World::standard(DEFAULT, data()));
    let vol = spec("volumes/vol1");
    let c = spec("cinder/c");
    a.create_snapshot(&vol, "s").unwrap();
    a.protect_snapshot(&vol, "s").unwrap();
    a.clone_image(&vol, "s", &c, DEFAULT, &mut |_| Ok(()))
        .unwrap();
    assert_eq!(
        a.remove_snapshot(&vol, "s").unwrap_err().kind,
        ErrorKind::Busy
    );
    assert_eq!(
        a.unprotect_snapshot(&vol, "s").unwrap_err().kind,
        ErrorKind::Busy
    );
    let e = a.clone_image(&vol, "nosnap", &spec("cinder/d"), DEFAULT, &mut |_| Ok(()));
    assert_eq!(e.unwrap_err().kind, ErrorKind::NotFound);
    let mut refuse = |_: &str| Err(OpsError::new(ErrorKind::Other, "record", "disk full"));
    let e = a.clone_image(&vol, "s", &spec("cinder/d"), DEFAULT, &mut refuse);
    assert_eq!(e.unwrap_err().kind, ErrorKind::Other);
    assert!(
        !a.image_exists(&spec("cinder/d")).unwrap(),
        "an unrecorded clone goes"
    );
    // format 2: a clone needs no protection
    let mut s = a.snapshots(&vol).unwrap();
    s[0].protected = false;
    a.world.lock().unwrap().sites[0]
        .images
        .get_mut("volumes/vol1")
        .unwrap()
        .snaps = s;
    a.remove_snapshot(&vol, "s").unwrap();
    let snaps = a.snapshots(&vol).unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].namespace, SnapshotNamespace::Other);
    a.flatten(&c, &mut |_, _| true).unwrap();
    assert!(a.snapshots(&vol).unwrap().is_empty());
}

#[test]
fn a_demoted_source_is_promoted_back_without_force_while_the_replica_is_not_primary() {
    let (a, b, _w) = mirrored();
    let vol = spec("volumes/vol1");
    a.demote(&vol).unwrap();
    a.promote(&vol, false).unwrap();
    assert!(a.mirror_image(&vol).unwrap().primary);
    a.create_snapshot(&vol, "ok").unwrap();
    // once the replica was promoted, only force brings the source back
    a.demote(&vol).unwrap();
    while b.promote(&vol, false).is_err() {}
    assert_eq!(a.promote(&vol, false).unwrap_err().kind, ErrorKind::Busy);
    a.promote(&vol, true).unwrap();
    assert!(a.mirror_image(&vol).unwrap().primary);
}
