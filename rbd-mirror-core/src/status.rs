//! What rbd-mirror says about an image (`rbd mirror image status`), parsed into typed progress
//! and health.
//!
//! rbd-mirror writes this status on a timer (about every 30 s), so it lags reality by 10-22 s
//! and says `down+unknown` for a whole initial sync. It is used here for progress and health
//! only; completion is decided from exact signals (see [`crate::wait`]).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `cls::rbd::MirrorImageStatusState` as librbd reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MirrorState {
    /// No status yet (`unknown`).
    Unknown,
    /// rbd-mirror hit an error with this image.
    Error,
    /// Initial or full sync in progress.
    Syncing,
    /// Replay is starting.
    StartingReplay,
    /// Replaying (journal) or idle/syncing between snapshots (snapshot).
    Replaying,
    /// Replay is stopping.
    StoppingReplay,
    /// Replay stopped (e.g. the image is primary on this side).
    Stopped,
}

impl MirrorState {
    /// Parse the state word of `rbd mirror image status` (`replaying`, `starting_replay`...).
    pub fn from_word(word: &str) -> Self {
        match word {
            "error" => Self::Error,
            "syncing" => Self::Syncing,
            "starting_replay" => Self::StartingReplay,
            "replaying" => Self::Replaying,
            "stopping_replay" => Self::StoppingReplay,
            "stopped" => Self::Stopped,
            _ => Self::Unknown,
        }
    }

    /// The librbd enum value (`rbd_mirror_image_status_state_t`).
    pub fn from_raw(v: u32) -> Self {
        match v {
            1 => Self::Error,
            2 => Self::Syncing,
            3 => Self::StartingReplay,
            4 => Self::Replaying,
            5 => Self::StoppingReplay,
            6 => Self::Stopped,
            _ => Self::Unknown,
        }
    }
}

/// The status one site reports for a mirrored image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteStatus {
    /// Whether an rbd-mirror daemon is reporting for the image (`up+` vs `down+`).
    pub up: bool,
    /// The replay state.
    pub state: MirrorState,
    /// Free-text description; for replaying images `replaying, {json}`.
    pub description: String,
    /// Unix time of the last update, 0 when never updated.
    pub last_update: i64,
}

impl SiteStatus {
    /// Parse the `--format json` output of `rbd mirror image status` (state `up+replaying`).
    pub fn from_cli_json(v: &Value) -> Option<Self> {
        let state = v.get("state")?.as_str()?;
        let (up, word) = state.split_once('+').unwrap_or(("down", state));
        Some(Self {
            up: up == "up",
            state: MirrorState::from_word(word),
            description: v
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            last_update: 0,
        })
    }

    /// Typed progress from state and description.
    pub fn progress(&self) -> SyncProgress {
        parse_progress(self.state, &self.description)
    }

    /// A health verdict a human can act on.
    pub fn health(&self) -> Health {
        if !self.up {
            return if self.description == "status not found" || self.state == MirrorState::Unknown {
                Health::NotReported
            } else {
                Health::DaemonDown
            };
        }
        match self.state {
            MirrorState::Error => Health::Error(self.description.clone()),
            MirrorState::Stopped => Health::Stopped,
            _ => Health::Ok,
        }
    }
}

/// Health of the image's replication as the status tells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "health", content = "reason")]
pub enum Health {
    /// A daemon reports progress.
    Ok,
    /// No status has been written yet (normal for the first seconds and during a first sync).
    NotReported,
    /// The status was written by a daemon that is no longer up.
    DaemonDown,
    /// rbd-mirror reports an error for the image.
    Error(String),
    /// Replay stopped.
    Stopped,
}

/// Replication progress as the status describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum SyncProgress {
    /// Nothing useful reported yet.
    Unknown,
    /// Initial sync (bootstrap / image copy), percent when reported.
    Bootstrapping {
        /// Percent of the image copied, when the description has it.
        percent: Option<f64>,
        /// Step text, e.g. `IMAGE_SYNC/COPY_IMAGE`.
        step: String,
    },
    /// Journal mode replay.
    JournalReplay {
        /// Entries the replica is behind the primary.
        entries_behind_primary: u64,
        /// Replay rate in bytes/s.
        bytes_per_second: f64,
        /// Whether primary and non-primary positions are equal.
        positions_equal: bool,
        /// Replay rate in journal entries/s.
        #[serde(default)]
        entries_per_second: f64,
    },
    /// Snapshot mode: copying a snapshot delta.
    SnapshotSyncing {
        /// Percent of the snapshot copied.
        percent: Option<f64>,
        /// Copy rate in bytes/s.
        bytes_per_second: f64,
        /// Average bytes per snapshot delta, as rbd-mirror reports it (`bytes_per_snapshot`).
        #[serde(default)]
        bytes_per_snapshot: Option<f64>,
    },
    /// Snapshot mode: idle between snapshots.
    SnapshotIdle {
        /// Timestamp of the newest snapshot on the primary.
        remote_snapshot_timestamp: i64,
        /// Timestamp of the newest snapshot synced to the replica.
        local_snapshot_timestamp: i64,
    },
}

