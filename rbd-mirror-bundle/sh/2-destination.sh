# shellcheck shell=sh disable=SC2016,SC2034,SC2153
# (a fragment: its variables are used or assigned by the other sections and the rendered
# script, which the tests shellcheck whole without these exceptions but SC2016)
# The body of 2-destination-ceph-admin.sh (Ceph destination admin): checks, the wait for the
# replica, the copy, its features, the verification and the verified-copy handoff.
# Sections start at a line `#@ NAME` and end before the next one; rbd-mirror-bundle renders them in
# (src/template.rs), so each section's text is what the rendered script holds. Names come only
# from variables assigned above the section, each written once through sh_quote.

#@ arguments

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

#@ enable_pool_mirroring
POOL_MODE=$(dst_rbd mirror pool info --pool "$REPLICA_POOL" 2>&1 | sed -n 's/^Mode: *//p')
if [ "$POOL_MODE" = disabled ]; then
    say "enable image-mode mirroring on pool $REPLICA_POOL of $DST_CLUSTER (the plan enables pool mirroring)"
    dst_rbd mirror pool enable --pool "$REPLICA_POOL" image
fi

#@ preconditions
# what this script verified, kept beside it: the copy's image id and digest, so that a re-run
# after the cloud adopted (and renamed) the copy does not copy again
STATE_FILE=${RBD_RELAY_BUNDLE_STATE:-$(dirname "$0")/.2-destination-ceph-admin.state}
COPY_DONE=no
RENAMED=no
REC_ID=''
REC_DIGEST=''
if [ -s "$STATE_FILE" ]; then
    read -r REC_ID REC_DIGEST <"$STATE_FILE" || true
fi
# the copy's first SOURCE_SIZE bytes: past them, a copy grown for Cinder (step grow_copy)
# holds zeros; the whole copy when the plan grows nothing
copy_head() {
    if [ -n "${SOURCE_SIZE:-}" ]; then
        copy export --no-progress - | head -c "$SOURCE_SIZE"
    else
        copy export --no-progress -
    fi
}
if copy info >/dev/null 2>&1; then
    say "$DST_CLUSTER:$COPY_POOL/$COPY_IMAGE exists: checking whether it is this migration's verified copy (reads the whole image)"
    HAVE=$(sha256_of copy_head)
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

#@ step_wait_for_replica
if [ "$COPY_DONE" = yes ]; then
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
            replica_snapshot_complete "$_snaps" "$SNAP_ID" || {
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

#@ step_copy_replica
if [ "$COPY_DONE" = yes ]; then
    say "copy already there"
else
    say "copy $DST_CLUSTER:$REPLICA_POOL/$REPLICA_IMAGE to $DST_CLUSTER:$COPY_POOL/$COPY_IMAGE"
    copy_replica() {
        set -- --dest-pool "$COPY_POOL" --dest-namespace "$COPY_NAMESPACE" --dest "$COPY_IMAGE"
        for _f in $COPY_CREATE_FEATURES; do
            set -- "$@" --image-feature "$_f"
        done
        replica cp "$@"
    }
    copy_replica
fi

#@ step_set_copy_features
if [ "$RENAMED" = yes ]; then
    say "the copy's features were set before it was adopted"
else
    converge_features dst_rbd "$COPY_POOL" "$COPY_NAMESPACE" "$COPY_IMAGE" "$COPY_FEATURES"
    NOW=$(features_of "$(copy info)")
    [ "$NOW" = "$COPY_FEATURES" ] || fail "the copy has features '$NOW', expected '$COPY_FEATURES'"
fi

#@ step_verify
if [ "$COPY_DONE" = yes ]; then
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

#@ step_grow_copy
if [ "$RENAMED" = yes ]; then
    say "the copy was grown before it was adopted"
else
    SIZE_NOW=$(copy info --format json | json_lines | sed -n 's/^ *"size": *\([0-9]*\).*/\1/p' | head -n 1)
    [ -n "$SIZE_NOW" ] || fail "cannot read the size of $DST_CLUSTER:$COPY_POOL/$COPY_IMAGE"
    if [ "$SIZE_NOW" -ge "$GROW_BYTES" ]; then
        say "the copy already has $SIZE_NOW bytes (a whole GiB)"
    else
        say "grow the copy from $SIZE_NOW to $GROW_BYTES bytes, the next whole GiB, which Cinder records (every byte stays)"
        copy resize --no-progress --size "${GROW_GIB}G"
    fi
fi

#@ step_snapshot_and_protect
[ "$RENAMED" = no ] || fail "the copy was renamed (image id $REC_ID); Glance reads it by its name: rename it back to $COPY_IMAGE"
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

#@ verified_handoff

# --- handoff: the verified copy
[ -n "${VERIFIED_COPY_ID:-}" ] || fail "the copy's image id is unknown, so the copy is not verified by this run; re-run this script"
FSID=$(dst_ceph fsid) || fail "cannot read the fsid of $DST_CLUSTER as client.$DST_ID"
say "destination fsid: $FSID; verified copy: image id $VERIFIED_COPY_ID"
VERIFY_TOKEN=$(verification_token "$SOURCE_DIGEST" "$VERIFIED_COPY_ID" "$FSID")
HANDOFF="$SOURCE_DIGEST $VERIFIED_COPY_ID $FSID $VERIFY_TOKEN"
