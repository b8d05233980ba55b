#!/usr/bin/env bash
# The full test suite: format, lints, unit tests, and the end-to-end tests on real namespaces (needs root).
# This is what CI runs (.ci/run). It installs the Debian packages it needs first (scripts/deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The end-to-end tests exec the real binaries, exactly as a runtime and an operator would.
cargo build --workspace --bins
cargo test --workspace --no-fail-fast -- --test-threads="${WEFT_TEST_THREADS:-4}"
