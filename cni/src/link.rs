//! The pod's veth pair, over rtnetlink.
//!
//! One `RTM_NEWLINK` creates both ends: the host end in this process's
//! network namespace (the node's, where sluiced runs) and the pod end,
//! already named `CNI_IFNAME`, in the pod's namespace (`IFLA_NET_NS_FD` on
//! the peer), each with one queue per sluiced worker. The pod end is then
//! configured through a netlink socket opened inside the pod's namespace:
//! the thread enters it only while opening sockets (rtnetlink, the ethtool
//! ioctl's), and [`NsGuard`] takes it back even on an error.
//!
//! Deleting the host end deletes the pair; a missing one is not an error.

use crate::error::{PluginError, Result, INVALID_NETNS, LINK_FAILED};
use futures::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute};
use netlink_packet_route::route::{RouteAddress, RouteAttribute};
use nix::sched::CloneFlags;
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

/// What ADD asks for.
#[derive(Debug, Clone)]
pub struct VethSpec<'a> {
    /// The host end's name (the sluiced port).
    pub host: &'a str,
    /// `CNI_IFNAME`.
    pub pod_ifname: &'a str,
    /// `CNI_NETNS`.
    pub netns: &'a Path,
    /// Both ends' MTU.
    pub mtu: u16,
    /// Queues each way on both ends (sluiced's workers).
    pub queues: u32,
    /// The pod's address and prefix length.
    pub address: Ipv4Addr,
    /// The prefix length of the pod's subnet.
    pub prefix_len: u8,
    /// The default gateway.
    pub gateway: Ipv4Addr,
}

/// What ADD made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Veth {
    /// The host end's MAC.
    pub host_mac: [u8; 6],
    /// The pod end's MAC.
    pub pod_mac: [u8; 6],
}

/// The pod end as CHECK finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    /// Its MAC.
    pub mac: [u8; 6],
    /// Its MTU.
    pub mtu: u32,
    /// Its IPv4 addresses with prefix lengths.
    pub addresses: Vec<(Ipv4Addr, u8)>,
    /// The gateway of its IPv4 default route through it, if any.
    pub default_gateway: Option<Ipv4Addr>,
}

/// Enters a network namespace for the current thread; leaves on drop.
struct NsGuard {
    home: File,
}

impl NsGuard {
    fn enter(target: &File) -> Result<NsGuard> {
        let home = File::open("/proc/thread-self/ns/net")
            .map_err(|e| PluginError::io("/proc/thread-self/ns/net", e))?;
        nix::sched::setns(target, CloneFlags::CLONE_NEWNET).map_err(|e| {
            PluginError::new(
                INVALID_NETNS,
                format!("cannot enter the pod's network namespace: {e}"),
            )
        })?;
        Ok(NsGuard { home })
    }
}

impl Drop for NsGuard {
    fn drop(&mut self) {
        // Failing to return would leave later sockets in the pod: abort
        // rather than configure the wrong namespace.
        if nix::sched::setns(&self.home, CloneFlags::CLONE_NEWNET).is_err() {
            std::process::abort();
        }
    }
}

fn open_netns(path: &Path) -> Result<File> {
    File::open(path)
        .map_err(|e| PluginError::new(INVALID_NETNS, format!("CNI_NETNS {}: {e}", path.display())))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| PluginError::io("tokio runtime", e))
}

fn connect() -> Result<Handle> {
    let (conn, handle, _) =
        rtnetlink::new_connection().map_err(|e| PluginError::io("netlink socket", e))?;
    tokio::spawn(conn);
    Ok(handle)
}

fn netlink_err(what: impl std::fmt::Display, e: rtnetlink::Error) -> PluginError {
    PluginError::new(LINK_FAILED, format!("{what}: {e}"))
}

fn is_enodev(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.code.map(|c| c.get()) == Some(-19))
}

/// (index, MAC, MTU) of `name`, or `None`.
async fn find(h: &Handle, name: &str) -> Result<Option<(u32, [u8; 6], u32)>> {
    match h
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
    {
        Ok(Some(m)) => {
            let mut mac = [0u8; 6];
            let mut mtu = 0;
            for a in &m.attributes {
                match a {
                    LinkAttribute::Address(b) if b.len() == 6 => mac.copy_from_slice(b),
                    LinkAttribute::Mtu(v) => mtu = *v,
                    _ => {}
                }
            }
            Ok(Some((m.header.index, mac, mtu)))
        }
        Ok(None) => Ok(None),
        Err(e) if is_enodev(&e) => Ok(None),
        Err(e) => Err(netlink_err(format!("looking up `{name}`"), e)),
    }
}

