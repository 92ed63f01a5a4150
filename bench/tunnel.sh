#!/usr/bin/env bash
# The cost of natgw's IPIP/GRE tunnel (issue 14): 64-byte UDP through two
# natgw gateways A and B, plain forwarding vs through a tunnel A -> B
# (encapsulated at A, decapsulated at B), all in one run.
#
#   sudo ./bench/tunnel.sh            # REPS=3 DUR=5: about 2 minutes
#
#   cli 10.0.0.10 -- lan0 A (natgw) wan0 203.0.113.1 ---- wan0 B (natgw) lan0 -- srv 10.9.0.5
#                    10.0.0.1                       203.0.113.50      10.9.0.1
#   plain: A routes 10.9.0.0/24 via 203.0.113.50      (two natgw hops, no NAT)
#   ipip/gre: A routes 10.9.0.0/24 dev tun1           (the same two hops, plus encap/decap)
#
# The generator (bench/udpgen.c, 60-byte frames, 1024 flows, offered far above
# what the gateways deliver) runs on CPU 0; both natgw workers are pinned to
# CPU 1, so they share one core and the delivered rate is set by the sum of
# A's and B's per-packet work: the tunnel's cost per packet is
# 1/pps(tunnel) - 1/pps(plain), both gateways together. The sink counts at
# the server's ingress (nft netdev) and drops. Offloads off on every veth.
#
# Everything is named ngtunb<PID>-*; the namespaces and the processes this
# script started (by PID) are removed on exit, failure or Ctrl-C. Writes
# perf/tunnel-latest.md (or $OUT.md).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
REPS=${REPS:-3}
DUR=${DUR:-5}
WARM=${WARM:-1}
RATE=${RATE:-3000000}
PACED=${PACED:-100000}
MODES=${MODES:-"plain ipip gre"}
OUT=${OUT:-perf/tunnel-latest}
NATGW=${NATGW:-$ROOT/target/release/natgw}
P=ngtunb$$
work=$(mktemp -d /tmp/$P.XXXX)
pids=()

[ "$(id -u)" -eq 0 ] || { echo "tunnel.sh: needs root" >&2; exit 1; }
[ -x "$NATGW" ] || cargo build --release --bin natgw

