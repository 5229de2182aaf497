//! A pcapng writer for what `sluicectl capture` needs: one section, one
//! Ethernet interface with nanosecond timestamps, and Enhanced Packet
//! Blocks carrying the direction (`epb_flags`).
//!
//! Written here rather than with the `pcap-file` crate: its last release
//! (2.0.0, 2022) is old and its 3.0 line is a release candidate needing a
//! newer Rust than this workspace's; the three block types take fifty lines
//! and are checked below byte for byte. Little endian throughout; every
//! block and option is padded to 32 bits (RFC draft-ietf-opsawg-pcapng).

use std::io::{self, Write};

const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 0x0000_0001;
const EPB: u32 = 0x0000_0006;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
const LINKTYPE_ETHERNET: u16 = 1;
const OPT_END: u16 = 0;
const SHB_USERAPPL: u16 = 4;
const IF_NAME: u16 = 2;
const IF_TSRESOL: u16 = 9;
const EPB_FLAGS: u16 = 2;

/// Which way a packet went, for `epb_flags`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Received on the interface (flags bits 0-1 = 01).
    Inbound,
    /// Sent out of it (10).
    Outbound,
}

fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

fn option(out: &mut Vec<u8>, code: u16, value: &[u8]) {
    out.extend_from_slice(&code.to_le_bytes());
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value);
    out.resize(pad4(out.len()), 0);
}

/// Frames `body` (everything between the length fields) as a block.
fn block(kind: u32, body: &[u8]) -> Vec<u8> {
    let len = (12 + body.len()) as u32;
    let mut b = Vec::with_capacity(len as usize);
    b.extend_from_slice(&kind.to_le_bytes());
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(body);
    b.extend_from_slice(&len.to_le_bytes());
    b
}

/// The Section Header Block, naming the writing application.
pub fn section_header(app: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&BYTE_ORDER_MAGIC.to_le_bytes());
    body.extend_from_slice(&1u16.to_le_bytes());
    body.extend_from_slice(&0u16.to_le_bytes());
    // Section length not given.
    body.extend_from_slice(&u64::MAX.to_le_bytes());
    option(&mut body, SHB_USERAPPL, app.as_bytes());
    option(&mut body, OPT_END, &[]);
    block(SHB, &body)
}

/// An Ethernet Interface Description Block: `if_name`, `if_tsresol` = 9
/// (timestamps in nanoseconds).
pub fn interface(name: &str, snaplen: u32) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
    body.extend_from_slice(&0u16.to_le_bytes());
    body.extend_from_slice(&snaplen.to_le_bytes());
    option(&mut body, IF_NAME, name.as_bytes());
    option(&mut body, IF_TSRESOL, &[9]);
    option(&mut body, OPT_END, &[]);
    block(IDB, &body)
}

/// An Enhanced Packet Block on interface 0.
pub fn packet(ts_ns: u64, dir: Dir, orig_len: u32, data: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(32 + pad4(data.len()));
    body.extend_from_slice(&0u32.to_le_bytes());
    body.extend_from_slice(&((ts_ns >> 32) as u32).to_le_bytes());
    body.extend_from_slice(&(ts_ns as u32).to_le_bytes());
    body.extend_from_slice(&(data.len() as u32).to_le_bytes());
    body.extend_from_slice(&orig_len.max(data.len() as u32).to_le_bytes());
    body.extend_from_slice(data);
    body.resize(pad4(body.len()), 0);
    let flags: u32 = match dir {
        Dir::Inbound => 1,
        Dir::Outbound => 2,
    };
    option(&mut body, EPB_FLAGS, &flags.to_le_bytes());
    option(&mut body, OPT_END, &[]);
    block(EPB, &body)
}

/// Writes a section with one interface, then packets.
#[derive(Debug)]
pub struct Writer<W: Write> {
    out: W,
    /// Packets written.
    pub packets: u64,
}

impl<W: Write> Writer<W> {
    /// Writes the section and interface headers.
    pub fn new(mut out: W, app: &str, ifname: &str, snaplen: u32) -> io::Result<Self> {
        out.write_all(&section_header(app))?;
        out.write_all(&interface(ifname, snaplen))?;
        Ok(Writer { out, packets: 0 })
    }

    /// Writes one packet.
    pub fn packet(&mut self, ts_ns: u64, dir: Dir, orig_len: u32, data: &[u8]) -> io::Result<()> {
        self.out.write_all(&packet(ts_ns, dir, orig_len, data))?;
        self.packets += 1;
        Ok(())
    }

    /// Flushes what is written.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_header_bytes() {
        assert_eq!(
            section_header("ab"),
            vec![
                0x0a, 0x0d, 0x0d, 0x0a, 40, 0, 0, 0, // type, length
                0x4d, 0x3c, 0x2b, 0x1a, 1, 0, 0, 0, // byte-order magic, 1.0
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // section length
                4, 0, 2, 0, b'a', b'b', 0, 0, // shb_userappl "ab", padded
                0, 0, 0, 0, // opt_endofopt
                40, 0, 0, 0,
            ]
        );
    }

    #[test]
    fn interface_bytes() {
        assert_eq!(
            interface("pod-a", 10240),
            vec![
                1, 0, 0, 0, 44, 0, 0, 0, // type, length
                1, 0, 0, 0, // Ethernet, reserved
                0x00, 0x28, 0, 0, // snaplen 10240
                2, 0, 5, 0, b'p', b'o', b'd', b'-', b'a', 0, 0, 0, // if_name
                9, 0, 1, 0, 9, 0, 0, 0, // if_tsresol = 9 (ns)
                0, 0, 0, 0, // opt_endofopt
                44, 0, 0, 0,
            ]
        );
    }

    #[test]
    fn enhanced_packet_bytes_carry_time_lengths_and_direction() {
        let ts: u64 = 0x0000_0001_0000_0002;
        assert_eq!(
            packet(ts, Dir::Outbound, 60, &[0xde, 0xad, 0xbe]),
            vec![
                6, 0, 0, 0, 48, 0, 0, 0, // type, length
                0, 0, 0, 0, // interface 0
                1, 0, 0, 0, 2, 0, 0, 0, // timestamp high, low
                3, 0, 0, 0, 60, 0, 0, 0, // captured, original length
                0xde, 0xad, 0xbe, 0, // data, padded
                2, 0, 4, 0, 2, 0, 0, 0, // epb_flags: outbound
                0, 0, 0, 0, // opt_endofopt
                48, 0, 0, 0,
            ]
        );
        let inbound = packet(0, Dir::Inbound, 4, &[1, 2, 3, 4]);
        assert_eq!(inbound.len(), 48, "4 data bytes need no padding");
        assert_eq!(&inbound[32..40], &[2, 0, 4, 0, 1, 0, 0, 0]);
    }

    #[test]
    fn a_file_is_headers_then_packets() {
        let mut w = Writer::new(Vec::new(), "x", "p", 64).unwrap();
        w.packet(5, Dir::Inbound, 1, &[9]).unwrap();
        assert_eq!(w.packets, 1);
        let bytes = w.out;
        let (shb, idb) = (section_header("x"), interface("p", 64));
        assert_eq!(&bytes[..shb.len()], &shb[..]);
        assert_eq!(&bytes[shb.len()..shb.len() + idb.len()], &idb[..]);
        assert_eq!(
            &bytes[shb.len() + idb.len()..],
            &packet(5, Dir::Inbound, 1, &[9])[..]
        );
    }
}
