# shellcheck shell=sh disable=SC2016,SC2034,SC2153
# (a fragment: its variables are used or assigned by the other sections and the rendered
# script, which the tests shellcheck whole without these exceptions but SC2016)
# The Ceph destination admin's scripts of the handover by clone: 2-destination-ceph-admin.sh
# (the replica in sync), 4-destination-ceph-admin-handover.sh (promote, snapshot, clone),
# 6-destination-ceph-admin-verify.sh (the replica's snapshot read, the flatten, the read back),
# 8-destination-ceph-admin-remove-replica.sh and rollback-1-destination-ceph-admin.sh.
# Sections start at a line `#@ NAME` and end before the next one; rbd-mirror-bundle renders them in
# (src/template.rs), so each section's text is what the rendered script holds. Names come only
# from variables assigned above the section, each written once through sh_quote.

#@ functions
need rbd
need ceph
need sha256sum
# what the destination scripts learned, kept beside them: the replica's image id (recorded at
# its promotion) and the clone's (at its creation), so that only those are ever removed
STATE_FILE=${RBD_RELAY_BUNDLE_STATE:-$(dirname "$0")/.destination-ceph-admin.state}
state_get() {
    if [ -s "$STATE_FILE" ]; then
        sed -n "s/^$1 //p" "$STATE_FILE" | tail -n 1
    fi
}
state_set() {
    printf '%s %s\n' "$1" "$2" >>"$STATE_FILE" || fail "cannot write $STATE_FILE (the destination scripts keep the replica's and the clone's image ids there)"
}
image_id_of() { sed -n 's/^[[:space:]]*id: *//p'; }
parent_of() { sed -n 's/^[[:space:]]*parent: *//p'; }
# name_of_id ID: the name of the image with id ID in the copy pool, nothing when there is none
name_of_id() {
    dst_rbd info --pool "$COPY_POOL" --namespace "$COPY_NAMESPACE" --image-id "$1" 2>/dev/null | sed -n "s/^rbd image '\(.*\)':\$/\1/p"
}
# the parent the clone hangs from, as `rbd info` prints it
# shellcheck disable=SC2034 # not every destination script looks at it
CLONE_PARENT="$REPLICA_POOL/${REPLICA_NAMESPACE:+$REPLICA_NAMESPACE/}$REPLICA_IMAGE@$HANDOVER_SNAP"
FSID=$(dst_ceph fsid) || fail "cannot read the fsid of $DST_CLUSTER as client.$DST_ID"
# check_token WHAT ID FSID TOKEN FROM: the handoff of script FROM, for this cluster
check_token() {
    check_image_id "$2"
    check_fsid "$3"
    [ "$(handoff_token "$1" "$2" "$3")" = "$4" ] || fail "the token '$4' does not match image id $2 and fsid $3 for plan $PLAN_ID: it is mistyped or from another migration's bundle. Pass the line $5 of this bundle printed; nothing was changed"
    [ "$3" = "$FSID" ] || fail "the handoff names the cluster with fsid $3, but $DST_CLUSTER is $FSID: run this script against the destination cluster; nothing was changed"
}

#@ sync_arguments
usage="usage: sh ./$SCRIPT"
[ "$MODE" = snapshot ] && usage="$usage MIRROR_SNAPSHOT_ID"
SNAP_ID=${1:-}
if [ "$MODE" = snapshot ]; then
    case $SNAP_ID in
    '' | *[!0-9]*) fail "$usage: the mirror snapshot id is missing or not a number (the Ceph source admin's script printed the line to run); nothing was changed" ;;
    esac
fi
say "checking $DST_CLUSTER as client.$DST_ID (read only)"

#@ sync_preconditions
PROMOTED=no
if RINFO=$(replica info 2>/dev/null) && [ "$(mirroring_of "$RINFO" primary)" = true ]; then
    [ "$(printf '%s\n' "$RINFO" | image_id_of)" = "$(state_get replica_id)" ] || fail "$DST_CLUSTER:$REPLICA_POOL/$REPLICA_IMAGE exists and is primary, not a mirror replica: rbd-mirror cannot create the replica there; rename or remove that image, then re-run"
    PROMOTED=yes
    say "the replica was promoted by an earlier run of 4-destination-ceph-admin-handover.sh: the cutover has started"