cleanup() {
    local p
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    sleep 0.5
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    for ns in cli a b srv; do
        for p in $(ip netns pids "$P-$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
        ip netns del "$P-$ns" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

inns() { local ns=$1; shift; ip netns exec "$P-$ns" "$@"; }
cc -O2 -Wall -o "$work/udpgen" bench/udpgen.c

# --- topology ---------------------------------------------------------------------------
for ns in cli a b srv; do ip netns add "$P-$ns"; done
ip link add name eth0 netns "$P-cli" type veth peer name lan0 netns "$P-a"
ip link add name wan0 netns "$P-a" type veth peer name wan0 netns "$P-b"
ip link add name lan0 netns "$P-b" type veth peer name eth0 netns "$P-srv"
setup() { # ns dev addr
    inns "$1" sh -c "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
        ip link set lo up; ip addr add $3 dev $2; ethtool -K $2 tx off >/dev/null 2>&1 || true; ip link set $2 up"
}
setup cli eth0 10.0.0.10/24
setup a lan0 10.0.0.1/24
setup a wan0 203.0.113.1/24
setup b wan0 203.0.113.50/24
setup b lan0 10.9.0.1/24
setup srv eth0 10.9.0.5/24
inns cli ip route add default via 10.0.0.1
inns srv ip route add default via 10.9.0.1
for ns in a b; do inns "$ns" sysctl -qw net.ipv4.ip_forward=0; done
inns srv nft -f - <<'EOF'
table netdev sink {
    counter rx {}
    chain in {
        type filter hook ingress device "eth0" priority -500; policy accept;
        udp dport 7000-7100 counter name "rx" drop
    }
}
EOF
sleep 1
CLI_MAC=$(inns cli cat /sys/class/net/eth0/address)
A_MAC=$(inns a cat /sys/class/net/lan0/address)

gw_config() { # name mode lan wan route-to route-via-or-dev tunnel-local tunnel-remote
    local name=$1 mode=$2
    cat <<EOF
[gateway]
control_socket = "$work/$name.sock"
unmatched = "forward"
[afxdp]
mode = "auto"
queues = 1
cpus = [1]
[[interface]]
name = "lan0"
role = "inside"
address = "$3"
[[interface]]
name = "wan0"
role = "outside"
address = "$4"
EOF
    if [ "$mode" = plain ]; then
        printf '[[route]]\nto = "%s"\nvia = "%s"\n' "$5" "$8"
    else
        printf '[[tunnel]]\nname = "tun1"\nmode = "%s"\nlocal = "%s"\nremote = "%s"\n' "$mode" "$7" "$8"
        [ "$mode" = gre ] && printf 'key = 7\n'
        printf '[[route]]\nto = "%s"\ndev = "tun1"\n' "$5"
    fi
}

start_gw() { # ns mode
    local ns=$1 mode=$2
    if [ "$ns" = a ]; then
        gw_config a "$mode" 10.0.0.1/24 203.0.113.1/24 10.9.0.0/24 - 203.0.113.1 203.0.113.50 >"$work/a.toml"
    else
        gw_config b "$mode" 10.9.0.1/24 203.0.113.50/24 10.0.0.0/24 - 203.0.113.50 203.0.113.1 >"$work/b.toml"
    fi
    : >"$work/$ns.log"
    # `ip netns exec` and taskset exec natgw: $! is natgw's PID.
    ip netns exec "$P-$ns" taskset -c 1 "$NATGW" run --config "$work/$ns.toml" >>"$work/$ns.log" 2>&1 &
    pids+=($!)
    eval "${ns}_pid=$!"
    local i
    for i in $(seq 150); do
        grep -qs "natgw running" "$work/$ns.log" && return 0
        sleep 0.1
    done
    cat "$work/$ns.log" >&2
    return 1
}
stop_gw() { # pid
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
count() { inns srv nft -j list counter netdev sink rx | python3 -c 'import json,sys; print([o["counter"]["packets"] for o in json.load(sys.stdin)["nftables"] if "counter" in o][0])'; }

results=()
for rep in $(seq "$REPS"); do
    for mode in $MODES; do
        start_gw a "$mode"
        start_gw b "$mode"
        # Prime ARP and flows, then measure.
        inns cli taskset -c 0 "$work/udpgen" send --if eth0 --src-mac "$CLI_MAC" --dst-mac "$A_MAC" \
            --src 10.0.0.10 --dst 10.9.0.5 --dport 7000 --flows 1024 --rate 20000 --duration 1 >/dev/null
        c0=$(count)
        gen=$(inns cli taskset -c 0 "$work/udpgen" send --if eth0 --src-mac "$CLI_MAC" --dst-mac "$A_MAC" \
            --src 10.0.0.10 --dst 10.9.0.5 --dport 7000 --flows 1024 --rate "$RATE" --warm 0 --duration "$DUR")
        sleep 0.5
        c1=$(count)
        sent=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["sent"])' "$gen")
        pps=$(( (c1 - c0) / DUR ))
        # Paced: CPU time of both natgw processes per delivered packet.
        c0=$(count)
        t0=$(( $(cpu_ticks "$a_pid") + $(cpu_ticks "$b_pid") ))
        inns cli taskset -c 0 "$work/udpgen" send --if eth0 --src-mac "$CLI_MAC" --dst-mac "$A_MAC" \
            --src 10.0.0.10 --dst 10.9.0.5 --dport 7000 --flows 1024 --rate "$PACED" --warm 0 --duration "$DUR" >/dev/null
        sleep 0.5
        t1=$(( $(cpu_ticks "$a_pid") + $(cpu_ticks "$b_pid") ))
        c2=$(count)
        hz=$(getconf CLK_TCK)
        cpu_ns=$(( (t1 - t0) * 1000000000 / hz / (c2 - c0 > 0 ? c2 - c0 : 1) ))
        stats_a=$("$NATGW" stats --socket "$work/a.sock" | grep -E '^tunnel|drops' | tr '\n' ' ' || true)
        # Engine time per packet (natgw's own histogram: median over batches).
        p50() { "$NATGW" stats --json --socket "$work/$1.sock" | python3 -c 'import json,sys; print(json.load(sys.stdin)["workers"][0]["latency_ns"][0])'; }
        eng_a=$(p50 a)
        eng_b=$(p50 b)
        printf '%-6s rep %d: offered %d pps, delivered %d pps; paced %d pps: %d delivered, natgw A+B CPU %d ns/packet; engine p50 A %d ns B %d ns   [A: %s]\n' \
            "$mode" "$rep" $((sent / DUR)) "$pps" "$PACED" $(( (c2 - c0) / DUR )) "$cpu_ns" "$eng_a" "$eng_b" "$stats_a" >&2
        results+=("$mode $rep $((sent / DUR)) $pps $(( (c2 - c0) / DUR )) $cpu_ns $eng_a $eng_b")
        stop_gw "$a_pid"
        stop_gw "$b_pid"
    done
done

python3 - "$OUT" "$REPS" "$DUR" "$PACED" "$(uptime)" "${results[@]}" <<'EOF'
import statistics, sys, datetime, subprocess
out, reps, dur, paced, up, rows = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6:]
by, cpu, pdel, eng = {}, {}, {}, {}
for r in rows:
    mode, rep, offered, pps, pd, cns, ea, eb = r.split()
    by.setdefault(mode, []).append((int(offered), int(pps)))
    cpu.setdefault(mode, []).append(int(cns))
    pdel.setdefault(mode, []).append(int(pd))
    eng.setdefault(mode, []).append((int(ea), int(eb)))
med = {m: statistics.median(p for _, p in v) for m, v in by.items()}
lines = [
    "# natgw tunnel benchmark (issue 14)",
    "",
    f"`sudo ./bench/tunnel.sh` (REPS={reps} DUR={dur}), {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, "
    f"commit {subprocess.run(['git','rev-parse','--short','HEAD'],capture_output=True,text=True).stdout.strip()}.",
    "",
    "64-byte UDP (60-byte frames, 1024 flows) from cli through natgw A and natgw B to srv;",
    "both natgw workers pinned to CPU 1 (so the rate is set by A's + B's work per packet), the",
    "generator on CPU 0, offloads off, AF_XDP (native XDP on veth, copy mode). `plain`: A and B",
    "just route; `ipip`/`gre`: A encapsulates into tun1, B decapsulates.",
    "",
    "| path | delivered pps (median) | each run | vs plain | ns per packet (A+B) | tunnel cost ns/packet |",
    "|---|---|---|---|---|---|",
]
base = med.get("plain")
for m, v in by.items():
    p = med[m]
    ns = 1e9 / p if p else float("nan")
    cost = (1e9 / p - 1e9 / base) if base and p else float("nan")
    lines.append(
        f"| {m} | {p:,.0f} | {', '.join(f'{x:,}' for _, x in v)} | "
        f"{(p / base * 100 if base else 0):.0f}% | {ns:,.0f} | {'' if m == 'plain' else f'{cost:,.0f}'} |"
    )
lines += [
    "",
    f"Paced at {paced:,} pps for {dur} s: CPU time of both natgw processes (all threads, from",
    "/proc/PID/stat, 10 ms ticks) per delivered packet.",
    "",
    "| path | delivered pps (median) | natgw A+B CPU ns/packet (median) | each run | tunnel cost ns/packet |",
    "|---|---|---|---|---|",
]
cbase = statistics.median(cpu["plain"]) if "plain" in cpu else None
for m, v in cpu.items():
    c = statistics.median(v)
    lines.append(
        f"| {m} | {statistics.median(pdel[m]):,.0f} | {c:,.0f} | {', '.join(f'{x:,}' for x in v)} | "
        f"{'' if m == 'plain' or cbase is None else f'{c - cbase:,.0f}'} |"
    )
lines += [
    "",
    "Engine time per packet (natgw's own histogram in `natgw stats`: the median of the per-batch",
    "average, over each process's whole life in that run), A encapsulating, B decapsulating:",
    "",
    "| path | A p50 ns (runs) | B p50 ns (runs) | A+B median | vs plain |",
    "|---|---|---|---|---|",
]
ebase = statistics.median(a + b for a, b in eng["plain"]) if "plain" in eng else None
for m, v in eng.items():
    s_ = statistics.median(a + b for a, b in v)
    lines.append(
        f"| {m} | {', '.join(str(a) for a, _ in v)} | {', '.join(str(b) for _, b in v)} | {s_:,.0f} | "
        f"{'' if m == 'plain' or ebase is None else f'{s_ - ebase:+,.0f} ns'} |"
    )
lines += ["", f"Load when the report was written: `{up.strip()}` (the machine is shared: see MACHINE-NOTES).", ""]
lines += ["", "Offered (generator) pps per run: " + "; ".join(f"{m}: " + ", ".join(f"{o:,}" for o, _ in v) for m, v in by.items()), ""]
open(out + ".md", "w").write("\n".join(lines))
print("\n".join(lines))
EOF
