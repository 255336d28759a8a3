//! A bootable volume's move through Glance: a plan whose first step uploads the volume to a
//! Glance image in the source cloud ([`Step::UploadToImage`]), then moves that image like
//! any other and registers the copy in the destination Glance. This module builds the
//! request from the command's arguments; the plan runs in the ordinary executor.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::*;
use crate::cloud::{CloudError, CloudImage, CloudOps};
use crate::error::{Error, Result};
use crate::event::{Event, EventSink};
use crate::ops::CephOps;
use crate::plan::{Origin, Plan, Upload, VolumeMigration};
use crate::spec::ImageSpec;
use crate::state::RunState;

/// A bootable volume's move through Glance (the runbook's second half): upload-to-image in
/// the source cloud, mirror the Glance image, copy it into the destination Glance pool,
/// verify, clean up the source, snapshot + protect, register, check min_disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootableMigration {
    /// Source cluster.
    pub source: crate::spec::ClusterSpec,
    /// Destination cluster.
    pub destination: crate::spec::ClusterSpec,
    /// The Cinder volume in the source cloud.
    pub volume_id: String,
    /// The source Glance pool (used when Glance does not show the image's location).
    pub source_image_pool: crate::spec::PoolSpec,
    /// The destination Glance pool.
    pub into: crate::spec::PoolSpec,
    /// Name of the image (default: `<volume name>-image`).
    pub name: Option<String>,
    /// Mirroring mode.
    pub mode: crate::features::MirrorImageMode,
}

impl BootableMigration {
    /// The plan's request once the source cloud said the volume's size and the image's name.
    fn request(
        &self,
        src_cloud: &str,
        dst_cloud: &str,
        volume_size_gib: u64,
        image_name: String,
    ) -> VolumeMigration {
        let upload = Upload {
            cloud: src_cloud.to_string(),
            volume_id: self.volume_id.clone(),
            volume_size_gib,
            asked_name: self.name.clone(),
            image_name,
            pool: self.source_image_pool.clone(),
        };
        VolumeMigration::bootable(
            self.source.clone(),
            self.destination.clone(),
            upload,
            self.into.clone(),
            self.mode,
            dst_cloud,
        )
    }
}

/// Migrate a bootable volume through Glance; resumes a recorded run. The cloud checks
/// (source volume readable, destination credentials may register locations) run before the
/// upload and before any Ceph change. Returns the summary, whose `image` is the registered
/// destination image.
///
/// Cancel safety: safe to drop at any await, as [`migrate`]: every finished step is recorded
/// before the next starts, the lock goes with the future, and the upload is found again by its
/// image name, so the next call resumes where the dropped one was.
pub async fn migrate_bootable(
    b: &BootableMigration,
    src: Arc<dyn CephOps>,
    dst: Arc<dyn CephOps>,
    clouds: &Clouds,
    state_dir: &Path,
    opts: &RunOptions,
    events: Arc<dyn EventSink>,
) -> Result<Summary> {
    let m = bootable_migration(b, clouds, state_dir, events.as_ref()).await?;
    migrate(&m, src, dst, clouds, state_dir, opts, events).await
}

/// Read-only: the cloud checks and the plan of a bootable migration (`--dry-run`). Before
/// the upload, the plan's steps end with preflight ([`Plan::outline_after_preflight`] says
/// what follows); a recorded run's plan is returned as recorded.
///
/// Cancel safety: read only; dropping it at any await changes nothing.
pub async fn plan_bootable(
    b: &BootableMigration,
    src: Arc<dyn CephOps>,
    dst: Arc<dyn CephOps>,
    clouds: &Clouds,
    state_dir: &Path,
    events: Arc<dyn EventSink>,
) -> Result<(Plan, Option<RunState>)> {
    let m = bootable_migration(b, clouds, state_dir, events.as_ref()).await?;
    plan(&m, src, dst, clouds, state_dir, events).await
}

/// The request of a bootable migration: the recorded one when a run of it is recorded
/// (the source cloud is not asked again), else from the cloud checks.
async fn bootable_migration(
    b: &BootableMigration,
    clouds: &Clouds,
    state_dir: &Path,
    events: &dyn EventSink,
) -> Result<VolumeMigration> {
    crate::spec::check_volume_id(&b.volume_id)?;
    let (src_cloud, dst_cloud) = clouds.both_for_bootable()?;
    if let Some(m) = legacy::request(state_dir, b, dst_cloud.name())? {
        events.emit(Event::Warning {
            message: format!(
                "{} was written by an earlier rbd-relay, whose upload is done: continuing migration {} of the uploaded image",
                legacy::record_path(state_dir, &b.volume_id).display(),
                m.id()
            ),
        });
        return Ok(m);
    }
    // the id does not depend on what the cloud says
    let probe = b.request(src_cloud.name(), dst_cloud.name(), 0, String::new());
    if let Some(s) = crate::state::load(&crate::state::StateFile::path_for(state_dir, &probe.id()))?
    {
        if let Origin::Upload(u) = &s.plan.migration.origin {
            let asked = b.request(
                src_cloud.name(),
                dst_cloud.name(),
                u.volume_size_gib,
                b.name.clone().unwrap_or_else(|| u.image_name.clone()),
            );
            if !s.aborted && asked == s.plan.migration.as_requested() {
                return Ok(s.plan.migration);
            }
        }
    }
    let (vol, image_name) = check_bootable(b, src_cloud.as_ref(), dst_cloud.as_ref()).await?;
    Ok(b.request(src_cloud.name(), dst_cloud.name(), vol.size_gib, image_name))
}

