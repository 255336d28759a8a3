//! Typed, validated names of the things a migration touches: which cluster, which pool, which
//! image. Everything the CLI or a caller passes in is parsed here once, so the rest of the
//! library never handles a raw, unchecked string.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::SpecError;

/// How to reach one Ceph cluster: its name (conf `/etc/ceph/NAME.conf` like `rbd --cluster`),
/// or an explicit conf file, and the cephx client id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSpec {
    /// Cluster name, as `rbd --cluster NAME` takes it.
    pub name: String,
    /// Path of the cluster's conf file.
    pub conf: PathBuf,
    /// cephx client id without the `client.` prefix (`admin` by default).
    pub client_id: String,
}

impl ClusterSpec {
    /// A cluster known by name: conf `/etc/ceph/NAME.conf`, client `admin`.
    pub fn named(name: &str) -> Result<Self, SpecError> {
        validate_name("cluster name", name)?;
        Ok(Self {
            name: name.to_string(),
            conf: PathBuf::from(format!("/etc/ceph/{name}.conf")),
            client_id: "admin".to_string(),
        })
    }

    /// A cluster given by an explicit conf file; the name is kept for messages. The path must
    /// be valid UTF-8: it is recorded in the state file (JSON), written into bundle scripts
    /// and handed to librados as text, where invalid bytes would name another file.
    pub fn with_conf(name: &str, conf: impl Into<PathBuf>) -> Result<Self, SpecError> {
        let mut spec = Self::named(name)?;
        let conf = conf.into();
        if conf.to_str().is_none() {
            return Err(SpecError::new(
                "conf file",
                &conf.to_string_lossy(),
                "the path is not valid UTF-8 (shown with U+FFFD for its invalid bytes); rbd-relay records it as text: give a UTF-8 path, e.g. a symbolic link to the file",
            ));
        }
        spec.conf = conf;
        Ok(spec)
    }

    /// Use another cephx client id (`client.ID`).
    pub fn client(mut self, id: &str) -> Result<Self, SpecError> {
        let id = id.strip_prefix("client.").unwrap_or(id);
        validate_name("client id", id)?;
        self.client_id = id.to_string();
        Ok(self)
    }
}

impl fmt::Display for ClusterSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// A pool, optionally with an RBD namespace: `pool` or `pool/namespace`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PoolSpec {
    /// Pool name.
    pub pool: String,
    /// RBD namespace inside the pool; empty for the default namespace.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

impl PoolSpec {
    /// A pool in the default namespace.
    pub fn new(pool: &str) -> Result<Self, SpecError> {
        validate_name("pool name", pool)?;
        Ok(Self {
            pool: pool.to_string(),
            namespace: String::new(),
        })
    }
}

impl fmt::Display for PoolSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.pool)
        } else {
            write!(f, "{}/{}", self.pool, self.namespace)
        }
    }
}

impl FromStr for PoolSpec {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [pool] => Self::new(pool),
            [pool, ns] => {
                let mut spec = Self::new(pool)?;
                validate_name("namespace", ns)?;
                spec.namespace = (*ns).to_string();
                Ok(spec)
            }
            _ => Err(SpecError::new("pool", s, "expected POOL or POOL/NAMESPACE")),
        }
    }
}

/// An RBD image: `pool[/namespace]/image`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ImageSpec {
    /// Pool (and namespace) holding the image.
    #[serde(flatten)]
    pub pool: PoolSpec,
    /// Image name.
    pub image: String,
}

impl ImageSpec {
    /// An image in a pool's default namespace.
    pub fn new(pool: &str, image: &str) -> Result<Self, SpecError> {
        validate_image_name(image)?;
        Ok(Self {
            pool: PoolSpec::new(pool)?,
            image: image.to_string(),
        })
    }

    /// The same image name in another pool (namespace kept empty).
    pub fn in_pool(&self, pool: &PoolSpec) -> Self {
        Self {
            pool: pool.clone(),
            image: self.image.clone(),
        }
    }

    /// The same pool with another image name.
    pub fn renamed(&self, image: &str) -> Result<Self, SpecError> {
        validate_image_name(image)?;
        Ok(Self {
            pool: self.pool.clone(),
            image: image.to_string(),
        })
    }
}

impl fmt::Display for ImageSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.pool, self.image)
    }
}

impl FromStr for ImageSpec {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        let (pool, image) = s.rsplit_once('/').ok_or_else(|| {
            SpecError::new(
                "image",
                s,
                "expected POOL/IMAGE or POOL/NAMESPACE/IMAGE (e.g. volumes/volume-1234)",
            )
        })?;
        if image.contains('@') {
            return Err(SpecError::new(
                "image",
                s,
                "give the image itself, not a snapshot (drop the @SNAP part)",
            ));
        }
        validate_image_name(image).map_err(|e| SpecError::new("image", s, &e.reason))?;
        let pool: PoolSpec = pool
            .parse()
            .map_err(|e: SpecError| SpecError::new("image", s, &e.reason))?;
        Ok(Self {
            pool,
            image: image.to_string(),
        })
    }
}

/// What [`validate_name`] accepts, as its messages say it: `/` and `@` separate pool,
/// namespace, image and snapshot in Ceph's specs (`pool/ns/image@snap`); whitespace and
/// control characters are refused so that a name is one visible word in logs and scripts.
/// Everything else is accepted (Cinder's `volume-<uuid>`, names with quotes or `$`, non-ASCII
/// letters), as it was before: scripts and commands always quote names.
const NAME_RULE: &str =
    "a name may hold any character but whitespace, control characters, '/' and '@', at most 255 bytes (e.g. volume-<uuid>)";

