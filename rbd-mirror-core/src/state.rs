//! The state file of a migration: the plan plus how far it got. Written atomically (temp file,
//! fsync, rename) after every step so a re-run resumes where the last one stopped, and guarded
//! by a lock file so two runs never work on one migration at once.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, SpecError};
use crate::plan::{Plan, Step};

/// How far a migration got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// The plan being executed.
    pub plan: Plan,
    /// Index of the next step to run (`steps.len()` when finished).
    pub next_step: usize,
    /// The copy step created the destination image (so a leftover partial copy is ours).
    pub copy_started: bool,
    /// Id of the destination image the copy created (`rbd_get_id`), recorded as soon as it
    /// exists: only the image under the copy name with this id is ever removed (another
    /// migration may have put its own copy under the same name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_id: Option<String>,
    /// Digest of the source as verified.
    pub source_digest: Option<String>,
    /// Digest of the copy as verified.
    pub copy_digest: Option<String>,
    /// Seconds each finished step took.
    pub step_seconds: Vec<f64>,
    /// Outcome: `running`, `finished`, `failed: ...`.
    pub outcome: String,
    /// The adoption was sent to the cloud at least once (a re-run looks for its volume).
    #[serde(default)]
    pub adopt_started: bool,
    /// The volume the destination cloud adopted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopted: Option<crate::cloud::AdoptedVolume>,
    /// The registration was sent to the cloud at least once.
    #[serde(default)]
    pub register_started: bool,
    /// The image the destination cloud registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered: Option<crate::cloud::CloudImage>,
    /// The upload-to-image was sent to the source cloud at least once (a re-run looks for
    /// its image by name before uploading again).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub upload_started: bool,
    /// The image the source cloud's upload-to-image made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploaded: Option<crate::cloud::CloudImage>,
    /// `rbd-relay abort` undid this migration; a later run of the same migration starts a
    /// fresh plan instead of resuming this one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub aborted: bool,
    /// Id of the replica this migration promoted (a cutover by clone): only the image with
    /// this id is ever removed as the replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_id: Option<String>,
    /// The flatten of the clone was started: a run that finds it still a clone resumes an
    /// interrupted flatten, which it does with the object map off (see
    /// `exec::cutover`'s `flatten_copy`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub flatten_started: bool,
    /// The undo plan of `rbd-relay abort` and how far it got, from the moment an abort
    /// starts: the executor then runs it instead of the plan's steps (see
    /// [`RunState::active_steps`]), and an interrupted abort continues it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo: Option<UndoRun>,
}

/// An abort's undo plan and how far it got (see [`crate::abort`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UndoRun {
    /// The undo steps, derived from what the migration did ([`crate::abort::undo_plan`]).
    pub steps: Vec<Step>,
    /// Index of the next undo step to run (`steps.len()` when the undo is done).
    pub next_step: usize,
    /// Seconds each finished undo step took.
    pub step_seconds: Vec<f64>,
    /// What the undo steps changed, one line each, in the order they ran.
    pub undone: Vec<String>,
}

impl UndoRun {
    /// An undo plan not started yet.
    pub fn new(steps: Vec<Step>) -> Self {
        Self {
            steps,
            next_step: 0,
            step_seconds: Vec::new(),
            undone: Vec::new(),
        }
    }
}

impl RunState {
    /// A fresh state for a plan.
    pub fn new(plan: Plan) -> Self {
        Self {
            plan,
            next_step: 0,
            copy_started: false,
            copy_id: None,
            source_digest: None,
            copy_digest: None,
            step_seconds: Vec::new(),
            outcome: "running".into(),
            adopt_started: false,
            adopted: None,
            register_started: false,
            registered: None,
            upload_started: false,
            uploaded: None,
            aborted: false,
            replica_id: None,
            flatten_started: false,
            undo: None,
        }
    }

    /// The steps the executor works through: an abort's undo plan once an abort started,
    /// else the plan's.
    pub fn active_steps(&self) -> &[Step] {
        match &self.undo {
            Some(u) => &u.steps,
            None => &self.plan.steps,
        }
    }

    /// Index of the next of [`RunState::active_steps`] to run.
    pub fn active_next(&self) -> usize {
        match &self.undo {
            Some(u) => u.next_step,
            None => self.next_step,
        }
    }

