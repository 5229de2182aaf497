//! The one trait the daemon's worker loop knows: a backend opens ports for
//! one worker over that worker's own buffer memory, and says how to wait on
//! them and what the kernel or NIC counted for them.
//!
//! A backend value belongs to one worker thread and is created there, so its
//! memory (UMEM, mempool) is local to the worker's core. The worker keeps
//! the drop order every backend relies on: ports first, then the pool, then
//! the backend (whose memory the pool's buffers point into). A port the
//! worker stops using while it runs (a removed pod) is closed with
//! [`Backend::close`], which gives the pool back every buffer the port held.

use crate::afxdp::{
    self, UmemPool, WaitSet, XdpBuf, XdpError, XskConfig, XskMap, XskPort, XskStats,
};
use crate::dpdk::{DpdkError, DpdkPort, DpdkStats, MbufPool, Mempool};
use crate::tap::TapPort;
use sluice_dataplane::buffer::{BufPool, Burst};
use sluice_dataplane::config::PortKind;
use sluice_dataplane::port::Port;
use std::fmt;
use std::sync::Arc;

/// What a worker asks its backend to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortSpec<'a> {
    /// Interface (or device) name.
    pub name: &'a str,
    /// What it connects to.
    pub kind: PortKind,
    /// The queue this worker serves (its worker index).
    pub queue: u32,
}

/// Why a backend could not open a port.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// AF_XDP set-up failed.
    #[error(transparent)]
    Xdp(#[from] XdpError),
    /// The host TAP could not be opened.
    #[error("cannot open the TAP: {0}")]
    Tap(std::io::Error),
    /// The control side has not attached the port (no socket map for it).
    #[error("`{0}` is not attached")]
    NotAttached(String),
    /// DPDK set-up failed.
    #[error(transparent)]
    Dpdk(#[from] DpdkError),
}

/// Counters the kernel or NIC keeps for one port queue, beyond the
/// switch's own: drops that happen before a packet reaches the worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PortStats {
    /// The kernel's AF_XDP socket counters, for an XSK port.
    pub xsk: Option<XskStats>,
    /// The DPDK queue's and device's counters, for a DPDK port.
    pub dpdk: Option<DpdkStats>,
}

/// A worker's buffer pool, for accounting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PoolFrames {
    /// Buffers free in the pool.
    pub free: usize,
    /// Buffers the pool has in all.
    pub total: usize,
    /// Buffers given up for good (see `UmemPool::retired`).
    pub retired: usize,
}

/// A worker's view of one backend.
pub trait Backend: fmt::Debug {
    /// The worker's buffer pool.
    type Pool: BufPool + fmt::Debug;
    /// An open port queue.
    type Port: Port<Self::Pool> + fmt::Debug;
    /// The worker's pool of free buffers (taken once, at start).
    fn pool(&self) -> Self::Pool;
    /// Opens `spec` on this worker.
    fn open(
        &mut self,
        pool: &mut Self::Pool,
        spec: &PortSpec<'_>,
    ) -> Result<Self::Port, BackendError>;
    /// Closes `port` and returns to `pool` every buffer it held (for
    /// AF_XDP: the frames in its fill, RX, TX and completion rings and in
    /// flight).
    fn close(&mut self, pool: &mut Self::Pool, port: Self::Port);
    /// Idle-turn upkeep of `port`: returns finished buffers to `pool` and
    /// wakes the kernel while frames wait to be sent. Returns whether
    /// sending is still under way (the worker does not sleep then).
    fn service(pool: &mut Self::Pool, port: &mut Self::Port) -> bool;
    /// Buffers `port` holds (in its rings or in flight).
    fn frames_held(port: &Self::Port) -> u32;
    /// The pool's free and total buffers.
    fn pool_frames(pool: &Self::Pool) -> PoolFrames;
    /// A descriptor that becomes readable when `port` has work (the idle
    /// path of the adaptive and interrupt rx modes).
    fn wait_fd(port: &Self::Port) -> Option<i32>;
    /// Sleeps until one of the set's descriptors is readable or
    /// `timeout_ms` passes.
    fn wait(set: &mut WaitSet, timeout_ms: i32) -> bool;
    /// What the kernel or NIC counted for `port`.
    fn stats(port: &Self::Port) -> PortStats;
    /// How `port` moves frames, for reports: `zero-copy`, `copy`, `tap`.
    fn mode(port: &Self::Port) -> &'static str;
    /// Whether the backend's memory sits on huge pages.
    fn hugepages(&self) -> bool;
    /// What this worker hands a new sluiced at an upgrade: its memory, the
    /// pool's accounting and every open port (`ports`: name and port).
    /// Called between two turns, when no buffer is alive. Backends that
    /// cannot hand over say why.
    fn handover(
        &self,
        _pool: &Self::Pool,
        _ports: &[(&str, &Self::Port)],
    ) -> Result<WorkerHandover, String> {
        Err("this backend cannot hand its ports over; restart sluiced instead".into())
    }
    /// Closes the ports handed over at an upgrade that this worker did not
    /// open again (a port the new configuration no longer has), returning
    /// their frames to `pool`; their names.
    fn release_unclaimed(&mut self, _pool: &mut Self::Pool) -> Vec<String> {
        Vec::new()
    }
}

