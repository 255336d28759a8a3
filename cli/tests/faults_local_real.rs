//! The local and cloud rows of the fault matrix (docs/reliability.md, "Local and cloud
//! faults"), run for real against the test environment `testenv env` points to:
//!
//! - SIGINT and SIGTERM at every step boundary of a migration with the clone handover
//!   (its cutover steps included) and in the middle of the wait for the replica: each run
//!   stops within 2 s with 130/143 and prints the command that continues it, `list` says
//!   "interrupted at step N", and the chain of printed commands ends in the state of an
//!   undisturbed run. (SIGKILL at every step boundary is resume_real's and live_real's.)
//! - The state directory read-only or full, from the start or from the middle of a run, and a
//!   truncated state file: a clear error naming the file and what to do, nothing changed on
//!   the clusters before the state could be written, and the re-run converges.
//! - The same migration started from a second host with another state directory: refused by
//!   the marker on the source image, naming the first run's host and state directory.
//! - Keystone, Cinder or Glance down, slow or answering 5xx while a migration adopts its
//!   copy (Cinder manage) or registers it (Glance): a fault-injecting proxy in this test
//!   stands in front of the real services (no service is stopped). The run names the service
//!   and endpoint; the re-run finds the adopted volume or registered image again and creates
//!   nothing twice.
//!
//! Each test prints its matrix rows as `fault-row: ...` lines (with the seconds measured), the
//! source of the table in docs/reliability.md.
//!
//! Mount namespaces (`unshare --mount`) give a run a read-only or tiny state directory
//! without touching the host's mounts, and a UTS namespace (`unshare --uts`) another host
//! name; both need root, as the test environment does.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::{Child, Command, Stdio};
use std::time::Instant;

use serde_json::Value;

mod common;
use common::{describe, relay, run_json, run_until, signal, KillAt, Watch, BIN};
use testenv::probe::{exists, image_with_data, info, mirroring_off, sha, try_rbd, wait_gone};

/// One row of the fault matrix, printed for docs/reliability.md.
fn row(fault: &str, when: &str, saw: &str, seconds: f64, end: &str) {
    let saw = saw.trim().replace('\n', " ");
    eprintln!("fault-row: | {fault} | {when} | `{saw}` | {seconds:.1} | {end} |");
}

/// The error a run printed: from its `rbd-relay: error:` line to the end of stderr.
fn error_line(stderr: &str) -> String {
    let at = stderr
        .find("rbd-relay: error:")
        .unwrap_or_else(|| panic!("no error in: {stderr}"));
    stderr[at..].trim().to_string()
}

fn args_of(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A source image `volumes/<unique>` on `a` with `len` bytes of patterned data; returns its
/// name, spec, features and sha256.
fn source(a: &str, prefix: &str, len: usize) -> (String, String, Value, String) {
    let image = testenv::unique_name(prefix);
    let spec = format!("volumes/{image}");
    image_with_data(a, &spec, len);
    let features = info(a, &spec)["features"].clone();
    let want = sha(a, &spec);
    (image, spec, features, want)
}

/// The clone-handover migration of `spec` into `cinder` (the CLI's default handover).
fn migrate_args(a: &str, b: &str, spec: &str, mode: &str) -> Vec<String> {
    common::migrate_volume_args(a, b, spec, &["--mode", mode, "--handover", "clone"])
}

/// Nothing of a migration on the clusters: the source as it was (features, no mirroring,
/// no marker), no replica, no copy.
fn untouched(a: &str, b: &str, image: &str, features: &Value) {
    let spec = format!("volumes/{image}");
    assert_eq!(info(a, &spec)["features"], *features, "source features");
    assert!(mirroring_off(a, &spec), "the source is not mirrored");
    assert!(
        try_rbd(
            a,
            &[
                "image-meta",
                "get",
                &spec,
                rbd_mirror_core::preflight::SOURCE_MARKER_KEY
            ]
        )
        .is_err(),
        "no marker on the source"
    );
    assert!(!exists(b, &spec), "no replica");
    assert!(!exists(b, &format!("cinder/{image}")), "no copy");
}

/// The end state of an undisturbed clone handover: the flattened copy `cinder/IMAGE` holds
/// `want` with the source's features, the replica is gone, the source is a plain image
/// again with its features and data.
fn handed_over(a: &str, b: &str, image: &str, features: &Value, want: &str) {
    let spec = format!("volumes/{image}");
    let copy = format!("cinder/{image}");
    assert_eq!(sha(b, &copy), want, "the copy holds the source's data");
    let ci = info(b, &copy);
    assert!(ci.get("parent").is_none(), "the copy is flattened: {ci}");
    assert_eq!(ci["features"], *features, "the copy's features");
    wait_gone(b, &spec, common::REPLICA_GONE_LIMIT);
    assert!(mirroring_off(a, &spec), "the source is not mirrored");
    assert_eq!(info(a, &spec)["features"], *features, "source features");
    assert_eq!(sha(a, &spec), want, "source data unchanged");
}

fn remove(a: &str, b: &str, image: &str) {
    let _ = try_rbd(a, &["rm", "--no-progress", &format!("volumes/{image}")]);
    let _ = try_rbd(b, &["rm", "--no-progress", &format!("cinder/{image}")]);
}

// ---------------------------------------------------------------------------------------
// SIGINT / SIGTERM at every step

/// What one run stopped by a signal showed.
struct Stopped {
    /// Seconds from the signal to the process's exit.
    seconds: f64,
    /// The printed command that continues it (`None`: stopped before anything was recorded).
    resume: Option<String>,
    /// The message on stderr.
    message: String,
}

/// Run `args` and send `sig` (`INT` or `TERM`) at `at`. Returns `None` when the run ended
/// by itself before the signal took effect (a kill point behind a late signal), else how
/// it stopped, after checking exit code, message, result line and `list`.
fn interrupt_at(args: &[String], state: &str, at: KillAt, sig: &str) -> Option<Stopped> {
    let mut sent: Option<Instant> = None;
    let run = run_json(args, state, |v, pid| {
        if sent.is_none() && at.hit(v) {
            signal(pid, sig);
            sent = Some(Instant::now());
        }
        Watch::Go
    });
    let seconds = sent.map(|t| t.elapsed().as_secs_f64());
    if run.status.success() {
        return None; // finished before the signal landed
    }
    let seconds = seconds.unwrap_or_else(|| {
        panic!(
            "{at:?} never reached and the run failed: {:?}\n{}",
            run.events, run.stderr
        )
    });
    let want_code = if sig == "INT" { 130 } else { 143 };
    assert_eq!(
        run.status.code(),
        Some(want_code),
        "{at:?} SIG{sig}: {:?}\n{}",
        run.events,
        run.stderr
    );
    assert!(
        seconds < 2.0,
        "{at:?}: stopped {seconds:.2} s after SIG{sig}"
    );
    assert!(
        run.stderr.contains(&format!("interrupted by SIG{sig}")),
        "{}",
        run.stderr
    );
    assert_eq!(run.last()["result"], "interrupted", "{:?}", run.events);
    // the command to continue, or (stopped before the plan was recorded) the word that
    // nothing changed and the same command starts it
    let resume = run
        .stderr
        .lines()
        .find_map(|l| l.split("continue with: ").nth(1))
        .map(|c| c.trim().to_string());
    match &resume {
        Some(r) => {
            assert!(r.starts_with("rbd-relay resume "), "{r}");
            assert!(r.ends_with(&format!("--state-dir '{state}'")), "{r}");
        }
        None => assert!(
            run.stderr
                .contains("nothing was changed; re-run the same command"),
            "{}",
            run.stderr
        ),
    }
    let message = run
        .stderr
        .lines()
        .find(|l| l.contains("interrupted by"))
        .unwrap()
        .to_string();
    Some(Stopped {
        seconds,
        resume,
        message,
    })
}

/// `list` shows migration ID as interrupted (no process) at the step the state records.
fn listed_as_interrupted(state: &str, id: &str) -> String {
    let n = common::next_step(state, id) + 1;
    let out = relay(&["list"], state);
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.starts_with(id))
        .unwrap_or_else(|| panic!("{id} not listed: {text}"))
        .to_string();
    assert!(
        line.contains(&format!("interrupted at step {n}/")),
        "want 'interrupted at step {n}/': {line}"
    );
    let out = relay(&["list", "--output", "json"], state);
    let row: Value = serde_json::from_str(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.contains(id))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(row["interrupted"], true, "{row}");
    assert_eq!(row["active"], false, "{row}");
    line
}

