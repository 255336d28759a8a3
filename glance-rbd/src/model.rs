//! What goes to Glance and comes back, typed: rbd:// locations, image records and the
//! requests to create and register them. Kept apart from the calls (`lib.rs`) so a reader
//! of either sees one thing.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Error;

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

/// An image as `GET /v2/images/{id}` returns it. (Named apart from `librbd::Image`, an open
/// RBD image.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlanceImage {
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

impl GlanceImage {
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
