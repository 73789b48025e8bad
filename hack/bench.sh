#!/usr/bin/env bash
# The lifecycle benchmark: the same CRI workload against yonggi and, with
# --compare containerd, against containerd + runc, side by side.
#
# Usage (as root): hack/bench.sh [--compare containerd] [-n N] [-p P] [-c C] [-o FILE]
#   -n N   sequential lifecycles (default 50)
#   -p P   pods started in parallel (default 100)
#   -c C   RPCs in flight during the parallel phase (default 10)
#   -o FILE  where the table goes (default target/bench-results.md)
# Environment: YONGGI_PROFILE=debug|release (default release),
#              KEEP=1 keeps the temp dir (logs) after the run.
#
# Everything runs on temp roots: a loopback docker-registry serving the
# images (yonggi-bench push), yonggi with its built-in bridge network on
# its own bridge and a free subnet, and containerd with its own root, state,
# socket and a CNI conflist equal to yonggi's built-in one (another bridge,
# another free subnet). containerd 1.6 keeps shim sockets and runc state
# under /run/containerd and the CNI cache under /var/lib/cni whatever its
# config says, so it runs in a private mount namespace with fresh tmpfs on
# /run and /var/lib: the host's /run/containerd, /var/lib/containerd,
# /etc/containerd and /etc/cni are never touched. Everything is stopped
# by PID and removed at the end. The exit status is non-zero only when a
# step failed, never because of a number.
set -euo pipefail
cd "$(dirname "$0")/.."

compare=""
lifecycles=50
parallel=100
concurrency=10
out_file="target/bench-results.md"
while [ $# -gt 0 ]; do
  case "$1" in
  --compare)
    compare="${2:?--compare needs a runtime}"
    shift 2
    ;;
  -n) lifecycles="$2"; shift 2 ;;
  -p) parallel="$2"; shift 2 ;;
  -c) concurrency="$2"; shift 2 ;;
  -o) out_file="$2"; shift 2 ;;
  *)
    echo "hack/bench.sh: unknown argument $1 (see the header of this script)" >&2
    exit 2
    ;;
  esac
done
if [ -n "$compare" ] && [ "$compare" != containerd ]; then
  echo "hack/bench.sh: only --compare containerd is supported" >&2
  exit 2
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "hack/bench.sh: needs root (namespaces, mounts, cgroups)" >&2
  exit 1
fi
hack/install-deps.sh
if [ -n "$compare" ]; then
  missing=()
  for p in containerd runc; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "hack/bench.sh: installing ${missing[*]}" >&2
    # Where systemd runs, the package also enables its own containerd
    # service on the host's paths; this script never talks to it.
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
fi

profile="${YONGGI_PROFILE:-release}"
if [ "$profile" = release ]; then
  cargo build --locked --release --bin yonggi --bin yonggi-bench
else
  cargo build --locked --bin yonggi --bin yonggi-bench
fi
bin="$PWD/target/$profile"

tmp="$(mktemp -d /tmp/yonggi-bench.XXXXXX)"
tag="yb$$"
registry_pid=""
yonggi_pid=""
containerd_pid=""
bridges=()
cidrs=()
failed=0

# stop_pid, kill_leftovers
. hack/lib.sh

# The pods' cgroups (at the top of a v2 hierarchy or of each v1 one): kill
# what is still in them, then remove them deepest first.
remove_cgroups() {
  local dirs d pid
  dirs="$(find /sys/fs/cgroup -mindepth 1 -maxdepth 2 -type d -name "$tag-*" 2>/dev/null || true)"
  [ -n "$dirs" ] || return 0
  for d in $dirs; do
    for pid in $(find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null); do
      kill -KILL "$pid" 2>/dev/null || true
    done
  done
  sleep 0.2
  for d in $dirs; do
    find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
}

