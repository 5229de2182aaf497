//! BGP-4 messages as the speaker uses them, over NetGauze's codec.
//!
//! [`Message`] is the small view the session logic works on: an OPEN's
//! identity and the capabilities sluice negotiates (RFC 4760 IPv4 unicast,
//! RFC 6793 four-octet AS, RFC 2918 route refresh, RFC 4724 graceful
//! restart), an UPDATE's IPv4 unicast prefixes (classic fields or
//! MP_REACH/MP_UNREACH) with the attributes best-path selection needs.
//!
//! Invariants:
//! - [`frame`] checks the 19-byte header (marker, length, type) before a
//!   message is read whole, so a reader never waits for bytes a bad length
//!   announces: a bad header is a [`Notify`] (RFC 4271 §6.1) at once.
//! - [`decode`] never panics; everything wrong in a message becomes the
//!   NOTIFICATION the RFC names (code, subcode, data), either from the
//!   codec's parse errors or from the semantic checks here (missing
//!   well-known attributes: 3/3 with the type in the data, RFC 4271 §6.3;
//!   a bad NEXT_HOP: 3/8).
//! - [`Encoder`] splits announcements and withdrawals so no message
//!   exceeds 4096 bytes.

use ipnet::Ipv4Net as NgNet;
use netgauze_bgp_pkt::capabilities::{
    BgpCapability, FourOctetAsCapability, GracefulRestartAddressFamily, GracefulRestartCapability,
    MultiProtocolExtensionsCapability,
};
use netgauze_bgp_pkt::iana::RouteRefreshSubcode;
use netgauze_bgp_pkt::nlri::{Ipv4Unicast, Ipv4UnicastAddress};
use netgauze_bgp_pkt::notification::BgpNotificationMessage;
use netgauze_bgp_pkt::open::{BgpOpenMessage, BgpOpenMessageParameter};
use netgauze_bgp_pkt::path_attribute::{
    As4PathSegment, AsPath, AsPathSegmentType, LocalPreference, MpReach, MpUnreach,
    MultiExitDiscriminator, NextHop, Origin, PathAttribute, PathAttributeValue,
};
use netgauze_bgp_pkt::route_refresh::BgpRouteRefreshMessage;
use netgauze_bgp_pkt::update::BgpUpdateMessage;
use netgauze_bgp_pkt::wire::deserializer::BgpParsingContext;
use netgauze_bgp_pkt::BgpMessage;
use netgauze_iana::address_family::AddressType;
use netgauze_parse_utils::reader::SliceReader;
use netgauze_parse_utils::traits::ParseFromWithOneInput;
use netgauze_parse_utils::WritablePdu;
use sluice_api::Ipv4Net;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

/// The fixed header: 16-byte marker, 2-byte length, 1-byte type.
pub const HEADER_LEN: usize = 19;
/// RFC 4271's largest message (no RFC 8654 extended messages).
pub const MAX_LEN: usize = 4096;
/// `AS_TRANS` (RFC 6793), the 2-octet stand-in for a 4-octet AS.
pub const AS_TRANS: u16 = 23456;

/// A NOTIFICATION to send (or one received): code, subcode, data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    /// Error code (RFC 4271 §4.5).
    pub code: u8,
    /// Error subcode.
    pub subcode: u8,
    /// Data.
    pub data: Vec<u8>,
}

