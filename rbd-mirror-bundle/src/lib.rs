//! Split-role command bundles: the same [`Plan`] that `migrate` executes, rendered as one
//! POSIX shell script per role, for sites where no single person holds the source Ceph key,
//! the destination Ceph key and the destination cloud's admin credentials at once.
//!
//! Run order and handoffs (nothing handed over is a secret):
//!
//! 1. `1-source-ceph-admin.sh` (Ceph source admin, `rbd`): checks the source image against
//!    the facts recorded in the plan, enables the features and mirroring, waits for the
//!    mode's completion signal on the source side, computes the source's sha256 and prints
//!    the destination admin's command line with that digest (and, in snapshot mode, the id
//!    of the primary mirror snapshot to wait for).
//! 2. `2-destination-ceph-admin.sh DIGEST [SNAP_ID]` (Ceph destination admin, `rbd`,
//!    `ceph`): checks its pools, waits for the replica (snapshot mode: the complete
//!    non-primary mirror snapshot of SNAP_ID; both modes: the replica's content equals
//!    DIGEST), copies it, sets the copy's features, verifies the copy's digest equals DIGEST,
//!    snapshots + protects for Glance, and only then prints the verified-copy handoff: the
//!    digest, the copy's image id, the destination fsid and a verification token binding
//!    them to the plan (see `VERIFIED_HANDOFF`), on the next role's command line.
//! 3. `3-tenant-admin.sh DIGEST COPY_ID FSID TOKEN` (OpenStack tenant admin, `openstack`,
//!    `curl`): checks the handoff, then Cinder manage-existing of the copy, or Glance
//!    registration by rbd:// location; waits until the volume is `available` / the image
//!    `active`; passes the handoff on.
//! 4. `4-source-ceph-admin-cleanup.sh DIGEST COPY_ID FSID TOKEN` (Ceph source admin): refuses
//!    unless it is given script 2's handoff (the token recomputes, the fsid is not the
//!    source's own) and the source's digest equals DIGEST; only then disables mirroring
//!    (which deletes the replica) and restores the original features. Script 1's output
//!    alone (the digest) is refused: it proves no copy exists.
//!
//! Every name is written once, at the top of a script, through [`sh_quote`]; the body uses
//! only variables. Cluster names, conf paths and cephx ids are variables overridable from the
//! environment (`SRC_CLUSTER`, `SRC_CONF`, `SRC_ID`, `DST_*`, `OS_CLOUD`); no key or token is
//! ever written into a script.

use std::fmt::Write as _;

use thiserror::Error;

use rbd_mirror_core::cloud::{AdoptTarget, MARKER_KEY};
use rbd_mirror_core::features::{plan_restore, Features, MirrorImageMode};
use rbd_mirror_core::plan::{Plan, Role, Step};
use rbd_mirror_core::spec::{ClusterSpec, ImageSpec};

/// Why a plan cannot be rendered as a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BundleError {
    /// The plan has a step the bundle cannot express.
    #[error("step {step} cannot be rendered as a script: {reason}")]
    Unsupported {
        /// The step's kind.
        step: &'static str,
        /// Why.
        reason: String,
    },
}

/// The scripts of a bundle, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Script {
    /// Ceph source admin: features and mirroring.
    Source,
    /// Ceph destination admin: wait, copy, verify (snapshot + protect for Glance).
    Destination,
    /// OpenStack tenant admin of the destination cloud: manage or register.
    Tenant,
    /// Ceph source admin again: disable mirroring, restore features.
    Cleanup,
}

impl Script {
    /// All scripts in run order.
    pub const ALL: [Script; 4] = [
        Script::Source,
        Script::Destination,
        Script::Tenant,
        Script::Cleanup,
    ];

    /// The file name (`1-source-ceph-admin.sh`...).
    pub fn file_name(self) -> &'static str {
        match self {
            Script::Source => "1-source-ceph-admin.sh",
            Script::Destination => "2-destination-ceph-admin.sh",
            Script::Tenant => "3-tenant-admin.sh",
            Script::Cleanup => "4-source-ceph-admin-cleanup.sh",
        }
    }

    /// Who runs it.
    pub fn role(self) -> Role {
        match self {
            Script::Source | Script::Cleanup => Role::SourceCephAdmin,
            Script::Destination => Role::DestinationCephAdmin,
            Script::Tenant => Role::TenantAdmin,
        }
    }

    /// The script a step of a plan goes to: by [`Step::role`], except that the source's
    /// cleanup steps go to the last script (they must wait for the verified copy).
    pub fn for_step(step: &Step) -> Script {
        match step {
            Step::DisableMirroring | Step::RestoreFeatures { .. } => Script::Cleanup,
            s => match s.role() {
                Role::SourceCephAdmin => Script::Source,
                Role::DestinationCephAdmin => Script::Destination,
                Role::TenantAdmin => Script::Tenant,
            },
        }
    }
}

/// One file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleFile {
    /// File name inside the bundle directory.
    pub name: String,
    /// Contents.
    pub contents: String,
    /// Whether it is a script (written executable).
    pub executable: bool,
}

/// A rendered bundle: the scripts in run order, then `README.md`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The files.
    pub files: Vec<BundleFile>,
    /// The scripts present, in run order, each with the plan's step indexes it carries.
    pub scripts: Vec<(Script, Vec<usize>)>,
}

/// Quote `s` for POSIX sh: one single-quoted word whose value is exactly `s` (a `'` becomes
/// `'\''`). Safe for any string, including `$(...)`, backticks, `;`, `*` and newlines.
pub fn sh_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// A JSON string literal for `s` (quotes included).
fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// Percent-encode everything but unreserved characters (for a path part of an rbd:// URL).
fn url_part(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Space-separated `rbd` names of a feature set, as the scripts compare them.
fn names(f: Features) -> String {
    f.names().join(" ")
}

/// The steps of `plan` grouped by script, in run order; every step is in exactly one group.
pub fn assign(plan: &Plan) -> Vec<(Script, Vec<usize>)> {
    let mut out: Vec<(Script, Vec<usize>)> = Vec::new();
    for script in Script::ALL {
        let steps: Vec<usize> = plan
            .steps
            .iter()
            .enumerate()
            .filter(|(_, s)| Script::for_step(s) == script)
            .map(|(i, _)| i)
            .collect();
        // The source and destination scripts always run (handoffs); the cleanup script
        // also checks the digest, so it runs even when there is nothing to restore.
        if !steps.is_empty() || script != Script::Tenant {
            out.push((script, steps));
        }
    }
    out
}

/// Render `plan` as a bundle. `generated_by` is the command line that made it (for the
/// README; it must not contain secrets, the CLI passes its arguments).
pub fn render(plan: &Plan, generated_by: &str) -> Result<Bundle, BundleError> {
    let scripts = assign(plan);
    let present: Vec<Script> = scripts.iter().map(|(s, _)| *s).collect();
    let mut files = Vec::new();
    for (script, steps) in &scripts {
        let r = Renderer {
            plan,
            script: *script,
            steps,
            present: &present,
        };
        files.push(BundleFile {
            name: script.file_name().to_string(),
            contents: r.render()?,
            executable: true,
        });
    }
    files.push(BundleFile {
        name: "README.md".into(),
        contents: readme(plan, &scripts, generated_by),
        executable: false,
    });
    Ok(Bundle { files, scripts })
}

struct Renderer<'a> {
    plan: &'a Plan,
    script: Script,
    steps: &'a [usize],
    present: &'a [Script],
}

/// Shell helpers every script has.
const COMMON: &str = r#"say() { printf '%s\n' "[$SCRIPT] $*"; }
fail() {
    printf '%s\n' "[$SCRIPT] STOPPED: $*" >&2
    exit 1
}
need() {
    command -v "$1" >/dev/null 2>&1 || fail "this script needs '$1' on PATH"
}
check_digest() {
    case $1 in
    *[!0-9a-f]* | '') fail "'$1' is not a sha256 digest (64 hex digits): pass the digest the previous script printed" ;;
    esac
    [ "${#1}" -eq 64 ] || fail "'$1' is not a sha256 digest (64 hex digits): pass the digest the previous script printed"
}
# verification_token DIGEST COPY_ID FSID: the token 2-destination-ceph-admin.sh prints once it
# verified the copy; it binds this plan, the source's digest, the copy's image id and the
# destination fsid (a check against mix-ups, not a signature)
verification_token() {
    printf 'rbd-relay verified copy\n%s\n%s\n%s\n%s\n' "$PLAN_ID" "$1" "$2" "$3" | sha256sum | cut -d ' ' -f 1
}
# check_verified_handoff USAGE ARGS...: ARGS must be the four values the destination script
# printed after it verified the copy (DIGEST COPY_ID FSID TOKEN), with a token that matches
check_verified_handoff() {
    _usage=$1
    shift
    [ "$#" -ge 4 ] || fail "$_usage: this script needs the four values 2-destination-ceph-admin.sh prints after it verified the copy (the source script's digest alone proves no copy exists). Run the scripts in order and pass the line the previous one printed; nothing was changed"
    check_digest "$1"
    case $2 in
    *[!0-9a-f]* | '') fail "'$2' is not an RBD image id (hex digits): pass the copy image id 2-destination-ceph-admin.sh printed; nothing was changed" ;;
    esac
    case $3 in
    *[!0-9a-f-]* | '') fail "'$3' is not a Ceph fsid: pass the destination fsid 2-destination-ceph-admin.sh printed; nothing was changed" ;;
    esac
    [ "$(verification_token "$1" "$2" "$3")" = "$4" ] || fail "the verification token '$4' does not match digest $1, copy image id $2 and destination fsid $3 for plan $PLAN_ID: it is mistyped or from another migration's bundle. Pass the line 2-destination-ceph-admin.sh of this bundle printed; nothing was changed"
}
# wait_until WHAT COMMAND...: runs COMMAND every $POLL_INTERVAL s until it succeeds, for at most
# $WAIT_TIMEOUT s; COMMAND may set PROGRESS to a short progress text.
wait_until() {
    _what=$1
    shift
    _start=$(date +%s)
    PROGRESS=''
    while :; do
        if "$@"; then
            return 0
        fi
        _elapsed=$(($(date +%s) - _start))
        if [ "$_elapsed" -ge "$WAIT_TIMEOUT" ]; then
            fail "gave up after ${_elapsed}s waiting for $_what${PROGRESS:+ (last: $PROGRESS)}; raise RBD_RELAY_WAIT_TIMEOUT to wait longer (re-running this script is safe)"
        fi
        say "waiting for $_what (${_elapsed}s of ${WAIT_TIMEOUT}s)${PROGRESS:+: $PROGRESS}"
        sleep "$POLL_INTERVAL"
    done
}
# features_of INFO_TEXT: the space-separated feature names of an `rbd info` output
features_of() {
    printf '%s\n' "$1" | sed -n 's/^[[:space:]]*features: *//p' | tr -d ',' | tr -s ' ' | sed 's/ *$//'
}
mirroring_of() {
    printf '%s\n' "$1" | sed -n "s/^[[:space:]]*mirroring $2: *//p" | head -n 1
}
has_word() {
    case " $1 " in
    *" $2 "*) return 0 ;;
    esac
    return 1
}
# sha256_of COMMAND...: the sha256 of COMMAND's stdout; stops the script if COMMAND fails
sha256_of() {
    _tmp=$(mktemp)
    _sum=$({
        if "$@" 2>"$_tmp.err"; then echo 0 >"$_tmp"; else echo "$?" >"$_tmp"; fi
    } | sha256sum | cut -d ' ' -f 1)
    _rc=$(cat "$_tmp")
    _err=$(cat "$_tmp.err")
    rm -f "$_tmp" "$_tmp.err"
    [ "$_rc" = 0 ] || fail "reading the image failed (exit $_rc): $_err"
    printf '%s\n' "$_sum"
}
# json_lines: split JSON text at , { and } so that each "key": value pair is on a line
json_lines() {
    awk '{ n = split($0, a, /[,{}]/); for (i = 1; i <= n; i++) print a[i] }'
}
"#;

