//! The agent's loop: config, lease, watch, program.
//!
//! 1. Read the network config (`<prefix>/config`); until it exists and is
//!    valid, wait and say why (`/healthz`, the log).
//! 2. Read sluiced's facts: this node's `PublicIP` (the uplink's address
//!    unless `--public-ip`), VTEP MAC, uplink MTU. Wait for sluiced if needed.
//! 3. Take a lease ([`crate::lease::acquire`]).
//! 4. Write the subnet file, set sluiced's pod network and subnet.
//! 5. List every lease (revision `r`), compute the desired routes, diff them
//!    against the agent's routes in sluiced (`routes.list`) and apply the
//!    delta: a full sync. Then watch from `r + 1`.
//! 6. Loop: watch events change single routes (deltas for the subnets
//!    touched); renew the lease `renew_margin` before it expires (retrying
//!    every `retry_renew` on failure); poll sluiced's epoch every
//!    `sluiced_poll` and sync in full when it changed (sluiced restarted or
//!    reloaded) or a change failed; every `lease_check` (10 s) list the
//!    leases and check the watch against the list
//!    ([`crate::reconcile`]): a change the watch lost is applied from the
//!    list, counted (`sluice_agent_watch_repairs_total`) and logged; a
//!    watch that delivered nothing for a whole interval while changes
//!    waited is reopened.
//!
//! Invariants:
//! - `programmed` is what the agent believes sluiced holds of its routes;
//!   every change is a diff against it; a failed call sets `resync`, and the
//!   next poll re-reads sluiced's routes instead of trusting `programmed`.
//! - Nothing removes a route because the store is unreachable: an outage
//!   only stops updates. When the store is back the watch resumes from the
//!   last revision seen and the store replays what changed meanwhile (a
//!   lease that expired goes; the rest stays untouched, so no route flaps);
//!   if that history was compacted, the agent lists again and applies the
//!   difference.
//! - A restart of the agent changes nothing in sluiced: its own lease is
//!   found by `PublicIP` and renewed in place, the desired routes are
//!   computed from the same leases, and the full sync's delta is empty.
//! - A lost watch event is repaired within two `lease_check` intervals,
//!   whatever the churn (Debian 12's etcd 3.4.23 loses events to a watch
//!   that falls behind a high write rate: docs/lab.md, the soak). The check
//!   needs no quiet moment: it compares per-key revisions, so a change
//!   still on its way is never mistaken for a lost one.
//! - A malformed lease value is logged and counted; the subnet keeps its
//!   last good route (or none if it never had one).
//!
//! With `[bgp]` configured the lease still comes from the store (etcd, or
//! the embedded store when BGP is used alone), but the other nodes' routes
//! come from BGP ([`crate::bgp`]): the speaker announces this node's subnet
//! and reports best-path changes, each becoming a route per the pools'
//! encapsulation; leases only lend VXLAN their VTEP MACs. Until the speaker
//! has converged after the start (every peer's End-of-RIB, or the deferral
//! time), route removals wait: a restarted agent removes nothing its peers
//! still announce, so graceful restart loses no packet.

use crate::bgp::rib::Best;
use crate::bgp::speaker::{self, Command, RibEvent, SpeakerHandle};
use crate::bgp::{BgpConfig, Pool};
use crate::lease::{
    self, config_key, parse_subnet_key, subnet_key, subnets_prefix, Choice, LeaseAttrs,
};
use crate::network::{BackendType, NetworkConfig};
use crate::reconcile::{self, Repair, Suspect};
use crate::routes::{self, Delta, Local};
use crate::status::{KindLabel, OpLabel, Phase, Status};
use crate::store::{Revision, Store, StoreError, Watch, WatchEvent};
use crate::subnet_file::SubnetFile;
use crate::switch::{Facts, Switch, SwitchError};
use sluice_api::{Ipv4Net, RouteConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

/// The agent's settings (flags and config file, see `crate::settings`).
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// The store prefix (`--etcd-prefix`, default `/coreos.com/network`).
    pub prefix: String,
    /// sluiced's API socket.
    pub sluiced_socket: PathBuf,
    /// The subnet file (`--subnet-file`).
    pub subnet_file: PathBuf,
    /// This node's underlay address (`--public-ip`); default: the uplink's.
    pub public_ip: Option<Ipv4Addr>,
    /// `FLANNEL_IPMASQ` (`--ip-masq`).
    pub ip_masq: bool,
    /// The lease's TTL (flannel: 24 h).
    pub lease_ttl: Duration,
    /// Renew this long before the lease expires (flannel: 60 min).
    pub renew_margin: Duration,
    /// Retry a failed renewal after this long (flannel: 1 min).
    pub retry_renew: Duration,
    /// How often sluiced's epoch is checked.
    pub sluiced_poll: Duration,
    /// The longest wait between retries (flannel: 5 s).
    pub backoff_max: Duration,
    /// How often the lease watch is checked against a list
    /// ([`crate::reconcile`]); zero: never.
    pub lease_check: Duration,
    /// Learn routes over BGP instead of from the leases (`[bgp]`).
    pub bgp: Option<BgpConfig>,
}

