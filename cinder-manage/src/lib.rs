//! Cinder (Block Storage v3) adapter: adopt an RBD image as a volume, upload a volume to Glance.
//!
//! Destination side: list manageable RBD images of a backend, find the `host@backend#pool`
//! string from the scheduler's pools when only the Ceph pool is known, "manage existing" an
//! image by `source-name` (microversion 3.8; 3.0 gives 404 on `/manageable_volumes`), wait for
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

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use glance_rbd::Glance;
use openstack_client::{
    poll_until, ApiRequest, Method, OpenStackClient, Poll, PollOptions, ServiceType, WaitError,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The microversion sent on every Cinder call (manageable list/manage need ≥ 3.8).
pub const MICROVERSION: &str = "3.8";

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

/// Errors of the Cinder adapter.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A volume id that is not a UUID; nothing was sent.
    #[error(
        "'{id}' is not a Cinder volume id: give the volume's UUID (8-4-4-4-12 hex digits, as \
         `openstack volume list` shows it); nothing was sent"
    )]
    InvalidVolumeId {
        /// The id as given.
        id: String,
    },
    /// Cinder refused for lack of a role (HTTP 403).
    #[error(
        "{action}: this needs an admin role in the {side} cloud `{cloud}` (Cinder said: \
         {message})"
    )]
    NeedsAdmin {
        /// What was being done.
        action: String,
        /// Source or destination.
        side: Side,
        /// The cloud.
        cloud: String,
        /// Cinder's message (names the policy).
        message: String,
    },
    /// The token has no admin role; nothing was sent.
    #[error(
        "{action}: this needs an admin role in the {side} cloud `{cloud}`; the credentials \
         have roles: {roles}"
    )]
    NotAdmin {
        /// What was to be done.
        action: String,
        /// Source or destination.
        side: Side,
        /// The cloud.
        cloud: String,
        /// The token's roles.
        roles: String,
    },
    /// Cinder does not know the host string.
    #[error("Cinder does not know host `{host}`: {message} (known pools: {known})")]
    UnknownHost {
        /// The host string given.
        host: String,
        /// Cinder's message.
        message: String,
        /// Pools the scheduler reports, if readable.
        known: String,
    },
    /// No scheduler pool stores into the Ceph pool.
    #[error("no Cinder backend stores into Ceph pool `{pool}`{fsid} (pools: {known})")]
    PoolNotFound {
        /// The Ceph pool.
        pool: String,
        /// `" of cluster FSID"` or empty.
        fsid: String,
        /// What the scheduler reports.
        known: String,
    },
    /// Several backends store into the Ceph pool.
    #[error("several Cinder backends store into Ceph pool `{pool}`: {hosts}; give the host")]
    AmbiguousPool {
        /// The Ceph pool.
        pool: String,
        /// The candidates.
        hosts: String,
    },
    /// The RBD image is already a Cinder volume.
    #[error("RBD image `{image}` on `{host}` is already managed by Cinder{by} ({reason})")]
    AlreadyManaged {
        /// The image.
        image: String,
        /// The host string.
        host: String,
        /// `" as volume ID"` or empty.
        by: String,
        /// Cinder's reason.
        reason: String,
    },
    /// Cinder will not manage the image for another reason (`volume in use`: it has
    /// watchers, e.g. a client or rbd-mirror still has it open).
    #[error("Cinder will not manage RBD image `{image}` on `{host}`: {reason}")]
    NotManageable {
        /// The image.
        image: String,
        /// The host string.
        host: String,
        /// Cinder's reason.
        reason: String,
    },
    /// The backend does not list the image at all.
    #[error("Cinder backend `{host}` lists no RBD image named `{image}`")]
    ImageNotFound {
        /// The image.
        image: String,
        /// The host string.
        host: String,
    },
    /// The volume reached an error state.
    #[error("volume {id} ended in status `{status}`: {reason}")]
    VolumeFailed {
        /// Volume id.
        id: String,
        /// The status (`error`, `error_managing`, ...).
        status: String,
        /// Cinder's user message, or what is known.
        reason: String,
    },
    /// A wait passed its deadline.
    #[error("{0}")]
    Timeout(String),
    /// A Cinder call failed; `action` says which.
    #[error("{action}: {source}")]
    Api {
        /// What was being done.
        action: String,
        /// The client error (keeps Cinder's message).
        source: openstack_client::Error,
    },
    /// The Glance side of upload-to-image failed.
    #[error("upload of volume {volume} to Glance: {source}")]
    Glance {
        /// The volume.
        volume: String,
        /// Glance's error.
        source: glance_rbd::Error,
    },
    /// Cinder's answer lacks something needed.
    #[error("{0}")]
    Unexpected(String),
}

impl Error {
    /// The underlying HTTP error, if any.
    pub fn api_error(&self) -> Option<&openstack_client::ApiError> {
        match self {
            Error::Api { source, .. } => source.api(),
            _ => None,
        }
    }
}

