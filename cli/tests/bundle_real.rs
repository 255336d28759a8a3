//! `rbd-relay bundle volume` against the real Ceph pair and clouds of the test environment:
//! every generated script is shellcheck-clean, and the bundle, run in order with each role's
//! own credentials (source script and cleanup with `client.relay-src` on site-a only, the
//! destination script with `client.relay-dst` on site-b only, the tenant script with the
//! Keystone admin cloud `site-b-admin`), each script run twice, performs the whole migration
//! of an image and a volume with hostile names and ends like `migrate`: the Cinder volume is
//! `available` with the source's content, the source's features are as before, mirroring is
//! off, no replica and no mirror snapshot is left. The cleanup run right after the source
//! script (given only its digest: no copy exists yet), or given a wrong verification token or
//! a wrong digest, stops at its check with a clear message and changes nothing. Those runs
//! use `--handover copy`; the handover by clone (the default) is run by the roles too, cold
//! with an adoption and live with a watcher (`rbd watch`) holding the source: its cutover
//! script waits and gives up while the watcher is there, and cuts over once it is gone. The
//! clone bundle runs in snapshot mode too (its source a bootable Cinder volume with image
//! metadata, which the tenant script sets on the adopted volume), and its roll back is run by
//! the roles in both modes after a handover that fails once the source is demoted, followed
//! by a re-run of the whole bundle that converges.
//!
//! Over 800 lines, and `volume_bundle` and `bootable_bundle_...` over 120, on purpose: each
//! of those two is one end-to-end scenario (scripts run in order by role, each twice, with a
//! check after every step), read top to bottom like the runbook it tests; cut into pieces,
//! the order of the steps and what each check relies on would no longer be in one place.

#![allow(clippy::unwrap_used)] // test code: a failed setup step should panic with its message

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use testenv::probe::{patterned_bytes, rbd_output, sha_of_first};

mod common;
use common::BIN;

// The image helpers below take pool and image apart (`--pool P --image I`) because the
// names of this test are hostile (quotes, spaces, leading dashes); testenv::probe's take
// POOL/NAME specs.

fn image_args<'a>(pool: &'a str, image: &'a str) -> [&'a str; 4] {
    ["--pool", pool, "--image", image]
}

fn info(cluster: &str, pool: &str, image: &str) -> Option<Value> {
    let mut args = vec!["info", "--format", "json"];
    args.extend(image_args(pool, image));
    let out = rbd_output(cluster, &args);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn sha(cluster: &str, pool: &str, image: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg("rbd --cluster \"$1\" export --no-progress --pool \"$2\" --image \"$3\" - | sha256sum")
        .args(["sh", cluster, pool, image])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)[..64].to_string()
}

/// An RBD image of `len` bytes of known data, with rbd's default features.
fn image_with_data(cluster: &str, pool: &str, image: &str, len: usize) {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), patterned_bytes(len)).unwrap();
    let mut args = vec!["import", "--no-progress", f.path().to_str().unwrap()];
    args.extend(["--dest-pool", pool, "--dest", image]);
    let out = rbd_output(cluster, &args);
    assert!(out.status.success(), "{out:?}");
}

fn mirror_snapshots(cluster: &str, pool: &str, image: &str) -> Vec<Value> {
    all_snapshots(cluster, pool, image)
        .into_iter()
        .filter(|s| s["namespace"]["type"] == "mirror")
        .collect()
}

/// Every snapshot of the image, in every namespace.
fn all_snapshots(cluster: &str, pool: &str, image: &str) -> Vec<Value> {
    let mut args = vec!["snap", "ls", "--all", "--format", "json"];
    args.extend(image_args(pool, image));
    let out = rbd_output(cluster, &args);
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array().unwrap().clone()
}

/// rbd-mirror removes a replica asynchronously once mirroring of its primary is disabled.
fn gone_soon(cluster: &str, pool: &str, image: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(90);
    while info(cluster, pool, image).is_some() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    true
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `sh ./SCRIPT ARGS...` in the bundle directory with exactly `env` added to a minimal
/// environment (no CEPH_ARGS, no OS_* of the caller).
fn script(dir: &Path, name: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut c = Command::new("timeout");
    c.args(["600", "sh", &format!("./{name}")])
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .env(
            "HOME",
            std::env::var("HOME").unwrap_or_else(|_| "/root".into()),
        )
        .env("RBD_RELAY_POLL_INTERVAL", "2")
        .env("RBD_RELAY_WAIT_TIMEOUT", "300");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    let r = Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!("--- {name} {args:?}: ok={}\n{}{}", r.ok, r.stdout, r.stderr);
    r
}

/// The arguments of the `sh ./NEXT ARGS` line a script printed for the next role.
fn next_line(r: &Run, next: &str) -> Vec<String> {
    let line = r
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("sh ./{next} ")))
        .unwrap_or_else(|| panic!("no 'sh ./{next}' line in:\n{}", r.stdout));
    line.split_whitespace().skip(2).map(String::from).collect()
}

