//! One AF_XDP socket on one (interface, queue): its four rings, kept in
//! step with the frame-ownership invariant of the parent module. `rx_burst`
//! turns RX descriptors into buffers and tops the fill ring up;
//! `tx_burst` reclaims completions, then hands buffers to the TX ring and
//! wakes the kernel when it asks to be woken.
#![allow(unsafe_code)]

use super::*;

/// Settings of one socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XskConfig {
    /// RX and TX ring sizes (powers of two).
    pub ring_size: u32,
    /// Frames kept in the fill ring.
    pub fill_target: u32,
}

impl Default for XskConfig {
    fn default() -> Self {
        XskConfig {
            ring_size: 2048,
            fill_target: 1024,
        }
    }
}

impl XskConfig {
    /// A pod's veth: a smaller fill target, so a worker's UMEM serves many pods.
    pub fn pod() -> Self {
        XskConfig {
            ring_size: 512,
            fill_target: 128,
        }
    }
}

/// The kernel's per-socket counters (`XDP_STATISTICS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct XskStats {
    /// Dropped for reasons other than invalid descriptors.
    pub rx_dropped: u64,
    /// Dropped because of invalid descriptors.
    pub rx_invalid_descs: u64,
    /// Invalid TX descriptors.
    pub tx_invalid_descs: u64,
    /// Dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Times the fill ring was empty when a frame arrived.
    pub rx_fill_ring_empty_descs: u64,
    /// Times the TX ring was empty when the kernel looked.
    pub tx_ring_empty_descs: u64,
}

/// An AF_XDP socket on one (interface, queue).
#[derive(Debug)]
pub struct XskPort {
    raw: NonNull<sys::xsk_socket>,
    rx: Box<sys::xsk_ring_cons>,
    tx: Box<sys::xsk_ring_prod>,
    fill: Box<sys::xsk_ring_prod>,
    comp: Box<sys::xsk_ring_cons>,
    fd: i32,
    zero_copy: bool,
    fill_target: u32,
    outstanding_tx: u32,
    ifname: String,
    queue: u32,
}

impl XskPort {
    /// Binds a socket to `ifname` queue `queue` on `umem`, registers it in
    /// the program's socket map, and fills its fill ring from `pool`. The
    /// kernel picks zero-copy where the driver offers it, copy mode elsewhere.
    pub fn open(
        umem: &mut Umem,
        pool: &mut UmemPool,
        map: XskMap,
        ifname: &str,
        queue: u32,
        cfg: XskConfig,
    ) -> Result<XskPort, XdpError> {
        let cname = CString::new(ifname).map_err(|_| XdpError::NoSuchInterface(ifname.into()))?;
        ifindex(ifname)?;
        let mut rx = Box::<sys::xsk_ring_cons>::default();
        let mut tx = Box::<sys::xsk_ring_prod>::default();
        let mut fill = Box::<sys::xsk_ring_prod>::default();
        let mut comp = Box::<sys::xsk_ring_cons>::default();
        // Neither XDP_ZEROCOPY nor XDP_COPY: the kernel uses zero-copy where
        // the driver supports it and copy mode elsewhere, in one attempt (a
        // failed bind would tear down the UMEM's first rings).
        let mut scfg = sys::xsk_socket_config {
            rx_size: cfg.ring_size,
            tx_size: cfg.ring_size,
            xdp_flags: 0,
            bind_flags: sys::XDP_USE_NEED_WAKEUP as u16,
            ..Default::default()
        };
        scfg.__bindgen_anon_1.libxdp_flags = sys::XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD;
        let (fill_ptr, comp_ptr): (*mut sys::xsk_ring_prod, *mut sys::xsk_ring_cons) =
            (&mut *fill, &mut *comp);
        let mut raw = std::ptr::null_mut();
        // SAFETY: every pointer is to a live, boxed (address-stable) ring
        // struct or config; `umem` outlives the socket (the worker drops
        // ports before the UMEM). libxdp copies the UMEM's own rings into
        // `fill`/`comp` for the first socket and makes new ones after.
        let rc = unsafe {
            sys::xsk_socket__create_shared(
                &mut raw,
                cname.as_ptr(),
                queue,
                umem.raw.as_ptr(),
                &mut *rx,
                &mut *tx,
                fill_ptr,
                comp_ptr,
                &scfg,
            )
        };
        if rc != 0 {
            if rc.abs() == libc::EBUSY {
                return Err(XdpError::QueueBusy {
                    ifname: ifname.into(),
                    queue,
                });
            }
            return Err(errno_err("bind AF_XDP socket", ifname, rc));
        }
        let raw = NonNull::new(raw).expect("libxdp returns a socket on success");
        // SAFETY: valid socket.
        let fd = unsafe { sys::xsk_socket__fd(raw.as_ptr()) };
        let mut port = XskPort {
            raw,
            rx,
            tx,
            fill,
            comp,
            fd,
            zero_copy: false,
            fill_target: cfg.fill_target.min(cfg.ring_size),
            outstanding_tx: 0,
            ifname: ifname.into(),
            queue,
        };
        // SAFETY: valid socket and map fd.
        let rc = unsafe { sys::xsk_socket__update_xskmap(port.raw.as_ptr(), map.0) };
        if rc != 0 {
            return Err(errno_err(
                "register the socket with the XDP program",
                ifname,
                rc,
            ));
        }
        port.zero_copy = port.query_zero_copy();
        port.refill(pool);
        Ok(port)
    }

