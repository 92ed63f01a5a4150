#!/usr/bin/env bash
# natgw's first speed figure: delivered packets per second of 64-byte UDP
# frames over 1024 flows, client -> gateway -> server over veth, with the
# gateway being natgw (AF_XDP, TUN) or the Linux kernel (routing, nftables
# masquerade), all with the same generator in the same run.
#
#   client PFX-cli                gateway PFX-gw                  server PFX-srv
#   eth0 10.0.0.10 ---- veth ---- lan0 10.0.0.1 | wan0 203.0.113.1 ---- veth ---- eth0 203.0.113.100
#   trafgen, CPU 0                gateway work on CPU 1           nft netdev ingress: count + drop
#
# Modes (MODES, in this order within each repetition; repetitions are
# interleaved so slow drift of this noisy machine hits every mode alike):
#   ceiling  generator straight into a drop at the gateway's ingress (lan0)
#   route    kernel routing, ip_forward=1, no NAT (the floor)
#   kernel   kernel nftables masquerade + conntrack (tests/netns KERNEL_RULESET)
#   natgw    natgw on AF_XDP, mode auto (native XDP on veth; copy mode)
#   natgwgen natgw on AF_XDP, generic XDP (runs after RPS, so on CPU 1)
#   tun      natgw on TUN
#
# Each measurement: prime ARP with a ping, start trafgen at full speed,
# wait WARM s, then count frames for DUR s. Delivered = frames that reach
# the server's veth with the expected source (203.0.113.1 for NAT modes)
# and UDP dport 9, counted by an nftables netdev ingress counter that drops
# them at once (the server's stack never sees them). Sent = the client
# veth's tx_packets + tx_dropped over the same window.
#
# Writes perf/first-pps.md (OUT) and prints the table. Needs root. Every
# namespace is named ngb<pid>-*; they and every process this script started
# (by PID / process group) are removed on exit, failure and Ctrl-C.
#
#   sudo ./bench/pps.sh
#   env: DUR=10 REPS=3 WARM=2 MODES="ceiling route kernel natgw natgwgen tun"
#        OUT=perf/first-pps.md PROFILE=1|auto|0 WAIT_MAX=600 (wait for others' benches/builds first)
#        RUN_WAIT=60 (the same before each measurement)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DUR=${DUR:-10}
REPS=${REPS:-3}
WARM=${WARM:-2}
MODES=${MODES:-"ceiling route kernel natgw natgwgen tun"}
OUT=${OUT:-perf/first-pps.md}
PROFILE=${PROFILE:-1}
WAIT_MAX=${WAIT_MAX:-600}
RUN_WAIT=${RUN_WAIT:-60}
GEN_CPU=0
GW_CPU=1
FLOWS=1024
CMDLINE="./bench/pps.sh"
[ "$DUR$REPS$WARM$MODES" = "1032ceiling route kernel natgw natgwgen tun" ] || \
    CMDLINE="DUR=$DUR REPS=$REPS WARM=$WARM MODES=\"$MODES\" ./bench/pps.sh"
if [ -n "${SUDO_USER:-}" ]; then CMDLINE="sudo $CMDLINE"; else CMDLINE="$CMDLINE (as root; = sudo ./bench/pps.sh)"; fi

[ "$(id -u)" -eq 0 ] || { echo "pps: run as root (it creates network namespaces)" >&2; exit 1; }
[ "$(nproc)" -ge 2 ] || { echo "pps: needs 2 CPUs (generator on CPU $GEN_CPU, gateway on CPU $GW_CPU)" >&2; exit 1; }
log() { printf '[pps %s] %s\n' "$(date -u +%T)" "$*" >&2; }

./scripts/setup.sh --quiet
command -v trafgen >/dev/null || { echo "pps: trafgen missing (apt-get install -y netsniff-ng)" >&2; exit 1; }
log "building natgw (release)"
cargo build --release --quiet --bin natgw
NATGW=$ROOT/target/release/natgw

