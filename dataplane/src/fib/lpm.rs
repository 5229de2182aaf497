//! IPv4 longest-prefix match, DIR-24-8 (the layout of DPDK's `rte_lpm`).
//!
//! # Layout
//! - `tbl24` has one `u32` entry per /24 block (2^24 entries, 64 MiB, an
//!   anonymous mapping, zeroed and mapped lazily by the OS, advised onto
//!   transparent huge pages; viewed as `[u32; 2^24]` through `bytemuck`, so
//!   the masked index needs no bounds check and no `unsafe` is involved). An entry either holds the answer for
//!   every address of its block, or is *extended* and names a `tbl8` group.
//! - `tbl8` is a vector of 256-entry groups, one per /24 block that contains a
//!   prefix longer than /24; entry `i` of a group answers for host byte `i`.
//!
//! A lookup is one load, plus a second dependent load for extended blocks.
//!
//! # Entry encoding
//! `VALID (bit 31) | EXT (bit 30) | depth (bits 24..30) | value (bits 0..24)`.
//! The value is the next hop, or the group index when `EXT` is set (only in
//! `tbl24`). `tbl8` entries never have `EXT` set.
//!
//! # Invariants
//! - Every non-extended `tbl24` entry and every `tbl8` entry holds the longest
//!   installed prefix covering its address range (or is 0 if none), with that
//!   prefix's length as depth. Storing the depth makes incremental updates
//!   exact: an insert of length `l` overwrites only entries of depth `<= l`,
//!   and a remove of length `l` rewrites only entries of depth exactly `l`
//!   (same-length prefixes are disjoint, so these belong to the removed prefix)
//!   with the next-shorter covering prefix, found in the control-side record.
//! - A `tbl8` group exists for a /24 block iff some installed prefix longer than
//!   /24 lies in it. When the last one goes, all 256 entries are equal (they all
//!   hold the block's covering prefix of length `<= 24`), so the group collapses
//!   back into its `tbl24` entry and goes onto a free list for reuse.
//!
//! # Concurrency
//! Mutation takes `&mut self`; readers share a built table through an `Arc`
//! (the control side builds or clones, updates, then publishes a new table).
//! Lookups never allocate, lock or panic.

use std::collections::HashMap;
use std::fmt;

/// Largest next-hop value the table can hold (24 bits).
pub const MAX_NEXT_HOP: u32 = (1 << 24) - 1;

/// Default cap on `tbl8` groups for [`Lpm::new`] (64 MiB when all in use;
/// groups are allocated as prefixes need them). 65,536 /24 blocks holding
/// longer prefixes: a Calico cluster of 100,000 /26 blocks uses 25,000.
pub const DEFAULT_TBL8_GROUPS: usize = 1 << 16;

/// Hard cap on `tbl8` groups: group indices are stored in 24 bits.
pub const MAX_TBL8_GROUPS: usize = 1 << 24;

const TBL24_LEN: usize = 1 << 24;
const GROUP: usize = 256;

const VALID: u32 = 1 << 31;
const EXT: u32 = 1 << 30;
const DEPTH_SHIFT: u32 = 24;
const DEPTH_MASK: u32 = 0x3f;
const VALUE_MASK: u32 = MAX_NEXT_HOP;

/// Why an [`Lpm::insert`] was refused. The table is unchanged on error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LpmError {
    /// Prefix length above 32.
    BadPrefixLen(u8),
    /// The prefix has bits set below its length.
    HostBitsSet,
    /// The next hop does not fit in 24 bits (see [`MAX_NEXT_HOP`]).
    NextHopTooLarge(u32),
    /// A prefix longer than /24 needs a new `tbl8` group and none is left.
    Tbl8Exhausted,
}

impl fmt::Display for LpmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LpmError::BadPrefixLen(l) => write!(f, "prefix length {l} is above 32"),
            LpmError::HostBitsSet => f.write_str("prefix has host bits set"),
            LpmError::NextHopTooLarge(nh) => {
                write!(f, "next hop {nh} exceeds the maximum {MAX_NEXT_HOP}")
            }
            LpmError::Tbl8Exhausted => {
                f.write_str("no free tbl8 group for a prefix longer than /24")
            }
        }
    }
}

impl std::error::Error for LpmError {}

