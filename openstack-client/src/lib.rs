//! Thin OpenStack client shared by the Cinder and Glance adapters.
//!
//! We own these few hundred lines instead of using `openstack_sdk` because it sends
//! microversion 3.0 to manage-existing (404), lacks the `host` filter of the manageable list,
//! and re-authenticates without rediscovering endpoints. This crate reads `clouds.yaml` and
//! `OS_*` like the OpenStack tools ([`config`]), authenticates with Keystone v3 (password,
//! application credential, token) or uses a static token with explicit endpoints, picks
//! endpoints from the catalog ([`catalog`]), re-authenticates on expiry or 401
//! ([`client`]), reads version documents and negotiates microversions ([`versions`]), keeps the services' error messages ([`error`]) and polls with a deadline
//! ([`wait`]). Secrets never appear in `Debug` output or logs ([`secret`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), openstack_client::Error> {
//! use openstack_client::{ApiRequest, Method, OpenStackClient, ServiceType};
//!
//! // OS_CLOUD / clouds.yaml search path / OS_* variables, as the `openstack` CLI reads them.
//! let client = OpenStackClient::from_cloud("site-b-admin").await?;
//! let admin = client.token_info().await?.is_admin(); // Some(true) / Some(false) / None
//! let volumes: serde_json::Value = client
//!     .send_json(
//!         &ApiRequest::new(ServiceType::BlockStorage, Method::GET, "volumes")
//!             .microversion("volume", "3.8"),
//!     )
//!     .await?;
//! # let _ = (admin, volumes); Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod catalog;
pub mod client;
pub mod config;
pub mod error;
pub mod secret;
pub mod versions;
pub mod wait;

pub use catalog::{Interface, ServiceType};
pub use client::{ApiRequest, ClientOptions, OpenStackClient, RequestBody, TokenInfo};
pub use config::{AuthMethod, CloudConfig, ConfigError, ConfigSources};
pub use error::{ApiError, Error};
pub use reqwest::Method;
pub use secret::Secret;
pub use versions::{ApiVersion, NegotiationError, VersionDocument};
pub use wait::{poll_until, Poll, PollError, PollOptions};
