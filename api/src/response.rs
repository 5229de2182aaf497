//! Responses: the envelope and each operation's typed result.
//!
//! On the wire a response is one JSON line,
//! `{"version":1,"ok":true,"result":{…}}` or
//! `{"version":1,"ok":false,"error":{"field":…,"message":…}}`.
//! Results are JSON objects whose keys are written in sorted order at every
//! level; [`Response::success`] writes them so whatever the result type.
//!
//! | op | result type |
//! |---|---|
//! | `ports.list` | [`PortList`] |
//! | `ports.add` | [`PortsAdded`] |
//! | `ports.remove`, `routes.remove`, `neighbours.remove` | [`Removed`] |
//! | `routes.list` | [`RouteList`] |
//! | `routes.add`, `routes.replace` | [`RoutesChanged`] |
//! | `neighbours.list` | [`NeighbourList`] |
//! | `neighbours.set`, `node.set` | [`Generation`] |
//! | `node.get` | [`NodeInfo`] |
//! | `stats` | [`Stats`] |
//! | `flows` | [`FlowList`] |
//! | `trace` | [`Trace`] |
//! | `reload` | [`Reloaded`] |
//! | `capture.start` | [`CaptureStarted`] |
//! | `capture.read` | [`CaptureFrames`] |
//! | `capture.stop` | [`CaptureStopped`] |
//! | `upgrade` | [`Upgrading`] |
//!
//! Result types ignore keys they do not know, so results that gained a key
//! still read; the configuration objects they carry ([`RouteConfig`],
//! [`NodeSettings`], [`TunnelSettings`]) are read as strictly as in
//! requests.

use crate::error::ApiError;
use crate::request::Request;
use crate::types::{IfAddr, MacAddr, NodeSettings, PortKind, RouteConfig, TunnelSettings};
use crate::VERSION;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// A response line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Protocol version.
    pub version: u32,
    /// Whether the request was applied.
    pub ok: bool,
    /// The result, when ok.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub result: Option<Value>,
    /// The error, when not.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<ApiError>,
}

impl Response {
    /// Success with `result` (any of this module's result types, or a
    /// [`Reply`]).
    pub fn success<T: Serialize + ?Sized>(result: &T) -> Response {
        Response {
            version: VERSION,
            ok: true,
            result: Some(serde_json::to_value(result).expect("results serialize")),
            error: None,
        }
    }

    /// Refusal with `error`.
    pub fn failure(error: ApiError) -> Response {
        Response {
            version: VERSION,
            ok: false,
            result: None,
            error: Some(error),
        }
    }

    /// Success or refusal.
    pub fn from_result<T: Serialize>(outcome: Result<T, ApiError>) -> Response {
        match outcome {
            Ok(r) => Response::success(&r),
            Err(e) => Response::failure(e),
        }
    }

    /// The response line, without the newline that ends it on the socket.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("responses serialize")
    }

    /// Reads a response line.
    pub fn from_line(line: &str) -> Result<Response, serde_json::Error> {
        serde_json::from_str(line.trim_end())
    }

    /// The result as `T`, or the daemon's error. A refusal without an
    /// error, or a result that is not a `T`, is [`ResultError::Malformed`].
    pub fn into_result<T: DeserializeOwned>(self) -> Result<T, ResultError> {
        if !self.ok {
            return Err(match self.error {
                Some(e) => ResultError::Api(e),
                None => ResultError::Malformed("a refusal without an error".into()),
            });
        }
        serde_json::from_value(self.result.unwrap_or(Value::Null))
            .map_err(|e| ResultError::Malformed(format!("unexpected result: {e}")))
    }
}

/// Why [`Response::into_result`] has no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResultError {
    /// The daemon refused the request.
    #[error(transparent)]
    Api(ApiError),
    /// The response is not what the protocol says.
    #[error("{0}")]
    Malformed(String),
}

