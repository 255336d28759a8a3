//! Unit tests of the rendering: quoting, step assignment, roles, handoffs.

use super::*;
use crate::quote::url_part;
use rbd_mirror_core::cloud::AdoptTarget;
use rbd_mirror_core::features::{Features, MirrorImageMode};
use rbd_mirror_core::plan::{
    test_support::facts, Adoption, Handover, Live, Registration, VolumeMigration,
};
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

/// A plan of the handover by clone (live with `idle_for_ms`), adopted when `adopt`.
pub(crate) fn clone_plan(mode: MirrorImageMode, idle_for_ms: Option<u64>, adopt: bool) -> Plan {
    let mut m = volume_plan(mode).migration;
    m.handover = Handover::Clone;
    m.live = idle_for_ms.map(|idle_for_ms| Live { idle_for_ms });
    m.allow_live = m.live.is_some();
    if !adopt {
        m.adopt = None;
    }
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
        clone_plan(MirrorImageMode::Journal, None, true),
        clone_plan(MirrorImageMode::Snapshot, Some(2500), true),
        clone_plan(MirrorImageMode::Journal, Some(0), false),
    ] {
        let b = render(&plan, "rbd-relay bundle volume ...").unwrap();
        let mut seen = vec![0usize; plan.steps.len()];
        for (script, steps) in &b.scripts {
            for &i in steps {
                seen[i] += 1;
                assert_eq!(Script::for_step(&plan.steps[i], Flow::of(&plan)), *script);
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
                [Script::for_step(step, Flow::of(&plan)).file_name()],
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
    for plan in [
        volume_plan(MirrorImageMode::Journal),
        bootable_plan(),
        clone_plan(MirrorImageMode::Snapshot, Some(2000), true),
    ] {
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
        clone_plan(MirrorImageMode::Journal, Some(2000), true),
        clone_plan(MirrorImageMode::Snapshot, None, false),
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

#[test]
fn a_clone_bundle_has_the_cutover_scripts_in_run_order_and_the_roll_back_apart() {
    let plan = clone_plan(MirrorImageMode::Journal, Some(2000), true);
    let b = render(&plan, "x").unwrap();
    let names: Vec<&str> = b.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "1-source-ceph-admin.sh",
            "2-destination-ceph-admin.sh",
            "3-source-ceph-admin-cutover.sh",
            "4-destination-ceph-admin-handover.sh",
            "5-tenant-admin.sh",
            "6-destination-ceph-admin-verify.sh",
            "7-source-ceph-admin-release.sh",
            "8-destination-ceph-admin-remove-replica.sh",
            "rollback-1-destination-ceph-admin.sh",
            "rollback-2-source-ceph-admin.sh",
            "README.md"
        ]
    );
    let kinds = |script: Script| -> Vec<&str> {
        let (_, steps) = b.scripts.iter().find(|(s, _)| *s == script).unwrap();
        steps.iter().map(|&i| plan.steps[i].kind()).collect()
    };
    assert_eq!(
        kinds(Script::Cutover),
        ["wait_for_cutover", "demote_source"]
    );
    // the image (less than a GiB) is adopted: the clone is grown to a whole GiB before the
    // tenant adopts it, and the read-back after the flatten covers the source's size only
    assert_eq!(
        kinds(Script::Handover),
        ["promote_replica", "clone_replica", "grow_copy"]
    );
    let text = |name: &str| -> &str { &b.files.iter().find(|f| f.name == name).unwrap().contents };
    let handover = text("4-destination-ceph-admin-handover.sh");
    assert!(handover.contains("GROW_BYTES=1073741824"), "{handover}");
    assert!(handover.contains("copy resize --no-progress --size \"${GROW_GIB}G\""));
    let size = format!("SOURCE_SIZE={}\n", plan.facts.size);
    assert!(text("6-destination-ceph-admin-verify.sh").contains(&size));
    assert_eq!(kinds(Script::AdoptHandedOver), ["adopt_volume"]);
    assert_eq!(
        kinds(Script::VerifyHandover),
        ["verify_handover", "flatten_copy"]
    );
    // live journal mode: the writer's journal payload is set before the features and put
    // back after them
    assert_eq!(
        kinds(Script::Source),
        [
            "preflight",
            "set_journal_payload",
            "enable_features",
            "enable_mirroring"
        ]
    );
    assert_eq!(
        kinds(Script::Release),
        [
            "release_source",
            "restore_features",
            "restore_journal_payload"
        ]
    );
    assert_eq!(kinds(Script::RemoveReplica), ["remove_replica"]);
    assert_eq!(
        b.rollback,
        [Script::RollbackDestination, Script::RollbackSource]
    );
    // each script names the next one's command; the roll back's first names its second
    let next = |from: &str, to: &str| {
        let f = b.files.iter().find(|f| f.name == from).unwrap();
        assert!(
            f.contents.contains(&sh_quote(to)),
            "{from} does not hand to {to}"
        );
    };
    for pair in names[..8].windows(2) {
        next(pair[0], pair[1]);
    }
    next(names[8], names[9]);
    // the live wait is rendered with its idle time in whole seconds
    let cutover = &b.files[2].contents;
    assert!(cutover.contains("IDLE_FOR=2\n"), "{cutover}");
    assert!(
        !cutover.contains("cold_users")
            && !cutover.contains("the demotion would make its writes fail")
    );
    // without adoption the handover hands to the verification directly
    let cold = render(&clone_plan(MirrorImageMode::Journal, None, false), "x").unwrap();
    assert!(!cold.files.iter().any(|f| f.name == "5-tenant-admin.sh"));
    let handover = &cold.files[3].contents;
    assert!(handover.contains("'6-destination-ceph-admin-verify.sh'"));
    // a cold cutover refuses a source in use instead of waiting
    assert!(cold.files[2]
        .contents
        .contains("the demotion would make its writes fail"));
    assert!(!cold.files[2].contents.contains("IDLE_FOR="));
}

#[test]
fn clone_bundle_scripts_are_shellcheck_clean_as_rendered() {
    let dir = tempfile::tempdir().unwrap();
    for (n, plan) in [
        clone_plan(MirrorImageMode::Journal, Some(2000), true),
        clone_plan(MirrorImageMode::Snapshot, None, false),
    ]
    .iter()
    .enumerate()
    {
        for f in render(plan, "x")
            .unwrap()
            .files
            .iter()
            .filter(|f| f.executable)
        {
            let path = dir.path().join(format!("{n}-{}", f.name));
            std::fs::write(&path, &f.contents).unwrap();
            let out = std::process::Command::new("shellcheck")
                .args(["-s", "sh", "-f", "gcc"])
                .arg(&path)
                .output()
                .expect("shellcheck must be installed (apt-get install shellcheck)");
            assert!(
                out.status.success(),
                "{}:\n{}",
                f.name,
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
}

/// The token `handoff_token WHAT ID FSID` of the scripts, computed here independently.
fn handoff_token(plan_id: &str, what: &str, id: &str, fsid: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(
        format!("rbd-relay {what}\n{plan_id}\n{id}\n{fsid}\n").as_bytes(),
    ))
}

/// Runs `script` of `plan`'s bundle with `args` and fake `rbd` and `ceph`: every call is
/// logged; `rbd info` says the source is mirrored (journal) and primary until a demote,
/// `rbd status --format json` lists the watchers in the file `watchers` (a test may empty it
/// while the script runs, after `empty_after_s`), `rbd journal status` says the peer is in
/// sync, `ceph fsid` prints another cluster's, `rados listwatchers rbd_mirroring` names
/// client.4130 (the destination rbd-mirror). Returns (success, stdout, stderr, calls).
fn run_with_fake_ceph(
    plan: &Plan,
    script: Script,
    args: &[&str],
    watchers: &str,
    empty_after_s: Option<u64>,
) -> (bool, String, String, String) {
    let b = render(plan, "x").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("script.sh");
    let text = &b
        .files
        .iter()
        .find(|f| f.name == script.file_name())
        .unwrap()
        .contents;
    std::fs::write(&path, text).unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let log = dir.path().join("calls");
    let wfile = dir.path().join("watchers");
    std::fs::write(&wfile, watchers).unwrap();
    let demoted = dir.path().join("demoted");
    let journal = r#"{"registered_clients":[{"id":"","data":"","commit_position":{"object_positions":[{"object_number":0,"tag_tid":1,"entry_tid":5}]},"state":"connected"},{"id":"peer","data":"00000000  02 01 38 00 00 00 01 00  00 00 0c 00 00 00 31 30  |..8...........10|\n00000010  32 33 65 62 62 65 34 33  34 38 01 00 00 00 02 00  |23ebbe4348......|\n00000020  00 00 00 00 00 00 00 00  00 00 01 00 00 00 08 00  |................|\n00000030  00 00 00 00 00 00 06 00  00 00 00 00 00 00        |..............|\n","commit_position":{"object_positions":[{"object_number":0,"tag_tid":1,"entry_tid":5}]},"state":"connected"}]}"#;
    let rbd = format!(
        r#"#!/bin/sh
echo "rbd $*" >>'{log}'
case " $* " in
*" info "*)
    if [ -e '{demoted}' ]; then p=false; else p=true; fi
    printf 'rbd image %s:\n\tid: abc\n\tfeatures: layering, exclusive-lock, object-map, journaling\n\tmirroring state: enabled\n\tmirroring mode: {mode}\n\tmirroring primary: %s\n' x "$p"
    ;;
*" journal status "*) printf '%s\n' '{journal}' ;;
*" status "*) cat '{wfile}' ;;
*" mirror image demote "*) : >'{demoted}'; echo "Image demoted to non-primary" ;;
*) exit 1 ;;
esac
"#,
        log = log.display(),
        demoted = demoted.display(),
        wfile = wfile.display(),
        mode = plan.migration.mode,
    );
    let ceph = format!(
        "#!/bin/sh\necho \"ceph $*\" >>'{}'\n[ \"$*\" != \"${{*%fsid}}\" ] && echo f-source\n",
        log.display()
    );
    // the destination rbd-mirror (client.4130) watches the pool's rbd_mirroring object
    // (two watches of one client, as the test pair's daemon shows)
    let rados = format!(
        "#!/bin/sh\necho \"rados $*\" >>'{}'\ncase \" $* \" in *\" listwatchers rbd_mirroring \"*) printf '%s\\n' 'watcher=10.0.0.7:0/3332328173 client.4130 cookie=94694920609793' 'watcher=10.0.0.7:0/3332328173 client.4130 cookie=94694920609794' ;; *) exit 1 ;; esac\n",
        log.display()
    );
    for (tool, body) in [("rbd", rbd), ("ceph", ceph), ("rados", rados)] {
        let p = bin.join(tool);
        std::fs::write(&p, body).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let child = std::process::Command::new("sh")
        .arg(&path)
        .args(args)
        .env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        )
        .env("RBD_RELAY_POLL_INTERVAL", "1")
        .env("RBD_RELAY_WAIT_TIMEOUT", "4")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(after) = empty_after_s {
        std::thread::sleep(std::time::Duration::from_secs(after));
        std::fs::write(&wfile, r#"{"watchers":[]}"#).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        std::fs::read_to_string(&log).unwrap_or_default(),
    )
}

