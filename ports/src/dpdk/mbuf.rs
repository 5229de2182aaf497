//! The `rte_mbuf` as the pipeline's buffer, and the mempools it comes from.
//!
//! [`Mbuf`] is one pointer (`repr(transparent)`), so a burst of them is the
//! array of `rte_mbuf *` that DPDK's burst calls take, with no conversion.
//! It reads and writes the mbuf's `data_off`, `data_len` and `pkt_len`
//! directly (bindgen's layout tests pin their offsets), keeping `pkt_len ==
//! data_len`: the pipeline only ever sees single-segment mbufs.
//!
//! [`Mempool`] owns a pktmbuf pool on one NUMA socket; [`MbufPool`] is a
//! worker's handle on it (allocations go through DPDK's per-lcore cache).

use super::{sys, DpdkError};
use sluice_dataplane::buffer::{BufPool, PacketBuf};
use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::Arc;

/// `RTE_MBUF_F_RX_IP_CKSUM_MASK` and `_GOOD`: what the device found of the
/// outer IPv4 header checksum.
const RX_IP_CKSUM_MASK: u64 = (1 << 4) | (1 << 7);
const RX_IP_CKSUM_GOOD: u64 = 1 << 7;

/// One single-segment `rte_mbuf`, owned by whoever holds this value: it is
/// freed into its pool by [`MbufPool::free`] or sent by a port.
#[repr(transparent)]
#[derive(Debug)]
pub struct Mbuf(NonNull<sys::rte_mbuf>);

impl Mbuf {
    /// Wraps a raw mbuf.
    ///
    /// # Safety
    /// `m` must be a valid mbuf that the caller owns (not in a pool, a ring
    /// or anyone else's hands), with `nb_segs == 1`.
    #[inline]
    pub unsafe fn from_raw(m: NonNull<sys::rte_mbuf>) -> Mbuf {
        Mbuf(m)
    }

    /// Gives up ownership of the mbuf.
    #[inline]
    pub fn into_raw(self) -> *mut sys::rte_mbuf {
        self.0.as_ptr()
    }

    #[inline]
    fn m(&self) -> &sys::rte_mbuf {
        // SAFETY: we own a valid mbuf (type invariant).
        unsafe { self.0.as_ref() }
    }

    #[inline]
    fn m_mut(&mut self) -> &mut sys::rte_mbuf {
        // SAFETY: we own a valid mbuf (type invariant), exclusively.
        unsafe { self.0.as_mut() }
    }

    /// The mbuf's buffer size (headroom, data and tailroom).
    #[inline]
    pub fn buf_len(&self) -> usize {
        self.m().buf_len as usize
    }
}

impl PacketBuf for Mbuf {
    #[inline]
    fn data(&self) -> &[u8] {
        let m = self.m();
        // SAFETY: `buf_addr + data_off .. + data_len` lies inside the mbuf's
        // buffer (DPDK's invariant, kept by every method here), which we own.
        unsafe {
            std::slice::from_raw_parts(
                (m.buf_addr as *const u8).add(m.data_off as usize),
                m.data_len as usize,
            )
        }
    }
    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        let m = self.m_mut();
        // SAFETY: as in `data`, and we own the mbuf exclusively.
        unsafe {
            std::slice::from_raw_parts_mut(
                (m.buf_addr as *mut u8).add(m.data_off as usize),
                m.data_len as usize,
            )
        }
    }
    #[inline]
    fn headroom(&self) -> usize {
        self.m().data_off as usize
    }
    #[inline]
    fn tailroom(&self) -> usize {
        let m = self.m();
        (m.buf_len as usize).saturating_sub(m.data_off as usize + m.data_len as usize)
    }
    #[inline]
    fn prepend(&mut self, n: usize) -> bool {
        let m = self.m_mut();
        if n > m.data_off as usize {
            return false;
        }
        let n16 = n as u16;
        m.data_off -= n16;
        m.data_len += n16;
        m.pkt_len += n as u32;
        true
    }
    #[inline]
    fn adj(&mut self, n: usize) -> bool {
        let m = self.m_mut();
        if n > m.data_len as usize {
            return false;
        }
        let n16 = n as u16;
        m.data_off += n16;
        m.data_len -= n16;
        m.pkt_len -= n as u32;
        true
    }
    #[inline]
    fn append(&mut self, n: usize) -> bool {
        if n > self.tailroom() {
            return false;
        }
        let m = self.m_mut();
        m.data_len += n as u16;
        m.pkt_len += n as u32;
        true
    }
    #[inline]
    fn truncate(&mut self, len: usize) {
        let m = self.m_mut();
        if len < m.data_len as usize {
            m.data_len = len as u16;
            m.pkt_len = len as u32;
        }
    }
    #[inline]
    fn ipv4_checksum_verified(&self) -> bool {
        self.m().ol_flags & RX_IP_CKSUM_MASK == RX_IP_CKSUM_GOOD
    }
    #[inline]
    fn reset(&mut self) {
        let m = self.m_mut();
        m.data_off = (sys::RTE_PKTMBUF_HEADROOM as u16).min(m.buf_len);
        m.data_len = 0;
        m.pkt_len = 0;
        m.ol_flags = 0;
    }
}

