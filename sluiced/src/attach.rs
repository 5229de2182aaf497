//! How a port joins the switch before its workers open it, per backend:
//! on AF_XDP the XDP program goes on the interface (its socket map is what
//! workers register in); on DPDK the device is probed, configured and
//! started (its port id is what workers poll). Both are held by the control
//! side as an [`Attached`] and let go (program detached, device stopped and
//! detached) only after every worker closed its queue.
//!
//! DPDK device arguments follow from the port: `devargs` as given; a
//! vhost-user pod gets `net_vhost` in client mode on its socket with one
//! queue pair per worker; a veth pod without devargs gets DPDK's
//! `net_af_xdp` on the interface; the host port without devargs a
//! `net_tap` named after it (the kernel side sluiced then configures).

use crate::config::{DaemonSettings, DpdkSettings, PortConfig, PortKind};
use crate::registry::PortRegistry;
use sluice_ports::afxdp::{Steering, XdpProgram};
use sluice_ports::dpdk::flow::{self, AppliedFlows, HwProfile, NodeAddrs};
use sluice_ports::dpdk::{Device, DeviceSpec, DpdkError, Eal, EalConfig, Mempool};
use sluice_ports::BackendError;
use std::sync::Arc;

/// What a worker's DPDK backend and the control side share.
#[derive(Debug)]
pub struct DpdkContext {
    settings: DpdkSettings,
    /// The pool of each worker (the pool of its core's NUMA socket).
    pools: Vec<Arc<Mempool>>,
    /// The hardware profile for the uplink.
    profile: Option<HwProfile>,
    /// The VXLAN port (for the profile's rules).
    vxlan_port: u16,
}

