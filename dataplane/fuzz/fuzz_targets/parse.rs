//! Fuzz target `parse`: the wire views' length contract.
//!
//! The input goes to every view's `new_checked` as it is, and down the
//! layers (Ethernet payload to ARP or IPv4, IPv4 payload to ICMP, UDP or
//! TCP, UDP payload to VXLAN and its inner frame, IPv4 as IPIP). Whenever a
//! view passes its check, every getter and payload accessor is called, and
//! the setters that keep the lengths are tried on a copy: by the contract in
//! `wire`, none of them may panic. A few round trips are asserted on the way
//! (filled checksums verify, an incremental TTL decrement keeps a valid
//! checksum valid, `ipv4::Repr` emits what it parsed).

#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_dataplane::wire::{arp, checksum, ethernet, icmp, ipip, ipv4, tcp, udp, vxlan};
use sluice_dataplane::wire::{ethernet::ethertype, MacAddr};
use std::hint::black_box;
use std::net::Ipv4Addr;

fuzz_target!(|data: &[u8]| {
    black_box(checksum::checksum(data));
    black_box(checksum::sum(data));
    black_box(tcp::ports(data));
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(mac) = text.parse::<MacAddr>() {
            assert_eq!(
                mac.to_string().parse::<MacAddr>(),
                Ok(mac),
                "MAC text round trip"
            );
        }
    }
    ethernet_frame(data, 0);
    arp_packet(data);
    ipv4_packet(data, 0);
    icmp_packet(data);
    udp_datagram(data, Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 0);
    tcp_segment(data);
    vxlan_packet(data, 0);
    ipip_packet(data, 0);
});

/// How deep the layers may nest (VXLAN in IPIP in VXLAN...).
const MAX_DEPTH: u32 = 4;

fn mac(m: MacAddr) {
    black_box((
        m.octets(),
        m.is_broadcast(),
        m.is_multicast(),
        m.is_unicast(),
    ));
}

fn ethernet_frame(data: &[u8], depth: u32) {
    let Ok(f) = ethernet::Frame::new_checked(data) else {
        return;
    };
    mac(f.dst_addr());
    mac(f.src_addr());
    black_box((f.vlan_tci(), f.vlan_id(), f.header_len()));
    let payload = f.payload();
    assert_eq!(payload.len(), data.len() - f.header_len());
    let mut copy = data.to_vec();
    let mut w = ethernet::Frame::new_unchecked(&mut copy[..]);
    w.set_dst_addr(MacAddr::BROADCAST);
    w.set_src_addr(MacAddr::ZERO);
    black_box(w.payload_mut().len());
    if depth < MAX_DEPTH {
        match f.ethertype() {
            ethertype::ARP => arp_packet(payload),
            ethertype::IPV4 => {
                ipv4_packet(payload, depth + 1);
                ipip_packet(payload, depth + 1);
            }
            _ => {}
        }
    }
}

fn arp_packet(data: &[u8]) {
    let Ok(a) = arp::Packet::new_checked(data) else {
        return;
    };
    black_box((
        a.hardware_type(),
        a.protocol_type(),
        a.hardware_len(),
        a.protocol_len(),
        a.operation(),
    ));
    mac(a.sender_hw_addr());
    mac(a.target_hw_addr());
    black_box((a.sender_ip(), a.target_ip()));
    let mut copy = data.to_vec();
    let mut w = arp::Packet::new_unchecked(&mut copy[..]);
    w.set_operation(arp::operation::REPLY);
    w.set_sender_hw_addr(MacAddr::BROADCAST);
    w.set_sender_ip(Ipv4Addr::LOCALHOST);
    w.set_target_hw_addr(MacAddr::ZERO);
    w.set_target_ip(Ipv4Addr::BROADCAST);
    assert!(
        arp::Packet::new_checked(&copy[..]).is_ok(),
        "ARP setters keep a checked packet valid"
    );
}

