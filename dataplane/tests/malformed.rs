//! Malformed-input corpus, through the reference node (`craft::REFERENCE_NODE`).
//!
//! - Every fixture (one valid frame per ingress kind) is cut at every length
//!   and each cut is run alone: it must be dropped, exactly once, with the
//!   reason that offset calls for, and nothing may be sent.
//! - Targeted corruptions (IHL, version, total length, checksum, VXLAN flags,
//!   VNI and UDP length, tunnel and pod fragments, TTL, malformed inner
//!   headers) each expect their exact outcome.
//! - Deterministic pseudo-random mutations of the fixtures run through a
//!   pipeline directly: no panic, every input accounted for, every buffer
//!   back in the pool, every IPv4 frame sent with a valid header checksum.

use sluice_dataplane::buffer::{BufPool, Burst, HeapBuf, HeapPool, PacketBuf, DEFAULT_HEADROOM};
use sluice_dataplane::config::NodeConfig;
use sluice_dataplane::counters::{DropReason, StatsSnapshot, WorkerCounters};
use sluice_dataplane::craft::*;
use sluice_dataplane::pipeline::{Pipeline, PipelineConfig, MAX_FRAGMENTS};
use sluice_dataplane::replay::{replay_in_memory, replay_tables_in_memory, MemoryReplay};
use sluice_dataplane::tables::Tables;
use sluice_dataplane::wire::{ethernet, icmp, ipv4, vxlan};
use std::net::Ipv4Addr;
use std::sync::{Arc, OnceLock};

const ETH: usize = 14;
/// Offsets in a VXLAN frame on the underlay (outer IPv4 without options).
const VX_UDP: usize = ETH + 20;
const VX_UDP_LEN: usize = VX_UDP + 4;
const VX_HDR: usize = VX_UDP + 8;
const VX_INNER_ETH: usize = VX_HDR + 8;
const VX_INNER_IP: usize = VX_INNER_ETH + ETH;
/// Offset of the inner IPv4 header of an IPIP frame.
const IPIP_INNER_IP: usize = ETH + 20;

fn node() -> NodeConfig {
    NodeConfig::from_toml_str(REFERENCE_NODE).expect("reference node")
}

/// The reference node's tables, built once: a build fills the whole route
/// table (the default route covers every /24), too slow to repeat per case.
fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| Tables::from_config(&node()).expect("reference tables"))
}

/// Runs `inputs` through the reference node, as `replay_in_memory` does.
fn run(inputs: &[(&str, Vec<u8>)]) -> MemoryReplay {
    replay_tables_in_memory(tables(), inputs).expect("replay")
}

fn run1(port: &str, frame: &[u8]) -> MemoryReplay {
    run(&[(port, frame.to_vec())])
}

/// Every frame sent, with its port.
fn outputs(r: &MemoryReplay) -> Vec<(&str, &[u8])> {
    r.outputs
        .iter()
        .flat_map(|(p, v)| v.iter().map(move |f| (p.as_str(), f.as_slice())))
        .collect()
}

fn nonzero_drops(r: &MemoryReplay) -> Vec<(&'static str, u64)> {
    r.stats
        .drops
        .iter()
        .filter(|(_, &v)| v > 0)
        .map(|(&k, &v)| (k, v))
        .collect()
}

fn output_ports(r: &MemoryReplay) -> Vec<&str> {
    outputs(r).iter().map(|o| o.0).collect()
}

/// Exactly one drop, for `reason`, and nothing sent.
#[track_caller]
fn assert_dropped(what: &str, r: &MemoryReplay, reason: DropReason) {
    assert_eq!(
        nonzero_drops(r),
        vec![(reason.name(), 1)],
        "{what}: expected one {} drop; outputs {:?}",
        reason.name(),
        output_ports(r)
    );
    assert!(
        outputs(r).is_empty(),
        "{what}: dropped, yet sent on {:?}",
        output_ports(r)
    );
}

/// No drop, and exactly one frame sent, on `port`; returns it.
#[track_caller]
fn assert_sent<'a>(what: &str, r: &'a MemoryReplay, port: &str) -> &'a [u8] {
    let all = outputs(r);
    assert!(
        nonzero_drops(r).is_empty(),
        "{what}: unexpected drops {:?}",
        nonzero_drops(r)
    );
    assert_eq!(
        all.len(),
        1,
        "{what}: expected one frame on {port}, got {:?}",
        output_ports(r)
    );
    assert_eq!(all[0].0, port, "{what}: sent on the wrong port");
    all[0].1
}

#[track_caller]
fn drop_case(what: &str, port: &str, frame: &[u8], reason: DropReason) {
    assert_dropped(what, &run1(port, frame), reason);
}

/// The frame passes through the reference node and comes out of `out`.
#[track_caller]
fn pass_case(what: &str, port: &str, frame: &[u8], out: &str) -> Vec<u8> {
    assert_sent(what, &run1(port, frame), out).to_vec()
}

fn ip_at(frame: &[u8], l3: usize) -> ipv4::Packet<&[u8]> {
    let p = ipv4::Packet::new_checked(&frame[l3..]).expect("valid IPv4");
    assert!(p.verify_checksum(), "IPv4 header checksum");
    p
}

