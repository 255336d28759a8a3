#!/bin/sh
# test-matrix.sh [RELEASE...]: the cross-version real tests (cli/tests/matrix_real.rs) with
# site-a on the host's Ceph (Pacific) and site-b on each newer RELEASE (default: reef
# tentacle), one pair per release.
#
# Each pair runs in private mount and network namespaces: its own loopback, its own /etc/ceph
# (a tmpfs) and its own state directory ($MATRIX_DIR/env, default /var/tmp/rbd-relay-matrix),
# so a test environment already running on the host (fixed ports, /etc/ceph) is not touched.
# The namespace has no route to the package archive: the chroots (cached in
# $MATRIX_DIR/rbd-relay-chroots) and the test binaries are built before entering it.
# Output of each release: $MATRIX_DIR/<release>.log. Needs root.
set -eu
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
dir=${MATRIX_DIR:-/var/tmp/rbd-relay-matrix}
target=${CARGO_TARGET_DIR:-$(pwd)/target}
releases=${*:-reef tentacle}

say() { echo "test-matrix: $*"; }
[ "$(id -u)" = 0 ] || { echo "test-matrix: must run as root (chroots, namespaces, daemons)" >&2; exit 1; }

if ! command -v debootstrap >/dev/null 2>&1; then
  say "installing debootstrap (builds the chroots)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >/dev/null
fi
say "building testenv and the matrix tests"
"$CARGO" build -q -p testenv
"$CARGO" test -q -p rbd-relay --test matrix_real --no-run
testenv="$target/debug/testenv"
mkdir -p "$dir"

failed=""
for release in $releases; do
  say "== $release: chroot (built once, cached in $dir/rbd-relay-chroots)"
  "$testenv" --state-dir "$dir/env" chroot --release "$release"
  log="$dir/$release.log"
  say "== $release: pair up, tests, pair down, in private namespaces (log: $log)"
  rc=0
  # shellcheck disable=SC2016 # the inner script expands its own variables
  unshare --mount --net --propagation private env TESTENV="$testenv" RELEASE="$release" \
    RBD_RELAY_TESTENV_DIR="$dir/env" CARGO="$CARGO" CARGO_TARGET_DIR="$target" sh -c '
    set -eu
    ip link set lo up
    mount -t tmpfs tmpfs /etc/ceph
    trap "\"\$TESTENV\" down" EXIT
    "$TESTENV" up --site-b-release "$RELEASE"
    "$TESTENV" status
    RBD_RELAY_MATRIX_RELEASE="$RELEASE" "$CARGO" test --offline -q -p rbd-relay --test matrix_real \
      -- --ignored --test-threads=2 --nocapture
  ' >"$log" 2>&1 || rc=$?
  grep -E "release:|matrix |matrix:|test result|panicked|^test .* (ok|FAILED)$" "$log" || true
  if [ "$rc" = 0 ]; then say "$release: PASS"; else say "$release: FAIL (exit $rc, see $log)"; failed="$failed $release"; fi
done
[ -z "$failed" ] || { say "failed:$failed"; exit 1; }
say "all passed: pacific -> $releases"
