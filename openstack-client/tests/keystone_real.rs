//! Against a real Keystone, Cinder and Glance: the auth methods (password from clouds.yaml,
//! token, application credential, static token with explicit endpoints), roles from the token,
//! catalog endpoints, and Keystone's refusal of a wrong password.
//!
//! The cloud comes from [`site`]: the project's test environment, or the clouds.yaml named by
//! `RBD_RELAY_TEST_CLOUDS_YAML`.

#![allow(clippy::unwrap_used)] // test code: a failed setup step should panic with its message

use std::collections::BTreeMap;

use openstack_client::{
    config::{DomainRef, Scope},
    ApiRequest, AuthMethod, ClientOptions, CloudConfig, ConfigSources, Error, Method,
    OpenStackClient, Secret, ServiceType,
};
use serde_json::{json, Value};

/// The cloud the tests use: the test environment's destination cloud, or the stack named by
/// `RBD_RELAY_TEST_CLOUDS_YAML` (see `testenv::test_cloud`).
fn site() -> Site {
    Site(testenv::test_cloud())
}

/// The shared test cloud, with this file's helpers.
#[derive(Clone, Copy)]
struct Site(&'static testenv::TestCloud);

impl std::ops::Deref for Site {
    type Target = testenv::TestCloud;
    fn deref(&self) -> &testenv::TestCloud {
        self.0
    }
}

impl Site {
    fn config(&self, cloud: &str) -> CloudConfig {
        let sources = ConfigSources {
            clouds_files: vec![self.clouds_yaml.clone()],
            ..Default::default()
        };
        CloudConfig::from_sources(&sources, Some(cloud)).unwrap()
    }

    async fn client(&self, cloud: &str) -> OpenStackClient {
        OpenStackClient::connect(self.config(cloud), ClientOptions::default())
            .await
            .unwrap()
    }

    /// A raw project-scoped token and user id for `cloud`'s password user (test plumbing).
    async fn raw_token(&self, cloud: &str) -> (String, String, url::Url) {
        let AuthMethod::Password {
            auth_url,
            user,
            password,
            scope,
        } = self.config(cloud).auth
        else {
            panic!("{cloud} is not a password cloud")
        };
        let openstack_client::config::UserRef::Name { name, domain } = user else {
            panic!()
        };
        let dom = |d: &DomainRef| match d {
            DomainRef::Id(i) => json!({"id": i}),
            DomainRef::Name(n) => json!({"name": n}),
        };
        let Scope::ProjectName {
            name: p,
            domain: pd,
        } = scope
        else {
            panic!()
        };
        let body = json!({"auth": {"identity": {"methods": ["password"], "password": {"user":
            {"name": name, "domain": dom(&domain), "password": password.expose()}}},
            "scope": {"project": {"name": p, "domain": dom(&pd)}}}});
        let r = reqwest::Client::new()
            .post(format!("{auth_url}/auth/tokens"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let tok = r.headers()["X-Subject-Token"].to_str().unwrap().to_owned();
        let v: Value = r.json().await.unwrap();
        (
            tok,
            v["token"]["user"]["id"].as_str().unwrap().to_owned(),
            auth_url,
        )
    }
}

#[tokio::test]
async fn admin_password_cloud_has_roles_and_endpoints() {
    let site = site();
    let c = site.client(&site.admin_cloud).await;
    let info = c.token_info().await.unwrap();
    assert_eq!(info.is_admin(), Some(true), "{info:?}");
    let pid = info.project_id.clone().unwrap();
    let cinder = c.endpoint(ServiceType::BlockStorage).await.unwrap();
    assert!(cinder.path().ends_with(&format!("/v3/{pid}")), "{cinder}");
    c.endpoint(ServiceType::Image).await.unwrap();
    let v: Value = c
        .send_json(
            &ApiRequest::new(ServiceType::BlockStorage, Method::GET, "volumes")
                .microversion("volume", "3.8"),
        )
        .await
        .unwrap();
    assert!(v["volumes"].is_array());
    let v: Value = c
        .send_json(&ApiRequest::new(
            ServiceType::Image,
            Method::GET,
            "v2/images",
        ))
        .await
        .unwrap();
    assert!(v["images"].is_array());
}

#[tokio::test]
async fn member_is_not_admin_and_os_cloud_selects() {
    let site = site();
    let sources = ConfigSources {
        clouds_files: vec![site.clouds_yaml.clone()],
        secure_files: vec![],
        env: BTreeMap::from([("OS_CLOUD".to_owned(), site.member_cloud.clone())]),
    };
    let cfg = CloudConfig::from_sources(&sources, None).unwrap();
    assert_eq!(cfg.name, site.member_cloud);
    let c = OpenStackClient::connect(cfg, ClientOptions::default())
        .await
        .unwrap();
    let info = c.token_info().await.unwrap();
    assert_eq!(info.is_admin(), Some(false), "{info:?}");
    assert_eq!(info.has_role("member"), Some(true));
}

#[tokio::test]
async fn wrong_password_keeps_keystones_message_and_hides_the_password() {
    let site = site();
    let mut cfg = site.config(&site.member_cloud);
    if let AuthMethod::Password { password, .. } = &mut cfg.auth {
        *password = Secret::new("definitely-wrong-pw");
    }
    let e = OpenStackClient::connect(cfg, ClientOptions::default())
        .await
        .unwrap_err();
    let s = format!("{e} {e:?}");
    assert!(matches!(e, Error::Auth { status: 401, .. }), "{s}");
    assert!(s.contains("requires authentication"), "{s}");
    assert!(!s.contains("definitely-wrong-pw"), "{s}");
}

#[tokio::test]
async fn token_and_application_credential_auth() {
    let site = site();
    let (tok, user_id, auth_url) = site.raw_token(&site.member_cloud).await;
    let member = site.config(&site.member_cloud);
    let AuthMethod::Password { scope, .. } = member.auth.clone() else {
        panic!()
    };

    // Token method: exchange the token for a scoped one with a catalog.
    let mut cfg = member.clone();
    cfg.auth = AuthMethod::Token {
        auth_url: auth_url.clone(),
        token: Secret::new(tok.clone()),
        scope,
    };
    let c = OpenStackClient::connect(cfg, ClientOptions::default())
        .await
        .unwrap();
    assert_eq!(c.token_info().await.unwrap().has_role("member"), Some(true));
    c.endpoint(ServiceType::BlockStorage).await.unwrap();

    // Application credential made by the member for itself.
    let http = reqwest::Client::new();
    let name = format!("rbd-relay-test-{}", std::process::id());
    let r = http
        .post(format!(
            "{auth_url}/users/{user_id}/application_credentials"
        ))
        .header("X-Auth-Token", &tok)
        .json(&json!({"application_credential": {"name": name}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    let id = v["application_credential"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let secret = v["application_credential"]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut cfg = member.clone();
    cfg.auth = AuthMethod::ApplicationCredential {
        auth_url: auth_url.clone(),
        id: Some(id.clone()),
        name: None,
        user: None,
        secret: Secret::new(secret),
    };
    let c = OpenStackClient::connect(cfg, ClientOptions::default())
        .await
        .unwrap();
    let info = c.token_info().await.unwrap();
    assert_eq!(info.has_role("member"), Some(true), "{info:?}");
    assert!(info.project_id.is_some());
    let listed: Result<Value, _> = c
        .send_json(&ApiRequest::new(
            ServiceType::BlockStorage,
            Method::GET,
            "volumes",
        ))
        .await;
    // Deleting the credential revokes its tokens: clean up only after using it.
    let del = http
        .delete(format!(
            "{auth_url}/users/{user_id}/application_credentials/{id}"
        ))
        .header("X-Auth-Token", &tok)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 204);
    assert!(listed.unwrap()["volumes"].is_array());
}

#[tokio::test]
async fn static_token_with_explicit_endpoints() {
    let site = site();
    let admin = site.client(&site.admin_cloud).await;
    let cinder = admin.endpoint(ServiceType::BlockStorage).await.unwrap();
    let (tok, _, _) = site.raw_token(&site.admin_cloud).await;
    let mut cfg = site.config(&site.admin_cloud);
    cfg.auth = AuthMethod::Static {
        token: Some(Secret::new(tok)),
    };
    cfg.endpoint_overrides
        .insert(ServiceType::BlockStorage, cinder);
    let c = OpenStackClient::connect(cfg, ClientOptions::default())
        .await
        .unwrap();
    assert_eq!(c.token_info().await.unwrap().roles, None);
    let v: Value = c
        .send_json(&ApiRequest::new(
            ServiceType::BlockStorage,
            Method::GET,
            "volumes",
        ))
        .await
        .unwrap();
    assert!(v["volumes"].is_array());
}

/// The real Keystone's `/v3` version document (its `links` aside: they name the host) must be
/// one of the documents captured from Keystone Zed and 2025.1 (`tests/data/keystone-v3-*.json`,
/// which `fake_services.rs` relies on), so a fixture that was never real, or a drift of the
/// real one, fails here. The client posts to `<auth_url>/v3/auth/tokens` without negotiating:
/// both captured documents offer v3.14.
#[tokio::test]
async fn the_real_keystones_v3_document_matches_a_captured_one() {
    let site = site();
    let AuthMethod::Password { auth_url, .. } = site.config(&site.admin_cloud).auth else {
        panic!("{} is not a password cloud", site.admin_cloud)
    };
    let real: Value = reqwest::get(auth_url.clone())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let without_links = |mut v: Value| {
        v["version"].as_object_mut().unwrap().remove("links");
        v
    };
    let captured: Vec<(&str, Value)> = [
        ("zed", include_str!("data/keystone-v3-zed.json")),
        ("2025.1", include_str!("data/keystone-v3-2025.1.json")),
    ]
    .into_iter()
    .map(|(r, d)| (r, without_links(serde_json::from_str(d).unwrap())))
    .collect();
    let real = without_links(real);
    let matched: Vec<&str> = captured
        .iter()
        .filter(|(_, d)| *d == real)
        .map(|(r, _)| *r)
        .collect();
    eprintln!("keystone at {auth_url}: {real}; matches the captured {matched:?}");
    assert!(!matched.is_empty(), "{real} matches no captured document");
    assert_eq!(real["version"]["id"], "v3.14");
}
