//! A node's forwarding configuration: node settings, ports, routes and
//! underlay neighbours, as the replay tool reads it from TOML and as the
//! control API (later) carries it as JSON.
//!
//! Parsing is strict: unknown keys are errors, and [`NodeConfig::validate`]
//! checks everything that `serde` cannot, naming the key at fault. A config
//! that passes validation builds [`crate::tables::Tables`] without errors.

use crate::wire::MacAddr;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

// The value types are the control API's: one definition, shared with every
// client through `sluice-api`.
pub use sluice_api::types::{
    IfAddr, Ipv4Net, NeighbourConfig, NodeSettings, PortConfig, PortKind, RouteConfig, RxMode,
    TunnelSettings, Via, DEFAULT_VNI, DEFAULT_VXLAN_PORT,
};

fn default_api_socket() -> std::path::PathBuf {
    "/run/sluice/sluiced.sock".into()
}
fn default_metrics_address() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 9472))
}
fn default_burst() -> u16 {
    32
}
fn default_pod_records() -> std::path::PathBuf {
    sluice_api::attachment::DEFAULT_DIR.into()
}

/// Settings of the `sluiced` process (the replay tool ignores them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonSettings {
    /// The control API's Unix socket.
    #[serde(default = "default_api_socket")]
    pub api_socket: std::path::PathBuf,
    /// Where `/metrics` is served (loopback by default).
    #[serde(default = "default_metrics_address")]
    pub metrics_address: std::net::SocketAddr,
    /// Cores to pin one worker each to; empty: one worker, not pinned.
    #[serde(default)]
    pub workers: Vec<usize>,
    /// Default rx mode of every port.
    #[serde(default)]
    pub rx_mode: RxMode,
    /// Packets per burst, 32 to 256.
    #[serde(default = "default_burst")]
    pub burst: u16,
    /// What is logged: a `tracing` filter such as `info` or
    /// `sluiced=debug,info`. `SLUICE_LOG` (then `RUST_LOG`) in the
    /// environment wins.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// How log lines are written.
    #[serde(default)]
    pub log_format: LogFormat,
    /// The directory of the CNI plugin's attachment records
    /// (`sluice_api::attachment`), whose pods `sluiced` attaches again at
    /// start; empty: none are read. Absolute (validated). Use
    /// [`DaemonSettings::pod_records_dir`].
    #[serde(default = "default_pod_records")]
    pub pod_records: std::path::PathBuf,
    /// Which port backend moves the packets.
    #[serde(default)]
    pub backend: BackendKind,
    /// Settings of the DPDK backend (read when `backend = "dpdk"`).
    #[serde(default)]
    pub dpdk: DpdkSettings,
    /// The most routes, neighbours and ports the switch holds.
    #[serde(default)]
    pub limits: Limits,
    /// Where sluiced keeps the routes, neighbours and node settings it was
    /// programmed with at runtime, to forward with them again at once after
    /// a restart. Unset: beside the API socket (`sluiced.sock` gives
    /// `sluiced.tables.json`); empty: not kept. Use
    /// [`DaemonSettings::state_file_path`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_file: Option<std::path::PathBuf>,
}

/// The most the switch holds (`[daemon.limits]`): a configuration file or
/// an API request past one is refused with an error naming the limit, and
/// nothing changes. They bound the daemon's memory (docs/limits.md gives
/// what it uses at the defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Configured routes (pods' own `/32`s are not counted: ports bound them).
    #[serde(default = "default_max_routes")]
    pub routes: u32,
    /// Underlay neighbours, static and learned from the kernel together
    /// (learned ones past the limit are not taken; static ones are refused).
    #[serde(default = "default_max_neighbours")]
    pub neighbours: u32,
    /// Ports of every kind attached at once (at most 1023: port ids take 10
    /// bits in the counters). Removed ports' ids are reused.
    #[serde(default = "default_max_ports")]
    pub ports: u32,
}

/// Default of [`Limits::routes`].
pub const DEFAULT_MAX_ROUTES: u32 = 1 << 20;
/// Default of [`Limits::neighbours`].
pub const DEFAULT_MAX_NEIGHBOURS: u32 = 1 << 16;
/// The most ports there can be ([`crate::counters::MAX_PORTS`] less the
/// shared last slot), and the default of [`Limits::ports`].
pub const MAX_PORTS_LIMIT: u32 = crate::counters::MAX_PORTS as u32 - 1;

fn default_max_routes() -> u32 {
    DEFAULT_MAX_ROUTES
}
fn default_max_neighbours() -> u32 {
    DEFAULT_MAX_NEIGHBOURS
}
fn default_max_ports() -> u32 {
    MAX_PORTS_LIMIT
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            routes: DEFAULT_MAX_ROUTES,
            neighbours: DEFAULT_MAX_NEIGHBOURS,
            ports: MAX_PORTS_LIMIT,
        }
    }
}

