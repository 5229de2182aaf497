//! BGP, Calico style: the agent peers with BIRD, GoBGP or other sluice
//! agents, announces this node's pod subnet with itself as next hop, and
//! programs sluiced from the best path to every other node's block.
//!
//! - [`message`], [`session`], [`rib`] (the `sluice-bgp` crate, without
//!   I/O): messages over NetGauze's codec with the RFC's NOTIFICATION for
//!   everything malformed, one peer's state machine and Adj-RIB-In, and
//!   best-path selection;
//! - [`speaker`]: the TCP side (tokio), the Loc-RIB, convergence after a
//!   restart, and what `/bgp` and the metrics report;
//! - this module: the `[bgp]` settings and, per pool, how a learned route
//!   is forwarded ([`route_for`]).
//!
//! Calico's model: iBGP between all nodes (AS 64512 by default), as a full
//! mesh or as clients of route reflectors; pools whose `ipipMode` or
//! `vxlanMode` is `Always`, `CrossSubnet` (host-gw on the node's own L2
//! subnet, the tunnel across) or `Never` (host-gw only).

pub use sluice_bgp::{message, rib, session};
pub mod speaker;

use crate::lease::LeaseAttrs;
use crate::network::{BackendType, NetworkConfig};
use crate::routes::Local;
use serde::Deserialize;
use sluice_api::{Ipv4Net, RouteConfig, Via};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

/// Calico's default AS.
pub const DEFAULT_ASN: u32 = 64512;
/// BGP's port.
pub const BGP_PORT: u16 = 179;

/// An encapsulation mode, Calico's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum EncapMode {
    /// Always encapsulate.
    Always,
    /// Encapsulate only to nodes off this node's L2 subnet.
    CrossSubnet,
    /// Never.
    Never,
}

/// `[[bgp.peers]]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeerSection {
    /// The peer's address.
    pub address: Ipv4Addr,
    /// Its AS (default: ours, iBGP).
    pub asn: Option<u32>,
    /// Its port (default 179).
    pub port: Option<u16>,
    /// Wait for it to connect (Calico: the node with the lower address
    /// initiates; `passive` on the other).
    #[serde(default)]
    pub passive: bool,
    /// TCP MD5 (RFC 2385): not supported; refused with a clear error.
    pub password: Option<String>,
}

/// `[[bgp.pools]]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PoolSection {
    /// The pool's CIDR.
    pub cidr: Ipv4Net,
    /// IPIP: `Always`, `CrossSubnet` or `Never` (default).
    pub ipip_mode: Option<EncapMode>,
    /// VXLAN: `Always`, `CrossSubnet` or `Never` (default).
    pub vxlan_mode: Option<EncapMode>,
}

/// `[bgp]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BgpSection {
    /// Local AS (default 64512).
    pub asn: Option<u32>,
    /// BGP identifier (default: the node's PublicIP).
    pub router_id: Option<Ipv4Addr>,
    /// Listen address (default 0.0.0.0).
    pub listen_address: Option<Ipv4Addr>,
    /// Listen port (default 179; 0: never listen, connect only).
    pub listen_port: Option<u16>,
    /// Proposed hold time, seconds (default 90; 0 or at least 3).
    pub hold_time: Option<u16>,
    /// Seconds between connection attempts (default 3, Calico's).
    pub connect_retry: Option<u64>,
    /// Graceful restart (default on, as Calico's BIRD).
    pub graceful_restart: Option<bool>,
    /// Restart time announced, seconds (default 120, Calico's).
    pub restart_time: Option<u16>,
    /// After the agent starts, how long route removals wait for every
    /// peer's End-of-RIB (RFC 4724's selection deferral; default 60 s).
    pub deferral_time: Option<u64>,
    /// Peers.
    #[serde(default)]
    pub peers: Vec<PeerSection>,
    /// Pools (default: the network config's `Network`, encapsulated as its
    /// backend says).
    #[serde(default)]
    pub pools: Vec<PoolSection>,
}