fn shellcheck(path: &Path) {
    let out = Command::new("shellcheck")
        .args(["-s", "sh"])
        .arg(path)
        .output()
        .expect(
            "shellcheck must be installed (apt-get install shellcheck); this test never skips it",
        );
    assert!(
        out.status.success(),
        "shellcheck {}:\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The verification token of plan `plan_id` for a digest, copy image id and fsid, computed
/// here the way the scripts document it (to hand the cleanup a well-formed, wrong digest).
fn verification_token(plan_id: &str, digest: &str, copy_id: &str, fsid: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg("printf 'rbd-relay verified copy\\n%s\\n%s\\n%s\\n%s\\n' \"$1\" \"$2\" \"$3\" \"$4\" | sha256sum")
        .args(["sh", plan_id, digest, copy_id, fsid])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)[..64].to_string()
}

fn openstack(clouds_yaml: &Path, cloud: &str, args: &[&str]) -> Output {
    Command::new("timeout")
        .args(["120", "openstack", "--os-cloud", cloud])
        .args(args)
        .env("OS_CLIENT_CONFIG_FILE", clouds_yaml)
        .output()
        .unwrap()
}

#[test]
fn volume_bundle_run_by_split_roles_ends_like_migrate() {
    volume_bundle("journal", false);
}

#[test]
fn snapshot_mode_volume_bundle_run_by_split_roles_ends_like_migrate() {
    volume_bundle("snapshot", true);
}

/// `source_only`: the bundle is generated like a source admin without a destination key
/// would, with `--source-only --from-id relay-src` (the scripts then default to that user).
///
/// Long on purpose (see the file's header): one scenario, its steps in the runbook's order.
fn volume_bundle(mode: &str, source_only: bool) {
    let env = testenv::shared_with_openstack().expect("test environment with OpenStack");
    let _logs = env.log_guard();
    let users = env.role_users().expect("per-role cephx users");
    let os = env.openstack().expect("OpenStack clouds").clone();
    let (a, b) = (env.site_a().name.clone(), env.site_b().name.clone());
    let (pool, into) = (
        os.source.volume_pool.clone(),
        os.destination.volume_pool.clone(),
    );
    assert_eq!(users.tenant_admin_cloud, os.destination.admin_cloud);

    // hostile names, as far as RBD (no whitespace, '/', '@', leading '.') and Cinder accept
    let image = format!(
        "{}-$(touch${{IFS}}pwned)-'q'`touch${{IFS}}pwned`;*&|<>\"",
        testenv::unique_name("bdl")
    );
    let volume = format!(
        "vol 'x' $(touch pwned) `touch pwned`; * \"q\" {}",
        testenv::unique_name("v")
    );
    image_with_data(&a, &pool, &image, 6 << 20);
    let before = info(&a, &pool, &image).unwrap();
    let source_sha = sha(&a, &pool, &image);

    let dir = tempfile::tempdir().unwrap();
    let out_dir: PathBuf = dir.path().join("bundle");
    let state = tempfile::tempdir().unwrap();
    let mut generate = Command::new(BIN);
    generate.args(["bundle", "volume", "--handover", "copy"]);
    if source_only {
        generate.args(["--source-only", "--from-id", &users.source_admin.id]);
        generate.args(["--to-id", &users.destination_admin.id]);
    }
    let out = generate
        .args(["--from", &a, "--to", &b])
        .arg(format!("{pool}/{image}"))
        .args([
            "--into",
            &into,
            "--adopt",
            "--os-cloud",
            &os.destination.admin_cloud,
        ])
        .args(["--name", &volume, "--mode", mode, "--out"])
        .arg(&out_dir)
        .args(["--output", "json", "--state-dir"])
        .arg(state.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = result["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "1-source-ceph-admin.sh",
            "2-destination-ceph-admin.sh",
            "3-tenant-admin.sh",
            "4-source-ceph-admin-cleanup.sh",
            "README.md"
        ]
    );
    // a second bundle into the same directory is refused without --force
    let again = Command::new(BIN)
        .args([
            "bundle",
            "volume",
            "--handover",
            "copy",
            "--from",
            &a,
            "--to",
            &b,
        ])
        .arg(format!("{pool}/{image}"))
        .args(["--into", &into, "--out"])
        .arg(&out_dir)
        .args(["--state-dir"])
        .arg(state.path())
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("is not empty"),
        "{again:?}"
    );

    for n in &names[..4] {
        let path = out_dir.join(n);
        shellcheck(&path);
        let text = std::fs::read_to_string(&path).unwrap();
        for secret in ["key =", "AQ", "password"] {
            assert!(!text.contains(secret), "{n} contains {secret}");
        }
    }

    let src_env = [("SRC_ID", users.source_admin.id.as_str())];
    let dst_env = [("DST_ID", users.destination_admin.id.as_str())];
    let clouds = os.clouds_yaml.display().to_string();
    let tenant_env = [
        ("OS_CLOUD", os.destination.admin_cloud.as_str()),
        ("OS_CLIENT_CONFIG_FILE", clouds.as_str()),
    ];

    // 1. Ceph source admin, twice
    let mut handoff = Vec::new();
    for _ in 0..2 {
        let r = script(&out_dir, names[0], &[], &src_env);
        assert!(r.ok, "source script failed");
        handoff = next_line(&r, names[1]);
    }
    assert_eq!(handoff[0], source_sha);
    if mode == "snapshot" {
        // the id of the source's primary mirror snapshot the replica must complete
        assert_eq!(handoff.len(), 2, "{handoff:?}");
        let ids: Vec<String> = mirror_snapshots(&a, &pool, &image)
            .iter()
            .filter(|s| s["namespace"]["state"] == "primary")
            .map(|s| s["id"].to_string())
            .collect();
        assert!(ids.contains(&handoff[1]), "{ids:?} {handoff:?}");
    } else {
        assert_eq!(handoff.len(), 1, "{handoff:?}");
    }
    let during = info(&a, &pool, &image).unwrap();
    assert_eq!(during["mirroring"]["state"], "enabled");
    assert_eq!(during["mirroring"]["mode"], mode);

    // the cleanup right after the source script, given what it printed (the digest): no copy
    // exists, so it is refused and changes nothing (features, mirroring, mirror snapshots,
    // the replica)
    let snapshots_during = mirror_snapshots(&a, &pool, &image);
    let replica_during = info(&b, &pool, &image).map(|r| r["id"].clone());
    if mode == "journal" {
        // the source script waited until the peer replayed everything: the replica exists
        assert!(
            replica_during.is_some(),
            "no replica after the source script"
        );
    }
    let early: Vec<&str> = handoff.iter().map(String::as_str).collect();
    let r = script(&out_dir, names[3], &early, &src_env);
    assert!(!r.ok, "the cleanup ran before any copy existed");
    assert!(
        r.stderr.contains(
            "needs the four values 2-destination-ceph-admin.sh prints after it verified the copy"
        ) && r.stderr.contains("nothing was changed"),
        "{}",
        r.stderr
    );
    assert!(
        !r.stdout.contains("step "),
        "went past its check: {}",
        r.stdout
    );
    let now = info(&a, &pool, &image).unwrap();
    assert_eq!(now["features"], during["features"], "features changed");
    assert_eq!(now["mirroring"], during["mirroring"], "mirroring changed");
    assert_eq!(mirror_snapshots(&a, &pool, &image), snapshots_during);
    if let Some(id) = &replica_during {
        assert_eq!(
            info(&b, &pool, &image).map(|r| r["id"].clone()).as_ref(),
            Some(id),
            "the replica was touched"
        );
    }

    // 2. Ceph destination admin, twice
    let args: Vec<&str> = handoff.iter().map(String::as_str).collect();
    let mut to_tenant = Vec::new();
    for _ in 0..2 {
        let r = script(&out_dir, names[1], &args, &dst_env);
        assert!(r.ok, "destination script failed");
        to_tenant = next_line(&r, names[2]);
    }
    // the verified-copy handoff: digest, the copy's image id, the destination fsid, token
    let copy_id = info(&b, &into, &image).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let plan_id = result["id"].as_str().unwrap();
    assert_eq!(
        to_tenant,
        [
            source_sha.clone(),
            copy_id.clone(),
            env.site_b().fsid.clone(),
            verification_token(plan_id, &source_sha, &copy_id, &env.site_b().fsid)
        ]
    );
    // script 2 grew the copy to a whole GiB for Cinder (6 MiB source): its first 6 MiB
    let copy = format!("{into}/{image}");
    assert_eq!(sha_of_first(&b, &copy, 6 << 20), source_sha);
    assert_eq!(
        info(&b, &into, &image).unwrap()["size"],
        1u64 << 30,
        "grown before the adoption"
    );

    // precondition failures: the cleanup with a wrong token, or with a wrong digest (and a
    // token that matches it), stops at its check, changes nothing (mirroring stays on, the
    // replica stays)
    let wrong = "0".repeat(64);
    let wrong_token = [&to_tenant[0], &to_tenant[1], &to_tenant[2], &wrong];
    let wrong_digest_token = verification_token(plan_id, &wrong, &copy_id, &env.site_b().fsid);
    let wrong_digest = [&wrong, &to_tenant[1], &to_tenant[2], &wrong_digest_token];
    for (args, message) in [
        (wrong_token, "STOPPED: the verification token '0000"),
        (wrong_digest, "STOPPED: the digest given"),
    ] {
        let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let r = script(&out_dir, names[3], &args, &src_env);
        assert!(!r.ok);
        assert!(
            r.stderr.contains(message) && r.stderr.to_lowercase().contains("nothing was changed"),
            "{}",
            r.stderr
        );
        assert!(
            !r.stdout.contains("step 8"),
            "went past its check: {}",
            r.stdout
        );
        assert_eq!(
            info(&a, &pool, &image).unwrap()["mirroring"]["state"],
            "enabled"
        );
        assert!(info(&b, &pool, &image).is_some(), "replica kept");
    }
    // and a malformed one is refused before anything is read
    let r = script(&out_dir, names[1], &["not-a-digest"], &dst_env);
    assert!(
        !r.ok && r.stderr.contains("is not a sha256 digest"),
        "{}",
        r.stderr
    );

    // 3. OpenStack tenant admin, twice
    let mut volume_ids = Vec::new();
    let mut to_cleanup = Vec::new();
    for _ in 0..2 {
        let args: Vec<&str> = to_tenant.iter().map(String::as_str).collect();
        let r = script(&out_dir, names[2], &args, &tenant_env);
        assert!(r.ok, "tenant script failed");
        to_cleanup = next_line(&r, names[3]);
        let id = r
            .stdout
            .lines()
            .filter(|l| l.contains(" is available"))
            .find_map(|l| l.split_whitespace().skip_while(|w| *w != "volume").nth(1))
            .unwrap()
            .to_string();
        volume_ids.push(id);
    }
    assert_eq!(volume_ids[0], volume_ids[1], "the re-run adopted again");
    let vid = volume_ids[0].clone();

    // the destination script re-run after the adoption renamed the copy: no second copy
    let r = script(&out_dir, names[1], &args, &dst_env);
    assert!(r.ok, "destination re-run after the adoption failed");
    assert!(r.stdout.contains("nothing to copy again"), "{}", r.stdout);
    assert!(info(&b, &into, &image).is_none(), "a second copy was made");

    // what an image sync that a disable interrupted can leave on the source (rbd-mirror's
    // journal sync point): the cleanup removes it once mirroring is off
    let mut args = vec!["snap", "create", "--no-progress", "--snap"];
    args.push(
        ".rbd-mirror.0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9.5e7b3c1d-9a8b-4c7d-8e6f-5a4b3c2d1e0f",
    );
    args.extend(image_args(&pool, &image));
    let out = rbd_output(&a, &args);
    assert!(out.status.success(), "{out:?}");

    // 4. Ceph source admin's cleanup, twice
    for _ in 0..2 {
        let r = script(
            &out_dir,
            names[3],
            &to_cleanup.iter().map(String::as_str).collect::<Vec<_>>(),
            &src_env,
        );
        assert!(r.ok, "cleanup failed");
    }

    // the end state of `migrate --adopt`
    let after = info(&a, &pool, &image).unwrap();
    assert_eq!(
        after["features"], before["features"],
        "source features restored"
    );
    assert!(
        after
            .get("mirroring")
            .is_none_or(|m| m["state"] == "disabled"),
        "mirroring off: {after}"
    );
    assert!(mirror_snapshots(&a, &pool, &image).is_empty());
    let left = all_snapshots(&a, &pool, &image);
    assert!(left.is_empty(), "no snapshot left on the source: {left:?}");
    assert!(gone_soon(&b, &pool, &image), "the replica is removed");
    let v = openstack(
        &os.clouds_yaml,
        &os.destination.admin_cloud,
        &["volume", "show", "-f", "json", &vid],
    );
    assert!(v.status.success(), "{v:?}");
    let v: Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(v["status"], "available");
    assert_eq!(v["name"], volume.as_str());
    assert_eq!(
        sha_of_first(&b, &format!("{into}/volume-{vid}"), 6 << 20),
        source_sha
    );
    assert_eq!(v["size"], 1, "Cinder records 1 GiB, the image's size");
    assert!(info(&b, &into, &image).is_none(), "Cinder renamed the copy");
    assert!(
        !out_dir.join("pwned").exists(),
        "a name was executed by a script"
    );

    // leave nothing behind
    let d = openstack(
        &os.clouds_yaml,
        &os.destination.admin_cloud,
        &["volume", "delete", &vid],
    );
    assert!(d.status.success(), "{d:?}");
    let mut rm = vec!["rm", "--no-progress"];
    rm.extend(image_args(&pool, &image));
    assert!(rbd_output(&a, &rm).status.success());
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A bootable volume of the source cloud: an RBD image with data, managed by the source
/// Cinder.
fn source_volume(os: &testenv::openstack::OpenStackInfo, a: &str, name: &str) -> String {
    use cinder_manage::{AdoptRequest, Cinder, HostTarget, Side};
    use openstack_client::{ClientOptions, CloudConfig, ConfigSources, OpenStackClient};
    image_with_data(a, &os.source.volume_pool, name, (3 << 20) + 77);
    rt().block_on(async {
        let sources = ConfigSources {
            clouds_files: vec![os.clouds_yaml.clone()],
            ..Default::default()
        };
        let cfg = CloudConfig::from_sources(&sources, Some(&os.source.admin_cloud)).unwrap();
        let client = OpenStackClient::connect(cfg, ClientOptions::default())
            .await
            .unwrap();
        Cinder::new(client, Side::Source)
            .adopt(&AdoptRequest {
                target: HostTarget::CephPool {
                    pool: os.source.volume_pool.clone(),
                    fsid: None,
                },
                rbd_image: name.to_string(),
                name: Some(format!("src-{name}")),
                description: None,
                volume_type: None,
                availability_zone: None,
                bootable: true,
                metadata: Default::default(),
            })
            .await
            .unwrap()
            .volume
            .id
    })
}

/// Long on purpose (see the file's header): one scenario, its steps in the runbook's order.
#[test]
fn bootable_bundle_registers_an_active_image_by_split_roles() {
    let env = testenv::shared_with_openstack().expect("test environment with OpenStack");
    let _logs = env.log_guard();
    let users = env.role_users().expect("per-role cephx users");
    let os = env.openstack().expect("OpenStack clouds").clone();
    let (a, b) = (env.site_a().name.clone(), env.site_b().name.clone());
    let name = testenv::unique_name("bdl-boot");
    let volume_id = source_volume(&os, &a, &name);
    let image_name = format!("img '{name}' $(touch pwned) `id`; *");
    let state = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("bundle");
    let bundle = |out: &Path| {
        Command::new(BIN)
            .args(["bundle", "bootable", "--from", &a, "--to", &b])
            .args(["--source-cloud", &os.source.admin_cloud])
            .args(["--os-cloud", &os.destination.admin_cloud, &volume_id])
            .args(["--into", &os.destination.image_pool])
            .args(["--source-pool", &os.source.image_pool])
            .args(["--name", &image_name, "--out"])
            .arg(out)
            .arg("--state-dir")
            .arg(state.path())
            .env("OS_CLIENT_CONFIG_FILE", &os.clouds_yaml)
            .env_remove("OS_CLOUD")
            .output()
            .unwrap()
    };

    // before the upload: refused, naming the source tenant admin's upload command
    let early = bundle(&out_dir);
    assert!(!early.status.success());
    let err = String::from_utf8_lossy(&early.stderr);
    assert!(err.contains("image create --volume"), "{err}");
    assert!(!out_dir.exists(), "nothing written");

    // the prerequisite, as the README and the message say
    let up = openstack(
        &os.clouds_yaml,
        &os.source.admin_cloud,
        &[
            "image",
            "create",
            "--volume",
            &volume_id,
            "--disk-format",
            "raw",
            "--container-format",
            "bare",
            &image_name,
        ],
    );
    assert!(up.status.success(), "{up:?}");
    let deadline = Instant::now() + Duration::from_secs(300);
    let source_image_id = loop {
        let l = openstack(
            &os.clouds_yaml,
            &os.source.admin_cloud,
            &["image", "list", "--name", &image_name, "-f", "json"],
        );
        let v: Value = serde_json::from_slice(&l.stdout).unwrap_or(Value::Null);
        if let Some(i) = v
            .as_array()
            .and_then(|a| a.first())
            .filter(|i| i["Status"] == "active")
        {
            break i["ID"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "upload not active: {v}");
        std::thread::sleep(Duration::from_secs(2));
    };
    let (src_pool, dst_pool) = (
        os.source.image_pool.clone(),
        os.destination.image_pool.clone(),
    );
    let before = info(&a, &src_pool, &source_image_id).unwrap();
    let source_sha = sha(&a, &src_pool, &source_image_id);

    let out = bundle(&out_dir);
    assert!(out.status.success(), "{out:?}");
    for n in [
        "1-source-ceph-admin.sh",
        "2-destination-ceph-admin.sh",
        "3-tenant-admin.sh",
        "4-source-ceph-admin-cleanup.sh",
    ] {
        shellcheck(&out_dir.join(n));
    }
    let src_env = [("SRC_ID", users.source_admin.id.as_str())];
    let dst_env = [("DST_ID", users.destination_admin.id.as_str())];
    let clouds = os.clouds_yaml.display().to_string();
    let tenant_env = [
        ("OS_CLOUD", os.destination.admin_cloud.as_str()),
        ("OS_CLIENT_CONFIG_FILE", clouds.as_str()),
    ];
    let mut to_dst = Vec::new();
    for _ in 0..2 {
        let r = script(&out_dir, "1-source-ceph-admin.sh", &[], &src_env);
        assert!(r.ok, "source script failed");
        to_dst = next_line(&r, "2-destination-ceph-admin.sh");
    }
    assert_eq!(to_dst[0], source_sha);
    let mut to_tenant = Vec::new();
    for _ in 0..2 {
        let args: Vec<&str> = to_dst.iter().map(String::as_str).collect();
        let r = script(&out_dir, "2-destination-ceph-admin.sh", &args, &dst_env);
        assert!(r.ok, "destination script failed");
        to_tenant = next_line(&r, "3-tenant-admin.sh");
    }
    assert_eq!(to_tenant[0], source_sha);
    assert_eq!(
        to_tenant[2],
        env.site_b().fsid,
        "the destination fsid is handed over"
    );
    assert_eq!(to_tenant.len(), 4, "{to_tenant:?}");
    let mut image_id = String::new();
    let mut to_cleanup = Vec::new();
    for _ in 0..2 {
        let args: Vec<&str> = to_tenant.iter().map(String::as_str).collect();
        let r = script(&out_dir, "3-tenant-admin.sh", &args, &tenant_env);
        assert!(r.ok, "tenant script failed");
        to_cleanup = next_line(&r, "4-source-ceph-admin-cleanup.sh");
        let id = r
            .stdout
            .lines()
            .filter(|l| l.contains(" is active"))
            .find_map(|l| l.split_whitespace().skip_while(|w| *w != "image").nth(1))
            .unwrap()
            .to_string();
        assert!(image_id.is_empty() || image_id == id, "registered twice");
        image_id = id;
    }
    for _ in 0..2 {
        let args: Vec<&str> = to_cleanup.iter().map(String::as_str).collect();
        let r = script(&out_dir, "4-source-ceph-admin-cleanup.sh", &args, &src_env);
        assert!(r.ok, "cleanup failed");
    }

    // the end state of `migrate bootable`
    let img = openstack(
        &os.clouds_yaml,
        &os.destination.admin_cloud,
        &["image", "show", "-f", "json", &image_id],
    );
    assert!(img.status.success(), "{img:?}");
    let img: Value = serde_json::from_slice(&img.stdout).unwrap();
    assert_eq!(img["status"], "active");
    assert_eq!(img["name"], image_name.as_str());
    assert!(img["min_disk"].as_u64().unwrap() >= 1, "{img}");
    assert_eq!(sha(&b, &dst_pool, &source_image_id), source_sha);
    let snaps = {
        let mut args = vec!["snap", "ls", "--format", "json"];
        args.extend(image_args(&dst_pool, &source_image_id));
        let o = rbd_output(&b, &args);
        serde_json::from_slice::<Value>(&o.stdout).unwrap()
    };
    assert!(
        snaps
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "snap" && s["protected"] == "true"),
        "{snaps}"
    );
    let after = info(&a, &src_pool, &source_image_id).unwrap();
    assert_eq!(after["features"], before["features"]);
    assert!(after
        .get("mirroring")
        .is_none_or(|m| m["state"] == "disabled"));
    assert!(
        gone_soon(&b, &src_pool, &source_image_id),
        "replica removed"
    );
    assert!(!out_dir.join("pwned").exists());

    // leave nothing behind: the registered image (Glance removes its RBD copy and snapshot),
    // the uploaded source image and the source volume
    for (cloud, what, id) in [
        (&os.destination.admin_cloud, "image", &image_id),
        (&os.source.admin_cloud, "image", &source_image_id),
        (&os.source.admin_cloud, "volume", &volume_id),
    ] {
        let d = openstack(&os.clouds_yaml, cloud, &[what, "delete", id]);
        assert!(d.status.success(), "{d:?}");
    }
    // Glance leaves the RBD image of a location it did not create: remove the copy
    let snap = format!("{dst_pool}/{source_image_id}@snap");
    assert!(rbd_output(&b, &["snap", "unprotect", &snap])
        .status
        .success());
    let copy = format!("{dst_pool}/{source_image_id}");
    assert!(rbd_output(&b, &["snap", "purge", "--no-progress", &copy])
        .status
        .success());
    assert!(rbd_output(&b, &["rm", "--no-progress", &copy])
        .status
        .success());
}

/// The source script checks the image against the facts the plan recorded and stops at the
/// first failed check, before it changes anything: here the image lost a feature after the
/// bundle was made.
#[test]
fn source_script_stops_when_the_image_changed_since_the_plan() {
    let env = testenv::shared().expect("test environment");
    let _logs = env.log_guard();
    let users = env.role_users().expect("per-role cephx users");
    let (a, b) = (env.site_a().name.clone(), env.site_b().name.clone());
    let pool = env.pools().volumes;
    let image = testenv::unique_name("bdl-changed");
    image_with_data(&a, pool, &image, 1 << 20);
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("bundle");
    let state = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "bundle",
            "volume",
            "--handover",
            "copy",
            "--from",
            &a,
            "--to",
            &b,
        ])
        .arg(format!("{pool}/{image}"))
        .args(["--into", env.pools().cinder, "--out"])
        .arg(&out_dir)
        .arg("--state-dir")
        .arg(state.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("1-source-ceph-admin.sh"), "{text}");
    assert!(
        !out_dir.join("3-tenant-admin.sh").exists(),
        "no adoption asked"
    );
    for n in [
        "1-source-ceph-admin.sh",
        "2-destination-ceph-admin.sh",
        "4-source-ceph-admin-cleanup.sh",
    ] {
        shellcheck(&out_dir.join(n));
    }

    let mut args = vec!["feature", "disable"];
    args.extend(image_args(pool, &image));
    args.push("fast-diff");
    assert!(rbd_output(&a, &args).status.success());
    let changed = info(&a, pool, &image).unwrap();

    let r = script(
        &out_dir,
        "1-source-ceph-admin.sh",
        &[],
        &[("SRC_ID", users.source_admin.id.as_str())],
    );
    assert!(!r.ok);
    assert!(
        r.stderr.contains("STOPPED") && r.stderr.contains("changed since the plan"),
        "{}",
        r.stderr
    );
    assert!(
        !r.stdout.contains("step 2"),
        "went past its checks: {}",
        r.stdout
    );
    let now = info(&a, pool, &image).unwrap();
    assert_eq!(now["features"], changed["features"], "nothing changed");
    assert!(now
        .get("mirroring")
        .is_none_or(|m| m["state"] == "disabled"));

    let mut rm = vec!["rm", "--no-progress"];
    rm.extend(image_args(pool, &image));
    assert!(rbd_output(&a, &rm).status.success());
}

