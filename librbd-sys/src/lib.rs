//! Raw `extern "C"` declarations of the librbd C API we use (Ceph 16.2, `rbd/librbd.h`), and
//! of the few librados calls that open the cluster and pool handles librbd needs
//! (`rados/librados.h`).
//!
//! Nothing but declarations lives here; the safe layer is the `librbd` crate. The
//! librados part replaces the `ceph` crate, which pulled in unmaintained dependencies
//! (nix 0.18, nom 5 / lexical-core 0.7) for about twenty C declarations.
//!
//! C enums are declared as `c_int` type aliases plus named constants rather than Rust
//! enums: librbd writes them into out-parameters, and a value Rust does not know (a newer
//! librbd) must not be undefined behaviour. The layouts follow Debian's librbd 16.2.15
//! headers (`/usr/include/rbd/librbd.h`, `features.h`) field by field.
#![allow(non_camel_case_types, missing_docs)]

use libc::{c_char, c_int, c_void, size_t, ssize_t, time_t};

/// librados cluster handle (`rados_t`).
pub type rados_t = *mut c_void;
/// librados I/O context handle (`rados_ioctx_t`).
pub type rados_ioctx_t = *mut c_void;
/// librados compound read operation (`rados_read_op_t`).
pub type rados_read_op_t = *mut c_void;
/// Iterator over omap key/values filled by a read operation (`rados_omap_iter_t`).
pub type rados_omap_iter_t = *mut c_void;

pub type rbd_image_t = *mut c_void;
pub type rbd_image_options_t = *mut c_void;
/// An asynchronous I/O completion.
pub type rbd_completion_t = *mut c_void;
/// Called by librbd when an asynchronous I/O completes.
pub type rbd_callback_t = Option<unsafe extern "C" fn(cb: rbd_completion_t, arg: *mut c_void)>;

/// `librbd_progress_fn_t`: return non-zero to cancel the operation.
pub type librbd_progress_fn_t =
    Option<unsafe extern "C" fn(offset: u64, total: u64, ptr: *mut c_void) -> c_int>;

// ---- features.h -------------------------------------------------------------------------
pub const RBD_FEATURE_LAYERING: u64 = 1 << 0;
pub const RBD_FEATURE_STRIPINGV2: u64 = 1 << 1;
pub const RBD_FEATURE_EXCLUSIVE_LOCK: u64 = 1 << 2;
pub const RBD_FEATURE_OBJECT_MAP: u64 = 1 << 3;
pub const RBD_FEATURE_FAST_DIFF: u64 = 1 << 4;
pub const RBD_FEATURE_DEEP_FLATTEN: u64 = 1 << 5;
pub const RBD_FEATURE_JOURNALING: u64 = 1 << 6;
pub const RBD_FEATURE_DATA_POOL: u64 = 1 << 7;
pub const RBD_FEATURE_OPERATIONS: u64 = 1 << 8;
pub const RBD_FEATURE_MIGRATING: u64 = 1 << 9;
pub const RBD_FEATURE_NON_PRIMARY: u64 = 1 << 10;
pub const RBD_FEATURE_DIRTY_CACHE: u64 = 1 << 11;

// ---- image flags (rbd_get_flags) --------------------------------------------------------
pub const RBD_FLAG_OBJECT_MAP_INVALID: u64 = 1 << 0;
pub const RBD_FLAG_FAST_DIFF_INVALID: u64 = 1 << 1;

pub const RBD_MAX_IMAGE_NAME_SIZE: usize = 96;
pub const RBD_MAX_BLOCK_NAME_SIZE: usize = 24;

pub const RBD_SNAP_REMOVE_UNPROTECT: u32 = 1 << 0;
pub const RBD_SNAP_REMOVE_FLATTEN: u32 = 1 << 1;
pub const RBD_SNAP_REMOVE_FORCE: u32 = RBD_SNAP_REMOVE_UNPROTECT | RBD_SNAP_REMOVE_FLATTEN;

pub const RBD_SNAP_CREATE_SKIP_QUIESCE: u32 = 1 << 0;
pub const RBD_SNAP_CREATE_IGNORE_QUIESCE_ERROR: u32 = 1 << 1;

