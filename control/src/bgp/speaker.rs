//! The BGP speaker's I/O: TCP connections, the Loc-RIB, and what it reports.
//!
//! One task owns every [`Session`] and the Loc-RIB; connections have a
//! reader task (framing with `message::frame`, so a bad header is answered
//! before the body is awaited) and a writer task. Events reach the owner
//! over one channel, so sessions see them in order and need no locks.
//!
//! Invariants:
//! - The Loc-RIB holds the best path per prefix over every session's
//!   Adj-RIB-In; only prefixes whose best path changed are sent to the
//!   agent ([`RibEvent::Changed`]), batched over whatever arrived at once.
//! - [`RibEvent::Converged`] is sent once, when every peer's End-of-RIB has
//!   arrived or the deferral time (RFC 4724's selection deferral) ran out;
//!   until then the agent removes no route, so a restarted agent changes
//!   nothing in sluiced that its peers still announce.
//! - A connection from an address that is not a configured peer is closed
//!   at once; a peer's errors end only its own session.
//! - When the agent drops its handle (it is stopping) the speaker ends
//!   without a NOTIFICATION: to its peers that is a restart, and they keep
//!   this node's routes for the restart time (RFC 4724).

use super::message::{self, Notify};
use super::rib::{self, Best, Candidate};
use super::session::{Action, ConnId, Session, SessionConfig, State};
use super::BgpConfig;
use crate::status::{PeerKindLabel, PeerLabel, Status};
use serde::Serialize;
use sluice_api::Ipv4Net;
use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// What the agent learns from the speaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RibEvent {
    /// Best paths changed (`None`: no path any more).
    Changed(Vec<(Ipv4Net, Option<Best>)>),
    /// Initial convergence after the start (see the module docs).
    Converged,
}

/// What the agent asks of the speaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Announce exactly these prefixes (this node's blocks).
    Announce(Vec<Ipv4Net>),
    /// Ask every peer for its routes again (ROUTE-REFRESH).
    Refresh,
}

/// One peer as `/bgp` and `sluice-agent bgp peers` show it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct PeerStatus {
    /// Address.
    pub address: Ipv4Addr,
    /// AS.
    pub asn: u32,
    /// `ibgp` or `ebgp`.
    pub kind: String,
    /// Passive.
    pub passive: bool,
    /// RFC 4271 state.
    pub state: String,
    /// The peer's BGP identifier.
    pub router_id: Option<Ipv4Addr>,
    /// Negotiated hold time.
    pub hold_time: Option<u16>,
    /// Seconds Established.
    pub uptime_seconds: Option<u64>,
    /// Prefixes in its Adj-RIB-In.
    pub prefixes_received: usize,
    /// Of which kept stale through its restart.
    pub prefixes_stale: usize,
    /// Prefixes whose best path is its.
    pub prefixes_best: usize,
    /// Its End-of-RIB arrived in this session.
    pub end_of_rib: bool,
    /// Times it left Established.
    pub flaps: u64,
    /// The last error or reason it went down.
    pub last_error: String,
    /// Messages received by type.
    pub received: BTreeMap<String, u64>,
    /// Messages sent by type.
    pub sent: BTreeMap<String, u64>,
}

/// The speaker as `/bgp` shows it.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct BgpStatus {
    /// Local AS.
    pub asn: u32,
    /// BGP identifier.
    pub router_id: Option<Ipv4Addr>,
    /// Listening on.
    pub listen: Option<String>,
    /// This node's announced prefixes.
    pub announced: Vec<String>,
    /// Initial convergence reached.
    pub converged: bool,
    /// Prefixes in the Loc-RIB.
    pub best_routes: usize,
    /// Peers.
    pub peers: Vec<PeerStatus>,
}

/// The handle the agent keeps.
#[derive(Debug, Clone)]
pub struct SpeakerHandle {
    cmd: mpsc::UnboundedSender<Command>,
    /// Where it listens.
    pub listening: Option<SocketAddr>,
}

impl SpeakerHandle {
    /// Sends a command (ignored once the speaker has stopped).
    pub fn send(&self, c: Command) {
        let _ = self.cmd.send(c);
    }
}

