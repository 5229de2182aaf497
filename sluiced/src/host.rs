//! Host integration: what sluiced does to the node around it. A lock per
//! interface so a second sluiced is refused, the host TAP's addresses and
//! route, and NUMA placement read from sysfs.

use crate::config::NodeConfig;

/// An advisory lock on one interface of this network namespace, held for the
/// daemon's life (`/run/sluice/locks/<netns>-<ifname>.lock`, holding our PID).
#[derive(Debug)]
pub(crate) struct PortLock {
    _file: std::fs::File,
}

impl PortLock {
    pub(crate) fn claim(ifname: &str) -> Result<PortLock, String> {
        use std::io::{Read, Seek, Write};
        let netns = std::fs::read_link("/proc/self/ns/net")
            .map(|p| {
                p.to_string_lossy()
                    .chars()
                    .filter(char::is_ascii_digit)
                    .collect::<String>()
            })
            .unwrap_or_default();
        let dir = std::path::Path::new("/run/sluice/locks");
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let path = dir.join(format!("{netns}-{ifname}.lock"));
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        if let Err(e) = f.try_lock() {
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
            return Err(match e {
                std::fs::TryLockError::WouldBlock => format!("pid {}", pid.trim()),
                std::fs::TryLockError::Error(e) => format!("lock {}: {e}", path.display()),
            });
        }
        let _ = f.set_len(0);
        let _ = f.rewind();
        let _ = write!(f, "{}", std::process::id());
        Ok(PortLock { _file: f })
    }

    /// A lock an earlier sluiced held and handed over at an upgrade (the
    /// same open file, so the same lock); this process's pid goes in.
    pub(crate) fn inherit(fd: std::os::fd::OwnedFd) -> PortLock {
        use std::io::{Seek, Write};
        let mut f = std::fs::File::from(fd);
        let _ = f.set_len(0);
        let _ = f.rewind();
        let _ = write!(f, "{}", std::process::id());
        PortLock { _file: f }
    }

    /// The lock file's descriptor, for a handover.
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self._file)
    }
}

/// Parses a sysfs CPU list such as `0-3,8,10-11`.
pub(crate) fn parse_cpulist(s: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                    out.extend(a..=b);
                }
            }
            None => out.extend(part.parse::<usize>().ok()),
        }
    }
    out
}

