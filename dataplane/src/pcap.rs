//! Classic pcap files (not pcapng): a reader for both byte orders and both
//! microsecond and nanosecond timestamps, and a writer (microseconds, little
//! endian, Ethernet). Used by the replay tool and the golden tests.

use std::io::{self, Read, Write};

const MAGIC_MICROS: u32 = 0xa1b2_c3d4;
const MAGIC_NANOS: u32 = 0xa1b2_3c4d;
const PCAPNG_MAGIC: u32 = 0x0a0d_0d0a;
/// Ethernet link type.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// Largest record the reader accepts.
pub const MAX_RECORD: u32 = 256 * 1024;

/// Errors reading or writing pcap files.
#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    /// I/O failed.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// Not a pcap file.
    #[error("not a pcap file (magic {0:#010x})")]
    BadMagic(u32),
    /// A pcapng file.
    #[error("this is a pcapng file; convert it with `editcap -F pcap in.pcapng out.pcap`")]
    Pcapng,
    /// Not Ethernet.
    #[error("link type {0} is not Ethernet (1)")]
    LinkType(u32),
    /// A record header or body ends early.
    #[error("record {0} is truncated")]
    Truncated(usize),
    /// A record claims more than `MAX_RECORD` bytes.
    #[error("record {index} claims {len} bytes")]
    RecordTooLarge {
        /// Which record.
        index: usize,
        /// Its claimed length.
        len: u32,
    },
}

/// One captured frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Capture time in nanoseconds since the epoch.
    pub ts_ns: u64,
    /// The frame bytes.
    pub data: Vec<u8>,
}

/// Reads a pcap stream.
#[derive(Debug)]
pub struct PcapReader<R> {
    r: R,
    swapped: bool,
    nanos: bool,
    index: usize,
}

impl<R: Read> PcapReader<R> {
    /// Reads and checks the global header.
    pub fn new(mut r: R) -> Result<Self, PcapError> {
        let mut h = [0u8; 24];
        r.read_exact(&mut h).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                PcapError::BadMagic(0)
            } else {
                e.into()
            }
        })?;
        let magic = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let (swapped, nanos) = match magic {
            MAGIC_MICROS => (false, false),
            MAGIC_NANOS => (false, true),
            m if m.swap_bytes() == MAGIC_MICROS => (true, false),
            m if m.swap_bytes() == MAGIC_NANOS => (true, true),
            PCAPNG_MAGIC => return Err(PcapError::Pcapng),
            m => return Err(PcapError::BadMagic(m)),
        };
        let rd = PcapReader {
            r,
            swapped,
            nanos,
            index: 0,
        };
        let linktype = rd.u32_at(&h, 20);
        if linktype != LINKTYPE_ETHERNET {
            return Err(PcapError::LinkType(linktype));
        }
        Ok(rd)
    }

    fn u32_at(&self, b: &[u8], at: usize) -> u32 {
        let v = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        if self.swapped {
            v.swap_bytes()
        } else {
            v
        }
    }

    /// The next record, or `None` at a clean end of file.
    pub fn next_record(&mut self) -> Result<Option<Record>, PcapError> {
        let mut h = [0u8; 16];
        let mut got = 0;
        while got < h.len() {
            match self.r.read(&mut h[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(PcapError::Truncated(self.index)),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        let secs = u64::from(self.u32_at(&h, 0));
        let frac = u64::from(self.u32_at(&h, 4));
        let caplen = self.u32_at(&h, 8);
        if caplen > MAX_RECORD {
            return Err(PcapError::RecordTooLarge {
                index: self.index,
                len: caplen,
            });
        }
        let mut data = vec![0u8; caplen as usize];
        self.r
            .read_exact(&mut data)
            .map_err(|_| PcapError::Truncated(self.index))?;
        self.index += 1;
        let ts_ns = secs * 1_000_000_000 + if self.nanos { frac } else { frac * 1000 };
        Ok(Some(Record { ts_ns, data }))
    }
}

/// Reads every record of a pcap file.
pub fn read_file(path: &std::path::Path) -> Result<Vec<Record>, PcapError> {
    let mut r = PcapReader::new(io::BufReader::new(std::fs::File::open(path)?))?;
    let mut out = Vec::new();
    while let Some(rec) = r.next_record()? {
        out.push(rec);
    }
    Ok(out)
}

/// Writes a pcap stream (microsecond timestamps, Ethernet).
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    w: W,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the global header.
    pub fn new(mut w: W) -> io::Result<Self> {
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&MAGIC_MICROS.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&0i32.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&65535u32.to_le_bytes());
        h.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        w.write_all(&h)?;
        Ok(PcapWriter { w })
    }

    /// Writes one frame.
    pub fn write(&mut self, ts_ns: u64, data: &[u8]) -> io::Result<()> {
        let secs = (ts_ns / 1_000_000_000) as u32;
        let micros = ((ts_ns % 1_000_000_000) / 1000) as u32;
        let len = data.len() as u32;
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&secs.to_le_bytes());
        h[4..8].copy_from_slice(&micros.to_le_bytes());
        h[8..12].copy_from_slice(&len.to_le_bytes());
        h[12..16].copy_from_slice(&len.to_le_bytes());
        self.w.write_all(&h)?;
        self.w.write_all(data)
    }

    /// Flushes and returns the inner writer.
    pub fn into_inner(mut self) -> io::Result<W> {
        self.w.flush()?;
        Ok(self.w)
    }
}

