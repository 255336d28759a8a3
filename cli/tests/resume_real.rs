//! The `rbd-relay` binary against the real Ceph pair: a migration killed (SIGKILL) at every
//! step boundary, in the middle of the wait and in the middle of the copy, resumes on re-run
//! and ends in the same state as an uninterrupted one. Also: two runs at once are refused,
//! bad input exits non-zero with a clear message and changes nothing.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{kill_at_each, run_until, KillAt, BIN};
use testenv::probe::{exists, image_with_data, info, rbd, sha};

/// Run the migration; kill it when `at` is seen. Returns (killed, exit success, events).
fn run(args: &[String], state: &str, at: KillAt) -> (bool, bool, Vec<Value>) {
    let run = run_until(args, state, at);
    (run.killed, run.status.success(), run.events)
}

fn migrate_with_kills(mode: &str) {
    let env = testenv::shared().expect("testenv");
    let _logs = env.log_guard();
    let (a, b) = (env.site_a().name.clone(), env.site_b().name.clone());
    let image = testenv::unique_name(&format!("kill-{mode}"));
    let spec = format!("volumes/{image}");
    image_with_data(&a, &spec, (40 << 20) + 333);
    let original = info(&a, &spec)["features"].clone();
    let want = sha(&a, &spec);
    let state = tempfile::tempdir().unwrap();
    let state = state.path().to_str().unwrap().to_string();
    let args: Vec<String> = [
        "migrate", "volume", "--from", &a, "--to", &b, &spec, "--into", "cinder", "--mode", mode,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();

    // dry run first: plan, nothing changes
    let (_, ok, ev) = run(
        &[args.clone(), vec!["--dry-run".into()]].concat(),
        &state,
        KillAt::Never,
    );
    assert!(ok);
    let steps = ev.last().unwrap()["plan"]["steps"]
        .as_array()
        .unwrap()
        .len() as u64;
    assert!(steps >= 7, "{ev:?}");
    assert_eq!(
        info(&a, &spec)["features"],
        original,
        "dry run changed nothing"
    );

    // a chain of runs, each killed one step later than the last, plus mid-wait and mid-copy
    let plan_steps = ev.last().unwrap()["plan"]["steps"]
        .as_array()
        .unwrap()
        .clone();
    let mut kills = Vec::new();
    for (i, step) in plan_steps.iter().enumerate() {
        kills.push(KillAt::StepStarted(i as u64));
        match step["step"].as_str() {
            Some("wait_for_replica") => kills.push(KillAt::Progress("sync")),
            Some("copy_replica") => kills.push(KillAt::Progress("copy")),
            _ => {}
        }
    }
    let id = ev.last().unwrap()["plan"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (killed_count, passed) = kill_at_each(&args, &state, &id, &plan_steps, &kills);
    let kills_len = kills.len();
    assert_eq!(
        killed_count + passed,
        kills_len,
        "every kill point was reached (or lay behind a late kill)"
    );
    assert!(
        killed_count * 3 >= kills_len * 2,
        "only {killed_count} of {kills_len} kill points landed"
    );
    let (_, ok, ev) = run(&args, &state, KillAt::Never);
    assert!(ok, "final run failed: {ev:?}");
    let result = ev.last().unwrap();
    assert_eq!(result["result"], "ok", "{result}");
    assert_eq!(result["summary"]["sha256"], want);

    // the same end state as an uninterrupted migration
    assert_eq!(
        info(&a, &spec)["features"],
        original,
        "source features restored"
    );
    assert!(info(&a, &spec)
        .get("mirroring")
        .is_none_or(|m| m["state"] == "disabled"));
    let snaps: Value = serde_json::from_str(&rbd(
        &a,
        &["snap", "ls", "--all", &spec, "--format", "json"],
    ))
    .unwrap();
    assert!(
        !snaps
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["namespace"]["type"] == "mirror"),
        "{snaps}"
    );
    assert_eq!(sha(&b, &format!("cinder/{image}")), want);
    assert_eq!(info(&b, &format!("cinder/{image}"))["features"], original);
    let t = Instant::now();
    while exists(&b, &spec) {
        assert!(t.elapsed() < Duration::from_secs(60), "replica left behind");
        std::thread::sleep(Duration::from_millis(250));
    }
    // a further re-run is a no-op that says so
    let (_, ok, ev) = run(&args, &state, KillAt::Never);
    assert!(ok);
    assert_eq!(ev.last().unwrap()["summary"]["already_done"], true);
    rbd(&a, &["rm", "--no-progress", &spec]);
    rbd(&b, &["rm", "--no-progress", &format!("cinder/{image}")]);
}

#[test]
fn journal_mode_resumes_after_kill_at_every_step() {
    migrate_with_kills("journal");
}

#[test]
fn snapshot_mode_resumes_after_kill_at_every_step() {
    migrate_with_kills("snapshot");
}

#[test]
fn bad_input_is_refused_clearly_and_changes_nothing() {
    let env = testenv::shared().expect("testenv");
    let (a, b) = (env.site_a().name.clone(), env.site_b().name.clone());
    let state = tempfile::tempdir().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "migrate",
                "volume",
                "--from",
                &a,
                "--to",
                &b,
                "justaname",
                "--into",
                "cinder",
            ],
            "expected POOL/IMAGE",
        ),
        (
            vec![
                "migrate",
                "volume",
                "--from",
                &a,
                "--to",
                &a,
                "volumes/x",
                "--into",
                "cinder",
            ],
            "same cluster",
        ),
        (
            vec![
                "migrate",
                "volume",
                "--from",
                "no-such-cluster",
                "--to",
                &b,
                "volumes/x",
                "--into",
                "cinder",
            ],
            "no-such-cluster",
        ),
        (
            vec![
                "migrate",
                "volume",
                "--from",
                &a,
                "--to",
                &b,
                "volumes/does-not-exist-xyz",
                "--into",
                "cinder",
            ],
            "does not exist",
        ),
        (
            vec![
                "migrate",
                "volume",
                "--from",
                &a,
                "--to",
                &b,
                "volumes/x@snap",
                "--into",
                "cinder",
            ],
            "snapshot",
        ),
    ];
    for (args, needle) in cases {
        let out = Command::new(BIN)
            .args(&args)
            .args(["--state-dir", state.path().to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            err.contains(needle),
            "{args:?}: expected '{needle}' in: {err}"
        );
    }
    assert_eq!(
        std::fs::read_dir(state.path())
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json"))
            .count(),
        0
    );
}