else
    dst_rbd ls --pool "$COPY_POOL" --namespace "$COPY_NAMESPACE" >/dev/null 2>&1 || fail "cannot list pool $COPY_POOL on $DST_CLUSTER as client.$DST_ID (does it exist, may this user read it?)"
    if copy info >/dev/null 2>&1; then
        [ "$(copy info | parent_of)" = "$CLONE_PARENT" ] || fail "$DST_CLUSTER:$COPY_POOL/$COPY_IMAGE exists and is not this migration's clone: the destination image cannot be made under that name. Rename or remove it, then re-run"
    fi
    PINFO=$(dst_rbd mirror pool info --pool "$REPLICA_POOL" 2>&1) || fail "cannot read the mirroring of pool $REPLICA_POOL on $DST_CLUSTER: $PINFO"
    [ "$(printf '%s\n' "$PINFO" | sed -n 's/^Mode: *//p')" = image ] || fail "pool $REPLICA_POOL on $DST_CLUSTER does not mirror in image mode; run: rbd --cluster $DST_CLUSTER mirror pool enable $REPLICA_POOL image (and pair it)"
    printf '%s\n' "$PINFO" | grep -q '^UUID:' || fail "pool $REPLICA_POOL on $DST_CLUSTER has no mirror peer; pair it with the source (rbd-relay pair, or rbd mirror pool peer bootstrap import)"
    HEALTH=$(dst_rbd mirror pool status --pool "$REPLICA_POOL" 2>&1 | sed -n 's/^daemon health: *//p')
    [ "$HEALTH" = OK ] || [ "$HEALTH" = WARNING ] || fail "no healthy rbd-mirror daemon for pool $REPLICA_POOL on $DST_CLUSTER (daemon health: ${HEALTH:-unknown}); start rbd-mirror and re-run"
fi
say "preconditions hold"

#@ step_wait_in_sync
if [ "$PROMOTED" = yes ]; then
    say "the replica is promoted; nothing to wait for"
else
    RESYNC_REQUESTED=no
    replica_in_sync() {
        _ri=$(replica info 2>&1) || {
            PROGRESS="no replica yet"
            return 1
        }
        [ "$(mirroring_of "$_ri" primary)" = false ] || {
            PROGRESS="$DST_CLUSTER:$REPLICA_POOL/$REPLICA_IMAGE exists but is not a non-primary replica"
            return 1
        }
        _status=$(replica mirror image status 2>/dev/null) || _status=''
        _state=$(printf '%s\n' "$_status" | sed -n 's/^[[:space:]]*state: *//p' | head -n 1)
        PROGRESS="mirror status ${_state:-unknown}"
        case $(printf '%s\n' "$_status" | sed -n 's/^[[:space:]]*description: *//p' | head -n 1) in
        *split-brain*)
            # a rolled back cutover: the replica was promoted (and written: its handover
            # snapshot), then demoted, and the source promoted again; their histories differ,
            # so rbd-mirror stopped. The source is the one primary: the replica is rebuilt
            # from it (a full sync)
            if replica snap ls --format json | grep -qF "\"name\":\"$HANDOVER_SNAP\""; then
                fail "the replica $DST_CLUSTER:$REPLICA_POOL/$REPLICA_IMAGE has split-brain and still has the handover snapshot $HANDOVER_SNAP: the cutover was not rolled back; run rollback-1-destination-ceph-admin.sh first (nothing was changed)"
            fi
            if [ "$RESYNC_REQUESTED" = no ]; then
                say "the replica has split-brain (it was promoted during a cutover that was rolled back): request its resync from the source, a full sync (rbd-mirror rebuilds it)"
                replica mirror image resync
                RESYNC_REQUESTED=yes
            fi
            PROGRESS="resync of the replica requested"
            return 1
            ;;
        esac
        if [ "$MODE" = snapshot ]; then
            _snaps=$(replica snap ls --all --format json 2>/dev/null) || return 1
            replica_snapshot_complete "$_snaps" "$SNAP_ID" || {
                PROGRESS="mirror snapshot $SNAP_ID not complete on the replica yet; $PROGRESS"
                return 1
            }
        else
            # journal mode: the source script saw the peer replaying; the status (it lags)
            # confirms that the initial sync is over on this side
            [ "$_state" = up+replaying ] || return 1
        fi
    }
    wait_until "the replica $DST_CLUSTER:$REPLICA_POOL/$REPLICA_IMAGE to be in sync" replica_in_sync
    say "the replica is in sync (its initial sync is done; rbd-mirror keeps replicating)"
fi

#@ sync_handoff

