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

/// The free frames of one UMEM, and which socket holds each frame the
/// kernel has.
///
/// Every socket gets a token when it opens. A frame given to the kernel
/// (onto a fill or TX ring) is marked with the socket's token until it
/// comes back (on RX or the completion ring); closing a socket returns
/// every frame still marked with its token (see [`XskPort::close`]). One
/// store per frame on the hot path, no allocation: the table is sized once.
#[derive(Debug)]
pub struct UmemPool {
    pub(super) base: NonNull<u8>,
    pub(super) frame_size: u32,
    pub(super) free: Vec<u64>,
    pub(super) total: usize,
    /// Per frame: the token of the socket that gave it to the kernel, or
    /// [`NO_HOLDER`] while the switch has it (free list or a buffer).
    pub(super) holder: Vec<u16>,
    /// `log2(frame_size)`.
    pub(super) shift: u32,
    tokens: Vec<u16>,
    next_token: u16,
    retired: usize,
}

/// A pool's state handed over at an upgrade ([`UmemPool::handover`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PoolState {
    /// Bytes per frame.
    pub frame_size: u32,
    /// Per frame: the token of the socket holding it, 0 if free.
    pub holder: Vec<u16>,
    /// Tokens free for reuse.
    pub tokens: Vec<u16>,
    /// The next new token.
    pub next_token: u16,
    /// Frames given up for good.
    pub retired: usize,
}

/// `holder` of a frame the switch has.
pub(super) const NO_HOLDER: u16 = 0;

impl UmemPool {
    /// A pool over the `frames` frames of `frame_size` bytes at `base`, all free.
    pub(super) fn new(base: NonNull<u8>, frame_size: u32, frames: u32) -> UmemPool {
        debug_assert!(frame_size.is_power_of_two());
        UmemPool {
            base,
            frame_size,
            free: (0..frames)
                .map(|i| u64::from(i) * u64::from(frame_size))
                .collect(),
            total: frames as usize,
            holder: vec![NO_HOLDER; frames as usize],
            shift: frame_size.trailing_zeros(),
            tokens: Vec::new(),
            next_token: NO_HOLDER + 1,
            retired: 0,
        }
    }
    /// The pool's state as a worker hands it over at an upgrade: which
    /// socket holds each frame and the tokens in use. Only between two
    /// turns of the worker, when no buffer is alive: every frame not
    /// marked is then on the free list.
    pub fn handover(&self) -> PoolState {
        PoolState {
            frame_size: self.frame_size,
            holder: self.holder.clone(),
            tokens: self.tokens.clone(),
            next_token: self.next_token,
            retired: self.retired,
        }
    }

    /// The pool of a UMEM handed over ([`Umem::inherit`]): the frames no
    /// socket holds are free, the others stay marked with their socket's
    /// token until it gives them back.
    pub fn inherit(umem: &Umem, state: PoolState) -> Result<UmemPool, String> {
        let cfg = umem.config();
        if state.holder.len() != cfg.frames as usize || state.frame_size != cfg.frame_size {
            return Err(format!(
                "the pool handed over has {} frames of {} bytes; the UMEM {} of {}",
                state.holder.len(),
                state.frame_size,
                cfg.frames,
                cfg.frame_size
            ));
        }
        let mut pool = umem.pool();
        pool.free = state
            .holder
            .iter()
            .enumerate()
            .filter(|(_, h)| **h == NO_HOLDER)
            .map(|(i, _)| i as u64 * u64::from(cfg.frame_size))
            .collect();
        pool.holder = state.holder;
        pool.tokens = state.tokens;
        pool.next_token = state.next_token;
        pool.retired = state.retired;
        Ok(pool)
    }

    /// Frames in the pool.
    pub fn available(&self) -> usize {
        self.free.len()
    }
    /// Frames the UMEM has.
    pub fn total(&self) -> usize {
        self.total
    }
    /// Frames given up for good: held by a socket whose kernel side
    /// libxdp keeps open after it is deleted (see [`XskPort::close`]).
    pub fn retired(&self) -> usize {
        self.retired
    }
    /// Bytes a frame holds.
    pub fn frame_size(&self) -> u32 {
        self.frame_size
    }
    /// The index of the frame `addr` falls in, if it is inside the UMEM.
    #[inline]
    pub(super) fn frame_index(&self, addr: u64) -> Option<usize> {
        let i = (addr >> self.shift) as usize;
        (i < self.total).then_some(i)
    }
    /// A token for a new socket.
    pub(super) fn token(&mut self) -> u16 {
        if let Some(t) = self.tokens.pop() {
            return t;
        }
        let t = self.next_token;
        self.next_token = self
            .next_token
            .checked_add(1)
            .expect("fewer than 65535 sockets per worker");
        t
    }
    /// Returns every frame `token` holds to the free list and the token
    /// for reuse; how many frames came back.
    pub(super) fn reclaim(&mut self, token: u16) -> usize {
        let mut n = 0;
        for (i, h) in self.holder.iter_mut().enumerate() {
            if *h == token {
                *h = NO_HOLDER;
                self.free.push(i as u64 * u64::from(self.frame_size));
                n += 1;
            }
        }
        self.tokens.push(token);
        n
    }
    /// Gives up every frame `token` holds (the kernel may still use them);
    /// they stay marked so no other socket's descriptors can claim them.
    pub(super) fn retire(&mut self, token: u16) -> usize {
        let n = self.holder.iter().filter(|h| **h == token).count();
        self.retired += n;
        n
    }
    #[inline]
    pub(super) fn buf(&self, addr: u64, start: u32, end: u32) -> XdpBuf {
        let base = addr & !u64::from(self.frame_size - 1);
        // SAFETY: `base` is a frame offset below the area's length (frames
        // come from this UMEM, RX descriptors are checked against it before
        // they get here), so the pointer stays inside the mapping.
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
