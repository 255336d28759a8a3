//! The live migration with a cutover by clone, through the `rbd-relay` binary against the
//! real Ceph pair, with a writer standing in for the instance: the run keeps replicating and
//! waits while the source is written to and cuts over once the writer stops; `rbd-relay
//! cutover ID` refuses while the source is in use, naming the user, and goes ahead with
//! --force; a writer that never stops holds the cutover back and SIGINT leaves a resumable
//! run; SIGKILL at every cutover step boundary and in the middle of the flatten resumes to
//! the same end state; bad input of the new options is refused and changes nothing. The end
//! state each time: the destination equals the source's final content, flattened; the source
//! is a plain writable image again with its features and data; no replica, no snapshot left.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use testenv::writer::{WriteReport, Writer};

mod common;
use common::{describe, kill_at_each, relay, run_json, run_until, signal, KillAt, Watch};
use testenv::probe::{
    exists, info, mirror_snapshots, mirroring_off, rbd, sha, snapshot_names, wait_gone,
};

/// A source image `volumes/<unique>` on site `a` of `size_mib` MiB, its first `written_mib`
/// written, with objects of `object_size` (e.g. `4M`). Returns (image name, `volumes/NAME`).
fn source_image(
    a: &str,
    prefix: &str,
    size_mib: u64,
    written_mib: u64,
    object_size: &str,
) -> (String, String) {
    let image = testenv::unique_name(prefix);
    let spec = format!("volumes/{image}");
    rbd(
        a,
        &[
            "create",
            "--size",
            &format!("{size_mib}M"),
            "--object-size",
            object_size,
            &spec,
        ],
    );
    rbd(
        a,
        &[
            "bench",
            "--io-type",
            "write",
            "--io-size",
            "1M",
            "--io-pattern",
            "seq",
            "--io-total",
            &format!("{written_mib}M"),
            &spec,
        ],
    );
    (image, spec)
}

fn migrate_args(a: &str, b: &str, spec: &str, mode: &str, extra: &[&str]) -> Vec<String> {
    let mode_and_handover = ["--mode", mode, "--handover", "clone"];
    let extra: Vec<&str> = mode_and_handover.iter().chain(extra).copied().collect();
    common::migrate_volume_args(a, b, spec, &extra)
}

/// Stop the writer, within 60 s (a write that hangs fails the test instead of hanging it).
fn stop_writer(w: Writer) -> testenv::Result<WriteReport> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(w.stop()));
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the writer stopped within 60 s")
}

fn is_wait_progress(v: &Value) -> bool {
    v["event"] == "progress" && v["phase"] == "wait_for_cutover" && v["percent"].is_null()
}

fn step_started(v: &Value, step: &str) -> bool {
    v["event"] == "step_started" && v["step"] == step
}

