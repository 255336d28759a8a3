//! A memstore OSD of the test pair must not go full because of memstore's own byte
//! counter. That counter went below zero once in CI (`ceph df`: "16 EiB used"); the OSD
//! engaged its full failsafe and dropped every write, and a dozen later tests failed waiting
//! for replicas. testenv therefore has memstore OSDs compute fullness from the bytes their
//! placement groups hold. This test makes memstore's counter say "full" on purpose (it
//! lowers the capacity memstore reports to 1 MiB) and checks that the OSD still takes
//! writes. A bluestore pair keeps bluestore's own, exact accounting.

use std::path::PathBuf;
use std::time::Duration;

use testenv::{probe, Objectstore, SITE_A};

/// Capacity memstore is made to report during the test: far below what the pair holds.
const TINY_BYTES: &str = "1048576";
/// [`TINY_BYTES`] as a number.
const TINY: u64 = 1 << 20;

/// `ceph --cluster site-a tell osd.0 ARGS --format json`.
fn tell_osd(args: &[&str]) -> Result<serde_json::Value, String> {
    let mut all = vec!["tell", "osd.0"];
    all.extend_from_slice(args);
    probe::try_ceph_json(SITE_A, &all)
}

/// A setting of site-a's OSD, as the OSD holds it now.
fn osd_setting(name: &str) -> String {
    let v = tell_osd(&["config", "get", name]).expect("config get");
    v[name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {v}"))
        .to_string()
}

/// Puts memstore's reported capacity back to what it was, also when the test fails.
struct RestoreCapacity(String);

impl Drop for RestoreCapacity {
    fn drop(&mut self) {
        if let Err(e) = tell_osd(&["config", "set", "memstore_device_bytes", &self.0]) {
            eprintln!("could not restore memstore_device_bytes on site-a's osd.0: {e}");
        }
    }
}

/// Removes the test image on site-a, also when the test fails.
struct RemoveImage(String);

impl Drop for RemoveImage {
    fn drop(&mut self) {
        let _ = probe::try_rbd(SITE_A, &["rm", "--no-progress", &self.0]);
    }
}

/// How many times site-a's OSD has computed its fullness from its placement groups (it
/// logs each time).
fn pg_based_statfs_updates(log: &PathBuf) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("set_statfs fake total"))
        .count()
}

/// The OSD's own view of its capacity: `(stat_bytes, stat_bytes_used)`.
fn osd_stat_bytes() -> (u64, u64) {
    let dump = tell_osd(&["perf", "dump", "osd"]).expect("perf dump");
    let field = |k: &str| {
        dump["osd"][k]
            .as_u64()
            .unwrap_or_else(|| panic!("no osd.{k} in {dump}"))
    };
    (field("stat_bytes"), field("stat_bytes_used"))
}

#[test]
fn a_memstore_osd_takes_writes_when_memstores_own_counter_says_full() {
    let env = testenv::shared().expect("testenv");
    let _logs = env.log_guard();
    if env.objectstore() == Objectstore::Bluestore {
        // bluestore's accounting is exact: the pair must not override it
        let v = osd_setting("fake_statfs_for_testing");
        assert_eq!(v, "0", "a bluestore OSD overrides its statfs");
        return;
    }
    let log = env
        .log_files()
        .into_iter()
        .find(|p| p.ends_with("site-a-osd.0.log"))
        .expect("site-a's OSD log");

    let image = format!("{}/{}", env.pools().volumes, testenv::unique_name("full"));
    let _image = RemoveImage(image.clone());

    let before = pg_based_statfs_updates(&log);
    let capacity = osd_setting("memstore_device_bytes");
    let _restore = RestoreCapacity(capacity.clone());
    tell_osd(&["config", "set", "memstore_device_bytes", TINY_BYTES]).expect("lower capacity");
    // two statfs rounds after the change (one per OSD heartbeat, a few seconds apart), or
    // the OSD taking memstore's lowered capacity as its own: then it sees itself over
    // 100 % full
    probe::wait_until(
        "two statfs rounds of site-a's OSD after memstore's capacity was lowered",
        Duration::from_secs(60),
        || Ok(pg_based_statfs_updates(&log) >= before + 2 || osd_stat_bytes().0 <= TINY),
    );
    let (total, _) = osd_stat_bytes();
    assert_eq!(
        total.to_string(),
        capacity,
        "site-a's OSD reports memstore's lowered capacity as its own"
    );

    // a 4 MiB write completes (a full OSD would hold it until rbd's time limit)
    probe::image_with_data(SITE_A, &image, 4 << 20);
    // the OSD counts what was written (its placement groups publish their bytes a little
    // later)
    probe::wait_until(
        "site-a's OSD to count the 4 MiB written",
        Duration::from_secs(60),
        || Ok(osd_stat_bytes().1 >= 4 << 20),
    );
    assert_eq!(osd_stat_bytes().0.to_string(), capacity);
    let health = probe::try_ceph_json(SITE_A, &["health"]).expect("ceph health");
    assert!(
        health["checks"].get("OSD_FULL").is_none(),
        "site-a reports a full OSD: {health}"
    );
}
