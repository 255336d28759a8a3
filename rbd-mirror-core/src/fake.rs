//! An in-memory pair of clusters with a simulated rbd-mirror, for unit tests of the
//! orchestration logic (plans, waits, resume). Never used outside tests: the real thing is
//! tested against real clusters.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::cloud::{
    AdoptCheck, AdoptSpec, AdoptTarget, AdoptedVolume, BoxFuture, CloudError, CloudErrorKind,
    CloudImage, CloudOps, CloudResult, RegisterSpec, SourceVolume, MARKER_KEY,
};
use crate::features::{Features, MirrorImageMode};
use crate::ops::*;

/// The cephx client the fake destination's rbd-mirror reaches the source as.
pub const FAKE_PEER_CLIENT: &str = "client.rbd-mirror-peer";
use crate::spec::{ImageSpec, PoolSpec};
use crate::status::{MirrorState, SiteStatus};

#[derive(Debug, Clone, PartialEq)]
pub struct Img {
    pub features: Features,
    pub data: Vec<u8>,
    pub snaps: Vec<SnapshotInfo>,
    pub mirror: Option<(MirrorImageMode, bool)>,
    pub watchers: Vec<String>,
    /// Pool of its data objects when it is not the image's pool (`--data-pool`).
    pub data_pool: Option<String>,
    /// Image id: every image made (also a copy or a replica) gets a new one.
    pub id: String,
    /// Image metadata (`rbd image-meta`).
    pub meta: BTreeMap<String, String>,
    /// Content at each user snapshot, by snapshot id.
    pub snap_data: BTreeMap<u64, Vec<u8>>,
    /// A clone's parent: `POOL/IMAGE` on the same site and the snapshot name.
    pub parent: Option<(String, String)>,
    /// A primary demoted by [`CephOps::demote`] (mirror says non-primary): rbd-mirror still
    /// replays its last state, and the demotion, into the peer's replica.
    pub demoted: bool,
    /// On a replica: it has replayed its primary's demotion (a promote without force may
    /// go ahead).
    pub demotion_replayed: bool,
}

