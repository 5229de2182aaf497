//! Stage 3: L3. TTL check, then the flow cache in front of the route table.
//!
//! The flow cache maps an exact flow key to an adjacency index. An entry of
//! another tables generation is kept only if no route change since covers
//! its destination (`Tables::cached_route_valid`), so a route change is seen
//! by the very next packet while flows elsewhere stay cached. On a miss the longest-prefix match decides and the
//! result is cached. The key's hash is kept: it is the VXLAN source-port
//! entropy too.

use super::{Meta, Next};
use crate::counters::{DropReason, WorkerCounters};
use crate::fib::flow_cache::{FlowCache, FlowKey};
use crate::tables::Tables;

pub(crate) fn l3_burst(
    t: &Tables,
    meta: &mut [Meta],
    cache: &mut FlowCache<u32>,
    c: &WorkerCounters,
) {
    let (mut hits, mut misses) = (0u64, 0u64);
    for m in meta.iter_mut() {
        if m.next != Next::L3 {
            continue;
        }
        // The TTL parse read from the header (which nothing has changed since).
        if m.ttl <= 1 {
            m.next = Next::TimeExceeded;
            continue;
        }
        m.hash = m.key.hash();
        match route(t, cache, &m.key, m.hash) {
            (Some(adj), hit) => {
                if hit {
                    hits += 1;
                } else {
                    misses += 1;
                }
                m.adj = adj;
            }
            (None, _) => {
                misses += 1;
                m.next = Next::Drop(DropReason::NoRoute);
            }
        }
    }
    c.events.flow_cache_hits.add(hits);
    c.events.flow_cache_misses.add(misses);
}

/// The adjacency for `key` through the flow cache, and whether it was a hit:
/// a current entry, or an older one no route change since has touched; else
/// the route table decides and the answer is cached.
#[inline]
pub(crate) fn route(
    t: &Tables,
    cache: &mut FlowCache<u32>,
    key: &FlowKey,
    hash: u32,
) -> (Option<u32>, bool) {
    let dst = key.dst;
    if let Some(adj) =
        cache.lookup_revalidate(key, hash, t.generation, |g| t.cached_route_valid(g, dst))
    {
        return (Some(adj), true);
    }
    match t.lpm.lookup(dst) {
        Some(adj) => {
            cache.insert(*key, hash, t.generation, adj);
            (Some(adj), false)
        }
        None => (None, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{NodeConfig, RouteConfig, Via};
    use crate::tables::{TablesEditor, TablesHandle};
    use proptest::prelude::*;
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    #[derive(Debug, Clone)]
    enum Op {
        Add(u32, u8, u8),
        Remove(u32, u8),
        Neighbour(u8),
    }

    /// Prefixes around 10.7.0.0/16 so they nest and overlap often.
    fn net(a: u32, len: u8) -> crate::config::Ipv4Net {
        let a = 0x0a07_0000 | (a & 0xffff);
        let m = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        crate::config::Ipv4Net::new(Ipv4Addr::from(a & m), len).unwrap()
    }

    fn route(n: crate::config::Ipv4Net, via: u8) -> RouteConfig {
        let node = Ipv4Addr::new(192, 168, 50, 20 + via % 4);
        let (via, node, vtep_mac) = match via % 3 {
            0 => (Via::Ipip, Some(node), None),
            1 => (
                Via::Vxlan,
                Some(node),
                Some("02:00:00:00:cc:01".parse().unwrap()),
            ),
            _ => (Via::Blackhole, None, None),
        };
        RouteConfig {
            prefix: n,
            via,
            node,
            vtep_mac,
            port: None,
        }
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => (any::<u32>(), 14u8..=32, any::<u8>()).prop_map(|(a, l, v)| Op::Add(a, l, v)),
            3 => (any::<u32>(), 14u8..=32).prop_map(|(a, l)| Op::Remove(a, l)),
            1 => any::<u8>().prop_map(Op::Neighbour),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Through any sequence of incremental changes, the lazily
        /// revalidated flow cache answers what a fresh route-table lookup
        /// answers, and the edited tables route as tables built whole.
        #[test]
        fn revalidated_cache_equals_fresh_lookup(
            ops in prop::collection::vec(op(), 1..60),
            dsts in prop::collection::vec(any::<u16>(), 48),
        ) {
            let cfg = NodeConfig::from_toml_str(crate::craft::REFERENCE_NODE).unwrap();
            let handle = Arc::new(TablesHandle::new(Tables::from_config(&cfg).unwrap()));
            let mut ed = TablesEditor::new(cfg, handle.clone());
            let mut cache = FlowCache::new(256);
            let keys: Vec<FlowKey> = dsts
                .iter()
                .map(|&d| FlowKey::new(0x0a05_0102, 0x0a07_0000 | u32::from(d), 1, 2, 6, 2))
                .collect();
            for op in ops {
                match op {
                    Op::Add(a, l, v) => { ed.add_routes(vec![route(net(a, l), v)]).unwrap(); }
                    Op::Remove(a, l) => { ed.remove_routes(&[net(a, l)]).unwrap(); }
                    Op::Neighbour(m) => {
                        ed.set_neighbours(vec![crate::config::NeighbourConfig {
                            ip: Ipv4Addr::new(192, 168, 50, 20 + m % 4),
                            mac: format!("02:00:00:00:dd:{m:02x}").parse().unwrap(),
                            learned: false,
                        }]).unwrap();
                    }
                }
                let t = handle.load();
                prop_assert_eq!(t.generation, ed.tables().generation);
                for k in &keys {
                    let (got, _) = super::route(&t, &mut cache, k, k.hash());
                    prop_assert_eq!(got, t.lpm.lookup(k.dst), "dst {}", Ipv4Addr::from(k.dst));
                }
            }
            let t = handle.load();
            let whole = Tables::from_config(&ed.config()).unwrap();
            for k in &keys {
                let a = t.lpm.lookup(k.dst).map(|i| t.adjacencies[i as usize].clone());
                let b = whole.lpm.lookup(k.dst).map(|i| whole.adjacencies[i as usize].clone());
                prop_assert_eq!(a, b);
            }
            prop_assert_eq!(&t.vxlan_peers, &whole.vxlan_peers);
            prop_assert_eq!(&t.ipip_peers, &whole.ipip_peers);
        }
    }
}