P=ngb$$
work=$(mktemp -d /tmp/natgw-pps.XXXXXX)
gen_pid=""
natgw_pid=""
perf_pid=""
cleanup() {
    set +e
    trap - EXIT INT TERM
    [ -n "$perf_pid" ] && kill -INT "$perf_pid" 2>/dev/null
    [ -n "$gen_pid" ] && kill -INT -- "-$gen_pid" 2>/dev/null
    [ -n "$natgw_pid" ] && kill -TERM "$natgw_pid" 2>/dev/null
    sleep 0.3
    [ -n "$gen_pid" ] && kill -KILL -- "-$gen_pid" 2>/dev/null
    [ -n "$natgw_pid" ] && kill -KILL "$natgw_pid" 2>/dev/null
    wait 2>/dev/null
    for n in cli gw srv; do ip netns del "$P-$n" 2>/dev/null; done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM
inns() { local n=$1; shift; ip netns exec "$P-$n" "$@"; }

# --- wait for other heavy benchmarks (criterion) to finish -------------------
# Heavy work of others that would skew the figures: benchmarks, compilers.
others() { pgrep -af -- 'cargo (bench|build|test|check|clippy)|criterion|--bench|rustc|clippy-driver|valgrind' | grep -v "^$$ " || true; }
waited=0
while [ -n "$(others)" ] && [ "$waited" -lt "$WAIT_MAX" ]; do
    [ "$waited" -eq 0 ] && log "waiting (up to ${WAIT_MAX}s) for other benchmarks/builds: $(others | head -3 | cut -c1-100 | tr '\n' ';')"
    sleep 10
    waited=$((waited + 10))
done
OTHER_BENCH=$(others | cut -c1-120)
[ -n "$OTHER_BENCH" ] && log "still running after ${WAIT_MAX}s, measuring anyway: $OTHER_BENCH"
LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)

# --- topology -----------------------------------------------------------------
log "building namespaces $P-{cli,gw,srv}"
for n in cli gw srv; do
    ip netns add "$P-$n"
    inns "$n" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    inns "$n" ip link set lo up
done
ip link add eth0 netns "$P-cli" type veth peer name lan0 netns "$P-gw"
ip link add wan0 netns "$P-gw" type veth peer name eth0 netns "$P-srv"
OFFLOADS="tx off tso off gso off gro off"
for nd in cli:eth0 gw:lan0 gw:wan0 srv:eth0; do
    # Offloads off everywhere: hosts send full checksums as on a wire
    # (MACHINE-NOTES), and the kernel and natgw see the same frames.
    inns "${nd%%:*}" ethtool -K "${nd#*:}" $OFFLOADS >/dev/null 2>&1 || true
done
inns gw sysctl -qw net.ipv4.ip_forward=0 net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.default.send_redirects=0
inns gw ip addr add 10.0.0.1/24 dev lan0
inns gw ip addr add 203.0.113.1/24 dev wan0
inns gw ip link set lan0 up
inns gw ip link set wan0 up
inns gw ip route add default via 203.0.113.254 dev wan0 onlink
inns cli ip addr add 10.0.0.10/24 dev eth0
inns cli ip link set eth0 up
inns cli ip route add default via 10.0.0.1
inns srv ip addr add 203.0.113.100/24 dev eth0
inns srv ip link set eth0 up
inns srv ip route add default via 203.0.113.1
# The gateway's kernel receive work goes to CPU 1 (RPS), like natgw's worker;
# without it veth runs it on the sender's (generator's) CPU.
inns gw sh -c "printf %x $((1 << GW_CPU)) > /sys/class/net/lan0/queues/rx-0/rps_cpus"
inns gw sh -c "printf %x $((1 << GW_CPU)) > /sys/class/net/wan0/queues/rx-0/rps_cpus"
LAN_QUEUES=$(inns gw ls /sys/class/net/lan0/queues | grep -c '^rx-')

# The sink: count and drop at the server's ingress, before its IP stack.
inns srv nft -f - <<'EOF'
table netdev sink {
    counter nat {}
    counter plain {}
    chain in {
        type filter hook ingress device "eth0" priority -500; policy accept;
        ip saddr 203.0.113.1 udp dport 9 counter name "nat" drop
        udp dport 9 counter name "plain" drop
    }
}
EOF
# The ceiling's sink: the same at the gateway's ingress (added per run).
CEILING_RULES='table netdev ceiling {
    counter hit {}
    chain in {
        type filter hook ingress device "lan0" priority -500; policy accept;
        udp dport 9 counter name "hit" drop
    }
}'
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

# --- the generator --------------------------------------------------------------
# 60-byte frames (64 with the FCS a wire adds): Ethernet 14 + IPv4 20 + UDP 8
# + 18 bytes payload. Four templates with source port high byte 0x04..0x07,
# low byte counting 0..255 at run time: ports 1024..2047, 1024 flows, sent
# round robin. IPv4 and UDP checksums are computed per frame (csumip/csumudp).
GW_MAC=$(inns gw cat /sys/class/net/lan0/address)
CLI_MAC=$(inns cli cat /sys/class/net/eth0/address)
mac_bytes() { echo "$1" | sed 's/^/0x/; s/:/, 0x/g'; }
{
    echo "/* natgw bench/pps.sh: 10.0.0.10:1024-2047 -> 203.0.113.100:9, 60 B */"
    for hi in 0x04 0x05 0x06 0x07; do
        cat <<EOF
{
  $(mac_bytes "$GW_MAC"), $(mac_bytes "$CLI_MAC"), 0x08, 0x00,
  0x45, 0x00, c16(46), c16(0), 0x40, 0x00, 64, 17, csumip(14, 33),
  10, 0, 0, 10,  203, 0, 113, 100,
  $hi, dinc(0, 255, 1), c16(9), c16(26), csumudp(14, 34),
  fill(0x00, 18)
}
EOF
    done
} >"$work/flows.trafgen"

