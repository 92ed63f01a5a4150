#!/usr/bin/env bash
# natgw's benchmark harness (issue 4): natgw beside the Linux kernel, same
# topology, same traffic, same run.
#
#   sudo ./bench/run.sh            # full run, about 25 minutes
#   sudo ./bench/run.sh --quick    # about 3 minutes: 1 repetition, shorter runs, fewer cases
#
# Sets up three network namespaces, measures, tears them down, prints a
# table (with progress while it runs) and writes perf/bench-latest.json,
# perf/bench-latest.md and perf/bench-latest-*.svg (old ones are replaced).
#
#   client nbPID-cli                   gateway nbPID-gw                        server nbPID-srv
#   eth0 10.0.0.10 ------ veth ------- lan0 10.0.0.1 | wan0 203.0.113.1 ------ veth ------ eth0 203.0.113.100
#   eth1 10.99.0.10 ------------------------ veth (no gateway) --------------------------- eth1 10.99.0.100
#   generators, clients: CPU 0         gateway work: CPU 1                      sink: nft netdev ingress drop,
#                                                                              UDP latency sink, nginx, iperf3
#
# Gateways, in turn, on that topology (offloads off on every veth end):
#   ceiling  no gateway: the generator straight to the sink over eth1 (the generator's own limit)
#   base     the same for the paced runs (generator + sink only, the CPU baseline)
#   route    kernel routing, ip_forward=1, no NAT (the floor)
#   kernel   kernel nftables masquerade + conntrack
#   natgw    natgw on AF_XDP (mode auto = native XDP on veth), masquerade
#   raw      natgw on AF_XDP with an accept-all ruleset (forwarding without translation)
#   tun      natgw on TUN, masquerade
#   xdpfwd   a minimal AF_XDP forwarder without NAT (bench/xdpfwd: MAC rewrite + TTL)
#   natgw2q  natgw on AF_XDP with two queues per interface (figure 7)
#   natgwc   natgw on AF_XDP with receive coalescing (afxdp.coalesce_us = NATGW_COALESCE_US,
#            default 200), masquerade
#   natgwrt  natgw on AF_XDP with its workers at real-time priority (afxdp.rt_priority =
#            NATGW_RT_PRIORITY, default 10), masquerade
#   natgw2qrt natgw with two queues per interface whose two workers run at real-time
#            priority on the gateway's one CPU (afxdp.cpus = [1, 1], rt_priority =
#            NATGW_RT_PRIORITY): the case where real-time workers must take turns
#            (figure 7, not in the default QUEUE_MODES)
#   natgwb   as natgw, but the binary NATGW_B (another build, for an A/B comparison of two
#            builds interleaved in one run; needs NATGW_B)
#
# Figures (bench/report.py computes medians, ratios, flags and PASS/MISS):
#   1 pps     64-byte UDP (trafgen, full speed), 1 / 1k / 100k / 1M flows, delivered pps
#   2 cpu     CPU per packet at several fixed paced rates (bench/udpgen.c; by default 25%
#             and 50% of the kernel NAT's 1k-flow rate from figure 1). Two measures, each
#             minus the same for the generator+sink-only run (base) of the same repetition
#             and rate, divided by delivered packets per second:
#             - gateway CPU: work time (wall - idle - iowait, /proc/stat) of the gateway's
#               CPU 1 (GW_CPU), the same for every gateway. The gateway's work is pinned to
#               CPU 1: natgw's threads by taskset, the kernel's forwarding by RPS on lan0/wan0
#               (the base's delivery to the sink by RPS on the direct link). Not the busy
#               fields: this kernel counts busy time by tick, and a softirq run out of idle
#               (the kernel's forwarding at paced rates) is almost never seen by a tick, while
#               idle time is measured, not sampled (see precise_now; perf/profile-misses.md).
#               Counts steal while the CPU works (recorded, steal1) and others' processes
#               there. Work natgw leaves on the generator's CPU 0 is not counted (the lan0 XDP
#               program and the copy into the UMEM run in the sender's softirq; natgw TUN moves
#               lan0/wan0's RPS there).
#             - machine-wide: work time of all CPUs the same way; others' processes count.
#             Recorded beside them: the tick-based figures of earlier reports (gw_cpu_ns_per_s,
#             cpu1_busy_ns_per_s, busy_ns_per_s) and natgw's threads' run time (schedstat).
#   3 latency the same paced runs: p50/p99/p99.9 from send time stamps in the payload to
#             the server's kernel receive time stamp, at each paced rate
#             (figures 2+3 verdicts pair natgw and the kernel NAT repetition by repetition:
#             PASS or MISS when 4 of 5 agree, INCONCLUSIVE when they split; bench/report.py)
#   4 conn    new TCP connections/s through the gateway to nginx (bench/tcpchurn.c,
#             Connection: close), with connect-time percentiles
#   5 iperf   iperf3 TCP throughput, 1 and 4 streams
#   6 memory  memory per flow after 1M distinct UDP flows: natgw RSS growth vs the
#             kernel's slab growth (nf_conntrack and the caches that grew with it)
#   7 queues  natgw with one vs two queues per interface (veth channels 1 vs 2)
#
# Environment overrides (defaults: full run; --quick changes them):
#   FIGS="1 2 3 4 5 6 7"  REPS=3 DUR=4 WARM=2  FLOWS="1 1k 100k 1M"
#   PPS_MODES="ceiling kernel natgw"  PPS_1K_MODES="route raw xdpfwd tun"
#   PACED_MODES="base route kernel natgw natgwc natgwrt tun"  PACED_REPS=5 PACED_DUR=10
#   PACED_FRACS="25 50" (percents of the kernel NAT's median 1k-flow pps from figure 1; without
#   figure 1 its peak is taken as 202000 pps)  PACED_RATES="50000 100000" (explicit rates in
#   pps, override PACED_FRACS)  PACED_RATE=N (one explicit rate, overrides both)
#   (figures 2+3 run for rep; for rate; for mode, i.e. interleaved; REPS drives the others)
#   CONN_MODES="route kernel natgw tun lbdnat lb"  CONN_CONCURRENCY=32
#   IPERF_MODES="route kernel natgw tun"  MEM_FLOWS=1000000 MEM_RATE=100000
#   WAIT_MAX=120 (wait this long for others' builds/benchmarks before starting)
#   NATGW=path/to/natgw (use this binary instead of building target/release/natgw)
#   NATGW_B=path/to/natgw (the binary of mode natgwb)
#   OUT=perf/bench-latest  BENCH_KEEP=DIR (keep a copy of the raw work directory there;
#   then `python3 bench/report.py --work DIR --out ...` redoes the report)
# Needs root and 2 CPUs. Installs what it needs (scripts/setup.sh names every
# package). Everything it creates is named nbPID-*; namespaces and every
# process it started (by PID) are removed on exit, failure or Ctrl-C, and the host-wide
# conntrack sysctls it raises are put back.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

QUICK=0
for a in "$@"; do
    case $a in
    --quick) QUICK=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument $a (try --help)" >&2; exit 2 ;;
    esac
done

if [ "$QUICK" = 1 ]; then
    : "${REPS:=1}" "${DUR:=2}" "${WARM:=1}" "${FLOWS:=1k 100k}"
    : "${PACED_MODES:=base kernel natgw}" "${PACED_DUR:=3}" "${PACED_REPS:=1}"
    : "${CONN_MODES:=kernel natgw lbdnat lb}" "${CONN_DUR:=2}"
    : "${IPERF_MODES:=kernel natgw}" "${IPERF_DUR:=2}"
    : "${MEM_FLOWS:=100000}" "${WAIT_MAX:=0}"
fi
FIGS=${FIGS:-"1 2 3 4 5 6 7"}
REPS=${REPS:-3}
DUR=${DUR:-4}
WARM=${WARM:-2}
FLOWS=${FLOWS:-"1 1k 100k 1M"}
PPS_MODES=${PPS_MODES-"ceiling kernel natgw"}
PPS_1K_MODES=${PPS_1K_MODES-"route raw xdpfwd tun"}
PACED_MODES=${PACED_MODES-"base route kernel natgw natgwc natgwrt tun"}
PACED_DUR=${PACED_DUR:-10}
PACED_REPS=${PACED_REPS:-5}
PACED_FRACS=${PACED_FRACS:-"25 50"}
PACED_RATES=${PACED_RATES:-}
PACED_RATE=${PACED_RATE:-}
PACED_PEAK_FALLBACK=202000 # the kernel NAT's 1k-flow pps taken when figure 1 did not run
PACED_FLOWS=1024
NATGW_COALESCE_US=${NATGW_COALESCE_US:-200} # afxdp.coalesce_us of mode natgwc (200: where it pays, perf/profile-misses.md)
NATGW_RT_PRIORITY=${NATGW_RT_PRIORITY:-10} # afxdp.rt_priority of mode natgwrt
CONN_MODES=${CONN_MODES-"route kernel natgw tun lbdnat lb"}
CONN_DUR=${CONN_DUR:-5}
CONN_CONCURRENCY=${CONN_CONCURRENCY:-32}
IPERF_MODES=${IPERF_MODES-"route kernel natgw tun"}
IPERF_DUR=${IPERF_DUR:-4}
IPERF_STREAMS="1 4"
MEM_FLOWS=${MEM_FLOWS:-1000000}
MEM_RATE=${MEM_RATE:-100000}
QUEUE_MODES=${QUEUE_MODES-"natgw natgw2q"}
WAIT_MAX=${WAIT_MAX:-120}
OUT=${OUT:-perf/bench-latest}
GEN_CPU=0
GW_CPU=1
CT_MAX=2097152     # kernel nf_conntrack_max and natgw [limits] max_flows, both
CT_BUCKETS=1048576 # kernel conntrack hash buckets (natgw's index grows by itself)
CMDLINE="./bench/run.sh"
QUICK_TAG=""
[ "$QUICK" = 1 ] && CMDLINE+=" --quick" && QUICK_TAG=" (--quick)"

