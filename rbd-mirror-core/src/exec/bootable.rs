//! A bootable volume's move through Glance: upload-to-image in the source cloud, then an
//! ordinary plan over the Glance image.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::*;
use crate::cloud::{CloudError, CloudImage, CloudOps};
use crate::error::{Error, Result};
use crate::event::{Event, EventSink};
use crate::ops::CephOps;
use crate::plan::{Plan, VolumeMigration};
use crate::spec::ImageSpec;
use crate::state::{RunState, StateFile};

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

/// What the upload-to-image step recorded (the rest of the run is an ordinary plan).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct UploadRecord {
    volume_id: String,
    volume_size_gib: u64,
    image: CloudImage,
    image_name: String,
    pool: String,
    rbd_image: String,
}

/// Not `*.json`: `rbd-relay list` reads those as migration state files.
fn upload_record_path(dir: &Path, volume_id: &str) -> std::path::PathBuf {
    dir.join(format!("bootable_{volume_id}.upload"))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let err = |reason: String| Error::State {
        path: path.to_path_buf(),
        reason,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| err(e.to_string()))?;
    tmp.write_all(bytes).map_err(|e| err(e.to_string()))?;
    tmp.as_file().sync_all().map_err(|e| err(e.to_string()))?;
    tmp.persist(path).map_err(|e| err(e.to_string()))?;
    Ok(())
}

