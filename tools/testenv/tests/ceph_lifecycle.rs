//! The environment's own contract, checked against the running pair without disturbing it
//! (other crates' tests share it): `up` on a running pair is a fast no-op, `status` sees
//! every daemon, `testenv env` output drives a shell to the right clusters, the logs the
//! failure guard prints exist.

use std::process::Command;
use std::time::Duration;

use testenv::{Daemon, UpOptions, UpOutcome};

#[test]
fn up_on_a_running_pair_is_a_fast_no_op() {
    let env = testenv::shared().expect("test environment");
    let _logs = env.log_guard();
    let report = testenv::up(env.state_dir(), &UpOptions::default()).expect("second up");
    assert_eq!(report.outcome, UpOutcome::AlreadyUp);
    assert!(
        report.elapsed < Duration::from_secs(1),
        "no-op up took {:?}",
        report.elapsed
    );
    assert_eq!(report.env.site_a(), env.site_a(), "same pair (same fsid)");
    assert_eq!(report.env.site_b(), env.site_b());
}

#[test]
fn status_sees_every_daemon_and_both_mons_answer() {
    let env = testenv::shared().expect("test environment");
    let _logs = env.log_guard();
    let st = testenv::status(env.state_dir());
    assert!(st.up, "{st:#?}");
    assert_eq!(st.daemons.len(), 7, "{st:#?}");
    for d in &st.daemons {
        assert!(d.alive(), "{} {} not alive: {st:#?}", d.site, d.daemon);
        let pid = d.pid.expect("alive has a pid");
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(
            cmdline.contains(&format!("--cluster {}", d.site)),
            "{cmdline}"
        );
    }
    assert!(st
        .daemons
        .iter()
        .any(|d| d.site == testenv::SITE_B && d.daemon == Daemon::RbdMirror));
    let sites: Vec<&str> = st.health.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(sites, [testenv::SITE_A, testenv::SITE_B]);
    for (site, health) in &st.health {
        assert!(health.starts_with("HEALTH_"), "{site}: {health}");
    }
    assert_eq!(st.mirroring.len(), 2, "{st:#?}");
}

/// `up` used to return as soon as the rbd-mirror pid file appeared, while
/// `rbd mirror pool status` still said daemon health UNKNOWN/ERROR for a few seconds: a
/// test running rbd-relay's preflight right after `shared()` saw a "down" daemon.
#[test]
fn rbd_mirror_daemon_health_is_ok_when_shared_returns() {
    let env = testenv::shared().expect("test environment");
    let _logs = env.log_guard();
    for pool in [env.pools().volumes, env.pools().images] {
        let out = Command::new("rbd")
            .args([
                "--cluster",
                &env.site_b().name,
                "mirror",
                "pool",
                "status",
                pool,
            ])
            .args(["--format", "json"])
            .output()
            .expect("rbd mirror pool status");
        let status: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("mirror pool status json");
        assert_eq!(status["summary"]["daemon_health"], "OK", "{pool}: {status}");
    }
}

#[test]
fn env_lines_point_a_shell_at_the_running_clusters() {
    let env = testenv::shared().expect("test environment");
    let _logs = env.log_guard();
    let script = format!(
        "set -eu\n{}\n\
         ceph --conf \"$RBD_RELAY_SITE_A_CONF\" --keyring \"$RBD_RELAY_SITE_A_KEYRING\" fsid\n\
         ceph --cluster \"$RBD_RELAY_SITE_B\" fsid\n\
         echo \"$RBD_RELAY_SITE_A_FSID $RBD_RELAY_SITE_B_FSID\"\n\
         rbd --cluster \"$RBD_RELAY_SITE_B\" mirror pool info \"$RBD_RELAY_SRC_VOLUME_POOL\" --format json\n\
         ceph --admin-daemon \"$RBD_RELAY_RBD_MIRROR_ASOK\" version\n",
        env.env_lines().join("\n")
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], env.site_a().fsid);
    assert_eq!(lines[1], env.site_b().fsid);
    assert_eq!(
        lines[2],
        format!("{} {}", env.site_a().fsid, env.site_b().fsid)
    );
    let info: serde_json::Value = serde_json::from_str(lines[3]).expect("mirror pool info json");
    assert_eq!(info["mode"], "image");
    assert_eq!(info["peers"][0]["direction"], "rx-only");
    assert_eq!(info["peers"][0]["site_name"], testenv::SITE_A);
    let asok_reply = lines[4..].join("");
    assert!(asok_reply.contains("\"version\""), "{asok_reply}");
}

#[test]
fn every_pool_exists_on_both_sites_with_the_right_mirror_mode() {
    let env = testenv::shared().expect("test environment");
    let _logs = env.log_guard();
    for site in [env.site_a(), env.site_b()] {
        let out = Command::new("ceph")
            .args([
                "--cluster",
                &site.name,
                "osd",
                "pool",
                "ls",
                "--format",
                "json",
            ])
            .output()
            .expect("ceph osd pool ls");
        let pools: Vec<String> = serde_json::from_slice(&out.stdout).expect("pool list json");
        for (pool, mode) in [
            (env.pools().volumes, "image"),
            (env.pools().images, "image"),
            (env.pools().cinder, "disabled"),
            (env.pools().glance, "disabled"),
        ] {
            assert!(
                pools.iter().any(|p| p == pool),
                "{}: no pool {pool}",
                site.name
            );
            let out = Command::new("rbd")
                .args(["--cluster", &site.name, "mirror", "pool", "info", pool])
                .args(["--format", "json"])
                .output()
                .expect("rbd mirror pool info");
            let info: serde_json::Value =
                serde_json::from_slice(&out.stdout).expect("mirror pool info json");
            assert_eq!(info["mode"], mode, "{} {pool}: {info}", site.name);
        }
    }
}

#[test]
fn daemon_logs_are_kept_for_the_failure_guard() {
    let env = testenv::shared().expect("test environment");
    let names: Vec<String> = env
        .log_files()
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    for expected in [
        "site-a-mon.a.log",
        "site-a-mgr.x.log",
        "site-a-osd.0.log",
        "site-b-mon.a.log",
        "site-b-osd.0.log",
        "rbd-mirror.log",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing: {names:?}"
        );
    }
    let mut out = Vec::new();
    env.log_guard()
        .lines(5)
        .write_tails(&mut out)
        .expect("write tails");
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains("===== last 5 lines of"), "{out}");
}
