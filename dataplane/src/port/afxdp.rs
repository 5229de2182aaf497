//! AF_XDP ports: an XDP program that steers frames to sockets, a UMEM the
//! switch owns, and one XSK socket per (interface, queue).
//!
//! Ownership of UMEM frames is the invariant everything here rests on: at
//! any moment a frame is in exactly one place — the pool's free list, the
//! fill ring, the kernel (between fill and RX, or TX and completion), the RX
//! or completion ring, or one [`XdpBuf`]. `rx_burst` turns RX descriptors
//! into buffers and tops the fill ring up from the pool; `tx_burst` hands
//! buffers to the TX ring and first returns completed frames to the pool.
//! Sockets of one worker share its UMEM, so a frame received on one port is
//! sent on another without a copy.
//!
//! The kernel keeps owning an uplink: in `Filter` mode the XDP program
//! redirects only VXLAN to this node's port, IPIP to this node and IPv4 to
//! the pod network, and passes everything else (SSH, kubelet, etcd, BGP,
//! ARP) to the kernel. On a pod veth (`RedirectAll`) everything is ours.
//!
//! This module and `buffer` are where the dataplane's `unsafe` lives: FFI
//! into libxdp/libbpf and the raw view of UMEM frames. Every block says why
//! it is sound.
#![allow(unsafe_code)]

use crate::buffer::{BufPool, Burst, PacketBuf, MAX_BURST};
use crate::port::Port;
use sluice_bindings::sys;
use std::ffi::{CStr, CString};
use std::net::Ipv4Addr;
use std::ptr::NonNull;

/// Headroom the kernel leaves in front of received frames
/// (`XDP_PACKET_HEADROOM`); frames the switch builds get the same.
pub const FRAME_HEADROOM: u32 = sys::XDP_PACKET_HEADROOM;

/// Errors setting up AF_XDP.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// No interface of that name.
    #[error("interface `{0}` does not exist")]
    NoSuchInterface(String),
    /// The UMEM area could not be mapped.
    #[error("cannot map a UMEM of {bytes} bytes: {source}")]
    Mmap {
        /// Size asked for.
        bytes: usize,
        /// Why.
        source: std::io::Error,
    },
    /// A libxdp/libbpf call failed.
    #[error("{what} on `{ifname}`: {source}")]
    Lib {
        /// The call.
        what: &'static str,
        /// Interface.
        ifname: String,
        /// errno.
        source: std::io::Error,
    },
    /// The queue already has a socket (another process or worker).
    #[error("queue {queue} of `{ifname}` is busy (another AF_XDP socket is bound to it)")]
    QueueBusy {
        /// Interface.
        ifname: String,
        /// Queue.
        queue: u32,
    },
}

fn errno_err(what: &'static str, ifname: &str, code: i32) -> XdpError {
    let code = code.abs();
    if what == "bind AF_XDP socket" && code == libc::EBUSY {
        // Caller fills in the queue.
        return XdpError::QueueBusy {
            ifname: ifname.to_string(),
            queue: u32::MAX,
        };
    }
    XdpError::Lib {
        what,
        ifname: ifname.to_string(),
        source: std::io::Error::from_raw_os_error(code),
    }
}

/// The interface index of `ifname`.
pub fn ifindex(ifname: &str) -> Result<u32, XdpError> {
    let c = CString::new(ifname).map_err(|_| XdpError::NoSuchInterface(ifname.into()))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(XdpError::NoSuchInterface(ifname.into()));
    }
    Ok(idx)
}

/// What the XDP program on an interface redirects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Steering {
    /// Every frame (a pod's veth).
    RedirectAll,
    /// Only sluice's traffic on a shared uplink.
    Filter {
        /// This node's underlay address.
        node_ip: Ipv4Addr,
        /// The cluster pod network.
        pod_net: Ipv4Addr,
        /// Its prefix length.
        pod_len: u8,
        /// The VXLAN UDP port.
        vxlan_port: u16,
    },
}

/// How the program got attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// In the driver.
    Native,
    /// Generic (skb) XDP.
    Generic,
}

/// sluice's XDP program attached to one interface; detached on drop.
#[derive(Debug)]
pub struct XdpProgram {
    ifname: String,
    ifindex: i32,
    prog: NonNull<sys::xdp_program>,
    obj: NonNull<sys::bpf_object>,
    mode: AttachMode,
    xsks_map_fd: i32,
}

// SAFETY: the handles point to libxdp/libbpf heap objects that are not tied
// to the thread that made them; the control side moves a program between
// threads but only ever uses it from one at a time (behind a mutex).
unsafe impl Send for XdpProgram {}

