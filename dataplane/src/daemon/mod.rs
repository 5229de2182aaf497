//! `sluiced`: the switch as a running process.
//!
//! Start-up is all or nothing: the configuration is validated and the
//! tables built, the XDP program is attached to every AF_XDP port (a stale
//! copy left by a crash is replaced), and every worker opens its sockets;
//! any failure undoes what was done (programs detached, sockets closed)
//! and is reported with the port at fault.
//!
//! Worker `w` owns queue `w` of every port (a pod veth gets as many queues
//! as there are workers), a UMEM shared by its sockets, a pipeline and its
//! counters. It polls its ports in turn; in `adaptive` mode it sleeps on the
//! sockets after a stretch of empty polls, in `interrupt` mode as soon as
//! they are empty, and never in `poll` mode.
//!
//! Shutdown (the `stop` flag, set by SIGTERM or SIGINT) stops the workers,
//! closes the sockets and detaches the programs.

pub mod api;
pub mod metrics;
pub mod neigh;

use crate::buffer::Burst;
use crate::config::{NodeConfig, PortKind, RxMode};
use crate::counters::WorkerCounters;
use crate::pipeline::{Pipeline, PipelineConfig};
use crate::port::afxdp::{
    self, Steering, Umem, UmemConfig, UmemPool, XdpBuf, XdpProgram, XskConfig, XskMap, XskPort,
};
use crate::port::tap::TapPort;
use crate::port::{poll_port, Port};
use crate::tables::{PortId, Tables, TablesError, TablesHandle};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Instant;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The configuration or tables.
    #[error(transparent)]
    Tables(#[from] TablesError),
    /// A port could not be set up.
    #[error("port `{port}`: {source}")]
    Port {
        /// The port's name.
        port: String,
        /// What went wrong.
        source: afxdp::XdpError,
    },
    /// The host port could not be set up.
    #[error("host port `{port}`: {message}")]
    Host {
        /// The port's name.
        port: String,
        /// What failed.
        message: String,
    },
    /// Another sluiced serves this port.
    #[error("port `{port}` is busy: another sluiced ({holder}) serves it")]
    Busy {
        /// The port's name.
        port: String,
        /// Who holds it.
        holder: String,
    },
    /// The API socket could not be bound.
    #[error("daemon.api_socket {path}: {source}")]
    Api {
        /// The socket path.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The metrics address could not be bound.
    #[error("daemon.metrics_address {addr}: {source}")]
    Metrics {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A worker could not start.
    #[error("worker {worker}: {message}")]
    Worker {
        /// Which.
        worker: usize,
        /// Why.
        message: String,
    },
}

/// One port of a worker.
#[derive(Debug)]
enum WorkerPort {
    Xsk(XskPort),
    Tap(TapPort),
    /// Removed, or not opened (yet).
    Closed,
}

impl Port<UmemPool> for WorkerPort {
    fn rx_burst(&mut self, pool: &mut UmemPool, burst: &mut Burst<XdpBuf>) -> usize {
        match self {
            WorkerPort::Xsk(p) => p.rx_burst(pool, burst),
            WorkerPort::Tap(p) => p.rx_burst(pool, burst),
            WorkerPort::Closed => 0,
        }
    }
    fn tx_burst(&mut self, pool: &mut UmemPool, bufs: &mut Vec<XdpBuf>) -> usize {
        match self {
            WorkerPort::Xsk(p) => p.tx_burst(pool, bufs),
            WorkerPort::Tap(p) => p.tx_burst(pool, bufs),
            WorkerPort::Closed => 0,
        }
    }
}

/// What the control side shares with workers about AF_XDP ports: each
/// port's socket map (to register new sockets in), the generation each
/// worker has brought its sockets up to, and the ports a worker failed to open.
#[derive(Debug)]
pub struct PortRegistry {
    maps: std::sync::Mutex<std::collections::HashMap<String, XskMap>>,
    acks: Vec<std::sync::atomic::AtomicU32>,
    failures: std::sync::Mutex<Vec<(String, String)>>,
    flow_request: std::sync::atomic::AtomicU32,
    flow_dumps: std::sync::Mutex<Vec<FlowDump>>,
}

/// One worker's answer to a flow request: (worker, request, (key, adjacency)).
type FlowDump = (usize, u32, Vec<(crate::fib::flow_cache::FlowKey, u32)>);

/// Flows each worker reports at most.
pub const FLOW_DUMP_LIMIT: usize = 4096;

impl PortRegistry {
    fn new(workers: usize) -> Self {
        PortRegistry {
            maps: Default::default(),
            acks: (0..workers)
                .map(|_| std::sync::atomic::AtomicU32::new(0))
                .collect(),
            failures: Default::default(),
            flow_request: Default::default(),
            flow_dumps: Default::default(),
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

    fn map_of(&self, name: &str) -> Option<XskMap> {
        self.maps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .copied()
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

/// What start-up set up on a port, for the start-up report and the API.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PortReport {
    /// Port name.
    pub name: String,
    /// `native` or `generic` XDP, or `none`.
    pub xdp: &'static str,
    /// `zero-copy` or `copy` (worker 0's socket), or `none`.
    pub mode: &'static str,
}

/// A running switch.
#[derive(Debug)]
pub struct Daemon {
    tables: Arc<TablesHandle>,
    counters: Vec<Arc<WorkerCounters>>,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    /// What was set up.
    pub report: Vec<PortReport>,
    /// Whether UMEMs are on hugepages.
    pub hugepages: bool,
    /// NUMA placement of the workers against the uplink, when known.
    pub numa: Option<String>,
    control: Arc<std::sync::Mutex<api::Control>>,
    _locks: Vec<PortLock>,
}

/// An advisory lock on one interface of this network namespace, held for the
/// daemon's life (`/run/sluice/locks/<netns>-<ifname>.lock`, holding our PID).
#[derive(Debug)]
struct PortLock {
    _file: std::fs::File,
}

impl PortLock {
    fn claim(ifname: &str) -> Result<PortLock, String> {
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
}

#[derive(Debug, Clone)]
struct PortPlan {
    ifname: String,
    map: Option<XskMap>,
    pod: bool,
}

impl Daemon {
    /// Starts the switch for `cfg`; `stop` ends it.
    pub fn start(cfg: &NodeConfig, stop: Arc<AtomicBool>) -> Result<Daemon, DaemonError> {
        Self::start_with_file(cfg, None, stop)
    }

    /// As [`Daemon::start`], remembering the file `reload` re-reads.
    pub fn start_with_file(
        cfg: &NodeConfig,
        config_path: Option<std::path::PathBuf>,
        stop: Arc<AtomicBool>,
    ) -> Result<Daemon, DaemonError> {
        let tables = Tables::from_config(cfg)?;
        let metrics_listener =
            metrics::bind(cfg.daemon.metrics_address).map_err(|source| DaemonError::Metrics {
                addr: cfg.daemon.metrics_address,
                source,
            })?;
        let api_path = cfg.daemon.api_socket.clone();
        let api_listener = api::bind(&api_path).map_err(|source| DaemonError::Api {
            path: api_path.clone(),
            source,
        })?;
        // Until the API thread owns it, a failed start removes the socket file.
        struct RemoveOnError<'a>(&'a std::path::Path, bool);
        impl Drop for RemoveOnError<'_> {
            fn drop(&mut self) {
                if self.1 {
                    let _ = std::fs::remove_file(self.0);
                }
            }
        }
        let mut api_guard = RemoveOnError(&api_path, true);
        let control_handle;
        // Every interface must exist before anything is attached.
        for p in &cfg.ports {
            if p.kind != PortKind::Host {
                afxdp::ifindex(&p.name).map_err(|source| DaemonError::Port {
                    port: p.name.clone(),
                    source,
                })?;
            }
        }
        // Claim every interface before touching any: a second sluiced on the
        // same interfaces is refused here, before it could replace the first
        // one's XDP programs. The kernel drops the locks if we crash.
        let mut locks = Vec::new();
        for p in &cfg.ports {
            locks.push(
                PortLock::claim(&p.name).map_err(|holder| DaemonError::Busy {
                    port: p.name.clone(),
                    holder,
                })?,
            );
        }
        let n_workers = cfg.daemon.workers.len().max(1);
        let registry = Arc::new(PortRegistry::new(n_workers));
        let mut programs = Vec::new();
        let mut plans = Vec::new();
        let uplink_ip = cfg
            .ports
            .iter()
            .find(|p| p.kind == PortKind::Uplink)
            .and_then(|p| p.address)
            .map(|a| a.ip);
        for p in &cfg.ports {
            let steering = match p.kind {
                PortKind::Host => {
                    plans.push(PortPlan {
                        ifname: p.name.clone(),
                        map: None,
                        pod: false,
                    });
                    continue;
                }
                PortKind::Pod => Steering::RedirectAll,
                PortKind::Uplink => Steering::Filter {
                    node_ip: uplink_ip.expect("validated: an uplink has an address"),
                    pod_net: cfg.node.pod_network.addr(),
                    pod_len: cfg.node.pod_network.len(),
                    vxlan_port: cfg.tunnel.vxlan_port,
                },
            };
            let prog =
                XdpProgram::attach(&p.name, steering).map_err(|source| DaemonError::Port {
                    port: p.name.clone(),
                    source,
                })?;
            plans.push(PortPlan {
                ifname: p.name.clone(),
                map: Some(prog.xsk_map()),
                pod: p.kind == PortKind::Pod,
            });
            registry.add(&p.name, prog.xsk_map());
            programs.push(prog);
        }

        let handle = Arc::new(TablesHandle::new(tables));
        let cores: Vec<Option<usize>> = if cfg.daemon.workers.is_empty() {
            vec![None]
        } else {
            cfg.daemon.workers.iter().map(|&c| Some(c)).collect()
        };
        let modes: Vec<RxMode> = cfg
            .ports
            .iter()
            .map(|p| p.rx_mode.unwrap_or(cfg.daemon.rx_mode))
            .collect();
        let burst = cfg.daemon.burst as usize;
        let mut counters = Vec::new();
        let mut workers = Vec::new();
        let mut report = Vec::new();
        let mut hugepages = true;
        for (w, core) in cores.into_iter().enumerate() {
            let c = Arc::new(WorkerCounters::new());
            counters.push(c.clone());
            let (ready_tx, ready_rx) = mpsc::channel();
            let (plans, modes, handle, wstop) =
                (plans.clone(), modes.clone(), handle.clone(), stop.clone());
            let wreg = registry.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("sluice-w{w}"))
                .spawn(move || {
                    worker_main(
                        w, core, plans, modes, burst, handle, c, wreg, wstop, ready_tx,
                    )
                });
            let join = match spawned {
                Ok(j) => j,
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    return Err(DaemonError::Worker {
                        worker: w,
                        message: e.to_string(),
                    });
                }
            };
            workers.push(join);
            match ready_rx.recv() {
                Ok(Ok((r, huge))) => {
                    if w == 0 {
                        report = r;
                    }
                    hugepages &= huge;
                }
                Ok(Err(e)) => {
                    stop.store(true, Ordering::Relaxed);
                    for j in workers {
                        let _ = j.join();
                    }
                    return Err(e);
                }
                Err(_) => {
                    stop.store(true, Ordering::Relaxed);
                    for j in workers {
                        let _ = j.join();
                    }
                    return Err(DaemonError::Worker {
                        worker: w,
                        message: "exited during start-up".into(),
                    });
                }
            }
        }
        if let Some(host) = cfg.ports.iter().find(|p| p.kind == PortKind::Host) {
            if let Err(message) = configure_host_port(cfg, &host.name, host.mac) {
                stop.store(true, Ordering::Relaxed);
                for j in workers {
                    let _ = j.join();
                }
                return Err(DaemonError::Host {
                    port: host.name.clone(),
                    message,
                });
            }
        }
        for (r, prog) in report.iter_mut().zip(cfg.ports.iter()) {
            if let Some(p) = programs.iter().find(|p| p.ifname() == prog.name) {
                r.xdp = match p.mode() {
                    afxdp::AttachMode::Native => "native",
                    afxdp::AttachMode::Generic => "generic",
                };
            }
        }
        let _ = &programs;
        {
            let mut c = api::Control::new(cfg.clone(), handle.clone(), counters.clone());
            if let Some(p) = config_path {
                c.set_config_path(p);
            }
            c.manage_ports(std::mem::take(&mut programs), registry.clone());
            let control = Arc::new(std::sync::Mutex::new(c));
            control_handle = control.clone();
            let (ncontrol, nstop) = (control.clone(), stop.clone());
            match std::thread::Builder::new()
                .name("sluice-neigh".into())
                .spawn(move || neigh::run(ncontrol, nstop))
            {
                Ok(j) => workers.push(j),
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    return Err(DaemonError::Worker {
                        worker: usize::MAX,
                        message: format!("neighbour thread: {e}"),
                    });
                }
            }
            let (apath, astop) = (api_path.clone(), stop.clone());
            match std::thread::Builder::new()
                .name("sluice-api".into())
                .spawn(move || api::serve(api_listener, apath, control, astop))
            {
                Ok(j) => {
                    workers.push(j);
                    api_guard.1 = false;
                }
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    return Err(DaemonError::Worker {
                        worker: usize::MAX,
                        message: format!("API thread: {e}"),
                    });
                }
            }
        }
        {
            let (mhandle, mcounters, mstop) = (handle.clone(), counters.clone(), stop.clone());
            let m = std::thread::Builder::new()
                .name("sluice-metrics".into())
                .spawn(move || metrics::serve(metrics_listener, mhandle, mcounters, mstop));
            match m {
                Ok(j) => workers.push(j),
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    return Err(DaemonError::Worker {
                        worker: usize::MAX,
                        message: format!("metrics thread: {e}"),
                    });
                }
            }
        }
        let control = control_handle;
        let numa = cfg
            .ports
            .iter()
            .find(|p| p.kind == PortKind::Uplink)
            .and_then(|u| numa_report(&u.name, &cfg.daemon.workers));
        Ok(Daemon {
            tables: handle,
            counters,
            stop,
            workers,
            report,
            hugepages,
            numa,
            control,
            _locks: locks,
        })
    }

    /// The published tables.
    pub fn tables(&self) -> &Arc<TablesHandle> {
        &self.tables
    }

    /// Re-reads the configuration file (SIGHUP).
    pub fn reload(&self) -> Result<serde_json::Value, api::ApiError> {
        self.control
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reload()
    }

    /// Each worker's counters.
    pub fn counters(&self) -> &[Arc<WorkerCounters>] {
        &self.counters
    }

    /// Stops the workers, closes the sockets and detaches the programs.
    pub fn shutdown(self) {
        // Drop does it: workers first (sockets close), then the programs.
        drop(self);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for j in self.workers.drain(..) {
            let _ = j.join();
        }
        // Sockets are closed; now the programs can go.
        self.control
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .release_ports();
    }
}

