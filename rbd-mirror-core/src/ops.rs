//! The small surface through which orchestration sees Ceph.
//!
//! Plans, waits and the executor only call [`CephOps`]; the real implementation over librbd
//! lives in the adapter crate `rbd-mirror-ceph` (`real::RbdCeph`) and is tested against real clusters, while unit tests of the
//! orchestration logic use an in-memory fake. Calls are blocking: the async executor runs them
//! on tokio's blocking threads.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::features::{Features, MirrorImageMode};
use crate::spec::{ImageSpec, PoolSpec};
use crate::status::SiteStatus;

/// What kind of failure a Ceph call had (from its errno).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// ENOENT
    NotFound,
    /// EEXIST
    Exists,
    /// EBUSY
    Busy,
    /// EPERM / EACCES
    PermissionDenied,
    /// EINVAL
    InvalidArgument,
    /// EROFS
    ReadOnly,
    /// EOPNOTSUPP
    NotSupported,
    /// ETIMEDOUT
    TimedOut,
    /// ECANCELED (a progress callback asked to stop)
    Cancelled,
    /// Anything else.
    Other,
}

/// A failed Ceph call.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{op} failed: {message}")]
pub struct OpsError {
    /// Kind, for decisions.
    pub kind: ErrorKind,
    /// The operation (C function or step).
    pub op: String,
    /// Human text (errno text plus context).
    pub message: String,
}

impl OpsError {
    /// Build an error.
    pub fn new(kind: ErrorKind, op: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind,
            op: op.into(),
            message: message.into(),
        }
    }
}

/// What a timed-out call means and what to do, for the error texts that carry an
/// [`OpsError`]: empty unless `e` is a timeout. A call times out when no OSD or monitor of
/// `clusters` answered within the client's op timeouts (`rados_osd_op_timeout`,
/// `rados_mon_op_timeout`; 30 s in rbd-relay), e.g. an OSD that is stopped, hung or cut off,
/// or a pool that is full (Ceph holds writes to a full pool until they time out).
pub fn timeout_hint(e: &OpsError, clusters: &str) -> String {
    if e.kind != ErrorKind::TimedOut {
        return String::new();
    }
    format!(
        "; {clusters} did not answer in time: an OSD or monitor of it is down, hung or unreachable, or a pool it writes to is full (check `ceph -s` there); once it answers, re-run to continue"
    )
}

/// Result of a [`CephOps`] call.
pub type OpsResult<T> = Result<T, OpsError>;

/// Size and features of an image (`rbd_stat` + `rbd_get_features` + `rbd_get_id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageStat {
    /// Size in bytes.
    pub size: u64,
    /// Object size in bytes.
    pub object_size: u64,
    /// Enabled features.
    pub features: Features,
    /// Image id.
    pub id: String,
}

/// Room in a pool for new data, from the monitors (`df` and `osd pool get-quota`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolSpace {
    /// Bytes that can still be written before the fullest OSD the pool maps to is full,
    /// after replication or erasure coding (`df`'s `max_avail`).
    pub max_avail: u64,
    /// Bytes stored in the pool (`df`'s `stored`), what its byte quota is measured against.
    pub stored: u64,
    /// The pool's byte quota (`quota_max_bytes`), `None` when it has none.
    pub quota_max_bytes: Option<u64>,
}

impl PoolSpace {
    /// Bytes that can be written: `max_avail`, lowered to what is left of the quota.
    pub fn available(&self) -> u64 {
        match self.quota_max_bytes {
            Some(quota) => self.max_avail.min(quota.saturating_sub(self.stored)),
            None => self.max_avail,
        }
    }
}

/// The name prefix of rbd-mirror's journal-mode sync points: user snapshots
/// `.rbd-mirror.<mirror uuid>.<uuid>` the daemon makes on the primary for an image sync
/// (and removes when the sync is done).
pub const SYNC_POINT_PREFIX: &str = ".rbd-mirror.";

/// Whether `name` has the exact shape of an rbd-mirror sync point: the prefix, then two
/// UUIDs in their text form (36 characters of lower-case hex and dashes) joined by a dot.
/// Only such a snapshot is ever taken for the daemon's; any other name is a user's.
pub fn is_sync_point_name(name: &str) -> bool {
    let uuid = |s: &str| {
        s.len() == 36
            && s.char_indices().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => c == '-',
                _ => c.is_ascii_digit() || ('a'..='f').contains(&c),
            })
    };
    name.strip_prefix(SYNC_POINT_PREFIX)
        .and_then(|rest| rest.split_once('.'))
        .is_some_and(|(mirror, point)| uuid(mirror) && uuid(point))
}

