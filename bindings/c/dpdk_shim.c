#include <rte_config.h>
#include <rte_ethdev.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include "dpdk_shim.h"

uint16_t sluice_dpdk_rx_burst(uint16_t port, uint16_t q, struct rte_mbuf **pkts, uint16_t n)
{
    return rte_eth_rx_burst(port, q, pkts, n);
}

uint16_t sluice_dpdk_tx_burst(uint16_t port, uint16_t q, struct rte_mbuf **pkts, uint16_t n)
{
    return rte_eth_tx_burst(port, q, pkts, n);
}

int sluice_dpdk_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **pkts, unsigned n)
{
    return rte_pktmbuf_alloc_bulk(mp, pkts, n);
}

struct rte_mbuf *sluice_dpdk_alloc(struct rte_mempool *mp)
{
    return rte_pktmbuf_alloc(mp);
}

void sluice_dpdk_free(struct rte_mbuf *m)
{
    rte_pktmbuf_free(m);
}

int sluice_dpdk_linearize(struct rte_mbuf *m)
{
    return rte_pktmbuf_linearize(m);
}

unsigned sluice_dpdk_lcore_id(void)
{
    return rte_lcore_id();
}

unsigned sluice_dpdk_pool_avail(const struct rte_mempool *mp)
{
    return rte_mempool_avail_count(mp);
}

unsigned sluice_dpdk_pool_size(const struct rte_mempool *mp)
{
    return mp->size;
}

int sluice_dpdk_errno(void)
{
    return rte_errno;
}
