//! Best-path selection over the peers' Adj-RIBs-In (RFC 4271 §9.1.2.2).
//!
//! sluice installs one path per prefix. Among the candidates the best is
//! the one with, in order: the highest LOCAL_PREF (100 when absent), the
//! shortest AS_PATH, the lowest ORIGIN, the lowest MED, eBGP over iBGP, a
//! path not kept stale through a restart, the lowest originator (ORIGINATOR_ID,
//! else the peer's BGP identifier), the lowest peer address. The order is
//! total, so the choice does not depend on the order the peers are listed.

use crate::message::Attrs;
use std::cmp::Ordering;
use std::net::Ipv4Addr;

/// One candidate path and where it came from.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// Its attributes.
    pub attrs: &'a Attrs,
    /// Learned over iBGP.
    pub ibgp: bool,
    /// Kept stale through the peer's restart.
    pub stale: bool,
    /// The peer's BGP identifier.
    pub peer_router_id: Ipv4Addr,
    /// The peer's address.
    pub peer: Ipv4Addr,
}

/// The best path the Loc-RIB holds for a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Best {
    /// Where packets go: the path's NEXT_HOP.
    pub next_hop: Ipv4Addr,
    /// The peer it came from.
    pub peer: Ipv4Addr,
}

fn key(c: &Candidate<'_>) -> impl Ord {
    (
        std::cmp::Reverse(c.attrs.local_pref.unwrap_or(100)),
        c.attrs.as_path_len,
        c.attrs.origin,
        c.attrs.med.unwrap_or(0),
        c.ibgp,
        c.stale,
        u32::from(c.attrs.originator_id.unwrap_or(c.peer_router_id)),
        u32::from(c.peer),
    )
}

/// Compares two candidates: `Less` means `a` is better.
pub fn compare(a: &Candidate<'_>, b: &Candidate<'_>) -> Ordering {
    key(a).cmp(&key(b))
}

/// The best of `candidates`.
pub fn best<'a>(candidates: impl IntoIterator<Item = Candidate<'a>>) -> Option<Best> {
    candidates.into_iter().min_by(compare).map(|c| Best {
        next_hop: c.attrs.next_hop,
        peer: c.peer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn attrs(lp: Option<u32>, path: u32, origin: u8, nh: u8) -> Attrs {
        Attrs {
            origin,
            as_path: (0..path).collect(),
            as_path_len: path,
            next_hop: Ipv4Addr::new(192, 168, 77, nh),
            local_pref: lp,
            med: None,
            originator_id: None,
        }
    }

    fn cand(a: &Attrs, peer: u8) -> Candidate<'_> {
        Candidate {
            attrs: a,
            ibgp: true,
            stale: false,
            peer_router_id: Ipv4Addr::new(1, 1, 1, peer),
            peer: Ipv4Addr::new(192, 168, 77, peer),
        }
    }

    #[test]
    fn the_rfc_order_decides() {
        let hi_pref = attrs(Some(200), 3, 2, 1);
        let short = attrs(None, 0, 2, 2);
        let igp = attrs(None, 0, 0, 3);
        assert_eq!(
            best([cand(&short, 2), cand(&hi_pref, 1)])
                .unwrap()
                .next_hop
                .octets()[3],
            1
        );
        assert_eq!(
            best([cand(&short, 2), cand(&igp, 3)])
                .unwrap()
                .next_hop
                .octets()[3],
            3
        );
        // Equal paths: the lowest router id.
        let a = attrs(None, 0, 0, 7);
        let b = attrs(None, 0, 0, 8);
        assert_eq!(
            best([cand(&b, 8), cand(&a, 9)]).unwrap().peer.octets()[3],
            8
        );
        assert_eq!(best(std::iter::empty()), None);
    }

    #[test]
    fn a_stale_path_announced_again_is_the_same_best() {
        // After a peer's flap, its path goes from stale to fresh: the
        // Loc-RIB entry (what the agent programs) does not change, so
        // sluiced sees neither a removal nor a new route.
        let a = attrs(None, 0, 0, 3);
        let stale = Candidate {
            stale: true,
            ..cand(&a, 3)
        };
        assert_eq!(best([stale]), best([cand(&a, 3)]));
    }

    proptest! {
        #[test]
        fn the_choice_does_not_depend_on_order(
            v in proptest::collection::vec((proptest::option::of(90u32..110), 0u32..3, 0u8..3, 1u8..20), 1..8),
            rot in 0usize..8,
        ) {
            let a: Vec<Attrs> = v.iter().map(|&(lp, p, o, nh)| attrs(lp, p, o, nh)).collect();
            let c: Vec<Candidate<'_>> = a.iter().enumerate().map(|(i, x)| cand(x, i as u8 + 1)).collect();
            let mut r = c.clone();
            r.rotate_left(rot % c.len());
            r.reverse();
            prop_assert_eq!(best(c.iter().copied()), best(r.iter().copied()));
            // The best is at least as good as every candidate.
            let b = c.iter().copied().min_by(compare).unwrap();
            for x in &c {
                prop_assert!(compare(&b, x) != Ordering::Greater);
            }
        }
    }
}
