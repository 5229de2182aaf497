//! Packet capture: a tcpdump-like filter, and the bounded per-worker rings
//! that workers copy matching frames into.
//!
//! A [`Capture`] is made on the control side (`capture.start`): its filter
//! parsed, one [`CaptureRing`] per worker allocated whole (slots of at most
//! [`MAX_SLOT_BYTES`] bytes each). Workers only copy into it:
//!
//! - a worker asks [`Capture::wants`] (two compares) per burst received on,
//!   and per TX list sent out of, a port; ports not captured pay nothing
//!   more;
//! - for the captured port it takes its own ring's lock with `try_lock`
//!   once per burst, never waiting: if the lock is held (the control side
//!   is draining) or the ring is full, matching frames are counted as
//!   dropped ([`Capture::dropped`]) and the worker goes on;
//! - nothing on that path allocates, blocks or panics: the filter is a tree
//!   built by the parser, evaluated over the frame with the zero-copy wire
//!   views; a copy is a `copy_from_slice` into a preallocated slot.
//!
//! Frames are taken as received (before the pipeline parses or rewrites
//! them) and as handed to the port for sending (after rewrite or
//! encapsulation). The filter sees the outermost headers, as tcpdump does:
//! on an uplink, `host` names the outer (node) addresses and `vxlan` the
//! tunnel.
//!
//! # Filter grammar
//!
//! ```text
//! expr    := term ( ("or" | "||") term )*
//! term    := factor ( ("and" | "&&") factor )*
//! factor  := ("not" | "!") factor | "(" expr ")" | primitive
//! primitive :=
//!     [src|dst] host A.B.C.D        IPv4 source/destination (ARP sender/target)
//!   | [src|dst] net A.B.C.D/LEN     likewise within a prefix (no host bits)
//!   | [src|dst] port N              TCP or UDP port
//!   | ip | icmp | tcp | udp | arp   protocol
//!   | vxlan                         UDP to port 4789 or 8472
//! ```
//!
//! An empty filter matches every frame. `and` binds tighter than `or`.

use crate::tables::PortId;
use crate::wire::{arp, ethernet, ipv4};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Most bytes a slot holds: a jumbo frame with its encapsulation. Longer
/// frames are cut (their original length is kept, as pcap does).
pub const MAX_SLOT_BYTES: usize = 10240;
/// Slots per worker ring.
pub const DEFAULT_SLOTS: usize = 512;
/// UDP ports that `vxlan` matches (IANA and the Linux default).
pub const VXLAN_PORTS: [u16; 2] = [4789, 8472];

/// Which way a frame crossed the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Received on the port.
    Rx,
    /// Sent out of the port.
    Tx,
    /// Both (a capture's setting, never a frame's).
    Both,
}

impl Direction {
    /// `rx`, `tx` or `both`.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Rx => "rx",
            Direction::Tx => "tx",
            Direction::Both => "both",
        }
    }

    /// Reads `rx`, `tx` or `both`.
    pub fn from_name(s: &str) -> Option<Direction> {
        match s {
            "rx" => Some(Direction::Rx),
            "tx" => Some(Direction::Tx),
            "both" => Some(Direction::Both),
            _ => None,
        }
    }

    fn covers(self, d: Direction) -> bool {
        self == Direction::Both || self == d
    }
}