/// A bundle written into a directory whose path is not UTF-8, with a state directory that is
/// not UTF-8 either: written (the README shows the command line with U+FFFD for the invalid
/// bytes) instead of a panic on reading the command line.
#[test]
fn a_bundle_into_a_non_utf8_directory_is_written() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let env = testenv::shared().expect("test environment");
    let (a, b) = (env.site_a().name.clone(), env.site_b().name.clone());
    let pool = env.pools().volumes;
    let image = testenv::unique_name("bdl-utf8");
    image_with_data(&a, pool, &image, 1 << 20);
    let dir = tempfile::tempdir().unwrap();
    let join = |tail: &[u8]| {
        let mut raw = dir.path().as_os_str().as_bytes().to_vec();
        raw.extend_from_slice(tail);
        PathBuf::from(OsStr::from_bytes(&raw))
    };
    let (out_dir, state) = (join(b"/bundle-\xff"), join(b"/state-\xfe"));
    let out = Command::new(BIN)
        .args([
            "bundle",
            "volume",
            "--handover",
            "copy",
            "--from",
            &a,
            "--to",
            &b,
        ])
        .arg(format!("{pool}/{image}"))
        .args(["--into", env.pools().cinder, "--out"])
        .arg(&out_dir)
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let readme = std::fs::read_to_string(out_dir.join("README.md")).unwrap();
    assert!(readme.contains("bundle-\u{FFFD}"), "{readme}");
    shellcheck(&out_dir.join("1-source-ceph-admin.sh"));
    let mut rm = vec!["rm", "--no-progress"];
    rm.extend(image_args(pool, &image));
    assert!(rbd_output(&a, &rm).status.success());
}

