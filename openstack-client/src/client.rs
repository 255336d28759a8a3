//! Authenticated HTTP access to one cloud: Keystone v3 token, catalog, re-authentication.
//!
//! [`OpenStackClient`] holds the token and catalog of one cloud behind a lock, renews the token
//! shortly before it expires or once after a 401, and turns every failure into [`Error`].
//! Requests are values ([`ApiRequest`]) so the adapters stay small and testable. The token is
//! only ever put into the `X-Auth-Token` header; nothing here logs it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use url::Url;

use crate::catalog::{select_endpoint, CatalogService, ServiceType};
use crate::config::{AuthMethod, CloudConfig, DomainRef, Scope, UserRef};
use crate::error::{ApiError, Error};
use crate::secret::Secret;
use crate::versions::VersionDocument;

/// Options of the HTTP client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Time limit to open a connection.
    pub connect_timeout: Duration,
    /// Time limit of one request (downloads set their own).
    pub request_timeout: Duration,
    /// Renew the token when it expires within this margin.
    pub reauth_margin: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(120),
            reauth_margin: Duration::from_secs(120),
        }
    }
}

/// What Keystone said about the current token (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TokenInfo {
    /// User id.
    pub user_id: Option<String>,
    /// User name.
    pub user_name: Option<String>,
    /// Project id of a project-scoped token.
    pub project_id: Option<String>,
    /// Project name of a project-scoped token.
    pub project_name: Option<String>,
    /// Role names; `None` for a static token on a cloud without Keystone.
    pub roles: Option<Vec<String>>,
    /// Expiry as Keystone wrote it.
    pub expires_at: Option<String>,
    /// Whether the token is system-scoped.
    pub system_scope: bool,
}

impl TokenInfo {
    /// Whether the token has role `role` (case-insensitive); `None` when roles are unknown.
    pub fn has_role(&self, role: &str) -> Option<bool> {
        self.roles
            .as_ref()
            .map(|r| r.iter().any(|x| x.eq_ignore_ascii_case(role)))
    }

    /// Whether the token carries the `admin` role; `None` when roles are unknown.
    pub fn is_admin(&self) -> Option<bool> {
        self.has_role("admin")
    }

    /// Whether the token carries `admin` or `service`; `None` when roles are unknown.
    pub fn is_admin_or_service(&self) -> Option<bool> {
        Some(self.has_role("admin")? || self.has_role("service")?)
    }

    /// Roles for messages: `admin, member` or `unknown`.
    pub fn roles_display(&self) -> String {
        match &self.roles {
            Some(r) if r.is_empty() => "none".into(),
            Some(r) => r.join(", "),
            None => "unknown (no Keystone)".into(),
        }
    }
}

/// A microversion header value (`OpenStack-API-Version: volume 3.8`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Microversion {
    /// Service name in the header (`volume`, `image`).
    pub service: &'static str,
    /// Version (`3.8`).
    pub version: String,
}

/// Body of a request.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestBody {
    /// `application/json`.
    Json(Value),
    /// Glance's `application/openstack-images-v2.1-json-patch`.
    GlanceJsonPatch(Value),
}

/// One API call as data: service, method, path relative to the service endpoint, query, body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiRequest {
    /// The service.
    pub service: ServiceType,
    /// HTTP method.
    pub method: Method,
    /// Path relative to the endpoint (`volumes/ID`, `v2/images`), no leading `/`.
    pub path: String,
    /// Query parameters.
    pub query: Vec<(String, String)>,
    /// Body.
    pub body: Option<RequestBody>,
    /// Microversion header, if any.
    pub microversion: Option<Microversion>,
    /// Time limit overriding the client's, for long downloads.
    pub timeout: Option<Duration>,
}

impl ApiRequest {
    /// A request without body.
    pub fn new(service: ServiceType, method: Method, path: impl Into<String>) -> Self {
        Self {
            service,
            method,
            path: path.into(),
            query: Vec::new(),
            body: None,
            microversion: None,
            timeout: None,
        }
    }

    /// Adds a query parameter.
    pub fn query(mut self, key: &str, value: impl Into<String>) -> Self {
        self.query.push((key.to_owned(), value.into()));
        self
    }

    /// Sets a JSON body.
    pub fn json(mut self, body: Value) -> Self {
        self.body = Some(RequestBody::Json(body));
        self
    }

