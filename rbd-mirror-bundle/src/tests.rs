//! Unit tests of the rendering: quoting, step assignment, roles, handoffs.

use super::*;
use crate::quote::url_part;
use rbd_mirror_core::cloud::AdoptTarget;
use rbd_mirror_core::features::{Features, MirrorImageMode};
use rbd_mirror_core::plan::{test_support::facts, Adoption, Registration, VolumeMigration};
use rbd_mirror_core::spec::{ClusterSpec, ImageSpec, PoolSpec};

const HOSTILE_IMAGE: &str = "it's-$(touch_x)-`id`;*-\"q\"";
const HOSTILE_VOLUME: &str = "my vol 'x' $(rm -rf /) `id`; * \"q\" \\n";

fn migration(mode: MirrorImageMode) -> VolumeMigration {
    let mut m = VolumeMigration::new(
        ClusterSpec::named("site-a").unwrap(),
        ClusterSpec::named("site-b").unwrap(),
        ImageSpec::new("volumes", HOSTILE_IMAGE).unwrap(),
        PoolSpec::new("cinder").unwrap(),
    );
    m.mode = mode;
    m
}

pub(crate) fn volume_plan(mode: MirrorImageMode) -> Plan {
    let mut m = migration(mode);
    m.adopt = Some(Adoption {
        cloud: "site-b-admin".into(),
        target: AdoptTarget::CephPool {
            pool: "cinder".into(),
        },
        name: Some(HOSTILE_VOLUME.into()),
        bootable: false,
        image_metadata: Default::default(),
        no_grow: false,
    });
    Plan::volume(
        m,
        facts(Features::LAYERING | Features::EXCLUSIVE_LOCK | Features::OBJECT_MAP),
    )
}

fn bootable_plan() -> Plan {
    let mut m = migration(MirrorImageMode::Journal);
    m.image = ImageSpec::new("images", "0d3e5c1a-1111-2222-3333-444455556666").unwrap();
    m.into = PoolSpec::new("glance").unwrap();
    m.dest_name = m.image.image.clone();
    m.register = Some(Registration {
        cloud: "site-b-admin".into(),
        name: HOSTILE_VOLUME.into(),
        snapshot: "snap".into(),
        min_disk_gib: 1,
    });
    Plan::volume(m, facts(Features::LAYERING))
}

/// Undo [`sh_quote`] the way sh reads a word of single-quoted parts.
fn sh_unquote(q: &str) -> String {
    let mut out = String::new();
    let mut in_quote = false;
    let mut chars = q.chars();
    while let Some(c) = chars.next() {
        match (in_quote, c) {
            (false, '\'') | (true, '\'') => in_quote = !in_quote,
            (false, '\\') => out.push(chars.next().unwrap()),
            (true, c) => out.push(c),
            (false, c) => panic!("unquoted {c:?} in {q}"),
        }
    }
    assert!(!in_quote, "unterminated quote in {q}");
    out
}

#[test]
fn sh_quote_round_trips_hostile_strings() {
    for s in [
        "",
        "plain",
        "it's",
        "''",
        "$(rm -rf /)",
        "`id`",
        "a; b",
        "*",
        "a\nb",
        "\\'\"",
        HOSTILE_IMAGE,
        HOSTILE_VOLUME,
    ] {
        let q = sh_quote(s);
        assert!(q.starts_with('\'') && q.ends_with('\''), "{q}");
        assert_eq!(sh_unquote(&q), s);
    }
    assert_eq!(sh_quote("it's"), r"'it'\''s'");
}

#[test]
fn every_step_goes_to_exactly_one_script() {
    for plan in [
        volume_plan(MirrorImageMode::Journal),
        volume_plan(MirrorImageMode::Snapshot),
        bootable_plan(),
    ] {
        let b = render(&plan, "rbd-relay bundle volume ...").unwrap();
        let mut seen = vec![0usize; plan.steps.len()];
        for (script, steps) in &b.scripts {
            for &i in steps {
                seen[i] += 1;
                assert_eq!(Script::for_step(&plan.steps[i]), *script);
            }
        }
        assert!(seen.iter().all(|&n| n == 1), "{seen:?}");
        // and each step's section is in the file of its script, and only there
        for (i, step) in plan.steps.iter().enumerate() {
            let marker = format!("# --- plan step {}: {} ", i + 1, step.kind());
            let holders: Vec<&str> = b
                .files
                .iter()
                .filter(|f| f.contents.contains(&marker))
                .map(|f| f.name.as_str())
                .collect();
            assert_eq!(
                holders,
                [Script::for_step(step).file_name()],
                "step {}",
                i + 1
            );
        }
    }
}

