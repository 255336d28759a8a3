//! What the one-shot commands print when they are done: the plan, a migration's summary,
//! adoption, registration, deletion, pairing, status and the list of recorded migrations.
//! Kept apart from the event stream (`report/mod.rs`) because each of these is one
//! self-contained rendering, text and JSON side by side.

use std::io::Write;
use std::path::PathBuf;

use rbd_mirror_ceph::pairing::{PairReport, PoolStatus};
use rbd_mirror_core::cloud::{AdoptedVolume, CloudImage};
use rbd_mirror_core::exec::Summary;
use rbd_mirror_core::plan::Plan;
use rbd_mirror_core::state::RunState;

use super::{human_bytes, progress_text, Reporter};
use crate::args::OutputFormat;

impl Reporter {
    pub fn plan(&self, plan: &Plan, recorded: Option<&RunState>) {
        match self.format {
            OutputFormat::Json => {
                let mut v = serde_json::json!({
                    "result": "plan", "plan": plan,
                    "next_step": recorded.map(|r| r.next_step),
                });
                // a plan awaiting preflight (a bootable one before its upload)
                let then = plan.outline_after_preflight();
                if !then.is_empty() {
                    v["then"] = serde_json::json!(then);
                }
                self.json(v)
            }
            OutputFormat::Text => {
                out!("{}", plan.render());
                match recorded {
                    Some(r) if r.finished() => outln!("(recorded run: finished)"),
                    Some(r) => outln!(
                        "(recorded run: stopped before step {}; re-run without --dry-run to resume)",
                        r.next_step + 1
                    ),
                    None => outln!("(dry run: nothing was changed)"),
                }
            }
        }
    }

    pub fn summary(&self, s: &Summary) {
        match self.format {
            OutputFormat::Json => self.json(serde_json::json!({"result": "ok", "summary": s})),
            OutputFormat::Text => {
                if s.already_done {
                    outln!("migration {} was already finished; nothing to do", s.id);
                }
                outln!(
                    "migrated {} -> {} ({})",
                    s.source,
                    s.copy,
                    human_bytes(s.bytes as f64)
                );
                outln!("verified: sha256 {}", s.sha256);
                if let Some(to) = s.grown_to {
                    outln!(
                        "grown from {} to {} bytes ({} GiB) before the adoption, the size Cinder records (the first {} bytes are the verified ones, the rest zeros)",
                        s.bytes,
                        to,
                        to >> 30,
                        s.bytes
                    );
                }
                if let Some(v) = &s.volume {
                    outln!(
                        "adopted as Cinder volume {} ({}{} GiB, {}), backed by RBD image {}",
                        v.id,
                        v.name
                            .as_ref()
                            .map(|n| format!("'{n}', "))
                            .unwrap_or_default(),
                        v.size_gib,
                        v.status,
                        v.rbd_image
                    );
                }
                if let Some(i) = &s.image {
                    outln!(
                        "registered as Glance image {} ({}min_disk {} GiB, {})",
                        i.id,
                        i.name
                            .as_ref()
                            .map(|n| format!("'{n}', "))
                            .unwrap_or_default(),
                        i.min_disk_gib,
                        i.status
                    );
                }
                let total: f64 = s.steps.iter().map(|(_, t)| t).sum();
                let steps: Vec<String> = s
                    .steps
                    .iter()
                    .map(|(k, t)| format!("{k} {t:.1}s"))
                    .collect();
                outln!("time: {total:.1}s ({})", steps.join(", "));
                if !s.lost_features.is_empty() {
                    outln!(
                        "note: {} could not be restored on the source",
                        s.lost_features
                    );
                }
                outln!("the source image was left in place; delete it yourself once the destination is in use");
            }
        }
    }

