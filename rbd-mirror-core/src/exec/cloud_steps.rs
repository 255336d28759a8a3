//! The steps that talk to a cloud: upload a bootable volume to an image at the source,
//! adopt the copy as a Cinder volume or register it as a Glance image at the destination,
//! check the image's min_disk. Each is retry-safe: a request an interrupted run sent is found
//! again in the cloud (by the plan's marker, or the upload's image name) and taken over.

use std::sync::Arc;
use std::time::Instant;

use super::executor::Executor;
use super::*;
use crate::cloud::MARKER_KEY;
use crate::cloud::{AdoptSpec, AdoptTarget, AdoptedVolume, CloudImage, CloudOps, RegisterSpec};
use crate::error::{Error, Result};
use crate::event::{Event, ProgressInfo};
use crate::plan::{Origin, Step};
use crate::spec::ImageSpec;
use crate::state::{Record, RunState};

impl Executor {
    /// The destination cloud, or the refusal of `step` when none was given.
    fn cloud(&self, step: &str) -> Result<Arc<dyn CloudOps>> {
        self.dst_cloud.clone().ok_or_else(|| Error::NotGiven {
            needed_for: format!("step {step}"),
            what: "the destination cloud".into(),
            flag: "--os-cloud",
        })
    }

    /// Register the protected snapshot of the verified copy in the destination Glance.
    /// Idempotent: an image an interrupted run registered (found by the marker property) is
    /// taken over.
    pub(super) async fn register(
        &self,
        step: &Step,
        index: usize,
        state: &mut RunState,
        file: &dyn Record,
        name: String,
    ) -> Result<()> {
        let kind = "register_image";
        if let Some(i) = &state.registered {
            self.skipped(
                index,
                step,
                &format!("already registered as image {}", i.id),
            );
            return Ok(());
        }
        if !state.copy_cleared() {
            return Err(Error::NotVerified {
                step: kind,
                consequence: "it is not handed to Glance",
            });
        }
        let cloud = self.cloud(kind)?;
        let m = state.plan.migration.clone();
        let Some(r) = m.register.clone() else {
            return Err(damaged(
                file,
                "the plan registers an image but has no registration",
            ));
        };
        let marker = state.plan.id.clone();
        if state.register_started {
            let found = cloud
                .find_images(&marker)
                .await
                .map_err(cloud_err(kind, cloud.as_ref()))?;
            if let Some(i) = found.iter().find(|i| i.status == "active") {
                self.skipped(
                    index,
                    step,
                    &format!("the interrupted run registered it as image {}", i.id),
                );
                state.registered = Some(i.clone());
                return Ok(());
            }
            // an empty record (made, its answer lost before the location was added) holds
            // no data: it is removed and the registration made again
            for i in found
                .iter()
                .filter(|i| i.status == "queued" && i.rbd.is_none())
            {
                cloud
                    .forget_empty_image(&i.id)
                    .await
                    .map_err(cloud_err(kind, cloud.as_ref()))?;
                self.events.emit(Event::Warning {
                    message: format!(
                        "removed the empty image record {} (queued, no location) an interrupted registration left in cloud {}; registering again",
                        i.id,
                        cloud.name()
                    ),
                });
            }
            if let Some(i) = found
                .iter()
                .find(|i| !(i.status == "queued" && i.rbd.is_none()))
            {
                return Err(Error::CloudLeftover {
                    step: kind,
                    cloud: cloud.name().to_string(),
                    found: format!("image {} (status {}) from the interrupted registration", i.id, i.status),
                    next: "check it (deleting an image with an rbd:// location deletes its data: remove the location first), then re-run".into(),
                });
            }
        }
        let d = self.dst(kind)?;
        let fsid = on_ceph(kind, d.name().to_string(), "fsid".into(), move || d.fsid()).await?;
        state.register_started = true;
        self.save(state, file)?;
        let target = m.copy_target();
        let mut properties = std::collections::BTreeMap::new();
        properties.insert(MARKER_KEY.to_string(), marker);
        let spec = RegisterSpec {
            name,
            fsid,
            pool: target.pool.pool.clone(),
            image: target.image.clone(),
            snapshot: r.snapshot.clone(),
            min_disk_gib: r.min_disk_gib,
            properties,
        };
        let i = cloud
            .register_image(&spec)
            .await
            .map_err(cloud_err(kind, cloud.as_ref()))?;
        self.events.emit(Event::Progress(ProgressInfo::done(
            "register",
            format!(
                "image {} is {} (min_disk {} GiB), at rbd://{}/{}/{}/{}",
                i.id, i.status, i.min_disk_gib, spec.fsid, spec.pool, spec.image, spec.snapshot
            ),
        )));
        state.registered = Some(i);
        Ok(())
    }

