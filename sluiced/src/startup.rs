//! Start-up and shutdown. Start-up is all or nothing: the configuration is
//! validated and the tables built, every interface is claimed and the XDP
//! program attached to every AF_XDP port (a stale copy left by a crash is
//! replaced), and every worker opens its ports; any failure undoes what was
//! done (programs detached, sockets closed) and is reported with the port
//! at fault. Shutdown (the `stop` flag, set by SIGTERM or SIGINT) stops the
//! workers, closes the sockets and detaches the programs.
//!
//! Then, with the workers and the control side up and before the API
//! serves its first request, the pods of the CNI plugin's attachment
//! records (`daemon.pod_records`) are attached again through the API's own
//! `ports.add` ([`crate::pod_records`]). That step never fails the start:
//! a record that cannot be used is skipped, logged and counted. Clients
//! that connect meanwhile wait in the socket's backlog and are served
//! after it, so a CNI ADD or DEL is never interleaved with it.

use crate::api;
use crate::attach::{Attached, Attacher, DpdkContext};
use crate::config::BackendKind;
use crate::config::{NodeConfig, PortKind, RxMode};
use crate::counters::WorkerCounters;
use crate::host::{configure_host_port, numa_report, PortLock};
use crate::metrics;
use crate::neigh;
use crate::registry::PortRegistry;
use crate::server::{self, ServerLimits};
use crate::tables::{Tables, TablesError, TablesHandle};
use crate::worker::{self, PortPlan, WorkerSetup};
use sluice_ports::afxdp::{self, Steering, UmemConfig};
use sluice_ports::{AfXdpBackend, BackendError, DeviceLookup, DpdkBackend, MapLookup};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

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
        source: BackendError,
    },
    /// A port has queues no worker would serve.
    #[error("port `{port}`: {message}")]
    Queues {
        /// The port's name.
        port: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The host port could not be set up.
    #[error("host port `{port}`: {source}")]
    Host {
        /// The port's name.
        port: String,
        /// The step that failed.
        source: Box<crate::host::HostPortError>,
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
    /// The workers' frames do not fit the configuration.
    #[error(transparent)]
    Frames(#[from] crate::registry::FrameBudgetError),
    /// The hardware profile cannot be used.
    #[error("{0}")]
    Profile(String),
    /// DPDK could not start (EAL, the mbuf pools).
    #[error("DPDK: {0}")]
    Dpdk(BackendError),
    /// A worker could not start.
    #[error("worker {worker}: {message}")]
    Worker {
        /// Which.
        worker: usize,
        /// Why.
        message: String,
    },
}

/// Starts the control runtime: one thread running a tokio current-thread
/// runtime (I/O and time) until the future `task` makes returns. The
/// workers stay plain threads; only control-side work (kernel neighbours,
/// `/metrics`) runs here.
fn spawn_control_runtime<F, Fut>(task: F) -> std::io::Result<JoinHandle<()>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("sluice-control".into())
        .spawn(move || rt.block_on(task()))
}

/// What start-up set up on a port, for the start-up report and the API.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PortReport {
    /// Port name.
    pub name: String,
    /// `native` or `generic` XDP, or `none`.
    pub xdp: &'static str,
    /// `zero-copy` or `copy` (worker 0's socket), `tap`, or `dpdk`.
    pub mode: &'static str,
    /// DPDK: what the device reported and what sluiced turned on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<sluice_ports::dpdk::device::DeviceInfo>,
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
    /// What became of the pods' attachment records at start.
    pub pod_records: crate::pod_records::Summary,
    /// What became of the saved tables at start.
    pub saved_tables: crate::saved_tables::Restored,
    control: Arc<std::sync::Mutex<api::Control>>,
    registry: Arc<PortRegistry>,
    _locks: Vec<PortLock>,
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
        Self::start_inner(cfg, config_path, stop, None)
    }

    /// Starts by taking over the running sluiced's ports ([`crate::handover`]):
    /// its tables, then its sockets, programs, listeners and locks. Until
    /// the commit an error leaves the running one forwarding as before.
    pub fn take_over(
        cfg: &NodeConfig,
        config_path: Option<std::path::PathBuf>,
        stop: Arc<AtomicBool>,
        incoming: crate::handover::Incoming,
    ) -> Result<Daemon, DaemonError> {
        Self::start_inner(cfg, config_path, stop, Some(incoming))
    }

    fn start_inner(
        cfg: &NodeConfig,
        config_path: Option<std::path::PathBuf>,
        stop: Arc<AtomicBool>,
        mut incoming: Option<crate::handover::Incoming>,
    ) -> Result<Daemon, DaemonError> {
        // The tables saved by the last run, if they were made from this
        // configuration: forwarding across nodes resumes with them. At an
        // upgrade, the running sluiced's tables as it hands them over.
        let file_cfg = cfg;
        let (mut restored_cfg, saved_pod_routes, saved_tables) = match &incoming {
            Some(i) => crate::saved_tables::restore_handed_over(file_cfg, &i.saved_tables),
            None => crate::saved_tables::restore(file_cfg),
        };
        if let Some(i) = &incoming {
            // The running sluiced's pods and learned neighbours are in the
            // first tables: its workers poll the pods' rings and the uplink
            // from their first turn, so nothing may miss a pod or a MAC.
            for p in &i.pods {
                if !restored_cfg.ports.iter().any(|q| q.name == p.name) {
                    restored_cfg.ports.push(p.clone());
                }
            }
            for n in &i.learned {
                if !restored_cfg.neighbours.iter().any(|m| m.ip == n.ip) {
                    restored_cfg.neighbours.push(n.clone());
                }
            }
        }
        // Any error before the commit leaves the running sluiced as it was.
        let abandon = |incoming: &mut Option<crate::handover::Incoming>, e: &DaemonError| {
            if let Some(i) = incoming.take() {
                i.abandon(&e.to_string());
            }
        };
        macro_rules! early {
            ($e:expr) => {
                match $e {
                    Ok(v) => v,
                    Err(e) => {
                        let e: DaemonError = e.into();
                        abandon(&mut incoming, &e);
                        return Err(e);
                    }
                }
            };
        }
        let cfg = &restored_cfg;
        let dpdk = cfg.daemon.backend == BackendKind::Dpdk;
        if dpdk && incoming.is_some() {
            early!(Err(DaemonError::Profile(
                "the DPDK backend cannot take ports over; upgrade it by restarting sluiced".into()
            )));
        }
        // A hardware profile may give the workers' cores.
        let (profile, workers) = if dpdk {
            crate::attach::load_profile(&cfg.daemon).map_err(DaemonError::Profile)?
        } else {
            (None, cfg.daemon.workers.clone())
        };
        let profiled;
        let cfg = if workers != cfg.daemon.workers {
            let mut c = cfg.clone();
            c.daemon.workers = workers;
            profiled = c;
            &profiled
        } else {
            cfg
        };
        let tables = early!(Tables::from_config(cfg));
        if !dpdk {
            // Every worker must have frames for the ports: MTUs that fit a
            // frame, and fill rings for every pod.
            early!(crate::registry::check_frames(
                &cfg.ports,
                &UmemConfig::default()
            ));
        }
        // The commit: from here on the running sluiced is gone and its
        // ports are this process's.
        let mut inherited = match incoming.take() {
            Some(i) => Some(i.take_over(cfg.daemon.workers.len().max(1)).map_err(|e| {
                DaemonError::Worker {
                    worker: usize::MAX,
                    message: format!("taking over: {e}"),
                }
            })?),
            None => None,
        };
        let metrics_listener = match inherited.as_mut().and_then(|i| i.metrics.take()) {
            Some(fd) => std::net::TcpListener::from(fd),
            None => metrics::bind(cfg.daemon.metrics_address).map_err(|source| {
                DaemonError::Metrics {
                    addr: cfg.daemon.metrics_address,
                    source,
                }
            })?,
        };
        let api_path = cfg.daemon.api_socket.clone();
        let api_listener = match inherited.as_mut().and_then(|i| i.api.take()) {
            Some(fd) => std::os::unix::net::UnixListener::from(fd),
            None => server::bind(&api_path).map_err(|source| DaemonError::Api {
                path: api_path.clone(),
                source,
            })?,
        };
        let mut held = crate::handover::Held {
            api: std::os::fd::AsRawFd::as_raw_fd(&api_listener),
            metrics: std::os::fd::AsRawFd::as_raw_fd(&metrics_listener),
            locks: Vec::new(),
        };
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
        let attacher = if dpdk {
            Attacher::Dpdk(
                DpdkContext::start(&cfg.daemon, &cfg.ports, profile, cfg.tunnel.vxlan_port)
                    .map_err(DaemonError::Dpdk)?,
            )
        } else {
            Attacher::AfXdp
        };
        // Every interface must exist before anything is attached.
        for p in &cfg.ports {
            if attacher.is_netdev(p) {
                afxdp::ifindex(&p.name).map_err(|source| DaemonError::Port {
                    port: p.name.clone(),
                    source: source.into(),
                })?;
            }
        }
        // Claim every interface before touching any: a second sluiced on the
        // same interfaces is refused here, before it could replace the first
        // one's XDP programs. The kernel drops the locks if we crash.
        let mut locks = Vec::new();
        for p in &cfg.ports {
            if let Some(key) = attacher.lock_key(p) {
                let lock = match inherited.as_mut().and_then(|i| i.locks.remove(&key)) {
                    Some(fd) => PortLock::inherit(fd),
                    None => PortLock::claim(&key).map_err(|holder| DaemonError::Busy {
                        port: p.name.clone(),
                        holder,
                    })?,
                };
                held.locks.push((key, lock.raw_fd()));
                locks.push(lock);
            }
        }
        let n_workers = cfg.daemon.workers.len().max(1);
        // Every queue the NIC may put traffic on needs a worker's socket.
        for p in cfg.ports.iter().filter(|p| attacher.is_netdev(p)) {
            sluice_ports::netdev::check_queues(&p.name, n_workers).map_err(|message| {
                DaemonError::Queues {
                    port: p.name.clone(),
                    message,
                }
            })?;
        }
        let umem = UmemConfig::default();
        let registry = Arc::new(PortRegistry::new(n_workers, umem));
        let mut programs: Vec<Attached> = Vec::new();
        let mut plans = Vec::new();
        let uplink_ip = cfg
            .ports
            .iter()
            .find(|p| p.kind == PortKind::Uplink)
            .and_then(|p| p.address)
            .map(|a| a.ip);
        for p in &cfg.ports {
            let steering = match p.kind {
                PortKind::Host if !dpdk => {
                    plans.push(PortPlan {
                        ifname: p.name.clone(),
                        kind: p.kind,
                    });
                    continue;
                }
                PortKind::Pod | PortKind::Host => Steering::RedirectAll,
                PortKind::Uplink => Steering::Filter {
                    node_ip: uplink_ip.expect("validated: an uplink has an address"),
                    pod_net: cfg.node.pod_network.addr(),
                    pod_len: cfg.node.pod_network.len(),
                    vxlan_port: cfg.tunnel.vxlan_port,
                },
            };
            let prog = attacher
                .attach(p, steering)
                .map_err(|source| DaemonError::Port {
                    port: p.name.clone(),
                    source,
                })?;
            plans.push(PortPlan {
                ifname: p.name.clone(),
                kind: p.kind,
            });
            prog.register(&registry);
            programs.push(prog);
        }

        let handle = Arc::new(TablesHandle::new(tables));
        let cores: Vec<Option<usize>> = if cfg.daemon.workers.is_empty() {
            vec![None]
        } else {
            cfg.daemon.workers.iter().map(|&c| Some(c)).collect()
        };
        // DPDK workers poll (as OVS-DPDK's PMDs and VPP's workers do).
        let modes: Vec<RxMode> = cfg
            .ports
            .iter()
            .map(|p| {
                if dpdk {
                    RxMode::Poll
                } else {
                    p.rx_mode.unwrap_or(cfg.daemon.rx_mode)
                }
            })
            .collect();
        let burst = cfg.daemon.burst as usize;
        let mut counters = Vec::new();
        let mut workers = Vec::new();
        let mut report = Vec::new();
        let mut hugepages = true;
        let ctx_no_huge = cfg.daemon.dpdk.no_huge;
        for (w, core) in cores.into_iter().enumerate() {
            let c = Arc::new(WorkerCounters::new());
            counters.push(c.clone());
            let (ready_tx, ready_rx) = mpsc::channel();
            let (plans, modes, handle, wstop) =
                (plans.clone(), modes.clone(), handle.clone(), stop.clone());
            let wreg = registry.clone();
            let wattacher = attacher.clone();
            let inherit = inherited
                .as_mut()
                .and_then(|i| i.workers.get_mut(w).and_then(Option::take));
            let spawned = std::thread::Builder::new()
                .name(format!("sluice-w{w}"))
                .spawn(move || {
                    let lookup_reg = wreg.clone();
                    let maps: MapLookup = Arc::new(move |name: &str| lookup_reg.map_of(name));
                    let setup = WorkerSetup {
                        w,
                        core,
                        plans,
                        modes,
                        burst,
                        handle,
                        counters: c,
                        registry: wreg,
                        stop: wstop,
                        ready: ready_tx,
                    };
                    match wattacher {
                        Attacher::AfXdp => worker::run(setup, move || match inherit {
                            Some(i) => AfXdpBackend::inherit(i, maps),
                            None => AfXdpBackend::new(umem, maps),
                        }),
                        Attacher::Dpdk(ctx) => {
                            let dev_reg = setup.registry.clone();
                            let devices: DeviceLookup =
                                Arc::new(move |name: &str| dev_reg.device_of(name));
                            let huge = !ctx_no_huge;
                            worker::run(setup, move || DpdkBackend::new(ctx.pool(w), devices, huge))
                        }
                    }
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
        if let Some(host) = cfg
            .ports
            .iter()
            .find(|p| p.kind == PortKind::Host && (!dpdk || p.devargs.is_none()))
        {
            if let Err(source) = configure_host_port(cfg, &host.name, host.mac) {
                stop.store(true, Ordering::Relaxed);
                for j in workers {
                    let _ = j.join();
                }
                return Err(DaemonError::Host {
                    port: host.name.clone(),
                    source: Box::new(source),
                });
            }
        }
        for (r, port) in report.iter_mut().zip(cfg.ports.iter()) {
            match programs.iter().find(|p| p.name() == port.name) {
                Some(Attached::Xdp(p)) => {
                    r.xdp = match p.mode() {
                        afxdp::AttachMode::Native => "native",
                        afxdp::AttachMode::Generic => "generic",
                    };
                }
                Some(Attached::Dpdk { device, .. }) => {
                    r.xdp = "none";
                    r.device = Some(device.info().clone());
                }
                None => {}
            }
        }
        let _ = &programs;
        let record_counts = Arc::new(crate::pod_records::PodRecordCounts::default());
        let pod_records;
        {
            let mut c = api::Control::new(cfg.clone(), handle.clone(), counters.clone());
            c.set_base(file_cfg.clone());
            if let Some(p) = config_path {
                c.set_config_path(p);
            }
            c.manage_ports(
                std::mem::take(&mut programs),
                attacher.clone(),
                registry.clone(),
            );
            let control = Arc::new(std::sync::Mutex::new(c));
            control_handle = control.clone();
            let (ncontrol, nstop, mstop) = (control.clone(), stop.clone(), stop.clone());
            let metrics_registry = metrics::registry(metrics::MetricsSource {
                tables: handle.clone(),
                workers: counters.clone(),
                ports: registry.clone(),
                pod_records: record_counts.clone(),
            });
            let control_tasks = move || async move {
                tokio::join!(
                    neigh::watch(ncontrol, nstop),
                    metrics::serve(metrics_listener, metrics_registry, mstop)
                );
            };
            match spawn_control_runtime(control_tasks) {
                Ok(j) => workers.push(j),
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    return Err(DaemonError::Worker {
                        worker: usize::MAX,
                        message: format!("control runtime: {e}"),
                    });
                }
            }
            pod_records = match inherited.as_mut() {
                // An upgrade: the pods the running sluiced had, on the
                // sockets and programs it handed over.
                Some(i) => {
                    registry.took_over.store(true, Ordering::Relaxed);
                    let n = i.pods.len();
                    let dropped = crate::handover::drop_unclaimed_programs();
                    tracing::info!(
                        from = i.from_pid,
                        pods = n,
                        detached = dropped,
                        took_ms = i.began.map_or(0.0, |t| t.elapsed().as_secs_f64() * 1e3),
                        parked_ms = i.parked.map_or(0.0, |t| t.elapsed().as_secs_f64() * 1e3),
                        "upgrade done: forwarding on the handed-over ports"
                    );
                    crate::pod_records::Summary::default()
                }
                None => match cfg.daemon.pod_records_dir() {
                    Some(dir) => crate::pod_records::reattach(&control, dir, &record_counts),
                    None => crate::pod_records::Summary::default(),
                },
            };
            if !saved_pod_routes.is_empty() {
                control
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .restore_pod_routes(saved_pod_routes);
            }
            if let Some(path) = cfg.daemon.state_file_path() {
                match crate::saved_tables::spawn_writer(
                    path,
                    control.clone(),
                    handle.clone(),
                    stop.clone(),
                ) {
                    Ok(j) => workers.push(j),
                    Err(e) => {
                        stop.store(true, Ordering::Relaxed);
                        return Err(DaemonError::Worker {
                            worker: usize::MAX,
                            message: format!("saved-tables writer: {e}"),
                        });
                    }
                }
            }
            if !dpdk {
                match crate::handover::spawn_listener(
                    crate::handover::socket_path(&api_path),
                    control.clone(),
                    registry.clone(),
                    held.clone(),
                    stop.clone(),
                ) {
                    Ok(j) => workers.push(j),
                    Err(e) => {
                        tracing::warn!(error = %e, "no handover socket: upgrades will be restarts")
                    }
                }
            }
            let (apath, astop) = (api_path.clone(), stop.clone());
            match std::thread::Builder::new()
                .name("sluice-api".into())
                .spawn(move || {
                    server::serve(api_listener, apath, control, astop, ServerLimits::default())
                }) {
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
        let control = control_handle;
        let numa = cfg
            .ports
            .iter()
            .find(|p| p.kind == PortKind::Uplink && attacher.is_netdev(p))
            .and_then(|u| numa_report(&u.name, &cfg.daemon.workers));
        Ok(Daemon {
            tables: handle,
            counters,
            stop,
            workers,
            report,
            hugepages,
            numa,
            pod_records,
            saved_tables,
            control,
            registry,
            _locks: locks,
        })
    }

    /// What the control side shares with the workers (frame accounting,
    /// port counters).
    pub fn registry(&self) -> &Arc<PortRegistry> {
        &self.registry
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
