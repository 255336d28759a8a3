//! Glance (Image v2) adapter: register an RBD snapshot as an image by its rbd:// location.
//!
//! The Ceph side (copy the data into the Glance pool, snapshot `snap`, protect it) is done by
//! the core library; this crate is HTTP only. It creates the image record, adds the location
//! `rbd://<fsid>/<pool>/<image>/snap` (Zed: JSON patch; Glance ≥ 2.17 also offers
//! `POST /v2/images/{id}/locations`), and waits for `active`.
//!
//! **Deleting a Glance image whose location is an rbd:// URL deletes the RBD snapshot and image
//! it points at.** Zed's default policy lets a plain member add such a location pointing at
//! *another project's* snapshot; deleting the member's image then deletes the other project's
//! data (reproduced on Glance 25.1.0). So [`Glance::register`] refuses member credentials
//! unless the caller overrides it explicitly.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use glance_rbd::{min_disk_gib, CreateImage, Glance, RbdLocation, RegisterRbdImage};
//! use openstack_client::OpenStackClient;
//!
//! let glance = Glance::new(OpenStackClient::from_cloud("site-b-admin").await?);
//! let mut image = CreateImage::raw("debian-12");
//! image.min_disk = Some(min_disk_gib(2 << 30));
//! let location: RbdLocation = "rbd://FSID/images/debian-12/snap".parse()?;
//! let active = glance
//!     .register(&RegisterRbdImage { image, location, allow_member_credentials: false })
//!     .await?;
//! println!("image {} is {}", active.id, active.status);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use openstack_client::{
    poll_until, ApiRequest, Method, OpenStackClient, Poll, PollOptions, ServiceType, WaitError,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// What deleting a location-backed image does; shown wherever deletion is offered.
pub const DELETE_WARNING: &str = "deleting a Glance image whose location is rbd:// deletes the \
RBD snapshot and image it points at (Glance's rbd store owns the data)";

/// Errors of the Glance adapter.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Glance call failed; `action` says which.
    #[error("{action}: {source}")]
    Api {
        /// What was being done.
        action: String,
        /// The client error (keeps Glance's message).
        source: openstack_client::Error,
    },
    /// Refused before any change: the credentials are a plain member's.
    #[error(
        "refusing to add an rbd:// location with the credentials of cloud `{cloud}` (roles: \
         {roles}): Glance's default policy (Zed) lets a plain member point an image at another \
         project's RBD snapshot, and deleting that image then deletes the other project's data. \
         Use admin or service credentials for the destination cloud, or override this check \
         explicitly if the snapshot is known to belong to this project"
    )]
    MemberCredentials {
        /// The cloud.
        cloud: String,
        /// The token's roles.
        roles: String,
    },
    /// Glance does not expose image locations (`show_multiple_locations = False`).
    #[error(
        "Glance of cloud `{cloud}` does not expose image locations, so an rbd:// location \
         cannot be added (glance-api.conf needs `show_multiple_locations = True`; Glance said: \
         {detail})"
    )]
    LocationsDisabled {
        /// The cloud.
        cloud: String,
        /// What showed it.
        detail: String,
    },
    /// The image reached a failed state.
    #[error("image {id} ended in status `{status}` instead of `active`")]
    ImageFailed {
        /// Image id.
        id: String,
        /// The status.
        status: String,
    },
    /// The image did not become active in time.
    #[error("{0}")]
    Timeout(String),
    /// The location could not be added and the empty image record could not be removed.
    #[error("{original}; also failed to delete the empty image record {id}: {cleanup}")]
    CleanupFailed {
        /// Image id left behind.
        id: String,
        /// The first failure.
        original: Box<Error>,
        /// The deletion's failure.
        cleanup: Box<Error>,
    },
    /// The location could not be added, and the image record was left in place because it
    /// cannot be shown to be empty (deleting an image deletes the RBD data it points at).
    #[error(
        "{original}; the image record {id} was NOT deleted because {reason}. Check it with \
         `openstack image show {id} -c status -c locations` as an admin of a Glance that shows \
         locations (glance-api.conf `show_multiple_locations = True`): delete it only if its \
         locations are empty; if it has an rbd:// location, deleting it deletes that RBD data"
    )]
    RecordKept {
        /// Image id left in place.
        id: String,
        /// The first failure.
        original: Box<Error>,
        /// Why it could not be shown to be empty.
        reason: String,
    },
    /// A location string is not `rbd://fsid/pool/image/snap`.
    #[error("`{0}` is not an rbd://<fsid>/<pool>/<image>/<snapshot> URL")]
    BadLocation(String),
}

