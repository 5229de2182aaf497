//! One AF_XDP socket on one (interface, queue): its four rings, kept in
//! step with the frame-ownership invariant of the parent module. `rx_burst`
//! turns RX descriptors into buffers and tops the fill ring up to its
//! target; `tx_burst` reclaims completions, then hands buffers to the TX
//! ring and wakes the kernel; [`XskPort::service`] (idle turns) wakes it
//! again while descriptors wait; [`XskPort::close`] returns every frame the
//! socket held.
//!
//! Accounting: `fill_held` counts frames given to the fill ring and not
//! yet back on RX (submitted minus received), `outstanding_tx` frames on
//! the TX ring or in flight and not yet completed; each such frame is
//! marked with the socket's token in the pool. Descriptors the kernel
//! returns are checked against the UMEM, the frame size and that mark; a
//! bad one is dropped and counted (`bad_descs`), never turned into a buffer.
#![allow(unsafe_code)]

use super::frame::NO_HOLDER;
use super::*;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};

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
    /// RX or completion descriptors the switch dropped: outside the UMEM,
    /// past the end of their frame, or naming a frame the socket did not
    /// give the kernel (the switch's count, not the kernel's).
    pub bad_descs: u64,
    /// Frames the socket holds: in its fill ring (or received and not yet
    /// read), on its TX ring or in flight.
    pub frames_held: u64,
}

/// A socket's accounting as a worker hands it over at an upgrade (see
/// [`XskPort::handover`] and [`XskPort::adopt`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct XskState {
    /// Interface.
    pub ifname: String,
    /// Queue.
    pub queue: u32,
    /// RX and TX ring entries.
    pub ring_size: u32,
    /// Fill and completion ring entries.
    pub umem_ring: u32,
    /// Frames kept in the fill ring.
    pub fill_target: u32,
    /// The pool's mark on the socket's frames.
    pub token: u16,
    /// Frames on the fill ring or received and not yet read.
    pub fill_held: u32,
    /// Frames on the TX ring or in flight.
    pub outstanding_tx: u32,
    /// Descriptors dropped so far.
    pub bad_descs: u64,
    /// Zero-copy mode.
    pub zero_copy: bool,
    /// The socket is the one the UMEM is registered on.
    pub umem_fd: bool,
}