/// Every kind of plan renders shellcheck-clean scripts that parse: already mirrored images
/// (nothing to clean up), the old runbook's feature dance (deep-flatten lost), a namespace,
/// pool mirroring to enable, both modes, an explicit Cinder host, the bootable path.
#[test]
fn every_plan_variant_renders_shellcheck_clean_scripts() {
    use rbd_mirror_bundle::render;
    use rbd_mirror_core::cloud::AdoptTarget;
    use rbd_mirror_core::features::{Features, MirrorImageMode};
    use rbd_mirror_core::ops::PoolMirrorMode;
    use rbd_mirror_core::plan::{Adoption, Plan, Registration, SourceFacts, VolumeMigration};
    use rbd_mirror_core::spec::{ClusterSpec, PoolSpec};

    let facts = |features: Features, mirrored: bool, pool_mode: PoolMirrorMode| SourceFacts {
        features,
        size: 10 << 20,
        object_size: 4 << 20,
        image_id: "abc".into(),
        snapshots: vec!["s1".into()],
        mirror_snapshots_before: if mirrored { vec![3, 5] } else { vec![] },
        source_pool_mode: pool_mode,
        destination_pool_mode: pool_mode,
        mirroring_was_enabled: mirrored,
        watchers: vec![],
        journal_payload_before: None,
    };
    let base = |image: &str, mode: MirrorImageMode| {
        let mut m = VolumeMigration::new(
            ClusterSpec::named("site-a").unwrap(),
            ClusterSpec::named("site-b")
                .unwrap()
                .client("relay-dst")
                .unwrap(),
            image.parse().unwrap(),
            PoolSpec::new("cinder").unwrap(),
        );
        m.mode = mode;
        m
    };
    let all = Features::LAYERING
        | Features::EXCLUSIVE_LOCK
        | Features::OBJECT_MAP
        | Features::FAST_DIFF
        | Features::DEEP_FLATTEN;
    let mut plans = Vec::new();
    for mode in [MirrorImageMode::Journal, MirrorImageMode::Snapshot] {
        // already mirrored: no cleanup steps
        plans.push(Plan::volume(
            base("volumes/a", mode),
            facts(all | Features::JOURNALING, true, PoolMirrorMode::Image),
        ));
        // the runbook's dance, a namespace, pools to enable, an explicit host
        let mut m = base("volumes/ns1/b", mode);
        m.disable_map_features = true;
        m.enable_pool_mirroring = true;
        m.adopt = Some(Adoption {
            cloud: "site-b-admin".into(),
            target: AdoptTarget::Host {
                host: "site-b@ceph#ceph".into(),
            },
            name: None,
            bootable: true,
            image_metadata: Default::default(),
            no_grow: false,
        });
        plans.push(Plan::volume(m, facts(all, false, PoolMirrorMode::Disabled)));
        // bootable
        let mut m = base("images/0d3e5c1a-1111-2222-3333-444455556666", mode);
        m.into = PoolSpec::new("glance").unwrap();
        m.register = Some(Registration {
            cloud: "site-b-admin".into(),
            name: "x".into(),
            snapshot: "snap".into(),
            min_disk_gib: 2,
        });
        plans.push(Plan::volume(
            m,
            facts(Features::LAYERING, false, PoolMirrorMode::Image),
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    for (i, plan) in plans.iter().enumerate() {
        let b = render(plan, "test").unwrap();
        for f in b.files.iter().filter(|f| f.executable) {
            let path = dir.path().join(format!("{i}-{}", f.name));
            std::fs::write(&path, &f.contents).unwrap();
            shellcheck(&path);
            let n = Command::new("sh").arg("-n").arg(&path).output().unwrap();
            assert!(n.status.success(), "{}: {n:?}", path.display());
        }
    }
}

/// The plan's `rbd-relay bundle volume ... --out DIR` (with `extra` arguments; `clouds`: the
/// clouds.yaml that `--source-cloud` reads), as JSON; the file names it wrote.
fn generate_clone_bundle(
    [a, b]: [&str; 2],
    image: &str,
    into: &str,
    out_dir: &Path,
    state: &Path,
    extra: &[&str],
    clouds: Option<&Path>,
) -> (Value, Vec<String>) {
    let mut c = Command::new(BIN);
    if let Some(clouds) = clouds {
        // `--source-cloud` reads the source cloud's clouds.yaml entry
        c.env("OS_CLIENT_CONFIG_FILE", clouds);
    }
    let out = c
        .args(["bundle", "volume", "--from", a, "--to", b, image])
        .args(["--into", into])
        .args(extra)
        .arg("--out")
        .arg(out_dir)
        .args(["--output", "json", "--state-dir"])
        .arg(state)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // the result is the last line (a preflight warning, e.g. of an image in use, comes first)
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let names = result["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect();
    (result, names)
}

/// Runs `name` twice with `args` (the second run is a re-run: it must detect that its work is
/// done and hand over the same line), returns the arguments of the `sh ./next` line it printed
/// (`next` None: the last script, which prints none).
fn twice(
    dir: &Path,
    name: &str,
    args: &[String],
    env: &[(&str, &str)],
    next: Option<&str>,
) -> Vec<String> {
    let mut lines = Vec::new();
    for _ in 0..2 {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = script(dir, name, &a, env);
        assert!(r.ok, "{name} failed");
        lines.push(next.map(|n| next_line_or_bare(&r, n)).unwrap_or_default());
    }
    assert_eq!(
        lines[0], lines[1],
        "{name}: a re-run handed over another line"
    );
    lines.pop().unwrap()
}

/// Like [`next_line`], also for a line without arguments (`sh ./NEXT`).
fn next_line_or_bare(r: &Run, next: &str) -> Vec<String> {
    let bare = format!("sh ./{next}");
    let line = r
        .stdout
        .lines()
        .map(str::trim)
        .find(|l| *l == bare || l.starts_with(&format!("{bare} ")))
        .unwrap_or_else(|| panic!("no '{bare}' line in:\n{}", r.stdout));
    line.split_whitespace().skip(2).map(String::from).collect()
}

/// The end state of a verified handover by clone: the destination image `(into, name)` on
/// `b` holds the source's content and hangs from nothing, the source `(pool, image)` on `a`
/// has its features back (`before`), mirroring off and no mirror snapshot, the replica (and
/// its handover snapshot with it) is gone.
fn assert_clone_end_state(
    [a, b]: [&str; 2],
    (pool, image): (&str, &str),
    (into, name): (&str, &str),
    before: &Value,
    source_sha: &str,
) {
    let copy = info(b, into, name).unwrap();
    assert!(
        copy.get("parent").is_none(),
        "a clone parent is left: {copy}"
    );
    // an adopted copy that was not a whole GiB is grown to the next one (grow_copy): its
    // first (source size) bytes are the source's, and its size is the source's or that GiB
    let size = before["size"].as_u64().unwrap();
    let copy_size = copy["size"].as_u64().unwrap();
    assert!(
        copy_size == size || copy_size == size.div_ceil(1 << 30) * (1 << 30),
        "the destination's size {copy_size} for a source of {size}"
    );
    assert_eq!(
        testenv::probe::sha_of_first(b, &format!("{into}/{name}"), size),
        source_sha,
        "the destination's content"
    );
    let after = info(a, pool, image).unwrap();
    assert_eq!(
        after["features"], before["features"],
        "source features restored"
    );
    assert!(
        after
            .get("mirroring")
            .is_none_or(|m| m["state"] == "disabled"),
        "source mirroring off: {after}"
    );
    assert!(mirror_snapshots(a, pool, image).is_empty());
    assert_eq!(
        sha(a, pool, image),
        source_sha,
        "the source's data untouched"
    );
    // writable again: a write is accepted
    let mut args = vec![
        "bench",
        "--io-type",
        "write",
        "--io-size",
        "4096",
        "--io-total",
        "4096",
    ];
    args.extend(image_args(pool, image));
    assert!(
        rbd_output(a, &args).status.success(),
        "the released source is writable"
    );
    assert!(info(b, pool, image).is_none(), "the replica is removed");
}

/// The handover by clone, cold, journal mode, run by the roles (each with its own cephx
/// user or cloud, each script twice): the source is demoted, the replica promoted and cloned,
/// the clone adopted, then verified, flattened, the source released and the replica removed.
/// The cutover given the source script's output (nothing: no replica in sync proven yet) is
/// refused and changes nothing.
#[test]
fn clone_bundle_run_by_split_roles_ends_like_migrate() {
    clone_bundle("journal");
}

/// The same in snapshot mode: the source script hands over the id of its primary mirror
/// snapshot, and the cold cutover, run by the source admin's `profile rbd` user (which cannot
/// read the monitors' sessions), tells the destination rbd-mirror's watch on the primary apart
/// from an instance's by its watch on the pool's rbd_mirroring object. The source is a
/// bootable Cinder volume of the source cloud with image metadata, given by its id
/// (`--source-cloud`): the tenant script adopts it bootable with that image metadata.
#[test]
fn snapshot_mode_clone_bundle_run_by_split_roles_ends_like_migrate() {
    clone_bundle("snapshot");
}

/// Long on purpose (see the file's header): one scenario, its steps in the runbook's order.
fn clone_bundle(mode: &str) {
    let env = testenv::shared_with_openstack().expect("test environment with OpenStack");
    let _logs = env.log_guard();
    let users = env.role_users().expect("per-role cephx users");
    let os = env.openstack().expect("OpenStack clouds").clone();
    let (a, b) = (env.site_a().name.clone(), env.site_b().name.clone());
    let (pool, into) = (
        os.source.volume_pool.clone(),
        os.destination.volume_pool.clone(),
    );
    let name = testenv::unique_name(&format!("bdl-clone-{}", &mode[..4]));
    let volume = format!("vol '{name}' $(touch pwned)");
    let from_cloud = mode == "snapshot";
    let image_metadata: serde_json::Map<String, Value> = [
        ("hw_disk_bus", "scsi"),
        ("os_type", "linux"),
        ("image_name", "debian 'test' $(touch pwned)"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Value::from(v)))
    .collect();
    // the source: an RBD image, or (snapshot mode) a bootable source volume with image
    // metadata, given by its Cinder id
    let (image, source_volume_id) = if from_cloud {
        let id = source_volume(&os, &a, &name);
        let mut set = vec!["volume".to_string(), "set".to_string()];
        for (k, v) in &image_metadata {
            set.push("--image-property".into());
            set.push(format!("{k}={}", v.as_str().unwrap()));
        }
        set.push(id.clone());
        let set: Vec<&str> = set.iter().map(String::as_str).collect();
        let o = openstack(&os.clouds_yaml, &os.source.admin_cloud, &set);
        assert!(o.status.success(), "{o:?}");
        (format!("volume-{id}"), Some(id))
    } else {
        image_with_data(&a, &pool, &name, 6 << 20);
        (name.clone(), None)
    };
    // journal mode: the source has a protected snapshot of its own (a name with a comma and
    // a quote), which rbd-mirror replicates: the replica's removal takes its copy with it,
    // and the source keeps it
    let user_snap = "kept, \"user\" snap";
    if !from_cloud {
        let snap = format!("{pool}/{image}@{user_snap}");
        assert!(rbd_output(&a, &["snap", "create", &snap]).status.success());
        assert!(rbd_output(&a, &["snap", "protect", &snap]).status.success());
    }
    let before = info(&a, &pool, &image).unwrap();
    let size = before["size"].as_u64().unwrap();
    let source_sha = sha(&a, &pool, &image);
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("bundle");
    let state = tempfile::tempdir().unwrap();
    let mut extra = vec![
        "--adopt",
        "--os-cloud",
        &os.destination.admin_cloud,
        "--name",
        &volume,
        "--mode",
        mode,
    ];
    if from_cloud {
        extra.extend(["--source-cloud", &os.source.admin_cloud]);
    }
    let spec = format!("{pool}/{image}");
    let (result, names) = generate_clone_bundle(
        [&a, &b],
        source_volume_id.as_deref().unwrap_or(&spec),
        &into,
        &out_dir,
        state.path(),
        &extra,
        Some(&os.clouds_yaml),
    );
    assert_eq!(
        names,
        [
            "1-source-ceph-admin.sh",
            "2-destination-ceph-admin.sh",
            "3-source-ceph-admin-cutover.sh",
            "4-destination-ceph-admin-handover.sh",
            "5-tenant-admin.sh",
            "6-destination-ceph-admin-verify.sh",
            "7-source-ceph-admin-release.sh",
            "8-destination-ceph-admin-remove-replica.sh",
            "rollback-1-destination-ceph-admin.sh",
            "rollback-2-source-ceph-admin.sh",
            "README.md"
        ],
        "{result}"
    );
    for n in &names[..10] {
        shellcheck(&out_dir.join(n));
    }
    let src_env = [("SRC_ID", users.source_admin.id.as_str())];
    let dst_env = [("DST_ID", users.destination_admin.id.as_str())];
    let clouds = os.clouds_yaml.display().to_string();
    let tenant_env = [
        ("OS_CLOUD", os.destination.admin_cloud.as_str()),
        ("OS_CLIENT_CONFIG_FILE", clouds.as_str()),
    ];

    let to_dst = twice(&out_dir, &names[0], &[], &src_env, Some(&names[1]));
    if mode == "journal" {
        assert!(
            to_dst.is_empty(),
            "journal mode hands over no value: {to_dst:?}"
        );
    } else {
        let ids: Vec<u64> = mirror_snapshots(&a, &pool, &image)
            .iter()
            .map(|s| s["id"].as_u64().unwrap())
            .collect();
        assert!(
            to_dst.len() == 1 && ids.contains(&to_dst[0].parse().unwrap()),
            "snapshot mode hands over a primary mirror snapshot of the source ({ids:?}): {to_dst:?}"
        );
    }
    // the cutover right after the source script: refused, nothing changed
    let r = script(&out_dir, &names[2], &[], &src_env);
    assert!(
        !r.ok
            && r.stderr
                .contains("needs the three values 2-destination-ceph-admin.sh prints"),
        "{}",
        r.stderr
    );
    assert_eq!(
        info(&a, &pool, &image).unwrap()["mirroring"]["primary"],
        true
    );

    let to_cutover = twice(&out_dir, &names[1], &to_dst, &dst_env, Some(&names[2]));
    assert_eq!(to_cutover.len(), 3, "{to_cutover:?}");
    assert_eq!(
        to_cutover[0],
        info(&b, &pool, &image).unwrap()["id"].as_str().unwrap()
    );
    assert_eq!(to_cutover[1], env.site_b().fsid);
    // the handover given the sync line (the source is not demoted yet): refused
    let early: Vec<&str> = to_cutover.iter().map(String::as_str).collect();
    let r = script(&out_dir, &names[3], &early, &dst_env);
    assert!(!r.ok && r.stderr.contains("does not match"), "{}", r.stderr);
    assert_eq!(
        info(&b, &pool, &image).unwrap()["mirroring"]["primary"],
        false
    );

    let to_handover = twice(&out_dir, &names[2], &to_cutover, &src_env, Some(&names[3]));
    assert_eq!(
        info(&a, &pool, &image).unwrap()["mirroring"]["primary"],
        false,
        "demoted"
    );
    assert_eq!(
        info(&a, &pool, &image).unwrap()["mirroring"]["mode"],
        mode,
        "mirrored in the plan's mode"
    );
    let to_tenant = twice(&out_dir, &names[3], &to_handover, &dst_env, Some(&names[4]));
    let clone = info(&b, &into, &image).unwrap();
    assert_eq!(to_tenant[0], clone["id"].as_str().unwrap());
    assert_eq!(
        clone["parent"]["image"],
        image.as_str(),
        "a clone of the replica: {clone}"
    );
    assert_eq!(
        testenv::probe::sha_of_first(&b, &format!("{into}/{image}"), size),
        source_sha,
        "usable with the source's content (grown to 1 GiB for Cinder: the first bytes)"
    );
    let to_verify = twice(
        &out_dir,
        &names[4],
        &to_tenant,
        &tenant_env,
        Some(&names[5]),
    );
    let vid = {
        let l = openstack(
            &os.clouds_yaml,
            &os.destination.admin_cloud,
            &[
                "volume",
                "list",
                "--all-projects",
                "--name",
                &volume,
                "-f",
                "json",
            ],
        );
        let v: Value = serde_json::from_slice(&l.stdout).unwrap();
        let v = v.as_array().unwrap();
        assert_eq!(v.len(), 1, "adopted once: {v:?}");
        v[0]["ID"].as_str().unwrap().to_string()
    };
    let to_release = twice(&out_dir, &names[5], &to_verify, &dst_env, Some(&names[6]));
    assert_eq!(
        to_release[0], source_sha,
        "the verified digest is the source's"
    );
    let to_remove = twice(&out_dir, &names[6], &to_release, &src_env, Some(&names[7]));
    twice(&out_dir, &names[7], &to_remove, &dst_env, None);

    assert_clone_end_state(
        [&a, &b],
        (&pool, &image),
        (&into, &format!("volume-{vid}")),
        &before,
        &source_sha,
    );
    let v = openstack(
        &os.clouds_yaml,
        &os.destination.admin_cloud,
        &["volume", "show", "-f", "json", &vid],
    );
    let v: Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(v["status"], "available");
    assert_eq!(v["name"], volume.as_str());
    if from_cloud {
        assert_eq!(v["bootable"], "true", "adopted bootable: {v}");
        assert_eq!(
            v["volume_image_metadata"],
            Value::Object(image_metadata),
            "with the source volume's image metadata: {v}"
        );
    } else {
        assert!(
            v["volume_image_metadata"]
                .as_object()
                .is_none_or(|m| m.is_empty()),
            "{v}"
        );
    }
    assert!(
        !out_dir.join("pwned").exists(),
        "a name was executed by a script"
    );

    let d = openstack(
        &os.clouds_yaml,
        &os.destination.admin_cloud,
        &["volume", "delete", &vid],
    );
    assert!(d.status.success(), "{d:?}");
    if let Some(id) = &source_volume_id {
        let d = openstack(
            &os.clouds_yaml,
            &os.source.admin_cloud,
            &["volume", "delete", id],
        );
        assert!(d.status.success(), "{d:?}");
    } else {
        let snap = format!("{pool}/{image}@{user_snap}");
        let o = rbd_output(
            &a,
            &["snap", "ls", "--format", "json", &format!("{pool}/{image}")],
        );
        let snaps: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(
            snaps
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["name"] == user_snap && s["protected"] == "true"),
            "the source keeps its protected snapshot: {snaps}"
        );
        assert!(rbd_output(&a, &["snap", "unprotect", &snap])
            .status
            .success());
        assert!(rbd_output(&a, &["snap", "rm", "--no-progress", &snap])
            .status
            .success());
        let mut rm = vec!["rm", "--no-progress"];
        rm.extend(image_args(&pool, &image));
        assert!(rbd_output(&a, &rm).status.success());
    }
}

/// The live handover by clone: while a watcher (`rbd watch`, as an attached instance) holds
/// the source, the cutover script waits and gives up without changing anything; data written
/// meanwhile is replicated; run again, it cuts over once the watcher is gone for the idle
/// time, and the migration ends with the final content on the destination.
#[test]
fn live_clone_bundle_cuts_over_only_once_the_watcher_is_gone() {
    let env = testenv::shared().expect("test environment");
    let _logs = env.log_guard();
    let users = env.role_users().expect("per-role cephx users");
    let (a, b) = (env.site_a().name.clone(), env.site_b().name.clone());
    let (pool, into) = (
        env.pools().volumes.to_string(),
        env.pools().cinder.to_string(),
    );
    let image = testenv::unique_name("bdl-live");
    image_with_data(&a, &pool, &image, 4 << 20);
    let before = info(&a, &pool, &image).unwrap();
    let spec = format!("{pool}/{image}");
    // the instance: a watch on the source for as long as it runs
    // (`rbd watch` unwatches and ends when its stdin is closed, as a stopping instance
    // closes its image; a killed one would stay listed until the OSD's watch timeout, 30 s)
    let mut watcher = Command::new("rbd")
        .args(["--cluster", &a, "watch", &spec])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let watched = |want: bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let o = rbd_output(&a, &["status", "--format", "json", &spec]);
            let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
            let n = v["watchers"].as_array().map_or(0, Vec::len);
            if (n > 0) == want {
                return;
            }
            assert!(Instant::now() < deadline, "watchers: {v}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    watched(true);
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("bundle");
    let state = tempfile::tempdir().unwrap();
    let (_, names) = generate_clone_bundle(
        [&a, &b],
        &spec,
        &into,
        &out_dir,
        state.path(),
        &["--live", "--idle-for", "2"],
        None,
    );
    assert_eq!(names[2], "3-source-ceph-admin-cutover.sh");
    assert!(
        !names.contains(&"5-tenant-admin.sh".to_string()),
        "no adoption asked"
    );
    for n in names.iter().filter(|n| n.ends_with(".sh")) {
        shellcheck(&out_dir.join(n));
    }
    let src_env = [("SRC_ID", users.source_admin.id.as_str())];
    let dst_env = [("DST_ID", users.destination_admin.id.as_str())];
    let to_dst = twice(&out_dir, &names[0], &[], &src_env, Some(&names[1]));
    let to_cutover = twice(&out_dir, &names[1], &to_dst, &dst_env, Some(&names[2]));
    let args: Vec<&str> = to_cutover.iter().map(String::as_str).collect();

    // in use: the cutover waits, says so, and gives up after RBD_RELAY_WAIT_TIMEOUT
    let mut short = src_env.to_vec();
    short.push(("RBD_RELAY_WAIT_TIMEOUT", "8"));
    let r = script(&out_dir, &names[2], &args, &short);
    assert!(!r.ok, "cut over while in use");
    assert!(
        r.stdout.contains("waiting for the cutover") && r.stdout.contains("in use by client."),
        "{}",
        r.stdout
    );
    assert!(
        r.stderr.contains("is still in use by client.") && r.stderr.contains("Nothing was changed"),
        "{}",
        r.stderr
    );
    assert_eq!(
        info(&a, &pool, &image).unwrap()["mirroring"]["primary"],
        true,
        "not demoted"
    );
    // the instance keeps writing; rbd-mirror replicates it
    let mut args_w = vec![
        "bench",
        "--io-type",
        "write",
        "--io-size",
        "64K",
        "--io-total",
        "1M",
        "--io-pattern",
        "rand",
    ];
    args_w.extend(image_args(&pool, &image));
    assert!(rbd_output(&a, &args_w).status.success());
    let final_sha = sha(&a, &pool, &image);

    // the instance stops while the cutover script waits: it cuts over after the idle time.
    // One of its watcher reads fails as a busy monitor makes it fail ("couldn't connect to
    // the cluster"): an `rbd` first on its PATH fails the third `rbd ... status` and runs the
    // real one otherwise. The wait says so and goes on; a failed read never counts as idle.
    let rbd_path = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v rbd"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let flaky = dir.path().join("flaky-bin");
    std::fs::create_dir_all(&flaky).unwrap();
    let wrapper = flaky.join("rbd");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ncase \" $* \" in\n*' journal status '* | *' mirror '*) ;;\n*' status '*)\n    n=$(cat '{count}' 2>/dev/null || echo 0); n=$((n + 1)); echo \"$n\" > '{count}'\n    if [ \"$n\" = 3 ]; then echo \"rbd: couldn't connect to the cluster! (injected by the test)\" >&2; exit 1; fi ;;\nesac\nexec '{real}' \"$@\"\n",
            count = flaky.join("count").display(),
            real = rbd_path.trim()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
    )
    .unwrap();
    let mut c = Command::new("timeout");
    c.args(["300", "sh", &format!("./{}", names[2])])
        .args(&args)
        .current_dir(&out_dir)
        .env_clear()
        .env(
            "PATH",
            format!("{}:{}", flaky.display(), std::env::var("PATH").unwrap()),
        )
        .env(
            "HOME",
            std::env::var("HOME").unwrap_or_else(|_| "/root".into()),
        )
        .env("RBD_RELAY_POLL_INTERVAL", "2")
        .env("RBD_RELAY_WAIT_TIMEOUT", "300")
        .env("SRC_ID", &users.source_admin.id)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let cutover = c.spawn().unwrap();
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        info(&a, &pool, &image).unwrap()["mirroring"]["primary"],
        true,
        "demoted while the watcher holds the source"
    );
    watched(true);
    let stopped_at = Instant::now();
    drop(watcher.stdin.take());
    let _ = watcher.wait();
    watched(false);
    let out = cutover.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!(
        "--- cutover after the watcher went: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success());
    assert!(stdout.contains("cutting over"), "{stdout}");
    assert!(
        stdout.contains("warning: cannot read the watchers of") && stdout.contains("trying again"),
        "the injected failed read was not reported: {stdout}"
    );
    assert!(
        stopped_at.elapsed() >= Duration::from_secs(2),
        "the idle time was not waited for"
    );
    let r = Run {
        ok: true,
        stdout,
        stderr: String::new(),
    };
    let to_handover = next_line_or_bare(&r, &names[3]);
    assert_eq!(
        info(&a, &pool, &image).unwrap()["mirroring"]["primary"],
        false,
        "demoted"
    );

    let to_verify = twice(&out_dir, &names[3], &to_handover, &dst_env, Some(&names[4]));
    assert_eq!(
        sha(&b, &into, &image),
        final_sha,
        "the writes before the cutover are in it"
    );
    let to_release = twice(&out_dir, &names[4], &to_verify, &dst_env, Some(&names[5]));
    let to_remove = twice(&out_dir, &names[5], &to_release, &src_env, Some(&names[6]));
    twice(&out_dir, &names[6], &to_remove, &dst_env, None);
    assert_clone_end_state(
        [&a, &b],
        (&pool, &image),
        (&into, &image),
        &before,
        &final_sha,
    );

    for (cluster, p) in [(&b, &into), (&a, &pool)] {
        let mut rm = vec!["rm", "--no-progress"];
        rm.extend(image_args(p, &image));
        assert!(rbd_output(cluster, &rm).status.success());
    }
}

/// A handover by clone that fails after the demotion, rolled back by the roles: a foreign
/// image takes the destination image's name between the sync and the handover, so the
/// handover script stops after it promoted the replica and names the roll back. The two
/// roll-back scripts (each run twice) leave the foreign image alone, demote the replica and
/// promote the source: primary, writable, with its data and its migration features; then,
/// once the name is free, the whole bundle re-run from its first script converges, with the
/// writes made after the roll back.
#[test]
fn a_handover_that_fails_after_the_demotion_rolls_back_and_a_rerun_converges() {
    clone_rollback("journal");
}

/// The same in snapshot mode.
#[test]
fn snapshot_mode_handover_that_fails_after_the_demotion_rolls_back_and_a_rerun_converges() {
    clone_rollback("snapshot");
}

fn clone_rollback(mode: &str) {
    let env = testenv::shared().expect("test environment");
    let _logs = env.log_guard();
    let users = env.role_users().expect("per-role cephx users");
    let (a, b) = (env.site_a().name.clone(), env.site_b().name.clone());
    let (pool, into) = (
        env.pools().volumes.to_string(),
        env.pools().cinder.to_string(),
    );
    let image = testenv::unique_name(&format!("bdl-rb-{}", &mode[..4]));
    image_with_data(&a, &pool, &image, 4 << 20);
    let before = info(&a, &pool, &image).unwrap();
    let spec = format!("{pool}/{image}");
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("bundle");
    let state = tempfile::tempdir().unwrap();
    let (_, names) = generate_clone_bundle(
        [&a, &b],
        &spec,
        &into,
        &out_dir,
        state.path(),
        &["--mode", mode],
        None,
    );
    for n in names.iter().filter(|n| n.ends_with(".sh")) {
        shellcheck(&out_dir.join(n));
    }
    let n = |prefix: &str| {
        names
            .iter()
            .find(|n| n.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix}* in {names:?}"))
            .clone()
    };
    let (rollback_1, rollback_2) = (n("rollback-1-"), n("rollback-2-"));
    let src_env = [("SRC_ID", users.source_admin.id.as_str())];
    let dst_env = [("DST_ID", users.destination_admin.id.as_str())];
    let primary =
        |cluster: &str, p: &str| info(cluster, p, &image).unwrap()["mirroring"]["primary"].clone();

    let to_dst = twice(&out_dir, &n("1-"), &[], &src_env, Some(&n("2-")));
    let to_cutover = twice(&out_dir, &n("2-"), &to_dst, &dst_env, Some(&n("3-")));
    let mirrored = info(&a, &pool, &image).unwrap();
    let source_sha = sha(&a, &pool, &image);
    // someone takes the destination image's name meanwhile
    image_with_data(&b, &into, &image, 1 << 20);
    let foreign_sha = sha(&b, &into, &image);
    let to_handover = twice(&out_dir, &n("3-"), &to_cutover, &src_env, Some(&n("4-")));
    assert_eq!(primary(&a, &pool), false, "demoted");
    let args: Vec<&str> = to_handover.iter().map(String::as_str).collect();
    let r = script(&out_dir, &n("4-"), &args, &dst_env);
    assert!(
        !r.ok && r.stderr.contains("is not this migration's clone"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(&format!(
            "sh ./{rollback_1}, then the Ceph source admin runs"
        )),
        "the failure after the demotion names the roll back: {}",
        r.stderr
    );
    assert_eq!(primary(&b, &pool), true, "it failed after the promotion");

    // the roll back, by the roles
    let to_rollback_2 = twice(&out_dir, &rollback_1, &[], &dst_env, Some(&rollback_2));
    assert_eq!(primary(&b, &pool), false, "the replica is demoted");
    assert_eq!(
        sha(&b, &into, &image),
        foreign_sha,
        "the foreign image is left alone"
    );
    twice(&out_dir, &rollback_2, &to_rollback_2, &src_env, None);
    let after = info(&a, &pool, &image).unwrap();
    assert_eq!(
        after["mirroring"]["primary"], true,
        "primary again: {after}"
    );
    assert_eq!(after["mirroring"]["state"], "enabled", "still mirrored");
    assert_eq!(after["features"], mirrored["features"], "features intact");
    assert_eq!(sha(&a, &pool, &image), source_sha, "data intact");
    let mut write = vec![
        "bench",
        "--io-type",
        "write",
        "--io-size",
        "64K",
        "--io-total",
        "512K",
        "--io-pattern",
        "rand",
    ];
    write.extend(image_args(&pool, &image));
    let w = rbd_output(&a, &write);
    assert!(w.status.success(), "writable after the roll back: {w:?}");
    let final_sha = sha(&a, &pool, &image);

    // the name is free again: the bundle re-run from its first script converges
    let mut rm = vec!["rm", "--no-progress"];
    rm.extend(image_args(&into, &image));
    assert!(rbd_output(&b, &rm).status.success());
    let to_dst = twice(&out_dir, &n("1-"), &[], &src_env, Some(&n("2-")));
    let rebuilt = twice(&out_dir, &n("2-"), &to_dst, &dst_env, Some(&n("3-")));
    assert_ne!(
        rebuilt[0], to_cutover[0],
        "the replica left in split-brain was rebuilt (a new image id)"
    );
    let to_cutover = rebuilt;
    let to_handover = twice(&out_dir, &n("3-"), &to_cutover, &src_env, Some(&n("4-")));
    let to_verify = twice(&out_dir, &n("4-"), &to_handover, &dst_env, Some(&n("6-")));
    let to_release = twice(&out_dir, &n("6-"), &to_verify, &dst_env, Some(&n("7-")));
    assert_eq!(
        to_release[0], final_sha,
        "the writes after the roll back are in it"
    );
    let to_remove = twice(&out_dir, &n("7-"), &to_release, &src_env, Some(&n("8-")));
    twice(&out_dir, &n("8-"), &to_remove, &dst_env, None);
    assert_clone_end_state(
        [&a, &b],
        (&pool, &image),
        (&into, &image),
        &before,
        &final_sha,
    );

    for (cluster, p) in [(&b, &into), (&a, &pool)] {
        let mut rm = vec!["rm", "--no-progress"];
        rm.extend(image_args(p, &image));
        assert!(rbd_output(cluster, &rm).status.success());
    }
}
