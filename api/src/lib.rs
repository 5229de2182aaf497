//! The control API of `sluiced`, the sluice switch daemon: its schema and a
//! small client.
//!
//! Everything that talks to `sluiced` goes through this crate: `sluicectl`,
//! `sluice-lab`, the agent and the CNI plugin as clients, the daemon as the
//! server. It holds
//!
//! - [`types`]: the values requests and results carry, which are also those
//!   of the configuration file: [`Ipv4Net`], [`IfAddr`], [`MacAddr`],
//!   [`PortConfig`], [`RouteConfig`], [`NeighbourConfig`], [`NodeSettings`],
//!   [`TunnelSettings`];
//! - [`request`]: [`Request`], one variant per operation with typed
//!   arguments, written as and read from the request line;
//! - [`response`]: the [`Response`] envelope and each operation's typed
//!   result ([`RouteList`], [`RoutesChanged`], [`Stats`], [`Trace`]…);
//! - [`error`]: [`ApiError`], a refusal naming the request field at fault;
//! - [`client`]: [`Client`], blocking, one connection per request;
//! - [`attachment`]: the CNI plugin's record of a pod attachment, which
//!   `sluiced` reads back at start;
//! - [`subnet_file`]: flannel's subnet file, written by `sluice-agent` and
//!   read by the CNI plugin.
//!
//! The protocol is versioned JSON, one request line and one response line
//! per exchange over a Unix socket ([`DEFAULT_SOCKET`]). `docs/api.md` is
//! the reference of every operation.
//!
//! ```text
//! → {"version":1,"op":"routes.remove","args":{"prefixes":["10.5.3.0/24"]}}
//! ← {"version":1,"ok":true,"result":{"generation":8,"removed":1}}
//! ```
//!
//! A daemon reads a line with [`Request::from_line`] (or [`respond`], which
//! also wraps the outcome), dispatches on the variant, and answers with
//! [`Response::success`] of a result type (or a [`Reply`]) or
//! [`Response::failure`], written with [`Response::to_line`].
//!
//! This crate depends on `serde`, `serde_json` (the wire format) and
//! `thiserror` only: no dataplane, no FFI, nothing that needs privileges,
//! so every client can link it.

mod mac;

pub mod attachment;
pub mod client;
pub mod error;
pub mod request;
pub mod response;
pub mod subnet_file;
pub mod types;

pub use client::{Client, ClientError, DEFAULT_TIMEOUT};
pub use error::ApiError;
pub use request::{
    CaptureDirection, CaptureReadArgs, CaptureStartArgs, CaptureStopArgs, NeighboursRemoveArgs,
    NeighboursSetArgs, NodeSetArgs, PortsAddArgs, PortsRemoveArgs, Request, RoutesArgs,
    RoutesRemoveArgs, TraceArgs, UpgradeArgs,
};
pub use response::{
    respond, CaptureFrames, CaptureStarted, CaptureStopped, CapturedFrame, Flow, FlowList,
    Generation, NeighbourInfo, NeighbourList, NeighbourSource, NodeInfo, PortInfo, PortList,
    PortStats, PortsAdded, Reloaded, Removed, Reply, Response, ResultError, RouteList,
    RoutesChanged, Stats, Trace, TraceInput, TraceOutput, Upgrading, WorkerFrames, XskCounters,
};
pub use types::{
    IfAddr, Ipv4Net, MacAddr, NeighbourConfig, NodeSettings, ParseMacError, PortConfig, PortKind,
    RouteConfig, RxMode, TunnelSettings, Via, DEFAULT_MTU, DEFAULT_VNI, DEFAULT_VXLAN_PORT,
};

/// The protocol version this crate speaks.
pub const VERSION: u32 = 1;

/// Where `sluiced` listens unless configured otherwise.
pub const DEFAULT_SOCKET: &str = "/run/sluice/sluiced.sock";