impl Limits {
    /// Checks the limits themselves; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.routes == 0 {
            return Err(err("daemon.limits.routes", "must be at least 1"));
        }
        if self.neighbours == 0 {
            return Err(err("daemon.limits.neighbours", "must be at least 1"));
        }
        if self.ports == 0 || self.ports > MAX_PORTS_LIMIT {
            return Err(err(
                "daemon.limits.ports",
                format!("{} is not 1 to {MAX_PORTS_LIMIT}", self.ports),
            ));
        }
        Ok(())
    }

    /// The error for `what` past its limit: `have` would be held, `max` may.
    pub fn exceeded(key: &str, what: &str, have: usize, max: u32) -> ConfigError {
        err(
            key,
            format!("{have} {what} would be held; daemon.limits.{what} is {max}"),
        )
    }
}

/// The port backend of a `sluiced`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// AF_XDP sockets on kernel netdevs, and a TAP for the host port.
    #[default]
    AfXdp,
    /// DPDK: ports are DPDK devices (PCI NICs, vdevs), pods attach over
    /// vhost-user or DPDK's `net_af_xdp`.
    Dpdk,
}

fn default_dpdk_memory() -> u32 {
    512
}
fn default_file_prefix() -> String {
    "sluice".into()
}
fn default_mbufs() -> u32 {
    16383
}
fn default_mbuf_cache() -> u32 {
    256
}
fn default_descriptors() -> u16 {
    1024
}

/// The DPDK backend's settings (`[daemon.dpdk]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpdkSettings {
    /// Run without huge pages (EAL `--no-huge`): for labs and tests, where
    /// vhost-user pods cannot share the memory and physical NICs cannot DMA.
    #[serde(default)]
    pub no_huge: bool,
    /// Memory EAL reserves at start, in MiB (EAL `-m`).
    #[serde(default = "default_dpdk_memory")]
    pub memory_mb: u32,
    /// EAL `--file-prefix`: several DPDK processes on one machine need
    /// different ones.
    #[serde(default = "default_file_prefix")]
    pub file_prefix: String,
    /// mbufs in the pool of each NUMA socket that has a worker.
    #[serde(default = "default_mbufs")]
    pub mbufs: u32,
    /// mbufs each worker caches out of its pool (DPDK's per-lcore cache).
    #[serde(default = "default_mbuf_cache")]
    pub mbuf_cache: u32,
    /// RX descriptors per queue.
    #[serde(default = "default_descriptors")]
    pub rx_descriptors: u16,
    /// TX descriptors per queue.
    #[serde(default = "default_descriptors")]
    pub tx_descriptors: u16,
    /// A hardware profile (`hw-profiles/*.toml`) applied to the uplink:
    /// queues, cores and the `rte_flow` rules that steer tunnels.
    #[serde(default)]
    pub profile: Option<std::path::PathBuf>,
    /// More EAL arguments, passed as they are (after sluice's own).
    #[serde(default)]
    pub eal_args: Vec<String>,
}

impl Default for DpdkSettings {
    fn default() -> Self {
        DpdkSettings {
            no_huge: false,
            memory_mb: default_dpdk_memory(),
            file_prefix: default_file_prefix(),
            mbufs: default_mbufs(),
            mbuf_cache: default_mbuf_cache(),
            rx_descriptors: default_descriptors(),
            tx_descriptors: default_descriptors(),
            profile: None,
            eal_args: Vec::new(),
        }
    }
}

impl DaemonSettings {
    /// Where attachment records are read from at start; `None` when
    /// `pod_records` is empty (disabled).
    pub fn pod_records_dir(&self) -> Option<&std::path::Path> {
        (!self.pod_records.as_os_str().is_empty()).then_some(self.pod_records.as_path())
    }

    /// The saved-tables file ([`DaemonSettings::state_file`]); `None` when
    /// turned off.
    pub fn state_file_path(&self) -> Option<std::path::PathBuf> {
        match &self.state_file {
            Some(p) if p.as_os_str().is_empty() => None,
            Some(p) => Some(p.clone()),
            None => Some(self.api_socket.with_extension("tables.json")),
        }
    }
}

/// How `sluiced` writes its log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// One human-readable line per event: informational ones on stdout,
    /// warnings and errors on stderr.
    #[default]
    Text,
    /// One JSON object per event, on the same streams.
    Json,
}

fn default_log_level() -> String {
    "info".into()
}

impl Default for DaemonSettings {
    fn default() -> Self {
        DaemonSettings {
            api_socket: default_api_socket(),
            metrics_address: default_metrics_address(),
            workers: Vec::new(),
            rx_mode: RxMode::default(),
            burst: default_burst(),
            log_level: default_log_level(),
            log_format: LogFormat::default(),
            pod_records: default_pod_records(),
            backend: BackendKind::default(),
            dpdk: DpdkSettings::default(),
            limits: Limits::default(),
            state_file: None,
        }
    }
}

