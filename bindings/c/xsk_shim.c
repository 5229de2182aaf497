// SPDX-License-Identifier: Apache-2.0
#include "xsk_shim.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef SOL_XDP
#define SOL_XDP 283
#endif
#ifndef AF_XDP
#define AF_XDP 44
#endif

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

static void *map_ring(int fd, uint64_t len, off_t pgoff)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, pgoff);
	return p == MAP_FAILED ? NULL : p;
}

void sluice_xsk_unmap_rings(struct sluice_xsk_ring_maps *maps)
{
	for (int i = 0; i < 4; i++) {
		if (maps->addr[i])
			munmap(maps->addr[i], maps->len[i]);
		maps->addr[i] = NULL;
		maps->len[i] = 0;
	}
}

int sluice_xsk_map_rings(int fd, uint32_t fill_size, uint32_t comp_size, uint32_t rx_size,
			 uint32_t tx_size, struct xsk_ring_prod *fill, struct xsk_ring_cons *comp,
			 struct xsk_ring_cons *rx, struct xsk_ring_prod *tx,
			 struct sluice_xsk_ring_maps *maps)
{
	struct xdp_mmap_offsets off;
	socklen_t optlen = sizeof(off);
	memset(maps, 0, sizeof(*maps));
	if (getsockopt(fd, SOL_XDP, XDP_MMAP_OFFSETS, &off, &optlen))
		return -errno;
	if (optlen != sizeof(off))
		return -EOPNOTSUPP;
	const struct xdp_ring_offset *o[4] = { &off.fr, &off.cr, &off.rx, &off.tx };
	const uint32_t size[4] = { fill_size, comp_size, rx_size, tx_size };
	const uint64_t entry[4] = { sizeof(uint64_t), sizeof(uint64_t), sizeof(struct xdp_desc),
				    sizeof(struct xdp_desc) };
	const off_t pgoff[4] = { XDP_UMEM_PGOFF_FILL_RING, XDP_UMEM_PGOFF_COMPLETION_RING,
				 XDP_PGOFF_RX_RING, XDP_PGOFF_TX_RING };
	for (int i = 0; i < 4; i++) {
		maps->len[i] = o[i]->desc + (uint64_t)size[i] * entry[i];
		maps->addr[i] = map_ring(fd, maps->len[i], pgoff[i]);
		if (!maps->addr[i]) {
			int err = -errno;
			sluice_xsk_unmap_rings(maps);
			return err;
		}
	}
	struct xsk_ring_prod *prod[2] = { fill, tx };
	const int prod_i[2] = { 0, 3 };
	for (int k = 0; k < 2; k++) {
		char *m = maps->addr[prod_i[k]];
		const struct xdp_ring_offset *ro = o[prod_i[k]];
		struct xsk_ring_prod *r = prod[k];
		r->mask = size[prod_i[k]] - 1;
		r->size = size[prod_i[k]];
		r->producer = (void *)(m + ro->producer);
		r->consumer = (void *)(m + ro->consumer);
		r->flags = (void *)(m + ro->flags);
		r->ring = m + ro->desc;
		r->cached_prod = __atomic_load_n(r->producer, __ATOMIC_ACQUIRE);
		r->cached_cons = __atomic_load_n(r->consumer, __ATOMIC_ACQUIRE) + r->size;
	}
	struct xsk_ring_cons *cons[2] = { comp, rx };
	const int cons_i[2] = { 1, 2 };
	for (int k = 0; k < 2; k++) {
		char *m = maps->addr[cons_i[k]];
		const struct xdp_ring_offset *ro = o[cons_i[k]];
		struct xsk_ring_cons *r = cons[k];
		r->mask = size[cons_i[k]] - 1;
		r->size = size[cons_i[k]];
		r->producer = (void *)(m + ro->producer);
		r->consumer = (void *)(m + ro->consumer);
		r->flags = (void *)(m + ro->flags);
		r->ring = m + ro->desc;
		r->cached_prod = __atomic_load_n(r->producer, __ATOMIC_ACQUIRE);
		r->cached_cons = __atomic_load_n(r->consumer, __ATOMIC_ACQUIRE);
	}
	return 0;
}

int sluice_xsk_bind_shared(int umem_fd, uint32_t ifindex, uint32_t queue, uint32_t fill_size,
			   uint32_t comp_size, uint32_t rx_size, uint32_t tx_size,
			   uint16_t bind_flags, struct xsk_ring_prod *fill,
			   struct xsk_ring_cons *comp, struct xsk_ring_cons *rx,
			   struct xsk_ring_prod *tx, struct sluice_xsk_ring_maps *maps)
{
	int fd = socket(AF_XDP, SOCK_RAW | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int err = 0;
	if (setsockopt(fd, SOL_XDP, XDP_UMEM_FILL_RING, &fill_size, sizeof(fill_size)) ||
	    setsockopt(fd, SOL_XDP, XDP_UMEM_COMPLETION_RING, &comp_size, sizeof(comp_size)) ||
	    setsockopt(fd, SOL_XDP, XDP_RX_RING, &rx_size, sizeof(rx_size)) ||
	    setsockopt(fd, SOL_XDP, XDP_TX_RING, &tx_size, sizeof(tx_size))) {
		err = -errno;
		close(fd);
		return err;
	}
	err = sluice_xsk_map_rings(fd, fill_size, comp_size, rx_size, tx_size, fill, comp, rx, tx,
				   maps);
	if (err) {
		close(fd);
		return err;
	}
	struct sockaddr_xdp sxdp;
	memset(&sxdp, 0, sizeof(sxdp));
	sxdp.sxdp_family = AF_XDP;
	sxdp.sxdp_ifindex = ifindex;
	sxdp.sxdp_queue_id = queue;
	sxdp.sxdp_flags = XDP_SHARED_UMEM | bind_flags;
	sxdp.sxdp_shared_umem_fd = umem_fd;
	if (bind(fd, (struct sockaddr *)&sxdp, sizeof(sxdp))) {
		err = -errno;
		sluice_xsk_unmap_rings(maps);
		close(fd);
		return err;
	}
	return fd;
}
