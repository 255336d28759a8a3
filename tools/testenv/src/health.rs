//! Is the pair healthy, and what does it run: `ceph health` summaries (with the checks that
//! are muted on newer releases), the release each site runs, and rbd-mirror's daemon health
//! per mirrored pool, which rbd-relay's preflight checks too. Kept apart from building and
//! tearing down (`cluster.rs`): `up`, `status` and the waits all read these.

use std::thread;
use std::time::{Duration, Instant};

use crate::cluster::{ceph, rbd, CEPH_LIMIT, HEALTH_LIMIT};
use crate::{Error, Result};
use crate::{MIRRORED_POOLS, SITE_B};

/// `ceph health` of a site: the status word plus the check names, e.g. `HEALTH_OK`.
pub(crate) fn health(site: &str, limit: Duration) -> Result<String> {
    let out = ceph(site, &["health", "--format", "json"], None, limit)?;
    summarize_health(&out.stdout).ok_or_else(|| Error::Parse {
        command: format!("ceph --cluster {site} health --format json"),
        detail: format!("not JSON: {}", out.stdout.trim()),
    })
}

/// `ceph health --format json` as one line: the status word plus the checks that count,
/// e.g. `HEALTH_OK` or `HEALTH_WARN (CODE: message)`. A muted check (see
/// [`crate::cluster::MUTED_ON_NEWER_RELEASES`]) is known and does not count.
pub(crate) fn summarize_health(json: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let status = v["status"].as_str().unwrap_or("?").to_string();
    let checks: Vec<String> = v["checks"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, c)| c["muted"] != true)
                .map(|(k, c)| {
                    let msg = c["summary"]["message"].as_str().unwrap_or("");
                    format!("{k}: {msg}")
                })
                .collect()
        })
        .unwrap_or_default();
    Some(if checks.is_empty() {
        status
    } else {
        format!("{status} ({})", checks.join("; "))
    })
}

/// The release and version every daemon of a site runs, from `ceph versions` JSON: e.g.
/// `reef 18.2.7`; several when daemons differ (`pacific 16.2.15, reef 18.2.7`).
pub(crate) fn release_from_versions(json: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let mut found: Vec<String> = v["overall"]
        .as_object()?
        .keys()
        .filter_map(|k| {
            // "ceph version 18.2.7 (hash) reef (stable)"
            let words: Vec<&str> = k.split_whitespace().collect();
            match words.as_slice() {
                ["ceph", "version", version, _hash, name, ..] => Some(format!("{name} {version}")),
                _ => None,
            }
        })
        .collect();
    found.sort();
    (!found.is_empty()).then(|| found.join(", "))
}

/// The release a site's running daemons report (`ceph versions`), e.g. `reef 18.2.7`.
pub fn running_release(site: &str) -> Result<String> {
    let out = ceph(site, &["versions", "--format", "json"], None, CEPH_LIMIT)?;
    release_from_versions(&out.stdout).ok_or_else(|| Error::Parse {
        command: format!("ceph --cluster {site} versions --format json"),
        detail: format!("no \"overall\" versions in {}", out.stdout.trim()),
    })
}

