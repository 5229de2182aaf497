//! What the agent reports: its state, Prometheus metrics, and the HTTP
//! endpoints that serve them.
//!
//! - `GET /metrics`: Prometheus text (prometheus-client), families named
//!   `sluice_agent_*` (docs/agent.md lists them);
//! - `GET /healthz`: liveness, `200` while the agent's loop runs, with the
//!   state as JSON (an etcd outage is not a reason to restart the agent: it
//!   keeps the routes and waits);
//! - `GET /readyz`: `200` once the agent holds a lease and sluiced has its
//!   routes (the last sync worked), `503` (with the reason) otherwise;
//! - `GET /bgp`: the BGP speaker's sessions as JSON (`sluice-agent bgp
//!   peers` prints them), `404` when BGP is not configured.
//!
//! Serving is bounded as sluiced's `/metrics` is: a connection per task, at
//! most [`MAX_CONNECTIONS`] at once, the request head capped at
//! [`MAX_HEAD`] bytes and each side of the exchange given [`IO_DEADLINE`].

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// Bytes of request head read at most.
pub const MAX_HEAD: usize = 8192;
/// Deadline for reading the request and for writing the answer.
pub const IO_DEADLINE: Duration = Duration::from_secs(5);

/// Where the agent is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Reading the network config.
    Config,
    /// Waiting for sluiced's facts.
    Sluiced,
    /// Taking a lease.
    Leasing,
    /// Holding a lease, routes programmed, watching.
    Running,
}

/// The agent's state as `/healthz` and `/readyz` show it.
#[derive(Debug, Clone, Serialize)]
pub struct State {
    /// Where the agent is.
    pub phase: Phase,
    /// What it waits for or the last problem (empty when all is well).
    pub problem: String,
    /// The store is answering.
    pub store_up: bool,
    /// sluiced is answering.
    pub sluiced_up: bool,
    /// This node's subnet.
    pub subnet: Option<String>,
    /// Leases of other nodes known.
    pub leases: usize,
    /// Routes the agent holds in sluiced.
    pub routes: usize,
    /// Leases that get no route (their reasons are logged).
    pub skipped: usize,
    /// The last full sync with sluiced, seconds since the epoch.
    pub last_sync: Option<u64>,
}

impl State {
    fn ready(&self) -> bool {
        self.phase == Phase::Running && self.sluiced_up && self.problem.is_empty()
    }
}