    /// Sets a Glance JSON-patch body.
    pub fn glance_patch(mut self, body: Value) -> Self {
        self.body = Some(RequestBody::GlanceJsonPatch(body));
        self
    }

    /// Sets the microversion header.
    pub fn microversion(mut self, service: &'static str, version: impl Into<String>) -> Self {
        self.microversion = Some(Microversion {
            service,
            version: version.into(),
        });
        self
    }

    /// Sets a time limit for this request.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }
}

#[derive(Clone)]
struct Session {
    token: Option<Secret>,
    info: TokenInfo,
    catalog: Vec<CatalogService>,
    expires: Option<SystemTime>,
}

struct Inner {
    cloud: CloudConfig,
    http: reqwest::Client,
    options: ClientOptions,
    session: tokio::sync::Mutex<Option<Session>>,
}

/// An authenticated client of one cloud. Cheap to clone; clones share the token.
#[derive(Clone)]
pub struct OpenStackClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for OpenStackClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenStackClient")
            .field("cloud", &self.inner.cloud.name)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenBody {
    token: TokenDoc,
}

#[derive(Deserialize)]
struct Named {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct TokenDoc {
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    user: Option<Named>,
    #[serde(default)]
    project: Option<Named>,
    #[serde(default)]
    roles: Vec<Named>,
    #[serde(default)]
    catalog: Vec<CatalogService>,
    #[serde(default)]
    system: Option<Value>,
}

impl OpenStackClient {
    /// Loads cloud `name` (see [`CloudConfig::load`]) and authenticates.
    pub async fn from_cloud(name: &str) -> Result<Self, Error> {
        let cloud = CloudConfig::load(Some(name))?;
        let mut options = ClientOptions::default();
        if let Some(t) = cloud.api_timeout {
            options.request_timeout = t;
        }
        Self::connect(cloud, options).await
    }

    /// Builds a client for `cloud` and authenticates at once, so bad credentials fail here.
    pub async fn connect(cloud: CloudConfig, options: ClientOptions) -> Result<Self, Error> {
        for w in cloud.security_warnings() {
            tracing::warn!(cloud = %cloud.name, "{w}");
        }
        let b = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .user_agent(concat!("rbd-relay/", env!("CARGO_PKG_VERSION")))
            .redirect(same_origin_redirects());
        let b = tls_builder(b, &cloud)?;
        let http = b.build().map_err(|e| Error::Client {
            cloud: cloud.name.clone(),
            reason: e.to_string(),
        })?;
        let client = Self {
            inner: Arc::new(Inner {
                cloud,
                http,
                options,
                session: tokio::sync::Mutex::new(None),
            }),
        };
        client.session().await?;
        Ok(client)
    }

    /// The cloud's configuration.
    pub fn cloud(&self) -> &CloudConfig {
        &self.inner.cloud
    }

    /// The cloud's name.
    pub fn cloud_name(&self) -> &str {
        &self.inner.cloud.name
    }

    /// What Keystone said about the current token: user, project, roles, expiry.
    pub async fn token_info(&self) -> Result<TokenInfo, Error> {
        Ok(self.session().await?.info)
    }

    /// The base URL of `service`: the configured override, else the catalog's.
    pub async fn endpoint(&self, service: ServiceType) -> Result<Url, Error> {
        let s = self.session().await?;
        self.endpoint_in(&s, service)
    }

    fn endpoint_in(&self, s: &Session, service: ServiceType) -> Result<Url, Error> {
        let cloud = &self.inner.cloud;
        if let Some(u) = cloud.endpoint_overrides.get(&service) {
            return Ok(u.clone());
        }
        if let AuthMethod::Static { .. } = cloud.auth {
            return Err(Error::NoEndpointOverride {
                cloud: cloud.name.clone(),
                key: format!(
                    "{}_endpoint_override",
                    service.aliases()[0].replace('-', "_")
                ),
            });
        }
        let mut url = select_endpoint(
            &s.catalog,
            service,
            cloud.interface,
            cloud.region_name.as_deref(),
        )
        .map_err(|source| Error::Endpoint {
            cloud: cloud.name.clone(),
            source,
        })?;
        if service == ServiceType::BlockStorage {
            // An unversioned Cinder endpoint: the project-scoped v3 root is under it.
            let has_v3 = url
                .path_segments()
                .is_some_and(|mut p| p.any(|x| x == "v3"));
            if let (false, Some(pid)) = (has_v3, &s.info.project_id) {
                let p = format!("{}/v3/{pid}", url.path().trim_end_matches('/'));
                url.set_path(&p);
            }
        }
        Ok(url)
    }

