//! Progress events a running migration emits: the CLI turns them into a progress line or
//! JSON lines, embedding tools into whatever they like.

use serde::{Deserialize, Serialize};

/// One thing that happened during a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum Event {
    /// A step started.
    StepStarted {
        /// Step index in the plan.
        index: usize,
        /// Step kind, e.g. `wait_for_replica`.
        step: String,
        /// What it does.
        description: String,
    },
    /// A step found its effect already in place (a resumed run) and did nothing.
    StepSkipped {
        /// Step index.
        index: usize,
        /// Step kind.
        step: String,
        /// Why nothing had to be done.
        reason: String,
    },
    /// Progress of a long step.
    Progress(ProgressInfo),
    /// A step finished.
    StepDone {
        /// Step index.
        index: usize,
        /// Step kind.
        step: String,
        /// Seconds it took.
        seconds: f64,
    },
    /// Something the operator should know.
    Warning {
        /// The warning.
        message: String,
    },
}

/// Progress of a long step: the replica sync, the copy, the verification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressInfo {
    /// Phase: `sync`, `copy`, `verify`.
    pub phase: String,
    /// Percent done, when known.
    pub percent: Option<f64>,
    /// Bytes per second, when known.
    pub bytes_per_second: Option<f64>,
    /// Estimated seconds left, when known.
    pub eta_seconds: Option<f64>,
    /// Free text (e.g. what rbd-mirror reports).
    pub detail: String,
}

impl ProgressInfo {
    /// A phase under way with no measure of how far it is: what it waits for.
    pub fn waiting(phase: &str, detail: impl Into<String>) -> Self {
        Self {
            phase: phase.into(),
            percent: None,
            bytes_per_second: None,
            eta_seconds: None,
            detail: detail.into(),
        }
    }

    /// A phase that is done: 100 %, no rate or ETA, and what it ended with.
    pub fn done(phase: &str, detail: impl Into<String>) -> Self {
        Self {
            phase: phase.into(),
            percent: Some(100.0),
            bytes_per_second: None,
            eta_seconds: None,
            detail: detail.into(),
        }
    }
}

/// Where events go.
pub trait EventSink: Send + Sync {
    /// Receive one event.
    fn emit(&self, event: Event);
}

impl<F: Fn(Event) + Send + Sync> EventSink for F {
    fn emit(&self, event: Event) {
        self(event)
    }
}

/// A sink that drops everything.
pub struct NullSink;

impl EventSink for NullSink {
    fn emit(&self, _event: Event) {}
}

/// Rate and ETA from two samples of a byte counter.
#[derive(Debug, Clone, Default)]
pub struct RateMeter {
    first: Option<(std::time::Instant, u64)>,
}

impl RateMeter {
    /// Feed a sample; returns (bytes/s, eta seconds) once two samples exist.
    pub fn sample(&mut self, done: u64, total: u64) -> (Option<f64>, Option<f64>) {
        let now = std::time::Instant::now();
        match self.first {
            None => {
                self.first = Some((now, done));
                (None, None)
            }
            Some((t0, d0)) => {
                let secs = now.duration_since(t0).as_secs_f64();
                if secs < 0.2 || done <= d0 {
                    return (None, None);
                }
                let rate = (done - d0) as f64 / secs;
                let eta = if rate > 0.0 {
                    Some(total.saturating_sub(done) as f64 / rate)
                } else {
                    None
                };
                (Some(rate), eta)
            }
        }
    }
}