/// What one worker hands over at an upgrade. Descriptors stay the
/// sender's; the receiver gets its own copies of them.
#[derive(Debug)]
pub struct WorkerHandover {
    /// The UMEM.
    pub umem: afxdp::UmemHandover,
    /// The pool's accounting.
    pub pool: afxdp::PoolState,
    /// The open ports.
    pub ports: Vec<PortHandover>,
}

/// One open port of a worker, handed over.
#[derive(Debug)]
pub struct PortHandover {
    /// The port's name.
    pub name: String,
    /// Its descriptor.
    pub fd: std::os::fd::RawFd,
    /// Its socket's accounting; `None` for a TAP queue.
    pub xsk: Option<afxdp::XskState>,
}

/// What a worker of a new sluiced takes over (the receiving side of
/// [`WorkerHandover`], descriptors now its own).
#[derive(Debug)]
pub struct WorkerInherit {
    /// The UMEM's memfd.
    pub memfd: std::os::fd::OwnedFd,
    /// The socket the UMEM is registered on.
    pub umem_fd: std::os::fd::OwnedFd,
    /// Its geometry.
    pub cfg: afxdp::UmemConfig,
    /// Whether it is on hugepages.
    pub hugepages: bool,
    /// The pool's accounting.
    pub pool: afxdp::PoolState,
    /// The ports, by name: the descriptor and, for a socket, its accounting.
    pub ports: Vec<(String, std::os::fd::OwnedFd, Option<afxdp::XskState>)>,
}

/// How often opening a busy queue is tried again (2 ms apart): long enough
/// for the kernel to release the socket of a port just removed.
const BUSY_RETRIES: u32 = 25;

/// Finds the socket map the control side registered for an interface.
pub type MapLookup = Arc<dyn Fn(&str) -> Option<XskMap> + Send + Sync>;

/// AF_XDP for kernel netdevs (uplink, pod veths) plus the host TAP, over
/// one UMEM per worker.
pub struct AfXdpBackend {
    umem: afxdp::Umem,
    maps: MapLookup,
    /// After an upgrade: the pool handed over (taken by `pool`) and the
    /// ports not yet opened again (taken by `open`).
    inherited_pool: std::cell::RefCell<Option<afxdp::PoolState>>,
    inherited_ports: Vec<(String, std::os::fd::OwnedFd, Option<afxdp::XskState>)>,
}

impl fmt::Debug for AfXdpBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AfXdpBackend")
            .field("umem", &self.umem)
            .finish_non_exhaustive()
    }
}

impl AfXdpBackend {
    /// A worker's backend: maps its UMEM (on the calling thread).
    pub fn new(cfg: afxdp::UmemConfig, maps: MapLookup) -> Result<Self, BackendError> {
        Ok(AfXdpBackend {
            umem: afxdp::Umem::new(cfg)?,
            maps,
            inherited_pool: std::cell::RefCell::new(None),
            inherited_ports: Vec::new(),
        })
    }

    /// A worker's backend over what the same worker of an earlier sluiced
    /// handed over: its UMEM (same frames), its pool's accounting, and its
    /// open ports, which `open` takes over instead of opening anew.
    pub fn inherit(w: WorkerInherit, maps: MapLookup) -> Result<Self, BackendError> {
        Ok(AfXdpBackend {
            umem: afxdp::Umem::inherit(w.memfd, w.umem_fd, w.cfg, w.hugepages)?,
            maps,
            inherited_pool: std::cell::RefCell::new(Some(w.pool)),
            inherited_ports: w.ports,
        })
    }

    /// Ports handed over and not opened again yet.
    pub fn unclaimed(&self) -> impl Iterator<Item = &str> {
        self.inherited_ports.iter().map(|(n, _, _)| n.as_str())
    }

    fn take_inherited(
        &mut self,
        name: &str,
    ) -> Option<(std::os::fd::OwnedFd, Option<afxdp::XskState>)> {
        let i = self
            .inherited_ports
            .iter()
            .position(|(n, _, _)| n == name)?;
        let (_, fd, xsk) = self.inherited_ports.swap_remove(i);
        Some((fd, xsk))
    }
}

