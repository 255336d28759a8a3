//! Cloud configuration read the way the OpenStack tools read it.
//!
//! `openstacksdk` (`openstack/config/loader.py`) looks for `clouds.yaml` (`.yml`, `.json`) in
//! `$OS_CLIENT_CONFIG_FILE`, the working directory, `$XDG_CONFIG_HOME/openstack` (or
//! `~/.config/openstack`), `/etc/xdg/openstack` and `/etc/openstack`, takes the first file that
//! exists, merges `secure.yaml` (`$OS_CLIENT_SECURE_FILE` first) over it, picks the cloud named
//! by the caller or `$OS_CLOUD`, and turns `OS_*` environment variables into a cloud of their
//! own (`envvars`, or `$OS_CLOUD_NAME`) or, like the `openstack` CLI, lays them over the cloud
//! `$OS_CLOUD` chose (never over a cloud the caller names: with two clouds in play, one
//! shell's `OS_PASSWORD` must not leak into the other). Operators already have such files; reading them the same
//! way means rbd-relay needs no configuration of its own. Vendor profiles (`profile:`) are not
//! supported.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_norway::{Mapping, Value};
use url::Url;

use crate::catalog::{Interface, ServiceType};
use crate::secret::Secret;

/// Why a cloud configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A configuration file exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A configuration file is not valid YAML/JSON.
    #[error("cannot parse {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: serde_norway::Error,
    },
    /// The named cloud is in no configuration file and not given by `OS_*` variables.
    #[error("cloud `{name}` not found (searched: {searched}; clouds there: {available})")]
    CloudNotFound {
        /// The cloud asked for.
        name: String,
        /// The files that were looked at.
        searched: String,
        /// The clouds that were found.
        available: String,
    },
    /// No cloud was named (argument or `OS_CLOUD`) and there is not exactly one to choose.
    #[error("no cloud selected: set OS_CLOUD or pass a cloud name (clouds found: {available})")]
    NoCloudSelected {
        /// The clouds that were found.
        available: String,
    },
    /// A required setting is missing from the cloud's entry.
    #[error("cloud `{cloud}`: {what}")]
    Invalid {
        /// The cloud.
        cloud: String,
        /// What is wrong.
        what: String,
    },
}

/// Where configuration comes from: files in search order and the process environment.
///
/// [`ConfigSources::from_env`] builds the list the OpenStack tools use; tests build their own.
#[derive(Debug, Clone, Default)]
pub struct ConfigSources {
    /// Candidate `clouds.yaml` files, first existing one wins.
    pub clouds_files: Vec<PathBuf>,
    /// Candidate `secure.yaml` files, first existing one is merged over the clouds file.
    pub secure_files: Vec<PathBuf>,
    /// Environment variables (only `OS_*` ones matter).
    pub env: BTreeMap<String, String>,
}

const SUFFIXES: [&str; 3] = ["yaml", "yml", "json"];

impl ConfigSources {
    /// The search path and environment of this process, as `openstacksdk` builds them.
    pub fn from_env() -> Self {
        let env: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("OS_") || k.starts_with("XDG_") || k == "HOME")
            .collect();
        Self::from_vars(env, std::env::current_dir().ok())
    }

    /// The search path for these environment variables (`HOME`, `XDG_CONFIG_HOME`,
    /// `XDG_CONFIG_DIRS`, `OS_CLIENT_CONFIG_FILE`, `OS_CLIENT_SECURE_FILE`, `OS_*`) and
    /// working directory.
    pub fn from_vars(env: BTreeMap<String, String>, cwd: Option<PathBuf>) -> Self {
        let mut dirs: Vec<PathBuf> = Vec::new();
        if let Some(cwd) = cwd {
            dirs.push(cwd);
        }
        let home = env.get("HOME").map(PathBuf::from);
        match env.get("XDG_CONFIG_HOME") {
            Some(x) if !x.is_empty() => dirs.push(Path::new(x).join("openstack")),
            _ => {
                if let Some(h) = &home {
                    dirs.push(h.join(".config/openstack"));
                }
            }
        }
        if let Some(h) = &home {
            let unix = h.join(".config/openstack");
            if !dirs.contains(&unix) {
                dirs.push(unix);
            }
        }
        let xdg_dirs = env
            .get("XDG_CONFIG_DIRS")
            .filter(|s| !s.is_empty())
            .cloned()
            .unwrap_or_else(|| "/etc/xdg".to_owned());
        for d in xdg_dirs.split(':').filter(|d| !d.is_empty()) {
            dirs.push(Path::new(d).join("openstack"));
        }
        dirs.push(PathBuf::from("/etc/openstack"));
        let files = |stem: &str| -> Vec<PathBuf> {
            dirs.iter()
                .flat_map(|d| SUFFIXES.iter().map(move |s| d.join(format!("{stem}.{s}"))))
                .collect()
        };
        let mut clouds_files = files("clouds");
        let mut secure_files = files("secure");
        if let Some(f) = env.get("OS_CLIENT_CONFIG_FILE").filter(|s| !s.is_empty()) {
            clouds_files.insert(0, PathBuf::from(f));
        }
        if let Some(f) = env.get("OS_CLIENT_SECURE_FILE").filter(|s| !s.is_empty()) {
            secure_files.insert(0, PathBuf::from(f));
        }
        Self {
            clouds_files,
            secure_files,
            env,
        }
    }
}

