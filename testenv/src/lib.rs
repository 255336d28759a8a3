//! Real local test environment for rbd-relay: two Ceph clusters (`site-a` the source,
//! `site-b` the destination) with an rbd-mirror daemon, and optionally two OpenStack clouds
//! (Keystone, Cinder, Glance) on top of them.
//!
//! Everything runs on loopback as real daemons from Debian's packages; nothing is mocked.
//! Tests share one environment per machine (started once, guarded by a file lock) and use
//! [`unique_name`] so they can run side by side.

pub mod openstack;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One Ceph cluster of the pair, as a client sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CephSite {
    /// Cluster name (`site-a` or `site-b`): `rbd --cluster NAME` finds its conf.
    pub name: String,
    /// Path of the cluster's ceph.conf (`/etc/ceph/NAME.conf`).
    pub conf: PathBuf,
    /// Path of the `client.admin` keyring.
    pub admin_keyring: PathBuf,
    /// Cluster fsid.
    pub fsid: String,
}