cleanup() {
  local status=$?
  # Best effort from here on: one step failing must not skip the others.
  set +e
  stop_pid "$yonggi_pid"
  stop_pid "$containerd_pid"
  stop_pid "$registry_pid"
  kill_leftovers "$tmp"
  wait 2>/dev/null || true
  remove_cgroups
  local b c
  for b in "${bridges[@]}"; do
    ip link del "$b" 2>/dev/null || true
  done
  for c in "${cidrs[@]}"; do
    # yonggi's outbound NAT rule for its built-in CIDR (README, "Pod networking").
    iptables -w -t nat -S POSTROUTING 2>/dev/null | grep -F -- "-s $c " | sed 's/^-A /-D /' |
      while read -r rule; do eval "iptables -w -t nat $rule"; done
  done
  # Never rm -rf through a mount: unmount what is left under the temp dir.
  local mounts
  mounts="$(findmnt -rn -o TARGET | grep -F "$tmp/" | sort -r || true)"
  if [ -n "$mounts" ]; then
    while read -r m; do umount -l "$m" 2>/dev/null || true; done <<<"$mounts"
  fi
  if [ -n "${KEEP:-}" ] || findmnt -rn -o TARGET | grep -qF "$tmp/"; then
    echo "hack/bench.sh: kept $tmp (logs: *.log)" >&2
  else
    rm -rf "$tmp"
  fi
  exit "$status"
}
trap cleanup EXIT INT TERM

# A /24 in 10.128.0.0/9 that no address or route of the host covers (only
# the default route may match it), never an assumed 10.88.0.0/16.
free_subnet() {
  local a b i others
  for i in $(seq 50); do
    a=$((128 + RANDOM % 120))
    b=$((RANDOM % 256))
    others="$(ip -4 route show match "10.$a.$b.1" | grep -v '^default' || true)"
    [ -z "$others" ] || continue
    ip -4 -o addr show | grep -qF " 10.$a.$b." && continue
    printf '%s\n' "${cidrs[@]}" | grep -qxF "10.$a.$b.0/24" && continue
    echo "10.$a.$b.0/24"
    return 0
  done
  echo "hack/bench.sh: no free /24 found in 10.128.0.0/9" >&2
  return 1
}

free_bridge() { # prefix
  local name i
  for i in $(seq 20); do
    name="$1$((RANDOM % 100000))"
    ip link show "$name" >/dev/null 2>&1 || { echo "$name"; return 0; }
  done
  return 1
}

echo "hack/bench.sh: machine: $(nproc) cores, Linux $(uname -r), cgroup fs $(stat -fc %T /sys/fs/cgroup)$([ -e /sys/fs/cgroup/unified ] && echo ' + unified (hybrid)')" >&2

# The registry, on a free loopback port with temp storage.
start_registry "$tmp/registry" || exit 1
registry="127.0.0.1:$registry_port"
"$bin/yonggi-bench" push --registry "$registry" >"$tmp/published.txt"
echo "hack/bench.sh: registry $registry (pid $registry_pid):" >&2
sed 's/^/  /' "$tmp/published.txt" >&2

wait_socket() { # socket pid log
  local i
  for i in $(seq 300); do
    [ -S "$1" ] && return 0
    if ! kill -0 "$2" 2>/dev/null; then
      echo "hack/bench.sh: the daemon exited:" >&2
      tail -n 40 "$3" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "hack/bench.sh: no socket $1 after 30 s" >&2
  return 1
}

bench() { # name socket pid helper-match extra-args...
  local name="$1" socket="$2" pid="$3" match="$4"
  shift 4
  "$bin/yonggi-bench" run --name "$name" --endpoint "unix://$socket" --daemon-pid "$pid" \
    --helper-match "$match" --cgroup-parent "/$tag-$name" \
    --lifecycles "$lifecycles" --parallel "$parallel" --concurrency "$concurrency" \
    --out "$tmp/$name.json" "$@" || failed=1
}

# yonggi, with its built-in network on a bridge and subnet of its own.
y="$tmp/yonggi"
mkdir -p "$y/cni"
y_bridge="$(free_bridge ygb)"
bridges+=("$y_bridge")
y_cidr="$(free_subnet)"
cidrs+=("$y_cidr")
cat >"$y/config.toml" <<EOF
root = "$y/root"
state_dir = "$y/run"
socket = "$y/run/yonggi.sock"

