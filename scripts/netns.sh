#!/usr/bin/env bash
# The e2e test topology (tests/netns/mod.rs, Spec::standard) for humans:
#
#   inside 10.0.0.0/24           gateway PREFIX-gw          outside 203.0.113.0/24
#   cl1 10.0.0.10 ─┐                                      ┌─ out  203.0.113.100
#   cl2 10.0.0.11 ─┼─ brlan ── lan0 10.0.0.1              ├─ out2 203.0.113.101
#   srv 10.0.0.5  ─┘           wan0 203.0.113.1 ── brwan ─┴─ rtr  203.0.113.254
#                                                             rtr  198.51.100.1 ── far 198.51.100.10
#
# Namespaces are PREFIX-{sw,gw,cl1,cl2,srv,out,out2,rtr,far}; hosts' veth is
# eth0 (rtr: eth0 outside, eth1 far side), the gateway's are lan0 and wan0.
# The bridges live in PREFIX-sw. Inside hosts route via 10.0.0.1, outside
# hosts via rtr (no route to 10.0.0.0/24). IPv6 off, TX checksum offload
# off on every host veth.
#
#   scripts/netns.sh up [PREFIX]       build it, gateway bare (ip_forward=0,
#                                      no rules): ready for natgw
#   scripts/netns.sh kernel [PREFIX]   make the gateway the Linux reference
#                                      (ip_forward=1 + the nftables NAT rules)
#   scripts/netns.sh bare [PREFIX]     back to bare (flush rules, forwarding off)
#   scripts/netns.sh config            print the equivalent natgw config
#   scripts/netns.sh down [PREFIX]     remove it (ends processes left inside)
#
# PREFIX defaults to "ngt". NETNS_EXTRA_INSIDE="web1:10.0.0.21 ..." adds
# inside hosts (on brlan, route via 10.0.0.1), NETNS_EXTRA_OUTSIDE outside
# ones (on brwan, route via rtr).
#
# Other scripts source it (scripts/demo.sh): `. scripts/netns.sh` defines
# netns_up/netns_down/netns_kernel/netns_bare PREFIX, netns_config and nsx,
# and runs nothing.
#
# Then e.g.:
#   ip netns exec ngt-out python3 -m http.server 8000 &
#   ip netns exec ngt-cl1 curl http://203.0.113.100:8000/
#   ip netns exec ngt-gw natgw run --config <(scripts/netns.sh config)

INSIDE=(cl1:10.0.0.10 cl2:10.0.0.11 srv:10.0.0.5)
OUTSIDE=(out:203.0.113.100 out2:203.0.113.101)
# shellcheck disable=SC2206 # word splitting of the extra host lists is meant
INSIDE+=(${NETNS_EXTRA_INSIDE:-})
# shellcheck disable=SC2206
OUTSIDE+=(${NETNS_EXTRA_OUTSIDE:-})
HOSTS=(sw gw)
for e in "${INSIDE[@]}" "${OUTSIDE[@]}"; do HOSTS+=("${e%%:*}"); done
HOSTS+=(rtr far)

RULESET='table ip natgw {
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

CONFIG='[gateway]
unmatched = "forward"
hairpin = true

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
action = "masquerade"'

netns_need_root() { [ "$(id -u)" -eq 0 ] || { echo "netns.sh: needs root" >&2; exit 1; }; }
nsx() { local ns=$1; shift; ip netns exec "$P-$ns" "$@"; }
common() {
    nsx "$1" sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    nsx "$1" ip link set lo up
}
iface() { # ns dev cidr
    nsx "$1" ip addr add "$3" dev "$2"
    nsx "$1" ethtool -K "$2" tx off >/dev/null
    nsx "$1" ip link set "$2" up
}