#[test]
fn scripts_are_in_run_order_with_cleanup_last() {
    let b = render(&volume_plan(MirrorImageMode::Journal), "x").unwrap();
    let names: Vec<&str> = b.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "1-source-ceph-admin.sh",
            "2-destination-ceph-admin.sh",
            "3-tenant-admin.sh",
            "4-source-ceph-admin-cleanup.sh",
            "README.md"
        ]
    );
    let plan = volume_plan(MirrorImageMode::Journal);
    let cleanup = &b.scripts[3];
    assert_eq!(cleanup.0, Script::Cleanup);
    let kinds: Vec<&str> = cleanup.1.iter().map(|&i| plan.steps[i].kind()).collect();
    assert_eq!(kinds, ["disable_mirroring", "restore_features"]);
}

#[test]
fn the_destination_script_grows_a_copy_not_a_whole_gib_after_its_verification() {
    let plan = volume_plan(MirrorImageMode::Journal);
    assert_eq!(plan.facts.size, 10 << 20);
    let b = render(&plan, "x").unwrap();
    let (script, steps) = &b.scripts[1];
    assert_eq!(*script, Script::Destination);
    let kinds: Vec<&str> = steps.iter().map(|&i| plan.steps[i].kind()).collect();
    let at = |k: &str| kinds.iter().position(|x| *x == k);
    assert_eq!(at("grow_copy"), at("verify").map(|i| i + 1), "{kinds:?}");
    let dst = &b.files[1].contents;
    assert!(
        dst.contains("SOURCE_SIZE=10485760\nGROW_BYTES=1073741824\nGROW_GIB=1\n"),
        "{dst}"
    );
    assert!(
        dst.contains("copy resize --no-progress --size \"${GROW_GIB}G\""),
        "{dst}"
    );
    // the re-run's check of an existing copy digests the source's size only
    assert!(dst.contains("HAVE=$(sha256_of copy_head)"), "{dst}");
    // no adoption, no grow
    let plain = Plan::volume(
        migration(MirrorImageMode::Journal),
        facts(Features::LAYERING),
    );
    let b = render(&plain, "x").unwrap();
    assert!(!b.files[1].contents.contains("GROW_BYTES="));
}

#[test]
fn without_adoption_there_is_no_tenant_script_and_the_handoff_skips_it() {
    let plan = Plan::volume(
        migration(MirrorImageMode::Journal),
        facts(Features::LAYERING),
    );
    let b = render(&plan, "x").unwrap();
    assert!(!b.files.iter().any(|f| f.name == "3-tenant-admin.sh"));
    let dst = &b.files[1].contents;
    assert!(dst.contains("'4-source-ceph-admin-cleanup.sh'"), "{dst}");
}

#[test]
fn names_appear_only_single_quoted() {
    for plan in [volume_plan(MirrorImageMode::Journal), bootable_plan()] {
        let b = render(&plan, "x").unwrap();
        for f in b.files.iter().filter(|f| f.executable) {
            for hostile in [HOSTILE_IMAGE, HOSTILE_VOLUME] {
                let quoted = sh_quote(hostile);
                // the only raw occurrences are inside comments or the quoted assignment
                for line in f.contents.lines().filter(|l| l.contains(hostile)) {
                    assert!(
                        line.starts_with('#') || line.contains(&quoted),
                        "{}: unquoted name in: {line}",
                        f.name
                    );
                }
            }
        }
    }
}

