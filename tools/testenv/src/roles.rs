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
/// write the keyring.
fn ensure_user(u: &RoleUser) -> Result<()> {
    let limit = Duration::from_secs(60);
    let entity = format!("client.{}", u.id);
    // written beside the keyring, then renamed over it: every test calls this when it starts,
    // while the scripts of the tests already running read the keyring (`-o` truncates and
    // rewrites in place, and a script that read it meanwhile failed to authenticate)
    let tmp = u
        .keyring
        .with_extension(format!("tmp.{}.{}", std::process::id(), unique_suffix()));
    let keyring = tmp.display().to_string();
    let mut args: Vec<&str> = vec!["auth", "get-or-create", &entity];
    for (svc, cap) in &u.caps {
        args.push(svc);
        args.push(cap);
    }
    args.push("-o");
    args.push(&keyring);
    if cluster::ceph(&u.site, &args, None, limit).is_err() {
        let mut set: Vec<&str> = vec!["auth", "caps", &entity];
        for (svc, cap) in &u.caps {
            set.push(svc);
            set.push(cap);
        }
        cluster::ceph(&u.site, &set, None, limit)?;
        cluster::ceph(
            &u.site,
            &["auth", "get", &entity, "-o", &keyring],
            None,
            limit,
        )?;
    }
    // like the admin keyrings: readable by root only
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| crate::error::Error::io("chmod", &tmp, e))?;
    std::fs::rename(&tmp, &u.keyring).map_err(|e| crate::error::Error::io("rename", &tmp, e))?;
    Ok(())
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
