# shellcheck shell=sh disable=SC2016,SC2034,SC2153
# (a fragment: its variables are used or assigned by the other sections and the rendered
# script, which the tests shellcheck whole without these exceptions but SC2016)
# Shell functions of the Ceph scripts (1, 2 and 4): feature convergence, mirror snapshots,
# the cluster access of each side.
# Sections start at a line `#@ NAME` and end before the next one; rbd-mirror-bundle renders them in
# (src/template.rs), so each section's text is what the rendered script holds. Names come only
# from variables assigned above the section, each written once through sh_quote.

#@ functions
# converge_features RBD_FN POOL NAMESPACE IMAGE WANTED: disable what WANTED lacks (dependents
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
# mirror_snapshots JSON: the mirror snapshots of an `rbd snap ls --all --format json` output,
# one per line: ID STATE COMPLETE PRIMARY_SNAP_ID (STATE primary, non-primary,
# primary-demoted...; COMPLETE true or false; PRIMARY_SNAP_ID - when the snapshot names none)
mirror_snapshots() {
    printf '%s\n' "$1" | awk '{
        n = split($0, parts, /\{"id":/)
        for (i = 2; i <= n; i++) {
            p = parts[i]
            if (index(p, "\"type\":\"mirror\"") == 0) continue
            id = p
            sub(/[^0-9].*/, "", id)
            state = "-"
            if (match(p, /"state":"[^"]*"/)) state = substr(p, RSTART + 9, RLENGTH - 10)
            complete = index(p, "\"complete\":true") > 0 ? "true" : "false"
            psid = "-"
            if (match(p, /"primary_snap_id":[0-9]+/)) psid = substr(p, RSTART + 18, RLENGTH - 18)
            print id, state, complete, psid
        }
    }'
}

# sync_points JSON: rbd-mirror's journal sync points of an `rbd snap ls --all --format json`
# output (user snapshots named exactly .rbd-mirror.UUID.UUID, UUIDs in lower-case text
# form), one per line: ID NAME
sync_points() {
    printf '%s\n' "$1" | awk '{
        n = split($0, parts, /\{"id":/)
        for (i = 2; i <= n; i++) {
            p = parts[i]
            if (index(p, "\"type\":\"user\"") == 0) continue
            if (!match(p, /"name":"\.rbd-mirror\.[0-9a-f.-]*"/)) continue
            name = substr(p, RSTART + 8, RLENGTH - 9)
            rest = substr(name, 13)
            if (length(rest) != 73 || substr(rest, 37, 1) != ".") continue
            bad = 0
            for (k = 0; k < 2; k++) {
                u = substr(rest, 1 + 37 * k, 36)
                for (c = 1; c <= 36; c++) {
                    ch = substr(u, c, 1)
                    dash = (c == 9 || c == 14 || c == 19 || c == 24)
                    if (dash && ch != "-") bad = 1
                    if (!dash && index("0123456789abcdef", ch) == 0) bad = 1
                }
            }
            if (bad) continue
            id = p
            sub(/[^0-9].*/, "", id)
            print id, name
        }
    }'
}

#@ source_cluster
src_ceph() { ceph --conf "$SRC_CONF" --cluster "$SRC_CLUSTER" --id "$SRC_ID" "$@"; }
src_rbd() { rbd --conf "$SRC_CONF" --cluster "$SRC_CLUSTER" --id "$SRC_ID" "$@"; }
# the source pool's objects (rbd-mirror's watch on rbd_mirroring)
src_rados() { rados --conf "$SRC_CONF" --cluster "$SRC_CLUSTER" --id "$SRC_ID" --pool "$SRC_POOL" --namespace "$SRC_NAMESPACE" "$@"; }
src_image() { src_rbd "$@" --pool "$SRC_POOL" --namespace "$SRC_NAMESPACE" --image "$SRC_IMAGE"; }
# remove the source's mirror snapshots this migration made: every one not named in
# MIRROR_SNAPSHOTS_BEFORE (those were there before it began); and, once mirroring of the
# source is off, rbd-mirror's journal sync points (user snapshots .rbd-mirror.UUID.UUID)
# not named in SYNC_POINTS_BEFORE: a disable as an image sync starts can leave one
remove_leftover_mirror_snapshots() {
    _snaps=$(src_image snap ls --all --format json)
    for _id in $(mirror_snapshots "$_snaps" | cut -d ' ' -f 1); do
        if ! has_word "$MIRROR_SNAPSHOTS_BEFORE" "$_id"; then
            say "remove leftover mirror snapshot $_id"
            src_image snap rm --snap-id "$_id"
        fi
    done
    [ "$(mirroring_of "$(src_image info)" state)" != enabled ] || return 0
    sync_points "$_snaps" | while read -r _id _name; do
        if ! has_word "$SYNC_POINTS_BEFORE" "$_name"; then
            say "remove rbd-mirror's leftover sync point $_name"
            src_image snap rm --snap-id "$_id"
        fi
    done
}
#@ destination_cluster
dst_rbd() { rbd --conf "$DST_CONF" --cluster "$DST_CLUSTER" --id "$DST_ID" "$@"; }
dst_ceph() { ceph --conf "$DST_CONF" --cluster "$DST_CLUSTER" --id "$DST_ID" "$@"; }
replica() { dst_rbd "$@" --pool "$REPLICA_POOL" --namespace "$REPLICA_NAMESPACE" --image "$REPLICA_IMAGE"; }
copy() { dst_rbd "$@" --pool "$COPY_POOL" --namespace "$COPY_NAMESPACE" --image "$COPY_IMAGE"; }

#@ payload_functions
# read_payload: the source's journal payload override (image metadata $PAYLOAD_KEY, a live
# journal-mode migration's) into PAYLOAD_NOW and PAYLOAD_SET (yes, or no when the image has
# none); stops on any other failure to read it
read_payload() {
    if PAYLOAD_NOW=$(src_image image-meta get "$PAYLOAD_KEY" 2>/dev/null); then
        PAYLOAD_SET=yes
    else
        _rc=$?
        # rbd exits 2 (ENOENT) for a key the image does not have
        [ "$_rc" -eq 2 ] || fail "cannot read image metadata $PAYLOAD_KEY of $SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE as client.$SRC_ID (rbd exit $_rc)"
        PAYLOAD_NOW=''
        PAYLOAD_SET=no
    fi
}
# converge_payload SET VALUE: bring the source's $PAYLOAD_KEY to VALUE (SET=yes) or to no
# key at all (SET=no); a re-run finds it done
converge_payload() {
    read_payload
    if [ "$1" = yes ]; then
        if [ "$PAYLOAD_SET" = yes ] && [ "$PAYLOAD_NOW" = "$2" ]; then
            say "image metadata $PAYLOAD_KEY is already $2"
        else
            say "set image metadata $PAYLOAD_KEY = $2 on $SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE"
            src_image image-meta set "$PAYLOAD_KEY" "$2"
        fi
    elif [ "$PAYLOAD_SET" = yes ]; then
        say "remove image metadata $PAYLOAD_KEY from $SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE (it had none before the migration)"
        src_image image-meta remove "$PAYLOAD_KEY"
    else
        say "image metadata $PAYLOAD_KEY is already not set"
    fi
}
