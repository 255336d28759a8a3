//! The Ceph rows of the fault matrix (docs/reliability.md, "Ceph faults"), run for real: the
//! `rbd-relay` binary migrates a small volume between the pair `testenv env` points to while
//! a daemon of that pair is taken away (rbd-mirror killed or hung), a cluster's OSDs serve
//! nothing (`ceph osd pause`) or the destination pool fills up (its quota). Each row checks what the user sees (exit code, the
//! message naming the cause and the command that continues), how long it took to say so,
//! that no source byte changed and the source is in its safe state, and that once the fault
//! is gone the printed command ends in the same state as an undisturbed run.
//!
//! An OSD is "stopped" with `ceph osd pause` (see [`Paused`]): the test OSDs keep their data
//! in memory (memstore), so a killed one would lose it, and a SIGSTOPped one left its PGs
//! laggy after SIGCONT; to a client, held I/O is what a dead OSD is to a pool with no other
//! copy: no answer.
//!
//! Its own test binary: it stops daemons of the shared pair, so its tests run one at a time
//! (a lock), and each brings back what it took away even when it fails (a guard), so the
//! test binaries after it find the pair as before.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;
use testenv::probe::{image_with_data, info, mirroring_off, rbd, sha, wait_gone, wait_until};
use testenv::Daemon;

mod common;
use common::{relay, run_json, JsonRun, Watch, REPLICA_GONE_LIMIT};