/// A domain, by id or by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainRef {
    /// Domain id (`default`).
    Id(String),
    /// Domain name (`Default`).
    Name(String),
}

/// A user, by id or by name within a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserRef {
    /// User id.
    Id(String),
    /// User name and its domain.
    Name {
        /// User name.
        name: String,
        /// The user's domain.
        domain: DomainRef,
    },
}

/// What a token is scoped to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// No scope asked for (application credentials carry their own).
    Unscoped,
    /// A project, by id.
    ProjectId(String),
    /// A project, by name within a domain.
    ProjectName {
        /// Project name.
        name: String,
        /// The project's domain.
        domain: DomainRef,
    },
    /// A domain.
    Domain(DomainRef),
    /// The whole deployment (`system: all`).
    System,
}

/// How to obtain a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMethod {
    /// Keystone v3 password authentication.
    Password {
        /// Keystone v3 URL (ends with `/v3`).
        auth_url: Url,
        /// The user.
        user: UserRef,
        /// The password.
        password: Secret,
        /// The scope asked for.
        scope: Scope,
    },
    /// Keystone v3 application credential (scoped by the credential itself).
    ApplicationCredential {
        /// Keystone v3 URL (ends with `/v3`).
        auth_url: Url,
        /// Credential id; if absent, `name` and `user` identify it.
        id: Option<String>,
        /// Credential name.
        name: Option<String>,
        /// The credential's owner (needed with `name`).
        user: Option<UserRef>,
        /// The credential secret.
        secret: Secret,
    },
    /// An existing token exchanged at Keystone for a scoped one (with a catalog).
    Token {
        /// Keystone v3 URL (ends with `/v3`).
        auth_url: Url,
        /// The token.
        token: Secret,
        /// The scope asked for.
        scope: Scope,
    },
    /// A token used as is with explicit endpoints, for clouds without Keystone (`auth_type:
    /// admin_token`, `none`/`noauth`). It cannot be renewed; roles are unknown.
    Static {
        /// The token sent as `X-Auth-Token`, if any.
        token: Option<Secret>,
    },
}

/// TLS settings of a cloud, read as openstacksdk reads them: `verify` is a boolean, or a path
/// meaning "verify against this CA bundle"; `insecure: true` turns verification off when
/// `verify` is not given; `cacert` names the CA bundle; `cert` (and `key`) the client identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    /// Verify server certificates (`verify`, or not `insecure`).
    pub verify: bool,
    /// CA bundle (`cacert`, or a path given as `verify`). When set, only these CAs are trusted,
    /// as with the `openstack` CLI; otherwise the system trust store and the webpki roots.
    pub cacert: Option<PathBuf>,
    /// Client certificate, PEM (`cert`); may also hold the private key.
    pub client_cert: Option<PathBuf>,
    /// Private key of the client certificate, PEM (`key`), when not in `cert`.
    pub client_key: Option<PathBuf>,
}

impl Default for TlsOptions {
    fn default() -> Self {
        Self {
            verify: true,
            cacert: None,
            client_cert: None,
            client_key: None,
        }
    }
}

/// One cloud's settings, ready to authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudConfig {
    /// The cloud's name (`envvars` for one made of `OS_*` variables).
    pub name: String,
    /// How to authenticate.
    pub auth: AuthMethod,
    /// Region of the endpoints to use; `None` accepts any region if there is only one.
    pub region_name: Option<String>,
    /// Endpoint interface (`public` by default).
    pub interface: Interface,
    /// Explicit endpoints that replace the catalog's (`block_storage_endpoint_override`, ...).
    pub endpoint_overrides: BTreeMap<ServiceType, Url>,
    /// TLS settings.
    pub tls: TlsOptions,
    /// Time limit of one API request (`api_timeout`, seconds, as in openstacksdk): a
    /// service that does not answer within it fails the request, naming the service and
    /// endpoint. `None`: [`crate::ClientOptions`]'s default.
    pub api_timeout: Option<std::time::Duration>,
    /// The file the cloud came from, if any.
    pub source: Option<PathBuf>,
}

