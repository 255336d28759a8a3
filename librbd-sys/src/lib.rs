//! Raw `extern "C"` declarations of the librbd C API we use (Ceph 16.2, `rbd/librbd.h`).
//!
//! Nothing but declarations lives here; the safe layer is `rbd_mirror_core::rbd`.
#![allow(non_camel_case_types, missing_docs)]