/// How soon a lost rbd-mirror daemon must be named.
const DAEMON_NAMED_WITHIN: Duration = Duration::from_secs(10);
/// How soon OSDs that do not answer or a full pool must be named: Ceph's client gives up on
/// a call after its op timeout (30 s in rbd-relay); the copy's writer gives up on a write 40 s
/// after sending it, and its other threads each wait for at most one call in flight.
const TIMEOUT_NAMED_WITHIN: Duration = Duration::from_secs(75);
/// A run that is still going after this is killed (a hang is a failure, not a stuck CI).
const RUN_LIMIT: Duration = Duration::from_secs(240);

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn send(pid: i32, signal: &str) -> bool {
    Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

fn ceph(site: &str, args: &[&str]) -> String {
    let out = Command::new("ceph")
        .args(["--cluster", site])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ceph --cluster {site} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A daemon of the pair this test took away; dropping it brings it back (also when the test
/// fails): a stopped one gets SIGCONT, a killed rbd-mirror is restarted by testenv.
struct Away {
    pid: i32,
    killed: bool,
    site: String,
    daemon: Daemon,
}

impl Away {
    fn take(site: &str, daemon: Daemon, signal: &str) -> Self {
        let env = testenv::shared().expect("testenv");
        let pid = env
            .daemon_pid(site, daemon)
            .unwrap_or_else(|| panic!("no pid file of {daemon} on {site}"));
        assert!(send(pid, signal), "kill -{signal} {daemon} on {site}");
        Away {
            pid,
            killed: signal == "KILL",
            site: site.to_string(),
            daemon,
        }
    }
}

impl Drop for Away {
    fn drop(&mut self) {
        if !self.killed {
            send(self.pid, "CONT");
            return;
        }
        let t = Instant::now();
        while std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
            && t.elapsed() < Duration::from_secs(30)
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Err(e) = testenv::shared() {
            eprintln!("could not bring back {} on {}: {e}", self.daemon, self.site);
        }
    }
}

/// A cluster whose OSDs serve no client I/O (`ceph osd pause`): reads and writes are held,
/// as when its OSD is down or cut off, while its monitors answer; dropping it unpauses.
///
/// Not SIGSTOP of the OSD process: continued, the PGs of a size-1 pool stayed
/// `active+clean+laggy` with blocked ops, even after re-peering (`ceph osd down`), minutes
/// later (Ceph 16.2), which would break the tests that follow.
struct Paused {
    site: String,
}

impl Paused {
    fn new(site: &str) -> Self {
        ceph(site, &["osd", "pause"]);
        Paused {
            site: site.to_string(),
        }
    }

    /// Pauses and waits until the cluster's OSD map carries the pause flags.
    fn in_effect(site: &str) -> Self {
        let paused = Self::new(site);
        wait_until("the OSD map paused", Duration::from_secs(60), || {
            let map: Value =
                serde_json::from_str(&ceph(site, &["osd", "dump", "--format", "json"])).unwrap();
            let flags = map["flags"].as_str().unwrap_or("");
            Ok(flags.contains("pauserd") && flags.contains("pausewr"))
        });
        paused
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        let _ = Command::new("ceph")
            .args(["--cluster", &self.site, "osd", "unpause"])
            .output();
    }
}

/// A pool of its own on the destination, for the quota rows (a quota on a shared pool would
/// hold the writes of other tests); dropping it lifts the quota and removes the pool.
struct OwnPool {
    site: String,
    name: String,
}

impl OwnPool {
    /// The pool, holding a 4 MiB filler image, once the cluster's statistics count it (a
    /// quota below what a pool stores marks it full at once, not after the next stats).
    fn with_filler(site: &str) -> Self {
        let name = testenv::unique_name("faults");
        ceph(site, &["osd", "pool", "create", &name, "8", "8"]);
        let pool = OwnPool {
            site: site.to_string(),
            name,
        };
        rbd(site, &["pool", "init", &pool.name]);
        image_with_data(site, &format!("{}/filler", pool.name), 4 << 20);
        wait_until("the filler counted in df", Duration::from_secs(60), || {
            Ok(pool.stored() >= 4 << 20)
        });
        pool
    }

    fn stored(&self) -> u64 {
        let df: Value =
            serde_json::from_str(&ceph(&self.site, &["df", "--format", "json"])).unwrap();
        df["pools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == self.name.as_str())
            .map_or(0, |p| p["stats"]["stored"].as_u64().unwrap_or(0))
    }

    fn flagged_full(&self) -> bool {
        let pools: Value = serde_json::from_str(&ceph(
            &self.site,
            &["osd", "pool", "ls", "detail", "--format", "json"],
        ))
        .unwrap();
        pools
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["pool_name"] == self.name.as_str())
            .is_some_and(|p| p["flags_names"].as_str().unwrap_or("").contains("full"))
    }

    /// Sets a 1 MiB byte quota (below the filler) and waits until the pool is flagged full.
    fn fill(&self) {
        ceph(
            &self.site,
            &[
                "osd",
                "pool",
                "set-quota",
                &self.name,
                "max_bytes",
                "1048576",
            ],
        );
        wait_until("the pool flagged full", Duration::from_secs(60), || {
            Ok(self.flagged_full())
        });
    }

    fn lift_quota(&self) {
        ceph(
            &self.site,
            &["osd", "pool", "set-quota", &self.name, "max_bytes", "0"],
        );
    }
}

impl Drop for OwnPool {
    fn drop(&mut self) {
        let _ = Command::new("ceph")
            .args(["--cluster", &self.site, "osd", "pool", "set-quota"])
            .args([&self.name, "max_bytes", "0"])
            .output();
        let _ = Command::new("ceph")
            .args(["--cluster", &self.site, "osd", "pool", "rm"])
            .args([&self.name, &self.name, "--yes-i-really-really-mean-it"])
            .output();
    }
}

/// A migration of a fresh 24 MiB volume (patterned data) and what it started from.
struct Volume {
    a: String,
    b: String,
    image: String,
    spec: String,
    into: String,
    sha: String,
    features: Value,
    state: tempfile::TempDir,
}

impl Volume {
    fn new(prefix: &str, into: &str) -> Self {
        Self::sized(prefix, into, 24 << 20)
    }

    fn sized(prefix: &str, into: &str, bytes: usize) -> Self {
        let env = testenv::shared().expect("testenv");
        let (a, b) = (env.site_a().name.clone(), env.site_b().name.clone());
        let image = testenv::unique_name(prefix);
        let spec = format!("volumes/{image}");
        image_with_data(&a, &spec, bytes);
        Volume {
            sha: sha(&a, &spec),
            features: info(&a, &spec)["features"].clone(),
            a,
            b,
            image,
            spec,
            into: into.to_string(),
            state: tempfile::tempdir().unwrap(),
        }
    }

    fn state(&self) -> &str {
        self.state.path().to_str().unwrap()
    }

    fn copy(&self) -> String {
        format!("{}/{}", self.into, self.image)
    }

    fn args(&self, mode: &str, handover: &str, more: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "migrate",
            "volume",
            "--from",
            &self.a,
            "--to",
            &self.b,
            &self.spec,
            "--into",
            &self.into,
            "--mode",
            mode,
            "--handover",
            handover,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(more.iter().map(|s| s.to_string()));
        args
    }

    /// Whether the source is primary (writable) for mirroring, or has mirroring off.
    fn source_primary(&self) -> bool {
        let i = info(&self.a, &self.spec);
        i.get("mirroring")
            .is_none_or(|m| m["state"] == "disabled" || m["primary"] == true)
    }

    /// The printed command that continues, run as a user pastes it: must end as an
    /// undisturbed run does (the copy equal to the source, the source as it was, with
    /// mirroring off, and the replica gone).
    fn continue_and_check(&self, stderr: &str) -> Duration {
        let command = stderr
            .lines()
            .find_map(|l| l.split("continue with: ").nth(1))
            .unwrap_or_else(|| panic!("no command to continue with: {stderr}"))
            .trim()
            .to_string();
        assert!(command.starts_with("rbd-relay resume "), "{command}");
        let t = Instant::now();
        let out = Command::new("sh")
            .arg("-c")
            .arg(command.replacen("rbd-relay", common::BIN, 1))
            .output()
            .unwrap();
        let took = t.elapsed();
        assert!(out.status.success(), "{}", common::describe(&out));
        self.check_end_state();
        took
    }

    fn check_end_state(&self) {
        assert_eq!(sha(&self.a, &self.spec), self.sha, "a source byte changed");
        assert_eq!(sha(&self.b, &self.copy()), self.sha, "the copy");
        assert_eq!(info(&self.a, &self.spec)["features"], self.features);
        assert!(mirroring_off(&self.a, &self.spec));
        let snaps = rbd(&self.a, &["snap", "ls", "--all", &self.spec]);
        assert!(
            snaps.trim().is_empty(),
            "snapshots left on the source: {snaps}"
        );
        let listed = String::from_utf8_lossy(&relay(&["list"], self.state()).stdout).into_owned();
        assert!(listed.contains("finished"), "{listed}");
        wait_gone(&self.b, &self.spec, REPLICA_GONE_LIMIT);
    }

    fn remove(&self) {
        rbd(&self.a, &["rm", "--no-progress", &self.spec]);
        rbd(&self.b, &["rm", "--no-progress", &self.copy()]);
    }
}

/// A run that met a fault.
struct Faulted<G> {
    run: JsonRun,
    /// From the fault to the error line (or to the event `said` picked).
    seconds: f64,
    /// What brings the fault back (dropped: the fault is gone).
    guard: Option<G>,
}

/// Run `args`; at the first event `at` accepts, `inject` the fault (it returns the guard
/// that undoes it); the run is timed from then until the first event `said` accepts.
fn run_with_fault<G>(
    args: &[String],
    state: &str,
    at: impl Fn(&Value) -> bool,
    inject: impl FnOnce(u32) -> G,
    said: impl Fn(&Value) -> bool,
) -> Faulted<G> {
    let mut inject = Some(inject);
    let mut guard = None;
    let mut injected: Option<Instant> = None;
    let mut seconds = f64::NAN;
    let done = Arc::new(AtomicBool::new(false));
    let mut watchdog = false;
    let run = run_json(args, state, |v, pid| {
        if !watchdog {
            watchdog = true;
            let done = done.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                while t.elapsed() < RUN_LIMIT {
                    if done.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                eprintln!("run still going after {RUN_LIMIT:?}: killed");
                send(pid as i32, "KILL");
            });
        }
        if injected.is_none() && at(v) {
            guard = inject.take().map(|f| f(pid));
            injected = Some(Instant::now());
        } else if let Some(t) = injected {
            if seconds.is_nan() && said(v) {
                seconds = t.elapsed().as_secs_f64();
            }
        }
        Watch::Go
    });
    done.store(true, Ordering::Relaxed);
    assert!(
        injected.is_some(),
        "the fault point was never reached: {:?}\n{}",
        run.events,
        run.stderr
    );
    Faulted {
        run,
        seconds,
        guard,
    }
}

fn step_started(name: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v["event"] == "step_started" && v["step"] == name
}

fn sync_progress(v: &Value) -> bool {
    v["event"] == "progress" && v["phase"] == "sync" && v["percent"] != 100.0
}

/// The copy's first progress short of the end: its writes are in flight.
fn copy_progress(v: &Value) -> bool {
    v["event"] == "progress"
        && v["phase"] == "copy"
        && v["percent"].as_f64().is_some_and(|p| p < 100.0)
}

fn error_line(v: &Value) -> bool {
    v["result"] == "error"
}

/// The row's failure as the user saw it: exit 1, the error naming `cause`, the command that
/// continues; returns the error text.
fn failed_naming(f: &Faulted<impl Sized>, cause: &[&str], within: Duration) -> String {
    let run = &f.run;
    assert_eq!(
        run.status.code(),
        Some(1),
        "{:?}\n{}",
        run.events,
        run.stderr
    );
    let text = run
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("rbd-relay: error: "))
        .unwrap_or_else(|| panic!("no error line: {}", run.stderr))
        .to_string();
    for c in cause {
        assert!(text.contains(c), "missing '{c}' in: {text}");
    }
    assert!(
        run.stderr.contains("continue with: rbd-relay resume "),
        "{}",
        run.stderr
    );
    assert!(
        f.seconds <= within.as_secs_f64(),
        "named after {:.1} s: {text}",
        f.seconds
    );
    text
}

fn row(fault: &str, f: &Faulted<impl Sized>, text: &str, rerun: Duration) {
    eprintln!(
        "ROW | {fault} | {text} | {:.1} s | re-run {:.1} s: converged",
        f.seconds,
        rerun.as_secs_f64()
    );
}

#[test]
fn rbd_mirror_killed_while_mapping_the_replica_is_named_within_10_s_and_resume_converges() {
    let _one = one_at_a_time();
    let v = Volume::new("fault-mirror-kill", "cinder");
    let b = v.b.clone();
    let mut f = run_with_fault(
        &v.args("journal", "clone", &[]),
        v.state(),
        step_started("wait_for_replica"),
        |_| Away::take(&b, Daemon::RbdMirror, "KILL"),
        error_line,
    );
    let text = failed_naming(
        &f,
        &[
            &format!("rbd-mirror on {b} is down or not responding"),
            "re-run",
        ],
        DAEMON_NAMED_WITHIN,
    );
    assert!(v.source_primary(), "the source is writable");
    assert_eq!(sha(&v.a, &v.spec), v.sha);
    drop(f.guard.take());
    let rerun = v.continue_and_check(&f.run.stderr);
    row("rbd-mirror SIGKILL, mapping (journal)", &f, &text, rerun);
    v.remove();
}

#[test]
fn rbd_mirror_hung_at_the_cutover_is_named_within_10_s_the_source_is_promoted_back_and_resume_converges(
) {
    let _one = one_at_a_time();
    let v = Volume::new("fault-mirror-cut", "cinder");
    let b = v.b.clone();
    let mut f = run_with_fault(
        &v.args("snapshot", "clone", &[]),
        v.state(),
        step_started("demote_source"),
        |_| Away::take(&b, Daemon::RbdMirror, "STOP"),
        // said as a warning at once; the error follows once the promote in flight returns
        |e| {
            error_line(e)
                || (e["event"] == "warning"
                    && e["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("is down or not responding")))
        },
    );
    let text = failed_naming(
        &f,
        &[&format!("rbd-mirror on {b} is down or not responding")],
        DAEMON_NAMED_WITHIN,
    );
    let rolled_back = f.run.events.iter().any(|e| {
        e["event"] == "warning"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("the cutover was rolled back"))
    });
    assert!(rolled_back, "{:?}", f.run.events);
    assert!(v.source_primary(), "the source is primary again");
    assert_eq!(sha(&v.a, &v.spec), v.sha);
    drop(f.guard.take());
    let rerun = v.continue_and_check(&f.run.stderr);
    row(
        "rbd-mirror SIGSTOP, cutover (snapshot, clone)",
        &f,
        &text,
        rerun,
    );
    v.remove();
}

#[test]
fn rbd_mirror_hung_during_a_live_wait_for_the_cutover_is_named_within_10_s_and_resume_converges() {
    let _one = one_at_a_time();
    let v = Volume::new("fault-mirror-live", "cinder");
    let b = v.b.clone();
    let mut f = run_with_fault(
        &v.args("journal", "clone", &["--live", "--idle-for", "120"]),
        v.state(),
        step_started("wait_for_cutover"),
        |_| Away::take(&b, Daemon::RbdMirror, "STOP"),
        error_line,
    );
    let text = failed_naming(
        &f,
        &[&format!("rbd-mirror on {b} is down or not responding")],
        DAEMON_NAMED_WITHIN,
    );
    assert!(v.source_primary());
    drop(f.guard.take());
    // the resumed live run waits for the cutover again: ask for it at once
    let id = f
        .run
        .stderr
        .split("rbd-relay resume ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .to_string();
    let state = v.state().to_string();
    let asker = std::thread::spawn(move || {
        wait_until("the cutover request taken", Duration::from_secs(60), || {
            let out = relay(&["cutover", &id], &state);
            Ok(out.status.success())
        })
    });
    let rerun = v.continue_and_check(&f.run.stderr);
    asker.join().unwrap();
    row("rbd-mirror SIGSTOP, replay (live wait)", &f, &text, rerun);
    v.remove();
}

#[test]
fn with_on_daemon_down_wait_a_hung_rbd_mirror_is_shown_within_10_s_and_the_run_finishes_once_it_is_back(
) {
    let _one = one_at_a_time();
    let v = Volume::new("fault-mirror-wait", "cinder");
    let b = v.b.clone();
    let shown = format!("waiting for rbd-mirror on {b}, down or not responding");
    let away: Mutex<Option<Away>> = Mutex::new(None);
    let mut seen_at: Option<f64> = None;
    let mut detail = String::new();
    let t = Mutex::new(None::<Instant>);
    let run = run_json(
        &v.args("snapshot", "clone", &["--on-daemon-down", "wait"]),
        v.state(),
        |e, _| {
            let mut t = t.lock().unwrap();
            if t.is_none() && sync_progress(e) {
                *away.lock().unwrap() = Some(Away::take(&b, Daemon::RbdMirror, "STOP"));
                *t = Some(Instant::now());
            } else if let Some(at) = *t {
                let d = e["detail"].as_str().unwrap_or("");
                if seen_at.is_none() && d.contains(&shown) {
                    seen_at = Some(at.elapsed().as_secs_f64());
                    detail = d.to_string();
                    // the daemon comes back: the run goes on by itself
                    away.lock().unwrap().take();
                }
            }
            Watch::Go
        },
    );
    away.lock().unwrap().take();
    let seconds = seen_at.unwrap_or_else(|| panic!("never shown: {:?}", run.events));
    assert!(seconds <= DAEMON_NAMED_WITHIN.as_secs_f64(), "{seconds}");
    assert!(run.status.success(), "{:?}\n{}", run.events, run.stderr);
    v.check_end_state();
    eprintln!("ROW | rbd-mirror SIGSTOP, initial sync, --on-daemon-down wait | {detail} | {seconds:.1} s | the same run finished once it was back");
    v.remove();
}

/// The OSDs of `site` (the source's or the destination's) pause during the initial sync: the
/// run says which cluster did not answer, and a resume converges.
fn osd_paused_during_the_sync(prefix: &str, mode: &str, on_source: bool, fault: &str) {
    let _one = one_at_a_time();
    let v = Volume::new(prefix, "cinder");
    let site = if on_source { v.a.clone() } else { v.b.clone() };
    let mut f = run_with_fault(
        &v.args(mode, "clone", &[]),
        v.state(),
        sync_progress,
        |_| Paused::new(&site),
        error_line,
    );
    let text = failed_naming(&f, &["did not answer in time"], TIMEOUT_NAMED_WITHIN);
    drop(f.guard.take());
    assert!(v.source_primary());
    assert_eq!(sha(&v.a, &v.spec), v.sha);
    let rerun = v.continue_and_check(&f.run.stderr);
    row(fault, &f, &text, rerun);
    v.remove();
}

/// The OSDs of `site` pause in the middle of the copy (journal mode, copy handover), with
/// its writes in flight: the run is held (SIGSTOP) at the copy's first progress until the
/// pause is in the OSD map, and timed from then; the error names `cause`, a resume converges.
fn osd_paused_during_the_copy(prefix: &str, on_source: bool, cause: &[&str], fault: &str) {
    let _one = one_at_a_time();
    // bigger than the other rows' volumes: the copy of 24 MiB took 0.75 s alone, less than
    // `ceph osd pause` takes to be in effect, and the pause met the next step
    let v = Volume::sized(prefix, "cinder", 96 << 20);
    let site = if on_source { v.a.clone() } else { v.b.clone() };
    let mut f = run_with_fault(
        &v.args("journal", "copy", &[]),
        v.state(),
        copy_progress,
        |pid| {
            assert!(send(pid as i32, "STOP"));
            let paused = Paused::in_effect(&site);
            assert!(send(pid as i32, "CONT"));
            paused
        },
        error_line,
    );
    let text = failed_naming(&f, cause, TIMEOUT_NAMED_WITHIN);
    drop(f.guard.take());
    assert!(v.source_primary());
    assert_eq!(sha(&v.a, &v.spec), v.sha);
    let rerun = v.continue_and_check(&f.run.stderr);
    row(fault, &f, &text, rerun);
    v.remove();
}

#[test]
fn a_source_osd_serving_nothing_during_the_sync_is_named_within_75_s_and_resume_converges() {
    osd_paused_during_the_sync(
        "fault-osd-src",
        "journal",
        true,
        "source OSDs paused, sync (journal)",
    );
}

#[test]
fn a_destination_osd_serving_nothing_during_the_copy_is_named_within_75_s_and_resume_converges() {
    let b = testenv::shared().expect("testenv").site_b().name.clone();
    osd_paused_during_the_copy(
        "fault-osd-copy",
        false,
        &[
            &format!("copy_replica on {b}"),
            &format!("{b} did not answer in time"),
        ],
        "destination OSDs paused, copy (journal, copy)",
    );
}

#[test]
fn a_destination_osd_serving_nothing_during_the_sync_is_named_within_75_s_and_resume_converges() {
    osd_paused_during_the_sync(
        "fault-osd-dst-sync",
        "snapshot",
        false,
        "destination OSDs paused, sync (snapshot)",
    );
}

#[test]
fn a_source_osd_serving_nothing_during_the_copy_is_named_within_75_s_and_resume_converges() {
    // the copy reads the replica, not the source: the next step that touches the source
    // meets the pause
    osd_paused_during_the_copy(
        "fault-osd-src-copy",
        true,
        &["did not answer in time"],
        "source OSDs paused, copy (journal, copy)",
    );
}

#[test]
fn a_destination_osd_serving_nothing_during_the_flatten_is_named_within_75_s_and_resume_converges()
{
    let _one = one_at_a_time();
    let v = Volume::new("fault-osd-flat", "cinder");
    let b = v.b.clone();
    let mut f = run_with_fault(
        &v.args("snapshot", "clone", &[]),
        v.state(),
        step_started("flatten_copy"),
        |_| Paused::new(&b),
        error_line,
    );
    let text = failed_naming(
        &f,
        &[&format!("{b} did not answer in time")],
        TIMEOUT_NAMED_WITHIN,
    );
    drop(f.guard.take());
    // after the handover the source stays demoted (read-only, unchanged) until released
    assert_eq!(sha(&v.a, &v.spec), v.sha);
    let rerun = v.continue_and_check(&f.run.stderr);
    row(
        "destination OSDs paused, flatten (snapshot, clone)",
        &f,
        &text,
        rerun,
    );
    v.remove();
}

/// The quota rows: the run is held (SIGSTOP) at the first event `at` accepts, the pool's
/// quota set below what it stores and the run let go once Ceph flags the pool full, so the
/// writes after it meet the full pool.
fn quota_row(mode: &str, handover: &str, bytes: usize, at: impl Fn(&Value) -> bool, fault: &str) {
    let _one = one_at_a_time();
    let env = testenv::shared().expect("testenv");
    let pool = OwnPool::with_filler(&env.site_b().name);
    let v = Volume::sized("fault-quota", &pool.name, bytes);
    let f = run_with_fault(
        &v.args(mode, handover, &[]),
        v.state(),
        at,
        |pid| {
            assert!(send(pid as i32, "STOP"));
            pool.fill();
            assert!(send(pid as i32, "CONT"));
        },
        error_line,
    );
    let text = failed_naming(
        &f,
        &[
            &format!("pool '{}' is full", pool.name),
            "quota max_bytes 1048576 is reached",
            &format!("osd pool set-quota {} max_bytes 0", pool.name),
        ],
        TIMEOUT_NAMED_WITHIN,
    );
    assert_eq!(sha(&v.a, &v.spec), v.sha);
    pool.lift_quota();
    let rerun = v.continue_and_check(&f.run.stderr);
    row(fault, &f, &text, rerun);
    v.remove();
}

#[test]
fn a_destination_pool_over_quota_during_the_copy_is_named_with_its_quota_and_resume_converges() {
    quota_row(
        "journal",
        "copy",
        24 << 20,
        step_started("copy_replica"),
        "destination pool over quota, copy (journal, copy)",
    );
}

#[test]
fn a_destination_pool_over_quota_during_the_flatten_is_named_with_its_quota_and_resume_converges() {
    quota_row(
        "snapshot",
        "clone",
        24 << 20,
        step_started("flatten_copy"),
        "destination pool over quota, flatten (snapshot, clone)",
    );
}

#[test]
fn a_destination_pool_filling_up_with_the_copys_writes_in_flight_is_named_with_its_quota_and_resume_converges(
) {
    // 96 MiB, as the OSD rows mid-copy: the copy is still writing when the pool is flagged full
    quota_row(
        "journal",
        "copy",
        96 << 20,
        copy_progress,
        "destination pool over quota, mid-copy with writes in flight (journal, copy)",
    );
}
