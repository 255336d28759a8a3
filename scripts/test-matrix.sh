#!/bin/sh
# test-matrix.sh [RELEASE...]: the cross-version real tests (cli/tests/matrix_real.rs) with
# site-a on the host's Ceph (Pacific) and site-b on each newer RELEASE (default: reef
# tentacle), one pair per release.
#
# Each pair runs in private mount, network and pid namespaces: its own loopback, its own
# /etc/ceph (a tmpfs), its own state directory ($MATRIX_DIR/env, default
# /var/tmp/rbd-relay-matrix), the shared environment's state directory hidden under an empty
# tmpfs, and its own pids (nothing in it can signal a process outside it; when the namespace
# ends, whatever still runs in it ends too). So a test environment already running on the
# host (fixed ports, /etc/ceph, /var/tmp/rbd-relay-testenv) is not touched.
# The namespace has no route to the package archive: the chroots (cached in
# $MATRIX_DIR/rbd-relay-chroots) and the test binaries are built before entering it.
# For reef, the pair runs with the clouds (`up --openstack`): site-b's Cinder and Glance run
# from the same trixie chroot (OpenStack 2025.1) beside the host's Zed source cloud, and the
# adopt/bootable tests of matrix_real plus one split-role bundle run of bundle_real (volume,
# journal mode) run too. Tentacle's sid chroot carries no cloud: Ceph only.
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
"$CARGO" test -q -p rbd-relay --test matrix_real --test bundle_real --no-run
testenv="$target/debug/testenv"
mkdir -p "$dir"
# the shared environment's state directory (testenv's default), hidden inside the namespaces
shared_env=/var/tmp/rbd-relay-testenv
case "$(cd "$dir" && pwd)/env" in
  "$shared_env"|"$shared_env"/*) echo "test-matrix: MATRIX_DIR must not hold the shared environment ($shared_env)" >&2; exit 1 ;;
esac

failed=""
for release in $releases; do
  say "== $release: chroot (built once, cached in $dir/rbd-relay-chroots)"
  with_clouds=""
  [ "$release" = reef ] && with_clouds=--openstack
  "$testenv" --state-dir "$dir/env" chroot --release "$release" $with_clouds
  log="$dir/$release.log"
  say "== $release: pair up, tests, pair down, in private namespaces (log: $log)"
  rc=0
  started=$(date +%s)
  # shellcheck disable=SC2016 # the inner script expands its own variables
  unshare --mount --net --pid --fork --mount-proc --propagation private env TESTENV="$testenv" \
    RELEASE="$release" RBD_RELAY_TESTENV_DIR="$dir/env" CARGO="$CARGO" CARGO_TARGET_DIR="$target" \
    WITH_CLOUDS="$with_clouds" SHARED_ENV="$shared_env" sh -c '
    set -eu
    ip link set lo up
    mount -t tmpfs tmpfs /etc/ceph
    if [ -d "$SHARED_ENV" ]; then mount -t tmpfs tmpfs "$SHARED_ENV"; fi
    trap "\"\$TESTENV\" down" EXIT
    trap "exit 130" INT TERM HUP
    "$TESTENV" up --site-b-release "$RELEASE" $WITH_CLOUDS
    "$TESTENV" status
    if [ -n "$WITH_CLOUDS" ]; then
      RBD_RELAY_MATRIX_RELEASE="$RELEASE" "$CARGO" test --offline -q -p rbd-relay --test matrix_real \
        -- --ignored --test-threads=2 --nocapture
      # one bundle run by the split roles (host rbd/openstack clients, Reef + 2025.1 destination)
      "$CARGO" test --offline -q -p rbd-relay --test bundle_real \
        -- --exact volume_bundle_run_by_split_roles_ends_like_migrate --nocapture
    else
      # without clouds: the Ceph-only tests (the cloud tests check their releases and fail)
      RBD_RELAY_MATRIX_RELEASE="$RELEASE" "$CARGO" test --offline -q -p rbd-relay --test matrix_real \
        -- --ignored --test-threads=2 --nocapture --skip adopt --skip bootable
    fi
  ' >"$log" 2>&1 || rc=$?
  took=$(($(date +%s) - started))
  grep -E "release:|matrix |matrix:|test result|panicked|^test .* (ok|FAILED)$" "$log" || true
  if [ "$rc" = 0 ]; then
    say "$release: PASS (pair up, tests, pair down: ${took} s)"
  else
    say "$release: FAIL (exit $rc after ${took} s, see $log)"
    failed="$failed $release"
  fi
done
[ -z "$failed" ] || { say "failed:$failed"; exit 1; }
say "all passed: pacific -> $releases"