// ---- image options (rbd_image_options_set_*) --------------------------------------------
pub const RBD_IMAGE_OPTION_FORMAT: c_int = 0;
pub const RBD_IMAGE_OPTION_FEATURES: c_int = 1;
pub const RBD_IMAGE_OPTION_ORDER: c_int = 2;
pub const RBD_IMAGE_OPTION_STRIPE_UNIT: c_int = 3;
pub const RBD_IMAGE_OPTION_STRIPE_COUNT: c_int = 4;
pub const RBD_IMAGE_OPTION_JOURNAL_ORDER: c_int = 5;
pub const RBD_IMAGE_OPTION_JOURNAL_SPLAY_WIDTH: c_int = 6;
pub const RBD_IMAGE_OPTION_JOURNAL_POOL: c_int = 7;
pub const RBD_IMAGE_OPTION_FEATURES_SET: c_int = 8;
pub const RBD_IMAGE_OPTION_FEATURES_CLEAR: c_int = 9;
pub const RBD_IMAGE_OPTION_DATA_POOL: c_int = 10;
pub const RBD_IMAGE_OPTION_FLATTEN: c_int = 11;
pub const RBD_IMAGE_OPTION_CLONE_FORMAT: c_int = 12;
pub const RBD_IMAGE_OPTION_MIRROR_IMAGE_MODE: c_int = 13;

// ---- enums ------------------------------------------------------------------------------
pub type rbd_snap_namespace_type_t = c_int;
pub const RBD_SNAP_NAMESPACE_TYPE_USER: rbd_snap_namespace_type_t = 0;
pub const RBD_SNAP_NAMESPACE_TYPE_GROUP: rbd_snap_namespace_type_t = 1;
pub const RBD_SNAP_NAMESPACE_TYPE_TRASH: rbd_snap_namespace_type_t = 2;
pub const RBD_SNAP_NAMESPACE_TYPE_MIRROR: rbd_snap_namespace_type_t = 3;

pub type rbd_mirror_mode_t = c_int;
pub const RBD_MIRROR_MODE_DISABLED: rbd_mirror_mode_t = 0;
pub const RBD_MIRROR_MODE_IMAGE: rbd_mirror_mode_t = 1;
pub const RBD_MIRROR_MODE_POOL: rbd_mirror_mode_t = 2;

pub type rbd_mirror_peer_direction_t = c_int;
pub const RBD_MIRROR_PEER_DIRECTION_RX: rbd_mirror_peer_direction_t = 0;
pub const RBD_MIRROR_PEER_DIRECTION_TX: rbd_mirror_peer_direction_t = 1;
pub const RBD_MIRROR_PEER_DIRECTION_RX_TX: rbd_mirror_peer_direction_t = 2;

pub type rbd_mirror_image_mode_t = c_int;
pub const RBD_MIRROR_IMAGE_MODE_JOURNAL: rbd_mirror_image_mode_t = 0;
pub const RBD_MIRROR_IMAGE_MODE_SNAPSHOT: rbd_mirror_image_mode_t = 1;

pub type rbd_mirror_image_state_t = c_int;
pub const RBD_MIRROR_IMAGE_DISABLING: rbd_mirror_image_state_t = 0;
pub const RBD_MIRROR_IMAGE_ENABLED: rbd_mirror_image_state_t = 1;
pub const RBD_MIRROR_IMAGE_DISABLED: rbd_mirror_image_state_t = 2;

pub type rbd_mirror_image_status_state_t = c_int;
pub const MIRROR_IMAGE_STATUS_STATE_UNKNOWN: rbd_mirror_image_status_state_t = 0;
pub const MIRROR_IMAGE_STATUS_STATE_ERROR: rbd_mirror_image_status_state_t = 1;
pub const MIRROR_IMAGE_STATUS_STATE_SYNCING: rbd_mirror_image_status_state_t = 2;
pub const MIRROR_IMAGE_STATUS_STATE_STARTING_REPLAY: rbd_mirror_image_status_state_t = 3;
pub const MIRROR_IMAGE_STATUS_STATE_REPLAYING: rbd_mirror_image_status_state_t = 4;
pub const MIRROR_IMAGE_STATUS_STATE_STOPPING_REPLAY: rbd_mirror_image_status_state_t = 5;
pub const MIRROR_IMAGE_STATUS_STATE_STOPPED: rbd_mirror_image_status_state_t = 6;