impl Error {
    fn api(action: impl Into<String>) -> impl FnOnce(openstack_client::Error) -> Error {
        let action = action.into();
        move |source| Error::Api { action, source }
    }

    /// The underlying HTTP error, if any.
    pub fn api_error(&self) -> Option<&openstack_client::ApiError> {
        match self {
            Error::Api { source, .. } => source.api(),
            _ => None,
        }
    }
}

/// An `rbd://<fsid>/<pool>/<image>/<snapshot>` location, as Glance's rbd store writes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RbdLocation {
    /// Ceph cluster fsid of the cluster holding the data (the destination's).
    pub fsid: String,
    /// Pool (Glance's, usually `images`).
    pub pool: String,
    /// RBD image name.
    pub image: String,
    /// Protected snapshot name (`snap`).
    pub snapshot: String,
}

impl fmt::Display for RbdLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rbd://{}/{}/{}/{}",
            self.fsid, self.pool, self.image, self.snapshot
        )
    }
}

impl FromStr for RbdLocation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let rest = s
            .strip_prefix("rbd://")
            .ok_or_else(|| Error::BadLocation(s.into()))?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            [fsid, pool, image, snap]
                if [fsid, pool, image, snap].iter().all(|p| !p.is_empty()) =>
            {
                Ok(Self {
                    fsid: (*fsid).into(),
                    pool: (*pool).into(),
                    image: (*image).into(),
                    snapshot: (*snap).into(),
                })
            }
            _ => Err(Error::BadLocation(s.into())),
        }
    }
}

/// Image visibility.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Everyone (needs `publicize_image`, admin by default).
    Public,
    /// The owner only.
    Private,
    /// The owner and its members (Glance's default).
    Shared,
    /// Everyone, unlisted.
    Community,
}

/// The body of `POST /v2/images`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreateImage {
    /// Image name.
    pub name: String,
    /// `raw` for RBD-backed images (what Nova/Cinder can clone).
    pub disk_format: String,
    /// `bare`.
    pub container_format: String,
    /// Visibility; Glance's default (`shared`) if `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visibility: Option<Visibility>,
    /// Minimum disk in GiB (see [`min_disk_gib`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_disk: Option<u64>,
    /// Minimum RAM in MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_ram: Option<u64>,
    /// Protected from deletion.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protected: Option<bool>,
    /// Extra properties (`hw_disk_bus`, `os_distro`, ...), flat in the body.
    #[serde(flatten)]
    pub properties: BTreeMap<String, String>,
}

impl CreateImage {
    /// A `raw`/`bare` image with Glance's defaults for everything else.
    pub fn raw(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            disk_format: "raw".into(),
            container_format: "bare".into(),
            visibility: None,
            min_disk: None,
            min_ram: None,
            protected: None,
            properties: BTreeMap::new(),
        }
    }
}

/// `min_disk` (GiB, rounded up) for an image of `bytes`.
pub fn min_disk_gib(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 30)
}

/// One location of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageLocation {
    /// The URL (`rbd://...`).
    pub url: String,
    /// Store metadata.
    #[serde(default)]
    pub metadata: Value,
}

/// An image as `GET /v2/images/{id}` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// Image id.
    pub id: String,
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
    /// `queued`, `saving`, `active`, `killed`, `deleted`, `importing`, ...
    pub status: String,
    /// Disk format.
    #[serde(default)]
    pub disk_format: Option<String>,
    /// Container format.
    #[serde(default)]
    pub container_format: Option<String>,
    /// Visibility.
    #[serde(default)]
    pub visibility: Option<String>,
    /// Size in bytes, once known.
    #[serde(default)]
    pub size: Option<u64>,
    /// Minimum disk (GiB).
    #[serde(default)]
    pub min_disk: Option<u64>,
    /// Minimum RAM (MiB).
    #[serde(default)]
    pub min_ram: Option<u64>,
    /// Owner project.
    #[serde(default)]
    pub owner: Option<String>,
    /// Protected.
    #[serde(default)]
    pub protected: Option<bool>,
    /// Locations; absent when Glance hides them (`show_multiple_locations = False`).
    #[serde(default)]
    pub locations: Option<Vec<ImageLocation>>,
    /// Direct URL (with `show_image_direct_url`).
    #[serde(default)]
    pub direct_url: Option<String>,
    /// Every other field, including custom properties.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Image {
    /// Whether Glance shows this image's locations (`show_multiple_locations = True`).
    pub fn locations_exposed(&self) -> bool {
        self.locations.is_some()
    }

    /// Where an rbd-store image's data is: the first `rbd://` location (or `direct_url`).
    /// Source side: this is the RBD image to mirror after upload-to-image.
    pub fn rbd_location(&self) -> Option<RbdLocation> {
        self.locations
            .iter()
            .flatten()
            .map(|l| l.url.as_str())
            .chain(self.direct_url.as_deref())
            .find_map(|u| u.parse().ok())
    }
}