impl Notify {
    /// `code`/`subcode` with `data`.
    pub fn new(code: u8, subcode: u8, data: impl Into<Vec<u8>>) -> Self {
        Notify {
            code,
            subcode,
            data: data.into(),
        }
    }
    /// 4/0: hold timer expired.
    pub fn hold_timer_expired() -> Self {
        Notify::new(4, 0, [])
    }
    /// 6/2: administrative shutdown.
    pub fn shutdown() -> Self {
        Notify::new(6, 2, [])
    }
    /// 6/7: connection collision resolution.
    pub fn collision() -> Self {
        Notify::new(6, 7, [])
    }
    /// 5/`subcode`: an unexpected message in the current state (RFC 6608).
    pub fn fsm(subcode: u8) -> Self {
        Notify::new(5, subcode, [])
    }
    /// The RFC's name for the code and subcode.
    pub fn describe(&self) -> String {
        let code = match self.code {
            1 => "message header error",
            2 => "OPEN message error",
            3 => "UPDATE message error",
            4 => "hold timer expired",
            5 => "finite state machine error",
            6 => "cease",
            7 => "ROUTE-REFRESH message error",
            _ => "unknown error code",
        };
        let sub = match (self.code, self.subcode) {
            (1, 1) => "connection not synchronized",
            (1, 2) => "bad message length",
            (1, 3) => "bad message type",
            (2, 1) => "unsupported version number",
            (2, 2) => "bad peer AS",
            (2, 3) => "bad BGP identifier",
            (2, 4) => "unsupported optional parameter",
            (2, 6) => "unacceptable hold time",
            (2, 7) => "unsupported capability",
            (3, 1) => "malformed attribute list",
            (3, 2) => "unrecognized well-known attribute",
            (3, 3) => "missing well-known attribute",
            (3, 4) => "attribute flags error",
            (3, 5) => "attribute length error",
            (3, 6) => "invalid ORIGIN attribute",
            (3, 8) => "invalid NEXT_HOP attribute",
            (3, 9) => "optional attribute error",
            (3, 10) => "invalid network field",
            (3, 11) => "malformed AS_PATH",
            (5, 1) => "unexpected message in OpenSent",
            (5, 2) => "unexpected message in OpenConfirm",
            (5, 3) => "unexpected message in Established",
            (6, 1) => "maximum number of prefixes reached",
            (6, 2) => "administrative shutdown",
            (6, 3) => "peer de-configured",
            (6, 4) => "administrative reset",
            (6, 5) => "connection rejected",
            (6, 6) => "other configuration change",
            (6, 7) => "connection collision resolution",
            (6, 8) => "out of resources",
            (6, 9) => "hard reset",
            _ => "",
        };
        if sub.is_empty() {
            format!("{}/{} {code}", self.code, self.subcode)
        } else {
            format!("{}/{} {code}: {sub}", self.code, self.subcode)
        }
    }
}

impl std::fmt::Display for Notify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// RFC 4724 graceful restart capability, as far as sluice uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GracefulRestart {
    /// R: the sender has restarted.
    pub restarting: bool,
    /// Restart time, seconds.
    pub time: u16,
    /// IPv4 unicast is listed, and F (forwarding state preserved) for it.
    pub ipv4_forwarding: Option<bool>,
}

/// An OPEN, reduced to what the session negotiates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// The sender's AS: the four-octet capability's when present.
    pub asn: u32,
    /// `My Autonomous System` as sent (AS_TRANS for a large AS).
    pub my_as: u16,
    /// Proposed hold time, seconds.
    pub hold_time: u16,
    /// BGP identifier.
    pub router_id: Ipv4Addr,
    /// The OPEN carried optional parameters at all (BIRD assumes IPv4
    /// unicast only when it did not).
    pub has_params: bool,
    /// Multiprotocol capabilities listed (AFI, SAFI).
    pub families: Vec<(u16, u8)>,
    /// RFC 6793 capability present.
    pub asn4: bool,
    /// RFC 2918 capability present.
    pub route_refresh: bool,
    /// RFC 4724 capability.
    pub graceful_restart: Option<GracefulRestart>,
}

impl Open {
    /// IPv4 unicast is negotiable: listed, or no MP capability at all
    /// (RFC 4760 §8: then IPv4 unicast is implied).
    pub fn ipv4_unicast(&self) -> bool {
        self.families.is_empty() || self.families.contains(&(1, 1))
    }
}

/// Path attributes of an announcement.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attrs {
    /// ORIGIN: 0 IGP, 1 EGP, 2 incomplete.
    pub origin: u8,
    /// AS_PATH flattened (sets count as one, RFC 4271 §9.1.2.2).
    pub as_path: Vec<u32>,
    /// AS_PATH length for best-path selection.
    pub as_path_len: u32,
    /// NEXT_HOP (or MP_REACH's).
    pub next_hop: Ipv4Addr,
    /// LOCAL_PREF, if sent.
    pub local_pref: Option<u32>,
    /// MULTI_EXIT_DISC, if sent.
    pub med: Option<u32>,
    /// ORIGINATOR_ID (route reflection, RFC 4456).
    pub originator_id: Option<Ipv4Addr>,
}