/// Brings a worker's sockets in line with the tables: opens sockets for pod
/// ports that appeared, closes those of removed ports. Ids never move, so
/// slot `i` is always port `i`.
fn reconcile(
    w: usize,
    tables: &Tables,
    ports: &mut Vec<WorkerPort>,
    umem: &mut Umem,
    pool: &mut UmemPool,
    registry: &PortRegistry,
) {
    while ports.len() < tables.ports.len() {
        ports.push(WorkerPort::Closed);
    }
    for (i, entry) in tables.ports.iter().enumerate() {
        let slot = &mut ports[i];
        match (&*slot, entry.removed) {
            (WorkerPort::Xsk(_), true) => *slot = WorkerPort::Closed,
            (WorkerPort::Closed, false)
                if matches!(entry.role, crate::tables::PortRole::Pod { .. }) =>
            {
                let Some(map) = registry.map_of(&entry.name) else {
                    continue;
                };
                match XskPort::open(umem, pool, map, &entry.name, w as u32, XskConfig::pod()) {
                    Ok(p) => *slot = WorkerPort::Xsk(p),
                    Err(e) => registry
                        .failures
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((entry.name.clone(), e.to_string())),
                }
            }
            _ => {}
        }
    }
}

/// Parses a sysfs CPU list such as `0-3,8,10-11`.
fn parse_cpulist(s: &str) -> Vec<usize> {
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

/// Gives the host TAP the kernel-side MAC, brings it up, puts the pods'
/// gateway address on it and routes the pod network through it.
fn configure_host_port(
    cfg: &NodeConfig,
    name: &str,
    mac: crate::wire::MacAddr,
) -> Result<(), String> {
    let gw = format!("{}/32", cfg.node.gateway());
    let net = cfg.node.pod_network.to_string();
    let mac = mac.to_string();
    let steps: [&[&str]; 3] = [
        &["link", "set", "dev", name, "address", &mac, "up"],
        &["addr", "replace", &gw, "dev", name],
        &[
            "route",
            "replace",
            &net,
            "dev",
            name,
            "src",
            &cfg.node.gateway().to_string(),
        ],
    ];
    for args in steps {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .map_err(|e| format!("cannot run ip: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "`ip {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(())
}

/// Empty polls in a row before an adaptive worker sleeps.
const ADAPTIVE_SPIN: u32 = 1024;
/// How long an idle worker sleeps on its sockets at most (it rechecks `stop`).
const IDLE_WAIT_MS: i32 = 20;

type Ready = mpsc::Sender<Result<(Vec<PortReport>, bool), DaemonError>>;

#[allow(clippy::too_many_arguments)]
fn worker_main(
    w: usize,
    core: Option<usize>,
    plans: Vec<PortPlan>,
    modes: Vec<RxMode>,
    burst_size: usize,
    handle: Arc<TablesHandle>,
    counters: Arc<WorkerCounters>,
    registry: Arc<PortRegistry>,
    stop: Arc<AtomicBool>,
    ready: Ready,
) {
    if let Some(c) = core {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: c }) {
            let _ = ready.send(Err(DaemonError::Worker {
                worker: w,
                message: format!("cannot pin to core {c}"),
            }));
            return;
        }
    }
    // Drop order matters: ports, then the pool's buffers, then the UMEM.
    let mut umem = match Umem::new(UmemConfig::default()) {
        Ok(u) => u,
        Err(source) => {
            let _ = ready.send(Err(DaemonError::Port {
                port: "(umem)".into(),
                source,
            }));
            return;
        }
    };
    let mut pool = umem.pool();
    let mut ports: Vec<WorkerPort> = Vec::with_capacity(plans.len());
    let mut report = Vec::new();
    for plan in &plans {
        match plan.map {
            None => match TapPort::open(&plan.ifname) {
                Ok(t) => {
                    ports.push(WorkerPort::Tap(t));
                    report.push(PortReport {
                        name: plan.ifname.clone(),
                        xdp: "none",
                        mode: "tap",
                    });
                }
                Err(e) => {
                    let _ = ready.send(Err(DaemonError::Host {
                        port: plan.ifname.clone(),
                        message: format!("cannot open the TAP: {e}"),
                    }));
                    return;
                }
            },
            Some(map) => match XskPort::open(
                &mut umem,
                &mut pool,
                map,
                &plan.ifname,
                w as u32,
                if plan.pod {
                    XskConfig::pod()
                } else {
                    XskConfig::default()
                },
            ) {
                Ok(p) => {
                    report.push(PortReport {
                        name: plan.ifname.clone(),
                        xdp: "native",
                        mode: if p.zero_copy() { "zero-copy" } else { "copy" },
                    });
                    ports.push(WorkerPort::Xsk(p));
                }
                Err(source) => {
                    let source = match source {
                        afxdp::XdpError::QueueBusy { ifname, .. } => afxdp::XdpError::QueueBusy {
                            ifname,
                            queue: w as u32,
                        },
                        other => other,
                    };
                    let _ = ready.send(Err(DaemonError::Port {
                        port: plan.ifname.clone(),
                        source,
                    }));
                    return;
                }
            },
        }
    }
    let mut cache = handle.cache();
    let mut generation = cache.load().generation;
    registry.acks[w].store(generation, Ordering::Release);
    let _ = ready.send(Ok((report, umem.hugepages())));

    let fds_of = |ports: &[WorkerPort]| -> Vec<i32> {
        ports
            .iter()
            .filter_map(|p| match p {
                WorkerPort::Xsk(x) => Some(x.fd()),
                WorkerPort::Tap(t) => Some(t.fd()),
                WorkerPort::Closed => None,
            })
            .collect()
    };
    let mut fds = fds_of(&ports);
    let sleepy = modes.iter().all(|m| *m != RxMode::Poll);
    let eager = modes.iter().all(|m| *m == RxMode::Interrupt);
    let mut pipeline: Pipeline<XdpBuf> = Pipeline::new(PipelineConfig::default(), counters);
    let mut burst = Burst::new(burst_size);
    let epoch = Instant::now();
    let mut flows_answered = registry.flow_request.load(Ordering::Relaxed);
    let mut idle = 0u32;
    while !stop.load(Ordering::Relaxed) {
        // A reference, not a clone: no atomic count per turn.
        let tables = cache.load();
        let flow_req = registry.flow_request.load(Ordering::Relaxed);
        if flow_req != flows_answered {
            let live: Vec<_> = pipeline
                .flow_cache()
                .iter()
                .filter(|(_, g, _)| *g == tables.generation)
                .take(FLOW_DUMP_LIMIT)
                .map(|(k, _, a)| (k, a))
                .collect();
            registry
                .flow_dumps
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((w, flow_req, live));
            flows_answered = flow_req;
        }
        if tables.generation != generation {
            reconcile(w, tables, &mut ports, &mut umem, &mut pool, &registry);
            fds = fds_of(&ports);
            generation = tables.generation;
            registry.acks[w].store(generation, Ordering::Release);
        }
        let now = epoch.elapsed().as_nanos() as u64;
        let mut got = 0;
        for id in 0..ports.len() {
            let t0 = sluice_bindings::tsc();
            let n = poll_port(
                &mut pipeline,
                tables,
                &mut ports,
                id as PortId,
                &mut burst,
                &mut pool,
                now,
            );
            if n > 0 {
                pipeline
                    .counters()
                    .load
                    .record(n, sluice_bindings::tsc().wrapping_sub(t0));
                got += n;
            }
        }
        if got > 0 {
            idle = 0;
            continue;
        }
        idle = idle.saturating_add(1);
        if sleepy && (eager || idle > ADAPTIVE_SPIN) {
            afxdp::wait_readable(&fds, IDLE_WAIT_MS);
        } else {
            std::hint::spin_loop();
        }
    }
    drop(ports);
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpulists_parse() {
        assert_eq!(
            super::parse_cpulist("0-3,8,10-11\n"),
            vec![0, 1, 2, 3, 8, 10, 11]
        );
        assert_eq!(super::parse_cpulist(""), Vec::<usize>::new());
    }
}
