//! Undoing a migration that will not be finished (`rbd-relay abort ID`): put the source back
//! as it was and remove what this migration made on the destination, without ever touching
//! the source's data.
//!
//! What is undone, each only when needed (so a re-run after a crash converges, and a second
//! abort is a no-op):
//!
//! - the destination copy, only if this migration created it (the image under the copy name
//!   has the id recorded when the copy created it: another migration's copy under the same
//!   name is left alone and named) and it was not handed to a cloud; a *verified* copy only with [`AbortOptions::discard_verified_copy`]
//!   (otherwise `cleanup` is the way: keep the copy, finish the source side);
//! - mirroring of the source image, only if it was off before the migration (disabling it
//!   deletes the replica on the destination; the source image itself is untouched);
//! - mirror snapshots of the source that did not exist before the migration;
//! - the source's features, back to exactly the recorded original ones (as far as librbd
//!   allows: a deep-flatten disabled with `--disable-object-map` cannot come back);
//! - the migration's marker on the source (image metadata, see
//!   [`crate::preflight::SourceMarker`]), last.
//!
//! Pool mirror modes are left as they are and only reported: other images may be mirrored
//! through the same pool and peers by now. After adoption or registration abort refuses:
//! the destination cloud owns the copy then. The state is marked `aborted`, so a later
//! `migrate` of the same image starts a fresh plan.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::event::{Event, EventSink};
use crate::exec::{converge_features, on_ceph, remove_own_image, unmark_source};
use crate::ops::{CephOps, MirrorImageState, SnapshotNamespace};
use crate::plan::Step;
use crate::state;

/// Choices of an abort.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortOptions {
    /// Also remove a copy that was already verified equal to the source (refused without).
    pub discard_verified_copy: bool,
}

/// What [`abort`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortReport {
    /// Migration id.
    pub id: String,
    /// `cluster:pool/image` of the source.
    pub source: String,
    /// `cluster:pool/image` of the copy.
    pub copy: String,
    /// What this call undid, one line each.
    pub undone: Vec<String>,
    /// Things the operator should know (left as they are on purpose).
    pub notes: Vec<String>,
}

struct Undo<'a> {
    events: &'a dyn EventSink,
    index: usize,
    started: Instant,
    undone: Vec<String>,
}

impl Undo<'_> {
    fn start(&mut self, step: &str, description: String) {
        self.started = Instant::now();
        self.events.emit(Event::StepStarted {
            index: self.index,
            step: step.into(),
            description,
        });
    }

    fn end(&mut self, step: &str, done: Option<String>, skipped_reason: &str) {
        match done {
            Some(what) => {
                self.events.emit(Event::StepDone {
                    index: self.index,
                    step: step.into(),
                    seconds: self.started.elapsed().as_secs_f64(),
                });
                self.undone.push(what);
            }
            None => self.events.emit(Event::StepSkipped {
                index: self.index,
                step: step.into(),
                reason: skipped_reason.into(),
            }),
        }
        self.index += 1;
    }
}

