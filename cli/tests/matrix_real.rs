#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

//! Cross-version migrations: `rbd-relay migrate volume` from site-a (the host's Ceph 16.2,
//! Pacific) into a site-b on a newer release (Reef from a trixie chroot, Tentacle from a sid
//! chroot; `testenv up --site-b-release R`), in both modes, checked with the `rbd` CLI: the
//! copy's sha256 equals the source's, the source is back to its original features with
//! mirroring off and no mirror snapshot, and the replica in site-b's mirrored pool is gone.
//!
//! With the clouds (`testenv up --openstack --site-b-release reef`: site-b's Cinder and Glance
//! are Debian 13's OpenStack 2025.1, run from the same trixie chroot, beside the host's Zed
//! source cloud), the same migration with `--adopt` in both modes (the destination Cinder
//! manages the copy) and `migrate bootable` (the source Cinder uploads a bootable volume to
//! its Glance, the destination Glance registers the copy by its rbd:// location), checked
//! independently through the clouds' APIs and the `rbd` CLI. Those tests first check that
//! site-b's Cinder and Glance really run from the chroot.
//!
//! Ignored in the ordinary real tier (its pair is Pacific on both sides): `make test-matrix`
//! runs them with `--ignored` and `RBD_RELAY_MATRIX_RELEASE` naming the release site-b must
//! run. Each test first asks site-b's daemons (`ceph versions`) and fails when they run
//! another release, so a Pacific pair can never pass for a newer one.

use std::path::Path;
use std::process::{Command, Stdio};

use cinder_manage::{AdoptRequest, Cinder, HostTarget, Side};
use openstack_client::{CloudConfig, ConfigSources, OpenStackClient};
use serde_json::Value;

mod common;
use common::{describe, relay_env, BIN, REPLICA_GONE_LIMIT};
use testenv::probe::{
    exists, image_with_data, info, mirror_snapshots, mirroring_off, rbd, rbd_output, sha,
    sha_of_first, wait_gone,
};

/// The release site-b must run (`reef`, `tentacle`).
const EXPECTED_RELEASE_ENV: &str = "RBD_RELAY_MATRIX_RELEASE";

/// The environment, after checking that site-b runs the expected release.
fn cross_version_env() -> testenv::Env {
    let want = std::env::var(EXPECTED_RELEASE_ENV).unwrap_or_else(|_| {
        panic!("set {EXPECTED_RELEASE_ENV}=reef|tentacle (make test-matrix does) and bring site-b up on it")
    });
    let env = testenv::shared().expect("testenv");
    let a = testenv::running_release(&env.site_a().name).unwrap();
    let b = testenv::running_release(&env.site_b().name).unwrap();
    eprintln!("matrix: site-a runs {a}, site-b runs {b}");
    assert!(
        a.starts_with("pacific "),
        "site-a must run the host's Pacific, runs {a}"
    );
    assert!(
        b.starts_with(&format!("{want} ")) && !b.contains(','),
        "site-b must run only {want} (testenv up --site-b-release {want}), runs {b}"
    );
    env
}

/// Bytes of the images the migrations copy: 24 MiB and a bit, not a whole GiB (so an
/// adoption grows the copy to 1 GiB first).
const IMAGE_BYTES: u64 = (24 << 20) + 777;

/// An image in `volumes` on `site` with [`IMAGE_BYTES`] of non-repeating data.
fn make_image(site: &str, prefix: &str) -> (String, String) {
    let image = testenv::unique_name(prefix);
    let spec = format!("volumes/{image}");
    image_with_data(site, &spec, IMAGE_BYTES as usize);
    (image, spec)
}

