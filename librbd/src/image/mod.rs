//! RBD images (`rbd_image_t`): open, properties, features, snapshots, watchers, I/O,
//! copies with progress, and pool-level image calls (list, create, remove).
//!
//! An [`Image`] owns its handle (closed in `Drop`) and keeps its cluster connection alive.
//! Progress callbacks run Rust closures inside `catch_unwind`: a panic never crosses the C
//! frame; it is stored and resumed once librbd has returned.

use std::ptr;

use libc::c_int;
use librbd_sys as sys;

use crate::cluster::{Cluster, IoCtx};
use crate::error::{
    check, cstring, from_buf, from_c, grow_string_fixed, grow_string_with_len, RbdError, Result,
};

/// Size and layout of an image (`rbd_stat`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// Size in bytes.
    pub size: u64,
    /// Object size in bytes (`1 << order`).
    pub obj_size: u64,
    /// Number of objects.
    pub num_objs: u64,
    /// Object size order.
    pub order: i32,
    /// Prefix of the image's data objects (`rbd_data.<id>`).
    pub block_name_prefix: String,
}

/// An entry of [`IoCtx::list_images`] (`rbd_list2`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageEntry {
    /// Image id.
    pub id: String,
    /// Image name.
    pub name: String,
}

/// Namespace of a snapshot (`rbd_snap_namespace_type_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapNamespaceType {
    /// A user snapshot (`rbd snap create`).
    User,
    /// A group snapshot.
    Group,
    /// A snapshot moved to the trash (still has clones).
    Trash,
    /// A mirror snapshot (snapshot-based mirroring).
    Mirror,
    /// A value this wrapper does not know.
    Unknown(i32),
}

impl SnapNamespaceType {
    fn from_raw(v: c_int) -> Self {
        match v {
            sys::RBD_SNAP_NAMESPACE_TYPE_USER => Self::User,
            sys::RBD_SNAP_NAMESPACE_TYPE_GROUP => Self::Group,
            sys::RBD_SNAP_NAMESPACE_TYPE_TRASH => Self::Trash,
            sys::RBD_SNAP_NAMESPACE_TYPE_MIRROR => Self::Mirror,
            other => Self::Unknown(other),
        }
    }
}

/// A snapshot (`rbd_snap_list` + `rbd_snap_get_namespace_type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapInfo {
    /// Snapshot id.
    pub id: u64,
    /// Image size at the snapshot.
    pub size: u64,
    /// Name (mirror snapshots have generated names `.mirror.…`).
    pub name: String,
    /// Namespace.
    pub namespace: SnapNamespaceType,
}

/// A client watching the image header (`rbd_watchers_list`): an open image somewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watcher {
    /// Client address.
    pub addr: String,
    /// Client (global) id.
    pub id: i64,
    /// Watch cookie.
    pub cookie: u64,
}

/// The parent of a clone (`rbd_get_parent`): an image snapshot, possibly in another pool
/// or namespace of the same cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentSpec {
    /// Pool id.
    pub pool_id: i64,
    /// Pool name.
    pub pool: String,
    /// Namespace in the pool ("" for the default one).
    pub namespace: String,
    /// Image id of the parent.
    pub image_id: String,
    /// Image name of the parent.
    pub image_name: String,
    /// Whether the parent image is in the trash.
    pub trash: bool,
    /// Id of the parent snapshot.
    pub snap_id: u64,
    /// Name of the parent snapshot.
    pub snap_name: String,
    /// Namespace of the parent snapshot.
    pub snap_namespace: SnapNamespaceType,
}

/// Options of a new image (`rbd_image_options_t`): used by [`IoCtx::create_image`],
/// [`IoCtx::clone_image`], [`Image::copy_to`] and [`Image::deep_copy_to`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageOptions {
    /// Feature bits (`RBD_IMAGE_OPTION_FEATURES`, `RBD_FEATURE_*`); `None` = librbd default
    /// (for copies: the source's features).
    pub features: Option<u64>,
    /// Object size order (`RBD_IMAGE_OPTION_ORDER`); `None` = default/source.
    pub order: Option<u32>,
    /// Data pool (`RBD_IMAGE_OPTION_DATA_POOL`).
    pub data_pool: Option<String>,
    /// Clone format (`RBD_IMAGE_OPTION_CLONE_FORMAT`, only for [`IoCtx::clone_image`]): 2
    /// needs no protected parent snapshot; `None` = the cluster's `rbd_default_clone_format`.
    pub clone_format: Option<u32>,
}

