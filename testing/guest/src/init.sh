#!/bin/sh
# PID 1 of a kproxy-guest User-Mode Linux guest. Written by kproxy-guest (testing/guest); do
# not edit: it is rewritten when it differs.
#
# argv: the program and its arguments (the kernel command line after `--`).
# KPROXY_GUEST_RUN (environment, from the kernel command line): the host folder for results,
# mounted read-write; the rest of the root file system is the host's, read-only.
PATH=@KIT_BIN@:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
HOME=/run/home
TMPDIR=/run/tmp
export PATH HOME TMPDIR

mounted() { grep -q "^[^ ]* $1 " /proc/mounts; }
mount -t proc proc /proc
mounted /sys || mount -t sysfs sysfs /sys
mounted /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
# /tmp stays the host's (read-only, like the rest of the root): a workspace or build area
# under /tmp, as a CI clone may be, must stay visible. Scratch space is /run/tmp.
mkdir -p /run/home /run/tmp
echo @KIT_BIN@/modprobe >/proc/sys/kernel/modprobe
# IPv6 is a module in Debian's UML kernel; the host's tests take it for granted.
modprobe ipv6
ip link set lo up

out=/run/kproxy-guest
mkdir -p $out
if mount -t hostfs -o "$KPROXY_GUEST_RUN" none $out; then
  "$@" >$out/stdout 2>$out/stderr </dev/null
  echo $? >$out/status.tmp && mv $out/status.tmp $out/status
  umount $out
else
  echo "kproxy-guest init: cannot mount the results folder $KPROXY_GUEST_RUN" >&2
fi
echo o >/proc/sysrq-trigger
# power-off is asynchronous: PID 1 must not exit meanwhile
while :; do sleep 1; done