/// Answers one request line: parses it, hands the request to `handle`,
/// and wraps what it returns (or the parse error) in a [`Response`].
/// Write `response.to_line()` and a newline back.
///
/// ```
/// use sluice_api::{respond, ApiError, Generation, Reply, Request};
/// let r = respond(r#"{"version":1,"op":"reload"}"#, |req| match req {
///     Request::Reload => Ok(Reply::from(Generation { generation: 3 })),
///     other => Err(ApiError::general(format!("{} is not served here", other.op()))),
/// });
/// assert_eq!(r.to_line(), r#"{"version":1,"ok":true,"result":{"generation":3}}"#);
/// ```
pub fn respond<T: Serialize>(
    line: &str,
    handle: impl FnOnce(Request) -> Result<T, ApiError>,
) -> Response {
    Response::from_result(Request::from_line(line).and_then(handle))
}

/// One port, as `ports.list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortInfo {
    /// Uplink: its underlay address.
    pub address: Option<IfAddr>,
    /// The port id (counters, flows); a removed pod's id is reused by the
    /// next pod added.
    pub id: u16,
    /// Pod: the pod's address.
    pub ip: Option<Ipv4Addr>,
    /// What the port connects to.
    pub kind: PortKind,
    /// The port's MAC (see [`crate::PortConfig::mac`]).
    pub mac: MacAddr,
    /// Its MTU.
    pub mtu: u16,
    /// Its name.
    pub name: String,
    /// Pod over vhost-user (DPDK backend): the pod's socket, which sluiced
    /// connects to. Absent for every other port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vhost_user: Option<std::path::PathBuf>,
}

/// `ports.list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortList {
    /// The ports, by id.
    pub ports: Vec<PortInfo>,
}

/// `ports.add`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortsAdded {
    /// Ports attached (those already attached as asked are not counted).
    pub added: usize,
    /// The tables generation in force.
    pub generation: u32,
}

/// `ports.remove`, `routes.remove`, `neighbours.remove`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    /// The tables generation in force.
    pub generation: u32,
    /// How many were there and are gone.
    pub removed: usize,
}

/// `routes.list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteList {
    /// Configured routes, then each pod port's `/32` (via `pod`).
    pub routes: Vec<RouteConfig>,
}

/// `routes.add`, `routes.replace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutesChanged {
    /// The tables generation in force.
    pub generation: u32,
    /// Routes added or replaced by the request.
    pub routes: usize,
}

/// Where a neighbour entry comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NeighbourSource {
    /// The configuration file or the API.
    Static,
    /// Learned from the kernel's neighbour table.
    Kernel,
}

/// One underlay neighbour, as `neighbours.list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeighbourInfo {
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its MAC.
    pub mac: MacAddr,
    /// Where the entry comes from.
    pub source: NeighbourSource,
}

/// `neighbours.list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeighbourList {
    /// The neighbours.
    pub neighbours: Vec<NeighbourInfo>,
}

/// `neighbours.set`, `node.set`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    /// The tables generation in force.
    pub generation: u32,
}

/// `node.get`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Node settings.
    pub node: NodeSettings,
    /// Tunnel settings.
    pub tunnel: TunnelSettings,
    /// Changes whenever the daemon's tables are replaced wholesale (the
    /// daemon started again, or `reload`): a client that programs routes
    /// programs them again when it changes. Empty from an older daemon.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub epoch: String,
    /// The tables generation in force (moves with every change).
    #[serde(default)]
    pub generation: u32,
    /// The switch's worker threads: worker `w` serves queue `w` of every
    /// port, so a pod's veth needs this many queues. 0 from an older
    /// daemon (which then has one worker unless configured otherwise).
    #[serde(default)]
    pub workers: u32,
}

