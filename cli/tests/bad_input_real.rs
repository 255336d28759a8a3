#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

//! Bad input against the real Ceph pair (and clouds): every refusal names the thing and the
//! next command, names every problem found in one run, exits non-zero, and changes nothing.
//! "Nothing" is checked on both clusters with `testenv::probe::cluster_state` (the pools'
//! existence and mirroring; each involved image's info, features, mirroring, snapshots and
//! metadata; the trash) and on the state directory (no migration recorded or changed),
//! before and after each command. Every test works on images and pools named after itself
//! (`testenv::unique_name`); pools in the wrong mirror mode are pools of this test, created
//! and removed here, never the shared ones.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};

mod common;
use common::{describe, relay_command, state_dir_files};
use testenv::probe::{cluster_state, rbd, ClusterState};

const SITES: [&str; 2] = ["site-a", "site-b"];

/// What a refused command must leave as it was: the clusters' state of `pools` for the
/// images named with `prefix`, and the state directory.
struct Witness<'a> {
    pools: Vec<String>,
    prefix: &'a str,
    state: &'a Path,
}

impl Witness<'_> {
    fn take(
        &self,
    ) -> (
        ClusterState,
        Option<std::collections::BTreeMap<String, Vec<u8>>>,
    ) {
        let pools: Vec<&str> = self.pools.iter().map(String::as_str).collect();
        (
            cluster_state(&SITES, &pools, |n| n.starts_with(self.prefix)),
            state_dir_files(self.state),
        )
    }

    /// Runs `rbd-relay ARGS --state-dir STATE` with `env`; asserts it exits `code`, names
    /// every one of `needles` on stderr, and changed nothing. Returns its stderr.
    fn refused(&self, args: &[&str], env: &[(&str, &str)], code: i32, needles: &[&str]) -> String {
        let before = self.take();
        let out = relay_command()
            .args(args)
            .arg("--state-dir")
            .arg(self.state)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}: {}",
            describe(&out)
        );
        for needle in needles {
            assert!(
                err.contains(needle),
                "{args:?}: expected '{needle}' in:\n{err}"
            );
        }
        let after = self.take();
        assert_eq!(before.0, after.0, "{args:?} changed a cluster");
        assert_eq!(before.1, after.1, "{args:?} changed the state directory");
        err
    }
}

fn migrate<'a>(image: &'a str, into: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "migrate", "volume", "--from", "site-a", "--to", "site-b", image, "--into", into,
    ];
    v.extend_from_slice(extra);
    v
}

fn small_image(site: &str, spec: &str) {
    rbd(site, &["create", "--size", "8M", spec]);
}

fn remove(site: &str, spec: &str) {
    let _ = testenv::probe::try_rbd(site, &["rm", "--no-progress", spec]);
}

#[test]
fn a_missing_source_image_and_a_missing_destination_pool_are_named_in_one_refusal() {
    testenv::shared().expect("testenv");
    let p = testenv::unique_name("bi-missing");
    let state = tempfile::tempdir().unwrap();
    let w = Witness {
        pools: vec!["volumes".into(), "cinder".into(), format!("{p}-pool")],
        prefix: &p,
        state: state.path(),
    };
    let image = format!("volumes/{p}-nope");
    let pool = format!("{p}-pool");
    for dry in [&[][..], &["--dry-run"]] {
        w.refused(
            &migrate(&image, &pool, dry),
            &[],
            1,
            &[
                "preflight refused the migration; nothing was changed",
                &format!("image '{image}' does not exist on site-a; check the name with: rbd --cluster site-a ls volumes"),
                &format!("destination pool '{pool}' does not exist on site-b; check --into"),
            ],
        );
    }
    // the source pool missing too: the copy's target is still checked
    let taken = format!("cinder/{p}-taken");
    small_image("site-b", &taken);
    let image = format!("{p}-pool/img");
    let name = format!("{p}-taken");
    w.refused(
        &migrate(&image, "cinder", &["--name", &name]),
        &[],
        1,
        &[
            &format!("pool '{p}-pool' does not exist on site-a"),
            &format!("site-b:{taken} already exists; choose another --name"),
        ],
    );
    remove("site-b", &taken);
}

