# shellcheck shell=sh disable=SC2016,SC2034,SC2153
# (a fragment: its variables are used or assigned by the other sections and the rendered
# script, which the tests shellcheck whole without these exceptions but SC2016)
# The body of 4-source-ceph-admin-cleanup.sh (Ceph source admin): the verified-copy handoff
# check, the digest check, then mirroring off and the features restored.
# Sections start at a line `#@ NAME` and end before the next one; rbd-mirror-bundle renders them in
# (src/template.rs), so each section's text is what the rendered script holds. Names come only
# from variables assigned above the section, each written once through sh_quote.

#@ preconditions
say "the plan recorded the source's original features: $ORIGINAL_FEATURES"
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

#@ nothing_to_clean_up
say "nothing to clean up: the image was mirrored before this migration, so mirroring and features stay as they are"

#@ step_disable_mirroring
if [ "$MSTATE" = enabled ]; then
    say "disable mirroring of $SRC_CLUSTER:$SRC_POOL/$SRC_IMAGE (rbd-mirror then removes the replica; the verified copy stays)"
    src_image mirror image disable
else
    say "mirroring already disabled"
fi
remove_leftover_mirror_snapshots

#@ step_restore_features
converge_features src_rbd "$SRC_POOL" "$SRC_NAMESPACE" "$SRC_IMAGE" "$RESTORABLE_FEATURES"
NOW=$(features_of "$(src_image info)")
[ "$NOW" = "$RESTORABLE_FEATURES" ] || fail "the source has features '$NOW', expected '$RESTORABLE_FEATURES'"
say "features restored: $NOW"

#@ step_restore_journal_payload
converge_payload "$PAYLOAD_BEFORE_SET" "$PAYLOAD_BEFORE"
say "image metadata $PAYLOAD_KEY as before the migration: ${PAYLOAD_BEFORE:-not set} (the migration had it at $JOURNAL_PAYLOAD)"

#@ features_as_before
NOW=$(features_of "$(src_image info)")
[ "$NOW" = "$RESTORABLE_FEATURES" ] || fail "the source has features '$NOW', expected its original '$RESTORABLE_FEATURES'"
say "features as before: $NOW"
