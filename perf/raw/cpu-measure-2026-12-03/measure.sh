#!/bin/bash
# How a paced gateway's CPU was measured three ways (perf/profile-misses.md,
# "2026-12-03 night"). Run as root from the repository root, after
# `cargo build --release`:
#
#   perf/raw/cpu-measure-2026-12-03/measure.sh REPS RATE MODE...
#   MODE = base | kernel | natgw:COALESCE_US | natgwb:COALESCE_US
#   (natgw: $NATGW, default target/release/natgw; natgwb: $NATGW_B, for A/B
#   runs of two builds; FT=1: ftrace CPU 1's softirqs too)
#
# Topology: scripts/netns.sh, unswitched (cli -- gw -- out), plus a direct
# cli -- out veth for `base`. Generator and sink (bench/udpgen.c) on CPU 0,
# the gateway's work on CPU 1 (RPS on lan0/wan0 for the kernel, taskset for
# natgw), as bench/run.sh does. Per run, over the middle 5 s of 8 s:
#   work   = CPU 1's wall time - its idle + iowait time (/proc/stat; idle is
#            measured from idle entry to exit, not sampled by ticks)
#   ticks  = CPU 1's user + nice + system + irq + softirq (tick-sampled)
#   thr    = natgw's threads' run time (/proc/PID/task/*/schedstat)
#   steal  = CPU 1's steal
# each as CPUs and as ns per delivered packet; and with FT=1 the sum of
# softirq_entry -> softirq_exit on CPU 1 over 4 s (ftsoft.sh).
set -eu
reps=$1 rate=$2; shift 2
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../../.."
P=cm$$
work=$(mktemp -d)
cleanup() {
    for p in $(jobs -p); do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    scripts/netns.sh down "$P" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
cc -O2 -o "$work/udpgen" bench/udpgen.c
NETNS_INSIDE="cl1:10.0.0.10" NETNS_OUTSIDE="out:203.0.113.100" NETNS_SWITCHED=0 NETNS_QUIET=1 \
    scripts/netns.sh up "$P"
scripts/netns.sh config >"$work/natgw.toml"
ip link add "${P}d0" netns "$P-cl1" type veth peer name "${P}d1" netns "$P-out"
ip -n "$P-cl1" link set "${P}d0" name eth1
ip -n "$P-out" link set "${P}d1" name eth1
ip -n "$P-cl1" addr add 10.99.0.10/24 dev eth1
ip -n "$P-out" addr add 10.99.0.100/24 dev eth1
for n in cl1 out; do
    ip -n "$P-$n" link set eth1 up
    ip netns exec "$P-$n" ethtool -K eth1 tx off >/dev/null
done
ip netns exec "$P-out" sh -c 'echo 2 > /sys/class/net/eth1/queues/rx-0/rps_cpus'
mac() { ip netns exec "$P-$1" cat "/sys/class/net/$2/address"; }

one() { # mode
    local mode=$1 gw="" pid="" dev=eth0 src=10.0.0.10 dst=203.0.113.100 smac dmac
    smac=$(mac cl1 eth0); dmac=$(mac gw lan0)
    case $mode in
    kernel)
        scripts/netns.sh kernel "$P" >/dev/null
        for d in lan0 wan0; do ip netns exec "$P-gw" sh -c "echo 2 > /sys/class/net/$d/queues/rx-0/rps_cpus"; done ;;
    base)
        scripts/netns.sh bare "$P" >/dev/null
        dev=eth1 src=10.99.0.10 dst=10.99.0.100 smac=$(mac cl1 eth1) dmac=$(mac out eth1) ;;
    natgw:* | natgwb:*)
        local bin=${NATGW:-target/release/natgw}
        [ "${mode%%:*}" = natgw ] || bin=$NATGW_B
        scripts/netns.sh bare "$P" >/dev/null
        for d in lan0 wan0; do ip netns exec "$P-gw" sh -c "echo 0 > /sys/class/net/$d/queues/rx-0/rps_cpus"; done
        sed "s/^\[gateway\]/[afxdp]\ncoalesce_us = ${mode#*:}\ncpus = [1]\n\n[gateway]/" "$work/natgw.toml" >"$work/gw.toml"
        ip netns exec "$P-gw" taskset -c 1 "$bin" run --config "$work/gw.toml" >"$work/gw.log" 2>&1 &
        gw=$!; pid=$gw
        sleep 2 ;;
    *) echo "unknown mode $mode" >&2; exit 2 ;;
    esac
    ip netns exec "$P-out" taskset -c 0 "$work/udpgen" sink --port 7000 --max 20 >"$work/sink.json" 2>/dev/null &
    local sk=$!
    sleep 0.2
    ip netns exec "$P-cl1" taskset -c 0 "$work/udpgen" send --if $dev --src-mac "$smac" --dst-mac "$dmac" \
        --src $src --dst $dst --sport 1024 --dport 7000 --flows 1024 --rate "$rate" --warm 1 --duration 8 \
        >/dev/null 2>&1 &
    local gn=$!
    sleep 1.5
    rt() { local s=0 t; if [ -n "$pid" ]; then for t in /proc/$pid/task/*/schedstat; do read -r t _ <"$t"; s=$((s + t)); done; fi; echo $s; }
    cpu1() { awk '/^cpu1 /{ print $2+$3+$4+$7+$8, $9, $5+$6 }' /proc/stat; }
    rx() { ip netns exec "$P-out" cat /sys/class/net/eth0/statistics/rx_packets /sys/class/net/eth1/statistics/rx_packets | awk '{ s += $1 } END { print s }'; }
    local ft=""
    if [ -n "${FT:-}" ]; then (sleep 0.5; "$here/ftsoft.sh" 4 2 >"$work/ft.out") & ft=$!; fi
    local r0 c0 x0 t0 r1 c1 x1 t1
    r0=$(rt); c0=$(cpu1); x0=$(rx); t0=$(date +%s%N)
    sleep 5
    r1=$(rt); c1=$(cpu1); x1=$(rx); t1=$(date +%s%N)
    wait $gn || true
    [ -z "$ft" ] || wait "$ft" || true
    kill $sk; wait $sk 2>/dev/null || true
    if [ -n "$gw" ]; then kill "$gw"; wait "$gw" 2>/dev/null || true; fi
    python3 - "$mode" "$r0" "$r1" "$c0" "$c1" "$x0" "$x1" "$t0" "$t1" "$work/sink.json" "${FT:+$work/ft.out}" <<'PY'
import sys, json, re
mode = sys.argv[1]
r0, r1 = int(sys.argv[2]), int(sys.argv[3])
c0 = list(map(int, sys.argv[4].split())); c1 = list(map(int, sys.argv[5].split()))
x0, x1, t0, t1 = map(int, sys.argv[6:10])
s = (t1 - t0) / 1e9; pps = (x1 - x0) / s
k = json.load(open(sys.argv[10]))
ticks = (c1[0] - c0[0]) / 100 / s; steal = (c1[1] - c0[1]) / 100 / s; work = 1 - (c1[2] - c0[2]) / 100 / s
thr = (r1 - r0) / 1e9 / s
ns = lambda c: c * 1e9 / pps
ft = ""
if len(sys.argv) > 11 and sys.argv[11]:
    m = re.search(r"softirq total ([\d.]+) CPU", open(sys.argv[11]).read())
    ft = f" ftrace-softirq {float(m.group(1)):.3f}" if m else " ftrace-softirq ?"
print(f"{mode:11s} pps {pps:6.0f} work {work:.3f} ({ns(work):5.0f} ns/p) ticks {ticks:.3f} ({ns(ticks):5.0f}) "
      f"thr {thr:.3f} ({ns(thr):5.0f}) steal {steal:.2f}{ft} p50 {k['p50_ns']/1e3:.0f} p99 {k['p99_ns']/1e3:.0f} us")
PY
}

for r in $(seq "$reps"); do
    for m in "$@"; do one "$m"; done
done
