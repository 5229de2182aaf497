//! The worker loop: one pinned thread per core, generic over the port
//! backend, so AF_XDP, DPDK and vhost-user ports run the same loop.
//!
//! Worker `w` owns queue `w` of every port, its backend's buffer memory, a
//! pipeline and its counters; it shares nothing writable with other
//! workers. Every turn it loads the tables (a cached pointer, no atomic
//! count while nothing changes), brings its ports in line when the
//! generation moved, and polls each port once.
//!
//! Housekeeping (flow dumps asked for by the API, the kernel's per-port
//! counters, the frame accounting: free frames in the pool, frames each
//! port holds) runs every [`HOUSEKEEPING_TURNS`] turns and before the
//! worker sleeps, as OVS's PMD loop does, never per packet. In `adaptive`
//! mode a worker sleeps on its ports after [`ADAPTIVE_SPIN`] empty turns, in
//! `interrupt` mode as soon as they are empty, and never in `poll` mode.
//! After [`YIELD_AFTER`] empty turns in a row an awake worker yields its
//! core on each further empty turn: nothing changes on a dedicated core,
//! and on a shared one a runnable thread (another worker, a pod) gets the
//! core at once instead of after a spinning worker's time slice.
//!
//! Every empty turn services the ports ([`Backend::service`]): completed
//! frames go back to the pool, and the kernel is woken again while frames
//! wait on a TX ring (copy mode sends 32 per wakeup); a worker never
//! sleeps while sending is under way, so the tail of a burst goes out
//! without new traffic. It sleeps on every port it owns, however many.
//!
//! A packet capture ([`crate::capture`]) costs a worker one relaxed atomic
//! load per turn while none changes; when one is in force, every burst
//! received and every TX list sent is compared with its port, and only the
//! captured port's frames are looked at (filter, copy into this worker's
//! ring, `try_lock` once per burst).
//!
//! A port that goes (removed at runtime, or at shutdown) is closed with
//! [`Backend::close`], which returns every frame it held to the pool.

use crate::config::{PortKind, RxMode};
use crate::counters::WorkerCounters;
use crate::pipeline::{Pipeline, PipelineConfig};
use crate::port::{poll_port_tapped, Tap};
use crate::registry::WorkerFrames;
use crate::registry::{PortRegistry, FLOW_DUMP_LIMIT};
use crate::startup::{DaemonError, PortReport};
use crate::tables::{PortId, PortRole, Tables, TablesHandle};
use sluice_dataplane::buffer::Burst;
use sluice_ports::afxdp::WaitSet;
use sluice_ports::{Backend, BackendError, PortSpec};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

/// Empty polls in a row before an adaptive worker sleeps.
pub const ADAPTIVE_SPIN: u32 = 1024;
/// Empty polls in a row after which every further empty poll yields the
/// core (`sched_yield`) to any other runnable thread before polling again.
pub const YIELD_AFTER: u32 = 16;
/// How long an idle worker sleeps on its ports at most (it rechecks `stop`).
pub const IDLE_WAIT_MS: i32 = 20;
/// Turns between two housekeeping rounds of a busy worker.
pub const HOUSEKEEPING_TURNS: u32 = 1024;

/// What a worker reports once its ports are open: each port's report and
/// whether its memory is on huge pages.
pub(crate) type Ready = mpsc::Sender<Result<(Vec<PortReport>, bool), DaemonError>>;

/// A port the worker opens at start.
#[derive(Debug, Clone)]
pub(crate) struct PortPlan {
    pub ifname: String,
    pub kind: PortKind,
}

/// Everything a worker thread starts from.
#[derive(Debug)]
pub(crate) struct WorkerSetup {
    pub w: usize,
    pub core: Option<usize>,
    pub plans: Vec<PortPlan>,
    pub modes: Vec<RxMode>,
    pub burst: usize,
    pub handle: Arc<TablesHandle>,
    pub counters: Arc<WorkerCounters>,
    pub registry: Arc<PortRegistry>,
    pub stop: Arc<AtomicBool>,
    pub ready: Ready,
}

fn port_error(plan: &PortPlan, e: BackendError) -> DaemonError {
    if plan.kind == PortKind::Host {
        DaemonError::Host {
            port: plan.ifname.clone(),
            source: Box::new(crate::host::HostPortError::Open(e)),
        }
    } else {
        DaemonError::Port {
            port: plan.ifname.clone(),
            source: e,
        }
    }
}

