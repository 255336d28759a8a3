//! Glance (Image v2) adapter: register an RBD snapshot as an image by its rbd:// location.
