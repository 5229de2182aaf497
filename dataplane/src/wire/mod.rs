//! Zero-copy views over packet headers, in the style of smoltcp's `wire`.
//!
//! Every protocol module offers a view type (`Packet<T>`, or `Frame<T>` for
//! Ethernet) wrapping any buffer `T: AsRef<[u8]>`: a `&[u8]` borrowed from a
//! port's receive ring, a `&mut [u8]` for rewriting in place, or a `Vec<u8>`
//! in tests. Fields are read and written directly in the buffer, in network
//! byte order, one byte at a time (`u16::from_be_bytes([b[i], b[i + 1]])`):
//! nothing is copied, nothing is allocated, and no struct is ever cast over
//! the bytes.
//!
//! # The length contract
//!
//! * `new_unchecked(buffer)` wraps the buffer and checks nothing.
//! * `check_len()` validates every length the view relies on: the fixed
//!   header, and any length fields (IPv4 IHL and total length, UDP length,
//!   TCP data offset, the Ethernet 802.1Q tag) against the buffer.
//! * `new_checked(buffer)` is `new_unchecked` followed by `check_len`.
//!
//! **If `check_len()` returned `Ok`, no getter, setter or payload accessor of
//! that view can panic.** A getter on a view that was never checked may panic
//! on a short buffer (it indexes the slice). The guarantee covers the buffer
//! as `check_len` saw it: a setter that changes a length-bearing field (IHL,
//! total length, UDP length, data offset, or the outer ethertype becoming
//! 802.1Q) voids it until `check_len` is called again.
//!
//! To emit a packet into a fresh buffer, the caller first makes sure the
//! buffer is long enough (e.g. `ipv4::HEADER_LEN + payload_len`), then wraps
//! it with `new_unchecked` and uses the setters (or a `Repr::emit`); checking
//! an uninitialised buffer would be meaningless.
//!
//! Accessors are tiny and `#[inline]`: they are on the per-packet hot path.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod ipip;
pub mod ipv4;
pub mod tcp;
pub mod udp;
pub mod vxlan;

pub use ethernet::MacAddr;

/// Why a buffer was rejected by a view's `check_len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Error {
    /// The buffer is shorter than the header, or than a length field claims
    /// (IPv4 IHL or total length, UDP length, TCP data offset beyond the
    /// buffer, 802.1Q tag).
    Truncated,
    /// IPv4 version field is not 4.
    BadVersion,
    /// IPv4 IHL below 5; TCP data offset below 5.
    BadHeaderLen,
    /// IPv4 total length smaller than the header; UDP length below 8.
    BadTotalLen,
    /// VXLAN flags without the I (valid VNI) bit.
    BadFlags,
    /// Well-formed but not something this view handles (e.g. ARP for
    /// non-Ethernet/IPv4, an outer IPv4 packet that is not IP-in-IP).
    Unsupported,
}

/// The result of checking a view.
pub type Result<T> = core::result::Result<T, Error>;

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Error::Truncated => "truncated packet",
            Error::BadVersion => "bad ip version",
            Error::BadHeaderLen => "bad header length",
            Error::BadTotalLen => "bad total length",
            Error::BadFlags => "bad flags",
            Error::Unsupported => "unsupported packet",
        })
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_display_is_short_and_lowercase() {
        for e in [
            Error::Truncated,
            Error::BadVersion,
            Error::BadHeaderLen,
            Error::BadTotalLen,
            Error::BadFlags,
            Error::Unsupported,
        ] {
            let s = e.to_string();
            assert!(!s.is_empty() && s.len() < 24, "{s}");
            assert_eq!(s, s.to_lowercase());
        }
    }
}