/// Brings a worker's ports in line with the tables: opens pod ports that
/// appeared, closes those of removed ports. Slot `i` is port `i`, and
/// `opened[i]` names the interface its socket was opened for: a slot past
/// the tables' ports (ids taken back after a failed add) or whose id now
/// names another interface is closed first, so a socket never outlives its
/// port even when the worker skipped the generations in between.
///
/// A pod port opened here is a new attachment, perhaps under a removed
/// port's id: this worker's counters for the id start from zero, what they
/// held going to its retired totals (so packets stay conserved).
#[allow(clippy::too_many_arguments)]
fn reconcile<B: Backend>(
    w: usize,
    tables: &Tables,
    ports: &mut Vec<Option<B::Port>>,
    opened: &mut Vec<Option<String>>,
    backend: &mut B,
    pool: &mut B::Pool,
    registry: &PortRegistry,
    counters: &WorkerCounters,
) {
    for i in 0..ports.len() {
        let stale = tables
            .ports
            .get(i)
            .is_none_or(|e| opened[i].as_deref() != Some(e.name.as_str()));
        if stale {
            if let Some(p) = ports[i].take() {
                backend.close(pool, p);
            }
            opened[i] = None;
        }
    }
    // Everything past the tables' ports was closed just above.
    ports.truncate(tables.ports.len());
    while ports.len() < tables.ports.len() {
        ports.push(None);
    }
    opened.resize(ports.len(), None);
    for (i, entry) in tables.ports.iter().enumerate() {
        let slot = &mut ports[i];
        match (slot.is_some(), entry.removed) {
            (true, true) => {
                if let Some(p) = slot.take() {
                    backend.close(pool, p);
                }
                opened[i] = None;
            }
            (false, false) if matches!(entry.role, PortRole::Pod { .. }) => {
                if !registry.is_attached(&entry.name) {
                    continue;
                }
                let spec = PortSpec {
                    name: &entry.name,
                    kind: PortKind::Pod,
                    queue: w as u32,
                };
                match backend.open(pool, &spec) {
                    Ok(p) => {
                        counters.retire_port(i as PortId);
                        *slot = Some(p);
                        opened[i] = Some(entry.name.clone());
                    }
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

/// Answers a pending flow request and publishes the kernel's port
/// counters and the frame accounting.
fn housekeeping<B: Backend>(
    w: usize,
    tables: &Tables,
    pipeline: &Pipeline<<B::Pool as sluice_dataplane::buffer::BufPool>::Buf>,
    ports: &[Option<B::Port>],
    pool: &B::Pool,
    registry: &PortRegistry,
    flows_answered: &mut u32,
) {
    let flow_req = registry.flow_request.load(Ordering::Relaxed);
    if flow_req != *flows_answered {
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
        *flows_answered = flow_req;
    }
    // Never wait for a reader: the next round publishes again.
    if let Ok(mut stats) = registry.port_stats[w].try_lock() {
        stats.clear();
        stats.extend(
            ports
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.as_ref().map(|p| (i as PortId, B::stats(p)))),
        );
    }
    if let Ok(mut frames) = registry.frames[w].try_lock() {
        let WorkerFrames {
            pool: pf,
            ports: held,
        } = &mut *frames;
        *pf = B::pool_frames(pool);
        held.clear();
        held.extend(
            ports
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.as_ref().map(|p| (i as PortId, B::frames_held(p)))),
        );
    }
}

/// Stops this worker between two turns for an upgrade ([`crate::handover`]):
/// hands over its memory, pool and ports, then touches nothing until the
/// handover fails (the flag clears: it carries on as before) or the
/// process ends. No buffer is alive between turns, so the pool's marks and
/// the rings account for every frame.
fn park<B: Backend>(
    w: usize,
    backend: &B,
    pool: &B::Pool,
    ports: &[Option<B::Port>],
    opened: &[Option<String>],
    registry: &PortRegistry,
    stop: &AtomicBool,
) {
    let named: Vec<(&str, &B::Port)> = ports
        .iter()
        .zip(opened)
        .filter_map(|(p, n)| Some((n.as_deref()?, p.as_ref()?)))
        .collect();
    let handed = backend.handover(pool, &named);
    if let Some(slot) = registry
        .parked
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_mut(w)
    {
        *slot = Some(handed);
    }
    while registry.park.load(Ordering::Acquire) && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// A worker thread: pins itself, makes its backend (memory local to its
/// core), opens its ports, reports ready, then polls until `stop`.
pub(crate) fn run<B: Backend>(
    s: WorkerSetup,
    make_backend: impl FnOnce() -> Result<B, BackendError>,
) {
    let WorkerSetup {
        w,
        core,
        plans,
        modes,
        burst: burst_size,
        handle,
        counters,
        registry,
        stop,
        ready,
    } = s;
    if let Some(c) = core {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: c }) {
            let _ = ready.send(Err(DaemonError::Worker {
                worker: w,
                message: format!("cannot pin to core {c}"),
            }));
            return;
        }
    }
    // Drop order matters: ports, then the pool's buffers, then the backend.
    let mut backend = match make_backend() {
        Ok(b) => b,
        Err(source) => {
            let _ = ready.send(Err(DaemonError::Port {
                port: "(umem)".into(),
                source,
            }));
            return;
        }
    };
    let mut pool = backend.pool();
    let mut ports: Vec<Option<B::Port>> = Vec::with_capacity(plans.len());
    let mut opened: Vec<Option<String>> = plans.iter().map(|p| Some(p.ifname.clone())).collect();
    let mut report = Vec::new();
    for plan in &plans {
        let spec = PortSpec {
            name: &plan.ifname,
            kind: plan.kind,
            queue: w as u32,
        };
        match backend.open(&mut pool, &spec) {
            Ok(p) => {
                report.push(PortReport {
                    name: plan.ifname.clone(),
                    xdp: if plan.kind == PortKind::Host {
                        "none"
                    } else {
                        "native"
                    },
                    mode: B::mode(&p),
                    device: None,
                });
                ports.push(Some(p));
            }
            Err(e) => {
                let _ = ready.send(Err(port_error(plan, e)));
                return;
            }
        }
    }
    for name in backend.release_unclaimed(&mut pool) {
        tracing::warn!(worker = w, port = %name, "handed-over port not in the configuration: closed");
    }
    let mut cache = handle.cache();
    let mut generation = cache.load().generation;
    registry.acks[w].store(generation, Ordering::Release);
    let _ = ready.send(Ok((report, backend.hugepages())));

    // Woken by the control side when tables change (a port added): a
    // sleeping worker takes them up at once, not at its next timeout.
    let waker = registry.take_waker(w);
    let fds_of = |ports: &[Option<B::Port>]| -> Vec<i32> {
        ports
            .iter()
            .flatten()
            .filter_map(B::wait_fd)
            .chain(waker.as_ref().map(std::os::fd::AsRawFd::as_raw_fd))
            .collect()
    };
    let mut waitset = WaitSet::new(&fds_of(&ports));
    let sleepy = modes.iter().all(|m| *m != RxMode::Poll);
    let eager = modes.iter().all(|m| *m == RxMode::Interrupt);
    let mut pipeline = Pipeline::new(PipelineConfig::default(), counters);
    let mut burst = Burst::new(burst_size);
    let epoch = Instant::now();
    let mut flows_answered = registry.flow_request.load(Ordering::Relaxed);
    let mut idle = 0u32;
    let mut turn = 0u32;
    // The capture in force and the generation it was taken at.
    let mut capture = None;
    let mut capture_gen = registry.captures.generation().wrapping_sub(1);
    while !stop.load(Ordering::Relaxed) {
        if registry.park.load(Ordering::Relaxed) {
            park::<B>(w, &backend, &pool, &ports, &opened, &registry, &stop);
            continue;
        }
        let cg = registry.captures.generation();
        if cg != capture_gen {
            if let Some(c) = registry.captures.published() {
                capture = c;
                capture_gen = cg;
            }
        }
        let tap = capture.as_deref().map(|capture| Tap { capture, worker: w });
        // A reference, not a clone: no atomic count per turn.
        let tables = cache.load();
        if tables.generation != generation {
            reconcile(
                w,
                tables,
                &mut ports,
                &mut opened,
                &mut backend,
                &mut pool,
                &registry,
                pipeline.counters(),
            );
            waitset = WaitSet::new(&fds_of(&ports));
            generation = tables.generation;
            registry.acks[w].store(generation, Ordering::Release);
        }
        turn = turn.wrapping_add(1);
        if turn.is_multiple_of(HOUSEKEEPING_TURNS) {
            housekeeping::<B>(
                w,
                tables,
                &pipeline,
                &ports,
                &pool,
                &registry,
                &mut flows_answered,
            );
        }
        let now = epoch.elapsed().as_nanos() as u64;
        let mut got = 0;
        for id in 0..ports.len() {
            let t0 = sluice_bindings::tsc();
            let n = poll_port_tapped(
                &mut pipeline,
                tables,
                &mut ports,
                id as PortId,
                &mut burst,
                &mut pool,
                now,
                tap,
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
        // Nothing arrived: return completed frames, and wake the kernel
        // again where frames still wait to be sent.
        let mut sending = false;
        for p in ports.iter_mut().flatten() {
            sending |= B::service(&mut pool, p);
        }
        if sleepy && !sending && (eager || idle > ADAPTIVE_SPIN) {
            housekeeping::<B>(
                w,
                tables,
                &pipeline,
                &ports,
                &pool,
                &registry,
                &mut flows_answered,
            );
            B::wait(&mut waitset, IDLE_WAIT_MS);
            if let Some(mut wk) = waker.as_ref() {
                let mut sink = [0u8; 64];
                while matches!(std::io::Read::read(&mut wk, &mut sink), Ok(n) if n > 0) {}
            }
        } else if idle > YIELD_AFTER {
            // Free on a dedicated core (nothing else is runnable); where the
            // core is shared (another node's worker in a lab, the pods'
            // processes) the others run now, not at the end of a time slice.
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
    // Close every port, its frames back to the pool, before the pool and
    // the backend go.
    for p in ports.drain(..).flatten() {
        backend.close(&mut pool, p);
    }
}
