//! Frame builders for tests, benchmarks, fuzz seeds and examples, plus the
//! reference node configuration they share. Not used by the pipeline.
//!
//! Builders return whole byte vectors with correct lengths and checksums;
//! callers corrupt them on purpose where a test wants malformed input.

use crate::wire::{arp, checksum, ethernet, icmp, ipv4, udp, vxlan, MacAddr};
use std::net::Ipv4Addr;

/// An Ethernet frame around `payload`.
pub fn eth(dst: MacAddr, src: MacAddr, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; ethernet::HEADER_LEN + payload.len()];
    let mut e = ethernet::Frame::new_unchecked(&mut f[..]);
    e.set_dst_addr(dst);
    e.set_src_addr(src);
    e.set_ethertype(ethertype);
    f[ethernet::HEADER_LEN..].copy_from_slice(payload);
    f
}

/// IPv4 header fields for [`ipv4_packet`].
#[derive(Debug, Clone, Copy)]
pub struct Ip {
    /// Source.
    pub src: Ipv4Addr,
    /// Destination.
    pub dst: Ipv4Addr,
    /// Protocol number.
    pub protocol: u8,
    /// TTL.
    pub ttl: u8,
    /// Don't-fragment flag.
    pub df: bool,
    /// Identification.
    pub ident: u16,
}

impl Ip {
    /// TTL 64, DF set, ID 1.
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8) -> Self {
        Ip {
            src,
            dst,
            protocol,
            ttl: 64,
            df: true,
            ident: 1,
        }
    }
}

/// An IPv4 packet (20-byte header, correct checksum) around `payload`.
pub fn ipv4_packet(ip: Ip, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; ipv4::HEADER_LEN + payload.len()];
    ipv4::Repr {
        src: ip.src,
        dst: ip.dst,
        protocol: ip.protocol,
        ttl: ip.ttl,
        payload_len: payload.len(),
        ident: ip.ident,
        dont_frag: ip.df,
        dscp_ecn: 0,
    }
    .emit(&mut ipv4::Packet::new_unchecked(&mut p[..]));
    p[ipv4::HEADER_LEN..].copy_from_slice(payload);
    p
}

/// A UDP datagram (header and payload) with its checksum.
pub fn udp_datagram(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut d = vec![0u8; udp::HEADER_LEN + payload.len()];
    d[udp::HEADER_LEN..].copy_from_slice(payload);
    let mut u = udp::Packet::new_unchecked(&mut d[..]);
    u.set_src_port(sport);
    u.set_dst_port(dport);
    u.set_len((udp::HEADER_LEN + payload.len()) as u16);
    u.fill_checksum(src, dst);
    d
}

/// A bare 20-byte TCP SYN header (checksum left 0).
pub fn tcp_syn(sport: u16, dport: u16) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x02;
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    t
}

/// An ICMP echo request with `payload`.
pub fn icmp_echo(ident: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut m = vec![0u8; icmp::HEADER_LEN + payload.len()];
    m[icmp::HEADER_LEN..].copy_from_slice(payload);
    let mut p = icmp::Packet::new_unchecked(&mut m[..]);
    p.set_msg_type(icmp::msg_type::ECHO_REQUEST);
    p.set_code(0);
    p.set_ident(ident);
    p.set_seq_no(seq);
    p.fill_checksum();
    m
}

/// A VXLAN header and `inner` frame (the UDP payload).
pub fn vxlan_payload(vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; vxlan::HEADER_LEN + inner.len()];
    vxlan::Packet::new_unchecked(&mut v[..]).emit_header(vni);
    v[vxlan::HEADER_LEN..].copy_from_slice(inner);
    v
}

/// A whole VXLAN frame on the underlay, outer UDP checksum 0.
pub fn vxlan_frame(
    outer_dst_mac: MacAddr,
    outer_src_mac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    port: u16,
    vni: u32,
    inner: &[u8],
) -> Vec<u8> {
    let v = vxlan_payload(vni, inner);
    let mut u = vec![0u8; udp::HEADER_LEN];
    u[..2].copy_from_slice(&54321u16.to_be_bytes());
    u[2..4].copy_from_slice(&port.to_be_bytes());
    u[4..6].copy_from_slice(&((udp::HEADER_LEN + v.len()) as u16).to_be_bytes());
    u.extend_from_slice(&v);
    eth(
        outer_dst_mac,
        outer_src_mac,
        ethernet::ethertype::IPV4,
        &ipv4_packet(Ip::new(src, dst, ipv4::protocol::UDP), &u),
    )
}

/// An ARP request frame (broadcast).
pub fn arp_request(sender_mac: MacAddr, sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0u8; arp::PACKET_LEN];
    arp::emit_ethernet_ipv4(
        &mut a,
        arp::operation::REQUEST,
        sender_mac,
        sender_ip,
        MacAddr::ZERO,
        target_ip,
    );
    eth(MacAddr::BROADCAST, sender_mac, ethernet::ethertype::ARP, &a)
}

