//! The pure half of pairing: the facts read from both clusters in, the actions (or "already
//! paired") out, so the rules are unit-tested without Ceph.

use serde::Serialize;

use librbd::{MirrorMode, MirrorPeerSite, PeerDirection};

use super::{PairError, PairResult};

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

/// One change [`pair`](super::pair) makes.
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