fn set_u16(frame: &mut [u8], at: usize, v: u16) {
    frame[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

fn get_u16(frame: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([frame[at], frame[at + 1]])
}

/// Total drops, and the packets the switch made (ICMP errors sent,
/// fragments past the first), of one worker.
fn drops_and_made(c: &WorkerCounters) -> (u64, u64) {
    let s = StatsSnapshot::collect([c], std::iter::empty());
    (s.total_drops(), s.made())
}

/// Sets DF, MF and the offset of the IPv4 header at `l3`, fixing its checksum.
fn set_frag(frame: &mut [u8], l3: usize, df: bool, mf: bool, offset: u16) {
    ipv4::Packet::new_unchecked(&mut frame[l3..]).set_flags_and_frag_offset(df, mf, offset);
    fix_ipv4_checksum(frame, l3);
}

/// Applies `f` to a copy of `frame` and returns it.
fn with(frame: &[u8], f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut v = frame.to_vec();
    f(&mut v);
    v
}

// ---------------------------------------------------------------------------
// Fixtures

/// What a fixture carries after its Ethernet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ipv4,
    Arp,
}

#[derive(Debug)]
struct Fixture {
    name: &'static str,
    port: &'static str,
    frame: Vec<u8>,
    kind: Kind,
    /// Where the whole frame comes out.
    out: &'static str,
}

impl Fixture {
    /// The length from which the frame holds everything its headers claim:
    /// Ethernet plus the IPv4 total length, or Ethernet plus a 28-byte ARP
    /// packet. Bytes past it are padding.
    fn whole_len(&self) -> usize {
        match self.kind {
            Kind::Ipv4 => ETH + get_u16(&self.frame, ETH + 2) as usize,
            Kind::Arp => ETH + 28,
        }
    }

    /// The drop a cut to `len` bytes must cause, or `None` when only padding
    /// was cut (the frame is forwarded as before).
    fn cut_reason(&self, len: usize) -> Option<DropReason> {
        if len < ETH {
            Some(DropReason::EthTruncated)
        } else if len >= self.whole_len() {
            None
        } else {
            // Anything shorter than the IPv4 total length is truncated IPv4,
            // whichever header the cut falls in: the outer total length of a
            // tunnel packet covers the inner headers too.
            Some(match self.kind {
                Kind::Ipv4 => DropReason::Ipv4Truncated,
                Kind::Arp => DropReason::ArpMalformed,
            })
        }
    }
}

fn pad_to(mut f: Vec<u8>, len: usize) -> Vec<u8> {
    f.resize(len.max(f.len()), 0);
    f
}

fn remote_to_pod_a(ttl: u8) -> Vec<u8> {
    let u = udp_datagram(REMOTE_POD_B, POD_A_IP, 3000, 4000, b"hello");
    ipv4_packet(
        Ip {
            ttl,
            ..Ip::new(REMOTE_POD_B, POD_A_IP, ipv4::protocol::UDP)
        },
        &u,
    )
}

/// A VXLAN frame from node B carrying `inner_ip` to this node's VTEP MAC.
fn vxlan_with(inner_ip: &[u8]) -> Vec<u8> {
    let inner = eth(VTEP_MAC, mac(0xbb, 2), ethernet::ethertype::IPV4, inner_ip);
    vxlan_frame(
        UPLINK_MAC, NODE_B_MAC, NODE_B_IP, NODE_A_IP, 8472, 1, &inner,
    )
}

/// An IPIP frame from node C carrying `inner_ip`.
fn ipip_with(inner_ip: &[u8]) -> Vec<u8> {
    let outer = ipv4_packet(
        Ip::new(NODE_C_IP, NODE_A_IP, ipv4::protocol::IPIP),
        inner_ip,
    );
    eth(UPLINK_MAC, mac(0xaa, 3), ethernet::ethertype::IPV4, &outer)
}

fn pod_a_ip(dst: Ipv4Addr, protocol: u8, l4: &[u8]) -> Vec<u8> {
    let ip = ipv4_packet(Ip::new(POD_A_IP, dst, protocol), l4);
    eth(ROUTER_MAC, POD_A_MAC, ethernet::ethertype::IPV4, &ip)
}

fn host_udp_to(dst: Ipv4Addr) -> Vec<u8> {
    let src = NODE_A_IP;
    let u = udp_datagram(src, dst, 5000, 53, &[7; 24]);
    eth(
        ROUTER_MAC,
        mac(0xee, 1),
        ethernet::ethertype::IPV4,
        &ipv4_packet(Ip::new(src, dst, 17), &u),
    )
}

fn uplink_host_gw() -> Vec<u8> {
    let src = Ipv4Addr::new(10, 5, 4, 9);
    let u = udp_datagram(src, POD_B_IP, 1, 2, b"host-gw");
    eth(
        UPLINK_MAC,
        mac(0xaa, 4),
        ethernet::ethertype::IPV4,
        &ipv4_packet(Ip::new(src, POD_B_IP, 17), &u),
    )
}

fn gateway() -> Ipv4Addr {
    Ipv4Addr::new(10, 5, 1, 1)
}

/// The switch's ICMP errors come from the pod subnet's `.0`.
fn icmp_source() -> Ipv4Addr {
    Ipv4Addr::new(10, 5, 1, 0)
}

fn fixtures() -> Vec<Fixture> {
    use Kind::*;
    let f = |name, port, frame, kind, out| Fixture {
        name,
        port,
        frame,
        kind,
        out,
    };
    vec![
        f(
            "pod udp to a local pod",
            "pod-a",
            pod_a_udp(POD_B_IP, 1000, 2000, 32),
            Ipv4,
            "pod-b",
        ),
        f(
            "pod udp to a vxlan remote",
            "pod-a",
            pod_a_udp(REMOTE_POD_B, 1000, 2000, 32),
            Ipv4,
            "eth0",
        ),
        f(
            "pod udp to an ipip remote",
            "pod-a",
            pod_a_udp(Ipv4Addr::new(10, 5, 3, 3), 1, 2, 16),
            Ipv4,
            "eth0",
        ),
        f(
            "pod icmp echo",
            "pod-a",
            pod_a_ip(POD_B_IP, 1, &icmp_echo(7, 1, b"ping")),
            Ipv4,
            "pod-b",
        ),
        f(
            "pod tcp syn",
            "pod-a",
            pod_a_ip(POD_B_IP, 6, &tcp_syn(40000, 80)),
            Ipv4,
            "pod-b",
        ),
        f(
            "pod arp for the gateway",
            "pod-a",
            arp_request(POD_A_MAC, POD_A_IP, gateway()),
            Arp,
            "pod-a",
        ),
        f(
            "pod udp padded to 60",
            "pod-a",
            pad_to(pod_a_udp(POD_B_IP, 1, 2, 2), 60),
            Ipv4,
            "pod-b",
        ),
        f(
            "pod arp padded to 60",
            "pod-a",
            pad_to(arp_request(POD_A_MAC, POD_A_IP, gateway()), 60),
            Arp,
            "pod-a",
        ),
        f(
            "uplink vxlan from node b",
            "eth0",
            vxlan_with(&remote_to_pod_a(64)),
            Ipv4,
            "pod-a",
        ),
        f(
            "uplink ipip from node c",
            "eth0",
            ipip_with(&remote_to_pod_a(64)),
            Ipv4,
            "pod-a",
        ),
        f(
            "uplink host-gw to a pod",
            "eth0",
            uplink_host_gw(),
            Ipv4,
            "pod-b",
        ),
        f(
            "host port udp to a pod",
            "host",
            host_udp_to(POD_A_IP),
            Ipv4,
            "pod-a",
        ),
        f(
            "host port arp for a pod",
            "host",
            arp_request(mac(0xee, 1), NODE_A_IP, POD_B_IP),
            Arp,
            "host",
        ),
    ]
}

#[test]
fn fixtures_are_valid() {
    for fx in fixtures() {
        let out = pass_case(fx.name, fx.port, &fx.frame, fx.out);
        assert!(out.len() >= ETH, "{}", fx.name);
        if fx.kind == Kind::Ipv4 {
            ip_at(&out, ETH);
        }
    }
}

/// The shared-tables replay is `replay_in_memory` with its tables built once.
#[test]
fn shared_tables_replay_equals_replay_in_memory() {
    let mut inputs: Vec<(&str, Vec<u8>)> = Vec::new();
    for fx in fixtures() {
        inputs.push((fx.port, fx.frame.clone()));
        inputs.push((fx.port, fx.frame[..fx.frame.len() / 2].to_vec()));
    }
    let a = replay_in_memory(&node(), &inputs).unwrap();
    let b = run(&inputs);
    assert_eq!(a.outputs, b.outputs);
    assert_eq!(a.stats, b.stats);
    assert_eq!(a.stats.total_drops(), fixtures().len() as u64);
}

#[test]
fn every_truncation_of_every_fixture_is_dropped_with_its_reason() {
    let mut cases = 0;
    for fx in fixtures() {
        let whole = run1(fx.port, &fx.frame);
        let expected_out = assert_sent(fx.name, &whole, fx.out).to_vec();
        for len in 0..fx.frame.len() {
            let what = format!("{} cut to {len} of {} bytes", fx.name, fx.frame.len());
            let r = run1(fx.port, &fx.frame[..len]);
            assert_eq!(r.stats.ports[fx.port].rx_packets, 1, "{what}");
            match fx.cut_reason(len) {
                Some(reason) => {
                    assert_dropped(&what, &r, reason);
                    assert_eq!(
                        r.stats.ports[fx.port].rx_dropped, 1,
                        "{what}: counted on its ingress port"
                    );
                }
                None => {
                    // Only padding was cut: the same frame comes out.
                    let out = assert_sent(&what, &r, fx.out);
                    assert_eq!(
                        out,
                        &expected_out[..],
                        "{what}: output differs from the whole frame's"
                    );
                }
            }
            cases += 1;
        }
    }
    assert!(cases > 700, "{cases} truncations");
}

// ---------------------------------------------------------------------------
// Targeted corruptions: IPv4 and Ethernet

fn good() -> Vec<u8> {
    pod_a_udp(POD_B_IP, 1000, 2000, 32)
}

#[test]
fn bad_version_and_ihl() {
    let g = good();
    for (what, ver_ihl, reason) in [
        ("version 6", 0x65, DropReason::Ipv4BadVersion),
        ("version 0", 0x05, DropReason::Ipv4BadVersion),
        ("version 15", 0xf5, DropReason::Ipv4BadVersion),
        ("IHL 0", 0x40, DropReason::Ipv4BadHeaderLen),
        ("IHL 4", 0x44, DropReason::Ipv4BadHeaderLen),
    ] {
        // With a correct checksum, so the header checks are what rejects it.
        let fixed = with(&g, |f| {
            f[ETH] = ver_ihl;
            fix_ipv4_checksum(f, ETH);
        });
        drop_case(what, "pod-a", &fixed, reason);
        drop_case(what, "pod-a", &with(&g, |f| f[ETH] = ver_ihl), reason);
    }
    // IHL larger than the whole packet: the header runs past the frame.
    let small = pod_a_udp(POD_B_IP, 1, 2, 4);
    assert_eq!(small.len() - ETH, 32);
    for ihl in [9u8, 10, 15] {
        drop_case(
            &format!("IHL {ihl} over 32 bytes"),
            "pod-a",
            &with(&small, |f| f[ETH] = 0x40 | ihl),
            DropReason::Ipv4Truncated,
        );
    }
    // IHL within the frame but beyond the total length.
    let big = pod_a_udp(POD_B_IP, 1, 2, 64);
    let f = with(&big, |f| {
        f[ETH] = 0x4f;
        set_u16(f, ETH + 2, 40);
        fix_ipv4_checksum(f, ETH);
    });
    drop_case(
        "IHL 15, total length 40",
        "pod-a",
        &f,
        DropReason::Ipv4BadTotalLen,
    );
    // IHL 8 over a 32-byte packet: a UDP packet without UDP header.
    let f = with(&small, |f| {
        f[ETH] = 0x48;
        fix_ipv4_checksum(f, ETH);
    });
    drop_case(
        "IHL 8 leaving no room for UDP",
        "pod-a",
        &f,
        DropReason::L4Truncated,
    );
}

#[test]
fn bad_total_length() {
    let g = good();
    let ip_len = (g.len() - ETH) as u16;
    for (total, reason) in [
        (0u16, DropReason::Ipv4BadTotalLen),
        (10, DropReason::Ipv4BadTotalLen),
        (19, DropReason::Ipv4BadTotalLen),
        (ip_len + 1, DropReason::Ipv4Truncated),
        (ip_len + 100, DropReason::Ipv4Truncated),
        (u16::MAX, DropReason::Ipv4Truncated),
        // Shorter than the frame but cutting the UDP header.
        (24, DropReason::L4Truncated),
        (27, DropReason::L4Truncated),
    ] {
        let f = with(&g, |f| {
            set_u16(f, ETH + 2, total);
            fix_ipv4_checksum(f, ETH);
        });
        drop_case(
            &format!("total length {total} of {ip_len}"),
            "pod-a",
            &f,
            reason,
        );
    }
    // A total length shorter than the frame makes the rest padding: trimmed.
    let f = with(&g, |f| {
        set_u16(f, ETH + 2, 28);
        fix_ipv4_checksum(f, ETH);
    });
    let out = pass_case("total length 28 (padding after UDP)", "pod-a", &f, "pod-b");
    assert_eq!(out.len(), ETH + 28);
    assert_eq!(ip_at(&out, ETH).total_len(), 28);
}

#[test]
fn bad_ipv4_checksum() {
    let g = good();
    drop_case(
        "checksum field flipped",
        "pod-a",
        &with(&g, |f| f[ETH + 10] ^= 0xff),
        DropReason::Ipv4BadChecksum,
    );
    drop_case(
        "ttl changed, checksum kept",
        "pod-a",
        &with(&g, |f| f[ETH + 8] = 9),
        DropReason::Ipv4BadChecksum,
    );
    drop_case(
        "source changed, checksum kept",
        "pod-a",
        &with(&g, |f| f[ETH + 15] ^= 1),
        DropReason::Ipv4BadChecksum,
    );
    // Version and header length come first: a bad header is not a bad checksum.
    drop_case(
        "bad version and checksum",
        "pod-a",
        &with(&g, |f| f[ETH] = 0x55),
        DropReason::Ipv4BadVersion,
    );
}

#[test]
fn bad_ethernet_and_arp() {
    let g = good();
    drop_case(
        "802.1Q tag",
        "pod-a",
        &with(&g, |f| set_u16(f, 12, 0x8100)),
        DropReason::VlanTagged,
    );
    drop_case(
        "IPv6 ethertype",
        "pod-a",
        &with(&g, |f| set_u16(f, 12, 0x86dd)),
        DropReason::UnsupportedEthertype,
    );
    drop_case("13 bytes", "pod-a", &g[..13], DropReason::EthTruncated);
    let a = arp_request(POD_A_MAC, POD_A_IP, gateway());
    drop_case(
        "ARP hardware type 6",
        "pod-a",
        &with(&a, |f| set_u16(f, ETH, 6)),
        DropReason::ArpMalformed,
    );
    drop_case(
        "ARP protocol IPv6",
        "pod-a",
        &with(&a, |f| set_u16(f, ETH + 2, 0x86dd)),
        DropReason::ArpMalformed,
    );
    drop_case(
        "ARP hardware length 8",
        "pod-a",
        &with(&a, |f| f[ETH + 4] = 8),
        DropReason::ArpMalformed,
    );
    drop_case(
        "ARP protocol length 16",
        "pod-a",
        &with(&a, |f| f[ETH + 5] = 16),
        DropReason::ArpMalformed,
    );
    drop_case(
        "ARP reply to the switch",
        "pod-a",
        &with(&a, |f| set_u16(f, ETH + 6, 2)),
        DropReason::ArpIgnored,
    );
    drop_case(
        "ARP operation 9",
        "pod-a",
        &with(&a, |f| set_u16(f, ETH + 6, 9)),
        DropReason::ArpIgnored,
    );
}

// ---------------------------------------------------------------------------
// VXLAN

fn vx() -> Vec<u8> {
    vxlan_with(&remote_to_pod_a(64))
}

/// Sets the outer UDP length of a VXLAN frame.
fn vx_udp_len(len: u16) -> Vec<u8> {
    with(&vx(), |f| set_u16(f, VX_UDP_LEN, len))
}

#[test]
fn vxlan_fixture_layout() {
    let f = vx();
    assert_eq!(get_u16(&f, VX_UDP + 2), 8472);
    assert_eq!(f[VX_HDR], vxlan::FLAG_I);
    assert_eq!(&f[VX_INNER_ETH..VX_INNER_ETH + 6], &VTEP_MAC.0);
    assert_eq!(ip_at(&f, VX_INNER_IP).dst_addr(), POD_A_IP);
    assert_eq!(get_u16(&f, VX_UDP_LEN) as usize, f.len() - VX_UDP);
}

#[test]
fn vxlan_flags_and_vni() {
    for flags in [0x00u8, 0x80, 0xf7, 0x01] {
        drop_case(
            &format!("VXLAN flags {flags:#04x}"),
            "eth0",
            &with(&vx(), |f| f[VX_HDR] = flags),
            DropReason::VxlanBadFlags,
        );
    }
    // Reserved bits are ignored on receipt (RFC 7348 section 5): the I bit is what counts.
    for flags in [0x0cu8, 0xff] {
        pass_case(
            &format!("VXLAN flags {flags:#04x}"),
            "eth0",
            &with(&vx(), |f| f[VX_HDR] = flags),
            "pod-a",
        );
    }
    for vni in [0u32, 2, 0x00ff_ffff] {
        let f = with(&vx(), |f| {
            vxlan::Packet::new_unchecked(&mut f[VX_HDR..]).set_vni(vni)
        });
        drop_case(
            &format!("VNI {vni}"),
            "eth0",
            &f,
            DropReason::VxlanUnknownVni,
        );
    }
    // A wrong VNI on a frame that has no I flag either: the flags fail first.
    let f = with(&vx(), |f| {
        f[VX_HDR] = 0;
        f[VX_HDR + 6] = 9;
    });
    drop_case("no I flag, VNI 9", "eth0", &f, DropReason::VxlanBadFlags);
}

#[test]
fn vxlan_udp_length_field() {
    let total = (vx().len() - VX_UDP) as u16;
    for len in [0u16, 1, 7] {
        drop_case(
            &format!("UDP length {len}"),
            "eth0",
            &vx_udp_len(len),
            DropReason::VxlanTruncated,
        );
    }
    for len in [total + 1, total + 8, u16::MAX] {
        drop_case(
            &format!("UDP length {len} > {total}"),
            "eth0",
            &vx_udp_len(len),
            DropReason::VxlanTruncated,
        );
    }
    // Covers the UDP header and part (or none) of the VXLAN header.
    for len in [8u16, 12, 15] {
        drop_case(
            &format!("UDP length {len}"),
            "eth0",
            &vx_udp_len(len),
            DropReason::VxlanTruncated,
        );
    }
    // Covers VXLAN but cuts the inner Ethernet header, then the inner IPv4.
    for len in [16u16, 16 + 13] {
        drop_case(
            &format!("UDP length {len}"),
            "eth0",
            &vx_udp_len(len),
            DropReason::VxlanInnerNotIpv4,
        );
    }
    for len in [16 + 14, 16 + 14 + 19, 16 + 14 + 27, total - 1] {
        drop_case(
            &format!("UDP length {len}"),
            "eth0",
            &vx_udp_len(len),
            DropReason::InnerIpv4Malformed,
        );
    }
    // Bytes after the UDP datagram inside the outer IPv4 payload are trimmed.
    let reference = pass_case("plain VXLAN", "eth0", &vx(), "pod-a");
    let mut f = vx();
    f.extend_from_slice(&[0xee; 6]);
    let outer_len = get_u16(&f, ETH + 2) + 6;
    set_u16(&mut f, ETH + 2, outer_len);
    fix_ipv4_checksum(&mut f, ETH);
    assert_eq!(
        pass_case("UDP shorter than its IPv4 payload", "eth0", &f, "pod-a"),
        reference
    );
}

#[test]
fn vxlan_inner_frame_problems() {
    let inner = remote_to_pod_a(64);
    let mism = {
        let i = eth(mac(9, 9), mac(0xbb, 2), ethernet::ethertype::IPV4, &inner);
        vxlan_frame(UPLINK_MAC, NODE_B_MAC, NODE_B_IP, NODE_A_IP, 8472, 1, &i)
    };
    drop_case(
        "inner MAC of another VTEP",
        "eth0",
        &mism,
        DropReason::VxlanInnerMacMismatch,
    );
    drop_case(
        "inner ARP",
        "eth0",
        &with(&vx(), |f| set_u16(f, VX_INNER_ETH + 12, 0x0806)),
        DropReason::VxlanInnerNotIpv4,
    );
    drop_case(
        "inner 802.1Q",
        "eth0",
        &with(&vx(), |f| set_u16(f, VX_INNER_ETH + 12, 0x8100)),
        DropReason::VxlanInnerNotIpv4,
    );
    let unknown = with(&vx(), |f| {
        f[ETH + 15] = 77;
        fix_ipv4_checksum(f, ETH);
    });
    drop_case(
        "VXLAN from an unknown node",
        "eth0",
        &unknown,
        DropReason::UnknownTunnelSource,
    );
}

/// A named corruption of an inner IPv4 packet.
type Corruption = (&'static str, Box<dyn Fn(&mut Vec<u8>)>);

/// Inner IPv4 corruptions shared by the VXLAN and IPIP tests.
fn inner_ipv4_corruptions() -> Vec<Corruption> {
    vec![
        (
            "inner version 6",
            Box::new(|p: &mut Vec<u8>| {
                p[0] = 0x65;
                fix_ipv4_checksum(p, 0);
            }),
        ),
        (
            "inner IHL 4",
            Box::new(|p: &mut Vec<u8>| {
                p[0] = 0x44;
                fix_ipv4_checksum(p, 0);
            }),
        ),
        ("inner IHL 15", Box::new(|p: &mut Vec<u8>| p[0] = 0x4f)),
        (
            "inner bad checksum",
            Box::new(|p: &mut Vec<u8>| p[10] ^= 0x5a),
        ),
        (
            "inner total length 10",
            Box::new(|p: &mut Vec<u8>| {
                set_u16(p, 2, 10);
                fix_ipv4_checksum(p, 0);
            }),
        ),
        (
            "inner total length too long",
            Box::new(|p: &mut Vec<u8>| {
                set_u16(p, 2, 200);
                fix_ipv4_checksum(p, 0);
            }),
        ),
        (
            "inner UDP header cut",
            Box::new(|p: &mut Vec<u8>| {
                set_u16(p, 2, 24);
                fix_ipv4_checksum(p, 0);
            }),
        ),
        (
            "inner header cut",
            Box::new(|p: &mut Vec<u8>| p.truncate(12)),
        ),
        ("no inner packet", Box::new(|p: &mut Vec<u8>| p.clear())),
    ]
}

#[test]
fn malformed_inner_ipv4_in_vxlan_and_ipip() {
    for (what, corrupt) in inner_ipv4_corruptions() {
        let mut inner = remote_to_pod_a(64);
        corrupt(&mut inner);
        drop_case(
            &format!("VXLAN, {what}"),
            "eth0",
            &vxlan_with(&inner),
            DropReason::InnerIpv4Malformed,
        );
        drop_case(
            &format!("IPIP, {what}"),
            "eth0",
            &ipip_with(&inner),
            DropReason::InnerIpv4Malformed,
        );
    }
    // Outer IPIP total length covering only the outer header: the inner packet
    // is Ethernet padding, trimmed before decapsulation.
    let f = with(&ipip_with(&remote_to_pod_a(64)), |f| {
        set_u16(f, ETH + 2, 20);
        fix_ipv4_checksum(f, ETH);
    });
    drop_case(
        "IPIP with an empty payload",
        "eth0",
        &f,
        DropReason::InnerIpv4Malformed,
    );
    // Martian inner addresses are refused after decapsulation.
    let mut inner = remote_to_pod_a(64);
    inner[16..20].copy_from_slice(&[255, 255, 255, 255]);
    fix_ipv4_checksum(&mut inner, 0);
    drop_case(
        "VXLAN, inner broadcast",
        "eth0",
        &vxlan_with(&inner),
        DropReason::Ipv4Martian,
    );
    drop_case(
        "IPIP, inner broadcast",
        "eth0",
        &ipip_with(&inner),
        DropReason::Ipv4Martian,
    );
}

// ---------------------------------------------------------------------------
// Tunnel fragments

#[test]
fn vxlan_outer_fragments() {
    // First fragment: the UDP header is there, its port says VXLAN, and
    // sluice does not reassemble.
    let first = with(&vx(), |f| set_frag(f, ETH, false, true, 0));
    drop_case(
        "VXLAN outer first fragment",
        "eth0",
        &first,
        DropReason::TunnelFragment,
    );
    // A first fragment to another UDP port is the node's own traffic.
    let other = with(&first, |f| {
        set_u16(f, VX_UDP + 2, 53);
    });
    pass_case("UDP first fragment to port 53", "eth0", &other, "host");
    // A non-first fragment carries no UDP header: nothing says it is VXLAN.
    // It goes to the node's kernel unchanged (but for its MACs), as every
    // other fragment for the node does; the kernel, which never sees the
    // dropped first fragment, discards it when reassembly times out.
    for (mf, offset) in [(false, 1480u16), (true, 8), (false, 8), (true, 65528)] {
        let f = with(&vx(), |f| set_frag(f, ETH, false, mf, offset));
        let what = format!("VXLAN outer non-first fragment, MF {mf}, offset {offset}");
        let r = run1("eth0", &f);
        let out = assert_sent(&what, &r, "host");
        assert_eq!(&out[ETH..], &f[ETH..], "{what}: passed unchanged");
        assert_eq!(&out[..6], &mac(0xee, 1).0, "{what}");
        assert_eq!(r.stats.events["vxlan_decap"], 0);
        assert_eq!(r.stats.events["to_host"], 1);
    }
    // Fragments from an unknown source are judged the same way.
    let f = with(&first, |f| {
        f[ETH + 15] = 77;
        fix_ipv4_checksum(f, ETH);
    });
    drop_case(
        "first fragment from an unknown node",
        "eth0",
        &f,
        DropReason::TunnelFragment,
    );
}

#[test]
fn ipip_outer_fragments() {
    let f = ipip_with(&remote_to_pod_a(64));
    for (mf, offset) in [(true, 0u16), (false, 8), (true, 1480)] {
        let v = with(&f, |f| set_frag(f, ETH, false, mf, offset));
        drop_case(
            &format!("IPIP outer fragment, MF {mf}, offset {offset}"),
            "eth0",
            &v,
            DropReason::TunnelFragment,
        );
    }
}

// ---------------------------------------------------------------------------
// Pod fragments: valid, forwarded, hashed on addresses only

/// A UDP fragment from pod-a to `dst`: the first carries the UDP header.
fn pod_fragment(dst: Ipv4Addr, sport: u16, mf: bool, offset: u16) -> Vec<u8> {
    let l4 = if offset == 0 {
        udp_datagram(POD_A_IP, dst, sport, 2000, &[0x33; 40])
    } else {
        vec![0x44; 48]
    };
    let ip = ipv4_packet(
        Ip {
            df: false,
            ident: 0x77,
            ..Ip::new(POD_A_IP, dst, ipv4::protocol::UDP)
        },
        &l4,
    );
    let mut f = eth(ROUTER_MAC, POD_A_MAC, ethernet::ethertype::IPV4, &ip);
    set_frag(&mut f, ETH, false, mf, offset);
    f
}

#[test]
fn pod_fragments_are_forwarded() {
    for (what, mf, offset) in [
        ("first", true, 0u16),
        ("middle", true, 48),
        ("last", false, 96),
    ] {
        let f = pod_fragment(POD_B_IP, 1000, mf, offset);
        let out = pass_case(&format!("{what} fragment to pod-b"), "pod-a", &f, "pod-b");
        let ip = ip_at(&out, ETH);
        assert_eq!(
            (ip.more_frags(), ip.frag_offset(), ip.ident(), ip.ttl()),
            (mf, offset, 0x77, 63)
        );
        assert_eq!(
            &out[ETH + 20..],
            &f[ETH + 20..],
            "fragment payload untouched"
        );
    }
    // To a VXLAN remote: every fragment of the datagram, first or not, gets
    // the same flow key (ports ignored), hence one flow-cache entry and one
    // VXLAN source port; another first fragment with other ports too.
    let r = run(&[
        ("pod-a", pod_fragment(REMOTE_POD_B, 1000, true, 0)),
        ("pod-a", pod_fragment(REMOTE_POD_B, 1000, false, 48)),
        ("pod-a", pod_fragment(REMOTE_POD_B, 3333, true, 0)),
    ]);
    assert!(nonzero_drops(&r).is_empty(), "{:?}", nonzero_drops(&r));
    let outs = &r.outputs["eth0"];
    assert_eq!(outs.len(), 3);
    let sports: Vec<u16> = outs.iter().map(|o| get_u16(o, VX_UDP)).collect();
    assert!(
        sports.iter().all(|&s| s == sports[0]),
        "one source port for the datagram: {sports:?}"
    );
    assert_eq!(
        (
            r.stats.events["flow_cache_misses"],
            r.stats.events["flow_cache_hits"]
        ),
        (1, 2)
    );
    for o in outs {
        let inner = ip_at(o, VX_INNER_IP);
        assert_eq!(inner.ident(), 0x77);
        assert!(inner.is_fragment());
    }
    // Whole packets of two flows, by contrast, are two cache entries.
    let r = run(&[
        ("pod-a", pod_a_udp(REMOTE_POD_B, 1000, 2000, 8)),
        ("pod-a", pod_a_udp(REMOTE_POD_B, 3333, 2000, 8)),
    ]);
    assert_eq!(r.stats.events["flow_cache_misses"], 2);
}

// ---------------------------------------------------------------------------
// TTL

fn with_ttl(frame: &[u8], l3: usize, ttl: u8) -> Vec<u8> {
    with(frame, |f| {
        f[l3 + 8] = ttl;
        fix_ipv4_checksum(f, l3);
    })
}

/// Checks `out` is an ICMP time exceeded from the switch to `to`, quoting
/// the IPv4 header and 8 bytes of `original` (an IPv4 packet).
#[track_caller]
fn assert_time_exceeded(out: &[u8], l3: usize, to: Ipv4Addr, original: &[u8]) {
    let ip = ip_at(out, l3);
    assert_eq!(
        (ip.src_addr(), ip.dst_addr(), ip.protocol()),
        (icmp_source(), to, ipv4::protocol::ICMP)
    );
    let m = icmp::Packet::new_checked(ip.payload()).unwrap();
    assert!(m.verify_checksum());
    assert_eq!(
        (m.msg_type(), m.code()),
        (icmp::msg_type::TIME_EXCEEDED, icmp::code::TTL_EXCEEDED)
    );
    assert_eq!(m.data(), &original[..28]);
}

#[test]
fn ttl_zero_and_one_answer_time_exceeded() {
    for ttl in [0u8, 1] {
        let f = with_ttl(&good(), ETH, ttl);
        let r = run1("pod-a", &f);
        assert_eq!(nonzero_drops(&r), vec![("ttl_exceeded", 1)], "TTL {ttl}");
        assert_eq!(
            output_ports(&r),
            vec!["pod-a"],
            "TTL {ttl}: the error goes back to the sender"
        );
        assert_time_exceeded(&r.outputs["pod-a"][0], ETH, POD_A_IP, &f[ETH..]);
        assert_eq!(r.stats.events["icmp_time_exceeded"], 1);
    }
    let out = pass_case("TTL 2", "pod-a", &with_ttl(&good(), ETH, 2), "pod-b");
    assert_eq!(ip_at(&out, ETH).ttl(), 1);

    // Inner TTL 1 in VXLAN: the error goes back through VXLAN to the sender.
    let inner = remote_to_pod_a(1);
    let r = run1("eth0", &vxlan_with(&inner));
    assert_eq!(nonzero_drops(&r), vec![("ttl_exceeded", 1)]);
    assert_eq!(output_ports(&r), vec!["eth0"]);
    let out = &r.outputs["eth0"][0];
    assert_eq!(ip_at(out, ETH).dst_addr(), NODE_B_IP);
    assert_time_exceeded(out, VX_INNER_IP, REMOTE_POD_B, &inner);
    // The outer TTL of a packet to this node is not a forwarding TTL.
    pass_case(
        "VXLAN with outer TTL 0",
        "eth0",
        &with_ttl(&vx(), ETH, 0),
        "pod-a",
    );
    pass_case(
        "IPIP with outer TTL 1",
        "eth0",
        &with_ttl(&ipip_with(&remote_to_pod_a(64)), ETH, 1),
        "pod-a",
    );
}

#[test]
fn ttl_expiry_of_errors_and_non_first_fragments_is_not_answered() {
    // An ICMP error about an ICMP error, or about a non-first fragment, is
    // never sent (RFC 1812 section 4.3.2.7): the drop is still counted.
    let mut err = icmp_echo(0, 0, &[0; 28]);
    err[0] = icmp::msg_type::DEST_UNREACHABLE;
    let f = with_ttl(&pod_a_ip(POD_B_IP, 1, &err), ETH, 1);
    let r = run1("pod-a", &f);
    assert_dropped("TTL 1 on an ICMP error", &r, DropReason::TtlExceeded);
    assert_eq!(r.stats.events["icmp_suppressed"], 1);
    let f = with_ttl(&pod_fragment(POD_B_IP, 1, false, 48), ETH, 0);
    let r = run1("pod-a", &f);
    assert_dropped("TTL 0 on a non-first fragment", &r, DropReason::TtlExceeded);
    assert_eq!(r.stats.events["icmp_suppressed"], 1);
}

// ---------------------------------------------------------------------------
// Pseudo-random mutations through a pipeline

/// xorshift64*: deterministic, no crates.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Recomputes the IPv4 header checksum at `l3` if the header is there.
fn try_fix_checksum(f: &mut [u8], l3: usize) {
    let Some(&b) = f.get(l3) else { return };
    let hl = ((b & 0x0f) as usize) * 4;
    if hl >= 20 && f.len() >= l3 + hl {
        fix_ipv4_checksum(f, l3);
    }
}

const INTERESTING: [u8; 8] = [0, 1, 4, 5, 0x08, 0x7f, 0x80, 0xff];

fn mutate(rng: &mut Rng, src: &[u8]) -> Vec<u8> {
    let mut f = src.to_vec();
    for _ in 0..1 + rng.below(4) {
        // Mostly in the headers (the first 100 bytes), where the parsing is.
        let span = f.len().clamp(1, 100);
        match rng.below(8) {
            0 | 1 if !f.is_empty() => {
                let i = rng.below(span.min(f.len()));
                f[i] ^= 1 << rng.below(8);
            }
            2 if !f.is_empty() => {
                let i = rng.below(span.min(f.len()));
                f[i] = rng.next() as u8;
            }
            3 if !f.is_empty() => {
                let i = rng.below(span.min(f.len()));
                f[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            4 if f.len() >= 2 => {
                // A 16-bit length-like field set to something near the truth.
                let i = rng.below(span.min(f.len() - 1));
                let v = get_u16(&f, i)
                    .wrapping_add(rng.below(17) as u16)
                    .wrapping_sub(8);
                set_u16(&mut f, i, v);
            }
            5 => {
                let n = rng.below(f.len() + 1);
                f.truncate(n);
            }
            6 => {
                let n = rng.below(64);
                f.extend((0..n).map(|_| rng.next() as u8));
            }
            _ => {}
        }
    }
    // Half the time make the headers' checksums right again, so mutations
    // get past the checksum check and reach classify and the tunnels.
    if rng.below(2) == 0 {
        try_fix_checksum(&mut f, ETH);
        if f.get(ETH + 9) == Some(&ipv4::protocol::UDP) {
            try_fix_checksum(&mut f, VX_INNER_IP);
        } else if f.get(ETH + 9) == Some(&ipv4::protocol::IPIP) {
            try_fix_checksum(&mut f, IPIP_INNER_IP);
        }
    }
    f
}

#[test]
fn random_mutations_are_accounted_for_and_leak_nothing() {
    const MUTATIONS: usize = 6000;
    const POOL: usize = 128 + 2 * MAX_FRAGMENTS;
    let tables = tables();
    let counters = Arc::new(WorkerCounters::new());
    let mut p: Pipeline<HeapBuf> = Pipeline::new(PipelineConfig::default(), counters.clone());
    let mut pool = HeapPool::new(POOL, DEFAULT_HEADROOM + 2048);
    let mut burst = Burst::new(32);
    let fx = fixtures();
    let mut rng = Rng(0x5eed_f00d_5a1c_e000);
    let (mut inputs, mut sent) = (0u64, 0u64);
    let mut bad_headers = Vec::new();
    let mut done = 0;
    let mut now = 1_000_000_000u64;
    while done < MUTATIONS {
        // One ingress port per burst, frames from the fixtures of that port
        // (so anti-spoofing lets many through), now and then any fixture.
        let port_name = fx[rng.below(fx.len())].port;
        let port = tables.port_by_name(port_name).unwrap();
        let n = 1 + rng.below(32);
        for _ in 0..n {
            let pick: Vec<&Fixture> = fx
                .iter()
                .filter(|f| f.port == port_name || rng.below(8) == 0)
                .collect();
            let base = pick[rng.below(pick.len())];
            let frame = mutate(&mut rng, &base.frame);
            let mut b = pool.alloc().expect("pool holds a burst");
            assert!(b.append(frame.len()));
            b.data_mut().copy_from_slice(&frame);
            burst.push(b).unwrap();
            inputs += 1;
            done += 1;
        }
        let (drops_before, made_before) = drops_and_made(&counters);
        let sent_before = sent;
        p.process(tables, port, &mut burst, &mut pool, now);
        now += 1_000_000;
        assert!(burst.is_empty());
        p.tx().flush(|_, list| {
            for b in list.drain(..) {
                let d = b.data();
                if d.len() >= ETH + 20 && get_u16(d, 12) == ethernet::ethertype::IPV4 {
                    let ok = ipv4::Packet::new_checked(&d[ETH..])
                        .map(|ip| {
                            ip.verify_checksum() && usize::from(ip.total_len()) == d.len() - ETH
                        })
                        .unwrap_or(false);
                    if !ok {
                        bad_headers.push(d.to_vec());
                    }
                }
                sent += 1;
                pool.free(b);
            }
        });
        let (drops_after, made_after) = drops_and_made(&counters);
        assert_eq!(
            (sent - sent_before) + (drops_after - drops_before),
            n as u64 + (made_after - made_before),
            "a burst of {n} on {port_name}: {} sent, {} dropped, {} made",
            sent - sent_before,
            drops_after - drops_before,
            made_after - made_before
        );
        assert_eq!(pool.available(), POOL, "every buffer is back in the pool");
    }
    let (drops, made) = drops_and_made(&counters);
    assert_eq!(
        sent + drops,
        inputs + made,
        "{inputs} in and {made} made, {sent} sent, {drops} dropped"
    );
    assert!(
        sent + drops >= inputs,
        "{inputs} in, {sent} sent, {drops} dropped"
    );
    assert!(
        bad_headers.is_empty(),
        "{} IPv4 frames sent with a bad checksum or length, first {:02x?}",
        bad_headers.len(),
        bad_headers[0]
    );
    // The mutations are meant to reach past the parser: make sure they did.
    assert!(sent > inputs / 20, "only {sent} of {inputs} forwarded");
    let reasons = DropReason::ALL
        .iter()
        .filter(|&&r| counters.drop_counter(r).get() > 0)
        .count();
    assert!(
        reasons >= 12,
        "mutations reached only {reasons} drop reasons"
    );
}
