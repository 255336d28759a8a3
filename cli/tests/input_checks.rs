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
            assert_eq!(o.status.code(), Some(2), "{command:?}: {stderr}");
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
        journal_payload_before: None,
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

/// Flags, values and combinations the binary refuses before it connects to anything: each
/// message names the flag or value and what to give instead, the exit code is non-zero (2
/// for bad usage), and the state directory is never created. The clusters and clouds named
/// do not exist, so a run that got as far as connecting would say so instead.
#[test]
fn wrong_flags_values_and_combinations_are_refused_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let empty_list = dir.path().join("empty-list");
    std::fs::write(&empty_list, "# only a comment\n\n").unwrap();
    let empty_list = empty_list.to_str().unwrap();
    let volume = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "migrate",
            "volume",
            "--from",
            "nowhere-a",
            "--to",
            "nowhere-b",
            "--into",
            "cinder",
        ]
        .map(String::from)
        .to_vec();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let mut cases: Vec<(Vec<String>, i32, &str)> = vec![
        (
            volume(&["volumes/a", "--idle-for", "5"]),
            2,
            "--idle-for 5 applies only to a live migration that cuts over (--live, with the default --handover clone); add --live, or drop --idle-for",
        ),
        (
            volume(&["volumes/a", "--live", "--handover", "copy", "--idle-for", "5"]),
            2,
            "--idle-for 5 applies only to a live migration",
        ),
        (
            volume(&["volumes/a", "--live", "--idle-for", "5000"]),
            2,
            "--idle-for 5000: give the seconds without users that start the cutover, 0 to 3600",
        ),
        (
            volume(&["volumes/a", "--stall-timeout", "0"]),
            2,
            "invalid value '0' for '--stall-timeout <SECONDS>': 0 is not in 1..",
        ),
        (
            volume(&["volumes/a", "--cinder-host", "site-b@ceph#ceph"]),
            2,
            "--cinder-host, --bootable and --no-grow apply to the adoption: add --adopt",
        ),
        (
            volume(&["volumes/a", "--bootable"]),
            2,
            "--cinder-host, --bootable and --no-grow apply to the adoption: add --adopt",
        ),
        (
            volume(&["volumes/a", "--adopt"]),
            2,
            "adopting needs the destination cloud: give --os-cloud (or set OS_CLOUD)",
        ),
        (
            volume(&["volumes/a", "--mode", "pool"]),
            2,
            "invalid value 'pool' for '--mode <MODE>'",
        ),
        (
            volume(&["volumes/a", "--handover", "move"]),
            2,
            "invalid value 'move' for '--handover <HANDOVER>'",
        ),
        (
            volume(&["volumes/a", "--on-daemon-down", "ignore"]),
            2,
            "invalid value 'ignore' for '--on-daemon-down <ON_DAEMON_DOWN>'",
        ),
        (
            volume(&["volumes/a@snap1"]),
            2,
            "invalid image 'volumes/a@snap1': give the image itself, not a snapshot (drop the @SNAP part)",
        ),
        (
            volume(&["volumes/.hidden"]),
            2,
            "invalid image 'volumes/.hidden': names starting with '.' are reserved by Ceph",
        ),
        (
            volume(&["volumes/a", "--name", "a/b"]),
            2,
            "--name: invalid image name 'a/b': contains '/'",
        ),
        (
            volume(&["volumes/a", "--from-id", "ad min"]),
            2,
            "--from: invalid client id 'ad min': contains ' '",
        ),
        (
            volume(&["--from-file", empty_list]),
            2,
            "lists no image; give one POOL/IMAGE per line",
        ),
        (
            volume(&["volumes/x", "images/x"]),
            2,
            "volumes/x and images/x would both be copied to nowhere-b:cinder/x; give one of them its own copy name",
        ),
        (
            [
                "migrate", "volume", "--from", "site-q", "--to", "site-q", "--into", "cinder",
                "volumes/a",
            ]
            .map(String::from)
            .to_vec(),
            2,
            "--from and --to are the same cluster ('site-q'); rbd-relay moves images between two clusters",
        ),
        (
            [
                "migrate",
                "bootable",
                "a1cf7486-c00e-40ba-8ffe-b903c9a7d35a",
                "--from",
                "nowhere-a",
                "--to",
                "nowhere-b",
                "--source-cloud",
                "nowhere",
                "--os-cloud",
                "nowhere-b",
                "--into",
                "images",
            ]
            .map(String::from)
            .to_vec(),
            1,
            "--into images is the mirrored Glance pool, where the replica itself appears; give the destination Glance's own pool",
        ),
        (
            ["register", "image", "glance/img", "--to", "nowhere-b"]
                .map(String::from)
                .to_vec(),
            1,
            "registering needs the destination cloud: give --os-cloud (or set OS_CLOUD)",
        ),
        (
            ["status", "volumes/a/b", "--cluster", "nowhere-a"]
                .map(String::from)
                .to_vec(),
            1,
            "'volumes/a/b': give POOL or POOL/IMAGE",
        ),
        (
            [
                "pair", "--from", "nowhere-a", "--to", "nowhere-b", "--pool", "vol umes",
            ]
            .map(String::from)
            .to_vec(),
            1,
            "--pool: invalid pool name 'vol umes'",
        ),
        (
            ["resume", "", "--stall-timeout", "10"]
                .map(String::from)
                .to_vec(),
            2,
            "invalid migration id '': it is empty",
        ),
    ];
    cases.push((
        ["cutover", "../x"].map(String::from).to_vec(),
        2,
        "invalid migration id '../x'",
    ));
    for (args, code, needle) in cases {
        let o = common::relay_command()
            .args(&args)
            .arg("--state-dir")
            .arg(&state)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("cannot connect"),
            "{args:?} connected: {stderr}"
        );
        assert!(!state.exists(), "{args:?} created the state directory");
    }
}
