#!/usr/bin/env bash
# Installs the Debian packages yonggi's build, runtime and tests need, when
# missing. Idempotent: does nothing (and no `apt-get update`) when all are there.
set -euo pipefail

packages=(
  protobuf-compiler            # protoc, for the CRI protobuf bindings (k8s-cri build script)
  docker-registry              # a real OCI registry for the tests, on loopback
  containernetworking-plugins  # CNI plugins (bridge, host-local, loopback, portmap) in /usr/lib/cni
  busybox                      # dynamically linked busybox: the base of the test images
  iproute2                     # ip netns / link, used by tests to check for leaks
  iptables                     # the portmap CNI plugin needs it for host ports
  binutils                     # as + ld: assemble the setuid `nnp` of the critest nonewprivs image
  curl                         # hack/critest.sh polls the registry
  libseccomp-dev               # libseccomp, linked by the `libseccomp` crate: seccomp profiles → BPF
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages ${missing[*]}; run as root to install them" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