/// One port's counters, summed over workers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStats {
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received and dropped.
    pub rx_dropped: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets the port did not take (TX ring full, port gone).
    #[serde(default)]
    pub tx_dropped: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// The kernel's counters for the port's AF_XDP sockets (summed over
    /// queues): drops that happen before a packet reaches the switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xsk: Option<XskCounters>,
    /// The DPDK device's and queues' counters (DPDK backend).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpdk: Option<DpdkCounters>,
    /// Buffers (UMEM frames) the port holds, over all workers: its fill and
    /// RX rings, its TX ring and frames in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames_held: Option<u64>,
}

/// One worker's buffer pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerFrames {
    /// Buffers free in the pool.
    pub free: u64,
    /// Buffers given up for good (a socket libxdp would not close).
    pub retired: u64,
    /// Buffers the pool has in all.
    pub total: u64,
    /// The worker.
    pub worker: usize,
}

/// A DPDK port's counters: the device's (`rte_eth_stats`) and sluice's
/// own for chained mbufs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DpdkCounters {
    /// Chained mbufs that could not be made single-segment: dropped.
    pub rx_segmented: u64,
    /// Chained mbufs copied into one segment.
    pub rx_linearized: u64,
    /// Dropped by the device: RX queues full.
    pub imissed: u64,
    /// Erroneous packets the device received.
    pub ierrors: u64,
    /// Packets the device failed to send.
    pub oerrors: u64,
    /// Times the device found no mbuf to receive into.
    pub rx_nombuf: u64,
}

/// The kernel's per-socket AF_XDP counters (`XDP_STATISTICS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct XskCounters {
    /// Dropped for reasons other than invalid descriptors.
    pub rx_dropped: u64,
    /// Times the fill ring was empty when a frame arrived.
    pub rx_fill_ring_empty_descs: u64,
    /// Dropped because of invalid RX descriptors.
    pub rx_invalid_descs: u64,
    /// Dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Invalid TX descriptors.
    pub tx_invalid_descs: u64,
    /// Times the TX ring was empty when the kernel looked.
    pub tx_ring_empty_descs: u64,
}

/// `stats`: counters summed over workers (docs/metrics.md names them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Drops by reason name; every reason is present, zero or not.
    pub drops: BTreeMap<String, u64>,
    /// Other outcomes by name; every event is present.
    pub events: BTreeMap<String, u64>,
    /// Per port, by port name.
    pub ports: BTreeMap<String, PortStats>,
    /// Summed over every port the switch has had, removed ones included:
    /// packets received plus those the switch made ([`Stats::made`]) equal
    /// packets sent plus drops.
    #[serde(default)]
    pub port_totals: PortStats,
    /// Each worker's buffer pool (a running switch; empty offline).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<WorkerFrames>,
}

impl Stats {
    /// Total drops.
    pub fn total_drops(&self) -> u64 {
        self.drops.values().sum()
    }

    /// Drops for the reason `name` (e.g. `no_route`); 0 if unknown.
    pub fn drop_count(&self, name: &str) -> u64 {
        self.drops.get(name).copied().unwrap_or(0)
    }

    /// The event counter `name` (e.g. `vxlan_encap`); 0 if unknown.
    pub fn event_count(&self, name: &str) -> u64 {
        self.events.get(name).copied().unwrap_or(0)
    }

    /// Reasons with drops, with their counts, by name.
    pub fn nonzero_drops(&self) -> impl Iterator<Item = (&str, u64)> {
        self.drops
            .iter()
            .filter(|(_, &v)| v > 0)
            .map(|(k, &v)| (k.as_str(), v))
    }

    /// Events that happened, with their counts, by name.
    pub fn nonzero_events(&self) -> impl Iterator<Item = (&str, u64)> {
        self.events
            .iter()
            .filter(|(_, &v)| v > 0)
            .map(|(k, &v)| (k.as_str(), v))
    }

    /// Packets the switch made rather than took in: ICMP errors sent and
    /// fragments past the first.
    pub fn made(&self) -> u64 {
        self.event_count("icmp_time_exceeded")
            + self.event_count("icmp_frag_needed")
            + self
                .event_count("fragments_created")
                .saturating_sub(self.event_count("fragmented"))
    }

