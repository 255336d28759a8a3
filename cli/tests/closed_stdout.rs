#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

//! A reader that goes away (`rbd-relay list | head -1`, `rbd-relay man | head`) must not
//! turn into a panic ("failed printing to stdout: Broken pipe", exit code 101). Needs no
//! clusters: these commands only read the state directory or print generated text.

use std::process::{Command, Output};

/// Run `rbd-relay ARGS` with stdout on a pipe that has no reader any more, so that every
/// write fails with EPIPE (deterministically: the read end is closed before the start).
fn with_closed_stdout(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    // open the FIFO read-write (so opening it write-only does not block), open it
    // write-only, close the read-write one: a pipe with a writer and no reader
    let script = r#"fifo="$1/out"; shift
mkfifo "$fifo" || exit 99
exec 3<>"$fifo" 4>"$fifo" 3<&-
exec "$@" >&4"#;
    let state_dir = dir.path().join("state");
    std::fs::create_dir(&state_dir).unwrap();
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(dir.path())
        .arg(env!("CARGO_BIN_EXE_rbd-relay"))
        .arg("--state-dir")
        .arg(&state_dir)
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap()
}

fn assert_quiet_success(args: &[&str]) {
    let out = with_closed_stdout(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked"),
        "rbd-relay {args:?} panicked on a closed stdout: {stderr}"
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "rbd-relay {args:?} on a closed stdout: {stderr}"
    );
}

#[test]
fn list_does_not_panic_when_the_reader_is_gone() {
    assert_quiet_success(&["list"]);
}

#[test]
fn completions_do_not_panic_when_the_reader_is_gone() {
    assert_quiet_success(&["completions", "bash"]);
}

#[test]
fn man_does_not_fail_when_the_reader_is_gone() {
    assert_quiet_success(&["man"]);
}
