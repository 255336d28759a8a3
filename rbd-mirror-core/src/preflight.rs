//! Read-only checks before a migration changes anything. Every problem names the thing and
//! the fix; all problems are collected so the operator sees them at once.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::cloud::{AdoptCheck, CloudErrorKind, CloudOps};
use crate::error::{Error, Result};
use crate::event::{Event, EventSink};
use crate::features::MirrorImageMode;
use crate::ops::{
    CephOps, ErrorKind, MirrorImageState, OpsError, PoolMirrorMode, SnapshotNamespace,
};
use crate::plan::{SourceFacts, VolumeMigration};

/// One reason the migration cannot start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// What is wrong.
    pub what: String,
    /// What to do about it.
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; {}", self.what, self.fix)
    }
}

fn problem(what: impl Into<String>, fix: impl Into<String>) -> Problem {
    Problem {
        what: what.into(),
        fix: fix.into(),
    }
}

fn access(cluster: &dyn CephOps, client: &str, e: &OpsError, target: &str) -> Problem {
    if e.kind == ErrorKind::PermissionDenied {
        problem(
            format!(
                "client.{client} may not read {target} on {} ({e})",
                cluster.name()
            ),
            "use a key with 'profile rbd' caps on the pool (or run as client.admin)",
        )
    } else {
        problem(
            format!("cannot read {target} on {}: {e}", cluster.name()),
            "check that the cluster is reachable and the conf/keyring are right",
        )
    }
}