#[test]
fn no_key_material_in_any_file() {
    let b = render(&volume_plan(MirrorImageMode::Snapshot), "x").unwrap();
    for f in &b.files {
        for needle in ["key =", "AQ", "password", "OS_PASSWORD", "keyring ="] {
            assert!(!f.contents.contains(needle), "{} contains {needle}", f.name);
        }
        // a token is only ever read from openstack into a variable and fed to curl on stdin
        for line in f.contents.lines().filter(|l| l.contains("$TOKEN")) {
            assert!(
                line.contains("TOKEN=$(openstack token issue")
                    || line.contains("printf 'X-Auth-Token: %s\\n' \"$TOKEN\" | curl")
                    || line.contains("fail \"cannot get a token"),
                "{}: {line}",
                f.name
            );
        }
    }
}

#[test]
fn role_scripts_touch_only_their_cluster() {
    let b = render(&volume_plan(MirrorImageMode::Journal), "x").unwrap();
    // the code of a script, without its comments
    let by = |n: &str| {
        b.files
            .iter()
            .find(|f| f.name == n)
            .unwrap()
            .contents
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    };
    for n in ["1-source-ceph-admin.sh", "4-source-ceph-admin-cleanup.sh"] {
        assert!(!by(n).contains("'site-b'"), "{n}");
        assert!(!by(n).contains("DST_"), "{n}");
        assert!(!by(n).contains("openstack"), "{n}");
    }
    assert!(!by("2-destination-ceph-admin.sh").contains("'site-a'"));
    assert!(!by("2-destination-ceph-admin.sh").contains("SRC_"));
    assert!(!by("3-tenant-admin.sh").contains("rbd "));
}

#[test]
fn facts_are_recorded_in_the_scripts() {
    let b = render(&volume_plan(MirrorImageMode::Journal), "x").unwrap();
    let src = &b.files[0].contents;
    assert!(src.contains("ORIGINAL_FEATURES='layering exclusive-lock object-map'"));
    assert!(src.contains("MIGRATION_FEATURES='layering exclusive-lock object-map journaling'"));
    let cleanup = &b.files[3].contents;
    assert!(cleanup.contains("RESTORABLE_FEATURES='layering exclusive-lock object-map'"));
    let readme = &b.files[4].contents;
    assert!(readme.contains("| 1 | `1-source-ceph-admin.sh` | Ceph source admin |"));
}

/// Runs `sh -c SCRIPT` with `stdin`; returns (success, stdout).
fn sh(script: &str, stdin: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn every_script_is_valid_sh() {
    for plan in [
        volume_plan(MirrorImageMode::Journal),
        volume_plan(MirrorImageMode::Snapshot),
        bootable_plan(),
        Plan::volume(
            migration(MirrorImageMode::Journal),
            facts(Features::LAYERING),
        ),
    ] {
        for f in render(&plan, "x")
            .unwrap()
            .files
            .iter()
            .filter(|f| f.executable)
        {
            let (ok, _) = sh("sh -n", &f.contents);
            assert!(ok, "{} does not parse", f.name);
        }
    }
}

/// The token `verification_token` of the scripts computes, computed here independently.
fn token(plan_id: &str, digest: &str, copy_id: &str, fsid: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(
        format!("rbd-relay verified copy\n{plan_id}\n{digest}\n{copy_id}\n{fsid}\n").as_bytes(),
    ))
}

/// Runs the cleanup script of `plan` with `args`, with fake `rbd` and `ceph` on PATH that
/// log every call and fail (`ceph fsid` prints `source_fsid`); returns (success, stderr,
/// the logged calls).
fn run_cleanup_with_fake_tools(
    plan: &Plan,
    args: &[&str],
    source_fsid: &str,
) -> (bool, String, String) {
    run_with_fake_tools(plan, Script::Cleanup, args, source_fsid)
}

