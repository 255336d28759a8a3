#!/bin/sh
# add-openstack.sh DIR: installs the suite's OpenStack services (Keystone, Cinder, Glance and
# glance_store, with the suite's python3-rbd/rados) into a finished Ceph chroot DIR, so a
# cloud of the test environment can run the newer OpenStack release beside the host's. Run
# by testenv (embedded in its binary) once per chroot; prints progress lines on stdout.
# Nothing is started: the chroot's policy-rc.d forbids services while packages install.
set -eu
dir=$1
[ -x "$dir/usr/bin/apt-get" ] || { echo "$dir is not a chroot" >&2; exit 1; }
cp /etc/resolv.conf "$dir/etc/resolv.conf" 2>/dev/null || true
mkdir -p "$dir/proc"
mount -t proc proc "$dir/proc"
trap 'umount -l "$dir/proc" 2>/dev/null || true' EXIT
echo "step 1/2: apt-get update"
chroot "$dir" /usr/bin/env DEBIAN_FRONTEND=noninteractive apt-get update -q 2>&1 | sed 's/^/  /'
echo "step 2/2: apt-get install python3-keystone python3-cinder python3-glance python3-glance-store"
chroot "$dir" /usr/bin/env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
  python3-keystone python3-cinder python3-glance python3-glance-store python3-rbd python3-rados \
  python3-keystonemiddleware 2>&1 |
  awk '/^(Get|Setting up)/ { n++; if (n % 25 == 0) { print "  " n " package steps done"; fflush() } next }
       /^(E:|W:|dpkg: error)/ { print "  " $0; fflush() }'
chroot "$dir" python3 -c 'import keystone, cinder, glance, glance_store, rbd; print("openstack python modules import")'
# (sqlite transactions of the test clouds begin IMMEDIATE through testenv's entry points,
# testenv::openstack::SQLITE_BEGIN_IMMEDIATE, the same as on the host)
chroot "$dir" dpkg-query -W python3-keystone python3-cinder python3-glance python3-glance-store
chroot "$dir" apt-get clean
echo "done"
