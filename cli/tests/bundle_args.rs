#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

//! `bundle` refuses the `migrate` options that have no meaning for one image's scripts, as
//! bad usage (exit 2), before it connects to anything or writes the output directory.
//! Needs no clusters.

use std::process::Command;

#[test]
fn migrate_only_options_are_bad_usage_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bundle");
    let cases: [(&[&str], &str); 5] = [
        (
            &["volumes/a", "volumes/b"],
            "a bundle moves one image, 2 were given",
        ),
        (
            &["volumes/a", "--parallel", "2"],
            "--parallel does not apply",
        ),
        (
            &["volumes/a", "--stall-timeout", "5"],
            "RBD_RELAY_WAIT_TIMEOUT",
        ),
        (&["volumes/a", "--dry-run"], "never changes anything"),
        (
            &["volumes/a", "--live", "--handover", "copy"],
            "drop --handover copy",
        ),
    ];
    for (extra, needle) in cases {
        let o = Command::new(env!("CARGO_BIN_EXE_rbd-relay"))
            .args([
                "bundle",
                "volume",
                "--from",
                "nowhere-a",
                "--to",
                "nowhere-b",
            ])
            .args(["--into", "cinder", "--out"])
            .arg(&out)
            .args(extra)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(stderr.contains(needle), "{extra:?}: {stderr}");
        assert!(!out.exists(), "{extra:?} wrote {}", out.display());
    }
}
