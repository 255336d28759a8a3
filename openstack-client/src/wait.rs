//! Polling a cloud resource until it reaches a state, with a deadline and backoff.
//!
//! Cinder and Glance report progress only through a status field, so waits poll. The delay
//! grows from [`PollOptions::interval`] to [`PollOptions::max_interval`] (via `backon`) and the
//! wait gives up at [`PollOptions::timeout`], reporting the last state seen.

use std::future::Future;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};

/// How to poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollOptions {
    /// Give up after this long.
    pub timeout: Duration,
    /// First delay between polls.
    pub interval: Duration,
    /// Longest delay between polls.
    pub max_interval: Duration,
}

impl Default for PollOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(600),
            interval: Duration::from_millis(500),
            max_interval: Duration::from_secs(10),
        }
    }
}

/// One observation of a polled resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll<T> {
    /// The wait is over.
    Ready(T),
    /// Not yet; the text describes the state seen (for the timeout message).
    Pending(String),
}

/// Why a [`poll_until`] ended without the resource becoming ready. (Named apart from
/// `rbd_mirror_core::wait::WaitError`, the wait for rbd-mirror.)
#[derive(Debug, thiserror::Error)]
pub enum PollError<E> {
    /// An observation failed (or saw a terminal error state).
    #[error(transparent)]
    Failed(E),
    /// The deadline passed.
    #[error("gave up waiting for {what} after {waited:?}; last state: {last}")]
    TimedOut {
        /// What was waited for.
        what: String,
        /// How long.
        waited: Duration,
        /// The last state seen.
        last: String,
    },
}

enum Attempt<E> {
    Pending(String),
    Failed(E),
}

/// Calls `observe` until it returns [`Poll::Ready`], an error, or the deadline passes.
pub async fn poll_until<T, E, F, Fut>(
    what: &str,
    options: &PollOptions,
    mut observe: F,
) -> Result<T, PollError<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Poll<T>, E>>,
{
    let start = Instant::now();
    let deadline = start + options.timeout;
    let backoff = ExponentialBuilder::default()
        .with_min_delay(options.interval)
        .with_max_delay(options.max_interval.max(options.interval))
        .with_factor(1.5)
        .without_max_times();
    let attempt = || {
        let fut = observe();
        async move {
            match fut.await {
                Ok(Poll::Ready(t)) => Ok(t),
                Ok(Poll::Pending(s)) => Err(Attempt::Pending(s)),
                Err(e) => Err(Attempt::Failed(e)),
            }
        }
    };
    let result = attempt
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|e| matches!(e, Attempt::Pending(_)) && Instant::now() < deadline)
        .adjust(|_, d| d.map(|d| d.min(deadline.saturating_duration_since(Instant::now()))))
        .await;
    match result {
        Ok(t) => Ok(t),
        Err(Attempt::Failed(e)) => Err(PollError::Failed(e)),
        Err(Attempt::Pending(last)) => Err(PollError::TimedOut {
            what: what.to_owned(),
            waited: start.elapsed(),
            last,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn fast(timeout_ms: u64) -> PollOptions {
        PollOptions {
            timeout: Duration::from_millis(timeout_ms),
            interval: Duration::from_millis(5),
            max_interval: Duration::from_millis(20),
        }
    }

    #[tokio::test]
    async fn ready_after_some_polls() {
        let n = AtomicU32::new(0);
        let r: Result<u32, PollError<String>> = poll_until("x", &fast(2000), || async {
            let i = n.fetch_add(1, Ordering::SeqCst);
            Ok(if i >= 3 {
                Poll::Ready(i)
            } else {
                Poll::Pending(format!("i={i}"))
            })
        })
        .await;
        assert_eq!(r.unwrap(), 3);
    }

    #[tokio::test]
    async fn timeout_reports_last_state() {
        let r: Result<(), PollError<String>> = poll_until("volume v", &fast(60), || async {
            Ok(Poll::Pending("creating".into()))
        })
        .await;
        let e = r.unwrap_err().to_string();
        assert!(
            e.contains("volume v") && e.contains("last state: creating"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn error_stops_at_once() {
        let n = AtomicU32::new(0);
        let r: Result<(), PollError<String>> = poll_until("x", &fast(2000), || async {
            n.fetch_add(1, Ordering::SeqCst);
            Err("error_managing".to_owned())
        })
        .await;
        assert!(matches!(r, Err(PollError::Failed(_))));
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }
}
