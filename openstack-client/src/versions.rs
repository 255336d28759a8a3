//! What API versions a service offers, read from its version document, and the microversion
//! to send, negotiated from it.
//!
//! Clouds of different releases offer different ranges (Cinder of Zed: 3.0-3.70, of 2025.1:
//! 3.0-3.71; Glance of Zed lists image API v2.0-v2.16, of 2024.2 and later up to v2.17 with
//! the new locations calls). The adapters never guess a release from a version number: they
//! read the service's own version document (the unversioned root of its endpoint,
//! `{"versions": [...]}`, or one `{"version": {...}}`) and pick what it offers.

use serde::Deserialize;
use std::fmt;

/// An API version `MAJOR.MINOR` (`3.8`, `2.17`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiVersion {
    /// Major version (`3` for Cinder's v3).
    pub major: u32,
    /// Minor version, the microversion within the major one.
    pub minor: u32,
}

impl ApiVersion {
    /// `major.minor`.
    pub const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }

    /// Parses `3.8`, `v3.0`, `v2.17`; `None` for anything else (an empty `version` field
    /// means "no microversions" in OpenStack's documents).
    pub fn parse(text: &str) -> Option<Self> {
        let t = text.trim().trim_start_matches(['v', 'V']);
        let (maj, min) = t.split_once('.').unwrap_or((t, "0"));
        Some(Self::new(maj.parse().ok()?, min.parse().ok()?))
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// One entry of a version document.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct VersionEntry {
    /// `v3.0`, `v2.17`.
    pub id: String,
    /// `CURRENT`, `SUPPORTED`, `DEPRECATED`.
    #[serde(default)]
    pub status: String,
    /// Highest microversion of this major version (empty: no microversions).
    #[serde(default)]
    pub version: String,
    /// Lowest microversion of this major version (empty: no microversions).
    #[serde(default)]
    pub min_version: String,
}

/// A service's version document.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VersionDocument {
    /// Its entries, as the service listed them.
    pub versions: Vec<VersionEntry>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawDocument {
    Many { versions: Vec<VersionEntry> },
    One { version: VersionEntry },
}

impl VersionDocument {
    /// Reads `{"versions": [...]}` (a root document) or `{"version": {...}}` (one version's).
    pub fn from_json(body: &[u8]) -> Result<Self, String> {
        match serde_json::from_slice::<RawDocument>(body) {
            Ok(RawDocument::Many { versions }) => Ok(Self { versions }),
            Ok(RawDocument::One { version }) => Ok(Self {
                versions: vec![version],
            }),
            Err(e) => Err(format!("not a version document: {e}")),
        }
    }

    /// The ids listed (`v2.17`, `v3.0`), parsed.
    pub fn ids(&self) -> impl Iterator<Item = ApiVersion> + '_ {
        self.versions
            .iter()
            .filter_map(|e| ApiVersion::parse(&e.id))
    }

    /// Whether an entry with id `version` or higher in the same major version is listed
    /// (Glance lists one id per image API version it serves).
    pub fn offers_at_least(&self, version: ApiVersion) -> bool {
        self.ids().any(|v| v.major == version.major && v >= version)
    }

    /// The microversion range `(min, max)` of major version `major`, if the document gives one.
    pub fn microversion_range(&self, major: u32) -> Option<(ApiVersion, ApiVersion)> {
        self.versions
            .iter()
            .filter(|e| ApiVersion::parse(&e.id).is_some_and(|v| v.major == major))
            .find_map(|e| {
                Some((
                    ApiVersion::parse(&e.min_version)?,
                    ApiVersion::parse(&e.version)?,
                ))
            })
    }

    /// The microversion to send: the highest of `needed..=preferred` the service supports.
    /// Fails when the document gives no range for `needed.major`, or when the service's range
    /// and ours do not meet (the service too old for what we need, or it dropped it).
    pub fn negotiate(
        &self,
        needed: ApiVersion,
        preferred: ApiVersion,
    ) -> Result<ApiVersion, NegotiationError> {
        let Some((min, max)) = self.microversion_range(needed.major) else {
            return Err(NegotiationError::NoRange {
                major: needed.major,
                listed: self.versions.iter().map(|e| e.id.clone()).collect(),
            });
        };
        let pick = preferred.min(max);
        if pick < needed || pick < min {
            return Err(NegotiationError::Disjoint {
                needed,
                preferred,
                min,
                max,
            });
        }
        Ok(pick)
    }
}

