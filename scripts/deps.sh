#!/usr/bin/env bash
# Installs the Debian packages weft's lab, tests and benchmarks need (Debian 12). Idempotent.
set -euo pipefail
PKGS=(iproute2 iputils-ping nftables iptables iperf3 etcd-server etcd-client containernetworking-plugins
      podman runc busybox-static ethtool curl jq procps kmod strace stress-ng containerd wireguard-go wireguard-tools
      tcpdump)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