    fn query_zero_copy(&self) -> bool {
        let mut opts = sys::xdp_options::default();
        let mut len = std::mem::size_of::<sys::xdp_options>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `opts`.
        let rc = unsafe {
            libc::getsockopt(
                self.fd,
                libc::SOL_XDP,
                sys::XDP_OPTIONS as i32,
                (&mut opts as *mut sys::xdp_options).cast(),
                &mut len,
            )
        };
        rc == 0 && opts.flags & sys::XDP_OPTIONS_ZEROCOPY != 0
    }

    /// The kernel's counters for this socket (drops, invalid descriptors,
    /// full RX ring, empty fill ring).
    pub fn statistics(&self) -> Option<XskStats> {
        let mut st = sys::xdp_statistics::default();
        let mut len = std::mem::size_of::<sys::xdp_statistics>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `st`.
        let rc = unsafe {
            libc::getsockopt(
                self.fd,
                libc::SOL_XDP,
                sys::XDP_STATISTICS as i32,
                (&mut st as *mut sys::xdp_statistics).cast(),
                &mut len,
            )
        };
        (rc == 0).then_some(XskStats {
            rx_dropped: st.rx_dropped,
            rx_invalid_descs: st.rx_invalid_descs,
            tx_invalid_descs: st.tx_invalid_descs,
            rx_ring_full: st.rx_ring_full,
            rx_fill_ring_empty_descs: st.rx_fill_ring_empty_descs,
            tx_ring_empty_descs: st.tx_ring_empty_descs,
        })
    }

    /// True if the driver gave zero-copy (copy mode elsewhere, e.g. veth).
    pub fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// The socket's file descriptor (for poll in interrupt/adaptive modes).
    pub fn fd(&self) -> i32 {
        self.fd
    }

    /// Interface and queue.
    pub fn target(&self) -> (&str, u32) {
        (&self.ifname, self.queue)
    }

    /// Tops the fill ring up to its target from `pool`.
    fn refill(&mut self, pool: &mut UmemPool) {
        // SAFETY: the fill ring belongs to this socket only.
        let free = unsafe { sys::sluice_ring_prod_free(&mut *self.fill, self.fill_target) };
        let want = free
            .min(self.fill_target)
            .min(pool.free.len() as u32)
            .min(MAX_BURST as u32 * 4);
        if want == 0 {
            return;
        }
        let mut idx = 0;
        // SAFETY: as above.
        let got = unsafe { sys::sluice_ring_prod_reserve(&mut *self.fill, want, &mut idx) };
        if got == 0 {
            return;
        }
        let start = pool.free.len() - got as usize;
        // SAFETY: `got` slots were reserved at `idx`; the addresses are
        // frames taken out of the pool (ownership moves to the kernel).
        unsafe {
            sys::sluice_fill_addrs(&mut *self.fill, idx, pool.free[start..].as_ptr(), got);
            sys::sluice_ring_prod_submit(&mut *self.fill, got);
        }
        pool.free.truncate(start);
    }

    /// Returns frames the kernel has finished sending to the pool.
    fn complete(&mut self, pool: &mut UmemPool) {
        if self.outstanding_tx == 0 {
            return;
        }
        let mut addrs = [0u64; MAX_BURST];
        let mut idx = 0;
        // SAFETY: the completion ring belongs to this socket only.
        let n = unsafe { sys::sluice_ring_cons_peek(&mut *self.comp, MAX_BURST as u32, &mut idx) };
        if n == 0 {
            return;
        }
        // SAFETY: `n` entries are readable at `idx`; `addrs` has room for them.
        unsafe {
            sys::sluice_comp_addrs(&*self.comp, idx, addrs.as_mut_ptr(), n);
            sys::sluice_ring_cons_release(&mut *self.comp, n);
        }
        let mask = !u64::from(pool.frame_size - 1);
        pool.free
            .extend(addrs[..n as usize].iter().map(|a| a & mask));
        self.outstanding_tx -= n.min(self.outstanding_tx);
    }

