//! The tenant admin's steps run alone (split roles): adopt or register an image that the Ceph
//! admins already put in the destination pool. Each is a one-step plan ([`Plan::in_place`])
//! run by the ordinary executor, so adoption and registration (and their recovery from an
//! interrupted run, by the plan's marker in the cloud) are written once.

use std::sync::Arc;

use super::executor::Executor;
use super::*;
use crate::cloud::{AdoptedVolume, CloudImage, CloudOps};
use crate::error::{Error, Result};
use crate::event::EventSink;
use crate::ops::{CephOps, SnapshotNamespace};
use crate::plan::{Adoption, Plan, Registration, VolumeMigration};
use crate::spec::{ClusterSpec, ImageSpec};
use crate::state::{RunState, Unrecorded};

/// The tenant admin's step alone (split roles): adopt an RBD image that is already in the
/// destination Cinder pool as a volume. Read-only checks first (admin credentials, host
/// resolvable and storing into `image`'s pool); idempotent: a re-run returns the volume an
/// earlier run adopted (found by the plan's marker in its metadata) instead of adopting
/// again.
///
/// Cancel safety: safe to drop at any await, also after Cinder adopted the image and before its
/// answer came: the next call finds that volume by the plan's marker and returns it instead of
/// adopting again (test:
/// `cancel_tests::cleanup_delete_source_and_adopt_image_dropped_at_any_await_are_finished_by_the_next_call`).
pub async fn adopt_image(
    cloud: Arc<dyn CloudOps>,
    image: &ImageSpec,
    adoption: &Adoption,
    events: Arc<dyn EventSink>,
) -> Result<AdoptedVolume> {
    let check = cloud
        .check_adopt(&adoption.target)
        .await
        .map_err(cloud_err("adopt_volume", cloud.as_ref()))?;
    if let Some(pool) = &check.pool {
        if pool != &image.pool.pool {
            return Err(Error::Preflight(vec![crate::preflight::Problem {
                what: format!(
                    "Cinder host {} of cloud {} stores into Ceph pool '{pool}', not '{}'",
                    check.host,
                    cloud.name(),
                    image.pool
                ),
                fix: "give the --cinder-host whose backend stores into the image's pool".into(),
            }]));
        }
    }
    // the tenant admin may not reach the cluster: it is named for messages only
    let cluster = ClusterSpec::named("destination")?;
    let m = VolumeMigration::in_place(cluster, image.clone(), Some(adoption.clone()), None);
    let exec = Executor::for_cloud_steps(None, Some(cloud), events);
    let state = run_in_place(&exec, m).await?;
    state.adopted.ok_or_else(|| Error::TaskFailed {
        step: "adopt_volume",
        reason: "the step ended without a volume".into(),
    })
}

/// The tenant admin's registration alone (split roles): register `image@snapshot` (already
/// in the destination Glance pool, snapshot protected by the Ceph destination admin) as a
/// Glance image by its rbd:// location. Read-only checks first (admin credentials, snapshot
/// there and protected); idempotent: a re-run returns the image an earlier run registered.
///
/// Cancel safety: safe to drop at any await: the next call finds the image a dropped call
/// registered by the plan's marker (an empty record it left, `queued` without a location, is
/// removed and registered again), so nothing is registered twice (test:
/// `cancel_tests::register_image_dropped_after_glance_acted_registers_once`).
pub async fn register_image(
    cloud: Arc<dyn CloudOps>,
    dst: Arc<dyn CephOps>,
    image: &ImageSpec,
    registration: &Registration,
    events: Arc<dyn EventSink>,
) -> Result<CloudImage> {
    let problem =
        |what: String, fix: String| Error::Preflight(vec![crate::preflight::Problem { what, fix }]);
    cloud.check_register().await.map_err(|e| {
        problem(
            format!("cloud {}: {e}", cloud.name()),
            "use the destination cloud's admin credentials (--os-cloud)".into(),
        )
    })?;
    let (d, i, snap) = (dst.clone(), image.clone(), registration.snapshot.clone());
    let protected = on_ceph(
        "register_image",
        dst.name().to_string(),
        image.to_string(),
        move || {
            let snaps = d.snapshots(&i)?;
            Ok(snaps
                .iter()
                .find(|s| s.name == snap && s.namespace == SnapshotNamespace::User)
                .map(|s| s.protected))
        },
    )
    .await?;
    if protected != Some(true) {
        let (c, snap) = (dst.name(), &registration.snapshot);
        return Err(problem(
            format!(
                "{c}:{image}@{snap} {}",
                if protected.is_none() { "does not exist" } else { "is not protected" }
            ),
            format!("the Ceph destination admin runs: rbd --cluster {c} snap create {image}@{snap}; rbd --cluster {c} snap protect {image}@{snap}"),
        ));
    }
    let cluster = ClusterSpec::named(dst.name())?;
    let m = VolumeMigration::in_place(cluster, image.clone(), None, Some(registration.clone()));
    let exec = Executor::for_cloud_steps(Some(dst), Some(cloud), events);
    let state = run_in_place(&exec, m).await?;
    state.registered.ok_or_else(|| Error::TaskFailed {
        step: "register_image",
        reason: "the step ended without an image".into(),
    })
}

/// Run the one-step plan of `m`. It is recorded nowhere: an earlier run may have sent the
/// request, so the step first looks for the plan's marker in the cloud.
async fn run_in_place(exec: &Executor, m: VolumeMigration) -> Result<RunState> {
    let mut state = RunState::new(Plan::in_place(m));
    state.adopt_started = state.plan.migration.adopt.is_some();
    state.register_started = state.plan.migration.register.is_some();
    exec.run_steps(&mut state, &Unrecorded, |_| true).await?;
    Ok(state)
}
