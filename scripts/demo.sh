#!/usr/bin/env bash
# natgw demo: a live NAT gateway in network namespaces, with real traffic.
#
#   LAN 10.0.0.0/24                 gateway                     "internet"
#   client 10.0.0.10 --+
#                      +-- lan0 10.0.0.1 [natgw, AF_XDP] wan0 203.0.113.1 -- server 203.0.113.100
#   web    10.0.0.5  --+
#
# natgw masquerades the LAN behind 203.0.113.1 and forwards 203.0.113.1:8080
# to the inside web server. The demo sends HTTP, UDP and ping through it,
# shows what the servers saw, `natgw stats` and `natgw flows`, stops natgw
# and removes everything it created. Needs root; touches only the
# namespaces it makes (ngdemo-*).
#   scripts/demo.sh [--backend afxdp|tun]
set -euo pipefail
cd "$(dirname "$0")/.."
backend=afxdp
[ "${1:-}" = "--backend" ] && backend=${2:-afxdp}
[ "$(id -u)" -eq 0 ] || { echo "demo: run as root (it creates network namespaces)" >&2; exit 1; }
./scripts/setup.sh --quiet
echo "== building natgw (release)"
cargo build --release --quiet --bin natgw
natgw=$PWD/target/release/natgw

P=ngdemo-$$
work=$(mktemp -d /tmp/natgw-demo.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for n in gw lan cli web srv; do ip netns del "$P-$n" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
say() { printf '\n== %s\n' "$*"; }
inns() { local n=$1; shift; ip netns exec "$P-$n" "$@"; }

say "1. building the hosts: client, web (inside), server (outside), gateway"
for n in gw lan cli web srv; do ip netns add "$P-$n"; ip -n "$P-$n" link set lo up; done
ip -n "$P-lan" link add br0 type bridge && ip -n "$P-lan" link set br0 up
ip link add lan0 netns "$P-gw" type veth peer name gwport netns "$P-lan"
ip link add eth0 netns "$P-cli" type veth peer name cliport netns "$P-lan"
ip link add eth0 netns "$P-web" type veth peer name webport netns "$P-lan"
for p in gwport cliport webport; do ip -n "$P-lan" link set "$p" master br0 up; done
ip link add wan0 netns "$P-gw" type veth peer name eth0 netns "$P-srv"
ip -n "$P-gw" addr add 10.0.0.1/24 dev lan0 && ip -n "$P-gw" link set lan0 up
ip -n "$P-gw" addr add 203.0.113.1/24 dev wan0 && ip -n "$P-gw" link set wan0 up
for h in cli:10.0.0.10/24:10.0.0.1 web:10.0.0.5/24:10.0.0.1 srv:203.0.113.100/24:203.0.113.1; do
    IFS=: read -r n a gw <<<"$h"
    ip -n "$P-$n" addr add "$a" dev eth0 && ip -n "$P-$n" link set eth0 up
    ip -n "$P-$n" route add default via "$gw"
    # Hosts send full checksums, as on a real wire (see MACHINE-NOTES).
    inns "$n" ethtool -K eth0 tx off >/dev/null
done
inns gw sysctl -qw net.ipv4.ip_forward=0
echo "   gateway: lan0 10.0.0.1/24, wan0 203.0.113.1/24, kernel forwarding off (natgw does it)"

cat >"$work/natgw.toml" <<EOF
[gateway]
backend = "$backend"
control_socket = "$work/natgw.sock"

[[interface]]
name = "lan0"
role = "inside"
address = "10.0.0.1/24"

[[interface]]
name = "wan0"
role = "outside"
address = "203.0.113.1/24"

[[rule]]
name = "web"
iif = "wan0"
proto = "tcp"
dport = 8080
action = "dnat"
to = "10.0.0.5:80"

[[rule]]
name = "lan-out"
oif = "wan0"
src = "10.0.0.0/24"
action = "masquerade"
EOF
say "2. natgw's config"
"$natgw" check --config "$work/natgw.toml" | sed -n '/^rules/,/^limits/p' | sed '$d'

say "3. starting natgw ($backend backend)"
ip netns exec "$P-gw" "$natgw" run --config "$work/natgw.toml" 2>"$work/natgw.log" &
pids+=($!)
wait_for() { for _ in $(seq 100); do eval "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "   timed out waiting for: $1" >&2; return 1; }
wait_for 'grep -q "natgw running" "$work/natgw.log"' || { cat "$work/natgw.log"; exit 1; }
sed 's/^/   /' "$work/natgw.log"

# Servers: HTTP outside and inside (their logs name each client), UDP echo outside.
ip netns exec "$P-srv" python3 -m http.server 80 --bind 203.0.113.100 >"$work/srv-http.log" 2>&1 & pids+=($!)
ip netns exec "$P-web" python3 -m http.server 80 --bind 10.0.0.5 >"$work/web-http.log" 2>&1 & pids+=($!)
ip netns exec "$P-srv" python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("203.0.113.100", 7))
while True:
    d, a = s.recvfrom(2048); s.sendto(d + (" seen from %s:%d" % a).encode(), a)
' & pids+=($!)
wait_for "inns srv ss -ltn | grep -q 203.0.113.100:80"
wait_for "inns web ss -ltn | grep -q 10.0.0.5:80"

say "4. HTTP from the client to the outside server (masquerade)"
inns cli curl -s -m 5 -o /dev/null -w "   client got HTTP %{http_code} in %{time_total}s\n" http://203.0.113.100/ || true
echo "   server log: $(grep -m1 'GET /' "$work/srv-http.log" || echo 'no request seen')"

say "5. UDP: 100 datagrams from 100 client ports, each echoed back"
inns cli python3 -c '
import socket
ok = 0
for i in range(100):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
    s.sendto(b"hello %d" % i, ("203.0.113.100", 7))
    try:
        d = s.recv(2048); ok += 1; last = d.decode()
    except OSError:
        pass
print("   %d/100 answered; last answer: %s" % (ok, last))
'

say "6. ping from the client to the server, through the NAT"
inns cli ping -c 3 -i 0.2 -W 1 203.0.113.100 | sed -n '/transmitted/s/^/   /p' || true

say "7. the outside server opens 203.0.113.1:8080 (forwarded to 10.0.0.5:80)"
inns srv curl -s -m 5 -o /dev/null -w "   outside client got HTTP %{http_code}\n" http://203.0.113.1:8080/ || true
echo "   inside web server log: $(grep -m1 'GET /' "$work/web-http.log" || echo 'no request seen')"

say "8. natgw stats"
"$natgw" stats --socket "$work/natgw.sock" | sed 's/^/   /'

say "9. natgw flows --proto tcp (like conntrack -L)"
"$natgw" flows --socket "$work/natgw.sock" --proto tcp 2>&1 | sed 's/^/   /'

say "10. stopping natgw (SIGTERM)"
kill -TERM "${pids[0]}"; wait "${pids[0]}" 2>/dev/null || true
grep -E "stopping|stopped" "$work/natgw.log" | sed 's/^/   /'
if ip -n "$P-gw" link show | grep -q xdp; then echo "   XDP program still attached!"; else echo "   no XDP program left on lan0/wan0"; fi
echo
echo "demo done; removing the namespaces"
