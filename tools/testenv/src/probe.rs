//! Independent witnesses for the real tests of every crate: the `rbd` CLI run on a site of
//! the pair, the sha256 of an image's whole content, "is it there / is it gone", and one
//! polling helper. The real tests of cli, rbd-mirror-ceph, cinder-manage, glance-rbd and
//! testenv itself all check what a migration did through these, so they live once, here,
//! instead of a copy per test file.
//!
//! These are test helpers: a step that cannot be done at all (rbd missing, output that is
//! not JSON) panics with the command and its stderr, because the test using it has failed.
//! The `try_` variants return the failure as text for tests that poll.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Bound on one `rbd` command (a hung command fails the test instead of hanging it).
pub const RBD_LIMIT: Duration = Duration::from_secs(300);

/// Runs `rbd --cluster SITE ARGS` (bounded by [`RBD_LIMIT`]) and returns what it did,
/// successful or not. Panics only when `timeout`/`rbd` cannot be started.
pub fn rbd_output(site: &str, args: &[&str]) -> Output {
    Command::new("timeout")
        .arg(RBD_LIMIT.as_secs().to_string())
        .args(["rbd", "--cluster", site])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run rbd --cluster {site} {args:?}: {e}"))
}

/// Runs `rbd --cluster SITE ARGS`; its stdout, or `Err` naming the command and its stderr.
pub fn try_rbd(site: &str, args: &[&str]) -> Result<String, String> {
    let out = rbd_output(site, args);
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

/// Runs `rbd --cluster SITE ARGS` and returns its stdout; panics with its stderr on failure.
pub fn rbd(site: &str, args: &[&str]) -> String {
    try_rbd(site, args).unwrap_or_else(|e| panic!("{e}"))
}

/// `rbd --cluster SITE ARGS --format json`, parsed; `Err` on failure or bad JSON.
pub fn try_rbd_json(site: &str, args: &[&str]) -> Result<Value, String> {
    let mut all = args.to_vec();
    all.extend(["--format", "json"]);
    let text = try_rbd(site, &all)?;
    serde_json::from_str(&text).map_err(|e| format!("bad json from rbd {args:?}: {e}: {text}"))
}

/// `rbd --cluster SITE ARGS --format json`, parsed; panics on failure.
pub fn rbd_json(site: &str, args: &[&str]) -> Value {
    try_rbd_json(site, args).unwrap_or_else(|e| panic!("{e}"))
}

/// Whether `rbd info` finds IMAGE (POOL/NAME) on SITE.
pub fn exists(site: &str, image: &str) -> bool {
    rbd_output(site, &["info", image]).status.success()
}

/// `rbd info --format json` of IMAGE on SITE; panics when it is not there.
pub fn info(site: &str, image: &str) -> Value {
    rbd_json(site, &["info", image])
}

/// sha256 (hex) and length of IMAGE's whole content, streamed from `rbd export`; panics
/// when the export fails.
pub fn export_digest(site: &str, image: &str) -> (String, u64) {
    let mut child = Command::new("rbd")
        .args(["--cluster", site, "export", "--no-progress", image, "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run rbd export: {e}"));
    let mut stdout = child.stdout.take().expect("rbd export's stdout is piped");
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = stdout
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("reading rbd export of {site}:{image}: {e}"));
        if n == 0 {
            break;
        }
        total += n as u64;
        hasher.update(&buf[..n]);
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for rbd export of {site}:{image}: {e}"));
    assert!(
        out.status.success(),
        "rbd --cluster {site} export {image} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (format!("{:x}", hasher.finalize()), total)
}

/// sha256 (hex) of IMAGE's whole content, as `rbd export - | sha256sum` computes it.
pub fn sha(site: &str, image: &str) -> String {
    export_digest(site, image).0
}

/// sha256 (hex) of the first `len` bytes of IMAGE (`rbd export - | head -c LEN |
/// sha256sum`): the content of a copy grown to a whole GiB for Cinder that came from a
/// source of `len` bytes. Panics when the image is shorter.
pub fn sha_of_first(site: &str, image: &str, len: u64) -> String {
    let mut child = Command::new("rbd")
        .args(["--cluster", site, "export", "--no-progress", image, "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run rbd export: {e}"));
    let mut stdout = child.stdout.take().expect("rbd export's stdout is piped");
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        let n = stdout
            .read(&mut buf[..want])
            .unwrap_or_else(|e| panic!("reading rbd export of {site}:{image}: {e}"));
        assert!(n > 0, "{site}:{image} ended {left} bytes before {len}");
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    // the rest is not read: the export ends on a closed pipe
    drop(stdout);
    let _ = child.kill();
    let _ = child.wait();
    format!("{:x}", hasher.finalize())
}

/// How many mirror snapshots IMAGE has on SITE.
pub fn mirror_snapshots(site: &str, image: &str) -> usize {
    rbd_json(site, &["snap", "ls", "--all", image])
        .as_array()
        .map_or(0, |snaps| {
            snaps
                .iter()
                .filter(|s| s["namespace"]["type"] == "mirror")
                .count()
        })
}

/// The names of every snapshot of IMAGE on SITE, in every namespace (user snapshots,
/// rbd-mirror's `.rbd-mirror.*` sync points, mirror snapshots, trash).
pub fn snapshot_names(site: &str, image: &str) -> Vec<String> {
    rbd_json(site, &["snap", "ls", "--all", image])
        .as_array()
        .map_or_else(Vec::new, |snaps| {
            snaps
                .iter()
                .filter_map(|s| s["name"].as_str().map(str::to_string))
                .collect()
        })
}

/// Whether mirroring of IMAGE on SITE is off.
pub fn mirroring_off(site: &str, image: &str) -> bool {
    info(site, image)
        .get("mirroring")
        .is_none_or(|m| m["state"] == "disabled")
}

/// Whether IMAGE is gone from SITE within `limit` (rbd-mirror removes a replica
/// asynchronously once mirroring of its primary is off).
pub fn gone_within(site: &str, image: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while exists(site, image) {
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(250));
    }
    true
}