/// An UPDATE's IPv4 unicast content.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Update {
    /// Withdrawn prefixes (classic field and MP_UNREACH).
    pub withdrawn: Vec<Ipv4Net>,
    /// Announced prefixes (classic NLRI and MP_REACH).
    pub announced: Vec<Ipv4Net>,
    /// Their attributes (present whenever `announced` is not empty).
    pub attrs: Option<Attrs>,
    /// An End-of-RIB marker for IPv4 unicast (RFC 4724 §2).
    pub end_of_rib: bool,
    /// Prefixes of other families, ignored (counted).
    pub other_families: usize,
}

/// A decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// OPEN.
    Open(Open),
    /// UPDATE.
    Update(Update),
    /// NOTIFICATION received.
    Notification(Notify),
    /// KEEPALIVE.
    Keepalive,
    /// ROUTE-REFRESH (AFI, SAFI).
    RouteRefresh(u16, u8),
}

impl Message {
    /// The message type's name (metrics label).
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Open(_) => "open",
            Message::Update(_) => "update",
            Message::Notification(_) => "notification",
            Message::Keepalive => "keepalive",
            Message::RouteRefresh(..) => "route_refresh",
        }
    }
}

/// Checks the header at the start of `buf`: `Ok(None)` while fewer than 19
/// bytes are there, `Ok(Some(len))` with the whole message's length, or the
/// header error to send.
pub fn frame(buf: &[u8]) -> Result<Option<usize>, Notify> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    if buf[..16].iter().any(|&b| b != 0xff) {
        return Err(Notify::new(1, 1, []));
    }
    let len = usize::from(u16::from_be_bytes([buf[16], buf[17]]));
    let kind = buf[18];
    let bad_len = || Notify::new(1, 2, (len as u16).to_be_bytes());
    if !(HEADER_LEN..=MAX_LEN).contains(&len) {
        return Err(bad_len());
    }
    let ok = match kind {
        1 => len >= 29,
        2 => len >= 23,
        3 => len >= 21,
        4 => len == HEADER_LEN,
        5 => len == 23,
        _ => return Err(Notify::new(1, 3, [kind])),
    };
    if !ok {
        return Err(bad_len());
    }
    Ok(Some(len))
}

fn net(n: &NgNet) -> Option<Ipv4Net> {
    Ipv4Net::new(n.network(), n.prefix_len())
}

fn notification_of(n: &BgpNotificationMessage) -> Notify {
    let mut w = Vec::with_capacity(64);
    match BgpMessage::Notification(n.clone()).write(&mut w) {
        Ok(()) if w.len() >= 21 => Notify::new(w[19], w[20], &w[21..]),
        _ => Notify::new(1, 0, []),
    }
}

/// A parsing context: four-octet AS paths or not, strict attributes.
fn context(asn4: bool) -> BgpParsingContext {
    BgpParsingContext::new(asn4, HashMap::new(), HashMap::new(), true, true, true, true)
}

/// Decodes one whole message (as [`frame`] delimited it). `asn4`: AS
/// numbers in AS_PATH are four octets (negotiated).
pub fn decode(bytes: &[u8], asn4: bool) -> Result<Message, Notify> {
    frame(bytes)?;
    let mut ctx = context(asn4);
    let mut cur = SliceReader::new(bytes);
    let msg = BgpMessage::parse(&mut cur, &mut ctx).map_err(|e| {
        let n: BgpNotificationMessage = e.into();
        notification_of(&n)
    })?;
    Ok(match msg {
        BgpMessage::Open(o) => Message::Open(open_of(&o)),
        BgpMessage::Update(u) => Message::Update(update_of(&u)?),
        BgpMessage::Notification(n) => Message::Notification(notification_of(&n)),
        BgpMessage::KeepAlive => Message::Keepalive,
        BgpMessage::RouteRefresh(r) => {
            let t = r.address_type();
            Message::RouteRefresh(
                t.address_family() as u16,
                t.subsequent_address_family() as u8,
            )
        }
    })
}

