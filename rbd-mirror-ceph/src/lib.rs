//! rbd-relay's Ceph adapter: the real [`rbd_mirror_core::ops::CephOps`] over librbd and
//! librados (through the safe wrapper [`librbd`]), the copy that trails rbd-mirror, and the
//! pairing of two clusters for rbd-mirror.
//!
//! The engine (`rbd-mirror-core`) sees Ceph only through its `CephOps` trait, so its plans,
//! waits and recovery are unit-tested against a fake; this crate is the implementation that
//! runs against real clusters, and is tested only against them (`tests/*_real.rs`).

// Errors carry their context by value; they are rare and never on a hot path.
#![allow(clippy::result_large_err)]

pub mod pairing;
pub mod real;
mod trailing;
