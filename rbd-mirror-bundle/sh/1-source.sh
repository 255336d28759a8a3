# shellcheck shell=sh disable=SC2016,SC2034,SC2153
# (a fragment: its variables are used or assigned by the other sections and the rendered
# script, which the tests shellcheck whole without these exceptions but SC2016)
# The body of 1-source-ceph-admin.sh (Ceph source admin): checks, features, mirroring, the
# completion wait and the digest handoff.
# Sections start at a line `#@ NAME` and end before the next one; rbd-mirror-bundle renders them in
# (src/template.rs), so each section's text is what the rendered script holds. Names come only
# from variables assigned above the section, each written once through sh_quote.

#@ preconditions

[ "$#" -eq 0 ] || fail "usage: sh ./$SCRIPT (no arguments): it is the first script of the bundle and takes none; the line it prints at its end is the input of 2-destination-ceph-admin.sh. Nothing was changed"
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
        say "the image is in use and the plan accepts a live migration: $IN_USE_NOTE"
    fi
fi
POOL_MODE=$(src_rbd mirror pool info --pool "$SRC_POOL" 2>&1 | sed -n 's/^Mode: *//p')

#@ pool_mode_image_or_disabled
[ "$POOL_MODE" = image ] || [ "$POOL_MODE" = disabled ] || fail "pool $SRC_POOL on $SRC_CLUSTER mirrors in mode '$POOL_MODE', not image"

#@ pool_mode_image
[ "$POOL_MODE" = image ] || fail "pool $SRC_POOL on $SRC_CLUSTER mirrors in mode '$POOL_MODE', not image; run: rbd --cluster $SRC_CLUSTER mirror pool enable $SRC_POOL image (or generate the bundle with --enable-pool-mirroring)"

#@ preconditions_hold
say "preconditions hold: features '$FEATURES', mirroring $MSTATE, pool mode $POOL_MODE"

#@ step_preflight
say "(the checks above)"

#@ step_enable_pool_mirroring
if [ "$POOL_MODE" = disabled ]; then
    say "enable image-mode mirroring on pool $SRC_POOL of $SRC_CLUSTER"
    src_rbd mirror pool enable --pool "$SRC_POOL" image
else
    say "pool $SRC_POOL already mirrors in image mode"
fi

#@ step_set_journal_payload
read_payload
if [ "$PAYLOAD_SET" = "$PAYLOAD_BEFORE_SET" ] && [ "$PAYLOAD_NOW" = "$PAYLOAD_BEFORE" ]; then
    say "image metadata $PAYLOAD_KEY as the plan recorded it: ${PAYLOAD_BEFORE:-not set}"
elif [ "$PAYLOAD_SET" = yes ] && [ "$PAYLOAD_NOW" = "$JOURNAL_PAYLOAD" ]; then
    say "image metadata $PAYLOAD_KEY is already this migration's $JOURNAL_PAYLOAD (its original, ${PAYLOAD_BEFORE:-not set}, goes back with the features)"
else
    fail "$SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE has image metadata $PAYLOAD_KEY '${PAYLOAD_NOW:-not set}', the plan recorded '${PAYLOAD_BEFORE:-not set}'; the image changed since the plan: generate a new bundle"
fi
# before journaling is enabled: the running writer's librbd reads it when it opens the new
# journal (entries up to JOURNAL_PAYLOAD bytes, so rbd-mirror's replay keeps up)
converge_payload yes "$JOURNAL_PAYLOAD"

#@ step_enable_features
if [ "$MSTATE" = enabled ]; then
    say "features already set"
else
    converge_features src_rbd "$SRC_POOL" "$SRC_NAMESPACE" "$SRC_IMAGE" "$MIGRATION_FEATURES"
fi

#@ step_enable_mirroring
if [ "$MSTATE" = enabled ]; then
    say "mirroring already enabled"
else
    say "enable $MODE-mode mirroring of $SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE"
    src_image mirror image enable "$MODE"
fi

#@ handoff_journal

