//! The real [`CephOps`]: librbd and librados through the safe wrapper in [`librbd`].
//!
//! One connection per cluster, opened once; every call opens the image it needs (read-only
//! where it only reads, so no watch is registered and the image's own watcher list stays
//! honest) and closes it again.

use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::trailing;
use librbd::{self as rbd, Cluster, ClusterConfig, Image, IoCtx, RbdError};
use rbd_mirror_core::features::{Features, MirrorImageMode};
use rbd_mirror_core::ops::{
    CephOps, Created, ErrorKind, ImageStat, ImageUser, JournalPeer, JournalPosition,
    JournalPositions, MirrorDaemon, MirrorImage, MirrorImageState, MirrorPeer, OpsError, OpsResult,
    PoolMirrorMode, PoolSpace, Progress, Ready, SnapshotInfo, SnapshotNamespace,
};
use rbd_mirror_core::spec::{ClusterSpec, ImageSpec, PoolSpec};
use rbd_mirror_core::status::{MirrorState, SiteStatus};

/// librbd's error as the engine's [`OpsError`]: the kind mapped, the message kept.
pub(crate) fn ops_error(e: RbdError) -> OpsError {
    {
        let kind = match e.kind {
            rbd::ErrorKind::NotFound => ErrorKind::NotFound,
            rbd::ErrorKind::Exists => ErrorKind::Exists,
            rbd::ErrorKind::Busy | rbd::ErrorKind::NotEmpty => ErrorKind::Busy,
            rbd::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
            rbd::ErrorKind::InvalidArgument => ErrorKind::InvalidArgument,
            rbd::ErrorKind::ReadOnly => ErrorKind::ReadOnly,
            rbd::ErrorKind::NotSupported => ErrorKind::NotSupported,
            rbd::ErrorKind::TimedOut => ErrorKind::TimedOut,
            rbd::ErrorKind::Canceled => ErrorKind::Cancelled,
            rbd::ErrorKind::Malformed | rbd::ErrorKind::Other(_) => ErrorKind::Other,
        };
        OpsError::new(kind, e.op, e.to_string())
    }
}

/// `?` on a librbd result inside this crate: `.ops()?` maps the error with [`ops_error`]
/// (the engine's error type is foreign here, so there is no `From`).
pub(crate) trait OrOps<T> {
    /// The result with its error mapped to [`OpsError`].
    fn ops(self) -> OpsResult<T>;
}

impl<T> OrOps<T> for Result<T, RbdError> {
    fn ops(self) -> OpsResult<T> {
        self.map_err(ops_error)
    }
}

