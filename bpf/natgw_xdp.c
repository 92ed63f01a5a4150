// SPDX-License-Identifier: GPL-2.0
// natgw XDP steering program.
//
// IPv4 and ARP frames go to natgw's AF_XDP socket for the receive queue
// (natgw translates IPv4 and answers ARP for the gateway's addresses).
// Everything else (IPv6, LLDP, ...) goes to the kernel stack.
//
// Parking. If no socket is registered in `xsks_map` for the frame's
// receive queue (natgw starting, stopping, or handing over to a new
// process), an IPv4 or ARP frame is not lost and never takes the kernel's
// path untranslated: it is copied (up to PARK_MAX bytes) with its receive
// time and queue into the BPF queue map `parked` and dropped. The next
// natgw drains `parked` (oldest first) and processes those frames before
// its sockets' own. A frame that does not fit (longer than PARK_MAX) or
// finds `parked` full is dropped and counted.
//
// Pinning. Every map is pinned by name (LIBBPF_PIN_BY_NAME) under natgw's
// pin directory for the interface, /sys/fs/bpf/natgw/<netns inode>-<ifindex>/,
// next to the BPF link (`link`) that attaches this program. The pins keep
// the program attached and parking while no natgw runs (between the old
// and the new process of a handover, or after kill -9); the next natgw
// loads its program reusing these maps and swaps it into the pinned link
// atomically (bpf_link_update). The loader is src/dataplane/sys/bpf.rs.
// The per-CPU scratch buffer `park_buf` is not pinned (it holds nothing
// between two runs of the program).
//
// Two exceptions. Untagged IPv4 VRRP (IP protocol 112) goes to the kernel:
// keepalived elects an HA pair's active node with it (src/ha). And
// untagged TCP addressed to one of the gateway's own
// addresses (`kernel_addrs`) with a destination port in `kernel_ports`
// (natgw's health-check source ports, PortRange::HEALTH_CHECK) goes to the
// kernel: those are replies to the kernel sockets of natgw's health checks.
// natgw never uses those ports for NAT, so no NAT flow is affected. Both
// maps are filled by natgw (src/dataplane/sys/bpf.rs); empty, nothing passes.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MAX_QUEUES 256
/* Longest frame parked: natgw's MTU 1500 plus Ethernet and two VLAN tags,
 * rounded up. Keep in sync with ParkQueue::MAX_FRAME (bpf.rs). */
#define PARK_MAX 1536
#define PARK_ENTRIES 16384