/// The Ceph plan's request of a bootable migration whose upload-to-image is done (by the
/// source tenant admin, for a split-role bundle): `image` is the uploaded image in the
/// source cloud, `volume_size_gib` the source volume's size, `dst_cloud` the destination
/// cloud's name. The request `migrate bootable` continues with after its upload step.
pub fn bootable_request(
    b: &BootableMigration,
    image: &CloudImage,
    image_name: &str,
    volume_size_gib: u64,
    dst_cloud: &str,
) -> Result<VolumeMigration> {
    let (pool, rbd_image) = image
        .rbd
        .clone()
        .unwrap_or_else(|| (b.source_image_pool.pool.clone(), image.id.clone()));
    uploaded_request(
        b,
        &format!("{pool}/{rbd_image}"),
        image_name,
        volume_size_gib.max(image.min_disk_gib),
        dst_cloud,
    )
}

/// The request of the Ceph plan of an uploaded image `pool/image`.
fn uploaded_request(
    b: &BootableMigration,
    image: &str,
    image_name: &str,
    min_disk_gib: u64,
    dst_cloud: &str,
) -> Result<VolumeMigration> {
    let image: ImageSpec = image.parse()?;
    let mut m = VolumeMigration::new(
        b.source.clone(),
        b.destination.clone(),
        image,
        b.into.clone(),
    );
    m.mode = b.mode;
    m.register = Some(crate::plan::Registration {
        cloud: dst_cloud.to_string(),
        name: image_name.to_string(),
        snapshot: "snap".into(),
        min_disk_gib,
    });
    Ok(m)
}

/// The cloud checks of the bootable path (read only): the source volume is readable, the
/// destination credentials may register locations. Returns the volume and the image name.
async fn check_bootable(
    b: &BootableMigration,
    src_cloud: &dyn CloudOps,
    dst_cloud: &dyn CloudOps,
) -> Result<(crate::cloud::SourceVolume, String)> {
    let pre = |e: CloudError, c: &dyn CloudOps, fix: &str| {
        Error::Preflight(vec![crate::preflight::Problem {
            what: format!("cloud {}: {e}", c.name()),
            fix: fix.to_string(),
        }])
    };
    let vol = src_cloud.source_volume(&b.volume_id).await.map_err(|e| {
        pre(
            e,
            src_cloud,
            "give --source-cloud a cloud entry with the admin role in the source cloud and an existing volume id",
        )
    })?;
    dst_cloud.check_register().await.map_err(|e| {
        pre(
            e,
            dst_cloud,
            "give --os-cloud a cloud entry with the admin role in the destination cloud",
        )
    })?;
    let image_name = b.name.clone().unwrap_or_else(|| {
        format!(
            "{}-image",
            vol.name
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| vol.id.clone())
        )
    });
    Ok((vol, image_name))
}

/// Whether an earlier rbd-relay left the mark of an upload it sent but whose image it did
/// not record (`bootable_VOLUME.uploading`): the new plan then looks for that image first.
pub(super) fn legacy_upload_started(state_dir: &Path, m: &VolumeMigration) -> bool {
    match &m.origin {
        Origin::Upload(u) => legacy::mark_path(state_dir, &u.volume_id).exists(),
        Origin::Image | Origin::InPlace => false,
    }
}

/// Remove that mark once the plan's state (which took it over) is written.
pub(super) fn forget_legacy_upload_mark(state_dir: &Path, m: &VolumeMigration) {
    if let Origin::Upload(u) = &m.origin {
        let _ = std::fs::remove_file(legacy::mark_path(state_dir, &u.volume_id));
    }
}

/// The records of the bootable path of rbd-relay before the upload was a step of the plan:
/// `bootable_VOLUME.upload` (the upload's image, after which an ordinary plan of that image
/// ran under its own id) and `bootable_VOLUME.uploading` (an upload was sent). Read only.
mod legacy {
    use std::path::{Path, PathBuf};

    use serde::Deserialize;

    use super::{uploaded_request, BootableMigration};
    use crate::cloud::CloudImage;
    use crate::error::{Error, Result};
    use crate::plan::VolumeMigration;

    /// What the upload step of the earlier version recorded.
    #[derive(Deserialize)]
    struct UploadRecord {
        volume_size_gib: u64,
        image: CloudImage,
        image_name: String,
        pool: String,
        rbd_image: String,
    }

    pub(super) fn record_path(dir: &Path, volume_id: &str) -> PathBuf {
        dir.join(format!("bootable_{volume_id}.upload"))
    }

    pub(super) fn mark_path(dir: &Path, volume_id: &str) -> PathBuf {
        dir.join(format!("bootable_{volume_id}.uploading"))
    }

    /// The request of the plan an earlier version ran (or was to run) after its recorded
    /// upload, `None` without such a record.
    pub(super) fn request(
        dir: &Path,
        b: &BootableMigration,
        dst_cloud: &str,
    ) -> Result<Option<VolumeMigration>> {
        let path = record_path(dir, &b.volume_id);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::State {
                    path,
                    reason: e.to_string(),
                })
            }
        };
        let r: UploadRecord = serde_json::from_slice(&bytes).map_err(|e| Error::State {
            path: path.clone(),
            reason: format!("unreadable upload record of an earlier rbd-relay ({e}); move the file away to start this bootable migration over (the image that version uploaded stays in the source cloud)"),
        })?;
        let min_disk = r.volume_size_gib.max(r.image.min_disk_gib);
        let image = format!("{}/{}", r.pool, r.rbd_image);
        uploaded_request(b, &image, &r.image_name, min_disk, dst_cloud).map(Some)
    }
}
