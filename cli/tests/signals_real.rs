//! The `rbd-relay` binary against the real Ceph pair, stopped by SIGINT or SIGTERM in the
//! middle of a migration: it stops within 2 s, exits 130 or 143, prints the command that
//! continues it, `list` shows it as interrupted (not running), and that command converges to
//! the same end state as an undisturbed run. And aborted (SIGABRT, as Ceph's client library
//! can abort it): it says what that was and that the same command continues, which it does.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{migrate_volume_args, relay, BIN, REPLICA_GONE_LIMIT, SIGABRT};
use testenv::probe::{info, mirroring_off, rbd, sha, wait_gone};

/// Import 40 MiB of patterned data as `volumes/NAME` on site `a`; returns its sha256.
fn source_image(a: &str, spec: &str) -> String {
    let data = tempfile::NamedTempFile::new().unwrap();
    let bytes: Vec<u8> = (0..(40u32 << 20) + 4096)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    std::fs::write(data.path(), &bytes).unwrap();
    rbd(
        a,
        &[
            "import",
            "--no-progress",
            data.path().to_str().unwrap(),
            spec,
        ],
    );
    sha(a, spec)
}

/// `migrate volume` of `spec` from site `a` into `b`'s cinder pool, JSON output, state in
/// `state`.
fn migrate_args(a: &str, b: &str, spec: &str, state: &str) -> Vec<String> {
    migrate_volume_args(a, b, spec, &["--output", "json", "--state-dir", state])
}

/// The run that continued a stopped migration of `volumes/IMAGE` ended as an undisturbed
/// run does: it succeeded, the copy holds the source's content (`want`, its sha256), and the
/// source has its `original` features back and no mirroring.
fn assert_finished(
    out: &std::process::Output,
    a: &str,
    b: &str,
    image: &str,
    want: &str,
    original: &Value,
) {
    let spec = format!("volumes/{image}");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sha(b, &format!("cinder/{image}")), want);
    assert_eq!(info(a, &spec)["features"], *original);
    assert!(mirroring_off(a, &spec));
}

/// Start the migration, send `signal` (`INT` or `TERM`) at the first progress event of the
/// wait, and check how it stops. Then `list` and the printed command.
fn stopped_by(signal: &str, mode: &str, want_code: i32) {
    let env = testenv::shared().expect("testenv");
    let _logs = env.log_guard();
    let (a, b) = (env.site_a().name.clone(), env.site_b().name.clone());
    let image = testenv::unique_name(&format!("sig{}-{mode}", signal.to_lowercase()));
    let spec = format!("volumes/{image}");
    let want = source_image(&a, &spec);
    let original = info(&a, &spec)["features"].clone();
    let state_dir = tempfile::tempdir().unwrap();
    let state = state_dir.path().to_str().unwrap().to_string();

    let mut child = Command::new(BIN)
        .args(migrate_args(&a, &b, &spec, &state))
        .args(["--mode", mode])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut events = Vec::new();
    let mut sent = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::String(line));
        let during_wait = v["event"] == "progress" && v["phase"] == "sync";
        events.push(v);
        if during_wait {
            let ok = Command::new("kill")
                .args([&format!("-{signal}"), &pid])
                .status()
                .unwrap()
                .success();
            assert!(ok, "kill -{signal} {pid}");
            sent = Some(Instant::now());
            break;
        }
    }
    let sent = sent.unwrap_or_else(|| panic!("the wait was never reached: {events:?}"));
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = child.wait().unwrap();
    let took = sent.elapsed();
    let mut err = String::new();
    stderr.read_to_string(&mut err).unwrap();

    assert_eq!(status.code(), Some(want_code), "stderr: {err}");
    assert!(
        took < Duration::from_secs(2),
        "stopped {took:?} after SIG{signal}"
    );
    assert!(
        err.contains(&format!("interrupted by SIG{signal}")),
        "{err}"
    );
    let last: Value = serde_json::from_str(rest.last().unwrap()).unwrap();
    assert_eq!(last["result"], "interrupted", "{rest:?}");
    // the printed command, as printed
    let resume = err
        .lines()
        .find_map(|l| l.split("continue with: ").nth(1))
        .unwrap_or_else(|| panic!("no command to continue with: {err}"))
        .trim()
        .to_string();
    assert!(resume.starts_with("rbd-relay resume "), "{resume}");
    assert!(resume.contains("--state-dir"), "{resume}");
    let id = resume.split_whitespace().nth(2).unwrap().to_string();

    // list: interrupted, not running
    let out = relay(&["list"], &state);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains(&id) && text.contains("interrupted at step"),
        "{text}"
    );
    let out = relay(&["list", "--output", "json"], &state);
    let row: Value = serde_json::from_str(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.contains(&id))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(row["interrupted"], true, "{row}");
    assert_eq!(row["active"], false, "{row}");

    // the printed command, run by a shell as a user pastes it, continues it to the same end
    // state as an undisturbed run
    let pasted = resume.replacen("rbd-relay", BIN, 1);
    let out = Command::new("sh").arg("-c").arg(&pasted).output().unwrap();
    assert_finished(&out, &a, &b, &image, &want, &original);
    let text = String::from_utf8_lossy(&relay(&["list"], &state).stdout).into_owned();
    assert!(text.contains("finished"), "{text}");

    wait_gone(&b, &spec, REPLICA_GONE_LIMIT);
    rbd(&a, &["rm", "--no-progress", &spec]);
    rbd(&b, &["rm", "--no-progress", &format!("cinder/{image}")]);
}