/// Where to adopt: an explicit `host@backend#pool` string, or the Ceph pool to look up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostTarget {
    /// `host@backend#pool` as `cinder get-pools` prints it.
    Host(String),
    /// The Ceph pool (and optionally the cluster fsid) the backend stores into.
    CephPool {
        /// Pool name (`volumes`).
        pool: String,
        /// Cluster fsid, to tell apart backends on several clusters.
        fsid: Option<String>,
    },
}

/// One pool of `GET /scheduler-stats/get_pools?detail=true`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendPool {
    /// The host string (`site-b@ceph#ceph`).
    pub name: String,
    /// Capabilities as the driver reports them.
    #[serde(default)]
    pub capabilities: BTreeMap<String, Value>,
}

/// The RBD driver's `location_info`: `ceph:<conf>:<fsid>:<user>:<pool>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CephLocation {
    /// ceph.conf of the driver.
    pub conf: String,
    /// Cluster fsid.
    pub fsid: String,
    /// Ceph user.
    pub user: String,
    /// Pool.
    pub pool: String,
}

impl BackendPool {
    /// The Ceph cluster and pool of an RBD backend, from `location_info`.
    pub fn ceph_location(&self) -> Option<CephLocation> {
        let info = self.capabilities.get("location_info")?.as_str()?;
        let rest = info.strip_prefix("ceph:")?;
        let parts: Vec<&str> = rest.rsplitn(4, ':').collect();
        if parts.len() != 4 {
            return None;
        }
        Some(CephLocation {
            pool: parts[0].into(),
            user: parts[1].into(),
            fsid: parts[2].into(),
            conf: parts[3].into(),
        })
    }
}

/// One entry of `GET /manageable_volumes/detail`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManageableVolume {
    /// `{"source-name": "..."}`.
    pub reference: Value,
    /// Size in GiB.
    #[serde(default)]
    pub size: Option<u64>,
    /// Whether Cinder would manage it.
    pub safe_to_manage: bool,
    /// Why not (`already managed`, `volume in use`).
    #[serde(default)]
    pub reason_not_safe: Option<String>,
    /// The volume that already manages it.
    #[serde(default)]
    pub cinder_id: Option<String>,
    /// Driver details.
    #[serde(default)]
    pub extra_info: Option<Value>,
}

impl ManageableVolume {
    /// The RBD image name.
    pub fn source_name(&self) -> Option<&str> {
        self.reference.get("source-name")?.as_str()
    }
}

/// The body of `POST /manageable_volumes`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ManageRequest {
    /// `host@backend#pool`.
    pub host: String,
    /// The RBD image name in the backend's pool.
    pub source_name: String,
    /// Volume name.
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Volume type (name or id).
    pub volume_type: Option<String>,
    /// Availability zone.
    pub availability_zone: Option<String>,
    /// Mark the volume bootable.
    pub bootable: bool,
    /// Metadata.
    pub metadata: BTreeMap<String, String>,
}

impl ManageRequest {
    /// The JSON body Cinder expects.
    pub fn body(&self) -> Value {
        let mut v = serde_json::Map::new();
        v.insert("host".into(), json!(self.host));
        v.insert("ref".into(), json!({"source-name": self.source_name}));
        v.insert("bootable".into(), json!(self.bootable));
        for (k, val) in [
            ("name", &self.name),
            ("description", &self.description),
            ("volume_type", &self.volume_type),
            ("availability_zone", &self.availability_zone),
        ] {
            if let Some(x) = val {
                v.insert(k.into(), json!(x));
            }
        }
        if !self.metadata.is_empty() {
            v.insert("metadata".into(), json!(self.metadata));
        }
        json!({ "volume": Value::Object(v) })
    }
}

/// A volume as `GET /volumes/{id}` returns it (admin-only fields are `None` for others).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Volume {
    /// Volume id.
    pub id: String,
    /// Status (`creating`, `available`, `error`, `error_managing`, `uploading`, ...).
    pub status: String,
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Size in GiB.
    #[serde(default)]
    pub size: u64,
    /// `"true"`/`"false"` as Cinder writes it.
    #[serde(default)]
    pub bootable: Option<String>,
    /// Availability zone.
    #[serde(default)]
    pub availability_zone: Option<String>,
    /// Volume type name.
    #[serde(default)]
    pub volume_type: Option<String>,
    /// Metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// `host@backend#pool` (admin only).
    #[serde(rename = "os-vol-host-attr:host", default)]
    pub host: Option<String>,
    /// Id naming the backend object after a migration (admin only).
    #[serde(rename = "os-vol-mig-status-attr:name_id", default)]
    pub name_id: Option<String>,
    /// Every other field.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Volume {
    /// Whether Cinder marks the volume bootable.
    pub fn is_bootable(&self) -> bool {
        self.bootable.as_deref() == Some("true")
    }

    /// The RBD image name of the volume (`volume-<name_id or id>`, Cinder's default
    /// `volume_name_template`).
    pub fn rbd_image_name(&self) -> String {
        format!("volume-{}", self.name_id.as_deref().unwrap_or(&self.id))
    }
}

