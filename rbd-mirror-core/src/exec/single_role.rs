//! The tenant admin's steps run alone (split roles): adopt or register an image that the Ceph
//! admins already put in the destination pool.

use std::sync::Arc;

use super::*;
use crate::cloud::{AdoptSpec, AdoptedVolume, CloudImage, CloudOps, RegisterSpec, MARKER_KEY};
use crate::error::{Error, Result};
use crate::event::{Event, EventSink};
use crate::ops::{CephOps, SnapshotNamespace};
use crate::spec::ImageSpec;

/// The tenant admin's step alone (split roles): adopt an RBD image that is already in the
/// destination Cinder pool as a volume. Read-only checks first (admin credentials, host
/// resolvable and storing into `image`'s pool); idempotent: a re-run returns the volume an
/// earlier run adopted (found by the marker in its metadata) instead of adopting again.
pub async fn adopt_image(
    cloud: Arc<dyn CloudOps>,
    image: &ImageSpec,
    adoption: &crate::plan::Adoption,
    events: Arc<dyn EventSink>,
) -> Result<AdoptedVolume> {
    let kind = "adopt_volume";
    let marker = format!("adopt_{}_{}", image.pool, image.image);
    let check = cloud
        .check_adopt(&adoption.target)
        .await
        .map_err(cloud_err(kind, cloud.as_ref()))?;
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
    let found = cloud
        .find_adopted(&marker)
        .await
        .map_err(cloud_err(kind, cloud.as_ref()))?;
    if let Some(v) = found.iter().find(|v| v.status == "available") {
        events.emit(Event::Warning {
            message: format!("{image} was already adopted as volume {}", v.id),
        });
        return Ok(v.clone());
    }
    for v in found.iter().filter(|v| v.status.starts_with("error")) {
        cloud
            .forget_volume(&v.id)
            .await
            .map_err(cloud_err(kind, cloud.as_ref()))?;
    }
    let mut metadata = std::collections::BTreeMap::new();
    metadata.insert(MARKER_KEY.to_string(), marker);
    let spec = AdoptSpec {
        target: adoption.target.clone(),
        rbd_image: image.image.clone(),
        name: adoption.name.clone(),
        bootable: adoption.bootable,
        metadata,
    };
    cloud
        .adopt(&spec)
        .await
        .map_err(cloud_err(kind, cloud.as_ref()))
}

/// The tenant admin's registration alone (split roles): register `image@snapshot` (already
/// in the destination Glance pool, snapshot protected by the Ceph destination admin) as a
/// Glance image by its rbd:// location. Read-only checks first (admin credentials, snapshot
/// there and protected); idempotent: a re-run returns the image an earlier run registered.
pub async fn register_image(
    cloud: Arc<dyn CloudOps>,
    dst: Arc<dyn CephOps>,
    image: &ImageSpec,
    registration: &crate::plan::Registration,
    events: Arc<dyn EventSink>,
) -> Result<CloudImage> {
    let kind = "register_image";
    let problem =
        |what: String, fix: String| Error::Preflight(vec![crate::preflight::Problem { what, fix }]);
    cloud.check_register().await.map_err(|e| {
        problem(
            format!("cloud {}: {e}", cloud.name()),
            "use the destination cloud's admin credentials (--os-cloud)".into(),
        )
    })?;
    let (d, i, snap) = (dst.clone(), image.clone(), registration.snapshot.clone());
    let (fsid, protected) = on_ceph(kind, dst.name().to_string(), image.to_string(), move || {
        let snaps = d.snapshots(&i)?;
        let p = snaps
            .iter()
            .find(|s| s.name == snap && s.namespace == SnapshotNamespace::User)
            .map(|s| s.protected);
        Ok((d.fsid()?, p))
    })
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
    let marker = format!("register_{}_{}", image.pool, image.image);
    let found = cloud
        .find_images(&marker)
        .await
        .map_err(cloud_err(kind, cloud.as_ref()))?;
    if let Some(i) = found.iter().find(|i| i.status == "active") {
        events.emit(Event::Warning {
            message: format!("{image} was already registered as image {}", i.id),
        });
        return Ok(i.clone());
    }
    let mut properties = std::collections::BTreeMap::new();
    properties.insert(MARKER_KEY.to_string(), marker);
    let spec = RegisterSpec {
        name: registration.name.clone(),
        fsid,
        pool: image.pool.pool.clone(),
        image: image.image.clone(),
        snapshot: registration.snapshot.clone(),
        min_disk_gib: registration.min_disk_gib,
        properties,
    };
    cloud
        .register_image(&spec)
        .await
        .map_err(cloud_err(kind, cloud.as_ref()))
}
