//! An open image's exclusive lock, watchers and snapshots (`rbd_snap_*`): the calls that
//! read or change the image's state rather than its data.

use std::ptr;

use libc::c_int;
use librbd_sys as sys;

use super::{Image, SnapInfo, SnapNamespaceType, Watcher};

use crate::error::{check, cstring, from_c, Result};

impl Image {
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
}
