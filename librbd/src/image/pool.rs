//! Pool-level image calls on an [`IoCtx`] (list, create, clone, remove, trash, open): what
//! a pool does with images, as opposed to what an open [`Image`] does.

use std::ptr;

use librbd_sys as sys;

use super::{Image, ImageEntry, ImageOptions};
use crate::cluster::IoCtx;
use crate::error::{check, cstring, from_c, Result};

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
