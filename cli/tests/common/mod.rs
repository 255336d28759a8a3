//! Helpers shared by the real-cluster tests of the `rbd-relay` binary: the `rbd` CLI as an
//! independent witness of what the tool did.

#![allow(dead_code)] // each test file uses what it needs

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Run `rbd ARGS` (bounded by `timeout 120`); panics with its stderr when it fails.
pub fn rbd(args: &[&str]) -> String {
    let out = Command::new("timeout")
        .arg("120")
        .arg("rbd")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rbd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether `rbd info` finds IMAGE (POOL/NAME) on the cluster.
pub fn exists(site: &str, image: &str) -> bool {
    Command::new("rbd")
        .args(["--cluster", site, "info", image])
        .output()
        .unwrap()
        .status
        .success()
}

/// sha256 of an image's whole content, as `rbd export | sha256sum` computes it.
pub fn sha(site: &str, image: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "rbd --cluster {site} export --no-progress {image} - | sha256sum"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)[..64].to_string()
}

/// `rbd info --format json`.
pub fn info(site: &str, image: &str) -> Value {
    serde_json::from_str(&rbd(&[
        "--cluster",
        site,
        "info",
        image,
        "--format",
        "json",
    ]))
    .unwrap()
}

/// How many mirror snapshots IMAGE has on SITE.
pub fn mirror_snapshots(site: &str, image: &str) -> usize {
    let snaps: Value = serde_json::from_str(&rbd(&[
        "--cluster",
        site,
        "snap",
        "ls",
        "--all",
        image,
        "--format",
        "json",
    ]))
    .unwrap();
    snaps
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["namespace"]["type"] == "mirror")
        .count()
}

/// Whether mirroring of IMAGE on SITE is off.
pub fn mirroring_off(site: &str, image: &str) -> bool {
    info(site, image)
        .get("mirroring")
        .is_none_or(|m| m["state"] == "disabled")
}

/// Wait (up to 90 s) until IMAGE is gone from SITE, e.g. a replica after mirroring is off.
pub fn wait_gone(site: &str, image: &str) {
    let t = Instant::now();
    while exists(site, image) {
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "{site}:{image} left behind"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_rbd-relay");

/// Run `rbd-relay ARGS --state-dir STATE` to the end (stdin closed, no OpenStack cloud).
pub fn relay(args: &[&str], state: &str) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .args(["--state-dir", state])
        .env_remove("OS_CLOUD")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// Exit code, stdout and stderr of a finished run, for assertion messages.
pub fn text(o: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
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
    mut on_event: impl FnMut(&Value, u32) -> Watch,
) -> JsonRun {
    use std::io::{BufRead, BufReader, Read};
    let mut child = Command::new(BIN)
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
    let (mut killed, mut passed) = (0, 0);
    for &at in kills {
        if at.step(plan_steps) < next_step(state, id) {
            passed += 1;
            continue;
        }
        let run = run_until(args, state, at);
        if run.killed {
            killed += 1;
        } else {
            assert!(
                run.status.success(),
                "{at:?}: run neither killed nor successful: {:?}\n{}",
                run.events,
                run.stderr
            );
            break;
        }
    }
    (killed, passed)
}
