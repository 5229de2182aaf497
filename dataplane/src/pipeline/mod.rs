//! The packet pipeline: bursts in, per-port TX lists out.
//!
//! A worker calls [`Pipeline::process`] with a burst received on one port.
//! The burst runs through the stages in order, each over the whole burst:
//!
//! 1. [`parse`]: Ethernet, ARP or IPv4 (with checksum), L4 ports; IPv4
//!    padding is trimmed. Malformed input is marked for drop with its reason.
//! 2. [`classify`]: by ingress port. Pod ports get anti-spoofing and ARP
//!    answers for their gateway; the uplink decapsulates VXLAN and IPIP from
//!    known nodes, takes plain IPv4 to the pod network, and hands the rest to
//!    the host; the host port is routed like a pod without anti-spoofing.
//! 3. [`l3`]: TTL check, then the exact-match flow cache in front of the
//!    longest-prefix-match route table; the result is an adjacency.
//! 4. [`forward`]: MTU (ICMP fragmentation needed, or fragmentation), TTL
//!    decrement, rewrite or encapsulation into the headroom, and the
//!    per-output-port TX lists.
//!
//! Every packet taken in ends in exactly one TX list or one drop counter; a
//! dropped buffer goes back to the pool. The pipeline owns per-worker state
//! only (flow cache, counters, scratch) and reads [`Tables`] without locks.
//! After the first call nothing on this path allocates: the scratch vectors
//! and TX lists are sized up front and grow only when the tables gain ports.
//!
//! The L3 header always sits at [`L3_OFFSET`] once classify is done: VLAN
//! tags are refused and decapsulation strips to the inner Ethernet header.

mod classify;
mod forward;
mod fragment;
mod icmp;
mod l3;
mod parse;
mod tx;

pub use icmp::IcmpLimiter;
pub use tx::TxLists;

use crate::buffer::{BufPool, Burst, PacketBuf, MAX_BURST};
use crate::counters::{DropReason, WorkerCounters};
use crate::fib::flow_cache::{FlowCache, FlowKey};
use crate::tables::{PortId, Tables};
use std::sync::Arc;

/// Offset of the IPv4 header in every packet past the classify stage.
pub const L3_OFFSET: usize = crate::wire::ethernet::HEADER_LEN;

/// Most fragments one packet may be cut into.
pub const MAX_FRAGMENTS: usize = 64;

/// What happens to a packet next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Next {
    /// Route it (IPv4 at `L3_OFFSET`).
    #[default]
    L3,
    /// ARP, for classify.
    Arp,
    /// Another ethertype, for classify.
    NonIp,
    /// TTL expired: answer with ICMP time exceeded.
    TimeExceeded,
    /// Ready: enqueue on this port unchanged.
    Out(PortId),
    /// Drop it.
    Drop(DropReason),
}

/// Per-packet state carried between stages.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Meta {
    pub next: Next,
    pub key: FlowKey,
    pub hash: u32,
    pub adj: u32,
    /// The IPv4 TTL as parsed (of the inner header after decapsulation), so
    /// the L3 stage need not look at the packet again.
    pub ttl: u8,
    /// Arrived on the uplink (decapsulated or routed): never sent back out of it.
    pub from_uplink: bool,
}

impl Meta {
    #[inline]
    pub fn drop(reason: DropReason) -> Meta {
        Meta {
            next: Next::Drop(reason),
            ..Meta::default()
        }
    }
}

/// Per-worker pipeline settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipelineConfig {
    /// Flow-cache entries (rounded up to a power of two).
    pub flow_cache_entries: usize,
    /// Packets a TX list holds before further ones are dropped.
    pub tx_list_capacity: usize,
    /// ICMP errors per second this worker may originate.
    pub icmp_rate_per_sec: u32,
    /// ICMP errors it may originate in a burst.
    pub icmp_burst: u32,
    /// ICMP errors per second to any one host (source of the packet that
    /// provoked them), within the worker's rate.
    pub icmp_source_rate_per_sec: u32,
    /// ICMP errors to any one host in a burst.
    pub icmp_source_burst: u32,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            flow_cache_entries: 8192,
            tx_list_capacity: 2 * MAX_BURST,
            icmp_rate_per_sec: 1000,
            icmp_burst: 50,
            icmp_source_rate_per_sec: 100,
            icmp_source_burst: 10,
        }
    }
}

