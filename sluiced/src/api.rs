//! The control API: versioned JSON over a Unix socket.
//!
//! One request per line, one response per line:
//!
//! ```text
//! → {"version":1,"op":"routes.add","args":{"routes":[{"prefix":"10.5.2.0/24","via":"vxlan","node":"192.168.50.2","vtep_mac":"02:00:00:00:bb:02"}]}}
//! ← {"version":1,"ok":true,"result":{"routes":1,"generation":7}}
//! ← {"version":1,"ok":false,"error":{"field":"routes[0].vtep_mac","message":"via vxlan needs the remote VTEP MAC"}}
//! ```
//!
//! Operations are idempotent (adding what is there, or removing what is
//! not, succeeds and changes nothing) and bulk requests are applied whole
//! or not at all: the change is validated against the configuration in
//! force as far as it reaches, then applied to the tables incrementally
//! ([`TablesEditor`]) and published as one new version. A rejected request
//! leaves the switch exactly as it was.
//!
//! | op | args | result |
//! |---|---|---|
//! | `ports.list` | | ports with ids |
//! | `ports.add` | `ports: [port]` | attaches pod ports (kind `pod`): XDP program, a socket per worker, the pod's `/32` |
//! | `ports.remove` | `names: [name]` | detaches pod ports; the next pod added reuses the lowest free id |
//! | `routes.list` | | configured routes, then each pod's implied `/32` |
//! | `routes.add` | `routes: [route]` | adds or replaces by prefix |
//! | `routes.replace` | `routes: [route]` | the configured routes become exactly these |
//! | `routes.remove` | `prefixes: [prefix]` | |
//! | `neighbours.list` | | |
//! | `neighbours.set` | `neighbours: [{ip, mac}]` | adds or updates by IP |
//! | `neighbours.remove` | `ips: [ip]` | |
//! | `node.get` | | node and tunnel settings, epoch, generation, worker count |
//! | `node.set` | `node`, `tunnel` (either or both) | replaces them; everything is re-validated against them |
//! | `stats` | | counters summed over workers |
//! | `flows` | | each worker's cached flows (current generation, up to 4096 per worker) |
//! | `trace` | `port`, `frame` (hex) | what the switch would do with that frame now |
//! | `reload` | | re-reads the configuration file (as SIGHUP does) |
//! | `capture.start` | `port`, `filter`?, `count`?, `direction`?, `snaplen`? | starts copying the port's frames (one capture at a time): `id` |
//! | `capture.read` | `id`, `max`? | frames since the last read (hex), `captured`, `done`, `dropped` |
//! | `capture.stop` | `id` | ends it: `captured`, `dropped` |
//!
//! A capture that is not read for 10 s stops on its own
//! ([`crate::capture`]); a bad filter is refused as `args.filter`, naming
//! the problem and where, and nothing starts.
//!
//! Route and neighbour objects are those of the configuration file
//! (docs/configuration.md).

use crate::config::{
    ConfigError, Ipv4Net, NeighbourConfig, NodeConfig, NodeSettings, PortKind, RouteConfig,
    TunnelSettings, Via,
};
use crate::counters::{StatsSnapshot, WorkerCounters};
#[cfg(test)]
use crate::tables::Tables;
use crate::tables::{EditError, PortId, TablesEditor, TablesHandle};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The protocol version this daemon speaks.
pub use sluice_api::VERSION;

/// A request line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Protocol version (1).
    pub version: u32,
    /// Operation name.
    pub op: String,
    /// Operation arguments.
    #[serde(default)]
    pub args: Value,
}