fn migrates_a_volume_into_the_newer_release(mode: &str) {
    let env = cross_version_env();
    let (a, b) = (env.site_a().name.clone(), env.site_b().name.clone());
    let (image, spec) = make_image(&a, &format!("matrix-{mode}"));
    let original = info(&a, &spec)["features"].clone();
    let want = sha(&a, &spec);
    let state = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "migrate", "volume", "--from", &a, "--to", &b, &spec, "--into", "cinder", "--mode",
            mode,
        ])
        .args(["--state-dir", state.path().to_str().unwrap()])
        .env_remove("OS_CLOUD")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    let copy = format!("cinder/{image}");
    assert_eq!(sha(&b, &copy), want, "the copy on {b} differs\n{text}");
    assert!(exists(&a, &spec), "the source must stay");
    assert_eq!(info(&a, &spec)["features"], original, "source features");
    assert!(mirroring_off(&a, &spec), "mirroring left on at the source");
    assert_eq!(mirror_snapshots(&a, &spec), 0, "mirror snapshots left");
    assert!(mirroring_off(&b, &copy), "mirroring left on at the copy");
    wait_gone(&b, &spec, REPLICA_GONE_LIMIT);
    eprintln!(
        "matrix {mode}: source features {original}, copy features {}",
        info(&b, &copy)["features"]
    );
    rbd(&a, &["rm", "--no-progress", &spec]);
    rbd(&b, &["rm", "--no-progress", &copy]);
}

#[test]
#[ignore = "cross-version: needs site-b on a newer release (make test-matrix)"]
fn a_journal_migration_into_a_newer_release_copies_every_byte_and_restores_the_source() {
    migrates_a_volume_into_the_newer_release("journal");
}

#[test]
#[ignore = "cross-version: needs site-b on a newer release (make test-matrix)"]
fn a_snapshot_migration_into_a_newer_release_copies_every_byte_and_restores_the_source() {
    migrates_a_volume_into_the_newer_release("snapshot");
}

/// The journal clients of image `spec` on `site`, read and decoded by rbd-relay's own
/// librbd wrapper (`journal.<id>` omap, `client_*` keys), as the engine's journal-mode
/// completion signals read them.
fn journal_clients(env: &testenv::Env, spec: &str) -> librbd::JournalStatus {
    let site = env.site_a();
    let (pool, _) = spec.split_once('/').unwrap();
    let id = info(&site.name, spec)["id"].as_str().unwrap().to_string();
    let cluster =
        librbd::Cluster::connect(&librbd::ClusterConfig::new(site.name.clone()).conf(&site.conf))
            .unwrap();
    cluster.ioctx(pool).unwrap().journal_status(&id).unwrap()
}

