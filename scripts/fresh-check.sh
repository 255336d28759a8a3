#!/bin/sh
# fresh-check.sh - prove the README's two set-up commands on a fresh Debian 12 system.
#
# A green CI can hide a broken first run: CI's machine already has every package. This script
# builds a minimal Debian 12 (bookworm) root file system with debootstrap, copies the project
# into it (the files git knows, as they are in the work tree), and runs, as root inside that
# chroot, exactly what the README says: `make demo`, then `make test`. The chroot starts with
# no Ceph, no OpenStack and no project packages: install-deps.sh must bring them.
#
# What the fresh system has before the two commands: debootstrap's minbase, plus `make` (to run
# them at all) and `ca-certificates` (for crates.io), with the host's local trust anchors
# (/usr/local/share/ca-certificates: a site or proxy CA belongs to the machine, not the project). The Rust toolchain is the host's, mounted
# read-only (the README asks for one; this machine cannot fetch another). Crates are fetched
# afresh into the chroot's own CARGO_HOME.
#
# Needs root and the package archive the host's apt uses. It runs on the host's network (the
# services listen on loopback), so it refuses while a test environment is running here: stop it
# first (`make env-down`). The pristine root file system is cached as a tarball under
# $FRESH_CHECK_DIR (default /var/tmp/rbd-relay-fresh); every run unpacks a new copy of it.
# The log of a run is $FRESH_CHECK_DIR/last-run.log; KEEP_ROOT=1 keeps the chroot for a look.
set -eu
cd "$(dirname "$0")/.."
project=$(pwd)
dir=${FRESH_CHECK_DIR:-/var/tmp/rbd-relay-fresh}
log="$dir/last-run.log"

say() { echo "fresh-check: $*"; }
fail() { echo "fresh-check: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "must run as root (debootstrap and chroot need it)"
rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
cargo_bin=${CARGO_HOME:-$HOME/.cargo}/bin
if [ ! -x "$cargo_bin/cargo" ] || [ ! -d "$rustup_home/toolchains" ]; then
  fail "no rustup toolchain found ($rustup_home, $cargo_bin/cargo); the README's commands need one"
fi

# the services bind fixed loopback ports (mons 3400/3410, Keystone 5000...): one environment at a time
if command -v ss >/dev/null 2>&1 && ss -ltn | awk '{print $4}' | grep -Eq ':(3400|3410|5000)$'; then
  fail "a test environment is running on this machine (ports 3400/3410/5000 in use); stop it first: make env-down"
fi

if ! command -v debootstrap >/dev/null 2>&1; then
  say "installing debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >/dev/null
fi

# the archive the host's apt uses (deb822 or one-line sources)
mirror=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n1 || true)
if [ -z "$mirror" ]; then
  mirror=$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}' | grep -v security | head -n1 || true)
fi
[ -n "$mirror" ] || fail "cannot tell which Debian archive the host uses (no URIs in /etc/apt/sources.list*)"

mkdir -p "$dir"
base="$dir/bookworm-minbase.tar"
if [ ! -s "$base" ]; then
  say "building a minimal Debian 12 root file system from $mirror (once; cached as $base)"
  rm -rf "$dir/build"
  if ! debootstrap --variant=minbase --include=make,ca-certificates bookworm "$dir/build" "$mirror" \
      >"$dir/debootstrap.log" 2>&1; then
    tail -n 20 "$dir/debootstrap.log" >&2
    fail "debootstrap failed (log: $dir/debootstrap.log); is the archive $mirror reachable?"
  fi
  tar -C "$dir/build" -cf "$base.part" . && mv "$base.part" "$base"
  rm -rf "$dir/build"
fi

root="$dir/root.$$"
mounted=""
cleanup() {
  # processes still running inside the chroot (a failed run's daemons) go first
  for p in /proc/[0-9]*; do
    r=$(readlink "$p/root" 2>/dev/null || true)
    case "$r" in "$root"*) kill -9 "${p#/proc/}" 2>/dev/null || true ;; esac
  done
  for m in $mounted; do umount -l "$m" 2>/dev/null || true; done
  if [ "${KEEP_ROOT:-0}" = 1 ]; then
    say "kept the chroot: $root"
  else
    rm -rf "$root"
  fi
}
trap cleanup EXIT INT TERM

say "unpacking a fresh copy into $root"
mkdir -p "$root"
tar -C "$root" -xf "$base"
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
# the machine's own trust anchors (a site CA, an egress proxy's CA) are part of the machine,
# not of the project: a fresh machine of this site has them too
if [ -d /usr/local/share/ca-certificates ]; then
  cp -a /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
  chroot "$root" update-ca-certificates >/dev/null 2>&1 ||
    fail "update-ca-certificates failed inside the chroot"
fi
# the project as git knows it (tracked and new files, as they are in the work tree), no target/
mkdir -p "$root/root/rbd-relay"
git -C "$project" ls-files -z --cached --others --exclude-standard |
  tar -C "$project" --null -T - -cf - | tar -C "$root/root/rbd-relay" -xf -
# the host's toolchain, read-only; the chroot's own CARGO_HOME fetches crates afresh
mkdir -p "$root/opt/rustup" "$root/root/.cargo/bin"
# only rustup and its proxies (cargo, rustc, ...: links to rustup), not tools installed with
# `cargo install` since (the project must install those itself)
for f in "$cargo_bin"/*; do
  case "$(basename "$f"):$(readlink "$f" 2>/dev/null || true)" in
    rustup:* | *:rustup | *:*/rustup) cp -a "$f" "$root/root/.cargo/bin/" ;;
  esac
done
for m in proc sys dev dev/pts opt/rustup; do mkdir -p "$root/$m"; done
mount -t proc proc "$root/proc" && mounted="$root/proc $mounted"
mount --rbind /sys "$root/sys" && mounted="$root/sys $mounted"
mount --bind /dev "$root/dev" && mounted="$root/dev $mounted"
mount --bind /dev/pts "$root/dev/pts" && mounted="$root/dev/pts $mounted"
mount --bind -o ro "$rustup_home" "$root/opt/rustup" && mounted="$root/opt/rustup $mounted"
mount -o remount,bind,ro "$root/opt/rustup" 2>/dev/null || true

say "running the README's two commands inside the chroot (log: $log)"
start=$(date +%s)
set +e
# shellcheck disable=SC2016 # the inner script expands its own variables
chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 CI=true \
  PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  RUSTUP_HOME=/opt/rustup RUSTUP_TOOLCHAIN="$(rustup show active-toolchain 2>/dev/null | awk '{print $1}')" \
  /bin/sh -c 'cd /root/rbd-relay &&
    echo "== make demo" && make demo </dev/null; demo=$?
    echo "== make demo exited $demo"
    make env-down </dev/null >/dev/null 2>&1
    echo "== make test" && make test </dev/null; test=$?
    echo "== make test exited $test"
    [ "$demo" = 0 ] && [ "$test" = 0 ]' >"$log" 2>&1
rc=$?
set -e
secs=$(( $(date +%s) - start ))
grep -E '^== make (demo|test) exited' "$log" || true
tail -n 5 "$log"
if [ "$rc" = 0 ]; then
  say "PASS: make demo and make test both exited 0 on a fresh Debian 12 system in ${secs} s"
else
  fail "FAIL (exit $rc after ${secs} s): see $log"
fi
