//! The exit codes of `rbd-relay`, in one place: scripts and batch callers decide on them, so
//! they are documented in `--help` (below), in docs/operations.md and in the man page.

use std::process::ExitCode;

/// Everything asked for succeeded (also: nothing was left to do).
pub const OK: u8 = 0;
/// The command failed: an error before any work (connection, refusal, unknown id, a lock
/// held by another run), or the one migration asked for failed. A re-run resumes.
pub const FAILED: u8 = 1;
/// Bad usage: the command line or its values are wrong (clap's own code); nothing was done.
pub const USAGE: u8 = 2;
/// A batch ran and some of its images failed (the others finished); see the summary table.
pub const SOME_FAILED: u8 = 3;

/// Stopped by SIGINT (Ctrl-C), 128 + 2: the state is recorded, the printed command continues.
pub const INTERRUPTED: u8 = 130;
/// Stopped by SIGTERM, 128 + 15: as [`INTERRUPTED`].
pub const TERMINATED: u8 = 143;

/// The exit code section of `--help` and the man page.
pub const AFTER_HELP: &str = "\
Exit codes:
  0  success (or nothing left to do)
  1  failed: an error before any work, a refusal, or the single migration failed (re-run or `rbd-relay resume ID` continues it)
  2  bad usage: wrong flags or values; nothing was done
  3  a batch ran and some images failed; the others finished (see the summary table)
  130, 143  stopped by SIGINT or SIGTERM: every finished step is recorded; it prints the command that continues

Environment: RBD_RELAY_STATE_DIR (state files), RUST_LOG (log filter, overrides -v/-q), OS_CLOUD.";

/// An error in what the user typed (flags, values, the image list), found before anything
/// connected or changed: exits with [`USAGE`].
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Mark an argument-validation error as bad usage (keeping its whole context chain).
pub fn usage(e: anyhow::Error) -> anyhow::Error {
    anyhow::Error::new(UsageError(message(&e)))
}

/// The whole text of a failed command's error: each cause of the chain once. Library errors
/// often show their cause in their own message and also return it as `source()`, so the
/// plain `{e:#}` chain would print the same text twice on one line.
pub fn message(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if s.is_empty() || text.contains(&s) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&s);
    }
    text
}

/// The exit code of a failed command.
pub fn of_error(e: &anyhow::Error) -> ExitCode {
    if e.downcast_ref::<UsageError>().is_some() {
        ExitCode::from(USAGE)
    } else {
        ExitCode::from(FAILED)
    }
}

/// The number behind `code` (`ExitCode` does not give it back), for
/// `librbd::exit_immediately`.
pub fn status_of(code: ExitCode) -> u8 {
    (0..=u8::MAX)
        .find(|n| ExitCode::from(*n) == code)
        .unwrap_or(FAILED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_exit_code_gives_back_its_number() {
        for n in 0..=u8::MAX {
            assert_eq!(status_of(ExitCode::from(n)), n);
        }
        assert_eq!(status_of(ExitCode::SUCCESS), 0);
        assert_eq!(status_of(ExitCode::FAILURE), 1);
    }

    #[test]
    fn an_error_that_shows_its_cause_is_printed_once() {
        // as the engine's wait errors: `#[error("{0}")] Wait(#[from] WaitError)`
        #[derive(Debug, thiserror::Error)]
        #[error("replication of volumes/x made no progress for 15 s")]
        struct Stalled;
        #[derive(Debug, thiserror::Error)]
        #[error("{0}")]
        struct Wait(#[from] Stalled);
        let e = anyhow::Error::new(Wait(Stalled)).context("migrating volumes/x");
        assert_eq!(
            message(&e),
            "migrating volumes/x: replication of volumes/x made no progress for 15 s"
        );
        assert_eq!(
            format!("{e:#}").matches("made no progress").count(),
            2,
            "the plain chain repeats it"
        );
    }

    #[test]
    fn usage_errors_exit_2_and_others_1() {
        let u = usage(anyhow::anyhow!("--name with several images"));
        assert_eq!(of_error(&u), ExitCode::from(USAGE));
        assert_eq!(u.to_string(), "--name with several images");
        assert_eq!(of_error(&anyhow::anyhow!("x")), ExitCode::from(FAILED));
    }
}
