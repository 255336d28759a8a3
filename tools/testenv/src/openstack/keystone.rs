//! The Keystones of the test environment (the host's, and a newer destination cloud's own):
//! configuration, `keystone-manage` preparation, the
//! daemon, and the initial contents created over its HTTP API.
//!
//! Test-only settings that matter (measured on the reference stack): sqlite in WAL mode
//! (Keystone leaks a read connection after token requests; with the default rollback journal
//! the next write fails "database is locked"), fernet tokens, an in-process dogpile cache
//! (token validation 330-540 ms -> ~13 ms) and `password_hash_rounds = 4` (token issue
//! 210 ms -> ~12 ms). `keystone-manage` costs ~2 s of CPU per call, so the three independent
//! calls (db_sync then bootstrap; fernet_setup; credential_setup) run in parallel. The daemon
//! is pbr's `keystone-wsgi-public` (wsgiref, single-threaded): enough for a test cloud.

use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::Method;
use serde_json::{json, Value};

use super::process::{self, Daemon};
use super::{Error, DESTINATION_KEYSTONE_PORT, KEYSTONE_PORT};

/// Password of `admin` (test-only).
pub(crate) const ADMIN_PASSWORD: &str = "admin-secret";
/// Password of `member` (test-only).
pub(crate) const MEMBER_PASSWORD: &str = "member-secret";
/// Password of the service users `cinder` and `glance` (test-only).
pub(crate) const SERVICE_PASSWORD: &str = "service-secret";

/// One Keystone of the test environment: the host's, which the source cloud uses (and the
/// destination cloud too when it runs the host's OpenStack), or the destination cloud's own,
/// run from the chroot of its newer OpenStack release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Keystone {
    /// Name of its directory and daemon record (`keystone`, `keystone-dst`).
    pub(crate) name: &'static str,
    /// Its port on 127.0.0.1.
    pub(crate) port: u16,
    /// The region `keystone-manage bootstrap` creates (the first cloud it serves).
    pub(crate) region: String,
    /// The Debian root file system it runs from, `None` for the host's packages.
    pub(crate) chroot: Option<PathBuf>,
}

/// Name of the host's Keystone (directory and daemon record).
pub(crate) const HOST_NAME: &str = "keystone";
/// Name of the destination cloud's own Keystone.
pub(crate) const DESTINATION_NAME: &str = "keystone-dst";

impl Keystone {
    /// The host's Keystone, on [`KEYSTONE_PORT`].
    pub(crate) fn host(region: &str) -> Self {
        Keystone {
            name: HOST_NAME,
            port: KEYSTONE_PORT,
            region: region.to_string(),
            chroot: None,
        }
    }

    /// The destination cloud's own Keystone from `chroot`, on [`DESTINATION_KEYSTONE_PORT`].
    pub(crate) fn destination(region: &str, chroot: &Path) -> Self {
        Keystone {
            name: DESTINATION_NAME,
            port: DESTINATION_KEYSTONE_PORT,
            region: region.to_string(),
            chroot: Some(chroot.to_path_buf()),
        }
    }

    /// Its base URL (without `/v3`).
    pub(crate) fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The directory of its files.
    pub(crate) fn dir(&self, root: &Path) -> PathBuf {
        root.join(self.name)
    }

    /// The daemon record.
    pub(crate) fn daemon(&self, root: &Path) -> Daemon {
        Daemon::new(root, self.name)
    }

    fn conf_path(&self, root: &Path) -> PathBuf {
        self.dir(root).join("keystone.conf")
    }