#[test]
fn names_taken_on_the_destination_are_all_named() {
    testenv::shared().expect("testenv");
    let p = testenv::unique_name("bi-taken");
    let state = tempfile::tempdir().unwrap();
    let w = Witness {
        pools: vec!["volumes".into(), "cinder".into()],
        prefix: &p,
        state: state.path(),
    };
    let src = format!("volumes/{p}");
    let copy = format!("cinder/{p}-copy");
    small_image("site-a", &src);
    small_image("site-b", &src); // an unrelated image under the replica's name
    small_image("site-b", &copy);
    let name = format!("{p}-copy");
    w.refused(
        &migrate(&src, "cinder", &["--name", &name]),
        &[],
        1,
        &[
            &format!("site-b:{src} already exists and is not a replica of this image; rbd-mirror cannot create the replica there; rename or remove that image"),
            &format!("site-b:{copy} already exists; choose another --name"),
        ],
    );
    // --into the mirrored pool under the same name: the copy would be the replica
    remove("site-b", &src);
    w.refused(
        &migrate(&src, "volumes", &[]),
        &[],
        1,
        &[&format!(
            "the copy {src} would replace the replica itself; give --into a pool other than the mirrored pool"
        )],
    );
    for (site, spec) in [("site-a", &src), ("site-b", &copy)] {
        remove(site, spec);
    }
}

/// `rbd watch IMAGE`: a client that watches the image (as an attached volume's does) and
/// writes nothing; ended by a newline on its stdin.
fn watcher(site: &str, spec: &str) -> Child {
    let child = Command::new("rbd")
        .args(["--cluster", site, "watch", spec])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    testenv::probe::wait_until("the watcher", std::time::Duration::from_secs(30), || {
        testenv::probe::try_rbd(site, &["status", spec]).map(|s| s.contains("watcher="))
    });
    child
}

#[test]
fn an_image_in_use_is_refused_without_live_naming_the_watcher() {
    testenv::shared().expect("testenv");
    let p = testenv::unique_name("bi-inuse");
    let state = tempfile::tempdir().unwrap();
    let w = Witness {
        pools: vec!["volumes".into(), "cinder".into()],
        prefix: &p,
        state: state.path(),
    };
    let src = format!("volumes/{p}");
    small_image("site-a", &src);
    let mut child = watcher("site-a", &src);
    w.refused(
        &migrate(&src, "cinder", &[]),
        &[],
        1,
        &[
            &format!("site-a:{src} is in use (watchers: "),
            "stop the instance using it (or detach the volume), or accept a live migration with --live",
        ],
    );
    let _ = child.stdin.take().unwrap().write_all(b"\n");
    let _ = child.wait();
    remove("site-a", &src);
}

#[test]
fn a_clone_of_an_unmirrored_parent_is_refused_naming_flatten_in_both_modes() {
    testenv::shared().expect("testenv");
    let p = testenv::unique_name("bi-clone");
    let state = tempfile::tempdir().unwrap();
    let w = Witness {
        pools: vec!["volumes".into(), "cinder".into()],
        prefix: &p,
        state: state.path(),
    };
    let parent = format!("volumes/{p}-parent");
    let clone = format!("volumes/{p}-clone");
    small_image("site-a", &parent);
    rbd("site-a", &["snap", "create", &format!("{parent}@s")]);
    rbd("site-a", &["snap", "protect", &format!("{parent}@s")]);
    rbd("site-a", &["clone", &format!("{parent}@s"), &clone]);
    for mode in ["journal", "snapshot"] {
        w.refused(
            &migrate(&clone, "cinder", &["--mode", mode]),
            &[],
            1,
            &[
                &format!("site-a:{clone} is a clone of {parent}@s, which is not mirrored; rbd-mirror mirrors a clone only together with its parent"),
                &format!("rbd --cluster site-a flatten {clone}"),
            ],
        );
    }
    remove("site-a", &clone);
    rbd("site-a", &["snap", "unprotect", &format!("{parent}@s")]);
    rbd(
        "site-a",
        &["snap", "rm", "--no-progress", &format!("{parent}@s")],
    );
    remove("site-a", &parent);
}