    /// Adopt the verified copy in the destination cloud. Idempotent: a volume an interrupted
    /// run adopted (found by the marker in its metadata) is taken over; one that failed is
    /// forgotten again before a new attempt.
    pub(super) async fn adopt(
        &self,
        step: &Step,
        index: usize,
        state: &mut RunState,
        file: &dyn Record,
        target: AdoptTarget,
        name: Option<String>,
    ) -> Result<()> {
        let kind = "adopt_volume";
        if let Some(v) = &state.adopted {
            self.skipped(index, step, &format!("already adopted as volume {}", v.id));
            return Ok(());
        }
        if !state.copy_cleared() {
            return Err(Error::NotVerified {
                step: kind,
                consequence: "it is not handed to Cinder",
            });
        }
        let cloud = self.cloud(kind)?;
        let m = state.plan.migration.clone();
        let marker = state.plan.id.clone();
        let image_metadata = m
            .adopt
            .as_ref()
            .map(|a| a.image_metadata.clone())
            .unwrap_or_default();
        if state.adopt_started {
            if let Some(v) = self.find_adopted(cloud.as_ref(), kind, &marker).await? {
                // the interrupted run may have died before it set the image metadata
                self.set_image_metadata(cloud.as_ref(), &v, &image_metadata)
                    .await?;
                self.skipped(
                    index,
                    step,
                    &format!("the interrupted run adopted it as volume {}", v.id),
                );
                state.adopted = Some(v);
                return Ok(());
            }
        }
        let in_place = m.origin == Origin::InPlace;
        // an image in place is the Ceph admins' (the tenant admin may not read the
        // cluster): Cinder says when it is not there
        if !in_place {
            self.check_copy_there(&m.copy_target(), cloud.name(), &marker)
                .await?;
        }
        state.adopt_started = true;
        self.save(state, file)?;
        let mut metadata = std::collections::BTreeMap::new();
        metadata.insert(MARKER_KEY.to_string(), marker);
        if !in_place {
            metadata.insert(
                "rbd_relay_source".to_string(),
                format!("{}:{}", m.source.name, m.image),
            );
        }
        let spec = AdoptSpec {
            target,
            rbd_image: m.dest_name.clone(),
            name,
            bootable: m.adopt.as_ref().is_some_and(|a| a.bootable),
            metadata,
            image_metadata,
        };
        let v = cloud
            .adopt(&spec)
            .await
            .map_err(cloud_err(kind, cloud.as_ref()))?;
        // recorded as adopted only once its image metadata is set: a re-run finds the volume
        // by its marker and sets it again (idempotent)
        self.set_image_metadata(cloud.as_ref(), &v, &spec.image_metadata)
            .await?;
        self.events.emit(Event::Progress(ProgressInfo::done(
            "adopt",
            format!(
                "volume {} ({} GiB) is {}, backed by {}/{}",
                v.id, v.size_gib, v.status, m.into, v.rbd_image
            ),
        )));
        state.adopted = Some(v);
        Ok(())
    }