const ONE_WATCHER: &str =
    r#"{"watchers":[{"address":"10.0.0.7:0/3332328173","client":4130,"cookie":94694920609792}]}"#;
const FSID: &str = "27a9fbc0-4355-4685-a5cc-ad091ce4fbcc";

#[test]
fn the_live_cutover_refuses_while_the_source_has_a_watcher_and_never_demotes() {
    let plan = clone_plan(MirrorImageMode::Journal, Some(1000), true);
    let t = handoff_token(&plan.id, "replica in sync", "10c7e713647", FSID);
    let (ok, out, err, calls) = run_with_fake_ceph(
        &plan,
        Script::Cutover,
        &["10c7e713647", FSID, &t],
        ONE_WATCHER,
        None,
    );
    assert!(!ok, "{out}");
    assert!(
        err.contains("is still in use by client.4130 (10.0.0.7:0/3332328173)")
            && err.contains("Nothing was changed"),
        "{err}"
    );
    assert!(out.contains("waiting for the cutover"), "{out}");
    assert!(!calls.contains("demote"), "{calls}");
}

#[test]
fn the_live_cutover_demotes_once_the_watcher_is_gone_for_the_idle_time() {
    let plan = clone_plan(MirrorImageMode::Journal, Some(1000), true);
    let t = handoff_token(&plan.id, "replica in sync", "10c7e713647", FSID);
    let (ok, out, err, calls) = run_with_fake_ceph(
        &plan,
        Script::Cutover,
        &["10c7e713647", FSID, &t],
        ONE_WATCHER,
        Some(1),
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("cutting over"), "{out}");
    assert!(calls.contains("mirror image demote"), "{calls}");
    // the next role's line: the replica's id, the fsid and the demotion token
    let demoted = handoff_token(&plan.id, "source demoted", "10c7e713647", FSID);
    assert!(
        out.contains(&format!(
            "sh ./4-destination-ceph-admin-handover.sh 10c7e713647 {FSID} {demoted}"
        )),
        "{out}"
    );
}