/// The detail with which the wait for the cutover ended.
fn wait_ended(events: &[Value]) -> String {
    events
        .iter()
        .find(|v| {
            v["event"] == "progress" && v["phase"] == "wait_for_cutover" && v["percent"] == 100.0
        })
        .map(|v| v["detail"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("the wait for the cutover never ended: {events:?}"))
}

/// The end state of a verified handover by clone: the copy `cinder/IMAGE` on `b` holds
/// `want`, has the source's original features, no parent and no snapshot; the replica is
/// gone; the source is a plain image again (mirroring off, no mirror snapshot, its features,
/// its data `want`) and takes a write.
fn assert_handed_over(a: &str, b: &str, image: &str, original: &Value, want: &str) {
    let spec = format!("volumes/{image}");
    let copy = format!("cinder/{image}");
    assert_eq!(
        sha(b, &copy),
        want,
        "the copy holds the source's final data"
    );
    let ci = info(b, &copy);
    assert!(ci.get("parent").is_none(), "the copy is flattened: {ci}");
    assert_eq!(
        ci["features"], *original,
        "the copy has the original features"
    );
    let snaps: Value =
        serde_json::from_str(&rbd(b, &["snap", "ls", "--all", &copy, "--format", "json"])).unwrap();
    assert_eq!(snaps, serde_json::json!([]), "no snapshot on the copy");
    wait_gone(b, &spec, common::REPLICA_GONE_LIMIT); // the replica, and the handover snapshot with it
    assert!(mirroring_off(a, &spec), "the source is not mirrored");
    assert_eq!(
        mirror_snapshots(a, &spec),
        0,
        "no mirror snapshot on the source"
    );
    assert_eq!(
        info(a, &spec)["features"],
        *original,
        "source features restored"
    );
    assert_eq!(sha(a, &spec), want, "source data unchanged");
    assert_writable(a, &spec);
}

/// IMAGE on SITE takes a write: it is primary (a demoted image refuses the write, and
/// `rbd` fails the test).
fn assert_writable(site: &str, image: &str) {
    rbd(
        site,
        &[
            "bench",
            "--io-type",
            "write",
            "--io-size",
            "4K",
            "--io-total",
            "64K",
            image,
        ],
    );
}

fn remove(a: &str, b: &str, image: &str) {
    rbd(a, &["rm", "--no-progress", &format!("volumes/{image}")]);
    let copy = format!("cinder/{image}");
    if exists(b, &copy) {
        rbd(b, &["rm", "--no-progress", &copy]);
    }
}

/// The id of the only migration recorded in STATE.
fn the_id(state: &str) -> String {
    let out = relay(&["list", "--output", "json"], state);
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let first: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    first["id"].as_str().unwrap().to_string()
}

/// A live migration with the writer running through the sync and the first 5 s of the wait:
/// the run waits (saying who uses the source), and cuts over once the writer stopped.
fn live_with_a_writer_that_stops(mode: &str) {
    let env = testenv::shared().expect("testenv");
    let _logs = env.log_guard();
    let (a, b) = (env.site_a().name.clone(), env.site_b().name.clone());
    let (image, spec) = source_image(&a, &format!("live-{mode}"), 64, 32, "4M");
    let original = info(&a, &spec)["features"].clone();
    let state_dir = tempfile::tempdir().unwrap();
    let state = state_dir.path().to_str().unwrap().to_string();
    let args = migrate_args(&a, &b, &spec, mode, &["--live", "--idle-for", "2"]);
    // the user's own journal payload override: a live journal migration sets its own while
    // it runs (before journaling is enabled under the writer) and puts this one back
    let key = rbd_mirror_core::plan::JOURNAL_PAYLOAD_KEY;
    rbd(&a, &["image-meta", "set", &spec, key, "65536"]);
    let payload = || {
        rbd(&a, &["image-meta", "get", &spec, key])
            .trim()
            .to_string()
    };
    let mut payload_while_waiting = None;

    let mut writer = Some(Writer::start(env.site_a(), "volumes", &image, 20.0).unwrap());
    let mut waits_seen = 0;
    let mut want = None;
    let mut demoted_while_written = false;
    let started = Instant::now();
    let run = run_json(&args, &state, |v, _| {
        if step_started(v, "demote_source") && writer.is_some() {
            demoted_while_written = true;
        }
        if is_wait_progress(v) && writer.is_some() {
            let detail = v["detail"].as_str().unwrap();
            assert!(
                detail.contains("waiting for the cutover") && detail.contains("in use by client."),
                "{detail}"
            );
            waits_seen += 1;
            if waits_seen == 1 {
                payload_while_waiting = Some(payload());
            }
            if waits_seen == 2 {
                // 5 s of waiting while written to; now the instance "shuts down"
                let w = writer.take().unwrap();
                assert!(!w.is_finished(), "the writer failed while the run waited");
                let report = stop_writer(w).expect("no write failed");
                assert!(report.writes > 0);
                want = Some(sha(&a, &spec));
            }
        }
        Watch::Go
    });
    let took = started.elapsed();
    assert!(run.status.success(), "{:?}\n{}", run.events, run.stderr);
    assert!(
        !demoted_while_written,
        "the cutover started while the writer ran"
    );
    let want = want.unwrap_or_else(|| panic!("the run never waited twice: {:?}", run.events));
    let ended = wait_ended(&run.events);
    assert!(ended.contains("no user for"), "{ended}");
    let result = run.last();
    assert_eq!(result["result"], "ok", "{result}");
    assert_eq!(result["summary"]["sha256"], want.as_str());
    let warnings: Vec<&Value> = run
        .events
        .iter()
        .filter(|v| v["event"] == "warning")
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w["message"].as_str().unwrap().contains("the cutover waits")),
        "{warnings:?}"
    );
    assert_handed_over(&a, &b, &image, &original, &want);
    eprintln!("live {mode}: {:.1} s", took.as_secs_f64());
    let tuned = rbd_mirror_core::plan::JOURNAL_PAYLOAD_BYTES.to_string();
    assert_eq!(
        payload_while_waiting.as_deref(),
        Some(if mode == "journal" {
            tuned.as_str()
        } else {
            "65536"
        }),
        "the source's payload while the migration waited for the cutover"
    );
    assert_eq!(
        payload(),
        "65536",
        "the user's own payload back on the source"
    );
    // the clone took the replica's metadata, which rbd-mirror copied from the source while
    // the migration had it changed: the copy ends with the source's own, no marker
    let copy = format!("cinder/{image}");
    let copy_meta = |k: &str| {
        testenv::probe::try_rbd(&b, &["image-meta", "get", &copy, k])
            .ok()
            .map(|v| v.trim().to_string())
    };
    if mode == "journal" {
        assert_eq!(
            copy_meta(key).as_deref(),
            Some("65536"),
            "the copy's payload"
        );
    }
    assert_eq!(
        copy_meta(rbd_mirror_core::preflight::SOURCE_MARKER_KEY),
        None,
        "no marker of the migration on the copy"
    );

    // past its cutover: `cutover` has nothing to do, and says so
    let id = result["summary"]["id"].as_str().unwrap();
    let out = relay(&["cutover", id], &state);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("past its cutover"),
        "{}",
        describe(&out)
    );
    remove(&a, &b, &image);
}

