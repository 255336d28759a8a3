#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

//! Cross-version migrations: `rbd-relay migrate volume` from site-a (the host's Ceph 16.2,
//! Pacific) into a site-b on a newer release (Reef from a trixie chroot, Tentacle from a sid
//! chroot; `testenv up --site-b-release R`), in both modes, checked with the `rbd` CLI: the
//! copy's sha256 equals the source's, the source is back to its original features with
//! mirroring off and no mirror snapshot, and the replica in site-b's mirrored pool is gone.
//!
//! Ignored in the ordinary real tier (its pair is Pacific on both sides): `make test-matrix`
//! runs them with `--ignored` and `RBD_RELAY_MATRIX_RELEASE` naming the release site-b must
//! run. Each test first asks site-b's daemons (`ceph versions`) and fails when they run
//! another release, so a Pacific pair can never pass for a newer one.

use std::process::{Command, Stdio};

mod common;
use common::{BIN, REPLICA_GONE_LIMIT};
use testenv::probe::{
    exists, image_with_data, info, mirror_snapshots, mirroring_off, rbd, sha, wait_gone,
};

/// The release site-b must run (`reef`, `tentacle`).
const EXPECTED_RELEASE_ENV: &str = "RBD_RELAY_MATRIX_RELEASE";

/// The environment, after checking that site-b runs the expected release.
fn cross_version_env() -> testenv::Env {
    let want = std::env::var(EXPECTED_RELEASE_ENV).unwrap_or_else(|_| {
        panic!("set {EXPECTED_RELEASE_ENV}=reef|tentacle (make test-matrix does) and bring site-b up on it")
    });
    let env = testenv::shared().expect("testenv");
    let a = testenv::running_release(&env.site_a().name).unwrap();
    let b = testenv::running_release(&env.site_b().name).unwrap();
    eprintln!("matrix: site-a runs {a}, site-b runs {b}");
    assert!(
        a.starts_with("pacific "),
        "site-a must run the host's Pacific, runs {a}"
    );
    assert!(
        b.starts_with(&format!("{want} ")) && !b.contains(','),
        "site-b must run only {want} (testenv up --site-b-release {want}), runs {b}"
    );
    env
}

/// An image in `volumes` on `site` with 24 MiB of non-repeating data.
fn make_image(site: &str, prefix: &str) -> (String, String) {
    let image = testenv::unique_name(prefix);
    let spec = format!("volumes/{image}");
    image_with_data(site, &spec, (24 << 20) + 777);
    (image, spec)
}

fn migrates_a_volume_into_the_newer_release(mode: &str) {
    let env = cross_version_env();
    let (a, b) = (env.site_a().name.clone(), env.site_b().name.clone());
    let (image, spec) = make_image(&a, &format!("matrix-{mode}"));
    let original = info(&a, &spec)["features"].clone();
    let want = sha(&a, &spec);
    let state = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "migrate", "volume", "--from", &a, "--to", &b, &spec, "--into", "cinder", "--mode",
            mode,
        ])
        .args(["--state-dir", state.path().to_str().unwrap()])
        .env_remove("OS_CLOUD")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    let copy = format!("cinder/{image}");
    assert_eq!(sha(&b, &copy), want, "the copy on {b} differs\n{text}");
    assert!(exists(&a, &spec), "the source must stay");
    assert_eq!(info(&a, &spec)["features"], original, "source features");
    assert!(mirroring_off(&a, &spec), "mirroring left on at the source");
    assert_eq!(mirror_snapshots(&a, &spec), 0, "mirror snapshots left");
    assert!(mirroring_off(&b, &copy), "mirroring left on at the copy");
    wait_gone(&b, &spec, REPLICA_GONE_LIMIT);
    eprintln!(
        "matrix {mode}: source features {original}, copy features {}",
        info(&b, &copy)["features"]
    );
    rbd(&a, &["rm", "--no-progress", &spec]);
    rbd(&b, &["rm", "--no-progress", &copy]);
}

#[test]
#[ignore = "cross-version: needs site-b on a newer release (make test-matrix)"]
fn a_journal_migration_into_a_newer_release_copies_every_byte_and_restores_the_source() {
    migrates_a_volume_into_the_newer_release("journal");
}

#[test]
#[ignore = "cross-version: needs site-b on a newer release (make test-matrix)"]
fn a_snapshot_migration_into_a_newer_release_copies_every_byte_and_restores_the_source() {
    migrates_a_volume_into_the_newer_release("snapshot");
}
