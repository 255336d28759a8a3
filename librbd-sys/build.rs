//! Links librbd (Debian's `librbd-dev`, Ceph 16.2 or newer).
//!
//! Debian ships no pkg-config file for librbd, so a failed probe falls back to `-lrbd`.
fn main() {
    if pkg_config::Config::new().probe("librbd").is_err() {
        println!("cargo:rustc-link-lib=rbd");
    }
}
