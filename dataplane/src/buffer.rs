//! Packet buffers, buffer pools and bursts.
//!
//! The pipeline never owns memory of its own: it works on whatever buffer type
//! the port backend hands it, through [`PacketBuf`]. The contract is the one
//! a DPDK `rte_mbuf` and an AF_XDP UMEM frame both meet without copying: a
//! contiguous data window inside a fixed buffer, with *headroom* in front of it
//! (encapsulation grows the window forwards with [`PacketBuf::prepend`],
//! decapsulation shrinks it with [`PacketBuf::adj`]) and *tailroom* behind it.
//!
//! Invariants every implementation keeps:
//! - `data()` is exactly `len()` bytes, and stays valid and unmoved until the
//!   next call that changes the window;
//! - a method that cannot do what is asked (not enough headroom, tailroom or
//!   data) returns `false` and leaves the buffer unchanged; none panics.
//!
//! [`Burst`] is a fixed-capacity vector of buffers (32 to 256), allocated once.
//! [`HeapBuf`] and [`HeapPool`] are the memory-port implementation used by
//! tests, the replay tool and benchmarks.

/// Headroom reserved in front of received data, as DPDK's `RTE_PKTMBUF_HEADROOM`.
/// Enough for a VXLAN encapsulation (50 bytes) twice over.
pub const DEFAULT_HEADROOM: usize = 128;

/// Smallest burst the pipeline is built for.
pub const MIN_BURST: usize = 32;
/// Largest burst the pipeline is built for (VPP's frame size).
pub const MAX_BURST: usize = 256;

/// A packet buffer: a data window with headroom and tailroom.
pub trait PacketBuf {
    /// The packet bytes.
    fn data(&self) -> &[u8];
    /// The packet bytes, writable.
    fn data_mut(&mut self) -> &mut [u8];
    /// Bytes in front of the data window.
    fn headroom(&self) -> usize;
    /// Bytes behind the data window.
    fn tailroom(&self) -> usize;
    /// Grows the window `n` bytes into the headroom (the new bytes are
    /// unspecified). Returns `false`, unchanged, if the headroom is short.
    fn prepend(&mut self, n: usize) -> bool;
    /// Removes `n` bytes from the front of the window.
    fn adj(&mut self, n: usize) -> bool;
    /// Grows the window `n` bytes into the tailroom (new bytes unspecified).
    fn append(&mut self, n: usize) -> bool;
    /// Shortens the window to `len` bytes; no-op when it is already shorter.
    fn truncate(&mut self, len: usize);
    /// Empties the window and restores the default headroom.
    fn reset(&mut self);

    /// Whether the receiving device checked the checksum of the frame's
    /// outermost IPv4 header and found it good (RX checksum offload, e.g.
    /// an mbuf's `RTE_MBUF_F_RX_IP_CKSUM_GOOD`). Speaks only for the header
    /// the device saw: after decapsulation the inner header is checked in
    /// software. Buffers without such a device say `false`.
    #[inline]
    fn ipv4_checksum_verified(&self) -> bool {
        false
    }

    /// Length of the data window.
    #[inline]
    fn len(&self) -> usize {
        self.data().len()
    }
    /// True when the window is empty.
    #[inline]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A source of empty buffers, and where dropped buffers go back to.
pub trait BufPool {
    /// The buffer type this pool hands out.
    type Buf: PacketBuf;
    /// An empty buffer with the default headroom, or `None` when exhausted.
    fn alloc(&mut self) -> Option<Self::Buf>;
    /// Returns a buffer to the pool.
    fn free(&mut self, buf: Self::Buf);
}

/// A heap-backed buffer with the same layout rules as an `rte_mbuf`.
#[derive(Clone)]
pub struct HeapBuf {
    storage: Box<[u8]>,
    start: usize,
    end: usize,
    default_headroom: usize,
}

impl std::fmt::Debug for HeapBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeapBuf")
            .field("headroom", &self.start)
            .field("len", &(self.end - self.start))
            .field("capacity", &self.storage.len())
            .finish()
    }
}

impl HeapBuf {
    /// A buffer of `capacity` bytes in all, `headroom` of them in front.
    pub fn new(capacity: usize, headroom: usize) -> Self {
        let headroom = headroom.min(capacity);
        HeapBuf {
            storage: vec![0u8; capacity].into_boxed_slice(),
            start: headroom,
            end: headroom,
            default_headroom: headroom,
        }
    }

    /// A buffer holding a copy of `bytes` after the default headroom, with
    /// room for a 9000-byte frame.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let mut b = HeapBuf::new(DEFAULT_HEADROOM + bytes.len().max(9216), DEFAULT_HEADROOM);
        b.set_data(bytes);
        b
    }

    /// Replaces the content with `bytes` after the default headroom; returns
    /// `false`, unchanged, if it does not fit.
    pub fn set_data(&mut self, bytes: &[u8]) -> bool {
        let start = self.default_headroom;
        let Some(end) = start.checked_add(bytes.len()) else {
            return false;
        };
        if end > self.storage.len() {
            return false;
        }
        self.storage[start..end].copy_from_slice(bytes);
        self.start = start;
        self.end = end;
        true
    }

    /// Total size of the underlying storage.
    pub fn capacity(&self) -> usize {
        self.storage.len()
    }
}

