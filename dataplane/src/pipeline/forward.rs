//! Stage 4: forward. MTU, TTL, rewrite or encapsulation, TX lists.
//!
//! Size is checked against the adjacency's largest IPv4 packet: too big with
//! DF set answers ICMP fragmentation needed (carrying that size as next-hop
//! MTU); with DF clear the packet is fragmented and each fragment is
//! rewritten alike. Rewrites write a whole Ethernet header; encapsulation
//! copies the adjacency's precomputed headers into the headroom and fills in
//! only the lengths, the outer IPv4 checksum (from the template's partial
//! sum) and the VXLAN source port (from the flow hash, in 49152..=65535).
//!
//! Packets that arrived on the uplink are never sent back out of it
//! (dropped as `hairpin`): a sluice node is a leaf, not a transit router.
//!
//! An ICMP error is a packet the switch makes from one it drops: the packet
//! taken in is counted once, under its own reason, and the error then ends
//! in a TX list (counted as sent, `icmp_time_exceeded` or `icmp_frag_needed`)
//! or, if it cannot be built, routed or queued, as `icmp_undeliverable`:
//! never as a second drop.

use super::fragment::fragment;
use super::icmp::{build_error, may_answer, IcmpLimiter};
use super::{Meta, Next, L3_OFFSET};
use crate::buffer::{BufPool, Burst, PacketBuf};
use crate::counters::{Counter, DropReason, WorkerCounters};
use crate::fib::flow_cache::FlowKey;
use crate::tables::{
    Adjacency, Encap, L2Rewrite, PortId, Tables, IPIP_TEMPLATE_LEN, VXLAN_TEMPLATE_LEN,
};
use crate::wire::{checksum, icmp, ipv4, udp, vxlan};

/// Everything the forward stage touches, borrowed from the pipeline.
pub(crate) struct Ctx<'a, B, P> {
    pub tables: &'a Tables,
    pub in_port: PortId,
    pub counters: &'a WorkerCounters,
    pub tx: &'a mut super::TxLists<B>,
    pub pool: &'a mut P,
    pub icmp: &'a mut IcmpLimiter,
    pub frags: &'a mut Vec<B>,
    pub now_ns: u64,
    /// Set while an ICMP error the switch made is on its way out: what would
    /// be a drop is then counted as `icmp_undeliverable`.
    pub originating: bool,
}

pub(crate) fn forward_burst<B: PacketBuf, P: BufPool<Buf = B>>(
    ctx: &mut Ctx<'_, B, P>,
    burst: &mut Burst<B>,
    meta: &[Meta],
) {
    let t = ctx.tables;
    for (buf, m) in burst.drain().zip(meta.iter()) {
        match m.next {
            Next::Out(port) => ctx.enqueue(port, buf),
            Next::Drop(r) => ctx.drop(r, buf),
            Next::L3 => match t.adjacencies.get(m.adj as usize) {
                Some(adj) => ctx.forward(buf, adj, m.hash, m.from_uplink, false),
                None => ctx.drop(DropReason::NoRoute, buf),
            },
            Next::TimeExceeded => ctx.icmp_error(
                buf,
                DropReason::TtlExceeded,
                icmp::msg_type::TIME_EXCEEDED,
                icmp::code::TTL_EXCEEDED,
                0,
            ),
            Next::Arp | Next::NonIp => ctx.drop(DropReason::UnsupportedEthertype, buf),
        }
    }
}

// The IPv4 header is reached as a fixed-size array: parse (or the ICMP
// builder) put a whole one at `L3_OFFSET`, and with the length known the
// field accesses need no bounds checks. Were it ever missing, the packet
// would read as 0 bytes long and go out untouched rather than panic.

/// The IPv4 total length and DF flag; the TTL is decremented too when the
/// packet fits in `max_ip_len` and was not `originated` by the switch.
#[inline(always)]
fn len_df_and_decrement_ttl<B: PacketBuf>(
    buf: &mut B,
    max_ip_len: u16,
    originated: bool,
) -> (u16, bool) {
    match buf
        .data_mut()
        .get_mut(L3_OFFSET..)
        .and_then(|s| s.first_chunk_mut::<{ ipv4::HEADER_LEN }>())
    {
        Some(h) => {
            let mut ip = ipv4::Packet::new_unchecked(h);
            let (len, df) = (ip.total_len(), ip.dont_frag());
            if len <= max_ip_len && !originated {
                ip.decrement_ttl();
            }
            (len, df)
        }
        None => (0, false),
    }
}

#[inline]
fn decrement_ttl<B: PacketBuf>(buf: &mut B) {
    if let Some(h) = buf
        .data_mut()
        .get_mut(L3_OFFSET..)
        .and_then(|s| s.first_chunk_mut::<{ ipv4::HEADER_LEN }>())
    {
        ipv4::Packet::new_unchecked(h).decrement_ttl();
    }
}

