//! The sluice packet pipeline: a library that does no I/O of its own.
//!
//! Every port backend (memory ports for tests, AF_XDP, DPDK, vhost-user) feeds
//! this same code with bursts of packets in its own buffers:
//!
//! - [`wire`]: zero-copy header views with checked constructors;
//! - [`buffer`]: the packet-buffer contract (headroom, prepend, adjust), bursts
//!   and pools;
//! - [`config`] and [`tables`]: a node's configuration and the immutable
//!   forwarding tables built from it, published to workers atomically;
//! - [`fib`]: the longest-prefix-match route table and the flow cache;
//! - [`pipeline`]: the stages, from a received burst to per-port TX lists;
//! - [`port`]: the port contract (`rx_burst`, `tx_burst`), memory ports, and
//!   the worker step joining ports to the pipeline (the real backends live
//!   in `sluice-ports`, the daemon in `sluiced`);
//! - [`counters`]: per-worker counters, drops by named reason;
//! - [`pcap`] and [`replay`]: offline replay of captures through a node;
//! - `craft` (feature `test-frames`): frame builders and a reference node
//!   for tests, benches and fuzz seeds.
//!
//! This crate does no I/O beyond reading and writing pcap files, has no
//! FFI and no `unsafe`; it depends on `sluice-api` for the value types of
//! the configuration, and on serde, toml, thiserror, arc-swap, and memmap2 with
//! bytemuck (the route table's 64 MiB on transparent huge pages, safely).

pub mod buffer;
pub mod capture;
pub mod config;
pub mod counters;
#[cfg(any(test, feature = "test-frames"))]
pub mod craft;
pub mod fib;
pub mod pcap;
pub mod pipeline;
pub mod port;
pub mod replay;
pub mod tables;
pub mod wire;
