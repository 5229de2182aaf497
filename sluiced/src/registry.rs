//! What the control side shares with the workers: each AF_XDP port's
//! socket map (to register new sockets in), the tables generation each
//! worker has brought its ports up to, the ports a worker failed to open,
//! flow dumps on request, each worker's latest port statistics from the
//! kernel and its frame accounting. Workers touch it only in housekeeping,
//! never per packet, and never block on it (`try_lock`).
//!
//! It also holds the workers' UMEM geometry, so the control side can check
//! before a port is added that every worker has frames for it
//! ([`PortRegistry::check_frames`]).
//!
//! And the packet capture in force ([`crate::capture::Captures`]): the
//! one exception to "housekeeping only", a relaxed load per worker turn and
//! a `try_lock` when it changed.

use crate::config::{PortConfig, PortKind};
use crate::tables::PortId;
use sluice_ports::afxdp::{self, UmemConfig, XskMap, FRAME_HEADROOM};
use sluice_ports::{PoolFrames, PortStats};
use std::sync::atomic::Ordering;
use std::time::Instant;

/// What the control side shares with workers about AF_XDP ports: each
/// port's socket map (to register new sockets in), the generation each
/// worker has brought its sockets up to, and the ports a worker failed to open.
#[derive(Debug)]
pub struct PortRegistry {
    pub(crate) maps: std::sync::Mutex<std::collections::HashMap<String, XskMap>>,
    /// DPDK: each started device's port id, by switch port name.
    pub(crate) devices: std::sync::Mutex<std::collections::HashMap<String, u16>>,
    pub(crate) acks: Vec<std::sync::atomic::AtomicU32>,
    pub(crate) failures: std::sync::Mutex<Vec<(String, String)>>,
    pub(crate) flow_request: std::sync::atomic::AtomicU32,
    pub(crate) flow_dumps: std::sync::Mutex<Vec<FlowDump>>,
    /// Each worker's latest kernel counters per port, from housekeeping.
    pub(crate) port_stats: Vec<std::sync::Mutex<Vec<(PortId, PortStats)>>>,
    /// Each worker's latest frame accounting, from housekeeping.
    pub(crate) frames: Vec<std::sync::Mutex<WorkerFrames>>,
    /// Every worker's UMEM geometry.
    pub(crate) umem: UmemConfig,
    /// Per worker, the end the control side writes a byte to so a sleeping
    /// worker takes up new tables at once instead of at its next timeout.
    wake: Vec<std::os::unix::net::UnixStream>,
    /// Per worker, the end its wait set watches, until the worker takes it.
    woken: std::sync::Mutex<Vec<Option<std::os::unix::net::UnixStream>>>,
    /// The packet capture in force, if any.
    pub captures: std::sync::Arc<crate::capture::Captures>,
    /// Set while an upgrade hands the workers' ports over: each worker
    /// stops between two turns, leaves what it hands over in `parked` and
    /// waits until the flag clears (the handover failed) or the process ends.
    pub(crate) park: std::sync::atomic::AtomicBool,
    /// Per worker: what it handed over once parked.
    pub(crate) parked: std::sync::Mutex<Vec<Option<Result<sluice_ports::WorkerHandover, String>>>>,
    /// Upgrades a new sluiced began that did not happen (this process
    /// carried on).
    pub handovers_abandoned: std::sync::atomic::AtomicU64,
    /// Whether this process started by taking another one's ports over.
    pub took_over: std::sync::atomic::AtomicBool,
}

/// One worker's frame accounting, as its last housekeeping round saw it.
///
/// Suggested metrics: `sluice_pool_free_frames{worker}` (`pool.free`),
/// `sluice_pool_frames{worker}` (`pool.total`),
/// `sluice_pool_retired_frames{worker}` (`pool.retired`) and
/// `sluice_port_frames_held{port,queue}` (`ports`, the queue being the
/// worker's index).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WorkerFrames {
    /// The worker's pool.
    pub pool: PoolFrames,
    /// Frames each open port holds (fill, RX, TX rings and in flight).
    pub ports: Vec<(PortId, u32)>,
}

/// Frames a worker keeps out of the fill rings for bursts, TX rings and
/// frames in flight, when counting how many pods it has frames for.
pub const RESERVE_FRAMES: u32 = 2048;

/// Bytes of L2 header a frame carries on top of the MTU.
const L2_HEADER: u32 = 14;

