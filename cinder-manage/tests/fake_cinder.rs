//! The microversion the adapter sends comes from Cinder's own version document, never from a
//! guess: a loopback stand-in answers the root document of Zed's Cinder (3.0-3.70), of
//! 2025.1's (3.0-3.71, as captured from Debian 13's Cinder 26) and of a Cinder whose lowest
//! microversion went past what rbd-relay needs, and records the header of every call.

#![allow(clippy::unwrap_used)] // test code

use std::sync::{Arc, Mutex};

use cinder_manage::{Cinder, Error, Side};
use openstack_client::{
    ApiVersion, AuthMethod, ClientOptions, CloudConfig, Interface, OpenStackClient, Secret,
    ServiceType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// `METHOD path [microversion header]` of each request.
type Log = Arc<Mutex<Vec<String>>>;

/// Serves `(status, body)` of `route(method, path)` on loopback, logging each request.
async fn serve(log: Log, root_document: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut tmp).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&tmp[..n]);
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let mut first = head.lines().next().unwrap().split(' ');
                let (m, p) = (first.next().unwrap(), first.next().unwrap());
                let mv = head.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("openstack-api-version")
                        .then(|| v.trim().to_string())
                });
                log.lock()
                    .unwrap()
                    .push(format!("{m} {p} [{}]", mv.unwrap_or_default()));
                let (status, body) = match (m, p) {
                    // Cinder answers its root with 300 Multiple Choices
                    ("GET", "/") => (300, root_document.to_string()),
                    ("GET", "/v3/p1/volumes/0a1b2c3d-0000-4000-8000-000000000001") => (
                        200,
                        r#"{"volume": {"id": "0a1b2c3d-0000-4000-8000-000000000001", "status": "available", "size": 1}}"#.into(),
                    ),
                    _ => (404, r#"{"itemNotFound": {"message": "no"}}"#.into()),
                };
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

async fn cinder(port: u16) -> Cinder {
    let mut cfg = CloudConfig {
        name: "fake-cinder".into(),
        auth: AuthMethod::Static {
            token: Some(Secret::new("t")),
        },
        region_name: None,
        interface: Interface::Public,
        endpoint_overrides: Default::default(),
        tls: Default::default(),
        source: None,
        api_timeout: None,
    };
    cfg.endpoint_overrides.insert(
        ServiceType::BlockStorage,
        format!("http://127.0.0.1:{port}/v3/p1").parse().unwrap(),
    );
    let client = OpenStackClient::connect(cfg, ClientOptions::default())
        .await
        .unwrap();
    Cinder::new(client, Side::Destination)
}

/// The volume the calls ask for.
const VOLUME: &str = "0a1b2c3d-0000-4000-8000-000000000001";

/// Debian 12's Cinder 21 (Zed), `GET /`, as captured from the test cloud.
const ZED: &str = include_str!("data/cinder-root-zed.json");
/// Debian 13's Cinder 26 (2025.1), `GET /`, as captured from the chroot's cloud.
const EPOXY: &str = include_str!("data/cinder-root-2025.1.json");

async fn microversion_sent_to(
    root_document: &'static str,
) -> (Result<ApiVersion, Error>, Vec<String>) {
    let log = Log::default();
    let c = cinder(serve(log.clone(), root_document).await).await;
    let negotiated = c.microversion().await;
    if negotiated.is_ok() {
        // two calls: the document is read once
        c.get_volume(VOLUME).await.unwrap();
        c.get_volume(VOLUME).await.unwrap();
    } else {
        assert!(c.get_volume(VOLUME).await.is_err());
    }
    let log = log.lock().unwrap().clone();
    (negotiated, log)
}

#[tokio::test]
async fn zed_and_2025_1_are_both_sent_the_microversion_their_document_allows() {
    for doc in [ZED, EPOXY] {
        let (v, log) = microversion_sent_to(doc).await;
        assert_eq!(v.unwrap(), ApiVersion::new(3, 8));
        assert_eq!(
            log,
            [
                "GET / []",
                "GET /v3/p1/volumes/0a1b2c3d-0000-4000-8000-000000000001 [volume 3.8]",
                "GET /v3/p1/volumes/0a1b2c3d-0000-4000-8000-000000000001 [volume 3.8]"
            ]
        );
    }
}

#[tokio::test]
async fn a_cinder_without_the_microversion_we_need_is_refused_before_any_call() {
    const RAISED: &str = r#"{"versions": [{"id": "v3.0", "status": "CURRENT", "version": "3.90", "min_version": "3.20"}]}"#;
    let (v, log) = microversion_sent_to(RAISED).await;
    let e = v.unwrap_err();
    assert!(matches!(e, Error::Microversion { .. }), "{e}");
    assert!(e.to_string().contains("3.20 to 3.90"), "{e}");
    // only version documents were read: nothing was sent to the v3 API
    assert!(log.iter().all(|l| l.starts_with("GET / ")), "{log:?}");

    const TOO_OLD: &str = r#"{"versions": [{"id": "v3.0", "status": "CURRENT", "version": "3.5", "min_version": "3.0"}]}"#;
    let (v, _) = microversion_sent_to(TOO_OLD).await;
    assert!(matches!(v, Err(Error::Microversion { .. })));
}