/// An AF_XDP socket on one (interface, queue).
#[derive(Debug)]
pub struct XskPort {
    /// The libxdp socket; `None` once deleted (and in tests over fake rings).
    raw: Option<NonNull<sys::xsk_socket>>,
    /// The rings' mappings when this process mapped them itself (a socket
    /// handed over at an upgrade, or bound on a UMEM handed over): then
    /// `fd` is ours to close.
    maps: Option<Box<sys::sluice_xsk_ring_maps>>,
    /// RX and TX ring entries.
    ring_size: u32,
    /// Fill and completion ring entries.
    umem_ring: u32,
    rx: Box<sys::xsk_ring_cons>,
    tx: Box<sys::xsk_ring_prod>,
    fill: Box<sys::xsk_ring_prod>,
    comp: Box<sys::xsk_ring_cons>,
    fd: i32,
    /// The socket uses the UMEM's own descriptor, which libxdp keeps open
    /// (and bound) after the socket is deleted.
    umem_fd: bool,
    map: Option<XskMap>,
    zero_copy: bool,
    fill_target: u32,
    /// The pool's mark on the frames this socket gave the kernel.
    token: u16,
    /// Frames submitted to the fill ring and not yet received on RX.
    fill_held: u32,
    /// Frames submitted to the TX ring and not yet completed.
    outstanding_tx: u32,
    bad_descs: u64,
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
        // A queue the device does not have is refused here, before libxdp
        // touches the UMEM's rings.
        if let Ok(Some(queues)) = crate::netdev::rx_queues(ifname) {
            if queue >= queues {
                return Err(XdpError::NoQueue {
                    ifname: ifname.into(),
                    queue,
                    queues,
                });
            }
        }
        if umem.raw.is_none() {
            return Self::open_shared(umem, pool, map, ifname, queue, cfg);
        }
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
                umem.raw.expect("checked above").as_ptr(),
                &mut *rx,
                &mut *tx,
                fill_ptr,
                comp_ptr,
                &scfg,
            )
        };
        if rc != 0 {
            // A failed first bind leaves the UMEM's own rings unmapped in
            // libxdp: register the area afresh so the next bind starts clean.
            if !umem.first_bound {
                umem.reregister()?;
            }
            if rc.abs() == libc::EBUSY {
                return Err(XdpError::QueueBusy {
                    ifname: ifname.into(),
                    queue,
                });
            }
            return Err(errno_err("bind AF_XDP socket", ifname, rc));
        }
        let raw = NonNull::new(raw).expect("libxdp returns a socket on success");
        umem.first_bound = true;
        // SAFETY: valid socket.
        let fd = unsafe { sys::xsk_socket__fd(raw.as_ptr()) };
        set_cloexec(fd);
        let mut port = XskPort {
            raw: Some(raw),
            maps: None,
            ring_size: cfg.ring_size,
            umem_ring: umem.cfg.ring_size,
            rx,
            tx,
            fill,
            comp,
            fd,
            umem_fd: fd == umem.fd(),
            map: Some(map),
            zero_copy: false,
            fill_target: cfg.fill_target.min(cfg.ring_size),
            token: pool.token(),
            fill_held: 0,
            outstanding_tx: 0,
            bad_descs: 0,
            ifname: ifname.into(),
            queue,
        };
        // SAFETY: valid socket and map fd.
        let rc = unsafe { sys::xsk_socket__update_xskmap(raw.as_ptr(), map.0) };
        if rc != 0 {
            port.close(pool);
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

    /// A socket on a UMEM handed over by an earlier process (no libxdp
    /// handle for it here): made, mapped and bound by sluice's own shim,
    /// sharing the UMEM's registration, then registered in the socket map
    /// and filled like any other.
    fn open_shared(
        umem: &mut Umem,
        pool: &mut UmemPool,
        map: XskMap,
        ifname: &str,
        queue: u32,
        cfg: XskConfig,
    ) -> Result<XskPort, XdpError> {
        let idx = ifindex(ifname)?;
        let mut rx = Box::<sys::xsk_ring_cons>::default();
        let mut tx = Box::<sys::xsk_ring_prod>::default();
        let mut fill = Box::<sys::xsk_ring_prod>::default();
        let mut comp = Box::<sys::xsk_ring_cons>::default();
        let mut maps = Box::<sys::sluice_xsk_ring_maps>::default();
        let umem_ring = umem.cfg.ring_size;
        // SAFETY: every pointer is to a live, boxed ring struct or map
        // record; `umem.fd()` is the socket the UMEM is registered on, open
        // for as long as the UMEM.
        let fd = unsafe {
            sys::sluice_xsk_bind_shared(
                umem.fd(),
                idx,
                queue,
                umem_ring,
                umem_ring,
                cfg.ring_size,
                cfg.ring_size,
                // A socket sharing a UMEM takes no flags of its own: the
                // kernel gives it the UMEM's first socket's (need-wakeup,
                // copy or zero-copy).
                0,
                &mut *fill,
                &mut *comp,
                &mut *rx,
                &mut *tx,
                &mut *maps,
            )
        };
        if fd < 0 {
            if fd.abs() == libc::EBUSY {
                return Err(XdpError::QueueBusy {
                    ifname: ifname.into(),
                    queue,
                });
            }
            return Err(errno_err("bind AF_XDP socket", ifname, fd));
        }
        let mut port = XskPort {
            raw: None,
            maps: Some(maps),
            ring_size: cfg.ring_size,
            umem_ring,
            rx,
            tx,
            fill,
            comp,
            fd,
            umem_fd: false,
            map: Some(map),
            zero_copy: false,
            fill_target: cfg.fill_target.min(cfg.ring_size),
            token: pool.token(),
            fill_held: 0,
            outstanding_tx: 0,
            bad_descs: 0,
            ifname: ifname.into(),
            queue,
        };
        if let Err(e) = port.register(map) {
            port.close(pool);
            return Err(e);
        }
        port.zero_copy = port.query_zero_copy();
        port.refill(pool);
        Ok(port)
    }

    /// Puts this socket in `map` at its queue.
    fn register(&self, map: XskMap) -> Result<(), XdpError> {
        let key = self.queue;
        let fd = self.fd;
        // SAFETY: key and value are a u32 and an i32 on the stack, the
        // sizes of a socket map's key and value.
        let rc = unsafe {
            sys::bpf_map_update_elem(
                map.0,
                (&key as *const u32).cast(),
                (&fd as *const i32).cast(),
                0,
            )
        };
        if rc != 0 {
            return Err(errno_err(
                "register the socket with the XDP program",
                &self.ifname,
                std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            ));
        }
        Ok(())
    }

    /// What an upgrade hands the next process for this socket: its
    /// descriptor (still this process's) and the accounting that goes with
    /// its rings. Only between two turns of the worker: nothing reserved or
    /// peeked is left unsubmitted or unreleased then.
    pub fn handover(&self) -> (RawFd, XskState) {
        (
            self.fd,
            XskState {
                ifname: self.ifname.clone(),
                queue: self.queue,
                ring_size: self.ring_size,
                umem_ring: self.umem_ring,
                fill_target: self.fill_target,
                token: self.token,
                fill_held: self.fill_held,
                outstanding_tx: self.outstanding_tx,
                bad_descs: self.bad_descs,
                zero_copy: self.zero_copy,
                umem_fd: self.umem_fd,
            },
        )
    }

    /// Takes over a socket an earlier process handed over: maps its four
    /// rings again (they go on where that process left them) and carries on
    /// its accounting; `pool` must be the one handed over with it
    /// ([`UmemPool::inherit`]), which still marks the socket's frames.
    pub fn adopt(fd: OwnedFd, state: &XskState, map: XskMap) -> Result<XskPort, XdpError> {
        let mut rx = Box::<sys::xsk_ring_cons>::default();
        let mut tx = Box::<sys::xsk_ring_prod>::default();
        let mut fill = Box::<sys::xsk_ring_prod>::default();
        let mut comp = Box::<sys::xsk_ring_cons>::default();
        let mut maps = Box::<sys::sluice_xsk_ring_maps>::default();
        // SAFETY: `fd` is a bound AF_XDP socket we own; every pointer is to a
        // live, boxed ring struct or map record.
        let rc = unsafe {
            sys::sluice_xsk_map_rings(
                fd.as_raw_fd(),
                state.umem_ring,
                state.umem_ring,
                state.ring_size,
                state.ring_size,
                &mut *fill,
                &mut *comp,
                &mut *rx,
                &mut *tx,
                &mut *maps,
            )
        };
        if rc != 0 {
            if rc.abs() == libc::EBUSY {
                return Err(XdpError::Lib {
                    what: "map a handed-over socket's rings (this kernel refuses to map a bound socket's rings again; Linux 6.5 and later allow it)",
                    ifname: state.ifname.clone(),
                    source: std::io::Error::from_raw_os_error(libc::EBUSY),
                });
            }
            return Err(errno_err(
                "map a handed-over socket's rings",
                &state.ifname,
                rc,
            ));
        }
        Ok(XskPort {
            raw: None,
            maps: Some(maps),
            ring_size: state.ring_size,
            umem_ring: state.umem_ring,
            rx,
            tx,
            fill,
            comp,
            fd: fd.into_raw_fd(),
            umem_fd: state.umem_fd,
            map: Some(map),
            zero_copy: state.zero_copy,
            fill_target: state.fill_target,
            token: state.token,
            fill_held: state.fill_held,
            outstanding_tx: state.outstanding_tx,
            bad_descs: state.bad_descs,
            ifname: state.ifname.clone(),
            queue: state.queue,
        })
    }

    /// Whether this kernel lets this process map the rings of a socket
    /// handed over (Linux 6.5 and later do): maps them through a copy of
    /// the descriptor and unmaps them again, touching no ring.
    pub fn probe_adopt(fd: &OwnedFd, state: &XskState) -> Result<(), XdpError> {
        let copy = fd.try_clone().map_err(|e| XdpError::Lib {
            what: "copy a handed-over socket's descriptor",
            ifname: state.ifname.clone(),
            source: e,
        })?;
        let probe = Self::adopt(copy, state, XskMap::NONE)?;
        drop(probe);
        Ok(())
    }

    /// Unmaps the rings and closes the descriptor of a socket this process
    /// mapped itself (its frames are then the kernel's to let go of).
    fn release_own(&mut self) {
        if let Some(mut maps) = self.maps.take() {
            // SAFETY: unmaps what `sluice_xsk_map_rings` mapped for this
            // socket; the ring structs pointing into it are not used again.
            unsafe { sys::sluice_xsk_unmap_rings(&mut *maps) };
            // SAFETY: the descriptor is ours (adopted or bound by the shim).
            unsafe { libc::close(self.fd) };
            self.fd = -1;
        }
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
    /// full RX ring, empty fill ring), with the switch's own: descriptors
    /// it dropped and frames the socket holds.
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
            bad_descs: self.bad_descs,
            frames_held: u64::from(self.frames_held()),
        })
    }

    /// Frames this socket holds: in its fill ring (or received and not yet
    /// read), on its TX ring or in flight.
    pub fn frames_held(&self) -> u32 {
        self.fill_held + self.outstanding_tx
    }

    /// Descriptors the switch dropped as bad (see the module docs).
    pub fn bad_descs(&self) -> u64 {
        self.bad_descs
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

    /// Tops the fill ring up to its target from `pool`: the frames it
    /// holds (submitted, not yet received) are counted, not its free slots.
    fn refill(&mut self, pool: &mut UmemPool) {
        let want = self
            .fill_target
            .saturating_sub(self.fill_held)
            .min(pool.free.len() as u32);
        if want == 0 {
            return;
        }
        // SAFETY: the fill ring belongs to this socket only.
        let free = unsafe { sys::sluice_ring_prod_free(&mut *self.fill, want) }.min(want);
        if free == 0 {
            return;
        }
        let mut idx = 0;
        // SAFETY: as above; `free` slots are known to be free.
        let got = unsafe { sys::sluice_ring_prod_reserve(&mut *self.fill, free, &mut idx) };
        if got == 0 {
            return;
        }
        let start = pool.free.len() - got as usize;
        for &a in &pool.free[start..] {
            pool.holder[(a >> pool.shift) as usize] = self.token;
        }
        // SAFETY: `got` slots were reserved at `idx`; the addresses are
        // frames taken out of the pool (ownership moves to the kernel).
        unsafe {
            sys::sluice_fill_addrs(&mut *self.fill, idx, pool.free[start..].as_ptr(), got);
            sys::sluice_ring_prod_submit(&mut *self.fill, got);
        }
        pool.free.truncate(start);
        self.fill_held += got;
    }

    /// Returns frames the kernel has finished sending to the pool.
    fn complete(&mut self, pool: &mut UmemPool) {
        while self.outstanding_tx > 0 {
            let mut addrs = [0u64; MAX_BURST];
            let mut idx = 0;
            // SAFETY: the completion ring belongs to this socket only.
            let n =
                unsafe { sys::sluice_ring_cons_peek(&mut *self.comp, MAX_BURST as u32, &mut idx) };
            if n == 0 {
                return;
            }
            // SAFETY: `n` entries are readable at `idx`; `addrs` has room for them.
            unsafe {
                sys::sluice_comp_addrs(&*self.comp, idx, addrs.as_mut_ptr(), n);
                sys::sluice_ring_cons_release(&mut *self.comp, n);
            }
            for &a in &addrs[..n as usize] {
                match pool.frame_index(a) {
                    Some(i) if pool.holder[i] == self.token && self.outstanding_tx > 0 => {
                        pool.holder[i] = NO_HOLDER;
                        pool.free.push((i as u64) << pool.shift);
                        self.outstanding_tx -= 1;
                    }
                    _ => self.bad_descs += 1,
                }
            }
            if n < MAX_BURST as u32 {
                return;
            }
        }
    }

    /// Wakes the kernel's TX processing. Returns false when the socket can
    /// no longer send (its interface went down or away: `ENXIO`,
    /// `ENETDOWN`, `ENODEV`), so the worker does not spin on it.
    fn kick(&self) -> bool {
        // SAFETY: a zero-length send on our own socket only wakes the kernel's
        // TX processing; no memory is passed. It fails when the interface is
        // gone: the descriptors stay marked as this socket's and come back
        // to the pool when it closes.
        let rc = unsafe {
            libc::sendto(
                self.fd,
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        rc >= 0
            || !matches!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::ENXIO | libc::ENETDOWN | libc::ENODEV)
            )
    }

    /// Whether descriptors wait on the TX ring (the kernel has not consumed them).
    pub fn tx_pending(&self) -> bool {
        // SAFETY: `consumer` points at the ring's consumer index, mapped as
        // long as the socket and written by the kernel only; it is read
        // atomically, as libxdp does.
        let cons = unsafe { std::sync::atomic::AtomicU32::from_ptr(self.tx.consumer) }
            .load(std::sync::atomic::Ordering::Acquire);
        cons != self.tx.cached_prod
    }

    /// Idle-turn upkeep: returns completed frames and wakes the kernel
    /// again while descriptors wait on the TX ring (copy mode sends at
    /// most 32 per wakeup). Returns whether it woke the kernel, i.e.
    /// whether sending is still under way (false for a socket whose
    /// interface is gone: its descriptors wait for `close`).
    pub fn service(&mut self, pool: &mut UmemPool) -> bool {
        self.complete(pool);
        if self.tx_pending() && (!self.zero_copy || self.tx_needs_wakeup()) {
            return self.kick();
        }
        false
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

    /// Closes the socket and returns to `pool` every frame it held: in its
    /// fill ring, RX ring, TX ring, in flight and on its completion ring
    /// (all marked with its token). Closing the descriptor unbinds the
    /// socket (the kernel waits for in-flight users, `synchronize_net`)
    /// and takes it out of the socket map, so the kernel no longer touches
    /// those frames. Returns how many came back.
    ///
    /// The one exception is the socket libxdp bound on the UMEM's own
    /// descriptor (a worker's first), which libxdp keeps open until the
    /// UMEM goes: its map entry is deleted here, and the frames it held
    /// are retired (counted in [`UmemPool::retired`]), never reused.
    pub fn close(mut self, pool: &mut UmemPool) -> usize {
        self.complete(pool);
        if self.maps.is_some() {
            if self.umem_fd {
                self.unmap_queue();
            }
            self.release_own();
            return if self.umem_fd {
                pool.retire(self.token);
                0
            } else {
                pool.reclaim(self.token)
            };
        }
        let Some(raw) = self.raw.take() else {
            return pool.reclaim(self.token);
        };
        if self.umem_fd {
            self.unmap_queue();
        }
        // SAFETY: deletes the socket this value created; its rings (boxed
        // here) are unmapped by libxdp and not used afterwards.
        unsafe { sys::xsk_socket__delete(raw.as_ptr()) };
        if self.umem_fd {
            pool.retire(self.token);
            0
        } else {
            pool.reclaim(self.token)
        }
    }
}

/// Marks `fd` close-on-exec: libxdp makes its sockets without the flag, and
/// a child process (an `ip` command) would otherwise keep a closed port's
/// socket bound, and its queue busy, for as long as it lives.
pub(super) fn set_cloexec(fd: i32) {
    // SAFETY: fcntl on a descriptor we own; only its flags change.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        }
    }
}