[ "$(id -u)" -eq 0 ] || { echo "run.sh: run as root (it creates network namespaces)" >&2; exit 1; }
[ "$(nproc)" -ge 2 ] || { echo "run.sh: needs 2 CPUs (generator on CPU $GEN_CPU, gateway on CPU $GW_CPU)" >&2; exit 1; }
T_START=$(date +%s)
log() { printf '[bench %s +%ds] %s\n' "$(date -u +%T)" "$(( $(date +%s) - T_START ))" "$*" >&2; }
die() { log "error: $*"; exit 1; }
has_fig() { [[ " $FIGS " == *" $1 "* ]]; }

# --- install and build -----------------------------------------------------------
./scripts/setup.sh --quiet   # installs every package the harness uses
for t in trafgen nft ethtool conntrack nginx iperf3 gnuplot cc python3; do
    command -v "$t" >/dev/null || die "$t missing"
done
if [ -n "${NATGW:-}" ]; then
    log "using natgw binary $NATGW (NATGW set: not building)"
    [ -x "$NATGW" ] || die "$NATGW is not an executable"
    NATGW_BUILD="given with NATGW=$NATGW (not built by this run; sha256 $(sha256sum "$NATGW" | cut -c1-16))"
else
    log "building natgw (cargo build --release)"
    cargo build --release --quiet --bin natgw
    NATGW=$ROOT/target/release/natgw
    NATGW_BUILD="target/release/natgw, built by this run (cargo build --release) from the working tree at $(git rev-parse --short HEAD)"
fi
if [[ " $PPS_MODES $PPS_1K_MODES $PACED_MODES $CONN_MODES $IPERF_MODES " == *" natgwb "* ]]; then
    [ -n "${NATGW_B:-}" ] || die "mode natgwb needs NATGW_B=path/to/natgw (the second build to compare)"
    [ -x "$NATGW_B" ] || die "NATGW_B=$NATGW_B is not an executable"
    NATGW_BUILD="$NATGW_BUILD; mode natgwb: NATGW_B=$NATGW_B (sha256 $(sha256sum "$NATGW_B" | cut -c1-16))"
fi
XDPFWD=""
XDPFWD_NOTE=""
if [[ " $PPS_1K_MODES " == *" xdpfwd "* ]] && has_fig 1; then
    log "building the minimal AF_XDP forwarder (bench/xdpfwd)"
    mkdir -p target
    if cargo build --release --quiet --manifest-path bench/xdpfwd/Cargo.toml --target-dir target/xdpfwd 2>"$ROOT/target/xdpfwd-build.log"; then
        XDPFWD=$ROOT/target/xdpfwd/release/xdpfwd
    else
        XDPFWD_NOTE="bench/xdpfwd did not build (target/xdpfwd-build.log)"
        log "warning: $XDPFWD_NOTE; the minimal forwarder is not measured"
        PPS_1K_MODES=${PPS_1K_MODES//xdpfwd/}
    fi
fi

P=nb$$
work=$(mktemp -d /tmp/natgw-bench.XXXXXX)
RESULTS=$work/results.jsonl
: >"$RESULTS"
mkdir -p "$work/meta"
echo "$NATGW_BUILD" >"$work/meta/natgw_build"
cc -O2 -Wall -o "$work/udpgen" bench/udpgen.c
cc -O2 -Wall -o "$work/tcpchurn" bench/tcpchurn.c
# trafgen's TX_RING sends with MSG_DONTWAIT and gives up when its socket's send
# buffer is full, which happens as soon as frames queue on another CPU (RPS).
# This shim gives trafgen's packet socket (only) a large buffer (SO_SNDBUFFORCE);
# without it trafgen stalls instead of offering load (found with the first pps figure).
SNDBUF_BYTES=$((8 << 20))
cat >"$work/sndbuf.c" <<'CEOF'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/socket.h>
int socket(int domain, int type, int protocol)
{
    static int (*real)(int, int, int);
    if (!real)
        real = (int (*)(int, int, int))dlsym(RTLD_NEXT, "socket");
    int fd = real(domain, type, protocol);
    if (fd >= 0 && domain == AF_PACKET) {
        const char *e = getenv("BENCH_SNDBUF");
        int v = e ? atoi(e) : 8 << 20;
        setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &v, sizeof v);
    }
    return fd;
}
CEOF
cc -shared -fPIC -O2 -o "$work/sndbuf.so" "$work/sndbuf.c" -ldl