enum Io {
    Connected(usize, ConnId, TcpStream),
    ConnectFailed(usize, ConnId, String),
    Message(ConnId, Vec<u8>),
    HeaderError(ConnId, Notify),
    Closed(ConnId, String),
}

enum Out {
    Bytes(Vec<u8>),
    Close,
}

struct ConnIo {
    session: usize,
    writer: mpsc::UnboundedSender<Out>,
    reader: tokio::task::JoinHandle<()>,
}

/// Connection ids of inbound connections start here (outbound ones are
/// `(session + 1) << 32` plus a count).
const INBOUND_BASE: u64 = 1 << 60;
/// A TCP connect gives up after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Events handled before the Loc-RIB changes are sent on.
const BATCH: usize = 1024;

struct Speaker {
    cfg: BgpConfig,
    router_id: Ipv4Addr,
    sessions: Vec<Session>,
    conns: HashMap<ConnId, ConnIo>,
    next_inbound: u64,
    io_tx: mpsc::UnboundedSender<Io>,
    loc_rib: HashMap<Ipv4Net, Best>,
    best_count: HashMap<Ipv4Addr, usize>,
    pending: Vec<Ipv4Net>,
    announced: Vec<Ipv4Net>,
    converge_at: Instant,
    converged: bool,
    events: mpsc::Sender<RibEvent>,
    status: Arc<Status>,
    published: HashMap<(usize, String, String), u64>,
    listening: Option<SocketAddr>,
}

/// Starts the speaker: binds the listener (when configured) and starts
/// every session. `router_id` and `next_hop` default to the node's address.
pub async fn start(
    cfg: BgpConfig,
    router_id: Ipv4Addr,
    next_hop: Ipv4Addr,
    status: Arc<Status>,
) -> std::io::Result<(SpeakerHandle, mpsc::Receiver<RibEvent>)> {
    let listener = match cfg.listen {
        Some((ip, port)) => Some(TcpListener::bind((ip, port)).await?),
        None => None,
    };
    let listening = listener.as_ref().and_then(|l| l.local_addr().ok());
    let (io_tx, io_rx) = mpsc::unbounded_channel();
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::channel(64);
    let now = Instant::now();
    let sessions = cfg
        .peers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            Session::new(
                SessionConfig {
                    peer: p.address,
                    peer_asn: p.asn,
                    passive: p.passive,
                    local_asn: cfg.asn,
                    router_id,
                    next_hop,
                    hold_time: cfg.hold_time,
                    connect_retry: cfg.connect_retry,
                    restart_time: cfg.restart_time,
                },
                (i as u64 + 1) << 32,
            )
        })
        .collect();
    let mut s = Speaker {
        converge_at: now + cfg.deferral,
        cfg,
        router_id,
        sessions,
        conns: HashMap::new(),
        next_inbound: INBOUND_BASE,
        io_tx,
        loc_rib: HashMap::new(),
        best_count: HashMap::new(),
        pending: Vec::new(),
        announced: Vec::new(),
        converged: false,
        events: ev_tx,
        status,
        published: HashMap::new(),
        listening,
    };
    info!(asn = s.cfg.asn, %router_id, listen = ?listening, peers = s.sessions.len(), "BGP speaker started");
    for i in 0..s.sessions.len() {
        let a = s.sessions[i].start(now);
        s.apply(i, a);
    }
    tokio::spawn(s.run(listener, io_rx, cmd_rx));
    Ok((
        SpeakerHandle {
            cmd: cmd_tx,
            listening,
        },
        ev_rx,
    ))
}

