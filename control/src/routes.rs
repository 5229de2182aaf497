//! From leases to sluiced routes, and from one route set to the next.
//!
//! [`desired`] turns every other node's lease into one route to its subnet,
//! as flanneld's backends program the kernel:
//! - `vxlan`: via VXLAN to the lease's `PublicIP` with its `VtepMAC`;
//! - `ipip`: via IPIP to `PublicIP`;
//! - `host-gw`: plain routing to `PublicIP`, which must be on this node's
//!   uplink subnet (flanneld fails the route otherwise; here the lease is
//!   skipped and reported);
//! - with `DirectRouting` (vxlan, ipip): host-gw to nodes on this node's
//!   uplink subnet, the tunnel to the rest.
//!
//! Leases of another backend type are skipped as flanneld skips them, as are
//! this node's own subnet and any lease naming this node's address. Each skip
//! carries its reason for the log and metrics.
//!
//! [`diff`] compares the routes in force with the desired ones and yields
//! the delta: routes to add or replace, prefixes to remove. Applying the
//! delta to the routes in force gives exactly the desired set, so an agent
//! that restarts and finds its routes already in sluiced changes nothing.
//!
//! Ownership ([`managed`]): the agent owns the routes sluiced holds to
//! prefixes inside the pod network via `vxlan`, `ipip` or `host-gw`, other
//! than this node's own subnet. Every other route (the node's own pods, the
//! host route, blackholes, prefixes outside the pod network) is left alone.

use crate::lease::LeaseAttrs;
use crate::network::{BackendType, NetworkConfig};
use sluice_api::{IfAddr, Ipv4Net, RouteConfig, Via};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// What the agent knows about its own node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    /// This node's subnet.
    pub subnet: Ipv4Net,
    /// This node's underlay address (`PublicIP`).
    pub public_ip: Ipv4Addr,
    /// The uplink's address and on-link length (for host-gw and
    /// DirectRouting), if sluiced has an uplink address.
    pub uplink: Option<IfAddr>,
}

/// A lease that gets no route, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The lease's subnet.
    pub subnet: Ipv4Net,
    /// Why.
    pub reason: String,
}

/// Routes the leases call for (by prefix), and the leases skipped.
pub fn desired(
    cfg: &NetworkConfig,
    local: &Local,
    leases: &BTreeMap<Ipv4Net, LeaseAttrs>,
) -> (BTreeMap<Ipv4Net, RouteConfig>, Vec<Skipped>) {
    let mut routes = BTreeMap::new();
    let mut skipped = Vec::new();
    for (subnet, attrs) in leases {
        match route_for(cfg, local, *subnet, attrs) {
            Ok(Some(r)) => {
                routes.insert(*subnet, r);
            }
            Ok(None) => {}
            Err(reason) => skipped.push(Skipped {
                subnet: *subnet,
                reason,
            }),
        }
    }
    (routes, skipped)
}

/// The route for one lease; `Ok(None)` for this node's own lease.
pub fn route_for(
    cfg: &NetworkConfig,
    local: &Local,
    subnet: Ipv4Net,
    attrs: &LeaseAttrs,
) -> Result<Option<RouteConfig>, String> {
    if subnet == local.subnet {
        return Ok(None);
    }
    if attrs.public_ip == local.public_ip {
        return Err(format!(
            "names this node's address {} but is not this node's subnet",
            attrs.public_ip
        ));
    }
    if !cfg.network.covers(&subnet) {
        return Err(format!("outside the network {}", cfg.network));
    }
    if subnet.covers(&local.subnet) || local.subnet.covers(&subnet) {
        return Err(format!("overlaps this node's subnet {}", local.subnet));
    }
    let kind = cfg.backend.kind;
    if attrs.backend_type != kind.name() {
        return Err(format!(
            "backend `{}`, not this network's `{kind}`",
            attrs.backend_type
        ));
    }
    let on_link = local
        .uplink
        .is_some_and(|u| u.network().contains(attrs.public_ip));
    let direct = on_link && (kind == BackendType::HostGw || cfg.backend.direct_routing);
    if direct {
        return Ok(Some(RouteConfig::to_node(
            subnet,
            Via::HostGw,
            attrs.public_ip,
        )));
    }
    match kind {
        BackendType::HostGw => Err(format!(
            "host-gw needs {} on this node's uplink subnet{}",
            attrs.public_ip,
            local
                .uplink
                .map(|u| format!(" {}", u.network()))
                .unwrap_or_default()
        )),
        BackendType::Ipip => Ok(Some(RouteConfig::to_node(
            subnet,
            Via::Ipip,
            attrs.public_ip,
        ))),
        BackendType::Vxlan => {
            let data = attrs.vxlan()?;
            let mut r = RouteConfig::to_node(subnet, Via::Vxlan, attrs.public_ip);
            r.vtep_mac = Some(data.vtep_mac);
            Ok(Some(r))
        }
    }
}

