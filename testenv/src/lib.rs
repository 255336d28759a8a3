//! Real local test environment: two Ceph clusters with rbd-mirror, optionally two OpenStack clouds.