#[test]
fn two_runs_on_one_image_are_refused() {
    let env = testenv::shared().expect("testenv");
    let (a, b) = (env.site_a().name.clone(), env.site_b().name.clone());
    let image = testenv::unique_name("twice");
    let spec = format!("volumes/{image}");
    rbd(&a, &["create", "--size", "64M", &spec]);
    let state = tempfile::tempdir().unwrap();
    let s = state.path().to_str().unwrap().to_string();
    let args = [
        "migrate",
        "volume",
        "--from",
        &a,
        "--to",
        &b,
        &spec,
        "--into",
        "cinder",
        "--state-dir",
        &s,
        "--output",
        "json",
    ];
    let mut first = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // wait until the first run holds the lock (it reports its first step)
    let mut lines = BufReader::new(first.stdout.take().unwrap()).lines();
    let l = lines.next().unwrap().unwrap();
    assert!(l.contains("step_started"), "{l}");
    let second = Command::new(BIN).args(args).output().unwrap();
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("already working"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    // another migration of the same image (another copy name) is refused as well, and
    // changes nothing: no second copy appears
    let other_name = format!("{image}-other");
    let third = Command::new(BIN)
        .args(args)
        .args(["--name", &other_name])
        .output()
        .unwrap();
    assert!(!third.status.success());
    let stderr = String::from_utf8_lossy(&third.stderr);
    assert!(
        stderr.contains(&format!("already working on {a}:{spec}")),
        "{stderr}"
    );
    for _ in lines {}
    assert!(first.wait().unwrap().success());
    assert!(!exists(&b, &format!("cinder/{other_name}")));
    rbd(&a, &["rm", "--no-progress", &spec]);
    rbd(&b, &["rm", "--no-progress", &format!("cinder/{image}")]);
}

#[test]
fn delete_source_needs_confirmation_and_re_verifies() {
    let env = testenv::shared().expect("testenv");
    let (a, b) = (env.site_a().name.clone(), env.site_b().name.clone());
    let image = testenv::unique_name("del");
    let spec = format!("volumes/{image}");
    rbd(&a, &["create", "--size", "12M", &spec]);
    rbd(
        &a,
        &["bench", "--io-type", "write", "--io-total", "3M", &spec],
    );
    let state = tempfile::tempdir().unwrap();
    let s = state.path().to_str().unwrap().to_string();
    let args: Vec<String> = [
        "migrate", "volume", "--from", &a, "--to", &b, &spec, "--into", "cinder",
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    let (_, ok, ev) = run(&args, &s, KillAt::Never);
    assert!(ok, "{ev:?}");
    let id = ev.last().unwrap()["summary"]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // without --yes and without a terminal: refused, nothing deleted
    let out = Command::new(BIN)
        .args(["delete-source", &id, "--state-dir", &s])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--yes"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(exists(&a, &spec), "source kept");

    // with --yes: re-verified, deleted; again: already deleted
    let out = Command::new(BIN)
        .args(["delete-source", &id, "--yes", "--state-dir", &s])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("after re-verifying"));
    assert!(!exists(&a, &spec), "source deleted");
    assert!(exists(&b, &format!("cinder/{image}")), "copy kept");
    let out = Command::new(BIN)
        .args(["delete-source", &id, "--yes", "--state-dir", &s])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("already deleted"));
    rbd(&b, &["rm", "--no-progress", &format!("cinder/{image}")]);
}
