#!/bin/bash
# Runs as the first process of fresh pid, mount, cgroup, uts, ipc and net
# namespaces (scripts/system-test starts it with unshare) and ends as systemd,
# PID 1 with an overlay of the machine's root as its root, whose writes land in
# a tmpfs.
#
#   boot.sh BASE
#
# BASE: an empty directory; a tmpfs is mounted on it in this mount namespace
# only. Nothing below ever writes to the machine's own file systems: booting
# systemd on the real root would let its boot-time cleanup (systemd-tmpfiles)
# empty the real /tmp, and namespaces do not isolate files.
set -euo pipefail

BASE="$1"
[ "$$" -eq 1 ] || { echo "boot.sh: must be PID 1 of a new pid namespace" >&2; exit 1; }

# Nothing mounted here may propagate back to the machine.
mount --make-rprivate /
mount -t tmpfs -o mode=0755,size=6g ipayout-system-test "$BASE"
mkdir "$BASE/up" "$BASE/work" "$BASE/root"
R="$BASE/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$BASE/up,workdir=$BASE/work" "$R"

mount -t proc proc "$R/proc"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys"
# A /dev of our own rather than the machine's (a bind mount would let
# systemd-tmpfiles and udev rules inside act on the real device directory).
mount -t tmpfs -o mode=0755,nosuid,size=16m dev "$R/dev"
mknod -m 0666 "$R/dev/null" c 1 3
mknod -m 0666 "$R/dev/zero" c 1 5
mknod -m 0666 "$R/dev/full" c 1 7
mknod -m 0666 "$R/dev/random" c 1 8
mknod -m 0666 "$R/dev/urandom" c 1 9
mknod -m 0666 "$R/dev/tty" c 5 0
mkdir -m 0755 "$R/dev/pts" "$R/dev/shm" "$R/dev/mqueue"
chmod 1777 "$R/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
ln -s /proc/self/fd "$R/dev/fd"
ln -s /proc/self/fd/0 "$R/dev/stdin"
ln -s /proc/self/fd/1 "$R/dev/stdout"
ln -s /proc/self/fd/2 "$R/dev/stderr"

# Units that would touch kernel-wide state (sysctls, modules, binfmt, the
# clock), hardware, consoles, or that this test does not want (the machine's
# other enabled services and timers). Masked or unlinked in the overlay only.
SD="$R/etc/systemd/system"
for unit in systemd-sysctl.service systemd-modules-load.service kmod-static-nodes.service \
  systemd-binfmt.service proc-sys-fs-binfmt_misc.automount proc-sys-fs-binfmt_misc.mount \
  systemd-timesyncd.service systemd-time-wait-sync.service hwclock.service \
  systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket \
  systemd-udev-trigger.service systemd-udev-settle.service systemd-hwdb-update.service \
  systemd-firstboot.service systemd-random-seed.service systemd-pstore.service \
  systemd-remount-fs.service systemd-fsck-root.service sys-kernel-debug.mount \
  sys-kernel-tracing.mount sys-kernel-config.mount sys-fs-fuse-connections.mount \
  dev-hugepages.mount systemd-ask-password-console.path systemd-ask-password-wall.path \
  getty.target console-getty.service getty@tty1.service serial-getty@.service \
  systemd-logind.service e2scrub_reap.service e2scrub_all.timer apt-daily.timer \
  apt-daily-upgrade.timer dpkg-db-backup.timer fstrim.timer man-db.timer \
  systemd-tmpfiles-clean.timer pgbouncer.service prometheus.service \
  prometheus-postgres-exporter.service prometheus-node-exporter.service \
  cron.service ssh.service rsyslog.service; do
  ln -sf /dev/null "$SD/$unit"
done
# Whatever else the machine has enabled is not booted either; the test starts
# nginx and PostgreSQL itself.
find "$SD" -path '*.wants/*' -type l -delete
find "$SD" -path '*.requires/*' -type l -delete

# A merchant's host starts services from maintainer scripts; container images
# often carry a policy-rc.d that forbids it (exit 101). Not in this root.
rm -f "$R/usr/sbin/policy-rc.d"

hostname ipayout-system-test

# pivot_root, not chroot: the kernel refuses new user namespaces to a process
# whose root is not its mount namespace's root (unshare(2), EPERM), and systemd
# needs them for PrivateUsers= (status=217/USER under chroot). The old root is
# stacked on the new one by `pivot_root . .` and detached at once.
cd "$R"
pivot_root . .
umount -l .
cd /
# Shared propagation inside this namespace, as nspawn sets it up: systemd as
# PID 1 of a container leaves propagation as it finds it, and it needs mounts
# made in a service's namespace to reach its own (credentials: LoadCredential=
# and SetCredential= directories stay empty without it). These peer groups are
# new ones of this namespace; the machine's mounts were made private above.
mount --make-rshared /
exec /usr/bin/env -i container=other PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  /lib/systemd/systemd --system --unit=multi-user.target --show-status=no
