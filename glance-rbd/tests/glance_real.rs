//! Against a real Keystone + Glance (rbd store) + Ceph: register an RBD snapshot by location,
//! download it back, and the refusals (member credentials, bad location leaves nothing).
//!
//! The cloud comes from [`site`]: the project's test environment, or the clouds.yaml named by
//! `RBD_RELAY_TEST_CLOUDS_YAML`.

#![allow(clippy::unwrap_used)] // test code: a failed setup step should panic with its message

use glance_rbd::{CreateImage, Error, Glance, RbdLocation, RegisterRbdImage};
use openstack_client::{
    ApiVersion, ClientOptions, CloudConfig, ConfigSources, OpenStackClient, ServiceType,
    VersionDocument,
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

impl Site {
    async fn glance(&self, cloud: &str) -> Glance {
        let sources = ConfigSources {
            clouds_files: vec![self.clouds_yaml.clone()],
            ..Default::default()
        };
        let cfg = CloudConfig::from_sources(&sources, Some(cloud)).unwrap();
        Glance::new(
            OpenStackClient::connect(cfg, ClientOptions::default())
                .await
                .unwrap(),
        )
    }

    fn rbd(&self, args: &[&str]) {
        probe::rbd(&self.ceph_cluster, args);
    }

    fn rbd_exists(&self, spec: &str) -> bool {
        probe::exists(&self.ceph_cluster, spec)
    }

    /// An RBD image with random data and a protected snapshot `snap`; returns its data.
    fn snapshot_with_data(&self, name: &str, len: usize) -> Vec<u8> {
        let data: Vec<u8> = (0..len)
            .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[1] ^ (len as u8))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("data.raw");
        std::fs::write(&f, &data).unwrap();
        let spec = format!("{}/{name}", self.image_pool);
        self.rbd(&["import", "--no-progress", f.to_str().unwrap(), &spec]);
        self.rbd(&["snap", "create", &format!("{spec}@snap")]);
        self.rbd(&["snap", "protect", &format!("{spec}@snap")]);
        data
    }

    fn location(&self, name: &str) -> RbdLocation {
        RbdLocation {
            fsid: self.fsid().to_owned(),
            pool: self.image_pool.clone(),
            image: name.into(),
            snapshot: "snap".into(),
        }
    }

    fn cleanup_rbd(&self, name: &str) {
        let spec = format!("{}/{name}", self.image_pool);
        if self.rbd_exists(&spec) {
            let snap = format!("{spec}@snap");
            let _ = probe::rbd_output(&self.ceph_cluster, &["snap", "unprotect", &snap]);
            let _ = probe::rbd_output(&self.ceph_cluster, &["snap", "purge", &spec]);
            let _ = probe::rbd_output(&self.ceph_cluster, &["rm", "--no-progress", &spec]);
        }
    }
}

async fn images_named(g: &Glance, name: &str) -> usize {
    let req = openstack_client::ApiRequest::new(
        openstack_client::ServiceType::Image,
        openstack_client::Method::GET,
        "v2/images",
    )
    .query("name", name);
    let v: serde_json::Value = g.client().send_json(&req).await.unwrap();
    v["images"].as_array().unwrap().len()
}

#[tokio::test]
async fn register_by_location_then_download_returns_the_same_bytes() {
    let site = site();
    let g = site.glance(&site.admin_cloud).await;
    assert!(g.locations_exposed().await.unwrap());
    let name = unique_name("gl-reg");
    let data = site.snapshot_with_data(&name, 4 << 20);
    let mut image = CreateImage::raw(&name);
    image.min_disk = Some(glance_rbd::min_disk_gib(data.len() as u64));
    image
        .properties
        .insert("rbd_relay_test".into(), "yes".into());
    let img = g
        .register(&RegisterRbdImage {
            image,
            location: site.location(&name),
            allow_member_credentials: false,
        })
        .await
        .unwrap();
    assert_eq!(img.status, "active");
    assert_eq!(img.size, Some(data.len() as u64));
    assert_eq!(img.min_disk, Some(1));
    assert_eq!(img.extra["rbd_relay_test"], "yes");
    let locs = img.locations.clone().unwrap();
    assert_eq!(locs[0].url, site.location(&name).to_string());

    let mut dl = g.download(&img.id).await.unwrap();
    let mut got = Vec::new();
    while let Some(c) = dl.next_chunk().await.unwrap() {
        got.extend_from_slice(&c);
    }
    assert!(got == data, "downloaded data differs");

    // The documented hazard: deleting the image deletes the RBD data it points at.
    g.delete_image(&img.id).await.unwrap();
    let gone = g.get_image(&img.id).await.unwrap_err();
    assert_eq!(gone.api_error().map(|a| a.status), Some(404), "{gone}");
    assert!(
        !site.rbd_exists(&format!("{}/{name}@snap", site.image_pool)),
        "Glance left the snapshot behind"
    );
    site.cleanup_rbd(&name);
}

