//! The agent's side of sluiced's control API.
//!
//! Calls go through `sluice_api::Client` (blocking, one connection per
//! call) on tokio's blocking pool, so a slow or absent sluiced never stalls
//! the agent's event loop. What the agent needs from the switch:
//! - [`Switch::facts`]: the epoch, node and tunnel settings, and the uplink
//!   (the node's `PublicIP`, VTEP MAC and MTU default from it);
//! - [`Switch::ensure_node`]: the pod network and subnet (and the VXLAN
//!   VNI and port) set to what the lease and network config say, with
//!   `node.set` only when they differ;
//! - [`Switch::managed_routes`] and [`Switch::apply`]: the agent's routes in
//!   force, and a delta applied as `routes.add` then `routes.remove` (adds
//!   first, so a replaced route never disappears in between). Each call is
//!   all-or-nothing in sluiced; the pair is not, so after a failure the agent
//!   re-reads the routes in force and diffs again.

use crate::network::{BackendType, NetworkConfig};
use crate::routes::{self, Delta};
use sluice_api::{
    Client, ClientError, IfAddr, Ipv4Net, MacAddr, NodeSettings, PortKind, RouteConfig,
    TunnelSettings,
};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// What the agent reads from sluiced.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// The tables' epoch (changes when sluiced restarts or reloads).
    pub epoch: String,
    /// Node settings in force.
    pub node: NodeSettings,
    /// Tunnel settings in force.
    pub tunnel: TunnelSettings,
    /// The uplink's address, if configured.
    pub uplink_address: Option<IfAddr>,
    /// The uplink's MAC.
    pub uplink_mac: Option<MacAddr>,
    /// The uplink's MTU.
    pub uplink_mtu: Option<u16>,
}

impl Facts {
    /// This node's VTEP MAC: the tunnel's, else the uplink's.
    pub fn vtep_mac(&self) -> Option<MacAddr> {
        self.tunnel.vtep_mac.or(self.uplink_mac)
    }
}

/// A failed call, with the operation named.
#[derive(Debug, thiserror::Error)]
#[error("sluiced {op}: {source}")]
pub struct SwitchError {
    /// The operation.
    pub op: &'static str,
    /// What failed.
    #[source]
    pub source: ClientError,
}

impl SwitchError {
    /// True if sluiced could not be reached (not running, socket missing).
    pub fn unreachable(&self) -> bool {
        matches!(self.source, ClientError::Io { .. })
    }
}

/// sluiced's control API, called off the event loop.
#[derive(Debug, Clone)]
pub struct Switch {
    client: Client,
}

impl Switch {
    /// The daemon at `socket`; each call waits at most `timeout`.
    pub fn new(socket: PathBuf, timeout: Duration) -> Self {
        Switch {
            client: Client::new(socket).with_timeout(timeout),
        }
    }

    async fn call<T, F>(&self, op: &'static str, f: F) -> Result<T, SwitchError>
    where
        T: Send + 'static,
        F: FnOnce(&Client) -> Result<T, ClientError> + Send + 'static,
    {
        let client = self.client.clone();
        tokio::task::spawn_blocking(move || f(&client))
            .await
            .unwrap_or_else(|e| {
                Err(ClientError::Io {
                    path: PathBuf::new(),
                    source: std::io::Error::other(format!("task failed: {e}")),
                })
            })
            .map_err(|source| SwitchError { op, source })
    }

    /// The epoch alone (cheap: polled every second).
    pub async fn epoch(&self) -> Result<String, SwitchError> {
        self.call("node.get", |c| c.node().map(|n| n.epoch)).await
    }

    /// Everything [`Facts`] holds.
    pub async fn facts(&self) -> Result<Facts, SwitchError> {
        let info = self.call("node.get", |c| c.node()).await?;
        let ports = self.call("ports.list", |c| c.ports()).await?;
        let uplink = ports.ports.iter().find(|p| p.kind == PortKind::Uplink);
        Ok(Facts {
            epoch: info.epoch,
            node: info.node,
            tunnel: info.tunnel,
            uplink_address: uplink.and_then(|u| u.address),
            uplink_mac: uplink.map(|u| u.mac),
            uplink_mtu: uplink.map(|u| u.mtu),
        })
    }

    /// Sets the pod network and subnet (and VXLAN's VNI and port) if they
    /// differ from `facts`; returns true if it changed anything.
    pub async fn ensure_node(
        &self,
        cfg: &NetworkConfig,
        subnet: Ipv4Net,
        facts: &Facts,
    ) -> Result<bool, SwitchError> {
        let mut args = sluice_api::NodeSetArgs::default();
        if facts.node.pod_network != cfg.network || facts.node.pod_subnet != subnet {
            let gateway_ip = facts.node.gateway_ip.filter(|g| subnet.contains(*g));
            args.node = Some(NodeSettings {
                pod_network: cfg.network,
                pod_subnet: subnet,
                gateway_ip,
                router_mac: facts.node.router_mac,
            });
        }
        if cfg.backend.kind == BackendType::Vxlan
            && (facts.tunnel.vni != cfg.backend.vni || facts.tunnel.vxlan_port != cfg.backend.port)
        {
            args.tunnel = Some(TunnelSettings {
                vni: cfg.backend.vni,
                vxlan_port: cfg.backend.port,
                vtep_mac: facts.tunnel.vtep_mac,
            });
        }
        if args.node.is_none() && args.tunnel.is_none() {
            return Ok(false);
        }
        self.call("node.set", move |c| c.set_node(args.node, args.tunnel))
            .await?;
        Ok(true)
    }

    /// The routes in force that the agent owns ([`routes::managed`]).
    pub async fn managed_routes(
        &self,
        network: Ipv4Net,
        own: Ipv4Net,
    ) -> Result<BTreeMap<Ipv4Net, RouteConfig>, SwitchError> {
        let list = self.call("routes.list", |c| c.routes()).await?;
        Ok(routes::managed(network, Some(own), &list.routes))
    }

    /// Applies `delta` (adds first, then removals).
    pub async fn apply(&self, delta: &Delta) -> Result<(), SwitchError> {
        if !delta.upsert.is_empty() {
            let up = delta.upsert.clone();
            self.call("routes.add", move |c| c.add_routes(up)).await?;
        }
        if !delta.remove.is_empty() {
            let rm = delta.remove.clone();
            self.call("routes.remove", move |c| c.remove_routes(rm))
                .await?;
        }
        Ok(())
    }
}
