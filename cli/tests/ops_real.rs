#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

//! `rbd-relay resume`, `abort`, `cleanup` and batches against the real Ceph pair: a run
//! killed (SIGKILL) mid-wait is aborted (the source exactly as before, no replica, no copy,
//! no mirror snapshot, state `aborted`, a second abort a no-op) or resumed by id; a verified
//! copy is cleaned up without the cloud steps; a batch with one missing image migrates the
//! others and exits 3; bad input exits non-zero and changes nothing. With the clouds: `resume
//! ID` of an adopting plan adopts in the plan's cloud, and abort then refuses.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::Value;

mod common;
use common::{describe, relay, relay_env, BIN, REPLICA_GONE_LIMIT};
use testenv::probe::{
    exists, image_with_data, info, mirror_snapshots, mirroring_off, rbd, sha, sha_of_first,
    snapshot_names, wait_gone,
};

/// An image in `volumes` with 40 MiB of non-repeating data (the sync takes a moment).
fn make_image(site: &str, prefix: &str) -> (String, String) {
    make_image_in(site, "volumes", prefix)
}

fn make_image_in(site: &str, pool: &str, prefix: &str) -> (String, String) {
    let image = testenv::unique_name(prefix);
    let spec = format!("{pool}/{image}");
    image_with_data(site, &spec, (40 << 20) + 333);
    (image, spec)
}

/// Run a migration with JSON output and SIGKILL it when `kill` says so. Returns whether it
/// was killed.
fn run_and_kill(args: &[String], state: &str, kill: impl Fn(&Value) -> bool) -> bool {
    run_and_kill_env(args, state, &[], kill)
}

fn run_and_kill_env(
    args: &[String],
    state: &str,
    env: &[(&str, &str)],
    kill: impl Fn(&Value) -> bool,
) -> bool {
    let mut child = Command::new(BIN)
        .args(args)
        .args(["--output", "json", "--state-dir", state])
        .envs(env.iter().copied())
        .env_remove("OS_CLOUD")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut killed = false;
    for line in BufReader::new(stdout).lines() {
        let v: Value = serde_json::from_str(&line.unwrap()).unwrap_or(Value::Null);
        if kill(&v) {
            child.kill().unwrap();
            killed = true;
            break;
        }
    }
    child.wait().unwrap();
    killed
}

fn mid_wait(v: &Value) -> bool {
    v["event"] == "progress" && v["phase"] == "sync" && v["percent"] != 100.0
}

fn the_id(state: &str) -> String {
    let out = relay(&["list", "--output", "json"], state);
    assert!(out.status.success(), "{}", describe(&out));
    let first = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap()
        .to_string();
    let v: Value = serde_json::from_str(&first).unwrap();
    v["id"].as_str().unwrap().to_string()
}

fn recorded(state: &str, id: &str) -> Value {
    serde_json::from_slice(&std::fs::read(format!("{state}/{id}.json")).unwrap()).unwrap()
}

