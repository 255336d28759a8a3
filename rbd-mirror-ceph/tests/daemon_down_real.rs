//! rbd-mirror killed (SIGKILL) or hung (SIGSTOP) during a migration's wait (real pair): the
//! run stops within 10 s with "rbd-mirror on SITE is down or not responding", naming the
//! daemon, although the service map keeps listing it as healthy for a minute; after the
//! daemon is back, the re-run finishes the job with a copy equal to the source.
//!
//! Its own test binary, one test: it stops the shared rbd-mirror daemon, so nothing else may
//! run beside it (cargo runs test binaries one after another).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rbd_mirror_ceph::real::RbdCeph;
use rbd_mirror_core::error::Error;
use rbd_mirror_core::event::{Event, EventSink, NullSink};
use rbd_mirror_core::exec::{migrate_volume, RunOptions};
use rbd_mirror_core::features::MirrorImageMode;
use rbd_mirror_core::plan::VolumeMigration;
use rbd_mirror_core::spec::{ClusterSpec, PoolSpec};
use rbd_mirror_core::wait::WaitError;
use testenv::probe::{rbd, sha};

/// Sends `signal` to the rbd-mirror daemon at the wait's first progress event, and records
/// when.
struct SignalAtTheWait {
    pid: i32,
    signal: &'static str,
    sent: Mutex<Option<Instant>>,
}

impl EventSink for SignalAtTheWait {
    fn emit(&self, event: Event) {
        let Event::Progress(p) = event else { return };
        let mut sent = self.sent.lock().unwrap();
        if p.phase == "sync" && sent.is_none() {
            let ok = Command::new("kill")
                .args([&format!("-{}", self.signal), &self.pid.to_string()])
                .status()
                .unwrap()
                .success();
            assert!(ok, "kill -{} {}", self.signal, self.pid);
            *sent = Some(Instant::now());
        }
    }
}

/// Sends SIGCONT to the daemon when dropped, so a failed assertion does not leave the
/// shared daemon stopped for the tests that follow (a continued daemon ignores it).
struct ContinueOnDrop(i32);

impl Drop for ContinueOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}

async fn daemon_lost_during_the_wait(signal: &'static str, mode: MirrorImageMode) {
    let env = testenv::shared().expect("testenv");
    let _logs = env.log_guard();
    let (a, b) = (env.site_a().clone(), env.site_b().clone());
    let image = testenv::unique_name(&format!("down-{}", signal.to_lowercase()));
    let spec = format!("volumes/{image}");
    rbd(&a.name, &["create", "--size", "64M", &spec]);
    rbd(
        &a.name,
        &["bench", "--io-type", "write", "--io-total", "8M", &spec],
    );
    let pid_file = env.rbd_mirror_asok().with_extension("pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _continued = ContinueOnDrop(pid);

    let src = Arc::new(
        RbdCeph::connect(&ClusterSpec::with_conf(&a.name, a.conf.clone()).unwrap()).unwrap(),
    );
    let dst = Arc::new(
        RbdCeph::connect(&ClusterSpec::with_conf(&b.name, b.conf.clone()).unwrap()).unwrap(),
    );
    let mut m = VolumeMigration::new(
        ClusterSpec::named(&a.name).unwrap(),
        ClusterSpec::named(&b.name).unwrap(),
        spec.parse().unwrap(),
        PoolSpec::new("cinder").unwrap(),
    );
    m.mode = mode;
    let state = tempfile::tempdir().unwrap();
    // the defaults, but a stall limit far beyond what the daemon check may take
    let mut opts = RunOptions::default();
    opts.wait.stall_after = Duration::from_secs(60);
    let sink = Arc::new(SignalAtTheWait {
        pid,
        signal,
        sent: Mutex::new(None),
    });
    let first = migrate_volume(
        &m,
        src.clone(),
        dst.clone(),
        state.path(),
        &opts,
        sink.clone(),
    )
    .await;
    let sent = sink
        .sent
        .lock()
        .unwrap()
        .expect("the wait was reached and the daemon signalled");
    let took = sent.elapsed();
    match first {
        Err(Error::Wait(e @ WaitError::DaemonNotResponding { .. })) => {
            let text = e.to_string();
            assert!(
                text.contains(&format!(
                    "rbd-mirror on {} is down or not responding",
                    b.name
                )) && text.contains("no beacon for")
                    && text.contains("re-run"),
                "{text}"
            );
            eprintln!("SIG{signal}: named {took:?} after the signal: {text}");
        }
        other => panic!("SIG{signal}: expected 'down or not responding', got {other:?}"),
    }
    assert!(
        took < Duration::from_secs(10),
        "SIG{signal}: the daemon was named only {took:?} after it was lost"
    );

    // the daemon comes back: a stopped one continues, a killed one is restarted by testenv
    if signal == "STOP" {
        assert!(Command::new("kill")
            .args(["-CONT", &pid.to_string()])
            .status()
            .unwrap()
            .success());
    } else {
        let t = Instant::now();
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            assert!(t.elapsed() < Duration::from_secs(30), "rbd-mirror lingers");
            std::thread::sleep(Duration::from_millis(100));
        }
        testenv::shared().expect("testenv restarts rbd-mirror");
    }
    migrate_volume(
        &m,
        src,
        dst,
        state.path(),
        &RunOptions::default(),
        Arc::new(NullSink),
    )
    .await
    .expect("re-run after the daemon is back");
    assert_eq!(
        sha(&a.name, &spec),
        sha(&b.name, &format!("cinder/{image}")),
        "copy equals the source"
    );
    rbd(&a.name, &["rm", "--no-progress", &spec]);
    rbd(
        &b.name,
        &["rm", "--no-progress", &format!("cinder/{image}")],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_or_hung_rbd_mirror_is_named_within_10_s_and_a_rerun_continues() {
    daemon_lost_during_the_wait("KILL", MirrorImageMode::Journal).await;
    daemon_lost_during_the_wait("STOP", MirrorImageMode::Snapshot).await;
}
