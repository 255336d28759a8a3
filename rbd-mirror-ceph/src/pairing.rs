//! Pairing two clusters for rbd-mirror on one pool (`rbd-relay pair`), and reading a pool's
//! mirroring health (`rbd-relay status`).
//!
//! Pairing is split in two: [`decide`] is pure (facts in, actions out) so the rules are unit
//! tested without Ceph; [`pair`] reads the facts from both clusters, decides and carries the
//! actions out through the safe wrapper ([`librbd`]). [`pool_status`] reads mode, peers,
//! rbd-mirror daemon health, the state summary and per-image status of one pool.

use serde::Serialize;

use librbd::{
    Cluster, IoCtx, MirrorHealth, MirrorMode, MirrorPeerSite, MirrorStatusState, PeerDirection,
    RbdError,
};
use rbd_mirror_core::status::{Health, MirrorState, SiteStatus, SyncProgress};

/// A pairing or status failure, naming the cluster, the pool and the fix.
#[derive(Debug, thiserror::Error)]
pub enum PairError {
    /// The pool does not exist on a cluster.
    #[error("pool '{pool}' does not exist on cluster '{cluster}'; create it there first (ceph --cluster {cluster} osd pool create {pool} && rbd --cluster {cluster} pool init {pool})")]
    NoPool {
        /// Cluster name.
        cluster: String,
        /// Pool name.
        pool: String,
    },
    /// The pool is mirrored in pool mode; pairing only manages image mode.
    #[error("pool '{pool}' on cluster '{cluster}' is mirrored in pool mode; rbd-relay works with image mode only: switch it with `rbd --cluster {cluster} mirror pool enable {pool} image` (this changes which images are mirrored) or pair it by hand")]
    PoolMode {
        /// Cluster name.
        cluster: String,
        /// Pool name.
        pool: String,
    },
    /// The image is not mirrored in the pool.
    #[error("image '{image}' is not mirror-enabled in pool '{pool}' on cluster '{cluster}' (see `rbd --cluster {cluster} mirror pool status {pool} --verbose`)")]
    NoImage {
        /// Cluster name.
        cluster: String,
        /// Pool name.
        pool: String,
        /// Image name.
        image: String,
    },
    /// A Ceph call failed.
    #[error("{what} on cluster '{cluster}', pool '{pool}': {source}")]
    Ceph {
        /// What was being done.
        what: &'static str,
        /// Cluster name.
        cluster: String,
        /// Pool name.
        pool: String,
        /// The wrapper's error.
        #[source]
        source: RbdError,
    },
    /// The destination's rbd-mirror did not connect to the source pool in time.
    #[error("the peers are configured, but rbd-mirror on cluster '{to}' has not connected to pool '{pool}' on cluster '{from}' after {seconds} s; check that an rbd-mirror daemon runs on '{to}' (`rbd --cluster {to} mirror pool status {pool} --verbose`) and that it can reach '{from}', then re-run this command")]
    DaemonNotConnected {
        /// Source cluster.
        from: String,
        /// Destination cluster.
        to: String,
        /// Pool name.
        pool: String,
        /// How long it waited.
        seconds: u64,
    },
}

/// Result of this module.
pub type PairResult<T> = std::result::Result<T, PairError>;

/// One side of a pairing, as read before anything changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SideFacts {
    /// Cluster name (`--cluster`), used as site name when none is set.
    pub cluster: String,
    /// The cluster's mirror site name (librbd returns the fsid when none is set).
    pub site_name: String,
    /// The cluster's fsid.
    pub fsid: String,
    /// Pool mirror mode.
    pub mode: MirrorMode,
}

impl SideFacts {
    /// Whether a site name was set (librbd falls back to the fsid).
    pub fn site_name_set(&self) -> bool {
        !self.site_name.is_empty() && self.site_name != self.fsid
    }

    /// The site name this side will have after pairing.
    pub fn effective_site_name(&self) -> &str {
        if self.site_name_set() {
            &self.site_name
        } else {
            &self.cluster
        }
    }
}

/// What [`decide`] reads: both sides, the source pool's mirror uuid and the destination's peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairFacts {
    /// The sending side (`--from`).
    pub from: SideFacts,
    /// The receiving side (`--to`).
    pub to: SideFacts,
    /// The source pool's mirror uuid (empty while mirroring is disabled there).
    pub from_mirror_uuid: String,
    /// The destination pool's peers.
    pub to_peers: Vec<MirrorPeerSite>,
}

