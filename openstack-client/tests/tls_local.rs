//! TLS settings against a real TLS server on loopback (rustls, certificates made by rcgen at
//! test time): a CA path given as `verify` keeps verification on and trusts only that CA, and
//! `cert`/`key` are presented to a server that requires a client certificate.

#![allow(clippy::unwrap_used)] // test code

use std::path::Path;
use std::sync::Arc;

use openstack_client::{
    ApiRequest, ClientOptions, CloudConfig, ConfigSources, Method, OpenStackClient, ServiceType,
};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

struct Ca {
    cert: Certificate,
    key: KeyPair,
}

fn ca() -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    Ca {
        cert: params.self_signed(&key).unwrap(),
        key,
    }
}

fn leaf(ca: &Ca, name: &str, usage: ExtendedKeyUsagePurpose) -> (Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
    params.extended_key_usages = vec![usage];
    (params.signed_by(&key, &ca.cert, &ca.key).unwrap(), key)
}

/// Serves `{"volumes": []}` over TLS with a certificate for `localhost` signed by `ca`;
/// with `client_ca`, a client certificate signed by it is required.
async fn serve_tls(ca: &Ca, client_ca: Option<&Ca>) -> u16 {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (cert, key) = leaf(ca, "localhost", ExtendedKeyUsagePurpose::ServerAuth);
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(c) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(c.cert.der().clone()).unwrap();
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(v)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(s).await else {
                    return; // the client refused our certificate, or sent none
                };
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut tmp).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
                let body = r#"{"volumes": []}"#;
                let out = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\
                     Content-Type: application/json\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(out.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    port
}

/// Writes a clouds.yaml with a static-token cloud `t` whose Cinder is `https://localhost:port`
/// and `extra` lines, and sends one request through it.
async fn get_volumes(dir: &Path, port: u16, extra: &str) -> Result<(), String> {
    let yaml = format!(
        "clouds:\n  t:\n    auth_type: admin_token\n    auth:\n      token: tok\n    \
         block_storage_endpoint_override: https://localhost:{port}/v3/p\n{extra}"
    );
    let file = dir.join("clouds.yaml");
    std::fs::write(&file, yaml).unwrap();
    let sources = ConfigSources {
        clouds_files: vec![file],
        ..Default::default()
    };
    let cfg = CloudConfig::from_sources(&sources, Some("t")).map_err(|e| e.to_string())?;
    let client = OpenStackClient::connect(cfg, ClientOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    client
        .send_empty(&ApiRequest::new(
            ServiceType::BlockStorage,
            Method::GET,
            "volumes",
        ))
        .await
        .map_err(|e| e.to_string())
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[tokio::test]
async fn a_ca_path_given_as_verify_trusts_that_ca() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = ca();
    let port = serve_tls(&server_ca, None).await;
    let ca_file = write(dir.path(), "ca.pem", &server_ca.cert.pem());
    get_volumes(dir.path(), port, &format!("    verify: {ca_file}\n"))
        .await
        .unwrap();
}

/// Before: any `verify` that was not a truthy word, a path included, turned verification off,
/// so this server was accepted.
#[tokio::test]
async fn a_ca_path_given_as_verify_rejects_a_server_of_another_ca() {
    let dir = tempfile::tempdir().unwrap();
    let port = serve_tls(&ca(), None).await;
    let other = write(dir.path(), "other-ca.pem", &ca().cert.pem());
    let e = get_volumes(dir.path(), port, &format!("    verify: {other}\n"))
        .await
        .unwrap_err();
    assert!(e.contains("certificate"), "{e}");
}

#[tokio::test]
async fn an_unknown_server_ca_is_rejected_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let port = serve_tls(&ca(), None).await;
    let e = get_volumes(dir.path(), port, "").await.unwrap_err();
    assert!(e.contains("certificate"), "{e}");
}

#[tokio::test]
async fn verify_false_accepts_any_server() {
    let dir = tempfile::tempdir().unwrap();
    let port = serve_tls(&ca(), None).await;
    get_volumes(dir.path(), port, "    verify: false\n")
        .await
        .unwrap();
}

/// Before: `cert`/`key` were ignored, and a server requiring a client certificate refused us.
#[tokio::test]
async fn cert_and_key_are_presented_to_a_server_that_requires_them() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = ca();
    let client_ca = ca();
    let port = serve_tls(&server_ca, Some(&client_ca)).await;
    let ca_file = write(dir.path(), "ca.pem", &server_ca.cert.pem());
    let (cert, key) = leaf(&client_ca, "rbd-relay", ExtendedKeyUsagePurpose::ClientAuth);
    let cert_file = write(dir.path(), "client.pem", &cert.pem());
    let key_file = write(dir.path(), "client.key", &key.serialize_pem());
    let without = get_volumes(dir.path(), port, &format!("    cacert: {ca_file}\n")).await;
    assert!(
        without.is_err(),
        "the server must require a client certificate"
    );
    get_volumes(
        dir.path(),
        port,
        &format!("    cacert: {ca_file}\n    cert: {cert_file}\n    key: {key_file}\n"),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn an_unreadable_client_certificate_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let e = get_volumes(dir.path(), 1, "    cert: /nonexistent/client.pem\n")
        .await
        .unwrap_err();
    assert!(
        e.contains("cannot read client certificate (cert) /nonexistent/client.pem"),
        "{e}"
    );
}
