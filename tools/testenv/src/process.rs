//! Running the Ceph tools and daemons, and knowing which processes are ours.
//!
//! Every external command runs with a deadline (a dead mon must make a call fail, not hang).
//! Daemons are found only through the pid files under the state directory, and a pid counts
//! as ours only when its command line carries `--cluster <site>`: nothing is ever looked up
//! or signalled by process name, so the other Ceph fixtures on the machine are safe.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::error::{Error, Result};

/// What a finished command printed.
#[derive(Debug)]
pub(crate) struct Output {
    pub stdout: String,
    pub stderr: String,
}

/// The command line as one string, for messages.
pub(crate) fn describe(program: &str, args: &[&str]) -> String {
    let mut s = program.to_string();
    for a in args {
        s.push(' ');
        if a.is_empty() || a.contains(char::is_whitespace) {
            s.push_str(&format!("{a:?}"));
        } else {
            s.push_str(a);
        }
    }
    s
}

fn tail(s: &str, max: usize) -> String {
    let t = s.trim();
    if t.len() <= max {
        return t.to_string();
    }
    let mut start = t.len() - max;
    while !t.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &t[start..])
}

/// Waits for `child` until `limit`; kills it (our own child, by handle) when it overstays.
fn wait_bounded(
    child: &mut Child,
    command: &str,
    limit: Duration,
) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(2);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) => {}
            Err(source) => {
                return Err(Error::Spawn {
                    command: command.to_string(),
                    source,
                })
            }
        }
        if Instant::now() >= deadline {
            // Best effort: the child may exit between the check and the kill.
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::CommandTimeout {
                command: command.to_string(),
                limit,
            });
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Runs `program args`, feeding `stdin`, bounded by `limit`; fails on a non-zero exit.
pub(crate) fn run(
    program: &str,
    args: &[&str],
    stdin: Option<&[u8]>,
    limit: Duration,
) -> Result<Output> {
    let command = describe(program, args);
    let t0 = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn {
            command: command.clone(),
            source,
        })?;
    let writer = match (stdin, child.stdin.take()) {
        (Some(data), Some(mut pipe)) => {
            let data = data.to_vec();
            // A write error shows up as the command's own failure; nothing to add here.
            Some(thread::spawn(move || {
                let _ = pipe.write_all(&data);
            }))
        }
        _ => None,
    };
    let out_reader = child.stdout.take().map(|mut p| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = p.read_to_end(&mut buf);
            buf
        })
    });
    let err_reader = child.stderr.take().map(|mut p| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = p.read_to_end(&mut buf);
            buf
        })
    });
    let status = wait_bounded(&mut child, &command, limit)?;
    if let Some(w) = writer {
        let _ = w.join();
    }
    let collect = |h: Option<thread::JoinHandle<Vec<u8>>>| {
        h.and_then(|h| h.join().ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    let stdout = collect(out_reader);
    let stderr = collect(err_reader);
    tracing::debug!(%command, elapsed = ?t0.elapsed(), %status, "ran");
    if !status.success() {
        return Err(Error::Command {
            command,
            status: status.to_string(),
            stderr: tail(&stderr, 2000),
        });
    }
    Ok(Output { stdout, stderr })
}

/// Starts a daemonizing Ceph program (the parent exits once the daemon is initialised).
/// Its own stdout/stderr go to `log` (appended) so an early start failure is kept.
pub(crate) fn start_daemon(
    program: &str,
    args: &[&str],
    log: &Path,
    limit: Duration,
) -> Result<()> {
    let command = describe(program, args);
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| Error::io("open", log, e))?;
    let err = out.try_clone().map_err(|e| Error::io("dup", log, e))?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|source| Error::Spawn {
            command: command.clone(),
            source,
        })?;
    let t0 = Instant::now();
    let status = wait_bounded(&mut child, &command, limit)?;
    tracing::debug!(%command, elapsed = ?t0.elapsed(), %status, "daemon started");
    if !status.success() {
        let mut text = String::new();
        if let Ok(mut f) = File::open(log) {
            let _ = f.read_to_string(&mut text);
        }
        return Err(Error::Command {
            command,
            status: status.to_string(),
            stderr: tail(&text, 2000),
        });
    }
    Ok(())
}