fn save_upload_record(path: &Path, r: &UploadRecord) -> Result<()> {
    let json = serde_json::to_vec_pretty(r).map_err(|e| Error::State {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    write_atomically(path, &json)
}

/// The image an interrupted upload made (the run died after asking Cinder): found by name;
/// waited for while Cinder still writes it. `None` when there is none (upload again).
async fn find_upload(
    cloud: &dyn CloudOps,
    name: &str,
    events: &dyn EventSink,
) -> Result<Option<CloudImage>> {
    let kind = "upload_to_image";
    let deadline = Instant::now() + std::time::Duration::from_secs(3600);
    loop {
        let found: Vec<CloudImage> = cloud
            .images_named(name)
            .await
            .map_err(cloud_err(kind, cloud))?
            .into_iter()
            .filter(|i| !matches!(i.status.as_str(), "killed" | "deleted" | "pending_delete"))
            .collect();
        match found.as_slice() {
            [] => return Ok(None),
            [one] if one.status == "active" => {
                events.emit(Event::Warning {
                    message: format!(
                        "the interrupted run's upload made image {} in cloud {}; using it",
                        one.id,
                        cloud.name()
                    ),
                });
                return Ok(Some(one.clone()));
            }
            [one] => {
                if Instant::now() > deadline {
                    return Err(Error::Unsafe(format!(
                        "image {} of the interrupted upload is still '{}' after an hour; check it in cloud {}, then re-run",
                        one.id,
                        one.status,
                        cloud.name()
                    )));
                }
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
            many => {
                return Err(Error::Unsafe(format!(
                    "cloud {} has {} images named '{name}' ({}); the interrupted upload cannot be told apart: remove the extra ones or give another --name, then re-run",
                    cloud.name(),
                    many.len(),
                    many.iter()
                        .map(|i| format!("{} {}", i.id, i.status))
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
        }
    }
}

fn load_upload_record(path: &Path) -> Result<Option<UploadRecord>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::State {
                path: path.to_path_buf(),
                reason: format!("unreadable ({e})"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::State {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

/// Migrate a bootable volume through Glance; resumes a recorded run. The cloud checks
/// (source volume readable, destination credentials may register locations) run before the
/// upload and before any Ceph change. Returns the Ceph plan's summary, whose `image` is the
/// registered destination image.
pub async fn migrate_bootable(
    b: &BootableMigration,
    src: Arc<dyn CephOps>,
    dst: Arc<dyn CephOps>,
    clouds: &Clouds,
    state_dir: &Path,
    opts: &RunOptions,
    events: Arc<dyn EventSink>,
) -> Result<Summary> {
    crate::spec::check_volume_id(&b.volume_id)?;
    let (src_cloud, dst_cloud) = clouds.both_for_bootable()?;
    let lock_id = format!("bootable_{}", b.volume_id);
    let lock = StateFile::lock(state_dir, &lock_id, &b.volume_id)?;
    let record_path = upload_record_path(state_dir, &b.volume_id);
    let record = match load_upload_record(&record_path)? {
        Some(r) => r,
        None => {
            let (vol, image_name) =
                check_bootable(b, src_cloud.as_ref(), dst_cloud.as_ref()).await?;
            events.emit(Event::StepStarted {
                index: 0,
                step: "upload_to_image".into(),
                description: format!(
                    "upload volume {} ({} GiB) to image '{image_name}' in cloud {} (source tenant)",
                    vol.id,
                    vol.size_gib,
                    src_cloud.name()
                ),
            });
            let t = Instant::now();
            let started = record_path.with_extension("uploading");
            let earlier = if started.exists() {
                find_upload(src_cloud.as_ref(), &image_name, events.as_ref()).await?
            } else {
                None
            };
            let img = match earlier {
                Some(i) => i,
                None => {
                    write_atomically(&started, image_name.as_bytes())?;
                    src_cloud
                        .upload_to_image(&vol.id, &image_name)
                        .await
                        .map_err(cloud_err("upload_to_image", src_cloud.as_ref()))?
                }
            };
            let (pool, rbd_image) = img
                .rbd
                .clone()
                .unwrap_or_else(|| (b.source_image_pool.pool.clone(), img.id.clone()));
            let r = UploadRecord {
                volume_id: vol.id.clone(),
                volume_size_gib: vol.size_gib,
                image: img,
                image_name,
                pool,
                rbd_image,
            };
            save_upload_record(&record_path, &r)?;
            let _ = std::fs::remove_file(&started);
            events.emit(Event::StepDone {
                index: 0,
                step: "upload_to_image".into(),
                seconds: t.elapsed().as_secs_f64(),
            });
            r
        }
    };
    drop(lock);
    let m = bootable_plan_request(b, &record, dst_cloud.name())?;
    migrate(&m, src, dst, clouds, state_dir, opts, events).await
}

/// The Ceph plan's request of a bootable migration whose upload-to-image is done (by the
/// source tenant admin, for a split-role bundle): `image` is the uploaded image in the
/// source cloud, `volume_size_gib` the source volume's size, `dst_cloud` the destination
/// cloud's name. The same request `migrate bootable` builds after its upload step.
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
    let record = UploadRecord {
        volume_id: b.volume_id.clone(),
        volume_size_gib,
        image: image.clone(),
        image_name: image_name.to_string(),
        pool,
        rbd_image,
    };
    bootable_plan_request(b, &record, dst_cloud)
}

/// The Ceph plan's request once the volume is uploaded.
fn bootable_plan_request(
    b: &BootableMigration,
    record: &UploadRecord,
    dst_cloud: &str,
) -> Result<VolumeMigration> {
    let image: ImageSpec = format!("{}/{}", record.pool, record.rbd_image).parse()?;
    let mut m = VolumeMigration::new(
        b.source.clone(),
        b.destination.clone(),
        image,
        b.into.clone(),
    );
    m.mode = b.mode;
    m.register = Some(crate::plan::Registration {
        cloud: dst_cloud.to_string(),
        name: record.image_name.clone(),
        snapshot: "snap".into(),
        min_disk_gib: record.volume_size_gib.max(record.image.min_disk_gib),
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

/// The dry run of a bootable migration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootableDryRun {
    /// The upload still to do (`None` when a run recorded it).
    pub upload: Option<String>,
    /// What follows the upload, in order, while the image id is not known yet.
    pub then: Vec<String>,
    /// The Ceph plan, once the upload is recorded (and its recorded state).
    pub plan: Option<(Plan, Option<RunState>)>,
}

/// Read-only: the cloud checks and what a bootable migration would do (`--dry-run`).
pub async fn plan_bootable(
    b: &BootableMigration,
    src: Arc<dyn CephOps>,
    dst: Arc<dyn CephOps>,
    clouds: &Clouds,
    state_dir: &Path,
    events: Arc<dyn EventSink>,
) -> Result<BootableDryRun> {
    crate::spec::check_volume_id(&b.volume_id)?;
    let (src_cloud, dst_cloud) = clouds.both_for_bootable()?;
    if let Some(r) = load_upload_record(&upload_record_path(state_dir, &b.volume_id))? {
        let m = bootable_plan_request(b, &r, dst_cloud.name())?;
        let p = plan(&m, src, dst, clouds, state_dir, events).await?;
        return Ok(BootableDryRun {
            upload: None,
            then: vec![],
            plan: Some(p),
        });
    }
    let (vol, name) = check_bootable(b, src_cloud.as_ref(), dst_cloud.as_ref()).await?;
    let (s, d) = (&b.source.name, &b.destination.name);
    let pool = &b.source_image_pool;
    Ok(BootableDryRun {
        upload: Some(format!(
            "[OpenStack source tenant] upload volume {} ({} GiB) to image '{name}' in cloud {} (Cinder upload-to-image; the data lands in {s}:{pool}/<image id>)",
            vol.id,
            vol.size_gib,
            src_cloud.name()
        )),
        then: vec![
            format!("[Ceph source admin] preflight, enable the mirroring features and {}-mode mirroring of {s}:{pool}/<image id>", b.mode),
            format!("[Ceph destination admin] wait for the replica, copy it to {d}:{}/<image id>, verify (sha256)", b.into),
            format!("[Ceph source admin] disable mirroring of {s}:{pool}/<image id> and restore its features"),
            format!("[Ceph destination admin] create snapshot {d}:{}/<image id>@snap and protect it", b.into),
            format!("[OpenStack tenant admin] register image '{name}' in cloud {} at rbd://<{d} fsid>/{}/<image id>/snap", dst_cloud.name(), b.into),
            format!("[OpenStack tenant admin] check that its min_disk is at least {} GiB (the source volume's size)", vol.size_gib),
        ],
        plan: None,
    })
}