# --- handoff: the replica is in sync; the source admin may cut over
REPLICA_ID=$(replica info | image_id_of)
say "replica: image id $REPLICA_ID on the cluster with fsid $FSID"
HANDOFF="$REPLICA_ID $FSID $(handoff_token 'replica in sync' "$REPLICA_ID" "$FSID")"

#@ handover_preconditions
usage="usage: sh ./$SCRIPT REPLICA_IMAGE_ID DESTINATION_FSID DEMOTION_TOKEN"
[ "$#" -ge 3 ] || fail "$usage: this script needs the three values 3-source-ceph-admin-cutover.sh prints once it demoted the source; nothing was changed"
check_token 'source demoted' "$1" "$2" "$3" 3-source-ceph-admin-cutover.sh
RINFO=$(replica info 2>&1) || fail "cannot read the replica $DST_CLUSTER:$REPLICA_POOL/$REPLICA_IMAGE: $RINFO"
[ "$(printf '%s\n' "$RINFO" | image_id_of)" = "$1" ] || fail "$DST_CLUSTER:$REPLICA_POOL/$REPLICA_IMAGE has image id $(printf '%s\n' "$RINFO" | image_id_of), not the replica $1 the handoff names; nothing was changed"
say "preconditions hold: the source is demoted, the replica is image id $1"
roll_back_on_failure

#@ step_promote_replica
state_set replica_id "$1"
if [ "$(mirroring_of "$RINFO" primary)" = true ]; then
    say "the replica is already primary"
else
    say "promote the replica $DST_CLUSTER:$REPLICA_POOL/$REPLICA_IMAGE as soon as it holds everything up to the demotion (without force)"
    # a backlog that rbd-mirror is replaying is waited for, however long; the wait gives
    # up once its status (rewritten every 30 s while it replays) stood still for
    # PROMOTE_PATIENCE seconds
    _start=$(date +%s)
    _changed=$_start
    _told=$_start
    _seen=
    while :; do
        OUT=$(replica mirror image promote 2>&1) && break
        _now=$(date +%s)
        _status=$(replica mirror image status 2>/dev/null | sed -n 's/^[[:space:]]*description: *//p' | head -n 1)
        if [ -n "$_status" ] && [ "$_status" != "$_seen" ]; then
            _seen=$_status
            _changed=$_now
        fi
        [ $((_now - _changed)) -lt "$PROMOTE_PATIENCE" ] || fail "the replica did not catch up with the demoted source within $((_now - _start))s, and rbd-mirror reported no replay progress for $((_now - _changed))s (last: $OUT); is rbd-mirror running on $DST_CLUSTER? (re-running this script is safe)"
        if [ $((_now - _told)) -ge 10 ]; then
            _told=$_now
            say "waiting $((_now - _start))s for rbd-mirror to replay up to the demotion: ${_seen:-no status yet}"
        fi
        sleep 1
    done
    say "promoted after $(($(date +%s) - _start))s"
fi

#@ step_clone_replica
if replica snap ls --format json | grep -qF "\"name\":\"$HANDOVER_SNAP\""; then
    say "snapshot $HANDOVER_SNAP of the replica already there"
else
    say "snapshot $DST_CLUSTER:$REPLICA_POOL/$REPLICA_IMAGE@$HANDOVER_SNAP"
    replica snap create --no-progress --snap "$HANDOVER_SNAP"
fi
if [ "$(replica info --snap "$HANDOVER_SNAP" | sed -n 's/^[[:space:]]*protected: *//p')" != True ]; then
    replica snap protect --snap "$HANDOVER_SNAP"
fi
COPY_ID=$(state_get copy_id)
if CINFO=$(copy info 2>/dev/null); then
    _id=$(printf '%s\n' "$CINFO" | image_id_of)
    [ "$_id" = "$COPY_ID" ] || [ "$(printf '%s\n' "$CINFO" | parent_of)" = "$CLONE_PARENT" ] || fail "$DST_CLUSTER:$COPY_POOL/$COPY_IMAGE exists (image id $_id) and is not this migration's clone; rename or remove it, then re-run"
    COPY_ID=$_id
    state_set copy_id "$COPY_ID"
    say "the clone is already there (image id $COPY_ID)"
elif [ -n "$COPY_ID" ] && [ -n "$(name_of_id "$COPY_ID")" ]; then
    say "the clone (image id $COPY_ID) is already there, now named '$(name_of_id "$COPY_ID")' (adopted by the cloud)"
