//! Links librbd and librados (Debian's `librbd-dev` and `librados-dev`, Ceph 16.2 or newer).
//!
//! Debian ships no pkg-config file for librbd or librados, so a failed probe falls back to
//! `-lrbd` / `-lrados` (the declarations also carry `#[link(name = ...)]`).
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    for (pkg, lib) in [("librbd", "rbd"), ("librados", "rados")] {
        if pkg_config::Config::new()
            .atleast_version("16.2")
            .probe(pkg)
            .is_err()
        {
            println!("cargo:rustc-link-lib={lib}");
        }
    }
}