#[test]
fn the_cutover_told_go_demotes_while_in_use_naming_the_users() {
    for plan in [
        clone_plan(MirrorImageMode::Journal, Some(1000), true),
        clone_plan(MirrorImageMode::Journal, None, true),
    ] {
        let t = handoff_token(&plan.id, "replica in sync", "10c7e713647", FSID);
        let (ok, out, err, calls) = run_with_fake_ceph(
            &plan,
            Script::Cutover,
            &["10c7e713647", FSID, &t, "go"],
            ONE_WATCHER,
            None,
        );
        assert!(ok, "{out}{err}");
        assert!(
            out.contains("although the source is in use by client.4130"),
            "{out}"
        );
        assert!(calls.contains("mirror image demote"), "{calls}");
    }
}

#[test]
fn a_cold_cutover_refuses_a_source_in_use_without_waiting() {
    let plan = clone_plan(MirrorImageMode::Journal, None, true);
    let t = handoff_token(&plan.id, "replica in sync", "10c7e713647", FSID);
    let (ok, out, err, calls) = run_with_fake_ceph(
        &plan,
        Script::Cutover,
        &["10c7e713647", FSID, &t],
        ONE_WATCHER,
        None,
    );
    assert!(!ok, "{out}");
    assert!(err.contains("is in use by client.4130"), "{err}");
    assert!(!out.contains("waiting for the cutover"), "{out}");
    assert!(!calls.contains("demote"), "{calls}");
}

