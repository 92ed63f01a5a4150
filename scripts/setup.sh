#!/usr/bin/env bash
# Installs everything natgw's build, tests, demo and benchmarks need, on a
# fresh Debian machine, idempotently: the Debian packages (only the missing
# ones; this is the one place that names them), the bpffs mount libxdp
# wants, and checks the Rust toolchain. Safe to run again and again.
#   scripts/setup.sh [--quiet]
# Needs root for the installs and the mount; without root it only says
# what is missing and exits non-zero when something is.
set -euo pipefail
quiet=${1:-}
say() { [ "$quiet" = "--quiet" ] || echo "setup: $*"; }

# Build: xsk-rs builds libxdp and libbpf from source (libxdp-sys,
# libbpf-sys): clang/llvm for its BPF objects, libelf and zlib, m4, and
# xdp-tools' configure needs the libpcap headers (pcap/dlt.h). clang also
# compiles natgw's own XDP program (bpf/natgw_xdp.c).
BUILD_PACKAGES=(clang llvm libelf-dev zlib1g-dev libpcap-dev pkg-config m4 make gcc)
# Tests and demo: namespaces and veths (iproute2), the kernel NAT reference
# and the stop guard (nftables), offloads (ethtool), real clients and
# servers (curl, ping, traceroute, socat, iperf3, python3), captures
# (tcpdump), trafgen (netsniff-ng), the metrics endpoint checked by
# promtool and scraped by a real Prometheus server (prometheus), the HA
# pair's VRRP (keepalived), the NAT session log's IPFIX export decoded by
# tshark.
TEST_PACKAGES=(iproute2 nftables ethtool procps util-linux socat iperf3 curl iputils-ping
    iputils-tracepath traceroute python3 tcpdump netsniff-ng prometheus keepalived tshark)
# Benchmarks (bench/run.sh, bench/hitless.sh): web server for the
# connection-rate figure, conntrack for the kernel's table, gnuplot for the
# plots, valgrind for instruction counts.
BENCH_PACKAGES=(nginx-light conntrack gnuplot-nox valgrind)
ALL=("${BUILD_PACKAGES[@]}" "${TEST_PACKAGES[@]}" "${BENCH_PACKAGES[@]}")

missing=()
for p in "${ALL[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    say "packages present"
elif [ "$(id -u)" -ne 0 ]; then
    echo "setup: not root; cannot install: ${missing[*]}" >&2
    echo "setup: run as root: sudo $0" >&2
    exit 1
else
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    still=()
    for p in "${missing[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || still+=("$p")
    done
    if [ ${#still[@]} -gt 0 ]; then
        echo "setup: apt-get did not install: ${still[*]}" >&2
        exit 1
    fi
fi

if ! command -v cargo >/dev/null; then
    echo "setup: cargo not found; natgw needs a Rust toolchain (rustup)" >&2
    exit 1
fi

# bpffs: libxdp pins its dispatcher state there (idempotent; root only).
if [ "$(id -u)" -eq 0 ] && ! mountpoint -q /sys/fs/bpf; then
    say "mounting bpffs on /sys/fs/bpf"
    mkdir -p /sys/fs/bpf
    mount -t bpf bpf /sys/fs/bpf
fi
# A second bpffs where `ip netns exec` does not hide it (it mounts a fresh
# sysfs over /sys): natgw pins its XDP programs there when it runs in a
# network namespace, so a handover or restart there keeps them attached
# and parking (see src/dataplane/sys/bpf.rs, pin_root).
if [ "$(id -u)" -eq 0 ] && ! mountpoint -q /run/natgw/bpffs; then
    say "mounting bpffs on /run/natgw/bpffs"
    mkdir -p /run/natgw/bpffs
    mount -t bpf bpf /run/natgw/bpffs
fi