    /// Whether every one of [`RunState::active_steps`] ran.
    pub fn active_done(&self) -> bool {
        self.active_next() >= self.active_steps().len()
    }

    /// Record that active step `index` ran in `seconds`; after the last one the outcome is
    /// `finished` (a migration) or `aborted` (an undo plan).
    pub(crate) fn active_step_ran(&mut self, index: usize, seconds: f64) {
        match &mut self.undo {
            Some(u) => {
                u.next_step = index + 1;
                u.step_seconds.push(seconds);
            }
            None => {
                self.next_step = index + 1;
                self.step_seconds.push(seconds);
            }
        }
        if self.active_done() {
            match self.undo {
                Some(_) => self.mark_aborted(),
                None => self.outcome = "finished".into(),
            }
        }
    }

    /// The undo is complete: a later `migrate` of the same image starts a fresh plan.
    pub(crate) fn mark_aborted(&mut self) {
        self.aborted = true;
        self.outcome = "aborted".into();
    }

    /// Whether an abort started and has not finished (a `migrate`, `resume` or `cleanup`
    /// must not run the plan's steps over a half-undone migration).
    pub fn aborting(&self) -> bool {
        self.undo.is_some() && !self.aborted
    }

    /// Whether every step ran.
    pub fn finished(&self) -> bool {
        self.next_step >= self.plan.steps.len()
    }

    /// Whether the copy was verified equal to the source.
    pub fn verified(&self) -> bool {
        self.source_digest.is_some() && self.source_digest == self.copy_digest
    }

    /// Whether the copy may be handed to the destination cloud: verified equal to the
    /// source by this run, in place before the plan (split roles: the Ceph admins verified
    /// it), or the clone of a replica this run promoted without force (librbd allows that
    /// only once the replica holds everything up to the source's demotion; the sha256
    /// proof follows, with the source kept demoted until then).
    pub fn copy_cleared(&self) -> bool {
        self.verified()
            || self.plan.migration.origin == crate::plan::Origin::InPlace
            || self.cloned_after_promotion()
    }

    /// Whether this run's clone of the promoted replica exists (its step ran, its id is
    /// recorded).
    fn cloned_after_promotion(&self) -> bool {
        let cloned_at = self
            .plan
            .steps
            .iter()
            .position(|s| matches!(s, Step::CloneReplica { .. }));
        cloned_at.is_some_and(|i| self.next_step > i) && self.copy_id.is_some()
    }

    /// Whether the copy was handed to the destination cloud (adoption or registration was
    /// sent at least once): the cloud owns it from then on.
    pub fn handed_to_cloud(&self) -> bool {
        self.adopt_started
            || self.register_started
            || self.adopted.is_some()
            || self.registered.is_some()
    }
}

/// Check a migration id given by a user: it names a file in the state directory, so it must
/// be a plain file name, as [`crate::plan::VolumeMigration::id`] makes them (letters, digits,
/// `.`, `_`, `-`, not starting with `.`). `../x` or `/etc/x` would reach outside the state
/// directory.
pub fn check_migration_id(id: &str) -> Result<(), SpecError> {
    let reason = if id.is_empty() {
        "it is empty"
    } else if id.starts_with('.') {
        "it starts with '.'"
    } else if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        "it has characters other than letters, digits, '.', '_' and '-' (a path?)"
    } else {
        return Ok(());
    };
    Err(SpecError::new(
        "migration id",
        id,
        &format!("{reason}; give the id exactly as `rbd-relay list` shows it"),
    ))
}

/// The recorded state of migration `id` in `dir`, or [`Error::UnknownMigration`] naming the
/// directory and pointing at `rbd-relay list`. An `id` that is not a plain file name is
/// refused ([`check_migration_id`]).
pub fn recorded(dir: &Path, id: &str) -> Result<RunState> {
    check_migration_id(id)?;
    load(&StateFile::path_for(dir, id))?.ok_or_else(|| Error::UnknownMigration {
        id: id.to_string(),
        dir: dir.to_path_buf(),
    })
}

/// Lock recorded migration `id` (its migration and image locks) and read its state under the
/// lock: another run may have moved it on between the first read (which names the image to
/// lock) and the lock.
pub fn lock_recorded(dir: &Path, id: &str) -> Result<(StateFile, RunState)> {
    let first = recorded(dir, id)?;
    let file = StateFile::lock_migration(dir, &first.plan.migration)?;
    Ok((file, recorded(dir, id)?))
}