/// The pid written in a pid file, if there is a parsable one.
pub(crate) fn read_pid(pid_file: &Path) -> Option<i32> {
    fs::read_to_string(pid_file).ok()?.trim().parse().ok()
}

/// Alive and not a zombie. Daemons are reparented to PID 1, which may reap exited ones
/// late, so "the pid exists" is not enough.
pub(crate) fn running(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // Format: "pid (comm) S ...": comm may hold spaces and parens, the state follows the last ')'.
    match stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next())
    {
        Some(state) => state != "Z" && state != "X",
        None => false,
    }
}

/// Does the process' command line carry `--cluster <site>` (as two consecutive arguments)?
pub(crate) fn started_for(pid: i32, site: &str) -> bool {
    let Ok(raw) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
    args.windows(2)
        .any(|w| w[0] == b"--cluster" && w[1] == site.as_bytes())
}

/// The pid named by `pid_file` when it is a running process started for `site`.
pub(crate) fn live_pid(pid_file: &Path, site: &str) -> Option<i32> {
    let pid = read_pid(pid_file)?;
    (running(pid) && started_for(pid, site)).then_some(pid)
}

/// Resident set size now and at its peak (`VmRSS`, `VmHWM`), in KiB.
pub(crate) fn rss_kib(pid: i32) -> Option<(u64, u64)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// One process to stop.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub label: String,
    pub pid: i32,
}

/// Signals every target (SIGTERM, or SIGKILL when `fast`), waits until all are gone and
/// sends SIGKILL to those still running after `grace`. Returns the labels that needed SIGKILL.
pub(crate) fn stop_all(targets: &[Target], grace: Duration, fast: bool) -> Vec<String> {
    let first = if fast {
        Signal::SIGKILL
    } else {
        Signal::SIGTERM
    };
    let mut pending: Vec<&Target> = Vec::new();
    for t in targets {
        if kill(Pid::from_raw(t.pid), first).is_ok() {
            tracing::debug!(target = %t.label, pid = t.pid, signal = ?first, "signalled");
            pending.push(t);
        }
    }
    let deadline = Instant::now() + grace;
    let mut killed = Vec::new();
    while !pending.is_empty() {
        pending.retain(|t| running(t.pid));
        if Instant::now() >= deadline {
            for t in &pending {
                if !killed.contains(&t.label) && kill(Pid::from_raw(t.pid), Signal::SIGKILL).is_ok()
                {
                    tracing::warn!(target = %t.label, pid = t.pid, "no exit within grace period: SIGKILL");
                    killed.push(t.label.clone());
                }
            }
        }
        if !pending.is_empty() {
            thread::sleep(Duration::from_millis(20));
        }
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_reports_failure_with_stderr() {
        let err = run(
            "sh",
            &["-c", "echo boom >&2; exit 3"],
            None,
            Duration::from_secs(5),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("boom"), "{err}");
        assert!(err.contains("exit status: 3"), "{err}");
    }

    #[test]
    fn run_feeds_stdin_and_collects_stdout() {
        let out = run("cat", &[], Some(b"hello"), Duration::from_secs(5)).unwrap();
        assert_eq!(out.stdout, "hello");
    }

    #[test]
    fn run_kills_on_timeout() {
        let t = Instant::now();
        let err = run("sleep", &["10"], None, Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, Error::CommandTimeout { .. }), "{err}");
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn own_process_is_running_but_not_started_for_a_site() {
        let me = std::process::id() as i32;
        assert!(running(me));
        assert!(!started_for(me, "site-a"));
        assert!(rss_kib(me).is_some());
    }

    #[test]
    fn cluster_argument_must_match_exactly() {
        let mut child = Command::new("sh")
            .args(["-c", "sleep 30", "x", "--cluster", "site-ab"])
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        thread::sleep(Duration::from_millis(50));
        assert!(started_for(pid, "site-ab"));
        assert!(!started_for(pid, "site-a"));
        let killed = stop_all(
            &[Target {
                label: "sh".into(),
                pid,
            }],
            Duration::from_secs(2),
            false,
        );
        let _ = child.wait();
        assert!(killed.is_empty());
    }
}