/// Client global id -> cephx name, from every monitor's `sessions` (each monitor lists only
/// the clients connected to it). Empty when the monitors cannot be asked (a client without
/// the caps): the caller then knows users only by id and address.
fn session_names_of(cluster: &Cluster) -> std::collections::HashMap<i64, String> {
    #[derive(serde::Deserialize)]
    struct MonMap {
        mons: Vec<Mon>,
    }
    #[derive(serde::Deserialize)]
    struct Mon {
        name: String,
    }
    #[derive(serde::Deserialize)]
    struct Session {
        #[serde(default)]
        entity_name: String,
        #[serde(default)]
        global_id: i64,
    }
    let mut names = std::collections::HashMap::new();
    let Ok(dump) = cluster.mon_command(r#"{"prefix":"mon dump","format":"json"}"#) else {
        return names;
    };
    let Ok(map) = serde_json::from_str::<MonMap>(&dump) else {
        return names;
    };
    for mon in map.mons {
        let Ok(out) =
            cluster.mon_command_target(&mon.name, r#"{"prefix":"sessions","format":"json"}"#)
        else {
            continue;
        };
        if let Ok(sessions) = serde_json::from_str::<Vec<Session>>(&out) {
            for s in sessions {
                if s.global_id > 0 && !s.entity_name.is_empty() {
                    names.insert(s.global_id, s.entity_name);
                }
            }
        }
    }
    names
}

/// A connected cluster, implementing [`CephOps`].
pub struct RbdCeph {
    name: String,
    cluster: Cluster,
    /// Digest buffer size (one object by default).
    chunk: Mutex<usize>,
}

impl RbdCeph {
    /// See [`session_names_of`].
    fn session_names(&self) -> std::collections::HashMap<i64, String> {
        session_names_of(&self.cluster)
    }

    /// Connect to the cluster of `spec` (conf, client id); fails fast when it is unreachable.
    pub fn connect(spec: &ClusterSpec) -> OpsResult<Self> {
        // No librbd cache: its default write-around mode acknowledges a write before the
        // OSD has it, so a read through another handle (the copy's read-back) could miss
        // it; and this tool reads and writes whole objects once, which a cache cannot help.
        let config = ClusterConfig::new(spec.name.clone())
            .conf(spec.conf.clone())
            .client_id(spec.client_id.clone())
            .option("rbd_cache", "false");
        if !spec.conf.exists() {
            return Err(OpsError::new(
                ErrorKind::NotFound,
                "connect",
                format!(
                    "no conf file {} for cluster '{}'; pass --from-conf/--to-conf or install the conf and keyring under /etc/ceph",
                    spec.conf.display(),
                    spec.name
                ),
            ));
        }
        let cluster = Cluster::connect(&config).ops()?;
        Ok(Self {
            name: spec.name.clone(),
            cluster,
            chunk: Mutex::new(4 << 20),
        })
    }

    /// The underlying connection (for callers that need more than [`CephOps`]).
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    fn io(&self, pool: &PoolSpec) -> OpsResult<IoCtx> {
        self.cluster.ioctx_ns(&pool.pool, &pool.namespace).ops()
    }

    fn open(&self, image: &ImageSpec) -> OpsResult<Image> {
        self.io(&image.pool)?.open_image(&image.image).ops()
    }

    fn open_ro(&self, image: &ImageSpec) -> OpsResult<Image> {
        self.open_ro_at(image, None)
    }

    /// Opens read-only at user snapshot `snap` (`None`: the head).
    fn open_ro_at(&self, image: &ImageSpec, snap: Option<&str>) -> OpsResult<Image> {
        let io = self.io(&image.pool)?;
        Image::open_read_only(&io, &image.image, snap).ops()
    }

    /// The pools of the cluster with their usage (mon command `df`).
    fn df(&self) -> OpsResult<Vec<DfPool>> {
        let out = self
            .cluster
            .mon_command(r#"{"prefix":"df","format":"json"}"#)
            .ops()?;
        parse_df(&out)
    }

    /// The pools of the cluster by name and id, from the OSD map (`osd pool ls detail`):
    /// `df` comes from the manager's statistics, which list a new pool only seconds later.
    fn pool_ids(&self) -> OpsResult<Vec<(String, i64)>> {
        let out = self
            .cluster
            .mon_command(r#"{"prefix":"osd pool ls","detail":"detail","format":"json"}"#)
            .ops()?;
        parse_pool_ids(&out)
    }

    /// The data pool of an open image, by name, when it is not the image's own pool.
    fn data_pool_of(&self, io: &IoCtx, img: &Image) -> OpsResult<Option<String>> {
        let id = img.data_pool_id().ops()?;
        if id == io.pool_id() {
            return Ok(None);
        }
        match self.pool_ids()?.into_iter().find(|p| p.1 == id) {
            Some((name, _)) => Ok(Some(name)),
            None => Err(OpsError::new(
                ErrorKind::NotFound,
                "rbd_get_data_pool_id",
                format!(
                    "the data pool (id {id}) of an image in pool {} is not in the OSD map",
                    io.pool()
                ),
            )),
        }
    }
}

/// One pool in the monitors' `df` report.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DfPool {
    name: String,
    id: i64,
    stored: u64,
    max_avail: u64,
}

fn malformed(op: &str, why: impl std::fmt::Display) -> OpsError {
    OpsError::new(ErrorKind::Other, op, format!("unexpected reply: {why}"))
}

/// The pools of `{"prefix":"df","format":"json"}`'s reply.
fn parse_df(json: &str) -> OpsResult<Vec<DfPool>> {
    #[derive(serde::Deserialize)]
    struct Df {
        pools: Vec<Pool>,
    }
    #[derive(serde::Deserialize)]
    struct Pool {
        name: String,
        id: i64,
        stats: Stats,
    }
    #[derive(serde::Deserialize)]
    struct Stats {
        stored: u64,
        max_avail: u64,
    }
    let df: Df = serde_json::from_str(json).map_err(|e| malformed("df", e))?;
    Ok(df
        .pools
        .into_iter()
        .map(|p| DfPool {
            name: p.name,
            id: p.id,
            stored: p.stats.stored,
            max_avail: p.stats.max_avail,
        })
        .collect())
}

/// Names and ids in `{"prefix":"osd pool ls","detail":"detail","format":"json"}`'s reply.
fn parse_pool_ids(json: &str) -> OpsResult<Vec<(String, i64)>> {
    #[derive(serde::Deserialize)]
    struct Pool {
        pool_name: String,
        pool_id: i64,
    }
    let pools: Vec<Pool> =
        serde_json::from_str(json).map_err(|e| malformed("osd pool ls detail", e))?;
    Ok(pools
        .into_iter()
        .map(|p| (p.pool_name, p.pool_id))
        .collect())
}

/// The byte quota in `{"prefix":"osd pool get-quota",...}`'s reply; `None` for none (0).
fn parse_quota_max_bytes(json: &str) -> OpsResult<Option<u64>> {
    #[derive(serde::Deserialize)]
    struct Quota {
        quota_max_bytes: u64,
    }
    let q: Quota = serde_json::from_str(json).map_err(|e| malformed("osd pool get-quota", e))?;
    Ok((q.quota_max_bytes > 0).then_some(q.quota_max_bytes))
}

fn mirror_mode_of(m: rbd::MirrorImageMode) -> Option<MirrorImageMode> {
    match m {
        rbd::MirrorImageMode::Journal => Some(MirrorImageMode::Journal),
        rbd::MirrorImageMode::Snapshot => Some(MirrorImageMode::Snapshot),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

fn status_state(s: rbd::MirrorStatusState) -> MirrorState {
    match s {
        rbd::MirrorStatusState::Error => MirrorState::Error,
        rbd::MirrorStatusState::Syncing => MirrorState::Syncing,
        rbd::MirrorStatusState::StartingReplay => MirrorState::StartingReplay,
        rbd::MirrorStatusState::Replaying => MirrorState::Replaying,
        rbd::MirrorStatusState::StoppingReplay => MirrorState::StoppingReplay,
        rbd::MirrorStatusState::Stopped => MirrorState::Stopped,
        _ => MirrorState::Unknown,
    }
}

impl CephOps for RbdCeph {
    fn name(&self) -> &str {
        &self.name
    }

    fn fsid(&self) -> OpsResult<String> {
        self.cluster.fsid().ops()
    }

    fn pool_exists(&self, pool: &PoolSpec) -> OpsResult<bool> {
        match self.cluster.ioctx(&pool.pool) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(ops_error(e)),
        }
    }

    fn image_exists(&self, image: &ImageSpec) -> OpsResult<bool> {
        self.io(&image.pool)?.image_exists(&image.image).ops()
    }

    fn stat(&self, image: &ImageSpec) -> OpsResult<ImageStat> {
        let img = self.open_ro(image)?;
        let info = img.stat().ops()?;
        Ok(ImageStat {
            size: info.size,
            object_size: info.obj_size,
            features: Features::from_bits_retain(img.features().ops()?),
            id: img.id().ops()?,
        })
    }

    fn update_features(
        &self,
        image: &ImageSpec,
        features: Features,
        enable: bool,
    ) -> OpsResult<()> {
        self.open(image)?
            .update_features(features.bits(), enable)
            .ops()
    }

    fn snapshots(&self, image: &ImageSpec) -> OpsResult<Vec<SnapshotInfo>> {
        let img = self.open_ro(image)?;
        let mut out = Vec::new();
        for s in img.snapshots().ops()? {
            let namespace = match s.namespace {
                rbd::SnapNamespaceType::User => SnapshotNamespace::User,
                rbd::SnapNamespaceType::Mirror => {
                    let m = img.snap_mirror_namespace(s.id).ops()?;
                    SnapshotNamespace::Mirror {
                        primary: m.state.is_primary(),
                        complete: m.complete,
                        primary_snap_id: m.primary_snap_id,
                        last_copied_object_number: m.last_copied_object_number,
                    }
                }
                _ => SnapshotNamespace::Other,
            };
            let protected = namespace == SnapshotNamespace::User
                && img.snap_is_protected(&s.name).unwrap_or(false);
            out.push(SnapshotInfo {
                id: s.id,
                name: s.name,
                namespace,
                protected,
            });
        }
        Ok(out)
    }

    fn create_snapshot(&self, image: &ImageSpec, name: &str) -> OpsResult<()> {
        let img = self.open(image)?;
        if !img.snap_exists(name).ops()? {
            img.snap_create(name).ops()?;
        }
        Ok(())
    }

    fn protect_snapshot(&self, image: &ImageSpec, name: &str) -> OpsResult<()> {
        let img = self.open(image)?;
        if !img.snap_is_protected(name).ops()? {
            img.snap_protect(name).ops()?;
        }
        Ok(())
    }

    fn remove_snapshot_by_id(&self, image: &ImageSpec, id: u64) -> OpsResult<()> {
        match self.open(image)?.snap_remove_by_id(id) {
            Err(e) if e.is_not_found() => Ok(()),
            r => Ok(r.ops()?),
        }
    }

    fn watchers(&self, image: &ImageSpec) -> OpsResult<Vec<String>> {
        let img = self.open_ro(image)?;
        Ok(img.watchers().ops()?.into_iter().map(|w| w.addr).collect())
    }

    fn image_users(&self, image: &ImageSpec) -> OpsResult<Vec<ImageUser>> {
        let watchers = self.open_ro(image)?.watchers().ops()?;
        if watchers.is_empty() {
            return Ok(Vec::new());
        }
        let names = self.session_names();
        Ok(watchers
            .into_iter()
            .map(|w| ImageUser {
                entity: names.get(&w.id).cloned(),
                addr: w.addr,
                client_id: w.id,
            })
            .collect())
    }

    fn pool_mirror_mode(&self, pool: &PoolSpec) -> OpsResult<PoolMirrorMode> {
        Ok(match self.io(pool)?.mirror_mode().ops()? {
            rbd::MirrorMode::Image => PoolMirrorMode::Image,
            rbd::MirrorMode::Pool => PoolMirrorMode::Pool,
            _ => PoolMirrorMode::Disabled,
        })
    }

    fn set_pool_mirror_mode(&self, pool: &PoolSpec, mode: PoolMirrorMode) -> OpsResult<()> {
        let m = match mode {
            PoolMirrorMode::Disabled => rbd::MirrorMode::Disabled,
            PoolMirrorMode::Image => rbd::MirrorMode::Image,
            PoolMirrorMode::Pool => rbd::MirrorMode::Pool,
        };
        self.io(pool)?.set_mirror_mode(m).ops()
    }

    fn mirror_peers(&self, pool: &PoolSpec) -> OpsResult<Vec<MirrorPeer>> {
        Ok(self
            .io(pool)?
            .mirror_peer_sites()
            .ops()?
            .into_iter()
            .map(|p| MirrorPeer {
                uuid: p.uuid,
                site_name: p.site_name,
                direction: match p.direction {
                    rbd::PeerDirection::RxOnly => "rx-only".to_string(),
                    rbd::PeerDirection::TxOnly => "tx-only".to_string(),
                    rbd::PeerDirection::RxTx => "rx-tx".to_string(),
                    rbd::PeerDirection::Unknown(v) => format!("unknown ({v})"),
                },
                mirror_uuid: p.mirror_uuid,
                client_name: p.client_name,
            })
            .collect())
    }

    fn mirror_daemons(&self, pool: &PoolSpec) -> OpsResult<Vec<MirrorDaemon>> {
        let io = self.io(pool)?;
        let health = self.cluster.mirror_daemon_health(&io).ops()?;
        Ok(health
            .daemons
            .into_iter()
            .map(|d| MirrorDaemon {
                id: d.client_id.clone(),
                healthy: d.health == rbd::MirrorHealth::Ok,
                detail: if d.callouts.is_empty() {
                    format!("{:?}", d.health).to_lowercase()
                } else {
                    d.callouts.join("; ")
                },
                last_beacon: d.last_beacon,
            })
            .collect())
    }

    fn mirror_image(&self, image: &ImageSpec) -> OpsResult<MirrorImage> {
        let img = self.open_ro(image)?;
        let info = img.mirror_info().ops()?;
        let state = match info.state {
            rbd::MirrorImageState::Enabled => MirrorImageState::Enabled,
            rbd::MirrorImageState::Disabling => MirrorImageState::Disabling,
            _ => MirrorImageState::Disabled,
        };
        let mode = if state == MirrorImageState::Enabled {
            img.mirror_mode().ok().and_then(mirror_mode_of)
        } else {
            None
        };
        Ok(MirrorImage {
            state,
            mode,
            primary: info.primary || state == MirrorImageState::Disabled,
            global_id: info.global_id,
        })
    }

    fn enable_mirroring(&self, image: &ImageSpec, mode: MirrorImageMode) -> OpsResult<()> {
        let m = match mode {
            MirrorImageMode::Journal => rbd::MirrorImageMode::Journal,
            MirrorImageMode::Snapshot => rbd::MirrorImageMode::Snapshot,
        };
        self.open(image)?.mirror_enable(m).ops()
    }

    fn disable_mirroring(&self, image: &ImageSpec, force: bool) -> OpsResult<()> {
        self.open(image)?.mirror_disable(force).ops()
    }

    fn create_mirror_snapshot(&self, image: &ImageSpec) -> OpsResult<u64> {
        self.open(image)?.mirror_create_snapshot().ops()
    }

    fn mirror_status(&self, image: &ImageSpec) -> OpsResult<Option<SiteStatus>> {
        let img = match self.open_ro(image) {
            Ok(i) => i,
            Err(e) if e.kind == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let g = img.mirror_global_status().ops()?;
        Ok(g.local().map(|s| SiteStatus {
            up: s.up,
            state: status_state(s.state),
            description: s.description.clone(),
            last_update: s.last_update,
        }))
    }

    fn journal_positions(&self, image: &ImageSpec) -> OpsResult<JournalPositions> {
        let io = self.io(&image.pool)?;
        let id = Image::open_read_only(&io, &image.image, None)
            .ops()?
            .id()
            .ops()?;
        let status = io.journal_status(&id).ops()?;
        let pos = |c: &rbd::JournalClient| {
            c.newest().map(|p| JournalPosition {
                object_number: p.object_number,
                tag_tid: p.tag_tid,
                entry_tid: p.entry_tid,
            })
        };
        Ok(JournalPositions {
            master: status.master().and_then(pos),
            peers: status
                .mirror_peers()
                .map(|c| JournalPeer {
                    id: c.id.clone(),
                    position: pos(c),
                    replica_image_id: match &c.meta {
                        rbd::JournalClientMeta::MirrorPeer { image_id, .. }
                            if !image_id.is_empty() =>
                        {
                            Some(image_id.clone())
                        }
                        _ => None,
                    },
                    syncing: match &c.meta {
                        rbd::JournalClientMeta::MirrorPeer {
                            state, sync_points, ..
                        } => Some(
                            *state != rbd::MirrorPeerState::Replaying
                                || *sync_points != 0
                                || c.state != rbd::JournalClientState::Connected,
                        ),
                        _ => None,
                    },
                })
                .collect(),
        })
    }

    fn copy(&self, src: &ImageSpec, dst: &ImageSpec, progress: Progress<'_>) -> OpsResult<()> {
        let img = self.open_ro(src)?;
        let dio = self.io(&dst.pool)?;
        // A journal-mode replica carries journaling (and non-primary): a copy created with
        // them would push every copied write through a journal (about 9x slower for 1 GiB
        // here). The plan sets the copy's final features afterwards.
        let features = Features::from_bits_retain(img.features().ops()?)
            - Features::JOURNALING
            - Features::NON_PRIMARY;
        // the copy keeps the source's data pool (an erasure-coded pool, say): without it,
        // its data would land in the copy's own pool
        let opts = rbd::ImageOptions {
            features: Some(features.bits()),
            data_pool: self.data_pool_of(&self.io(&src.pool)?, &img)?,
            ..Default::default()
        };
        img.copy_to(&dio, &dst.image, &opts, progress).ops()
    }

    fn copy_trailing(
        &self,
        src: &ImageSpec,
        dst: &ImageSpec,
        ready: Ready<'_>,
        progress: Progress<'_>,
        created: Created<'_>,
    ) -> OpsResult<String> {
        let first_ready = trailing::wait_for_source(&mut *ready, &mut *progress)?;
        let first = self.open_ro(src)?;
        let info = first.stat().ops()?;
        // as in `copy`: no journaling (every write through a journal) and no non-primary
        let features = Features::from_bits_retain(first.features().ops()?)
            - Features::JOURNALING
            - Features::NON_PRIMARY;
        let dio = self.io(&dst.pool)?;
        let opts = rbd::ImageOptions {
            features: Some(features.bits()),
            order: u32::try_from(info.order).ok(),
            // as in `copy`: the copy keeps the source's data pool
            data_pool: self.data_pool_of(&self.io(&src.pool)?, &first)?,
            ..Default::default()
        };
        dio.create_image(&dst.image, info.size, &opts).ops()?;
        let writer = dio.open_image(&dst.image).ops()?;
        let id = writer.id().ops()?;
        if let Err(e) = created(&id) {
            // not recorded: nobody would know this image is ours, so it goes now
            drop(writer);
            let _ = self.remove_image_with_id(dst, &id);
            return Err(e);
        }
        let mut readers = vec![first];
        for _ in 1..trailing::READERS {
            readers.push(self.open_ro(src)?);
        }
        let mut checkers = Vec::new();
        for _ in 0..trailing::CHECKERS {
            checkers.push(self.open_ro(dst)?);
        }
        // pieces of one object, at most 4 MiB (a power of two: it divides any larger object,
        // so rbd-mirror's per-object watermark falls on piece boundaries)
        let chunk = usize::try_from(info.obj_size.clamp(4096, 4 << 20)).unwrap_or(4 << 20);
        trailing::trailing_copy(
            trailing::Handles {
                readers,
                writer,
                checkers,
            },
            info.size,
            chunk,
            first_ready,
            ready,
            progress,
        )
    }

    fn remove_image(&self, image: &ImageSpec) -> OpsResult<()> {
        self.io(&image.pool)?.remove_image(&image.image).ops()
    }

    /// Checks the id of the image under the name, moves it to the trash
    /// (`rbd_trash_move`) and removes the trashed image by the recorded id
    /// (`rbd_trash_remove`): the removal itself goes by id, so it can only ever remove the
    /// image with that id. Should another image take the name between the check and the
    /// move (nothing of ours does that: the copy target is locked), it is the one moved to
    /// the trash and the removal by our id then finds nothing: that image stays in the
    /// trash, untouched (`rbd trash restore` puts it back), and the call fails saying so.
    fn remove_image_with_id(&self, image: &ImageSpec, id: &str) -> OpsResult<()> {
        let io = self.io(&image.pool)?;
        let found = match Image::open_read_only(&io, &image.image, None) {
            Ok(img) => Some(img.id().ops()?),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(ops_error(e)),
        };
        match found {
            Some(found) if found != id => Err(OpsError::new(
                ErrorKind::Exists,
                "remove_image_with_id",
                format!("{image} has id {found}, not {id}: another image, left alone"),
            )),
            Some(_) => {
                io.trash_move(&image.image).ops()?;
                match io.trash_remove(id) {
                    Err(e) if e.is_not_found() => Err(OpsError::new(
                        ErrorKind::Exists,
                        "remove_image_with_id",
                        format!(
                            "{image} was replaced by another image while being removed; that image is in the trash of pool {}, untouched: put it back with `rbd trash ls {0}` and `rbd trash restore {0}/ID`",
                            image.pool
                        ),
                    )),
                    r => Ok(r.ops()?),
                }
            }
            // gone, or moved to the trash by an earlier attempt that could not remove it
            None => match io.trash_remove(id) {
                Err(e) if e.is_not_found() => Ok(()),
                r => Ok(r.ops()?),
            },
        }
    }

    fn metadata_get(&self, image: &ImageSpec, key: &str) -> OpsResult<Option<String>> {
        self.open_ro(image)?.metadata_get(key).ops()
    }

    fn metadata_set(&self, image: &ImageSpec, key: &str, value: &str) -> OpsResult<()> {
        self.open(image)?.metadata_set(key, value).ops()
    }

    fn metadata_remove(&self, image: &ImageSpec, key: &str) -> OpsResult<()> {
        match self.open(image)?.metadata_remove(key) {
            Err(e) if e.is_not_found() => Ok(()),
            r => Ok(r.ops()?),
        }
    }

    fn digest(&self, image: &ImageSpec, progress: Progress<'_>) -> OpsResult<String> {
        let img = self.open_ro(image)?;
        let size = img.size().ops()?;
        let chunk = self.chunk.lock().map(|c| *c).unwrap_or(4 << 20);
        let mut readers = vec![img];
        for _ in 1..DIGEST_READERS {
            readers.push(self.open_ro(image)?);
        }
        pipelined_sha256(readers, size, chunk, progress)
    }

    fn data_pool(&self, image: &ImageSpec) -> OpsResult<Option<String>> {
        let io = self.io(&image.pool)?;
        let img = Image::open_read_only(&io, &image.image, None).ops()?;
        self.data_pool_of(&io, &img)
    }

    fn pool_space(&self, pool: &str) -> OpsResult<PoolSpace> {
        let Some(p) = self.df()?.into_iter().find(|p| p.name == pool) else {
            if !self.pool_ids()?.iter().any(|(name, _)| name == pool) {
                return Err(OpsError::new(
                    ErrorKind::NotFound,
                    "df",
                    format!("no pool '{pool}' on {}", self.name),
                ));
            }
            return Err(OpsError::new(
                ErrorKind::Other,
                "df",
                format!(
                    "pool '{pool}' has no usage statistics yet (created moments ago?); re-run in a few seconds"
                ),
            ));
        };
        let cmd =
            serde_json::json!({"prefix": "osd pool get-quota", "pool": pool, "format": "json"});
        let out = self.cluster.mon_command(&cmd.to_string()).ops()?;
        Ok(PoolSpace {
            max_avail: p.max_avail,
            stored: p.stored,
            quota_max_bytes: parse_quota_max_bytes(&out)?,
        })
    }

    fn demote(&self, image: &ImageSpec) -> OpsResult<()> {
        self.open(image)?.mirror_demote().ops()
    }

    /// Seen on Ceph 16.2.15 (the wrapper's `*_promote_after_demote_*` tests and
    /// `cutover_real`): a promote without force fails with `EBUSY` while the peer is
    /// primary and after its demote until the replica has replayed the demotion, in both
    /// mirror modes; in snapshot mode it then fails with `EROFS` for a moment (about
    /// 0.1 s here, the demoted mirror snapshot still being copied) before it succeeds.
    /// Both are [`ErrorKind::Busy`] here, the one signal to poll.
    fn promote(&self, image: &ImageSpec, force: bool) -> OpsResult<()> {
        match self.open(image)?.mirror_promote(force) {
            Err(e) if !force && e.kind == rbd::ErrorKind::ReadOnly => {
                let mut busy = ops_error(e);
                busy.kind = ErrorKind::Busy;
                busy.message
                    .push_str(" (the replica is still taking in the peer's demotion)");
                Err(busy)
            }
            r => r.ops(),
        }
    }

    fn clone_image(
        &self,
        parent: &ImageSpec,
        snap: &str,
        child: &ImageSpec,
        features: Features,
        created: Created<'_>,
    ) -> OpsResult<()> {
        let pio = self.io(&parent.pool)?;
        let cio = self.io(&child.pool)?;
        let opts = rbd::ImageOptions {
            features: Some(features.bits()),
            clone_format: Some(2),
            ..Default::default()
        };
        cio.clone_image(&pio, &parent.image, snap, &child.image, &opts)
            .ops()?;
        let id = Image::open_read_only(&cio, &child.image, None)
            .ops()?
            .id()
            .ops()?;
        if let Err(e) = created(&id) {
            // not recorded: nobody would know this clone is ours, so it goes now
            let _ = self.remove_image_with_id(child, &id);
            return Err(e);
        }
        Ok(())
    }

    fn flatten(&self, image: &ImageSpec, progress: Progress<'_>) -> OpsResult<()> {
        self.open(image)?.flatten(progress).ops()
    }

    fn rebuild_object_map(&self, image: &ImageSpec, progress: Progress<'_>) -> OpsResult<()> {
        self.open(image)?.rebuild_object_map(progress).ops()
    }

    fn parent(&self, image: &ImageSpec) -> OpsResult<Option<(ImageSpec, String)>> {
        let Some(p) = self.open_ro(image)?.parent().ops()? else {
            return Ok(None);
        };
        let spec = ImageSpec {
            pool: PoolSpec {
                pool: p.pool,
                namespace: p.namespace,
            },
            image: p.image_name,
        };
        Ok(Some((spec, p.snap_name)))
    }

    fn unprotect_snapshot(&self, image: &ImageSpec, name: &str) -> OpsResult<()> {
        let img = self.open(image)?;
        if img.snap_is_protected(name).ops()? {
            img.snap_unprotect(name).ops()?;
        }
        Ok(())
    }

    fn remove_snapshot(&self, image: &ImageSpec, name: &str) -> OpsResult<()> {
        match self.open(image)?.snap_remove(name) {
            Err(e) if e.is_not_found() => Ok(()),
            r => r.ops(),
        }
    }

    fn digest_snapshot(
        &self,
        image: &ImageSpec,
        snap: &str,
        progress: Progress<'_>,
    ) -> OpsResult<String> {
        let img = self.open_ro_at(image, Some(snap))?;
        let size = img.size().ops()?;
        let chunk = self.chunk.lock().map(|c| *c).unwrap_or(4 << 20);
        let mut readers = vec![img];
        for _ in 1..DIGEST_READERS {
            readers.push(self.open_ro_at(image, Some(snap))?);
        }
        pipelined_sha256(readers, size, chunk, progress)
    }
}

/// Reader threads (each with its own image handle) of a digest.
const DIGEST_READERS: usize = 3;

/// What a digest reader needs from an image: a positioned read. Implemented by
/// [`rbd::Image`]; unit tests implement it to inject failures and slow reads.
pub(crate) trait ReadAt: Send {
    /// Read into `buf` at `offset`; returns the bytes read (short only at the end).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, RbdError>;
}

impl ReadAt for Image {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, RbdError> {
        Image::read_at(self, offset, buf)
    }
}

/// SHA-256 of the first `size` bytes of an image, with reading and hashing overlapped: each
/// of `readers` (one open handle per reader thread) reads every `readers.len()`-th
/// `chunk`-sized piece a little ahead, while this thread hashes the pieces in order. One
/// synchronous read at a time left the hash waiting on reads; with several readers it runs
/// at hashing speed. Holes read as zeros.
///
/// Every thread ends on a read error or a cancel: the hasher's ends of the channels live
/// inside the scope and are dropped before the scope joins the readers, so a reader blocked
/// on a channel sees it closed (they once lived outside the scope and the join waited for
/// readers that waited for the hasher: a cancelled or failed digest never returned).
pub(crate) fn pipelined_sha256<R: ReadAt>(
    readers: Vec<R>,
    size: u64,
    chunk: usize,
    progress: Progress<'_>,
) -> OpsResult<String> {
    use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
    type Piece = Result<(Vec<u8>, usize), rbd::RbdError>;
    const AHEAD: usize = 2; // buffers per reader
    let lanes = readers.len().max(1) as u64;
    let chunk64 = chunk as u64;
    let pieces = size.div_ceil(chunk64);
    std::thread::scope(|scope| {
        // owned by this closure: dropped when it returns, before the scope joins the readers
        let mut full: Vec<Receiver<Piece>> = Vec::new();
        let mut free: Vec<SyncSender<Vec<u8>>> = Vec::new();
        for (lane, img) in readers.into_iter().enumerate() {
            let (full_tx, full_rx) = sync_channel::<Piece>(AHEAD);
            let (free_tx, free_rx) = sync_channel::<Vec<u8>>(AHEAD);
            for _ in 0..AHEAD {
                // cannot fail: the channel has room for every buffer and its receiver lives
                let _ = free_tx.send(vec![0u8; chunk]);
            }
            full.push(full_rx);
            free.push(free_tx);
            scope.spawn(move || {
                let mut piece = lane as u64;
                while piece < pieces {
                    let Ok(mut buf) = free_rx.recv() else {
                        return; // the hasher stopped (cancelled or failed)
                    };
                    let off = piece * chunk64;
                    let n = usize::try_from(size - off).map_or(chunk, |left| left.min(chunk));
                    let read = img.read_at(off, &mut buf[..n]).map(|got| {
                        // librbd returns short reads only at the end of the image
                        buf[got.min(n)..n].fill(0);
                        (buf, n)
                    });
                    let failed = read.is_err();
                    if full_tx.send(read).is_err() || failed {
                        return;
                    }
                    piece += lanes;
                }
            });
        }
        let mut hasher = Sha256::new();
        let mut done = 0u64;
        for piece in 0..pieces {
            let lane = (piece % lanes) as usize;
            let (buf, n) = match full.get(lane).map(Receiver::recv) {
                Some(Ok(Ok(x))) => x,
                Some(Ok(Err(e))) => return Err(ops_error(e)),
                _ => {
                    return Err(OpsError::new(
                        ErrorKind::Other,
                        "digest",
                        "a reader stopped before the end of the image",
                    ))
                }
            };
            hasher.update(&buf[..n]);
            done += n as u64;
            if let Some(tx) = free.get(lane) {
                let _ = tx.send(buf);
            }
            if !progress(done, size) {
                return Err(OpsError::new(ErrorKind::Cancelled, "digest", "cancelled"));
            }
        }
        Ok(hex::encode(hasher.finalize()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// An image in memory whose bytes are `offset % 251`, failing the read of one piece.
    struct MemoryImage {
        size: u64,
        fail_at: Option<u64>,
    }

    impl ReadAt for MemoryImage {
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, RbdError> {
            if self.fail_at == Some(offset) {
                return Err(RbdError::new(
                    "rbd_read",
                    format!("offset {offset}"),
                    libc::EIO,
                ));
            }
            let n = usize::try_from(self.size.saturating_sub(offset))
                .map_or(buf.len(), |left| left.min(buf.len()));
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = ((offset + i as u64) % 251) as u8;
            }
            Ok(n)
        }
    }

    const CHUNK: usize = 4096;
    /// Many more pieces than the readers buffer ahead, like a large image.
    const PIECES: u64 = 256;

    /// Run a digest over three readers on another thread; `None` when it has not returned
    /// within 10 s (it hangs), so a regression fails instead of hanging the test run.
    fn digest_within_timeout(
        fail_at: Option<u64>,
        cancel_after: Option<u64>,
    ) -> Option<OpsResult<String>> {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let size = PIECES * CHUNK as u64;
            let readers = (0..3)
                .map(|_| MemoryImage { size, fail_at })
                .collect::<Vec<_>>();
            let mut progress = |done: u64, _total: u64| cancel_after.is_none_or(|at| done < at);
            let _ = tx.send(pipelined_sha256(readers, size, CHUNK, &mut progress));
        });
        rx.recv_timeout(Duration::from_secs(10)).ok()
    }

    #[test]
    fn df_and_quota_replies_are_read_as_recorded_from_ceph_16() {
        let df = r#"{"stats":{"total_bytes":6442450944},"pools":[{"name":"volumes","id":1,"stats":{"stored":83894508,"objects":37,"kb_used":81929,"bytes_used":83894508,"percent_used":0.0138,"max_avail":5978329088}}]}"#;
        assert_eq!(
            parse_df(df),
            Ok(vec![DfPool {
                name: "volumes".into(),
                id: 1,
                stored: 83894508,
                max_avail: 5978329088,
            }])
        );
        let none = r#"{"pool_name":"cinder","pool_id":3,"quota_max_objects":0,"current_num_objects":29,"quota_max_bytes":0,"current_num_bytes":64225527}"#;
        assert_eq!(parse_quota_max_bytes(none), Ok(None));
        let some = none.replace(r#""quota_max_bytes":0"#, r#""quota_max_bytes":1073741824"#);
        assert_eq!(parse_quota_max_bytes(&some), Ok(Some(1 << 30)));
        assert!(parse_df("{}").is_err());
        let ls = r#"[{"pool_name":"volumes","pool_id":1,"size":1},{"pool_name":"ec","pool_id":7}]"#;
        assert_eq!(
            parse_pool_ids(ls),
            Ok(vec![("volumes".to_string(), 1), ("ec".to_string(), 7)])
        );
    }

    #[test]
    fn a_digest_hashes_every_piece_in_order() {
        let size = PIECES * CHUNK as u64 - 100; // a short last piece
        let mut expected = Sha256::new();
        expected.update((0..size).map(|o| (o % 251) as u8).collect::<Vec<_>>());
        let readers = (0..3)
            .map(|_| MemoryImage {
                size,
                fail_at: None,
            })
            .collect::<Vec<_>>();
        let got = pipelined_sha256(readers, size, CHUNK, &mut |_, _| true);
        assert_eq!(got, Ok(hex::encode(expected.finalize())));
    }

    #[test]
    fn a_digest_returns_the_read_error_from_the_middle_of_the_image() {
        let at = PIECES / 2 * CHUNK as u64;
        let result =
            digest_within_timeout(Some(at), None).expect("the digest hung on a read error");
        let err = result.expect_err("a failed read must fail the digest");
        assert_eq!(err.kind, ErrorKind::Other);
        assert!(err.message.contains(&format!("offset {at}")), "{err}");
    }

    #[test]
    fn a_digest_cancelled_in_the_middle_of_the_image_returns() {
        let result = digest_within_timeout(None, Some(PIECES / 3 * CHUNK as u64))
            .expect("the digest hung on a cancel");
        let err = result.expect_err("a cancelled digest must fail");
        assert_eq!(err.kind, ErrorKind::Cancelled);
    }
}