pub type rbd_snap_mirror_state_t = c_int;
pub const RBD_SNAP_MIRROR_STATE_PRIMARY: rbd_snap_mirror_state_t = 0;
pub const RBD_SNAP_MIRROR_STATE_PRIMARY_DEMOTED: rbd_snap_mirror_state_t = 1;
pub const RBD_SNAP_MIRROR_STATE_NON_PRIMARY: rbd_snap_mirror_state_t = 2;
pub const RBD_SNAP_MIRROR_STATE_NON_PRIMARY_DEMOTED: rbd_snap_mirror_state_t = 3;

pub type rbd_lock_mode_t = c_int;
pub const RBD_LOCK_MODE_EXCLUSIVE: rbd_lock_mode_t = 0;
pub const RBD_LOCK_MODE_SHARED: rbd_lock_mode_t = 1;

// ---- structs ----------------------------------------------------------------------------
#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct rbd_image_spec_t {
    pub id: *mut c_char,
    pub name: *mut c_char,
}

/// An image linked to another (a clone's parent, a parent's children): `rbd_get_parent`.
#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct rbd_linked_image_spec_t {
    pub pool_id: i64,
    pub pool_name: *mut c_char,
    pub pool_namespace: *mut c_char,
    pub image_id: *mut c_char,
    pub image_name: *mut c_char,
    pub trash: bool,
}

/// A snapshot named by id, namespace and name: `rbd_get_parent`.
#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct rbd_snap_spec_t {
    pub id: u64,
    pub namespace_type: rbd_snap_namespace_type_t,
    pub name: *mut c_char,
}

#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct rbd_snap_info_t {
    pub id: u64,
    pub size: u64,
    pub name: *const c_char,
}

#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct rbd_image_info_t {
    pub size: u64,
    pub obj_size: u64,
    pub num_objs: u64,
    pub order: c_int,
    pub block_name_prefix: [c_char; RBD_MAX_BLOCK_NAME_SIZE],
    pub parent_pool: i64,
    pub parent_name: [c_char; RBD_MAX_IMAGE_NAME_SIZE],
}

#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct rbd_mirror_peer_site_t {
    pub uuid: *mut c_char,
    pub direction: rbd_mirror_peer_direction_t,
    pub site_name: *mut c_char,
    pub mirror_uuid: *mut c_char,
    pub client_name: *mut c_char,
    pub last_seen: time_t,
}

#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct rbd_mirror_image_info_t {
    pub global_id: *mut c_char,
    pub state: rbd_mirror_image_state_t,
    pub primary: bool,
}

#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct rbd_mirror_image_site_status_t {
    pub mirror_uuid: *mut c_char,
    pub state: rbd_mirror_image_status_state_t,
    pub description: *mut c_char,
    pub last_update: time_t,
    pub up: bool,
}

#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct rbd_mirror_image_global_status_t {
    pub name: *mut c_char,
    pub info: rbd_mirror_image_info_t,
    pub site_statuses_count: u32,
    pub site_statuses: *mut rbd_mirror_image_site_status_t,
}

#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct rbd_snap_mirror_namespace_t {
    pub state: rbd_snap_mirror_state_t,
    pub mirror_peer_uuids_count: size_t,
    /// `mirror_peer_uuids_count` NUL-terminated strings, back to back.
    pub mirror_peer_uuids: *mut c_char,
    pub complete: bool,
    pub primary_mirror_uuid: *mut c_char,
    pub primary_snap_id: u64,
    pub last_copied_object_number: u64,
}

#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct rbd_image_watcher_t {
    pub addr: *mut c_char,
    pub id: i64,
    pub cookie: u64,
}

