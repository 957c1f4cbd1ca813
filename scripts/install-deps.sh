#!/usr/bin/env bash
# Installs what the tests and demos need on a fresh Debian machine: nftables, iptables (both
# variants), ipset, ipvsadm, conntrack and iproute2 (the clean-up tests make leftovers of
# every mode), and strace (a test proves that under --netns the proxy never opens a
# machine-wide setting, with strace refusing the open should it try). Does nothing when they
# are already there.
set -euo pipefail

missing=()
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v iptables-restore >/dev/null 2>&1 || missing+=(iptables)
command -v conntrack >/dev/null 2>&1 || missing+=(conntrack)
command -v ipset >/dev/null 2>&1 || missing+=(ipset)
command -v ipvsadm >/dev/null 2>&1 || missing+=(ipvsadm)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v strace >/dev/null 2>&1 || missing+=(strace)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The pinned toolchain (rust-toolchain.toml) is the machine's stable one; rustup cannot
# download another here, so point the pinned name at stable when it is missing.
pinned=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$(dirname "$0")/../rust-toolchain.toml")
toolchains="${RUSTUP_HOME:-$HOME/.rustup}/toolchains"
triple=x86_64-unknown-linux-gnu
if [ -n "$pinned" ] && [ ! -e "$toolchains/$pinned-$triple" ] && [ -d "$toolchains/stable-$triple" ]; then
  if "$toolchains/stable-$triple/bin/rustc" --version | grep -q " $pinned "; then
    ln -s "$toolchains/stable-$triple" "$toolchains/$pinned-$triple"
  fi
fi