/// Which cluster an action is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// `--from`.
    From,
    /// `--to`.
    To,
}

/// One change [`pair`] makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum PairAction {
    /// Set the cluster's mirror site name.
    SetSiteName {
        /// Which cluster.
        side: Side,
        /// The new name.
        name: String,
    },
    /// Enable image-mode mirroring on the pool.
    EnableImageMode {
        /// Which cluster.
        side: Side,
    },
    /// Create a bootstrap token on `from` and import it on `to`.
    Bootstrap {
        /// Direction given to the import.
        direction: String,
    },
}

impl PairAction {
    /// One line for people.
    pub fn describe(&self, from: &str, to: &str, pool: &str) -> String {
        let name = |s: &Side| match s {
            Side::From => from,
            Side::To => to,
        };
        match self {
            Self::SetSiteName { side, name: n } => {
                format!("set the mirror site name of {} to '{n}'", name(side))
            }
            Self::EnableImageMode { side } => {
                format!("enable image-mode mirroring on {}:{pool}", name(side))
            }
            Self::Bootstrap { direction } => {
                format!("bootstrap a peer: token created on {from}, imported on {to} ({direction})")
            }
        }
    }
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairDecision {
    /// The destination already has a peer for the source's site; nothing to do.
    AlreadyPaired {
        /// The existing peer.
        peer: MirrorPeerSite,
    },
    /// Carry out these actions, in order.
    Actions(Vec<PairAction>),
}

/// The name of a peer direction as `rbd` prints it.
pub fn direction_name(d: PeerDirection) -> String {
    match d {
        PeerDirection::RxOnly => "rx-only".into(),
        PeerDirection::TxOnly => "tx-only".into(),
        PeerDirection::RxTx => "rx-tx".into(),
        PeerDirection::Unknown(v) => format!("unknown({v})"),
    }
}

/// Decide what pairing `facts.from` -> `facts.to` on `pool` needs. Refuses pools in pool
/// mode on either side; a peer on `to` whose site name or mirror uuid is the source's means
/// already paired.
pub fn decide(facts: &PairFacts, pool: &str, direction: PeerDirection) -> PairResult<PairDecision> {
    for side in [&facts.from, &facts.to] {
        if side.mode == MirrorMode::Pool {
            return Err(PairError::PoolMode {
                cluster: side.cluster.clone(),
                pool: pool.to_string(),
            });
        }
    }
    let from_site = facts.from.effective_site_name();
    let existing = facts.to_peers.iter().find(|p| {
        p.site_name == from_site
            || p.site_name == facts.from.site_name
            || (!facts.from_mirror_uuid.is_empty() && p.mirror_uuid == facts.from_mirror_uuid)
    });
    if let Some(peer) = existing {
        if facts.from.mode == MirrorMode::Image && facts.to.mode == MirrorMode::Image {
            return Ok(PairDecision::AlreadyPaired { peer: peer.clone() });
        }
    }
    let mut actions = Vec::new();
    for (side, f) in [(Side::From, &facts.from), (Side::To, &facts.to)] {
        if !f.site_name_set() {
            actions.push(PairAction::SetSiteName {
                side,
                name: f.cluster.clone(),
            });
        }
    }
    for (side, f) in [(Side::From, &facts.from), (Side::To, &facts.to)] {
        if f.mode == MirrorMode::Disabled {
            actions.push(PairAction::EnableImageMode { side });
        }
    }
    if existing.is_none() {
        actions.push(PairAction::Bootstrap {
            direction: direction_name(direction),
        });
    }
    Ok(PairDecision::Actions(actions))
}

/// What [`pair`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PairReport {
    /// Source cluster.
    pub from: String,
    /// Destination cluster.
    pub to: String,
    /// Pool.
    pub pool: String,
    /// True when the destination already had a peer for the source; nothing was changed.
    pub already_paired: bool,
    /// What was done, in order (empty when already paired).
    pub actions: Vec<PairAction>,
    /// The destination's peer for the source after pairing.
    pub peer: Option<PeerInfo>,
}

/// A mirror peer, for reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerInfo {
    /// Peer uuid.
    pub uuid: String,
    /// Site name.
    pub site_name: String,
    /// Direction (`rx-only`, `rx-tx`...).
    pub direction: String,
    /// Remote pool's mirror uuid.
    pub mirror_uuid: String,
    /// cephx client used to reach the peer.
    pub client_name: String,
}