# trafgen's TX_RING sends with MSG_DONTWAIT and gives up ("Flushing TX_RING
# failed: Resource temporarily unavailable") when its socket's send buffer
# is full, which happens as soon as frames queue on another CPU (RPS): they
# stay charged to the socket until freed there. trafgen's own remedy raises
# the host-wide net.core.wmem_* (not writable inside a namespace, and it
# would change every other socket on the machine); instead a preloaded shim
# gives only trafgen's packet socket a large buffer (SO_SNDBUFFORCE).
SNDBUF_BYTES=$((8 << 20))
cat >"$work/sndbuf.c" <<'CEOF'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/socket.h>
/* bench/pps.sh: a large send buffer for trafgen's AF_PACKET socket. */
int socket(int domain, int type, int protocol)
{
    static int (*real)(int, int, int);
    if (!real)
        real = (int (*)(int, int, int))dlsym(RTLD_NEXT, "socket");
    int fd = real(domain, type, protocol);
    if (fd >= 0 && domain == AF_PACKET) {
        const char *e = getenv("PPS_SNDBUF");
        int v = e ? atoi(e) : 8 << 20;
        setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &v, sizeof v);
    }
    return fd;
}
CEOF
cc -shared -fPIC -O2 -o "$work/sndbuf.so" "$work/sndbuf.c" -ldl

gen_start() {
    setsid ip netns exec "$P-cli" env LD_PRELOAD="$work/sndbuf.so" PPS_SNDBUF=$SNDBUF_BYTES \
        taskset -c "$GEN_CPU" trafgen -o eth0 -i "$work/flows.trafgen" -P 1 -Q --no-sock-mem -n 0 \
        >"$work/trafgen.log" 2>&1 &
    gen_pid=$!
    sleep 0.2
    kill -0 "$gen_pid" 2>/dev/null || { cat "$work/trafgen.log" >&2; echo "pps: trafgen did not start" >&2; exit 1; }
}
gen_stop() {
    [ -n "$gen_pid" ] || return 0
    kill -INT -- "-$gen_pid" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$gen_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$gen_pid" 2>/dev/null || true
    wait "$gen_pid" 2>/dev/null || true
    gen_pid=""
}

# --- the gateway in each mode ---------------------------------------------------
natgw_config() { # backend xdp-mode
    cat <<EOF
# bench/pps.sh: tests/netns NATGW_CONFIG with the bench's socket and CPUs
[gateway]
backend = "$1"
control_socket = "$work/natgw.sock"
unmatched = "forward"
hairpin = true

[afxdp]
mode = "$2"
cpus = [$GW_CPU]

[[interface]]
name = "lan0"
role = "inside"
address = "10.0.0.1/24"

[[interface]]
name = "wan0"
role = "outside"
address = "203.0.113.1/24"

[[route]]
to = "0.0.0.0/0"
via = "203.0.113.254"

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
}
natgw_start() { # backend xdp-mode
    natgw_config "$1" "$2" >"$work/natgw.toml"
    rm -f "$work/natgw.sock"
    ip netns exec "$P-gw" taskset -c "$GW_CPU" "$NATGW" run --config "$work/natgw.toml" \
        >"$work/natgw.log" 2>&1 &
    natgw_pid=$!
    for _ in $(seq 100); do
        grep -qs "natgw running" "$work/natgw.log" && return 0
        kill -0 "$natgw_pid" 2>/dev/null || break
        sleep 0.1
    done
    cat "$work/natgw.log" >&2
    echo "pps: natgw did not start" >&2
    exit 1
}
natgw_stop() {
    [ -n "$natgw_pid" ] || return 0
    kill -TERM "$natgw_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$natgw_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$natgw_pid" 2>/dev/null || true
    wait "$natgw_pid" 2>/dev/null || true
    natgw_pid=""
}
gw_bare() {
    natgw_stop
    # Also removes natgw's stop guard (inet natgw_guard), which stays on purpose.
    inns gw nft flush ruleset
    # natgw TUN leaves its routing guard on purpose (src/dataplane/tun.rs:
    # iif rules into tables 7100/7101 holding a blackhole, `lookup local`
    # moved to pref 32000); hand the interfaces back to the kernel.
    if [ "$(inns gw ip rule show | wc -l)" -ne 3 ]; then
        inns gw ip rule show | grep -q '^0:.*lookup local' || inns gw ip rule add pref 0 lookup local
        while inns gw ip rule del pref 32000 lookup local 2>/dev/null; do :; done
        for t in 7100 7101; do
            while inns gw ip rule del pref "$t" 2>/dev/null; do :; done
            inns gw ip route flush table "$t" 2>/dev/null || true
        done
    fi
    [ "$(inns gw ip rule show | wc -l)" -eq 3 ] || { inns gw ip rule show >&2; echo "pps: gateway rules not back to default" >&2; exit 1; }
    inns gw sysctl -qw net.ipv4.ip_forward=0
}
gw_mode() {
    gw_bare
    case $1 in
    ceiling) inns gw nft -f - <<<"$CEILING_RULES" ;;
    route) inns gw sysctl -qw net.ipv4.ip_forward=1 ;;
    kernel)
        inns gw sysctl -qw net.ipv4.ip_forward=1
        inns gw nft -f - <<<"$KERNEL_RULESET"
        ;;
    natgw) natgw_start afxdp auto ;;
    natgwgen) natgw_start afxdp generic ;;
    tun) natgw_start tun auto ;;
    *) echo "pps: unknown mode $1" >&2; exit 2 ;;
    esac
}
label() {
    case $1 in
    ceiling) echo "generator ceiling (drop at gw ingress)" ;;
    route) echo "kernel routing, no NAT (floor)" ;;
    kernel) echo "kernel nftables masquerade + conntrack" ;;
    natgw) echo "natgw AF_XDP (auto = native XDP)" ;;
    natgwgen) echo "natgw AF_XDP (generic XDP)" ;;
    tun) echo "natgw TUN" ;;
    esac
}

