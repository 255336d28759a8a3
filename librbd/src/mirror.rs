//! rbd-mirror control: pool mirror mode, peers and bootstrap tokens, image mirroring
//! (enable/disable/promote/demote/resync, mirror snapshots), and mirror status.
//!
//! Typed counterparts of librbd's mirror enums (named like go-ceph's) so callers never
//! handle raw C integers; every method names the C function it wraps.

use std::ptr;

use libc::{c_int, size_t};
use librbd_sys as sys;

use super::cluster::IoCtx;
use super::error::{check, cstring, from_c, grow_string_with_len, RbdError, Result};
use super::image::Image;

/// Pool mirror mode (`rbd_mirror_mode_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorMode {
    /// `RBD_MIRROR_MODE_DISABLED`.
    Disabled,
    /// `RBD_MIRROR_MODE_IMAGE`: per-image opt-in.
    Image,
    /// `RBD_MIRROR_MODE_POOL`: every journaled image.
    Pool,
}

impl MirrorMode {
    fn to_raw(self) -> sys::rbd_mirror_mode_t {
        match self {
            Self::Disabled => sys::RBD_MIRROR_MODE_DISABLED,
            Self::Image => sys::RBD_MIRROR_MODE_IMAGE,
            Self::Pool => sys::RBD_MIRROR_MODE_POOL,
        }
    }
    fn from_raw(v: c_int, ctx: &str) -> Result<Self> {
        match v {
            sys::RBD_MIRROR_MODE_DISABLED => Ok(Self::Disabled),
            sys::RBD_MIRROR_MODE_IMAGE => Ok(Self::Image),
            sys::RBD_MIRROR_MODE_POOL => Ok(Self::Pool),
            other => Err(RbdError::malformed(
                "rbd_mirror_mode_get",
                ctx,
                format!("unknown mode {other}"),
            )),
        }
    }
}

/// Direction of a mirror peer (`rbd_mirror_peer_direction_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerDirection {
    /// `RBD_MIRROR_PEER_DIRECTION_RX`: this cluster receives.
    RxOnly,
    /// `RBD_MIRROR_PEER_DIRECTION_TX`: this cluster sends.
    TxOnly,
    /// `RBD_MIRROR_PEER_DIRECTION_RX_TX`.
    RxTx,
    /// A value this wrapper does not know.
    Unknown(i32),
}

impl PeerDirection {
    fn to_raw(self) -> sys::rbd_mirror_peer_direction_t {
        match self {
            Self::RxOnly => sys::RBD_MIRROR_PEER_DIRECTION_RX,
            Self::TxOnly => sys::RBD_MIRROR_PEER_DIRECTION_TX,
            Self::RxTx => sys::RBD_MIRROR_PEER_DIRECTION_RX_TX,
            Self::Unknown(v) => v,
        }
    }
    fn from_raw(v: c_int) -> Self {
        match v {
            sys::RBD_MIRROR_PEER_DIRECTION_RX => Self::RxOnly,
            sys::RBD_MIRROR_PEER_DIRECTION_TX => Self::TxOnly,
            sys::RBD_MIRROR_PEER_DIRECTION_RX_TX => Self::RxTx,
            other => Self::Unknown(other),
        }
    }
}

/// Image mirroring mode (`rbd_mirror_image_mode_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorImageMode {
    /// `RBD_MIRROR_IMAGE_MODE_JOURNAL`: needs exclusive-lock + journaling.
    Journal,
    /// `RBD_MIRROR_IMAGE_MODE_SNAPSHOT`: replicates mirror snapshots.
    Snapshot,
}

impl MirrorImageMode {
    fn to_raw(self) -> sys::rbd_mirror_image_mode_t {
        match self {
            Self::Journal => sys::RBD_MIRROR_IMAGE_MODE_JOURNAL,
            Self::Snapshot => sys::RBD_MIRROR_IMAGE_MODE_SNAPSHOT,
        }
    }
}