impl Port<UmemPool> for XskPort {
    fn rx_burst(&mut self, pool: &mut UmemPool, burst: &mut Burst<XdpBuf>) -> usize {
        self.complete(pool);
        self.refill(pool);
        let room = (burst.capacity() - burst.len()).min(MAX_BURST) as u32;
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
        let mask = u64::from(pool.frame_size - 1);
        let mut got = 0;
        for d in &descs[..n as usize] {
            // Only a frame this socket gave the fill ring, inside the UMEM.
            let i = match pool.frame_index(d.addr) {
                Some(i) if pool.holder[i] == self.token && self.fill_held > 0 => i,
                _ => {
                    self.bad_descs += 1;
                    continue;
                }
            };
            pool.holder[i] = NO_HOLDER;
            self.fill_held -= 1;
            let offset = (d.addr & mask) as u32;
            if u64::from(offset) + u64::from(d.len) > u64::from(pool.frame_size) {
                // Ours, but the packet would run past the frame: drop it,
                // keep the frame.
                self.bad_descs += 1;
                pool.free.push((i as u64) << pool.shift);
                continue;
            }
            let buf = pool.buf(d.addr, offset, offset + d.len);
            match burst.push(buf) {
                Ok(()) => got += 1,
                Err(b) => pool.free(b),
            }
        }
        got
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
                pool.holder[(b.addr >> pool.shift) as usize] = self.token;
            }
            // SAFETY: `n` slots reserved at `idx`; the frames' ownership moves
            // to the kernel until they show up on the completion ring.
            unsafe {
                sys::sluice_tx_descs(&mut *self.tx, idx, descs.as_ptr(), n);
                sys::sluice_ring_prod_submit(&mut *self.tx, n);
            }
            // The frames are the kernel's now (marked above): the buffers go
            // without returning to the pool.
            bufs.drain(..n as usize);
            self.outstanding_tx += n;
            sent += n as usize;
        }
        if sent > 0 && (!self.zero_copy || self.tx_needs_wakeup()) {
            let _ = self.kick();
        }
        sent
    }
}

