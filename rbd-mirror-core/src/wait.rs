//! Knowing when the replica is complete, and waiting for it with progress, stall detection
//! and a clear error when the rbd-mirror daemon is down.
//!
//! Completion is decided from exact signals, never from `rbd mirror image status` alone
//! (which lags by 10-22 s):
//! - snapshot mode: the replica has a *complete* non-primary mirror snapshot whose
//!   `primary_snap_id` is the source's newest primary mirror snapshot;
//! - journal mode: the peer's initial image sync is over and its commit position in the
//!   source journal equals the master commit position.
//!
//! The status is still read for progress and health. A destination daemon that was killed or
//! hangs is told by its beacons: the manager keeps listing a dead daemon, healthy, for a
//! minute (`mgr_service_beacon_grace`), but its `last_beacon` stops changing at once
//! ([`BeaconWatch`], which tells daemon instances apart and counts a silence from the
//! beacon's own time).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::event::{Event, EventSink, ProgressInfo};
use crate::features::MirrorImageMode;
use crate::ops::{
    CephOps, JournalPositions, MirrorDaemon, OpsError, SnapshotInfo, SnapshotNamespace,
};
use crate::spec::ImageSpec;
use crate::status::{Health, SyncProgress};

/// Whether the replica is complete, and if not, why and how far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Completion {
    /// The replica holds everything the source has.
    Complete,
    /// Not yet.
    Pending {
        /// What is awaited.
        reason: String,
        /// Exact progress when known (0..=100).
        percent: Option<f64>,
    },
}

/// The id of the source's newest complete primary mirror snapshot.
pub fn newest_primary_mirror_snapshot(source: &[SnapshotInfo]) -> Option<u64> {
    source
        .iter()
        .filter(|s| {
            matches!(
                s.namespace,
                SnapshotNamespace::Mirror {
                    primary: true,
                    complete: true,
                    ..
                }
            )
        })
        .map(|s| s.id)
        .max()
}

/// How many leading bytes of a snapshot-mode replica hold their final content for the
/// source's primary mirror snapshot `want`: everything (`u64::MAX`) once the replica's
/// non-primary snapshot for `want` is complete; before that the objects rbd-mirror has
/// copied in order (it records `last_copied_object_number`, the count of objects from the
/// first that are done); none while that snapshot does not exist yet.
pub fn replica_final_bytes(replica: &[SnapshotInfo], want: u64, object_size: u64) -> u64 {
    replica
        .iter()
        .find_map(|s| match s.namespace {
            SnapshotNamespace::Mirror {
                primary: false,
                complete,
                primary_snap_id,
                last_copied_object_number,
            } if primary_snap_id == want => Some(if complete {
                u64::MAX
            } else {
                last_copied_object_number.saturating_mul(object_size)
            }),
            _ => None,
        })
        .unwrap_or(0)
}

/// The exact completion signal of `replica` (on `dst`) for `image` (on `src`), read now:
/// the replica must exist; in snapshot mode its non-primary mirror snapshot for the
/// source's newest primary one must be complete; in journal mode the peer's commit position
/// must have reached the master's, for the replica image the peer synced (a daemon that
/// restarted mid-bootstrap may delete and recreate it). `objects` is for percent.
pub fn exact_completion(
    src: &dyn CephOps,
    dst: &dyn CephOps,
    image: &ImageSpec,
    replica: &ImageSpec,
    mode: MirrorImageMode,
    objects: u64,
) -> Result<Completion, OpsError> {
    if !dst.image_exists(replica)? {
        return Ok(Completion::Pending {
            reason: "rbd-mirror has not created the replica yet".into(),
            percent: None,
        });
    }
    match mode {
        MirrorImageMode::Snapshot => Ok(snapshot_completion(
            &src.snapshots(image)?,
            &dst.snapshots(replica)?,
            objects,
        )),
        MirrorImageMode::Journal => {
            let positions = src.journal_positions(image)?;
            match journal_completion(&positions) {
                Completion::Complete => {
                    let id = dst.stat(replica)?.id;
                    Ok(journal_replica_matches(&positions, &id))
                }
                pending => Ok(pending),
            }
        }
    }
}

/// Journal mode, live: the replica is in sync once rbd-mirror's initial image sync is done
/// (the primary keeps moving, so its position is never caught for good; the cutover's
/// promote waits for the rest of the replay).
pub fn initial_sync_completion(
    src: &dyn CephOps,
    dst: &dyn CephOps,
    image: &ImageSpec,
    replica: &ImageSpec,
) -> Result<Completion, OpsError> {
    if !dst.image_exists(replica)? {
        return Ok(Completion::Pending {
            reason: "rbd-mirror has not created the replica yet".into(),
            percent: None,
        });
    }
    let positions = src.journal_positions(image)?;
    match journal_initial_sync_done(&positions) {
        Completion::Complete => {
            let id = dst.stat(replica)?.id;
            Ok(journal_replica_matches(&positions, &id))
        }
        pending => Ok(pending),
    }
}

