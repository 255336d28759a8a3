# shellcheck shell=sh disable=SC2016,SC2034,SC2153
# (a fragment: its variables are used or assigned by the other sections and the rendered
# script, which the tests shellcheck whole without these exceptions but SC2016)
# The Ceph source admin's scripts of the handover by clone: 3-source-ceph-admin-cutover.sh
# (the live wait, the demotion), 7-source-ceph-admin-release.sh (the proof against the demoted
# source, the release) and rollback-2-source-ceph-admin.sh (the source promoted again).
# Sections start at a line `#@ NAME` and end before the next one; rbd-mirror-bundle renders them in
# (src/template.rs), so each section's text is what the rendered script holds. Names come only
# from variables assigned above the section, each written once through sh_quote.

#@ functions
# source_state: reads the source's info into INFO, MSTATE (enabled, disabled...) and PRIMARY
# (true or false; empty when mirroring is off)
source_state() {
    INFO=$(src_image info 2>&1) || fail "cannot read $SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE as client.$SRC_ID: $INFO"
    MSTATE=$(mirroring_of "$INFO" state)
    [ -n "$MSTATE" ] || MSTATE=disabled
    PRIMARY=$(mirroring_of "$INFO" primary)
}
# not_own_fsid FSID: stop when FSID is the source cluster's own (checked when `ceph` is here)
not_own_fsid() {
    if command -v ceph >/dev/null 2>&1 && _own=$(src_ceph fsid 2>/dev/null) && [ -n "$_own" ]; then
        [ "$_own" != "$1" ] || fail "the destination fsid $1 given is the fsid of the source cluster $SRC_CLUSTER itself: pass the line the destination admin's script printed; nothing was changed"
    fi
}

