/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Out-of-line wrappers for libxdp's always-inline AF_XDP ring functions, so
 * Rust can call them. Each works on a whole burst to keep calls per packet
 * at zero.
 */
#ifndef SLUICE_XSK_SHIM_H
#define SLUICE_XSK_SHIM_H

#include <stdint.h>
#include <xdp/xsk.h>

/* Reserves up to n producer slots; returns how many, first index in *idx. */
uint32_t sluice_ring_prod_reserve(struct xsk_ring_prod *ring, uint32_t n, uint32_t *idx);
void sluice_ring_prod_submit(struct xsk_ring_prod *ring, uint32_t n);
/* Peeks up to n consumer entries; returns how many, first index in *idx. */
uint32_t sluice_ring_cons_peek(struct xsk_ring_cons *ring, uint32_t n, uint32_t *idx);
void sluice_ring_cons_release(struct xsk_ring_cons *ring, uint32_t n);
int sluice_ring_prod_needs_wakeup(const struct xsk_ring_prod *ring);
uint32_t sluice_ring_prod_free(struct xsk_ring_prod *ring, uint32_t n);

/* Fill ring: writes n frame addresses. */
void sluice_fill_addrs(struct xsk_ring_prod *fill, uint32_t idx, const uint64_t *addrs, uint32_t n);
/* Completion ring: reads n frame addresses. */
void sluice_comp_addrs(const struct xsk_ring_cons *comp, uint32_t idx, uint64_t *addrs, uint32_t n);
/* RX ring: reads n descriptors. */
void sluice_rx_descs(const struct xsk_ring_cons *rx, uint32_t idx, struct xdp_desc *descs, uint32_t n);
/* TX ring: writes n descriptors. */
void sluice_tx_descs(struct xsk_ring_prod *tx, uint32_t idx, const struct xdp_desc *descs, uint32_t n);

#endif