/// The routes among `in_force` that the agent owns (see the module docs).
pub fn managed(
    network: Ipv4Net,
    own_subnet: Option<Ipv4Net>,
    in_force: &[RouteConfig],
) -> BTreeMap<Ipv4Net, RouteConfig> {
    in_force
        .iter()
        .filter(|r| matches!(r.via, Via::Vxlan | Via::Ipip | Via::HostGw))
        .filter(|r| network.covers(&r.prefix) && Some(r.prefix) != own_subnet)
        .map(|r| (r.prefix, r.clone()))
        .collect()
}

/// A change to sluiced's routes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Delta {
    /// Routes to add or replace (`routes.add`).
    pub upsert: Vec<RouteConfig>,
    /// Prefixes to remove (`routes.remove`).
    pub remove: Vec<Ipv4Net>,
}

impl Delta {
    /// True if nothing changes.
    pub fn is_empty(&self) -> bool {
        self.upsert.is_empty() && self.remove.is_empty()
    }
}

/// The delta from `current` to `desired`.
pub fn diff(
    current: &BTreeMap<Ipv4Net, RouteConfig>,
    desired: &BTreeMap<Ipv4Net, RouteConfig>,
) -> Delta {
    Delta {
        upsert: desired
            .iter()
            .filter(|(p, r)| current.get(p) != Some(r))
            .map(|(_, r)| r.clone())
            .collect(),
        remove: current
            .keys()
            .filter(|p| !desired.contains_key(p))
            .copied()
            .collect(),
    }
}