/// Metric families (all `sluice_agent_*`).
#[derive(Debug, Default)]
pub struct Metrics {
    /// `sluice_agent_leases`: other nodes' leases known.
    pub leases: Gauge,
    /// `sluice_agent_routes`: routes the agent holds in sluiced.
    pub routes: Gauge,
    /// `sluice_agent_leases_skipped`: leases that get no route.
    pub skipped: Gauge,
    /// `sluice_agent_lease_events_total{kind}`: watch events (put, delete).
    pub lease_events: Family<KindLabel, Counter>,
    /// `sluice_agent_leases_invalid_total`: lease keys or values that could
    /// not be read.
    pub invalid: Counter,
    /// `sluice_agent_route_changes_total{op}`: routes added or replaced
    /// (`upsert`) and removed (`remove`) in sluiced.
    pub route_changes: Family<OpLabel, Counter>,
    /// `sluice_agent_full_syncs_total`: full syncs with sluiced (start,
    /// sluiced restarted, after a failed change).
    pub full_syncs: Counter,
    /// `sluice_agent_store_errors_total`: failed store operations.
    pub store_errors: Counter,
    /// `sluice_agent_sluiced_errors_total`: failed sluiced calls.
    pub sluiced_errors: Counter,
    /// `sluice_agent_relists_total`: watches restarted by a list (start,
    /// compaction).
    pub relists: Counter,
    /// `sluice_agent_watch_repairs_total{kind}`: lease changes the watch
    /// lost (`put`, `delete`), found by the periodic check against a list
    /// and applied from it.
    pub watch_repairs: Family<KindLabel, Counter>,
    /// `sluice_agent_watch_restarts_total`: watches reopened because they
    /// delivered nothing for a whole check interval while changes waited.
    pub watch_restarts: Counter,
    /// `sluice_agent_lease_renewals_total`: this node's lease renewed.
    pub renewals: Counter,
    /// `sluice_agent_store_up`: 1 while the store answers.
    pub store_up: Gauge,
    /// `sluice_agent_sluiced_up`: 1 while sluiced answers.
    pub sluiced_up: Gauge,
    /// `sluice_agent_last_sync_timestamp_seconds`: the last full sync.
    pub last_sync: Gauge<f64, AtomicU64>,
    /// `sluice_agent_lease_expiry_timestamp_seconds`: when this node's lease
    /// expires unless renewed (0: a reservation, never).
    pub lease_expiry: Gauge<f64, AtomicU64>,
    /// `sluice_agent_bgp_session_state{peer}`: 1 Idle, 2 Connect, 3 Active,
    /// 4 OpenSent, 5 OpenConfirm, 6 Established.
    pub bgp_state: Family<PeerLabel, Gauge>,
    /// `sluice_agent_bgp_prefixes_received{peer}`: the peer's Adj-RIB-In.
    pub bgp_prefixes_received: Family<PeerLabel, Gauge>,
    /// `sluice_agent_bgp_prefixes_stale{peer}`: kept through its restart.
    pub bgp_prefixes_stale: Family<PeerLabel, Gauge>,
    /// `sluice_agent_bgp_prefixes_best{peer}`: best paths that are its.
    pub bgp_prefixes_best: Family<PeerLabel, Gauge>,
    /// `sluice_agent_bgp_messages_received_total{peer,kind}` (`malformed`
    /// counts what failed to decode).
    pub bgp_received: Family<PeerKindLabel, Counter>,
    /// `sluice_agent_bgp_messages_sent_total{peer,kind}`.
    pub bgp_sent: Family<PeerKindLabel, Counter>,
    /// `sluice_agent_bgp_notifications_received_total{peer,kind="code/subcode"}`.
    pub bgp_notifications_received: Family<PeerKindLabel, Counter>,
    /// `sluice_agent_bgp_notifications_sent_total{peer,kind="code/subcode"}`.
    pub bgp_notifications_sent: Family<PeerKindLabel, Counter>,
    /// `sluice_agent_bgp_session_flaps_total{peer,kind=""}`: left Established.
    pub bgp_flaps: Family<PeerKindLabel, Counter>,
    /// `sluice_agent_bgp_connections_rejected_total`: from unknown addresses.
    pub bgp_rejected: Counter,
    /// `sluice_agent_bgp_best_routes`: prefixes in the Loc-RIB.
    pub bgp_best_routes: Gauge,
    /// `sluice_agent_bgp_routes_skipped`: best paths that get no sluiced
    /// route (outside every pool, unreachable next hop; see the log).
    pub bgp_skipped: Gauge,
}

/// Label `peer`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct PeerLabel {
    /// The peer's address.
    pub peer: String,
}

/// Labels `peer`, `kind`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct PeerKindLabel {
    /// The peer's address.
    pub peer: String,
    /// Message type, or NOTIFICATION `code/subcode`.
    pub kind: String,
}

/// Label `kind`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct KindLabel {
    /// `put` or `delete`.
    pub kind: &'static str,
}

/// Label `op`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct OpLabel {
    /// `upsert` or `remove`.
    pub op: &'static str,
}

