//! Helpers shared by the tests of the `rbd-relay` binary: how the binary is run. The Ceph
//! side (the `rbd` CLI as an independent witness, image hashes, waits) is shared with the
//! real tests of the other crates and lives in `testenv::probe`.

#![allow(dead_code)] // each test file uses what it needs

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_rbd-relay");

/// `migrate volume` of `spec` from site `a` into site `b`'s `cinder` pool, then `extra`.
pub fn migrate_volume_args(a: &str, b: &str, spec: &str, extra: &[&str]) -> Vec<String> {
    [
        "migrate", "volume", "--from", a, "--to", b, spec, "--into", "cinder",
    ]
    .iter()
    .chain(extra)
    .map(|s| s.to_string())
    .collect()
}

/// How long rbd-mirror may take to remove a replica once mirroring of its primary is off.
pub const REPLICA_GONE_LIMIT: Duration = Duration::from_secs(90);

/// `rbd-relay` with no `OS_CLOUD` of the caller and stdin closed; add the arguments. It
/// may write a core file if it dies by a signal (see [`describe`]): it is started by `sh`,
/// which raises its core size limit and then execs it (same pid, same arguments).
///
/// Why: an intermittent SIGABRT inside librados/librbd 16.2.15 under load
/// (docs/reliability.md) that no stress run here has reproduced; a CI run that meets it
/// prints the backtraces of every thread.
pub fn relay_command() -> Command {
    let mut c = Command::new("sh");
    c.args([
        "-c",
        r#"ulimit -c unlimited 2>/dev/null; exec "$0" "$@""#,
        BIN,
    ]);
    c.env_remove("OS_CLOUD").stdin(Stdio::null());
    c
}

/// For a run that died by a signal: the backtraces of all its threads from the core file it
/// left in this test's directory (gdb, when installed), or where the core is. The core is
/// renamed so that the next crash does not overwrite it.
fn crash_report(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    let Some(signal) = status.signal() else {
        return String::new();
    };
    let mut report = format!("\nkilled by signal {signal}");
    let core = std::path::Path::new("core");
    if !core.exists() {
        report.push_str(" (no core file in the test's directory)");
        return report;
    }
    let kept = format!(
        "core.rbd-relay.{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let kept = match std::fs::rename(core, &kept) {
        Ok(()) => std::fs::canonicalize(&kept).unwrap_or_else(|_| kept.into()),
        Err(e) => {
            report.push_str(&format!(" (core file not kept: {e})"));
            return report;
        }
    };
    report.push_str(&format!("; core file {}", kept.display()));
    match Command::new("gdb")
        .args(["-batch", "-nx", "-ex", "thread apply all bt", BIN])
        .arg(&kept)
        .stdin(Stdio::null())
        .output()
    {
        Ok(g) => report.push_str(&format!(
            "\ngdb, thread apply all bt:\n{}",
            String::from_utf8_lossy(&g.stdout)
        )),
        Err(e) => report.push_str(&format!(" (gdb not run: {e})")),
    }
    report
}

/// Runs `rbd-relay ARGS --state-dir STATE` to the end.
pub fn relay(args: &[&str], state: &str) -> Output {
    relay_env(args, state, &[])
}

/// Runs `rbd-relay ARGS --state-dir STATE` with `env` added to its environment.
pub fn relay_env(args: &[&str], state: &str, env: &[(&str, &str)]) -> Output {
    relay_command()
        .args(args)
        .args(["--state-dir", state])
        .envs(env.iter().copied())
        .output()
        .expect("run rbd-relay")
}

/// Exit code, stdout and stderr of a run, for assertion messages; for a run that died by a
/// signal also the backtraces of its core file.
pub fn describe(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
        crash_report(o.status)
    )
}

/// What to do with a run that [`run_json`] watches, after one of its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// Keep reading.
    Go,
    /// SIGKILL it now and stop reading.
    Kill,
}

/// A run of the binary with `--output json`, to its end or killed.
#[derive(Debug)]
pub struct JsonRun {
    /// Whether it was SIGKILLed.
    pub killed: bool,
    /// How it exited.
    pub status: std::process::ExitStatus,
    /// Its events, one per stdout line (a line that is not JSON as a string).
    pub events: Vec<Value>,
    /// Its stderr.
    pub stderr: String,
}

impl JsonRun {
    /// The last event: the result line of a run that ended by itself.
    pub fn last(&self) -> &Value {
        self.events.last().unwrap_or(&Value::Null)
    }
}

