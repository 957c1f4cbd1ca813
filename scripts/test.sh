#!/usr/bin/env bash
# The whole test suite: unit, property (>= 256 cases each), golden, and real-kernel tests in
# network namespaces of their own. Kernel tests need root; they fail, never skip, without it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export PROPTEST_CASES="${PROPTEST_CASES:-256}"
cargo test --workspace --all-targets --no-fail-fast
cargo test --workspace --doc
