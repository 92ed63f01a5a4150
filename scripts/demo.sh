#!/usr/bin/env bash
# natgw demo: a live NAT gateway in network namespaces, with real traffic,
# showing the three things natgw is for:
#   NAT                    masquerade, a port forward, ping, UDP
#   load balancing         a virtual service over three real web servers
#   change without         one long-lived TCP connection, every echo
#   interruption           checked, across `natgw reload` with a changed
#                          ruleset and across `natgw run --takeover`
#
#   inside 10.0.0.0/24                 gateway                outside 203.0.113.0/24
#   cl1  10.0.0.10 ─┐                                       ┌─ out  203.0.113.100
#   cl2  10.0.0.11 ─┤                                       ├─ out2 203.0.113.101
#   srv  10.0.0.5  ─┼── lan0 10.0.0.1 [natgw] wan0 203.0.113.1 ─┴─ rtr  203.0.113.254
#   web1 10.0.0.21 ─┤                    VIP 203.0.113.10:80
#   web2 10.0.0.22 ─┤
#   web3 10.0.0.23 ─┘
#
# The hosts are the shared test topology (scripts/netns.sh) plus three web
# servers. Needs root; installs what it needs (scripts/setup.sh); touches
# only the namespaces it makes (ngdemo<pid>-*) and removes them, and every
# process it started, at the end, on failure and on Ctrl-C.
#   scripts/demo.sh [--backend afxdp|tun]
set -euo pipefail
cd "$(dirname "$0")/.."
backend=afxdp
case "${1:-}" in
"") ;;
--backend)
    backend=${2:-}
    [ "$backend" = afxdp ] || [ "$backend" = tun ] || { echo "demo: --backend afxdp|tun" >&2; exit 2; }
    ;;
*) echo "usage: scripts/demo.sh [--backend afxdp|tun]" >&2; exit 2 ;;
esac
[ "$(id -u)" -eq 0 ] || { echo "demo: run as root (it creates network namespaces)" >&2; exit 1; }
./scripts/setup.sh --quiet
echo "== building natgw (release)"
cargo build --release --quiet --bin natgw
natgw=$PWD/target/release/natgw

