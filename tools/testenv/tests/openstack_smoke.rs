//! Smoke tests of the two OpenStack clouds against the real services: Cinder manage-existing
//! of an RBD image in each cloud (which also proves the two Cinders on one broker do not
//! consume each other's RPC queues), Glance registration by `rbd://` location with a content
//! check, and the member user's refusal. Plain reqwest, so they test the environment, not
//! rbd-relay's own clients.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::{json, Value};
use testenv::openstack::{CloudInfo, Credentials, OpenStackInfo};
use testenv::probe;

/// The clouds on the shared Ceph pair, brought up once per test binary.
fn clouds() -> &'static OpenStackInfo {
    static INFO: OnceLock<OpenStackInfo> = OnceLock::new();
    INFO.get_or_init(|| {
        let t0 = Instant::now();
        let env = testenv::shared_with_openstack().expect("shared test environment with clouds");
        let info = match env.openstack() {
            Some(info) => info.clone(),
            // the pair's `up` did not bring the clouds up: do it here
            None => testenv::openstack::up(
                env.state_dir(),
                &[env.site_a().clone(), env.site_b().clone()],
            )
            .expect("openstack up"),
        };
        eprintln!("environment with clouds ready in {:.1?}", t0.elapsed());
        info
    })
}

fn http() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("http client")
}

/// A project-scoped token.
fn token(info: &OpenStackInfo, who: &Credentials) -> String {
    let t0 = Instant::now();
    let resp = http()
        .post(format!("{}/auth/tokens", info.keystone_url))
        .json(&json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": who.username, "domain": {"id": "default"}, "password": who.password}}},
            "scope": {"project": {"name": who.project_name, "domain": {"id": "default"}}}}}))
        .send()
        .expect("POST /auth/tokens");
    assert_eq!(resp.status().as_u16(), 201, "token for {}", who.username);
    let tok = resp.headers()["x-subject-token"]
        .to_str()
        .expect("token header")
        .to_string();
    eprintln!("token for {} in {:.0?}", who.username, t0.elapsed());
    tok
}

fn json_of(resp: reqwest::blocking::Response, what: &str) -> Value {
    let status = resp.status();
    let text = resp.text().expect("body");
    assert!(status.is_success(), "{what}: HTTP {status}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: {e}: {text}"))
}

/// POST manageable_volumes as `who` in the project `project_id`.
fn manage(
    cloud: &CloudInfo,
    tok: &str,
    project_id: &str,
    source_name: &str,
) -> reqwest::blocking::Response {
    http()
        .post(format!(
            "{}/manageable_volumes",
            cloud.cinder_project_url(project_id)
        ))
        .header("X-Auth-Token", tok)
        .header("OpenStack-API-Version", "volume 3.8")
        .json(&json!({"volume": {
            "host": cloud.cinder_host,
            "ref": {"source-name": source_name},
            "name": format!("adopted-{source_name}"),
            "bootable": false}}))
        .send()
        .expect("POST manageable_volumes")
}