/// Mirroring state of an image (`rbd_mirror_image_state_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorImageState {
    /// `RBD_MIRROR_IMAGE_DISABLING`.
    Disabling,
    /// `RBD_MIRROR_IMAGE_ENABLED`.
    Enabled,
    /// `RBD_MIRROR_IMAGE_DISABLED`.
    Disabled,
    /// A value this wrapper does not know.
    Unknown(i32),
}

impl MirrorImageState {
    fn from_raw(v: c_int) -> Self {
        match v {
            sys::RBD_MIRROR_IMAGE_DISABLING => Self::Disabling,
            sys::RBD_MIRROR_IMAGE_ENABLED => Self::Enabled,
            sys::RBD_MIRROR_IMAGE_DISABLED => Self::Disabled,
            other => Self::Unknown(other),
        }
    }
}

/// State reported by rbd-mirror for one site (`rbd_mirror_image_status_state_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MirrorStatusState {
    /// `MIRROR_IMAGE_STATUS_STATE_UNKNOWN`.
    Unknown,
    /// `MIRROR_IMAGE_STATUS_STATE_ERROR`.
    Error,
    /// `MIRROR_IMAGE_STATUS_STATE_SYNCING`.
    Syncing,
    /// `MIRROR_IMAGE_STATUS_STATE_STARTING_REPLAY`.
    StartingReplay,
    /// `MIRROR_IMAGE_STATUS_STATE_REPLAYING`.
    Replaying,
    /// `MIRROR_IMAGE_STATUS_STATE_STOPPING_REPLAY`.
    StoppingReplay,
    /// `MIRROR_IMAGE_STATUS_STATE_STOPPED` (a primary image reports this).
    Stopped,
    /// A value this wrapper does not know.
    Other(i32),
}

impl MirrorStatusState {
    fn from_raw(v: c_int) -> Self {
        match v {
            sys::MIRROR_IMAGE_STATUS_STATE_UNKNOWN => Self::Unknown,
            sys::MIRROR_IMAGE_STATUS_STATE_ERROR => Self::Error,
            sys::MIRROR_IMAGE_STATUS_STATE_SYNCING => Self::Syncing,
            sys::MIRROR_IMAGE_STATUS_STATE_STARTING_REPLAY => Self::StartingReplay,
            sys::MIRROR_IMAGE_STATUS_STATE_REPLAYING => Self::Replaying,
            sys::MIRROR_IMAGE_STATUS_STATE_STOPPING_REPLAY => Self::StoppingReplay,
            sys::MIRROR_IMAGE_STATUS_STATE_STOPPED => Self::Stopped,
            other => Self::Other(other),
        }
    }
}

/// State of a mirror snapshot (`rbd_snap_mirror_state_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapMirrorState {
    /// Taken on the primary.
    Primary,
    /// Taken on the primary when it was demoted.
    PrimaryDemoted,
    /// Copied to a non-primary replica.
    NonPrimary,
    /// Non-primary copy of a demotion snapshot.
    NonPrimaryDemoted,
    /// A value this wrapper does not know.
    Unknown(i32),
}

impl SnapMirrorState {
    fn from_raw(v: c_int) -> Self {
        match v {
            sys::RBD_SNAP_MIRROR_STATE_PRIMARY => Self::Primary,
            sys::RBD_SNAP_MIRROR_STATE_PRIMARY_DEMOTED => Self::PrimaryDemoted,
            sys::RBD_SNAP_MIRROR_STATE_NON_PRIMARY => Self::NonPrimary,
            sys::RBD_SNAP_MIRROR_STATE_NON_PRIMARY_DEMOTED => Self::NonPrimaryDemoted,
            other => Self::Unknown(other),
        }
    }

    /// True for `Primary`/`PrimaryDemoted`.
    pub fn is_primary(self) -> bool {
        matches!(self, Self::Primary | Self::PrimaryDemoted)
    }
}

