//! The control side's table editor: the configuration in force, indexed, and
//! one method per kind of change, each publishing exactly one new [`Tables`]
//! version without rebuilding the route table. No I/O.
//!
//! # State
//! Routes are kept by prefix, neighbours by IP, ports by name (and pods by
//! IP); the order of the configuration is kept for listing. A change is
//! validated against this state only as far as it reaches (the same rules,
//! keys and messages as [`NodeConfig::validate`], with keys naming the
//! request entry, e.g. `routes[1].vtep_mac`), then applied whole; a refused
//! change leaves state and published tables untouched.
//!
//! # Next hops
//! Every route-table value is an index into [`Tables::adjacencies`], one per
//! distinct next hop ([`NextHopKey`]), reference-counted by the prefixes that
//! use it. Indices are stable across incremental changes: new next hops take a
//! freed index or are appended. Reusing a freed index is safe for the flow
//! cache: the prefixes that used it were changed in a logged version (see
//! below), so cached flows that name it are not revalidated. A neighbour
//! change re-resolves adjacencies in place at the same index.
//!
//! # Left-right route table
//! The editor keeps, besides the published route table, a *spare* one: the
//! previous version's, lagging by the operations in `pending`. To publish, it
//! waits briefly (up to [`SPARE_WAIT`]) for workers to let go of the spare,
//! replays `pending` and the new operations on it, and publishes it; the
//! table it replaces becomes the spare, lagging by the new operations. If the
//! spare is still held after the wait it is cloned (counted in
//! [`EditorStats::spare_clones`]). So a change costs in proportion to its size,
//! not to the table's.
//!
//! # Flow-cache invalidation
//! Each version carries the route changes made since its `flush_generation`
//! (at most [`ROUTE_LOG_MAX`]); see [`Tables::cached_route_valid`]. Changes of
//! node or tunnel settings and whole reloads rebuild everything and flush.

use super::{
    next_generation, Adjacency, NextHopKey, PortId, RouteChange, Tables, TablesError, TablesHandle,
    ROUTE_LOG_MAX,
};
use crate::config::{
    check_neighbour, check_port, check_route, ConfigError, DaemonSettings, Ipv4Net, Limits,
    NeighbourConfig, NodeConfig, NodeSettings, PortConfig, PortKind, RouteConfig, TunnelSettings,
    Via,
};
use crate::counters::DropReason;
use crate::fib::lpm::Lpm;
use crate::wire::MacAddr;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a publication waits for workers to let go of the spare route
/// table before it clones the current one instead.
pub const SPARE_WAIT: Duration = Duration::from_millis(50);

/// Why a change was refused; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// The change does not validate; the key names the request entry at fault
    /// (e.g. `routes[1].vtep_mac`) or, for whole configurations, the key.
    #[error("{0}")]
    Invalid(#[from] ConfigError),
    /// The route table refused a route.
    #[error(transparent)]
    Tables(#[from] TablesError),
}

/// Counts of what publications cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EditorStats {
    /// Versions published.
    pub publishes: u64,
    /// Publications that reused the spare route table.
    pub spare_reuses: u64,
    /// Publications that had to clone the route table (no spare, or still held).
    pub spare_clones: u64,
    /// Whole rebuilds (node settings, reload).
    pub rebuilds: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LpmOp {
    Insert(u32, u8, u32),
    Remove(u32, u8),
}

fn err(key: String, problem: String) -> EditError {
    EditError::Invalid(ConfigError { key, problem })
}

/// Configured routes by prefix, in configuration order.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    /// In configuration order; `None` where one was removed.
    order: Vec<Option<RouteConfig>>,
    /// Index in `order` by prefix.
    slots: HashMap<Ipv4Net, usize>,
}

impl RouteTable {
    /// Number of routes.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// No route.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The routes, in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = &RouteConfig> + '_ {
        self.order.iter().flatten()
    }

    /// The route for exactly `prefix`.
    pub fn get(&self, prefix: &Ipv4Net) -> Option<&RouteConfig> {
        self.slots
            .get(prefix)
            .and_then(|&i| self.order.get(i))
            .and_then(Option::as_ref)
    }
}

impl PartialEq for RouteTable {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl PartialEq<Vec<RouteConfig>> for RouteTable {
    fn eq(&self, other: &Vec<RouteConfig>) -> bool {
        self.iter().eq(other.iter())
    }
}

/// The configuration in force, indexed, with the next-hop interning.
#[derive(Debug, Clone)]
pub struct State {
    pub daemon: DaemonSettings,
    pub node: NodeSettings,
    pub tunnel: TunnelSettings,
    pub ports: Vec<PortConfig>,
    /// Live ports by name.
    port_ids: HashMap<String, PortId>,
    /// Live pod ports by IP.
    pod_ips: HashMap<Ipv4Addr, PortId>,
    /// Routes by prefix, in configuration order.
    pub routes: RouteTable,
    pub neighbours: Vec<NeighbourConfig>,
    neigh: HashMap<u32, MacAddr>,
    /// Next hop of each adjacency index (`None`: free).
    keys: Vec<Option<NextHopKey>>,
    key_index: HashMap<NextHopKey, u32>,
    refs: Vec<u32>,
    free: Vec<u32>,
    /// Routes per remote node, via VXLAN and IPIP.
    vxlan_peers: HashMap<u32, u32>,
    ipip_peers: HashMap<u32, u32>,
}

impl State {
    /// Indexes a validated configuration; returns the route-table entries
    /// in the order [`Tables::from_config`] always installed them.
    fn from_config(cfg: &NodeConfig) -> (State, Vec<(Ipv4Net, u32)>) {
        let mut s = State {
            daemon: cfg.daemon.clone(),
            node: cfg.node.clone(),
            tunnel: cfg.tunnel.clone(),
            ports: cfg.ports.clone(),
            port_ids: HashMap::new(),
            pod_ips: HashMap::new(),
            routes: RouteTable {
                order: cfg.routes.iter().cloned().map(Some).collect(),
                slots: HashMap::with_capacity(cfg.routes.len()),
            },
            neighbours: cfg.neighbours.clone(),
            neigh: cfg
                .neighbours
                .iter()
                .map(|n| (u32::from(n.ip), n.mac))
                .collect(),
            keys: Vec::new(),
            key_index: HashMap::new(),
            refs: Vec::new(),
            free: Vec::new(),
            vxlan_peers: HashMap::new(),
            ipip_peers: HashMap::new(),
        };
        for (i, p) in s.ports.iter().enumerate().filter(|(_, p)| !p.removed) {
            s.port_ids.insert(p.name.clone(), i as PortId);
            if let (PortKind::Pod, Some(ip)) = (p.kind, p.ip) {
                s.pod_ips.insert(ip, i as PortId);
            }
        }
        for (i, r) in cfg.routes.iter().enumerate() {
            s.routes.slots.insert(r.prefix, i);
            s.count_peer(r, 1);
        }
        let mut entries = Vec::with_capacity(cfg.routes.len() + s.pod_ips.len() + 1);
        for (i, p) in cfg.ports.iter().enumerate().filter(|(_, p)| !p.removed) {
            if let (PortKind::Pod, Some(ip)) = (p.kind, p.ip) {
                let nh = s.intern(NextHopKey::Pod(i as PortId));
                entries.push((Ipv4Net::new(ip, 32).expect("a /32"), nh));
            }
        }
        for r in &cfg.routes {
            let nh = s.intern(s.route_key(r));
            entries.push((r.prefix, nh));
        }
        let gw = s.gateway_net();
        if s.has_host() && !s.routes.slots.contains_key(&gw) {
            let nh = s.intern(NextHopKey::Host);
            entries.push((gw, nh));
        }
        (s, entries)
    }