/// Runs `script` of `plan` with `args`, with fake `rbd`, `ceph`, `openstack` and `curl` on
/// PATH that log every call and fail (`ceph fsid` prints `source_fsid`); returns (success,
/// stderr, the logged calls). No logged call means the script touched no cluster and no
/// cloud: it changed nothing.
fn run_with_fake_tools(
    plan: &Plan,
    script: Script,
    args: &[&str],
    source_fsid: &str,
) -> (bool, String, String) {
    let b = render(plan, "x").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("script.sh");
    std::fs::write(
        &path,
        &b.files
            .iter()
            .find(|f| f.name == script.file_name())
            .unwrap()
            .contents,
    )
    .unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let log = dir.path().join("calls");
    for (tool, body) in [
        ("rbd", "exit 1".to_string()),
        (
            "ceph",
            format!("[ \"$*\" != \"${{*%fsid}}\" ] && echo {source_fsid}"),
        ),
        ("openstack", "exit 1".to_string()),
        ("curl", "exit 1".to_string()),
    ] {
        let tool_path = bin.join(tool);
        std::fs::write(
            &tool_path,
            format!(
                "#!/bin/sh\necho \"{tool} $*\" >>'{}'\n{body}\n",
                log.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tool_path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = std::process::Command::new("sh")
        .arg(&path)
        .args(args)
        .env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        )
        .env("RBD_RELAY_BUNDLE_STATE", dir.path().join("state"))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        std::fs::read_to_string(&log).unwrap_or_default(),
    )
}

/// Each script run with wrong arguments stops with a message naming the argument and what
/// to pass, exits non-zero, and makes no `rbd`, `ceph`, `openstack` or `curl` call.
#[test]
fn every_script_refuses_wrong_arguments_before_touching_a_cluster_or_cloud() {
    let journal = volume_plan(MirrorImageMode::Journal);
    let snapshot = volume_plan(MirrorImageMode::Snapshot);
    let digest = "a".repeat(64);
    let fsid = "27a9fbc0-4355-4685-a5cc-ad091ce4fbcc";
    let good = token(&journal.id, &digest, "10c7e713647", fsid);
    let short = "a".repeat(63);
    let cases: Vec<(&Plan, Script, Vec<&str>, &str)> = vec![
        (
            &journal,
            Script::Source,
            vec![&digest],
            "(no arguments): it is the first script of the bundle and takes none",
        ),
        (
            &journal,
            Script::Destination,
            vec![],
            "usage: sh ./2-destination-ceph-admin.sh SOURCE_SHA256 (the Ceph source admin's script printed the line to run)",
        ),
        (
            &journal,
            Script::Destination,
            vec!["not-a-digest"],
            "'not-a-digest' is not a sha256 digest (64 hex digits)",
        ),
        (
            &journal,
            Script::Destination,
            vec![&short],
            "is not a sha256 digest (64 hex digits): pass the digest the previous script printed",
        ),
        (
            &snapshot,
            Script::Destination,
            vec![&digest],
            "SOURCE_SHA256 MIRROR_SNAPSHOT_ID: the mirror snapshot id is missing or not a number",
        ),
        (
            &snapshot,
            Script::Destination,
            vec![&digest, "12x"],
            "the mirror snapshot id is missing or not a number",
        ),
        (
            &journal,
            Script::Tenant,
            vec![&digest],
            "needs the four values 2-destination-ceph-admin.sh prints after it verified the copy",
        ),
        (
            &journal,
            Script::Tenant,
            vec![&digest, "10c7e713647", fsid, &short],
            "does not match digest",
        ),
        (
            &journal,
            Script::Cleanup,
            vec![],
            "usage: sh ./4-source-ceph-admin-cleanup.sh VERIFIED_SHA256 COPY_IMAGE_ID DESTINATION_FSID VERIFICATION_TOKEN",
        ),
        (
            &journal,
            Script::Cleanup,
            vec![&digest, "10c7e713647", "not/a-fsid", &good],
            "'not/a-fsid' is not a Ceph fsid: pass the destination fsid 2-destination-ceph-admin.sh printed; nothing was changed",
        ),
    ];
    for (plan, script, args, needle) in cases {
        let (ok, err, calls) = run_with_fake_tools(plan, script, &args, "f-s");
        assert!(!ok, "{script:?} {args:?} succeeded");
        assert!(err.contains(needle), "{script:?} {args:?}: {err}");
        assert!(err.contains("STOPPED"), "{script:?} {args:?}: {err}");
        assert_eq!(calls, "", "{script:?} {args:?}: a call before the refusal");
    }
    // the right handoff passes the argument check of the tenant script (and then asks the
    // fake cloud, which fails)
    let (ok, err, calls) = run_with_fake_tools(
        &journal,
        Script::Tenant,
        &[&digest, "10c7e713647", fsid, &good],
        "f-s",
    );
    assert!(!ok);
    assert!(!err.contains("does not match"), "{err}");
    assert!(calls.contains("openstack "), "{calls}");
}

#[test]
fn cleanup_given_only_the_source_scripts_digest_is_refused_before_touching_the_source() {
    let plan = volume_plan(MirrorImageMode::Journal);
    let digest = "a".repeat(64);
    let (ok, err, calls) = run_cleanup_with_fake_tools(&plan, &[&digest], "f-s");
    assert!(!ok);
    assert!(
        err.contains(
            "needs the four values 2-destination-ceph-admin.sh prints after it verified the copy"
        ) && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(calls, "", "no rbd or ceph call before the refusal");
}

#[test]
fn cleanup_refuses_a_wrong_or_foreign_verification_token_before_touching_the_source() {
    let plan = volume_plan(MirrorImageMode::Journal);
    let digest = "a".repeat(64);
    let fsid = "27a9fbc0-4355-4685-a5cc-ad091ce4fbcc";
    let foreign = token("another-plan", &digest, "10c7e713647", fsid);
    let typo = "b".repeat(64);
    for bad in [&foreign, &typo] {
        let (ok, err, calls) =
            run_cleanup_with_fake_tools(&plan, &[&digest, "10c7e713647", fsid, bad], "f-s");
        assert!(!ok);
        assert!(
            err.contains(&format!("the verification token '{bad}' does not match")),
            "{err}"
        );
        assert_eq!(calls, "", "no rbd or ceph call before the refusal");
    }
    // malformed copy ids and fsids are named
    let (_, err, _) = run_cleanup_with_fake_tools(&plan, &[&digest, "x/y", fsid, &typo], "f-s");
    assert!(err.contains("'x/y' is not an RBD image id"), "{err}");
}

#[test]
fn cleanup_refuses_a_handoff_naming_the_source_clusters_own_fsid() {
    let plan = volume_plan(MirrorImageMode::Journal);
    let digest = "a".repeat(64);
    let own = "2264de0c-3f04-424c-90c8-a185f270321c";
    let t = token(&plan.id, &digest, "10c7e713647", own);
    let (ok, err, calls) =
        run_cleanup_with_fake_tools(&plan, &[&digest, "10c7e713647", own, &t], own);
    assert!(!ok);
    assert!(err.contains("is the fsid of the source cluster"), "{err}");
    assert!(!calls.contains("rbd "), "{calls}");
    // the same handoff with another cluster's fsid passes the handoff check and goes on
    // to read the source (the fake rbd fails that read)
    let other = "27a9fbc0-4355-4685-a5cc-ad091ce4fbcc";
    let t = token(&plan.id, &digest, "10c7e713647", other);
    let (ok, err, calls) =
        run_cleanup_with_fake_tools(&plan, &[&digest, "10c7e713647", other, &t], own);
    assert!(!ok);
    assert!(err.contains("cannot read"), "{err}");
    assert!(calls.contains("rbd ") && calls.contains(" info"), "{calls}");
}

#[test]
fn the_tenant_script_requires_the_verified_copy_handoff_too() {
    let b = render(&volume_plan(MirrorImageMode::Journal), "x").unwrap();
    let t = &b
        .files
        .iter()
        .find(|f| f.name == Script::Tenant.file_name())
        .unwrap()
        .contents;
    assert!(t.contains("check_verified_handoff \"$usage"), "{t}");
    let d = &b
        .files
        .iter()
        .find(|f| f.name == Script::Destination.file_name())
        .unwrap()
        .contents;
    // the handoff is computed after the verify step, never before it
    let verify = d
        .find("plan step 7: verify")
        .or_else(|| d.find(": verify ("))
        .unwrap();
    assert!(d.find("VERIFY_TOKEN=$(verification_token").unwrap() > verify);
}

#[test]
fn glance_location_parts_are_url_encoded() {
    assert_eq!(url_part("a b/c'"), "a%20b%2Fc%27");
    let b = render(&bootable_plan(), "x").unwrap();
    let t = &b
        .files
        .iter()
        .find(|f| f.name == "3-tenant-admin.sh")
        .unwrap()
        .contents;
    assert!(t.contains("LOCATION_TAIL='glance/0d3e5c1a-1111-2222-3333-444455556666/snap'"));
    assert!(t.contains("MIN_DISK=1"));
}