/// The client data a newer rbd-mirror (site-b) writes into a Pacific image's journal:
/// rbd-relay's decoder must read it as a mirror peer that replays into the replica whose
/// id site-b itself reports. The raw omap values are printed (`rados listomapvals`), so a
/// run can capture them for a unit test.
#[test]
#[ignore = "cross-version: needs site-b on a newer release (make test-matrix)"]
fn the_journal_client_a_newer_rbd_mirror_registers_decodes_as_a_replaying_peer() {
    let env = cross_version_env();
    let (a, b) = (env.site_a().name.clone(), env.site_b().name.clone());
    let (_, spec) = make_image(&a, "matrix-journal-client");
    rbd(&a, &["feature", "enable", &spec, "journaling"]);
    rbd(&a, &["mirror", "image", "enable", &spec, "journal"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let (peer, replica_id) = loop {
        let status = journal_clients(&env, &spec);
        let replica_id =
            exists(&b, &spec).then(|| info(&b, &spec)["id"].as_str().unwrap().to_string());
        let replaying = status.mirror_peers().find(|c| {
            matches!(&c.meta, librbd::JournalClientMeta::MirrorPeer { state, .. }
                if *state == librbd::MirrorPeerState::Replaying)
        });
        match (replaying, replica_id) {
            (Some(peer), Some(id)) => break (peer.clone(), id),
            _ if std::time::Instant::now() > deadline => {
                panic!("no replaying mirror peer in the journal of {spec} within 120 s: {status:?}")
            }
            _ => std::thread::sleep(std::time::Duration::from_millis(500)),
        }
    };
    let image_id = info(&a, &spec)["id"].as_str().unwrap().to_string();
    let raw = Command::new("rados")
        .args(["--cluster", &a, "-p", "volumes", "listomapvals"])
        .arg(format!("journal.{image_id}"))
        .output()
        .unwrap();
    eprintln!(
        "matrix journal client: decoded {peer:?}\nraw omap of journal.{image_id}:\n{}",
        String::from_utf8_lossy(&raw.stdout)
    );
    let librbd::JournalClientMeta::MirrorPeer {
        image_id: peer_replica,
        sync_points,
        ..
    } = &peer.meta
    else {
        unreachable!("matched above")
    };
    assert_eq!(
        peer_replica, &replica_id,
        "the decoded replica id differs from the id {b} reports for its replica"
    );
    assert_eq!(
        *sync_points, 0,
        "a replaying peer has no pending sync point"
    );
    assert_eq!(peer.state, librbd::JournalClientState::Connected);
    assert!(
        !peer.id.is_empty(),
        "a peer client is named by its mirror uuid"
    );
    rbd(&a, &["mirror", "image", "disable", &spec]);
    wait_gone(&b, &spec, REPLICA_GONE_LIMIT);
    rbd(&a, &["rm", "--no-progress", &spec]);
}

/// The root directory the recorded cloud daemon `name` (`cinder-api.site-b`) runs in.
fn daemon_root(env: &testenv::Env, name: &str) -> String {
    let pid_file = env
        .state_dir()
        .join("openstack")
        .join("run")
        .join(format!("{name}.pid"));
    let text = std::fs::read_to_string(&pid_file)
        .unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()));
    let pid = text.split_whitespace().next().unwrap();
    std::fs::read_link(format!("/proc/{pid}/root"))
        .unwrap()
        .display()
        .to_string()
}

