#!/usr/bin/env bash
# natgw's test topology, the one definition that the tests (tests/netns),
# the demo (scripts/demo.sh) and the benchmarks use:
#
#   inside 10.0.0.0/24           gateway PREFIX-gw          outside 203.0.113.0/24
#   cl1 10.0.0.10 ─┐                                      ┌─ out  203.0.113.100
#   cl2 10.0.0.11 ─┼─ brlan ── lan0 10.0.0.1              ├─ out2 203.0.113.101
#   srv 10.0.0.5  ─┘           wan0 203.0.113.1 ── brwan ─┴─ rtr  203.0.113.254
#                                                             rtr  198.51.100.1 ── far 198.51.100.10
#
# Namespaces are PREFIX-{sw,gw,<hosts>,rtr,far}; hosts' veth is eth0 (rtr:
# eth0 outside, eth1 far side), the gateway's are lan0 and wan0. The
# bridges live in PREFIX-sw, so the gateway has one inside and one outside
# interface. Inside hosts route via 10.0.0.1, outside hosts via rtr (no
# route to 10.0.0.0/24, so an untranslated packet never gets an answer).
# IPv6 off everywhere, TX checksum offload off on every veth end (hosts
# send full checksums, as on a wire: see MACHINE-NOTES). The gateway starts
# bare: addresses and the default route via 203.0.113.254, ip_forward=0,
# no nftables rules, no redirects. Its natgw config is
# scripts/topology/natgw.toml, the Linux reference's ruleset
# scripts/topology/kernel.nft.
#
#   scripts/netns.sh up [PREFIX]       build it, gateway bare: ready for natgw
#   scripts/netns.sh kernel [PREFIX]   make the gateway the Linux reference
#                                      (ip_forward=1 + the nftables NAT rules)
#   scripts/netns.sh bare [PREFIX]     back to bare (flush rules, forwarding off)
#   scripts/netns.sh config            print the equivalent natgw config
#   scripts/netns.sh down [PREFIX]     remove it (ends processes left inside)
#
# PREFIX defaults to "ngt". Variants, by environment:
#   NETNS_INSIDE="cl1:10.0.0.10 ..."   the inside hosts (name:address)
#   NETNS_OUTSIDE="out:203.0.113.100 ..." the outside hosts
#   NETNS_EXTRA_INSIDE / NETNS_EXTRA_OUTSIDE  hosts added to those
#   NETNS_SWITCHED=0   no bridges: one inside and one outside host wired
#                      straight to lan0/wan0 (no router; the shortest path)
#   NETNS_ROUTER=0     no rtr/far (outside hosts get no default route)
#   NETNS_VETH_OPTS="numtxqueues 2 numrxqueues 2"  options for the gateway's
#                      two veth pairs
#   NETNS_OFFLOADS="tx off"  ethtool -K arguments for every veth end
#   NETNS_QUIET=1      print nothing on success
#   NETNS_HA=1         an HA pair instead of one gateway (needs switched):
#                      gw (lan0 10.0.0.2, wan0 203.0.113.2) and gw2 (lan0
#                      10.0.0.3, wan0 203.0.113.3) on both bridges, a sync
#                      link sync0 between them (10.9.0.1/30, 10.9.0.2/30);
#                      the hosts' gateway addresses 10.0.0.1 and
#                      203.0.113.1 are the pair's virtual addresses, held
#                      by whichever node keepalived makes master
#
# Other scripts source it (`. scripts/netns.sh`): that defines netns_up,
# netns_down, netns_kernel, netns_bare (each taking PREFIX), netns_config,
# nsx HOST CMD... (runs in PREFIX-HOST after netns_up) and HOSTS, and runs
# nothing. Then e.g.:
#   ip netns exec ngt-out python3 -m http.server 8000 &
#   ip netns exec ngt-cl1 curl http://203.0.113.100:8000/
#   ip netns exec ngt-gw natgw run --config <(scripts/netns.sh config)

NETNS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck disable=SC2206 # the host lists are words on purpose
INSIDE=(${NETNS_INSIDE:-cl1:10.0.0.10 cl2:10.0.0.11 srv:10.0.0.5} ${NETNS_EXTRA_INSIDE:-})
# shellcheck disable=SC2206
OUTSIDE=(${NETNS_OUTSIDE:-out:203.0.113.100 out2:203.0.113.101} ${NETNS_EXTRA_OUTSIDE:-})
SWITCHED=${NETNS_SWITCHED:-1}
ROUTER=${NETNS_ROUTER:-1}
[ "$SWITCHED" = 1 ] || ROUTER=0
HA=${NETNS_HA:-0}
[ "$SWITCHED" = 1 ] || HA=0
HOSTS=(gw)
[ "$HA" = 1 ] && HOSTS+=(gw2)
[ "$SWITCHED" = 1 ] && HOSTS+=(sw)
for e in "${INSIDE[@]}" "${OUTSIDE[@]}"; do HOSTS+=("${e%%:*}"); done
[ "$ROUTER" = 1 ] && HOSTS+=(rtr far)