#[tokio::test]
async fn member_credentials_are_refused_before_anything_is_created() {
    let site = site();
    let g = site.glance(&site.member_cloud).await;
    let name = unique_name("gl-member");
    let e = g
        .register(&RegisterRbdImage {
            image: CreateImage::raw(&name),
            location: site.location("whatever"),
            allow_member_credentials: false,
        })
        .await
        .unwrap_err();
    assert!(matches!(e, Error::MemberCredentials { .. }), "{e}");
    assert!(e.to_string().contains("member"), "{e}");
    assert_eq!(images_named(&g, &name).await, 0);
}

#[tokio::test]
async fn bad_location_deletes_the_empty_record_and_keeps_glance_message() {
    let site = site();
    let g = site.glance(&site.admin_cloud).await;
    let name = unique_name("gl-badloc");
    let e = g
        .register(&RegisterRbdImage {
            image: CreateImage::raw(&name),
            location: site.location("no-such-rbd-image"),
            allow_member_credentials: false,
        })
        .await
        .unwrap_err();
    let a = e.api_error().expect("an HTTP error");
    assert_eq!(a.status, 400, "{e}");
    assert!(a.message.contains("Invalid location"), "{e}");
    assert_eq!(images_named(&g, &name).await, 0, "record left behind");
}

#[tokio::test]
async fn member_override_registers_own_snapshot() {
    let site = site();
    let g = site.glance(&site.member_cloud).await;
    let name = unique_name("gl-override");
    site.snapshot_with_data(&name, 1 << 20);
    let img = g
        .register(&RegisterRbdImage {
            image: CreateImage::raw(&name),
            location: site.location(&name),
            allow_member_credentials: true,
        })
        .await
        .unwrap();
    assert_eq!(img.status, "active");
    g.delete_image(&img.id).await.unwrap();
    site.cleanup_rbd(&name);
}

/// `GET /` of the Glance releases whose documents `fake_glance.rs` replays, as captured from
/// the test clouds: (release, document, whether the adapter tries the locations call there).
const CAPTURED_ROOTS: [(&str, &str, bool); 2] = [
    (
        "Zed (Glance 25)",
        include_str!("data/glance-root-zed.json"),
        false,
    ),
    (
        "2025.1 (Glance 30)",
        include_str!("data/glance-root-2025.1.json"),
        true,
    ),
];

fn listed(doc: &VersionDocument) -> std::collections::BTreeSet<ApiVersion> {
    doc.ids().collect()
}

/// The cross-version part that runs without a newer cloud: which call adds a location is
/// decided from this Glance's own version document (read for real), and that document is one
/// of the captured ones the fake tests replay, so those tests stand for a real release.
#[tokio::test]
async fn the_location_call_follows_the_real_glances_version_document_which_a_captured_one_matches()
{
    let site = site();
    let g = site.glance(&site.admin_cloud).await;
    let doc = g
        .client()
        .version_document(ServiceType::Image)
        .await
        .unwrap();
    let ids = listed(&doc);
    let (release, _, locations_call) = CAPTURED_ROOTS
        .iter()
        .find(|(_, captured, _)| {
            listed(&VersionDocument::from_json(captured.as_bytes()).unwrap()) == ids
        })
        .unwrap_or_else(|| {
            panic!(
                "this Glance lists {}, which no captured document does: capture its `GET /` \
                 into glance-rbd/tests/data/ and replay it in fake_glance.rs",
                ids.iter()
                    .map(|v| format!("v{v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        });
    assert_eq!(
        g.has_locations_api().await.unwrap(),
        *locations_call,
        "{release}: the adapter's choice of the locations call"
    );
}