fn open_of(o: &BgpOpenMessage) -> Open {
    let mut open = Open {
        asn: u32::from(o.my_as()),
        my_as: o.my_as(),
        hold_time: o.hold_time(),
        router_id: o.bgp_id(),
        has_params: !o.params().is_empty(),
        families: Vec::new(),
        asn4: false,
        route_refresh: false,
        graceful_restart: None,
    };
    for c in o.capabilities() {
        match c {
            BgpCapability::MultiProtocolExtensions(m) => {
                let t = m.address_type();
                open.families.push((
                    t.address_family() as u16,
                    t.subsequent_address_family() as u8,
                ));
            }
            BgpCapability::FourOctetAs(a) => {
                open.asn4 = true;
                open.asn = a.asn4();
            }
            BgpCapability::RouteRefresh | BgpCapability::EnhancedRouteRefresh => {
                open.route_refresh = true
            }
            BgpCapability::GracefulRestartCapability(g) => {
                open.graceful_restart = Some(GracefulRestart {
                    restarting: g.restart(),
                    time: g.time(),
                    ipv4_forwarding: g
                        .address_families()
                        .iter()
                        .find(|f| f.address_type() == AddressType::Ipv4Unicast)
                        .map(|f| f.forwarding_state()),
                })
            }
            _ => {}
        }
    }
    open
}

fn update_of(u: &BgpUpdateMessage) -> Result<Update, Notify> {
    let mut up = Update::default();
    if u.end_of_rib() == Some(AddressType::Ipv4Unicast) {
        up.end_of_rib = true;
        return Ok(up);
    }
    up.withdrawn = u
        .withdraw_routes()
        .iter()
        .filter_map(|a| net(&a.network().address()))
        .collect();
    up.announced = u
        .nlri()
        .iter()
        .filter_map(|a| net(&a.network().address()))
        .collect();
    let (mut origin, mut as_path, mut next_hop) = (None, None, None);
    let (mut local_pref, mut med, mut originator_id) = (None, None, None);
    let mut mp_next_hop = None;
    for a in u.path_attributes() {
        match a.value() {
            PathAttributeValue::Origin(o) => origin = Some(*o as u8),
            PathAttributeValue::AsPath(p) => {
                let mut flat = Vec::new();
                let mut len = 0u32;
                match p {
                    AsPath::As2PathSegments(segs) => {
                        for s in segs.iter() {
                            flat.extend(s.as_numbers().iter().map(|&n| u32::from(n)));
                            len += seg_len(s.segment_type(), s.as_numbers().len());
                        }
                    }
                    AsPath::As4PathSegments(segs) => {
                        for s in segs.iter() {
                            flat.extend_from_slice(s.as_numbers());
                            len += seg_len(s.segment_type(), s.as_numbers().len());
                        }
                    }
                }
                as_path = Some((flat, len));
            }
            PathAttributeValue::NextHop(n) => next_hop = Some(n.next_hop()),
            PathAttributeValue::LocalPreference(l) => local_pref = Some(l.metric()),
            PathAttributeValue::MultiExitDiscriminator(m) => med = Some(m.metric()),
            PathAttributeValue::Originator(o) => originator_id = Some(o.id()),
            PathAttributeValue::MpReach(MpReach::Ipv4Unicast { next_hop, nlri, .. }) => {
                match next_hop {
                    IpAddr::V4(v4) => mp_next_hop = Some(*v4),
                    // RFC 8950 IPv6 next hops for IPv4 are not negotiated.
                    IpAddr::V6(_) => return Err(Notify::new(3, 8, [])),
                }
                up.announced
                    .extend(nlri.iter().filter_map(|a| net(&a.network().address())));
            }
            PathAttributeValue::MpUnreach(MpUnreach::Ipv4Unicast { nlri }) => {
                up.withdrawn
                    .extend(nlri.iter().filter_map(|a| net(&a.network().address())));
            }
            PathAttributeValue::MpReach(_) | PathAttributeValue::MpUnreach(_) => {
                up.other_families += 1;
            }
            _ => {}
        }
    }
    if up.announced.is_empty() {
        if up.withdrawn.is_empty()
            && up.other_families == 0
            && u.path_attributes().iter().any(|a| {
                matches!(
                    a.value(),
                    PathAttributeValue::MpUnreach(MpUnreach::Ipv4Unicast { .. })
                )
            })
        {
            up.end_of_rib = true;
        }
        return Ok(up);
    }
    // RFC 4271 §6.3: the well-known mandatory attributes; the data is the
    // missing attribute's type code.
    let origin = origin.ok_or_else(|| Notify::new(3, 3, [1]))?;
    let (as_path, as_path_len) = as_path.ok_or_else(|| Notify::new(3, 3, [2]))?;
    let next_hop = match (mp_next_hop, next_hop) {
        (Some(n), _) => n,
        (None, Some(n)) => n,
        (None, None) => return Err(Notify::new(3, 3, [3])),
    };
    if next_hop.is_unspecified() || next_hop.is_multicast() || next_hop.is_broadcast() {
        return Err(Notify::new(3, 8, next_hop.octets()));
    }
    up.attrs = Some(Attrs {
        origin,
        as_path,
        as_path_len,
        next_hop,
        local_pref,
        med,
        originator_id,
    });
    Ok(up)
}