    fn gateway_net(&self) -> Ipv4Net {
        Ipv4Net::new(self.node.gateway(), 32).expect("a /32")
    }

    fn has_host(&self) -> bool {
        self.ports.iter().any(|p| p.kind == PortKind::Host)
    }

    fn uplink(&self) -> Option<&PortConfig> {
        self.ports
            .iter()
            .find(|p| p.kind == PortKind::Uplink && !p.removed)
    }

    fn count_peer(&mut self, r: &RouteConfig, delta: i32) {
        let map = match r.via {
            Via::Vxlan => &mut self.vxlan_peers,
            Via::Ipip => &mut self.ipip_peers,
            _ => return,
        };
        let node = r.node.map(u32::from).unwrap_or(0);
        let c = map.entry(node).or_insert(0);
        *c = c.saturating_add_signed(delta);
        if *c == 0 {
            map.remove(&node);
        }
    }

    fn route_key(&self, r: &RouteConfig) -> NextHopKey {
        let node = r.node.map(u32::from).unwrap_or(0);
        match r.via {
            Via::Pod => NextHopKey::Pod(
                r.port
                    .as_deref()
                    .and_then(|n| self.port_ids.get(n).copied())
                    .unwrap_or(PortId::MAX),
            ),
            Via::Vxlan => NextHopKey::Vxlan(node, r.vtep_mac.unwrap_or(MacAddr::ZERO)),
            Via::Ipip => NextHopKey::Ipip(node),
            Via::HostGw => NextHopKey::HostGw(node),
            Via::Host => NextHopKey::Host,
            Via::Blackhole => NextHopKey::Blackhole,
        }
    }

    /// What the route table holds for exactly `net`.
    fn effective(&self, net: Ipv4Net) -> Option<NextHopKey> {
        if net.len() == 32 {
            if let Some(&id) = self.pod_ips.get(&net.addr()) {
                return Some(NextHopKey::Pod(id));
            }
        }
        if let Some(r) = self
            .routes
            .slots
            .get(&net)
            .and_then(|&i| self.routes.order[i].as_ref())
        {
            return Some(self.route_key(r));
        }
        (self.has_host() && net == self.gateway_net()).then_some(NextHopKey::Host)
    }

    fn intern(&mut self, k: NextHopKey) -> u32 {
        if let Some(&i) = self.key_index.get(&k) {
            self.refs[i as usize] += 1;
            return i;
        }
        let i = match self.free.pop() {
            Some(i) => {
                self.keys[i as usize] = Some(k);
                self.refs[i as usize] = 1;
                i
            }
            None => {
                self.keys.push(Some(k));
                self.refs.push(1);
                (self.keys.len() - 1) as u32
            }
        };
        self.key_index.insert(k, i);
        i
    }

    fn release(&mut self, k: NextHopKey) {
        let Some(&i) = self.key_index.get(&k) else {
            return;
        };
        let r = &mut self.refs[i as usize];
        *r -= 1;
        if *r == 0 {
            self.key_index.remove(&k);
            self.keys[i as usize] = None;
            self.free.push(i);
        }
    }

    /// Position of a route slot in the configuration's route list.
    fn route_position(&self, slot: usize) -> usize {
        self.routes.order[..slot]
            .iter()
            .filter(|r| r.is_some())
            .count()
    }

    fn config(&self) -> NodeConfig {
        NodeConfig {
            daemon: self.daemon.clone(),
            node: self.node.clone(),
            tunnel: self.tunnel.clone(),
            ports: self.ports.clone(),
            routes: self.routes.order.iter().flatten().cloned().collect(),
            neighbours: self.neighbours.clone(),
        }
    }

    fn check_route(&self, r: &RouteConfig) -> Result<(), (&'static str, String)> {
        check_route(
            &self.node,
            r,
            self.pod_ips.contains_key(&r.prefix.addr()),
            self.uplink(),
            |name| {
                self.port_ids
                    .get(name)
                    .is_some_and(|&i| self.ports[i as usize].kind == PortKind::Pod)
            },
            self.has_host(),
        )
    }

