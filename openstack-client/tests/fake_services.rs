//! Error shapes the real services cannot be made to produce on demand: a token that expires
//! (401 → re-authenticate once), a token about to expire, a service that keeps refusing, a
//! 5xx, an endpoint nobody listens on. A tiny HTTP server on loopback plays Keystone and Cinder.

#![allow(clippy::unwrap_used)] // test code

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use openstack_client::{
    config::{DomainRef, Scope, UserRef},
    ApiRequest, AuthMethod, ClientOptions, CloudConfig, Error, Interface, Method, OpenStackClient,
    Secret, ServiceType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

struct Req {
    method: String,
    path: String,
    token: Option<String>,
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

fn resp(status: u16, body: &str) -> Resp {
    Resp {
        status,
        headers: vec![],
        body: body.into(),
    }
}

type Handler = Arc<dyn Fn(&Req) -> Resp + Send + Sync>;

async fn serve(handler: Handler) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let h = handler.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                loop {
                    let n = s.read(&mut tmp).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&tmp[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        let len = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        while buf.len() < end + 4 + len {
                            let n = s.read(&mut tmp).await.unwrap();
                            buf.extend_from_slice(&tmp[..n]);
                        }
                        let mut first = head.lines().next().unwrap().split(' ');
                        let req = Req {
                            method: first.next().unwrap().into(),
                            path: first.next().unwrap().into(),
                            token: head.lines().find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("x-auth-token")
                                    .then(|| v.trim().to_owned())
                            }),
                        };
                        let r = h(&req);
                        let mut out = format!(
                            "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n\
                             Content-Type: application/json\r\n",
                            r.status,
                            r.body.len()
                        );
                        for (k, v) in &r.headers {
                            out.push_str(&format!("{k}: {v}\r\n"));
                        }
                        out.push_str("\r\n");
                        out.push_str(&r.body);
                        s.write_all(out.as_bytes()).await.unwrap();
                        return;
                    }
                }
            });
        }
    });
    port
}

/// Keystone issuing `tok-1`, `tok-2`, ... that expire at `expires_at`, with a catalog whose
/// block-storage endpoint is `cinder_port`.
fn keystone(issued: Arc<AtomicU32>, cinder_port: u16, expires_at: String) -> Handler {
    Arc::new(move |r: &Req| {
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("POST", "/v3/auth/tokens")
        );
        let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
        let body = serde_json::json!({"token": {
            "expires_at": expires_at,
            "user": {"id": "u1", "name": "admin"},
            "project": {"id": "p1", "name": "admin"},
            "roles": [{"id": "r1", "name": "admin"}, {"id": "r2", "name": "member"}],
            "catalog": [{"type": "volumev3", "endpoints": [{"interface": "public",
                "region_id": "RegionOne", "url": format!("http://127.0.0.1:{cinder_port}/v3/p1")}]}]
        }});
        Resp {
            status: 201,
            headers: vec![("X-Subject-Token".into(), format!("tok-{n}"))],
            body: body.to_string(),
        }
    })
}

fn cloud(keystone_port: u16) -> CloudConfig {
    CloudConfig {
        name: "fake".into(),
        auth: AuthMethod::Password {
            auth_url: format!("http://127.0.0.1:{keystone_port}/v3")
                .parse()
                .unwrap(),
            user: UserRef::Name {
                name: "admin".into(),
                domain: DomainRef::Id("default".into()),
            },
            password: Secret::new("pw"),
            scope: Scope::ProjectName {
                name: "admin".into(),
                domain: DomainRef::Id("default".into()),
            },
        },
        region_name: None,
        interface: Interface::Public,
        endpoint_overrides: Default::default(),
        tls: Default::default(),
        api_timeout: None,
        source: None,
    }
}

fn later() -> String {
    "2099-01-01T00:00:00.000000Z".into()
}

fn volumes() -> ApiRequest {
    ApiRequest::new(ServiceType::BlockStorage, Method::GET, "volumes")
}

