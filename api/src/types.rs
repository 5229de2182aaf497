//! The value types of the API and of the configuration file: prefixes,
//! interface addresses, ports, routes, neighbours, node and tunnel settings.
//!
//! Their serde representation is the wire format (JSON on the API socket,
//! TOML in `sluiced.toml`): prefixes, addresses and MACs are strings, enums
//! are kebab-case names, unknown keys are errors.

pub use crate::mac::{MacAddr, ParseMacError};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// Serde for types written as strings: `Display` out, `FromStr` in (its
/// error becomes the message).
macro_rules! string_serde {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// An IPv4 prefix with no host bits set, written `10.5.0.0/16`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Net {
    addr: Ipv4Addr,
    len: u8,
}

impl Ipv4Net {
    /// The prefix `addr/len`; `None` if `len > 32` or host bits are set.
    pub fn new(addr: Ipv4Addr, len: u8) -> Option<Self> {
        if len > 32 || u32::from(addr) & !Self::mask_of(len) != 0 {
            return None;
        }
        Some(Ipv4Net { addr, len })
    }
    fn mask_of(len: u8) -> u32 {
        if len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(len))
        }
    }
    /// The network address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }
    /// The prefix length.
    // A prefix length, not a collection size: an `is_empty` would mean nothing.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u8 {
        self.len
    }
    /// The network address as a host-order integer.
    pub fn addr_u32(&self) -> u32 {
        u32::from(self.addr)
    }
    /// The netmask as a host-order integer.
    pub fn mask(&self) -> u32 {
        Self::mask_of(self.len)
    }
    /// True if `ip` (host order) is inside.
    #[inline]
    pub fn contains_u32(&self, ip: u32) -> bool {
        ip & self.mask() == self.addr_u32()
    }
    /// True if `ip` is inside.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.contains_u32(u32::from(ip))
    }
    /// True if every address of `other` is inside `self`.
    pub fn covers(&self, other: &Ipv4Net) -> bool {
        other.len >= self.len && self.contains(other.addr)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl fmt::Debug for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Ipv4Net {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not a prefix like 10.5.0.0/16"))?;
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("`{a}` is not an IPv4 address"))?;
        let len: u8 = l
            .parse()
            .map_err(|_| format!("`{l}` is not a prefix length"))?;
        if len > 32 {
            return Err(format!("prefix length {len} is above 32"));
        }
        Ipv4Net::new(addr, len).ok_or_else(|| {
            format!(
                "`{s}` has host bits set (did you mean {}/{len}?)",
                Ipv4Addr::from(u32::from(addr) & Self::mask_of(len))
            )
        })
    }
}

string_serde!(Ipv4Net);

/// An interface address with its prefix length, written `192.168.1.10/24`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct IfAddr {
    /// The address.
    pub ip: Ipv4Addr,
    /// The on-link prefix length.
    pub len: u8,
}

impl IfAddr {
    /// The on-link network.
    pub fn network(&self) -> Ipv4Net {
        let mask = Ipv4Net::mask_of(self.len);
        Ipv4Net {
            addr: Ipv4Addr::from(u32::from(self.ip) & mask),
            len: self.len,
        }
    }
}

impl fmt::Display for IfAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip, self.len)
    }
}
impl fmt::Debug for IfAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for IfAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not an address like 192.168.1.10/24"))?;
        let ip: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("`{a}` is not an IPv4 address"))?;
        let len: u8 = l
            .parse()
            .map_err(|_| format!("`{l}` is not a prefix length"))?;
        if len > 32 {
            return Err(format!("prefix length {len} is above 32"));
        }
        Ok(IfAddr { ip, len })
    }
}

string_serde!(IfAddr);

/// Linux's VXLAN port, flannel's default.
pub const DEFAULT_VXLAN_PORT: u16 = 8472;
/// flannel's default VNI.
pub const DEFAULT_VNI: u32 = 1;

fn default_vni() -> u32 {
    DEFAULT_VNI
}
fn default_vxlan_port() -> u16 {
    DEFAULT_VXLAN_PORT
}
/// A port's MTU when the configuration does not say.
pub const DEFAULT_MTU: u16 = 1500;

fn default_mtu() -> u16 {
    DEFAULT_MTU
}

