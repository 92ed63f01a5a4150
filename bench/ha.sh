#!/usr/bin/env bash
# Issue 12's benchmark: an HA pair of natgw gateways with keepalived.
#
#   cli 10.0.0.10 ── brlan ──┬── lan0 gw  10.0.0.2    wan0 203.0.113.2 ──┬── brwan ── srv 203.0.113.100
#   hitless_gen.py / trafgen └── lan0 gw2 10.0.0.3    wan0 203.0.113.3 ──┘           tcpdump + nft drop
#   (CPU 0)                       gw sync0 10.9.0.1 ── 10.9.0.2 gw2 sync0 (the sync link)
#                                 VIPs 10.0.0.1 (the client's gateway), 203.0.113.1 (SNAT address)
#
# (scripts/netns.sh NETNS_HA=1 with one inside host, one outside host, no
# router.) natgw on both nodes: AF_XDP (mode auto), `[[rule]] snat` of
# 10.0.0.0/24 to the shared 203.0.113.1, `[ha]` over sync0 with an HMAC
# key, `[limits] max_flows = MAX_FLOWS`. Three parts:
#
# failover  keepalived on both nodes as in tests/e2e_ha.rs (VRRPv3 on lan0,
#           advert_int ADVERT, priorities 150/100, the `natgw ha check` gate,
#           notify_master/backup/fault -> `natgw ha role`). Both natgw on
#           CPU 1 (`nice -n -20`), the generator on CPU 0 (SCHED_FIFO 40).
#           One run: a fresh pair (node 1 master, node 2 backup and in
#           sync), tcpdump on the server, bench/hitless_gen.py sends RATE
#           pps for DUR s over FLOWS UDP flows to 203.0.113.100:9 with the
#           destination MAC of the client's ARP entry for 10.0.0.1 (polled
#           every 1 ms, so a gratuitous ARP from the new master moves the
#           stream, as it moves a host's); EVENT_AT s in, kill -9 node 1's
#           keepalived (parent and VRRP child) and natgw; bench/ha_poll.py
#           polls node 2's `natgw ha status --json` until role master.
#           bench/hitless_gaps.py then gives frames lost and the longest gap
#           at the server (kernel time stamps); the times from the kill to
#           node 2's log line "ha: role backup -> master" and to the client's
#           MAC switch break the gap down. Runs interleave the ADVERTS.
# bulk      sync throughput, bulk: node 1 starts from a snapshot of
#           BULK_FLOWS live UDP flows (bench/hitless_snap.rs, as
#           hitless.sh's handover-1m) on CPU 1 and is made master
#           (`natgw ha role master`); node 2 starts empty on CPU 0 and asks
#           for a bulk resync; timed from node 1's "ha: bulk resync for the
#           peer" to node 2's "ha: bulk resync received" (log time stamps,
#           ms) and to `in_sync` (polled); flows/s.
# rate      the active node's forwarding rate with sync on vs off: trafgen
#           at full speed (CPU 0), sending from the switch namespace out of
#           the bridge port facing node 1 (l-gw: straight into node 1's lan0,
#           no client and bridge hop, or the generator's CPU would not
#           outpace natgw's), over 2,007,040 UDP flows (32 templates x
#           256 source ports x 245 destination ports, as bench/run.sh's 1M
#           set, doubled), so at this rate every frame natgw forwards in the
#           measured window is a new flow: the change stream is at its
#           heaviest. ON: node 1 with `[ha]`, master, node 2 standby (on
#           CPU 0, beside the generator: the standby is another machine in
#           real life); OFF: node 1 without `[ha]`, node 2 not running.
#           Node 1's whole process (workers and sync thread) on CPU 1 in
#           both. Delivered translated pps at the server (nftables counter)
#           over SAT_DUR s after SAT_WARM s; ON and OFF alternate
#           (ON, OFF, ON2, ON, OFF, ON2, ...; ON2 = ON with node 1's sync
#           thread moved to CPU 0 after the start). The ON runs also give the change-stream
#           sync throughput: the standby's counters.flows_applied during the
#           window, and how long after the generator stops it settles.
#
# Writes OUT (perf/ha.md) and prints the tables; a hand-written part after
# the line "<!-- analysis -->" is kept. Needs root and 2 CPUs. Namespaces are
# ha<pid>-*; they, every process this script started (by PID / process
# group) and the XDP pins of its namespaces are removed on exit, failure
# and Ctrl-C.
#
#   sudo ./bench/ha.sh               # about 8-10 minutes
#   sudo REPS=1 ./bench/ha.sh        # quick check (~3 minutes)
#   env: REPS=5 PARTS="failover bulk rate" ADVERTS="0.1 0.3"
#        RATE=100000 DUR=5 EVENT_AT=2 FLOWS=256
#        BULK_FLOWS=1000000 BULK_REPS=min(REPS,3)
#        SAT_REPS=REPS SAT_WARM=0.3 SAT_DUR=2 MAX_FLOWS=3000000
#        RATE_MODES="on off on2" (on2: ON with node 1's sync thread moved to
#        CPU 0 after the start, its workers staying on CPU 1: a node whose
#        sync thread has a core of its own) STANDBY_SCHED= (node 2's
#        scheduling in the rate part, e.g. "chrt -i 0"; default normal)
#        OUT=perf/ha.md WAIT_MAX=120 NATGW_BIN=path (no build)
#        PERF_DIR=dir (perf record node 1 during each rate window: a profile, not a figure)
#        GW_SCHED="nice -n -20" GEN_SCHED="chrt -f 40"
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
REPS=${REPS:-5}
PARTS=${PARTS:-"failover bulk rate"}
ADVERTS=${ADVERTS:-"0.1 0.3"}
RATE=${RATE:-100000}
DUR=${DUR:-5}
EVENT_AT=${EVENT_AT:-2}
FLOWS=${FLOWS:-256}
BULK_FLOWS=${BULK_FLOWS:-1000000}
BULK_REPS=${BULK_REPS:-$((REPS < 3 ? REPS : 3))}
SAT_REPS=${SAT_REPS:-$REPS}
SAT_WARM=${SAT_WARM:-0.3}
SAT_DUR=${SAT_DUR:-2}
RATE_MODES=${RATE_MODES:-"on off on2"}
STANDBY_SCHED=${STANDBY_SCHED-}
MAX_FLOWS=${MAX_FLOWS:-3000000}
OUT=${OUT:-perf/ha.md}
WAIT_MAX=${WAIT_MAX:-120}
GW_SCHED=${GW_SCHED-nice -n -20}
GEN_SCHED=${GEN_SCHED-chrt -f 40}
GEN_CPU=0
GW_CPU=1
COUNT=$((RATE * DUR))
CMDLINE=""
for v in REPS:5 "PARTS:failover bulk rate" "ADVERTS:0.1 0.3" RATE:100000 DUR:5 EVENT_AT:2 FLOWS:256 \
    BULK_FLOWS:1000000 "RATE_MODES:on off on2" SAT_WARM:0.3 SAT_DUR:2 MAX_FLOWS:3000000 "GW_SCHED:nice -n -20" "GEN_SCHED:chrt -f 40" NATGW_BIN:; do
    n=${v%%:*}
    [ "${!n:-}" = "${v#*:}" ] || CMDLINE+="$n=\"${!n:-}\" "
