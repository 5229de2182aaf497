//! An MRT writer (RFC 6396) for feeding a BGP peer a large table quickly:
//! GoBGP loads a TABLE_DUMP_V2 file with `gobgp mrt inject global FILE`
//! (see [`crate::peers::Gobgp::inject_mrt`]), far faster than one
//! `gobgp global rib add` per prefix.
//!
//! A file written here holds, in this order:
//!
//! - one PEER_INDEX_TABLE record (RFC 6396 §4.3.1) naming a single IPv4
//!   peer whose AS is written in four octets (peer type bit 1, "AS size");
//! - one RIB_IPV4_UNICAST record (§4.3.2) per prefix, sequence numbers
//!   counting up from 0, each with exactly one RIB entry (§4.3.4) for peer
//!   index 0 carrying ORIGIN IGP, AS_PATH (one AS_SEQUENCE holding the
//!   peer's AS, four octets per AS as §4.3.4 requires) and NEXT_HOP.
//!
//! Invariants: every record's length field equals the bytes that follow its
//! 12-byte common header (§2); prefixes are written in ceil(len / 8) octets
//! with the host bits cleared, so the same prefix cannot appear twice under
//! two spellings; nothing is written unless every prefix is valid.

use crate::lab::LabError;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;

type Result<T> = std::result::Result<T, LabError>;

/// MRT type TABLE_DUMP_V2 (RFC 6396 §4, type code 13).
const TABLE_DUMP_V2: u16 = 13;
/// TABLE_DUMP_V2 subtype PEER_INDEX_TABLE (§4.3).
const PEER_INDEX_TABLE: u16 = 1;
/// TABLE_DUMP_V2 subtype RIB_IPV4_UNICAST (§4.3).
const RIB_IPV4_UNICAST: u16 = 2;
/// Peer type bit 1: the peer's AS is four octets (§4.3.1).
const PEER_TYPE_AS4: u8 = 0x02;
/// Path attribute flags: well-known transitive (RFC 4271 §4.3).
const ATTR_TRANSITIVE: u8 = 0x40;

fn io_err(path: &Path, e: std::io::Error) -> LabError {
    LabError::Other(format!("{}: {e}", path.display()))
}

/// Writes an MRT TABLE_DUMP_V2 file at `path` announcing every prefix in
/// `prefixes` as learned from one peer (`peer_ip`, `peer_asn`; its BGP
/// identifier and the collector's are `peer_ip` too) with AS_PATH
/// `peer_asn` and NEXT_HOP `next_hop`. Timestamps are the current time.
/// Returns how many prefixes it wrote.
pub fn write_table_dump(
    path: &Path,
    peer_ip: Ipv4Addr,
    peer_asn: u32,
    next_hop: Ipv4Addr,
    prefixes: impl Iterator<Item = (Ipv4Addr, u8)>,
) -> Result<usize> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0);
    let tmp = path.with_extension("mrt.tmp");
    let file = std::fs::File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
    let mut out = std::io::BufWriter::new(file);
    let written = encode_table_dump(&mut out, now, peer_ip, peer_asn, next_hop, prefixes);
    let written = match written.and_then(|n| {
        out.flush()
            .map_err(|e| LabError::Other(format!("{}: {e}", tmp.display())))?;
        Ok(n)
    }) {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    drop(out);
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))?;
    Ok(written)
}

