//! The forwarding tables workers read: ports, the route table, resolved
//! next hops (adjacencies) with precomputed encapsulation headers, and the
//! set of known tunnel peers.
//!
//! A [`Tables`] value is immutable once built. The control side builds a new
//! one and publishes it whole with [`TablesHandle::publish`] (an atomic
//! pointer swap); workers pick up the new version at their next burst, so a
//! worker never sees half an update. [`Tables::from_config`] builds whole
//! tables; [`TablesEditor`] (module `edit`) changes them incrementally, one
//! published version per change, without rebuilding the route table.
//!
//! Route-table values are indices into `adjacencies`, so a neighbour change
//! re-resolves next hops without touching the LPM.
//!
//! # Flow-cache invalidation
//! Every version has a new `generation`. Flow-cache entries remember the
//! generation they were cached at, and a hit at the current generation costs
//! nothing more. An entry of an older generation `g` is revalidated (see
//! [`Tables::cached_route_valid`]) iff
//! - `flush_generation <= g < generation` (it does not predate the last full
//!   invalidation, and is not from some other, newer set of tables), and
//! - no entry of `route_changes` newer than `g` covers its destination.
//!
//! This is exact because a cached value is the route-table answer for the
//! destination, and that answer changes only through a route-table change of
//! a prefix covering it, all of which are logged (adjacency indices are
//! stable; an adjacency re-resolved in place keeps its index, so neighbour
//! changes need no invalidation). The log is bounded by [`ROUTE_LOG_MAX`]:
//! a version that would exceed it starts over with `flush_generation` set to
//! its own generation, as do whole rebuilds (node settings, reload).
//! Generations compare by wrapping distance, so this holds while entries are
//! younger than 2^31 versions.

use crate::config::{Ipv4Net, NodeConfig, PortKind};
use crate::counters::DropReason;
use crate::fib::lpm::Lpm;
use crate::wire::{checksum, ethernet, ipv4, udp, vxlan, MacAddr};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

mod edit;

pub use edit::{
    EditError, EditorStats, RouteTable, State as EditorState, TablesEditor, SPARE_WAIT,
};

/// Most route changes a version logs for lazy flow-cache revalidation.
pub const ROUTE_LOG_MAX: usize = 32;

/// One route-table change, logged for flow-cache revalidation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteChange {
    /// The version that made it.
    pub generation: u32,
    /// The prefix added, changed or removed (host order).
    pub prefix: u32,
    /// Its length.
    pub len: u8,
}

/// Index of a port in [`Tables::ports`].
pub type PortId = u16;

/// Bytes VXLAN encapsulation writes in front of the inner IPv4 header:
/// outer Ethernet, IPv4, UDP, VXLAN and the inner Ethernet header.
pub const VXLAN_TEMPLATE_LEN: usize = vxlan::OVERHEAD + ethernet::HEADER_LEN;
/// Bytes IPIP encapsulation writes in front of the inner IPv4 header.
pub const IPIP_TEMPLATE_LEN: usize = ethernet::HEADER_LEN + ipv4::HEADER_LEN;
/// TTL of outer headers the switch writes, and of ICMP errors it originates.
pub const ORIGIN_TTL: u8 = 64;

/// A port as workers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortEntry {
    /// Its name.
    pub name: String,
    /// What it connects to, with kind-specific data.
    pub role: PortRole,
    /// The switch's own MAC on this port (source of frames it sends there).
    pub own_mac: MacAddr,
    /// MTU of the link.
    pub mtu: u16,
    /// Removed at runtime: kept so ids stay stable, but unreachable.
    pub removed: bool,
}

