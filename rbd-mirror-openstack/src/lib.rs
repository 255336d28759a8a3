//! rbd-relay's OpenStack adapter: the engine's [`CloudOps`] over the real OpenStack clients,
//! Cinder (`cinder-manage`) and Glance (`glance-rbd`), with the cloud read from clouds.yaml /
//! `OS_*` the OpenStack way.
//!
//! The engine (`rbd-mirror-core`) sees clouds only through `CloudOps`, so its adoption and
//! registration steps are unit-tested against a fake; a library user adopts into a real
//! Cinder with [`OpenStackCloud::connect`] and passes it to the engine.
//!
//! This crate only calls the typed APIs of `cinder-manage` and `glance-rbd` (no raw REST
//! request of its own): each call it needs lives, with its tests, in the crate of its service.

use cinder_manage::{AdoptRequest, Cinder, HostTarget, Side, UploadToImageRequest};
use glance_rbd::{CreateImage, Glance, GlanceImage, RbdLocation, RegisterRbdImage};
use openstack_client::OpenStackClient;
use rbd_mirror_core::cloud::{
    AdoptCheck, AdoptSpec, AdoptTarget, AdoptedVolume, BoxFuture, CloudError, CloudErrorKind,
    CloudImage, CloudOps, CloudResult, RegisterSpec, SourceVolume, MARKER_KEY,
};

/// A cloud that could not be reached or authenticated to.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to OpenStack cloud '{cloud}' (nothing was changed: the clouds are asked before any step; once the cloud's Keystone answers, re-run the same command)")]
pub struct ConnectError {
    /// The cloud's name in clouds.yaml.
    pub cloud: String,
    /// Why.
    #[source]
    pub source: openstack_client::Error,
}

/// One OpenStack cloud.
pub struct OpenStackCloud {
    name: String,
    cinder: Cinder,
    glance: Glance,
}

impl OpenStackCloud {
    /// Authenticate to cloud `name` (clouds.yaml, `OS_CLIENT_CONFIG_FILE`, `OS_*`).
    pub async fn connect(name: &str, side: Side) -> Result<Self, ConnectError> {
        let client = OpenStackClient::from_cloud(name)
            .await
            .map_err(|source| ConnectError {
                cloud: name.to_string(),
                source,
            })?;
        Ok(Self {
            name: name.to_string(),
            cinder: Cinder::new(client.clone(), side),
            glance: Glance::new(client),
        })
    }
}

fn cinder_err(e: cinder_manage::Error) -> CloudError {
    use cinder_manage::Error as E;
    let kind = match &e {
        E::NeedsAdmin { .. } | E::NotAdmin { .. } => CloudErrorKind::Forbidden,
        E::UnknownHost { .. } | E::PoolNotFound { .. } | E::ImageNotFound { .. } => {
            CloudErrorKind::NotFound
        }
        E::AlreadyManaged { .. } | E::NotManageable { .. } | E::AmbiguousPool { .. } => {
            CloudErrorKind::Refused
        }
        E::Api { source, .. } if source.api().is_some_and(|a| a.status == 403) => {
            CloudErrorKind::Forbidden
        }
        E::Api { source, .. } if source.api().is_some_and(|a| a.status == 404) => {
            CloudErrorKind::NotFound
        }
        _ => CloudErrorKind::Other,
    };
    CloudError::new(kind, e.to_string())
}

fn glance_err(e: glance_rbd::Error) -> CloudError {
    let kind = match &e {
        glance_rbd::Error::MemberCredentials { .. } => CloudErrorKind::Forbidden,
        _ => match e.api_error().map(|a| a.status) {
            Some(403) => CloudErrorKind::Forbidden,
            Some(404) => CloudErrorKind::NotFound,
            _ => CloudErrorKind::Other,
        },
    };
    CloudError::new(kind, e.to_string())
}