export NETNS_EXTRA_INSIDE="web1:10.0.0.21 web2:10.0.0.22 web3:10.0.0.23" NETNS_QUIET=1
# shellcheck source=scripts/netns.sh
. ./scripts/netns.sh
P=ngdemo$$
work=$(mktemp -d /tmp/natgw-demo.XXXXXX)
pids=()
natgw_pid=
cleanup() {
    [ -n "$natgw_pid" ] && kill "$natgw_pid" 2>/dev/null
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    netns_down "$P" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
say() { printf '\n== %s\n' "$*"; }
step() { printf '\n-- %s\n' "$*"; }
indent() { sed 's/^/   /'; }
wait_for() { for _ in $(seq 150); do eval "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "   timed out waiting for: $1" >&2; return 1; }
# Background process in a host; its PID (ip netns exec execs it) is kept.
bg() { local n=$1; shift; ip netns exec "$P-$n" "$@" & pids+=($!); }

say "1. the hosts: clients and servers inside, servers outside, a bare gateway"
netns_up "$P"
echo "   namespaces: $(printf "$P-%s " "${HOSTS[@]}")"
echo "   gateway: lan0 10.0.0.1/24, wan0 203.0.113.1/24, kernel forwarding off (natgw does it)"

# The topology's config plus a load-balanced web service on 203.0.113.10:80.
{
    printf '%s\n' "$(netns_config)" | sed "s|^\[gateway\]|[gateway]\nbackend = \"$backend\"\ncontrol_socket = \"$work/natgw.sock\"|"
    cat <<'EOF'

[[service]]
address = "203.0.113.10"
port = 80
proto = "tcp"
scheduler = "rr"

[[service.real]]
address = "10.0.0.21"
port = 80

[[service.real]]
address = "10.0.0.22"
port = 80

[[service.real]]
address = "10.0.0.23"
port = 80
EOF
} >"$work/natgw.toml"
say "2. natgw's config ($work/natgw.toml), as natgw check reads it"
"$natgw" check --config "$work/natgw.toml" | sed -n '/^rules/,/^limits/p; /^services/,/^snapshot/p' | grep -v -e '^limits' -e '^snapshot' | indent

say "3. starting natgw ($backend backend)"
ip netns exec "$P-gw" "$natgw" run --config "$work/natgw.toml" 2>"$work/natgw.log" &
natgw_pid=$!
wait_for 'grep -q "natgw running" "$work/natgw.log"' || { cat "$work/natgw.log"; exit 1; }
grep -E "attached|natgw running" "$work/natgw.log" | sed 's/^\[[^]]*\] *//' | indent

# Servers: HTTP outside (out) and inside (srv), whose logs name each client;
# three named web servers for the service; UDP echo and a line echo outside.
NAMED='import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
name, addr = sys.argv[1], sys.argv[2]
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def do_GET(self):
        body = ("%s saw client %s\n" % (name, self.client_address[0])).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
ThreadingHTTPServer((addr, 80), H).serve_forever()'
bg out python3 -m http.server 80 --bind 203.0.113.100 >"$work/out-http.log" 2>&1
bg srv python3 -m http.server 80 --bind 10.0.0.5 >"$work/srv-http.log" 2>&1
for i in 1 2 3; do bg "web$i" python3 -c "$NAMED" "web$i" "10.0.0.2$i"; done
bg out python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("203.0.113.100", 7))
while True:
    d, a = s.recvfrom(2048); s.sendto(d + (" seen from %s:%d" % a).encode(), a)
'
bg out python3 -c '
import socketserver
class H(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(line)
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(("203.0.113.100", 9000), H).serve_forever()
'
wait_for "nsx out ss -ltn | grep -q 203.0.113.100:80"
wait_for "nsx out ss -ltn | grep -q 203.0.113.100:9000"
wait_for "nsx srv ss -ltn | grep -q 10.0.0.5:80"
for i in 1 2 3; do wait_for "nsx web$i ss -ltn | grep -q 10.0.0.2$i:80"; done

say "NAT"
step "4. HTTP from cl1 to the outside server (masquerade)"
nsx cl1 curl -s -m 5 -o /dev/null -w "   cl1 got HTTP %{http_code} in %{time_total}s\n" http://203.0.113.100/ || echo "   request failed"
echo "   outside server's log: $(grep -m1 'GET /' "$work/out-http.log" || echo 'no request seen')"

step "5. UDP: 100 datagrams from 100 client ports, each echoed back"
nsx cl1 python3 -c '
import socket
ok = 0; last = "none"
for i in range(100):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
    s.sendto(b"hello %d" % i, ("203.0.113.100", 7))
    try:
        d = s.recv(2048); ok += 1; last = d.decode()
    except OSError:
        pass
print("   %d/100 answered; last answer: %s" % (ok, last))
'

step "6. ping from cl1 to the outside server, through the NAT"
nsx cl1 ping -c 3 -i 0.2 -W 1 203.0.113.100 | sed -n '/transmitted/s/^/   /p' || true

step "7. port forward: out opens 203.0.113.1:8080, natgw sends it to srv 10.0.0.5:80"
nsx out curl -s -m 5 -o /dev/null -w "   out got HTTP %{http_code}\n" http://203.0.113.1:8080/ || echo "   request failed"
echo "   inside server's log: $(grep -m1 'GET /' "$work/srv-http.log" || echo 'no request seen')"

say "LOAD BALANCING"
step "8. 30 requests from out and out2 to the virtual service 203.0.113.10:80 (round robin over web1..web3)"
for h in out out2; do
    for _ in $(seq 15); do nsx "$h" curl -s -m 5 http://203.0.113.10/ || echo "failed"; done
done >"$work/lb.txt"
echo "   answered by: $(awk '{print $1}' "$work/lb.txt" | sort | uniq -c | awk '{printf "%s %s, ", $2, $1}' | sed 's/, $//') (round robin: 10 each)"
echo "   each server saw the real client: $(awk '{print $NF}' "$work/lb.txt" | sort -u | tr '\n' ' ')"
step "natgw services (like ipvsadm -L -n) and --stats"
"$natgw" services --socket "$work/natgw.sock" | indent
"$natgw" services --socket "$work/natgw.sock" --stats | sed -n '/^Prot/,$p' | indent

say "CHANGE WITHOUT INTERRUPTION"
step "9. a long-lived TCP connection: cl2 -> out:9000, a line every 5 ms, every echo checked"
cat >"$work/chat.py" <<'EOF'
import json, os, socket, sys, time
host, port, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.create_connection((host, port), timeout=5)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
s.settimeout(20)
f = s.makefile("rb")
sent = echoed = 0; longest = 0.0; err = None
last = time.time()
print("CONNECTED", flush=True)
try:
    while not os.path.exists(stop):
        msg = b"line %d\n" % sent
        s.sendall(msg); sent += 1
        if f.readline() != msg:
            raise RuntimeError("wrong or missing echo for line %d" % (sent - 1))
        echoed += 1
        now = time.time(); longest = max(longest, now - last); last = now
        time.sleep(0.005)
except Exception as e:
    err = repr(e)
print(json.dumps({"sent": sent, "echoed": echoed, "lost": sent - echoed,
                  "longest_pause_ms": round(longest * 1000, 1), "error": err}), flush=True)
EOF
ip netns exec "$P-cl2" python3 "$work/chat.py" 203.0.113.100 9000 "$work/stop" >"$work/chat.out" 2>&1 &
chat_pid=$!
pids+=("$chat_pid")
wait_for 'grep -q CONNECTED "$work/chat.out"' || { cat "$work/chat.out"; exit 1; }
sleep 2
"$natgw" flows --socket "$work/natgw.sock" --proto tcp --dport 9000 2>/dev/null | indent

step "10. natgw reload with a changed ruleset: a new port forward 203.0.113.1:8081 -> web1:80"
cp "$work/natgw.toml" "$work/natgw-v2.toml"
cat >>"$work/natgw-v2.toml" <<'EOF'

[[rule]]
name = "web1-direct"
dst = "203.0.113.1"
proto = "tcp"
dport = 8081
action = "dnat"
to = "10.0.0.21:80"
EOF
"$natgw" reload --socket "$work/natgw.sock" --config "$work/natgw-v2.toml" | indent
nsx out curl -s -m 5 http://203.0.113.1:8081/ | sed 's/^/   new rule works: /' || echo "   new rule: request failed"
sleep 2

step "11. natgw run --takeover: a new natgw process takes over from the running one"
old_pid=$natgw_pid
ip netns exec "$P-gw" "$natgw" run --config "$work/natgw-v2.toml" --takeover 2>"$work/natgw2.log" &
natgw_pid=$!
wait_for 'grep -q "natgw running" "$work/natgw2.log"' || { cat "$work/natgw2.log"; exit 1; }
wait "$old_pid" 2>/dev/null || true
grep -E "handover|handed" "$work/natgw.log" | sed 's/^\[[^]]*\] *//; s/^/   old: /' 
grep -E "takeover|restored|natgw running" "$work/natgw2.log" | sed 's/^\[[^]]*\] *//; s/^/   new: /'
sleep 2

step "12. the connection's record across the reload and the handover"
touch "$work/stop"
wait_for 'grep -q "{" "$work/chat.out"' || true
python3 - "$work/chat.out" <<'EOF'
import json, sys
r = json.loads([l for l in open(sys.argv[1]) if l.startswith("{")][-1])
print("   messages sent %d, echoed %d, lost %d; longest time between two echoes %.1f ms"
      % (r["sent"], r["echoed"], r["lost"], r["longest_pause_ms"]))
print("   the connection " + ("broke: " + r["error"] if r["error"] else "stayed open throughout"))
EOF

say "13. natgw stats (the new process: counters carried over)"
"$natgw" stats --socket "$work/natgw.sock" | indent

say "14. natgw flows (like conntrack -L): the long-lived connection, and a count per protocol"
"$natgw" flows --socket "$work/natgw.sock" --proto tcp --dport 9000 2>/dev/null | indent
for proto in tcp udp icmp; do
    echo "   $proto: $("$natgw" flows --socket "$work/natgw.sock" --proto $proto --count 2>&1 | tail -1)"
done

say "15. stopping natgw (SIGTERM)"
kill -TERM "$natgw_pid"
wait "$natgw_pid" 2>/dev/null || true
natgw_pid=
grep -E "natgw stopping$|natgw stopped cleanly" "$work/natgw2.log" | sed 's/^\[[^]]*\] *//' | indent
if [ "$backend" = afxdp ]; then
    if nsx gw ip link show | grep -q xdp; then echo "   XDP program still attached!"; else echo "   no XDP program left on lan0/wan0"; fi
else
    if nsx gw ip -o link show type tun | grep -q .; then echo "   TUN device left behind!"; else echo "   no TUN device left in the gateway"; fi
fi
echo
echo "demo done; removing the namespaces"
