#!/bin/sh
# Run in the guest by tests/boot.rs: writes $1 to stdout, $2 to stderr, exits with $3, and
# reports what the guest looks like from inside.
echo "$1"
echo "$2" >&2
echo "kernel $(uname -r)"
echo "modprobe $(cat /proc/sys/kernel/modprobe)"
exit "$3"