/// A clone-handover migration interrupted by SIGINT and SIGTERM (alternating, starting with
/// `first`) at the start of every step and in the middle of the wait for the replica; each
/// interrupted run is continued by the command it printed. The chain ends in the state of
/// an undisturbed run.
fn interrupted_at_every_step(mode: &str, first: &str) {
    let env = testenv::shared().expect("testenv");
    let _logs = env.log_guard();
    let (a, b) = (env.site_a().name.clone(), env.site_b().name.clone());
    let (image, spec, features, want) = source(&a, &format!("sigs-{mode}"), (48 << 20) + 777);
    let state_dir = tempfile::tempdir().unwrap();
    let state = state_dir.path().to_str().unwrap().to_string();
    let args = migrate_args(&a, &b, &spec, mode);

    let dry = run_until(
        &[args.clone(), vec!["--dry-run".into()]].concat(),
        &state,
        KillAt::Never,
    );
    assert!(dry.status.success(), "{}", dry.stderr);
    let plan = dry.last()["plan"].clone();
    let steps = plan["steps"].as_array().unwrap().clone();
    let id = plan["id"].as_str().unwrap().to_string();
    let names: Vec<String> = steps
        .iter()
        .map(|s| s["step"].as_str().unwrap().to_string())
        .collect();
    for cutover in [
        "demote_source",
        "promote_replica",
        "clone_replica",
        "verify_handover",
        "flatten_copy",
        "release_source",
    ] {
        assert!(names.iter().any(|n| n == cutover), "{cutover} in {names:?}");
    }
    let mut points = Vec::new();
    for (i, name) in names.iter().enumerate() {
        // in the middle of the wait first: once a run stopped at the wait's start, the
        // replica may finish syncing before the next run reports any progress
        if name == "wait_for_replica" {
            points.push(KillAt::Progress("sync"));
        }
        points.push(KillAt::StepStarted(i as u64));
    }

    let signals = if first == "INT" {
        ["INT", "TERM"]
    } else {
        ["TERM", "INT"]
    };
    let (mut landed, mut passed, mut worst) = (0, 0, 0.0f64);
    let mut run_args = args.clone();
    let mut finished = false;
    for (n, at) in points.iter().enumerate() {
        if at.step(&steps) < common::next_step(&state, &id) {
            passed += 1; // a late signal already carried the run past this point
            continue;
        }
        let sig = signals[n % 2];
        match interrupt_at(&run_args, &state, *at, sig) {
            None => {
                finished = true;
                passed += 1;
                break;
            }
            Some(s) => {
                landed += 1;
                worst = worst.max(s.seconds);
                let listed = match &s.resume {
                    Some(_) => listed_as_interrupted(&state, &id),
                    None => {
                        untouched(&a, &b, &image, &features);
                        "nothing recorded, nothing changed".into()
                    }
                };
                let step = match at {
                    KillAt::StepStarted(i) => format!("start of {}", names[*i as usize]),
                    _ => "in the middle of wait_for_replica (sync)".into(),
                };
                row(
                    &format!("SIG{sig} to the CLI ({mode}, clone handover)"),
                    &step,
                    &format!("{} / list: {listed}", s.message),
                    s.seconds,
                    if s.resume.is_some() {
                        "continued by the printed command"
                    } else {
                        "the same command, re-run, started it"
                    },
                );
                if let Some(resume) = &s.resume {
                    let expected = format!("rbd-relay resume {id} --state-dir '{state}'");
                    assert_eq!(*resume, expected);
                    run_args = args_of(&["resume", &id]);
                }
            }
        }
    }
    assert!(
        landed * 3 >= points.len() * 2,
        "only {landed} of {} signals landed ({passed} passed)",
        points.len()
    );
    if !finished {
        let last = run_until(&run_args, &state, KillAt::Never);
        assert!(last.status.success(), "{:?}\n{}", last.events, last.stderr);
        assert_eq!(last.last()["summary"]["sha256"], want.as_str());
    }
    handed_over(&a, &b, &image, &features, &want);
    let text = String::from_utf8_lossy(&relay(&["list"], &state).stdout).into_owned();
    assert!(text.contains("finished"), "{text}");
    eprintln!("signals {mode}: {landed} landed, {passed} passed, slowest stop {worst:.2} s");
    remove(&a, &b, &image);
}