fn migrate_args(a: &str, b: &str, spec: &str, mode: &str) -> Vec<String> {
    [
        "migrate", "volume", "--from", a, "--to", b, spec, "--into", "cinder", "--mode", mode,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn abort_after_kill_mid_wait(mode: &str) {
    let env = testenv::shared().expect("testenv");
    let _logs = env.log_guard();
    let (a, b) = (env.site_a().name.clone(), env.site_b().name.clone());
    let (image, spec) = make_image(&a, &format!("abort-{mode}"));
    // a snapshot from before the migration, named as rbd-mirror names its sync points: never
    // removed (it is not this migration's)
    let users_own =
        ".rbd-mirror.0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9.11111111-2222-4333-8444-555555555555";
    rbd(
        &a,
        &[
            "snap",
            "create",
            "--no-progress",
            &format!("{spec}@{users_own}"),
        ],
    );
    let original = info(&a, &spec)["features"].clone();
    let want = sha(&a, &spec);
    let state = tempfile::tempdir().unwrap();
    let s = state.path().to_str().unwrap().to_string();
    let args = migrate_args(&a, &b, &spec, mode);
    // while the run is at work, abort is refused by the lock (and changes nothing)
    assert!(
        run_and_kill(&args, &s, |v| {
            if !mid_wait(v) {
                return false;
            }
            let out = relay(&["abort", &the_id(&s)], &s);
            assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("already working"),
                "{}",
                describe(&out)
            );
            true
        }),
        "killed mid-wait"
    );
    let id = the_id(&s);
    assert!(!mirroring_off(&a, &spec), "mirroring was on when killed");
    // what a journal image sync interrupted by the disable can leave on the source (seen in
    // CI): rbd-mirror's sync point, made as the daemon's sync started
    let sync_point =
        ".rbd-mirror.0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9.5e7b3c1d-9a8b-4c7d-8e6f-5a4b3c2d1e0f";
    rbd(
        &a,
        &[
            "snap",
            "create",
            "--no-progress",
            &format!("{spec}@{sync_point}"),
        ],
    );

    // cleanup refuses an unverified copy, pointing at resume and abort; nothing changes
    let out = relay(&["cleanup", &id], &s);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not verified") && err.contains("resume") && err.contains("abort"),
        "{err}"
    );
    assert!(!mirroring_off(&a, &spec));

    // the dry run prints the undo plan, numbered with roles, and changes nothing
    let before = std::fs::read(format!("{s}/{id}.json")).unwrap();
    let out = relay(&["abort", &id, "--dry-run"], &s);
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("undo plan {id}"))
            && stdout.contains(&format!(
                "[Ceph source admin] disable mirroring of {a}:{spec} if this migration enabled it"
            ))
            && stdout.contains("remove this migration's marker")
            && stdout.contains("(dry run: nothing was changed)"),
        "{stdout}"
    );
    assert!(!mirroring_off(&a, &spec), "the dry run left mirroring on");
    assert_eq!(std::fs::read(format!("{s}/{id}.json")).unwrap(), before);

    let out = relay(&["abort", &id], &s);
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("disabled mirroring"), "{stdout}");
    assert_eq!(info(&a, &spec)["features"], original, "features as before");
    assert!(mirroring_off(&a, &spec), "mirroring off");
    assert_eq!(mirror_snapshots(&a, &spec), 0, "no mirror snapshot left");
    // nor any other: rbd-mirror's sync point of the interrupted sync included; the user's
    // snapshot from before stays
    assert_eq!(
        snapshot_names(&a, &spec),
        vec![users_own.to_string()],
        "no snapshot of the migration left"
    );
    assert_eq!(sha(&a, &spec), want, "source data untouched");
    assert!(!exists(&b, &format!("cinder/{image}")), "no copy");
    wait_gone(&b, &spec, REPLICA_GONE_LIMIT);
    let st = recorded(&s, &id);
    assert_eq!(st["aborted"], true, "{st}");
    assert_eq!(st["outcome"], "aborted");

    // again: a no-op success
    let out = relay(&["abort", &id, "--output", "json"], &s);
    assert!(out.status.success(), "{}", describe(&out));
    let last: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(last["result"], "ok");
    assert_eq!(last["aborted"]["undone"], serde_json::json!([]), "{last}");
    // resume refuses an aborted migration
    let out = relay(&["resume", &id], &s);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("was aborted"));
    rbd(
        &a,
        &[
            "snap",
            "rm",
            "--no-progress",
            &format!("{spec}@{users_own}"),
        ],
    );
    rbd(&a, &["rm", "--no-progress", &spec]);
}

#[test]
fn journal_abort_after_kill_mid_wait_restores_the_source() {
    abort_after_kill_mid_wait("journal");
}

#[test]
fn snapshot_abort_after_kill_mid_wait_restores_the_source() {
    abort_after_kill_mid_wait("snapshot");
}