#[test]
fn a_live_journal_migration_waits_while_written_and_cuts_over_once_the_writer_stops() {
    live_with_a_writer_that_stops("journal");
}

#[test]
fn a_live_snapshot_migration_waits_while_written_and_cuts_over_once_the_writer_stops() {
    live_with_a_writer_that_stops("snapshot");
}

#[test]
fn cutover_refuses_while_in_use_naming_the_user_and_force_cuts_over() {
    let env = testenv::shared().expect("testenv");
    let _logs = env.log_guard();
    let (a, b) = (env.site_a().name.clone(), env.site_b().name.clone());
    let (image, spec) = source_image(&a, "cutover-force", 64, 32, "4M");
    let original = info(&a, &spec)["features"].clone();
    let state_dir = tempfile::tempdir().unwrap();
    let state = state_dir.path().to_str().unwrap().to_string();
    // --idle-for never reached: only the command cuts over
    let args = migrate_args(&a, &b, &spec, "journal", &["--live", "--idle-for", "3600"]);

    let mut writer = Some(Writer::start(env.site_a(), "volumes", &image, 20.0).unwrap());
    let mut waits_seen = 0;
    let mut forced = false;
    let mut writer_result = None;
    let mut want = None;
    let run = run_json(&args, &state, |v, _| {
        if is_wait_progress(v) {
            waits_seen += 1;
            let id = the_id(&state);
            let request = std::path::Path::new(&state).join(format!("{id}.cutover"));
            if waits_seen == 1 {
                let out = relay(&["cutover", &id], &state);
                assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(
                    err.contains("in use by client.") && err.contains("--force"),
                    "{}",
                    describe(&out)
                );
                assert!(!request.exists(), "a refused cutover leaves no request");
                assert_eq!(info(&a, &spec)["mirroring"]["primary"], true);
            } else if waits_seen == 2 {
                // still waiting 5 s later: the refusal changed nothing
                let out = relay(&["cutover", &id, "--force"], &state);
                assert!(out.status.success(), "{}", describe(&out));
                let stdout = String::from_utf8_lossy(&out.stdout);
                assert!(
                    stdout.contains("with --force") && stdout.contains("client."),
                    "{}",
                    describe(&out)
                );
                forced = true;
            }
        }
        // the writer keeps writing into the demotion; its writes from then on fail
        if v["event"] == "step_done" && v["step"] == "demote_source" {
            writer_result = Some(stop_writer(writer.take().unwrap()));
            want = Some(sha(&a, &spec));
        }
        Watch::Go
    });
    assert!(run.status.success(), "{:?}\n{}", run.events, run.stderr);
    assert!(forced, "never forced: {:?}", run.events);
    let ended = wait_ended(&run.events);
    assert!(
        ended.contains("with --force while in use by client."),
        "{ended}"
    );
    let want = want.unwrap();
    assert_eq!(run.last()["summary"]["sha256"], want.as_str());
    assert_handed_over(&a, &b, &image, &original, &want);
    eprintln!("writer after the forced cutover: {writer_result:?}");
    remove(&a, &b, &image);
}