/// Netmask of a prefix length `0..=32`.
#[inline]
fn mask(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

#[inline]
fn entry(depth: u8, next_hop: u32) -> u32 {
    VALID | (u32::from(depth) << DEPTH_SHIFT) | next_hop
}

#[inline]
fn depth(e: u32) -> u8 {
    ((e >> DEPTH_SHIFT) & DEPTH_MASK) as u8
}

/// An insert of length `len` may overwrite `e`.
#[inline]
fn overwritable(e: u32, len: u8) -> bool {
    e & VALID == 0 || depth(e) <= len
}

/// `e` was written by the (unique) prefix of length `len` covering it.
#[inline]
fn owned_by(e: u32, len: u8) -> bool {
    e & VALID != 0 && depth(e) == len
}

/// IPv4 longest-prefix-match table; see the module docs.
pub struct Lpm {
    /// Indexed by `addr >> 8`; a fixed-size array so that index needs no check.
    tbl24: Tbl24,
    /// Groups of [`GROUP`] entries; grows on demand up to `max_tbl8_groups`.
    tbl8: Vec<u32>,
    /// Allocated groups not in use (zeroed).
    tbl8_free: Vec<u32>,
    max_tbl8_groups: usize,
    /// Control-side record, indexed by prefix length: prefix -> next hop.
    routes: [HashMap<u32, u32>; 33],
    len: usize,
    /// The /0 route's next hop, answered where the tables hold nothing: a
    /// default route costs no table writes (it would otherwise fill all of
    /// tbl24, 64 MiB, on every build).
    default: Option<u32>,
}

impl Lpm {
    /// An empty table with up to [`DEFAULT_TBL8_GROUPS`] `tbl8` groups.
    pub fn new() -> Self {
        Self::with_tbl8_groups(DEFAULT_TBL8_GROUPS)
    }

    /// An empty table with up to `max_groups` `tbl8` groups (clamped to
    /// [`MAX_TBL8_GROUPS`]). Each /24 block holding a prefix longer than /24
    /// uses one group (1 KiB); groups are allocated on demand.
    pub fn with_tbl8_groups(max_groups: usize) -> Self {
        let tbl24 = Tbl24::new();
        Lpm {
            tbl24,
            tbl8: Vec::new(),
            tbl8_free: Vec::new(),
            max_tbl8_groups: max_groups.min(MAX_TBL8_GROUPS),
            routes: std::array::from_fn(|_| HashMap::new()),
            len: 0,
            default: None,
        }
    }

    /// Installs `prefix/len -> next_hop`, returning the previous next hop of
    /// that exact prefix. `prefix` is host order and must have no host bits.
    pub fn insert(&mut self, prefix: u32, len: u8, next_hop: u32) -> Result<Option<u32>, LpmError> {
        if len > 32 {
            return Err(LpmError::BadPrefixLen(len));
        }
        if prefix & !mask(len) != 0 {
            return Err(LpmError::HostBitsSet);
        }
        if next_hop > MAX_NEXT_HOP {
            return Err(LpmError::NextHopTooLarge(next_hop));
        }
        let new = entry(len, next_hop);
        if len == 0 {
            self.default = Some(next_hop);
        } else if len <= 24 {
            let start = (prefix >> 8) as usize;
            let n = 1usize << (24 - len);
            for e in &mut self.tbl24[start..start + n] {
                if *e & EXT != 0 {
                    let g = (*e & VALUE_MASK) as usize * GROUP;
                    for t in &mut self.tbl8[g..g + GROUP] {
                        if overwritable(*t, len) {
                            *t = new;
                        }
                    }
                } else if overwritable(*e, len) {
                    *e = new;
                }
            }
        } else {
            let idx = (prefix >> 8) as usize;
            let e = self.tbl24[idx];
            let g = if e & EXT != 0 {
                (e & VALUE_MASK) as usize
            } else {
                let g = self.alloc_group()?;
                // The block's current answer (or 0) becomes every entry.
                self.tbl8[g * GROUP..(g + 1) * GROUP].fill(e);
                self.tbl24[idx] = VALID | EXT | g as u32;
                g
            };
            let start = g * GROUP + (prefix & 0xff) as usize;
            let n = 1usize << (32 - len);
            for t in &mut self.tbl8[start..start + n] {
                if overwritable(*t, len) {
                    *t = new;
                }
            }
        }
        let prev = self.routes[usize::from(len)].insert(prefix, next_hop);
        if prev.is_none() {
            self.len += 1;
        }
        Ok(prev)
    }

    /// Removes `prefix/len`, returning its next hop. Addresses it covered fall
    /// back to the next-shorter installed covering prefix.
    pub fn remove(&mut self, prefix: u32, len: u8) -> Option<u32> {
        if len > 32 || prefix & !mask(len) != 0 {
            return None;
        }
        let next_hop = self.routes[usize::from(len)].remove(&prefix)?;
        self.len -= 1;
        let repl = self.covering_entry(prefix, len);
        if len == 0 {
            self.default = None;
        } else if len <= 24 {
            let start = (prefix >> 8) as usize;
            let n = 1usize << (24 - len);
            for e in &mut self.tbl24[start..start + n] {
                if *e & EXT != 0 {
                    let g = (*e & VALUE_MASK) as usize * GROUP;
                    for t in &mut self.tbl8[g..g + GROUP] {
                        if owned_by(*t, len) {
                            *t = repl;
                        }
                    }
                } else if owned_by(*e, len) {
                    *e = repl;
                }
            }
        } else {
            let idx = (prefix >> 8) as usize;
            let e = self.tbl24[idx];
            debug_assert!(e & EXT != 0, "installed /{len} without a tbl8 group");
            if e & EXT == 0 {
                return Some(next_hop);
            }
            let g = (e & VALUE_MASK) as usize;
            let group = &mut self.tbl8[g * GROUP..(g + 1) * GROUP];
            let start = (prefix & 0xff) as usize;
            for t in &mut group[start..start + (1usize << (32 - len))] {
                if owned_by(*t, len) {
                    *t = repl;
                }
            }
            if group.iter().all(|&t| t & VALID == 0 || depth(t) <= 24) {
                let collapsed = group[0];
                debug_assert!(group.iter().all(|&t| t == collapsed));
                group.fill(0);
                self.tbl24[idx] = collapsed;
                self.tbl8_free.push(g as u32);
            }
        }
        Some(next_hop)
    }

    /// The next hop installed for exactly `prefix/len`.
    pub fn get(&self, prefix: u32, len: u8) -> Option<u32> {
        self.routes.get(usize::from(len))?.get(&prefix).copied()
    }

    /// The next hop of the longest installed prefix containing `addr` (host order).
    #[inline]
    pub fn lookup(&self, addr: u32) -> Option<u32> {
        let t = self.tbl24.get()?;
        self.resolve(t[(addr >> 8) as usize], addr)
    }

    /// Looks up a burst, eight addresses at a time: the eight independent
    /// `tbl24` loads are issued together, so their cache and TLB misses
    /// overlap, then each is resolved. Eight lanes stay in registers, so the
    /// only stores are the answers and the CPU's window reaches the next
    /// group's loads while this one's are in flight (the former burst-wide
    /// array of entries filled the store queue and stalled it: 1.7x slower
    /// at 1M routes, and slower than one-by-one lookups). Handles the first
    /// `min(addrs.len(), out.len())` addresses; other `out` slots are untouched.
    pub fn lookup_burst(&self, addrs: &[u32], out: &mut [Option<u32>]) {
        const LANES: usize = 8;
        let n = addrs.len().min(out.len());
        let (addrs, out) = (&addrs[..n], &mut out[..n]);
        let Some(t) = self.tbl24.get() else {
            out.fill(None);
            return;
        };
        let mut a8 = addrs.chunks_exact(LANES);
        let mut o8 = out.chunks_exact_mut(LANES);
        for (a, o) in (&mut a8).zip(&mut o8) {
            let e: [u32; LANES] = std::array::from_fn(|i| t[(a[i] >> 8) as usize]);
            for ((o, &addr), e) in o.iter_mut().zip(a).zip(e) {
                *o = self.resolve(e, addr);
            }
        }
        for (o, &a) in o8.into_remainder().iter_mut().zip(a8.remainder()) {
            *o = self.lookup(a);
        }
    }

    /// Number of installed prefixes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No prefix installed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Installed `(prefix, len, next_hop)`, by increasing length; order within
    /// a length is unspecified.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u8, u32)> + '_ {
        self.routes
            .iter()
            .enumerate()
            .flat_map(|(l, m)| m.iter().map(move |(&p, &nh)| (p, l as u8, nh)))
    }

    /// `tbl8` groups currently holding prefixes longer than /24.
    pub fn tbl8_groups_used(&self) -> usize {
        self.tbl8.len() / GROUP - self.tbl8_free.len()
    }

    /// Whether the /24 block of `addr` (host order) has a `tbl8` group.
    pub fn has_tbl8_group(&self, addr: u32) -> bool {
        self.tbl24[(addr >> 8) as usize] & EXT != 0
    }

    /// Cap on `tbl8` groups set at construction.
    pub fn tbl8_groups_max(&self) -> usize {
        self.max_tbl8_groups
    }

    /// Second step of a lookup, given the `tbl24` entry.
    #[inline(always)]
    fn resolve(&self, e: u32, addr: u32) -> Option<u32> {
        let e = if e & EXT != 0 {
            let i = (e & VALUE_MASK) as usize * GROUP + (addr & 0xff) as usize;
            // Always in bounds by construction; `get` keeps lookups panic-free.
            self.tbl8.get(i).copied().unwrap_or(0)
        } else {
            e
        };
        if e & VALID != 0 {
            Some(e & VALUE_MASK)
        } else {
            self.default
        }
    }

    /// Entry for the longest installed prefix strictly shorter than `len`
    /// covering `prefix`, or 0 (the /0 route lives outside the tables).
    fn covering_entry(&self, prefix: u32, len: u8) -> u32 {
        (1..len)
            .rev()
            .find_map(|l| {
                self.routes[usize::from(l)]
                    .get(&(prefix & mask(l)))
                    .map(|&nh| entry(l, nh))
            })
            .unwrap_or(0)
    }

    fn alloc_group(&mut self) -> Result<usize, LpmError> {
        if let Some(g) = self.tbl8_free.pop() {
            return Ok(g as usize);
        }
        let g = self.tbl8.len() / GROUP;
        if g >= self.max_tbl8_groups {
            return Err(LpmError::Tbl8Exhausted);
        }
        self.tbl8.resize((g + 1) * GROUP, 0);
        Ok(g)
    }
}

