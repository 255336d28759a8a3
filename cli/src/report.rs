//! Turning library events and results into output: progress bars (terminal) or plain lines
//! (pipe) on stderr for people, JSON lines on stdout for machines. Events of a batch carry
//! their migration: the image as a line prefix or bar label, the id in JSON.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rbd_mirror_ceph::pairing::{PairReport, PoolStatus};
use rbd_mirror_core::cloud::{AdoptedVolume, CloudImage};
use rbd_mirror_core::event::{Event, EventSink};
use rbd_mirror_core::exec::Summary;
use rbd_mirror_core::plan::Plan;
use rbd_mirror_core::state::RunState;
use rbd_mirror_core::status::SyncProgress;

use crate::args::OutputFormat;
use crate::progress::Bars;

pub struct Reporter {
    format: OutputFormat,
    quiet: bool,
    tty: bool,
    line_open: Mutex<bool>,
    bars: Option<Bars>,
    /// The step each migration is in (by bar key), to tell progress of the step itself
    /// from progress of work running beside it.
    steps: Mutex<std::collections::HashMap<String, String>>,
    /// On a pipe: per migration and phase, when a progress line was last printed and what
    /// it said (see [`plain_progress_due`]).
    plain_progress: Mutex<std::collections::HashMap<String, (std::time::Instant, String)>>,
}

/// How often a pipe gets a progress line while nothing but the numbers changes.
const PLAIN_PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether a progress line is due on a pipe: when its text (without the numbers) changed, or
/// [`PLAIN_PROGRESS_EVERY`] after the last one, so a long wait is never silent and a log is
/// not flooded. Records the line as printed when due.
fn plain_progress_due(
    last: &mut std::collections::HashMap<String, (std::time::Instant, String)>,
    key: &str,
    text: &str,
    now: std::time::Instant,
) -> bool {
    let words: String = text.chars().filter(|c| !c.is_ascii_digit()).collect();
    let due = match last.get(key) {
        None => true,
        Some((at, said)) => *said != words || now.duration_since(*at) >= PLAIN_PROGRESS_EVERY,
    };
    if due {
        last.insert(key.to_string(), (now, words));
    }
    due
}

/// Which migration of a batch an event belongs to.
pub struct Tag {
    /// The migration id (JSON `migration`).
    pub id: String,
    /// The source image, for people (line prefix, bar label).
    pub label: String,
}

/// The event sink of one migration of a batch.
pub struct TaggedSink {
    pub tag: Tag,
    pub reporter: Arc<Reporter>,
}

impl EventSink for TaggedSink {
    fn emit(&self, event: Event) {
        self.reporter.emit_for(Some(&self.tag), event);
    }
}

fn progress_text(p: &SyncProgress) -> String {
    let eta = p
        .eta_seconds()
        .map(|s| format!(", ETA {}", human_seconds(s)))
        .unwrap_or_default();
    match p {
        SyncProgress::Unknown => String::new(),
        SyncProgress::Bootstrapping { percent, step } => format!(
            "  bootstrapping {step}{}",
            percent.map(|v| format!(" {v:.0}%")).unwrap_or_default()
        ),
        SyncProgress::JournalReplay {
            entries_behind_primary,
            bytes_per_second,
            ..
        } => format!(
            "  {entries_behind_primary} entries behind, {}/s{eta}",
            human_bytes(*bytes_per_second)
        ),
        SyncProgress::SnapshotSyncing {
            percent,
            bytes_per_second,
            ..
        } => format!(
            "  syncing snapshot{}, {}/s{eta}",
            percent.map(|v| format!(" {v:.0}%")).unwrap_or_default(),
            human_bytes(*bytes_per_second)
        ),
        SyncProgress::SnapshotIdle {
            remote_snapshot_timestamp,
            local_snapshot_timestamp,
        } => {
            let lag = remote_snapshot_timestamp - local_snapshot_timestamp;
            if lag <= 0 {
                "  in sync with the newest snapshot".into()
            } else {
                format!("  {lag} s behind the newest snapshot")
            }
        }
    }
}