impl From<&MirrorPeerSite> for PeerInfo {
    fn from(p: &MirrorPeerSite) -> Self {
        Self {
            uuid: p.uuid.clone(),
            site_name: p.site_name.clone(),
            direction: direction_name(p.direction),
            mirror_uuid: p.mirror_uuid.clone(),
            client_name: p.client_name.clone(),
        }
    }
}

fn open_pool(cluster: &Cluster, pool: &str) -> PairResult<IoCtx> {
    cluster.ioctx(pool).map_err(|e| {
        if e.is_not_found() {
            PairError::NoPool {
                cluster: cluster.name().to_string(),
                pool: pool.to_string(),
            }
        } else {
            ceph_err("open the pool", cluster, pool)(e)
        }
    })
}

fn ceph_err<'a>(
    what: &'static str,
    cluster: &'a Cluster,
    pool: &'a str,
) -> impl FnOnce(RbdError) -> PairError + 'a {
    move |source| PairError::Ceph {
        what,
        cluster: cluster.name().to_string(),
        pool: pool.to_string(),
        source,
    }
}

fn side_facts(cluster: &Cluster, io: &IoCtx, pool: &str) -> PairResult<SideFacts> {
    Ok(SideFacts {
        cluster: cluster.name().to_string(),
        site_name: cluster.mirror_site_name().map_err(ceph_err(
            "read the mirror site name",
            cluster,
            pool,
        ))?,
        fsid: cluster
            .fsid()
            .map_err(ceph_err("read the fsid", cluster, pool))?,
        mode: io
            .mirror_mode()
            .map_err(ceph_err("read the pool mirror mode", cluster, pool))?,
    })
}

fn read_facts(
    from: &Cluster,
    fio: &IoCtx,
    to: &Cluster,
    tio: &IoCtx,
    pool: &str,
) -> PairResult<PairFacts> {
    let from_facts = side_facts(from, fio, pool)?;
    let to_facts = side_facts(to, tio, pool)?;
    let from_mirror_uuid = if from_facts.mode == MirrorMode::Disabled {
        String::new()
    } else {
        fio.mirror_uuid()
            .map_err(ceph_err("read the pool mirror uuid", from, pool))?
    };
    let to_peers = if to_facts.mode == MirrorMode::Disabled {
        Vec::new()
    } else {
        tio.mirror_peer_sites()
            .map_err(ceph_err("list the mirror peers", to, pool))?
    };
    Ok(PairFacts {
        from: from_facts,
        to: to_facts,
        from_mirror_uuid,
        to_peers,
    })
}