impl XskPort {
    /// Deletes this socket's entry in its program's socket map.
    fn unmap_queue(&self) {
        if let Some(map) = self.map {
            let key = self.queue;
            // SAFETY: deletes our queue's entry of a live socket map; the
            // key is a u32 on the stack.
            unsafe {
                sys::bpf_map_delete_elem(map.0, (&key as *const u32).cast());
            }
        }
    }
}

impl Drop for XskPort {
    fn drop(&mut self) {
        self.release_own();
        // Dropped without `close` (the worker's own exit, with its pool and
        // UMEM going too): the frames it held are not returned.
        if let Some(raw) = self.raw.take() {
            // SAFETY: deletes the socket this value created; its rings (boxed
            // here) are unmapped by libxdp and not used afterwards.
            unsafe { sys::xsk_socket__delete(raw.as_ptr()) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake::{self, FakeKernel};
    use super::*;
    use sluice_dataplane::buffer::PacketBuf;

    /// A socket over a fake kernel's rings (fill and completion rings of
    /// the UMEM's 2048 slots, as libxdp makes them for every socket).
    fn port(k: &mut FakeKernel, cfg: XskConfig, pool: &mut UmemPool) -> XskPort {
        let (rx, tx, fill, comp) = k.rings();
        let mut p = XskPort {
            raw: None,
            maps: None,
            ring_size: cfg.ring_size,
            umem_ring: 2048,
            rx,
            tx,
            fill,
            comp,
            fd: -1,
            umem_fd: false,
            map: None,
            zero_copy: false,
            fill_target: cfg.fill_target.min(cfg.ring_size),
            token: pool.token(),
            fill_held: 0,
            outstanding_tx: 0,
            bad_descs: 0,
            ifname: "fake".into(),
            queue: 0,
        };
        p.refill(pool);
        p
    }

    fn close(p: XskPort, pool: &mut UmemPool) {
        p.close(pool);
    }

    /// Finding: "fill rings take the whole UMEM". 8 idle pods and the
    /// uplink on one worker: every fill ring stays at its target, and the
    /// uplink keeps receiving.
    #[test]
    fn idle_fill_rings_stay_at_their_target_and_the_uplink_keeps_receiving() {
        let mut mem = Vec::new();
        let mut pool = fake::pool(16384, &mut mem);
        let mut kernels: Vec<Box<FakeKernel>> = Vec::new();
        let mut ports = Vec::new();
        kernels.push(FakeKernel::new(2048, 2048));
        ports.push(port(&mut kernels[0], XskConfig::default(), &mut pool));
        for i in 1..=8 {
            kernels.push(FakeKernel::new(512, 2048));
            ports.push(port(&mut kernels[i], XskConfig::pod(), &mut pool));
        }
        let mut burst: Burst<XdpBuf> = Burst::new(MAX_BURST);
        let mut received = 0u32;
        let mut dropped = 0u32;
        for _turn in 0..1000 {
            for _ in 0..64 {
                if kernels[0].receive(1000) {
                    // delivered
                } else {
                    dropped += 1;
                }
            }
            for (i, p) in ports.iter_mut().enumerate() {
                let n = p.rx_burst(&mut pool, &mut burst);
                if i == 0 {
                    received += n as u32;
                }
                // Forward the uplink's frames to pod 1.
                let mut out: Vec<XdpBuf> = burst.drain().collect();
                if !out.is_empty() {
                    kernels[1].transmit(u32::MAX);
                }
                while let Some(b) = out.pop() {
                    pool.free(b);
                }
            }
        }
        for (i, k) in kernels.iter().enumerate() {
            let target = if i == 0 { 1024 } else { 128 };
            assert!(
                k.fill_level() <= target,
                "port {i}'s fill ring holds {} frames, its target is {target}",
                k.fill_level()
            );
        }
        for (i, k) in kernels.iter().enumerate().skip(1) {
            assert_eq!(k.fill_level(), 128, "idle pod {i} keeps exactly its target");
        }
        assert_eq!(dropped, 0, "the uplink never found its fill ring empty");
        assert_eq!(
            received, 64_000,
            "every frame offered to the uplink came through"
        );
        for p in ports {
            close(p, &mut pool);
        }
    }

    /// Finding: "removing a port leaks its frames". Frames in its fill
    /// ring, RX ring, unsent TX descriptors and completion ring all come
    /// back to the pool when it closes.
    #[test]
    fn closing_a_port_returns_every_frame_it_held() {
        let mut mem = Vec::new();
        let mut pool = fake::pool(4096, &mut mem);
        let start = pool.available();
        let mut k = FakeKernel::new(512, 2048);
        let mut p = port(&mut k, XskConfig::pod(), &mut pool);
        // Some frames wait on RX, some TX descriptors are unsent, some
        // completions unread.
        for _ in 0..10 {
            assert!(k.receive(100));
        }
        let mut bufs: Vec<XdpBuf> = (0..40).map(|_| pool.alloc().unwrap()).collect();
        for b in &mut bufs {
            b.append(60);
        }
        assert_eq!(p.tx_burst(&mut pool, &mut bufs), 40);
        assert_eq!(k.transmit(15), 15);
        assert!(pool.available() < start);
        close(p, &mut pool);
        assert_eq!(
            pool.available(),
            start,
            "every frame the socket held is back in the pool"
        );
    }

    /// RX descriptors outside the UMEM, or longer than a frame, are
    /// dropped and counted, never turned into buffers.
    #[test]
    fn bad_rx_descriptors_are_dropped_and_counted() {
        let mut mem = Vec::new();
        let mut pool = fake::pool(1024, &mut mem);
        let mut k = FakeKernel::new(512, 2048);
        let mut p = port(&mut k, XskConfig::pod(), &mut pool);
        k.put_rx(sys::xdp_desc {
            addr: 1024 * 4096 + 256,
            len: 64,
            options: 0,
        });
        k.put_rx(sys::xdp_desc {
            addr: 4096 + 256,
            len: 4000,
            options: 0,
        });
        let mut burst: Burst<XdpBuf> = Burst::new(MAX_BURST);
        let n = p.rx_burst(&mut pool, &mut burst);
        assert_eq!(
            burst.len(),
            0,
            "no buffer is made of a descriptor outside the UMEM or past its frame (rx_burst returned {n})"
        );
        assert_eq!(n, 0);
        assert_eq!(p.bad_descs(), 2, "both are counted");
        // One of ours, too long for its frame: dropped, the frame kept.
        let before = pool.available();
        assert!(k.receive(4000));
        assert_eq!(p.rx_burst(&mut pool, &mut burst), 0);
        assert_eq!(p.bad_descs(), 3);
        assert_eq!(
            pool.available(),
            before + 1,
            "the frame went back to the pool"
        );
        assert!(k.receive(100));
        assert_eq!(
            p.rx_burst(&mut pool, &mut burst),
            1,
            "good ones still come through"
        );
        for b in burst.drain() {
            pool.free(b);
        }
        close(p, &mut pool);
        assert_eq!(pool.available(), 1024, "nothing leaked");
    }

    /// Finding: copy mode sends at most 32 descriptors per wakeup. One
    /// burst of 256 and no traffic after it: idle-turn upkeep keeps waking
    /// the kernel until all 256 are sent, and every frame comes back.
    #[test]
    fn a_256_packet_burst_is_all_sent_without_follow_up_traffic() {
        let mut mem = Vec::new();
        let mut pool = fake::pool(2048, &mut mem);
        let mut k = FakeKernel::new(512, 2048);
        let mut p = port(&mut k, XskConfig::pod(), &mut pool);
        let start = pool.available();
        let mut bufs: Vec<XdpBuf> = (0..256).map(|_| pool.alloc().unwrap()).collect();
        for b in &mut bufs {
            b.append(60);
        }
        assert_eq!(p.tx_burst(&mut pool, &mut bufs), 256);
        // The wakeup tx_burst gave: copy mode sends 32.
        let mut sent = k.transmit(32);
        assert!(p.tx_pending());
        // Idle turns: each wakeup sends 32 more.
        let mut turns = 0;
        while p.service(&mut pool) {
            sent += k.transmit(32);
            turns += 1;
            assert!(turns < 100, "upkeep never stops waking the kernel");
        }
        assert_eq!(sent, 256, "every descriptor of the burst was sent");
        assert!(!p.tx_pending());
        p.service(&mut pool);
        assert_eq!(p.frames_held(), 128, "only the fill ring's frames are out");
        assert_eq!(pool.available(), start, "every completion came back");
        close(p, &mut pool);
        assert_eq!(pool.available(), 2048);
    }
}