/// `42s`, `3m05s`, `2h07m`.
fn human_seconds(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

fn human_bytes(b: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", units[i])
}

impl Reporter {
    pub fn new(format: OutputFormat, quiet: bool) -> Self {
        let tty = std::io::stderr().is_terminal();
        Self {
            format,
            quiet,
            tty,
            line_open: Mutex::new(false),
            steps: Mutex::new(std::collections::HashMap::new()),
            plain_progress: Mutex::new(std::collections::HashMap::new()),
            bars: (tty && format == OutputFormat::Text && !quiet).then(Bars::new),
        }
    }

    /// No progress bars (plain lines instead) unless `bars`: log output (`-v`, `RUST_LOG`)
    /// writes straight to stderr and would tear the bars apart.
    pub fn with_bars(mut self, bars: bool) -> Self {
        if !bars {
            self.bars = None;
        }
        self
    }

    fn json(&self, v: serde_json::Value) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{v}");
        let _ = out.flush();
    }

    fn line(&self, text: &str, transient: bool) {
        if self.quiet {
            return;
        }
        if let Some(b) = &self.bars {
            if !transient {
                b.println(text);
            }
            return;
        }
        let mut err = std::io::stderr().lock();
        let mut open = self.line_open.lock().unwrap_or_else(|p| p.into_inner());
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{text}");
            if !transient {
                let _ = writeln!(err);
            }
            *open = transient;
        } else {
            let _ = writeln!(err, "{text}");
        }
        let _ = err.flush();
    }

    /// End a transient progress line (and remove the bars).
    pub fn finish(&self) {
        if let Some(b) = &self.bars {
            b.finish();
        }
        let mut open = self.line_open.lock().unwrap_or_else(|p| p.into_inner());
        if *open {
            let _ = writeln!(std::io::stderr());
            *open = false;
        }
    }

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

impl EventSink for Reporter {
    fn emit(&self, event: Event) {
        self.emit_for(None, event);
    }
}

impl Reporter {
    /// One event, of the single migration (`tag` is `None`) or of one migration of a batch.
    pub fn emit_for(&self, tag: Option<&Tag>, event: Event) {
        if self.format == OutputFormat::Json {
            if let Ok(mut v) = serde_json::to_value(&event) {
                if let (Some(t), Some(o)) = (tag, v.as_object_mut()) {
                    o.insert("migration".into(), t.id.clone().into());
                }
                self.json(v);
            }
            return;
        }
        let key = tag.map_or("", |t| t.label.as_str());
        let prefix = tag.map(|t| format!("[{}] ", t.label)).unwrap_or_default();
        match event {
            Event::StepStarted {
                index,
                step,
                description,
            } => {
                self.steps
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key.to_string(), step.clone());
                let text = format!("[{}] {description}", index + 1);
                if let Some(b) = &self.bars {
                    b.step(key, &text);
                }
                self.line(&format!("{prefix}{text}"), false)
            }
            Event::StepSkipped { reason, .. } => {
                self.line(&format!("{prefix}    already done: {reason}"), false)
            }
            Event::StepDone { .. } => {}
            Event::Warning { message } => self.line(&format!("{prefix}warning: {message}"), false),
            Event::Progress(p) => {
                let mut s = p.phase.to_string();
                if let Some(r) = p.bytes_per_second {
                    s.push_str(&format!("  {}/s", human_bytes(r)));
                }
                if let Some(eta) = p.eta_seconds {
                    s.push_str(&format!("  ETA {eta:.0}s"));
                }
                if !p.detail.is_empty() {
                    s.push_str(&format!("  {}", p.detail));
                }
                let beside = self
                    .steps
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(key)
                    .is_some_and(|step| step == "wait_for_replica" && p.phase == "copy");
                if let (Some(b), true) = (&self.bars, beside) {
                    let pc = p.percent.map(|pc| format!(" {pc:.0}%")).unwrap_or_default();
                    b.side(key, &format!("copy{pc}{}", &s[p.phase.len()..]));
                    return;
                }
                if let Some(b) = &self.bars {
                    b.progress(key, p.percent, &s);
                    if p.percent == Some(100.0) && !self.quiet {
                        b.println(&format!("{prefix}    {s}"));
                    }
                    return;
                }
                let pc = p
                    .percent
                    .map(|pc| format!(" {pc:5.1}%"))
                    .unwrap_or_default();
                let line = format!("{prefix}    {}{pc}{}", p.phase, &s[p.phase.len()..]);
                // on a terminal the line is rewritten in place; on a pipe every line stays,
                // so only the final 100% one, a changed text, or one every 10 s
                if self.tty {
                    self.line(&line, p.percent != Some(100.0));
                } else if p.percent == Some(100.0)
                    || plain_progress_due(
                        &mut self
                            .plain_progress
                            .lock()
                            .unwrap_or_else(|p| p.into_inner()),
                        &format!("{key}/{}", p.phase),
                        &p.detail,
                        std::time::Instant::now(),
                    )
                {
                    self.line(&line, false);
                }
            }
        }
    }
}

