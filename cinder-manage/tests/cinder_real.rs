//! Against a real Keystone + Cinder (RBD backend) + Glance + Ceph: adopt RBD images with
//! manage-existing, the refusals (member, wrong host, already managed, missing image), the
//! volume → RBD image mapping and upload-to-image.
//!
//! The cloud comes from [`site`]: the project's test environment, or the clouds.yaml named by
//! `RBD_RELAY_TEST_CLOUDS_YAML`.

#![allow(clippy::unwrap_used)] // test code: a failed setup step should panic with its message

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use cinder_manage::{
    AdoptRequest, Cinder, Error, HostTarget, ManageRequest, Side, UploadToImageRequest,
};
use glance_rbd::Glance;
use openstack_client::{
    ApiVersion, ClientOptions, CloudConfig, ConfigSources, OpenStackClient, PollOptions,
    ServiceType, VersionDocument,
};
use testenv::{probe, unique_name};

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

/// Cinder's test deployments keep their database in SQLite, which fails concurrent writes
/// with "database is locked" (seen as a manage ending in `error`); tests that change Cinder
/// state take this lock. Production Cinder (MySQL) has no such limit.
static CINDER_WRITES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn poll() -> PollOptions {
    PollOptions {
        timeout: Duration::from_secs(120),
        interval: Duration::from_millis(300),
        max_interval: Duration::from_secs(2),
    }
}

impl Site {
    async fn client(&self, cloud: &str) -> OpenStackClient {
        let sources = ConfigSources {
            clouds_files: vec![self.clouds_yaml.clone()],
            ..Default::default()
        };
        let cfg = CloudConfig::from_sources(&sources, Some(cloud)).unwrap();
        OpenStackClient::connect(cfg, ClientOptions::default())
            .await
            .unwrap()
    }

    async fn cinder(&self, cloud: &str) -> Cinder {
        Cinder::new(self.client(cloud).await, Side::Destination).with_poll(poll())
    }

    fn rbd(&self, args: &[&str]) -> std::process::Output {
        probe::rbd_output(&self.ceph_cluster, args)
    }

    fn exists(&self, image: &str) -> bool {
        probe::exists(&self.ceph_cluster, &format!("{}/{image}", self.volume_pool))
    }

    /// An RBD image of `len` bytes of known data in the volume pool.
    fn image_with_data(&self, name: &str, len: usize) -> Vec<u8> {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8 ^ 0x5a).collect();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("d.raw");
        std::fs::write(&f, &data).unwrap();
        let out = self.rbd(&[
            "import",
            "--no-progress",
            f.to_str().unwrap(),
            &format!("{}/{name}", self.volume_pool),
        ]);
        assert!(out.status.success(), "{out:?}");
        data
    }

    fn remove(&self, image: &str) {
        let _ = self.rbd(&[
            "rm",
            "--no-progress",
            &format!("{}/{image}", self.volume_pool),
        ]);
    }

    fn adopt_request(&self, image: &str) -> AdoptRequest {
        AdoptRequest {
            target: HostTarget::Host(self.cinder_host.clone()),
            rbd_image: image.into(),
            name: Some(format!("adopted-{image}")),
            description: Some("adopted by rbd-relay test".into()),
            volume_type: None,
            availability_zone: None,
            bootable: false,
            metadata: BTreeMap::new(),
        }
    }
}

