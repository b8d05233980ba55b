#!/usr/bin/env bash
# Quickstart: install what the lab needs, build weft, bring up a 3-node lab with 2 pods per node.
# Extra arguments go to `weftctl lab up` (e.g. --backend host-gw --store etcd --nodes 5).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
# Only the binaries the lab runs (plugin, agent, CLI, and the fake API server for --store kube), not the
# benchmarks: each release binary is a separate LTO link.
cargo build --release -p weft-cni -p weft-agent -p weftctl -p weft-store-kube --bins
./target/release/weftctl lab down >/dev/null 2>&1 || true
exec ./target/release/weftctl lab up "$@"