else
    say "clone it to $DST_CLUSTER:$COPY_POOL/$COPY_IMAGE with features $CLONE_FEATURES"
    clone_replica() {
        set -- --snap "$HANDOVER_SNAP" --dest-pool "$COPY_POOL" --dest-namespace "$COPY_NAMESPACE" --dest "$COPY_IMAGE"
        for _f in $CLONE_CREATE_FEATURES; do
            set -- "$@" --image-feature "$_f"
        done
        replica clone "$@"
    }
    clone_replica
    COPY_ID=$(copy info | image_id_of)
    state_set copy_id "$COPY_ID"
    converge_features dst_rbd "$COPY_POOL" "$COPY_NAMESPACE" "$COPY_IMAGE" "$CLONE_FEATURES"
    NOW=$(features_of "$(copy info)")
    [ "$NOW" = "$CLONE_FEATURES" ] || fail "the clone has features '$NOW', expected '$CLONE_FEATURES'"
fi

#@ step_grow_copy
if CINFO=$(copy info --format json 2>/dev/null); then
    SIZE_NOW=$(printf '%s\n' "$CINFO" | json_lines | sed -n 's/^ *"size": *\([0-9]*\).*/\1/p' | head -n 1)
    [ -n "$SIZE_NOW" ] || fail "cannot read the size of $DST_CLUSTER:$COPY_POOL/$COPY_IMAGE"
    if [ "$SIZE_NOW" -ge "$GROW_BYTES" ]; then
        say "the clone already has $SIZE_NOW bytes (a whole GiB)"
    else
        say "grow the clone from $SIZE_NOW to $GROW_BYTES bytes, the next whole GiB, which Cinder records (every byte stays)"
        copy resize --no-progress --size "${GROW_GIB}G"
    fi
else
    say "the clone is no longer named $COPY_IMAGE (adopted by the cloud): it was grown before"
fi

#@ handover_handoff

# --- handoff: the destination image, usable now (verified, flattened later)
say "the destination image $DST_CLUSTER:$COPY_POOL/$COPY_IMAGE (image id $COPY_ID) is usable now: a clone of the promoted replica, verified and flattened after the handover"
HANDOFF="$COPY_ID $FSID $(handoff_token 'handed over' "$COPY_ID" "$FSID")"

#@ verify_preconditions
usage="usage: sh ./$SCRIPT COPY_IMAGE_ID DESTINATION_FSID HANDOVER_TOKEN"
[ "$#" -ge 3 ] || fail "$usage: this script needs the three values 4-destination-ceph-admin-handover.sh printed (passed on by the tenant admin's script); nothing was changed"
check_token 'handed over' "$1" "$2" "$3" 4-destination-ceph-admin-handover.sh
COPY_NAME=$(name_of_id "$1")
[ -n "$COPY_NAME" ] || fail "no image with id $1 in pool $COPY_POOL on $DST_CLUSTER: the destination image is gone; nothing was changed"
[ "$COPY_NAME" = "$COPY_IMAGE" ] || say "the destination image is now named '$COPY_NAME' (adopted by the cloud)"
current_copy() { dst_rbd "$@" --pool "$COPY_POOL" --namespace "$COPY_NAMESPACE" --image "$COPY_NAME"; }
PARENT=$(current_copy info | parent_of)
[ -z "$PARENT" ] || [ "$PARENT" = "$CLONE_PARENT" ] || fail "$DST_CLUSTER:$COPY_POOL/$COPY_NAME hangs from $PARENT, not from $CLONE_PARENT; nothing was changed"
say "preconditions hold"

#@ step_verify_handover
VERIFIED=$(state_get verified_digest)
if [ -z "$PARENT" ] && [ -n "$VERIFIED" ]; then
    say "verified and flattened by an earlier run (sha256 $VERIFIED)"
    REPLICA_DIGEST=$VERIFIED
else
    [ -n "$PARENT" ] || fail "$DST_CLUSTER:$COPY_POOL/$COPY_NAME has no parent but this script never verified it (see $STATE_FILE); nothing was changed"
    say "sha256 of the replica's handover snapshot $REPLICA_POOL/$REPLICA_IMAGE@$HANDOVER_SNAP (immutable; reads the whole image)"
    REPLICA_DIGEST=$(sha256_of replica export --snap "$HANDOVER_SNAP" --no-progress -)
    say "the replica's handover snapshot: sha256 $REPLICA_DIGEST (the source admin's next script compares it with the demoted source)"
fi