/// Abort migration `id` recorded in `state_dir`: undo what is safe to undo (see the module
/// docs), mark the state `aborted`. Takes the migration's lock.
pub async fn abort(
    state_dir: &Path,
    id: &str,
    src: Arc<dyn CephOps>,
    dst: Arc<dyn CephOps>,
    opts: AbortOptions,
    events: Arc<dyn EventSink>,
) -> Result<AbortReport> {
    let (file, mut state) = state::lock_recorded(state_dir, id)?;
    let m = state.plan.migration.clone();
    let facts = state.plan.facts.clone();
    let (image, target) = (m.image.clone(), m.copy_target());
    let source = format!("{}:{image}", src.name());
    let copy = format!("{}:{target}", dst.name());
    if state.handed_to_cloud() {
        let what = match (&state.adopted, &state.registered) {
            (Some(v), _) => format!(" (Cinder volume {})", v.id),
            (_, Some(i)) => format!(" (Glance image {})", i.id),
            _ => " (the request was sent)".to_string(),
        };
        let cloud = m
            .adopt
            .as_ref()
            .map(|a| a.cloud.clone())
            .or_else(|| m.register.as_ref().map(|r| r.cloud.clone()))
            .unwrap_or_default();
        return Err(Error::Unsafe(format!(
            "migration {id} handed its copy to cloud {cloud}{what}; the destination cloud owns it now, so abort changes nothing: remove it in that cloud if it is not wanted, and finish the source side with `rbd-relay cleanup {id}` (or `rbd-relay resume {id}`)"
        )));
    }
    if state.finished() && !state.aborted {
        return Err(Error::Unsafe(format!(
            "migration {id} is finished; there is nothing to abort: the verified copy {copy} is the destination's now and the source is as it was (remove the copy with `rbd --cluster {} rm {target}` if it is not wanted)",
            dst.name()
        )));
    }
    let (d, t) = (dst.clone(), target.clone());
    let under_name = if state.copy_started {
        on_ceph(
            "abort",
            dst.name().to_string(),
            target.to_string(),
            move || match d.stat(&t) {
                Ok(st) => Ok(Some(st.id)),
                Err(e) if e.kind == crate::ops::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            },
        )
        .await?
    } else {
        None
    };
    let mut notes = Vec::new();
    // only an image with the recorded id is this migration's copy
    let copy_exists = match (&under_name, &state.copy_id) {
        (Some(found), Some(ours)) if found == ours => true,
        (Some(found), _) => {
            notes.push(format!(
                "{copy} (image id {found}) was not created by migration {id} and is left alone (it may be another migration's copy)"
            ));
            false
        }
        (None, _) => false,
    };
    if copy_exists && state.verified() && !opts.discard_verified_copy {
        return Err(Error::Unsafe(format!(
            "the copy {copy} of migration {id} is already verified; abort would remove it. Keep it and put the source back with `rbd-relay cleanup {id}`, or remove it anyway with `rbd-relay abort {id} --discard-verified-copy`"
        )));
    }
    let mut undo = Undo {
        events: events.as_ref(),
        index: 0,
        started: Instant::now(),
        undone: Vec::new(),
    };

    // 1. the copy, only if this migration made it
    undo.start(
        "remove_copy",
        format!("remove the copy {copy} if this migration created it"),
    );
    let done = if copy_exists {
        let (d, t) = (dst.clone(), target.clone());
        let snaps = on_ceph(
            "remove_copy",
            dst.name().to_string(),
            target.to_string(),
            move || d.snapshots(&t),
        )
        .await?;
        if !snaps.is_empty() {
            return Err(Error::Unsafe(format!(
                "the copy {copy} has snapshot(s) ({}); abort does not remove snapshots on the destination: remove them (rbd snap unprotect / snap purge) and re-run",
                snaps.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
        let ours = state.copy_id.clone().unwrap_or_default();
        remove_own_image("remove_copy", &dst, &target, &ours, events.as_ref()).await?;
        Some(format!("removed the copy {copy}"))
    } else {
        None
    };
    undo.end(
        "remove_copy",
        done,
        if state.copy_started {
            "the copy is already gone"
        } else {
            "this migration created no copy"
        },
    );

    // 2. mirroring of the source, only if this migration turned it on
    undo.start(
        "disable_mirroring",
        format!(
            "disable mirroring of {source} if this migration enabled it (removes the replica on {}; the source's data is untouched)",
            dst.name()
        ),
    );
    let done = if facts.mirroring_was_enabled {
        None
    } else {
        let (s, i) = (src.clone(), image.clone());
        let disabled = on_ceph(
            "disable_mirroring",
            src.name().to_string(),
            image.to_string(),
            move || {
                // `disabling` too: a run killed in the middle of disabling left it so, and
                // disabling again completes it (as the executor's own step does)
                let mi = s.mirror_image(&i)?;
                if mi.state != MirrorImageState::Disabled {
                    s.disable_mirroring(&i, false)?;
                    return Ok(true);
                }
                Ok(false)
            },
        )
        .await?;
        disabled.then(|| {
            format!(
                "disabled mirroring of {source} (rbd-mirror removes the replica {}:{})",
                dst.name(),
                m.replica()
            )
        })
    };
    undo.end(
        "disable_mirroring",
        done,
        if facts.mirroring_was_enabled {
            "mirroring was on before this migration; left on"
        } else {
            "mirroring is already off"
        },
    );

    // 3. mirror snapshots this migration made
    undo.start(
        "remove_mirror_snapshots",
        format!("remove the mirror snapshots of {source} made by this migration"),
    );
    let done = if facts.mirroring_was_enabled {
        None
    } else {
        let (s, i) = (src.clone(), image.clone());
        let before = facts.mirror_snapshots_before.clone();
        let removed = on_ceph(
            "remove_mirror_snapshots",
            src.name().to_string(),
            image.to_string(),
            move || {
                let mut n = 0usize;
                for snap in s.snapshots(&i)? {
                    if matches!(snap.namespace, SnapshotNamespace::Mirror { .. })
                        && !before.contains(&snap.id)
                    {
                        s.remove_snapshot_by_id(&i, snap.id)?;
                        n += 1;
                    }
                }
                Ok(n)
            },
        )
        .await?;
        (removed > 0).then(|| format!("removed {removed} mirror snapshot(s) of {source}"))
    };
    undo.end(
        "remove_mirror_snapshots",
        done,
        "no mirror snapshot made by this migration",
    );

    // 4. the original features
    let changed_features = state
        .plan
        .steps
        .iter()
        .any(|s| matches!(s, Step::EnableFeatures { .. }));
    undo.start(
        "restore_features",
        format!(
            "give {source} its original features back ({})",
            facts.features
        ),
    );
    let done = if changed_features {
        let (s, i, wanted) = (src.clone(), image.clone(), facts.features);
        let changed = on_ceph(
            "restore_features",
            src.name().to_string(),
            image.to_string(),
            move || converge_features(s.as_ref(), &i, wanted),
        )
        .await?;
        changed.then(|| format!("restored the features of {source} to {}", facts.features))
    } else {
        None
    };
    undo.end(
        "restore_features",
        done,
        if changed_features {
            "features are already the original ones"
        } else {
            "this migration changed no features"
        },
    );

    for step in &state.plan.steps {
        if let Step::RestoreFeatures { lost, .. } = step {
            if !lost.is_empty() {
                notes.push(format!(
                    "{lost} cannot be enabled again on {source} (disabled with --disable-object-map)"
                ));
            }
        }
    }
    if state.plan.steps.contains(&Step::EnablePoolMirroring) {
        notes.push(format!(
            "image-mode mirroring of pool {} was turned on by this migration and is left on (other images may use it); if nothing else is mirrored: rbd --cluster {} mirror pool disable {} (and the same on {})",
            m.image.pool,
            src.name(),
            m.image.pool,
            dst.name()
        ));
    }
    state.aborted = true;
    state.outcome = "aborted".into();
    file.save(&state)?;
    // the source is as it was: its marker goes (see `crate::preflight::SourceMarker`)
    unmark_source(&src, &state, state_dir).await?;
    Ok(AbortReport {
        id: id.to_string(),
        source,
        copy,
        undone: undo.undone,
        notes,
    })
}
