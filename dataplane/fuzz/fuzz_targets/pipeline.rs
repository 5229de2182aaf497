//! Fuzz target `pipeline`: one burst through the reference node.
//!
//! The input is a small script. Its first byte picks the ingress port of
//! `craft::REFERENCE_NODE` (bits 0-1: eth0, host, pod-a, pod-b) and, when
//! bit 7 is set, asks the harness to recompute the IPv4 header checksums of
//! every frame (the outer header, and the inner one of a VXLAN or IPIP
//! packet) so that mutations get past the checksum check and reach classify,
//! decapsulation, routing and fragmentation. The rest is up to 32 frames,
//! each a 2-byte big-endian length and that many bytes (cut short by the end
//! of the input, and at `MAX_FRAME`). The burst runs through a fresh
//! `Pipeline` drawing on a small `HeapPool`, then the TX lists are flushed.
//! Nothing may panic, and then:
//!
//! - every buffer is back in the pool (no leak, no double free);
//! - every frame taken in is accounted for: sent or counted as a drop;
//! - every IPv4 frame sent has a valid header (lengths and checksum), and so
//!   has the inner IPv4 packet of every VXLAN or IPIP frame the switch
//!   encapsulated.
//!
//! The pool lives as long as the process (allocating 100 buffers per input
//! would dominate the run time); buffers come back reset, and the pipeline
//! never reads bytes of a buffer it has not written or received, so a
//! recycled buffer cannot change the outcome of an input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_dataplane::buffer::{BufPool, Burst, HeapBuf, HeapPool, PacketBuf, DEFAULT_HEADROOM};
use sluice_dataplane::config::NodeConfig;
use sluice_dataplane::counters::{DropReason, WorkerCounters};
use sluice_dataplane::craft::{REFERENCE_NODE, REFERENCE_PORTS};
use sluice_dataplane::pipeline::{Pipeline, PipelineConfig, MAX_FRAGMENTS};
use sluice_dataplane::tables::{PortId, PortRole, Tables};
use sluice_dataplane::wire::checksum;
use sluice_dataplane::wire::{ethernet, ipv4, udp, vxlan};
use std::cell::RefCell;
use std::sync::{Arc, OnceLock};

/// Most frames in one input.
const MAX_FRAMES: usize = 32;
/// Largest frame taken from the input (bigger than every MTU of the node,
/// so fragmentation and "fragmentation needed" are reachable).
const MAX_FRAME: usize = 4096;
/// Buffers: a full burst, the fragments of one packet, and spare.
const POOL_SIZE: usize = MAX_FRAMES + MAX_FRAGMENTS + 8;
/// Each buffer: headroom, the largest frame, room for an ICMP error's growth.
const BUF_SIZE: usize = DEFAULT_HEADROOM + MAX_FRAME + 256;

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let cfg = NodeConfig::from_toml_str(REFERENCE_NODE).expect("reference node");
        Tables::from_config(&cfg).expect("reference tables")
    })
}

/// Bit of the first byte asking for checksums to be fixed.
const FIX_CHECKSUMS: u8 = 0x80;

/// Splits the script into its ingress port, its checksum flag and frames.
fn frames(data: &[u8]) -> Option<(PortId, bool, Vec<&[u8]>)> {
    let (&first, mut rest) = data.split_first()?;
    let port = (first as usize % REFERENCE_PORTS.len()) as PortId;
    let mut out = Vec::new();
    while out.len() < MAX_FRAMES && rest.len() >= 2 {
        let len = (u16::from_be_bytes([rest[0], rest[1]]) as usize)
            .min(rest.len() - 2)
            .min(MAX_FRAME);
        out.push(&rest[2..2 + len]);
        rest = &rest[2 + len..];
    }
    Some((port, first & FIX_CHECKSUMS != 0, out))
}