/// Ids given to fake images so far.
static IMAGE_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn new_image_id() -> String {
    format!(
        "fakeid{}",
        IMAGE_IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

impl Img {
    pub fn new(features: Features, data: Vec<u8>) -> Self {
        Self {
            features,
            data,
            snaps: vec![],
            mirror: None,
            watchers: vec![],
            data_pool: None,
            id: new_image_id(),
            meta: BTreeMap::new(),
            snap_data: BTreeMap::new(),
            parent: None,
            demoted: false,
            demotion_replayed: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Site {
    pub pools: BTreeMap<String, PoolMirrorMode>,
    pub images: BTreeMap<String, Img>,
    pub daemon_healthy: bool,
    /// The daemon was killed or hangs: its beacon stops changing (the service map still
    /// lists it, healthy, as Ceph's does for a minute).
    pub daemon_silent: bool,
    pub has_peer: bool,
    /// Room in pools, by pool name; a pool without an entry has plenty.
    pub space: BTreeMap<String, PoolSpace>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct World {
    pub sites: [Site; 2],
    pub next_snap: u64,
    /// Polls of the exact signal before a sync completes.
    pub sync_polls: u32,
    /// Sync never completes.
    pub stuck: bool,
    /// Fail the next call of this operation once.
    pub fail_once: Option<String>,
    /// Flip a byte of the next copy.
    pub corrupt_next_copy: bool,
    /// Every digest call, as `SITE:POOL/IMAGE` (site 0 is `a`, site 1 `b`).
    pub digests: Vec<String>,
    /// `sync_polls` left when the last copy started (more than 0: during the sync).
    pub copy_started_with_polls_left: Option<u32>,
    /// Every Ceph call takes this long (so a dropped future can land inside any step).
    pub op_delay: std::time::Duration,
}

/// Beacons sent so far by the fake daemons (one per look at the service map). Outside the
/// [`World`], so that reads do not change what "nothing changed" tests compare.
static BEACONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl World {
    /// A standard pair: pools `volumes` (mirrored) and `cinder` on both sites, one image.
    pub fn standard(features: Features, data: Vec<u8>) -> Self {
        let mut w = World::default();
        for s in &mut w.sites {
            s.pools.insert("volumes".into(), PoolMirrorMode::Image);
            s.pools.insert("cinder".into(), PoolMirrorMode::Disabled);
            s.daemon_healthy = true;
            s.has_peer = true;
        }
        w.sites[0]
            .images
            .insert("volumes/vol1".into(), Img::new(features, data));
        w.next_snap = 10;
        w.sync_polls = 3;
        w
    }

    fn replicate(&mut self) {
        let primaries: Vec<(String, Img)> = self.sites[0]
            .images
            .iter()
            .filter(|(_, i)| matches!(i.mirror, Some((_, true))) || i.demoted)
            .map(|(k, i)| (k.clone(), i.clone()))
            .collect();
        for (key, img) in primaries {
            let Some((mode, _)) = img.mirror else {
                continue;
            };
            // rbd-mirror replays into a non-primary replica only, and never bootstraps a
            // new replica from a demoted image
            match self.sites[1].images.get(&key) {
                Some(r) if matches!(r.mirror, Some((_, true))) => continue,
                None if img.demoted => continue,
                _ => {}
            }
            // as rbd-mirror: the replica keeps the data pool when the pool exists here
            let replica_data_pool = img
                .data_pool
                .clone()
                .filter(|p| self.sites[1].pools.contains_key(p));
            let replica = self.sites[1].images.entry(key.clone()).or_insert_with(|| {
                let mut r = Img::new(
                    img.features | Features::NON_PRIMARY,
                    vec![0; img.data.len()],
                );
                r.mirror = Some((mode, false));
                r.data_pool = replica_data_pool;
                r
            });
            if self.stuck {
                continue;
            }
            if self.sync_polls > 0 {
                self.sync_polls -= 1;
                continue;
            }
            replica.data = img.data.clone();
            if img.demoted {
                replica.demotion_replayed = true;
            }
            if mode == MirrorImageMode::Snapshot {
                if let Some(newest) = img
                    .snaps
                    .iter()
                    .filter(|s| {
                        matches!(s.namespace, SnapshotNamespace::Mirror { primary: true, .. })
                    })
                    .map(|s| s.id)
                    .max()
                {
                    if !replica.snaps.iter().any(|s| matches!(s.namespace, SnapshotNamespace::Mirror { primary_snap_id, .. } if primary_snap_id == newest)) {
                        self.next_snap += 1;
                        replica.snaps.push(SnapshotInfo {
                            id: self.next_snap,
                            name: format!(".mirror.non_primary.{newest}"),
                            namespace: SnapshotNamespace::Mirror {
                                primary: false,
                                complete: true,
                                primary_snap_id: newest,
                                last_copied_object_number: 0,
                            },
                            protected: false,
                        });
                    }
                }
            }
        }
    }
}

pub struct Fake {
    pub side: usize,
    pub name: String,
    pub world: Arc<Mutex<World>>,
}

pub fn pair(world: World) -> (Arc<Fake>, Arc<Fake>, Arc<Mutex<World>>) {
    let w = Arc::new(Mutex::new(world));
    (
        Arc::new(Fake {
            side: 0,
            name: "site-a".into(),
            world: w.clone(),
        }),
        Arc::new(Fake {
            side: 1,
            name: "site-b".into(),
            world: w.clone(),
        }),
        w,
    )
}

fn nf(op: &str, what: &str) -> OpsError {
    OpsError::new(
        ErrorKind::NotFound,
        op,
        format!("{what}: No such file or directory"),
    )
}

impl Fake {
    fn with<T>(&self, op: &str, f: impl FnOnce(&mut World, usize) -> OpsResult<T>) -> OpsResult<T> {
        let delay = self.world.lock().unwrap().op_delay;
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let mut w = self.world.lock().unwrap();
        if w.fail_once.as_deref() == Some(op) {
            w.fail_once = None;
            return Err(OpsError::new(ErrorKind::Other, op, "injected failure"));
        }
        w.replicate();
        f(&mut w, self.side)
    }
}

/// librbd refuses changes to a non-primary (replica or demoted) image: `EROFS`.
fn refuse_non_primary(i: &Img, op: &str, image: &ImageSpec) -> OpsResult<()> {
    if matches!(i.mirror, Some((_, false))) {
        return Err(OpsError::new(
            ErrorKind::ReadOnly,
            op,
            format!("{image} is non-primary: Read-only file system"),
        ));
    }
    Ok(())
}

/// Clones on this site whose parent is `POOL/IMAGE@snap`.
fn clones_of(w: &World, side: usize, key: &str, snap: &str) -> usize {
    w.sites[side]
        .images
        .values()
        .filter(|i| {
            i.parent
                .as_ref()
                .is_some_and(|(p, sn)| p == key && sn == snap)
        })
        .count()
}

fn img<'a>(w: &'a mut World, side: usize, image: &ImageSpec, op: &str) -> OpsResult<&'a mut Img> {
    w.sites[side]
        .images
        .get_mut(&image.to_string())
        .ok_or_else(|| nf(op, &image.to_string()))
}

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
    fn image_exists(&self, image: &ImageSpec) -> OpsResult<bool> {
        self.with("image_exists", |w, s| {
            Ok(w.sites[s].images.contains_key(&image.to_string()))
        })
    }
    fn stat(&self, image: &ImageSpec) -> OpsResult<ImageStat> {
        self.with("stat", |w, s| {
            let i = img(w, s, image, "stat")?;
            Ok(ImageStat {
                size: i.data.len() as u64,
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
    fn mirror_daemons(&self, _pool: &PoolSpec) -> OpsResult<Vec<MirrorDaemon>> {
        self.with("mirror_daemons", |w, s| {
            let beacon = if w.sites[s].daemon_silent {
                0 // stands still
            } else {
                BEACONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
            };
            Ok(vec![MirrorDaemon {
                last_beacon: Some(format!("beacon-{beacon}")),
                id: "b".into(),
                healthy: w.sites[s].daemon_healthy,
                detail: if w.sites[s].daemon_healthy {
                    String::new()
                } else {
                    "not reporting".into()
                },
            }])
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
    fn create_mirror_snapshot(&self, _image: &ImageSpec) -> OpsResult<u64> {
        Err(OpsError::new(
            ErrorKind::NotSupported,
            "create_mirror_snapshot",
            "not simulated",
        ))
    }
    fn mirror_status(&self, image: &ImageSpec) -> OpsResult<Option<SiteStatus>> {
        self.with("mirror_status", |w, s| {
            Ok(w.sites[s]
                .images
                .get(&image.to_string())
                .map(|_| SiteStatus {
                    up: true,
                    state: MirrorState::Syncing,
                    description: "bootstrapping, IMAGE_SYNC/COPY_IMAGE 10%".into(),
                    last_update: 0,
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
                        position: if done { p } else { None },
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
            progress(i.data.len() as u64, i.data.len() as u64);
            Ok(hex::encode(Sha256::digest(&i.data)))
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

/// A destination cloud in memory: adoption renames the image in the fake Ceph world, as
/// Cinder's manage-existing does.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CloudWorld {
    /// The credentials have the admin role.
    pub admin: bool,
    /// Host strings and the Ceph pool each backend stores into.
    pub hosts: BTreeMap<String, String>,
    /// Volume records with their metadata.
    pub volumes: Vec<(AdoptedVolume, BTreeMap<String, String>)>,
    /// The next adopt manages the image, then its answer is lost (a crash or a network cut).
    pub lose_next_adopt_answer: bool,
    /// The next adopt leaves a record in `error` (the run died before unmanaging it).
    pub error_record_next_adopt: bool,
    /// How many adopt calls were made.
    pub adopt_calls: u32,
    /// Registered images with their properties and locations (`rbd://fsid/pool/image/snap`).
    pub images: Vec<(CloudImage, BTreeMap<String, String>, String)>,
    /// The next registration is made, then its answer is lost.
    pub lose_next_register_answer: bool,
    /// Glance ignores min_disk (to test the check).
    pub drop_min_disk: bool,
    /// How many register calls were made.
    pub register_calls: u32,
    next_id: u32,
}

pub struct FakeCloud {
    pub world: Arc<Mutex<World>>,
    pub cloud: Arc<Mutex<CloudWorld>>,
}

impl FakeCloud {
    /// A cloud whose backend `site-b@ceph#ceph` stores into `cinder`, with admin credentials.
    pub fn new(world: Arc<Mutex<World>>) -> (Arc<FakeCloud>, Arc<Mutex<CloudWorld>>) {
        let mut c = CloudWorld {
            admin: true,
            ..Default::default()
        };
        c.hosts.insert("site-b@ceph#ceph".into(), "cinder".into());
        let cloud = Arc::new(Mutex::new(c));
        (
            Arc::new(FakeCloud {
                world,
                cloud: cloud.clone(),
            }),
            cloud,
        )
    }

    fn resolve(c: &CloudWorld, target: &AdoptTarget) -> CloudResult<(String, String)> {
        if !c.admin {
            return Err(CloudError::new(
                CloudErrorKind::Forbidden,
                "adopting: this needs an admin role in the destination cloud `fake`; the credentials have roles: member",
            ));
        }
        match target {
            AdoptTarget::Host { host } => c
                .hosts
                .get(host)
                .map(|p| (host.clone(), p.clone()))
                .ok_or_else(|| {
                    CloudError::new(
                        CloudErrorKind::NotFound,
                        format!(
                            "Cinder does not know host `{host}`: Host {host} could not be found"
                        ),
                    )
                }),
            AdoptTarget::CephPool { pool } => c
                .hosts
                .iter()
                .find(|(_, p)| *p == pool)
                .map(|(h, p)| (h.clone(), p.clone()))
                .ok_or_else(|| {
                    CloudError::new(
                        CloudErrorKind::NotFound,
                        format!("no Cinder backend stores into Ceph pool `{pool}`"),
                    )
                }),
        }
    }
}

fn unsupported<T: Send + 'static>(what: &str) -> BoxFuture<'static, CloudResult<T>> {
    let e = CloudError::new(CloudErrorKind::Other, format!("{what}: not simulated"));
    Box::pin(async move { Err(e) })
}

impl CloudOps for FakeCloud {
    fn name(&self) -> &str {
        "site-b-admin"
    }
    fn check_adopt<'a>(
        &'a self,
        target: &'a AdoptTarget,
    ) -> BoxFuture<'a, CloudResult<AdoptCheck>> {
        Box::pin(async move {
            let c = self.cloud.lock().unwrap();
            let (host, pool) = Self::resolve(&c, target)?;
            Ok(AdoptCheck {
                host,
                pool: Some(pool),
                fsid: Some("fsid-1".into()),
            })
        })
    }
    fn adopt<'a>(&'a self, spec: &'a AdoptSpec) -> BoxFuture<'a, CloudResult<AdoptedVolume>> {
        Box::pin(async move {
            let mut c = self.cloud.lock().unwrap();
            c.adopt_calls += 1;
            let (host, pool) = Self::resolve(&c, &spec.target)?;
            let mut w = self.world.lock().unwrap();
            let from = format!("{pool}/{}", spec.rbd_image);
            let Some(img) = w.sites[1].images.remove(&from) else {
                return Err(CloudError::new(
                    CloudErrorKind::NotFound,
                    format!(
                        "Cinder backend `{host}` lists no RBD image named `{}`",
                        spec.rbd_image
                    ),
                ));
            };
            c.next_id += 1;
            let id = format!("vol-{}", c.next_id);
            let error = std::mem::take(&mut c.error_record_next_adopt);
            let v = AdoptedVolume {
                id: id.clone(),
                name: spec.name.clone(),
                status: if error {
                    "error".into()
                } else {
                    "available".into()
                },
                size_gib: (img.data.len() as u64).div_ceil(1 << 30),
                host: Some(host),
                rbd_image: if error {
                    spec.rbd_image.clone()
                } else {
                    format!("volume-{id}")
                },
            };
            w.sites[1]
                .images
                .insert(format!("{pool}/{}", v.rbd_image), img);
            c.volumes.push((v.clone(), spec.metadata.clone()));
            if error {
                return Err(CloudError::new(
                    CloudErrorKind::Other,
                    format!("volume {id} ended in status `error`"),
                ));
            }
            if std::mem::take(&mut c.lose_next_adopt_answer) {
                return Err(CloudError::new(CloudErrorKind::Other, "connection reset"));
            }
            Ok(v)
        })
    }
    fn find_adopted<'a>(
        &'a self,
        marker: &'a str,
    ) -> BoxFuture<'a, CloudResult<Vec<AdoptedVolume>>> {
        Box::pin(async move {
            let c = self.cloud.lock().unwrap();
            Ok(c.volumes
                .iter()
                .filter(|(_, m)| m.get(MARKER_KEY).map(String::as_str) == Some(marker))
                .map(|(v, _)| v.clone())
                .collect())
        })
    }
    fn forget_volume<'a>(&'a self, id: &'a str) -> BoxFuture<'a, CloudResult<()>> {
        Box::pin(async move {
            self.cloud
                .lock()
                .unwrap()
                .volumes
                .retain(|(v, _)| v.id != id);
            Ok(())
        })
    }
    fn source_volume<'a>(&'a self, _id: &'a str) -> BoxFuture<'a, CloudResult<SourceVolume>> {
        unsupported("source_volume")
    }
    fn check_register(&self) -> BoxFuture<'_, CloudResult<()>> {
        Box::pin(async move {
            if self.cloud.lock().unwrap().admin {
                Ok(())
            } else {
                Err(CloudError::new(
                    CloudErrorKind::Forbidden,
                    "refusing to add an rbd:// location with the credentials of cloud `fake` (roles: member)",
                ))
            }
        })
    }
    fn register_image<'a>(
        &'a self,
        spec: &'a RegisterSpec,
    ) -> BoxFuture<'a, CloudResult<CloudImage>> {
        Box::pin(async move {
            let mut c = self.cloud.lock().unwrap();
            c.register_calls += 1;
            let w = self.world.lock().unwrap();
            let key = format!("{}/{}", spec.pool, spec.image);
            let ok = w.sites[1].images.get(&key).is_some_and(|i| {
                i.snaps
                    .iter()
                    .any(|s| s.name == spec.snapshot && s.protected)
            });
            if !ok {
                return Err(CloudError::new(
                    CloudErrorKind::Other,
                    format!("image {key}@{} is missing or unprotected", spec.snapshot),
                ));
            }
            c.next_id += 1;
            let image = CloudImage {
                id: format!("img-{}", c.next_id),
                name: Some(spec.name.clone()),
                status: "active".into(),
                min_disk_gib: if c.drop_min_disk {
                    0
                } else {
                    spec.min_disk_gib
                },
                size: Some(w.sites[1].images[&key].data.len() as u64),
                rbd: Some((spec.pool.clone(), spec.image.clone())),
            };
            let url = format!(
                "rbd://{}/{}/{}/{}",
                spec.fsid, spec.pool, spec.image, spec.snapshot
            );
            c.images.push((image.clone(), spec.properties.clone(), url));
            if std::mem::take(&mut c.lose_next_register_answer) {
                return Err(CloudError::new(CloudErrorKind::Other, "connection reset"));
            }
            Ok(image)
        })
    }
    fn find_images<'a>(&'a self, marker: &'a str) -> BoxFuture<'a, CloudResult<Vec<CloudImage>>> {
        Box::pin(async move {
            let c = self.cloud.lock().unwrap();
            Ok(c.images
                .iter()
                .filter(|(_, p, _)| p.get(MARKER_KEY).map(String::as_str) == Some(marker))
                .map(|(i, _, _)| i.clone())
                .collect())
        })
    }
    fn get_image<'a>(&'a self, id: &'a str) -> BoxFuture<'a, CloudResult<CloudImage>> {
        Box::pin(async move {
            let c = self.cloud.lock().unwrap();
            c.images
                .iter()
                .find(|(i, _, _)| i.id == id)
                .map(|(i, _, _)| i.clone())
                .ok_or_else(|| CloudError::new(CloudErrorKind::NotFound, format!("no image {id}")))
        })
    }
    fn images_named<'a>(&'a self, name: &'a str) -> BoxFuture<'a, CloudResult<Vec<CloudImage>>> {
        Box::pin(async move {
            let c = self.cloud.lock().unwrap();
            Ok(c.images
                .iter()
                .filter(|(i, _, _)| i.name.as_deref() == Some(name))
                .map(|(i, _, _)| i.clone())
                .collect())
        })
    }
    fn upload_to_image<'a>(
        &'a self,
        _volume_id: &'a str,
        _name: &'a str,
    ) -> BoxFuture<'a, CloudResult<CloudImage>> {
        unsupported("upload_to_image")
    }
}

/// Shared fixtures of the unit tests that run migrations on the fake.
pub mod fixtures {
    use std::time::Duration;

    use crate::exec::RunOptions;
    use crate::features::{Features, MirrorImageMode};
    use crate::plan::VolumeMigration;
    use crate::spec::{ClusterSpec, PoolSpec};

    /// The features of a freshly created image (Ceph 16.2 defaults).
    pub const DEFAULT: Features = Features::LAYERING
        .union(Features::EXCLUSIVE_LOCK)
        .union(Features::OBJECT_MAP)
        .union(Features::FAST_DIFF)
        .union(Features::DEEP_FLATTEN);

    /// `site-a:volumes/IMAGE` into `site-b:cinder` in `mode`.
    pub fn migration_of(image: &str, mode: MirrorImageMode) -> VolumeMigration {
        let mut m = VolumeMigration::new(
            ClusterSpec::named("site-a").unwrap(),
            ClusterSpec::named("site-b").unwrap(),
            format!("volumes/{image}").parse().unwrap(),
            PoolSpec::new("cinder").unwrap(),
        );
        m.mode = mode;
        m
    }

    /// Waits that poll at once and call 200 ms without progress a stall.
    pub fn opts() -> RunOptions {
        let mut o = RunOptions::default();
        o.wait.poll = Duration::from_millis(1);
        o.wait.health_every = Duration::from_millis(1);
        o.wait.stall_after = Duration::from_millis(200);
        o
    }

    /// 4099 bytes (not a multiple of anything) of a repeating pattern.
    pub fn data() -> Vec<u8> {
        (0..4099u32).map(|i| (i * 7 % 251) as u8).collect()
    }

    /// `migrate_volume` with [`opts`] and no event sink: the call most tests make.
    pub async fn run(
        m: &VolumeMigration,
        src: std::sync::Arc<dyn crate::ops::CephOps>,
        dst: std::sync::Arc<dyn crate::ops::CephOps>,
        dir: &std::path::Path,
    ) -> crate::error::Result<crate::exec::Summary> {
        crate::exec::migrate_volume(
            m,
            src,
            dst,
            dir,
            &opts(),
            std::sync::Arc::new(crate::event::NullSink),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
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
}