/// The whole configuration of one node's switch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Process settings (`sluiced`).
    #[serde(default)]
    pub daemon: DaemonSettings,
    /// Node-wide settings.
    pub node: NodeSettings,
    /// Tunnel settings.
    #[serde(default)]
    pub tunnel: TunnelSettings,
    /// Ports, in id order (the first is port 0).
    #[serde(default, rename = "port")]
    pub ports: Vec<PortConfig>,
    /// Routes beyond the implied `/32` of each pod port.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// Underlay neighbours (IP to MAC), as the kernel's neighbour table has them.
    #[serde(default, rename = "neighbour")]
    pub neighbours: Vec<NeighbourConfig>,
}

/// A configuration error: the key at fault and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct ConfigError {
    /// Dotted path of the key, e.g. `port[2].ip`.
    pub key: String,
    /// What is wrong.
    pub problem: String,
}

fn err(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        problem: problem.into(),
    }
}

impl NodeConfig {
    /// Parses and validates TOML.
    pub fn from_toml_str(s: &str) -> Result<Self, ConfigError> {
        let cfg: NodeConfig = toml::from_str(s).map_err(|e| {
            let msg = e.message().to_string();
            let key = e
                .span()
                .map(|sp| describe_span(s, sp))
                .unwrap_or_else(|| "config".into());
            err(key, msg)
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks what serde cannot; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let n = &self.node;
        let d = &self.daemon;
        if !(32..=256).contains(&d.burst) {
            return Err(err(
                "daemon.burst",
                format!("{} is outside 32..=256", d.burst),
            ));
        }
        if let Some(dir) = d.pod_records_dir() {
            if !dir.is_absolute() {
                return Err(err(
                    "daemon.pod_records",
                    format!(
                        "`{}` is relative; give an absolute directory, or \"\" to read no records",
                        dir.display()
                    ),
                ));
            }
        }
        check_dpdk(d).map_err(|(f, m)| err(format!("daemon.dpdk.{f}"), m))?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut seen_cores = HashSet::new();
        for (i, &c) in d.workers.iter().enumerate() {
            if c >= cores {
                return Err(err(
                    format!("daemon.workers[{i}]"),
                    format!("core {c} does not exist (this machine has {cores})"),
                ));
            }
            if !seen_cores.insert(c) {
                return Err(err(
                    format!("daemon.workers[{i}]"),
                    format!("core {c} is listed twice"),
                ));
            }
        }
        if !n.pod_network.covers(&n.pod_subnet) {
            return Err(err(
                "node.pod_subnet",
                format!(
                    "{} is not inside pod_network {}",
                    n.pod_subnet, n.pod_network
                ),
            ));
        }
        check_mac(n.router_mac).map_err(|m| err("node.router_mac", m))?;
        let gw = n.gateway();
        if !n.pod_subnet.contains(gw) {
            return Err(err(
                "node.gateway_ip",
                format!("{gw} is not inside pod_subnet {}", n.pod_subnet),
            ));
        }
        if self.tunnel.vni == 0 || self.tunnel.vni > 0x00ff_ffff {
            return Err(err(
                "tunnel.vni",
                format!("{} is not a VNI (1 to 16777215)", self.tunnel.vni),
            ));
        }
        if self.tunnel.vxlan_port == 0 {
            return Err(err("tunnel.vxlan_port", "0 is not a UDP port"));
        }
        if let Some(m) = self.tunnel.vtep_mac {
            check_mac(m).map_err(|m| err("tunnel.vtep_mac", m))?;
        }
        let limits = &self.daemon.limits;
        limits.validate()?;
        let live_ports = self.ports.iter().filter(|p| !p.removed).count();
        if live_ports > limits.ports as usize || self.ports.len() > MAX_PORTS_LIMIT as usize {
            return Err(Limits::exceeded(
                "port",
                "ports",
                live_ports.max(self.ports.len()),
                limits.ports,
            ));
        }
        if self.routes.len() > limits.routes as usize {
            return Err(Limits::exceeded(
                "route",
                "routes",
                self.routes.len(),
                limits.routes,
            ));
        }
        if self.neighbours.len() > limits.neighbours as usize {
            return Err(Limits::exceeded(
                "neighbour",
                "neighbours",
                self.neighbours.len(),
                limits.neighbours,
            ));
        }
        let mut names = HashSet::new();
        let mut pod_ips = HashSet::new();
        let (mut uplinks, mut hosts) = (0, 0);
        for (i, p) in self.ports.iter().enumerate() {
            if p.removed {
                continue;
            }
            let k = |f: &str| format!("port[{i}].{f}");
            let name_taken = !names.insert(p.name.as_str());
            let ip_taken = p.kind == PortKind::Pod && p.ip.is_some_and(|ip| !pod_ips.insert(ip));
            match p.kind {
                PortKind::Uplink => uplinks += 1,
                PortKind::Host => hosts += 1,
                PortKind::Pod => {}
            }
            let count = match p.kind {
                PortKind::Uplink => uplinks,
                PortKind::Host => hosts,
                PortKind::Pod => 0,
            };
            check_port(n, p, name_taken, ip_taken, count).map_err(|(f, m)| err(k(f), m))?;
            check_port_device(d.backend, p).map_err(|(f, m)| err(k(f), m))?;
        }
        let uplink = self
            .ports
            .iter()
            .find(|p| p.kind == PortKind::Uplink && !p.removed);
        let has_host = self.ports.iter().any(|p| p.kind == PortKind::Host);
        let mut prefixes = HashSet::new();
        for (i, r) in self.routes.iter().enumerate() {
            let k = |f: &str| format!("route[{i}].{f}");
            if !prefixes.insert(r.prefix) {
                return Err(err(
                    k("prefix"),
                    format!("{} is routed by an earlier route", r.prefix),
                ));
            }
            let pod_named = |name: &str| {
                self.ports
                    .iter()
                    .any(|p| p.kind == PortKind::Pod && !p.removed && p.name == name)
            };
            check_route(
                n,
                r,
                pod_ips.contains(&r.prefix.addr()),
                uplink,
                pod_named,
                has_host,
            )
            .map_err(|(f, m)| err(k(f), m))?;
        }
        let mut neigh = HashSet::new();
        for (i, nb) in self.neighbours.iter().enumerate() {
            if !neigh.insert(nb.ip) {
                return Err(err(
                    format!("neighbour[{i}].ip"),
                    format!("{} is listed twice", nb.ip),
                ));
            }
            check_neighbour(nb).map_err(|(f, m)| err(format!("neighbour[{i}].{f}"), m))?;
        }
        Ok(())
    }
}

/// A problem with one item: the field at fault and what is wrong.
pub(crate) type ItemProblem = (&'static str, String);

/// The longest interface name the kernel takes (`IFNAMSIZ` - 1).
pub const MAX_NAME_LEN: usize = 15;

/// A MAC that can be a station's: neither zero nor multicast (broadcast).
fn check_mac(m: MacAddr) -> Result<(), String> {
    if !m.is_unicast() || m == MacAddr::ZERO {
        return Err(format!("{m} is not a unicast MAC"));
    }
    Ok(())
}

/// An underlay (node) address: unicast, and outside the pod network.
fn check_node_addr(ip: std::net::Ipv4Addr, pod_network: Ipv4Net) -> Result<(), String> {
    let why = if ip.is_unspecified() {
        "it is unspecified".to_string()
    } else if ip.is_broadcast() {
        "it is the broadcast address".to_string()
    } else if ip.is_multicast() {
        "it is multicast".to_string()
    } else if ip.octets()[0] >= 240 {
        "it is reserved (class E)".to_string()
    } else if ip.is_loopback() {
        "it is loopback".to_string()
    } else if pod_network.contains(ip) {
        format!("it is inside pod_network {pod_network}")
    } else {
        return Ok(());
    };
    Err(format!("{ip} is not a node address: {why}"))
}

/// A name the kernel takes for an interface: 1 to 15 bytes, no `/` or
/// whitespace, not `.` or `..`.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!(
            "`{name}` is {} bytes; an interface name is 1 to {MAX_NAME_LEN} bytes",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("`{name}` is not an interface name"));
    }
    if name.chars().any(|c| c == '/' || c.is_whitespace()) {
        return Err(format!(
            "`{name}` is not an interface name: no `/` or whitespace"
        ));
    }
    Ok(())
}