/// Reads `daemon.dpdk.profile` and checks the workers against it: its
/// cores become the workers when `daemon.workers` is empty, must equal
/// them otherwise, and must sit on its NUMA node. Returns the profile and
/// the workers to run.
pub fn load_profile(d: &DaemonSettings) -> Result<(Option<HwProfile>, Vec<usize>), String> {
    let Some(path) = &d.dpdk.profile else {
        return Ok((None, d.workers.clone()));
    };
    let p = HwProfile::load(path).map_err(|e| format!("daemon.dpdk.profile: {e}"))?;
    let workers = match (d.workers.is_empty(), p.cores.is_empty()) {
        (true, false) => p.cores.clone(),
        (false, false) if d.workers != p.cores => {
            return Err(format!(
                "daemon.workers {:?} differ from the cores of hardware profile `{}` ({:?}); give one or make them equal",
                d.workers, p.name, p.cores
            ))
        }
        _ => d.workers.clone(),
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for &c in &workers {
        if c >= cores {
            return Err(format!(
                "hardware profile `{}`: core {c} does not exist (this machine has {cores})",
                p.name
            ));
        }
        if let Some(n) = p.numa_node {
            let on = numa_node(c);
            if on != n {
                return Err(format!(
                    "hardware profile `{}`: core {c} is on NUMA node {on}, the profile's NIC on node {n}",
                    p.name
                ));
            }
        }
    }
    Ok((Some(p), workers))
}

impl DpdkContext {
    /// Starts EAL and makes one pool per NUMA socket of the workers'
    /// cores, each mbuf with room for the largest MTU configured.
    pub fn start(
        d: &DaemonSettings,
        ports: &[PortConfig],
        profile: Option<HwProfile>,
        vxlan_port: u16,
    ) -> Result<Arc<DpdkContext>, BackendError> {
        let s = &d.dpdk;
        let pci: Vec<String> = ports
            .iter()
            .filter_map(|p| p.devargs.as_deref())
            .filter(|a| sluice_ports::dpdk::device::is_pci(a))
            .map(str::to_string)
            .collect();
        if !s.no_huge {
            let free = free_hugepage_mb();
            if free < u64::from(s.memory_mb) {
                return Err(DpdkError::Eal {
                    args: format!("-m {}", s.memory_mb),
                    reason: format!(
                        "{free} MiB of huge pages are free, daemon.dpdk.memory_mb asks for {}: reserve them (`dpdk-hugepages.py -p 2M --setup 1G`, or vm.nr_hugepages) or set daemon.dpdk.no_huge = true for a lab",
                        s.memory_mb
                    ),
                }
                .into());
            }
        }
        Eal::init(&EalConfig {
            no_huge: s.no_huge,
            memory_mb: s.memory_mb,
            file_prefix: s.file_prefix.clone(),
            pci,
            main_core: d.workers.first().copied().unwrap_or(0),
            extra: s.eal_args.clone(),
        })?;
        let mtu = ports.iter().map(|p| p.mtu).max().unwrap_or(1500).max(1500);
        let room = data_room(mtu);
        let cores: Vec<Option<usize>> = if d.workers.is_empty() {
            vec![None]
        } else {
            d.workers.iter().map(|&c| Some(c)).collect()
        };
        let mut by_socket: Vec<(i32, Arc<Mempool>)> = Vec::new();
        let mut pools = Vec::new();
        for c in cores {
            let socket = c.map_or(0, numa_node);
            let pool = match by_socket.iter().find(|(s, _)| *s == socket) {
                Some((_, p)) => p.clone(),
                None => {
                    let name = format!("sluice_mbufs_s{socket}");
                    let p = Mempool::create(&name, s.mbufs, s.mbuf_cache, room, socket)
                        .or_else(|_| Mempool::create(&name, s.mbufs, s.mbuf_cache, room, -1))?;
                    by_socket.push((socket, p.clone()));
                    p
                }
            };
            pools.push(pool);
        }
        Ok(Arc::new(DpdkContext {
            settings: s.clone(),
            pools,
            profile,
            vxlan_port,
        }))
    }

    /// Worker `w`'s pool.
    pub fn pool(&self, w: usize) -> Arc<Mempool> {
        self.pools[w].clone()
    }

    /// The largest MTU a port of this node may have (the mbufs' room).
    pub fn max_mtu(&self) -> u16 {
        self.pools
            .first()
            .map_or(1500, |p| p.data_room().saturating_sub(HEADROOM + 18))
    }

    /// The device arguments of `p` on a node with `workers` workers.
    pub fn devargs(p: &PortConfig, workers: usize) -> String {
        if let Some(d) = &p.devargs {
            return d.clone();
        }
        if let Some(sock) = &p.vhost_user {
            return format!(
                "net_vhost_{},iface={},client=1,queues={workers}",
                p.name,
                sock.display()
            );
        }
        match p.kind {
            PortKind::Host => format!("net_tap_{},iface={}", p.name, p.name),
            _ => format!(
                "net_af_xdp_{},iface={},start_queue=0,queue_count={workers}",
                p.name, p.name
            ),
        }
    }

    fn open(&self, p: &PortConfig) -> Result<(Device, Option<AppliedFlows>), BackendError> {
        if p.mtu > self.max_mtu() {
            return Err(BackendError::Dpdk(sluice_ports::dpdk::DpdkError::Device {
                devargs: p.name.clone(),
                step: "mtu",
                reason: format!(
                    "MTU {} is more than this node's mbufs hold ({}); raise the largest MTU in the configuration and restart",
                    p.mtu,
                    self.max_mtu()
                ),
            }));
        }
        let profile = self.profile.as_ref().filter(|_| p.kind == PortKind::Uplink);
        let mut device = Device::open(&DeviceSpec {
            devargs: Self::devargs(p, self.pools.len()),
            mtu: p.mtu,
            rx_descriptors: self.settings.rx_descriptors,
            tx_descriptors: self.settings.tx_descriptors,
            pools: self.pools.clone(),
            isolate_for: profile.filter(|pr| pr.isolate).map(|pr| pr.name.clone()),
        })?;
        let Some(profile) = profile else {
            return Ok((device, None));
        };
        let driver = device.info().driver.clone();
        if !profile.drivers.is_empty() && !profile.drivers.contains(&driver) {
            return Err(DpdkError::Flow {
                profile: profile.name.clone(),
                rule: "drivers".into(),
                reason: format!(
                    "written for {:?}, but the uplink's driver is {driver}",
                    profile.drivers
                ),
            }
            .into());
        }
        let flows = flow::apply(
            device.port_id(),
            profile,
            NodeAddrs {
                node_ip: p.address.map_or(std::net::Ipv4Addr::UNSPECIFIED, |a| a.ip),
                vxlan_port: self.vxlan_port,
                queues: self.pools.len() as u16,
            },
        )?;
        device.set_steering(flows.rules.clone());
        Ok((device, Some(flows)))
    }
}

/// Headroom in front of every mbuf's data (DPDK's `RTE_PKTMBUF_HEADROOM`).
const HEADROOM: u16 = 128;

/// The mbuf data room for frames of `mtu`: headroom, then the frame with
/// its Ethernet header and a VLAN tag rounded up to 64 bytes, and at least
/// DPDK's default 2048 (drivers size their receive buffers from it:
/// `net_af_packet`'s frames need 2016 bytes whatever the MTU).
pub fn data_room(mtu: u16) -> u16 {
    let frame = u32::from(mtu) + 18;
    let room = u32::from(HEADROOM) + (frame.div_ceil(64) * 64).max(2048);
    room.min(u32::from(u16::MAX)) as u16
}

/// Free huge pages of every size, in MiB.
fn free_hugepage_mb() -> u64 {
    let Ok(dir) = std::fs::read_dir("/sys/kernel/mm/hugepages") else {
        return 0;
    };
    dir.flatten()
        .filter_map(|e| {
            let kb: u64 = e
                .file_name()
                .to_str()?
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            let free: u64 = std::fs::read_to_string(e.path().join("free_hugepages"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            Some(kb * free / 1024)
        })
        .sum()
}

/// The NUMA node of `core` (0 where the machine does not say).
fn numa_node(core: usize) -> i32 {
    std::fs::read_dir(format!("/sys/devices/system/cpu/cpu{core}"))
        .ok()
        .and_then(|d| {
            d.flatten().find_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_prefix("node"))
                    .and_then(|n| n.parse().ok())
            })
        })
        .unwrap_or(0)
}

