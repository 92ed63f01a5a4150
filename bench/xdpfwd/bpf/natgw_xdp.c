// SPDX-License-Identifier: GPL-2.0
// natgw XDP steering program: IPv4 -> AF_XDP socket (XSKMAP, keyed by rx queue),
// everything else (ARP, IPv6, LLDP, ...) -> kernel stack.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MAX_QUEUES 64

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
	__uint(max_entries, MAX_QUEUES);
} xsks_map SEC(".maps");

/* per-CPU counters: 0 = redirected, 1 = passed non-IPv4, 2 = short frame */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 4);
} stats SEC(".maps");

/* Action when no socket is bound for this queue. Patched from userspace
 * before load via .rodata (bpf_map__set_initial_value) if wanted. */
volatile const __u32 miss_action = XDP_PASS;

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

	if ((void *)(eth + 1) > data_end) {
		count(2);
		return XDP_PASS;
	}
	if (eth->h_proto != bpf_htons(ETH_P_IP)) {
		count(1);
		return XDP_PASS; /* ARP, IPv6, ... handled by the kernel */
	}
	count(0);
	/* lower bits of flags = action when xsks_map[queue] is empty (kernel >= 5.3) */
	return bpf_redirect_map(&xsks_map, ctx->rx_queue_index, miss_action);
}

char _license[] SEC("license") = "GPL";
