//! Control-side cost of table changes (figures, not tests).
//!
//! - `tables/route_add_at_1M`: one `routes.add` of one new route through
//!   [`Control::handle`] while 1M routes are installed, up to and including
//!   the publication of the new tables (request pre-parsed).
//! - `tables/api_10k_route_adds`: 10,000 `routes.add` requests of one route
//!   each, as JSON lines through [`api::respond`], starting from the
//!   reference node; the throughput figure is adds per second.
//! - `tables/pod_port_add_at_1M`: one pod port added while 1M routes are
//!   installed. `ports.add` attaches an XDP program and needs AF_XDP, so the
//!   API op cannot run here; this measures the table side of it:
//!   [`TablesEditor::add_pod_ports`] (what `ports.add` calls after attaching),
//!   up to and including publication. Between iterations the port is taken
//!   back with [`TablesEditor::undo_pod_ports`] (not timed), so port ids do
//!   not run out. (Before the editor existed this measured the same steps as
//!   `Control` took: copy the configuration, add the port, validate, build
//!   whole tables, publish.)
//!
//! The 1M routes: 900k random /24s and 100k /32s clustered in 4096 /24
//! blocks, via VXLAN/IPIP to 64 nodes on the uplink's segment.

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use serde_json::json;
use sluice_dataplane::config::{NodeConfig, PortConfig, PortKind, RouteConfig, Via};
use sluice_dataplane::counters::WorkerCounters;
use sluice_dataplane::craft::{self, Rng};
use sluice_dataplane::tables::{Tables, TablesEditor, TablesHandle};
use sluiced::api::{self, Control, Request};
use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MILLION: usize = 1_000_000;
const API_ADDS: usize = 10_000;

fn route(prefix: u32, len: u8, i: usize) -> RouteConfig {
    let node = Ipv4Addr::new(192, 168, 50, 10 + (i % 64) as u8);
    let vxlan = i.is_multiple_of(2);
    RouteConfig {
        prefix: format!("{}/{len}", Ipv4Addr::from(prefix)).parse().unwrap(),
        via: if vxlan { Via::Vxlan } else { Via::Ipip },
        node: Some(node),
        vtep_mac: vxlan.then(|| format!("02:00:00:00:cc:{:02x}", i % 64).parse().unwrap()),
        port: None,
    }
}

/// `n` distinct routes outside 10.0.0.0/8 and 192.168.0.0/16.
fn million_routes(n: usize) -> Vec<RouteConfig> {
    let mut rng = Rng::new(0x5eed_1234);
    let usable = |a: u32| (a >> 24) != 10 && (a >> 16) != 0xc0a8 && (a >> 24) != 100;
    let mut seen = HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    let n32 = n / 10;
    let blocks: Vec<u32> = std::iter::repeat_with(|| rng.next_u32() & 0xffff_ff00)
        .filter(|&b| usable(b))
        .take(4096)
        .collect();
    while out.len() < n32 {
        let a = blocks[rng.below(blocks.len())] | (rng.next_u32() & 0xff);
        if seen.insert((a, 32)) {
            out.push(route(a, 32, out.len()));
        }
    }
    while out.len() < n {
        let a = rng.next_u32() & 0xffff_ff00;
        if usable(a) && seen.insert((a, 24)) {
            out.push(route(a, 24, out.len()));
        }
    }
    out
}

fn reference() -> NodeConfig {
    NodeConfig::from_toml_str(craft::REFERENCE_NODE).expect("reference config")
}

fn control(cfg: NodeConfig) -> Control {
    let handle = Arc::new(TablesHandle::new(
        Tables::from_config(&cfg).expect("tables"),
    ));
    Control::new(cfg, handle, vec![Arc::new(WorkerCounters::new())])
}

/// 100.64.0.0/10 addresses: never in the 1M set.
fn fresh_prefix(i: usize) -> String {
    format!("{}/32", Ipv4Addr::from(0x6440_0000u32 + i as u32))
}

fn add_request(i: usize) -> Request {
    Request {
        version: api::VERSION,
        op: "routes.add".into(),
        args: json!({ "routes": [{ "prefix": fresh_prefix(i), "via": "ipip", "node": "192.168.50.9" }] }),
    }
}

fn pod(i: usize) -> PortConfig {
    PortConfig {
        name: format!("bench-{i}"),
        kind: PortKind::Pod,
        mtu: 1450,
        mac: format!("02:00:00:00:02:{:02x}", i % 200).parse().unwrap(),
        address: None,
        gateway: None,
        ip: Some(Ipv4Addr::new(10, 5, 1, 10 + (i % 200) as u8)),
        rx_mode: None,
        removed: false,
        devargs: None,
        vhost_user: None,
    }
}

fn with_million() -> NodeConfig {
    let mut cfg = reference();
    let t = Instant::now();
    cfg.routes.extend(million_routes(MILLION));
    eprintln!("generated {} routes in {:?}", cfg.routes.len(), t.elapsed());
    cfg
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("tables");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));

    // (a) One route added at 1M routes.
    {
        let cfg = with_million();
        let t = Instant::now();
        let mut ctl = control(cfg);
        eprintln!("built 1M-route control in {:?}", t.elapsed());
        let mut next = 0usize;
        g.throughput(Throughput::Elements(1));
        g.bench_function("route_add_at_1M", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let req = add_request(next);
                    next += 1;
                    let t = Instant::now();
                    let r = ctl.handle(&req);
                    total += t.elapsed();
                    assert!(r.is_ok(), "{r:?}");
                }
                total
            })
        });
        eprintln!("editor: {:?}", ctl.config().stats());
    }

    // (b) 10,000 single-route adds through the API.
    {
        let lines: Vec<String> = (0..API_ADDS)
            .map(|i| serde_json::to_string(&add_request(i)).unwrap())
            .collect();
        let base = reference().routes.len();
        g.throughput(Throughput::Elements(API_ADDS as u64));
        g.bench_function("api_10k_route_adds", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let ctl = Mutex::new(control(reference()));
                    let t = Instant::now();
                    for l in &lines {
                        let r = api::respond(&ctl, l);
                        debug_assert!(r.ok);
                    }
                    total += t.elapsed();
                    assert_eq!(ctl.lock().unwrap().config().routes.len(), base + API_ADDS);
                }
                total
            })
        });
    }

    // (c) One pod port added at 1M routes (table side; see module docs).
    {
        let cfg = with_million();
        let handle = Arc::new(TablesHandle::new(
            Tables::from_config(&cfg).expect("tables"),
        ));
        let mut ed = TablesEditor::new(cfg, handle);
        let mut next = 0usize;
        g.throughput(Throughput::Elements(1));
        g.bench_function("pod_port_add_at_1M", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let p = pod(next);
                    let name = p.name.clone();
                    next += 1;
                    let t = Instant::now();
                    let (ids, _) = ed.add_pod_ports(vec![p]).expect("added");
                    total += t.elapsed();
                    assert_eq!(ids.len(), 1);
                    ed.undo_pod_ports(&[name]).expect("undone");
                }
                total
            })
        });
        eprintln!("editor: {:?}", ed.stats());
    }
    g.finish();
}

criterion_group!(tables, benches);
criterion_main!(tables);