/// The mirror namespace of a snapshot (`rbd_snap_get_mirror_namespace`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorSnapshotNamespace {
    /// Primary/non-primary, demoted or not.
    pub state: SnapMirrorState,
    /// Peers the snapshot is (still) meant for.
    pub mirror_peer_uuids: Vec<String>,
    /// On a non-primary: the copy of this snapshot is complete.
    pub complete: bool,
    /// On a non-primary: mirror uuid of the primary it came from.
    pub primary_mirror_uuid: String,
    /// On a non-primary: the id of the matching snapshot on the primary.
    pub primary_snap_id: u64,
    /// On a non-primary: copy progress (objects).
    pub last_copied_object_number: u64,
}

/// Mirroring info of an image (`rbd_mirror_image_get_info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorImageInfo {
    /// Global image id shared by primary and replicas (empty when disabled).
    pub global_id: String,
    /// Enabled/disabling/disabled.
    pub state: MirrorImageState,
    /// Whether this copy is primary.
    pub primary: bool,
}

/// Status of an image at one site (`rbd_mirror_image_site_status_t`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorSiteStatus {
    /// Mirror uuid of the site ("" = the local site).
    pub mirror_uuid: String,
    /// rbd-mirror's state.
    pub state: MirrorStatusState,
    /// rbd-mirror's description (JSON with replay progress for replaying images).
    pub description: String,
    /// Unix time of the last update.
    pub last_update: i64,
    /// Whether the reporting daemon is up.
    pub up: bool,
}

/// Global mirror status of an image (`rbd_mirror_image_get_global_status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorImageGlobalStatus {
    /// Image name.
    pub name: String,
    /// Mirroring info.
    pub info: MirrorImageInfo,
    /// One entry per site that reported.
    pub site_statuses: Vec<MirrorSiteStatus>,
}

impl MirrorImageGlobalStatus {
    /// The local site's status (mirror uuid "").
    pub fn local(&self) -> Option<&MirrorSiteStatus> {
        self.site_statuses.iter().find(|s| s.mirror_uuid.is_empty())
    }
}

/// A mirror peer site (`rbd_mirror_peer_site_t`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorPeerSite {
    /// Peer uuid (local id of the peer record).
    pub uuid: String,
    /// Direction.
    pub direction: PeerDirection,
    /// Peer's site name.
    pub site_name: String,
    /// Peer's pool mirror uuid (tx peers: filled once the peer's daemon registered).
    pub mirror_uuid: String,
    /// cephx client used to reach the peer.
    pub client_name: String,
    /// Unix time the peer was last seen.
    pub last_seen: i64,
}

/// # Safety
/// `s` must be a global status librbd filled in, with valid strings and array.
unsafe fn global_status_from_raw(
    s: &sys::rbd_mirror_image_global_status_t,
) -> MirrorImageGlobalStatus {
    let n = s.site_statuses_count as usize;
    let sites = if s.site_statuses.is_null() || n == 0 {
        &[][..]
    } else {
        // SAFETY: librbd allocated site_statuses_count entries.
        unsafe { std::slice::from_raw_parts(s.site_statuses, n) }
    };
    MirrorImageGlobalStatus {
        // SAFETY: valid strings per the function contract.
        name: unsafe { from_c(s.name) },
        info: MirrorImageInfo {
            // SAFETY: as above.
            global_id: unsafe { from_c(s.info.global_id) },
            state: MirrorImageState::from_raw(s.info.state),
            primary: s.info.primary,
        },
        site_statuses: sites
            .iter()
            .map(|x| MirrorSiteStatus {
                // SAFETY: as above.
                mirror_uuid: unsafe { from_c(x.mirror_uuid) },
                state: MirrorStatusState::from_raw(x.state),
                // SAFETY: as above.
                description: unsafe { from_c(x.description) },
                last_update: x.last_update,
                up: x.up,
            })
            .collect(),
    }
}