#[test]
fn an_image_mirrored_in_the_other_mode_or_marked_by_another_migration_is_refused() {
    testenv::shared().expect("testenv");
    let p = testenv::unique_name("bi-other");
    let state = tempfile::tempdir().unwrap();
    let w = Witness {
        pools: vec!["volumes".into(), "cinder".into()],
        prefix: &p,
        state: state.path(),
    };
    // marked by a migration that is not rbd-relay's own record
    let marked = format!("volumes/{p}-marked");
    small_image("site-a", &marked);
    rbd(
        "site-a",
        &[
            "image-meta",
            "set",
            &marked,
            "rbd-relay.migration",
            "not json",
        ],
    );
    w.refused(
        &migrate(&marked, "cinder", &[]),
        &[],
        1,
        &[&format!(
            "site-a:{marked} carries an unreadable rbd-relay marker (image metadata rbd-relay.migration"
        )],
    );
    remove("site-a", &marked);

    // mirrored by someone else, in snapshot mode; the migration asks for journal mode
    let src = format!("volumes/{p}-snap");
    small_image("site-a", &src);
    rbd("site-a", &["mirror", "image", "enable", &src, "snapshot"]);
    // let rbd-mirror settle the replica before the witness looks, so that only the
    // command under test could change what it sees
    testenv::probe::wait_until(
        "the replica in sync",
        std::time::Duration::from_secs(120),
        || {
            let st = testenv::probe::try_rbd_json("site-b", &["mirror", "image", "status", &src])?;
            Ok(st["description"]
                .as_str()
                .is_some_and(|d| d.contains("idle") || d.contains("replaying"))
                && st["state"] == "up+replaying")
        },
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    w.refused(
        &migrate(&src, "cinder", &["--mode", "journal"]),
        &[],
        1,
        &[&format!(
            "site-a:{src} is already mirrored in snapshot mode; re-run with --mode matching the existing mirroring"
        )],
    );
    rbd("site-a", &["mirror", "image", "disable", &src]);
    testenv::probe::wait_gone("site-b", &src, common::REPLICA_GONE_LIMIT);
    remove("site-a", &src);
}

/// A pool of this test on both sites, removed when dropped.
struct OwnPool(String);

impl OwnPool {
    fn create(name: &str) -> Self {
        for site in SITES {
            let out = Command::new("ceph")
                .args(["--cluster", site, "osd", "pool", "create", name, "8"])
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            rbd(site, &["pool", "init", name]);
        }
        OwnPool(name.to_string())
    }
}

impl Drop for OwnPool {
    fn drop(&mut self) {
        for site in SITES {
            let _ = Command::new("ceph")
                .args(["--cluster", site, "osd", "pool", "rm", &self.0, &self.0])
                .arg("--yes-i-really-really-mean-it")
                .output();
        }
    }
}

#[test]
fn pools_in_the_wrong_mirror_mode_are_refused_naming_each_side() {
    testenv::shared().expect("testenv");
    let p = testenv::unique_name("bi-mode");
    let pool = OwnPool::create(&format!("{p}-pool"));
    let state = tempfile::tempdir().unwrap();
    let w = Witness {
        pools: vec![pool.0.clone(), "cinder".into()],
        prefix: &p,
        state: state.path(),
    };
    let src = format!("{}/{p}", pool.0);
    small_image("site-a", &src);
    // mirroring off on both sides: both named in one refusal
    w.refused(
        &migrate(&src, "cinder", &[]),
        &[],
        1,
        &[
            &format!("mirroring is off for pool '{}' on site-a; re-run with --enable-pool-mirroring, or run: rbd --cluster site-a mirror pool enable {} image", pool.0, pool.0),
            &format!("mirroring is off for pool '{}' on site-b", pool.0),
        ],
    );
    // pool mode on the source, image mode on the destination (and no peer there)
    rbd("site-a", &["mirror", "pool", "enable", &pool.0, "pool"]);
    rbd("site-b", &["mirror", "pool", "enable", &pool.0, "image"]);
    w.refused(
        &migrate(&src, "cinder", &[]),
        &[],
        1,
        &[
            &format!("pool '{}' on site-a mirrors in pool mode; switch it to image mode", pool.0),
            &format!("pool '{}' on site-b has no mirror peer that receives from site-a; connect the peers: rbd-relay pair --from site-a --to site-b --pool {}", pool.0, pool.0),
        ],
    );
    // pool mode on the destination; --enable-pool-mirroring does not change a pool mode
    rbd("site-a", &["mirror", "pool", "enable", &pool.0, "image"]);
    rbd("site-b", &["mirror", "pool", "enable", &pool.0, "pool"]);
    w.refused(
        &migrate(&src, "cinder", &["--enable-pool-mirroring"]),
        &[],
        1,
        &[&format!("pool '{}' on site-b mirrors in pool mode", pool.0)],
    );
    remove("site-a", &src);
}

#[test]
fn unreachable_clusters_and_clouds_are_all_named_before_anything_is_read() {
    let env = testenv::shared_with_openstack().expect("testenv with openstack");
    // the test clouds' clouds.yaml, given to every run that should reach the clouds (the
    // caller's environment need not name it)
    let clouds_yaml = env
        .openstack()
        .expect("OpenStack clouds")
        .clouds_yaml
        .clone();
    let clouds_yaml = clouds_yaml.to_str().unwrap();
    let p = testenv::unique_name("bi-conn");
    let state = tempfile::tempdir().unwrap();
    let w = Witness {
        pools: vec!["volumes".into(), "cinder".into()],
        prefix: &p,
        state: state.path(),
    };
    let src = format!("volumes/{p}");
    small_image("site-a", &src);
    let dir = tempfile::tempdir().unwrap();
    let missing_a = dir.path().join("a.conf");
    let missing_b = dir.path().join("b.conf");
    let (ma, mb) = (missing_a.to_str().unwrap(), missing_b.to_str().unwrap());
    // both confs missing: both named
    w.refused(
        &migrate(&src, "cinder", &["--from-conf", ma, "--to-conf", mb]),
        &[],
        1,
        &[
            "2 problems, nothing was changed",
            "cannot connect to Ceph cluster 'site-a'",
            "cannot connect to Ceph cluster 'site-b'",
            ma,
            mb,
        ],
    );
    // no keyring for the client id on the source, and a cloud that clouds.yaml lacks
    let cloud = format!("{p}-cloud");
    w.refused(
        &migrate(
            &src,
            "cinder",
            &["--from-id", "bi-nobody", "--adopt", "--os-cloud", &cloud],
        ),
        &[],
        1,
        &[
            "cannot connect to Ceph cluster 'site-a'",
            &format!("cannot connect to OpenStack cloud '{cloud}'"),
        ],
    );
    // a key the cluster does not know
    let keyring = dir.path().join("wrong.keyring");
    std::fs::write(
        &keyring,
        "[client.admin]\n\tkey = AQBmZmZmAAAAABAAc2VjcmV0c2VjcmV0c2VjcmV0MA==\n",
    )
    .unwrap();
    let conf = dir.path().join("wrong-key.conf");
    std::fs::write(
        &conf,
        std::fs::read_to_string("/etc/ceph/site-b.conf")
            .unwrap()
            .replace(
                "keyring = /etc/ceph/$cluster.$name.keyring",
                &format!("keyring = {}", keyring.display()),
            ),
    )
    .unwrap();
    w.refused(
        &migrate(&src, "cinder", &["--to-conf", conf.to_str().unwrap()]),
        &[],
        1,
        &[
            "cannot connect to Ceph cluster 'site-b'",
            "Permission denied",
        ],
    );
    // a clouds.yaml that is not there, and one whose entry has the wrong password
    w.refused(
        &migrate(&src, "cinder", &["--adopt", "--os-cloud", "site-b-admin"]),
        &[("OS_CLIENT_CONFIG_FILE", "/nonexistent/clouds.yaml")],
        1,
        &["cannot connect to OpenStack cloud 'site-b-admin'"],
    );
    let clouds = std::fs::read_to_string(clouds_yaml).unwrap();
    let wrong = dir.path().join("clouds.yaml");
    std::fs::write(&wrong, clouds.replace("admin-secret", "not-the-password")).unwrap();
    w.refused(
        &migrate(&src, "cinder", &["--adopt", "--os-cloud", "site-b-admin"]),
        &[("OS_CLIENT_CONFIG_FILE", wrong.to_str().unwrap())],
        1,
        &["cannot connect to OpenStack cloud 'site-b-admin'"],
    );
    // a Cinder host the destination cloud does not have, a missing source image and a
    // missing --into pool: the cloud's and the clusters' problems in one refusal
    let nope = format!("volumes/{p}-nope");
    let pool = format!("{p}-pool");
    w.refused(
        &migrate(
            &nope,
            &pool,
            &[
                "--adopt",
                "--os-cloud",
                "site-b-admin",
                "--cinder-host",
                "site-b@nope#x",
            ],
        ),
        &[("OS_CLIENT_CONFIG_FILE", clouds_yaml)],
        1,
        &[
            "preflight refused the migration; nothing was changed",
            "cloud site-b-admin: Cinder does not know host `site-b@nope#x`",
            "give --cinder-host as 'cinder get-pools'",
            &format!("image '{nope}' does not exist on site-a"),
            &format!("destination pool '{pool}' does not exist on site-b"),
        ],
    );
    remove("site-a", &src);
}

#[test]
fn a_state_dir_that_cannot_be_made_is_named_and_the_clusters_are_untouched() {
    testenv::shared().expect("testenv");
    let p = testenv::unique_name("bi-state");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let src = format!("volumes/{p}");
    small_image("site-a", &src);
    for state in [file.clone(), file.join("sub")] {
        let w = Witness {
            pools: vec!["volumes".into(), "cinder".into()],
            prefix: &p,
            state: &state,
        };
        w.refused(
            &migrate(&src, "cinder", &[]),
            &[],
            1,
            &[&format!(
                "state file {}: cannot create directory",
                state.display()
            )],
        );
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
    remove("site-a", &src);
}

#[test]
fn a_bundle_of_bad_input_is_refused_and_writes_no_scripts() {
    testenv::shared().expect("testenv");
    let p = testenv::unique_name("bi-bundle");
    let state = tempfile::tempdir().unwrap();
    let w = Witness {
        pools: vec!["volumes".into(), "cinder".into()],
        prefix: &p,
        state: state.path(),
    };
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("bundle");
    let image = format!("volumes/{p}-nope");
    w.refused(
        &[
            "bundle",
            "volume",
            "--from",
            "site-a",
            "--to",
            "site-b",
            &image,
            "--into",
            "cinder",
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
        1,
        &[&format!("image '{image}' does not exist on site-a")],
    );
    assert!(!out.exists(), "no bundle written");
}

/// The witness itself: each kind of change a command could make is seen (so "equal before
/// and after" means something).
#[test]
fn the_witness_sees_every_kind_of_change() {
    testenv::shared().expect("testenv");
    let p = testenv::unique_name("bi-witness");
    let state = tempfile::tempdir().unwrap();
    let w = Witness {
        pools: vec!["volumes".into(), "cinder".into()],
        prefix: &p,
        state: state.path(),
    };
    let src = format!("volumes/{p}");
    let changes: Vec<(&str, Vec<String>)> = vec![
        (
            "create",
            vec!["create".into(), "--size".into(), "8M".into(), src.clone()],
        ),
        (
            "features",
            vec![
                "feature".into(),
                "disable".into(),
                src.clone(),
                "fast-diff".into(),
            ],
        ),
        (
            "snapshot",
            vec!["snap".into(), "create".into(), format!("{src}@s")],
        ),
        (
            "metadata",
            vec![
                "image-meta".into(),
                "set".into(),
                src.clone(),
                "k".into(),
                "v".into(),
            ],
        ),
        (
            "size",
            vec!["resize".into(), "--size".into(), "16M".into(), src.clone()],
        ),
        ("trash", vec!["trash".into(), "mv".into(), src.clone()]),
    ];
    for (what, args) in changes {
        let before = w.take();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        rbd("site-a", &args);
        assert_ne!(before.0, w.take().0, "{what} not seen");
    }
    let before = w.take();
    std::fs::write(state.path().join("x.json"), b"{}").unwrap();
    assert_ne!(before.1, w.take().1, "a state file not seen");
    let id = testenv::probe::rbd_json("site-a", &["trash", "ls", "volumes"])
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == p.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    rbd("site-a", &["trash", "restore", "--pool", "volumes", &id]);
    rbd("site-a", &["snap", "purge", "--no-progress", &src]);
    remove("site-a", &src);
}
