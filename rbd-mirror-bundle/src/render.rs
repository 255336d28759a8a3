//! What every script of a bundle starts with (header, names, common functions), and the
//! pieces the role renderers share; the roles' bodies are in `source.rs`, `destination.rs`,
//! `tenant.rs` and `cleanup.rs`.

use std::fmt::Write as _;

use rbd_mirror_core::features::MirrorImageMode;
use rbd_mirror_core::plan::{Plan, Step, JOURNAL_PAYLOAD_KEY};
use rbd_mirror_core::spec::{ClusterSpec, ImageSpec};

use crate::template::{section, CEPH, COMMON, COMPLETION};

/// The functions that read and converge the source's journal payload override.
const PAYLOAD_FUNCTIONS: &str = section(CEPH, "payload_functions");
use crate::{sh_quote, BundleError, Flow, Script};

const COMMON_FUNCTIONS: &str = section(COMMON, "functions");
const CEPH_FUNCTIONS: &str = section(CEPH, "functions");
const SOURCE_CLUSTER: &str = section(CEPH, "source_cluster");
const DESTINATION_CLUSTER: &str = section(CEPH, "destination_cluster");
/// The completion decisions (see `sh/completion.sh`).
pub(crate) const JOURNAL_COMPLETION: &str = section(COMPLETION, "journal");
pub(crate) const SNAPSHOT_SOURCE_COMPLETION: &str = section(COMPLETION, "snapshot_source");
pub(crate) const SNAPSHOT_REPLICA_COMPLETION: &str = section(COMPLETION, "snapshot_replica");

/// Renders one script of a plan's bundle.
pub(crate) struct Renderer<'a> {
    /// The plan.
    pub(crate) plan: &'a Plan,
    /// The script rendered.
    pub(crate) script: Script,
    /// The plan's step indexes this script carries, in order.
    pub(crate) steps: &'a [usize],
    /// All scripts of the bundle, in run order.
    pub(crate) present: &'a [Script],
}