fn seg_len(t: AsPathSegmentType, n: usize) -> u32 {
    match t {
        AsPathSegmentType::AsSet => u32::from(n > 0),
        AsPathSegmentType::AsSequence => n as u32,
    }
}

fn write(msg: BgpMessage) -> Vec<u8> {
    let mut w = Vec::with_capacity(64);
    // Writing into a Vec fails only for values the codec cannot represent;
    // every message here is built from valid parts.
    if let Err(e) = msg.write(&mut w) {
        tracing::error!("encoding a BGP message: {e:?}");
        w.clear();
    }
    w
}

/// What this speaker says in its OPEN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalOpen {
    /// Local AS.
    pub asn: u32,
    /// Proposed hold time.
    pub hold_time: u16,
    /// BGP identifier.
    pub router_id: Ipv4Addr,
    /// Graceful restart: restart time, restarting (R), forwarding kept (F).
    pub graceful_restart: Option<GracefulRestart>,
}

/// An OPEN with MP IPv4 unicast, four-octet AS, route refresh and (when
/// set) graceful restart.
pub fn encode_open(o: &LocalOpen) -> Vec<u8> {
    let my_as = u16::try_from(o.asn).unwrap_or(AS_TRANS);
    let mut caps = vec![
        BgpCapability::MultiProtocolExtensions(MultiProtocolExtensionsCapability::new(
            AddressType::Ipv4Unicast,
        )),
        BgpCapability::RouteRefresh,
        BgpCapability::FourOctetAs(FourOctetAsCapability::new(o.asn)),
    ];
    if let Some(gr) = o.graceful_restart {
        caps.push(BgpCapability::GracefulRestartCapability(
            GracefulRestartCapability::new(
                gr.restarting,
                false,
                gr.time.min(4095),
                vec![GracefulRestartAddressFamily::new(
                    gr.ipv4_forwarding.unwrap_or(false),
                    AddressType::Ipv4Unicast,
                )],
            ),
        ));
    }
    write(BgpMessage::Open(BgpOpenMessage::new(
        my_as,
        o.hold_time,
        o.router_id,
        vec![BgpOpenMessageParameter::Capabilities(caps.into())],
    )))
}

/// A KEEPALIVE.
pub fn encode_keepalive() -> Vec<u8> {
    write(BgpMessage::KeepAlive)
}

/// A NOTIFICATION (written by hand: any code and subcode, as received).
pub fn encode_notification(n: &Notify) -> Vec<u8> {
    let len = HEADER_LEN + 2 + n.data.len().min(MAX_LEN - HEADER_LEN - 2);
    let mut w = vec![0xff; 16];
    w.extend_from_slice(&(len as u16).to_be_bytes());
    w.push(3);
    w.push(n.code);
    w.push(n.subcode);
    w.extend_from_slice(&n.data[..len - HEADER_LEN - 2]);
    w
}

