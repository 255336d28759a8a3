//! The `rbd-relay` binary against the real Ceph pair and the two real OpenStack clouds of the
//! test environment (Keystone, Cinder, Glance): `migrate volume --adopt` end to end (the
//! volume is `available` in the destination cloud with the expected size and name, its RBD
//! image renamed to `volume-<id>`, the data equal to the source's), the source given as a
//! Cinder volume id of the source cloud, `adopt volume` alone (split roles, idempotent), and
//! the refusals: member credentials (clear message, nothing changed anywhere) and a wrong
//! Cinder host string (Cinder's own message, nothing changed). And `migrate bootable`: the
//! destination image is `active`, its min_disk at least the source volume's size and its
//! downloaded bytes equal the source volume's.
//!
//! Why this file is long (about 1100 lines) and stays one: every test here changes Cinder
//! state, and the test clouds keep Cinder's database in SQLite, which fails concurrent
//! writes; [`SERIAL`] keeps them one at a time, and that lock only holds within one test
//! binary. Split into two files, the two binaries could be run side by side and fail
//! spuriously. The Ceph-side helpers live in `testenv::probe`, the binary's in `common`.
//! The longest test (`migrate_bootable_registers_...`, ~180 lines) follows one run through
//! its recorded states (upload, image active, min_disk, bytes, cleanup): a split would
//! repeat the 5 MiB volume setup and upload per part.

#![allow(clippy::unwrap_used)] // test code: a failed setup step should panic with its message

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use cinder_manage::{AdoptRequest, Cinder, HostTarget, Side};
use openstack_client::{
    ApiRequest, ClientOptions, CloudConfig, ConfigSources, Method, OpenStackClient, ServiceType,
};
use serde_json::Value;
use testenv::probe::{exists, gone_within, image_with_data, info, rbd_output, sha, sha_of_first};

mod common;
use common::{relay_command, relay_env, REPLICA_GONE_LIMIT};

/// Cinder's test deployments keep their database in SQLite, which fails concurrent writes;
/// the tests of this file change Cinder state one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

struct Site {
    clouds_yaml: PathBuf,
    a: String,
    b: String,
    src_admin: String,
    dst_admin: String,
    dst_member: String,
    src_pool: String,
    dst_pool: String,
    dst_host: String,
    src_member: String,
    src_image_pool: String,
    dst_image_pool: String,
}