/// How a worker waits for packets on a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RxMode {
    /// Busy-poll always: lowest latency, one core at 100%.
    Poll,
    /// Busy-poll while traffic flows, sleep on the sockets when idle.
    #[default]
    Adaptive,
    /// Sleep on the sockets whenever the rings are empty.
    Interrupt,
}

/// Node-wide settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSettings {
    /// The cluster's pod network (flannel's `Network`), e.g. `10.5.0.0/16`.
    pub pod_network: Ipv4Net,
    /// This node's pod subnet (flannel's lease), e.g. `10.5.1.0/24`.
    pub pod_subnet: Ipv4Net,
    /// The pods' gateway address; defaults to the first address of `pod_subnet`.
    #[serde(default)]
    pub gateway_ip: Option<Ipv4Addr>,
    /// The switch's MAC on pod ports and the host port (pods' gateway MAC).
    pub router_mac: MacAddr,
}

impl NodeSettings {
    /// The gateway address, explicit or the first of the pod subnet.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway_ip
            .unwrap_or_else(|| Ipv4Addr::from(self.pod_subnet.addr_u32().wrapping_add(1)))
    }
}

/// Tunnel settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelSettings {
    /// VXLAN network identifier (flannel default 1).
    #[serde(default = "default_vni")]
    pub vni: u32,
    /// VXLAN UDP port: 8472 (Linux, flannel) or 4789 (IANA).
    #[serde(default = "default_vxlan_port")]
    pub vxlan_port: u16,
    /// This node's VTEP MAC (flannel's `VtepMAC`); defaults to the uplink's MAC.
    #[serde(default)]
    pub vtep_mac: Option<MacAddr>,
}

impl Default for TunnelSettings {
    fn default() -> Self {
        TunnelSettings {
            vni: DEFAULT_VNI,
            vxlan_port: DEFAULT_VXLAN_PORT,
            vtep_mac: None,
        }
    }
}

/// What a port connects to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PortKind {
    /// The node's link to the underlay (other nodes).
    Uplink,
    /// A TAP into the node's own kernel.
    Host,
    /// A pod's interface.
    Pod,
}

/// One port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// Unique name (an interface name for real ports).
    pub name: String,
    /// What the port connects to.
    pub kind: PortKind,
    /// MTU of the link.
    #[serde(default = "default_mtu")]
    pub mtu: u16,
    /// Uplink: the NIC's MAC. Pod: the pod's MAC. Host: the kernel side's MAC.
    pub mac: MacAddr,
    /// Uplink: the node's underlay address with its prefix length.
    #[serde(default)]
    pub address: Option<IfAddr>,
    /// Uplink: the underlay default gateway, for nodes off-link.
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// Pod: the pod's IPv4 address.
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
    /// How workers wait on this port; the daemon's `rx_mode` if unset.
    #[serde(default)]
    pub rx_mode: Option<RxMode>,
    /// DPDK backend only: the device, as DPDK's device arguments: a PCI
    /// address (`0000:3b:02.1`, an SR-IOV VF or PF bound to vfio-pci) or a
    /// vdev string (`net_af_packet0,iface=eth1`, `net_pcap0,rx_pcap=in.pcap`).
    /// Unset: an uplink or pod is the kernel netdev `name` (through DPDK's
    /// `net_af_xdp`), the host port a `net_tap` named `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devargs: Option<String>,
    /// DPDK backend only, pods: the pod's vhost-user socket. The pod (a DPDK
    /// app's `net_virtio_user`, or a VM's QEMU) is the server and creates
    /// it; sluiced connects as the client (OVS's `dpdkvhostuserclient`), so
    /// either side can restart and the other reconnects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vhost_user: Option<std::path::PathBuf>,
    /// Removed at runtime: the slot keeps its id (ids are never reused while
    /// the daemon runs) but the port has no socket, no route and no name.
    /// Never read from or written to a file.
    #[serde(skip)]
    pub removed: bool,
}

/// How a route forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    /// Deliver to a local pod port (`port`).
    Pod,
    /// VXLAN to `node`, whose VTEP MAC is `vtep_mac`.
    Vxlan,
    /// IPIP to `node`.
    Ipip,
    /// Plain routing to `node` on the same L2 segment.
    HostGw,
    /// To the node's kernel through the host port.
    Host,
    /// Drop.
    Blackhole,
}

