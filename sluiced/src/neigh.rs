//! Underlay neighbours learned from the kernel, over rtnetlink.
//!
//! The kernel keeps owning the uplink's address and ARP; sluiced learns the
//! MACs it needs (remote nodes on the uplink's segment, and the underlay
//! gateway for the others) from the kernel's neighbour table. It subscribes
//! to the kernel's neighbour events (`RTNLGRP_NEIGH`) and then dumps the
//! table once; after an overrun (the socket's buffer filled and events were
//! lost, `ENOBUFS`) it dumps it again. When the kernel has no entry for a
//! next hop, sluiced sends it one empty UDP datagram (the discard port, 9)
//! so the kernel resolves it as it would for any traffic of its own.
//!
//! Invariants:
//! - An entry leaves the learned table only when the kernel says its
//!   address cannot be resolved (state `FAILED`). An entry the kernel
//!   forgets (`RTM_DELNEIGH`: its garbage collection drops idle entries
//!   when the table fills, as it does when many next hops are probed) or
//!   is resolving again (`INCOMPLETE`) keeps its last MAC and is probed
//!   again, as the kernel itself keeps using a `STALE` entry while it
//!   checks it: the kernel sends nothing to remote nodes itself (sluiced
//!   does, past it), so their entries go stale and are the first it drops.
//!   Forgotten entries no route wants any more are let go. A re-dump, a
//!   failed read or a lost socket keeps the last-known entries (a dump
//!   only adds or refreshes entries).
//! - Neighbours written in the configuration or set through the API win:
//!   [`Control::learn_neighbours`] never overrides them.
//! - The learned neighbours are pushed into [`Control::learn_neighbours`]
//!   when they change, and again every [`REFRESH`] (so a static entry removed
//!   through the API gives way to the learned one); `Control` publishes
//!   tables only when its view changes, so an idle kernel costs no table
//!   publication.
//! - Everything here runs on the daemon's control runtime (one tokio
//!   current-thread runtime on its own thread); the workers never wait on it.

use super::api::Control;
use crate::config::{PortKind, Via};
use crate::wire::MacAddr;
use futures::StreamExt;
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the wanted next hops are re-read from the configuration, the
/// learned table pushed when it changed, and missing next hops probed.
pub const TICK: Duration = Duration::from_millis(100);

/// How often the learned neighbours are pushed even when unchanged.
pub const REFRESH: Duration = Duration::from_secs(1);

/// How long a dump of the kernel's table may take before it is retried.
pub const DUMP_TIMEOUT: Duration = Duration::from_secs(5);

/// How often one missing next hop is probed at most.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// The receive buffer asked for on the subscription socket (bytes).
pub const RECEIVE_BUFFER: i32 = 1 << 20;

/// How long to wait before opening a new subscription (or dumping again)
/// after one failed.
pub const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// The next hops the configuration needs MACs for: on-link route nodes and
/// the uplink gateway, with the uplink's name.
pub fn wanted(control: &Control) -> Option<(String, Vec<Ipv4Addr>)> {
    let cfg = control.config();
    let up = cfg
        .ports
        .iter()
        .find(|p| p.kind == PortKind::Uplink && !p.removed)?;
    let net = up.address?.network();
    let mut ips: Vec<Ipv4Addr> = cfg
        .routes
        .iter()
        .filter(|r| matches!(r.via, Via::Vxlan | Via::Ipip | Via::HostGw))
        .filter_map(|r| r.node)
        .filter(|n| net.contains(*n))
        .collect();
    if let Some(g) = up.gateway {
        ips.push(g);
    }
    ips.sort();
    ips.dedup();
    Some((up.name.clone(), ips))
}

/// What one kernel neighbour message says about one IPv4 neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeighbourChange {
    /// The kernel has a usable MAC for `ip` on interface `ifindex`.
    Resolved {
        /// The interface the entry is on.
        ifindex: u32,
        /// The neighbour's address.
        ip: Ipv4Addr,
        /// Its MAC.
        mac: MacAddr,
    },
    /// The kernel no longer has the entry (`RTM_DELNEIGH`) or is
    /// resolving it again (`INCOMPLETE`): its last MAC stays in use while
    /// it is probed again.
    Forgotten {
        /// The interface the entry was on.
        ifindex: u32,
        /// The neighbour's address.
        ip: Ipv4Addr,
    },
    /// The kernel could not resolve `ip` on `ifindex` (`FAILED`).
    Gone {
        /// The interface the entry was on.
        ifindex: u32,
        /// The neighbour's address.
        ip: Ipv4Addr,
    },
}