/// Journal mode: every registered peer has finished its initial image sync.
pub fn journal_initial_sync_done(p: &JournalPositions) -> Completion {
    if p.peers.is_empty() {
        return Completion::Pending {
            reason: "no rbd-mirror peer has registered with the source journal yet".into(),
            percent: None,
        };
    }
    match p.peers.iter().find(|c| c.syncing != Some(false)) {
        Some(peer) => Completion::Pending {
            reason: format!("peer {} is still in its initial image sync", peer.id),
            percent: None,
        },
        None => Completion::Complete,
    }
}

/// Snapshot mode completion: compare the source's and the replica's mirror snapshots.
/// `objects` is the number of objects of the image, for percent.
pub fn snapshot_completion(
    source: &[SnapshotInfo],
    replica: &[SnapshotInfo],
    objects: u64,
) -> Completion {
    let Some(want) = newest_primary_mirror_snapshot(source) else {
        return Completion::Pending {
            reason: "the source has no complete primary mirror snapshot yet".into(),
            percent: None,
        };
    };
    let mut percent = None;
    for s in replica {
        if let SnapshotNamespace::Mirror {
            primary: false,
            complete,
            primary_snap_id,
            last_copied_object_number,
        } = s.namespace
        {
            if primary_snap_id == want {
                if complete {
                    return Completion::Complete;
                }
                if objects > 0 {
                    percent =
                        Some((100.0 * last_copied_object_number as f64 / objects as f64).min(99.9));
                }
            }
        }
    }
    Completion::Pending {
        reason: format!("the replica has not completed mirror snapshot {want} yet"),
        percent,
    }
}

/// Journal mode completion from the source journal's commit positions.
pub fn journal_completion(p: &JournalPositions) -> Completion {
    if p.peers.is_empty() {
        return Completion::Pending {
            reason: "no rbd-mirror peer has registered with the source journal yet".into(),
            percent: None,
        };
    }
    if let Some(peer) = p.peers.iter().find(|c| c.syncing != Some(false)) {
        return Completion::Pending {
            reason: format!("peer {} is still in its initial image sync", peer.id),
            percent: None,
        };
    }
    let same = |a: &Option<crate::ops::JournalPosition>| match (a, &p.master) {
        (None, None) => true,
        (Some(a), Some(m)) => a.tag_tid == m.tag_tid && a.entry_tid == m.entry_tid,
        _ => false,
    };
    match p.peers.iter().find(|c| !same(&c.position)) {
        Some(peer) => Completion::Pending {
            reason: format!(
                "peer {} has not replayed up to the master position yet",
                peer.id
            ),
            percent: None,
        },
        None => Completion::Complete,
    }
}

/// A complete journal position only counts for the replica that exists now: every peer that
/// names the replica image it syncs into must name `replica_id`.
pub fn journal_replica_matches(p: &JournalPositions, replica_id: &str) -> Completion {
    match p.peers.iter().find(|c| {
        c.replica_image_id
            .as_deref()
            .is_some_and(|id| id != replica_id)
    }) {
        Some(peer) => Completion::Pending {
            reason: format!(
                "peer {} synced replica image id {}, but the replica now has id {replica_id} (recreated by rbd-mirror); waiting for its new sync",
                peer.id,
                peer.replica_image_id.as_deref().unwrap_or_default()
            ),
            percent: None,
        },
        None => Completion::Complete,
    }
}

/// Why waiting for the replica failed.
#[derive(Debug, Error)]
pub enum WaitError {
    /// No progress for too long.
    #[error("replication of {image} made no progress for {seconds} s (last: {last}); check the rbd-mirror daemon log on {cluster}, then re-run to continue")]
    Stalled {
        /// Source image.
        image: String,
        /// Destination cluster.
        cluster: String,
        /// Stall limit.
        seconds: u64,
        /// Last observed state.
        last: String,
    },
    /// No healthy rbd-mirror daemon.
    #[error("no healthy rbd-mirror daemon on {cluster}: {detail}; start it (e.g. systemctl start ceph-rbd-mirror@ID) and re-run to continue")]
    DaemonDown {
        /// Destination cluster.
        cluster: String,
        /// What the service map says.
        detail: String,
    },
    /// Every rbd-mirror daemon of the destination is down or stopped sending beacons.
    #[error("rbd-mirror on {cluster} is down or not responding: {detail}; check the daemon (its log, or e.g. systemctl status ceph-rbd-mirror@ID) and re-run to continue (or pass --on-daemon-down wait to keep waiting for it)")]
    DaemonNotResponding {
        /// Destination cluster.
        cluster: String,
        /// Each daemon and what is wrong with it.
        detail: String,
    },
    /// rbd-mirror reports an error for the image.
    #[error("rbd-mirror on {cluster} reports an error for {image}: {description}")]
    ReplicaError {
        /// Destination cluster.
        cluster: String,
        /// Image.
        image: String,
        /// Its description.
        description: String,
    },
    /// Overall deadline passed.
    #[error("replica of {image} not complete after {seconds} s ({last}); re-run to keep waiting")]
    Timeout {
        /// Image.
        image: String,
        /// Deadline.
        seconds: u64,
        /// Last observed state.
        last: String,
    },
    /// A Ceph call failed.
    #[error("while waiting for the replica of {image}: {source}{}", crate::ops::timeout_hint(.source, .clusters))]
    Ops {
        /// Image.
        image: String,
        /// The clusters asked (`site-a or site-b`).
        clusters: String,
        /// Failure.
        #[source]
        source: OpsError,
    },
}