#@ step_flatten_copy
if [ -n "$PARENT" ]; then
    if [ "$(state_get flatten_started)" = yes ]; then
        # a flatten interrupted midway can leave objects the object map calls existing that were
        # never copied up; a second flatten with the map on skips them: flatten without it
        for _f in fast-diff object-map; do
            if has_word "$(features_of "$(current_copy info)")" "$_f"; then
                say "disable feature $_f for the resumed flatten"
                current_copy feature disable "$_f"
            fi
        done
    fi
    state_set flatten_started yes
    say "flatten $DST_CLUSTER:$COPY_POOL/$COPY_NAME (it no longer needs the replica)"
    current_copy flatten --no-progress
fi
HAD_MAP=no
has_word "$(features_of "$(current_copy info)")" object-map && HAD_MAP=yes
converge_features dst_rbd "$COPY_POOL" "$COPY_NAMESPACE" "$COPY_NAME" "$CLONE_FEATURES"
if [ "$HAD_MAP" = no ] && has_word "$CLONE_FEATURES" object-map; then
    say "rebuild the object map"
    current_copy object-map rebuild --no-progress
fi
say "read back: sha256 of the flattened $DST_CLUSTER:$COPY_POOL/$COPY_NAME (reads the whole image)"
# the copy's first SOURCE_SIZE bytes when it was grown for Cinder (step grow_copy): past them, zeros
read_back() {
    if [ -n "${SOURCE_SIZE:-}" ]; then
        current_copy export --no-progress - | head -c "$SOURCE_SIZE"
    else
        current_copy export --no-progress -
    fi
}
HAVE=$(sha256_of read_back)
[ "$HAVE" = "$REPLICA_DIGEST" ] || fail "the flattened copy's sha256 $HAVE differs from the replica's handover snapshot's $REPLICA_DIGEST: the flatten damaged it. The replica and the demoted source are kept; keep the volume out of use and look at it"
state_set verified_digest "$REPLICA_DIGEST"
say "the flattened copy equals the replica's handover snapshot (sha256 $HAVE)"

#@ copy_journal_payload
# the clone took the replica's image metadata, which rbd-mirror copied from the source while the
# migration had the source's journal payload changed: the copy gets the source's own back
if [ "$PAYLOAD_BEFORE_SET" = yes ]; then
    say "image metadata $PAYLOAD_KEY of the copy: the source's own $PAYLOAD_BEFORE"
    current_copy image-meta set "$PAYLOAD_KEY" "$PAYLOAD_BEFORE"
elif current_copy image-meta get "$PAYLOAD_KEY" >/dev/null 2>&1; then
    say "remove image metadata $PAYLOAD_KEY from the copy (the source had none)"
    current_copy image-meta remove "$PAYLOAD_KEY"
fi

#@ verify_handoff

# --- handoff: the digest of the replica's snapshot and of the flattened copy; the source
# admin proves it against the demoted source before releasing it
HANDOFF="$REPLICA_DIGEST $1 $FSID $(verification_token "$REPLICA_DIGEST" "$1" "$FSID")"

#@ remove_preconditions
usage="usage: sh ./$SCRIPT COPY_IMAGE_ID DESTINATION_FSID RELEASE_TOKEN"
[ "$#" -ge 3 ] || fail "$usage: this script needs the three values 7-source-ceph-admin-release.sh prints once it verified and released the source; nothing was changed"
check_token 'source released' "$1" "$2" "$3" 7-source-ceph-admin-release.sh
COPY_NAME=$(name_of_id "$1")
[ -n "$COPY_NAME" ] || fail "no image with id $1 in pool $COPY_POOL on $DST_CLUSTER: the destination image is gone; the replica is kept, nothing was changed"
[ -z "$(dst_rbd info --pool "$COPY_POOL" --namespace "$COPY_NAMESPACE" --image "$COPY_NAME" | parent_of)" ] || fail "$DST_CLUSTER:$COPY_POOL/$COPY_NAME still hangs from the replica: run 6-destination-ceph-admin-verify.sh first; nothing was changed"
say "preconditions hold: the source is released, the destination image $COPY_NAME is flattened"

