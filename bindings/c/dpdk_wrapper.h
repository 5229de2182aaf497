/* What bindgen reads for DPDK: EAL, devices, ethdev (and rte_flow), mbufs
 * and mempools, and sluice's shim. */
#include <rte_config.h>
#include <rte_eal.h>
#include <rte_dev.h>
#include <rte_bus.h>
#include <rte_lcore.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_flow.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include "dpdk_shim.h"