/// Writes `records` to a pcap file.
pub fn write_file(path: &std::path::Path, records: &[Record]) -> io::Result<()> {
    let mut w = PcapWriter::new(io::BufWriter::new(std::fs::File::create(path)?))?;
    for r in records {
        w.write(r.ts_ns, &r.data)?;
    }
    w.into_inner()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let recs = vec![
            Record {
                ts_ns: 1_700_000_000_123_456_000,
                data: vec![1, 2, 3],
            },
            Record {
                ts_ns: 5_000,
                data: vec![],
            },
        ];
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        for r in &recs {
            w.write(r.ts_ns, &r.data).unwrap();
        }
        let bytes = w.into_inner().unwrap();
        let mut r = PcapReader::new(&bytes[..]).unwrap();
        assert_eq!(r.next_record().unwrap().unwrap(), recs[0]);
        assert_eq!(r.next_record().unwrap().unwrap(), recs[1]);
        assert_eq!(r.next_record().unwrap(), None);
    }

    #[test]
    fn big_endian_nanosecond_files_read() {
        let mut b = Vec::new();
        b.extend_from_slice(&MAGIC_NANOS.to_be_bytes());
        b.extend_from_slice(&[
            0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 0, 0, 0, 1,
        ]);
        b.extend_from_slice(&[0, 0, 0, 2, 0, 0, 0, 7, 0, 0, 0, 1, 0, 0, 0, 1, 0xee]);
        let mut r = PcapReader::new(&b[..]).unwrap();
        assert_eq!(
            r.next_record().unwrap().unwrap(),
            Record {
                ts_ns: 2_000_000_007,
                data: vec![0xee]
            }
        );
    }

    #[test]
    fn bad_files_are_refused_with_reasons() {
        assert!(matches!(
            PcapReader::new(&[0u8; 3][..]),
            Err(PcapError::BadMagic(0))
        ));
        assert!(matches!(
            PcapReader::new(
                &[
                    0x0a, 0x0d, 0x0d, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                    0, 0
                ][..]
            ),
            Err(PcapError::Pcapng)
        ));
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        w.write(0, &[1, 2, 3, 4]).unwrap();
        let mut bytes = w.into_inner().unwrap();
        bytes.pop();
        let mut r = PcapReader::new(&bytes[..]).unwrap();
        assert!(matches!(r.next_record(), Err(PcapError::Truncated(0))));
        bytes[20] = 113;
        assert!(matches!(
            PcapReader::new(&bytes[..]),
            Err(PcapError::LinkType(113))
        ));
    }
}