/// Check everything read-only and return what must be recorded; warnings go to `events`.
///
/// Fails with [`Error::Preflight`] listing every problem; changes nothing.
pub fn check_volume(
    m: &VolumeMigration,
    src: &dyn CephOps,
    dst: &dyn CephOps,
    events: &dyn EventSink,
) -> Result<SourceFacts> {
    let mut problems = Vec::new();
    let sid = &m.source.client_id;
    let did = &m.destination.client_id;
    let pool = &m.image.pool;

    // --- source pool and image
    match src.pool_exists(pool) {
        Ok(true) => {}
        Ok(false) => {
            problems.push(problem(
                format!("pool '{pool}' does not exist on {}", src.name()),
                "check the pool name (rbd --cluster SRC pool ls... or ceph osd pool ls)",
            ));
            return Err(Error::Preflight(problems));
        }
        Err(e) => {
            return Err(Error::Preflight(vec![access(
                src,
                sid,
                &e,
                &format!("pool {pool}"),
            )]))
        }
    }
    match src.image_exists(&m.image) {
        Ok(true) => {}
        Ok(false) => {
            return Err(Error::Preflight(vec![problem(
                format!("image '{}' does not exist on {}", m.image, src.name()),
                format!(
                    "check the name with: rbd --cluster {} ls {pool}",
                    src.name()
                ),
            )]))
        }
        Err(e) => {
            return Err(Error::Preflight(vec![access(
                src,
                sid,
                &e,
                &format!("image {}", m.image),
            )]))
        }
    }
    let stat = src
        .stat(&m.image)
        .map_err(|e| Error::Preflight(vec![access(src, sid, &e, &m.image.to_string())]))?;

    // --- mirroring state of the image
    let mirror = src.mirror_image(&m.image);
    let mut mirroring_was_enabled = false;
    match &mirror {
        Ok(mi) if mi.state == MirrorImageState::Enabled && !mi.primary => problems.push(problem(
            format!(
                "{}:{} is not primary (it is a mirror replica)",
                src.name(),
                m.image
            ),
            "migrate from the cluster where the image is primary",
        )),
        Ok(mi) if mi.state == MirrorImageState::Enabled => {
            if mi.mode != Some(m.mode) {
                problems.push(problem(
                    format!(
                        "{}:{} is already mirrored in {} mode",
                        src.name(),
                        m.image,
                        mi.mode.map_or("unknown".to_string(), |x| x.to_string())
                    ),
                    "re-run with --mode matching the existing mirroring",
                ));
            }
            mirroring_was_enabled = true;
            events.emit(Event::Warning {
                message: format!(
                    "{}:{} was already mirrored before this migration: mirroring and features will be left as they are at cleanup",
                    src.name(),
                    m.image
                ),
            });
        }
        Ok(mi) if mi.state == MirrorImageState::Disabling => problems.push(problem(
            format!(
                "mirroring of {}:{} is still being disabled",
                src.name(),
                m.image
            ),
            "wait a few seconds and re-run",
        )),
        Ok(_) => {}
        Err(e) => problems.push(access(src, sid, e, &format!("mirror info of {}", m.image))),
    }

    // --- pool mirroring on both sides
    let mode_of = |c: &dyn CephOps, id: &str, problems: &mut Vec<Problem>| -> PoolMirrorMode {
        match c.pool_mirror_mode(pool) {
            Ok(mode) => mode,
            Err(e) if e.kind == ErrorKind::NotFound => {
                problems.push(problem(
                    format!("pool '{pool}' does not exist on {}", c.name()),
                    format!("create it on {} (ceph osd pool create {pool}; rbd pool init {pool}) and pair it", c.name()),
                ));
                PoolMirrorMode::Disabled
            }
            Err(e) => {
                problems.push(access(c, id, &e, &format!("mirror mode of pool {pool}")));
                PoolMirrorMode::Disabled
            }
        }
    };
    let source_pool_mode = mode_of(src, sid, &mut problems);
    let destination_pool_mode = mode_of(dst, did, &mut problems);
    for (c, mode) in [(src, source_pool_mode), (dst, destination_pool_mode)] {
        match mode {
            PoolMirrorMode::Disabled if !m.enable_pool_mirroring => problems.push(problem(
                format!("mirroring is off for pool '{pool}' on {}", c.name()),
                format!(
                    "re-run with --enable-pool-mirroring, or run: rbd --cluster {} mirror pool enable {pool} image",
                    c.name()
                ),
            )),
            PoolMirrorMode::Pool => problems.push(problem(
                format!("pool '{pool}' on {} mirrors in pool mode", c.name()),
                "switch it to image mode (rbd mirror pool enable POOL image) or migrate with pool-mode support in a later version",
            )),
            _ => {}
        }
    }

    // --- peer and daemon on the destination
    match dst.mirror_peers(pool) {
        Ok(peers) if peers.iter().any(|p| p.direction != "tx-only") => {
            check_daemon_connected(m, src, dst, events, &mut problems);
        }
        Ok(_) => problems.push(problem(
            format!("pool '{pool}' on {} has no mirror peer that receives from {}", dst.name(), src.name()),
            format!(
                "connect the peers: rbd-relay pair --from {s} --to {d} --pool {pool} (or: rbd --cluster {s} mirror pool peer bootstrap create --site-name {s} {pool} > token; rbd --cluster {d} mirror pool peer bootstrap import --site-name {d} --direction rx-only {pool} token)",
                s = src.name(),
                d = dst.name()
            ),
        )),
        Err(e) if e.kind == ErrorKind::NotFound => {}
        Err(e) => problems.push(access(dst, did, &e, &format!("mirror peers of pool {pool}"))),
    }
    match dst.mirror_daemons(pool) {
        Ok(d) if d.iter().any(|d| d.healthy) => {}
        Ok(d) => problems.push(problem(
            format!(
                "no healthy rbd-mirror daemon runs for {}{}",
                dst.name(),
                if d.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({})",
                        d.iter()
                            .map(|d| format!("{}: {}", d.id, d.detail))
                            .collect::<Vec<_>>()
                            .join("; ")
                    )
                }
            ),
            format!("start an rbd-mirror daemon for {} and re-run", dst.name()),
        )),
        Err(e) => problems.push(access(dst, did, &e, "the service map (rbd-mirror daemons)")),
    }

    // --- destination pool and names
    let target = m.copy_target();
    match dst.pool_exists(&m.into) {
        Ok(true) => match dst.image_exists(&target) {
            Ok(true) => problems.push(problem(
                format!("{}:{target} already exists", dst.name()),
                "choose another --name, or remove that image if it is a leftover",
            )),
            Ok(false) => {}
            Err(e) => problems.push(access(dst, did, &e, &target.to_string())),
        },
        Ok(false) => problems.push(problem(
            format!(
                "destination pool '{}' does not exist on {}",
                m.into,
                dst.name()
            ),
            "check --into (the destination Cinder or Glance pool)",
        )),
        Err(e) => problems.push(access(dst, did, &e, &format!("pool {}", m.into))),
    }
    if target == m.replica() {
        problems.push(problem(
            format!("the copy {target} would replace the replica itself"),
            "give --into a pool other than the mirrored pool, or another --name",
        ));
    }
    if !mirroring_was_enabled {
        match dst.image_exists(&m.replica()) {
            Ok(true) => problems.push(problem(
                format!(
                    "{}:{} already exists and is not a replica of this image",
                    dst.name(),
                    m.replica()
                ),
                "rbd-mirror cannot create the replica there; rename or remove that image",
            )),
            Ok(false) => {}
            Err(e) => problems.push(access(dst, did, &e, &m.replica().to_string())),
        }
    }

    // --- in use?
    let watchers = match src.watchers(&m.image) {
        Ok(w) => w,
        Err(e) => {
            problems.push(access(src, sid, &e, &format!("watchers of {}", m.image)));
            vec![]
        }
    };
    if !watchers.is_empty() {
        if m.allow_live {
            events.emit(Event::Warning {
                message: format!(
                    "{}:{} is in use by {}; migrating live as asked (--live): writes after the copy are not in the copy",
                    src.name(), m.image, watchers.join(", ")
                ),
            });
        } else {
            problems.push(problem(
                format!("{}:{} is in use (watchers: {})", src.name(), m.image, watchers.join(", ")),
                "stop the instance using it (or detach the volume), or accept a live migration with --live",
            ));
        }
    }

    // --- snapshots
    let snaps = match src.snapshots(&m.image) {
        Ok(s) => s,
        Err(e) => {
            problems.push(access(src, sid, &e, &format!("snapshots of {}", m.image)));
            vec![]
        }
    };
    let user: Vec<String> = snaps
        .iter()
        .filter(|s| s.namespace == SnapshotNamespace::User)
        .map(|s| s.name.clone())
        .collect();
    let mirror_snapshots_before = snaps
        .iter()
        .filter(|s| matches!(s.namespace, SnapshotNamespace::Mirror { .. }))
        .map(|s| s.id)
        .collect();
    if !user.is_empty() {
        events.emit(Event::Warning {
            message: format!(
                "{}:{} has {} snapshot(s) ({}): {} and make the sync slower; the destination copy holds the image's current content only",
                src.name(),
                m.image,
                user.len(),
                user.join(", "),
                if m.mode == MirrorImageMode::Journal { "they will be mirrored in journal mode" } else { "they will be mirrored" }
            ),
        });
    }

    if !problems.is_empty() {
        return Err(Error::Preflight(problems));
    }
    Ok(SourceFacts {
        features: stat.features,
        size: stat.size,
        object_size: stat.object_size,
        image_id: stat.id,
        snapshots: user,
        mirror_snapshots_before,
        source_pool_mode,
        destination_pool_mode,
        mirroring_was_enabled,
        watchers,
    })
}