impl PacketBuf for HeapBuf {
    #[inline]
    fn data(&self) -> &[u8] {
        &self.storage[self.start..self.end]
    }
    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.end]
    }
    #[inline]
    fn headroom(&self) -> usize {
        self.start
    }
    #[inline]
    fn tailroom(&self) -> usize {
        self.storage.len() - self.end
    }
    #[inline]
    fn prepend(&mut self, n: usize) -> bool {
        if n > self.start {
            return false;
        }
        self.start -= n;
        true
    }
    #[inline]
    fn adj(&mut self, n: usize) -> bool {
        if n > self.end - self.start {
            return false;
        }
        self.start += n;
        true
    }
    #[inline]
    fn append(&mut self, n: usize) -> bool {
        if n > self.storage.len() - self.end {
            return false;
        }
        self.end += n;
        true
    }
    #[inline]
    fn truncate(&mut self, len: usize) {
        if len < self.end - self.start {
            self.end = self.start + len;
        }
    }
    #[inline]
    fn reset(&mut self) {
        self.start = self.default_headroom;
        self.end = self.default_headroom;
    }
}

/// A bounded pool of [`HeapBuf`]s, allocated up front.
#[derive(Debug)]
pub struct HeapPool {
    free: Vec<HeapBuf>,
    total: usize,
}

impl HeapPool {
    /// `count` buffers of `buf_size` bytes (headroom included).
    pub fn new(count: usize, buf_size: usize) -> Self {
        let free = (0..count)
            .map(|_| HeapBuf::new(buf_size, DEFAULT_HEADROOM))
            .collect();
        HeapPool { free, total: count }
    }
    /// Buffers currently in the pool.
    pub fn available(&self) -> usize {
        self.free.len()
    }
    /// Buffers the pool was made with.
    pub fn total(&self) -> usize {
        self.total
    }
}

impl BufPool for HeapPool {
    type Buf = HeapBuf;
    #[inline]
    fn alloc(&mut self) -> Option<HeapBuf> {
        self.free.pop().map(|mut b| {
            b.reset();
            b
        })
    }
    #[inline]
    fn free(&mut self, buf: HeapBuf) {
        // Never grows: a buffer that did not come from this pool is dropped.
        if self.free.len() < self.free.capacity() || self.free.len() < self.total {
            self.free.push(buf);
        }
    }
}

/// A burst: up to `capacity` buffers (32 to 256), storage allocated once.
#[derive(Debug)]
pub struct Burst<B> {
    bufs: Vec<B>,
    capacity: usize,
}

impl<B> Burst<B> {
    /// A burst of `capacity` packets, clamped to `MIN_BURST..=MAX_BURST`.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(MIN_BURST, MAX_BURST);
        Burst {
            bufs: Vec::with_capacity(capacity),
            capacity,
        }
    }
    /// Adds a buffer; gives it back when the burst is full.
    #[inline]
    pub fn push(&mut self, buf: B) -> Result<(), B> {
        if self.bufs.len() >= self.capacity {
            return Err(buf);
        }
        self.bufs.push(buf);
        Ok(())
    }
    /// Packets in the burst.
    #[inline]
    pub fn len(&self) -> usize {
        self.bufs.len()
    }
    /// True when empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.bufs.is_empty()
    }
    /// True when full.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.bufs.len() >= self.capacity
    }
    /// The most packets this burst holds.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    /// The buffers.
    #[inline]
    pub fn as_slice(&self) -> &[B] {
        &self.bufs
    }
    /// The buffers, writable.
    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [B] {
        &mut self.bufs
    }
    /// Takes every buffer out, in order; the storage stays allocated.
    #[inline]
    pub fn drain(&mut self) -> std::vec::Drain<'_, B> {
        self.bufs.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_buf_window_moves() {
        let mut b = HeapBuf::new(256, 64);
        assert!(b.is_empty());
        assert!(b.append(10));
        b.data_mut().copy_from_slice(&[1; 10]);
        assert_eq!(b.headroom(), 64);
        assert!(b.prepend(50));
        assert_eq!(b.len(), 60);
        assert_eq!(b.headroom(), 14);
        assert!(!b.prepend(15), "more than the headroom is refused");
        assert_eq!(b.len(), 60, "a refused prepend leaves the buffer as it was");
        assert!(b.adj(50));
        assert_eq!(b.data(), &[1; 10]);
        assert!(!b.adj(11));
        b.truncate(4);
        assert_eq!(b.len(), 4);
        b.truncate(100);
        assert_eq!(b.len(), 4);
        assert!(!b.append(1000));
        assert_eq!(b.tailroom(), 256 - 64 - 4);
        b.reset();
        assert_eq!((b.headroom(), b.len()), (64, 0));
    }

    #[test]
    fn set_data_refuses_oversize() {
        let mut b = HeapBuf::new(100, 64);
        assert!(b.set_data(&[7; 36]));
        assert!(!b.set_data(&[7; 37]));
        assert_eq!(b.data(), &[7; 36]);
    }

    #[test]
    fn pool_is_bounded_and_recycles() {
        let mut p = HeapPool::new(2, 512);
        let a = p.alloc().unwrap();
        let mut b = p.alloc().unwrap();
        assert!(p.alloc().is_none());
        assert!(b.append(5));
        p.free(b);
        let b = p.alloc().unwrap();
        assert_eq!(b.len(), 0, "a recycled buffer comes back empty");
        assert_eq!(b.headroom(), DEFAULT_HEADROOM);
        p.free(a);
        p.free(b);
        assert_eq!(p.available(), 2);
    }

    #[test]
    fn burst_capacity_is_clamped_and_bounded() {
        let mut burst = Burst::new(4);
        assert_eq!(burst.capacity(), MIN_BURST);
        for i in 0..MIN_BURST {
            burst.push(i).unwrap();
        }
        assert!(burst.is_full());
        assert_eq!(burst.push(99), Err(99));
        assert_eq!(burst.drain().count(), MIN_BURST);
        assert!(burst.is_empty());
        assert_eq!(Burst::<u8>::new(10_000).capacity(), MAX_BURST);
    }
}
