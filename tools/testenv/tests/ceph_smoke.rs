//! Smoke tests of the Ceph pair through the library: an image written on site-a reaches
//! site-b through rbd-mirror, in journal mode and in snapshot mode, with identical content.
//! Completion is decided from the exact signals (journal commit positions; the complete
//! non-primary mirror snapshot), never from the lagging `rbd mirror image status`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};
use testenv::Env;

/// Bound on every wait for replication.
const SYNC_LIMIT: Duration = Duration::from_secs(120);
/// Size of the test images.
const IMAGE_MIB: usize = 48;

/// Runs `rbd --cluster <site> args`; `Err(stderr)` on failure.
fn rbd(site: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("timeout")
        .arg("300")
        .arg("rbd")
        .args(["--cluster", site])
        .args(args)
        .output()
        .map_err(|e| format!("cannot run rbd: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "rbd --cluster {site} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn rbd_ok(site: &str, args: &[&str]) -> String {
    rbd(site, args).unwrap_or_else(|e| panic!("{e}"))
}

fn rbd_json(site: &str, args: &[&str]) -> Result<Value, String> {
    let mut all = args.to_vec();
    all.extend(["--format", "json"]);
    let text = rbd(site, &all)?;
    serde_json::from_str(&text).map_err(|e| format!("bad json from rbd {args:?}: {e}: {text}"))
}

/// `ceph --admin-daemon <asok> <command...>`.
fn asok(path: &Path, command: &[&str]) -> Result<String, String> {
    let out = Command::new("timeout")
        .arg("10")
        .arg("ceph")
        .arg("--admin-daemon")
        .arg(path)
        .args(command)
        .output()
        .map_err(|e| format!("cannot run ceph: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "asok {command:?}: {}{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// sha256 of `rbd export` of an image, streamed.
fn export_sha(site: &str, spec: &str) -> String {
    let mut child = Command::new("rbd")
        .args(["--cluster", site, "export", "--no-progress", spec, "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rbd export");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0usize;
    loop {
        let n = stdout.read(&mut buf).expect("read export");
        if n == 0 {
            break;
        }
        total += n;
        hasher.update(&buf[..n]);
    }
    let out = child.wait_with_output().expect("wait rbd export");
    assert!(
        out.status.success(),
        "rbd --cluster {site} export {spec} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(total, IMAGE_MIB << 20, "{site} {spec}: exported size");
    hex::encode(hasher.finalize())
}

/// A file of random bytes (from /dev/urandom) in the state directory.
fn random_file(env: &Env, name: &str) -> PathBuf {
    let path = env.state_dir().join(format!("{name}.bin"));
    let mut src = std::fs::File::open("/dev/urandom").expect("open /dev/urandom");
    let mut data = vec![0u8; IMAGE_MIB << 20];
    src.read_exact(&mut data).expect("read /dev/urandom");
    let mut f = std::fs::File::create(&path).expect("create random file");
    f.write_all(&data).expect("write random file");
    path
}

/// Polls `check` (every 250 ms) until it says `Ok(true)`; panics after `limit` with the
/// last observation.
fn wait_until(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> Result<bool, String>,
) -> Duration {
    let t0 = Instant::now();
    loop {
        let last = match check() {
            Ok(true) => return t0.elapsed(),
            Ok(false) => "condition false".to_string(),
            Err(e) => e,
        };
        if t0.elapsed() > limit {
            panic!("timeout after {limit:?} waiting for {what}; last seen: {last}");
        }
        thread::sleep(Duration::from_millis(250));
    }
}

/// Removes the test image on site-a (disabling mirroring first) and waits until rbd-mirror
/// has deleted the replica on site-b. On drop during a panic it only does the removal,
/// best effort.
struct Image {
    spec: String,
    cleaned: bool,
}

impl Image {
    fn remove_primary(&self) -> Result<(), String> {
        // The image may not be mirrored (yet): ignore that error, not the rm.
        let _ = rbd(
            testenv::SITE_A,
            &["mirror", "image", "disable", "--force", &self.spec],
        );
        rbd(testenv::SITE_A, &["rm", "--no-progress", &self.spec]).map(|_| ())
    }

    fn cleanup(mut self) {
        self.cleaned = true;
        self.remove_primary()
            .unwrap_or_else(|e| panic!("cleanup: {e}"));
        let (pool, name) = self.spec.split_once('/').expect("pool/image");
        wait_until(
            &format!("rbd-mirror to delete the replica {} on site-b", self.spec),
            SYNC_LIMIT,
            || {
                let images = rbd_json(testenv::SITE_B, &["ls", pool])?;
                Ok(!images
                    .as_array()
                    .is_some_and(|a| a.iter().any(|i| i == name)))
            },
        );
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        if !self.cleaned {
            if let Err(e) = self.remove_primary() {
                eprintln!("cleanup of {} failed: {e}", self.spec);
            }
        }
    }
}

fn create_image(env: &Env, prefix: &str) -> (Image, PathBuf) {
    let name = testenv::unique_name(prefix);
    let spec = format!("{}/{name}", env.pools().volumes);
    let data = random_file(env, &name);
    rbd_ok(
        env.site_a().name.as_str(),
        &["import", "--no-progress", path_str(&data), &spec],
    );
    (
        Image {
            spec,
            cleaned: false,
        },
        data,
    )
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Journal-mode completion (as Ceph's qa does): rbd-mirror's image replayer is replaying,
/// its commit position (after an asok flush) equals the master commit position in the
/// primary's journal, and that position is not null.
fn journal_caught_up(env: &Env, spec: &str) -> Result<bool, String> {
    let status = asok(
        env.rbd_mirror_asok(),
        &["rbd", "mirror", "status", spec, "--format", "json"],
    )?;
    let status: Value =
        serde_json::from_str(&status).map_err(|e| format!("asok status: {e}: {status}"))?;
    if status["state"] != "Replaying" {
        return Err(format!(
            "rbd-mirror image replayer state {}",
            status["state"]
        ));
    }
    asok(env.rbd_mirror_asok(), &["rbd", "mirror", "flush", spec])?;
    let journal = rbd_json(&env.site_a().name, &["journal", "status", "--image", spec])?;
    let clients = journal["registered_clients"]
        .as_array()
        .ok_or_else(|| format!("no registered_clients: {journal}"))?;
    let position = |c: &Value| c["commit_position"]["object_positions"][0].clone();
    let master = clients
        .iter()
        .find(|c| c["id"] == "")
        .map(position)
        .ok_or_else(|| format!("no master client: {journal}"))?;
    let peers: Vec<Value> = clients
        .iter()
        .filter(|c| c["id"] != "")
        .map(position)
        .collect();
    if master.is_null() || peers.is_empty() {
        return Err(format!(
            "master position {master}, {} peer client(s)",
            peers.len()
        ));
    }
    if peers.iter().all(|p| *p == master) {
        Ok(true)
    } else {
        Err(format!("master {master}, peers {peers:?}"))
    }
}

#[test]
fn journal_mode_replica_matches_primary() {
    let env = testenv::shared().expect("test environment");
    let _logs = env.log_guard();
    let (a, b) = (env.site_a().name.as_str(), env.site_b().name.as_str());
    let (image, data) = create_image(&env, "smoke-journal");
    let spec = image.spec.clone();

    rbd_ok(a, &["feature", "enable", &spec, "journaling"]);
    rbd_ok(a, &["mirror", "image", "enable", &spec, "journal"]);
    let took = wait_until("journal-mode initial sync", SYNC_LIMIT, || {
        journal_caught_up(&env, &spec)
    });
    eprintln!("journal: initial sync of {IMAGE_MIB} MiB complete after {took:?}");
    let primary = export_sha(a, &spec);
    assert_eq!(
        primary,
        export_sha(b, &spec),
        "journal mode: replica differs after initial sync"
    );

    // Writes after enabling travel through the journal (replay, not image sync).
    rbd_ok(
        a,
        &[
            "bench",
            "--io-type",
            "write",
            "--io-pattern",
            "rand",
            "--io-size",
            "4K",
            "--io-threads",
            "4",
            "--io-total",
            "4M",
            &spec,
        ],
    );
    let took = wait_until("journal replay of 4 MiB of writes", SYNC_LIMIT, || {
        journal_caught_up(&env, &spec)
    });
    eprintln!("journal: replay of 4 MiB of random writes complete after {took:?}");
    let primary2 = export_sha(a, &spec);
    assert_ne!(primary, primary2, "the writes changed the primary");
    assert_eq!(
        primary2,
        export_sha(b, &spec),
        "journal mode: replica differs after replay"
    );

    image.cleanup();
    std::fs::remove_file(data).expect("remove random file");
}

/// Id of the newest complete primary mirror snapshot of the image on site-a.
fn newest_primary_mirror_snap(site: &str, spec: &str) -> u64 {
    let snaps = rbd_json(site, &["snap", "ls", "--all", spec]).unwrap_or_else(|e| panic!("{e}"));
    snaps
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| {
            s["namespace"]["type"] == "mirror"
                && s["namespace"]["state"] == "primary"
                && s["namespace"]["complete"] == true
        })
        .filter_map(|s| s["id"].as_u64())
        .max()
        .unwrap_or_else(|| panic!("no complete primary mirror snapshot on {site} {spec}: {snaps}"))
}

/// Snapshot-mode completion: site-b has a complete non-primary mirror snapshot of the
/// primary snapshot `id`.
fn snapshot_synced(site: &str, spec: &str, id: u64) -> Result<bool, String> {
    let snaps = rbd_json(site, &["snap", "ls", "--all", spec])?;
    Ok(snaps.as_array().into_iter().flatten().any(|s| {
        let ns = &s["namespace"];
        ns["type"] == "mirror"
            && ns["state"] == "non-primary"
            && ns["primary_snap_id"].as_u64() == Some(id)
            && ns["complete"] == true
    }))
}

#[test]
fn snapshot_mode_replica_matches_primary() {
    let env = testenv::shared().expect("test environment");
    let _logs = env.log_guard();
    let (a, b) = (env.site_a().name.as_str(), env.site_b().name.as_str());
    let (image, data) = create_image(&env, "smoke-snapshot");
    let spec = image.spec.clone();

    rbd_ok(a, &["mirror", "image", "enable", &spec, "snapshot"]); // takes the first snapshot
    let id = newest_primary_mirror_snap(a, &spec);
    let took = wait_until(
        &format!("site-b to hold a complete copy of mirror snapshot {id}"),
        SYNC_LIMIT,
        || snapshot_synced(b, &spec, id),
    );
    eprintln!("snapshot: initial sync of {IMAGE_MIB} MiB (snapshot {id}) complete after {took:?}");
    let primary = export_sha(a, &spec);
    assert_eq!(
        primary,
        export_sha(b, &spec),
        "snapshot mode: replica differs after initial sync"
    );

    // A delta: write, take a new mirror snapshot, wait for exactly that one.
    rbd_ok(
        a,
        &[
            "bench",
            "--io-type",
            "write",
            "--io-pattern",
            "rand",
            "--io-size",
            "4K",
            "--io-threads",
            "4",
            "--io-total",
            "4M",
            &spec,
        ],
    );
    rbd_ok(a, &["mirror", "image", "snapshot", &spec]);
    let id2 = newest_primary_mirror_snap(a, &spec);
    assert!(id2 > id, "new mirror snapshot id {id2} > {id}");
    let took = wait_until(
        &format!("site-b to hold a complete copy of mirror snapshot {id2}"),
        SYNC_LIMIT,
        || snapshot_synced(b, &spec, id2),
    );
    eprintln!("snapshot: delta sync (snapshot {id2}) complete after {took:?}");
    let primary2 = export_sha(a, &spec);
    assert_ne!(primary, primary2, "the writes changed the primary");
    assert_eq!(
        primary2,
        export_sha(b, &spec),
        "snapshot mode: replica differs after delta"
    );

    image.cleanup();
    std::fs::remove_file(data).expect("remove random file");
}