/// Shell helpers of the Ceph scripts: feature convergence on one image.
const CEPH_COMMON: &str = r#"# converge_features RBD_FN POOL NAMESPACE IMAGE WANTED: disable what WANTED lacks (dependents
# first), enable what it has (dependencies first); features are re-read before each change
converge_features() {
    _fn=$1 _pool=$2 _ns=$3 _img=$4 _wanted=$5
    for _f in journaling fast-diff object-map deep-flatten exclusive-lock; do
        _now=$(features_of "$("$_fn" info --pool "$_pool" --namespace "$_ns" --image "$_img")")
        if has_word "$_now" "$_f" && ! has_word "$_wanted" "$_f"; then
            say "disable feature $_f"
            "$_fn" feature disable --pool "$_pool" --namespace "$_ns" --image "$_img" "$_f"
        fi
    done
    for _f in exclusive-lock object-map fast-diff journaling; do
        _now=$(features_of "$("$_fn" info --pool "$_pool" --namespace "$_ns" --image "$_img")")
        if has_word "$_wanted" "$_f" && ! has_word "$_now" "$_f"; then
            say "enable feature $_f"
            "$_fn" feature enable --pool "$_pool" --namespace "$_ns" --image "$_img" "$_f"
        fi
    done
}
# mirror_snapshot_ids JSON STATE: ids of the mirror snapshots in STATE (primary|non-primary)
# of an `rbd snap ls --all --format json` output, one per line; with a third argument ID,
# only the complete non-primary snapshots of primary snapshot ID
mirror_snapshot_ids() {
    printf '%s\n' "$1" | awk -v state="$2" -v psid="${3:-}" '{
        n = split($0, parts, /\{"id":/)
        for (i = 2; i <= n; i++) {
            p = parts[i]
            if (index(p, "\"type\":\"mirror\"") == 0) continue
            if (state != "" && index(p, "\"state\":\"" state "\"") == 0) continue
            if (psid != "" && (index(p, "\"complete\":true") == 0 || p !~ ("\"primary_snap_id\":" psid "[,}]"))) continue
            id = p
            sub(/[^0-9].*/, "", id)
            print id
        }
    }'
}
"#;

/// The end of the destination script, reached only after its verify step passed: the
/// verified-copy handoff `DIGEST COPY_ID FSID TOKEN` the tenant and cleanup scripts require.
/// Script 1 prints only the digest, so running the cleanup right after it is refused; the
/// copy's image id survives Cinder's rename, and the token (see `verification_token`) binds
/// the three values to this plan, so a mistyped or foreign handoff is refused too.
const VERIFIED_HANDOFF: &str = r#"
# --- handoff: the verified copy
[ -n "${VERIFIED_COPY_ID:-}" ] || fail "the copy's image id is unknown, so the copy is not verified by this run; re-run this script"
FSID=$(dst_ceph fsid) || fail "cannot read the fsid of $DST_CLUSTER as client.$DST_ID"
say "destination fsid: $FSID; verified copy: image id $VERIFIED_COPY_ID"
VERIFY_TOKEN=$(verification_token "$SOURCE_DIGEST" "$VERIFIED_COPY_ID" "$FSID")
HANDOFF="$SOURCE_DIGEST $VERIFIED_COPY_ID $FSID $VERIFY_TOKEN"
"#;

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

