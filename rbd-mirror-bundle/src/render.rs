//! What every script of a bundle starts with (header, names, common functions), and the
//! pieces the role renderers share; the roles' bodies are in `source.rs`, `destination.rs`,
//! `tenant.rs` and `cleanup.rs`.

use std::fmt::Write as _;

use rbd_mirror_core::features::MirrorImageMode;
use rbd_mirror_core::plan::Plan;
use rbd_mirror_core::spec::{ClusterSpec, ImageSpec};

use crate::template::{section, CEPH, COMMON, COMPLETION};
use crate::{sh_quote, BundleError, Script};

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
        match self.script {
            Script::Source => {
                s.push_str(CEPH_FUNCTIONS);
                s.push_str(match self.plan.migration.mode {
                    MirrorImageMode::Journal => JOURNAL_COMPLETION,
                    MirrorImageMode::Snapshot => SNAPSHOT_SOURCE_COMPLETION,
                });
                s.push_str(SOURCE_CLUSTER);
            }
            Script::Cleanup => {
                s.push_str(CEPH_FUNCTIONS);
                s.push_str(SOURCE_CLUSTER);
            }
            Script::Destination => {
                s.push_str(CEPH_FUNCTIONS);
                s.push_str(SNAPSHOT_REPLICA_COMPLETION);
                s.push_str(DESTINATION_CLUSTER);
            }
            Script::Tenant => {}
        }
        s.push_str("say \"plan $PLAN_ID\"\n\n");
        match self.script {
            Script::Source => self.source(&mut s)?,
            Script::Destination => self.destination(&mut s)?,
            Script::Tenant => self.tenant(&mut s)?,
            Script::Cleanup => self.cleanup(&mut s)?,
        }
        Ok(s)
    }

    /// The comment block and `set -eu`.
    fn header(&self, s: &mut String) {
        let p = self.plan;
        let m = &p.migration;
        let total = self.present.len();
        let pos = self
            .present
            .iter()
            .position(|x| *x == self.script)
            .unwrap_or(0)
            + 1;
        let _ = writeln!(s, "#!/bin/sh");
        let _ = writeln!(
            s,
            "# shellcheck disable=SC2016 # names are single-quoted literals on purpose"
        );
        let _ = writeln!(
            s,
            "# rbd-relay bundle of plan {} - script {pos} of {total}, run by the {}.",
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
        match self.script {
            Script::Source | Script::Cleanup => {
                let _ = writeln!(
                    s,
                    "# the source cluster and cephx user (override from the environment)"
                );
                cluster_vars(s, "SRC", &m.source);
                image_vars(s, "SRC", &m.image);
            }
            Script::Destination => {
                let _ = writeln!(
                    s,
                    "# the destination cluster and cephx user (override from the environment)"
                );
                cluster_vars(s, "DST", &m.destination);
                let _ = writeln!(s, "# the replica rbd-mirror makes, and the copy");
                image_vars(s, "REPLICA", &m.replica());
                image_vars(s, "COPY", &m.copy_target());
            }
            Script::Tenant => {
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

    /// The comment and `say` that open the section of plan step `index`.
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
}

/// The last lines of a script that hands over: who runs what next, with `$HANDOFF`.
pub(crate) fn next_command(s: &mut String, who_runs: &str, next_file: &str) {
    let _ = writeln!(
        s,
        "\nsay \"done. NEXT: {who_runs} (this line carries no secret):\"\nprintf '    sh ./%s %s\\n' {} \"$HANDOFF\"",
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