// The error and response envelope are the API crate's.
pub use sluice_api::{ApiError, Response};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutesArgs {
    routes: Vec<RouteConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrefixesArgs {
    prefixes: Vec<Ipv4Net>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NeighboursArgs {
    neighbours: Vec<NeighbourConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IpsArgs {
    ips: Vec<Ipv4Addr>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeArgs {
    #[serde(default)]
    node: Option<crate::config::NodeSettings>,
    #[serde(default)]
    tunnel: Option<crate::config::TunnelSettings>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TraceArgs {
    port: String,
    frame: String,
}

fn parse_hex(s: &str) -> Option<Vec<u8>> {
    let clean: String = s
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .collect();
    if !clean.len().is_multiple_of(2) {
        return None;
    }
    (0..clean.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&clean[i..i + 2], 16).ok())
        .collect()
}

/// Lowercase hex; a table, not a `format!` per byte (`capture.read`
/// writes up to 4096 frames a read).
fn hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(char::from(DIGITS[usize::from(x >> 4)]));
        s.push(char::from(DIGITS[usize::from(x & 15)]));
    }
    s
}

/// A one-line description of a frame, decoding VXLAN and IPIP inner packets.
pub fn summarize(frame: &[u8]) -> String {
    use crate::wire::{ethernet, ipv4, udp, vxlan};
    let Ok(e) = ethernet::Frame::new_checked(frame) else {
        return format!("{} bytes, not Ethernet", frame.len());
    };
    let head = format!("{} > {}", e.src_addr(), e.dst_addr());
    match e.ethertype() {
        ethernet::ethertype::ARP => format!("{head} arp"),
        ethernet::ethertype::IPV4 => {
            let Ok(ip) = ipv4::Packet::new_checked(e.payload()) else {
                return format!("{head} ipv4 (malformed)");
            };
            let mut s = format!(
                "{head} {} > {} ttl {}",
                ip.src_addr(),
                ip.dst_addr(),
                ip.ttl()
            );
            match ip.protocol() {
                ipv4::protocol::UDP => {
                    if let Ok(u) = udp::Packet::new_checked(ip.payload()) {
                        s += &format!(" udp {} > {}", u.src_port(), u.dst_port());
                        if let Ok(v) = vxlan::Packet::new_checked(u.payload()) {
                            if u.dst_port() == 8472 || u.dst_port() == 4789 {
                                s +=
                                    &format!(" vxlan vni {} [{}]", v.vni(), summarize(v.payload()));
                            }
                        }
                    }
                }
                ipv4::protocol::TCP => s += " tcp",
                ipv4::protocol::ICMP => {
                    s += &format!(" icmp type {}", ip.payload().first().copied().unwrap_or(0))
                }
                ipv4::protocol::IPIP => {
                    let mut inner = vec![0u8; 14];
                    inner[12..14].copy_from_slice(&ethernet::ethertype::IPV4.to_be_bytes());
                    inner.extend_from_slice(ip.payload());
                    s += &format!(
                        " ipip [{}]",
                        summarize(&inner).split_once(' ').map(|x| x.1).unwrap_or("")
                    );
                }
                p => s += &format!(" proto {p}"),
            }
            s
        }
        t => format!("{head} ethertype {t:#06x}"),
    }
}

/// The request as the API crate reads it, which names the field at fault
/// inside the arguments (`args.direction` for a bad value).
fn typed(req: &Request) -> Result<sluice_api::Request, ApiError> {
    sluice_api::Request::from_line(&serde_json::to_string(req).expect("requests serialize"))
}

fn args<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T, ApiError> {
    let v = if v.is_null() { json!({}) } else { v.clone() };
    serde_json::from_value(v).map_err(|e| {
        let msg = e.to_string();
        // serde names unknown and missing fields in its message; say where.
        let field = msg.split('`').nth(1).map(|f| format!("args.{f}"));
        ApiError::new(field.or(Some("args".into())), msg)
    })
}

/// The control side's state: the configuration in force, kept by the
/// tables editor that publishes its compiled tables.
#[derive(Debug)]
pub struct Control {
    cfg: TablesEditor,
    tables: Arc<TablesHandle>,
    counters: Vec<Arc<WorkerCounters>>,
    config_path: Option<PathBuf>,
    programs: Vec<crate::attach::Attached>,
    attacher: crate::attach::Attacher,
    registry: Option<Arc<super::PortRegistry>>,
    /// This process's start (pid and time), for `node.get`'s `epoch`.
    boot: String,
    /// This process's binary, as it was at start (an upgrade starts it when
    /// no other is named).
    exe: Option<PathBuf>,
    /// Reloads so far (the `epoch` changes with each).
    reloads: u32,
    /// The configuration (file) the running one started from or was last
    /// reloaded from: what the saved tables are valid for.
    base: NodeConfig,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PortsArgs {
    ports: Vec<crate::config::PortConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamesArgs {
    names: Vec<String>,
}

/// This process's identity: its pid and start time, in hex.
fn boot_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}-{:x}", std::process::id(), nanos)
}

/// How long ports.add/remove wait for every worker to take up new sockets.
const PORT_CHANGE_TIMEOUT: Duration = Duration::from_secs(5);

/// An editor error as the API reports it.
fn edit_error(e: EditError) -> ApiError {
    match e {
        EditError::Invalid(e) => ApiError::new(Some(e.key), e.problem),
        EditError::Tables(e) => ApiError::new(None, e.to_string()),
    }
}

/// Maps a configuration error back to the request entry that caused it.
fn request_error(
    e: ConfigError,
    section: &str,
    req_name: &str,
    origin: &[Option<usize>],
) -> ApiError {
    let prefix = format!("{section}[");
    if let Some(rest) = e.key.strip_prefix(&prefix) {
        if let Some((idx, tail)) = rest.split_once(']') {
            if let Ok(i) = idx.parse::<usize>() {
                if let Some(Some(r)) = origin.get(i) {
                    return ApiError::new(Some(format!("{req_name}[{r}]{tail}")), e.problem);
                }
            }
        }
    }
    ApiError::new(Some(e.key), e.problem)
}

impl Control {
    /// Control over a running switch's tables.
    pub fn new(
        cfg: NodeConfig,
        tables: Arc<TablesHandle>,
        counters: Vec<Arc<WorkerCounters>>,
    ) -> Self {
        Control {
            base: cfg.clone(),
            cfg: TablesEditor::new(cfg, tables.clone()),
            tables,
            counters,
            config_path: None,
            programs: Vec::new(),
            attacher: crate::attach::Attacher::AfXdp,
            registry: None,
            boot: boot_id(),
            exe: std::env::current_exe()
                .ok()
                .filter(|p| !p.to_string_lossy().ends_with(" (deleted)")),
            reloads: 0,
        }
    }

    /// Sets the configuration the running one started from, when the
    /// saved tables were merged into it ([`crate::saved_tables`]).
    pub fn set_base(&mut self, base: NodeConfig) {
        self.base = base;
    }

    /// Reloads so far.
    pub fn reloads(&self) -> u32 {
        self.reloads
    }

    /// What [`crate::saved_tables`] keeps: the base configuration, node and
    /// tunnel settings, routes and neighbours in force (learned ones too;
    /// the writer leaves them out).
    #[allow(clippy::type_complexity)]
    pub fn saved_parts(
        &self,
    ) -> (
        &NodeConfig,
        &sluice_api::NodeSettings,
        &sluice_api::TunnelSettings,
        &crate::tables::RouteTable,
        &[sluice_api::NeighbourConfig],
    ) {
        (
            &self.base,
            self.cfg.node(),
            self.cfg.tunnel(),
            &self.cfg.routes,
            &self.cfg.neighbours,
        )
    }

    /// Adds saved routes via pod ports once the recorded pods are back;
    /// those whose pod is not are dropped, logged.
    pub fn restore_pod_routes(&mut self, routes: Vec<crate::config::RouteConfig>) {
        let (ok, gone): (Vec<_>, Vec<_>) = routes.into_iter().partition(|r| {
            r.port
                .as_ref()
                .is_some_and(|p| self.cfg.ports().iter().any(|c| &c.name == p && !c.removed))
        });
        for r in &gone {
            tracing::warn!(prefix = %r.prefix, port = ?r.port, "saved route via a pod that did not come back: dropped");
        }
        if !ok.is_empty() {
            if let Err(e) = self.cfg.add_routes(ok) {
                tracing::warn!(error = %e, "saved routes via pods not restored");
            }
        }
    }

    /// Changes whenever the tables are replaced wholesale (a new process, a
    /// `reload`): a client that programs routes (the agent) programs again.
    pub fn epoch(&self) -> String {
        format!("{}.{}", self.boot, self.reloads)
    }

    /// Gives the control side the attached XDP programs and the workers'
    /// port registry, so it can add and remove pod ports at runtime.
    pub fn manage_ports(
        &mut self,
        programs: Vec<crate::attach::Attached>,
        attacher: crate::attach::Attacher,
        registry: Arc<super::PortRegistry>,
    ) {
        self.programs = programs;
        self.attacher = attacher;
        self.registry = Some(registry);
    }

    /// The XDP programs held for the switch's ports (AF_XDP), for an
    /// upgrade's handover.
    pub fn programs(&self) -> impl Iterator<Item = &sluice_ports::afxdp::XdpProgram> {
        self.programs.iter().filter_map(|a| a.program())
    }

    /// Whether ports are DPDK devices.
    pub fn is_dpdk(&self) -> bool {
        self.attacher.is_dpdk()
    }

    /// The pod ports added at runtime (through `ports.add`), in force.
    pub fn runtime_pods(&self) -> Vec<crate::config::PortConfig> {
        self.cfg
            .ports()
            .iter()
            .filter(|p| {
                !p.removed
                    && p.kind == crate::config::PortKind::Pod
                    && !self.base.ports.iter().any(|b| b.name == p.name)
            })
            .cloned()
            .collect()
    }

    /// The configuration file, if the switch was started from one.
    pub fn config_path(&self) -> Option<&std::path::Path> {
        self.config_path.as_deref()
    }

    /// `upgrade`: starts the new binary with `--take-over` on this
    /// process's configuration file; it connects to the handover socket
    /// ([`crate::handover`]) and this process exits once it has taken over.
    /// The child is in its own process group, so it outlives this one; if
    /// it exits first, that is logged and this process carries on.
    fn upgrade(&mut self, a: sluice_api::UpgradeArgs) -> Result<Value, ApiError> {
        if self.attacher.is_dpdk() {
            return Err(ApiError::new(
                None,
                "the DPDK backend cannot hand its devices over; upgrade it by restarting sluiced",
            ));
        }
        let config = self.config_path.clone().ok_or_else(|| {
            ApiError::new(
                None,
                "this sluiced was started without a configuration file: start the new one with --take-over yourself",
            )
        })?;
        let binary = match a.binary {
            Some(b) => PathBuf::from(b),
            None => self.exe.clone().ok_or_else(|| {
                ApiError::new(
                    Some("args.binary".into()),
                    "this sluiced does not know its own binary; name one",
                )
            })?,
        };
        if !binary.is_file() {
            return Err(ApiError::new(
                Some("args.binary".into()),
                format!("{} is not a file", binary.display()),
            ));
        }
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new(&binary)
            .arg("--config")
            .arg(&config)
            .arg("--take-over")
            .stdin(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| {
                ApiError::new(
                    Some("args.binary".into()),
                    format!("cannot start {}: {e}", binary.display()),
                )
            })?;
        let pid = child.id();
        tracing::info!(binary = %binary.display(), pid, "upgrade: started the new sluiced");
        let _ = std::thread::Builder::new()
            .name("sluice-upgrade".into())
            .spawn(move || {
                // Only reached while this process lives: the new one gave up.
                if let Ok(status) = child.wait() {
                    tracing::warn!(pid, %status, "upgrade: the new sluiced exited without taking over");
                }
            });
        Ok(serde_json::to_value(sluice_api::Upgrading {
            from_pid: std::process::id(),
            pid,
            binary: binary.display().to_string(),
        })
        .expect("upgrading serializes"))
    }

    /// Detaches every XDP program (after the workers closed their sockets).
    pub fn release_ports(&mut self) {
        self.programs.clear();
    }

    /// First half of `ports.add`, under the control lock: checks, attaches
    /// the XDP programs and publishes tables with the new ports. The wait
    /// for the workers' sockets happens without the lock
    /// ([`PortChange::wait`]), then [`Control::ports_add_finish`] keeps the
    /// ports or takes them back.
    fn ports_add_begin(
        &mut self,
        new_ports: Vec<crate::config::PortConfig>,
    ) -> Result<PortChange, ApiError> {
        // The request is validated first: its errors name the entry.
        let fresh = self.cfg.check_pod_ports(&new_ports).map_err(edit_error)?;
        let registry = self.registry.clone().ok_or_else(|| {
            ApiError::new(None, "ports cannot be added to this switch at runtime")
        })?;
        if fresh.is_empty() {
            return Ok(PortChange::done(
                json!({ "added": 0, "generation": self.tables.load().generation }),
            ));
        }
        // Every worker must have frames for the new pods (and their MTU):
        // UMEM frames on AF_XDP (DPDK's mbufs are checked on attach).
        if !self.attacher.is_dpdk() {
            registry
                .check_frames(
                    self.cfg
                        .ports()
                        .iter()
                        .chain(fresh.iter().map(|&k| &new_ports[k])),
                )
                .map_err(|e| ApiError::new(Some("ports".into()), e.to_string()))?;
        }
        for &k in &fresh {
            let p = &new_ports[k];
            if self.attacher.is_netdev(p) {
                check_attachable(&p.name, self.cfg.ports())
                    .and_then(|()| {
                        sluice_ports::netdev::check_pod_queues(&p.name, registry.workers())
                    })
                    .map_err(|m| ApiError::new(Some(format!("ports[{k}].name")), m))?;
            } else if let Some(q) = self
                .cfg
                .ports()
                .iter()
                .find(|q| q.name == p.name && !q.removed)
            {
                return Err(ApiError::new(
                    Some(format!("ports[{k}].name")),
                    format!("`{}` is this switch's {} port", p.name, q.kind),
                ));
            }
        }
        // Attach first; on any failure detach what was attached and stop.
        let mut attached: Vec<crate::attach::Attached> = Vec::new();
        for &k in &fresh {
            match self
                .attacher
                .attach(&new_ports[k], sluice_ports::afxdp::Steering::RedirectAll)
            {
                Ok(a) => {
                    a.register(&registry);
                    attached.push(a);
                }
                Err(e) => {
                    for p in &attached {
                        registry.remove(p.name());
                    }
                    let field = if self.attacher.is_dpdk() {
                        "devargs"
                    } else {
                        "name"
                    };
                    return Err(ApiError::new(
                        Some(format!("ports[{k}].{field}")),
                        e.to_string(),
                    ));
                }
            }
        }
        let names: Vec<String> = fresh.iter().map(|&k| new_ports[k].name.clone()).collect();
        let (_, g) = self.cfg.add_pod_ports(new_ports).map_err(|e| {
            for p in &attached {
                registry.remove(p.name());
            }
            edit_error(e)
        })?;
        Ok(PortChange {
            registry: Some(registry),
            generation: g,
            names,
            attached,
            result: None,
        })
    }

    /// Second half of `ports.add`: keeps the ports if every worker opened
    /// its sockets, else takes them back whole (tables, sockets, programs).
    fn ports_add_finish(
        &mut self,
        change: PortChange,
        outcome: Result<Vec<(String, String)>, String>,
    ) -> Result<Value, ApiError> {
        let PortChange {
            registry,
            generation,
            names,
            attached,
            ..
        } = change;
        let Some(registry) = registry else {
            return Ok(json!({ "added": 0, "generation": generation }));
        };
        let why = match outcome {
            Ok(failures) => match failures.into_iter().find(|(n, _)| names.contains(n)) {
                None => {
                    let n = attached.len();
                    self.programs.extend(attached);
                    return Ok(json!({ "added": n, "generation": generation }));
                }
                Some((name, why)) => format!("port `{name}`: {why}"),
            },
            Err(timeout) => timeout,
        };
        // Roll back: the ports leave the tables (workers close whatever
        // sockets they opened for them, whatever generation they are at),
        // then the programs go.
        let undone = self.cfg.undo_pod_ports(&names).map_err(edit_error);
        if let Ok(g) = undone {
            let _ = registry.wait_for(g, PORT_CHANGE_TIMEOUT);
        }
        for p in &attached {
            registry.remove(p.name());
        }
        drop(attached);
        Err(ApiError::new(Some("ports".into()), why))
    }

    /// First half of `ports.remove`, under the lock: the ports leave the
    /// tables; their programs go once the workers closed the sockets.
    fn ports_remove_begin(&mut self, names: &[String]) -> Result<PortChange, ApiError> {
        let registry = self.registry.clone().ok_or_else(|| {
            ApiError::new(None, "ports cannot be removed from this switch at runtime")
        })?;
        let (gone, g) = self.cfg.remove_pod_ports(names).map_err(edit_error)?;
        // A capture of a removed port ends: its id may name the next pod.
        for name in &gone {
            registry.captures.port_removed(name);
        }
        if gone.is_empty() {
            return Ok(PortChange::done(
                json!({ "removed": 0, "generation": self.tables.load().generation }),
            ));
        }
        let (attached, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.programs)
            .into_iter()
            .partition(|p| gone.iter().any(|n| n == p.name()));
        self.programs = kept;
        Ok(PortChange {
            registry: Some(registry),
            generation: g,
            names: gone,
            attached,
            result: None,
        })
    }

    /// Where `reload` reads the configuration from.
    pub fn set_config_path(&mut self, path: PathBuf) {
        self.config_path = Some(path);
    }

    /// Replaces the neighbours learned from the kernel with `learned`;
    /// static ones (file, API) win. Publishes only when something changed.
    pub fn learn_neighbours(
        &mut self,
        learned: &std::collections::BTreeMap<Ipv4Addr, crate::wire::MacAddr>,
    ) -> Result<bool, ApiError> {
        self.cfg
            .replace_learned_neighbours(learned)
            .map(|g| g.is_some())
            .map_err(edit_error)
    }

    /// Re-reads the configuration file and applies what can change while
    /// running (node and tunnel settings, routes, neighbours). A file that
    /// also changes ports or daemon settings is refused whole, naming them.
    pub fn reload(&mut self) -> Result<Value, ApiError> {
        let path = self.config_path.clone().ok_or_else(|| {
            ApiError::new(
                None,
                "this sluiced was started without a configuration file",
            )
        })?;
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ApiError::new(None, format!("{}: {e}", path.display())))?;
        let new = NodeConfig::from_toml_str(&text).map_err(|e| {
            ApiError::new(Some(e.key), format!("{}: {}", path.display(), e.problem))
        })?;
        // Pod ports are the API's (the CNI plugin adds and removes them at
        // runtime); the uplink and host port must be as running.
        let infra = |ports: &[crate::config::PortConfig]| -> Vec<crate::config::PortConfig> {
            ports
                .iter()
                .filter(|p| p.kind != PortKind::Pod && !p.removed)
                .cloned()
                .collect()
        };
        if infra(&new.ports) != infra(self.cfg.ports()) {
            return Err(ApiError::new(
                Some("port".into()),
                "the uplink or host port differs from the running one; that needs a restart",
            ));
        }
        let mut new = new;
        new.ports = self.cfg.ports.clone();
        for n in self.cfg.neighbours.iter().filter(|n| n.learned) {
            if !new.neighbours.iter().any(|x| x.ip == n.ip) {
                new.neighbours.push(n.clone());
            }
        }
        if &new.daemon != self.cfg.daemon() {
            return Err(ApiError::new(
                Some("daemon".into()),
                "daemon settings differ from the running ones; they take effect on restart",
            ));
        }
        self.check_kernel_follows(&new)?;
        let old = self.cfg.config();
        let base =
            NodeConfig::from_toml_str(&text).map_err(|e| ApiError::new(Some(e.key), e.problem))?;
        let g = self.commit(new, "route", "route", &[])?;
        self.reloads += 1;
        self.base = base;
        self.steer_uplink(&old)?;
        Ok(
            json!({ "generation": g, "routes": self.cfg.route_count(), "neighbours": self.cfg.neighbours().len() }),
        )
    }

    /// Refuses node settings the kernel side cannot follow at runtime: the
    /// host port's gateway address and pod-network route are set at start.
    fn check_kernel_follows(&self, new: &NodeConfig) -> Result<(), ApiError> {
        let has_host = self.cfg.ports().iter().any(|p| p.kind == PortKind::Host);
        let (o, n) = (self.cfg.node(), &new.node);
        if has_host && (o.pod_network != n.pod_network || o.gateway() != n.gateway()) {
            return Err(ApiError::new(
                Some("node".into()),
                "the pod network and the gateway are on the host port in the node's kernel; \
                 changing them needs a restart of sluiced",
            ));
        }
        Ok(())
    }

    /// Brings the uplink's XDP program in line with the settings in force
    /// (VXLAN port, pod network) after they changed from `old`'s; on
    /// failure the tables go back to `old` and the error says why.
    fn steer_uplink(&mut self, old: &NodeConfig) -> Result<(), ApiError> {
        let (node, tunnel) = (self.cfg.node(), self.cfg.tunnel());
        if old.tunnel.vxlan_port == tunnel.vxlan_port && old.node.pod_network == node.pod_network {
            return Ok(());
        }
        let Some(up) = self
            .cfg
            .ports()
            .iter()
            .find(|p| p.kind == PortKind::Uplink && !p.removed)
        else {
            return Ok(());
        };
        let Some(prog) = self
            .programs
            .iter()
            .find(|p| p.name() == up.name)
            .and_then(|p| p.program())
        else {
            return Ok(());
        };
        let node_ip = up.address.map_or(Ipv4Addr::UNSPECIFIED, |a| a.ip);
        let steering =
            |n: &NodeSettings, t: &TunnelSettings| sluice_ports::afxdp::Steering::Filter {
                node_ip,
                pod_net: n.pod_network.addr(),
                pod_len: n.pod_network.len(),
                vxlan_port: t.vxlan_port,
            };
        if let Err(e) = prog.set_steering(steering(node, tunnel)) {
            let _ = prog.set_steering(steering(&old.node, &old.tunnel));
            let msg = format!("the uplink's XDP program did not take the new settings: {e}");
            let _ = self.commit(old.clone(), "node", "node", &[]);
            return Err(ApiError::new(Some("tunnel".into()), msg));
        }
        Ok(())
    }

    /// The configuration in force, indexed (see [`TablesEditor`]).
    pub fn config(&self) -> &TablesEditor {
        &self.cfg
    }

    /// Validates a whole new configuration, rebuilds and publishes it; on
    /// any error nothing changes.
    fn commit(
        &mut self,
        new: NodeConfig,
        section: &str,
        req_name: &str,
        origin: &[Option<usize>],
    ) -> Result<u32, ApiError> {
        self.cfg.replace_config(new).map_err(|e| match e {
            EditError::Invalid(e) => request_error(e, section, req_name, origin),
            e => edit_error(e),
        })
    }

    /// Applies one request.
    pub fn handle(&mut self, req: &Request) -> Result<Value, ApiError> {
        if req.version != VERSION {
            return Err(ApiError::new(
                Some("version".into()),
                format!(
                    "version {} is not spoken here; this sluiced speaks {VERSION}",
                    req.version
                ),
            ));
        }
        match req.op.as_str() {
            "ports.list" => Ok(json!({ "ports": self.ports() })),
            "routes.list" => Ok(json!({ "routes": self.routes() })),
            "neighbours.list" => {
                let v: Vec<Value> = self.cfg.neighbours().iter().map(|n| json!({ "ip": n.ip, "mac": n.mac, "source": if n.learned { "kernel" } else { "static" } })).collect();
                Ok(json!({ "neighbours": v }))
            }
            "node.get" => Ok(json!({
                "node": self.cfg.node(),
                "tunnel": self.cfg.tunnel(),
                "epoch": self.epoch(),
                "generation": self.tables.load().generation,
                "workers": self.counters.len(),
            })),
            "stats" => Ok(serde_json::to_value(self.stats_with_kernel()).expect("stats serialize")),
            "routes.add" => {
                let a: RoutesArgs = args(&req.args)?;
                let (n, g) = self.cfg.add_routes(a.routes).map_err(edit_error)?;
                Ok(json!({ "routes": n, "generation": g }))
            }
            "routes.replace" => {
                let a: RoutesArgs = args(&req.args)?;
                let n = a.routes.len();
                let g = self.cfg.replace_routes(a.routes).map_err(edit_error)?;
                Ok(json!({ "routes": n, "generation": g }))
            }
            "routes.remove" => {
                let a: PrefixesArgs = args(&req.args)?;
                let (removed, g) = self.cfg.remove_routes(&a.prefixes).map_err(edit_error)?;
                Ok(json!({ "removed": removed, "generation": g }))
            }
            "neighbours.set" => {
                let a: NeighboursArgs = args(&req.args)?;
                let g = self.cfg.set_neighbours(a.neighbours).map_err(edit_error)?;
                Ok(json!({ "generation": g }))
            }
            "neighbours.remove" => {
                let a: IpsArgs = args(&req.args)?;
                let (removed, g) = self.cfg.remove_neighbours(&a.ips).map_err(edit_error)?;
                Ok(json!({ "removed": removed, "generation": g }))
            }
            "reload" => self.reload(),
            "node.set" => {
                let a: NodeArgs = args(&req.args)?;
                let mut new = self.cfg.config();
                if let Some(n) = a.node {
                    new.node = n;
                }
                if let Some(t) = a.tunnel {
                    new.tunnel = t;
                }
                // What the configuration refuses is named first.
                new.validate()
                    .map_err(|e| request_error(e, "node", "node", &[]))?;
                self.check_kernel_follows(&new)?;
                let old = self.cfg.config();
                let g = self.commit(new, "node", "node", &[])?;
                self.steer_uplink(&old)?;
                Ok(json!({ "generation": g }))
            }
            // These wait for the workers. Called here, they wait with the
            // caller's lock held; the API server goes through `respond`,
            // which waits without it.
            "flows" => {
                let registry = self
                    .registry
                    .clone()
                    .ok_or_else(|| ApiError::new(None, "this switch has no workers to ask"))?;
                let flows = registry
                    .dump_flows(Duration::from_secs(2))
                    .map_err(|e| ApiError::new(None, e))?;
                Ok(self.describe_flows(&flows))
            }
            "ports.add" => {
                let a: PortsArgs = args(&req.args)?;
                let change = self.ports_add_begin(a.ports)?;
                if let Some(r) = change.result {
                    return Ok(r);
                }
                let outcome = change.wait();
                self.ports_add_finish(change, outcome)
            }
            "ports.remove" => {
                let a: NamesArgs = args(&req.args)?;
                let change = self.ports_remove_begin(&a.names)?;
                if let Some(r) = change.result {
                    return Ok(r);
                }
                let _ = change.wait();
                Ok(finish_removal(change))
            }
            "trace" => {
                let a: TraceArgs = args(&req.args)?;
                let frame = parse_hex(&a.frame)
                    .ok_or_else(|| ApiError::new(Some("args.frame".into()), "not hex bytes"))?;
                self.trace(&a.port, frame)
            }
            "upgrade" => {
                let a: sluice_api::UpgradeArgs = args(&req.args)?;
                self.upgrade(a)
            }
            "capture.start" => match typed(req)? {
                sluice_api::Request::CaptureStart(a) => self.capture_start(a),
                other => Err(ApiError::new(
                    Some("op".into()),
                    format!("`{}` read as capture.start", other.op()),
                )),
            },
            "capture.read" => {
                let a: sluice_api::CaptureReadArgs = args(&req.args)?;
                let captures = self.captures()?;
                let max = a
                    .max
                    .unwrap_or(crate::capture::DEFAULT_READ_MAX)
                    .clamp(1, 4096);
                let r = captures
                    .read(a.id, max)
                    .map_err(|e| ApiError::new(Some("args.id".into()), e))?;
                let frames: Vec<sluice_api::CapturedFrame> = r
                    .frames
                    .iter()
                    .map(|f| sluice_api::CapturedFrame {
                        data: hex(&f.data),
                        direction: match f.direction {
                            crate::capture_dp::Direction::Tx => sluice_api::CaptureDirection::Tx,
                            _ => sluice_api::CaptureDirection::Rx,
                        },
                        orig_len: f.orig_len,
                        port: r.port.clone(),
                        ts_ns: f.ts_ns,
                    })
                    .collect();
                Ok(serde_json::to_value(sluice_api::CaptureFrames {
                    captured: r.captured,
                    done: r.done,
                    dropped: r.dropped,
                    frames,
                })
                .expect("frames serialize"))
            }
            "capture.stop" => {
                let a: sluice_api::CaptureStopArgs = args(&req.args)?;
                let (captured, dropped) = self
                    .captures()?
                    .stop(a.id)
                    .map_err(|e| ApiError::new(Some("args.id".into()), e))?;
                Ok(json!({ "captured": captured, "dropped": dropped }))
            }
            other => Err(ApiError::new(
                Some("op".into()),
                format!("unknown operation `{other}`; see docs/api.md"),
            )),
        }
    }

    /// The workers' captures (none without workers).
    fn captures(&self) -> Result<Arc<crate::capture::Captures>, ApiError> {
        self.registry
            .as_ref()
            .map(|r| r.captures.clone())
            .ok_or_else(|| ApiError::new(None, "this switch has no workers to capture with"))
    }

    /// `capture.start`: checks everything, then allocates the rings and
    /// publishes the capture to the workers.
    fn capture_start(&self, a: sluice_api::CaptureStartArgs) -> Result<Value, ApiError> {
        use crate::capture_dp::{CaptureSpec, Direction, Filter, MAX_SLOT_BYTES};
        let tables = self.tables.load();
        let port = tables.port_by_name(&a.port).ok_or_else(|| {
            ApiError::new(
                Some("args.port".into()),
                format!("no port named `{}`", a.port),
            )
        })?;
        let filter = Filter::parse(a.filter.as_deref().unwrap_or(""))
            .map_err(|e| ApiError::new(Some("args.filter".into()), e.to_string()))?;
        let snaplen = a.snaplen.unwrap_or(262_144);
        if snaplen == 0 {
            return Err(ApiError::new(
                Some("args.snaplen".into()),
                "a snap length of 0 keeps nothing",
            ));
        }
        let captures = self.captures()?;
        let direction = match a.direction.unwrap_or_default() {
            sluice_api::CaptureDirection::Rx => Direction::Rx,
            sluice_api::CaptureDirection::Tx => Direction::Tx,
            sluice_api::CaptureDirection::Both => Direction::Both,
        };
        let spec = CaptureSpec {
            port,
            direction,
            filter,
            snaplen,
            count: a.count.unwrap_or(0),
        };
        let id = captures
            .start(&a.port, spec, self.counters.len())
            .map_err(|e| ApiError::new(None, e))?;
        Ok(json!({
            "id": id,
            "port": a.port,
            "snaplen": snaplen.min(MAX_SLOT_BYTES as u32),
        }))
    }

    /// Runs `frame` as if received on `port`, on the current tables, in a
    /// scratch pipeline (live counters untouched), and says what happened.
    fn trace(&self, port: &str, frame: Vec<u8>) -> Result<Value, ApiError> {
        use crate::buffer::{Burst, HeapPool, DEFAULT_HEADROOM};
        use crate::pcap::Record;
        use crate::pipeline::{Pipeline, PipelineConfig};
        use crate::port::{poll_port, MemoryPort};
        let tables = self.tables.load();
        let id = tables.port_by_name(port).ok_or_else(|| {
            ApiError::new(Some("args.port".into()), format!("no port named `{port}`"))
        })?;
        if frame.len() > 9216 {
            return Err(ApiError::new(
                Some("args.frame".into()),
                "longer than a jumbo frame",
            ));
        }
        let counters = Arc::new(WorkerCounters::new());
        let mut pipeline = Pipeline::new(PipelineConfig::default(), counters.clone());
        let mut pool = HeapPool::new(128, DEFAULT_HEADROOM + 9216);
        let mut ports: Vec<MemoryPort> = tables.ports.iter().map(|_| MemoryPort::new()).collect();
        ports[id as usize].inject(Record {
            ts_ns: 0,
            data: frame.clone(),
        });
        let mut burst = Burst::new(32);
        poll_port(
            &mut pipeline,
            &tables,
            &mut ports,
            id,
            &mut burst,
            &mut pool,
            0,
        );
        let snap = StatsSnapshot::collect([&*counters], std::iter::empty());
        let drop = snap.drops.iter().find(|(_, &v)| v > 0).map(|(k, _)| *k);
        let events: serde_json::Map<String, Value> = snap
            .events
            .iter()
            .filter(|(_, &v)| v > 0)
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let outputs: Vec<Value> = ports
            .iter()
            .enumerate()
            .flat_map(|(i, p)| p.sent.iter().map(move |r| (i, r)))
            .map(|(i, r)| json!({ "port": tables.ports[i].name, "summary": summarize(&r.data), "frame": hex(&r.data) }))
            .collect();
        // The route the destination matches, from the configuration.
        let dst = crate::wire::ethernet::Frame::new_checked(&frame[..])
            .ok()
            .filter(|e| e.ethertype() == crate::wire::ethernet::ethertype::IPV4)
            .and_then(|e| {
                crate::wire::ipv4::Packet::new_checked(e.payload())
                    .ok()
                    .map(|ip| ip.dst_addr())
            });
        let route = dst.and_then(|d| {
            self.routes()
                .into_iter()
                .filter(|r| r.prefix.contains(d))
                .max_by_key(|r| r.prefix.len())
        });
        Ok(json!({
            "input": { "port": port, "summary": summarize(&frame) },
            "route": route,
            "events": events,
            "drop": drop,
            "outputs": outputs,
        }))
    }

    /// Names the ports and actions of a flow dump.
    fn describe_flows(&self, flows: &[(usize, crate::fib::flow_cache::FlowKey, u32)]) -> Value {
        let tables = self.tables.load();
        let describe = |adj: u32| -> String {
            use crate::tables::Adjacency;
            match tables.adjacencies.get(adj as usize) {
                Some(Adjacency::Deliver(r)) => {
                    format!("deliver {}", tables.ports[r.port as usize].name)
                }
                Some(Adjacency::HostGw(r)) => format!("host-gw {}", r.dst_mac),
                Some(Adjacency::ToHost(_)) => "host".into(),
                Some(Adjacency::Vxlan(e)) => format!("vxlan {}", Ipv4Addr::from(e.node)),
                Some(Adjacency::Ipip(e)) => format!("ipip {}", Ipv4Addr::from(e.node)),
                Some(Adjacency::Drop(r)) => format!("drop {}", r.name()),
                None => "?".into(),
            }
        };
        let v: Vec<Value> = flows
            .iter()
            .map(|(w, k, adj)| {
                let port = tables.ports.iter().enumerate().find(|(i, _)| (*i as u16) == k.in_port).map_or("?".to_string(), |(_, p)| p.name.clone());
                json!({ "worker": w, "in_port": port, "src": Ipv4Addr::from(k.src), "dst": Ipv4Addr::from(k.dst), "protocol": k.protocol, "src_port": k.src_port, "dst_port": k.dst_port, "action": describe(*adj) })
            })
            .collect();
        json!({ "generation": tables.generation, "flows": v })
    }

    fn ports(&self) -> Value {
        let v: Vec<Value> = self
            .cfg
            .ports
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.removed)
            .map(|(id, p)| {
                let mut v = json!({ "id": id, "name": p.name, "kind": p.kind, "mac": p.mac, "ip": p.ip, "address": p.address, "mtu": p.mtu });
                if let Some(sock) = &p.vhost_user {
                    v["vhost_user"] = json!(sock);
                }
                v
            })
            .collect();
        Value::Array(v)
    }

    fn routes(&self) -> Vec<RouteConfig> {
        let mut v: Vec<RouteConfig> = self.cfg.routes().cloned().collect();
        for p in self
            .cfg
            .ports
            .iter()
            .filter(|p| p.kind == PortKind::Pod && !p.removed)
        {
            if let Some(ip) = p.ip {
                v.push(RouteConfig {
                    prefix: Ipv4Net::new(ip, 32).expect("a /32"),
                    via: Via::Pod,
                    node: None,
                    vtep_mac: None,
                    port: Some(p.name.clone()),
                });
            }
        }
        v
    }

    /// Counters summed over workers.
    /// The `stats` result: the switch's counters, each port's kernel
    /// counters and frames held, and each worker's pool.
    fn stats_with_kernel(&self) -> sluice_api::Stats {
        let snap = self.stats();
        let mut out: sluice_api::Stats =
            serde_json::from_value(serde_json::to_value(&snap).expect("stats serialize"))
                .expect("the snapshot is the API's stats");
        let Some(registry) = &self.registry else {
            return out;
        };
        let names: std::collections::HashMap<PortId, &str> = self
            .cfg
            .ports()
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.removed)
            .map(|(i, p)| (i as PortId, p.name.as_str()))
            .collect();
        for (id, x) in registry.port_stats() {
            if let Some(p) = names.get(&id).and_then(|n| out.ports.get_mut(*n)) {
                p.xsk = Some(sluice_api::XskCounters {
                    rx_dropped: x.rx_dropped,
                    rx_fill_ring_empty_descs: x.rx_fill_ring_empty_descs,
                    rx_invalid_descs: x.rx_invalid_descs,
                    rx_ring_full: x.rx_ring_full,
                    tx_invalid_descs: x.tx_invalid_descs,
                    tx_ring_empty_descs: x.tx_ring_empty_descs,
                });
            }
        }
        for (id, x) in registry.dpdk_stats() {
            if let Some(p) = names.get(&id).and_then(|n| out.ports.get_mut(*n)) {
                p.dpdk = Some(sluice_api::response::DpdkCounters {
                    rx_segmented: x.rx_segmented,
                    rx_linearized: x.rx_linearized,
                    imissed: x.imissed,
                    ierrors: x.ierrors,
                    oerrors: x.oerrors,
                    rx_nombuf: x.rx_nombuf,
                });
            }
        }
        for (w, f) in registry.frames().into_iter().enumerate() {
            out.workers.push(sluice_api::WorkerFrames {
                worker: w,
                free: f.pool.free as u64,
                total: f.pool.total as u64,
                retired: f.pool.retired as u64,
            });
            for (id, held) in f.ports {
                if let Some(p) = names.get(&id).and_then(|n| out.ports.get_mut(*n)) {
                    *p.frames_held.get_or_insert(0) += u64::from(held);
                }
            }
        }
        out
    }

    /// The switch's own counters summed over workers.
    pub fn stats(&self) -> StatsSnapshot {
        let names = self
            .cfg
            .ports
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.removed)
            .map(|(i, p)| (i as PortId, p.name.clone()));
        StatsSnapshot::collect(self.counters.iter().map(|c| &**c), names)
    }
}

