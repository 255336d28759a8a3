//! Unit tests of `abort`, `cleanup` and batches on the in-memory fake: what is undone when,
//! refusals that change nothing, re-runs that converge, a fresh plan after an abort, one
//! failing image of a batch not stopping the others.

use crate::fake::fixtures::data;
use crate::fake::World;
use crate::features::Features;
use crate::ops::SnapshotNamespace;

mod cleanup_and_batch;
mod runs;
mod undo_plan;

/// The source exactly as before any migration, and nothing of it on the destination.
fn assert_undone(w: &World, original: Features) {
    let src = &w.sites[0].images["volumes/vol1"];
    assert_eq!(src.features, original, "source features restored exactly");
    assert_eq!(src.mirror, None, "source mirroring disabled");
    assert_eq!(src.data, data(), "source data untouched");
    assert!(
        !src.snaps
            .iter()
            .any(|s| matches!(s.namespace, SnapshotNamespace::Mirror { .. })),
        "no mirror snapshot left"
    );
    assert!(
        !w.sites[1].images.contains_key("volumes/vol1"),
        "no replica"
    );
    assert!(!w.sites[1].images.contains_key("cinder/vol1"), "no copy");
    assert!(
        !src.meta.contains_key(crate::preflight::SOURCE_MARKER_KEY),
        "the migration's marker removed"
    );
}
