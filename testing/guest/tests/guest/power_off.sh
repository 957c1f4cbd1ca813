#!/bin/sh
# Run in the guest by tests/boot.rs: powers the guest off before init can write the status.
echo o >/proc/sysrq-trigger
sleep 30