/// A port of the AF_XDP backend.
#[derive(Debug)]
pub enum AfXdpPort {
    /// An XSK socket on a netdev queue.
    Xsk(XskPort),
    /// A queue of the host TAP.
    Tap(TapPort),
}

impl Port<UmemPool> for AfXdpPort {
    #[inline]
    fn rx_burst(&mut self, pool: &mut UmemPool, burst: &mut Burst<XdpBuf>) -> usize {
        match self {
            AfXdpPort::Xsk(p) => p.rx_burst(pool, burst),
            AfXdpPort::Tap(p) => p.rx_burst(pool, burst),
        }
    }
    #[inline]
    fn tx_burst(&mut self, pool: &mut UmemPool, bufs: &mut Vec<XdpBuf>) -> usize {
        match self {
            AfXdpPort::Xsk(p) => p.tx_burst(pool, bufs),
            AfXdpPort::Tap(p) => p.tx_burst(pool, bufs),
        }
    }
}

impl Backend for AfXdpBackend {
    type Pool = UmemPool;
    type Port = AfXdpPort;

    fn pool(&self) -> UmemPool {
        match self.inherited_pool.borrow_mut().take() {
            // Checked against the UMEM when the handover was read.
            Some(state) => {
                UmemPool::inherit(&self.umem, state).unwrap_or_else(|_| self.umem.pool())
            }
            None => self.umem.pool(),
        }
    }

    fn open(
        &mut self,
        pool: &mut UmemPool,
        spec: &PortSpec<'_>,
    ) -> Result<AfXdpPort, BackendError> {
        if let Some((fd, xsk)) = self.take_inherited(spec.name) {
            return match xsk {
                None => Ok(AfXdpPort::Tap(TapPort::inherit(spec.name, fd))),
                Some(state) => {
                    let map = (self.maps)(spec.name)
                        .ok_or_else(|| BackendError::NotAttached(spec.name.into()))?;
                    Ok(AfXdpPort::Xsk(XskPort::adopt(fd, &state, map)?))
                }
            };
        }
        if spec.kind == PortKind::Host {
            return TapPort::open(spec.name)
                .map(AfXdpPort::Tap)
                .map_err(BackendError::Tap);
        }
        let map =
            (self.maps)(spec.name).ok_or_else(|| BackendError::NotAttached(spec.name.into()))?;
        let cfg = if spec.kind == PortKind::Pod {
            XskConfig::pod()
        } else {
            XskConfig::default()
        };
        // The kernel frees a closed socket's hold on its queue a moment
        // after the close (deferred work): a port removed and added again
        // at once may find its queue busy for a few milliseconds.
        let mut tries = 0;
        let opened = loop {
            match XskPort::open(&mut self.umem, pool, map, spec.name, spec.queue, cfg) {
                Err(XdpError::QueueBusy { .. }) if tries < BUSY_RETRIES => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                r => break r,
            }
        };
        match opened {
            Ok(p) => Ok(AfXdpPort::Xsk(p)),
            Err(XdpError::QueueBusy { ifname, .. }) => Err(XdpError::QueueBusy {
                ifname,
                queue: spec.queue,
            }
            .into()),
            Err(e) => Err(e.into()),
        }
    }

    fn wait_fd(port: &AfXdpPort) -> Option<i32> {
        Some(match port {
            AfXdpPort::Xsk(x) => x.fd(),
            AfXdpPort::Tap(t) => t.fd(),
        })
    }

    fn close(&mut self, pool: &mut UmemPool, port: AfXdpPort) {
        match port {
            AfXdpPort::Xsk(x) => {
                x.close(pool);
            }
            AfXdpPort::Tap(t) => drop(t),
        }
    }

    #[inline]
    fn service(pool: &mut UmemPool, port: &mut AfXdpPort) -> bool {
        match port {
            AfXdpPort::Xsk(x) => x.service(pool),
            AfXdpPort::Tap(_) => false,
        }
    }

    fn frames_held(port: &AfXdpPort) -> u32 {
        match port {
            AfXdpPort::Xsk(x) => x.frames_held(),
            AfXdpPort::Tap(_) => 0,
        }
    }

    fn pool_frames(pool: &UmemPool) -> PoolFrames {
        PoolFrames {
            free: pool.available(),
            total: pool.total(),
            retired: pool.retired(),
        }
    }

    fn wait(set: &mut WaitSet, timeout_ms: i32) -> bool {
        set.wait(timeout_ms)
    }