fn validate_name(what: &'static str, value: &str) -> Result<(), SpecError> {
    if value.is_empty() {
        return Err(SpecError::new(what, value, "must not be empty"));
    }
    if value.len() > 255 {
        return Err(SpecError::new(
            what,
            value,
            &format!("is {} bytes long; {NAME_RULE}", value.len()),
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| c.is_control() || c.is_whitespace() || *c == '/' || *c == '@')
    {
        return Err(SpecError::new(
            what,
            value,
            &format!("contains {c:?}; {NAME_RULE}"),
        ));
    }
    Ok(())
}

fn validate_image_name(value: &str) -> Result<(), SpecError> {
    validate_name("image name", value)?;
    if value.starts_with('.') {
        return Err(SpecError::new(
            "image name",
            value,
            "names starting with '.' are reserved by Ceph",
        ));
    }
    Ok(())
}

/// Check a Cinder volume id given by a user before it names a lock or record file of the
/// bootable path (`bootable_<id>.lock`): it must be a UUID, 8-4-4-4-12 hex digits.
pub fn check_volume_id(id: &str) -> Result<(), SpecError> {
    let uuid = id.len() == 36
        && id.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        });
    if uuid {
        Ok(())
    } else {
        Err(SpecError::new(
            "Cinder volume id",
            id,
            "give the volume's UUID (8-4-4-4-12 hex digits, as `openstack volume list` shows it)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_spec_parses_pool_and_namespace() {
        let s: ImageSpec = "volumes/volume-1".parse().unwrap();
        assert_eq!(s.pool.pool, "volumes");
        assert_eq!(s.pool.namespace, "");
        assert_eq!(s.image, "volume-1");
        assert_eq!(s.to_string(), "volumes/volume-1");
        let s: ImageSpec = "volumes/tenant/img".parse().unwrap();
        assert_eq!(s.pool.namespace, "tenant");
        assert_eq!(s.to_string(), "volumes/tenant/img");
    }

    #[test]
    fn image_spec_rejects_bad_input_with_a_reason() {
        for bad in [
            "img",
            "/img",
            "vol/",
            "a/b/c/d",
            "vol/img@snap",
            "vol/ img",
            "vol/.x",
        ] {
            let e = bad.parse::<ImageSpec>().unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn the_name_error_states_exactly_what_the_check_accepts() {
        // accepted today and still accepted: Cinder's names, shell metacharacters (always
        // quoted), non-ASCII letters, 255 bytes
        for ok in [
            "volume-0d3e5c1a-1111-2222-3333-444455556666",
            "it's-$(x)-`id`;*&|<>\"",
            "über_名前.v2",
            &"x".repeat(255),
        ] {
            assert!(ImageSpec::new("volumes", ok).is_ok(), "{ok}");
        }
        // every refusal names the rule, and the rule is what the check does
        for c in (0u32..0x3100).filter_map(char::from_u32) {
            let name = format!("a{c}b");
            let refused = c.is_whitespace() || c.is_control() || c == '/' || c == '@';
            match PoolSpec::new(&name) {
                Ok(_) => assert!(!refused, "{c:?} accepted"),
                Err(e) => {
                    assert!(refused, "{c:?} refused: {e}");
                    assert!(
                        e.to_string()
                            .contains(&format!("contains {c:?}; {NAME_RULE}")),
                        "{e}"
                    );
                }
            }
        }
        let e = ImageSpec::new("volumes", &"x".repeat(256)).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("is 256 bytes long; {NAME_RULE}")),
            "{e}"
        );
        assert!(!NAME_RULE.contains("letters, digits"));
    }

    #[test]
    fn a_conf_path_that_is_not_utf8_is_refused_with_its_reason() {
        use std::os::unix::ffi::OsStrExt;
        let conf = std::ffi::OsStr::from_bytes(b"/etc/ceph/site-\xff.conf");
        let e = ClusterSpec::with_conf("site-a", conf).unwrap_err();
        assert_eq!(e.what, "conf file");
        assert!(e.to_string().contains("is not valid UTF-8"), "{e}");
        assert!(ClusterSpec::with_conf("site-a", "/etc/ceph/über.conf").is_ok());
    }

    #[test]
    fn volume_ids_must_be_uuids() {
        assert!(check_volume_id("a1cf7486-c00e-40ba-8ffe-b903c9a7d35a").is_ok());
        for bad in [
            "",
            "../x",
            "/etc/passwd",
            "a1cf7486-c00e-40ba-8ffe-b903c9a7d35a/..",
        ] {
            let e = check_volume_id(bad).unwrap_err();
            assert_eq!(e.what, "Cinder volume id");
            assert!(e.to_string().contains("give the volume's UUID"), "{e}");
        }
    }

    #[test]
    fn cluster_spec_defaults_like_rbd_cluster() {
        let c = ClusterSpec::named("site-a").unwrap();
        assert_eq!(c.conf, PathBuf::from("/etc/ceph/site-a.conf"));
        assert_eq!(c.client_id, "admin");
        let c = c.client("client.mirror").unwrap();
        assert_eq!(c.client_id, "mirror");
        assert!(ClusterSpec::named("a b").is_err());
    }
}