/// A filter the parser refused: what is wrong and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at character {})", .at + 1)]
pub struct FilterError {
    /// Byte offset in the expression.
    pub at: usize,
    /// What is wrong.
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Any,
    Src,
    Dst,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Ip,
    Icmp,
    Tcp,
    Udp,
    Arp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Expr {
    /// An address under a mask (`host` is a /32).
    Net(Side, u32, u32),
    Port(Side, u16),
    Proto(Proto),
    Vxlan,
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

/// A parsed capture filter (see the module docs for the grammar).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filter {
    root: Option<Expr>,
    text: String,
}

/// The outermost headers of a frame, as the filter needs them.
#[derive(Debug, Clone, Copy, Default)]
struct Headers {
    ipv4: bool,
    arp: bool,
    proto: u8,
    src: u32,
    dst: u32,
    ports: Option<(u16, u16)>,
}

impl Headers {
    #[inline]
    fn of(frame: &[u8]) -> Headers {
        let mut h = Headers::default();
        let Ok(e) = ethernet::Frame::new_checked(frame) else {
            return h;
        };
        match e.ethertype() {
            ethernet::ethertype::IPV4 => {
                let Ok(ip) = ipv4::Packet::new_checked(e.payload()) else {
                    return h;
                };
                h.ipv4 = true;
                h.proto = ip.protocol();
                h.src = ip.src_u32();
                h.dst = ip.dst_u32();
                if ip.frag_offset() == 0
                    && matches!(h.proto, ipv4::protocol::TCP | ipv4::protocol::UDP)
                {
                    h.ports = crate::wire::tcp::ports(ip.payload());
                }
            }
            ethernet::ethertype::ARP => {
                if let Ok(a) = arp::Packet::new_checked(e.payload()) {
                    h.arp = true;
                    h.src = u32::from(a.sender_ip());
                    h.dst = u32::from(a.target_ip());
                }
            }
            _ => {}
        }
        h
    }
}

impl Expr {
    fn eval(&self, h: &Headers) -> bool {
        match self {
            Expr::Net(side, addr, mask) => {
                if !(h.ipv4 || h.arp) {
                    return false;
                }
                let m = |a: u32| a & mask == *addr;
                match side {
                    Side::Any => m(h.src) || m(h.dst),
                    Side::Src => m(h.src),
                    Side::Dst => m(h.dst),
                }
            }
            Expr::Port(side, p) => match h.ports {
                Some((s, d)) => match side {
                    Side::Any => s == *p || d == *p,
                    Side::Src => s == *p,
                    Side::Dst => d == *p,
                },
                None => false,
            },
            Expr::Proto(p) => match p {
                Proto::Ip => h.ipv4,
                Proto::Icmp => h.ipv4 && h.proto == ipv4::protocol::ICMP,
                Proto::Tcp => h.ipv4 && h.proto == ipv4::protocol::TCP,
                Proto::Udp => h.ipv4 && h.proto == ipv4::protocol::UDP,
                Proto::Arp => h.arp,
            },
            Expr::Vxlan => {
                h.ipv4
                    && h.proto == ipv4::protocol::UDP
                    && h.ports.is_some_and(|(_, d)| VXLAN_PORTS.contains(&d))
            }
            Expr::Not(e) => !e.eval(h),
            Expr::And(a, b) => a.eval(h) && b.eval(h),
            Expr::Or(a, b) => a.eval(h) || b.eval(h),
        }
    }
}

/// One word of a filter and where it starts.
#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    at: usize,
    text: &'a str,
}

fn tokenize(s: &str) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'(' || c == b')' || c == b'!' {
            out.push(Token {
                at: i,
                text: &s[i..i + 1],
            });
            i += 1;
        } else if (c == b'&' || c == b'|') && b.get(i + 1) == Some(&c) {
            out.push(Token {
                at: i,
                text: &s[i..i + 2],
            });
            i += 2;
        } else {
            let start = i;
            while i < b.len()
                && !b[i].is_ascii_whitespace()
                && !matches!(b[i], b'(' | b')' | b'!' | b'&' | b'|')
            {
                i += 1;
            }
            if i == start {
                // A lone `&` or `|`.
                i += 1;
            }
            out.push(Token {
                at: start,
                text: &s[start..i],
            });
        }
    }
    out
}

