//! Unit tests of plans: the steps each migration gets, in order, and how they render.

use super::*;

pub(crate) use super::test_support::facts;

fn migration() -> VolumeMigration {
    VolumeMigration::new(
        ClusterSpec::named("site-a").unwrap(),
        ClusterSpec::named("site-b").unwrap(),
        "volumes/vol1".parse().unwrap(),
        PoolSpec::new("cinder").unwrap(),
    )
}

#[test]
fn journal_plan_has_all_steps_in_order() {
    let f = Features::LAYERING | Features::EXCLUSIVE_LOCK | Features::OBJECT_MAP;
    let p = Plan::volume(migration(), facts(f));
    let kinds: Vec<_> = p.steps.iter().map(Step::kind).collect();
    assert_eq!(
        kinds,
        [
            "preflight",
            "enable_features",
            "enable_mirroring",
            "wait_for_replica",
            "copy_replica",
            "set_copy_features",
            "verify",
            "disable_mirroring",
            "restore_features"
        ]
    );
    assert_eq!(p.facts.objects(), 3);
    assert!(p
        .render()
        .contains("enable journaling on site-a:volumes/vol1"));
    assert_eq!(p.id, "site-a_volumes_vol1_to_site-b_cinder_vol1");
}

#[test]
fn snapshot_plan_changes_no_features() {
    let mut m = migration();
    m.mode = MirrorImageMode::Snapshot;
    let p = Plan::volume(m, facts(Features::LAYERING));
    assert!(!p.steps.iter().any(|s| matches!(
        s,
        Step::EnableFeatures { .. } | Step::RestoreFeatures { .. }
    )));
}

#[test]
fn plan_round_trips_through_json() {
    let p = Plan::volume(migration(), facts(Features::LAYERING));
    let j = serde_json::to_string_pretty(&p).unwrap();
    let back: Plan = serde_json::from_str(&j).unwrap();
    assert_eq!(p, back);
}

#[test]
fn adoption_is_the_last_step_and_the_tenant_admins() {
    let mut m = migration();
    m.adopt = Some(Adoption {
        cloud: "site-b-admin".into(),
        target: AdoptTarget::CephPool {
            pool: "cinder".into(),
        },
        name: Some("disk1".into()),
        bootable: false,
        image_metadata: Default::default(),
        no_grow: false,
    });
    let p = Plan::volume(m, facts(Features::LAYERING | Features::EXCLUSIVE_LOCK));
    let last = p.steps.last().unwrap();
    assert_eq!(last.kind(), "adopt_volume");
    assert_eq!(last.role(), Role::TenantAdmin);
    let verify = p.steps.iter().position(|s| *s == Step::Verify).unwrap();
    assert!(verify < p.steps.len() - 1);
    let text = p.render();
    assert!(
        text.contains("[OpenStack tenant admin] adopt site-b:cinder/vol1 as a Cinder volume named 'disk1' in cloud site-b-admin"),
        "{text}"
    );
    let j = serde_json::to_string(&p).unwrap();
    assert_eq!(serde_json::from_str::<Plan>(&j).unwrap(), p);
}

#[test]
fn plan_without_adoption_reads_old_state_files() {
    let p = Plan::volume(migration(), facts(Features::LAYERING));
    let mut v = serde_json::to_value(&p).unwrap();
    assert!(v["migration"].get("adopt").is_none());
    v["migration"].as_object_mut().unwrap().remove("adopt");
    assert_eq!(serde_json::from_value::<Plan>(v).unwrap(), p);
}

#[test]
fn already_mirrored_image_is_left_mirrored() {
    let mut f = facts(Features::LAYERING | Features::EXCLUSIVE_LOCK | Features::JOURNALING);
    f.mirroring_was_enabled = true;
    let p = Plan::volume(migration(), f);
    assert!(!p.steps.contains(&Step::DisableMirroring));
}
