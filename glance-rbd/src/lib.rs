//! Glance (Image v2) adapter: register an RBD snapshot as an image by its rbd:// location.
//!
//! The Ceph side (copy the data into the Glance pool, snapshot `snap`, protect it) is done by
//! the core library; this crate is HTTP only. It creates the image record, adds the location
//! `rbd://<fsid>/<pool>/<image>/snap` (Zed: JSON patch; where the version document lists
//! image API 2.17 (Glance 29, 2024.2, and later) `POST /v2/images/{id}/locations` is tried
//! first, and its 403 (Glance 30 allows it for non-http URLs only to the `service` role, not
//! to admins) falls back to the patch), and waits for `active`.
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

use std::time::Duration;

use openstack_client::{
    poll_until, ApiRequest, ApiVersion, Method, OpenStackClient, Poll, PollError, PollOptions,
    ServiceType,
};
use serde::Deserialize;
use serde_json::json;

mod error;
mod model;

pub use error::Error;
pub use model::{
    min_disk_gib, CreateImage, GlanceImage, ImageLocation, LocationApi, RbdLocation,
    RegisterRbdImage, Visibility,
};

/// What deleting a location-backed image does; shown wherever deletion is offered.
pub const DELETE_WARNING: &str = "deleting a Glance image whose location is rbd:// deletes the \
RBD snapshot and image it points at (Glance's rbd store owns the data)";

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
struct ImageList {
    images: Vec<GlanceImage>,
}

const LOCATIONS_INVISIBLE: &str = "if locations are invisible";

/// The image API version that added `POST /v2/images/{id}/locations`.
pub const LOCATIONS_API: ApiVersion = ApiVersion::new(2, 17);

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
    pub async fn create_image(&self, req: &CreateImage) -> Result<GlanceImage, Error> {
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
    pub async fn get_image(&self, id: &str) -> Result<GlanceImage, Error> {
        self.client
            .send_json(&ApiRequest::new(
                ServiceType::Image,
                Method::GET,
                format!("v2/images/{id}"),
            ))
            .await
            .map_err(Error::api(format!("getting image {id}")))
    }

    /// Images whose property `key` is `value` (`GET /v2/images?key=value`), e.g. the images
    /// a migration registered under its marker. Filtered again here: a server that ignored
    /// the filter must not hand back others.
    pub async fn images_with_property(
        &self,
        key: &str,
        value: &str,
    ) -> Result<Vec<GlanceImage>, Error> {
        let images = self
            .list_images(key, value, format!("listing images with {key}={value}"))
            .await?;
        Ok(images
            .into_iter()
            .filter(|i| i.extra.get(key).and_then(|v| v.as_str()) == Some(value))
            .collect())
    }

    /// Images named exactly `name` (`GET /v2/images?name=NAME`).
    pub async fn images_named(&self, name: &str) -> Result<Vec<GlanceImage>, Error> {
        let images = self
            .list_images("name", name, format!("listing images named '{name}'"))
            .await?;
        Ok(images
            .into_iter()
            .filter(|i| i.name.as_deref() == Some(name))
            .collect())
    }

    /// `GET /v2/images?key=value` (first page, Glance's default limit).
    async fn list_images(
        &self,
        key: &str,
        value: &str,
        action: String,
    ) -> Result<Vec<GlanceImage>, Error> {
        let req = ApiRequest::new(ServiceType::Image, Method::GET, "v2/images").query(key, value);
        let list: ImageList = self
            .client
            .send_json(&req)
            .await
            .map_err(Error::api(action))?;
        Ok(list.images)
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

    /// Whether this Glance offers `POST /v2/images/{id}/locations`: its version document
    /// (the endpoint's root) lists image API v2.17 or later (Glance 29, 2024.2 and later).
    pub async fn has_locations_api(&self) -> Result<bool, Error> {
        let doc = self
            .client
            .version_document(ServiceType::Image)
            .await
            .map_err(Error::api("listing Glance API versions"))?;
        Ok(doc.offers_at_least(LOCATIONS_API))
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
    pub async fn wait_active(&self, id: &str) -> Result<GlanceImage, Error> {
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
            PollError::Failed(e) => e,
            t @ PollError::TimedOut { .. } => Error::Timeout(t.to_string()),
        })
    }

    /// The whole registration: check credentials, create the record, add the location, wait
    /// until `active`. If the location cannot be added, the record is deleted again only when
    /// Glance shows it `queued` with an empty `locations` list; a record whose locations are
    /// hidden, or that has a location or another status, is left in place and reported
    /// ([`Error::RecordKept`]), because deleting it could delete the RBD data it points at.
    pub async fn register(&self, req: &RegisterRbdImage) -> Result<GlanceImage, Error> {
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
pub fn why_not_provably_empty(image: &GlanceImage) -> Option<String> {
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
    use serde_json::Value;

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
        let i: GlanceImage =
            serde_json::from_value(json!({"id": "x", "status": "queued", "foo": "bar"})).unwrap();
        assert!(!i.locations_exposed());
        assert_eq!(i.extra["foo"], "bar");
        let i: GlanceImage =
            serde_json::from_value(json!({"id": "x", "status": "queued", "locations": []}))
                .unwrap();
        assert!(i.locations_exposed());
        assert_eq!(i.rbd_location(), None);
        let i: GlanceImage = serde_json::from_value(json!({"id": "x", "status": "active",
            "locations": [{"url": "rbd://f/images/x/snap", "metadata": {}}]}))
        .unwrap();
        assert_eq!(i.rbd_location().unwrap().image, "x");
    }

    fn image(status: &str, locations: Option<Value>) -> GlanceImage {
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