    pub fn adopted(&self, cloud: &str, pool: &str, v: &AdoptedVolume) {
        match self.format {
            OutputFormat::Json => {
                self.json(serde_json::json!({"result": "ok", "cloud": cloud, "volume": v}))
            }
            OutputFormat::Text => outln!(
                "adopted in cloud {cloud} as Cinder volume {} ({}{} GiB, {}), backed by RBD image {pool}/{}",
                v.id,
                v.name
                    .as_ref()
                    .map(|n| format!("'{n}', "))
                    .unwrap_or_default(),
                v.size_gib,
                v.status,
                v.rbd_image
            ),
        }
    }

    pub fn registered(&self, cloud: &str, i: &CloudImage) {
        match self.format {
            OutputFormat::Json => {
                self.json(serde_json::json!({"result": "ok", "cloud": cloud, "image": i}))
            }
            OutputFormat::Text => outln!(
                "registered in cloud {cloud} as image {} ({}min_disk {} GiB, {})",
                i.id,
                i.name
                    .as_ref()
                    .map(|n| format!("'{n}', "))
                    .unwrap_or_default(),
                i.min_disk_gib,
                i.status
            ),
        }
    }

    pub fn deleted(&self, r: &rbd_mirror_core::delete::DeleteReport) {
        match self.format {
            OutputFormat::Json => self.json(serde_json::json!({"result": "ok", "deleted": r})),
            OutputFormat::Text => {
                if r.already_deleted {
                    outln!("{} was already deleted; nothing to do", r.source);
                } else {
                    outln!(
                        "deleted {} after re-verifying {} (sha256 {})",
                        r.source,
                        r.copy,
                        r.sha256
                    );
                }
            }
        }
    }

    pub fn paired(&self, r: &PairReport) {
        match self.format {
            OutputFormat::Json => self.json(serde_json::json!({"result": "ok", "pair": r})),
            OutputFormat::Text => {
                let peer = r
                    .peer
                    .as_ref()
                    .map(|p| format!("peer {} ({}, {})", p.site_name, p.direction, p.uuid))
                    .unwrap_or_else(|| "no peer found afterwards".into());
                if r.already_paired {
                    outln!(
                        "{}:{} is already paired with {}:{} ({peer}); nothing to do",
                        r.to,
                        r.pool,
                        r.from,
                        r.pool
                    );
                    return;
                }
                outln!("paired {}:{} -> {}:{}", r.from, r.pool, r.to, r.pool);
                for a in &r.actions {
                    outln!("  - {}", a.describe(&r.from, &r.to, &r.pool));
                }
                outln!("  {}:{} now has {peer}", r.to, r.pool);
            }
        }
    }

    /// Waiting for the destination's rbd-mirror to connect to the source pool (every ~5 s).
    pub fn waiting_for_daemon(
        &self,
        to: &librbd::Cluster,
        from: &librbd::Cluster,
        waited: std::time::Duration,
    ) {
        if self.format == OutputFormat::Text && (self.tty || waited.as_secs().is_multiple_of(5)) {
            self.line(
                &format!(
                    "waiting for rbd-mirror on {} to connect to {} ({} s)",
                    to.name(),
                    from.name(),
                    waited.as_secs()
                ),
                true,
            );
        }
    }

    /// The destination's rbd-mirror is connected: replication can start.
    pub fn daemon_connected(&self, r: &PairReport, waited: std::time::Duration) {
        self.finish();
        match self.format {
            OutputFormat::Json => self.json(serde_json::json!({
                "event": "daemon_connected",
                "from": r.from,
                "to": r.to,
                "pool": r.pool,
                "waited_seconds": waited.as_secs_f64(),
            })),
            OutputFormat::Text => outln!(
                "rbd-mirror on {} is connected to {}:{} (waited {:.0} s): ready to migrate",
                r.to,
                r.from,
                r.pool,
                waited.as_secs_f64()
            ),
        }
    }

    /// `status` without a pool found no pool with mirroring enabled.
    pub fn no_mirrored_pools(&self, cluster: &str) {
        match self.format {
            OutputFormat::Json => self.json(serde_json::json!({
                "result": "ok",
                "status": null,
                "mirrored_pools": [],
                "cluster": cluster,
            })),
            OutputFormat::Text => println!(
                "{cluster}: no pool has mirroring enabled (pair one with rbd-relay pair --from A --to B --pool POOL)"
            ),
        }
    }