impl Default for AgentSettings {
    fn default() -> Self {
        AgentSettings {
            prefix: "/coreos.com/network".into(),
            sluiced_socket: "/run/sluice/sluiced.sock".into(),
            subnet_file: crate::subnet_file::DEFAULT_PATH.into(),
            public_ip: None,
            ip_masq: false,
            lease_ttl: lease::LEASE_TTL,
            renew_margin: lease::RENEW_MARGIN,
            retry_renew: Duration::from_secs(60),
            sluiced_poll: Duration::from_secs(1),
            backoff_max: Duration::from_secs(5),
            lease_check: Duration::from_secs(10),
            bgp: None,
        }
    }
}

/// The longest wait between failed full syncs.
const FULL_SYNC_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Exponential backoff, 100 ms doubling up to a cap (flannel's).
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(max: Duration) -> Self {
        Backoff {
            next: Duration::from_millis(100),
            max,
        }
    }
    pub(crate) fn wait(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }
}

/// A small xorshift generator for the subnet pick (no need for a crate).
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn seeded() -> Self {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Rng(t ^ (u64::from(std::process::id()) << 32) | 1)
    }
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentStop {
    /// Asked to stop.
    #[error("stopped")]
    Shutdown,
}

/// The agent over store `S`.
#[derive(Debug)]
pub struct Agent<S: Store> {
    store: S,
    settings: AgentSettings,
    status: Arc<Status>,
    switch: Switch,
    rng: Rng,
}

/// What the agent holds once it has a lease.
#[derive(Debug)]
struct Held {
    cfg: NetworkConfig,
    attrs: LeaseAttrs,
    local: Local,
    mtu: u16,
    /// The lease has a TTL (false: a reservation, never renewed).
    expires: bool,
    renew_at: Instant,
    leases: BTreeMap<Ipv4Net, LeaseAttrs>,
    /// The `mod_revision` each held lease key was applied at (from the
    /// watch or a list).
    revisions: BTreeMap<Ipv4Net, Revision>,
    /// Keys the last check found deleted though their delete was not due
    /// yet ([`crate::reconcile`]).
    suspects: BTreeMap<Ipv4Net, Suspect>,
    /// At the last check: the applied revision, and whether changes waited.
    last_check: Option<(Revision, bool)>,
    desired: BTreeMap<Ipv4Net, RouteConfig>,
    skipped: BTreeMap<Ipv4Net, String>,
    programmed: BTreeMap<Ipv4Net, RouteConfig>,
    epoch: Option<String>,
    resync: bool,
    last_rev: Revision,
    bgp: Option<BgpHeld>,
    /// Failed full syncs back off (100 ms doubling to 30 s): a change
    /// sluiced refuses is not re-sent on every poll.
    sync_backoff: Backoff,
    next_full_sync: Instant,
}

/// What the agent holds of BGP.
#[derive(Debug)]
struct BgpHeld {
    pools: Vec<Pool>,
    best: BTreeMap<Ipv4Net, Best>,
    converged: bool,
    speaker: SpeakerHandle,
}

impl Held {
    /// The desired routes and the skipped leases (or BGP routes).
    fn recompute(&mut self) {
        if let Some(b) = &self.bgp {
            let mut desired = BTreeMap::new();
            let mut skipped = BTreeMap::new();
            for p in b.best.keys() {
                match self.want(*p) {
                    Ok(Some(r)) => {
                        desired.insert(*p, r);
                    }
                    Ok(None) => {}
                    Err(why) => {
                        skipped.insert(*p, why);
                    }
                }
            }
            self.desired = desired;
            self.skipped = skipped;
            return;
        }
        let (desired, skipped) = routes::desired(&self.cfg, &self.local, &self.leases);
        self.desired = desired;
        self.skipped = skipped.into_iter().map(|s| (s.subnet, s.reason)).collect();
    }

    /// The route `s` calls for now, from BGP or from its lease.
    fn want(&self, s: Ipv4Net) -> Result<Option<RouteConfig>, String> {
        match &self.bgp {
            Some(b) => match b.best.get(&s) {
                None => Ok(None),
                Some(best) => {
                    crate::bgp::route_for(&b.pools, &self.local, s, best.next_hop, &self.leases)
                }
            },
            None => match self.leases.get(&s) {
                None => Ok(None),
                Some(a) => routes::route_for(&self.cfg, &self.local, s, a),
            },
        }
    }

    /// Removals wait while BGP has not converged after the start.
    fn removals_deferred(&self) -> bool {
        self.bgp.as_ref().is_some_and(|b| !b.converged)
    }
}