fn ipv4_packet(data: &[u8], depth: u32) {
    let Ok(ip) = ipv4::Packet::new_checked(data) else {
        return;
    };
    let header_len = ip.header_len();
    let total_len = usize::from(ip.total_len());
    black_box((
        ip.version(),
        ip.dscp_ecn(),
        ip.ident(),
        ip.dont_frag(),
        ip.more_frags(),
    ));
    black_box((
        ip.frag_offset(),
        ip.is_fragment(),
        ip.is_first_fragment_or_whole(),
        ip.ttl(),
    ));
    black_box((
        ip.checksum(),
        ip.src_addr(),
        ip.dst_addr(),
        ip.src_u32(),
        ip.dst_u32(),
    ));
    assert_eq!(ip.options().len(), header_len - ipv4::HEADER_LEN);
    assert_eq!(ip.payload().len(), total_len - header_len);
    let valid = ip.verify_checksum();

    let repr = ipv4::Repr::parse(&ip);
    assert_eq!(repr.total_len(), ipv4::HEADER_LEN + total_len - header_len);
    let mut emitted = [0u8; ipv4::HEADER_LEN];
    let mut e = ipv4::Packet::new_unchecked(&mut emitted[..]);
    repr.emit(&mut e);
    let e = ipv4::Packet::new_unchecked(&emitted[..]);
    assert!(e.verify_checksum(), "Repr::emit writes a valid checksum");
    let again = ipv4::Repr::parse(&e);
    assert_eq!(
        (again.src, again.dst, again.protocol, again.ttl),
        (repr.src, repr.dst, repr.protocol, repr.ttl)
    );
    assert_eq!(
        (again.payload_len, again.ident, again.dont_frag),
        (repr.payload_len, repr.ident, repr.dont_frag)
    );

    // Setters that leave every length alone, on a copy.
    let mut copy = data.to_vec();
    let mut w = ipv4::Packet::new_unchecked(&mut copy[..]);
    if ip.ttl() > 1 {
        w.decrement_ttl();
        let w = ipv4::Packet::new_unchecked(&copy[..]);
        assert_eq!(w.ttl(), ip.ttl() - 1);
        assert_eq!(
            w.verify_checksum(),
            valid,
            "an incremental TTL update keeps the checksum's validity"
        );
    }
    let mut w = ipv4::Packet::new_unchecked(&mut copy[..]);
    w.set_dscp_ecn(0xb8);
    w.set_ident(0xbeef);
    w.set_flags_and_frag_offset(true, false, 0);
    w.set_ttl(1);
    w.set_protocol(ipv4::protocol::UDP);
    w.set_src_addr(Ipv4Addr::new(10, 0, 0, 1));
    w.set_dst_addr(Ipv4Addr::new(10, 0, 0, 2));
    black_box(w.payload_mut().len());
    w.fill_checksum();
    let w = ipv4::Packet::new_checked(&copy[..]).expect("setters keep the lengths");
    assert!(w.verify_checksum(), "fill_checksum verifies");

    if depth < MAX_DEPTH && ip.is_first_fragment_or_whole() {
        let payload = ip.payload();
        match ip.protocol() {
            ipv4::protocol::ICMP => icmp_packet(payload),
            ipv4::protocol::UDP => udp_datagram(payload, ip.src_addr(), ip.dst_addr(), depth + 1),
            ipv4::protocol::TCP => tcp_segment(payload),
            ipv4::protocol::IPIP => ipv4_packet(payload, depth + 1),
            _ => {}
        }
    }
}

fn icmp_packet(data: &[u8]) {
    let Ok(m) = icmp::Packet::new_checked(data) else {
        return;
    };
    black_box((m.msg_type(), m.code(), m.checksum(), m.ident(), m.seq_no()));
    black_box((
        m.rest_of_header(),
        m.next_hop_mtu(),
        m.data().len(),
        m.verify_checksum(),
    ));
    let mut copy = data.to_vec();
    let mut w = icmp::Packet::new_unchecked(&mut copy[..]);
    w.set_msg_type(icmp::msg_type::TIME_EXCEEDED);
    w.set_code(icmp::code::TTL_EXCEEDED);
    w.set_ident(1);
    w.set_seq_no(2);
    w.set_rest_of_header(0);
    w.set_next_hop_mtu(1450);
    black_box(w.data_mut().len());
    w.fill_checksum();
    assert!(
        icmp::Packet::new_unchecked(&copy[..]).verify_checksum(),
        "fill_checksum verifies"
    );
}

