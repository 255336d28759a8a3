//! A destination cloud in memory ([`FakeCloud`], a fake of [`CloudOps`]), apart from the
//! Ceph fake because only the cloud-side tests (adopt, register) use it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::World;
use crate::cloud::{
    AdoptCheck, AdoptSpec, AdoptTarget, AdoptedVolume, BoxFuture, CloudError, CloudErrorKind,
    CloudImage, CloudOps, CloudResult, RegisterSpec, SourceVolume, MARKER_KEY,
};

/// A destination cloud in memory: adoption renames the image in the fake Ceph world, as
/// Cinder's manage-existing does.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CloudWorld {
    /// The credentials have the admin role.
    pub admin: bool,
    /// Host strings and the Ceph pool each backend stores into.
    pub hosts: BTreeMap<String, String>,
    /// Volume records with their metadata.
    pub volumes: Vec<(AdoptedVolume, BTreeMap<String, String>)>,
    /// The next adopt manages the image, then its answer is lost (a crash or a network cut).
    pub lose_next_adopt_answer: bool,
    /// The next adopt leaves a record in `error` (the run died before unmanaging it).
    pub error_record_next_adopt: bool,
    /// How many adopt calls were made.
    pub adopt_calls: u32,
    /// Registered images with their properties and locations (`rbd://fsid/pool/image/snap`).
    pub images: Vec<(CloudImage, BTreeMap<String, String>, String)>,
    /// The next registration is made, then its answer is lost.
    pub lose_next_register_answer: bool,
    /// The next registration makes only the empty (`queued`, no location) image record,
    /// then its answer is lost (Glance's create answered, the location never added).
    pub empty_record_next_register: bool,
    /// Glance ignores min_disk (to test the check).
    pub drop_min_disk: bool,
    /// How many register calls were made.
    pub register_calls: u32,
    /// Image metadata (`volume_image_metadata`) per volume id.
    pub image_metadata: BTreeMap<String, BTreeMap<String, String>>,
    /// The next set_image_metadata fails (after the volume was adopted: a cut connection).
    pub fail_next_set_image_metadata: bool,
    next_id: u32,
}

pub struct FakeCloud {
    pub world: Arc<Mutex<World>>,
    pub cloud: Arc<Mutex<CloudWorld>>,
}

impl FakeCloud {
    fn adopt_now(&self, spec: &AdoptSpec) -> CloudResult<AdoptedVolume> {
        let mut c = self.cloud.lock().unwrap();
        c.adopt_calls += 1;
        let (host, pool) = Self::resolve(&c, &spec.target)?;
        let mut w = self.world.lock().unwrap();
        let from = format!("{pool}/{}", spec.rbd_image);
        let Some(img) = w.sites[1].images.remove(&from) else {
            return Err(CloudError::new(
                CloudErrorKind::NotFound,
                format!(
                    "Cinder backend `{host}` lists no RBD image named `{}`",
                    spec.rbd_image
                ),
            ));
        };
        c.next_id += 1;
        let id = format!("vol-{}", c.next_id);
        let error = std::mem::take(&mut c.error_record_next_adopt);
        let v = AdoptedVolume {
            id: id.clone(),
            name: spec.name.clone(),
            status: if error {
                "error".into()
            } else {
                "available".into()
            },
            size_gib: img.size().div_ceil(1 << 30),
            host: Some(host),
            rbd_image: if error {
                spec.rbd_image.clone()
            } else {
                format!("volume-{id}")
            },
        };
        w.sites[1]
            .images
            .insert(format!("{pool}/{}", v.rbd_image), img);
        c.volumes.push((v.clone(), spec.metadata.clone()));
        if error {
            return Err(CloudError::new(
                CloudErrorKind::Other,
                format!("volume {id} ended in status `error`"),
            ));
        }
        if std::mem::take(&mut c.lose_next_adopt_answer) {
            return Err(CloudError::new(CloudErrorKind::Other, "connection reset"));
        }
        Ok(v)
    }