/// Why no microversion could be agreed on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NegotiationError {
    /// The document has no microversion range for the major version.
    #[error("the version document gives no microversion range for v{major} (it lists {listed:?})")]
    NoRange {
        /// The major version asked for.
        major: u32,
        /// The ids it lists.
        listed: Vec<String>,
    },
    /// The service's range and ours do not meet.
    #[error(
        "the service supports microversions {min} to {max}; rbd-relay needs at least {needed} \
         (and was tested up to {preferred})"
    )]
    Disjoint {
        /// The lowest rbd-relay can work with.
        needed: ApiVersion,
        /// The highest rbd-relay would use.
        preferred: ApiVersion,
        /// The service's lowest.
        min: ApiVersion,
        /// The service's highest.
        max: ApiVersion,
    },
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// `GET http://cinder:8776/` of Debian 12's Cinder 21 (Zed), as captured.
    const CINDER_ZED: &str = r#"{"versions": [{"id": "v3.0", "status": "CURRENT", "version": "3.70", "min_version": "3.0", "updated": "2022-08-31T00:00:00Z", "links": [{"rel": "self", "href": "http://127.0.0.1:8777/v3/"}]}]}"#;

    #[test]
    fn versions_parse_with_or_without_the_v() {
        assert_eq!(ApiVersion::parse("v3.0"), Some(ApiVersion::new(3, 0)));
        assert_eq!(ApiVersion::parse("3.70"), Some(ApiVersion::new(3, 70)));
        assert_eq!(ApiVersion::parse("v2"), Some(ApiVersion::new(2, 0)));
        assert_eq!(ApiVersion::parse(""), None);
        assert!(ApiVersion::new(3, 10) > ApiVersion::new(3, 9));
    }

    #[test]
    fn a_cinder_root_document_gives_its_microversion_range() {
        let d = VersionDocument::from_json(CINDER_ZED.as_bytes()).unwrap();
        assert_eq!(
            d.microversion_range(3),
            Some((ApiVersion::new(3, 0), ApiVersion::new(3, 70)))
        );
        let one = r#"{"version": {"id": "v3.0", "version": "3.71", "min_version": "3.0"}}"#;
        let d1 = VersionDocument::from_json(one.as_bytes()).unwrap();
        assert_eq!(d1.microversion_range(3).unwrap().1, ApiVersion::new(3, 71));
    }

    #[test]
    fn negotiation_takes_the_highest_version_both_sides_support() {
        let d = VersionDocument::from_json(CINDER_ZED.as_bytes()).unwrap();
        let v = |m| ApiVersion::new(3, m);
        assert_eq!(d.negotiate(v(8), v(8)), Ok(v(8)));
        assert_eq!(d.negotiate(v(8), v(80)), Ok(v(70)));
        assert!(matches!(
            d.negotiate(v(71), v(71)),
            Err(NegotiationError::Disjoint { .. })
        ));
        // a service whose lowest microversion went above what we would send
        let raised = r#"{"versions": [{"id": "v3.0", "version": "3.90", "min_version": "3.20"}]}"#;
        let d2 = VersionDocument::from_json(raised.as_bytes()).unwrap();
        let err = d2.negotiate(v(8), v(8)).unwrap_err();
        assert!(err.to_string().contains("3.20 to 3.90"), "{err}");
    }

    #[test]
    fn a_document_without_microversions_cannot_be_negotiated() {
        // Glance lists versions but no microversion range
        let glance = r#"{"versions": [{"id": "v2.16", "status": "CURRENT"}, {"id": "v2.15", "status": "SUPPORTED"}]}"#;
        let d = VersionDocument::from_json(glance.as_bytes()).unwrap();
        assert!(matches!(
            d.negotiate(ApiVersion::new(2, 0), ApiVersion::new(2, 0)),
            Err(NegotiationError::NoRange { .. })
        ));
        assert!(d.offers_at_least(ApiVersion::new(2, 16)));
        assert!(!d.offers_at_least(ApiVersion::new(2, 17)));
        assert!(VersionDocument::from_json(b"{\"error\": 1}").is_err());
    }
}