    /// The service's version document: `GET` of the unversioned root of its endpoint (the
    /// path up to the first `vN` segment: `http://h:8776/v3/PROJECT` -> `http://h:8776/`),
    /// which Cinder answers with `300 Multiple Choices` and Glance with `200`. Sent without
    /// a token: version documents are public.
    pub async fn version_document(&self, service: ServiceType) -> Result<VersionDocument, Error> {
        let url = version_root(&self.endpoint(service).await?);
        let resp = self
            .inner
            .http
            .get(url.clone())
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(|source| Error::Unreachable {
                service,
                url: url.to_string(),
                source,
            })?;
        let status = resp.status();
        if status.is_client_error() || status.is_server_error() {
            return Err(api_error(service, "GET", &url, resp).await);
        }
        let bytes = resp.bytes().await.map_err(|source| Error::Unreachable {
            service,
            url: url.to_string(),
            source,
        })?;
        VersionDocument::from_json(&bytes).map_err(|reason| Error::Decode {
            service,
            url: url.to_string(),
            reason,
        })
    }

    /// Resolves the full URL of a request.
    pub async fn url_for(&self, req: &ApiRequest) -> Result<Url, Error> {
        let s = self.session().await?;
        self.url_in(&s, req)
    }

    fn url_in(&self, s: &Session, req: &ApiRequest) -> Result<Url, Error> {
        let base = self.endpoint_in(s, req.service)?;
        let mut path = base.path().trim_end_matches('/').to_owned();
        if req.service == ServiceType::Image && path.ends_with("/v2") {
            path.truncate(path.len() - 3);
        }
        let mut url = base.clone();
        url.set_path(&format!("{path}/{}", req.path.trim_start_matches('/')));
        if !req.query.is_empty() {
            url.query_pairs_mut().extend_pairs(req.query.iter());
        }
        Ok(url)
    }

    /// Sends `req` and returns the successful response; maps 4xx/5xx to [`Error::Api`],
    /// transport failures to [`Error::Unreachable`]; re-authenticates once on a 401.
    pub async fn send(&self, req: &ApiRequest) -> Result<reqwest::Response, Error> {
        let mut session = self.session().await?;
        let mut retried = false;
        loop {
            let url = self.url_in(&session, req)?;
            let mut rb = self.inner.http.request(req.method.clone(), url.clone());
            if let Some(t) = &session.token {
                rb = rb.header("X-Auth-Token", t.expose());
            }
            rb = rb.header("Accept", "application/json");
            if let Some(mv) = &req.microversion {
                rb = rb.header(
                    "OpenStack-API-Version",
                    format!("{} {}", mv.service, mv.version),
                );
            }
            if let Some(t) = req.timeout {
                rb = rb.timeout(t);
            }
            match &req.body {
                Some(RequestBody::Json(v)) => rb = rb.json(v),
                Some(RequestBody::GlanceJsonPatch(v)) => {
                    rb = rb
                        .header(
                            "Content-Type",
                            "application/openstack-images-v2.1-json-patch",
                        )
                        .body(v.to_string())
                }
                None => {}
            }
            let resp = rb.send().await.map_err(|source| Error::Unreachable {
                service: req.service,
                url: url.to_string(),
                source,
            })?;
            let status = resp.status();
            tracing::debug!(method = %req.method, %url, status = status.as_u16(), "openstack request");
            if status == StatusCode::UNAUTHORIZED && !retried && self.renewable() {
                tracing::info!(cloud = %self.inner.cloud.name, "token rejected (401); authenticating again");
                retried = true;
                session = self.reauthenticate(&session).await?;
                continue;
            }
            if status.is_client_error() || status.is_server_error() {
                return Err(api_error(req.service, req.method.as_str(), &url, resp).await);
            }
            return Ok(resp);
        }
    }