fn host_target(t: &AdoptTarget) -> HostTarget {
    match t {
        AdoptTarget::Host { host } => HostTarget::Host(host.clone()),
        AdoptTarget::CephPool { pool } => HostTarget::CephPool {
            pool: pool.clone(),
            fsid: None,
        },
    }
}

fn adopted(v: &cinder_manage::Volume) -> AdoptedVolume {
    AdoptedVolume {
        id: v.id.clone(),
        name: v.name.clone(),
        status: v.status.clone(),
        size_gib: v.size,
        host: v.host.clone(),
        rbd_image: v.rbd_image_name(),
    }
}

fn image(i: &GlanceImage) -> CloudImage {
    CloudImage {
        id: i.id.clone(),
        name: i.name.clone(),
        status: i.status.clone(),
        min_disk_gib: i.min_disk.unwrap_or(0),
        size: i.size,
        rbd: i.rbd_location().map(|l| (l.pool, l.image)),
    }
}

impl CloudOps for OpenStackCloud {
    fn name(&self) -> &str {
        &self.name
    }

    fn check_adopt<'a>(
        &'a self,
        target: &'a AdoptTarget,
    ) -> BoxFuture<'a, CloudResult<AdoptCheck>> {
        Box::pin(async move {
            let c = &self.cinder;
            c.require_admin("adopting a volume (Cinder manage-existing)")
                .await
                .map_err(cinder_err)?;
            let host = c
                .resolve_host(&host_target(target))
                .await
                .map_err(cinder_err)?;
            // Read only; an unknown host fails here with Cinder's own message.
            c.list_manageable(&host).await.map_err(cinder_err)?;
            let pools = c.list_pools().await.map_err(cinder_err)?;
            let loc = pools
                .iter()
                .find(|p| p.name == host)
                .and_then(|p| p.ceph_location());
            Ok(AdoptCheck {
                host,
                pool: loc.as_ref().map(|l| l.pool.clone()),
                fsid: loc.map(|l| l.fsid),
            })
        })
    }

    fn adopt<'a>(&'a self, spec: &'a AdoptSpec) -> BoxFuture<'a, CloudResult<AdoptedVolume>> {
        Box::pin(async move {
            let a = self
                .cinder
                .adopt(&AdoptRequest {
                    target: host_target(&spec.target),
                    rbd_image: spec.rbd_image.clone(),
                    name: spec.name.clone(),
                    description: Some("migrated by rbd-relay".into()),
                    volume_type: None,
                    availability_zone: None,
                    bootable: spec.bootable,
                    metadata: spec.metadata.clone(),
                })
                .await
                .map_err(cinder_err)?;
            let mut v = adopted(&a.volume);
            v.host = Some(a.host);
            v.rbd_image = a.rbd_image;
            Ok(v)
        })
    }

    fn set_image_metadata<'a>(
        &'a self,
        id: &'a str,
        metadata: &'a std::collections::BTreeMap<String, String>,
    ) -> BoxFuture<'a, CloudResult<()>> {
        Box::pin(async move {
            self.cinder
                .set_image_metadata(id, metadata)
                .await
                .map_err(cinder_err)
        })
    }

    fn find_adopted<'a>(
        &'a self,
        marker: &'a str,
    ) -> BoxFuture<'a, CloudResult<Vec<AdoptedVolume>>> {
        Box::pin(async move {
            let volumes = self
                .cinder
                .volumes_with_metadata(MARKER_KEY, marker)
                .await
                .map_err(|e| {
                    CloudError::new(
                        CloudErrorKind::Other,
                        format!("listing volumes of migration {marker}: {e}"),
                    )
                })?;
            Ok(volumes.iter().map(adopted).collect())
        })
    }

    fn forget_volume<'a>(&'a self, id: &'a str) -> BoxFuture<'a, CloudResult<()>> {
        Box::pin(async move { self.cinder.unmanage(id).await.map_err(cinder_err) })
    }

    fn source_volume<'a>(&'a self, id: &'a str) -> BoxFuture<'a, CloudResult<SourceVolume>> {
        Box::pin(async move {
            let loc = self.cinder.volume_rbd_image(id).await.map_err(cinder_err)?;
            let v = self.cinder.get_volume(id).await.map_err(cinder_err)?;
            Ok(SourceVolume {
                id: v.id.clone(),
                name: v.name.clone(),
                size_gib: v.size,
                status: v.status.clone(),
                bootable: v.is_bootable(),
                image_metadata: v.image_metadata(),
                pool: loc.pool,
                image: loc.image,
            })
        })
    }

    fn check_register(&self) -> BoxFuture<'_, CloudResult<()>> {
        Box::pin(async move {
            self.glance
                .check_location_credentials(false)
                .await
                .map_err(glance_err)
        })
    }

    fn register_image<'a>(
        &'a self,
        spec: &'a RegisterSpec,
    ) -> BoxFuture<'a, CloudResult<CloudImage>> {
        Box::pin(async move {
            let mut create = CreateImage::raw(spec.name.clone());
            create.min_disk = Some(spec.min_disk_gib);
            create.properties = spec.properties.clone();
            let location = RbdLocation {
                fsid: spec.fsid.clone(),
                pool: spec.pool.clone(),
                image: spec.image.clone(),
                snapshot: spec.snapshot.clone(),
            };
            let i = self
                .glance
                .register(&RegisterRbdImage {
                    image: create,
                    location,
                    allow_member_credentials: false,
                })
                .await
                .map_err(glance_err)?;
            Ok(image(&i))
        })
    }

    fn forget_empty_image<'a>(&'a self, id: &'a str) -> BoxFuture<'a, CloudResult<()>> {
        Box::pin(async move {
            // read again just before: only an empty record is ever deleted
            let i = self.glance.get_image(id).await.map_err(glance_err)?;
            if i.status != "queued" || i.rbd_location().is_some() {
                return Err(CloudError::new(
                    CloudErrorKind::Refused,
                    format!(
                        "image {id} is {} {}: not an empty record, left as it is",
                        i.status,
                        if i.rbd_location().is_some() {
                            "with a location"
                        } else {
                            ""
                        }
                    ),
                ));
            }
            self.glance.delete_image(id).await.map_err(glance_err)
        })
    }

    fn find_images<'a>(&'a self, marker: &'a str) -> BoxFuture<'a, CloudResult<Vec<CloudImage>>> {
        Box::pin(async move {
            let images = self
                .glance
                .images_with_property(MARKER_KEY, marker)
                .await
                .map_err(|e| {
                    CloudError::new(
                        CloudErrorKind::Other,
                        format!("listing images of migration {marker}: {e}"),
                    )
                })?;
            Ok(images.iter().map(image).collect())
        })
    }

    fn get_image<'a>(&'a self, id: &'a str) -> BoxFuture<'a, CloudResult<CloudImage>> {
        Box::pin(async move {
            let i = self.glance.get_image(id).await.map_err(glance_err)?;
            Ok(image(&i))
        })
    }

    fn images_named<'a>(&'a self, name: &'a str) -> BoxFuture<'a, CloudResult<Vec<CloudImage>>> {
        Box::pin(async move {
            let images = self.glance.images_named(name).await.map_err(|e| {
                CloudError::new(
                    CloudErrorKind::Other,
                    format!("listing images named '{name}': {e}"),
                )
            })?;
            Ok(images.iter().map(image).collect())
        })
    }

    fn upload_to_image<'a>(
        &'a self,
        volume_id: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, CloudResult<CloudImage>> {
        Box::pin(async move {
            let mut req = UploadToImageRequest::raw(volume_id, name);
            req.force = true;
            let up = self
                .cinder
                .upload_to_image(&req, &self.glance)
                .await
                .map_err(cinder_err)?;
            Ok(image(&up.image))
        })
    }
}