type Stop = watch::Receiver<bool>;

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl<S: Store> Agent<S> {
    /// An agent over `store`, reporting into `status`.
    pub fn new(store: S, settings: AgentSettings, status: Arc<Status>) -> Self {
        let switch = Switch::new(settings.sluiced_socket.clone(), Duration::from_secs(30));
        Agent {
            store,
            settings,
            status,
            switch,
            rng: Rng::seeded(),
        }
    }

    /// Runs until `stop` turns true. Routes and the lease are left in place
    /// on the way out: a restarted agent picks them up unchanged.
    pub async fn run(mut self, mut stop: Stop) -> AgentStop {
        match self.run_inner(&mut stop).await {
            Ok(never) => match never {},
            Err(s) => s,
        }
    }

    async fn sleep(&self, d: Duration, stop: &mut Stop) -> Result<(), AgentStop> {
        if *stop.borrow() {
            return Err(AgentStop::Shutdown);
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => Ok(()),
            _ = stop.changed() => Err(AgentStop::Shutdown),
        }
    }

    fn problem(&self, phase: Phase, problem: String) {
        self.status.update(|s| {
            if s.problem != problem {
                if problem.is_empty() {
                    info!("{phase:?}: resolved");
                } else {
                    warn!("{problem}");
                }
            }
            s.phase = phase;
            s.problem = problem;
        });
    }

    fn store_error(&self, e: &StoreError) {
        self.status.metrics.store_errors.inc();
        self.status.update(|s| s.store_up = false);
        debug!("store: {e}");
    }

    fn store_ok(&self) {
        self.status.update(|s| s.store_up = true);
    }

    fn sluiced_result<T>(&self, r: &Result<T, SwitchError>) {
        let up = match r {
            Ok(_) => true,
            Err(e) => {
                self.status.metrics.sluiced_errors.inc();
                !e.unreachable()
            }
        };
        self.status.update(|s| s.sluiced_up = up);
    }

    async fn read_config(&mut self, stop: &mut Stop) -> Result<NetworkConfig, AgentStop> {
        let key = config_key(&self.settings.prefix);
        let mut backoff = Backoff::new(self.settings.backoff_max);
        loop {
            let problem = match self.store.get(&key).await {
                Ok(Some(kv)) => {
                    self.store_ok();
                    match NetworkConfig::parse(&kv.value) {
                        Ok(cfg) => {
                            if !cfg.ignored.is_empty() {
                                info!(keys = ?cfg.ignored, "network config: keys not used by sluice");
                            }
                            self.problem(Phase::Config, String::new());
                            return Ok(cfg);
                        }
                        Err(e) => format!("{key}: {e}"),
                    }
                }
                Ok(None) => {
                    self.store_ok();
                    format!(
                        "no network config at {key}: write flannel's JSON there \
                         (etcdctl put {key} '{{\"Network\":\"10.244.0.0/16\",\"Backend\":{{\"Type\":\"vxlan\"}}}}' \
                         or sluice-agent network set)"
                    )
                }
                Err(e) => {
                    self.store_error(&e);
                    format!("reading {key}: {e}")
                }
            };
            self.problem(Phase::Config, problem);
            self.sleep(backoff.wait(), stop).await?;
        }
    }

    async fn read_facts(
        &mut self,
        cfg: &NetworkConfig,
        stop: &mut Stop,
    ) -> Result<(Facts, LeaseAttrs), AgentStop> {
        let mut backoff = Backoff::new(self.settings.backoff_max);
        loop {
            let r = self.switch.facts().await;
            self.sluiced_result(&r);
            let problem = match r {
                Ok(f) => match self.attrs_from(cfg, &f) {
                    Ok(a) => {
                        self.problem(Phase::Sluiced, String::new());
                        return Ok((f, a));
                    }
                    Err(p) => p,
                },
                Err(e) => format!("waiting for sluiced: {e}"),
            };
            self.problem(Phase::Sluiced, problem);
            self.sleep(backoff.wait(), stop).await?;
        }
    }

    fn attrs_from(&self, cfg: &NetworkConfig, f: &Facts) -> Result<LeaseAttrs, String> {
        let ip = self
            .settings
            .public_ip
            .or(f.uplink_address.map(|a| a.ip))
            .ok_or(
            "sluiced's uplink has no address and --public-ip is not set: no PublicIP for the lease",
        )?;
        let vtep = f.vtep_mac();
        if cfg.backend.kind == BackendType::Vxlan && vtep.is_none() {
            return Err(
                "vxlan needs a VTEP MAC: sluiced has no uplink and no tunnel.vtep_mac".into(),
            );
        }
        Ok(LeaseAttrs::new(
            ip,
            cfg.backend.kind,
            cfg.backend.vni,
            vtep.unwrap_or(sluice_api::MacAddr::from([2, 0, 0, 0, 0, 1])),
        ))
    }

    /// Lists every lease: the map and the revision. Unreadable keys and
    /// values are logged and counted.
    async fn list_leases(&self) -> Result<lease::Listed, StoreError> {
        let listed = lease::list(&self.store, &self.settings.prefix).await?;
        for (key, why) in &listed.invalid {
            self.status.metrics.invalid.inc();
            warn!(key = %key, "{why}; ignored");
        }
        Ok(listed)
    }

    /// Takes this node's lease (see the module docs), retrying with backoff
    /// until it has one. Returns the subnet and whether it expires.
    async fn acquire(
        &mut self,
        cfg: &NetworkConfig,
        attrs: &LeaseAttrs,
        stop: &mut Stop,
    ) -> Result<(Ipv4Net, bool), AgentStop> {
        let previous = SubnetFile::read(&self.settings.subnet_file)
            .filter(|f| f.network == cfg.network)
            .map(|f| f.subnet);
        let mut backoff = Backoff::new(self.settings.backoff_max);
        loop {
            let rng = &mut self.rng;
            let r = lease::acquire(
                &self.store,
                &self.settings.prefix,
                cfg,
                attrs,
                previous,
                self.settings.lease_ttl,
                &mut |n| rng.below(n),
            )
            .await;
            match r {
                Ok(a) => {
                    self.store_ok();
                    match a.choice {
                        Choice::Existing(s) => {
                            info!(subnet = %s, "reusing this node's lease (matched by PublicIP {})", attrs.public_ip)
                        }
                        Choice::Free(s) => info!(subnet = %s, races_lost = a.races_lost, "leased"),
                    }
                    let s = match a.choice {
                        Choice::Existing(s) | Choice::Free(s) => s,
                    };
                    return Ok((s, a.expires));
                }
                Err(e) => {
                    if let lease::AcquireError::Store(se) = &e {
                        self.store_error(se);
                    }
                    self.problem(Phase::Leasing, e.to_string());
                }
            }
            self.sleep(backoff.wait(), stop).await?;
        }
    }

    async fn run_inner(&mut self, stop: &mut Stop) -> Result<std::convert::Infallible, AgentStop> {
        let cfg = self.read_config(stop).await?;
        let (facts, attrs) = self.read_facts(&cfg, stop).await?;
        self.status.update(|s| s.phase = Phase::Leasing);
        let (subnet, expires) = self.acquire(&cfg, &attrs, stop).await?;
        let mtu = facts
            .uplink_mtu
            .unwrap_or(1500)
            .saturating_sub(cfg.backend.kind.overhead());
        let local = Local {
            subnet,
            public_ip: attrs.public_ip,
            uplink: facts.uplink_address,
        };
        let mut held = Held {
            cfg,
            attrs,
            local,
            mtu,
            expires,
            renew_at: Instant::now(),
            leases: BTreeMap::new(),
            revisions: BTreeMap::new(),
            suspects: BTreeMap::new(),
            last_check: None,
            desired: BTreeMap::new(),
            skipped: BTreeMap::new(),
            programmed: BTreeMap::new(),
            epoch: None,
            resync: true,
            last_rev: 0,
            bgp: None,
            sync_backoff: Backoff::new(FULL_SYNC_BACKOFF_MAX),
            next_full_sync: Instant::now(),
        };
        self.leased(&mut held);
        self.write_subnet_file(&held);
        let bgp_events = match self.settings.bgp.clone() {
            Some(cfg) => Some(self.start_bgp(&mut held, cfg, stop).await?),
            None => None,
        };
        // The first list and full sync; retried until both work.
        let mut backoff = Backoff::new(self.settings.backoff_max);
        loop {
            match self.relist(&mut held).await {
                Ok(()) => break,
                Err(e) => {
                    self.store_error(&e);
                    self.problem(Phase::Leasing, format!("listing leases: {e}"));
                    self.sleep(backoff.wait(), stop).await?;
                }
            }
        }
        self.full_sync(&mut held).await;
        self.status.update(|s| s.phase = Phase::Running);
        self.event_loop(held, bgp_events, stop).await
    }

    /// Starts the BGP speaker (retrying while its port cannot be bound) and
    /// announces this node's subnet.
    async fn start_bgp(
        &mut self,
        held: &mut Held,
        cfg: BgpConfig,
        stop: &mut Stop,
    ) -> Result<tokio::sync::mpsc::Receiver<RibEvent>, AgentStop> {
        let pools = cfg.pools_for(&held.cfg);
        for p in &pools {
            if !held.cfg.network.covers(&p.cidr) {
                warn!(pool = %p.cidr, network = %held.cfg.network, "BGP pool outside the network: its routes are not managed");
            }
        }
        let router_id = cfg.router_id.unwrap_or(held.attrs.public_ip);
        let mut backoff = Backoff::new(self.settings.backoff_max);
        loop {
            match speaker::start(
                cfg.clone(),
                router_id,
                held.attrs.public_ip,
                self.status.clone(),
            )
            .await
            {
                Ok((handle, events)) => {
                    handle.send(Command::Announce(vec![held.local.subnet]));
                    held.bgp = Some(BgpHeld {
                        pools,
                        best: BTreeMap::new(),
                        converged: false,
                        speaker: handle,
                    });
                    self.problem(Phase::Leasing, String::new());
                    return Ok(events);
                }
                Err(e) => {
                    let problem = format!(
                        "BGP: listening on {:?}: {e}",
                        cfg.listen.map(|(a, p)| format!("{a}:{p}"))
                    );
                    self.problem(Phase::Leasing, problem);
                    self.sleep(backoff.wait(), stop).await?;
                }
            }
        }
    }

    /// Takes in the speaker's reports.
    async fn take_bgp(&mut self, held: &mut Held, evs: Vec<RibEvent>) {
        let Some(b) = held.bgp.as_mut() else {
            return;
        };
        let mut touched = BTreeSet::new();
        let mut converged = false;
        for ev in evs {
            match ev {
                RibEvent::Changed(list) => {
                    for (p, best) in list {
                        match best {
                            Some(x) => b.best.insert(p, x),
                            None => b.best.remove(&p),
                        };
                        touched.insert(p);
                    }
                }
                RibEvent::Converged => converged = true,
            }
        }
        if !touched.is_empty() {
            if held.resync {
                self.full_sync(held).await;
            } else {
                self.update(held, &touched).await;
            }
        }
        if converged {
            if let Some(b) = held.bgp.as_mut() {
                b.converged = true;
                held.recompute();
                let delta = routes::diff(&held.programmed, &held.desired);
                info!(
                    removed = delta.remove.len(),
                    upserted = delta.upsert.len(),
                    "BGP converged: applying the routes no peer announces any more"
                );
                if let Err(e) = self.push(held, &delta).await {
                    held.resync = true;
                    warn!("applying BGP's converged routes: {e}; syncing in full on the next poll");
                }
                self.report(held);
            }
        }
    }

    fn leased(&self, held: &mut Held) {
        let ttl = self.settings.lease_ttl;
        let margin = if self.settings.renew_margin < ttl {
            self.settings.renew_margin
        } else {
            ttl / 2
        };
        held.renew_at = Instant::now() + (ttl - margin);
        let expiry = if held.expires {
            now_secs() + ttl.as_secs_f64()
        } else {
            0.0
        };
        self.status.metrics.lease_expiry.set(expiry);
        let subnet = held.local.subnet.to_string();
        self.status.update(|s| s.subnet = Some(subnet));
    }

    fn write_subnet_file(&self, held: &Held) {
        let file = SubnetFile {
            network: held.cfg.network,
            subnet: held.local.subnet,
            mtu: held.mtu,
            ip_masq: self.settings.ip_masq,
        };
        if SubnetFile::read(&self.settings.subnet_file).as_ref() == Some(&file) {
            return;
        }
        match file.write(&self.settings.subnet_file) {
            Ok(()) => {
                info!(path = %self.settings.subnet_file.display(), subnet = %held.local.subnet, mtu = held.mtu, "subnet file written")
            }
            Err(e) => {
                error!(path = %self.settings.subnet_file.display(), "writing the subnet file: {e}")
            }
        }
    }

    /// Lists every lease and recomputes the desired routes; `last_rev`
    /// becomes the list's revision. A missing own lease is recreated.
    async fn relist(&mut self, held: &mut Held) -> Result<(), StoreError> {
        let listed = self.list_leases().await?;
        self.store_ok();
        self.status.metrics.relists.inc();
        held.revisions = listed
            .revisions
            .iter()
            .filter(|(s, _)| listed.leases.contains_key(s))
            .map(|(s, r)| (*s, *r))
            .collect();
        held.leases = listed.leases;
        held.last_rev = listed.revision;
        held.suspects.clear();
        held.last_check = None;
        held.recompute();
        for (s, why) in &held.skipped {
            warn!(subnet = %s, "lease gets no route: {why}");
        }
        if !held.leases.contains_key(&held.local.subnet) {
            warn!(subnet = %held.local.subnet, "this node's lease is gone from the store; taking it again");
            self.retake(held).await?;
        }
        self.report(held);
        Ok(())
    }

    fn report(&self, held: &Held) {
        let leases = held
            .leases
            .len()
            .saturating_sub(usize::from(held.leases.contains_key(&held.local.subnet)));
        let (routes, skipped) = (held.programmed.len(), held.skipped.len());
        if held.bgp.is_some() {
            self.status.metrics.bgp_skipped.set(skipped as i64);
        }
        self.status.update(|s| {
            s.leases = leases;
            s.routes = routes;
            s.skipped = skipped;
        });
    }

    /// Recreates this node's lease after it vanished (deleted by hand, or
    /// expired during a long outage): the same subnet if still free.
    async fn retake(&mut self, held: &mut Held) -> Result<(), StoreError> {
        let key = subnet_key(&self.settings.prefix, held.local.subnet);
        let json = held.attrs.to_json();
        if self
            .store
            .create(&key, json.as_bytes(), self.settings.lease_ttl)
            .await?
        {
            held.expires = true;
            held.leases.insert(held.local.subnet, held.attrs.clone());
            self.leased(held);
            info!(subnet = %held.local.subnet, "lease taken again");
            return Ok(());
        }
        // Someone else holds it now: take another subnet and move there.
        let (never_tx, mut never) = watch::channel(false);
        let moved = self
            .acquire(&held.cfg.clone(), &held.attrs.clone(), &mut never)
            .await;
        drop(never_tx);
        let Ok((subnet, expires)) = moved else {
            return Err(StoreError::Other("stopped while leasing".into()));
        };
        error!(old = %held.local.subnet, new = %subnet, "this node's subnet was taken by another node; moved (pods on the old subnet must be restarted)");
        held.local.subnet = subnet;
        held.expires = expires;
        if let Some(b) = &held.bgp {
            b.speaker.send(Command::Announce(vec![subnet]));
        }
        self.leased(held);
        self.write_subnet_file(held);
        held.resync = true;
        held.recompute();
        Ok(())
    }

    /// [`Self::full_sync_now`] unless the last failure's backoff runs.
    async fn full_sync(&mut self, held: &mut Held) {
        if Instant::now() < held.next_full_sync {
            return;
        }
        self.full_sync_now(held).await;
        if held.resync {
            held.next_full_sync = Instant::now() + held.sync_backoff.wait();
        } else {
            held.sync_backoff = Backoff::new(FULL_SYNC_BACKOFF_MAX);
        }
    }

    /// Reads sluiced's routes and node settings and makes them what the
    /// agent wants; on failure `resync` stays set for the next poll.
    async fn full_sync_now(&mut self, held: &mut Held) {
        self.status.metrics.full_syncs.inc();
        let facts = self.switch.facts().await;
        self.sluiced_result(&facts);
        let facts = match facts {
            Ok(f) => f,
            Err(e) => {
                held.resync = true;
                self.problem(Phase::Running, format!("full sync: {e}"));
                return;
            }
        };
        // The switch's identity may have changed with its restart.
        if let Ok(attrs) = self.attrs_from(&held.cfg, &facts) {
            if attrs != held.attrs {
                info!(old = %held.attrs.to_json(), new = %attrs.to_json(), "this node's lease attributes changed; updating the lease");
                let key = subnet_key(&self.settings.prefix, held.local.subnet);
                let ttl = held.expires.then_some(self.settings.lease_ttl);
                match self.store.put(&key, attrs.to_json().as_bytes(), ttl).await {
                    Ok(()) => {
                        held.attrs = attrs;
                        held.local.public_ip = held.attrs.public_ip;
                        self.leased(held);
                    }
                    Err(e) => self.store_error(&e),
                }
            }
        }
        held.local.uplink = facts.uplink_address;
        let r = self
            .switch
            .ensure_node(&held.cfg, held.local.subnet, &facts)
            .await;
        self.sluiced_result(&r);
        if let Err(e) = r {
            held.resync = true;
            self.problem(Phase::Running, format!("setting sluiced's pod subnet: {e}"));
            return;
        }
        held.recompute();
        let current = self
            .switch
            .managed_routes(held.cfg.network, held.local.subnet)
            .await;
        self.sluiced_result(&current);
        let current = match current {
            Ok(c) => c,
            Err(e) => {
                held.resync = true;
                self.problem(Phase::Running, format!("full sync: {e}"));
                return;
            }
        };
        let delta = routes::diff(&current, &held.desired);
        held.programmed = current;
        match self.push(held, &delta).await {
            Ok(()) => {
                held.resync = false;
                held.epoch = Some(facts.epoch);
                self.status.metrics.last_sync.set(now_secs());
                let t = now_secs() as u64;
                self.status.update(|s| s.last_sync = Some(t));
                info!(
                    routes = held.programmed.len(),
                    upserted = delta.upsert.len(),
                    removed = delta.remove.len(),
                    "full sync with sluiced"
                );
                self.problem(Phase::Running, String::new());
            }
            Err(e) => {
                held.resync = true;
                self.problem(Phase::Running, format!("full sync: {e}"));
            }
        }
        self.report(held);
    }

    /// Applies `delta` and records it in `programmed`.
    async fn push(&self, held: &mut Held, delta: &Delta) -> Result<(), SwitchError> {
        let deferred;
        let delta = if held.removals_deferred() && !delta.remove.is_empty() {
            debug!(
                removals = delta.remove.len(),
                "BGP has not converged since the start: removals wait"
            );
            deferred = Delta {
                upsert: delta.upsert.clone(),
                remove: vec![],
            };
            &deferred
        } else {
            delta
        };
        if delta.is_empty() {
            return Ok(());
        }
        let r = self.switch.apply(delta).await;
        self.sluiced_result(&r);
        r?;
        let m = &self.status.metrics;
        m.route_changes
            .get_or_create(&OpLabel { op: "upsert" })
            .inc_by(delta.upsert.len() as u64);
        m.route_changes
            .get_or_create(&OpLabel { op: "remove" })
            .inc_by(delta.remove.len() as u64);
        for r in &delta.upsert {
            debug!(prefix = %r.prefix, via = %r.via, node = ?r.node, "route set");
        }
        for p in &delta.remove {
            debug!(prefix = %p, "route removed");
        }
        routes::apply(&mut held.programmed, delta);
        Ok(())
    }

    /// Takes in watch events; returns the subnets whose route may change.
    fn take_events(&self, held: &mut Held, events: Vec<WatchEvent>) -> (BTreeSet<Ipv4Net>, bool) {
        let mut touched = BTreeSet::new();
        let mut own_lost = false;
        for ev in events {
            held.last_rev = held.last_rev.max(ev.revision());
            let Some(subnet) = parse_subnet_key(ev.key()) else {
                self.status.metrics.invalid.inc();
                warn!(key = ev.key(), "not a lease key; ignored");
                continue;
            };
            match ev {
                WatchEvent::Put(kv) => {
                    self.status
                        .metrics
                        .lease_events
                        .get_or_create(&KindLabel { kind: "put" })
                        .inc();
                    held.revisions.insert(subnet, kv.mod_revision);
                    match LeaseAttrs::parse(&kv.value) {
                        Ok(a) => {
                            held.leases.insert(subnet, a);
                            touched.insert(subnet);
                        }
                        Err(e) => {
                            self.status.metrics.invalid.inc();
                            warn!(key = %kv.key, "{e}; the subnet keeps its last good route");
                        }
                    }
                }
                WatchEvent::Delete { key, .. } => {
                    self.status
                        .metrics
                        .lease_events
                        .get_or_create(&KindLabel { kind: "delete" })
                        .inc();
                    held.leases.remove(&subnet);
                    held.revisions.remove(&subnet);
                    touched.insert(subnet);
                    if subnet == held.local.subnet {
                        warn!(key = %key, "this node's lease was deleted");
                        own_lost = true;
                    }
                }
            }
        }
        (touched, own_lost)
    }

    /// Recomputes the routes of `touched` and pushes the difference.
    async fn update(&self, held: &mut Held, touched: &BTreeSet<Ipv4Net>) {
        let mut delta = Delta::default();
        for s in touched {
            match held.want(*s) {
                Ok(Some(r)) => {
                    held.skipped.remove(s);
                    held.desired.insert(*s, r);
                }
                Ok(None) => {
                    held.skipped.remove(s);
                    held.desired.remove(s);
                }
                Err(why) => {
                    if held.bgp.is_some() {
                        debug!(prefix = %s, "BGP route gets no sluiced route: {why}");
                    } else {
                        warn!(subnet = %s, "lease gets no route: {why}");
                    }
                    held.skipped.insert(*s, why);
                    held.desired.remove(s);
                }
            }
            match (held.programmed.get(s), held.desired.get(s)) {
                (Some(have), Some(want)) if have == want => {}
                (_, Some(want)) => delta.upsert.push(want.clone()),
                (Some(_), None) => delta.remove.push(*s),
                (None, None) => {}
            }
        }
        if let Err(e) = self.push(held, &delta).await {
            held.resync = true;
            warn!("applying lease changes: {e}; syncing in full on the next poll");
        }
        self.report(held);
    }

    async fn event_loop(
        &mut self,
        mut held: Held,
        mut bgp_events: Option<tokio::sync::mpsc::Receiver<RibEvent>>,
        stop: &mut Stop,
    ) -> Result<std::convert::Infallible, AgentStop> {
        let prefix = subnets_prefix(&self.settings.prefix);
        let mut watch: Option<S::Watch> = None;
        // After a disconnect the watch resumes from the last revision seen
        // (the store replays what was missed, as flanneld relies on); after
        // a compaction it restarts from a fresh list, and then from that
        // list's revision, never an older one (replaying older events over
        // a newer list would resurrect deleted leases).
        let mut relist_first = false;
        let mut resuming = false;
        let mut backoff = Backoff::new(self.settings.backoff_max);
        let mut retry_at = Instant::now();
        let mut poll = tokio::time::interval(self.settings.sluiced_poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is one interval away (the start has just listed).
        let every = self.settings.lease_check.max(Duration::from_millis(100));
        let mut check = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if watch.is_none() && Instant::now() >= retry_at {
                if relist_first {
                    match self.relist_and_push(&mut held).await {
                        Ok(()) => {
                            relist_first = false;
                            info!(
                                revision = held.last_rev,
                                "listed the leases again and synced"
                            );
                        }
                        Err(e) => {
                            self.store_error(&e);
                            retry_at = Instant::now() + backoff.wait();
                        }
                    }
                }
                if !relist_first {
                    match self.store.watch(&prefix, held.last_rev + 1).await {
                        Ok(w) => {
                            self.store_ok();
                            if resuming {
                                info!(revision = held.last_rev + 1, "store back: watch resumed");
                                resuming = false;
                            }
                            backoff = Backoff::new(self.settings.backoff_max);
                            watch = Some(w);
                        }
                        Err(StoreError::Compacted { .. }) => {
                            info!("watch revision compacted; listing again");
                            relist_first = true;
                            continue;
                        }
                        Err(e) => {
                            self.store_error(&e);
                            retry_at = Instant::now() + backoff.wait();
                        }
                    }
                }
            }
            let retry_in = retry_at.saturating_duration_since(Instant::now());
            let renew_in = if held.expires {
                held.renew_at.saturating_duration_since(Instant::now())
            } else {
                Duration::from_secs(86400 * 365)
            };
            tokio::select! {
                _ = stop.changed() => return Err(AgentStop::Shutdown),
                ev = async {
                    match bgp_events.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => match ev {
                    Some(ev) => {
                        // Everything queued goes to sluiced in one change.
                        let mut evs = vec![ev];
                        if let Some(rx) = bgp_events.as_mut() {
                            while let Ok(more) = rx.try_recv() {
                                evs.push(more);
                            }
                        }
                        self.take_bgp(&mut held, evs).await
                    }
                    None => {
                        error!("the BGP speaker stopped; routes kept");
                        bgp_events = None;
                    }
                },
                r = async {
                    match watch.as_mut() {
                        Some(w) => w.next().await.map(Some),
                        None => {
                            tokio::time::sleep(retry_in).await;
                            Ok(None)
                        }
                    }
                } => match r {
                    Ok(None) => {}
                    Ok(Some(events)) => {
                        let (touched, own_lost) = self.take_events(&mut held, events);
                        self.lease_changes(&mut held, &touched, own_lost).await;
                    }
                    Err(StoreError::Compacted { .. }) => {
                        watch = None;
                        relist_first = true;
                        info!("watch revision compacted; listing again");
                    }
                    Err(e) => {
                        watch = None;
                        resuming = true;
                        self.store_error(&e);
                        warn!(revision = held.last_rev + 1, "watch ended: {e}; routes kept, resuming from this revision");
                        retry_at = Instant::now() + backoff.wait();
                    }
                },
                _ = tokio::time::sleep(renew_in) => {
                    self.renew(&mut held).await;
                }
                _ = check.tick(), if watch.is_some() && !self.settings.lease_check.is_zero() => {
                    match self.check_leases(&mut held).await {
                        Ok(false) => {}
                        Ok(true) => {
                            self.status.metrics.watch_restarts.inc();
                            warn!(
                                revision = held.last_rev + 1,
                                interval = ?self.settings.lease_check,
                                "the lease watch delivered nothing for a whole check interval while changes waited; reopening it from this revision"
                            );
                            watch = None;
                            held.last_check = None;
                            retry_at = Instant::now();
                        }
                        Err(e) => {
                            self.store_error(&e);
                            debug!("checking the lease watch: {e}; next time");
                        }
                    }
                }
                _ = poll.tick() => {
                    let e = self.switch.epoch().await;
                    self.sluiced_result(&e);
                    match e {
                        Ok(epoch) if held.epoch.as_deref() != Some(epoch.as_str()) => {
                            if held.epoch.is_some() {
                                info!(epoch, "sluiced restarted or reloaded; programming it again");
                            }
                            held.resync = true;
                            held.next_full_sync = Instant::now();
                        }
                        Ok(_) => {}
                        Err(e) => {
                            self.problem(Phase::Running, format!("sluiced: {e}"));
                            continue;
                        }
                    }
                    if held.resync {
                        self.full_sync(&mut held).await;
                    }
                }
            }
        }
    }

    /// Applies lease changes (from the watch or a repair): this node's lease
    /// lost is taken again, the touched subnets' routes are pushed.
    async fn lease_changes(
        &mut self,
        held: &mut Held,
        touched: &BTreeSet<Ipv4Net>,
        own_lost: bool,
    ) {
        if own_lost {
            if let Err(e) = self.retake(held).await {
                self.store_error(&e);
            }
        }
        if held.resync {
            self.full_sync(held).await;
        } else if held.bgp.is_some() {
            // Leases only lend BGP routes VTEP MACs.
            let all: BTreeSet<Ipv4Net> = held
                .bgp
                .as_ref()
                .map(|b| b.best.keys().copied().collect())
                .unwrap_or_default();
            self.update(held, &all).await;
        } else {
            self.update(held, touched).await;
        }
    }

    /// The periodic check of the watch ([`crate::reconcile`]): lists the
    /// leases, applies the changes the watch lost (counted and logged), and
    /// returns whether the watch is stuck: it delivered nothing since the
    /// last check though changes waited then and now.
    async fn check_leases(&mut self, held: &mut Held) -> Result<bool, StoreError> {
        let listed = lease::list(&self.store, &self.settings.prefix).await?;
        self.store_ok();
        let verdict = reconcile::check(
            reconcile::Held {
                leases: &held.leases,
                revisions: &held.revisions,
                applied: held.last_rev,
            },
            reconcile::Snapshot {
                leases: &listed.leases,
                revisions: &listed.revisions,
                revision: listed.revision,
            },
            &mut held.suspects,
        );
        let stuck = reconcile::stuck(held.last_check, held.last_rev, verdict.pending);
        held.last_check = Some((held.last_rev, verdict.pending));
        debug!(
            applied = held.last_rev,
            list_revision = listed.revision,
            repairs = verdict.repairs.len(),
            pending = verdict.pending,
            "lease watch checked"
        );
        if verdict.repairs.is_empty() {
            return Ok(stuck);
        }
        let mut touched = BTreeSet::new();
        let mut own_lost = false;
        let m = &self.status.metrics;
        for r in verdict.repairs {
            match r {
                Repair::Put {
                    subnet,
                    attrs,
                    revision,
                } => {
                    m.watch_repairs
                        .get_or_create(&KindLabel { kind: "put" })
                        .inc();
                    warn!(
                        subnet = %subnet,
                        revision,
                        applied = held.last_rev,
                        list_revision = listed.revision,
                        "the lease watch lost this lease's change; applied from a list"
                    );
                    held.leases.insert(subnet, attrs);
                    held.revisions.insert(subnet, revision);
                    touched.insert(subnet);
                }
                Repair::Delete { subnet, held: was } => {
                    m.watch_repairs
                        .get_or_create(&KindLabel { kind: "delete" })
                        .inc();
                    warn!(
                        subnet = %subnet,
                        held_revision = was,
                        applied = held.last_rev,
                        list_revision = listed.revision,
                        "the lease watch lost this lease's delete; removed after a list"
                    );
                    held.leases.remove(&subnet);
                    held.revisions.remove(&subnet);
                    touched.insert(subnet);
                    own_lost |= subnet == held.local.subnet;
                }
            }
        }
        self.lease_changes(held, &touched, own_lost).await;
        Ok(stuck)
    }

    async fn relist_and_push(&mut self, held: &mut Held) -> Result<(), StoreError> {
        self.relist(held).await?;
        if held.resync {
            self.full_sync(held).await;
        } else {
            let delta = routes::diff(&held.programmed, &held.desired);
            if let Err(e) = self.push(held, &delta).await {
                held.resync = true;
                warn!("applying the listed leases: {e}");
            }
            self.report(held);
        }
        Ok(())
    }

    async fn renew(&mut self, held: &mut Held) {
        let key = subnet_key(&self.settings.prefix, held.local.subnet);
        match self
            .store
            .put(
                &key,
                held.attrs.to_json().as_bytes(),
                Some(self.settings.lease_ttl),
            )
            .await
        {
            Ok(()) => {
                self.store_ok();
                self.status.metrics.renewals.inc();
                info!(subnet = %held.local.subnet, "lease renewed");
                self.leased(held);
            }
            Err(e) => {
                self.store_error(&e);
                warn!(subnet = %held.local.subnet, "renewing the lease: {e}; retrying in {:?}", self.settings.retry_renew);
                held.renew_at = Instant::now() + self.settings.retry_renew;
            }
        }
    }
}