fn zeroed_global_status() -> sys::rbd_mirror_image_global_status_t {
    sys::rbd_mirror_image_global_status_t {
        name: ptr::null_mut(),
        info: sys::rbd_mirror_image_info_t {
            global_id: ptr::null_mut(),
            state: 0,
            primary: false,
        },
        site_statuses_count: 0,
        site_statuses: ptr::null_mut(),
    }
}

impl IoCtx {
    /// Pool mirror mode (`rbd_mirror_mode_get`).
    pub fn mirror_mode(&self) -> Result<MirrorMode> {
        let mut v: sys::rbd_mirror_mode_t = 0;
        // SAFETY: valid ioctx and out-pointer.
        let ret = unsafe { sys::rbd_mirror_mode_get(self.raw, &mut v) };
        check(ret, "rbd_mirror_mode_get", || self.ctx())?;
        MirrorMode::from_raw(v, &self.ctx())
    }

    /// Sets the pool mirror mode (`rbd_mirror_mode_set`).
    pub fn set_mirror_mode(&self, mode: MirrorMode) -> Result<()> {
        // SAFETY: valid ioctx.
        let ret = unsafe { sys::rbd_mirror_mode_set(self.raw, mode.to_raw()) };
        check(ret, "rbd_mirror_mode_set", || {
            format!("{}, mode {mode:?}", self.ctx())
        })?;
        Ok(())
    }

    /// The pool's mirror uuid (`rbd_mirror_uuid_get`). An rbd-mirror daemon running on
    /// this cluster registers under this id as a client in the journals of the peer's
    /// primary images: see [`JournalStatus::mirror_peer`](super::JournalStatus::mirror_peer).
    pub fn mirror_uuid(&self) -> Result<String> {
        grow_string_with_len(
            "rbd_mirror_uuid_get",
            || self.ctx(),
            |buf, len| {
                // SAFETY: buf writable for *len bytes.
                unsafe { sys::rbd_mirror_uuid_get(self.raw, buf, len) }
            },
        )
    }

    /// Creates a peer bootstrap token (`rbd_mirror_peer_bootstrap_create`). It contains a
    /// cephx key: never log or persist it.
    pub fn mirror_peer_bootstrap_create(&self) -> Result<String> {
        grow_string_with_len(
            "rbd_mirror_peer_bootstrap_create",
            || self.ctx(),
            |buf, len| {
                // SAFETY: buf writable for *len bytes.
                unsafe { sys::rbd_mirror_peer_bootstrap_create(self.raw, buf, len) }
            },
        )
    }

    /// Imports a peer bootstrap token (`rbd_mirror_peer_bootstrap_import`).
    pub fn mirror_peer_bootstrap_import(
        &self,
        direction: PeerDirection,
        token: &str,
    ) -> Result<()> {
        let ctx = || self.ctx();
        let c = cstring(token, "rbd_mirror_peer_bootstrap_import", ctx)?;
        // SAFETY: valid ioctx and C string.
        let ret = unsafe {
            sys::rbd_mirror_peer_bootstrap_import(self.raw, direction.to_raw(), c.as_ptr())
        };
        check(ret, "rbd_mirror_peer_bootstrap_import", ctx)?;
        Ok(())
    }

