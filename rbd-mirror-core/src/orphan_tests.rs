//! The replica rbd-mirror neither replays nor removes (split-brain, "error bootstrapping
//! replay"): abort's removal of it, and what it never removes.

use crate::exec::remove_orphaned_replica;
use crate::fake::{pair, Img, World};
use crate::features::{Features, MirrorImageMode};
use crate::ops::{SnapshotInfo, SnapshotNamespace};
use crate::spec::ImageSpec;

const REPLICA: &str = "volumes/vol1";

/// A pair whose destination holds a non-primary replica of `volumes/vol1` with one copy of
/// a user snapshot of the source; rbd-mirror reports it in error when `in_error`.
fn world_with_replica(
    in_error: bool,
) -> (
    std::sync::Arc<crate::fake::Fake>,
    std::sync::Arc<std::sync::Mutex<World>>,
    String,
) {
    let mut world = World::standard(Features::LAYERING, vec![7; 4096]);
    world.replica_in_error = in_error;
    let mut replica = Img::new(Features::LAYERING | Features::NON_PRIMARY, vec![7; 4096]);
    replica.mirror = Some((MirrorImageMode::Journal, false));
    replica.snaps.push(SnapshotInfo {
        id: 99,
        name: "users-own".into(),
        namespace: SnapshotNamespace::User,
        protected: false,
    });
    let id = replica.id.clone();
    world.sites[1].images.insert(REPLICA.into(), replica);
    let (_, b, w) = pair(world);
    (b, w, id)
}

fn spec() -> ImageSpec {
    REPLICA.parse().unwrap()
}

#[test]
fn a_replica_in_error_that_nobody_has_open_is_removed() {
    let (b, w, _) = world_with_replica(true);
    assert!(remove_orphaned_replica(b.as_ref(), &spec(), Some("gid"), None).unwrap());
    assert!(!w.lock().unwrap().sites[1].images.contains_key(REPLICA));
}

#[test]
fn a_replica_in_error_is_found_by_its_recorded_id_when_the_global_id_is_gone() {
    // a re-run of the step: the source's mirroring is already off, its global id unknown
    let (b, w, id) = world_with_replica(true);
    assert!(remove_orphaned_replica(b.as_ref(), &spec(), None, Some(&id)).unwrap());
    assert!(!w.lock().unwrap().sites[1].images.contains_key(REPLICA));
}

#[test]
fn an_image_that_is_not_this_migrations_replica_or_is_primary_is_never_removed() {
    // another global id and no recorded id: not ours
    let (b, w, _) = world_with_replica(true);
    assert!(
        !remove_orphaned_replica(b.as_ref(), &spec(), Some("other"), Some("other-id")).unwrap()
    );
    assert!(w.lock().unwrap().sites[1].images.contains_key(REPLICA));
    // ours, but primary (a promoted replica is demote_replica's, and a primary is never
    // removed here)
    let (b, w, id) = world_with_replica(true);
    w.lock().unwrap().sites[1]
        .images
        .get_mut(REPLICA)
        .unwrap()
        .mirror = Some((MirrorImageMode::Journal, true));
    assert!(!remove_orphaned_replica(b.as_ref(), &spec(), Some("gid"), Some(&id)).unwrap());
    assert!(w.lock().unwrap().sites[1].images.contains_key(REPLICA));
}

#[test]
fn a_missing_replica_is_nothing_to_do() {
    let (b, w, id) = world_with_replica(true);
    w.lock().unwrap().sites[1].images.remove(REPLICA);
    assert!(!remove_orphaned_replica(b.as_ref(), &spec(), Some("gid"), Some(&id)).unwrap());
}

#[test]
fn a_replica_rbd_mirror_still_replays_is_left_to_rbd_mirror() {
    // not in error: rbd-mirror removes it itself once the source's mirroring is off; the
    // watch ends after ORPHANED_REPLICA_WATCH without touching it
    let (b, w, id) = world_with_replica(false);
    let started = std::time::Instant::now();
    assert!(!remove_orphaned_replica(b.as_ref(), &spec(), Some("gid"), Some(&id)).unwrap());
    assert!(started.elapsed() >= crate::exec::ORPHANED_REPLICA_WATCH);
    assert!(w.lock().unwrap().sites[1].images.contains_key(REPLICA));
}