/// Namespace of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum SnapshotNamespace {
    /// A user snapshot.
    User,
    /// A snapshot in the trash or group namespace (listed, never touched).
    Other,
    /// A mirror snapshot (`rbd_snap_get_mirror_namespace`).
    Mirror {
        /// Primary (on the primary image) or non-primary (a replica's copy of one).
        primary: bool,
        /// Whether the snapshot's data is complete on this side.
        complete: bool,
        /// For non-primary snapshots: the id of the primary snapshot it copies.
        primary_snap_id: u64,
        /// For non-primary snapshots being synced: objects copied so far.
        last_copied_object_number: u64,
    },
}

/// One snapshot of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// Snapshot id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: SnapshotNamespace,
    /// Protected (only meaningful for user snapshots).
    pub protected: bool,
}

/// Mirroring mode of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMirrorMode {
    /// Mirroring off.
    Disabled,
    /// Images are mirrored one by one when enabled.
    Image,
    /// Every journaled image is mirrored.
    Pool,
}

/// Mirroring state of one image (`rbd_mirror_image_get_info` + `get_mode`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorImage {
    /// Enabled, disabled or disabling.
    pub state: MirrorImageState,
    /// Mode, when enabled.
    pub mode: Option<MirrorImageMode>,
    /// Whether this side is primary.
    pub primary: bool,
    /// Global id shared by the primary and its replicas.
    pub global_id: String,
}

/// `rbd_mirror_image_state_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MirrorImageState {
    /// Mirroring disabled.
    Disabled,
    /// Mirroring enabled.
    Enabled,
    /// Being disabled.
    Disabling,
}

/// A configured mirror peer of a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorPeer {
    /// Peer uuid.
    pub uuid: String,
    /// Peer site name.
    pub site_name: String,
    /// `rx-only`, `tx-only` or `rx-tx`.
    pub direction: String,
    /// The peer pool's mirror uuid: on a sending side it is set once the peer's rbd-mirror
    /// daemon has connected to this pool (empty before).
    #[serde(default)]
    pub mirror_uuid: String,
    /// The cephx client this side's rbd-mirror uses to reach the peer
    /// (`client.rbd-mirror-peer`): on a receiving side, the name its daemon's watch on the
    /// primary image carries.
    #[serde(default)]
    pub client_name: String,
}

/// A client with the image open (a watcher), with its cephx name when the monitors tell it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageUser {
    /// Client address (`127.0.0.1:0/3567091449`).
    pub addr: String,
    /// The client's global id (`client.4354` has 4354).
    pub client_id: i64,
    /// Its cephx name (`client.admin`), from the monitors' session lists; `None` when they
    /// could not be read (no permission) or no monitor lists the session.
    pub entity: Option<String>,
}

impl ImageUser {
    /// `client.4354 (client.admin) at 127.0.0.1:0/3567091449`.
    pub fn describe(&self) -> String {
        match &self.entity {
            Some(e) => format!("client.{} ({e}) at {}", self.client_id, self.addr),
            None => format!("client.{} at {}", self.client_id, self.addr),
        }
    }
}

/// One rbd-mirror daemon from the cluster's service map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorDaemon {
    /// Daemon id (e.g. `rbd-mirror.b` or `b`).
    pub id: String,
    /// This daemon process's key in the service map (its gid), when known. Unlike `id`, it
    /// is unique per process: a daemon restarted after a kill has the same `id` as the
    /// killed one, which the map keeps listing for a minute.
    #[serde(default)]
    pub instance: String,
    /// Whether the daemon reports healthy (no callouts, recently seen).
    pub healthy: bool,
    /// Why not, when unhealthy.
    pub detail: String,
    /// When the daemon last sent a beacon to the manager (`service status`'s `last_beacon`,
    /// as the manager writes it), when known. It stops changing when the daemon is killed
    /// or hangs, while the service map keeps listing the daemon for a minute.
    #[serde(default)]
    pub last_beacon: Option<String>,
}

/// The running configuration of one rbd-mirror daemon, as it reports it to the manager
/// (`ceph config show rbd-mirror.<gid>`): only the options it runs with that are not at
/// Ceph's defaults (whatever set them: its conf file, the mon's config database, an admin
/// socket `config set`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorDaemonConfig {
    /// The daemon, as the manager names it (`rbd-mirror.4129`).
    pub daemon: String,
    /// Option name -> value, for the options not at their defaults.
    pub non_default: std::collections::BTreeMap<String, String>,
}