impl Renderer<'_> {
    /// The whole script.
    pub(crate) fn render(&self) -> Result<String, BundleError> {
        let mut s = String::new();
        self.header(&mut s);
        self.names(&mut s);
        s.push('\n');
        s.push_str(COMMON_FUNCTIONS);
        let journal = self.plan.migration.mode == MirrorImageMode::Journal;
        match self.script {
            Script::Source => {
                s.push_str(CEPH_FUNCTIONS);
                s.push_str(if journal {
                    JOURNAL_COMPLETION
                } else {
                    SNAPSHOT_SOURCE_COMPLETION
                });
                s.push_str(SOURCE_CLUSTER);
            }
            Script::Cleanup => {
                s.push_str(CEPH_FUNCTIONS);
                s.push_str(SOURCE_CLUSTER);
            }
            Script::Cutover | Script::Release | Script::RollbackSource => {
                s.push_str(CEPH_FUNCTIONS);
                if self.script == Script::Cutover {
                    if journal {
                        s.push_str(JOURNAL_COMPLETION);
                    }
                    s.push_str(crate::clone::SOURCE_USERS);
                }
                s.push_str(SOURCE_CLUSTER);
                s.push_str(crate::clone::SOURCE_FUNCTIONS);
            }
            Script::Destination => {
                s.push_str(CEPH_FUNCTIONS);
                s.push_str(SNAPSHOT_REPLICA_COMPLETION);
                s.push_str(DESTINATION_CLUSTER);
                if Flow::of(self.plan) == Flow::Clone {
                    s.push_str(crate::clone::DESTINATION_FUNCTIONS);
                }
            }
            Script::Handover
            | Script::VerifyHandover
            | Script::RemoveReplica
            | Script::RollbackDestination => {
                s.push_str(CEPH_FUNCTIONS);
                s.push_str(DESTINATION_CLUSTER);
                s.push_str(crate::clone::DESTINATION_FUNCTIONS);
            }
            Script::Tenant | Script::AdoptHandedOver => {}
        }
        s.push_str("say \"plan $PLAN_ID\"\n\n");
        match self.script {
            Script::Source => self.source(&mut s)?,
            Script::Destination => match Flow::of(self.plan) {
                Flow::Copy => self.destination(&mut s)?,
                Flow::Clone => self.destination_in_sync(&mut s)?,
            },
            Script::Tenant | Script::AdoptHandedOver => self.tenant(&mut s)?,
            Script::Cleanup => self.cleanup(&mut s)?,
            Script::Cutover => self.cutover(&mut s)?,
            Script::Handover => self.handover(&mut s)?,
            Script::VerifyHandover => self.verify_handover(&mut s)?,
            Script::Release => self.release(&mut s)?,
            Script::RemoveReplica => self.remove_replica(&mut s)?,
            Script::RollbackDestination => self.rollback_destination(&mut s),
            Script::RollbackSource => self.rollback_source(&mut s),
        }
        Ok(s)
    }

    /// The comment block and `set -eu`.
    fn header(&self, s: &mut String) {
        let p = self.plan;
        let m = &p.migration;
        let rollback = Flow::of(p).rollback();
        let position = |list: &[Script]| list.iter().position(|x| *x == self.script);
        let which = match (position(self.present), position(rollback)) {
            (Some(i), _) => format!("script {} of {}", i + 1, self.present.len()),
            (None, Some(i)) => format!(
                "roll-back script {} of {} (after a failed cutover)",
                i + 1,
                rollback.len()
            ),
            (None, None) => "script".to_string(),
        };
        let _ = writeln!(s, "#!/bin/sh");
        let _ = writeln!(
            s,
            "# shellcheck disable=SC2016 # names are single-quoted literals on purpose"
        );
        let _ = writeln!(
            s,
            "# rbd-relay bundle of plan {} - {which}, run by the {}.",
            p.id,
            self.script.role()
        );
        let _ = writeln!(
            s,
            "# {}:{} -> {}:{} ({} mode). Generated from the plan `rbd-relay migrate ... --dry-run` prints.",
            m.source.name,
            m.image,
            m.destination.name,
            m.copy_target(),
            m.mode
        );
        let _ = writeln!(
            s,
            "# Checks its preconditions first and stops at the first failed one; safe to re-run."
        );
        let _ = writeln!(
            s,
            "# No key or token is in this file: the tools read the role's own credentials."
        );
        let _ = writeln!(s, "set -eu\n");
    }

    /// The script's names, each written once through [`sh_quote`].
    fn names(&self, s: &mut String) {
        let p = self.plan;
        let m = &p.migration;
        let _ = writeln!(s, "SCRIPT={}", sh_quote(self.script.file_name()));
        let _ = writeln!(s, "PLAN_ID={}", sh_quote(&p.id));
        let _ = writeln!(s, "WAIT_TIMEOUT=${{RBD_RELAY_WAIT_TIMEOUT:-3600}}");
        let _ = writeln!(s, "POLL_INTERVAL=${{RBD_RELAY_POLL_INTERVAL:-5}}");
        // the script whose verified-copy handoff the later ones check
        let verifier = match Flow::of(p) {
            Flow::Copy => Script::Destination,
            Flow::Clone => Script::VerifyHandover,
        };
        let _ = writeln!(s, "VERIFIER_SCRIPT={}", sh_quote(verifier.file_name()));
        match self.script {
            Script::Source
            | Script::Cleanup
            | Script::Cutover
            | Script::Release
            | Script::RollbackSource => {
                let _ = writeln!(
                    s,
                    "# the source cluster and cephx user (override from the environment)"
                );
                cluster_vars(s, "SRC", &m.source);
                image_vars(s, "SRC", &m.image);
            }
            Script::Destination
            | Script::Handover
            | Script::VerifyHandover
            | Script::RemoveReplica
            | Script::RollbackDestination => {
                let _ = writeln!(
                    s,
                    "# the destination cluster and cephx user (override from the environment)"
                );
                cluster_vars(s, "DST", &m.destination);
                let _ = writeln!(s, "# the replica rbd-mirror makes, and the copy");
                image_vars(s, "REPLICA", &m.replica());
                image_vars(s, "COPY", &m.copy_target());
                if Flow::of(p) == Flow::Clone {
                    let _ = writeln!(
                        s,
                        "# the replica's snapshot the destination image is cloned from"
                    );
                    let _ = writeln!(
                        s,
                        "HANDOVER_SNAP={}",
                        sh_quote(&crate::clone::handover_snap(p))
                    );
                }
            }
            Script::Tenant | Script::AdoptHandedOver => {
                let cloud = m
                    .adopt
                    .as_ref()
                    .map(|a| a.cloud.clone())
                    .or_else(|| m.register.as_ref().map(|r| r.cloud.clone()))
                    .unwrap_or_default();
                let _ = writeln!(
                    s,
                    "# the destination cloud (clouds.yaml entry with the admin role; override from the environment)"
                );
                let _ = writeln!(s, "OS_CLOUD=${{OS_CLOUD:-{}}}", sh_quote(&cloud));
                let _ = writeln!(s, "export OS_CLOUD");
                let t = m.copy_target();
                let _ = writeln!(s, "COPY_POOL={}", sh_quote(&t.pool.to_string()));
                let _ = writeln!(s, "COPY_IMAGE={}", sh_quote(&t.image));
            }
        }
    }

    /// The journal payload's names of a plan that tunes it (live journal mode): the key, this
    /// migration's value and the image's original as the plan recorded it. Nothing for
    /// another plan.
    pub(crate) fn payload_variables(&self, s: &mut String) {
        if let Some(bytes) = self.payload_originals(s) {
            let _ = writeln!(s, "JOURNAL_PAYLOAD={bytes}");
            s.push_str(PAYLOAD_FUNCTIONS);
        }
    }

    /// The key and the source's original of a plan that tunes the journal payload (for
    /// the scripts that put it back); returns the migration's payload, `None` (nothing
    /// written) for another plan.
    pub(crate) fn payload_originals(&self, s: &mut String) -> Option<u64> {
        let p = self.plan;
        let bytes = p.steps.iter().find_map(|st| match st {
            Step::SetJournalPayload { bytes } => Some(*bytes),
            _ => None,
        })?;
        let before = p.facts.journal_payload_before.as_deref();
        let _ = writeln!(s, "PAYLOAD_KEY={}", sh_quote(JOURNAL_PAYLOAD_KEY));
        let _ = writeln!(
            s,
            "PAYLOAD_BEFORE_SET={}",
            if before.is_some() { "yes" } else { "no" }
        );
        let _ = writeln!(s, "PAYLOAD_BEFORE={}", sh_quote(before.unwrap_or("")));
        Some(bytes)
    }

    pub(crate) fn step_header(&self, s: &mut String, index: usize) {
        let step = &self.plan.steps[index];
        let _ = writeln!(
            s,
            "\n# --- plan step {}: {} ({})",
            index + 1,
            step.kind(),
            step.describe(&self.plan.migration).replace('\n', " ")
        );
        let _ = writeln!(
            s,
            "say {}",
            sh_quote(&format!("step {}: {}", index + 1, step.kind()))
        );
    }

    /// The script that runs after this one.
    pub(crate) fn next_script(&self) -> Option<Script> {
        let i = self.present.iter().position(|x| *x == self.script)?;
        self.present.get(i + 1).copied()
    }

    /// The last lines of a script that hands over to the script after it (in the run order,
    /// or the roll back's), naming the role that runs it.
    pub(crate) fn hand_to_next(&self, s: &mut String) {
        let rollback = Flow::of(self.plan).rollback();
        let next = self.next_script().or_else(|| {
            let i = rollback.iter().position(|x| *x == self.script)?;
            rollback.get(i + 1).copied()
        });
        if let Some(next) = next {
            next_command(s, &format!("the {} runs", next.role()), next.file_name());
        }
    }
}