#[test]
fn sigint_and_sigterm_at_every_step_of_a_snapshot_clone_migration_stop_within_2_s_and_resume() {
    interrupted_at_every_step("snapshot", "INT");
}

#[test]
fn sigterm_and_sigint_at_every_step_of_a_journal_clone_migration_stop_within_2_s_and_resume() {
    interrupted_at_every_step("journal", "TERM");
}

// ---------------------------------------------------------------------------------------
// The state directory: read-only, full, a damaged state file

/// A private mount namespace whose `dir` is a tmpfs mounted with `options`, kept alive by a
/// `sleep` this test started (and ends on drop); runs of the binary enter it with `nsenter`.
/// The host's mounts never change.
struct PrivateStateDir {
    holder: Child,
    dir: String,
}

impl PrivateStateDir {
    fn tmpfs(dir: &str, options: &str) -> Self {
        use std::io::BufRead;
        let script = format!(
            "mount -t tmpfs -o {options} rbd-relay-faults '{dir}' && echo ready && exec sleep 3600"
        );
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare (root needed)");
        let mut line = String::new();
        std::io::BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the tmpfs was not mounted");
        Self {
            holder,
            dir: dir.to_string(),
        }
    }

    /// `nsenter` into the namespace: the wrapper for [`common::run_json_via`].
    fn wrapper(&self) -> Vec<String> {
        args_of(&["nsenter", "-t", &self.holder.id().to_string(), "-m", "--"])
    }

