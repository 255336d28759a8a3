//! What a plan needs from an OpenStack cloud, as a small trait so the library stays free of
//! HTTP crates: adopt an RBD image as a Cinder volume (manage-existing), find a volume adopted
//! by an earlier, interrupted run, map a source volume id to its RBD image, register an RBD
//! snapshot as a Glance image, and upload a volume to an image.
//!
//! The binary implements [`CloudOps`] over the `cinder-manage` and `glance-rbd` adapters; unit
//! tests use an in-memory fake. Calls are async and return boxed futures (no extra crate).

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A boxed, sendable future: the return type of [`CloudOps`] calls.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Metadata key set on every volume (and image property) rbd-relay creates; its value is the
/// migration id, so a resumed run finds what an interrupted one made.
pub const MARKER_KEY: &str = "rbd_relay_migration";

/// What kind of failure a cloud call had, for decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CloudErrorKind {
    /// The credentials lack a role (HTTP 403, or Keystone shows no admin role).
    Forbidden,
    /// The thing asked for does not exist (including an unknown host string).
    NotFound,
    /// The cloud refused the request as it stands (already managed, in use, ...).
    Refused,
    /// Anything else (network, timeouts, unexpected answers).
    Other,
}

/// A failed cloud call; `message` keeps the service's own words.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{message}")]
pub struct CloudError {
    /// Kind, for decisions.
    pub kind: CloudErrorKind,
    /// Human text, with the service's message.
    pub message: String,
}

impl CloudError {
    /// Build an error.
    pub fn new(kind: CloudErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// Result of a [`CloudOps`] call.
pub type CloudResult<T> = Result<T, CloudError>;

/// Where the destination Cinder should adopt from: its `host@backend#pool` string, or the
/// Ceph pool whose backend is looked up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "by")]
pub enum AdoptTarget {
    /// An explicit host string (`site-b@ceph#ceph`).
    Host {
        /// The host string.
        host: String,
    },
    /// The backend storing into this Ceph pool.
    CephPool {
        /// Ceph pool name.
        pool: String,
    },
}

impl fmt::Display for AdoptTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdoptTarget::Host { host } => write!(f, "host {host}"),
            AdoptTarget::CephPool { pool } => write!(f, "the backend of Ceph pool {pool}"),
        }
    }
}

/// What the cloud preflight of an adoption found (read only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdoptCheck {
    /// The resolved `host@backend#pool`.
    pub host: String,
    /// The Ceph pool that backend stores into, when the cloud reports it.
    pub pool: Option<String>,
    /// That cluster's fsid, when reported.
    pub fsid: Option<String>,
}

/// One adoption request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdoptSpec {
    /// Where.
    pub target: AdoptTarget,
    /// The RBD image in that pool.
    pub rbd_image: String,
    /// Volume name.
    pub name: Option<String>,
    /// Bootable flag.
    pub bootable: bool,
    /// Metadata (includes [`MARKER_KEY`]).
    pub metadata: BTreeMap<String, String>,
    /// Image metadata (`volume_image_metadata`) set on the volume once it is available;
    /// empty for none.
    pub image_metadata: BTreeMap<String, String>,
}

/// A volume adopted (or found adopted) in the destination cloud.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdoptedVolume {
    /// Volume id.
    pub id: String,
    /// Volume name.
    pub name: Option<String>,
    /// Status (`available` once adopted).
    pub status: String,
    /// Size in GiB.
    pub size_gib: u64,
    /// Host string.
    pub host: Option<String>,
    /// The RBD image's new name (`volume-<id>`).
    pub rbd_image: String,
}

/// A source volume and where its data is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceVolume {
    /// Volume id.
    pub id: String,
    /// Name.
    pub name: Option<String>,
    /// Size in GiB.
    pub size_gib: u64,
    /// Status.
    pub status: String,
    /// Bootable.
    pub bootable: bool,
    /// Its image metadata (`volume_image_metadata`: the properties of the image it was
    /// made from, which Nova reads when it boots from the volume); empty for none.
    #[serde(default)]
    pub image_metadata: BTreeMap<String, String>,
    /// Ceph pool.
    pub pool: String,
    /// RBD image.
    pub image: String,
}

