#!/usr/bin/env bash
# natgw demo: a masquerade + port-forward gateway, shown on a capture.
#
# Builds natgw, writes a capture of what a gateway sees on its LAN and WAN
# links (web, ping, DNS, a closed port answered by ICMP, a port-forwarded
# connection, a traceroute probe, a corrupted frame), runs natgw's NAT core
# over it offline with examples/natgw.toml, and shows every packet before
# and after translation, the counters, the flows left, and the output
# capture as tcpdump reads it. Needs no root and touches no network.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --quiet
echo "== building natgw (release)"
cargo build --release --quiet --bin natgw --example democap
natgw=target/release/natgw
work=$(mktemp -d /tmp/natgw-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT

echo
echo "== 1. the config: LAN 10.0.0.0/24 masqueraded to 203.0.113.1, 10.0.0.5:80 published on :8080"
$natgw check --config examples/natgw.toml

echo
echo "== 2. a capture of both links"
target/release/examples/democap "$work/in.pcap"

echo
echo "== 3. natgw replay: each packet as received => as natgw transmits it"
$natgw replay --config examples/natgw.toml --in "$work/in.pcap" --out "$work/out.pcap"

if command -v tcpdump >/dev/null; then
    echo
    echo "== 4. the output capture, read by tcpdump"
    tcpdump -nn -r "$work/out.pcap" 2>/dev/null
fi
