// SPDX-License-Identifier: GPL-2.0
// natgw XDP steering program.
//
// IPv4 and ARP frames go to natgw's AF_XDP socket for the receive queue
// (natgw translates IPv4 and answers ARP for the gateway's addresses).
// Everything else (IPv6, LLDP, ...) goes to the kernel stack. If no socket
// is bound for the queue (natgw starting or stopping), IPv4 is dropped, so
// no NATed packet ever takes the kernel's path untranslated.
//
// One exception: untagged TCP addressed to one of the gateway's own
// addresses (`kernel_addrs`) with a destination port in `kernel_ports`
// (natgw's health-check source ports, PortRange::HEALTH_CHECK) goes to the
// kernel: those are replies to the kernel sockets of natgw's health checks.
// natgw never uses those ports for NAT, so no NAT flow is affected. Both
// maps are filled by natgw (src/dataplane/xdp.rs); empty, nothing passes.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MAX_QUEUES 256

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
	__uint(max_entries, MAX_QUEUES);
} xsks_map SEC(".maps");

/* Per-CPU counters: 0 redirected, 1 passed to the kernel, 2 short frame,
 * 3 health-check replies passed to the kernel (also counted in 1). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 4);
} stats SEC(".maps");

/* The gateway's addresses (network byte order) whose check replies the
 * kernel gets. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, __u8);
	__uint(max_entries, 1024);
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

SEC("xdp")
int natgw_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u16 proto;

	if ((void *)(eth + 1) > data_end) {
		count(2);
		return XDP_PASS;
	}
	proto = eth->h_proto;
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		__u16 *inner = (void *)(eth + 1) + 2;
		if ((void *)(inner + 1) > data_end) {
			count(2);
			return XDP_PASS;
		}
		proto = *inner;
	}
	if (proto == bpf_htons(ETH_P_IP)) {
		if (proto == eth->h_proto && for_kernel(eth + 1, data_end)) {
			count(1);
			count(3);
			return XDP_PASS;
		}
		count(0);
		return bpf_redirect_map(&xsks_map, ctx->rx_queue_index, XDP_DROP);
	}
	if (proto == bpf_htons(ETH_P_ARP)) {
		count(0);
		return bpf_redirect_map(&xsks_map, ctx->rx_queue_index, XDP_PASS);
	}
	count(1);
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
