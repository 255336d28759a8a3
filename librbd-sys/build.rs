//! Links librbd (Debian's `librbd-dev`, Ceph 16.2 or newer).
//!
//! Debian ships no pkg-config file for librbd, so a failed probe falls back to `-lrbd`
//! (the declarations also carry `#[link(name = "rbd")]`).
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if pkg_config::Config::new()
        .atleast_version("16.2")
        .probe("librbd")
        .is_err()
    {
        println!("cargo:rustc-link-lib=rbd");
    }
}