/// Encodes the file [`write_table_dump`] writes into `out`, with every
/// timestamp (record headers and the entries' originated time) `timestamp`.
/// Fails, having written nothing, on a prefix longer than 32 bits.
pub fn encode_table_dump(
    out: &mut impl Write,
    timestamp: u32,
    peer_ip: Ipv4Addr,
    peer_asn: u32,
    next_hop: Ipv4Addr,
    prefixes: impl Iterator<Item = (Ipv4Addr, u8)>,
) -> Result<usize> {
    let prefixes: Vec<(Ipv4Addr, u8)> = prefixes.collect();
    if let Some((p, l)) = prefixes.iter().find(|(_, l)| *l > 32) {
        return Err(LabError::Other(format!("prefix {p}/{l}: longer than 32")));
    }
    let w = |out: &mut dyn Write, b: &[u8]| {
        out.write_all(b)
            .map_err(|e| LabError::Other(format!("writing MRT: {e}")))
    };

    // PEER_INDEX_TABLE body (§4.3.1): collector BGP ID, view name length
    // and name (empty), peer count, then the peer entries: type, BGP ID,
    // IPv4 address, AS (four octets with PEER_TYPE_AS4).
    let mut body = Vec::with_capacity(32);
    body.extend_from_slice(&peer_ip.octets());
    body.extend_from_slice(&0u16.to_be_bytes());
    body.extend_from_slice(&1u16.to_be_bytes());
    body.push(PEER_TYPE_AS4);
    body.extend_from_slice(&peer_ip.octets());
    body.extend_from_slice(&peer_ip.octets());
    body.extend_from_slice(&peer_asn.to_be_bytes());
    w(out, &header(timestamp, PEER_INDEX_TABLE, body.len()))?;
    w(out, &body)?;

    // The path attributes every entry shares (RFC 4271 §4.3, AS numbers in
    // four octets as RFC 6396 §4.3.4 requires in TABLE_DUMP_V2).
    let mut attrs = Vec::with_capacity(20);
    // ORIGIN (type 1), length 1, IGP (0).
    attrs.extend_from_slice(&[ATTR_TRANSITIVE, 1, 1, 0]);
    // AS_PATH (type 2), length 6: one AS_SEQUENCE (2) segment of one AS.
    attrs.extend_from_slice(&[ATTR_TRANSITIVE, 2, 6, 2, 1]);
    attrs.extend_from_slice(&peer_asn.to_be_bytes());
    // NEXT_HOP (type 3), length 4.
    attrs.extend_from_slice(&[ATTR_TRANSITIVE, 3, 4]);
    attrs.extend_from_slice(&next_hop.octets());

    let mut rec = Vec::with_capacity(64);
    for (seq, (addr, len)) in prefixes.iter().enumerate() {
        rec.clear();
        // RIB_IPV4_UNICAST body (§4.3.2): sequence number, prefix length,
        // prefix in ceil(len/8) octets, entry count.
        rec.extend_from_slice(&(seq as u32).to_be_bytes());
        rec.push(*len);
        let masked = mask(*addr, *len);
        rec.extend_from_slice(&masked.octets()[..usize::from(len.div_ceil(8))]);
        rec.extend_from_slice(&1u16.to_be_bytes());
        // RIB entry (§4.3.4): peer index, originated time, attribute
        // length, attributes.
        rec.extend_from_slice(&0u16.to_be_bytes());
        rec.extend_from_slice(&timestamp.to_be_bytes());
        rec.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&attrs);
        w(out, &header(timestamp, RIB_IPV4_UNICAST, rec.len()))?;
        w(out, &rec)?;
    }
    Ok(prefixes.len())
}

/// The MRT common header (§2): timestamp, type, subtype, length of what
/// follows.
fn header(timestamp: u32, subtype: u16, len: usize) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[0..4].copy_from_slice(&timestamp.to_be_bytes());
    h[4..6].copy_from_slice(&TABLE_DUMP_V2.to_be_bytes());
    h[6..8].copy_from_slice(&subtype.to_be_bytes());
    h[8..12].copy_from_slice(&(len as u32).to_be_bytes());
    h
}

fn mask(addr: Ipv4Addr, len: u8) -> Ipv4Addr {
    let m = if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    };
    Ipv4Addr::from(u32::from(addr) & m)
}

