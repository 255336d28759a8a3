//! A pool's mirroring health (`rbd-relay status`): mode, peers, rbd-mirror daemon health, the
//! state summary and per-image status, and the wait for the daemon to connect after pairing.

use serde::Serialize;

use librbd::{Cluster, MirrorHealth, MirrorMode, MirrorStatusState, PeerDirection, RbdError};
use rbd_mirror_core::status::{Health, MirrorState, SiteStatus, SyncProgress};

use super::{ceph_err, open_pool, PairError, PairResult, PeerInfo};

/// Daemon health for a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DaemonStatus {
    /// Overall health: `ok`, `unknown`, `warning`, `error`; `not_needed` when no daemon runs
    /// and every peer is tx-only (this cluster only sends: the peer's rbd-mirror pulls).
    pub health: String,
    /// Daemons in the service map.
    pub daemons: Vec<DaemonInfo>,
}

/// One rbd-mirror daemon, for reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DaemonInfo {
    /// Client id.
    pub client_id: String,
    /// Host.
    pub hostname: String,
    /// Health for this pool.
    pub health: String,
    /// Whether it leads this pool.
    pub leader: bool,
    /// Problems it reports.
    pub callouts: Vec<String>,
}

fn health_name(h: MirrorHealth) -> String {
    match h {
        MirrorHealth::Ok => "ok",
        MirrorHealth::Unknown => "unknown",
        MirrorHealth::Warning => "warning",
        MirrorHealth::Error => "error",
    }
    .into()
}

/// The status of one mirrored image on the cluster asked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageStatus {
    /// Image name.
    pub name: String,
    /// Global image id.
    pub global_id: String,
    /// Whether the image is primary on this cluster.
    pub primary: bool,
    /// `up+replaying`, `down+stopped`... as `rbd mirror image status` prints it.
    pub state: String,
    /// The local site's status.
    pub site: SiteStatus,
    /// Health verdict.
    pub health: Health,
    /// Progress parsed from the description.
    pub progress: SyncProgress,
    /// Estimated seconds until caught up, when the status allows it
    /// ([`SyncProgress::eta_seconds`]).
    pub eta_seconds: Option<f64>,
}

/// Mirroring health of a pool on one cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolStatus {
    /// Cluster name.
    pub cluster: String,
    /// Pool.
    pub pool: String,
    /// Pool mirror mode: `disabled`, `image`, `pool`.
    pub mode: String,
    /// The cluster's mirror site name.
    pub site_name: String,
    /// Peers of the pool.
    pub peers: Vec<PeerInfo>,
    /// rbd-mirror daemon health for the pool.
    pub daemon: DaemonStatus,
    /// Images per state (`replaying: 3`).
    pub summary: Vec<(String, u32)>,
    /// Per-image status (all mirrored images, or the one asked for).
    pub images: Vec<ImageStatus>,
}

fn mirror_state(s: MirrorStatusState) -> MirrorState {
    match s {
        MirrorStatusState::Error => MirrorState::Error,
        MirrorStatusState::Syncing => MirrorState::Syncing,
        MirrorStatusState::StartingReplay => MirrorState::StartingReplay,
        MirrorStatusState::Replaying => MirrorState::Replaying,
        MirrorStatusState::StoppingReplay => MirrorState::StoppingReplay,
        MirrorStatusState::Stopped => MirrorState::Stopped,
        MirrorStatusState::Unknown | MirrorStatusState::Other(_) => MirrorState::Unknown,
    }
}

/// The state word as `rbd` prints it (`replaying`, `starting_replay`).
pub fn state_word(s: MirrorState) -> &'static str {
    match s {
        MirrorState::Unknown => "unknown",
        MirrorState::Error => "error",
        MirrorState::Syncing => "syncing",
        MirrorState::StartingReplay => "starting_replay",
        MirrorState::Replaying => "replaying",
        MirrorState::StoppingReplay => "stopping_replay",
        MirrorState::Stopped => "stopped",
    }
}

