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
    /// Parent image and snapshot of a clone.
    pub parent: Option<(ImageSpec, String)>,
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
            parent: None,
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
            .filter(|(_, i)| matches!(i.mirror, Some((_, true))))
            .map(|(k, i)| (k.clone(), i.clone()))
            .collect();
        for (key, img) in primaries {
            let Some((mode, _)) = img.mirror else {
                continue;
            };
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
            img(w, s, image, "create_snapshot")?
                .snaps
                .push(SnapshotInfo {
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
    fn disable_mirroring(&self, image: &ImageSpec, _force: bool) -> OpsResult<()> {
        self.with("disable_mirroring", |w, s| {
            img(w, s, image, "disable_mirroring")?.mirror = None;
            // as rbd-mirror: a non-primary replica whose primary is gone is deleted, a
            // promoted one is left alone
            let key = image.to_string();
            if w.sites[1 - s]
                .images
                .get(&key)
                .is_some_and(|i| matches!(i.mirror, Some((_, false))))
            {
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
    fn demote(&self, image: &ImageSpec) -> OpsResult<()> {
        self.with("demote", |w, s| {
            let i = img(w, s, image, "demote")?;
            match &mut i.mirror {
                Some((_, primary)) if *primary => {
                    *primary = false;
                    Ok(())
                }
                _ => Err(OpsError::new(
                    ErrorKind::InvalidArgument,
                    "demote",
                    format!("{image} is not a primary mirrored image"),
                )),
            }
        })
    }
    fn promote(&self, image: &ImageSpec, force: bool) -> OpsResult<()> {
        self.with("promote", |w, s| {
            let other_primary = w.sites[1 - s]
                .images
                .get(&image.to_string())
                .is_some_and(|i| matches!(i.mirror, Some((_, true))));
            if other_primary && !force {
                return Err(OpsError::new(
                    ErrorKind::Busy,
                    "promote",
                    format!("{image} is still primary on the other site"),
                ));
            }
            let i = img(w, s, image, "promote")?;
            match &mut i.mirror {
                Some((_, primary)) => {
                    *primary = true;
                    Ok(())
                }
                None => Err(OpsError::new(
                    ErrorKind::InvalidArgument,
                    "promote",
                    format!("{image} is not mirrored"),
                )),
            }
        })
    }
    fn clone_image(
        &self,
        parent: &ImageSpec,
        snap: &str,
        child: &ImageSpec,
        features: Features,
    ) -> OpsResult<String> {
        self.with("clone_image", |w, s| {
            if w.sites[s].images.contains_key(&child.to_string()) {
                return Err(OpsError::new(ErrorKind::Exists, "clone_image", child.to_string()));
            }
            let p = img(w, s, parent, "clone_image")?;
            if !p.snaps.iter().any(|x| x.name == snap) {
                return Err(nf("clone_image", &format!("{parent}@{snap}")));
            }
            let mut c = Img::new(features, p.data.clone());
            c.parent = Some((parent.clone(), snap.to_string()));
            let id = c.id.clone();
            w.sites[s].images.insert(child.to_string(), c);
            Ok(id)
        })
    }
    fn flatten(&self, image: &ImageSpec, progress: Progress<'_>) -> OpsResult<()> {
        self.with("flatten", |w, s| {
            let i = img(w, s, image, "flatten")?;
            progress(i.data.len() as u64, i.data.len() as u64);
            i.parent = None;
            Ok(())
        })
    }
    fn parent(&self, image: &ImageSpec) -> OpsResult<Option<(ImageSpec, String)>> {
        self.with("parent", |w, s| Ok(img(w, s, image, "parent")?.parent.clone()))
    }
    fn unprotect_snapshot(&self, image: &ImageSpec, name: &str) -> OpsResult<()> {
        self.with("unprotect_snapshot", |w, s| {
            for sn in &mut img(w, s, image, "unprotect")?.snaps {
                if sn.name == name {
                    sn.protected = false;
                }
            }
            Ok(())
        })
    }
    fn remove_snapshot(&self, image: &ImageSpec, name: &str) -> OpsResult<()> {
        self.with("remove_snapshot", |w, s| {
            img(w, s, image, "remove_snapshot")?
                .snaps
                .retain(|x| x.name != name);
            Ok(())
        })
    }
    fn digest_snapshot(
        &self,
        image: &ImageSpec,
        snap: &str,
        progress: Progress<'_>,
    ) -> OpsResult<String> {
        self.with("digest_snapshot", |w, s| {
            w.digests
                .push(format!("{}:{image}@{snap}", if s == 0 { "a" } else { "b" }));
            let i = img(w, s, image, "digest_snapshot")?;
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