impl Default for Lpm {
    fn default() -> Self {
        Self::new()
    }
}

/// The `tbl24` array in an anonymous mapping, starting at a huge-page
/// boundary (`off` bytes in) so that every 2 MiB of it can be one huge page.
struct Tbl24 {
    map: memmap2::MmapMut,
    off: usize,
}

const TBL24_BYTES: usize = TBL24_LEN * std::mem::size_of::<u32>();
const HUGE_PAGE: usize = 2 << 20;

impl Tbl24 {
    /// A zeroed table, advised onto transparent huge pages before its first
    /// touch: random lookups over 64 MiB then miss the TLB far less.
    fn new() -> Self {
        let mut map = memmap2::MmapOptions::new()
            .len(TBL24_BYTES + HUGE_PAGE)
            .map_anon()
            .unwrap_or_else(|e| panic!("cannot map the 64 MiB route table: {e}"));
        let addr = map.as_mut_ptr() as usize;
        let off = addr.next_multiple_of(HUGE_PAGE) - addr;
        #[cfg(target_os = "linux")]
        let _ = map.advise_range(memmap2::Advice::HugePage, off, TBL24_BYTES);
        Tbl24 { map, off }
    }

    /// The table. The range is in the mapping and 4-byte aligned, so this
    /// is always `Some`; lookups take `None` as "no route" rather than panic.
    #[inline(always)]
    fn get(&self) -> Option<&[u32; TBL24_LEN]> {
        bytemuck::try_from_bytes(self.map.get(self.off..self.off + TBL24_BYTES)?).ok()
    }