    /// Sends `req` and decodes the JSON body.
    pub async fn send_json<T: DeserializeOwned>(&self, req: &ApiRequest) -> Result<T, Error> {
        let resp = self.send(req).await?;
        let url = resp.url().to_string();
        let bytes = resp.bytes().await.map_err(|source| Error::Unreachable {
            service: req.service,
            url: url.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Decode {
            service: req.service,
            url,
            reason: format!(
                "{e} in body {}",
                String::from_utf8_lossy(&bytes)
                    .chars()
                    .take(300)
                    .collect::<String>()
            ),
        })
    }

    /// Sends `req` and ignores the body.
    pub async fn send_empty(&self, req: &ApiRequest) -> Result<(), Error> {
        self.send(req).await.map(|_| ())
    }

    fn renewable(&self) -> bool {
        !matches!(self.inner.cloud.auth, AuthMethod::Static { .. })
    }

    /// The current session, authenticating if there is none or it is about to expire.
    async fn session(&self) -> Result<Session, Error> {
        let mut guard = self.inner.session.lock().await;
        if let Some(s) = guard.as_ref() {
            let fresh = match s.expires {
                Some(exp) => exp
                    .duration_since(SystemTime::now())
                    .map(|left| left > self.inner.options.reauth_margin)
                    .unwrap_or(false),
                None => true,
            };
            if fresh {
                return Ok(s.clone());
            }
            tracing::info!(cloud = %self.inner.cloud.name, "token about to expire; authenticating again");
        }
        let s = self.authenticate().await?;
        *guard = Some(s.clone());
        Ok(s)
    }

    /// Drops `stale` (if still current) and authenticates again.
    async fn reauthenticate(&self, stale: &Session) -> Result<Session, Error> {
        let mut guard = self.inner.session.lock().await;
        if let Some(cur) = guard.as_ref() {
            let same = match (&cur.token, &stale.token) {
                (Some(a), Some(b)) => a == b,
                _ => false,
            };
            if !same {
                return Ok(cur.clone());
            }
        }
        let s = self.authenticate().await?;
        *guard = Some(s.clone());
        Ok(s)
    }

    async fn authenticate(&self) -> Result<Session, Error> {
        let cloud = &self.inner.cloud;
        let (auth_url, body) = match &cloud.auth {
            AuthMethod::Static { token } => {
                return Ok(Session {
                    token: token.clone(),
                    info: TokenInfo::default(),
                    catalog: Vec::new(),
                    expires: None,
                })
            }
            AuthMethod::Password {
                auth_url,
                user,
                password,
                scope,
            } => (
                auth_url,
                auth_body(
                    json!({"methods": ["password"],
                           "password": {"user": user_json(user, Some(password))}}),
                    scope,
                ),
            ),
            AuthMethod::ApplicationCredential {
                auth_url,
                id,
                name,
                user,
                secret,
            } => {
                let mut ac = serde_json::Map::new();
                if let Some(id) = id {
                    ac.insert("id".into(), json!(id));
                }
                if let Some(n) = name {
                    ac.insert("name".into(), json!(n));
                }
                if let Some(u) = user {
                    ac.insert("user".into(), user_json(u, None));
                }
                ac.insert("secret".into(), json!(secret.expose()));
                (
                    auth_url,
                    auth_body(
                        json!({"methods": ["application_credential"],
                               "application_credential": Value::Object(ac)}),
                        &Scope::Unscoped,
                    ),
                )
            }
            AuthMethod::Token {
                auth_url,
                token,
                scope,
            } => (
                auth_url,
                auth_body(
                    json!({"methods": ["token"], "token": {"id": token.expose()}}),
                    scope,
                ),
            ),
        };
        let url = format!("{}/auth/tokens", auth_url.as_str().trim_end_matches('/'));
        let resp = self
            .inner
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .map_err(|source| Error::Unreachable {
                service: ServiceType::Identity,
                url: url.clone(),
                source,
            })?;
        let status = resp.status();
        if !status.is_success() {
            let e = api_error(ServiceType::Identity, "POST", &resp.url().clone(), resp).await;
            return Err(Error::Auth {
                cloud: cloud.name.clone(),
                auth_url: url,
                status: status.as_u16(),
                message: e.api().map(|a| a.message.clone()).unwrap_or_default(),
            });
        }
        let token = resp
            .headers()
            .get("X-Subject-Token")
            .and_then(|v| v.to_str().ok())
            .map(Secret::new)
            .ok_or_else(|| Error::Decode {
                service: ServiceType::Identity,
                url: url.clone(),
                reason: "no X-Subject-Token header".into(),
            })?;
        let doc: TokenBody = resp.json().await.map_err(|e| Error::Decode {
            service: ServiceType::Identity,
            url: url.clone(),
            reason: e.to_string(),
        })?;
        let t = doc.token;
        let expires = t.expires_at.as_deref().and_then(parse_time);
        tracing::debug!(cloud = %cloud.name, roles = ?t.roles.iter().map(|r| r.name.clone()).collect::<Vec<_>>(), "authenticated");
        Ok(Session {
            token: Some(token),
            info: TokenInfo {
                user_id: t.user.as_ref().and_then(|u| u.id.clone()),
                user_name: t.user.as_ref().and_then(|u| u.name.clone()),
                project_id: t.project.as_ref().and_then(|p| p.id.clone()),
                project_name: t.project.as_ref().and_then(|p| p.name.clone()),
                roles: Some(t.roles.into_iter().filter_map(|r| r.name).collect()),
                expires_at: t.expires_at,
                system_scope: t.system.is_some(),
            },
            catalog: t.catalog,
            expires,
        })
    }
}

/// Redirects are followed only within one origin (scheme, host and port): every request
/// carries `X-Auth-Token`, and Keystone's a password (re-sent on 307/308). reqwest's default
/// policy would forward `X-Auth-Token` to any host, https → http included.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let Some(from) = attempt.previous().last().cloned() else {
            return attempt.follow();
        };
        let to = attempt.url().clone();
        if attempt.previous().len() > 10 {
            attempt.error(format!("more than 10 redirects, the last to {to}"))
        } else if from.origin() == to.origin() {
            attempt.follow()
        } else {
            let reason = format!(
                "refusing to follow the redirect from {from} to {to}: it leaves {} and would \
                 send the token (or password) there; configure the service's URL as {}:// \
                 {} directly (endpoint override or catalog) if that host is right",
                from.origin().ascii_serialization(),
                to.scheme(),
                to.host_str().unwrap_or("?")
            );
            attempt.error(reason)
        }
    })
}

