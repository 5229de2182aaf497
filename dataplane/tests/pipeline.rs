//! Pipeline behaviour on memory ports, through the reference node
//! (`craft::REFERENCE_NODE`): one test per action, per decapsulation rule,
//! per ICMP case, and tests that every drop reason and every event is
//! reachable.

use sluice_dataplane::buffer::{BufPool, Burst, HeapBuf, HeapPool, PacketBuf};
use sluice_dataplane::config::NodeConfig;
use sluice_dataplane::counters::{DropReason, WorkerCounters};
use sluice_dataplane::craft::*;
use sluice_dataplane::pcap::Record;
use sluice_dataplane::pipeline::{Pipeline, PipelineConfig};
use sluice_dataplane::port::{poll_port, MemoryPort};
use sluice_dataplane::replay::{replay_in_memory, MemoryReplay};
use sluice_dataplane::tables::Tables;
use sluice_dataplane::wire::{arp, ethernet, icmp, ipv4, udp, vxlan, MacAddr};
use std::net::Ipv4Addr;
use std::sync::Arc;

fn node() -> NodeConfig {
    NodeConfig::from_toml_str(REFERENCE_NODE).expect("reference node")
}

fn run(inputs: &[(&str, Vec<u8>)]) -> MemoryReplay {
    replay_in_memory(&node(), inputs).expect("replay")
}

/// The single frame sent anywhere, with its port; fails if not exactly one.
fn only_output(r: &MemoryReplay) -> (&str, &[u8]) {
    let all: Vec<(&str, &Vec<u8>)> = r
        .outputs
        .iter()
        .flat_map(|(p, v)| v.iter().map(move |f| (p.as_str(), f)))
        .collect();
    assert_eq!(
        all.len(),
        1,
        "expected one output frame, got {:?}; drops {:?}",
        all.iter().map(|x| x.0).collect::<Vec<_>>(),
        nonzero_drops(r)
    );
    (all[0].0, all[0].1)
}

fn nonzero_drops(r: &MemoryReplay) -> Vec<(&'static str, u64)> {
    r.stats
        .drops
        .iter()
        .filter(|(_, &v)| v > 0)
        .map(|(&k, &v)| (k, v))
        .collect()
}

fn assert_dropped(r: &MemoryReplay, reason: DropReason) {
    assert_eq!(
        nonzero_drops(r),
        vec![(reason.name(), 1)],
        "outputs: {:?}",
        r.outputs
            .iter()
            .map(|(k, v)| (k, v.len()))
            .collect::<Vec<_>>()
    );
    assert!(r.outputs.values().all(Vec::is_empty));
}

fn ip_at(frame: &[u8], l3: usize) -> ipv4::Packet<&[u8]> {
    let p = ipv4::Packet::new_checked(&frame[l3..]).expect("valid IPv4");
    assert!(p.verify_checksum(), "IPv4 header checksum");
    p
}

fn macs(frame: &[u8]) -> (MacAddr, MacAddr) {
    let e = ethernet::Frame::new_checked(frame).unwrap();
    (e.dst_addr(), e.src_addr())
}

#[test]
fn local_delivery_rewrites_macs_and_decrements_ttl() {
    let f = pod_a_udp(POD_B_IP, 1000, 2000, 32);
    let r = run(&[("pod-a", f.clone())]);
    let (port, out) = only_output(&r);
    assert_eq!(port, "pod-b");
    assert_eq!(macs(out), (POD_B_MAC, ROUTER_MAC));
    let ip = ip_at(out, 14);
    assert_eq!(ip.ttl(), 63);
    assert_eq!(&out[14 + 20..], &f[14 + 20..], "payload untouched");
    assert_eq!(r.stats.events["delivered"], 1);
    assert_eq!(r.stats.ports["pod-a"].rx_packets, 1);
    assert_eq!(r.stats.ports["pod-b"].tx_packets, 1);
    assert_eq!(r.stats.ports["pod-b"].tx_bytes, out.len() as u64);
}

#[test]
fn vxlan_encap_to_a_remote_node() {
    let f = pod_a_udp(REMOTE_POD_B, 1000, 2000, 100);
    let r = run(&[("pod-a", f.clone())]);
    let (port, out) = only_output(&r);
    assert_eq!(port, "eth0");
    assert_eq!(out.len(), f.len() + 50);
    assert_eq!(macs(out), (NODE_B_MAC, UPLINK_MAC));
    let outer = ip_at(out, 14);
    assert_eq!((outer.src_addr(), outer.dst_addr()), (NODE_A_IP, NODE_B_IP));
    assert_eq!(outer.protocol(), ipv4::protocol::UDP);
    assert_eq!(outer.total_len() as usize, out.len() - 14);
    assert!(outer.dont_frag());
    let u = udp::Packet::new_checked(outer.payload()).unwrap();
    assert_eq!(u.dst_port(), 8472);
    assert!(
        u.src_port() >= 49152,
        "source port {} in the dynamic range",
        u.src_port()
    );
    assert_eq!(u.checksum(), 0);
    assert_eq!(u.len() as usize, out.len() - 34);
    let v = vxlan::Packet::new_checked(u.payload()).unwrap();
    assert_eq!(v.vni(), 1);
    let inner = v.payload();
    assert_eq!(macs(inner), (mac(0xbb, 2), VTEP_MAC));
    let iip = ip_at(inner, 14);
    assert_eq!(
        (iip.src_addr(), iip.dst_addr(), iip.ttl()),
        (POD_A_IP, REMOTE_POD_B, 63)
    );
    assert_eq!(&inner[34..], &f[34..]);
    assert_eq!(r.stats.events["vxlan_encap"], 1);
}