/// An RBD image made behind Cinder's back is adopted and renamed to `volume-<id>`.
fn manage_existing_works(cloud: &CloudInfo) {
    let info = clouds();
    let tok = token(info, &info.admin);
    let name = testenv::unique_name("smoke-manage");
    let image = format!("{}/{name}", cloud.volume_pool);
    probe::rbd(&cloud.ceph_cluster, &["create", "--size", "64", &image]);

    let t0 = Instant::now();
    let v = json_of(manage(cloud, &tok, &info.admin.project_id, &name), "manage");
    let id = v["volume"]["id"].as_str().expect("volume id").to_string();
    let url = format!(
        "{}/volumes/{id}",
        cloud.cinder_project_url(&info.admin.project_id)
    );
    let mut status = String::new();
    while t0.elapsed() < Duration::from_secs(90) {
        let v = json_of(
            http()
                .get(&url)
                .header("X-Auth-Token", &tok)
                .send()
                .expect("GET volume"),
            "GET volume",
        );
        status = v["volume"]["status"].as_str().unwrap_or("").to_string();
        if status != "creating" {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!(
        "{}: manage -> {status} in {:.1?}",
        cloud.region,
        t0.elapsed()
    );
    assert_eq!(
        status, "available",
        "managed volume {id} on {}",
        cloud.region
    );
    probe::rbd(
        &cloud.ceph_cluster,
        &["info", &format!("{}/volume-{id}", cloud.volume_pool)],
    );
    assert!(
        !probe::rbd_output(&cloud.ceph_cluster, &["info", &image])
            .status
            .success(),
        "{image} should have been renamed"
    );

    // clean up: deleting the volume deletes its RBD image
    let resp = http()
        .delete(&url)
        .header("X-Auth-Token", &tok)
        .send()
        .expect("DELETE volume");
    assert_eq!(resp.status().as_u16(), 202, "delete volume {id}");
}

#[test]
fn destination_cinder_adopts_an_rbd_image_by_manage_existing() {
    manage_existing_works(&clouds().destination);
}

/// The same on the source cloud: each Cinder answers for its own pool only when the two
/// deployments on one broker do not share RPC queues.
#[test]
fn source_cinder_adopts_an_rbd_image_by_manage_existing() {
    manage_existing_works(&clouds().source);
}

#[test]
fn member_user_is_refused_manage_existing() {
    let info = clouds();
    let tok = token(info, &info.member);
    for cloud in [&info.source, &info.destination] {
        let resp = manage(cloud, &tok, &info.member.project_id, "does-not-matter");
        let status = resp.status().as_u16();
        let body = resp.text().unwrap_or_default();
        assert_eq!(status, 403, "{}: member manage: {body}", cloud.region);
        assert!(body.contains("volume_extension:volume_manage"), "{body}");
    }
}

#[test]
fn destination_glance_registers_an_rbd_location_and_serves_its_data() {
    let info = clouds();
    let cloud = &info.destination;
    let tok = token(info, &info.admin);
    let name = testenv::unique_name("smoke-img");
    let data: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let file = std::env::temp_dir().join(format!("{name}.raw"));
    std::fs::write(&file, &data).expect("write image data");
    let image = format!("{}/{name}", cloud.image_pool);
    probe::rbd(
        &cloud.ceph_cluster,
        &[
            "import",
            "--no-progress",
            file.to_str().expect("utf-8 path"),
            &image,
        ],
    );
    let _ = std::fs::remove_file(&file);
    probe::rbd(
        &cloud.ceph_cluster,
        &["snap", "create", &format!("{image}@snap")],
    );
    probe::rbd(
        &cloud.ceph_cluster,
        &["snap", "protect", &format!("{image}@snap")],
    );

    let t0 = Instant::now();
    let created = json_of(
        http()
            .post(format!("{}/v2/images", cloud.glance_url))
            .header("X-Auth-Token", &tok)
            .json(&json!({"name": name, "disk_format": "raw", "container_format": "bare"}))
            .send()
            .expect("POST image"),
        "create image",
    );
    let id = created["id"].as_str().expect("image id").to_string();
    let location = format!("rbd://{}/{}/{name}/snap", cloud.fsid, cloud.image_pool);
    let patched = json_of(
        http()
            .patch(format!("{}/v2/images/{id}", cloud.glance_url))
            .header("X-Auth-Token", &tok)
            .header(
                "Content-Type",
                "application/openstack-images-v2.1-json-patch",
            )
            .body(
                json!([{"op": "add", "path": "/locations/-",
                        "value": {"url": location, "metadata": {}}}])
                .to_string(),
            )
            .send()
            .expect("PATCH image"),
        "add location",
    );
    assert_eq!(patched["status"], "active", "{patched}");
    assert_eq!(patched["size"], json!(data.len()), "{patched}");
    eprintln!(
        "glance: location added, image active in {:.1?}",
        t0.elapsed()
    );

    let resp = http()
        .get(format!("{}/v2/images/{id}/file", cloud.glance_url))
        .header("X-Auth-Token", &tok)
        .send()
        .expect("GET image file");
    assert!(resp.status().is_success(), "download: {}", resp.status());
    let got = resp.bytes().expect("image data");
    assert!(got.as_ref() == data.as_slice(), "downloaded data differs");

    // clean up: deleting the image deletes its RBD image (and snapshot)
    let resp = http()
        .delete(format!("{}/v2/images/{id}", cloud.glance_url))
        .header("X-Auth-Token", &tok)
        .send()
        .expect("DELETE image");
    assert_eq!(resp.status().as_u16(), 204, "delete image {id}");
}

/// Both Cinders share one broker: were their RPC queues shared, the two schedulers would take
/// turns answering `get_pools`, and a cloud would now and then list the other cloud's pool.
#[test]
fn each_cloud_scheduler_lists_only_its_own_pool() {
    let info = clouds();
    let tok = token(info, &info.admin);
    for cloud in [&info.source, &info.destination] {
        for _ in 0..6 {
            let v = json_of(
                http()
                    .get(format!(
                        "{}/scheduler-stats/get_pools",
                        cloud.cinder_project_url(&info.admin.project_id)
                    ))
                    .header("X-Auth-Token", &tok)
                    .send()
                    .expect("GET get_pools"),
                "get_pools",
            );
            let names: Vec<&str> = v["pools"]
                .as_array()
                .expect("pools")
                .iter()
                .filter_map(|p| p["name"].as_str())
                .collect();
            assert_eq!(names, [cloud.cinder_host.as_str()], "{}", cloud.region);
        }
    }
}

#[test]
fn the_running_clouds_log_files_are_listed() {
    let _ = clouds();
    let env = testenv::shared_with_openstack().expect("shared test environment with clouds");
    let files = testenv::openstack::log_files(env.state_dir());
    for name in [
        "keystone.log",
        "cinder-volume.log",
        "glance-api.log",
        "rabbitmq.out",
    ] {
        assert!(
            files.iter().any(|f| f.ends_with(name)),
            "{name} not in {files:?}"
        );
    }
    assert!(files.iter().all(|f| f.is_file()));
}

/// A transaction that reads and then writes while another process holds sqlite's write lock
/// (Cinder's quota reservation in manage-existing, beside the state reports of the other
/// Cinder services). Run with `/usr/bin/python3 -c RACE DB`, through oslo.db's own engine as
/// the services use it; prints `ok WAITED_S` or `failed WAITED_S: ERROR`.
const SQLITE_RACE: &str = r#"
import subprocess, sys, time
import sqlalchemy
from oslo_db.sqlalchemy import engines
db = sys.argv[1]
engine = engines.create_engine('sqlite:///%s?timeout=20' % db)
with engine.begin() as c:
    c.execute(sqlalchemy.text('create table quota (used int)'))
    c.execute(sqlalchemy.text('insert into quota values (0)'))
holder = subprocess.Popen([sys.executable, '-c', '''
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=20)
c.execute("BEGIN IMMEDIATE")
c.execute("update quota set used = used + 1")
print("locked", flush=True)
time.sleep(1.0)
c.execute("COMMIT")
''', db], stdout=subprocess.PIPE, text=True)
assert holder.stdout.readline().strip() == 'locked'
t0 = time.monotonic()
try:
    with engine.begin() as c:
        used = c.execute(sqlalchemy.text('select used from quota')).scalar()
        c.execute(sqlalchemy.text('update quota set used = :u'), {'u': used + 1})
    print('ok %.2f' % (time.monotonic() - t0))
except Exception as e:
    print('failed %.2f: %s' % (time.monotonic() - t0, str(e).splitlines()[0]))
holder.wait()
"#;

fn sqlite_race(preamble: &str) -> String {
    let dir = tempfile::tempdir().expect("temporary directory");
    let out = std::process::Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(format!("{preamble}{SQLITE_RACE}"))
        .arg(dir.path().join("race.sqlite"))
        .output()
        .expect("/usr/bin/python3 (installed by make deps)");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The clouds' Cinder and Glance begin their sqlite transactions IMMEDIATE
/// (`testenv::openstack::SQLITE_BEGIN_IMMEDIATE`, run by every entry point), so a
/// read-then-write transaction waits for another process's write instead of failing at once
/// with "database is locked", which ended a Cinder manage in `error_managing`.
#[test]
fn the_clouds_sqlite_transactions_wait_for_a_concurrent_writer_instead_of_failing() {
    let _ = clouds();
    let env = testenv::shared_with_openstack().expect("shared test environment with clouds");
    let preamble = testenv::openstack::SQLITE_BEGIN_IMMEDIATE;
    for service in [
        "cinder-api",
        "cinder-scheduler",
        "cinder-volume",
        "cinder-manage",
        "glance-api",
        "glance-manage",
    ] {
        let shim = env.state_dir().join("openstack/bin").join(service);
        let text =
            std::fs::read_to_string(&shim).unwrap_or_else(|e| panic!("{}: {e}", shim.display()));
        let (patch, main) = (text.find(preamble), text.find(" import main"));
        assert!(
            patch.is_some() && patch < main,
            "{} does not run the preamble before the service:\n{text}",
            shim.display()
        );
    }
    // oslo.db alone: the write fails at once
    let plain = sqlite_race("");
    assert!(
        plain.starts_with("failed") && plain.contains("database is locked"),
        "{plain}"
    );
    // with the preamble: the transaction waits for the other writer (held 1 s), then succeeds
    let patched = sqlite_race(preamble);
    let waited: f64 = patched
        .strip_prefix("ok ")
        .unwrap_or_else(|| panic!("{patched}"))
        .parse()
        .unwrap_or_else(|e| panic!("{patched}: {e}"));
    assert!(waited >= 0.5, "did not wait for the writer: {patched}");
}
