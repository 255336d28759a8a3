//! Start, watch and stop the OpenStack daemons, and run the one-shot helper commands.
//!
//! Every daemon runs in its own session (`setsid`), so its process group id equals its pid
//! and stopping it signals the whole group (cinder-api's forked worker, cinder-volume's child,
//! the beam VM under `rabbitmq-server`). A pid file records the pid *and* the process start
//! time (field 22 of `/proc/PID/stat`), so a pid reused by an unrelated process (after a
//! reboot, say) is never taken for ours and never signalled. Nothing is ever killed by name.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::{getpgid, Pid};

use super::Error;

/// A recorded daemon: its pid and the kernel's start time of that pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Recorded {
    pub(crate) pid: i32,
    start_time: u64,
}

/// `(state, start time)` of a live process, from `/proc/PID/stat`.
fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    // Field 3 (state) is fields[0], so field 22 (starttime) is fields[19].
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// Reads a pid file written by [`spawn`].
pub(crate) fn read_pid_file(path: &Path) -> Option<Recorded> {
    let text = fs::read_to_string(path).ok()?;
    let mut it = text.split_whitespace();
    let pid = it.next()?.parse().ok()?;
    let start_time = it.next()?.parse().ok()?;
    Some(Recorded { pid, start_time })
}

/// Is the recorded process still the same, running (not zombie) process?
pub(crate) fn is_alive(rec: Recorded) -> bool {
    matches!(proc_stat(rec.pid), Some((state, start)) if start == rec.start_time && state != 'Z' && state != 'X')
}

/// The pid in `path` if that process is alive.
pub(crate) fn alive_pid(path: &Path) -> Option<i32> {
    read_pid_file(path).filter(|r| is_alive(*r)).map(|r| r.pid)
}

/// Renders a command line for error messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// The last `max` bytes of `text`, on a char boundary.
pub(crate) fn tail(text: &str, max: usize) -> String {
    let text = text.trim();
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &text[start..])
}

/// The last part of a log file (for error messages).
pub(crate) fn log_tail(path: &Path) -> String {
    match fs::read(path) {
        Ok(bytes) => tail(&String::from_utf8_lossy(&bytes), 1500),
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Runs a command to completion; a non-zero exit is an error carrying its stderr.
pub(crate) fn run(cmd: &mut Command) -> Result<Output, Error> {
    let command = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            command: command.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(out)
    } else {
        let mut msg = String::from_utf8_lossy(&out.stderr).into_owned();
        if msg.trim().is_empty() {
            msg = String::from_utf8_lossy(&out.stdout).into_owned();
        }
        Err(Error::Command {
            command,
            status: out.status.to_string(),
            stderr: tail(&msg, 2000),
        })
    }
}

/// Starts `program args` in a new session with stdout+stderr appended to `log`, records it in
/// `pid_file` and returns its pid. The child is reaped by a background thread, so a daemon
/// that dies while this process lives does not linger as a zombie.
pub(crate) fn spawn(
    program: &Path,
    args: &[String],
    envs: &[(String, String)],
    log: &Path,
    pid_file: &Path,
) -> Result<i32, Error> {
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|source| Error::io("open log", log, source))?;
    let err = out
        .try_clone()
        .map_err(|source| Error::io("open log", log, source))?;
    let mut cmd = Command::new("setsid");
    cmd.arg(program)
        .args(args)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    let command = describe(&cmd);
    let mut child = cmd.spawn().map_err(|source| Error::Spawn {
        command: command.clone(),
        source,
    })?;
    let pid = i32::try_from(child.id()).map_err(|_| Error::Spawn {
        command: command.clone(),
        source: std::io::Error::other("pid out of range"),
    })?;
    let start_time = proc_stat(pid).map(|(_, s)| s).ok_or_else(|| Error::Died {
        service: command.clone(),
        log: log.to_path_buf(),
        tail: log_tail(log),
    })?;
    thread::spawn(move || {
        let _ = child.wait();
    });
    // `setsid` makes its new session a moment after the spawn returns: until then a
    // group-wide signal would miss the daemon. Wait for it (or for an early exit).
    let deadline = Instant::now() + Duration::from_secs(5);
    while getpgid(Some(Pid::from_raw(pid))).is_ok_and(|g| g.as_raw() != pid)
        && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(2));
    }
    let mut f =
        fs::File::create(pid_file).map_err(|source| Error::io("write", pid_file, source))?;
    writeln!(f, "{pid} {start_time}").map_err(|source| Error::io("write", pid_file, source))?;
    Ok(pid)
}

