# shellcheck shell=sh disable=SC2016,SC2034,SC2153
# (a fragment: its variables are used or assigned by the other sections and the rendered
# script, which the tests shellcheck whole without these exceptions but SC2016)
# The body of 1-source-ceph-admin.sh (Ceph source admin): checks, features, mirroring, the
# completion wait and the digest handoff.
# Sections start at a line `#@ NAME` and end before the next one; rbd-mirror-bundle renders them in
# (src/template.rs), so each section's text is what the rendered script holds. Names come only
# from variables assigned above the section, each written once through sh_quote.

#@ preconditions

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

#@ handoff_snapshot

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