done
[ "$BULK_REPS" = "$((REPS < 3 ? REPS : 3))" ] || CMDLINE+="BULK_REPS=$BULK_REPS "
[ "$SAT_REPS" = "$REPS" ] || CMDLINE+="SAT_REPS=$SAT_REPS "
CMDLINE+="./bench/ha.sh"
if [ -n "${SUDO_USER:-}" ]; then CMDLINE="sudo $CMDLINE"; else CMDLINE="$CMDLINE (as root)"; fi

[ "$(id -u)" -eq 0 ] || { echo "ha: run as root (it creates network namespaces)" >&2; exit 1; }
[ "$(nproc)" -ge 2 ] || { echo "ha: needs 2 CPUs" >&2; exit 1; }
for p in $PARTS; do case $p in failover | bulk | rate) ;; *) echo "ha: unknown part $p" >&2; exit 2 ;; esac; done
T_START=$(date +%s)
log() { printf '[ha %s +%ds] %s\n' "$(date -u +%T)" "$(( $(date +%s) - T_START ))" "$*" >&2; }
die() { log "error: $*"; exit 1; }

./scripts/setup.sh --quiet
for t in keepalived tcpdump nft trafgen ethtool python3 chrt cc; do
    command -v "$t" >/dev/null || die "$t missing (scripts/setup.sh installs it)"
done
if [ -n "${NATGW_BIN:-}" ]; then
    log "using NATGW_BIN=$NATGW_BIN (no build)"
    SNAP_BIN=${SNAP_BIN:-$ROOT/target/release/examples/hitless_snap}
else
    log "building natgw and the snapshot writer (release; waits for the target dir's lock if others build)"
    cargo build --release --quiet --bin natgw --example hitless_snap
    NATGW_BIN=$ROOT/target/release/natgw
    SNAP_BIN=$ROOT/target/release/examples/hitless_snap
fi
COMMIT=$(git rev-parse --short HEAD)
DIRTY=$(git status --porcelain -- src bpf Cargo.toml Cargo.lock build.rs | awk '{print $2}' | tr '\n' ' ')

P=ha$$
work=$(mktemp -d /tmp/natgw-ha.XXXXXX)
# Private copies: others may rebuild target/release while this runs.
cp "$NATGW_BIN" "$work/natgw"
NATGW=$work/natgw
NATGW_SUM=$(sha256sum "$NATGW" | cut -c1-12)
if [[ " $PARTS " == *" bulk "* ]]; then
    [ -x "$SNAP_BIN" ] || die "bulk needs $SNAP_BIN (cargo build --release --example hitless_snap)"
    cp "$SNAP_BIN" "$work/hitless_snap"
fi
GAPS="python3 $ROOT/bench/hitless_gaps.py"
POLL="python3 $ROOT/bench/ha_poll.py $NATGW"

# --- processes and cleanup ------------------------------------------------------------
# Every background process is started with setsid (its own process group) and
# recorded; cleanup signals the groups, then removes the namespaces (which
# ends anything left inside) and the XDP pins of those namespaces.
PIDS=()
NS_INODES=""
spawn() { # log cmd... -> $SPAWNED
    local logf=$1; shift
    setsid "$@" >"$logf" 2>&1 &
    SPAWNED=$!
    PIDS+=("$SPAWNED")
}
kill_group() { # pid [signal]
    [ -n "${1:-}" ] || return 0
    kill "-${2:-TERM}" -- "-$1" 2>/dev/null || true
}
stop_group() { # pid: TERM, up to 5 s, KILL, reap
    [ -n "${1:-}" ] || return 0
    kill_group "$1" TERM
    local i
    for i in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill_group "$1" KILL
    wait "$1" 2>/dev/null || true
}
unpin() { # remove the XDP pins (link + maps) of this run's gateway namespaces
    local i d
    for i in $NS_INODES; do
        for d in /run/natgw/bpffs/natgw/"$i"-* /sys/fs/bpf/natgw/"$i"-*; do
            [ -e "$d" ] && rm -rf "$d"
        done
    done
    return 0
}
cleanup() {
    set +e
    trap - EXIT INT TERM
    local p
    for p in "${PIDS[@]}"; do kill -TERM -- "-$p" 2>/dev/null; done
    sleep 0.5
    for p in "${PIDS[@]}"; do kill -KILL -- "-$p" 2>/dev/null; done
    # keepalived's VRRP child runs in its own process group: by its pid file.
    for p in "$work"/ka*-vrrp.pid; do [ -e "$p" ] && kill -KILL "$(cat "$p")" 2>/dev/null; done
    wait 2>/dev/null
    # Pins first, while the namespaces (and so their inode numbers) are still
    # ours: once deleted, an inode number may be reused by anyone's new one.
    unpin
    NETNS_QUIET=1 "$ROOT/scripts/netns.sh" down "$P"
    rm -rf "$work"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM
inns() { local n=$1; shift; ip netns exec "$P-$n" "$@"; }
now() { date +%s.%N; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "") print "?"; else printf "%.0f", (b - a) * 1000 }'; }
jget() { python3 -c 'import json, sys; j = json.loads(sys.argv[1]); print(*(j.get(k, "-") for k in sys.argv[2:]))' "$@"; }
log_ts() { # file pattern [last] -> epoch seconds of the first (last) matching line ("" if none)
    local s
    if [ "${3:-}" = last ]; then
        s=$(grep -- "$2" "$1" 2>/dev/null | tail -1 | sed -n 's/^\[\([0-9T:.-]*Z\) .*/\1/p')
    else
        s=$(grep -m1 -- "$2" "$1" 2>/dev/null | sed -n 's/^\[\([0-9T:.-]*Z\) .*/\1/p')
    fi
    [ -n "$s" ] && date -u -d "$s" +%s.%N || true
}
wait_line() { # file pattern pid timeout-s
    local i
    for ((i = 0; i < $4 * 20; i++)); do
        grep -qs -- "$2" "$1" && return 0
        kill -0 "$3" 2>/dev/null || { grep -qs -- "$2" "$1" && return 0; return 1; }
        sleep 0.05
    done
    return 1
}

# --- wait for others' heavy work ------------------------------------------------------------
others() { pgrep -af -- 'cargo (bench|build|test|check|clippy)|criterion|--bench|rustc|clippy-driver|valgrind|trafgen|iperf3' | grep -v -e "$work" -e "$P-" | grep -v "^$$ " || true; }
waited=0
while [ -n "$(others)" ] && [ "$waited" -lt "$WAIT_MAX" ]; do
    [ "$waited" -eq 0 ] && log "waiting (up to ${WAIT_MAX}s) for others' builds/benchmarks: $(others | head -3 | cut -c1-90 | tr '\n' ';')"
    sleep 10
    waited=$((waited + 10))
done
OTHER_START=$(others | head -3 | cut -c1-100 | tr '\n' ';')
LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)