    /// Run a shell script inside the namespace; it must succeed.
    fn sh(&self, script: &str) {
        let out = Command::new("nsenter")
            .args([
                "-t",
                &self.holder.id().to_string(),
                "-m",
                "sh",
                "-c",
                script,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{script}: {}", describe(&out));
    }

    /// Fill the tmpfs to the last block.
    fn fill(&self) {
        self.sh(&format!(
            "dd if=/dev/zero of='{}/filler' bs=4k 2>/dev/null; true",
            self.dir
        ));
    }

    fn run(&self, args: &[String], on_event: impl FnMut(&Value, u32) -> Watch) -> common::JsonRun {
        common::run_json_via(&self.wrapper(), args, &self.dir, on_event)
    }
}

impl Drop for PrivateStateDir {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// A run refused at its start because the state directory cannot be written: the error
/// names the state directory's file and what to do, and nothing changed on the clusters.
fn refused_at_the_start(fault: &str, options: &str, prepare: impl Fn(&PrivateStateDir)) {
    let env = testenv::shared().expect("testenv");
    let (a, b) = (env.site_a().name.clone(), env.site_b().name.clone());
    let (image, spec, features, _) = source(&a, "statedir", 8 << 20);
    let holder_dir = tempfile::tempdir().unwrap();
    let dir = holder_dir.path().to_str().unwrap().to_string();
    let private = PrivateStateDir::tmpfs(&dir, options);
    prepare(&private);
    let t = Instant::now();
    let run = private.run(&migrate_args(&a, &b, &spec, "snapshot"), |_, _| Watch::Go);
    let seconds = t.elapsed().as_secs_f64();
    assert_eq!(
        run.status.code(),
        Some(1),
        "{:?}\n{}",
        run.events,
        run.stderr
    );
    let err = error_line(&run.stderr);
    assert!(err.contains(&dir), "names the state directory: {err}");
    assert!(
        err.contains("--state-dir") || err.contains("RBD_RELAY_STATE_DIR"),
        "says what to do: {err}"
    );
    untouched(&a, &b, &image, &features);
    row(
        fault,
        "before the first step",
        &err,
        seconds,
        "nothing changed on either cluster",
    );
    remove(&a, &b, &image);
}

#[test]
fn a_read_only_state_directory_is_refused_before_anything_changes() {
    refused_at_the_start("state dir read-only", "size=4m,ro", |_| {});
}

#[test]
fn a_full_state_directory_is_refused_before_anything_changes() {
    refused_at_the_start("state dir full", "size=64k", |p| p.fill());
}

/// A run whose state directory becomes unwritable (by `break_it`) when step `at` starts:
/// it stops with an error naming the state file and what to do; the recorded state is
/// intact, and once `mend` made the directory usable again the same command converges to
/// the end state of an undisturbed run.
fn broken_in_the_middle(
    fault: &str,
    at_step: &str,
    break_it: impl Fn(&PrivateStateDir),
    mend: impl Fn(&PrivateStateDir),
) {
    let env = testenv::shared().expect("testenv");
    let _logs = env.log_guard();
    let (a, b) = (env.site_a().name.clone(), env.site_b().name.clone());
    let (image, spec, features, want) = source(&a, "statedir-mid", (24 << 20) + 99);
    let holder_dir = tempfile::tempdir().unwrap();
    let dir = holder_dir.path().to_str().unwrap().to_string();
    let private = PrivateStateDir::tmpfs(&dir, "size=2m");
    let args = migrate_args(&a, &b, &spec, "snapshot");
    let mut broken: Option<Instant> = None;
    let run = private.run(&args, |v, _| {
        if broken.is_none() && v["event"] == "step_started" && v["step"] == at_step {
            break_it(&private);
            broken = Some(Instant::now());
        }
        Watch::Go
    });
    let seconds = broken
        .unwrap_or_else(|| panic!("{at_step} never started: {:?}", run.events))
        .elapsed()
        .as_secs_f64();
    assert_eq!(
        run.status.code(),
        Some(1),
        "{:?}\n{}",
        run.events,
        run.stderr
    );
    let err = error_line(&run.stderr);
    assert!(
        err.contains(&format!("{dir}/")),
        "names the state file: {err}"
    );
    assert!(
        err.contains("re-run") || err.contains("resume"),
        "says what to do: {err}"
    );
    assert_eq!(run.last()["result"], "error", "{:?}", run.events);
    mend(&private);
    let again = private.run(&args, |_, _| Watch::Go);
    assert!(
        again.status.success(),
        "{:?}\n{}",
        again.events,
        again.stderr
    );
    assert_eq!(again.last()["summary"]["sha256"], want.as_str());
    handed_over(&a, &b, &image, &features, &want);
    row(
        fault,
        &format!("while {at_step} runs"),
        &err,
        seconds,
        "after freeing/remounting, the same command converged (same end state)",
    );
    remove(&a, &b, &image);
}

#[test]
fn a_state_directory_that_fills_up_mid_wait_stops_the_run_and_the_re_run_converges() {
    broken_in_the_middle(
        "state dir full",
        "wait_for_replica",
        |p| p.fill(),
        |p| p.sh(&format!("rm '{}/filler'", p.dir)),
    );
}

#[test]
fn a_state_directory_that_turns_read_only_at_the_demotion_stops_the_run_and_the_re_run_converges() {
    broken_in_the_middle(
        "state dir read-only",
        "demote_source",
        // a read-only bind mount over the directory (the run's open lock files keep a
        // remount of the tmpfs itself from turning it read-only); unmounted to mend it
        |p| {
            p.sh(&format!(
                "mount --bind '{d}' '{d}' && mount -o remount,bind,ro '{d}'",
                d = p.dir
            ))
        },
        |p| p.sh(&format!("umount '{}'", p.dir)),
    );
}

#[test]
fn a_truncated_state_file_is_recovered_from_its_backup_or_named_with_what_to_do() {
    let env = testenv::shared().expect("testenv");
    let _logs = env.log_guard();
    let (a, b) = (env.site_a().name.clone(), env.site_b().name.clone());
    let (image, spec, features, want) = source(&a, "truncated", (24 << 20) + 5);
    let state_dir = tempfile::tempdir().unwrap();
    let state = state_dir.path().to_str().unwrap().to_string();
    let args = migrate_args(&a, &b, &spec, "journal");
    let id_of = || -> String {
        let out = relay(&["list", "--output", "json"], &state);
        let first = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .map(str::to_string)
            .unwrap_or_else(|| panic!("nothing listed: {}", describe(&out)));
        serde_json::from_str::<Value>(&first).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let truncate = |path: &std::path::Path| {
        let bytes = std::fs::read(path).unwrap();
        std::fs::write(path, &bytes[..bytes.len() / 2]).unwrap();
    };

    // 1. killed in the wait, the state file then cut in half: the backup carries it on
    let run = run_until(&args, &state, KillAt::Progress("sync"));
    assert!(run.killed, "{:?}", run.events);
    let id = id_of();
    let file = state_dir.path().join(format!("{id}.json"));
    truncate(&file);
    // resumed up to the step after the wait, so that the migration is still unfinished
    let after_wait = run
        .events
        .iter()
        .find(|v| v["event"] == "step_started" && v["step"] == "wait_for_replica")
        .and_then(|v| v["index"].as_u64())
        .unwrap()
        + 1;
    let t = Instant::now();
    let resumed = run_until(
        &args_of(&["resume", &id]),
        &state,
        KillAt::StepStarted(after_wait),
    );
    let seconds = t.elapsed().as_secs_f64();
    let said = resumed
        .stderr
        .lines()
        .find(|l| l.contains("using its backup"))
        .unwrap_or_else(|| panic!("no word of the backup: {}", resumed.stderr))
        .to_string();
    assert!(said.contains(file.to_str().unwrap()), "{said}");
    row(
        "state file truncated (its backup intact)",
        "after a kill in wait_for_replica, before the re-run",
        &said,
        seconds,
        "resumed from the backup (that step ran again)",
    );

    // 2. the state file and its backup both cut: named, with what to do; nothing changed
    let before = info(&a, &spec);
    truncate(&file);
    truncate(&rbd_mirror_core::state::backup_path(&file));
    let t = Instant::now();
    let out = relay(&["resume", &id], &state);
    let seconds = t.elapsed().as_secs_f64();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = error_line(&String::from_utf8_lossy(&out.stderr));
    assert!(err.contains(file.to_str().unwrap()), "{err}");
    assert!(err.contains("move it away"), "{err}");
    assert_eq!(info(&a, &spec), before, "nothing changed");
    let listed = relay(&["list"], &state);
    let listed_err = String::from_utf8_lossy(&listed.stderr).into_owned()
        + &String::from_utf8_lossy(&listed.stdout);
    assert!(listed_err.contains(file.to_str().unwrap()), "{listed_err}");
    // as it says: moved away, the same command starts over, taking the source's original
    // features from its marker, and ends as an undisturbed run
    std::fs::rename(&file, state_dir.path().join("damaged.json.away")).unwrap();
    let _ = std::fs::remove_file(rbd_mirror_core::state::backup_path(&file));
    let last = run_until(&args, &state, KillAt::Never);
    assert!(last.status.success(), "{:?}\n{}", last.events, last.stderr);
    assert_eq!(last.last()["summary"]["sha256"], want.as_str());
    handed_over(&a, &b, &image, &features, &want);
    row(
        "state file and its backup truncated",
        "after a kill in wait_for_replica",
        &err,
        seconds,
        "moved away as told; the same command converged (originals from the source's marker)",
    );
    remove(&a, &b, &image);
}

// ---------------------------------------------------------------------------------------
// Two hosts, one migration

#[test]
fn the_same_migration_from_another_host_or_state_dir_is_refused_naming_the_first_run() {
    let env = testenv::shared().expect("testenv");
    let _logs = env.log_guard();
    let (a, b) = (env.site_a().name.clone(), env.site_b().name.clone());
    let (image, spec, features, want) = source(&a, "twohosts", (16 << 20) + 3);
    let first_dir = tempfile::tempdir().unwrap();
    let first = first_dir.path().to_str().unwrap().to_string();
    let args = migrate_args(&a, &b, &spec, "snapshot");

    // host 1 changed the source (features, mirroring, marker) and was killed in the wait
    let run = run_until(&args, &first, KillAt::StepStarted(2));
    assert!(run.killed, "{:?}\n{}", run.events, run.stderr);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let marker_before = try_rbd(
        &a,
        &[
            "image-meta",
            "get",
            &spec,
            rbd_mirror_core::preflight::SOURCE_MARKER_KEY,
        ],
    )
    .expect("the first run marked the source");
    let info_before = info(&a, &spec);
    let first_canonical = std::fs::canonicalize(&first).unwrap();

    // host 2 (another host name in a UTS namespace) with its own state directory, and this
    // host with a second state directory
    for other_host in [Some("relay-host-two"), None] {
        let second_dir = tempfile::tempdir().unwrap();
        let second = second_dir.path().to_str().unwrap();
        let mut command = match other_host {
            Some(h) => {
                let mut c = Command::new("unshare");
                c.args([
                    "--uts",
                    "sh",
                    "-c",
                    &format!("hostname {h} && exec \"$0\" \"$@\""),
                    BIN,
                ]);
                c
            }
            None => Command::new(BIN),
        };
        let t = Instant::now();
        let out = command
            .args(&args)
            .args(["--state-dir", second])
            .env_remove("OS_CLOUD")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let seconds = t.elapsed().as_secs_f64();
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let err = error_line(&stderr);
        let all = stderr.to_string();
        assert!(
            all.contains(&format!(
                "run from host {host} with state dir {}",
                first_canonical.display()
            )),
            "names the first run's host and state dir: {all}"
        );
        assert!(
            all.contains("continue or abort that migration where it runs"),
            "says what to do: {all}"
        );
        // nothing changed: the source as the first run left it, no state in the second dir
        assert_eq!(info(&a, &spec), info_before);
        assert_eq!(
            try_rbd(
                &a,
                &[
                    "image-meta",
                    "get",
                    &spec,
                    rbd_mirror_core::preflight::SOURCE_MARKER_KEY
                ]
            )
            .unwrap(),
            marker_before
        );
        assert!(
            !std::fs::read_dir(second).unwrap().any(|e| e
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json")),
            "no state recorded by the refused run"
        );
        row(
            match other_host {
                Some(_) => "same migration from a second host (own state dir)",
                None => "same migration from this host with a second state dir",
            },
            "while the first run is stopped in wait_for_replica",
            &err,
            seconds,
            "refused, nothing changed; the first run's resume converged",
        );
    }

    // where it runs, it continues to the end state of an undisturbed run
    let last = run_until(&args, &first, KillAt::Never);
    assert!(last.status.success(), "{:?}\n{}", last.events, last.stderr);
    assert_eq!(last.last()["summary"]["sha256"], want.as_str());
    handed_over(&a, &b, &image, &features, &want);
    remove(&a, &b, &image);
}

// ---------------------------------------------------------------------------------------
// Keystone and Cinder down, slow, failing: a fault-injecting proxy in front of each

/// A TCP proxy in front of one real OpenStack service that fails chosen HTTP requests. Each
/// forwarded request gets `Connection: close`, so every request comes on a connection of its
/// own and is seen here.
mod proxy {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// What happens to a request the filter matches.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Fault {
        /// Forwarded.
        None,
        /// The service goes down at this request: the request is dropped unanswered and
        /// the port refuses connections until the fault is cleared.
        Down,
        /// Never answered (the service hangs).
        Hang,
        /// Answered `503 Service Unavailable` without reaching the service.
        Fail5xx,
        /// Forwarded (the service does the work), but its answer is replaced by a 503.
        LoseAnswer,
    }

    struct Setting {
        fault: Fault,
        /// (method, path end) of the requests the fault applies to; `None`: all.
        only: Option<(String, String)>,
        down: bool,
    }

    pub struct Proxy {
        pub port: u16,
        setting: Arc<Mutex<Setting>>,
        hits: Arc<AtomicUsize>,
        stop: Arc<AtomicBool>,
    }

    impl Proxy {
        /// A proxy on a free local port forwarding to `upstream` (`HOST:PORT`).
        pub fn start(upstream: &str) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let setting = Arc::new(Mutex::new(Setting {
                fault: Fault::None,
                only: None,
                down: false,
            }));
            let hits = Arc::new(AtomicUsize::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let (s, h, st, up) = (
                setting.clone(),
                hits.clone(),
                stop.clone(),
                upstream.to_string(),
            );
            std::thread::spawn(move || accept_loop(Some(listener), port, s, h, st, up));
            Self {
                port,
                setting,
                hits,
                stop,
            }
        }

        /// From now on, `fault` for the requests `only` matches (method and the end of the
        /// path), or for all.
        pub fn set(&self, fault: Fault, only: Option<(&str, &str)>) {
            let mut s = self.setting.lock().unwrap();
            s.fault = fault;
            s.only = only.map(|(m, p)| (m.to_string(), p.to_string()));
            s.down = false;
            self.hits.store(0, Ordering::SeqCst);
        }

        /// How many requests met the fault since it was set.
        pub fn hits(&self) -> usize {
            self.hits.load(Ordering::SeqCst)
        }
    }

    impl Drop for Proxy {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
        }
    }

    fn accept_loop(
        mut listener: Option<TcpListener>,
        port: u16,
        setting: Arc<Mutex<Setting>>,
        hits: Arc<AtomicUsize>,
        stop: Arc<AtomicBool>,
        upstream: String,
    ) {
        while !stop.load(Ordering::SeqCst) {
            let down = setting.lock().unwrap().down;
            if down {
                listener = None; // the port refuses connections
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            let l = match &listener {
                Some(l) => l,
                None => match TcpListener::bind(("127.0.0.1", port)) {
                    Ok(l) => listener.insert(l),
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                },
            };
            l.set_nonblocking(true).unwrap();
            match l.accept() {
                Ok((c, _)) => {
                    let (s, h, up) = (setting.clone(), hits.clone(), upstream.clone());
                    std::thread::spawn(move || serve(c, &s, &h, &up));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }

    fn serve(mut c: TcpStream, setting: &Mutex<Setting>, hits: &AtomicUsize, upstream: &str) {
        let _ = c.set_nonblocking(false);
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match c.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut first = head.lines().next().unwrap_or("").split_whitespace();
        let (method, path) = (
            first.next().unwrap_or("").to_string(),
            first.next().unwrap_or("").to_string(),
        );
        let fault = {
            let mut s = setting.lock().unwrap();
            let applies = s
                .only
                .as_ref()
                .is_none_or(|(m, p)| *m == method && path.ends_with(p.as_str()));
            if s.down {
                return;
            }
            if applies && s.fault != Fault::None {
                hits.fetch_add(1, Ordering::SeqCst);
                if s.fault == Fault::Down {
                    s.down = true;
                }
                s.fault
            } else {
                Fault::None
            }
        };
        match fault {
            Fault::Down => {
                let _ = c.shutdown(Shutdown::Both);
            }
            Fault::Hang => {
                // hold the connection until the client gives up
                while matches!(c.read(&mut chunk), Ok(n) if n > 0) {}
            }
            Fault::Fail5xx => reply_503(&mut c),
            Fault::None | Fault::LoseAnswer => {
                let Ok(mut up) = TcpStream::connect(upstream) else {
                    return;
                };
                let mut out = String::new();
                for line in head[..head.len() - 2]
                    .split("\r\n")
                    .filter(|l| !l.is_empty())
                {
                    if !line.to_ascii_lowercase().starts_with("connection:") {
                        out.push_str(line);
                        out.push_str("\r\n");
                    }
                }
                out.push_str("Connection: close\r\n\r\n");
                if up.write_all(out.as_bytes()).is_err() || up.write_all(&buf[head_end..]).is_err()
                {
                    return;
                }
                // the rest of the body, client to service
                let (mut from, mut to) = (c.try_clone().unwrap(), up.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                });
                if fault == Fault::LoseAnswer {
                    let _ = std::io::copy(&mut up, &mut std::io::sink());
                    reply_503(&mut c);
                } else {
                    let _ = std::io::copy(&mut up, &mut c);
                }
                let _ = c.shutdown(Shutdown::Both);
            }
        }
    }

    fn reply_503(c: &mut TcpStream) {
        let body =
            r#"{"message": "Service Unavailable (injected by faults_local_real)", "code": 503}"#;
        let _ = write!(
            c,
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = c.shutdown(Shutdown::Both);
    }
}

use proxy::{Fault, Proxy};

/// `http://HOST:PORT/path` as (`HOST:PORT`, the URL with its port replaced by `port`).
fn behind(url: &str, port: u16) -> (String, String) {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("not an http:// URL: {url}"));
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    let upstream = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    (
        upstream,
        format!("http://{host}:{port}{}", path.trim_end_matches('/')),
    )
}

/// The destination cloud behind three proxies (Keystone, Cinder, Glance): a clouds.yaml
/// with one cloud `faults`, its requests limited to `api_timeout` seconds.
struct CloudBehindProxies {
    keystone: Proxy,
    cinder: Proxy,
    glance: Proxy,
    keystone_url: String,
    cinder_url: String,
    _dir: tempfile::TempDir,
    clouds_yaml: String,
}

const API_TIMEOUT_S: u64 = 4;

impl CloudBehindProxies {
    fn new(os: &testenv::openstack::OpenStackInfo) -> Self {
        let d = &os.destination;
        let (k_up, _) = behind(&os.keystone_url, 1);
        let keystone = Proxy::start(&k_up);
        let (_, keystone_url) = behind(&os.keystone_url, keystone.port);
        let cinder_real = d.cinder_project_url(&os.admin.project_id);
        let (c_up, _) = behind(&cinder_real, 1);
        let cinder = Proxy::start(&c_up);
        let (_, cinder_url) = behind(&cinder_real, cinder.port);
        let (g_up, _) = behind(&d.glance_url, 1);
        let glance = Proxy::start(&g_up);
        let (_, glance_url) = behind(&d.glance_url, glance.port);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clouds.yaml");
        let a = &os.admin;
        std::fs::write(
            &path,
            format!(
                "clouds:\n  faults:\n    auth:\n      auth_url: {keystone_url}\n      username: {}\n      password: '{}'\n      project_name: {}\n      user_domain_name: Default\n      project_domain_name: Default\n    region_name: {}\n    interface: public\n    identity_api_version: 3\n    api_timeout: {API_TIMEOUT_S}\n    block_storage_endpoint_override: {cinder_url}\n    image_endpoint_override: {glance_url}\n",
                a.username, a.password, a.project_name, d.region
            ),
        )
        .unwrap();
        Self {
            keystone,
            cinder,
            glance,
            keystone_url,
            cinder_url,
            clouds_yaml: path.to_str().unwrap().to_string(),
            _dir: dir,
        }
    }

    /// Run ARGS with this clouds.yaml, to its end; returns (run, seconds from the start of
    /// step `from` (or of the run, when it never starts) to the run's end).
    fn run(&self, args: &[String], state: &str, from: &str) -> (common::JsonRun, f64) {
        let wrapper = args_of(&[
            "env",
            &format!("OS_CLIENT_CONFIG_FILE={}", self.clouds_yaml),
        ]);
        let mut t = Instant::now();
        let run = common::run_json_via(&wrapper, args, state, |v, _| {
            if v["event"] == "step_started" && v["step"] == from {
                t = Instant::now();
            }
            Watch::Go
        });
        (run, t.elapsed().as_secs_f64())
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The destination Cinder, asked directly (not through a proxy).
async fn real_cinder(os: &testenv::openstack::OpenStackInfo) -> cinder_manage::Cinder {
    let sources = openstack_client::ConfigSources {
        clouds_files: vec![os.clouds_yaml.clone()],
        ..Default::default()
    };
    let cfg =
        openstack_client::CloudConfig::from_sources(&sources, Some(&os.destination.admin_cloud))
            .unwrap();
    let client = openstack_client::OpenStackClient::connect(cfg, Default::default())
        .await
        .unwrap();
    cinder_manage::Cinder::new(client, cinder_manage::Side::Destination)
}

/// Every volume of every project of the destination cloud named `name`.
async fn volumes_named(os: &testenv::openstack::OpenStackInfo, name: &str) -> Vec<Value> {
    let c = real_cinder(os).await;
    let v: Value = c
        .client()
        .send_json(
            &openstack_client::ApiRequest::new(
                openstack_client::ServiceType::BlockStorage,
                openstack_client::Method::GET,
                "volumes/detail",
            )
            .microversion("volume", cinder_manage::MICROVERSION_NEEDED.to_string())
            .query("all_tenants", "1")
            .query("name", name),
        )
        .await
        .unwrap();
    v["volumes"].as_array().cloned().unwrap_or_default()
}

#[test]
fn keystone_and_cinder_down_slow_or_failing_during_adopt_are_named_and_nothing_is_adopted_twice() {
    let env = testenv::shared_with_openstack().expect("test environment with OpenStack");
    let _logs = env.log_guard();
    let os = env.openstack().expect("OpenStack clouds").clone();
    let (a, b) = (env.site_a().name.clone(), env.site_b().name.clone());
    let cloud = CloudBehindProxies::new(&os);
    let (image, spec, features, want) = source(&a, "cloudfault", (12 << 20) + 1);
    let state_dir = tempfile::tempdir().unwrap();
    let state = state_dir.path().to_str().unwrap().to_string();
    let vol_name = format!("vol-{image}");
    let args = args_of(&[
        "migrate",
        "volume",
        "--from",
        &a,
        "--to",
        &b,
        &spec,
        "--into",
        &os.destination.volume_pool,
        "--adopt",
        "--os-cloud",
        "faults",
        "--name",
        &vol_name,
    ]);

    // Keystone: asked when the run connects, before anything changes
    for (fault, what) in [
        (Fault::Down, "Keystone down"),
        (Fault::Hang, "Keystone slow (no answer)"),
        (Fault::Fail5xx, "Keystone answers 503"),
    ] {
        cloud.keystone.set(fault, None);
        let (run, seconds) = cloud.run(&args, &state, "adopt_volume");
        assert_eq!(
            run.status.code(),
            Some(1),
            "{what}: {:?}\n{}",
            run.events,
            run.stderr
        );
        assert!(cloud.keystone.hits() > 0, "{what}: the fault was never met");
        let err = error_line(&run.stderr);
        assert!(err.contains("faults"), "{what}: names the cloud: {err}");
        assert!(err.contains("Keystone"), "{what}: names the service: {err}");
        assert!(err.contains("re-run"), "{what}: says what to do: {err}");
        assert!(
            err.contains(&cloud.keystone_url)
                || err.contains(&format!("127.0.0.1:{}", cloud.keystone.port)),
            "{what}: names the endpoint: {err}"
        );
        untouched(&a, &b, &image, &features);
        row(
            what,
            "when the run connects (before any change)",
            &err,
            seconds,
            "nothing changed; the re-run went ahead",
        );
    }
    cloud.keystone.set(Fault::None, None);

    // Cinder: the adoption's manage request meets each fault in turn; every run stops
    // naming Cinder and its endpoint, and the next one resumes at the adoption
    let manage = Some(("POST", "/manageable_volumes"));
    for (fault, what) in [
        (Fault::Down, "Cinder down"),
        (Fault::Hang, "Cinder slow (no answer)"),
        (Fault::Fail5xx, "Cinder answers 503"),
        (
            Fault::LoseAnswer,
            "Cinder manages, but its answer is lost (503)",
        ),
    ] {
        cloud.cinder.set(fault, manage);
        let (run, seconds) = cloud.run(&args, &state, "adopt_volume");
        assert_eq!(
            run.status.code(),
            Some(1),
            "{what}: {:?}\n{}",
            run.events,
            run.stderr
        );
        assert_eq!(
            cloud.cinder.hits(),
            1,
            "{what}: the manage request met the fault once: {:?}\n{}",
            run.events,
            run.stderr
        );
        let started = run
            .events
            .iter()
            .any(|v| v["event"] == "step_started" && v["step"] == "adopt_volume");
        assert!(
            started,
            "{what}: stopped before the adoption: {:?}",
            run.events
        );
        let err = error_line(&run.stderr);
        assert!(
            err.contains(&cloud.cinder_url)
                || err.contains(&format!("127.0.0.1:{}", cloud.cinder.port)),
            "{what}: names the Cinder endpoint: {err}"
        );
        assert!(
            err.to_lowercase().contains("cinder") || err.contains("block-storage"),
            "{what}: names Cinder: {err}"
        );
        assert!(
            err.contains("re-run") || err.contains("resume"),
            "{what}: says what to do: {err}"
        );
        assert_eq!(sha(&a, &spec), want, "{what}: source data");
        row(
            what,
            "adopt_volume (Cinder manage)",
            &err,
            seconds,
            "the re-run adopted it (one volume)",
        );
    }
    cloud.cinder.set(Fault::None, None);
    let (run, _) = cloud.run(&args, &state, "adopt_volume");
    assert!(run.status.success(), "{:?}\n{}", run.events, run.stderr);
    let vol = &run.last()["summary"]["volume"];
    let id = vol["id"].as_str().unwrap().to_string();
    let found = rt().block_on(volumes_named(&os, &vol_name));
    assert_eq!(found.len(), 1, "adopted once: {found:?}");
    assert_eq!(found[0]["id"], id.as_str());
    assert_eq!(found[0]["status"], "available");
    let renamed = format!("{}/volume-{id}", os.destination.volume_pool);
    // grown to 1 GiB for Cinder before the adoption (grow_copy): its first bytes are the source's
    assert_eq!(
        testenv::probe::sha_of_first(&b, &renamed, (12 << 20) + 1),
        want
    );
    wait_gone(&b, &spec, common::REPLICA_GONE_LIMIT);
    assert!(mirroring_off(&a, &spec));
    assert_eq!(info(&a, &spec)["features"], features);

    rt().block_on(async {
        real_cinder(&os).await.unmanage(&id).await.unwrap();
    });
    let _ = try_rbd(&b, &["rm", "--no-progress", &renamed]);
    let _ = try_rbd(&a, &["rm", "--no-progress", &spec]);
}

/// Every image of the destination Glance named `name`.
async fn images_named(os: &testenv::openstack::OpenStackInfo, name: &str) -> Vec<Value> {
    let c = real_cinder(os).await;
    let v: Value = c
        .client()
        .send_json(
            &openstack_client::ApiRequest::new(
                openstack_client::ServiceType::Image,
                openstack_client::Method::GET,
                "v2/images",
            )
            .query("name", name),
        )
        .await
        .unwrap();
    v["images"].as_array().cloned().unwrap_or_default()
}

#[test]
fn glance_down_slow_or_failing_during_register_is_named_and_nothing_is_registered_twice() {
    let env = testenv::shared_with_openstack().expect("test environment with OpenStack");
    let _logs = env.log_guard();
    let os = env.openstack().expect("OpenStack clouds").clone();
    let b = env.site_b().name.clone();
    let cloud = CloudBehindProxies::new(&os);
    let name = testenv::unique_name("glancefault");
    let spec = format!("{}/{name}", os.destination.image_pool);
    image_with_data(&b, &spec, (4 << 20) + 7);
    let snap = format!("{spec}@snap");
    try_rbd(&b, &["snap", "create", &snap]).unwrap();
    try_rbd(&b, &["snap", "protect", &snap]).unwrap();
    let state_dir = tempfile::tempdir().unwrap();
    let state = state_dir.path().to_str().unwrap().to_string();
    let image_name = format!("img-{name}");
    let args = args_of(&[
        "register",
        "image",
        &spec,
        "--to",
        &b,
        "--os-cloud",
        "faults",
        "--name",
        &image_name,
        "--min-disk",
        "1",
    ]);
    let create = Some(("POST", "/v2/images"));
    for (fault, what) in [
        (Fault::Down, "Glance down"),
        (Fault::Hang, "Glance slow (no answer)"),
        (Fault::Fail5xx, "Glance answers 503"),
        (
            Fault::LoseAnswer,
            "Glance creates the image, but its answer is lost (503)",
        ),
    ] {
        cloud.glance.set(fault, create);
        let (run, seconds) = cloud.run(&args, &state, "register_image");
        assert_eq!(
            run.status.code(),
            Some(1),
            "{what}: {:?}\n{}",
            run.events,
            run.stderr
        );
        assert_eq!(
            cloud.glance.hits(),
            1,
            "{what}: the create request met the fault once"
        );
        let err = error_line(&run.stderr);
        assert!(
            err.contains(&format!("127.0.0.1:{}", cloud.glance.port)),
            "{what}: names the Glance endpoint: {err}"
        );
        assert!(err.contains("Glance"), "{what}: names Glance: {err}");
        assert!(
            err.contains("re-run") || err.contains("resume"),
            "{what}: says what to do: {err}"
        );
        row(
            what,
            "register_image (Glance image by rbd:// location)",
            &err,
            seconds,
            "the re-run registered it (one image)",
        );
    }
    cloud.glance.set(Fault::None, None);
    let (run, _) = cloud.run(&args, &state, "register_image");
    assert!(run.status.success(), "{:?}\n{}", run.events, run.stderr);
    let found = rt().block_on(images_named(&os, &image_name));
    assert_eq!(found.len(), 1, "registered once: {found:?}");
    assert_eq!(found[0]["status"], "active", "{found:?}");
    let id = found[0]["id"].as_str().unwrap().to_string();
    // cleanup: the image record, then the RBD image
    rt().block_on(async {
        let c = real_cinder(&os).await;
        let _ = c
            .client()
            .send_empty(&openstack_client::ApiRequest::new(
                openstack_client::ServiceType::Image,
                openstack_client::Method::DELETE,
                format!("v2/images/{id}"),
            ))
            .await;
    });
    let _ = try_rbd(&b, &["snap", "unprotect", &snap]);
    let _ = try_rbd(&b, &["snap", "purge", &spec]);
    let _ = try_rbd(&b, &["rm", "--no-progress", &spec]);
}