impl Speaker {
    async fn run(
        mut self,
        listener: Option<TcpListener>,
        mut io_rx: mpsc::UnboundedReceiver<Io>,
        mut cmd_rx: mpsc::UnboundedReceiver<Command>,
    ) {
        self.publish();
        loop {
            let deadline = self
                .sessions
                .iter()
                .filter_map(Session::next_deadline)
                .chain((!self.converged).then_some(self.converge_at))
                .min()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                ev = io_rx.recv() => {
                    let Some(ev) = ev else { return };
                    self.handle(ev);
                    let mut n = 1;
                    while n < BATCH {
                        match io_rx.try_recv() {
                            Ok(ev) => self.handle(ev),
                            Err(_) => break,
                        }
                        n += 1;
                    }
                }
                cmd = cmd_rx.recv() => match cmd {
                    // The agent is going (SIGTERM, an upgrade): connections
                    // close without a NOTIFICATION, so peers keep this
                    // node's routes through its graceful restart.
                    None => return,
                    Some(Command::Announce(p)) => {
                        self.announced = p;
                        for i in 0..self.sessions.len() {
                            let a = self.sessions[i].set_announced(&self.announced);
                            self.apply(i, a);
                        }
                    }
                    Some(Command::Refresh) => {
                        for i in 0..self.sessions.len() {
                            let a = self.sessions[i].refresh();
                            self.apply(i, a);
                        }
                    }
                },
                acc = async {
                    match &listener {
                        Some(l) => l.accept().await,
                        None => std::future::pending().await,
                    }
                } => match acc {
                    Ok((stream, from)) => self.inbound(stream, from),
                    Err(e) => {
                        warn!("BGP accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = tokio::time::sleep_until(deadline.into()) => {
                    let now = Instant::now();
                    for i in 0..self.sessions.len() {
                        let a = self.sessions[i].on_timer(now);
                        self.apply(i, a);
                    }
                }
            }
            self.settle().await;
        }
    }

    fn inbound(&mut self, stream: TcpStream, from: SocketAddr) {
        let ip = match from.ip() {
            std::net::IpAddr::V4(v) => v,
            std::net::IpAddr::V6(v) => v.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
        };
        let Some(i) = self.sessions.iter().position(|s| s.config().peer == ip) else {
            warn!(%from, "BGP connection from an address that is not a configured peer; closed");
            self.status.metrics.bgp_rejected.inc();
            return;
        };
        self.next_inbound += 1;
        let id = self.next_inbound;
        self.attach(i, id, stream);
        let a = self.sessions[i].connected(id, false, Instant::now());
        self.apply(i, a);
    }

    fn attach(&mut self, session: usize, id: ConnId, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = stream.into_split();
        let (wtx, mut wrx) = mpsc::unbounded_channel::<Out>();
        tokio::spawn(async move {
            while let Some(o) = wrx.recv().await {
                match o {
                    Out::Bytes(b) => {
                        if wr.write_all(&b).await.is_err() {
                            break;
                        }
                    }
                    Out::Close => break,
                }
            }
            let _ = wr.shutdown().await;
        });
        let tx = self.io_tx.clone();
        let reader = tokio::spawn(async move {
            let mut buf: Vec<u8> = Vec::with_capacity(8192);
            let mut chunk = vec![0u8; 65536];
            loop {
                // Hand on every whole message in the buffer.
                loop {
                    match message::frame(&buf) {
                        Ok(Some(len)) if buf.len() >= len => {
                            let rest = buf.split_off(len);
                            let msg = std::mem::replace(&mut buf, rest);
                            if tx.send(Io::Message(id, msg)).is_err() {
                                return;
                            }
                        }
                        Ok(_) => break,
                        Err(n) => {
                            let _ = tx.send(Io::HeaderError(id, n));
                            return;
                        }
                    }
                }
                match rd.read(&mut chunk).await {
                    Ok(0) => {
                        let why = if buf.is_empty() {
                            "closed by the peer".to_string()
                        } else {
                            format!(
                                "closed by the peer inside a message ({} bytes of it)",
                                buf.len()
                            )
                        };
                        let _ = tx.send(Io::Closed(id, why));
                        return;
                    }
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) => {
                        let _ = tx.send(Io::Closed(id, e.to_string()));
                        return;
                    }
                }
            }
        });
        self.conns.insert(
            id,
            ConnIo {
                session,
                writer: wtx,
                reader,
            },
        );
    }