#[test]
fn vxlan_source_port_follows_the_flow() {
    let a = run(&[
        ("pod-a", pod_a_udp(REMOTE_POD_B, 1000, 2000, 10)),
        ("pod-a", pod_a_udp(REMOTE_POD_B, 1000, 2000, 20)),
    ]);
    let sports: Vec<u16> = a.outputs["eth0"]
        .iter()
        .map(|f| u16::from_be_bytes([f[34], f[35]]))
        .collect();
    assert_eq!(sports[0], sports[1], "one flow, one source port");
    let many: Vec<(&str, Vec<u8>)> = (0..64)
        .map(|i| ("pod-a", pod_a_udp(REMOTE_POD_B, 1000 + i, 2000, 10)))
        .collect();
    let r = run(&many);
    let distinct: std::collections::HashSet<u16> = r.outputs["eth0"]
        .iter()
        .map(|f| u16::from_be_bytes([f[34], f[35]]))
        .collect();
    assert!(
        distinct.len() > 48,
        "64 flows spread over {} source ports",
        distinct.len()
    );
}

#[test]
fn off_link_vxlan_goes_through_the_underlay_gateway() {
    let r = run(&[("pod-a", pod_a_udp(Ipv4Addr::new(10, 5, 5, 9), 1, 2, 10))]);
    let (_, out) = only_output(&r);
    assert_eq!(macs(out).0, mac(0xaa, 0xfe));
    assert_eq!(ip_at(out, 14).dst_addr(), Ipv4Addr::new(10, 99, 0, 5));
}

#[test]
fn ipip_encap() {
    let dst = Ipv4Addr::new(10, 5, 3, 3);
    let f = pod_a_udp(dst, 1, 2, 40);
    let r = run(&[("pod-a", f.clone())]);
    let (port, out) = only_output(&r);
    assert_eq!(port, "eth0");
    assert_eq!(out.len(), f.len() + 20);
    assert_eq!(macs(out), (mac(0xaa, 3), UPLINK_MAC));
    let outer = ip_at(out, 14);
    assert_eq!(
        (outer.src_addr(), outer.dst_addr(), outer.protocol()),
        (NODE_A_IP, NODE_C_IP, 4)
    );
    let inner = ip_at(out, 34);
    assert_eq!((inner.dst_addr(), inner.ttl()), (dst, 63));
    assert_eq!(r.stats.events["ipip_encap"], 1);
}

#[test]
fn host_gw_rewrites_to_the_next_hop_mac() {
    let f = pod_a_udp(Ipv4Addr::new(10, 5, 4, 4), 1, 2, 40);
    let r = run(&[("pod-a", f.clone())]);
    let (port, out) = only_output(&r);
    assert_eq!(port, "eth0");
    assert_eq!(out.len(), f.len());
    assert_eq!(macs(out), (mac(0xaa, 4), UPLINK_MAC));
    assert_eq!(ip_at(out, 14).ttl(), 63);
    assert_eq!(r.stats.events["host_gw"], 1);
}

#[test]
fn default_route_goes_to_the_host_port() {
    let r = run(&[(
        "pod-a",
        pod_a_udp(Ipv4Addr::new(93, 184, 216, 34), 1, 53, 10),
    )]);
    let (port, out) = only_output(&r);
    assert_eq!(port, "host");
    assert_eq!(macs(out), (mac(0xee, 1), ROUTER_MAC));
}

#[test]
fn blackhole_and_unresolved_neighbours_drop_with_their_reasons() {
    assert_dropped(
        &run(&[("pod-a", pod_a_udp(Ipv4Addr::new(10, 5, 9, 1), 1, 2, 10))]),
        DropReason::Blackhole,
    );
    assert_dropped(
        &run(&[("pod-a", pod_a_udp(Ipv4Addr::new(10, 5, 6, 1), 1, 2, 10))]),
        DropReason::NeighbourUnresolved,
    );
}

#[test]
fn arp_for_the_gateway_is_answered() {
    let r = run(&[(
        "pod-a",
        arp_request(POD_A_MAC, POD_A_IP, Ipv4Addr::new(10, 5, 1, 1)),
    )]);
    let (port, out) = only_output(&r);
    assert_eq!(port, "pod-a");
    assert_eq!(macs(out), (POD_A_MAC, ROUTER_MAC));
    let a = arp::Packet::new_checked(&out[14..]).unwrap();
    assert_eq!(a.operation(), arp::operation::REPLY);
    assert_eq!(
        (a.sender_hw_addr(), a.sender_ip()),
        (ROUTER_MAC, Ipv4Addr::new(10, 5, 1, 1))
    );
    assert_eq!((a.target_hw_addr(), a.target_ip()), (POD_A_MAC, POD_A_IP));
    assert_eq!(r.stats.events["arp_replies"], 1);
    assert_dropped(
        &run(&[(
            "pod-a",
            arp_request(POD_A_MAC, POD_A_IP, Ipv4Addr::new(8, 8, 8, 8)),
        )]),
        DropReason::ArpNotForUs,
    );
    assert_dropped(
        &run(&[(
            "pod-a",
            arp_request(POD_A_MAC, POD_B_IP, Ipv4Addr::new(10, 5, 1, 1)),
        )]),
        DropReason::SpoofedSourceIp,
    );
}

