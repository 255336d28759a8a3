//! RBD image features, their dependency rules, and the smallest change that makes an image
//! mirrorable in a given mode, plus the change that puts the original set back.
//!
//! The rules (librbd's own): object-map needs exclusive-lock, fast-diff needs object-map,
//! journaling needs exclusive-lock; deep-flatten can be disabled but never enabled again;
//! layering, striping, data-pool and the internal flags cannot be changed at all.

use std::fmt;

use bitflags::bitflags;
use serde::{Deserialize, Serialize};

bitflags! {
    /// The `RBD_FEATURE_*` bits of librbd.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
    pub struct Features: u64 {
        /// `RBD_FEATURE_LAYERING`
        const LAYERING = 1 << 0;
        /// `RBD_FEATURE_STRIPINGV2`
        const STRIPINGV2 = 1 << 1;
        /// `RBD_FEATURE_EXCLUSIVE_LOCK`
        const EXCLUSIVE_LOCK = 1 << 2;
        /// `RBD_FEATURE_OBJECT_MAP`
        const OBJECT_MAP = 1 << 3;
        /// `RBD_FEATURE_FAST_DIFF`
        const FAST_DIFF = 1 << 4;
        /// `RBD_FEATURE_DEEP_FLATTEN`
        const DEEP_FLATTEN = 1 << 5;
        /// `RBD_FEATURE_JOURNALING`
        const JOURNALING = 1 << 6;
        /// `RBD_FEATURE_DATA_POOL`
        const DATA_POOL = 1 << 7;
        /// `RBD_FEATURE_OPERATIONS`
        const OPERATIONS = 1 << 8;
        /// `RBD_FEATURE_MIGRATING`
        const MIGRATING = 1 << 9;
        /// `RBD_FEATURE_NON_PRIMARY`
        const NON_PRIMARY = 1 << 10;
    }
}

/// Names as `rbd info` prints them, in bit order.
const NAMES: &[(Features, &str)] = &[
    (Features::LAYERING, "layering"),
    (Features::STRIPINGV2, "striping"),
    (Features::EXCLUSIVE_LOCK, "exclusive-lock"),
    (Features::OBJECT_MAP, "object-map"),
    (Features::FAST_DIFF, "fast-diff"),
    (Features::DEEP_FLATTEN, "deep-flatten"),
    (Features::JOURNALING, "journaling"),
    (Features::DATA_POOL, "data-pool"),
    (Features::OPERATIONS, "operations"),
    (Features::MIGRATING, "migrating"),
    (Features::NON_PRIMARY, "non-primary"),
];

impl Features {
    /// Features that `rbd feature enable` accepts.
    pub const ENABLEABLE: Features = Features::EXCLUSIVE_LOCK
        .union(Features::OBJECT_MAP)
        .union(Features::FAST_DIFF)
        .union(Features::JOURNALING);
    /// Features that `rbd feature disable` accepts.
    pub const DISABLEABLE: Features = Features::ENABLEABLE.union(Features::DEEP_FLATTEN);

    /// The `rbd` CLI names of the set bits.
    pub fn names(self) -> Vec<&'static str> {
        NAMES
            .iter()
            .filter(|(f, _)| self.contains(*f))
            .map(|(_, n)| *n)
            .collect()
    }

    /// Parse one `rbd` CLI feature name.
    pub fn from_cli_name(name: &str) -> Option<Features> {
        NAMES.iter().find(|(_, n)| *n == name).map(|(f, _)| *f)
    }

    /// Each single feature of the set, in the order they must be enabled (dependencies first).
    pub fn enable_order(self) -> Vec<Features> {
        [
            Features::EXCLUSIVE_LOCK,
            Features::OBJECT_MAP,
            Features::FAST_DIFF,
            Features::JOURNALING,
        ]
        .into_iter()
        .filter(|f| self.contains(*f))
        .collect()
    }

    /// Each single feature of the set, in the order they must be disabled (dependents first).
    pub fn disable_order(self) -> Vec<Features> {
        [
            Features::JOURNALING,
            Features::FAST_DIFF,
            Features::OBJECT_MAP,
            Features::DEEP_FLATTEN,
            Features::EXCLUSIVE_LOCK,
        ]
        .into_iter()
        .filter(|f| self.contains(*f))
        .collect()
    }

    /// Close the set under the dependency rules: add what the set's features need.
    pub fn with_dependencies(self) -> Features {
        let mut f = self;
        if f.contains(Features::FAST_DIFF) {
            f |= Features::OBJECT_MAP;
        }
        if f.intersects(Features::OBJECT_MAP | Features::JOURNALING) {
            f |= Features::EXCLUSIVE_LOCK;
        }
        f
    }

    /// Remove from the set what can no longer stand when `removed` goes: the dependents.
    pub fn without(self, removed: Features) -> Features {
        let mut f = self - removed;
        if !f.contains(Features::EXCLUSIVE_LOCK) {
            f -= Features::OBJECT_MAP | Features::FAST_DIFF | Features::JOURNALING;
        }
        if !f.contains(Features::OBJECT_MAP) {
            f -= Features::FAST_DIFF;
        }
        f
    }
}

