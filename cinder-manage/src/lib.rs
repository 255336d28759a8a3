//! Cinder (Block Storage v3) adapter: adopt an RBD image as a volume, upload a volume to Glance.
//!
//! Destination side: list manageable RBD images of a backend, find the `host@backend#pool`
//! string from the scheduler's pools when only the Ceph pool is known, "manage existing" an
//! image by `source-name` (microversion 3.8, negotiated from Cinder's version document; 3.0
//! gives 404 on `/manageable_volumes`), wait for
//! `available`, and report the new volume id and the image's new name (`volume-<id>`: Cinder
//! renames the RBD image). Source side: map a volume id to its RBD image, and upload a
//! (bootable) volume to Glance (`os-volume_upload_image`), waiting until the image is active.
//!
//! Every failure keeps Cinder's message; a 403 says which role is missing.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use cinder_manage::{AdoptRequest, Cinder, HostTarget, Side};
//! use openstack_client::OpenStackClient;
//!
//! let client = OpenStackClient::from_cloud("site-b-admin").await?;
//! let cinder = Cinder::new(client, Side::Destination);
//! let adopted = cinder
//!     .adopt(&AdoptRequest {
//!         target: HostTarget::CephPool { pool: "volumes".into(), fsid: None },
//!         rbd_image: "migrated-disk".into(),
//!         name: Some("disk".into()),
//!         description: None,
//!         volume_type: None,
//!         availability_zone: None,
//!         bootable: false,
//!         metadata: Default::default(),
//!     })
//!     .await?;
//! println!("volume {} now backed by {}", adopted.volume.id, adopted.rbd_image);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OnceCell;

use backon::{ExponentialBuilder, Retryable};

use glance_rbd::Glance;
use openstack_client::{
    poll_until, ApiRequest, ApiVersion, Method, OpenStackClient, Poll, PollError, PollOptions,
    ServiceType,
};
use serde::Deserialize;
use serde_json::{json, Value};

mod error;
mod model;

pub use error::Error;
pub use model::{
    AdoptRequest, AdoptedVolume, BackendPool, CephLocation, HostTarget, ManageRequest,
    ManageableVolume, Service, UploadToImageRequest, UploadedImage, Volume, VolumeRbdImage,
};

/// The lowest microversion this adapter works with: the manageable list and manage-existing
/// need 3.8 (3.0 gives 404 on `/manageable_volumes`).
pub const MICROVERSION_NEEDED: ApiVersion = ApiVersion::new(3, 8);
/// The highest microversion this adapter sends. Every call was checked at 3.8 on Cinder 21
/// (Zed) and Cinder 26 (2025.1); later microversions change response bodies this adapter
/// reads, so it does not go beyond what was tested.
pub const MICROVERSION_PREFERRED: ApiVersion = ApiVersion::new(3, 8);

/// Which cloud of a migration a call is made in (for messages about missing roles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The cloud the volume leaves.
    Source,
    /// The cloud that adopts it.
    Destination,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Destination => "destination",
        })
    }
}

