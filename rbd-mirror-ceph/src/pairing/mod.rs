//! Pairing two clusters for rbd-mirror on one pool (`rbd-relay pair`), and reading a pool's
//! mirroring health (`rbd-relay status`).
//!
//! Pairing is split in two: [`decide`] is pure (facts in, actions out) so the rules are unit
//! tested without Ceph; [`pair`] reads the facts from both clusters, decides and carries the
//! actions out through the safe wrapper ([`librbd`]). [`pool_status`] reads mode, peers,
//! rbd-mirror daemon health, the state summary and per-image status of one pool.

use librbd::{Cluster, IoCtx, RbdError};

mod apply;
mod decide;
mod status;

pub use apply::{pair, PairReport, PeerInfo};
pub use decide::{decide, direction_name, PairAction, PairDecision, PairFacts, Side, SideFacts};
pub use status::{
    daemon_connected, mirrored_pools, pool_status, state_word, wait_daemon_connected, DaemonInfo,
    DaemonStatus, ImageStatus, PoolStatus,
};

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