netns_up() {
    P=$1
    netns_need_root
    for h in "${HOSTS[@]}"; do
        if ip netns list | grep -qw "^$P-$h"; then
            echo "netns.sh: $P-$h exists; run: scripts/netns.sh down $P" >&2
            exit 1
        fi
    done
    trap 'echo "netns.sh: failed; cleaning up" >&2; netns_down "$P"' ERR
    for h in "${HOSTS[@]}"; do ip netns add "$P-$h"; done
    pair() { ip link add name "$2" netns "$P-$1" type veth peer name "$4" netns "$P-$3"; }
    pair gw lan0 sw l-gw
    pair gw wan0 sw w-gw
    for e in "${INSIDE[@]}"; do pair "${e%%:*}" eth0 sw "l-${e%%:*}"; done
    for e in "${OUTSIDE[@]}"; do pair "${e%%:*}" eth0 sw "w-${e%%:*}"; done
    pair rtr eth0 sw w-rtr
    pair rtr eth1 far eth0

    for h in "${HOSTS[@]}"; do common "$h"; done
    nsx sw sh -c 'sysctl -q -w net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-arptables=0 2>/dev/null || true'
    for br in brlan brwan; do
        nsx sw ip link add "$br" type bridge stp_state 0 forward_delay 0 mcast_snooping 0
        nsx sw ip link set "$br" up
    done
    nsx sw ip link set l-gw master brlan up
    for e in "${INSIDE[@]}"; do nsx sw ip link set "l-${e%%:*}" master brlan up; done
    for e in "${OUTSIDE[@]}" rtr; do nsx sw ip link set "w-${e%%:*}" master brwan up; done

    nsx gw sysctl -q -w net.ipv4.ip_forward=0 net.ipv4.conf.all.send_redirects=0 \
        net.ipv4.conf.default.send_redirects=0 net.ipv4.conf.lan0.send_redirects=0 \
        net.ipv4.conf.wan0.send_redirects=0
    iface gw lan0 10.0.0.1/24
    iface gw wan0 203.0.113.1/24
    nsx gw ip route add default via 203.0.113.254 dev wan0

    for e in "${INSIDE[@]}"; do
        iface "${e%%:*}" eth0 "${e#*:}/24"
        nsx "${e%%:*}" ip route add default via 10.0.0.1
    done
    for e in "${OUTSIDE[@]}"; do
        iface "${e%%:*}" eth0 "${e#*:}/24"
        nsx "${e%%:*}" ip route add default via 203.0.113.254
    done
    nsx rtr sysctl -q -w net.ipv4.ip_forward=1
    iface rtr eth0 203.0.113.254/24
    iface rtr eth1 198.51.100.1/24
    iface far eth0 198.51.100.10/24
    nsx far ip route add default via 198.51.100.1
    trap - ERR
    local IFS=,
    [ -n "${NETNS_QUIET:-}" ] || echo "netns.sh: up: namespaces $P-{${HOSTS[*]}}"
    unset IFS
    [ -n "${NETNS_QUIET:-}" ] || echo "netns.sh: gateway $P-gw is bare (lan0 10.0.0.1/24, wan0 203.0.113.1/24); 'scripts/netns.sh kernel $P' for the kernel reference"
}

# Removes PREFIX's namespaces, ending what still runs inside them.
netns_down() {
    P=$1
    for h in "${HOSTS[@]}"; do
        ns="$P-$h"
        ip netns list | grep -qw "^$ns" || continue
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    done
    [ -n "${NETNS_QUIET:-}" ] || echo "netns.sh: down: $P"
}

netns_kernel() {
    P=$1
    netns_need_root
    nsx gw sysctl -q -w net.ipv4.ip_forward=1
    nsx gw nft -f - <<<"flush ruleset
$RULESET"
    echo "netns.sh: $P-gw is the kernel NAT reference"
}

netns_bare() {
    P=$1
    netns_need_root
    nsx gw nft flush ruleset
    nsx gw sysctl -q -w net.ipv4.ip_forward=0
    echo "netns.sh: $P-gw is bare"
}

# The natgw config of this topology (the equivalent of the kernel ruleset).
netns_config() { echo "$CONFIG"; }

# Sourced: define, run nothing.
[ "${BASH_SOURCE[0]}" = "$0" ] || return 0

set -euo pipefail
cmd=${1:-}
case "$cmd" in
up) netns_up "${2:-ngt}" ;;
down) netns_need_root; netns_down "${2:-ngt}" ;;
kernel) netns_kernel "${2:-ngt}" ;;
bare) netns_bare "${2:-ngt}" ;;
config) netns_config ;;
*)
    sed -n '2,35p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
