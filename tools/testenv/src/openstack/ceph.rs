//! What the clouds need from the Ceph pair: their pools, cephx users `client.cinder` and
//! `client.glance` per site, and a ceph.conf the services can use.
//!
//! The keyrings go where a real deployment has them (`/etc/ceph/SITE.client.cinder.keyring`),
//! with caps like a real deployment: Cinder `profile rbd` on its pool and read-only on the
//! site's image pool (for copy-on-write clones of images) and, on the destination, on the
//! mirrored volume pool (a volume rbd-relay cloned from a promoted replica reads its parent
//! there until it is flattened), Glance `profile rbd` on its pool.
//! glance_store (and Cinder unless told otherwise) connect with the cluster name `ceph`, so a
//! `keyring = /etc/ceph/$cluster.$name.keyring` line in the site's conf would point them at
//! `/etc/ceph/ceph.client.glance.keyring`. The services therefore get a copy of the site's conf
//! with `[client.cinder]`/`[client.glance]` sections naming their keyrings explicitly (and
//! keeping their client logs and admin sockets out of the Ceph side's directories).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::process;
use super::{CloudPlan, Error};
use crate::CephSite;

/// The keyring of `client.USER` on `site`.
pub(crate) fn keyring_path(site: &str, user: &str) -> PathBuf {
    PathBuf::from(format!("/etc/ceph/{site}.client.{user}.keyring"))
}

/// The conf the services of `site` use (a copy of the site's, plus client sections).
pub(crate) fn client_conf_path(root: &Path, site: &str) -> PathBuf {
    root.join("ceph").join(format!("{site}.conf"))
}

fn ceph(site: &CephSite) -> Command {
    let mut c = Command::new("ceph");
    c.arg("--conf")
        .arg(&site.conf)
        .arg("--cluster")
        .arg(&site.name)
        .arg("--keyring")
        .arg(&site.admin_keyring)
        .args(["--connect-timeout", "15"]);
    c
}

/// Fails unless the pools the cloud uses exist on its site.
pub(crate) fn check_pools(plan: &CloudPlan) -> Result<(), Error> {
    let out = process::run(ceph(&plan.site).args(["osd", "pool", "ls"]))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let have: Vec<&str> = text.lines().map(str::trim).collect();
    for pool in [&plan.volume_pool, &plan.image_pool, &plan.read_only_pool] {
        if !have.contains(&pool.as_str()) {
            return Err(Error::MissingPool {
                site: plan.site.name.clone(),
                pool: pool.clone(),
            });
        }
    }
    Ok(())
}

/// `ceph auth get-or-create` with the caps; if the user exists with other caps, set them.
fn ensure_user(site: &CephSite, user: &str, caps: &[(&str, String)]) -> Result<(), Error> {
    let keyring = keyring_path(&site.name, user);
    let entity = format!("client.{user}");
    let mut get = ceph(site);
    get.args(["auth", "get-or-create", &entity]);
    for (svc, cap) in caps {
        get.arg(svc).arg(cap);
    }
    get.arg("-o").arg(&keyring);
    if process::run(&mut get).is_err() {
        // Exists with different caps (EINVAL): update them, then export the key.
        let mut set = ceph(site);
        set.args(["auth", "caps", &entity]);
        for (svc, cap) in caps {
            set.arg(svc).arg(cap);
        }
        process::run(&mut set)?;
        process::run(
            ceph(site)
                .args(["auth", "get", &entity, "-o"])
                .arg(&keyring),
        )?;
    }
    Ok(())
}

/// Creates `client.cinder` and `client.glance` of the cloud's site and writes its client conf.
pub(crate) fn prepare(root: &Path, plan: &CloudPlan) -> Result<(), Error> {
    let site = &plan.site;
    let (vol, img, ro) = (&plan.volume_pool, &plan.image_pool, &plan.read_only_pool);
    std::thread::scope(|s| {
        let cinder = s.spawn(|| {
            ensure_user(
                site,
                "cinder",
                &[
                    ("mon", "profile rbd".to_string()),
                    (
                        "osd",
                        std::iter::once(format!("profile rbd pool={vol}"))
                            .chain(
                                std::iter::once(ro)
                                    .chain(&plan.read_also)
                                    .map(|p| format!("profile rbd-read-only pool={p}")),
                            )
                            .collect::<Vec<_>>()
                            .join(", "),
                    ),
                    ("mgr", format!("profile rbd pool={vol}")),
                ],
            )
        });
        let glance = s.spawn(|| {
            ensure_user(
                site,
                "glance",
                &[
                    ("mon", "profile rbd".to_string()),
                    ("osd", format!("profile rbd pool={img}")),
                    ("mgr", format!("profile rbd pool={img}")),
                ],
            )
        });
        for h in [cinder, glance] {
            h.join()
                .map_err(|_| Error::ThreadPanicked("ceph auth".into()))??;
        }
        Ok::<(), Error>(())
    })?;

    let conf = std::fs::read_to_string(&site.conf).map_err(|e| Error::io("read", &site.conf, e))?;
    let logs = root.join("logs");
    let mut text = format!(
        "# copy of {} for the OpenStack services of testenv, plus their client sections\n{conf}\n",
        site.conf.display()
    );
    for user in ["cinder", "glance"] {
        text.push_str(&format!(
            "\n[client.{user}]\nkeyring = {}\nlog_file = {}/ceph-{}-client.{user}.log\nadmin_socket =\n",
            keyring_path(&site.name, user).display(),
            logs.display(),
            site.name,
        ));
    }
    let path = client_conf_path(root, &site.name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
    }
    super::write(&path, &text)
}

/// Removes the keyrings `prepare` wrote (the cephx users stay: the same caps are re-used).
pub(crate) fn remove_keyrings(site: &str) -> Result<(), Error> {
    for user in ["cinder", "glance"] {
        process::remove_file(&keyring_path(site, user))?;
    }
    Ok(())
}