/// What the wait does while no rbd-mirror daemon of the destination responds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDaemonDown {
    /// Stop with [`WaitError::DaemonNotResponding`] (or [`WaitError::DaemonDown`]); a re-run
    /// continues once the daemon is back.
    #[default]
    Fail,
    /// Keep waiting, saying why in the progress; the stall limit still applies.
    Wait,
}

/// Remembers each daemon's last beacon and since when it has not changed, to tell a daemon
/// that was killed or hangs (its beacon stands still) from one that runs.
///
/// Daemons are told apart by their instance (service map key), not by their id: after a
/// kill and a restart the map lists the killed instance for a minute beside the new one,
/// both with the same id. Keyed by id, their two beacons took turns in one slot, each look
/// restarted the clock, and a new instance that hung then was not found until the killed
/// one left the map (seen: 17-35 s instead of 6).
///
/// A beacon's silence counts from when the manager got it, not from the look that first saw
/// it (up to a look's interval later, more on a busy machine): its `last_beacon` time,
/// moved onto this host's clock by the smallest delay seen between a new beacon and the look
/// that saw it (which absorbs a skew between the clocks), and kept between that look and the
/// one before it (so a jump of the manager's clock cannot make a daemon silent early by more
/// than one interval). A beacon whose time cannot be read counts from the look that saw it.
#[derive(Debug, Default)]
pub struct BeaconWatch {
    seen: BTreeMap<String, Seen>,
    /// This watch's start: times are kept as seconds from it.
    origin: Option<Instant>,
    /// The last look.
    last_look: Option<Instant>,
    /// The smallest (look - beacon time) seen for a new beacon, in seconds from `origin`.
    min_delay: Option<f64>,
}

/// What a [`BeaconWatch`] knows of one daemon's current beacon.
#[derive(Debug)]
struct Seen {
    beacon: String,
    /// The look that first saw it.
    first_seen: Instant,
    /// The look before (the beacon came after it); `None` for the first sighting.
    look_before: Option<Instant>,
    /// Its time, from the manager (seconds since the epoch), when readable.
    time: Option<f64>,
}

/// The key a daemon is watched by: its instance, or its id when the instance is unknown.
fn daemon_key(d: &MirrorDaemon) -> &str {
    if d.instance.is_empty() {
        &d.id
    } else {
        &d.instance
    }
}

/// Seconds since the epoch of a Ceph timestamp as `service status` prints it
/// (`2026-12-04T14:20:58.123456+0000`; also a space for `T`, `Z` or `+HH:MM` as the zone, or
/// no fraction); `None` when it is not one.
pub fn ceph_time_seconds(s: &str) -> Option<f64> {
    let num = |a: usize, b: usize| -> Option<i64> {
        let t = s.get(a..b)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (h, mi, sec) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut frac = 0.0;
    if let Some(r) = rest.strip_prefix('.') {
        let digits = r.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        frac = format!("0.{}", &r[..digits]).parse().ok()?;
        rest = &r[digits..];
    }
    let zone: i64 = match rest {
        "" | "Z" => 0,
        z if z.len() == 5 || (z.len() == 6 && z.as_bytes()[3] == b':') => {
            let sign = match z.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let hh: i64 = z.get(1..3)?.parse().ok()?;
            let mm: i64 = z.get(z.len() - 2..)?.parse().ok()?;
            sign * (hh * 3600 + mm * 60)
        }
        _ => return None,
    };
    // days from 1970-01-01 of the civil date (H. Hinnant's days_from_civil)
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + mi * 60 + sec - zone) as f64 + frac)
}

impl BeaconWatch {
    /// Record the daemons as the service map lists them `now`; returns the keys
    /// ([`daemon_key`]) of those whose beacon has not changed for at least `after`, with for
    /// how long (see the type's doc for when a silence starts). A daemon seen for the first
    /// time counts from now; one without a known beacon is never judged.
    pub fn observe(
        &mut self,
        now: Instant,
        daemons: &[MirrorDaemon],
        after: Duration,
    ) -> Vec<(String, Duration)> {
        let origin = *self.origin.get_or_insert(now);
        let at = |t: Instant| t.saturating_duration_since(origin).as_secs_f64();
        let look_before = self.last_look.replace(now);
        let mut silent = Vec::new();
        for d in daemons {
            let Some(beacon) = &d.last_beacon else {
                continue;
            };
            let key = daemon_key(d);
            let new = |look_before| Seen {
                beacon: beacon.clone(),
                first_seen: now,
                look_before,
                time: ceph_time_seconds(beacon),
            };
            match self.seen.get(key) {
                None => {
                    self.seen.insert(key.to_string(), new(None));
                }
                Some(s) if s.beacon != *beacon => {
                    let s = new(look_before);
                    if let Some(t) = s.time {
                        let delay = at(now) - t;
                        self.min_delay = Some(self.min_delay.map_or(delay, |m| m.min(delay)));
                    }
                    self.seen.insert(key.to_string(), s);
                }
                Some(_) => {}
            }
            let Some(seen) = self.seen.get(key) else {
                continue;
            };
            let since = match (seen.time, self.min_delay, seen.look_before) {
                (Some(t), Some(delay), Some(before)) => {
                    let (lo, hi) = (at(before), at(seen.first_seen));
                    let sent = (t + delay).clamp(lo, hi);
                    origin + Duration::from_secs_f64(sent)
                }
                _ => seen.first_seen,
            };
            let quiet = now.saturating_duration_since(since);
            if quiet >= after {
                silent.push((key.to_string(), quiet));
            }
        }
        silent
    }
}

