//! An in-memory pair of clusters with a simulated rbd-mirror, for unit tests of the
//! orchestration logic (plans, waits, resume). Never used outside tests: the real thing is
//! tested against real clusters.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::features::{Features, MirrorImageMode};
use crate::ops::*;

/// The cephx client the fake destination's rbd-mirror reaches the source as.
pub const FAKE_PEER_CLIENT: &str = "client.rbd-mirror-peer";
use crate::spec::ImageSpec;

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
    /// Zero bytes past `data` (an image grown by [`CephOps::grow`], kept sparse so a
    /// fake can be grown to a whole GiB).
    pub zero_tail: u64,
}

impl Img {
    /// Size in bytes: the data and the zeros a grow added.
    pub fn size(&self) -> u64 {
        self.data.len() as u64 + self.zero_tail
    }
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
            zero_tail: 0,
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
    /// The service map also lists a killed instance of the daemon, with the same id and a
    /// beacon that stands still (Ceph lists one for a minute after a kill and a restart).
    pub killed_instance_listed: bool,
    pub has_peer: bool,
    /// The rbd-mirror daemon's options not at their defaults (`config show`).
    pub daemon_config: BTreeMap<String, String>,
    /// Reading the daemon's configuration is refused (no mgr caps).
    pub daemon_config_refused: bool,
    /// Room in pools, by pool name; a pool without an entry has plenty.
    pub space: BTreeMap<String, PoolSpace>,
}

/// A record of calls, not state: two worlds that differ only in their logs are equal (the
/// tests' "changes nothing" compares worlds).
#[derive(Debug, Clone, Default)]
pub struct CallLog(pub Vec<String>);

impl PartialEq for CallLog {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct World {
    pub sites: [Site; 2],
    /// `pin SITE:IMAGE` and `unpin SITE:IMAGE`, in order: what [`CephOps::pin_read_only`]
    /// guards were taken and dropped.
    pub pin_log: CallLog,
    pub next_snap: u64,
    /// Polls of the exact signal before a sync completes.
    pub sync_polls: u32,
    /// Sync never completes.
    pub stuck: bool,
    /// Fail the next call of this operation once.
    pub fail_once: Option<String>,
    /// The kind of that failure (`Other` when `None`), e.g. `TimedOut` as Ceph answers a
    /// write to a full pool.
    pub fail_once_kind: Option<ErrorKind>,
    /// Flip a byte of the next copy.
    pub corrupt_next_copy: bool,
    /// Every digest call, as `SITE:POOL/IMAGE` (site 0 is `a`, site 1 `b`).
    pub digests: Vec<String>,
    /// `sync_polls` left when the last copy started (more than 0: during the sync).
    pub copy_started_with_polls_left: Option<u32>,
    /// Every Ceph call takes this long (so a dropped future can land inside any step).
    pub op_delay: std::time::Duration,
    /// What the destination daemon reports for a replica (`replaying` with this
    /// description, e.g. `replaying, {"entries_behind_primary":5,...}`) instead of the
    /// default bootstrapping status.
    pub replica_description: Option<String>,
    /// The journal entry (tag 1) the mirror peer has committed up to, whatever the sync,
    /// for a replay that moves while its status stands still.
    pub peer_committed: Option<u64>,
    /// rbd-mirror making a journal sync point (a user snapshot of this name) on a source
    /// image late: at the n-th listing of its snapshots once its mirroring is off.
    pub late_sync_point: Option<(u32, String)>,
    /// The destination daemon reports every replica in error ("error bootstrapping
    /// replay": a split-brain after a demotion and promotion), as Ceph 16.2 does for a
    /// replica it will neither replay nor remove.
    pub replica_in_error: bool,
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

    /// What the simulated rbd-mirror does between two calls: replicas of mirrored primaries
    /// appear and catch up. Tests call it to start from a settled world.
    pub(crate) fn replicate(&mut self) {
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
            let kind = w.fail_once_kind.take().unwrap_or(ErrorKind::Other);
            return Err(OpsError::new(kind, op, "injected failure"));
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

mod ceph;
mod cloud;
pub mod fixtures;
#[cfg(test)]
mod tests;

pub use cloud::{CloudWorld, FakeCloud};
