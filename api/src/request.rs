//! Requests: one variant per operation, with typed arguments.
//!
//! On the wire a request is one JSON line,
//! `{"version":1,"op":"routes.remove","args":{"prefixes":["10.5.3.0/24"]}}`;
//! operations without arguments send `"args":null`. [`Request::to_line`]
//! writes it, [`Request::from_line`] reads it and names the field at fault
//! when it cannot.

use crate::error::ApiError;
use crate::types::{
    Ipv4Net, NeighbourConfig, NodeSettings, PortConfig, RouteConfig, TunnelSettings,
};
use crate::VERSION;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::net::Ipv4Addr;

/// `ports.add`: pod ports to attach.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortsAddArgs {
    /// The ports (kind `pod`).
    pub ports: Vec<PortConfig>,
}

/// `ports.remove`: pod ports to detach, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortsRemoveArgs {
    /// Port names.
    pub names: Vec<String>,
}

/// `routes.add` and `routes.replace`: routes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutesArgs {
    /// The routes.
    pub routes: Vec<RouteConfig>,
}

/// `routes.remove`: prefixes to stop routing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutesRemoveArgs {
    /// The routes' prefixes.
    pub prefixes: Vec<Ipv4Net>,
}

/// `neighbours.set`: underlay neighbours to add or update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeighboursSetArgs {
    /// The neighbours.
    pub neighbours: Vec<NeighbourConfig>,
}

/// `neighbours.remove`: neighbours to forget, by address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeighboursRemoveArgs {
    /// Their addresses.
    pub ips: Vec<Ipv4Addr>,
}

/// `node.set`: new node settings, new tunnel settings, or both.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSetArgs {
    /// Replaces the node settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeSettings>,
    /// Replaces the tunnel settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelSettings>,
}

/// `trace`: a frame to run as if received on a port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceArgs {
    /// The ingress port's name.
    pub port: String,
    /// The frame as hex; whitespace and colons between bytes are allowed.
    pub frame: String,
}

impl TraceArgs {
    /// Trace `frame` received on `port`.
    pub fn new(port: impl Into<String>, frame: &[u8]) -> Self {
        TraceArgs {
            port: port.into(),
            frame: hex(frame),
        }
    }

    /// The frame's bytes; an error names `args.frame` if it is not hex.
    pub fn frame_bytes(&self) -> Result<Vec<u8>, ApiError> {
        parse_hex(&self.frame).ok_or_else(|| ApiError::at("args.frame", "not hex bytes"))
    }
}

/// Which frames of a port a capture takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureDirection {
    /// Frames the port receives (before the switch parses them).
    Rx,
    /// Frames the switch sends out of the port (after rewrite).
    Tx,
    /// Both.
    #[default]
    Both,
}

impl CaptureDirection {
    /// `rx`, `tx` or `both`.
    pub fn name(self) -> &'static str {
        match self {
            CaptureDirection::Rx => "rx",
            CaptureDirection::Tx => "tx",
            CaptureDirection::Both => "both",
        }
    }
}

impl std::fmt::Display for CaptureDirection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for CaptureDirection {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "rx" => Ok(CaptureDirection::Rx),
            "tx" => Ok(CaptureDirection::Tx),
            "both" => Ok(CaptureDirection::Both),
            _ => Err("expected rx, tx or both".into()),
        }
    }
}

/// `capture.start`: copy a port's frames for `capture.read`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureStartArgs {
    /// The port's name.
    pub port: String,
    /// A filter expression (docs/api.md, "Capture filters"); none takes
    /// every frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Frames wanted; none (or 0) for no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// `rx`, `tx` or `both` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<CaptureDirection>,
    /// Bytes kept of each frame (default 262144; at most 10240 are stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snaplen: Option<u32>,
}

impl CaptureStartArgs {
    /// Every frame of `port`, both ways, no limit.
    pub fn new(port: impl Into<String>) -> Self {
        CaptureStartArgs {
            port: port.into(),
            filter: None,
            count: None,
            direction: None,
            snaplen: None,
        }
    }
}

/// `capture.read`: frames captured since the last read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureReadArgs {
    /// The capture's id, from `capture.start`.
    pub id: u64,
    /// Most frames to return (default 256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<usize>,
}

/// `upgrade`: start a new sluiced that takes this one's ports over.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeArgs {
    /// The new binary; the running one's own path when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<String>,
}