    /// Writes keystone.conf.
    pub(crate) fn write_conf(&self, root: &Path) -> Result<(), Error> {
        let d = self.dir(root);
        for sub in ["log", "fernet-keys", "credential-keys"] {
            let p = d.join(sub);
            std::fs::create_dir_all(&p).map_err(|e| Error::io("create", &p, e))?;
        }
        let d = d.display();
        super::write(
            &self.conf_path(root),
            &format!(
                "[DEFAULT]\n\
                 debug = false\n\
                 log_file = {d}/log/keystone.log\n\
                 use_stderr = false\n\
                 [database]\n\
                 connection = sqlite:///{d}/keystone.sqlite\n\
                 [token]\n\
                 provider = fernet\n\
                 [fernet_tokens]\n\
                 key_repository = {d}/fernet-keys\n\
                 [fernet_receipts]\n\
                 # fernet_setup initialises this one too (default /etc/keystone/fernet-keys!)\n\
                 key_repository = {d}/fernet-keys\n\
                 [credential]\n\
                 key_repository = {d}/credential-keys\n\
                 [identity]\n\
                 # bcrypt cost of stored passwords (production 12 = ~0.2 s per token issue)\n\
                 password_hash_rounds = 4\n\
                 [cache]\n\
                 enabled = true\n\
                 backend = dogpile.cache.memory\n"
            ),
        )
    }

    fn manage(&self, root: &Path, args: &[&str]) -> Result<(), Error> {
        process::run(
            super::command_in(
                self.chroot.as_deref(),
                Path::new("/usr/bin/keystone-manage"),
            )
            .arg("--config-file")
            .arg(self.conf_path(root))
            .args(args),
        )
        .map(|_| ())
    }

    /// In parallel: db_sync + WAL (or the cached migrated schema), fernet_setup and
    /// credential_setup; once schema and fernet keys exist, `bootstrap` (admin user, its
    /// region, identity endpoints) and the daemon's start overlap. Returns when all are done
    /// (the daemon may still be importing). `cache` must be keyed by the packages this
    /// Keystone runs (the chroot's for a chroot's Keystone).
    pub(crate) fn prepare(&self, root: &Path, cache: &super::SchemaCache) -> Result<(), Error> {
        let url = format!("{}/v3", self.base_url());
        let db = self.dir(root).join("keystone.sqlite");
        thread::scope(|s| {
            let schema = s.spawn(|| {
                cache.migrated("keystone", &db, || {
                    self.manage(root, &["db_sync"])?;
                    super::sqlite_wal(&db)
                })
            });
            let setup = |what: &'static str| {
                s.spawn(move || {
                    self.manage(
                        root,
                        &[what, "--keystone-user", "root", "--keystone-group", "root"],
                    )
                })
            };
            let fernet = setup("fernet_setup");
            let cred = setup("credential_setup");
            let join = |h: thread::ScopedJoinHandle<'_, Result<(), Error>>| {
                h.join()
                    .map_err(|_| Error::ThreadPanicked("keystone-manage".into()))?
            };
            // bootstrap refuses to run without fernet keys ("fernet-keys does not contain
            // keys"): with a cached schema it would otherwise race fernet_setup and lose
            join(schema)?;
            join(fernet)?;
            let boot = s.spawn(|| {
                self.manage(
                    root,
                    &[
                        "bootstrap",
                        "--bootstrap-password",
                        ADMIN_PASSWORD,
                        "--bootstrap-region-id",
                        &self.region,
                        "--bootstrap-admin-url",
                        &url,
                        "--bootstrap-internal-url",
                        &url,
                        "--bootstrap-public-url",
                        &url,
                    ],
                )
            });
            // The daemon needs the schema and the fernet keys to start: its ~2 s of imports
            // then overlap the bootstrap (nothing asks it for a token before this returns).
            self.start(root)?;
            join(boot)?;
            join(cred)
        })
    }

    /// Starts the daemon (through `chroot` for a chroot's Keystone: the state directory is
    /// mounted there at its host path).
    pub(crate) fn start(&self, root: &Path) -> Result<(), Error> {
        let envs = vec![(
            "OS_KEYSTONE_CONFIG_FILES".to_string(),
            self.conf_path(root).display().to_string(),
        )];
        let (program, args) = super::in_root(
            self.chroot.as_deref(),
            Path::new("/usr/bin/keystone-wsgi-public"),
            &[
                "--host".into(),
                "127.0.0.1".into(),
                "--port".into(),
                self.port.to_string(),
            ],
        );
        self.daemon(root).start(&program, &args, &envs)?;
        Ok(())
    }

    /// Does it answer `GET /v3`?
    pub(crate) fn responds(&self, http: &Client) -> bool {
        http.get(format!("{}/v3", self.base_url()))
            .timeout(Duration::from_secs(2))
            .send()
            .map(|r| r.status().is_success())
            .unwrap_or(false)
    }

    /// Waits until it answers, failing fast if it died.
    pub(crate) fn wait_ready(
        &self,
        root: &Path,
        http: &Client,
        timeout: Duration,
    ) -> Result<(), Error> {
        let dmn = self.daemon(root);
        process::wait_for(
            &format!("{} API", self.name),
            timeout,
            Duration::from_millis(200),
            || {
                if self.responds(http) {
                    return Ok(true);
                }
                dmn.ensure_running()?;
                Ok(false)
            },
        )
    }

    /// The `[keystone_authtoken]` section for a service user of `region`.
    pub(crate) fn authtoken_section(&self, user: &str, region: &str) -> String {
        let url = self.base_url();
        format!(
            "[keystone_authtoken]\n\
             www_authenticate_uri = {url}\n\
             auth_url = {url}\n\
             auth_type = password\n\
             username = {user}\n\
             password = {SERVICE_PASSWORD}\n\
             user_domain_name = Default\n\
             project_name = service\n\
             project_domain_name = Default\n\
             region_name = {region}\n\
             interface = public\n\
             service_token_roles_required = true\n"
        )
    }
}