/// Owner of an `rbd_image_options_t`.
struct RawOptions(sys::rbd_image_options_t);

impl Drop for RawOptions {
    fn drop(&mut self) {
        // SAFETY: created by rbd_image_options_create, destroyed once.
        unsafe { sys::rbd_image_options_destroy(self.0) };
    }
}

impl ImageOptions {
    fn to_raw(&self, op: &'static str, ctx: &dyn Fn() -> String) -> Result<RawOptions> {
        let mut raw: sys::rbd_image_options_t = ptr::null_mut();
        // SAFETY: valid out-pointer.
        unsafe { sys::rbd_image_options_create(&mut raw) };
        let opts = RawOptions(raw);
        let set_u64 = |key: c_int, v: u64| -> Result<()> {
            // SAFETY: opts.0 is a valid options handle.
            let ret = unsafe { sys::rbd_image_options_set_uint64(opts.0, key, v) };
            check(ret, "rbd_image_options_set_uint64", ctx).map(|_| ())
        };
        if let Some(f) = self.features {
            set_u64(sys::RBD_IMAGE_OPTION_FEATURES, f)?;
        }
        if let Some(o) = self.order {
            set_u64(sys::RBD_IMAGE_OPTION_ORDER, u64::from(o))?;
        }
        if let Some(f) = self.clone_format {
            set_u64(sys::RBD_IMAGE_OPTION_CLONE_FORMAT, u64::from(f))?;
        }
        if let Some(pool) = &self.data_pool {
            let c = cstring(pool, op, ctx)?;
            // SAFETY: valid handle and C string (copied by librbd).
            let ret = unsafe {
                sys::rbd_image_options_set_string(
                    opts.0,
                    sys::RBD_IMAGE_OPTION_DATA_POOL,
                    c.as_ptr(),
                )
            };
            check(ret, "rbd_image_options_set_string", ctx)?;
        }
        Ok(opts)
    }
}

/// An open RBD image (`rbd_image_t`), closed with `rbd_close` in `Drop`.
pub struct Image {
    raw: sys::rbd_image_t,
    // keeps rados_t alive as long as the image is open
    _cluster: Cluster,
    ctx: String,
    read_only: bool,
}

// SAFETY: librbd image handles are not tied to the opening thread; librbd serialises work
// on one image with internal locks (ImageCtx owner/image locks) and qemu drives one image
// from several threads. We still do not implement Sync: callers that share an image across
// threads wrap it in a Mutex. The cluster it needs stays alive through `_cluster`.
unsafe impl Send for Image {}

impl Drop for Image {
    fn drop(&mut self) {
        if self.raw.is_null() {
            return; // already closed by Image::close
        }
        // SAFETY: raw came from rbd_open* and is closed exactly once, here. The return
        // value (flush errors) cannot be reported from Drop; use Image::close for that.
        unsafe { sys::rbd_close(self.raw) };
    }
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("image", &self.ctx)
            .field("read_only", &self.read_only)
            .finish()
    }
}

impl Image {
    fn open_inner(io: &IoCtx, name: &str, snap: Option<&str>, read_only: bool) -> Result<Self> {
        let op = if read_only {
            "rbd_open_read_only"
        } else {
            "rbd_open"
        };
        let mut ctx = io.image_ctx(name);
        if let Some(s) = snap {
            ctx.push('@');
            ctx.push_str(s);
        }
        let name_c = cstring(name, op, || ctx.clone())?;
        let snap_c = snap.map(|s| cstring(s, op, || ctx.clone())).transpose()?;
        let snap_p = snap_c.as_ref().map_or(ptr::null(), |s| s.as_ptr());
        let mut raw: sys::rbd_image_t = ptr::null_mut();
        // SAFETY: valid ioctx (librbd duplicates it), C strings and out-pointer.
        let ret = unsafe {
            if read_only {
                sys::rbd_open_read_only(io.raw, name_c.as_ptr(), &mut raw, snap_p)
            } else {
                sys::rbd_open(io.raw, name_c.as_ptr(), &mut raw, snap_p)
            }
        };
        check(ret, op, || ctx.clone())?;
        Ok(Self {
            raw,
            _cluster: io.cluster.clone(),
            ctx,
            read_only,
        })
    }

