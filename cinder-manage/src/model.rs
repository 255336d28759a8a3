//! What goes to Cinder and comes back, typed: the adoption target, pools, manageable
//! images, volumes, and the requests and results of adoption and upload-to-image. Kept
//! apart from the calls (`lib.rs`) so a reader of either sees one thing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

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
    /// The volume's image metadata (`volume_image_metadata`: the properties of the image it
    /// was created from, which Nova reads when booting from it); empty when it has none or
    /// the credentials may not see it. Values that are not strings are kept as JSON text.
    pub fn image_metadata(&self) -> BTreeMap<String, String> {
        let Some(Value::Object(m)) = self.extra.get("volume_image_metadata") else {
            return BTreeMap::new();
        };
        m.iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect()
    }

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

/// One entry of `GET /os-services` (admin): a Cinder service and whether it reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// `cinder-volume`, `cinder-scheduler`, ...
    pub binary: String,
    /// `host@backend` for a volume service.
    pub host: String,
    /// `up` or `down` (no report within Cinder's `service_down_time`).
    pub state: String,
    /// `enabled` or `disabled`.
    pub status: String,
    /// Why it was disabled.
    #[serde(default)]
    pub disabled_reason: Option<String>,
    /// When it last reported.
    #[serde(default)]
    pub updated_at: Option<String>,
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
    pub image: glance_rbd::GlanceImage,
    /// The volume after the upload (status `available` or `in-use`).
    pub volume: Volume,
}