    fn handle(&mut self, ev: Io) {
        let now = Instant::now();
        match ev {
            Io::Connected(i, id, stream) => {
                self.attach(i, id, stream);
                let a = self.sessions[i].connected(id, true, now);
                self.apply(i, a);
            }
            Io::ConnectFailed(i, id, why) => {
                debug!(peer = %self.sessions[i].config().peer, "BGP connect: {why}");
                let a = self.sessions[i].connect_failed(id, &why, now);
                self.apply(i, a);
            }
            Io::Message(id, bytes) => {
                if let Some(i) = self.conns.get(&id).map(|c| c.session) {
                    let a = self.sessions[i].received(id, &bytes, now);
                    self.apply(i, a);
                }
            }
            Io::HeaderError(id, n) => {
                if let Some(i) = self.conns.get(&id).map(|c| c.session) {
                    let a = self.sessions[i].header_error(id, n, now);
                    self.apply(i, a);
                }
            }
            Io::Closed(id, why) => {
                if let Some(i) = self.conns.get(&id).map(|c| c.session) {
                    let a = self.sessions[i].closed(id, &why, now);
                    self.apply(i, a);
                }
            }
        }
    }

    fn apply(&mut self, i: usize, actions: Vec<Action>) {
        let peer = self.sessions[i].config().peer;
        for a in actions {
            match a {
                Action::Connect(id) => {
                    let port = self.cfg.peers[i].port;
                    let tx = self.io_tx.clone();
                    // A specific listen address is also the source of our
                    // connections (Calico's `source address`): the peer
                    // knows us by it.
                    let source = self
                        .cfg
                        .listen
                        .map(|(ip, _)| ip)
                        .filter(|ip| !ip.is_unspecified());
                    tokio::spawn(async move {
                        let connect = async move {
                            let sock = tokio::net::TcpSocket::new_v4()?;
                            if let Some(ip) = source {
                                sock.bind(SocketAddr::from((ip, 0)))?;
                            }
                            sock.connect(SocketAddr::from((peer, port))).await
                        };
                        let r = tokio::time::timeout(CONNECT_TIMEOUT, connect).await;
                        let _ = match r {
                            Ok(Ok(s)) => tx.send(Io::Connected(i, id, s)),
                            Ok(Err(e)) => tx.send(Io::ConnectFailed(i, id, e.to_string())),
                            Err(_) => tx.send(Io::ConnectFailed(i, id, "timed out".into())),
                        };
                    });
                }
                Action::Send(id, bytes) => {
                    if let Some(c) = self.conns.get(&id) {
                        let _ = c.writer.send(Out::Bytes(bytes));
                    }
                }
                Action::Close(id) => {
                    if let Some(c) = self.conns.remove(&id) {
                        let _ = c.writer.send(Out::Close);
                        c.reader.abort();
                    }
                }
                Action::Changed(p) => self.pending.extend(p),
                Action::Up => {
                    let s = &self.sessions[i];
                    info!(%peer, router_id = ?s.peer_router_id(), hold = ?s.hold_time(), "BGP session Established");
                }
                Action::Down { reason, graceful } => {
                    if graceful {
                        info!(%peer, "BGP session down: {reason}; its routes are kept as stale (graceful restart)");
                    } else {
                        warn!(%peer, "BGP session down: {reason}");
                    }
                }
                Action::EndOfRib => {
                    let (n, _) = self.sessions[i].prefix_counts();
                    info!(%peer, prefixes = n, "BGP End-of-RIB received");
                }
            }
        }
    }