/// Which backend attaches ports.
#[derive(Debug, Clone)]
pub enum Attacher {
    /// XDP programs and AF_XDP sockets.
    AfXdp,
    /// DPDK devices.
    Dpdk(Arc<DpdkContext>),
}

/// A port attached to the switch, as the control side holds it.
#[derive(Debug)]
pub enum Attached {
    /// An XDP program on an interface.
    Xdp(XdpProgram),
    /// A started DPDK device.
    Dpdk {
        /// The switch port's name.
        name: String,
        /// A hardware profile's rules on it (removed before the device
        /// closes: fields drop in order).
        flows: Option<AppliedFlows>,
        /// The device.
        device: Device,
    },
}

impl Attached {
    /// The switch port's name.
    pub fn name(&self) -> &str {
        match self {
            Attached::Xdp(p) => p.ifname(),
            Attached::Dpdk { name, .. } => name,
        }
    }

    /// The XDP program, on AF_XDP.
    pub fn program(&self) -> Option<&XdpProgram> {
        match self {
            Attached::Xdp(p) => Some(p),
            Attached::Dpdk { .. } => None,
        }
    }

    /// The device, on DPDK.
    pub fn device(&self) -> Option<&Device> {
        match self {
            Attached::Xdp(_) => None,
            Attached::Dpdk { device, .. } => Some(device),
        }
    }