/// Applies `cloud`'s TLS settings: verification, CA bundle (which, as with the `openstack`
/// CLI, replaces the default trust store of system roots and webpki roots), client identity.
fn tls_builder(
    mut b: reqwest::ClientBuilder,
    cloud: &CloudConfig,
) -> Result<reqwest::ClientBuilder, Error> {
    let err = |reason: String| Error::Client {
        cloud: cloud.name.clone(),
        reason,
    };
    let read = |what: &str, p: &std::path::Path| {
        std::fs::read(p).map_err(|e| {
            err(format!(
                "cannot read {what} {}: {e}; fix the path in the cloud's clouds.yaml entry",
                p.display()
            ))
        })
    };
    let tls = &cloud.tls;
    if !tls.verify {
        b = b.danger_accept_invalid_certs(true);
    } else if let Some(ca) = &tls.cacert {
        let pem = read("cacert", ca)?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| err(format!("bad cacert {}: {e}", ca.display())))?;
        if certs.is_empty() {
            return Err(err(format!(
                "cacert {} holds no PEM certificate; give the CA bundle of the cloud",
                ca.display()
            )));
        }
        b = b.tls_built_in_root_certs(false);
        for cert in certs {
            b = b.add_root_certificate(cert);
        }
    }
    if let Some(cert) = &tls.client_cert {
        let mut pem = read("client certificate (cert)", cert)?;
        if let Some(key) = &tls.client_key {
            pem.push(b'\n');
            pem.extend(read("client key (key)", key)?);
        }
        let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
            err(format!(
                "bad client certificate {}{}: {e}; `cert` needs a PEM certificate and a PEM \
                 private key (in `cert` itself or in `key`)",
                cert.display(),
                tls.client_key
                    .as_ref()
                    .map(|k| format!(" / key {}", k.display()))
                    .unwrap_or_default()
            ))
        })?;
        b = b.identity(id);
    }
    Ok(b)
}

fn parse_time(s: &str) -> Option<SystemTime> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    Some(SystemTime::from(t))
}

