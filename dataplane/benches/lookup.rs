//! Route lookup and flow-cache cost, per address/key, in bursts of 32.
//!
//! - `lpm/lookup/N` and `lpm/lookup_burst/N`: [`Lpm::lookup`] on 32
//!   addresses one by one, and [`Lpm::lookup_burst`] on the same 32, with N
//!   = 1k, 100k and 1M routes. Routes are a deterministic random mix: 2%
//!   /16, 78% /24 and 20% /32, the /32s clustered 16 to a /24 block on
//!   average (as pod routes are). Destinations are drawn uniformly from the
//!   installed prefixes (a random prefix, random host bits) into an array of
//!   64k addresses before measuring, so the PRNG is not measured; successive
//!   iterations walk the array. Uniform draws are the adversarial case:
//!   at 100k and 1M routes nearly every lookup misses the caches.
//! - `lpm/lookup_zipf/N` and `lpm/lookup_burst_zipf/N`: the same, with the
//!   prefix drawn by a Zipf law (s = [`ZIPF_S`]) over route ranks (rank =
//!   position in the shuffled route list): the realistic case, where a few
//!   destinations carry most of the traffic.
//! - `flow_cache/hit`: hash + lookup of 32 keys out of 1024 cached flows.
//! - `flow_cache/miss`: hash + lookup that misses + LPM (1k routes) + insert,
//!   as the pipeline's L3 stage does on a miss; the generation is bumped
//!   each time the 64k keys have all been seen, so every lookup misses.

mod common;

use common::{print_note, BURST};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice_dataplane::craft::Rng;
use sluice_dataplane::fib::{FlowCache, FlowKey, Lpm, MAX_NEXT_HOP};
use std::collections::HashSet;

/// Pre-generated lookup addresses / keys (a power of two).
const ADDRS: usize = 1 << 16;

/// Zipf exponent of the skewed destination draw.
const ZIPF_S: f64 = 1.0;

/// Flow-cache size: the pipeline's default.
const CACHE_ENTRIES: usize = 8192;