# --- topology ----------------------------------------------------------------------------------
log "building namespaces $P-{gw,gw2,sw,cli,srv} (scripts/netns.sh NETNS_HA=1)"
OFFLOADS="tx off tso off gso off gro off"
NETNS_HA=1 NETNS_ROUTER=0 NETNS_INSIDE=cli:10.0.0.10 NETNS_OUTSIDE=srv:203.0.113.100 \
    NETNS_OFFLOADS="$OFFLOADS" NETNS_QUIET=1 "$ROOT/scripts/netns.sh" up "$P" || die "netns.sh up failed"
NS_INODES="$(stat -L -c %i "/run/netns/$P-gw") $(stat -L -c %i "/run/netns/$P-gw2")"
for g in gw gw2; do
    inns "$g" sh -c "printf %x $((1 << GW_CPU)) > /sys/class/net/lan0/queues/rx-0/rps_cpus; printf %x $((1 << GW_CPU)) > /sys/class/net/wan0/queues/rx-0/rps_cpus"
done
# The sync link's receive work (softirq, UDP socket) of node 2 on CPU 0 (the
# standby's CPU in the rate and bulk parts), not on the CPU of the node that
# sends (veth delivers on the sender's CPU): node 1's CPU would otherwise do
# the standby's kernel work too.
inns gw2 sh -c "printf %x $((1 << GEN_CPU)) > /sys/class/net/sync0/queues/rx-0/rps_cpus"
# The sink: tcpdump records, this rule then counts and drops (no ICMP back).
inns srv nft -f - <<'EOF'
table netdev sink {
    counter nat {}
    counter plain {}
    chain in {
        type filter hook ingress device "eth0" priority -500; policy accept;
        ip saddr 203.0.113.1 ip protocol udp counter name "nat" drop
        ip protocol udp counter name "plain" drop
    }
}
EOF
nft_packets() { inns srv nft list counter netdev sink "$1" | awk '$1 == "packets" { print $2 }'; }
sw_tx_count() { inns sw sh -c 'echo $(( $(cat /sys/class/net/l-gw/statistics/tx_packets) + $(cat /sys/class/net/l-gw/statistics/tx_dropped) ))'; }
tx_count() { inns cli sh -c 'echo $(( $(cat /sys/class/net/eth0/statistics/tx_packets) + $(cat /sys/class/net/eth0/statistics/tx_dropped) ))'; }
GW1_MAC=$(inns gw cat /sys/class/net/lan0/address)
GW2_MAC=$(inns gw2 cat /sys/class/net/lan0/address)
CLI_MAC=$(inns cli cat /sys/class/net/eth0/address)
host() { if [ "$1" = 1 ]; then echo gw; else echo gw2; fi; }
sock() { echo "$work/natgw$1.sock"; }

# --- configs -----------------------------------------------------------------------------------
natgw_config() { # node ha(0|1) cpu
    local node=$1 other=$((3 - $1))
    cat <<EOF
[gateway]
backend = "afxdp"
control_socket = "$(sock "$node")"
unmatched = "forward"

[afxdp]
mode = "auto"
cpus = [$3]

[[interface]]
name = "lan0"
role = "inside"
address = "10.0.0.$((node + 1))/24"
extra_addresses = ["10.0.0.1"]

[[interface]]
name = "wan0"
role = "outside"
address = "203.0.113.$((node + 1))/24"
extra_addresses = ["203.0.113.1"]

[[rule]]
name = "lan-out"
oif = "wan0"
src = "10.0.0.0/24"
action = "snat"
to = "203.0.113.1"

[limits]
max_flows = $MAX_FLOWS
EOF
    if [ "$2" = 1 ]; then
        cat <<EOF

[ha]
local = "10.9.0.$node:7450"
peer = "10.9.0.$other:7450"
key = "natgw-bench-sync-key-0123456789"
EOF
    fi
}
for n in 1 2; do
    for h in 0 1; do
        for c in 0 1; do natgw_config "$n" "$h" "$c" >"$work/natgw$n-ha$h-cpu$c.toml"; done
    done
    inns "$(host "$n")" "$NATGW" check --config "$work/natgw$n-ha1-cpu1.toml" >/dev/null || die "natgw check failed"
done
keepalived_config() { # node advert
    local node=$1 s
    s=$(sock "$node")
    cat <<EOF
global_defs {
    router_id natgw$node
    script_user root
    enable_script_security
    vrrp_version 3
}
vrrp_script natgw_sync {
    script "$NATGW ha check --socket $s"
    interval 1
    weight -60
    rise 1
    fall 1
    init_fail
}
vrrp_instance pair {
    state BACKUP
    interface lan0
    virtual_router_id 42
    priority $([ "$node" = 1 ] && echo 150 || echo 100)
    advert_int $2
    virtual_ipaddress {
        10.0.0.1/24 dev lan0
        203.0.113.1/24 dev wan0
    }
    track_script {
        natgw_sync
    }
    notify_master "$NATGW ha role master --socket $s"
    notify_backup "$NATGW ha role backup --socket $s"
    notify_fault "$NATGW ha role fault --socket $s"
}
EOF
}

