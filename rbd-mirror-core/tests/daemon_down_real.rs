//! rbd-mirror down during a migration (real pair): the wait ends with a clear error (stall or
//! daemon down) that says to re-run; after the daemon is back, the re-run finishes the job.
//!
//! Its own test binary: it stops the shared rbd-mirror daemon, so nothing else may run
//! beside it (cargo runs test binaries one after another).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rbd_mirror_core::error::Error;
use rbd_mirror_core::event::NullSink;
use rbd_mirror_core::exec::{migrate_volume, RunOptions};
use rbd_mirror_core::plan::VolumeMigration;
use rbd_mirror_core::real::RbdCeph;
use rbd_mirror_core::spec::{ClusterSpec, PoolSpec};

fn rbd(args: &[&str]) {
    let out = Command::new("rbd").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "rbd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rbd_mirror_down_is_a_clear_error_and_a_rerun_continues() {
    let env = testenv::shared().expect("testenv");
    let _logs = env.log_guard();
    let (a, b) = (env.site_a().clone(), env.site_b().clone());
    let image = testenv::unique_name("down");
    let spec = format!("volumes/{image}");
    rbd(&["--cluster", &a.name, "create", "--size", "16M", &spec]);
    rbd(&[
        "--cluster",
        &a.name,
        "bench",
        "--io-type",
        "write",
        "--io-total",
        "4M",
        &spec,
    ]);

    // stop the daemon (by its pid file, like testenv does)
    let pid_file = env.rbd_mirror_asok().with_extension("pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(Command::new("kill")
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success());
    let t = Instant::now();
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "rbd-mirror did not stop"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let src = Arc::new(
        RbdCeph::connect(&ClusterSpec::with_conf(&a.name, a.conf.clone()).unwrap()).unwrap(),
    );
    let dst = Arc::new(
        RbdCeph::connect(&ClusterSpec::with_conf(&b.name, b.conf.clone()).unwrap()).unwrap(),
    );
    let m = VolumeMigration::new(
        ClusterSpec::named(&a.name).unwrap(),
        ClusterSpec::named(&b.name).unwrap(),
        spec.parse().unwrap(),
        PoolSpec::new("cinder").unwrap(),
    );
    let state = tempfile::tempdir().unwrap();
    let mut opts = RunOptions::default();
    opts.wait.stall_after = Duration::from_secs(15);
    opts.wait.health_every = Duration::from_secs(1);
    let first = migrate_volume(
        &m,
        src.clone(),
        dst.clone(),
        state.path(),
        &opts,
        Arc::new(NullSink),
    )
    .await;
    let result = match first {
        // preflight may already see the daemon gone from the service map
        Err(Error::Preflight(p)) => {
            let text = p
                .iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join("; ");
            assert!(text.contains("rbd-mirror"), "{text}");
            "preflight"
        }
        Err(Error::Wait(e)) => {
            let text = e.to_string();
            assert!(text.contains("re-run"), "the error says what to do: {text}");
            "wait"
        }
        other => panic!("expected a clear error with rbd-mirror down, got {other:?}"),
    };
    eprintln!("with rbd-mirror down the run stopped in {result}");

    // the daemon comes back (testenv restarts only rbd-mirror), the re-run finishes
    let env = testenv::shared().expect("testenv restarts rbd-mirror");
    let _ = env;
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
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "rbd --cluster {} export --no-progress {spec} - | sha256sum; rbd --cluster {} export --no-progress cinder/{image} - | sha256sum",
            a.name, b.name
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let sums: Vec<&str> = text.lines().map(|l| &l[..64]).collect();
    assert_eq!(sums[0], sums[1], "copy equals the source");
    rbd(&["--cluster", &a.name, "rm", "--no-progress", &spec]);
    rbd(&[
        "--cluster",
        &b.name,
        "rm",
        "--no-progress",
        &format!("cinder/{image}"),
    ]);
}