/// Recomputes the checksum of the IPv4 header at `at`, if one fits there;
/// returns its length.
fn fix_ipv4(d: &mut [u8], at: usize) -> Option<usize> {
    let hl = usize::from(*d.get(at)? & 0x0f) * 4;
    let h = d.get_mut(at..at + hl.max(ipv4::HEADER_LEN))?;
    if h[0] >> 4 != 4 || hl < ipv4::HEADER_LEN {
        return None;
    }
    h[10..12].fill(0);
    let c = checksum::checksum(h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    Some(hl)
}

/// Makes the IPv4 checksums of a frame right: the outer header, and the
/// inner one of IPIP or of VXLAN (on the node's port) with inner IPv4.
fn fix_checksums(d: &mut [u8]) {
    const L3: usize = ethernet::HEADER_LEN;
    if d.len() < L3 || u16::from_be_bytes([d[12], d[13]]) != ethernet::ethertype::IPV4 {
        return;
    }
    let Some(hl) = fix_ipv4(d, L3) else { return };
    let l4 = L3 + hl;
    match d[L3 + 9] {
        ipv4::protocol::IPIP => {
            fix_ipv4(d, l4);
        }
        ipv4::protocol::UDP => {
            let vxlan_port = tables().node.vxlan_port;
            let inner = l4 + udp::HEADER_LEN + vxlan::HEADER_LEN;
            let dport = d
                .get(l4 + 2..l4 + 4)
                .map(|p| u16::from_be_bytes([p[0], p[1]]));
            let inner_type = d
                .get(inner + 12..inner + 14)
                .map(|p| u16::from_be_bytes([p[0], p[1]]));
            if dport == Some(vxlan_port) && inner_type == Some(ethernet::ethertype::IPV4) {
                fix_ipv4(d, inner + L3);
            }
        }
        _ => {}
    }
}

fn total_drops(c: &WorkerCounters) -> u64 {
    DropReason::ALL
        .iter()
        .map(|&r| c.drop_counter(r).get())
        .sum()
}

/// The IPv4 packet at `at` of `frame` passes `check_len` and its checksum,
/// and ends exactly where the frame does (the switch trims padding and
/// sends nothing after a packet); returns its header length.
fn assert_valid_ipv4(frame: &[u8], at: usize, what: &str) -> usize {
    let ip = ipv4::Packet::new_checked(&frame[at..])
        .unwrap_or_else(|e| panic!("{what}: IPv4 header {e}: {frame:02x?}"));
    assert!(
        ip.verify_checksum(),
        "{what}: bad IPv4 header checksum: {frame:02x?}"
    );
    assert_eq!(
        usize::from(ip.total_len()),
        frame.len() - at,
        "{what}: IPv4 total length is not the frame's: {frame:02x?}"
    );
    ip.header_len()
}

/// Checks a sent frame. `from_pod`: the burst came from a pod port, whose
/// anti-spoofing guarantees that a packet sourced from the node's underlay
/// address was encapsulated by the switch (a host or uplink packet might be
/// such a packet routed unchanged, its payload never parsed).
fn check_output(frame: &[u8], from_pod: bool) {
    const L3: usize = ethernet::HEADER_LEN;
    if frame.len() < L3 || u16::from_be_bytes([frame[12], frame[13]]) != ethernet::ethertype::IPV4 {
        return;
    }
    let hl = assert_valid_ipv4(frame, L3, "sent frame");
    let ip = ipv4::Packet::new_unchecked(&frame[L3..]);
    if !from_pod || ip.is_fragment() || ip.src_u32() != tables().node.node_ip {
        return;
    }
    // Encapsulated by this node: the inner packet went through parse too,
    // and the outer lengths cover it exactly.
    match ip.protocol() {
        ipv4::protocol::IPIP => {
            assert_valid_ipv4(frame, L3 + hl, "IPIP inner packet");
        }
        ipv4::protocol::UDP => {
            let u = udp::Packet::new_checked(ip.payload()).expect("sent UDP is whole");
            assert_eq!(
                usize::from(u.len()),
                ip.payload().len(),
                "UDP length of an encapsulation"
            );
            if u.dst_port() == tables().node.vxlan_port {
                let v = vxlan::Packet::new_checked(u.payload()).expect("sent VXLAN is whole");
                assert_eq!(v.vni(), tables().node.vni);
                let inner = v.payload();
                if inner.len() >= L3
                    && u16::from_be_bytes([inner[12], inner[13]]) == ethernet::ethertype::IPV4
                {
                    assert_valid_ipv4(inner, L3, "VXLAN inner packet");
                }
            }
        }
        _ => {}
    }
}

thread_local! {
    static POOL: RefCell<HeapPool> = RefCell::new(HeapPool::new(POOL_SIZE, BUF_SIZE));
}

fuzz_target!(|data: &[u8]| {
    let Some((port, fix, frames)) = frames(data) else {
        return;
    };
    POOL.with(|pool| run(port, fix, &frames, &mut pool.borrow_mut()));
});

fn run(port: PortId, fix: bool, frames: &[&[u8]], pool: &mut HeapPool) {
    assert_eq!(pool.available(), POOL_SIZE, "the pool starts full");
    let tables = tables();
    let counters = Arc::new(WorkerCounters::new());
    let cfg = PipelineConfig {
        flow_cache_entries: 64,
        tx_list_capacity: 2 * MAX_FRAGMENTS,
        ..PipelineConfig::default()
    };
    let mut pipeline: Pipeline<HeapBuf> = Pipeline::new(cfg, counters.clone());
    let mut burst = Burst::new(MAX_FRAMES);
    for f in frames {
        let mut b = pool.alloc().expect("the pool holds a burst");
        assert!(b.append(f.len()));
        b.data_mut().copy_from_slice(f);
        if fix {
            fix_checksums(b.data_mut());
        }
        burst.push(b).expect("the burst holds MAX_FRAMES");
    }
    let from_pod = matches!(tables.ports[port as usize].role, PortRole::Pod { .. });
    pipeline.process(tables, port, &mut burst, pool, 1_000_000_000);
    assert!(burst.is_empty(), "the pipeline takes the whole burst");
    let mut sent = 0u64;
    pipeline.tx().flush(|_, list| {
        for b in list.drain(..) {
            check_output(b.data(), from_pod);
            sent += 1;
            pool.free(b);
        }
    });
    assert_eq!(
        pool.available(),
        POOL_SIZE,
        "every buffer is back in the pool"
    );
    let n = frames.len() as u64;
    assert_eq!(counters.port(port).rx_packets.get(), n);
    let drops = total_drops(&counters);
    assert!(
        sent + drops >= n,
        "{n} frames in, {sent} sent, {drops} dropped"
    );
}