    /// Opens an image read-write (`rbd_open`). Registers a watch on the header: the image
    /// appears in [`Image::watchers`] while open.
    pub fn open(io: &IoCtx, name: &str) -> Result<Self> {
        Self::open_inner(io, name, None, false)
    }

    /// Opens an image read-only, optionally at a snapshot (`rbd_open_read_only`). Writes
    /// and metadata changes fail with `ReadOnly`. No watch is registered.
    pub fn open_read_only(io: &IoCtx, name: &str, snap: Option<&str>) -> Result<Self> {
        Self::open_inner(io, name, snap, true)
    }

    /// Closes the image and reports errors (`rbd_close`); `Drop` does the same silently.
    pub fn close(mut self) -> Result<()> {
        let raw = std::mem::replace(&mut self.raw, ptr::null_mut());
        // SAFETY: raw is open; self.raw is now NULL so Drop will not close it again.
        let ret = unsafe { sys::rbd_close(raw) };
        check(ret, "rbd_close", || self.c())?;
        Ok(())
    }

    /// `cluster C, image pool/name@snap`: the context used in errors.
    pub fn context(&self) -> &str {
        &self.ctx
    }

    /// Whether it was opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    fn c(&self) -> String {
        self.ctx.clone()
    }

    /// Size and layout (`rbd_stat`).
    pub fn stat(&self) -> Result<ImageInfo> {
        // SAFETY: rbd_image_info_t is plain data; all-zero is a valid value.
        let mut info: sys::rbd_image_info_t = unsafe { std::mem::zeroed() };
        // SAFETY: info is writable and its size is passed.
        let ret = unsafe {
            sys::rbd_stat(
                self.raw,
                &mut info,
                std::mem::size_of::<sys::rbd_image_info_t>(),
            )
        };
        check(ret, "rbd_stat", || self.c())?;
        let prefix: Vec<u8> = info.block_name_prefix.iter().map(|&c| c as u8).collect();
        Ok(ImageInfo {
            size: info.size,
            obj_size: info.obj_size,
            num_objs: info.num_objs,
            order: info.order,
            block_name_prefix: from_buf(&prefix),
        })
    }

    /// Size in bytes (`rbd_get_size`).
    pub fn size(&self) -> Result<u64> {
        let mut v = 0u64;
        // SAFETY: valid image, valid out-pointer.
        let ret = unsafe { sys::rbd_get_size(self.raw, &mut v) };
        check(ret, "rbd_get_size", || self.c())?;
        Ok(v)
    }

    /// Grow the image to `size` bytes (`rbd_resize`); the bytes past the old end read as
    /// zeros. Refuses to shrink (`InvalidArgument`, nothing changed): shrinking discards data.
    pub fn grow(&self, size: u64) -> Result<()> {
        let now = self.size()?;
        if size < now {
            return Err(RbdError::new("rbd_resize", self.c(), libc::EINVAL)
                .with_detail(format!("refusing to shrink from {now} to {size} bytes")));
        }
        if size == now {
            return Ok(());
        }
        // SAFETY: valid image handle, owned by self for the call.
        let ret = unsafe { sys::rbd_resize(self.raw, size) };
        check(ret, "rbd_resize", || {
            format!("{}, to {size} bytes", self.c())
        })?;
        Ok(())
    }

    /// Feature bits, `RBD_FEATURE_*` (`rbd_get_features`).
    pub fn features(&self) -> Result<u64> {
        let mut v = 0u64;
        // SAFETY: valid image, valid out-pointer.
        let ret = unsafe { sys::rbd_get_features(self.raw, &mut v) };
        check(ret, "rbd_get_features", || self.c())?;
        Ok(v)
    }

    /// Enables or disables features (`rbd_update_features`). librbd enforces dependencies
    /// (`InvalidArgument`: e.g. journaling without exclusive-lock, disabling exclusive-lock
    /// while object-map is on) and refuses to re-enable deep-flatten.
    pub fn update_features(&self, features: u64, enabled: bool) -> Result<()> {
        // SAFETY: valid image.
        let ret = unsafe { sys::rbd_update_features(self.raw, features, u8::from(enabled)) };
        check(ret, "rbd_update_features", || {
            format!("{}, features {features:#x} -> {enabled}", self.ctx)
        })?;
        Ok(())
    }

    /// Image flags, `RBD_FLAG_*` (`rbd_get_flags`): object map / fast diff invalid.
    pub fn flags(&self) -> Result<u64> {
        let mut v = 0u64;
        // SAFETY: valid image, valid out-pointer.
        let ret = unsafe { sys::rbd_get_flags(self.raw, &mut v) };
        check(ret, "rbd_get_flags", || self.c())?;
        Ok(v)
    }

    /// Image id (`rbd_get_id`): names the header (`rbd_header.<id>`) and the journal
    /// (`journal.<id>`).
    pub fn id(&self) -> Result<String> {
        grow_string_fixed(
            "rbd_get_id",
            || self.c(),
            |buf, len| {
                // SAFETY: buf is writable for len bytes.
                unsafe { sys::rbd_get_id(self.raw, buf, len) }
            },
        )
    }

    /// Id of the pool holding the image's data objects (`rbd_get_data_pool_id`): the
    /// image's own pool unless it was created with a data pool.
    pub fn data_pool_id(&self) -> Result<i64> {
        // SAFETY: valid image handle.
        let ret = unsafe { sys::rbd_get_data_pool_id(self.raw) };
        if ret < 0 {
            let errno = i32::try_from(-ret).unwrap_or(libc::EIO);
            return Err(RbdError::new("rbd_get_data_pool_id", self.c(), errno));
        }
        Ok(ret)
    }

    /// Value of image metadata `key` (`rbd_metadata_get`), `None` when the key is not set.
    pub fn metadata_get(&self, key: &str) -> Result<Option<String>> {
        let key_c = cstring(key, "rbd_metadata_get", || self.c())?;
        let got = grow_string_with_len(
            "rbd_metadata_get",
            || format!("{}, metadata key {key}", self.c()),
            |buf, len| {
                // SAFETY: buf is writable for *len bytes; key_c is a valid C string.
                unsafe { sys::rbd_metadata_get(self.raw, key_c.as_ptr(), buf, len) }
            },
        );
        match got {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sets image metadata `key` to `value` (`rbd_metadata_set`), replacing any value.
    pub fn metadata_set(&self, key: &str, value: &str) -> Result<()> {
        let ctx = || format!("{}, metadata key {key}", self.c());
        let key_c = cstring(key, "rbd_metadata_set", ctx)?;
        let value_c = cstring(value, "rbd_metadata_set", ctx)?;
        // SAFETY: valid image handle and C strings (copied by librbd).
        let ret = unsafe { sys::rbd_metadata_set(self.raw, key_c.as_ptr(), value_c.as_ptr()) };
        check(ret, "rbd_metadata_set", ctx)?;
        Ok(())
    }

    /// Removes image metadata `key` (`rbd_metadata_remove`); `NotFound` when it is not set.
    pub fn metadata_remove(&self, key: &str) -> Result<()> {
        let ctx = || format!("{}, metadata key {key}", self.c());
        let key_c = cstring(key, "rbd_metadata_remove", ctx)?;
        // SAFETY: valid image handle and C string.
        let ret = unsafe { sys::rbd_metadata_remove(self.raw, key_c.as_ptr()) };
        check(ret, "rbd_metadata_remove", ctx)?;
        Ok(())
    }

    /// Data object prefix (`rbd_get_block_name_prefix`).
    pub fn block_name_prefix(&self) -> Result<String> {
        grow_string_fixed(
            "rbd_get_block_name_prefix",
            || self.c(),
            |buf, len| {
                // SAFETY: buf is writable for len bytes.
                unsafe { sys::rbd_get_block_name_prefix(self.raw, buf, len) }
            },
        )
    }

    /// Image name (`rbd_get_name`).
    pub fn name(&self) -> Result<String> {
        grow_string_with_len(
            "rbd_get_name",
            || self.c(),
            |buf, len| {
                // SAFETY: buf is writable for *len bytes.
                unsafe { sys::rbd_get_name(self.raw, buf, len) }
            },
        )
    }

    /// The parent of this clone (`rbd_get_parent`), `None` when it has none (not a clone,
    /// or flattened). For an image opened at a snapshot: the parent at that snapshot.
    pub fn parent(&self) -> Result<Option<ParentSpec>> {
        // SAFETY: both are plain data (integers, NULL pointers, false); all-zero is valid.
        let mut image: sys::rbd_linked_image_spec_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut snap: sys::rbd_snap_spec_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid image and out-pointers; on success librbd fills both with strings
        // it allocated, freed below by the matching cleanup calls.
        let ret = unsafe { sys::rbd_get_parent(self.raw, &mut image, &mut snap) };
        if ret == -libc::ENOENT {
            return Ok(None);
        }
        check(ret, "rbd_get_parent", || self.c())?;
        // SAFETY: librbd filled valid (or NULL) strings.
        let parent = unsafe {
            ParentSpec {
                pool_id: image.pool_id,
                pool: from_c(image.pool_name),
                namespace: from_c(image.pool_namespace),
                image_id: from_c(image.image_id),
                image_name: from_c(image.image_name),
                trash: image.trash,
                snap_id: snap.id,
                snap_name: from_c(snap.name),
                snap_namespace: SnapNamespaceType::from_raw(snap.namespace_type),
            }
        };
        // SAFETY: frees what rbd_get_parent allocated, once each.
        unsafe {
            sys::rbd_linked_image_spec_cleanup(&mut image);
            sys::rbd_snap_spec_cleanup(&mut snap);
        }
        Ok(Some(parent))
    }

    /// Copies every object still shared with the parent into this clone and detaches it
    /// (`rbd_flatten_with_progress`); afterwards [`Image::parent`] is `None`. Needs a
    /// read-write handle; `InvalidArgument` when the image is not a clone.
    ///
    /// `progress(done, total)` counts objects: librbd 16.2 calls it once per object as it
    /// issues its copy, with `done` from 0 to `total - 1`. Returning `false` (librbd sees the
    /// callback return non-zero) cancels: librbd stops issuing objects and the call fails
    /// with `Canceled` (as librbd 16.2 does here), leaving the image a clone; a panic
    /// inside the closure cancels the same way and is resumed after librbd returns.
    pub fn flatten(&self, mut progress: impl FnMut(u64, u64) -> bool + Send) -> Result<()> {
        let ret = run_with_progress(&mut progress, |cb, data| {
            // SAFETY: valid image; cb/data stay valid until the call returns.
            unsafe { sys::rbd_flatten_with_progress(self.raw, cb, data) }
        });
        check(ret, "rbd_flatten_with_progress", || self.c())?;
        Ok(())
    }

    /// Rebuild the object map from the objects that exist (`rbd_rebuild_object_map`), with
    /// progress; makes a map flagged invalid (after the feature is enabled) valid again.
    pub fn rebuild_object_map(
        &self,
        mut progress: impl FnMut(u64, u64) -> bool + Send,
    ) -> Result<()> {
        let ret = run_with_progress(&mut progress, |cb, data| {
            // SAFETY: valid image; cb/data stay valid until the call returns.
            unsafe { sys::rbd_rebuild_object_map(self.raw, cb, data) }
        });
        check(ret, "rbd_rebuild_object_map", || self.c())?;
        Ok(())
    }

    pub(crate) fn raw(&self) -> sys::rbd_image_t {
        self.raw
    }
}

/// librbd's version (`rbd_version`): (major, minor, extra), e.g. (1, 16, 0) for 16.2.
pub fn librbd_version() -> (i32, i32, i32) {
    let (mut a, mut b, mut c) = (0, 0, 0);
    // SAFETY: writes three ints through valid pointers.
    unsafe { sys::rbd_version(&mut a, &mut b, &mut c) };
    (a, b, c)
}

mod io;
mod locks_and_snapshots;
mod pool;
mod progress;

pub use io::PendingWrite;
use progress::run_with_progress;
