//! Service catalog: which URL serves Block Storage or Image for this region and interface.
//!
//! Keystone returns the catalog in the token body. Clouds name the same service differently
//! (`block-storage`, `volumev3`, `volume`), so [`ServiceType`] carries the official type plus
//! its aliases, tried in order, as `os-service-types` does.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;
use url::Url;

/// An OpenStack service this client talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServiceType {
    /// Keystone (`identity`).
    Identity,
    /// Cinder v3 (`block-storage`, aliases `volumev3`, `volume`, `block-store`).
    BlockStorage,
    /// Glance (`image`).
    Image,
}

impl ServiceType {
    /// Every service type, for iteration.
    pub const ALL: [ServiceType; 3] = [Self::Identity, Self::BlockStorage, Self::Image];

    /// The official type first, then the aliases found in real catalogs.
    pub fn aliases(self) -> &'static [&'static str] {
        match self {
            Self::Identity => &["identity"],
            Self::BlockStorage => &["block-storage", "volumev3", "volume", "block-store"],
            Self::Image => &["image"],
        }
    }

    /// Human name used in messages (`Cinder`, `Glance`, `Keystone`).
    pub fn project_name(self) -> &'static str {
        match self {
            Self::Identity => "Keystone",
            Self::BlockStorage => "Cinder",
            Self::Image => "Glance",
        }
    }
}

impl fmt::Display for ServiceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.aliases()[0])
    }
}

/// Endpoint interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Interface {
    /// `public` (default).
    #[default]
    Public,
    /// `internal`.
    Internal,
    /// `admin`.
    Admin,
}

impl Interface {
    /// The name Keystone uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Internal => "internal",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Interface {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().trim_end_matches("url") {
            "public" => Ok(Self::Public),
            "internal" => Ok(Self::Internal),
            "admin" => Ok(Self::Admin),
            _ => Err(format!(
                "interface `{s}` is not one of public, internal, admin"
            )),
        }
    }
}

/// One catalog entry as Keystone v3 returns it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct CatalogService {
    /// Service type (`volumev3`, `image`, ...).
    #[serde(rename = "type")]
    pub service_type: String,
    /// Service name (`cinderv3`), informational.
    #[serde(default)]
    pub name: Option<String>,
    /// The service's endpoints.
    #[serde(default)]
    pub endpoints: Vec<CatalogEndpoint>,
}

/// One endpoint of a catalog entry.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct CatalogEndpoint {
    /// `public`, `internal` or `admin`.
    pub interface: String,
    /// Region id.
    #[serde(default)]
    pub region_id: Option<String>,
    /// Region (older name of the same field).
    #[serde(default)]
    pub region: Option<String>,
    /// The URL.
    pub url: String,
}

/// Why no endpoint could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// No catalog entry matches.
    #[error(
        "the catalog has no {interface} endpoint for {service} (types tried: {tried}){region}; \
         catalog has: {available}"
    )]
    NotFound {
        /// The service asked for.
        service: ServiceType,
        /// Interface asked for.
        interface: Interface,
        /// `" in region R"` or empty.
        region: String,
        /// The aliases tried.
        tried: String,
        /// What the catalog offers (`type/interface/region`).
        available: String,
    },
    /// Several regions match and none was configured.
    #[error("{service} has endpoints in several regions ({regions}); set region_name")]
    AmbiguousRegion {
        /// The service asked for.
        service: ServiceType,
        /// The regions.
        regions: String,
    },
    /// The endpoint is not a URL.
    #[error("{service} endpoint `{url}` is not a URL: {reason}")]
    BadUrl {
        /// The service.
        service: ServiceType,
        /// The text.
        url: String,
        /// The parser's message.
        reason: String,
    },
}

/// Picks the endpoint of `service` from `catalog` for `interface` and `region`.
pub fn select_endpoint(
    catalog: &[CatalogService],
    service: ServiceType,
    interface: Interface,
    region: Option<&str>,
) -> Result<Url, EndpointError> {
    for alias in service.aliases() {
        let mut found: Vec<&CatalogEndpoint> = catalog
            .iter()
            .filter(|s| s.service_type == *alias)
            .flat_map(|s| s.endpoints.iter())
            .filter(|e| e.interface.parse::<Interface>().ok() == Some(interface))
            .filter(|e| match region {
                Some(r) => e.region_id.as_deref() == Some(r) || e.region.as_deref() == Some(r),
                None => true,
            })
            .collect();
        if found.is_empty() {
            continue;
        }
        found.dedup_by(|a, b| a.url == b.url);
        let mut regions: Vec<String> = found
            .iter()
            .filter_map(|e| e.region_id.clone().or_else(|| e.region.clone()))
            .collect();
        regions.sort();
        regions.dedup();
        if region.is_none() && regions.len() > 1 {
            return Err(EndpointError::AmbiguousRegion {
                service,
                regions: regions.join(", "),
            });
        }
        let raw = &found[0].url;
        return Url::parse(raw).map_err(|e| EndpointError::BadUrl {
            service,
            url: raw.clone(),
            reason: e.to_string(),
        });
    }
    let available = catalog
        .iter()
        .flat_map(|s| {
            s.endpoints.iter().map(move |e| {
                format!(
                    "{}/{}/{}",
                    s.service_type,
                    e.interface,
                    e.region_id.as_deref().unwrap_or("-")
                )
            })
        })
        .collect::<Vec<_>>()
        .join(", ");
    Err(EndpointError::NotFound {
        service,
        interface,
        region: region
            .map(|r| format!(" in region {r}"))
            .unwrap_or_default(),
        tried: service.aliases().join(", "),
        available: if available.is_empty() {
            "nothing".into()
        } else {
            available
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Vec<CatalogService> {
        serde_json::from_str(
            r#"[
  {"type": "identity", "endpoints": [{"interface": "public", "region_id": "RegionOne", "url": "http://k/v3"}]},
  {"type": "volumev3", "name": "cinderv3", "endpoints": [
     {"interface": "public", "region_id": "RegionOne", "url": "http://c1:8776/v3/p"},
     {"interface": "internal", "region_id": "RegionOne", "url": "http://c1-int:8776/v3/p"},
     {"interface": "public", "region_id": "RegionTwo", "url": "http://c2:8776/v3/p"}]},
  {"type": "image", "endpoints": [{"interface": "public", "region_id": "RegionOne", "url": "http://g:9292"}]}
]"#,
        )
        .unwrap()
    }

    #[test]
    fn alias_interface_and_region() {
        let c = catalog();
        let u = select_endpoint(
            &c,
            ServiceType::BlockStorage,
            Interface::Internal,
            Some("RegionOne"),
        )
        .unwrap();
        assert_eq!(u.as_str(), "http://c1-int:8776/v3/p");
        let u = select_endpoint(
            &c,
            ServiceType::BlockStorage,
            Interface::Public,
            Some("RegionTwo"),
        )
        .unwrap();
        assert_eq!(u.as_str(), "http://c2:8776/v3/p");
    }

    #[test]
    fn several_regions_need_a_choice() {
        let e = select_endpoint(
            &catalog(),
            ServiceType::BlockStorage,
            Interface::Public,
            None,
        )
        .unwrap_err();
        assert!(matches!(e, EndpointError::AmbiguousRegion { .. }), "{e}");
    }

    #[test]
    fn missing_service_lists_catalog() {
        let e = select_endpoint(&catalog(), ServiceType::Image, Interface::Admin, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no admin endpoint for image"), "{e}");
        assert!(e.contains("volumev3/public/RegionOne"), "{e}");
    }
}
