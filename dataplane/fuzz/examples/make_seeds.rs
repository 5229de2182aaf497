//! Writes the checked-in seed corpus of the fuzz targets from `craft`
//! fixtures:
//!
//! ```text
//! cargo run --manifest-path dataplane/fuzz/Cargo.toml --example make_seeds [CORPUS_DIR]
//! ```
//!
//! `CORPUS_DIR` defaults to `dataplane/fuzz/corpus`. Seeds are rewritten in
//! place; other files there (regression inputs kept from crashes) are left
//! alone. `corpus/parse/` gets raw frames and bare headers; `corpus/pipeline/`
//! gets scripts in the `pipeline` target's format: one byte for the ingress
//! port (and the checksum-fixing flag), then frames as a 2-byte big-endian
//! length and the bytes.

use sluice_dataplane::craft::*;
use sluice_dataplane::wire::{ethernet, ipv4};
use std::net::Ipv4Addr;
use std::path::PathBuf;

const ETH0: u8 = 0;
const HOST: u8 = 1;
const POD_A: u8 = 2;
const POD_B: u8 = 3;

/// Bit of the script's first byte that makes the harness fix IPv4 checksums.
const FIX_CHECKSUMS: u8 = 0x80;

/// A `pipeline` script: frames on `port`, with the checksum-fixing bit set
/// (so that mutations of a seed reach past the checksum check).
fn pipeline_script<F: AsRef<[u8]>>(port: u8, frames: &[F]) -> Vec<u8> {
    assert!((port as usize) < REFERENCE_PORTS.len());
    let mut s = vec![port | FIX_CHECKSUMS];
    for f in frames {
        let f = f.as_ref();
        s.extend_from_slice(&(f.len() as u16).to_be_bytes());
        s.extend_from_slice(f);
    }
    s
}

