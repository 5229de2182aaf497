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
//!   the worker step joining ports to the pipeline;
//! - [`counters`]: per-worker counters, drops by named reason;
//! - [`pcap`] and [`replay`]: offline replay of captures through a node.

pub mod buffer;
pub mod config;
pub mod counters;
pub mod craft;
pub mod daemon;
pub mod fib;
pub mod pcap;
pub mod pipeline;
pub mod port;
pub mod replay;
pub mod tables;
pub mod wire;
