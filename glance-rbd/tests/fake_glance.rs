//! A Glance configured with `show_multiple_locations = False` cannot be had from the test
//! clouds (they need locations), so a tiny loopback HTTP server plays one: registration must
//! then fail with a clear error and leave the record it created (it cannot be shown to be
//! empty, and Glance's delete would delete the RBD data of a location it hides).

#![allow(clippy::unwrap_used)] // test code

use std::sync::{Arc, Mutex};

use glance_rbd::{CreateImage, Error, Glance, RbdLocation, RegisterRbdImage};
use openstack_client::{
    AuthMethod, ClientOptions, CloudConfig, Interface, OpenStackClient, Secret, ServiceType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

type Log = Arc<Mutex<Vec<String>>>;

/// Serves `(status, body)` from `route(method, path)`, logging `METHOD path`.
async fn serve(log: Log, route: fn(&str, &str) -> (u16, String)) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                let end = loop {
                    let n = s.read(&mut tmp).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&tmp[..n]);
                    if let Some(e) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break e;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                while buf.len() < end + 4 + len {
                    let n = s.read(&mut tmp).await.unwrap();
                    buf.extend_from_slice(&tmp[..n]);
                }
                let mut first = head.lines().next().unwrap().split(' ');
                let (m, p) = (first.next().unwrap(), first.next().unwrap());
                log.lock().unwrap().push(format!("{m} {p}"));
                let (status, body) = route(m, p);
                let out = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\
                     Content-Type: application/json\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(out.as_bytes()).await.unwrap();
            });
        }
    });
    port
}

async fn glance(port: u16) -> Glance {
    let mut cfg = CloudConfig {
        name: "fake-glance".into(),
        auth: AuthMethod::Static {
            token: Some(Secret::new("t")),
        },
        region_name: None,
        interface: Interface::Public,
        endpoint_overrides: Default::default(),
        tls: Default::default(),
        api_timeout: None,
        source: None,
    };
    cfg.endpoint_overrides.insert(
        ServiceType::Image,
        format!("http://127.0.0.1:{port}").parse().unwrap(),
    );
    Glance::new(
        OpenStackClient::connect(cfg, ClientOptions::default())
            .await
            .unwrap(),
    )
}

fn request() -> RegisterRbdImage {
    RegisterRbdImage {
        image: CreateImage::raw("img"),
        location: RbdLocation {
            fsid: "f".into(),
            pool: "images".into(),
            image: "img".into(),
            snapshot: "snap".into(),
        },
        // A static token has no known roles; the refusal itself is tested on real clouds.
        allow_member_credentials: true,
    }
}

const QUEUED_NO_LOCATIONS: &str = r#"{"id": "i1", "name": "img", "status": "queued"}"#;
const QUEUED_WITH_LOCATIONS: &str =
    r#"{"id": "i1", "name": "img", "status": "queued", "locations": []}"#;

