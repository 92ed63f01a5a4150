// SPDX-License-Identifier: GPL-2.0
// natgw XDP steering program.
//
// IPv4 and ARP frames go to natgw's AF_XDP socket for the receive queue
// (natgw translates IPv4 and answers ARP for the gateway's addresses).
// Everything else (IPv6, LLDP, ...) goes to the kernel stack. If no socket
// is bound for the queue (natgw starting or stopping), IPv4 is dropped, so
// no NATed packet ever takes the kernel's path untranslated.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MAX_QUEUES 256

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
	__uint(max_entries, MAX_QUEUES);
} xsks_map SEC(".maps");

/* Per-CPU counters: 0 redirected, 1 passed to the kernel, 2 short frame. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 4);
} stats SEC(".maps");

static __always_inline void count(__u32 k)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &k);
	if (v)
		*v += 1;
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