# --- counters -------------------------------------------------------------------
# Sum of the "packets N" of the named counters: ns table counter...
nft_packets() {
    local ns=$1 table=$2; shift 2
    for c in "$@"; do inns "$ns" nft list counter netdev "$table" "$c"; done |
        awk '$1 == "packets" { s += $2 } END { print s + 0 }'
}
delivered() { # mode -> frames counted where this mode's traffic should arrive
    case $1 in
    ceiling) nft_packets gw ceiling hit ;;
    route) nft_packets srv sink nat plain ;;
    *) nft_packets srv sink nat ;;
    esac
}
untranslated() { nft_packets srv sink plain; }
sent() {
    inns cli sh -c 'echo $(( $(cat /sys/class/net/eth0/statistics/tx_packets) + $(cat /sys/class/net/eth0/statistics/tx_dropped) ))'
}
backlog_drops() { # packets dropped at the gateway CPU's input backlog (all namespaces)
    local f
    read -r -a f < <(sed -n "$((GW_CPU + 1))p" /proc/net/softnet_stat)
    echo $((16#${f[1]}))
}
cpu_ticks() { # "busy0 total0 steal0 busy1 total1 steal1" (busy includes steal)
    awk -v a="cpu$GEN_CPU" -v b="cpu$GW_CPU" '$1==a||$1==b { t=0; for(i=2;i<=NF;i++) t+=$i; busy=t-$5-$6; printf "%d %d %d ", busy, t, $9 }' /proc/stat
}

# Checks 20 delivered frames at the server: checksums and source address.
verify() { # mode
    local want=203.0.113.1
    [ "$1" = route ] && want=10.0.0.10
    timeout 3 ip netns exec "$P-srv" tcpdump -c 20 -nn -vv -i eth0 'udp dst port 9' >"$work/verify.txt" 2>/dev/null || true
    local ok bad src
    ok=$(grep -c 'udp sum ok' "$work/verify.txt" || true)
    bad=$(grep -ci 'bad .*cksum\|incorrect' "$work/verify.txt" || true)
    src=$(grep -oE "$want\.[0-9]+ > 203\.0\.113\.100\.9:" "$work/verify.txt" | wc -l)
    echo "$ok/20 IPv4+UDP checksums ok, $bad bad, $src/20 from $want"
}

declare -A PPS SENT CPU0 CPU1 FLOWSEEN UNTR VERIFY STATS DISTURBED BACKLOG STEAL
natgw_stats() { "$NATGW" stats --socket "$work/natgw.sock" 2>&1 || true; }

measure() { # mode rep attempt; returns 1 (recording nothing) if others' heavy work ran on attempt 1
    local mode=$1 rep=$2 attempt=$3
    local w=0
    while [ -n "$(others)" ] && [ $w -lt "$RUN_WAIT" ]; do sleep 2; w=$((w + 2)); done
    gw_mode "$mode"
    inns cli ping -c 2 -i 0.2 -W 1 -q 203.0.113.100 >/dev/null 2>&1 || true
    gen_start
    sleep "$WARM"
    if [ "$rep" -eq 1 ] && [ "$mode" != ceiling ]; then VERIFY[$mode]=$(verify "$mode"); fi
    local d0 s0 u0 c0 t0 d1 s1 u1 c1 t1
    local busy i
    busy=$(others | head -1)
    local q0 q1
    t0=$(date +%s%N); d0=$(delivered "$mode"); s0=$(sent); u0=$(untranslated); c0=$(cpu_ticks); q0=$(backlog_drops)
    for ((i = 0; i < DUR; i++)); do
        sleep 1
        [ -n "$busy" ] || busy=$(others | head -1)
    done
    t1=$(date +%s%N); d1=$(delivered "$mode"); s1=$(sent); u1=$(untranslated); c1=$(cpu_ticks); q1=$(backlog_drops)
    if ! kill -0 "$gen_pid" 2>/dev/null; then
        cat "$work/trafgen.log" >&2
        echo "pps: trafgen died during the $mode run" >&2
        exit 1
    fi
    gen_stop
    if [ -n "$busy" ]; then
        log "warning: other heavy work ran during $mode rep $rep: $busy"
        if [ "$attempt" -eq 1 ]; then
            log "measuring $mode rep $rep again"
            return 1
        fi
        DISTURBED[$mode]+="$rep "
    fi
    local dt pps sp
    dt=$(( t1 - t0 ))
    pps=$(( (d1 - d0) * 1000000000 / dt ))
    sp=$(( (s1 - s0) * 1000000000 / dt ))
    PPS[$mode]+="$pps "
    BACKLOG[$mode]+="$(( (q1 - q0) * 1000000000 / dt )) "
    SENT[$mode]+="$sp "
    UNTR[$mode]=$(( ${UNTR[$mode]:-0} + u1 - u0 ))
    local b0a t0a s0a b1a t1a s1a b0b t0b s0b b1b t1b s1b u0pct u1pct
    read -r b0a t0a s0a b1a t1a s1a <<<"$c0"
    read -r b0b t0b s0b b1b t1b s1b <<<"$c1"
    u0pct=$(( 100 * (b0b - b0a) / (t0b - t0a) ))
    u1pct=$(( 100 * (b1b - b1a) / (t1b - t1a) ))
    CPU0[$mode]+="$u0pct "
    CPU1[$mode]+="$u1pct "
    STEAL[$mode]+="$(( 100 * (s0b - s0a) / (t0b - t0a) ))/$(( 100 * (s1b - s1a) / (t1b - t1a) )) "
    case $mode in
    kernel) FLOWSEEN[$mode]=$(inns gw cat /proc/sys/net/netfilter/nf_conntrack_count) ;;
    natgw | natgwgen | tun)
        FLOWSEEN[$mode]=$("$NATGW" flows --socket "$work/natgw.sock" --proto udp --count 2>/dev/null | grep -oE '[0-9]+' | head -1 || echo "?")
        if [ "$rep" -eq "$REPS" ]; then
            STATS[$mode]=$(natgw_stats)
            if [ "$mode" = tun ]; then
                STATS[$mode]+=$'\n\n'"# kernel counters of the TUN devices (frames the kernel could not queue to natgw show as TX dropped):"
                STATS[$mode]+=$'\n'"$(inns gw ip -s link show ngw-lan0 2>&1 | sed -n '/TX:/,+1p')"
            fi
        fi
        ;;
    esac
    log "$(printf '%-9s rep %d: delivered %8d pps  sent %8d pps  cpu%d %3d%% cpu%d %3d%%' "$mode" "$rep" "$pps" "$sp" "$GEN_CPU" "$u0pct" "$GW_CPU" "$u1pct")"
}