/// The environment with clouds, after checking the releases: site-b on Reef, and its
/// cloud's Cinder and Glance run from the trixie chroot (OpenStack 2025.1) while the source
/// cloud's run from the host (Zed).
fn cross_version_clouds() -> (testenv::Env, testenv::openstack::OpenStackInfo) {
    let _ = cross_version_env();
    let env = testenv::shared_with_openstack().expect("testenv with OpenStack");
    let os = env.openstack().expect("clouds").clone();
    for svc in ["cinder-api", "cinder-volume", "glance-api"] {
        let dst = daemon_root(&env, &format!("{svc}.{}", env.site_b().name));
        let src = daemon_root(&env, &format!("{svc}.{}", env.site_a().name));
        eprintln!("matrix: {svc} of site-a runs in {src}, of site-b in {dst}");
        assert!(
            dst.contains("trixie"),
            "{svc} of site-b runs in {dst}, not the trixie chroot"
        );
        assert_eq!(src, "/", "{svc} of site-a must run the host's OpenStack");
    }
    // the destination cloud's own Keystone, of its release; the source keeps the host's
    let dst_keystone = daemon_root(&env, "keystone-dst");
    let src_keystone = daemon_root(&env, "keystone");
    eprintln!("matrix: keystone of site-a runs in {src_keystone}, of site-b in {dst_keystone}");
    assert!(
        dst_keystone.contains("trixie"),
        "site-b's keystone runs in {dst_keystone}"
    );
    assert_eq!(src_keystone, "/", "site-a's keystone must be the host's");
    assert_ne!(os.source.keystone_url, os.destination.keystone_url);
    (env, os)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn client(os: &testenv::openstack::OpenStackInfo, cloud: &str) -> OpenStackClient {
    let sources = ConfigSources {
        clouds_files: vec![os.clouds_yaml.clone()],
        ..Default::default()
    };
    let cfg = CloudConfig::from_sources(&sources, Some(cloud)).unwrap();
    OpenStackClient::connect(cfg, Default::default())
        .await
        .unwrap()
}

/// `rbd-relay ARGS --output json` with the test clouds; the last JSON line, after asserting
/// success.
fn relay_json(os: &testenv::openstack::OpenStackInfo, args: &[&str], state: &Path) -> Value {
    let out = relay_env(
        &[args, &["--output", "json"]].concat(),
        state.to_str().unwrap(),
        &[("OS_CLIENT_CONFIG_FILE", os.clouds_yaml.to_str().unwrap())],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or_else(|| panic!("no JSON line\n{}", describe(&out)));
    assert_eq!(last["result"], "ok", "{last}\n{}", describe(&out));
    last
}

/// Cinder forgets volume `id` of `cloud` and its RBD image is removed.
fn drop_volume(
    os: &testenv::openstack::OpenStackInfo,
    cloud: &str,
    side: Side,
    cluster: &str,
    pool: &str,
    id: &str,
) {
    rt().block_on(async {
        let c = Cinder::new(client(os, cloud).await, side);
        let v = c.get_volume(id).await.unwrap();
        c.unmanage(id).await.unwrap();
        let _ = rbd_output(
            cluster,
            &[
                "rm",
                "--no-progress",
                &format!("{pool}/{}", v.rbd_image_name()),
            ],
        );
    });
}

fn adopts_a_volume_into_the_newer_cloud(mode: &str) {
    let (env, os) = cross_version_clouds();
    let (a, b) = (env.site_a().name.clone(), env.site_b().name.clone());
    let (image, spec) = make_image(&a, &format!("matrix-adopt-{mode}"));
    let original = info(&a, &spec)["features"].clone();
    let want = sha(&a, &spec);
    let state = tempfile::tempdir().unwrap();
    let name = format!("vol-{image}");
    let dst_pool = os.destination.volume_pool.clone();
    let result = relay_json(
        &os,
        &[
            "migrate",
            "volume",
            "--from",
            &a,
            "--to",
            &b,
            &spec,
            "--into",
            &dst_pool,
            "--mode",
            mode,
            "--adopt",
            "--os-cloud",
            &os.destination.admin_cloud,
            "--name",
            &name,
        ],
        state.path(),
    );
    assert_eq!(result["summary"]["sha256"], want.as_str(), "{result}");
    let id = result["summary"]["volume"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // asked independently: the 2025.1 Cinder has it, available, on its RBD backend
    let v = rt().block_on(async {
        Cinder::new(
            client(&os, &os.destination.admin_cloud).await,
            Side::Destination,
        )
        .get_volume(&id)
        .await
        .unwrap()
    });
    assert_eq!(v.status, "available");
    assert_eq!(v.size, 1, "24 MiB rounds up to 1 GiB");
    assert_eq!(v.name.as_deref(), Some(name.as_str()));
    assert_eq!(v.host.as_deref(), Some(os.destination.cinder_host.as_str()));
    // the copy was grown to the whole GiB Cinder records before the adoption: the source's
    // bytes first, then zeros
    assert_eq!(result["summary"]["grown_to"], 1u64 << 30, "{result}");
    let renamed = format!("{dst_pool}/volume-{id}");
    assert_eq!(
        info(&b, &renamed)["size"],
        1u64 << 30,
        "the image is 1 GiB too"
    );
    assert_eq!(
        sha_of_first(&b, &renamed, IMAGE_BYTES),
        want,
        "the adopted copy differs"
    );
    assert_eq!(info(&a, &spec)["features"], original, "source features");
    assert!(mirroring_off(&a, &spec), "mirroring left on at the source");
    wait_gone(&b, &spec, REPLICA_GONE_LIMIT);
    eprintln!("matrix adopt {mode}: volume {id} available in the 2025.1 cloud");
    drop_volume(
        &os,
        &os.destination.admin_cloud,
        Side::Destination,
        &b,
        &dst_pool,
        &id,
    );
    rbd(&a, &["rm", "--no-progress", &spec]);
}

#[test]
#[ignore = "cross-version: needs site-b and its cloud on newer releases (make test-matrix)"]
fn a_journal_migration_with_adopt_ends_available_in_a_2025_1_cinder() {
    adopts_a_volume_into_the_newer_cloud("journal");
}

#[test]
#[ignore = "cross-version: needs site-b and its cloud on newer releases (make test-matrix)"]
fn a_snapshot_migration_with_adopt_ends_available_in_a_2025_1_cinder() {
    adopts_a_volume_into_the_newer_cloud("snapshot");
}

#[test]
#[ignore = "cross-version: needs site-b and its cloud on newer releases (make test-matrix)"]
fn a_bootable_volume_of_a_zed_cloud_becomes_an_active_image_of_a_2025_1_glance() {
    let (env, os) = cross_version_clouds();
    let (a, b) = (env.site_a().name.clone(), env.site_b().name.clone());
    // the source: a bootable volume of the Zed cloud with known data
    let raw = testenv::unique_name("matrix-boot");
    let src_pool = os.source.volume_pool.clone();
    image_with_data(&a, &format!("{src_pool}/{raw}"), (5 << 20) + 77);
    let src = rt().block_on(async {
        Cinder::new(client(&os, &os.source.admin_cloud).await, Side::Source)
            .adopt(&AdoptRequest {
                target: HostTarget::CephPool {
                    pool: src_pool.clone(),
                    fsid: None,
                },
                rbd_image: raw.clone(),
                name: Some(format!("src-{raw}")),
                description: None,
                volume_type: None,
                availability_zone: None,
                bootable: true,
                metadata: Default::default(),
            })
            .await
            .unwrap()
    });
    let src_spec = format!("{src_pool}/{}", src.rbd_image);
    let want = sha(&a, &src_spec);
    let img_name = format!("img-{raw}");
    let state = tempfile::tempdir().unwrap();
    let result = relay_json(
        &os,
        &[
            "migrate",
            "bootable",
            "--from",
            &a,
            "--to",
            &b,
            "--source-cloud",
            &os.source.admin_cloud,
            "--os-cloud",
            &os.destination.admin_cloud,
            &src.volume.id,
            "--into",
            &os.destination.image_pool,
            "--source-pool",
            &os.source.image_pool,
            "--name",
            &img_name,
        ],
        state.path(),
    );
    let image = &result["summary"]["image"];
    let id = image["id"].as_str().unwrap().to_string();
    assert_eq!(image["status"], "active", "{result}");
    // asked independently: the 2025.1 Glance serves the source volume's bytes
    let (status, got, len) = rt().block_on(async {
        use sha2::Digest;
        let g = glance_rbd::Glance::new(client(&os, &os.destination.admin_cloud).await);
        let i = g.get_image(&id).await.unwrap();
        let mut dl = g.download(&id).await.unwrap();
        let mut h = sha2::Sha256::new();
        let mut len = 0u64;
        while let Some(chunk) = dl.next_chunk().await.unwrap() {
            h.update(&chunk);
            len += chunk.len() as u64;
        }
        let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        (i.status, hex, len)
    });
    assert_eq!(status, "active");
    assert_eq!(
        got, want,
        "Glance serves other bytes than the source volume ({len} bytes)"
    );
    eprintln!("matrix bootable: image {id} active in the 2025.1 Glance, {len} bytes = source");
    // clean up: the image (Glance deletes its RBD copy), the source volume and its data
    rt().block_on(async {
        glance_rbd::Glance::new(client(&os, &os.destination.admin_cloud).await)
            .delete_image(&id)
            .await
            .unwrap();
    });
    drop_volume(
        &os,
        &os.source.admin_cloud,
        Side::Source,
        &a,
        &src_pool,
        &src.volume.id,
    );
}
