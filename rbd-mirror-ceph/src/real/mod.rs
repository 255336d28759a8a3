//! The real [`CephOps`]: librbd and librados through the safe wrapper in [`librbd`].
//!
//! One connection per cluster, opened once; every call opens the image it needs (read-only
//! where it only reads, so no watch is registered and the image's own watcher list stays
//! honest) and closes it again.

use crate::trailing;
use librbd::{self as rbd, Cluster, Image, RbdError};
use rbd_mirror_core::features::{Features, MirrorImageMode};
use rbd_mirror_core::ops::{
    CephOps, Created, ErrorKind, ImageStat, ImageUser, JournalPeer, JournalPosition,
    JournalPositions, MirrorDaemon, MirrorDaemonConfig, MirrorImage, MirrorImageState, MirrorPeer,
    OpsError, OpsResult, PoolMirrorMode, PoolSpace, Progress, ReadPin, Ready, SnapshotInfo,
    SnapshotNamespace,
};
use rbd_mirror_core::spec::{ImageSpec, PoolSpec};
use rbd_mirror_core::status::{MirrorState, SiteStatus};

mod connection;
mod digest;
mod memory;
mod replies;

use digest::{pipelined_sha256, DIGEST_READERS};
use memory::PIECE;
use replies::parse_quota_max_bytes;

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

/// Bytes a digest or a trailing copy moves per read or write of `img`: [`PIECE`], or one
/// object where objects are smaller.
fn piece_of(img: &Image) -> OpsResult<usize> {
    let object = img.stat().ops()?.obj_size;
    Ok(usize::try_from(object.clamp(4096, PIECE as u64)).unwrap_or(PIECE))
}

/// Every snapshot of `img`, with namespaces (`rbd_snap_list2`).
fn snapshots_of(img: &Image) -> OpsResult<Vec<SnapshotInfo>> {
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
        let protected =
            namespace == SnapshotNamespace::User && img.snap_is_protected(&s.name).unwrap_or(false);
        out.push(SnapshotInfo {
            id: s.id,
            name: s.name,
            namespace,
            protected,
        });
    }
    Ok(out)
}

/// The mirroring state of `img` (`rbd_mirror_image_get_info` + `get_mode`).
fn mirror_image_of(img: &Image) -> OpsResult<MirrorImage> {
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

/// A connected cluster, implementing [`CephOps`].
pub struct RbdCeph {
    name: String,
    cluster: Cluster,
    /// The read-only handle of [`CephOps::pin_read_only`], if one is pinned.
    pinned: std::sync::Mutex<Option<connection::Pinned>>,
    /// See [`RbdCeph::image_opens`].
    image_opens: std::sync::atomic::AtomicU64,
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

impl RbdCeph {
    /// sha256 of the first `len` bytes (`None`: all) of `image` at user snapshot `snap`
    /// (`None`: the head), read in the engine's memory-bound pieces by [`DIGEST_READERS`]
    /// handles at once: the one reader behind `digest`, `digest_first` and `digest_snapshot`.
    fn digest_of(
        &self,
        image: &ImageSpec,
        snap: Option<&str>,
        len: Option<u64>,
        progress: Progress<'_>,
    ) -> OpsResult<String> {
        let img = self.open_ro_at(image, snap)?;
        let size = img.size().ops()?;
        let len = match len {
            None => size,
            Some(len) if len <= size => len,
            Some(len) => {
                return Err(OpsError::new(
                    ErrorKind::InvalidArgument,
                    "digest",
                    format!("{image} has {size} bytes, fewer than the {len} to digest"),
                ))
            }
        };
        let chunk = piece_of(&img)?;
        let mut readers = vec![img];
        for _ in 1..DIGEST_READERS {
            readers.push(self.open_ro_at(image, snap)?);
        }
        pipelined_sha256(readers, len, chunk, progress)
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

    fn pin_read_only(&self, image: &ImageSpec) -> ReadPin<'_> {
        self.pin(image)
    }

    fn image_exists(&self, image: &ImageSpec) -> OpsResult<bool> {
        // a missing pool is an error, not a missing image
        self.io(&image.pool)?;
        match self.with_read_only(image, |_| Ok(())) {
            Ok(()) => Ok(true),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn stat(&self, image: &ImageSpec) -> OpsResult<ImageStat> {
        self.with_read_only(image, |img| {
            let info = img.stat().ops()?;
            Ok(ImageStat {
                size: info.size,
                object_size: info.obj_size,
                features: Features::from_bits_retain(img.features().ops()?),
                id: img.id().ops()?,
            })
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
        self.with_read_only(image, snapshots_of)
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
        self.with_read_only(image, |img| {
            Ok(img.watchers().ops()?.into_iter().map(|w| w.addr).collect())
        })
    }

    fn image_users(&self, image: &ImageSpec) -> OpsResult<Vec<ImageUser>> {
        let watchers = self.with_read_only(image, |img| img.watchers().ops())?;
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

    fn mirror_daemon_config(&self, pool: &PoolSpec) -> OpsResult<Vec<MirrorDaemonConfig>> {
        let io = self.io(pool)?;
        let health = self.cluster.mirror_daemon_health(&io).ops()?;
        health
            .daemons
            .into_iter()
            .map(|d| {
                // the manager knows a service daemon by its service map key (its gid)
                let daemon = format!("rbd-mirror.{}", d.service_id);
                let cmd = serde_json::json!({
                    "prefix": "config show",
                    "who": daemon,
                    "format": "json",
                })
                .to_string();
                let reply = self.cluster.mgr_command(&cmd).ops()?;
                Ok(MirrorDaemonConfig {
                    daemon,
                    non_default: replies::parse_config_show(&reply)?,
                })
            })
            .collect()
    }

    fn mirror_daemons(&self, pool: &PoolSpec) -> OpsResult<Vec<MirrorDaemon>> {
        let io = self.io(pool)?;
        let health = self.cluster.mirror_daemon_health(&io).ops()?;
        Ok(health
            .daemons
            .into_iter()
            .map(|d| MirrorDaemon {
                id: d.client_id.clone(),
                instance: d.service_id.clone(),
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
        self.with_read_only(image, mirror_image_of)
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
        let id = self.open_ro_in(&io, &image.image, None)?.id().ops()?;
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
        // pieces of at most one object (see `PIECE`: rbd-mirror's per-object watermark
        // falls on piece boundaries)
        let chunk = usize::try_from(info.obj_size.clamp(4096, PIECE as u64)).unwrap_or(PIECE);
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
        let found = match self.open_ro_in(&io, &image.image, None) {
            Ok(img) => Some(img.id().ops()?),
            Err(e) if e.kind == ErrorKind::NotFound => None,
            Err(e) => return Err(e),
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
        self.with_read_only(image, |img| img.metadata_get(key).ops())
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
        self.digest_of(image, None, None, progress)
    }

    fn digest_first(
        &self,
        image: &ImageSpec,
        len: u64,
        progress: Progress<'_>,
    ) -> OpsResult<String> {
        self.digest_of(image, None, Some(len), progress)
    }

    fn grow(&self, image: &ImageSpec, size: u64) -> OpsResult<()> {
        self.open(image)?.grow(size).ops()
    }

    fn data_pool(&self, image: &ImageSpec) -> OpsResult<Option<String>> {
        let io = self.io(&image.pool)?;
        self.with_read_only(image, |img| self.data_pool_of(&io, img))
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
        let id = self.open_ro_in(&cio, &child.image, None)?.id().ops()?;
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
        let Some(p) = self.with_read_only(image, |img| img.parent().ops())? else {
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
        self.digest_of(image, Some(snap), None, progress)
    }
}
