//! The library's error types. Every error says what was being done (step), to what (cluster,
//! pool, image) and what to do about it, so the CLI can print it as is.

use std::path::PathBuf;

use thiserror::Error;

use crate::ops::OpsError;

/// A name or spec given by the caller that cannot be used.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("invalid {what} '{value}': {reason}")]
pub struct SpecError {
    /// What kind of thing was given (pool, image, cluster name...).
    pub what: &'static str,
    /// The value as given.
    pub value: String,
    /// Why it is refused and what to give instead.
    pub reason: String,
}

impl SpecError {
    pub(crate) fn new(what: &'static str, value: &str, reason: &str) -> Self {
        Self {
            what,
            value: value.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// Everything that can go wrong in a migration.
#[derive(Debug, Error)]
pub enum Error {
    /// Bad input.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A Ceph call failed during a step.
    #[error("{step} on {cluster} ({target}): {source}{}", crate::ops::timeout_hint(.source, .cluster))]
    Ceph {
        /// The plan step or check being done.
        step: String,
        /// Cluster name.
        cluster: String,
        /// Pool or image concerned.
        target: String,
        /// The underlying failure.
        #[source]
        source: OpsError,
    },
    /// Preflight found problems; nothing was changed.
    #[error("preflight refused the migration; nothing was changed:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Preflight(Vec<crate::preflight::Problem>),
    /// Waiting for the replica failed.
    #[error("{0}")]
    Wait(#[from] crate::wait::WaitError),
    /// The destination copy does not match the source.
    #[error("verification failed: {source_image} has sha256 {source_digest} but {copy} has {copy_digest}; the copy was kept for inspection and nothing on the source was changed for good; re-run to copy again")]
    VerifyMismatch {
        /// Source image.
        source_image: String,
        /// Digest of the source.
        source_digest: String,
        /// Destination copy.
        copy: String,
        /// Digest of the copy.
        copy_digest: String,
    },
    /// The state file could not be read or written.
    #[error("state file {path}: {reason}")]
    State {
        /// Path of the state file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// No migration with this id is recorded in the state directory.
    #[error("no migration '{id}' is recorded in {}; see `rbd-relay list` for the recorded ids (and --state-dir / $RBD_RELAY_STATE_DIR for where they live)", dir.display())]
    UnknownMigration {
        /// The id asked for.
        id: String,
        /// The state directory searched.
        dir: PathBuf,
    },
    /// Another run holds the lock on this migration.
    #[error("another rbd-relay run is already working on {image} (lock {path} is held); wait for it to finish or stop it, then re-run")]
    Locked {
        /// Image being migrated.
        image: String,
        /// Lock file.
        path: PathBuf,
    },
    /// Another migration holds the lock of this migration's copy target.
    #[error("another rbd-relay run (migration {other}) is copying to {target} (lock {path} is held); two migrations must not share a copy target: give this one another --name or --into, or wait for {other} to finish")]
    TargetLocked {
        /// The copy target, `CLUSTER:POOL/NAME`.
        target: String,
        /// The migration holding it (as written in the lock file).
        other: String,
        /// Lock file.
        path: PathBuf,
    },
    /// The run was cancelled (by the caller or a signal); a re-run resumes.
    #[error("cancelled during step '{step}'; re-run the same command to resume")]
    Cancelled {
        /// The step that was running.
        step: String,
    },
    /// A call to an OpenStack cloud failed during a step (the service's message is kept).
    ///
    /// The cloud's message is part of this error's text (not a `source`), so a chain printer
    /// does not repeat it.
    #[error("{step} in cloud {cloud}: {error}{}", cloud_next(error))]
    Cloud {
        /// The plan step or check being done.
        step: String,
        /// Cloud name.
        cloud: String,
        /// The underlying failure.
        error: crate::cloud::CloudError,
    },
    /// `abort` after the copy was handed to the destination cloud (adoption or registration
    /// sent): the cloud owns it; nothing was changed.
    #[error("refusing: migration {id} handed its copy to cloud {cloud} ({handed}); the destination cloud owns it now, so abort changes nothing: remove it in that cloud if it is not wanted, and finish the source side with `rbd-relay cleanup {id}` (or `rbd-relay resume {id}`)")]
    AbortRefusedAfterHandover {
        /// Migration id.
        id: String,
        /// The destination cloud.
        cloud: String,
        /// What the cloud made of it (`Cinder volume V`, `Glance image I`, or that the
        /// request was sent).
        handed: String,
    },
    /// `abort` of a finished migration: the verified copy is the destination's.
    #[error("refusing: migration {id} is finished; there is nothing to abort: the verified copy {cluster}:{target} is the destination's now and the source is as it was (remove the copy with `rbd --cluster {cluster} rm {target}` if it is not wanted)")]
    AbortRefusedFinished {
        /// Migration id.
        id: String,
        /// The destination cluster.
        cluster: String,
        /// The copy, `POOL/NAME`.
        target: String,
    },
    /// `abort` would remove a verified copy and `--discard-verified-copy` was not given;
    /// nothing was changed.
    #[error("refusing: the copy {copy} of migration {id} is already verified; abort would remove it. Keep it and put the source back with `rbd-relay cleanup {id}`, or remove it anyway with `rbd-relay abort {id} --discard-verified-copy`")]
    AbortRefusedVerifiedCopy {
        /// Migration id.
        id: String,
        /// The copy, `CLUSTER:POOL/NAME`.
        copy: String,
    },
    /// The copy an abort would remove has snapshots (the bootable path's protected one).
    #[error("refusing: the copy {copy} has snapshot(s) ({}); abort does not remove snapshots on the destination: remove them (rbd snap unprotect / snap purge) and re-run", snapshots.join(", "))]
    CopyHasSnapshots {
        /// The copy, `CLUSTER:POOL/NAME`.
        copy: String,
        /// Their names.
        snapshots: Vec<String>,
    },
    /// A migration whose abort started and did not finish is not run on (nor cleaned up):
    /// its source is half put back.
    #[error("refusing: migration {id} is being aborted (stopped before undo step {next} of {steps}: {outcome}); finish the abort with `rbd-relay abort {id}` (a later `rbd-relay migrate volume ...` then starts a fresh plan)")]
    AbortUnfinished {
        /// Migration id.
        id: String,
        /// The next undo step (1-based).
        next: usize,
        /// Number of undo steps.
        steps: usize,
        /// The recorded outcome.
        outcome: String,
    },
    /// `resume` of an aborted migration.
    #[error("refusing: migration {id} was aborted, so there is nothing to resume; to migrate {image} again, run `rbd-relay migrate volume ...` (it starts a fresh plan)")]
    ResumeRefusedAborted {
        /// Migration id.
        id: String,
        /// The source image.
        image: String,
    },
    /// `cleanup` of an aborted migration.
    #[error("refusing: migration {id} was aborted; there is nothing to clean up (start it again with `rbd-relay migrate volume ...`)")]
    CleanupRefusedAborted {
        /// Migration id.
        id: String,
    },
    /// `cleanup` before the copy was verified; nothing was changed.
    #[error("refusing: the copy {copy} of migration {id} is not verified yet (stopped before step {next} of {steps}: {outcome}); finish the migration with `rbd-relay resume {id}`, or undo it with `rbd-relay abort {id}`")]
    CleanupRefusedUnverified {
        /// Migration id.
        id: String,
        /// The copy, `CLUSTER:POOL/NAME`.
        copy: String,
        /// The next step (1-based).
        next: usize,
        /// Number of steps.
        steps: usize,
        /// The recorded outcome.
        outcome: String,
    },
    /// `cleanup --forget` while steps of the plan are still to do (the source side is
    /// cleaned up; the record is kept).
    #[error("refusing: the source side of {id} is cleaned up, but the record is kept: steps {} are still to do; --forget drops only the record of a finished migration", remaining.join(", "))]
    ForgetRefusedUnfinished {
        /// Migration id.
        id: String,
        /// Kinds of the steps still to do.
        remaining: Vec<String>,
    },
    /// `delete-source` of a migration that is not finished and verified.
    #[error("refusing: migration {id} is not finished and verified (outcome: {outcome}); finish it first by re-running the migration")]
    DeleteRefusedUnfinished {
        /// Migration id.
        id: String,
        /// The recorded outcome.
        outcome: String,
    },
    /// `delete-source` finds no copy to verify against; the source is kept.
    #[error("refusing: the copy {copy} does not exist (adopted under another name? pass it explicitly); the source is kept")]
    DeleteRefusedNoCopy {
        /// The copy, `CLUSTER:POOL/NAME`.
        copy: String,
    },
    /// `delete-source` of a source in use.
    #[error("refusing: {source_image} is in use (watchers: {}); stop its users first", watchers.join(", "))]
    DeleteRefusedInUse {
        /// The source, `CLUSTER:POOL/IMAGE`.
        source_image: String,
        /// Its watchers.
        watchers: Vec<String>,
    },
    /// `delete-source` of a source still mirrored.
    #[error("refusing: {source_image} is still mirrored; finish or clean up the migration first")]
    DeleteRefusedMirrored {
        /// The source, `CLUSTER:POOL/IMAGE`.
        source_image: String,
    },
    /// `delete-source` of a source with snapshots (they are not in the copy).
    #[error("refusing: {source_image} has snapshots ({}); they are not in the copy: remove them yourself first if the source may really go", if user_snapshots.is_empty() { "non-user snapshots".to_string() } else { user_snapshots.join(", ") })]
    DeleteRefusedSnapshots {
        /// The source, `CLUSTER:POOL/IMAGE`.
        source_image: String,
        /// Names of its user snapshots (empty: only other namespaces).
        user_snapshots: Vec<String>,
    },
    /// A batch names one image twice; nothing was changed.
    #[error("refusing: {image} is given twice (migration {id}); list every image once")]
    BatchImageTwice {
        /// The image.
        image: String,
        /// Its migration id.
        id: String,
    },
    /// Two images of a batch would be copied to one target; nothing was changed.
    #[error("refusing: {first} and {second} would both be copied to {target}; give one of them its own copy name (--name, or migrate it separately with another --into)")]
    BatchSharedCopyTarget {
        /// The first image.
        first: String,
        /// The second image.
        second: String,
        /// The copy target, `CLUSTER:POOL/NAME`.
        target: String,
    },
    /// `cutover` was asked of a migration that is not live (it has no cutover to wait for).
    #[error("migration {id} is not a live migration: it cuts over by itself once the replica is in sync; `rbd-relay cutover` is for migrations started with --live")]
    NotLive {
        /// The migration.
        id: String,
    },
    /// `cutover` was asked of a live migration that is past its wait for the cutover.
    #[error("migration {id} is past its cutover (now at {step}); nothing to do")]
    CutoverPassed {
        /// The migration.
        id: String,
        /// The step it is at.
        step: String,
    },
    /// The source still has users other than rbd-mirror, so a cutover would cut them off.
    #[error("{cluster}:{image} is still in use by {users}; shut the instance off or detach the volume first, or run the cutover with --force to cut them off (their writes from then on fail)")]
    SourceInUse {
        /// Source cluster.
        cluster: String,
        /// Source image.
        image: String,
        /// Who uses it.
        users: String,
    },
    /// The promote of the replica was refused after the source's demotion, and rbd-mirror
    /// reported no replay progress for too long.
    #[error("the replica {cluster}:{image} was still not promotable {waited_s} s after the source was demoted, and rbd-mirror reported no replay progress for the last {still_s} s (it has not replayed up to the demotion); the cutover was rolled back (the source is primary again); check the rbd-mirror daemon on {cluster}, then re-run")]
    ReplicaNotCaughtUp {
        /// Destination cluster.
        cluster: String,
        /// The replica.
        image: String,
        /// Seconds waited.
        waited_s: u64,
        /// Seconds since the replica's status last changed.
        still_s: u64,
    },
    /// A step needs a cloud (or cluster) that was not given.
    #[error("{needed_for} needs {what}, but none was given ({flag})")]
    NotGiven {
        /// What needs it (a step, or the bootable path).
        needed_for: String,
        /// What is missing (`the destination cloud`).
        what: String,
        /// The option that gives it.
        flag: &'static str,
    },
    /// The copy would be handed on (or the replica dropped) before it was verified.
    #[error("refusing: step {step}: the copy has not been verified; {consequence}")]
    NotVerified {
        /// The step refused.
        step: &'static str,
        /// What is kept back because of it.
        consequence: &'static str,
    },
    /// Another run's marker is on the source image.
    #[error("refusing: {cluster}:{image} is being migrated by {holder}; continue or abort that migration where it runs (rbd-relay resume/abort {migration}): two runs must not change one image")]
    SourceClaimed {
        /// Source cluster.
        cluster: String,
        /// Source image.
        image: String,
        /// Who holds it (host, state directory, when).
        holder: String,
        /// Its migration id.
        migration: String,
    },
    /// The source image carries an rbd-relay marker that does not read.
    #[error("refusing: {cluster}:{image} carries an unreadable rbd-relay marker ({text}); look at it with `rbd --cluster {cluster} image-meta get {image} {key}`")]
    SourceMarkerUnreadable {
        /// Source cluster.
        cluster: String,
        /// Source image.
        image: String,
        /// The marker's text.
        text: String,
        /// The metadata key.
        key: &'static str,
    },
    /// Another recorded migration claims this migration's copy target.
    #[error("refusing: the copy target {target} is claimed by migration {other} (of {other_source}, {other_outcome}); two migrations must not share a copy target: give this one another --name or --into, or abort that one first (`rbd-relay abort {other}`)")]
    TargetClaimed {
        /// The copy target, `CLUSTER:POOL/NAME`.
        target: String,
        /// The other migration's id.
        other: String,
        /// Its source, `CLUSTER:POOL/IMAGE`.
        other_source: String,
        /// How far it got.
        other_outcome: String,
    },
    /// An image under the copy name that this migration did not create.
    #[error("refusing: {cluster}:{target} (image id {found_id}) was not created by migration {migration} ({}); it may be another migration's copy, so it is left alone: if it is not wanted, remove or rename it yourself (rbd --cluster {cluster} rm {target}), or give this migration another --name or --into, then re-run", match recorded_id { Some(id) => format!("this migration's copy had id {id}"), None => "this migration recorded no copy of its own".to_string() })]
    NotOurCopy {
        /// Destination cluster.
        cluster: String,
        /// The copy target.
        target: String,
        /// The id of the image found there.
        found_id: String,
        /// This migration.
        migration: String,
        /// The id of the copy this migration recorded, if any.
        recorded_id: Option<String>,
    },
    /// The copy this migration made is gone before the cloud adopted it.
    #[error("refusing: {cluster}:{image} is gone and cloud {cloud} has no volume adopted by migration {migration}; check the pool (was it renamed or managed by hand?)")]
    CopyGone {
        /// Destination cluster.
        cluster: String,
        /// The copy.
        image: String,
        /// The destination cloud.
        cloud: String,
        /// This migration (the marker).
        migration: String,
    },
    /// The registered image's min_disk is below the source volume's size.
    #[error("refusing: image {image} in cloud {cloud} has min_disk {found_gib} GiB, less than the source volume's {wanted_gib} GiB: instances booted from it could get a smaller disk; set it with: openstack image set --min-disk {wanted_gib} {image}")]
    MinDiskTooSmall {
        /// The destination cloud.
        cloud: String,
        /// The image id.
        image: String,
        /// Its min_disk.
        found_gib: u64,
        /// The source volume's size.
        wanted_gib: u64,
    },
    /// An interrupted cloud call left something that cannot be taken over as it is.
    #[error("refusing: step {step} in cloud {cloud}: {found}; {next}")]
    CloudLeftover {
        /// The step.
        step: &'static str,
        /// The cloud.
        cloud: String,
        /// What is there (ids and statuses).
        found: String,
        /// What to do.
        next: String,
    },
    /// A write to the destination stopped because its pool is full (its byte quota reached,
    /// or no room left on its OSDs): Ceph holds such writes until they time out.
    #[error("{step} on {cluster}: pool '{pool}' is full ({why}): {source}; nothing is lost: lift or raise the quota (`ceph --cluster {cluster} osd pool set-quota {pool} max_bytes 0` lifts it) or free space in the pool, then re-run to continue")]
    PoolFull {
        /// The plan step.
        step: String,
        /// Cluster name.
        cluster: String,
        /// The full pool.
        pool: String,
        /// Its quota and what it stores, or that no room is left.
        why: String,
        /// The call that failed.
        #[source]
        source: OpsError,
    },
    /// A task of the run died (a panic in a blocking call).
    #[error("step {step}: its task failed: {reason}")]
    TaskFailed {
        /// The step.
        step: &'static str,
        /// The join error.
        reason: String,
    },
    /// The flattened copy is not the verified content (the replica is kept).
    #[error("{copy} differs from the verified content after its flatten (sha256 {got}, verified {want}); the replica {replica} (equal to the source) and the source are kept as they are: restore the copy from it (rbd export REPLICA@SNAP - | rbd import - ...) or run `rbd-relay abort` with --discard-verified-copy; a re-run repeats this check")]
    CopyDamagedAfterFlatten {
        /// The copy, `CLUSTER:POOL/IMAGE`.
        copy: String,
        /// The replica's snapshot, `CLUSTER:POOL/IMAGE@SNAP`.
        replica: String,
        /// The verified digest.
        want: String,
        /// The copy's digest.
        got: String,
    },
}

impl Error {
    /// [`Error::AbortUnfinished`] for a state whose abort stopped midway.
    pub(crate) fn abort_unfinished(state: &crate::state::RunState) -> Self {
        let (next, steps) = state
            .undo
            .as_ref()
            .map_or((0, 0), |u| (u.next_step, u.steps.len()));
        Error::AbortUnfinished {
            id: state.plan.id.clone(),
            next: (next + 1).min(steps),
            steps,
            outcome: state.outcome.clone(),
        }
    }
}

/// Result with the library's [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What to do after a cloud call failed for no reason of the request itself (the service is
/// down, slow, or answered 5xx): the run can be repeated, since each cloud step finds what
/// an earlier attempt did by the migration's marker instead of doing it again.
fn cloud_next(e: &crate::cloud::CloudError) -> &'static str {
    match e.kind {
        crate::cloud::CloudErrorKind::Other => {
            ". Once the service answers, re-run the same command (or `rbd-relay resume ID`): the run continues at this step, and what the cloud already did is found again by the migration's marker, not done twice"
        }
        _ => "",
    }
}
