//! Frames of a UMEM as packet buffers ([`XdpBuf`]) and the worker's free
//! list ([`UmemPool`]). An `XdpBuf` is the one owner of its frame while it
//! exists; dropping it without returning it to the pool leaks the frame, so
//! every path that ends a packet frees or sends it.
#![allow(unsafe_code)]

use super::*;

/// A packet in a UMEM frame.
#[derive(Debug)]
pub struct XdpBuf {
    pub(super) frame: NonNull<u8>,
    pub(super) addr: u64,
    pub(super) start: u32,
    pub(super) end: u32,
    pub(super) frame_size: u32,
}

impl XdpBuf {
    #[inline]
    fn bytes(&self) -> &[u8] {
        // SAFETY: `frame` points at a whole frame of `frame_size` bytes inside
        // the mapped UMEM area, which outlives every buffer (the pool and
        // ports that hand buffers out are dropped after them); this buffer is
        // the frame's only owner, and start <= end <= frame_size.
        unsafe {
            std::slice::from_raw_parts(
                self.frame.as_ptr().add(self.start as usize),
                (self.end - self.start) as usize,
            )
        }
    }
    #[inline]
    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`; `&mut self` makes the access exclusive.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.frame.as_ptr().add(self.start as usize),
                (self.end - self.start) as usize,
            )
        }
    }
    /// The frame's address in the UMEM.
    pub fn frame_addr(&self) -> u64 {
        self.addr
    }
}

impl PacketBuf for XdpBuf {
    #[inline]
    fn data(&self) -> &[u8] {
        self.bytes()
    }
    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        self.bytes_mut()
    }
    #[inline]
    fn headroom(&self) -> usize {
        self.start as usize
    }
    #[inline]
    fn tailroom(&self) -> usize {
        (self.frame_size - self.end) as usize
    }
    #[inline]
    fn prepend(&mut self, n: usize) -> bool {
        if n > self.start as usize {
            return false;
        }
        self.start -= n as u32;
        true
    }
    #[inline]
    fn adj(&mut self, n: usize) -> bool {
        if n > (self.end - self.start) as usize {
            return false;
        }
        self.start += n as u32;
        true
    }
    #[inline]
    fn append(&mut self, n: usize) -> bool {
        if n > (self.frame_size - self.end) as usize {
            return false;
        }
        self.end += n as u32;
        true
    }
    #[inline]
    fn truncate(&mut self, len: usize) {
        if len < (self.end - self.start) as usize {
            self.end = self.start + len as u32;
        }
    }
    #[inline]
    fn reset(&mut self) {
        self.start = FRAME_HEADROOM;
        self.end = FRAME_HEADROOM;
    }
}

/// The free frames of one UMEM.
#[derive(Debug)]
pub struct UmemPool {
    pub(super) base: NonNull<u8>,
    pub(super) frame_size: u32,
    pub(super) free: Vec<u64>,
    pub(super) total: usize,
}

impl UmemPool {
    /// Frames in the pool.
    pub fn available(&self) -> usize {
        self.free.len()
    }
    /// Frames the UMEM has.
    pub fn total(&self) -> usize {
        self.total
    }
    #[inline]
    pub(super) fn buf(&self, addr: u64, start: u32, end: u32) -> XdpBuf {
        let base = addr & !u64::from(self.frame_size - 1);
        // SAFETY: `base` is a frame offset below the area's length (frames
        // come from this UMEM), so the pointer stays inside the mapping.
        let frame = unsafe { NonNull::new_unchecked(self.base.as_ptr().add(base as usize)) };
        XdpBuf {
            frame,
            addr: base,
            start,
            end,
            frame_size: self.frame_size,
        }
    }
}

impl BufPool for UmemPool {
    type Buf = XdpBuf;
    #[inline]
    fn alloc(&mut self) -> Option<XdpBuf> {
        let addr = self.free.pop()?;
        Some(self.buf(addr, FRAME_HEADROOM, FRAME_HEADROOM))
    }
    #[inline]
    fn free(&mut self, buf: XdpBuf) {
        self.free.push(buf.addr);
    }
}