    /// Grow the copy to `size` bytes (the next whole GiB) before its adoption. Only a
    /// verified copy (or, handed over by clone, the clone of the replica's snapshot that is
    /// verified next) is grown, and never shrunk. Returns whether it had that size already
    /// (a re-run). The new bytes are zeros: the first `facts.size` bytes stay the verified
    /// ones, which is what every later comparison digests.
    pub(super) async fn grow_copy(
        &self,
        m: &crate::plan::VolumeMigration,
        state: &RunState,
        size: u64,
    ) -> Result<bool> {
        let kind = "grow_copy";
        if !state.copy_cleared() {
            return Err(Error::NotVerified {
                step: kind,
                consequence: "it is not grown for Cinder",
            });
        }
        let d = self.dst(kind)?;
        let copy = m.copy_target();
        let (d2, c2) = (d.clone(), copy.clone());
        let now = on_ceph(kind, d.name().to_string(), copy.to_string(), move || {
            d2.stat(&c2)
        })
        .await?
        .size;
        if now >= size {
            return Ok(true);
        }
        let (d2, c2) = (d.clone(), copy.clone());
        on_ceph(kind, d.name().to_string(), copy.to_string(), move || {
            d2.grow(&c2, size)
        })
        .await?;
        self.events.emit(Event::Progress(ProgressInfo::done(
            "grow",
            format!(
                "{}:{copy} grown from {now} to {size} bytes ({} GiB, the size Cinder records)",
                d.name(),
                size / crate::plan::GIB
            ),
        )));
        Ok(false)
    }

    /// Set the image metadata of a bootable source volume on its adopted volume (Cinder's
    /// manage-existing takes none): Nova reads it when it boots from the volume.
    async fn set_image_metadata(
        &self,
        cloud: &dyn CloudOps,
        v: &AdoptedVolume,
        metadata: &std::collections::BTreeMap<String, String>,
    ) -> Result<()> {
        if metadata.is_empty() {
            return Ok(());
        }
        cloud
            .set_image_metadata(&v.id, metadata)
            .await
            .map_err(cloud_err("adopt_volume", cloud))?;
        self.events.emit(Event::Progress(ProgressInfo::done(
            "adopt",
            format!(
                "volume {} has the source volume's image metadata ({} key(s))",
                v.id,
                metadata.len()
            ),
        )));
        Ok(())
    }

    /// Refuse the adoption of a copy that is gone (renamed or managed by hand).
    async fn check_copy_there(&self, copy: &ImageSpec, cloud: &str, marker: &str) -> Result<()> {
        let d = self.dst("adopt_volume")?;
        let (d2, t) = (d.clone(), copy.clone());
        let exists = on_ceph(
            "adopt_volume",
            d.name().to_string(),
            copy.to_string(),
            move || d2.image_exists(&t),
        )
        .await?;
        if exists {
            return Ok(());
        }
        Err(Error::CopyGone {
            cluster: d.name().to_string(),
            image: copy.to_string(),
            cloud: cloud.to_string(),
            migration: marker.to_string(),
        })
    }

