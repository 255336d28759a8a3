//! Thin OpenStack client shared by the Cinder and Glance adapters.