#[tokio::test]
async fn adopt_by_ceph_pool_renames_image_and_maps_back() {
    let site = site();
    let _serial = CINDER_WRITES.lock().await;
    let c = site.cinder(&site.admin_cloud).await;
    let name = unique_name("cm-adopt");
    site.image_with_data(&name, 1 << 20);

    let host = c
        .resolve_host(&HostTarget::CephPool {
            pool: site.volume_pool.clone(),
            fsid: None,
        })
        .await
        .unwrap();
    assert_eq!(host, site.cinder_host);
    let listed = c.list_manageable(&host).await.unwrap();
    assert!(listed
        .iter()
        .any(|m| m.source_name() == Some(name.as_str()) && m.safe_to_manage));

    let mut req = site.adopt_request(&name);
    req.target = HostTarget::CephPool {
        pool: site.volume_pool.clone(),
        fsid: None,
    };
    req.bootable = true;
    req.metadata.insert("origin".into(), "site-a".into());
    req.metadata.insert("cm-test-marker".into(), name.clone());
    let adopted = c.adopt(&req).await.unwrap();
    let v = &adopted.volume;
    assert_eq!(v.status, "available");
    assert_eq!(v.name.as_deref(), Some(format!("adopted-{name}").as_str()));
    assert_eq!(v.description.as_deref(), Some("adopted by rbd-relay test"));
    assert!(v.is_bootable());
    assert_eq!(v.metadata.get("origin").map(String::as_str), Some("site-a"));
    assert_eq!(adopted.rbd_image, format!("volume-{}", v.id));
    assert!(site.exists(&adopted.rbd_image), "renamed image missing");
    assert!(!site.exists(&name), "old name still there");

    // Listing by metadata finds exactly this volume, and nothing for another value.
    let marked = c
        .volumes_with_metadata("cm-test-marker", &name)
        .await
        .unwrap();
    let ids: Vec<&str> = marked.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, [v.id.as_str()]);
    let other = format!("{name}-other");
    let none = c
        .volumes_with_metadata("cm-test-marker", &other)
        .await
        .unwrap();
    assert!(none.is_empty(), "{none:?}");

    let loc = c.volume_rbd_image(&v.id).await.unwrap();
    assert_eq!(loc.pool, site.volume_pool);
    assert_eq!(loc.image, adopted.rbd_image);
    assert_eq!(loc.host, site.cinder_host);
    let by_fsid = HostTarget::CephPool {
        pool: site.volume_pool.clone(),
        fsid: Some(loc.fsid.clone()),
    };
    assert_eq!(c.resolve_host(&by_fsid).await.unwrap(), site.cinder_host);
    let other = HostTarget::CephPool {
        pool: site.volume_pool.clone(),
        fsid: Some("00000000-0000-0000-0000-000000000000".into()),
    };
    let e = c.resolve_host(&other).await.unwrap_err();
    assert!(matches!(e, Error::PoolNotFound { .. }), "{e}");

    // A wait that cannot succeed ends at its deadline and names the last state.
    let short = PollOptions {
        timeout: Duration::from_secs(2),
        interval: Duration::from_millis(200),
        max_interval: Duration::from_millis(500),
    };
    let e = c
        .clone()
        .with_poll(short)
        .wait_status(&v.id, &["in-use"])
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Timeout(_)), "{e}");
    assert!(
        e.to_string().contains("last state: status available"),
        "{e}"
    );

    // Adopting the same image again is refused before anything is created.
    let again = c
        .adopt(&site.adopt_request(&adopted.rbd_image))
        .await
        .unwrap_err();
    match &again {
        Error::AlreadyManaged { by, .. } => assert!(by.contains(&v.id), "{again}"),
        other => panic!("expected AlreadyManaged, got {other}"),
    }

    c.unmanage(&v.id).await.unwrap();
    site.remove(&adopted.rbd_image);
}