/// Why a configuration does not fit the workers' frames.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameBudgetError {
    /// More pods than a worker's UMEM has fill-ring frames for.
    #[error(
        "worker 0 has frames for {capacity} pods; {attached} would be attached \
         ({frames} UMEM frames: {uplink} for the uplink's fill ring, {reserve} for bursts, \
         TX rings and frames in flight, {per_pod} per pod's fill ring; every worker has the same)"
    )]
    TooManyPods {
        /// Pods a worker has frames for.
        capacity: usize,
        /// Pods that would be attached (at start: configured).
        attached: usize,
        /// UMEM frames per worker.
        frames: u32,
        /// Frames the uplinks' fill rings take.
        uplink: u32,
        /// Frames kept for bursts and TX.
        reserve: u32,
        /// A pod's fill target.
        per_pod: u32,
    },
    /// A port's MTU does not fit in a frame.
    #[error(
        "port `{port}`: mtu {mtu} needs {needed}-byte frames; a {frame_size}-byte UMEM frame \
         holds {room} bytes after its {headroom}-byte headroom (mtu at most {max_mtu})"
    )]
    MtuTooLarge {
        /// The port.
        port: String,
        /// Its MTU.
        mtu: u16,
        /// MTU plus L2 header.
        needed: u32,
        /// Bytes a frame holds.
        room: u32,
        /// UMEM frame size.
        frame_size: u32,
        /// Headroom.
        headroom: u32,
        /// The largest MTU that fits.
        max_mtu: u32,
    },
}

/// Checks that every worker, with UMEMs of `umem`, has frames for `cfg`:
/// each port's MTU fits a frame after its headroom, and the pods attached
/// fit beside the uplinks' fill rings and the in-flight reserve.
pub fn check_frames<'a>(
    ports: impl IntoIterator<Item = &'a PortConfig> + Clone,
    umem: &UmemConfig,
) -> Result<(), FrameBudgetError> {
    let room = afxdp::max_frame_len(umem);
    for p in ports.clone().into_iter().filter(|p| !p.removed) {
        let needed = u32::from(p.mtu) + L2_HEADER;
        if needed > room {
            return Err(FrameBudgetError::MtuTooLarge {
                port: p.name.clone(),
                mtu: p.mtu,
                needed,
                room,
                frame_size: umem.frame_size,
                headroom: FRAME_HEADROOM,
                max_mtu: room - L2_HEADER,
            });
        }
    }
    let live = |k: PortKind| {
        ports
            .clone()
            .into_iter()
            .filter(|p| !p.removed && p.kind == k)
            .count()
    };
    let (pods, uplinks) = (live(PortKind::Pod), live(PortKind::Uplink));
    let capacity = afxdp::pod_capacity(umem, uplinks, RESERVE_FRAMES);
    if pods > capacity {
        return Err(FrameBudgetError::TooManyPods {
            capacity,
            attached: pods,
            frames: umem.frames,
            uplink: afxdp::XskConfig::default().fill_target * uplinks as u32,
            reserve: RESERVE_FRAMES,
            per_pod: afxdp::XskConfig::pod().fill_target,
        });
    }
    Ok(())
}

/// One worker's answer to a flow request: (worker, request, (key, adjacency)).
pub(crate) type FlowDump = (usize, u32, Vec<(crate::fib::flow_cache::FlowKey, u32)>);

/// Flows each worker reports at most.
pub const FLOW_DUMP_LIMIT: usize = 4096;

impl PortRegistry {
    pub(crate) fn new(workers: usize, umem: UmemConfig) -> Self {
        // A pair per worker, both ends non-blocking: the writer never waits
        // on a worker, the worker drains without blocking.
        let (wake, woken): (Vec<_>, Vec<_>) = (0..workers)
            .filter_map(|_| std::os::unix::net::UnixStream::pair().ok())
            .map(|(tx, rx)| {
                let _ = tx.set_nonblocking(true);
                let _ = rx.set_nonblocking(true);
                (tx, Some(rx))
            })
            .unzip();
        PortRegistry {
            maps: Default::default(),
            devices: Default::default(),
            acks: (0..workers)
                .map(|_| std::sync::atomic::AtomicU32::new(0))
                .collect(),
            failures: Default::default(),
            flow_request: Default::default(),
            flow_dumps: Default::default(),
            port_stats: (0..workers).map(|_| Default::default()).collect(),
            frames: (0..workers).map(|_| Default::default()).collect(),
            umem,
            wake,
            woken: std::sync::Mutex::new(woken),
            captures: Default::default(),
            park: Default::default(),
            parked: std::sync::Mutex::new((0..workers).map(|_| None).collect()),
            handovers_abandoned: Default::default(),
            took_over: Default::default(),
        }
    }