/// Creates and configures the pair; on any failure deletes what it made.
pub fn create(spec: &VethSpec<'_>) -> Result<Veth> {
    let netns = open_netns(spec.netns)?;
    runtime()?.block_on(async {
        let host = connect()?;
        let pod = {
            let _in_pod = NsGuard::enter(&netns)?;
            connect()?
        };
        if find(&pod, spec.pod_ifname).await?.is_some() {
            return Err(PluginError::new(
                LINK_FAILED,
                format!(
                    "interface `{}` already exists in {}",
                    spec.pod_ifname,
                    spec.netns.display()
                ),
            ));
        }
        // A host end left by an interrupted ADD of this same attachment
        // (the name is derived from it) is replaced.
        if let Some((i, _, _)) = find(&host, spec.host).await? {
            host.link().del(i).execute().await.map_err(|e| netlink_err(format!("removing a stale `{}`", spec.host), e))?;
        }
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(spec.pod_ifname.to_string())
            .mtu(u32::from(spec.mtu))
            .setns_by_fd(netns.as_raw_fd())
            .append_extra_attribute(LinkAttribute::NumTxQueues(spec.queues))
            .append_extra_attribute(LinkAttribute::NumRxQueues(spec.queues))
            .build();
        let pair = LinkVeth::new(spec.host, spec.pod_ifname)
            .mtu(u32::from(spec.mtu))
            .append_extra_attribute(LinkAttribute::NumTxQueues(spec.queues))
            .append_extra_attribute(LinkAttribute::NumRxQueues(spec.queues))
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        debug_assert!(pair.attributes.iter().any(|a| matches!(a, LinkAttribute::LinkInfo(i) if i.iter().any(|x| matches!(x, netlink_packet_route::link::LinkInfo::Kind(InfoKind::Veth))))));
        host.link()
            .add(pair)
            .execute()
            .await
            .map_err(|e| netlink_err(format!("creating veth `{}`/`{}`", spec.host, spec.pod_ifname), e))?;
        let made = configure(&host, &pod, &netns, spec).await;
        if made.is_err() {
            if let Ok(Some((i, _, _))) = find(&host, spec.host).await {
                let _ = host.link().del(i).execute().await;
            }
        }
        made
    })
}

async fn configure(host: &Handle, pod: &Handle, netns: &File, spec: &VethSpec<'_>) -> Result<Veth> {
    let (pi, pod_mac, _) = find(pod, spec.pod_ifname).await?.ok_or_else(|| {
        PluginError::new(
            LINK_FAILED,
            format!("`{}` vanished from the pod", spec.pod_ifname),
        )
    })?;
    let (hi, host_mac, _) = find(host, spec.host)
        .await?
        .ok_or_else(|| PluginError::new(LINK_FAILED, format!("`{}` vanished", spec.host)))?;
    {
        let _in_pod = NsGuard::enter(netns)?;
        sluice_ports::netdev::disable_tx_offloads(spec.pod_ifname)
            .map_err(|e| PluginError::new(LINK_FAILED, format!("pod offloads: {e}")))?;
    }
    pod.address()
        .add(pi, IpAddr::V4(spec.address), spec.prefix_len)
        .execute()
        .await
        .map_err(|e| {
            netlink_err(
                format!(
                    "address {}/{} on `{}`",
                    spec.address, spec.prefix_len, spec.pod_ifname
                ),
                e,
            )
        })?;
    pod.link()
        .set(LinkUnspec::new_with_index(pi).up().build())
        .execute()
        .await
        .map_err(|e| netlink_err(format!("bringing `{}` up", spec.pod_ifname), e))?;
    pod.route()
        .add(
            RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(spec.gateway)
                .output_interface(pi)
                .build(),
        )
        .execute()
        .await
        .map_err(|e| netlink_err(format!("default route via {} in the pod", spec.gateway), e))?;
    host.link()
        .set(LinkUnspec::new_with_index(hi).up().build())
        .execute()
        .await
        .map_err(|e| netlink_err(format!("bringing `{}` up", spec.host), e))?;
    Ok(Veth { host_mac, pod_mac })
}

/// Deletes the pair by its host end; `false` when it did not exist.
pub fn delete(host_end: &str) -> Result<bool> {
    runtime()?.block_on(async {
        let h = connect()?;
        match find(&h, host_end).await? {
            None => Ok(false),
            Some((i, _, _)) => match h.link().del(i).execute().await {
                Ok(()) => Ok(true),
                Err(e) if is_enodev(&e) => Ok(false),
                Err(e) => Err(netlink_err(format!("deleting `{host_end}`"), e)),
            },
        }
    })
}

/// Whether `name` exists in this namespace.
pub fn exists(name: &str) -> Result<bool> {
    runtime()?.block_on(async { Ok(find(&connect()?, name).await?.is_some()) })
}

/// The pod end as it is now; `None` when `ifname` is not in `netns`.
pub fn inspect(netns: &Path, ifname: &str) -> Result<Option<PodView>> {
    let ns = open_netns(netns)?;
    runtime()?.block_on(async {
        let pod = {
            let _in_pod = NsGuard::enter(&ns)?;
            connect()?
        };
        let Some((index, mac, mtu)) = find(&pod, ifname).await? else {
            return Ok(None);
        };
        let mut addresses = Vec::new();
        let mut stream = pod.address().get().set_link_index_filter(index).execute();
        while let Some(m) = stream
            .try_next()
            .await
            .map_err(|e| netlink_err("listing addresses", e))?
        {
            for a in &m.attributes {
                if let AddressAttribute::Address(IpAddr::V4(ip)) = a {
                    addresses.push((*ip, m.header.prefix_len));
                }
            }
        }
        let mut default_gateway = None;
        let mut routes = pod
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        while let Some(r) = routes
            .try_next()
            .await
            .map_err(|e| netlink_err("listing routes", e))?
        {
            if r.header.destination_prefix_length != 0 {
                continue;
            }
            let oif = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            });
            let gw = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Gateway(RouteAddress::Inet(g)) => Some(*g),
                _ => None,
            });
            if oif == Some(index) {
                default_gateway = gw;
            }
        }
        Ok(Some(PodView {
            mac,
            mtu,
            addresses,
            default_gateway,
        }))
    })
}