/// Where the uplink's NIC sits and whether the workers' cores are on the
/// same NUMA node (from sysfs, as hwloc reads it). `None` when the kernel
/// does not say (virtual NICs, single-node machines).
pub fn numa_report(uplink: &str, cores: &[usize]) -> Option<String> {
    let node: i64 = std::fs::read_to_string(format!("/sys/class/net/{uplink}/device/numa_node"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    if node < 0 {
        return None;
    }
    let local = parse_cpulist(
        &std::fs::read_to_string(format!("/sys/devices/system/node/node{node}/cpulist")).ok()?,
    );
    let remote: Vec<usize> = cores
        .iter()
        .copied()
        .filter(|c| !local.contains(c))
        .collect();
    Some(if cores.is_empty() {
        format!("uplink {uplink} is on NUMA node {node} (cores {local:?}); the worker is not pinned: set daemon.workers to cores of that node")
    } else if remote.is_empty() {
        format!("uplink {uplink} is on NUMA node {node}; every worker core is local")
    } else {
        format!("uplink {uplink} is on NUMA node {node}; worker cores {remote:?} are on another node (local cores: {local:?})")
    })
}

/// Why the host port could not be configured; each variant names the step.
#[derive(Debug, thiserror::Error)]
pub enum HostPortError {
    /// The TAP could not be opened.
    #[error("open the TAP: {0}")]
    Open(sluice_ports::BackendError),
    /// No runtime for the netlink requests.
    #[error("cannot start a runtime for netlink: {0}")]
    Runtime(std::io::Error),
    /// No netlink socket.
    #[error("cannot open a netlink socket: {0}")]
    Socket(std::io::Error),
    /// The interface could not be looked up.
    #[error("look up link {name}: {source}")]
    Lookup {
        /// The interface.
        name: String,
        /// The kernel's answer.
        source: rtnetlink::Error,
    },
    /// The interface does not exist.
    #[error("look up link {0}: no such interface")]
    NoSuchLink(String),
    /// Setting the MAC and bringing the link up failed.
    #[error("set MAC {mac} and up on {name}: {source}")]
    SetLink {
        /// The interface.
        name: String,
        /// The MAC asked for.
        mac: crate::wire::MacAddr,
        /// The kernel's answer.
        source: rtnetlink::Error,
    },
    /// Adding (or replacing) the gateway address failed.
    #[error("add address {address}/32 on {name}: {source}")]
    Address {
        /// The interface.
        name: String,
        /// The pods' gateway address.
        address: std::net::Ipv4Addr,
        /// The kernel's answer.
        source: rtnetlink::Error,
    },
    /// Replacing the pod-network route failed.
    #[error("replace route {network} dev {name} src {source_address}: {source}")]
    Route {
        /// The interface.
        name: String,
        /// The pod network.
        network: crate::config::Ipv4Net,
        /// The preferred source (the gateway address).
        source_address: std::net::Ipv4Addr,
        /// The kernel's answer.
        source: rtnetlink::Error,
    },
}

/// Gives the host TAP the kernel-side MAC, brings it up, puts the pods'
/// gateway address on it (`/32`, replacing one already there) and routes the
/// pod network through it with the gateway as source (replacing the route).
/// Talks rtnetlink on a short-lived current-thread runtime.
pub(crate) fn configure_host_port(
    cfg: &NodeConfig,
    name: &str,
    mac: crate::wire::MacAddr,
) -> Result<(), HostPortError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(HostPortError::Runtime)?;
    rt.block_on(configure_host_port_netlink(cfg, name, mac))
}

async fn configure_host_port_netlink(
    cfg: &NodeConfig,
    name: &str,
    mac: crate::wire::MacAddr,
) -> Result<(), HostPortError> {
    use futures::TryStreamExt;
    use netlink_packet_route::route::{RouteProtocol, RouteScope};
    let (connection, handle, _) = rtnetlink::new_connection().map_err(HostPortError::Socket)?;
    let connection = tokio::spawn(connection);
    let result = async {
        let link = handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute()
            .try_next()
            .await
            .map_err(|source| match &source {
                rtnetlink::Error::NetlinkError(e) if e.code.map(|c| c.get()) == Some(-ENODEV) => {
                    HostPortError::NoSuchLink(name.to_string())
                }
                _ => HostPortError::Lookup {
                    name: name.to_string(),
                    source,
                },
            })?
            .ok_or_else(|| HostPortError::NoSuchLink(name.to_string()))?;
        let index = link.header.index;
        handle
            .link()
            .set(
                rtnetlink::LinkUnspec::new_with_index(index)
                    .address(mac.0.to_vec())
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(|source| HostPortError::SetLink {
                name: name.to_string(),
                mac,
                source,
            })?;
        let gateway = cfg.node.gateway();
        handle
            .address()
            .add(index, std::net::IpAddr::V4(gateway), 32)
            .replace()
            .execute()
            .await
            .map_err(|source| HostPortError::Address {
                name: name.to_string(),
                address: gateway,
                source,
            })?;
        let network = cfg.node.pod_network;
        let route = rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new()
            .destination_prefix(network.addr(), network.len())
            .output_interface(index)
            .pref_source(gateway)
            .scope(RouteScope::Link)
            .protocol(RouteProtocol::Boot)
            .build();
        handle
            .route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(|source| HostPortError::Route {
                name: name.to_string(),
                network,
                source_address: gateway,
                source,
            })
    }
    .await;
    connection.abort();
    result
}

/// The kind of link `name` is, as the kernel's link info says (`veth`,
/// `tun` for a TAP, `bridge`, …); `None` for a device without one (a
/// physical NIC). Over rtnetlink on a short-lived runtime (control path).
pub(crate) fn link_kind(name: &str) -> Result<Option<String>, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime for netlink: {e}"))?;
    rt.block_on(async {
        use futures::TryStreamExt;
        use netlink_packet_route::link::{LinkAttribute, LinkInfo};
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|e| format!("netlink socket: {e}"))?;
        let connection = tokio::spawn(connection);
        let link = handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute()
            .try_next()
            .await;
        connection.abort();
        let link = link
            .map_err(|e| format!("interface `{name}`: {e}"))?
            .ok_or_else(|| format!("interface `{name}` does not exist"))?;
        Ok(link.attributes.iter().find_map(|a| match a {
            LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
                LinkInfo::Kind(k) => Some(k.to_string()),
                _ => None,
            }),
            _ => None,
        }))
    })
}

/// `ENODEV`, the kernel's "no such device".
const ENODEV: i32 = 19;

#[cfg(test)]
mod tests {
    #[test]
    fn the_loopback_has_no_link_kind_and_a_missing_link_is_named() {
        assert_eq!(super::link_kind("lo").unwrap(), None);
        let e = super::link_kind("nosuch-sl0").unwrap_err();
        assert!(e.contains("nosuch-sl0"), "{e}");
    }

    #[test]
    fn cpulists_parse() {
        assert_eq!(
            super::parse_cpulist("0-3,8,10-11\n"),
            vec![0, 1, 2, 3, 8, 10, 11]
        );
        assert_eq!(super::parse_cpulist(""), Vec::<usize>::new());
    }
}
