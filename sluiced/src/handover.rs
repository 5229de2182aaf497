//! Upgrades without loss: a new sluiced takes the running one's ports over
//! and forwards on the very same AF_XDP rings, so packets that arrive
//! meanwhile wait in them instead of being dropped.
//!
//! The running sluiced listens on [`socket_path`] (beside the API socket,
//! mode 0600). A new one started with `--take-over` (by hand, by the
//! DaemonSet, or spawned by the old one for `sluicectl upgrade`) connects:
//!
//! 1. new → old `h` (hello: protocol version, pid). The old one takes its
//!    control lock, so no API request changes anything from here on, and
//!    sends its tables (`t`/`T`: the saved-tables snapshot and the pod
//!    ports added at runtime). Nothing stops forwarding yet.
//! 2. The new one builds its tables from them, then asks `p` (park). The
//!    old one's workers stop between two turns (no buffer alive) and hand
//!    over their UMEM memfd, the socket the UMEM is registered on, the
//!    pool's marks and every port's descriptor and ring accounting; the
//!    old one sends these with its XDP programs' maps, its API and metrics
//!    listeners and its interface locks (`q`/`Q`, then `f` messages
//!    carrying the descriptors).
//! 3. The new one checks that this kernel lets it map a handed-over
//!    socket's rings (Linux 6.5 and later), then commits (`c`). The old one
//!    exits at once (no destructor runs: nothing is detached or closed
//!    behind the new one), and the new one starts its workers on the
//!    handed-over rings, attaches the pods again on their own sockets and
//!    programs, and serves the API on the same listener.
//!
//! Until the commit nothing of the old one has changed: if the new one
//! goes away, says `a` (abandon) or stays silent past a deadline, the old
//! one's workers carry on from where they stopped and its lock is freed.
//! Any error is answered with `x` and the reason, and nothing happens.
//! The DPDK backend does not hand over (its devices live in the process):
//! upgrading it is a restart.
//!
//! The XDP programs stay attached throughout and the sockets stay in their
//! maps, so the kernel keeps steering frames to the same rings; the rings
//! are sized for it (a pod's fill ring holds 128 frames, the uplink's
//! 1024), which is what a handover may take at most without a drop.

