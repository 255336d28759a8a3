//! The cluster half of pairing: read the facts from both clusters, [`decide`], and carry the
//! actions out through the safe wrapper.

use serde::Serialize;

use librbd::{Cluster, IoCtx, MirrorMode, MirrorPeerSite, PeerDirection};

use super::{
    ceph_err, decide, direction_name, open_pool, PairAction, PairDecision, PairFacts, PairResult,
    Side, SideFacts,
};

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