/// File name of the lock of one source image: readable, and unique through a digest of the
/// full name (sanitising alone would let `a/b_c` and `a_b/c` share a lock).
fn image_lock_name(image: &str) -> String {
    use sha2::Digest;
    let readable: String = image
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    let digest = sha2::Sha256::digest(image.as_bytes());
    format!("image-{readable}-{}.lock", hex::encode(&digest[..6]))
}

/// File name of the lock of one copy target (`CLUSTER:POOL/NAME`), like [`image_lock_name`].
fn target_lock_name(target: &str) -> String {
    image_lock_name(target).replacen("image-", "target-", 1)
}

/// Take `lock` exclusively, retrying a busy one for 1 s; `false` when another holds it still.
/// A lock can outlive its holder by a moment: a process that forks keeps a copy of every
/// descriptor in the child until the child's exec closes it (the tests run `sh` while other
/// tests hold locks), so a busy lock is not at once another run.
fn try_lock_briefly(lock: &File) -> bool {
    let since = std::time::Instant::now();
    while lock.try_lock().is_err() {
        if since.elapsed() >= std::time::Duration::from_secs(1) {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    true
}

/// A state file on disk with its lock held for as long as this value lives.
pub struct StateFile {
    path: PathBuf,
    _lock: File,
    _image_lock: File,
    _target_lock: Option<File>,
}

impl StateFile {
    /// The default directory: `$RBD_RELAY_STATE_DIR`, else `$XDG_STATE_HOME/rbd-relay`, else
    /// `~/.local/state/rbd-relay`, else `/var/lib/rbd-relay`.
    pub fn default_dir() -> PathBuf {
        if let Some(d) = std::env::var_os("RBD_RELAY_STATE_DIR") {
            return PathBuf::from(d);
        }
        if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
            return PathBuf::from(d).join("rbd-relay");
        }
        if let Some(h) = std::env::var_os("HOME") {
            return PathBuf::from(h).join(".local/state/rbd-relay");
        }
        PathBuf::from("/var/lib/rbd-relay")
    }

    /// Path of the state file of migration `id` in `dir`.
    pub fn path_for(dir: &Path, id: &str) -> PathBuf {
        dir.join(format!("{id}.json"))
    }

    /// Take the lock of migration `id` in `dir` (creating the directory), and the lock of the
    /// image it moves: `image` names it (e.g. `site-a:volumes/vol1`), so two migrations of
    /// one image (another copy name, another destination) do not run at once either. Fails
    /// with [`Error::Locked`] when another run holds either.
    pub fn lock(dir: &Path, id: &str, image: &str) -> Result<Self> {
        let err = |reason: String| Error::State {
            path: dir.to_path_buf(),
            reason,
        };
        fs::create_dir_all(dir)
            .map_err(|e| err(cannot_write("cannot create directory", &e, dir)))?;
        let take = |lock_path: PathBuf| -> Result<File> {
            let lock = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(|e| err(cannot_write("cannot open lock file", &e, dir)))?;
            if !try_lock_briefly(&lock) {
                return Err(Error::Locked {
                    image: image.to_string(),
                    path: lock_path,
                });
            }
            Ok(lock)
        };
        let lock = take(dir.join(format!("{id}.lock")))?;
        let image_lock = take(dir.join(image_lock_name(image)))?;
        Ok(Self {
            path: Self::path_for(dir, id),
            _lock: lock,
            _image_lock: image_lock,
            _target_lock: None,
        })
    }

    /// Take the locks of `migration` (see [`StateFile::lock`]) and the lock of its copy
    /// target (`DESTINATION:POOL/NAME`), so that two migrations of different sources into
    /// one copy name never run at once (the second would find the first's copy under its
    /// name). The target lock file holds the id of the migration holding it, and a busy one
    /// fails with [`Error::TargetLocked`] naming that migration.
    pub fn lock_migration(dir: &Path, migration: &crate::plan::VolumeMigration) -> Result<Self> {
        let id = migration.id();
        let mut file = Self::lock(dir, &id, &migration.lock_name())?;
        let target = migration.target_lock_name();
        let lock_path = dir.join(target_lock_name(&target));
        let err = |reason: String| Error::State {
            path: lock_path.clone(),
            reason,
        };
        let mut lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(|e| err(cannot_write("cannot open lock file", &e, dir)))?;
        if !try_lock_briefly(&lock) {
            let holder = fs::read_to_string(&lock_path).unwrap_or_default();
            return Err(Error::TargetLocked {
                target,
                other: holder.trim().to_string(),
                path: lock_path,
            });
        }
        lock.set_len(0)
            .and_then(|_| lock.write_all(id.as_bytes()))
            .and_then(|_| lock.flush())
            .map_err(|e| err(cannot_write("cannot write lock file", &e, dir)))?;
        file._target_lock = Some(lock);
        Ok(file)
    }

    /// The state directory the file is in.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// Path of the state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Load the recorded state, `None` when there is none.
    pub fn load(&self) -> Result<Option<RunState>> {
        load(&self.path)
    }

    /// Write the state atomically (temp file, fsync, rename; the state it replaces kept as `ID.json.bak`).
    pub fn save(&self, state: &RunState) -> Result<()> {
        save_to(&self.path, state)
    }

    /// Remove the state file and its backup (`cleanup --forget`).
    pub fn remove(&self) -> Result<()> {
        fs::remove_file(&self.path).map_err(|e| Error::State {
            path: self.path.clone(),
            reason: format!("cannot remove: {e}"),
        })?;
        match fs::remove_file(backup_path(&self.path)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::State {
                path: backup_path(&self.path),
                reason: format!("cannot remove: {e}"),
            }),
            _ => Ok(()),
        }
    }
}

