//! The marker a migration keeps on its source image (image metadata) from before its first
//! change to it until the source is restored, and the originals a fresh plan takes from it.
//! Kept apart from the read-only checks (`preflight`), which re-export it: the executor
//! writes and removes the marker, preflight only reads it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::event::{Event, EventSink};
use crate::features::MirrorImageMode;
use crate::ops::{CephOps, OpsError};
use crate::plan::{SourceFacts, VolumeMigration};
use crate::preflight::problem;

/// Image metadata key, on the source image, of the [`SourceMarker`] of the migration that
/// changes it.
pub const SOURCE_MARKER_KEY: &str = "rbd-relay.migration";

/// What a migration keeps on its source image (as image metadata [`SOURCE_MARKER_KEY`])
/// from before its first change to it until the source is restored: which run changes the
/// image and the image's original facts. The state file can be lost (a deleted or damaged
/// state directory, another host); the image cannot, so a fresh plan of the same migration
/// takes the originals from here instead of from the already changed image, and a run of
/// another migration (or of the same one from another host or state directory) is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceMarker {
    /// Migration id.
    pub migration: String,
    /// Host the run was started on.
    pub host: String,
    /// State directory of the run.
    pub state_dir: String,
    /// Mirroring mode.
    pub mode: MirrorImageMode,
    /// The copy target, `CLUSTER:POOL/NAME`.
    pub copy: String,
    /// The source's facts before the migration changed anything.
    pub facts: SourceFacts,
}

impl SourceMarker {
    /// The marker of migration `m` run from `state_dir` on this host.
    pub fn new(m: &VolumeMigration, state_dir: &Path, facts: &SourceFacts) -> Self {
        Self {
            migration: m.id(),
            host: this_host(),
            state_dir: state_dir_name(state_dir),
            mode: m.mode,
            copy: m.target_lock_name(),
            facts: facts.clone(),
        }
    }

    /// Whether this marker was written by migration `m` run from `state_dir` on this host.
    pub fn is_run_of(&self, m: &VolumeMigration, state_dir: &Path) -> bool {
        self.migration == m.id()
            && self.host == this_host()
            && self.state_dir == state_dir_name(state_dir)
    }

    /// How the marker names its run in messages.
    pub fn describe(&self) -> String {
        format!(
            "migration {} ({} mode, copy {}) run from host {} with state dir {}",
            self.migration, self.mode, self.copy, self.host, self.state_dir
        )
    }
}

/// This host's name (`/proc/sys/kernel/hostname`, else `$HOSTNAME`).
fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into())
}

/// The state directory as recorded in a marker: its canonical path when it exists.
fn state_dir_name(dir: &Path) -> String {
    std::fs::canonicalize(dir)
        .unwrap_or_else(|_| dir.to_path_buf())
        .display()
        .to_string()
}

/// The marker on `m`'s source image as a Ceph call: `None` when there is none, the text
/// with why it does not parse when it does not.
pub(crate) fn read_marker_ops(
    src: &dyn CephOps,
    m: &VolumeMigration,
) -> std::result::Result<Option<std::result::Result<SourceMarker, String>>, OpsError> {
    Ok(src
        .metadata_get(&m.image, SOURCE_MARKER_KEY)?
        .map(|text| serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))))
}

/// The marker on `m`'s source image, `None` when there is none.
pub fn read_marker(m: &VolumeMigration, src: &dyn CephOps) -> Result<Option<SourceMarker>> {
    let ceph = |e: OpsError| Error::Ceph {
        step: "preflight".into(),
        cluster: src.name().to_string(),
        target: m.image.to_string(),
        source: e,
    };
    let Some(text) = src
        .metadata_get(&m.image, SOURCE_MARKER_KEY)
        .map_err(ceph)?
    else {
        return Ok(None);
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        Error::Preflight(vec![problem(
            format!(
                "{}:{} carries an unreadable rbd-relay marker (image metadata {SOURCE_MARKER_KEY}: {e})",
                src.name(),
                m.image
            ),
            format!(
                "look at it with `rbd --cluster {} image-meta get {} {SOURCE_MARKER_KEY}`; if no migration of this image runs any more, remove it with `rbd --cluster {0} image-meta remove {1} {SOURCE_MARKER_KEY}` and re-run",
                src.name(),
                m.image
            ),
        )])
    })
}

/// The source's original facts for a fresh plan of `m` from `state_dir`, given what
/// preflight read now (`now`). With no marker on the image they are `now`. With a marker of
/// this run (its state file was lost) they are the marker's: the image's current features
/// and mirroring are the migration's doing, not the originals. A marker of another
/// migration, or of this one run from another host or state directory, is refused naming
/// it; nothing is changed.
pub fn originals(
    m: &VolumeMigration,
    src: &dyn CephOps,
    state_dir: &Path,
    now: SourceFacts,
    events: &dyn EventSink,
) -> Result<SourceFacts> {
    match read_marker(m, src)? {
        None => Ok(now),
        Some(marker) if marker.is_run_of(m, state_dir) => {
            events.emit(Event::Warning {
                message: format!(
                    "no state file of migration {} is left, but {}:{} carries its marker: the original features ({}) and mirroring come from the marker, not from the image as it is now",
                    marker.migration,
                    src.name(),
                    m.image,
                    marker.facts.features
                ),
            });
            Ok(marker.facts)
        }
        Some(marker) => Err(Error::Preflight(vec![claimed(m, src, &marker)])),
    }
}

/// The refusal of a run of `m` on a source that `marker` (another migration, or this one
/// from another host or state directory) changes.
fn claimed(
    m: &VolumeMigration,
    src: &dyn CephOps,
    marker: &SourceMarker,
) -> crate::preflight::Problem {
    problem(
        format!(
            "{}:{} is being migrated by {}",
            src.name(),
            m.image,
            marker.describe()
        ),
        format!(
            "continue or abort that migration where it runs (rbd-relay resume/abort {}); two runs must not change one image",
            marker.migration
        ),
    )
}

/// The refusal of a fresh run of `m` from `state_dir` when the source carries the marker
/// of another run, `None` when it carries none or this run's. Checked before the other
/// checks of the source: the other run's changes (mirroring, journaling, its open image)
/// would otherwise be reported as this image's own problems, hiding the real one.
pub fn claimed_by_another(
    m: &VolumeMigration,
    src: &dyn CephOps,
    state_dir: &Path,
) -> Result<Option<crate::preflight::Problem>> {
    // a marker that cannot be read (no image, a damaged marker) is left to the other checks
    // and to `originals`, which name it
    Ok(match read_marker(m, src) {
        Ok(Some(marker)) if !marker.is_run_of(m, state_dir) => Some(claimed(m, src, &marker)),
        _ => None,
    })
}