/// Kind-specific port data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortRole {
    /// The underlay link; `ip` is the node's address (host order).
    Uplink {
        /// The node's underlay address.
        ip: u32,
    },
    /// A TAP into the node's kernel; `peer_mac` is the kernel side.
    Host {
        /// MAC of the kernel's end.
        peer_mac: MacAddr,
    },
    /// A pod; source IP and MAC must match (anti-spoofing).
    Pod {
        /// The pod's address (host order).
        ip: u32,
        /// The pod's MAC.
        mac: MacAddr,
    },
}

/// Rewrite data for a plain L2 next hop (deliver, host-gw, to host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L2Rewrite {
    /// Output port.
    pub port: PortId,
    /// Destination MAC.
    pub dst_mac: MacAddr,
    /// Source MAC.
    pub src_mac: MacAddr,
    /// Largest IPv4 packet (total length) the port takes.
    pub max_ip_len: u16,
}

/// A precomputed encapsulation: headers to copy in front of the inner packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encap<const N: usize> {
    /// Output port (the uplink).
    pub port: PortId,
    /// The headers, with length, checksum and (VXLAN) source-port fields zero.
    pub header: [u8; N],
    /// Ones'-complement sum of the outer IPv4 header as templated.
    pub ip_sum: u32,
    /// Largest inner IPv4 packet that fits the uplink MTU.
    pub max_ip_len: u16,
    /// Remote node (host order), to refuse re-encapsulating towards the sender.
    pub node: u32,
}

/// A resolved next hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Adjacency {
    /// Deliver to a local pod.
    Deliver(L2Rewrite),
    /// Route to a node on the same segment (flannel host-gw).
    HostGw(L2Rewrite),
    /// Route into the node's kernel.
    ToHost(L2Rewrite),
    /// Encapsulate in VXLAN.
    Vxlan(Box<Encap<VXLAN_TEMPLATE_LEN>>),
    /// Encapsulate in IPIP.
    Ipip(Box<Encap<IPIP_TEMPLATE_LEN>>),
    /// Drop with this reason (blackhole, unresolved neighbour, port down).
    Drop(DropReason),
}

/// Node settings workers need, in hot-path form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeParams {
    /// The cluster pod network.
    pub pod_network: Ipv4Net,
    /// This node's pod subnet.
    pub pod_subnet: Ipv4Net,
    /// The pods' gateway address (host order).
    pub gateway_ip: u32,
    /// Source of the ICMP errors the switch sends: the pod subnet's network
    /// address (`.0`, the address flannel gives `flannel.1`). Not the
    /// gateway: that one is the node kernel's (on the host port), and the
    /// kernel drops ICMP that claims to come from its own address.
    pub icmp_source: u32,
    /// The switch's MAC towards pods and the host.
    pub router_mac: MacAddr,
    /// VXLAN VNI.
    pub vni: u32,
    /// VXLAN UDP port.
    pub vxlan_port: u16,
    /// This node's VTEP MAC.
    pub vtep_mac: MacAddr,
    /// This node's underlay address (host order), 0 without an uplink.
    pub node_ip: u32,
}

/// One immutable version of everything workers read.
#[derive(Debug, Clone)]
pub struct Tables {
    /// Version number; flow-cache entries from other generations are
    /// revalidated (see the module docs).
    pub generation: u32,
    /// Flow-cache entries older than this are misses.
    pub flush_generation: u32,
    /// Route-table changes after `flush_generation`, oldest first (at most
    /// [`ROUTE_LOG_MAX`]).
    pub route_changes: Vec<RouteChange>,
    /// Node settings.
    pub node: NodeParams,
    /// Ports by id.
    pub ports: Vec<PortEntry>,
    /// The uplink's id, if any.
    pub uplink: Option<PortId>,
    /// The host port's id, if any.
    pub host: Option<PortId>,
    /// Longest-prefix match from destination to an index in `adjacencies`.
    pub lpm: Arc<Lpm>,
    /// Resolved next hops.
    pub adjacencies: Vec<Adjacency>,
    /// Underlay addresses (host order, sorted) allowed to send us VXLAN.
    pub vxlan_peers: Vec<u32>,
    /// Underlay addresses (host order, sorted) allowed to send us IPIP.
    pub ipip_peers: Vec<u32>,
}