/// Adopting an RBD image as a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdoptRequest {
    /// Where the image is.
    pub target: HostTarget,
    /// The RBD image name in that pool.
    pub rbd_image: String,
    /// Volume name.
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Volume type.
    pub volume_type: Option<String>,
    /// Availability zone.
    pub availability_zone: Option<String>,
    /// Bootable flag.
    pub bootable: bool,
    /// Metadata.
    pub metadata: BTreeMap<String, String>,
}

/// The outcome of an adoption.
#[derive(Debug, Clone, PartialEq)]
pub struct AdoptedVolume {
    /// The new volume (status `available`).
    pub volume: Volume,
    /// The host string used.
    pub host: String,
    /// The RBD image's new name (`volume-<id>`).
    pub rbd_image: String,
}

/// Where a volume's data lives in Ceph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRbdImage {
    /// Volume id.
    pub volume_id: String,
    /// `host@backend#pool`.
    pub host: String,
    /// Ceph pool.
    pub pool: String,
    /// RBD image name.
    pub image: String,
    /// Cluster fsid.
    pub fsid: String,
    /// ceph.conf path Cinder uses (on Cinder's host).
    pub ceph_conf: String,
}

/// `os-volume_upload_image` parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadToImageRequest {
    /// The volume.
    pub volume_id: String,
    /// Name of the new image.
    pub image_name: String,
    /// `raw` (default).
    pub disk_format: String,
    /// `bare` (default).
    pub container_format: String,
    /// Visibility (`private` by default in Cinder).
    pub visibility: Option<String>,
    /// Protected.
    pub protected: Option<bool>,
    /// Upload even when attached (`force`).
    pub force: bool,
}

impl UploadToImageRequest {
    /// A raw/bare private upload of `volume_id` as `image_name`.
    pub fn raw(volume_id: impl Into<String>, image_name: impl Into<String>) -> Self {
        Self {
            volume_id: volume_id.into(),
            image_name: image_name.into(),
            disk_format: "raw".into(),
            container_format: "bare".into(),
            visibility: None,
            protected: None,
            force: false,
        }
    }
}

/// The outcome of upload-to-image.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadedImage {
    /// The Glance image (status `active`).
    pub image: glance_rbd::Image,
    /// The volume after the upload (status `available` or `in-use`).
    pub volume: Volume,
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
struct Messages {
    messages: Vec<Message>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    user_message: Option<String>,
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
}

impl Cinder {
    /// An adapter for `client`'s `block-storage` endpoint, in the cloud on `side`.
    pub fn new(client: OpenStackClient, side: Side) -> Self {
        Self {
            client,
            side,
            poll: PollOptions::default(),
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

    fn req(&self, method: Method, path: impl Into<String>) -> ApiRequest {
        ApiRequest::new(ServiceType::BlockStorage, method, path)
            .microversion("volume", MICROVERSION)
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
            .send_json::<VolumeBody>(&self.req(Method::GET, format!("volumes/{id}")))
            .await
            .map(|v| v.volume)
            .map_err(self.map(format!("getting volume {id}")))
    }

    /// Cinder's user messages about a resource, newest last (`GET /messages`).
    pub async fn messages_for(&self, id: &str) -> Result<Vec<String>, Error> {
        check_volume_id(id).map_err(|e| *e)?;
        let m: Messages = self
            .client
            .send_json(&self.req(Method::GET, "messages").query("resource_uuid", id))
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
                let reason = match self.messages_for(id).await {
                    Ok(m) if !m.is_empty() => m.join("; "),
                    _ => format!("Cinder gave no reason; search the cinder-volume log for {id}"),
                };
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
            WaitError::Failed(e) => e,
            t @ WaitError::TimedOut { .. } => Error::Timeout(t.to_string()),
        })
    }

    /// Waits until volume `id` is `available`.
    pub async fn wait_available(&self, id: &str) -> Result<Volume, Error> {
        self.wait_status(id, &["available"]).await
    }

    /// `os-unmanage`: Cinder forgets the volume; the RBD image stays (admin).
    pub async fn unmanage(&self, id: &str) -> Result<(), Error> {
        check_volume_id(id).map_err(|e| *e)?;
        self.client
            .send_empty(
                &self
                    .req(Method::POST, format!("volumes/{id}/action"))
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
            Err(e @ Error::VolumeFailed { .. }) => {
                if let Err(u) = self.unmanage(&started.id).await {
                    tracing::warn!(volume = %started.id, error = %u, "could not unmanage the failed volume record");
                }
                Err(e)
            }
            Err(e) => Err(e),
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