struct Parser<'a> {
    toks: Vec<Token<'a>>,
    pos: usize,
    end: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<Token<'a>> {
        self.toks.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<Token<'a>> {
        let t = self.peek();
        self.pos += 1;
        t
    }

    fn err<T>(&self, at: usize, message: impl Into<String>) -> Result<T, FilterError> {
        Err(FilterError {
            at,
            message: message.into(),
        })
    }

    fn expr(&mut self) -> Result<Expr, FilterError> {
        let mut e = self.term()?;
        while let Some(t) = self.peek() {
            if t.text == "or" || t.text == "||" {
                self.pos += 1;
                e = Expr::Or(Box::new(e), Box::new(self.term()?));
            } else {
                break;
            }
        }
        Ok(e)
    }

    fn term(&mut self) -> Result<Expr, FilterError> {
        let mut e = self.factor()?;
        while let Some(t) = self.peek() {
            if t.text == "and" || t.text == "&&" {
                self.pos += 1;
                e = Expr::And(Box::new(e), Box::new(self.factor()?));
            } else {
                break;
            }
        }
        Ok(e)
    }

    fn factor(&mut self) -> Result<Expr, FilterError> {
        let Some(t) = self.next() else {
            return self.err(self.end, "expression ends early: expected a primitive");
        };
        match t.text {
            "not" | "!" => Ok(Expr::Not(Box::new(self.factor()?))),
            "(" => {
                let e = self.expr()?;
                match self.next() {
                    Some(c) if c.text == ")" => Ok(e),
                    Some(c) => self.err(c.at, format!("expected `)`, found `{}`", c.text)),
                    None => self.err(
                        self.end,
                        format!("`(` at character {} is not closed", t.at + 1),
                    ),
                }
            }
            _ => self.primitive(t),
        }
    }

    fn value(&mut self, after: Token<'a>, what: &str) -> Result<Token<'a>, FilterError> {
        match self.next() {
            Some(v) if !matches!(v.text, "(" | ")" | "!" | "&&" | "||" | "and" | "or" | "not") => {
                Ok(v)
            }
            Some(v) => self.err(
                v.at,
                format!("`{}` needs {what}, found `{}`", after.text, v.text),
            ),
            None => self.err(self.end, format!("`{}` needs {what}", after.text)),
        }
    }

    fn primitive(&mut self, t: Token<'a>) -> Result<Expr, FilterError> {
        let (side, kw) = match t.text {
            "src" | "dst" => {
                let side = if t.text == "src" {
                    Side::Src
                } else {
                    Side::Dst
                };
                match self.next() {
                    Some(k) if matches!(k.text, "host" | "net" | "port") => (side, k),
                    Some(k) => {
                        return self.err(
                            k.at,
                            format!(
                                "`{}` must be followed by host, net or port, not `{}`",
                                t.text, k.text
                            ),
                        )
                    }
                    None => {
                        return self.err(
                            self.end,
                            format!("`{}` must be followed by host, net or port", t.text),
                        )
                    }
                }
            }
            _ => (Side::Any, t),
        };
        match kw.text {
            "host" => {
                let v = self.value(kw, "an IPv4 address")?;
                let a: Ipv4Addr = v
                    .text
                    .parse()
                    .or_else(|_| self.err(v.at, format!("`{}` is not an IPv4 address", v.text)))?;
                Ok(Expr::Net(side, u32::from(a), u32::MAX))
            }
            "net" => {
                let v = self.value(kw, "a prefix A.B.C.D/LEN")?;
                let Some((a, l)) = v.text.split_once('/') else {
                    return self.err(v.at, format!("`{}` is not a prefix A.B.C.D/LEN", v.text));
                };
                let a: Ipv4Addr = a
                    .parse()
                    .or_else(|_| self.err(v.at, format!("`{a}` is not an IPv4 address")))?;
                let len: u32 = match l.parse() {
                    Ok(n) if n <= 32 => n,
                    _ => return self.err(v.at, format!("prefix length `{l}` is not 0 to 32")),
                };
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                let a = u32::from(a);
                if a & !mask != 0 {
                    return self.err(
                        v.at,
                        format!("`{}` has host bits set (the network is {}/{len})", v.text, Ipv4Addr::from(a & mask)),
                    );
                }
                Ok(Expr::Net(side, a, mask))
            }
            "port" => {
                let v = self.value(kw, "a port number")?;
                let p: u16 = v
                    .text
                    .parse()
                    .or_else(|_| self.err(v.at, format!("`{}` is not a port number (0 to 65535)", v.text)))?;
                Ok(Expr::Port(side, p))
            }
            "ip" => Ok(Expr::Proto(Proto::Ip)),
            "icmp" => Ok(Expr::Proto(Proto::Icmp)),
            "tcp" => Ok(Expr::Proto(Proto::Tcp)),
            "udp" => Ok(Expr::Proto(Proto::Udp)),
            "arp" => Ok(Expr::Proto(Proto::Arp)),
            "vxlan" => Ok(Expr::Vxlan),
            ")" => self.err(kw.at, "unexpected `)`"),
            other => self.err(
                kw.at,
                format!(
                    "unknown primitive `{other}`; expected host, net, port, src, dst, ip, icmp, tcp, udp, arp, vxlan, not or `(`"
                ),
            ),
        }
    }
}