/// Answers one request line.
pub fn respond(control: &Mutex<Control>, line: &str) -> Response {
    let outcome = serde_json::from_str::<Request>(line)
        .map_err(|e| {
            let msg = e.to_string();
            let field = msg.split('`').nth(1).map(str::to_string);
            ApiError::new(field, format!("not a request: {msg}"))
        })
        .and_then(|req| dispatch(control, &req));
    match outcome {
        Ok(result) => Response {
            version: VERSION,
            ok: true,
            result: Some(result),
            error: None,
        },
        Err(error) => Response {
            version: VERSION,
            ok: false,
            result: None,
            error: Some(error),
        },
    }
}

/// A port change between its two halves: published, waiting for the
/// workers to take it up. Holds the programs attached (or detached) by it.
#[derive(Debug)]
struct PortChange {
    registry: Option<Arc<crate::PortRegistry>>,
    generation: u32,
    names: Vec<String>,
    attached: Vec<crate::attach::Attached>,
    result: Option<Value>,
}

impl PortChange {
    /// Nothing to wait for: the answer is `result`.
    fn done(result: Value) -> Self {
        PortChange {
            registry: None,
            generation: 0,
            names: Vec::new(),
            attached: Vec::new(),
            result: Some(result),
        }
    }

    /// Waits, without the control lock, until every worker has taken up
    /// the change: the ports that failed to open, or why it timed out.
    fn wait(&self) -> Result<Vec<(String, String)>, String> {
        match &self.registry {
            Some(r) => r.wait_for(self.generation, PORT_CHANGE_TIMEOUT),
            None => Ok(Vec::new()),
        }
    }
}