impl fmt::Display for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = self.names();
        if names.is_empty() {
            f.write_str("(none)")
        } else {
            f.write_str(&names.join(", "))
        }
    }
}

/// rbd-mirror's two ways of replicating an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MirrorImageMode {
    /// Every write goes to a journal that the peer replays (needs exclusive-lock + journaling).
    Journal,
    /// The peer copies the deltas between mirror snapshots (needs no extra feature).
    Snapshot,
}

impl MirrorImageMode {
    /// Features the mode needs on the primary image.
    pub fn required_features(self) -> Features {
        match self {
            MirrorImageMode::Journal => Features::EXCLUSIVE_LOCK | Features::JOURNALING,
            MirrorImageMode::Snapshot => Features::empty(),
        }
    }
}

impl fmt::Display for MirrorImageMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MirrorImageMode::Journal => "journal",
            MirrorImageMode::Snapshot => "snapshot",
        })
    }
}

impl std::str::FromStr for MirrorImageMode {
    type Err = crate::error::SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "journal" => Ok(Self::Journal),
            "snapshot" => Ok(Self::Snapshot),
            _ => Err(crate::error::SpecError::new(
                "mirror mode",
                s,
                "use 'journal' or 'snapshot'",
            )),
        }
    }
}

/// A change of an image's features: what to disable, then what to enable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FeatureChange {
    /// Features to disable (done first, dependents before dependencies).
    pub disable: Features,
    /// Features to enable (done second, dependencies before dependents).
    pub enable: Features,
}

impl FeatureChange {
    /// True when nothing changes.
    pub fn is_empty(&self) -> bool {
        self.disable.is_empty() && self.enable.is_empty()
    }

    /// The feature set after the change.
    pub fn apply(&self, current: Features) -> Features {
        (current - self.disable) | self.enable
    }
}

impl fmt::Display for FeatureChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.disable.is_empty(), self.enable.is_empty()) {
            (true, true) => f.write_str("no change"),
            (false, true) => write!(f, "disable {}", self.disable),
            (true, false) => write!(f, "enable {}", self.enable),
            (false, false) => write!(f, "disable {}; enable {}", self.disable, self.enable),
        }
    }
}

/// Why a feature change cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeatureError {
    /// The original set had a feature that can never be enabled again.
    #[error("{0} was disabled and can never be enabled again (librbd refuses); the image keeps working without it")]
    CannotRestore(Features),
}

/// The smallest change that makes an image with `current` features mirrorable in `mode`.
///
/// With `disable_map_features` (what the seed runbook does, never the default) object-map,
/// fast-diff and deep-flatten are disabled as well; deep-flatten can never come back.
pub fn plan_enable(
    current: Features,
    mode: MirrorImageMode,
    disable_map_features: bool,
) -> FeatureChange {
    let mut disable = Features::empty();
    if disable_map_features {
        disable = current & (Features::OBJECT_MAP | Features::FAST_DIFF | Features::DEEP_FLATTEN);
    }
    let after_disable = current - disable;
    let wanted = mode.required_features().with_dependencies();
    FeatureChange {
        disable,
        enable: wanted - after_disable,
    }
}

