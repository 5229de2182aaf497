//! What the control side shares with the workers: each AF_XDP port's
//! socket map (to register new sockets in), the tables generation each
//! worker has brought its ports up to, the ports a worker failed to open,
//! flow dumps on request, and each worker's latest port statistics from the
//! kernel. Workers touch it only in housekeeping, never per packet, and
//! never block on it (`try_lock`).

use crate::tables::PortId;
use sluice_ports::afxdp::XskMap;
use sluice_ports::PortStats;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// What the control side shares with workers about AF_XDP ports: each
/// port's socket map (to register new sockets in), the generation each
/// worker has brought its sockets up to, and the ports a worker failed to open.
#[derive(Debug)]
pub struct PortRegistry {
    pub(crate) maps: std::sync::Mutex<std::collections::HashMap<String, XskMap>>,
    pub(crate) acks: Vec<std::sync::atomic::AtomicU32>,
    pub(crate) failures: std::sync::Mutex<Vec<(String, String)>>,
    pub(crate) flow_request: std::sync::atomic::AtomicU32,
    pub(crate) flow_dumps: std::sync::Mutex<Vec<FlowDump>>,
    /// Each worker's latest kernel counters per port, from housekeeping.
    pub(crate) port_stats: Vec<std::sync::Mutex<Vec<(PortId, PortStats)>>>,
}

/// One worker's answer to a flow request: (worker, request, (key, adjacency)).
pub(crate) type FlowDump = (usize, u32, Vec<(crate::fib::flow_cache::FlowKey, u32)>);

/// Flows each worker reports at most.
pub const FLOW_DUMP_LIMIT: usize = 4096;

impl PortRegistry {
    pub(crate) fn new(workers: usize) -> Self {
        PortRegistry {
            maps: Default::default(),
            acks: (0..workers)
                .map(|_| std::sync::atomic::AtomicU32::new(0))
                .collect(),
            failures: Default::default(),
            flow_request: Default::default(),
            flow_dumps: Default::default(),
            port_stats: (0..workers).map(|_| Default::default()).collect(),
        }
    }

    /// Asks every worker for its live flows (current tables generation) and
    /// waits for them: (worker, flow key, adjacency index).
    pub fn dump_flows(
        &self,
        timeout: std::time::Duration,
    ) -> Result<Vec<(usize, crate::fib::flow_cache::FlowKey, u32)>, String> {
        let req = self.flow_request.fetch_add(1, Ordering::AcqRel) + 1;
        let deadline = Instant::now() + timeout;
        loop {
            {
                let mut d = self.flow_dumps.lock().unwrap_or_else(|p| p.into_inner());
                d.retain(|(_, r, _)| *r == req);
                if d.len() >= self.acks.len() {
                    return Ok(d
                        .drain(..)
                        .flat_map(|(w, _, flows)| flows.into_iter().map(move |(k, a)| (w, k, a)))
                        .collect());
                }
            }
            if Instant::now() > deadline {
                return Err(format!("workers did not report their flows in {timeout:?}"));
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    pub(crate) fn map_of(&self, name: &str) -> Option<XskMap> {
        self.maps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .copied()
    }

    /// The kernel's counters per port, summed over workers (queues).
    pub fn port_stats(&self) -> std::collections::BTreeMap<PortId, sluice_ports::afxdp::XskStats> {
        let mut out = std::collections::BTreeMap::new();
        for w in &self.port_stats {
            for (id, s) in w.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                if let Some(x) = s.xsk {
                    let e: &mut sluice_ports::afxdp::XskStats = out.entry(*id).or_default();
                    e.rx_dropped += x.rx_dropped;
                    e.rx_invalid_descs += x.rx_invalid_descs;
                    e.tx_invalid_descs += x.tx_invalid_descs;
                    e.rx_ring_full += x.rx_ring_full;
                    e.rx_fill_ring_empty_descs += x.rx_fill_ring_empty_descs;
                    e.tx_ring_empty_descs += x.tx_ring_empty_descs;
                }
            }
        }
        out
    }

    /// Registers a port's socket map before tables naming it are published.
    pub fn add(&self, name: &str, map: XskMap) {
        self.maps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), map);
    }

    /// Forgets a port's socket map.
    pub fn remove(&self, name: &str) {
        self.maps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    /// Waits until every worker has brought its sockets up to `generation`;
    /// returns the ports that failed to open, or an error on timeout.
    pub fn wait_for(
        &self,
        generation: u32,
        timeout: std::time::Duration,
    ) -> Result<Vec<(String, String)>, String> {
        let deadline = Instant::now() + timeout;
        while self
            .acks
            .iter()
            .any(|a| a.load(Ordering::Acquire) != generation)
        {
            if Instant::now() > deadline {
                return Err(format!(
                    "workers did not take up tables generation {generation} in {timeout:?}"
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        Ok(std::mem::take(
            &mut *self.failures.lock().unwrap_or_else(|p| p.into_inner()),
        ))
    }
}
