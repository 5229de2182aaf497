//! The sluice packet pipeline: a library that does no I/O of its own.
//!
//! Every port backend (memory ports for tests, AF_XDP, DPDK, vhost-user) feeds
//! this same code with bursts of packets in its own buffers; see `buffer` for
//! the buffer contract and `pipeline` for the stages.

pub mod fib;
pub mod wire;