/// One peer, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// Address.
    pub address: Ipv4Addr,
    /// AS.
    pub asn: u32,
    /// Port.
    pub port: u16,
    /// Passive.
    pub passive: bool,
}

/// One pool, resolved: its CIDR and the one encapsulation it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    /// CIDR.
    pub cidr: Ipv4Net,
    /// The tunnel (`Via::Ipip` or `Via::Vxlan`) and when to use it.
    pub encap: Option<(Via, EncapMode)>,
}

/// The BGP settings, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpConfig {
    /// Local AS.
    pub asn: u32,
    /// BGP identifier (`None`: the PublicIP).
    pub router_id: Option<Ipv4Addr>,
    /// Where to listen (`None`: nowhere).
    pub listen: Option<(Ipv4Addr, u16)>,
    /// Hold time.
    pub hold_time: u16,
    /// Connect retry.
    pub connect_retry: Duration,
    /// Restart time announced (`None`: graceful restart off).
    pub restart_time: Option<u16>,
    /// Selection deferral after a start.
    pub deferral: Duration,
    /// Peers.
    pub peers: Vec<PeerConfig>,
    /// Pools (empty: derived from the network config).
    pub pools: Vec<Pool>,
}

impl BgpSection {
    /// Checks the section; the error names the key.
    pub fn resolve(&self) -> Result<BgpConfig, String> {
        let asn = self.asn.unwrap_or(DEFAULT_ASN);
        if asn == 0 || asn == u32::from(message::AS_TRANS) {
            return Err(format!("bgp.asn {asn}: not a usable AS number"));
        }
        let hold_time = self.hold_time.unwrap_or(90);
        if hold_time == 1 || hold_time == 2 {
            return Err(format!(
                "bgp.hold_time {hold_time}: 0 or at least 3 seconds (RFC 4271)"
            ));
        }
        if self.router_id.is_some_and(|r| r.is_unspecified()) {
            return Err("bgp.router_id 0.0.0.0: must not be zero".into());
        }
        let mut peers = Vec::new();
        for (i, p) in self.peers.iter().enumerate() {
            if p.password.is_some() {
                return Err(format!(
                    "bgp.peers[{i}].password: TCP MD5 signatures (RFC 2385) are not supported by sluice-agent yet; peer without a password"
                ));
            }
            if p.address.is_unspecified() || p.address.is_multicast() {
                return Err(format!(
                    "bgp.peers[{i}].address {}: not a peer address",
                    p.address
                ));
            }
            if peers.iter().any(|q: &PeerConfig| q.address == p.address) {
                return Err(format!(
                    "bgp.peers[{i}].address {}: listed twice",
                    p.address
                ));
            }
            peers.push(PeerConfig {
                address: p.address,
                asn: p.asn.unwrap_or(asn),
                port: p.port.unwrap_or(BGP_PORT),
                passive: p.passive,
            });
        }
        let mut pools = Vec::new();
        for (i, p) in self.pools.iter().enumerate() {
            let ipip = p.ipip_mode.unwrap_or(EncapMode::Never);
            let vxlan = p.vxlan_mode.unwrap_or(EncapMode::Never);
            let encap = match (ipip, vxlan) {
                (EncapMode::Never, EncapMode::Never) => None,
                (m, EncapMode::Never) => Some((Via::Ipip, m)),
                (EncapMode::Never, m) => Some((Via::Vxlan, m)),
                _ => {
                    return Err(format!(
                    "bgp.pools[{i}] {}: ipip_mode and vxlan_mode cannot both be set (as in Calico)",
                    p.cidr
                ))
                }
            };
            if pools
                .iter()
                .any(|q: &Pool| q.cidr.covers(&p.cidr) || p.cidr.covers(&q.cidr))
            {
                return Err(format!("bgp.pools[{i}] {}: overlaps another pool", p.cidr));
            }
            pools.push(Pool {
                cidr: p.cidr,
                encap,
            });
        }
        let listen = match self.listen_port.unwrap_or(BGP_PORT) {
            0 => None,
            port => Some((self.listen_address.unwrap_or(Ipv4Addr::UNSPECIFIED), port)),
        };
        if listen.is_none() && peers.iter().any(|p| p.passive) {
            return Err("bgp.listen_port 0 with a passive peer: nobody would connect".into());
        }
        Ok(BgpConfig {
            asn,
            router_id: self.router_id,
            listen,
            hold_time,
            connect_retry: Duration::from_secs(self.connect_retry.unwrap_or(3).max(1)),
            restart_time: match self.graceful_restart.unwrap_or(true) {
                true => Some(self.restart_time.unwrap_or(120).min(4095)),
                false => None,
            },
            deferral: Duration::from_secs(self.deferral_time.unwrap_or(60)),
            peers,
            pools,
        })
    }
}

