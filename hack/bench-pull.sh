#!/usr/bin/env bash
# Pull benchmark: a cold pull + unpack of the ~100 MB, 5-layer bench image
# (`yonggi-testimages push --set bench`) from a loopback registry, by yonggi
# (crictl over its socket) and by containerd (`ctr images pull --plain-http`,
# which fetches and unpacks into its overlayfs snapshotter), each on its own
# temp root and socket. Prints wall time, MB/s (compressed bytes) and the ratio.
#
# Usage (root): hack/bench-pull.sh [runs]   (default 3 runs each, best reported)
# YONGGI_BIN_DIR=DIR uses prebuilt `yonggi` and `yonggi-testimages` from DIR
# instead of `cargo build --release`.
# A benchmark, not a test: it prints figures and never fails on them.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"

if [ "$(id -u)" -ne 0 ]; then
  echo "bench-pull: run as root" >&2
  exit 1
fi
hack/install-deps.sh
if ! command -v containerd >/dev/null || ! command -v ctr >/dev/null; then
  # Debian's package; on a machine without systemd as init no service starts.
  echo "bench-pull: installing containerd" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends containerd >/dev/null
fi

if [ -n "${YONGGI_BIN_DIR:-}" ]; then
  bin="$YONGGI_BIN_DIR"
else
  cargo build --release --locked --bin yonggi --bin yonggi-testimages >&2
  bin="$PWD/target/release"
fi

work="$(mktemp -d /tmp/yonggi-bench.XXXXXX)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  # containerd's snapshotter may leave mounts under its root.
  { grep -o " $work[^ ]*" /proc/self/mounts || true; } | sort -r | while read -r m; do umount -l "$m" || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
now() { date +%s.%N; }
wait_for() { # path
  for _ in $(seq 1 300); do [ -S "$1" ] && return 0; sleep 0.05; done
  echo "bench-pull: $1 did not appear" >&2
  exit 1
}

port="$(free_port)"
mkdir -p "$work/registry"
cat >"$work/registry.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: 127.0.0.1:$port}
YML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 200); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.05; done
"$bin/yonggi-testimages" push --registry "127.0.0.1:$port" --set bench >&2
image="127.0.0.1:$port/yonggi-test/big:latest"
manifest="$(curl -fs -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://127.0.0.1:$port/v2/yonggi-test/big/manifests/latest")"
bytes="$(echo "$manifest" | jq '[.layers[].size] | add + 0')"
layers="$(echo "$manifest" | jq '.layers | length')"
echo "bench-pull: $image, $layers layers, $bytes compressed bytes" >&2

bench_yonggi() { # run
  local dir="$work/yonggi-$1"
  mkdir -p "$dir"
  cat >"$dir/config.toml" <<TOML
root = "$dir/root"
state_dir = "$dir/run"
socket = "$dir/run/yonggi.sock"
[log]
level = "warn"
TOML
  "$bin/yonggi" serve --config "$dir/config.toml" 2>"$dir/log" &
  local pid=$!
  pids+=("$pid")
  wait_for "$dir/run/yonggi.sock"
  local start end
  start="$(now)"
  local crictl=(crictl --runtime-endpoint "unix://$dir/run/yonggi.sock" --image-endpoint "unix://$dir/run/yonggi.sock")
  "${crictl[@]}" pull "$image" >/dev/null 2>&1
  end="$(now)"
  if ! "${crictl[@]}" inspecti "$image" >/dev/null 2>&1; then
    echo "bench-pull: yonggi did not pull $image; log:" >&2
    cat "$dir/log" >&2
    exit 1
  fi
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
  echo "$end - $start" | bc
}

bench_containerd() { # run
  local dir="$work/containerd-$1"
  mkdir -p "$dir"
  cat >"$dir/config.toml" <<TOML
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$dir/containerd.sock"
[ttrpc]
  address = "$dir/containerd.sock.ttrpc"
[debug]
  address = "$dir/debug.sock"
TOML
  containerd --config "$dir/config.toml" >"$dir/log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  wait_for "$dir/containerd.sock"
  local start end
  start="$(now)"
  ctr --address "$dir/containerd.sock" -n k8s.io images pull --plain-http "$image" >/dev/null
  end="$(now)"
  ctr --address "$dir/containerd.sock" -n k8s.io images check | grep -q "$image.*complete" || {
    echo "bench-pull: containerd did not pull $image" >&2
    exit 1
  }
  kill "$pid"; wait "$pid" 2>/dev/null || true
  { grep -o " $dir[^ ]*" /proc/self/mounts || true; } | sort -r | while read -r m; do umount -l "$m" || true; done
  rm -rf "$dir"
  echo "$end - $start" | bc
}

best() { sort -n | head -1; }
y_times=(); c_times=()
for run in $(seq 1 "$runs"); do
  sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
  y_times+=("$(bench_yonggi "$run")")
  sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
  c_times+=("$(bench_containerd "$run")")
  echo "bench-pull: run $run: yonggi ${y_times[-1]}s, containerd ${c_times[-1]}s" >&2
done
y="$(printf '%s\n' "${y_times[@]}" | best)"
c="$(printf '%s\n' "${c_times[@]}" | best)"
mb="$(echo "scale=1; $bytes / 1000000" | bc)"
printf 'image        %s (%s layers, %s MB compressed)\n' "$image" "$layers" "$mb"
printf 'yonggi       %6.2f s  %7.1f MB/s   (best of %s)\n' "$y" "$(echo "$bytes / 1000000 / $y" | bc -l)" "$runs"
printf 'containerd   %6.2f s  %7.1f MB/s   (best of %s)\n' "$c" "$(echo "$bytes / 1000000 / $c" | bc -l)" "$runs"
printf 'ratio        yonggi/containerd = %.2f (below 1: yonggi is faster)\n' "$(echo "$y / $c" | bc -l)"
