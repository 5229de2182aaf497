//! `sluiced`: the sluice switch as a running process, as a library with a
//! thin `main`.
//!
//! - [`startup`]: all-or-nothing start-up and shutdown ([`Daemon`]);
//! - [`worker`]: the pinned worker loop, generic over the port backend
//!   (`sluice_ports::Backend`), with housekeeping every N turns;
//! - [`registry`]: what the control side and the workers share (socket
//!   maps, generation acknowledgements, flow dumps, kernel port counters);
//! - [`api`]: the control API's operations, and [`server`]: its Unix socket,
//!   bounded so no client starves another;
//! - [`capture`]: `capture.start`/`read`/`stop` and the capture the
//!   workers copy frames for;
//! - [`metrics`]: the Prometheus endpoint;
//! - [`pod_records`]: pods attached again at start from the CNI plugin's
//!   attachment records, through the API's `ports.add`;
//! - [`logging`]: `tracing` events, filter and format from the environment
//!   or the configuration;
//! - [`host`] and [`neigh`]: the node around the switch (interface locks,
//!   the host TAP's addresses and route over rtnetlink, NUMA placement, the
//!   kernel's neighbours followed over rtnetlink on the control runtime).
//!
//! This crate may depend on `sluice-dataplane` (the pipeline), `sluice-ports`
//! (backends), `sluice-api` (the API schema) and `sluice-bindings` (only for
//! the TSC read in the worker loop), and on well-kept crates for the control
//! path: tokio (a current-thread runtime for netlink and `/metrics`, never
//! in the workers), rtnetlink, prometheus-client, tracing. It has no
//! `unsafe` of its own.

pub mod api;
pub mod attach;
pub mod capture;
pub mod handover;
pub mod host;
pub mod logging;
pub mod metrics;
pub mod neigh;
pub mod pod_records;
pub mod registry;
pub mod saved_tables;
pub mod server;
pub mod startup;
pub mod worker;

// The pipeline library's modules under their old paths inside this crate.
pub(crate) use sluice_dataplane::capture as capture_dp;
#[cfg(test)]
pub(crate) use sluice_dataplane::craft;
pub(crate) use sluice_dataplane::{
    buffer, config, counters, fib, pcap, pipeline, port, tables, wire,
};

pub use registry::{PortRegistry, FLOW_DUMP_LIMIT};
pub use startup::{Daemon, DaemonError, PortReport};
