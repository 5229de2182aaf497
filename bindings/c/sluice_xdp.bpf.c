// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * sluice's XDP program: steers frames to the AF_XDP socket of their queue.
 *
 * On a pod veth (mode REDIRECT_ALL) everything goes to sluiced. On a shared
 * uplink (mode FILTER) only what sluiced must handle is redirected: IPv4 to
 * the pod network (host-gw), IPIP to this node, and UDP to this node's VXLAN
 * port. Everything else (SSH, kubelet, etcd, BGP, ARP) passes to the kernel,
 * which keeps owning the node's address. Without a socket on the queue,
 * bpf_redirect_map falls back to XDP_PASS. Until sluiced writes its config
 * (mode PASS, the zeroed default) everything passes. In FILTER mode only
 * well-formed IPv4 (version 4, header length 20..60 within the frame) is
 * considered, and a fragment addressed to the node is never taken for IPIP
 * or VXLAN: sluiced does not reassemble, the kernel does.
 *
 * Built with clang -target bpf by bindings/build.rs; loaded through libxdp.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "sluice_xdp.h"

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, SLUICE_XDP_MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sluice_xdp_config);
} config_map SEC(".maps");

SEC("xdp")
int sluice_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 key = 0;
	struct sluice_xdp_config *cfg = bpf_map_lookup_elem(&config_map, &key);
	struct ethhdr *eth = data;
	struct iphdr *ip;
	struct udphdr *udp;
	__u32 ihl;

	if (!cfg)
		return XDP_PASS;
	if (cfg->mode == SLUICE_XDP_REDIRECT_ALL)
		goto redirect;
	if (cfg->mode != SLUICE_XDP_FILTER)
		return XDP_PASS;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end)
		return XDP_PASS;
	ihl = (ip->ihl & 0x0f) * 4;
	if (ip->version != 4 || ihl < sizeof(*ip) || (void *)ip + ihl > end)
		return XDP_PASS;
	if ((ip->daddr & cfg->pod_mask) == cfg->pod_net)
		goto redirect;
	if (ip->daddr != cfg->node_ip)
		return XDP_PASS;
	/* More fragments, or an offset: the kernel reassembles. */
	if (ip->frag_off & bpf_htons(0x3fff))
		return XDP_PASS;
	if (ip->protocol == IPPROTO_IPIP)
		goto redirect;
	if (ip->protocol != IPPROTO_UDP)
		return XDP_PASS;
	udp = (void *)ip + ihl;
	if ((void *)(udp + 1) > end)
		return XDP_PASS;
	if (udp->dest == cfg->vxlan_port)
		goto redirect;
	return XDP_PASS;
redirect:
	return bpf_redirect_map(&xsks_map, ctx->rx_queue_index, XDP_PASS);
}

char _license[] SEC("license") = "Dual BSD/GPL";