/// Journal commit positions of the primary's journal: the master and each mirror peer client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalPositions {
    /// The master (the image itself) commit position, `None` before anything was written.
    pub master: Option<JournalPosition>,
    /// Registered mirror peer clients.
    pub peers: Vec<JournalPeer>,
}

/// A mirror peer client registered in a primary image's journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalPeer {
    /// Client id (the peer's mirror uuid).
    pub id: String,
    /// Its commit position, `None` before it committed anything.
    pub position: Option<JournalPosition>,
    /// Whether the peer is still in its initial image sync (`None` when unknown).
    pub syncing: Option<bool>,
    /// Id of the replica image the peer syncs into, from its client data (`None` when
    /// unknown): a replica with another id was recreated and is not the one this position
    /// describes.
    #[serde(default)]
    pub replica_image_id: Option<String>,
}

/// A position in a journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalPosition {
    /// Object number.
    pub object_number: u64,
    /// Tag tid.
    pub tag_tid: u64,
    /// Entry tid.
    pub entry_tid: u64,
}

/// Progress callback of long calls: `(done, total) -> keep going?`.
pub type Progress<'a> = &'a mut (dyn FnMut(u64, u64) -> bool + Send);

/// How much of a trailing copy's source is final, polled by [`CephOps::copy_trailing`]:
/// `None` while the source does not exist yet, otherwise the count of leading bytes that
/// will not change any more (the image size or more once all of it is final).
pub type Ready<'a> = &'a mut (dyn FnMut() -> OpsResult<Option<u64>> + Send);

/// Told the id of the image [`CephOps::copy_trailing`] has just created, before anything is
/// written into it; an error stops the copy (the new image is then removed by that id).
pub type Created<'a> = &'a mut (dyn FnMut(&str) -> OpsResult<()> + Send);

/// A read-only handle of one image kept open by [`CephOps::pin_read_only`] until this guard
/// drops. A guard may hold nothing (an implementation without pinning, or an image that could
/// not be opened): the reads then open the image as they always do.
pub struct ReadPin<'a> {
    release: Option<Box<dyn FnOnce() + Send + 'a>>,
}

impl<'a> ReadPin<'a> {
    /// A guard that holds nothing.
    pub fn none() -> Self {
        Self { release: None }
    }

    /// A guard that runs `release` (closes the pinned handle) when it drops.
    pub fn releasing(release: impl FnOnce() + Send + 'a) -> Self {
        Self {
            release: Some(Box::new(release)),
        }
    }

    /// Whether a handle is held.
    pub fn holds(&self) -> bool {
        self.release.is_some()
    }
}

impl Drop for ReadPin<'_> {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

impl std::fmt::Debug for ReadPin<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadPin")
            .field("holds", &self.holds())
            .finish()
    }
}

