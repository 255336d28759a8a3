//! Cinder (Block Storage v3) adapter: adopt an RBD image as a volume, upload a volume to Glance.