    /// Worker `w`'s end of its wake-up channel (once; `None` after).
    pub(crate) fn take_waker(&self, w: usize) -> Option<std::os::unix::net::UnixStream> {
        self.woken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(w)
            .and_then(Option::take)
    }

    /// Wakes every sleeping worker (a full channel already will).
    pub(crate) fn wake_workers(&self) {
        use std::io::Write;
        for mut s in &self.wake {
            let _ = s.write(&[1]);
        }
    }

    /// Each worker's frame accounting (index: worker), as its last
    /// housekeeping round published it.
    pub fn frames(&self) -> Vec<WorkerFrames> {
        self.frames
            .iter()
            .map(|f| f.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .collect()
    }

    /// Whether every worker has frames for `cfg` (see [`check_frames`]);
    /// the control side asks before it adds ports.
    pub fn check_frames<'a>(
        &self,
        ports: impl IntoIterator<Item = &'a PortConfig> + Clone,
    ) -> Result<(), FrameBudgetError> {
        check_frames(ports, &self.umem)
    }

    /// How many workers there are (one queue each on every port).
    pub fn workers(&self) -> usize {
        self.acks.len()
    }

    /// The workers' UMEM geometry.
    pub fn umem(&self) -> UmemConfig {
        self.umem
    }

    /// Asks every worker for its live flows (current tables generation) and
    /// waits for them: (worker, flow key, adjacency index).
    pub fn dump_flows(
        &self,
        timeout: std::time::Duration,
    ) -> Result<Vec<(usize, crate::fib::flow_cache::FlowKey, u32)>, String> {
        let req = self.flow_request.fetch_add(1, Ordering::AcqRel) + 1;
        self.wake_workers();
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
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }

    pub(crate) fn map_of(&self, name: &str) -> Option<XskMap> {
        self.maps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .copied()
    }

    /// The DPDK port id of a started device.
    pub(crate) fn device_of(&self, name: &str) -> Option<u16> {
        self.devices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .copied()
    }

    /// Whether the control side attached `name` (a socket map or a device).
    pub(crate) fn is_attached(&self, name: &str) -> bool {
        self.map_of(name).is_some() || self.device_of(name).is_some()
    }