/// Which API adds a location.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LocationApi {
    /// The locations API where Glance offers it (image API ≥ 2.17), else JSON patch.
    #[default]
    Auto,
    /// `PATCH /v2/images/{id}` with `add /locations/-` (every Glance with
    /// `show_multiple_locations`; the only way in Zed).
    JsonPatch,
    /// `POST /v2/images/{id}/locations` (Glance ≥ 2.17, Dalmatian).
    LocationsApi,
}

/// Registration of an RBD snapshot as a new image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterRbdImage {
    /// The image record to create.
    pub image: CreateImage,
    /// Where the data is.
    pub location: RbdLocation,
    /// Accept member credentials (see the crate docs for why this is refused by default).
    pub allow_member_credentials: bool,
}

/// The image data of `GET /v2/images/{id}/file`, read chunk by chunk.
#[derive(Debug)]
pub struct ImageData {
    resp: reqwest::Response,
    url: String,
}

impl ImageData {
    /// Length announced by Glance, if any.
    pub fn content_length(&self) -> Option<u64> {
        self.resp.content_length()
    }

    /// The next chunk, `None` at the end.
    pub async fn next_chunk(&mut self) -> Result<Option<bytes::Bytes>, Error> {
        let url = self.url.clone();
        self.resp.chunk().await.map_err(|source| Error::Api {
            action: format!("reading image data from {url}"),
            source: openstack_client::Error::Unreachable {
                service: ServiceType::Image,
                url,
                source,
            },
        })
    }
}

/// Glance adapter bound to one cloud.
#[derive(Debug, Clone)]
pub struct Glance {
    client: OpenStackClient,
    poll: PollOptions,
    location_api: LocationApi,
}

#[derive(Deserialize)]
struct Versions {
    versions: Vec<VersionEntry>,
}

#[derive(Deserialize)]
struct VersionEntry {
    id: String,
}

#[derive(Deserialize)]
struct ImageList {
    images: Vec<Image>,
}

const LOCATIONS_INVISIBLE: &str = "if locations are invisible";

impl Glance {
    /// An adapter using `client`'s `image` endpoint.
    pub fn new(client: OpenStackClient) -> Self {
        Self {
            client,
            poll: PollOptions::default(),
            location_api: LocationApi::Auto,
        }
    }

    /// Sets how waits poll.
    pub fn with_poll(mut self, poll: PollOptions) -> Self {
        self.poll = poll;
        self
    }

    /// Sets which API adds locations.
    pub fn with_location_api(mut self, api: LocationApi) -> Self {
        self.location_api = api;
        self
    }

    /// The underlying client.
    pub fn client(&self) -> &OpenStackClient {
        &self.client
    }

    /// `POST /v2/images`: creates an empty (`queued`) image record.
    pub async fn create_image(&self, req: &CreateImage) -> Result<Image, Error> {
        let body = serde_json::to_value(req).map_err(|e| Error::Api {
            action: "encoding the image record".into(),
            source: openstack_client::Error::Decode {
                service: ServiceType::Image,
                url: String::new(),
                reason: e.to_string(),
            },
        })?;
        self.client
            .send_json(&ApiRequest::new(ServiceType::Image, Method::POST, "v2/images").json(body))
            .await
            .map_err(Error::api(format!("creating image record `{}`", req.name)))
    }

    /// `GET /v2/images/{id}`.
    pub async fn get_image(&self, id: &str) -> Result<Image, Error> {
        self.client
            .send_json(&ApiRequest::new(
                ServiceType::Image,
                Method::GET,
                format!("v2/images/{id}"),
            ))
            .await
            .map_err(Error::api(format!("getting image {id}")))
    }

