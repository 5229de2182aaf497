//! ICMP errors the switch originates: time exceeded and fragmentation
//! needed (RFC 792, RFC 1191), built in place in the offending packet's
//! buffer, sourced from the pod subnet's `.0` address, and rate limited per
//! worker with a token bucket.

use super::classify::is_martian;
use super::L3_OFFSET;
use crate::buffer::PacketBuf;
use crate::tables::ORIGIN_TTL;
use crate::wire::{icmp, ipv4};
use std::net::Ipv4Addr;

const NANOS: u64 = 1_000_000_000;

/// A token bucket: `rate` errors per second, up to `burst` at once.
#[derive(Debug, Clone)]
pub struct IcmpLimiter {
    rate: u64,
    capacity: u64,
    tokens: u64,
    last_ns: u64,
}

impl IcmpLimiter {
    /// A full bucket.
    pub fn new(rate_per_sec: u32, burst: u32) -> Self {
        let capacity = u64::from(burst).saturating_mul(NANOS);
        IcmpLimiter {
            rate: u64::from(rate_per_sec),
            capacity,
            tokens: capacity,
            last_ns: 0,
        }
    }

    /// Takes a token if one is there at `now_ns`.
    #[inline]
    pub fn allow(&mut self, now_ns: u64) -> bool {
        let elapsed = now_ns.saturating_sub(self.last_ns);
        self.last_ns = self.last_ns.max(now_ns);
        self.tokens = self
            .tokens
            .saturating_add(elapsed.saturating_mul(self.rate))
            .min(self.capacity);
        if self.tokens >= NANOS {
            self.tokens -= NANOS;
            true
        } else {
            false
        }
    }
}

/// May an ICMP error answer this packet? Not an ICMP error, not a non-first
/// fragment, not from a martian source (RFC 1812 section 4.3.2.7).
pub(crate) fn may_answer(d: &[u8]) -> bool {
    let ip = ipv4::Packet::new_unchecked(&d[L3_OFFSET..]);
    if ip.frag_offset() != 0 || is_martian(ip.src_u32()) {
        return false;
    }
    if ip.protocol() == ipv4::protocol::ICMP {
        let ty = ip.payload().first().copied().unwrap_or(0);
        // Destination unreachable, source quench, redirect, time exceeded, parameter problem.
        return !matches!(ty, 3 | 4 | 5 | 11 | 12);
    }
    true
}

/// Rewrites the buffer into an ICMP error about the packet it holds:
/// `[Ethernet scratch][IPv4 gateway -> original source][ICMP][original header + 8 bytes]`.
/// Returns false, with the buffer unusable, if it has no room.
pub(crate) fn build_error<B: PacketBuf>(
    buf: &mut B,
    from: u32,
    msg_type: u8,
    code: u8,
    next_hop_mtu: u16,
) -> bool {
    let (quote, orig_src) = {
        let ip = ipv4::Packet::new_unchecked(&buf.data()[L3_OFFSET..]);
        let hl = ip.header_len();
        (hl + (ip.total_len() as usize - hl).min(8), ip.src_addr())
    };
    let icmp_at = L3_OFFSET + ipv4::HEADER_LEN;
    let new_len = icmp_at + icmp::HEADER_LEN + quote;
    if buf.len() < new_len && !buf.append(new_len - buf.len()) {
        return false;
    }
    buf.truncate(new_len);
    let d = buf.data_mut();
    d.copy_within(L3_OFFSET..L3_OFFSET + quote, icmp_at + icmp::HEADER_LEN);
    let repr = ipv4::Repr {
        src: Ipv4Addr::from(from),
        dst: orig_src,
        protocol: ipv4::protocol::ICMP,
        ttl: ORIGIN_TTL,
        payload_len: icmp::HEADER_LEN + quote,
        ident: 0,
        dont_frag: false,
        dscp_ecn: 0,
    };
    repr.emit(&mut ipv4::Packet::new_unchecked(&mut d[L3_OFFSET..icmp_at]));
    let mut p = icmp::Packet::new_unchecked(&mut d[icmp_at..]);
    p.set_msg_type(msg_type);
    p.set_code(code);
    p.set_next_hop_mtu(next_hop_mtu);
    p.fill_checksum();
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_rate_and_caps_at_burst() {
        let mut l = IcmpLimiter::new(10, 3);
        assert!((0..3).all(|_| l.allow(0)));
        assert!(!l.allow(0));
        assert!(!l.allow(50_000_000), "half a token after 50 ms at 10/s");
        assert!(l.allow(100_000_000));
        assert_eq!(
            (0..10).filter(|_| l.allow(100 * NANOS)).count(),
            3,
            "never more than the burst"
        );
    }
}