[network]
cni_conf_dir = "$y/cni"
bridge = "$y_bridge"
pod_cidr = "$y_cidr"

[registries."docker.io"]
mirrors = ["http://$registry"]
mirrors_replace_upstream = true
EOF
"$bin/yonggi" serve --config "$y/config.toml" --log-level "${YONGGI_LOG_LEVEL:-info}" >"$tmp/yonggi.log" 2>&1 &
yonggi_pid=$!
wait_socket "$y/run/yonggi.sock" "$yonggi_pid" "$tmp/yonggi.log"
echo "hack/bench.sh: yonggi (pid $yonggi_pid), bridge $y_bridge, $y_cidr" >&2
bench yonggi "$y/run/yonggi.sock" "$yonggi_pid" "$y/"
stop_pid "$yonggi_pid"
yonggi_pid=""
results=()
notes=()
[ -s "$tmp/yonggi.json" ] && results+=("$tmp/yonggi.json")

if [ "$compare" = containerd ]; then
  c="$tmp/containerd"
  mkdir -p "$c/cni" "$c/certs.d/docker.io" "$c/certs.d/registry.k8s.io"
  c_bridge="$(free_bridge cdb)"
  bridges+=("$c_bridge")
  c_cidr="$(free_subnet)"
  cidrs+=("$c_cidr")
  for host in docker.io registry.k8s.io; do
    cat >"$c/certs.d/$host/hosts.toml" <<EOF
server = "http://$registry"

[host."http://$registry"]
  capabilities = ["pull", "resolve"]
EOF
  done
  # yonggi's built-in network (manifests/cni/yonggi-default.conflist) with
  # this run's bridge, subnet and IPAM dir.
  cat >"$c/cni/10-bench.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "yonggi-bench",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$c_bridge",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "$c_cidr" }]],
        "routes": [{ "dst": "0.0.0.0/0" }],
        "dataDir": "$c/ipam"
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
EOF
  cat >"$c/config.toml" <<EOF
version = 2
root = "$c/root"
state = "$c/state"
disabled_plugins = [
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "$c/containerd.sock"

[ttrpc]
  address = "$c/containerd.sock.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.9"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$c/cni"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$c/certs.d"
EOF
  # unshare execs sh, sh execs containerd: $! is containerd's pid.
  unshare --mount --propagation private -- sh -c \
    'mount -t tmpfs -o mode=0755 yonggi-bench-run /run &&
     mount -t tmpfs -o mode=0755 yonggi-bench-varlib /var/lib &&
     exec containerd --config "$1"' sh "$c/config.toml" >"$tmp/containerd.log" 2>&1 &
  containerd_pid=$!
  wait_socket "$c/containerd.sock" "$containerd_pid" "$tmp/containerd.log"
  echo "hack/bench.sh: containerd (pid $containerd_pid), bridge $c_bridge, $c_cidr" >&2
  bench containerd "$c/containerd.sock" "$containerd_pid" "$c/" \
    --pre-pull registry.k8s.io/pause:3.9
  stop_pid "$containerd_pid"
  containerd_pid=""
  [ -s "$tmp/containerd.json" ] && results+=("$tmp/containerd.json")
  notes+=("$(containerd --version), $(runc --version | head -n1)")
  notes+=("containerd's helpers are its containerd-shim-runc-v2 processes; yonggi's are its monitors and pod holders")
fi

notes+=("N=$lifecycles sequential lifecycles, P=$parallel pods in parallel (≤$concurrency in flight), yonggi built with the $profile profile")
note_args=()
for n in "${notes[@]}"; do note_args+=(--note "$n"); done
"$bin/yonggi-bench" table --date "$(date -u '+%Y-%m-%d %H:%M UTC')" --out "$out_file" \
  "${note_args[@]}" "${results[@]}" || failed=1
echo "hack/bench.sh: table written to $out_file" >&2
exit "$failed"