    /// `DELETE /v2/images/{id}`.
    ///
    /// **Warning:** [`DELETE_WARNING`]. Never call this on an image whose location points at
    /// data that must survive.
    pub async fn delete_image(&self, id: &str) -> Result<(), Error> {
        tracing::warn!(image = id, "deleting Glance image: {DELETE_WARNING}");
        self.client
            .send_empty(&ApiRequest::new(
                ServiceType::Image,
                Method::DELETE,
                format!("v2/images/{id}"),
            ))
            .await
            .map_err(Error::api(format!("deleting image {id}")))
    }

    /// `GET /v2/images/{id}/file`: the image data as a stream of chunks.
    pub async fn download(&self, id: &str) -> Result<ImageData, Error> {
        let req = ApiRequest::new(
            ServiceType::Image,
            Method::GET,
            format!("v2/images/{id}/file"),
        )
        .timeout(Duration::from_secs(24 * 3600));
        let resp = self
            .client
            .send(&req)
            .await
            .map_err(Error::api(format!("downloading image {id}")))?;
        let url = resp.url().to_string();
        Ok(ImageData { resp, url })
    }

    /// Whether this Glance offers `POST /v2/images/{id}/locations` (image API ≥ 2.17).
    pub async fn has_locations_api(&self) -> Result<bool, Error> {
        let v: Versions = self
            .client
            .send_json(&ApiRequest::new(
                ServiceType::Image,
                Method::GET,
                "versions",
            ))
            .await
            .map_err(Error::api("listing Glance API versions"))?;
        Ok(v.versions.iter().any(|e| {
            let n = e.id.trim_start_matches('v');
            let mut it = n.split('.').map(|x| x.parse::<u32>().unwrap_or(0));
            let (maj, min) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
            maj > 2 || (maj == 2 && min >= 17)
        }))
    }

    /// Whether Glance shows image locations (`show_multiple_locations = True`), which adding an
    /// rbd:// location needs. Looks at an existing image, or creates and deletes an empty one.
    pub async fn locations_exposed(&self) -> Result<bool, Error> {
        let list: ImageList = self
            .client
            .send_json(
                &ApiRequest::new(ServiceType::Image, Method::GET, "v2/images").query("limit", "1"),
            )
            .await
            .map_err(Error::api("listing images"))?;
        if let Some(i) = list.images.first() {
            return Ok(i.locations_exposed());
        }
        let probe = self
            .create_image(&CreateImage::raw("rbd-relay-locations-probe"))
            .await?;
        let exposed = probe.locations_exposed();
        // An empty queued record has no data: deleting it deletes nothing else.
        self.delete_image(&probe.id).await?;
        Ok(exposed)
    }

    /// Refuses (with [`Error::MemberCredentials`]) unless the token has `admin` or `service`,
    /// or `allow_member` is set. Roles come from Keystone's token body.
    pub async fn check_location_credentials(&self, allow_member: bool) -> Result<(), Error> {
        let info = self
            .client
            .token_info()
            .await
            .map_err(Error::api("reading the token's roles"))?;
        if allow_member || info.is_admin_or_service() == Some(true) {
            return Ok(());
        }
        Err(Error::MemberCredentials {
            cloud: self.client.cloud_name().to_owned(),
            roles: info.roles_display(),
        })
    }

    /// Adds `location` to image `id` (JSON patch, or the locations API; see [`LocationApi`]).
    pub async fn add_location(&self, id: &str, location: &RbdLocation) -> Result<(), Error> {
        let use_new = self.uses_locations_api().await?;
        self.add_location_via(use_new, id, location).await
    }

    /// Whether [`Glance::add_location`] will try the locations API (resolves `Auto`).
    async fn uses_locations_api(&self) -> Result<bool, Error> {
        Ok(match self.location_api {
            LocationApi::JsonPatch => false,
            LocationApi::LocationsApi => true,
            LocationApi::Auto => self.has_locations_api().await?,
        })
    }