/// A handle on an attached program's socket map (valid while the program is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XskMap(i32);

/// The program's name as the kernel reports it.
pub const PROGRAM_NAME: &str = "sluice_xdp";

fn prog_name(p: *const sys::xdp_program) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: `p` is a live program handle from libxdp; the name it returns
    // is a NUL-terminated string owned by the handle.
    let name = unsafe { sys::xdp_program__name(p) };
    if name.is_null() {
        return None;
    }
    // SAFETY: non-null, NUL-terminated, alive as long as `p`.
    Some(
        unsafe { CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned(),
    )
}

/// Detaches a sluice XDP program left on `ifname` (by a crash). Returns
/// whether one was found. Other programs are left alone.
pub fn detach_stale(ifname: &str) -> Result<bool, XdpError> {
    let idx = ifindex(ifname)? as i32;
    // SAFETY: plain FFI call with a valid ifindex; the result is a handle or
    // an error-encoded pointer, checked with libxdp_get_error below.
    let mp = unsafe { sys::xdp_multiprog__get_from_ifindex(idx) };
    // SAFETY: libxdp_get_error accepts any pointer libxdp returned.
    if mp.is_null() || unsafe { sys::libxdp_get_error(mp as *const _) } != 0 {
        return Ok(false);
    }
    let mut found = false;
    // SAFETY: `mp` is a valid multiprog handle until closed below.
    let legacy = unsafe { sys::xdp_multiprog__is_legacy(mp) };
    if legacy {
        // SAFETY: as above.
        let main = unsafe { sys::xdp_multiprog__main_prog(mp) };
        if prog_name(main).as_deref() == Some(PROGRAM_NAME) {
            // SAFETY: as above; detaches the legacy program from the interface.
            let rc = unsafe { sys::xdp_multiprog__detach(mp) };
            found = rc == 0;
        }
    } else {
        // SAFETY: iterating the dispatcher's component programs; a null
        // previous program starts the walk.
        let mut p = unsafe { sys::xdp_multiprog__next_prog(std::ptr::null(), mp) };
        while !p.is_null() {
            // SAFETY: `p` is a component of `mp`, valid while `mp` is.
            let next = unsafe { sys::xdp_multiprog__next_prog(p, mp) };
            if prog_name(p).as_deref() == Some(PROGRAM_NAME) {
                // SAFETY: detaching a program attached to `idx` in the mode the dispatcher uses.
                let rc = unsafe {
                    sys::xdp_program__detach(p, idx, sys::xdp_multiprog__attach_mode(mp), 0)
                };
                found |= rc == 0;
            }
            p = next;
        }
    }
    // SAFETY: closes the handle obtained above; not used afterwards.
    unsafe { sys::xdp_multiprog__close(mp) };
    Ok(found)
}