/// One route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Destination prefix.
    pub prefix: Ipv4Net,
    /// How to forward.
    pub via: Via,
    /// Remote node's underlay address (vxlan, ipip, host-gw).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Ipv4Addr>,
    /// Remote VTEP MAC (vxlan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtep_mac: Option<MacAddr>,
    /// Local port name (pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
}

/// One underlay neighbour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeighbourConfig {
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its MAC.
    pub mac: MacAddr,
    /// Learned from the kernel's neighbour table at runtime (never in a file).
    #[serde(skip)]
    pub learned: bool,
}

/// `Display` and `FromStr` for the kebab-case enums: the names of their
/// serde representation (`host-gw`, `adaptive`…); a wrong name gets serde's
/// message, which lists the right ones.
macro_rules! kebab_str {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match serde_json::to_value(self) {
                    Ok(serde_json::Value::String(s)) => f.write_str(&s),
                    _ => Err(fmt::Error),
                }
            }
        }

        impl FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                serde_json::from_value(serde_json::Value::String(s.to_owned()))
                    .map_err(|e| e.to_string())
            }
        }
    };
}

kebab_str!(RxMode);
kebab_str!(PortKind);
kebab_str!(Via);

impl PortConfig {
    /// A pod port: the host end `name` of a pod's interface, the pod's MAC
    /// and address, its MTU (what `ports.add` takes).
    pub fn pod(name: impl Into<String>, mac: MacAddr, ip: Ipv4Addr, mtu: u16) -> Self {
        PortConfig {
            name: name.into(),
            kind: PortKind::Pod,
            mtu,
            mac,
            address: None,
            gateway: None,
            ip: Some(ip),
            rx_mode: None,
            removed: false,
            devargs: None,
            vhost_user: None,
        }
    }
}

impl RouteConfig {
    /// A route with no node, VTEP MAC or port (`host`, `blackhole`); set
    /// the fields `via` needs.
    pub fn new(prefix: Ipv4Net, via: Via) -> Self {
        RouteConfig {
            prefix,
            via,
            node: None,
            vtep_mac: None,
            port: None,
        }
    }

    /// VXLAN to `node`, whose VTEP MAC is `vtep_mac`.
    pub fn vxlan(prefix: Ipv4Net, node: Ipv4Addr, vtep_mac: MacAddr) -> Self {
        RouteConfig {
            node: Some(node),
            vtep_mac: Some(vtep_mac),
            ..Self::new(prefix, Via::Vxlan)
        }
    }

    /// IPIP (`Via::Ipip`) or plain routing (`Via::HostGw`) to `node`.
    pub fn to_node(prefix: Ipv4Net, via: Via, node: Ipv4Addr) -> Self {
        RouteConfig {
            node: Some(node),
            ..Self::new(prefix, via)
        }
    }
}