    async fn add_location_via(
        &self,
        use_new: bool,
        id: &str,
        location: &RbdLocation,
    ) -> Result<(), Error> {
        let url = location.to_string();
        if use_new {
            let r = self
                .client
                .send_empty(
                    &ApiRequest::new(
                        ServiceType::Image,
                        Method::POST,
                        format!("v2/images/{id}/locations"),
                    )
                    .json(json!({"url": url})),
                )
                .await;
            match r {
                Ok(()) => return Ok(()),
                // The new API is service-only by default; admins still have the patch.
                Err(e)
                    if self.location_api == LocationApi::Auto
                        && e.api().is_some_and(|a| a.status == 403) =>
                {
                    tracing::info!(image = id, "locations API refused (403); using JSON patch");
                }
                Err(e) => {
                    return Err(Error::api(format!("adding location {url} to image {id}"))(
                        e,
                    ))
                }
            }
        }
        let patch = json!([{"op": "add", "path": "/locations/-",
                            "value": {"url": url, "metadata": {}}}]);
        self.client
            .send_empty(
                &ApiRequest::new(ServiceType::Image, Method::PATCH, format!("v2/images/{id}"))
                    .glance_patch(patch),
            )
            .await
            .map_err(|e| match e.api() {
                Some(a) if a.status == 403 && a.message.contains(LOCATIONS_INVISIBLE) => {
                    Error::LocationsDisabled {
                        cloud: self.client.cloud_name().to_owned(),
                        detail: a.message.clone(),
                    }
                }
                _ => Error::api(format!("adding location {url} to image {id}"))(e),
            })
    }

    /// Polls image `id` until `active`; fails on `killed`/`deleted`, or at the deadline.
    pub async fn wait_active(&self, id: &str) -> Result<Image, Error> {
        let what = format!("image {id} to become active");
        poll_until(&what, &self.poll, || async {
            let i = match self.get_image(id).await {
                Ok(i) => i,
                // A restarting API or a lost connection should not end a long wait.
                Err(Error::Api { source, .. }) if source.is_transient() => {
                    return Ok(Poll::Pending(format!("Glance unavailable: {source}")))
                }
                Err(e) => return Err(e),
            };
            match i.status.as_str() {
                "active" => Ok(Poll::Ready(i)),
                "killed" | "deleted" | "pending_delete" => Err(Error::ImageFailed {
                    id: id.to_owned(),
                    status: i.status,
                }),
                s => Ok(Poll::Pending(format!("status {s}"))),
            }
        })
        .await
        .map_err(|e| match e {
            WaitError::Failed(e) => e,
            t @ WaitError::TimedOut { .. } => Error::Timeout(t.to_string()),
        })
    }

    /// The whole registration: check credentials, create the record, add the location, wait
    /// until `active`. If the location cannot be added, the record is deleted again only when
    /// Glance shows it `queued` with an empty `locations` list; a record whose locations are
    /// hidden, or that has a location or another status, is left in place and reported
    /// ([`Error::RecordKept`]), because deleting it could delete the RBD data it points at.
    pub async fn register(&self, req: &RegisterRbdImage) -> Result<Image, Error> {
        self.check_location_credentials(req.allow_member_credentials)
            .await?;
        let created = self.create_image(&req.image).await?;
        tracing::info!(image = %created.id, location = %req.location, "created image record");
        // The JSON patch needs visible locations; the locations API (Glance >= 2.17) does not.
        let added = match self.uses_locations_api().await {
            Ok(use_new) if use_new || created.locations_exposed() => {
                self.add_location_via(use_new, &created.id, &req.location)
                    .await
            }
            Ok(_) => Err(Error::LocationsDisabled {
                cloud: self.client.cloud_name().to_owned(),
                detail: "the new image record has no `locations` field".into(),
            }),
            Err(e) => Err(e),
        };
        if let Err(original) = added {
            return Err(self.discard_empty(&created.id, original).await);
        }
        self.wait_active(&created.id).await
    }

    /// Deletes a just-created record after `original` failed, but only when Glance shows it is
    /// empty (see [`why_not_provably_empty`]); otherwise leaves it and says so
    /// ([`Error::RecordKept`]).
    async fn discard_empty(&self, id: &str, original: Error) -> Error {
        match self.get_image(id).await {
            Ok(i) => {
                if let Some(reason) = why_not_provably_empty(&i) {
                    tracing::warn!(
                        image = id,
                        status = %i.status,
                        "not deleting image record after a failed registration: {reason}; \
                         check its locations as admin and delete it only if they are empty"
                    );
                    return Error::RecordKept {
                        id: id.to_owned(),
                        original: Box::new(original),
                        reason,
                    };
                }
            }
            Err(e) => {
                return Error::CleanupFailed {
                    id: id.to_owned(),
                    original: Box::new(original),
                    cleanup: Box::new(e),
                }
            }
        }
        match self.delete_image(id).await {
            Ok(()) => original,
            Err(e) => Error::CleanupFailed {
                id: id.to_owned(),
                original: Box::new(original),
                cleanup: Box::new(e),
            },
        }
    }
}