netns_need_root() { [ "$(id -u)" -eq 0 ] || { echo "netns.sh: needs root" >&2; exit 1; }; }
nsx() { local ns=$1; shift; ip netns exec "$P-$ns" "$@"; }

# Shell text that sets up one namespace's parts (run inside it).
_common() {
    echo "set -e"
    echo "sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1"
    echo "ip link set lo up"
}
_iface() { # dev cidr
    echo "ip addr add $2 dev $1"
    echo "ethtool -K $1 ${NETNS_OFFLOADS:-tx off} >/dev/null 2>&1 || true"
    echo "ip link set $1 up"
}
_port() { # dev bridge: a bridge port
    echo "ethtool -K $1 ${NETNS_OFFLOADS:-tx off} >/dev/null 2>&1 || true"
    echo "ip link set $1 master $2"
    echo "ip link set $1 up"
}
_carrier() { # dev: wait up to 3 s for the link to come up
    echo "n=0; until [ \"\$(cat /sys/class/net/$1/carrier 2>/dev/null)\" = 1 ]; do" \
        "n=\$((n+1)); [ \$n -lt 300 ] || { echo 'no carrier on $1' >&2; exit 1; }; sleep 0.01; done"
}

netns_up() {
    P=$1
    netns_need_root
    if [ "$SWITCHED" != 1 ] && { [ ${#INSIDE[@]} -ne 1 ] || [ ${#OUTSIDE[@]} -ne 1 ]; }; then
        echo "netns.sh: NETNS_SWITCHED=0 takes exactly one inside and one outside host" >&2
        return 1
    fi
    local h e
    for h in "${HOSTS[@]}"; do
        if [ -e "/run/netns/$P-$h" ]; then
            echo "netns.sh: $P-$h exists; run: scripts/netns.sh down $P" >&2
            return 1
        fi
    done

    # 1. Namespaces and veth pairs, created straight in their namespaces.
    local batch="" vopts=${NETNS_VETH_OPTS:-}
    for h in "${HOSTS[@]}"; do batch+="netns add $P-$h"$'\n'; done
    pair() { batch+="link add name $2 netns $P-$1 ${5:-} type veth peer name $4 netns $P-$3 ${5:-}"$'\n'; }
    if [ "$SWITCHED" = 1 ]; then
        pair gw lan0 sw l-gw "$vopts"
        pair gw wan0 sw w-gw "$vopts"
        if [ "$HA" = 1 ]; then
            pair gw2 lan0 sw l-gw2 "$vopts"
            pair gw2 wan0 sw w-gw2 "$vopts"
            pair gw sync0 gw2 sync0
        fi
        for e in "${INSIDE[@]}"; do pair "${e%%:*}" eth0 sw "l-${e%%:*}"; done
        for e in "${OUTSIDE[@]}"; do pair "${e%%:*}" eth0 sw "w-${e%%:*}"; done
        if [ "$ROUTER" = 1 ]; then
            pair rtr eth0 sw w-rtr
            pair rtr eth1 far eth0
        fi
    else
        pair gw lan0 "${INSIDE[0]%%:*}" eth0 "$vopts"
        pair gw wan0 "${OUTSIDE[0]%%:*}" eth0 "$vopts"
    fi
    if ! ip -batch - <<<"$batch" >/dev/null; then
        echo "netns.sh: creating namespaces and veths failed" >&2
        netns_down "$P" >/dev/null 2>&1
        return 1
    fi

    # 2. Each namespace's own setup, in two phases, the namespaces of a
    #    phase in parallel. Both ends of a veth pair going up at the same
    #    moment can race and leave the pair without carrier, so phase A
    #    brings up one end of every pair (gw, rtr, switched hosts) and
    #    phase B the other (bridge ports in sw, far; unswitched hosts),
    #    each waiting for carrier.
    local -A script phase
    script[gw]="$(_common)
sysctl -q -w net.ipv4.ip_forward=0 net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.default.send_redirects=0 net.ipv4.conf.lan0.send_redirects=0 net.ipv4.conf.wan0.send_redirects=0
$(_iface lan0 10.0.0.1/24)
$(_iface wan0 203.0.113.1/24)
ip route add default via 203.0.113.254 dev wan0 onlink"
    phase[gw]=A
    if [ "$HA" = 1 ]; then
        # The pair: own addresses per node; the virtual ones are keepalived's.
        local n ha_script
        for n in 1 2; do
            local h=gw lan=10.0.0.2 wan=203.0.113.2
            [ $n = 2 ] && h=gw2 lan=10.0.0.3 wan=203.0.113.3
            ha_script="$(_common)
sysctl -q -w net.ipv4.ip_forward=0 net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.default.send_redirects=0 net.ipv4.conf.lan0.send_redirects=0 net.ipv4.conf.wan0.send_redirects=0
$(_iface lan0 $lan/24)
$(_iface wan0 $wan/24)
$(_iface sync0 10.9.0.$n/30)
ip route add default via 203.0.113.254 dev wan0 onlink"
            [ $n = 2 ] && ha_script+=$'\n'"$(_carrier sync0)"
            script[$h]=$ha_script
        done
        phase[gw2]=B
    fi
    local unsw_phase=A
    [ "$SWITCHED" = 1 ] || unsw_phase=B
    for e in "${INSIDE[@]}"; do
        h=${e%%:*}
        script[$h]="$(_common)
$(_iface eth0 "${e#*:}/24")
ip route add default via 10.0.0.1"
        [ "$SWITCHED" = 1 ] || script[$h]+=$'\n'"$(_carrier eth0)"
        phase[$h]=$unsw_phase
    done
    for e in "${OUTSIDE[@]}"; do
        h=${e%%:*}
        script[$h]="$(_common)
$(_iface eth0 "${e#*:}/24")"
        [ "$ROUTER" = 1 ] && script[$h]+=$'\n'"ip route add default via 203.0.113.254"
        [ "$SWITCHED" = 1 ] || script[$h]+=$'\n'"$(_carrier eth0)"
        phase[$h]=$unsw_phase
    done
    if [ "$SWITCHED" = 1 ]; then
        local sw
        sw="$(_common)
sysctl -q -w net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-arptables=0 2>/dev/null || true"
        for br in brlan brwan; do
            sw+=$'\n'"ip link add $br type bridge stp_state 0 forward_delay 0 mcast_snooping 0"
            sw+=$'\n'"ip link set $br up"
        done
        local ports=(l-gw:brlan w-gw:brwan)
        [ "$HA" = 1 ] && ports+=(l-gw2:brlan w-gw2:brwan)
        for e in "${INSIDE[@]}"; do ports+=("l-${e%%:*}:brlan"); done
        for e in "${OUTSIDE[@]}"; do ports+=("w-${e%%:*}:brwan"); done
        [ "$ROUTER" = 1 ] && ports+=(w-rtr:brwan)
        for e in "${ports[@]}"; do
            sw+=$'\n'"$(_port "${e%%:*}" "${e#*:}")"$'\n'"$(_carrier "${e%%:*}")"
        done
        script[sw]=$sw
        phase[sw]=B
    fi
    if [ "$ROUTER" = 1 ]; then
        script[rtr]="$(_common)
sysctl -q -w net.ipv4.ip_forward=1
$(_iface eth0 203.0.113.254/24)
$(_iface eth1 198.51.100.1/24)"
        phase[rtr]=A
        script[far]="$(_common)
$(_iface eth0 198.51.100.10/24)
ip route add default via 198.51.100.1
$(_carrier eth0)"
        phase[far]=B
    fi
    local ph pid failed=0
    local -A pids
    for ph in A B; do
        pids=()
        for h in "${HOSTS[@]}"; do
            [ "${phase[$h]}" = "$ph" ] || continue
            ip netns exec "$P-$h" sh -c "${script[$h]}" &
            pids[$h]=$!
        done
        for h in "${!pids[@]}"; do
            wait "${pids[$h]}" || { echo "netns.sh: setting up $P-$h failed" >&2; failed=1; }
        done
    done
    if [ $failed = 1 ]; then
        netns_down "$P" >/dev/null 2>&1
        return 1
    fi
    if [ -z "${NETNS_QUIET:-}" ]; then
        echo "netns.sh: up: namespaces ${HOSTS[*]/#/$P-}"
        echo "netns.sh: gateway $P-gw is bare (lan0 10.0.0.1/24, wan0 203.0.113.1/24); 'scripts/netns.sh kernel $P' for the kernel reference"
    fi
}

# Removes every namespace PREFIX-*, ending what still runs inside them.
netns_down() {
    P=$1
    local f ns pid
    for f in /run/netns/"$P"-*; do
        [ -e "$f" ] || continue
        ns=${f#/run/netns/}
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    done
    [ -n "${NETNS_QUIET:-}" ] || echo "netns.sh: down: $P"
}

netns_kernel() {
    P=$1
    netns_need_root
    nsx gw sysctl -q -w net.ipv4.ip_forward=1
    { echo "flush ruleset"; cat "$NETNS_DIR/topology/kernel.nft"; } | nsx gw nft -f -
    [ -n "${NETNS_QUIET:-}" ] || echo "netns.sh: $P-gw is the kernel NAT reference"
}

netns_bare() {
    P=$1
    netns_need_root
    nsx gw nft flush ruleset
    nsx gw sysctl -q -w net.ipv4.ip_forward=0
    [ -n "${NETNS_QUIET:-}" ] || echo "netns.sh: $P-gw is bare"
}

# The natgw config of this topology (the equivalent of the kernel ruleset).
netns_config() { cat "$NETNS_DIR/topology/natgw.toml"; }

# Sourced: define, run nothing.
[ "${BASH_SOURCE[0]}" = "$0" ] || return 0

set -euo pipefail
P=${2:-ngt}
case "${1:-}" in
up) netns_up "$P" ;;
down) netns_need_root; netns_down "$P" ;;
kernel) netns_kernel "$P" ;;
bare) netns_bare "$P" ;;
config) netns_config ;;
*)
    sed -n '2,48p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
