# shellcheck shell=sh disable=SC2016,SC2034,SC2153
# (a fragment: its variables are used or assigned by the other sections and the rendered
# script, which the tests shellcheck whole without these exceptions but SC2016)
# The body of 3-tenant-admin.sh (OpenStack tenant admin): the handoff check, Cinder
# manage-existing or Glance registration, and the wait for the volume or image.
# Sections start at a line `#@ NAME` and end before the next one; rbd-mirror-bundle renders them in
# (src/template.rs), so each section's text is what the rendered script holds. Names come only
# from variables assigned above the section, each written once through sh_quote.

#@ verified_handoff

need openstack
need curl
need sha256sum
usage="usage: sh ./$SCRIPT VERIFIED_SHA256 COPY_IMAGE_ID DESTINATION_FSID VERIFICATION_TOKEN"
check_verified_handoff "$usage (the Ceph destination admin's script printed the line to run)" "$@"
HANDOFF="$1 $2 $3 $4"

#@ handover_handoff

need openstack
need curl
need sha256sum
usage="usage: sh ./$SCRIPT COPY_IMAGE_ID DESTINATION_FSID HANDOVER_TOKEN"
[ "$#" -ge 3 ] || fail "$usage: this script needs the three values 4-destination-ceph-admin-handover.sh prints once the destination image is made (the Ceph destination admin's script printed the line to run); nothing was changed"
check_image_id "$1"
check_fsid "$2"
[ "$(handoff_token 'handed over' "$1" "$2")" = "$3" ] || fail "the token '$3' does not match image id $1 and fsid $2 for plan $PLAN_ID: it is mistyped or from another migration's bundle. Pass the line 4-destination-ceph-admin-handover.sh of this bundle printed; nothing was changed"
HANDOFF="$1 $2 $3"
roll_back_on_failure

#@ preconditions
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

#@ step_adopt_volume
CINDER=$(endpoint volumev3)
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
if [ -n "$IMAGE_METADATA" ]; then
    # manage-existing takes the bootable flag but no image metadata (what Nova reads when it
    # boots from the volume): set it now, on every run (idempotent), so that a run stopped
    # in between sets it when re-run
    say "set the source volume's image metadata on volume $VOLUME_ID"
    OUT=$(api POST "$CINDER/volumes/$VOLUME_ID/action" "$IMAGE_METADATA" 2>&1) || fail "Cinder refused to set the image metadata of volume $VOLUME_ID: $OUT (re-run this script: it finds the volume again and sets it)"
fi

#@ step_register_image
FSID=$3
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

#@ step_check_min_disk
HAVE_MIN=$(openstack image show -f value -c min_disk "$IMAGE_ID")
[ "$HAVE_MIN" -ge "$MIN_GIB" ] || fail "image $IMAGE_ID has min_disk $HAVE_MIN GiB, less than the source volume's $MIN_GIB GiB; set it: openstack image set --min-disk $MIN_GIB $IMAGE_ID"
say "min_disk $HAVE_MIN GiB is at least the source volume's $MIN_GIB GiB"