#@ users
# source_watchers: one line "CLIENT_ID ADDRESS" per watcher of the source (`rbd status`)
source_watchers() {
    _json=$(src_image status --format json 2>&1) || {
        printf '%s\n' "$_json" >&2
        return 1
    }
    printf '%s\n' "$_json" | awk '{
        n = split($0, w, /\{"address":"/)
        for (i = 2; i <= n; i++) {
            a = w[i]
            sub(/".*/, "", a)
            if (match(w[i], /"client":[0-9]+/)) print substr(w[i], RSTART + 9, RLENGTH - 9), a
        }
    }'
}
# peer_client_ids: the client ids of the rbd-mirror daemons that reach this cluster: the
# watchers of the pool's rbd_mirroring object (every rbd-mirror daemon that mirrors the pool
# watches it, with the same client it opens the images with; `profile rbd` may read it) and
# the sessions of cephx user $MIRROR_PEER_CLIENT (the destination rbd-mirror's user here) in
# every monitor's session list (that needs more than `profile rbd`); fails when neither can
# be read
peer_client_ids() {
    _read=no
    if command -v rados >/dev/null 2>&1 && _lw=$(src_rados listwatchers rbd_mirroring 2>/dev/null); then
        _read=yes
        printf '%s\n' "$_lw" | sed -n 's/^watcher=[^ ]* client\.\([0-9][0-9]*\) .*/\1/p'
    fi
    if _dump=$(src_ceph mon dump --format json 2>/dev/null); then
        _mons=$(printf '%s\n' "$_dump" | sed 's/.*"mons":\[//' | json_lines | sed -n 's/^"name":"\([^"]*\)"$/\1/p')
        for _m in $_mons; do
            _s=$(src_ceph tell "mon.$_m" sessions --format json 2>/dev/null) || continue
            _read=yes
            printf '%s\n' "$_s" | awk -v want="$MIRROR_PEER_CLIENT" '{
                n = split($0, p, /\{"name":/)
                for (i = 2; i <= n; i++)
                    if (index(p[i], "\"entity_name\":\"" want "\"") > 0 && match(p[i], /"global_id":[0-9]+/))
                        print substr(p[i], RSTART + 12, RLENGTH - 12)
            }'
        done
    fi
    [ "$_read" = yes ]
}
# read_users: USERS, the source's watchers but the destination rbd-mirror's own watch (it
# watches a primary image in snapshot mode only), as "client.ID (ADDRESS)" words; USERS_UNSURE
# is yes when rbd-mirror's watch could not be told apart (every watcher is then counted).
# It stops the script when the watchers cannot be read; try_read_users returns 1 instead
# (USERS as it was).
read_users() {
    try_read_users || fail "cannot read the watchers of $SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE"
}
try_read_users() {
    _w=$(source_watchers) || return 1
    USERS=''
    USERS_UNSURE=no
    [ -n "$_w" ] || return 0
    _peer=''
    if [ "$MODE" = snapshot ]; then
        _peer=$(peer_client_ids) || {
            _peer=''
            USERS_UNSURE=yes
        }
        # one id a line (each watch of each daemon): words for has_word
        _peer=$(printf '%s\n' "$_peer" | tr '\n' ' ')
    fi
    USERS=$(printf '%s\n' "$_w" | while read -r _c _a; do
        has_word "$_peer" "$_c" || printf 'client.%s (%s) ' "$_c" "$_a"
    done)
    USERS=${USERS% }
}
unsure_note() {
    if [ "$USERS_UNSURE" = yes ] && [ -n "$USERS" ]; then
        say "note: client.$SRC_ID can read neither the watchers of the rbd_mirroring object of pool $SRC_POOL (with rados) nor the monitors' sessions, so the destination rbd-mirror's own watch ($MIRROR_PEER_CLIENT; snapshot mode) cannot be told apart from an instance's and counts as a user: if the only users left are rbd-mirror's, re-run with go"
    fi
}

#@ cutover_preconditions
need rbd
need sha256sum
usage="usage: sh ./$SCRIPT REPLICA_IMAGE_ID DESTINATION_FSID SYNC_TOKEN [go]"
[ "$#" -ge 3 ] || fail "$usage: this script needs the three values 2-destination-ceph-admin.sh prints once the replica is in sync (run the scripts in order and pass the line the previous one printed); nothing was changed"
check_image_id "$1"
check_fsid "$2"
[ "$(handoff_token 'replica in sync' "$1" "$2")" = "$3" ] || fail "the sync token '$3' does not match replica image id $1 and destination fsid $2 for plan $PLAN_ID: it is mistyped or from another migration's bundle. Pass the line 2-destination-ceph-admin.sh of this bundle printed; nothing was changed"
GO=no
case ${4:-} in
'') ;;
go) GO=yes ;;
*) fail "$usage: the fourth argument can only be 'go' (cut over even though the source is in use); nothing was changed" ;;
esac
not_own_fsid "$2"
say "checking $SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE as client.$SRC_ID"
source_state
[ "$MSTATE" = enabled ] || fail "mirroring of $SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE is '$MSTATE', not enabled: run 1-source-ceph-admin.sh first (or the migration was released or rolled back and abandoned); nothing was changed"
[ "$(mirroring_of "$INFO" mode)" = "$MODE" ] || fail "$SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE is mirrored in $(mirroring_of "$INFO" mode) mode, the plan says $MODE; nothing was changed"
if [ "$PRIMARY" = true ] && [ "$MODE" = journal ]; then
    # the exact journal-mode signal: the rbd-mirror peer is replaying (its initial sync is done)
    _js=$(src_image journal status --format json 2>&1) || fail "cannot read the journal of $SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE: $_js"
    case $(printf '%s\n' "$_js" | journal_completion) in
    'pending no-peer' | 'pending syncing '* | 'pending disconnected '*)
        fail "the replica of $SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE is not in sync (the rbd-mirror peer is not replaying its journal: $(printf '%s\n' "$_js" | journal_completion)); wait, check rbd-mirror on the destination and re-run; nothing was changed"
        ;;
    esac
