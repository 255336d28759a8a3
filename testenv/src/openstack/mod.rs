//! The two OpenStack clouds of the test environment (Keystone, Cinder, Glance, RabbitMQ).
//!
//! Interface used by the Ceph side of `testenv` (filled in by the OpenStack work):
//! `up(state_dir, sites) -> OpenStackInfo`, `down(state_dir)`, `status(state_dir)`.

use serde::{Deserialize, Serialize};

/// What the clouds look like to a client: written into the environment's state file and
/// printed by `testenv env`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct OpenStackInfo {}