    fn sorted_peers(map: &HashMap<u32, u32>) -> Vec<u32> {
        let mut v: Vec<u32> = map.keys().copied().collect();
        v.sort_unstable();
        v
    }
}

/// Builds whole tables from a validated configuration.
pub(super) fn build(cfg: &NodeConfig) -> Result<Tables, TablesError> {
    let (state, entries) = State::from_config(cfg);
    build_from_state(&state, &entries)
}

fn build_from_state(state: &State, entries: &[(Ipv4Net, u32)]) -> Result<Tables, TablesError> {
    let mut lpm = Lpm::new();
    for &(prefix, nh) in entries {
        lpm.insert(prefix.addr_u32(), prefix.len(), nh)
            .map_err(|e| TablesError::Route {
                prefix,
                problem: e.to_string(),
            })?;
    }
    let generation = next_generation();
    let mut t = Tables::skeleton(
        generation,
        &state.node,
        &state.tunnel,
        &state.ports,
        Arc::new(lpm),
    );
    t.vxlan_peers = State::sorted_peers(&state.vxlan_peers);
    t.ipip_peers = State::sorted_peers(&state.ipip_peers);
    t.adjacencies = resolve_all(&t, state);
    Ok(t)
}

fn resolve_all(t: &Tables, state: &State) -> Vec<Adjacency> {
    let (onlink, gw) = underlay(state);
    state
        .keys
        .iter()
        .map(|k| match k {
            Some(k) => t.resolve(*k, onlink, gw, &state.neigh),
            None => Adjacency::Drop(DropReason::PortDown),
        })
        .collect()
}

fn underlay(state: &State) -> (Option<Ipv4Net>, Option<u32>) {
    let u = state.uplink();
    (
        u.and_then(|p| p.address).map(|a| a.network()),
        u.and_then(|p| p.gateway).map(u32::from),
    )
}

/// The control side's editor of the published tables; see the module docs.
#[derive(Debug)]
pub struct TablesEditor {
    handle: Arc<TablesHandle>,
    current: Arc<Tables>,
    state: State,
    spare: Option<Arc<Lpm>>,
    pending: Vec<LpmOp>,
    stats: EditorStats,
}

impl std::ops::Deref for TablesEditor {
    type Target = State;
    /// The configuration in force, indexed (e.g. `editor.routes.len()`).
    fn deref(&self) -> &State {
        &self.state
    }
}

/// A change in progress: route-table entries touched, with what they held.
#[derive(Default)]
struct Change {
    touched: Vec<(Ipv4Net, Option<NextHopKey>)>,
    ports_changed: bool,
    reresolve: bool,
    /// Every cached flow is a miss after it (a port id now names another
    /// port, and flows are keyed by their input port's id).
    flush: bool,
}

impl Change {
    fn touch(&mut self, state: &State, net: Ipv4Net) {
        self.touched.push((net, state.effective(net)));
    }
}

impl TablesEditor {
    /// An editor of the tables in `handle`, which must have been built from
    /// `cfg` (validated) by [`Tables::from_config`]; if they were not, the
    /// editor publishes tables built from `cfg`.
    pub fn new(cfg: NodeConfig, handle: Arc<TablesHandle>) -> Self {
        let (state, entries) = State::from_config(&cfg);
        let current = handle.load();
        let mut e = TablesEditor {
            handle,
            current,
            state,
            spare: None,
            pending: Vec::new(),
            stats: EditorStats::default(),
        };
        if e.current.adjacencies.len() != e.state.keys.len() || e.current.lpm.len() != entries.len()
        {
            if let Ok(t) = build_from_state(&e.state, &entries) {
                e.install(t);
            }
        }
        e
    }

    /// The configuration in force (built on demand: O(size)).
    pub fn config(&self) -> NodeConfig {
        self.state.config()
    }

    /// The published tables.
    pub fn tables(&self) -> &Arc<Tables> {
        &self.current
    }

    /// Publication counts.
    pub fn stats(&self) -> EditorStats {
        self.stats
    }

    /// Ports by id, removed ones included.
    pub fn ports(&self) -> &[PortConfig] {
        &self.state.ports
    }

    /// Configured routes, in configuration order.
    pub fn routes(&self) -> impl Iterator<Item = &RouteConfig> + '_ {
        self.state.routes.order.iter().flatten()
    }

    /// Number of configured routes.
    pub fn route_count(&self) -> usize {
        self.state.routes.slots.len()
    }

    /// Neighbours, in configuration order.
    pub fn neighbours(&self) -> &[NeighbourConfig] {
        &self.state.neighbours
    }

    /// Node settings.
    pub fn node(&self) -> &NodeSettings {
        &self.state.node
    }

    /// Tunnel settings.
    pub fn tunnel(&self) -> &TunnelSettings {
        &self.state.tunnel
    }

    /// Process settings.
    pub fn daemon(&self) -> &DaemonSettings {
        &self.state.daemon
    }

    /// Adds or replaces routes by prefix (a prefix given twice: the last
    /// wins). Returns how many distinct prefixes the request named, and the
    /// generation published.
    pub fn add_routes(&mut self, routes: Vec<RouteConfig>) -> Result<(usize, u32), EditError> {
        // The last of each prefix wins.
        let mut last: HashMap<Ipv4Net, usize> = HashMap::with_capacity(routes.len());
        for (i, r) in routes.iter().enumerate() {
            last.insert(r.prefix, i);
        }
        // Report the first failure in configuration order, as a whole
        // validation would: replaced routes keep their place, new ones follow.
        let mut first: Option<(usize, usize, EditError)> = None;
        let mut new_rank = self.state.routes.order.len();
        for (i, r) in routes.iter().enumerate() {
            if last[&r.prefix] != i {
                continue;
            }
            let rank = match self.state.routes.slots.get(&r.prefix) {
                Some(&slot) => slot,
                None => {
                    new_rank += 1;
                    new_rank
                }
            };
            if first.as_ref().is_some_and(|(r0, _, _)| *r0 < rank) {
                continue;
            }
            if let Err((f, m)) = self.state.check_route(r) {
                first = Some((rank, i, err(format!("routes[{i}].{f}"), m)));
            }
        }
        if let Some((_, _, e)) = first {
            return Err(e);
        }
        let added = last
            .keys()
            .filter(|p| !self.state.routes.slots.contains_key(p))
            .count();
        self.check_route_limit(self.state.routes.slots.len() + added)?;
        self.check_tbl8(routes.iter().map(|r| r.prefix))?;
        let n = last.len();
        let mut ch = Change::default();
        for (i, r) in routes.into_iter().enumerate() {
            if last[&r.prefix] != i {
                continue;
            }
            ch.touch(&self.state, r.prefix);
            self.state.count_peer(&r, 1);
            match self.state.routes.slots.get(&r.prefix) {
                Some(&slot) => {
                    if let Some(old) = self.state.routes.order[slot].replace(r) {
                        self.state.count_peer(&old, -1);
                    }
                }
                None => {
                    self.state
                        .routes
                        .slots
                        .insert(r.prefix, self.state.routes.order.len());
                    self.state.routes.order.push(Some(r));
                }
            }
        }
        Ok((n, self.commit(ch)?))
    }

    /// The configured routes become exactly `routes`.
    pub fn replace_routes(&mut self, routes: Vec<RouteConfig>) -> Result<u32, EditError> {
        let mut seen = HashSet::with_capacity(routes.len());
        for (i, r) in routes.iter().enumerate() {
            if !seen.insert(r.prefix) {
                return Err(err(
                    format!("routes[{i}].prefix"),
                    format!("{} is routed by an earlier route", r.prefix),
                ));
            }
            self.state
                .check_route(r)
                .map_err(|(f, m)| err(format!("routes[{i}].{f}"), m))?;
        }
        self.check_route_limit(routes.len())?;
        self.check_tbl8(routes.iter().map(|r| r.prefix))?;
        let mut ch = Change::default();
        for r in self.state.routes.order.iter().flatten() {
            ch.touched.push((r.prefix, self.state.effective(r.prefix)));
        }
        for r in &routes {
            ch.touch(&self.state, r.prefix);
        }
        self.state.routes.order.clear();
        self.state.routes.slots.clear();
        self.state.vxlan_peers.clear();
        self.state.ipip_peers.clear();
        for r in routes {
            self.state.count_peer(&r, 1);
            self.state
                .routes
                .slots
                .insert(r.prefix, self.state.routes.order.len());
            self.state.routes.order.push(Some(r));
        }
        self.commit(ch)
    }