#[test]
fn clone_scripts_refuse_a_handoff_of_another_kind_or_plan_before_any_change() {
    let plan = clone_plan(MirrorImageMode::Journal, Some(1000), true);
    let id = "10c7e713647";
    // the cutover given the demotion token (a later script's) or another plan's sync token
    for bad in [
        handoff_token(&plan.id, "source demoted", id, FSID),
        handoff_token("another-plan", "replica in sync", id, FSID),
    ] {
        let (ok, _, err, calls) =
            run_with_fake_ceph(&plan, Script::Cutover, &[id, FSID, &bad], "", None);
        assert!(!ok);
        assert!(
            err.contains(&format!("the sync token '{bad}' does not match")),
            "{err}"
        );
        assert_eq!(calls, "", "no rbd or ceph call before the refusal");
    }
    // the cutover given only what the source script printed (nothing, in journal mode)
    let (ok, _, err, calls) = run_with_fake_ceph(&plan, Script::Cutover, &[], "", None);
    assert!(
        !ok && err.contains("needs the three values 2-destination-ceph-admin.sh prints"),
        "{err}"
    );
    assert_eq!(calls, "");
    // the release given the handover's token (before the verification) instead of the
    // verified-copy handoff
    let digest = "a".repeat(64);
    let early = handoff_token(&plan.id, "handed over", id, FSID);
    let (ok, _, err, calls) = run_with_fake_ceph(
        &plan,
        Script::Release,
        &[&digest, id, FSID, &early],
        "",
        None,
    );
    assert!(!ok);
    assert!(
        err.contains("does not match") && err.contains("6-destination-ceph-admin-verify.sh"),
        "{err}"
    );
    assert_eq!(calls, "");
    // the source's roll back given no handoff of the destination's roll back
    let (ok, _, err, calls) = run_with_fake_ceph(&plan, Script::RollbackSource, &[], "", None);
    assert!(
        !ok && err.contains("rollback-1-destination-ceph-admin.sh"),
        "{err}"
    );
    assert_eq!(calls, "");
}