/* Counter indices (XdpProg::counters documents them for users). */
enum {
	C_REDIRECTED = 0,	/* redirected to natgw's socket */
	C_PASSED = 1,		/* passed to the kernel */
	C_SHORT = 2,		/* too short for an Ethernet header, passed */
	C_HEALTH = 3,		/* health-check replies passed (also in 1) */
	C_PARKED = 4,		/* no socket for the queue: parked */
	C_PARK_FULL = 5,	/* no socket, `parked` full: dropped */
	C_PARK_TOO_BIG = 6,	/* no socket, longer than PARK_MAX: dropped */
	C_COUNT = 7,
};

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
	__uint(max_entries, MAX_QUEUES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xsks_map SEC(".maps");

/* Per-CPU counters, indexed by the C_* constants above. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, C_COUNT);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} stats SEC(".maps");

/* A parked frame: receive time (bpf_ktime_get_ns, CLOCK_MONOTONIC), its
 * length, its receive queue, its first `len` bytes. 1552 bytes; the layout
 * is read by ParkQueue::pop (bpf.rs). */
struct parked {
	__u64 ktime_ns;
	__u32 len;
	__u32 queue;
	__u8 data[PARK_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(key_size, 0);
	__uint(value_size, sizeof(struct parked));
	__uint(max_entries, PARK_ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} parked SEC(".maps");

/* Scratch space to build a `struct parked` in (the stack has 512 bytes). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct parked);
	__uint(max_entries, 1);
} park_buf SEC(".maps");

/* The gateway's addresses (network byte order) whose check replies the
 * kernel gets. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, __u8);
	__uint(max_entries, 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kernel_addrs SEC(".maps");

/* Key 0: the first and last TCP port (host byte order) passed to the
 * kernel; last < first (or all zero) passes nothing. */
struct port_range {
	__u16 lo;
	__u16 hi;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct port_range);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kernel_ports SEC(".maps");

static __always_inline void count(__u32 k)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &k);
	if (v)
		*v += 1;
}

/* An untagged IPv4 frame: TCP to one of kernel_addrs, destination port in
 * kernel_ports? */
static __always_inline int for_kernel(void *l3, void *data_end)
{
	struct iphdr *ip = l3;
	struct tcphdr *tcp;
	struct port_range *r;
	__u32 key = 0, daddr;
	__u16 dport;

	if ((void *)(ip + 1) > data_end)
		return 0;
	if (ip->protocol != IPPROTO_TCP || ip->ihl < 5 ||
	    (ip->frag_off & bpf_htons(0x1fff)) != 0)
		return 0;
	tcp = l3 + ip->ihl * 4;
	if ((void *)(tcp + 1) > data_end)
		return 0;
	r = bpf_map_lookup_elem(&kernel_ports, &key);
	if (!r)
		return 0;
	dport = bpf_ntohs(tcp->dest);
	if (dport < r->lo || dport > r->hi)
		return 0;
	daddr = ip->daddr;
	return bpf_map_lookup_elem(&kernel_addrs, &daddr) != NULL;
}

/* An untagged IPv4 VRRP advertisement (IP protocol 112): keepalived's,
 * for the kernel (an HA pair elects its active node with it). */
static __always_inline int is_vrrp(void *l3, void *data_end)
{
	struct iphdr *ip = l3;

	if ((void *)(ip + 1) > data_end)
		return 0;
	return ip->protocol == 112;
}

/* No socket for the frame's queue: copy the frame into `parked` and drop
 * it (natgw's next process drains the queue). */
static __always_inline int park(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 key = 0;
	/* 64 bits: the bounds checked below stay on the register passed to
	 * bpf_xdp_load_bytes (no zero-extended copy the verifier loses). */
	__u64 len = data_end - data;
	struct parked *p;

	if (len > PARK_MAX) {
		count(C_PARK_TOO_BIG);
		return XDP_DROP;
	}
	p = bpf_map_lookup_elem(&park_buf, &key);
	if (!p || len < ETH_HLEN) {	/* neither happens: ETH_HLEN checked */
		count(C_PARK_FULL);
		return XDP_DROP;
	}
	if (bpf_xdp_load_bytes(ctx, 0, p->data, len) < 0) {
		count(C_PARK_FULL);
		return XDP_DROP;
	}
	p->ktime_ns = bpf_ktime_get_ns();
	p->len = len;
	p->queue = ctx->rx_queue_index;
	if (bpf_map_push_elem(&parked, p, 0) < 0) {
		count(C_PARK_FULL);
		return XDP_DROP;
	}
	count(C_PARKED);
	return XDP_DROP;
}

/* To natgw: its socket for the receive queue if one is registered, else
 * into `parked`. */
static __always_inline int to_natgw(struct xdp_md *ctx)
{
	__u32 q = ctx->rx_queue_index;

	if (!bpf_map_lookup_elem(&xsks_map, &q))
		return park(ctx);
	count(C_REDIRECTED);
	return bpf_redirect_map(&xsks_map, q, XDP_DROP);
}

SEC("xdp")
int natgw_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u16 proto;

	if ((void *)(eth + 1) > data_end) {
		count(C_SHORT);
		return XDP_PASS;
	}
	proto = eth->h_proto;
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		__u16 *inner = (void *)(eth + 1) + 2;
		if ((void *)(inner + 1) > data_end) {
			count(C_SHORT);
			return XDP_PASS;
		}
		proto = *inner;
	}
	if (proto == bpf_htons(ETH_P_IP)) {
		if (proto == eth->h_proto && for_kernel(eth + 1, data_end)) {
			count(C_PASSED);
			count(C_HEALTH);
			return XDP_PASS;
		}
		if (proto == eth->h_proto && is_vrrp(eth + 1, data_end)) {
			count(C_PASSED);
			return XDP_PASS;
		}
		return to_natgw(ctx);
	}
	if (proto == bpf_htons(ETH_P_ARP))
		return to_natgw(ctx);
	count(C_PASSED);
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