    /// Removes the routes of these prefixes (absent ones are ignored);
    /// returns how many were removed and the generation published.
    pub fn remove_routes(&mut self, prefixes: &[Ipv4Net]) -> Result<(usize, u32), EditError> {
        let mut ch = Change::default();
        let mut removed = 0;
        for &p in prefixes {
            if !self.state.routes.slots.contains_key(&p) {
                continue;
            }
            ch.touch(&self.state, p);
            if let Some(slot) = self.state.routes.slots.remove(&p) {
                if let Some(old) = self.state.routes.order[slot].take() {
                    self.state.count_peer(&old, -1);
                    removed += 1;
                }
            }
        }
        self.compact_routes();
        Ok((removed, self.commit(ch)?))
    }

    /// Drops removed-route holes once they are half the list.
    fn compact_routes(&mut self) {
        let s = &mut self.state;
        if s.routes.order.len() < 64 || s.routes.slots.len() * 2 > s.routes.order.len() {
            return;
        }
        s.routes.order.retain(|r| r.is_some());
        s.routes.slots.clear();
        for (i, r) in s.routes.order.iter().flatten().enumerate() {
            s.routes.slots.insert(r.prefix, i);
        }
    }

    /// Refuses `total` configured routes past `daemon.limits.routes`.
    fn check_route_limit(&self, total: usize) -> Result<(), EditError> {
        let max = self.state.daemon.limits.routes;
        if total > max as usize {
            return Err(Limits::exceeded("routes", "routes", total, max).into());
        }
        Ok(())
    }

    /// Checks pod ports to add: kinds, names, addresses, the port limit and
    /// routes that would clash. Returns the indices (into `ports`) of those
    /// not attached yet; the same port again is no change.
    pub fn check_pod_ports(&self, ports: &[PortConfig]) -> Result<Vec<usize>, EditError> {
        let s = &self.state;
        let mut fresh: Vec<usize> = Vec::new();
        for (i, p) in ports.iter().enumerate() {
            if p.kind != PortKind::Pod {
                return Err(err(
                    format!("ports[{i}].kind"),
                    "only pod ports are added at runtime".into(),
                ));
            }
            let existing = s
                .port_ids
                .get(&p.name)
                .map(|&k| &s.ports[k as usize])
                .or_else(|| fresh.iter().map(|&j| &ports[j]).find(|x| x.name == p.name));
            match existing {
                Some(x) if x == p => {}
                Some(_) => {
                    return Err(err(
                        format!("ports[{i}].name"),
                        format!(
                            "`{}` is attached with other settings; remove it first",
                            p.name
                        ),
                    ))
                }
                None => fresh.push(i),
            }
        }
        if fresh.is_empty() {
            return Ok(fresh);
        }
        let total = s.port_ids.len() + fresh.len();
        if total > s.daemon.limits.ports as usize {
            return Err(Limits::exceeded("ports", "ports", total, s.daemon.limits.ports).into());
        }
        let mut ips: HashSet<Ipv4Addr> = HashSet::new();
        for &i in &fresh {
            let p = &ports[i];
            let ip_taken =
                p.ip.is_some_and(|ip| s.pod_ips.contains_key(&ip) || !ips.insert(ip));
            check_port(&s.node, p, false, ip_taken, 0)
                .and_then(|()| crate::config::check_port_device(s.daemon.backend, p))
                .map_err(|(f, m)| err(format!("ports[{i}].{f}"), m))?;
        }
        // A configured route for a new pod's own address clashes with it.
        let mut clash: Option<usize> = None;
        for &i in &fresh {
            if let Some(ip) = ports[i].ip {
                let net = Ipv4Net::new(ip, 32).expect("a /32");
                if let Some(&slot) = s.routes.slots.get(&net) {
                    clash = Some(clash.map_or(slot, |c| c.min(slot)));
                }
            }
        }
        if let Some(slot) = clash {
            let r = s.routes.order[slot].as_ref().map(|r| r.prefix);
            let k = s.route_position(slot);
            return Err(err(
                format!("route[{k}].prefix"),
                format!(
                    "{} is a pod port's own address, routed to it already",
                    r.map(|p| p.to_string()).unwrap_or_default()
                ),
            ));
        }
        self.check_tbl8(
            fresh
                .iter()
                .filter_map(|&i| ports[i].ip)
                .filter_map(|ip| Ipv4Net::new(ip, 32)),
        )?;
        Ok(fresh)
    }

    /// Adds pod ports (see [`Self::check_pod_ports`]); returns the ids of
    /// those added (empty: nothing to do, nothing published) and the
    /// generation in force.
    pub fn add_pod_ports(
        &mut self,
        ports: Vec<PortConfig>,
    ) -> Result<(Vec<PortId>, u32), EditError> {
        let fresh = self.check_pod_ports(&ports)?;
        if fresh.is_empty() {
            return Ok((Vec::new(), self.current.generation));
        }
        let mut ch = Change {
            ports_changed: true,
            ..Change::default()
        };
        let mut ids = Vec::new();
        for (i, p) in ports.into_iter().enumerate() {
            if !fresh.contains(&i) {
                continue;
            }
            let ip = p.ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
            let net = Ipv4Net::new(ip, 32).expect("a /32");
            ch.touch(&self.state, net);
            // The lowest removed port's id is reused, so ids stay below the
            // most ports ever attached at once however many come and go.
            let id = match self.state.ports.iter().position(|p| p.removed) {
                Some(k) => {
                    self.state.ports[k] = p.clone();
                    ch.flush = true;
                    k as PortId
                }
                None => {
                    self.state.ports.push(p.clone());
                    (self.state.ports.len() - 1) as PortId
                }
            };
            self.state.port_ids.insert(p.name, id);
            self.state.pod_ips.insert(ip, id);
            ids.push(id);
        }
        Ok((ids, self.commit(ch)?))
    }

