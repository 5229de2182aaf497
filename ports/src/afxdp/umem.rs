//! The UMEM: one memory area per worker, registered with the kernel and
//! shared by the worker's sockets, so a frame received on one port is sent
//! on another without a copy. Hugepages when reserved, ordinary pages
//! otherwise. The area is a memfd mapped shared, so an upgrade hands the
//! very frames (and the sockets' rings over them) to the next process. The area outlives every socket and buffer made from it (drop
//! order in the worker: ports, pool, UMEM).
#![allow(unsafe_code)]

use super::*;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// UMEM geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

/// The memory area frames live in: a memfd mapped shared (hugepages when
/// available), so an upgrade can hand the same frames to a new process.
#[derive(Debug)]
pub(super) struct Area {
    pub(super) ptr: NonNull<u8>,
    pub(super) len: usize,
    pub(super) hugepages: bool,
    pub(super) memfd: OwnedFd,
}

impl Area {
    fn map(len: usize) -> Result<Area, XdpError> {
        match Self::map_memfd(len, libc::MFD_HUGETLB) {
            Ok(a) => Ok(a),
            Err(_) => Self::map_memfd(len, 0),
        }
    }

    fn map_memfd(len: usize, flags: libc::c_uint) -> Result<Area, XdpError> {
        let err = |source| XdpError::Mmap { bytes: len, source };
        // SAFETY: the name is a NUL-terminated literal; the result is a new
        // descriptor or -1.
        let fd = unsafe { libc::memfd_create(c"sluice-umem".as_ptr(), libc::MFD_CLOEXEC | flags) };
        if fd < 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        // SAFETY: a descriptor memfd_create just returned, owned from here.
        let memfd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sizing the memfd we own.
        if unsafe { libc::ftruncate(memfd.as_raw_fd(), len as libc::off_t) } != 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        Self::map_fd(memfd, len, flags & libc::MFD_HUGETLB != 0)
    }

