//! A DPDK ethdev that sluice owns: probed from its device arguments,
//! configured with one RX and one TX queue per worker (RSS across them
//! where the device hashes), started, and on drop stopped, closed and (for
//! a vdev) detached, so a pod's vhost-user or AF_XDP device disappears with
//! its port.

use super::mbuf::Mempool;
use super::{strerror, sys, DpdkError};
use std::ffi::{CStr, CString};
use std::sync::Arc;

/// RSS hash types sluice asks for: IPv4 addresses and TCP/UDP ports (a
/// tunnel's outer UDP source port carries the inner flow's hash).
const RSS_HF: u64 = (1 << 2) | (1 << 3) | (1 << 4) | (1 << 5);
/// `RTE_ETH_TX_OFFLOAD_MBUF_FAST_FREE`: every mbuf a queue sends comes
/// from one pool with a reference count of 1 (true of a worker's queue).
const TX_FAST_FREE: u64 = 1 << 16;
/// `RTE_ETH_TX_OFFLOAD_IPV4_CKSUM`.
pub const TX_IPV4_CKSUM: u64 = 1 << 1;
/// `RTE_ETH_RX_OFFLOAD_IPV4_CKSUM`.
pub const RX_IPV4_CKSUM: u64 = 1 << 1;

/// What to open.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    /// DPDK device arguments: a PCI address or a vdev string.
    pub devargs: String,
    /// MTU to set.
    pub mtu: u16,
    /// RX descriptors per queue.
    pub rx_descriptors: u16,
    /// TX descriptors per queue.
    pub tx_descriptors: u16,
    /// The pool of each queue's worker: one queue pair per entry.
    pub pools: Vec<Arc<Mempool>>,
    /// Put the device in flow isolation (for this hardware profile)
    /// before configuring it.
    pub isolate_for: Option<String>,
}

/// What the device reported and what sluice turned on.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeviceInfo {
    /// The ethdev name.
    pub name: String,
    /// The driver (`net_vhost`, `net_ice`, …).
    pub driver: String,
    /// Queue pairs configured.
    pub queues: u16,
    /// Whether RSS spreads received packets across the queues.
    pub rss: bool,
    /// RX offloads the device offers (`RTE_ETH_RX_OFFLOAD_*` bits).
    pub rx_offload_capa: u64,
    /// TX offloads the device offers (`RTE_ETH_TX_OFFLOAD_*` bits).
    pub tx_offload_capa: u64,
    /// TX offloads turned on.
    pub tx_offloads: u64,
    /// RX offloads turned on.
    pub rx_offloads: u64,
    /// The device's MAC address.
    pub mac: [u8; 6],
    /// Whether the device runs in flow isolation (a hardware profile's).
    pub isolated: bool,
    /// The hardware profile's steering rules created on the device.
    pub steering: Vec<String>,
}

/// A started ethdev.
#[derive(Debug)]
pub struct Device {
    port: u16,
    devargs: String,
    vdev: bool,
    started: bool,
    info: DeviceInfo,
    _pools: Vec<Arc<Mempool>>,
}

/// The ethdev name a device's arguments give it (up to the first comma).
pub fn ethdev_name(devargs: &str) -> &str {
    devargs.split(',').next().unwrap_or(devargs)
}

/// Whether `devargs` names a PCI device (`DDDD:BB:DD.F` or `BB:DD.F`).
pub fn is_pci(devargs: &str) -> bool {
    let n = ethdev_name(devargs);
    let parts: Vec<&str> = n.split(':').collect();
    let hex = |s: &str, len: usize| s.len() == len && s.chars().all(|c| c.is_ascii_hexdigit());
    let (bus, devfn) = match parts.as_slice() {
        [dom, bus, devfn] if hex(dom, 4) => (*bus, *devfn),
        [bus, devfn] => (*bus, *devfn),
        _ => return false,
    };
    hex(bus, 2)
        && devfn.split_once('.').is_some_and(|(d, f)| {
            hex(d, 2) && f.len() == 1 && f.chars().all(|c| ('0'..='7').contains(&c))
        })
}

