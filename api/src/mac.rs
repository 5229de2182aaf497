//! A 48-bit Ethernet MAC address, written `aa:bb:cc:dd:ee:ff`.

use core::fmt;
use core::str::FromStr;

/// A 48-bit Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// 00:00:00:00:00:00.
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// The six octets.
    #[inline]
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// Whether this is ff:ff:ff:ff:ff:ff.
    #[inline]
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// Whether the I/G (group) bit is set; broadcast is multicast too.
    #[inline]
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Whether the I/G bit is clear.
    #[inline]
    pub const fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// Writes `aa:bb:cc:dd:ee:ff` (lowercase) into a stack buffer.
    fn to_text(self) -> [u8; 17] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [b':'; 17];
        for (i, b) in self.0.iter().enumerate() {
            out[i * 3] = HEX[usize::from(b >> 4)];
            out[i * 3 + 1] = HEX[usize::from(b & 0x0f)];
        }
        out
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(octets: [u8; 6]) -> Self {
        MacAddr(octets)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A string that is not a MAC address of the form `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseMacError {
    input: String,
}

impl ParseMacError {
    /// The rejected input.
    pub fn input(&self) -> &str {
        &self.input
    }
}

impl fmt::Display for ParseMacError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid MAC address {:?} (expected aa:bb:cc:dd:ee:ff)",
            self.input
        )
    }
}

impl std::error::Error for ParseMacError {}

impl FromStr for MacAddr {
    type Err = ParseMacError;

    /// Parses six colon-separated pairs of hex digits (either case).
    fn from_str(s: &str) -> core::result::Result<Self, Self::Err> {
        fn hex(c: u8) -> Option<u8> {
            match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                b'A'..=b'F' => Some(c - b'A' + 10),
                _ => None,
            }
        }
        let err = || ParseMacError {
            input: s.to_owned(),
        };
        let b = s.as_bytes();
        if b.len() != 17 {
            return Err(err());
        }
        let mut out = [0u8; 6];
        for (i, o) in out.iter_mut().enumerate() {
            let at = i * 3;
            if i > 0 && b[at - 1] != b':' {
                return Err(err());
            }
            let hi = hex(b[at]).ok_or_else(err)?;
            let lo = hex(b[at + 1]).ok_or_else(err)?;
            *o = hi << 4 | lo;
        }
        Ok(MacAddr(out))
    }
}

impl serde::Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> core::result::Result<S::Ok, S::Error> {
        let text = self.to_text();
        // Only ASCII hex digits and colons were written.
        let s = core::str::from_utf8(&text).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(s)
    }
}

impl<'de> serde::Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> core::result::Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST_A: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);

    #[test]
    fn mac_predicates() {
        assert!(MacAddr::BROADCAST.is_broadcast());
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!(!MacAddr::BROADCAST.is_unicast());
        let mcast = MacAddr([0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]);
        assert!(mcast.is_multicast() && !mcast.is_broadcast());
        assert!(HOST_A.is_unicast() && !HOST_A.is_multicast());
        assert!(MacAddr::ZERO.is_unicast());
        assert_eq!(MacAddr::default(), MacAddr::ZERO);
        assert_eq!(HOST_A.octets(), [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        assert_eq!(MacAddr::from([1, 2, 3, 4, 5, 6]).0, [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn mac_display_and_parse() {
        let m = MacAddr([0x0a, 0x58, 0xff, 0x00, 0xbc, 0x09]);
        assert_eq!(m.to_string(), "0a:58:ff:00:bc:09");
        assert_eq!(format!("{m:?}"), "0a:58:ff:00:bc:09");
        assert_eq!("0a:58:ff:00:bc:09".parse::<MacAddr>().unwrap(), m);
        assert_eq!("0A:58:FF:00:Bc:09".parse::<MacAddr>().unwrap(), m);
        assert_eq!(core::str::from_utf8(&m.to_text()).unwrap(), m.to_string());
        for bad in [
            "",
            "0a:58:ff:00:bc",
            "0a:58:ff:00:bc:09:",
            "0a:58:ff:00:bc:0g",
            "0a-58-ff-00-bc-09",
            "0a:58:ff:00:bc:+9",
            "0a:58:ff:00:bc: 9",
            "0a:58:ff:00:bc:009",
            "a:58:ff:00:bc:09",
            "0a:58:ff:00:bc:é",
        ] {
            let e = bad.parse::<MacAddr>().unwrap_err();
            assert_eq!(e.input(), bad);
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn mac_serde_round_trip() {
        let m = MacAddr([0xee, 0xa1, 0xb2, 0xc3, 0xd4, 0xe5]);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, "\"ee:a1:b2:c3:d4:e5\"");
        assert_eq!(serde_json::from_str::<MacAddr>(&json).unwrap(), m);
        assert_eq!(
            serde_json::from_str::<MacAddr>("\"EE:A1:B2:C3:D4:E5\"").unwrap(),
            m
        );
        let err = serde_json::from_str::<MacAddr>("\"ee:a1\"").unwrap_err();
        assert!(err.to_string().contains("ee:a1"), "{err}");
        assert!(serde_json::from_str::<MacAddr>("17").is_err());
    }
}
