//! Counters: per port rx/tx packets, bytes and drops, drops by named reason,
//! flow-cache hits and misses, and the pipeline's other outcomes.
//!
//! Each worker owns one [`WorkerCounters`] and is its only writer; readers on
//! other threads (the API, `/metrics`) load the values and sum across workers.
//! A counter is an `AtomicU64` written with a plain load and store (no
//! read-modify-write, so no locked instruction on the hot path); with a single
//! writer that loses nothing. The struct is cache-line aligned so two
//! workers' counters never share a line.
//!
//! Every packet the pipeline takes in ends in exactly one of: a TX list (an
//! ARP reply reuses the request's buffer), or a drop counted under a
//! [`DropReason`]. The packets the switch makes (ICMP errors sent, fragments
//! past the first) end in a TX list too; an ICMP error that cannot be sent
//! is `icmp_undeliverable`, never a second drop. So, exactly:
//! `rx_packets + icmp_time_exceeded + icmp_frag_needed + fragments_created -
//! fragmented == put on TX lists + drops` ([`StatsSnapshot::made`]).

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// A single-writer counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning worker may call this.
    #[inline]
    pub fn add(&self, n: u64) {
        let v = self.0.load(Ordering::Relaxed);
        self.0.store(v.wrapping_add(n), Ordering::Relaxed);
    }
    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }
    /// The current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    /// Sets the value to zero (control path, e.g. when a port id is reused).
    pub fn reset(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

macro_rules! drop_reasons {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, )*) => {
        /// Why a packet was dropped. Each reason has its own counter and a
        /// stable snake_case name used by the API, metrics and the replay tool.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum DropReason {
            $( $(#[$doc])* $variant, )*
        }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[ $( DropReason::$variant, )* ];
            /// Number of reasons.
            pub const COUNT: usize = Self::ALL.len();

            /// The stable name.
            pub const fn name(self) -> &'static str {
                match self { $( DropReason::$variant => $name, )* }
            }

            /// The reason with this stable name.
            pub fn from_name(name: &str) -> Option<DropReason> {
                match name { $( $name => Some(DropReason::$variant), )* _ => None }
            }
        }
    };
}