/// Refuses to put a redirect-everything program on an interface that is not
/// a pod's: the uplink, the host port, or anything but a veth or TAP (a
/// management NIC, a bridge).
fn check_attachable(name: &str, ports: &[crate::config::PortConfig]) -> Result<(), String> {
    if let Some(p) = ports.iter().find(|p| p.name == name && !p.removed) {
        return Err(format!("`{name}` is this switch's {} port", p.kind));
    }
    match crate::host::link_kind(name)? {
        Some(k) if k == "veth" || k == "tun" => Ok(()),
        Some(k) => Err(format!(
            "`{name}` is a {k} device, not a pod's veth or TAP: sluiced will not take over all its traffic"
        )),
        None => Err(format!(
            "`{name}` is not a veth or TAP (a physical device): sluiced will not take over all its traffic"
        )),
    }
}

/// Runs one request. Port changes and flow dumps wait for the workers
/// without holding the control lock, so no client (and no neighbour update)
/// waits behind them; everything else runs under the lock.
fn dispatch(control: &Mutex<Control>, req: &Request) -> Result<Value, ApiError> {
    let lock = || control.lock().unwrap_or_else(|p| p.into_inner());
    let change = match req.op.as_str() {
        "ports.add" if req.version == VERSION => {
            let a: PortsArgs = args(&req.args)?;
            return add_ports(control, a.ports);
        }
        "ports.remove" if req.version == VERSION => {
            let a: NamesArgs = args(&req.args)?;
            lock().ports_remove_begin(&a.names)?
        }
        "flows" if req.version == VERSION => {
            let registry = lock().registry.clone();
            let registry =
                registry.ok_or_else(|| ApiError::new(None, "this switch has no workers to ask"))?;
            let flows = registry
                .dump_flows(Duration::from_secs(2))
                .map_err(|e| ApiError::new(None, e))?;
            return Ok(lock().describe_flows(&flows));
        }
        _ => return lock().handle(req),
    };
    if let Some(result) = change.result {
        return Ok(result);
    }
    let _ = change.wait();
    Ok(finish_removal(change))
}

