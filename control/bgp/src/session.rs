//! One peer's BGP session: the RFC 4271 state machine, without I/O.
//!
//! The session is fed events (a TCP connection made or lost, a message's
//! bytes, the time) and answers with [`Action`]s (connect, send, close,
//! these prefixes' paths changed, the session went up or down). The
//! speaker (`bgp::speaker`) does the I/O; tests drive sessions with bytes
//! alone, as boringtun drives its tunnels.
//!
//! States, as RFC 4271 §8 names them: `Idle` (stopped), `Connect` (an
//! outgoing connection is being made), `Active` (waiting for the peer to
//! connect, or for the connect-retry timer), then per connection
//! `OpenSent`, `OpenConfirm`, `Established`.
//!
//! Invariants:
//! - At most two connections exist at once (ours and the peer's) and only
//!   until collision detection (§6.8) keeps one: the connection opened by
//!   the speaker with the higher BGP identifier survives; the other gets
//!   NOTIFICATION 6/7. A connection arriving while one is Established is
//!   refused with 6/7.
//! - Every error closes only its own connection, after the NOTIFICATION
//!   the RFC names; the session then waits `connect_retry` and tries again.
//!   Nothing here panics on any input.
//! - The Adj-RIB-In holds the peer's latest path per prefix. When it
//!   changes, the prefixes are reported in [`Action::Changed`], and only
//!   then.
//! - Graceful restart (RFC 4724), as helper: when the TCP connection of a
//!   session whose peer advertised graceful restart for IPv4 unicast is
//!   lost without a NOTIFICATION, its routes are kept, marked stale, for
//!   the peer's restart time. If the peer comes back with forwarding
//!   preserved (F), or without having restarted (R clear: only the session
//!   flapped), the stale routes stay until its End-of-RIB (at most 120 s
//!   after it is back) and then only those it did not announce again go;
//!   if it restarted without keeping forwarding state, or no longer lists
//!   IPv4 unicast for graceful restart, they go at once.
//! - As restarting speaker: the first OPEN after the process starts sets
//!   R (restarted) and F (sluiced kept forwarding), and the session sends
//!   its routes then End-of-RIB once Established.

use crate::message::{
    self, decode, Attrs, Encoder, GracefulRestart, LocalOpen, Message, Notify, Open,
};
use sluice_api::Ipv4Net;
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A connection's identity, given by the speaker.
pub type ConnId = u64;

/// The session's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum State {
    /// Stopped.
    Idle,
    /// Making an outgoing connection.
    Connect,
    /// Waiting for the peer's connection or the retry timer.
    Active,
    /// OPEN sent, waiting for the peer's.
    OpenSent,
    /// OPENs exchanged, waiting for KEEPALIVE.
    OpenConfirm,
    /// Up.
    Established,
}

impl State {
    /// The RFC's name.
    pub fn name(self) -> &'static str {
        match self {
            State::Idle => "Idle",
            State::Connect => "Connect",
            State::Active => "Active",
            State::OpenSent => "OpenSent",
            State::OpenConfirm => "OpenConfirm",
            State::Established => "Established",
        }
    }
    /// A number for the state gauge (RFC 4273's order, 1 to 6).
    pub fn number(self) -> i64 {
        self as i64 + 1
    }
}

/// What the session's configuration says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// The peer's address.
    pub peer: Ipv4Addr,
    /// The peer's AS.
    pub peer_asn: u32,
    /// Wait for the peer to connect; never connect.
    pub passive: bool,
    /// Local AS.
    pub local_asn: u32,
    /// BGP identifier.
    pub router_id: Ipv4Addr,
    /// NEXT_HOP of the routes announced.
    pub next_hop: Ipv4Addr,
    /// Proposed hold time (0, or 3 and more).
    pub hold_time: u16,
    /// Wait between connection attempts.
    pub connect_retry: Duration,
    /// Graceful restart: the restart time announced (`None`: off).
    pub restart_time: Option<u16>,
}

/// The peer's latest path for one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathIn {
    /// Its attributes (shared by every prefix of one UPDATE).
    pub attrs: Arc<Attrs>,
    /// Kept through the peer's restart, not yet announced again.
    pub stale: bool,
}

/// What the speaker must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a TCP connection to the peer and report it as this id.
    Connect(ConnId),
    /// Write these bytes on the connection.
    Send(ConnId, Vec<u8>),
    /// Close the connection (after what was sent).
    Close(ConnId),
    /// The peer's paths to these prefixes changed.
    Changed(Vec<Ipv4Net>),
    /// The session is Established.
    Up,
    /// The session went down; `graceful`: its routes are kept as stale.
    Down {
        /// Why.
        reason: String,
        /// Routes kept (graceful restart).
        graceful: bool,
    },
    /// The peer's End-of-RIB arrived (its initial routes are all in).
    EndOfRib,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnState {
    OpenSent,
    OpenConfirm,
    Established,
}

#[derive(Debug)]
struct Conn {
    id: ConnId,
    outbound: bool,
    state: ConnState,
    peer: Option<Open>,
    hold: u16,
    hold_at: Option<Instant>,
    keepalive_at: Option<Instant>,
}

/// Counters a session keeps (for metrics and `sluice-agent bgp peers`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Messages received by kind.
    pub received: BTreeMap<&'static str, u64>,
    /// Messages sent by kind.
    pub sent: BTreeMap<&'static str, u64>,
    /// NOTIFICATIONs sent, by "code/subcode".
    pub notifications_sent: BTreeMap<String, u64>,
    /// NOTIFICATIONs received, by "code/subcode".
    pub notifications_received: BTreeMap<String, u64>,
    /// Times the session left Established.
    pub flaps: u64,
}

