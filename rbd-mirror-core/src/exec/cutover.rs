//! The handover that needs no second full copy: once rbd-mirror's replica is in sync, the
//! source is demoted, the replica promoted as soon as it holds everything up to the demotion,
//! and a format-2 clone of a snapshot of it, under the copy name, is the destination image:
//! usable (and adoptable) about a second after the demotion, whatever the size. In a live
//! migration this waits first until the source has no user but rbd-mirror for a while (the
//! instance was shut off or the volume detached), or until an operator asks (`rbd-relay
//! cutover ID`). Off the critical path, the two immutable images (the demoted source and the
//! replica's snapshot) are compared by sha256, the clone is flattened, the source is put
//! back as it was (mirroring off, writable, its features) and the replica removed.
//!
//! Safety: the source is demoted only by [`Executor::demote_source`], and every failure
//! between the demotion and the handover rolls the cutover back
//! ([`Executor::roll_back_cutover`]): the clone this run made is removed, the replica
//! demoted again, the source promoted again. After the handover the source stays demoted
//! (read-only, its data untouched) until the verification proved the replica equal to it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::*;
use crate::error::{Error, Result};
use crate::event::{Event, ProgressInfo};
use crate::features::Features;
use crate::features::MirrorImageMode;
use crate::ops::{
    CephOps, ErrorKind, ImageUser, JournalPosition, MirrorImageState, OpsError, SnapshotNamespace,
};
use crate::plan::{Step, VolumeMigration};
use crate::spec::ImageSpec;
use crate::state::{Record, RunState};
use crate::status::{SiteStatus, SyncProgress};

/// What `rbd-relay cutover ID` leaves in the state directory for the running migration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CutoverRequest {
    /// Go ahead even though the source still has users (they were named to the operator).
    pub force: bool,
    /// The users the source had when the request was made.
    pub users: Vec<ImageUser>,
}

/// Where the cutover request of migration `id` lives (not `*.json`: `list` reads those).
pub fn cutover_request_path(state_dir: &Path, id: &str) -> PathBuf {
    state_dir.join(format!("{id}.cutover"))
}

/// The source's users other than rbd-mirror: its watchers, without the watch the
/// destination's rbd-mirror keeps on a primary image in snapshot mode (known by the cephx
/// name the destination's peer uses to reach the source).
pub(crate) fn instance_users(
    src: &dyn CephOps,
    dst: &dyn CephOps,
    m: &VolumeMigration,
) -> std::result::Result<Vec<ImageUser>, OpsError> {
    let mirror_clients: Vec<String> = dst
        .mirror_peers(&m.image.pool)?
        .into_iter()
        .map(|p| p.client_name)
        .filter(|c| !c.is_empty())
        .collect();
    Ok(src
        .image_users(&m.image)?
        .into_iter()
        .filter(|u| {
            !u.entity
                .as_ref()
                .is_some_and(|e| mirror_clients.iter().any(|c| c == e))
        })
        .collect())
}