fn domain_json(d: &DomainRef) -> Value {
    match d {
        DomainRef::Id(id) => json!({"id": id}),
        DomainRef::Name(n) => json!({"name": n}),
    }
}

fn user_json(u: &UserRef, password: Option<&Secret>) -> Value {
    let mut v = match u {
        UserRef::Id(id) => json!({"id": id}),
        UserRef::Name { name, domain } => json!({"name": name, "domain": domain_json(domain)}),
    };
    if let (Some(p), Some(o)) = (password, v.as_object_mut()) {
        o.insert("password".into(), json!(p.expose()));
    }
    v
}

fn auth_body(identity: Value, scope: &Scope) -> Value {
    let scope = match scope {
        Scope::Unscoped => None,
        Scope::ProjectId(id) => Some(json!({"project": {"id": id}})),
        Scope::ProjectName { name, domain } => {
            Some(json!({"project": {"name": name, "domain": domain_json(domain)}}))
        }
        Scope::Domain(d) => Some(json!({"domain": domain_json(d)})),
        Scope::System => Some(json!({"system": {"all": true}})),
    };
    match scope {
        Some(s) => json!({"auth": {"identity": identity, "scope": s}}),
        None => json!({"auth": {"identity": identity}}),
    }
}

async fn api_error(
    service: ServiceType,
    method: &str,
    url: &Url,
    resp: reqwest::Response,
) -> Error {
    let status = resp.status().as_u16();
    let request_id = resp
        .headers()
        .get("X-Openstack-Request-Id")
        .or_else(|| resp.headers().get("X-Compute-Request-Id"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.text().await.unwrap_or_default();
    Error::Api(Box::new(ApiError::from_parts(
        service,
        method,
        url.as_str(),
        status,
        request_id,
        &body,
    )))
}

/// The unversioned root of an endpoint: its path up to the first segment `vN` or `vN.M`
/// (`/v3/PROJECT` -> `/`, `/volume/v3` -> `/volume/`), or the whole path when it has none.
pub fn version_root(endpoint: &Url) -> Url {
    let mut root = endpoint.clone();
    let mut kept = Vec::new();
    for seg in endpoint.path_segments().into_iter().flatten() {
        let versioned = seg
            .strip_prefix('v')
            .is_some_and(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_digit() || c == '.'));
        if versioned {
            break;
        }
        if !seg.is_empty() {
            kept.push(seg);
        }
    }
    let path = if kept.is_empty() {
        "/".to_owned()
    } else {
        format!("/{}/", kept.join("/"))
    };
    root.set_path(&path);
    root.set_query(None);
    root
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_body_shape() {
        let b = auth_body(
            json!({"methods": ["password"], "password": {"user": user_json(
                &UserRef::Name { name: "u".into(), domain: DomainRef::Name("Default".into()) },
                Some(&Secret::new("pw")))}}),
            &Scope::ProjectName {
                name: "p".into(),
                domain: DomainRef::Id("default".into()),
            },
        );
        assert_eq!(
            b,
            json!({"auth": {"identity": {"methods": ["password"], "password": {"user":
                {"name": "u", "domain": {"name": "Default"}, "password": "pw"}}},
                "scope": {"project": {"name": "p", "domain": {"id": "default"}}}}})
        );
    }

    #[test]
    fn the_version_root_is_the_endpoint_path_before_its_version() {
        let root = |u: &str| version_root(&Url::parse(u).unwrap()).to_string();
        assert_eq!(root("http://h:8776/v3/abc123"), "http://h:8776/");
        assert_eq!(root("http://h/volume/v3/abc?x=1"), "http://h/volume/");
        assert_eq!(root("http://h:9292"), "http://h:9292/");
        assert_eq!(root("http://h/image/v2/"), "http://h/image/");
        // a segment that only starts with v is not a version
        assert_eq!(root("http://h/volumes/v3"), "http://h/volumes/");
    }

    #[test]
    fn keystone_expiry_parses() {
        assert!(parse_time("2026-11-22T14:56:07.000000Z").is_some());
    }

    #[test]
    fn roles() {
        let t = TokenInfo {
            roles: Some(vec!["member".into(), "reader".into()]),
            ..Default::default()
        };
        assert_eq!(t.is_admin(), Some(false));
        assert_eq!(TokenInfo::default().is_admin(), None);
    }
}