/// `ports.add` in-process, exactly as the API runs it: validated and
/// published under the control lock, the wait for the workers' sockets
/// without it, then kept or taken back whole. Used by the server and by
/// the start-up's re-attachment of recorded pods.
pub fn add_ports(
    control: &Mutex<Control>,
    ports: Vec<crate::config::PortConfig>,
) -> Result<Value, ApiError> {
    let lock = || control.lock().unwrap_or_else(|p| p.into_inner());
    let change = lock().ports_add_begin(ports)?;
    if let Some(result) = change.result {
        return Ok(result);
    }
    let outcome = change.wait();
    lock().ports_add_finish(change, outcome)
}

/// Second half of `ports.remove`: the sockets are closed (or the workers
/// are stuck, and close them when they come back); the programs go either
/// way. Needs no control state.
fn finish_removal(change: PortChange) -> Value {
    let PortChange {
        registry,
        generation,
        names,
        attached,
        ..
    } = change;
    if let Some(r) = registry {
        for name in &names {
            r.remove(name);
        }
    }
    drop(attached);
    json!({ "removed": names.len(), "generation": generation })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::craft;

    fn control() -> Mutex<Control> {
        let cfg = NodeConfig::from_toml_str(craft::REFERENCE_NODE).unwrap();
        let handle = Arc::new(TablesHandle::new(Tables::from_config(&cfg).unwrap()));
        Mutex::new(Control::new(
            cfg,
            handle,
            vec![Arc::new(WorkerCounters::new())],
        ))
    }

    fn ask(c: &Mutex<Control>, line: &str) -> Response {
        respond(c, line)
    }

    #[test]
    fn routes_add_is_idempotent_and_published() {
        let c = control();
        let g0 = c.lock().unwrap().tables.load().generation;
        let add = r#"{"version":1,"op":"routes.add","args":{"routes":[{"prefix":"10.5.7.0/24","via":"ipip","node":"192.168.50.7"}]}}"#;
        let r = ask(&c, add);
        assert!(r.ok, "{r:?}");
        let t = c.lock().unwrap().tables.load();
        assert!(t.generation != g0);
        assert!(t
            .lpm
            .lookup(u32::from(Ipv4Addr::new(10, 5, 7, 1)))
            .is_some());
        assert!(t.is_ipip_peer(u32::from(Ipv4Addr::new(192, 168, 50, 7))));
        let n = c.lock().unwrap().cfg.routes.len();
        assert!(ask(&c, add).ok, "adding it again is fine");
        assert_eq!(c.lock().unwrap().cfg.routes.len(), n, "and changes nothing");
        let rm = r#"{"version":1,"op":"routes.remove","args":{"prefixes":["10.5.7.0/24","10.5.8.0/24"]}}"#;
        assert_eq!(ask(&c, rm).result.unwrap()["removed"], 1);
        assert_eq!(
            ask(&c, rm).result.unwrap()["removed"],
            0,
            "removing what is gone succeeds"
        );
    }

    #[test]
    fn a_bad_bulk_request_names_the_entry_and_changes_nothing() {
        let c = control();
        let before = c.lock().unwrap().tables.load().generation;
        let routes_before = c.lock().unwrap().cfg.routes.clone();
        let bad = r#"{"version":1,"op":"routes.add","args":{"routes":[
            {"prefix":"10.5.7.0/24","via":"ipip","node":"192.168.50.7"},
            {"prefix":"10.5.8.0/24","via":"vxlan","node":"192.168.50.8"}]}}"#;
        let r = ask(&c, &bad.replace('\n', ""));
        assert!(!r.ok);
        let e = r.error.unwrap();
        assert_eq!(e.field.as_deref(), Some("routes[1].vtep_mac"), "{e:?}");
        assert_eq!(
            c.lock().unwrap().tables.load().generation,
            before,
            "nothing published"
        );
        assert_eq!(
            c.lock().unwrap().cfg.routes,
            routes_before,
            "nothing half-applied"
        );
    }

    #[test]
    fn malformed_requests_get_errors_that_name_the_problem() {
        let c = control();
        let r = ask(&c, "{not json");
        assert!(!r.ok && r.error.unwrap().message.contains("not a request"));
        let r = ask(&c, r#"{"version":2,"op":"stats"}"#);
        assert_eq!(r.error.unwrap().field.as_deref(), Some("version"));
        let r = ask(&c, r#"{"version":1,"op":"routes.explode"}"#);
        assert_eq!(r.error.unwrap().field.as_deref(), Some("op"));
        let r = ask(
            &c,
            r#"{"version":1,"op":"routes.add","args":{"routez":[]}}"#,
        );
        assert_eq!(r.error.unwrap().field.as_deref(), Some("args.routez"));
        let r = ask(
            &c,
            r#"{"version":1,"op":"routes.add","args":{"routes":[{"prefix":"10.5.7.1/24","via":"host"}]}}"#,
        );
        let e = r.error.unwrap();
        assert!(e.message.contains("host bits"), "{e:?}");
        let r = ask(
            &c,
            r#"{"version":1,"op":"neighbours.set","args":{"neighbours":[{"ip":"192.168.50.9","mac":"ff:ff:ff:ff:ff:ff"}]}}"#,
        );
        assert_eq!(r.error.unwrap().field.as_deref(), Some("neighbours[0].mac"));
    }

    #[test]
    fn neighbours_resolve_a_pending_route() {
        let c = control();
        let t = c.lock().unwrap().tables.load();
        let adj = t.lpm.lookup(u32::from(Ipv4Addr::new(10, 5, 6, 1))).unwrap();
        assert!(
            matches!(
                t.adjacencies[adj as usize],
                crate::tables::Adjacency::Drop(_)
            ),
            "10.5.6.0/24's node has no neighbour entry yet"
        );
        let r = ask(
            &c,
            r#"{"version":1,"op":"neighbours.set","args":{"neighbours":[{"ip":"192.168.50.6","mac":"02:00:00:00:aa:06"}]}}"#,
        );
        assert!(r.ok, "{r:?}");
        let t = c.lock().unwrap().tables.load();
        let adj = t.lpm.lookup(u32::from(Ipv4Addr::new(10, 5, 6, 1))).unwrap();
        assert!(matches!(
            t.adjacencies[adj as usize],
            crate::tables::Adjacency::Vxlan(_)
        ));
    }

    #[test]
    fn trace_shows_the_route_the_encapsulation_and_drops() {
        let c = control();
        let f = hex(&craft::pod_a_udp(craft::REMOTE_POD_B, 1000, 5201, 4));
        let r = ask(
            &c,
            &format!(r#"{{"version":1,"op":"trace","args":{{"port":"pod-a","frame":"{f}"}}}}"#),
        );
        let v = r.result.expect("trace result");
        assert_eq!(v["route"]["prefix"], "10.5.2.0/24");
        assert_eq!(v["route"]["via"], "vxlan");
        assert_eq!(v["drop"], Value::Null);
        assert_eq!(v["events"]["vxlan_encap"], 1);
        let out = &v["outputs"][0];
        assert_eq!(out["port"], "eth0");
        let summary = out["summary"].as_str().unwrap();
        assert!(
            summary.contains("192.168.50.1 > 192.168.50.2")
                && summary.contains("vxlan vni 1")
                && summary.contains("10.5.1.2 > 10.5.2.7"),
            "{summary}"
        );
        let spoof = hex(&craft::pod_a_udp(craft::POD_B_IP, 1, 2, 4));
        let r = ask(
            &c,
            &format!(r#"{{"version":1,"op":"trace","args":{{"port":"pod-b","frame":"{spoof}"}}}}"#),
        );
        assert_eq!(r.result.unwrap()["drop"], "spoofed_source_mac");
        assert_eq!(
            c.lock().unwrap().stats().total_drops(),
            0,
            "tracing leaves the live counters alone"
        );
        let r = ask(
            &c,
            r#"{"version":1,"op":"trace","args":{"port":"pod-z","frame":"00"}}"#,
        );
        assert_eq!(r.error.unwrap().field.as_deref(), Some("args.port"));
        let r = ask(
            &c,
            r#"{"version":1,"op":"trace","args":{"port":"pod-a","frame":"0g"}}"#,
        );
        assert_eq!(r.error.unwrap().field.as_deref(), Some("args.frame"));
    }

    #[test]
    fn reload_applies_routes_and_refuses_port_changes_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        let c = control();
        c.lock().unwrap().set_config_path(path.clone());
        let with_route = format!(
            "{}\n[[route]]\nprefix = \"10.5.77.0/24\"\nvia = \"blackhole\"\n",
            craft::REFERENCE_NODE
        );
        std::fs::write(&path, &with_route).unwrap();
        let r = ask(&c, r#"{"version":1,"op":"reload"}"#);
        assert!(r.ok, "{r:?}");
        assert!(c
            .lock()
            .unwrap()
            .tables
            .load()
            .lpm
            .get(u32::from(Ipv4Addr::new(10, 5, 77, 0)), 24)
            .is_some());
        let g = c.lock().unwrap().tables.load().generation;
        std::fs::write(
            &path,
            with_route
                .replace(
                    "gateway = \"192.168.50.254\"",
                    "gateway = \"192.168.50.253\"",
                )
                .replace("10.5.77.0/24", "10.5.78.0/24"),
        )
        .unwrap();
        let r = ask(&c, r#"{"version":1,"op":"reload"}"#);
        assert_eq!(r.error.unwrap().field.as_deref(), Some("port"));
        assert_eq!(
            c.lock().unwrap().tables.load().generation,
            g,
            "nothing applied"
        );
        std::fs::write(&path, "[node]\n").unwrap();
        let r = ask(&c, r#"{"version":1,"op":"reload"}"#);
        assert!(r.error.unwrap().message.contains("node.toml"));
    }

    #[test]
    fn node_get_tells_the_worker_count() {
        let c = control();
        let r = ask(&c, r#"{"version":1,"op":"node.get"}"#);
        let info: sluice_api::NodeInfo = r.into_result().expect("node.get");
        assert_eq!(info.workers, 1, "one worker's counters");
        assert!(!info.epoch.is_empty());
    }

    #[test]
    fn node_settings_change_whole_or_not_at_all() {
        let c = control();
        let r = ask(
            &c,
            r#"{"version":1,"op":"node.set","args":{"tunnel":{"vni":42,"vxlan_port":4789}}}"#,
        );
        assert!(r.ok, "{r:?}");
        assert_eq!(c.lock().unwrap().tables.load().node.vni, 42);
        let g = c.lock().unwrap().tables.load().generation;
        // A pod subnet that no longer holds the pods is refused, naming the pod.
        let r = ask(
            &c,
            r#"{"version":1,"op":"node.set","args":{"node":{"pod_network":"10.5.0.0/16","pod_subnet":"10.5.200.0/24","router_mac":"02:00:00:00:00:01"}}}"#,
        );
        let e = r.error.unwrap();
        assert!(
            e.field.as_deref().unwrap_or("").starts_with("port[")
                && e.message.contains("not inside pod_subnet"),
            "{e:?}"
        );
        assert_eq!(c.lock().unwrap().tables.load().generation, g);
    }

    #[test]
    fn node_settings_the_host_port_holds_are_refused_whole() {
        let c = control();
        let g = c.lock().unwrap().tables.load().generation;
        let r = ask(
            &c,
            r#"{"version":1,"op":"node.set","args":{"node":{"pod_network":"10.5.0.0/16","pod_subnet":"10.5.1.0/24","gateway_ip":"10.5.1.254","router_mac":"02:00:00:00:00:01"}}}"#,
        );
        let e = r.error.expect("refused");
        assert_eq!(e.field.as_deref(), Some("node"));
        assert!(e.message.contains("needs a restart"), "{e:?}");
        assert_eq!(
            c.lock().unwrap().tables.load().generation,
            g,
            "nothing published"
        );
    }

    #[test]
    fn validation_errors_name_the_request_entry() {
        let c = control();
        let g = c.lock().unwrap().tables.load().generation;
        let r = ask(
            &c,
            r#"{"version":1,"op":"ports.add","args":{"ports":[{"name":"abcdefghijklmnop","kind":"pod","mac":"02:00:00:00:01:09","ip":"10.5.1.9","mtu":1450}]}}"#,
        );
        let e = r.error.unwrap();
        assert_eq!(e.field.as_deref(), Some("ports[0].name"), "{e:?}");
        assert!(e.message.contains("15 bytes"), "{e:?}");
        let r = ask(
            &c,
            r#"{"version":1,"op":"routes.add","args":{"routes":[{"prefix":"10.5.7.0/24","via":"ipip","node":"192.168.50.7"},{"prefix":"10.5.8.0/24","via":"ipip","node":"10.5.9.9"}]}}"#,
        );
        let e = r.error.unwrap();
        assert_eq!(e.field.as_deref(), Some("routes[1].node"), "{e:?}");
        let r = ask(
            &c,
            r#"{"version":1,"op":"node.set","args":{"tunnel":{"vni":1,"vxlan_port":8472,"vtep_mac":"00:00:00:00:00:00"}}}"#,
        );
        let e = r.error.unwrap();
        assert_eq!(e.field.as_deref(), Some("tunnel.vtep_mac"), "{e:?}");
        assert_eq!(c.lock().unwrap().tables.load().generation, g);
    }

    /// A request that waits for the workers (here a flow dump no worker
    /// answers, which gives up after 2 s) does not hold the control lock
    /// meanwhile: another client's request is answered first.
    #[test]
    fn waiting_for_workers_blocks_no_other_client() {
        let c = Arc::new(control());
        let registry = Arc::new(crate::PortRegistry::new(
            1,
            sluice_ports::afxdp::UmemConfig::default(),
        ));
        c.lock()
            .unwrap()
            .manage_ports(Vec::new(), crate::attach::Attacher::AfXdp, registry);
        let (tx, rx) = std::sync::mpsc::channel();
        let waiting = {
            let (c, tx) = (c.clone(), tx.clone());
            std::thread::spawn(move || {
                let r = respond(&c, r#"{"version":1,"op":"flows"}"#);
                tx.send(("flows", r.ok)).unwrap();
            })
        };
        // Let the flow request start waiting, then ask for stats.
        std::thread::sleep(Duration::from_millis(200));
        let r = respond(&c, r#"{"version":1,"op":"stats"}"#);
        tx.send(("stats", r.ok)).unwrap();
        waiting.join().unwrap();
        let order: Vec<_> = rx.try_iter().collect();
        assert_eq!(
            order,
            vec![("stats", true), ("flows", false)],
            "stats answered while the flow dump waited, which then timed out"
        );
    }

    /// A capture through the API: a bad filter or port is refused naming
    /// the field and nothing starts; a good one reaches the workers, gives
    /// frames in hex, and a second start is refused while it runs.
    #[test]
    fn capture_ops_check_first_and_run_one_at_a_time() {
        let c = control();
        let none = ask(
            &c,
            r#"{"version":1,"op":"capture.start","args":{"port":"pod-a"}}"#,
        );
        assert_eq!(
            none.error.unwrap().message,
            "this switch has no workers to capture with"
        );
        let registry = Arc::new(crate::PortRegistry::new(
            1,
            sluice_ports::afxdp::UmemConfig::default(),
        ));
        c.lock().unwrap().manage_ports(
            Vec::new(),
            crate::attach::Attacher::AfXdp,
            registry.clone(),
        );
        let bad = ask(
            &c,
            r#"{"version":1,"op":"capture.start","args":{"port":"pod-a","filter":"icmp and hots 10.5.1.2"}}"#,
        )
        .error
        .unwrap();
        assert_eq!(bad.field.as_deref(), Some("args.filter"));
        assert!(
            bad.message.starts_with("unknown primitive `hots`"),
            "{}",
            bad.message
        );
        assert!(
            bad.message.ends_with("(at character 10)"),
            "{}",
            bad.message
        );
        assert!(!registry.captures.active(), "nothing started");
        let bad = ask(
            &c,
            r#"{"version":1,"op":"capture.start","args":{"port":"pod-z"}}"#,
        )
        .error
        .unwrap();
        assert_eq!(bad.field.as_deref(), Some("args.port"));
        let bad = ask(
            &c,
            r#"{"version":1,"op":"capture.start","args":{"port":"pod-a","direction":"in"}}"#,
        )
        .error
        .unwrap();
        assert_eq!(
            bad.field.as_deref(),
            Some("args.direction"),
            "{}",
            bad.message
        );

        let ok = ask(
            &c,
            r#"{"version":1,"op":"capture.start","args":{"port":"pod-a","filter":"udp","count":1,"direction":"rx"}}"#,
        );
        let started: sluice_api::CaptureStarted = ok.into_result().unwrap();
        assert_eq!((started.port.as_str(), started.snaplen), ("pod-a", 10240));
        assert_eq!(registry.captures.captured_port(), Some(2));
        let again = ask(
            &c,
            r#"{"version":1,"op":"capture.start","args":{"port":"pod-b"}}"#,
        );
        assert!(again
            .error
            .unwrap()
            .message
            .contains("one capture at a time"));

        let cap = registry.captures.published().unwrap().unwrap();
        let frame = craft::pod_a_udp(craft::POD_B_IP, 1000, 53, 4);
        cap.take(
            0,
            crate::capture_dp::Direction::Rx,
            7,
            [&frame[..]].into_iter(),
        );
        let read: sluice_api::CaptureFrames = ask(
            &c,
            &format!(
                r#"{{"version":1,"op":"capture.read","args":{{"id":{}}}}}"#,
                started.id
            ),
        )
        .into_result()
        .unwrap();
        assert!(read.done);
        assert_eq!(read.frames.len(), 1);
        assert_eq!(read.frames[0].bytes().unwrap(), frame);
        assert_eq!(read.frames[0].direction, sluice_api::CaptureDirection::Rx);
        assert_eq!(
            (read.frames[0].ts_ns, read.frames[0].port.as_str()),
            (7, "pod-a")
        );
        let stop = format!(
            r#"{{"version":1,"op":"capture.stop","args":{{"id":{}}}}}"#,
            started.id
        );
        let stopped: sluice_api::CaptureStopped = ask(&c, &stop).into_result().unwrap();
        assert_eq!((stopped.captured, stopped.dropped), (1, 0));
        let gone = ask(&c, &stop).error.unwrap();
        assert_eq!(gone.field.as_deref(), Some("args.id"));
    }
}