impl XdpProgram {
    /// Loads and attaches the program to `ifname` (native mode, else generic),
    /// replacing a stale copy of itself, and sets its steering.
    pub fn attach(ifname: &str, steering: Steering) -> Result<Self, XdpError> {
        let idx = ifindex(ifname)? as i32;
        detach_stale(ifname)?;
        let bytes = sluice_bindings::XDP_PROGRAM;
        // SAFETY: the buffer is a static ELF object, valid for the call;
        // null opts are allowed. The result is checked for errors.
        let obj = unsafe {
            sys::bpf_object__open_mem(bytes.as_ptr().cast(), bytes.len(), std::ptr::null())
        };
        // SAFETY: libxdp_get_error accepts any pointer libbpf/libxdp returned.
        let err = unsafe { sys::libxdp_get_error(obj as *const _) };
        let obj = NonNull::new(obj)
            .filter(|_| err == 0)
            .ok_or_else(|| errno_err("open the XDP object", ifname, err as i32))?;
        // SAFETY: `obj` is a valid object; the section name is NUL-terminated.
        let prog = unsafe {
            sys::xdp_program__from_bpf_obj(obj.as_ptr(), sluice_bindings::XDP_SECTION.as_ptr())
        };
        // SAFETY: as above.
        let err = unsafe { sys::libxdp_get_error(prog as *const _) };
        let Some(prog) = NonNull::new(prog).filter(|_| err == 0) else {
            // SAFETY: closing the object we opened; nothing else refers to it.
            unsafe { sys::bpf_object__close(obj.as_ptr()) };
            return Err(errno_err("load the XDP program", ifname, err as i32));
        };
        let mut mode = AttachMode::Native;
        // SAFETY: valid program and ifindex.
        let mut rc = unsafe {
            sys::xdp_program__attach(prog.as_ptr(), idx, sys::xdp_attach_mode_XDP_MODE_NATIVE, 0)
        };
        if rc != 0 {
            mode = AttachMode::Generic;
            // SAFETY: as above.
            rc = unsafe {
                sys::xdp_program__attach(prog.as_ptr(), idx, sys::xdp_attach_mode_XDP_MODE_SKB, 0)
            };
        }
        let mut me = XdpProgram {
            ifname: ifname.to_string(),
            ifindex: idx,
            prog,
            obj,
            mode,
            xsks_map_fd: -1,
        };
        if rc != 0 {
            me.mode = AttachMode::Generic;
            let e = errno_err("attach the XDP program", ifname, rc);
            me.close_only();
            std::mem::forget(me);
            return Err(e);
        }
        me.xsks_map_fd = me.map_fd(c"xsks_map")?;
        let cfg_fd = me.map_fd(c"config_map")?;
        let mut cfg = sys::sluice_xdp_config::default();
        match steering {
            Steering::RedirectAll => cfg.mode = sys::SLUICE_XDP_REDIRECT_ALL,
            Steering::Filter {
                node_ip,
                pod_net,
                pod_len,
                vxlan_port,
            } => {
                let mask = if pod_len == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(pod_len))
                };
                cfg.mode = sys::SLUICE_XDP_FILTER;
                cfg.node_ip = u32::from(node_ip).to_be();
                cfg.pod_net = (u32::from(pod_net) & mask).to_be();
                cfg.pod_mask = mask.to_be();
                cfg.vxlan_port = vxlan_port.to_be();
            }
        }
        let key: u32 = 0;
        // SAFETY: key and value point to properly sized values for the
        // array map (u32 key, sluice_xdp_config value).
        let rc = unsafe {
            sys::bpf_map_update_elem(
                cfg_fd,
                (&key as *const u32).cast(),
                (&cfg as *const sys::sluice_xdp_config).cast(),
                0,
            )
        };
        if rc != 0 {
            return Err(errno_err(
                "configure the XDP program",
                ifname,
                std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            ));
        }
        Ok(me)
    }

    fn map_fd(&self, name: &CStr) -> Result<i32, XdpError> {
        // SAFETY: valid object; NUL-terminated name.
        let map = unsafe { sys::bpf_object__find_map_by_name(self.obj.as_ptr(), name.as_ptr()) };
        if map.is_null() {
            return Err(errno_err(
                "find a map of the XDP program",
                &self.ifname,
                libc::ENOENT,
            ));
        }
        // SAFETY: `map` belongs to the loaded object.
        let fd = unsafe { sys::bpf_map__fd(map) };
        if fd < 0 {
            return Err(errno_err("get a map of the XDP program", &self.ifname, fd));
        }
        Ok(fd)
    }

    /// The program's socket map, for [`XskPort::open`].
    pub fn xsk_map(&self) -> XskMap {
        XskMap(self.xsks_map_fd)
    }

    /// How it was attached.
    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    /// The interface.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    fn close_only(&mut self) {
        // SAFETY: the program and object were opened by `attach` and are not
        // used after this; closing the program leaves the external object.
        unsafe {
            sys::xdp_program__close(self.prog.as_ptr());
            sys::bpf_object__close(self.obj.as_ptr());
        }
    }
}

impl Drop for XdpProgram {
    fn drop(&mut self) {
        let mode = match self.mode {
            AttachMode::Native => sys::xdp_attach_mode_XDP_MODE_NATIVE,
            AttachMode::Generic => sys::xdp_attach_mode_XDP_MODE_SKB,
        };
        // SAFETY: detaching the program this value attached, then closing it.
        unsafe { sys::xdp_program__detach(self.prog.as_ptr(), self.ifindex, mode, 0) };
        self.close_only();
    }
}

/// UMEM geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UmemConfig {
    /// Frames in the area.
    pub frames: u32,
    /// Bytes per frame (a power of two, 2048 or 4096).
    pub frame_size: u32,
    /// Fill and completion ring sizes (powers of two).
    pub ring_size: u32,
}

impl Default for UmemConfig {
    fn default() -> Self {
        UmemConfig {
            // 64 MiB: the uplink's fill ring (1024 frames), 128 per pod port,
            // and room in flight; enough for about 100 pods per worker.
            frames: 16384,
            frame_size: 4096,
            ring_size: 2048,
        }
    }
}

/// The memory area frames live in, mapped once, hugepages when available.
#[derive(Debug)]
struct Area {
    ptr: NonNull<u8>,
    len: usize,
    hugepages: bool,
}