/// The checks of one port that [`NodeConfig::validate`] makes: `name_taken`
/// (an earlier live port has its name), `ip_taken` (an earlier pod port has
/// its IP) and `count` (live ports of its kind up to and including it, for
/// the uplink and host) come from the caller.
pub(crate) fn check_port(
    n: &NodeSettings,
    p: &PortConfig,
    name_taken: bool,
    ip_taken: bool,
    count: usize,
) -> Result<(), ItemProblem> {
    let gw = n.gateway();
    check_name(&p.name).map_err(|m| ("name", m))?;
    if name_taken {
        return Err(("name", format!("`{}` is used by an earlier port", p.name)));
    }
    if !(68..=9216).contains(&p.mtu) {
        return Err(("mtu", format!("{} is outside 68..=9216", p.mtu)));
    }
    check_mac(p.mac).map_err(|m| ("mac", m))?;
    let forbid = |field: &'static str, present: bool| {
        if present {
            Err((
                field,
                format!("not used by a {:?} port", p.kind).to_lowercase(),
            ))
        } else {
            Ok(())
        }
    };
    match p.kind {
        PortKind::Uplink => {
            if count > 1 {
                return Err(("kind", "only one uplink port is supported".into()));
            }
            let Some(a) = p.address else {
                return Err((
                    "address",
                    "an uplink needs its underlay address, e.g. 192.168.1.10/24".into(),
                ));
            };
            check_node_addr(a.ip, n.pod_network).map_err(|m| ("address", m))?;
            if a.len == 0 || a.len > 31 {
                return Err((
                    "address",
                    format!("prefix length {} leaves no on-link peers", a.len),
                ));
            }
            if let Some(g) = p.gateway {
                check_node_addr(g, n.pod_network).map_err(|m| ("gateway", m))?;
                if !a.network().contains(g) {
                    return Err(("gateway", format!("{g} is not on-link in {}", a.network())));
                }
            }
            forbid("ip", p.ip.is_some())?;
        }
        PortKind::Host => {
            if count > 1 {
                return Err(("kind", "only one host port is supported".into()));
            }
            forbid("address", p.address.is_some())?;
            forbid("gateway", p.gateway.is_some())?;
            forbid("ip", p.ip.is_some())?;
        }
        PortKind::Pod => {
            let Some(ip) = p.ip else {
                return Err(("ip", "a pod port needs the pod's IPv4 address".into()));
            };
            if !n.pod_subnet.contains(ip) {
                return Err((
                    "ip",
                    format!("{ip} is not inside pod_subnet {}", n.pod_subnet),
                ));
            }
            if ip == gw {
                return Err(("ip", format!("{ip} is the gateway address")));
            }
            let sub = n.pod_subnet;
            if sub.len() < 31 {
                if ip == sub.addr() {
                    return Err(("ip", format!("{ip} is the network address of {sub}")));
                }
                if u32::from(ip) == sub.addr_u32() | !sub.mask() {
                    return Err(("ip", format!("{ip} is the broadcast address of {sub}")));
                }
            }
            if ip_taken {
                return Err(("ip", format!("{ip} is used by an earlier pod port")));
            }
            forbid("address", p.address.is_some())?;
            forbid("gateway", p.gateway.is_some())?;
        }
    }
    Ok(())
}