#[tokio::test]
async fn hidden_locations_fail_clearly_and_leave_the_record_undeleted() {
    let log: Log = Default::default();
    let port = serve(log.clone(), |m, p| match (m, p) {
        ("POST", "/v2/images") => (201, QUEUED_NO_LOCATIONS.into()),
        ("GET", "/") => (200, r#"{"versions": [{"id": "v2.16"}]}"#.into()),
        ("GET", "/v2/images/i1") => (200, QUEUED_NO_LOCATIONS.into()),
        ("DELETE", "/v2/images/i1") => (204, String::new()),
        _ => (500, "{}".into()),
    })
    .await;
    let e = glance(port).await.register(&request()).await.unwrap_err();
    let Error::RecordKept {
        id,
        original,
        reason,
    } = &e
    else {
        panic!("expected RecordKept, got {e}");
    };
    assert_eq!(id, "i1");
    assert!(
        matches!(**original, Error::LocationsDisabled { .. }),
        "{original}"
    );
    assert!(reason.contains("does not show its locations"), "{reason}");
    let msg = e.to_string();
    assert!(msg.contains("show_multiple_locations = True"), "{msg}");
    assert!(msg.contains("i1 was NOT deleted"), "{msg}");
    let log = log.lock().unwrap().clone();
    assert_eq!(log.first().map(String::as_str), Some("POST /v2/images"));
    assert!(!log.iter().any(|l| l.starts_with("PATCH")), "{log:?}");
    assert!(!log.iter().any(|l| l.starts_with("DELETE")), "{log:?}");
}

/// The locations API added the location but its answer was lost (502 from a proxy); the
/// locations stay hidden, so the record must not be deleted: it holds the verified copy.
#[tokio::test]
async fn a_lost_answer_to_a_successful_add_with_hidden_locations_deletes_nothing() {
    let log: Log = Default::default();
    let port = serve(log.clone(), |m, p| match (m, p) {
        ("POST", "/v2/images") => (201, QUEUED_NO_LOCATIONS.into()),
        ("GET", "/") => (200, r#"{"versions": [{"id": "v2.17"}]}"#.into()),
        ("POST", "/v2/images/i1/locations") => (502, "{}".into()),
        ("GET", "/v2/images/i1") => (
            200,
            r#"{"id": "i1", "name": "img", "status": "active"}"#.into(),
        ),
        ("DELETE", "/v2/images/i1") => (204, String::new()),
        _ => (500, "{}".into()),
    })
    .await;
    let e = glance(port).await.register(&request()).await.unwrap_err();
    assert!(matches!(e, Error::RecordKept { .. }), "{e}");
    let log = log.lock().unwrap().clone();
    assert!(
        log.contains(&"POST /v2/images/i1/locations".to_owned()),
        "{log:?}"
    );
    assert!(!log.iter().any(|l| l.starts_with("DELETE")), "{log:?}");
}

/// The JSON patch added the location but its answer was lost: the location is visible, so the
/// record is left and named.
#[tokio::test]
async fn a_lost_answer_to_a_successful_patch_keeps_the_image_with_its_location() {
    let log: Log = Default::default();
    let port = serve(log.clone(), |m, p| match (m, p) {
        ("POST", "/v2/images") => (201, QUEUED_WITH_LOCATIONS.into()),
        ("GET", "/") => (200, r#"{"versions": [{"id": "v2.16"}]}"#.into()),
        ("PATCH", "/v2/images/i1") => (502, "{}".into()),
        ("GET", "/v2/images/i1") => (200, ACTIVE.into()),
        ("DELETE", "/v2/images/i1") => (204, String::new()),
        _ => (500, "{}".into()),
    })
    .await;
    let e = glance(port).await.register(&request()).await.unwrap_err();
    assert!(matches!(e, Error::RecordKept { .. }), "{e}");
    assert!(e.to_string().contains("rbd://f/images/img/snap"), "{e}");
    let log = log.lock().unwrap().clone();
    assert!(!log.iter().any(|l| l.starts_with("DELETE")), "{log:?}");
}

#[tokio::test]
async fn patch_refused_for_invisible_locations_maps_to_locations_disabled() {
    let log: Log = Default::default();
    let port = serve(log.clone(), |m, p| match (m, p) {
        ("POST", "/v2/images") => (201, QUEUED_WITH_LOCATIONS.into()),
        ("GET", "/") => (
            200,
            r#"{"versions": [{"id": "v2.16"}, {"id": "v2.9"}]}"#.into(),
        ),
        ("PATCH", "/v2/images/i1") => (
            403,
            "<html><body><h1>403 Forbidden</h1>It's not allowed to add locations if locations \
             are invisible.<br /><br /></body></html>"
                .into(),
        ),
        ("GET", "/v2/images/i1") => (200, QUEUED_WITH_LOCATIONS.into()),
        ("DELETE", "/v2/images/i1") => (204, String::new()),
        _ => (500, "{}".into()),
    })
    .await;
    let e = glance(port).await.register(&request()).await.unwrap_err();
    assert!(matches!(e, Error::LocationsDisabled { .. }), "{e}");
    assert!(e.to_string().contains("locations are invisible"), "{e}");
    let log = log.lock().unwrap().clone();
    assert!(log.contains(&"PATCH /v2/images/i1".to_owned()), "{log:?}");
    assert_eq!(log.last().map(String::as_str), Some("DELETE /v2/images/i1"));
}

/// `GET /` of Debian 13's Glance 30.0.0 (2025.1), captured from the test cloud.
const GLANCE_2025_1_ROOT: &str = include_str!("data/glance-root-2025.1.json");

const ACTIVE: &str = r#"{"id": "i1", "name": "img", "status": "active",
    "locations": [{"url": "rbd://f/images/img/snap", "metadata": {}}]}"#;

/// Glance >= 2.17 (Dalmatian) is not among the test clouds (Zed): its locations API is
/// exercised against this stand-in, shaped after the API reference.
#[tokio::test]
async fn locations_api_is_used_where_glance_offers_it() {
    let log: Log = Default::default();
    let port = serve(log.clone(), |m, p| match (m, p) {
        ("POST", "/v2/images") => (201, QUEUED_NO_LOCATIONS.into()),
        ("GET", "/") => (
            200,
            r#"{"versions": [{"id": "v2.17"}, {"id": "v2.16"}]}"#.into(),
        ),
        ("POST", "/v2/images/i1/locations") => (202, String::new()),
        ("GET", "/v2/images/i1") => (200, ACTIVE.into()),
        _ => (500, "{}".into()),
    })
    .await;
    let img = glance(port).await.register(&request()).await.unwrap();
    assert_eq!(img.status, "active");
    let log = log.lock().unwrap().clone();
    assert!(
        log.contains(&"POST /v2/images/i1/locations".to_owned()),
        "{log:?}"
    );
    assert!(!log.iter().any(|l| l.starts_with("PATCH")), "{log:?}");
}

/// Glance 30 (2025.1) as found on Debian 13: its root document lists v2.17 (CURRENT) among
/// the others (captured), and its locations call refuses an rbd:// URL to anyone without
/// the `service` role (glance/api/v2/images.py: "http store must be enabled to use location
/// API by normal user."), admins included: the adapter then adds it by the JSON patch.
#[tokio::test]
async fn locations_api_refused_falls_back_to_json_patch() {
    let log: Log = Default::default();
    let port = serve(log.clone(), |m, p| match (m, p) {
        ("POST", "/v2/images") => (201, QUEUED_WITH_LOCATIONS.into()),
        ("GET", "/") => (300, GLANCE_2025_1_ROOT.into()),
        ("POST", "/v2/images/i1/locations") => (
            403,
            "<html><body><h1>403 Forbidden</h1>http store must be enabled to use location \
             API by normal user.<br /><br /></body></html>"
                .into(),
        ),
        ("PATCH", "/v2/images/i1") => (200, ACTIVE.into()),
        ("GET", "/v2/images/i1") => (200, ACTIVE.into()),
        _ => (500, "{}".into()),
    })
    .await;
    let img = glance(port).await.register(&request()).await.unwrap();
    assert_eq!(img.status, "active");
    let log = log.lock().unwrap().clone();
    assert!(log.contains(&"PATCH /v2/images/i1".to_owned()), "{log:?}");
}

/// `GET /` of Debian 12's Glance 25.1.0 (Zed), captured from the test cloud: v2.16 is the
/// newest, so no locations API. `glance_real.rs` checks the real Zed Glance still serves it.
const GLANCE_ZED_ROOT: &str = include_str!("data/glance-root-zed.json");

#[tokio::test]
async fn a_zed_glance_is_sent_the_json_patch_and_never_the_locations_call() {
    let log: Log = Default::default();
    let port = serve(log.clone(), |m, p| match (m, p) {
        ("POST", "/v2/images") => (201, QUEUED_WITH_LOCATIONS.into()),
        ("GET", "/") => (200, GLANCE_ZED_ROOT.into()),
        ("PATCH", "/v2/images/i1") => (200, ACTIVE.into()),
        ("GET", "/v2/images/i1") => (200, ACTIVE.into()),
        _ => (500, "{}".into()),
    })
    .await;
    let img = glance(port).await.register(&request()).await.unwrap();
    assert_eq!(img.status, "active");
    let log = log.lock().unwrap().clone();
    assert!(log.contains(&"PATCH /v2/images/i1".to_owned()), "{log:?}");
    assert!(!log.iter().any(|l| l.ends_with("/locations")), "{log:?}");
}

/// Two images, whatever the query: one carrying property `m=mig-1` and named `img`, one
/// named `img-2` with another value (a server that ignores the list filters).
fn ignores_list_filters(m: &str, p: &str) -> (u16, String) {
    match (m, p.split('?').next().unwrap()) {
        ("GET", "/v2/images") => (
            200,
            r#"{"images": [
                {"id": "i1", "name": "img", "status": "active", "m": "mig-1"},
                {"id": "i2", "name": "img-2", "status": "active", "m": "mig-2"}
            ]}"#
            .into(),
        ),
        _ => (404, "{}".into()),
    }
}

#[tokio::test]
async fn image_lists_ask_glance_to_filter_and_drop_what_it_did_not() {
    let log = Log::default();
    let g = glance(serve(log.clone(), ignores_list_filters).await).await;

    let by_property = g.images_with_property("m", "mig-1").await.unwrap();
    let ids: Vec<&str> = by_property.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["i1"]);

    let by_name = g.images_named("img-2").await.unwrap();
    let ids: Vec<&str> = by_name.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["i2"]);

    let log = log.lock().unwrap().clone();
    assert_eq!(log, ["GET /v2/images?m=mig-1", "GET /v2/images?name=img-2"]);
}

#[tokio::test]
async fn a_failed_image_list_names_what_was_listed() {
    let g = glance(serve(Log::default(), |_, _| (500, "{}".into())).await).await;
    let e = g.images_named("img").await.unwrap_err();
    assert!(matches!(e, Error::Api { .. }), "{e}");
    assert!(e.to_string().contains("listing images named 'img'"), "{e}");
}