impl Metrics {
    /// A registry holding every family.
    pub fn registry(self: &Arc<Self>) -> Registry {
        let mut r = Registry::with_prefix("sluice_agent");
        let m = self;
        r.register("leases", "Other nodes' leases known", m.leases.clone());
        r.register(
            "routes",
            "Routes the agent holds in sluiced",
            m.routes.clone(),
        );
        r.register(
            "leases_skipped",
            "Leases that get no route (see the log)",
            m.skipped.clone(),
        );
        r.register(
            "lease_events",
            "Lease watch events by kind",
            m.lease_events.clone(),
        );
        r.register(
            "leases_invalid",
            "Lease keys or values that could not be read",
            m.invalid.clone(),
        );
        r.register(
            "route_changes",
            "Routes changed in sluiced by op",
            m.route_changes.clone(),
        );
        r.register(
            "full_syncs",
            "Full syncs with sluiced",
            m.full_syncs.clone(),
        );
        r.register(
            "store_errors",
            "Failed store operations",
            m.store_errors.clone(),
        );
        r.register(
            "sluiced_errors",
            "Failed sluiced API calls",
            m.sluiced_errors.clone(),
        );
        r.register(
            "relists",
            "Lease lists (start, compaction)",
            m.relists.clone(),
        );
        r.register(
            "watch_repairs",
            "Lease changes the watch lost, found by the periodic check and applied",
            m.watch_repairs.clone(),
        );
        r.register(
            "watch_restarts",
            "Watches reopened after delivering nothing while changes waited",
            m.watch_restarts.clone(),
        );
        r.register(
            "lease_renewals",
            "This node's lease renewed",
            m.renewals.clone(),
        );
        r.register("store_up", "1 while the store answers", m.store_up.clone());
        r.register(
            "sluiced_up",
            "1 while sluiced answers",
            m.sluiced_up.clone(),
        );
        r.register(
            "last_sync_timestamp_seconds",
            "The last full sync with sluiced",
            m.last_sync.clone(),
        );
        r.register(
            "lease_expiry_timestamp_seconds",
            "When this node's lease expires unless renewed (0: never)",
            m.lease_expiry.clone(),
        );
        r.register(
            "bgp_session_state",
            "BGP session state per peer (1 Idle .. 6 Established)",
            m.bgp_state.clone(),
        );
        r.register(
            "bgp_prefixes_received",
            "Prefixes in the peer's Adj-RIB-In",
            m.bgp_prefixes_received.clone(),
        );
        r.register(
            "bgp_prefixes_stale",
            "Prefixes kept stale through the peer's graceful restart",
            m.bgp_prefixes_stale.clone(),
        );
        r.register(
            "bgp_prefixes_best",
            "Best paths learned from the peer",
            m.bgp_prefixes_best.clone(),
        );
        r.register(
            "bgp_messages_received",
            "BGP messages received by type (malformed: failed to decode)",
            m.bgp_received.clone(),
        );
        r.register(
            "bgp_messages_sent",
            "BGP messages sent by type",
            m.bgp_sent.clone(),
        );
        r.register(
            "bgp_notifications_received",
            "NOTIFICATIONs received by code/subcode",
            m.bgp_notifications_received.clone(),
        );
        r.register(
            "bgp_notifications_sent",
            "NOTIFICATIONs sent by code/subcode",
            m.bgp_notifications_sent.clone(),
        );
        r.register(
            "bgp_session_flaps",
            "Times a session left Established",
            m.bgp_flaps.clone(),
        );
        r.register(
            "bgp_connections_rejected",
            "BGP connections from addresses that are not peers",
            m.bgp_rejected.clone(),
        );
        r.register(
            "bgp_best_routes",
            "Prefixes in the Loc-RIB",
            m.bgp_best_routes.clone(),
        );
        r.register(
            "bgp_routes_skipped",
            "Best paths that get no sluiced route (see the log)",
            m.bgp_skipped.clone(),
        );
        r
    }
}

/// The state and metrics, shared between the loop and the HTTP server.
#[derive(Debug)]
pub struct Status {
    /// The metrics.
    pub metrics: Arc<Metrics>,
    state: Mutex<State>,
    bgp: Mutex<Option<crate::bgp::speaker::BgpStatus>>,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            metrics: Arc::default(),
            state: Mutex::new(State {
                phase: Phase::Config,
                problem: String::new(),
                store_up: false,
                sluiced_up: false,
                subnet: None,
                leases: 0,
                routes: 0,
                skipped: 0,
                last_sync: None,
            }),
            bgp: Mutex::new(None),
        }
    }
}