fn site() -> &'static Site {
    static SITE: OnceLock<Site> = OnceLock::new();
    SITE.get_or_init(|| {
        let env = testenv::shared_with_openstack().expect("test environment with OpenStack");
        let os = env.openstack().expect("OpenStack clouds").clone();
        Site {
            clouds_yaml: os.clouds_yaml.clone(),
            a: env.site_a().name.clone(),
            b: env.site_b().name.clone(),
            src_admin: os.source.admin_cloud.clone(),
            dst_admin: os.destination.admin_cloud.clone(),
            dst_member: os.destination.member_cloud.clone(),
            src_pool: os.source.volume_pool.clone(),
            dst_pool: os.destination.volume_pool.clone(),
            dst_host: os.destination.cinder_host.clone(),
            src_member: os.source.member_cloud.clone(),
            src_image_pool: os.source.image_pool.clone(),
            dst_image_pool: os.destination.image_pool.clone(),
        }
    })
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs the binary with the test clouds; returns (success, JSON lines, stderr).
fn relay(args: &[&str], state: &str) -> (bool, Vec<Value>, String) {
    let out = relay_env(
        &[args, &["--output", "json"]].concat(),
        state,
        &[(
            "OS_CLIENT_CONFIG_FILE",
            site().clouds_yaml.to_str().unwrap(),
        )],
    );
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or(Value::String(l.to_string())))
        .collect();
    (
        out.status.success(),
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn client(cloud: &str) -> OpenStackClient {
    let sources = ConfigSources {
        clouds_files: vec![site().clouds_yaml.clone()],
        ..Default::default()
    };
    let cfg = CloudConfig::from_sources(&sources, Some(cloud)).unwrap();
    OpenStackClient::connect(cfg, ClientOptions::default())
        .await
        .unwrap()
}

async fn cinder(cloud: &str, side: Side) -> Cinder {
    Cinder::new(client(cloud).await, side)
}

/// Every volume of every project in the cloud whose name is `name`.
async fn volumes_named(cloud: &str, name: &str) -> Vec<Value> {
    let c = client(cloud).await;
    let v: Value = c
        .send_json(
            &ApiRequest::new(ServiceType::BlockStorage, Method::GET, "volumes/detail")
                .microversion("volume", cinder_manage::MICROVERSION_NEEDED.to_string())
                .query("all_tenants", "1")
                .query("name", name),
        )
        .await
        .unwrap();
    v["volumes"].as_array().cloned().unwrap_or_default()
}

/// Cleans up an adopted volume: Cinder forgets it, the RBD image is removed.
async fn drop_volume(cloud: &str, side: Side, pool_cluster: &str, pool: &str, id: &str) {
    let c = cinder(cloud, side).await;
    let v = c.get_volume(id).await.unwrap();
    c.unmanage(id).await.unwrap();
    let _ = rbd_output(
        pool_cluster,
        &[
            "rm",
            "--no-progress",
            &format!("{pool}/{}", v.rbd_image_name()),
        ],
    );
}

fn source_untouched(cluster: &str, spec: &str, features: &Value) {
    let i = info(cluster, spec);
    assert_eq!(&i["features"], features, "source features unchanged");
    assert!(
        i.get("mirroring").is_none_or(|m| m["state"] == "disabled"),
        "source not mirrored: {i}"
    );
}

#[test]
fn migrate_volume_with_adopt_ends_available_in_destination() {
    let s = site();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let name = testenv::unique_name("flow-adopt");
    let spec = format!("{}/{name}", s.src_pool);
    image_with_data(&s.a, &spec, (24 << 20) + 333);
    let features = info(&s.a, &spec)["features"].clone();
    let want = sha(&s.a, &spec);
    let state = tempfile::tempdir().unwrap();
    let state = state.path().to_str().unwrap();
    let vol_name = format!("vol-{name}");
    let args = [
        "migrate",
        "volume",
        "--from",
        &s.a,
        "--to",
        &s.b,
        &spec,
        "--into",
        &s.dst_pool,
        "--adopt",
        "--os-cloud",
        &s.dst_admin,
        "--name",
        &vol_name,
    ];

    // the dry run shows the adoption right after the clone of the promoted replica (the
    // destination image is usable then), before the verification, and changes nothing
    let (ok, lines, err) = relay(&[&args[..], &["--dry-run"]].concat(), state);
    assert!(ok, "{err}");
    let steps = lines.last().unwrap()["plan"]["steps"]
        .as_array()
        .unwrap()
        .clone();
    let kinds: Vec<&str> = steps.iter().map(|s| s["step"].as_str().unwrap()).collect();
    let at = |k: &str| kinds.iter().position(|x| *x == k);
    // (the 24 MiB image is grown to 1 GiB right before its adoption: Cinder records 1 GiB)
    assert_eq!(
        at("grow_copy"),
        at("clone_replica").map(|i| i + 1),
        "{kinds:?}"
    );
    assert_eq!(
        at("adopt_volume"),
        at("grow_copy").map(|i| i + 1),
        "{kinds:?}"
    );
    assert!(at("adopt_volume") < at("verify_handover"), "{kinds:?}");
    source_untouched(&s.a, &spec, &features);

    let t = std::time::Instant::now();
    let (ok, lines, err) = relay(&args, state);
    assert!(ok, "migration failed: {err}\n{lines:?}");
    eprintln!("migrate --adopt took {:.1}s", t.elapsed().as_secs_f64());
    let result = lines.last().unwrap();
    assert_eq!(result["result"], "ok", "{result}");
    assert_eq!(result["summary"]["sha256"], want);
    let vol = &result["summary"]["volume"];
    let id = vol["id"].as_str().unwrap().to_string();
    assert_eq!(vol["rbd_image"], format!("volume-{id}"));

    // what the destination cloud says, asked independently
    let v = rt().block_on(async {
        cinder(&s.dst_admin, Side::Destination)
            .await
            .get_volume(&id)
            .await
            .unwrap()
    });
    assert_eq!(v.status, "available");
    assert_eq!(v.size, 1, "24 MiB rounds up to 1 GiB");
    assert_eq!(v.name.as_deref(), Some(vol_name.as_str()));
    assert_eq!(v.host.as_deref(), Some(s.dst_host.as_str()));

    // Ceph: the copy was renamed to volume-<id> and holds the source's data
    let renamed = format!("{}/volume-{id}", s.dst_pool);
    assert!(exists(&s.b, &renamed));
    assert!(!exists(&s.b, &format!("{}/{name}", s.dst_pool)));
    assert!(
        gone_within(&s.b, &spec, REPLICA_GONE_LIMIT),
        "replica removed"
    );
    assert_eq!(sha_of_first(&s.b, &renamed, (24 << 20) + 333), want);
    assert_eq!(
        info(&s.b, &renamed)["size"],
        1u64 << 30,
        "grown to what Cinder records"
    );
    source_untouched(&s.a, &spec, &features);

    // a re-run finds everything done and adopts nothing more
    let (ok, lines, err) = relay(&args, state);
    assert!(ok, "{err}");
    let again = lines.last().unwrap();
    assert_eq!(again["summary"]["already_done"], true);
    assert_eq!(again["summary"]["volume"]["id"], id.as_str());
    assert_eq!(
        rt().block_on(volumes_named(&s.dst_admin, &vol_name)).len(),
        1
    );

    rt().block_on(drop_volume(
        &s.dst_admin,
        Side::Destination,
        &s.b,
        &s.dst_pool,
        &id,
    ));
    let _ = rbd_output(&s.a, &["rm", "--no-progress", &spec]);
}

#[test]
fn member_credentials_are_refused_before_anything_changes() {
    let s = site();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let name = testenv::unique_name("flow-member");
    let spec = format!("{}/{name}", s.src_pool);
    image_with_data(&s.a, &spec, 1 << 20);
    let features = info(&s.a, &spec)["features"].clone();
    let state = tempfile::tempdir().unwrap();
    let vol_name = format!("vol-{name}");
    let (ok, lines, err) = relay(
        &[
            "migrate",
            "volume",
            "--from",
            &s.a,
            "--to",
            &s.b,
            &spec,
            "--into",
            &s.dst_pool,
            "--adopt",
            "--os-cloud",
            &s.dst_member,
            "--name",
            &vol_name,
        ],
        state.path().to_str().unwrap(),
    );
    assert!(!ok, "a member must not adopt: {lines:?}");
    assert!(err.contains("needs an admin role"), "{err}");
    assert!(err.contains(&s.dst_member), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    assert_eq!(lines.last().unwrap()["result"], "error");
    source_untouched(&s.a, &spec, &features);
    assert!(
        !exists(&s.b, &format!("{}/{name}", s.dst_pool)),
        "no copy made"
    );
    assert!(!exists(&s.b, &spec), "no replica made");
    assert!(rt()
        .block_on(volumes_named(&s.dst_admin, &vol_name))
        .is_empty());
    let _ = rbd_output(&s.a, &["rm", "--no-progress", &spec]);
}

#[test]
fn wrong_cinder_host_shows_cinders_message_and_changes_nothing() {
    let s = site();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let name = testenv::unique_name("flow-host");
    let spec = format!("{}/{name}", s.src_pool);
    image_with_data(&s.a, &spec, 1 << 20);
    let features = info(&s.a, &spec)["features"].clone();
    let state = tempfile::tempdir().unwrap();
    let (ok, _, err) = relay(
        &[
            "migrate",
            "volume",
            "--from",
            &s.a,
            "--to",
            &s.b,
            &spec,
            "--into",
            &s.dst_pool,
            "--adopt",
            "--os-cloud",
            &s.dst_admin,
            "--cinder-host",
            "nohost@ceph#ceph",
        ],
        state.path().to_str().unwrap(),
    );
    assert!(!ok);
    assert!(err.contains("nohost@ceph#ceph"), "{err}");
    assert!(
        err.contains("could not be found"),
        "Cinder's message: {err}"
    );
    assert!(err.contains(&s.dst_host), "known pools listed: {err}");
    source_untouched(&s.a, &spec, &features);
    assert!(!exists(&s.b, &format!("{}/{name}", s.dst_pool)));
    let _ = rbd_output(&s.a, &["rm", "--no-progress", &spec]);
}

#[test]
fn adopt_volume_alone_is_idempotent() {
    let s = site();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let name = testenv::unique_name("flow-split");
    let spec = format!("{}/{name}", s.dst_pool);
    image_with_data(&s.b, &spec, (1 << 30) + 4096);
    let want = sha(&s.b, &spec);
    let state = tempfile::tempdir().unwrap();
    let state = state.path().to_str().unwrap();
    let vol_name = format!("vol-{name}");
    let args = [
        "adopt",
        "volume",
        &spec,
        "--os-cloud",
        &s.dst_admin,
        "--name",
        &vol_name,
    ];
    let (ok, lines, err) = relay(&args, state);
    assert!(ok, "{err}");
    let v = &lines.last().unwrap()["volume"];
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(v["status"], "available");
    assert_eq!(v["size_gib"], 2, "1 GiB + 4 KiB rounds up to 2 GiB");
    assert_eq!(sha(&s.b, &format!("{}/volume-{id}", s.dst_pool)), want);
    assert!(!exists(&s.b, &spec));
    // again: the same volume, no second record
    let (ok, lines, err) = relay(&args, state);
    assert!(ok, "{err}");
    assert_eq!(lines.last().unwrap()["volume"]["id"], id.as_str());
    assert_eq!(
        rt().block_on(volumes_named(&s.dst_admin, &vol_name)).len(),
        1
    );
    // a member is refused with the clear message
    let (ok, _, err) = relay(
        &["adopt", "volume", &spec, "--os-cloud", &s.dst_member],
        state,
    );
    assert!(!ok);
    assert!(err.contains("needs an admin role"), "{err}");
    rt().block_on(drop_volume(
        &s.dst_admin,
        Side::Destination,
        &s.b,
        &s.dst_pool,
        &id,
    ));
}

#[test]
fn source_given_as_a_cinder_volume_id_of_the_source_cloud() {
    let s = site();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let name = testenv::unique_name("flow-srcvol");
    let raw = format!("{}/{name}", s.src_pool);
    image_with_data(&s.a, &raw, 3 << 20);
    let want = sha(&s.a, &raw);
    let src_name = format!("src-{name}");
    // the source volume: the image adopted by the source cloud's Cinder
    let src = adopt_in_source_cloud(
        s,
        &AdoptRequest {
            target: HostTarget::CephPool {
                pool: s.src_pool.clone(),
                fsid: None,
            },
            rbd_image: name.clone(),
            name: Some(src_name.clone()),
            description: None,
            volume_type: None,
            availability_zone: None,
            bootable: false,
            metadata: Default::default(),
        },
    );
    let src_spec = format!("{}/{}", s.src_pool, src.rbd_image);
    let features = info(&s.a, &src_spec)["features"].clone();
    let state = tempfile::tempdir().unwrap();
    let (ok, lines, err) = relay(
        &[
            "migrate",
            "volume",
            "--from",
            &s.a,
            "--to",
            &s.b,
            "--source-cloud",
            &s.src_admin,
            &src.volume.id,
            "--into",
            &s.dst_pool,
            "--adopt",
            "--os-cloud",
            &s.dst_admin,
        ],
        state.path().to_str().unwrap(),
    );
    assert!(ok, "{err}\n{lines:?}");
    let result = lines.last().unwrap();
    assert_eq!(result["summary"]["sha256"], want);
    let vol = &result["summary"]["volume"];
    assert_eq!(vol["name"], src_name.as_str(), "the source volume's name");
    assert_eq!(vol["status"], "available");
    let id = vol["id"].as_str().unwrap().to_string();
    source_untouched(&s.a, &src_spec, &features);
    let still = rt().block_on(async {
        cinder(&s.src_admin, Side::Source)
            .await
            .get_volume(&src.volume.id)
            .await
            .unwrap()
    });
    assert_eq!(still.status, "available", "the source volume is untouched");
    rt().block_on(drop_volume(
        &s.dst_admin,
        Side::Destination,
        &s.b,
        &s.dst_pool,
        &id,
    ));
    rt().block_on(drop_volume(
        &s.src_admin,
        Side::Source,
        &s.a,
        &s.src_pool,
        &src.volume.id,
    ));
}

/// The source volume of the bootable tests: known data adopted by the source cloud's Cinder.
fn source_volume(s: &Site, name: &str, len: usize) -> cinder_manage::AdoptedVolume {
    let raw = format!("{}/{name}", s.src_pool);
    image_with_data(&s.a, &raw, len);
    adopt_in_source_cloud(
        s,
        &AdoptRequest {
            target: HostTarget::CephPool {
                pool: s.src_pool.clone(),
                fsid: None,
            },
            rbd_image: name.to_string(),
            name: Some(format!("src-{name}")),
            description: None,
            volume_type: None,
            availability_zone: None,
            bootable: true,
            metadata: Default::default(),
        },
    )
}

/// A test's source volume, adopted by the source cloud's Cinder. The test clouds keep
/// Cinder's database in SQLite, where a write can fail at once with "database is locked"
/// while the other Cinder processes of the cloud write (seen here as HTTP 500 from the
/// manage request, or a volume ending in `error`: docs/troubleshooting.md, test
/// environment). Neither leaves a volume record behind (the API reverts, `adopt` unmanages
/// a failed one), so this fixture tries up to three times; the tests' subject is elsewhere.
fn adopt_in_source_cloud(s: &Site, req: &AdoptRequest) -> cinder_manage::AdoptedVolume {
    rt().block_on(async {
        let c = cinder(&s.src_admin, Side::Source).await;
        let mut tries = 0;
        loop {
            tries += 1;
            match c.adopt(req).await {
                Ok(v) => return v,
                Err(e) if tries < 3 => {
                    eprintln!("source volume fixture: adopting failed ({e}); trying again");
                    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                }
                Err(e) => panic!("adopting the source volume failed {tries} times: {e}"),
            }
        }
    })
}

/// Images of cloud `cloud` named `name` (any owner the credentials see).
async fn images_named(cloud: &str, name: &str) -> Vec<Value> {
    let c = client(cloud).await;
    let v: Value = c
        .send_json(
            &ApiRequest::new(ServiceType::Image, Method::GET, "v2/images").query("name", name),
        )
        .await
        .unwrap();
    v["images"].as_array().cloned().unwrap_or_default()
}

/// Streams image `id` from Glance and compares it with `rbd export` of `spec`, byte for byte.
async fn download_equals_export(cloud: &str, id: &str, cluster: &str, spec: &str) -> u64 {
    use std::io::Read;
    let g = glance_rbd::Glance::new(client(cloud).await);
    let mut dl = g.download(id).await.unwrap();
    let mut export = Command::new("rbd")
        .args(["--cluster", cluster, "export", "--no-progress", spec, "-"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = export.stdout.take().unwrap();
    let mut total = 0u64;
    let mut want = vec![0u8; 0];
    while let Some(chunk) = dl.next_chunk().await.unwrap() {
        want.resize(chunk.len(), 0);
        out.read_exact(&mut want).unwrap();
        assert!(
            want[..] == chunk[..],
            "bytes differ in the chunk at offset {total}"
        );
        total += chunk.len() as u64;
    }
    let mut rest = Vec::new();
    out.read_to_end(&mut rest).unwrap();
    assert!(
        rest.is_empty(),
        "the image has {total} bytes, the volume {} more",
        rest.len()
    );
    export.wait().unwrap();
    total
}

#[test]
fn migrate_bootable_registers_an_active_image_with_the_volumes_bytes() {
    let s = site();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let name = testenv::unique_name("flow-boot");
    let src = source_volume(s, &name, (5 << 20) + 77);
    let src_spec = format!("{}/{}", s.src_pool, src.rbd_image);
    let src_features = info(&s.a, &src_spec)["features"].clone();
    let img_name = format!("img-{name}");
    let state = tempfile::tempdir().unwrap();
    let (ok, lines, err) = relay(
        &[
            "migrate",
            "bootable",
            "--from",
            &s.a,
            "--to",
            &s.b,
            "--source-cloud",
            &s.src_admin,
            "--os-cloud",
            &s.dst_admin,
            &src.volume.id,
            "--into",
            &s.dst_image_pool,
            "--source-pool",
            &s.src_image_pool,
            "--name",
            &img_name,
            "--dry-run",
        ],
        state.path().to_str().unwrap(),
    );
    assert!(ok, "{err}");
    let dry = lines.last().unwrap();
    let upload = &dry["plan"]["steps"][0];
    assert_eq!(upload["step"], "upload_to_image", "{dry}");
    assert_eq!(upload["volume_id"], src.volume.id.as_str(), "{dry}");
    assert!(dry["then"].to_string().contains("min_disk"), "{dry}");
    assert!(
        rt().block_on(images_named(&s.src_admin, &img_name))
            .is_empty(),
        "the dry run uploaded nothing"
    );
    let t = std::time::Instant::now();
    let (ok, lines, err) = relay(
        &[
            "migrate",
            "bootable",
            "--from",
            &s.a,
            "--to",
            &s.b,
            "--source-cloud",
            &s.src_admin,
            "--os-cloud",
            &s.dst_admin,
            &src.volume.id,
            "--into",
            &s.dst_image_pool,
            "--source-pool",
            &s.src_image_pool,
            "--name",
            &img_name,
        ],
        state.path().to_str().unwrap(),
    );
    assert!(ok, "{err}\n{lines:?}");
    eprintln!("migrate bootable took {:.1}s", t.elapsed().as_secs_f64());
    let result = lines.last().unwrap();
    let image = &result["summary"]["image"];
    let id = image["id"].as_str().unwrap().to_string();
    assert_eq!(image["status"], "active", "{result}");
    assert!(
        image["min_disk_gib"].as_u64().unwrap() >= src.volume.size,
        "min_disk {} < volume size {}",
        image["min_disk_gib"],
        src.volume.size
    );
    // the copy in the destination Glance pool, with the protected snapshot Glance reads
    let copy = format!(
        "{}/{}",
        s.dst_image_pool,
        result["summary"]["copy"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
    );
    let snaps: Value = serde_json::from_slice(
        &rbd_output(&s.b, &["snap", "ls", &copy, "--format", "json"]).stdout,
    )
    .unwrap();
    assert!(
        snaps
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["name"] == "snap" && x["protected"] == "true"),
        "{snaps}"
    );
    // asked independently: Glance serves the source volume's bytes
    let bytes = rt().block_on(download_equals_export(&s.dst_admin, &id, &s.a, &src_spec));
    assert!(bytes >= (5 << 20) + 77);
    let i = rt().block_on(async {
        glance_rbd::Glance::new(client(&s.dst_admin).await)
            .get_image(&id)
            .await
            .unwrap()
    });
    assert_eq!(i.status, "active");
    assert_eq!(i.name.as_deref(), Some(img_name.as_str()));
    // the source: volume untouched, the uploaded image's features back, mirroring off
    source_untouched(&s.a, &src_spec, &src_features);
    let src_image = result["summary"]["source"]
        .as_str()
        .unwrap()
        .split_once(':')
        .unwrap()
        .1
        .to_string();
    let si = info(&s.a, &src_image);
    assert!(
        si.get("mirroring").is_none_or(|m| m["state"] == "disabled"),
        "{si}"
    );
    assert!(
        gone_within(&s.b, &src_image, REPLICA_GONE_LIMIT),
        "replica removed"
    );

    // a re-run finds it done
    let (ok, lines, err) = relay(
        &[
            "migrate",
            "bootable",
            "--from",
            &s.a,
            "--to",
            &s.b,
            "--source-cloud",
            &s.src_admin,
            "--os-cloud",
            &s.dst_admin,
            &src.volume.id,
            "--into",
            &s.dst_image_pool,
            "--source-pool",
            &s.src_image_pool,
            "--name",
            &img_name,
        ],
        state.path().to_str().unwrap(),
    );
    assert!(ok, "{err}");
    assert_eq!(lines.last().unwrap()["summary"]["image"]["id"], id.as_str());
    assert_eq!(
        rt().block_on(images_named(&s.dst_admin, &img_name)).len(),
        1
    );
    let (ok, lines, err) = relay(&["list"], state.path().to_str().unwrap());
    assert!(ok, "list reads the state dir of a bootable run: {err}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["outcome"], "finished");

    // clean up: both images belong to this test (deleting deletes their RBD data)
    rt().block_on(async {
        let dg = glance_rbd::Glance::new(client(&s.dst_admin).await);
        dg.delete_image(&id).await.unwrap();
        let sg = glance_rbd::Glance::new(client(&s.src_admin).await);
        for im in images_named(&s.src_admin, &img_name).await {
            sg.delete_image(im["id"].as_str().unwrap()).await.unwrap();
        }
    });
    rt().block_on(drop_volume(
        &s.src_admin,
        Side::Source,
        &s.a,
        &s.src_pool,
        &src.volume.id,
    ));
}

#[test]
fn migrate_bootable_with_member_credentials_changes_nothing() {
    let s = site();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let name = testenv::unique_name("flow-bootm");
    let src = source_volume(s, &name, 1 << 20);
    let img_name = format!("img-{name}");
    let state = tempfile::tempdir().unwrap();
    let (ok, _, err) = relay(
        &[
            "migrate",
            "bootable",
            "--from",
            &s.a,
            "--to",
            &s.b,
            "--source-cloud",
            &s.src_admin,
            "--os-cloud",
            &s.dst_member,
            &src.volume.id,
            "--into",
            &s.dst_image_pool,
            "--name",
            &img_name,
        ],
        state.path().to_str().unwrap(),
    );
    assert!(!ok);
    assert!(err.contains("nothing was changed"), "{err}");
    assert!(err.contains(&s.dst_member), "{err}");
    assert!(
        rt().block_on(images_named(&s.src_admin, &img_name))
            .is_empty(),
        "no upload was made"
    );
    assert!(rt()
        .block_on(images_named(&s.dst_admin, &img_name))
        .is_empty());
    let _ = &s.src_member;
    rt().block_on(drop_volume(
        &s.src_admin,
        Side::Source,
        &s.a,
        &s.src_pool,
        &src.volume.id,
    ));
}

#[test]
fn register_image_alone_is_idempotent_and_refuses_members() {
    let s = site();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let name = testenv::unique_name("flow-reg");
    let spec = format!("{}/{name}", s.dst_image_pool);
    image_with_data(&s.b, &spec, (2 << 20) + 5);
    let state = tempfile::tempdir().unwrap();
    let state = state.path().to_str().unwrap();
    let img_name = format!("img-{name}");
    let args = [
        "register",
        "image",
        &spec,
        "--to",
        &s.b,
        "--os-cloud",
        &s.dst_admin,
        "--name",
        &img_name,
        "--min-disk",
        "1",
    ];
    // the snapshot is the Ceph destination admin's: refused, with the commands to run
    let (ok, _, err) = relay(&args, state);
    assert!(!ok);
    assert!(err.contains("snap protect"), "{err}");
    assert!(rt()
        .block_on(images_named(&s.dst_admin, &img_name))
        .is_empty());
    for op in ["create", "protect"] {
        let out = rbd_output(&s.b, &["snap", op, &format!("{spec}@snap")]);
        assert!(out.status.success(), "{out:?}");
    }
    // a member is refused before anything is created
    let (ok, _, err) = relay(
        &[
            "register",
            "image",
            &spec,
            "--to",
            &s.b,
            "--os-cloud",
            &s.dst_member,
            "--name",
            &img_name,
        ],
        state,
    );
    assert!(!ok);
    assert!(err.contains("admin or service"), "{err}");
    assert!(rt()
        .block_on(images_named(&s.dst_admin, &img_name))
        .is_empty());

    let (ok, lines, err) = relay(&args, state);
    assert!(ok, "{err}");
    let i = &lines.last().unwrap()["image"];
    let id = i["id"].as_str().unwrap().to_string();
    assert_eq!(i["status"], "active");
    assert_eq!(i["min_disk_gib"], 1);
    let bytes = rt().block_on(download_equals_export(&s.dst_admin, &id, &s.b, &spec));
    assert_eq!(bytes, (2 << 20) + 5);
    let (ok, lines, err) = relay(&args, state);
    assert!(ok, "{err}");
    assert_eq!(lines.last().unwrap()["image"]["id"], id.as_str());
    assert_eq!(
        rt().block_on(images_named(&s.dst_admin, &img_name)).len(),
        1
    );
    // deleting the image deletes its data (Glance's rbd store owns it): this test's data
    rt().block_on(async {
        glance_rbd::Glance::new(client(&s.dst_admin).await)
            .delete_image(&id)
            .await
            .unwrap()
    });
}

#[test]
fn killed_at_the_adoption_resumes_with_one_volume() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let s = site();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let name = testenv::unique_name("flow-kill");
    let spec = format!("{}/{name}", s.src_pool);
    image_with_data(&s.a, &spec, 4 << 20);
    let state = tempfile::tempdir().unwrap();
    let state = state.path().to_str().unwrap();
    let vol_name = format!("vol-{name}");
    let args = [
        "migrate",
        "volume",
        "--from",
        &s.a,
        "--to",
        &s.b,
        &spec,
        "--into",
        &s.dst_pool,
        "--adopt",
        "--os-cloud",
        &s.dst_admin,
        "--name",
        &vol_name,
    ];
    let mut child = relay_command()
        .args(args)
        .args(["--output", "json", "--state-dir", state])
        .env("OS_CLIENT_CONFIG_FILE", &s.clouds_yaml)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut killed = false;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let v: Value = serde_json::from_str(&line.unwrap()).unwrap_or(Value::Null);
        if v["event"] == "step_started" && v["step"] == "adopt_volume" {
            child.kill().unwrap();
            killed = true;
            break;
        }
    }
    child.wait().unwrap();
    assert!(killed, "the adoption step was reached");
    let (ok, lines, err) = relay(&args, state);
    assert!(ok, "{err}\n{lines:?}");
    let v = &lines.last().unwrap()["summary"]["volume"];
    assert_eq!(v["status"], "available");
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(
        rt().block_on(volumes_named(&s.dst_admin, &vol_name)).len(),
        1
    );
    rt().block_on(drop_volume(
        &s.dst_admin,
        Side::Destination,
        &s.b,
        &s.dst_pool,
        &id,
    ));
    let _ = rbd_output(&s.a, &["rm", "--no-progress", &spec]);
}

#[test]
fn bootable_killed_at_the_upload_resumes_with_one_image() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let s = site();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let name = testenv::unique_name("flow-bootk");
    let src = source_volume(s, &name, 2 << 20);
    let img_name = format!("img-{name}");
    let state = tempfile::tempdir().unwrap();
    let state = state.path().to_str().unwrap();
    let args = [
        "migrate",
        "bootable",
        "--from",
        &s.a,
        "--to",
        &s.b,
        "--source-cloud",
        &s.src_admin,
        "--os-cloud",
        &s.dst_admin,
        &src.volume.id,
        "--into",
        &s.dst_image_pool,
        "--source-pool",
        &s.src_image_pool,
        "--name",
        &img_name,
    ];
    let mut child = relay_command()
        .args(args)
        .args(["--output", "json", "--state-dir", state])
        .env("OS_CLIENT_CONFIG_FILE", &s.clouds_yaml)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut killed = false;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let v: Value = serde_json::from_str(&line.unwrap()).unwrap_or(Value::Null);
        if v["event"] == "step_started" && v["step"] == "upload_to_image" {
            child.kill().unwrap();
            killed = true;
            break;
        }
    }
    child.wait().unwrap();
    assert!(killed, "the upload step was reached");
    let (ok, lines, err) = relay(&args, state);
    assert!(ok, "{err}\n{lines:?}");
    let id = lines.last().unwrap()["summary"]["image"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let reused = lines.iter().any(|l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.contains("interrupted run's upload"))
    });
    eprintln!("re-run reused the interrupted upload: {reused}");
    let sources = rt().block_on(images_named(&s.src_admin, &img_name));
    assert_eq!(
        sources.len(),
        1,
        "one upload in the source cloud: {sources:?}"
    );
    assert_eq!(
        rt().block_on(images_named(&s.dst_admin, &img_name)).len(),
        1
    );
    rt().block_on(async {
        glance_rbd::Glance::new(client(&s.dst_admin).await)
            .delete_image(&id)
            .await
            .unwrap();
        let sg = glance_rbd::Glance::new(client(&s.src_admin).await);
        for im in &sources {
            sg.delete_image(im["id"].as_str().unwrap()).await.unwrap();
        }
    });
    rt().block_on(drop_volume(
        &s.src_admin,
        Side::Source,
        &s.a,
        &s.src_pool,
        &src.volume.id,
    ));
}