/// Results of the operations on recorded migrations and of batches.
impl Reporter {
    /// `abort --dry-run`: the undo plan, printed as a migration's plan is.
    pub fn undo_plan(&self, p: &rbd_mirror_core::abort::UndoPlan) {
        match self.format {
            OutputFormat::Json => {
                self.json(serde_json::json!({"result": "undo_plan", "undo_plan": p}))
            }
            OutputFormat::Text => {
                out!("{}", p.render());
                if p.next_step > 0 {
                    outln!(
                        "(recorded abort: stopped before undo step {}; run without --dry-run to continue it)",
                        p.next_step + 1
                    );
                } else {
                    outln!("(dry run: nothing was changed)");
                }
            }
        }
    }

    pub fn aborted(&self, r: &rbd_mirror_core::abort::AbortReport) {
        match self.format {
            OutputFormat::Json => self.json(serde_json::json!({"result": "ok", "aborted": r})),
            OutputFormat::Text => {
                if r.undone.is_empty() {
                    outln!("migration {} is aborted; nothing was left to undo", r.id);
                } else {
                    outln!("aborted migration {}:", r.id);
                    for u in &r.undone {
                        outln!("  - {u}");
                    }
                }
                for n in &r.notes {
                    outln!("note: {n}");
                }
                outln!(
                    "{} is as it was before the migration (its data was never touched); a new `rbd-relay migrate` starts afresh",
                    r.source
                );
            }
        }
    }

    pub fn cleaned(&self, r: &rbd_mirror_core::cleanup::CleanupReport) {
        match self.format {
            OutputFormat::Json => self.json(serde_json::json!({"result": "ok", "cleanup": r})),
            OutputFormat::Text => {
                if r.already_done {
                    outln!(
                        "the source side of migration {} was already cleaned up; nothing to do",
                        r.id
                    );
                } else {
                    outln!(
                        "cleaned up the source side of migration {} ({}); the verified copy {} is kept",
                        r.id,
                        r.ran.join(", "),
                        r.copy
                    );
                }
                if !r.remaining.is_empty() {
                    outln!(
                        "still to do: {} (rbd-relay resume {}, or by the role that owns them)",
                        r.remaining.join(", "),
                        r.id
                    );
                }
                if r.forgotten {
                    outln!("the state record of {} was removed", r.id);
                }
            }
        }
    }

    /// A batch of `n` images starts.
    pub fn batch_start(&self, n: usize) {
        if let Some(b) = &self.bars {
            b.start_total(n as u64);
        }
    }

    /// One image of a batch ended.
    pub fn batch_item(&self, tag: &Tag, item: &rbd_mirror_core::batch::BatchItem) {
        let line = match (&item.summary, &item.error) {
            (Some(s), _) => format!(
                "[{}] ok: {} verified (sha256 {}), {:.1}s",
                tag.label,
                s.copy,
                &s.sha256[..s.sha256.len().min(12)],
                item.seconds
            ),
            (_, Some(e)) => format!("[{}] FAILED: {}", tag.label, one_line(e)),
            _ => format!("[{}] ended", tag.label),
        };
        match self.format {
            OutputFormat::Json => self.json(serde_json::json!({
                "result": if item.ok() { "ok" } else { "error" },
                "migration": item.id,
                "source": item.source,
                "seconds": item.seconds,
                "summary": item.summary,
                "error": item.error,
            })),
            OutputFormat::Text => match &self.bars {
                Some(b) => b.done(&tag.label, &line, !item.ok()),
                None => {
                    if !self.quiet || !item.ok() {
                        eprintln!("{line}");
                    }
                }
            },
        }
    }