    /// Removes pod ports by name (absent ones are ignored) and the routes
    /// that name them; the next pods added reuse their ids. Returns the names removed
    /// (empty: nothing published) and the generation in force.
    pub fn remove_pod_ports(&mut self, names: &[String]) -> Result<(Vec<String>, u32), EditError> {
        let mut gone = Vec::new();
        for (i, name) in names.iter().enumerate() {
            if let Some(&id) = self.state.port_ids.get(name) {
                if self.state.ports[id as usize].kind != PortKind::Pod {
                    return Err(err(
                        format!("names[{i}]"),
                        format!("`{name}` is not a pod port"),
                    ));
                }
                if !gone.contains(&id) {
                    gone.push(id);
                }
            }
        }
        if gone.is_empty() {
            return Ok((Vec::new(), self.current.generation));
        }
        let mut ch = Change {
            ports_changed: true,
            ..Change::default()
        };
        let names: Vec<String> = gone
            .iter()
            .map(|&id| self.state.ports[id as usize].name.clone())
            .collect();
        let doomed: Vec<Ipv4Net> = self
            .state
            .routes
            .iter()
            .filter(|r| r.via == Via::Pod && r.port.as_ref().is_some_and(|p| names.contains(p)))
            .map(|r| r.prefix)
            .collect();
        for p in doomed {
            ch.touch(&self.state, p);
            if let Some(slot) = self.state.routes.slots.remove(&p) {
                self.state.routes.order[slot] = None;
            }
        }
        for &id in &gone {
            let p = &self.state.ports[id as usize];
            if let Some(ip) = p.ip {
                let net = Ipv4Net::new(ip, 32).expect("a /32");
                ch.touched.push((net, self.state.effective(net)));
                self.state.pod_ips.remove(&ip);
            }
            let name = p.name.clone();
            self.state.port_ids.remove(&name);
            self.state.ports[id as usize].removed = true;
        }
        self.compact_routes();
        let g = self.commit(ch)?;
        Ok((names, g))
    }

    /// Takes back pod ports just added (a failed attach): removes them and,
    /// when they are the last ids, frees their slots as if never added.
    pub fn undo_pod_ports(&mut self, names: &[String]) -> Result<u32, EditError> {
        let ids: Vec<PortId> = names
            .iter()
            .filter_map(|n| self.state.port_ids.get(n).copied())
            .collect();
        let (_, mut g) = self.remove_pod_ports(names)?;
        if let Some(&first) = ids.iter().min() {
            let first = first as usize;
            if self.state.ports[first..].iter().all(|p| p.removed) {
                self.state.ports.truncate(first);
                g = self.commit(Change {
                    ports_changed: true,
                    ..Change::default()
                })?;
            }
        }
        Ok(g)
    }

    /// Adds or updates neighbours by IP (an IP given twice: the last wins).
    pub fn set_neighbours(&mut self, neighbours: Vec<NeighbourConfig>) -> Result<u32, EditError> {
        for (i, n) in neighbours.iter().enumerate() {
            check_neighbour(n).map_err(|(f, m)| err(format!("neighbours[{i}].{f}"), m))?;
        }
        let held: HashSet<Ipv4Addr> = self.state.neighbours.iter().map(|n| n.ip).collect();
        let added: HashSet<Ipv4Addr> = neighbours
            .iter()
            .map(|n| n.ip)
            .filter(|ip| !held.contains(ip))
            .collect();
        let total = held.len() + added.len();
        let max = self.state.daemon.limits.neighbours;
        if total > max as usize {
            return Err(Limits::exceeded("neighbours", "neighbours", total, max).into());
        }
        for n in neighbours {
            match self.state.neighbours.iter().position(|x| x.ip == n.ip) {
                Some(k) => self.state.neighbours[k] = n,
                None => self.state.neighbours.push(n),
            }
        }
        self.neighbours_changed()
    }

    /// Removes neighbours by IP; returns how many and the generation.
    pub fn remove_neighbours(&mut self, ips: &[Ipv4Addr]) -> Result<(usize, u32), EditError> {
        let before = self.state.neighbours.len();
        self.state.neighbours.retain(|n| !ips.contains(&n.ip));
        let removed = before - self.state.neighbours.len();
        Ok((removed, self.neighbours_changed()?))
    }

    /// Replaces the neighbours learned from the kernel; static ones win.
    /// Publishes only when something changed (then returns its generation).
    pub fn replace_learned_neighbours(
        &mut self,
        learned: &BTreeMap<Ipv4Addr, MacAddr>,
    ) -> Result<Option<u32>, EditError> {
        let mut new: Vec<NeighbourConfig> = self
            .state
            .neighbours
            .iter()
            .filter(|n| !n.learned)
            .cloned()
            .collect();
        for (ip, mac) in learned {
            let n = NeighbourConfig {
                ip: *ip,
                mac: *mac,
                learned: true,
            };
            // A kernel entry without a station MAC (zero, multicast) is
            // not one to forward to: skipped, not an error for the rest;
            // so are those past the limit (in address order).
            if new.len() >= self.state.daemon.limits.neighbours as usize {
                break;
            }
            if !new.iter().any(|n| n.ip == *ip) && check_neighbour(&n).is_ok() {
                new.push(n);
            }
        }
        let key = |v: &[NeighbourConfig]| {
            let mut k: Vec<(Ipv4Addr, MacAddr, bool)> =
                v.iter().map(|n| (n.ip, n.mac, n.learned)).collect();
            k.sort();
            k
        };
        if key(&new) == key(&self.state.neighbours) {
            return Ok(None);
        }
        for (i, n) in new.iter().enumerate() {
            check_neighbour(n).map_err(|(f, m)| err(format!("neighbour[{i}].{f}"), m))?;
        }
        self.state.neighbours = new;
        Ok(Some(self.neighbours_changed()?))
    }

    fn neighbours_changed(&mut self) -> Result<u32, EditError> {
        self.state.neigh = self
            .state
            .neighbours
            .iter()
            .map(|n| (u32::from(n.ip), n.mac))
            .collect();
        self.commit(Change {
            reresolve: true,
            ..Change::default()
        })
    }

    /// Replaces the whole configuration (node or tunnel settings, reload):
    /// validated whole, rebuilt whole, flow caches flushed.
    pub fn replace_config(&mut self, cfg: NodeConfig) -> Result<u32, EditError> {
        cfg.validate()?;
        let (state, entries) = State::from_config(&cfg);
        let t = build_from_state(&state, &entries)?;
        self.state = state;
        self.stats.rebuilds += 1;
        Ok(self.install(t))
    }

    /// Publishes whole tables; the spare is dropped.
    fn install(&mut self, t: Tables) -> u32 {
        let g = t.generation;
        self.spare = None;
        self.pending.clear();
        let t = Arc::new(t);
        self.handle.publish_arc(t.clone());
        self.current = t;
        self.stats.publishes += 1;
        g
    }