log "gateway lan0 has $LAN_QUEUES RX queue(s); generator on CPU $GEN_CPU, gateway on CPU $GW_CPU"
log "modes: $MODES; $REPS x ${DUR}s each after ${WARM}s warm-up"
START=$(date +%s)
for rep in $(seq "$REPS"); do
    for mode in $MODES; do measure "$mode" "$rep" 1 || measure "$mode" "$rep" 2; done
done

# --- profile natgw if it is much slower than the kernel -------------------------
med() { tr ' ' '\n' | awk NF | sort -n | awk '{a[NR]=$1} END { if (NR==0) print 0; else if (NR%2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2) }'; }
mn() { tr ' ' '\n' | awk NF | sort -n | head -1; }
mx() { tr ' ' '\n' | awk NF | sort -n | tail -1; }
k() { awk -v v="$1" 'BEGIN { printf "%.0fk", v/1000 }'; }
PROFILE_TXT=""
kmed=$(med <<<"${PPS[kernel]:-}")
nmed=$(med <<<"${PPS[natgw]:-}")
gmed=$(med <<<"${PPS[natgwgen]:-}")
PROFILED=""
for m in natgw natgwgen tun; do
    [[ " $MODES " == *" $m "* ]] || continue
    command -v perf >/dev/null || break
    mm=$(med <<<"${PPS[$m]}")
    case $PROFILE in
    1) ;;
    auto) [ "$kmed" -gt 0 ] && [ $((mm * 100)) -lt $((kmed * 80)) ] || continue ;;
    *) continue ;;
    esac
    log "profiling $m (delivered $(k "$mm") vs kernel $(k "$kmed")): perf record -g -a, 4 s"
    gw_mode "$m"
    inns cli ping -c 2 -i 0.2 -W 1 -q 203.0.113.100 >/dev/null 2>&1 || true
    gen_start
    sleep 1
    perf record -q -g -a -o "$work/perf-$m.data" -- sleep 4 >/dev/null 2>&1 &
    perf_pid=$!
    wait "$perf_pid" || true
    perf_pid=""
    gen_stop
    natgw_stop
    PROFILED+="$m "
    rep() { perf report --stdio --no-children -i "$work/perf-$m.data" --percentage relative -g none "$@" 2>/dev/null | grep -v '^#' | awk NF; }
    PROFILE_TXT+="