# --- cleanup -----------------------------------------------------------------------
PIDS=()        # every background process this script started; each leads its own process group
CT_SAVED=""
# True while PID is alive and still this shell's child (so never a recycled PID).
ours() { [ "$(ps -o ppid= -p "$1" 2>/dev/null | tr -d ' ')" = "$$" ]; }
cleanup() {
    set +e
    trap - EXIT INT TERM
    local p live=()
    for p in "${PIDS[@]}"; do ours "$p" && live+=("$p"); done
    for p in "${live[@]}"; do kill -INT -- "-$p" 2>/dev/null; kill -TERM -- "-$p" 2>/dev/null; done
    [ ${#live[@]} -gt 0 ] && sleep 0.5
    for p in "${live[@]}"; do ours "$p" && kill -KILL -- "-$p" 2>/dev/null; done
    wait 2>/dev/null
    NETNS_QUIET=1 ./scripts/netns.sh down "$P"
    local left=""
    for p in "${PIDS[@]}"; do ours "$p" && left+=" $p"; done
    [ -n "$(ip netns list | grep "^$P-")" ] && left+=" namespaces:$(ip netns list | grep "^$P-" | tr '\n' ' ')"
    if [ -n "$CT_SAVED" ]; then
        read -r max buckets <<<"$CT_SAVED"
        sysctl -qw net.netfilter.nf_conntrack_buckets="$buckets" 2>/dev/null
        sysctl -qw net.netfilter.nf_conntrack_max="$max" 2>/dev/null
    fi
    if [ -n "$left" ]; then
        log "cleanup: still there:$left"
    else
        log "cleanup: namespaces $P-* removed, all ${#PIDS[@]} processes started by the run have ended${CT_SAVED:+, conntrack limits put back ($CT_SAVED)}"
    fi
    [ -n "${BENCH_KEEP:-}" ] && rm -rf "$BENCH_KEEP" && cp -a "$work" "$BENCH_KEEP"
    rm -rf "$work"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM
# Starts "$@" in the background as its own process group; sets BG to its PID.
# (setsid does not fork here: a background job of a non-interactive shell is not a
# group leader, so BG is the PID of the final program after the execs.)
bg() {
    setsid "$@" &
    BG=$!
    PIDS+=("$BG")
}
# Stops one process group started by bg (signal, then KILL after 3 s) and waits for it.
stop_bg() { # pid [signal]
    local p=$1 sig=${2:-TERM} i
    [ -n "$p" ] || return 0
    ours "$p" && kill -"$sig" -- "-$p" 2>/dev/null
    for i in $(seq 30); do ours "$p" || break; sleep 0.1; done
    ours "$p" && kill -KILL -- "-$p" 2>/dev/null
    wait "$p" 2>/dev/null || true
}
inns() { local n=$1; shift; ip netns exec "$P-$n" "$@"; }

# --- others' heavy work --------------------------------------------------------------
others() { pgrep -af -- 'cargo (bench|build|test|check|clippy)|criterion|--bench|rustc|clippy-driver|valgrind' | grep -v "^$$ " || true; }
waited=0
while [ -n "$(others)" ] && [ "$waited" -lt "$WAIT_MAX" ]; do
    [ "$waited" -eq 0 ] && log "waiting (up to ${WAIT_MAX}s) for other builds/benchmarks: $(others | head -2 | cut -c1-90 | tr '\n' ';')"
    sleep 5
    waited=$((waited + 5))
done
echo "$(others | head -3 | cut -c1-120)" >"$work/meta/others_at_start"
cut -d' ' -f1-3 /proc/loadavg >"$work/meta/loadavg_start"

# --- host-wide conntrack limits (put back on exit) ------------------------------------
modprobe nf_conntrack 2>/dev/null || true
if [ -w /proc/sys/net/netfilter/nf_conntrack_max ]; then
    CT_SAVED="$(cat /proc/sys/net/netfilter/nf_conntrack_max) $(cat /proc/sys/net/netfilter/nf_conntrack_buckets)"
    sysctl -qw net.netfilter.nf_conntrack_buckets=$CT_BUCKETS net.netfilter.nf_conntrack_max=$CT_MAX ||
        log "warning: could not raise nf_conntrack_max/buckets"
fi
echo "$CT_SAVED" >"$work/meta/conntrack_saved"
echo "$(cat /proc/sys/net/netfilter/nf_conntrack_max 2>/dev/null) $(cat /proc/sys/net/netfilter/nf_conntrack_buckets 2>/dev/null)" >"$work/meta/conntrack_set"

# --- topology ------------------------------------------------------------------------
log "building namespaces $P-{cli,gw,srv} (scripts/netns.sh, unswitched)"
# The shared topology, shortest form (cli -- gw -- srv), with two queues
# possible on the gateway path (figure 7 switches them with ethtool -L; one
# queue otherwise) and offloads off everywhere: hosts send full checksums as
# on a wire (MACHINE-NOTES), and every gateway sees the same frames.
OFFLOADS="tx off tso off gso off gro off"
NETNS_SWITCHED=0 NETNS_INSIDE=cli:10.0.0.10 NETNS_OUTSIDE=srv:203.0.113.100 \
    NETNS_VETH_OPTS="numtxqueues 2 numrxqueues 2" NETNS_OFFLOADS="$OFFLOADS" NETNS_QUIET=1 \
    ./scripts/netns.sh up "$P" || die "building the topology failed"
# Plus a direct generator -> sink link (no gateway): the ceiling.
ip link add eth1 netns "$P-cli" type veth peer name eth1 netns "$P-srv"
for nd in cli:eth1 srv:eth1; do
    inns "${nd%%:*}" ethtool -K "${nd#*:}" $OFFLOADS >/dev/null 2>&1 || true
done
set_channels() { # n: 1 or 2 queues on the gateway path
    local nd
    for nd in cli:eth0 gw:lan0 gw:wan0 srv:eth0; do
        inns "${nd%%:*}" ethtool -L "${nd#*:}" rx "$1" tx "$1" 2>/dev/null || die "ethtool -L ${nd#*:} rx $1 tx $1 failed"
    done
}
set_channels 1
inns cli ip addr add 10.99.0.10/24 dev eth1
inns cli ip link set eth1 up
inns cli sysctl -qw net.ipv4.ip_local_port_range="1024 65535"
inns srv ip addr add 10.99.0.100/24 dev eth1
# Figure 4 sends each run to its own server address (203.0.113.101-140), so that no
# run meets the server's TIME_WAIT sockets or a gateway's old flows from an earlier one.
for i in $(seq 101 140); do inns srv ip addr add "203.0.113.$i/32" dev eth0; done
inns srv ip link set eth1 up
inns srv ip route add default via 203.0.113.1
inns srv sysctl -qw net.core.somaxconn=8192 net.ipv4.tcp_max_syn_backlog=8192
# The gateway's kernel receive work goes to CPU 1 (RPS), like natgw's worker;
# without it veth runs it on the sender's (generator's) CPU. The direct link's
# receive work too, so that the ceiling's sink runs where the gateway's would.
# natgw TUN moves lan0/wan0's receive work off its own CPU (src/dataplane/tun.rs,
# "Receive CPUs") and puts it back at stop; gw_bare sets it again regardless.
set_rps() { # ns:dev...
    local nd q
    for nd in "$@"; do
        for q in $(inns "${nd%%:*}" ls "/sys/class/net/${nd#*:}/queues" | grep '^rx-'); do
            inns "${nd%%:*}" sh -c "printf %x $((1 << GW_CPU)) > /sys/class/net/${nd#*:}/queues/$q/rps_cpus"
        done
    done
}
set_rps gw:lan0 gw:wan0 srv:eth1

# The sinks: count and drop at the server's ingress, before its IP stack. UDP
# ports 9984-10239 are the flood's; the latency sink's port 7000, nginx and
# iperf3 pass to the server's stack.
inns srv nft -f - <<'EOF'
table netdev sink {
    counter nat {}
    counter plain {}
    chain in {
        type filter hook ingress device "eth0" priority -500; policy accept;
        ip saddr 203.0.113.1 udp dport 9984-10239 counter name "nat" drop
        udp dport 9984-10239 counter name "plain" drop
    }
}
table netdev sinkd {
    counter direct {}
    chain in {
        type filter hook ingress device "eth1" priority -500; policy accept;
        udp dport 9984-10239 counter name "direct" drop
    }
}
EOF
KERNEL_RULESET='table ip natgw {
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        ip daddr 203.0.113.1 tcp dport 8080 dnat to 10.0.0.5:80
    }
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan0" ip saddr 10.0.0.0/24 masquerade
        oifname "lan0" ip saddr 10.0.0.0/24 ip daddr 10.0.0.0/24 ct status dnat masquerade
    }
}'
echo "$KERNEL_RULESET" >"$work/meta/kernel_ruleset"
# The gateway's sysctls as built; gw_bare puts back any that a gateway changed.
GW_SYSCTL_RE='^net\.ipv4\.(conf\.(all|default|lan0|wan0)|neigh\.(lan0|wan0))\.'
inns gw sysctl -a 2>/dev/null | grep -E "$GW_SYSCTL_RE" | grep -v '\.forwarding = ' >"$work/gw-sysctl.base" || true
GW_MAC=$(inns gw cat /sys/class/net/lan0/address)
CLI_MAC=$(inns cli cat /sys/class/net/eth0/address)
CLI1_MAC=$(inns cli cat /sys/class/net/eth1/address)
SRV_MAC=$(inns srv cat /sys/class/net/eth0/address)
SRV1_MAC=$(inns srv cat /sys/class/net/eth1/address)

# --- trafgen configurations -------------------------------------------------------------
# 60-byte frames (64 with the FCS): Ethernet + IPv4 + UDP + 18 B payload, IPv4 and
# UDP checksums computed per frame. T templates (source port high byte 0x04 + t),
# each with counters on the source port's low byte (period 256) and on the
# destination port's low byte (period D, odd, so every combination comes up):
# T*256*D flows, 10.0.0.10:* -> 203.0.113.100:9984-10238. Distinct destination
# ports keep the NAT's outside tuples unique without searching for ports.
flow_count() {
    case $1 in
    1) echo 1 ;; 1k) echo 1024 ;; 100k) echo 99840 ;; 1M) echo 1003520 ;;
    *) die "unknown flow count $1 (1, 1k, 100k, 1M)" ;;
    esac
}
trafgen_conf() { # flows-label dst-mac src-mac
    local t d tt sport_lo dport_lo
    case $1 in
    1) tt=1 d=1 ;; 1k) tt=4 d=1 ;; 100k) tt=2 d=195 ;; 1M) tt=16 d=245 ;;
    esac
    mac_bytes() { echo "$1" | sed 's/^/0x/; s/:/, 0x/g'; }
    echo "/* natgw bench/run.sh: $(flow_count "$1") flows */"
    for ((t = 0; t < tt; t++)); do
        sport_lo="dinc(0, 255, 1)"
        [ "$1" = 1 ] && sport_lo="0x00"
        dport_lo="0x00"
        [ "$d" -gt 1 ] && dport_lo="dinc(0, $((d - 1)), 1)"
        cat <<EOF
{
  $(mac_bytes "$2"), $(mac_bytes "$3"), 0x08, 0x00,
  0x45, 0x00, c16(46), c16(0), 0x40, 0x00, 64, 17, csumip(14, 33),
  10, 0, 0, 10,  203, 0, 113, 100,
  $(printf '0x%02x' $((4 + t))), $sport_lo, 0x27, $dport_lo, c16(26), csumudp(14, 34),
  fill(0x00, 18)
}
EOF
    done
}
for f in $FLOWS 1k; do
    trafgen_conf "$f" "$GW_MAC" "$CLI_MAC" >"$work/gw-$f.trafgen"
    trafgen_conf "$f" "$SRV1_MAC" "$CLI1_MAC" >"$work/direct-$f.trafgen"
done

# --- gateways ----------------------------------------------------------------------------
natgw_pid=""
natgw_run=$NATGW
natgw_config() { # backend ruleset(nat|raw|lb|lbdnat) queues cpus coalesce_us rt_priority
    local backend=$1 rules=$2 queues=${3:-1} cpus=${4:-$GW_CPU} coalesce=${5:-0} rt=${6:-0}
    cat <<EOF
# bench/run.sh: natgw $backend, ruleset $rules, $queues queue(s) per interface
[gateway]
backend = "$backend"
control_socket = "$work/natgw.sock"
unmatched = "forward"
hairpin = true

[limits]
max_flows = $CT_MAX

[afxdp]
mode = "auto"
queues = $queues
cpus = [$cpus]
coalesce_us = $coalesce
rt_priority = $rt

[[interface]]
name = "lan0"
role = "inside"
address = "10.0.0.1/24"
$([ "$rules" = lbdnat ] && echo "extra_addresses = [\"$LB_VIP\"]")

[[interface]]
name = "wan0"
role = "outside"
address = "203.0.113.1/24"

[[route]]
to = "0.0.0.0/0"
via = "203.0.113.254"
EOF
    if [ "$rules" = lb ]; then
        cat <<EOF

# Load balancing: a virtual service on the inside, two real servers outside.
[[service]]
address = "$LB_VIP"
port = 80
scheduler = "rr"
[[service.real]]
address = "$LB_REAL"
port = 80
[[service.real]]
address = "$LB_REAL2"
port = 80
EOF
    elif [ "$rules" = lbdnat ]; then
        cat <<EOF

# The same traffic through a plain DNAT rule (the LB figure's baseline).
[[rule]]
name = "vip"
dst = "$LB_VIP"
proto = "tcp"
dport = 80
action = "dnat"
to = "$LB_REAL:80"
EOF
    fi
    if [ "$rules" = raw ]; then
        cat <<EOF

# Raw forwarding: every new flow is accepted in both phases, no translation.
[[rule]]
name = "all"
action = "accept"
EOF
    else
        cat <<EOF

[[rule]]
name = "web"
dst = "203.0.113.1"
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
    fi
}
natgw_config afxdp nat >"$work/meta/natgw_config"
natgw_config afxdp raw >"$work/meta/natgw_raw_config"
natgw_config afxdp nat 0 "$GW_CPU, $GEN_CPU" >"$work/meta/natgw2q_config"
natgw_config afxdp nat 1 "$GW_CPU" "$NATGW_COALESCE_US" >"$work/meta/natgwc_config"
natgw_config afxdp nat 1 "$GW_CPU" 0 "$NATGW_RT_PRIORITY" >"$work/meta/natgwrt_config"
"$NATGW" check --config "$work/meta/natgw_config" >/dev/null || die "natgw check refused the bench config"
"$NATGW" check --config "$work/meta/natgw_raw_config" >/dev/null || die "natgw check refused the raw (accept-all) config"