#[link(name = "rbd")]
extern "C" {
    pub fn rbd_version(major: *mut c_int, minor: *mut c_int, extra: *mut c_int);

    // image options
    pub fn rbd_image_options_create(opts: *mut rbd_image_options_t);
    pub fn rbd_image_options_destroy(opts: rbd_image_options_t);
    pub fn rbd_image_options_set_string(
        opts: rbd_image_options_t,
        optname: c_int,
        optval: *const c_char,
    ) -> c_int;
    pub fn rbd_image_options_set_uint64(
        opts: rbd_image_options_t,
        optname: c_int,
        optval: u64,
    ) -> c_int;

    // pool-level image calls
    pub fn rbd_list2(io: rados_ioctx_t, images: *mut rbd_image_spec_t, max: *mut size_t) -> c_int;
    pub fn rbd_image_spec_list_cleanup(images: *mut rbd_image_spec_t, num_images: size_t);
    pub fn rbd_create2(
        io: rados_ioctx_t,
        name: *const c_char,
        size: u64,
        features: u64,
        order: *mut c_int,
    ) -> c_int;
    pub fn rbd_create4(
        io: rados_ioctx_t,
        name: *const c_char,
        size: u64,
        opts: rbd_image_options_t,
    ) -> c_int;
    pub fn rbd_clone3(
        p_ioctx: rados_ioctx_t,
        p_name: *const c_char,
        p_snapname: *const c_char,
        c_ioctx: rados_ioctx_t,
        c_name: *const c_char,
        c_opts: rbd_image_options_t,
    ) -> c_int;
    pub fn rbd_remove(io: rados_ioctx_t, name: *const c_char) -> c_int;
    pub fn rbd_trash_move(io: rados_ioctx_t, name: *const c_char, delay: u64) -> c_int;
    pub fn rbd_trash_remove(io: rados_ioctx_t, id: *const c_char, force: bool) -> c_int;

    // open / close
    pub fn rbd_open(
        io: rados_ioctx_t,
        name: *const c_char,
        image: *mut rbd_image_t,
        snap_name: *const c_char,
    ) -> c_int;
    pub fn rbd_open_read_only(
        io: rados_ioctx_t,
        name: *const c_char,
        image: *mut rbd_image_t,
        snap_name: *const c_char,
    ) -> c_int;
    pub fn rbd_close(image: rbd_image_t) -> c_int;

    // image properties
    pub fn rbd_stat(image: rbd_image_t, info: *mut rbd_image_info_t, infosize: size_t) -> c_int;
    pub fn rbd_get_size(image: rbd_image_t, size: *mut u64) -> c_int;
    pub fn rbd_resize(image: rbd_image_t, size: u64) -> c_int;
    pub fn rbd_get_features(image: rbd_image_t, features: *mut u64) -> c_int;
    pub fn rbd_update_features(image: rbd_image_t, features: u64, enabled: u8) -> c_int;
    pub fn rbd_get_flags(image: rbd_image_t, flags: *mut u64) -> c_int;
    pub fn rbd_get_id(image: rbd_image_t, id: *mut c_char, id_len: size_t) -> c_int;
    pub fn rbd_get_data_pool_id(image: rbd_image_t) -> i64;
    pub fn rbd_get_parent(
        image: rbd_image_t,
        parent_image: *mut rbd_linked_image_spec_t,
        parent_snap: *mut rbd_snap_spec_t,
    ) -> c_int;
    pub fn rbd_linked_image_spec_cleanup(image: *mut rbd_linked_image_spec_t);
    pub fn rbd_snap_spec_cleanup(snap: *mut rbd_snap_spec_t);
    pub fn rbd_flatten_with_progress(
        image: rbd_image_t,
        cb: librbd_progress_fn_t,
        cbdata: *mut c_void,
    ) -> c_int;
    pub fn rbd_rebuild_object_map(
        image: rbd_image_t,
        cb: librbd_progress_fn_t,
        cbdata: *mut c_void,
    ) -> c_int;
    pub fn rbd_metadata_get(
        image: rbd_image_t,
        key: *const c_char,
        value: *mut c_char,
        val_len: *mut size_t,
    ) -> c_int;
    pub fn rbd_metadata_set(image: rbd_image_t, key: *const c_char, value: *const c_char) -> c_int;
    pub fn rbd_metadata_remove(image: rbd_image_t, key: *const c_char) -> c_int;
    pub fn rbd_get_block_name_prefix(
        image: rbd_image_t,
        prefix: *mut c_char,
        prefix_len: size_t,
    ) -> c_int;
    pub fn rbd_get_name(image: rbd_image_t, name: *mut c_char, name_len: *mut size_t) -> c_int;
    pub fn rbd_is_exclusive_lock_owner(image: rbd_image_t, is_owner: *mut c_int) -> c_int;
    pub fn rbd_lock_acquire(image: rbd_image_t, lock_mode: rbd_lock_mode_t) -> c_int;
    pub fn rbd_lock_release(image: rbd_image_t) -> c_int;
    pub fn rbd_watchers_list(
        image: rbd_image_t,
        watchers: *mut rbd_image_watcher_t,
        max_watchers: *mut size_t,
    ) -> c_int;
    pub fn rbd_watchers_list_cleanup(watchers: *mut rbd_image_watcher_t, num_watchers: size_t);

    // copy
    pub fn rbd_copy_with_progress4(
        image: rbd_image_t,
        dest_p: rados_ioctx_t,
        destname: *const c_char,
        dest_opts: rbd_image_options_t,
        cb: librbd_progress_fn_t,
        cbdata: *mut c_void,
        sparse_size: size_t,
    ) -> c_int;
    pub fn rbd_deep_copy_with_progress(
        image: rbd_image_t,
        dest_io_ctx: rados_ioctx_t,
        destname: *const c_char,
        dest_opts: rbd_image_options_t,
        cb: librbd_progress_fn_t,
        cbdata: *mut c_void,
    ) -> c_int;

    // snapshots
    pub fn rbd_snap_list(
        image: rbd_image_t,
        snaps: *mut rbd_snap_info_t,
        max_snaps: *mut c_int,
    ) -> c_int;
    pub fn rbd_snap_list_end(snaps: *mut rbd_snap_info_t);
    pub fn rbd_snap_exists(image: rbd_image_t, snapname: *const c_char, exists: *mut bool)
        -> c_int;
    pub fn rbd_snap_create(image: rbd_image_t, snapname: *const c_char) -> c_int;
    pub fn rbd_snap_remove(image: rbd_image_t, snapname: *const c_char) -> c_int;
    pub fn rbd_snap_remove2(
        image: rbd_image_t,
        snap_name: *const c_char,
        flags: u32,
        cb: librbd_progress_fn_t,
        cbdata: *mut c_void,
    ) -> c_int;
    pub fn rbd_snap_remove_by_id(image: rbd_image_t, snap_id: u64) -> c_int;
    pub fn rbd_snap_protect(image: rbd_image_t, snap_name: *const c_char) -> c_int;
    pub fn rbd_snap_unprotect(image: rbd_image_t, snap_name: *const c_char) -> c_int;
    pub fn rbd_snap_is_protected(
        image: rbd_image_t,
        snap_name: *const c_char,
        is_protected: *mut c_int,
    ) -> c_int;
    pub fn rbd_snap_get_id(image: rbd_image_t, snapname: *const c_char, snap_id: *mut u64)
        -> c_int;
    pub fn rbd_snap_set(image: rbd_image_t, snapname: *const c_char) -> c_int;
    pub fn rbd_snap_set_by_id(image: rbd_image_t, snap_id: u64) -> c_int;
    pub fn rbd_snap_get_namespace_type(
        image: rbd_image_t,
        snap_id: u64,
        namespace_type: *mut rbd_snap_namespace_type_t,
    ) -> c_int;
    pub fn rbd_snap_get_mirror_namespace(
        image: rbd_image_t,
        snap_id: u64,
        mirror_snap: *mut rbd_snap_mirror_namespace_t,
        mirror_snap_size: size_t,
    ) -> c_int;
    pub fn rbd_snap_mirror_namespace_cleanup(
        mirror_snap: *mut rbd_snap_mirror_namespace_t,
        mirror_snap_size: size_t,
    ) -> c_int;

    // I/O
    pub fn rbd_read(image: rbd_image_t, ofs: u64, len: size_t, buf: *mut c_char) -> ssize_t;
    pub fn rbd_write(image: rbd_image_t, ofs: u64, len: size_t, buf: *const c_char) -> ssize_t;
    pub fn rbd_flush(image: rbd_image_t) -> c_int;
    pub fn rbd_aio_create_completion(
        cb_arg: *mut c_void,
        complete_cb: rbd_callback_t,
        c: *mut rbd_completion_t,
    ) -> c_int;
    pub fn rbd_aio_write(
        image: rbd_image_t,
        off: u64,
        len: size_t,
        buf: *const c_char,
        c: rbd_completion_t,
    ) -> c_int;
    pub fn rbd_aio_wait_for_complete(c: rbd_completion_t) -> c_int;
    /// 1 once the operation has completed, else 0; never blocks.
    pub fn rbd_aio_is_complete(c: rbd_completion_t) -> c_int;
    pub fn rbd_aio_get_return_value(c: rbd_completion_t) -> ssize_t;
    pub fn rbd_aio_release(c: rbd_completion_t);

    // pool mirroring
    pub fn rbd_mirror_site_name_get(
        cluster: rados_t,
        name: *mut c_char,
        max_len: *mut size_t,
    ) -> c_int;
    pub fn rbd_mirror_site_name_set(cluster: rados_t, name: *const c_char) -> c_int;
    pub fn rbd_mirror_mode_get(io_ctx: rados_ioctx_t, mirror_mode: *mut rbd_mirror_mode_t)
        -> c_int;
    pub fn rbd_mirror_mode_set(io_ctx: rados_ioctx_t, mirror_mode: rbd_mirror_mode_t) -> c_int;
    pub fn rbd_mirror_uuid_get(
        io_ctx: rados_ioctx_t,
        uuid: *mut c_char,
        max_len: *mut size_t,
    ) -> c_int;
    pub fn rbd_mirror_peer_bootstrap_create(
        io_ctx: rados_ioctx_t,
        token: *mut c_char,
        max_len: *mut size_t,
    ) -> c_int;
    pub fn rbd_mirror_peer_bootstrap_import(
        io_ctx: rados_ioctx_t,
        direction: rbd_mirror_peer_direction_t,
        token: *const c_char,
    ) -> c_int;
    pub fn rbd_mirror_peer_site_list(
        io_ctx: rados_ioctx_t,
        peers: *mut rbd_mirror_peer_site_t,
        max_peers: *mut c_int,
    ) -> c_int;
    pub fn rbd_mirror_peer_site_list_cleanup(peers: *mut rbd_mirror_peer_site_t, max_peers: c_int);
    pub fn rbd_mirror_image_global_status_list(
        io_ctx: rados_ioctx_t,
        start_id: *const c_char,
        max: size_t,
        image_ids: *mut *mut c_char,
        images: *mut rbd_mirror_image_global_status_t,
        len: *mut size_t,
    ) -> c_int;
    pub fn rbd_mirror_image_global_status_list_cleanup(
        image_ids: *mut *mut c_char,
        images: *mut rbd_mirror_image_global_status_t,
        len: size_t,
    );
    pub fn rbd_mirror_image_status_summary(
        io_ctx: rados_ioctx_t,
        states: *mut rbd_mirror_image_status_state_t,
        counts: *mut c_int,
        maxlen: *mut size_t,
    ) -> c_int;

    // image mirroring
    pub fn rbd_mirror_image_enable2(image: rbd_image_t, mode: rbd_mirror_image_mode_t) -> c_int;
    pub fn rbd_mirror_image_disable(image: rbd_image_t, force: bool) -> c_int;
    pub fn rbd_mirror_image_promote(image: rbd_image_t, force: bool) -> c_int;
    pub fn rbd_mirror_image_demote(image: rbd_image_t) -> c_int;
    pub fn rbd_mirror_image_resync(image: rbd_image_t) -> c_int;
    pub fn rbd_mirror_image_create_snapshot(image: rbd_image_t, snap_id: *mut u64) -> c_int;
    pub fn rbd_mirror_image_get_info(
        image: rbd_image_t,
        mirror_image_info: *mut rbd_mirror_image_info_t,
        info_size: size_t,
    ) -> c_int;
    pub fn rbd_mirror_image_get_info_cleanup(mirror_image_info: *mut rbd_mirror_image_info_t);
    pub fn rbd_mirror_image_get_mode(
        image: rbd_image_t,
        mode: *mut rbd_mirror_image_mode_t,
    ) -> c_int;
    pub fn rbd_mirror_image_get_global_status(
        image: rbd_image_t,
        status: *mut rbd_mirror_image_global_status_t,
        status_size: size_t,
    ) -> c_int;
    pub fn rbd_mirror_image_global_status_cleanup(status: *mut rbd_mirror_image_global_status_t);
}