/// Whether `id` has the form of a Cinder volume id: a UUID, 8-4-4-4-12 hex digits.
pub fn is_volume_id(id: &str) -> bool {
    id.len() == 36
        && id.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Check a volume id given by a user before it goes into a URL (`volumes/{id}`) or a file
/// name: anything but a UUID ([`is_volume_id`]) is [`Error::InvalidVolumeId`].
pub fn check_volume_id(id: &str) -> Result<(), Box<Error>> {
    if is_volume_id(id) {
        Ok(())
    } else {
        Err(Box::new(Error::InvalidVolumeId { id: id.to_string() }))
    }
}

#[derive(Deserialize)]
struct Pools {
    pools: Vec<BackendPool>,
}

#[derive(Deserialize)]
struct Manageables {
    #[serde(rename = "manageable-volumes")]
    volumes: Vec<ManageableVolume>,
}

#[derive(Deserialize)]
struct VolumeBody {
    volume: Volume,
}

#[derive(Deserialize)]
struct Volumes {
    volumes: Vec<Volume>,
}

#[derive(Deserialize)]
struct Messages {
    messages: Vec<Message>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    user_message: Option<String>,
}

#[derive(Deserialize)]
struct Services {
    services: Vec<Service>,
}

#[derive(Deserialize)]
struct UploadResp {
    #[serde(rename = "os-volume_upload_image")]
    upload: UploadInfo,
}

#[derive(Deserialize)]
struct UploadInfo {
    image_id: String,
}

/// Cinder adapter bound to one cloud.
#[derive(Debug, Clone)]
pub struct Cinder {
    client: OpenStackClient,
    side: Side,
    poll: PollOptions,
    /// Negotiated on first use, shared by clones.
    microversion: Arc<OnceCell<ApiVersion>>,
}

impl Cinder {
    /// An adapter for `client`'s `block-storage` endpoint, in the cloud on `side`.
    pub fn new(client: OpenStackClient, side: Side) -> Self {
        Self {
            client,
            side,
            poll: PollOptions::default(),
            microversion: Arc::new(OnceCell::new()),
        }
    }

    /// Sets how waits poll.
    pub fn with_poll(mut self, poll: PollOptions) -> Self {
        self.poll = poll;
        self
    }

    /// The underlying client.
    pub fn client(&self) -> &OpenStackClient {
        &self.client
    }

    /// A request with the microversion negotiated with this Cinder (see [`Cinder::microversion`]).
    async fn req(&self, method: Method, path: impl Into<String>) -> Result<ApiRequest, Error> {
        let version = self.microversion().await?;
        Ok(ApiRequest::new(ServiceType::BlockStorage, method, path)
            .microversion("volume", version.to_string()))
    }

    /// The microversion this adapter sends, negotiated once from Cinder's version document:
    /// the highest of [`MICROVERSION_NEEDED`]..=[`MICROVERSION_PREFERRED`] that Cinder offers.
    /// A Cinder that offers none of them is [`Error::Microversion`], before anything is sent.
    pub async fn microversion(&self) -> Result<ApiVersion, Error> {
        self.microversion
            .get_or_try_init(|| async {
                let doc = self
                    .client
                    .version_document(ServiceType::BlockStorage)
                    .await
                    .map_err(self.map("reading Cinder's version document"))?;
                let v = doc
                    .negotiate(MICROVERSION_NEEDED, MICROVERSION_PREFERRED)
                    .map_err(|source| Error::Microversion {
                        cloud: self.client.cloud_name().to_owned(),
                        source,
                    })?;
                tracing::debug!(cloud = self.client.cloud_name(), microversion = %v, "cinder microversion negotiated");
                Ok(v)
            })
            .await
            .copied()
    }

    /// Maps a client error: 403 → [`Error::NeedsAdmin`], else [`Error::Api`] with `action`.
    fn map(&self, action: impl Into<String>) -> impl FnOnce(openstack_client::Error) -> Error {
        let action = action.into();
        let side = self.side;
        let cloud = self.client.cloud_name().to_owned();
        move |source| match source.api() {
            Some(a) if a.status == 403 => Error::NeedsAdmin {
                action,
                side,
                cloud,
                message: a.message.clone(),
            },
            _ => Error::Api { action, source },
        }
    }

    /// Fails with [`Error::NotAdmin`] when Keystone says the token has no `admin` role
    /// (unknown roles pass: Cinder decides).
    pub async fn require_admin(&self, action: &str) -> Result<(), Error> {
        let info = self
            .client
            .token_info()
            .await
            .map_err(self.map("reading the token's roles"))?;
        if info.is_admin() == Some(false) {
            return Err(Error::NotAdmin {
                action: action.to_owned(),
                side: self.side,
                cloud: self.client.cloud_name().to_owned(),
                roles: info.roles_display(),
            });
        }
        Ok(())
    }

    /// `GET /scheduler-stats/get_pools?detail=true` (admin).
    pub async fn list_pools(&self) -> Result<Vec<BackendPool>, Error> {
        let p: Pools = self
            .client
            .send_json(
                &self
                    .req(Method::GET, "scheduler-stats/get_pools")
                    .await?
                    .query("detail", "true"),
            )
            .await
            .map_err(self.map("listing Cinder's scheduler pools"))?;
        Ok(p.pools)
    }

    /// The `host@backend#pool` string for `target`; for a Ceph pool, the one RBD backend whose
    /// `location_info` names that pool (and fsid, if given).
    pub async fn resolve_host(&self, target: &HostTarget) -> Result<String, Error> {
        let (pool, fsid) = match target {
            HostTarget::Host(h) => return Ok(h.clone()),
            HostTarget::CephPool { pool, fsid } => (pool, fsid),
        };
        let pools = self.list_pools().await?;
        let matching: Vec<&BackendPool> = pools
            .iter()
            .filter(|p| {
                p.ceph_location()
                    .is_some_and(|l| &l.pool == pool && fsid.as_ref().is_none_or(|f| f == &l.fsid))
            })
            .collect();
        match matching.as_slice() {
            [one] => Ok(one.name.clone()),
            [] => Err(Error::PoolNotFound {
                pool: pool.clone(),
                fsid: fsid
                    .as_ref()
                    .map(|f| format!(" of cluster {f}"))
                    .unwrap_or_default(),
                known: describe_pools(&pools),
            }),
            many => Err(Error::AmbiguousPool {
                pool: pool.clone(),
                hosts: many
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// `GET /manageable_volumes/detail?host=...` (admin): the RBD images of a backend and
    /// whether each can be managed.
    pub async fn list_manageable(&self, host: &str) -> Result<Vec<ManageableVolume>, Error> {
        // Cinder's RBD driver lists the pool, then opens each image outside its try block:
        // an image removed or renamed in between (another migration) fails the whole list
        // with a 500 ("Listing manageable volumes failed, due to driver error"). It is a read,
        // so try again a few times.
        let req = self
            .req(Method::GET, "manageable_volumes/detail")
            .await?
            .query("host", host);
        let r = (|| self.client.send_json::<Manageables>(&req))
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(300))
                    .with_max_times(4),
            )
            .sleep(tokio::time::sleep)
            .when(|e: &openstack_client::Error| e.api().is_some_and(|a| a.status >= 500))
            .notify(|e, d| tracing::info!(error = %e, retry_in = ?d, "manageable list failed; retrying"))
            .await;
        match r {
            Ok(m) => Ok(m.volumes),
            Err(e) if e.api().is_some_and(|a| a.status == 404 || a.status == 400) => {
                Err(self.unknown_host(host, e).await)
            }
            Err(e) => Err(self.map(format!("listing manageable volumes on `{host}`"))(
                e,
            )),
        }
    }

    async fn unknown_host(&self, host: &str, e: openstack_client::Error) -> Error {
        let message = e.api().map(|a| a.message.clone()).unwrap_or_default();
        let known = match self.list_pools().await {
            Ok(p) => describe_pools(&p),
            Err(_) => "unknown".into(),
        };
        Error::UnknownHost {
            host: host.to_owned(),
            message,
            known,
        }
    }

    /// `POST /manageable_volumes` (admin): starts managing; returns the `creating` volume.
    pub async fn manage(&self, req: &ManageRequest) -> Result<Volume, Error> {
        let r = self
            .client
            .send_json::<VolumeBody>(
                &self
                    .req(Method::POST, "manageable_volumes")
                    .await?
                    .json(req.body()),
            )
            .await;
        match r {
            Ok(v) => Ok(v.volume),
            Err(e)
                if e.api().is_some_and(|a| {
                    a.status == 400 && a.message.contains("Host") && a.message.contains("not found")
                }) =>
            {
                Err(self.unknown_host(&req.host, e).await)
            }
            Err(e) => Err(self.map(format!(
                "managing RBD image `{}` on `{}`",
                req.source_name, req.host
            ))(e)),
        }
    }

    /// `GET /volumes/{id}`.
    pub async fn get_volume(&self, id: &str) -> Result<Volume, Error> {
        check_volume_id(id).map_err(|e| *e)?;
        self.client
            .send_json::<VolumeBody>(&self.req(Method::GET, format!("volumes/{id}")).await?)
            .await
            .map(|v| v.volume)
            .map_err(self.map(format!("getting volume {id}")))
    }

    /// Every volume of every project whose metadata has `key` = `value`
    /// (`GET /volumes/detail?all_tenants=1&metadata={"key":"value"}`, admin). The answer is
    /// filtered again here: a server that ignored the filter must not hand back others.
    pub async fn volumes_with_metadata(
        &self,
        key: &str,
        value: &str,
    ) -> Result<Vec<Volume>, Error> {
        let filter = serde_json::json!({ key: value }).to_string();
        let req = self
            .req(Method::GET, "volumes/detail")
            .await?
            .query("all_tenants", "1")
            .query("metadata", filter);
        let v: Volumes = self
            .client
            .send_json(&req)
            .await
            .map_err(self.map(format!("listing volumes with metadata {key}={value}")))?;
        Ok(v.volumes
            .into_iter()
            .filter(|v| v.metadata.get(key).map(String::as_str) == Some(value))
            .collect())
    }

    /// Cinder's user messages about a resource, newest last (`GET /messages`).
    pub async fn messages_for(&self, id: &str) -> Result<Vec<String>, Error> {
        check_volume_id(id).map_err(|e| *e)?;
        let m: Messages = self
            .client
            .send_json(
                &self
                    .req(Method::GET, "messages")
                    .await?
                    .query("resource_uuid", id),
            )
            .await
            .map_err(self.map(format!("reading Cinder's messages about {id}")))?;
        Ok(m.messages
            .into_iter()
            .filter_map(|m| m.user_message)
            .collect())
    }

    /// Polls volume `id` until its status is one of `want`; fails on `error*` with Cinder's
    /// user message as the reason.
    pub async fn wait_status(&self, id: &str, want: &[&str]) -> Result<Volume, Error> {
        let what = format!("volume {id} to become {}", want.join(" or "));
        poll_until(&what, &self.poll, || async {
            let v = match self.get_volume(id).await {
                Ok(v) => v,
                // A restarting API or a lost connection should not end a long wait.
                Err(Error::Api { source, .. }) if source.is_transient() => {
                    return Ok(Poll::Pending(format!("Cinder unavailable: {source}")))
                }
                Err(e) => return Err(e),
            };
            if want.contains(&v.status.as_str()) {
                return Ok(Poll::Ready(v));
            }
            if v.status.starts_with("error") {
                let reason = self.failure_reason(&v).await;
                return Err(Error::VolumeFailed {
                    id: id.to_owned(),
                    status: v.status,
                    reason,
                });
            }
            Ok(Poll::Pending(format!("status {}", v.status)))
        })
        .await
        .map_err(|e| match e {
            PollError::Failed(e) => e,
            t @ PollError::TimedOut { .. } => Error::Timeout(t.to_string()),
        })
    }

    /// Why volume `v` (in an `error*` status) failed, from what Cinder keeps: its user
    /// messages (`GET /messages?resource_uuid=ID`, microversion >= 3.3) when there are any,
    /// else its record and the state of the volume service and scheduler pool it was sent to.
    ///
    /// Cinder (up to at least Zed) writes no user message when a manage-existing fails, in
    /// the scheduler or in the volume driver: the flow only sets `error_managing`, shown as
    /// `error`. So for a failed adoption the reason is assembled from the volume record
    /// (host, size), `GET /os-services` (the cinder-volume service down or disabled) and
    /// `GET /scheduler-stats/get_pools` (no scheduler pool of that name: the scheduler could
    /// not place it). Each of those reads is best effort: a failed read is named, never fatal.
    pub async fn failure_reason(&self, v: &Volume) -> String {
        let id = &v.id;
        let messages = match self.messages_for(id).await {
            Ok(m) if !m.is_empty() => return format!("Cinder's user messages: {}", m.join("; ")),
            Ok(_) => "no user message".to_string(),
            Err(e) => format!("its user messages could not be read ({e})"),
        };
        let mut why = vec![format!(
            "Cinder gave {messages} (it writes none for a failed manage-existing); its record: status `{}`, size {} GiB, host `{}`",
            v.status,
            v.size,
            v.host.as_deref().unwrap_or("unknown (needs admin)")
        )];
        let Some(host) = v.host.clone() else {
            why.push(format!("search the cinder-volume log for volume {id}"));
            return why.join("; ");
        };
        let backend = host.split('#').next().unwrap_or(&host).to_string();
        let mut placed = true;
        match self.volume_services(&backend).await {
            Ok(services) if services.is_empty() => {
                placed = false;
                why.push(format!(
                    "no cinder-volume service `{backend}` is registered"
                ));
            }
            Ok(services) => {
                for s in services {
                    if s.state != "up" {
                        placed = false;
                        why.push(format!(
                            "the cinder-volume service `{}` is {} (last report {}): the scheduler drops a backend whose service does not report",
                            s.host,
                            s.state,
                            s.updated_at.as_deref().unwrap_or("never")
                        ));
                    }
                    if s.status != "enabled" {
                        placed = false;
                        why.push(format!(
                            "the cinder-volume service `{}` is {}{}",
                            s.host,
                            s.status,
                            s.disabled_reason
                                .as_deref()
                                .map(|r| format!(" ({r})"))
                                .unwrap_or_default()
                        ));
                    }
                }
            }
            Err(e) => why.push(format!("the volume services could not be read ({e})")),
        }
        if host.contains('#') {
            match self.list_pools().await {
                Ok(pools) if !pools.iter().any(|p| p.name == host) => {
                    placed = false;
                    why.push(format!(
                        "the scheduler has no pool `{host}`, so it could not place the volume (its pools: {}); give a host string it lists, or wait until the backend reports its pools again (cinder-volume restarted)",
                        describe_pools(&pools)
                    ));
                }
                Ok(_) => {}
                Err(e) => why.push(format!("the scheduler's pools could not be read ({e})")),
            }
        }
        if placed {
            why.push(format!(
                "the scheduler and the service `{backend}` look healthy, so the volume driver or Cinder's database failed: the RBD image could not be opened or renamed (gone or renamed meanwhile, or Cinder's Ceph user may not read it), the project's volume or gigabytes quota was exceeded, or Cinder's database refused a write (e.g. 'database is locked' on SQLite); search the cinder-volume log on `{backend}` for volume {id}"
            ));
        }
        why.join("; ")
    }

    /// The cinder-volume services of backend `host@backend` (`GET /os-services`, admin).
    pub async fn volume_services(&self, backend: &str) -> Result<Vec<Service>, Error> {
        let s: Services = self
            .client
            .send_json(
                &self
                    .req(Method::GET, "os-services")
                    .await?
                    .query("binary", "cinder-volume")
                    .query("host", backend),
            )
            .await
            .map_err(self.map(format!("listing the cinder-volume services of `{backend}`")))?;
        // filtered again: a server that ignored the filter must not name another service
        Ok(s.services
            .into_iter()
            .filter(|s| s.binary == "cinder-volume" && s.host == backend)
            .collect())
    }

    /// Waits until volume `id` is `available`.
    pub async fn wait_available(&self, id: &str) -> Result<Volume, Error> {
        self.wait_status(id, &["available"]).await
    }

    /// `os-set_image_metadata`: set each key of `metadata` in volume `id`'s image metadata
    /// (`volume_image_metadata`); other keys stay. Idempotent. Nothing is sent for an empty
    /// map.
    pub async fn set_image_metadata(
        &self,
        id: &str,
        metadata: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), Error> {
        check_volume_id(id).map_err(|e| *e)?;
        if metadata.is_empty() {
            return Ok(());
        }
        self.client
            .send_empty(
                &self
                    .req(Method::POST, format!("volumes/{id}/action"))
                    .await?
                    .json(json!({"os-set_image_metadata": {"metadata": metadata}})),
            )
            .await
            .map_err(self.map(format!("setting the image metadata of volume {id}")))
    }

    /// `os-unmanage`: Cinder forgets the volume; the RBD image stays (admin).
    pub async fn unmanage(&self, id: &str) -> Result<(), Error> {
        check_volume_id(id).map_err(|e| *e)?;
        self.client
            .send_empty(
                &self
                    .req(Method::POST, format!("volumes/{id}/action"))
                    .await?
                    .json(json!({"os-unmanage": {}})),
            )
            .await
            .map_err(self.map(format!("unmanaging volume {id}")))
    }

    /// The whole adoption: admin check, host resolution, manageable check (exists, not
    /// already managed), manage, wait until `available`. If the volume fails, its record is
    /// unmanaged again (the RBD image is never deleted) and the error carries Cinder's reason.
    pub async fn adopt(&self, req: &AdoptRequest) -> Result<AdoptedVolume, Error> {
        let action = format!("adopting RBD image `{}`", req.rbd_image);
        self.require_admin(&action).await?;
        let host = self.resolve_host(&req.target).await?;
        let listed = self.list_manageable(&host).await?;
        match listed
            .iter()
            .find(|m| m.source_name() == Some(req.rbd_image.as_str()))
        {
            Some(m)
                if !m.safe_to_manage
                    && m.cinder_id.is_none()
                    && m.reason_not_safe.as_deref() != Some("already managed") =>
            {
                return Err(Error::NotManageable {
                    image: req.rbd_image.clone(),
                    host,
                    reason: m
                        .reason_not_safe
                        .clone()
                        .unwrap_or_else(|| "no reason given".into()),
                })
            }
            Some(m) if !m.safe_to_manage => {
                return Err(Error::AlreadyManaged {
                    image: req.rbd_image.clone(),
                    host,
                    by: m
                        .cinder_id
                        .as_ref()
                        .map(|i| format!(" as volume {i}"))
                        .unwrap_or_default(),
                    reason: m.reason_not_safe.clone().unwrap_or_default(),
                })
            }
            Some(_) => {}
            // Cinder caps lists (osapi_max_limit, 1000): only a short list proves absence.
            None if listed.len() < 1000 => {
                return Err(Error::ImageNotFound {
                    image: req.rbd_image.clone(),
                    host,
                })
            }
            None => {}
        }
        let started = self
            .manage(&ManageRequest {
                host: host.clone(),
                source_name: req.rbd_image.clone(),
                name: req.name.clone(),
                description: req.description.clone(),
                volume_type: req.volume_type.clone(),
                availability_zone: req.availability_zone.clone(),
                bootable: req.bootable,
                metadata: req.metadata.clone(),
            })
            .await?;
        tracing::info!(volume = %started.id, image = %req.rbd_image, %host, "manage started");
        match self.wait_available(&started.id).await {
            Ok(volume) => {
                let rbd_image = volume.rbd_image_name();
                Ok(AdoptedVolume {
                    volume,
                    host,
                    rbd_image,
                })
            }
            Err(Error::VolumeFailed { id, status, reason }) => {
                let mut reason = reason;
                match self.unmanage(&started.id).await {
                    Ok(()) => reason.push_str(&format!(
                        "; the failed record was unmanaged{}",
                        self.where_image_is(&host, &req.rbd_image, &started.id)
                            .await
                    )),
                    Err(u) => {
                        tracing::warn!(volume = %started.id, error = %u, "could not unmanage the failed volume record");
                        reason.push_str(&format!(
                            "; unmanaging the failed record failed too ({u}): run `openstack volume set --state error {id}` then `cinder unmanage {id}` (the RBD image stays)"
                        ));
                    }
                }
                Err(Error::VolumeFailed { id, status, reason })
            }
            Err(e) => Err(e),
        }
    }

    /// Where the image of a failed adoption is now, for the message: under its own name
    /// (a re-run adopts it), or renamed to `volume-<id>` by a driver that failed after the
    /// rename (rename it back first). Best effort: empty when the list cannot be read.
    async fn where_image_is(&self, host: &str, image: &str, failed_id: &str) -> String {
        let renamed = format!("volume-{failed_id}");
        match self.list_manageable(host).await {
            Ok(l) if l.iter().any(|m| m.source_name() == Some(image)) => {
                format!(" and the RBD image `{image}` keeps its name, so a re-run adopts it")
            }
            Ok(l) if l.iter().any(|m| m.source_name() == Some(renamed.as_str())) => format!(
                " but Cinder had renamed the RBD image to `{renamed}` before failing: rename it back (`rbd rename POOL/{renamed} POOL/{image}`) before a re-run"
            ),
            _ => String::new(),
        }
    }

    /// Source side: the RBD image behind volume `id` (needs admin: the host attribute).
    pub async fn volume_rbd_image(&self, id: &str) -> Result<VolumeRbdImage, Error> {
        check_volume_id(id).map_err(|e| *e)?;
        let v = self.get_volume(id).await?;
        let Some(host) = v.host.clone() else {
            // Cinder shows `os-vol-host-attr:host` to admins only.
            let roles = match self.client.token_info().await {
                Ok(i) => i.roles_display(),
                Err(_) => "unknown".into(),
            };
            return Err(Error::NotAdmin {
                action: format!("finding the RBD image of volume {id} (its host is hidden)"),
                side: self.side,
                cloud: self.client.cloud_name().to_owned(),
                roles,
            });
        };
        let pools = self.list_pools().await?;
        let loc = pools
            .iter()
            .find(|p| p.name == host)
            .and_then(BackendPool::ceph_location)
            .ok_or_else(|| {
                Error::Unexpected(format!(
                    "volume {id} is on `{host}`, which reports no Ceph location (pools: {})",
                    describe_pools(&pools)
                ))
            })?;
        Ok(VolumeRbdImage {
            volume_id: v.id.clone(),
            host,
            pool: loc.pool,
            image: v.rbd_image_name(),
            fsid: loc.fsid,
            ceph_conf: loc.conf,
        })
    }

    /// Source side: `os-volume_upload_image`, then wait until the Glance image is `active`
    /// and the volume is back to `available`/`in-use`.
    pub async fn upload_to_image(
        &self,
        req: &UploadToImageRequest,
        glance: &Glance,
    ) -> Result<UploadedImage, Error> {
        check_volume_id(&req.volume_id).map_err(|e| *e)?;
        let mut p = serde_json::Map::new();
        p.insert("image_name".into(), json!(req.image_name));
        p.insert("disk_format".into(), json!(req.disk_format));
        p.insert("container_format".into(), json!(req.container_format));
        p.insert("force".into(), json!(req.force));
        if let Some(v) = &req.visibility {
            p.insert("visibility".into(), json!(v));
        }
        if let Some(pr) = req.protected {
            p.insert("protected".into(), json!(pr));
        }
        let id = &req.volume_id;
        let r: UploadResp = self
            .client
            .send_json(
                &self
                    .req(Method::POST, format!("volumes/{id}/action"))
                    .await?
                    .json(json!({ "os-volume_upload_image": Value::Object(p) })),
            )
            .await
            .map_err(self.map(format!("uploading volume {id} to an image")))?;
        let image_id = r.upload.image_id;
        tracing::info!(volume = %id, image = %image_id, "upload to image started");
        let image = glance
            .clone()
            .with_poll(self.poll.clone())
            .wait_active(&image_id)
            .await
            .map_err(|source| Error::Glance {
                volume: id.clone(),
                source,
            })?;
        let volume = self.wait_status(id, &["available", "in-use"]).await?;
        Ok(UploadedImage { image, volume })
    }
}

fn describe_pools(pools: &[BackendPool]) -> String {
    if pools.is_empty() {
        return "none".into();
    }
    pools
        .iter()
        .map(|p| match p.ceph_location() {
            Some(l) => format!("{} (Ceph pool {} of {})", p.name, l.pool, l.fsid),
            None => p.name.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_info_parses() {
        let p: BackendPool = serde_json::from_value(json!({
            "name": "osks@ceph#ceph",
            "capabilities": {"location_info":
                "ceph:/etc/ceph/osks.conf:d95d3f19-fc36-4737-ab85-8c9a862990d0:cinder:volumes"}
        }))
        .unwrap();
        let l = p.ceph_location().unwrap();
        assert_eq!(l.pool, "volumes");
        assert_eq!(l.user, "cinder");
        assert_eq!(l.fsid, "d95d3f19-fc36-4737-ab85-8c9a862990d0");
        assert_eq!(l.conf, "/etc/ceph/osks.conf");
    }

    #[test]
    fn manage_body_matches_cinder_schema() {
        let r = ManageRequest {
            host: "h@b#p".into(),
            source_name: "img".into(),
            name: Some("n".into()),
            bootable: true,
            ..Default::default()
        };
        assert_eq!(
            r.body(),
            json!({"volume": {"host": "h@b#p", "ref": {"source-name": "img"},
                              "bootable": true, "name": "n"}})
        );
    }

    #[test]
    fn rbd_name_follows_name_id() {
        let mut v: Volume =
            serde_json::from_value(json!({"id": "abc", "status": "available"})).unwrap();
        assert_eq!(v.rbd_image_name(), "volume-abc");
        v.name_id = Some("def".into());
        assert_eq!(v.rbd_image_name(), "volume-def");
    }

    #[test]
    fn only_uuids_are_volume_ids() {
        for ok in [
            "a1cf7486-c00e-40ba-8ffe-b903c9a7d35a",
            "A1CF7486-C00E-40BA-8FFE-B903C9A7D35A",
        ] {
            assert!(check_volume_id(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "abc",
            "../../v3/auth/tokens",
            "a1cf7486-c00e-40ba-8ffe-b903c9a7d35a/action",
            "a1cf7486-c00e-40ba-8ffe-b903c9a7d35", // one digit short
            "a1cf7486c00e-40ba-8ffe-b903c9a7d35a-",
            "g1cf7486-c00e-40ba-8ffe-b903c9a7d35a",
            "a1cf7486-c00e-40ba-8ffe-b903c9a7d3é",
        ] {
            let e = check_volume_id(bad).unwrap_err().to_string();
            assert!(
                e.contains(&format!(
                    "'{bad}' is not a Cinder volume id: give the volume's UUID"
                )) && e.contains("nothing was sent"),
                "{e}"
            );
        }
    }

    #[test]
    fn forbidden_message_says_admin_in_destination() {
        let e = Error::NeedsAdmin {
            action: "managing RBD image `x` on `h`".into(),
            side: Side::Destination,
            cloud: "site-b-member".into(),
            message: "Policy doesn't allow volume_extension:volume_manage to be performed.".into(),
        }
        .to_string();
        assert!(
            e.contains("this needs an admin role in the destination cloud"),
            "{e}"
        );
        assert!(e.contains("volume_extension:volume_manage"), "{e}");
    }
}
