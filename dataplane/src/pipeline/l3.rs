//! Stage 3: L3. TTL check, then the flow cache in front of the route table.
//!
//! The flow cache maps an exact flow key to an adjacency index; entries of
//! another tables generation are misses, so a route change is seen by the
//! very next packet. On a miss the longest-prefix match decides and the
//! result is cached. The key's hash is kept: it is the VXLAN source-port
//! entropy too.

use super::{Meta, Next};
use crate::counters::{DropReason, WorkerCounters};
use crate::fib::flow_cache::FlowCache;
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
        match cache.lookup(&m.key, m.hash, t.generation) {
            Some(adj) => {
                hits += 1;
                m.adj = adj;
            }
            None => {
                misses += 1;
                match t.lpm.lookup(m.key.dst) {
                    Some(adj) => {
                        cache.insert(m.key, m.hash, t.generation, adj);
                        m.adj = adj;
                    }
                    None => m.next = Next::Drop(DropReason::NoRoute),
                }
            }
        }
    }
    c.events.flow_cache_hits.add(hits);
    c.events.flow_cache_misses.add(misses);
}
