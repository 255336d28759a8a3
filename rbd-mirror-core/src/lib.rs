//! rbd-relay's library: move Ceph RBD images from one cluster to another through rbd-mirror.
//!
//! Features, mirroring, sync detection, copy, verification, cleanup and the plans that tie them
//! together. The orchestration code sees Ceph only through [`ceph::CephOps`]-style traits so it
//! can be unit-tested; [`rbd`] is the real implementation over librbd and librados.

pub mod rbd;
