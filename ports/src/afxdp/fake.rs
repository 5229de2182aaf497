//! Tests only: a socket's four rings in ordinary memory, with the test
//! playing the kernel's side of each (consuming fill and TX, producing RX
//! and completions), so the frame accounting of [`XskPort`] is checked
//! exactly, without privileges.
#![allow(unsafe_code)]

use super::*;
use std::sync::atomic::{AtomicU32, Ordering};

/// One ring's memory: producer, consumer and flags words, and the slots.
#[derive(Debug)]
pub(super) struct RingMem<T> {
    prod: Box<AtomicU32>,
    cons: Box<AtomicU32>,
    flags: Box<u32>,
    slots: Vec<T>,
}

impl<T: Copy + Default> RingMem<T> {
    fn new(size: u32) -> Self {
        RingMem {
            prod: Box::new(AtomicU32::new(0)),
            cons: Box::new(AtomicU32::new(0)),
            flags: Box::new(0),
            slots: vec![T::default(); size as usize],
        }
    }
    fn mask(&self) -> u32 {
        self.slots.len() as u32 - 1
    }
    /// Entries produced and not consumed.
    pub(super) fn level(&self) -> u32 {
        self.prod
            .load(Ordering::Acquire)
            .wrapping_sub(self.cons.load(Ordering::Acquire))
    }
    /// The kernel consumes one entry (fill, TX).
    fn take(&mut self) -> Option<T> {
        if self.level() == 0 {
            return None;
        }
        let c = self.cons.load(Ordering::Acquire);
        let v = self.slots[(c & self.mask()) as usize];
        self.cons.store(c.wrapping_add(1), Ordering::Release);
        Some(v)
    }
    /// The kernel produces one entry (RX, completion).
    fn put(&mut self, v: T) -> bool {
        if self.level() as usize == self.slots.len() {
            return false;
        }
        let p = self.prod.load(Ordering::Acquire);
        let m = self.mask();
        self.slots[(p & m) as usize] = v;
        self.prod.store(p.wrapping_add(1), Ordering::Release);
        true
    }
    fn parts(&mut self) -> (*mut u32, *mut u32, *mut std::ffi::c_void, *mut u32) {
        (
            self.prod.as_ptr(),
            self.cons.as_ptr(),
            self.slots.as_mut_ptr().cast(),
            &mut *self.flags,
        )
    }
    /// The user side of a ring the user produces (fill, TX), as libxdp sets
    /// it up (`cached_cons` runs a ring size ahead).
    fn prod_ring(&mut self) -> Box<sys::xsk_ring_prod> {
        let size = self.slots.len() as u32;
        let (producer, consumer, ring, flags) = self.parts();
        Box::new(sys::xsk_ring_prod {
            cached_prod: 0,
            cached_cons: size,
            mask: size - 1,
            size,
            producer,
            consumer,
            ring,
            flags,
        })
    }
    /// The user side of a ring the kernel produces (RX, completion).
    fn cons_ring(&mut self) -> Box<sys::xsk_ring_cons> {
        let size = self.slots.len() as u32;
        let (producer, consumer, ring, flags) = self.parts();
        Box::new(sys::xsk_ring_cons {
            cached_prod: 0,
            cached_cons: 0,
            mask: size - 1,
            size,
            producer,
            consumer,
            ring,
            flags,
        })
    }
}

/// The kernel's side of one socket.
#[derive(Debug)]
pub(super) struct FakeKernel {
    pub(super) fill: RingMem<u64>,
    pub(super) comp: RingMem<u64>,
    pub(super) rx: RingMem<sys::xdp_desc>,
    pub(super) tx: RingMem<sys::xdp_desc>,
}

impl FakeKernel {
    /// Rings of `ring_size` (RX, TX) and `umem_ring` (fill, completion).
    pub(super) fn new(ring_size: u32, umem_ring: u32) -> Box<FakeKernel> {
        Box::new(FakeKernel {
            fill: RingMem::new(umem_ring),
            comp: RingMem::new(umem_ring),
            rx: RingMem::new(ring_size),
            tx: RingMem::new(ring_size),
        })
    }
    /// Frames in the fill ring.
    pub(super) fn fill_level(&self) -> u32 {
        self.fill.level()
    }
    /// A frame of `len` bytes arrives: into a fill-ring frame, onto RX.
    /// False when the fill ring is empty (the kernel drops it).
    pub(super) fn receive(&mut self, len: u32) -> bool {
        let Some(addr) = self.fill.take() else {
            return false;
        };
        self.rx.put(sys::xdp_desc {
            addr: addr + u64::from(FRAME_HEADROOM),
            len,
            options: 0,
        })
    }
    /// Puts a raw descriptor on RX (a misbehaving kernel or driver).
    pub(super) fn put_rx(&mut self, d: sys::xdp_desc) {
        assert!(self.rx.put(d));
    }
    /// Sends up to `max` TX descriptors (copy mode sends 32 per wakeup),
    /// completing their frames. Returns how many.
    pub(super) fn transmit(&mut self, max: u32) -> u32 {
        let mut n = 0;
        while n < max {
            let Some(d) = self.tx.take() else { break };
            assert!(self.comp.put(d.addr));
            n += 1;
        }
        n
    }
    /// The user-side ring structs over this memory.
    pub(super) fn rings(
        &mut self,
    ) -> (
        Box<sys::xsk_ring_cons>,
        Box<sys::xsk_ring_prod>,
        Box<sys::xsk_ring_prod>,
        Box<sys::xsk_ring_cons>,
    ) {
        (
            self.rx.cons_ring(),
            self.tx.prod_ring(),
            self.fill.prod_ring(),
            self.comp.cons_ring(),
        )
    }
}

/// A pool over `frames` frames of 4096 bytes of ordinary memory.
pub(super) fn pool(frames: u32, mem: &mut Vec<u8>) -> UmemPool {
    let frame_size = 4096u32;
    *mem = vec![0u8; frames as usize * frame_size as usize];
    UmemPool::new(
        NonNull::new(mem.as_mut_ptr()).expect("a Vec's pointer is not null"),
        frame_size,
        frames,
    )
}