    /// The table, for the control side.
    fn get_mut(&mut self) -> &mut [u32; TBL24_LEN] {
        bytemuck::from_bytes_mut(&mut self.map[self.off..self.off + TBL24_BYTES])
    }
}

impl<I: std::slice::SliceIndex<[u32]>> std::ops::Index<I> for Tbl24 {
    type Output = I::Output;
    fn index(&self, i: I) -> &I::Output {
        let t: &[u32; TBL24_LEN] =
            bytemuck::from_bytes(&self.map[self.off..self.off + TBL24_BYTES]);
        &t[..][i]
    }
}

impl<I: std::slice::SliceIndex<[u32]>> std::ops::IndexMut<I> for Tbl24 {
    fn index_mut(&mut self, i: I) -> &mut I::Output {
        &mut self.get_mut()[..][i]
    }
}

impl Clone for Tbl24 {
    fn clone(&self) -> Self {
        let mut t = Tbl24::new();
        t.get_mut().copy_from_slice(&self[..]);
        t
    }
}

impl Clone for Lpm {
    /// Copies the whole 64 MiB `tbl24` (into a fresh mapping).
    fn clone(&self) -> Self {
        Lpm {
            tbl24: self.tbl24.clone(),
            tbl8: self.tbl8.clone(),
            tbl8_free: self.tbl8_free.clone(),
            max_tbl8_groups: self.max_tbl8_groups,
            routes: self.routes.clone(),
            len: self.len,
            default: self.default,
        }
    }
}

