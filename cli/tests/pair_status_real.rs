//! `rbd-relay pair` and `rbd-relay status` against the real Ceph pair: a fresh pool is
//! paired site-a -> site-b (image mode, rx-only peer), pairing again changes nothing, a
//! mirrored image shows up in `status` as up+replaying with a healthy daemon, and bad input
//! (a missing pool) exits non-zero naming the pool and the fix.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::BIN;
use testenv::probe::rbd;

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("120")
        .arg(cmd)
        .args(args)
        .output()
        .unwrap()
}

fn ok(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn relay(args: &[&str]) -> Output {
    run(BIN, args)
}

/// Removes the pool on both clusters when the test ends, also on failure.
struct Pools(String);

impl Drop for Pools {
    fn drop(&mut self) {
        for site in ["site-a", "site-b"] {
            let _ = run(
                "ceph",
                &[
                    "--cluster",
                    site,
                    "osd",
                    "pool",
                    "rm",
                    &self.0,
                    &self.0,
                    "--yes-i-really-really-mean-it",
                ],
            );
        }
    }
}

fn peers_on_b(pool: &str) -> Vec<Value> {
    let info: Value = serde_json::from_str(&rbd(
        "site-b",
        &["mirror", "pool", "info", pool, "--format", "json"],
    ))
    .unwrap();
    assert_eq!(info["mode"], "image", "{info}");
    info["peers"].as_array().cloned().unwrap_or_default()
}

#[test]
fn pair_is_idempotent_and_status_shows_the_replaying_image() {
    let _env = testenv::shared().expect("testenv");
    let pool = testenv::unique_name("pair");
    let _cleanup = Pools(pool.clone());
    for site in ["site-a", "site-b"] {
        ok(
            "ceph",
            &["--cluster", site, "osd", "pool", "create", &pool, "8", "8"],
        );
        rbd(site, &["pool", "init", &pool]);
    }

    let out = relay(&[
        "pair", "--from", "site-a", "--to", "site-b", "--pool", &pool,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("paired site-a:"), "{stdout}");
    assert!(
        stdout.contains("rbd-mirror on site-b is connected to site-a:"),
        "{stdout}"
    );
    let peers = peers_on_b(&pool);
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert_eq!(peers[0]["site_name"], "site-a", "{peers:?}");
    assert_eq!(peers[0]["direction"], "rx-only", "{peers:?}");

    // again: already paired, nothing changed
    let out = relay(&[
        "pair", "--from", "site-a", "--to", "site-b", "--pool", &pool,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("already paired"), "{stdout}");
    assert_eq!(peers_on_b(&pool).len(), 1);

    // JSON form of the idempotent run
    let out = relay(&[
        "pair", "--from", "site-a", "--to", "site-b", "--pool", &pool, "--output", "json",
    ]);
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["pair"]["already_paired"], true, "{lines:?}");
    assert_eq!(lines[1]["event"], "daemon_connected", "{lines:?}");

    // pair waited until site-b's rbd-mirror connected to site-a's pool: it shows there
    // as a sending peer with its mirror uuid
    let info: Value = serde_json::from_str(&rbd(
        "site-a",
        &["mirror", "pool", "info", &pool, "--format", "json"],
    ))
    .unwrap();
    let registered = info["peers"].as_array().is_some_and(|p| {
        p.iter()
            .any(|p| p["mirror_uuid"].as_str().is_some_and(|u| !u.is_empty()))
    });
    assert!(registered, "pair returned before site-b connected: {info}");

    // a mirrored image appears in status on site-b as up+replaying
    let img = format!("{pool}/img");
    rbd("site-a", &["create", "--size", "16M", &img]);
    rbd("site-a", &["mirror", "image", "enable", &img, "snapshot"]);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(180);
    let last = loop {
        let out = relay(&["status", &pool, "--cluster", "site-b", "--output", "json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let s = &v["status"];
        assert_eq!(s["mode"], "image", "{v}");
        assert_eq!(s["peers"][0]["site_name"], "site-a", "{v}");
        assert!(
            s["daemon"]["daemons"]
                .as_array()
                .is_some_and(|d| !d.is_empty()),
            "{v}"
        );
        let replaying = s["images"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["name"] == "img" && i["state"] == "up+replaying");
        if replaying && s["daemon"]["health"] == "ok" {
            break v;
        }
        assert!(Instant::now() < deadline, "never up+replaying: {v}");
        std::thread::sleep(Duration::from_secs(3));
    };
    assert!(
        last["status"]["images"][0]["progress"]["kind"].is_string(),
        "{last}"
    );

    // one image, text, bounded watch: two or more refreshes, exit 0
    let out = relay(&[
        "status",
        &img,
        "--cluster",
        "site-b",
        "--watch",
        "--watch-seconds",
        "3",
        "--output",
        "json",
    ]);
    assert!(out.status.success());
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("\"status\""))
        .count();
    assert!(lines >= 2, "{}", String::from_utf8_lossy(&out.stdout));
    let out = relay(&["status", &img, "--cluster", "site-b"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("img  up+replaying"),
        "{text}"
    );

    rbd("site-a", &["mirror", "image", "disable", &img]);
    rbd("site-a", &["rm", "--no-progress", &img]);
}

#[test]
fn missing_pool_is_refused_naming_it_and_the_fix() {
    let _env = testenv::shared().expect("testenv");
    let pool = testenv::unique_name("nopool");
    for args in [
        vec![
            "pair", "--from", "site-a", "--to", "site-b", "--pool", &pool,
        ],
        vec!["status", &pool, "--cluster", "site-b"],
    ] {
        let out = relay(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            err.contains(&format!("pool '{pool}' does not exist")) && err.contains("pool create"),
            "{err}"
        );
    }
    let out = relay(&["status", "volumes", "--cluster", "no-such-cluster"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("no-such-cluster") && err.contains("--conf"),
        "{err}"
    );
}

#[test]
fn watching_an_image_that_is_not_mirrored_yet_keeps_watching() {
    let _env = testenv::shared().expect("testenv");
    let img = format!("volumes/{}", testenv::unique_name("notyet"));
    // a migration's image is mirror-enabled only from its first seconds to its cleanup
    let out = relay(&[
        "status",
        &img,
        "--cluster",
        "site-b",
        "--watch",
        "--watch-seconds",
        "3",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("is not mirror-enabled (not yet, or no longer); still watching"),
        "{stderr}"
    );
    // without --watch it is an error naming the image
    let out = relay(&["status", &img, "--cluster", "site-b"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not mirror-enabled in pool 'volumes'")
    );
}

#[test]
fn status_without_a_pool_reports_every_mirrored_pool() {
    let _env = testenv::shared().expect("testenv");
    let out = relay(&["status", "--cluster", "site-b", "--output", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pools: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| v["status"]["pool"].as_str().unwrap().to_string())
        .collect();
    // the test environment mirrors volumes and images; cinder and glance are plain pools
    assert!(pools.contains(&"volumes".to_string()), "{pools:?}");
    assert!(pools.contains(&"images".to_string()), "{pools:?}");
    assert!(
        !pools.iter().any(|p| p == "cinder" || p == "glance"),
        "{pools:?}"
    );

    // on the source (rx-only pairing: it only has a tx-only peer) no daemon is needed
    let out = relay(&[
        "status",
        "volumes",
        "--cluster",
        "site-a",
        "--output",
        "json",
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"]["daemon"]["health"], "not_needed", "{v}");
}