drop_reasons! {
    /// Frame shorter than an Ethernet header.
    EthTruncated = "eth_truncated",
    /// 802.1Q-tagged frame; sluice ports carry untagged frames.
    VlanTagged = "vlan_tagged",
    /// Neither IPv4 nor ARP (e.g. IPv6 from a pod).
    UnsupportedEthertype = "unsupported_ethertype",
    /// ARP that is not Ethernet/IPv4, or truncated.
    ArpMalformed = "arp_malformed",
    /// ARP request for an address the switch does not answer for.
    ArpNotForUs = "arp_not_for_us",
    /// ARP reply or other operation sent to the switch (it keeps no ARP cache of pods).
    ArpIgnored = "arp_ignored",
    /// IPv4 header or packet shorter than it claims.
    Ipv4Truncated = "ipv4_truncated",
    /// IPv4 version field not 4.
    Ipv4BadVersion = "ipv4_bad_version",
    /// IPv4 IHL below 5.
    Ipv4BadHeaderLen = "ipv4_bad_header_len",
    /// IPv4 total length below the header length.
    Ipv4BadTotalLen = "ipv4_bad_total_len",
    /// IPv4 header checksum wrong.
    Ipv4BadChecksum = "ipv4_bad_checksum",
    /// Destination is broadcast, multicast, class E, 0.0.0.0/8 or loopback,
    /// or source is one of those: not routable.
    Ipv4Martian = "ipv4_martian",
    /// Plain IPv4 from the uplink to a pod whose source is not routed
    /// host-gw through the node that sent it (a neighbour spoofing a pod, or
    /// a tunnel-mode node sending unencapsulated).
    HostGwSourceMismatch = "host_gw_source_mismatch",
    /// UDP or TCP header truncated in an unfragmented or first fragment.
    L4Truncated = "l4_truncated",
    /// Pod frame whose source MAC is not the pod's.
    SpoofedSourceMac = "spoofed_source_mac",
    /// Pod packet whose source IP is not the pod's.
    SpoofedSourceIp = "spoofed_source_ip",
    /// Unicast frame not addressed to the switch's MAC on that port.
    NotForUs = "not_for_us",
    /// VXLAN or IPIP from an outer source that is not a known node.
    UnknownTunnelSource = "unknown_tunnel_source",
    /// VXLAN header truncated.
    VxlanTruncated = "vxlan_truncated",
    /// VXLAN header without the I flag.
    VxlanBadFlags = "vxlan_bad_flags",
    /// VXLAN VNI other than this node's.
    VxlanUnknownVni = "vxlan_unknown_vni",
    /// Inner frame of a VXLAN packet not addressed to this node's VTEP MAC.
    VxlanInnerMacMismatch = "vxlan_inner_mac_mismatch",
    /// Inner frame of a VXLAN packet is not IPv4 (or is malformed Ethernet).
    VxlanInnerNotIpv4 = "vxlan_inner_not_ipv4",
    /// Inner IPv4 header of a VXLAN or IPIP packet is malformed.
    InnerIpv4Malformed = "inner_ipv4_malformed",
    /// Outer packet of a tunnel is an IP fragment; sluice does not reassemble.
    TunnelFragment = "tunnel_fragment",
    /// TTL 0 or 1 on a packet to be routed; ICMP time exceeded was sent.
    TtlExceeded = "ttl_exceeded",
    /// No route to the destination.
    NoRoute = "no_route",
    /// The route is a blackhole.
    Blackhole = "blackhole",
    /// The next hop's (or tunnel endpoint's) MAC is not known yet.
    NeighbourUnresolved = "neighbour_unresolved",
    /// Too big for the egress MTU with DF set; ICMP fragmentation needed was sent.
    FragNeeded = "frag_needed",
    /// No free buffer (fragmentation, ICMP) or no headroom for encapsulation.
    NoBuffer = "no_buffer",
    /// Fragmentation would need more than `MAX_FRAGMENTS` pieces, or the
    /// MTU leaves no room for payload.
    TooManyFragments = "too_many_fragments",
    /// The output port's TX list was full.
    TxListFull = "tx_list_full",
    /// The port backend could not send the packet.
    TxFailed = "tx_failed",
    /// The output port is unknown or down.
    PortDown = "port_down",
    /// A packet that arrived on the uplink would be routed back out of it:
    /// a sluice node is a leaf, not a transit router.
    Hairpin = "hairpin",
}

/// Counters of one port, as seen by one worker.
#[derive(Debug, Default)]
pub struct PortCounters {
    /// Packets received.
    pub rx_packets: Counter,
    /// Bytes received.
    pub rx_bytes: Counter,
    /// Packets sent.
    pub tx_packets: Counter,
    /// Bytes sent.
    pub tx_bytes: Counter,
    /// Packets received on this port and dropped (any reason but `tx_failed`).
    pub rx_dropped: Counter,
    /// Packets put on this port's TX list that its backend did not take
    /// (`tx_failed`): charged to the output port, whatever the input.
    pub tx_dropped: Counter,
}