/// Where the executor records a run after every step: its state file, or nowhere.
pub(crate) trait Record: Sync {
    /// Write the state.
    fn save(&self, state: &RunState) -> Result<()>;
    /// The state file, when the run is recorded in one.
    fn file(&self) -> Option<&Path>;
}

impl Record for StateFile {
    fn save(&self, state: &RunState) -> Result<()> {
        StateFile::save(self, state)
    }

    fn file(&self) -> Option<&Path> {
        Some(&self.path)
    }
}

/// A run recorded nowhere: the split roles' tenant step alone, whose record is the marker
/// it leaves on the volume or image in the cloud (a re-run looks for it first).
pub(crate) struct Unrecorded;

impl Record for Unrecorded {
    fn save(&self, _: &RunState) -> Result<()> {
        Ok(())
    }

    fn file(&self) -> Option<&Path> {
        None
    }
}

/// Why a file of the state directory `dir` could not be written, and what to do: the state
/// recorded so far is kept (every write is atomic), so once the directory takes writes
/// again the same command continues; a migration not started yet can also use another
/// state directory.
fn cannot_write(what: &str, e: &std::io::Error, dir: &Path) -> String {
    format!(
        "{what}: {e}. Nothing recorded so far is lost: make {dir} writable and free space in it (`df -h {dir}`), then re-run the same command to continue; a migration not started yet can also use another --state-dir (or RBD_RELAY_STATE_DIR)",
        dir = dir.display()
    )
}

/// Path of the backup of state file `path`: `ID.json.bak`, the last good state before the
/// latest replace.
pub fn backup_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".bak");
    PathBuf::from(name)
}

/// Write `bytes` to `path` atomically (temp file in the same directory, fsync, rename).
pub(crate) fn write_file_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let err = |reason: String| Error::State {
        path: path.to_path_buf(),
        reason,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| err(cannot_write("cannot create temp file", &e, dir)))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| err(cannot_write("cannot write", &e, dir)))?;
    tmp.persist(path)
        .map_err(|e| err(cannot_write("cannot rename into place", &e.error, dir)))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Write `state` to `path` atomically (temp file, fsync, rename). The state it replaces is
