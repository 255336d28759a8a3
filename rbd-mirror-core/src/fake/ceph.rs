//! The fake's side of [`CephOps`]: every Ceph call the engine makes, simulated on the
//! shared [`World`]. Its own file because it is the bulk of the fake (one trait impl).

use sha2::{Digest, Sha256};

use super::{
    clones_of, img, new_image_id, nf, refuse_non_primary, Fake, Img, BEACONS, FAKE_PEER_CLIENT,
};
use crate::features::{Features, MirrorImageMode};
use crate::ops::*;
use crate::spec::{ImageSpec, PoolSpec};
use crate::status::{MirrorState, SiteStatus};

impl CephOps for Fake {
    fn name(&self) -> &str {
        &self.name
    }
    fn fsid(&self) -> OpsResult<String> {
        Ok(format!("fsid-{}", self.side))
    }
    fn pool_exists(&self, pool: &PoolSpec) -> OpsResult<bool> {
        self.with("pool_exists", |w, s| {
            Ok(w.sites[s].pools.contains_key(&pool.pool))
        })
    }
    fn pin_read_only(&self, image: &ImageSpec) -> ReadPin<'_> {
        let what = format!("{}:{image}", self.name);
        self.world
            .lock()
            .unwrap()
            .pin_log
            .0
            .push(format!("pin {what}"));
        ReadPin::releasing(move || {
            if let Ok(mut w) = self.world.lock() {
                w.pin_log.0.push(format!("unpin {what}"));
            }
        })
    }
    fn image_exists(&self, image: &ImageSpec) -> OpsResult<bool> {
        self.with("image_exists", |w, s| {
            Ok(w.sites[s].images.contains_key(&image.to_string()))
        })
    }
    fn stat(&self, image: &ImageSpec) -> OpsResult<ImageStat> {
        self.with("stat", |w, s| {
            let i = img(w, s, image, "stat")?;
            Ok(ImageStat {
                size: i.size(),
                object_size: 4,
                features: i.features,
                id: i.id.clone(),
            })
        })
    }
    fn update_features(
        &self,
        image: &ImageSpec,
        features: Features,
        enable: bool,
    ) -> OpsResult<()> {
        self.with("update_features", |w, s| {
            let i = img(w, s, image, "update_features")?;
            if enable {
                let after = i.features | features;
                if after != after.with_dependencies() {
                    return Err(OpsError::new(
                        ErrorKind::InvalidArgument,
                        "update_features",
                        "dependency missing",
                    ));
                }
                i.features = after;
            } else {
                i.features -= features;
            }
            Ok(())
        })
    }
    fn snapshots(&self, image: &ImageSpec) -> OpsResult<Vec<SnapshotInfo>> {
        self.with("snapshots", |w, s| {
            let unmirrored_source = s == 0 && img(w, s, image, "snapshots")?.mirror.is_none();
            if let Some((n, name)) = w.late_sync_point.as_mut().filter(|_| unmirrored_source) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    let name = std::mem::take(name);
                    w.late_sync_point = None;
                    w.next_snap += 1;
                    let id = w.next_snap;
                    img(w, s, image, "snapshots")?.snaps.push(SnapshotInfo {
                        id,
                        name,
                        namespace: SnapshotNamespace::User,
                        protected: false,
                    });
                }
            }
            Ok(img(w, s, image, "snapshots")?.snaps.clone())
        })
    }
    fn create_snapshot(&self, image: &ImageSpec, name: &str) -> OpsResult<()> {
        self.with("create_snapshot", |w, s| {
            w.next_snap += 1;
            let id = w.next_snap;
            let i = img(w, s, image, "create_snapshot")?;
            refuse_non_primary(i, "create_snapshot", image)?;
            i.snap_data.insert(id, i.data.clone());
            i.snaps.push(SnapshotInfo {
                id,
                name: name.into(),
                namespace: SnapshotNamespace::User,
                protected: false,
            });
            Ok(())
        })
    }
    fn protect_snapshot(&self, image: &ImageSpec, name: &str) -> OpsResult<()> {
        self.with("protect_snapshot", |w, s| {
            for sn in &mut img(w, s, image, "protect")?.snaps {
                if sn.name == name {
                    sn.protected = true;
                }
            }
            Ok(())
        })
    }
    fn remove_snapshot_by_id(&self, image: &ImageSpec, id: u64) -> OpsResult<()> {
        self.with("remove_snapshot_by_id", |w, s| {
            img(w, s, image, "remove_snapshot")?
                .snaps
                .retain(|x| x.id != id);
            Ok(())
        })
    }
    fn watchers(&self, image: &ImageSpec) -> OpsResult<Vec<String>> {
        self.with("watchers", |w, s| {
            Ok(img(w, s, image, "watchers")?.watchers.clone())
        })
    }
    fn image_users(&self, image: &ImageSpec) -> OpsResult<Vec<ImageUser>> {
        // a fake watcher `NAME@ADDR` is a client whose cephx name the monitors tell;
        // a bare `ADDR` one whose name they do not
        self.with("image_users", |w, s| {
            Ok(img(w, s, image, "image_users")?
                .watchers
                .iter()
                .enumerate()
                .map(|(i, wt)| {
                    let (entity, addr) = match wt.split_once('@') {
                        Some((e, a)) => (Some(e.to_string()), a.to_string()),
                        None => (None, wt.clone()),
                    };
                    ImageUser {
                        addr,
                        client_id: 4000 + i as i64,
                        entity,
                    }
                })
                .collect())
        })
    }
    fn pool_mirror_mode(&self, pool: &PoolSpec) -> OpsResult<PoolMirrorMode> {
        self.with("pool_mirror_mode", |w, s| {
            w.sites[s]
                .pools
                .get(&pool.pool)
                .copied()
                .ok_or_else(|| nf("pool_mirror_mode", &pool.pool))
        })
    }
    fn set_pool_mirror_mode(&self, pool: &PoolSpec, mode: PoolMirrorMode) -> OpsResult<()> {
        self.with("set_pool_mirror_mode", |w, s| {
            w.sites[s].pools.insert(pool.pool.clone(), mode);
            Ok(())
        })
    }
    fn mirror_peers(&self, _pool: &PoolSpec) -> OpsResult<Vec<MirrorPeer>> {
        self.with("mirror_peers", |w, s| {
            // the source (site 0) sees the destination's daemon as a tx-only peer once it
            // has connected; the destination has the rx-only peer made by pairing
            Ok(if w.sites[s].has_peer {
                vec![MirrorPeer {
                    uuid: "u".into(),
                    site_name: "other".into(),
                    direction: if s == 0 { "tx-only" } else { "rx-only" }.into(),
                    mirror_uuid: if s == 0 { "uuid-b" } else { "" }.into(),
                    client_name: if s == 0 { "" } else { FAKE_PEER_CLIENT }.into(),
                }]
            } else {
                vec![]
            })
        })
    }
    fn mirror_daemon_config(&self, _pool: &PoolSpec) -> OpsResult<Vec<MirrorDaemonConfig>> {
        self.with("mirror_daemon_config", |w, s| {
            if w.sites[s].daemon_config_refused {
                return Err(OpsError::new(
                    ErrorKind::PermissionDenied,
                    "mgr_command",
                    "config show: access denied",
                ));
            }
            Ok(vec![MirrorDaemonConfig {
                daemon: "rbd-mirror.4129".into(),
                non_default: w.sites[s].daemon_config.clone(),
            }])
        })
    }

    fn mirror_daemons(&self, _pool: &PoolSpec) -> OpsResult<Vec<MirrorDaemon>> {
        self.with("mirror_daemons", |w, s| {
            let beacon = if w.sites[s].daemon_silent {
                0 // stands still
            } else {
                BEACONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
            };
            let mut daemons = vec![MirrorDaemon {
                last_beacon: Some(format!("beacon-{beacon}")),
                id: "b".into(),
                instance: "4200".into(),
                healthy: w.sites[s].daemon_healthy,
                detail: if w.sites[s].daemon_healthy {
                    String::new()
                } else {
                    "not reporting".into()
                },
            }];
            if w.sites[s].killed_instance_listed {
                daemons.insert(
                    0,
                    MirrorDaemon {
                        last_beacon: Some("beacon-killed".into()),
                        id: "b".into(),
                        instance: "4100".into(),
                        healthy: true,
                        detail: String::new(),
                    },
                );
            }
            Ok(daemons)
        })
    }
    fn mirror_image(&self, image: &ImageSpec) -> OpsResult<MirrorImage> {
        self.with("mirror_image", |w, s| {
            let i = img(w, s, image, "mirror_image")?;
            Ok(MirrorImage {
                state: if i.mirror.is_some() {
                    MirrorImageState::Enabled
                } else {
                    MirrorImageState::Disabled
                },
                mode: i.mirror.map(|m| m.0),
                primary: i.mirror.is_none_or(|m| m.1),
                global_id: "gid".into(),
            })
        })
    }
    fn enable_mirroring(&self, image: &ImageSpec, mode: MirrorImageMode) -> OpsResult<()> {
        self.with("enable_mirroring", |w, s| {
            w.next_snap += 1;
            let id = w.next_snap;
            // as librbd: a clone is mirrored only when its parent is
            let parent = img(w, s, image, "enable_mirroring")?.parent.clone();
            let parent_mirrored = match parent {
                Some((p, _)) => w.sites[s]
                    .images
                    .get(&p)
                    .is_some_and(|p| p.mirror.is_some()),
                None => true,
            };
            if !parent_mirrored {
                return Err(OpsError::new(
                    ErrorKind::InvalidArgument,
                    "mirror_image_enable",
                    "mirroring is not enabled for the parent",
                ));
            }
            let i = img(w, s, image, "enable_mirroring")?;
            if mode == MirrorImageMode::Journal && !i.features.contains(Features::JOURNALING) {
                return Err(OpsError::new(
                    ErrorKind::InvalidArgument,
                    "mirror_image_enable",
                    "journaling not enabled",
                ));
            }
            i.mirror = Some((mode, true));
            if mode == MirrorImageMode::Snapshot {
                i.snaps.push(SnapshotInfo {
                    id,
                    name: format!(".mirror.primary.{id}"),
                    namespace: SnapshotNamespace::Mirror {
                        primary: true,
                        complete: true,
                        primary_snap_id: 0,
                        last_copied_object_number: 0,
                    },
                    protected: false,
                });
            }
            Ok(())
        })
    }
    fn disable_mirroring(&self, image: &ImageSpec, force: bool) -> OpsResult<()> {
        self.with("disable_mirroring", |w, s| {
            let i = img(w, s, image, "disable_mirroring")?;
            // as librbd: a non-primary image's mirroring goes only with force
            if !force && matches!(i.mirror, Some((_, false))) {
                return Err(OpsError::new(
                    ErrorKind::InvalidArgument,
                    "disable_mirroring",
                    format!("{image} is not primary: mirroring cannot be disabled without force"),
                ));
            }
            i.mirror = None;
            i.demoted = false;
            i.demotion_replayed = false;
            i.features -= Features::NON_PRIMARY;
            // rbd-mirror deletes the peer's non-primary replica; a promoted one stays
            let key = image.to_string();
            if matches!(
                w.sites[1 - s].images.get(&key).and_then(|p| p.mirror),
                Some((_, false))
            ) {
                w.sites[1 - s].images.remove(&key);
            }
            Ok(())
        })
    }
    fn create_mirror_snapshot(&self, image: &ImageSpec) -> OpsResult<u64> {
        self.with("create_mirror_snapshot", |w, s| {
            w.next_snap += 1;
            let id = w.next_snap;
            let i = img(w, s, image, "create_mirror_snapshot")?;
            // as librbd: only a primary image in snapshot mode takes mirror snapshots
            if i.mirror != Some((MirrorImageMode::Snapshot, true)) {
                return Err(OpsError::new(
                    ErrorKind::InvalidArgument,
                    "mirror_image_create_snapshot",
                    format!("{image} is not a primary image in snapshot mode: Invalid argument"),
                ));
            }
            i.snaps.push(SnapshotInfo {
                id,
                name: format!(".mirror.primary.{id}"),
                namespace: SnapshotNamespace::Mirror {
                    primary: true,
                    complete: true,
                    primary_snap_id: 0,
                    last_copied_object_number: 0,
                },
                protected: false,
            });
            Ok(id)
        })
    }
    fn mirror_status(&self, image: &ImageSpec) -> OpsResult<Option<SiteStatus>> {
        self.with("mirror_status", |w, s| {
            Ok(w.sites[s]
                .images
                .get(&image.to_string())
                .map(|_| match &w.replica_description {
                    _ if w.replica_in_error && s == 1 => SiteStatus {
                        up: true,
                        state: MirrorState::Error,
                        description: "error bootstrapping replay".into(),
                        last_update: 0,
                    },
                    Some(d) => SiteStatus {
                        up: true,
                        state: MirrorState::Replaying,
                        description: d.clone(),
                        last_update: 0,
                    },
                    None => SiteStatus {
                        up: true,
                        state: MirrorState::Syncing,
                        description: "bootstrapping, IMAGE_SYNC/COPY_IMAGE 10%".into(),
                        last_update: 0,
                    },
                }))
        })
    }
    fn journal_positions(&self, image: &ImageSpec) -> OpsResult<JournalPositions> {
        self.with("journal_positions", |w, s| {
            let done = !w.stuck && w.sync_polls == 0;
            let exists = w.sites[1 - s].images.contains_key(&image.to_string());
            img(w, s, image, "journal_positions")?;
            let p = Some(JournalPosition {
                object_number: 0,
                tag_tid: 1,
                entry_tid: 5,
            });
            Ok(JournalPositions {
                master: p,
                peers: if exists {
                    vec![JournalPeer {
                        id: "peer".into(),
                        position: match w.peer_committed {
                            Some(entry_tid) => Some(JournalPosition {
                                object_number: 0,
                                tag_tid: 1,
                                entry_tid,
                            }),
                            None if done => p,
                            None => None,
                        },
                        syncing: Some(!done),
                        replica_image_id: None,
                    }]
                } else {
                    vec![]
                },
            })
        })
    }
    fn copy(&self, src: &ImageSpec, dst: &ImageSpec, progress: Progress<'_>) -> OpsResult<()> {
        self.with("copy", |w, s| {
            let mut i = img(w, s, src, "copy")?.clone();
            i.id = new_image_id();
            i.meta.clear();
            i.mirror = None;
            i.snaps.clear();
            i.features -= Features::NON_PRIMARY;
            if w.corrupt_next_copy {
                w.corrupt_next_copy = false;
                if let Some(b) = i.data.first_mut() {
                    *b ^= 0xff;
                }
            }
            let n = i.data.len() as u64;
            progress(n / 2, n);
            progress(n, n);
            w.sites[s].images.insert(dst.to_string(), i);
            Ok(())
        })
    }
    fn copy_trailing(
        &self,
        src: &ImageSpec,
        dst: &ImageSpec,
        ready: Ready<'_>,
        progress: Progress<'_>,
        created: Created<'_>,
    ) -> OpsResult<String> {
        {
            let mut w = self.world.lock().unwrap();
            w.copy_started_with_polls_left = Some(w.sync_polls);
        }
        // wait until all of the source is final, as the real copy does piece by piece
        loop {
            let size = self.with("copy", |w, s| {
                Ok(w.sites[s]
                    .images
                    .get(&src.to_string())
                    .map(|i| i.data.len() as u64))
            })?;
            if let (Some(size), Some(done)) = (size, ready()?) {
                if done >= size {
                    break;
                }
            }
            if !progress(0, 0) {
                return Err(OpsError::new(ErrorKind::Cancelled, "copy", "cancelled"));
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        self.copy(src, dst, progress)?;
        let id = self.with("copy", |w, s| Ok(img(w, s, dst, "copy")?.id.clone()))?;
        created(&id)?;
        self.with("copy", |w, s| {
            Ok(hex::encode(Sha256::digest(&img(w, s, dst, "copy")?.data)))
        })
    }
    fn remove_image(&self, image: &ImageSpec) -> OpsResult<()> {
        self.with("remove_image", |w, s| {
            w.sites[s]
                .images
                .remove(&image.to_string())
                .map(|_| ())
                .ok_or_else(|| nf("remove", &image.to_string()))
        })
    }
    fn remove_image_with_id(&self, image: &ImageSpec, id: &str) -> OpsResult<()> {
        self.with("remove_image", |w, s| {
            let images = &mut w.sites[s].images;
            match images.get(&image.to_string()) {
                None => Ok(()),
                Some(i) if i.id != id => Err(OpsError::new(
                    ErrorKind::Exists,
                    "remove_image_with_id",
                    format!("{image} has id {}, not {id}", i.id),
                )),
                Some(_) => {
                    images.remove(&image.to_string());
                    Ok(())
                }
            }
        })
    }
    fn metadata_get(&self, image: &ImageSpec, key: &str) -> OpsResult<Option<String>> {
        self.with("metadata_get", |w, s| {
            Ok(img(w, s, image, "metadata_get")?.meta.get(key).cloned())
        })
    }
    fn metadata_set(&self, image: &ImageSpec, key: &str, value: &str) -> OpsResult<()> {
        self.with("metadata_set", |w, s| {
            img(w, s, image, "metadata_set")?
                .meta
                .insert(key.to_string(), value.to_string());
            Ok(())
        })
    }
    fn metadata_remove(&self, image: &ImageSpec, key: &str) -> OpsResult<()> {
        self.with("metadata_remove", |w, s| {
            img(w, s, image, "metadata_remove")?.meta.remove(key);
            Ok(())
        })
    }
    fn digest(&self, image: &ImageSpec, progress: Progress<'_>) -> OpsResult<String> {
        self.with("digest", |w, s| {
            w.digests
                .push(format!("{}:{image}", if s == 0 { "a" } else { "b" }));
            let i = img(w, s, image, "digest")?;
            progress(i.size(), i.size());
            Ok(sha_with_zeros(&i.data, i.size()))
        })
    }
    fn digest_first(
        &self,
        image: &ImageSpec,
        len: u64,
        progress: Progress<'_>,
    ) -> OpsResult<String> {
        self.with("digest", |w, s| {
            w.digests
                .push(format!("{}:{image}", if s == 0 { "a" } else { "b" }));
            let i = img(w, s, image, "digest")?;
            if i.size() < len {
                return Err(OpsError::new(
                    ErrorKind::InvalidArgument,
                    "digest",
                    format!("{image} has {} bytes, fewer than {len}", i.size()),
                ));
            }
            progress(len, len);
            Ok(sha_with_zeros(&i.data, len))
        })
    }
    fn grow(&self, image: &ImageSpec, size: u64) -> OpsResult<()> {
        self.with("grow", |w, s| {
            let i = img(w, s, image, "grow")?;
            if size < i.size() {
                return Err(OpsError::new(
                    ErrorKind::InvalidArgument,
                    "grow",
                    format!(
                        "refusing to shrink {image} from {} to {size} bytes",
                        i.size()
                    ),
                ));
            }
            i.zero_tail = size - i.data.len() as u64;
            Ok(())
        })
    }
    fn data_pool(&self, image: &ImageSpec) -> OpsResult<Option<String>> {
        self.with("data_pool", |w, s| {
            Ok(img(w, s, image, "data_pool")?.data_pool.clone())
        })
    }
    fn pool_space(&self, pool: &str) -> OpsResult<PoolSpace> {
        self.with("pool_space", |w, s| {
            let site = &w.sites[s];
            if !site.pools.contains_key(pool) {
                return Err(nf("pool_space", pool));
            }
            Ok(site.space.get(pool).copied().unwrap_or(PoolSpace {
                max_avail: 1 << 50,
                stored: 0,
                quota_max_bytes: None,
            }))
        })
    }
    fn demote(&self, image: &ImageSpec) -> OpsResult<()> {
        self.with("demote", |w, s| {
            let i = img(w, s, image, "demote")?;
            match i.mirror {
                Some((mode, true)) => {
                    i.mirror = Some((mode, false));
                    i.demoted = true;
                    Ok(())
                }
                _ => Err(OpsError::new(
                    ErrorKind::InvalidArgument,
                    "demote",
                    format!("{image} is not a mirrored primary: Invalid argument"),
                )),
            }
        })
    }
    fn promote(&self, image: &ImageSpec, force: bool) -> OpsResult<()> {
        self.with("promote", |w, s| {
            let key = image.to_string();
            let peer = w.sites[1 - s].images.get(&key).map(|p| (p.mirror, p.demoted));
            let i = img(w, s, image, "promote")?;
            let Some((mode, false)) = i.mirror else {
                return Err(OpsError::new(
                    ErrorKind::InvalidArgument,
                    "promote",
                    format!("{image} is already primary or not mirrored: Invalid argument"),
                ));
            };
            // without force: a demoted primary may come back while no peer is primary; a
            // replica once it has replayed its primary's demotion
            let peer_primary = matches!(peer, Some((Some((_, true)), _)));
            let may = if i.demoted {
                !peer_primary
            } else {
                i.demotion_replayed && !peer_primary
            };
            if !force && !may {
                return Err(OpsError::new(
                    ErrorKind::Busy,
                    "promote",
                    format!(
                        "{image}: image is primary within a remote cluster or demotion is not propagated yet: Device or resource busy"
                    ),
                ));
            }
            i.mirror = Some((mode, true));
            i.demoted = false;
            i.demotion_replayed = false;
            i.features -= Features::NON_PRIMARY;
            Ok(())
        })
    }
    fn clone_image(
        &self,
        parent: &ImageSpec,
        snap: &str,
        child: &ImageSpec,
        features: Features,
        created: Created<'_>,
    ) -> OpsResult<()> {
        let id = self.with("clone_image", |w, s| {
            let p = img(w, s, parent, "clone_image")?;
            let Some(sn) = p
                .snaps
                .iter()
                .find(|x| x.name == snap && x.namespace == SnapshotNamespace::User)
            else {
                return Err(nf("clone_image", &format!("{parent}@{snap}")));
            };
            let data = p
                .snap_data
                .get(&sn.id)
                .cloned()
                .unwrap_or_else(|| p.data.clone());
            let data_pool = p.data_pool.clone();
            if !features.contains(Features::LAYERING) {
                return Err(OpsError::new(
                    ErrorKind::InvalidArgument,
                    "clone_image",
                    "a clone needs the layering feature: Invalid argument",
                ));
            }
            if !w.sites[s].pools.contains_key(&child.pool.pool) {
                return Err(nf("clone_image", &child.pool.pool));
            }
            if w.sites[s].images.contains_key(&child.to_string()) {
                return Err(OpsError::new(
                    ErrorKind::Exists,
                    "clone_image",
                    format!("{child}: File exists"),
                ));
            }
            let mut c = Img::new(features, data);
            c.parent = Some((parent.to_string(), snap.to_string()));
            c.data_pool = data_pool;
            let id = c.id.clone();
            w.sites[s].images.insert(child.to_string(), c);
            Ok(id)
        })?;
        if let Err(e) = created(&id) {
            let _ = self.remove_image_with_id(child, &id);
            return Err(e);
        }
        Ok(())
    }
    fn rebuild_object_map(&self, image: &ImageSpec, progress: Progress<'_>) -> OpsResult<()> {
        self.with("rebuild_object_map", |w, s| {
            img(w, s, image, "rebuild_object_map")?;
            progress(1, 1);
            Ok(())
        })
    }
    fn flatten(&self, image: &ImageSpec, progress: Progress<'_>) -> OpsResult<()> {
        self.with("flatten", |w, s| {
            let i = img(w, s, image, "flatten")?;
            refuse_non_primary(i, "flatten", image)?;
            if i.parent.is_none() {
                return Err(OpsError::new(
                    ErrorKind::InvalidArgument,
                    "flatten",
                    format!("{image} is not a clone: Invalid argument"),
                ));
            }
            let objects = (i.data.len() as u64).div_ceil(4).max(1);
            for done in 0..objects {
                if !progress(done, objects) {
                    return Err(OpsError::new(ErrorKind::Cancelled, "flatten", "cancelled"));
                }
            }
            let Some((parent, snap)) = i.parent.take() else {
                return Ok(());
            };
            // the last clone let go of a snapshot in the trash: librbd removes it
            if clones_of(w, s, &parent, &snap) == 0 {
                if let Some(p) = w.sites[s].images.get_mut(&parent) {
                    p.snaps
                        .retain(|x| !(x.name == snap && x.namespace == SnapshotNamespace::Other));
                }
            }
            Ok(())
        })
    }
    fn parent(&self, image: &ImageSpec) -> OpsResult<Option<(ImageSpec, String)>> {
        self.with("parent", |w, s| {
            let i = img(w, s, image, "parent")?;
            match &i.parent {
                None => Ok(None),
                Some((p, snap)) => {
                    let spec = p
                        .parse::<ImageSpec>()
                        .map_err(|e| OpsError::new(ErrorKind::Other, "parent", e.to_string()))?;
                    Ok(Some((spec, snap.clone())))
                }
            }
        })
    }
    fn unprotect_snapshot(&self, image: &ImageSpec, name: &str) -> OpsResult<()> {
        self.with("unprotect_snapshot", |w, s| {
            let clones = clones_of(w, s, &image.to_string(), name);
            let i = img(w, s, image, "unprotect_snapshot")?;
            let Some(sn) = i.snaps.iter_mut().find(|x| x.name == name) else {
                return Err(nf("unprotect_snapshot", &format!("{image}@{name}")));
            };
            if sn.protected && clones > 0 {
                return Err(OpsError::new(
                    ErrorKind::Busy,
                    "unprotect_snapshot",
                    format!("{image}@{name} has {clones} clone(s): Device or resource busy"),
                ));
            }
            sn.protected = false;
            Ok(())
        })
    }
    fn remove_snapshot(&self, image: &ImageSpec, name: &str) -> OpsResult<()> {
        self.with("remove_snapshot", |w, s| {
            let clones = clones_of(w, s, &image.to_string(), name);
            let i = img(w, s, image, "remove_snapshot")?;
            let Some(pos) = i
                .snaps
                .iter()
                .position(|x| x.name == name && x.namespace == SnapshotNamespace::User)
            else {
                return Ok(());
            };
            if i.snaps[pos].protected {
                return Err(OpsError::new(
                    ErrorKind::Busy,
                    "remove_snapshot",
                    format!("{image}@{name} is protected: Device or resource busy"),
                ));
            }
            if clones > 0 {
                // as librbd with format-2 clones: the snapshot moves to the trash
                // namespace and feeds its clones until they are flattened
                i.snaps[pos].namespace = SnapshotNamespace::Other;
            } else {
                let gone = i.snaps.remove(pos);
                i.snap_data.remove(&gone.id);
            }
            Ok(())
        })
    }
    fn digest_snapshot(
        &self,
        image: &ImageSpec,
        snap: &str,
        progress: Progress<'_>,
    ) -> OpsResult<String> {
        self.with("digest", |w, s| {
            w.digests
                .push(format!("{}:{image}@{snap}", if s == 0 { "a" } else { "b" }));
            let i = img(w, s, image, "digest_snapshot")?;
            let Some(sn) = i
                .snaps
                .iter()
                .find(|x| x.name == snap && x.namespace == SnapshotNamespace::User)
            else {
                return Err(nf("digest_snapshot", &format!("{image}@{snap}")));
            };
            let data = i.snap_data.get(&sn.id).cloned().unwrap_or_default();
            let n = data.len() as u64;
            if !progress(n, n) {
                return Err(OpsError::new(ErrorKind::Cancelled, "digest", "cancelled"));
            }
            Ok(hex::encode(Sha256::digest(&data)))
        })
    }
}

/// sha256 of the first `len` bytes of `data` followed by zeros (a grown image's tail).
fn sha_with_zeros(data: &[u8], len: u64) -> String {
    let mut h = Sha256::new();
    let from_data = usize::try_from(len).unwrap_or(usize::MAX).min(data.len());
    h.update(&data[..from_data]);
    let mut zeros = len - from_data as u64;
    let block = [0u8; 1 << 16];
    while zeros > 0 {
        let n = zeros.min(block.len() as u64);
        h.update(&block[..n as usize]);
        zeros -= n;
    }
    hex::encode(h.finalize())
}