#[test]
fn sigint_during_the_wait_stops_within_2_s_and_prints_the_resume_command() {
    stopped_by("INT", "journal", 130);
}

#[test]
fn sigterm_during_the_wait_stops_within_2_s_and_resumes_to_the_same_end() {
    stopped_by("TERM", "snapshot", 143);
}

/// SIGABRT is how Ceph 16.2's client libraries end a process when one of their threads
/// throws (seen during an image close under load). rbd-relay cannot stop cleanly then, but
/// it says what happened and what to do, dies of the signal as before, and the same command
/// run again finishes the migration.
#[test]
fn sigabrt_during_the_wait_explains_the_abort_and_the_same_command_finishes_the_migration() {
    let env = testenv::shared().expect("testenv");
    let _logs = env.log_guard();
    let (a, b) = (env.site_a().name.clone(), env.site_b().name.clone());
    let image = testenv::unique_name("sigabrt");
    let spec = format!("volumes/{image}");
    let want = source_image(&a, &spec);
    let original = info(&a, &spec)["features"].clone();
    let state_dir = tempfile::tempdir().unwrap();
    let state = state_dir.path().to_str().unwrap().to_string();
    let args = migrate_args(&a, &b, &spec, &state);
    // no core file of the abort in the working directory
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -c 0; exec "$0" "$@""#)
        .arg(BIN)
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let mut stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut sent = false;
    for line in lines.by_ref() {
        let v: Value = serde_json::from_str(&line.unwrap()).unwrap_or_default();
        if v["event"] == "progress" && v["phase"] == "sync" {
            assert!(Command::new("kill")
                .args(["-ABRT", &pid])
                .status()
                .unwrap()
                .success());
            sent = true;
            break;
        }
    }
    assert!(sent, "the wait was never reached");
    lines.for_each(drop);
    let status = child.wait().unwrap();
    let mut err = String::new();
    stderr.read_to_string(&mut err).unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(SIGABRT), "{status:?}, stderr: {err}");
    assert!(err.contains("rbd-relay: stopped by SIGABRT"), "{err}");
    assert!(err.contains("run the same command again"), "{err}");

    // list: interrupted, not running
    let text = String::from_utf8_lossy(&relay(&["list"], &state).stdout).into_owned();
    assert!(text.contains("interrupted at step"), "{text}");

    // the same command again finishes it, to the end state of an undisturbed run
    let out = Command::new(BIN).args(&args).output().unwrap();
    assert_finished(&out, &a, &b, &image, &want, &original);

    wait_gone(&b, &spec, REPLICA_GONE_LIMIT);
    rbd(&a, &["rm", "--no-progress", &spec]);
    rbd(&b, &["rm", "--no-progress", &format!("cinder/{image}")]);
}