/// The checks of one route that [`NodeConfig::validate`] makes after the
/// duplicate-prefix check: `is_pod_ip` (its address is a live pod port's),
/// the live uplink, whether a live pod port has a name, and whether the
/// configuration has a host port come from the caller.
pub(crate) fn check_route(
    n: &NodeSettings,
    r: &RouteConfig,
    is_pod_ip: bool,
    uplink: Option<&PortConfig>,
    pod_named: impl Fn(&str) -> bool,
    has_host: bool,
) -> Result<(), ItemProblem> {
    if r.prefix.len() == 32 && is_pod_ip {
        return Err((
            "prefix",
            format!(
                "{} is a pod port's own address, routed to it already",
                r.prefix
            ),
        ));
    }
    let needs_node = matches!(r.via, Via::Vxlan | Via::Ipip | Via::HostGw);
    match (needs_node, r.node) {
        (true, None) => {
            return Err((
                "node",
                format!("via {:?} needs the remote node's address", r.via).to_lowercase(),
            ))
        }
        (false, Some(_)) => {
            return Err(("node", format!("not used via {:?}", r.via).to_lowercase()))
        }
        _ => {}
    }
    if let Some(node) = r.node {
        check_node_addr(node, n.pod_network).map_err(|m| ("node", m))?;
    }
    if needs_node && uplink.is_none() {
        return Err(("via", "routes to other nodes need an uplink port".into()));
    }
    if let (Some(node), Some(a)) = (r.node, uplink.and_then(|u| u.address)) {
        if node == a.ip {
            return Err(("node", format!("{node} is this node's own address")));
        }
        if r.via == Via::HostGw && !a.network().contains(node) {
            return Err((
                "node",
                format!("host-gw needs {node} on-link in {}", a.network()),
            ));
        }
    }
    match (r.via, r.vtep_mac) {
        (Via::Vxlan, None) => {
            return Err(("vtep_mac", "via vxlan needs the remote VTEP MAC".into()))
        }
        (Via::Vxlan, Some(m)) if check_mac(m).is_err() => {
            return Err(("vtep_mac", format!("{m} is not a unicast MAC")))
        }
        (Via::Vxlan, Some(_)) | (_, None) => {}
        (_, Some(_)) => return Err(("vtep_mac", "only used via vxlan".into())),
    }
    match (r.via, &r.port) {
        (Via::Pod, None) => return Err(("port", "via pod needs the pod port's name".into())),
        (Via::Pod, Some(name)) => {
            if !pod_named(name) {
                return Err(("port", format!("no pod port is named `{name}`")));
            }
        }
        (_, Some(_)) => return Err(("port", "only used via pod".into())),
        (_, None) => {}
    }
    if r.via == Via::Host && !has_host {
        return Err(("via", "via host needs a host port".into()));
    }
    Ok(())
}

