#!/bin/sh
# install-deps.sh - install what rbd-relay needs on a fresh Debian 12 machine.
#
# Run as root. Never prompts, never starts services (a temporary policy-rc.d
# refuses every service start while packages are configured). When everything
# is already installed it only runs `dpkg -s` and `cargo deny --version` and exits (about a second).
#
# What it installs, from Debian's own archive:
#   Ceph 16.2 (Pacific): mon, osd, mgr, rbd-mirror, the CLI and the C headers
#   OpenStack Zed:       Keystone, Cinder, Glance, glance_store, RabbitMQ, the openstack
#                        CLI (the tenant admin's script of `rbd-relay bundle` uses it)
#   build/test tools:    gcc + libc6-dev (cargo's linker), pkg-config, clang (libclang for nothing: not needed), jq, shellcheck
# and, from crates.io, cargo-deny (CI's license and banned-crate check, see deny.toml):
#   `cargo install --locked` once (a few minutes); skipped when that version is installed.
set -eu

# cargo-deny: the version deny.toml is written for. Needs cargo (rustup) on PATH.
CARGO_DENY_VERSION=0.20.2
install_cargo_deny() {
  if cargo deny --version 2>/dev/null | grep -qx "cargo-deny $CARGO_DENY_VERSION"; then
    return 0
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    echo "install-deps.sh: cargo not found; install a Rust toolchain (rustup) first, then re-run" >&2
    exit 1
  fi
  echo "install-deps.sh: installing cargo-deny $CARGO_DENY_VERSION from crates.io (a few minutes, once)..."
  cargo install --locked --quiet cargo-deny --version "$CARGO_DENY_VERSION" </dev/null
}

PKGS="ceph-mon ceph-osd ceph-mgr rbd-mirror ceph-common librados-dev librbd-dev
      python3-rbd python3-rados uuid-runtime
      python3-keystone python3-cinder python3-glance python3-glance-store
      python3-keystoneclient python3-openstackclient rabbitmq-server
      gcc libc6-dev pkg-config curl jq shellcheck"

if [ "$(id -u)" != 0 ]; then
  echo "install-deps.sh: must run as root (it installs Debian packages)" >&2
  exit 1
fi

# shellcheck disable=SC2086
if dpkg -s $PKGS >/dev/null 2>&1; then
  install_cargo_deny
  exit 0
fi

echo "install-deps.sh: installing Debian packages (Ceph 16.2, OpenStack Zed, tools)..."
made_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  made_policy=1
fi
# An EXIT trap's status becomes the script's: it must end 0 when there is nothing to remove.
cleanup() {
  if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
}
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 $PKGS
install_cargo_deny
echo "install-deps.sh: done"