fn describe_users(users: &[ImageUser]) -> String {
    users
        .iter()
        .map(ImageUser::describe)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Ask the running live migration `id` to cut over now (`rbd-relay cutover ID`). Refused,
/// naming them, while the source has users other than rbd-mirror, unless `force`. Changes
/// nothing but the request file; the migration's run does the cutover.
///
/// Cancel safety: safe to drop at any await. It writes only the request file, atomically (temp
/// file and rename), as its last act: a dropped call has either asked for the cutover or
/// changed nothing; call it again to be sure.
pub async fn request_cutover(
    state_dir: &Path,
    id: &str,
    src: Arc<dyn CephOps>,
    dst: Arc<dyn CephOps>,
    force: bool,
) -> Result<CutoverRequest> {
    let state = crate::state::recorded(state_dir, id)?;
    let m = state.plan.migration.clone();
    let Some(wait_at) = state
        .plan
        .steps
        .iter()
        .position(|s| matches!(s, Step::WaitForCutover { .. }))
    else {
        return Err(Error::NotLive { id: id.to_string() });
    };
    if state.next_step > wait_at {
        return Err(Error::CutoverPassed {
            id: id.to_string(),
            step: state
                .plan
                .steps
                .get(state.next_step)
                .map_or("the end", Step::kind)
                .to_string(),
        });
    }
    let (s, d, mm) = (src.clone(), dst.clone(), m.clone());
    let users = on_ceph(
        "cutover",
        src.name().to_string(),
        m.image.to_string(),
        move || instance_users(s.as_ref(), d.as_ref(), &mm),
    )
    .await?;
    if !users.is_empty() && !force {
        return Err(Error::SourceInUse {
            cluster: src.name().to_string(),
            image: m.image.to_string(),
            users: describe_users(&users),
        });
    }
    let request = CutoverRequest { force, users };
    let path = cutover_request_path(state_dir, id);
    let bytes = serde_json::to_vec_pretty(&request).map_err(|e| Error::State {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    crate::state::write_file_atomically(&path, &bytes)?;
    Ok(request)
}

fn read_request(path: &Path) -> Option<CutoverRequest> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// How often the promote wait reads the replica's status and says how far it is.
const PROMOTE_REPORT_EVERY: Duration = Duration::from_secs(1);

/// How often the live wait looks at the source's users (and, in snapshot mode, at the
/// replica's progress): the idle time is counted from the first look without users.
const CUTOVER_POLL: Duration = Duration::from_millis(100);

/// Snapshot mode, live: the least time between two mirror snapshots while the source is in
/// use. With writes spread over the image a sync round touches most objects whatever the
/// delta, so back-to-back rounds (tried: a 1 s gap) leave a round in flight when the writer
/// stops, and the final delta waits for it: 11.1 and 12.9 s of downtime against 8.1 s for
/// one snapshot every 5 s and none at idle, at 4 GiB on a loaded bluestore pair; 5 s with
/// the idle snapshot: 3.2 s (one run each, noisy; docs/architecture.md, "The bench").
const MIN_SNAPSHOT_GAP: Duration = Duration::from_secs(5);

/// Snapshot mode, live: how long the source may stay idle and primary while the replica
/// syncs the last mirror snapshot before the demotion; past it the demotion goes ahead and
/// the promotion waits for the rest.
const CATCH_UP_PATIENCE: Duration = Duration::from_secs(60);

/// The live wait's mirror snapshots on the source (snapshot mode).
#[derive(Default)]
struct LagSnapshots {
    /// The newest one taken, until the replica completed it (or a later one).
    pending: Option<u64>,
    last_taken: Option<Instant>,
    /// A failure was reported already (reported once, never fatal).
    warned: bool,
}

impl LagSnapshots {
    /// Take a mirror snapshot of the source now. A failure only means a larger delta after
    /// the demotion: reported once, not fatal.
    async fn take(&mut self, ex: &Executor, m: &VolumeMigration) {
        let Ok(src) = ex.src("wait_for_cutover") else {
            return;
        };
        let (s, image) = (src.clone(), m.image.clone());
        let made = on_ceph(
            "wait_for_cutover",
            src.name().to_string(),
            m.image.to_string(),
            move || s.create_mirror_snapshot(&image),
        )
        .await;
        self.last_taken = Some(Instant::now());
        match made {
            Ok(id) => self.pending = Some(id),
            Err(e) => {
                if !self.warned {
                    self.warned = true;
                    ex.events.emit(Event::Warning {
                        message: format!("cannot take a mirror snapshot while waiting for the cutover ({e}); the cutover will sync a larger delta"),
                    });
                }
            }
        }
    }

    /// Forget the pending snapshot once the replica has a complete non-primary mirror
    /// snapshot of it or of a later one (ids only grow). A failed look changes nothing.
    async fn check_synced(&mut self, ex: &Executor, m: &VolumeMigration) {
        let (Some(want), Ok(dst)) = (self.pending, ex.dst("wait_for_cutover")) else {
            return;
        };
        let (d, replica) = (dst.clone(), m.replica());
        let snaps = tokio::task::spawn_blocking(move || d.snapshots(&replica))
            .await
            .ok()
            .and_then(|r| r.ok());
        let synced = snaps.is_some_and(|snaps| {
            snaps.iter().any(|s| {
                matches!(
                    s.namespace,
                    SnapshotNamespace::Mirror {
                        primary: false,
                        complete: true,
                        primary_snap_id,
                        ..
                    } if primary_snap_id >= want
                )
            })
        });
        if synced {
            self.pending = None;
        }
    }
}

/// How far behind the replica is, from its mirror status, and what a shutdown now would
/// cost: the time rbd-mirror needs to replay (journal) or sync (snapshot) what it has not
/// yet, at the rate it reports, after `--idle-for`; the demotion, promotion and clone add
/// about a second. The operator chooses when to stop the instance from this. rbd-mirror
/// refreshes its status every few seconds (30 s by default), so this is as old as that.
pub(crate) fn describe_lag(progress: Option<&SyncProgress>, idle_for: Duration) -> String {
    let cost = |catch_up: f64| {
        format!(
            "a shutdown now would cost about {:.0} s of downtime (--idle-for {:.0} s + {catch_up:.0} s to catch up)",
            idle_for.as_secs_f64() + catch_up,
            idle_for.as_secs_f64()
        )
    };
    let Some(progress) = progress else {
        return "lag unknown".to_string();
    };
    let eta = progress.eta_seconds();
    match progress {
        SyncProgress::JournalReplay {
            entries_behind_primary: 0,
            ..
        } => format!("0 journal entries behind; {}", cost(0.0)),
        SyncProgress::JournalReplay {
            entries_behind_primary,
            entries_per_second,
            ..
        } => match eta {
            Some(eta) => format!(
                "{entries_behind_primary} journal entries behind, replayed at {entries_per_second:.0}/s; {}",
                cost(eta)
            ),
            None => format!("{entries_behind_primary} journal entries behind (no replay rate reported yet)"),
        },
        SyncProgress::SnapshotIdle {
            remote_snapshot_timestamp,
            local_snapshot_timestamp,
        } => format!(
            "{} s behind",
            (remote_snapshot_timestamp - local_snapshot_timestamp).max(0)
        ),
        SyncProgress::SnapshotSyncing { percent, .. } => match eta {
            Some(eta) => format!(
                "syncing a snapshot delta ({:.0}%, about {eta:.0} s left)",
                percent.unwrap_or(0.0)
            ),
            None => format!("syncing a snapshot delta ({:.0}%)", percent.unwrap_or(0.0)),
        },
        _ => "lag unknown".to_string(),
    }
}

/// The replica's exact lag in journal mode, from the source journal's commit positions
/// (the master's, i.e. the image's own, and the replaying peer's): fresh at every look,
/// unlike the status rbd-mirror rewrites every 30 s. The replay rate is the peer's advance
/// between two looks.
#[derive(Debug, Default)]
pub(crate) struct JournalLag {
    last: Option<(Instant, JournalPosition)>,
}

impl JournalLag {
    /// The lag as a [`SyncProgress::JournalReplay`], or `None` when the two positions are
    /// in different tags (entry ids count within a tag), e.g. before the first replay.
    pub(crate) fn sample(
        &mut self,
        master: Option<JournalPosition>,
        peer: JournalPosition,
        now: Instant,
    ) -> Option<SyncProgress> {
        let behind = match master {
            None => 0,
            Some(m) if m.tag_tid == peer.tag_tid => m.entry_tid.saturating_sub(peer.entry_tid),
            Some(_) => return None,
        };
        let rate = match self.last {
            Some((then, p)) if p.tag_tid == peer.tag_tid && now > then => {
                peer.entry_tid.saturating_sub(p.entry_tid) as f64
                    / now.duration_since(then).as_secs_f64()
            }
            _ => 0.0,
        };
        self.last = Some((now, peer));
        Some(SyncProgress::JournalReplay {
            entries_behind_primary: behind,
            bytes_per_second: 0.0,
            positions_equal: behind == 0,
            entries_per_second: rate,
        })
    }
}

/// Seconds since a status was written (`last_update`, Unix seconds); `None` when unset.
fn status_age_s(last_update: i64) -> Option<u64> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs() as i64;
    (last_update > 0).then(|| (now - last_update).max(0) as u64)
}

/// How far the replica still is from the source's demotion, from its mirror status, for
/// the promote wait (the downtime): what is left to replay and, with a rate, how long.
pub(crate) fn describe_catch_up(progress: Option<&SyncProgress>) -> String {
    let Some(progress) = progress else {
        return "rbd-mirror has not reported the replica's replay".to_string();
    };
    let eta = progress.eta_seconds();
    match progress {
        SyncProgress::JournalReplay {
            entries_behind_primary,
            entries_per_second,
            ..
        } => match eta.filter(|_| *entries_behind_primary > 0) {
            Some(eta) => format!(
                "{entries_behind_primary} journal entries behind, replayed at {entries_per_second:.0}/s, about {eta:.0} s left"
            ),
            None => format!("{entries_behind_primary} journal entries behind"),
        },
        SyncProgress::SnapshotSyncing { percent, .. } => match eta {
            Some(eta) => format!(
                "syncing the last snapshot delta ({:.0}%, about {eta:.0} s left)",
                percent.unwrap_or(0.0)
            ),
            None => format!("syncing the last snapshot delta ({:.0}%)", percent.unwrap_or(0.0)),
        },
        SyncProgress::SnapshotIdle { .. } => "the last snapshot delta is not synced yet".to_string(),
        _ => "rbd-mirror has not reported the replica's replay".to_string(),
    }
}

/// Name of the snapshot of the promoted replica the clone hangs from.
pub(crate) fn handover_snapshot() -> &'static str {
    "rbd-relay-handover"
}

impl Executor {
    /// Live: wait, while rbd-mirror keeps replicating, until the source has had no user
    /// but rbd-mirror for `idle_for`, or an operator asked for the cutover.
    ///
    /// Snapshot mode keeps the replica's lag small meanwhile, so that little is left to
    /// sync after the demotion (the downtime): a new mirror snapshot every
    /// [`MIN_SNAPSHOT_GAP`], and only once the replica completed the previous one
    /// (rbd-mirror syncs them one after the other, so more would only queue); one more the
    /// moment the source is seen idle,
    /// whose sync overlaps `idle_for`; and once `idle_for` is over, while the source is
    /// still primary and idle, the wait goes on until the replica completed that last
    /// snapshot ([`CATCH_UP_PATIENCE`] at most). The demotion's own snapshot then has no
    /// delta left. Journal mode has nothing comparable to wait for: rbd-mirror replays the
    /// journal continuously, and the peer's commit position (the exact signal) moves only
    /// every `rbd_mirror_journal_commit_age`, which would add to the downtime.
    pub(super) async fn wait_for_cutover(
        &self,
        m: &VolumeMigration,
        file: &dyn Record,
        idle_for: Duration,
    ) -> Result<()> {
        let (src, dst) = (self.src("wait_for_cutover")?, self.dst("wait_for_cutover")?);
        let request_path = file
            .file()
            .and_then(Path::parent)
            .map(|d| cutover_request_path(d, &m.id()));
        let snapshot_mode = m.mode == crate::features::MirrorImageMode::Snapshot;
        let mut idle_since: Option<Instant> = None;
        let mut last_report = Instant::now() - Duration::from_secs(60);
        let mut snapshots = LagSnapshots::default();
        let mut catching_up_since: Option<Instant> = None;
        let started = Instant::now();
        let mut daemons = crate::wait::DaemonWatch::default();
        let mut journal_lag = JournalLag::default();
        loop {
            if let Some(r) = request_path.as_deref().and_then(read_request) {
                // consumed: a later fresh plan of the same migration must not find it
                if let Some(p) = &request_path {
                    let _ = std::fs::remove_file(p);
                }
                let why = if r.force && !r.users.is_empty() {
                    format!(
                        "cutover requested with --force while in use by {}",
                        describe_users(&r.users)
                    )
                } else {
                    "cutover requested".to_string()
                };
                self.events
                    .emit(Event::Progress(ProgressInfo::done("wait_for_cutover", why)));
                return Ok(());
            }
            let (s, d, mm) = (src.clone(), dst.clone(), m.clone());
            let users = on_ceph(
                "wait_for_cutover",
                src.name().to_string(),
                m.image.to_string(),
                move || instance_users(s.as_ref(), d.as_ref(), &mm),
            )
            .await?;
            // replay needs the daemon: say soon when it is gone (or fail, as options say)
            daemons
                .check(&dst, &m.replica().pool, &m.image, &self.opts.wait)
                .await?;
            let daemon_note = daemons
                .note()
                .map(|why| format!("; {why}"))
                .unwrap_or_default();
            let now = Instant::now();
            if snapshot_mode {
                snapshots.check_synced(self, m).await;
            }
            if users.is_empty() {
                let first_idle = idle_since.is_none();
                let since = *idle_since.get_or_insert(now);
                if snapshot_mode && first_idle {
                    // the source's final content, unless it is used again
                    snapshots.take(self, m).await;
                }
                if now.duration_since(since) >= idle_for {
                    let catching_up = *catching_up_since.get_or_insert(now);
                    let waited = now.duration_since(catching_up);
                    match snapshots.pending {
                        Some(id) if waited < CATCH_UP_PATIENCE => {
                            if now.duration_since(last_report) >= Duration::from_secs(5) {
                                last_report = now;
                                self.events.emit(Event::Progress(ProgressInfo::waiting(
                                    "wait_for_cutover",
                                    format!(
                                        "the source is idle; the replica syncs its last mirror snapshot ({id}) before the demotion, for {:.0} s",
                                        waited.as_secs_f64()
                                    ),
                                )));
                            }
                        }
                        pending => {
                            if let Some(id) = pending {
                                self.events.emit(Event::Warning {
                                    message: format!("the replica has not synced mirror snapshot {id} after {:.0} s; demoting anyway (the promotion waits for it)", waited.as_secs_f64()),
                                });
                            }
                            self.events.emit(Event::Progress(ProgressInfo::done(
                                "wait_for_cutover",
                                format!(
                                    "the source has had no user for {:.1} s",
                                    now.duration_since(since).as_secs_f64()
                                ),
                            )));
                            return Ok(());
                        }
                    }
                }
            } else {
                idle_since = None;
                catching_up_since = None;
                if snapshot_mode
                    && snapshots.pending.is_none()
                    && snapshots
                        .last_taken
                        .is_none_or(|t| now.duration_since(t) >= MIN_SNAPSHOT_GAP)
                {
                    snapshots.take(self, m).await;
                }
            }
            if now.duration_since(last_report) >= Duration::from_secs(5) {
                last_report = now;
                let behind = self.replica_lag(m, idle_for, &mut journal_lag).await;
                let who = if users.is_empty() {
                    "no user".to_string()
                } else {
                    format!("in use by {}", describe_users(&users))
                };
                self.events.emit(Event::Progress(ProgressInfo::waiting(
                    "wait_for_cutover",
                    format!(
                        "in sync, {behind}; waiting for the cutover ({who}; shut the instance off, or run: rbd-relay cutover {}) for {:.0} s{daemon_note}",
                        m.id(),
                        started.elapsed().as_secs_f64()
                    ),
                )));
            }
            tokio::time::sleep(CUTOVER_POLL).await;
        }
    }

    /// "N behind" for the live wait's progress: in journal mode exact, from the source
    /// journal's positions; otherwise (or when they cannot be compared) from the replica's
    /// mirror status, which rbd-mirror rewrites every 30 s.
    async fn replica_lag(
        &self,
        m: &VolumeMigration,
        idle_for: Duration,
        journal: &mut JournalLag,
    ) -> String {
        if m.mode == MirrorImageMode::Journal {
            if let Some((master, Some(peer))) = self.replay_positions(m, None).await {
                if let Some(exact) = journal.sample(master, peer, Instant::now()) {
                    return format!(
                        "{} (from the journal)",
                        describe_lag(Some(&exact), idle_for)
                    );
                }
            }
        }
        let status = self.replica_status(m).await;
        describe_lag(status.map(|s| s.progress()).as_ref(), idle_for)
    }

    /// Journal mode: the commit position of the mirror peer that replays into our replica
    /// (or the only peer), in the source's journal; `None` when it cannot be read.
    async fn replay_position(
        &self,
        m: &VolumeMigration,
        replica_id: Option<String>,
    ) -> Option<JournalPosition> {
        self.replay_positions(m, replica_id).await?.1
    }

    /// Journal mode: the source journal's master commit position and that of the mirror
    /// peer that replays into our replica (or the only peer); `None` when they cannot be
    /// read or no peer is ours.
    async fn replay_positions(
        &self,
        m: &VolumeMigration,
        replica_id: Option<String>,
    ) -> Option<(Option<JournalPosition>, Option<JournalPosition>)> {
        let src = self.src("promote_replica").ok()?;
        let (s, image) = (src.clone(), m.image.clone());
        let positions = tokio::task::spawn_blocking(move || s.journal_positions(&image))
            .await
            .ok()?
            .ok()?;
        let peer = positions
            .peers
            .iter()
            .find(|p| replica_id.is_some() && p.replica_image_id == replica_id)
            .or_else(|| {
                positions
                    .peers
                    .first()
                    .filter(|_| positions.peers.len() == 1)
            })?;
        Some((positions.master, peer.position))
    }

    /// The replica's mirror status as the destination daemon last wrote it; `None` when it
    /// cannot be read (progress text only: never a reason to fail).
    async fn replica_status(&self, m: &VolumeMigration) -> Option<SiteStatus> {
        let dst = self.dst("wait_for_cutover").ok()?;
        let (d, replica) = (dst.clone(), m.replica());
        tokio::task::spawn_blocking(move || d.mirror_status(&replica))
            .await
            .ok()
            .and_then(|r| r.ok())
            .flatten()
    }

    /// Demote the source: from here it is read-only for every client, its data fixed.
    /// Returns whether it was already demoted (a re-run).
    /// Record the replica's image id before the source is demoted: from the demotion on,
    /// rbd-mirror may stop replaying the replica for good (split-brain once the source is
    /// promoted again), and abort removes such a replica only by the id this migration
    /// recorded (or by the source's mirror global id, gone once the source's mirroring is
    /// off). Nothing when there is no replica.
    pub(super) async fn record_replica_id(
        &self,
        m: &VolumeMigration,
        state: &mut RunState,
        file: &dyn Record,
    ) -> Result<()> {
        let dst = self.dst("demote_source")?;
        let (d, replica) = (dst.clone(), m.replica());
        let id = on_ceph(
            "demote_source",
            dst.name().to_string(),
            m.replica().to_string(),
            move || match d.stat(&replica) {
                Ok(st) => Ok(Some(st.id)),
                Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            },
        )
        .await?;
        if let Some(id) = id {
            if state.replica_id.as_deref() != Some(id.as_str()) {
                state.replica_id = Some(id);
                self.save(state, file)?;
            }
        }
        Ok(())
    }

    pub(super) async fn demote_source(&self, m: &VolumeMigration) -> Result<bool> {
        let src = self.src("demote_source")?;
        let (s, image) = (src.clone(), m.image.clone());
        let call = on_ceph(
            "demote_source",
            src.name().to_string(),
            m.image.to_string(),
            move || {
                if !s.mirror_image(&image)?.primary {
                    return Ok(true);
                }
                s.demote(&image)?;
                Ok(false)
            },
        );
        // the replica catches the demotion only through rbd-mirror (and a hung daemon
        // that watches the source slows the demotion's notifications down)
        let (result, lost) = self
            .watching_the_daemon(&m.replica().pool, &m.replica(), call)
            .await;
        let already = result?;
        match lost {
            Some(e) => Err(e.into()),
            None => Ok(already),
        }
    }

    /// Run `call`, a Ceph call of the cutover, while watching the destination's rbd-mirror
    /// daemons: their loss is told at once (a warning), and returned beside the call's
    /// result. The call itself is always awaited: a promote or demote left running beside a
    /// roll back could leave two primaries.
    async fn watching_the_daemon<T>(
        &self,
        pool: &crate::spec::PoolSpec,
        image: &ImageSpec,
        call: impl std::future::Future<Output = Result<T>>,
    ) -> (Result<T>, Option<crate::wait::WaitError>) {
        let Ok(dst) = self.dst("cutover") else {
            return (call.await, None);
        };
        let mut watch = self
            .daemon_watch
            .lock()
            .map(|mut w| std::mem::take(&mut *w))
            .unwrap_or_default();
        let every = self.opts.wait.health_every;
        tokio::pin!(call);
        let mut lost = None;
        let result = loop {
            tokio::select! {
                r = &mut call => break r,
                found = async {
                    let found = watch.check(&dst, pool, image, &self.opts.wait).await;
                    if matches!(found, Ok(None)) {
                        tokio::time::sleep(every).await;
                    }
                    found
                }, if lost.is_none() => match found {
                    Err(e) => {
                        if !watch.told {
                            watch.told = true;
                            self.events.emit(Event::Warning {
                                message: format!(
                                    "{e} (the cutover's call in flight is awaited, then the cutover is rolled back)"
                                ),
                            });
                        }
                        lost = Some(e);
                    }
                    Ok(Some(why)) => {
                        self.events.emit(Event::Progress(ProgressInfo::waiting(
                            "cutover",
                            format!("{why}, to replay the demotion"),
                        )));
                        tokio::time::sleep(every).await;
                    }
                    Ok(None) => {}
                },
            }
        };
        if let Ok(mut w) = self.daemon_watch.lock() {
            *w = watch;
        }
        (result, lost)
    }

    /// Promote the replica as soon as librbd allows it without force, which it does once
    /// the replica has replayed everything up to the source's demotion (journal: the demote
    /// event; snapshot: the demoted mirror snapshot is complete). Records the replica's id.
    /// Returns whether it was already primary (a re-run).
    ///
    /// This wait is the cutover's downtime, so it says how far the replay still is (every
    /// [`PROMOTE_REPORT_EVERY`], from the replica's mirror status), and it gives up only
    /// once rbd-mirror has reported no progress for `promote_patience` (120 s by
    /// default): a long backlog that is being replayed is waited for, a replay that
    /// stands still is not.
    pub(super) async fn promote_replica(
        &self,
        m: &VolumeMigration,
        state: &mut RunState,
        file: &dyn Record,
    ) -> Result<bool> {
        let dst = self.dst("promote_replica")?;
        let started = Instant::now();
        let patience = self.opts.wait.promote_patience;
        let replica = m.replica();
        // the status is read often enough to see progress well within the patience
        let look_every = PROMOTE_REPORT_EVERY.min(patience / 4);
        let mut last_report = started;
        let mut last_seen: (Option<String>, Option<JournalPosition>) = (None, None);
        let mut first_position: Option<Option<JournalPosition>> = None;
        let mut last_change = started;
        loop {
            let (d, r, known) = (dst.clone(), replica.clone(), state.replica_id.clone());
            // the replica's id is recorded before it is promoted (already before the
            // demotion, unless rbd-mirror made a new replica since): a run killed right after
            // the promotion leaves the id for abort, which removes only that image
            let attempt = on_ceph(
                "promote_replica",
                dst.name().to_string(),
                replica.to_string(),
                move || {
                    let id = d.stat(&r)?.id;
                    let already = d.mirror_image(&r)?.primary;
                    if known.as_deref() != Some(id.as_str()) {
                        return Ok(Promotion::Unrecorded { id, already });
                    }
                    if !already {
                        match d.promote(&r, false) {
                            Ok(()) => {}
                            Err(e) if is_not_yet(&e) => return Ok(Promotion::NotYet),
                            Err(e) => return Err(e),
                        }
                    }
                    Ok(Promotion::Done { already })
                },
            );
            let (attempt, lost) = self
                .watching_the_daemon(&replica.pool, &replica, attempt)
                .await;
            match attempt? {
                Promotion::Done { already } => return Ok(already),
                Promotion::Unrecorded { id, already } => {
                    state.replica_id = Some(id);
                    self.save(state, file)?;
                    if already {
                        return Ok(true);
                    }
                    continue;
                }
                Promotion::NotYet => {}
            }
            if let Some(e) = lost {
                return Err(e.into());
            }
            let now = Instant::now();
            if now.duration_since(last_report) >= look_every {
                last_report = now;
                let status = self.replica_status(m).await;
                // journal mode: the peer's commit position in the source's journal moves
                // with every replayed entry, unlike the status rbd-mirror rewrites every 30 s
                let position = match m.mode {
                    MirrorImageMode::Journal => {
                        self.replay_position(m, state.replica_id.clone()).await
                    }
                    MirrorImageMode::Snapshot => None,
                };
                let seen = (status.as_ref().map(|s| s.description.clone()), position);
                if (seen.0.is_some() || seen.1.is_some()) && seen != last_seen {
                    last_seen = seen;
                    last_change = now;
                }
                let first = *first_position.get_or_insert(position);
                let replayed = match (first, position) {
                    (Some(a), Some(b)) if a.tag_tid == b.tag_tid => {
                        let n = b.entry_tid.saturating_sub(a.entry_tid);
                        format!(
                            "; {n} entries replayed since this wait began ({:.0}/s)",
                            n as f64 / started.elapsed().as_secs_f64().max(0.1)
                        )
                    }
                    _ => String::new(),
                };
                let age = status
                    .as_ref()
                    .and_then(|s| status_age_s(s.last_update))
                    .map(|a| format!(" (rbd-mirror's status of {a} s ago)"))
                    .unwrap_or_default();
                self.events.emit(Event::Progress(ProgressInfo::waiting(
                    "promote_replica",
                    format!(
                        "waiting {:.0} s for rbd-mirror to replay up to the demotion: {}{age}{replayed}",
                        started.elapsed().as_secs_f64(),
                        describe_catch_up(status.map(|s| s.progress()).as_ref())
                    ),
                )));
            }
            if last_change.elapsed() > patience {
                return Err(Error::ReplicaNotCaughtUp {
                    cluster: dst.name().to_string(),
                    image: replica.to_string(),
                    waited_s: started.elapsed().as_secs(),
                    still_s: last_change.elapsed().as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Snapshot the promoted replica and clone the snapshot into the destination pool under
    /// the copy name, with the source's original features. The clone's id is recorded so
    /// that only it is ever removed. Returns whether the clone was already there (a re-run).
    pub(super) async fn clone_replica(
        &self,
        m: &VolumeMigration,
        state: &mut RunState,
        file: &dyn Record,
        snap: &str,
        features: Features,
    ) -> Result<bool> {
        let dst = self.dst("clone_replica")?;
        let (replica, target) = (m.replica(), m.copy_target());
        let (d, r, sn) = (dst.clone(), replica.clone(), snap.to_string());
        on_ceph(
            "clone_replica",
            dst.name().to_string(),
            replica.to_string(),
            move || {
                let snaps = d.snapshots(&r)?;
                let found = snaps
                    .iter()
                    .find(|s| s.name == sn && s.namespace == SnapshotNamespace::User);
                if found.is_none() {
                    d.create_snapshot(&r, &sn)?;
                }
                if !found.is_some_and(|s| s.protected) {
                    d.protect_snapshot(&r, &sn)?;
                }
                Ok(())
            },
        )
        .await?;
        // a clone already under the copy name: ours when its id is the recorded one, or
        // (killed before the id was saved) when it hangs from our replica's snapshot
        let (d, t, r, sn) = (
            dst.clone(),
            target.clone(),
            replica.clone(),
            snap.to_string(),
        );
        let existing = on_ceph(
            "clone_replica",
            dst.name().to_string(),
            target.to_string(),
            move || {
                if !d.image_exists(&t)? {
                    return Ok(None);
                }
                let id = d.stat(&t)?.id;
                let ours_by_parent = d.parent(&t)?.is_some_and(|(p, s)| p == r && s == sn);
                Ok(Some((id, ours_by_parent)))
            },
        )
        .await?;
        if let Some((id, ours_by_parent)) = existing {
            let ours = state.copy_id.as_deref() == Some(id.as_str())
                || (state.copy_id.is_none() && state.copy_started && ours_by_parent);
            if !ours {
                return Err(Error::NotOurCopy {
                    cluster: dst.name().to_string(),
                    target: target.to_string(),
                    found_id: id,
                    migration: state.plan.id.clone(),
                    recorded_id: state.copy_id.clone(),
                });
            }
            if state.copy_id.is_none() {
                state.copy_id = Some(id);
                self.save(state, file)?;
            }
            return Ok(true);
        }
        state.copy_started = true;
        self.save(state, file)?;
        let (d, t, r, sn) = (
            dst.clone(),
            target.clone(),
            replica.clone(),
            snap.to_string(),
        );
        // the clone's id is recorded in the state file the moment the clone exists, before
        // this step can be interrupted with an unrecorded image of ours under the copy name
        let state_path = file.file().map(Path::to_path_buf);
        let id = on_ceph(
            "clone_replica",
            dst.name().to_string(),
            target.to_string(),
            move || {
                let mut made = None;
                let mut created = |id: &str| -> std::result::Result<(), OpsError> {
                    made = Some(id.to_string());
                    record_created_id(state_path.as_deref(), id)
                };
                d.clone_image(&r, &sn, &t, features, &mut created)?;
                made.ok_or_else(|| {
                    OpsError::new(
                        ErrorKind::Other,
                        "clone_image",
                        "the clone's id was not reported",
                    )
                })
            },
        )
        .await?;
        state.copy_id = Some(id);
        self.save(state, file)?;
        Ok(false)
    }

    /// Compare the demoted source (read-only while demoted) with the replica's handover
    /// snapshot, both read at once, each by sha256.
    pub(super) async fn verify_handover(
        &self,
        m: &VolumeMigration,
        state: &mut RunState,
        file: &dyn Record,
        snap: &str,
    ) -> Result<()> {
        let (src, dst) = (self.src("verify_handover")?, self.dst("verify_handover")?);
        if state.verified() {
            return Ok(());
        }
        let (s, image) = (src.clone(), m.image.clone());
        let source = on_ceph(
            "verify",
            src.name().to_string(),
            m.image.to_string(),
            move || s.digest(&image, &mut |_, _| true),
        );
        let (d, replica, sn) = (dst.clone(), m.replica(), snap.to_string());
        let replica_digest = on_ceph(
            "verify",
            dst.name().to_string(),
            format!("{}@{snap}", m.replica()),
            move || d.digest_snapshot(&replica, &sn, &mut |_, _| true),
        );
        let (a, b) = tokio::try_join!(source, replica_digest)?;
        if a != b {
            return Err(Error::VerifyMismatch {
                source_image: format!("{}:{}", src.name(), m.image),
                copy: format!("{}:{}@{snap}", dst.name(), m.replica()),
                source_digest: a,
                copy_digest: b,
            });
        }
        state.source_digest = Some(a.clone());
        state.copy_digest = Some(b);
        self.save(state, file)?;
        self.events.emit(Event::Progress(ProgressInfo::done(
            "verify",
            format!("the replica's handover snapshot equals the demoted source, sha256 {a}"),
        )));
        Ok(())
    }

    /// The destination image as it is named now: Cinder renamed it on adoption.
    pub(super) fn current_copy(&self, m: &VolumeMigration, state: &RunState) -> ImageSpec {
        match &state.adopted {
            Some(v) => ImageSpec {
                pool: m.into.clone(),
                image: v.rbd_image.clone(),
            },
            None => m.copy_target(),
        }
    }

    /// Flatten the clone so it no longer needs the replica, then prove it equal to the
    /// verified content before the replica may go. Returns whether it had no parent already.
    ///
    /// A flatten interrupted midway can leave objects the object map calls existing that
    /// were never copied up; a second flatten with the map on skips them and they read as
    /// zeros once the parent is gone (seen on Ceph 16.2). So a resumed flatten runs with
    /// object-map and fast-diff off, and they come back (rebuilt) afterwards.
    pub(super) async fn flatten_copy(
        &self,
        m: &VolumeMigration,
        state: &mut RunState,
        file: &dyn Record,
    ) -> Result<bool> {
        let dst = self.dst("flatten_copy")?;
        let target = self.current_copy(m, state);
        let wanted = state
            .plan
            .steps
            .iter()
            .find_map(|s| match s {
                Step::CloneReplica { features, .. } => Some(*features),
                _ => None,
            })
            .unwrap_or(state.plan.facts.features);
        let (d, t) = (dst.clone(), target.clone());
        let is_clone = on_ceph(
            "flatten_copy",
            dst.name().to_string(),
            target.to_string(),
            move || Ok(d.parent(&t)?.is_some()),
        )
        .await?;
        if is_clone {
            let resumed = state.flatten_started;
            if !resumed {
                state.flatten_started = true;
                self.save(state, file)?;
            }
            let (d, t) = (dst.clone(), target.clone());
            let events = self.events.clone();
            on_ceph(
                "flatten_copy",
                dst.name().to_string(),
                target.to_string(),
                move || {
                    if resumed {
                        for f in [Features::FAST_DIFF, Features::OBJECT_MAP] {
                            if d.stat(&t)?.features.contains(f) {
                                d.update_features(&t, f, false)?;
                            }
                        }
                    }
                    let mut last = Instant::now();
                    d.flatten(&t, &mut |done, total| {
                        if last.elapsed() >= Duration::from_secs(1) {
                            last = Instant::now();
                            let percent = if total == 0 {
                                100.0
                            } else {
                                done as f64 * 100.0 / total as f64
                            };
                            events.emit(Event::Progress(ProgressInfo {
                                percent: Some(percent),
                                ..ProgressInfo::waiting("flatten_copy", "flattening the clone")
                            }));
                        }
                        true
                    })
                },
            )
            .await?;
        }
        // the features the clone was made with (a resumed flatten turned the map off);
        // an object map enabled again is rebuilt from the objects
        let (d, t) = (dst.clone(), target.clone());
        // librbd's clone copied the replica's image metadata, which rbd-mirror's sync copied
        // from the source while this migration had it changed: the copy gets the source's
        // own journal payload back, and no marker of this migration
        let payload = state
            .plan
            .steps
            .iter()
            .any(|s| matches!(s, Step::SetJournalPayload { .. }))
            .then(|| state.plan.facts.journal_payload_before.clone());
        let id = state.plan.id.clone();
        on_ceph(
            "flatten_copy",
            dst.name().to_string(),
            target.to_string(),
            move || {
                let had_map = d.stat(&t)?.features.contains(Features::OBJECT_MAP);
                converge_features(d.as_ref(), &t, wanted)?;
                if !had_map && wanted.contains(Features::OBJECT_MAP) {
                    d.rebuild_object_map(&t, &mut |_, _| true)?;
                }
                if let Some(original) = payload {
                    super::converge_journal_payload(d.as_ref(), &t, original.as_deref())?;
                }
                let marker = d.metadata_get(&t, preflight::SOURCE_MARKER_KEY)?;
                let ours = marker
                    .and_then(|v| serde_json::from_str::<preflight::SourceMarker>(&v).ok())
                    .is_some_and(|mk| mk.migration == id);
                if ours {
                    d.metadata_remove(&t, preflight::SOURCE_MARKER_KEY)?;
                }
                Ok(())
            },
        )
        .await?;
        // the replica goes next: the copy must be the verified content, read back
        let Some(want) = state.copy_digest.clone() else {
            return Err(Error::NotVerified {
                step: "flatten_copy",
                consequence: "the replica is kept",
            });
        };
        let (d, t) = (dst.clone(), target.clone());
        // a copy grown for Cinder holds the verified bytes first, then zeros
        let grown_from = state.plan.grown_to().map(|_| state.plan.facts.size);
        let got = on_ceph(
            "flatten_copy",
            dst.name().to_string(),
            target.to_string(),
            move || match grown_from {
                Some(len) => d.digest_first(&t, len, &mut |_, _| true),
                None => d.digest(&t, &mut |_, _| true),
            },
        )
        .await?;
        if got != want {
            return Err(Error::CopyDamagedAfterFlatten {
                copy: format!("{}:{target}", dst.name()),
                replica: format!("{}:{}@{}", dst.name(), m.replica(), handover_snapshot()),
                want,
                got,
            });
        }
        Ok(!is_clone)
    }

    /// Put the source back once the handover is verified: mirroring off (forced: it is
    /// not primary, and nothing else would give it back), which makes it writable again,
    /// and no mirror snapshot of this migration left on it. Returns whether it was done.
    pub(super) async fn release_source(
        &self,
        m: &VolumeMigration,
        state: &RunState,
    ) -> Result<bool> {
        let src = self.src("release_source")?;
        if !state.verified() {
            return Err(Error::NotVerified {
                step: "release_source",
                consequence: "the source stays demoted, unchanged",
            });
        }
        let (s, image) = (src.clone(), m.image.clone());
        let facts = state.plan.facts.clone();
        on_ceph(
            "release_source",
            src.name().to_string(),
            m.image.to_string(),
            move || {
                let mi = s.mirror_image(&image)?;
                let already = mi.state == MirrorImageState::Disabled;
                if !already {
                    s.disable_mirroring(&image, !mi.primary)?;
                }
                // mirroring is off now: disabled just above, or already
                remove_mirror_snapshots_except(
                    s.as_ref(),
                    &image,
                    KeptSnapshots::of(&facts),
                    true,
                )?;
                Ok(already)
            },
        )
        .await
    }

    /// Remove the replica once the clone no longer needs it: its mirroring, the handover
    /// snapshot, the image (only the one with the id recorded at its promotion).
    pub(super) async fn remove_replica(
        &self,
        m: &VolumeMigration,
        state: &RunState,
        snap: &str,
    ) -> Result<bool> {
        let dst = self.dst("remove_replica")?;
        let copy = self.current_copy(m, state);
        let replica = m.replica();
        let Some(replica_id) = state.replica_id.clone() else {
            return Err(Error::State {
                path: PathBuf::from(&state.plan.id),
                reason: "the replica's image id, recorded at its promotion, is missing: remove the replica yourself once the copy is flattened".into(),
            });
        };
        let (d, r, c, sn) = (dst.clone(), replica.clone(), copy.clone(), snap.to_string());
        on_ceph(
            "remove_replica",
            dst.name().to_string(),
            replica.to_string(),
            move || {
                if d.image_exists(&c)? && d.parent(&c)?.is_some() {
                    return Err(OpsError::new(
                        ErrorKind::Busy,
                        "remove_replica",
                        format!("{c} still hangs from {r}@{sn}: flatten it first"),
                    ));
                }
                if !d.image_exists(&r)? {
                    return Ok(true);
                }
                if d.stat(&r)?.id != replica_id {
                    // not the replica this migration promoted: never removed
                    return Ok(true);
                }
                // the source keeps its own snapshots; their copies go with the replica
                remove_promoted_replica(d.as_ref(), &r, &replica_id, &sn)?;
                Ok(false)
            },
        )
        .await
    }

    /// Undo a cutover that failed before the handover: remove the clone this run made (not
    /// handed to a cloud), demote the replica again if it was promoted, promote the source
    /// again, then remove the demoted replica (rbd-mirror syncs a new one: it never replays
    /// a replica that was primary). Leaves the run at the step before the demotion, so a
    /// re-run tries again.
    pub(super) async fn roll_back_cutover(
        &self,
        state: &mut RunState,
        file: &dyn Record,
        restart_at: usize,
    ) -> Result<()> {
        let (src, dst) = (
            self.src("roll_back_cutover")?,
            self.dst("roll_back_cutover")?,
        );
        let m = state.plan.migration.clone();
        if let Some(id) = state.copy_id.clone() {
            if !state.handed_to_cloud() {
                remove_own_image(
                    "roll_back_cutover",
                    &dst,
                    &m.copy_target(),
                    &id,
                    self.events.as_ref(),
                )
                .await?;
                state.copy_id = None;
                state.copy_started = false;
            }
        }
        let (d, s, replica, image) = (dst.clone(), src.clone(), m.replica(), m.image.clone());
        let snap = handover_snapshot().to_string();
        let handed = state.handed_to_cloud();
        let replica_id = state.replica_id.clone();
        let replica_removed = on_ceph(
            "roll_back_cutover",
            src.name().to_string(),
            m.image.to_string(),
            move || {
                let mut demoted = false;
                if d.image_exists(&replica)? {
                    if !handed {
                        remove_snapshot_if_there(d.as_ref(), &replica, &snap)?;
                    }
                    if d.mirror_image(&replica)?.primary {
                        d.demote(&replica)?;
                        demoted = true;
                    }
                }
                if !s.mirror_image(&image)?.primary {
                    if let Err(e) = s.promote(&image, false) {
                        tracing::warn!("promote of the source without force failed ({e}); forcing");
                        s.promote(&image, true)?;
                    }
                }
                // a replica that was promoted is never replayed again: rbd-mirror syncs a
                // new one for the re-run
                match (&replica_id, demoted, handed) {
                    (Some(id), true, false) => {
                        remove_demoted_replica(d.as_ref(), &replica, id, &snap)
                    }
                    _ => Ok(false),
                }
            },
        )
        .await?;
        // a new replica is synced from scratch: the re-run waits for it first
        let wait_for_replica = state
            .plan
            .steps
            .iter()
            .position(|s| matches!(s, Step::WaitForReplica));
        state.next_step = match (replica_removed, wait_for_replica) {
            (true, Some(wait)) => wait.min(restart_at),
            _ => restart_at,
        };
        self.save(state, file)?;
        Ok(())
    }
}

/// One try of [`Executor::promote_replica`].
enum Promotion {
    /// The replica's id is not the recorded one yet: record it, then promote.
    Unrecorded {
        /// The replica's image id.
        id: String,
        /// Whether it is primary already (a re-run after the promotion).
        already: bool,
    },
    /// librbd does not allow the promotion without force yet.
    NotYet,
    /// Primary now; `already` when it was before this try.
    Done {
        /// Whether it was primary before this try.
        already: bool,
    },
}

/// Whether a refused promote means "not yet": the replica has not replayed up to the
/// demotion (librbd says busy, or that the image is still primary elsewhere).
fn is_not_yet(e: &OpsError) -> bool {
    matches!(e.kind, ErrorKind::Busy)
}
