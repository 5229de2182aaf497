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

/*
 * Rings this process maps itself rather than through libxdp: those of a
 * socket handed over by another sluiced (an upgrade), and those of a new
 * socket sharing a UMEM registered by that process. addr/len of the fill,
 * completion, RX and TX mappings; a NULL addr was not mapped.
 */
struct sluice_xsk_ring_maps {
	void *addr[4];
	uint64_t len[4];
};

/*
 * Maps the four rings of AF_XDP socket fd (fill and completion of
 * fill_size/comp_size entries, RX and TX of rx_size/tx_size) into the ring
 * structs, taking their positions from the shared producer and consumer
 * words, so a ring left consistent by its last user (nothing reserved or
 * peeked and not yet submitted or released) carries on where it stopped.
 * A bound socket's rings can be mapped again only on kernels that allow it
 * (Linux 6.5 and later); older ones refuse with -EBUSY.
 * Returns 0 or -errno; on error nothing stays mapped.
 */
int sluice_xsk_map_rings(int fd, uint32_t fill_size, uint32_t comp_size, uint32_t rx_size,
			 uint32_t tx_size, struct xsk_ring_prod *fill, struct xsk_ring_cons *comp,
			 struct xsk_ring_cons *rx, struct xsk_ring_prod *tx,
			 struct sluice_xsk_ring_maps *maps);
/* Unmaps what sluice_xsk_map_rings mapped. */
void sluice_xsk_unmap_rings(struct sluice_xsk_ring_maps *maps);
/*
 * A new socket on (ifindex, queue) sharing the UMEM of socket umem_fd,
 * with its own fill and completion rings, mapped, then bound with
 * XDP_SHARED_UMEM | bind_flags (the kernel refuses other flags on a
 * shared socket: pass 0; it inherits the UMEM's). Returns the descriptor (close-on-exec) or
 * -errno; on error nothing is left open or mapped.
 */
int sluice_xsk_bind_shared(int umem_fd, uint32_t ifindex, uint32_t queue, uint32_t fill_size,
			   uint32_t comp_size, uint32_t rx_size, uint32_t tx_size,
			   uint16_t bind_flags, struct xsk_ring_prod *fill,
			   struct xsk_ring_cons *comp, struct xsk_ring_cons *rx,
			   struct xsk_ring_prod *tx, struct sluice_xsk_ring_maps *maps);

#endif