/// Writes the Ethernet header of a routed packet.
#[inline]
fn rewrite_l2<B: PacketBuf>(buf: &mut B, r: &L2Rewrite) -> bool {
    let Some(h) = buf.data_mut().first_chunk_mut::<{ L3_OFFSET }>() else {
        return false;
    };
    h[..6].copy_from_slice(&r.dst_mac.0);
    h[6..12].copy_from_slice(&r.src_mac.0);
    h[12..14].copy_from_slice(&crate::wire::ethernet::ethertype::IPV4.to_be_bytes());
    true
}

/// The VXLAN source port for a flow hash: 49152..=65535 (RFC 7348 section 5).
#[inline]
pub fn vxlan_source_port(hash: u32) -> u16 {
    0xc000 | ((hash ^ (hash >> 16)) as u16 & 0x3fff)
}

/// Prepends outer Ethernet, IPv4, UDP and VXLAN headers and rewrites the
/// inner Ethernet header, all from the template.
#[inline]
pub(crate) fn encap_vxlan<B: PacketBuf>(
    buf: &mut B,
    e: &Encap<VXLAN_TEMPLATE_LEN>,
    hash: u32,
) -> bool {
    if !buf.prepend(vxlan::OVERHEAD) {
        return false;
    }
    let d = buf.data_mut();
    let ip_len = (d.len() - L3_OFFSET) as u16;
    // A fixed-size array: the field writes below need no bounds checks.
    let Some(h) = d.first_chunk_mut::<VXLAN_TEMPLATE_LEN>() else {
        return false;
    };
    *h = e.header;
    h[16..18].copy_from_slice(&ip_len.to_be_bytes());
    let sum = !checksum::fold(e.ip_sum + u32::from(ip_len));
    h[24..26].copy_from_slice(&sum.to_be_bytes());
    h[34..36].copy_from_slice(&vxlan_source_port(hash).to_be_bytes());
    h[38..40].copy_from_slice(&(ip_len - ipv4::HEADER_LEN as u16).to_be_bytes());
    true
}

/// Prepends outer Ethernet and IPv4 headers (protocol 4) from the template.
#[inline]
pub(crate) fn encap_ipip<B: PacketBuf>(buf: &mut B, e: &Encap<IPIP_TEMPLATE_LEN>) -> bool {
    if !buf.prepend(ipv4::HEADER_LEN) {
        return false;
    }
    let d = buf.data_mut();
    let ip_len = (d.len() - L3_OFFSET) as u16;
    let Some(h) = d.first_chunk_mut::<IPIP_TEMPLATE_LEN>() else {
        return false;
    };
    *h = e.header;
    h[16..18].copy_from_slice(&ip_len.to_be_bytes());
    let sum = !checksum::fold(e.ip_sum + u32::from(ip_len));
    h[24..26].copy_from_slice(&sum.to_be_bytes());
    true
}

// Keep the UDP header length in sync with the template offsets above.
const _: () = assert!(udp::HEADER_LEN == 8 && VXLAN_TEMPLATE_LEN == 64 && IPIP_TEMPLATE_LEN == 34);