    /// The summary of a batch: a table (text) or the overall result object (JSON).
    pub fn batch_summary(&self, items: &[rbd_mirror_core::batch::BatchItem]) {
        self.finish();
        let failed = items.iter().filter(|i| !i.ok()).count();
        match self.format {
            OutputFormat::Json => self.json(serde_json::json!({
                "result": if failed == 0 { "ok" } else { "some_failed" },
                "batch": {"ok": items.len() - failed, "failed": failed, "items": items},
            })),
            OutputFormat::Text => {
                let rows: Vec<[String; 5]> = items
                    .iter()
                    .map(|i| {
                        [
                            i.source.clone(),
                            if i.ok() { "ok" } else { "FAILED" }.to_string(),
                            i.summary
                                .as_ref()
                                .map_or("-".to_string(), |s| s.copy.clone()),
                            format!("{:.1}", i.seconds),
                            i.error.as_deref().map_or(String::new(), one_line),
                        ]
                    })
                    .collect();
                out!(
                    "{}",
                    table(["IMAGE", "RESULT", "COPY", "SECONDS", "ERROR"], &rows)
                );
                outln!(
                    "{} of {} migrated and verified{}",
                    items.len() - failed,
                    items.len(),
                    if failed > 0 {
                        format!(
                            "; {failed} failed (fix the cause and re-run the same command: finished ones are skipped, failed ones resume)"
                        )
                    } else {
                        String::new()
                    }
                );
            }
        }
    }
}

/// An error on one line (preflight problems are one per line).
fn one_line(e: &str) -> String {
    e.lines().map(str::trim).collect::<Vec<_>>().join(" ")
}

/// A plain text table, columns padded to the widest cell (the last one is not padded).
fn table<const N: usize>(head: [&str; N], rows: &[[String; N]]) -> String {
    let mut width = head.map(str::len);
    for r in rows {
        for (w, c) in width.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut push = |cells: Vec<&str>| {
        let mut line = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == N {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    };
    push(head.to_vec());
    for r in rows {
        push(r.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pads_columns() {
        let t = table(
            ["A", "RESULT"],
            &[
                ["long-name".into(), "ok".into()],
                ["x".into(), "FAILED".into()],
            ],
        );
        assert_eq!(t, "A          RESULT\nlong-name  ok\nx          FAILED\n");
    }

    #[test]
    fn status_progress_shows_rate_and_eta() {
        let p = SyncProgress::JournalReplay {
            entries_behind_primary: 600,
            bytes_per_second: 2048.0,
            positions_equal: false,
            entries_per_second: 4.0,
        };
        assert_eq!(
            progress_text(&p),
            "  600 entries behind, 2.0 KiB/s, ETA 2m30s"
        );
        assert_eq!(human_seconds(7322.0), "2h02m");
        assert_eq!(human_seconds(0.4), "0s");
    }
}

#[cfg(test)]
mod plain_progress_tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_pipe_gets_a_line_when_the_text_changes_or_every_10_s() {
        let mut last = std::collections::HashMap::new();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let waiting = "rbd-mirror has not created the replica yet";
        assert!(plain_progress_due(&mut last, "m/sync", waiting, at(0)));
        assert!(!plain_progress_due(&mut last, "m/sync", waiting, at(3)));
        // new words: at once; then only the numbers change: not yet
        assert!(plain_progress_due(
            &mut last,
            "m/sync",
            "synced 10 of 64 objects",
            at(4)
        ));
        assert!(!plain_progress_due(
            &mut last,
            "m/sync",
            "synced 11 of 64 objects",
            at(5)
        ));
        // nothing new for 10 s: a line anyway, so a long wait is never silent
        assert!(!plain_progress_due(
            &mut last,
            "m/sync",
            "synced 12 of 64 objects",
            at(13)
        ));
        assert!(plain_progress_due(
            &mut last,
            "m/sync",
            "synced 12 of 64 objects",
            at(14)
        ));
        // new words: at once
        assert!(plain_progress_due(
            &mut last,
            "m/sync",
            "replica complete",
            at(16)
        ));
        // another migration or phase has its own clock
        assert!(plain_progress_due(&mut last, "n/sync", waiting, at(16)));
    }
}