    /// Refuses a change whose prefixes longer than /24 need more `tbl8`
    /// groups than are left (counting conservatively: frees are ignored).
    fn check_tbl8(&self, nets: impl Iterator<Item = Ipv4Net>) -> Result<(), EditError> {
        let lpm = &self.current.lpm;
        let mut blocks = HashSet::new();
        for n in nets.filter(|n| n.len() > 24) {
            let b = n.addr_u32() >> 8;
            if !lpm.has_tbl8_group(b << 8)
                && blocks.insert(b)
                && lpm.tbl8_groups_used() + blocks.len() > lpm.tbl8_groups_max()
            {
                return Err(EditError::Tables(TablesError::Route {
                    prefix: n,
                    problem: crate::fib::LpmError::Tbl8Exhausted.to_string(),
                }));
            }
        }
        Ok(())
    }

    /// Turns the state change into route-table operations and adjacencies,
    /// and publishes one new version.
    fn commit(&mut self, ch: Change) -> Result<u32, EditError> {
        let mut ops = Vec::with_capacity(ch.touched.len());
        let mut done: HashSet<Ipv4Net> = HashSet::with_capacity(ch.touched.len());
        let mut fresh: Vec<u32> = Vec::new();
        for &(net, old) in &ch.touched {
            if !done.insert(net) {
                continue;
            }
            let new = self.state.effective(net);
            if new == old {
                continue;
            }
            if let Some(k) = old {
                self.state.release(k);
            }
            match new {
                Some(k) => {
                    let known = self.state.key_index.contains_key(&k);
                    let nh = self.state.intern(k);
                    if !known {
                        fresh.push(nh);
                    }
                    ops.push(LpmOp::Insert(net.addr_u32(), net.len(), nh));
                }
                None => ops.push(LpmOp::Remove(net.addr_u32(), net.len())),
            }
        }
        let generation = next_generation();
        let cur = self.current.clone();
        let mut t = if ch.ports_changed {
            let mut t = Tables::skeleton(
                generation,
                &self.state.node,
                &self.state.tunnel,
                &self.state.ports,
                cur.lpm.clone(),
            );
            t.flush_generation = cur.flush_generation;
            t.route_changes = cur.route_changes.clone();
            t
        } else {
            Tables {
                generation,
                adjacencies: Vec::new(),
                vxlan_peers: Vec::new(),
                ipip_peers: Vec::new(),
                ..(*cur).clone()
            }
        };
        t.vxlan_peers = State::sorted_peers(&self.state.vxlan_peers);
        t.ipip_peers = State::sorted_peers(&self.state.ipip_peers);
        if ch.reresolve {
            t.adjacencies = resolve_all(&t, &self.state);
        } else {
            let mut adj = cur.adjacencies.clone();
            adj.resize(self.state.keys.len(), Adjacency::Drop(DropReason::PortDown));
            let (onlink, gw) = underlay(&self.state);
            for (i, k) in self.state.keys.iter().enumerate() {
                if k.is_none() {
                    adj[i] = Adjacency::Drop(DropReason::PortDown);
                }
            }
            for &i in &fresh {
                if let Some(k) = self.state.keys[i as usize] {
                    adj[i as usize] = t.resolve(k, onlink, gw, &self.state.neigh);
                }
            }
            t.adjacencies = adj;
        }
        // The change log: flow-cache entries older than a change that covers
        // their destination are misses.
        if ch.flush || t.route_changes.len() + ops.len() > ROUTE_LOG_MAX {
            t.route_changes.clear();
            t.flush_generation = generation;
        } else {
            t.route_changes.extend(ops.iter().map(|op| {
                let (prefix, len) = match *op {
                    LpmOp::Insert(p, l, _) | LpmOp::Remove(p, l) => (p, l),
                };
                RouteChange {
                    generation,
                    prefix,
                    len,
                }
            }));
        }
        drop(cur);
        t.lpm = if ops.is_empty() {
            self.current.lpm.clone()
        } else {
            match self.next_lpm(&ops) {
                Ok(lpm) => lpm,
                Err(_) => {
                    // Checked beforehand; should it happen anyway, rebuild
                    // whole from the state so tables and state stay one.
                    let (state, entries) = State::from_config(&self.state.config());
                    let t = build_from_state(&state, &entries)?;
                    self.state = state;
                    self.stats.rebuilds += 1;
                    return Ok(self.install(t));
                }
            }
        };
        let t = Arc::new(t);
        self.handle.publish_arc(t.clone());
        let old = std::mem::replace(&mut self.current, t);
        if !ops.is_empty() {
            self.spare = Some(old.lpm.clone());
            self.pending = ops;
        }
        drop(old);
        self.stats.publishes += 1;
        Ok(generation)
    }