// ---- librados.h (Ceph 16.2): only the calls the librbd crate uses ------------------
#[link(name = "rados")]
extern "C" {
    // cluster handle
    pub fn rados_create2(
        pcluster: *mut rados_t,
        clustername: *const c_char,
        name: *const c_char,
        flags: u64,
    ) -> c_int;
    pub fn rados_conf_read_file(cluster: rados_t, path: *const c_char) -> c_int;
    pub fn rados_conf_set(cluster: rados_t, option: *const c_char, value: *const c_char) -> c_int;
    pub fn rados_conf_get(
        cluster: rados_t,
        option: *const c_char,
        buf: *mut c_char,
        len: size_t,
    ) -> c_int;
    pub fn rados_connect(cluster: rados_t) -> c_int;
    pub fn rados_shutdown(cluster: rados_t);
    pub fn rados_cluster_fsid(cluster: rados_t, buf: *mut c_char, len: size_t) -> c_int;

    // pool I/O context
    pub fn rados_ioctx_create(
        cluster: rados_t,
        pool_name: *const c_char,
        ioctx: *mut rados_ioctx_t,
    ) -> c_int;
    pub fn rados_ioctx_destroy(io: rados_ioctx_t);
    pub fn rados_ioctx_get_id(io: rados_ioctx_t) -> i64;
    pub fn rados_ioctx_set_namespace(io: rados_ioctx_t, nspace: *const c_char);

    // monitor / manager commands; outbuf and outs are freed with rados_buffer_free
    pub fn rados_mon_command(
        cluster: rados_t,
        cmd: *mut *const c_char,
        cmdlen: size_t,
        inbuf: *const c_char,
        inbuflen: size_t,
        outbuf: *mut *mut c_char,
        outbuflen: *mut size_t,
        outs: *mut *mut c_char,
        outslen: *mut size_t,
    ) -> c_int;
    pub fn rados_mon_command_target(
        cluster: rados_t,
        name: *const c_char,
        cmd: *mut *const c_char,
        cmdlen: size_t,
        inbuf: *const c_char,
        inbuflen: size_t,
        outbuf: *mut *mut c_char,
        outbuflen: *mut size_t,
        outs: *mut *mut c_char,
        outslen: *mut size_t,
    ) -> c_int;
    pub fn rados_mgr_command(
        cluster: rados_t,
        cmd: *mut *const c_char,
        cmdlen: size_t,
        inbuf: *const c_char,
        inbuflen: size_t,
        outbuf: *mut *mut c_char,
        outbuflen: *mut size_t,
        outs: *mut *mut c_char,
        outslen: *mut size_t,
    ) -> c_int;
    pub fn rados_buffer_free(buf: *mut c_char);

    // omap reads (the journal client registry); `_vals` is marked deprecated in 16.2's
    // header in favour of `_vals2`, but is still exported and behaves the same here
    pub fn rados_create_read_op() -> rados_read_op_t;
    pub fn rados_release_read_op(read_op: rados_read_op_t);
    pub fn rados_read_op_omap_get_vals(
        read_op: rados_read_op_t,
        start_after: *const c_char,
        filter_prefix: *const c_char,
        max_return: u64,
        iter: *mut rados_omap_iter_t,
        prval: *mut c_int,
    );
    pub fn rados_read_op_operate(
        read_op: rados_read_op_t,
        io: rados_ioctx_t,
        oid: *const c_char,
        flags: c_int,
    ) -> c_int;
    pub fn rados_omap_get_next(
        iter: rados_omap_iter_t,
        key: *mut *mut c_char,
        val: *mut *mut c_char,
        len: *mut size_t,
    ) -> c_int;
    pub fn rados_omap_get_end(iter: rados_omap_iter_t);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Struct sizes for x86_64 / aarch64 (LP64), computed by hand from librbd.h 16.2.
    /// A wrong field type or order changes them; this is the cheap half of a ctest check.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn struct_sizes_match_lp64_layout_of_librbd_h() {
        use std::mem::size_of;
        assert_eq!(
            size_of::<rbd_image_info_t>(),
            8 + 8 + 8 + 4 + 24 + 4 + 8 + 96
        );
        assert_eq!(size_of::<rbd_mirror_peer_site_t>(), 48);
        assert_eq!(size_of::<rbd_mirror_image_info_t>(), 16);
        assert_eq!(size_of::<rbd_mirror_image_site_status_t>(), 40);
        assert_eq!(
            size_of::<rbd_mirror_image_global_status_t>(),
            8 + 16 + 8 + 8
        );
        assert_eq!(size_of::<rbd_snap_mirror_namespace_t>(), 56);
        assert_eq!(size_of::<rbd_image_watcher_t>(), 24);
        assert_eq!(size_of::<rbd_snap_info_t>(), 24);
        assert_eq!(size_of::<rbd_linked_image_spec_t>(), 8 + 4 * 8 + 8);
        assert_eq!(size_of::<rbd_snap_spec_t>(), 8 + 8 + 8);
    }
}
