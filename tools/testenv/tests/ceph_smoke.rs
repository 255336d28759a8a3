//! Smoke tests of the Ceph pair through the library: an image written on site-a reaches
//! site-b through rbd-mirror, in journal mode and in snapshot mode, with identical content.
//! Completion is decided from the exact signals (journal commit positions; the complete
//! non-primary mirror snapshot), never from the lagging `rbd mirror image status`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use testenv::{probe, Env};

/// Bound on every wait for replication.
const SYNC_LIMIT: Duration = Duration::from_secs(120);
/// Size of the test images.
const IMAGE_MIB: usize = 48;

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

/// sha256 of `rbd export` of an image, which must be the test image's size.
fn export_sha(site: &str, spec: &str) -> String {
    let (sha, len) = probe::export_digest(site, spec);
    assert_eq!(
        len,
        (IMAGE_MIB << 20) as u64,
        "{site} {spec}: exported size"
    );
    sha
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
        let _ = probe::try_rbd(
            testenv::SITE_A,
            &["mirror", "image", "disable", "--force", &self.spec],
        );
        probe::try_rbd(testenv::SITE_A, &["rm", "--no-progress", &self.spec]).map(|_| ())
    }

    fn cleanup(mut self) {
        self.cleaned = true;
        self.remove_primary()
            .unwrap_or_else(|e| panic!("cleanup: {e}"));
        let (pool, name) = self.spec.split_once('/').expect("pool/image");
        probe::wait_until(
            &format!("rbd-mirror to delete the replica {} on site-b", self.spec),
            SYNC_LIMIT,
            || {
                let images = probe::try_rbd_json(testenv::SITE_B, &["ls", pool])?;
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
    probe::rbd(
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
    let journal = probe::try_rbd_json(&env.site_a().name, &["journal", "status", "--image", spec])?;
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

    probe::rbd(a, &["feature", "enable", &spec, "journaling"]);
    probe::rbd(a, &["mirror", "image", "enable", &spec, "journal"]);
    let took = probe::wait_until("journal-mode initial sync", SYNC_LIMIT, || {
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
    probe::rbd(
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
    let took = probe::wait_until("journal replay of 4 MiB of writes", SYNC_LIMIT, || {
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
    let snaps =
        probe::try_rbd_json(site, &["snap", "ls", "--all", spec]).unwrap_or_else(|e| panic!("{e}"));
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
    let snaps = probe::try_rbd_json(site, &["snap", "ls", "--all", spec])?;
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

    probe::rbd(a, &["mirror", "image", "enable", &spec, "snapshot"]); // takes the first snapshot
    let id = newest_primary_mirror_snap(a, &spec);
    let took = probe::wait_until(
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
    probe::rbd(
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
    probe::rbd(a, &["mirror", "image", "snapshot", &spec]);
    let id2 = newest_primary_mirror_snap(a, &spec);
    assert!(id2 > id, "new mirror snapshot id {id2} > {id}");
    let took = probe::wait_until(
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