    fn stats(port: &AfXdpPort) -> PortStats {
        PortStats {
            xsk: match port {
                AfXdpPort::Xsk(x) => x.statistics(),
                AfXdpPort::Tap(_) => None,
            },
            dpdk: None,
        }
    }

    fn mode(port: &AfXdpPort) -> &'static str {
        match port {
            AfXdpPort::Xsk(x) if x.zero_copy() => "zero-copy",
            AfXdpPort::Xsk(_) => "copy",
            AfXdpPort::Tap(_) => "tap",
        }
    }

    fn hugepages(&self) -> bool {
        self.umem.hugepages()
    }

    fn release_unclaimed(&mut self, pool: &mut UmemPool) -> Vec<String> {
        let mut names = Vec::new();
        for (name, fd, xsk) in std::mem::take(&mut self.inherited_ports) {
            if let Some(state) = xsk {
                // Taken over only to be closed: its frames come back.
                if let Ok(p) = XskPort::adopt(fd, &state, XskMap::NONE) {
                    p.close(pool);
                }
            }
            names.push(name);
        }
        names
    }

    fn handover(
        &self,
        pool: &UmemPool,
        ports: &[(&str, &AfXdpPort)],
    ) -> Result<WorkerHandover, String> {
        Ok(WorkerHandover {
            umem: self.umem.handover(),
            pool: pool.handover(),
            ports: ports
                .iter()
                .map(|(name, p)| match p {
                    AfXdpPort::Xsk(x) => {
                        let (fd, state) = x.handover();
                        PortHandover {
                            name: name.to_string(),
                            fd,
                            xsk: Some(state),
                        }
                    }
                    AfXdpPort::Tap(t) => PortHandover {
                        name: name.to_string(),
                        fd: t.fd(),
                        xsk: None,
                    },
                })
                .collect(),
        })
    }
}

/// Finds the DPDK port id of a started device by its switch port name.
pub type DeviceLookup = Arc<dyn Fn(&str) -> Option<u16> + Send + Sync>;

/// DPDK devices: every port is queue `w` of a device the control side
/// probed and started; buffers are mbufs from the pool of the worker's
/// NUMA socket. Workers poll: DPDK's drivers here have no RX interrupts
/// sluice uses, so a worker never sleeps on its ports (`wait` wakes only
/// for table changes).
pub struct DpdkBackend {
    pool: Arc<Mempool>,
    devices: DeviceLookup,
    hugepages: bool,
}

impl fmt::Debug for DpdkBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpdkBackend")
            .field("pool", &self.pool.name())
            .field("hugepages", &self.hugepages)
            .finish_non_exhaustive()
    }
}

impl DpdkBackend {
    /// A worker's backend over `pool` (its socket's): registers the calling
    /// thread with EAL, so the pool's per-lcore cache serves it.
    pub fn new(
        pool: Arc<Mempool>,
        devices: DeviceLookup,
        hugepages: bool,
    ) -> Result<Self, BackendError> {
        crate::dpdk::register_thread()?;
        Ok(DpdkBackend {
            pool,
            devices,
            hugepages,
        })
    }
}

impl Backend for DpdkBackend {
    type Pool = MbufPool;
    type Port = DpdkPort;

    fn pool(&self) -> MbufPool {
        MbufPool::new(self.pool.clone())
    }

    fn open(
        &mut self,
        _pool: &mut MbufPool,
        spec: &PortSpec<'_>,
    ) -> Result<DpdkPort, BackendError> {
        let port =
            (self.devices)(spec.name).ok_or_else(|| BackendError::NotAttached(spec.name.into()))?;
        Ok(DpdkPort::new(port, spec.queue as u16))
    }

    fn close(&mut self, _pool: &mut MbufPool, _port: DpdkPort) {
        // The device keeps what sits in its rings; it frees them when closed.
    }

    #[inline]
    fn service(_pool: &mut MbufPool, _port: &mut DpdkPort) -> bool {
        false
    }

    fn frames_held(_port: &DpdkPort) -> u32 {
        0
    }

    fn pool_frames(pool: &MbufPool) -> PoolFrames {
        PoolFrames {
            free: pool.mempool().available(),
            total: pool.mempool().size(),
            retired: 0,
        }
    }

    fn wait_fd(_port: &DpdkPort) -> Option<i32> {
        None
    }

    fn wait(set: &mut WaitSet, timeout_ms: i32) -> bool {
        set.wait(timeout_ms)
    }

    fn stats(port: &DpdkPort) -> PortStats {
        PortStats {
            xsk: None,
            dpdk: Some(port.stats()),
        }
    }

    fn mode(_port: &DpdkPort) -> &'static str {
        "dpdk"
    }

    fn hugepages(&self) -> bool {
        self.hugepages
    }
}