/// The change that takes an image from `current` back to `original`.
///
/// Returns the change and the features that cannot be restored (deep-flatten, once disabled).
pub fn plan_restore(current: Features, original: Features) -> (FeatureChange, Features) {
    let unrestorable = (original - current) & !Features::ENABLEABLE;
    let change = FeatureChange {
        disable: (current - original) & Features::DISABLEABLE,
        enable: (original - current) & Features::ENABLEABLE,
    };
    (change, unrestorable)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: Features = Features::LAYERING
        .union(Features::EXCLUSIVE_LOCK)
        .union(Features::OBJECT_MAP)
        .union(Features::FAST_DIFF)
        .union(Features::DEEP_FLATTEN);

    #[test]
    fn journal_mode_on_default_image_only_adds_journaling() {
        let c = plan_enable(DEFAULT, MirrorImageMode::Journal, false);
        assert_eq!(c.disable, Features::empty());
        assert_eq!(c.enable, Features::JOURNALING);
    }

    #[test]
    fn journal_mode_on_bare_image_adds_exclusive_lock_first() {
        let c = plan_enable(Features::LAYERING, MirrorImageMode::Journal, false);
        assert_eq!(c.enable, Features::EXCLUSIVE_LOCK | Features::JOURNALING);
        assert_eq!(
            c.enable.enable_order(),
            vec![Features::EXCLUSIVE_LOCK, Features::JOURNALING]
        );
    }

    #[test]
    fn snapshot_mode_needs_no_change() {
        assert!(plan_enable(DEFAULT, MirrorImageMode::Snapshot, false).is_empty());
        assert!(plan_enable(Features::LAYERING, MirrorImageMode::Snapshot, false).is_empty());
    }

    #[test]
    fn runbook_option_disables_map_features() {
        let c = plan_enable(DEFAULT, MirrorImageMode::Journal, true);
        assert_eq!(
            c.disable,
            Features::OBJECT_MAP | Features::FAST_DIFF | Features::DEEP_FLATTEN
        );
        assert_eq!(c.enable, Features::JOURNALING);
        assert_eq!(
            c.apply(DEFAULT),
            Features::LAYERING | Features::EXCLUSIVE_LOCK | Features::JOURNALING
        );
        assert_eq!(
            c.disable.disable_order(),
            vec![
                Features::FAST_DIFF,
                Features::OBJECT_MAP,
                Features::DEEP_FLATTEN
            ]
        );
    }

    #[test]
    fn restore_puts_back_exactly_the_original_set() {
        for original in [
            DEFAULT,
            Features::LAYERING,
            Features::LAYERING | Features::EXCLUSIVE_LOCK,
        ] {
            for mode in [MirrorImageMode::Journal, MirrorImageMode::Snapshot] {
                let up = plan_enable(original, mode, false);
                let during = up.apply(original);
                let (down, lost) = plan_restore(during, original);
                assert!(lost.is_empty());
                assert_eq!(down.apply(during), original, "{original} {mode}");
            }
        }
    }

    #[test]
    fn restore_reports_deep_flatten_as_lost() {
        let up = plan_enable(DEFAULT, MirrorImageMode::Journal, true);
        let during = up.apply(DEFAULT);
        let (down, lost) = plan_restore(during, DEFAULT);
        assert_eq!(lost, Features::DEEP_FLATTEN);
        assert_eq!(down.apply(during), DEFAULT - Features::DEEP_FLATTEN);
        // restore order: exclusive-lock stays, object-map before fast-diff, journaling off
        assert_eq!(down.disable, Features::JOURNALING);
        assert_eq!(
            down.enable.enable_order(),
            vec![Features::OBJECT_MAP, Features::FAST_DIFF]
        );
    }

    #[test]
    fn dependency_closure_and_removal() {
        assert_eq!(
            Features::FAST_DIFF.with_dependencies(),
            Features::FAST_DIFF | Features::OBJECT_MAP | Features::EXCLUSIVE_LOCK
        );
        assert_eq!(
            DEFAULT.without(Features::EXCLUSIVE_LOCK),
            Features::LAYERING | Features::DEEP_FLATTEN
        );
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(
            DEFAULT.names(),
            vec![
                "layering",
                "exclusive-lock",
                "object-map",
                "fast-diff",
                "deep-flatten"
            ]
        );
        for (f, n) in NAMES {
            assert_eq!(Features::from_cli_name(n), Some(*f));
        }
    }
}