#@ step_remove_replica
REPLICA_ID=$(state_get replica_id)
if RINFO=$(replica info 2>/dev/null); then
    _id=$(printf '%s\n' "$RINFO" | image_id_of)
    if [ -z "$REPLICA_ID" ] || [ "$_id" != "$REPLICA_ID" ]; then
        say "$DST_CLUSTER:$REPLICA_POOL/$REPLICA_IMAGE has image id $_id, not the replica ${REPLICA_ID:-?} this bundle promoted: left alone"
    else
        _ms=$(mirroring_of "$RINFO" state)
        if [ -n "$_ms" ] && [ "$_ms" != disabled ]; then
            say "disable mirroring of the replica"
            if [ "$(mirroring_of "$RINFO" primary)" = true ]; then
                replica mirror image disable
            else
                replica mirror image disable --force
            fi
        fi
        if replica snap ls --format json | grep -qF "\"name\":\"$HANDOVER_SNAP\""; then
            if [ "$(replica info --snap "$HANDOVER_SNAP" | sed -n 's/^[[:space:]]*protected: *//p')" = True ]; then
                replica snap unprotect --snap "$HANDOVER_SNAP"
            fi
            replica snap rm --no-progress --snap "$HANDOVER_SNAP"
        fi
        # rbd-mirror replicates the source's own snapshots: their copies go with the replica
        # (the source keeps its own), the protected ones unprotected first (by the name in
        # `snap ls` JSON, whose fields come in the order id, name, size, protected); an
        # image with snapshots cannot be removed
        _protected=$(replica snap ls --format json | awk '{ n = split($0, a, /\},\{/); for (i = 1; i <= n; i++) print a[i] }' |
            grep -F '"protected":"true"' | sed -n 's/.*"name":"\(.*\)","size":.*/\1/p' | sed 's/\\"/"/g; s/\\\\/\\/g') || true
        if [ -n "$_protected" ]; then
            printf '%s\n' "$_protected" | while IFS= read -r _s; do
                say "unprotect the replica's copy of the source's snapshot '$_s'"
                replica snap unprotect --snap "$_s"
            done
        fi
        if [ "$(replica snap ls --format json)" != "[]" ]; then
            say "remove the replica's copies of the source's snapshots"
            replica snap purge --no-progress
        fi
        say "remove the replica $DST_CLUSTER:$REPLICA_POOL/$REPLICA_IMAGE (image id $_id)"
        replica rm --no-progress
    fi
else
    say "the replica is already removed"
fi

#@ rollback_destination
say "rolling the cutover back on $DST_CLUSTER (as client.$DST_ID): the clone, the handover snapshot, the replica's promotion"
COPY_ID=$(state_get copy_id)
if CINFO=$(copy info 2>/dev/null); then
    _id=$(printf '%s\n' "$CINFO" | image_id_of)
    if [ "$_id" = "$COPY_ID" ] || [ "$(printf '%s\n' "$CINFO" | parent_of)" = "$CLONE_PARENT" ]; then
        say "remove the clone $DST_CLUSTER:$COPY_POOL/$COPY_IMAGE (image id $_id, made by 4-destination-ceph-admin-handover.sh, not adopted)"
        copy rm --no-progress
    else
        say "$DST_CLUSTER:$COPY_POOL/$COPY_IMAGE (image id $_id) is not this migration's clone: left alone"
    fi
elif [ -n "$COPY_ID" ] && _name=$(name_of_id "$COPY_ID") && [ -n "$_name" ]; then
    fail "the clone (image id $COPY_ID) was adopted by the cloud (it is now named '$_name'): a roll back would pull the image from under the volume. Go forward (6-destination-ceph-admin-verify.sh with the tenant script's line), or have the tenant admin delete the volume first and re-run; nothing was changed"
fi
RINFO=$(replica info 2>&1) || fail "cannot read the replica $DST_CLUSTER:$REPLICA_POOL/$REPLICA_IMAGE: $RINFO"
REPLICA_ID=$(printf '%s\n' "$RINFO" | image_id_of)
if replica snap ls --format json | grep -qF "\"name\":\"$HANDOVER_SNAP\""; then
    if [ "$(replica info --snap "$HANDOVER_SNAP" | sed -n 's/^[[:space:]]*protected: *//p')" = True ]; then
        replica snap unprotect --snap "$HANDOVER_SNAP"
    fi
    say "remove the snapshot $HANDOVER_SNAP of the replica"
    replica snap rm --no-progress --snap "$HANDOVER_SNAP"
fi
if [ "$(mirroring_of "$RINFO" primary)" = true ]; then
    say "demote the replica $DST_CLUSTER:$REPLICA_POOL/$REPLICA_IMAGE"
    replica mirror image demote
else
    say "the replica is not primary"
fi
HANDOFF="$REPLICA_ID $FSID $(handoff_token 'replica demoted' "$REPLICA_ID" "$FSID")"