    fn register_now(&self, spec: &RegisterSpec) -> CloudResult<CloudImage> {
        let mut c = self.cloud.lock().unwrap();
        c.register_calls += 1;
        let w = self.world.lock().unwrap();
        let key = format!("{}/{}", spec.pool, spec.image);
        let ok = w.sites[1].images.get(&key).is_some_and(|i| {
            i.snaps
                .iter()
                .any(|s| s.name == spec.snapshot && s.protected)
        });
        if !ok {
            return Err(CloudError::new(
                CloudErrorKind::Other,
                format!("image {key}@{} is missing or unprotected", spec.snapshot),
            ));
        }
        c.next_id += 1;
        if std::mem::take(&mut c.empty_record_next_register) {
            let empty = CloudImage {
                id: format!("img-{}", c.next_id),
                name: Some(spec.name.clone()),
                status: "queued".into(),
                min_disk_gib: spec.min_disk_gib,
                size: None,
                rbd: None,
            };
            c.images
                .push((empty, spec.properties.clone(), String::new()));
            return Err(CloudError::new(CloudErrorKind::Other, "HTTP 503"));
        }
        let image = CloudImage {
            id: format!("img-{}", c.next_id),
            name: Some(spec.name.clone()),
            status: "active".into(),
            min_disk_gib: if c.drop_min_disk {
                0
            } else {
                spec.min_disk_gib
            },
            size: Some(w.sites[1].images[&key].data.len() as u64),
            rbd: Some((spec.pool.clone(), spec.image.clone())),
        };
        let url = format!(
            "rbd://{}/{}/{}/{}",
            spec.fsid, spec.pool, spec.image, spec.snapshot
        );
        c.images.push((image.clone(), spec.properties.clone(), url));
        if std::mem::take(&mut c.lose_next_register_answer) {
            return Err(CloudError::new(CloudErrorKind::Other, "connection reset"));
        }
        Ok(image)
    }

    /// The answer of a cloud call that has taken effect arrives after the world's
    /// `op_delay`: a caller dropped in between never hears of it (a lost answer).
    async fn answer_delay(&self) {
        let delay = self.world.lock().unwrap().op_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }

    /// A cloud whose backend `site-b@ceph#ceph` stores into `cinder`, with admin credentials.
    pub fn new(world: Arc<Mutex<World>>) -> (Arc<FakeCloud>, Arc<Mutex<CloudWorld>>) {
        let mut c = CloudWorld {
            admin: true,
            ..Default::default()
        };
        c.hosts.insert("site-b@ceph#ceph".into(), "cinder".into());
        let cloud = Arc::new(Mutex::new(c));
        (
            Arc::new(FakeCloud {
                world,
                cloud: cloud.clone(),
            }),
            cloud,
        )
    }

    fn resolve(c: &CloudWorld, target: &AdoptTarget) -> CloudResult<(String, String)> {
        if !c.admin {
            return Err(CloudError::new(
                CloudErrorKind::Forbidden,
                "adopting: this needs an admin role in the destination cloud `fake`; the credentials have roles: member",
            ));
        }
        match target {
            AdoptTarget::Host { host } => c
                .hosts
                .get(host)
                .map(|p| (host.clone(), p.clone()))
                .ok_or_else(|| {
                    CloudError::new(
                        CloudErrorKind::NotFound,
                        format!(
                            "Cinder does not know host `{host}`: Host {host} could not be found"
                        ),
                    )
                }),
            AdoptTarget::CephPool { pool } => c
                .hosts
                .iter()
                .find(|(_, p)| *p == pool)
                .map(|(h, p)| (h.clone(), p.clone()))
                .ok_or_else(|| {
                    CloudError::new(
                        CloudErrorKind::NotFound,
                        format!("no Cinder backend stores into Ceph pool `{pool}`"),
                    )
                }),
        }
    }
}

fn unsupported<T: Send + 'static>(what: &str) -> BoxFuture<'static, CloudResult<T>> {
    let e = CloudError::new(CloudErrorKind::Other, format!("{what}: not simulated"));
    Box::pin(async move { Err(e) })
}