    /// `status --watch` of an image that is not (or no longer) mirror-enabled.
    pub fn not_mirrored(&self, cluster: &str, pool: &str, image: &str) {
        match self.format {
            OutputFormat::Json => self.json(serde_json::json!({
                "result": "ok",
                "status": null,
                "not_mirrored": {"cluster": cluster, "pool": pool, "image": image},
            })),
            OutputFormat::Text => self.line(
                &format!(
                    "{cluster}:{pool}/{image} is not mirror-enabled (not yet, or no longer); still watching"
                ),
                false,
            ),
        }
    }

    pub fn status(&self, s: &PoolStatus) {
        match self.format {
            OutputFormat::Json => self.json(serde_json::json!({"result": "ok", "status": s})),
            OutputFormat::Text => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(
                    out,
                    "{}:{}  mode {}  site {}",
                    s.cluster, s.pool, s.mode, s.site_name
                );
                if s.peers.is_empty() {
                    let _ = writeln!(out, "  peers: none");
                }
                for p in &s.peers {
                    let _ = writeln!(out, "  peer {} ({}, {})", p.site_name, p.direction, p.uuid);
                }
                let _ = writeln!(
                    out,
                    "  rbd-mirror daemon health: {} ({} daemon(s){})",
                    if s.daemon.health == "not_needed" {
                        "none needed: this cluster only sends, the peer's rbd-mirror pulls"
                    } else {
                        s.daemon.health.as_str()
                    },
                    s.daemon.daemons.len(),
                    s.daemon
                        .daemons
                        .iter()
                        .flat_map(|d| d.callouts.iter())
                        .map(|c| format!("; {c}"))
                        .collect::<String>()
                );
                let summary = s
                    .summary
                    .iter()
                    .map(|(k, n)| format!("{k}: {n}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let _ = writeln!(
                    out,
                    "  images: {}",
                    if summary.is_empty() {
                        "none".into()
                    } else {
                        summary
                    }
                );
                for i in &s.images {
                    let _ = writeln!(
                        out,
                        "  {}  {}{}",
                        i.name,
                        i.state,
                        progress_text(&i.progress)
                    );
                }
                let _ = out.flush();
            }
        }
    }

    pub fn list(&self, all: &[(PathBuf, RunState)]) {
        match self.format {
            OutputFormat::Json => {
                for (p, s) in all {
                    let active = run_active(p, s);
                    // a JSON string cannot hold a path that is not UTF-8 (json! would panic):
                    // such a path is shown with U+FFFD for its invalid bytes
                    self.json(serde_json::json!({
                        "id": s.plan.id, "state_file": p.to_string_lossy(), "outcome": s.outcome,
                        "next_step": s.next_step, "steps": s.plan.steps.len(),
                        "active": active,
                        "interrupted": s.outcome == "running" && !active,
                    }))
                }
            }
            OutputFormat::Text => {
                if all.is_empty() {
                    outln!("no recorded migrations");
                }
                for (p, s) in all {
                    let m = &s.plan.migration;
                    let outcome = rbd_mirror_core::state::describe_outcome(s, run_active(p, s));
                    outln!(
                        "{}  {}:{} -> {}:{}  step {}/{}  {}",
                        s.plan.id,
                        m.source.name,
                        m.image,
                        m.destination.name,
                        m.copy_target(),
                        s.next_step.min(s.plan.steps.len()),
                        s.plan.steps.len(),
                        outcome
                    );
                }
            }
        }
    }
}

/// Whether a process runs the migration recorded in state file `path` now (its lock is held).
fn run_active(path: &std::path::Path, s: &RunState) -> bool {
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    rbd_mirror_core::state::run_active(dir, &s.plan.id)
}