pub(crate) fn wait_healthy(site: &str) -> Result<()> {
    let deadline = Instant::now() + HEALTH_LIMIT;
    loop {
        let last = match health(site, Duration::from_secs(20)) {
            Ok(h) if h == "HEALTH_OK" => return Ok(()),
            Ok(h) => h,
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: format!("{site} HEALTH_OK"),
                limit: HEALTH_LIMIT,
                last_seen: Some(last),
            });
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// How long rbd-mirror may take to report itself healthy for every mirrored pool.
const MIRROR_HEALTH_LIMIT: Duration = Duration::from_secs(60);

/// How long the daemon health must stay OK before it counts (several readings): cheap
/// insurance against one transient reading while the daemon's pool replayers start.
const MIRROR_HEALTH_STABLE: Duration = Duration::from_millis(500);

/// Waits until `rbd mirror pool status` on site-b reports daemon health OK for every
/// mirrored pool, continuously for [`MIRROR_HEALTH_STABLE`]. rbd-mirror reaches the mgr's
/// service map a few seconds after it starts; until then rbd-relay's preflight (which
/// checks exactly this) would refuse to run.
pub(crate) fn wait_rbd_mirror_healthy() -> Result<()> {
    let deadline = Instant::now() + MIRROR_HEALTH_LIMIT;
    let mut ok_since: Option<Instant> = None;
    loop {
        let mut last = None;
        for pool in MIRRORED_POOLS {
            match mirror_daemon_health(pool) {
                Ok(h) if h == "OK" => {}
                Ok(h) => {
                    last = Some(format!("{pool}: daemon health {h}"));
                    break;
                }
                Err(e) => {
                    last = Some(e.to_string());
                    break;
                }
            }
        }
        tracing::debug!(observation = ?last, "rbd-mirror daemon health");
        match last {
            None => {
                let since = *ok_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= MIRROR_HEALTH_STABLE {
                    return Ok(());
                }
            }
            Some(last) => {
                ok_since = None;
                if Instant::now() >= deadline {
                    return Err(Error::Timeout {
                        what: "rbd-mirror daemon health OK on site-b".into(),
                        limit: MIRROR_HEALTH_LIMIT,
                        last_seen: Some(last),
                    });
                }
            }
        }
        thread::sleep(Duration::from_millis(200));
    }
}

fn mirror_pool_status(pool: &str) -> Result<serde_json::Value> {
    let out = rbd(
        SITE_B,
        &["mirror", "pool", "status", pool, "--format", "json"],
        None,
    )?;
    serde_json::from_str(&out.stdout).map_err(|e| Error::Parse {
        command: format!("rbd --cluster {SITE_B} mirror pool status {pool}"),
        detail: e.to_string(),
    })
}

fn mirror_daemon_health(pool: &str) -> Result<String> {
    let v = mirror_pool_status(pool)?;
    Ok(v["summary"]["daemon_health"]
        .as_str()
        .unwrap_or("?")
        .to_string())
}

/// `rbd mirror pool status` summary of a pool on site-b (daemon and image health).
pub(crate) fn mirror_pool_health(pool: &str) -> Result<String> {
    let v = mirror_pool_status(pool)?;
    let s = &v["summary"];
    Ok(format!(
        "health {}, daemon {}, images {}",
        s["health"].as_str().unwrap_or("?"),
        s["daemon_health"].as_str().unwrap_or("?"),
        s["image_health"].as_str().unwrap_or("?")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_is_read_from_ceph_versions_of_each_release() {
        let pacific = r#"{"mon":{"ceph version 16.2.15 (618f44) pacific (stable)":1},
            "overall":{"ceph version 16.2.15 (618f44) pacific (stable)":4}}"#;
        assert_eq!(
            release_from_versions(pacific).as_deref(),
            Some("pacific 16.2.15")
        );
        let mixed = r#"{"overall":{"ceph version 18.2.7 (abc) reef (stable)":3,
            "ceph version 16.2.15 (618f44) pacific (stable)":1}}"#;
        assert_eq!(
            release_from_versions(mixed).as_deref(),
            Some("pacific 16.2.15, reef 18.2.7")
        );
        assert_eq!(release_from_versions(r#"{"overall":{}}"#), None);
        assert_eq!(release_from_versions("not json"), None);
    }

    #[test]
    fn a_muted_check_does_not_keep_a_site_from_health_ok() {
        let muted = r#"{"status":"HEALTH_OK","checks":{"MGR_MODULE_DEPENDENCY":{"severity":"HEALTH_WARN",
            "summary":{"message":"11 mgr modules have failed dependencies","count":11},"muted":true}},
            "mutes":[{"code":"MGR_MODULE_DEPENDENCY","sticky":true}]}"#;
        assert_eq!(summarize_health(muted).as_deref(), Some("HEALTH_OK"));
        let warn = r#"{"status":"HEALTH_WARN","checks":{"POOL_APP_NOT_ENABLED":{"severity":"HEALTH_WARN",
            "summary":{"message":"1 pool(s) do not have an application enabled"}}}}"#;
        assert_eq!(
            summarize_health(warn).as_deref(),
            Some(
                "HEALTH_WARN (POOL_APP_NOT_ENABLED: 1 pool(s) do not have an application enabled)"
            )
        );
        assert_eq!(summarize_health("garbage"), None);
    }
}