/// The state a run leaves when it dies after Cinder accepted the upload but before the image
/// id was recorded: the `.uploading` mark and an image of that name in the source cloud. The
/// re-run takes that image over instead of uploading a second one.
#[test]
fn bootable_rerun_takes_over_an_upload_whose_answer_was_lost() {
    use cinder_manage::UploadToImageRequest;
    let s = site();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let name = testenv::unique_name("flow-bootl");
    let src = source_volume(s, &name, 2 << 20);
    let img_name = format!("img-{name}");
    let state = tempfile::tempdir().unwrap();
    std::fs::write(
        state
            .path()
            .join(format!("bootable_{}.uploading", src.volume.id)),
        &img_name,
    )
    .unwrap();
    let uploaded = rt().block_on(async {
        let c = client(&s.src_admin).await;
        Cinder::new(c.clone(), Side::Source)
            .upload_to_image(
                &UploadToImageRequest::raw(&src.volume.id, &img_name),
                &glance_rbd::Glance::new(c),
            )
            .await
            .unwrap()
    });
    let (ok, lines, err) = relay(
        &[
            "migrate",
            "bootable",
            "--from",
            &s.a,
            "--to",
            &s.b,
            "--source-cloud",
            &s.src_admin,
            "--os-cloud",
            &s.dst_admin,
            &src.volume.id,
            "--into",
            &s.dst_image_pool,
            "--source-pool",
            &s.src_image_pool,
            "--name",
            &img_name,
        ],
        state.path().to_str().unwrap(),
    );
    assert!(ok, "{err}\n{lines:?}");
    assert!(
        lines.iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.contains(&uploaded.image.id))),
        "the re-run says it took over image {}: {lines:?}",
        uploaded.image.id
    );
    let result = lines.last().unwrap();
    assert!(result["summary"]["source"]
        .as_str()
        .unwrap()
        .ends_with(&uploaded.image.id));
    let id = result["summary"]["image"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        rt().block_on(images_named(&s.src_admin, &img_name)).len(),
        1
    );
    rt().block_on(async {
        glance_rbd::Glance::new(client(&s.dst_admin).await)
            .delete_image(&id)
            .await
            .unwrap();
        glance_rbd::Glance::new(client(&s.src_admin).await)
            .delete_image(&uploaded.image.id)
            .await
            .unwrap();
    });
    rt().block_on(drop_volume(
        &s.src_admin,
        Side::Source,
        &s.a,
        &s.src_pool,
        &src.volume.id,
    ));
}