impl CloudConfig {
    /// Loads the cloud `name` (or `$OS_CLOUD`, or the only one) from this process's
    /// configuration files and environment.
    pub fn load(name: Option<&str>) -> Result<Self, ConfigError> {
        Self::from_sources(&ConfigSources::from_env(), name)
    }

    /// Loads a cloud from explicit sources (see [`ConfigSources`]).
    pub fn from_sources(sources: &ConfigSources, name: Option<&str>) -> Result<Self, ConfigError> {
        let (path, mut doc) = match first_existing(&sources.clouds_files)? {
            Some((p, v)) => (Some(p), v),
            None => (None, Value::Mapping(Mapping::new())),
        };
        if let Some((_, secure)) = first_existing(&sources.secure_files)? {
            merge(&mut doc, secure);
        }
        let mut clouds: BTreeMap<String, Value> = BTreeMap::new();
        if let Some(Value::Mapping(m)) = doc.get("clouds") {
            for (k, v) in m {
                if let Some(k) = k.as_str() {
                    clouds.insert(k.to_owned(), v.clone());
                }
            }
        }
        let env = &sources.env;
        let env_name = env
            .get("OS_CLOUD_NAME")
            .cloned()
            .unwrap_or_else(|| "envvars".to_owned());
        let env_cloud = env_cloud(env);
        let env_has_cloud = env_cloud.is_some();
        if let Some(c) = &env_cloud {
            clouds.insert(env_name.clone(), c.clone());
        }
        let available = || {
            if clouds.is_empty() {
                "none".to_owned()
            } else {
                clouds.keys().cloned().collect::<Vec<_>>().join(", ")
            }
        };
        let chosen = match name
            .map(str::to_owned)
            .or_else(|| env.get("OS_CLOUD").filter(|s| !s.is_empty()).cloned())
        {
            Some(n) => n,
            None if env_has_cloud => env_name.clone(),
            None if clouds.len() == 1 => clouds.keys().next().cloned().unwrap_or_default(),
            None => {
                return Err(ConfigError::NoCloudSelected {
                    available: available(),
                })
            }
        };
        let Some(entry) = clouds.get(&chosen) else {
            return Err(ConfigError::CloudNotFound {
                name: chosen,
                searched: {
                    let found: Vec<String> = sources
                        .clouds_files
                        .iter()
                        .filter(|p| p.is_file())
                        .map(|p| p.display().to_string())
                        .collect();
                    if found.is_empty() {
                        "no clouds.yaml found".to_owned()
                    } else {
                        found.join(", ")
                    }
                },
                available: available(),
            });
        };
        let source = if chosen == env_name && env_has_cloud {
            None
        } else {
            path
        };
        // Like the `openstack` CLI, whose OS_* variables are option defaults that override
        // the file: OS_PASSWORD etc. apply on top of the cloud OS_CLOUD chose. Not on a cloud
        // named by the caller: rbd-relay talks to two clouds, and one shell's OS_PASSWORD
        // must not leak into the other cloud.
        let mut entry = entry.clone();
        if let (Some(over), false, None) = (env_cloud, chosen == env_name, name) {
            merge(&mut entry, over);
        }
        let mut cfg = build(&chosen, &entry, source)?;
        if let Some(r) = env.get("OS_REGION_NAME").filter(|s| !s.is_empty()) {
            cfg.region_name = Some(r.clone());
        }
        Ok(cfg)
    }
}

fn first_existing(files: &[PathBuf]) -> Result<Option<(PathBuf, Value)>, ConfigError> {
    for p in files {
        if !p.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
            path: p.clone(),
            source,
        })?;
        let v: Value = serde_norway::from_str(&text).map_err(|source| ConfigError::Parse {
            path: p.clone(),
            source,
        })?;
        return Ok(Some((p.clone(), v)));
    }
    Ok(None)
}

fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// Keys that belong inside `auth:` when they come flat (from `OS_*` variables).
const AUTH_KEYS: &[&str] = &[
    "auth_url",
    "username",
    "user_id",
    "password",
    "project_name",
    "project_id",
    "tenant_name",
    "tenant_id",
    "user_domain_name",
    "user_domain_id",
    "project_domain_name",
    "project_domain_id",
    "domain_name",
    "domain_id",
    "default_domain_id",
    "default_domain_name",
    "token",
    "auth_token",
    "application_credential_id",
    "application_credential_name",
    "application_credential_secret",
    "system_scope",
    "endpoint",
];

/// The cloud made of `OS_*` variables, or `None` when only selectors are set.
fn env_cloud(env: &BTreeMap<String, String>) -> Option<Value> {
    const SELECTORS: &[&str] = &[
        "OS_CLOUD",
        "OS_REGION_NAME",
        "OS_CLIENT_CONFIG_FILE",
        "OS_CLIENT_SECURE_FILE",
        "OS_CLOUD_NAME",
    ];
    let keys: Vec<&String> = env
        .keys()
        .filter(|k| k.starts_with("OS_") && !SELECTORS.contains(&k.as_str()))
        .filter(|k| !k.starts_with("OS_TEST") && !k.starts_with("OS_STD"))
        .filter(|k| !k.starts_with("OS_LOG"))
        .collect();
    if keys.is_empty() {
        return None;
    }
    let mut top = Mapping::new();
    let mut auth = Mapping::new();
    for k in keys {
        let key = k["OS_".len()..].to_lowercase();
        let val = Value::String(env.get(k).cloned().unwrap_or_default());
        if AUTH_KEYS.contains(&key.as_str()) {
            auth.insert(Value::String(key), val);
        } else {
            top.insert(Value::String(key), val);
        }
    }
    top.insert(Value::String("auth".into()), Value::Mapping(auth));
    Some(Value::Mapping(top))
}

fn get_str(m: &Value, keys: &[&str]) -> Option<String> {
    for k in keys {
        let alt = k.replace('_', "-");
        for key in [*k, alt.as_str()] {
            match m.get(key) {
                Some(Value::String(s)) if !s.is_empty() => return Some(s.clone()),
                Some(Value::Number(n)) => return Some(n.to_string()),
                Some(Value::Bool(b)) => return Some(b.to_string()),
                _ => {}
            }
        }
    }
    None
}

fn truthy(s: &str) -> bool {
    matches!(
        s.to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on" | "y"
    )
}

fn falsy(s: &str) -> bool {
    matches!(
        s.to_ascii_lowercase().as_str(),
        "0" | "false" | "no" | "off" | "n"
    )
}

/// `~/x` → `$HOME/x`, as openstacksdk's `expanduser` does for `cacert`, `cert` and `key`.
fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(p),
    }
}

/// The TLS settings of one cloud entry (see [`TlsOptions`]).
fn tls_options(entry: &Value) -> Result<TlsOptions, String> {
    // `verify` wins over `insecure`; a `verify` that is no boolean word is a CA bundle path
    // (requests' `verify=PATH`), never "off".
    let (verify, verify_path) = match (get_str(entry, &["verify"]), get_str(entry, &["insecure"])) {
        (Some(v), _) if truthy(&v) => (true, None),
        (Some(v), _) if falsy(&v) => (false, None),
        (Some(path), _) => (true, Some(expand_home(&path))),
        (None, Some(i)) => (!truthy(&i), None),
        (None, None) => (true, None),
    };
    let cacert = get_str(entry, &["cacert"]).map(|c| expand_home(&c));
    let client_cert = get_str(entry, &["cert"]).map(|c| expand_home(&c));
    let client_key = get_str(entry, &["key"]).map(|c| expand_home(&c));
    if client_key.is_some() && client_cert.is_none() {
        return Err(
            "`key` is set but `cert` is not; give the client certificate as `cert` (PEM), or \
             remove `key`"
                .into(),
        );
    }
    Ok(TlsOptions {
        verify,
        // openstacksdk: `cacert` is used when given, else the path given as `verify`.
        cacert: cacert.or(verify_path),
        client_cert,
        client_key,
    })
}

/// Whether `url`'s host is this machine (traffic that never leaves it).
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    }
}

/// Turns `http://host:5000` or `http://host:5000/v3/` into `http://host:5000/v3`.
pub fn keystone_v3_url(raw: &str) -> Result<Url, String> {
    let mut url = Url::parse(raw).map_err(|e| format!("auth_url `{raw}` is not a URL: {e}"))?;
    let path = url.path().trim_end_matches('/').to_owned();
    let last = path.rsplit('/').next().unwrap_or("");
    if last == "v2.0" {
        return Err(format!(
            "auth_url `{raw}` is Keystone v2.0; only v3 is supported"
        ));
    }
    let new_path = if last == "v3" {
        path
    } else {
        format!("{path}/v3")
    };
    url.set_path(&new_path);
    Ok(url)
}

