#!/bin/sh
# demo.sh - the main job on local clusters, end to end:
#   1. build rbd-relay and testenv;
#   2. start the real test environment: Ceph clusters site-a (source) and site-b
#      (destination) with rbd-mirror, and two OpenStack clouds (Keystone, Cinder, Glance);
#   3. write a volume with random data into site-a's mirrored pool `volumes`;
#   4. migrate it with `rbd-relay migrate volume` into site-b's Cinder pool `cinder`:
#      enable journaling + mirroring, wait for the replica (exact signal, live progress),
#      copy, verify (sha256 of both sides), disable mirroring, restore the features;
#   5. show the result and where to look. The environment stays up for you to explore;
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

VOL=demo-volume-$(date +%s)
say "write a ${SIZE_MB} MiB volume with random data: site-a volumes/$VOL"
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
head -c $((SIZE_MB << 20)) /dev/urandom > "$tmp"
rbd --cluster site-a import --no-progress "$tmp" "volumes/$VOL"
rbd --cluster site-a info "volumes/$VOL" | sed -n '1,/features/p'
echo "sha256 of the data written: $(sha256sum "$tmp" | cut -c1-64)"

say "the plan (dry run: changes nothing)"
rbd-relay migrate volume --from site-a --to site-b "volumes/$VOL" --into cinder --dry-run

say "migrate it"
rbd-relay migrate volume --from site-a --to site-b "volumes/$VOL" --into cinder

say "result"
echo "destination copy (site-b cinder/$VOL):"
rbd --cluster site-b info "cinder/$VOL" | sed -n '1,/features/p'
echo "sha256 of the destination copy: $(rbd --cluster site-b export --no-progress "cinder/$VOL" - | sha256sum | cut -c1-64)"
echo "source (site-a volumes/$VOL) features after cleanup:"
rbd --cluster site-a info "volumes/$VOL" | grep features
rbd-relay list

say "where to look"
cat <<TXT
  eval "\$(target/debug/testenv env)"     # cluster names, confs, pools, clouds.yaml
  rbd --cluster site-b ls -l cinder       # the migrated volume
  target/debug/rbd-relay list             # recorded migrations (state files)
  target/debug/testenv status             # what runs
  make env-down                           # stop everything and wipe it
TXT