impl BgpConfig {
    /// The pools in force: the configured ones, or the network config's
    /// `Network` with its backend (vxlan/ipip `Always`, or `CrossSubnet`
    /// with DirectRouting; host-gw `Never`).
    pub fn pools_for(&self, cfg: &NetworkConfig) -> Vec<Pool> {
        if !self.pools.is_empty() {
            return self.pools.clone();
        }
        let mode = if cfg.backend.direct_routing {
            EncapMode::CrossSubnet
        } else {
            EncapMode::Always
        };
        let encap = match cfg.backend.kind {
            BackendType::Vxlan => Some((Via::Vxlan, mode)),
            BackendType::Ipip => Some((Via::Ipip, mode)),
            BackendType::HostGw => None,
        };
        vec![Pool {
            cidr: cfg.network,
            encap,
        }]
    }
}

/// The sluiced route for a prefix learned over BGP with `next_hop`, or why
/// it gets none. `leases` give VXLAN's VTEP MACs (by PublicIP).
pub fn route_for(
    pools: &[Pool],
    local: &Local,
    prefix: Ipv4Net,
    next_hop: Ipv4Addr,
    leases: &BTreeMap<Ipv4Net, LeaseAttrs>,
) -> Result<Option<RouteConfig>, String> {
    if prefix == local.subnet {
        return Ok(None);
    }
    let Some(pool) = pools.iter().find(|p| p.cidr.covers(&prefix)) else {
        return Err(format!("outside every pool ({})", pool_list(pools)));
    };
    if prefix.covers(&local.subnet) || local.subnet.covers(&prefix) {
        return Err(format!("overlaps this node's subnet {}", local.subnet));
    }
    if next_hop == local.public_ip {
        return Err(format!("next hop {next_hop} is this node"));
    }
    let on_link = local.uplink.is_some_and(|u| u.network().contains(next_hop));
    let tunnel = match pool.encap {
        Some((via, EncapMode::Always)) => Some(via),
        Some((via, EncapMode::CrossSubnet)) if !on_link => Some(via),
        _ => None,
    };
    match tunnel {
        None if on_link => Ok(Some(RouteConfig::to_node(prefix, Via::HostGw, next_hop))),
        None => Err(format!(
            "next hop {next_hop} is off this node's subnet{} and pool {} does not encapsulate (ipip_mode/vxlan_mode Never)",
            local.uplink.map(|u| format!(" {}", u.network())).unwrap_or_default(),
            pool.cidr
        )),
        Some(Via::Vxlan) => {
            let mac = leases
                .values()
                .find(|a| a.public_ip == next_hop)
                .and_then(|a| a.vxlan().ok())
                .map(|d| d.vtep_mac)
                .ok_or_else(|| {
                    format!("VXLAN to {next_hop} needs its VTEP MAC: no lease in the store names it")
                })?;
            let mut r = RouteConfig::to_node(prefix, Via::Vxlan, next_hop);
            r.vtep_mac = Some(mac);
            Ok(Some(r))
        }
        Some(via) => Ok(Some(RouteConfig::to_node(prefix, via, next_hop))),
    }
}