fi
say "preconditions hold: mirroring enabled ($MODE mode), primary: $PRIMARY"

#@ step_wait_for_cutover
if [ "$PRIMARY" != true ]; then
    say "the source is already demoted: the cutover started in an earlier run"
elif [ "$GO" = yes ]; then
    read_users
    say "told to go ahead${USERS:+ although the source is in use by $USERS (its writes fail from the demotion on)}"
else
    say "live: waiting until $SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE has had no user but rbd-mirror for ${IDLE_FOR}s (shut the instance off or detach the volume; or re-run with go) while rbd-mirror keeps replicating"
    _start=$(date +%s)
    _idle_since=''
    _said=0
    _snap=$_start
    _noted=no
    _misses=0
    while :; do
        # one failed read (a monitor busy or re-electing) is not a reason to stop a wait that
        # may last hours; five in a row are. A failed read never counts as idle.
        if ! try_read_users; then
            _misses=$((_misses + 1))
            [ "$_misses" -lt 5 ] || fail "cannot read the watchers of $SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE as client.$SRC_ID, $_misses times in a row (the rbd error is above): check the source cluster's monitors and re-run. Nothing was changed: the source is primary and rbd-mirror keeps replicating"
            say "warning: cannot read the watchers of $SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE (the rbd error is above); trying again"
            _idle_since=''
            sleep 1
            continue
        fi
        _misses=0
        _now=$(date +%s)
        _elapsed=$((_now - _start))
        if [ -z "$USERS" ]; then
            [ -n "$_idle_since" ] || _idle_since=$_now
            # whole seconds: a difference of IDLE_FOR could be IDLE_FOR - 1 s and a bit,
            # one more second is more than IDLE_FOR s for sure
            if [ $((_now - _idle_since)) -gt "$IDLE_FOR" ]; then
                say "the source has had no user for more than ${IDLE_FOR}s: cutting over"
                break
            fi
        else
            _idle_since=''
            if [ "$_noted" = no ]; then
                unsure_note
                _noted=yes
            fi
            # snapshot mode: a mirror snapshot now and then keeps the delta of the demotion small
            if [ "$MODE" = snapshot ] && [ $((_now - _snap)) -ge 5 ]; then
                src_image mirror image snapshot >/dev/null 2>&1 || say "warning: cannot take a mirror snapshot while waiting; the cutover will sync a larger delta"
                _snap=$_now
            fi
        fi
        [ "$_elapsed" -lt "$WAIT_TIMEOUT" ] || fail "gave up after ${_elapsed}s: $SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE is still in use by $USERS. Shut the instance off or detach the volume and re-run, or re-run with go to cut over while it is in use (its writes fail from the demotion on); raise RBD_RELAY_WAIT_TIMEOUT to wait longer. Nothing was changed: the source is primary and rbd-mirror keeps replicating"
        if [ $((_now - _said)) -ge "$POLL_INTERVAL" ]; then
            _said=$_now
            if [ -n "$USERS" ]; then
                say "in sync, rbd-mirror replicating; waiting for the cutover (${_elapsed}s): in use by $USERS; shut the instance off or detach the volume, or re-run with go"
            else
                say "in sync, rbd-mirror replicating; waiting for the cutover (${_elapsed}s): no user for $((_now - _idle_since))s of ${IDLE_FOR}s"
            fi
        fi
        sleep 1
    done
fi

#@ cold_users
if [ "$PRIMARY" = true ]; then
    read_users
    if [ "$GO" = yes ]; then
        say "told to go ahead${USERS:+ although the source is in use by $USERS (its writes fail from the demotion on)}"
    elif [ -n "$USERS" ]; then
        unsure_note
        fail "$SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE is in use by $USERS; the demotion would make its writes fail. Shut the instance off or detach the volume and re-run (or re-run with go). Nothing was changed"
    fi
fi

#@ step_demote_source
if [ "$PRIMARY" = true ]; then
    say "demote $SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE (read-only from here, its data fixed; the roll back scripts promote it again)"
    src_image mirror image demote
