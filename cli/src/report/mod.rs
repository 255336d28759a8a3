//! Turning library events and results into output: progress bars (terminal) or plain lines
//! (pipe) on stderr for people, JSON lines on stdout for machines. Events of a batch carry
//! their migration: the image as a line prefix or bar label, the id in JSON.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};

use rbd_mirror_core::event::{Event, EventSink};
use rbd_mirror_core::status::SyncProgress;

use crate::args::OutputFormat;
use crate::progress::Bars;

mod recorded;
mod results;

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