impl Status {
    /// Changes the state.
    pub fn update(&self, f: impl FnOnce(&mut State)) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s);
        self.metrics.store_up.set(i64::from(s.store_up));
        self.metrics.sluiced_up.set(i64::from(s.sluiced_up));
        self.metrics.leases.set(s.leases as i64);
        self.metrics.routes.set(s.routes as i64);
        self.metrics.skipped.set(s.skipped as i64);
    }

    /// Replaces the BGP speaker's report (`/bgp`).
    pub fn set_bgp(&self, b: crate::bgp::speaker::BgpStatus) {
        *self.bgp.lock().unwrap_or_else(|p| p.into_inner()) = Some(b);
    }

    /// The BGP speaker's report, if BGP runs.
    pub fn bgp(&self) -> Option<crate::bgp::speaker::BgpStatus> {
        self.bgp.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A copy of the state.
    pub fn state(&self) -> State {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn answer(&self, registry: &Registry, path: &str) -> (u16, &'static str, String) {
        match path {
            "/metrics" => {
                let mut body = String::new();
                match encode(&mut body, registry) {
                    Ok(()) => (200, "text/plain; version=0.0.4; charset=utf-8", body),
                    Err(e) => (500, "text/plain", format!("encoding metrics: {e}\n")),
                }
            }
            "/healthz" | "/readyz" => {
                let s = self.state();
                let code = if path == "/readyz" && !s.ready() {
                    503
                } else {
                    200
                };
                let body = serde_json::to_string(&s).unwrap_or_default() + "\n";
                (code, "application/json", body)
            }
            "/bgp" => match self.bgp() {
                Some(b) => (
                    200,
                    "application/json",
                    serde_json::to_string(&b).unwrap_or_default() + "\n",
                ),
                None => (
                    404,
                    "text/plain",
                    "BGP is not configured on this agent ([bgp] in its config)\n".into(),
                ),
            },
            _ => (
                404,
                "text/plain",
                "not found: /metrics, /healthz, /readyz, /bgp\n".into(),
            ),
        }
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until the task
/// is dropped.
pub async fn serve(listener: TcpListener, status: Arc<Status>) {
    let registry = Arc::new(status.metrics.registry());
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            let _ = conn.try_write(b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n");
            continue;
        };
        let (status, registry) = (status.clone(), registry.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let mut head = Vec::with_capacity(512);
            let read = tokio::time::timeout(IO_DEADLINE, async {
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = conn.read(&mut buf).await?;
                    if n == 0 || head.len() + n > MAX_HEAD {
                        return Ok::<bool, std::io::Error>(false);
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                Ok(true)
            })
            .await;
            let (code, ctype, body) = match read {
                Ok(Ok(true)) => {
                    let line = String::from_utf8_lossy(&head);
                    let mut parts = line.split_whitespace();
                    match (parts.next(), parts.next()) {
                        (Some("GET"), Some(path)) => {
                            status.answer(&registry, path.split('?').next().unwrap_or(path))
                        }
                        _ => (405, "text/plain", "GET only\n".into()),
                    }
                }
                Ok(Ok(false)) => (431, "text/plain", "request head too large\n".into()),
                _ => return,
            };
            let reason = match code {
                200 => "OK",
                404 => "Not Found",
                405 => "Method Not Allowed",
                431 => "Request Header Fields Too Large",
                503 => "Service Unavailable",
                _ => "Internal Server Error",
            };
            let msg = format!(
                "HTTP/1.1 {code} {reason}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tokio::time::timeout(IO_DEADLINE, conn.write_all(msg.as_bytes())).await;
        });
    }
}

/// Binds `addr` and serves on it in the background.
pub async fn start(addr: SocketAddr, status: Arc<Status>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(serve(listener, status));
    Ok(bound)
}
