//! AF_XDP ports: an XDP program that steers frames to sockets, a UMEM the
//! switch owns, and one XSK socket per (interface, queue).
//!
//! Ownership of UMEM frames is the invariant everything here rests on: at
//! any moment a frame is in exactly one place — the pool's free list, the
//! fill ring, the kernel (between fill and RX, or TX and completion), the RX
//! or completion ring, or one [`XdpBuf`]. `rx_burst` turns RX descriptors
//! into buffers and tops the fill ring up from the pool; `tx_burst` hands
//! buffers to the TX ring and first returns completed frames to the pool.
//!
//! Accounting keeps the invariant checkable and makes closing safe:
//!
//! - every frame the kernel has (fill, RX, TX, in flight, completion) is
//!   marked in the pool with the token of the socket that gave it
//!   ([`UmemPool`]); the frames a socket holds are `fill_held` (submitted
//!   to the fill ring, not yet received) plus `outstanding_tx` (submitted
//!   to TX, not yet completed), and `free + Σ held + buffers alive +
//!   retired == total` at all times;
//! - a fill ring is topped up to its target counting the frames it holds,
//!   never to its free slots (an idle pod keeps exactly its 128);
//! - a descriptor the kernel returns is used only if it is inside the
//!   UMEM, fits its frame, and names a frame this socket gave the kernel;
//!   otherwise it is dropped and counted, never turned into a buffer;
//! - [`XskPort::close`] returns every frame still marked with the socket's
//!   token once the kernel has let go of the socket (see there for the
//!   worker's first socket, which libxdp keeps open).
//!
//! Sockets of one worker share its UMEM, so a frame received on one port is
//! sent on another without a copy.
//!
//! The kernel keeps owning an uplink: in `Filter` mode the XDP program
//! redirects only VXLAN to this node's port, IPIP to this node and IPv4 to
//! the pod network, and passes everything else (SSH, kubelet, etcd, BGP,
//! ARP) to the kernel. On a pod veth (`RedirectAll`) everything is ours.
//!
//! The concerns live apart, each `unsafe` block reviewable on its own
//! screen: [`program`] (the XDP program and its socket map), [`umem`] (the
//! memory area), [`frame`] (buffers and the free list), [`socket`] (the XSK
//! rings). This backend is where `unsafe` lives (FFI into libxdp/libbpf and
//! the raw view of UMEM frames); every block says why it is sound.
#![allow(unsafe_code)]

#[cfg(test)]
mod fake;
pub mod frame;
pub mod program;
pub mod socket;
pub mod umem;

pub use frame::{PoolState, UmemPool, XdpBuf};
pub use program::{
    detach_stale, AttachMode, ProgramHandover, Steering, XdpProgram, XskMap, PROGRAM_NAME,
};
pub use socket::{XskConfig, XskPort, XskState, XskStats};
pub use umem::{Umem, UmemConfig, UmemHandover};

use sluice_bindings::sys;
use sluice_dataplane::buffer::{BufPool, Burst, PacketBuf, MAX_BURST};
use sluice_dataplane::port::Port;
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
    /// The device has fewer queues than the worker serving this one.
    #[error("`{ifname}` has {queues} RX queue(s); worker {queue} needs queue {queue}: give the device as many queues as sluiced has workers")]
    NoQueue {
        /// The interface.
        ifname: String,
        /// The queue asked for.
        queue: u32,
        /// The queues it has.
        queues: u32,
    },
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

/// The descriptors an idle worker sleeps on (the idle path of the adaptive
/// and interrupt rx modes): all of them, however many ports the worker
/// has. Built when the worker's ports change, so sleeping allocates nothing.
pub struct WaitSet {
    pfds: Vec<libc::pollfd>,
}

impl std::fmt::Debug for WaitSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.pfds.iter().map(|p| p.fd))
            .finish()
    }
}

impl WaitSet {
    /// A set waiting for any of `fds` to become readable.
    pub fn new(fds: &[i32]) -> WaitSet {
        WaitSet {
            pfds: fds
                .iter()
                .map(|&fd| libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect(),
        }
    }

    /// How many descriptors the set waits on.
    pub fn len(&self) -> usize {
        self.pfds.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.pfds.is_empty()
    }

    /// Sleeps until one of the descriptors is readable or `timeout_ms`
    /// passes. Returns whether any is.
    pub fn wait(&mut self, timeout_ms: i32) -> bool {
        // SAFETY: `pfds` is a valid array of `len` initialised pollfd structs
        // the kernel writes `revents` into.
        let rc = unsafe {
            libc::poll(
                self.pfds.as_mut_ptr(),
                self.pfds.len() as libc::nfds_t,
                timeout_ms,
            )
        };
        rc > 0
    }
}

/// How many pods a worker's UMEM has frames for: its frames less the
/// uplinks' fill rings and `reserve` frames for bursts, TX rings and
/// frames in flight, divided by a pod's fill target.
pub fn pod_capacity(umem: &UmemConfig, uplinks: usize, reserve: u32) -> usize {
    let uplink = XskConfig::default().fill_target as usize * uplinks;
    let per_pod = XskConfig::pod().fill_target as usize;
    (umem.frames as usize).saturating_sub(uplink + reserve as usize) / per_pod
}

/// The largest frame (L2 header included) a UMEM frame holds after the
/// headroom the kernel and the switch leave in front of it.
pub fn max_frame_len(umem: &UmemConfig) -> u32 {
    umem.frame_size - FRAME_HEADROOM
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Finding: workers woke only for their first 64 sockets. A write on
    /// the 70th of 70 descriptors wakes the sleeper at once.
    #[test]
    fn a_worker_wakes_for_every_descriptor_it_owns() {
        let mut pipes = Vec::new();
        for _ in 0..70 {
            let mut fds = [0i32; 2];
            // SAFETY: `pipe` writes two descriptors into the array.
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            pipes.push(fds);
        }
        let mut set = WaitSet::new(&pipes.iter().map(|p| p[0]).collect::<Vec<_>>());
        assert_eq!(set.len(), 70);
        assert!(!set.wait(0), "nothing readable yet");
        // SAFETY: writes one byte from a live buffer to a pipe we own.
        let wrote = unsafe { libc::write(pipes[69][1], b"x".as_ptr().cast(), 1) };
        assert_eq!(wrote, 1);
        let t = std::time::Instant::now();
        assert!(set.wait(2000), "the 70th descriptor wakes the worker");
        assert!(t.elapsed() < std::time::Duration::from_millis(500));
        for p in pipes {
            // SAFETY: closing descriptors this test opened.
            unsafe {
                libc::close(p[0]);
                libc::close(p[1]);
            }
        }
    }
}