impl CloudOps for FakeCloud {
    fn name(&self) -> &str {
        "site-b-admin"
    }
    fn check_adopt<'a>(
        &'a self,
        target: &'a AdoptTarget,
    ) -> BoxFuture<'a, CloudResult<AdoptCheck>> {
        Box::pin(async move {
            let c = self.cloud.lock().unwrap();
            let (host, pool) = Self::resolve(&c, target)?;
            Ok(AdoptCheck {
                host,
                pool: Some(pool),
                fsid: Some("fsid-1".into()),
            })
        })
    }
    fn adopt<'a>(&'a self, spec: &'a AdoptSpec) -> BoxFuture<'a, CloudResult<AdoptedVolume>> {
        Box::pin(async move {
            let answer = self.adopt_now(spec);
            self.answer_delay().await;
            answer
        })
    }
    fn set_image_metadata<'a>(
        &'a self,
        id: &'a str,
        metadata: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, CloudResult<()>> {
        Box::pin(async move {
            let mut c = self.cloud.lock().unwrap();
            if std::mem::take(&mut c.fail_next_set_image_metadata) {
                return Err(CloudError::new(CloudErrorKind::Other, "connection reset"));
            }
            if !c.volumes.iter().any(|(v, _)| v.id == id) {
                return Err(CloudError::new(
                    CloudErrorKind::NotFound,
                    format!("no volume {id}"),
                ));
            }
            let m = c.image_metadata.entry(id.to_string()).or_default();
            m.extend(metadata.iter().map(|(k, v)| (k.clone(), v.clone())));
            Ok(())
        })
    }
    fn find_adopted<'a>(
        &'a self,
        marker: &'a str,
    ) -> BoxFuture<'a, CloudResult<Vec<AdoptedVolume>>> {
        Box::pin(async move {
            let c = self.cloud.lock().unwrap();
            Ok(c.volumes
                .iter()
                .filter(|(_, m)| m.get(MARKER_KEY).map(String::as_str) == Some(marker))
                .map(|(v, _)| v.clone())
                .collect())
        })
    }
    fn forget_volume<'a>(&'a self, id: &'a str) -> BoxFuture<'a, CloudResult<()>> {
        Box::pin(async move {
            self.cloud
                .lock()
                .unwrap()
                .volumes
                .retain(|(v, _)| v.id != id);
            Ok(())
        })
    }
    fn source_volume<'a>(&'a self, _id: &'a str) -> BoxFuture<'a, CloudResult<SourceVolume>> {
        unsupported("source_volume")
    }
    fn check_register(&self) -> BoxFuture<'_, CloudResult<()>> {
        Box::pin(async move {
            if self.cloud.lock().unwrap().admin {
                Ok(())
            } else {
                Err(CloudError::new(
                    CloudErrorKind::Forbidden,
                    "refusing to add an rbd:// location with the credentials of cloud `fake` (roles: member)",
                ))
            }
        })
    }
    fn register_image<'a>(
        &'a self,
        spec: &'a RegisterSpec,
    ) -> BoxFuture<'a, CloudResult<CloudImage>> {
        Box::pin(async move {
            let answer = self.register_now(spec);
            self.answer_delay().await;
            answer
        })
    }
    fn forget_empty_image<'a>(&'a self, id: &'a str) -> BoxFuture<'a, CloudResult<()>> {
        Box::pin(async move {
            let mut c = self.cloud.lock().unwrap();
            let at = c
                .images
                .iter()
                .position(|(i, _, url)| i.id == id && i.status == "queued" && url.is_empty());
            match at {
                Some(at) => {
                    c.images.remove(at);
                    Ok(())
                }
                None => Err(CloudError::new(
                    CloudErrorKind::Refused,
                    format!("image {id} is not an empty record"),
                )),
            }
        })
    }
    fn find_images<'a>(&'a self, marker: &'a str) -> BoxFuture<'a, CloudResult<Vec<CloudImage>>> {
        Box::pin(async move {
            let c = self.cloud.lock().unwrap();
            Ok(c.images
                .iter()
                .filter(|(_, p, _)| p.get(MARKER_KEY).map(String::as_str) == Some(marker))
                .map(|(i, _, _)| i.clone())
                .collect())
        })
    }
    fn get_image<'a>(&'a self, id: &'a str) -> BoxFuture<'a, CloudResult<CloudImage>> {
        Box::pin(async move {
            let c = self.cloud.lock().unwrap();
            c.images
                .iter()
                .find(|(i, _, _)| i.id == id)
                .map(|(i, _, _)| i.clone())
                .ok_or_else(|| CloudError::new(CloudErrorKind::NotFound, format!("no image {id}")))
        })
    }
    fn images_named<'a>(&'a self, name: &'a str) -> BoxFuture<'a, CloudResult<Vec<CloudImage>>> {
        Box::pin(async move {
            let c = self.cloud.lock().unwrap();
            Ok(c.images
                .iter()
                .filter(|(i, _, _)| i.name.as_deref() == Some(name))
                .map(|(i, _, _)| i.clone())
                .collect())
        })
    }
    fn upload_to_image<'a>(
        &'a self,
        _volume_id: &'a str,
        _name: &'a str,
    ) -> BoxFuture<'a, CloudResult<CloudImage>> {
        unsupported("upload_to_image")
    }
}