fn mask(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

/// `n` distinct random prefixes: 2% /16, 20% /32 (clustered), the rest /24.
fn random_routes(n: usize, rng: &mut Rng) -> Vec<(u32, u8, u32)> {
    let n16 = (n * 2 / 100).max(1);
    let n32 = n * 20 / 100;
    let n24 = n - n16 - n32;
    let blocks: Vec<u32> = (0..(n32 / 16).max(1))
        .map(|_| rng.next_u32() & 0xffff_ff00)
        .collect();
    let mut seen = HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    let mut add = |p: u32, l: u8, rng: &mut Rng| -> bool {
        if seen.insert((p, l)) {
            out.push((p, l, rng.next_u32() & MAX_NEXT_HOP));
            true
        } else {
            false
        }
    };
    let mut k = 0;
    while k < n16 {
        k += usize::from(add(rng.next_u32() & mask(16), 16, rng));
    }
    k = 0;
    while k < n24 {
        k += usize::from(add(rng.next_u32() & mask(24), 24, rng));
    }
    k = 0;
    while k < n32 {
        let p = blocks[rng.below(blocks.len())] | (rng.next_u32() & 0xff);
        k += usize::from(add(p, 32, rng));
    }
    // Interleave the lengths, as a real table would have been built.
    for i in (1..out.len()).rev() {
        out.swap(i, rng.below(i + 1));
    }
    out
}

/// Draws route indices `0..n` with P(i) proportional to 1 / (i + 1)^s.
fn zipf_indices(n: usize, s: f64, count: usize, rng: &mut Rng) -> Vec<usize> {
    let mut cdf = Vec::with_capacity(n);
    let mut total = 0.0;
    for r in 1..=n {
        total += (r as f64).powf(-s);
        cdf.push(total);
    }
    (0..count)
        .map(|_| {
            let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * total;
            cdf.partition_point(|&c| c <= u).min(n - 1)
        })
        .collect()
}

/// A table of `n` routes and `ADDRS` destinations within its prefixes,
/// drawn uniformly and by Zipf over the routes.
fn table(n: usize, seed: u64) -> (Lpm, Vec<u32>, Vec<u32>) {
    let mut rng = Rng::new(seed);
    let routes = random_routes(n, &mut rng);
    let mut lpm = Lpm::with_tbl8_groups(n / 16 + 64);
    for &(p, l, nh) in &routes {
        lpm.insert(p, l, nh).expect("route fits");
    }
    assert_eq!(lpm.len(), n);
    let dst = |i: usize, rng: &mut Rng| {
        let (p, l, _) = routes[i];
        p | (rng.next_u32() & !mask(l))
    };
    let uniform: Vec<u32> = (0..ADDRS)
        .map(|_| {
            let i = rng.below(routes.len());
            dst(i, &mut rng)
        })
        .collect();
    let zipf: Vec<u32> = zipf_indices(n, ZIPF_S, ADDRS, &mut rng)
        .into_iter()
        .map(|i| dst(i, &mut rng))
        .collect();
    assert!(
        uniform
            .iter()
            .chain(&zipf)
            .all(|&a| lpm.lookup(a).is_some()),
        "every destination is routed"
    );
    (lpm, uniform, zipf)
}

fn lpm(c: &mut Criterion) {
    print_note("lookup");
    let mut g = c.benchmark_group("lpm");
    g.throughput(Throughput::Elements(BURST as u64));
    for (label, n) in [("1k", 1_000), ("100k", 100_000), ("1M", 1_000_000)] {
        let (lpm, uniform, zipf) = table(n, 0x5eed_0000 + n as u64);
        for (suffix, addrs) in [("", &uniform), ("_zipf", &zipf)] {
            g.bench_with_input(
                BenchmarkId::new(format!("lookup{suffix}"), label),
                &(),
                |b, _| {
                    let mut i = 0;
                    b.iter(|| {
                        let burst = &addrs[i..i + BURST];
                        i = (i + BURST) & (ADDRS - 1);
                        let mut acc = 0u32;
                        for &a in burst {
                            acc = acc.wrapping_add(lpm.lookup(a).unwrap_or(0));
                        }
                        black_box(acc)
                    })
                },
            );
            g.bench_with_input(
                BenchmarkId::new(format!("lookup_burst{suffix}"), label),
                &(),
                |b, _| {
                    let mut i = 0;
                    let mut out = [None; BURST];
                    b.iter(|| {
                        let burst = &addrs[i..i + BURST];
                        i = (i + BURST) & (ADDRS - 1);
                        lpm.lookup_burst(burst, &mut out);
                        black_box(&out);
                    })
                },
            );
        }
    }
    g.finish();
}

fn random_key(rng: &mut Rng, dst: u32) -> FlowKey {
    let src = 0x0a05_0100 | (rng.next_u32() & 0xff);
    let ports = rng.next_u32();
    FlowKey::new(src, dst, ports as u16, (ports >> 16) as u16, 17, 2)
}

fn flow_cache(c: &mut Criterion) {
    let mut g = c.benchmark_group("flow_cache");
    g.throughput(Throughput::Elements(BURST as u64));
    let (lpm, addrs, _) = table(1_000, 0xf10e);
    let mut rng = Rng::new(0xcafe);
    let generation = 7;

    // Hits: 1024 flows, all resident (checked), looked up 32 at a time.
    let mut cache: FlowCache<u32> = FlowCache::new(CACHE_ENTRIES);
    let mut keys: Vec<FlowKey> = (0..1024).map(|i| random_key(&mut rng, addrs[i])).collect();
    for k in &keys {
        cache.insert(*k, k.hash(), generation, lpm.lookup(k.dst).unwrap_or(0));
    }
    keys.retain(|k| cache.lookup(k, k.hash(), generation).is_some());
    assert!(keys.len() >= 1000, "{} of 1024 flows resident", keys.len());
    keys.truncate(keys.len() / BURST * BURST);
    let n_hit = keys.len();
    g.bench_function("hit", |b| {
        let mut i = 0;
        b.iter(|| {
            let mut acc = 0u32;
            for k in &keys[i..i + BURST] {
                acc = acc.wrapping_add(cache.lookup(k, k.hash(), generation).unwrap_or(0));
            }
            i += BURST;
            if i == n_hit {
                i = 0;
            }
            black_box(acc)
        })
    });

    // Misses: 64k distinct flows; a new generation each time round.
    let mut cache: FlowCache<u32> = FlowCache::new(CACHE_ENTRIES);
    let keys: Vec<FlowKey> = {
        let mut seen = HashSet::with_capacity(ADDRS);
        let mut v = Vec::with_capacity(ADDRS);
        while v.len() < ADDRS {
            let k = random_key(&mut rng, addrs[v.len()]);
            if seen.insert(k) {
                v.push(k);
            }
        }
        v
    };
    g.bench_function("miss", |b| {
        let (mut i, mut generation) = (0, 1u32);
        b.iter(|| {
            let mut acc = 0u32;
            for k in &keys[i..i + BURST] {
                let h = k.hash();
                match cache.lookup(k, h, generation) {
                    Some(v) => acc = acc.wrapping_add(v),
                    None => {
                        if let Some(adj) = lpm.lookup(k.dst) {
                            cache.insert(*k, h, generation, adj);
                            acc = acc.wrapping_add(adj);
                        }
                    }
                }
            }
            i = (i + BURST) & (ADDRS - 1);
            if i == 0 {
                generation = generation.wrapping_add(1);
            }
            black_box(acc)
        })
    });
    g.finish();
}

criterion_group!(benches, lpm, flow_cache);
criterion_main!(benches);