/// A clone plan adopting a bootable source volume with image metadata (hostile values).
fn bootable_clone_plan() -> (Plan, std::collections::BTreeMap<String, String>) {
    let meta: std::collections::BTreeMap<String, String> = [
        ("hw_disk_bus", "scsi"),
        ("image_name", HOSTILE_VOLUME),
        ("os_type", "it's \"linux\" $(id)"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut m = clone_plan(MirrorImageMode::Snapshot, None, true).migration;
    if let Some(a) = m.adopt.as_mut() {
        a.bootable = true;
        a.image_metadata = meta.clone();
    }
    (
        Plan::volume(
            m,
            facts(Features::LAYERING | Features::EXCLUSIVE_LOCK | Features::OBJECT_MAP),
        ),
        meta,
    )
}

/// Runs the tenant script of a clone plan against fake `openstack` and `curl`: the volume
/// of the plan is found adopted and available; returns (success, stderr, the curl calls,
/// the body of the POST, if any).
fn run_tenant_with_fake_cloud(plan: &Plan) -> (bool, String, String, Option<String>) {
    const VOLUME: &str = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0";
    let b = render(plan, "x").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("script.sh");
    let text = &b
        .files
        .iter()
        .find(|f| f.name == Script::AdoptHandedOver.file_name())
        .unwrap()
        .contents;
    std::fs::write(&path, text).unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let log = dir.path().join("calls");
    let body = dir.path().join("body");
    let openstack = r#"#!/bin/sh
case " $* " in
*" token issue "*" id "*) echo tok ;;
*" token issue "*) echo proj ;;
*" endpoint list "*) echo 'http://cinder.test/v3/%(project_id)s' ;;
*" volume show "*) echo available ;;
*) exit 1 ;;
esac
"#
    .to_string();
    let curl = format!(
        r#"#!/bin/sh
cat >/dev/null
echo "curl $*" >>'{log}'
case " $* " in
*" -X GET "*) printf '{{"volumes": [{{"id": "{VOLUME}"}}]}}\n' ;;
*" -X POST "*)
    while [ "$#" -gt 0 ]; do
        [ "$1" = --data-binary ] && printf '%s' "$2" >'{body}'
        shift
    done
    printf '{{"metadata": {{}}}}\n'
    ;;
*) exit 1 ;;
esac
"#,
        log = log.display(),
        body = body.display(),
    );
    for (tool, text) in [("openstack", openstack), ("curl", curl)] {
        let p = bin.join(tool);
        std::fs::write(&p, text).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let t = handoff_token(&plan.id, "handed over", "10c7e713647", FSID);
    let out = std::process::Command::new("sh")
        .arg(&path)
        .args(["10c7e713647", FSID, &t])
        .env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        )
        .env("RBD_RELAY_POLL_INTERVAL", "1")
        .env("RBD_RELAY_WAIT_TIMEOUT", "4")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        std::fs::read_to_string(&log).unwrap_or_default(),
        std::fs::read_to_string(&body).ok(),
    )
}

#[test]
fn the_tenant_script_sets_a_bootable_source_volumes_image_metadata_on_the_adopted_volume() {
    let (plan, meta) = bootable_clone_plan();
    let (ok, err, calls, body) = run_tenant_with_fake_cloud(&plan);
    assert!(ok, "{err}\n{calls}");
    let post = calls
        .lines()
        .find(|l| l.contains(" -X POST "))
        .unwrap_or_else(|| panic!("no POST: {calls}"));
    assert!(
        post.ends_with(
            " http://cinder.test/v3/proj/volumes/0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0/action"
        ),
        "the volume's action: {post}"
    );
    let body: serde_json::Value = serde_json::from_str(&body.expect("a POST body")).unwrap();
    let want: serde_json::Value = serde_json::json!({"os-set_image_metadata": {"metadata": meta}});
    assert_eq!(body, want, "exactly the source volume's image metadata");
}

#[test]
fn the_tenant_script_of_a_volume_without_image_metadata_sets_none() {
    let plan = clone_plan(MirrorImageMode::Snapshot, None, true);
    let (ok, err, calls, body) = run_tenant_with_fake_cloud(&plan);
    assert!(ok, "{err}\n{calls}");
    assert!(!calls.contains("-X POST"), "{calls}");
    assert!(body.is_none());
}