/// Waits until IMAGE is gone from SITE; panics when it is still there after `limit`.
pub fn wait_gone(site: &str, image: &str, limit: Duration) {
    assert!(
        gone_within(site, image, limit),
        "{site}:{image} still there after {limit:?}"
    );
}

/// Polls `check` (every 250 ms) until it says `Ok(true)`; returns how long that took.
/// Panics after `limit` with the last observation (`Err` text or "condition false").
pub fn wait_until(
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

/// `len` bytes of a fixed, non-repeating-looking pattern (the same on every call), so a copy
/// that shifted or dropped a block does not hash like the source.
pub fn patterned_bytes(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}

/// Creates IMAGE (POOL/NAME) on SITE with `len` bytes of [`patterned_bytes`] and rbd's
/// default features (by `rbd import`).
pub fn image_with_data(site: &str, image: &str, len: usize) {
    let file = std::env::temp_dir().join(crate::unique_name("rbd-import"));
    std::fs::write(&file, patterned_bytes(len))
        .unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
    let path = file.to_str().expect("the temp dir is UTF-8").to_string();
    let result = try_rbd(site, &["import", "--no-progress", &path, image]);
    let _ = std::fs::remove_file(&file);
    result.unwrap_or_else(|e| panic!("{e}"));
}

/// What a "nothing changed" check compares on the clusters, taken by [`cluster_state`]: per
/// site, which of the pools exist, and per existing pool its mirroring (mode, site name,
/// peers) and, for each image whose name the filter accepts, its `rbd info` (features,
/// size, id, parent, mirroring state, mode and primary; without the access and modify
/// timestamps, which a read-only open may move), all its snapshots (every namespace, with
/// protection and mirror-snapshot progress), its image metadata, and the pool's trash
/// entries of such names. Equal before and after a refused command: it changed nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterState(pub std::collections::BTreeMap<String, Value>);

/// The [`ClusterState`] of `pools` on each of `sites`, for the images whose names
/// `relevant` accepts (a shared pool holds other tests' images, which may change meanwhile).
pub fn cluster_state(
    sites: &[&str],
    pools: &[&str],
    relevant: impl Fn(&str) -> bool,
) -> ClusterState {
    let mut all = std::collections::BTreeMap::new();
    for site in sites {
        let existing =
            try_ceph_json(site, &["osd", "pool", "ls"]).unwrap_or_else(|e| panic!("{e}"));
        for pool in pools {
            let key = format!("{site}:{pool}");
            if !existing
                .as_array()
                .is_some_and(|a| a.iter().any(|p| p == pool))
            {
                all.insert(key, Value::String("no such pool".into()));
                continue;
            }
            let mut state = serde_json::Map::new();
            state.insert(
                "mirror".into(),
                witness_rbd_json(site, &["mirror", "pool", "info", pool]),
            );
            let listed = witness_rbd_json(site, &["ls", pool]);
            if listed.is_string() {
                // rbd's error is the state of the pool
                state.insert("ls".into(), listed.clone());
            }
            let names: Vec<String> = listed
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|n| n.as_str())
                        .filter(|n| relevant(n))
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            for name in names {
                let spec = format!("{pool}/{name}");
                let mut info = witness_rbd_json(site, &["info", &spec]);
                if let Some(o) = info.as_object_mut() {
                    o.remove("access_timestamp");
                    o.remove("modify_timestamp");
                }
                let image = serde_json::json!({
                    "info": info,
                    "snapshots": witness_rbd_json(site, &["snap", "ls", "--all", &spec]),
                    "metadata": witness_rbd_json(site, &["image-meta", "list", &spec]),
                });
                state.insert(format!("image {name}"), image);
            }
            let trashed = witness_rbd_json(site, &["trash", "ls", pool]);
            if trashed.is_string() {
                state.insert("trash ls".into(), trashed.clone());
            }
            let trash: Vec<Value> = trashed
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|t| t["name"].as_str().is_some_and(&relevant))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            state.insert("trash".into(), Value::Array(trash));
            all.insert(key, Value::Object(state));
        }
    }
    ClusterState(all)
}