/// The `auth:` section (and `auth_type`) of cloud `name`'s `entry` as an [`AuthMethod`].
fn auth_method(name: &str, entry: &Value) -> Result<AuthMethod, ConfigError> {
    let invalid = |what: String| ConfigError::Invalid {
        cloud: name.to_owned(),
        what,
    };
    let empty = Value::Mapping(Mapping::new());
    let auth = entry.get("auth").unwrap_or(&empty);
    let a = |keys: &[&str]| get_str(auth, keys).or_else(|| get_str(entry, keys));
    let auth_type = get_str(entry, &["auth_type", "auth_plugin"])
        .or_else(|| get_str(auth, &["auth_type"]))
        .unwrap_or_else(|| {
            if a(&["application_credential_secret"]).is_some() {
                "v3applicationcredential".into()
            } else if a(&["password"]).is_some() {
                "password".into()
            } else if a(&["token", "auth_token"]).is_some() {
                "token".into()
            } else {
                "password".into()
            }
        });
    let domain = |id_keys: &[&str], name_keys: &[&str]| -> Option<DomainRef> {
        a(id_keys)
            .map(DomainRef::Id)
            .or_else(|| a(name_keys).map(DomainRef::Name))
    };
    let default_domain = || {
        domain(
            &["default_domain_id", "domain_id"],
            &["default_domain_name", "domain_name"],
        )
        .unwrap_or_else(|| DomainRef::Id("default".into()))
    };
    let user_domain =
        || domain(&["user_domain_id"], &["user_domain_name"]).unwrap_or_else(default_domain);
    let user = || -> Option<UserRef> {
        if let Some(id) = a(&["user_id"]) {
            return Some(UserRef::Id(id));
        }
        a(&["username", "user_name"]).map(|n| UserRef::Name {
            name: n,
            domain: user_domain(),
        })
    };
    let scope = || -> Scope {
        if let Some(id) = a(&["project_id", "tenant_id"]) {
            return Scope::ProjectId(id);
        }
        if let Some(n) = a(&["project_name", "tenant_name"]) {
            let d = domain(&["project_domain_id"], &["project_domain_name"])
                .unwrap_or_else(default_domain);
            return Scope::ProjectName { name: n, domain: d };
        }
        if let Some(s) = a(&["system_scope"]) {
            if s == "all" {
                return Scope::System;
            }
        }
        if let Some(d) = domain(&["domain_id"], &["domain_name"]) {
            return Scope::Domain(d);
        }
        Scope::Unscoped
    };
    let auth_url = || -> Result<Url, ConfigError> {
        let raw = a(&["auth_url"]).ok_or_else(|| invalid("auth.auth_url is missing".into()))?;
        keystone_v3_url(&raw).map_err(invalid)
    };
    let method = match auth_type.as_str() {
        "password" | "v3password" => AuthMethod::Password {
            auth_url: auth_url()?,
            user: user()
                .ok_or_else(|| invalid("auth.username or auth.user_id is missing".into()))?,
            password: Secret::new(
                a(&["password"]).ok_or_else(|| invalid("auth.password is missing".into()))?,
            ),
            scope: scope(),
        },
        "v3applicationcredential" | "application_credential" => {
            AuthMethod::ApplicationCredential {
                auth_url: auth_url()?,
                id: a(&["application_credential_id"]),
                name: a(&["application_credential_name"]),
                user: user(),
                secret: Secret::new(a(&["application_credential_secret"]).ok_or_else(|| {
                    invalid("auth.application_credential_secret is missing".into())
                })?),
            }
        }
        "token" | "v3token" => AuthMethod::Token {
            auth_url: auth_url()?,
            token: Secret::new(
                a(&["token", "auth_token"])
                    .ok_or_else(|| invalid("auth.token is missing".into()))?,
            ),
            scope: scope(),
        },
        "admin_token" | "none" | "noauth" | "token_endpoint" => AuthMethod::Static {
            token: a(&["token", "auth_token"]).map(Secret::new),
        },
        "v2password" | "v2token" => {
            return Err(invalid(format!(
                "auth_type `{auth_type}` is Keystone v2.0; only v3 is supported"
            )))
        }
        other => return Err(invalid(format!("auth_type `{other}` is not supported"))),
    };
    Ok(method)
}