# --- nodes -------------------------------------------------------------------------------------
declare -A NG KA
natgw_start() { # node ha cpu log [flags...]
    local node=$1 ha=$2 cpu=$3 logf=$4
    shift 4
    rm -f "$(sock "$node")"
    spawn "$logf" ip netns exec "$P-$(host "$node")" taskset -c "$cpu" $GW_SCHED \
        "$NATGW" run --config "$work/natgw$node-ha$ha-cpu$cpu.toml" "$@"
    NG[$node]=$SPAWNED
    wait_line "$logf" "natgw running" "$SPAWNED" 120 || { tail -20 "$logf" >&2; die "natgw on node $node did not start"; }
}
ka_start() { # node advert log
    keepalived_config "$1" "$2" >"$work/ka$1.conf"
    rm -f "$work/ka$1.pid" "$work/ka$1-vrrp.pid"
    spawn "$3" ip netns exec "$P-$(host "$1")" keepalived --dont-fork --log-console --vrrp \
        --use-file "$work/ka$1.conf" --pid "$work/ka$1.pid" --vrrp_pid "$work/ka$1-vrrp.pid"
    KA[$1]=$SPAWNED
}
ka_kill() { # node: kill -9 of keepalived and its VRRP child (own process group)
    local child=""
    [ -e "$work/ka$1-vrrp.pid" ] && child=$(cat "$work/ka$1-vrrp.pid")
    kill_group "${KA[$1]}" KILL
    [ -n "$child" ] && { kill -KILL "$child" 2>/dev/null || true; }
    wait "${KA[$1]}" 2>/dev/null || true
    KA[$1]=""
    rm -f "$work/ka$1.pid" "$work/ka$1-vrrp.pid"
}
ka_stop() { # node
    local child=""
    [ -e "$work/ka$1-vrrp.pid" ] && child=$(cat "$work/ka$1-vrrp.pid")
    stop_group "${KA[$1]:-}"
    [ -n "$child" ] && { kill -KILL "$child" 2>/dev/null || true; }
    KA[$1]=""
    rm -f "$work/ka$1.pid" "$work/ka$1-vrrp.pid"
}
natgw_stop() { stop_group "${NG[$1]:-}"; NG[$1]=""; }
all_stop() {
    local n
    for n in 1 2; do ka_stop "$n"; done
    for n in 1 2; do natgw_stop "$n"; done
    # A node killed with -9 leaves its XDP program attached and pinned (it
    # parks frames for the next natgw): gone, so the next run starts clean.
    unpin
}
cpu_ticks() { # "busy0 total0 busy1 total1"
    awk -v a="cpu$GEN_CPU" -v b="cpu$GW_CPU" '$1 == a || $1 == b { t = 0; for (i = 2; i <= NF; i++) t += $i; v[$1] = (t - $5 - $6) " " t }
        END { print v[a], v[b] }' /proc/stat
}
proc_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
thread_ticks() { # pid comm -> CPU ticks of the process's threads named comm
    local t s=0
    for t in /proc/"$1"/task/*; do
        [ "$(cat "$t/comm" 2>/dev/null)" = "$2" ] && s=$((s + $(awk '{ print $14 + $15 }' "$t/stat" 2>/dev/null || echo 0)))
    done
    echo "$s"
}
status_json() { "$NATGW" ha status --json --socket "$(sock "$1")" 2>/dev/null || echo '{}'; }
flows_of() { # node -> live flows
    "$NATGW" stats --json --socket "$(sock "$1")" 2>/dev/null |
        python3 -c 'import json, sys; j = json.load(sys.stdin); print(j.get("data", j)["flows"])' 2>/dev/null || echo "?"
}
counter() { # json name -> counters[name] (0 if absent)
    python3 -c 'import json, sys; print(json.loads(sys.argv[1]).get("counters", {}).get(sys.argv[2], 0))' "$1" "$2" 2>/dev/null || echo "?"
}

# --- capture -------------------------------------------------------------------------------------
cap_pid=""
cap_start() { # pcap
    spawn "$work/tcpdump.err" ip netns exec "$P-srv" tcpdump -i eth0 -w "$1" -s 64 -B 65536 -nn -q \
        --time-stamp-precision=nano 'udp dst port 9'
    cap_pid=$SPAWNED
    wait_line "$work/tcpdump.err" "listening on" "$cap_pid" 10 || { cat "$work/tcpdump.err" >&2; die "tcpdump did not start"; }
}
cap_stop() {
    kill -INT -- "-$cap_pid" 2>/dev/null || true
    wait "$cap_pid" 2>/dev/null || true
    cap_pid=""
}

med() { tr ' ' '\n' | awk NF | { grep -v '^?$' || true; } | sort -g | awk '{a[NR]=$1} END { if (NR==0) print "-"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'; }
mn() { tr ' ' '\n' | awk NF | { grep -v '^?$' || true; } | sort -g | head -1; }
mx() { tr ' ' '\n' | awk NF | { grep -v '^?$' || true; } | sort -g | tail -1; }
mmm() { local v; v=$(cat); printf '**%s** (%s–%s)' "$(med <<<"$v")" "$(mn <<<"$v")" "$(mx <<<"$v")"; }

# === part 1: failover ================================================================================
declare -A F_LOST F_NEAR F_GAP F_EGAP F_MASTER F_LOG F_MAC F_RUN
F_RAW=""
F_LOGS=""
failover_run() { # advert rep
    local adv=$1 rep=$2 tag="failover advert $1 s rep $2"
    local L=$work/f-$adv-$rep
    natgw_start 1 1 "$GW_CPU" "$L-natgw1.log"
    natgw_start 2 1 "$GW_CPU" "$L-natgw2.log"
    ka_start 1 "$adv" "$L-ka1.log"
    ka_start 2 "$adv" "$L-ka2.log"
    $POLL "$(sock 1)" --until "s['role'] == 'master'" --timeout 20 --interval 0.05 >/dev/null ||
        { tail -20 "$L-ka1.log" >&2; die "$tag: node 1 did not become master"; }
    $POLL "$(sock 2)" --until "s['role'] == 'backup' and s['in_sync']" --timeout 20 --interval 0.05 >/dev/null ||
        { tail -20 "$L-ka2.log" >&2; die "$tag: node 2 not backup in sync"; }
    inns cli ip neigh flush dev eth0 2>/dev/null || true
    inns srv ip neigh flush dev eth0 2>/dev/null || true
    inns cli ping -c 2 -i 0.2 -W 1 -q 203.0.113.100 >/dev/null 2>&1 || log "$tag: warning: ping through node 1 failed"
    local mac
    mac=$(inns cli awk '$1 == "10.0.0.1" { print $4 }' /proc/net/arp)
    [ "$mac" = "$GW1_MAC" ] || log "$tag: warning: the client's ARP entry for 10.0.0.1 is '$mac', node 1's lan0 is $GW1_MAC"
    sleep 0.3
    local pcap=$work/f.pcap
    cap_start "$pcap"
    spawn "$work/gen.out" ip netns exec "$P-cli" taskset -c "$GEN_CPU" $GEN_SCHED python3 "$ROOT/bench/hitless_gen.py" \
        --if eth0 --src-mac "$CLI_MAC" --follow-arp 10.0.0.1 --src 10.0.0.10 --dst 203.0.113.100 \
        --sport 1024 --dport 9 --flows "$FLOWS" --rate "$RATE" --count "$COUNT"
    local gen=$SPAWNED
    wait_line "$work/gen.out" '"start"' "$gen" 60 || { cat "$work/gen.out" >&2; die "$tag: the generator did not start"; }
    sleep "$EVENT_AT"
    local busy te0 pj tm
    busy=$(others | head -1 | cut -c1-80)
    te0=$(now)
    ka_kill 1
    kill -KILL "${NG[1]}" 2>/dev/null || true
    wait "${NG[1]}" 2>/dev/null || true
    NG[1]=""
    pj=$($POLL "$(sock 2)" --until "s['role'] == 'master'" --timeout 10 --interval 0.005) ||
        { tail -20 "$L-ka2.log" >&2; die "$tag: node 2 did not become master"; }
    tm=$(jget "$pj" t)
    local i
    for ((i = 0; i < DUR * 60; i++)); do kill -0 "$gen" 2>/dev/null || break; sleep 0.05; done
    kill -0 "$gen" 2>/dev/null && { log "$tag: warning: generator still running; stopping it"; kill_group "$gen" KILL; }
    wait "$gen" 2>/dev/null || true
    sleep 1.5
    cap_stop
    local g sent late macs
    g=$(tail -1 "$work/gen.out")
    read -r sent late < <(jget "$g" sent late_max_ms) || { cat "$work/gen.out" >&2; die "$tag: generator failed"; }
    [ "$sent" = "$COUNT" ] || { cat "$work/gen.out" >&2; die "$tag: the generator sent $sent of $COUNT"; }
    # When the client's ARP entry moved to node 2 (the generator's poll).
    local tmac
    tmac=$(python3 -c '
import json, sys
j = json.loads(sys.argv[1])
m = [t for t, mac in j.get("macs", [])[1:] if mac == sys.argv[2]]
print(m[0] if m else "")' "$g" "$GW2_MAC")
    macs=$(python3 -c 'import json, sys; print(len(json.loads(sys.argv[1]).get("macs", [])) - 1)' "$g")
    local j
    j=$($GAPS "$pcap" 203.0.113.1 --count "$COUNT" --rate "$RATE" --event "$te0" "$tm") || die "$tag: analysing the capture failed"
    rm -f "$pcap"
    local recv plain lost runs lrunms maxg eg egoff near
    read -r recv plain lost runs lrunms maxg eg egoff near < <(jget "$j" nat plain lost runs longest_run_ms max_gap_ms \
        event_gap_ms event_gap_from_t0_ms lost_near_event)
    local tlog
    # The last one: node 2 may have been master for a moment while the pair
    # came up (counted in the notes).
    tlog=$(log_ts "$L-natgw2.log" "ha: role backup -> master" last)
    local flaps
    flaps=$(grep -c "ha: role backup -> master" "$L-natgw2.log" || true)
    local k=$adv
    F_LOST[$k]+="$lost "
    F_NEAR[$k]+="$near "
    F_GAP[$k]+="$maxg "
    F_EGAP[$k]+="$eg "
    F_RUN[$k]+="$lrunms "
    F_MASTER[$k]+="$(ms "$te0" "$tm") "
    F_LOG[$k]+="$(ms "$te0" "$tlog") "
    F_MAC[$k]+="$(ms "$te0" "$tmac") "
    local s2 standby_drop
    s2=$("$NATGW" stats --socket "$(sock 2)" 2>/dev/null || true)
    standby_drop=$(awk '/^drops by reason/ { d = 1; next } d && /^  [a-z_]+ +[0-9]+/ { r = r ", " $1 " " $2; next } { d = 0 } END { print (r == "" ? "no drops" : substr(r, 3)) }' <<<"$s2")
    local note=""
    [ "$plain" != 0 ] && note+="$plain untranslated; "
    [ "$macs" != 1 ] && note+="client MAC changed $macs times; "
    [ "$flaps" -gt 1 ] && note+="node 2 was master $((flaps - 1)) time(s) while the pair came up; "
    [ -n "$busy" ] && note+="others: $busy; "
    F_RAW+="| $adv | $rep | $sent | $recv | $lost | $near | $runs | $lrunms | $maxg | $eg | $egoff | $(ms "$te0" "$tlog") | $(ms "$te0" "$tm") | $(ms "$te0" "$tmac") | $late | $standby_drop | ${note%; } |"$'\n'
    log "$tag: lost $lost (near event $near), gap near event $eg ms (max $maxg ms); kill -> node 2 log master $(ms "$te0" "$tlog") ms, status master $(ms "$te0" "$tm") ms, client MAC moved $(ms "$te0" "$tmac") ms; gen late max $late ms${note:+ [$note]}"
    if [ "$rep" = 1 ] && [ "$adv" = "${ADVERTS%% *}" ]; then
        F_LOGS+="
### advert_int $adv s, repetition 1: logs around the failover

node 2 natgw:
\`\`\`
$(grep -E 'ha: |WARN|ERROR' "$L-natgw2.log" | tail -12 | cut -c1-300)
\`\`\`
node 2 keepalived:
\`\`\`
$(grep -vE '^\s*$' "$L-ka2.log" | tail -10 | cut -c1-300)
\`\`\`
"
    fi
    all_stop
}

# === part 2: bulk resync ==========================================================================
B_RATE=""
B_TIME=""
B_SYNC=""
B_RAW=""
bulk_run() { # rep
    local rep=$1 tag="bulk rep $1" L=$work/b-$1
    "$work/hitless_snap" "$work/big.snap" "$BULK_FLOWS" 2>"$work/snap.out" || { cat "$work/snap.out" >&2; die "$tag: writing the snapshot failed"; }
    natgw_start 1 1 "$GW_CPU" "$L-natgw1.log" --snapshot "$work/big.snap"
    rm -f "$work/big.snap"
    "$NATGW" ha role master --socket "$(sock 1)" >/dev/null || die "$tag: ha role master failed"
    local held
    held=$(flows_of 1)
    local t0 pj tsync
    t0=$(now)
    natgw_start 2 1 "$GEN_CPU" "$L-natgw2.log"
    pj=$($POLL "$(sock 2)" --until "s['in_sync']" --timeout 120 --interval 0.02) || die "$tag: node 2 never in sync: $pj"
    tsync=$(jget "$pj" t)
    local tsent trecv trun n2 got
    tsent=$(log_ts "$L-natgw1.log" "ha: bulk resync for the peer")
    trecv=$(log_ts "$L-natgw2.log" "ha: bulk resync received")
    trun=$(log_ts "$L-natgw2.log" "natgw running")
    got=$(grep -m1 -o 'bulk resync received ([0-9]*' "$L-natgw2.log" | grep -o '[0-9]*$' || echo "?")
    n2=$(flows_of 2)
    local s1 s2 bulk_ms rate
    s1=$(status_json 1)
    s2=$(status_json 2)
    bulk_ms=$(ms "$tsent" "$trecv")
    rate=$(awk -v n="$got" -v m="$bulk_ms" 'BEGIN { if (m > 0 && n > 0) printf "%.0f", n / m * 1000; else print "?" }')
    B_RATE+="$rate "
    B_TIME+="$bulk_ms "
    B_SYNC+="$(ms "$t0" "$tsync") "
    B_RAW+="| $rep | $held | $got | $n2 | $(ms "$t0" "$trun") | $(ms "$t0" "$tsent") | $bulk_ms | $(ms "$t0" "$tsync") | $rate | $(counter "$s1" resent) / $(counter "$s1" datagrams_sent) | $(counter "$s2" duplicates) | $(counter "$s2" flows_applied) | $(counter "$s2" apply_table_full) |"$'\n'
    log "$tag: node 1 held $held flows; bulk of $got flows in $bulk_ms ms ($rate flows/s); node 2 in sync $(ms "$t0" "$tsync") ms after its spawn, holds $n2"
    all_stop
}

# === part 3: forwarding rate, sync on vs off =============================================================
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
        int v = 8 << 20;
        setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &v, sizeof v);
    }
    return fd;
}
CEOF
cc -shared -fPIC -O2 -o "$work/sndbuf.so" "$work/sndbuf.c" -ldl
SAT_TEMPLATES=32
SAT_NFLOWS=$((SAT_TEMPLATES * 256 * 245))
{
    mb() { echo "$1" | sed 's/^/0x/; s/:/, 0x/g'; }
    for ((t = 0; t < SAT_TEMPLATES; t++)); do
        cat <<EOF
{
  $(mb "$GW1_MAC"), $(mb "$CLI_MAC"), 0x08, 0x00,
  0x45, 0x00, c16(46), c16(0), 0x40, 0x00, 64, 17, csumip(14, 33),
  10, 0, 0, 10,  203, 0, 113, 100,
  $(printf '0x%02x' $((4 + t))), dinc(0, 255, 1), 0x27, dinc(0, 244, 1), c16(26), csumudp(14, 34),
  fill(0x00, 18)
}
EOF
    done
} >"$work/sat.trafgen"
declare -A R_PPS R_SENT
R_APPLIED=""
R_SETTLE=""
R_RAW=""
rate_run() { # on|on2|off rep
    local mode=$1 rep=$2 tag="rate sync $1 rep $2" L=$work/r-$1-$2
    if [ "$mode" != off ]; then
        GW_SCHED=$STANDBY_SCHED natgw_start 2 1 "$GEN_CPU" "$L-natgw2.log"
        natgw_start 1 1 "$GW_CPU" "$L-natgw1.log"
        "$NATGW" ha role master --socket "$(sock 1)" >/dev/null || die "$tag: ha role master failed"
        $POLL "$(sock 2)" --until "s['in_sync'] and s['peer_alive']" --timeout 20 --interval 0.05 >/dev/null ||
            die "$tag: node 2 not in sync"
        if [ "$mode" = on2 ]; then
            # The active node's sync thread on the other CPU (its workers stay).
            local tid
            tid=$(ps -T -p "${NG[1]}" -o spid=,comm= | awk '$2 == "natgw-ha" { print $1 }')
            [ -n "$tid" ] || die "$tag: no natgw-ha thread in node 1"
            taskset -p -c "$GEN_CPU" "$tid" >/dev/null
        fi
    else
        natgw_start 1 0 "$GW_CPU" "$L-natgw1.log"
    fi
    inns cli ip neigh flush dev eth0 2>/dev/null || true
    inns srv ip neigh flush dev eth0 2>/dev/null || true
    inns cli ping -c 2 -i 0.2 -W 1 -q 203.0.113.100 >/dev/null 2>&1 || log "$tag: warning: ping failed"
    sleep 0.2
    spawn "$work/trafgen.log" ip netns exec "$P-sw" env LD_PRELOAD="$work/sndbuf.so" \
        taskset -c "$GEN_CPU" trafgen -o l-gw -i "$work/sat.trafgen" -P 1 -Q --no-sock-mem -n 0
    local gen=$SPAWNED tg0
    tg0=$(now)
    sleep 0.1
    kill -0 "$gen" 2>/dev/null || { cat "$work/trafgen.log" >&2; die "$tag: trafgen did not start"; }
    sleep "$SAT_WARM"
    local busy d0 s0 a0 t0 d1 s1 a1 t1
    busy=$(others | head -1 | cut -c1-80)
    [ "$mode" != off ] && a0=$(counter "$(status_json 2)" flows_applied)
    local c0 c1 p10 p11 p20="" p21=""
    local w0 w1 h0 h1
    c0=$(cpu_ticks); p10=$(proc_ticks "${NG[1]}"); [ "$mode" != off ] && p20=$(proc_ticks "${NG[2]}")
    w0=$(thread_ticks "${NG[1]}" natgw-q0); h0=$(thread_ticks "${NG[1]}" natgw-ha)
    t0=$(date +%s%N); d0=$(nft_packets nat); s0=$(sw_tx_count)
    if [ -n "${PERF_DIR:-}" ]; then
        perf record -q -F 999 -g -p "${NG[1]}" -o "$PERF_DIR/$mode-$rep.data" -- sleep "$SAT_DUR" >/dev/null 2>&1 || true
    else
        sleep "$SAT_DUR"
    fi
    t1=$(date +%s%N); d1=$(nft_packets nat); s1=$(sw_tx_count)
    c1=$(cpu_ticks); p11=$(proc_ticks "${NG[1]}"); [ "$mode" != off ] && p21=$(proc_ticks "${NG[2]}")
    w1=$(thread_ticks "${NG[1]}" natgw-q0); h1=$(thread_ticks "${NG[1]}" natgw-ha)
    local cpus
    cpus=$(awk -v a="$c0" -v b="$c1" -v p10="$p10" -v p11="$p11" -v p20="$p20" -v p21="$p21" -v hz="$(getconf CLK_TCK)" -v dt="$SAT_DUR" '
        BEGIN { split(a, x, " "); split(b, y, " ")
                printf "%d / %d / %d / %s", 100 * (y[1] - x[1]) / (y[2] - x[2]), 100 * (y[3] - x[3]) / (y[4] - x[4]),
                    100 * (p11 - p10) / hz / dt, (p20 == "" ? "-" : sprintf("%d", 100 * (p21 - p20) / hz / dt)) }')
    [ "$mode" != off ] && a1=$(counter "$(status_json 2)" flows_applied)
    local alive=yes
    kill -0 "$gen" 2>/dev/null || alive=no
    kill -INT -- "-$gen" 2>/dev/null || true
    stop_group "$gen"
    local tstop
    tstop=$(now)
    local dt pps sp wcpu
    dt=$((t1 - t0))
    pps=$(( (d1 - d0) * 1000000000 / dt ))
    # node 1's worker and sync thread: CPU % and the worker's µs per forwarded frame
    wcpu=$(awk -v w="$((w1 - w0))" -v h="$((h1 - h0))" -v hz="$(getconf CLK_TCK)" -v dt="$SAT_DUR" -v n="$((d1 - d0))" \
        'BEGIN { printf "%d / %d / %.2f", 100 * w / hz / dt, 100 * h / hz / dt, (n > 0 ? w / hz / n * 1e6 : 0) }')
    sp=$(( (s1 - s0) * 1000000000 / dt ))
    R_PPS[$mode]+="$pps "
    R_SENT[$mode]+="$sp "
    local fl1 extra=""
    fl1=$(flows_of 1)
    if [ "$mode" != off ]; then
        local pj ts s1j s2j applied_rate settle fl2
        pj=$($POLL "$(sock 2)" --settle 1.5 --timeout 60 --interval 0.05) || true
        ts=$(jget "$pj" t)
        settle=$(ms "$tstop" "$ts")
        s1j=$(status_json 1)
        s2j=$(status_json 2)
        fl2=$(flows_of 2)
        applied_rate=$(awk -v a="$a0" -v b="$a1" -v dt="$dt" 'BEGIN { printf "%.0f", (b - a) * 1e9 / dt }')
        R_APPLIED+="$applied_rate "
        R_SETTLE+="$settle "
        extra="| $applied_rate | $settle | $fl1 | $fl2 | $(counter "$s1j" changes_sent) | $(counter "$s2j" flows_applied) | $(counter "$s1j" tap_missed) | $(counter "$s1j" datagrams_dropped_queue_full) | $(counter "$s1j" resent) / $(counter "$s1j" datagrams_sent) / $(counter "$s1j" nacks_received) | $(counter "$s2j" duplicates) | $(counter "$s2j" gaps_skipped) | $(counter "$s1j" refreshes) / $(counter "$s1j" refresh_flows) | $(jget "$s2j" in_sync) |"
        log "$tag: delivered $pps pps (offered $sp); standby applied $applied_rate flows/s in the window, settled $settle ms after the generator stopped; flows active $fl1, standby $fl2; tap_missed $(counter "$s1j" tap_missed)"
    else
        extra="| - | - | $fl1 | - | - | - | - | - | - | - | - | - | - |"
        log "$tag: delivered $pps pps (offered $sp); flows $fl1"
    fi
    local note=""
    [ "$alive" = no ] && note+="trafgen died; "
    [ -n "$busy" ] && note+="others: $busy; "
    local drops
    drops=$("$NATGW" stats --socket "$(sock 1)" 2>/dev/null | awk '/^drops by reason/ { d = 1; next } d && /^  [a-z_]+ +[0-9]+/ { r = r ", " $1 " " $2; next } { d = 0 } END { print (r == "" ? "no drops" : substr(r, 3)) }')
    R_RAW+="| $mode | $rep | $pps | $sp | $cpus | $wcpu | $drops $extra ${note%; } |"$'\n'
    all_stop
}

# === run ==========================================================================================
START=$(date +%s)
if [[ " $PARTS " == *" failover "* ]]; then
    log "failover: $REPS repetition(s) per advert_int ($ADVERTS s); $COUNT frames at $RATE pps over $FLOWS flows, kill -9 at ${EVENT_AT} s"
    for rep in $(seq "$REPS"); do for adv in $ADVERTS; do failover_run "$adv" "$rep"; done; done
fi
if [[ " $PARTS " == *" rate "* ]]; then
    log "rate: $SAT_REPS repetition(s) of $RATE_MODES; trafgen full speed over $SAT_NFLOWS flows, ${SAT_WARM} s warm-up, ${SAT_DUR} s measured"
    for rep in $(seq "$SAT_REPS"); do for m in $RATE_MODES; do rate_run "$m" "$rep"; done; done
fi
if [[ " $PARTS " == *" bulk "* ]]; then
    log "bulk: $BULK_REPS repetition(s), $BULK_FLOWS flows"
    for rep in $(seq "$BULK_REPS"); do bulk_run "$rep"; done
fi
ELAPSED=$(( $(date +%s) - START ))
LOADAVG_END=$(cut -d' ' -f1-3 /proc/loadavg)

# === report ========================================================================================
verdict() { if [ "$1" = 1 ]; then echo PASS; else echo MISS; fi; }
F_TABLE=""
TARGETS=""
for adv in $ADVERTS; do
    [ -n "${F_LOST[$adv]:-}" ] || continue
    F_TABLE+="| $adv | $(wc -w <<<"${F_LOST[$adv]}") | $(mmm <<<"${F_NEAR[$adv]}") | $(mmm <<<"${F_EGAP[$adv]}") | $(mmm <<<"${F_RUN[$adv]}") | $(mmm <<<"${F_LOG[$adv]}") | $(mmm <<<"${F_MASTER[$adv]}") | $(mmm <<<"${F_MAC[$adv]}") | $(mmm <<<"${F_GAP[$adv]}") |"$'\n'
    ok=$(awk -v g="$(mx <<<"${F_EGAP[$adv]}")" 'BEGIN { print (g != "" && g <= 1000) ? 1 : 0 }')
    TARGETS+="- failover, advert_int $adv s: gap ≤ 1 s, every run: **$(verdict "$ok")** (gap near the kill per run: ${F_EGAP[$adv]% } ms)"$'\n'
done
ON_MED=""
OFF_MED=""
if [ -n "${R_PPS[on]:-}" ] && [ -n "${R_PPS[off]:-}" ]; then
    ON_MED=$(med <<<"${R_PPS[on]}")
    OFF_MED=$(med <<<"${R_PPS[off]}")
    RATIO=$(awk -v a="$ON_MED" -v b="$OFF_MED" 'BEGIN { printf "%.1f", 100 * a / b }')
    ok=$(awk -v r="$RATIO" 'BEGIN { print (r >= 95) ? 1 : 0 }')
    TARGETS+="- forwarding rate with sync on ≥ 95 % of sync off (medians; whole node on one CPU): **$(verdict "$ok")** ($RATIO %: $ON_MED vs $OFF_MED pps)"$'\n'
fi
if [ -n "${R_PPS[on2]:-}" ] && [ -n "${R_PPS[off]:-}" ]; then
    ON2_MED=$(med <<<"${R_PPS[on2]}")
    RATIO2=$(awk -v a="$ON2_MED" -v b="$(med <<<"${R_PPS[off]}")" 'BEGIN { printf "%.1f", 100 * a / b }')
    ok=$(awk -v r="$RATIO2" 'BEGIN { print (r >= 95) ? 1 : 0 }')
    TARGETS+="- the same with node 1's sync thread on the other CPU (on2): **$(verdict "$ok")** ($RATIO2 %: $ON2_MED vs $(med <<<"${R_PPS[off]}") pps)"$'\n'
fi
if [ -n "$B_RATE" ]; then
    TARGETS+="- sync throughput (no target set in the issue): bulk $(med <<<"$B_RATE") flows/s (median)${R_APPLIED:+; change stream: standby applied $(med <<<"$R_APPLIED") flow records/s (median; new flows and their refresh) while the active node forwarded new flows at full speed}"$'\n'
fi
R_TABLE=""
R_CHANGE=""
if [ -n "${R_PPS[off]:-}" ] || [ -n "${R_PPS[on]:-}" ]; then
    R_TABLE="| sync | runs | delivered pps: median (min–max) | offered pps (median) | vs off (medians) |
|---|---|---|---|---|"
    for m in $RATE_MODES; do
        [ -n "${R_PPS[$m]:-}" ] || continue
        r="-"
        [ -n "${R_PPS[off]:-}" ] && r=$(awk -v a="$(med <<<"${R_PPS[$m]}")" -v b="$(med <<<"${R_PPS[off]}")" 'BEGIN { printf "%.1f %%", 100 * a / b }')
        R_TABLE+=$'\n'"| $m | $(wc -w <<<"${R_PPS[$m]}") | $(mmm <<<"${R_PPS[$m]}") | $(med <<<"${R_SENT[$m]}") | $r |"
    done
    if [ -n "$R_APPLIED" ]; then
        R_CHANGE="Change stream during the ON runs of part 3 (sync throughput under load): the
standby applied $(mmm <<<"$R_APPLIED") flow records/s during the measured window (counters.flows_applied:
new flows and the 5 s refresh, which sends each of them once more), and its
\`flows_applied\` settled $(mmm <<<"$R_SETTLE") ms after the generator stopped."
    fi
fi
B_TABLE=""
if [ -n "$B_RATE" ]; then
    B_TABLE="| runs | bulk transfer, ms: median (min–max) | **flows/s** | node 2 spawn → in_sync, ms |
|---|---|---|---|
| $(wc -w <<<"$B_RATE") | $(mmm <<<"$B_TIME") | $(mmm <<<"$B_RATE") | $(mmm <<<"$B_SYNC") |"
fi

CPU_MODEL=$(lscpu | sed -n 's/^Model name: *//p' | head -1 || true)
BIN_NOTE="target/release/natgw (\`cargo build --release\`) from the work tree at $COMMIT"
[ -n "$DIRTY" ] && BIN_NOTE+=", uncommitted changes in: ${DIRTY% }"
[ "$NATGW_BIN" != "$ROOT/target/release/natgw" ] && BIN_NOTE="$NATGW_BIN (NATGW_BIN)"
KA_VERSION=$(keepalived --version 2>&1 | head -1)
KEEP=""
if [ -f "$OUT" ] && grep -q '^<!-- analysis -->' "$OUT"; then KEEP=$(sed -n '/^<!-- analysis -->/,$p' "$OUT"); fi
mkdir -p "$(dirname "$OUT")"
{
    cat <<EOF
# HA pair: failover gap, sync throughput, forwarding rate with sync on vs off

Produced by \`bench/ha.sh\` (the benchmark of issue 12); every figure below
is from one run of it.

| | |
|---|---|
| date | $(date -u +%F) ($(date -u +%FT%TZ)) |
| command | \`$CMDLINE\` |
| commit | $COMMIT |
| binary | $BIN_NOTE; sha256 $NATGW_SUM… (one copy for every process) |
| kernel, keepalived | $(uname -r); $KA_VERSION |
| CPU | $CPU_MODEL, $(nproc) vCPUs, shared with others' builds and tests (see machine load) |
| topology | \`scripts/netns.sh\` with \`NETNS_HA=1\`: cli — brlan — {gw, gw2} — brwan — srv, sync link gw — gw2 (veth); \`ethtool -K $OFFLOADS\` on every veth end; RPS of the nodes' lan0/wan0 on CPU $GW_CPU |
| natgw (both nodes) | AF_XDP mode auto (native XDP on veth, copy mode), snat 10.0.0.0/24 → 203.0.113.1 (the shared address), \`[ha]\` local/peer on sync0 with an HMAC key, refresh 5 s (default), \`max_flows = $MAX_FLOWS\` |
| keepalived | VRRPv3 on lan0, virtual_router_id 42, priorities 150 (node 1) / 100, \`advert_int\` per table, VIPs 10.0.0.1 and 203.0.113.1, \`vrrp_script\` \`natgw ha check\` (interval 1, weight −60, init_fail), notify_master/backup/fault → \`natgw ha role\` (as tests/e2e_ha.rs) |
| repetitions | failover $REPS per advert_int (interleaved), rate $SAT_REPS × ($RATE_MODES) interleaved, bulk $BULK_REPS; ${ELAPSED} s in all |
| machine load | loadavg $LOADAVG_START at start, $LOADAVG_END at the end${OTHER_START:+; still running at start: $OTHER_START} |

## Targets

$TARGETS
## 1. Failover: kill -9 of the active natgw and its keepalived at 100k pps

\`bench/hitless_gen.py\`: $COUNT frames at $RATE pps (${DUR} s, paced) over
$FLOWS UDP flows 10.0.0.10:1024.. → 203.0.113.100:9, on CPU $GEN_CPU
(\`$GEN_SCHED\`), destination MAC from the client's ARP entry for 10.0.0.1
(polled every 1 ms). Both natgw on CPU $GW_CPU (\`$GW_SCHED\`), keepalived
unpinned. At ${EVENT_AT} s: \`kill -9\` of node 1's keepalived (parent and
VRRP child) and natgw, no priority-0 advert: node 2 waits out VRRP's master
down interval (3 × advert_int + skew). Capture at the server (tcpdump,
kernel time stamps), analysed by \`bench/hitless_gaps.py\`.

| advert_int s | runs | frames lost near the kill | gap near the kill, ms | longest loss run, ms of stream | kill → node 2 logs "role backup -> master", ms | kill → \`ha status\` says master, ms | kill → client's ARP entry moved to node 2, ms | longest gap in the run, ms |
|---|---|---|---|---|---|---|---|---|
$F_TABLE
Medians in bold, (min–max) over the runs. *near the kill*: frames due
between 0.1 s before the kill and 0.5 s after node 2 said master (hitless_gaps.py's event window);
*gap near the kill*: the longest time between two translated frames at the
server overlapping that window. The status poll runs \`natgw ha status
--json\` every 5 ms (a process each: a few ms late on this machine); the
log time stamps are natgw's (ms).

## 2. Sync throughput

Bulk resync: node 1 holds $BULK_FLOWS UDP flows (restored from a snapshot
written by \`bench/hitless_snap.rs\`), master, on CPU $GW_CPU; node 2 starts
empty on CPU $GEN_CPU and asks for a bulk. *bulk transfer*: node 1's log
"ha: bulk resync for the peer" → node 2's "ha: bulk resync received (N
flow(s))"; flows/s = N / that time.

$B_TABLE

$R_CHANGE

## 3. Forwarding rate of the active node, sync on vs off

trafgen at full speed on CPU $GEN_CPU, from the switch namespace out of the
bridge port l-gw straight into node 1's lan0 (*offered*: l-gw's transmit
counter), over $SAT_NFLOWS UDP flows 10.0.0.10:1024–9215 → 203.0.113.100:9984–10228 (one cycle
takes longer than the run at these rates: every frame natgw forwards in the
window is a new flow, so the change stream carries one change per
forwarded frame); delivered = translated frames counted at the server over
${SAT_DUR} s after ${SAT_WARM} s; natgw fresh for every run. ON: node 1 with
\`[ha]\`, master; node 2 standby on CPU $GEN_CPU (beside the generator). OFF:
node 1 without \`[ha]\`, no node 2. Node 1's whole process (workers, sync
thread) on CPU $GW_CPU; on2 (if run): ON with node 1's sync thread moved to
CPU $GEN_CPU after the start. The sync link's receive work on node 2 is
steered to CPU $GEN_CPU (RPS).

$R_TABLE

## Per run

### Failover

| advert_int | rep | sent | received | lost | lost near kill | loss runs | longest run ms | longest gap ms | gap near kill ms | gap start − kill ms | kill → log master ms | kill → status master ms | kill → client MAC moved ms | generator late max ms | node 2 drops by reason (at the end) | notes |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
$F_RAW
### Bulk

| rep | flows on node 1 | bulk flows (node 2's log) | flows on node 2 after | spawn → node 2 running ms | spawn → node 1 sends bulk ms | bulk transfer ms | spawn → in_sync ms | flows/s | node 1 resent / datagrams sent | node 2 duplicates | node 2 flows_applied | node 2 apply_table_full |
|---|---|---|---|---|---|---|---|---|---|---|---|---|
$B_RAW
### Rate

| sync | rep | delivered pps | offered pps | busy % CPU 0 / CPU 1 / node 1 process / node 2 process | node 1 worker % / sync thread % / worker µs per delivered frame | node 1 drops by reason | standby applied flows/s (window) | settled ms after stop | flows active | flows standby | active changes_sent | standby flows_applied | active tap_missed | active datagrams_dropped_queue_full | active resent / datagrams sent / NACKs received | standby duplicates | standby gaps_skipped | active refreshes / flows refreshed | standby in_sync | notes |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
$R_RAW
$F_LOGS
EOF
    if [ -n "$KEEP" ]; then echo "$KEEP"; else
        printf '<!-- analysis -->\n## Analysis\n\n(to be written by hand after looking at the figures above; the script keeps this part)\n'
    fi
} >"$OUT"
echo
echo "natgw HA bench ($(date -u +%F), commit $COMMIT)"
[ -n "$F_TABLE" ] && { echo "failover: | advert | runs | lost near | gap near ms | loss run ms | kill→log master | kill→status master | kill→MAC | max gap |"; printf '%s' "$F_TABLE"; }
[ -n "$B_TABLE" ] && echo "$B_TABLE"
[ -n "$R_TABLE" ] && echo "$R_TABLE"
[ -n "$R_CHANGE" ] && echo "$R_CHANGE"
printf '%s' "$TARGETS" | sed 's/\*\*//g'
echo "written: $OUT"