#[test]
fn a_writer_that_never_stops_holds_the_cutover_back_and_sigint_leaves_it_resumable() {
    let env = testenv::shared().expect("testenv");
    let _logs = env.log_guard();
    let (a, b) = (env.site_a().name.clone(), env.site_b().name.clone());
    let (image, spec) = source_image(&a, "live-forever", 64, 32, "4M");
    let original = info(&a, &spec)["features"].clone();
    let state_dir = tempfile::tempdir().unwrap();
    let state = state_dir.path().to_str().unwrap().to_string();
    let args = migrate_args(&a, &b, &spec, "snapshot", &["--live", "--idle-for", "1"]);

    let writer = Writer::start(env.site_a(), "volumes", &image, 20.0).unwrap();
    let mut waits_seen = 0;
    let run = run_json(&args, &state, |v, pid| {
        if is_wait_progress(v) {
            let detail = v["detail"].as_str().unwrap();
            assert!(detail.contains("in use by client."), "{detail}");
            waits_seen += 1;
            if waits_seen == 3 {
                // 10 s in use: the cutover never started
                signal(pid, "INT");
            }
        }
        Watch::Go
    });
    assert_eq!(
        run.status.code(),
        Some(130),
        "{:?}\n{}",
        run.events,
        run.stderr
    );
    assert!(
        !run.events.iter().any(|v| step_started(v, "demote_source")),
        "the cutover started while the source was in use: {:?}",
        run.events
    );
    assert_eq!(run.last()["result"], "interrupted", "{:?}", run.events);
    let resume = run
        .stderr
        .lines()
        .find_map(|l| l.split("continue with: ").nth(1))
        .unwrap_or_else(|| panic!("no command to continue with: {}", run.stderr))
        .trim()
        .to_string();
    assert!(resume.starts_with("rbd-relay resume "), "{resume}");
    let id = resume.split_whitespace().nth(2).unwrap().to_string();
    let out = relay(&["list"], &state);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains(&id) && listed.contains("interrupted at step"),
        "{listed}"
    );
    // the source is still primary and in use: nothing was cut over
    assert_eq!(info(&a, &spec)["mirroring"]["primary"], true);
    assert!(!writer.is_finished(), "the writer's writes kept succeeding");

    // the instance stops; the printed command continues to the handover
    stop_writer(writer).expect("no write failed");
    let want = sha(&a, &spec);
    let pasted = resume.replacen("rbd-relay", common::BIN, 1);
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(&pasted)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert_handed_over(&a, &b, &image, &original, &want);
    let listed = String::from_utf8_lossy(&relay(&["list"], &state).stdout).into_owned();
    assert!(listed.contains("finished"), "{listed}");
    remove(&a, &b, &image);
}