/// A project-scoped token and the project's id.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub(crate) token: String,
    pub(crate) project_id: String,
}

/// Issues a project-scoped token for `user` (domain Default) in `project`.
pub(crate) fn issue_token(
    http: &Client,
    keystone: &Keystone,
    user: &str,
    password: &str,
    project: &str,
) -> Result<Token, Error> {
    let url = format!("{}/v3/auth/tokens", keystone.base_url());
    let body = json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"id": "default"}, "password": password}}},
        "scope": {"project": {"name": project, "domain": {"id": "default"}}}}});
    let resp = http
        .post(&url)
        .json(&body)
        .send()
        .map_err(|e| Error::http("POST", &url, e))?;
    let status = resp.status();
    let token = resp
        .headers()
        .get("x-subject-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = resp.text().map_err(|e| Error::http("POST", &url, e))?;
    if !status.is_success() {
        return Err(Error::HttpStatus {
            method: "POST".into(),
            url,
            status: status.as_u16(),
            body: process::tail(&text, 500),
        });
    }
    let v: Value = serde_json::from_str(&text).map_err(|e| Error::BadResponse {
        url: url.clone(),
        detail: e.to_string(),
    })?;
    let project_id = v["token"]["project"]["id"].as_str().map(str::to_string);
    match (token, project_id) {
        (Some(token), Some(project_id)) => Ok(Token { token, project_id }),
        _ => Err(Error::BadResponse {
            url,
            detail: "no X-Subject-Token header or token.project.id".into(),
        }),
    }
}

/// A JSON call with a token; returns the parsed body (`Null` for an empty one).
pub(crate) fn call(
    http: &Client,
    token: &str,
    method: Method,
    url: &str,
    body: Option<&Value>,
) -> Result<Value, Error> {
    let m = method.to_string();
    let mut req = http
        .request(method, url)
        .header("X-Auth-Token", token)
        .header("Accept", "application/json");
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().map_err(|e| Error::http(&m, url, e))?;
    let status = resp.status();
    let text = resp.text().map_err(|e| Error::http(&m, url, e))?;
    if !status.is_success() {
        return Err(Error::HttpStatus {
            method: m.clone(),
            url: url.to_string(),
            status: status.as_u16(),
            body: process::tail(&text, 500),
        });
    }
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text).map_err(|e| Error::BadResponse {
        url: url.to_string(),
        detail: e.to_string(),
    })
}

