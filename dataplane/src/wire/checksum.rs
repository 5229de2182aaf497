//! The Internet checksum (RFC 1071), with incremental update (RFC 1624).
//!
//! [`sum`] returns an unfolded ones'-complement partial sum; partial sums of
//! pieces that start at even offsets (and [`pseudo_header_sum`]) may be added
//! together as `u32` and folded once with [`fold`].

use std::net::Ipv4Addr;

/// Ones'-complement partial sum of `data` taken as big-endian 16-bit words.
///
/// The result is not fully folded (it is at most 0x1fffe, so tens of
/// thousands of partial sums can be added in a `u32`) nor complemented; an
/// odd trailing byte is padded with a zero low byte. The value is congruent
/// (mod 0xffff) to the 16-bit word sum, and is zero only if every byte is
/// zero, so `fold(sum(data))` is exactly the folded RFC 1071 sum.
#[inline]
pub fn sum(data: &[u8]) -> u32 {
    // 32-bit words into a 64-bit accumulator: 2^16 = 1 (mod 0xffff), so the
    // high and low halves of each word count exactly like two 16-bit words.
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        acc += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
        acc += u64::from(u32::from_be_bytes([c[4], c[5], c[6], c[7]]));
    }
    let mut rest = chunks.remainder();
    if rest.len() >= 4 {
        acc += u64::from(u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]));
        rest = &rest[4..];
    }
    if rest.len() >= 2 {
        acc += u64::from(u16::from_be_bytes([rest[0], rest[1]]));
        rest = &rest[2..];
    }
    if let Some(&b) = rest.first() {
        acc += u64::from(b) << 8;
    }
    // End-around carry from 64 down to 32 bits (2^32 = 1 mod 0xffff too),
    // then once more to at most 0x1fffe so that partial sums add safely.
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    let s = acc as u32;
    (s & 0xffff) + (s >> 16)
}

/// Folds the carries of a partial sum into 16 bits (end-around carry).
#[inline]
pub fn fold(sum: u32) -> u16 {
    let s = (sum & 0xffff) + (sum >> 16);
    let s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// The Internet checksum of `data`: `!fold(sum(data))`.
///
/// Over a header whose checksum field holds a correct checksum the result is
/// 0, which is how received headers are verified.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data))
}

/// Whether an option-less (20-byte) IPv4 header has a correct checksum:
/// exactly `checksum(header) == 0`, in about a third of the instructions.
///
/// `fold(sum(h))` is congruent to the 16-bit word sum modulo 0xffff, lies in
/// `1..=0xffff` unless every byte is zero, and a correct checksum makes it
/// 0xffff; so the header is correct iff its word sum is a non-zero multiple
/// of 0xffff. Adding little-endian 32-bit loads instead of big-endian 16-bit
/// words gives that sum times 2^-8 (mod 0xffff, as 2^16 = 1), and 2^8 is
/// invertible modulo 0xffff, so "non-zero multiple of 0xffff" reads the
/// same either way and no byte swap is needed.
#[inline]
pub fn ipv4_header_ok(h: &[u8; 20]) -> bool {
    let w = |i: usize| u64::from(u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]));
    let s = w(0) + w(4) + w(8) + w(12) + w(16);
    s != 0 && s % 0xffff == 0
}

/// Incremental update of checksum `check` when one 16-bit word changes from
/// `old` to `new` (RFC 1624 eqn. 3: `HC' = ~(~HC + ~m + m')`).
///
/// The result equals a full recomputation unless the updated data is all
/// zeros (then a full recomputation gives 0xffff and this gives 0); that
/// cannot happen for IPv4 headers, whose first byte is never zero.
#[inline]
pub fn update_u16(check: u16, old: u16, new: u16) -> u16 {
    let s = u32::from(!check) + u32::from(!old) + u32::from(new);
    !fold(s)
}

/// Incremental update of checksum `check` when an aligned 32-bit field (e.g.
/// an IPv4 address) changes from `old` to `new`: both 16-bit halves at once.
#[inline]
pub fn update_u32(check: u16, old: u32, new: u32) -> u16 {
    let s = u32::from(!check)
        + u32::from(!((old >> 16) as u16))
        + u32::from(!(old as u16))
        + (new >> 16)
        + (new & 0xffff);
    !fold(s)
}