    /// Maps `len` bytes of an existing area's memfd (handed over by the
    /// process that made it).
    pub(super) fn map_fd(memfd: OwnedFd, len: usize, hugepages: bool) -> Result<Area, XdpError> {
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        let flags = libc::MAP_SHARED | libc::MAP_POPULATE;
        // SAFETY: a shared mapping of `len` bytes of a memfd we hold; no
        // existing memory is touched.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, memfd.as_raw_fd(), 0) };
        if p == libc::MAP_FAILED {
            return Err(XdpError::Mmap {
                bytes: len,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Area {
            ptr: NonNull::new(p.cast()).expect("mmap never returns null"),
            len,
            hugepages,
            memfd,
        })
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `map_fd`; every user
        // (the UMEM, sockets, buffers) is gone by now (see `Umem`'s drop order).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// A UMEM: the area registered with the kernel, shared by one worker's sockets.
#[derive(Debug)]
pub struct Umem {
    /// libxdp's handle; `None` for a UMEM handed over by another process,
    /// whose registration lives on in `inherited_fd`.
    pub(super) raw: Option<NonNull<sys::xsk_umem>>,
    /// The socket the area is registered on, when handed over.
    pub(super) inherited_fd: Option<OwnedFd>,
    // The rings libxdp made with the UMEM (the first socket adopts copies);
    // kept because libxdp holds their addresses until then.
    pub(super) _fill: Box<sys::xsk_ring_prod>,
    pub(super) _comp: Box<sys::xsk_ring_cons>,
    pub(super) cfg: UmemConfig,
    /// Whether a socket has been bound on it (libxdp hands the UMEM's own
    /// rings to the first one).
    pub(super) first_bound: bool,
    // Declared last: dropped after everything that points into it.
    pub(super) area: Area,
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
        // SAFETY: a valid UMEM handle.
        socket::set_cloexec(unsafe { sys::xsk_umem__fd(raw.as_ptr()) });
        Ok(Umem {
            raw: Some(raw),
            inherited_fd: None,
            _fill: fill,
            _comp: comp,
            cfg,
            first_bound: false,
            area,
        })
    }

    /// Registers the same area afresh (new descriptor, new fill and
    /// completion rings) after a first bind failed: libxdp unmapped the
    /// UMEM's rings on that failure, and a later bind would write into them.
    /// No socket is bound, so the kernel holds none of the area's frames.
    pub(super) fn reregister(&mut self) -> Result<(), XdpError> {
        debug_assert!(!self.first_bound);
        let mut fill = Box::<sys::xsk_ring_prod>::default();
        let mut comp = Box::<sys::xsk_ring_cons>::default();
        let ucfg = sys::xsk_umem_config {
            fill_size: self.cfg.ring_size,
            comp_size: self.cfg.ring_size,
            frame_size: self.cfg.frame_size,
            frame_headroom: 0,
            flags: 0,
        };
        let len = self.cfg.frames as usize * self.cfg.frame_size as usize;
        let mut raw = std::ptr::null_mut();
        // SAFETY: as in `new`: the same live, page-aligned area of `len`
        // bytes; boxed ring structs whose addresses never move.
        let rc = unsafe {
            sys::xsk_umem__create(
                &mut raw,
                self.area.ptr.as_ptr().cast(),
                len as u64,
                &mut *fill,
                &mut *comp,
                &ucfg,
            )
        };
        if rc != 0 {
            return Err(errno_err("register the UMEM again", "-", rc));
        }
        let raw = NonNull::new(raw)
            .ok_or_else(|| errno_err("register the UMEM again", "-", libc::ENOMEM))?;
        // SAFETY: a valid UMEM handle.
        socket::set_cloexec(unsafe { sys::xsk_umem__fd(raw.as_ptr()) });
        if let Some(old) = self.raw {
            // SAFETY: the old handle has no socket (the only bind failed); the
            // new one is registered, so the area stays in use.
            unsafe { sys::xsk_umem__delete(old.as_ptr()) };
        }
        self.raw = Some(raw);
        self._fill = fill;
        self._comp = comp;
        Ok(())
    }

    /// Whether the area is on hugepages.
    pub fn hugepages(&self) -> bool {
        self.area.hugepages
    }

    /// A pool over all frames, none handed out yet.
    pub fn pool(&self) -> UmemPool {
        UmemPool::new(self.area.ptr, self.cfg.frame_size, self.cfg.frames)
    }

    /// The UMEM's geometry.
    pub fn config(&self) -> UmemConfig {
        self.cfg
    }

    /// The descriptor libxdp made with the UMEM; the first socket bound on
    /// it uses it and libxdp never closes it while the UMEM lives.
    pub(super) fn fd(&self) -> i32 {
        match (self.raw, &self.inherited_fd) {
            // SAFETY: a valid UMEM handle.
            (Some(raw), _) => unsafe { sys::xsk_umem__fd(raw.as_ptr()) },
            (None, Some(fd)) => fd.as_raw_fd(),
            (None, None) => -1,
        }
    }

    /// What an upgrade hands the next process: the area's memfd and the
    /// socket the area is registered on (both stay this process's).
    pub fn handover(&self) -> UmemHandover {
        UmemHandover {
            memfd: self.area.memfd.as_raw_fd(),
            umem_fd: self.fd(),
            cfg: self.cfg,
            hugepages: self.area.hugepages,
        }
    }

    /// The UMEM an earlier process registered: maps its area from `memfd`
    /// and keeps `umem_fd` (the socket it is registered on) open. Sockets
    /// are then adopted ([`XskPort::adopt`]) or bound to share it.
    pub fn inherit(
        memfd: OwnedFd,
        umem_fd: OwnedFd,
        cfg: UmemConfig,
        hugepages: bool,
    ) -> Result<Umem, XdpError> {
        let len = cfg.frames as usize * cfg.frame_size as usize;
        let area = Area::map_fd(memfd, len, hugepages)?;
        Ok(Umem {
            raw: None,
            inherited_fd: Some(umem_fd),
            _fill: Box::default(),
            _comp: Box::default(),
            cfg,
            first_bound: true,
            area,
        })
    }
}

/// A UMEM as a worker hands it over at an upgrade (descriptors stay the
/// sender's; the receiver gets its own copies).
#[derive(Debug, Clone, Copy)]
pub struct UmemHandover {
    /// The area's memfd.
    pub memfd: RawFd,
    /// The socket the area is registered on.
    pub umem_fd: RawFd,
    /// Its geometry.
    pub cfg: UmemConfig,
    /// Whether the area is on hugepages.
    pub hugepages: bool,
}

impl Drop for Umem {
    fn drop(&mut self) {
        if let Some(raw) = self.raw {
            // SAFETY: every socket on this UMEM has been deleted (they borrow
            // it); the area is unmapped afterwards by field order.
            unsafe { sys::xsk_umem__delete(raw.as_ptr()) };
        }
    }
}