/// Why no daemon serves the replica, or `None` when one runs: each daemon with what is
/// wrong (unhealthy in the service map, or silent for how long). A daemon is named by its
/// id, and by its instance too when another listed daemon has the same id.
fn daemons_down(daemons: &[MirrorDaemon], silent: &[(String, Duration)]) -> Option<String> {
    if daemons.is_empty() {
        return Some("the service map lists no rbd-mirror daemon".to_string());
    }
    let quiet = |d: &MirrorDaemon| {
        silent
            .iter()
            .find(|(key, _)| key == daemon_key(d))
            .map(|(_, q)| *q)
    };
    if daemons.iter().any(|d| d.healthy && quiet(d).is_none()) {
        return None;
    }
    let name = |d: &MirrorDaemon| {
        let shared_id = daemons.iter().filter(|o| o.id == d.id).count() > 1;
        if shared_id && !d.instance.is_empty() {
            format!("{} (instance {})", d.id, d.instance)
        } else {
            d.id.clone()
        }
    };
    Some(
        daemons
            .iter()
            .map(|d| match quiet(d) {
                Some(q) => format!(
                    "{}: no beacon for {} s (killed or hung)",
                    name(d),
                    q.as_secs()
                ),
                None => format!("{}: {}", name(d), d.detail),
            })
            .collect::<Vec<_>>()
            .join("; "),
    )
}

/// The destination's rbd-mirror daemons watched outside the wait for the replica (the
/// promote after the demotion, a live migration's wait for its cutover): both need the
/// daemon, and both must say so soon when it is gone, as the wait does.
#[derive(Debug, Default)]
pub(crate) struct DaemonWatch {
    beacons: BeaconWatch,
    last: Option<Instant>,
    /// Why no daemon serves, as of the last look (only with `OnDaemonDown::Wait`).
    note: Option<String>,
    /// Whether the loss was told the user already (until a daemon serves again).
    pub(crate) told: bool,
}

impl DaemonWatch {
    /// Why no daemon serves, as of the last look, while the options say wait for it.
    pub(crate) fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    /// Look at the daemons when `opts.health_every` has passed since the last look:
    /// `Ok(Some(why))` when this look found none serving and `opts.on_daemon_down` says
    /// wait (also kept as [`Self::note`]), the error when it says fail, else `Ok(None)`.
    pub(crate) async fn check(
        &mut self,
        dst: &Arc<dyn CephOps>,
        pool: &crate::spec::PoolSpec,
        image: &ImageSpec,
        opts: &WaitOptions,
    ) -> Result<Option<String>, WaitError> {
        if self.last.is_some_and(|t| t.elapsed() < opts.health_every) {
            return Ok(None);
        }
        self.last = Some(Instant::now());
        let (d, p) = (dst.clone(), pool.clone());
        let daemons = blocking(image, dst.name(), move || d.mirror_daemons(&p)).await?;
        let silent = self
            .beacons
            .observe(Instant::now(), &daemons, opts.daemon_silent_after);
        self.note = None;
        let Some(detail) = daemons_down(&daemons, &silent) else {
            self.told = false;
            return Ok(None);
        };
        let cluster = dst.name().to_string();
        match opts.on_daemon_down {
            OnDaemonDown::Fail if silent.is_empty() => {
                Err(WaitError::DaemonDown { cluster, detail })
            }
            OnDaemonDown::Fail => Err(WaitError::DaemonNotResponding { cluster, detail }),
            OnDaemonDown::Wait => {
                self.note = Some(format!(
                    "waiting for rbd-mirror on {cluster}, down or not responding ({detail})"
                ));
                Ok(self.note.clone())
            }
        }
    }
}

fn default_silent_after() -> Duration {
    Duration::from_secs(6)
}

/// Knobs of the wait.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WaitOptions {
    /// Poll interval of the exact signal.
    pub poll: Duration,
    /// No progress for this long is a stall.
    pub stall_after: Duration,
    /// Give up after this long in total.
    pub deadline: Duration,
    /// How often to check rbd-mirror daemon health and read the status.
    pub health_every: Duration,
    /// A daemon whose beacon has not changed for this long is taken as killed or hung
    /// (it beacons every 1-2 s).
    #[serde(default = "default_silent_after")]
    pub daemon_silent_after: Duration,
    /// What to do while no daemon responds.
    #[serde(default)]
    pub on_daemon_down: OnDaemonDown,
    /// Journal mode: done once rbd-mirror's initial sync is, not when the replica caught
    /// the primary: for a handover by clone, whose promotion waits for the rest of the
    /// replay (and a live source keeps changing until its cutover anyway).
    #[serde(default)]
    pub initial_sync_only: bool,
    /// The cutover's promote wait gives up once rbd-mirror has reported no replay
    /// progress for this long (rbd-mirror rewrites a replaying image's status every 30 s
    /// by default, so this should be a few of those). A backlog that is being replayed
    /// is waited for, however long.
    #[serde(default = "default_promote_patience")]
    pub promote_patience: Duration,
    /// An abort of a journal-mode migration keeps looking this long for a sync point
    /// rbd-mirror makes late, after the source's mirroring is off (see
    /// [`crate::abort::AbortOptions::sync_point_watch`]); nothing for a run.
    #[serde(default)]
    pub sync_point_watch: Duration,
}