fn udp_datagram(data: &[u8], src: Ipv4Addr, dst: Ipv4Addr, depth: u32) {
    let Ok(u) = udp::Packet::new_checked(data) else {
        return;
    };
    black_box((
        u.src_port(),
        u.dst_port(),
        u.checksum(),
        u.verify_checksum(src, dst),
    ));
    assert_eq!(u.payload().len(), usize::from(u.len()) - udp::HEADER_LEN);
    let mut copy = data.to_vec();
    let mut w = udp::Packet::new_unchecked(&mut copy[..]);
    w.set_src_port(49152);
    w.set_dst_port(vxlan::DEFAULT_PORT_LINUX);
    black_box(w.payload_mut().len());
    w.fill_checksum(src, dst);
    assert!(
        udp::Packet::new_unchecked(&copy[..]).verify_checksum(src, dst),
        "fill_checksum verifies"
    );
    if depth < MAX_DEPTH {
        vxlan_packet(u.payload(), depth + 1);
    }
}

fn tcp_segment(data: &[u8]) {
    let Ok(t) = tcp::Packet::new_checked(data) else {
        return;
    };
    black_box((
        t.src_port(),
        t.dst_port(),
        t.seq_number(),
        t.ack_number(),
        t.flags(),
    ));
    black_box((
        t.window_len(),
        t.checksum(),
        t.options().len(),
        t.payload().len(),
    ));
    assert_eq!(tcp::ports(data), Some((t.src_port(), t.dst_port())));
    assert_eq!(t.header_len(), tcp::HEADER_LEN + t.options().len());
    let mut copy = data.to_vec();
    let mut w = tcp::Packet::new_unchecked(&mut copy[..]);
    w.set_src_port(1);
    w.set_dst_port(2);
    w.set_checksum(3);
}

fn vxlan_packet(data: &[u8], depth: u32) {
    let Ok(v) = vxlan::Packet::new_checked(data) else {
        return;
    };
    black_box(v.flags());
    assert!(v.vni() <= vxlan::MAX_VNI);
    let inner = v.payload();
    let mut copy = data.to_vec();
    let mut w = vxlan::Packet::new_unchecked(&mut copy[..]);
    w.set_flags(vxlan::FLAG_I);
    w.set_vni(v.vni());
    black_box(w.payload_mut().len());
    w.emit_header(vxlan::MAX_VNI);
    assert_eq!(
        vxlan::Packet::new_checked(&copy[..]).map(|p| p.vni()),
        Ok(vxlan::MAX_VNI)
    );
    if depth < MAX_DEPTH {
        ethernet_frame(inner, depth + 1);
    }
}

fn ipip_packet(data: &[u8], depth: u32) {
    let Ok(p) = ipip::Packet::new_checked(data) else {
        return;
    };
    let outer = p.outer();
    assert_eq!(outer.protocol(), ipv4::protocol::IPIP);
    assert_eq!(p.inner_offset(), outer.header_len());
    let inner = p.inner();
    black_box((
        inner.src_addr(),
        inner.dst_addr(),
        inner.total_len(),
        inner.payload().len(),
    ));
    let mut copy = data.to_vec();
    let mut w = ipip::Packet::new_unchecked(&mut copy[..]);
    w.outer_mut().set_ttl(9);
    w.inner_mut().set_ttl(8);
    let w = ipip::Packet::new_checked(&copy[..]).expect("TTL setters keep IPIP valid");
    assert_eq!((w.outer().ttl(), w.inner().ttl()), (9, 8));
    if depth < MAX_DEPTH {
        ipv4_packet(inner.into_inner(), depth + 1);
    }
}