impl SyncProgress {
    /// Percent complete when the status says it.
    pub fn percent(&self) -> Option<f64> {
        match self {
            SyncProgress::Bootstrapping { percent, .. }
            | SyncProgress::SnapshotSyncing { percent, .. } => *percent,
            SyncProgress::SnapshotIdle {
                remote_snapshot_timestamp,
                local_snapshot_timestamp,
            } if remote_snapshot_timestamp == local_snapshot_timestamp => Some(100.0),
            SyncProgress::JournalReplay {
                entries_behind_primary: 0,
                positions_equal: true,
                ..
            } => Some(100.0),
            _ => None,
        }
    }

    /// Rate in bytes/s when the status says it.
    pub fn bytes_per_second(&self) -> Option<f64> {
        match self {
            SyncProgress::JournalReplay {
                bytes_per_second, ..
            }
            | SyncProgress::SnapshotSyncing {
                bytes_per_second, ..
            } => Some(*bytes_per_second),
            _ => None,
        }
    }

    /// Estimated seconds until caught up, when the status allows an estimate: journal
    /// replay from the entries behind and the entry rate; a snapshot sync from the percent
    /// left of the average snapshot delta and the byte rate. rbd-mirror writes its status
    /// every ~30 s, so this is as stale as the status.
    pub fn eta_seconds(&self) -> Option<f64> {
        match self {
            SyncProgress::JournalReplay {
                entries_behind_primary,
                entries_per_second,
                ..
            } if *entries_per_second > 0.0 => {
                Some(*entries_behind_primary as f64 / entries_per_second)
            }
            SyncProgress::SnapshotSyncing {
                percent: Some(p),
                bytes_per_second,
                bytes_per_snapshot: Some(total),
            } if *bytes_per_second > 0.0 => {
                Some(total * (100.0 - p.clamp(0.0, 100.0)) / 100.0 / bytes_per_second)
            }
            _ => None,
        }
    }
}

/// Parse a state and description into [`SyncProgress`].
pub fn parse_progress(state: MirrorState, description: &str) -> SyncProgress {
    if let Some(json) = description.strip_prefix("replaying, ") {
        if let Ok(v) = serde_json::from_str::<Value>(json) {
            return parse_replay_json(&v);
        }
    }
    let percent = last_percent(description);
    match state {
        MirrorState::Syncing | MirrorState::StartingReplay => SyncProgress::Bootstrapping {
            percent,
            step: description
                .strip_prefix("bootstrapping, ")
                .unwrap_or(description)
                .to_string(),
        },
        _ if description.starts_with("bootstrapping") => SyncProgress::Bootstrapping {
            percent,
            step: description.to_string(),
        },
        _ => SyncProgress::Unknown,
    }
}

fn parse_replay_json(v: &Value) -> SyncProgress {
    let f = |k: &str| v.get(k).and_then(Value::as_f64);
    let i = |k: &str| v.get(k).and_then(Value::as_i64);
    if let Some(state) = v.get("replay_state").and_then(Value::as_str) {
        return if state == "syncing" {
            SyncProgress::SnapshotSyncing {
                percent: f("syncing_percent"),
                bytes_per_second: f("bytes_per_second").unwrap_or(0.0),
                bytes_per_snapshot: f("bytes_per_snapshot").filter(|b| *b > 0.0),
            }
        } else {
            SyncProgress::SnapshotIdle {
                remote_snapshot_timestamp: i("remote_snapshot_timestamp").unwrap_or(0),
                local_snapshot_timestamp: i("local_snapshot_timestamp").unwrap_or(0),
            }
        };
    }
    SyncProgress::JournalReplay {
        entries_behind_primary: v
            .get("entries_behind_primary")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        bytes_per_second: f("bytes_per_second").unwrap_or(0.0),
        positions_equal: v.get("primary_position").is_some()
            && v.get("primary_position") == v.get("non_primary_position"),
        entries_per_second: f("entries_per_second").unwrap_or(0.0),
    }
}