    /// The route table for the next version: the spare, caught up.
    fn next_lpm(&mut self, ops: &[LpmOp]) -> Result<Arc<Lpm>, crate::fib::LpmError> {
        let (mut lpm, pending) = match self.spare.take() {
            Some(mut spare) => {
                let start = Instant::now();
                while Arc::get_mut(&mut spare).is_none() && start.elapsed() < SPARE_WAIT {
                    std::thread::sleep(Duration::from_micros(100));
                }
                if Arc::get_mut(&mut spare).is_some() {
                    self.stats.spare_reuses += 1;
                    (spare, std::mem::take(&mut self.pending))
                } else {
                    self.stats.spare_clones += 1;
                    self.pending.clear();
                    (Arc::new((*self.current.lpm).clone()), Vec::new())
                }
            }
            None => {
                self.stats.spare_clones += 1;
                self.pending.clear();
                (Arc::new((*self.current.lpm).clone()), Vec::new())
            }
        };
        let m = Arc::make_mut(&mut lpm);
        for op in pending.iter().chain(ops) {
            match *op {
                LpmOp::Insert(p, l, nh) => {
                    m.insert(p, l, nh)?;
                }
                LpmOp::Remove(p, l) => {
                    m.remove(p, l);
                }
            }
        }
        Ok(lpm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::craft;

    fn editor() -> (TablesEditor, Arc<TablesHandle>) {
        let cfg = NodeConfig::from_toml_str(craft::REFERENCE_NODE).unwrap();
        let handle = Arc::new(TablesHandle::new(Tables::from_config(&cfg).unwrap()));
        (TablesEditor::new(cfg, handle.clone()), handle)
    }

    fn route(prefix: &str, node: &str) -> RouteConfig {
        RouteConfig {
            prefix: prefix.parse().unwrap(),
            via: Via::Ipip,
            node: Some(node.parse().unwrap()),
            vtep_mac: None,
            port: None,
        }
    }

    fn pod(name: &str, ip: &str) -> PortConfig {
        PortConfig {
            name: name.into(),
            kind: PortKind::Pod,
            mtu: 1450,
            mac: "02:00:00:00:01:09".parse().unwrap(),
            address: None,
            gateway: None,
            ip: Some(ip.parse().unwrap()),
            rx_mode: None,
            removed: false,
            devargs: None,
            vhost_user: None,
        }
    }

    fn ip(s: &str) -> u32 {
        u32::from(s.parse::<Ipv4Addr>().unwrap())
    }

    #[test]
    fn adopts_tables_built_whole_and_matches_them_after_changes() {
        let (mut ed, handle) = editor();
        let g0 = handle.load().generation;
        assert_eq!(ed.stats().publishes, 0, "nothing republished at start");
        ed.add_routes(vec![route("10.9.0.0/16", "192.168.50.9")])
            .unwrap();
        ed.add_routes(vec![route("10.9.1.0/24", "192.168.50.10")])
            .unwrap();
        ed.remove_routes(&["10.5.3.0/24".parse().unwrap()]).unwrap();
        let t = handle.load();
        assert!(t.generation != g0);
        let whole = Tables::from_config(&ed.config()).unwrap();
        for a in [
            "10.9.1.1", "10.9.2.1", "10.5.3.1", "10.5.2.1", "10.5.1.2", "10.5.1.1",
        ] {
            let x = t
                .lpm
                .lookup(ip(a))
                .map(|i| t.adjacencies[i as usize].clone());
            let y = whole
                .lpm
                .lookup(ip(a))
                .map(|i| whole.adjacencies[i as usize].clone());
            assert_eq!(x, y, "{a}");
        }
        assert_eq!(t.ipip_peers, whole.ipip_peers);
        // With no reader holding old versions the spare is reused, never cloned
        // after the first publication.
        let s = ed.stats();
        assert_eq!(s.spare_clones, 1, "{s:?}");
        assert_eq!(s.spare_reuses, 2, "{s:?}");
    }

    #[test]
    fn a_held_spare_is_cloned_after_the_bounded_wait() {
        let (mut ed, handle) = editor();
        ed.add_routes(vec![route("10.9.0.0/16", "192.168.50.9")])
            .unwrap();
        let held = handle.load(); // a worker still on this version
        ed.add_routes(vec![route("10.9.1.0/24", "192.168.50.9")])
            .unwrap();
        ed.add_routes(vec![route("10.9.2.0/24", "192.168.50.9")])
            .unwrap();
        assert_eq!(ed.stats().spare_clones, 2);
        drop(held);
        let t = handle.load();
        for p in ["10.9.1.1", "10.9.2.1", "10.9.3.1"] {
            assert!(t.lpm.lookup(ip(p)).is_some(), "{p}");
        }
    }

    #[test]
    fn adjacency_indices_stay_and_neighbours_reresolve_in_place() {
        let (mut ed, handle) = editor();
        let before = handle.load();
        let i = before.lpm.lookup(ip("10.5.3.1")).unwrap();
        ed.add_routes(vec![route("10.9.0.0/16", "192.168.50.3")])
            .unwrap();
        let t = handle.load();
        assert_eq!(t.lpm.lookup(ip("10.5.3.1")), Some(i));
        assert_eq!(
            t.lpm.lookup(ip("10.9.0.1")),
            Some(i),
            "same next hop, same index"
        );
        let log = t.route_changes.len();
        ed.set_neighbours(vec![NeighbourConfig {
            ip: "192.168.50.3".parse().unwrap(),
            mac: "02:00:00:00:aa:03".parse().unwrap(),
            learned: false,
        }])
        .unwrap();
        let t = handle.load();
        assert_eq!(t.lpm.lookup(ip("10.5.3.1")), Some(i));
        assert!(matches!(t.adjacencies[i as usize], Adjacency::Ipip(_)));
        assert_eq!(t.route_changes.len(), log, "no route change logged");
    }

    #[test]
    fn pod_ports_come_and_go_with_their_routes() {
        let (mut ed, handle) = editor();
        let n0 = ed.routes.len();
        let (ids, _) = ed.add_pod_ports(vec![pod("pod-c", "10.5.1.9")]).unwrap();
        assert_eq!(ids, vec![4]);
        assert_eq!(
            ed.add_pod_ports(vec![pod("pod-c", "10.5.1.9")]).unwrap().0,
            Vec::<PortId>::new(),
            "the same port again is no change"
        );
        let e = ed
            .add_pod_ports(vec![pod("pod-d", "10.5.1.9")])
            .unwrap_err();
        assert!(e.to_string().starts_with("ports[0].ip"), "{e}");
        let mut r = route("10.9.0.0/16", "192.168.50.9");
        r.via = Via::Pod;
        r.node = None;
        r.port = Some("pod-c".into());
        ed.add_routes(vec![r]).unwrap();
        let t = handle.load();
        assert!(matches!(
            t.adjacencies[t.lpm.lookup(ip("10.9.0.1")).unwrap() as usize],
            Adjacency::Deliver(L2Rewrite { port: 4, .. })
        ));
        let (gone, _) = ed.remove_pod_ports(&["pod-c".into()]).unwrap();
        assert_eq!(gone, vec!["pod-c".to_string()]);
        let t = handle.load();
        assert_eq!(
            t.lpm.get(ip("10.9.0.0"), 16),
            None,
            "its route went with it"
        );
        assert_eq!(t.lpm.get(ip("10.5.1.9"), 32), None, "and its /32");
        assert!(t.ports[4].removed);
        assert_eq!(ed.routes.len(), n0);
        // The removed port's id is reused; undo frees trailing ids.
        let (ids, _) = ed.add_pod_ports(vec![pod("pod-e", "10.5.1.10")]).unwrap();
        assert_eq!(ids, vec![4]);
        let (ids, _) = ed.add_pod_ports(vec![pod("pod-f", "10.5.1.11")]).unwrap();
        assert_eq!(ids, vec![5]);
        ed.undo_pod_ports(&["pod-f".into()]).unwrap();
        assert_eq!(handle.load().ports.len(), 5);
        assert_eq!(ed.ports.len(), 5);
    }

    #[test]
    fn port_ids_are_reused_so_churn_never_runs_out_and_reuse_flushes_cached_flows() {
        let (mut ed, handle) = editor();
        let base = ed.ports.len();
        // Ten times the id space, five pods at a time.
        for round in 0..(10 * crate::counters::MAX_PORTS / 5) {
            let pods: Vec<PortConfig> = (0..5)
                .map(|k| pod(&format!("p{round}-{k}"), &format!("10.5.1.{}", 20 + k)))
                .collect();
            let names: Vec<String> = pods.iter().map(|p| p.name.clone()).collect();
            let (ids, _) = ed.add_pod_ports(pods).unwrap();
            let want: Vec<PortId> = (base..base + 5).map(|i| i as PortId).collect();
            assert_eq!(ids, want, "round {round}: the lowest free ids");
            let t = handle.load();
            if round > 0 {
                assert_eq!(
                    t.flush_generation, t.generation,
                    "reuse flushes the flow cache"
                );
            }
            let to = &t.adjacencies[t.lpm.lookup(ip("10.5.1.22")).unwrap() as usize];
            assert!(
                matches!(to, Adjacency::Deliver(L2Rewrite { port, .. }) if *port as usize == base + 2),
                "the /32 goes to the new port: {to:?}"
            );
            ed.remove_pod_ports(&names).unwrap();
        }
        assert_eq!(handle.load().ports.len(), base + 5);
    }

    #[test]
    fn limits_refuse_routes_neighbours_and_ports_past_them_and_change_nothing() {
        let mut cfg = NodeConfig::from_toml_str(craft::REFERENCE_NODE).unwrap();
        let routes = cfg.routes.len() as u32;
        let ports = cfg.ports.len() as u32;
        let nbrs = cfg.neighbours.len() as u32;
        cfg.daemon.limits = Limits {
            routes: routes + 2,
            neighbours: nbrs + 1,
            ports: ports + 1,
        };
        let handle = Arc::new(TablesHandle::new(Tables::from_config(&cfg).unwrap()));
        let mut ed = TablesEditor::new(cfg.clone(), handle.clone());
        let g = handle.load().generation;

        // Routes: replacing one in place is not an addition.
        let r = |p: &str| route(p, "192.168.50.9");
        let e = ed
            .add_routes(vec![r("10.9.1.0/24"), r("10.9.2.0/24"), r("10.9.3.0/24")])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "routes: {} routes would be held; daemon.limits.routes is {}",
                routes + 3,
                routes + 2
            )
        );
        assert_eq!(handle.load().generation, g, "nothing published");
        ed.add_routes(vec![r("10.9.1.0/24"), r("10.9.2.0/24")])
            .unwrap();
        ed.add_routes(vec![r("10.9.1.0/24")]).unwrap();
        let too_many: Vec<RouteConfig> = (0..routes + 3)
            .map(|k| r(&format!("10.9.{}.0/24", 10 + k)))
            .collect();
        assert!(ed.replace_routes(too_many).is_err());

        // Neighbours: one more than the reference node's fits.
        let held = nbrs as usize;
        let n = |ip: &str| NeighbourConfig {
            ip: ip.parse().unwrap(),
            mac: "02:00:00:00:aa:01".parse().unwrap(),
            learned: false,
        };
        let e = ed
            .set_neighbours(vec![n("192.168.50.101"), n("192.168.50.102")])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "neighbours: {} neighbours would be held; daemon.limits.neighbours is {}",
                held + 2,
                held + 1
            )
        );
        assert_eq!(ed.neighbours.len(), held);
        // Learned ones past the limit are not taken.
        let learned: BTreeMap<Ipv4Addr, MacAddr> = (1..=5)
            .map(|k| {
                (
                    Ipv4Addr::new(192, 168, 50, 200 + k),
                    "02:00:00:00:aa:02".parse().unwrap(),
                )
            })
            .collect();
        ed.replace_learned_neighbours(&learned).unwrap();
        assert_eq!(ed.neighbours.len(), held + 1);

        // Ports: one more pod fits.
        ed.add_pod_ports(vec![pod("pod-c", "10.5.1.9")]).unwrap();
        let e = ed
            .add_pod_ports(vec![pod("pod-d", "10.5.1.10")])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "ports: {} ports would be held; daemon.limits.ports is {}",
                ports + 2,
                ports + 1
            )
        );
        ed.remove_pod_ports(&["pod-c".into()]).unwrap();
        ed.add_pod_ports(vec![pod("pod-d", "10.5.1.10")]).unwrap();

        // A file past a limit is refused naming it; so is a bad limit.
        let mut file = cfg.clone();
        file.daemon.limits.routes = routes - 1;
        assert_eq!(file.validate().unwrap_err().key, "route");
        file.daemon.limits.routes = routes;
        file.daemon.limits.ports = 1024;
        assert_eq!(file.validate().unwrap_err().key, "daemon.limits.ports");
    }

    use super::super::L2Rewrite;

    #[test]
    fn deltas_are_refused_by_the_shared_checks() {
        let (mut ed, _h) = editor();
        let g = ed.tables().generation;
        let e = ed
            .add_routes(vec![route("10.5.7.0/24", "0.0.0.0")])
            .unwrap_err();
        assert!(
            matches!(&e, EditError::Invalid(c) if c.key == "routes[0].node"),
            "{e}"
        );
        let e = ed
            .add_routes(vec![route("10.5.7.0/24", "10.5.9.9")])
            .unwrap_err();
        assert!(
            matches!(&e, EditError::Invalid(c) if c.key == "routes[0].node"),
            "{e}"
        );
        let mut r = route("10.5.7.0/24", "192.168.50.7");
        r.via = Via::Vxlan;
        r.vtep_mac = Some(MacAddr::ZERO);
        let e = ed.add_routes(vec![r]).unwrap_err();
        assert!(
            matches!(&e, EditError::Invalid(c) if c.key == "routes[0].vtep_mac"),
            "{e}"
        );
        let e = ed
            .check_pod_ports(&[pod("abcdefghijklmnop", "10.5.1.9")])
            .unwrap_err();
        assert!(
            matches!(&e, EditError::Invalid(c) if c.key == "ports[0].name"),
            "{e}"
        );
        let e = ed.check_pod_ports(&[pod("pod-x", "10.5.1.0")]).unwrap_err();
        assert!(
            matches!(&e, EditError::Invalid(c) if c.key == "ports[0].ip"),
            "{e}"
        );
        let e = ed
            .set_neighbours(vec![NeighbourConfig {
                ip: "192.168.50.9".parse().unwrap(),
                mac: MacAddr::ZERO,
                learned: false,
            }])
            .unwrap_err();
        assert!(
            matches!(&e, EditError::Invalid(c) if c.key == "neighbours[0].mac"),
            "{e}"
        );
        let mut cfg = ed.config();
        cfg.tunnel.vtep_mac = Some(MacAddr::ZERO);
        let e = ed.replace_config(cfg).unwrap_err();
        assert!(
            matches!(&e, EditError::Invalid(c) if c.key == "tunnel.vtep_mac"),
            "{e}"
        );
        assert_eq!(ed.tables().generation, g, "nothing published");
    }
}