natgw_start() { # backend rules [queues cpus]; runs $NATGW_RUN (default $NATGW)
    natgw_config "$@" >"$work/natgw.toml"
    rm -f "$work/natgw.sock"
    : >"$work/natgw.log"
    natgw_run=${NATGW_RUN:-$NATGW}
    bg ip netns exec "$P-gw" taskset -c "$([ "${3:-1}" = 1 ] && echo $GW_CPU || echo "$GW_CPU,$GEN_CPU")" \
        "$natgw_run" run --config "$work/natgw.toml" >>"$work/natgw.log" 2>&1
    natgw_pid=$BG
    local i
    for i in $(seq 150); do
        grep -qs "natgw running" "$work/natgw.log" && return 0
        kill -0 "$natgw_pid" 2>/dev/null || break
        sleep 0.1
    done
    tail -20 "$work/natgw.log" >&2
    return 1
}
natgw_stop() {
    [ -n "$natgw_pid" ] || return 0
    stop_bg "$natgw_pid" TERM
    natgw_pid=""
}
xdpfwd_pid=""
xdpfwd_start() {
    : >"$work/xdpfwd.log"
    bg ip netns exec "$P-gw" taskset -c "$GW_CPU" "$XDPFWD" --a lan0 --b wan0 \
        --a-peer "$CLI_MAC" --b-peer "$SRV_MAC" >>"$work/xdpfwd.log" 2>&1
    xdpfwd_pid=$BG
    local i
    for i in $(seq 100); do
        grep -qs "xdpfwd: lan0 <-> wan0" "$work/xdpfwd.log" && return 0
        kill -0 "$xdpfwd_pid" 2>/dev/null || break
        sleep 0.1
    done
    tail -20 "$work/xdpfwd.log" >&2
    return 1
}
gw_bare() {
    natgw_stop
    if [ -n "$xdpfwd_pid" ]; then stop_bg "$xdpfwd_pid" TERM; xdpfwd_pid=""; fi
    # Also removes natgw's stop guard (inet natgw_guard), which stays on purpose.
    inns gw nft flush ruleset
    # natgw TUN leaves its routing guard on purpose (src/dataplane/tun.rs: iif rules
    # into tables 7100/7101 holding a blackhole, `lookup local` moved to pref 32000,
    # a health-check rule at 7099) and sets some sysctls; hand the interfaces back to
    # the kernel: only the default rules, the original sysctls, no proxy ARP entries.
    local line pref tab
    [[ $'\n'$(inns gw ip rule show) == *$'\n0:\tfrom all lookup local'* ]] || inns gw ip rule add pref 0 lookup local
    while read -r line; do
        pref=${line%%:*}
        case $pref in 0 | 32766 | 32767) continue ;; esac
        tab=$(sed -n 's/.*lookup \([0-9][0-9]*\).*/\1/p' <<<"$line")
        while inns gw ip rule del pref "$pref" 2>/dev/null; do :; done
        [ -n "$tab" ] && inns gw ip route flush table "$tab" 2>/dev/null || true
    done < <(inns gw ip rule show)
    [ "$(inns gw ip rule show | wc -l)" -eq 3 ] || { inns gw ip rule show >&2; die "gateway rules not back to default"; }
    while read -r line; do
        inns gw ip neigh del proxy "${line%% *}" dev "$(sed -n 's/.* dev \([^ ]*\).*/\1/p' <<<"$line")" 2>/dev/null || true
    done < <(inns gw ip neigh show proxy)
    inns gw sysctl -a 2>/dev/null | grep -E "$GW_SYSCTL_RE" | grep -v '\.forwarding = ' >"$work/gw-sysctl.now" || true
    if ! cmp -s "$work/gw-sysctl.base" "$work/gw-sysctl.now"; then
        grep -vxFf "$work/gw-sysctl.now" "$work/gw-sysctl.base" | sed 's/ = /=/' | while read -r kv; do
            inns gw sysctl -qw "$kv" 2>/dev/null || true
        done
    fi
    inns gw sysctl -qw net.ipv4.ip_forward=0
    inns gw conntrack -F >/dev/null 2>&1 || true
    set_rps gw:lan0 gw:wan0
}
CUR_CHANNELS=1
gw_mode() { # mode; returns 1 if the gateway did not start
    gw_bare
    local want=1
    case $1 in natgw2q | natgw2qrt) want=2 ;; esac
    if [ "$want" != "$CUR_CHANNELS" ]; then
        set_channels "$want"
        CUR_CHANNELS=$want
    fi
    case $1 in
    ceiling | base) ;;
    route) inns gw sysctl -qw net.ipv4.ip_forward=1 ;;
    kernel)
        inns gw sysctl -qw net.ipv4.ip_forward=1
        inns gw nft -f - <<<"$KERNEL_RULESET"
        ;;
    natgw) natgw_start afxdp nat ;;
    raw) natgw_start afxdp raw ;;
    tun) natgw_start tun nat ;;
    natgw2q) natgw_start afxdp nat 0 "$GW_CPU, $GEN_CPU" ;;
    natgw2qrt) natgw_start afxdp nat 0 "$GW_CPU, $GW_CPU" 0 "$NATGW_RT_PRIORITY" ;;
    natgwc) natgw_start afxdp nat 1 "$GW_CPU" "$NATGW_COALESCE_US" ;;
    natgwrt) natgw_start afxdp nat 1 "$GW_CPU" 0 "$NATGW_RT_PRIORITY" ;;
    natgwb) NATGW_RUN=$NATGW_B natgw_start afxdp nat ;;
    lb) natgw_start afxdp lb ;;
    lbdnat) natgw_start afxdp lbdnat ;;
    xdpfwd) xdpfwd_start ;;
    *) die "unknown mode $1" ;;
    esac
}
# Primes ARP on the path this mode's traffic takes.
prime() { # mode
    if [ "$1" = ceiling ] || [ "$1" = base ]; then
        inns cli ping -c 2 -i 0.2 -W 1 -q 10.99.0.100 >/dev/null 2>&1 || true
    else
        inns cli ping -c 2 -i 0.2 -W 1 -q 203.0.113.100 >/dev/null 2>&1 || true
    fi
}