fn vxlan_from(src: Ipv4Addr, vni: u32, inner_dst_mac: MacAddr, inner: &[u8]) -> Vec<u8> {
    let inner_frame = eth(
        inner_dst_mac,
        mac(0xbb, 2),
        ethernet::ethertype::IPV4,
        inner,
    );
    vxlan_frame(
        UPLINK_MAC,
        NODE_B_MAC,
        src,
        NODE_A_IP,
        8472,
        vni,
        &inner_frame,
    )
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

#[test]
fn vxlan_from_a_known_node_is_decapsulated_and_delivered() {
    let inner = remote_to_pod_a(62);
    let r = run(&[("eth0", vxlan_from(NODE_B_IP, 1, VTEP_MAC, &inner))]);
    let (port, out) = only_output(&r);
    assert_eq!(port, "pod-a");
    assert_eq!(macs(out), (POD_A_MAC, ROUTER_MAC));
    assert_eq!(out.len(), 14 + inner.len());
    let ip = ip_at(out, 14);
    assert_eq!((ip.src_addr(), ip.ttl()), (REMOTE_POD_B, 61));
    assert_eq!(r.stats.events["vxlan_decap"], 1);
}

#[test]
fn tunnels_from_unknown_sources_or_wrong_vni_are_dropped() {
    let inner = remote_to_pod_a(64);
    assert_dropped(
        &run(&[(
            "eth0",
            vxlan_from(Ipv4Addr::new(192, 168, 50, 77), 1, VTEP_MAC, &inner),
        )]),
        DropReason::UnknownTunnelSource,
    );
    assert_dropped(
        &run(&[("eth0", vxlan_from(NODE_B_IP, 2, VTEP_MAC, &inner))]),
        DropReason::VxlanUnknownVni,
    );
    assert_dropped(
        &run(&[("eth0", vxlan_from(NODE_B_IP, 1, mac(9, 9), &inner))]),
        DropReason::VxlanInnerMacMismatch,
    );
    // IPIP from the VXLAN peer: not an IPIP peer.
    let f = eth(
        UPLINK_MAC,
        NODE_B_MAC,
        0x0800,
        &ipv4_packet(Ip::new(NODE_B_IP, NODE_A_IP, 4), &inner),
    );
    assert_dropped(&run(&[("eth0", f)]), DropReason::UnknownTunnelSource);
}

#[test]
fn ipip_from_a_known_node_is_decapsulated() {
    let inner = remote_to_pod_a(64);
    let f = eth(
        UPLINK_MAC,
        mac(0xaa, 3),
        0x0800,
        &ipv4_packet(Ip::new(NODE_C_IP, NODE_A_IP, 4), &inner),
    );
    let r = run(&[("eth0", f)]);
    let (port, out) = only_output(&r);
    assert_eq!(port, "pod-a");
    assert_eq!(
        &out[14..],
        &{
            let mut i = inner.clone();
            i[8] = 63;
            fix_ipv4_checksum(&mut i, 0);
            i
        }[..]
    );
    assert_eq!(r.stats.events["ipip_decap"], 1);
}

#[test]
fn uplink_traffic_for_the_node_goes_to_the_host() {
    let ssh = eth(
        UPLINK_MAC,
        NODE_B_MAC,
        0x0800,
        &ipv4_packet(Ip::new(NODE_B_IP, NODE_A_IP, 6), &tcp_syn(40000, 22)),
    );
    let r = run(&[
        ("eth0", ssh.clone()),
        ("eth0", arp_request(NODE_B_MAC, NODE_B_IP, NODE_A_IP)),
    ]);
    assert_eq!(r.outputs["host"].len(), 2);
    assert_eq!(
        &r.outputs["host"][0][14..],
        &ssh[14..],
        "the node's own traffic passes unchanged"
    );
}

#[test]
fn host_gw_traffic_from_the_uplink_reaches_pods_but_never_hairpins() {
    let u = udp_datagram(Ipv4Addr::new(10, 5, 4, 9), POD_B_IP, 1, 2, b"x");
    let f = eth(
        UPLINK_MAC,
        mac(0xaa, 4),
        0x0800,
        &ipv4_packet(Ip::new(Ipv4Addr::new(10, 5, 4, 9), POD_B_IP, 17), &u),
    );
    let r = run(&[("eth0", f)]);
    assert_eq!(only_output(&r).0, "pod-b");
    let u = udp_datagram(Ipv4Addr::new(10, 5, 4, 9), REMOTE_POD_B, 1, 2, b"x");
    let f = eth(
        UPLINK_MAC,
        mac(0xaa, 4),
        0x0800,
        &ipv4_packet(Ip::new(Ipv4Addr::new(10, 5, 4, 9), REMOTE_POD_B, 17), &u),
    );
    assert_dropped(&run(&[("eth0", f)]), DropReason::Hairpin);
}

#[test]
fn link_layer_broadcast_from_the_uplink_is_not_routed() {
    let u = udp_datagram(Ipv4Addr::new(10, 5, 4, 9), POD_B_IP, 1, 2, b"x");
    let f = eth(
        MacAddr::BROADCAST,
        mac(0xaa, 4),
        0x0800,
        &ipv4_packet(Ip::new(Ipv4Addr::new(10, 5, 4, 9), POD_B_IP, 17), &u),
    );
    let r = run(&[("eth0", f)]);
    assert_eq!(
        only_output(&r).0,
        "host",
        "handed to the node's kernel, not forwarded to the pod (RFC 1812 5.3.4)"
    );
}

#[test]
fn ttl_expiry_answers_time_exceeded() {
    let mut f = pod_a_udp(REMOTE_POD_B, 1, 2, 30);
    f[22] = 1;
    fix_ipv4_checksum(&mut f, 14);
    let r = run(&[("pod-a", f.clone())]);
    let (port, out) = only_output(&r);
    assert_eq!(port, "pod-a");
    assert_eq!(macs(out), (POD_A_MAC, ROUTER_MAC));
    let ip = ip_at(out, 14);
    assert_eq!(
        (ip.src_addr(), ip.dst_addr(), ip.protocol()),
        (Ipv4Addr::new(10, 5, 1, 0), POD_A_IP, 1)
    );
    let m = icmp::Packet::new_checked(ip.payload()).unwrap();
    assert!(m.verify_checksum());
    assert_eq!((m.msg_type(), m.code()), (11, 0));
    assert_eq!(m.data(), &f[14..14 + 28], "quotes the header and 8 bytes");
    assert_eq!(r.stats.drops["ttl_exceeded"], 1);
    assert_eq!(r.stats.events["icmp_time_exceeded"], 1);
}

fn host_udp(dst: Ipv4Addr, len: usize, df: bool) -> Vec<u8> {
    let src = Ipv4Addr::new(192, 168, 50, 1);
    let u = udp_datagram(src, dst, 5, 6, &vec![7u8; len]);
    eth(
        ROUTER_MAC,
        mac(0xee, 1),
        0x0800,
        &ipv4_packet(
            Ip {
                df,
                ident: 0x1234,
                ..Ip::new(src, dst, 17)
            },
            &u,
        ),
    )
}

#[test]
fn too_big_with_df_answers_fragmentation_needed_with_the_next_hop_mtu() {
    let r = run(&[("host", host_udp(REMOTE_POD_B, 1472, true))]);
    let (port, out) = only_output(&r);
    assert_eq!(port, "host");
    let ip = ip_at(out, 14);
    let m = icmp::Packet::new_checked(ip.payload()).unwrap();
    assert_eq!((m.msg_type(), m.code(), m.next_hop_mtu()), (3, 4, 1450));
    assert_eq!(r.stats.drops["frag_needed"], 1);
}

#[test]
fn too_big_without_df_is_fragmented_then_encapsulated() {
    let f = host_udp(REMOTE_POD_B, 2000, false);
    let r = run(&[("host", f.clone())]);
    let outs = &r.outputs["eth0"];
    assert_eq!(outs.len(), 2, "drops {:?}", nonzero_drops(&r));
    let mut payload = Vec::new();
    for (k, o) in outs.iter().enumerate() {
        assert!(o.len() - 14 <= 1500, "fragment fits the underlay MTU");
        let inner = &o[64..];
        let ip = ip_at(o, 64);
        assert_eq!(ip.ident(), 0x1234);
        assert_eq!(ip.more_frags(), k == 0);
        assert_eq!(ip.frag_offset() as usize, payload.len());
        payload.extend_from_slice(&inner[20..ip.total_len() as usize]);
    }
    assert_eq!(payload, f[34..], "fragments carry exactly the payload");
    assert_eq!(r.stats.events["fragments_created"], 2);
}

#[test]
fn spoofed_pods_are_dropped() {
    let mut f = pod_a_udp(POD_B_IP, 1, 2, 3);
    f[6..12].copy_from_slice(&mac(7, 7).0);
    assert_dropped(&run(&[("pod-a", f)]), DropReason::SpoofedSourceMac);
    let f = pod_a_udp(POD_B_IP, 1, 2, 3);
    assert_dropped(&run(&[("pod-b", f)]), DropReason::SpoofedSourceMac);
    let u = udp_datagram(Ipv4Addr::new(10, 5, 1, 99), POD_B_IP, 1, 2, b"");
    let f = eth(
        ROUTER_MAC,
        POD_A_MAC,
        0x0800,
        &ipv4_packet(Ip::new(Ipv4Addr::new(10, 5, 1, 99), POD_B_IP, 17), &u),
    );
    assert_dropped(&run(&[("pod-a", f)]), DropReason::SpoofedSourceIp);
}

#[test]
fn a_route_change_invalidates_cached_flows() {
    let mut cfg = node();
    let t1 = Tables::from_config(&cfg).unwrap();
    cfg.routes.retain(|r| r.prefix.to_string() != "10.5.2.0/24");
    let t2 = Tables::from_config(&cfg).unwrap();
    assert_ne!(t1.generation, t2.generation);
    let counters = Arc::new(WorkerCounters::new());
    let mut p: Pipeline<HeapBuf> = Pipeline::new(PipelineConfig::default(), counters.clone());
    let mut pool = HeapPool::new(64, 2048);
    let send = |p: &mut Pipeline<HeapBuf>, t: &Tables, pool: &mut HeapPool| -> Vec<u16> {
        let mut burst = Burst::new(32);
        let mut b = pool.alloc().unwrap();
        let f = pod_a_udp(REMOTE_POD_B, 1, 2, 3);
        assert!(b.append(f.len()));
        b.data_mut().copy_from_slice(&f);
        burst.push(b).unwrap();
        p.process(t, 2, &mut burst, pool, 0);
        let mut ports = Vec::new();
        p.tx().flush(|port, l| {
            for b in l.drain(..) {
                ports.push(port);
                pool.free(b);
            }
        });
        ports
    };
    assert_eq!(
        send(&mut p, &t1, &mut pool),
        vec![0],
        "VXLAN out of the uplink"
    );
    assert_eq!(send(&mut p, &t1, &mut pool), vec![0]);
    assert_eq!(counters.events.flow_cache_hits.get(), 1);
    assert_eq!(
        send(&mut p, &t2, &mut pool),
        vec![1],
        "the default route (host) after the change"
    );
    assert_eq!(counters.events.flow_cache_misses.get(), 2);
    assert_eq!(pool.available(), 64, "every buffer came back");
}

/// Every drop reason has a counter that real input reaches.
#[test]
fn every_drop_reason_is_reachable() {
    let mut seen = std::collections::BTreeSet::new();
    let mut check = |inputs: &[(&str, Vec<u8>)]| {
        let r = run(inputs);
        assert_conserved(&r);
        for (k, v) in r.stats.drops {
            if v > 0 {
                seen.insert(k);
            }
        }
    };
    let good = pod_a_udp(POD_B_IP, 1, 2, 3);
    check(&[("pod-a", good[..10].to_vec())]);
    let mut v = good.clone();
    v[12..14].copy_from_slice(&[0x81, 0]);
    check(&[("pod-a", v)]);
    let mut v = good.clone();
    v[12..14].copy_from_slice(&[0x86, 0xdd]);
    check(&[("pod-a", v)]);
    let mut a = arp_request(POD_A_MAC, POD_A_IP, Ipv4Addr::new(10, 5, 1, 1));
    a.truncate(30);
    check(&[("pod-a", a)]);
    check(&[(
        "pod-a",
        arp_request(POD_A_MAC, POD_A_IP, Ipv4Addr::new(1, 1, 1, 1)),
    )]);
    check(&[(
        "pod-a",
        arp_request(POD_A_MAC, Ipv4Addr::UNSPECIFIED, POD_A_IP),
    )]);
    check(&[("pod-a", good[..30].to_vec())]);
    for (at, val) in [(14usize, 0x65u8), (14, 0x44)] {
        let mut v = good.clone();
        v[at] = val;
        fix_ipv4_checksum(&mut v, 14);
        check(&[("pod-a", v)]);
    }
    let mut v = good.clone();
    v[16..18].copy_from_slice(&10u16.to_be_bytes());
    fix_ipv4_checksum(&mut v, 14);
    check(&[("pod-a", v)]);
    let mut v = good.clone();
    v[24] ^= 0xff;
    check(&[("pod-a", v)]);
    check(&[(
        "pod-a",
        pod_a_udp(Ipv4Addr::new(224, 0, 0, 251), 5353, 5353, 4),
    )]);
    let short = eth(
        ROUTER_MAC,
        POD_A_MAC,
        0x0800,
        &ipv4_packet(Ip::new(POD_A_IP, POD_B_IP, 17), &[0, 1, 2]),
    );
    check(&[("pod-a", short)]);
    let mut v = good.clone();
    v[6..12].copy_from_slice(&mac(7, 7).0);
    check(&[("pod-a", v)]);
    let u = udp_datagram(Ipv4Addr::new(10, 5, 1, 99), POD_B_IP, 1, 2, b"");
    check(&[(
        "pod-a",
        eth(
            ROUTER_MAC,
            POD_A_MAC,
            0x0800,
            &ipv4_packet(Ip::new(Ipv4Addr::new(10, 5, 1, 99), POD_B_IP, 17), &u),
        ),
    )]);
    let mut v = good.clone();
    v[..6].copy_from_slice(&mac(3, 3).0);
    check(&[("pod-a", v)]);
    let inner = remote_to_pod_a(64);
    check(&[(
        "eth0",
        vxlan_from(Ipv4Addr::new(192, 168, 50, 77), 1, VTEP_MAC, &inner),
    )]);
    let mut v = vxlan_from(NODE_B_IP, 1, VTEP_MAC, &inner);
    v[42] = 0;
    check(&[("eth0", v)]);
    let mut v = vxlan_from(NODE_B_IP, 1, VTEP_MAC, &inner);
    // UDP length covering only 4 bytes of VXLAN.
    v[38..40].copy_from_slice(&12u16.to_be_bytes());
    check(&[("eth0", v)]);
    check(&[("eth0", vxlan_from(NODE_B_IP, 9, VTEP_MAC, &inner))]);
    check(&[("eth0", vxlan_from(NODE_B_IP, 1, mac(9, 9), &inner))]);
    let arp_inner = arp_request(mac(0xbb, 2), REMOTE_POD_B, POD_A_IP);
    check(&[(
        "eth0",
        vxlan_frame(UPLINK_MAC, NODE_B_MAC, NODE_B_IP, NODE_A_IP, 8472, 1, &{
            let mut a = arp_inner.clone();
            a[..6].copy_from_slice(&VTEP_MAC.0);
            a
        }),
    )]);
    let mut bad_inner = inner.clone();
    bad_inner[0] = 0x55;
    check(&[("eth0", vxlan_from(NODE_B_IP, 1, VTEP_MAC, &bad_inner))]);
    let mut v = vxlan_from(NODE_B_IP, 1, VTEP_MAC, &inner);
    v[20] = 0x20; // MF
    fix_ipv4_checksum(&mut v, 14);
    check(&[("eth0", v)]);
    let mut v = good.clone();
    v[22] = 1;
    fix_ipv4_checksum(&mut v, 14);
    check(&[("pod-a", v)]);
    check(&[("pod-a", pod_a_udp(Ipv4Addr::new(10, 5, 9, 1), 1, 2, 3))]);
    check(&[("pod-a", pod_a_udp(Ipv4Addr::new(10, 5, 6, 1), 1, 2, 3))]);
    // Plain IPv4 to a pod from a neighbour that is not the source's node.
    let u = udp_datagram(Ipv4Addr::new(10, 5, 2, 9), POD_B_IP, 1, 2, b"x");
    check(&[(
        "eth0",
        eth(
            UPLINK_MAC,
            NODE_B_MAC,
            0x0800,
            &ipv4_packet(Ip::new(Ipv4Addr::new(10, 5, 2, 9), POD_B_IP, 17), &u),
        ),
    )]);
    check(&[("host", host_udp(REMOTE_POD_B, 1472, true))]);
    let u = udp_datagram(Ipv4Addr::new(10, 5, 4, 9), REMOTE_POD_B, 1, 2, b"x");
    check(&[(
        "eth0",
        eth(
            UPLINK_MAC,
            mac(0xaa, 4),
            0x0800,
            &ipv4_packet(Ip::new(Ipv4Addr::new(10, 5, 4, 9), REMOTE_POD_B, 17), &u),
        ),
    )]);
    // No route: a node without a default route.
    {
        let mut cfg = node();
        cfg.routes.retain(|r| r.prefix.len() != 0);
        let r = replay_in_memory(
            &cfg,
            &[("pod-a", pod_a_udp(Ipv4Addr::new(8, 8, 8, 8), 1, 2, 3))],
        )
        .unwrap();
        assert_eq!(r.stats.drops["no_route"], 1);
        seen.insert("no_route");
    }
    // A port the tables do not know, a full TX list, an exhausted pool, an
    // uplink MTU too small for any fragment: driven on a pipeline directly.
    let t = Tables::from_config(&node()).unwrap();
    let counters = Arc::new(WorkerCounters::new());
    let mut p: Pipeline<HeapBuf> = Pipeline::new(
        PipelineConfig {
            tx_list_capacity: 1,
            ..PipelineConfig::default()
        },
        counters.clone(),
    );
    let mut pool = HeapPool::new(40, 4096);
    let mut burst = Burst::new(32);
    for _ in 0..2 {
        let mut b = pool.alloc().unwrap();
        assert!(b.append(good.len()));
        b.data_mut().copy_from_slice(&good);
        burst.push(b).unwrap();
    }
    p.process(&t, 2, &mut burst, &mut pool, 0);
    p.tx().flush(|_, l| l.clear());
    assert_eq!(counters.drop_counter(DropReason::TxListFull).get(), 1);
    let b = pool.alloc().unwrap();
    burst.push(b).unwrap();
    p.process(&t, 99, &mut burst, &mut pool, 0);
    assert_eq!(counters.drop_counter(DropReason::PortDown).get(), 1);
    let big = host_udp(REMOTE_POD_B, 3000, false);
    let mut b = pool.alloc().unwrap();
    assert!(b.append(big.len()));
    b.data_mut().copy_from_slice(&big);
    burst.push(b).unwrap();
    let mut empty = HeapPool::new(0, 64);
    p.process(&t, 1, &mut burst, &mut empty, 0);
    assert_eq!(counters.drop_counter(DropReason::NoBuffer).get(), 1);
    let mut small = node();
    small.ports[0].mtu = 68;
    let r = replay_in_memory(&small, &[("host", host_udp(REMOTE_POD_B, 100, false))]).unwrap();
    assert_eq!(r.stats.drops["too_many_fragments"], 1);
    // A port whose TX ring takes nothing.
    let mut ports: Vec<MemoryPort> = (0..4).map(|_| MemoryPort::new()).collect();
    ports[3].tx_limit = Some(0);
    ports[2].inject(Record {
        ts_ns: 0,
        data: good.clone(),
    });
    poll_port(&mut p, &t, &mut ports, 2, &mut burst, &mut pool, 0);
    assert_eq!(counters.drop_counter(DropReason::TxFailed).get(), 1);
    assert_eq!(counters.port(3).tx_dropped.get(), 1, "on the output port");
    for r in [
        DropReason::TxListFull,
        DropReason::PortDown,
        DropReason::NoBuffer,
        DropReason::TooManyFragments,
        DropReason::TxFailed,
    ] {
        seen.insert(r.name());
    }
    let missing: Vec<&str> = DropReason::ALL
        .iter()
        .map(|r| r.name())
        .filter(|n| !seen.contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "drop reasons no input reached: {missing:?}"
    );
}

/// Every packet taken in ends in exactly one TX list or one drop counter.
/// Besides the packets taken in, the switch makes packets of its own: the
/// ICMP errors it sends and the fragments past the first of a packet it
/// fragments; they end in a TX list too. Checked as an equality.
#[track_caller]
fn assert_conserved(r: &MemoryReplay) {
    let taken_in: u64 = r.stats.ports.values().map(|p| p.rx_packets).sum();
    let made = r.stats.made();
    let sent: u64 = r.outputs.values().map(|v| v.len() as u64).sum();
    assert_eq!(
        taken_in + made,
        sent + r.stats.total_drops(),
        "{taken_in} in and {made} made, {sent} sent, drops {:?}",
        nonzero_drops(r)
    );
}

/// A UDP packet from `src` on the host port (no anti-spoofing there).
fn host_udp_from(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, len: usize, df: bool) -> Vec<u8> {
    let u = udp_datagram(src, dst, 5, 6, &vec![7u8; len]);
    eth(
        ROUTER_MAC,
        mac(0xee, 1),
        0x0800,
        &ipv4_packet(
            Ip {
                df,
                ttl,
                ..Ip::new(src, dst, 17)
            },
            &u,
        ),
    )
}

/// An ICMP error about a packet whose source the switch cannot route back
/// to (blackhole, unresolved neighbour, no route) is not sent; the packet
/// taken in is still counted as exactly one drop, under its own reason.
#[test]
fn an_icmp_error_whose_own_route_drops_is_not_a_second_drop() {
    let blackhole = Ipv4Addr::new(10, 5, 9, 1);
    let unresolved = Ipv4Addr::new(10, 5, 6, 1);
    let cases = [
        (
            "time exceeded to a blackhole",
            host_udp_from(blackhole, REMOTE_POD_B, 1, 10, false),
            DropReason::TtlExceeded,
        ),
        (
            "time exceeded to an unresolved neighbour",
            host_udp_from(unresolved, REMOTE_POD_B, 1, 10, false),
            DropReason::TtlExceeded,
        ),
        (
            "fragmentation needed to a blackhole",
            host_udp_from(blackhole, REMOTE_POD_B, 64, 1472, true),
            DropReason::FragNeeded,
        ),
    ];
    for (what, frame, reason) in cases {
        let r = run(&[("host", frame)]);
        assert_eq!(nonzero_drops(&r), vec![(reason.name(), 1)], "{what}");
        assert!(r.outputs.values().all(Vec::is_empty), "{what}: sent");
        let e = &r.stats.events;
        assert_eq!(e["icmp_undeliverable"], 1, "{what}");
        assert_eq!(e["icmp_time_exceeded"] + e["icmp_frag_needed"], 0, "{what}");
        assert_conserved(&r);
    }
    // No route back: a node without a default route.
    let mut cfg = node();
    cfg.routes.retain(|r| r.prefix.len() != 0);
    let r = replay_in_memory(
        &cfg,
        &[(
            "host",
            host_udp_from(Ipv4Addr::new(8, 8, 8, 8), REMOTE_POD_B, 1, 10, false),
        )],
    )
    .unwrap();
    assert_eq!(
        nonzero_drops(&r),
        vec![(DropReason::TtlExceeded.name(), 1)],
        "time exceeded with no route back"
    );
    assert_eq!(r.stats.events["icmp_undeliverable"], 1);
    assert_conserved(&r);
}

/// A packet the output port's backend does not take is charged to that
/// port's TX side, never to a port's `rx_dropped`.
#[test]
fn a_tx_failure_is_charged_to_the_output_ports_tx_side() {
    let t = Tables::from_config(&node()).unwrap();
    let counters = Arc::new(WorkerCounters::new());
    let mut p: Pipeline<HeapBuf> = Pipeline::new(PipelineConfig::default(), counters.clone());
    let mut pool = HeapPool::new(64, 4096);
    let mut burst = Burst::new(32);
    let mut ports: Vec<MemoryPort> = (0..4).map(|_| MemoryPort::new()).collect();
    ports[3].tx_limit = Some(1);
    for i in 0..3 {
        ports[2].inject(Record {
            ts_ns: 0,
            data: pod_a_udp(POD_B_IP, 1 + i, 2, 10),
        });
    }
    assert_eq!(
        poll_port(&mut p, &t, &mut ports, 2, &mut burst, &mut pool, 0),
        3
    );
    assert_eq!(ports[3].sent.len(), 1);
    assert_eq!(counters.drop_counter(DropReason::TxFailed).get(), 2);
    for id in 0..4 {
        assert_eq!(
            counters.port(id).rx_dropped.get(),
            0,
            "port {id}: a TX failure is not a receive drop"
        );
    }
    assert_eq!(counters.port(3).tx_dropped.get(), 2);
    assert_eq!(counters.port(3).tx_packets.get(), 1);
    assert_eq!(pool.available(), 64);
}

/// The reference node with a pod on port 257 (ids 4..=256 are removed
/// ports, which keep their slots): ingress ports past 255 are ordinary.
fn node_with_port_257() -> (NodeConfig, Ipv4Addr, MacAddr) {
    let mut cfg = node();
    let template = cfg.ports[3].clone();
    while cfg.ports.len() < 257 {
        let mut p = template.clone();
        p.name = format!("gone{}", cfg.ports.len());
        p.removed = true;
        cfg.ports.push(p);
    }
    let (ip, m) = (Ipv4Addr::new(10, 5, 1, 9), mac(1, 9));
    let mut p = template;
    p.name = "pod-z".to_string();
    p.ip = Some(ip);
    p.mac = m;
    cfg.ports.push(p);
    assert_eq!(cfg.ports.len(), 258);
    (cfg, ip, m)
}

/// Two flows identical but for the ingress port (1 and 257, which agree in
/// their low 8 bits) are two flow-cache entries, not one.
#[test]
fn flows_differing_only_in_ingress_ports_1_and_257_do_not_alias() {
    let (cfg, ip, m) = node_with_port_257();
    let t = Tables::from_config(&cfg).unwrap();
    assert_eq!(t.port_by_name("pod-z"), Some(257));
    let packet = ipv4_packet(
        Ip::new(ip, POD_A_IP, 17),
        &udp_datagram(ip, POD_A_IP, 1000, 2000, b"same flow"),
    );
    let from_pod = eth(ROUTER_MAC, m, 0x0800, &packet);
    let from_host = eth(ROUTER_MAC, mac(0xee, 1), 0x0800, &packet);
    let counters = Arc::new(WorkerCounters::new());
    let mut p: Pipeline<HeapBuf> = Pipeline::new(PipelineConfig::default(), counters.clone());
    let mut pool = HeapPool::new(8, 4096);
    let mut burst = Burst::new(32);
    for (port, frame) in [(257u16, &from_pod), (1, &from_host)] {
        let mut b = pool.alloc().unwrap();
        assert!(b.append(frame.len()));
        b.data_mut().copy_from_slice(frame);
        burst.push(b).unwrap();
        p.process(&t, port, &mut burst, &mut pool, 0);
        p.tx().flush(|_, l| l.clear());
    }
    assert_eq!(counters.events.delivered.get(), 2);
    assert_eq!(
        (
            counters.events.flow_cache_misses.get(),
            counters.events.flow_cache_hits.get()
        ),
        (2, 0),
        "the second flow must miss, not hit the first one's entry"
    );
    let mut in_ports: Vec<u32> = p
        .flow_cache()
        .iter()
        .map(|(k, _, _)| u32::from(k.in_port))
        .collect();
    in_ports.sort_unstable();
    assert_eq!(in_ports, vec![1, 257]);
}

/// Every event counter is reached by real input through the pipeline on
/// memory ports. A new event fails this test until a case reaches it.
#[test]
fn every_event_is_reachable() {
    let mut seen = std::collections::BTreeSet::new();
    let mut check = |inputs: &[(&str, Vec<u8>)]| {
        let r = run(inputs);
        assert_conserved(&r);
        for (k, v) in r.stats.events {
            if v > 0 {
                seen.insert(k);
            }
        }
    };
    let good = pod_a_udp(POD_B_IP, 1, 2, 3);
    // delivered, flow_cache_misses, then flow_cache_hits.
    check(&[("pod-a", good.clone()), ("pod-a", good.clone())]);
    check(&[(
        "pod-a",
        arp_request(POD_A_MAC, POD_A_IP, Ipv4Addr::new(10, 5, 1, 1)),
    )]);
    check(&[(
        "eth0",
        vxlan_from(NODE_B_IP, 1, VTEP_MAC, &remote_to_pod_a(64)),
    )]);
    check(&[(
        "eth0",
        eth(
            UPLINK_MAC,
            mac(0xaa, 3),
            0x0800,
            &ipv4_packet(Ip::new(NODE_C_IP, NODE_A_IP, 4), &remote_to_pod_a(64)),
        ),
    )]);
    check(&[("pod-a", pod_a_udp(REMOTE_POD_B, 1, 2, 3))]);
    check(&[("pod-a", pod_a_udp(Ipv4Addr::new(10, 5, 3, 7), 1, 2, 3))]);
    check(&[("pod-a", pod_a_udp(Ipv4Addr::new(10, 5, 4, 7), 1, 2, 3))]);
    check(&[("pod-a", pod_a_udp(Ipv4Addr::new(93, 184, 216, 34), 1, 2, 3))]);
    let mut ttl1 = good.clone();
    ttl1[22] = 1;
    fix_ipv4_checksum(&mut ttl1, 14);
    check(&[("pod-a", ttl1.clone())]);
    check(&[("host", host_udp(REMOTE_POD_B, 1472, true))]);
    check(&[("host", host_udp(REMOTE_POD_B, 2000, false))]);
    // More errors at once than the per-worker burst allows.
    check(&vec![("pod-a", ttl1.clone()); 60]);
    // A non-first fragment is never answered.
    let mut v = ttl1.clone();
    v[20..22].copy_from_slice(&[0, 1]);
    fix_ipv4_checksum(&mut v, 14);
    check(&[("pod-a", v)]);
    // An error with no route back to the source.
    check(&[(
        "host",
        host_udp_from(Ipv4Addr::new(10, 5, 9, 1), REMOTE_POD_B, 1, 10, false),
    )]);
    let missing: Vec<&str> = sluice_dataplane::counters::EVENT_FIELDS
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| !seen.contains(n))
        .collect();
    assert!(missing.is_empty(), "events no input reached: {missing:?}");
}
