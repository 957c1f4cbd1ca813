#!/usr/bin/env bash
# The main job on its embedded default, no cluster needed: builds kube-proxy, makes a
# throwaway world of network namespaces from examples/demo (a node, three pods, a client pod
# and an external client), runs kube-proxy (nftables) on the node with --manifests, shows how
# traffic to the Service spreads over the pods, and removes everything. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "demo: run as root (it creates network namespaces); nothing outside them is touched" >&2
  exit 1
fi
bash scripts/install-deps.sh
cargo build --quiet --release -p kube-proxy -p kproxy-tools --bin kube-proxy --bin kproxy-demo
./target/release/kproxy-demo --kube-proxy ./target/release/kube-proxy examples/demo
