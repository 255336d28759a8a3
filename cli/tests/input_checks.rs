#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

//! Input the binary refuses before it connects to anything, with a message naming the input
//! and what to give instead, changing nothing: migration ids that are paths, Cinder volume
//! ids that are not UUIDs, image names outside the stated rule, and paths that are not UTF-8
//! where a UTF-8 string is needed. Needs no clusters and no clouds.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::process::Output;

mod common;

fn relay(args: &[&OsStr]) -> Output {
    common::relay_command().args(args).output().unwrap()
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

#[test]
fn migration_ids_that_are_paths_are_refused_and_nothing_outside_the_state_dir_is_touched() {
    let root = tempfile::tempdir().unwrap();
    let state = root.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let outside = root.path().join("outside.json");
    std::fs::write(&outside, b"{}").unwrap();
    let absolute = root.path().join("outside").display().to_string();
    for id in ["../outside", absolute.as_str()] {
        for command in [
            &["cleanup", id, "--forget"][..],
            &["resume", id],
            &["abort", id],
            &["delete-source", id, "--yes"],
        ] {
            let mut args: Vec<&OsStr> = command.iter().map(|a| os(a)).collect();
            args.extend([os("--state-dir"), state.as_os_str()]);
            let o = relay(&args);
            let stderr = String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success(), "{command:?}");
            assert!(
                stderr.contains(&format!("invalid migration id '{id}'"))
                    && stderr.contains("as `rbd-relay list` shows it"),
                "{command:?}: {stderr}"
            );
            assert_eq!(std::fs::read(&outside).unwrap(), b"{}", "{command:?}");
        }
    }
}

#[test]
fn volume_ids_that_are_not_uuids_are_refused_before_any_cloud_is_asked() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    for id in [
        "../../v3/auth/tokens",
        "vol-1",
        "a1cf7486-c00e-40ba-8ffe-b903c9a7d35a/x",
    ] {
        let cases: [&[&str]; 3] = [
            &["migrate", "volume", "--source-cloud", "nowhere", id],
            &[
                "migrate",
                "bootable",
                id,
                "--source-cloud",
                "nowhere",
                "--os-cloud",
                "nowhere-b",
            ],
            &[
                "bundle",
                "bootable",
                id,
                "--source-cloud",
                "nowhere",
                "--os-cloud",
                "nowhere-b",
                "--out",
                "/nonexistent/never-written",
            ],
        ];
        for case in cases {
            let mut args: Vec<&OsStr> = case.iter().map(|a| os(a)).collect();
            args.extend(
                [
                    "--from",
                    "nowhere-a",
                    "--to",
                    "nowhere-c",
                    "--into",
                    "glance",
                ]
                .map(os),
            );
            args.extend([os("--state-dir"), state.as_os_str()]);
            let o = relay(&args);
            let stderr = String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success(), "{case:?}");
            assert!(
                stderr.contains(&format!(
                    "invalid Cinder volume id '{id}': give the volume's UUID"
                )),
                "{case:?}: {stderr}"
            );
            // refused before a cloud is looked up (no clouds.yaml entry 'nowhere' exists)
            assert!(
                !stderr.to_lowercase().contains("clouds.yaml"),
                "{case:?}: {stderr}"
            );
            assert!(!state.exists(), "{case:?} wrote the state directory");
        }
    }
}

#[test]
fn the_image_name_message_states_the_rule_the_check_applies() {
    let o = relay(
        &[
            "migrate",
            "volume",
            "--from",
            "nowhere-a",
            "--to",
            "nowhere-b",
            "volumes/a b",
            "--into",
            "cinder",
        ]
        .map(os),
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("contains ' '; a name may hold any character but whitespace, control characters, '/' and '@'"),
        "{stderr}"
    );
    assert!(!stderr.contains("use letters, digits"), "{stderr}");
}

#[test]
fn a_non_utf8_out_is_refused_for_json_output_and_a_non_utf8_state_dir_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut raw = dir.path().as_os_str().as_bytes().to_vec();
    raw.extend_from_slice(b"/bundle-\xff");
    let out = OsStr::from_bytes(&raw);
    let mut args: Vec<&OsStr> = [
        "--output",
        "json",
        "bundle",
        "volume",
        "--from",
        "nowhere-a",
        "--to",
        "nowhere-b",
        "volumes/a",
        "--into",
        "cinder",
        "--out",
    ]
    .map(os)
    .to_vec();
    args.push(out);
    let o = relay(&args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the path is not valid UTF-8, and --output json prints it"),
        "{stderr}"
    );
    assert!(!std::path::Path::new(out).exists());

    // a state directory that is not UTF-8 is just a directory
    let mut raw = dir.path().as_os_str().as_bytes().to_vec();
    raw.extend_from_slice(b"/state-\xff");
    let state = OsStr::from_bytes(&raw);
    std::fs::create_dir(state).unwrap();
    for format in ["text", "json"] {
        let o = relay(&[
            os("--output"),
            os(format),
            os("list"),
            os("--state-dir"),
            state,
        ]);
        assert!(o.status.success(), "{format}: {o:?}");
    }
    // with a recorded migration in it, listed as JSON with U+FFFD for the invalid byte
    let recorded = recorded_state();
    std::fs::write(
        std::path::Path::new(state).join(format!("{}.json", recorded.plan.id)),
        serde_json::to_vec(&recorded).unwrap(),
    )
    .unwrap();
    let o = relay(&[
        os("--output"),
        os("json"),
        os("list"),
        os("--state-dir"),
        state,
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{o:?}");
    assert!(
        stdout.contains(&recorded.plan.id) && stdout.contains("state-\u{FFFD}"),
        "{stdout}"
    );
}

/// The state of a migration that has not started, as `migrate` records it.
fn recorded_state() -> rbd_mirror_core::state::RunState {
    use rbd_mirror_core::features::Features;
    use rbd_mirror_core::ops::PoolMirrorMode;
    use rbd_mirror_core::plan::{Plan, SourceFacts, VolumeMigration};
    use rbd_mirror_core::spec::{ClusterSpec, PoolSpec};
    let m = VolumeMigration::new(
        ClusterSpec::named("site-a").unwrap(),
        ClusterSpec::named("site-b").unwrap(),
        "volumes/vol1".parse().unwrap(),
        PoolSpec::new("cinder").unwrap(),
    );
    let facts = SourceFacts {
        features: Features::LAYERING,
        size: 1 << 20,
        object_size: 4 << 20,
        image_id: "abc".into(),
        snapshots: vec![],
        mirror_snapshots_before: vec![],
        source_pool_mode: PoolMirrorMode::Image,
        destination_pool_mode: PoolMirrorMode::Image,
        mirroring_was_enabled: false,
        watchers: vec![],
    };
    rbd_mirror_core::state::RunState::new(Plan::volume(m, facts))
}

#[test]
fn a_non_utf8_conf_path_is_refused_naming_the_flag() {
    let conf = OsStr::from_bytes(b"/etc/ceph/site-\xff.conf");
    let mut args: Vec<&OsStr> = ["migrate", "volume", "--from", "site-a", "--from-conf"]
        .map(os)
        .to_vec();
    args.push(conf);
    args.extend(
        [
            "--to",
            "site-b",
            "volumes/a",
            "--into",
            "cinder",
            "--dry-run",
        ]
        .map(os),
    );
    let o = relay(&args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        stderr.contains("--from")
            && stderr.contains("invalid conf file")
            && stderr.contains("is not valid UTF-8"),
        "{stderr}"
    );
}