fn gateway() -> Ipv4Addr {
    Ipv4Addr::new(10, 5, 1, 1)
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

fn vxlan_from_b(inner_ip: &[u8]) -> Vec<u8> {
    let inner = eth(VTEP_MAC, mac(0xbb, 2), ethernet::ethertype::IPV4, inner_ip);
    vxlan_frame(
        UPLINK_MAC, NODE_B_MAC, NODE_B_IP, NODE_A_IP, 8472, 1, &inner,
    )
}

fn ipip_from_c(inner_ip: &[u8]) -> Vec<u8> {
    let outer = ipv4_packet(
        Ip::new(NODE_C_IP, NODE_A_IP, ipv4::protocol::IPIP),
        inner_ip,
    );
    eth(UPLINK_MAC, mac(0xaa, 3), ethernet::ethertype::IPV4, &outer)
}

fn pod_a_ip(dst: Ipv4Addr, protocol: u8, l4: &[u8]) -> Vec<u8> {
    eth(
        ROUTER_MAC,
        POD_A_MAC,
        ethernet::ethertype::IPV4,
        &ipv4_packet(Ip::new(POD_A_IP, dst, protocol), l4),
    )
}

/// Sets the fragment fields of the IPv4 header after the Ethernet header.
fn fragment(mut f: Vec<u8>, mf: bool, offset: u16) -> Vec<u8> {
    ipv4::Packet::new_unchecked(&mut f[14..]).set_flags_and_frag_offset(false, mf, offset);
    fix_ipv4_checksum(&mut f, 14);
    f
}

fn with_ttl(mut f: Vec<u8>, ttl: u8) -> Vec<u8> {
    f[22] = ttl;
    fix_ipv4_checksum(&mut f, 14);
    f
}

/// The frame with an 802.1Q tag (VLAN 100) in front of its ethertype.
fn vlan_tagged(f: &[u8]) -> Vec<u8> {
    let mut v = f[..12].to_vec();
    v.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
    v.extend_from_slice(&f[12..]);
    v
}

fn host_udp(dst: Ipv4Addr, len: usize, df: bool) -> Vec<u8> {
    let u = udp_datagram(NODE_A_IP, dst, 5, 6, &vec![7u8; len]);
    let ip = ipv4_packet(
        Ip {
            df,
            ident: 0x1234,
            ..Ip::new(NODE_A_IP, dst, ipv4::protocol::UDP)
        },
        &u,
    );
    eth(ROUTER_MAC, mac(0xee, 1), ethernet::ethertype::IPV4, &ip)
}

fn main() -> std::io::Result<()> {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus"));

    let vxlan = vxlan_from_b(&remote_to_pod_a(64));
    let ipip = ipip_from_c(&remote_to_pod_a(64));
    let arp = arp_request(POD_A_MAC, POD_A_IP, gateway());
    let udp_local = pod_a_udp(POD_B_IP, 1000, 2000, 32);
    let udp_vxlan = pod_a_udp(REMOTE_POD_B, 1000, 2000, 32);
    let syn = pod_a_ip(POD_B_IP, ipv4::protocol::TCP, &tcp_syn(40000, 80));
    let echo = pod_a_ip(POD_B_IP, ipv4::protocol::ICMP, &icmp_echo(7, 1, b"ping"));
    let frag_first = fragment(pod_a_udp(REMOTE_POD_B, 1000, 2000, 40), true, 0);
    let frag_later = fragment(
        pod_a_ip(REMOTE_POD_B, ipv4::protocol::UDP, &[0x44; 48]),
        false,
        48,
    );
    let vlan = vlan_tagged(&udp_local);

    let parse: Vec<(&str, Vec<u8>)> = vec![
        ("vxlan_frame", vxlan.clone()),
        ("ipip_frame", ipip.clone()),
        ("arp_request", arp.clone()),
        ("pod_udp", udp_local.clone()),
        ("tcp_syn", syn.clone()),
        ("icmp_echo", echo.clone()),
        ("fragment_first", frag_first.clone()),
        ("fragment_later", frag_later.clone()),
        ("vlan_tagged", vlan.clone()),
        ("ipv4_udp_packet", udp_local[14..].to_vec()),
        ("ipip_packet", ipip[14..].to_vec()),
        ("udp_vxlan_datagram", vxlan[34..].to_vec()),
        ("vxlan_header_and_frame", vxlan[42..].to_vec()),
        ("tcp_header", tcp_syn(1, 2)),
        ("icmp_message", icmp_echo(1, 2, b"x")),
        ("mac_text", b"02:00:00:00:aa:01".to_vec()),
    ];

    let to_node_ssh = eth(
        UPLINK_MAC,
        NODE_B_MAC,
        ethernet::ethertype::IPV4,
        &ipv4_packet(
            Ip::new(NODE_B_IP, NODE_A_IP, ipv4::protocol::TCP),
            &tcp_syn(40000, 22),
        ),
    );
    let host_gw = {
        let src = Ipv4Addr::new(10, 5, 4, 9);
        let u = udp_datagram(src, POD_B_IP, 1, 2, b"host-gw");
        eth(
            UPLINK_MAC,
            mac(0xaa, 4),
            ethernet::ethertype::IPV4,
            &ipv4_packet(Ip::new(src, POD_B_IP, 17), &u),
        )
    };
    let pipeline: Vec<(&str, Vec<u8>)> = vec![
        ("eth0_vxlan", pipeline_script(ETH0, &[&vxlan])),
        ("eth0_ipip", pipeline_script(ETH0, &[&ipip])),
        (
            "eth0_vxlan_ttl1",
            pipeline_script(ETH0, &[vxlan_from_b(&remote_to_pod_a(1))]),
        ),
        (
            "eth0_vxlan_fragments",
            pipeline_script(
                ETH0,
                &[
                    fragment(vxlan.clone(), true, 0),
                    fragment(vxlan.clone(), false, 1480),
                ],
            ),
        ),
        (
            "eth0_node_traffic",
            pipeline_script(
                ETH0,
                &[
                    to_node_ssh,
                    arp_request(NODE_B_MAC, NODE_B_IP, NODE_A_IP),
                    host_gw,
                ],
            ),
        ),
        ("pod-a_udp_local", pipeline_script(POD_A, &[&udp_local])),
        ("pod-a_udp_local_no_fix", {
            let mut script = pipeline_script(POD_A, &[&udp_local]);
            script[0] &= !FIX_CHECKSUMS;
            script
        }),
        (
            "pod-a_udp_routes",
            pipeline_script(
                POD_A,
                &[
                    udp_vxlan.clone(),
                    pod_a_udp(Ipv4Addr::new(10, 5, 3, 3), 1, 2, 16),
                    pod_a_udp(Ipv4Addr::new(10, 5, 4, 4), 1, 2, 16),
                    pod_a_udp(Ipv4Addr::new(10, 5, 5, 9), 1, 2, 16),
                    pod_a_udp(Ipv4Addr::new(10, 5, 6, 1), 1, 2, 16),
                    pod_a_udp(Ipv4Addr::new(10, 5, 9, 1), 1, 2, 16),
                    pod_a_udp(Ipv4Addr::new(93, 184, 216, 34), 1, 53, 16),
                ],
            ),
        ),
        ("pod-a_arp", pipeline_script(POD_A, &[&arp])),
        (
            "pod-a_tcp_icmp",
            pipeline_script(POD_A, &[syn.clone(), echo.clone()]),
        ),
        (
            "pod-a_fragments",
            pipeline_script(POD_A, &[frag_first.clone(), frag_later.clone()]),
        ),
        (
            "pod-a_ttl",
            pipeline_script(
                POD_A,
                &[
                    with_ttl(udp_vxlan.clone(), 1),
                    with_ttl(udp_local.clone(), 0),
                ],
            ),
        ),
        ("pod-a_vlan", pipeline_script(POD_A, &[&vlan])),
        (
            "pod-b_udp",
            pipeline_script(
                POD_B,
                &[{
                    let u = udp_datagram(POD_B_IP, POD_A_IP, 1, 2, b"b");
                    eth(
                        ROUTER_MAC,
                        POD_B_MAC,
                        ethernet::ethertype::IPV4,
                        &ipv4_packet(Ip::new(POD_B_IP, POD_A_IP, 17), &u),
                    )
                }],
            ),
        ),
        (
            "host_udp",
            pipeline_script(HOST, &[host_udp(POD_A_IP, 64, true)]),
        ),
        (
            "host_fragmentation",
            pipeline_script(HOST, &[host_udp(REMOTE_POD_B, 2000, false)]),
        ),
        (
            "host_frag_needed",
            pipeline_script(HOST, &[host_udp(REMOTE_POD_B, 1472, true)]),
        ),
        (
            "host_arp",
            pipeline_script(HOST, &[arp_request(mac(0xee, 1), NODE_A_IP, POD_B_IP)]),
        ),
    ];

    for (target, seeds) in [("parse", parse), ("pipeline", pipeline)] {
        let d = dir.join(target);
        std::fs::create_dir_all(&d)?;
        for (name, bytes) in seeds {
            std::fs::write(d.join(name), bytes)?;
        }
    }
    println!("seeds written to {}", dir.display());
    Ok(())
}
