//! Pipeline cost per packet on the reference node (`craft::REFERENCE_NODE`),
//! one core, bursts of 32.
//!
//! Each iteration refills a burst of 32 buffers from 32 template frames
//! (copying the bytes in, as a port's receive would), runs the burst through
//! [`Pipeline::process`], and flushes the TX lists back into the pool. The
//! 32 frames are 32 distinct flows (UDP source ports 10000..10032), so every
//! packet does a real flow-cache lookup; after the first burst they are all
//! hits. `harness_baseline` is the refill and the return to the pool alone,
//! measured in the same run, so the pipeline's own cost is the difference
//! (`harness_baseline_110b` is the same on the decap case's larger frames).
//!
//! Frames are minimum-size: 60 bytes (64 on the wire with the FCS), a UDP
//! datagram with 18 bytes of payload; the decap input is that frame inside
//! outer Ethernet/IPv4/UDP/VXLAN headers (110 bytes).

mod common;

use common::{print_note, BURST};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use sluice_dataplane::buffer::{BufPool, Burst, HeapBuf, HeapPool, PacketBuf};
use sluice_dataplane::config::NodeConfig;
use sluice_dataplane::counters::{DropReason, WorkerCounters};
use sluice_dataplane::craft::{self, Ip};
use sluice_dataplane::pipeline::{Pipeline, PipelineConfig};
use sluice_dataplane::tables::{PortId, Tables};
use sluice_dataplane::wire::{ethernet, ipv4};
use std::net::Ipv4Addr;
use std::sync::Arc;

/// Reference node port ids.
const ETH0: PortId = 0;
const POD_A: PortId = 2;
const POD_B: PortId = 3;

/// UDP payload bytes: 14 + 20 + 8 + 18 = 60-byte frames.
const PAYLOAD: usize = 18;
/// First UDP source port of the 32 flows.
const SPORT0: u16 = 10_000;

/// A pipeline with its tables, pool, burst and the 32 frames to feed it.
struct Rig {
    tables: Tables,
    pipeline: Pipeline<HeapBuf>,
    counters: Arc<WorkerCounters>,
    pool: HeapPool,
    burst: Burst<HeapBuf>,
    frames: Vec<Vec<u8>>,
    in_port: PortId,
}

impl Rig {
    fn new(in_port: PortId, frames: Vec<Vec<u8>>) -> Rig {
        assert_eq!(frames.len(), BURST);
        let cfg = NodeConfig::from_toml_str(craft::REFERENCE_NODE).expect("reference node");
        let tables = Tables::from_config(&cfg).expect("reference tables");
        let counters = Arc::new(WorkerCounters::new());
        let pipeline = Pipeline::new(PipelineConfig::default(), counters.clone());
        Rig {
            tables,
            pipeline,
            counters,
            pool: HeapPool::new(2 * BURST, 2048),
            burst: Burst::new(BURST),
            frames,
            in_port,
        }
    }

    /// Copies the template frames into buffers from the pool.
    #[inline]
    fn refill(&mut self) {
        for f in &self.frames {
            let mut b = self.pool.alloc().expect("the pool holds two bursts");
            let ok = b.append(f.len());
            debug_assert!(ok);
            b.data_mut().copy_from_slice(f);
            let pushed = self.burst.push(b);
            debug_assert!(pushed.is_ok());
        }
    }

    /// One measured iteration: refill, process, flush.
    #[inline]
    fn run(&mut self) {
        self.refill();
        self.pipeline.process(
            &self.tables,
            self.in_port,
            &mut self.burst,
            &mut self.pool,
            0,
        );
        let pool = &mut self.pool;
        self.pipeline.tx().flush(|_, list| {
            for b in list.drain(..) {
                pool.free(black_box(b));
            }
        });
    }

    /// The harness alone: refill, then every buffer straight back.
    #[inline]
    fn run_baseline(&mut self) {
        self.refill();
        for b in self.burst.drain() {
            self.pool.free(black_box(b));
        }
    }