#[tokio::test]
async fn expired_token_gets_one_reauthentication() {
    let issued = Arc::new(AtomicU32::new(0));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let cinder = serve(Arc::new(move |r: &Req| {
        s2.lock().unwrap().push(r.token.clone().unwrap_or_default());
        assert_eq!(r.path, "/v3/p1/volumes");
        if r.token.as_deref() == Some("tok-1") {
            resp(401, r#"{"error": {"code": 401, "message": "The request you have made requires authentication."}}"#)
        } else {
            resp(200, r#"{"volumes": []}"#)
        }
    }))
    .await;
    let ks = serve(keystone(issued.clone(), cinder, later())).await;
    let c = OpenStackClient::connect(cloud(ks), ClientOptions::default())
        .await
        .unwrap();
    let v: serde_json::Value = c.send_json(&volumes()).await.unwrap();
    assert_eq!(v, serde_json::json!({"volumes": []}));
    assert_eq!(issued.load(Ordering::SeqCst), 2);
    assert_eq!(*seen.lock().unwrap(), vec!["tok-1", "tok-2"]);
    // The new token is kept.
    let _: serde_json::Value = c.send_json(&volumes()).await.unwrap();
    assert_eq!(issued.load(Ordering::SeqCst), 2);
    assert_eq!(c.token_info().await.unwrap().is_admin(), Some(true));
}

#[tokio::test]
async fn service_that_keeps_refusing_fails_after_one_retry() {
    let issued = Arc::new(AtomicU32::new(0));
    let cinder = serve(Arc::new(|_r: &Req| {
        resp(401, r#"{"error": {"code": 401, "message": "The request you have made requires authentication."}}"#)
    }))
    .await;
    let ks = serve(keystone(issued.clone(), cinder, later())).await;
    let c = OpenStackClient::connect(cloud(ks), ClientOptions::default())
        .await
        .unwrap();
    let e = c.send_empty(&volumes()).await.unwrap_err();
    let a = e.api().unwrap();
    assert_eq!(a.status, 401);
    assert!(a.message.contains("requires authentication"), "{e}");
    assert_eq!(issued.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn token_about_to_expire_is_renewed_before_use() {
    let issued = Arc::new(AtomicU32::new(0));
    let cinder = serve(Arc::new(|_r: &Req| resp(200, r#"{"volumes": []}"#))).await;
    // Expires in 30 s, inside the 120 s renewal margin.
    let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(30);
    let soon = soon
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let ks = serve(keystone(issued.clone(), cinder, soon)).await;
    let c = OpenStackClient::connect(cloud(ks), ClientOptions::default())
        .await
        .unwrap();
    assert_eq!(issued.load(Ordering::SeqCst), 1);
    c.send_empty(&volumes()).await.unwrap();
    assert_eq!(issued.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn server_error_keeps_message_and_request_id() {
    let issued = Arc::new(AtomicU32::new(0));
    let cinder = serve(Arc::new(|_r: &Req| Resp {
        status: 503,
        headers: vec![("X-Openstack-Request-Id".into(), "req-42".into())],
        body: r#"{"computeFault": {"code": 503, "message": "Service Unavailable"}}"#.into(),
    }))
    .await;
    let ks = serve(keystone(issued, cinder, later())).await;
    let c = OpenStackClient::connect(cloud(ks), ClientOptions::default())
        .await
        .unwrap();
    let e = c.send_empty(&volumes()).await.unwrap_err();
    let s = e.to_string();
    assert_eq!(e.api().unwrap().status, 503, "{s}");
    assert!(
        s.contains("Service Unavailable") && s.contains("req-42"),
        "{s}"
    );
}

#[tokio::test]
async fn unreachable_endpoint_names_the_url() {
    // A port that was just free: nobody listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let issued = Arc::new(AtomicU32::new(0));
    let ks = serve(keystone(issued, port, later())).await;
    let c = OpenStackClient::connect(cloud(ks), ClientOptions::default())
        .await
        .unwrap();
    let e = c.send_empty(&volumes()).await.unwrap_err();
    let s = e.to_string();
    eprintln!("unreachable error reads: {s}");
    assert!(matches!(e, Error::Unreachable { .. }), "{s}");
    assert!(
        s.contains(&format!(
            "cannot reach Cinder at http://127.0.0.1:{port}/v3/p1/volumes"
        )),
        "{s}"
    );

    let mut bad = cloud(port);
    bad.name = "nokeystone".into();
    let e = OpenStackClient::connect(bad, ClientOptions::default())
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains(&format!(
            "cannot reach Keystone at http://127.0.0.1:{port}/v3/auth/tokens"
        )),
        "{e}"
    );
}

#[tokio::test]
async fn static_token_without_keystone_uses_overrides() {
    let cinder = serve(Arc::new(|r: &Req| {
        if r.token.as_deref() == Some("admin:p1") {
            resp(200, r#"{"volumes": []}"#)
        } else {
            resp(401, "{}")
        }
    }))
    .await;
    let mut c = cloud(1);
    c.auth = AuthMethod::Static {
        token: Some(Secret::new("admin:p1")),
    };
    c.endpoint_overrides.insert(
        ServiceType::BlockStorage,
        format!("http://127.0.0.1:{cinder}/v3/p1").parse().unwrap(),
    );
    let client = OpenStackClient::connect(c, ClientOptions::default())
        .await
        .unwrap();
    client.send_empty(&volumes()).await.unwrap();
    assert_eq!(client.token_info().await.unwrap().is_admin(), None);
    let e = client
        .endpoint(ServiceType::Image)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("image_endpoint_override"), "{e}");
}

/// A static-token client whose block-storage endpoint is `http://127.0.0.1:{port}/v3/p1`.
async fn static_client(port: u16) -> OpenStackClient {
    let mut c = cloud(1);
    c.auth = AuthMethod::Static {
        token: Some(Secret::new("admin:p1")),
    };
    c.endpoint_overrides.insert(
        ServiceType::BlockStorage,
        format!("http://127.0.0.1:{port}/v3/p1").parse().unwrap(),
    );
    OpenStackClient::connect(c, ClientOptions::default())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_redirect_to_another_host_is_refused_and_the_token_never_sent_there() {
    let seen: Arc<std::sync::Mutex<Vec<Option<String>>>> = Default::default();
    let other = {
        let seen = seen.clone();
        serve(Arc::new(move |r: &Req| {
            seen.lock().unwrap().push(r.token.clone());
            resp(200, r#"{"volumes": []}"#)
        }))
        .await
    };
    let cinder = serve(Arc::new(move |_r: &Req| Resp {
        status: 307,
        headers: vec![(
            "Location".into(),
            format!("http://127.0.0.1:{other}/v3/p1/volumes"),
        )],
        body: String::new(),
    }))
    .await;
    let client = static_client(cinder).await;
    let e = client.send_empty(&volumes()).await.unwrap_err().to_string();
    assert!(e.contains("refusing to follow the redirect"), "{e}");
    assert!(e.contains(&format!("127.0.0.1:{other}")), "{e}");
    assert!(
        seen.lock().unwrap().is_empty(),
        "{:?}",
        seen.lock().unwrap()
    );
}

#[tokio::test]
async fn a_redirect_within_the_same_origin_is_followed() {
    let cinder = serve(Arc::new(|r: &Req| {
        if r.path.ends_with("/moved") && r.token.as_deref() == Some("admin:p1") {
            resp(200, r#"{"volumes": []}"#)
        } else {
            Resp {
                status: 307,
                headers: vec![("Location".into(), "/v3/p1/moved".into())],
                body: String::new(),
            }
        }
    }))
    .await;
    let client = static_client(cinder).await;
    client.send_empty(&volumes()).await.unwrap();
}

/// Keystone answering with a token body captured from a real Keystone (`make test-matrix`'s
/// clouds: Zed 22.0.2 on the host, 2025.1 27.0.0 from the trixie chroot), its Cinder URLs
/// moved to `cinder_port` and its expiry to [`later`].
fn captured_keystone(captured: &'static str, cinder_port: u16) -> Handler {
    let mut body: serde_json::Value = serde_json::from_str(captured).unwrap();
    body["token"]["expires_at"] = later().into();
    let body = body
        .to_string()
        .replace("127.0.0.1:8776/", &format!("127.0.0.1:{cinder_port}/"))
        .replace("127.0.0.1:8777/", &format!("127.0.0.1:{cinder_port}/"));
    Arc::new(move |r: &Req| {
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("POST", "/v3/auth/tokens")
        );
        Resp {
            status: 201,
            headers: vec![("X-Subject-Token".into(), "tok-captured".into())],
            body: body.clone(),
        }
    })
}

/// Connects with a captured token body (cloud region `region`); returns the client and the
/// path of the Cinder call it made.
async fn with_captured_token(captured: &'static str, region: &str) -> (OpenStackClient, String) {
    let seen = Arc::new(std::sync::Mutex::new(String::new()));
    let s2 = seen.clone();
    let cinder = serve(Arc::new(move |r: &Req| {
        assert_eq!(r.token.as_deref(), Some("tok-captured"));
        *s2.lock().unwrap() = r.path.clone();
        resp(200, r#"{"volumes": []}"#)
    }))
    .await;
    let ks = serve(captured_keystone(captured, cinder)).await;
    let mut cfg = cloud(ks);
    cfg.region_name = Some(region.into());
    let c = OpenStackClient::connect(cfg, ClientOptions::default())
        .await
        .unwrap();
    let _: serde_json::Value = c.send_json(&volumes()).await.unwrap();
    let path = seen.lock().unwrap().clone();
    (c, path)
}

#[tokio::test]
async fn a_keystone_2025_1_token_gives_the_admin_its_project_roles_and_its_regions_cinder() {
    let (c, path) = with_captured_token(
        include_str!("data/keystone-token-admin-2025.1.json"),
        "site-b",
    )
    .await;
    assert_eq!(path, "/v3/3505af0a5e7540fbbaa19355bd0d9fc8/volumes");
    let info = c.token_info().await.unwrap();
    assert_eq!(
        info.project_id.as_deref(),
        Some("3505af0a5e7540fbbaa19355bd0d9fc8")
    );
    // 2025.1 adds the implied role `manager` to an admin's token (Zed: admin, member,
    // reader); rbd-relay's checks ask only for admin/service
    let mut roles = info.roles.clone().unwrap();
    roles.sort();
    assert_eq!(roles, ["admin", "manager", "member", "reader"]);
    assert_eq!(info.is_admin(), Some(true));
    assert_eq!(info.is_admin_or_service(), Some(true));
    assert_eq!(
        c.endpoint(ServiceType::Image).await.unwrap().as_str(),
        "http://127.0.0.1:9293/"
    );
}

#[tokio::test]
async fn a_keystone_zed_token_as_captured_reads_the_same_way() {
    let (c, path) =
        with_captured_token(include_str!("data/keystone-token-admin-zed.json"), "site-a").await;
    assert_eq!(path, "/v3/2804992ead474c4ca20213de188379b2/volumes");
    let info = c.token_info().await.unwrap();
    let mut roles = info.roles.clone().unwrap();
    roles.sort();
    assert_eq!(roles, ["admin", "member", "reader"]);
    assert_eq!(info.is_admin(), Some(true));
}

#[test]
fn keystone_zed_and_2025_1_offer_the_same_identity_api_v3_14_which_the_client_calls_directly() {
    // The client does not negotiate the identity version: it posts to `<auth_url>/v3/auth/
    // tokens`. Both captured `/v3` documents name the same version and status.
    for doc in [
        include_str!("data/keystone-v3-zed.json"),
        include_str!("data/keystone-v3-2025.1.json"),
    ] {
        let v: serde_json::Value = serde_json::from_str(doc).unwrap();
        assert_eq!(v["version"]["id"], "v3.14");
        assert_eq!(v["version"]["status"], "stable");
    }
}