/// The Cinder and Glance URLs of one region, for the catalog.
#[derive(Debug, Clone)]
pub(crate) struct RegionServices {
    pub(crate) region: String,
    /// Cinder's root URL (`http://127.0.0.1:8776`).
    pub(crate) cinder: String,
    /// Glance's root URL.
    pub(crate) glance: String,
}

/// Ids the rest of the set-up needs.
#[derive(Debug, Clone)]
pub(crate) struct Ids {
    pub(crate) admin_project: String,
    pub(crate) member_project: String,
}

struct Admin<'a> {
    http: &'a Client,
    token: String,
    v3: String,
}

impl Admin<'_> {
    fn get(&self, path: &str) -> Result<Value, Error> {
        call(
            self.http,
            &self.token,
            Method::GET,
            &format!("{}{path}", self.v3),
            None,
        )
    }
    fn post(&self, path: &str, body: Value) -> Result<Value, Error> {
        call(
            self.http,
            &self.token,
            Method::POST,
            &format!("{}{path}", self.v3),
            Some(&body),
        )
    }
    fn put(&self, path: &str) -> Result<(), Error> {
        call(
            self.http,
            &self.token,
            Method::PUT,
            &format!("{}{path}", self.v3),
            None,
        )
        .map(|_| ())
    }

    /// Creates a `collection` entry from `body`; if it exists (409), the id of the first
    /// entry listed by `query`. (A fresh Keystone never conflicts: one call per entry.)
    fn ensure(
        &self,
        collection: &str,
        query: &str,
        item: &str,
        body: Value,
    ) -> Result<String, Error> {
        let id = match self.post(&format!("/{collection}"), json!({ item: body })) {
            Ok(created) => created[item]["id"].as_str().map(str::to_string),
            Err(Error::HttpStatus { status: 409, .. }) => {
                let listed = self.get(&format!("/{collection}?{query}"))?;
                listed[collection]
                    .as_array()
                    .and_then(|a| a.first())
                    .and_then(|x| x["id"].as_str())
                    .map(str::to_string)
            }
            Err(e) => return Err(e),
        };
        id.ok_or_else(|| Error::BadResponse {
            url: format!("{}/{collection}", self.v3),
            detail: format!("no {item}.id in the response"),
        })
    }

    /// `(id, name-ish key)` pairs of a listed collection.
    fn list(
        &self,
        collection: &str,
        key: impl Fn(&Value) -> String,
    ) -> Result<Vec<(String, String)>, Error> {
        let listed = self.get(&format!("/{collection}"))?;
        Ok(listed[collection]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x["id"].as_str().map(|id| (id.to_string(), key(x))))
                    .collect()
            })
            .unwrap_or_default())
    }

    fn project(&self, name: &str, description: &str) -> Result<String, Error> {
        self.ensure(
            "projects",
            &format!("name={name}&domain_id=default"),
            "project",
            json!({"name": name, "domain_id": "default", "description": description}),
        )
    }
    fn user(&self, name: &str, password: &str, project: &str) -> Result<String, Error> {
        self.ensure(
            "users",
            &format!("name={name}&domain_id=default"),
            "user",
            json!({"name": name, "domain_id": "default", "password": password,
                   "default_project_id": project}),
        )
    }
    fn grant(&self, project: &str, user: &str, role: &str) -> Result<(), Error> {
        self.put(&format!("/projects/{project}/users/{user}/roles/{role}"))
    }
    fn created_id(&self, collection: &str, item: &str, body: Value) -> Result<String, Error> {
        let created = self.post(&format!("/{collection}"), json!({ item: body }))?;
        created[item]["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| Error::BadResponse {
                url: format!("{}/{collection}", self.v3),
                detail: format!("no {item}.id in the response"),
            })
    }
}

fn find<'a>(have: &'a [(String, String)], key: &str) -> Option<&'a str> {
    have.iter()
        .find(|(_, k)| k == key)
        .map(|(id, _)| id.as_str())
}