/// Maps one rtnetlink message to a change of the learned table; `None` for
/// messages that say nothing usable about an IPv4 neighbour (other
/// families, other message kinds, entries without a 6-byte MAC).
pub fn change_of_message(msg: &RouteNetlinkMessage) -> Option<NeighbourChange> {
    match msg {
        RouteNetlinkMessage::NewNeighbour(n) => change_of_neighbour(n, false),
        RouteNetlinkMessage::DelNeighbour(n) => change_of_neighbour(n, true),
        _ => None,
    }
}

/// As [`change_of_message`] for a neighbour message; `deleted` for
/// `RTM_DELNEIGH`.
pub fn change_of_neighbour(n: &NeighbourMessage, deleted: bool) -> Option<NeighbourChange> {
    if n.header.family != AddressFamily::Inet {
        return None;
    }
    let ip = n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        _ => None,
    })?;
    let ifindex = n.header.ifindex;
    if deleted || n.header.state == NeighbourState::Incomplete {
        return Some(NeighbourChange::Forgotten { ifindex, ip });
    }
    if n.header.state == NeighbourState::Failed {
        return Some(NeighbourChange::Gone { ifindex, ip });
    }
    let mac = n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(b) => <[u8; 6]>::try_from(b.as_slice()).ok(),
        _ => None,
    })?;
    Some(NeighbourChange::Resolved {
        ifindex,
        ip,
        mac: MacAddr(mac),
    })
}

/// What the watcher does with one message of its subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventAction {
    /// Apply a change to the learned table.
    Apply(NeighbourChange),
    /// Events were lost (the socket's buffer overran, `ENOBUFS`): dump the
    /// kernel's table again, keeping what is known meanwhile.
    DumpAgain,
    /// Nothing to do (other messages, acknowledgements).
    Ignore,
}

/// Maps one message of the neighbour subscription to what the watcher does.
pub fn action_of(payload: &NetlinkPayload<RouteNetlinkMessage>) -> EventAction {
    match payload {
        NetlinkPayload::Overrun(_) => EventAction::DumpAgain,
        NetlinkPayload::InnerMessage(m) => {
            change_of_message(m).map_or(EventAction::Ignore, EventAction::Apply)
        }
        _ => EventAction::Ignore,
    }
}

/// The kernel's usable IPv4 neighbours as last heard, by interface.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KernelNeighbours {
    entries: BTreeMap<(u32, Ipv4Addr), MacAddr>,
    /// Entries the kernel forgot or is resolving again: kept, probed.
    unconfirmed: std::collections::BTreeSet<(u32, Ipv4Addr)>,
}

impl KernelNeighbours {
    /// Applies one change; true when the table changed.
    pub fn apply(&mut self, change: NeighbourChange) -> bool {
        match change {
            NeighbourChange::Resolved { ifindex, ip, mac } => {
                self.unconfirmed.remove(&(ifindex, ip));
                self.entries.insert((ifindex, ip), mac) != Some(mac)
            }
            NeighbourChange::Forgotten { ifindex, ip } => {
                if self.entries.contains_key(&(ifindex, ip)) {
                    self.unconfirmed.insert((ifindex, ip));
                }
                false
            }
            NeighbourChange::Gone { ifindex, ip } => {
                self.unconfirmed.remove(&(ifindex, ip));
                self.entries.remove(&(ifindex, ip)).is_some()
            }
        }
    }

    /// Whether `ip` on `ifindex` is kept with a MAC the kernel forgot.
    pub fn unconfirmed(&self, ifindex: u32, ip: Ipv4Addr) -> bool {
        self.unconfirmed.contains(&(ifindex, ip))
    }