/// An image registration by `rbd://fsid/pool/image/snap` location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterSpec {
    /// Image name.
    pub name: String,
    /// Destination cluster fsid.
    pub fsid: String,
    /// Pool.
    pub pool: String,
    /// RBD image.
    pub image: String,
    /// Protected snapshot.
    pub snapshot: String,
    /// Minimum disk in GiB.
    pub min_disk_gib: u64,
    /// Properties (includes [`MARKER_KEY`]).
    pub properties: BTreeMap<String, String>,
}

/// A Glance image as the plan sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudImage {
    /// Image id.
    pub id: String,
    /// Name.
    pub name: Option<String>,
    /// Status (`active`).
    pub status: String,
    /// Minimum disk in GiB.
    pub min_disk_gib: u64,
    /// Size in bytes, when known.
    pub size: Option<u64>,
    /// Where its data is (`pool`, `image`), when Glance shows an rbd:// location.
    pub rbd: Option<(String, String)>,
}

/// The calls plans make to one cloud.
pub trait CloudOps: Send + Sync {
    /// Cloud name (as in clouds.yaml) for messages.
    fn name(&self) -> &str;
    /// Read-only check that an adoption can be made: admin credentials, host resolvable.
    fn check_adopt<'a>(&'a self, target: &'a AdoptTarget)
        -> BoxFuture<'a, CloudResult<AdoptCheck>>;
    /// Adopt an RBD image as a volume and wait until it is available. A failed adoption
    /// leaves no volume record behind.
    fn adopt<'a>(&'a self, spec: &'a AdoptSpec) -> BoxFuture<'a, CloudResult<AdoptedVolume>>;
    /// Set image metadata (`volume_image_metadata`) on volume `id`: each key is set to its
    /// value, other keys stay. Idempotent.
    fn set_image_metadata<'a>(
        &'a self,
        id: &'a str,
        metadata: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, CloudResult<()>>;
    /// The volumes whose metadata has [`MARKER_KEY`] = `marker` (any status).
    fn find_adopted<'a>(
        &'a self,
        marker: &'a str,
    ) -> BoxFuture<'a, CloudResult<Vec<AdoptedVolume>>>;
    /// Forget a volume record whose adoption failed (the RBD image stays).
    fn forget_volume<'a>(&'a self, id: &'a str) -> BoxFuture<'a, CloudResult<()>>;
    /// A source volume and its RBD image.
    fn source_volume<'a>(&'a self, id: &'a str) -> BoxFuture<'a, CloudResult<SourceVolume>>;
    /// Read-only check that images can be registered by location (admin credentials).
    fn check_register(&self) -> BoxFuture<'_, CloudResult<()>>;
    /// Register an image by rbd:// location and wait until it is active.
    fn register_image<'a>(
        &'a self,
        spec: &'a RegisterSpec,
    ) -> BoxFuture<'a, CloudResult<CloudImage>>;
    /// The images whose property [`MARKER_KEY`] is `marker`.
    fn find_images<'a>(&'a self, marker: &'a str) -> BoxFuture<'a, CloudResult<Vec<CloudImage>>>;
    /// One image.
    fn get_image<'a>(&'a self, id: &'a str) -> BoxFuture<'a, CloudResult<CloudImage>>;
    /// The images named `name` that the credentials see.
    fn images_named<'a>(&'a self, name: &'a str) -> BoxFuture<'a, CloudResult<Vec<CloudImage>>>;
    /// Upload a volume to a new raw image and wait until it is active.
    fn upload_to_image<'a>(
        &'a self,
        volume_id: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, CloudResult<CloudImage>>;
    /// Delete image `id` only if it is an empty record: `queued`, with no location, so no
    /// data can go with it (what an interrupted registration leaves when the image was made
    /// but its answer was lost). Refused ([`CloudErrorKind::Refused`]) for any other image.
    /// A cloud that cannot tell refuses (the default).
    fn forget_empty_image<'a>(&'a self, id: &'a str) -> BoxFuture<'a, CloudResult<()>> {
        Box::pin(async move {
            Err(CloudError::new(
                CloudErrorKind::Refused,
                format!("this cloud cannot remove the empty image record {id}"),
            ))
        })
    }
}