/// Partial sum of the IPv4 pseudo-header used by TCP and UDP checksums:
/// source, destination, zero byte + protocol, and the L4 length.
#[inline]
pub fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, len: u16) -> u32 {
    let s = u32::from(src);
    let d = u32::from(dst);
    (s >> 16) + (s & 0xffff) + (d >> 16) + (d & 0xffff) + u32::from(protocol) + u32::from(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 1071 reference: 16-bit words one at a time, end-around carry.
    fn reference(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        for w in data.chunks(2) {
            let word = if w.len() == 2 {
                u16::from_be_bytes([w[0], w[1]])
            } else {
                u16::from(w[0]) << 8
            };
            s += u32::from(word);
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }

    fn get16(b: &[u8], i: usize) -> u16 {
        u16::from_be_bytes([b[i], b[i + 1]])
    }

    fn put16(b: &mut [u8], i: usize, v: u16) {
        b[i..i + 2].copy_from_slice(&v.to_be_bytes());
    }

    #[test]
    fn ipv4_header_ok_is_checksum_zero() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut valid = 0;
        for i in 0..200_000u32 {
            let mut h = [0u8; 20];
            for b in h.iter_mut() {
                *b = next() as u8;
            }
            match i % 4 {
                // A correct checksum, then (sometimes) one bit flipped.
                0 | 1 => {
                    h[10] = 0;
                    h[11] = 0;
                    let c = checksum(&h);
                    h[10..12].copy_from_slice(&c.to_be_bytes());
                    if i % 4 == 1 {
                        h[next() as usize % 20] ^= 1 << (next() % 8);
                    }
                }
                // Mostly zero or 0xff bytes, to hit the fold's edges.
                2 => {
                    for b in h.iter_mut() {
                        *b = if next() % 3 == 0 {
                            *b
                        } else if next() % 2 == 0 {
                            0
                        } else {
                            0xff
                        };
                    }
                }
                _ => {}
            }
            valid += usize::from(checksum(&h) == 0);
            assert_eq!(ipv4_header_ok(&h), checksum(&h) == 0, "{h:02x?}");
        }
        assert!(valid > 50_000, "{valid} correct headers among the cases");
        assert!(!ipv4_header_ok(&[0; 20]), "all zero sums to 0, not 0xffff");
        assert_eq!(ipv4_header_ok(&[0xff; 20]), checksum(&[0xff; 20]) == 0);
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3 example bytes: sum 0xddf2 (folded).
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn known_ipv4_header() {
        // A textbook header; its checksum field holds 0xb861.
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&hdr), 0);
        let mut z = hdr;
        z[10] = 0;
        z[11] = 0;
        assert_eq!(checksum(&z), 0xb861);
    }

    #[test]
    fn empty_and_odd() {
        assert_eq!(sum(&[]), 0);
        assert_eq!(checksum(&[]), 0xffff);
        assert_eq!(sum(&[0xab]), 0xab00);
        assert_eq!(fold(sum(&[0x12, 0x34, 0x56])), 0x1234 + 0x5600);
    }

    #[test]
    fn partial_sums_stay_small_enough_to_add() {
        let ones = vec![0xffu8; 65536 + 6];
        let s = sum(&ones);
        assert!(s <= 0x1_fffe, "{s:#x}");
        assert_eq!(fold(s), 0xffff);
        // Many partial sums plus a pseudo-header add without overflow.
        let many: u32 = (0..30_000).map(|_| sum(&ones[..64])).sum();
        let total =
            many + pseudo_header_sum(Ipv4Addr::BROADCAST, Ipv4Addr::BROADCAST, 0xff, 0xffff);
        // Every 16-bit word is 0xffff (= 0) except the protocol, 0x00ff.
        assert_eq!(fold(total), 0x00ff);
    }

    #[test]
    fn fold_handles_double_carry() {
        assert_eq!(fold(0), 0);
        assert_eq!(fold(0xffff), 0xffff);
        assert_eq!(fold(0x1_fffe), 0xffff);
        assert_eq!(fold(0xffff_ffff), 0xffff);
        assert_eq!(fold(0x0001_0000), 1);
    }

    #[test]
    fn pseudo_header() {
        let s = pseudo_header_sum(
            Ipv4Addr::new(10, 244, 1, 5),
            Ipv4Addr::new(10, 96, 0, 10),
            17,
            30,
        );
        assert_eq!(s, 0x0af4 + 0x0105 + 0x0a60 + 0x000a + 17 + 30);
    }

    #[test]
    fn update_u16_all_zero_edge_case() {
        // Documented edge: updated data all zero gives 0 rather than 0xffff.
        let data = [0x00, 0x01];
        let check = checksum(&data);
        assert_eq!(update_u16(check, 1, 0), 0);
        assert_eq!(checksum(&[0, 0]), 0xffff);
    }

    #[test]
    fn update_u32_address_rewrite() {
        let mut hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        let new = u32::from(Ipv4Addr::new(10, 244, 3, 17));
        let old = u32::from_be_bytes([hdr[12], hdr[13], hdr[14], hdr[15]]);
        let c = update_u32(get16(&hdr, 10), old, new);
        hdr[12..16].copy_from_slice(&new.to_be_bytes());
        put16(&mut hdr, 10, c);
        assert_eq!(checksum(&hdr), 0);
    }

    fn even_buffer(min_words: usize) -> impl Strategy<Value = Vec<u8>> {
        (min_words..64usize).prop_flat_map(|w| proptest::collection::vec(any::<u8>(), w * 2))
    }

    proptest! {
        #[test]
        fn sum_matches_reference(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert_eq!(checksum(&data), reference(&data));
        }

        #[test]
        fn sums_of_even_pieces_add(data in proptest::collection::vec(any::<u8>(), 0..300), cut in 0usize..150) {
            let cut = (cut * 2).min(data.len() & !1);
            let (a, b) = data.split_at(cut);
            prop_assert_eq!(!fold(sum(a) + sum(b)), checksum(&data));
        }

        #[test]
        fn incremental_word_update_matches_recompute(
            data in even_buffer(1),
            word in any::<prop::sample::Index>(),
            new in any::<u16>(),
        ) {
            let i = word.index(data.len() / 2) * 2;
            let before = checksum(&data);
            let old = get16(&data, i);
            let mut after = data.clone();
            put16(&mut after, i, new);
            prop_assume!(after.iter().any(|&b| b != 0));
            prop_assert_eq!(update_u16(before, old, new), checksum(&after));
        }

        #[test]
        fn incremental_u32_update_matches_recompute(
            data in even_buffer(2),
            word in any::<prop::sample::Index>(),
            new in any::<u32>(),
        ) {
            let i = word.index(data.len() / 2 - 1) * 2;
            let before = checksum(&data);
            let old = u32::from_be_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
            let mut after = data.clone();
            after[i..i + 4].copy_from_slice(&new.to_be_bytes());
            prop_assume!(after.iter().any(|&b| b != 0));
            prop_assert_eq!(update_u32(before, old, new), checksum(&after));
        }

        #[test]
        fn ttl_protocol_word_update_in_header(mut hdr in proptest::collection::vec(any::<u8>(), 20), ttl in 1u8..=255) {
            // A header-like buffer with its checksum stored at bytes 10..12.
            hdr[0] = 0x45;
            hdr[8] = ttl;
            put16(&mut hdr, 10, 0);
            let c = checksum(&hdr);
            put16(&mut hdr, 10, c);
            let old = get16(&hdr, 8);
            hdr[8] -= 1;
            let new = get16(&hdr, 8);
            let inc = update_u16(c, old, new);
            put16(&mut hdr, 10, 0);
            let full = checksum(&hdr);
            prop_assert_eq!(inc, full);
            put16(&mut hdr, 10, inc);
            prop_assert_eq!(checksum(&hdr), 0);
        }

        #[test]
        fn verifying_correct_checksum_gives_zero(
            mut data in even_buffer(1),
            pos in any::<prop::sample::Index>(),
        ) {
            let i = pos.index(data.len() / 2) * 2;
            put16(&mut data, i, 0);
            let c = checksum(&data);
            put16(&mut data, i, c);
            prop_assert_eq!(checksum(&data), 0);
        }
    }
}
