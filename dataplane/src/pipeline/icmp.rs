//! ICMP errors the switch originates: time exceeded and fragmentation
//! needed (RFC 792, RFC 1191), built in place in the offending packet's
//! buffer, sourced from the pod subnet's `.0` address, and rate limited per
//! source address and per worker with token buckets ([`IcmpLimiter`]).

use super::classify::is_martian;
use super::L3_OFFSET;
use crate::buffer::PacketBuf;
use crate::tables::ORIGIN_TTL;
use crate::wire::{icmp, ipv4};
use std::net::Ipv4Addr;

const NANOS: u64 = 1_000_000_000;

/// A token bucket: `rate` per second, up to `burst` at once. Tokens are
/// kept in nanotokens so refills are exact integers.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u64,
    last_ns: u64,
}

impl Bucket {
    fn full(capacity: u64, now_ns: u64) -> Self {
        Bucket {
            tokens: capacity,
            last_ns: now_ns,
        }
    }

    #[inline]
    fn refill(&mut self, now_ns: u64, rate: u64, capacity: u64) {
        let elapsed = now_ns.saturating_sub(self.last_ns);
        self.last_ns = self.last_ns.max(now_ns);
        self.tokens = self
            .tokens
            .saturating_add(elapsed.saturating_mul(rate))
            .min(capacity);
    }
}

/// Sources tracked at once per worker (a power of two).
pub const ICMP_SOURCE_SLOTS: usize = 1024;

/// One tracked source.
#[derive(Debug, Clone, Copy)]
struct SourceSlot {
    src: u32,
    bucket: Bucket,
}

/// Rate limits for the ICMP errors one worker originates: a bucket per
/// source address (the host the error goes to) and one for the worker.
///
/// A source must have a token of its own before it may take one of the
/// worker's, so one host that keeps provoking errors (a pod sending TTL 1 in
/// a loop) spends only its own share and other hosts still get theirs
/// (fragmentation needed, which path MTU discovery depends on). Sources live
/// in a fixed table of [`ICMP_SOURCE_SLOTS`] slots indexed by a hash of the
/// address; a newcomer in a taken slot starts with a full bucket, which the
/// worker's bucket still caps. Nothing allocates after construction.
#[derive(Debug, Clone)]
pub struct IcmpLimiter {
    rate: u64,
    capacity: u64,
    worker: Bucket,
    per_source_rate: u64,
    per_source_capacity: u64,
    sources: Box<[Option<SourceSlot>]>,
}

impl IcmpLimiter {
    /// Full buckets: `rate_per_sec` errors per second up to `burst` at once
    /// for the worker, `source_rate_per_sec` and `source_burst` per source.
    pub fn new(rate_per_sec: u32, burst: u32, source_rate_per_sec: u32, source_burst: u32) -> Self {
        let capacity = u64::from(burst).saturating_mul(NANOS);
        IcmpLimiter {
            rate: u64::from(rate_per_sec),
            capacity,
            worker: Bucket::full(capacity, 0),
            per_source_rate: u64::from(source_rate_per_sec),
            per_source_capacity: u64::from(source_burst).saturating_mul(NANOS),
            sources: vec![None; ICMP_SOURCE_SLOTS].into_boxed_slice(),
        }
    }

    /// Takes a token for an error to `src` (host order) at `now_ns`, if both
    /// `src`'s bucket and the worker's have one.
    #[inline]
    pub fn allow(&mut self, now_ns: u64, src: u32) -> bool {
        let (rate, cap) = (self.per_source_rate, self.per_source_capacity);
        let i = (src.wrapping_mul(0x9e37_79b9) >> 22) as usize & (ICMP_SOURCE_SLOTS - 1);
        let Some(entry) = self.sources.get_mut(i) else {
            return false;
        };
        let slot = match entry {
            Some(s) if s.src == src => s,
            _ => entry.insert(SourceSlot {
                src,
                bucket: Bucket::full(cap, now_ns),
            }),
        };
        slot.bucket.refill(now_ns, rate, cap);
        if slot.bucket.tokens < NANOS {
            return false;
        }
        self.worker.refill(now_ns, self.rate, self.capacity);
        if self.worker.tokens < NANOS {
            return false;
        }
        slot.bucket.tokens -= NANOS;
        self.worker.tokens -= NANOS;
        true
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

    const SRC: u32 = 0x0a05_0102;

    #[test]
    fn bucket_refills_at_rate_and_caps_at_burst() {
        // Per-source limits above the worker's: the worker's bucket decides.
        let mut l = IcmpLimiter::new(10, 3, 1000, 100);
        assert!((0..3).all(|_| l.allow(0, SRC)));
        assert!(!l.allow(0, SRC));
        assert!(
            !l.allow(50_000_000, SRC),
            "half a token after 50 ms at 10/s"
        );
        assert!(l.allow(100_000_000, SRC));
        assert_eq!(
            (0..10).filter(|_| l.allow(100 * NANOS, SRC)).count(),
            3,
            "never more than the burst"
        );
    }

    #[test]
    fn one_source_spends_only_its_own_share() {
        let mut l = IcmpLimiter::new(1000, 50, 100, 10);
        let flooder = SRC;
        let others: Vec<u32> = (0..20).map(|i| 0x0a05_0200 + i).collect();
        // A pod provoking errors as fast as it can: only its burst passes.
        assert_eq!((0..1000).filter(|_| l.allow(0, flooder)).count(), 10);
        // Everyone else still gets theirs, at the same instant.
        for &o in &others {
            assert!(l.allow(0, o), "{o:#x} starved by the flooder");
        }
        // Over a second the flooder gets its rate, no more.
        let got = (1..=1000)
            .filter(|ms| l.allow(ms * 1_000_000, flooder))
            .count();
        assert!((99..=101).contains(&got), "{got} in one second at 100/s");
    }

    #[test]
    fn the_worker_bucket_still_caps_many_sources() {
        let mut l = IcmpLimiter::new(1000, 50, 100, 10);
        let passed = (0..500u32)
            .filter(|i| l.allow(0, 0x0a00_0000 + i * 7))
            .count();
        assert_eq!(passed, 50, "the worker's burst, whatever the sources");
    }
}
