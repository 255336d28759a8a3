//! Per-role cephx users, so split-role bundles (`rbd-relay bundle`) can be run the way they
//! are meant to: the source script with a source-only key, the destination script with a
//! destination-only key. Created idempotently by `up` and by [`Env::role_users`].
//!
//! The caps are the narrowest found (by trying) that let the bundle scripts work:
//! `profile rbd` on the pools each role touches, plus, on the destination, the two mon
//! commands `rbd mirror pool status` needs to report the rbd-mirror daemon's health.
//! Changing a pool's mirror mode (`--enable-pool-mirroring`) was not tried with them.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cluster;
use crate::env::Env;
use crate::error::Result;
use crate::layout::{keyring_path, SITE_A, SITE_B};

/// One role's cephx user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleUser {
    /// The cluster (`site-a` or `site-b`).
    pub site: String,
    /// The cephx id without `client.` (`rbd --id ID`).
    pub id: String,
    /// Its keyring, at the default search path `/etc/ceph/SITE.client.ID.keyring`.
    pub keyring: PathBuf,
    /// Its caps, as (service, cap) pairs.
    pub caps: Vec<(String, String)>,
}

/// The users of the split roles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleUsers {
    /// Ceph source admin on site-a: `client.relay-src`.
    pub source_admin: RoleUser,
    /// Ceph destination admin on site-b: `client.relay-dst`.
    pub destination_admin: RoleUser,
    /// The OpenStack tenant admin's clouds.yaml entry (Keystone admin of the destination).
    pub tenant_admin_cloud: String,
}

/// cephx id of the source admin.
pub const SOURCE_ADMIN_ID: &str = "relay-src";
/// cephx id of the destination admin.
pub const DESTINATION_ADMIN_ID: &str = "relay-dst";

fn spec() -> (RoleUser, RoleUser) {
    let caps = |v: &[(&str, &str)]| {
        v.iter()
            .map(|(a, b)| ((*a).to_string(), (*b).to_string()))
            .collect::<Vec<_>>()
    };
    (
        RoleUser {
            site: SITE_A.into(),
            id: SOURCE_ADMIN_ID.into(),
            keyring: keyring_path(SITE_A, &format!("client.{SOURCE_ADMIN_ID}")),
            caps: caps(&[
                ("mon", "profile rbd"),
                ("osd", "profile rbd pool=volumes, profile rbd pool=images"),
                ("mgr", "profile rbd pool=volumes, profile rbd pool=images"),
            ]),
        },
        RoleUser {
            site: SITE_B.into(),
            id: DESTINATION_ADMIN_ID.into(),
            keyring: keyring_path(SITE_B, &format!("client.{DESTINATION_ADMIN_ID}")),
            caps: caps(&[
                (
                    "mon",
                    "profile rbd, allow command \"service dump\", allow command \"service status\"",
                ),
                (
                    "osd",
                    "profile rbd pool=volumes, profile rbd pool=images, profile rbd pool=cinder, profile rbd pool=glance",
                ),
                ("mgr", "profile rbd"),
            ]),
        },
    )
}

/// `ceph auth get-or-create` (or, when the user exists with other caps, `auth caps`), then
/// write the keyring. The keyring is replaced atomically (temp file, then rename) and only
/// when its content changed: scripts of a running test read it while another test calls
/// this, and `ceph -o FILE` truncates FILE first, which made such a read fail to log in.
fn ensure_user(u: &RoleUser) -> Result<()> {
    let limit = Duration::from_secs(60);
    let entity = format!("client.{}", u.id);
    let mut args: Vec<&str> = vec!["auth", "get-or-create", &entity];
    for (svc, cap) in &u.caps {
        args.push(svc);
        args.push(cap);
    }
    let keyring = match cluster::ceph(&u.site, &args, None, limit) {
        Ok(out) => out.stdout,
        Err(_) => {
            let mut set: Vec<&str> = vec!["auth", "caps", &entity];
            for (svc, cap) in &u.caps {
                set.push(svc);
                set.push(cap);
            }
            cluster::ceph(&u.site, &set, None, limit)?;
            cluster::ceph(&u.site, &["auth", "get", &entity], None, limit)?.stdout
        }
    };
    write_keyring(&u.keyring, &keyring)
}

/// Writes `content` to `path` (mode 0600, like the admin keyrings) by a rename of a temp
/// file beside it, unless `path` already holds exactly that.
fn write_keyring(path: &std::path::Path, content: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if std::fs::read_to_string(path).is_ok_and(|old| old == content) {
        // the mode too, as before (an older testenv wrote it with the default mode)
        return std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| crate::error::Error::io("chmod", path, e));
    }
    // unique per call: the threads of one test binary call this at once
    let tmp = path.with_extension(format!("tmp.{}.{}", std::process::id(), unique_suffix()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(content.as_bytes())?;
            f.sync_all()
        });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(crate::error::Error::io("write", &tmp, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| crate::error::Error::io("rename", path, e))
}

/// A number that differs between the calls of one process (threads of one test binary).
fn unique_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Whether both role users' keyrings exist.
pub(crate) fn keyrings_present() -> bool {
    let (a, b) = spec();
    a.keyring.exists() && b.keyring.exists()
}

/// Creates (or updates) both role users and writes their keyrings.
pub(crate) fn ensure() -> Result<RoleUsers> {
    let (source_admin, destination_admin) = spec();
    ensure_user(&source_admin)?;
    ensure_user(&destination_admin)?;
    Ok(RoleUsers {
        source_admin,
        destination_admin,
        tenant_admin_cloud: "site-b-admin".into(),
    })
}

impl Env {
    /// The per-role cephx users of split-role bundles (see the module docs), created or
    /// updated first (idempotent, about a second), so tests can rely on them even when the
    /// environment was started by an older `testenv up`.
    pub fn role_users(&self) -> Result<RoleUsers> {
        ensure()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::write_keyring;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn a_keyring_is_replaced_by_rename_only_when_it_changed_and_is_readable_by_root_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site-a.client.relay-src.keyring");
        write_keyring(&path, "[client.relay-src]\n\tkey = A\n").unwrap();
        let first = std::fs::metadata(&path).unwrap();
        assert_eq!(first.permissions().mode() & 0o777, 0o600);
        // the same content: the file a reader may hold open is left alone
        write_keyring(&path, "[client.relay-src]\n\tkey = A\n").unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), first.ino());
        // a reader holding the old file still reads it whole after a change
        let held = std::fs::File::open(&path).unwrap();
        write_keyring(&path, "[client.relay-src]\n\tkey = B\n").unwrap();
        assert_ne!(std::fs::metadata(&path).unwrap().ino(), first.ino());
        assert_eq!(
            std::io::read_to_string(held).unwrap(),
            "[client.relay-src]\n\tkey = A\n"
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "[client.relay-src]\n\tkey = B\n"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }
}
