#!/bin/sh
# librbd-check.sh [RELEASE]: build rbd-relay and run its unit tests against the librbd of a
# newer Ceph release (default reef: librbd 18 from Debian 13; tentacle: librbd 20 from sid),
# inside a copy of testenv's chroot for that release with librbd-dev, librados-dev,
# pkg-config, gcc and shellcheck (the bundle crate's unit tests run it) added. Also checks that every function librbd-sys declares is exported
# by that release's librbd/librados. The host's Rust toolchain is mounted read-only (as in
# fresh-check.sh); crates come from a copy of the host's cargo registry (no network needed
# for the build itself). Needs root and, the first time, the package archive.
set -eu
cd "$(dirname "$0")/.."
project=$(pwd)
release=${1:-reef}
CARGO=${CARGO:-cargo}
dir=${MATRIX_DIR:-/var/tmp/rbd-relay-matrix}
target=${CARGO_TARGET_DIR:-$project/target}
say() { echo "librbd-check: $*"; }
fail() { echo "librbd-check: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "must run as root (chroot, mounts)"
case $release in reef) suite=trixie ;; tentacle) suite=sid ;; *) fail "unknown release $release (expected reef or tentacle)" ;; esac
rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
cargo_home=${CARGO_HOME:-$HOME/.cargo}
[ -x "$cargo_home/bin/cargo" ] || fail "no rustup toolchain found in $cargo_home"

"$CARGO" build -q -p testenv
"$target/debug/testenv" --state-dir "$dir/env" chroot --release "$release"
base="$dir/rbd-relay-chroots/$suite-ceph"
build="$dir/rbd-relay-chroots/$suite-build"
# what the build needs in the copy; the marker file holds the list last installed, so a
# longer list is installed into an existing copy
pkgs="librbd-dev librados-dev pkg-config gcc libc6-dev shellcheck"
marker="$build/.librbd-dev-complete"
if [ ! -e "$marker" ]; then
  say "making $build: a copy of $base (once)"
  rm -rf "$build"
  cp -a "$base" "$build"
  : >"$marker"
fi
if [ "$(cat "$marker")" != "$pkgs" ]; then
  say "installing into $build: $pkgs"
  mount -t proc proc "$build/proc"
  trap 'umount -l "$build/proc" 2>/dev/null || true' EXIT
  # shellcheck disable=SC2086 # one word per package
  chroot "$build" /usr/bin/env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    --no-install-recommends $pkgs >"$dir/$suite-build-apt.log" 2>&1 ||
    { tail -n 5 "$dir/$suite-build-apt.log" >&2; fail "apt-get install in $build failed (is the archive reachable?)"; }
  umount -l "$build/proc"
  trap - EXIT
  echo "$pkgs" >"$marker"
fi

lib=$build/usr/lib/x86_64-linux-gnu
say "librbd in the chroot: $(readlink -f "$lib/librbd.so.1" | xargs basename), librados: $(readlink -f "$lib/librados.so.2" | xargs basename)"
declared=$(grep -oE 'pub fn [a-z_0-9]+' librbd-sys/src/lib.rs | awk '{print $3}' | sort -u)
exported=$(nm -D --defined-only "$lib/librbd.so.1" "$lib/librados.so.2" 2>/dev/null | awk '{print $3}' | sort -u)
missing=$(printf '%s\n' "$declared" | comm -23 - "$(printf '%s\n' "$exported" > "$dir/exported.txt"; echo "$dir/exported.txt")" | tr '\n' ' ')
[ -z "$missing" ] || fail "librbd-sys declares functions $release's libraries lack: $missing"
say "all $(printf '%s\n' "$declared" | wc -l) functions librbd-sys declares are exported by $release's librbd/librados"

root="$build/root/rbd-relay"
# the sources are copied afresh each run; the build's target directory stays beside them
rm -rf "$root" "$build/root/.cargo"
mkdir -p "$root" "$build/root/.cargo" "$build/opt/rustup"
git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -C "$root" -xf -
cp -a "$cargo_home/bin" "$build/root/.cargo/"
cp -a "$cargo_home/registry" "$build/root/.cargo/"
mounted=""
cleanup() { for m in $mounted; do umount -l "$m" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM
mount -t proc proc "$build/proc" && mounted="$build/proc"
mount --bind /dev "$build/dev" && mounted="$build/dev $mounted"
mount --bind -o ro "$rustup_home" "$build/opt/rustup" && mounted="$build/opt/rustup $mounted"
mount -o remount,bind,ro "$build/opt/rustup" 2>/dev/null || true
log="$dir/$suite-unit.log"
say "cargo test --offline --workspace --lib --bins inside the chroot (log: $log)"
rc=0
chroot "$build" /usr/bin/env -i HOME=/root LANG=C.UTF-8 \
  PATH=/root/.cargo/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin \
  RUSTUP_HOME=/opt/rustup RUSTUP_TOOLCHAIN="$(rustup show active-toolchain 2>/dev/null | awk '{print $1}')" \
  CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}" CARGO_TARGET_DIR=/root/rbd-relay-target \
  sh -c 'cd /root/rbd-relay && cargo test --offline --no-fail-fast --workspace --lib --bins' >"$log" 2>&1 || rc=$?
grep -E "^test result|Running|FAILED|error(\[|:)" "$log" | tail -n 30 || true
[ "$rc" = 0 ] || fail "unit tests against $release's librbd failed (exit $rc): see $log"
# The unit-test binaries call no librbd function, so the linker drops the library from them
# (--as-needed): they prove the build, not the binding. The rbd-relay binary does link it:
# load it with every symbol bound at start (LD_BIND_NOW), so a function librbd-sys uses that
# this librbd lacks fails here, and print what it loaded.
say "rbd-relay linked against $release's librbd, every symbol bound at load"
chroot "$build" /usr/bin/env -i HOME=/root LANG=C.UTF-8 \
  PATH=/root/.cargo/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin \
  RUSTUP_HOME=/opt/rustup RUSTUP_TOOLCHAIN="$(rustup show active-toolchain 2>/dev/null | awk '{print $1}')" \
  CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}" CARGO_TARGET_DIR=/root/rbd-relay-target \
  sh -c 'cd /root/rbd-relay && cargo build --offline -q -p rbd-relay --bin rbd-relay &&
    ldd /root/rbd-relay-target/debug/rbd-relay | grep -E "librbd|librados" &&
    LD_BIND_NOW=1 /root/rbd-relay-target/debug/rbd-relay --version' >>"$log" 2>&1 ||
  { tail -n 5 "$log" >&2; fail "rbd-relay does not build or load against $release's librbd: see $log"; }
tail -n 3 "$log"
say "PASS: rbd-relay built and its unit tests passed against $release's librbd"
