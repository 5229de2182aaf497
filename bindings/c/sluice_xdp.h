/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Shared between the XDP program and sluiced: the config map's value. */
#ifndef SLUICE_XDP_H
#define SLUICE_XDP_H

#include <linux/types.h>

#define SLUICE_XDP_MAX_QUEUES 64
/* A zeroed config (the map's value before sluiced writes it) passes
 * everything to the kernel: attaching never steals traffic by default. */
#define SLUICE_XDP_PASS 0
#define SLUICE_XDP_FILTER 1
#define SLUICE_XDP_REDIRECT_ALL 2

/* Addresses and port in network byte order. */
struct sluice_xdp_config {
	__u32 mode;
	__u32 node_ip;
	__u32 pod_net;
	__u32 pod_mask;
	__u16 vxlan_port;
	__u16 pad;
};

#endif