/// The Ceph calls orchestration needs, on one cluster.
pub trait CephOps: Send + Sync {
    /// Keep one read-only handle of `image` open until the returned guard drops; meanwhile
    /// the reads of that image's head that need no fresh view of its header ([`stat`],
    /// [`snapshots`], [`mirror_image`], [`parent`], [`watchers`], [`image_users`],
    /// [`data_pool`], [`metadata_get`], [`image_exists`]) go through it instead of opening and
    /// closing the image each time. For a burst of reads of an image nothing else changes
    /// meanwhile (preflight). The handle shows the header as it was when it was opened.
    ///
    /// Why: opening a clone opens its parent too, and closing it closes both; librbd 16.2.15
    /// was seen to abort the whole process (an uncaught exception in a librados thread)
    /// during such a close, so fewer closes mean fewer chances. Never fails: when the image
    /// cannot be opened the guard holds nothing and the reads report why. The default pins
    /// nothing.
    ///
    /// [`stat`]: CephOps::stat
    /// [`snapshots`]: CephOps::snapshots
    /// [`mirror_image`]: CephOps::mirror_image
    /// [`parent`]: CephOps::parent
    /// [`watchers`]: CephOps::watchers
    /// [`image_users`]: CephOps::image_users
    /// [`data_pool`]: CephOps::data_pool
    /// [`metadata_get`]: CephOps::metadata_get
    /// [`image_exists`]: CephOps::image_exists
    fn pin_read_only(&self, _image: &ImageSpec) -> ReadPin<'_> {
        ReadPin::none()
    }
    /// Cluster name for messages.
    fn name(&self) -> &str;
    /// Cluster fsid.
    fn fsid(&self) -> OpsResult<String>;
    /// Does the pool exist?
    fn pool_exists(&self, pool: &PoolSpec) -> OpsResult<bool>;
    /// Does the image exist? (`Ok(false)` only for ENOENT)
    fn image_exists(&self, image: &ImageSpec) -> OpsResult<bool>;
    /// Size, object size, features, id.
    fn stat(&self, image: &ImageSpec) -> OpsResult<ImageStat>;
    /// Enable or disable one or more features (`rbd_update_features`).
    fn update_features(&self, image: &ImageSpec, features: Features, enable: bool)
        -> OpsResult<()>;
    /// All snapshots, with namespaces (`rbd_snap_list2`).
    fn snapshots(&self, image: &ImageSpec) -> OpsResult<Vec<SnapshotInfo>>;
    /// Create a user snapshot.
    fn create_snapshot(&self, image: &ImageSpec, name: &str) -> OpsResult<()>;
    /// Protect a user snapshot (no-op when already protected).
    fn protect_snapshot(&self, image: &ImageSpec, name: &str) -> OpsResult<()>;
    /// Remove a snapshot by id (any namespace).
    fn remove_snapshot_by_id(&self, image: &ImageSpec, id: u64) -> OpsResult<()>;
    /// Clients watching the image (addresses).
    fn watchers(&self, image: &ImageSpec) -> OpsResult<Vec<String>>;
    /// The clients with the image open (its watchers), each with its cephx name when the
    /// monitors' session lists can be read: tells rbd-mirror's own watch on a primary image
    /// (snapshot mode) from an instance's.
    fn image_users(&self, image: &ImageSpec) -> OpsResult<Vec<ImageUser>>;
    /// Pool mirror mode.
    fn pool_mirror_mode(&self, pool: &PoolSpec) -> OpsResult<PoolMirrorMode>;
    /// Set the pool mirror mode.
    fn set_pool_mirror_mode(&self, pool: &PoolSpec, mode: PoolMirrorMode) -> OpsResult<()>;
    /// Mirror peers of the pool.
    fn mirror_peers(&self, pool: &PoolSpec) -> OpsResult<Vec<MirrorPeer>>;
    /// rbd-mirror daemons in this cluster's service map and their health for `pool`.
    fn mirror_daemons(&self, pool: &PoolSpec) -> OpsResult<Vec<MirrorDaemon>>;
    /// The running configuration of every rbd-mirror daemon of this cluster (its options
    /// not at Ceph's defaults), as the daemons report it to the manager. Read-only.
    fn mirror_daemon_config(&self, pool: &PoolSpec) -> OpsResult<Vec<MirrorDaemonConfig>>;
    /// Mirroring state of the image.
    fn mirror_image(&self, image: &ImageSpec) -> OpsResult<MirrorImage>;
    /// Enable mirroring of the image in a mode.
    fn enable_mirroring(&self, image: &ImageSpec, mode: MirrorImageMode) -> OpsResult<()>;
    /// Disable mirroring of the image (on a primary this deletes the peers' replicas).
    fn disable_mirroring(&self, image: &ImageSpec, force: bool) -> OpsResult<()>;
    /// Create a mirror snapshot; returns its id.
    fn create_mirror_snapshot(&self, image: &ImageSpec) -> OpsResult<u64>;
    /// The status the local rbd-mirror daemon reports for the image (`None` when none yet).
    fn mirror_status(&self, image: &ImageSpec) -> OpsResult<Option<SiteStatus>>;
    /// Journal commit positions of a journaled image.
    fn journal_positions(&self, image: &ImageSpec) -> OpsResult<JournalPositions>;
    /// Copy an image within this cluster (`rbd_copy_with_progress`), creating `dst`.
    fn copy(&self, src: &ImageSpec, dst: &ImageSpec, progress: Progress<'_>) -> OpsResult<()>;
    /// Copy `src` into a new image `dst` on this cluster (same size and object size; the
    /// features of `src` without journaling and non-primary), trailing a writer of `src`:
    /// only the leading bytes `ready()` reports final are copied, so the copy can run
    /// while rbd-mirror is still syncing `src`. `ready` is polled about every 100 ms until
    /// the whole image is copied. Every piece written is flushed and read back from the
    /// cluster; the result is the SHA-256 (hex) of the copy as read back, holes as zeros.
    /// `progress(done, total)` counts bytes written and read back (`(0, 0)` while the source
    /// does not exist yet); `false` stops the copy with [`ErrorKind::Cancelled`].
    /// `created(id)` is called with the new image's id (`rbd_get_id`) right after it is
    /// created, so the caller can record which image is its copy.
    fn copy_trailing(
        &self,
        src: &ImageSpec,
        dst: &ImageSpec,
        ready: Ready<'_>,
        progress: Progress<'_>,
        created: Created<'_>,
    ) -> OpsResult<String>;
    /// Remove an image.
    fn remove_image(&self, image: &ImageSpec) -> OpsResult<()>;
    /// Remove the image under `image`'s name only if its id is `id`, through a path that
    /// cannot remove another image (see the real implementation). An image with another id
    /// fails with [`ErrorKind::Exists`] and is left alone; no image under the name (nor in
    /// the trash with this id) is `Ok`.
    fn remove_image_with_id(&self, image: &ImageSpec, id: &str) -> OpsResult<()>;
    /// Value of the image's metadata `key` (`rbd_metadata_get`), `None` when not set.
    fn metadata_get(&self, image: &ImageSpec, key: &str) -> OpsResult<Option<String>>;
    /// Set the image's metadata `key` (`rbd_metadata_set`).
    fn metadata_set(&self, image: &ImageSpec, key: &str, value: &str) -> OpsResult<()>;
    /// Remove the image's metadata `key` (`rbd_metadata_remove`); `Ok` when it is not set.
    fn metadata_remove(&self, image: &ImageSpec, key: &str) -> OpsResult<()>;
    /// SHA-256 (hex) of the image's whole content, holes read as zeros.
    fn digest(&self, image: &ImageSpec, progress: Progress<'_>) -> OpsResult<String>;
    /// SHA-256 (hex) of the image's first `len` bytes: what [`CephOps::digest`] gave before
    /// the image was grown from `len` bytes. [`ErrorKind::InvalidArgument`] when the image
    /// is smaller than `len`.
    fn digest_first(
        &self,
        image: &ImageSpec,
        len: u64,
        progress: Progress<'_>,
    ) -> OpsResult<String>;
    /// Grow the image to `size` bytes (`rbd_resize`; the new bytes read as zeros, every
    /// existing byte stays). [`ErrorKind::InvalidArgument`] for a size below the current
    /// one: it never shrinks. `Ok` when it already has that size.
    fn grow(&self, image: &ImageSpec, size: u64) -> OpsResult<()>;
    /// The pool holding the image's data when it is not the image's own pool (created
    /// with `--data-pool`, e.g. an erasure-coded pool), by name; `None` otherwise.
    fn data_pool(&self, image: &ImageSpec) -> OpsResult<Option<String>>;
    /// Room left in `pool` (`NotFound` when there is no such pool).
    fn pool_space(&self, pool: &str) -> OpsResult<PoolSpace>;
    /// Demote a mirrored primary image to non-primary (`rbd_mirror_image_demote`): it
    /// becomes read-only (writes fail with [`ErrorKind::ReadOnly`]) and the demotion is
    /// replicated to the peer (a demote event in the journal, a demoted mirror snapshot in
    /// snapshot mode). Fails with [`ErrorKind::Busy`] while another client holds the
    /// exclusive lock and will not hand it over, [`ErrorKind::InvalidArgument`] when the
    /// image is not a mirrored primary.
    fn demote(&self, image: &ImageSpec) -> OpsResult<()>;
    /// Promote a non-primary image to primary (`rbd_mirror_image_promote`). Without
    /// `force`, librbd refuses with [`ErrorKind::Busy`] while the peer is still primary or
    /// the local replica has not yet replayed the peer's demotion: poll it. A demoted
    /// primary (nothing replayed it elsewhere) is promoted without `force`. `force`
    /// promotes at once, whatever the peer: data the replica had not replayed is lost and
    /// a still-primary peer makes a split brain. [`ErrorKind::InvalidArgument`] when the
    /// image is already primary or not mirrored.
    fn promote(&self, image: &ImageSpec, force: bool) -> OpsResult<()>;
    /// Create `child` as a format-2 clone of `parent` at its user snapshot `snap`
    /// (`rbd_clone3`, same cluster, any pool; the snapshot need not be protected), with
    /// `features` (they must include layering; librbd adds its internal `operations`
    /// feature to a format-2 clone). The clone shares the parent's data
    /// until [`CephOps::flatten`]. `created(id)` is told the clone's image id right after
    /// it exists, as [`CephOps::copy_trailing`] does; when it fails the clone is removed
    /// by that id and its error returned. [`ErrorKind::Exists`] when `child` exists,
    /// [`ErrorKind::NotFound`] when the parent or its snapshot does not.
    fn clone_image(
        &self,
        parent: &ImageSpec,
        snap: &str,
        child: &ImageSpec,
        features: Features,
        created: Created<'_>,
    ) -> OpsResult<()>;
    /// Copy into a clone every object it still shares with its parent and detach it
    /// (`rbd_flatten_with_progress`); afterwards [`CephOps::parent`] is `None`.
    /// `progress(done, total)` counts objects; `false` cancels: the call fails with
    /// [`ErrorKind::Cancelled`] and the image stays a clone (flattening it later resumes).
    /// [`ErrorKind::InvalidArgument`] when the image is not a clone.
    fn flatten(&self, image: &ImageSpec, progress: Progress<'_>) -> OpsResult<()>;
    /// Rebuild the image's object map from the objects that exist
    /// (`rbd_rebuild_object_map`): after object-map is enabled again the map is flagged
    /// invalid until this runs.
    fn rebuild_object_map(&self, image: &ImageSpec, progress: Progress<'_>) -> OpsResult<()>;
    /// The parent image and snapshot name of a clone (`rbd_get_parent`), `None` when the
    /// image is not a clone (or was flattened).
    fn parent(&self, image: &ImageSpec) -> OpsResult<Option<(ImageSpec, String)>>;
    /// Unprotect a user snapshot (no-op when not protected); [`ErrorKind::Busy`] while
    /// clones of it exist.
    fn unprotect_snapshot(&self, image: &ImageSpec, name: &str) -> OpsResult<()>;
    /// Remove a user snapshot by name (`Ok` when there is none by that name);
    /// [`ErrorKind::Busy`] when it is protected. A snapshot with format-2 clones is not
    /// refused: librbd moves it to the trash namespace (listed as
    /// [`SnapshotNamespace::Other`]), where it feeds its clones until the last one is
    /// flattened or removed, and then removes it.
    fn remove_snapshot(&self, image: &ImageSpec, name: &str) -> OpsResult<()>;
    /// SHA-256 (hex) of the image's content at user snapshot `snap` (read-only at the
    /// snapshot, so a writer of the head cannot change it), holes read as zeros; progress
    /// and cancel as in [`CephOps::digest`].
    fn digest_snapshot(
        &self,
        image: &ImageSpec,
        snap: &str,
        progress: Progress<'_>,
    ) -> OpsResult<String>;
}

#[cfg(test)]
mod tests {
    use super::is_sync_point_name;

    #[test]
    fn only_the_daemons_exact_sync_point_names_are_sync_points() {
        // as rbd-mirror 16.2 named them on the test environment
        assert!(is_sync_point_name(
            ".rbd-mirror.1f81caeb-923d-4948-86c2-f4f277ac4bd3.8fa90f01-045e-49ff-a70f-fc228450e891"
        ));
        for users in [
            ".rbd-mirror.",
            ".rbd-mirror.a.b",
            ".rbd-mirror.users-own.made-meanwhile",
            // upper case, a missing or extra character, a dash out of place, no dot
            ".rbd-mirror.1F81CAEB-923D-4948-86C2-F4F277AC4BD3.8fa90f01-045e-49ff-a70f-fc228450e891",
            ".rbd-mirror.1f81caeb-923d-4948-86c2-f4f277ac4bd.8fa90f01-045e-49ff-a70f-fc228450e891",
            ".rbd-mirror.1f81caeb-923d-4948-86c2-f4f277ac4bd3.8fa90f01-045e-49ff-a70f-fc228450e8911",
            ".rbd-mirror.1f81caeb9-23d-4948-86c2-f4f277ac4bd3.8fa90f01-045e-49ff-a70f-fc228450e891",
            ".rbd-mirror.1f81caeb-923d-4948-86c2-f4f277ac4bd3-8fa90f01-045e-49ff-a70f-fc228450e891",
            "rbd-mirror.1f81caeb-923d-4948-86c2-f4f277ac4bd3.8fa90f01-045e-49ff-a70f-fc228450e891",
            "plain",
        ] {
            assert!(!is_sync_point_name(users), "{users}");
        }
    }
}