fn pool_list(pools: &[Pool]) -> String {
    pools
        .iter()
        .map(|p| p.cidr.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_api::IfAddr;

    fn local() -> Local {
        Local {
            subnet: "10.77.1.0/24".parse().unwrap(),
            public_ip: Ipv4Addr::new(192, 168, 77, 1),
            uplink: Some(IfAddr {
                ip: Ipv4Addr::new(192, 168, 77, 1),
                len: 24,
            }),
        }
    }

    fn pool(mode: Option<(Via, EncapMode)>) -> Vec<Pool> {
        vec![Pool {
            cidr: "10.77.0.0/16".parse().unwrap(),
            encap: mode,
        }]
    }

    #[test]
    fn calicos_modes_pick_host_gw_or_the_tunnel() {
        let p = |s: &str| s.parse::<Ipv4Net>().unwrap();
        let near = Ipv4Addr::new(192, 168, 77, 3);
        let far = Ipv4Addr::new(192, 168, 78, 3);
        let none = BTreeMap::new();
        let via = |pools: &[Pool], nh| {
            route_for(pools, &local(), p("10.77.3.0/24"), nh, &none).map(|r| r.map(|r| r.via))
        };
        let cross = pool(Some((Via::Ipip, EncapMode::CrossSubnet)));
        assert_eq!(via(&cross, near), Ok(Some(Via::HostGw)));
        assert_eq!(via(&cross, far), Ok(Some(Via::Ipip)));
        let always = pool(Some((Via::Ipip, EncapMode::Always)));
        assert_eq!(via(&always, near), Ok(Some(Via::Ipip)));
        let never = pool(None);
        assert_eq!(via(&never, near), Ok(Some(Via::HostGw)));
        assert!(via(&never, far)
            .unwrap_err()
            .contains("does not encapsulate"));
        let vx = pool(Some((Via::Vxlan, EncapMode::Always)));
        assert!(via(&vx, near).unwrap_err().contains("VTEP MAC"));
        // Outside the pools, our own subnet, ourselves as next hop.
        assert!(route_for(&always, &local(), p("10.99.0.0/24"), near, &none)
            .unwrap_err()
            .contains("outside every pool"));
        assert_eq!(
            route_for(&always, &local(), p("10.77.1.0/24"), near, &none),
            Ok(None)
        );
        assert!(route_for(
            &always,
            &local(),
            p("10.77.3.0/24"),
            local().public_ip,
            &none
        )
        .is_err());
    }

    #[test]
    fn settings_are_checked_and_named() {
        let s: BgpSection = toml::from_str(
            "asn = 64512\nhold_time = 9\n[[peers]]\naddress = \"192.168.77.3\"\n[[peers]]\naddress = \"192.168.77.4\"\nasn = 65000\npassive = true\n[[pools]]\ncidr = \"10.77.0.0/16\"\nipip_mode = \"CrossSubnet\"\n",
        )
        .unwrap();
        let c = s.resolve().unwrap();
        assert_eq!(c.peers[0].asn, 64512);
        assert_eq!(c.peers[1].asn, 65000);
        assert!(c.peers[1].passive);
        assert_eq!(c.pools[0].encap, Some((Via::Ipip, EncapMode::CrossSubnet)));
        assert_eq!(c.restart_time, Some(120));
        for (text, want) in [
            ("hold_time = 2", "bgp.hold_time 2"),
            (
                "[[peers]]\naddress = \"1.2.3.4\"\npassword = \"x\"",
                "TCP MD5",
            ),
            (
                "[[pools]]\ncidr = \"10.0.0.0/8\"\nipip_mode = \"Always\"\nvxlan_mode = \"Always\"",
                "cannot both",
            ),
            ("[[peers]]\naddres = \"1.2.3.4\"", "addres"),
            (
                "[[pools]]\ncidr = \"10.0.0.0/8\"\nipip_mode = \"Sometimes\"",
                "Sometimes",
            ),
        ] {
            let e = toml::from_str::<BgpSection>(text)
                .map_err(|e| e.to_string())
                .and_then(|s| s.resolve())
                .unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