/// `current` with `delta` applied.
pub fn apply(current: &mut BTreeMap<Ipv4Net, RouteConfig>, delta: &Delta) {
    for p in &delta.remove {
        current.remove(p);
    }
    for r in &delta.upsert {
        current.insert(r.prefix, r.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_api::MacAddr;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn cfg(backend: &str) -> NetworkConfig {
        NetworkConfig::parse(
            format!(r#"{{"Network":"10.5.0.0/16","Backend":{backend}}}"#).as_bytes(),
        )
        .unwrap()
    }

    fn local() -> Local {
        Local {
            subnet: net("10.5.1.0/24"),
            public_ip: Ipv4Addr::new(192, 168, 50, 1),
            uplink: Some(IfAddr {
                ip: Ipv4Addr::new(192, 168, 50, 1),
                len: 24,
            }),
        }
    }

    fn mac(last: u8) -> MacAddr {
        MacAddr::from([2, 0, 0, 0, 0xbb, last])
    }

    fn lease(ip: [u8; 4], kind: BackendType, m: u8) -> LeaseAttrs {
        LeaseAttrs::new(Ipv4Addr::from(ip), kind, 1, mac(m))
    }

    fn leases(kind: BackendType) -> BTreeMap<Ipv4Net, LeaseAttrs> {
        BTreeMap::from([
            (net("10.5.1.0/24"), lease([192, 168, 50, 1], kind, 1)),
            (net("10.5.2.0/24"), lease([192, 168, 50, 2], kind, 2)),
            (net("10.5.3.0/24"), lease([192, 168, 60, 3], kind, 3)),
        ])
    }

    #[test]
    fn vxlan_routes_carry_the_vtep_mac_and_skip_our_own_lease() {
        let (r, skipped) = desired(
            &cfg(r#"{"Type":"vxlan"}"#),
            &local(),
            &leases(BackendType::Vxlan),
        );
        assert!(skipped.is_empty());
        assert_eq!(r.len(), 2);
        let two = &r[&net("10.5.2.0/24")];
        assert_eq!(
            (two.via, two.node, two.vtep_mac),
            (
                Via::Vxlan,
                Some(Ipv4Addr::new(192, 168, 50, 2)),
                Some(mac(2))
            )
        );
        assert_eq!(r[&net("10.5.3.0/24")].via, Via::Vxlan);
    }

    #[test]
    fn direct_routing_uses_host_gw_on_link_and_the_tunnel_beyond() {
        for (backend, tunnel) in [
            (r#"{"Type":"vxlan","DirectRouting":true}"#, Via::Vxlan),
            (r#"{"Type":"ipip","DirectRouting":true}"#, Via::Ipip),
        ] {
            let kind = if tunnel == Via::Vxlan {
                BackendType::Vxlan
            } else {
                BackendType::Ipip
            };
            let (r, skipped) = desired(&cfg(backend), &local(), &leases(kind));
            assert!(skipped.is_empty());
            assert_eq!(
                r[&net("10.5.2.0/24")],
                RouteConfig::to_node(
                    net("10.5.2.0/24"),
                    Via::HostGw,
                    Ipv4Addr::new(192, 168, 50, 2)
                )
            );
            assert_eq!(r[&net("10.5.3.0/24")].via, tunnel);
        }
        // Without DirectRouting, the tunnel everywhere.
        let (r, _) = desired(
            &cfg(r#"{"Type":"ipip"}"#),
            &local(),
            &leases(BackendType::Ipip),
        );
        assert_eq!(r[&net("10.5.2.0/24")].via, Via::Ipip);
    }

    #[test]
    fn host_gw_skips_nodes_off_link_with_the_reason() {
        let (r, skipped) = desired(
            &cfg(r#"{"Type":"host-gw"}"#),
            &local(),
            &leases(BackendType::HostGw),
        );
        assert_eq!(
            r.keys().copied().collect::<Vec<_>>(),
            vec![net("10.5.2.0/24")]
        );
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].subnet, net("10.5.3.0/24"));
        assert!(
            skipped[0].reason.contains("192.168.60.3"),
            "{}",
            skipped[0].reason
        );
    }

    #[test]
    fn foreign_or_bad_leases_are_skipped_not_routed() {
        let mut l = leases(BackendType::Vxlan);
        l.insert(
            net("10.5.4.0/24"),
            lease([192, 168, 50, 4], BackendType::HostGw, 4),
        );
        l.insert(
            net("10.5.5.0/24"),
            LeaseAttrs::parse(br#"{"PublicIP":"192.168.50.5","BackendType":"vxlan"}"#).unwrap(),
        );
        l.insert(
            net("10.5.6.0/24"),
            lease([192, 168, 50, 1], BackendType::Vxlan, 6),
        );
        l.insert(
            net("10.6.0.0/24"),
            lease([192, 168, 50, 7], BackendType::Vxlan, 7),
        );
        l.insert(
            net("10.5.1.0/25"),
            lease([192, 168, 50, 8], BackendType::Vxlan, 8),
        );
        let (r, skipped) = desired(&cfg(r#"{"Type":"vxlan"}"#), &local(), &l);
        assert_eq!(r.len(), 2);
        let why: BTreeMap<_, _> = skipped
            .iter()
            .map(|s| (s.subnet.to_string(), s.reason.clone()))
            .collect();
        assert!(why["10.5.4.0/24"].contains("host-gw"), "{why:?}");
        assert!(why["10.5.5.0/24"].contains("BackendData"), "{why:?}");
        assert!(
            why["10.5.6.0/24"].contains("this node's address"),
            "{why:?}"
        );
        assert!(why["10.6.0.0/24"].contains("outside"), "{why:?}");
        assert!(why["10.5.1.0/25"].contains("overlaps"), "{why:?}");
    }

    #[test]
    fn diff_then_apply_gives_the_desired_set_and_nothing_for_equal_sets() {
        let c = cfg(r#"{"Type":"vxlan"}"#);
        let (want, _) = desired(&c, &local(), &leases(BackendType::Vxlan));
        let mut have = BTreeMap::new();
        have.insert(
            net("10.5.9.0/24"),
            RouteConfig::to_node(
                net("10.5.9.0/24"),
                Via::Ipip,
                Ipv4Addr::new(192, 168, 50, 9),
            ),
        );
        let mut changed = want[&net("10.5.2.0/24")].clone();
        changed.vtep_mac = Some(mac(0x22));
        have.insert(changed.prefix, changed);
        let d = diff(&have, &want);
        assert_eq!(d.remove, vec![net("10.5.9.0/24")]);
        assert_eq!(d.upsert.len(), 2);
        apply(&mut have, &d);
        assert_eq!(have, want);
        assert!(diff(&have, &want).is_empty());
    }

    #[test]
    fn managed_routes_are_remote_routes_inside_the_network_only() {
        let own = net("10.5.1.0/24");
        let in_force = vec![
            RouteConfig::to_node(
                net("10.5.2.0/24"),
                Via::Vxlan,
                Ipv4Addr::new(192, 168, 50, 2),
            ),
            RouteConfig::to_node(
                net("10.9.0.0/16"),
                Via::Ipip,
                Ipv4Addr::new(192, 168, 50, 2),
            ),
            RouteConfig::new(net("10.5.9.0/24"), Via::Blackhole),
            RouteConfig::new(net("0.0.0.0/0"), Via::Host),
            RouteConfig::to_node(own, Via::HostGw, Ipv4Addr::new(192, 168, 50, 3)),
        ];
        let m = managed(net("10.5.0.0/16"), Some(own), &in_force);
        assert_eq!(
            m.keys().copied().collect::<Vec<_>>(),
            vec![net("10.5.2.0/24")]
        );
    }
}