/// A cold migration by clone SIGKILLed at the start of every cutover step in turn, then
/// re-run to the end: the same end state as an undisturbed run.
fn kills_at_every_cutover_step(mode: &str) {
    let env = testenv::shared().expect("testenv");
    let _logs = env.log_guard();
    let (a, b) = (env.site_a().name.clone(), env.site_b().name.clone());
    let (image, spec) = source_image(&a, &format!("cutkill-{mode}"), 64, 32, "4M");
    let original = info(&a, &spec)["features"].clone();
    let want = sha(&a, &spec);
    let state_dir = tempfile::tempdir().unwrap();
    let state = state_dir.path().to_str().unwrap().to_string();
    let args = migrate_args(&a, &b, &spec, mode, &[]);

    let dry = run_until(
        &[args.clone(), vec!["--dry-run".into()]].concat(),
        &state,
        KillAt::Never,
    );
    assert!(dry.status.success(), "{}", dry.stderr);
    let plan = dry.last()["plan"].clone();
    let steps = plan["steps"].as_array().unwrap().clone();
    let id = plan["id"].as_str().unwrap().to_string();
    let demote = steps
        .iter()
        .position(|s| s["step"] == "demote_source")
        .unwrap_or_else(|| panic!("no cutover in {plan}"));
    let names: Vec<&str> = steps[demote..]
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    for step in [
        "demote_source",
        "promote_replica",
        "clone_replica",
        "verify_handover",
        "flatten_copy",
        "release_source",
        "remove_replica",
    ] {
        assert!(names.contains(&step), "{step} not in {names:?}");
    }
    let kills: Vec<KillAt> = (demote..steps.len())
        .map(|i| KillAt::StepStarted(i as u64))
        .collect();
    let started = Instant::now();
    let (killed, passed) = kill_at_each(&args, &state, &id, &steps, &kills);
    assert_eq!(
        killed + passed,
        kills.len(),
        "every kill point was reached (or lay behind a late kill)"
    );
    assert!(
        killed * 3 >= kills.len() * 2,
        "only {killed} of {} kill points landed",
        kills.len()
    );
    let last = run_until(&args, &state, KillAt::Never);
    assert!(last.status.success(), "{:?}\n{}", last.events, last.stderr);
    assert_eq!(last.last()["result"], "ok", "{:?}", last.events);
    assert_eq!(last.last()["summary"]["sha256"], want.as_str());
    eprintln!(
        "kills {mode}: {killed} killed, {passed} passed, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_handed_over(&a, &b, &image, &original, &want);
    // and once more: nothing left to do
    let again = run_until(&args, &state, KillAt::Never);
    assert!(again.status.success(), "{}", again.stderr);
    assert_eq!(again.last()["summary"]["already_done"], true);
    remove(&a, &b, &image);
}

#[test]
fn journal_cutover_resumes_after_kill_at_every_cutover_step() {
    kills_at_every_cutover_step("journal");
}

#[test]
fn snapshot_cutover_resumes_after_kill_at_every_cutover_step() {
    kills_at_every_cutover_step("snapshot");
}

/// A cold migration by clone SIGKILLed at the start of one cutover step, then aborted, for
/// every cutover step in turn (each on an image of its own): the source is back as a plain,
/// writable image (mirroring off, no snapshot, its features, its data) and nothing of the
/// migration is left on the destination (no copy, no replica). A copy already verified is
/// kept unless abort is told `--discard-verified-copy`: the refusal without it changes
/// nothing. A run that finished before its kill point is refused by abort.
fn abort_after_a_kill_at_every_cutover_step(mode: &str) {
    let env = testenv::shared().expect("testenv");
    let _logs = env.log_guard();
    let (a, b) = (env.site_a().name.clone(), env.site_b().name.clone());
    // the plan's steps, from a dry run of the same arguments (an image is needed for it)
    let (_, spec) = source_image(&a, &format!("cutabort-{mode}"), 64, 32, "4M");
    let dry_state = tempfile::tempdir().unwrap();
    let dry = run_until(
        &[
            migrate_args(&a, &b, &spec, mode, &[]),
            vec!["--dry-run".into()],
        ]
        .concat(),
        dry_state.path().to_str().unwrap(),
        KillAt::Never,
    );
    assert!(dry.status.success(), "{}", dry.stderr);
    let steps: Vec<String> = dry.last()["plan"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap().to_string())
        .collect();
    rbd(&a, &["rm", "--no-progress", &spec]);
    let demote = steps
        .iter()
        .position(|s| s == "demote_source")
        .unwrap_or_else(|| panic!("no cutover in {steps:?}"));

    let (mut aborted, mut finished) = (Vec::new(), Vec::new());
    for (index, step) in steps.iter().enumerate().skip(demote) {
        let what = format!("{mode}, killed as {step} started");
        let (image, spec) = source_image(&a, &format!("cutabort-{mode}"), 64, 32, "4M");
        let original = info(&a, &spec)["features"].clone();
        let want = sha(&a, &spec);
        let state_dir = tempfile::tempdir().unwrap();
        let state = state_dir.path().to_str().unwrap().to_string();
        let args = migrate_args(&a, &b, &spec, mode, &[]);
        let run = run_until(&args, &state, KillAt::StepStarted(index as u64));
        let id = the_id(&state);
        let copy = format!("cinder/{image}");
        if !run.killed && !common::died_of_ceph_client_abort(&run) {
            // a late, instant step: the run finished before the kill landed
            assert!(
                run.status.success(),
                "{what}: {:?}\n{}",
                run.events,
                run.stderr
            );
            let out = relay(&["abort", &id, "--discard-verified-copy"], &state);
            assert_eq!(out.status.code(), Some(1), "{what}: {}", describe(&out));
            assert!(exists(&b, &copy), "{what}: the refusal kept the copy");
            finished.push(step.clone());
            remove(&a, &b, &image);
            continue;
        }
        let recorded: Value =
            serde_json::from_slice(&std::fs::read(format!("{state}/{id}.json")).unwrap()).unwrap();
        let verified = !recorded["source_digest"].is_null()
            && recorded["source_digest"] == recorded["copy_digest"];
        if verified {
            // a verified copy is not thrown away unasked: refused, nothing changed
            let before = std::fs::read(format!("{state}/{id}.json")).unwrap();
            let out = relay(&["abort", &id], &state);
            assert_eq!(out.status.code(), Some(1), "{what}: {}", describe(&out));
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("--discard-verified-copy"),
                "{what}: {}",
                describe(&out)
            );
            assert_eq!(
                std::fs::read(format!("{state}/{id}.json")).unwrap(),
                before,
                "{what}: the refused abort left the state as it was"
            );
            assert_eq!(sha(&b, &copy), want, "{what}: the refusal kept the copy");
        }
        let mut abort_args = vec!["abort", id.as_str()];
        if verified {
            abort_args.push("--discard-verified-copy");
        }
        let out = relay(&abort_args, &state);
        assert!(out.status.success(), "{what}: {}", describe(&out));
        assert!(
            mirroring_off(&a, &spec),
            "{what}: the source is not mirrored"
        );
        assert_eq!(
            snapshot_names(&a, &spec),
            Vec::<String>::new(),
            "{what}: no snapshot left on the source"
        );
        assert_eq!(
            info(&a, &spec)["features"],
            original,
            "{what}: source features restored"
        );
        assert_eq!(sha(&a, &spec), want, "{what}: source data unchanged");
        assert_writable(&a, &spec);
        assert!(!exists(&b, &copy), "{what}: no copy left");
        wait_gone(&b, &spec, common::REPLICA_GONE_LIMIT);
        aborted.push(step.clone());
        remove(&a, &b, &image);
    }
    eprintln!("abort {mode}: aborted after a kill at {aborted:?}; finished first: {finished:?}");
    assert!(
        aborted.len() * 3 >= (steps.len() - demote) * 2,
        "{mode}: only {aborted:?} of the cutover steps were reached before the run finished"
    );
    for step in [
        "demote_source",
        "promote_replica",
        "clone_replica",
        "verify_handover",
    ] {
        assert!(
            aborted.contains(&step.to_string()),
            "{mode}: never aborted at {step}: {aborted:?}"
        );
    }
}