/// first kept as `ID.json.bak` (when it still reads as a state), so a state file damaged
/// later (a full disk, an editor) can be recovered from the backup by [`load`].
pub(crate) fn save_to(path: &Path, state: &RunState) -> Result<()> {
    let err = |reason: String| Error::State {
        path: path.to_path_buf(),
        reason,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    if let Ok(bytes) = fs::read(path) {
        if parse(path, &bytes).is_ok() {
            let mut bak = tempfile::NamedTempFile::new_in(dir)
                .map_err(|e| err(cannot_write("cannot create temp file", &e, dir)))?;
            bak.write_all(&bytes)
                .and_then(|_| bak.as_file().sync_all())
                .map_err(|e| err(cannot_write("cannot write the backup", &e, dir)))?;
            bak.persist(backup_path(path)).map_err(|e| {
                err(cannot_write(
                    "cannot rename the backup into place",
                    &e.error,
                    dir,
                ))
            })?;
        }
    }
    let json = serde_json::to_vec_pretty(state).map_err(|e| err(e.to_string()))?;
    write_file_atomically(path, &json)
}

/// The recorded state of migration `id` for `rbd-relay resume`: like [`recorded`], but an
/// aborted migration is refused (resuming it would silently start a fresh plan).
pub fn resumable(dir: &Path, id: &str) -> Result<RunState> {
    let s = recorded(dir, id)?;
    if s.aborted {
        return Err(Error::ResumeRefusedAborted {
            id: id.to_string(),
            image: s.plan.migration.image.to_string(),
        });
    }
    if s.aborting() {
        return Err(Error::abort_unfinished(&s));
    }
    Ok(s)
}

/// Whether a process runs migration `id` in `dir` now: its lock is held. A recorded outcome
/// of `running` whose lock is free belongs to a run that was killed or interrupted (a lock
/// dies with its process), so [`describe_outcome`] says "interrupted" for it.
pub fn run_active(dir: &Path, id: &str) -> bool {
    let Ok(lock) = OpenOptions::new()
        .write(true)
        .open(dir.join(format!("{id}.lock")))
    else {
        return false; // never locked: no run ever started here
    };
    // free: take it for an instant and let it go (dropping the file releases it)
    lock.try_lock().is_err()
}

/// The outcome of a recorded migration as `list` shows it: the recorded text, except that a
/// migration recorded as `running` whose process is gone reads "interrupted at step N/M".
pub fn describe_outcome(state: &RunState, active: bool) -> String {
    if let Some(u) = state
        .undo
        .as_ref()
        .filter(|_| state.aborting() && state.outcome == "aborting" && !active)
    {
        return format!(
            "abort interrupted at undo step {}/{} (no process runs it; `rbd-relay abort {}` continues)",
            (u.next_step + 1).min(u.steps.len()),
            u.steps.len(),
            state.plan.id
        );
    }
    if state.outcome == "running" && !active {
        format!(
            "interrupted at step {}/{} (no process runs it; `rbd-relay resume {}` continues)",
            (state.next_step + 1).min(state.plan.steps.len()),
            state.plan.steps.len(),
            state.plan.id
        )
    } else {
        state.outcome.clone()
    }
}

/// Parse a state file's bytes: a plan version newer than this build's
/// ([`crate::plan::PLAN_VERSION`]) is refused before anything else is read.
fn parse(path: &Path, bytes: &[u8]) -> Result<RunState> {
    if let Some(v) = newer_version(bytes) {
        {
            return Err(Error::State {
                path: path.to_path_buf(),
                reason: format!(
                    "written by a newer rbd-relay (plan version {v}; this one reads up to version {}); continue the migration with that newer rbd-relay",
                    crate::plan::PLAN_VERSION
                ),
            });
        }
    }
    let state: RunState = serde_json::from_slice(bytes).map_err(|e| Error::State {
        path: path.to_path_buf(),
        reason: format!("unreadable ({e}); move it away to start over"),
    })?;
    // every user of a state indexes the plan's steps by next_step
    if state.next_step > state.plan.steps.len() {
        return Err(Error::State {
            path: path.to_path_buf(),
            reason: format!(
                "damaged: next_step {} is past the plan's {} steps; nothing was changed. Move the file away and check the migration's images by hand (rbd info, rbd mirror image status)",
                state.next_step,
                state.plan.steps.len()
            ),
        });
    }
    if let Some(u) = state.undo.as_ref().filter(|u| u.next_step > u.steps.len()) {
        return Err(Error::State {
            path: path.to_path_buf(),
            reason: format!(
                "damaged: the undo plan's next_step {} is past its {} steps; nothing was changed. Move the file away and check the migration's images by hand (rbd info, rbd mirror image status)",
                u.next_step,
                u.steps.len()
            ),
        });
    }
    Ok(state)
}

/// The plan version of a state file's bytes when it is newer than this build reads.
fn newer_version(bytes: &[u8]) -> Option<u64> {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v.get("plan")?.get("version")?.as_u64())
        .filter(|v| *v > u64::from(crate::plan::PLAN_VERSION))
}