/// Creates (if missing) the projects `service` and `demo`, the role `service`, the service
/// users `cinder`/`glance` (admin + service in `service`), the user `member` (member in
/// `demo`), the regions, an identity endpoint in every region (keystonemiddleware looks its
/// identity endpoint up in its own region), and per region the Cinder (`volumev3` and
/// `block-storage`) and Glance (`image`) endpoints, public and internal.
pub(crate) fn init(
    http: &Client,
    keystone: &Keystone,
    regions: &[RegionServices],
) -> Result<Ids, Error> {
    let t = issue_token(http, keystone, "admin", ADMIN_PASSWORD, "admin")?;
    let a = Admin {
        http,
        token: t.token,
        v3: format!("{}/v3", keystone.base_url()),
    };
    let service = a.project("service", "service users")?;
    let demo = a.project("demo", "non-admin test project")?;
    let mut roles = a.list("roles", |r| r["name"].as_str().unwrap_or("").to_string())?;
    let mut role = |name: &str| -> Result<String, Error> {
        if let Some(id) = find(&roles, name) {
            return Ok(id.to_string());
        }
        let id = a.created_id("roles", "role", json!({ "name": name }))?;
        roles.push((id.clone(), name.to_string()));
        Ok(id)
    };
    let admin_role = role("admin")?;
    let member_role = role("member")?;
    let service_role = role("service")?;
    for name in ["cinder", "glance"] {
        let u = a.user(name, SERVICE_PASSWORD, &service)?;
        a.grant(&service, &u, &admin_role)?;
        a.grant(&service, &u, &service_role)?;
    }
    let m = a.user("member", MEMBER_PASSWORD, &demo)?;
    a.grant(&demo, &m, &member_role)?;

    let services = a.list("services", |s| {
        format!(
            "{}/{}",
            s["type"].as_str().unwrap_or(""),
            s["name"].as_str().unwrap_or("")
        )
    })?;
    let service_id = |stype: &str, name: &str| -> Result<String, Error> {
        match find(&services, &format!("{stype}/{name}")) {
            Some(id) => Ok(id.to_string()),
            None => a.created_id(
                "services",
                "service",
                json!({"name": name, "type": stype, "enabled": true}),
            ),
        }
    };
    let identity = service_id("identity", "keystone")?;
    let volumev3 = service_id("volumev3", "cinderv3")?;
    let block = service_id("block-storage", "cinder")?;
    let image = service_id("image", "glance")?;
    let have_regions = a.list("regions", |_| String::new())?;
    let endpoints = a.list("endpoints", |e| {
        format!(
            "{}/{}/{}",
            e["service_id"].as_str().unwrap_or(""),
            e["region_id"].as_str().unwrap_or(""),
            e["interface"].as_str().unwrap_or("")
        )
    })?;
    let ks = format!("{}/v3", keystone.base_url());
    for r in regions {
        if !have_regions.iter().any(|(id, _)| *id == r.region) {
            a.post("/regions", json!({"region": {"id": r.region}}))?;
        }
        let cinder = format!("{}/v3/%(project_id)s", r.cinder);
        let wanted: [(&str, &str, &[&str]); 4] = [
            (&identity, &ks, &["public", "internal", "admin"]),
            (&volumev3, &cinder, &["public", "internal"]),
            (&block, &cinder, &["public", "internal"]),
            (&image, &r.glance, &["public", "internal"]),
        ];
        for (svc, url, interfaces) in wanted {
            for itf in interfaces {
                if find(&endpoints, &format!("{svc}/{}/{itf}", r.region)).is_none() {
                    a.post(
                        "/endpoints",
                        json!({"endpoint": {"service_id": svc, "interface": itf,
                                            "url": url, "region_id": r.region}}),
                    )?;
                }
            }
        }
    }
    Ok(Ids {
        admin_project: t.project_id,
        member_project: demo,
    })
}