static NEXT_GENERATION: AtomicU32 = AtomicU32::new(1);

/// A process-wide fresh generation number.
pub fn next_generation() -> u32 {
    NEXT_GENERATION.fetch_add(1, Ordering::Relaxed)
}

/// Error building tables from a configuration.
#[derive(Debug, thiserror::Error)]
pub enum TablesError {
    /// The configuration did not validate.
    #[error("invalid configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// The route table refused a route.
    #[error("route {prefix}: {problem}")]
    Route {
        /// The route.
        prefix: Ipv4Net,
        /// Why.
        problem: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum NextHopKey {
    Pod(PortId),
    Vxlan(u32, MacAddr),
    Ipip(u32),
    HostGw(u32),
    Host,
    Blackhole,
}

impl Tables {
    /// Builds tables from a configuration (validated first).
    pub fn from_config(cfg: &NodeConfig) -> Result<Tables, TablesError> {
        cfg.validate()?;
        edit::build(cfg)
    }

    /// Tables with node settings and ports but no routes or adjacencies.
    fn skeleton(
        generation: u32,
        n: &crate::config::NodeSettings,
        tunnel: &crate::config::TunnelSettings,
        cfg_ports: &[crate::config::PortConfig],
        lpm: Arc<Lpm>,
    ) -> Tables {
        let uplink_cfg = cfg_ports.iter().position(|p| p.kind == PortKind::Uplink);
        let host_cfg = cfg_ports.iter().position(|p| p.kind == PortKind::Host);
        let node_ip = uplink_cfg
            .and_then(|i| cfg_ports[i].address)
            .map(|a| u32::from(a.ip))
            .unwrap_or(0);
        let vtep_mac = tunnel
            .vtep_mac
            .or_else(|| uplink_cfg.map(|i| cfg_ports[i].mac))
            .unwrap_or(n.router_mac);
        let node = NodeParams {
            pod_network: n.pod_network,
            pod_subnet: n.pod_subnet,
            gateway_ip: u32::from(n.gateway()),
            icmp_source: n.pod_subnet.addr_u32(),
            router_mac: n.router_mac,
            vni: tunnel.vni,
            vxlan_port: tunnel.vxlan_port,
            vtep_mac,
            node_ip,
        };
        let ports: Vec<PortEntry> = cfg_ports
            .iter()
            .map(|p| PortEntry {
                name: p.name.clone(),
                role: match p.kind {
                    PortKind::Uplink => PortRole::Uplink { ip: node_ip },
                    PortKind::Host => PortRole::Host { peer_mac: p.mac },
                    PortKind::Pod => PortRole::Pod {
                        ip: p.ip.map(u32::from).unwrap_or(0),
                        mac: p.mac,
                    },
                },
                own_mac: if p.kind == PortKind::Uplink {
                    p.mac
                } else {
                    n.router_mac
                },
                mtu: p.mtu,
                removed: p.removed,
            })
            .collect();
        Tables {
            generation,
            flush_generation: generation,
            route_changes: Vec::new(),
            node,
            ports,
            uplink: uplink_cfg.map(|i| i as PortId),
            host: host_cfg.map(|i| i as PortId),
            lpm,
            adjacencies: Vec::new(),
            vxlan_peers: Vec::new(),
            ipip_peers: Vec::new(),
        }
    }

    /// May a flow-cache entry cached at `entry_generation` for destination
    /// `dst` (host order) be used at this version? See the module docs.
    #[inline]
    pub fn cached_route_valid(&self, entry_generation: u32, dst: u32) -> bool {
        let since_flush = entry_generation.wrapping_sub(self.flush_generation) as i32;
        let age = self.generation.wrapping_sub(entry_generation) as i32;
        if since_flush < 0 || age <= 0 {
            return false;
        }
        !self.route_changes.iter().any(|c| {
            c.generation.wrapping_sub(entry_generation) as i32 > 0
                && dst & u32::MAX.checked_shl(32 - u32::from(c.len)).unwrap_or(0) == c.prefix
        })
    }

    fn resolve(
        &self,
        key: NextHopKey,
        onlink: Option<Ipv4Net>,
        gateway: Option<u32>,
        neigh: &HashMap<u32, MacAddr>,
    ) -> Adjacency {
        let l2 = |port: PortId, dst_mac: MacAddr| {
            let p = &self.ports[port as usize];
            L2Rewrite {
                port,
                dst_mac,
                src_mac: p.own_mac,
                max_ip_len: p.mtu,
            }
        };
        // The underlay MAC towards `node`: its own if on-link, else the gateway's.
        let underlay_mac = |node: u32| -> Option<MacAddr> {
            let hop = if onlink.is_some_and(|n| n.contains_u32(node)) {
                node
            } else {
                gateway?
            };
            neigh.get(&hop).copied()
        };
        match key {
            NextHopKey::Pod(port) => match self.ports[port as usize].role {
                PortRole::Pod { mac, .. } => Adjacency::Deliver(l2(port, mac)),
                _ => Adjacency::Drop(DropReason::PortDown),
            },
            NextHopKey::Host => match self.host {
                Some(h) => match self.ports[h as usize].role {
                    PortRole::Host { peer_mac } => Adjacency::ToHost(l2(h, peer_mac)),
                    _ => Adjacency::Drop(DropReason::PortDown),
                },
                None => Adjacency::Drop(DropReason::PortDown),
            },
            NextHopKey::Blackhole => Adjacency::Drop(DropReason::Blackhole),
            NextHopKey::HostGw(node) => match (self.uplink, neigh.get(&node)) {
                (Some(u), Some(&mac)) => Adjacency::HostGw(l2(u, mac)),
                (Some(_), None) => Adjacency::Drop(DropReason::NeighbourUnresolved),
                (None, _) => Adjacency::Drop(DropReason::PortDown),
            },
            NextHopKey::Vxlan(node, vtep_mac) => {
                let Some(u) = self.uplink else {
                    return Adjacency::Drop(DropReason::PortDown);
                };
                let Some(next_mac) = underlay_mac(node) else {
                    return Adjacency::Drop(DropReason::NeighbourUnresolved);
                };
                let p = &self.ports[u as usize];
                Adjacency::Vxlan(Box::new(
                    self.vxlan_template(u, p, node, next_mac, vtep_mac),
                ))
            }
            NextHopKey::Ipip(node) => {
                let Some(u) = self.uplink else {
                    return Adjacency::Drop(DropReason::PortDown);
                };
                let Some(next_mac) = underlay_mac(node) else {
                    return Adjacency::Drop(DropReason::NeighbourUnresolved);
                };
                let p = &self.ports[u as usize];
                Adjacency::Ipip(Box::new(self.ipip_template(u, p, node, next_mac)))
            }
        }
    }

    fn outer_ipv4(&self, buf: &mut [u8], node: u32, protocol: u8) -> u32 {
        let mut ip = ipv4::Packet::new_unchecked(buf);
        ip.set_version_and_header_len(ipv4::HEADER_LEN);
        ip.set_dscp_ecn(0);
        ip.set_total_len(0);
        ip.set_ident(0);
        // DF: the switch keeps inner packets within the underlay MTU, and an
        // atomic datagram may carry a constant ID (RFC 6864).
        ip.set_flags_and_frag_offset(true, false, 0);
        ip.set_ttl(ORIGIN_TTL);
        ip.set_protocol(protocol);
        ip.set_checksum(0);
        ip.set_src_addr(Ipv4Addr::from(self.node.node_ip));
        ip.set_dst_addr(Ipv4Addr::from(node));
        checksum::sum(&ip.into_inner()[..ipv4::HEADER_LEN])
    }

    fn vxlan_template(
        &self,
        port: PortId,
        p: &PortEntry,
        node: u32,
        next_mac: MacAddr,
        vtep_mac: MacAddr,
    ) -> Encap<VXLAN_TEMPLATE_LEN> {
        let mut h = [0u8; VXLAN_TEMPLATE_LEN];
        write_eth(&mut h[..14], next_mac, p.own_mac);
        let ip_sum = self.outer_ipv4(&mut h[14..34], node, ipv4::protocol::UDP);
        {
            let mut u = udp::Packet::new_unchecked(&mut h[34..42]);
            u.set_src_port(0);
            u.set_dst_port(self.node.vxlan_port);
            u.set_len(0);
            u.set_checksum(0);
        }
        vxlan::Packet::new_unchecked(&mut h[42..50]).emit_header(self.node.vni);
        write_eth(&mut h[50..64], vtep_mac, self.node.vtep_mac);
        Encap {
            port,
            header: h,
            ip_sum,
            max_ip_len: p.mtu.saturating_sub(vxlan::OVERHEAD as u16),
            node,
        }
    }

    fn ipip_template(
        &self,
        port: PortId,
        p: &PortEntry,
        node: u32,
        next_mac: MacAddr,
    ) -> Encap<IPIP_TEMPLATE_LEN> {
        let mut h = [0u8; IPIP_TEMPLATE_LEN];
        write_eth(&mut h[..14], next_mac, p.own_mac);
        let ip_sum = self.outer_ipv4(&mut h[14..34], node, ipv4::protocol::IPIP);
        Encap {
            port,
            header: h,
            ip_sum,
            max_ip_len: p.mtu.saturating_sub(ipv4::HEADER_LEN as u16),
            node,
        }
    }

    /// The port with this name.
    pub fn port_by_name(&self, name: &str) -> Option<PortId> {
        self.ports
            .iter()
            .position(|p| p.name == name && !p.removed)
            .map(|i| i as PortId)
    }

    /// Is `ip` (host order) a node allowed to send VXLAN?
    #[inline]
    pub fn is_vxlan_peer(&self, ip: u32) -> bool {
        self.vxlan_peers.binary_search(&ip).is_ok()
    }

    /// Is `ip` (host order) a node allowed to send IPIP?
    #[inline]
    pub fn is_ipip_peer(&self, ip: u32) -> bool {
        self.ipip_peers.binary_search(&ip).is_ok()
    }
}

fn write_eth(buf: &mut [u8], dst: MacAddr, src: MacAddr) {
    let mut e = ethernet::Frame::new_unchecked(buf);
    e.set_dst_addr(dst);
    e.set_src_addr(src);
    e.set_ethertype(ethernet::ethertype::IPV4);
}

/// Where the control side publishes tables and workers load them.
#[derive(Debug)]
pub struct TablesHandle {
    current: ArcSwap<Tables>,
}

impl TablesHandle {
    /// A handle holding `tables`.
    pub fn new(tables: Tables) -> Self {
        TablesHandle {
            current: ArcSwap::from_pointee(tables),
        }
    }
    /// Replaces the tables atomically; workers see the new version at their
    /// next burst.
    pub fn publish(&self, tables: Tables) {
        self.current.store(Arc::new(tables));
    }
    /// [`Self::publish`] for tables already shared.
    pub fn publish_arc(&self, tables: Arc<Tables>) {
        self.current.store(tables);
    }
    /// The current tables.
    pub fn load(&self) -> Arc<Tables> {
        self.current.load_full()
    }
    /// A per-worker cache that makes loads nearly free while nothing changes.
    pub fn cache(&self) -> arc_swap::Cache<&ArcSwap<Tables>, Arc<Tables>> {
        arc_swap::Cache::new(&self.current)
    }
}
