#!/bin/sh
# Runs the bench on a private pair of its own, in private namespaces (never the shared
# environment): `sudo unshare --mount --net --propagation private \
#     tools/bench/scripts/bench-private.sh OBJECTSTORE SIZES OUT`
# e.g. `... bench-private.sh bluestore 4096 /work/bench-out/bench-bluestore-4096.md`.
# Bluestore's block files go to $BENCH_VAR (default /work/bench-var, bind-mounted on
# /var/tmp); memstore's state to a tmpfs. Each bluestore OSD runs on a loop device with
# discard (RBD_RELAY_TESTENV_BLUESTORE_LOOP=1 unless set otherwise), so the disk holds what
# the pair holds now (at 8 GiB: about 4x the image), not everything the run ever wrote. For
# 8 GiB images give each OSD room: RBD_RELAY_TESTENV_BLUESTORE_GIB=36.
# Arguments after OUT go to the bench (e.g. --journal-tunings testenv,ceph-default,tuned).
# Needs release builds: cargo build --release -p bench -p testenv (T = their target dir).
set -u
STORE=$1 SIZES=$2 OUT=$3
shift 3
T=${CARGO_TARGET_DIR:-target}
VAR=${BENCH_VAR:-/work/bench-var}
ip link set lo up
mount -t tmpfs tmpfs /etc/ceph
if [ "$STORE" = bluestore ]; then
  rm -rf "$VAR"; mkdir -p "$VAR"; mount --bind "$VAR" /var/tmp
else
  mount -t tmpfs tmpfs /var/tmp
fi
unset RBD_RELAY_TESTENV_DIR
[ "$STORE" = bluestore ] && export RBD_RELAY_TESTENV_BLUESTORE_LOOP="${RBD_RELAY_TESTENV_BLUESTORE_LOOP:-1}"
"$T/release/testenv" up --objectstore "$STORE" || exit 1
eval "$("$T/release/testenv" env)"
"$T/release/bench" --size-mib "$SIZES" --out "$OUT" "$@"
rc=$?
"$T/release/testenv" down
[ "$STORE" = bluestore ] && rm -rf "$VAR"/*
exit $rc