/// The initial hold time while OPENs are exchanged (RFC 4271 §8: "large").
const OPEN_HOLD: Duration = Duration::from_secs(240);
/// Stale routes are kept at most this long after the session is back.
const STALE_AFTER_UP: Duration = Duration::from_secs(120);

/// One peer's session.
#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    id_base: u64,
    next_conn: u64,
    running: bool,
    connecting: Option<ConnId>,
    connect_at: Option<Instant>,
    conns: Vec<Conn>,
    adj_in: HashMap<Ipv4Net, PathIn>,
    stale_until: Option<Instant>,
    peer_gr: Option<GracefulRestart>,
    restarted: bool,
    announced: Vec<Ipv4Net>,
    established_at: Option<Instant>,
    /// The last error or reason for going down.
    pub last_error: String,
    /// Counters.
    pub counters: Counters,
    /// The peer's End-of-RIB arrived in the current session.
    pub eor_received: bool,
}

impl Session {
    /// A stopped session; connection ids start at `id_base`.
    pub fn new(cfg: SessionConfig, id_base: u64) -> Self {
        Session {
            cfg,
            id_base,
            next_conn: 0,
            running: false,
            connecting: None,
            connect_at: None,
            conns: Vec::new(),
            adj_in: HashMap::new(),
            stale_until: None,
            peer_gr: None,
            restarted: true,
            announced: Vec::new(),
            established_at: None,
            last_error: String::new(),
            counters: Counters::default(),
            eor_received: false,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    /// The state (the most advanced connection's, else Idle/Connect/Active).
    pub fn state(&self) -> State {
        match self.conns.iter().map(|c| c.state).max_by_key(|s| *s as u8) {
            Some(ConnState::Established) => State::Established,
            Some(ConnState::OpenConfirm) => State::OpenConfirm,
            Some(ConnState::OpenSent) => State::OpenSent,
            None if !self.running => State::Idle,
            None if self.connecting.is_some() => State::Connect,
            None => State::Active,
        }
    }

    /// The peer's OPEN in the established session.
    pub fn peer_open(&self) -> Option<&Open> {
        self.established().and_then(|c| c.peer.as_ref())
    }

    /// The peer's BGP identifier (last known).
    pub fn peer_router_id(&self) -> Option<Ipv4Addr> {
        self.conns
            .iter()
            .find_map(|c| c.peer.as_ref().map(|o| o.router_id))
    }

    /// iBGP (same AS).
    pub fn ibgp(&self) -> bool {
        self.cfg.peer_asn == self.cfg.local_asn
    }

    /// The negotiated hold time while Established.
    pub fn hold_time(&self) -> Option<u16> {
        self.established().map(|c| c.hold)
    }

    /// Since when the session is Established.
    pub fn established_at(&self) -> Option<Instant> {
        self.established_at
    }

    /// The Adj-RIB-In.
    pub fn adj_in(&self) -> &HashMap<Ipv4Net, PathIn> {
        &self.adj_in
    }

    /// Prefixes received and stale.
    pub fn prefix_counts(&self) -> (usize, usize) {
        (
            self.adj_in.len(),
            self.adj_in.values().filter(|p| p.stale).count(),
        )
    }

    fn established(&self) -> Option<&Conn> {
        self.conns
            .iter()
            .find(|c| c.state == ConnState::Established)
    }

    fn new_id(&mut self) -> ConnId {
        self.next_conn += 1;
        self.id_base + self.next_conn
    }

    /// The earliest time [`Session::on_timer`] has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut take = |d: Option<Instant>| {
            if let Some(d) = d {
                t = Some(t.map_or(d, |x| x.min(d)));
            }
        };
        take(self.connect_at);
        take(self.stale_until);
        for c in &self.conns {
            take(c.hold_at);
            take(c.keepalive_at);
        }
        t
    }

    /// Starts the session: connects now unless passive.
    pub fn start(&mut self, now: Instant) -> Vec<Action> {
        self.running = true;
        if self.cfg.passive {
            return vec![];
        }
        self.connect_at = Some(now);
        self.on_timer(now)
    }

    /// Stops: NOTIFICATION 6/2 on every connection, routes withdrawn.
    pub fn stop(&mut self, now: Instant) -> Vec<Action> {
        self.running = false;
        self.connect_at = None;
        self.connecting = None;
        let mut out = Vec::new();
        for id in self.conns.iter().map(|c| c.id).collect::<Vec<_>>() {
            self.fail(id, Notify::shutdown(), now, &mut out);
        }
        self.flush_all(&mut out);
        out
    }

    /// This node's routes changed: announce and withdraw the difference.
    pub fn set_announced(&mut self, routes: &[Ipv4Net]) -> Vec<Action> {
        let old: std::collections::BTreeSet<_> = self.announced.iter().copied().collect();
        let new: std::collections::BTreeSet<_> = routes.iter().copied().collect();
        self.announced = new.iter().copied().collect();
        let mut out = Vec::new();
        if let Some(c) = self.established() {
            let id = c.id;
            let enc = self.encoder(c);
            let gone: Vec<_> = old.difference(&new).copied().collect();
            let added: Vec<_> = new.difference(&old).copied().collect();
            for m in enc.withdraw(&gone).into_iter().chain(enc.announce(&added)) {
                self.send(id, m, "update", &mut out);
            }
        }
        out
    }

