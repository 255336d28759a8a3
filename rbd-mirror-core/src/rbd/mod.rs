//! Safe wrapper over librbd (`librbd-sys`) and librados (the `ceph` crate).
//!
//! The only place in the library that touches raw handles: every handle is owned by a type
//! here whose `Drop` frees it, and no raw pointer leaves this module.
#![allow(unsafe_code)]
