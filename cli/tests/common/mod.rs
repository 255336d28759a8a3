//! Helpers shared by the tests of the `rbd-relay` binary: how the binary is run. The Ceph
//! side (the `rbd` CLI as an independent witness, image hashes, waits) is shared with the
//! real tests of the other crates and lives in `testenv::probe`.

#![allow(dead_code)] // each test file uses what it needs

use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_rbd-relay");

/// How long rbd-mirror may take to remove a replica once mirroring of its primary is off.
pub const REPLICA_GONE_LIMIT: Duration = Duration::from_secs(90);

/// `rbd-relay` with no `OS_CLOUD` of the caller and stdin closed; add the arguments.
pub fn relay_command() -> Command {
    let mut c = Command::new(BIN);
    c.env_remove("OS_CLOUD").stdin(Stdio::null());
    c
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

/// Exit code, stdout and stderr of a run, for assertion messages.
pub fn describe(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