/// `capture.stop`: end a capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureStopArgs {
    /// The capture's id.
    pub id: u64,
}

/// Lowercase hex, no separators (as `trace` writes frames).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|x| format!("{x:02x}")).collect()
}

/// Hex bytes, ignoring whitespace and colons; `None` if not hex.
pub fn parse_hex(s: &str) -> Option<Vec<u8>> {
    let clean: Vec<u8> = s
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b':')
        .collect();
    if !clean.len().is_multiple_of(2) {
        return None;
    }
    clean
        .chunks(2)
        .map(|p| {
            let p = std::str::from_utf8(p).ok()?;
            if p.starts_with('+') {
                return None;
            }
            u8::from_str_radix(p, 16).ok()
        })
        .collect()
}

/// One request to the daemon.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// `ports.list`: ports with their ids.
    PortsList,
    /// `ports.add`: attach pod ports.
    PortsAdd(PortsAddArgs),
    /// `ports.remove`: detach pod ports.
    PortsRemove(PortsRemoveArgs),
    /// `routes.list`: configured routes, then each pod's `/32`.
    RoutesList,
    /// `routes.add`: add routes, or replace them by prefix.
    RoutesAdd(RoutesArgs),
    /// `routes.replace`: the configured routes become exactly these.
    RoutesReplace(RoutesArgs),
    /// `routes.remove`: remove routes by prefix.
    RoutesRemove(RoutesRemoveArgs),
    /// `neighbours.list`: underlay neighbours.
    NeighboursList,
    /// `neighbours.set`: add or update neighbours by address.
    NeighboursSet(NeighboursSetArgs),
    /// `neighbours.remove`: remove neighbours by address.
    NeighboursRemove(NeighboursRemoveArgs),
    /// `node.get`: node and tunnel settings.
    NodeGet,
    /// `node.set`: replace node or tunnel settings.
    NodeSet(NodeSetArgs),
    /// `stats`: counters summed over workers.
    Stats,
    /// `flows`: each worker's cached flows.
    Flows,
    /// `trace`: what the switch would do with a frame now.
    Trace(TraceArgs),
    /// `reload`: re-read the configuration file.
    Reload,
    /// `capture.start`: start copying a port's frames.
    CaptureStart(CaptureStartArgs),
    /// `capture.read`: frames captured so far.
    CaptureRead(CaptureReadArgs),
    /// `capture.stop`: end a capture.
    CaptureStop(CaptureStopArgs),
    /// `upgrade`: hand this sluiced's ports over to a new one.
    Upgrade(UpgradeArgs),
}

/// The envelope as it is on the wire.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    version: u32,
    op: String,
    #[serde(default)]
    args: Value,
}

/// The first name serde quotes in its message (`unknown field `x``).
fn quoted(msg: &str) -> Option<&str> {
    msg.split('`').nth(1)
}

/// The name in serde's "unknown field `x`" or "missing field `x`".
fn named_field(msg: &str) -> Option<&str> {
    if msg.starts_with("unknown field") || msg.starts_with("missing field") {
        quoted(msg)
    } else {
        None
    }
}

/// The first field of `obj` whose value is not of its type, by probing
/// each field alone.
macro_rules! probe {
    ($name:ident: $($f:ident: $t:ty),* $(,)?) => {
        fn $name(obj: &Map<String, Value>) -> Option<&'static str> {
            $(
                if let Some(v) = obj.get(stringify!($f)) {
                    if serde_json::from_value::<$t>(v.clone()).is_err() {
                        return Some(stringify!($f));
                    }
                }
            )*
            None
        }
    };
}

probe!(probe_port: name: String, kind: crate::types::PortKind, mtu: u16,
    mac: crate::types::MacAddr, address: Option<crate::types::IfAddr>,
    gateway: Option<Ipv4Addr>, ip: Option<Ipv4Addr>, rx_mode: Option<crate::types::RxMode>);
probe!(probe_route: prefix: Ipv4Net, via: crate::types::Via, node: Option<Ipv4Addr>,
    vtep_mac: Option<crate::types::MacAddr>, port: Option<String>);
probe!(probe_neighbour: ip: Ipv4Addr, mac: crate::types::MacAddr);
probe!(probe_node: pod_network: Ipv4Net, pod_subnet: Ipv4Net, gateway_ip: Option<Ipv4Addr>,
    router_mac: crate::types::MacAddr);