#[test]
fn resume_by_id_finishes_a_killed_run() {
    let env = testenv::shared().expect("testenv");
    let (a, b) = (env.site_a().name.clone(), env.site_b().name.clone());
    let (image, spec) = make_image(&a, "resume-id");
    let original = info(&a, &spec)["features"].clone();
    let want = sha(&a, &spec);
    let state = tempfile::tempdir().unwrap();
    let s = state.path().to_str().unwrap().to_string();
    assert!(run_and_kill(
        &migrate_args(&a, &b, &spec, "journal"),
        &s,
        mid_wait
    ));
    let id = the_id(&s);
    let out = relay(&["resume", &id, "--output", "json"], &s);
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("resuming migration"),
        "a resume, not a new run: {stdout}"
    );
    let last: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["summary"]["sha256"], want);
    assert_eq!(sha(&b, &format!("cinder/{image}")), want);
    assert_eq!(info(&a, &spec)["features"], original);
    assert!(mirroring_off(&a, &spec));
    // finished: says so, exit 0
    let out = relay(&["resume", &id], &s);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("already finished"));
    rbd(&a, &["rm", "--no-progress", &spec]);
    rbd(&b, &["rm", "--no-progress", &format!("cinder/{image}")]);
}

#[test]
fn cleanup_after_a_verified_copy_keeps_it_and_restores_the_source() {
    let env = testenv::shared().expect("testenv");
    let (a, b) = (env.site_a().name.clone(), env.site_b().name.clone());
    let (image, spec) = make_image(&a, "cleanup");
    let original = info(&a, &spec)["features"].clone();
    let want = sha(&a, &spec);
    let state = tempfile::tempdir().unwrap();
    let s = state.path().to_str().unwrap().to_string();
    // killed when the cleanup starts: the copy is verified and recorded as such (the step
    // itself may or may not have got through before the kill; cleanup converges either way)
    // (the copy handover: its cleanup steps are the source's own)
    let mut args = migrate_args(&a, &b, &spec, "journal");
    args.extend(["--handover".to_string(), "copy".to_string()]);
    assert!(run_and_kill(&args, &s, |v| v["event"] == "step_started"
        && v["step"] == "disable_mirroring"));
    let id = the_id(&s);

    // abort refuses to remove a verified copy without the flag; nothing changes
    let out = relay(&["abort", &id], &s);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--discard-verified-copy"),
        "{}",
        describe(&out)
    );
    assert!(exists(&b, &format!("cinder/{image}")));

    let out = relay(&["cleanup", &id], &s);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("cleaned up the source side"),
        "{}",
        describe(&out)
    );
    assert!(mirroring_off(&a, &spec));
    assert_eq!(info(&a, &spec)["features"], original);
    assert_eq!(mirror_snapshots(&a, &spec), 0);
    assert_eq!(
        snapshot_names(&a, &spec),
        Vec::<String>::new(),
        "no snapshot left"
    );
    assert_eq!(sha(&b, &format!("cinder/{image}")), want, "copy kept");
    wait_gone(&b, &spec, REPLICA_GONE_LIMIT);
    // again: nothing to do; --forget drops the finished record
    let out = relay(&["cleanup", &id, "--forget"], &s);
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("already cleaned up") && stdout.contains("removed"));
    assert!(!std::path::Path::new(&format!("{s}/{id}.json")).exists());
    rbd(&a, &["rm", "--no-progress", &spec]);
    rbd(&b, &["rm", "--no-progress", &format!("cinder/{image}")]);
}