impl Area {
    fn map(len: usize) -> Result<Area, XdpError> {
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE;
        // SAFETY: anonymous mapping of `len` bytes; no existing memory is touched.
        let huge = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                flags | libc::MAP_HUGETLB,
                -1,
                0,
            )
        };
        if huge != libc::MAP_FAILED {
            return Ok(Area {
                ptr: NonNull::new(huge.cast()).expect("mmap never returns null"),
                len,
                hugepages: true,
            });
        }
        // SAFETY: as above, ordinary pages.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, -1, 0) };
        if p == libc::MAP_FAILED {
            return Err(XdpError::Mmap {
                bytes: len,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Area {
            ptr: NonNull::new(p.cast()).expect("mmap never returns null"),
            len,
            hugepages: false,
        })
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `map`; every user
        // (the UMEM, sockets, buffers) is gone by now (see `Umem`'s drop order).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// A UMEM: the area registered with the kernel, shared by one worker's sockets.
#[derive(Debug)]
pub struct Umem {
    raw: NonNull<sys::xsk_umem>,
    // The rings libxdp made with the UMEM (the first socket adopts copies);
    // kept because libxdp holds their addresses until then.
    _fill: Box<sys::xsk_ring_prod>,
    _comp: Box<sys::xsk_ring_cons>,
    cfg: UmemConfig,
    // Declared last: dropped after everything that points into it.
    area: Area,
}

impl Umem {
    /// Maps and registers a UMEM.
    pub fn new(cfg: UmemConfig) -> Result<Umem, XdpError> {
        assert!(cfg.frame_size.is_power_of_two() && cfg.ring_size.is_power_of_two());
        let len = cfg.frames as usize * cfg.frame_size as usize;
        let area = Area::map(len)?;
        let mut fill = Box::<sys::xsk_ring_prod>::default();
        let mut comp = Box::<sys::xsk_ring_cons>::default();
        let ucfg = sys::xsk_umem_config {
            fill_size: cfg.ring_size,
            comp_size: cfg.ring_size,
            frame_size: cfg.frame_size,
            frame_headroom: 0,
            flags: 0,
        };
        let mut raw = std::ptr::null_mut();
        // SAFETY: the area is `len` bytes, page aligned, alive as long as the
        // UMEM (field order); the ring structs are boxed so their addresses,
        // which libxdp keeps, never move.
        let rc = unsafe {
            sys::xsk_umem__create(
                &mut raw,
                area.ptr.as_ptr().cast(),
                len as u64,
                &mut *fill,
                &mut *comp,
                &ucfg,
            )
        };
        if rc != 0 {
            return Err(errno_err("register the UMEM", "-", rc));
        }
        let raw =
            NonNull::new(raw).ok_or_else(|| errno_err("register the UMEM", "-", libc::ENOMEM))?;
        Ok(Umem {
            raw,
            _fill: fill,
            _comp: comp,
            cfg,
            area,
        })
    }

    /// Whether the area is on hugepages.
    pub fn hugepages(&self) -> bool {
        self.area.hugepages
    }

    /// A pool over all frames, none handed out yet.
    pub fn pool(&self) -> UmemPool {
        UmemPool {
            base: self.area.ptr,
            frame_size: self.cfg.frame_size,
            free: (0..self.cfg.frames)
                .map(|i| u64::from(i) * u64::from(self.cfg.frame_size))
                .collect(),
            total: self.cfg.frames as usize,
        }
    }
}

impl Drop for Umem {
    fn drop(&mut self) {
        // SAFETY: every socket on this UMEM has been deleted (they borrow it);
        // the area is unmapped afterwards by field order.
        unsafe { sys::xsk_umem__delete(self.raw.as_ptr()) };
    }
}

/// A packet in a UMEM frame.
#[derive(Debug)]
pub struct XdpBuf {
    frame: NonNull<u8>,
    addr: u64,
    start: u32,
    end: u32,
    frame_size: u32,
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
    base: NonNull<u8>,
    frame_size: u32,
    free: Vec<u64>,
    total: usize,
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
    fn buf(&self, addr: u64, start: u32, end: u32) -> XdpBuf {
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

/// Sleeps until one of `fds` is readable or `timeout_ms` passes (the idle
/// path of the adaptive and interrupt rx modes). Returns whether any is.
pub fn wait_readable(fds: &[i32], timeout_ms: i32) -> bool {
    let mut pfds = [libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    }; 64];
    let n = fds.len().min(pfds.len());
    for (p, &fd) in pfds.iter_mut().zip(&fds[..n]) {
        *p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
    }
    // SAFETY: `pfds[..n]` is a valid array of initialised pollfd structs.
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), n as libc::nfds_t, timeout_ms) };
    rc > 0
}
