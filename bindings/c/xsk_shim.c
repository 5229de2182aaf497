// SPDX-License-Identifier: Apache-2.0
#include "xsk_shim.h"

uint32_t sluice_ring_prod_reserve(struct xsk_ring_prod *ring, uint32_t n, uint32_t *idx)
{
	return xsk_ring_prod__reserve(ring, n, idx);
}

void sluice_ring_prod_submit(struct xsk_ring_prod *ring, uint32_t n)
{
	xsk_ring_prod__submit(ring, n);
}

uint32_t sluice_ring_cons_peek(struct xsk_ring_cons *ring, uint32_t n, uint32_t *idx)
{
	return xsk_ring_cons__peek(ring, n, idx);
}

void sluice_ring_cons_release(struct xsk_ring_cons *ring, uint32_t n)
{
	xsk_ring_cons__release(ring, n);
}

int sluice_ring_prod_needs_wakeup(const struct xsk_ring_prod *ring)
{
	return xsk_ring_prod__needs_wakeup(ring);
}

uint32_t sluice_ring_prod_free(struct xsk_ring_prod *ring, uint32_t n)
{
	return xsk_prod_nb_free(ring, n);
}

void sluice_fill_addrs(struct xsk_ring_prod *fill, uint32_t idx, const uint64_t *addrs, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		*xsk_ring_prod__fill_addr(fill, idx + i) = addrs[i];
}

void sluice_comp_addrs(const struct xsk_ring_cons *comp, uint32_t idx, uint64_t *addrs, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		addrs[i] = *xsk_ring_cons__comp_addr(comp, idx + i);
}

void sluice_rx_descs(const struct xsk_ring_cons *rx, uint32_t idx, struct xdp_desc *descs, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		descs[i] = *xsk_ring_cons__rx_desc(rx, idx + i);
}

void sluice_tx_descs(struct xsk_ring_prod *tx, uint32_t idx, const struct xdp_desc *descs, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		*xsk_ring_prod__tx_desc(tx, idx + i) = descs[i];
}
