//! Helpers shared by the real-cluster tests of the `rbd-relay` binary: the `rbd` CLI as an
//! independent witness of what the tool did.

#![allow(dead_code)] // each test file uses what it needs

use std::process::Command;
use std::time::{Duration, Instant};

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

/// How many mirror snapshots IMAGE has on SITE.
pub fn mirror_snapshots(site: &str, image: &str) -> usize {
    let snaps: Value = serde_json::from_str(&rbd(&[
        "--cluster",
        site,
        "snap",
        "ls",
        "--all",
        image,
        "--format",
        "json",
    ]))
    .unwrap();
    snaps
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["namespace"]["type"] == "mirror")
        .count()
}

/// Whether mirroring of IMAGE on SITE is off.
pub fn mirroring_off(site: &str, image: &str) -> bool {
    info(site, image)
        .get("mirroring")
        .is_none_or(|m| m["state"] == "disabled")
}

/// Wait (up to 90 s) until IMAGE is gone from SITE, e.g. a replica after mirroring is off.
pub fn wait_gone(site: &str, image: &str) {
    let t = Instant::now();
    while exists(site, image) {
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "{site}:{image} left behind"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