probe!(probe_tunnel: vni: u32, vxlan_port: u16, vtep_mac: Option<crate::types::MacAddr>);
fn probe_none(_: &Map<String, Value>) -> Option<&'static str> {
    None
}

type Probe = fn(&Map<String, Value>) -> Option<&'static str>;

/// Where inside one value `v` of type `T` the problem is: `""` (the value
/// itself) or `.field`; `None` if `v` is fine.
fn locate_value<T: DeserializeOwned>(v: &Value, probe: Probe) -> Option<String> {
    let e = serde_json::from_value::<T>(v.clone()).err()?;
    let msg = e.to_string();
    if let Some(f) = named_field(&msg) {
        return Some(format!(".{f}"));
    }
    match v {
        Value::Object(o) => Some(probe(o).map(|f| format!(".{f}")).unwrap_or_default()),
        _ => Some(String::new()),
    }
}

/// Where in the list `key` of `args` the problem is: `key[i]` or
/// `key[i].field`, or `key` when it is not a list.
fn locate_seq<T: DeserializeOwned>(
    args: &Map<String, Value>,
    key: &str,
    probe: Probe,
) -> Option<String> {
    match args.get(key)? {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| locate_value::<T>(v, probe).map(|rest| format!("{key}[{i}]{rest}"))),
        _ => Some(key.to_string()),
    }
}

/// Where in the single value `key` of `args` the problem is.
fn locate_one<T: DeserializeOwned>(
    args: &Map<String, Value>,
    key: &str,
    probe: Probe,
) -> Option<String> {
    locate_value::<T>(args.get(key)?, probe).map(|rest| format!("{key}{rest}"))
}

/// Arguments of one operation: their field names and where in them a
/// deserialisation error is.
trait OpArgs: DeserializeOwned {
    const FIELDS: &'static [&'static str];
    fn locate(args: &Map<String, Value>) -> Option<String>;
}

macro_rules! seq_args {
    ($t:ty, $key:literal, $elem:ty, $probe:expr) => {
        impl OpArgs for $t {
            const FIELDS: &'static [&'static str] = &[$key];
            fn locate(args: &Map<String, Value>) -> Option<String> {
                locate_seq::<$elem>(args, $key, $probe)
            }
        }
    };
}

seq_args!(PortsAddArgs, "ports", PortConfig, probe_port);
seq_args!(PortsRemoveArgs, "names", String, probe_none);
seq_args!(RoutesArgs, "routes", RouteConfig, probe_route);
seq_args!(RoutesRemoveArgs, "prefixes", Ipv4Net, probe_none);
seq_args!(
    NeighboursSetArgs,
    "neighbours",
    NeighbourConfig,
    probe_neighbour
);
seq_args!(NeighboursRemoveArgs, "ips", Ipv4Addr, probe_none);

impl OpArgs for NodeSetArgs {
    const FIELDS: &'static [&'static str] = &["node", "tunnel"];
    fn locate(args: &Map<String, Value>) -> Option<String> {
        locate_one::<Option<NodeSettings>>(args, "node", probe_node)
            .or_else(|| locate_one::<Option<TunnelSettings>>(args, "tunnel", probe_tunnel))
    }
}

impl OpArgs for TraceArgs {
    const FIELDS: &'static [&'static str] = &["port", "frame"];
    fn locate(args: &Map<String, Value>) -> Option<String> {
        locate_one::<String>(args, "port", probe_none)
            .or_else(|| locate_one::<String>(args, "frame", probe_none))
    }
}

impl OpArgs for CaptureStartArgs {
    const FIELDS: &'static [&'static str] = &["port", "filter", "count", "direction", "snaplen"];
    fn locate(args: &Map<String, Value>) -> Option<String> {
        locate_one::<String>(args, "port", probe_none)
            .or_else(|| locate_one::<Option<String>>(args, "filter", probe_none))
            .or_else(|| locate_one::<Option<u64>>(args, "count", probe_none))
            .or_else(|| locate_one::<Option<CaptureDirection>>(args, "direction", probe_none))
            .or_else(|| locate_one::<Option<u32>>(args, "snaplen", probe_none))
    }
}

impl OpArgs for CaptureReadArgs {
    const FIELDS: &'static [&'static str] = &["id", "max"];
    fn locate(args: &Map<String, Value>) -> Option<String> {
        locate_one::<u64>(args, "id", probe_none)
            .or_else(|| locate_one::<Option<usize>>(args, "max", probe_none))
    }
}

