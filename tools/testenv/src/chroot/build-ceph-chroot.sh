#!/bin/sh
# build-ceph-chroot.sh SUITE DIR ARCHIVE: a minimal Debian SUITE root file system in DIR with
# that suite's Ceph daemons (mon, mgr, osd, rbd-mirror) and tools, for a site of the test
# environment that runs a newer Ceph release than the host. Run by testenv (embedded in its
# binary); prints progress lines on stdout. DIR must not exist yet. Nothing is started:
# policy-rc.d forbids services while packages install.
set -eu
suite=$1 dir=$2 archive=$3
echo "step 1/3: debootstrap --variant=minbase $suite from $archive"
debootstrap --variant=minbase --include=ca-certificates "$suite" "$dir" "$archive" 2>&1 |
  awk '/^I: Retrieving/ { n++; if (n % 20 == 0) { print "  retrieved " n " packages"; fflush() } next }
       /^(I|W|E):/ && !/Validating|Extracting|Unpacking|Configuring/ { print "  " $0; fflush() }'
[ -x "$dir/usr/bin/apt-get" ] || { echo "debootstrap did not produce a root file system" >&2; exit 1; }
printf '#!/bin/sh\nexit 101\n' > "$dir/usr/sbin/policy-rc.d"
chmod 755 "$dir/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$dir/etc/resolv.conf" 2>/dev/null || true
mkdir -p "$dir/proc"
mount -t proc proc "$dir/proc"
trap 'umount -l "$dir/proc" 2>/dev/null || true' EXIT
echo "step 2/3: apt-get update"
chroot "$dir" /usr/bin/env DEBIAN_FRONTEND=noninteractive apt-get update -q 2>&1 | sed 's/^/  /'
echo "step 3/3: apt-get install ceph-mon ceph-mgr ceph-osd rbd-mirror ceph-common"
chroot "$dir" /usr/bin/env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
  ceph-mon ceph-mgr ceph-osd rbd-mirror ceph-common procps 2>&1 |
  awk '/^(Get|Setting up)/ { n++; if (n % 25 == 0) { print "  " n " package steps done"; fflush() } next }
       /^(E:|W:|dpkg: error)/ { print "  " $0; fflush() }'
chroot "$dir" ceph-mon --version
chroot "$dir" apt-get clean
echo "done"
