//! sluice's port backends: where the pipeline's bursts come from on a real
//! node.
//!
//! Each backend implements [`sluice_dataplane::port::Port`] over its own
//! buffers and is opened per worker through [`Backend`], the one trait the
//! daemon's worker loop knows, so a new backend (DPDK, vhost-user) slots in
//! without touching the loop:
//!
//! - [`afxdp`]: AF_XDP sockets on kernel netdevs (uplink and pod veths),
//!   split by concern: the XDP program, the UMEM, frames and their pool, the
//!   sockets;
//! - [`dpdk`]: DPDK devices (NICs, vdevs, vhost-user) over `rte_mbuf`s;
//! - [`tap`]: the host port, a multi-queue TAP into the node's kernel;
//! - [`handover`]: the Unix socket an upgrade hands descriptors over;
//! - [`netdev`]: what a kernel device allows (its RX queues against the
//!   workers).
//!
//! This crate may depend on `sluice-dataplane` (the port contract, buffers)
//! and `sluice-bindings` (FFI). It is, with `bindings/`, where `unsafe`
//! lives: each module that needs it opts in and documents every block.

pub mod afxdp;
pub mod backend;
pub mod dpdk;
pub mod handover;
pub mod netdev;
pub mod tap;

pub use backend::{
    AfXdpBackend, AfXdpPort, Backend, BackendError, DeviceLookup, DpdkBackend, MapLookup,
    PoolFrames, PortHandover, PortSpec, PortStats, WorkerHandover, WorkerInherit,
};