#[test]
fn a_batch_with_a_missing_image_migrates_the_others_and_exits_3() {
    let env = testenv::shared().expect("testenv");
    let (a, b) = (env.site_a().name.clone(), env.site_b().name.clone());
    let good: Vec<(String, String)> = (0..2)
        .map(|_| {
            let image = testenv::unique_name("batch");
            let spec = format!("volumes/{image}");
            rbd(&a, &["create", "--size", "24M", &spec]);
            rbd(
                &a,
                &["bench", "--io-type", "write", "--io-total", "5M", &spec],
            );
            (image, spec)
        })
        .collect();
    let missing = format!("volumes/{}", testenv::unique_name("batch-missing"));
    let state = tempfile::tempdir().unwrap();
    let s = state.path().to_str().unwrap().to_string();
    let list = state.path().join("list.txt");
    std::fs::write(
        &list,
        format!(
            "# the batch\n{}\n\n{}   # not there\n{}\n",
            good[0].1, missing, good[1].1
        ),
    )
    .unwrap();
    let args = [
        "migrate",
        "volume",
        "--from",
        &a,
        "--to",
        &b,
        "--from-file",
        list.to_str().unwrap(),
        "--into",
        "cinder",
        "--parallel",
        "2",
    ];
    let out = relay(&args, &s);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("IMAGE") && stdout.contains("RESULT"),
        "{stdout}"
    );
    for spec in [&good[0].1, &missing, &good[1].1] {
        assert!(stdout.contains(spec.as_str()), "{spec} not in {stdout}");
    }
    assert!(stdout.contains("2 of 3 migrated and verified"), "{stdout}");
    assert!(stdout.contains("does not exist"), "{stdout}");
    for (image, spec) in &good {
        assert_eq!(sha(&b, &format!("cinder/{image}")), sha(&a, spec));
        assert!(mirroring_off(&a, spec));
    }

    // the same batch again, as JSON: the finished ones are already done, the missing one
    // fails again; every event and result carries its migration id
    let json_args: Vec<&str> = args.iter().copied().chain(["--output", "json"]).collect();
    let out = relay(&json_args, &s);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let results: Vec<&Value> = lines
        .iter()
        .filter(|v| v.get("result").is_some() && v.get("migration").is_some())
        .collect();
    assert_eq!(results.len(), 3, "{lines:?}");
    assert!(lines
        .iter()
        .filter(|v| v.get("event").is_some())
        .all(|v| v["migration"].is_string()));
    let overall = lines.last().unwrap();
    assert_eq!(overall["result"], "some_failed", "{overall}");
    assert_eq!(overall["batch"]["ok"], 2);
    assert_eq!(overall["batch"]["failed"], 1);
    assert!(overall["batch"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["summary"].is_object())
        .all(|i| i["summary"]["already_done"] == true));
    for (image, spec) in &good {
        rbd(&a, &["rm", "--no-progress", spec]);
        rbd(&b, &["rm", "--no-progress", &format!("cinder/{image}")]);
    }
}

#[test]
fn bad_input_exits_non_zero_and_changes_nothing() {
    let env = testenv::shared().expect("testenv");
    let (a, b) = (env.site_a().name.clone(), env.site_b().name.clone());
    let image = testenv::unique_name("ops-bad");
    let spec = format!("volumes/{image}");
    rbd(&a, &["create", "--size", "8M", &spec]);
    let before = info(&a, &spec);
    let state = tempfile::tempdir().unwrap();
    let s = state.path().to_str().unwrap().to_string();
    let other = format!("volumes/{}", testenv::unique_name("ops-bad"));
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["resume", "no-such-id"], 1, "rbd-relay list"),
        (vec!["abort", "no-such-id"], 1, "rbd-relay list"),
        (vec!["cleanup", "no-such-id"], 1, "rbd-relay list"),
        (
            vec![
                "migrate", "volume", "--from", &a, "--to", &b, &spec, &other, "--into", "cinder",
                "--name", "x",
            ],
            2,
            "--name names one copy",
        ),
        (
            vec![
                "migrate",
                "volume",
                "--from",
                &a,
                "--to",
                &b,
                &spec,
                "--into",
                "cinder",
                "--parallel",
                "0",
            ],
            2,
            "--parallel",
        ),
        (
            vec![
                "migrate",
                "volume",
                "--from",
                &a,
                "--to",
                &b,
                &spec,
                "justaname",
                "--into",
                "cinder",
            ],
            2,
            "expected POOL/IMAGE",
        ),
        (
            vec![
                "migrate",
                "volume",
                "--from",
                &a,
                "--to",
                &b,
                "--from-file",
                "/nonexistent/list",
                "--into",
                "cinder",
            ],
            2,
            "--from-file /nonexistent/list",
        ),
        (
            vec![
                "migrate", "volume", "--from", &a, "--to", &b, &spec, &spec, "--into", "cinder",
            ],
            2,
            "given twice",
        ),
    ];
    for (args, code, needle) in cases {
        let out = relay(&args, &s);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}: {}",
            describe(&out)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(needle),
            "{args:?}: expected '{needle}' in {err}"
        );
    }
    assert_eq!(info(&a, &spec), before, "the image is unchanged");
    assert!(!exists(&b, &format!("cinder/{image}")));
    assert_eq!(
        std::fs::read_dir(state.path())
            .map(|d| d.count())
            .unwrap_or(0),
        0,
        "no state written"
    );
    rbd(&a, &["rm", "--no-progress", &spec]);
}