/// A ROUTE-REFRESH for IPv4 unicast.
pub fn encode_route_refresh() -> Vec<u8> {
    write(BgpMessage::RouteRefresh(BgpRouteRefreshMessage::new(
        AddressType::Ipv4Unicast,
        RouteRefreshSubcode::NormalRequest,
    )))
}

/// The End-of-RIB marker for IPv4 unicast: an empty UPDATE.
pub fn encode_end_of_rib() -> Vec<u8> {
    write(BgpMessage::Update(BgpUpdateMessage::new(
        vec![],
        vec![],
        vec![],
    )))
}

/// How announcements are attributed towards one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoder {
    /// Local AS.
    pub local_asn: u32,
    /// iBGP (LOCAL_PREF sent, AS_PATH empty) or eBGP (own AS prepended).
    pub ibgp: bool,
    /// The peer reads four-octet AS numbers.
    pub asn4: bool,
    /// NEXT_HOP: this node's address.
    pub next_hop: Ipv4Addr,
}

fn unicast(p: &Ipv4Net) -> Option<Ipv4UnicastAddress> {
    let n = NgNet::new(p.addr(), p.len()).ok()?;
    Ipv4Unicast::from_net(n.trunc())
        .ok()
        .map(Ipv4UnicastAddress::new_no_path_id)
}

/// Prefixes per UPDATE: 5 bytes each at most, well inside 4096 with the
/// attributes.
const PREFIXES_PER_UPDATE: usize = 700;

impl Encoder {
    fn attrs(&self) -> Vec<PathAttribute> {
        let mut v = Vec::with_capacity(4);
        let mut push = |opt: bool, trans: bool, val| {
            if let Ok(a) = PathAttribute::from(opt, trans, false, false, val) {
                v.push(a);
            }
        };
        push(false, true, PathAttributeValue::Origin(Origin::IGP));
        let path: Vec<u32> = if self.ibgp {
            vec![]
        } else {
            vec![self.local_asn]
        };
        let as_path = if self.asn4 {
            AsPath::As4PathSegments(if path.is_empty() {
                vec![].into()
            } else {
                vec![As4PathSegment::new(AsPathSegmentType::AsSequence, path)].into()
            })
        } else {
            let two: Vec<u16> = path
                .iter()
                .map(|&a| u16::try_from(a).unwrap_or(AS_TRANS))
                .collect();
            AsPath::As2PathSegments(if two.is_empty() {
                vec![].into()
            } else {
                vec![netgauze_bgp_pkt::path_attribute::As2PathSegment::new(
                    AsPathSegmentType::AsSequence,
                    two,
                )]
                .into()
            })
        };
        push(false, true, PathAttributeValue::AsPath(as_path));
        push(
            false,
            true,
            PathAttributeValue::NextHop(NextHop::new(self.next_hop)),
        );
        if self.ibgp {
            push(
                false,
                true,
                PathAttributeValue::LocalPreference(LocalPreference::new(100)),
            );
        } else {
            push(
                true,
                false,
                PathAttributeValue::MultiExitDiscriminator(MultiExitDiscriminator::new(0)),
            );
        }
        v
    }

    /// UPDATEs announcing `prefixes` (this node's blocks), split to size.
    pub fn announce(&self, prefixes: &[Ipv4Net]) -> Vec<Vec<u8>> {
        prefixes
            .chunks(PREFIXES_PER_UPDATE)
            .map(|c| {
                let nlri: Vec<_> = c.iter().filter_map(unicast).collect();
                write(BgpMessage::Update(BgpUpdateMessage::new(
                    vec![],
                    self.attrs(),
                    nlri,
                )))
            })
            .collect()
    }