    /// Registers a started DPDK device before tables naming it are published.
    pub fn add_device(&self, name: &str, port: u16) {
        self.devices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), port);
    }

    /// DPDK counters per port, summed over workers (queues).
    pub fn dpdk_stats(&self) -> std::collections::BTreeMap<PortId, sluice_ports::dpdk::DpdkStats> {
        let mut out = std::collections::BTreeMap::new();
        for w in &self.port_stats {
            for (id, s) in w.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                if let Some(x) = s.dpdk {
                    let e: &mut sluice_ports::dpdk::DpdkStats = out.entry(*id).or_default();
                    e.rx_segmented += x.rx_segmented;
                    e.rx_linearized += x.rx_linearized;
                    e.imissed += x.imissed;
                    e.ierrors += x.ierrors;
                    e.oerrors += x.oerrors;
                    e.rx_nombuf += x.rx_nombuf;
                }
            }
        }
        out
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
                    e.bad_descs += x.bad_descs;
                    e.frames_held += x.frames_held;
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

    /// Forgets a port's socket map or device.
    pub fn remove(&self, name: &str) {
        self.maps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        self.devices
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
        // A worker at a later generation has taken this one up too (tables
        // are cumulative): another change may be published meanwhile.
        let behind = |a: &std::sync::atomic::AtomicU32| {
            (a.load(Ordering::Acquire).wrapping_sub(generation) as i32) < 0
        };
        while self.acks.iter().any(behind) {
            if Instant::now() > deadline {
                return Err(format!(
                    "workers did not take up tables generation {generation} in {timeout:?}"
                ));
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        Ok(std::mem::take(
            &mut *self.failures.lock().unwrap_or_else(|p| p.into_inner()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NodeConfig;
    use crate::craft;

    fn node() -> NodeConfig {
        NodeConfig::from_toml_str(craft::REFERENCE_NODE).unwrap()
    }

    fn with_pods(n: usize) -> NodeConfig {
        let mut cfg = node();
        let pod = cfg
            .ports
            .iter()
            .find(|p| p.kind == PortKind::Pod)
            .unwrap()
            .clone();
        cfg.ports.retain(|p| p.kind != PortKind::Pod);
        for i in 0..n {
            let mut p = pod.clone();
            p.name = format!("pod{i}");
            cfg.ports.push(p);
        }
        cfg
    }

    /// The pods a worker holds follow from the UMEM: 16384 frames less the
    /// uplink's 1024 and 2048 in flight, 128 per pod.
    /// Finding: a port change waited for the workers to be at exactly its
    /// generation, so a change published meanwhile (a learned neighbour, a
    /// route) made ports.add time out although every worker had taken it up.
    #[test]
    fn workers_past_the_generation_have_taken_it_up() {
        let r = PortRegistry::new(2, UmemConfig::default());
        r.acks[0].store(7, Ordering::Release);
        r.acks[1].store(9, Ordering::Release);
        assert!(r.wait_for(7, std::time::Duration::from_millis(1)).is_ok());
        assert!(r.wait_for(8, std::time::Duration::from_millis(1)).is_err());
        r.acks[0].store(0, Ordering::Release);
        r.acks[1].store(1, Ordering::Release);
        assert!(
            r.wait_for(u32::MAX, std::time::Duration::from_millis(1))
                .is_ok(),
            "across the wrap"
        );
    }

    #[test]
    fn a_worker_has_frames_for_a_known_number_of_pods_and_says_so() {
        let umem = UmemConfig::default();
        assert_eq!(afxdp::pod_capacity(&umem, 1, RESERVE_FRAMES), 104);
        assert_eq!(check_frames(&with_pods(104).ports, &umem), Ok(()));
        let err = check_frames(&with_pods(105).ports, &umem)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("worker 0 has frames for 104 pods; 105 would be attached"),
            "{err}"
        );
        assert!(err.contains("16384 UMEM frames"), "{err}");
        // Removed pods hold no frames.
        let mut cfg = with_pods(105);
        cfg.ports.last_mut().unwrap().removed = true;
        assert_eq!(check_frames(&cfg.ports, &umem), Ok(()));
    }

    /// An MTU a frame cannot hold after its headroom is refused, naming
    /// the port and the numbers.
    #[test]
    fn an_mtu_too_large_for_a_frame_is_refused_by_port() {
        let umem = UmemConfig::default();
        let mut cfg = node();
        let name = cfg.ports[0].name.clone();
        cfg.ports[0].mtu = 3826;
        assert_eq!(check_frames(&cfg.ports, &umem), Ok(()));
        cfg.ports[0].mtu = 9000;
        let err = check_frames(&cfg.ports, &umem).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "port `{name}`: mtu 9000 needs 9014-byte frames; a 4096-byte UMEM frame \
                 holds 3840 bytes after its 256-byte headroom (mtu at most 3826)"
            )
        );
    }

    /// `ports.add` asks before it attaches anything: a worker with frames
    /// for the 2 pods it has refuses a third, saying why.
    #[test]
    fn ports_add_is_refused_when_a_worker_has_no_frames_for_the_pod() {
        let cfg = node();
        let handle = std::sync::Arc::new(crate::tables::TablesHandle::new(
            crate::tables::Tables::from_config(&cfg).unwrap(),
        ));
        let umem = UmemConfig {
            frames: 1024 + RESERVE_FRAMES + 2 * 128,
            ..UmemConfig::default()
        };
        let registry = std::sync::Arc::new(PortRegistry::new(1, umem));
        let mut c = crate::api::Control::new(
            cfg,
            handle.clone(),
            vec![std::sync::Arc::new(crate::counters::WorkerCounters::new())],
        );
        c.manage_ports(Vec::new(), crate::attach::Attacher::AfXdp, registry);
        let g = handle.load().generation;
        let req: crate::api::Request = serde_json::from_str(
            r#"{"version":1,"op":"ports.add","args":{"ports":[{"name":"nosuch9","kind":"pod","mac":"02:00:00:00:01:09","ip":"10.5.1.9"}]}}"#,
        )
        .unwrap();
        let err = c.handle(&req).unwrap_err().to_string();
        assert!(
            err.contains("worker 0 has frames for 2 pods; 3 would be attached"),
            "{err}"
        );
        assert_eq!(handle.load().generation, g, "nothing published");
    }
}