fn default_promote_patience() -> Duration {
    Duration::from_secs(120)
}

impl Default for WaitOptions {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(250),
            stall_after: Duration::from_secs(300),
            deadline: Duration::from_secs(24 * 3600),
            health_every: Duration::from_secs(2),
            daemon_silent_after: default_silent_after(),
            on_daemon_down: OnDaemonDown::Fail,
            initial_sync_only: false,
            promote_patience: default_promote_patience(),
            sync_point_watch: Duration::ZERO,
        }
    }
}

async fn blocking<T: Send + 'static>(
    image: &ImageSpec,
    clusters: &str,
    f: impl FnOnce() -> Result<T, OpsError> + Send + 'static,
) -> Result<T, WaitError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| WaitError::Ops {
            image: image.to_string(),
            clusters: clusters.to_string(),
            source: OpsError::new(crate::ops::ErrorKind::Other, "blocking task", e.to_string()),
        })?
        .map_err(|source| WaitError::Ops {
            image: image.to_string(),
            clusters: clusters.to_string(),
            source,
        })
}

/// Wait until the replica of `image` (named `replica` on `dst`) is complete.
///
/// Cancel safety: read only (it polls); dropping it at any await changes nothing.
#[allow(clippy::too_many_arguments)] // each is a distinct input of the wait; a struct adds nothing
pub async fn wait_for_replica(
    src: Arc<dyn CephOps>,
    dst: Arc<dyn CephOps>,
    image: &ImageSpec,
    replica: &ImageSpec,
    mode: MirrorImageMode,
    objects: u64,
    opts: &WaitOptions,
    events: &dyn EventSink,
) -> Result<(), WaitError> {
    let start = Instant::now();
    let mut last_change = Instant::now();
    let mut last_signature = String::new();
    let mut last_health = Instant::now() - opts.health_every;
    let mut status_note = String::new();
    let mut beacons = BeaconWatch::default();
    let clusters = format!("{} or {}", src.name(), dst.name());
    // why the wait goes on without a daemon (with OnDaemonDown::Wait); not part of the
    // progress signature, so a daemon that stays away still ends in the stall limit
    let mut daemon_note = String::new();
    let mut daemon_note_shown = String::new();
    // progress events: on change, else at most once per second (polls run at 4 Hz)
    let mut last_emit: Option<(Instant, String)> = None;
    loop {
        // the exact signal, and beside it (not after it: on a busy machine the exact calls
        // are slow, and a look at the daemons behind them comes late) the daemons' health
        // and the lagging status, less often
        let exact = {
            let (s, d, i, r) = (src.clone(), dst.clone(), image.clone(), replica.clone());
            let initial_only = opts.initial_sync_only;
            blocking(image, &clusters, move || {
                if initial_only && mode == MirrorImageMode::Journal {
                    initial_sync_completion(s.as_ref(), d.as_ref(), &i, &r)
                } else {
                    exact_completion(s.as_ref(), d.as_ref(), &i, &r, mode, objects)
                }
            })
        };
        let health_due = last_health.elapsed() >= opts.health_every;
        if health_due {
            last_health = Instant::now();
        }
        let health = async {
            if !health_due {
                return Ok(None);
            }
            let (d, r) = (dst.clone(), replica.clone());
            // when the manager answered: the beacons are as of then
            let (daemons, looked) = blocking(image, dst.name(), move || {
                Ok((d.mirror_daemons(&r.pool)?, Instant::now()))
            })
            .await?;
            let (d, r) = (dst.clone(), replica.clone());
            let status = blocking(image, dst.name(), move || {
                Ok(d.mirror_status(&r).ok().flatten())
            })
            .await?;
            // the source answers too: until the replica exists nothing else reads it, and
            // an unreachable source would only show as a stall minutes later
            let (s, i) = (src.clone(), image.clone());
            blocking(image, src.name(), move || s.stat(&i).map(|_| ())).await?;
            Ok::<_, WaitError>(Some((daemons, looked, status)))
        };
        let (completion, health) = tokio::join!(exact, health);
        let (reason, percent) = match completion? {
            Completion::Complete => {
                events.emit(Event::Progress(ProgressInfo::done(
                    "sync",
                    "replica complete",
                )));
                return Ok(());
            }
            Completion::Pending { reason, percent } => (reason, percent),
        };
        let mut status_percent = None;
        let mut rate = None;
        if let Some((daemons, looked, status)) = health? {
            let silent = beacons.observe(looked, &daemons, opts.daemon_silent_after);
            daemon_note.clear();
            if let Some(detail) = daemons_down(&daemons, &silent) {
                let cluster = dst.name().to_string();
                match opts.on_daemon_down {
                    OnDaemonDown::Fail if silent.is_empty() => {
                        return Err(WaitError::DaemonDown { cluster, detail })
                    }
                    OnDaemonDown::Fail => {
                        return Err(WaitError::DaemonNotResponding { cluster, detail })
                    }
                    OnDaemonDown::Wait => {
                        daemon_note = format!(
                            "; waiting for rbd-mirror on {cluster}, down or not responding ({detail})"
                        );
                    }
                }
            }
            if let Some(st) = status {
                if let Health::Error(description) = st.health() {
                    return Err(WaitError::ReplicaError {
                        cluster: dst.name().to_string(),
                        image: image.to_string(),
                        description,
                    });
                }
                let p = st.progress();
                status_percent = p.percent();
                rate = p.bytes_per_second();
                status_note = match p {
                    SyncProgress::Unknown => String::new(),
                    other => format!("; rbd-mirror: {}", describe(&other)),
                };
            }
        }
        let percent = percent.or(status_percent);
        let signature = format!("{reason}|{percent:?}|{status_note}");
        if signature != last_signature {
            last_signature = signature;
            last_change = Instant::now();
        } else if last_change.elapsed() >= opts.stall_after {
            return Err(WaitError::Stalled {
                image: image.to_string(),
                cluster: dst.name().to_string(),
                seconds: opts.stall_after.as_secs(),
                last: format!("{reason}{daemon_note}"),
            });
        }
        if start.elapsed() >= opts.deadline {
            return Err(WaitError::Timeout {
                image: image.to_string(),
                seconds: opts.deadline.as_secs(),
                last: reason,
            });
        }
        // also at once when the daemon goes away or comes back
        let due = match &last_emit {
            None => true,
            Some((at, sig)) => {
                *sig != last_signature
                    || at.elapsed() >= Duration::from_secs(1)
                    || daemon_note.is_empty() != daemon_note_shown.is_empty()
            }
        };
        daemon_note_shown.clone_from(&daemon_note);
        if due {
            last_emit = Some((Instant::now(), last_signature.clone()));
            events.emit(Event::Progress(ProgressInfo {
                phase: "sync".into(),
                percent,
                bytes_per_second: rate,
                eta_seconds: None,
                detail: format!("{reason}{status_note}{daemon_note}"),
            }));
        }
        tokio::time::sleep(opts.poll).await;
    }
}