/// The last lines of a script that hands over: who runs what next, with `$HANDOFF`.
pub(crate) fn next_command(s: &mut String, who_runs: &str, next_file: &str) {
    let _ = writeln!(
        s,
        "\nsay \"done. NEXT: {who_runs} (this line carries no secret):\"\nprintf '    sh ./%s%s\\n' {} \"${{HANDOFF:+ $HANDOFF}}\"",
        sh_quote(next_file)
    );
}

fn cluster_vars(out: &mut String, prefix: &str, c: &ClusterSpec) {
    let _ = writeln!(
        out,
        "{prefix}_CLUSTER=${{{prefix}_CLUSTER:-{}}}",
        sh_quote(&c.name)
    );
    let _ = writeln!(
        out,
        "{prefix}_CONF=${{{prefix}_CONF:-{}}}",
        sh_quote(&c.conf.display().to_string())
    );
    let _ = writeln!(
        out,
        "{prefix}_ID=${{{prefix}_ID:-{}}}",
        sh_quote(&c.client_id)
    );
}

fn image_vars(out: &mut String, prefix: &str, i: &ImageSpec) {
    let _ = writeln!(out, "{prefix}_POOL={}", sh_quote(&i.pool.pool));
    let _ = writeln!(out, "{prefix}_NAMESPACE={}", sh_quote(&i.pool.namespace));
    let _ = writeln!(out, "{prefix}_IMAGE={}", sh_quote(&i.image));
}

/// The source's user snapshots from before the migration named like rbd-mirror sync points
/// ([`rbd_mirror_core::ops::is_sync_point_name`]), space-separated: the scripts never
/// remove those.
pub(crate) fn sync_points_before(p: &Plan) -> String {
    let names: Vec<&str> = p
        .facts
        .snapshots
        .iter()
        .filter(|n| rbd_mirror_core::ops::is_sync_point_name(n))
        .map(String::as_str)
        .collect();
    names.join(" ")
}
