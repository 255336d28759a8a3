//! The completion decisions written in shell (`sh/completion.sh`) against their Rust twins in
//! `rbd_mirror_core::wait`, on the `rbd` outputs recorded in `rbd-mirror-core/tests/data` (and
//! one recorded here) and on variants of them: on every sample the shell decides what the Rust
//! decides. Each sample runs under `sh` and `bash`.
//!
//! The Rust twins take typed values that librbd decodes from the journal header object and
//! the snapshot list; here the same values are read from the recorded JSON (the test's own
//! reading, independent of the awk in the shell functions).

use rbd_mirror_core::ops::{
    JournalPeer, JournalPosition, JournalPositions, SnapshotInfo, SnapshotNamespace,
};
use rbd_mirror_core::wait::{
    journal_completion, newest_primary_mirror_snapshot, snapshot_completion, Completion,
};
use serde_json::Value;

use crate::render::{JOURNAL_COMPLETION, SNAPSHOT_REPLICA_COMPLETION, SNAPSHOT_SOURCE_COMPLETION};
use crate::template::{section, CEPH, COMMON};

/// `rbd journal status --format json` of a journal-mode image with its rbd-mirror peer
/// registered and nothing written yet (Ceph 16.2), as the test environment printed it.
const JOURNAL_STATUS_EMPTY: &str = r#"{"minimum_set":0,"active_set":0,"registered_clients":[{"id":"","data":"00000000  02 01 0d 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|\n00000010  00 00 00                                          |...|\n00000013\n","commit_position":{"object_positions":[]},"state":"connected"},{"id":"1747830b-bdf3-4c68-844e-e0018dae6d02","data":"00000000  02 01 38 00 00 00 01 00  00 00 0c 00 00 00 31 30  |..8...........10|\n00000010  31 63 37 65 37 31 33 36  34 37 01 00 00 00 02 00  |1c7e713647......|\n00000020  00 00 00 00 00 00 00 00  00 00 01 00 00 00 06 00  |................|\n00000030  00 00 00 00 00 00 06 00  00 00 00 00 00 00        |..............|\n0000003e\n","commit_position":{"object_positions":[]},"state":"connected"}]}"#;