/// The cloud part of preflight (read only), run before any Ceph change: the destination
/// cloud's credentials may adopt (admin), the host string or pool resolves to a Cinder backend,
/// and that backend stores into the pool the copy goes to.
///
/// Fails with [`Error::Preflight`]; a member's credentials are refused here with the cloud's
/// explanation, so nothing is left half done.
pub async fn check_adoption(
    m: &VolumeMigration,
    cloud: &dyn CloudOps,
) -> Result<Option<AdoptCheck>> {
    let Some(a) = &m.adopt else {
        return Ok(None);
    };
    let check = match cloud.check_adopt(&a.target).await {
        Ok(c) => c,
        Err(e) => {
            let fix = match e.kind {
                CloudErrorKind::Forbidden => format!(
                    "give --os-cloud a cloud entry whose credentials have the admin role in the destination cloud ('{}' has not), or let the destination's tenant admin run 'rbd-relay adopt volume' after the Ceph part",
                    cloud.name()
                ),
                CloudErrorKind::NotFound => {
                    "give --cinder-host as 'cinder get-pools' (or 'openstack volume backend pool list') prints it, or leave it out to find the backend of the --into pool".to_string()
                }
                _ => "check that the destination cloud is reachable and re-run".to_string(),
            };
            return Err(Error::Preflight(vec![Problem {
                what: format!("cloud {}: {e}", cloud.name()),
                fix,
            }]));
        }
    };
    if let Some(pool) = &check.pool {
        if pool != &m.into.pool {
            return Err(Error::Preflight(vec![problem(
                format!(
                    "Cinder host {} of cloud {} stores into Ceph pool '{pool}', but the copy goes to '{}'",
                    check.host,
                    cloud.name(),
                    m.into
                ),
                "give --into the pool of that backend, or the --cinder-host whose backend stores into --into",
            )]));
        }
    }
    Ok(Some(check))
}