# --- handoff: wait until the rbd-mirror peer has registered in the source journal, finished
# its initial sync and its commit position equals the master's (the exact journal-mode signal
# readable on the source, decided by journal_completion; `rbd mirror image status` lags
# 10-22 s and is shown for progress only)
PEER_STATE_UNKNOWN=no
journal_caught_up() {
    _js=$(src_image journal status --format json 2>/dev/null) || {
        _js=$(src_image journal status --format json 2>&1 >/dev/null)
        PROGRESS="cannot read the journal: $_js"
        return 1
    }
    _status=$(src_image mirror image status 2>/dev/null | sed -n -e 's/^[[:space:]]*state: *//p' -e 's/^[[:space:]]*description: *//p' | tr '\n' ' ')
    _decision=$(printf '%s\n' "$_js" | journal_completion)
    case $_decision in
    complete)
        return 0
        ;;
    'complete unknown-state')
        PEER_STATE_UNKNOWN=yes
        return 0
        ;;
    'pending no-peer')
        PROGRESS="no rbd-mirror peer has registered in the journal yet${_status:+; $_status}"
        ;;
    'pending syncing '*)
        PROGRESS="the peer is still in its initial image sync${_status:+; $_status}"
        ;;
    'pending disconnected '*)
        PROGRESS="the peer's journal client is disconnected (is rbd-mirror running on the destination?)${_status:+; $_status}"
        ;;
    *)
        PROGRESS="the peer has not replayed up to the master position yet${_status:+; $_status}"
        ;;
    esac
    return 1
}
wait_until "the replica to catch up with $SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE" journal_caught_up
if [ "$PEER_STATE_UNKNOWN" = yes ]; then
    say "the rbd-mirror peer's commit position equals the master position (its sync state could not be read: the destination script's content check decides)"
else
    say "the rbd-mirror peer has finished its initial sync and its commit position equals the master position"
fi

#@ handoff_snapshot

# --- handoff: the newest complete primary mirror snapshot (the destination admin waits for
# its complete non-primary copy on the replica) and the digest
primary_snapshot_ready() {
    _snaps=$(src_image snap ls --all --format json 2>&1) || {
        PROGRESS="cannot list snapshots: $_snaps"
        return 1
    }
    SNAP_ID=$(newest_primary_mirror_snapshot "$_snaps")
    [ -n "$SNAP_ID" ] || {
        PROGRESS="no complete primary mirror snapshot yet"
        return 1
    }
}
wait_until "a complete primary mirror snapshot of $SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE" primary_snapshot_ready
say "newest primary mirror snapshot: id $SNAP_ID"

#@ handoff_journal_replaying

# --- handoff: wait until the rbd-mirror peer has registered in the source journal and
# finished its initial sync: it replays the journal from then on (the handover by clone hands
# no digest here: the demoted source is compared with the replica's snapshot after the
# handover; the promotion waits until the replica holds everything up to the demotion)
journal_replaying() {
    _js=$(src_image journal status --format json 2>/dev/null) || {
        _js=$(src_image journal status --format json 2>&1 >/dev/null)
        PROGRESS="cannot read the journal: $_js"
        return 1
    }
    case $(printf '%s\n' "$_js" | journal_completion) in
    complete | 'complete unknown-state' | 'pending behind '*)
        return 0
        ;;
    'pending no-peer')
        PROGRESS="no rbd-mirror peer has registered in the journal yet"
        ;;
    'pending disconnected '*)
        PROGRESS="the peer's journal client is disconnected (is rbd-mirror running on the destination?)"
        ;;
    *)
        PROGRESS="the peer is still in its initial image sync"
        ;;
    esac
    return 1
}
wait_until "the initial sync of $SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE" journal_replaying
say "the rbd-mirror peer has finished its initial sync and replays the journal"

#@ digest_handoff
say "computing the sha256 of $SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE (reads the whole image)"
DIGEST=$(sha256_of src_image export --no-progress -)
say "source sha256: $DIGEST"
HANDOFF="$DIGEST${SNAP_ID:+ $SNAP_ID}"

#@ sync_handoff
HANDOFF=${SNAP_ID:-}