fn describe(p: &SyncProgress) -> String {
    match p {
        SyncProgress::Unknown => "no status yet".into(),
        SyncProgress::Bootstrapping { step, .. } => format!("initial sync ({step})"),
        SyncProgress::JournalReplay {
            entries_behind_primary,
            ..
        } => format!("replaying, {entries_behind_primary} entries behind"),
        SyncProgress::SnapshotSyncing { percent, .. } => match percent {
            Some(p) => format!("syncing snapshot {p:.0}%"),
            None => "syncing snapshot".into(),
        },
        SyncProgress::SnapshotIdle { .. } => "idle".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{JournalPeer, JournalPosition};

    fn mirror(id: u64, primary: bool, complete: bool, psid: u64, copied: u64) -> SnapshotInfo {
        SnapshotInfo {
            id,
            name: format!(".mirror.{id}"),
            namespace: SnapshotNamespace::Mirror {
                primary,
                complete,
                primary_snap_id: psid,
                last_copied_object_number: copied,
            },
            protected: false,
        }
    }

    fn daemon(id: &str, healthy: bool, beacon: Option<&str>) -> MirrorDaemon {
        MirrorDaemon {
            id: id.into(),
            instance: String::new(),
            healthy,
            detail: if healthy { "ok" } else { "not reporting" }.into(),
            last_beacon: beacon.map(str::to_string),
        }
    }

    #[test]
    fn a_daemon_is_silent_once_its_beacon_stands_still_long_enough() {
        let t0 = Instant::now();
        let after = Duration::from_secs(6);
        let mut w = BeaconWatch::default();
        let s = |t: u64| t0 + Duration::from_secs(t);
        assert!(w
            .observe(s(0), &[daemon("b", true, Some("1"))], after)
            .is_empty());
        assert!(w
            .observe(s(5), &[daemon("b", true, Some("1"))], after)
            .is_empty());
        // a new beacon restarts the clock
        assert!(w
            .observe(s(6), &[daemon("b", true, Some("2"))], after)
            .is_empty());
        assert!(w
            .observe(s(11), &[daemon("b", true, Some("2"))], after)
            .is_empty());
        let silent = w.observe(s(12), &[daemon("b", true, Some("2"))], after);
        assert_eq!(silent, vec![("b".to_string(), Duration::from_secs(6))]);
        // no known beacon: never judged
        assert!(w
            .observe(s(60), &[daemon("c", true, None)], after)
            .is_empty());
    }

    fn instance(gid: &str, beacon: &str) -> MirrorDaemon {
        MirrorDaemon {
            instance: gid.into(),
            ..daemon("b", true, Some(beacon))
        }
    }

    #[test]
    fn a_restarted_daemon_that_hangs_is_silent_while_the_killed_one_is_still_listed() {
        // the killed instance 4100 stays listed (beacon "k") beside its restarted successor
        // 4200, same id; 4200 beacons, then hangs at "n2"
        let t0 = Instant::now();
        let after = Duration::from_secs(6);
        let s = |t: u64| t0 + Duration::from_secs(t);
        let mut w = BeaconWatch::default();
        let listed = |new: &str| [instance("4100", "k"), instance("4200", new)];
        let silent = w.observe(s(0), &listed("n1"), after);
        assert!(silent.is_empty());
        let silent = w.observe(s(2), &listed("n2"), after);
        assert!(silent.is_empty());
        // the killed one is silent, the new one serves
        let silent = w.observe(s(6), &listed("n2"), after);
        assert_eq!(silent, vec![("4100".to_string(), Duration::from_secs(6))]);
        assert_eq!(daemons_down(&listed("n2"), &silent), None);
        // 6 s after its last beacon the new one is silent too: nothing serves
        let silent = w.observe(s(8), &listed("n2"), after);
        assert_eq!(silent.len(), 2, "{silent:?}");
        assert_eq!(
            daemons_down(&listed("n2"), &silent).as_deref(),
            Some(
                "b (instance 4100): no beacon for 8 s (killed or hung); \
                 b (instance 4200): no beacon for 6 s (killed or hung)"
            )
        );
    }

    #[test]
    fn ceph_timestamps_are_read_as_seconds_since_the_epoch() {
        assert_eq!(
            ceph_time_seconds("1970-01-01T00:00:00.000000+0000"),
            Some(0.0)
        );
        assert_eq!(
            ceph_time_seconds("2026-12-04T14:20:58.250000+0000"),
            Some(1_796_394_058.25)
        );
        // the same instant written in another zone, with a space, without a fraction
        assert_eq!(
            ceph_time_seconds("2026-12-04 16:20:58+02:00"),
            Some(1_796_394_058.0)
        );
        assert_eq!(
            ceph_time_seconds("2024-02-29T00:00:00Z"),
            Some(1_709_164_800.0)
        );
        for bad in [
            "beacon-3",
            "",
            "2026-13-04T14:20:58",
            "2026-12-04T14:20:58.x",
            "2026-12-04T14:20:58+0x00",
        ] {
            assert_eq!(ceph_time_seconds(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_silence_counts_from_the_beacons_own_time_not_from_the_late_look_that_saw_it() {
        // the manager's clock runs 100 s ahead of ours; looks every 3 s (a busy machine)
        let t0 = Instant::now();
        let after = Duration::from_secs(6);
        let at = |t: f64| t0 + Duration::from_secs_f64(t);
        let stamp = |t: f64| {
            let secs = 1_796_394_000.0 + 100.0 + t;
            let whole = secs.floor() as i64;
            let (m, s) = ((whole / 60) % 60, whole % 60);
            let h = (whole / 3600) % 24;
            format!(
                "2026-12-04T{h:02}:{m:02}:{s:02}.{:06}+0000",
                ((secs - secs.floor()) * 1e6).round() as u64
            )
        };
        let mut w = BeaconWatch::default();
        let d = |t: f64| [daemon("b", true, Some(&stamp(t)))];
        assert!(w.observe(at(0.0), &d(-0.5), after).is_empty());
        // a beacon sent at 2.8 s seen at 3 s: the smallest delay, 0.2 s
        assert!(w.observe(at(3.0), &d(2.8), after).is_empty());
        // the daemon's last beacon, at 3.1 s, seen only at 6 s
        assert!(w.observe(at(6.0), &d(3.1), after).is_empty());
        // silent since 3.3 s (3.1 + 0.2), not since the look at 6 s: 6.7 s at 10 s
        let silent = w.observe(at(10.0), &d(3.1), after);
        assert_eq!(silent.len(), 1, "{silent:?}");
        assert!((silent[0].1.as_secs_f64() - 6.7).abs() < 0.01, "{silent:?}");
        // counted from the look, it would have been 4 s: not silent yet
    }

    #[test]
    fn a_beacon_time_that_jumped_ahead_cannot_make_a_daemon_silent_before_the_look_before_it() {
        let t0 = Instant::now();
        let after = Duration::from_secs(6);
        let at = |t: u64| t0 + Duration::from_secs(t);
        let mut w = BeaconWatch::default();
        let d = |stamp: &str| [daemon("b", true, Some(stamp))];
        w.observe(at(0), &d("2026-12-04T14:00:00.000000+0000"), after);
        w.observe(at(2), &d("2026-12-04T14:00:01.000000+0000"), after);
        // the manager's clock jumped an hour ahead: a tiny delay is learnt
        w.observe(at(4), &d("2026-12-04T15:00:03.900000+0000"), after);
        // a beacon stamped earlier again: estimated an hour back, but it came after the look
        // at 4 s, so its silence counts from 4 s at the earliest
        w.observe(at(6), &d("2026-12-04T14:00:05.000000+0000"), after);
        assert!(w
            .observe(at(9), &d("2026-12-04T14:00:05.000000+0000"), after)
            .is_empty());
        let silent = w.observe(at(10), &d("2026-12-04T14:00:05.000000+0000"), after);
        assert_eq!(silent, vec![("b".to_string(), Duration::from_secs(6))]);
    }

    #[test]
    fn the_replica_is_served_while_one_daemon_is_healthy_and_beaconing() {
        let quiet = vec![("b".to_string(), Duration::from_secs(9))];
        assert_eq!(
            daemons_down(&[], &[]).as_deref(),
            Some("the service map lists no rbd-mirror daemon")
        );
        assert_eq!(daemons_down(&[daemon("b", true, Some("1"))], &[]), None);
        assert_eq!(
            daemons_down(&[daemon("b", true, Some("1"))], &quiet).as_deref(),
            Some("b: no beacon for 9 s (killed or hung)")
        );
        assert_eq!(
            daemons_down(&[daemon("b", false, None)], &[]).as_deref(),
            Some("b: not reporting")
        );
        // a second daemon that runs keeps the replica served
        assert_eq!(
            daemons_down(
                &[daemon("b", true, Some("1")), daemon("c", true, Some("7"))],
                &quiet
            ),
            None
        );
    }

    #[test]
    fn final_bytes_follow_the_replicas_snapshot_for_the_wanted_primary() {
        const OBJ: u64 = 4 << 20;
        // no snapshot for it yet (only an older one): nothing is final
        assert_eq!(
            replica_final_bytes(&[mirror(3, false, true, 1, 9)], 7, OBJ),
            0
        );
        // in progress: the objects copied in order
        let syncing = [mirror(3, false, true, 1, 9), mirror(8, false, false, 7, 5)];
        assert_eq!(replica_final_bytes(&syncing, 7, OBJ), 5 * OBJ);
        // complete: all of it, whatever the size
        let done = [mirror(8, false, true, 7, 5)];
        assert_eq!(replica_final_bytes(&done, 7, OBJ), u64::MAX);
        // a primary snapshot with the id is not the replica's
        assert_eq!(
            replica_final_bytes(&[mirror(7, true, true, 0, 0)], 7, OBJ),
            0
        );
    }

    #[test]
    fn snapshot_mode_needs_the_newest_primary_snapshot_complete_on_the_replica() {
        let src = vec![mirror(6, true, true, 0, 0), mirror(7, true, true, 0, 0)];
        // replica completed an older snapshot only
        let old = vec![mirror(3, false, true, 6, 256)];
        assert!(matches!(
            snapshot_completion(&src, &old, 256),
            Completion::Pending { .. }
        ));
        // syncing the newest: percent from last_copied_object_number
        let half = vec![
            mirror(3, false, true, 6, 256),
            mirror(4, false, false, 7, 128),
        ];
        match snapshot_completion(&src, &half, 256) {
            Completion::Pending { percent, .. } => assert_eq!(percent, Some(50.0)),
            other => panic!("{other:?}"),
        }
        let done = vec![mirror(4, false, true, 7, 256)];
        assert_eq!(snapshot_completion(&src, &done, 256), Completion::Complete);
        // no primary snapshot at all yet
        assert!(matches!(
            snapshot_completion(&[], &done, 256),
            Completion::Pending { .. }
        ));
    }

    #[test]
    fn journal_mode_needs_sync_done_and_positions_equal() {
        let pos = |e| {
            Some(JournalPosition {
                object_number: 1,
                tag_tid: 2,
                entry_tid: e,
            })
        };
        let peer = |syncing, e| JournalPeer {
            id: "peer".into(),
            position: pos(e),
            syncing,
            replica_image_id: None,
        };
        let mut p = JournalPositions {
            master: pos(8193),
            peers: vec![],
        };
        assert!(matches!(journal_completion(&p), Completion::Pending { .. }));
        p.peers = vec![peer(Some(true), 8193)];
        assert!(matches!(journal_completion(&p), Completion::Pending { .. }));
        p.peers = vec![peer(Some(false), 8190)];
        assert!(matches!(journal_completion(&p), Completion::Pending { .. }));
        p.peers = vec![peer(None, 8193)];
        assert!(matches!(journal_completion(&p), Completion::Pending { .. }));
        p.peers = vec![peer(Some(false), 8193)];
        assert_eq!(journal_completion(&p), Completion::Complete);
        // empty journal (cold image): both positions unset counts once sync is over
        let cold = JournalPositions {
            master: None,
            peers: vec![JournalPeer {
                id: "peer".into(),
                position: None,
                syncing: Some(false),
                replica_image_id: None,
            }],
        };
        assert_eq!(journal_completion(&cold), Completion::Complete);
    }

    #[test]
    fn a_complete_position_of_a_recreated_replica_is_pending() {
        let mut p = JournalPositions {
            master: None,
            peers: vec![JournalPeer {
                id: "peer".into(),
                position: None,
                syncing: Some(false),
                replica_image_id: Some("10a2".into()),
            }],
        };
        assert_eq!(journal_replica_matches(&p, "10a2"), Completion::Complete);
        match journal_replica_matches(&p, "77f1") {
            Completion::Pending { reason, .. } => {
                assert!(reason.contains("recreated"), "{reason}")
            }
            c => panic!("{c:?}"),
        }
        p.peers[0].replica_image_id = None; // unknown: the position decides alone
        assert_eq!(journal_replica_matches(&p, "77f1"), Completion::Complete);
    }
}