/// The source cluster reached under a second name (its own conf, copied, with its keyring)
/// is the same cluster: refused by fsid, exit 1, nothing changed, nothing recorded.
#[test]
fn the_same_cluster_under_another_name_is_refused_by_fsid() {
    let env = testenv::shared().expect("testenv");
    let a = env.site_a().name.clone();
    let image = testenv::unique_name("ops-same");
    let spec = format!("volumes/{image}");
    rbd(&a, &["create", "--size", "8M", &spec]);
    let before = info(&a, &spec);
    let dir = tempfile::tempdir().unwrap();
    let alias_conf = dir.path().join("alias.conf");
    let conf = std::fs::read_to_string(format!("/etc/ceph/{a}.conf")).unwrap();
    std::fs::write(
        &alias_conf,
        conf.replace(
            "keyring = /etc/ceph/$cluster.$name.keyring",
            &format!("keyring = /etc/ceph/{a}.$name.keyring"),
        ),
    )
    .unwrap();
    let state = tempfile::tempdir().unwrap();
    let s = state.path().to_str().unwrap().to_string();
    for dry in [true, false] {
        let mut args = vec![
            "migrate",
            "volume",
            "--from",
            &a,
            "--to",
            "alias-of-site-a",
            "--to-conf",
            alias_conf.to_str().unwrap(),
            &spec,
            "--into",
            "cinder",
        ];
        if dry {
            args.push("--dry-run");
        }
        let out = relay(&args, &s);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        assert!(
            err.contains(&format!(
                "{a} and alias-of-site-a are the same Ceph cluster (fsid {})",
                env.site_a().fsid
            )),
            "{err}"
        );
    }
    assert_eq!(info(&a, &spec), before, "the image is unchanged");
    assert!(!exists(&a, &format!("cinder/{image}")), "no copy");
    assert_eq!(
        std::fs::read_dir(state.path())
            .unwrap()
            .filter(|e| e
                .as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "json")))
            .count(),
        0,
        "no state recorded"
    );
    rbd(&a, &["rm", "--no-progress", &spec]);
}