macro_rules! event_counters {
    ($( $(#[$doc:meta])* $field:ident, )*) => {
        /// Outcomes that are not drops. Each event has its own counter, named
        /// by its field (the stable name used by the API, metrics and the
        /// replay tool) and listed in [`EVENT_FIELDS`].
        #[derive(Debug, Default)]
        pub struct EventCounters {
            $( $(#[$doc])* pub $field: Counter, )*
        }

        /// Names and accessors of the event counters, in declaration order:
        /// every event, since both come from one list.
        pub const EVENT_FIELDS: &[EventField] = &[ $( (stringify!($field), |e| &e.$field), )* ];
    };
}

event_counters! {
    /// Flow-cache hits.
    flow_cache_hits,
    /// Flow-cache misses (a route lookup followed).
    flow_cache_misses,
    /// ARP replies sent by the switch.
    arp_replies,
    /// VXLAN packets decapsulated.
    vxlan_decap,
    /// VXLAN packets encapsulated.
    vxlan_encap,
    /// IPIP packets decapsulated.
    ipip_decap,
    /// IPIP packets encapsulated.
    ipip_encap,
    /// Packets forwarded host-gw style.
    host_gw,
    /// Packets delivered to local pods.
    delivered,
    /// Packets sent to the host port.
    to_host,
    /// ICMP time exceeded sent.
    icmp_time_exceeded,
    /// ICMP fragmentation needed sent.
    icmp_frag_needed,
    /// Packets fragmented (each counts once).
    fragmented,
    /// Fragments created.
    fragments_created,
    /// ICMP errors not sent: the per-worker rate limit was reached.
    icmp_rate_limited,
    /// ICMP errors not sent because they would answer an ICMP error, a
    /// non-first fragment or a martian source (RFC 1812 4.3.2.7).
    icmp_suppressed,
    /// ICMP errors made but not sent: no buffer room, or the route back to
    /// the source drops them (no route, blackhole, unresolved neighbour) or
    /// its TX list is full. Not a drop: the packet they answer is one.
    icmp_undeliverable,
}

/// Upper bounds of the burst-size histogram's buckets (packets per burst
/// received in one poll), Prometheus style.
pub const BURST_BUCKETS: [u64; 9] = [1, 2, 4, 8, 16, 32, 64, 128, 256];

/// How busy a worker is: cycles spent on polls that received packets, those
/// packets, and the sizes of the bursts.
#[derive(Debug, Default)]
pub struct WorkerLoad {
    /// TSC cycles spent receiving, processing and sending non-empty bursts.
    pub busy_cycles: Counter,
    /// Packets in those bursts.
    pub busy_packets: Counter,
    /// Bursts by size: bucket `i` counts bursts of at most `BURST_BUCKETS[i]`
    /// packets and more than the bucket before (not cumulative).
    pub burst_sizes: [Counter; BURST_BUCKETS.len()],
}

impl WorkerLoad {
    /// Records one non-empty burst.
    #[inline]
    pub fn record(&self, packets: usize, cycles: u64) {
        self.busy_cycles.add(cycles);
        self.busy_packets.add(packets as u64);
        let i = BURST_BUCKETS
            .iter()
            .position(|&b| packets as u64 <= b)
            .unwrap_or(BURST_BUCKETS.len() - 1);
        self.burst_sizes[i].inc();
    }
}

/// Number of ports a worker keeps counters for; port ids are below this.
pub const MAX_PORTS: usize = 1024;

/// All counters of one worker.
#[derive(Debug)]
#[repr(align(64))]
pub struct WorkerCounters {
    ports: Box<[PortCounters]>,
    /// What ports whose ids were reused had counted ([`Self::retire_port`]).
    retired: PortCounters,
    drops: [Counter; DropReason::COUNT],
    /// Everything that is not a drop.
    pub events: EventCounters,
    /// Cycles and burst sizes.
    pub load: WorkerLoad,
}

impl Default for WorkerCounters {
    fn default() -> Self {
        Self::new()
    }
}

impl WorkerCounters {
    /// Zeroed counters for `MAX_PORTS` ports.
    pub fn new() -> Self {
        WorkerCounters {
            ports: (0..MAX_PORTS).map(|_| PortCounters::default()).collect(),
            retired: PortCounters::default(),
            drops: std::array::from_fn(|_| Counter::default()),
            events: EventCounters::default(),
            load: WorkerLoad::default(),
        }
    }

    /// Counters of port `id` (ids past `MAX_PORTS` share the last slot, which
    /// the control side never hands out).
    #[inline]
    pub fn port(&self, id: u16) -> &PortCounters {
        let i = (id as usize).min(MAX_PORTS - 1);
        &self.ports[i]
    }

    /// The counter of a drop reason.
    #[inline]
    pub fn drop_counter(&self, reason: DropReason) -> &Counter {
        &self.drops[reason as usize]
    }

    /// Counts `n` drops for `reason`, received on port `in_port`.
    #[inline]
    pub fn count_drop(&self, in_port: u16, reason: DropReason, n: u64) {
        self.drops[reason as usize].add(n);
        self.port(in_port).rx_dropped.add(n);
    }

    /// Counts `n` packets that `port`'s backend did not send: a `tx_failed`
    /// drop, charged to the output port's TX side.
    #[inline]
    pub fn count_tx_failed(&self, port: u16, n: u64) {
        self.drops[DropReason::TxFailed as usize].add(n);
        self.port(port).tx_dropped.add(n);
    }

    /// Counts packets sent on `port`.
    #[inline]
    pub fn count_tx(&self, port: u16, packets: u64, bytes: u64) {
        let p = self.port(port);
        p.tx_packets.add(packets);
        p.tx_bytes.add(bytes);
    }

    /// Moves a port's counts into the retired totals and zeroes its
    /// counters, when its id is taken by a new port. Only the owning worker
    /// may call this (it is a write, like [`Counter::add`]).
    pub fn retire_port(&self, id: u16) {
        let p = self.port(id);
        let r = &self.retired;
        for (c, into) in [
            (&p.rx_packets, &r.rx_packets),
            (&p.rx_bytes, &r.rx_bytes),
            (&p.tx_packets, &r.tx_packets),
            (&p.tx_bytes, &r.tx_bytes),
            (&p.rx_dropped, &r.rx_dropped),
            (&p.tx_dropped, &r.tx_dropped),
        ] {
            into.add(c.get());
            c.reset();
        }
    }
}

/// Counters of one port, summed over workers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PortStats {
    /// Packets received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets received and dropped.
    pub rx_dropped: u64,
    /// Packets to send that the port's backend did not take.
    pub tx_dropped: u64,
}

/// Counters summed over workers, ready to print or serve.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Per port, by port name.
    pub ports: BTreeMap<String, PortStats>,
    /// Summed over every port the switch has had, removed ones included:
    /// with [`StatsSnapshot::made`] and the drops, packets are conserved
    /// over these.
    pub port_totals: PortStats,
    /// Drops by reason name (every reason present, zero or not).
    pub drops: BTreeMap<&'static str, u64>,
    /// Non-drop outcomes by name.
    pub events: BTreeMap<&'static str, u64>,
}

impl StatsSnapshot {
    /// Sums `workers`' counters; `ports` names the port ids to report.
    pub fn collect<'a>(
        workers: impl IntoIterator<Item = &'a WorkerCounters> + Clone,
        ports: impl IntoIterator<Item = (u16, String)>,
    ) -> Self {
        let mut snap = StatsSnapshot::default();
        let add = |s: &mut PortStats, p: &PortCounters| {
            s.rx_packets += p.rx_packets.get();
            s.rx_bytes += p.rx_bytes.get();
            s.tx_packets += p.tx_packets.get();
            s.tx_bytes += p.tx_bytes.get();
            s.rx_dropped += p.rx_dropped.get();
            s.tx_dropped += p.tx_dropped.get();
        };
        for (id, name) in ports {
            let mut s = PortStats::default();
            for w in workers.clone() {
                add(&mut s, w.port(id));
            }
            snap.ports.insert(name, s);
        }
        for w in workers.clone() {
            add(&mut snap.port_totals, &w.retired);
            for p in w.ports.iter() {
                add(&mut snap.port_totals, p);
            }
        }
        for &r in DropReason::ALL {
            let total = workers
                .clone()
                .into_iter()
                .map(|w| w.drop_counter(r).get())
                .sum();
            snap.drops.insert(r.name(), total);
        }
        for (name, get) in EVENT_FIELDS {
            let total = workers
                .clone()
                .into_iter()
                .map(|w| get(&w.events).get())
                .sum();
            snap.events.insert(name, total);
        }
        snap
    }

    /// Total drops.
    pub fn total_drops(&self) -> u64 {
        self.drops.values().sum()
    }

    /// Packets the switch made rather than took in: ICMP errors sent and
    /// fragments past the first. With the packets received, they are exactly
    /// the packets put on TX lists plus the drops.
    pub fn made(&self) -> u64 {
        let e = |n: &str| self.events.get(n).copied().unwrap_or(0);
        e("icmp_time_exceeded")
            + e("icmp_frag_needed")
            + e("fragments_created").saturating_sub(e("fragmented"))
    }
}

/// An event's name and its counter.
pub type EventField = (&'static str, fn(&EventCounters) -> &Counter);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_names_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for &r in DropReason::ALL {
            assert!(seen.insert(r.name()), "duplicate name {}", r.name());
            assert_eq!(DropReason::from_name(r.name()), Some(r));
            assert!(r
                .name()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit()));
        }
        assert_eq!(DropReason::from_name("nonsense"), None);
    }

    #[test]
    fn event_names_are_unique_snake_case_and_distinct_from_drops() {
        let mut seen = std::collections::HashSet::new();
        for (name, _) in EVENT_FIELDS {
            assert!(seen.insert(*name), "duplicate event {name}");
            assert!(
                DropReason::from_name(name).is_none(),
                "{name} is a drop too"
            );
            assert!(name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit()));
        }
        // Distinct counters: bumping one moves exactly one name.
        let w = WorkerCounters::new();
        for (k, (name, get)) in EVENT_FIELDS.iter().enumerate() {
            get(&w.events).inc();
            let snap = StatsSnapshot::collect([&w], std::iter::empty());
            assert_eq!(snap.events[name], 1, "{name}");
            assert_eq!(snap.events.values().sum::<u64>(), k as u64 + 1);
        }
    }

    /// Every counter can be incremented and is seen, summed, in a snapshot.
    #[test]
    fn every_counter_increments_and_sums_over_workers() {
        let workers = [WorkerCounters::new(), WorkerCounters::new()];
        for (k, w) in workers.iter().enumerate() {
            let k = k as u64 + 1;
            for &r in DropReason::ALL {
                w.count_drop(3, r, k);
            }
            for (_, get) in EVENT_FIELDS {
                get(&w.events).add(k);
            }
            let p = w.port(3);
            p.rx_packets.add(k);
            p.rx_bytes.add(100 * k);
            w.count_tx(3, k, 10 * k);
            w.count_tx_failed(3, k);
        }
        let mut snap = StatsSnapshot::collect(&workers, [(3u16, "pod0".to_string())]);
        assert_eq!(snap.drops.len(), DropReason::COUNT);
        assert_eq!(snap.drops["tx_failed"], 6, "count_drop and count_tx_failed");
        snap.drops.remove("tx_failed");
        assert!(snap.drops.values().all(|&v| v == 3), "{:?}", snap.drops);
        assert_eq!(snap.events.len(), EVENT_FIELDS.len());
        assert!(snap.events.values().all(|&v| v == 3), "{:?}", snap.events);
        let p = snap.ports["pod0"];
        assert_eq!(
            p,
            PortStats {
                rx_packets: 3,
                rx_bytes: 300,
                tx_packets: 3,
                tx_bytes: 30,
                rx_dropped: 3 * DropReason::COUNT as u64,
                tx_dropped: 3,
            }
        );
        workers[0].retire_port(3);
        assert_eq!(workers[0].port(3).rx_packets.get(), 0);
        assert_eq!(workers[0].port(3).tx_dropped.get(), 0);
    }

    /// The operator's guide documents every counter by its stable name.
    #[test]
    fn docs_list_every_counter() {
        let doc = include_str!("../../docs/metrics.md");
        for name in [
            "rx_packets",
            "rx_bytes",
            "tx_packets",
            "tx_bytes",
            "rx_dropped",
            "tx_dropped",
        ] {
            assert!(
                doc.contains(&format!("`{name}`")),
                "docs/metrics.md lacks port counter {name}"
            );
        }
        for r in DropReason::ALL {
            assert!(
                doc.contains(&format!("| `{}` |", r.name())),
                "docs/metrics.md lacks drop reason {}",
                r.name()
            );
        }
        for (name, _) in EVENT_FIELDS {
            assert!(
                doc.contains(&format!("`{name}`")),
                "docs/metrics.md lacks event {name}"
            );
        }
    }

    #[test]
    fn out_of_range_port_ids_do_not_panic() {
        let w = WorkerCounters::new();
        w.port(u16::MAX).rx_packets.inc();
        assert_eq!(w.port((MAX_PORTS - 1) as u16).rx_packets.get(), 1);
    }

    #[test]
    fn a_retired_port_starts_from_zero_and_the_totals_keep_its_counts() {
        let w = WorkerCounters::new();
        w.port(4).rx_packets.add(7);
        w.port(4).tx_bytes.add(700);
        w.port(5).tx_packets.add(2);
        w.retire_port(4);
        w.port(4).rx_packets.add(1);
        let snap = StatsSnapshot::collect([&w], [(4, "new".to_string())]);
        assert_eq!(snap.ports["new"].rx_packets, 1, "the new port's own count");
        assert_eq!(snap.port_totals.rx_packets, 8);
        assert_eq!(snap.port_totals.tx_bytes, 700);
        assert_eq!(snap.port_totals.tx_packets, 2, "ports not named count too");
    }
}
