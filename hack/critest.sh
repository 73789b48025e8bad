#!/usr/bin/env bash
# Runs the CRI conformance suite (critest) against yonggi, offline.
#
# critest asks for images by their upstream names (registry.k8s.io/...,
# gcr.io/k8s-staging-cri-tools/...). This script serves busybox-based
# equivalents from a loopback docker-registry, published by
# `yonggi-testimages push --set critest`, and starts a yonggi on temp roots
# whose registry mirrors map registry.k8s.io and gcr.io to that registry.
# Not --registry-prefix: critest v1.32.0 drops the tag with it and still
# checks and creates by the upstream names (see README, "Running critest
# offline").
#
# Usage (as root): hack/critest.sh [extra critest flags...]
#   e.g. hack/critest.sh --ginkgo.focus='Image Manager'
# Environment: YONGGI_PROFILE=debug|release (default release),
#              CRITEST=/path/to/critest (default: critest on PATH),
#              KEEP=1 keeps the temp dir (logs) after the run.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "hack/critest.sh: critest needs root (namespaces, mounts, cgroups)" >&2
  exit 1
fi
hack/install-deps.sh

profile="${YONGGI_PROFILE:-release}"
critest_bin="${CRITEST:-critest}"
command -v "$critest_bin" >/dev/null || {
  echo "hack/critest.sh: $critest_bin not found (cri-tools v1.32.0)" >&2
  exit 1
}
if [ "$profile" = release ]; then
  cargo build --locked --release --bins
else
  cargo build --locked --bins
fi
bin="target/$profile"

tmp="$(mktemp -d /tmp/yonggi-critest.XXXXXX)"
registry_pid=""
yonggi_pid=""

# stop_pid, kill_leftovers
. hack/lib.sh

cleanup() {
  local status=$?
  # Best effort from here on: under set -e a step that fails (grep finding
  # no NAT rule when no pod ran) ended the cleanup early with status 1 and
  # left the temp dir behind.
  set +e
  # Pods critest left behind (a failed spec may skip its teardown) are
  # removed through the CRI while the daemon still runs, so their networks
  # get a proper CNI DEL.
  if [ -n "$yonggi_pid" ] && command -v crictl >/dev/null; then
    crictl --runtime-endpoint "unix://$socket" --image-endpoint "unix://$socket" \
      rmp --all --force >/dev/null 2>&1 || true
  fi
  stop_pid "$yonggi_pid"
  stop_pid "$registry_pid"
  kill_leftovers "$tmp"
  wait 2>/dev/null || true
  # The bridge and the masquerade rule of the built-in network are node-wide
  # and outlive the daemon by design; this run made them, so it removes them.
  if [ -n "${bridge:-}" ]; then
    ip link del "$bridge" 2>/dev/null || true
    iptables -t nat -S POSTROUTING 2>/dev/null | grep -F -- "-s $pod_cidr " | grep -F yonggi |
      sed 's/^-A /-D /' | while read -r rule; do
        eval "iptables -t nat $rule" 2>/dev/null || true
      done
  fi
  # Never rm -rf through a mount: unmount what is left under the temp dir
  # (deepest first), and keep the dir if anything refuses.
  local mounts
  mounts="$(findmnt -rn -o TARGET | grep -F "$tmp/" | sort -r || true)"
  if [ -n "$mounts" ]; then
    while read -r m; do umount -l "$m" 2>/dev/null || true; done <<<"$mounts"
  fi
  if [ -n "${KEEP:-}" ] || findmnt -rn -o TARGET | grep -qF "$tmp/"; then
    echo "hack/critest.sh: kept $tmp (logs: yonggi.log, registry/registry.log)" >&2
  else
    rm -rf "$tmp"
  fi
  exit "$status"
}
trap cleanup EXIT INT TERM

# A loopback registry on a free port with temp storage.
start_registry "$tmp/registry" || exit 1
port="$registry_port"
echo "hack/critest.sh: registry on 127.0.0.1:$port (pid $registry_pid)" >&2

"$bin/yonggi-testimages" push --registry "127.0.0.1:$port" --set critest >"$tmp/published.txt"
echo "hack/critest.sh: published $(wc -l <"$tmp/published.txt") critest images" >&2

socket="$tmp/run/yonggi.sock"
# The built-in bridge network on its own bridge and subnet (yonggi checks at
# start that both are free), and an empty CNI conf dir of our own: the
# host's /etc/cni is never read.
bridge="${YONGGI_CRITEST_BRIDGE:-ygcritest0}"
pod_cidr="${YONGGI_CRITEST_CIDR:-10.213.90.0/24}"
mkdir -p "$tmp/cni"
cat >"$tmp/config.toml" <<EOF
root = "$tmp/root"
state_dir = "$tmp/run"
socket = "$socket"

[network]
cni_conf_dir = "$tmp/cni"
bridge = "$bridge"
pod_cidr = "$pod_cidr"

[registries."registry.k8s.io"]
mirrors = ["http://127.0.0.1:$port"]
mirrors_replace_upstream = true

[registries."gcr.io"]
mirrors = ["http://127.0.0.1:$port"]
mirrors_replace_upstream = true
EOF

"$bin/yonggi" serve --config "$tmp/config.toml" --log-level "${YONGGI_LOG_LEVEL:-debug}" \
  >"$tmp/yonggi.log" 2>&1 &
yonggi_pid=$!
for i in $(seq 300); do
  [ -S "$socket" ] && break
  if ! kill -0 "$yonggi_pid" 2>/dev/null; then
    echo "hack/critest.sh: yonggi exited:" >&2
    cat "$tmp/yonggi.log" >&2
    exit 1
  fi
  sleep 0.1
done
echo "hack/critest.sh: yonggi on $socket (pid $yonggi_pid)" >&2

# The web-server specs may use any image answering on port 80: busybox httpd.
cat >"$tmp/images.yaml" <<EOF
defaultTestContainerImage: registry.k8s.io/e2e-test-images/busybox:1.29-2
webServerTestImage: registry.k8s.io/e2e-test-images/httpd:2.4.39-4
EOF

# "with digest": critest pins the upstream image's digest, which cannot be
# rebuilt offline.
"$critest_bin" \
  --runtime-endpoint "unix://$socket" \
  --test-images-file "$tmp/images.yaml" \
  --ginkgo.skip='with digest' \
  --ginkgo.no-color \
  --ginkgo.timeout=3h \
  "$@"