/// An image of 256 MiB is grown to 1 GiB before Cinder adopts it (Cinder records 1 GiB),
/// its first 256 MiB equal to the source; the summary says so. With --no-grow the same
/// migration is refused at preflight and nothing changes.
#[test]
fn an_image_not_a_whole_gib_is_grown_to_one_before_the_adoption_or_refused_with_no_grow() {
    let s = site();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let name = testenv::unique_name("flow-grow");
    let spec = format!("{}/{name}", s.src_pool);
    let len: u64 = 256 << 20;
    image_with_data(&s.a, &spec, len as usize);
    let features = info(&s.a, &spec)["features"].clone();
    let want = sha(&s.a, &spec);
    let state = tempfile::tempdir().unwrap();
    let state = state.path().to_str().unwrap();
    let vol_name = format!("vol-{name}");
    let args = [
        "migrate",
        "volume",
        "--from",
        &s.a,
        "--to",
        &s.b,
        &spec,
        "--into",
        &s.dst_pool,
        "--adopt",
        "--os-cloud",
        &s.dst_admin,
        "--name",
        &vol_name,
    ];

    let (ok, _, err) = relay(&[&args[..], &["--no-grow"]].concat(), state);
    assert!(!ok, "--no-grow must refuse a 256 MiB image");
    assert!(err.contains("not a whole GiB"), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    source_untouched(&s.a, &spec, &features);
    assert!(!exists(&s.b, &spec), "no replica made");
    assert!(
        !exists(&s.b, &format!("{}/{name}", s.dst_pool)),
        "no copy made"
    );

    let (ok, lines, err) = relay(&args, state);
    assert!(ok, "migration failed: {err}\n{lines:?}");
    let result = lines.last().unwrap();
    let summary = &result["summary"];
    assert_eq!(summary["sha256"], want);
    assert_eq!(summary["bytes"], len);
    assert_eq!(
        summary["grown_to"],
        1u64 << 30,
        "the summary says so: {result}"
    );
    assert!(
        summary["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|st| st[0] == "grow_copy"),
        "{result}"
    );
    let id = summary["volume"]["id"].as_str().unwrap().to_string();
    let v = rt().block_on(async {
        cinder(&s.dst_admin, Side::Destination)
            .await
            .get_volume(&id)
            .await
            .unwrap()
    });
    assert_eq!(v.status, "available");
    assert_eq!(v.size, 1, "Cinder records 1 GiB");
    let renamed = format!("{}/volume-{id}", s.dst_pool);
    assert_eq!(
        info(&s.b, &renamed)["size"],
        1u64 << 30,
        "the image is 1 GiB too"
    );
    assert_eq!(
        sha_of_first(&s.b, &renamed, len),
        want,
        "every source byte kept"
    );
    source_untouched(&s.a, &spec, &features);
    assert_eq!(info(&s.a, &spec)["size"], len, "the source is not grown");

    rt().block_on(drop_volume(
        &s.dst_admin,
        Side::Destination,
        &s.b,
        &s.dst_pool,
        &id,
    ));
    let _ = rbd_output(&s.a, &["rm", "--no-progress", &spec]);
}

/// A bootable source volume with image metadata, migrated live (`--live --adopt`, given by
/// its Cinder volume id in the source cloud), is adopted as a bootable volume carrying the
/// source volume's image metadata.
#[test]
fn a_bootable_volume_migrated_live_is_adopted_bootable_with_its_image_metadata() {
    let s = site();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let name = testenv::unique_name("flow-bootlive");
    let src = source_volume(s, &name, (5 << 20) + 77);
    let src_spec = format!("{}/{}", s.src_pool, src.rbd_image);
    let want = sha(&s.a, &src_spec);
    let meta: std::collections::BTreeMap<String, String> = [
        ("hw_disk_bus", "scsi"),
        ("hw_scsi_model", "virtio-scsi"),
        ("os_type", "linux"),
        ("image_name", "debian-12-test"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    rt().block_on(async {
        let c = cinder(&s.src_admin, Side::Source).await;
        c.set_image_metadata(&src.volume.id, &meta).await.unwrap();
        let v = c.get_volume(&src.volume.id).await.unwrap();
        assert!(v.is_bootable());
        assert_eq!(
            v.image_metadata(),
            meta,
            "the source volume's image metadata"
        );
    });
    let state = tempfile::tempdir().unwrap();
    let (ok, lines, err) = relay(
        &[
            "migrate",
            "volume",
            "--from",
            &s.a,
            "--to",
            &s.b,
            "--source-cloud",
            &s.src_admin,
            &src.volume.id,
            "--into",
            &s.dst_pool,
            "--adopt",
            "--os-cloud",
            &s.dst_admin,
            "--live",
            "--idle-for",
            "1",
        ],
        state.path().to_str().unwrap(),
    );
    assert!(ok, "{err}\n{lines:?}");
    let result = lines.last().unwrap();
    assert_eq!(result["summary"]["sha256"], want);
    let kinds: Vec<String> = result["summary"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|st| st[0].as_str().unwrap().to_string())
        .collect();
    assert!(
        kinds.iter().any(|k| k == "wait_for_cutover"),
        "live: {kinds:?}"
    );
    let id = result["summary"]["volume"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let v = rt().block_on(async {
        cinder(&s.dst_admin, Side::Destination)
            .await
            .get_volume(&id)
            .await
            .unwrap()
    });
    assert_eq!(v.status, "available");
    assert!(v.is_bootable(), "adopted as a bootable volume: {v:?}");
    assert_eq!(
        v.image_metadata(),
        meta,
        "with the source volume's image metadata"
    );
    assert_eq!(
        v.name.as_deref(),
        Some(format!("src-{name}").as_str()),
        "the source volume's name"
    );
    let renamed = format!("{}/volume-{id}", s.dst_pool);
    assert_eq!(sha_of_first(&s.b, &renamed, (5 << 20) + 77), want);
    rt().block_on(drop_volume(
        &s.dst_admin,
        Side::Destination,
        &s.b,
        &s.dst_pool,
        &id,
    ));
    rt().block_on(drop_volume(
        &s.src_admin,
        Side::Source,
        &s.a,
        &s.src_pool,
        &src.volume.id,
    ));
}

/// `adopt volume` with a host string whose backend exists but whose pool does not: Cinder
/// accepts the manage and fails it in its scheduler, without a user message. rbd-relay's
/// error names the missing pool and says the image kept its name; the right host then
/// adopts it.
#[test]
fn a_manage_cinder_fails_names_the_reason_and_leaves_the_image_adoptable() {
    let s = site();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let name = testenv::unique_name("flow-mfail");
    let spec = format!("{}/{name}", s.dst_pool);
    image_with_data(&s.b, &spec, 1 << 20);
    let state = tempfile::tempdir().unwrap();
    let state = state.path().to_str().unwrap();
    let backend = s.dst_host.split('#').next().unwrap().to_string();
    let wrong = format!("{backend}#nosuchpool");
    let vol_name = format!("vol-{name}");
    let (ok, _, err) = relay(
        &[
            "adopt",
            "volume",
            &spec,
            "--os-cloud",
            &s.dst_admin,
            "--cinder-host",
            &wrong,
            "--name",
            &vol_name,
        ],
        state,
    );
    assert!(!ok);
    assert!(err.contains("ended in status `error`"), "{err}");
    assert!(err.contains("no user message"), "{err}");
    assert!(
        err.contains(&format!("the scheduler has no pool `{wrong}`")),
        "{err}"
    );
    assert!(
        err.contains("keeps its name, so a re-run adopts it"),
        "{err}"
    );
    assert!(exists(&s.b, &spec), "the image keeps its name");
    assert!(
        rt().block_on(volumes_named(&s.dst_admin, &vol_name))
            .is_empty(),
        "the failed record was unmanaged"
    );
    let again = tempfile::tempdir().unwrap();
    let (ok, lines, err) = relay(
        &[
            "adopt",
            "volume",
            &spec,
            "--os-cloud",
            &s.dst_admin,
            "--name",
            &vol_name,
        ],
        again.path().to_str().unwrap(),
    );
    assert!(ok, "{err}");
    let id = lines.last().unwrap()["volume"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    rt().block_on(drop_volume(
        &s.dst_admin,
        Side::Destination,
        &s.b,
        &s.dst_pool,
        &id,
    ));
}
