//! SIGINT and SIGTERM: stop within moments, and say how to go on.
//!
//! A migration records every finished step in its state file, so stopping between two
//! recorded points loses nothing: the next run repeats the unfinished step (as after a
//! `kill -9`). What a user needs from an interrupted run is the word that it stopped and the
//! command that continues it. The commands that start work register that command here
//! ([`continue_with`]); `main` races the command against [`signal`] and prints [`message`].

use std::sync::Mutex;

/// The commands that continue what this process started (e.g. `rbd-relay resume ID`), each
/// with the state file it needs, if any: a command that resumes a recorded migration only
/// works once its state file exists.
static CONTINUE_WITH: Mutex<Vec<(String, Option<std::path::PathBuf>)>> = Mutex::new(Vec::new());

/// The `--state-dir` this process was given, if any: the printed commands must name it too.
static STATE_DIR: Mutex<Option<std::path::PathBuf>> = Mutex::new(None);

/// Remember the `--state-dir` given on the command line (before any [`continue_with`]).
pub fn set_state_dir(dir: Option<std::path::PathBuf>) {
    if let Ok(mut d) = STATE_DIR.lock() {
        *d = dir;
    }
}

/// Register `command` as the way to continue work this process started. The state directory
/// option is added when one was given, so the command works as printed.
pub fn continue_with(command: String) {
    register(command, None);
}

/// Register `command` as the way to continue, once `state_file` exists: a migration stopped
/// in its preflight (before its plan was written) has nothing to resume, and nothing was
/// changed yet, so the message then says to re-run the same command instead.
pub fn continue_once_recorded(command: String, state_file: std::path::PathBuf) {
    register(command, Some(state_file));
}

fn register(command: String, state_file: Option<std::path::PathBuf>) {
    let dir = STATE_DIR.lock().ok().and_then(|d| d.clone());
    let command = match dir {
        Some(d) => format!(
            "{command} --state-dir {}",
            rbd_mirror_bundle::sh_quote(&d.to_string_lossy())
        ),
        None => command,
    };
    if let Ok(mut v) = CONTINUE_WITH.lock() {
        if !v.iter().any(|(c, _)| *c == command) {
            v.push((command, state_file));
        }
    }
}

/// A stop signal this process received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM (`kill`, a service manager stopping us).
    Terminate,
}

impl Signal {
    /// The signal's name.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
        }
    }

    /// The shell's convention: 128 + the signal number.
    pub fn exit_code(self) -> u8 {
        match self {
            Signal::Interrupt => crate::exit::INTERRUPTED,
            Signal::Terminate => crate::exit::TERMINATED,
        }
    }
}

/// Wait for SIGINT or SIGTERM. When a handler cannot be installed, that signal keeps its
/// default action (the process dies, as before) and this waits for the other.
pub async fn signal() -> Signal {
    use tokio::signal::unix::{signal, SignalKind};
    async fn next(s: Option<tokio::signal::unix::Signal>) {
        match s {
            Some(mut s) => {
                s.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    }
    let int = signal(SignalKind::interrupt()).ok();
    let term = signal(SignalKind::terminate()).ok();
    tokio::select! {
        _ = next(int) => Signal::Interrupt,
        _ = next(term) => Signal::Terminate,
    }
}

/// What to print after a command that started work failed with `e`: the command that
/// continues it (every finished step is recorded), or `None` when there is none to name
/// (nothing was started, or a preflight refusal, which changed nothing).
pub fn after_failure(e: &anyhow::Error) -> Option<String> {
    let refused = e.chain().any(|c| {
        matches!(
            c.downcast_ref::<rbd_mirror_core::error::Error>(),
            Some(rbd_mirror_core::error::Error::Preflight(_))
        )
    });
    let registered = CONTINUE_WITH.lock().map(|v| v.clone()).unwrap_or_default();
    // a command that resumes a recorded migration only works once its state file exists
    let commands: Vec<&str> = registered
        .iter()
        .filter(|(_, file)| file.as_ref().is_none_or(|f| f.exists()))
        .map(|(c, _)| c.as_str())
        .collect();
    match commands.as_slice() {
        _ if refused => None,
        [] => None,
        [one] => Some(format!("continue with: {one}")),
        many => Some(format!("continue with:\n  {}", many.join("\n  "))),
    }
}

/// What to print when `sig` stopped this process.
pub fn message(sig: Signal) -> String {
    let registered = CONTINUE_WITH.lock().map(|v| v.clone()).unwrap_or_default();
    let commands: Vec<&String> = registered
        .iter()
        .filter(|(_, file)| file.as_ref().is_none_or(|f| f.exists()))
        .map(|(c, _)| c)
        .collect();
    if commands.is_empty() && !registered.is_empty() {
        return format!(
            "rbd-relay: interrupted by {}: stopped before the migration's plan was recorded, so nothing was changed; re-run the same command to start it",
            sig.name()
        );
    }
    let next = match commands.as_slice() {
        [] => "re-run the same command to continue".to_string(),
        [one] => format!("continue with: {one}"),
        many => format!(
            "continue with:\n  {}",
            many.iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join("\n  ")
        ),
    };
    format!(
        "rbd-relay: interrupted by {}: stopped. Every finished step is recorded and nothing is lost; {next}",
        sig.name()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_names_the_command_that_continues_but_a_preflight_refusal_does_not() {
        // (the commands are process-wide: each test of this module names its own)
        continue_with("rbd-relay resume g-h".into());
        let failed = anyhow::anyhow!("copy_replica on site-b: timed out");
        let next = after_failure(&failed).unwrap();
        assert!(next.contains("rbd-relay resume g-h"), "{next}");
        assert!(next.starts_with("continue with:"), "{next}");
        let refused = anyhow::Error::new(rbd_mirror_core::error::Error::Preflight(Vec::new()))
            .context("migrating volumes/x");
        assert_eq!(after_failure(&refused), None);
    }

    #[test]
    fn the_message_names_the_signal_and_each_command_that_continues() {
        continue_with("rbd-relay resume a-b".into());
        continue_with("rbd-relay resume a-b".into());
        set_state_dir(Some("/tmp/my state".into()));
        continue_with("rbd-relay resume c-d".into());
        let m = message(Signal::Terminate);
        assert!(m.contains("interrupted by SIGTERM"), "{m}");
        assert_eq!(m.matches("rbd-relay resume a-b").count(), 1, "{m}");
        assert!(
            m.contains("rbd-relay resume c-d --state-dir '/tmp/my state'"),
            "{m}"
        );
        // a command waiting for a state file that is not there yet is not offered
        continue_once_recorded(
            "rbd-relay resume e-f".into(),
            "/nonexistent/e-f.json".into(),
        );
        assert!(!message(Signal::Interrupt).contains("e-f"));
        assert_eq!(Signal::Interrupt.exit_code(), 130);
        assert_eq!(Signal::Terminate.exit_code(), 143);
    }
}