    /// Mirror peer sites of the pool (`rbd_mirror_peer_site_list`).
    pub fn mirror_peer_sites(&self) -> Result<Vec<MirrorPeerSite>> {
        let mut cap: c_int = 8;
        loop {
            let empty = sys::rbd_mirror_peer_site_t {
                uuid: ptr::null_mut(),
                direction: 0,
                site_name: ptr::null_mut(),
                mirror_uuid: ptr::null_mut(),
                client_name: ptr::null_mut(),
                last_seen: 0,
            };
            let mut peers = vec![empty; usize::try_from(cap).unwrap_or(8)];
            let mut n = cap;
            // SAFETY: peers has room for n entries.
            let ret =
                unsafe { sys::rbd_mirror_peer_site_list(self.raw, peers.as_mut_ptr(), &mut n) };
            if ret == -libc::ERANGE {
                cap = n.max(cap * 2);
                continue;
            }
            check(ret, "rbd_mirror_peer_site_list", || self.ctx())?;
            let n = n.clamp(0, cap);
            let out = peers[..usize::try_from(n).unwrap_or(0)]
                .iter()
                .map(|p| MirrorPeerSite {
                    // SAFETY: librbd filled n entries with valid strings.
                    uuid: unsafe { from_c(p.uuid) },
                    direction: PeerDirection::from_raw(p.direction),
                    // SAFETY: as above.
                    site_name: unsafe { from_c(p.site_name) },
                    // SAFETY: as above.
                    mirror_uuid: unsafe { from_c(p.mirror_uuid) },
                    // SAFETY: as above.
                    client_name: unsafe { from_c(p.client_name) },
                    last_seen: p.last_seen,
                })
                .collect();
            // SAFETY: frees n entries once.
            unsafe { sys::rbd_mirror_peer_site_list_cleanup(peers.as_mut_ptr(), n) };
            return Ok(out);
        }
    }

    /// Global mirror status of every mirror-enabled image in the pool, with image ids
    /// (`rbd_mirror_image_global_status_list`, paged).
    pub fn mirror_image_global_status_list(
        &self,
    ) -> Result<Vec<(String, MirrorImageGlobalStatus)>> {
        const PAGE: usize = 256;
        let mut out = Vec::new();
        let mut start = cstring("", "rbd_mirror_image_global_status_list", || self.ctx())?;
        loop {
            let mut ids: Vec<*mut libc::c_char> = vec![ptr::null_mut(); PAGE];
            let mut statuses = vec![zeroed_global_status(); PAGE];
            let mut len: size_t = 0;
            // SAFETY: ids/statuses have room for PAGE entries; start is a valid C string.
            let ret = unsafe {
                sys::rbd_mirror_image_global_status_list(
                    self.raw,
                    start.as_ptr(),
                    PAGE,
                    ids.as_mut_ptr(),
                    statuses.as_mut_ptr(),
                    &mut len,
                )
            };
            check(ret, "rbd_mirror_image_global_status_list", || self.ctx())?;
            let len = len.min(PAGE);
            for i in 0..len {
                // SAFETY: librbd filled `len` entries.
                let entry = unsafe { (from_c(ids[i]), global_status_from_raw(&statuses[i])) };
                out.push(entry);
            }
            // SAFETY: frees the `len` entries librbd allocated, once.
            unsafe {
                sys::rbd_mirror_image_global_status_list_cleanup(
                    ids.as_mut_ptr(),
                    statuses.as_mut_ptr(),
                    len,
                )
            };
            if len < PAGE {
                return Ok(out);
            }
            let last = out.last().map(|(id, _)| id.clone()).unwrap_or_default();
            start = cstring(&last, "rbd_mirror_image_global_status_list", || self.ctx())?;
        }
    }

    /// Count of images per mirror state in the pool (`rbd_mirror_image_status_summary`).
    pub fn mirror_image_status_summary(&self) -> Result<Vec<(MirrorStatusState, u32)>> {
        let mut cap: size_t = 16;
        loop {
            let mut states = vec![0 as sys::rbd_mirror_image_status_state_t; cap];
            let mut counts = vec![0 as c_int; cap];
            let mut n = cap;
            // SAFETY: both arrays have room for n entries.
            let ret = unsafe {
                sys::rbd_mirror_image_status_summary(
                    self.raw,
                    states.as_mut_ptr(),
                    counts.as_mut_ptr(),
                    &mut n,
                )
            };
            if ret == -libc::ERANGE {
                cap *= 2;
                continue;
            }
            check(ret, "rbd_mirror_image_status_summary", || self.ctx())?;
            let n = n.min(cap);
            return Ok(states[..n]
                .iter()
                .zip(&counts[..n])
                .map(|(&s, &c)| {
                    (
                        MirrorStatusState::from_raw(s),
                        u32::try_from(c).unwrap_or(0),
                    )
                })
                .collect());
        }
    }
}