/// Recomputes the IPv4 header checksum of the packet at `l3` in `frame`.
pub fn fix_ipv4_checksum(frame: &mut [u8], l3: usize) {
    let hl = ((frame[l3] & 0x0f) as usize) * 4;
    frame[l3 + 10] = 0;
    frame[l3 + 11] = 0;
    let c = checksum::checksum(&frame[l3..l3 + hl]);
    frame[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
}

/// MAC helper: `02:00:00:00:xx:yy`.
pub const fn mac(x: u8, y: u8) -> MacAddr {
    MacAddr([0x02, 0, 0, 0, x, y])
}

/// The reference node ("node A" of a lab) used by tests and benchmarks.
///
/// | what | value |
/// |---|---|
/// | pod network, subnet, gateway | 10.5.0.0/16, 10.5.1.0/24, 10.5.1.1 |
/// | router MAC | 02:00:00:00:00:01 |
/// | uplink `eth0` | 02:00:00:00:aa:01, 192.168.50.1/24, gateway .254, MTU 1500 |
/// | host port `host` | kernel side 02:00:00:00:ee:01 |
/// | pods | `pod-a` 10.5.1.2 (…:01:02), `pod-b` 10.5.1.3 (…:01:03), MTU 1450 |
/// | 10.5.2.0/24 | VXLAN to 192.168.50.2, VTEP MAC …:bb:02 |
/// | 10.5.3.0/24 | IPIP to 192.168.50.3 |
/// | 10.5.4.0/24 | host-gw via 192.168.50.4 |
/// | 10.5.5.0/24 | VXLAN to 10.99.0.5 (off-link, through the gateway) |
/// | 10.5.6.0/24 | VXLAN to 192.168.50.6 (neighbour unknown) |
/// | 10.5.9.0/24 | blackhole |
/// | 0.0.0.0/0 | the host |
pub const REFERENCE_NODE: &str = r#"
[node]
pod_network = "10.5.0.0/16"
pod_subnet = "10.5.1.0/24"
router_mac = "02:00:00:00:00:01"

[tunnel]
vni = 1
vxlan_port = 8472
vtep_mac = "02:00:00:00:bb:01"

[[port]]
name = "eth0"
kind = "uplink"
mac = "02:00:00:00:aa:01"
address = "192.168.50.1/24"
gateway = "192.168.50.254"
mtu = 1500

[[port]]
name = "host"
kind = "host"
mac = "02:00:00:00:ee:01"
mtu = 1500

[[port]]
name = "pod-a"
kind = "pod"
mac = "02:00:00:00:01:02"
ip = "10.5.1.2"
mtu = 1450

[[port]]
name = "pod-b"
kind = "pod"
mac = "02:00:00:00:01:03"
ip = "10.5.1.3"
mtu = 1450

[[route]]
prefix = "10.5.2.0/24"
via = "vxlan"
node = "192.168.50.2"
vtep_mac = "02:00:00:00:bb:02"

[[route]]
prefix = "10.5.3.0/24"
via = "ipip"
node = "192.168.50.3"

[[route]]
prefix = "10.5.4.0/24"
via = "host-gw"
node = "192.168.50.4"

[[route]]
prefix = "10.5.5.0/24"
via = "vxlan"
node = "10.99.0.5"
vtep_mac = "02:00:00:00:bb:05"

[[route]]
prefix = "10.5.6.0/24"
via = "vxlan"
node = "192.168.50.6"
vtep_mac = "02:00:00:00:bb:06"

[[route]]
prefix = "10.5.9.0/24"
via = "blackhole"

[[route]]
prefix = "0.0.0.0/0"
via = "host"

[[neighbour]]
ip = "192.168.50.2"
mac = "02:00:00:00:aa:02"

[[neighbour]]
ip = "192.168.50.3"
mac = "02:00:00:00:aa:03"

[[neighbour]]
ip = "192.168.50.4"
mac = "02:00:00:00:aa:04"

[[neighbour]]
ip = "192.168.50.254"
mac = "02:00:00:00:aa:fe"
"#;

/// Names of the reference node's ports, by id.
pub const REFERENCE_PORTS: [&str; 4] = ["eth0", "host", "pod-a", "pod-b"];
/// The reference node's router MAC.
pub const ROUTER_MAC: MacAddr = mac(0, 1);
/// `pod-a`'s MAC.
pub const POD_A_MAC: MacAddr = mac(1, 2);
/// `pod-b`'s MAC.
pub const POD_B_MAC: MacAddr = mac(1, 3);
/// The uplink's MAC.
pub const UPLINK_MAC: MacAddr = mac(0xaa, 1);
/// Node B's uplink MAC.
pub const NODE_B_MAC: MacAddr = mac(0xaa, 2);
/// This node's VTEP MAC.
pub const VTEP_MAC: MacAddr = mac(0xbb, 1);
/// `pod-a`'s address.
pub const POD_A_IP: Ipv4Addr = Ipv4Addr::new(10, 5, 1, 2);
/// `pod-b`'s address.
pub const POD_B_IP: Ipv4Addr = Ipv4Addr::new(10, 5, 1, 3);
/// This node's underlay address.
pub const NODE_A_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 1);
/// Node B's underlay address (VXLAN peer).
pub const NODE_B_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 2);
/// Node C's underlay address (IPIP peer).
pub const NODE_C_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 3);
/// A pod on node B.
pub const REMOTE_POD_B: Ipv4Addr = Ipv4Addr::new(10, 5, 2, 7);

/// A UDP frame from `pod-a` to `dst`, `payload_len` bytes of payload.
pub fn pod_a_udp(dst: Ipv4Addr, sport: u16, dport: u16, payload_len: usize) -> Vec<u8> {
    let payload = vec![0x5a; payload_len];
    let u = udp_datagram(POD_A_IP, dst, sport, dport, &payload);
    eth(
        ROUTER_MAC,
        POD_A_MAC,
        ethernet::ethertype::IPV4,
        &ipv4_packet(Ip::new(POD_A_IP, dst, ipv4::protocol::UDP), &u),
    )
}

/// xorshift64*: tiny, deterministic, good enough to scatter prefixes.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a non-zero seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// The next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is irrelevant here).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}
