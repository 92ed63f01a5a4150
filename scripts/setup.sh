#!/usr/bin/env bash
# Installs what natgw's demo and tests need, idempotently: Debian packages
# (only the missing ones), the bpffs mount. Safe to run again and again.
#   scripts/setup.sh [--quiet]
set -euo pipefail
quiet=${1:-}
say() { [ "$quiet" = "--quiet" ] || echo "setup: $*"; }

# Needed to build natgw's AF_XDP backend (xsk-rs builds libxdp/libbpf, and
# clang compiles natgw's XDP program).
BUILD_PACKAGES=(clang llvm libelf-dev zlib1g-dev pkg-config m4 make gcc)
# Tools the tests and demo call (tcpdump reads replay output).
PACKAGES=(tcpdump iproute2 nftables ethtool procps socat iperf3 curl iputils-ping iputils-tracepath traceroute python3 netsniff-ng)

if [ "$(id -u)" -ne 0 ]; then
    echo "setup: not root; skipping package installs (need: ${PACKAGES[*]})" >&2
else
    missing=()
    for p in "${BUILD_PACKAGES[@]}" "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        say "packages present"
    fi
fi

if ! command -v cargo >/dev/null; then
    echo "setup: cargo not found; natgw needs a Rust toolchain (rustup)" >&2
    exit 1
fi

# bpffs for pinned BPF objects (idempotent; root only).
if [ "$(id -u)" -eq 0 ]; then
    mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
fi
