//! What `abort`, `cleanup` and batches print: the results of the commands on recorded
//! migrations, text and JSON side by side. Kept apart from the event stream
//! (`report/mod.rs`) like `results.rs`.

use super::{one_line, table, Reporter, Tag};
use crate::args::OutputFormat;

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