impl<B: PacketBuf, P: BufPool<Buf = B>> Ctx<'_, B, P> {
    #[inline]
    fn enqueue(&mut self, port: PortId, buf: B) {
        if let Err(b) = self.tx.push(port, buf) {
            self.drop(DropReason::TxListFull, b);
        }
    }

    #[inline]
    fn drop(&mut self, reason: DropReason, buf: B) {
        if self.originating {
            // The packet taken in is already counted under its own reason.
            self.counters.events.icmp_undeliverable.inc();
        } else {
            self.counters.count_drop(self.in_port, reason, 1);
        }
        self.pool.free(buf);
    }

    /// Sends `buf` along `adj`. `originated`: the switch made this packet
    /// (an ICMP error), so no TTL decrement and no ICMP about it.
    #[inline(always)]
    fn forward(&mut self, buf: B, adj: &Adjacency, hash: u32, from_uplink: bool, originated: bool) {
        let ev = &self.counters.events;
        match adj {
            Adjacency::Deliver(r) => {
                self.output(buf, r.port, r.max_ip_len, originated, &ev.delivered, |b| {
                    rewrite_l2(b, r)
                })
            }
            Adjacency::ToHost(r) => {
                self.output(buf, r.port, r.max_ip_len, originated, &ev.to_host, |b| {
                    rewrite_l2(b, r)
                })
            }
            Adjacency::HostGw(r) => {
                if from_uplink {
                    return self.drop(DropReason::Hairpin, buf);
                }
                self.output(buf, r.port, r.max_ip_len, originated, &ev.host_gw, |b| {
                    rewrite_l2(b, r)
                })
            }
            Adjacency::Vxlan(e) => {
                if from_uplink {
                    return self.drop(DropReason::Hairpin, buf);
                }
                self.output(
                    buf,
                    e.port,
                    e.max_ip_len,
                    originated,
                    &ev.vxlan_encap,
                    |b| encap_vxlan(b, e, hash),
                )
            }
            Adjacency::Ipip(e) => {
                if from_uplink {
                    return self.drop(DropReason::Hairpin, buf);
                }
                self.output(buf, e.port, e.max_ip_len, originated, &ev.ipip_encap, |b| {
                    encap_ipip(b, e)
                })
            }
            Adjacency::Drop(r) => self.drop(*r, buf),
        }
    }

    /// The fast path: the packet fits, so at most a TTL decrement and the
    /// rewrite. The header is looked at once, for the length, DF and TTL.
    #[inline(always)]
    fn output(
        &mut self,
        mut buf: B,
        port: PortId,
        max_ip_len: u16,
        originated: bool,
        ev: &Counter,
        rewrite: impl Fn(&mut B) -> bool,
    ) {
        let (ip_len, df) = len_df_and_decrement_ttl(&mut buf, max_ip_len, originated);
        if ip_len <= max_ip_len {
            if !rewrite(&mut buf) {
                return self.drop(DropReason::NoBuffer, buf);
            }
            ev.inc();
            return self.enqueue(port, buf);
        }
        self.output_too_big(buf, port, max_ip_len, originated, df, ev, rewrite)
    }

    /// Too big for the egress: drop, ICMP fragmentation needed, or fragment.
    #[cold]
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn output_too_big(
        &mut self,
        mut buf: B,
        port: PortId,
        max_ip_len: u16,
        originated: bool,
        df: bool,
        ev: &Counter,
        rewrite: impl Fn(&mut B) -> bool,
    ) {
        if originated {
            return self.drop(DropReason::FragNeeded, buf);
        }
        if df {
            return self.icmp_error(
                buf,
                DropReason::FragNeeded,
                icmp::msg_type::DEST_UNREACHABLE,
                icmp::code::FRAG_NEEDED,
                max_ip_len,
            );
        }
        decrement_ttl(&mut buf);
        let mut frags = std::mem::take(self.frags);
        match fragment(&mut buf, max_ip_len as usize, self.pool, &mut frags) {
            Err(r) => self.drop(r, buf),
            Ok(()) => {
                let ev_all = &self.counters.events;
                ev_all.fragmented.inc();
                ev_all.fragments_created.add(1 + frags.len() as u64);
                for mut b in std::iter::once(buf).chain(frags.drain(..)) {
                    if rewrite(&mut b) {
                        ev.inc();
                        self.enqueue(port, b);
                    } else {
                        self.drop(DropReason::NoBuffer, b);
                    }
                }
            }
        }
        *self.frags = frags;
    }

    /// Drops the packet for `reason` and, unless suppressed or rate limited,
    /// answers its sender with an ICMP error built in the same buffer.
    #[cold]
    #[inline(never)]
    fn icmp_error(&mut self, buf: B, reason: DropReason, msg_type: u8, code: u8, mtu: u16) {
        self.counters.count_drop(self.in_port, reason, 1);
        let ev = &self.counters.events;
        if !may_answer(buf.data()) {
            ev.icmp_suppressed.inc();
            return self.pool.free(buf);
        }
        let to = ipv4::Packet::new_unchecked(&buf.data()[L3_OFFSET..]).src_u32();
        if !self.icmp.allow(self.now_ns, to) {
            ev.icmp_rate_limited.inc();
            return self.pool.free(buf);
        }
        // A single writer: the counter moves only if this error is lost.
        let lost = ev.icmp_undeliverable.get();
        self.originating = true;
        self.send_error(buf, msg_type, code, mtu);
        self.originating = false;
        if ev.icmp_undeliverable.get() == lost {
            if msg_type == icmp::msg_type::TIME_EXCEEDED {
                ev.icmp_time_exceeded.inc();
            } else {
                ev.icmp_frag_needed.inc();
            }
        }
    }

    /// Builds the ICMP error in `buf` and routes it back to the source.
    #[inline(never)]
    fn send_error(&mut self, mut buf: B, msg_type: u8, code: u8, mtu: u16) {
        let t = self.tables;
        if !build_error(&mut buf, t.node.icmp_source, msg_type, code, mtu) {
            return self.drop(DropReason::NoBuffer, buf);
        }
        let dst = ipv4::Packet::new_unchecked(&buf.data()[L3_OFFSET..]).dst_u32();
        let key = FlowKey::new(t.node.icmp_source, dst, 0, 0, ipv4::protocol::ICMP, 0);
        match t
            .lpm
            .lookup(dst)
            .and_then(|a| t.adjacencies.get(a as usize))
        {
            Some(adj) => self.forward(buf, adj, key.hash(), false, true),
            None => self.drop(DropReason::NoRoute, buf),
        }
    }
}