    /// Recomputes the best path of every pending prefix and sends the
    /// changes on; signals convergence.
    async fn settle(&mut self) {
        let mut changed = Vec::new();
        if !self.pending.is_empty() {
            let mut pending = std::mem::take(&mut self.pending);
            pending.sort_unstable();
            pending.dedup();
            for p in pending {
                let best = rib::best(self.sessions.iter().filter_map(|s| {
                    let path = s.adj_in().get(&p)?;
                    Some(Candidate {
                        attrs: &path.attrs,
                        ibgp: s.ibgp(),
                        stale: path.stale,
                        peer_router_id: s.peer_router_id().unwrap_or(s.config().peer),
                        peer: s.config().peer,
                    })
                }));
                let old = match best {
                    Some(b) => self.loc_rib.insert(p, b),
                    None => self.loc_rib.remove(&p),
                };
                if old != best {
                    if let Some(o) = old {
                        if let Some(c) = self.best_count.get_mut(&o.peer) {
                            *c = c.saturating_sub(1);
                        }
                    }
                    if let Some(b) = best {
                        *self.best_count.entry(b.peer).or_default() += 1;
                    }
                    changed.push((p, best));
                }
            }
        }
        let mut converged_now = false;
        if !self.converged {
            let all_in = self
                .sessions
                .iter()
                .all(|s| s.state() == State::Established && s.eor_received);
            if all_in || Instant::now() >= self.converge_at {
                self.converged = true;
                converged_now = true;
                info!(
                    routes = self.loc_rib.len(),
                    by_end_of_rib = all_in,
                    "BGP converged after the start: route removals may proceed"
                );
            }
        }
        // What `/bgp` shows is current before anyone hears of a change.
        self.publish();
        if !changed.is_empty() && self.events.send(RibEvent::Changed(changed)).await.is_err() {
            return;
        }
        if converged_now {
            let _ = self.events.send(RibEvent::Converged).await;
        }
    }

    fn publish(&mut self) {
        let now = Instant::now();
        let m = &self.status.metrics;
        let mut peers = Vec::with_capacity(self.sessions.len());
        for (i, s) in self.sessions.iter().enumerate() {
            let c = s.config();
            let label = PeerLabel {
                peer: c.peer.to_string(),
            };
            let (rx, stale) = s.prefix_counts();
            let best = self.best_count.get(&c.peer).copied().unwrap_or(0);
            m.bgp_state.get_or_create(&label).set(s.state().number());
            m.bgp_prefixes_received.get_or_create(&label).set(rx as i64);
            m.bgp_prefixes_stale.get_or_create(&label).set(stale as i64);
            m.bgp_prefixes_best.get_or_create(&label).set(best as i64);
            let k = &s.counters;
            let mut bump = |family: &str, kind: &str, total: u64| {
                let key = (i, family.to_string(), kind.to_string());
                let last = self.published.entry(key).or_default();
                if total > *last {
                    let l = PeerKindLabel {
                        peer: c.peer.to_string(),
                        kind: kind.to_string(),
                    };
                    let f = match family {
                        "rx" => &m.bgp_received,
                        "tx" => &m.bgp_sent,
                        "nrx" => &m.bgp_notifications_received,
                        "ntx" => &m.bgp_notifications_sent,
                        _ => &m.bgp_flaps,
                    };
                    f.get_or_create(&l).inc_by(total - *last);
                    *last = total;
                }
            };
            for (kind, n) in &k.received {
                bump("rx", kind, *n);
            }
            for (kind, n) in &k.sent {
                bump("tx", kind, *n);
            }
            for (code, n) in &k.notifications_received {
                bump("nrx", code, *n);
            }
            for (code, n) in &k.notifications_sent {
                bump("ntx", code, *n);
            }
            bump("flaps", "", k.flaps);
            peers.push(PeerStatus {
                address: c.peer,
                asn: c.peer_asn,
                kind: if s.ibgp() { "ibgp" } else { "ebgp" }.into(),
                passive: c.passive,
                state: s.state().name().into(),
                router_id: s.peer_router_id(),
                hold_time: s.hold_time(),
                uptime_seconds: s.established_at().map(|t| now.duration_since(t).as_secs()),
                prefixes_received: rx,
                prefixes_stale: stale,
                prefixes_best: best,
                end_of_rib: s.eor_received,
                flaps: k.flaps,
                last_error: s.last_error.clone(),
                received: k
                    .received
                    .iter()
                    .map(|(a, b)| (a.to_string(), *b))
                    .collect(),
                sent: k.sent.iter().map(|(a, b)| (a.to_string(), *b)).collect(),
            });
        }
        m.bgp_best_routes.set(self.loc_rib.len() as i64);
        let st = BgpStatus {
            asn: self.cfg.asn,
            router_id: Some(self.router_id),
            listen: self.listening.map(|a| a.to_string()),
            announced: self.announced.iter().map(|p| p.to_string()).collect(),
            converged: self.converged,
            best_routes: self.loc_rib.len(),
            peers,
        };
        self.status.set_bgp(st);
    }
}