# --- counters ------------------------------------------------------------------------------
nft_packets() { # ns table counter...
    local ns=$1 table=$2; shift 2
    for c in "$@"; do inns "$ns" nft list counter netdev "$table" "$c"; done |
        awk '$1 == "packets" { s += $2 } END { print s + 0 }'
}
delivered() { # mode -> frames counted where this mode's flood should arrive
    case $1 in
    ceiling) nft_packets srv sinkd direct ;;
    route | xdpfwd | raw) nft_packets srv sink nat plain ;;
    *) nft_packets srv sink nat ;;
    esac
}
untranslated() { nft_packets srv sink plain; }
if_stat() { # ns dev counter
    inns "$1" cat "/sys/class/net/$2/statistics/$3"
}
sent() { # mode -> frames the generator's veth sent (incl. dropped)
    local d=eth0
    [ "$1" = ceiling ] || [ "$1" = base ] && d=eth1
    echo $(( $(if_stat cli $d tx_packets) + $(if_stat cli $d tx_dropped) ))
}
# /proc/stat: "busy0 total0 steal0 busy1 total1 steal1 busyall totalall" in jiffies;
# busy = user + nice + system + irq + softirq (not idle, iowait, steal).
cpu_ticks() {
    awk -v a="cpu$GEN_CPU" -v b="cpu$GW_CPU" '$1==a||$1==b||$1=="cpu" {
        t=0; for(i=2;i<=NF;i++) t+=$i; busy=$2+$3+$4+$7+$8;
        if ($1=="cpu") { ab=busy; at=t } else printf "%d %d %d ", busy, t, $9 }
        END { printf "%d %d\n", ab, at }' /proc/stat
}
CLK_TCK=$(getconf CLK_TCK)
# Sets CPU0 CPU1 STEAL0 STEAL1 (percent) and BUSY_CPU_S (busy CPU-seconds per second, all CPUs).
cpu_delta() { # before after
    local b0a t0a s0a b1a t1a s1a ba ta b0b t0b s0b b1b t1b s1b bb tb
    read -r b0a t0a s0a b1a t1a s1a ba ta <<<"$1"
    read -r b0b t0b s0b b1b t1b s1b bb tb <<<"$2"
    CPU0=$(( 100 * (b0b - b0a) / (t0b - t0a > 0 ? t0b - t0a : 1) ))
    CPU1=$(( 100 * (b1b - b1a) / (t1b - t1a > 0 ? t1b - t1a : 1) ))
    STEAL0=$(( 100 * (s0b - s0a) / (t0b - t0a > 0 ? t0b - t0a : 1) ))
    STEAL1=$(( 100 * (s1b - s1a) / (t1b - t1a > 0 ? t1b - t1a : 1) ))
    BUSY_JIFFIES=$(( bb - ba ))
}
# The gateway's own CPU (figure 2), in jiffies: "gwirq genirq gwbusy natgw" = irq + softirq
# of CPU $GW_CPU, irq + softirq of CPU $GEN_CPU, busy (as cpu_ticks) of CPU $GW_CPU, and
# utime + stime of the running natgw process, all its threads ("-" when none runs). natgw_pid
# is natgw itself (ip netns exec, taskset and setsid exec); its comm is checked, and it
# is parsed after the last ')' since a comm may hold spaces and parentheses.
gw_ticks() {
    local n=- comm=${natgw_run##*/}
    comm=${comm:0:15}
    if [ -n "$natgw_pid" ]; then
        n=$(awk -v want="$comm" '{
            s = $0; c = s; sub(/^[^(]*\(/, "", c); sub(/\)[^)]*$/, "", c)
            sub(/^.*\) /, "", s); split(s, f, " ")
            # after the comm: f[1] = field 3 (state), f[12] = field 14 (utime), f[13] = field 15 (stime)
            if (c == want && f[1] != "Z") print f[12] + f[13]; else print "-" }' "/proc/$natgw_pid/stat" 2>/dev/null) || n=-
        [ -n "$n" ] || n=-
    fi
    awk -v a="cpu$GEN_CPU" -v b="cpu$GW_CPU" -v n="$n" '
        $1 == b { g = $7 + $8; gb = $2 + $3 + $4 + $7 + $8 } $1 == a { s = $7 + $8 }
        END { printf "%d %d %d %s\n", g, s, gb, n }' /proc/stat
}
# Figure 2's precise CPU measure: "idlegw idlegen idleall natgw_ns" = idle + iowait of CPU
# $GW_CPU, of CPU $GEN_CPU and of all CPUs, in jiffies, and the summed run time (ns) of the
# running natgw's threads from /proc/PID/task/*/schedstat ("-" when none runs). This kernel
# accounts busy time by tick (CONFIG_TICK_CPU_ACCOUNTING), and with NO_HZ_IDLE a softirq that
# runs out of idle (an RPS IPI, the kernel gateway's whole forwarding at paced rates) is
# almost never seen by a tick, so it hardly shows in the busy fields of /proc/stat. The idle time is not sampled: it
# is measured from idle entry to exit (get_cpu_idle_time_us), and an interrupt, with the
# softirq at its end, stops the idle clock (tick_nohz_irq_enter). So wall time - idle time is
# the CPU's work, whoever did it; schedstat's run time is exact too (and leaves out steal).
precise_now() {
    local n=- comm=${natgw_run##*/} t
    comm=${comm:0:15}
    if [ -n "$natgw_pid" ] && [ "$(cat "/proc/$natgw_pid/comm" 2>/dev/null)" = "$comm" ]; then
        n=0
        for t in /proc/"$natgw_pid"/task/*/schedstat; do
            read -r t _ 2>/dev/null <"$t" || continue
            n=$((n + t))
        done
    fi
    awk -v a="cpu$GEN_CPU" -v b="cpu$GW_CPU" -v n="$n" '
        $1 == b { g = $5 + $6 } $1 == a { s = $5 + $6 } $1 == "cpu" { t = $5 + $6 }
        END { printf "%d %d %d %s\n", g, s, t, n }' /proc/stat
}
# ns of work per second of wall time on `cpus` CPUs from an idle-jiffy difference over dt ns.
notidle_ns_per_s() { # idle_jiffies dt_ns cpus
    awk -v j="$1" -v hz="$CLK_TCK" -v dt="$2" -v c="$3" 'BEGIN { if (dt <= 0) print "null"; else printf "%.0f\n", c * 1e9 - j / hz * 1e9 / (dt / 1e9) }'
}
# ns of CPU per second of wall time from a jiffy difference over dt ns; "null" if unknown.
jiffy_ns_per_s() { # jiffies dt_ns
    awk -v j="$1" -v hz="$CLK_TCK" -v dt="$2" 'BEGIN { if (j == "" || j == "null" || dt <= 0) print "null"; else printf "%.0f\n", j / hz * 1e9 / (dt / 1e9) }'
}
natgw_flows() { # live flows, all protocols (like nf_conntrack_count); `natgw flows --count` is slow at 1M
    "$NATGW" stats --socket "$work/natgw.sock" --json 2>/dev/null |
        python3 -c 'import json, sys; j = json.load(sys.stdin); print(j.get("data", j)["flows"])' 2>/dev/null || echo null
}
flows_seen() { # mode -> flows the gateway holds now
    case $1 in
    kernel) inns gw cat /proc/sys/net/netfilter/nf_conntrack_count ;;
    natgw | raw | tun | natgw2q | natgw2qrt | natgwc | natgwrt | natgwb) natgw_flows ;;
    *) echo null ;;
    esac
}

# --- results --------------------------------------------------------------------------------
# rec key=value ...: one JSON object per line into $RESULTS. Numbers, true/false/null
# and values starting with { or [ are written as they are, the rest as strings.
rec() {
    local out="{" sep="" kv k v
    for kv in "$@"; do
        k=${kv%%=*}
        v=${kv#*=}
        v=${v//$'\n'/ }
        if [[ $v =~ ^-?[0-9]+(\.[0-9]+)?$ || $v == \{* || $v == \[* || $v == true || $v == false || $v == null ]]; then
            out+="$sep\"$k\": $v"
        else
            v=${v//\\/\\\\}
            v=${v//\"/\\\"}
            out+="$sep\"$k\": \"$v\""
        fi
        sep=", "
    done
    echo "$out}" >>"$RESULTS"
}
STEP=0
TOTAL=0
progress() { STEP=$((STEP + 1)); PROG="($STEP/$TOTAL)"; }
k() { awk -v v="$1" 'BEGIN { printf "%.0fk", v/1000 }'; }
busy_now() { others | head -1 | cut -c1-100; }

# --- generators ---------------------------------------------------------------------------------
gen_pid=""
trafgen_start() { # mode flows [count]
    local dev=eth0 conf=$work/gw-$2.trafgen n=${3:-0} cpus=$GEN_CPU procs=1
    if [ "$1" = ceiling ]; then dev=eth1; conf=$work/direct-$2.trafgen; fi
    # A packet socket sends on TX queue (sending CPU mod queues) (af_packet.c,
    # packet_pick_tx_queue), and veth hands TX queue n to RX queue n: one trafgen
    # on one CPU fills one queue whatever the flows. So the two-queue modes run a
    # trafgen process on each CPU (-P 2 pins fork i to CPU i).
    case $1 in natgw2q | natgw2qrt) cpus=$GEN_CPU,$GW_CPU procs=2 ;; esac
    bg ip netns exec "$P-cli" env LD_PRELOAD="$work/sndbuf.so" BENCH_SNDBUF=$SNDBUF_BYTES \
        taskset -c "$cpus" trafgen -o "$dev" -i "$conf" -P "$procs" -Q --no-sock-mem -n "$n" \
        >"$work/trafgen.log" 2>&1
    gen_pid=$BG
    sleep 0.2
    kill -0 "$gen_pid" 2>/dev/null || { cat "$work/trafgen.log" >&2; gen_pid=""; return 1; }
}
trafgen_stop() { stop_bg "$gen_pid" INT; gen_pid=""; }
# Checks 20 delivered frames at the server: checksums and source address.
verify() { # mode
    local want=203.0.113.1
    [ "$1" = route ] || [ "$1" = xdpfwd ] || [ "$1" = raw ] && want=10.0.0.10
    timeout 3 ip netns exec "$P-srv" tcpdump -c 20 -nn -vv -i eth0 'udp dst portrange 9984-10239' >"$work/verify.txt" 2>/dev/null || true
    local ok bad src
    ok=$(grep -c 'udp sum ok' "$work/verify.txt" || true)
    bad=$(grep -ci 'bad .*cksum\|incorrect' "$work/verify.txt" || true)
    src=$(grep -cE "$want\.[0-9]+ > 203\.0\.113\.100\.[0-9]+:" "$work/verify.txt" || true)
    echo "$ok/20 UDP checksums ok, $bad bad, $src/20 from $want"
}

# === figure 1 (and 7): 64-byte UDP flood, delivered pps ======================================
pps_run() { # fig mode flows rep
    local fig=$1 mode=$2 fl=$3 rep=$4 nflows
    nflows=$(flow_count "$fl")
    local tag
    progress
    tag="$PROG fig$fig $mode ${fl} flows rep $rep/$REPS"
    if ! gw_mode "$mode"; then
        log "$tag: gateway did not start"
        rec fig=pps figno="$fig" mode="$mode" flows="$fl" nflows="$nflows" rep="$rep" error="gateway did not start"
        return 0
    fi
    prime "$mode"
    # Stateful gateways: create every flow once before measuring (one trafgen cycle).
    if [ "$nflows" -ge 10000 ] && [[ $mode != ceiling && $mode != route && $mode != xdpfwd ]]; then
        if trafgen_start "$mode" "$fl" "$nflows"; then
            local i
            for i in $(seq 600); do kill -0 "$gen_pid" 2>/dev/null || break; sleep 0.1; done
            trafgen_stop
        fi
    fi
    if ! trafgen_start "$mode" "$fl"; then
        log "$tag: trafgen did not start"
        rec fig=pps figno="$fig" mode="$mode" flows="$fl" nflows="$nflows" rep="$rep" error="trafgen did not start"
        return 0
    fi
    sleep "$WARM"
    local vfy=""
    if [ "$rep" = 1 ] && [ "$fl" = 1k ] && [ "$mode" != ceiling ]; then vfy=$(verify "$mode"); fi
    local busy d0 s0 u0 c0 t0 d1 s1 u1 c1 t1
    busy=$(busy_now)
    t0=$(date +%s%N); d0=$(delivered "$mode"); s0=$(sent "$mode"); u0=$(untranslated); c0=$(cpu_ticks)
    sleep "$DUR"
    t1=$(date +%s%N); d1=$(delivered "$mode"); s1=$(sent "$mode"); u1=$(untranslated); c1=$(cpu_ticks)
    [ -n "$busy" ] || busy=$(busy_now)
    local alive=true
    kill -0 "$gen_pid" 2>/dev/null || alive=false
    trafgen_stop
    local fs stats=""
    fs=$(flows_seen "$mode")
    if [[ $mode == natgw* || $mode == raw || $mode == tun ]] && [ "$rep" = "$REPS" ] && [ "$fl" = 1k ]; then
        "$NATGW" stats --socket "$work/natgw.sock" >"$work/stats-fig$fig-$mode.txt" 2>&1 || true
        "$NATGW" stats --socket "$work/natgw.sock" --json >"$work/stats-fig$fig-$mode.json" 2>/dev/null || true
        stats=$work/stats-fig$fig-$mode
    fi
    cpu_delta "$c0" "$c1"
    local dt pps sp
    dt=$((t1 - t0))
    pps=$(( (d1 - d0) * 1000000000 / dt ))
    sp=$(( (s1 - s0) * 1000000000 / dt ))
    [ "$alive" = true ] || log "warning: trafgen died during the run: $(tail -2 "$work/trafgen.log" | tr '\n' ' ')"
    rec fig=pps figno="$fig" mode="$mode" flows="$fl" nflows="$nflows" rep="$rep" pps="$pps" sent_pps="$sp" \
        untranslated=$((u1 - u0)) cpu0="$CPU0" cpu1="$CPU1" steal0="$STEAL0" steal1="$STEAL1" \
        flows_seen="${fs:-null}" verify="$vfy" disturbed="$busy" generator_alive="$alive" stats="$stats" dur_s="$DUR"
    log "$tag: delivered $(k "$pps") pps, sent $(k "$sp"), cpu$GEN_CPU ${CPU0}% cpu$GW_CPU ${CPU1}%${busy:+  [others busy: $busy]}"
}

# === figures 2 + 3: paced UDP, CPU per packet and latency ======================================
paced_run() { # mode rate rep frac (percent of the kernel's peak, or null)
    local mode=$1 rate=$2 rep=$3 frac=${4:-null}
    local tag
    progress
    tag="$PROG fig2+3 $mode ${rate} pps$([ "$frac" = null ] || echo " (${frac}%)") rep $rep/$PACED_REPS"
    if ! gw_mode "$mode"; then
        log "$tag: gateway did not start"
        rec fig=paced mode="$mode" rep="$rep" rate="$rate" frac="$frac" error="gateway did not start"
        return 0
    fi
    prime "$mode"
    local dev=eth0 smac=$CLI_MAC dmac=$GW_MAC src=10.0.0.10 dst=203.0.113.100 rxns=srv rxdev=eth0
    if [ "$mode" = base ]; then dev=eth1 smac=$CLI1_MAC dmac=$SRV1_MAC src=10.99.0.10 dst=10.99.0.100 rxdev=eth1; fi
    bg ip netns exec "$P-srv" taskset -c "$GEN_CPU" "$work/udpgen" sink --port 7000 --max $((WARM + PACED_DUR + 30)) \
        >"$work/sink.json" 2>"$work/sink.log"
    local sink_pid=$BG
    sleep 0.2
    bg ip netns exec "$P-cli" taskset -c "$GEN_CPU" "$work/udpgen" send --if "$dev" --src-mac "$smac" --dst-mac "$dmac" \
        --src "$src" --dst "$dst" --sport 1024 --dport 7000 --flows "$PACED_FLOWS" --rate "$rate" \
        --warm "$WARM" --duration "$PACED_DUR" >"$work/gen.json" 2>"$work/gen.log"
    local gpid=$BG
    sleep "$WARM"
    sleep 0.2
    local busy c0 c1 g0 g1 q0 q1 r0 r1 t0 t1
    busy=$(busy_now)
    t0=$(date +%s%N); r0=$(if_stat "$rxns" "$rxdev" rx_packets); c0=$(cpu_ticks); g0=$(gw_ticks); q0=$(precise_now)
    sleep "$(awk -v d="$PACED_DUR" 'BEGIN { print d - 0.5 }')"
    t1=$(date +%s%N); r1=$(if_stat "$rxns" "$rxdev" rx_packets); c1=$(cpu_ticks); g1=$(gw_ticks); q1=$(precise_now)
    [ -n "$busy" ] || busy=$(busy_now)
    local i
    for i in $(seq 100); do kill -0 "$gpid" 2>/dev/null || break; sleep 0.1; done
    stop_bg "$gpid" TERM
    sleep 0.3
    stop_bg "$sink_pid" TERM
    local fs
    fs=$(flows_seen "$mode")
    cpu_delta "$c0" "$c1"
    local dt pps busy_ns
    dt=$((t1 - t0))
    pps=$(( (r1 - r0) * 1000000000 / dt ))
    # Busy CPU-nanoseconds per second, whole machine.
    busy_ns=$(awk -v j="$BUSY_JIFFIES" -v hz="$CLK_TCK" -v dt="$dt" 'BEGIN { printf "%.0f", j / hz * 1e9 / (dt / 1e9) }')
    # The gateway's own CPU: irq + softirq of CPU $GW_CPU plus natgw's utime + stime (see the
    # header). natgw_ns is null when no natgw runs, gw_ns null when one should but could not be read.
    local gi0 gs0 gb0 n0 gi1 gs1 gb1 n1 irq_ns gen_ns cpu1_ns natgw_ns=null gw_ns
    read -r gi0 gs0 gb0 n0 <<<"$g0"
    read -r gi1 gs1 gb1 n1 <<<"$g1"
    irq_ns=$(jiffy_ns_per_s $((gi1 - gi0)) "$dt")
    gen_ns=$(jiffy_ns_per_s $((gs1 - gs0)) "$dt")
    cpu1_ns=$(jiffy_ns_per_s $((gb1 - gb0)) "$dt")
    gw_ns=$irq_ns
    case $mode in
    natgw | raw | tun | natgw2q | natgw2qrt | natgwc | natgwrt | natgwb)
        if [ "$n0" != - ] && [ "$n1" != - ]; then
            natgw_ns=$(jiffy_ns_per_s $((n1 - n0)) "$dt")
            gw_ns=$(jiffy_ns_per_s $((gi1 - gi0 + n1 - n0)) "$dt")
        else
            gw_ns=null
            log "warning: natgw's /proc/$natgw_pid/stat not readable (natgw ended?): no gateway-CPU figure"
        fi
        ;;
    esac
    # The precise measure (precise_now): work time of CPU $GW_CPU, CPU $GEN_CPU and all CPUs,
    # and natgw's threads' run time.
    local qg0 qs0 qa0 qn0 qg1 qs1 qa1 qn1 gw_work gen_work all_work natgw_run=null
    read -r qg0 qs0 qa0 qn0 <<<"$q0"
    read -r qg1 qs1 qa1 qn1 <<<"$q1"
    gw_work=$(notidle_ns_per_s $((qg1 - qg0)) "$dt" 1)
    gen_work=$(notidle_ns_per_s $((qs1 - qs0)) "$dt" 1)
    all_work=$(notidle_ns_per_s $((qa1 - qa0)) "$dt" "$(getconf _NPROCESSORS_ONLN)")
    if [ "$qn0" != - ] && [ "$qn1" != - ]; then
        natgw_run=$(awk -v n=$((qn1 - qn0)) -v dt="$dt" 'BEGIN { printf "%.0f\n", n * 1e9 / dt }')
    fi
    local gen sink
    gen=$(cat "$work/gen.json" 2>/dev/null); [ -n "$gen" ] || gen=null
    sink=$(cat "$work/sink.json" 2>/dev/null); [ -n "$sink" ] || sink=null
    rec fig=paced mode="$mode" rep="$rep" rate="$rate" frac="$frac" rx_pps="$pps" busy_ns_per_s="$busy_ns" \
        gw_cpu_ns_per_s="$gw_ns" gw_irq_ns_per_s="$irq_ns" natgw_ns_per_s="$natgw_ns" cpu1_busy_ns_per_s="$cpu1_ns" \
        gen_softirq_ns_per_s="$gen_ns" gw_work_ns_per_s="$gw_work" gen_work_ns_per_s="$gen_work" \
        work_ns_per_s="$all_work" natgw_run_ns_per_s="$natgw_run" cpu0="$CPU0" cpu1="$CPU1" \
        steal0="$STEAL0" steal1="$STEAL1" gen="$gen" sink="$sink" flows_seen="${fs:-null}" disturbed="$busy" dur_s="$PACED_DUR"
    local p50 p99 p999 lost
    read -r p50 p99 p999 lost < <(python3 -c '
import json,sys
g=json.loads(sys.argv[1]) if sys.argv[1]!="null" else {}
s=json.loads(sys.argv[2]) if sys.argv[2]!="null" else {}
sm=g.get("sent_measured",0); rm=s.get("received_measured",0)
print("%.1f %.1f %.1f %.2f%%" % (s.get("p50_ns",0)/1e3, s.get("p99_ns",0)/1e3, s.get("p999_ns",0)/1e3, 100.0*(sm-rm)/sm if sm else 100))
' "$gen" "$sink")
    cpus() { awk -v b="$1" 'BEGIN { if (b == "null" || b == "") print "-"; else printf "%.2f", b/1e9 }'; }
    log "$tag: rx $(k "$pps") pps, CPU $GW_CPU working $(cpus "$gw_work") (by ticks $(cpus "$cpu1_ns"), natgw's threads $(cpus "$natgw_run"), steal ${STEAL1}%), machine working $(cpus "$all_work") CPUs, latency p50 ${p50} p99 ${p99} p99.9 ${p999} us, lost ${lost}${busy:+  [others busy: $busy]}"
}

listening() { # ns port: waits up to 5 s for a TCP listener
    local i
    for i in $(seq 50); do
        [ -n "$(inns "$1" ss -Hltn "sport = :$2")" ] && return 0
        sleep 0.1
    done
    return 1
}

# === figure 4: new TCP connections per second ==================================================
nginx_pid=""
nginx_start() {
    mkdir -p "$work/nginx"
    cat >"$work/nginx/nginx.conf" <<EOF
# bench/run.sh: a small static answer, one worker, no logs
worker_processes 1;
daemon off;
master_process off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_timeout 0;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    server {
        listen 80 backlog=8192;
        location / { return 200 "natgw bench\n"; }
    }
}
EOF
    bg ip netns exec "$P-srv" taskset -c "$GEN_CPU" nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" \
        >"$work/nginx/stdout.log" 2>&1
    nginx_pid=$BG
    listening srv 80 && return 0
    cat "$work/nginx/error.log" >&2
    die "nginx did not start"
}
CONN_IDX=0
conn_run() { # mode rep
    local mode=$1 rep=$2
    local dst=203.0.113.$((101 + CONN_IDX % 40))
    # LB modes: the client connects to a VIP on the inside; the real
    # servers are this run's server addresses (own ones, no TIME_WAIT).
    LB_VIP=10.0.0.$((200 + CONN_IDX % 40))
    LB_REAL=$dst
    LB_REAL2=203.0.113.$((101 + (CONN_IDX + 20) % 40))
    case $mode in lb | lbdnat) dst=$LB_VIP ;; esac
    CONN_IDX=$((CONN_IDX + 1))
    local tag
    progress
    tag="$PROG fig4 $mode rep $rep/$REPS"
    if ! gw_mode "$mode"; then
        log "$tag: gateway did not start"
        rec fig=conn mode="$mode" rep="$rep" error="gateway did not start"
        return 0
    fi
    prime "$mode"
    inns cli ping -c 2 -i 0.2 -W 1 -q "$dst" >/dev/null 2>&1 || true
    bg ip netns exec "$P-cli" taskset -c "$GEN_CPU" "$work/tcpchurn" --dst "$dst" --port 80 \
        --conns "$CONN_CONCURRENCY" --warm 1 --duration "$CONN_DUR" >"$work/churn.json" 2>"$work/churn.log"
    local cpid=$BG busy c0 c1
    sleep 1.1
    busy=$(busy_now)
    c0=$(cpu_ticks)
    sleep "$(awk -v d="$CONN_DUR" 'BEGIN { print d - 0.3 }')"
    c1=$(cpu_ticks)
    [ -n "$busy" ] || busy=$(busy_now)
    local i
    for i in $(seq 100); do kill -0 "$cpid" 2>/dev/null || break; sleep 0.1; done
    stop_bg "$cpid" TERM
    cpu_delta "$c0" "$c1"
    local res
    res=$(cat "$work/churn.json" 2>/dev/null); [ -n "$res" ] || res=null
    rec fig=conn mode="$mode" rep="$rep" dst="$dst" churn="$res" cpu0="$CPU0" cpu1="$CPU1" steal0="$STEAL0" steal1="$STEAL1" \
        disturbed="$busy" concurrency="$CONN_CONCURRENCY" dur_s="$CONN_DUR"
    log "$tag: $(python3 -c 'import json,sys; r=json.loads(sys.argv[1]) if sys.argv[1]!="null" else {}; print("%d conn/s, connect p50 %.0f p99 %.0f us, errors %d" % (r.get("rate",0), r.get("connect_p50_us",0), r.get("connect_p99_us",0), r.get("errors_connect",0)+r.get("errors_reset",0)+r.get("timeouts",0)))' "$res"), cpu$GEN_CPU ${CPU0}% cpu$GW_CPU ${CPU1}%${busy:+  [others busy: $busy]}"
}

# === figure 5: iperf3 TCP throughput =============================================================
iperf_run() { # mode streams rep
    local mode=$1 streams=$2 rep=$3
    local tag
    progress
    tag="$PROG fig5 $mode ${streams} stream(s) rep $rep/$REPS"
    if ! gw_mode "$mode"; then
        log "$tag: gateway did not start"
        rec fig=iperf mode="$mode" streams="$streams" rep="$rep" error="gateway did not start"
        return 0
    fi
    prime "$mode"
    bg ip netns exec "$P-srv" taskset -c "$GEN_CPU" iperf3 -s -1 -B 203.0.113.100 -p 5201 >"$work/iperf-server.log" 2>&1
    local spid=$BG
    listening srv 5201 || log "warning: iperf3 server not listening"
    local c0 c1 busy
    busy=$(busy_now)
    c0=$(cpu_ticks)
    timeout $((IPERF_DUR + 15)) ip netns exec "$P-cli" taskset -c "$GEN_CPU" iperf3 -c 203.0.113.100 -p 5201 \
        -t "$IPERF_DUR" -O 1 -P "$streams" -J >"$work/iperf.json" 2>"$work/iperf.log" || true
    c1=$(cpu_ticks)
    [ -n "$busy" ] || busy=$(busy_now)
    stop_bg "$spid" TERM
    cpu_delta "$c0" "$c1"
    local bps retr
    read -r bps retr < <(python3 -c '
import json,sys
try:
    j=json.load(open(sys.argv[1])); e=j["end"]
    print(int(e["sum_received"]["bits_per_second"]), int(e["sum_sent"].get("retransmits",0)))
except Exception as ex:
    print("null null")
' "$work/iperf.json")
    rec fig=iperf mode="$mode" streams="$streams" rep="$rep" bps="$bps" retransmits="$retr" cpu0="$CPU0" cpu1="$CPU1" \
        steal0="$STEAL0" steal1="$STEAL1" disturbed="$busy" dur_s="$IPERF_DUR"
    log "$tag: $(awk -v b="$bps" 'BEGIN { printf "%.2f Gbit/s", b/1e9 }'), retransmits $retr, cpu$GEN_CPU ${CPU0}% cpu$GW_CPU ${CPU1}%${busy:+  [others busy: $busy]}"
}

# === figure 6: memory per flow ===================================================================
slab_snapshot() { # file
    awk 'NR > 2 { print $1, $2, $3, $4, $6, $15 }' /proc/slabinfo >"$1" # name active num objsize pagesperslab num_slabs
}
mem_run() { # mode
    local mode=$1
    local tag
    progress
    tag="$PROG fig6 $mode $MEM_FLOWS flows"
    if ! gw_mode "$mode"; then
        log "$tag: gateway did not start"
        rec fig=mem mode="$mode" error="gateway did not start"
        return 0
    fi
    prime "$mode"
    sleep 1
    local before=$work/mem-$mode-before after=$work/mem-$mode-after rss0="" rss1="" f0 f1 d0 d1
    slab_snapshot "$before"
    [ -n "$natgw_pid" ] && rss0=$(awk '/^VmRSS/ { print $2 }' "/proc/$natgw_pid/status" 2>/dev/null || true)
    f0=$(flows_seen "$mode")
    d0=$(delivered "$mode")
    timeout 120 ip netns exec "$P-cli" taskset -c "$GEN_CPU" "$work/udpgen" send --if eth0 --src-mac "$CLI_MAC" \
        --dst-mac "$GW_MAC" --src 10.0.0.10 --dst 203.0.113.100 --sport 1024 --dport 9984 --flows "$MEM_FLOWS" \
        --count "$MEM_FLOWS" --rate "$MEM_RATE" --warm 0 >"$work/gen.json" 2>"$work/gen.log" || true
    sleep 2
    slab_snapshot "$after"
    d1=$(delivered "$mode")
    f1=$(flows_seen "$mode")
    [ -n "$natgw_pid" ] && rss1=$(awk '/^VmRSS/ { print $2 }' "/proc/$natgw_pid/status" 2>/dev/null || true)
    local gen
    gen=$(cat "$work/gen.json" 2>/dev/null); [ -n "$gen" ] || gen=null
    rec fig=mem mode="$mode" flows_target="$MEM_FLOWS" rate="$MEM_RATE" flows_before="${f0:-null}" flows_after="${f1:-null}" \
        delivered=$((d1 - d0)) rss_kb_before="${rss0:-null}" rss_kb_after="${rss1:-null}" slab_before="$before" \
        slab_after="$after" gen="$gen"
    log "$tag: flows ${f0:-?} -> ${f1:-?}, delivered $((d1 - d0))${rss1:+, natgw RSS ${rss0} -> ${rss1} kB}"
}

# === plan ============================================================================================
TOTAL=0
if has_fig 1; then
    for f in $FLOWS; do for m in $PPS_MODES; do TOTAL=$((TOTAL + REPS)); done; done
    for m in $PPS_1K_MODES; do TOTAL=$((TOTAL + REPS)); done
fi
# Figures 2+3: how many rates (the rates themselves may need figure 1's results).
if [ -n "$PACED_RATE" ]; then PACED_NRATES=1
elif [ -n "$PACED_RATES" ]; then PACED_NRATES=$(wc -w <<<"$PACED_RATES")
else PACED_NRATES=$(wc -w <<<"$PACED_FRACS"); fi
[ "$PACED_NRATES" -ge 1 ] || die "no paced rates (PACED_FRACS, PACED_RATES and PACED_RATE all empty)"
if has_fig 2 || has_fig 3; then for m in $PACED_MODES; do TOTAL=$((TOTAL + PACED_REPS * PACED_NRATES)); done; fi
if has_fig 4; then for m in $CONN_MODES; do TOTAL=$((TOTAL + REPS)); done; fi
if has_fig 5; then for m in $IPERF_MODES; do for s in $IPERF_STREAMS; do TOTAL=$((TOTAL + REPS)); done; done; fi
if has_fig 6; then TOTAL=$((TOTAL + 2)); fi
if has_fig 7; then for m in $QUEUE_MODES; do TOTAL=$((TOTAL + REPS)); done; fi
log "plan: figures $FIGS, $TOTAL measurements, $REPS repetition(s), ${DUR}s after ${WARM}s warm-up$( (has_fig 2 || has_fig 3) && echo "; figures 2+3: $PACED_REPS repetition(s) x $PACED_NRATES rate(s), ${PACED_DUR}s")$QUICK_TAG"
cat >"$work/meta/settings.json" <<EOF
{"quick": $([ "$QUICK" = 1 ] && echo true || echo false), "figs": "$FIGS", "reps": $REPS, "dur_s": $DUR, "warm_s": $WARM,
 "flows": "$FLOWS", "pps_modes": "$PPS_MODES", "pps_1k_modes": "$PPS_1K_MODES", "paced_modes": "$PACED_MODES",
 "paced_dur_s": $PACED_DUR, "paced_flows": $PACED_FLOWS, "paced_reps": $PACED_REPS, "paced_fracs": "$PACED_FRACS",
 "paced_rates_set": "${PACED_RATE:-$PACED_RATES}", "paced_peak_fallback": $PACED_PEAK_FALLBACK, "natgw_coalesce_us": $NATGW_COALESCE_US, "natgw_rt_priority": $NATGW_RT_PRIORITY, "conn_modes": "$CONN_MODES", "conn_dur_s": $CONN_DUR,
 "conn_concurrency": $CONN_CONCURRENCY, "iperf_modes": "$IPERF_MODES", "iperf_dur_s": $IPERF_DUR, "iperf_streams": "$IPERF_STREAMS",
 "mem_flows": $MEM_FLOWS, "mem_rate": $MEM_RATE, "queue_modes": "$QUEUE_MODES", "gen_cpu": $GEN_CPU, "gw_cpu": $GW_CPU,
 "ct_max": $CT_MAX, "ct_buckets": $CT_BUCKETS, "offloads": "$OFFLOADS", "sndbuf_bytes": $SNDBUF_BYTES,
 "cmdline": "$CMDLINE", "natgw_bin": "$NATGW", "xdpfwd_note": "$XDPFWD_NOTE", "namespace_prefix": "$P"}
EOF

# === run ===============================================================================================
if has_fig 1; then
    log "figure 1: 64-byte UDP flood (trafgen), flows: $FLOWS"
    for rep in $(seq "$REPS"); do
        for f in $FLOWS; do
            for m in $PPS_MODES; do pps_run 1 "$m" "$f" "$rep"; done
            if [ "$f" = 1k ]; then for m in $PPS_1K_MODES; do pps_run 1 "$m" 1k "$rep"; done; fi
        done
        if [[ " $FLOWS " != *" 1k "* ]]; then for m in $PPS_1K_MODES; do pps_run 1 "$m" 1k "$rep"; done; fi
    done
fi
if has_fig 2 || has_fig 3; then
    # PACED_LIST: "rate:frac" words (frac = percent of the kernel's peak, or null).
    PACED_LIST=""
    if [ -n "$PACED_RATE" ] || [ -n "$PACED_RATES" ]; then
        for r in ${PACED_RATE:-$PACED_RATES}; do
            [[ $r =~ ^[0-9]+$ ]] && [ "$r" -gt 0 ] || die "paced rate '$r' is not a number of pps"
            PACED_LIST+=" $r:null"
        done
        echo "set by $([ -n "$PACED_RATE" ] && echo PACED_RATE || echo PACED_RATES)" >"$work/meta/paced_rate_source"
    else
        PACED_LIST=$(python3 - "$RESULTS" "$work/meta/paced_rate_source" "$PACED_PEAK_FALLBACK" $PACED_FRACS <<'EOF'
import json, statistics, sys
res, src, fallback, fracs = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
v = [r["pps"] for r in map(json.loads, open(res)) if r.get("fig") == "pps" and r.get("mode") == "kernel" and r.get("flows") == "1k" and "pps" in r]
peak = statistics.median(v) if v else fallback
out = []
for f in fracs:
    try:
        x = float(f)
    except ValueError:
        x = 0
    if not 0 < x <= 1000:
        sys.exit(f"PACED_FRACS: {f} is not a percent")
    out.append(f"{int(peak * x / 100 / 100) * 100}:{f}")
pct = [f"{f}%" for f in fracs]
pct = pct[0] if len(pct) == 1 else ", ".join(pct[:-1]) + " and " + pct[-1]
with open(src, "w") as o:
    if v:
        print(f"{pct} of the kernel's median 1k-flow rate from figure 1, {peak:.0f} pps", file=o)
    else:
        print(f"{pct} of {fallback} pps, taken as the kernel's 1k-flow peak: figure 1 did not run", file=o)
print(" ".join(out))
EOF
) || die "could not work out the paced rates"
    fi
    echo "$PACED_LIST" >"$work/meta/paced_rates"
    log "figures 2+3: paced UDP at$(for x in $PACED_LIST; do printf ' %s' "${x%%:*}"; done) pps, $PACED_FLOWS flows, $PACED_REPS repetition(s) of ${PACED_DUR}s ($(cat "$work/meta/paced_rate_source"))"
    for rep in $(seq "$PACED_REPS"); do
        for x in $PACED_LIST; do
            for m in $PACED_MODES; do paced_run "$m" "${x%%:*}" "$rep" "${x#*:}"; done
        done
    done
fi
if has_fig 4; then
    log "figure 4: TCP connection churn to nginx, $CONN_CONCURRENCY in flight"
    nginx_start
    for rep in $(seq "$REPS"); do for m in $CONN_MODES; do conn_run "$m" "$rep"; done; done
    stop_bg "$nginx_pid" TERM
    nginx_pid=""
fi
if has_fig 5; then
    log "figure 5: iperf3 TCP, ${IPERF_DUR}s after 1s omitted"
    for rep in $(seq "$REPS"); do for m in $IPERF_MODES; do for s in $IPERF_STREAMS; do iperf_run "$m" "$s" "$rep"; done; done; done
fi
if has_fig 6; then
    log "figure 6: memory per flow, $MEM_FLOWS distinct UDP flows at $MEM_RATE pps"
    for m in kernel natgw; do mem_run "$m"; done
fi
if has_fig 7; then
    log "figure 7: natgw with 1 vs 2 queues per interface (1k flows)"
    for rep in $(seq "$REPS"); do for m in $QUEUE_MODES; do pps_run 7 "$m" 1k "$rep"; done; done
fi
gw_bare
[ "$CUR_CHANNELS" = 1 ] || set_channels 1
ELAPSED=$(( $(date +%s) - T_START ))
echo "$ELAPSED" >"$work/meta/elapsed_s"
echo "$(others | head -3 | cut -c1-120)" >"$work/meta/others_at_end"
cut -d' ' -f1-3 /proc/loadavg >"$work/meta/loadavg_end"
inns gw ethtool -k lan0 2>/dev/null | grep -E '^(tx-checksumming|tcp-segmentation-offload|generic-segmentation-offload|generic-receive-offload|rx-checksumming):' >"$work/meta/offloads_lan0" || true
inns gw ip -d link show lan0 | grep -o 'xdp[a-z]*' | head -1 >"$work/meta/xdp_left" || true

# === report ============================================================================================
log "writing the report"
if ! python3 bench/report.py --work "$work" --out "$OUT" --natgw "$NATGW" ${XDPFWD:+--xdpfwd "$XDPFWD"}; then
    # A report bug must not lose the run's measurements: keep them to redo the report.
    BENCH_KEEP=${BENCH_KEEP:-$ROOT/target/bench-work-$P}
    die "bench/report.py failed; the raw measurements are kept in $BENCH_KEEP (redo: python3 bench/report.py --work $BENCH_KEEP --out $OUT)"
fi