    /// The volume an earlier run adopted: an available one is returned; failed records are
    /// forgotten (the RBD image stays); one still being managed is waited for.
    async fn find_adopted(
        &self,
        cloud: &dyn CloudOps,
        kind: &'static str,
        marker: &str,
    ) -> Result<Option<AdoptedVolume>> {
        let deadline = Instant::now() + std::time::Duration::from_secs(600);
        loop {
            let found = cloud
                .find_adopted(marker)
                .await
                .map_err(cloud_err(kind, cloud))?;
            if let Some(v) = found.iter().find(|v| v.status == "available") {
                return Ok(Some(v.clone()));
            }
            let mut pending = false;
            for v in &found {
                if v.status.starts_with("error") {
                    self.events.emit(Event::Warning {
                        message: format!(
                            "volume {} of the interrupted adoption ended in '{}'; forgetting its record (the RBD image stays) and adopting again",
                            v.id, v.status
                        ),
                    });
                    cloud
                        .forget_volume(&v.id)
                        .await
                        .map_err(cloud_err(kind, cloud))?;
                } else {
                    pending = true;
                }
            }
            if !pending {
                return Ok(None);
            }
            if Instant::now() > deadline {
                return Err(Error::CloudLeftover {
                    step: kind,
                    cloud: cloud.name().to_string(),
                    found: format!(
                        "volume(s) of migration {marker} still being adopted after 10 minutes: {}",
                        found
                            .iter()
                            .map(|v| format!("{} ({})", v.id, v.status))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    next: "check them, then re-run".into(),
                });
            }
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        }
    }

    /// Check that the registered image's min_disk is at least the source volume's size.
    pub(super) async fn check_min_disk(
        &self,
        state: &mut RunState,
        file: &dyn Record,
        min_gib: u64,
    ) -> Result<()> {
        let kind = "check_min_disk";
        let Some(image) = state.registered.clone() else {
            return Err(damaged(
                file,
                "the registration is recorded as done but no registered image is recorded",
            ));
        };
        let cloud = self.cloud(kind)?;
        let now = cloud
            .get_image(&image.id)
            .await
            .map_err(cloud_err(kind, cloud.as_ref()))?;
        if now.min_disk_gib < min_gib {
            return Err(Error::MinDiskTooSmall {
                cloud: cloud.name().to_string(),
                image: image.id,
                found_gib: now.min_disk_gib,
                wanted_gib: min_gib,
            });
        }
        state.registered = Some(now);
        Ok(())
    }

    /// Upload the bootable volume to a Glance image in the source cloud; the image is the
    /// plan's source from then on. Retry-safe: once the request was sent, a re-run looks for
    /// the image by its name first and takes it over.
    pub(super) async fn upload_to_image(
        &self,
        step: &Step,
        index: usize,
        state: &mut RunState,
        file: &dyn Record,
        volume_id: &str,
        image_name: &str,
    ) -> Result<()> {
        let kind = "upload_to_image";
        if let Some(i) = &state.uploaded {
            self.skipped(index, step, &format!("already uploaded as image {}", i.id));
            return Ok(());
        }
        let cloud = self.src_cloud.clone().ok_or_else(|| Error::NotGiven {
            needed_for: format!("step {kind}"),
            what: "the source cloud".into(),
            flag: "--source-cloud",
        })?;
        let earlier = if state.upload_started {
            self.find_upload(cloud.as_ref(), image_name).await?
        } else {
            None
        };
        let image = match earlier {
            Some(i) => i,
            None => {
                state.upload_started = true;
                self.save(state, file)?;
                cloud
                    .upload_to_image(volume_id, image_name)
                    .await
                    .map_err(cloud_err(kind, cloud.as_ref()))?
            }
        };
        let Origin::Upload(u) = &state.plan.migration.origin else {
            return Err(damaged(file, "the plan uploads a volume but has no upload"));
        };
        let (pool, rbd_image) = image
            .rbd
            .clone()
            .unwrap_or_else(|| (u.pool.pool.clone(), image.id.clone()));
        let source: ImageSpec = format!("{pool}/{rbd_image}").parse()?;
        let m = &mut state.plan.migration;
        m.dest_name = source.image.clone();
        m.image = source;
        if let Some(r) = &mut m.register {
            r.min_disk_gib = r.min_disk_gib.max(image.min_disk_gib);
        }
        state.uploaded = Some(image);
        Ok(())
    }

    /// The image an interrupted upload made (the run died after asking Cinder): found by
    /// name; waited for while Cinder still writes it. `None` when there is none (upload
    /// again).
    async fn find_upload(&self, cloud: &dyn CloudOps, name: &str) -> Result<Option<CloudImage>> {
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
            let leftover = |found: String, next: &str| Error::CloudLeftover {
                step: kind,
                cloud: cloud.name().to_string(),
                found,
                next: next.to_string(),
            };
            match found.as_slice() {
                [] => return Ok(None),
                [one] if one.status == "active" => {
                    self.events.emit(Event::Warning {
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
                        return Err(leftover(
                            format!(
                                "image {} of the interrupted upload is still '{}' after an hour",
                                one.id, one.status
                            ),
                            "check it, then re-run",
                        ));
                    }
                    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                }
                many => {
                    return Err(leftover(
                        format!(
                            "{} images are named '{name}' ({}), so the interrupted upload cannot be told apart",
                            many.len(),
                            many.iter()
                                .map(|i| format!("{} {}", i.id, i.status))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        "remove the extra ones or give another --name, then re-run",
                    ))
                }
            }
        }
    }
}

/// A recorded plan that contradicts itself (edited or damaged state file).
fn damaged(file: &dyn Record, reason: &str) -> Error {
    Error::State {
        path: file.file().map(|p| p.to_path_buf()).unwrap_or_default(),
        reason: format!("damaged: {reason}; nothing was changed"),
    }
}
