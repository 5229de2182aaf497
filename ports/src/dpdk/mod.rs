//! The DPDK backend: NICs (an SR-IOV VF or PF bound to vfio-pci) and DPDK's
//! virtual devices (`net_af_packet`, `net_pcap`, `net_tap`, `net_vhost`,
//! `net_af_xdp`, …) as switch ports, with the `rte_mbuf` as the pipeline's
//! buffer, without copying.
//!
//! - [`eal`]: the Environment Abstraction Layer, initialised once per
//!   process from the daemon's `[daemon.dpdk]` settings;
//! - [`mbuf`]: [`Mbuf`] (an `rte_mbuf` as a [`PacketBuf`]) and [`MbufPool`]
//!   (one mempool per NUMA socket, shared by the workers on it through
//!   DPDK's per-lcore caches);
//! - [`device`]: a probed, configured and started ethdev ([`Device`]): one
//!   RX and one TX queue per worker, RSS across them, stopped, closed and
//!   detached when dropped;
//! - [`port`]: one worker's queue pair of a device ([`DpdkPort`]);
//! - [`flow`]: hardware profiles' `rte_flow` steering rules.
//!
//! Invariants:
//! - every mbuf the pipeline sees is a single segment: a chained mbuf (a
//!   frame bigger than the pool's data room, e.g. from a vhost-user guest
//!   with mergeable buffers) is linearised when its first segment can hold
//!   it and otherwise dropped and counted as `rx_segmented`;
//! - worker `w` uses queue `w` of every device and only that queue, so no
//!   queue is shared between threads; workers register with EAL
//!   (`rte_thread_register`) so the pools' per-lcore caches serve them;
//! - a device is stopped only after every worker closed its queue (the
//!   control side drops it after the workers acknowledged the tables
//!   without it), so no burst call races a stop.
//!
//! [`PacketBuf`]: sluice_dataplane::buffer::PacketBuf

#![allow(unsafe_code)]

pub mod device;
pub mod eal;
pub mod flow;
pub mod mbuf;
pub mod port;

pub use device::{Device, DeviceSpec};
pub use eal::{Eal, EalConfig};
pub use mbuf::{Mbuf, MbufPool, Mempool};
pub use port::{DpdkPort, DpdkStats};

use sluice_bindings::dpdk as sys;
use std::ffi::CStr;

/// Why a DPDK call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DpdkError {
    /// EAL did not initialise.
    #[error("DPDK EAL init failed ({args}): {reason}")]
    Eal {
        /// The arguments it was given.
        args: String,
        /// DPDK's reason.
        reason: String,
    },
    /// A device could not be probed, configured or started.
    #[error("device `{devargs}`: {step}: {reason}")]
    Device {
        /// The device.
        devargs: String,
        /// The step that failed.
        step: &'static str,
        /// DPDK's reason.
        reason: String,
    },
    /// A mempool could not be created.
    #[error("mbuf pool `{name}` ({mbufs} mbufs of {data_room} bytes): {reason}")]
    Mempool {
        /// Pool name.
        name: String,
        /// Its size.
        mbufs: u32,
        /// Each mbuf's data room.
        data_room: u16,
        /// DPDK's reason.
        reason: String,
    },
    /// A hardware profile's rule could not be applied.
    #[error("hardware profile `{profile}`, rule `{rule}`: {reason}")]
    Flow {
        /// The profile.
        profile: String,
        /// The rule that failed.
        rule: String,
        /// The device's reason.
        reason: String,
    },
    /// The calling thread could not register with EAL.
    #[error("cannot register the worker thread with DPDK: {0}")]
    Thread(String),
}

/// DPDK's text for an error number (positive or negative).
pub(crate) fn strerror(rc: i32) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local
    // NUL-terminated string for any value.
    let s = unsafe { CStr::from_ptr(sys::rte_strerror(rc.abs())) };
    s.to_string_lossy().into_owned()
}

/// The last error DPDK set in `rte_errno`, as text.
pub(crate) fn last_error() -> String {
    // SAFETY: reads the calling thread's rte_errno.
    strerror(unsafe { sys::sluice_dpdk_errno() })
}

/// Registers the calling thread with EAL (an lcore id, so mempool caches
/// work). A thread registers once; later calls do nothing.
pub fn register_thread() -> Result<(), DpdkError> {
    // SAFETY: plain calls on the calling thread's own EAL state.
    unsafe {
        if sys::sluice_dpdk_lcore_id() != u32::MAX {
            return Ok(());
        }
        if sys::rte_thread_register() != 0 {
            return Err(DpdkError::Thread(last_error()));
        }
    }
    Ok(())
}
