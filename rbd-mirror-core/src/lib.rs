//! rbd-relay's engine: move Ceph RBD images from one cluster to another through rbd-mirror.
//!
//! Features, mirroring, sync detection, copy, verification, cleanup and the plans that tie them
//! together. The engine does no I/O of its own: it sees Ceph only through the
//! [`ops::CephOps`] trait and clouds only through [`cloud::CloudOps`], so plans, waits and
//! recovery are unit-tested against fakes. The real implementations are the adapter crates
//! `rbd-mirror-ceph` (librbd/librados through `librbd`) and `rbd-mirror-openstack` (Cinder
//! and Glance); `rbd-mirror-bundle` renders a plan as split-role shell scripts.
//!
//! The entry points are [`exec::migrate_volume`] (run or resume) and [`exec::plan_volume`]
//! (dry run); [`exec::migrate`] and [`exec::plan`] also take the clouds ([`cloud::CloudOps`])
//! for plans that end in the destination cloud (adopt as a Cinder volume). A recorded
//! migration is undone by [`abort::abort`], its source side finished by [`cleanup::cleanup`],
//! and several run at once by [`batch::migrate_batch`].

// Errors carry their context (step, cluster, image, the failing call) by value; they are
// rare and never on a hot path, so their size is not worth boxing every variant.
#![allow(clippy::result_large_err)]

pub mod abort;
pub mod batch;
pub mod cleanup;
pub mod cloud;
pub mod delete;
pub mod error;
pub mod event;
pub mod exec;
pub mod features;
pub mod ops;
pub mod plan;
pub mod preflight;
pub mod source_marker;
pub mod spec;
pub mod state;
pub mod status;
pub mod wait;

pub use error::{Error, Result};

#[cfg(test)]
mod abort_tests;
#[cfg(test)]
mod cancel_tests;
#[cfg(test)]
mod cutover_tests;
#[cfg(test)]
mod delete_tests;
#[cfg(test)]
mod exec_tests;
#[cfg(test)]
mod fake;
#[cfg(test)]
mod orphan_tests;
#[cfg(test)]
mod ownership_tests;
#[cfg(test)]
mod payload_tests;