impl Image {
    fn mirror_call(
        &self,
        op: &'static str,
        f: impl FnOnce(sys::rbd_image_t) -> c_int,
    ) -> Result<()> {
        check(f(self.raw()), op, || self.context().to_string())?;
        Ok(())
    }

    /// Enables mirroring of this image (`rbd_mirror_image_enable2`). Journal mode needs
    /// the exclusive-lock and journaling features; snapshot mode creates the first mirror
    /// snapshot.
    pub fn mirror_enable(&self, mode: MirrorImageMode) -> Result<()> {
        // SAFETY: valid image.
        self.mirror_call("rbd_mirror_image_enable2", |raw| unsafe {
            sys::rbd_mirror_image_enable2(raw, mode.to_raw())
        })
    }

    /// Disables mirroring (`rbd_mirror_image_disable`). On a primary this makes the peers
    /// delete their replicas. `force` also works on a non-primary.
    pub fn mirror_disable(&self, force: bool) -> Result<()> {
        // SAFETY: valid image.
        self.mirror_call("rbd_mirror_image_disable", |raw| unsafe {
            sys::rbd_mirror_image_disable(raw, force)
        })
    }

    /// Promotes this copy to primary (`rbd_mirror_image_promote`). Without `force` it
    /// fails unless the peer was demoted and everything was replayed.
    pub fn mirror_promote(&self, force: bool) -> Result<()> {
        // SAFETY: valid image.
        self.mirror_call("rbd_mirror_image_promote", |raw| unsafe {
            sys::rbd_mirror_image_promote(raw, force)
        })
    }

    /// Demotes this primary (`rbd_mirror_image_demote`).
    pub fn mirror_demote(&self) -> Result<()> {
        // SAFETY: valid image.
        self.mirror_call("rbd_mirror_image_demote", |raw| unsafe {
            sys::rbd_mirror_image_demote(raw)
        })
    }

    /// Flags a non-primary for a full resync (`rbd_mirror_image_resync`).
    pub fn mirror_resync(&self) -> Result<()> {
        // SAFETY: valid image.
        self.mirror_call("rbd_mirror_image_resync", |raw| unsafe {
            sys::rbd_mirror_image_resync(raw)
        })
    }

    /// Creates a mirror snapshot on a snapshot-mode primary; returns its id
    /// (`rbd_mirror_image_create_snapshot`).
    pub fn mirror_create_snapshot(&self) -> Result<u64> {
        let mut id = 0u64;
        // SAFETY: valid image and out-pointer.
        self.mirror_call("rbd_mirror_image_create_snapshot", |raw| unsafe {
            sys::rbd_mirror_image_create_snapshot(raw, &mut id)
        })?;
        Ok(id)
    }

    /// Mirroring info (`rbd_mirror_image_get_info`).
    pub fn mirror_info(&self) -> Result<MirrorImageInfo> {
        let mut info = sys::rbd_mirror_image_info_t {
            global_id: ptr::null_mut(),
            state: 0,
            primary: false,
        };
        // SAFETY: info is writable, its size passed.
        self.mirror_call("rbd_mirror_image_get_info", |raw| unsafe {
            sys::rbd_mirror_image_get_info(raw, &mut info, std::mem::size_of_val(&info))
        })?;
        let out = MirrorImageInfo {
            // SAFETY: librbd set global_id to a valid string.
            global_id: unsafe { from_c(info.global_id) },
            state: MirrorImageState::from_raw(info.state),
            primary: info.primary,
        };
        // SAFETY: frees global_id once.
        unsafe { sys::rbd_mirror_image_get_info_cleanup(&mut info) };
        Ok(out)
    }