use crate::api::Control;
use crate::config::PortConfig;
use crate::registry::PortRegistry;
use serde::{Deserialize, Serialize};
use sluice_api::NeighbourConfig;
use sluice_ports::afxdp::{AttachMode, PoolState, UmemConfig, XdpProgram, XskState};
use sluice_ports::handover::{Channel, MAX_FDS, MAX_MESSAGE};
use sluice_ports::WorkerInherit;
use std::collections::HashMap;
use std::os::fd::{OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The protocol's version; a peer of another is refused.
pub const VERSION: u32 = 1;

/// How long the old sluiced waits for the new one's next step (it builds
/// its tables in between: a million routes take seconds).
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the workers have to park.
const PARK_TIMEOUT: Duration = Duration::from_secs(2);

/// The handover socket for an API socket: `<api_socket>` with the
/// extension `handover` (`/run/sluice/sluiced.handover`).
pub fn socket_path(api_socket: &Path) -> PathBuf {
    api_socket.with_extension("handover")
}

/// Descriptors the running process hands over besides its ports.
#[derive(Debug, Default, Clone)]
pub struct Held {
    /// The API listener.
    pub api: RawFd,
    /// The metrics listener.
    pub metrics: RawFd,
    /// Interface locks, by key.
    pub locks: Vec<(String, RawFd)>,
}

#[derive(Serialize, Deserialize)]
struct Hello {
    version: u32,
    pid: u32,
}

#[derive(Serialize, Deserialize)]
struct TablesMsg {
    version: u32,
    pid: u32,
    workers: usize,
    pods: Vec<PortConfig>,
    learned: Vec<NeighbourConfig>,
    saved_tables: String,
}

#[derive(Serialize, Deserialize)]
struct ProgramMsg {
    name: String,
    mode: AttachMode,
    xsks_map: usize,
    config_map: usize,
}

#[derive(Serialize, Deserialize)]
struct PortMsg {
    name: String,
    fd: usize,
    xsk: Option<XskState>,
}

#[derive(Serialize, Deserialize)]
struct WorkerMsg {
    memfd: usize,
    umem_fd: usize,
    cfg: UmemConfig,
    hugepages: bool,
    pool: PoolState,
    ports: Vec<PortMsg>,
}

#[derive(Serialize, Deserialize)]
struct PortsMsg {
    programs: Vec<ProgramMsg>,
    workers: Vec<WorkerMsg>,
    api: usize,
    metrics: usize,
    locks: Vec<(String, usize)>,
    fds: usize,
}

fn io_err(what: &str, e: std::io::Error) -> String {
    format!("{what}: {e}")
}

/// Sends `bytes` as `chunk` messages and one `end` message.
fn send_blob(ch: &Channel, chunk: u8, end: u8, bytes: &[u8]) -> Result<(), String> {
    for part in bytes.chunks(MAX_MESSAGE - 1) {
        let mut m = Vec::with_capacity(part.len() + 1);
        m.push(chunk);
        m.extend_from_slice(part);
        ch.send(&m, &[]).map_err(|e| io_err("send", e))?;
    }
    ch.send(&[end], &[]).map_err(|e| io_err("send", e))
}

/// One message: its tag, payload and descriptors. The end of the
/// connection is an error naming `what` was awaited.
fn recv(ch: &Channel, buf: &mut [u8], what: &str) -> Result<(u8, Vec<u8>, Vec<OwnedFd>), String> {
    let (n, fds) = ch
        .recv(buf)
        .map_err(|e| io_err(&format!("waiting for {what}"), e))?;
    if n == 0 {
        return Err(format!("the other sluiced went away before {what}"));
    }
    Ok((buf[0], buf[1..n].to_vec(), fds))
}

/// Receives a blob sent by [`send_blob`]; an `x` message is the peer's error.
fn recv_blob(ch: &Channel, chunk: u8, end: u8, what: &str) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut out = Vec::new();
    loop {
        let (tag, body, _) = recv(ch, &mut buf, what)?;
        match tag {
            t if t == chunk => out.extend_from_slice(&body),
            t if t == end => return Ok(out),
            b'x' => return Err(String::from_utf8_lossy(&body).into_owned()),
            t => {
                return Err(format!(
                    "unexpected message `{}` waiting for {what}",
                    t as char
                ))
            }
        }
    }
}

fn send_error(ch: &Channel, why: &str) {
    let mut m = vec![b'x'];
    m.extend_from_slice(&why.as_bytes()[..why.len().min(MAX_MESSAGE - 1)]);
    let _ = ch.send(&m, &[]);
}

// ---------------------------------------------------------------------------
// The running sluiced's side.

/// Serves upgrades until `stop`: one new sluiced at a time.
pub(crate) fn spawn_listener(
    path: PathBuf,
    control: Arc<Mutex<Control>>,
    registry: Arc<PortRegistry>,
    held: Held,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let listener = Channel::listen(&path)?;
    std::thread::Builder::new()
        .name("sluice-handover".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept(Duration::from_millis(200)) {
                    Ok(Some(ch)) => {
                        if let Err(e) = give(&ch, &control, &registry, &held) {
                            registry.handovers_abandoned.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(error = %e, "upgrade abandoned; forwarding as before");
                            send_error(&ch, &e);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "handover socket");
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
            let _ = std::fs::remove_file(&path);
        })
}

/// Lets the workers go on after a handover that did not happen.
struct Unpark<'a>(&'a PortRegistry);

impl Drop for Unpark<'_> {
    fn drop(&mut self) {
        self.0.park.store(false, Ordering::Release);
        for slot in self
            .0
            .parked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter_mut()
        {
            *slot = None;
        }
    }
}