#[test]
fn journal_abort_after_a_kill_at_every_cutover_step_puts_the_source_back() {
    abort_after_a_kill_at_every_cutover_step("journal");
}

#[test]
fn snapshot_abort_after_a_kill_at_every_cutover_step_puts_the_source_back() {
    abort_after_a_kill_at_every_cutover_step("snapshot");
}

/// On Ceph 16.2 the objects whose copy-up was in flight when the flatten's client was killed
/// read as zeros once a later flatten with the object map on detaches the parent. The engine
/// resumes a flatten with the map off (and rebuilds it after), and proves the flattened copy
/// equal to the verified content before the replica goes: this test fails without either.
#[test]
fn a_kill_in_the_middle_of_the_flatten_resumes_to_a_flat_verified_copy() {
    let env = testenv::shared().expect("testenv");
    let _logs = env.log_guard();
    let (a, b) = (env.site_a().name.clone(), env.site_b().name.clone());
    // all written, in small objects: the flatten copies up 4096 of them, long enough to
    // report progress (it does every second)
    let (image, spec) = source_image(&a, "flatkill", 256, 256, "64K");
    let original = info(&a, &spec)["features"].clone();
    let want = sha(&a, &spec);
    let state_dir = tempfile::tempdir().unwrap();
    let state = state_dir.path().to_str().unwrap().to_string();
    let args = migrate_args(&a, &b, &spec, "journal", &[]);

    let run = run_until(&args, &state, KillAt::Progress("flatten_copy"));
    assert!(
        run.killed,
        "the flatten reported no progress before it ended: {:?}",
        run.events
    );
    let copy = format!("cinder/{image}");
    assert!(
        info(&b, &copy).get("parent").is_some(),
        "killed mid-flatten: the copy still hangs from the replica"
    );
    let last = run_until(&args, &state, KillAt::Never);
    assert!(last.status.success(), "{:?}\n{}", last.events, last.stderr);
    assert_eq!(last.last()["summary"]["sha256"], want.as_str());
    assert_handed_over(&a, &b, &image, &original, &want);
    remove(&a, &b, &image);
}