/// Run `rbd-relay ARGS --output json --state-dir STATE`; `on_event` sees every event with the
/// run's pid (to signal it) and says whether to go on or SIGKILL it.
pub fn run_json(
    args: &[String],
    state: &str,
    on_event: impl FnMut(&Value, u32) -> Watch,
) -> JsonRun {
    run_json_via(&[], args, state, on_event)
}

/// [`run_json`] with the binary started through `wrapper` (e.g. `nsenter -t PID -m --`, a
/// program that execs it, so the pid seen by `on_event` is the binary's own); an empty
/// wrapper starts the binary itself.
pub fn run_json_via(
    wrapper: &[String],
    args: &[String],
    state: &str,
    mut on_event: impl FnMut(&Value, u32) -> Watch,
) -> JsonRun {
    use std::io::{BufRead, BufReader, Read};
    let mut command = match wrapper {
        [] => relay_command(),
        [program, rest @ ..] => {
            let mut c = Command::new(program);
            c.args(rest).arg(BIN);
            c
        }
    };
    let mut child = command
        .args(args)
        .args(["--output", "json", "--state-dir", state])
        .env_remove("OS_CLOUD")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut stderr_pipe = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        stderr_pipe.read_to_string(&mut s).unwrap();
        s
    });
    let mut events = Vec::new();
    let mut killed = false;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::String(line));
        let watch = on_event(&v, pid);
        events.push(v);
        if watch == Watch::Kill {
            child.kill().unwrap();
            killed = true;
            break;
        }
    }
    let status = child.wait().unwrap();
    JsonRun {
        killed,
        status,
        events,
        stderr: stderr.join().unwrap(),
    }
}

/// Send `kill -SIGNAL` (e.g. `INT`) to a process.
pub fn signal(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal} {pid}");
}

/// Where a run is SIGKILLed by [`kill_at_each`].
#[derive(Debug, Clone, Copy)]
pub enum KillAt {
    /// When the step with this index starts.
    StepStarted(u64),
    /// At a progress event of this phase that is not the last (percent not 100).
    Progress(&'static str),
    /// Never: the run goes to its end.
    Never,
}

impl KillAt {
    /// Whether event `v` is this kill point.
    pub fn hit(self, v: &Value) -> bool {
        match self {
            KillAt::StepStarted(i) => v["event"] == "step_started" && v["index"] == i,
            KillAt::Progress(phase) => {
                v["event"] == "progress" && v["phase"] == phase && v["percent"] != 100.0
            }
            KillAt::Never => false,
        }
    }

    /// The index of the plan step this point lies in (a progress phase is in the step of its
    /// name, `sync` in `wait_for_replica` and `copy` in `copy_replica`).
    pub fn step(self, plan_steps: &[Value]) -> u64 {
        let index_of = |name: &str| {
            plan_steps
                .iter()
                .position(|s| s["step"] == name)
                .unwrap_or(usize::MAX) as u64
        };
        match self {
            KillAt::StepStarted(i) => i,
            KillAt::Progress("sync") => index_of("wait_for_replica"),
            KillAt::Progress("copy") => index_of("copy_replica"),
            KillAt::Progress(phase) => index_of(phase),
            KillAt::Never => u64::MAX,
        }
    }
}

/// Run ARGS (with `--output json --state-dir STATE`) until `at`, then SIGKILL it.
pub fn run_until(args: &[String], state: &str, at: KillAt) -> JsonRun {
    run_json(
        args,
        state,
        |v, _| {
            if at.hit(v) {
                Watch::Kill
            } else {
                Watch::Go
            }
        },
    )
}

/// The step the state file of migration ID records as next (0 when there is none yet).
pub fn next_step(state: &str, id: &str) -> u64 {
    std::fs::read(std::path::Path::new(state).join(format!("{id}.json")))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v["next_step"].as_u64())
        .unwrap_or(0)
}