fn port_by_name(name: &str) -> Option<u16> {
    let c = CString::new(name).ok()?;
    let mut port = 0u16;
    // SAFETY: a valid C string and a valid out pointer.
    (unsafe { sys::rte_eth_dev_get_port_by_name(c.as_ptr(), &mut port) } == 0).then_some(port)
}

impl Device {
    /// Probes (unless EAL already did, for an allowed PCI device),
    /// configures and starts the device.
    pub fn open(spec: &DeviceSpec) -> Result<Device, DpdkError> {
        let name = ethdev_name(&spec.devargs).to_string();
        let fail = |step: &'static str, reason: String| DpdkError::Device {
            devargs: spec.devargs.clone(),
            step,
            reason,
        };
        let queues = u16::try_from(spec.pools.len())
            .ok()
            .filter(|&q| q > 0)
            .ok_or_else(|| fail("configure", "no queue to open".into()))?;
        let pci = is_pci(&spec.devargs);
        let port = match port_by_name(&name) {
            Some(p) if pci => p,
            Some(_) => {
                return Err(fail(
                    "probe",
                    format!(
                    "a device named `{name}` exists already: every port needs its own vdev name"
                ),
                ))
            }
            None => {
                let c = CString::new(spec.devargs.as_str())
                    .map_err(|_| fail("probe", "the arguments hold a NUL byte".into()))?;
                // SAFETY: EAL is up; a valid C string DPDK parses and copies.
                let rc = unsafe { sys::rte_dev_probe(c.as_ptr()) };
                if rc < 0 {
                    return Err(fail("probe", strerror(rc)));
                }
                port_by_name(&name).ok_or_else(|| {
                    fail(
                        "probe",
                        format!(
                            "no ethdev named `{name}` after probing{}",
                            if pci {
                                " (give the full PCI address, 0000:BB:DD.F)"
                            } else {
                                ""
                            }
                        ),
                    )
                })?
            }
        };
        // From here on, drop undoes what was done.
        let mut dev = Device {
            port,
            devargs: spec.devargs.clone(),
            vdev: !pci,
            started: false,
            info: DeviceInfo {
                name,
                queues,
                ..DeviceInfo::default()
            },
            _pools: spec.pools.clone(),
        };
        // SAFETY: zero is a valid dev_info; the call fills it for a valid port.
        let mut di: sys::rte_eth_dev_info = unsafe { std::mem::zeroed() };
        // SAFETY: a valid port and out pointer.
        let rc = unsafe { sys::rte_eth_dev_info_get(port, &mut di) };
        if rc != 0 {
            return Err(fail("info", strerror(rc)));
        }
        if !di.driver_name.is_null() {
            // SAFETY: the driver's static name.
            dev.info.driver = unsafe { CStr::from_ptr(di.driver_name) }
                .to_string_lossy()
                .into_owned();
        }
        if di.max_rx_queues < queues || di.max_tx_queues < queues {
            return Err(fail(
                "configure",
                format!(
                    "{} has {} RX and {} TX queues; sluice needs one pair per worker ({queues})",
                    dev.info.driver, di.max_rx_queues, di.max_tx_queues
                ),
            ));
        }
        if let Some(profile) = &spec.isolate_for {
            super::flow::isolate(port, profile)?;
            dev.info.isolated = true;
        }
        dev.info.rx_offload_capa = di.rx_offload_capa;
        dev.info.tx_offload_capa = di.tx_offload_capa;
        // SAFETY: an all-zero rte_eth_conf is DPDK's documented default.
        let mut conf: sys::rte_eth_conf = unsafe { std::mem::zeroed() };
        let rss_hf = RSS_HF & di.flow_type_rss_offloads;
        if queues > 1 && rss_hf != 0 {
            conf.rxmode.mq_mode = sys::RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_hf = rss_hf;
            dev.info.rss = true;
        }
        if di.max_mtu != 0 && u32::from(spec.mtu) <= u32::from(di.max_mtu) {
            conf.rxmode.mtu = u32::from(spec.mtu);
        }
        conf.txmode.offloads = di.tx_offload_capa & TX_FAST_FREE;
        // The device checks IPv4 header checksums where it can; the
        // pipeline then skips its own check of the outer header.
        conf.rxmode.offloads = di.rx_offload_capa & RX_IPV4_CKSUM;
        dev.info.rx_offloads = conf.rxmode.offloads;
        dev.info.tx_offloads = conf.txmode.offloads;
        // SAFETY: a valid port, stopped, and a valid configuration.
        let rc = unsafe { sys::rte_eth_dev_configure(port, queues, queues, &conf) };
        if rc != 0 {
            return Err(fail("configure", strerror(rc)));
        }
        // SAFETY: a valid port.
        let socket = unsafe { sys::rte_eth_dev_socket_id(port) } as u32;
        for (q, pool) in spec.pools.iter().enumerate() {
            let q = q as u16;
            // SAFETY: a configured port, a queue below the count configured,
            // default queue settings (NULL), and a valid pool that outlives
            // the device (the device holds it).
            let rc = unsafe {
                sys::rte_eth_rx_queue_setup(
                    port,
                    q,
                    spec.rx_descriptors,
                    socket,
                    std::ptr::null(),
                    pool.as_ptr(),
                )
            };
            if rc != 0 {
                return Err(fail("rx queue setup", strerror(rc)));
            }
            let mut txconf = di.default_txconf;
            txconf.offloads = conf.txmode.offloads;
            // SAFETY: as above, with a TX configuration copied from the
            // device's defaults.
            let rc = unsafe {
                sys::rte_eth_tx_queue_setup(port, q, spec.tx_descriptors, socket, &txconf)
            };
            if rc != 0 {
                return Err(fail("tx queue setup", strerror(rc)));
            }
        }
        // SAFETY: a configured port with every queue set up.
        let rc = unsafe { sys::rte_eth_dev_start(port) };
        if rc != 0 {
            return Err(fail("start", strerror(rc)));
        }
        dev.started = true;
        // Not every device filters by MAC (or lets it be turned off).
        // SAFETY: a started port.
        unsafe { sys::rte_eth_promiscuous_enable(port) };
        let mut mac = sys::rte_ether_addr::default();
        // SAFETY: a valid port and out pointer.
        if unsafe { sys::rte_eth_macaddr_get(port, &mut mac) } == 0 {
            dev.info.mac = mac.addr_bytes;
        }
        Ok(dev)
    }

    /// The ethdev port id.
    pub fn port_id(&self) -> u16 {
        self.port
    }

    /// The arguments it was opened with.
    pub fn devargs(&self) -> &str {
        &self.devargs
    }

    /// What the device reported and what was turned on.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// Records the steering rules created on the device, for reports.
    pub fn set_steering(&mut self, rules: Vec<String>) {
        self.info.steering = rules;
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // SAFETY: no worker polls the port any more (module invariant);
        // stop and close are valid on a configured port, and removing a
        // closed vdev detaches it from its bus.
        unsafe {
            if self.started {
                sys::rte_eth_dev_stop(self.port);
            }
            sys::rte_eth_dev_close(self.port);
            if self.vdev {
                if let Ok(n) = CString::new(self.info.name.as_str()) {
                    sys::rte_eal_hotplug_remove(c"vdev".as_ptr(), n.as_ptr());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_addresses_are_told_from_vdevs() {
        assert!(is_pci("0000:3b:02.1"));
        assert!(is_pci("3b:02.1"));
        assert!(is_pci("0000:af:00.0,representor=[0-3]"));
        assert!(!is_pci("net_pcap0,rx_pcap=a.pcap"));
        assert!(!is_pci("net_vhost0,iface=/run/x.sock"));
        assert!(!is_pci("0000:3b:02.8"));
        assert_eq!(ethdev_name("net_null0,no-rx=1"), "net_null0");
    }
}