fn give(
    ch: &Channel,
    control: &Mutex<Control>,
    registry: &PortRegistry,
    held: &Held,
) -> Result<(), String> {
    ch.set_timeout(Some(STEP_TIMEOUT))
        .map_err(|e| io_err("handover socket", e))?;
    let hello = recv_blob(ch, b'h', b'H', "the hello")?;
    let hello: Hello =
        serde_json::from_slice(&hello).map_err(|e| format!("not a sluiced's hello: {e}"))?;
    if hello.version != VERSION {
        return Err(format!(
            "the new sluiced speaks handover version {}, this one {VERSION}",
            hello.version
        ));
    }
    // Held until this process exits, or released if the handover fails:
    // no request changes anything the new process has been told.
    let c = control.lock().unwrap_or_else(|p| p.into_inner());
    if c.is_dpdk() {
        return Err(
            "the DPDK backend cannot hand its devices over; upgrade it by restarting sluiced"
                .into(),
        );
    }
    let t0 = Instant::now();
    let mut saved = Vec::new();
    c.write_saved_tables(&mut saved)
        .map_err(|e| io_err("the tables", e))?;
    let tables = TablesMsg {
        version: VERSION,
        pid: std::process::id(),
        workers: registry.workers(),
        pods: c.runtime_pods(),
        learned: c
            .config()
            .neighbours()
            .iter()
            .filter(|n| n.learned)
            .cloned()
            .collect(),
        saved_tables: String::from_utf8(saved).map_err(|e| e.to_string())?,
    };
    let bytes = serde_json::to_vec(&tables).map_err(|e| e.to_string())?;
    send_blob(ch, b't', b'T', &bytes)?;
    tracing::info!(pid = hello.pid, "a new sluiced is taking over: tables sent");

    let mut buf = vec![0u8; MAX_MESSAGE];
    let (tag, body, _) = recv(ch, &mut buf, "the request to park")?;
    if tag != b'p' {
        return Err(format!(
            "the new sluiced stopped the handover: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    // Park the workers; whatever happens from here on, they go on unless
    // this process exits.
    let unpark = Unpark(registry);
    let parked_at = Instant::now();
    registry.park.store(true, Ordering::Release);
    registry.wake_workers();
    let handed = loop {
        {
            let slots = registry.parked.lock().unwrap_or_else(|p| p.into_inner());
            if slots.iter().all(Option::is_some) {
                break slots
                    .iter()
                    .flatten()
                    .map(|s| match s {
                        Ok(h) => Ok(clone_handover(h)),
                        Err(e) => Err(e.clone()),
                    })
                    .collect::<Result<Vec<_>, String>>()?;
            }
        }
        if parked_at.elapsed() > PARK_TIMEOUT {
            return Err("the workers did not stop within 2 s".into());
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    let mut fds: Vec<RawFd> = Vec::new();
    let mut push = |fd: RawFd| {
        fds.push(fd);
        fds.len() - 1
    };
    let mut programs = Vec::new();
    for p in c.programs() {
        let h = p.handover().map_err(|e| e.to_string())?;
        programs.push(ProgramMsg {
            name: p.ifname().to_string(),
            mode: h.mode,
            xsks_map: push(h.xsks_map),
            config_map: push(h.config_map),
        });
    }
    let workers = handed
        .into_iter()
        .map(|w| WorkerMsg {
            memfd: push(w.umem.memfd),
            umem_fd: push(w.umem.umem_fd),
            cfg: w.umem.cfg,
            hugepages: w.umem.hugepages,
            pool: w.pool,
            ports: w
                .ports
                .into_iter()
                .map(|p| PortMsg {
                    name: p.name,
                    fd: push(p.fd),
                    xsk: p.xsk,
                })
                .collect(),
        })
        .collect();
    let msg = PortsMsg {
        programs,
        workers,
        api: push(held.api),
        metrics: push(held.metrics),
        locks: held
            .locks
            .iter()
            .map(|(k, fd)| (k.clone(), push(*fd)))
            .collect(),
        fds: 0,
    };
    let msg = PortsMsg {
        fds: fds.len(),
        ..msg
    };
    let bytes = serde_json::to_vec(&msg).map_err(|e| e.to_string())?;
    send_blob(ch, b'q', b'Q', &bytes)?;
    for chunk in fds.chunks(MAX_FDS) {
        ch.send(b"f", chunk)
            .map_err(|e| io_err("send descriptors", e))?;
    }
    let (tag, body, _) = recv(ch, &mut buf, "the commit")?;
    if tag != b'c' {
        return Err(format!(
            "the new sluiced did not take over: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    tracing::info!(
        pid = hello.pid,
        parked_ms = parked_at.elapsed().as_secs_f64() * 1e3,
        since_hello_ms = t0.elapsed().as_secs_f64() * 1e3,
        "handed over to the new sluiced; exiting"
    );
    // Exit without running any destructor: the programs stay attached, the
    // sockets bound and the TAP up for the new process.
    std::mem::forget(unpark);
    std::process::exit(0)
}

fn clone_handover(h: &sluice_ports::WorkerHandover) -> sluice_ports::WorkerHandover {
    sluice_ports::WorkerHandover {
        umem: h.umem,
        pool: h.pool.clone(),
        ports: h
            .ports
            .iter()
            .map(|p| sluice_ports::PortHandover {
                name: p.name.clone(),
                fd: p.fd,
                xsk: p.xsk.clone(),
            })
            .collect(),
    }
}

// ---------------------------------------------------------------------------
// The new sluiced's side.

/// A handover whose descriptors are here: [`Received::commit`] ends the
/// old sluiced, [`Received::abandon`] lets it carry on.
#[derive(Debug)]
pub struct Received {
    incoming: Incoming,
    inherited: Inherited,
}

impl Received {
    /// What was handed over.
    pub fn inherited(&self) -> &Inherited {
        &self.inherited
    }

    /// Commits: the old sluiced exits (waited for, up to 5 s), and what it
    /// handed over is this process's.
    pub fn commit(self) -> Result<Inherited, String> {
        let Received {
            incoming,
            mut inherited,
        } = self;
        if let Err(e) = incoming.ch.send(b"c", &[]) {
            forget_programs();
            return Err(io_err("commit", e));
        }
        // The old process exits on the commit: its end of the socket
        // closes with it.
        let mut buf = vec![0u8; MAX_MESSAGE];
        let _ = incoming.ch.set_timeout(Some(Duration::from_secs(5)));
        let _ = incoming.ch.recv(&mut buf);
        inherited.began = Some(incoming.began);
        tracing::info!(
            pid = incoming.from_pid,
            "took over from the running sluiced"
        );
        Ok(inherited)
    }

    /// Gives everything back unused: the old sluiced's workers go on. The
    /// descriptors are closed here; its programs stay attached.
    pub fn abandon(self, why: &str) {
        forget_programs();
        self.incoming.abandon(why);
    }
}

/// Lets go of the handed-over programs without detaching them (they are
/// still the running sluiced's).
fn forget_programs() {
    std::mem::take(&mut *PROGRAMS.lock().unwrap_or_else(|p| p.into_inner()))
        .into_iter()
        .for_each(std::mem::forget);
}

/// A handover under way, seen from the new sluiced: the tables are here,
/// the old one still forwards.
#[derive(Debug)]
pub struct Incoming {
    ch: Channel,
    /// The running sluiced's pid.
    pub from_pid: u32,
    /// Its workers.
    pub workers: usize,
    /// Its saved-tables snapshot (JSON).
    pub saved_tables: Vec<u8>,
    /// The pod ports it had added at runtime.
    pub pods: Vec<PortConfig>,
    /// The neighbours it had learned from the kernel.
    pub learned: Vec<NeighbourConfig>,
    /// When the handover began.
    pub began: Instant,
}

/// What the new sluiced took over.
#[derive(Debug, Default)]
pub struct Inherited {
    /// The old sluiced's pid.
    pub from_pid: u32,
    /// The API listener.
    pub api: Option<OwnedFd>,
    /// The metrics listener.
    pub metrics: Option<OwnedFd>,
    /// Interface locks, by key.
    pub locks: HashMap<String, OwnedFd>,
    /// Per worker: its UMEM, pool and ports.
    pub workers: Vec<Option<WorkerInherit>>,
    /// Pod ports to add again.
    pub pods: Vec<PortConfig>,
    /// When the handover began.
    pub began: Option<Instant>,
    /// When the old workers parked.
    pub parked: Option<Instant>,
}

/// Programs handed over, waiting for their port to be attached again
/// ([`crate::attach::Attacher::attach`] takes them from here).
static PROGRAMS: Mutex<Vec<XdpProgram>> = Mutex::new(Vec::new());

/// The handed-over program for `ifname`, if there is one.
pub(crate) fn take_program(ifname: &str) -> Option<XdpProgram> {
    let mut ps = PROGRAMS.lock().unwrap_or_else(|p| p.into_inner());
    let i = ps.iter().position(|p| p.ifname() == ifname)?;
    Some(ps.swap_remove(i))
}

/// Detaches the handed-over programs no port took (pods that did not come
/// back).
pub(crate) fn drop_unclaimed_programs() -> usize {
    let left: Vec<XdpProgram> =
        std::mem::take(&mut *PROGRAMS.lock().unwrap_or_else(|p| p.into_inner()));
    for p in &left {
        tracing::warn!(port = %p.ifname(), "handed-over port not attached again; detached");
    }
    left.len()
}

impl Incoming {
    /// Connects to the running sluiced at `path` and receives its tables.
    pub fn connect(path: &Path) -> Result<Incoming, String> {
        let began = Instant::now();
        let ch = Channel::connect(path).map_err(|e| {
            format!(
                "no running sluiced to take over from at {}: {e}",
                path.display()
            )
        })?;
        ch.set_timeout(Some(STEP_TIMEOUT))
            .map_err(|e| io_err("handover socket", e))?;
        let hello = serde_json::to_vec(&Hello {
            version: VERSION,
            pid: std::process::id(),
        })
        .map_err(|e| e.to_string())?;
        send_blob(&ch, b'h', b'H', &hello)?;
        let bytes = recv_blob(&ch, b't', b'T', "the tables")?;
        let t: TablesMsg =
            serde_json::from_slice(&bytes).map_err(|e| format!("not a sluiced's tables: {e}"))?;
        if t.version != VERSION {
            return Err(format!(
                "the running sluiced speaks handover version {}, this one {VERSION}",
                t.version
            ));
        }
        Ok(Incoming {
            ch,
            from_pid: t.pid,
            workers: t.workers,
            saved_tables: t.saved_tables.into_bytes(),
            pods: t.pods,
            learned: t
                .learned
                .into_iter()
                .map(|n| NeighbourConfig { learned: true, ..n })
                .collect(),
            began,
        })
    }

    /// Stops the handover: the running sluiced carries on.
    pub fn abandon(self, why: &str) {
        let mut m = vec![b'a'];
        m.extend_from_slice(&why.as_bytes()[..why.len().min(MAX_MESSAGE - 1)]);
        let _ = self.ch.send(&m, &[]);
    }

    /// Parks the old sluiced's workers, receives everything it hands over,
    /// checks it can be used here, and commits: the old one exits. On an
    /// error the old one carries on and nothing here has been used.
    pub fn take_over(self, workers: usize) -> Result<Inherited, String> {
        self.park_and_receive(workers)?.commit()
    }

    /// The first half of [`Incoming::take_over`]: the old sluiced's workers
    /// are parked and everything is here, checked, nothing used yet. On an
    /// error the handover is abandoned (the old one carries on).
    pub fn park_and_receive(self, workers: usize) -> Result<Received, String> {
        match self.receive(workers) {
            Ok(inherited) => Ok(Received {
                incoming: self,
                inherited,
            }),
            Err(e) => {
                self.abandon(&e);
                Err(e)
            }
        }
    }

    fn receive(&self, workers: usize) -> Result<Inherited, String> {
        if workers != self.workers {
            return Err(format!(
                "the running sluiced has {} workers, this configuration {workers}: a change of workers needs a restart",
                self.workers
            ));
        }
        self.ch.send(b"p", &[]).map_err(|e| io_err("park", e))?;
        let parked = Instant::now();
        let bytes = recv_blob(&self.ch, b'q', b'Q', "the ports")?;
        let msg: PortsMsg =
            serde_json::from_slice(&bytes).map_err(|e| format!("not a sluiced's ports: {e}"))?;
        let mut fds: Vec<Option<OwnedFd>> = Vec::with_capacity(msg.fds);
        let mut buf = vec![0u8; MAX_MESSAGE];
        while fds.len() < msg.fds {
            let (tag, _, got) = recv(&self.ch, &mut buf, "the descriptors")?;
            if tag != b'f' || got.is_empty() {
                return Err("descriptors missing from the handover".into());
            }
            fds.extend(got.into_iter().map(Some));
        }
        if fds.len() != msg.fds {
            return Err(format!(
                "{} descriptors handed over, {} announced",
                fds.len(),
                msg.fds
            ));
        }
        let mut take = |i: usize| -> Result<OwnedFd, String> {
            fds.get_mut(i)
                .and_then(Option::take)
                .ok_or_else(|| format!("descriptor {i} missing from the handover"))
        };
        let mut program_fds = Vec::new();
        for p in msg.programs {
            let xsks = take(p.xsks_map)?;
            let config = take(p.config_map)?;
            program_fds.push((p.name, xsks, config, p.mode));
        }
        let mut inherited_workers = Vec::new();
        for w in msg.workers {
            let memfd = take(w.memfd)?;
            let umem_fd = take(w.umem_fd)?;
            let mut ports = Vec::new();
            for p in w.ports {
                let fd = take(p.fd)?;
                if let Some(state) = &p.xsk {
                    sluice_ports::afxdp::XskPort::probe_adopt(&fd, state)
                        .map_err(|e| format!("port `{}`: {e}", p.name))?;
                }
                ports.push((p.name, fd, p.xsk));
            }
            inherited_workers.push(Some(WorkerInherit {
                memfd,
                umem_fd,
                cfg: w.cfg,
                hugepages: w.hugepages,
                pool: w.pool,
                ports,
            }));
        }
        let api = Some(take(msg.api)?);
        let metrics = Some(take(msg.metrics)?);
        let mut locks = HashMap::new();
        for (k, i) in msg.locks {
            locks.insert(k, take(i)?);
        }
        // Last, as nothing can fail after it: a program value dropped here
        // would detach the running sluiced's program.
        let mut programs = Vec::new();
        for (name, xsks, config, mode) in program_fds {
            match XdpProgram::inherit(&name, xsks, config, mode) {
                Ok(p) => programs.push(p),
                Err(e) => {
                    programs.into_iter().for_each(std::mem::forget);
                    return Err(format!("port `{name}`: {e}"));
                }
            }
        }
        *PROGRAMS.lock().unwrap_or_else(|p| p.into_inner()) = programs;
        Ok(Inherited {
            from_pid: self.from_pid,
            api,
            metrics,
            locks,
            workers: inherited_workers,
            pods: self.pods.clone(),
            began: None,
            parked: Some(parked),
        })
    }
}
