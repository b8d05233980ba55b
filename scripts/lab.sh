#!/usr/bin/env bash
# Quickstart: install what the lab needs, build weft, bring up a 3-node lab with 2 pods per node.
# Extra arguments go to `weftctl lab up` (e.g. --backend host-gw --store etcd --nodes 5).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cargo build --release --bins
./target/release/weftctl lab down >/dev/null 2>&1 || true
exec ./target/release/weftctl lab up "$@"