    /// Tells the workers' registry where to find the port.
    pub fn register(&self, registry: &PortRegistry) {
        match self {
            Attached::Xdp(p) => registry.add(p.ifname(), p.xsk_map()),
            Attached::Dpdk { name, device, .. } => registry.add_device(name, device.port_id()),
        }
    }
}

impl Attacher {
    /// Attaches `p` (steered as `steering` on AF_XDP).
    pub fn attach(&self, p: &PortConfig, steering: Steering) -> Result<Attached, BackendError> {
        match self {
            Attacher::AfXdp => match crate::handover::take_program(&p.name) {
                // Handed over at an upgrade: attached all along.
                Some(prog) => {
                    prog.set_steering(steering)?;
                    Ok(Attached::Xdp(prog))
                }
                None => Ok(Attached::Xdp(XdpProgram::attach(&p.name, steering)?)),
            },
            Attacher::Dpdk(ctx) => {
                let (device, flows) = ctx.open(p)?;
                Ok(Attached::Dpdk {
                    name: p.name.clone(),
                    flows,
                    device,
                })
            }
        }
    }

    /// Whether `p` is a kernel interface sluiced takes over (so it must
    /// exist, be a veth or TAP for a pod, and have queues for the workers).
    pub fn is_netdev(&self, p: &PortConfig) -> bool {
        match self {
            Attacher::AfXdp => p.kind != PortKind::Host,
            Attacher::Dpdk(_) => {
                p.kind != PortKind::Host && p.devargs.is_none() && p.vhost_user.is_none()
            }
        }
    }

    /// What a second sluiced must not take over while this one holds
    /// `p`: the interface on AF_XDP; on DPDK the PCI device, or the
    /// interface or socket a vdev's `iface=` names. `None` for a vdev of
    /// this process alone (`net_null`, `net_pcap` on files).
    pub fn lock_key(&self, p: &PortConfig) -> Option<String> {
        let Attacher::Dpdk(ctx) = self else {
            return Some(p.name.clone());
        };
        let args = DpdkContext::devargs(p, ctx.pools.len());
        if sluice_ports::dpdk::device::is_pci(&args) {
            return Some(format!(
                "pci-{}",
                sluice_ports::dpdk::device::ethdev_name(&args)
            ));
        }
        args.split(',')
            .find_map(|kv| kv.strip_prefix("iface="))
            .map(|i| format!("iface-{}", i.replace('/', "_")))
    }

    /// Whether this is the DPDK backend.
    pub fn is_dpdk(&self) -> bool {
        matches!(self, Attacher::Dpdk(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_room_fits_the_mtu() {
        assert_eq!(data_room(1500), 128 + 2048);
        assert_eq!(data_room(4000), 128 + 4032);
        assert_eq!(data_room(9000), 128 + 9024);
        assert!(data_room(u16::MAX) > 9000);
    }

    #[test]
    fn devargs_follow_the_port() {
        let mut p: PortConfig = serde_json::from_value(serde_json::json!({
            "name": "slabc", "kind": "pod", "mac": "02:00:00:00:01:02", "ip": "10.5.1.2"
        }))
        .unwrap();
        assert_eq!(
            DpdkContext::devargs(&p, 2),
            "net_af_xdp_slabc,iface=slabc,start_queue=0,queue_count=2"
        );
        p.vhost_user = Some("/var/run/sluice/vhost/abc/sock".into());
        assert_eq!(
            DpdkContext::devargs(&p, 2),
            "net_vhost_slabc,iface=/var/run/sluice/vhost/abc/sock,client=1,queues=2"
        );
        p.vhost_user = None;
        p.devargs = Some("net_null0".into());
        assert_eq!(DpdkContext::devargs(&p, 1), "net_null0");
        p.devargs = None;
        p.kind = PortKind::Host;
        p.name = "sluice0".into();
        assert_eq!(DpdkContext::devargs(&p, 1), "net_tap_sluice0,iface=sluice0");
    }
}