/// A file of `rbd-mirror-core/tests/data`.
fn recorded(name: &str) -> String {
    let path = format!(
        "{}/../rbd-mirror-core/tests/data/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Replaces the one occurrence of `from` in `text` (a variant of a recorded sample).
fn edit(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "{from:?} in {text}");
    text.replacen(from, to, 1)
}

/// Runs `command` with `args` and `stdin` under `shell`, after the functions the scripts have
/// (common, Ceph, the completion decisions); returns its stdout.
fn run(shell: &str, command: &str, args: &[&str], stdin: &str) -> String {
    use std::io::Write;
    let functions = [
        section(COMMON, "functions"),
        section(CEPH, "functions"),
        JOURNAL_COMPLETION,
        SNAPSHOT_SOURCE_COMPLETION,
        SNAPSHOT_REPLICA_COMPLETION,
    ]
    .concat();
    let mut child = std::process::Command::new(shell)
        .arg("-c")
        .arg(format!("set -eu\n{functions}\n{command}"))
        .arg(shell)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{shell}: {command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

// ----- journal mode

/// The bytes of a client's `data` hex dump (`00000000  02 01 ...  |..|` lines).
fn dump_bytes(dump: &str) -> Vec<u8> {
    dump.lines()
        .filter(|l| l.len() > 10)
        .flat_map(|l| {
            l[10..]
                .split('|')
                .next()
                .unwrap()
                .split_whitespace()
                .map(|h| u8::from_str_radix(h, 16).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// A mirror peer's (replica image id, state, sync points) from its client data;
/// `Ok(None)` for a client that is no mirror peer; `Err` when it does not decode (librbd
/// fails the whole journal status then).
fn peer_meta(data: &[u8]) -> Result<Option<(String, u32, u32)>, ()> {
    let kind = le_u32(data, 6).ok_or(())?;
    if kind != 1 {
        return Ok(None);
    }
    let len = le_u32(data, 10).ok_or(())? as usize;
    let id = data.get(14..14 + len).ok_or(())?;
    let state = le_u32(data, 14 + len).ok_or(())?;
    let sync_points = le_u32(data, 14 + len + 12).ok_or(())?;
    Ok(Some((
        String::from_utf8_lossy(id).into_owned(),
        state,
        sync_points,
    )))
}

/// What `journal_completion` is given for this `rbd journal status --format json`, as
/// `rbd-mirror-ceph` builds it from librbd's decoding; `Err` when librbd would not decode it.
fn journal_positions(json: &str) -> Result<JournalPositions, ()> {
    let v: Value = serde_json::from_str(json).unwrap();
    let newest = |c: &Value| {
        c["commit_position"]["object_positions"]
            .as_array()
            .unwrap()
            .first()
            .map(|p| JournalPosition {
                object_number: p["object_number"].as_u64().unwrap(),
                tag_tid: p["tag_tid"].as_u64().unwrap(),
                entry_tid: p["entry_tid"].as_u64().unwrap(),
            })
    };
    let mut master = None;
    let mut peers = Vec::new();
    for c in v["registered_clients"].as_array().unwrap() {
        let id = c["id"].as_str().unwrap();
        if id.is_empty() {
            master = newest(c);
            continue;
        }
        let Some((image_id, state, sync_points)) =
            peer_meta(&dump_bytes(c["data"].as_str().unwrap()))?
        else {
            continue;
        };
        peers.push(JournalPeer {
            id: id.to_string(),
            position: newest(c),
            syncing: Some(state != 1 || sync_points != 0 || c["state"] != "connected"),
            replica_image_id: Some(image_id),
        });
    }
    Ok(JournalPositions { master, peers })
}

/// The line `journal_completion` prints for the Rust decision `c` (a disconnected peer is,
/// for the Rust twin, one still syncing: compare with [`same_class`]).
fn journal_line(c: &Completion) -> String {
    match c {
        Completion::Complete => "complete".into(),
        Completion::Pending { reason, .. } => {
            if reason == "no rbd-mirror peer has registered with the source journal yet" {
                "pending no-peer".into()
            } else if let Some(id) = reason
                .strip_prefix("peer ")
                .and_then(|r| r.strip_suffix(" is still in its initial image sync"))
            {
                format!("pending syncing {id}")
            } else if let Some(id) = reason
                .strip_prefix("peer ")
                .and_then(|r| r.strip_suffix(" has not replayed up to the master position yet"))
            {
                format!("pending behind {id}")
            } else {
                panic!("a reason of wait::journal_completion this test does not know: {reason}")
            }
        }
    }
}

/// The shell's line with a disconnected peer named as the Rust twin names it (syncing).
fn same_class(shell_line: &str) -> String {
    shell_line.replacen("pending disconnected ", "pending syncing ", 1)
}

/// Journal samples: (what it is, `rbd journal status --format json`).
fn journal_samples() -> Vec<(&'static str, String)> {
    let recorded = recorded("journal-status.json");
    let recorded = recorded.trim_end();
    let peer_id = "b6d052e7-7bf0-43ae-9548-38f54581b4c6";
    let peer_at = recorded.find(&format!("{{\"id\":\"{peer_id}\"")).unwrap();
    let (master_part, peer_part) = recorded.split_at(peer_at);
    let peer_entry = peer_part.strip_suffix("]}").unwrap();
    let with_peer = |entry: &str| format!("{master_part}{entry}]}}");
    let behind = edit(peer_entry, "\"entry_tid\":8193", "\"entry_tid\":8190");
    let second = |entry: &str, id: &str| entry.replacen(peer_id, id, 1);
    let cli = edit(
        &second(&behind, "rbd-cli"),
        "02 01 28 00 00 00 01 00",
        "02 01 28 00 00 00 02 00",
    );
    vec![
        ("recorded: the peer caught up", recorded.to_string()),
        ("recorded (16.2): nothing written yet", JOURNAL_STATUS_EMPTY.to_string()),
        (
            "no peer registered",
            format!("{}]}}", master_part.strip_suffix(',').unwrap()),
        ),
        ("the peer is behind", with_peer(&behind)),
        (
            "the peer is syncing",
            with_peer(&edit(peer_entry, "38 33 01 00 00 00", "38 33 00 00 00 00")),
        ),
        (
            "the peer has a sync point left",
            with_peer(&edit(
                peer_entry,
                "00000020  00 00 00 00 00 00 00 00",
                "00000020  00 00 00 00 00 00 01 00",
            )),
        ),
        (
            "the peer is disconnected",
            with_peer(&edit(
                peer_entry,
                "\"state\":\"connected\"",
                "\"state\":\"disconnected\"",
            )),
        ),
        (
            "the peer committed nothing, the master did",
            with_peer(&edit(
                peer_entry,
                &peer_entry[peer_entry.find("[{").unwrap()..=peer_entry.find("}]").unwrap() + 1],
                "[]",
            )),
        ),
        (
            "16.2: the master moved on, the peer committed nothing",
            edit(
                JOURNAL_STATUS_EMPTY,
                "\"commit_position\":{\"object_positions\":[]},\"state\":\"connected\"},{",
                "\"commit_position\":{\"object_positions\":[{\"object_number\":0,\"tag_tid\":1,\"entry_tid\":0}]},\"state\":\"connected\"},{",
            ),
        ),
        (
            "two peers, the second behind",
            with_peer(&format!("{peer_entry},{}", second(&behind, "0d6c2f6e-second"))),
        ),
        (
            "two peers, the second syncing and the first behind",
            with_peer(&format!(
                "{behind},{}",
                edit(
                    &second(peer_entry, "0d6c2f6e-second"),
                    "38 33 01 00 00 00",
                    "38 33 00 00 00 00"
                )
            )),
        ),
        (
            "an rbd CLI client (no mirror peer) far behind",
            with_peer(&format!("{peer_entry},{cli}")),
        ),
    ]
}

#[test]
fn the_shell_journal_decision_is_the_rust_one_on_every_sample() {
    let samples = journal_samples();
    let mut seen = std::collections::BTreeSet::new();
    for (what, json) in &samples {
        let rust = journal_line(&journal_completion(&journal_positions(json).unwrap()));
        seen.insert(rust.split(' ').take(2).collect::<Vec<_>>().join(" "));
        for shell in ["sh", "bash"] {
            let line = run(shell, "journal_completion", &[], json);
            assert_eq!(same_class(line.trim_end()), rust, "{what} ({shell})");
        }
    }
    // the samples reach every decision
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        [
            "complete",
            "pending behind",
            "pending no-peer",
            "pending syncing"
        ]
    );
}

#[test]
fn the_shell_names_a_disconnected_peer_and_the_recorded_decisions() {
    let samples = journal_samples();
    let line = |what: &str| {
        let json = &samples.iter().find(|(w, _)| *w == what).unwrap().1;
        run("sh", "journal_completion", &[], json)
    };
    assert_eq!(line("recorded: the peer caught up"), "complete\n");
    assert_eq!(
        line("the peer is disconnected"),
        "pending disconnected b6d052e7-7bf0-43ae-9548-38f54581b4c6\n"
    );
    assert_eq!(
        line("the peer is behind"),
        "pending behind b6d052e7-7bf0-43ae-9548-38f54581b4c6\n"
    );
}

/// Where the two cannot agree: client data librbd cannot decode fails the Rust side (no
/// decision); the shell then goes by the positions and says the sync state is unknown (script
/// 2's digest check decides).
#[test]
fn undecodable_client_data_leaves_the_positions_to_decide() {
    let junk = r#"{"registered_clients":[{"id":"","data":"","commit_position":{"object_positions":[]},"state":"connected"},{"id":"x","data":"junk","commit_position":{"object_positions":[]},"state":"connected"}]}"#;
    assert!(journal_positions(junk).is_err());
    assert_eq!(
        run("sh", "journal_completion", &[], junk),
        "complete unknown-state\n"
    );
    let behind = junk.replacen(
        r#""data":"junk","commit_position":{"object_positions":[]"#,
        r#""data":"junk","commit_position":{"object_positions":[{"object_number":0,"tag_tid":1,"entry_tid":0}]"#,
        1,
    );
    assert_eq!(
        run("sh", "journal_completion", &[], &behind),
        "pending behind x\n"
    );
}

// ----- snapshot mode

/// What `rbd-mirror-ceph` gives the Rust twins for an `rbd snap ls --all --format json`.
fn snapshots(json: &str) -> Vec<SnapshotInfo> {
    let v: Value = serde_json::from_str(json).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let ns = &s["namespace"];
            let namespace = match ns["type"].as_str().unwrap() {
                "user" => SnapshotNamespace::User,
                "mirror" => SnapshotNamespace::Mirror {
                    primary: matches!(ns["state"].as_str().unwrap(), "primary" | "primary-demoted"),
                    complete: ns["complete"].as_bool().unwrap(),
                    primary_snap_id: ns["primary_snap_id"].as_u64().unwrap_or(0),
                    last_copied_object_number: ns["last_copied_object_number"]
                        .as_u64()
                        .unwrap_or(0),
                },
                _ => SnapshotNamespace::Other,
            };
            SnapshotInfo {
                id: s["id"].as_u64().unwrap(),
                name: s["name"].as_str().unwrap().to_string(),
                namespace,
                protected: s["protected"] == "true",
            }
        })
        .collect()
}

/// Scripts 1 and 2 together: script 1 waits for the newest complete primary snapshot and
/// hands its id over, script 2 waits for the replica's complete copy of it.
const BOTH_HALVES: &str = r#"id=$(newest_primary_mirror_snapshot "$1")
if [ -z "$id" ]; then
    echo 'pending no-primary'
elif replica_snapshot_complete "$2" "$id"; then
    echo complete
else
    echo "pending replica $id"
fi"#;

/// Snapshot samples: (what it is, source's and replica's `rbd snap ls --all --format json`).
fn snapshot_samples() -> Vec<(&'static str, String, String)> {
    let src = recorded("snaps-img2-site-a.json").trim_end().to_string();
    let replica = recorded("snaps-img2-site-b.json").trim_end().to_string();
    let newest_src = &src[src.rfind("{\"id\":7").unwrap()..src.len() - 1];
    let add = |list: &str, entry: String| format!("{},{entry}]", &list[..list.len() - 1]);
    let newer = |complete: &str, state: &str| {
        add(
            &src,
            newest_src
                .replacen("{\"id\":7", "{\"id\":9", 1)
                .replacen(
                    "\"state\":\"primary\"",
                    &format!("\"state\":\"{state}\""),
                    1,
                )
                .replacen("\"complete\":true", &format!("\"complete\":{complete}"), 1),
        )
    };
    let user = r#"{"id":8,"name":"s1","size":1073741824,"protected":"true","timestamp":"Sun Nov 22 13:54:00 2026","namespace":{"type":"user"}}"#;
    vec![
        (
            "recorded: the replica completed the newest",
            src.clone(),
            replica.clone(),
        ),
        (
            "the replica is syncing the newest",
            src.clone(),
            edit(
                &edit(&replica, "\"complete\":true", "\"complete\":false"),
                "\"last_copied_object_number\":256",
                "\"last_copied_object_number\":128",
            ),
        ),
        (
            "the source took a newer one",
            newer("true", "primary"),
            replica.clone(),
        ),
        (
            "the source's newest is not complete yet",
            newer("false", "primary"),
            replica.clone(),
        ),
        (
            "the source's newest is a demoted primary",
            newer("true", "primary-demoted"),
            replica.clone(),
        ),
        (
            "no mirror snapshot on the source yet",
            "[]".into(),
            replica.clone(),
        ),
        ("no snapshot on the replica yet", src.clone(), "[]".into()),
        (
            "the replica completed an older one",
            src.clone(),
            edit(&replica, "\"primary_snap_id\":7", "\"primary_snap_id\":6"),
        ),
        (
            "user snapshots beside them",
            add(&src, user.to_string()),
            add(&replica, user.replacen("\"id\":8", "\"id\":9", 1)),
        ),
    ]
}

#[test]
fn the_shell_snapshot_decision_is_the_rust_one_on_every_sample() {
    let mut seen = std::collections::BTreeSet::new();
    for (what, src, replica) in snapshot_samples() {
        let (s, r) = (snapshots(&src), snapshots(&replica));
        let rust = match snapshot_completion(&s, &r, 256) {
            Completion::Complete => "complete".to_string(),
            Completion::Pending { .. } => match newest_primary_mirror_snapshot(&s) {
                None => "pending no-primary".to_string(),
                Some(id) => format!("pending replica {id}"),
            },
        };
        seen.insert(rust.split(' ').take(2).collect::<Vec<_>>().join(" "));
        for shell in ["sh", "bash"] {
            // each half against its own twin, then both as the scripts chain them
            let newest = run(shell, r#"newest_primary_mirror_snapshot "$1""#, &[&src], "");
            let want = newest_primary_mirror_snapshot(&s);
            assert_eq!(
                newest.trim_end(),
                want.map(|i| i.to_string()).unwrap_or_default(),
                "{what} ({shell})"
            );
            assert_eq!(
                run(shell, BOTH_HALVES, &[&src, &replica], "").trim_end(),
                rust,
                "{what} ({shell})"
            );
        }
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["complete", "pending no-primary", "pending replica"]
    );
}

#[test]
fn the_rendered_scripts_carry_the_tested_functions() {
    use rbd_mirror_core::features::MirrorImageMode;
    for (mode, source_has, source_lacks) in [
        (
            MirrorImageMode::Journal,
            JOURNAL_COMPLETION,
            SNAPSHOT_SOURCE_COMPLETION,
        ),
        (
            MirrorImageMode::Snapshot,
            SNAPSHOT_SOURCE_COMPLETION,
            JOURNAL_COMPLETION,
        ),
    ] {
        let b = crate::render(&crate::tests::volume_plan(mode), "x").unwrap();
        let source = &b.files[0].contents;
        assert!(source.contains(source_has) && !source.contains(source_lacks));
        assert!(b.files[1].contents.contains(SNAPSHOT_REPLICA_COMPLETION));
    }
}

/// `rbd snap ls --all --format json` (Ceph 16.2, from the test environment) of an image with a
/// primary mirror snapshot, a snapshot named as rbd-mirror names its journal sync points, and a
/// user's own snapshot.
const SNAPS_WITH_A_SYNC_POINT: &str = r#"[{"id":28,"name":".mirror.primary.230cc41f-d1d7-4758-a4e8-0bf276d8bfc0.ec28eaf4-0f38-4f22-ba94-7d43f3a8e4cf","size":8388608,"protected":"false","timestamp":"Fri Dec  4 19:56:24 2026","namespace":{"type":"mirror","state":"primary","mirror_peer_uuids":["552c2b62-90ef-4aa4-adfd-cb7fda0a7be3"],"complete":true}},{"id":29,"name":".rbd-mirror.d1e2f3a4-0000-4c1b-9a55-111122223333.8f0e6a2c-5b7d-4e1f-a3c9-444455556666","size":8388608,"protected":"false","timestamp":"Fri Dec  4 19:56:24 2026","namespace":{"type":"user"}},{"id":30,"name":"plain","size":8388608,"protected":"false","timestamp":"Fri Dec  4 19:56:24 2026","namespace":{"type":"user"}}]"#;

#[test]
fn the_shell_lists_rbd_mirrors_sync_points_only() {
    let spaced = edit(
        SNAPS_WITH_A_SYNC_POINT,
        r#""plain""#,
        r#"".rbd-mirror.a b""#,
    );
    for shell in ["sh", "bash"] {
        assert_eq!(
            run(shell, r#"sync_points "$1""#, &[SNAPS_WITH_A_SYNC_POINT], ""),
            "29 .rbd-mirror.d1e2f3a4-0000-4c1b-9a55-111122223333.8f0e6a2c-5b7d-4e1f-a3c9-444455556666\n",
            "{shell}"
        );
        // names the daemon never makes (a space, not two UUIDs, upper case) are not listed,
        // so never removed
        let only_29 = |json: &str| run(shell, r#"sync_points "$1" | cut -d ' ' -f 1"#, &[json], "");
        assert_eq!(only_29(&spaced), "29\n", "{shell}");
        for users in [
            ".rbd-mirror.a.b",
            ".rbd-mirror.D1E2F3A4-0000-4C1B-9A55-111122223333.8f0e6a2c-5b7d-4e1f-a3c9-444455556666",
            ".rbd-mirror.d1e2f3a4-0000-4c1b-9a55-11112222333.8f0e6a2c-5b7d-4e1f-a3c9-4444555566667",
            ".rbd-mirror.d1e2f3a40-000-4c1b-9a55-111122223333.8f0e6a2c-5b7d-4e1f-a3c9-444455556666",
        ] {
            let json = edit(
                SNAPS_WITH_A_SYNC_POINT,
                r#""plain""#,
                &format!("\"{users}\""),
            );
            assert_eq!(only_29(&json), "29\n", "{users} ({shell})");
        }
        // the mirror snapshot is listed by its own function, the user's never
        assert_eq!(
            run(
                shell,
                r#"mirror_snapshots "$1""#,
                &[SNAPS_WITH_A_SYNC_POINT],
                ""
            ),
            "28 primary true -\n",
            "{shell}"
        );
    }
}