    /// Warms the flow cache, then checks that one more burst takes the path
    /// under test: all 32 packets hit the flow cache, none is dropped, and
    /// all leave on `out_port`, counted by `event`.
    fn warm_and_check(&mut self, out_port: PortId, event: &str) {
        self.run();
        let counters = self.counters.clone();
        let c = &*counters;
        let (hits, misses) = (
            c.events.flow_cache_hits.get(),
            c.events.flow_cache_misses.get(),
        );
        let ev_before = event_count(c, event);
        self.refill();
        self.pipeline.process(
            &self.tables,
            self.in_port,
            &mut self.burst,
            &mut self.pool,
            0,
        );
        let mut out = Vec::new();
        let pool = &mut self.pool;
        self.pipeline.tx().flush(|port, list| {
            for b in list.drain(..) {
                out.push(port);
                pool.free(b);
            }
        });
        let drops: u64 = DropReason::ALL
            .iter()
            .map(|&r| c.drop_counter(r).get())
            .sum();
        assert_eq!(drops, 0, "{event}: no drops");
        assert_eq!(
            out,
            vec![out_port; BURST],
            "{event}: every packet out of port {out_port}"
        );
        assert_eq!(
            c.events.flow_cache_hits.get() - hits,
            BURST as u64,
            "{event}: all flow-cache hits"
        );
        assert_eq!(
            c.events.flow_cache_misses.get(),
            misses,
            "{event}: no misses after warm-up"
        );
        assert_eq!(
            event_count(c, event) - ev_before,
            BURST as u64,
            "{event} counted"
        );
        assert_eq!(
            self.pool.available(),
            self.pool.total(),
            "every buffer back in the pool"
        );
    }
}

fn event_count(c: &WorkerCounters, name: &str) -> u64 {
    let (_, get) = sluice_dataplane::counters::EVENT_FIELDS
        .iter()
        .find(|(n, _)| *n == name)
        .expect("event name");
    get(&c.events).get()
}

/// 32 flows from pod-a to `dst`.
fn from_pod_a(dst: Ipv4Addr) -> Vec<Vec<u8>> {
    (0..BURST as u16)
        .map(|i| craft::pod_a_udp(dst, SPORT0 + i, 5001, PAYLOAD))
        .collect()
}

/// 32 VXLAN frames from node B carrying 32 flows from a remote pod to pod-a.
fn vxlan_to_pod_a() -> Vec<Vec<u8>> {
    (0..BURST as u16)
        .map(|i| {
            let u = craft::udp_datagram(
                craft::REMOTE_POD_B,
                craft::POD_A_IP,
                SPORT0 + i,
                5001,
                &[0x5a; PAYLOAD],
            );
            let ip = craft::ipv4_packet(
                Ip::new(craft::REMOTE_POD_B, craft::POD_A_IP, ipv4::protocol::UDP),
                &u,
            );
            let inner = craft::eth(
                craft::VTEP_MAC,
                craft::mac(0xbb, 2),
                ethernet::ethertype::IPV4,
                &ip,
            );
            craft::vxlan_frame(
                craft::UPLINK_MAC,
                craft::NODE_B_MAC,
                craft::NODE_B_IP,
                craft::NODE_A_IP,
                8472,
                1,
                &inner,
            )
        })
        .collect()
}

/// Path name, ingress port, frames, expected egress port and event counter.
type Case = (&'static str, PortId, Vec<Vec<u8>>, PortId, &'static str);

fn pipeline(c: &mut Criterion) {
    print_note("pipeline");
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(BURST as u64));

    let cases: Vec<Case> = vec![
        (
            "vxlan_encap",
            POD_A,
            from_pod_a(Ipv4Addr::new(10, 5, 2, 7)),
            ETH0,
            "vxlan_encap",
        ),
        ("vxlan_decap", ETH0, vxlan_to_pod_a(), POD_A, "vxlan_decap"),
        (
            "ipip_encap",
            POD_A,
            from_pod_a(Ipv4Addr::new(10, 5, 3, 7)),
            ETH0,
            "ipip_encap",
        ),
        (
            "host_gw",
            POD_A,
            from_pod_a(Ipv4Addr::new(10, 5, 4, 7)),
            ETH0,
            "host_gw",
        ),
        (
            "local_delivery",
            POD_A,
            from_pod_a(craft::POD_B_IP),
            POD_B,
            "delivered",
        ),
    ];

    // The harness alone, on 60-byte frames (every case but decap) and on the
    // 110-byte VXLAN frames of the decap case.
    let mut base = Rig::new(POD_A, from_pod_a(Ipv4Addr::new(10, 5, 2, 7)));
    g.bench_function("harness_baseline", |b| b.iter(|| base.run_baseline()));
    let mut base = Rig::new(ETH0, vxlan_to_pod_a());
    g.bench_function("harness_baseline_110b", |b| b.iter(|| base.run_baseline()));

    for (name, in_port, frames, out_port, event) in cases {
        let mut rig = Rig::new(in_port, frames);
        rig.warm_and_check(out_port, event);
        g.bench_function(name, |b| b.iter(|| rig.run()));
    }
    g.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