/// `resume ID` of a plan that adopts the copy connects to the destination cloud named in the
/// plan (no --os-cloud given); once adopted, abort refuses: the cloud owns the copy.
#[test]
fn resume_by_id_adopts_in_the_plans_cloud_then_abort_refuses() {
    let env = testenv::shared_with_openstack().expect("testenv with OpenStack");
    let os = env.openstack().expect("OpenStack clouds").clone();
    let (a, b) = (env.site_a().name.clone(), env.site_b().name.clone());
    let clouds_yaml = os.clouds_yaml.to_str().unwrap().to_string();
    let cloud_env = [("OS_CLIENT_CONFIG_FILE", clouds_yaml.as_str())];
    let dst_admin = os.destination.admin_cloud.clone();
    let dst_pool = os.destination.volume_pool.clone();
    let (image, spec) = make_image_in(&a, &os.source.volume_pool, "resume-adopt");
    let original = info(&a, &spec)["features"].clone();
    let want = sha(&a, &spec);
    let state = tempfile::tempdir().unwrap();
    let s = state.path().to_str().unwrap().to_string();
    let vol_name = format!("vol-{image}");
    let args: Vec<String> = [
        "migrate",
        "volume",
        "--from",
        &a,
        "--to",
        &b,
        &spec,
        "--into",
        &dst_pool,
        "--adopt",
        "--os-cloud",
        &dst_admin,
        "--name",
        &vol_name,
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    assert!(
        run_and_kill_env(&args, &s, &cloud_env, mid_wait),
        "killed mid-wait"
    );
    let id = the_id(&s);

    let out = relay_env(&["resume", &id, "--output", "json"], &s, &cloud_env);
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["summary"]["sha256"], want, "{last}");
    let vol = &last["summary"]["volume"];
    assert_eq!(vol["status"], "available", "{last}");
    let vol_id = vol["id"].as_str().unwrap().to_string();
    let renamed = format!("{dst_pool}/volume-{vol_id}");
    // grown to a whole GiB before the adoption: the source's bytes first
    assert_eq!(sha_of_first(&b, &renamed, (40 << 20) + 333), want);
    assert_eq!(info(&a, &spec)["features"], original);
    assert!(mirroring_off(&a, &spec));

    let out = relay_env(&["abort", &id], &s, &cloud_env);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("owns it now"),
        "{}",
        describe(&out)
    );
    assert!(exists(&b, &renamed), "the adopted copy is kept");

    // clean up: Cinder forgets the volume, then the RBD image and the source go
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sources = openstack_client::ConfigSources {
            clouds_files: vec![os.clouds_yaml.clone()],
            ..Default::default()
        };
        let cfg = openstack_client::CloudConfig::from_sources(&sources, Some(&dst_admin)).unwrap();
        let client = openstack_client::OpenStackClient::connect(
            cfg,
            openstack_client::ClientOptions::default(),
        )
        .await
        .unwrap();
        cinder_manage::Cinder::new(client, cinder_manage::Side::Destination)
            .unmanage(&vol_id)
            .await
            .unwrap();
    });
    rbd(&b, &["rm", "--no-progress", &renamed]);
    rbd(&a, &["rm", "--no-progress", &spec]);
}