    /// Mirroring mode (`rbd_mirror_image_get_mode`). Meaningful only while mirroring is
    /// enabled: for a disabled image librbd 16.2 answers `Journal`, so check
    /// [`Image::mirror_info`] first.
    pub fn mirror_mode(&self) -> Result<MirrorImageMode> {
        let mut v: sys::rbd_mirror_image_mode_t = 0;
        // SAFETY: valid image and out-pointer.
        self.mirror_call("rbd_mirror_image_get_mode", |raw| unsafe {
            sys::rbd_mirror_image_get_mode(raw, &mut v)
        })?;
        match v {
            sys::RBD_MIRROR_IMAGE_MODE_JOURNAL => Ok(MirrorImageMode::Journal),
            sys::RBD_MIRROR_IMAGE_MODE_SNAPSHOT => Ok(MirrorImageMode::Snapshot),
            other => Err(RbdError::malformed(
                "rbd_mirror_image_get_mode",
                self.context(),
                format!("unknown mode {other}"),
            )),
        }
    }

    /// Global mirror status: local and peer sites (`rbd_mirror_image_get_global_status`).
    pub fn mirror_global_status(&self) -> Result<MirrorImageGlobalStatus> {
        let mut s = zeroed_global_status();
        // SAFETY: s is writable, its size passed.
        self.mirror_call("rbd_mirror_image_get_global_status", |raw| unsafe {
            sys::rbd_mirror_image_get_global_status(raw, &mut s, std::mem::size_of_val(&s))
        })?;
        // SAFETY: librbd filled s.
        let out = unsafe { global_status_from_raw(&s) };
        // SAFETY: frees what librbd allocated in s, once.
        unsafe { sys::rbd_mirror_image_global_status_cleanup(&mut s) };
        Ok(out)
    }

    /// The mirror namespace of snapshot `snap_id` (`rbd_snap_get_mirror_namespace`):
    /// `InvalidArgument` if it is not a mirror snapshot.
    pub fn snap_mirror_namespace(&self, snap_id: u64) -> Result<MirrorSnapshotNamespace> {
        let mut ns = sys::rbd_snap_mirror_namespace_t {
            state: 0,
            mirror_peer_uuids_count: 0,
            mirror_peer_uuids: ptr::null_mut(),
            complete: false,
            primary_mirror_uuid: ptr::null_mut(),
            primary_snap_id: 0,
            last_copied_object_number: 0,
        };
        let size = std::mem::size_of_val(&ns);
        // SAFETY: ns is writable, its size passed.
        let ret = unsafe { sys::rbd_snap_get_mirror_namespace(self.raw(), snap_id, &mut ns, size) };
        check(ret, "rbd_snap_get_mirror_namespace", || {
            format!("{}, snap id {snap_id}", self.context())
        })?;
        let mut uuids = Vec::with_capacity(ns.mirror_peer_uuids_count);
        let mut p = ns.mirror_peer_uuids.cast_const();
        for _ in 0..ns.mirror_peer_uuids_count {
            if p.is_null() {
                break;
            }
            // SAFETY: librbd packs `count` NUL-terminated strings back to back at p.
            let s = unsafe { std::ffi::CStr::from_ptr(p) };
            uuids.push(s.to_string_lossy().into_owned());
            // SAFETY: the next string starts right after this one's NUL, inside the block.
            p = unsafe { p.add(s.to_bytes().len() + 1) };
        }
        let out = MirrorSnapshotNamespace {
            state: SnapMirrorState::from_raw(ns.state),
            mirror_peer_uuids: uuids,
            complete: ns.complete,
            // SAFETY: valid string set by librbd.
            primary_mirror_uuid: unsafe { from_c(ns.primary_mirror_uuid) },
            primary_snap_id: ns.primary_snap_id,
            last_copied_object_number: ns.last_copied_object_number,
        };
        // SAFETY: frees what librbd allocated in ns, once.
        unsafe { sys::rbd_snap_mirror_namespace_cleanup(&mut ns, size) };
        Ok(out)
    }
}