impl Filter {
    /// Parses `text` (see the module docs); empty matches everything.
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        let toks = tokenize(text);
        if toks.is_empty() {
            return Ok(Filter {
                root: None,
                text: String::new(),
            });
        }
        let mut p = Parser {
            toks,
            pos: 0,
            end: text.len(),
        };
        let root = p.expr()?;
        if let Some(t) = p.peek() {
            let hint = if t.text == ")" {
                "unexpected `)`".to_string()
            } else {
                format!("expected `and` or `or` before `{}`", t.text)
            };
            return Err(FilterError {
                at: t.at,
                message: hint,
            });
        }
        Ok(Filter {
            root: Some(root),
            text: text.trim().to_string(),
        })
    }

    /// The expression as given (trimmed).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether `frame` (Ethernet) matches. Never allocates or panics.
    #[inline]
    pub fn matches(&self, frame: &[u8]) -> bool {
        match &self.root {
            None => true,
            Some(e) => e.eval(&Headers::of(frame)),
        }
    }
}

/// A frame as a ring holds it.
#[derive(Debug)]
struct Slot {
    ts_ns: u64,
    orig_len: u32,
    len: u32,
    dir: Direction,
    data: Box<[u8]>,
}

/// A captured frame, copied out of a ring on the control side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedFrame {
    /// Wall-clock time (ns since the Unix epoch) of the worker's burst.
    pub ts_ns: u64,
    /// `Rx` or `Tx`.
    pub direction: Direction,
    /// The frame's length on the wire.
    pub orig_len: u32,
    /// The bytes kept (at most the snap length).
    pub data: Vec<u8>,
}

/// A bounded ring of preallocated slots, written by one worker and drained
/// by the control side. Full means full: a frame that does not fit is
/// refused, never overwrites an older one.
#[derive(Debug)]
pub struct CaptureRing {
    slots: Box<[Slot]>,
    /// Index of the oldest frame.
    head: usize,
    /// Frames held.
    len: usize,
}

impl CaptureRing {
    /// `slots` slots of `slot_len` bytes each, allocated now.
    pub fn new(slots: usize, slot_len: usize) -> CaptureRing {
        CaptureRing {
            slots: (0..slots.max(1))
                .map(|_| Slot {
                    ts_ns: 0,
                    orig_len: 0,
                    len: 0,
                    dir: Direction::Rx,
                    data: vec![0; slot_len].into_boxed_slice(),
                })
                .collect(),
            head: 0,
            len: 0,
        }
    }

    /// Frames held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies `frame` (cut to the slot length) into the next free slot;
    /// `false` if every slot is taken.
    #[inline]
    pub fn push(&mut self, ts_ns: u64, dir: Direction, frame: &[u8]) -> bool {
        if self.len == self.slots.len() {
            return false;
        }
        let i = (self.head + self.len) % self.slots.len();
        let s = &mut self.slots[i];
        let n = frame.len().min(s.data.len());
        s.data[..n].copy_from_slice(&frame[..n]);
        s.ts_ns = ts_ns;
        s.orig_len = frame.len() as u32;
        s.len = n as u32;
        s.dir = dir;
        self.len += 1;
        true
    }

    /// Moves up to `max` frames, oldest first, into `out` (control side).
    pub fn drain_into(&mut self, max: usize, out: &mut Vec<CapturedFrame>) {
        let n = self.len.min(max);
        for _ in 0..n {
            let s = &self.slots[self.head];
            out.push(CapturedFrame {
                ts_ns: s.ts_ns,
                direction: s.dir,
                orig_len: s.orig_len,
                data: s.data[..s.len as usize].to_vec(),
            });
            self.head = (self.head + 1) % self.slots.len();
            self.len -= 1;
        }
    }
}

/// What a capture copies, and where the workers copy it to.
#[derive(Debug)]
pub struct Capture {
    port: PortId,
    direction: Direction,
    filter: Filter,
    snaplen: u32,
    count: u64,
    rings: Box<[Mutex<CaptureRing>]>,
    stored: AtomicU64,
    dropped: AtomicU64,
}