    /// `received + made - sent - dropped` over [`Stats::port_totals`]: zero
    /// when every packet is accounted for (read while the switch is idle;
    /// under traffic, packets in a burst are counted in and not yet out).
    pub fn unaccounted(&self) -> i128 {
        let t = &self.port_totals;
        i128::from(t.rx_packets) + i128::from(self.made())
            - i128::from(t.tx_packets)
            - i128::from(self.total_drops())
    }

    /// `total - free - retired - held` over every worker's pool and every
    /// port's frames: zero when every buffer is free, given up for good, or
    /// held by a port (read while the switch is idle; under traffic, frames
    /// in a burst are in none of these).
    pub fn frames_unaccounted(&self) -> i128 {
        let held: u64 = self.ports.values().filter_map(|p| p.frames_held).sum();
        self.workers
            .iter()
            .map(|w| i128::from(w.total) - i128::from(w.free) - i128::from(w.retired))
            .sum::<i128>()
            - i128::from(held)
    }
}

/// One cached flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    /// What the flow does: `deliver <port>`, `host-gw <mac>`, `host`,
    /// `vxlan <node>`, `ipip <node>`, `drop <reason>`.
    pub action: String,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Destination port (0 for protocols without ports).
    pub dst_port: u16,
    /// Ingress port name (`?` if it is gone).
    pub in_port: String,
    /// IP protocol number.
    pub protocol: u8,
    /// Source address.
    pub src: Ipv4Addr,
    /// Source port (0 for protocols without ports).
    pub src_port: u16,
    /// The worker caching it.
    pub worker: usize,
}

/// `flows`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowList {
    /// Each worker's flows of the current tables.
    pub flows: Vec<Flow>,
    /// The tables generation they belong to.
    pub generation: u32,
}

/// The traced frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceInput {
    /// The ingress port.
    pub port: String,
    /// One line describing the frame (tunnels decoded).
    pub summary: String,
}

/// A frame the switch would send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceOutput {
    /// The frame, lowercase hex.
    pub frame: String,
    /// The egress port.
    pub port: String,
    /// One line describing the frame (tunnels decoded).
    pub summary: String,
}

impl TraceOutput {
    /// The frame's bytes (`None` if the daemon sent no hex).
    pub fn frame_bytes(&self) -> Option<Vec<u8>> {
        crate::request::parse_hex(&self.frame)
    }
}

/// `trace`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    /// The drop reason, if the frame was dropped.
    pub drop: Option<String>,
    /// The events the frame caused (non-zero only).
    pub events: BTreeMap<String, u64>,
    /// The frame traced.
    pub input: TraceInput,
    /// Frames sent.
    pub outputs: Vec<TraceOutput>,
    /// The route (configured or a pod's `/32`) the destination matches.
    pub route: Option<RouteConfig>,
}

/// `reload`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reloaded {
    /// The tables generation in force.
    pub generation: u32,
    /// Neighbours in force (static and learned).
    pub neighbours: usize,
    /// Configured routes in force.
    pub routes: usize,
}

/// `capture.start`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureStarted {
    /// What `capture.read` and `capture.stop` name it by.
    pub id: u64,
    /// The port captured.
    pub port: String,
    /// Bytes kept of each frame (the smaller of the snap length asked for
    /// and what a capture slot holds).
    pub snaplen: u32,
}

/// A captured frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedFrame {
    /// The frame, lowercase hex (cut to the snap length).
    pub data: String,
    /// `rx` (received on the port) or `tx` (sent out of it).
    pub direction: crate::request::CaptureDirection,
    /// The frame's length on the wire.
    pub orig_len: u32,
    /// The port.
    pub port: String,
    /// When the worker took it, ns since the Unix epoch.
    pub ts_ns: u64,
}