    /// Lets go of forgotten entries on `ifindex` that are not `wanted`
    /// (nothing would probe them again).
    pub fn drop_unconfirmed_except(&mut self, ifindex: u32, wanted: &[Ipv4Addr]) {
        let gone: Vec<(u32, Ipv4Addr)> = self
            .unconfirmed
            .iter()
            .filter(|(i, ip)| *i == ifindex && !wanted.contains(ip))
            .copied()
            .collect();
        for k in gone {
            self.unconfirmed.remove(&k);
            self.entries.remove(&k);
        }
    }

    /// The MAC of `ip` on `ifindex`, when known.
    pub fn get(&self, ifindex: u32, ip: Ipv4Addr) -> Option<MacAddr> {
        self.entries.get(&(ifindex, ip)).copied()
    }

    /// The known MACs of `wanted` on `ifindex`.
    pub fn learned(&self, ifindex: u32, wanted: &[Ipv4Addr]) -> BTreeMap<Ipv4Addr, MacAddr> {
        wanted
            .iter()
            .filter_map(|ip| self.get(ifindex, *ip).map(|mac| (*ip, mac)))
            .collect()
    }

    /// Entries known, on every interface.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is known.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Why a subscription ended.
#[derive(Debug, thiserror::Error)]
enum WatchError {
    #[error("cannot open the neighbour subscription: {0}")]
    Subscribe(std::io::Error),
    #[error("the neighbour subscription closed")]
    Closed,
}

/// The state the watcher keeps across subscriptions.
#[derive(Debug)]
struct Watcher {
    control: Arc<Mutex<Control>>,
    stop: Arc<AtomicBool>,
    kernel: KernelNeighbours,
    /// The uplink's name and interface index, once resolved.
    uplink: Option<(String, u32)>,
    /// What was last pushed into `Control`.
    pushed: Option<(BTreeMap<Ipv4Addr, MacAddr>, Instant)>,
    probe: Option<UdpSocket>,
    last_probe: HashMap<Ipv4Addr, Instant>,
}

impl Watcher {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Reads the wanted next hops, pushes the learned ones when they
    /// changed, and probes missing ones.
    /// Never waits for the control lock (the API may hold it while workers
    /// take up new tables): when it is busy, this tick is skipped, so the
    /// runtime (and `/metrics` on it) is never held up.
    fn sync(&mut self) {
        let want = match self.control.try_lock() {
            Ok(c) => wanted(&c),
            Err(std::sync::TryLockError::Poisoned(p)) => wanted(&p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        let Some((dev, ips)) = want else {
            return;
        };
        let ifindex = match &self.uplink {
            Some((name, idx)) if *name == dev => *idx,
            _ => match sluice_ports::afxdp::ifindex(&dev) {
                Ok(idx) => {
                    self.uplink = Some((dev.clone(), idx));
                    idx
                }
                Err(e) => {
                    tracing::debug!(uplink = %dev, error = %e, "uplink not found");
                    return;
                }
            },
        };
        self.kernel.drop_unconfirmed_except(ifindex, &ips);
        let learned = self.kernel.learned(ifindex, &ips);
        for ip in ips
            .iter()
            .filter(|ip| !learned.contains_key(ip) || self.kernel.unconfirmed(ifindex, **ip))
        {
            let due = self
                .last_probe
                .get(ip)
                .is_none_or(|t| t.elapsed() >= PROBE_INTERVAL);
            if let (true, Some(sock)) = (due, &self.probe) {
                if let Err(e) = sock.send_to(&[], (*ip, 9)) {
                    tracing::debug!(next_hop = %ip, error = %e, "probe not sent");
                }
                self.last_probe.insert(*ip, Instant::now());
            }
        }
        self.last_probe.retain(|ip, _| ips.contains(ip));
        if self
            .pushed
            .as_ref()
            .is_some_and(|(p, at)| *p == learned && at.elapsed() < REFRESH)
        {
            return;
        }
        let mut control = match self.control.try_lock() {
            Ok(c) => c,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        match control.learn_neighbours(&learned) {
            Ok(published) => {
                if published {
                    tracing::debug!(neighbours = learned.len(), "learned neighbours published");
                }
                self.pushed = Some((learned, Instant::now()));
            }
            Err(e) => tracing::warn!(error = %e, "learned neighbours not applied"),
        }
    }

    /// Dumps the kernel's IPv4 neighbours into the table (adding and
    /// refreshing, never emptying it).
    async fn dump(&mut self, handle: &rtnetlink::Handle) -> Result<(), String> {
        let request = handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Inet)
            .execute();
        let collect = async {
            let mut entries = Vec::new();
            futures::pin_mut!(request);
            while let Some(m) = request.next().await {
                entries.push(m.map_err(|e| e.to_string())?);
            }
            Ok::<_, String>(entries)
        };
        let entries = tokio::time::timeout(DUMP_TIMEOUT, collect)
            .await
            .map_err(|_| format!("no complete answer in {DUMP_TIMEOUT:?}"))??;
        for n in &entries {
            if let Some(c) = change_of_neighbour(n, false) {
                self.kernel.apply(c);
            }
        }
        tracing::debug!(
            entries = entries.len(),
            known = self.kernel.len(),
            "kernel neighbour table dumped"
        );
        Ok(())
    }

    /// One subscription: subscribe, dump, follow events until the socket
    /// closes or `stop`.
    async fn follow(&mut self) -> Result<(), WatchError> {
        use rtnetlink::sys::AsyncSocket;
        let (mut connection, handle, mut events) =
            rtnetlink::new_multicast_connection(&[rtnetlink::MulticastGroup::Neigh])
                .map_err(WatchError::Subscribe)?;
        // A larger buffer makes overruns (and so re-dumps) rarer on busy
        // nodes; the kernel caps it at net.core.rmem_max.
        if let Err(e) = connection
            .socket_mut()
            .socket_mut()
            .set_rx_buf_sz(RECEIVE_BUFFER)
        {
            tracing::debug!(error = %e, "neighbour socket buffer not enlarged");
        }
        let connection = tokio::spawn(connection);
        let _abort = AbortOnDrop(connection);
        let mut dump_needed = true;
        let mut next_dump = Instant::now();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !self.stopped() {
            if dump_needed && Instant::now() >= next_dump {
                match self.dump(&handle).await {
                    Ok(()) => dump_needed = false,
                    Err(e) => {
                        tracing::warn!(error = %e, known = self.kernel.len(), "kernel neighbour dump failed; keeping the last-known entries and retrying");
                        next_dump = Instant::now() + RECONNECT_DELAY;
                    }
                }
            }
            tokio::select! {
                event = events.next() => {
                    let Some((message, _)) = event else {
                        return Err(WatchError::Closed);
                    };
                    match action_of(&message.payload) {
                        EventAction::DumpAgain => {
                            tracing::warn!("neighbour events overran the socket buffer; dumping the table again");
                            dump_needed = true;
                        }
                        EventAction::Apply(c) => {
                            self.kernel.apply(c);
                        }
                        EventAction::Ignore => {}
                    }
                }
                _ = tick.tick() => self.sync(),
            }
        }
        Ok(())
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs until `stop`: keeps the learned neighbours in step with the kernel.
/// Must run inside a tokio runtime with I/O and time enabled.
pub async fn watch(control: Arc<Mutex<Control>>, stop: Arc<AtomicBool>) {
    let probe = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|s| s.set_nonblocking(true).map(|()| s));
    let probe = match probe {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "no probe socket: missing next hops are not resolved by sluiced");
            None
        }
    };
    let mut w = Watcher {
        control,
        stop,
        kernel: KernelNeighbours::default(),
        uplink: None,
        pushed: None,
        probe,
        last_probe: HashMap::new(),
    };
    while !w.stopped() {
        if let Err(e) = w.follow().await {
            tracing::warn!(error = %e, known = w.kernel.len(), "keeping the last-known neighbours; subscribing again");
            w.sync();
            let until = Instant::now() + RECONNECT_DELAY;
            while Instant::now() < until && !w.stopped() {
                tokio::time::sleep(TICK).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::Parseable;

    const UPLINK: u32 = 7;

    /// An `ndmsg` as the kernel sends it (AF_INET, ifindex 7), with
    /// `NDA_DST` and, when given, `NDA_LLADDR`.
    fn ndmsg(state: u16, ip: [u8; 4], mac: Option<[u8; 6]>) -> Vec<u8> {
        let mut b = vec![2, 0, 0, 0];
        b.extend_from_slice(&UPLINK.to_ne_bytes());
        b.extend_from_slice(&state.to_ne_bytes());
        b.extend_from_slice(&[0, 1]); // flags, type RTN_UNICAST
        b.extend_from_slice(&8u16.to_ne_bytes());
        b.extend_from_slice(&1u16.to_ne_bytes()); // NDA_DST
        b.extend_from_slice(&ip);
        if let Some(mac) = mac {
            b.extend_from_slice(&10u16.to_ne_bytes());
            b.extend_from_slice(&2u16.to_ne_bytes()); // NDA_LLADDR
            b.extend_from_slice(&mac);
            b.extend_from_slice(&[0, 0]); // NLA padding
        }
        b
    }

    const NUD_INCOMPLETE: u16 = 0x01;
    const NUD_REACHABLE: u16 = 0x02;
    const NUD_STALE: u16 = 0x04;
    const NUD_FAILED: u16 = 0x20;

    fn parse(bytes: &[u8]) -> NeighbourMessage {
        NeighbourMessage::parse(bytes).expect("a well-formed ndmsg")
    }

    const PEER: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 2);
    const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x50, 0x02];

    #[test]
    fn reachable_and_stale_entries_resolve() {
        for state in [NUD_REACHABLE, NUD_STALE] {
            let m = parse(&ndmsg(state, PEER.octets(), Some(PEER_MAC)));
            assert_eq!(
                change_of_message(&RouteNetlinkMessage::NewNeighbour(m)),
                Some(NeighbourChange::Resolved {
                    ifindex: UPLINK,
                    ip: PEER,
                    mac: MacAddr(PEER_MAC)
                })
            );
        }
    }

    #[test]
    fn failed_entries_are_gone_deleted_and_incomplete_ones_forgotten() {
        let forgotten = Some(NeighbourChange::Forgotten {
            ifindex: UPLINK,
            ip: PEER,
        });
        let m = parse(&ndmsg(NUD_REACHABLE, PEER.octets(), Some(PEER_MAC)));
        assert_eq!(
            change_of_message(&RouteNetlinkMessage::DelNeighbour(m)),
            forgotten
        );
        let m = parse(&ndmsg(NUD_FAILED, PEER.octets(), None));
        assert_eq!(
            change_of_message(&RouteNetlinkMessage::NewNeighbour(m)),
            Some(NeighbourChange::Gone {
                ifindex: UPLINK,
                ip: PEER,
            })
        );
        let m = parse(&ndmsg(NUD_INCOMPLETE, PEER.octets(), None));
        assert_eq!(change_of_neighbour(&m, false), forgotten);
    }

    /// Finding (the soak): the kernel's garbage collection dropped a remote
    /// node's idle entry while many next hops were probed, sluiced forgot
    /// its MAC and packets to it were dropped as `neighbour_unresolved`
    /// until it was resolved again. A forgotten entry now keeps its MAC
    /// until the kernel resolves it again or says it cannot.
    #[test]
    fn a_forgotten_entry_keeps_its_mac_until_resolved_again_or_failed() {
        let mut t = KernelNeighbours::default();
        let mac = MacAddr(PEER_MAC);
        t.apply(NeighbourChange::Resolved {
            ifindex: UPLINK,
            ip: PEER,
            mac,
        });
        let del = parse(&ndmsg(NUD_STALE, PEER.octets(), Some(PEER_MAC)));
        assert!(!t.apply(change_of_neighbour(&del, true).unwrap()));
        assert_eq!(t.get(UPLINK, PEER), Some(mac), "still in use");
        assert!(t.unconfirmed(UPLINK, PEER), "and probed again");
        let again = parse(&ndmsg(NUD_INCOMPLETE, PEER.octets(), None));
        assert!(!t.apply(change_of_neighbour(&again, false).unwrap()));
        assert_eq!(t.get(UPLINK, PEER), Some(mac), "kept while resolving");
        let back = parse(&ndmsg(NUD_REACHABLE, PEER.octets(), Some(PEER_MAC)));
        assert!(!t.apply(change_of_neighbour(&back, false).unwrap()));
        assert!(!t.unconfirmed(UPLINK, PEER), "confirmed");
        // Forgotten, and no route wants it any more: let go.
        t.apply(change_of_neighbour(&del, true).unwrap());
        t.drop_unconfirmed_except(UPLINK, &[]);
        assert_eq!(t.get(UPLINK, PEER), None);
        // A wanted one the kernel cannot resolve: gone.
        t.apply(NeighbourChange::Resolved {
            ifindex: UPLINK,
            ip: PEER,
            mac,
        });
        t.apply(change_of_neighbour(&del, true).unwrap());
        t.drop_unconfirmed_except(UPLINK, &[PEER]);
        assert_eq!(t.get(UPLINK, PEER), Some(mac));
        let failed = parse(&ndmsg(NUD_FAILED, PEER.octets(), None));
        assert!(t.apply(change_of_neighbour(&failed, false).unwrap()));
        assert_eq!(t.get(UPLINK, PEER), None);
        assert!(!t.unconfirmed(UPLINK, PEER));
    }

    #[test]
    fn entries_without_a_mac_or_of_other_families_say_nothing() {
        let m = parse(&ndmsg(NUD_STALE, PEER.octets(), None));
        assert_eq!(change_of_neighbour(&m, false), None);
        let mut v6 = parse(&ndmsg(NUD_REACHABLE, PEER.octets(), Some(PEER_MAC)));
        v6.header.family = AddressFamily::Inet6;
        assert_eq!(change_of_neighbour(&v6, false), None);
        let link = RouteNetlinkMessage::NewLink(Default::default());
        assert_eq!(change_of_message(&link), None);
    }

    #[test]
    fn an_overrun_asks_for_a_dump_and_events_apply() {
        assert_eq!(
            action_of(&NetlinkPayload::Overrun(Vec::new())),
            EventAction::DumpAgain
        );
        let m = parse(&ndmsg(NUD_REACHABLE, PEER.octets(), Some(PEER_MAC)));
        assert_eq!(
            action_of(&NetlinkPayload::InnerMessage(
                RouteNetlinkMessage::NewNeighbour(m)
            )),
            EventAction::Apply(NeighbourChange::Resolved {
                ifindex: UPLINK,
                ip: PEER,
                mac: MacAddr(PEER_MAC)
            })
        );
        assert_eq!(action_of(&NetlinkPayload::Noop), EventAction::Ignore);
    }

    #[test]
    fn the_table_keeps_entries_until_the_kernel_says_they_are_gone() {
        let mut t = KernelNeighbours::default();
        let resolved = |mac| NeighbourChange::Resolved {
            ifindex: UPLINK,
            ip: PEER,
            mac: MacAddr(mac),
        };
        assert!(t.apply(resolved(PEER_MAC)));
        assert!(!t.apply(resolved(PEER_MAC)), "no change, nothing to push");
        // A re-dump that no longer lists the entry (or a failed read) applies
        // nothing: the entry stays.
        let gw = Ipv4Addr::new(192, 168, 50, 1);
        let dump = [parse(&ndmsg(
            NUD_STALE,
            gw.octets(),
            Some([2, 0, 0, 0, 0x50, 1]),
        ))];
        for n in &dump {
            t.apply(change_of_neighbour(n, false).unwrap());
        }
        assert_eq!(
            t.learned(UPLINK, &[gw, PEER]),
            BTreeMap::from([
                (gw, MacAddr([2, 0, 0, 0, 0x50, 1])),
                (PEER, MacAddr(PEER_MAC))
            ])
        );
        // A new MAC replaces the old one.
        assert!(t.apply(resolved([2, 0, 0, 0, 0x50, 9])));
        assert_eq!(t.get(UPLINK, PEER), Some(MacAddr([2, 0, 0, 0, 0x50, 9])));
        // Entries on other interfaces are not the uplink's.
        assert!(t.learned(UPLINK + 1, &[PEER]).is_empty());
        // The kernel's word that it cannot be resolved removes it.
        let failed = parse(&ndmsg(NUD_FAILED, PEER.octets(), None));
        assert!(t.apply(change_of_neighbour(&failed, false).unwrap()));
        assert_eq!(t.get(UPLINK, PEER), None);
        assert_eq!(t.len(), 1);
    }
}