    fn encoder(&self, c: &Conn) -> Encoder {
        Encoder {
            local_asn: self.cfg.local_asn,
            ibgp: self.ibgp(),
            asn4: c.peer.as_ref().is_some_and(|o| o.asn4),
            next_hop: self.cfg.next_hop,
        }
    }

    fn send(&mut self, id: ConnId, bytes: Vec<u8>, kind: &'static str, out: &mut Vec<Action>) {
        *self.counters.sent.entry(kind).or_default() += 1;
        out.push(Action::Send(id, bytes));
    }

    fn local_open(&self) -> LocalOpen {
        LocalOpen {
            asn: self.cfg.local_asn,
            hold_time: self.cfg.hold_time,
            router_id: self.cfg.router_id,
            graceful_restart: self.cfg.restart_time.map(|time| GracefulRestart {
                restarting: self.restarted,
                time,
                ipv4_forwarding: Some(true),
            }),
        }
    }

    /// A TCP connection is up: ours (`outbound`, the id from
    /// [`Action::Connect`]) or the peer's.
    pub fn connected(&mut self, id: ConnId, outbound: bool, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if outbound {
            if self.connecting != Some(id) {
                out.push(Action::Close(id));
                return out;
            }
            self.connecting = None;
        }
        if !self.running || self.established().is_some() || self.conns.len() >= 2 {
            let why = if self.running {
                Notify::collision()
            } else {
                Notify::new(6, 5, [])
            };
            self.note_sent(&why);
            out.push(Action::Send(id, message::encode_notification(&why)));
            out.push(Action::Close(id));
            return out;
        }
        self.connect_at = None;
        self.conns.push(Conn {
            id,
            outbound,
            state: ConnState::OpenSent,
            peer: None,
            hold: 0,
            hold_at: Some(now + OPEN_HOLD),
            keepalive_at: None,
        });
        let open = message::encode_open(&self.local_open());
        self.send(id, open, "open", &mut out);
        out
    }

    /// The reader found a bad message header on `id` (`message::frame`).
    pub fn header_error(&mut self, id: ConnId, n: Notify, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.conns.iter().any(|c| c.id == id) {
            *self.counters.received.entry("malformed").or_default() += 1;
            self.fail(id, n, now, &mut out);
        }
        out
    }

    /// Our connection attempt failed.
    pub fn connect_failed(&mut self, id: ConnId, why: &str, now: Instant) -> Vec<Action> {
        if self.connecting == Some(id) {
            self.connecting = None;
            self.last_error = format!("connecting: {why}");
            if self.running && self.conns.is_empty() {
                self.connect_at = Some(now + self.cfg.connect_retry);
            }
        }
        vec![]
    }

    /// The connection closed (EOF or error) without a NOTIFICATION.
    pub fn closed(&mut self, id: ConnId, why: &str, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.conns.iter().any(|c| c.id == id) {
            self.drop_conn(id, format!("connection lost: {why}"), true, now, &mut out);
        }
        out
    }

    fn note_sent(&mut self, n: &Notify) {
        *self
            .counters
            .notifications_sent
            .entry(format!("{}/{}", n.code, n.subcode))
            .or_default() += 1;
        *self.counters.sent.entry("notification").or_default() += 1;
    }

    /// Sends `n` on `id`, closes it (an error of ours or theirs).
    fn fail(&mut self, id: ConnId, n: Notify, now: Instant, out: &mut Vec<Action>) {
        self.note_sent(&n);
        out.push(Action::Send(id, message::encode_notification(&n)));
        self.drop_conn(id, format!("sent NOTIFICATION {n}"), false, now, out);
    }

    fn drop_conn(
        &mut self,
        id: ConnId,
        reason: String,
        graceful_ok: bool,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(i) = self.conns.iter().position(|c| c.id == id) else {
            return;
        };
        let c = self.conns.remove(i);
        out.push(Action::Close(id));
        self.last_error = reason.clone();
        if c.state == ConnState::Established {
            self.counters.flaps += 1;
            self.established_at = None;
            self.eor_received = false;
            let gr = graceful_ok
                && self.peer_gr.is_some_and(|g| {
                    g.ipv4_forwarding.is_some() && self.cfg.restart_time.is_some()
                });
            if gr && !self.adj_in.is_empty() {
                for p in self.adj_in.values_mut() {
                    p.stale = true;
                }
                let t = self.peer_gr.map_or(0, |g| g.time);
                self.stale_until = Some(now + Duration::from_secs(u64::from(t)));
            } else {
                self.flush_all(out);
            }
            out.push(Action::Down {
                reason,
                graceful: gr,
            });
        }
        if self.running && self.conns.is_empty() && !self.cfg.passive {
            self.connect_at = Some(now + self.cfg.connect_retry);
        }
    }

    fn flush_all(&mut self, out: &mut Vec<Action>) {
        self.stale_until = None;
        if !self.adj_in.is_empty() {
            let gone: Vec<_> = self.adj_in.drain().map(|(p, _)| p).collect();
            out.push(Action::Changed(gone));
        }
    }

    fn flush_stale(&mut self, out: &mut Vec<Action>) {
        self.stale_until = None;
        let gone: Vec<_> = self
            .adj_in
            .iter()
            .filter(|(_, p)| p.stale)
            .map(|(k, _)| *k)
            .collect();
        for p in &gone {
            self.adj_in.remove(p);
        }
        if !gone.is_empty() {
            out.push(Action::Changed(gone));
        }
    }

