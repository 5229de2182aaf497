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
//! The concerns live apart, each `unsafe` block reviewable on its own
//! screen: [`program`] (the XDP program and its socket map), [`umem`] (the
//! memory area), [`frame`] (buffers and the free list), [`socket`] (the XSK
//! rings). This backend is where `unsafe` lives (FFI into libxdp/libbpf and
//! the raw view of UMEM frames); every block says why it is sound.
#![allow(unsafe_code)]

pub mod frame;
pub mod program;
pub mod socket;
pub mod umem;

pub use frame::{UmemPool, XdpBuf};
pub use program::{detach_stale, AttachMode, Steering, XdpProgram, XskMap, PROGRAM_NAME};
pub use socket::{XskConfig, XskPort, XskStats};
pub use umem::{Umem, UmemConfig};

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
