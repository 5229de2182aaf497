//! Underlay neighbours learned from the kernel.
//!
//! The kernel keeps owning the uplink's address and ARP; sluiced reads the
//! MACs it needs (remote nodes on the uplink's segment, and the underlay
//! gateway for the others) from the kernel's neighbour table, every
//! [`INTERVAL`]. When the kernel has no entry for a next hop, sluiced sends
//! it one empty UDP datagram (the discard port, 9) so the kernel resolves it
//! as it would for any traffic of its own. Neighbours written in the
//! configuration or set through the API are never overridden.
//!
//! The table is read with `ip -json neigh show` (iproute2), a control-path
//! cost of one process every interval.

use super::api::Control;
use crate::config::{PortKind, Via};
use crate::wire::MacAddr;
use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the kernel's table is read.
pub const INTERVAL: Duration = Duration::from_millis(500);

/// The next hops the configuration needs MACs for: on-link route nodes and
/// the uplink gateway, with the uplink's name.
pub fn wanted(control: &Control) -> Option<(String, Vec<Ipv4Addr>)> {
    let cfg = control.config();
    let up = cfg
        .ports
        .iter()
        .find(|p| p.kind == PortKind::Uplink && !p.removed)?;
    let net = up.address?.network();
    let mut ips: Vec<Ipv4Addr> = cfg
        .routes
        .iter()
        .filter(|r| matches!(r.via, Via::Vxlan | Via::Ipip | Via::HostGw))
        .filter_map(|r| r.node)
        .filter(|n| net.contains(*n))
        .collect();
    if let Some(g) = up.gateway {
        ips.push(g);
    }
    ips.sort();
    ips.dedup();
    Some((up.name.clone(), ips))
}

/// The kernel's usable entries on `dev`.
pub fn kernel_table(dev: &str) -> HashMap<Ipv4Addr, MacAddr> {
    let Ok(out) = std::process::Command::new("ip")
        .args(["-json", "-4", "neigh", "show", "dev", dev])
        .output()
    else {
        return HashMap::new();
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
        return HashMap::new();
    };
    let mut map = HashMap::new();
    for e in v.as_array().into_iter().flatten() {
        let states: Vec<&str> = e["state"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str())
            .collect();
        if states.iter().any(|s| matches!(*s, "FAILED" | "INCOMPLETE")) {
            continue;
        }
        let (Some(ip), Some(mac)) = (
            e["dst"].as_str().and_then(|s| s.parse().ok()),
            e["lladdr"].as_str().and_then(|s| s.parse().ok()),
        ) else {
            continue;
        };
        map.insert(ip, mac);
    }
    map
}

/// Runs until `stop`: keeps the learned neighbours in step with the kernel.
pub fn run(control: Arc<Mutex<Control>>, stop: Arc<AtomicBool>) {
    let probe = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok();
    let mut last_probe: HashMap<Ipv4Addr, Instant> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let want = control.lock().map(|c| wanted(&c)).unwrap_or(None);
        if let Some((dev, ips)) = want {
            let kernel = kernel_table(&dev);
            let mut learned = BTreeMap::new();
            for ip in ips {
                match kernel.get(&ip) {
                    Some(mac) => {
                        learned.insert(ip, *mac);
                    }
                    None => {
                        let due = last_probe
                            .get(&ip)
                            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
                        if let (true, Some(sock)) = (due, &probe) {
                            let _ = sock.send_to(&[], (ip, 9));
                            last_probe.insert(ip, Instant::now());
                        }
                    }
                }
            }
            if let Ok(mut c) = control.lock() {
                let _ = c.learn_neighbours(&learned);
            }
        }
        let deadline = Instant::now() + INTERVAL;
        while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
