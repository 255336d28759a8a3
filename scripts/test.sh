#!/bin/sh
# test.sh - the whole test suite, real-cluster tier included.
#
# 1. builds everything; 2. starts the real test environment (two Ceph clusters with
# rbd-mirror, two OpenStack clouds) with `testenv up --openstack`; 3. runs every test of the
# workspace against it (the real-cluster tests never skip: without the environment they
# fail); 4. tears the environment down, also on failure (KEEP_ENV=1 keeps it for debugging).
# When tests fail, the daemons' logs (Ceph, rbd-mirror, Cinder, Glance, Keystone) are first
# copied into target/test-logs/ and the last lines of the ones that matter most are printed,
# so the cause of a failed run survives the teardown, followed by `testenv status` (each
# site's health: a full OSD, a down daemon). Last come the failed tests' own
# messages (where each panicked, and the end of its output), so that a CI page that shows
# only the end of the output still shows why.
# The output of `cargo test` is also written to $TEST_LOG (default target/test.log).
set -eu
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
TEST_LOG=${TEST_LOG:-target/test.log}
mkdir -p "$(dirname "$TEST_LOG")"

if ! command -v "$CARGO" >/dev/null 2>&1; then
  echo "test.sh: cargo not found; install a Rust toolchain (rustup) first" >&2
  exit 1
fi

echo "== build"
"$CARGO" build --workspace --all-targets --quiet
TESTENV=target/debug/testenv

down() {
  if [ "${KEEP_ENV:-0}" != 1 ]; then
    echo "== testenv down"
    "$TESTENV" down || true
  fi
}
trap down EXIT INT TERM

# copy every daemon log of the environment into target/test-logs/ and print the tails (and
# ERROR lines) of rbd-mirror, cinder-volume and glance-api
keep_logs() {
  envdir=${RBD_RELAY_TESTENV_DIR:-/var/tmp/rbd-relay-testenv}
  out=target/test-logs
  rm -rf "$out" && mkdir -p "$out"
  (cd "$envdir" 2>/dev/null && find . -name '*.log' -not -path '*/store.db/*' -type f) |
    while read -r f; do
      mkdir -p "$out/$(dirname "$f")"
      cp "$envdir/$f" "$out/$f" 2>/dev/null || true
    done
  echo "== daemon logs kept in $out"
  find "$out" -type f \( -name 'rbd-mirror.log' -o -name 'cinder-volume.log' -o -name 'glance-api.log' \) |
    sort | while read -r f; do
      echo "---- $f: ERROR lines (last 20)"
      grep -E ' (ERROR|CRITICAL) ' "$f" | tail -n 20 || true
      echo "---- $f: last 30 lines"
      tail -n 30 "$f"
    done
}

# the failed tests of $TEST_LOG: for each, the lines where it panicked (with the 15 lines
# after) and the last 40 lines of its captured output
failed_tests() {
  echo "== failed tests"
  grep -E '^test .* \.\.\. FAILED$' "$TEST_LOG" || true
  awk '
    function flush(   i, from) {
      if (name == "") return
      print "---- " name ": where it panicked"
      for (i = 1; i <= n; i++) if (buf[i] ~ /panicked at/) { from = i; for (; i <= n && i < from + 16; i++) print buf[i] }
      print "---- " name ": last 40 lines of its output"
      for (i = (n > 40 ? n - 39 : 1); i <= n; i++) print buf[i]
      name = ""; n = 0
    }
    /^---- .* stdout ----$/ { flush(); name = $2; next }
    name != "" && (/^failures:$/ || /^---- /) { flush(); next }
    name != "" { buf[++n] = $0 }
    END { flush() }' "$TEST_LOG"
}

echo "== testenv up --openstack"
start=$(date +%s)
"$TESTENV" up --openstack
echo "   (took $(( $(date +%s) - start )) s)"
"$TESTENV" status

echo "== cargo test (unit + real clusters + real clouds)"
# tests share the one environment; two test threads keep the 2-core budget
rcfile=$(mktemp)
{ "$CARGO" test --workspace --no-fail-fast -- --test-threads="${TEST_THREADS:-2}" 2>&1; echo $? > "$rcfile"; } | tee "$TEST_LOG"
rc=$(cat "$rcfile" 2>/dev/null || true); rm -f "$rcfile"
rc=${rc:-1} # no exit code recorded: count it as a failure
if [ "$rc" != 0 ]; then
  keep_logs
  echo "== environment status (health of both sites, daemons, mirroring)"
  "$TESTENV" status || true
  failed_tests
  echo "test.sh: some tests failed (exit $rc; full output in $TEST_LOG)" >&2
  exit "$rc"
fi
echo "test.sh: all tests passed"