/// The cloud part of preflight for a registration (read only): the destination cloud's
/// credentials may add rbd:// locations (admin). Fails with [`Error::Preflight`].
pub async fn check_registration(m: &VolumeMigration, cloud: &dyn CloudOps) -> Result<()> {
    if m.register.is_none() {
        return Ok(());
    }
    cloud.check_register().await.map_err(|e| {
        Error::Preflight(vec![Problem {
            what: format!("cloud {}: {e}", cloud.name()),
            fix: match e.kind {
                CloudErrorKind::Forbidden => format!(
                    "give --os-cloud a cloud entry whose credentials have the admin role in the destination cloud ('{}' has not), or let the destination's tenant admin run 'rbd-relay register image' after the Ceph part",
                    cloud.name()
                ),
                _ => "check that the destination cloud is reachable and re-run".to_string(),
            },
        }])
    })
}

/// Right after pairing, the destination's rbd-mirror has not yet connected to the source pool
/// (it does so on its next pool refresh, `rbd_mirror_pool_replayers_refresh_interval`, 30 s by
/// default). Until it has, the source lists no sending peer with a mirror uuid. A snapshot-mode
/// image enabled then gets a first mirror snapshot for no peer and is not replicated until the
/// next one, so that is refused; journal mode only starts later, so that is a warning.
fn check_daemon_connected(
    m: &VolumeMigration,
    src: &dyn CephOps,
    dst: &dyn CephOps,
    events: &dyn EventSink,
    problems: &mut Vec<Problem>,
) {
    let pool = &m.image.pool;
    let Ok(peers) = src.mirror_peers(pool) else {
        return; // access problems on the source are reported by its own checks
    };
    if peers
        .iter()
        .any(|p| p.direction != "rx-only" && !p.mirror_uuid.is_empty())
    {
        return;
    }
    let what = format!(
        "rbd-mirror on {d} has not connected to pool '{pool}' on {s} yet (no sending peer with a mirror uuid on {s})",
        s = src.name(),
        d = dst.name()
    );
    let fix = format!(
        "it connects within rbd_mirror_pool_replayers_refresh_interval (30 s by default) after pairing: wait for it with `rbd-relay pair --from {s} --to {d} --pool {pool}` (it waits by default) or re-run in a minute; check that rbd-mirror runs on {d}",
        s = src.name(),
        d = dst.name()
    );
    match m.mode {
        MirrorImageMode::Snapshot => problems.push(problem(what, fix)),
        MirrorImageMode::Journal => events.emit(Event::Warning {
            message: format!("{what}; replication starts once it has: {fix}"),
        }),
    }
}