/// Settings of a capture.
#[derive(Debug, Clone)]
pub struct CaptureSpec {
    /// The port.
    pub port: PortId,
    /// What to take.
    pub direction: Direction,
    /// Which frames.
    pub filter: Filter,
    /// Bytes kept of each frame (the slot size is the smaller of this and
    /// [`MAX_SLOT_BYTES`]).
    pub snaplen: u32,
    /// Frames wanted; 0 for no limit. Workers stop copying once this many
    /// are stored (they may store a few more between them).
    pub count: u64,
}

impl Capture {
    /// Allocates a ring of `slots` for each of `workers` (control side).
    pub fn new(spec: CaptureSpec, workers: usize, slots: usize) -> Capture {
        let slot_len = (spec.snaplen.max(1) as usize).min(MAX_SLOT_BYTES);
        Capture {
            port: spec.port,
            direction: spec.direction,
            filter: spec.filter,
            snaplen: spec.snaplen.max(1),
            count: spec.count,
            rings: (0..workers.max(1))
                .map(|_| Mutex::new(CaptureRing::new(slots, slot_len)))
                .collect(),
            stored: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// The captured port.
    pub fn port(&self) -> PortId {
        self.port
    }

    /// The snap length asked for.
    pub fn snaplen(&self) -> u32 {
        self.snaplen
    }

    /// The direction asked for.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// The filter.
    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// Whether frames crossing `port` in `dir` are looked at.
    #[inline]
    pub fn wants(&self, port: PortId, dir: Direction) -> bool {
        port == self.port && self.direction.covers(dir)
    }

    /// Frames stored by workers so far.
    pub fn stored(&self) -> u64 {
        self.stored.load(Ordering::Relaxed)
    }

    /// Matching frames lost: a ring full or being drained.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Worker `w` offers the frames of one burst crossing the captured port
    /// in `dir` at `ts_ns`. One `try_lock`; never waits, never allocates.
    #[inline]
    pub fn take<'f>(
        &self,
        w: usize,
        dir: Direction,
        ts_ns: u64,
        frames: impl Iterator<Item = &'f [u8]>,
    ) {
        if self.count != 0 && self.stored.load(Ordering::Relaxed) >= self.count {
            return;
        }
        let Some(ring) = self.rings.get(w) else {
            return;
        };
        let mut guard = ring.try_lock().ok();
        let (mut stored, mut dropped) = (0u64, 0u64);
        for f in frames.filter(|f| self.filter.matches(f)) {
            if guard.as_mut().is_some_and(|r| r.push(ts_ns, dir, f)) {
                stored += 1;
            } else {
                dropped += 1;
            }
        }
        if stored > 0 {
            self.stored.fetch_add(stored, Ordering::Relaxed);
        }
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
    }

    /// Up to `max` frames from every worker's ring, in time order (control
    /// side; holds each ring's lock only while copying out of it).
    pub fn drain(&self, max: usize) -> Vec<CapturedFrame> {
        let mut out = Vec::new();
        for r in self.rings.iter() {
            let room = max.saturating_sub(out.len());
            if room == 0 {
                break;
            }
            r.lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain_into(room, &mut out);
        }
        out.sort_by_key(|f| f.ts_ns);
        out
    }
}

/// Wall-clock nanoseconds since the Unix epoch (a vDSO read, no syscall).
#[inline]
pub fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::craft;

    fn m(filter: &str, frame: &[u8]) -> bool {
        Filter::parse(filter).unwrap().matches(frame)
    }

    fn err(filter: &str) -> String {
        Filter::parse(filter).unwrap_err().to_string()
    }

    fn icmp_a_to_b() -> Vec<u8> {
        let ip = craft::Ip::new(craft::POD_A_IP, craft::POD_B_IP, ipv4::protocol::ICMP);
        craft::eth(
            craft::ROUTER_MAC,
            craft::POD_A_MAC,
            ethernet::ethertype::IPV4,
            &craft::ipv4_packet(ip, &craft::icmp_echo(1, 1, b"ping")),
        )
    }

