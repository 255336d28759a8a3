#!/bin/sh
# demo.sh - the main job on local clusters, end to end:
#   1. build rbd-relay and testenv;
#   2. start the real test environment: Ceph clusters site-a (source) and site-b
#      (destination) with rbd-mirror, and two OpenStack clouds (Keystone, Cinder, Glance);
#   3. write a volume with random data into site-a's mirrored pool `volumes`;
#   4. migrate it with `rbd-relay migrate volume --adopt` into site-b's Cinder pool `cinder`:
#      enable journaling + mirroring, wait for the replica (exact signal, live progress),
#      copy, verify (sha256 of both sides), disable mirroring, restore the features, then
#      adopt the copy in the destination cloud's Cinder (manage-existing);
#   5. the bootable path: a bootable volume of the source cloud goes through Glance
#      (upload-to-image, mirror, copy into the destination Glance pool, snap + protect,
#      register by rbd:// location, min_disk check);
#   6. split roles: the same kind of migration written as one shell script per role
#      (rbd-relay bundle), for teams where nobody holds every key; not run here;
#   7. show the result and where to look. The environment stays up for you to explore;
#      `make env-down` (or target/debug/testenv down) stops it.
set -eu
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
SIZE_MB=${SIZE_MB:-256}

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "build"
"$CARGO" build --quiet -p rbd-relay -p testenv
BIN=$(pwd)/target/debug
export PATH="$BIN:$PATH"

say "start the test environment (two Ceph clusters + rbd-mirror + two OpenStack clouds)"
testenv up --openstack
testenv status
# cluster names, pools and OS_CLIENT_CONFIG_FILE (clouds site-a-admin, site-b-admin, ...)
eval "$(testenv env)"

VOL=demo-volume-$(date +%s)
say "write a ${SIZE_MB} MiB volume with random data: site-a volumes/$VOL"
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
head -c $((SIZE_MB << 20)) /dev/urandom > "$tmp"
rbd --cluster site-a import --no-progress "$tmp" "volumes/$VOL"
rbd --cluster site-a info "volumes/$VOL" | sed -n '1,/features/p'
echo "sha256 of the data written: $(sha256sum "$tmp" | cut -c1-64)"

say "the plan (dry run: changes nothing)"
rbd-relay migrate volume --from site-a --to site-b "volumes/$VOL" --into cinder \
  --adopt --os-cloud site-b-admin --name demo-data --dry-run

say "migrate it and adopt it in the destination cloud"
rbd-relay migrate volume --from site-a --to site-b "volumes/$VOL" --into cinder \
  --adopt --os-cloud site-b-admin --name demo-data

say "the bootable path: a bootable volume of the source cloud, through Glance"
BOOT=demo-boot-$(date +%s)
head -c $((64 << 20)) /dev/urandom > "$tmp"
rbd --cluster site-a import --no-progress "$tmp" "volumes/$BOOT"
BOOT_SHA=$(sha256sum "$tmp" | cut -c1-64)
VOLID=$(rbd-relay adopt volume "volumes/$BOOT" --os-cloud site-a-admin --bootable \
  --name demo-boot --output json | jq -r 'select(.result == "ok") | .volume.id')
echo "source cloud volume: $VOLID (bootable, 64 MiB, sha256 $BOOT_SHA)"
rbd-relay migrate bootable --from site-a --to site-b --source-cloud site-a-admin \
  --os-cloud site-b-admin "$VOLID" --into glance --name demo-boot-image

say "split roles: a migration as one script per role (written, not run; see docs/split-roles.md)"
SPLIT=demo-split-$(date +%s)
rbd --cluster site-a create --size 64M "volumes/$SPLIT"
BUNDLE=$(pwd)/target/demo-bundle
rm -rf "$BUNDLE"
rbd-relay bundle volume --from site-a --to site-b "volumes/$SPLIT" --into cinder \
  --adopt --os-cloud site-b-admin --name demo-split --out "$BUNDLE"

say "result"
rbd-relay list
echo "destination Cinder pool (site-b cinder):"
rbd --cluster site-b ls -l cinder
echo "destination Glance pool (site-b glance):"
rbd --cluster site-b ls -l glance

say "where to look"
cat <<TXT
  eval "\$(target/debug/testenv env)"     # cluster names, confs, pools, clouds.yaml
  rbd --cluster site-b ls -l cinder       # the migrated, adopted volume (volume-<id>)
  rbd --cluster site-b ls -l glance       # the bootable volume's image (<image id>@snap)
  target/debug/rbd-relay list             # recorded migrations (state files)
  ls target/demo-bundle; less target/demo-bundle/README.md   # the split-role scripts
  target/debug/testenv status             # what runs
  make env-down                           # stop everything and wipe it
TXT