fn build(name: &str, entry: &Value, source: Option<PathBuf>) -> Result<CloudConfig, ConfigError> {
    let invalid = |what: String| ConfigError::Invalid {
        cloud: name.to_owned(),
        what,
    };
    if entry.get("profile").is_some() || entry.get("cloud").is_some() {
        return Err(invalid(
            "vendor profiles (`profile:`/`cloud:`) are not supported; write the auth settings out"
                .into(),
        ));
    }
    let method = auth_method(name, entry)?;
    let empty = Value::Mapping(Mapping::new());
    let auth = entry.get("auth").unwrap_or(&empty);
    let a = |keys: &[&str]| get_str(auth, keys).or_else(|| get_str(entry, keys));
    let interface = match get_str(entry, &["interface", "endpoint_type"]) {
        Some(s) => s.parse::<Interface>().map_err(invalid)?,
        None => Interface::Public,
    };
    let mut endpoint_overrides = BTreeMap::new();
    for st in ServiceType::ALL {
        for alias in st.aliases() {
            let key = format!("{}_endpoint_override", alias.replace('-', "_"));
            if let Some(u) = get_str(entry, &[key.as_str()]) {
                let url = Url::parse(&u).map_err(|e| invalid(format!("{key} `{u}`: {e}")))?;
                endpoint_overrides.entry(st).or_insert(url);
            }
        }
    }
    if let (AuthMethod::Static { .. }, Some(ep)) = (&method, a(&["endpoint"])) {
        // `token_endpoint` style: one endpoint for everything is not meaningful here.
        return Err(invalid(format!(
            "a single `endpoint` ({ep}) is ambiguous; use block_storage_endpoint_override and \
             image_endpoint_override"
        )));
    }
    let tls = tls_options(entry).map_err(invalid)?;
    let api_timeout = match get_str(entry, &["api_timeout"]) {
        None => None,
        Some(t) => match t.parse::<f64>() {
            Ok(secs) if secs > 0.0 && secs.is_finite() => {
                Some(std::time::Duration::from_secs_f64(secs))
            }
            _ => {
                return Err(invalid(format!(
                    "api_timeout `{t}` is not a positive number of seconds"
                )))
            }
        },
    };
    Ok(CloudConfig {
        name: name.to_owned(),
        auth: method,
        region_name: get_str(entry, &["region_name"]),
        interface,
        endpoint_overrides,
        tls,
        api_timeout,
        source,
    })
}

impl CloudConfig {
    /// The Keystone URL, if the cloud authenticates with Keystone.
    pub fn auth_url(&self) -> Option<&Url> {
        match &self.auth {
            AuthMethod::Password { auth_url, .. }
            | AuthMethod::ApplicationCredential { auth_url, .. }
            | AuthMethod::Token { auth_url, .. } => Some(auth_url),
            AuthMethod::Static { .. } => None,
        }
    }

    /// What is unsafe about how this cloud is reached, one sentence each: verification off,
    /// a CA bundle that is ignored because of it, credentials sent over plain `http://` to
    /// another machine. [`crate::OpenStackClient::connect`] logs each as a warning.
    pub fn security_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let from = match &self.source {
            Some(p) => format!(" in {}", p.display()),
            None => String::new(),
        };
        if !self.tls.verify {
            out.push(format!(
                "TLS certificate verification is OFF for cloud `{}` (`verify: false` or \
                 `insecure: true`{from}): anyone on the network path can impersonate the cloud \
                 and read the password and tokens; set `cacert` to the cloud's CA bundle instead",
                self.name
            ));
            if let Some(ca) = &self.tls.cacert {
                out.push(format!(
                    "cloud `{}`: `cacert` {} is ignored because verification is off",
                    self.name,
                    ca.display()
                ));
            }
        }
        let mut http: Vec<(&str, &Url)> = Vec::new();
        if let Some(u) = self.auth_url() {
            http.push(("auth_url", u));
        }
        for u in self.endpoint_overrides.values() {
            http.push(("endpoint override", u));
        }
        for (what, u) in http {
            if u.scheme() == "http" && !is_loopback(u) {
                out.push(format!(
                    "cloud `{}`: {what} {u} is plain http: the password and tokens cross the \
                     network unencrypted; use the https:// URL of the service",
                    self.name
                ));
            }
        }
        out
    }
}

impl fmt::Display for CloudConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cloud `{}`", self.name)?;
        if let Some(s) = &self.source {
            write!(f, " ({})", s.display())?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