/// One worker's pipeline.
#[derive(Debug)]
pub struct Pipeline<B> {
    meta: Vec<Meta>,
    cache: FlowCache<u32>,
    counters: Arc<WorkerCounters>,
    tx: TxLists<B>,
    icmp: IcmpLimiter,
    frags: Vec<B>,
}

impl<B: PacketBuf> Pipeline<B> {
    /// A pipeline counting into `counters`.
    pub fn new(cfg: PipelineConfig, counters: Arc<WorkerCounters>) -> Self {
        Pipeline {
            meta: vec![Meta::default(); MAX_BURST],
            cache: FlowCache::new(cfg.flow_cache_entries),
            counters,
            tx: TxLists::new(cfg.tx_list_capacity),
            icmp: IcmpLimiter::new(
                cfg.icmp_rate_per_sec,
                cfg.icmp_burst,
                cfg.icmp_source_rate_per_sec,
                cfg.icmp_source_burst,
            ),
            frags: Vec::with_capacity(MAX_FRAGMENTS),
        }
    }

    /// Runs `burst`, received on `in_port`, through every stage. The burst
    /// is left empty: each buffer is in a TX list or back in `pool`.
    /// `now_ns` is a monotonic clock (for ICMP rate limiting).
    pub fn process<P: BufPool<Buf = B>>(
        &mut self,
        tables: &Tables,
        in_port: PortId,
        burst: &mut Burst<B>,
        pool: &mut P,
        now_ns: u64,
    ) {
        let n = burst.len();
        if n == 0 {
            return;
        }
        self.tx.ensure_ports(tables.ports.len());
        let counters = &*self.counters;
        let port = counters.port(in_port);
        port.rx_packets.add(n as u64);

        let Some(entry) = tables.ports.get(in_port as usize) else {
            port.rx_bytes
                .add(burst.as_slice().iter().map(|b| b.len() as u64).sum());
            counters.count_drop(in_port, DropReason::PortDown, n as u64);
            for b in burst.drain() {
                pool.free(b);
            }
            return;
        };
        let meta = &mut self.meta[..n];
        let bufs = burst.as_mut_slice();
        // parse sums the frame lengths as it goes (before trimming padding).
        port.rx_bytes.add(parse::parse_burst(bufs, meta, in_port));
        classify::classify_burst(tables, in_port, entry, bufs, meta, counters);
        l3::l3_burst(tables, meta, &mut self.cache, counters);
        let mut ctx = forward::Ctx {
            tables,
            in_port,
            counters,
            tx: &mut self.tx,
            pool,
            icmp: &mut self.icmp,
            frags: &mut self.frags,
            now_ns,
            originating: false,
        };
        forward::forward_burst(&mut ctx, burst, &self.meta[..n]);
    }

    /// The TX lists; the port layer drains them after `process`.
    pub fn tx(&mut self) -> &mut TxLists<B> {
        &mut self.tx
    }

    /// The TX lists and the counters at once, for the port layer's flush
    /// (no reference count taken per burst).
    pub fn tx_and_counters(&mut self) -> (&mut TxLists<B>, &WorkerCounters) {
        (&mut self.tx, &self.counters)
    }

    /// This worker's counters.
    pub fn counters(&self) -> &Arc<WorkerCounters> {
        &self.counters
    }

    /// This worker's flow cache (for dumps).
    pub fn flow_cache(&self) -> &FlowCache<u32> {
        &self.cache
    }
}