impl CapturedFrame {
    /// The frame's bytes (`None` if the daemon sent no hex).
    pub fn bytes(&self) -> Option<Vec<u8>> {
        crate::request::parse_hex(&self.data)
    }
}

/// `capture.read`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureFrames {
    /// Frames returned so far, in all reads.
    pub captured: u64,
    /// Whether the count asked for is reached: nothing more will come.
    pub done: bool,
    /// Matching frames lost so far (a worker's ring full or being read).
    pub dropped: u64,
    /// Frames since the last read, oldest first.
    pub frames: Vec<CapturedFrame>,
}

/// `capture.stop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureStopped {
    /// Frames returned by `capture.read`.
    pub captured: u64,
    /// Matching frames lost.
    pub dropped: u64,
}

/// `upgrade`: the new sluiced started; it takes over within moments, and
/// the one that answered exits once it has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upgrading {
    /// The running sluiced's pid.
    pub from_pid: u32,
    /// The new one's.
    pub pid: u32,
    /// The binary started.
    pub binary: String,
}

/// Any operation's result, for a daemon's dispatch to return (see
/// [`respond`]); it serializes as the result it holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Reply {
    /// `ports.list`.
    Ports(PortList),
    /// `ports.add`.
    PortsAdded(PortsAdded),
    /// `ports.remove`, `routes.remove`, `neighbours.remove`.
    Removed(Removed),
    /// `routes.list`.
    Routes(RouteList),
    /// `routes.add`, `routes.replace`.
    RoutesChanged(RoutesChanged),
    /// `neighbours.list`.
    Neighbours(NeighbourList),
    /// `neighbours.set`, `node.set`.
    Generation(Generation),
    /// `node.get`.
    Node(NodeInfo),
    /// `stats`.
    Stats(Stats),
    /// `flows`.
    Flows(FlowList),
    /// `trace`.
    Trace(Trace),
    /// `reload`.
    Reloaded(Reloaded),
    /// `capture.start`.
    CaptureStarted(CaptureStarted),
    /// `capture.read`.
    CaptureFrames(CaptureFrames),
    /// `capture.stop`.
    CaptureStopped(CaptureStopped),
    /// `upgrade`.
    Upgrading(Upgrading),
}

macro_rules! reply_from {
    ($($t:ident => $v:ident),* $(,)?) => {
        $(impl From<$t> for Reply {
            fn from(r: $t) -> Reply {
                Reply::$v(r)
            }
        })*
    };
}

reply_from!(
    PortList => Ports,
    PortsAdded => PortsAdded,
    Removed => Removed,
    RouteList => Routes,
    RoutesChanged => RoutesChanged,
    NeighbourList => Neighbours,
    Generation => Generation,
    NodeInfo => Node,
    Stats => Stats,
    FlowList => Flows,
    Trace => Trace,
    Reloaded => Reloaded,
    CaptureStarted => CaptureStarted,
    CaptureFrames => CaptureFrames,
    CaptureStopped => CaptureStopped,
    Upgrading => Upgrading,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_accounted_when_free_retired_and_held_make_the_total() {
        let mut s = Stats {
            workers: vec![
                WorkerFrames {
                    free: 900,
                    retired: 4,
                    total: 1024,
                    worker: 0,
                },
                WorkerFrames {
                    free: 1024,
                    retired: 0,
                    total: 1024,
                    worker: 1,
                },
            ],
            ..Stats::default()
        };
        for (name, held) in [("eth0", Some(100)), ("pod", Some(20)), ("sluice0", None)] {
            s.ports.insert(
                name.into(),
                PortStats {
                    frames_held: held,
                    ..PortStats::default()
                },
            );
        }
        assert_eq!(s.frames_unaccounted(), 0);
        s.workers[1].free -= 3;
        assert_eq!(s.frames_unaccounted(), 3, "three frames in none of them");
    }
}