impl OpArgs for UpgradeArgs {
    const FIELDS: &'static [&'static str] = &["binary"];
    fn locate(args: &Map<String, Value>) -> Option<String> {
        locate_one::<Option<String>>(args, "binary", probe_none)
    }
}

impl OpArgs for CaptureStopArgs {
    const FIELDS: &'static [&'static str] = &["id"];
    fn locate(args: &Map<String, Value>) -> Option<String> {
        locate_one::<u64>(args, "id", probe_none)
    }
}

/// Reads an operation's `args` (`null` is `{}`). An error keeps serde's
/// message and names the field: `args.routez` for an unknown or missing
/// argument, `args.routes[1].via` for a bad value inside one.
fn parse_args<T: OpArgs>(args: &Value) -> Result<T, ApiError> {
    let v = if args.is_null() {
        Value::Object(Map::new())
    } else {
        args.clone()
    };
    let e = match serde_json::from_value::<T>(v.clone()) {
        Ok(a) => return Ok(a),
        Err(e) => e,
    };
    let msg = e.to_string();
    let field = match &v {
        Value::Object(m) => {
            let top = named_field(&msg).filter(|f| {
                let known = T::FIELDS.contains(f);
                // Unknown: a key of args that is not an argument. Missing:
                // an argument that is not a key of args.
                if msg.starts_with("unknown") {
                    !known && m.contains_key(*f)
                } else {
                    known && !m.contains_key(*f)
                }
            });
            match top {
                Some(f) => Some(format!("args.{f}")),
                None => T::locate(m)
                    .map(|p| format!("args.{p}"))
                    .or_else(|| quoted(&msg).map(|f| format!("args.{f}"))),
            }
        }
        _ => None,
    };
    Err(ApiError::new(field.or(Some("args".into())), msg))
}

