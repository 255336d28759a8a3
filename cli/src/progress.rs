//! Progress bars on a terminal (indicatif): one bar per active migration, plus a total bar
//! for a batch. Lines printed while bars are shown go above them (`println`), so text and
//! bars never tear each other apart. Used only when stderr is a terminal and the output is
//! text; otherwise the reporter prints plain lines.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Bars {
    mp: MultiProgress,
    bars: Mutex<BTreeMap<String, ProgressBar>>,
    /// Per migration: the current step's message, and a side note (the copy running
    /// during the wait).
    messages: Mutex<BTreeMap<String, (String, String)>>,
    total: Mutex<Option<ProgressBar>>,
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Bars {
    pub fn new() -> Self {
        Self {
            mp: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: Mutex::new(BTreeMap::new()),
            messages: Mutex::new(BTreeMap::new()),
            total: Mutex::new(None),
        }
    }

    /// The bar of migration `key` (made on first use, above the total bar).
    fn bar(&self, key: &str) -> ProgressBar {
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = bars.get(key) {
            return b.clone();
        }
        let b = ProgressBar::new(100).with_style(style(
            "{prefix:.bold} [{bar:30.cyan/blue}] {pos:>3}% {wide_msg}",
        ));
        b.set_prefix(key.to_string());
        let total = self.total.lock().unwrap_or_else(|p| p.into_inner());
        let b = match total.as_ref() {
            Some(t) => self.mp.insert_before(t, b),
            None => self.mp.add(b),
        };
        b.enable_steady_tick(Duration::from_millis(250));
        bars.insert(key.to_string(), b.clone());
        b
    }

    /// A new step of migration `key` started.
    pub fn step(&self, key: &str, text: &str) {
        let b = self.bar(key);
        b.set_position(0);
        self.message(key, &b, Some(text), Some(""));
    }

    /// Progress of migration `key`'s current step.
    pub fn progress(&self, key: &str, percent: Option<f64>, text: &str) {
        let b = self.bar(key);
        if let Some(p) = percent {
            b.set_position(p.clamp(0.0, 100.0).round() as u64);
        }
        self.message(key, &b, Some(text), None);
    }

    /// Progress of work running beside migration `key`'s current step (the copy that
    /// trails the sync): shown after the step's message, the bar stays the step's.
    pub fn side(&self, key: &str, text: &str) {
        let b = self.bar(key);
        self.message(key, &b, None, Some(text));
    }

    fn message(&self, key: &str, bar: &ProgressBar, main: Option<&str>, side: Option<&str>) {
        let mut all = self.messages.lock().unwrap_or_else(|p| p.into_inner());
        let (m, s) = all.entry(key.to_string()).or_default();
        if let Some(text) = main {
            *m = text.to_string();
        }
        if let Some(text) = side {
            *s = text.to_string();
        }
        bar.set_message(if s.is_empty() {
            m.clone()
        } else {
            format!("{m}  | {s}")
        });
    }

    /// A line above the bars.
    pub fn println(&self, text: &str) {
        let _ = self.mp.println(text);
    }

    /// A batch of `n` migrations starts: show the total bar.
    pub fn start_total(&self, n: u64) {
        let t = self.mp.add(ProgressBar::new(n).with_style(style(
            "{prefix:.bold} [{bar:30.green}] {pos}/{len} done, {elapsed} {wide_msg}",
        )));
        t.set_prefix("total");
        *self.total.lock().unwrap_or_else(|p| p.into_inner()) = Some(t);
    }

    /// Migration `key` ended: its bar goes, its result line stays, the total moves on.
    pub fn done(&self, key: &str, line: &str, failed: bool) {
        let bar = self
            .bars
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        if let Some(b) = bar {
            b.finish_and_clear();
            self.mp.remove(&b);
        }
        self.messages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        self.println(line);
        if let Some(t) = self
            .total
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            t.inc(1);
            if failed {
                t.set_message("(some failed)");
            }
        }
    }

    /// Remove every bar (before the final result is printed).
    pub fn finish(&self) {
        for (_, b) in std::mem::take(&mut *self.bars.lock().unwrap_or_else(|p| p.into_inner())) {
            b.finish_and_clear();
        }
        if let Some(t) = self.total.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.finish_and_clear();
        }
        let _ = self.mp.clear();
    }
}