/// Why `image` cannot be deleted without risking data, or `None` when Glance shows it empty:
/// status `queued` and a `locations` list that is present and empty. Hidden locations
/// (`show_multiple_locations`/`show_image_direct_url` off, or a policy) look exactly like an
/// empty image, and a location added by a request whose response was lost makes the image
/// hold our verified copy: Glance's delete would then delete that RBD data.
pub fn why_not_provably_empty(image: &Image) -> Option<String> {
    match &image.locations {
        None => Some(
            "Glance does not show its locations (show_multiple_locations or \
             show_image_direct_url off, or a policy hides them), so it cannot be told from an \
             image that holds data"
                .to_owned(),
        ),
        Some(l) if !l.is_empty() => Some(format!(
            "it has {} location(s) ({}) despite the error",
            l.len(),
            l.iter()
                .map(|l| l.url.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Some(_) if image.status != "queued" => Some(format!(
            "its status is `{}`, not `queued`, so it may hold data",
            image.status
        )),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rbd_location_round_trip() {
        let s = "rbd://d95d3f19-fc36-4737-ab85-8c9a862990d0/images/img1/snap";
        let l: RbdLocation = s.parse().unwrap();
        assert_eq!(l.pool, "images");
        assert_eq!(l.to_string(), s);
        assert!("rbd://x/images/img".parse::<RbdLocation>().is_err());
        assert!("http://x/a/b/c".parse::<RbdLocation>().is_err());
    }

    #[test]
    fn create_body_is_flat() {
        let mut c = CreateImage::raw("n");
        c.min_disk = Some(min_disk_gib((1 << 30) + 1));
        c.properties.insert("os_distro".into(), "debian".into());
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            json!({"name": "n", "disk_format": "raw", "container_format": "bare",
                   "min_disk": 2, "os_distro": "debian"})
        );
    }

    #[test]
    fn image_without_locations_field_means_hidden() {
        let i: Image =
            serde_json::from_value(json!({"id": "x", "status": "queued", "foo": "bar"})).unwrap();
        assert!(!i.locations_exposed());
        assert_eq!(i.extra["foo"], "bar");
        let i: Image =
            serde_json::from_value(json!({"id": "x", "status": "queued", "locations": []}))
                .unwrap();
        assert!(i.locations_exposed());
        assert_eq!(i.rbd_location(), None);
        let i: Image = serde_json::from_value(json!({"id": "x", "status": "active",
            "locations": [{"url": "rbd://f/images/x/snap", "metadata": {}}]}))
        .unwrap();
        assert_eq!(i.rbd_location().unwrap().image, "x");
    }

    fn image(status: &str, locations: Option<Value>) -> Image {
        let mut v = json!({"id": "i1", "status": status});
        if let Some(l) = locations {
            v["locations"] = l;
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn only_a_queued_image_with_visible_empty_locations_may_be_deleted() {
        assert_eq!(
            why_not_provably_empty(&image("queued", Some(json!([])))),
            None
        );
    }

    #[test]
    fn hidden_locations_keep_the_record() {
        let why = why_not_provably_empty(&image("queued", None)).unwrap();
        assert!(why.contains("does not show its locations"), "{why}");
    }

    #[test]
    fn a_location_keeps_the_record() {
        let l = json!([{"url": "rbd://f/images/img/snap", "metadata": {}}]);
        let why = why_not_provably_empty(&image("queued", Some(l))).unwrap();
        assert!(why.contains("rbd://f/images/img/snap"), "{why}");
    }

    #[test]
    fn a_status_other_than_queued_keeps_the_record() {
        let why = why_not_provably_empty(&image("active", Some(json!([])))).unwrap();
        assert!(why.contains("`active`"), "{why}");
    }

    #[test]
    fn member_refusal_says_why() {
        let e = Error::MemberCredentials {
            cloud: "site-b-member".into(),
            roles: "member, reader".into(),
        }
        .to_string();
        assert!(e.contains("another project's RBD snapshot"), "{e}");
        assert!(e.contains("admin or service"), "{e}");
    }
}
