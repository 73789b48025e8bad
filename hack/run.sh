#!/usr/bin/env bash
# Builds yonggi and runs `yonggi serve` with its built-in defaults
# (socket /run/yonggi/yonggi.sock). Extra arguments go to `yonggi serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/install-deps.sh
cargo build --release --locked
exec target/release/yonggi serve "$@"