/// Names the TOML table and key around a byte span, for error messages.
fn describe_span(src: &str, span: std::ops::Range<usize>) -> String {
    let start = span.start.min(src.len());
    let line_start = src[..start].rfind('\n').map_or(0, |i| i + 1);
    let before = &src[..line_start];
    let line_no = before.matches('\n').count() + 1;
    let mut table = String::new();
    let mut counts: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for line in before.lines() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix("[[").and_then(|r| r.strip_suffix("]]")) {
            let c = counts.entry(name.to_string()).or_insert(0);
            table = format!("{name}[{}]", *c);
            *c += 1;
        } else if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            table = name.to_string();
        }
    }
    let line = src[line_start..].lines().next().unwrap_or("");
    let key = line
        .split('=')
        .next()
        .map(str::trim)
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    match (table.is_empty(), key) {
        (false, Some(k)) => format!("{table}.{k} (line {line_no})"),
        (false, None) => format!("{table} (line {line_no})"),
        (true, Some(k)) => format!("{k} (line {line_no})"),
        (true, None) => format!("line {line_no}"),
    }
}

/// The checks of one neighbour that [`NodeConfig::validate`] makes after the
/// duplicate-IP check.
pub(crate) fn check_neighbour(nb: &NeighbourConfig) -> Result<(), ItemProblem> {
    check_mac(nb.mac).map_err(|m| ("mac", m))?;
    Ok(())
}

/// The DPDK settings' own limits.
fn check_dpdk(d: &DaemonSettings) -> Result<(), (&'static str, String)> {
    let p = &d.dpdk;
    if p.memory_mb < 64 {
        return Err((
            "memory_mb",
            format!("{} MiB is too little for EAL (at least 64)", p.memory_mb),
        ));
    }
    if p.file_prefix.is_empty() || p.file_prefix.contains('/') {
        return Err((
            "file_prefix",
            format!("`{}` is not a file name prefix", p.file_prefix),
        ));
    }
    if p.mbufs < 1024 {
        return Err((
            "mbufs",
            format!("{} mbufs cannot fill the queues (at least 1024)", p.mbufs),
        ));
    }
    if p.mbuf_cache > 512 || p.mbuf_cache as u64 * 2 > p.mbufs as u64 {
        return Err((
            "mbuf_cache",
            format!(
                "{} is more than DPDK allows (512, and half the pool)",
                p.mbuf_cache
            ),
        ));
    }
    for (f, n) in [
        ("rx_descriptors", p.rx_descriptors),
        ("tx_descriptors", p.tx_descriptors),
    ] {
        if !(64..=4096).contains(&n) || !n.is_power_of_two() {
            return Err((f, format!("{n} is not a power of two from 64 to 4096")));
        }
    }
    Ok(())
}