/// A pktmbuf pool on one NUMA socket.
#[derive(Debug)]
pub struct Mempool {
    mp: NonNull<sys::rte_mempool>,
    name: String,
    data_room: u16,
}

// SAFETY: DPDK mempools are multi-producer, multi-consumer: any thread may
// allocate from and free into them.
unsafe impl Send for Mempool {}
// SAFETY: as above; the handle itself is never mutated.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// `mbufs` mbufs of `data_room` bytes (headroom included), each
    /// registered lcore caching up to `cache`, on `socket`.
    pub fn create(
        name: &str,
        mbufs: u32,
        cache: u32,
        data_room: u16,
        socket: i32,
    ) -> Result<Arc<Mempool>, DpdkError> {
        let err = |reason: String| DpdkError::Mempool {
            name: name.into(),
            mbufs,
            data_room,
            reason,
        };
        let c = CString::new(name).map_err(|_| err("the name holds a NUL byte".into()))?;
        // SAFETY: EAL is up (the caller holds an `Eal`); the name is a valid
        // C string that DPDK copies.
        let mp =
            unsafe { sys::rte_pktmbuf_pool_create(c.as_ptr(), mbufs, cache, 0, data_room, socket) };
        let mp = NonNull::new(mp).ok_or_else(|| err(super::last_error()))?;
        Ok(Arc::new(Mempool {
            mp,
            name: name.into(),
            data_room,
        }))
    }

    /// The raw pool.
    pub fn as_ptr(&self) -> *mut sys::rte_mempool {
        self.mp.as_ptr()
    }

    /// Each mbuf's data room (headroom included).
    pub fn data_room(&self) -> u16 {
        self.data_room
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Free mbufs, per-lcore caches included.
    pub fn available(&self) -> usize {
        // SAFETY: a valid pool; the count is a read of its state.
        unsafe { sys::sluice_dpdk_pool_avail(self.mp.as_ptr()) as usize }
    }

    /// mbufs in all.
    pub fn size(&self) -> usize {
        // SAFETY: as above.
        unsafe { sys::sluice_dpdk_pool_size(self.mp.as_ptr()) as usize }
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        // SAFETY: the last handle: every device using the pool is closed
        // (devices hold an Arc to it) and the workers' handles are gone.
        unsafe { sys::rte_mempool_free(self.mp.as_ptr()) };
    }
}

/// A worker's handle on its socket's pool.
#[derive(Debug, Clone)]
pub struct MbufPool {
    pool: Arc<Mempool>,
}

impl MbufPool {
    /// A handle on `pool`.
    pub fn new(pool: Arc<Mempool>) -> Self {
        MbufPool { pool }
    }

    /// The pool.
    pub fn mempool(&self) -> &Arc<Mempool> {
        &self.pool
    }
}

impl BufPool for MbufPool {
    type Buf = Mbuf;

    #[inline]
    fn alloc(&mut self) -> Option<Mbuf> {
        // SAFETY: a valid pool; rte_pktmbuf_alloc returns a reset,
        // single-segment mbuf that now belongs to us, or NULL.
        NonNull::new(unsafe { sys::sluice_dpdk_alloc(self.pool.as_ptr()) }).map(Mbuf)
    }

    #[inline]
    fn free(&mut self, buf: Mbuf) {
        // SAFETY: we own the mbuf; it goes back to the pool it came from.
        unsafe { sys::sluice_dpdk_free(buf.into_raw()) };
    }
}