impl Request {
    /// Every operation's name, in the order of the reference (docs/api.md).
    pub const OPS: &'static [&'static str] = &[
        "ports.list",
        "ports.add",
        "ports.remove",
        "routes.list",
        "routes.add",
        "routes.replace",
        "routes.remove",
        "neighbours.list",
        "neighbours.set",
        "neighbours.remove",
        "node.get",
        "node.set",
        "stats",
        "flows",
        "trace",
        "reload",
        "capture.start",
        "capture.read",
        "capture.stop",
        "upgrade",
    ];

    /// The operation's name, e.g. `routes.add`.
    pub fn op(&self) -> &'static str {
        match self {
            Request::PortsList => "ports.list",
            Request::PortsAdd(_) => "ports.add",
            Request::PortsRemove(_) => "ports.remove",
            Request::RoutesList => "routes.list",
            Request::RoutesAdd(_) => "routes.add",
            Request::RoutesReplace(_) => "routes.replace",
            Request::RoutesRemove(_) => "routes.remove",
            Request::NeighboursList => "neighbours.list",
            Request::NeighboursSet(_) => "neighbours.set",
            Request::NeighboursRemove(_) => "neighbours.remove",
            Request::NodeGet => "node.get",
            Request::NodeSet(_) => "node.set",
            Request::Stats => "stats",
            Request::Flows => "flows",
            Request::Trace(_) => "trace",
            Request::Reload => "reload",
            Request::CaptureStart(_) => "capture.start",
            Request::CaptureRead(_) => "capture.read",
            Request::CaptureStop(_) => "capture.stop",
            Request::Upgrade(_) => "upgrade",
        }
    }

    /// The `args` object (`null` for operations without arguments).
    pub fn args(&self) -> Value {
        fn v<T: Serialize>(a: &T) -> Value {
            serde_json::to_value(a).expect("arguments serialize")
        }
        match self {
            Request::PortsList
            | Request::RoutesList
            | Request::NeighboursList
            | Request::NodeGet
            | Request::Stats
            | Request::Flows
            | Request::Reload => Value::Null,
            Request::PortsAdd(a) => v(a),
            Request::PortsRemove(a) => v(a),
            Request::RoutesAdd(a) | Request::RoutesReplace(a) => v(a),
            Request::RoutesRemove(a) => v(a),
            Request::NeighboursSet(a) => v(a),
            Request::NeighboursRemove(a) => v(a),
            Request::NodeSet(a) => v(a),
            Request::Trace(a) => v(a),
            Request::CaptureStart(a) => v(a),
            Request::CaptureRead(a) => v(a),
            Request::CaptureStop(a) => v(a),
            Request::Upgrade(a) => v(a),
        }
    }

    /// The request line, without the newline that ends it on the socket.
    pub fn to_line(&self) -> String {
        serde_json::to_string(&Envelope {
            version: VERSION,
            op: self.op().into(),
            args: self.args(),
        })
        .expect("requests serialize")
    }

    /// Reads a request line (trailing whitespace is ignored). The error is
    /// what the daemon answers: `not a request: …` naming the envelope
    /// field, `version`, `op`, or `args.…` (docs/api.md, "Errors").
    ///
    /// Operations without arguments ignore `args`.
    pub fn from_line(line: &str) -> Result<Request, ApiError> {
        let env: Envelope = serde_json::from_str(line.trim_end()).map_err(|e| {
            let msg = e.to_string();
            ApiError::new(
                quoted(&msg).map(str::to_string),
                format!("not a request: {msg}"),
            )
        })?;
        Request::from_envelope(env)
    }

    /// Checks the version and reads the operation's arguments.
    fn from_envelope(env: Envelope) -> Result<Request, ApiError> {
        if env.version != VERSION {
            return Err(ApiError::at(
                "version",
                format!(
                    "version {} is not spoken here; this sluiced speaks {VERSION}",
                    env.version
                ),
            ));
        }
        let a = &env.args;
        Ok(match env.op.as_str() {
            "ports.list" => Request::PortsList,
            "ports.add" => Request::PortsAdd(parse_args(a)?),
            "ports.remove" => Request::PortsRemove(parse_args(a)?),
            "routes.list" => Request::RoutesList,
            "routes.add" => Request::RoutesAdd(parse_args(a)?),
            "routes.replace" => Request::RoutesReplace(parse_args(a)?),
            "routes.remove" => Request::RoutesRemove(parse_args(a)?),
            "neighbours.list" => Request::NeighboursList,
            "neighbours.set" => Request::NeighboursSet(parse_args(a)?),
            "neighbours.remove" => Request::NeighboursRemove(parse_args(a)?),
            "node.get" => Request::NodeGet,
            "node.set" => Request::NodeSet(parse_args(a)?),
            "stats" => Request::Stats,
            "flows" => Request::Flows,
            "trace" => Request::Trace(parse_args(a)?),
            "reload" => Request::Reload,
            "capture.start" => Request::CaptureStart(parse_args(a)?),
            "capture.read" => Request::CaptureRead(parse_args(a)?),
            "capture.stop" => Request::CaptureStop(parse_args(a)?),
            "upgrade" => Request::Upgrade(parse_args(a)?),
            other => {
                return Err(ApiError::at(
                    "op",
                    format!("unknown operation `{other}`; see docs/api.md"),
                ))
            }
        })
    }
}

impl std::str::FromStr for Request {
    type Err = ApiError;
    fn from_str(line: &str) -> Result<Self, ApiError> {
        Request::from_line(line)
    }
}

/// Reads a request as [`Request::from_line`] does; the error's message is
/// the [`ApiError`]'s `Display`.
impl<'de> Deserialize<'de> for Request {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let env = Envelope::deserialize(d)?;
        Request::from_envelope(env).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Request {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Envelope {
            version: VERSION,
            op: self.op().into(),
            args: self.args(),
        }
        .serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_both_ways() {
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
        assert_eq!(parse_hex("00 ab:10\n"), Some(vec![0, 0xab, 0x10]));
        assert_eq!(parse_hex("0g"), None);
        assert_eq!(parse_hex("abc"), None);
        assert_eq!(parse_hex("+1"), None);
        assert_eq!(parse_hex("é0"), None);
        assert_eq!(parse_hex(""), Some(vec![]));
        let t = TraceArgs::new("pod-a", &[1, 2]);
        assert_eq!(t.frame, "0102");
        assert_eq!(t.frame_bytes().unwrap(), vec![1, 2]);
        let bad = TraceArgs {
            port: "pod-a".into(),
            frame: "0g".into(),
        };
        assert_eq!(
            bad.frame_bytes().unwrap_err(),
            ApiError::at("args.frame", "not hex bytes")
        );
    }

    #[test]
    fn ops_are_listed_once() {
        let mut v = Request::OPS.to_vec();
        v.sort();
        v.dedup();
        assert_eq!(v.len(), Request::OPS.len());
    }
}
