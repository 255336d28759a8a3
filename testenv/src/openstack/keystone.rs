//! The one Keystone both clouds share: configuration, `keystone-manage` preparation, the
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
use std::process::Command;
use std::thread;
use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::Method;
use serde_json::{json, Value};

use super::process::{self, Daemon};
use super::{Error, KEYSTONE_PORT};

/// Password of `admin` (test-only).
pub(crate) const ADMIN_PASSWORD: &str = "admin-secret";
/// Password of `member` (test-only).
pub(crate) const MEMBER_PASSWORD: &str = "member-secret";
/// Password of the service users `cinder` and `glance` (test-only).
pub(crate) const SERVICE_PASSWORD: &str = "service-secret";

/// Keystone's base URL (without `/v3`).
pub(crate) fn base_url() -> String {
    format!("http://127.0.0.1:{KEYSTONE_PORT}")
}

/// The directory of Keystone's files.
pub(crate) fn dir(root: &Path) -> PathBuf {
    root.join("keystone")
}

/// The daemon record.
pub(crate) fn daemon(root: &Path) -> Daemon {
    Daemon::new(root, "keystone")
}

fn conf_path(root: &Path) -> PathBuf {
    dir(root).join("keystone.conf")
}

/// Writes keystone.conf.
pub(crate) fn write_conf(root: &Path) -> Result<(), Error> {
    let d = dir(root);
    for sub in ["log", "fernet-keys", "credential-keys"] {
        let p = d.join(sub);
        std::fs::create_dir_all(&p).map_err(|e| Error::io("create", &p, e))?;
    }
    let d = d.display();
    super::write(
        &conf_path(root),
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

fn manage(root: &Path, args: &[&str]) -> Result<(), Error> {
    process::run(
        Command::new("keystone-manage")
            .arg("--config-file")
            .arg(conf_path(root))
            .args(args),
    )
    .map(|_| ())
}

/// db_sync + WAL + bootstrap (admin user, `region` and identity endpoints), fernet_setup and
/// credential_setup, the three chains in parallel.
pub(crate) fn prepare(root: &Path, region: &str) -> Result<(), Error> {
    let url = format!("{}/v3", base_url());
    let db = dir(root).join("keystone.sqlite");
    thread::scope(|s| {
        let db_chain = s.spawn(|| -> Result<(), Error> {
            manage(root, &["db_sync"])?;
            super::sqlite_wal(&db)?;
            manage(
                root,
                &[
                    "bootstrap",
                    "--bootstrap-password",
                    ADMIN_PASSWORD,
                    "--bootstrap-region-id",
                    region,
                    "--bootstrap-admin-url",
                    &url,
                    "--bootstrap-internal-url",
                    &url,
                    "--bootstrap-public-url",
                    &url,
                ],
            )
        });
        let fernet = s.spawn(|| {
            manage(
                root,
                &[
                    "fernet_setup",
                    "--keystone-user",
                    "root",
                    "--keystone-group",
                    "root",
                ],
            )
        });
        let cred = s.spawn(|| {
            manage(
                root,
                &[
                    "credential_setup",
                    "--keystone-user",
                    "root",
                    "--keystone-group",
                    "root",
                ],
            )
        });
        for h in [db_chain, fernet, cred] {
            h.join().map_err(|_| Error::Panicked("keystone-manage"))??;
        }
        Ok(())
    })
}

/// Starts the daemon.
pub(crate) fn start(root: &Path) -> Result<(), Error> {
    let envs = vec![(
        "OS_KEYSTONE_CONFIG_FILES".to_string(),
        conf_path(root).display().to_string(),
    )];
    daemon(root).start(
        Path::new("/usr/bin/keystone-wsgi-public"),
        &[
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            KEYSTONE_PORT.to_string(),
        ],
        &envs,
    )?;
    Ok(())
}

/// Does Keystone answer `GET /v3`?
pub(crate) fn responds(http: &Client) -> bool {
    http.get(format!("{}/v3", base_url()))
        .timeout(Duration::from_secs(2))
        .send()
        .map(|r| r.status().is_success())
        .unwrap_or(false)
}

/// Waits until Keystone answers, failing fast if it died.
pub(crate) fn wait_ready(root: &Path, http: &Client, timeout: Duration) -> Result<(), Error> {
    let dmn = daemon(root);
    process::wait_for("keystone API", timeout, Duration::from_millis(200), || {
        if responds(http) {
            return Ok(true);
        }
        dmn.ensure_running()?;
        Ok(false)
    })
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
    user: &str,
    password: &str,
    project: &str,
) -> Result<Token, Error> {
    let url = format!("{}/v3/auth/tokens", base_url());
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

    /// Id of the first `collection` entry listed by `query`, else of a new one from `body`.
    fn ensure(
        &self,
        collection: &str,
        query: &str,
        item: &str,
        body: Value,
    ) -> Result<String, Error> {
        let listed = self.get(&format!("/{collection}?{query}"))?;
        if let Some(id) = listed[collection]
            .as_array()
            .and_then(|a| a.first())
            .and_then(|x| x["id"].as_str())
        {
            return Ok(id.to_string());
        }
        let created = self.post(&format!("/{collection}"), json!({ item: body }))?;
        created[item]["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| Error::BadResponse {
                url: format!("{}/{collection}", self.v3),
                detail: format!("no {item}.id in the response"),
            })
    }

    fn project(&self, name: &str, description: &str) -> Result<String, Error> {
        self.ensure(
            "projects",
            &format!("name={name}&domain_id=default"),
            "project",
            json!({"name": name, "domain_id": "default", "description": description}),
        )
    }
    fn role(&self, name: &str) -> Result<String, Error> {
        self.ensure(
            "roles",
            &format!("name={name}"),
            "role",
            json!({ "name": name }),
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
    fn region(&self, id: &str) -> Result<(), Error> {
        let listed = self.get("/regions")?;
        let exists = listed["regions"]
            .as_array()
            .is_some_and(|a| a.iter().any(|r| r["id"].as_str() == Some(id)));
        if !exists {
            self.post("/regions", json!({"region": {"id": id}}))?;
        }
        Ok(())
    }
    fn service(&self, stype: &str, name: &str) -> Result<String, Error> {
        let listed = self.get(&format!("/services?type={stype}"))?;
        if let Some(id) = listed["services"].as_array().and_then(|a| {
            a.iter()
                .find(|s| s["name"].as_str() == Some(name))
                .and_then(|s| s["id"].as_str())
        }) {
            return Ok(id.to_string());
        }
        let created = self.post(
            "/services",
            json!({"service": {"name": name, "type": stype, "enabled": true}}),
        )?;
        created["service"]["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| Error::BadResponse {
                url: format!("{}/services", self.v3),
                detail: "no service.id in the response".into(),
            })
    }
    fn endpoints(
        &self,
        service: &str,
        region: &str,
        url: &str,
        interfaces: &[&str],
    ) -> Result<(), Error> {
        let listed = self.get(&format!(
            "/endpoints?service_id={service}&region_id={region}"
        ))?;
        let have: Vec<&str> = listed["endpoints"]
            .as_array()
            .map(|a| a.iter().filter_map(|e| e["interface"].as_str()).collect())
            .unwrap_or_default();
        for itf in interfaces {
            if !have.contains(itf) {
                self.post(
                    "/endpoints",
                    json!({"endpoint": {"service_id": service, "interface": itf,
                                        "url": url, "region_id": region}}),
                )?;
            }
        }
        Ok(())
    }
}

/// Creates (if missing) the projects `service` and `demo`, the role `service`, the service
/// users `cinder`/`glance` (admin + service in `service`), the user `member` (member in
/// `demo`), the regions, an identity endpoint in every region (keystonemiddleware looks its
/// identity endpoint up in its own region), and per region the Cinder (`volumev3` and
/// `block-storage`) and Glance (`image`) endpoints, public and internal.
pub(crate) fn init(http: &Client, regions: &[RegionServices]) -> Result<Ids, Error> {
    let t = issue_token(http, "admin", ADMIN_PASSWORD, "admin")?;
    let a = Admin {
        http,
        token: t.token,
        v3: format!("{}/v3", base_url()),
    };
    let service = a.project("service", "service users")?;
    let demo = a.project("demo", "non-admin test project")?;
    let admin_role = a.role("admin")?;
    let member_role = a.role("member")?;
    let service_role = a.role("service")?;
    for name in ["cinder", "glance"] {
        let u = a.user(name, SERVICE_PASSWORD, &service)?;
        a.grant(&service, &u, &admin_role)?;
        a.grant(&service, &u, &service_role)?;
    }
    let m = a.user("member", MEMBER_PASSWORD, &demo)?;
    a.grant(&demo, &m, &member_role)?;

    let identity = a.service("identity", "keystone")?;
    let volumev3 = a.service("volumev3", "cinderv3")?;
    let block = a.service("block-storage", "cinder")?;
    let image = a.service("image", "glance")?;
    let ks = format!("{}/v3", base_url());
    for r in regions {
        a.region(&r.region)?;
        a.endpoints(&identity, &r.region, &ks, &["public", "internal", "admin"])?;
        let cinder = format!("{}/v3/%(project_id)s", r.cinder);
        a.endpoints(&volumev3, &r.region, &cinder, &["public", "internal"])?;
        a.endpoints(&block, &r.region, &cinder, &["public", "internal"])?;
        a.endpoints(&image, &r.region, &r.glance, &["public", "internal"])?;
    }
    Ok(Ids {
        admin_project: t.project_id,
        member_project: demo,
    })
}

/// The `[keystone_authtoken]` section for a service user of `region`.
pub(crate) fn authtoken_section(user: &str, region: &str) -> String {
    let url = base_url();
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
