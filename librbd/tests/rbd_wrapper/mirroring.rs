//! The mirroring calls of the wrapper against the mirrored pair: pool mode, peers, site names,
//! daemon health, journal and snapshot replication, promote and demote.

use std::time::Duration;

use librbd::{
    ErrorKind, Image, MirrorHealth, MirrorImageMode, MirrorImageState, MirrorMode, PeerDirection,
    SnapMirrorState, SnapNamespaceType, RBD_FEATURE_EXCLUSIVE_LOCK, RBD_FEATURE_JOURNALING,
    RBD_FEATURE_LAYERING,
};

use super::helpers::*;

#[test]
fn pool_mirroring_peers_site_names_and_daemon_health_are_read() {
    let p = pair();
    let a = connect(&p.a);
    let b = connect(&p.b);
    let io_a = a.ioctx(p.mirrored).unwrap();
    let io_b = b.ioctx(p.mirrored).unwrap();
    assert_eq!(io_a.mirror_mode().unwrap(), MirrorMode::Image);
    assert_eq!(io_b.mirror_mode().unwrap(), MirrorMode::Image);
    // setting the mode it already has is a no-op round trip
    io_a.set_mirror_mode(MirrorMode::Image).unwrap();
    let plain = a.ioctx(p.plain).unwrap();
    assert_eq!(plain.mirror_mode().unwrap(), MirrorMode::Disabled);

    let site_a = a.mirror_site_name().unwrap();
    let site_b = b.mirror_site_name().unwrap();
    assert!(!site_a.is_empty() && site_a != site_b);
    assert_eq!(a.fsid().unwrap().len(), 36);

    let peers_b = io_b.mirror_peer_sites().unwrap();
    let from_a = peers_b
        .iter()
        .find(|p| p.site_name == site_a)
        .expect("B has A as peer");
    assert_eq!(from_a.direction, PeerDirection::RxOnly);
    let peers_a = io_a.mirror_peer_sites().unwrap();
    let to_b = peers_a
        .iter()
        .find(|p| p.site_name == site_b)
        .expect("A has B as peer");
    assert_eq!(to_b.direction, PeerDirection::TxOnly);
    // A knows B's pool mirror uuid (B's daemon registered it)
    assert_eq!(to_b.mirror_uuid, io_b.mirror_uuid().unwrap());

    let pools = a
        .mon_command(r#"{"prefix":"osd pool ls","format":"json"}"#)
        .unwrap();
    assert!(pools.contains(&format!("\"{}\"", p.plain)), "{pools}");
    let e = a
        .mon_command(r#"{"prefix":"no such command"}"#)
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
    assert!(e.detail.is_some(), "the monitor's explanation is kept: {e}");

    let token = io_a.mirror_peer_bootstrap_create().unwrap();
    assert!(token.len() > 100, "token too short");
    let e = plain
        .mirror_peer_bootstrap_import(PeerDirection::RxOnly, "not-a-token")
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");

    let hb = b.mirror_daemon_health(&io_b).unwrap();
    assert_eq!(hb.health, MirrorHealth::Ok, "{hb:?}");
    assert!(hb.daemons.iter().any(|d| d.leader), "{hb:?}");
    // nothing runs rbd-mirror on A
    let ha = a.mirror_daemon_health(&io_a).unwrap();
    assert_eq!(ha.health, MirrorHealth::Error, "{ha:?}");
    assert!(ha.daemons.is_empty());

    // the summary and the list agree on the number of images
    let summary = io_b.mirror_image_status_summary().unwrap();
    let listed = io_b.mirror_image_global_status_list().unwrap();
    let total: u32 = summary.iter().map(|(_, n)| n).sum();
    assert!(
        total as usize >= listed.len().saturating_sub(2),
        "{summary:?} vs {}",
        listed.len()
    );
}

#[test]
fn journal_mirroring_replicates_and_journal_clients_show_completion() {
    let p = pair();
    let a = connect(&p.a);
    let b = connect(&p.b);
    let io_a = a.ioctx(p.mirrored).unwrap();
    let io_b = b.ioctx(p.mirrored).unwrap();
    let feats = RBD_FEATURE_LAYERING | RBD_FEATURE_EXCLUSIVE_LOCK | RBD_FEATURE_JOURNALING;
    let s = scratch(&io_a, "jrnl", 8 * MIB, &opts(feats, 22));
    let img = Image::open(&io_a, &s.name).unwrap();
    img.write_at(0, &pattern(5, 200_000)).unwrap();
    img.flush().unwrap();
    assert_eq!(img.mirror_info().unwrap().state, MirrorImageState::Disabled);
    // journaling alone: the image's own client is registered, no peers yet. (Its commit
    // position is written lazily while the image is open: every rbd_journal_commit_age
    // seconds and on close.)
    let before = io_a.journal_status(&img.id().unwrap()).unwrap();
    assert!(before.master().is_some(), "{before:?}");
    assert_eq!(before.mirror_peers().count(), 0, "{before:?}");

    img.mirror_enable(MirrorImageMode::Journal).unwrap();
    let info = img.mirror_info().unwrap();
    assert!(info.primary);
    assert_eq!(info.state, MirrorImageState::Enabled);
    assert_eq!(img.mirror_mode().unwrap(), MirrorImageMode::Journal);
    img.write_at(3 * MIB, &pattern(6, 100_000)).unwrap();
    img.flush().unwrap();
    let id = img.id().unwrap();
    drop(img); // closing commits the master position
    let want = Image::open_read_only(&io_a, &s.name, None)
        .unwrap()
        .sha256()
        .unwrap();

    let peer_uuid = io_b.mirror_uuid().unwrap();
    let lag = wait_for(
        "peer to replay the journal",
        Duration::from_secs(120),
        || {
            let status = io_a.journal_status(&id).ok()?;
            let peer = status.mirror_peer(&peer_uuid)?;
            let lag = status.lag(peer)?;
            lag.caught_up.then_some(lag)
        },
    );
    assert_eq!(lag.entries_behind, Some(0));
    let status = io_a.journal_status(&id).unwrap();
    assert!(status.master().is_some(), "{status:?}");
    assert!(
        status.master().unwrap().newest().is_some(),
        "writes were journaled"
    );

    // the replica on B: non-primary, same global id, same content
    let replica = wait_for("replica on B", Duration::from_secs(60), || {
        Image::open_read_only(&io_b, &s.name, None).ok()
    });
    let rinfo = replica.mirror_info().unwrap();
    assert!(!rinfo.primary);
    assert_eq!(rinfo.global_id, info.global_id);
    assert_eq!(replica.sha256().unwrap(), want);
    let e = replica.write_at(0, b"x").unwrap_err();
    assert_eq!(e.kind, ErrorKind::ReadOnly, "{e}");

    // global status: A lists the image; B reports its replica replaying
    let listed = io_a.mirror_image_global_status_list().unwrap();
    assert!(listed
        .iter()
        .any(|(iid, st)| *iid == id && st.name == s.name));
    wait_for("B to report the replica", Duration::from_secs(90), || {
        let st = replica.mirror_global_status().ok()?;
        let local = st.local()?;
        (local.up && local.state == librbd::MirrorStatusState::Replaying).then_some(())
    });

    // not a journal image: NotFound
    let e = io_a.journal_status("0000nojournal").unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
}

#[test]
fn snapshot_mirroring_replica_has_complete_non_primary_mirror_snapshot() {
    let p = pair();
    let a = connect(&p.a);
    let b = connect(&p.b);
    let io_a = a.ioctx(p.mirrored).unwrap();
    let io_b = b.ioctx(p.mirrored).unwrap();
    let feats = RBD_FEATURE_LAYERING | RBD_FEATURE_EXCLUSIVE_LOCK;
    let s = scratch(&io_a, "snapm", 8 * MIB, &opts(feats, 22));
    let img = Image::open(&io_a, &s.name).unwrap();
    img.write_at(MIB, &pattern(7, 500_000)).unwrap();
    img.mirror_enable(MirrorImageMode::Snapshot).unwrap();
    assert_eq!(img.mirror_mode().unwrap(), MirrorImageMode::Snapshot);
    let first: Vec<_> = img
        .snapshots()
        .unwrap()
        .into_iter()
        .filter(|s| s.namespace == SnapNamespaceType::Mirror)
        .collect();
    assert_eq!(first.len(), 1, "enable creates one mirror snapshot");

    img.write_at(6 * MIB, &pattern(8, 300_000)).unwrap();
    let snap_id = img.mirror_create_snapshot().unwrap();
    let ns = img.snap_mirror_namespace(snap_id).unwrap();
    assert_eq!(ns.state, SnapMirrorState::Primary);
    assert!(!ns.mirror_peer_uuids.is_empty(), "{ns:?}");
    let peers = io_a.mirror_peer_sites().unwrap();
    assert!(ns
        .mirror_peer_uuids
        .iter()
        .all(|u| peers.iter().any(|p| &p.uuid == u)));
    let e = img.snap_mirror_namespace(u64::MAX - 1).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    drop(img);
    let mut src_at = Image::open_read_only(&io_a, &s.name, None).unwrap();
    src_at.snap_set_by_id(snap_id).unwrap();
    let want = src_at.sha256().unwrap();

    let (replica_snap, replica_ns) = wait_for(
        "complete non-primary mirror snapshot on B",
        Duration::from_secs(120),
        || {
            let r = Image::open_read_only(&io_b, &s.name, None).ok()?;
            r.snapshots().ok()?.into_iter().find_map(|sn| {
                let ns = r.snap_mirror_namespace(sn.id).ok()?;
                (ns.primary_snap_id == snap_id && ns.complete).then_some((sn.id, ns))
            })
        },
    );
    assert_eq!(replica_ns.state, SnapMirrorState::NonPrimary);
    // the replica names the primary's pool mirror uuid
    assert_eq!(replica_ns.primary_mirror_uuid, io_a.mirror_uuid().unwrap());
    let mut replica = Image::open_read_only(&io_b, &s.name, None).unwrap();
    assert!(!replica.mirror_info().unwrap().primary);
    // Once the copy for the source's mirror snapshot is complete (and nothing newer is
    // syncing), the replica's HEAD holds exactly the source at that snapshot.
    // (Observed on 16.2.15: reading the non-primary snapshot itself returns the state of
    // the previous sync, so content checks must read the replica's head.)
    assert_eq!(replica.sha256().unwrap(), want);
    replica.snap_set_by_id(replica_snap).unwrap();
    assert_eq!(replica.size().unwrap(), 8 * MIB);
}

#[test]
fn promote_demote_round_trip_on_a_scratch_image() {
    let p = pair();
    let a = connect(&p.a);
    let io = a.ioctx(p.mirrored).unwrap();
    let s = scratch(
        &io,
        "promo",
        4 * MIB,
        &opts(RBD_FEATURE_LAYERING | RBD_FEATURE_EXCLUSIVE_LOCK, 22),
    );
    let img = Image::open(&io, &s.name).unwrap();
    img.mirror_enable(MirrorImageMode::Snapshot).unwrap();
    assert!(img.mirror_info().unwrap().primary);
    img.mirror_demote().unwrap();
    assert!(!img.mirror_info().unwrap().primary);
    let demoted = img
        .snapshots()
        .unwrap()
        .into_iter()
        .filter(|s| s.namespace == SnapNamespaceType::Mirror)
        .filter_map(|s| img.snap_mirror_namespace(s.id).ok())
        .any(|ns| ns.state == SnapMirrorState::PrimaryDemoted);
    assert!(demoted, "demotion leaves a primary-demoted mirror snapshot");
    let e = img.write_at(0, b"while demoted").unwrap_err();
    assert_eq!(e.kind, ErrorKind::ReadOnly, "{e}");
    let e = img.mirror_demote().unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument, "already demoted: {e}");

    img.mirror_promote(false).unwrap();
    assert!(img.mirror_info().unwrap().primary);
    img.write_at(0, b"primary again").unwrap();
    let e = img.mirror_promote(false).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument, "already primary: {e}");
    img.mirror_disable(false).unwrap();
    assert_eq!(img.mirror_info().unwrap().state, MirrorImageState::Disabled);
}