/// The pools of `cluster` with mirroring enabled (image or pool mode), sorted: what
/// `status` without a pool reports on. Pools listed by the monitor (`osd pool ls`).
pub fn mirrored_pools(cluster: &Cluster) -> PairResult<Vec<String>> {
    let all = || PairError::Ceph {
        what: "list the pools",
        cluster: cluster.name().to_string(),
        pool: "*".to_string(),
        source: RbdError::new("rados_mon_command", cluster.name().to_string(), libc::EIO)
            .with_detail("`osd pool ls` did not return a JSON list of names".to_string()),
    };
    let out = cluster
        .mon_command(r#"{"prefix": "osd pool ls", "format": "json"}"#)
        .map_err(ceph_err("list the pools", cluster, "*"))?;
    let names: Vec<String> = serde_json::from_str(&out).map_err(|_| all())?;
    let mut mirrored = Vec::new();
    for name in names {
        let Ok(io) = cluster.ioctx(&name) else {
            continue; // removed meanwhile
        };
        match io.mirror_mode() {
            Ok(MirrorMode::Disabled) => {}
            Ok(_) => mirrored.push(name),
            // not an RBD pool (no mirroring metadata to read), or no access: not listed
            Err(_) => {}
        }
    }
    mirrored.sort();
    Ok(mirrored)
}

/// Read the mirroring health of `pool` on `cluster`; with `image`, only that image (an
/// error when it is not mirror-enabled there).
pub fn pool_status(cluster: &Cluster, pool: &str, image: Option<&str>) -> PairResult<PoolStatus> {
    let io = open_pool(cluster, pool)?;
    let mode = io
        .mirror_mode()
        .map_err(ceph_err("read the pool mirror mode", cluster, pool))?;
    let site_name =
        cluster
            .mirror_site_name()
            .map_err(ceph_err("read the mirror site name", cluster, pool))?;
    let (peers, summary, list) = if mode == MirrorMode::Disabled {
        (Vec::new(), Vec::new(), Vec::new())
    } else {
        (
            io.mirror_peer_sites()
                .map_err(ceph_err("list the mirror peers", cluster, pool))?,
            io.mirror_image_status_summary().map_err(ceph_err(
                "read the image state summary",
                cluster,
                pool,
            ))?,
            io.mirror_image_global_status_list().map_err(ceph_err(
                "list the image mirror status",
                cluster,
                pool,
            ))?,
        )
    };
    let daemon = cluster.mirror_daemon_health(&io).map_err(ceph_err(
        "read the rbd-mirror daemon health",
        cluster,
        pool,
    ))?;
    let mut images: Vec<ImageStatus> = list
        .into_iter()
        .filter(|(_, g)| image.is_none_or(|i| g.name == i))
        .map(|(_, g)| {
            let site = match g.local() {
                Some(l) => SiteStatus {
                    up: l.up,
                    state: mirror_state(l.state),
                    description: l.description.clone(),
                    last_update: l.last_update,
                },
                None => SiteStatus {
                    up: false,
                    state: MirrorState::Unknown,
                    description: "status not found".into(),
                    last_update: 0,
                },
            };
            ImageStatus {
                name: g.name.clone(),
                global_id: g.info.global_id.clone(),
                primary: g.info.primary,
                state: format!(
                    "{}+{}",
                    if site.up { "up" } else { "down" },
                    state_word(site.state)
                ),
                health: site.health(),
                progress: site.progress(),
                eta_seconds: site.progress().eta_seconds(),
                site,
            }
        })
        .collect();
    images.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(i) = image {
        if images.is_empty() {
            return Err(PairError::NoImage {
                cluster: cluster.name().to_string(),
                pool: pool.to_string(),
                image: i.to_string(),
            });
        }
    }
    Ok(PoolStatus {
        cluster: cluster.name().to_string(),
        pool: pool.to_string(),
        mode: match mode {
            MirrorMode::Disabled => "disabled",
            MirrorMode::Image => "image",
            MirrorMode::Pool => "pool",
        }
        .into(),
        site_name,
        peers: peers.iter().map(PeerInfo::from).collect(),
        daemon: DaemonStatus {
            health: if daemon.daemons.is_empty()
                && !peers.is_empty()
                && peers.iter().all(|p| p.direction == PeerDirection::TxOnly)
            {
                "not_needed".into()
            } else {
                health_name(daemon.health)
            },
            daemons: daemon
                .daemons
                .iter()
                .map(|d| DaemonInfo {
                    client_id: d.client_id.clone(),
                    hostname: d.hostname.clone(),
                    health: health_name(d.health),
                    leader: d.leader,
                    callouts: d.callouts.clone(),
                })
                .collect(),
        },
        summary: summary
            .into_iter()
            .map(|(s, n)| (state_word(mirror_state(s)).to_string(), n))
            .collect(),
        images,
    })
}

/// Whether the rbd-mirror daemon of `to` has connected to `pool` on `from`: it then appears on
/// `from` as a sending peer (tx-only or rx-tx) under `to`'s site name with its mirror uuid.
/// Right after pairing this takes up to `rbd_mirror_pool_replayers_refresh_interval` (30 s by
/// default) on `to`.
pub fn daemon_connected(from: &Cluster, to: &Cluster, pool: &str) -> PairResult<bool> {
    let fio = open_pool(from, pool)?;
    let to_site = to
        .mirror_site_name()
        .map_err(ceph_err("read the mirror site name", to, pool))?;
    let peers = fio
        .mirror_peer_sites()
        .map_err(ceph_err("list the mirror peers", from, pool))?;
    Ok(peers.iter().any(|p| {
        p.site_name == to_site && p.direction != PeerDirection::RxOnly && !p.mirror_uuid.is_empty()
    }))
}

/// Polls [`daemon_connected`] once a second until it is true or `timeout` passed
/// ([`PairError::DaemonNotConnected`]); `on_wait` gets the time waited so far after each miss.
pub fn wait_daemon_connected(
    from: &Cluster,
    to: &Cluster,
    pool: &str,
    timeout: std::time::Duration,
    on_wait: &mut dyn FnMut(std::time::Duration),
) -> PairResult<std::time::Duration> {
    let start = std::time::Instant::now();
    loop {
        if daemon_connected(from, to, pool)? {
            return Ok(start.elapsed());
        }
        let waited = start.elapsed();
        if waited >= timeout {
            return Err(PairError::DaemonNotConnected {
                from: from.name().to_string(),
                to: to.name().to_string(),
                pool: pool.to_string(),
                seconds: waited.as_secs(),
            });
        }
        on_wait(waited);
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}
