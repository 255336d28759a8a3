//! RBD images (`rbd_image_t`): open, properties, features, snapshots, watchers, I/O,
//! copies with progress, and pool-level image calls (list, create, remove).
//!
//! An [`Image`] owns its handle (closed in `Drop`) and keeps its cluster connection alive.
//! Progress callbacks run Rust closures inside `catch_unwind`: a panic never crosses the C
//! frame; it is stored and resumed once librbd has returned.

use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::Mutex;

use libc::{c_int, c_void};
use librbd_sys as sys;
use sha2::{Digest, Sha256};

use super::cluster::{Cluster, IoCtx};
use super::error::{
    check, check_len, cstring, from_buf, from_c, grow_string_fixed, grow_string_with_len, RbdError,
    Result,
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

impl IoCtx {
    /// Names and ids of the images in this pool/namespace (`rbd_list2`).
    pub fn list_images(&self) -> Result<Vec<ImageEntry>> {
        let mut cap: usize = 64;
        loop {
            let mut specs = vec![
                sys::rbd_image_spec_t {
                    id: ptr::null_mut(),
                    name: ptr::null_mut()
                };
                cap
            ];
            let mut n = cap;
            // SAFETY: specs has room for n entries; n is a valid pointer.
            let ret = unsafe { sys::rbd_list2(self.raw, specs.as_mut_ptr(), &mut n) };
            if ret == -libc::ERANGE {
                cap = n.max(cap * 2);
                continue;
            }
            check(ret, "rbd_list2", || self.ctx())?;
            let n = n.min(cap);
            let out = specs[..n]
                .iter()
                .map(|s| ImageEntry {
                    // SAFETY: librbd filled n entries with valid C strings.
                    id: unsafe { from_c(s.id) },
                    // SAFETY: as above.
                    name: unsafe { from_c(s.name) },
                })
                .collect();
            // SAFETY: frees the n strings librbd allocated, once.
            unsafe { sys::rbd_image_spec_list_cleanup(specs.as_mut_ptr(), n) };
            return Ok(out);
        }
    }

    /// Creates an image (`rbd_create4`).
    pub fn create_image(&self, name: &str, size: u64, opts: &ImageOptions) -> Result<()> {
        let ctx = || self.image_ctx(name);
        let name_c = cstring(name, "rbd_create4", ctx)?;
        let raw = opts.to_raw("rbd_create4", &ctx)?;
        // SAFETY: valid ioctx, name and options handle.
        let ret = unsafe { sys::rbd_create4(self.raw, name_c.as_ptr(), size, raw.0) };
        check(ret, "rbd_create4", ctx)?;
        Ok(())
    }

    /// Creates `child` in this pool as a clone of `parent_io`'s image `parent` at snapshot
    /// `snap` (`rbd_clone3`). The clone shares the parent's data until flattened
    /// ([`Image::flatten`]). With `clone_format: Some(2)` the snapshot need not be
    /// protected; format 1 (or a cluster defaulting to it) needs a protected snapshot
    /// (`InvalidArgument` otherwise). `opts.features` are the clone's features (they must
    /// include layering); `None` takes the parent's.
    pub fn clone_image(
        &self,
        parent_io: &IoCtx,
        parent: &str,
        snap: &str,
        child: &str,
        opts: &ImageOptions,
    ) -> Result<()> {
        let ctx = || {
            format!(
                "{}@{snap} -> {}",
                parent_io.image_ctx(parent),
                self.image_ctx(child)
            )
        };
        let parent_c = cstring(parent, "rbd_clone3", ctx)?;
        let snap_c = cstring(snap, "rbd_clone3", ctx)?;
        let child_c = cstring(child, "rbd_clone3", ctx)?;
        let raw = opts.to_raw("rbd_clone3", &ctx)?;
        // SAFETY: valid ioctxs (both outlive the call), C strings and options handle.
        let ret = unsafe {
            sys::rbd_clone3(
                parent_io.raw,
                parent_c.as_ptr(),
                snap_c.as_ptr(),
                self.raw,
                child_c.as_ptr(),
                raw.0,
            )
        };
        check(ret, "rbd_clone3", ctx)?;
        Ok(())
    }

    /// Removes an image with all its data (`rbd_remove`). Fails with `Busy` when it is open
    /// somewhere, `NotEmpty` when it has snapshots.
    pub fn remove_image(&self, name: &str) -> Result<()> {
        let ctx = || self.image_ctx(name);
        let name_c = cstring(name, "rbd_remove", ctx)?;
        // SAFETY: valid ioctx and name.
        let ret = unsafe { sys::rbd_remove(self.raw, name_c.as_ptr()) };
        check(ret, "rbd_remove", ctx)?;
        Ok(())
    }

    /// Moves image `name` to the pool's trash, removable at once (`rbd_trash_move`, delay
    /// 0). The image keeps its id in the trash, so [`IoCtx::trash_remove`] can then remove
    /// exactly that image by id. Fails with `Busy` while another client has it open.
    pub fn trash_move(&self, name: &str) -> Result<()> {
        let ctx = || self.image_ctx(name);
        let name_c = cstring(name, "rbd_trash_move", ctx)?;
        // SAFETY: valid ioctx and name.
        let ret = unsafe { sys::rbd_trash_move(self.raw, name_c.as_ptr(), 0) };
        check(ret, "rbd_trash_move", ctx)?;
        Ok(())
    }

    /// Removes the trashed image with id `id` and all its data (`rbd_trash_remove`, not
    /// forced: an image whose trash delay has not expired stays). `NotFound` when no image
    /// with this id is in the trash.
    pub fn trash_remove(&self, id: &str) -> Result<()> {
        let ctx = || format!("{}, trashed image id {id}", self.ctx());
        let id_c = cstring(id, "rbd_trash_remove", ctx)?;
        // SAFETY: valid ioctx and id.
        let ret = unsafe { sys::rbd_trash_remove(self.raw, id_c.as_ptr(), false) };
        check(ret, "rbd_trash_remove", ctx)?;
        Ok(())
    }

    /// Whether `name` exists: opens it read-only (`rbd_open_read_only`); `NotFound` is false.
    pub fn image_exists(&self, name: &str) -> Result<bool> {
        match Image::open_read_only(self, name, None) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Opens `name` read-write (`rbd_open`).
    pub fn open_image(&self, name: &str) -> Result<Image> {
        Image::open(self, name)
    }
}

/// Writes in flight on an image ([`Image::write_runs_async`]), owning their buffer. Dropping
/// it waits for them, so the buffer is never freed while librbd may still read it.
pub struct PendingWrite<'a> {
    _image: &'a Image,
    completions: Vec<sys::rbd_completion_t>,
    lens: Vec<usize>,
    buf: Vec<u8>,
    ctx: String,
}

impl PendingWrite<'_> {
    /// Waits for every write; returns the buffer, or the first failure.
    pub fn wait(mut self) -> Result<Vec<u8>> {
        let mut first_err = None;
        for (c, len) in std::mem::take(&mut self.completions)
            .into_iter()
            .zip(std::mem::take(&mut self.lens))
        {
            // SAFETY: a submitted completion, waited for and released exactly once here.
            let ret = unsafe {
                sys::rbd_aio_wait_for_complete(c);
                let ret = sys::rbd_aio_get_return_value(c);
                sys::rbd_aio_release(c);
                ret
            };
            if first_err.is_none() {
                if let Err(e) = check_len(ret, "rbd_aio_write", || self.ctx.clone()) {
                    first_err = Some(e);
                } else if ret > 0 && ret as usize != len {
                    first_err = Some(
                        RbdError::new("rbd_aio_write", self.ctx.clone(), libc::EIO)
                            .with_detail(format!("short write: {ret} of {len} bytes")),
                    );
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(std::mem::take(&mut self.buf)),
        }
    }
}

impl Drop for PendingWrite<'_> {
    fn drop(&mut self) {
        for c in self.completions.drain(..) {
            // SAFETY: a submitted completion not yet released; waiting first keeps the
            // buffer alive until librbd is done with it.
            unsafe {
                sys::rbd_aio_wait_for_complete(c);
                sys::rbd_aio_release(c);
            }
        }
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

/// Shared state of one progress-reporting call: the closure and a caught panic.
struct Progress<'a> {
    f: &'a mut (dyn FnMut(u64, u64) -> bool + Send),
    stop: bool,
    panic: Option<Box<dyn Any + Send + 'static>>,
}

/// `librbd_progress_fn_t` trampoline: calls the closure, never unwinds into C.
///
/// librbd calls it from the calling thread (`rbd_copy*`) or from its own worker threads
/// (`rbd_deep_copy*`, per copied object), so the state sits behind a mutex and the
/// closure must be `Send`.
unsafe extern "C" fn progress_trampoline(done: u64, total: u64, data: *mut c_void) -> c_int {
    // SAFETY: data is the `&Mutex<Progress>` passed by run_with_progress; it outlives the
    // whole C call, during which librbd may invoke this from any of its threads.
    let state = unsafe { &*data.cast_const().cast::<Mutex<Progress<'_>>>() };
    // A poisoned lock cannot happen (the closure runs inside catch_unwind); be lenient.
    let mut p = state.lock().unwrap_or_else(|e| e.into_inner());
    if p.stop {
        return -libc::ECANCELED;
    }
    let outcome = catch_unwind(AssertUnwindSafe(|| (p.f)(done, total)));
    match outcome {
        Ok(true) => 0,
        Ok(false) => {
            p.stop = true;
            -libc::ECANCELED
        }
        Err(panic) => {
            p.stop = true;
            p.panic = Some(panic);
            -libc::ECANCELED
        }
    }
}

/// Runs `call(cb, cbdata)` with the trampoline; resumes a panic from the closure after the
/// C call has returned.
fn run_with_progress(
    f: &mut (dyn FnMut(u64, u64) -> bool + Send),
    call: impl FnOnce(sys::librbd_progress_fn_t, *mut c_void) -> c_int,
) -> c_int {
    let state = Mutex::new(Progress {
        f,
        stop: false,
        panic: None,
    });
    let ret = call(
        Some(progress_trampoline),
        (&state as *const Mutex<Progress<'_>>).cast_mut().cast(),
    );
    let panic = state
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .panic
        .take();
    if let Some(panic) = panic {
        resume_unwind(panic);
    }
    ret
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

    // ---- locks and watchers ------------------------------------------------------------

    /// Clients watching the header, i.e. that have the image open (`rbd_watchers_list`).
    /// Includes this handle when opened read-write.
    pub fn watchers(&self) -> Result<Vec<Watcher>> {
        let mut cap: usize = 8;
        loop {
            let mut ws = vec![
                sys::rbd_image_watcher_t {
                    addr: ptr::null_mut(),
                    id: 0,
                    cookie: 0
                };
                cap
            ];
            let mut n = cap;
            // SAFETY: ws has room for n entries.
            let ret = unsafe { sys::rbd_watchers_list(self.raw, ws.as_mut_ptr(), &mut n) };
            if ret == -libc::ERANGE {
                cap = n.max(cap * 2);
                continue;
            }
            check(ret, "rbd_watchers_list", || self.c())?;
            let n = n.min(cap);
            let out = ws[..n]
                .iter()
                .map(|w| Watcher {
                    // SAFETY: librbd filled n entries with valid strings.
                    addr: unsafe { from_c(w.addr) },
                    id: w.id,
                    cookie: w.cookie,
                })
                .collect();
            // SAFETY: frees what librbd allocated for n entries, once.
            unsafe { sys::rbd_watchers_list_cleanup(ws.as_mut_ptr(), n) };
            return Ok(out);
        }
    }

    /// Acquires the exclusive lock (`rbd_lock_acquire`, `RBD_LOCK_MODE_EXCLUSIVE`).
    pub fn lock_acquire_exclusive(&self) -> Result<()> {
        // SAFETY: valid image.
        let ret = unsafe { sys::rbd_lock_acquire(self.raw, sys::RBD_LOCK_MODE_EXCLUSIVE) };
        check(ret, "rbd_lock_acquire", || self.c())?;
        Ok(())
    }

    /// Releases the exclusive lock (`rbd_lock_release`).
    pub fn lock_release(&self) -> Result<()> {
        // SAFETY: valid image.
        let ret = unsafe { sys::rbd_lock_release(self.raw) };
        check(ret, "rbd_lock_release", || self.c())?;
        Ok(())
    }

    /// Whether this handle owns the exclusive lock (`rbd_is_exclusive_lock_owner`).
    pub fn is_exclusive_lock_owner(&self) -> Result<bool> {
        let mut v: c_int = 0;
        // SAFETY: valid image, valid out-pointer.
        let ret = unsafe { sys::rbd_is_exclusive_lock_owner(self.raw, &mut v) };
        check(ret, "rbd_is_exclusive_lock_owner", || self.c())?;
        Ok(v != 0)
    }

    // ---- snapshots ---------------------------------------------------------------------

    /// All snapshots, any namespace (`rbd_snap_list` + `rbd_snap_get_namespace_type`).
    pub fn snapshots(&self) -> Result<Vec<SnapInfo>> {
        let mut cap: c_int = 16;
        let raw_list = loop {
            let empty = sys::rbd_snap_info_t {
                id: 0,
                size: 0,
                name: ptr::null(),
            };
            let mut snaps = vec![empty; usize::try_from(cap).unwrap_or(16)];
            let mut max = cap;
            // SAFETY: snaps has room for `max` entries (librbd needs count + 1).
            let ret = unsafe { sys::rbd_snap_list(self.raw, snaps.as_mut_ptr(), &mut max) };
            if ret == -libc::ERANGE {
                cap = max.max(cap * 2);
                continue;
            }
            let n = check(ret, "rbd_snap_list", || self.c())?;
            let n = usize::try_from(n).unwrap_or(0).min(snaps.len());
            let list: Vec<(u64, u64, String)> = snaps[..n]
                // SAFETY: librbd filled n entries with valid names.
                .iter()
                .map(|s| (s.id, s.size, unsafe { from_c(s.name) }))
                .collect();
            // SAFETY: frees the names librbd allocated (it stops at the NULL terminator).
            unsafe { sys::rbd_snap_list_end(snaps.as_mut_ptr()) };
            break list;
        };
        let mut out = Vec::with_capacity(raw_list.len());
        for (id, size, name) in raw_list {
            let mut ns: sys::rbd_snap_namespace_type_t = 0;
            // SAFETY: valid image, valid out-pointer.
            let ret = unsafe { sys::rbd_snap_get_namespace_type(self.raw, id, &mut ns) };
            check(ret, "rbd_snap_get_namespace_type", || {
                format!("{}@{name}", self.ctx)
            })?;
            out.push(SnapInfo {
                id,
                size,
                name,
                namespace: SnapNamespaceType::from_raw(ns),
            });
        }
        Ok(out)
    }

    fn snap_call(
        &self,
        op: &'static str,
        snap: &str,
        f: impl FnOnce(*const libc::c_char) -> c_int,
    ) -> Result<c_int> {
        let ctx = || format!("{}@{snap}", self.ctx);
        let c = cstring(snap, op, ctx)?;
        check(f(c.as_ptr()), op, ctx)
    }

    /// Creates a user snapshot and returns its id (`rbd_snap_create`, `rbd_snap_get_id`).
    pub fn snap_create(&self, snap: &str) -> Result<u64> {
        // SAFETY: valid image and C string.
        self.snap_call("rbd_snap_create", snap, |s| unsafe {
            sys::rbd_snap_create(self.raw, s)
        })?;
        self.snap_id(snap)
    }

    /// Id of the snapshot named `snap` (`rbd_snap_get_id`).
    pub fn snap_id(&self, snap: &str) -> Result<u64> {
        let mut id = 0u64;
        // SAFETY: valid image, C string, out-pointer.
        self.snap_call("rbd_snap_get_id", snap, |s| unsafe {
            sys::rbd_snap_get_id(self.raw, s, &mut id)
        })?;
        Ok(id)
    }

    /// Whether a snapshot named `snap` exists (`rbd_snap_exists`).
    pub fn snap_exists(&self, snap: &str) -> Result<bool> {
        let mut v = false;
        // SAFETY: valid image, C string, out-pointer.
        self.snap_call("rbd_snap_exists", snap, |s| unsafe {
            sys::rbd_snap_exists(self.raw, s, &mut v)
        })?;
        Ok(v)
    }

    /// Removes a snapshot (`rbd_snap_remove`); `Busy` if protected.
    pub fn snap_remove(&self, snap: &str) -> Result<()> {
        // SAFETY: valid image and C string.
        self.snap_call("rbd_snap_remove", snap, |s| unsafe {
            sys::rbd_snap_remove(self.raw, s)
        })?;
        Ok(())
    }

    /// Removes a snapshot by id, any namespace (`rbd_snap_remove_by_id`): the way to remove
    /// mirror snapshots.
    pub fn snap_remove_by_id(&self, snap_id: u64) -> Result<()> {
        // SAFETY: valid image.
        let ret = unsafe { sys::rbd_snap_remove_by_id(self.raw, snap_id) };
        check(ret, "rbd_snap_remove_by_id", || {
            format!("{}, snap id {snap_id}", self.ctx)
        })?;
        Ok(())
    }

    /// Protects a snapshot (`rbd_snap_protect`); `Busy` if already protected.
    pub fn snap_protect(&self, snap: &str) -> Result<()> {
        // SAFETY: valid image and C string.
        self.snap_call("rbd_snap_protect", snap, |s| unsafe {
            sys::rbd_snap_protect(self.raw, s)
        })?;
        Ok(())
    }

    /// Unprotects a snapshot (`rbd_snap_unprotect`); `InvalidArgument` if not protected,
    /// `Busy` if it has clones.
    pub fn snap_unprotect(&self, snap: &str) -> Result<()> {
        // SAFETY: valid image and C string.
        self.snap_call("rbd_snap_unprotect", snap, |s| unsafe {
            sys::rbd_snap_unprotect(self.raw, s)
        })?;
        Ok(())
    }

    /// Whether a snapshot is protected (`rbd_snap_is_protected`).
    pub fn snap_is_protected(&self, snap: &str) -> Result<bool> {
        let mut v: c_int = 0;
        // SAFETY: valid image, C string, out-pointer.
        self.snap_call("rbd_snap_is_protected", snap, |s| unsafe {
            sys::rbd_snap_is_protected(self.raw, s, &mut v)
        })?;
        Ok(v != 0)
    }

    /// Points reads at snapshot `snap`, or back at the head with `None` (`rbd_snap_set`).
    pub fn snap_set(&mut self, snap: Option<&str>) -> Result<()> {
        let ctx = || format!("{}@{}", self.ctx, snap.unwrap_or("<head>"));
        let c = snap.map(|s| cstring(s, "rbd_snap_set", ctx)).transpose()?;
        let p = c.as_ref().map_or(ptr::null(), |c| c.as_ptr());
        // SAFETY: valid image; p is NULL or a valid C string.
        let ret = unsafe { sys::rbd_snap_set(self.raw, p) };
        check(ret, "rbd_snap_set", ctx)?;
        Ok(())
    }

    /// Points reads at snapshot id `snap_id` (`rbd_snap_set_by_id`; `u64::MAX`
    /// (`CEPH_NOSNAP`) is the head). Works for mirror snapshots, which have no usable name.
    pub fn snap_set_by_id(&mut self, snap_id: u64) -> Result<()> {
        // SAFETY: valid image.
        let ret = unsafe { sys::rbd_snap_set_by_id(self.raw, snap_id) };
        check(ret, "rbd_snap_set_by_id", || {
            format!("{}, snap id {snap_id}", self.ctx)
        })?;
        Ok(())
    }

    // ---- I/O ---------------------------------------------------------------------------

    /// Reads up to `buf.len()` bytes at `offset` (`rbd_read`); returns the count read
    /// (short only at the end of the image). Holes read as zeros.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        // SAFETY: buf is writable for buf.len() bytes.
        let ret = unsafe { sys::rbd_read(self.raw, offset, buf.len(), buf.as_mut_ptr().cast()) };
        check_len(ret, "rbd_read", || format!("{}, offset {offset}", self.ctx))
    }

    /// Writes `buf` at `offset` (`rbd_write`); `ReadOnly` on a read-only handle.
    pub fn write_at(&self, offset: u64, buf: &[u8]) -> Result<usize> {
        // SAFETY: buf is readable for buf.len() bytes.
        let ret = unsafe { sys::rbd_write(self.raw, offset, buf.len(), buf.as_ptr().cast()) };
        check_len(ret, "rbd_write", || {
            format!("{}, offset {offset}", self.ctx)
        })
    }

    /// Starts writing the `runs` (byte ranges) of `buf`, each at `offset` plus its start,
    /// all at once (`rbd_aio_write`); the returned [`PendingWrite`] owns the buffer until
    /// the writes are done. A run outside `buf` is `InvalidArgument`.
    pub fn write_runs_async(
        &self,
        offset: u64,
        buf: Vec<u8>,
        runs: &[std::ops::Range<usize>],
    ) -> Result<PendingWrite<'_>> {
        let ctx = || format!("{}, offset {offset}", self.ctx);
        let mut pending = PendingWrite {
            _image: self,
            completions: Vec::with_capacity(runs.len()),
            lens: Vec::with_capacity(runs.len()),
            buf,
            ctx: ctx(),
        };
        for run in runs {
            let Some(data) = pending.buf.get(run.clone()) else {
                return Err(
                    RbdError::new("rbd_aio_write", ctx(), libc::EINVAL).with_detail(format!(
                        "run {run:?} outside a buffer of {}",
                        pending.buf.len()
                    )),
                );
            };
            let (ptr, len) = (data.as_ptr(), data.len());
            let mut c: sys::rbd_completion_t = ptr::null_mut();
            // SAFETY: valid out-pointer; no callback, so no Rust code runs on librbd's threads.
            let ret = unsafe { sys::rbd_aio_create_completion(ptr::null_mut(), None, &mut c) };
            check(ret, "rbd_aio_create_completion", ctx)?;
            // SAFETY: valid image and completion; `ptr..ptr+len` lies in `pending.buf`, a
            // heap buffer that is neither moved nor freed until every completion has been
            // waited for (PendingWrite::wait or Drop), and the image outlives `pending`.
            let ret = unsafe {
                sys::rbd_aio_write(self.raw, offset + run.start as u64, len, ptr.cast(), c)
            };
            if ret < 0 {
                // SAFETY: never submitted, so nothing will complete it: release it now.
                unsafe { sys::rbd_aio_release(c) };
                check(ret, "rbd_aio_write", ctx)?;
            }
            pending.completions.push(c);
            pending.lens.push(len);
        }
        Ok(pending)
    }

    /// Flushes cached writes (`rbd_flush`).
    pub fn flush(&self) -> Result<()> {
        // SAFETY: valid image.
        let ret = unsafe { sys::rbd_flush(self.raw) };
        check(ret, "rbd_flush", || self.c())?;
        Ok(())
    }

    /// SHA-256 of the whole image (head or the snapshot it is set to), read in object-size
    /// chunks with [`Image::read_at`]; holes count as zeros. Returns lowercase hex.
    pub fn sha256(&self) -> Result<String> {
        let size = self.size()?;
        self.sha256_range(0, size)
    }

    /// SHA-256 (hex) of `len` bytes from `offset`, read in object-size chunks. A range
    /// past the end of the image is `InvalidArgument`.
    pub fn sha256_range(&self, offset: u64, len: u64) -> Result<String> {
        let info = self.stat()?;
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= info.size)
            .ok_or_else(|| {
                RbdError::new("rbd_read", self.c(), libc::EINVAL)
                    .with_detail(format!("range {offset}+{len} exceeds size {}", info.size))
            })?;
        let chunk = usize::try_from(info.obj_size.clamp(4096, 64 << 20)).unwrap_or(4 << 20);
        let mut buf = vec![0u8; chunk];
        let mut hasher = Sha256::new();
        let mut pos = offset;
        while pos < end {
            let want = usize::try_from((end - pos).min(chunk as u64)).unwrap_or(chunk);
            let got = self.read_at(pos, &mut buf[..want])?;
            if got != want {
                return Err(RbdError::new("rbd_read", self.c(), libc::EIO)
                    .with_detail(format!("short read at {pos}: {got} of {want} bytes")));
            }
            hasher.update(&buf[..want]);
            pos += want as u64;
        }
        Ok(hex::encode(hasher.finalize()))
    }

    // ---- copies ------------------------------------------------------------------------

    /// Copies the image head (no snapshots) to a new image `dest_name` in `dest`
    /// (`rbd_copy_with_progress4`, sparse size 4 KiB: zero runs stay holes).
    ///
    /// `progress(done, total)` counts bytes (the last call is `(size, size)`). It is
    /// called from the thread making the call, while librbd works; a
    /// panic inside it is caught and resumed after librbd returns. Returning `false` asks
    /// to stop: the closure is not called again and librbd gets a non-zero return, but
    /// librbd 16.2 ignores progress return values, so the copy still runs to the end.
    pub fn copy_to(
        &self,
        dest: &IoCtx,
        dest_name: &str,
        opts: &ImageOptions,
        mut progress: impl FnMut(u64, u64) -> bool + Send,
    ) -> Result<()> {
        let ctx = || format!("{} -> {}", self.ctx, dest.image_ctx(dest_name));
        let name_c = cstring(dest_name, "rbd_copy_with_progress4", ctx)?;
        let raw_opts = opts.to_raw("rbd_copy_with_progress4", &ctx)?;
        let ret = run_with_progress(&mut progress, |cb, data| {
            // SAFETY: valid source image, destination ioctx, name and options; cb/data
            // stay valid until the call returns (data points into run_with_progress).
            unsafe {
                sys::rbd_copy_with_progress4(
                    self.raw,
                    dest.raw,
                    name_c.as_ptr(),
                    raw_opts.0,
                    cb,
                    data,
                    4096,
                )
            }
        });
        check(ret, "rbd_copy_with_progress4", ctx)?;
        Ok(())
    }

    /// Deep copy: the head and all snapshots, to a new image `dest_name` in `dest`
    /// (`rbd_deep_copy_with_progress`). Here `progress(done, total)` counts objects of the
    /// image (done == total at the end); panic and stop behave as in [`Image::copy_to`].
    pub fn deep_copy_to(
        &self,
        dest: &IoCtx,
        dest_name: &str,
        opts: &ImageOptions,
        mut progress: impl FnMut(u64, u64) -> bool + Send,
    ) -> Result<()> {
        let ctx = || format!("{} -> {}", self.ctx, dest.image_ctx(dest_name));
        let name_c = cstring(dest_name, "rbd_deep_copy_with_progress", ctx)?;
        let raw_opts = opts.to_raw("rbd_deep_copy_with_progress", &ctx)?;
        let ret = run_with_progress(&mut progress, |cb, data| {
            // SAFETY: as in copy_to.
            unsafe {
                sys::rbd_deep_copy_with_progress(
                    self.raw,
                    dest.raw,
                    name_c.as_ptr(),
                    raw_opts.0,
                    cb,
                    data,
                )
            }
        });
        check(ret, "rbd_deep_copy_with_progress", ctx)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trampoline_catches_panic_and_resumes_after_c_returns() {
        let mut calls = 0;
        let result = catch_unwind(AssertUnwindSafe(|| {
            let mut f = |_d: u64, _t: u64| -> bool {
                calls += 1;
                panic!("boom in progress");
            };
            run_with_progress(&mut f, |cb, data| {
                let cb = cb.unwrap();
                // Stands in for librbd: calls the callback twice, then returns 0.
                // SAFETY: data is the pointer run_with_progress passed in.
                let first = unsafe { cb(1, 10, data) };
                // SAFETY: as above.
                let second = unsafe { cb(2, 10, data) };
                assert_eq!((first, second), (-libc::ECANCELED, -libc::ECANCELED));
                0
            })
        }));
        let panic = result.unwrap_err();
        assert_eq!(panic.downcast_ref::<&str>(), Some(&"boom in progress"));
        assert_eq!(calls, 1, "closure must not run again after it panicked");
    }

    #[test]
    fn trampoline_stops_calling_after_false() {
        let mut seen = Vec::new();
        let mut f = |d: u64, _t: u64| {
            seen.push(d);
            d < 2
        };
        let ret = run_with_progress(&mut f, |cb, data| {
            let cb = cb.unwrap();
            let mut rets = Vec::new();
            for d in 1..=4 {
                // SAFETY: data is the pointer run_with_progress passed in.
                rets.push(unsafe { cb(d, 4, data) });
            }
            assert_eq!(
                rets,
                vec![0, -libc::ECANCELED, -libc::ECANCELED, -libc::ECANCELED]
            );
            7
        });
        assert_eq!(ret, 7);
        assert_eq!(seen, vec![1, 2]);
    }
}