/// `n` distinct, consecutive /`len` prefixes, the first the one holding
/// `base` (e.g. 100,000 /26s from 10.128.0.0 end at 10.225.167.192/26, inside
/// 10.128.0.0/9; 100,000 /24s would not fit there and end at 12.6.159.0/24).
/// Fails when `len` is 0 or above 32, or when they would run past
/// 255.255.255.255.
pub fn prefixes(n: usize, base: Ipv4Addr, len: u8) -> Result<impl Iterator<Item = (Ipv4Addr, u8)>> {
    if len == 0 || len > 32 {
        return Err(LabError::Other(format!(
            "prefix length {len}: expected 1 to 32"
        )));
    }
    let step = 1u64 << (32 - u32::from(len));
    let first = u64::from(u32::from(mask(base, len)));
    let last = first + (n as u64).saturating_sub(1) * step;
    if n > 0 && last > u64::from(u32::MAX) {
        return Err(LabError::Other(format!(
            "{n} /{len} prefixes from {base} run past 255.255.255.255"
        )));
    }
    Ok((0..n as u64).map(move |i| (Ipv4Addr::from((first + i * step) as u32), len)))
}

/// One RIB_IPV4_UNICAST record as [`read_ipv4_rib`] returns it: the prefix
/// and its first RIB entry's ORIGIN, AS_PATH and NEXT_HOP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RibRecord {
    /// The prefix address (host bits clear).
    pub addr: Ipv4Addr,
    /// The prefix length.
    pub len: u8,
    /// ORIGIN: 0 IGP, 1 EGP, 2 incomplete.
    pub origin: u8,
    /// The AS numbers of every AS_PATH segment, in order.
    pub as_path: Vec<u32>,
    /// NEXT_HOP, if the entry has one.
    pub next_hop: Option<Ipv4Addr>,
}

/// Reads the RIB_IPV4_UNICAST records of a TABLE_DUMP_V2 file (other
/// records are skipped), in file order. AS numbers are read in four octets,
/// as RFC 6396 §4.3.4 requires.
pub fn read_ipv4_rib(path: &Path) -> Result<Vec<RibRecord>> {
    let data = std::fs::read(path).map_err(|e| io_err(path, e))?;
    let bad =
        |what: &str, at: usize| LabError::Other(format!("{}: {what} at byte {at}", path.display()));
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let h = data
            .get(at..at + 12)
            .ok_or_else(|| bad("truncated header", at))?;
        let typ = u16::from_be_bytes([h[4], h[5]]);
        let sub = u16::from_be_bytes([h[6], h[7]]);
        let len = u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize;
        let body = data
            .get(at + 12..at + 12 + len)
            .ok_or_else(|| bad("truncated record", at))?;
        if typ == TABLE_DUMP_V2 && sub == RIB_IPV4_UNICAST {
            out.push(parse_rib(body).ok_or_else(|| bad("malformed RIB_IPV4_UNICAST", at))?);
        }
        at += 12 + len;
    }
    Ok(out)
}