/// The last `NN%` in a text, e.g. `IMAGE_SYNC/COPY_IMAGE 45%` -> 45.
fn last_percent(text: &str) -> Option<f64> {
    let end = text.rfind('%')?;
    // the digits start after the last other character, which may be several bytes long
    // (rbd-mirror's description can hold any text, e.g. an error message in another language)
    let start = text[..end]
        .char_indices()
        .rfind(|(_, c)| !(c.is_ascii_digit() || *c == '.'))
        .map_or(0, |(i, c)| i + c.len_utf8());
    text[start..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(name: &str) -> Vec<Value> {
        let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .map(|v| v.get("sample").or(v.get("status_agrees")).unwrap().clone())
            .collect()
    }

    #[test]
    fn recorded_journal_initial_sync() {
        let s = samples("status-journal-initial.jsonl");
        assert!(s[0].is_string(), "first sample is the rbd error text");
        let down = SiteStatus::from_cli_json(&s[1]).unwrap();
        assert!(!down.up);
        assert_eq!(down.health(), Health::NotReported);
        assert_eq!(down.progress(), SyncProgress::Unknown);
        let up = SiteStatus::from_cli_json(&s[3]).unwrap();
        assert!(up.up);
        assert_eq!(up.state, MirrorState::Replaying);
        assert_eq!(up.health(), Health::Ok);
        match up.progress() {
            SyncProgress::JournalReplay {
                entries_behind_primary,
                positions_equal,
                ..
            } => {
                assert_eq!(entries_behind_primary, 0);
                assert!(positions_equal);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn recorded_journal_delta_reports_rate() {
        let s = samples("status-journal-delta.jsonl");
        let last = SiteStatus::from_cli_json(s.last().unwrap()).unwrap();
        let p = last.progress();
        assert_eq!(p.percent(), Some(100.0));
        assert!(p.bytes_per_second().unwrap() > 1_000_000.0);
    }

    #[test]
    fn recorded_snapshot_samples() {
        for file in [
            "status-snapshot-initial.jsonl",
            "status-snapshot-delta.jsonl",
        ] {
            let s = samples(file);
            let last = SiteStatus::from_cli_json(s.last().unwrap()).unwrap();
            match last.progress() {
                SyncProgress::SnapshotIdle {
                    remote_snapshot_timestamp,
                    local_snapshot_timestamp,
                } => assert_eq!(remote_snapshot_timestamp, local_snapshot_timestamp),
                other => panic!("{file}: unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn pool_status_images_parse() {
        let path = format!(
            "{}/tests/data/pool-status-site-b.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let images = v["images"].as_array().unwrap();
        let kinds: Vec<_> = images
            .iter()
            .map(|i| SiteStatus::from_cli_json(i).unwrap().progress())
            .collect();
        assert!(matches!(kinds[0], SyncProgress::JournalReplay { .. }));
        assert!(matches!(kinds[1], SyncProgress::SnapshotIdle { .. }));
    }

    #[test]
    fn bootstrap_and_snapshot_sync_descriptions() {
        let p = parse_progress(
            MirrorState::Syncing,
            "bootstrapping, IMAGE_SYNC/COPY_IMAGE 45%",
        );
        assert_eq!(
            p,
            SyncProgress::Bootstrapping {
                percent: Some(45.0),
                step: "IMAGE_SYNC/COPY_IMAGE 45%".into()
            }
        );
        let p = parse_progress(
            MirrorState::Replaying,
            r#"replaying, {"bytes_per_second":1048576.0,"replay_state":"syncing","syncing_percent":12,"syncing_snapshot_timestamp":1795355621}"#,
        );
        assert_eq!(p.percent(), Some(12.0));
        assert_eq!(p.bytes_per_second(), Some(1048576.0));
        let err = SiteStatus {
            up: true,
            state: MirrorState::Error,
            description: "split-brain detected".into(),
            last_update: 0,
        };
        assert_eq!(err.health(), Health::Error("split-brain detected".into()));
        let gone = SiteStatus {
            up: false,
            state: MirrorState::Replaying,
            description: "replaying, {}".into(),
            last_update: 0,
        };
        assert_eq!(gone.health(), Health::DaemonDown);
    }

    #[test]
    fn a_percentage_after_non_ascii_text_is_read_without_panicking() {
        assert_eq!(last_percent("Kopie läuft é45%"), Some(45.0));
        assert_eq!(
            last_percent("bootstrapping, IMAGE_SYNC/COPY_IMAGE 😀12.5%"),
            Some(12.5)
        );
        assert_eq!(last_percent("über%"), None);
        assert_eq!(last_percent("ü"), None);
        let p = parse_progress(
            MirrorState::Syncing,
            "bootstrapping, IMAGE_SYNC/COPY_IMAGE 進捗70%",
        );
        assert!(
            matches!(p, SyncProgress::Bootstrapping { percent: Some(x), .. } if x == 70.0),
            "{p:?}"
        );
    }

    #[test]
    fn eta_from_the_status_rates() {
        let j = parse_progress(
            MirrorState::Replaying,
            r#"replaying, {"bytes_per_second":1000.0,"entries_behind_primary":500,"entries_per_second":250.0}"#,
        );
        assert_eq!(j.eta_seconds(), Some(2.0));
        let s = parse_progress(
            MirrorState::Replaying,
            r#"replaying, {"bytes_per_second":1048576.0,"bytes_per_snapshot":10485760.0,"replay_state":"syncing","syncing_percent":40}"#,
        );
        assert_eq!(s.eta_seconds(), Some(6.0));
        let idle = parse_progress(
            MirrorState::Replaying,
            r#"replaying, {"bytes_per_second":0.0,"entries_behind_primary":3,"entries_per_second":0.0}"#,
        );
        assert_eq!(idle.eta_seconds(), None);
    }
}