    #[test]
    fn good_filters_parse_and_match_what_they_say() {
        let udp = craft::pod_a_udp(craft::POD_B_IP, 1000, 53, 10);
        let icmp = icmp_a_to_b();
        let arp = craft::arp_request(craft::POD_A_MAC, craft::POD_A_IP, craft::POD_B_IP);
        let tcp = {
            let ip = craft::Ip::new(craft::POD_B_IP, craft::POD_A_IP, ipv4::protocol::TCP);
            craft::eth(
                craft::POD_A_MAC,
                craft::ROUTER_MAC,
                ethernet::ethertype::IPV4,
                &craft::ipv4_packet(ip, &craft::tcp_syn(80, 40000)),
            )
        };
        assert!(m("", &udp) && m("  ", &arp));
        assert!(m("udp", &udp) && !m("udp", &icmp) && !m("udp", &arp));
        assert!(m("icmp", &icmp) && !m("icmp", &tcp));
        assert!(m("tcp", &tcp) && m("arp", &arp) && !m("arp", &udp));
        assert!(m("ip", &udp) && !m("ip", &arp));
        assert!(m("host 10.5.1.2", &udp) && m("host 10.5.1.3", &udp));
        assert!(m("src host 10.5.1.2", &udp) && !m("dst host 10.5.1.2", &udp));
        assert!(m("dst host 10.5.1.3", &udp));
        assert!(m("host 10.5.1.2", &arp), "ARP sender");
        assert!(m("dst host 10.5.1.3 and arp", &arp), "ARP target");
        assert!(m("net 10.5.1.0/24", &udp) && !m("net 10.6.0.0/16", &udp));
        assert!(m("src net 10.5.0.0/16", &tcp) && m("net 0.0.0.0/0", &tcp));
        assert!(m("port 53", &udp) && m("dst port 53", &udp) && !m("src port 53", &udp));
        assert!(m("port 80", &tcp) && m("src port 80", &tcp) && !m("port 53", &icmp));
        assert!(m("not icmp", &udp) && !m("! udp", &udp));
        assert!(m("icmp or udp", &udp) && m("icmp || udp", &icmp));
        assert!(!m("icmp and udp", &udp) && m("udp && port 53", &udp));
        assert!(m("(tcp or udp) and not port 22", &udp));
        assert!(!m("(tcp or udp) and not port 53", &udp));
        assert!(m("not (tcp or icmp)", &udp));
        // `and` binds tighter than `or`.
        assert!(m("udp or tcp and port 9", &udp));
        assert!(!m("(udp or tcp) and port 9", &udp));
        assert!(m("!(arp)", &udp) && m("(arp)or(udp)", &udp));
    }

    #[test]
    fn vxlan_matches_the_tunnel_and_host_the_outer_addresses() {
        let inner = craft::pod_a_udp(craft::REMOTE_POD_B, 1000, 2000, 8);
        let outer = craft::vxlan_frame(
            craft::UPLINK_MAC,
            craft::NODE_B_MAC,
            craft::NODE_B_IP,
            craft::NODE_A_IP,
            4789,
            1,
            &inner,
        );
        assert!(m("vxlan", &outer));
        assert!(m("udp and port 4789", &outer));
        assert!(m("host 192.168.50.2", &outer));
        assert!(!m("host 10.5.1.2", &outer), "outer headers only");
        assert!(!m("vxlan", &inner));
        assert!(!m("icmp", b"short"), "garbage matches no primitive");
        assert!(m("not icmp", b"short"));
    }

