#!/usr/bin/env bash
# The main job on its embedded default, no cluster needed: example manifests are fed through
# the change tracker into the recording dataplane, printing every change set.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo run --quiet -p kproxy-core --example replay -- \
  examples/manifests/initial.yaml examples/manifests/update.yaml