#[test]
fn bad_input_of_the_live_options_is_refused_and_changes_nothing() {
    let env = testenv::shared().expect("testenv");
    let (a, b) = (env.site_a().name.clone(), env.site_b().name.clone());
    let (image, spec) = source_image(&a, "live-bad", 16, 8, "4M");
    let original = info(&a, &spec)["features"].clone();
    let want = sha(&a, &spec);
    let state_dir = tempfile::tempdir().unwrap();
    let state = state_dir.path().to_str().unwrap().to_string();
    let out_dir = tempfile::tempdir().unwrap();
    let bundle_out = out_dir.path().join("bundle");
    let bundle_out = bundle_out.to_str().unwrap();
    let migrate = |extra: &[&str]| -> Vec<String> {
        [
            "migrate", "volume", "--from", &a, "--to", &b, &spec, "--into", "cinder",
        ]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (migrate(&["--live", "--idle-for", "-1"]), "'-1'"),
        (migrate(&["--live", "--idle-for=-1"]), "0 to 3600"),
        (
            migrate(&["--live", "--idle-for", "abc"]),
            "'abc' for '--idle-for",
        ),
        (migrate(&["--live", "--idle-for", "5000"]), "0 to 3600"),
        (migrate(&["--handover", "bogus"]), "'bogus' for '--handover"),
        (
            ["cutover", "no-such-migration"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            "no migration 'no-such-migration'",
        ),
        (
            [
                "bundle",
                "volume",
                "--from",
                &a,
                "--to",
                &b,
                &spec,
                "--into",
                "cinder",
                "--out",
                bundle_out,
                "--live",
                "--handover",
                "copy",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            // a live bundle cuts over by clone (the clone bundle itself is bundle_real's)
            "drop --handover copy",
        ),
    ];
    let unchanged = || {
        assert_eq!(info(&a, &spec)["features"], original);
        assert!(mirroring_off(&a, &spec));
        assert!(!exists(&b, &spec), "no replica");
        assert!(!exists(&b, &format!("cinder/{image}")), "no copy");
        assert_eq!(
            std::fs::read_dir(&state).unwrap().count(),
            0,
            "nothing in the state directory"
        );
        assert!(
            !std::path::Path::new(bundle_out).exists(),
            "no bundle written"
        );
    };
    for (args, needle) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = relay(&args, &state);
        assert_ne!(
            out.status.code(),
            Some(0),
            "{args:?} succeeded: {}",
            describe(&out)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(needle),
            "{args:?}: expected '{needle}' in: {}",
            describe(&out)
        );
        unchanged();
    }
    assert_eq!(sha(&a, &spec), want);

    // `cutover` of a migration that is not live: refused, and the finished migration's
    // results stay as they are
    let cold_state = tempfile::tempdir().unwrap();
    let cold = cold_state.path().to_str().unwrap();
    let cold_args: Vec<&str> = [
        "migrate", "volume", "--from", &a, "--to", &b, &spec, "--into", "cinder",
    ]
    .to_vec();
    let out = relay(&cold_args, cold);
    assert!(out.status.success(), "{}", describe(&out));
    let id = the_id(cold);
    let before = std::fs::read(cold_state.path().join(format!("{id}.json"))).unwrap();
    let out = relay(&["cutover", &id], cold);
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a live migration"),
        "{}",
        describe(&out)
    );
    assert!(!cold_state.path().join(format!("{id}.cutover")).exists());
    assert_eq!(
        std::fs::read(cold_state.path().join(format!("{id}.json"))).unwrap(),
        before,
        "the state is unchanged"
    );
    assert_handed_over(&a, &b, &image, &original, &want);
    remove(&a, &b, &image);
}