    fn kick(&self) {
        // SAFETY: a zero-length send on our own socket only wakes the kernel's
        // TX processing; no memory is passed.
        unsafe {
            libc::sendto(
                self.fd,
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
    }

    /// Whether the kernel wants a wakeup to send (need_wakeup on the TX ring).
    fn tx_needs_wakeup(&self) -> bool {
        // SAFETY: reads the flags word of our own mapped ring.
        unsafe { sys::sluice_ring_prod_needs_wakeup(&*self.tx) != 0 }
    }

    /// Whether the kernel wants a wakeup to refill RX (need_wakeup on the fill ring).
    pub fn rx_needs_wakeup(&self) -> bool {
        // SAFETY: reads the flags word of our own mapped ring.
        unsafe { sys::sluice_ring_prod_needs_wakeup(&*self.fill) != 0 }
    }
}

impl Port<UmemPool> for XskPort {
    fn rx_burst(&mut self, pool: &mut UmemPool, burst: &mut Burst<XdpBuf>) -> usize {
        self.complete(pool);
        self.refill(pool);
        let room = (burst.capacity() - burst.len()) as u32;
        let mut idx = 0;
        // SAFETY: the RX ring belongs to this socket only.
        let n = unsafe { sys::sluice_ring_cons_peek(&mut *self.rx, room, &mut idx) };
        if n == 0 {
            if self.rx_needs_wakeup() {
                // SAFETY: a zero-length, non-blocking receive on our own socket
                // asks the kernel to process the fill ring; no memory is passed.
                unsafe {
                    libc::recvfrom(
                        self.fd,
                        std::ptr::null_mut(),
                        0,
                        libc::MSG_DONTWAIT,
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                    )
                };
            }
            return 0;
        }
        let mut descs = [sys::xdp_desc::default(); MAX_BURST];
        // SAFETY: `n <= room <= MAX_BURST` descriptors are readable at `idx`.
        unsafe {
            sys::sluice_rx_descs(&*self.rx, idx, descs.as_mut_ptr(), n);
            sys::sluice_ring_cons_release(&mut *self.rx, n);
        }
        for d in &descs[..n as usize] {
            let offset = (d.addr & u64::from(pool.frame_size - 1)) as u32;
            let buf = pool.buf(d.addr, offset, offset + d.len);
            if let Err(b) = burst.push(buf) {
                pool.free(b);
            }
        }
        n as usize
    }

    fn tx_burst(&mut self, pool: &mut UmemPool, bufs: &mut Vec<XdpBuf>) -> usize {
        self.complete(pool);
        let mut sent = 0;
        // Reserving is all-or-nothing, so ask for no more than is free, and
        // go round until the list is empty or the ring is full.
        while !bufs.is_empty() {
            let want = bufs.len().min(MAX_BURST) as u32;
            // SAFETY: the TX ring belongs to this socket only.
            let free = unsafe { sys::sluice_ring_prod_free(&mut *self.tx, want) }.min(want);
            if free == 0 {
                break;
            }
            let mut idx = 0;
            // SAFETY: as above; `free` slots are known to be free.
            let n = unsafe { sys::sluice_ring_prod_reserve(&mut *self.tx, free, &mut idx) };
            if n == 0 {
                break;
            }
            let mut descs = [sys::xdp_desc::default(); MAX_BURST];
            for (d, b) in descs.iter_mut().zip(bufs.iter()).take(n as usize) {
                *d = sys::xdp_desc {
                    addr: b.addr + u64::from(b.start),
                    len: b.end - b.start,
                    options: 0,
                };
            }
            // SAFETY: `n` slots reserved at `idx`; the frames' ownership moves
            // to the kernel until they show up on the completion ring.
            unsafe {
                sys::sluice_tx_descs(&mut *self.tx, idx, descs.as_ptr(), n);
                sys::sluice_ring_prod_submit(&mut *self.tx, n);
            }
            bufs.drain(..n as usize);
            self.outstanding_tx += n;
            sent += n as usize;
        }
        if self.outstanding_tx > 0 && (!self.zero_copy || self.tx_needs_wakeup()) {
            self.kick();
        }
        sent
    }
}

impl Drop for XskPort {
    fn drop(&mut self) {
        // SAFETY: deletes the socket this value created; its rings (boxed
        // here) are unmapped by libxdp and not used afterwards.
        unsafe { sys::xsk_socket__delete(self.raw.as_ptr()) };
    }
}