impl NeighbourConfig {
    /// A static neighbour (as `neighbours.set` takes it).
    pub fn new(ip: Ipv4Addr, mac: MacAddr) -> Self {
        NeighbourConfig {
            ip,
            mac,
            learned: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse_strictly() {
        assert_eq!("10.0.0.0/8".parse::<Ipv4Net>().unwrap().len(), 8);
        assert!("10.0.0.1/8"
            .parse::<Ipv4Net>()
            .unwrap_err()
            .contains("did you mean 10.0.0.0/8"));
        assert!("10.0.0.0/33".parse::<Ipv4Net>().is_err());
        assert!("10.0.0.0".parse::<Ipv4Net>().is_err());
        assert_eq!("0.0.0.0/0".parse::<Ipv4Net>().unwrap().mask(), 0);
        let n: Ipv4Net = "10.5.0.0/16".parse().unwrap();
        assert!(n.contains(Ipv4Addr::new(10, 5, 255, 255)));
        assert!(!n.contains(Ipv4Addr::new(10, 6, 0, 0)));
        let a: IfAddr = "192.168.1.10/24".parse().unwrap();
        assert_eq!(a.network().to_string(), "192.168.1.0/24");
    }

    #[test]
    fn prefix_methods() {
        let n: Ipv4Net = "10.5.1.0/24".parse().unwrap();
        assert_eq!(n.addr(), Ipv4Addr::new(10, 5, 1, 0));
        assert_eq!(n.addr_u32(), 0x0a05_0100);
        assert_eq!(n.mask(), 0xffff_ff00);
        assert!(n.contains_u32(0x0a05_01ff));
        assert!("10.5.0.0/16".parse::<Ipv4Net>().unwrap().covers(&n));
        assert!(!n.covers(&"10.5.0.0/16".parse().unwrap()));
        assert_eq!(Ipv4Net::new(Ipv4Addr::new(10, 5, 1, 1), 24), None);
        assert_eq!(Ipv4Net::new(Ipv4Addr::new(10, 5, 1, 0), 33), None);
        assert_eq!(format!("{n:?}"), "10.5.1.0/24");
        let a: IfAddr = "192.168.1.10/24".parse().unwrap();
        assert_eq!(format!("{a:?}"), "192.168.1.10/24");
        assert!("192.168.1.10/33".parse::<IfAddr>().is_err());
        assert!("192.168.1.10".parse::<IfAddr>().is_err());
    }

    #[test]
    fn strings_on_the_wire() {
        let n: Ipv4Net = serde_json::from_str("\"10.5.0.0/16\"").unwrap();
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"10.5.0.0/16\"");
        let e = serde_json::from_str::<Ipv4Net>("\"10.5.0.1/16\"").unwrap_err();
        assert!(e.to_string().contains("host bits"), "{e}");
        let a: IfAddr = serde_json::from_str("\"192.168.1.10/24\"").unwrap();
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"192.168.1.10/24\"");
        assert_eq!(serde_json::to_string(&Via::HostGw).unwrap(), "\"host-gw\"");
        assert_eq!(Via::HostGw.to_string(), "host-gw");
        assert_eq!("host-gw".parse::<Via>().unwrap(), Via::HostGw);
        let e = "wormhole".parse::<Via>().unwrap_err();
        assert!(e.contains("unknown variant `wormhole`"), "{e}");
        assert_eq!("pod".parse::<PortKind>().unwrap(), PortKind::Pod);
        assert_eq!(RxMode::default().to_string(), "adaptive");
        assert_eq!("interrupt".parse::<RxMode>().unwrap(), RxMode::Interrupt);
    }

    #[test]
    fn defaults_and_skipped_fields() {
        let t: TunnelSettings = serde_json::from_str("{}").unwrap();
        assert_eq!(t, TunnelSettings::default());
        assert_eq!((t.vni, t.vxlan_port, t.vtep_mac), (1, 8472, None));
        let n: NodeSettings = serde_json::from_str(
            r#"{"pod_network":"10.5.0.0/16","pod_subnet":"10.5.1.0/24","router_mac":"02:00:00:00:00:01"}"#,
        )
        .unwrap();
        assert_eq!(n.gateway(), Ipv4Addr::new(10, 5, 1, 1));
        let p: PortConfig = serde_json::from_str(
            r#"{"name":"veth1","kind":"pod","mac":"02:00:00:00:01:02","ip":"10.5.1.2"}"#,
        )
        .unwrap();
        assert_eq!(p.mtu, DEFAULT_MTU);
        assert!(!p.removed);
        assert_eq!(
            p,
            PortConfig::pod(
                "veth1",
                "02:00:00:00:01:02".parse().unwrap(),
                Ipv4Addr::new(10, 5, 1, 2),
                1500
            )
        );
        assert!(!serde_json::to_string(&p).unwrap().contains("removed"));
        let nb = NeighbourConfig::new(
            Ipv4Addr::new(192, 168, 50, 2),
            MacAddr([2, 0, 0, 0, 0xaa, 2]),
        );
        assert_eq!(
            serde_json::to_string(&nb).unwrap(),
            r#"{"ip":"192.168.50.2","mac":"02:00:00:00:aa:02"}"#
        );
        let r = RouteConfig::vxlan(
            "10.5.2.0/24".parse().unwrap(),
            Ipv4Addr::new(192, 168, 50, 2),
            MacAddr([2, 0, 0, 0, 0xbb, 2]),
        );
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"prefix":"10.5.2.0/24","via":"vxlan","node":"192.168.50.2","vtep_mac":"02:00:00:00:bb:02"}"#
        );
        let e = serde_json::from_str::<RouteConfig>(
            r#"{"prefix":"10.5.2.0/24","via":"host","colour":"red"}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `colour`"), "{e}");
    }
}