/// A state read from disk, and whether it came from the backup (`ID.json.bak`) because
/// the state file itself was damaged: then `recovered` says so, for the operator.
#[derive(Debug)]
pub struct Loaded {
    /// The state.
    pub state: RunState,
    /// Why the backup was used, when it was.
    pub recovered: Option<String>,
}

/// Read a state file without locking; a damaged (truncated, unparsable) state file is
/// replaced by its backup when that reads, saying so in [`Loaded::recovered`]. A state of a
/// newer plan version is refused, never replaced by an older backup.
pub fn load_checked(path: &Path) -> Result<Option<Loaded>> {
    match fs::read(path) {
        Ok(bytes) => match parse(path, &bytes) {
            Ok(state) => Ok(Some(Loaded {
                state,
                recovered: None,
            })),
            Err(e) if newer_version(&bytes).is_some() => Err(e),
            Err(e) => {
                let bak = backup_path(path);
                match fs::read(&bak).ok().map(|b| parse(&bak, &b)) {
                    Some(Ok(state)) => Ok(Some(Loaded {
                        recovered: Some(format!(
                            "{e}; using its backup {} (the state before the last step's save; that step runs again)",
                            bak.display()
                        )),
                        state,
                    })),
                    _ => Err(e),
                }
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::State {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

/// Read a state file without locking (for `list`/`status`); see [`load_checked`] (a
/// recovery from the backup is logged).
pub fn load(path: &Path) -> Result<Option<RunState>> {
    Ok(load_checked(path)?.map(|l| {
        if let Some(why) = &l.recovered {
            tracing::warn!("state file {}: {why}", path.display());
        }
        l.state
    }))
}

/// All readable recorded migrations in a directory; see [`list_all`] for the unreadable ones.
pub fn list(dir: &Path) -> Result<Vec<(PathBuf, RunState)>> {
    Ok(list_all(dir)?.0)
}

/// All recorded migrations in a directory, plus the state files that could not be read (with
/// why), so one damaged file does not hide the others.
#[allow(clippy::type_complexity)]
pub fn list_all(dir: &Path) -> Result<(Vec<(PathBuf, RunState)>, Vec<(PathBuf, String)>)> {
    let mut bad = Vec::new();
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((out, bad)),
        Err(e) => {
            return Err(Error::State {
                path: dir.to_path_buf(),
                reason: e.to_string(),
            })
        }
    };
    for entry in entries.flatten() {
        let p = entry.path();
        if p.extension().is_some_and(|e| e == "json") {
            match load(&p) {
                Ok(Some(s)) => out.push((p, s)),
                Ok(None) => {}
                Err(e) => bad.push((p, e.to_string())),
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    bad.sort();
    Ok((out, bad))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_migrations_of_one_image_do_not_run_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateFile::lock(dir.path(), "to-b-copy1", "site-a:volumes/x").unwrap();
        // same migration again: refused
        let e = StateFile::lock(dir.path(), "to-b-copy1", "site-a:volumes/x").err();
        assert!(matches!(e, Some(Error::Locked { .. })), "{e:?}");
        // another copy name of the same image: refused too, naming the image
        match StateFile::lock(dir.path(), "to-b-copy2", "site-a:volumes/x") {
            Err(Error::Locked { image, .. }) => assert_eq!(image, "site-a:volumes/x"),
            other => panic!("{:?}", other.err()),
        }
        // other images, also ones that sanitise alike, are free
        let _y = StateFile::lock(dir.path(), "y", "site-a:volumes/y").unwrap();
        let _a = StateFile::lock(dir.path(), "ab1", "site-a:a/b_c").unwrap();
        let _b = StateFile::lock(dir.path(), "ab2", "site-a:a_b/c").unwrap();
        drop(first);
        let _again = StateFile::lock(dir.path(), "to-b-copy2", "site-a:volumes/x").unwrap();
    }

    #[test]
    fn a_run_is_active_only_while_its_lock_is_held() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!run_active(dir.path(), "m1"), "never started");
        let held = StateFile::lock(dir.path(), "m1", "site-a:volumes/x").unwrap();
        assert!(run_active(dir.path(), "m1"));
        drop(held);
        assert!(
            !run_active(dir.path(), "m1"),
            "the lock died with its holder"
        );
        // looking did not take the lock for good
        let _again = StateFile::lock(dir.path(), "m1", "site-a:volumes/x").unwrap();
    }
}
