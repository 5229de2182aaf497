/* sluice's C shim over DPDK 22.11: DPDK's fast-path functions are `static
 * inline` in its headers, so Rust cannot call them directly. Each wrapper
 * here is one call per burst (never per packet) and adds nothing of its own.
 */
#ifndef SLUICE_DPDK_SHIM_H
#define SLUICE_DPDK_SHIM_H

#include <stdint.h>

struct rte_mbuf;
struct rte_mempool;

/* rte_eth_rx_burst: up to n packets from queue q of port. */
uint16_t sluice_dpdk_rx_burst(uint16_t port, uint16_t q, struct rte_mbuf **pkts, uint16_t n);
/* rte_eth_tx_burst: how many of the n packets the queue took. */
uint16_t sluice_dpdk_tx_burst(uint16_t port, uint16_t q, struct rte_mbuf **pkts, uint16_t n);
/* rte_pktmbuf_alloc_bulk: 0 and n fresh mbufs, or negative and none. */
int sluice_dpdk_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **pkts, unsigned n);
/* rte_pktmbuf_alloc: one fresh mbuf or NULL. */
struct rte_mbuf *sluice_dpdk_alloc(struct rte_mempool *mp);
/* rte_pktmbuf_free: an mbuf (and its chain) back to its pool. */
void sluice_dpdk_free(struct rte_mbuf *m);
/* rte_pktmbuf_linearize: 0 when the chain now fits its first segment. */
int sluice_dpdk_linearize(struct rte_mbuf *m);
/* rte_lcore_id of the calling thread (LCORE_ID_ANY if unregistered). */
unsigned sluice_dpdk_lcore_id(void);
/* Free objects in the pool, caches included (rte_mempool_avail_count). */
unsigned sluice_dpdk_pool_avail(const struct rte_mempool *mp);
/* The pool's size. */
unsigned sluice_dpdk_pool_size(const struct rte_mempool *mp);
/* The last error DPDK set (rte_errno). */
int sluice_dpdk_errno(void);

#endif