/// `rbd --cluster SITE ARGS --format json` for the state witness: what the cluster answered,
/// parsed, or the error rbd reported (as a string, part of the state), but never a failure
/// of the tool itself. `rbd` dying by a signal (seen on a loaded machine: SIGABRT, "terminate
/// called after throwing an instance of 'std::system_error'", a thread it could not start)
/// or running out of time says nothing about the cluster, so it is run again, three tries in
/// all, and the test stops when none answers. No output at all is an empty object (what
/// `image-meta list` prints for an image without metadata).
fn witness_rbd_json(site: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--format", "json"]);
    let mut last = String::new();
    for attempt in 0..3 {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        let out = rbd_output(site, &all);
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        match out.status.code() {
            // killed by a signal, or `timeout`'s own code when the limit passed
            None | Some(124) => {
                last = format!("{} ({stderr})", out.status);
                continue;
            }
            Some(0) => {
                let text = String::from_utf8_lossy(&out.stdout);
                if text.trim().is_empty() {
                    return Value::Object(serde_json::Map::new());
                }
                return serde_json::from_str(&text).unwrap_or_else(|e| {
                    Value::String(format!("bad json from rbd {args:?}: {e}: {text}"))
                });
            }
            Some(_) => {
                return Value::String(format!(
                    "rbd --cluster {site} {} failed ({}): {stderr}",
                    args.join(" "),
                    out.status
                ))
            }
        }
    }
    panic!(
        "the state witness could not read rbd --cluster {site} {}: three tries, the last {last}",
        args.join(" ")
    )
}

/// `ceph --cluster SITE ARGS --format json`, parsed; `Err` naming the command on failure.
pub fn try_ceph_json(site: &str, args: &[&str]) -> Result<Value, String> {
    let out = Command::new("timeout")
        .arg(RBD_LIMIT.as_secs().to_string())
        .args(["ceph", "--cluster", site])
        .args(args)
        .args(["--format", "json"])
        .output()
        .map_err(|e| format!("cannot run ceph --cluster {site} {args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ceph --cluster {site} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("bad json from ceph {args:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterned_bytes_are_the_same_on_every_call_and_not_constant() {
        let a = patterned_bytes(4096);
        assert_eq!(a, patterned_bytes(4096));
        assert!(a.iter().any(|&b| b != a[0]));
    }
}
