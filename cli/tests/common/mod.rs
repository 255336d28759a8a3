//! Helpers shared by the real-cluster tests of the `rbd-relay` binary: the `rbd` CLI as an
//! independent witness of what the tool did.

#![allow(dead_code)] // each test file uses what it needs

use std::process::Command;

use serde_json::Value;

/// Run `rbd ARGS` (bounded by `timeout 120`); panics with its stderr when it fails.
pub fn rbd(args: &[&str]) -> String {
    let out = Command::new("timeout")
        .arg("120")
        .arg("rbd")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rbd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether `rbd info` finds IMAGE (POOL/NAME) on the cluster.
pub fn exists(site: &str, image: &str) -> bool {
    Command::new("rbd")
        .args(["--cluster", site, "info", image])
        .output()
        .unwrap()
        .status
        .success()
}

/// sha256 of an image's whole content, as `rbd export | sha256sum` computes it.
pub fn sha(site: &str, image: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "rbd --cluster {site} export --no-progress {image} - | sha256sum"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)[..64].to_string()
}

/// `rbd info --format json`.
pub fn info(site: &str, image: &str) -> Value {
    serde_json::from_str(&rbd(&[
        "--cluster",
        site,
        "info",
        image,
        "--format",
        "json",
    ]))
    .unwrap()
}
