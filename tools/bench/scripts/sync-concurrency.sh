#!/bin/sh
# A/B: rbd-mirror's image sync time with the source image's rbd_concurrent_management_ops
# (image-level config override) at its default vs raised. Private bluestore pair.
# run from the repository root (release testenv built): unshare --mount --net --propagation private \
#     sh tools/bench/scripts/sync-concurrency.sh SIZE_MIB "default 32" ROUNDS
# Journal-mode times are taken from `mirror image status` (up+replaying), which the daemon
# reports late: read only the snapshot-mode rows.
set -u
SIZE=$1 VALUES=$2 ROUNDS=$3
T=${CARGO_TARGET_DIR:-target}/release
VAR=${BENCH_VAR:-/work/bench-var}
ip link set lo up
mount -t tmpfs tmpfs /etc/ceph
rm -rf "$VAR"; mkdir -p "$VAR"; mount --bind "$VAR" /var/tmp
unset RBD_RELAY_TESTENV_DIR
"$T/testenv" up --objectstore bluestore >/dev/null 2>&1 || { echo "testenv up failed"; exit 1; }
eval "$("$T/testenv" env)"
P=volumes
now() { date +%s.%N; }
el() { echo "$(now) - $1" | bc; }
echo "creating ${SIZE} MiB of random data"
head -c "$((SIZE << 20))" /dev/urandom | rbd --cluster site-a import --no-progress - $P/src || exit 1
wait_gone() { while rbd --cluster site-b info $P/src >/dev/null 2>&1; do sleep 0.2; done; }
synced_journal() {
  rbd --cluster site-b mirror image status $P/src 2>/dev/null | grep -q 'state: *up+replaying'
}
synced_snapshot() {
  rbd --cluster site-b snap ls --all --format json $P/src 2>/dev/null | grep -q '"complete":true'
}
for r in $(seq 1 "$ROUNDS"); do
  t0=$(now)
  rbd --cluster site-a export --no-progress $P/src - | rbd --cluster site-b import --no-progress - $P/floor
  echo "round $r floor $(el "$t0")"
  rbd --cluster site-b rm --no-progress $P/floor
  for mode in journal snapshot; do
    for v in $VALUES; do
      if [ "$v" = default ]; then rbd --cluster site-a config image remove $P/src rbd_concurrent_management_ops 2>/dev/null
      else rbd --cluster site-a config image set $P/src rbd_concurrent_management_ops "$v"; fi
      t0=$(now)
      [ $mode = journal ] && rbd --cluster site-a feature enable $P/src journaling
      rbd --cluster site-a mirror image enable $P/src $mode >/dev/null
      while ! synced_$mode; do sleep 0.1; done
      echo "round $r $mode conc=$v synced $(el "$t0")"
      rbd --cluster site-a mirror image disable $P/src >/dev/null
      [ $mode = journal ] && rbd --cluster site-a feature disable $P/src journaling
      wait_gone
      rbd --cluster site-a snap purge --no-progress $P/src >/dev/null 2>&1
    done
  done
done
"$T/testenv" down >/dev/null 2>&1
rm -rf "${VAR:?}"/*