#[test]
fn the_tenant_scripts_with_image_metadata_are_shellcheck_clean() {
    let (plan, _) = bootable_clone_plan();
    let mut copy = volume_plan(MirrorImageMode::Journal);
    copy.migration.adopt = plan.migration.adopt.clone();
    for (p, script) in [
        (&plan, Script::AdoptHandedOver),
        (
            &Plan::volume(copy.migration, facts(Features::LAYERING)),
            Script::Tenant,
        ),
    ] {
        let b = render(p, "x").unwrap();
        let f = b
            .files
            .iter()
            .find(|f| f.name == script.file_name())
            .unwrap();
        assert!(f
            .contents
            .contains("IMAGE_METADATA='{\"os-set_image_metadata\""));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(&f.name);
        std::fs::write(&path, &f.contents).unwrap();
        let out = std::process::Command::new("shellcheck")
            .args(["-s", "sh"])
            .arg(&path)
            .output()
            .expect("shellcheck must be installed (apt-get install shellcheck)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// Snapshot mode: the destination rbd-mirror watches the primary source; the source admin's
/// cutover tells its watch apart by its watch on the pool's rbd_mirroring object, without
/// reading the monitors' sessions (the fake `ceph` lists no monitor).
#[test]
fn a_snapshot_mode_cold_cutover_does_not_count_rbd_mirrors_watch_as_a_user() {
    let plan = clone_plan(MirrorImageMode::Snapshot, None, true);
    let t = handoff_token(&plan.id, "replica in sync", "10c7e713647", FSID);
    let args = ["10c7e713647", FSID, t.as_str()];
    let (ok, out, err, calls) =
        run_with_fake_ceph(&plan, Script::Cutover, &args, ONE_WATCHER, None);
    assert!(ok, "{out}{err}");
    assert!(calls.contains(" mirror image demote "), "{calls}");
    assert!(
        calls.contains("rados ") && calls.contains("listwatchers rbd_mirroring"),
        "{calls}"
    );

    // an instance beside rbd-mirror: refused, naming the instance only
    let two = r#"{"watchers":[{"address":"10.0.0.7:0/3332328173","client":4130,"cookie":94694920609792},{"address":"10.0.0.8:0/1","client":4242,"cookie":7}]}"#;
    let (ok, out, err, calls) = run_with_fake_ceph(&plan, Script::Cutover, &args, two, None);
    assert!(!ok, "{out}");
    assert!(
        err.contains("is in use by client.4242 (10.0.0.8:0/1);") && !err.contains("client.4130"),
        "{err}"
    );
    assert!(!calls.contains("demote"), "{calls}");
}

#[test]
fn a_live_journal_bundle_sets_the_payload_in_the_source_script_and_puts_the_users_own_back() {
    let mut live_copy = volume_plan(MirrorImageMode::Journal).migration;
    live_copy.live = Some(Live { idle_for_ms: 2000 });
    live_copy.allow_live = true;
    let mut own = facts(Features::LAYERING | Features::EXCLUSIVE_LOCK);
    own.journal_payload_before = Some("65536".into());
    for (plan, restorer) in [
        (
            Plan::volume(live_copy, own.clone()),
            "4-source-ceph-admin-cleanup.sh",
        ),
        (
            {
                let mut p = clone_plan(MirrorImageMode::Journal, Some(2000), false);
                p.facts.journal_payload_before = Some("65536".into());
                Plan::volume(p.migration, p.facts)
            },
            "7-source-ceph-admin-release.sh",
        ),
    ] {
        let b = render(&plan, "x").unwrap();
        let text = |name: &str| -> String {
            b.files
                .iter()
                .find(|f| f.name == name)
                .unwrap()
                .contents
                .clone()
        };
        let source = text("1-source-ceph-admin.sh");
        let before = format!("PAYLOAD_BEFORE={}", sh_quote("65536"));
        for want in [
            format!(
                "PAYLOAD_KEY={}",
                sh_quote("conf_rbd_journal_max_payload_bytes")
            ),
            "JOURNAL_PAYLOAD=8388608".into(),
            "PAYLOAD_BEFORE_SET=yes".into(),
            before.clone(),
            "converge_payload yes \"$JOURNAL_PAYLOAD\"".into(),
        ] {
            assert!(source.contains(&want), "{want} in {source}");
        }
        let at = |t: &str, s: &str| t.find(s).unwrap_or_else(|| panic!("{s} in {t}"));
        assert!(
            at(&source, "set_journal_payload (") < at(&source, "enable_features ("),
            "the payload before the features"
        );
        let restore = text(restorer);
        assert!(restore.contains(&before), "{restore}");
        assert!(
            at(&restore, "restore_features (") < at(&restore, "restore_journal_payload ("),
            "the payload after the features"
        );
        assert!(restore.contains("converge_payload \"$PAYLOAD_BEFORE_SET\" \"$PAYLOAD_BEFORE\""));
        if restorer.starts_with('7') {
            // the clone took the replica's metadata: the verify script gives the copy the
            // source's own back
            let verify = text("6-destination-ceph-admin-verify.sh");
            assert!(verify.contains(&before), "{verify}");
            assert!(
                verify.contains("current_copy image-meta set \"$PAYLOAD_KEY\" \"$PAYLOAD_BEFORE\""),
                "{verify}"
            );
        }
    }
}
