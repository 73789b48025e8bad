#!/usr/bin/env bash
# Runs every test: unit tests and the integration tests in tests/, which drive
# the real daemon over its socket with a real registry. Run as root (as CI
# does): the integration tests create namespaces, mounts and cgroups.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/install-deps.sh
if [ "$(id -u)" -ne 0 ]; then
  echo "hack/test.sh: the integration tests need root" >&2
  exit 1
fi
cargo test --locked --all-targets "$@"