/// Pair `from` -> `to` on `pool`: enable image-mode mirroring on both (site names default to
/// the cluster names), bootstrap a peer with `direction`. Idempotent: when `to` already has
/// a peer for `from`'s site nothing is changed. The bootstrap token (it holds a cephx key)
/// is passed from one call to the other and never logged.
pub fn pair(
    from: &Cluster,
    to: &Cluster,
    pool: &str,
    direction: PeerDirection,
) -> PairResult<PairReport> {
    let fio = open_pool(from, pool)?;
    let tio = open_pool(to, pool)?;
    let facts = read_facts(from, &fio, to, &tio, pool)?;
    let mut report = PairReport {
        from: from.name().to_string(),
        to: to.name().to_string(),
        pool: pool.to_string(),
        already_paired: false,
        actions: Vec::new(),
        peer: None,
    };
    let actions = match decide(&facts, pool, direction)? {
        PairDecision::AlreadyPaired { peer } => {
            report.already_paired = true;
            report.peer = Some(PeerInfo::from(&peer));
            return Ok(report);
        }
        PairDecision::Actions(a) => a,
    };
    for action in &actions {
        match action {
            PairAction::SetSiteName { side, name } => {
                let c = if *side == Side::From { from } else { to };
                c.set_mirror_site_name(name).map_err(ceph_err(
                    "set the mirror site name",
                    c,
                    pool,
                ))?;
            }
            PairAction::EnableImageMode { side } => {
                let (c, io) = if *side == Side::From {
                    (from, &fio)
                } else {
                    (to, &tio)
                };
                io.set_mirror_mode(MirrorMode::Image).map_err(ceph_err(
                    "enable image-mode mirroring",
                    c,
                    pool,
                ))?;
            }
            PairAction::Bootstrap { .. } => {
                let token = fio.mirror_peer_bootstrap_create().map_err(ceph_err(
                    "create a peer bootstrap token",
                    from,
                    pool,
                ))?;
                tio.mirror_peer_bootstrap_import(direction, &token)
                    .map_err(ceph_err("import the peer bootstrap token", to, pool))?;
            }
        }
        report.actions.push(action.clone());
    }
    let after = read_facts(from, &fio, to, &tio, pool)?;
    if let Ok(PairDecision::AlreadyPaired { peer }) = decide(&after, pool, direction) {
        report.peer = Some(PeerInfo::from(&peer));
    }
    Ok(report)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn side(cluster: &str, site: &str, mode: MirrorMode) -> SideFacts {
        SideFacts {
            cluster: cluster.into(),
            site_name: site.into(),
            fsid: format!("fsid-{cluster}"),
            mode,
        }
    }

    fn peer(site: &str, mirror_uuid: &str) -> MirrorPeerSite {
        MirrorPeerSite {
            uuid: "p1".into(),
            direction: PeerDirection::RxOnly,
            site_name: site.into(),
            mirror_uuid: mirror_uuid.into(),
            client_name: "client.rbd-mirror-peer".into(),
            last_seen: 0,
        }
    }

    #[test]
    fn already_paired_by_site_name_changes_nothing() {
        let f = PairFacts {
            from: side("site-a", "site-a", MirrorMode::Image),
            to: side("site-b", "site-b", MirrorMode::Image),
            from_mirror_uuid: "u-a".into(),
            to_peers: vec![peer("site-a", "")],
        };
        let d = decide(&f, "volumes", PeerDirection::RxOnly).unwrap();
        assert!(matches!(d, PairDecision::AlreadyPaired { .. }));
    }

    #[test]
    fn already_paired_by_mirror_uuid_under_another_site_name() {
        let f = PairFacts {
            from: side("site-a", "dc1", MirrorMode::Image),
            to: side("site-b", "site-b", MirrorMode::Image),
            from_mirror_uuid: "u-a".into(),
            to_peers: vec![peer("old-name", "u-a")],
        };
        let d = decide(&f, "volumes", PeerDirection::RxOnly).unwrap();
        assert!(matches!(d, PairDecision::AlreadyPaired { .. }));
    }

    #[test]
    fn fresh_pools_need_site_names_enable_and_bootstrap() {
        let f = PairFacts {
            from: side("site-a", "fsid-site-a", MirrorMode::Disabled),
            to: side("site-b", "fsid-site-b", MirrorMode::Disabled),
            from_mirror_uuid: String::new(),
            to_peers: vec![],
        };
        let d = decide(&f, "p", PeerDirection::RxOnly).unwrap();
        assert_eq!(
            d,
            PairDecision::Actions(vec![
                PairAction::SetSiteName {
                    side: Side::From,
                    name: "site-a".into()
                },
                PairAction::SetSiteName {
                    side: Side::To,
                    name: "site-b".into()
                },
                PairAction::EnableImageMode { side: Side::From },
                PairAction::EnableImageMode { side: Side::To },
                PairAction::Bootstrap {
                    direction: "rx-only".into()
                },
            ])
        );
    }

    #[test]
    fn enabled_pools_with_a_peer_for_another_site_still_bootstrap() {
        let f = PairFacts {
            from: side("site-a", "site-a", MirrorMode::Image),
            to: side("site-b", "site-b", MirrorMode::Image),
            from_mirror_uuid: "u-a".into(),
            to_peers: vec![peer("site-c", "u-c")],
        };
        let d = decide(&f, "p", PeerDirection::RxTx).unwrap();
        assert_eq!(
            d,
            PairDecision::Actions(vec![PairAction::Bootstrap {
                direction: "rx-tx".into()
            }])
        );
    }

    #[test]
    fn pool_mode_is_refused_on_either_side() {
        for (a, b, bad) in [
            (MirrorMode::Pool, MirrorMode::Image, "site-a"),
            (MirrorMode::Image, MirrorMode::Pool, "site-b"),
        ] {
            let f = PairFacts {
                from: side("site-a", "site-a", a),
                to: side("site-b", "site-b", b),
                from_mirror_uuid: "u-a".into(),
                to_peers: vec![peer("site-a", "u-a")],
            };
            let e = decide(&f, "p", PeerDirection::RxOnly).unwrap_err();
            let msg = e.to_string();
            assert!(
                matches!(&e, PairError::PoolMode { cluster, .. } if cluster == bad),
                "{msg}"
            );
            assert!(msg.contains("pool mode") && msg.contains("mirror pool enable p image"));
        }
    }
}