#[test]
fn a_batch_dry_run_from_stdin_plans_every_image_and_changes_nothing() {
    use std::io::Write;
    let env = testenv::shared().expect("testenv");
    let (a, b) = (env.site_a().name.clone(), env.site_b().name.clone());
    let images: Vec<(String, String)> = (0..2)
        .map(|_| {
            let image = testenv::unique_name("batch-dry");
            let spec = format!("volumes/{image}");
            rbd(&a, &["create", "--size", "8M", &spec]);
            (image, spec)
        })
        .collect();
    let before: Vec<Value> = images.iter().map(|(_, s)| info(&a, s)).collect();
    let state = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["migrate", "volume", "--from", &a, "--to", &b])
        .args(["--from-file", "-", "--into", "cinder", "--dry-run"])
        .args(["--parallel", "2", "--state-dir"])
        .arg(state.path())
        .env_remove("OS_CLOUD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let list = format!("# from stdin\n{}\n{}\n", images[0].1, images[1].1);
    child
        .stdin
        .take()
        .unwrap()
        .write_all(list.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for (image, spec) in &images {
        // each image's own plan: its steps, its copy target
        assert!(stdout.contains(&format!("{a}:{spec}")), "{spec}: {stdout}");
        assert!(
            stdout.contains(&format!("cinder/{image}")),
            "{image}: {stdout}"
        );
    }
    // nothing changed: features, mirroring, no copy, no state recorded
    for ((image, spec), was) in images.iter().zip(&before) {
        let now = info(&a, spec);
        assert_eq!(now["features"], was["features"], "{spec} features changed");
        assert_eq!(now["size"], was["size"], "{spec} size changed");
        assert!(mirroring_off(&a, spec));
        assert!(!exists(&b, &format!("cinder/{image}")));
        rbd(&a, &["rm", "--no-progress", spec]);
    }
    let recorded = std::fs::read_dir(state.path())
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(recorded, 0, "a dry run recorded state");
}

#[test]
fn on_a_terminal_a_run_draws_progress_bars() {
    let env = testenv::shared().expect("testenv");
    let (a, b) = (env.site_a().name.clone(), env.site_b().name.clone());
    let image = testenv::unique_name("bars");
    let spec = format!("volumes/{image}");
    rbd(&a, &["create", "--size", "16M", &spec]);
    let state = tempfile::tempdir().unwrap();
    // `script` runs the command on a pseudo-terminal (util-linux, part of Debian's base)
    let cmd = format!(
        "{BIN} --state-dir {} migrate volume --from {a} --to {b} {spec} --into cinder",
        state.path().display()
    );
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("script (util-linux) runs the command on a terminal");
    assert!(out.status.success(), "{}", describe(&out));
    let screen = strip_ansi(&String::from_utf8_lossy(&out.stdout));
    // an indicatif bar: "[", a run of bar characters, "]", a percentage; and a full one
    let bars: Vec<&str> = screen
        .split(['\r', '\n'])
        .filter(|l| l.trim_start().starts_with('[') && l.contains("] ") && l.contains('%'))
        .collect();
    let bar = bars
        .iter()
        .any(|l| l.contains("==========") && l.contains("100%"));
    assert!(bar, "no progress bar drawn:\n{screen}");
    assert!(screen.contains("verified: sha256"), "{screen}");
    rbd(&a, &["rm", "--no-progress", &spec]);
    rbd(&b, &["rm", "--no-progress", &format!("cinder/{image}")]);
}

/// The text of terminal output without its escape sequences (colours, line clearing).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A source with a protected user snapshot and a clone of it (a Cinder volume with a
/// snapshot and a volume made from that snapshot): rbd-mirror replicates the snapshot, and
/// the handover by clone removes the replica with its copy of it. The source keeps its own
/// snapshot, still protected, and its clone; the copy equals the source.
fn migrates_a_source_with_a_protected_snapshot_and_a_clone(mode: &str) {
    let env = testenv::shared().expect("testenv");
    let _logs = env.log_guard();
    let (a, b) = (env.site_a().name.clone(), env.site_b().name.clone());
    let (image, spec) = make_image(&a, &format!("snapped-{mode}"));
    let child = format!("volumes/{image}-child");
    rbd(&a, &["snap", "create", &format!("{spec}@base")]);
    rbd(&a, &["snap", "protect", &format!("{spec}@base")]);
    rbd(&a, &["clone", &format!("{spec}@base"), &child]);
    let want = sha(&a, &spec);
    let state = tempfile::tempdir().unwrap();
    let st = state.path().to_str().unwrap();
    let args = migrate_args(&a, &b, &spec, mode);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = relay(&args, st);
    assert!(out.status.success(), "{mode}: {}", describe(&out));
    let copy = format!("cinder/{image}");
    assert_eq!(sha(&b, &copy), want, "{mode}: the copy");
    wait_gone(&b, &spec, REPLICA_GONE_LIMIT);
    let snaps = testenv::probe::rbd_json(&a, &["snap", "ls", &spec]);
    let base = snaps
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "base")
        .unwrap_or_else(|| panic!("{mode}: the source lost its snapshot: {snaps}"));
    assert_eq!(base["protected"], "true", "{mode}: {base}");
    assert!(exists(&a, &child), "{mode}: the source's clone");
    assert!(mirroring_off(&a, &spec), "{mode}: source mirroring");
    assert_eq!(sha(&a, &spec), want, "{mode}: the source");
    // clean up: the copy, the clone, the snapshot, the source
    let _ = rbd(&b, &["rm", "--no-progress", &copy]);
    let _ = rbd(&a, &["rm", "--no-progress", &child]);
    let _ = rbd(&a, &["snap", "unprotect", &format!("{spec}@base")]);
    let _ = rbd(&a, &["snap", "purge", "--no-progress", &spec]);
    let _ = rbd(&a, &["rm", "--no-progress", &spec]);
}

#[test]
fn a_source_with_a_protected_snapshot_and_a_clone_is_migrated_in_journal_mode() {
    migrates_a_source_with_a_protected_snapshot_and_a_clone("journal");
}

#[test]
fn a_source_with_a_protected_snapshot_and_a_clone_is_migrated_in_snapshot_mode() {
    migrates_a_source_with_a_protected_snapshot_and_a_clone("snapshot");
}