    /// UPDATEs withdrawing `prefixes`.
    pub fn withdraw(&self, prefixes: &[Ipv4Net]) -> Vec<Vec<u8>> {
        prefixes
            .chunks(PREFIXES_PER_UPDATE)
            .map(|c| {
                let w: Vec<_> = c.iter().filter_map(unicast).collect();
                write(BgpMessage::Update(BgpUpdateMessage::new(w, vec![], vec![])))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    const MARKER: &str = "ffffffffffffffffffffffffffffffff";

    #[test]
    fn an_open_round_trips_with_every_capability() {
        let o = LocalOpen {
            asn: 4_200_000_001,
            hold_time: 90,
            router_id: Ipv4Addr::new(192, 168, 77, 1),
            graceful_restart: Some(GracefulRestart {
                restarting: true,
                time: 120,
                ipv4_forwarding: Some(true),
            }),
        };
        let bytes = encode_open(&o);
        assert_eq!(frame(&bytes), Ok(Some(bytes.len())));
        let Message::Open(d) = decode(&bytes, false).unwrap() else {
            panic!("not an OPEN")
        };
        assert_eq!(d.asn, 4_200_000_001);
        assert_eq!(d.my_as, AS_TRANS);
        assert_eq!(d.hold_time, 90);
        assert_eq!(d.router_id, o.router_id);
        assert!(d.asn4 && d.route_refresh && d.ipv4_unicast());
        assert_eq!(d.families, vec![(1, 1)]);
        assert_eq!(d.graceful_restart, o.graceful_restart);
    }

    #[test]
    fn birds_open_fixture_decodes() {
        // OPEN from BIRD 2.0.12: AS 64512, hold 240, id 192.168.77.3; caps
        // MP(1,1), route refresh, extended next hop absent, GR (restart time
        // 120, ipv4 unicast, F=0), 4-octet AS 64512, enhanced route refresh.
        let b = hex(&format!(
            "{MARKER} 0037 01 04 fc00 00f0 c0a84d03 1a 02 18
             0104 00010001  0200  4006 0078 0001 0100  4104 0000fc00  4600"
        ));
        let Message::Open(o) = decode(&b, false).unwrap() else {
            panic!()
        };
        assert_eq!((o.asn, o.hold_time), (64512, 240));
        assert_eq!(o.router_id, Ipv4Addr::new(192, 168, 77, 3));
        assert_eq!(
            o.graceful_restart,
            Some(GracefulRestart {
                restarting: false,
                time: 120,
                ipv4_forwarding: Some(false)
            })
        );
        assert!(o.route_refresh && o.asn4 && o.has_params);
    }

    #[test]
    fn an_update_round_trips_and_splits_at_4096_bytes() {
        let e = Encoder {
            local_asn: 64512,
            ibgp: true,
            asn4: true,
            next_hop: Ipv4Addr::new(192, 168, 77, 1),
        };
        let prefixes: Vec<Ipv4Net> = (0..2000u32)
            .map(|i| Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).unwrap())
            .collect();
        let msgs = e.announce(&prefixes);
        assert_eq!(msgs.len(), 3);
        let mut seen = Vec::new();
        for m in &msgs {
            assert!(m.len() <= MAX_LEN, "{}", m.len());
            let Message::Update(u) = decode(m, true).unwrap() else {
                panic!()
            };
            let a = u.attrs.unwrap();
            assert_eq!(a.next_hop, e.next_hop);
            assert_eq!(a.local_pref, Some(100));
            assert!(a.as_path.is_empty());
            seen.extend(u.announced);
        }
        assert_eq!(seen, prefixes);
        let w = e.withdraw(&[n("10.77.1.0/24")]);
        let Message::Update(u) = decode(&w[0], true).unwrap() else {
            panic!()
        };
        assert_eq!(u.withdrawn, vec![n("10.77.1.0/24")]);
        assert!(u.announced.is_empty() && !u.end_of_rib);
        let Message::Update(u) = decode(&encode_end_of_rib(), true).unwrap() else {
            panic!()
        };
        assert!(u.end_of_rib);
    }

    #[test]
    fn an_ebgp_update_for_a_two_octet_peer_uses_as_trans() {
        let e = Encoder {
            local_asn: 4_200_000_000,
            ibgp: false,
            asn4: false,
            next_hop: Ipv4Addr::new(10, 0, 0, 1),
        };
        let m = &e.announce(&[n("10.77.1.0/24")])[0];
        let Message::Update(u) = decode(m, false).unwrap() else {
            panic!()
        };
        let a = u.attrs.unwrap();
        assert_eq!(a.as_path, vec![u32::from(AS_TRANS)]);
        assert_eq!(a.local_pref, None);
        assert_eq!(a.med, Some(0));
    }

    #[test]
    fn header_errors_are_named_before_the_body_arrives() {
        assert_eq!(frame(&[0xff; 10]), Ok(None));
        let mut b = hex(&format!("{MARKER} 0013 04"));
        assert_eq!(frame(&b), Ok(Some(19)));
        b[3] = 0;
        assert_eq!(frame(&b).unwrap_err().subcode, 1);
        let b = hex(&format!("{MARKER} 1001 03"));
        assert_eq!(frame(&b).unwrap_err(), Notify::new(1, 2, [0x10, 0x01]));
        let b = hex(&format!("{MARKER} 0014 04"));
        assert_eq!(frame(&b).unwrap_err(), Notify::new(1, 2, [0, 0x14]));
        let b = hex(&format!("{MARKER} 0013 09"));
        assert_eq!(frame(&b).unwrap_err(), Notify::new(1, 3, [9]));
    }

    #[test]
    fn bad_opens_get_their_rfc_codes() {
        // Version 3.
        let b = hex(&format!("{MARKER} 001d 01 03 fc00 00f0 c0a84d03 00"));
        let e = decode(&b, false).unwrap_err();
        assert_eq!((e.code, e.subcode), (2, 1), "{e}");
        // Hold time 2.
        let b = hex(&format!("{MARKER} 001d 01 04 fc00 0002 c0a84d03 00"));
        let e = decode(&b, false).unwrap_err();
        assert_eq!((e.code, e.subcode), (2, 6), "{e}");
        // Optional parameter type 9.
        let b = hex(&format!(
            "{MARKER} 0020 01 04 fc00 00f0 c0a84d03 03 09 01 00"
        ));
        let e = decode(&b, false).unwrap_err();
        assert_eq!((e.code, e.subcode), (2, 4), "{e}");
    }

    #[test]
    fn bad_updates_get_their_rfc_codes() {
        // NLRI 10.77.9.0/24 without attributes: ORIGIN missing.
        let b = {
            let mut v = hex(&format!("{MARKER} 001b 02 0000 0000 180a4d09"));
            v[17] = v.len() as u8;
            v
        };
        assert_eq!(decode(&b, true).unwrap_err(), Notify::new(3, 3, [1]));
        // ORIGIN 7.
        let mut v = hex(&format!("{MARKER} 0000 02 0000 0004 40010107 180a4d09"));
        v[17] = v.len() as u8;
        let e = decode(&v, true).unwrap_err();
        assert_eq!((e.code, e.subcode), (3, 6), "{e}");
        // ORIGIN flagged optional.
        let mut v = hex(&format!("{MARKER} 0000 02 0000 0004 c0010100 180a4d09"));
        v[17] = v.len() as u8;
        let e = decode(&v, true).unwrap_err();
        assert_eq!((e.code, e.subcode), (3, 4), "{e}");
        // Attribute length running past the message.
        let mut v = hex(&format!("{MARKER} 0000 02 0000 0004 400109 00 180a4d09"));
        v[17] = v.len() as u8;
        let e = decode(&v, true).unwrap_err();
        assert_eq!(e.code, 3, "{e}");
        // NEXT_HOP 0.0.0.0 with ORIGIN and an empty AS_PATH.
        let mut v = hex(&format!(
            "{MARKER} 0000 02 0000 000e 40010100 400200 40030400000000 180a4d09"
        ));
        v[17] = v.len() as u8;
        assert_eq!(
            decode(&v, true).unwrap_err(),
            Notify::new(3, 8, [0, 0, 0, 0])
        );
    }

    #[test]
    fn notifications_round_trip_and_are_described() {
        let n = Notify::new(2, 2, [0xfc, 0]);
        let b = encode_notification(&n);
        assert_eq!(decode(&b, false).unwrap(), Message::Notification(n.clone()));
        assert_eq!(n.describe(), "2/2 OPEN message error: bad peer AS");
        assert_eq!(
            decode(&encode_route_refresh(), true).unwrap(),
            Message::RouteRefresh(1, 1)
        );
        assert_eq!(
            decode(&encode_keepalive(), true).unwrap(),
            Message::Keepalive
        );
    }
}
