#!/usr/bin/env bash
# Installs what the tests and demos need on a fresh Debian machine: nftables, iptables (both
# variants), ipset, ipvsadm, conntrack and iproute2 (the clean-up tests make leftovers of
# every mode), strace (a test proves that under --netns the proxy never opens a
# machine-wide setting, with strace refusing the open should it try), and the User-Mode Linux
# guest of the IPVS kernel tests (testing/guest, book "Running the tests"): kmod (modprobe,
# depmod) and Debian's user-mode-linux kernel, unpacked into the build area
# ($CARGO_TARGET_DIR or target/, folder uml/) rather than installed. Does nothing when they are
# already there.
set -euo pipefail

missing=()
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v iptables-restore >/dev/null 2>&1 || missing+=(iptables)
command -v conntrack >/dev/null 2>&1 || missing+=(conntrack)
command -v ipset >/dev/null 2>&1 || missing+=(ipset)
command -v ipvsadm >/dev/null 2>&1 || missing+=(ipvsadm)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v strace >/dev/null 2>&1 || missing+=(strace)
command -v modprobe >/dev/null 2>&1 || [ -x /usr/sbin/modprobe ] || [ -x /sbin/modprobe ] || missing+=(kmod)
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

# The UML guest's kernel and modules: `apt-get download` + `dpkg -x` into the build area, so the
# machine's own /usr stays untouched (an installed package, /usr/bin/linux.uml, is used too).
root=$(cd "$(dirname "$0")/.." && pwd)
uml_dir="${CARGO_TARGET_DIR:-$root/target}/uml"
if [ ! -x /usr/bin/linux.uml ] && [ ! -x "$uml_dir/usr/bin/linux.uml" ]; then
  echo "install-deps: unpacking user-mode-linux into $uml_dir"
  mkdir -p "$uml_dir"
  debs=$(mktemp -d)
  if ! (cd "$debs" && apt-get download -qq user-mode-linux >/dev/null 2>&1); then
    # a stale package list: refresh it once, then try again
    [ "$(id -u)" -eq 0 ] && apt-get update -qq
    (cd "$debs" && apt-get download -qq user-mode-linux >/dev/null)
  fi
  dpkg -x "$debs"/user-mode-linux_*.deb "$uml_dir"
  rm -rf "$debs"
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