impl Renderer<'_> {
    fn render(&self) -> Result<String, BundleError> {
        let p = self.plan;
        let m = &p.migration;
        let mut s = String::new();
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
                cluster_vars(&mut s, "SRC", &m.source);
                image_vars(&mut s, "SRC", &m.image);
            }
            Script::Destination => {
                let _ = writeln!(
                    s,
                    "# the destination cluster and cephx user (override from the environment)"
                );
                cluster_vars(&mut s, "DST", &m.destination);
                let _ = writeln!(s, "# the replica rbd-mirror makes, and the copy");
                image_vars(&mut s, "REPLICA", &m.replica());
                image_vars(&mut s, "COPY", &m.copy_target());
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
        s.push('\n');
        s.push_str(COMMON);
        if self.script != Script::Tenant {
            s.push_str(CEPH_COMMON);
        }
        match self.script {
            Script::Source | Script::Cleanup => s.push_str(
                "src_ceph() { ceph --conf \"$SRC_CONF\" --cluster \"$SRC_CLUSTER\" --id \"$SRC_ID\" \"$@\"; }\n\
                 src_rbd() { rbd --conf \"$SRC_CONF\" --cluster \"$SRC_CLUSTER\" --id \"$SRC_ID\" \"$@\"; }\n\
                 src_image() { src_rbd \"$@\" --pool \"$SRC_POOL\" --namespace \"$SRC_NAMESPACE\" --image \"$SRC_IMAGE\"; }\n",
            ),
            Script::Destination => s.push_str(
                "dst_rbd() { rbd --conf \"$DST_CONF\" --cluster \"$DST_CLUSTER\" --id \"$DST_ID\" \"$@\"; }\n\
                 dst_ceph() { ceph --conf \"$DST_CONF\" --cluster \"$DST_CLUSTER\" --id \"$DST_ID\" \"$@\"; }\n\
                 replica() { dst_rbd \"$@\" --pool \"$REPLICA_POOL\" --namespace \"$REPLICA_NAMESPACE\" --image \"$REPLICA_IMAGE\"; }\n\
                 copy() { dst_rbd \"$@\" --pool \"$COPY_POOL\" --namespace \"$COPY_NAMESPACE\" --image \"$COPY_IMAGE\"; }\n",
            ),
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

    fn step_header(&self, s: &mut String, index: usize) {
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

    fn next_script(&self) -> Option<Script> {
        let i = self.present.iter().position(|x| *x == self.script)?;
        self.present.get(i + 1).copied()
    }

    fn source(&self, s: &mut String) -> Result<(), BundleError> {
        let p = self.plan;
        let m = &p.migration;
        let original = p.facts.features;
        let during = p
            .steps
            .iter()
            .find_map(|st| match st {
                Step::EnableFeatures { change } => Some(change.apply(original)),
                _ => None,
            })
            .unwrap_or(original);
        let _ = writeln!(s, "# facts recorded by the plan's read-only preflight");
        let _ = writeln!(s, "ORIGINAL_FEATURES={}", sh_quote(&names(original)));
        let _ = writeln!(s, "MIGRATION_FEATURES={}", sh_quote(&names(during)));
        let _ = writeln!(s, "MODE={}", sh_quote(&m.mode.to_string()));
        let _ = writeln!(s, "ALLOW_LIVE={}", if m.allow_live { "yes" } else { "no" });
        let _ = writeln!(
            s,
            "MIRRORED_BEFORE={}",
            if p.facts.mirroring_was_enabled {
                "yes"
            } else {
                "no"
            }
        );
        s.push_str(
            r#"
need rbd
need sha256sum
say "checking $SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE as client.$SRC_ID (read only)"
INFO=$(src_image info 2>&1) || fail "cannot read $SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE as client.$SRC_ID: $INFO"
FEATURES=$(features_of "$INFO")
MSTATE=$(mirroring_of "$INFO" state)
[ -n "$MSTATE" ] || MSTATE=disabled
if [ "$MSTATE" = enabled ]; then
    [ "$(mirroring_of "$INFO" primary)" = true ] || fail "$SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE is not primary (it is a mirror replica); this bundle must run where the image is primary"
    [ "$(mirroring_of "$INFO" mode)" = "$MODE" ] || fail "$SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE is mirrored in $(mirroring_of "$INFO" mode) mode, the plan says $MODE; generate the bundle with --mode $(mirroring_of "$INFO" mode)"
    [ "$FEATURES" = "$MIGRATION_FEATURES" ] || [ "$MIRRORED_BEFORE" = yes ] || fail "$SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE has features '$FEATURES', expected '$MIGRATION_FEATURES' while mirrored; the image changed since the plan: generate a new bundle"
    say "mirroring is already enabled ($MODE mode): continuing a started run"
else
    [ "$MSTATE" = disabled ] || fail "mirroring of $SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE is '$MSTATE'; wait until it is settled and re-run"
    [ "$FEATURES" = "$ORIGINAL_FEATURES" ] || [ "$FEATURES" = "$MIGRATION_FEATURES" ] || fail "$SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE has features '$FEATURES', the plan recorded '$ORIGINAL_FEATURES'; the image changed since the plan: generate a new bundle"
    WATCHERS=$(src_image status 2>&1) || fail "cannot read the watchers of $SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE: $WATCHERS"
    if printf '%s\n' "$WATCHERS" | grep -q 'watcher='; then
        [ "$ALLOW_LIVE" = yes ] || fail "$SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE is in use ($(printf '%s' "$WATCHERS" | grep 'watcher=' | tr -s ' \t' ' ')); stop the instance using it or detach the volume, then re-run"
        say "warning: the image is in use and the plan accepts a live migration: writes after the copy are not in the copy"
    fi
fi
POOL_MODE=$(src_rbd mirror pool info --pool "$SRC_POOL" 2>&1 | sed -n 's/^Mode: *//p')
"#,
        );
        let enable_pool = p.steps.contains(&Step::EnablePoolMirroring);
        if enable_pool {
            s.push_str("[ \"$POOL_MODE\" = image ] || [ \"$POOL_MODE\" = disabled ] || fail \"pool $SRC_POOL on $SRC_CLUSTER mirrors in mode '$POOL_MODE', not image\"\n");
        } else {
            s.push_str("[ \"$POOL_MODE\" = image ] || fail \"pool $SRC_POOL on $SRC_CLUSTER mirrors in mode '$POOL_MODE', not image; run: rbd --cluster $SRC_CLUSTER mirror pool enable $SRC_POOL image (or generate the bundle with --enable-pool-mirroring)\"\n");
        }
        s.push_str("say \"preconditions hold: features '$FEATURES', mirroring $MSTATE, pool mode $POOL_MODE\"\n");
        for &i in self.steps {
            self.step_header(s, i);
            match &p.steps[i] {
                Step::Preflight => {
                    s.push_str("say \"(the checks above)\"\n");
                }
                Step::EnablePoolMirroring => s.push_str(
                    "if [ \"$POOL_MODE\" = disabled ]; then\n    say \"enable image-mode mirroring on pool $SRC_POOL of $SRC_CLUSTER\"\n    src_rbd mirror pool enable --pool \"$SRC_POOL\" image\nelse\n    say \"pool $SRC_POOL already mirrors in image mode\"\nfi\n",
                ),
                Step::EnableFeatures { .. } => s.push_str(
                    "if [ \"$MSTATE\" = enabled ]; then\n    say \"features already set\"\nelse\n    converge_features src_rbd \"$SRC_POOL\" \"$SRC_NAMESPACE\" \"$SRC_IMAGE\" \"$MIGRATION_FEATURES\"\nfi\n",
                ),
                Step::EnableMirroring { .. } => s.push_str(
                    "if [ \"$MSTATE\" = enabled ]; then\n    say \"mirroring already enabled\"\nelse\n    say \"enable $MODE-mode mirroring of $SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE\"\n    src_image mirror image enable \"$MODE\"\nfi\n",
                ),
                other => {
                    return Err(BundleError::Unsupported {
                        step: other.kind(),
                        reason: "not a step of the source script".into(),
                    })
                }
            }
        }
        // the handoff: the completion signal and the digest
        match m.mode {
            MirrorImageMode::Journal => s.push_str(
                r#"
# --- handoff: wait until the rbd-mirror peer has registered in the source journal and its
# commit position equals the master's (the exact journal-mode signal readable on the source;
# `rbd mirror image status` lags 10-22 s and is shown for progress only)
# peer_sync_states: from `rbd journal status --format json` on stdin, one line per mirror
# peer client: "ID replaying", "ID syncing", "ID disconnected" or "ID unknown". The peer's
# state is in its client data (a hex dump): ENCODE_START header (6 bytes), meta type (u32,
# 1 = mirror peer), image id (u32 length + bytes), state (u32, 1 = replaying), sync object
# count (u64), number of sync points (u32); the initial sync is over when the state is
# replaying with no sync point left.
peer_sync_states() {
    awk '
    function byte(k) { return (index("0123456789abcdef", substr(hex, 2 * k + 1, 1)) - 1) * 16 + index("0123456789abcdef", substr(hex, 2 * k + 2, 1)) - 1 }
    function u32(k) { return byte(k) + 256 * (byte(k + 1) + 256 * (byte(k + 2) + 256 * byte(k + 3))) }
    {
        n = split($0, parts, /\{"id":"/)
        for (i = 2; i <= n; i++) {
            p = parts[i]
            id = p
            sub(/".*/, "", id)
            if (id == "") continue
            if (index(p, "\"state\":\"connected\"") == 0) { print id, "disconnected"; continue }
            s = index(p, "\"data\":\"")
            e = index(p, "\",\"commit_position\"")
            if (s == 0 || e == 0) { print id, "unknown"; continue }
            d = substr(p, s + 8, e - s - 8)
            nl = split(d, lines, /\\n/)
            hex = ""
            for (j = 1; j <= nl; j++) {
                if (length(lines[j]) <= 10) continue
                h = substr(lines[j], 11, 48)
                gsub(/[^0-9a-f]/, "", h)
                hex = hex h
            }
            if (length(hex) < 28 || u32(6) != 1) { print id, "unknown"; continue }
            off = 14 + u32(10)
            if (length(hex) < 2 * (off + 16)) { print id, "unknown"; continue }
            print id, ((u32(off) == 1 && u32(off + 12) == 0) ? "replaying" : "syncing")
        }
    }'
}
PEER_STATE_UNKNOWN=no
journal_caught_up() {
    _js=$(src_image journal status 2>&1) || {
        PROGRESS="cannot read the journal: $_js"
        return 1
    }
    _master=$(printf '%s\n' "$_js" | sed -n 's/^[[:space:]]*\[id=, commit_position=\(.*\), state=.*$/\1/p')
    _peers=$(printf '%s\n' "$_js" | sed -n 's/^[[:space:]]*\[id=[^,][^,]*, commit_position=\(.*\), state=.*$/\1/p')
    _status=$(src_image mirror image status 2>/dev/null | sed -n -e 's/^[[:space:]]*state: *//p' -e 's/^[[:space:]]*description: *//p' | tr '\n' ' ')
    if [ -z "$_peers" ]; then
        PROGRESS="no rbd-mirror peer has registered in the journal yet${_status:+; $_status}"
        return 1
    fi
    _meta=$(src_image journal status --format json 2>/dev/null | peer_sync_states)
    if printf '%s\n' "$_meta" | grep -q ' syncing$'; then
        PROGRESS="the peer is still in its initial image sync${_status:+; $_status}"
        return 1
    fi
    if printf '%s\n' "$_meta" | grep -q ' disconnected$'; then
        PROGRESS="the peer's journal client is disconnected (is rbd-mirror running on the destination?)${_status:+; $_status}"
        return 1
    fi
    if printf '%s\n' "$_peers" | grep -qvxF "$_master"; then
        PROGRESS="the peer has not replayed up to the master position yet${_status:+; $_status}"
        return 1
    fi
    if [ -z "$_meta" ] || printf '%s\n' "$_meta" | grep -q ' unknown$'; then
        PEER_STATE_UNKNOWN=yes
    fi
    return 0
}
wait_until "the replica to catch up with $SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE" journal_caught_up
if [ "$PEER_STATE_UNKNOWN" = yes ]; then
    say "the rbd-mirror peer's commit position equals the master position (its sync state could not be read: the destination script's content check decides)"
else
    say "the rbd-mirror peer has finished its initial sync and its commit position equals the master position"
fi
say "computing the sha256 of $SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE (reads the whole image)"
DIGEST=$(sha256_of src_image export --no-progress -)
say "source sha256: $DIGEST"
HANDOFF="$DIGEST"
"#,
            ),
            MirrorImageMode::Snapshot => s.push_str(
                r#"
# --- handoff: the newest complete primary mirror snapshot (the destination admin waits for
# its complete non-primary copy on the replica) and the digest
newest_primary_snapshot() {
    _snaps=$(src_image snap ls --all --format json 2>&1) || {
        PROGRESS="cannot list snapshots: $_snaps"
        return 1
    }
    SNAP_ID=$(mirror_snapshot_ids "$_snaps" primary | sort -n | tail -n 1)
    [ -n "$SNAP_ID" ] || {
        PROGRESS="no primary mirror snapshot yet"
        return 1
    }
    printf '%s\n' "$_snaps" | awk -v id="$SNAP_ID" '{ n = split($0, p, /\{"id":/); for (i = 2; i <= n; i++) if (index(p[i], id ",") == 1 && index(p[i], "\"complete\":true") > 0) found = 1 } END { exit !found }' || {
        PROGRESS="mirror snapshot $SNAP_ID is not complete yet"
        return 1
    }
}
wait_until "a complete primary mirror snapshot of $SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE" newest_primary_snapshot
say "newest primary mirror snapshot: id $SNAP_ID"
say "computing the sha256 of $SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE (reads the whole image)"
DIGEST=$(sha256_of src_image export --no-progress -)
say "source sha256: $DIGEST"
HANDOFF="$DIGEST $SNAP_ID"
"#,
            ),
        }
        let next = self.next_script().map_or("", |x| x.file_name());
        let _ = writeln!(
            s,
            "\nsay \"done. NEXT: the Ceph destination admin runs (this line carries no secret):\"\nprintf '    sh ./%s %s\\n' {} \"$HANDOFF\"",
            sh_quote(next)
        );
        Ok(())
    }

    fn destination(&self, s: &mut String) -> Result<(), BundleError> {
        let p = self.plan;
        let m = &p.migration;
        let lost = p
            .steps
            .iter()
            .find_map(|st| match st {
                Step::SetCopyFeatures { features } => Some(*features),
                _ => None,
            })
            .unwrap_or(p.facts.features);
        let snapshot = p.steps.iter().find_map(|st| match st {
            Step::SnapshotAndProtect { snap } => Some(snap.clone()),
            _ => None,
        });
        let _ = writeln!(s, "COPY_FEATURES={}", sh_quote(&names(lost)));
        let _ = writeln!(s, "MODE={}", sh_quote(&m.mode.to_string()));
        if let Some(snap) = &snapshot {
            let _ = writeln!(s, "GLANCE_SNAP={}", sh_quote(snap));
        }
        let enable_pool = p.steps.contains(&Step::EnablePoolMirroring);
        s.push_str(
            r#"
usage="usage: sh ./$SCRIPT SOURCE_SHA256"
[ "$MODE" = snapshot ] && usage="$usage MIRROR_SNAPSHOT_ID"
[ "$#" -ge 1 ] || fail "$usage (the Ceph source admin's script printed the line to run)"
SOURCE_DIGEST=$1
check_digest "$SOURCE_DIGEST"
SNAP_ID=${2:-}
if [ "$MODE" = snapshot ]; then
    case $SNAP_ID in
    '' | *[!0-9]*) fail "$usage: the mirror snapshot id is missing or not a number" ;;
    esac
fi
need rbd
need ceph
need sha256sum
say "checking $DST_CLUSTER as client.$DST_ID (read only)"
"#,
        );
        if enable_pool {
            s.push_str(
                r#"POOL_MODE=$(dst_rbd mirror pool info --pool "$REPLICA_POOL" 2>&1 | sed -n 's/^Mode: *//p')
if [ "$POOL_MODE" = disabled ]; then
    say "enable image-mode mirroring on pool $REPLICA_POOL of $DST_CLUSTER (the plan enables pool mirroring)"
    dst_rbd mirror pool enable --pool "$REPLICA_POOL" image
fi
"#,
            );
        }
        s.push_str(
            r#"# what this script verified, kept beside it: the copy's image id and digest, so that a re-run
# after the cloud adopted (and renamed) the copy does not copy again
STATE_FILE=${RBD_RELAY_BUNDLE_STATE:-$(dirname "$0")/.2-destination-ceph-admin.state}
COPY_DONE=no
RENAMED=no
REC_ID=''
REC_DIGEST=''
if [ -s "$STATE_FILE" ]; then
    read -r REC_ID REC_DIGEST <"$STATE_FILE" || true
fi
if copy info >/dev/null 2>&1; then
    say "$DST_CLUSTER:$COPY_POOL/$COPY_IMAGE exists: checking whether it is this migration's verified copy (reads the whole image)"
    HAVE=$(sha256_of copy export --no-progress -)
    [ "$HAVE" = "$SOURCE_DIGEST" ] || fail "$DST_CLUSTER:$COPY_POOL/$COPY_IMAGE exists and its content differs from the source (sha256 $HAVE): a partial copy of an interrupted run, or another image. Check it; if it is a leftover remove it (rbd --cluster $DST_CLUSTER rm --pool $COPY_POOL --image <name>) and re-run"
    COPY_DONE=yes
    say "the copy is already there with the source's content"
elif [ -n "$REC_ID" ] && [ "$REC_DIGEST" = "$SOURCE_DIGEST" ] &&
    RNAME=$(dst_rbd info --pool "$COPY_POOL" --namespace "$COPY_NAMESPACE" --image-id "$REC_ID" 2>/dev/null | sed -n "s/^rbd image '\(.*\)':\$/\1/p") &&
    [ -n "$RNAME" ]; then
    COPY_DONE=yes
    RENAMED=yes
    say "this script already made and verified the copy (image id $REC_ID, see $STATE_FILE); it is now named '$RNAME' (adopted by the cloud): nothing to copy again"
else
    dst_rbd ls --pool "$COPY_POOL" --namespace "$COPY_NAMESPACE" >/dev/null 2>&1 || fail "cannot list pool $COPY_POOL on $DST_CLUSTER as client.$DST_ID (does it exist, may this user read it?)"
    PINFO=$(dst_rbd mirror pool info --pool "$REPLICA_POOL" 2>&1) || fail "cannot read the mirroring of pool $REPLICA_POOL on $DST_CLUSTER: $PINFO"
    [ "$(printf '%s\n' "$PINFO" | sed -n 's/^Mode: *//p')" = image ] || fail "pool $REPLICA_POOL on $DST_CLUSTER does not mirror in image mode; run: rbd --cluster $DST_CLUSTER mirror pool enable $REPLICA_POOL image (and pair it)"
    printf '%s\n' "$PINFO" | grep -q '^UUID:' || fail "pool $REPLICA_POOL on $DST_CLUSTER has no mirror peer; pair it with the source (rbd-relay pair, or rbd mirror pool peer bootstrap import)"
    if RINFO=$(replica info 2>/dev/null); then
        [ "$(mirroring_of "$RINFO" primary)" = false ] || fail "$DST_CLUSTER:$REPLICA_POOL/$REPLICA_IMAGE exists and is not a mirror replica; rbd-mirror cannot create the replica there: rename or remove that image, then re-run"
    fi
    HEALTH=$(dst_rbd mirror pool status --pool "$REPLICA_POOL" 2>&1 | sed -n 's/^daemon health: *//p')
    [ "$HEALTH" = OK ] || [ "$HEALTH" = WARNING ] || fail "no healthy rbd-mirror daemon for pool $REPLICA_POOL on $DST_CLUSTER (daemon health: ${HEALTH:-unknown}); start rbd-mirror and re-run"
fi
say "preconditions hold"
"#,
        );
        for &i in self.steps {
            self.step_header(s, i);
            match &p.steps[i] {
                Step::WaitForReplica => {
                    s.push_str(
                        r#"if [ "$COPY_DONE" = yes ]; then
    say "the copy is done; no need to wait for the replica"
else
    replica_there() {
        _ri=$(replica info 2>&1) || {
            PROGRESS="no replica yet"
            return 1
        }
        [ "$(mirroring_of "$_ri" primary)" = false ] || {
            PROGRESS="$DST_CLUSTER:$REPLICA_POOL/$REPLICA_IMAGE exists but is not a non-primary replica"
            return 1
        }
        PROGRESS=$(replica mirror image status 2>/dev/null | sed -n -e 's/^[[:space:]]*state: *//p' -e 's/^[[:space:]]*description: *//p' | tr '\n' ' ')
        if [ "$MODE" = snapshot ]; then
            _snaps=$(replica snap ls --all --format json 2>/dev/null) || return 1
            [ -n "$(mirror_snapshot_ids "$_snaps" non-primary "$SNAP_ID")" ] || {
                PROGRESS="mirror snapshot $SNAP_ID not complete on the replica yet; $PROGRESS"
                return 1
            }
        fi
        return 0
    }
    replica_complete() {
        replica_there || return 1
        say "checking the replica's content against the source's digest (reads the whole image)"
        _have=$(sha256_of replica export --no-progress -)
        [ "$_have" = "$SOURCE_DIGEST" ] || {
            PROGRESS="the replica's sha256 is $_have, not yet the source's"
            return 1
        }
    }
    wait_until "the replica $DST_CLUSTER:$REPLICA_POOL/$REPLICA_IMAGE to be complete" replica_complete
    say "the replica is complete: its sha256 equals the source's"
fi
"#,
                    );
                }
                Step::CopyReplica => {
                    let mut feature_args = String::new();
                    for n in lost.names() {
                        if Features::from_cli_name(n).is_some_and(|f| {
                            !(f & (Features::LAYERING
                                | Features::EXCLUSIVE_LOCK
                                | Features::OBJECT_MAP
                                | Features::FAST_DIFF
                                | Features::DEEP_FLATTEN
                                | Features::STRIPINGV2))
                                .is_empty()
                        }) {
                            let _ = write!(feature_args, " --image-feature {}", sh_quote(n));
                        }
                    }
                    let _ = writeln!(
                        s,
                        "if [ \"$COPY_DONE\" = yes ]; then\n    say \"copy already there\"\nelse\n    say \"copy $DST_CLUSTER:$REPLICA_POOL/$REPLICA_IMAGE to $DST_CLUSTER:$COPY_POOL/$COPY_IMAGE\"\n    replica cp --dest-pool \"$COPY_POOL\" --dest-namespace \"$COPY_NAMESPACE\" --dest \"$COPY_IMAGE\"{feature_args}\nfi"
                    );
                }
                Step::SetCopyFeatures { .. } => s.push_str(
                    r#"if [ "$RENAMED" = yes ]; then
    say "the copy's features were set before it was adopted"
else
    converge_features dst_rbd "$COPY_POOL" "$COPY_NAMESPACE" "$COPY_IMAGE" "$COPY_FEATURES"
    NOW=$(features_of "$(copy info)")
    [ "$NOW" = "$COPY_FEATURES" ] || fail "the copy has features '$NOW', expected '$COPY_FEATURES'"
fi
"#,
                ),
                Step::Verify => s.push_str(
                    r#"if [ "$COPY_DONE" = yes ]; then
    say "verified above: the copy's sha256 equals the source's"
else
    say "verify: sha256 of the copy (reads the whole image)"
    HAVE=$(sha256_of copy export --no-progress -)
    [ "$HAVE" = "$SOURCE_DIGEST" ] || fail "the copy's sha256 $HAVE differs from the source's $SOURCE_DIGEST; remove the copy (rbd --cluster $DST_CLUSTER rm --pool $COPY_POOL --image <name>) and re-run"
    say "verified: the copy's sha256 equals the source's ($HAVE)"
fi
if [ "$RENAMED" = no ]; then
    COPY_ID=$(copy info | sed -n 's/^[[:space:]]*id: *//p')
    printf '%s %s\n' "$COPY_ID" "$SOURCE_DIGEST" >"$STATE_FILE" || say "warning: cannot write $STATE_FILE; do not re-run this script after the cloud adopted the copy"
else
    COPY_ID=$REC_ID
fi
VERIFIED_COPY_ID=$COPY_ID
"#,
                ),
                Step::SnapshotAndProtect { .. } => s.push_str(
                    r#"[ "$RENAMED" = no ] || fail "the copy was renamed (image id $REC_ID); Glance reads it by its name: rename it back to $COPY_IMAGE"
SNAPS=$(copy snap ls --format json)
if printf '%s\n' "$SNAPS" | grep -qF "\"name\":\"$GLANCE_SNAP\""; then
    say "snapshot $GLANCE_SNAP already there"
else
    say "create snapshot $GLANCE_SNAP of the copy"
    copy snap create --snap "$GLANCE_SNAP"
fi
if [ "$(copy info --snap "$GLANCE_SNAP" | sed -n 's/^[[:space:]]*protected: *//p')" = True ]; then
    say "snapshot $GLANCE_SNAP already protected"
else
    say "protect snapshot $GLANCE_SNAP"
    copy snap protect --snap "$GLANCE_SNAP"
fi
"#,
                ),
                other => {
                    return Err(BundleError::Unsupported {
                        step: other.kind(),
                        reason: "not a step of the destination script".into(),
                    })
                }
            }
        }
        s.push_str(VERIFIED_HANDOFF);
        let next = self.next_script();
        let handoff = "\"$HANDOFF\"";
        match next {
            Some(Script::Tenant) => {
                let _ = writeln!(
                    s,
                    "\nsay \"done. NEXT: the OpenStack tenant admin runs (this line carries no secret):\"\nprintf '    sh ./%s %s\\n' {} {handoff}",
                    sh_quote(Script::Tenant.file_name())
                );
            }
            _ => {
                let _ = writeln!(
                    s,
                    "\nsay \"done. NEXT: the Ceph source admin runs the cleanup (this line carries no secret):\"\nprintf '    sh ./%s %s\\n' {} {handoff}",
                    sh_quote(Script::Cleanup.file_name())
                );
            }
        }
        Ok(())
    }

    fn tenant(&self, s: &mut String) -> Result<(), BundleError> {
        let p = self.plan;
        let m = &p.migration;
        let _ = writeln!(s, "MARKER_KEY={}", sh_quote(MARKER_KEY));
        s.push_str(
            r#"
need openstack
need curl
need sha256sum
usage="usage: sh ./$SCRIPT VERIFIED_SHA256 COPY_IMAGE_ID DESTINATION_FSID VERIFICATION_TOKEN"
"#,
        );
        s.push_str(
            r#"check_verified_handoff "$usage (the Ceph destination admin's script printed the line to run)" "$@"
HANDOFF="$1 $2 $3 $4"
say "checking cloud $OS_CLOUD (read only)"
TOKEN=$(openstack token issue -f value -c id 2>&1) || fail "cannot get a token for cloud $OS_CLOUD: $TOKEN"
PROJECT=$(openstack token issue -f value -c project_id)
REGION=$(openstack configuration show -f value -c region_name 2>/dev/null || true)
# api SERVICE METHOD PATH [BODY] [HEADER]: an authenticated call; the token goes to curl on
# stdin, never on a command line
endpoint() {
    _url=$(openstack endpoint list --service "$1" --interface public ${REGION:+--region "$REGION"} -f value -c URL 2>/dev/null | head -n 1)
    [ -n "$_url" ] || fail "cloud $OS_CLOUD lists no public $1 endpoint (endpoint list needs the admin role: use the cloud's admin credentials)"
    printf '%s\n' "$_url" | sed "s/%(project_id)s/$PROJECT/; s/\$(project_id)s/$PROJECT/; s/%(tenant_id)s/$PROJECT/"
}
api() {
    _m=$1 _u=$2 _b=${3:-} _h=${4:-}
    printf 'X-Auth-Token: %s\n' "$TOKEN" | curl -sS --fail-with-body -X "$_m" -H @- \
        -H 'Content-Type: application/json' -H 'Accept: application/json' ${_h:+-H "$_h"} \
        ${_b:+--data-binary "$_b"} "$_u"
}
"#,
        );
        for &i in self.steps {
            self.step_header(s, i);
            match &p.steps[i] {
                Step::AdoptVolume { target, name, .. } => {
                    let (host, pool) = match target {
                        AdoptTarget::Host { host } => (host.clone(), String::new()),
                        AdoptTarget::CephPool { pool } => (String::new(), pool.clone()),
                    };
                    let bootable = m.adopt.as_ref().is_some_and(|a| a.bootable);
                    let mut fields = format!(
                        "\"ref\": {{\"source-name\": {}}}, \"bootable\": {bootable}, \"metadata\": {{{}: {}, \"rbd_relay_source\": {}}}",
                        json_string(&m.dest_name),
                        json_string(MARKER_KEY),
                        json_string(&p.id),
                        json_string(&format!("{}:{}", m.source.name, m.image))
                    );
                    if let Some(n) = name {
                        let _ = write!(fields, ", \"name\": {}", json_string(n));
                    }
                    let _ = writeln!(
                        s,
                        "CINDER_HOST=${{CINDER_HOST:-{}}}\nCINDER_POOL={}\nVOLUME_NAME={}\nMANAGE_FIELDS={}",
                        sh_quote(&host),
                        sh_quote(&pool),
                        sh_quote(name.as_deref().unwrap_or("")),
                        sh_quote(&fields)
                    );
                    s.push_str(
                        r#"CINDER=$(endpoint volumev3)
V38='OpenStack-API-Version: volume 3.8'
# a volume this migration already adopted (found by the marker in its metadata)
FILTER=$(printf '%%7B%%22%s%%22%%3A%%22%s%%22%%7D' "$MARKER_KEY" "$PLAN_ID")
adopted_ids() {
    api GET "$CINDER/volumes?all_tenants=1&metadata=$FILTER" | json_lines | sed -n 's/^ *"id": *"\([0-9a-f-]\{36\}\)".*/\1/p'
}
IDS=$(adopted_ids) || fail "cannot list volumes of cloud $OS_CLOUD"
VOLUME_ID=''
for _id in $IDS; do
    _st=$(openstack volume show -f value -c status "$_id")
    case $_st in
    error*) fail "volume $_id of an earlier run of this script is '$_st'; look at it (openstack volume show $_id), remove its record (cinder unmanage keeps the RBD image) and re-run" ;;
    *) VOLUME_ID=$_id ;;
    esac
done
if [ -n "$VOLUME_ID" ]; then
    say "already adopted as volume $VOLUME_ID"
else
    if [ -z "$CINDER_HOST" ]; then
        POOLS=$(api GET "$CINDER/scheduler-stats/get_pools?detail=true") || fail "cannot read Cinder's pools (scheduler-stats needs the admin role in cloud $OS_CLOUD)"
        CINDER_HOST=$(printf '%s\n' "$POOLS" | awk -v pool="$CINDER_POOL" '{
            n = split($0, parts, /\{"name": "/)
            for (i = 2; i <= n; i++) {
                h = parts[i]; sub(/".*/, "", h)
                if (index(parts[i], ":" pool "\"") > 0) print h
            }
        }' | head -n 1)
        [ -n "$CINDER_HOST" ] || fail "no Cinder backend of cloud $OS_CLOUD stores into Ceph pool $CINDER_POOL; set CINDER_HOST=host@backend#pool (as cinder get-pools prints) and re-run"
    fi
    case $CINDER_HOST in
    *[\"\\]*) fail "CINDER_HOST '$CINDER_HOST' contains a quote or backslash" ;;
    esac
    say "adopt $COPY_POOL/$COPY_IMAGE into Cinder host $CINDER_HOST${VOLUME_NAME:+ as '$VOLUME_NAME'}"
    BODY=$(printf '{"volume": {"host": "%s", %s}}' "$CINDER_HOST" "$MANAGE_FIELDS")
    OUT=$(api POST "$CINDER/manageable_volumes" "$BODY" "$V38" 2>&1) || fail "Cinder refused to manage $COPY_POOL/$COPY_IMAGE: $OUT"
    VOLUME_ID=$(printf '%s\n' "$OUT" | json_lines | sed -n 's/^ *"id": *"\([0-9a-f-]\{36\}\)".*/\1/p' | head -n 1)
    [ -n "$VOLUME_ID" ] || fail "Cinder's answer names no volume: $OUT"
fi
volume_available() {
    _st=$(openstack volume show -f value -c status "$VOLUME_ID" 2>&1) || {
        PROGRESS=$_st
        return 1
    }
    PROGRESS="status $_st"
    case $_st in
    available) return 0 ;;
    error*) fail "volume $VOLUME_ID ended in '$_st' (see openstack volume show $VOLUME_ID; the cinder-volume log says why)" ;;
    esac
    return 1
}
wait_until "volume $VOLUME_ID to be available" volume_available
say "volume $VOLUME_ID is available (Cinder renamed the RBD image to volume-$VOLUME_ID)"
"#,
                    );
                }
                Step::RegisterImage { name, .. } => {
                    let r = m.register.as_ref().ok_or(BundleError::Unsupported {
                        step: "register_image",
                        reason: "the plan has no registration".into(),
                    })?;
                    let target = m.copy_target();
                    let _ = writeln!(
                        s,
                        "IMAGE_NAME={}\nMIN_DISK={}\nLOCATION_TAIL={}",
                        sh_quote(name),
                        r.min_disk_gib,
                        sh_quote(&format!(
                            "{}/{}/{}",
                            url_part(&target.pool.pool),
                            url_part(&target.image),
                            url_part(&r.snapshot)
                        ))
                    );
                    s.push_str(
                        r#"FSID=$3
case $FSID in
*[!0-9a-f-]* | '') fail "'$FSID' is not a Ceph fsid" ;;
esac
GLANCE=$(endpoint image)
GLANCE=${GLANCE%/}
find_image() {
    openstack image list --property "$MARKER_KEY=$PLAN_ID" -f value -c ID -c Status 2>/dev/null | head -n 1
}
FOUND=$(find_image)
IMAGE_ID=${FOUND%% *}
case $FOUND in
*' active')
    say "already registered as image $IMAGE_ID"
    ;;
'')
    say "register $COPY_POOL/$COPY_IMAGE as image '$IMAGE_NAME' at rbd://$FSID/$LOCATION_TAIL"
    IMAGE_ID=$(openstack image create --disk-format raw --container-format bare --min-disk "$MIN_DISK" --property "$MARKER_KEY=$PLAN_ID" -f value -c id "$IMAGE_NAME") || fail "cannot create image '$IMAGE_NAME'"
    ;;
esac
if [ "$(openstack image show -f value -c status "$IMAGE_ID")" != active ]; then
    PATCH=$(printf '[{"op": "add", "path": "/locations/-", "value": {"url": "rbd://%s/%s", "metadata": {}}}]' "$FSID" "$LOCATION_TAIL")
    OUT=$(api PATCH "$GLANCE/v2/images/$IMAGE_ID" "$PATCH" 'Content-Type: application/openstack-images-v2.1-json-patch' 2>&1) || fail "Glance refused the location of image $IMAGE_ID: $OUT (glance-api needs show_multiple_locations = True)"
fi
image_active() {
    _st=$(openstack image show -f value -c status "$IMAGE_ID" 2>&1) || return 1
    PROGRESS="status $_st"
    [ "$_st" = active ]
}
wait_until "image $IMAGE_ID to be active" image_active
say "image $IMAGE_ID is active"
"#,
                    );
                }
                Step::CheckMinDisk { min_gib } => {
                    let _ = writeln!(
                        s,
                        "HAVE_MIN=$(openstack image show -f value -c min_disk \"$IMAGE_ID\")\n[ \"$HAVE_MIN\" -ge {min_gib} ] || fail \"image $IMAGE_ID has min_disk $HAVE_MIN GiB, less than the source volume's {min_gib} GiB; set it: openstack image set --min-disk {min_gib} $IMAGE_ID\"\nsay \"min_disk $HAVE_MIN GiB is at least the source volume's {min_gib} GiB\""
                    );
                }
                other => {
                    return Err(BundleError::Unsupported {
                        step: other.kind(),
                        reason: "not a step of the tenant script".into(),
                    })
                }
            }
        }
        let _ = writeln!(
            s,
            "\nsay \"done. NEXT: the Ceph source admin runs the cleanup (this line carries no secret):\"\nprintf '    sh ./%s %s\\n' {} \"$HANDOFF\"",
            sh_quote(Script::Cleanup.file_name())
        );
        Ok(())
    }

    fn cleanup(&self, s: &mut String) -> Result<(), BundleError> {
        let p = self.plan;
        let original = p.facts.features;
        let (_, lost) = plan_restore(original, original);
        let lost = p
            .steps
            .iter()
            .find_map(|st| match st {
                Step::RestoreFeatures { lost, .. } => Some(*lost),
                _ => None,
            })
            .unwrap_or(lost);
        let before: Vec<String> = p
            .facts
            .mirror_snapshots_before
            .iter()
            .map(u64::to_string)
            .collect();
        let _ = writeln!(s, "# facts recorded by the plan's read-only preflight");
        let _ = writeln!(s, "ORIGINAL_FEATURES={}", sh_quote(&names(original)));
        if !self.steps.is_empty() {
            let _ = writeln!(
                s,
                "RESTORABLE_FEATURES={}",
                sh_quote(&names(original - lost))
            );
        }
        if self
            .steps
            .iter()
            .any(|&i| p.steps[i] == Step::DisableMirroring)
        {
            let _ = writeln!(s, "MIRROR_SNAPSHOTS_BEFORE={}", sh_quote(&before.join(" ")));
        }
        s.push_str(
            r#"say "the plan recorded the source's original features: $ORIGINAL_FEATURES"
check_verified_handoff "usage: sh ./$SCRIPT VERIFIED_SHA256 COPY_IMAGE_ID DESTINATION_FSID VERIFICATION_TOKEN" "$@"
VERIFIED=$1
DEST_FSID=$3
need rbd
need sha256sum
# the copy is on another cluster: a handoff naming this cluster's own fsid is not a copy
if command -v ceph >/dev/null 2>&1 && SRC_FSID=$(src_ceph fsid 2>/dev/null) && [ -n "$SRC_FSID" ]; then
    [ "$SRC_FSID" != "$DEST_FSID" ] || fail "the destination fsid $DEST_FSID given is the fsid of the source cluster $SRC_CLUSTER itself: that is no copy on another cluster. Pass the line 2-destination-ceph-admin.sh printed; nothing was changed"
fi
say "handoff of the verified copy: image id $2 on the cluster with fsid $DEST_FSID"
INFO=$(src_image info 2>&1) || fail "cannot read $SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE as client.$SRC_ID: $INFO"
MSTATE=$(mirroring_of "$INFO" state)
[ -n "$MSTATE" ] || MSTATE=disabled
if [ "$MSTATE" = enabled ]; then
    [ "$(mirroring_of "$INFO" primary)" = true ] || fail "$SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE is not primary; nothing is changed"
fi
say "checking the verified digest against the source (reads the whole image)"
DIGEST=$(sha256_of src_image export --no-progress -)
[ "$DIGEST" = "$VERIFIED" ] || fail "the digest given ($VERIFIED) is not the source's ($DIGEST): the copy was not verified against this image as it is now. Nothing was changed; mirroring stays on so the replica is kept"
say "the verified copy's digest equals the source's: cleaning up"
"#,
        );
        if self.steps.is_empty() {
            s.push_str("say \"nothing to clean up: the image was mirrored before this migration, so mirroring and features stay as they are\"\n");
        }
        for &i in self.steps {
            self.step_header(s, i);
            match &p.steps[i] {
                Step::DisableMirroring => s.push_str(
                    r#"if [ "$MSTATE" = enabled ]; then
    say "disable mirroring of $SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE (rbd-mirror then removes the replica; the verified copy stays)"
    src_image mirror image disable
else
    say "mirroring already disabled"
fi
SNAPS=$(src_image snap ls --all --format json)
for _id in $(mirror_snapshot_ids "$SNAPS" ''); do
    if ! has_word "$MIRROR_SNAPSHOTS_BEFORE" "$_id"; then
        say "remove leftover mirror snapshot $_id"
        src_image snap rm --snap-id "$_id"
    fi
done
"#,
                ),
                Step::RestoreFeatures { .. } => s.push_str(
                    r#"converge_features src_rbd "$SRC_POOL" "$SRC_NAMESPACE" "$SRC_IMAGE" "$RESTORABLE_FEATURES"
NOW=$(features_of "$(src_image info)")
[ "$NOW" = "$RESTORABLE_FEATURES" ] || fail "the source has features '$NOW', expected '$RESTORABLE_FEATURES'"
say "features restored: $NOW"
"#,
                ),
                other => {
                    return Err(BundleError::Unsupported {
                        step: other.kind(),
                        reason: "not a step of the cleanup script".into(),
                    })
                }
            }
        }
        if !self.steps.is_empty()
            && !self
                .steps
                .iter()
                .any(|&i| matches!(p.steps[i], Step::RestoreFeatures { .. }))
        {
            s.push_str(
                r#"NOW=$(features_of "$(src_image info)")
[ "$NOW" = "$RESTORABLE_FEATURES" ] || fail "the source has features '$NOW', expected its original '$RESTORABLE_FEATURES'"
say "features as before: $NOW"
"#,
            );
        }
        if !lost.is_empty() {
            let _ = writeln!(
                s,
                "say {}",
                sh_quote(&format!(
                    "note: {lost} was disabled for the migration and can never be enabled again"
                ))
            );
        }
        s.push_str("\nsay \"done: the migration is complete. The source image itself is kept; deleting it is a separate decision.\"\n");
        Ok(())
    }
}

fn readme(plan: &Plan, scripts: &[(Script, Vec<usize>)], generated_by: &str) -> String {
    let m = &plan.migration;
    let mut r = String::new();
    let _ = writeln!(r, "# Split-role bundle of migration `{}`\n", plan.id);
    let _ = writeln!(
        r,
        "Moves `{}:{}` to `{}:{}` through rbd-mirror ({} mode). Generated by `{generated_by}`\nfrom the same plan that `rbd-relay migrate` runs and `--dry-run` prints.\n",
        m.source.name,
        m.image,
        m.destination.name,
        m.copy_target(),
        m.mode
    );
    if let Some(reg) = &m.register {
        let _ = writeln!(
            r,
            "## Before script 1: the upload (done)\n\nThe OpenStack source tenant admin uploaded the bootable volume to an image in the source\ncloud (Cinder upload-to-image: `openstack image create --volume VOLUME_ID --disk-format raw\n--container-format bare NAME`); its data is `{}:{}`, the image this bundle moves. At the\nend it is registered in cloud `{}` as image '{}' (min_disk {} GiB) at\n`rbd://<{} fsid>/{}/{}`.\n",
            m.source.name,
            m.image,
            reg.cloud,
            reg.name,
            reg.min_disk_gib,
            m.destination.name,
            m.copy_target(),
            reg.snapshot
        );
    }
    let _ = writeln!(r, "## Who runs what, in this order\n");
    let _ = writeln!(
        r,
        "| # | script | who | tools | takes | hands to the next |"
    );
    let _ = writeln!(r, "|---|---|---|---|---|---|");
    for (n, (script, _)) in scripts.iter().enumerate() {
        let (tools, takes, hands) = match script {
            Script::Source => (
                "`rbd`, `sha256sum`",
                "nothing",
                if m.mode == MirrorImageMode::Snapshot {
                    "the source's sha256 and the id of its primary mirror snapshot"
                } else {
                    "the source's sha256"
                },
            ),
            Script::Destination => (
                "`rbd`, `ceph`, `sha256sum`",
                if m.mode == MirrorImageMode::Snapshot {
                    "SOURCE_SHA256 MIRROR_SNAPSHOT_ID"
                } else {
                    "SOURCE_SHA256"
                },
                "only after it verified the copy: the sha256, the copy's image id, the destination fsid and a verification token binding them",
            ),
            Script::Tenant => (
                "`openstack`, `curl`, `sha256sum`",
                "VERIFIED_SHA256 COPY_IMAGE_ID DESTINATION_FSID VERIFICATION_TOKEN",
                "the same four values (passed on)",
            ),
            Script::Cleanup => (
                "`rbd`, `sha256sum` (`ceph` if present)",
                "VERIFIED_SHA256 COPY_IMAGE_ID DESTINATION_FSID VERIFICATION_TOKEN",
                "(last)",
            ),
        };
        let _ = writeln!(
            r,
            "| {} | `{}` | {} | {tools} | {takes} | {hands} |",
            n + 1,
            script.file_name(),
            script.role()
        );
    }
    let _ = writeln!(r, "\nEach script prints, at its end, the exact command line the next role runs. Nothing handed over is a secret.\n");
    let _ = writeln!(r, "## Plan steps by script\n");
    for (script, steps) in scripts {
        let _ = writeln!(r, "`{}`:", script.file_name());
        if steps.is_empty() {
            let _ = writeln!(r, "- (no plan step: the handoff checks only)");
        }
        for &i in steps {
            let st = &plan.steps[i];
            let _ = writeln!(r, "- step {}: {}", i + 1, st.describe(m));
        }
        r.push('\n');
    }
    let _ = writeln!(
        r,
        "## Credentials and overrides\n\n\
         - Ceph scripts use `rbd --conf $X_CONF --cluster $X_CLUSTER --id $X_ID`: the keyring is found the usual way\n  (`/etc/ceph/CLUSTER.client.ID.keyring`). Override with `SRC_CLUSTER`, `SRC_CONF`, `SRC_ID` (scripts 1 and 4)\n  and `DST_CLUSTER`, `DST_CONF`, `DST_ID` (script 2). Defaults: `{}` / `{}` as client `{}`, and `{}` / `{}` as client `{}`.\n\
         - The tenant script uses `openstack` with `OS_CLOUD` (default `{}`) and `curl` (the token goes to curl on stdin).\n\
         - Waits poll every `RBD_RELAY_POLL_INTERVAL` s (default 5) for at most `RBD_RELAY_WAIT_TIMEOUT` s (default 3600).\n\n\
         ## Safety\n\n\
         - Every script checks its preconditions first and stops at the first failed one, changing nothing.\n\
         - Re-running any script is safe: each action checks whether its effect is already there.\n\
         - Nothing on the source changes destructively before the copy is verified: the cleanup script\n  needs the four values script 2 prints only after it verified the copy (the sha256, the copy's\n  image id, the destination fsid and a token binding them to this plan). Given only script 1's\n  digest, a mistyped or another bundle's token, or this cluster's own fsid, it stops and changes\n  nothing. It then recomputes the source's sha256 and refuses unless it equals the verified digest.\n  The token guards against running the scripts out of order or mixing bundles up; it is not a\n  signature.\n\
         - The source image is never deleted.",
        m.source.name,
        m.source.conf.display(),
        m.source.client_id,
        m.destination.name,
        m.destination.conf.display(),
        m.destination.client_id,
        m.adopt
            .as_ref()
            .map(|a| a.cloud.as_str())
            .or(m.register.as_ref().map(|x| x.cloud.as_str()))
            .unwrap_or("-"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use rbd_mirror_core::cloud::AdoptTarget;
    use rbd_mirror_core::plan::{test_support::facts, Adoption, Registration, VolumeMigration};
    use rbd_mirror_core::spec::{ClusterSpec, PoolSpec};

    const HOSTILE_IMAGE: &str = "it's-$(touch_x)-`id`;*-\"q\"";
    const HOSTILE_VOLUME: &str = "my vol 'x' $(rm -rf /) `id`; * \"q\" \\n";

    fn migration(mode: MirrorImageMode) -> VolumeMigration {
        let mut m = VolumeMigration::new(
            ClusterSpec::named("site-a").unwrap(),
            ClusterSpec::named("site-b").unwrap(),
            ImageSpec::new("volumes", HOSTILE_IMAGE).unwrap(),
            PoolSpec::new("cinder").unwrap(),
        );
        m.mode = mode;
        m
    }

    fn volume_plan(mode: MirrorImageMode) -> Plan {
        let mut m = migration(mode);
        m.adopt = Some(Adoption {
            cloud: "site-b-admin".into(),
            target: AdoptTarget::CephPool {
                pool: "cinder".into(),
            },
            name: Some(HOSTILE_VOLUME.into()),
            bootable: false,
        });
        Plan::volume(
            m,
            facts(Features::LAYERING | Features::EXCLUSIVE_LOCK | Features::OBJECT_MAP),
        )
    }

    fn bootable_plan() -> Plan {
        let mut m = migration(MirrorImageMode::Journal);
        m.image = ImageSpec::new("images", "0d3e5c1a-1111-2222-3333-444455556666").unwrap();
        m.into = PoolSpec::new("glance").unwrap();
        m.dest_name = m.image.image.clone();
        m.register = Some(Registration {
            cloud: "site-b-admin".into(),
            name: HOSTILE_VOLUME.into(),
            snapshot: "snap".into(),
            min_disk_gib: 1,
        });
        Plan::volume(m, facts(Features::LAYERING))
    }

    /// Undo [`sh_quote`] the way sh reads a word of single-quoted parts.
    fn sh_unquote(q: &str) -> String {
        let mut out = String::new();
        let mut in_quote = false;
        let mut chars = q.chars();
        while let Some(c) = chars.next() {
            match (in_quote, c) {
                (false, '\'') | (true, '\'') => in_quote = !in_quote,
                (false, '\\') => out.push(chars.next().unwrap()),
                (true, c) => out.push(c),
                (false, c) => panic!("unquoted {c:?} in {q}"),
            }
        }
        assert!(!in_quote, "unterminated quote in {q}");
        out
    }

    #[test]
    fn sh_quote_round_trips_hostile_strings() {
        for s in [
            "",
            "plain",
            "it's",
            "''",
            "$(rm -rf /)",
            "`id`",
            "a; b",
            "*",
            "a\nb",
            "\\'\"",
            HOSTILE_IMAGE,
            HOSTILE_VOLUME,
        ] {
            let q = sh_quote(s);
            assert!(q.starts_with('\'') && q.ends_with('\''), "{q}");
            assert_eq!(sh_unquote(&q), s);
        }
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn every_step_goes_to_exactly_one_script() {
        for plan in [
            volume_plan(MirrorImageMode::Journal),
            volume_plan(MirrorImageMode::Snapshot),
            bootable_plan(),
        ] {
            let b = render(&plan, "rbd-relay bundle volume ...").unwrap();
            let mut seen = vec![0usize; plan.steps.len()];
            for (script, steps) in &b.scripts {
                for &i in steps {
                    seen[i] += 1;
                    assert_eq!(Script::for_step(&plan.steps[i]), *script);
                }
            }
            assert!(seen.iter().all(|&n| n == 1), "{seen:?}");
            // and each step's section is in the file of its script, and only there
            for (i, step) in plan.steps.iter().enumerate() {
                let marker = format!("# --- plan step {}: {} ", i + 1, step.kind());
                let holders: Vec<&str> = b
                    .files
                    .iter()
                    .filter(|f| f.contents.contains(&marker))
                    .map(|f| f.name.as_str())
                    .collect();
                assert_eq!(
                    holders,
                    [Script::for_step(step).file_name()],
                    "step {}",
                    i + 1
                );
            }
        }
    }

    #[test]
    fn scripts_are_in_run_order_with_cleanup_last() {
        let b = render(&volume_plan(MirrorImageMode::Journal), "x").unwrap();
        let names: Vec<&str> = b.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "1-source-ceph-admin.sh",
                "2-destination-ceph-admin.sh",
                "3-tenant-admin.sh",
                "4-source-ceph-admin-cleanup.sh",
                "README.md"
            ]
        );
        let plan = volume_plan(MirrorImageMode::Journal);
        let cleanup = &b.scripts[3];
        assert_eq!(cleanup.0, Script::Cleanup);
        let kinds: Vec<&str> = cleanup.1.iter().map(|&i| plan.steps[i].kind()).collect();
        assert_eq!(kinds, ["disable_mirroring", "restore_features"]);
    }

    #[test]
    fn without_adoption_there_is_no_tenant_script_and_the_handoff_skips_it() {
        let plan = Plan::volume(
            migration(MirrorImageMode::Journal),
            facts(Features::LAYERING),
        );
        let b = render(&plan, "x").unwrap();
        assert!(!b.files.iter().any(|f| f.name == "3-tenant-admin.sh"));
        let dst = &b.files[1].contents;
        assert!(dst.contains("'4-source-ceph-admin-cleanup.sh'"), "{dst}");
    }

    #[test]
    fn names_appear_only_single_quoted() {
        for plan in [volume_plan(MirrorImageMode::Journal), bootable_plan()] {
            let b = render(&plan, "x").unwrap();
            for f in b.files.iter().filter(|f| f.executable) {
                for hostile in [HOSTILE_IMAGE, HOSTILE_VOLUME] {
                    let quoted = sh_quote(hostile);
                    // the only raw occurrences are inside comments or the quoted assignment
                    for line in f.contents.lines().filter(|l| l.contains(hostile)) {
                        assert!(
                            line.starts_with('#') || line.contains(&quoted),
                            "{}: unquoted name in: {line}",
                            f.name
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn no_key_material_in_any_file() {
        let b = render(&volume_plan(MirrorImageMode::Snapshot), "x").unwrap();
        for f in &b.files {
            for needle in ["key =", "AQ", "password", "OS_PASSWORD", "keyring ="] {
                assert!(!f.contents.contains(needle), "{} contains {needle}", f.name);
            }
            // a token is only ever read from openstack into a variable and fed to curl on stdin
            for line in f.contents.lines().filter(|l| l.contains("$TOKEN")) {
                assert!(
                    line.contains("TOKEN=$(openstack token issue")
                        || line.contains("printf 'X-Auth-Token: %s\\n' \"$TOKEN\" | curl")
                        || line.contains("fail \"cannot get a token"),
                    "{}: {line}",
                    f.name
                );
            }
        }
    }

    #[test]
    fn role_scripts_touch_only_their_cluster() {
        let b = render(&volume_plan(MirrorImageMode::Journal), "x").unwrap();
        // the code of a script, without its comments
        let by = |n: &str| {
            b.files
                .iter()
                .find(|f| f.name == n)
                .unwrap()
                .contents
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .collect::<Vec<_>>()
                .join("\n")
        };
        for n in ["1-source-ceph-admin.sh", "4-source-ceph-admin-cleanup.sh"] {
            assert!(!by(n).contains("'site-b'"), "{n}");
            assert!(!by(n).contains("DST_"), "{n}");
            assert!(!by(n).contains("openstack"), "{n}");
        }
        assert!(!by("2-destination-ceph-admin.sh").contains("'site-a'"));
        assert!(!by("2-destination-ceph-admin.sh").contains("SRC_"));
        assert!(!by("3-tenant-admin.sh").contains("rbd "));
    }

    #[test]
    fn facts_are_recorded_in_the_scripts() {
        let b = render(&volume_plan(MirrorImageMode::Journal), "x").unwrap();
        let src = &b.files[0].contents;
        assert!(src.contains("ORIGINAL_FEATURES='layering exclusive-lock object-map'"));
        assert!(src.contains("MIGRATION_FEATURES='layering exclusive-lock object-map journaling'"));
        let cleanup = &b.files[3].contents;
        assert!(cleanup.contains("RESTORABLE_FEATURES='layering exclusive-lock object-map'"));
        let readme = &b.files[4].contents;
        assert!(readme.contains("| 1 | `1-source-ceph-admin.sh` | Ceph source admin |"));
    }

    /// Runs `sh -c SCRIPT` with `stdin`; returns (success, stdout).
    fn sh(script: &str, stdin: &str) -> (bool, String) {
        use std::io::Write;
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    #[test]
    fn every_script_is_valid_sh() {
        for plan in [
            volume_plan(MirrorImageMode::Journal),
            volume_plan(MirrorImageMode::Snapshot),
            bootable_plan(),
            Plan::volume(
                migration(MirrorImageMode::Journal),
                facts(Features::LAYERING),
            ),
        ] {
            for f in render(&plan, "x")
                .unwrap()
                .files
                .iter()
                .filter(|f| f.executable)
            {
                let (ok, _) = sh("sh -n", &f.contents);
                assert!(ok, "{} does not parse", f.name);
            }
        }
    }

    /// The token `verification_token` of the scripts computes, computed here independently.
    fn token(plan_id: &str, digest: &str, copy_id: &str, fsid: &str) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(
            format!("rbd-relay verified copy\n{plan_id}\n{digest}\n{copy_id}\n{fsid}\n").as_bytes(),
        ))
    }

    /// Runs the cleanup script of `plan` with `args`, with fake `rbd` and `ceph` on PATH that
    /// log every call and fail (`ceph fsid` prints `source_fsid`); returns (success, stderr,
    /// the logged calls).
    fn run_cleanup_with_fake_tools(
        plan: &Plan,
        args: &[&str],
        source_fsid: &str,
    ) -> (bool, String, String) {
        let b = render(plan, "x").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("4.sh");
        std::fs::write(
            &script,
            &b.files
                .iter()
                .find(|f| f.name == Script::Cleanup.file_name())
                .unwrap()
                .contents,
        )
        .unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let log = dir.path().join("calls");
        for (tool, body) in [
            ("rbd", "exit 1".to_string()),
            (
                "ceph",
                format!("[ \"$*\" != \"${{*%fsid}}\" ] && echo {source_fsid}"),
            ),
        ] {
            let path = bin.join(tool);
            std::fs::write(
                &path,
                format!(
                    "#!/bin/sh\necho \"{tool} $*\" >>'{}'\n{body}\n",
                    log.display()
                ),
            )
            .unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let out = std::process::Command::new("sh")
            .arg(&script)
            .args(args)
            .env(
                "PATH",
                format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
            )
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            std::fs::read_to_string(&log).unwrap_or_default(),
        )
    }

    #[test]
    fn cleanup_given_only_the_source_scripts_digest_is_refused_before_touching_the_source() {
        let plan = volume_plan(MirrorImageMode::Journal);
        let digest = "a".repeat(64);
        let (ok, err, calls) = run_cleanup_with_fake_tools(&plan, &[&digest], "f-s");
        assert!(!ok);
        assert!(
            err.contains("needs the four values 2-destination-ceph-admin.sh prints after it verified the copy")
                && err.contains("nothing was changed"),
            "{err}"
        );
        assert_eq!(calls, "", "no rbd or ceph call before the refusal");
    }

    #[test]
    fn cleanup_refuses_a_wrong_or_foreign_verification_token_before_touching_the_source() {
        let plan = volume_plan(MirrorImageMode::Journal);
        let digest = "a".repeat(64);
        let fsid = "27a9fbc0-4355-4685-a5cc-ad091ce4fbcc";
        let foreign = token("another-plan", &digest, "10c7e713647", fsid);
        let typo = "b".repeat(64);
        for bad in [&foreign, &typo] {
            let (ok, err, calls) =
                run_cleanup_with_fake_tools(&plan, &[&digest, "10c7e713647", fsid, bad], "f-s");
            assert!(!ok);
            assert!(
                err.contains(&format!("the verification token '{bad}' does not match")),
                "{err}"
            );
            assert_eq!(calls, "", "no rbd or ceph call before the refusal");
        }
        // malformed copy ids and fsids are named
        let (_, err, _) = run_cleanup_with_fake_tools(&plan, &[&digest, "x/y", fsid, &typo], "f-s");
        assert!(err.contains("'x/y' is not an RBD image id"), "{err}");
    }

    #[test]
    fn cleanup_refuses_a_handoff_naming_the_source_clusters_own_fsid() {
        let plan = volume_plan(MirrorImageMode::Journal);
        let digest = "a".repeat(64);
        let own = "2264de0c-3f04-424c-90c8-a185f270321c";
        let t = token(&plan.id, &digest, "10c7e713647", own);
        let (ok, err, calls) =
            run_cleanup_with_fake_tools(&plan, &[&digest, "10c7e713647", own, &t], own);
        assert!(!ok);
        assert!(err.contains("is the fsid of the source cluster"), "{err}");
        assert!(!calls.contains("rbd "), "{calls}");
        // the same handoff with another cluster's fsid passes the handoff check and goes on
        // to read the source (the fake rbd fails that read)
        let other = "27a9fbc0-4355-4685-a5cc-ad091ce4fbcc";
        let t = token(&plan.id, &digest, "10c7e713647", other);
        let (ok, err, calls) =
            run_cleanup_with_fake_tools(&plan, &[&digest, "10c7e713647", other, &t], own);
        assert!(!ok);
        assert!(err.contains("cannot read"), "{err}");
        assert!(calls.contains("rbd ") && calls.contains(" info"), "{calls}");
    }

    #[test]
    fn the_tenant_script_requires_the_verified_copy_handoff_too() {
        let b = render(&volume_plan(MirrorImageMode::Journal), "x").unwrap();
        let t = &b
            .files
            .iter()
            .find(|f| f.name == Script::Tenant.file_name())
            .unwrap()
            .contents;
        assert!(t.contains("check_verified_handoff \"$usage"), "{t}");
        let d = &b
            .files
            .iter()
            .find(|f| f.name == Script::Destination.file_name())
            .unwrap()
            .contents;
        // the handoff is computed after the verify step, never before it
        let verify = d
            .find("plan step 7: verify")
            .or_else(|| d.find(": verify ("))
            .unwrap();
        assert!(d.find("VERIFY_TOKEN=$(verification_token").unwrap() > verify);
    }

    /// `rbd journal status --format json` of a journal-mode image with its rbd-mirror peer
    /// registered (Ceph 16.2), as the test environment printed it.
    const JOURNAL_STATUS: &str = r#"{"minimum_set":0,"active_set":0,"registered_clients":[{"id":"","data":"00000000  02 01 0d 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|\n00000010  00 00 00                                          |...|\n00000013\n","commit_position":{"object_positions":[]},"state":"connected"},{"id":"1747830b-bdf3-4c68-844e-e0018dae6d02","data":"00000000  02 01 38 00 00 00 01 00  00 00 0c 00 00 00 31 30  |..8...........10|\n00000010  31 63 37 65 37 31 33 36  34 37 01 00 00 00 02 00  |1c7e713647......|\n00000020  00 00 00 00 00 00 00 00  00 00 01 00 00 00 06 00  |................|\n00000030  00 00 00 00 00 00 06 00  00 00 00 00 00 00        |..............|\n0000003e\n","commit_position":{"object_positions":[]},"state":"connected"}]}"#;

    #[test]
    fn journal_peer_sync_state_is_read_from_the_client_data() {
        let b = render(&volume_plan(MirrorImageMode::Journal), "x").unwrap();
        let src = &b.files[0].contents;
        let start = src.find("peer_sync_states() {").unwrap();
        let end = start + src[start..].find("\n}\n").unwrap() + 3;
        let f = &src[start..end];
        let run = |json: &str| sh(&format!("{f}\npeer_sync_states"), json).1;
        let peer = "1747830b-bdf3-4c68-844e-e0018dae6d02";
        assert_eq!(run(JOURNAL_STATUS), format!("{peer} replaying\n"));
        // state 0: syncing
        let syncing = JOURNAL_STATUS.replace("34 37 01 00 00 00 02 00", "34 37 00 00 00 00 02 00");
        assert_eq!(run(&syncing), format!("{peer} syncing\n"));
        // a sync point left
        let point = JOURNAL_STATUS.replace(
            "00 00 00 00 00 00 00 00  00 00 01 00",
            "00 00 00 00 00 00 00 00  01 00 01 00",
        );
        assert_eq!(run(&point), format!("{peer} syncing\n"));
        let gone =
            JOURNAL_STATUS.replace(r#""state":"connected"}]"#, r#""state":"disconnected"}]"#);
        assert_eq!(run(&gone), format!("{peer} disconnected\n"));
        let junk = r#"{"registered_clients":[{"id":"x","data":"junk","commit_position":{},"state":"connected"}]}"#;
        assert_eq!(run(junk), "x unknown\n");
    }

    #[test]
    fn glance_location_parts_are_url_encoded() {
        assert_eq!(url_part("a b/c'"), "a%20b%2Fc%27");
        let b = render(&bootable_plan(), "x").unwrap();
        let t = &b
            .files
            .iter()
            .find(|f| f.name == "3-tenant-admin.sh")
            .unwrap()
            .contents;
        assert!(t.contains("LOCATION_TAIL='glance/0d3e5c1a-1111-2222-3333-444455556666/snap'"));
        assert!(t.contains("MIN_DISK=1"));
    }
}