    #[test]
    fn bad_filters_say_what_and_where() {
        assert_eq!(
            err("tcpp"),
            "unknown primitive `tcpp`; expected host, net, port, src, dst, ip, icmp, tcp, udp, arp, vxlan, not or `(` (at character 1)"
        );
        assert_eq!(err("host"), "`host` needs an IPv4 address (at character 5)");
        assert_eq!(
            err("host 10.5.1"),
            "`10.5.1` is not an IPv4 address (at character 6)"
        );
        assert_eq!(
            err("port 70000"),
            "`70000` is not a port number (0 to 65535) (at character 6)"
        );
        assert_eq!(
            err("net 10.5.1.2"),
            "`10.5.1.2` is not a prefix A.B.C.D/LEN (at character 5)"
        );
        assert_eq!(
            err("net 10.5.1.0/33"),
            "prefix length `33` is not 0 to 32 (at character 5)"
        );
        assert_eq!(
            err("net 10.5.1.2/24"),
            "`10.5.1.2/24` has host bits set (the network is 10.5.1.0/24) (at character 5)"
        );
        assert_eq!(
            err("tcp udp"),
            "expected `and` or `or` before `udp` (at character 5)"
        );
        assert_eq!(
            err("(tcp or udp"),
            "`(` at character 1 is not closed (at character 12)"
        );
        assert_eq!(err("tcp)"), "unexpected `)` (at character 4)");
        assert_eq!(
            err("tcp and"),
            "expression ends early: expected a primitive (at character 8)"
        );
        assert_eq!(
            err("not"),
            "expression ends early: expected a primitive (at character 4)"
        );
        assert_eq!(
            err("src icmp"),
            "`src` must be followed by host, net or port, not `icmp` (at character 5)"
        );
        assert_eq!(
            err("host and"),
            "`host` needs an IPv4 address, found `and` (at character 6)"
        );
        assert_eq!(err("()"), "unexpected `)` (at character 2)");
        assert_eq!(
            err("tcp & udp").split(" (").next(),
            Some("expected `and` or `or` before `&`")
        );
    }

    #[test]
    fn a_full_ring_refuses_and_the_capture_counts_drops() {
        let mut r = CaptureRing::new(2, 4);
        assert!(r.push(1, Direction::Rx, &[1, 2, 3, 4, 5, 6]));
        assert!(r.push(2, Direction::Tx, &[7]));
        assert!(
            !r.push(3, Direction::Rx, &[8]),
            "full: refused, nothing overwritten"
        );
        let mut out = Vec::new();
        r.drain_into(1, &mut out);
        assert_eq!(
            out,
            vec![CapturedFrame {
                ts_ns: 1,
                direction: Direction::Rx,
                orig_len: 6,
                data: vec![1, 2, 3, 4],
            }]
        );
        assert!(r.push(4, Direction::Rx, &[9]), "room again after a drain");
        out.clear();
        r.drain_into(10, &mut out);
        assert_eq!(out.iter().map(|f| f.ts_ns).collect::<Vec<_>>(), vec![2, 4]);
        assert!(r.is_empty());

        let udp = craft::pod_a_udp(craft::POD_B_IP, 1000, 53, 10);
        let icmp = icmp_a_to_b();
        let cap = Capture::new(
            CaptureSpec {
                port: 2,
                direction: Direction::Rx,
                filter: Filter::parse("udp").unwrap(),
                snaplen: 262_144,
                count: 0,
            },
            2,
            3,
        );
        assert!(
            cap.wants(2, Direction::Rx)
                && !cap.wants(2, Direction::Tx)
                && !cap.wants(3, Direction::Rx)
        );
        let burst = [&udp[..], &icmp, &udp, &udp, &udp, &icmp];
        cap.take(0, Direction::Rx, 10, burst.iter().copied());
        assert_eq!((cap.stored(), cap.dropped()), (3, 1), "4 match, 3 slots");
        // The control side draining: the worker does not wait, it counts.
        let held = cap.rings[1].lock().unwrap();
        cap.take(1, Direction::Rx, 11, [&udp[..]].into_iter());
        drop(held);
        assert_eq!((cap.stored(), cap.dropped()), (3, 2));
        let got = cap.drain(100);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].data, udp);
        assert_eq!(got[0].orig_len as usize, udp.len());
        assert!(cap.drain(100).is_empty());
    }

    #[test]
    fn a_count_stops_the_copying() {
        let udp = craft::pod_a_udp(craft::POD_B_IP, 1000, 53, 10);
        let cap = Capture::new(
            CaptureSpec {
                port: 0,
                direction: Direction::Both,
                filter: Filter::default(),
                snaplen: 20,
                count: 2,
            },
            1,
            8,
        );
        cap.take(0, Direction::Tx, 1, [&udp[..]].into_iter());
        cap.take(0, Direction::Rx, 2, [&udp[..]].into_iter());
        cap.take(0, Direction::Rx, 3, [&udp[..]].into_iter());
        assert_eq!((cap.stored(), cap.dropped()), (2, 0));
        let got = cap.drain(8);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].data.len(), 20, "cut to the snap length");
        assert_eq!(got[0].direction, Direction::Tx);
    }
}