/// A port's DPDK device fields against the backend and its kind.
pub fn check_port_device(
    backend: BackendKind,
    p: &PortConfig,
) -> Result<(), (&'static str, String)> {
    if backend == BackendKind::AfXdp {
        if p.devargs.is_some() {
            return Err((
                "devargs",
                "only the DPDK backend opens DPDK devices (daemon.backend = \"dpdk\")".into(),
            ));
        }
        if p.vhost_user.is_some() {
            return Err((
                "vhost_user",
                "vhost-user ports need the DPDK backend (daemon.backend = \"dpdk\")".into(),
            ));
        }
        return Ok(());
    }
    if let Some(dev) = &p.devargs {
        if dev.trim().is_empty() || dev.contains(char::is_whitespace) {
            return Err((
                "devargs",
                format!("`{dev}` is not a PCI address or vdev string"),
            ));
        }
    }
    if let Some(sock) = &p.vhost_user {
        if p.kind != PortKind::Pod {
            return Err(("vhost_user", "only pod ports attach over vhost-user".into()));
        }
        if p.devargs.is_some() {
            return Err(("vhost_user", "give devargs or vhost_user, not both".into()));
        }
        if !sock.is_absolute() {
            return Err((
                "vhost_user",
                format!(
                    "`{}` is relative; give the socket's absolute path",
                    sock.display()
                ),
            ));
        }
        if sock.as_os_str().len() > 107 || sock.to_str().is_none_or(|s| s.contains(',')) {
            return Err((
                "vhost_user",
                format!(
                    "`{}` cannot be a vhost-user socket path (at most 107 bytes, no commas)",
                    sock.display()
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    pub(crate) const EXAMPLE: &str = r#"
[node]
pod_network = "10.5.0.0/16"
pod_subnet = "10.5.1.0/24"
router_mac = "02:00:00:00:00:01"

[tunnel]
vni = 1
vxlan_port = 8472

[[port]]
name = "eth0"
kind = "uplink"
mac = "02:00:00:00:aa:01"
address = "192.168.50.1/24"
mtu = 1500

[[port]]
name = "pod-a"
kind = "pod"
mac = "02:00:00:00:01:02"
ip = "10.5.1.2"
mtu = 1450

[[route]]
prefix = "10.5.2.0/24"
via = "vxlan"
node = "192.168.50.2"
vtep_mac = "02:00:00:00:bb:02"

[[neighbour]]
ip = "192.168.50.2"
mac = "02:00:00:00:aa:02"
"#;

    #[test]
    fn dpdk_device_keys_are_checked_against_the_backend() {
        let with = |daemon: &str, port_extra: &str| {
            let text = EXAMPLE.replacen(
                "name = \"pod-a\"\n",
                &format!("name = \"pod-a\"\n{port_extra}\n"),
                1,
            );
            NodeConfig::from_toml_str(&format!("{daemon}\n{text}"))
        };
        let e = with("", "devargs = \"net_null0\"").unwrap_err();
        assert_eq!(e.key, "port[1].devargs");
        assert!(e.problem.contains("daemon.backend = \"dpdk\""), "{e}");
        let e = with("", "vhost_user = \"/run/x.sock\"").unwrap_err();
        assert_eq!(e.key, "port[1].vhost_user");
        let dpdk = "[daemon]\nbackend = \"dpdk\"";
        with(dpdk, "vhost_user = \"/run/x.sock\"").unwrap();
        with(dpdk, "devargs = \"net_null0,no-rx=1\"").unwrap();
        let e = with(dpdk, "vhost_user = \"run/x.sock\"").unwrap_err();
        assert!(e.problem.contains("relative"), "{e}");
        let e = with(
            dpdk,
            "vhost_user = \"/run/x.sock\"\ndevargs = \"net_null0\"",
        )
        .unwrap_err();
        assert!(e.problem.contains("not both"), "{e}");
        let e = with(dpdk, "devargs = \"net null\"").unwrap_err();
        assert_eq!(e.key, "port[1].devargs");
        let e = with(&format!("{dpdk}\n[daemon.dpdk]\nrx_descriptors = 1000"), "").unwrap_err();
        assert_eq!(e.key, "daemon.dpdk.rx_descriptors");
        let e = with(&format!("{dpdk}\n[daemon.dpdk]\nmbufs = 10"), "").unwrap_err();
        assert_eq!(e.key, "daemon.dpdk.mbufs");
        let e = with(&format!("{dpdk}\n[daemon.dpdk]\nhuge = true"), "").unwrap_err();
        assert!(e.problem.contains("unknown field"), "{e}");
    }

    #[test]
    fn example_parses_with_defaults() {
        let c = NodeConfig::from_toml_str(EXAMPLE).unwrap();
        assert_eq!(c.node.gateway(), Ipv4Addr::new(10, 5, 1, 1));
        assert_eq!(c.tunnel.vni, 1);
        assert_eq!(c.ports.len(), 2);
        assert_eq!(c.routes[0].via, Via::Vxlan);
    }

    #[test]
    fn pod_records_default_to_the_plugins_directory_and_can_be_turned_off() {
        let c = NodeConfig::from_toml_str(EXAMPLE).unwrap();
        assert_eq!(
            c.daemon.pod_records_dir(),
            Some(std::path::Path::new(sluice_api::attachment::DEFAULT_DIR))
        );
        let off = format!("[daemon]\npod_records = \"\"\n{EXAMPLE}");
        let c = NodeConfig::from_toml_str(&off).unwrap();
        assert_eq!(c.daemon.pod_records_dir(), None);
        let elsewhere = format!("[daemon]\npod_records = \"/srv/records\"\n{EXAMPLE}");
        let c = NodeConfig::from_toml_str(&elsewhere).unwrap();
        assert_eq!(
            c.daemon.pod_records_dir(),
            Some(std::path::Path::new("/srv/records"))
        );
        let relative = format!("[daemon]\npod_records = \"records\"\n{EXAMPLE}");
        let e = NodeConfig::from_toml_str(&relative).unwrap_err();
        assert_eq!(e.key, "daemon.pod_records");
        assert!(e.problem.contains("`records` is relative"), "{e}");
    }

    fn check_err(from: &str, to: &str, key: &str, problem_part: &str) {
        let s = EXAMPLE.replacen(from, to, 1);
        assert_ne!(s, EXAMPLE, "fixture edit `{from}` did not apply");
        let e = NodeConfig::from_toml_str(&s).unwrap_err();
        assert!(e.key.starts_with(key), "key `{}` for {to}: {e}", e.key);
        assert!(
            e.problem.contains(problem_part),
            "problem `{}` for {to}",
            e.problem
        );
    }

    #[test]
    fn errors_name_the_key() {
        check_err(
            "pod_subnet = \"10.5.1.0/24\"",
            "pod_subnet = \"10.6.1.0/24\"",
            "node.pod_subnet",
            "not inside",
        );
        check_err(
            "pod_subnet = \"10.5.1.0/24\"",
            "pod_subnet = \"10.5.1.1/24\"",
            "node.pod_subnet",
            "host bits",
        );
        check_err("vni = 1", "vni = 0", "tunnel.vni", "not a VNI");
        check_err(
            "ip = \"10.5.1.2\"",
            "ip = \"10.5.9.2\"",
            "port[1].ip",
            "not inside",
        );
        check_err(
            "ip = \"10.5.1.2\"",
            "ip = \"10.5.1.1\"",
            "port[1].ip",
            "gateway",
        );
        check_err("mtu = 1450", "mtu = 20", "port[1].mtu", "outside");
        check_err(
            "mtu = 1450",
            "mtu = 1450\ncolour = \"red\"",
            "port[1].colour",
            "unknown field",
        );
        check_err(
            "vtep_mac = \"02:00:00:00:bb:02\"",
            "",
            "route[0].vtep_mac",
            "VTEP MAC",
        );
        check_err(
            "node = \"192.168.50.2\"",
            "node = \"192.168.50.1\"",
            "route[0].node",
            "own address",
        );
        check_err(
            "via = \"vxlan\"",
            "via = \"wormhole\"",
            "route[0].via",
            "unknown variant",
        );
        check_err(
            "mac = \"02:00:00:00:01:02\"",
            "mac = \"02:00:00:00:01\"",
            "port[1].mac",
            "",
        );
        check_err(
            "address = \"192.168.50.1/24\"",
            "",
            "port[0].address",
            "underlay address",
        );
        check_err(
            "kind = \"pod\"",
            "kind = \"uplink\"",
            "port[1].kind",
            "only one uplink",
        );
    }

    #[test]
    fn macs_must_be_unicast_and_not_zero() {
        let zero = "00:00:00:00:00:00";
        let mcast = "01:00:5e:00:00:01";
        for bad in [zero, mcast] {
            check_err(
                "vxlan_port = 8472",
                &format!("vxlan_port = 8472\nvtep_mac = \"{bad}\""),
                "tunnel.vtep_mac",
                "not a unicast MAC",
            );
            check_err(
                "vtep_mac = \"02:00:00:00:bb:02\"",
                &format!("vtep_mac = \"{bad}\""),
                "route[0].vtep_mac",
                "not a unicast MAC",
            );
            check_err(
                "mac = \"02:00:00:00:aa:02\"",
                &format!("mac = \"{bad}\""),
                "neighbour[0].mac",
                "not a unicast MAC",
            );
            check_err(
                "mac = \"02:00:00:00:01:02\"",
                &format!("mac = \"{bad}\""),
                "port[1].mac",
                "not a unicast MAC",
            );
            check_err(
                "router_mac = \"02:00:00:00:00:01\"",
                &format!("router_mac = \"{bad}\""),
                "node.router_mac",
                "not a unicast MAC",
            );
        }
    }

    #[test]
    fn node_addresses_must_be_unicast_outside_the_pod_network() {
        for bad in [
            "0.0.0.0",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "127.0.0.1",
            "10.5.7.7",
        ] {
            check_err(
                "node = \"192.168.50.2\"",
                &format!("node = \"{bad}\""),
                "route[0].node",
                "not a node address",
            );
            check_err(
                "address = \"192.168.50.1/24\"",
                &format!("address = \"{bad}/24\""),
                "port[0].address",
                "not a node address",
            );
        }
        check_err(
            "address = \"192.168.50.1/24\"",
            "address = \"10.4.0.1/14\"\ngateway = \"10.5.0.1\"",
            "port[0].gateway",
            "not a node address",
        );
    }

    #[test]
    fn pod_ips_are_not_the_subnet_network_or_broadcast() {
        check_err(
            "ip = \"10.5.1.2\"",
            "ip = \"10.5.1.0\"",
            "port[1].ip",
            "network address",
        );
        check_err(
            "ip = \"10.5.1.2\"",
            "ip = \"10.5.1.255\"",
            "port[1].ip",
            "broadcast address",
        );
    }

    #[test]
    fn port_names_are_kernel_interface_names() {
        let ok = EXAMPLE.replacen("name = \"pod-a\"", "name = \"abcdefghijklmno\"", 1);
        NodeConfig::from_toml_str(&ok).expect("15 bytes is a valid name");
        for bad in ["abcdefghijklmnop", "a/b", "a b", "a\tb", ".", "..", ""] {
            check_err(
                "name = \"pod-a\"",
                &format!("name = \"{bad}\""),
                "port[1].name",
                "",
            );
        }
        check_err(
            "name = \"pod-a\"",
            "name = \"abcdefghijklmnop\"",
            "port[1].name",
            "15 bytes",
        );
    }
}