/// Is any process left in process group `pgid`?
fn group_exists(pgid: i32) -> bool {
    !matches!(killpg(Pid::from_raw(pgid), None), Err(Errno::ESRCH))
}

/// Stops the daemon recorded in `pid_file` (if it is still ours and alive): SIGTERM to its
/// process group, up to `grace` for it to go, then SIGKILL. Removes the pid file. Returns the
/// pid that was stopped.
pub(crate) fn stop(pid_file: &Path, grace: Duration) -> Result<Option<i32>, Error> {
    let Some(rec) = read_pid_file(pid_file) else {
        remove_file(pid_file)?;
        return Ok(None);
    };
    let mut stopped = None;
    if is_alive(rec) {
        let pg = Pid::from_raw(rec.pid);
        let _ = killpg(pg, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while group_exists(rec.pid) && Instant::now() < deadline {
            // The leader may already be gone (a zombie until reaped): only the group counts.
            thread::sleep(Duration::from_millis(100));
        }
        if group_exists(rec.pid) {
            let _ = killpg(pg, Signal::SIGKILL);
            let deadline = Instant::now() + Duration::from_secs(5);
            while group_exists(rec.pid) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(50));
            }
        }
        stopped = Some(rec.pid);
    }
    remove_file(pid_file)?;
    Ok(stopped)
}

/// Removes a file; a missing file is fine.
pub(crate) fn remove_file(path: &Path) -> Result<(), Error> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::io("remove", path, source)),
    }
}

/// Polls `check` every `every` until it returns `true`, fails, or `timeout` passes.
pub(crate) fn wait_for(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> Result<bool, Error>,
) -> Result<(), Error> {
    let deadline = Instant::now() + timeout;
    loop {
        if check()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: what.to_string(),
                limit: timeout,
                last_seen: None,
            });
        }
        thread::sleep(every);
    }
}

/// A daemon of the environment: where its pid file and its stdout/stderr log are.
#[derive(Debug, Clone)]
pub(crate) struct Daemon {
    /// Service name as shown by `status` (`keystone`, `cinder-volume.site-a`, ...).
    pub(crate) name: String,
    /// Its pid file.
    pub(crate) pid_file: PathBuf,
    /// Its stdout/stderr.
    pub(crate) log: PathBuf,
}

impl Daemon {
    /// The daemon `name` under the run and log directories of `root`.
    pub(crate) fn new(root: &Path, name: &str) -> Self {
        Daemon {
            name: name.to_string(),
            pid_file: root.join("run").join(format!("{name}.pid")),
            log: root.join("logs").join(format!("{name}.out")),
        }
    }

    /// Its pid if it is running.
    pub(crate) fn pid(&self) -> Option<i32> {
        alive_pid(&self.pid_file)
    }

    /// Starts it unless it is already running.
    pub(crate) fn start(
        &self,
        program: &Path,
        args: &[String],
        envs: &[(String, String)],
    ) -> Result<i32, Error> {
        if let Some(pid) = self.pid() {
            return Ok(pid);
        }
        spawn(program, args, envs, &self.log, &self.pid_file)
    }

    /// Error unless it is running (used inside waits: a crashed daemon fails fast).
    pub(crate) fn ensure_running(&self) -> Result<(), Error> {
        if self.pid().is_some() {
            Ok(())
        } else {
            Err(Error::Died {
                service: self.name.clone(),
                log: self.log.clone(),
                tail: log_tail(&self.log),
            })
        }
    }
}