    /// Timers due at `now`: connect retry, hold, keepalive, stale routes.
    pub fn on_timer(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.connect_at.is_some_and(|t| t <= now) {
            self.connect_at = None;
            if self.running && self.conns.is_empty() && self.connecting.is_none() {
                let id = self.new_id();
                self.connecting = Some(id);
                out.push(Action::Connect(id));
            }
        }
        if self.stale_until.is_some_and(|t| t <= now) {
            self.flush_stale(&mut out);
        }
        let expired: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|c| c.hold_at.is_some_and(|t| t <= now))
            .map(|c| c.id)
            .collect();
        for id in expired {
            self.fail(id, Notify::hold_timer_expired(), now, &mut out);
        }
        let due: Vec<(ConnId, u16)> = self
            .conns
            .iter()
            .filter(|c| c.keepalive_at.is_some_and(|t| t <= now))
            .map(|c| (c.id, c.hold))
            .collect();
        for (id, hold) in due {
            self.send(id, message::encode_keepalive(), "keepalive", &mut out);
            if let Some(c) = self.conns.iter_mut().find(|c| c.id == id) {
                c.keepalive_at = Some(now + keepalive_interval(hold));
            }
        }
        out
    }

    /// One whole message (as `message::frame` delimited it) arrived on `id`.
    pub fn received(&mut self, id: ConnId, bytes: &[u8], now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(i) = self.conns.iter().position(|c| c.id == id) else {
            return out;
        };
        let asn4 = self.conns[i].peer.as_ref().is_some_and(|o| o.asn4);
        let msg = match decode(bytes, asn4) {
            Ok(m) => m,
            Err(n) => {
                *self.counters.received.entry("malformed").or_default() += 1;
                self.fail(id, n, now, &mut out);
                return out;
            }
        };
        *self.counters.received.entry(msg.kind()).or_default() += 1;
        // Any message resets the hold timer once it is negotiated.
        let c = &mut self.conns[i];
        if c.state != ConnState::OpenSent && c.hold > 0 {
            c.hold_at = Some(now + Duration::from_secs(u64::from(c.hold)));
        }
        match (c.state, msg) {
            (_, Message::Notification(n)) => {
                *self
                    .counters
                    .notifications_received
                    .entry(format!("{}/{}", n.code, n.subcode))
                    .or_default() += 1;
                self.drop_conn(
                    id,
                    format!("received NOTIFICATION {n}"),
                    false,
                    now,
                    &mut out,
                );
            }
            (ConnState::OpenSent, Message::Open(o)) => self.take_open(id, o, now, &mut out),
            (ConnState::OpenConfirm, Message::Keepalive) => self.establish(id, now, &mut out),
            (ConnState::Established, Message::Keepalive) => {}
            (ConnState::Established, Message::Update(u)) => self.take_update(u, &mut out),
            (ConnState::Established, Message::RouteRefresh(afi, safi)) => {
                if (afi, safi) == (1, 1) {
                    self.send_routes(id, &mut out);
                }
            }
            (ConnState::OpenSent, _) => self.fail(id, Notify::fsm(1), now, &mut out),
            (ConnState::OpenConfirm, _) => self.fail(id, Notify::fsm(2), now, &mut out),
            (ConnState::Established, Message::Open(_)) => {
                self.fail(id, Notify::fsm(3), now, &mut out)
            }
        }
        out
    }

    fn take_open(&mut self, id: ConnId, o: Open, now: Instant, out: &mut Vec<Action>) {
        if o.asn != self.cfg.peer_asn {
            let data = o.my_as.to_be_bytes();
            return self.fail(id, Notify::new(2, 2, data), now, out);
        }
        if o.router_id.is_unspecified() || (self.ibgp() && o.router_id == self.cfg.router_id) {
            return self.fail(id, Notify::new(2, 3, o.router_id.octets()), now, out);
        }
        if o.hold_time == 1 || o.hold_time == 2 {
            return self.fail(id, Notify::new(2, 6, o.hold_time.to_be_bytes()), now, out);
        }
        if !o.ipv4_unicast() {
            // Capability 1 (MP) for AFI 1 / SAFI 1: what sluice needs.
            return self.fail(id, Notify::new(2, 7, [1, 4, 0, 1, 0, 1]), now, out);
        }
        let hold = self.cfg.hold_time.min(o.hold_time);
        // Collision (§6.8): another connection past OpenSent, or in
        // OpenSent, to the same peer. Keep the one opened by the higher id.
        if let Some(other) = self
            .conns
            .iter()
            .find(|c| c.id != id)
            .map(|c| (c.id, c.outbound))
        {
            let this_outbound = self
                .conns
                .iter()
                .find(|c| c.id == id)
                .is_some_and(|c| c.outbound);
            let keep_outbound = u32::from(self.cfg.router_id) > u32::from(o.router_id);
            if this_outbound != keep_outbound {
                return self.fail(id, Notify::collision(), now, out);
            }
            self.fail(other.0, Notify::collision(), now, out);
        }
        self.peer_gr = o.graceful_restart;
        let Some(c) = self.conns.iter_mut().find(|c| c.id == id) else {
            return;
        };
        c.peer = Some(o);
        c.state = ConnState::OpenConfirm;
        c.hold = hold;
        c.hold_at = (hold > 0).then(|| now + Duration::from_secs(u64::from(hold)));
        c.keepalive_at = (hold > 0).then(|| now + keepalive_interval(hold));
        self.send(id, message::encode_keepalive(), "keepalive", out);
    }

    fn establish(&mut self, id: ConnId, now: Instant, out: &mut Vec<Action>) {
        if let Some(c) = self.conns.iter_mut().find(|c| c.id == id) {
            c.state = ConnState::Established;
        }
        self.established_at = Some(now);
        self.last_error.clear();
        self.eor_received = false;
        self.restarted = false;
        if self.adj_in.values().any(|p| p.stale) {
            let keeps = self.peer_gr.is_some_and(stale_routes_survive);
            if keeps {
                self.stale_until = Some(now + STALE_AFTER_UP);
            } else {
                self.flush_stale(out);
            }
        }
        out.push(Action::Up);
        self.send_routes(id, out);
    }

    fn send_routes(&mut self, id: ConnId, out: &mut Vec<Action>) {
        let Some(c) = self.conns.iter().find(|c| c.id == id) else {
            return;
        };
        let enc = self.encoder(c);
        let routes = self.announced.clone();
        for m in enc.announce(&routes) {
            self.send(id, m, "update", out);
        }
        self.send(id, message::encode_end_of_rib(), "update", out);
    }

    fn take_update(&mut self, u: message::Update, out: &mut Vec<Action>) {
        if u.end_of_rib {
            self.eor_received = true;
            if self.adj_in.values().any(|p| p.stale) {
                self.flush_stale(out);
            }
            out.push(Action::EndOfRib);
            return;
        }
        let mut changed = Vec::with_capacity(u.withdrawn.len() + u.announced.len());
        for p in &u.withdrawn {
            if self.adj_in.remove(p).is_some() {
                changed.push(*p);
            }
        }
        if let Some(attrs) = u.attrs {
            // Loops (RFC 4271 §9.1.2, RFC 4456 §8): our own AS in the path
            // (whichever session brought it, as BIRD checks), our own id as
            // originator. Such paths are ignored, as a withdrawal.
            let looped = attrs.as_path.contains(&self.cfg.local_asn)
                || attrs.originator_id == Some(self.cfg.router_id);
            let attrs = Arc::new(attrs);
            for p in &u.announced {
                if looped {
                    if self.adj_in.remove(p).is_some() {
                        changed.push(*p);
                    }
                    continue;
                }
                let new = PathIn {
                    attrs: attrs.clone(),
                    stale: false,
                };
                if self.adj_in.insert(*p, new.clone()).as_ref() != Some(&new) {
                    changed.push(*p);
                }
            }
        }
        if !changed.is_empty() {
            out.push(Action::Changed(changed));
        }
    }

    /// Asks the peer to send its routes again (ROUTE-REFRESH), if it can.
    pub fn refresh(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(c) = self.established() {
            if c.peer.as_ref().is_some_and(|o| o.route_refresh) {
                let id = c.id;
                self.send(
                    id,
                    message::encode_route_refresh(),
                    "route_refresh",
                    &mut out,
                );
            }
        }
        out
    }
}