#[tokio::test]
async fn wrong_host_string_keeps_cinders_message() {
    let site = site();
    let _serial = CINDER_WRITES.lock().await;
    let c = site.cinder(&site.admin_cloud).await;
    let name = unique_name("cm-host");
    site.image_with_data(&name, 4096);
    let e = c
        .manage(&ManageRequest {
            host: "nohost@ceph#ceph".into(),
            source_name: name.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let s = e.to_string();
    assert!(matches!(e, Error::UnknownHost { .. }), "{s}");
    assert!(s.contains("Host 'nohost@ceph#ceph' not found"), "{s}");
    assert!(s.contains(&site.cinder_host), "known pools listed: {s}");

    let e = c.list_manageable("nohost@ceph#ceph").await.unwrap_err();
    assert!(matches!(e, Error::UnknownHost { .. }), "{e}");
    assert!(e.to_string().contains("could not be found"), "{e}");
    assert!(site.exists(&name));
    site.remove(&name);
}

#[tokio::test]
async fn failed_manage_reports_error_state_and_can_be_unmanaged() {
    let site = site();
    let _serial = CINDER_WRITES.lock().await;
    let c = site.cinder(&site.admin_cloud).await;
    // Without adopt()'s preflight, Cinder accepts the request and fails in the background.
    let v = c
        .manage(&ManageRequest {
            host: site.cinder_host.clone(),
            source_name: unique_name("cm-nosuch"),
            ..Default::default()
        })
        .await
        .unwrap();
    let e = c.wait_available(&v.id).await.unwrap_err();
    match &e {
        Error::VolumeFailed { id, status, reason } => {
            assert_eq!(id, &v.id);
            assert!(status.starts_with("error"), "{e}");
            // Cinder writes no user message for a failed manage: the reason comes from the
            // record and the service/pool checks, and names the driver's side
            assert!(reason.contains("no user message"), "{e}");
            assert!(
                reason.contains(&format!("host `{}`", site.cinder_host)),
                "{e}"
            );
            assert!(reason.contains("could not be opened or renamed"), "{e}");
            assert!(reason.contains(&v.id), "{e}");
            assert!(!reason.contains("has no pool"), "{e}");
        }
        other => panic!("expected VolumeFailed, got {other}"),
    }
    c.unmanage(&v.id).await.unwrap();
}

/// A host string whose backend exists but whose pool does not: Cinder accepts the manage,
/// its scheduler cannot place the volume and sets it to error without any user message.
/// The error says so (the scheduler's pools are named), the record is unmanaged again and
/// the image stays under its name, where an adoption with the right host takes it.
#[tokio::test]
async fn a_manage_the_scheduler_cannot_place_names_the_missing_pool() {
    let site = site();
    let _serial = CINDER_WRITES.lock().await;
    let c = site.cinder(&site.admin_cloud).await;
    let name = unique_name("cm-nopool");
    site.image_with_data(&name, 4096);
    let backend = site.cinder_host.split('#').next().unwrap().to_string();
    let wrong = format!("{backend}#nosuchpool");
    let mut req = site.adopt_request(&name);
    req.target = HostTarget::Host(wrong.clone());
    let e = c.adopt(&req).await.unwrap_err();
    let s = e.to_string();
    assert!(matches!(e, Error::VolumeFailed { .. }), "{s}");
    assert!(
        s.contains(&format!("the scheduler has no pool `{wrong}`")),
        "{s}"
    );
    assert!(s.contains(&site.cinder_host), "the known pools: {s}");
    assert!(site.exists(&name), "the image keeps its name");
    // the failed record was forgotten, and the right host adopts the image
    let a = c.adopt(&site.adopt_request(&name)).await.unwrap();
    assert_eq!(a.volume.status, "available");
    c.unmanage(&a.volume.id).await.unwrap();
    site.remove(&a.rbd_image);
}

#[tokio::test]
async fn missing_image_is_refused_before_manage() {
    let site = site();
    let _serial = CINDER_WRITES.lock().await;
    let c = site.cinder(&site.admin_cloud).await;
    let e = c
        .adopt(&site.adopt_request("no-such-image-here"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::ImageNotFound { .. }), "{e}");
}

#[tokio::test]
async fn member_credentials_need_admin_in_destination() {
    let site = site();
    let _serial = CINDER_WRITES.lock().await;
    let c = site.cinder(&site.member_cloud).await;
    let name = unique_name("cm-member");
    site.image_with_data(&name, 4096);
    let e = c.adopt(&site.adopt_request(&name)).await.unwrap_err();
    assert!(matches!(e, Error::NotAdmin { .. }), "{e}");
    // Sent anyway (as a tool without the role check would): Cinder's 403, explained.
    let e = c
        .manage(&ManageRequest {
            host: site.cinder_host.clone(),
            source_name: name.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let s = e.to_string();
    assert!(matches!(e, Error::NeedsAdmin { .. }), "{s}");
    assert!(
        s.contains("this needs an admin role in the destination cloud"),
        "{s}"
    );
    assert!(s.contains("volume_extension:volume_manage"), "{s}");
    assert!(site.exists(&name), "image must be untouched");
    site.remove(&name);
}

/// Ends a child with SIGTERM, so an rbd client closes its image (a SIGKILLed client leaves a
/// watcher that blocks `rbd rm` for ~30 s).
fn stop(child: &mut std::process::Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().unwrap();
}

#[tokio::test]
async fn image_held_open_is_not_manageable() {
    let site = site();
    let _serial = CINDER_WRITES.lock().await;
    let c = site.cinder(&site.admin_cloud).await;
    let name = unique_name("cm-inuse");
    site.image_with_data(&name, 4096);
    // A long read benchmark keeps the image open (a watcher), as a running client or
    // rbd-mirror would.
    let spec = format!("{}/{name}", site.volume_pool);
    let mut watch = Command::new("rbd")
        .args([
            "--cluster",
            &site.ceph_cluster,
            "bench",
            "--io-type",
            "read",
        ])
        .args(["--io-size", "4096", "--io-total", "1T", &spec])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !String::from_utf8_lossy(&site.rbd(&["status", &spec]).stdout).contains("watcher=") {
        assert!(
            std::time::Instant::now() < deadline,
            "rbd watch never registered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = c.adopt(&site.adopt_request(&name)).await;
    stop(&mut watch);
    let e = match r {
        Ok(a) => {
            c.unmanage(&a.volume.id).await.unwrap();
            site.remove(&a.rbd_image);
            panic!("an image with a watcher was adopted");
        }
        Err(e) => e,
    };
    assert!(matches!(e, Error::NotManageable { .. }), "{e}");
    assert!(e.to_string().contains("volume in use"), "{e}");
    assert!(site.exists(&name));
    site.remove(&name);
}

#[tokio::test]
async fn upload_to_image_waits_for_active_image_with_volume_data() {
    let site = site();
    let _serial = CINDER_WRITES.lock().await;
    let client = site.client(&site.admin_cloud).await;
    let c = Cinder::new(client.clone(), Side::Source).with_poll(poll());
    let g = Glance::new(client);
    let name = unique_name("cm-upload");
    let data = site.image_with_data(&name, 2 << 20);
    let mut req = site.adopt_request(&name);
    req.bootable = true;
    let adopted = c.adopt(&req).await.unwrap();
    let id = adopted.volume.id.clone();

    let up = c
        .upload_to_image(&UploadToImageRequest::raw(&id, unique_name("cm-img")), &g)
        .await
        .unwrap();
    assert_eq!(up.image.status, "active");
    assert_eq!(up.volume.status, "available");
    // The image's data is an RBD image in Glance's pool, named after the image id.
    let loc = up.image.rbd_location().expect("rbd:// location");
    assert_eq!(loc.image, up.image.id);
    assert_eq!(loc.snapshot, "snap");

    let mut dl = g.download(&up.image.id).await.unwrap();
    let mut got = Vec::new();
    while let Some(ch) = dl.next_chunk().await.unwrap() {
        got.extend_from_slice(&ch);
    }
    assert!(got.len() >= data.len(), "image has {} bytes", got.len());
    assert!(
        got[..data.len()] == data[..],
        "image data differs from volume"
    );

    // This image was made by Cinder in Glance's own pool: deleting it deletes only its copy.
    g.delete_image(&up.image.id).await.unwrap();
    c.unmanage(&id).await.unwrap();
    site.remove(&adopted.rbd_image);
}

/// `GET /` of the Cinder releases whose documents `fake_cinder.rs` replays, as captured from
/// the test clouds.
const CAPTURED_ROOTS: [(&str, &str); 2] = [
    ("Zed (Cinder 21)", include_str!("data/cinder-root-zed.json")),
    (
        "2025.1 (Cinder 26)",
        include_str!("data/cinder-root-2025.1.json"),
    ),
];

/// The cross-version part that runs without a newer cloud: the microversion is negotiated
/// from this Cinder's own version document (read for real) and accepted by it, and that
/// document's range is one of the captured ones the fake tests replay, so those tests stand
/// for a real release.
#[tokio::test]
async fn the_real_cinder_gets_the_microversion_its_version_document_allows_and_a_captured_one_matches(
) {
    let site = site();
    let client = site.client(&site.admin_cloud).await;
    let doc = client
        .version_document(ServiceType::BlockStorage)
        .await
        .unwrap();
    let range = doc
        .microversion_range(3)
        .unwrap_or_else(|| panic!("no v3 microversion range in {doc:?}"));
    let release = CAPTURED_ROOTS
        .iter()
        .find(|(_, captured)| {
            VersionDocument::from_json(captured.as_bytes())
                .unwrap()
                .microversion_range(3)
                == Some(range)
        })
        .map(|(release, _)| *release)
        .unwrap_or_else(|| {
            panic!(
                "this Cinder offers {}-{}, which no captured document does: capture its `GET /` \
                 into cinder-manage/tests/data/ and replay it in fake_cinder.rs",
                range.0, range.1
            )
        });
    let c = Cinder::new(client, Side::Destination);
    assert_eq!(
        c.microversion().await.unwrap(),
        ApiVersion::new(3, 8),
        "{release}"
    );
    // a call sent with it is accepted
    assert!(
        !c.list_pools().await.unwrap().is_empty(),
        "{release}: no pools"
    );
}