/// A chain of runs of ARGS, each SIGKILLed at the next of `kills`. A kill lands a moment
/// after its point, and on a loaded machine the killed run may already have finished later
/// (instant) steps, so a point that lies behind the recorded next step cannot be reached
/// any more and is counted as passed. A run that reaches no kill point must succeed, and
/// ends the chain. Returns (runs killed, points passed).
pub fn kill_at_each(
    args: &[String],
    state: &str,
    id: &str,
    plan_steps: &[Value],
    kills: &[KillAt],
) -> (usize, usize) {
    let (mut killed, mut passed, mut aborts) = (0, 0, 0);
    'points: for &at in kills {
        loop {
            if at.step(plan_steps) < next_step(state, id) {
                passed += 1;
                continue 'points;
            }
            let run = run_until(args, state, at);
            if run.killed {
                killed += 1;
                continue 'points;
            }
            if died_of_ceph_client_abort(&run) && aborts < CEPH_CLIENT_ABORTS_TOLERATED {
                aborts += 1;
                eprintln!(
                    "kill_at_each: {at:?}: the run died of Ceph 16.2.15's client-library abort \
                     (docs/reliability.md, \"A loaded machine\"), tolerated ({aborts} of at most \
                     {CEPH_CLIENT_ABORTS_TOLERATED}) as one more interruption; the same point again.\n\
                     its last events: {:?}\nits stderr:\n{}{}",
                    run.events.iter().rev().take(3).collect::<Vec<_>>(),
                    run.stderr,
                    crash_report(run.status)
                );
                continue;
            }
            assert!(
                run.status.success(),
                "{at:?}: run neither killed nor successful: {:?}\n{}{}",
                run.events,
                run.stderr,
                crash_report(run.status)
            );
            break 'points;
        }
    }
    (killed, passed)
}

/// How many runs of one [`kill_at_each`] chain may die of Ceph's client-library abort.
///
/// Why: librbd/librados 16.2.15 can abort the whole process on a loaded machine (a librados
/// thread ends by an uncaught `std::system_error`, seen while a clone is closed); rbd-relay
/// cannot catch it and explains it from its SIGABRT handler. For a chain of interrupted runs
/// such a death is one more interruption of the kind the chain tests: the state file keeps
/// every finished step and the next run resumes. A third one in a chain fails the test.
const CEPH_CLIENT_ABORTS_TOLERATED: usize = 2;

/// Whether `run` died of SIGABRT raised by Ceph's client library: libstdc++'s terminate
/// line, then rbd-relay's own explanation from its SIGABRT handler.
pub fn died_of_ceph_client_abort(run: &JsonRun) -> bool {
    use std::os::unix::process::ExitStatusExt;
    run.status.signal() == Some(SIGABRT)
        && run
            .stderr
            .contains("terminate called after throwing an instance of")
        && run.stderr.contains("rbd-relay: stopped by SIGABRT")
}

/// SIGABRT's number on Linux.
pub const SIGABRT: i32 = 6;

/// The recorded migrations in state directory `dir`: every file but the lock files, by
/// name, with its content (`None` when the directory does not exist). A refused command
/// may leave its released lock files behind (empty, or the id of the run that held them);
/// they record nothing and are not compared.
pub fn state_dir_files(
    dir: &std::path::Path,
) -> Option<std::collections::BTreeMap<String, Vec<u8>>> {
    let entries = std::fs::read_dir(dir).ok()?;
    let mut files = std::collections::BTreeMap::new();
    for e in entries {
        let e = e.expect("read the state directory");
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".lock") {
            continue;
        }
        let content = std::fs::read(e.path()).unwrap_or_else(|err| err.to_string().into_bytes());
        files.insert(name, content);
    }
    Some(files)
}

/// Only a SIGABRT with both libstdc++'s terminate line and rbd-relay's explanation counts as
/// Ceph's client-library abort: a `kill -ABRT` from outside, a SIGKILL or an exit with the
/// same text do not.
#[test]
fn a_ceph_client_abort_is_told_from_other_deaths() {
    use std::os::unix::process::ExitStatusExt;
    let run = |raw: i32, stderr: &str| JsonRun {
        killed: false,
        status: std::process::ExitStatus::from_raw(raw),
        events: Vec::new(),
        stderr: stderr.to_string(),
    };
    let ceph = "terminate called after throwing an instance of 'std::system_error'\n  what():  Invalid argument\n\nrbd-relay: stopped by SIGABRT. If the lines above ...";
    let outside = "\nrbd-relay: stopped by SIGABRT. If the lines above ...";
    assert!(died_of_ceph_client_abort(&run(SIGABRT, ceph)));
    assert!(!died_of_ceph_client_abort(&run(SIGABRT, outside)));
    assert!(!died_of_ceph_client_abort(&run(9, ceph)));
    assert!(!died_of_ceph_client_abort(&run(1 << 8, ceph)));
}