impl fmt::Debug for Lpm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lpm")
            .field("len", &self.len)
            .field("tbl8_groups_used", &self.tbl8_groups_used())
            .field("tbl8_groups_max", &self.max_tbl8_groups)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;
    use std::net::Ipv4Addr;

    fn ip(s: &str) -> u32 {
        u32::from(s.parse::<Ipv4Addr>().unwrap())
    }

    fn last_of(prefix: u32, len: u8) -> u32 {
        prefix | !mask(len)
    }

    #[test]
    fn send_sync_clone() {
        fn check<T: Send + Sync + Clone + fmt::Debug>() {}
        check::<Lpm>();
    }

    #[test]
    fn mask_values() {
        assert_eq!(mask(0), 0);
        assert_eq!(mask(1), 0x8000_0000);
        assert_eq!(mask(24), 0xffff_ff00);
        assert_eq!(mask(32), u32::MAX);
    }

    #[test]
    fn empty_table() {
        let t = Lpm::new();
        assert!(t.is_empty());
        for a in [0, 1, ip("10.1.2.3"), u32::MAX] {
            assert_eq!(t.lookup(a), None);
        }
        assert_eq!(t.iter().count(), 0);
    }

    #[test]
    fn default_route() {
        let mut t = Lpm::new();
        assert_eq!(t.insert(0, 0, 7), Ok(None));
        for a in [0, ip("10.1.2.3"), ip("200.0.0.1"), u32::MAX] {
            assert_eq!(t.lookup(a), Some(7));
        }
        assert_eq!(t.insert(0, 0, 8), Ok(Some(7)));
        assert_eq!(t.lookup(ip("1.2.3.4")), Some(8));
        assert_eq!(t.len(), 1);
        assert_eq!(t.remove(0, 0), Some(8));
        assert_eq!(t.lookup(ip("1.2.3.4")), None);
        assert!(t.is_empty());
    }

    #[test]
    fn host_routes() {
        let mut t = Lpm::new();
        let hosts = [
            ip("10.0.0.1"),
            ip("10.0.0.2"),
            ip("10.0.0.255"),
            ip("10.9.8.7"),
            0,
            u32::MAX,
        ];
        for (i, &h) in hosts.iter().enumerate() {
            assert_eq!(t.insert(h, 32, i as u32 + 1), Ok(None));
        }
        for (i, &h) in hosts.iter().enumerate() {
            assert_eq!(t.lookup(h), Some(i as u32 + 1));
            assert_eq!(t.get(h, 32), Some(i as u32 + 1));
        }
        assert_eq!(t.lookup(ip("10.0.0.0")), None);
        assert_eq!(t.lookup(ip("10.0.0.3")), None);
        assert_eq!(t.lookup(ip("10.0.1.1")), None);
        assert_eq!(t.lookup(ip("10.9.8.6")), None);
        assert_eq!(t.tbl8_groups_used(), 4);
    }

    #[test]
    fn overlapping_prefixes_and_removal() {
        let mut t = Lpm::new();
        t.insert(ip("10.0.0.0"), 8, 8).unwrap();
        t.insert(ip("10.1.0.0"), 16, 16).unwrap();
        t.insert(ip("10.1.2.0"), 24, 24).unwrap();
        t.insert(ip("10.1.2.128"), 25, 25).unwrap();
        t.insert(ip("10.1.2.200"), 32, 32).unwrap();
        let probe = |t: &Lpm| {
            [
                "10.200.0.1",
                "10.1.9.9",
                "10.1.2.3",
                "10.1.2.127",
                "10.1.2.128",
                "10.1.2.199",
                "10.1.2.200",
                "10.1.2.201",
                "11.0.0.0",
                "9.255.255.255",
            ]
            .map(|a| t.lookup(ip(a)))
        };
        let s = Some;
        assert_eq!(
            probe(&t),
            [
                s(8),
                s(16),
                s(24),
                s(24),
                s(25),
                s(25),
                s(32),
                s(25),
                None,
                None
            ]
        );

        // Removing a middle prefix restores the next-shorter covering one.
        assert_eq!(t.remove(ip("10.1.2.0"), 24), Some(24));
        assert_eq!(
            probe(&t),
            [
                s(8),
                s(16),
                s(16),
                s(16),
                s(25),
                s(25),
                s(32),
                s(25),
                None,
                None
            ]
        );
        assert_eq!(t.remove(ip("10.1.2.128"), 25), Some(25));
        assert_eq!(
            probe(&t),
            [
                s(8),
                s(16),
                s(16),
                s(16),
                s(16),
                s(16),
                s(32),
                s(16),
                None,
                None
            ]
        );
        // Re-adding a shorter prefix underneath does not hide the /32.
        t.insert(ip("10.1.2.0"), 24, 240).unwrap();
        assert_eq!(
            probe(&t),
            [
                s(8),
                s(16),
                s(240),
                s(240),
                s(240),
                s(240),
                s(32),
                s(240),
                None,
                None
            ]
        );
        assert_eq!(t.remove(ip("10.1.2.200"), 32), Some(32));
        assert_eq!(t.tbl8_groups_used(), 0);
        assert_eq!(
            probe(&t),
            [
                s(8),
                s(16),
                s(240),
                s(240),
                s(240),
                s(240),
                s(240),
                s(240),
                None,
                None
            ]
        );
        assert_eq!(t.remove(ip("10.0.0.0"), 8), Some(8));
        assert_eq!(t.remove(ip("10.0.0.0"), 8), None);
        assert_eq!(
            probe(&t),
            [
                None,
                s(16),
                s(240),
                s(240),
                s(240),
                s(240),
                s(240),
                s(240),
                None,
                None
            ]
        );
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn short_prefix_over_existing_group() {
        let mut t = Lpm::new();
        t.insert(ip("192.168.1.7"), 32, 1).unwrap();
        t.insert(ip("192.168.0.0"), 16, 2).unwrap();
        assert_eq!(t.lookup(ip("192.168.1.7")), Some(1));
        assert_eq!(t.lookup(ip("192.168.1.8")), Some(2));
        t.insert(ip("192.0.0.0"), 8, 3).unwrap();
        assert_eq!(t.lookup(ip("192.168.1.8")), Some(2));
        assert_eq!(t.remove(ip("192.168.0.0"), 16), Some(2));
        assert_eq!(t.lookup(ip("192.168.1.8")), Some(3));
        assert_eq!(t.lookup(ip("192.168.1.7")), Some(1));
        assert_eq!(t.remove(ip("192.168.1.7"), 32), Some(1));
        assert_eq!(t.lookup(ip("192.168.1.7")), Some(3));
        assert_eq!(t.tbl8_groups_used(), 0);
    }

    #[test]
    fn tbl8_group_freed_and_reused() {
        let mut t = Lpm::new();
        t.insert(ip("10.0.0.0"), 8, 1).unwrap();
        t.insert(ip("10.0.0.128"), 25, 2).unwrap();
        t.insert(ip("10.0.0.4"), 30, 3).unwrap();
        assert_eq!(t.tbl8_groups_used(), 1);
        assert_eq!(t.remove(ip("10.0.0.128"), 25), Some(2));
        assert_eq!(t.tbl8_groups_used(), 1, "a /30 still lives in the group");
        assert_eq!(t.remove(ip("10.0.0.4"), 30), Some(3));
        assert_eq!(t.tbl8_groups_used(), 0);
        assert_eq!(
            t.tbl24[(ip("10.0.0.0") >> 8) as usize] & EXT,
            0,
            "collapsed"
        );
        assert_eq!(t.lookup(ip("10.0.0.5")), Some(1));
        assert_eq!(t.lookup(ip("10.0.0.200")), Some(1));
        assert_eq!(t.tbl8_free.len(), 1);

        // The next group comes from the free list; the pool does not grow.
        t.insert(ip("10.5.5.5"), 32, 4).unwrap();
        assert_eq!(t.tbl8_groups_used(), 1);
        assert!(t.tbl8_free.is_empty());
        assert_eq!(t.tbl8.len(), GROUP);
        assert_eq!(t.lookup(ip("10.5.5.5")), Some(4));
        assert_eq!(t.lookup(ip("10.5.5.4")), Some(1));
    }

    #[test]
    fn tbl8_exhausted_leaves_table_unchanged() {
        let mut t = Lpm::with_tbl8_groups(2);
        assert_eq!(t.tbl8_groups_max(), 2);
        t.insert(ip("1.1.1.1"), 32, 1).unwrap();
        t.insert(ip("2.2.2.2"), 32, 2).unwrap();
        assert_eq!(t.insert(ip("3.3.3.3"), 32, 3), Err(LpmError::Tbl8Exhausted));
        assert_eq!(t.len(), 2);
        assert_eq!(t.get(ip("3.3.3.3"), 32), None);
        assert_eq!(t.lookup(ip("3.3.3.3")), None);
        // Prefixes in existing groups and /24-or-shorter ones still fit.
        t.insert(ip("1.1.1.2"), 31, 4).unwrap();
        t.insert(ip("3.3.3.0"), 24, 5).unwrap();
        assert_eq!(t.lookup(ip("3.3.3.3")), Some(5));
        assert_eq!(t.lookup(ip("1.1.1.3")), Some(4));
        // Freeing a group makes room again.
        t.remove(ip("2.2.2.2"), 32).unwrap();
        assert_eq!(t.insert(ip("3.3.3.3"), 32, 3), Ok(None));
        assert_eq!(t.lookup(ip("3.3.3.3")), Some(3));
    }

    #[test]
    fn errors() {
        let mut t = Lpm::new();
        assert_eq!(t.insert(0, 33, 1), Err(LpmError::BadPrefixLen(33)));
        assert_eq!(t.insert(ip("10.0.0.1"), 24, 1), Err(LpmError::HostBitsSet));
        assert_eq!(t.insert(1, 0, 1), Err(LpmError::HostBitsSet));
        assert_eq!(
            t.insert(0, 8, 1 << 24),
            Err(LpmError::NextHopTooLarge(1 << 24))
        );
        assert_eq!(t.insert(0, 8, MAX_NEXT_HOP), Ok(None));
        assert_eq!(t.lookup(ip("0.1.2.3")), Some(MAX_NEXT_HOP));
        assert!(t.insert(0, 8, u32::MAX).is_err());
        assert_eq!(t.remove(0, 33), None);
        assert_eq!(t.remove(ip("10.0.0.1"), 24), None);
        assert_eq!(t.get(0, 40), None);
        assert_eq!(t.len(), 1);
        for e in [
            LpmError::BadPrefixLen(40),
            LpmError::HostBitsSet,
            LpmError::NextHopTooLarge(1 << 30),
            LpmError::Tbl8Exhausted,
        ] {
            let _: &dyn std::error::Error = &e;
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn edges_of_address_space() {
        let mut t = Lpm::new();
        t.insert(0, 1, 1).unwrap();
        t.insert(0x8000_0000, 1, 2).unwrap();
        t.insert(0xffff_fffe, 31, 3).unwrap();
        assert_eq!(t.lookup(0), Some(1));
        assert_eq!(t.lookup(0x7fff_ffff), Some(1));
        assert_eq!(t.lookup(0x8000_0000), Some(2));
        assert_eq!(t.lookup(0xffff_fffd), Some(2));
        assert_eq!(t.lookup(0xffff_fffe), Some(3));
        assert_eq!(t.lookup(u32::MAX), Some(3));
    }

    #[test]
    fn iter_get_clone_and_burst() {
        let mut t = Lpm::new();
        let routes = [
            (ip("10.0.0.0"), 8, 1),
            (ip("10.1.0.0"), 16, 2),
            (ip("10.1.1.1"), 32, 3),
        ];
        for &(p, l, nh) in &routes {
            t.insert(p, l, nh).unwrap();
        }
        let got: HashSet<_> = t.iter().collect();
        assert_eq!(got, routes.iter().copied().collect());
        assert_eq!(t.get(ip("10.1.0.0"), 16), Some(2));
        assert_eq!(t.get(ip("10.1.0.0"), 17), None);

        let c = t.clone();
        t.remove(ip("10.1.1.1"), 32);
        assert_eq!(c.lookup(ip("10.1.1.1")), Some(3));
        assert_eq!(t.lookup(ip("10.1.1.1")), Some(2));
        assert_eq!(c.len(), 3);
        assert!(format!("{c:?}").contains("len: 3"));

        let addrs: Vec<u32> = (0..100u32)
            .map(|i| ip("10.1.1.0") + i * 3)
            .chain([0, u32::MAX])
            .collect();
        let mut out = vec![Some(999); addrs.len()];
        c.lookup_burst(&addrs, &mut out);
        for (a, o) in addrs.iter().zip(&out) {
            assert_eq!(*o, c.lookup(*a));
        }
        // Only min(len) handled; extra output untouched, short output fine.
        let mut out = vec![Some(999); 5];
        c.lookup_burst(&addrs[..3], &mut out);
        assert_eq!(&out[3..], &[Some(999), Some(999)]);
        let mut out = vec![None; 2];
        c.lookup_burst(&addrs, &mut out);
        assert_eq!(out, vec![c.lookup(addrs[0]), c.lookup(addrs[1])]);
    }

    /// xorshift64: a tiny deterministic PRNG.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
    }

    /// 1M distinct prefixes: 900k random /24s and 100k /32s clustered into
    /// 4096 /24 blocks (as pod routes are), so at most 4096 tbl8 groups.
    #[test]
    fn million_prefixes() {
        const N24: usize = 900_000;
        const N32: usize = 100_000;
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut p24: HashMap<u32, u32> = HashMap::with_capacity(N24);
        while p24.len() < N24 {
            let r = rng.next();
            p24.insert((r as u32) & 0xffff_ff00, (r >> 40) as u32 & MAX_NEXT_HOP);
        }
        let blocks: Vec<u32> = (0..4096)
            .map(|_| (rng.next() as u32) & 0xffff_ff00)
            .collect();
        let mut p32: HashMap<u32, u32> = HashMap::with_capacity(N32);
        while p32.len() < N32 {
            let r = rng.next();
            let a = blocks[(r >> 32) as usize % blocks.len()] | (r as u32 & 0xff);
            p32.insert(a, (r >> 40) as u32 & MAX_NEXT_HOP);
        }
        let mut order: Vec<(u32, u8, u32)> = p24
            .iter()
            .map(|(&p, &nh)| (p, 24, nh))
            .chain(p32.iter().map(|(&p, &nh)| (p, 32, nh)))
            .collect();
        // Interleave lengths deterministically.
        for i in (1..order.len()).rev() {
            order.swap(i, rng.next() as usize % (i + 1));
        }

        let mut t = Lpm::new();
        let start = std::time::Instant::now();
        for &(p, l, nh) in &order {
            assert_eq!(t.insert(p, l, nh), Ok(None));
        }
        let took = start.elapsed();
        eprintln!("inserted {} prefixes in {took:?}", order.len());
        assert_eq!(t.len(), N24 + N32);
        assert!(t.tbl8_groups_used() <= blocks.len());

        let oracle = |p24: &HashMap<u32, u32>, p32: &HashMap<u32, u32>, a: u32| {
            p32.get(&a).or_else(|| p24.get(&(a & 0xffff_ff00))).copied()
        };
        // Every /32, plus random addresses (mostly inside /24s or misses).
        for (&a, &nh) in &p32 {
            assert_eq!(t.lookup(a), Some(nh));
        }
        for (i, &(p, _, _)) in order.iter().enumerate().step_by(7) {
            let a = p | (rng.next() as u32 & 0xff);
            assert_eq!(
                t.lookup(a),
                oracle(&p24, &p32, a),
                "probe {i} {}",
                Ipv4Addr::from(a)
            );
        }
        for &b in &blocks {
            for h in 0..=255 {
                assert_eq!(t.lookup(b | h), oracle(&p24, &p32, b | h));
            }
        }
        for _ in 0..200_000 {
            let a = rng.next() as u32;
            assert_eq!(t.lookup(a), oracle(&p24, &p32, a));
        }

        // Remove a tenth and re-check a sample.
        for &(p, l, nh) in order.iter().step_by(10) {
            assert_eq!(t.remove(p, l), Some(nh));
            if l == 24 {
                p24.remove(&p)
            } else {
                p32.remove(&p)
            };
        }
        assert_eq!(t.len(), p24.len() + p32.len());
        for &(p, _, _) in order.iter().step_by(3) {
            let a = p | (rng.next() as u32 & 0xff);
            assert_eq!(t.lookup(a), oracle(&p24, &p32, a));
            assert_eq!(t.lookup(p), oracle(&p24, &p32, p));
        }
    }

    /// Linear-scan oracle: longest matching prefix by length.
    fn oracle_lookup(routes: &[(u32, u8, u32)], a: u32) -> Option<u32> {
        routes
            .iter()
            .filter(|&&(p, l, _)| a & mask(l) == p)
            .max_by_key(|&&(_, l, _)| l)
            .map(|&(_, _, nh)| nh)
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u32, u8, u32),
        Remove(u32, u8),
        RemoveExisting(prop::sample::Index),
    }

    /// Addresses clustered in a few /16s and /24s so prefixes overlap often.
    fn addr() -> impl Strategy<Value = u32> {
        const HI: [u32; 4] = [0x0a00, 0x0a01, 0xc0a8, 0xffff];
        prop_oneof![
            1 => any::<u32>(),
            4 => (0usize..4, 0u32..4, any::<u8>())
                .prop_map(|(h, b, lo)| (HI[h] << 16) | (b << 8) | u32::from(lo)),
        ]
    }

    fn prefix_len() -> impl Strategy<Value = u8> {
        prop_oneof![8 => 16u8..=32, 1 => 0u8..=8, 1 => 9u8..=15]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (addr(), prefix_len(), 0u32..=MAX_NEXT_HOP)
                .prop_map(|(a, l, nh)| Op::Insert(a & mask(l), l, nh)),
            1 => (addr(), prefix_len()).prop_map(|(a, l)| Op::Remove(a & mask(l), l)),
            2 => any::<prop::sample::Index>().prop_map(Op::RemoveExisting),
        ]
    }

    fn edges(p: u32, l: u8) -> [u32; 4] {
        let last = last_of(p, l);
        [p, p.wrapping_sub(1), last, last.wrapping_add(1)]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn matches_linear_oracle(
            ops in prop::collection::vec(op(), 1..48),
            probes in prop::collection::vec(addr(), 64),
        ) {
            let mut t = Lpm::new();
            let mut model: Vec<(u32, u8, u32)> = Vec::new();
            let mut touched: Vec<(u32, u8)> = Vec::new();
            for op in ops {
                let (p, l) = match op {
                    Op::Insert(p, l, nh) => {
                        let prev = model.iter().position(|&(q, m, _)| (q, m) == (p, l));
                        let want = prev.map(|i| std::mem::replace(&mut model[i].2, nh));
                        if prev.is_none() {
                            model.push((p, l, nh));
                        }
                        prop_assert_eq!(t.insert(p, l, nh), Ok(want));
                        (p, l)
                    }
                    Op::Remove(p, l) => {
                        let want = model.iter().position(|&(q, m, _)| (q, m) == (p, l))
                            .map(|i| model.swap_remove(i).2);
                        prop_assert_eq!(t.remove(p, l), want);
                        (p, l)
                    }
                    Op::RemoveExisting(ix) => {
                        if model.is_empty() {
                            continue;
                        }
                        let (p, l, nh) = model.swap_remove(ix.index(model.len()));
                        prop_assert_eq!(t.remove(p, l), Some(nh));
                        (p, l)
                    }
                };
                touched.push((p, l));
                for a in edges(p, l) {
                    prop_assert_eq!(t.lookup(a), oracle_lookup(&model, a), "after op on {}/{}, addr {}",
                        Ipv4Addr::from(p), l, Ipv4Addr::from(a));
                }
                prop_assert_eq!(t.len(), model.len());
            }

            let mut addrs = probes;
            for &(p, l) in &touched {
                addrs.extend(edges(p, l));
                addrs.push(p | ((last_of(p, l) - p) / 2));
            }
            for &a in &addrs {
                prop_assert_eq!(t.lookup(a), oracle_lookup(&model, a), "addr {}", Ipv4Addr::from(a));
            }
            let mut out = vec![None; addrs.len()];
            t.lookup_burst(&addrs, &mut out);
            for (&a, &o) in addrs.iter().zip(&out) {
                prop_assert_eq!(o, oracle_lookup(&model, a));
            }

            let mut got: Vec<_> = t.iter().collect();
            got.sort_unstable();
            model.sort_unstable();
            prop_assert_eq!(&got, &model);
            for &(p, l, nh) in &model {
                prop_assert_eq!(t.get(p, l), Some(nh));
            }
            // No group outlives the last prefix longer than /24 in its block.
            let blocks: HashSet<u32> = model.iter().filter(|e| e.1 > 24).map(|e| e.0 >> 8).collect();
            prop_assert_eq!(t.tbl8_groups_used(), blocks.len());
        }
    }
}