### $(label "$m"): delivered $(k "$mm") (median above)

CPU $GW_CPU (the gateway's CPU) by process and object:
\`\`\`
$(rep --cpu "$GW_CPU" --sort comm,dso --percent-limit 1 | head -12)
\`\`\`
CPU $GW_CPU, symbols ≥ 1 %:
\`\`\`
$(rep --cpu "$GW_CPU" --sort comm,sym --percent-limit 1 | head -30)
\`\`\`
natgw's own user-space code, all CPUs (100 % = natgw's user-space samples), symbols ≥ 2 %:
\`\`\`
$(rep --dso natgw --sort sym --percent-limit 2 | head -15)
\`\`\`
"
    if [ "$m" = natgw ]; then
        PROFILE_TXT+="CPU $GEN_CPU (generator; with native XDP also lan0's XDP program and the copy into natgw's UMEM), symbols ≥ 1.5 %:
\`\`\`
$(rep --cpu "$GEN_CPU" --sort comm,sym --percent-limit 1.5 | head -25)
\`\`\`
"
    fi
done
gw_bare
ELAPSED=$(( $(date +%s) - START ))

# --- report -----------------------------------------------------------------------
cmed=$(med <<<"${PPS[ceiling]:-}")
row() { # mode -> markdown row
    local m=$1 v s note=""
    v=${PPS[$m]}
    s=$(med <<<"${SENT[$m]}")
    local d; d=$(med <<<"$v")
    local loss="-"
    [ "$s" -gt 0 ] && loss=$(awk -v d="$d" -v s="$s" 'BEGIN { printf "%.1f%%", (s>d ? 100*(s-d)/s : 0) }')
    if [ "$m" != ceiling ] && [ "${cmed:-0}" -gt 0 ] && [ $((d * 100)) -ge $((cmed * 90)) ]; then
        note="generator-bound (>= 90% of ceiling)"
    fi
    [ "$m" = ceiling ] && note="generator limit"
    local c1; c1=$(med <<<"${CPU1[$m]}")
    if [ "$m" != ceiling ] && [ "$s" -gt 0 ] && [ $((d * 100)) -ge $((s * 98)) ] && [ "$c1" -lt 97 ]; then
        note="${note:+$note; }CPU$GW_CPU not saturated and no loss: bound by CPU$GEN_CPU (generator + its share of the receive path)"
    fi
    if [ -n "${DISTURBED[$m]:-}" ]; then
        note="${note:+$note; }other heavy work during rep ${DISTURBED[$m]% }"
    fi
    if [[ $m == natgw* || $m == tun || $m == kernel ]] && [ "${UNTR[$m]:-0}" -gt 0 ]; then
        note="${note:+$note; }${UNTR[$m]} untranslated"
    fi
    printf '| %s | **%s** | %s – %s | %s | %s | %s / %s | %s | %s |\n' \
        "$(label "$m")" "$(k "$d")" "$(k "$(mn <<<"$v")")" "$(k "$(mx <<<"$v")")" "$(k "$s")" "$loss" \
        "$(med <<<"${CPU0[$m]}")%" "$(med <<<"${CPU1[$m]}")%" "${FLOWSEEN[$m]:--}" "$note"
}
TABLE="| gateway | delivered pps (median) | min – max | sent pps | loss | CPU$GEN_CPU / CPU$GW_CPU busy | flows | note |
|---|---|---|---|---|---|---|---|
$(for m in $MODES; do row "$m"; done)"
RATIO="-"
ratio() { [ "${2:-0}" -gt 0 ] && [ "${1:-0}" -gt 0 ] && awk -v n="$1" -v k="$2" 'BEGIN { printf "%.2f", n/k }' || true; }
RATIO=$(ratio "$nmed" "$kmed"); RATIO=${RATIO:--}
GRATIO=$(ratio "${gmed:-0}" "$kmed")
TRATIO=$(ratio "$(med <<<"${PPS[tun]:-}")" "$kmed")
RAW=$(for m in $MODES; do printf '%-9s delivered: %s| sent: %s| cpu%d: %s| cpu%d: %s| cpu%d backlog drops/s: %s| steal %% cpu0/cpu1: %s\n' "$m" "${PPS[$m]}" "${SENT[$m]}" "$GEN_CPU" "${CPU0[$m]}" "$GW_CPU" "${CPU1[$m]}" "$GW_CPU" "${BACKLOG[$m]}" "${STEAL[$m]}"; done)

COMMIT=$(git rev-parse --short HEAD)
DIRTY=$(git status --porcelain -- src bpf Cargo.toml Cargo.lock build.rs bench/pps.sh | awk '{print $2}' | tr '\n' ' ')
CPU_MODEL=$(lscpu | sed -n 's/^Model name: *//p' | head -1 || true)
TRAFGEN_V=$(trafgen -v 2>/dev/null | head -1 || true)

mkdir -p "$(dirname "$OUT")"
{
    cat <<EOF
# First speed figure: natgw vs the kernel, 64-byte UDP, 1024 flows

Produced by \`bench/pps.sh\`; every figure below is from one run of it.

| | |
|---|---|
| date | $(date -u +%F) ($(date -u +%FT%TZ)) |
| commit | $COMMIT${DIRTY:+ (working tree differs in: $DIRTY)} |
| command | \`$CMDLINE\` |
| kernel | $(uname -r) |
| CPU | $CPU_MODEL, $(nproc) vCPUs |
| generator | $TRAFGEN_V, 1 process pinned to CPU $GEN_CPU, TX_RING (256 frames), full speed (no \`-b\`), \`--no-sock-mem\`, socket send buffer $((SNDBUF_BYTES >> 20)) MiB via an LD_PRELOAD shim (SO_SNDBUFFORCE) |
| frames | 60 B (64 B with FCS): Ethernet + IPv4 + UDP + 18 B payload, valid IPv4 and UDP checksums (trafgen csumip/csumudp), DF |
| flows | $FLOWS: 10.0.0.10:1024–2047 → 203.0.113.100:9, round robin |
| topology | client — veth — gateway — veth — server, one namespace each (\`ngb<pid>-*\`), lan0 has $LAN_QUEUES RX queue |
| CPU placement | generator on CPU $GEN_CPU; gateway on CPU $GW_CPU: RPS on lan0/wan0 → CPU $GW_CPU for the kernel paths, natgw process \`taskset -c $GW_CPU\` with \`afxdp.cpus = [$GW_CPU]\` |
| offloads | \`ethtool -K $OFFLOADS\` on all four veth ends |
| sink | nftables netdev ingress on the server's eth0: count (by source) and drop before the IP stack; ceiling: the same on the gateway's lan0 |
| timing | $REPS repetitions × ${DUR} s after ${WARM} s warm-up per mode, modes interleaved per repetition; script took ${ELAPSED} s of measuring |
| machine load at start | loadavg $LOADAVG_START${OTHER_BENCH:+; other benchmark still running: $OTHER_BENCH} |

## Figures

$TABLE

**natgw (AF_XDP) / kernel nftables masquerade = $RATIO** (medians: $(k "$nmed") vs $(k "$kmed")).
${GRATIO:+natgw AF_XDP generic / kernel = $GRATIO; }${TRATIO:+natgw TUN / kernel = $TRATIO; }generator ceiling $(k "${cmed:-0}").

- *delivered*: translated frames (source 203.0.113.1) counted at the server
  per second (routing: untranslated); *sent*: the client veth's
  tx_packets + tx_dropped over the same window. *loss* = 1 − delivered/sent
  (frames the gateway dropped or did not forward).
- *CPU busy*: /proc/stat over the window, user + system + softirq.
- *flows*: UDP flows the gateway held after the run (kernel:
  nf_conntrack_count; natgw: \`natgw flows --proto udp --count\`).
- A figure is flagged generator-bound at ≥ 90 % of the generator ceiling,
  or when the gateway lost < 2 % while CPU $GW_CPU was < 97 % busy (then CPU $GEN_CPU,
  which also runs the gateway's receive work in some modes, set the pace).

Frames checked at the server (tcpdump -vv, 20 frames, first repetition):

$(for m in $MODES; do [ -n "${VERIFY[$m]:-}" ] && echo "- $(label "$m"): ${VERIFY[$m]}"; done)

Raw per-repetition values (pps, CPU %):

\`\`\`
$RAW
\`\`\`
EOF
    for m in natgw natgwgen tun; do
        [ -n "${STATS[$m]:-}" ] || continue
        cat <<EOF

## \`natgw stats\` after the last $(label "$m") run

Taken right after the generator stopped (counters cover that one ${DUR}+${WARM} s run).

\`\`\`
${STATS[$m]}
\`\`\`
EOF
    done
    if [ -n "$PROFILE_TXT" ]; then
        cat <<EOF

## Profiles

\`perf record -g -a\` (whole system) for 4 s during one more run of each
natgw mode profiled (${PROFILED% }; PROFILE=1 profiles every natgw mode,
PROFILE=auto only those below 80 % of the kernel's median). Self time;
percentages of that CPU's samples unless noted. Softirq work is charged to
whatever task the CPU was running (for natgw: its worker thread, e.g. the
receive path run from the worker's \`sendto\`).
$PROFILE_TXT
EOF
    fi
    cat <<EOF

## Caveats

- This machine is noisy (MACHINE-NOTES: up to 45 % between batches 15
  minutes apart); compare figures within this run only and distrust
  differences under about 15 %. Modes were interleaved per repetition to
  spread drift evenly.
- veth, not a NIC: AF_XDP runs in copy mode (one skb allocated and copied
  per transmitted frame). With native XDP (natgw's default on veth) the
  lan0 XDP program and the copy into natgw's UMEM run in the sender's
  softirq, i.e. on the generator's CPU $GEN_CPU, not on CPU $GW_CPU; RPS does not
  apply before XDP. Generic XDP runs after RPS, so all of natgw's work is
  on CPU $GW_CPU there, as for the kernel paths.
- The loop is closed by trafgen's TX ring (256 frames): a slot comes
  back only when its skb is freed. For the kernel paths that happens on
  CPU $GW_CPU after forwarding, so at most 256 frames wait in CPU $GW_CPU's backlog
  (1000) and the kernel never drops: trafgen slows to the gateway's pace
  (the "closed loop" of MACHINE-NOTES). natgw's AF_XDP receive path frees
  the skb as soon as the frame is copied into the UMEM (or dropped because
  natgw's rings are full), and TUN as soon as it is queued or dropped, so
  for natgw the generator runs ahead and *loss* shows natgw's overload.
  trafgen's default socket send buffer (212992 B) holds fewer than 256
  such frames and trafgen aborts on EAGAIN once frames queue on another
  CPU; the shim raises it for trafgen's socket only. \`trafgen -b RATE\`
  is no help here: it sends in bursts larger than the backlog, and even
  the kernel then loses ~half at 50 kpps.
- Work on CPU $GEN_CPU besides the generator (veth transmit, RPS enqueue; for
  natgw native also XDP and the UMEM copy) slows the generator, so *sent*
  differs between modes; compare *delivered*.
- The kernel's conntrack entries from the previous repetition (UDP
  unreplied, 30 s) may still exist when the next kernel run starts; natgw
  starts empty each run. 1024 new flows per run are negligible against
  millions of frames, and the warm-up excludes them.
- The sink's nftables ingress rule costs the same in every mode, on CPU $GW_CPU
  (nft_do_chain in the profiles): veth delivers to the server on the
  sending CPU, so the server's receive work is part of the gateway CPU's
  load in every mode.
- perf samples with cpu-clock here (no hardware PMU in this VM): time spent
  with interrupts off is charged to the point where they come back on, so
  \`_raw_spin_unlock_irqrestore\` and \`handle_softirqs\` look hotter than
  they are.
- natgw TUN adds two kernel routing passes around natgw (into and out of
  the TUN device) and a syscall per packet each way.
EOF
} >"$OUT"

echo
echo "natgw first speed figure ($(date -u +%F), commit $COMMIT, $(uname -r), $CPU_MODEL)"
echo "$TABLE" | sed 's/\*\*//g' | column -t -s'|' -o' |'
echo
echo "natgw AF_XDP / kernel NAT: $RATIO${GRATIO:+   generic XDP / kernel: $GRATIO}${TRATIO:+   TUN / kernel: $TRATIO}   (generator ceiling $(k "${cmed:-0}"))"
echo "written: $OUT"