else
    say "already demoted"
fi
roll_back_on_failure

#@ cutover_handoff

# --- handoff: the source is demoted; the destination promotes the replica once it holds
# everything up to the demotion
HANDOFF="$1 $2 $(handoff_token 'source demoted' "$1" "$2")"

#@ release_preconditions
say "the plan recorded the source's original features: $ORIGINAL_FEATURES"
check_verified_handoff "usage: sh ./$SCRIPT VERIFIED_SHA256 COPY_IMAGE_ID DESTINATION_FSID VERIFICATION_TOKEN" "$@"
VERIFIED=$1
need rbd
need sha256sum
not_own_fsid "$3"
say "handoff of the flattened, read-back copy: image id $2 on the cluster with fsid $3, sha256 $VERIFIED"
source_state
if [ "$MSTATE" = enabled ]; then
    [ "$PRIMARY" = false ] || fail "$SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE is primary: the cutover was rolled back (or never made), so there is nothing to release; nothing was changed"
    say "checking the demoted source against the verified digest (reads the whole image)"
    DIGEST=$(sha256_of src_image export --no-progress -)
    [ "$DIGEST" = "$VERIFIED" ] || fail "the demoted source's sha256 $DIGEST differs from the replica's handover snapshot's $VERIFIED: the handover is not proven. The source stays demoted, unchanged (read-only); nothing was changed. Keep the destination volume out of use and look at both images"
    say "verified: the demoted source's sha256 equals the replica's handover snapshot's and the flattened copy's ($DIGEST)"
    RELEASED=no
else
    say "mirroring of $SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE is already disabled: an earlier run verified and released it"
    RELEASED=yes
fi

#@ step_release_source
if [ "$RELEASED" = no ]; then
    say "disable mirroring of $SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE (forced: it is not primary; it becomes a plain writable image, its data untouched)"
    src_image mirror image disable --force
fi
remove_leftover_mirror_snapshots

#@ release_handoff

# --- handoff: the source is released; the destination may remove the replica
HANDOFF="$2 $3 $(handoff_token 'source released' "$2" "$3")"

#@ rollback_preconditions
need rbd
usage="usage: sh ./$SCRIPT REPLICA_IMAGE_ID DESTINATION_FSID DEMOTED_TOKEN"
[ "$#" -ge 3 ] || fail "$usage: this script needs the three values rollback-1-destination-ceph-admin.sh prints once the replica is demoted (two primaries must never exist); nothing was changed"
check_image_id "$1"
check_fsid "$2"
[ "$(handoff_token 'replica demoted' "$1" "$2")" = "$3" ] || fail "the token '$3' does not match replica image id $1 and destination fsid $2 for plan $PLAN_ID: it is mistyped or from another migration's bundle. Pass the line rollback-1-destination-ceph-admin.sh of this bundle printed; nothing was changed"
not_own_fsid "$2"
source_state
[ "$MSTATE" = enabled ] || fail "mirroring of $SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE is '$MSTATE': the source was released (the migration went forward) or never mirrored; nothing to roll back, nothing was changed"

#@ rollback_promote_source
if [ "$PRIMARY" = true ]; then
    say "$SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE is already primary"
else
    say "promote $SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE again (the replica $1 on $2 is demoted)"
    if ! OUT=$(src_image mirror image promote 2>&1); then
        say "promote without force refused ($OUT); forcing (the replica is demoted, so no second primary exists)"
        src_image mirror image promote --force
    fi
fi
source_state
[ "$PRIMARY" = true ] || fail "$SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE is still not primary"
say "rolled back: $SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE is primary and writable again, its data untouched; mirroring stays on. To try the cutover again: the Ceph destination admin re-runs 2-destination-ceph-admin.sh (it has the replica, which was promoted meanwhile, rebuilt from the source by a full sync) and the Ceph source admin 3-source-ceph-admin-cutover.sh with the line it prints"
