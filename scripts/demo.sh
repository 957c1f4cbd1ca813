#!/usr/bin/env bash
# The main job on its embedded default, no cluster needed: builds kube-proxy, makes a
# throwaway world of network namespaces from examples/demo (a node, three pods, a client pod
# and an external client), runs kube-proxy on the node with --manifests, shows how traffic to
# the Service spreads over the pods, and removes everything. Needs root.
#
#   scripts/demo.sh                                   # nftables mode (the default)
#   scripts/demo.sh --proxy-mode iptables             # iptables mode, variant detected
#   scripts/demo.sh --proxy-mode iptables --iptables-variant legacy
#   scripts/demo.sh --proxy-mode ipvs          # needs a kernel with IPVS (the test guest has one)
#
# The environment variables PROXY_MODE and IPTABLES_VARIANT do the same as the flags (the
# flags win). Binaries go to $CARGO_TARGET_DIR (default ./target).
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${PROXY_MODE:-nftables}"
variant="${IPTABLES_VARIANT:-auto}"
while [ $# -gt 0 ]; do
  case "$1" in
    --proxy-mode) mode="${2:?--proxy-mode needs a value}"; shift 2 ;;
    --proxy-mode=*) mode="${1#*=}"; shift ;;
    --iptables-variant) variant="${2:?--iptables-variant needs a value}"; shift 2 ;;
    --iptables-variant=*) variant="${1#*=}"; shift ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$mode" in
  nftables|iptables|ipvs) ;;
  *) echo "demo: --proxy-mode must be nftables, iptables or ipvs, not $mode" >&2; exit 2 ;;
esac
case "$variant" in
  auto|nft|legacy) ;;
  *) echo "demo: --iptables-variant must be auto, nft or legacy, not $variant" >&2; exit 2 ;;
esac

if [ "$(id -u)" -ne 0 ]; then
  echo "demo: run as root (it creates network namespaces); nothing outside them is touched" >&2
  exit 1
fi
bash scripts/install-deps.sh
cargo build --quiet --release -p kube-proxy -p kproxy-tools --bin kube-proxy --bin kproxy-demo
target="${CARGO_TARGET_DIR:-target}/release"
"$target/kproxy-demo" --kube-proxy "$target/kube-proxy" \
  --proxy-mode "$mode" --iptables-variant "$variant" examples/demo