/// Whether a peer's stale routes stay through its new session, until its
/// End-of-RIB (or [`STALE_AFTER_UP`]), given the graceful restart
/// capability of its new OPEN.
///
/// RFC 4724 §4.2 has them go at once unless F (forwarding state kept) is
/// set. F answers for the peer's own restart: BIRD sets it (with R) only
/// while it recovers from one, so a peer that did not restart, whose
/// session only flapped (a reset connection, an expired hold time), says
/// F clear although its forwarding never stopped. Dropping its routes then
/// and learning them again from the UPDATEs a moment later would take the
/// route out of sluiced and lose the packets of that moment. So they stay
/// when F is set, or when R is clear; they go when the peer restarted (R)
/// without keeping its forwarding state, or does not list IPv4 unicast.
fn stale_routes_survive(g: GracefulRestart) -> bool {
    match g.ipv4_forwarding {
        Some(forwarding) => forwarding || !g.restarting,
        None => false,
    }
}

fn keepalive_interval(hold: u16) -> Duration {
    Duration::from_secs(u64::from((hold / 3).max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{encode_end_of_rib, encode_keepalive, encode_notification, encode_open};

    fn cfg(passive: bool) -> SessionConfig {
        SessionConfig {
            peer: Ipv4Addr::new(192, 168, 77, 3),
            peer_asn: 64512,
            passive,
            local_asn: 64512,
            router_id: Ipv4Addr::new(192, 168, 77, 1),
            next_hop: Ipv4Addr::new(192, 168, 77, 1),
            hold_time: 9,
            connect_retry: Duration::from_secs(3),
            restart_time: Some(120),
        }
    }

    fn peer_open(id: [u8; 4], gr: Option<GracefulRestart>) -> Vec<u8> {
        encode_open(&LocalOpen {
            asn: 64512,
            hold_time: 90,
            router_id: Ipv4Addr::from(id),
            graceful_restart: gr,
        })
    }

    const GR: Option<GracefulRestart> = Some(GracefulRestart {
        restarting: false,
        time: 60,
        ipv4_forwarding: Some(true),
    });

    fn sent(a: &[Action]) -> Vec<Message> {
        a.iter()
            .filter_map(|a| match a {
                Action::Send(_, b) => Some(decode(b, true).unwrap()),
                _ => None,
            })
            .collect()
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    /// An Established session over connection 1 (outbound).
    fn up(gr: Option<GracefulRestart>) -> (Session, Instant) {
        let t = Instant::now();
        let mut s = Session::new(cfg(false), 0);
        s.set_announced(&[net("10.77.1.0/24")]);
        let a = s.start(t);
        assert_eq!(a, vec![Action::Connect(1)]);
        assert_eq!(s.state(), State::Connect);
        let a = s.connected(1, true, t);
        let Message::Open(o) = &sent(&a)[0] else {
            panic!()
        };
        assert!(o.graceful_restart.unwrap().restarting, "first OPEN sets R");
        assert_eq!(s.state(), State::OpenSent);
        let a = s.received(1, &peer_open([192, 168, 77, 3], gr), t);
        assert_eq!(sent(&a), vec![Message::Keepalive]);
        assert_eq!(s.state(), State::OpenConfirm);
        assert_eq!(s.hold_time(), None);
        let a = s.received(1, &encode_keepalive(), t);
        assert_eq!(a[0], Action::Up);
        let msgs = sent(&a);
        let Message::Update(u) = &msgs[0] else {
            panic!()
        };
        assert_eq!(u.announced, vec![net("10.77.1.0/24")]);
        assert!(matches!(&msgs[1], Message::Update(u) if u.end_of_rib));
        assert_eq!(s.state(), State::Established);
        assert_eq!(s.hold_time(), Some(9));
        (s, t)
    }

    fn announce(p: &[&str], nh: [u8; 4]) -> Vec<u8> {
        let e = Encoder {
            local_asn: 64512,
            ibgp: true,
            asn4: true,
            next_hop: Ipv4Addr::from(nh),
        };
        let v: Vec<Ipv4Net> = p.iter().map(|s| net(s)).collect();
        e.announce(&v).remove(0)
    }

    #[test]
    fn a_session_comes_up_learns_and_withdraws() {
        let (mut s, t) = up(None);
        let a = s.received(
            1,
            &announce(&["10.77.3.0/24", "10.77.4.0/24"], [192, 168, 77, 3]),
            t,
        );
        assert_eq!(
            a,
            vec![Action::Changed(vec![
                net("10.77.3.0/24"),
                net("10.77.4.0/24")
            ])]
        );
        assert_eq!(s.prefix_counts(), (2, 0));
        // The same announcement again changes nothing.
        let a = s.received(1, &announce(&["10.77.3.0/24"], [192, 168, 77, 3]), t);
        assert!(a.is_empty(), "{a:?}");
        let w = Encoder {
            local_asn: 64512,
            ibgp: true,
            asn4: true,
            next_hop: Ipv4Addr::LOCALHOST,
        }
        .withdraw(&[net("10.77.3.0/24")])
        .remove(0);
        assert_eq!(
            s.received(1, &w, t),
            vec![Action::Changed(vec![net("10.77.3.0/24")])]
        );
        assert_eq!(
            s.received(1, &encode_end_of_rib(), t),
            vec![Action::EndOfRib]
        );
        assert!(s.eor_received);
        // Our routes change: the difference goes out.
        let a = s.set_announced(&[net("10.77.9.0/24")]);
        let m = sent(&a);
        assert!(matches!(&m[0], Message::Update(u) if u.withdrawn == vec![net("10.77.1.0/24")]));
        assert!(matches!(&m[1], Message::Update(u) if u.announced == vec![net("10.77.9.0/24")]));
    }

    #[test]
    fn keepalives_go_out_at_a_third_of_the_hold_time_and_silence_expires_it() {
        let (mut s, t) = up(None);
        assert!(s.on_timer(t + Duration::from_secs(2)).is_empty());
        let a = s.on_timer(t + Duration::from_secs(3));
        assert_eq!(sent(&a), vec![Message::Keepalive]);
        let a = s.on_timer(t + Duration::from_secs(9));
        assert_eq!(sent(&a)[0], Message::Notification(Notify::new(4, 0, [])));
        assert!(a.contains(&Action::Close(1)));
        assert!(a.iter().any(|x| matches!(
            x,
            Action::Down {
                graceful: false,
                ..
            }
        )));
        assert_eq!(s.state(), State::Active);
        assert_eq!(s.counters.notifications_sent.get("4/0"), Some(&1));
        // And it tries again after connect_retry.
        let a = s.on_timer(t + Duration::from_secs(12));
        assert_eq!(a, vec![Action::Connect(2)]);
    }

    #[test]
    fn bad_opens_are_refused_with_the_rfc_notification() {
        let t = Instant::now();
        for (open, want) in [
            (
                encode_open(&LocalOpen {
                    asn: 65001,
                    hold_time: 90,
                    router_id: Ipv4Addr::new(1, 1, 1, 1),
                    graceful_restart: None,
                }),
                (2, 2),
            ),
            (peer_open([192, 168, 77, 1], None), (2, 3)),
            (encode_keepalive(), (5, 1)),
        ] {
            let mut s = Session::new(cfg(true), 0);
            s.start(t);
            s.connected(7, false, t);
            let a = s.received(7, &open, t);
            let Message::Notification(n) = &sent(&a)[0] else {
                panic!("{a:?}")
            };
            assert_eq!((n.code, n.subcode), want);
            assert!(a.contains(&Action::Close(7)));
            assert_eq!(s.state(), State::Active, "passive: waits again");
        }
    }

    #[test]
    fn a_malformed_update_resets_only_the_session() {
        let (mut s, t) = up(None);
        s.received(1, &announce(&["10.77.3.0/24"], [192, 168, 77, 3]), t);
        let mut bad = announce(&["10.77.5.0/24"], [192, 168, 77, 3]);
        // ORIGIN value 7.
        let at = bad.windows(3).position(|w| w == [0x40, 1, 1]).unwrap();
        bad[at + 3] = 7;
        let a = s.received(1, &bad, t);
        let Message::Notification(n) = &sent(&a)[0] else {
            panic!()
        };
        assert_eq!((n.code, n.subcode), (3, 6));
        assert!(a.contains(&Action::Changed(vec![net("10.77.3.0/24")])));
        assert_eq!(s.counters.received.get("malformed"), Some(&1));
    }

    #[test]
    fn a_peer_that_restarts_gracefully_keeps_its_routes_until_end_of_rib() {
        let (mut s, t) = up(GR);
        s.received(
            1,
            &announce(&["10.77.3.0/24", "10.77.4.0/24"], [192, 168, 77, 3]),
            t,
        );
        let a = s.closed(1, "reset", t);
        assert!(
            a.iter()
                .any(|x| matches!(x, Action::Down { graceful: true, .. })),
            "{a:?}"
        );
        assert!(!a.iter().any(|x| matches!(x, Action::Changed(_))));
        assert_eq!(s.prefix_counts(), (2, 2));
        // Back: it announces one of the two again, then End-of-RIB.
        let t2 = t + Duration::from_secs(5);
        let a = s.on_timer(t2);
        let Action::Connect(id) = a[0] else {
            panic!("{a:?}")
        };
        let a = s.connected(id, true, t2);
        let Message::Open(o) = &sent(&a)[0] else {
            panic!()
        };
        assert!(
            !o.graceful_restart.unwrap().restarting,
            "R only in the first OPEN"
        );
        s.received(id, &peer_open([192, 168, 77, 3], GR), t2);
        let a = s.received(id, &encode_keepalive(), t2);
        assert!(a.contains(&Action::Up));
        assert_eq!(s.prefix_counts(), (2, 2));
        // Announced again: no longer stale (a change for best-path's sake).
        let a = s.received(id, &announce(&["10.77.3.0/24"], [192, 168, 77, 3]), t2);
        assert_eq!(a, vec![Action::Changed(vec![net("10.77.3.0/24")])]);
        assert_eq!(s.prefix_counts(), (2, 1));
        let a = s.received(id, &encode_end_of_rib(), t2);
        assert_eq!(
            a,
            vec![Action::Changed(vec![net("10.77.4.0/24")]), Action::EndOfRib]
        );
        assert_eq!(s.prefix_counts(), (1, 0));
    }

    /// BIRD's capability when it has not restarted: IPv4 unicast listed,
    /// R and F clear.
    const BIRD_UP: Option<GracefulRestart> = Some(GracefulRestart {
        restarting: false,
        time: 120,
        ipv4_forwarding: Some(false),
    });

    /// `up(gr)` with 10.77.3.0/24 and 10.77.4.0/24 learned, the connection
    /// reset (no NOTIFICATION) and a new session Established whose peer
    /// OPEN carries `back`: the actions of its Up and its connection id.
    fn flapped(
        gr: Option<GracefulRestart>,
        back: Option<GracefulRestart>,
    ) -> (Session, Instant, Vec<Action>, ConnId) {
        let (mut s, t) = up(gr);
        s.received(
            1,
            &announce(&["10.77.3.0/24", "10.77.4.0/24"], [192, 168, 77, 3]),
            t,
        );
        s.received(1, &encode_end_of_rib(), t);
        let a = s.closed(1, "Connection reset by peer", t);
        assert!(
            a.iter()
                .any(|x| matches!(x, Action::Down { graceful: true, .. })),
            "{a:?}"
        );
        assert_eq!(s.prefix_counts(), (2, 2));
        let t2 = t + Duration::from_secs(2);
        s.on_timer(t2);
        let id = 50;
        s.connected(id, false, t2);
        s.received(id, &peer_open([192, 168, 77, 3], back), t2);
        let a = s.received(id, &encode_keepalive(), t2);
        assert!(a.contains(&Action::Up), "{a:?}");
        (s, t2, a, id)
    }

    /// The session's timers from `t` to `t + d`, second by second, with a
    /// KEEPALIVE from the peer every 3 s: every action.
    fn live(s: &mut Session, id: ConnId, t: Instant, d: Duration) -> Vec<Action> {
        let mut out = Vec::new();
        for sec in 1..=d.as_secs() {
            let now = t + Duration::from_secs(sec);
            if sec % 3 == 0 {
                out.extend(s.received(id, &encode_keepalive(), now));
            }
            out.extend(s.on_timer(now));
        }
        assert_eq!(s.state(), State::Established, "{out:?}");
        out
    }

    #[test]
    fn a_peer_flap_keeps_stale_routes_through_the_new_session_until_end_of_rib() {
        // BIRD did not restart: F is clear in its new OPEN, and so is R.
        let (mut s, t, a, id) = flapped(BIRD_UP, BIRD_UP);
        assert!(!a.iter().any(|x| matches!(x, Action::Changed(_))), "{a:?}");
        assert_eq!(s.prefix_counts(), (2, 2), "kept, still stale");
        assert!(!s.eor_received);
        // Announced again (same path): no longer stale.
        let a = s.received(id, &announce(&["10.77.3.0/24"], [192, 168, 77, 3]), t);
        assert_eq!(a, vec![Action::Changed(vec![net("10.77.3.0/24")])]);
        assert_eq!(s.prefix_counts(), (2, 1));
        // End-of-RIB: only the one not announced again goes.
        let a = s.received(id, &encode_end_of_rib(), t);
        assert_eq!(
            a,
            vec![Action::Changed(vec![net("10.77.4.0/24")]), Action::EndOfRib]
        );
        assert_eq!(s.prefix_counts(), (1, 0));
        assert!(s.adj_in().contains_key(&net("10.77.3.0/24")));
        // And nothing is left for the stale timer.
        let a = live(&mut s, id, t, STALE_AFTER_UP);
        assert!(!a.iter().any(|x| matches!(x, Action::Changed(_))), "{a:?}");
    }

    #[test]
    fn a_flapped_peers_stale_routes_go_at_the_stale_timer_without_end_of_rib() {
        let (mut s, t, _, id) = flapped(BIRD_UP, BIRD_UP);
        s.received(id, &announce(&["10.77.3.0/24"], [192, 168, 77, 3]), t);
        let a = live(&mut s, id, t, STALE_AFTER_UP - Duration::from_secs(1));
        assert!(!a.iter().any(|x| matches!(x, Action::Changed(_))), "{a:?}");
        assert_eq!(s.prefix_counts(), (2, 1));
        let a = s.on_timer(t + STALE_AFTER_UP);
        assert!(
            a.contains(&Action::Changed(vec![net("10.77.4.0/24")])),
            "{a:?}"
        );
        assert_eq!(s.prefix_counts(), (1, 0));
        assert_eq!(s.state(), State::Established);
    }

    #[test]
    fn stale_routes_go_at_once_when_the_peer_restarted_without_forwarding_state() {
        for back in [
            // Restarted (R) and says its forwarding state is gone.
            Some(GracefulRestart {
                restarting: true,
                time: 120,
                ipv4_forwarding: Some(false),
            }),
            // No graceful restart at all.
            None,
        ] {
            let (s, _, a, _) = flapped(BIRD_UP, back);
            assert!(
                a.iter()
                    .any(|x| matches!(x, Action::Changed(v) if v.len() == 2)),
                "{back:?}: {a:?}"
            );
            assert_eq!(s.prefix_counts(), (0, 0), "{back:?}");
        }
        // Restarted with forwarding kept: they stay.
        let (s, _, a, _) = flapped(
            GR,
            GR.map(|g| GracefulRestart {
                restarting: true,
                ..g
            }),
        );
        assert!(!a.iter().any(|x| matches!(x, Action::Changed(_))), "{a:?}");
        assert_eq!(s.prefix_counts(), (2, 2));
    }

    #[test]
    fn stale_routes_go_when_the_peer_does_not_come_back_in_time() {
        let (mut s, t) = up(GR);
        s.received(1, &announce(&["10.77.3.0/24"], [192, 168, 77, 3]), t);
        s.closed(1, "reset", t);
        let a = s.on_timer(t + Duration::from_secs(61));
        assert!(
            a.contains(&Action::Changed(vec![net("10.77.3.0/24")])),
            "{a:?}"
        );
    }

    #[test]
    fn a_notification_ends_the_session_without_keeping_routes() {
        let (mut s, t) = up(GR);
        s.received(1, &announce(&["10.77.3.0/24"], [192, 168, 77, 3]), t);
        let a = s.received(1, &encode_notification(&Notify::shutdown()), t);
        assert!(a.contains(&Action::Changed(vec![net("10.77.3.0/24")])));
        assert!(a.iter().any(|x| matches!(
            x,
            Action::Down {
                graceful: false,
                ..
            }
        )));
        assert_eq!(s.counters.notifications_received.get("6/2"), Some(&1));
    }

    #[test]
    fn collisions_keep_the_connection_of_the_higher_identifier() {
        // Ours is 192.168.77.1; the peer's 192.168.77.3 is higher: its
        // connection (inbound) wins.
        let t = Instant::now();
        let mut s = Session::new(cfg(false), 0);
        s.start(t);
        s.connected(1, true, t);
        s.connected(50, false, t);
        assert_eq!(s.state(), State::OpenSent);
        let a = s.received(1, &peer_open([192, 168, 77, 3], None), t);
        assert!(matches!(&sent(&a)[0], Message::Notification(n) if *n == Notify::collision()));
        assert!(a.contains(&Action::Close(1)));
        let a = s.received(50, &peer_open([192, 168, 77, 3], None), t);
        assert_eq!(sent(&a), vec![Message::Keepalive]);
        s.received(50, &encode_keepalive(), t);
        assert_eq!(s.state(), State::Established);
        // A third connection while Established is refused.
        let a = s.connected(51, false, t);
        assert!(matches!(&sent(&a)[0], Message::Notification(n) if *n == Notify::collision()));
    }

    #[test]
    fn paths_with_our_own_as_are_loops_and_ignored() {
        let (mut s, t) = up(None);
        let looped = Encoder {
            local_asn: 64512,
            ibgp: false,
            asn4: true,
            next_hop: Ipv4Addr::new(192, 168, 77, 3),
        }
        .announce(&[net("10.77.3.0/24")])
        .remove(0);
        assert!(s.received(1, &looped, t).is_empty());
        assert_eq!(s.prefix_counts(), (0, 0));
        // A path we held becomes a loop: it goes.
        s.received(1, &announce(&["10.77.3.0/24"], [192, 168, 77, 3]), t);
        let a = s.received(1, &looped, t);
        assert_eq!(a, vec![Action::Changed(vec![net("10.77.3.0/24")])]);
        assert_eq!(s.prefix_counts(), (0, 0));
    }

    #[test]
    fn route_refresh_resends_our_routes() {
        let (mut s, t) = up(None);
        let a = s.received(1, &message::encode_route_refresh(), t);
        let m = sent(&a);
        assert!(matches!(&m[0], Message::Update(u) if u.announced == vec![net("10.77.1.0/24")]));
        assert!(matches!(&m[1], Message::Update(u) if u.end_of_rib));
    }
}