fn parse_rib(b: &[u8]) -> Option<RibRecord> {
    let len = *b.get(4)?;
    if len > 32 {
        return None;
    }
    let n = usize::from(len.div_ceil(8));
    let mut octets = [0u8; 4];
    octets[..n].copy_from_slice(b.get(5..5 + n)?);
    let mut at = 5 + n + 2; // entry count
    at += 2 + 4; // first entry: peer index, originated time
    let alen = usize::from(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]));
    let attrs = b.get(at + 2..at + 2 + alen)?;
    let mut rec = RibRecord {
        addr: Ipv4Addr::from(octets),
        len,
        origin: 0,
        as_path: Vec::new(),
        next_hop: None,
    };
    let mut i = 0;
    while i < attrs.len() {
        let flags = *attrs.get(i)?;
        let typ = *attrs.get(i + 1)?;
        let (vlen, hdr) = if flags & 0x10 != 0 {
            (
                usize::from(u16::from_be_bytes([*attrs.get(i + 2)?, *attrs.get(i + 3)?])),
                4,
            )
        } else {
            (usize::from(*attrs.get(i + 2)?), 3)
        };
        let v = attrs.get(i + hdr..i + hdr + vlen)?;
        match typ {
            1 => rec.origin = *v.first()?,
            2 => {
                let mut j = 0;
                while j < v.len() {
                    let count = usize::from(*v.get(j + 1)?);
                    for k in 0..count {
                        let a = v.get(j + 2 + 4 * k..j + 6 + 4 * k)?;
                        rec.as_path
                            .push(u32::from_be_bytes([a[0], a[1], a[2], a[3]]));
                    }
                    j += 2 + 4 * count;
                }
            }
            3 => {
                rec.next_hop = Some(Ipv4Addr::new(
                    *v.first()?,
                    *v.get(1)?,
                    *v.get(2)?,
                    *v.get(3)?,
                ))
            }
            _ => {}
        }
        i += hdr + vlen;
    }
    Some(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_prefix_file_is_laid_out_as_rfc_6396_says() {
        let mut buf = Vec::new();
        let n = encode_table_dump(
            &mut buf,
            0x6000_0001,
            Ipv4Addr::new(192, 168, 1, 2),
            65001,
            Ipv4Addr::new(192, 168, 1, 3),
            [(Ipv4Addr::new(10, 1, 2, 99), 24)].into_iter(),
        )
        .unwrap();
        assert_eq!(n, 1);
        #[rustfmt::skip]
        let expected: Vec<u8> = vec![
            // §2 common header: timestamp, type 13 TABLE_DUMP_V2,
            // subtype 1 PEER_INDEX_TABLE, length 21.
            0x60, 0x00, 0x00, 0x01, 0x00, 0x0d, 0x00, 0x01, 0, 0, 0, 21,
            // §4.3.1: collector BGP ID, view name length 0, peer count 1.
            192, 168, 1, 2, 0, 0, 0, 1,
            // Peer entry: type 0x02 (IPv4, AS4), BGP ID, IP, AS 65001.
            0x02, 192, 168, 1, 2, 192, 168, 1, 2, 0x00, 0x00, 0xfd, 0xe9,
            // §2 header: subtype 2 RIB_IPV4_UNICAST, length 4+1+3+2+8+20.
            0x60, 0x00, 0x00, 0x01, 0x00, 0x0d, 0x00, 0x02, 0, 0, 0, 38,
            // §4.3.2: sequence 0, prefix length 24, 10.1.2 (host bits
            // dropped), entry count 1.
            0, 0, 0, 0, 24, 10, 1, 2, 0, 1,
            // §4.3.4 RIB entry: peer index 0, originated time, attribute
            // length 20.
            0, 0, 0x60, 0x00, 0x00, 0x01, 0, 20,
            // ORIGIN: flags 0x40, type 1, length 1, IGP.
            0x40, 1, 1, 0,
            // AS_PATH: type 2, length 6, AS_SEQUENCE of 1, AS 65001 in
            // four octets.
            0x40, 2, 6, 2, 1, 0x00, 0x00, 0xfd, 0xe9,
            // NEXT_HOP: type 3, length 4.
            0x40, 3, 4, 192, 168, 1, 3,
        ];
        assert_eq!(buf, expected);
    }

    #[test]
    fn prefix_octets_follow_the_length() {
        for (len, octets) in [(32u8, 4usize), (25, 4), (24, 3), (9, 2), (8, 1), (1, 1)] {
            let mut buf = Vec::new();
            encode_table_dump(
                &mut buf,
                0,
                Ipv4Addr::new(1, 1, 1, 1),
                1,
                Ipv4Addr::new(1, 1, 1, 1),
                [(Ipv4Addr::new(255, 255, 255, 255), len)].into_iter(),
            )
            .unwrap();
            let rib = &buf[12 + 21..];
            let body_len = u32::from_be_bytes([rib[8], rib[9], rib[10], rib[11]]) as usize;
            assert_eq!(body_len, 4 + 1 + octets + 2 + 8 + 20, "/{len}");
            assert_eq!(rib.len(), 12 + body_len, "/{len}");
            assert_eq!(rib[16], len);
        }
        let mut buf = Vec::new();
        let bad = encode_table_dump(
            &mut buf,
            0,
            Ipv4Addr::new(1, 1, 1, 1),
            1,
            Ipv4Addr::new(1, 1, 1, 1),
            [(Ipv4Addr::new(10, 0, 0, 0), 33)].into_iter(),
        );
        assert!(bad.is_err());
        assert!(buf.is_empty(), "nothing written for a bad prefix");
    }

    #[test]
    fn prefixes_are_distinct_consecutive_and_bounded() {
        let v: Vec<_> = prefixes(100_000, Ipv4Addr::new(10, 128, 0, 0), 24)
            .unwrap()
            .collect();
        assert_eq!(v.len(), 100_000);
        assert_eq!(v[0], (Ipv4Addr::new(10, 128, 0, 0), 24));
        assert_eq!(v[1], (Ipv4Addr::new(10, 128, 1, 0), 24));
        // 100,000 /24s do not fit in 10.128.0.0/9 (32,768 do).
        assert_eq!(v[99_999], (Ipv4Addr::new(12, 6, 159, 0), 24));
        // 100,000 /26s (Calico's block size) do.
        let blocks: Vec<_> = prefixes(100_000, Ipv4Addr::new(10, 128, 0, 0), 26)
            .unwrap()
            .collect();
        assert_eq!(blocks[99_999], (Ipv4Addr::new(10, 225, 167, 192), 26));
        let set: std::collections::HashSet<_> = v.iter().collect();
        assert_eq!(set.len(), v.len());
        let hosts: Vec<_> = prefixes(3, Ipv4Addr::new(10, 0, 0, 7), 32)
            .unwrap()
            .collect();
        assert_eq!(hosts[2], (Ipv4Addr::new(10, 0, 0, 9), 32));
        assert!(prefixes(2, Ipv4Addr::new(255, 255, 255, 0), 24).is_err());
        assert_eq!(
            prefixes(1, Ipv4Addr::new(255, 255, 255, 9), 24)
                .unwrap()
                .collect::<Vec<_>>(),
            vec![(Ipv4Addr::new(255, 255, 255, 0), 24)]
        );
        assert!(prefixes(1, Ipv4Addr::new(10, 0, 0, 0), 0).is_err());
        assert!(prefixes(1, Ipv4Addr::new(10, 0, 0, 0), 33).is_err());
    }

    #[test]
    fn reads_back_what_it_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("feed.mrt");
        let list: Vec<_> = prefixes(300, Ipv4Addr::new(10, 128, 0, 0), 26)
            .unwrap()
            .chain([(Ipv4Addr::new(10, 255, 0, 1), 32)])
            .collect();
        write_table_dump(
            &path,
            Ipv4Addr::new(192, 168, 1, 2),
            4_200_000_001,
            Ipv4Addr::new(192, 168, 1, 9),
            list.clone().into_iter(),
        )
        .unwrap();
        let back = read_ipv4_rib(&path).unwrap();
        assert_eq!(back.len(), 301);
        for (r, (addr, len)) in back.iter().zip(&list) {
            assert_eq!((r.addr, r.len), (*addr, *len));
            assert_eq!(r.origin, 0);
            assert_eq!(r.as_path, vec![4_200_000_001]);
            assert_eq!(r.next_hop, Some(Ipv4Addr::new(192, 168, 1, 9)));
        }
        let mut data = std::fs::read(&path).unwrap();
        data.truncate(data.len() - 3);
        std::fs::write(&path, data).unwrap();
        assert!(read_ipv4_rib(&path).is_err(), "a truncated file");
    }

    #[test]
    fn writes_a_whole_file_or_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("feed.mrt");
        let n = write_table_dump(
            &path,
            Ipv4Addr::new(192, 168, 1, 2),
            65001,
            Ipv4Addr::new(192, 168, 1, 2),
            prefixes(1000, Ipv4Addr::new(10, 128, 0, 0), 24).unwrap(),
        )
        .unwrap();
        assert_eq!(n, 1000);
        let len = std::fs::metadata(&path).unwrap().len();
        assert_eq!(len, (12 + 21) + 1000 * (12 + 38));
        let bad = dir.path().join("bad.mrt");
        assert!(write_table_dump(
            &bad,
            Ipv4Addr::new(192, 168, 1, 2),
            65001,
            Ipv4Addr::new(192, 168, 1, 2),
            [(Ipv4Addr::new(10, 0, 0, 0), 40)].into_iter(),
        )
        .is_err());
        assert!(!bad.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
