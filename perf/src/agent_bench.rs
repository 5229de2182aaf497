//! How fast the agent programs sluiced at scale (`sluice-lab agent-bench`).
//!
//! 1. A two-node VXLAN lab whose agents share a real etcd (or the embedded
//!    store); both agents are stopped.
//! 2. The lab's network is `10.0.0.0/8` with /24 subnets; `leases` more
//!    leases are written (remote nodes `192.168.100.0/22`,
//!    each with its own VTEP MAC), as flanneld would write them.
//! 3. **Cold start**: node 1's agent is started; the figure is the time from
//!    its start until sluiced holds a route for every lease (polled every
//!    5 ms through `routes.list`).
//! 4. **One change**: `changes` times, one lease gets a new VTEP MAC; the
//!    figure is the time from just before the store write until sluiced's
//!    tables generation moves (polled in a loop through `node.get`, a few
//!    tens of microseconds per call), so it includes the write itself.
//!
//! Nothing here is asserted: these are benchmark figures.

use crate::cluster::{self, StoreKind};
use crate::lab::{self, LabError, LabSpec, Mode};
use serde::Serialize;
use sluice_control::lease::{self, LeaseAttrs};
use sluice_control::network::BackendType;
use sluice_control::store::Store;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, LabError>;

/// The lab's pod network for the benchmark: room for 60,000 /24 subnets.
pub const NETWORK: &str = "10.0.0.0/8";

fn other(e: impl std::fmt::Display) -> LabError {
    LabError::Other(e.to_string())
}

/// The figures.
#[derive(Debug, Clone, Serialize)]
pub struct AgentBench {
    /// Which store.
    pub store: StoreKind,
    /// Leases besides the lab's own two.
    pub leases: usize,
    /// Routes sluiced held at the end of the cold start.
    pub routes: usize,
    /// Agent start to every route in sluiced, milliseconds.
    pub cold_start_ms: f64,
    /// One lease change to sluiced's tables: median, 90th percentile and
    /// worst, milliseconds.
    pub change_ms: [f64; 3],
    /// Of a change, the store write alone: median, milliseconds.
    pub write_ms: f64,
    /// Changes measured.
    pub changes: usize,
}

/// The i-th benchmark lease: subnet `10.a.b.0/24` skipping `10.77.0.0/16`,
/// node `192.168.100.0/22`, its own VTEP MAC.
fn bench_lease(i: usize) -> (sluice_api::Ipv4Net, LeaseAttrs) {
    let mut n = i + 256; // from 10.1.0.0
    if n / 256 >= 77 {
        n += 256; // step over 10.77.0.0/16
    }
    let subnet =
        sluice_api::Ipv4Net::new(Ipv4Addr::new(10, (n / 256) as u8, (n % 256) as u8, 0), 24)
            .expect("aligned");
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(192, 168, 100, 1)) + i as u32);
    let mac = sluice_api::MacAddr::from([2, 0xbe, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
    (subnet, LeaseAttrs::new(ip, BackendType::Vxlan, 1, mac))
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// Runs the benchmark (see the module docs).
pub fn run(
    name: &str,
    leases: usize,
    changes: usize,
    store: StoreKind,
    progress: &mut dyn FnMut(&str),
) -> Result<AgentBench> {
    if leases == 0 || leases > 60_000 {
        return Err(other(format!("{leases} leases: 1 to 60000")));
    }
    let mut st = lab::up(
        &LabSpec {
            store,
            network: Some(NETWORK.into()),
            ..LabSpec::new(name, 2, Mode::Vxlan)
        },
        progress,
    )?;
    let result = measure(&mut st, leases, changes, store, progress);
    if result.is_ok() || std::env::var_os("SLUICE_LAB_KEEP").is_none() {
        let _ = lab::down(name);
    }
    result
}

fn measure(
    st: &mut lab::LabState,
    leases: usize,
    changes: usize,
    store: StoreKind,
    progress: &mut dyn FnMut(&str),
) -> Result<AgentBench> {
    cluster::stop_agent(st, 0, false);
    cluster::stop_agent(st, 1, false);
    progress(&format!("writing {leases} leases"));
    let t = Instant::now();
    let writes: Vec<(String, String)> = (0..leases)
        .map(|i| {
            let (s, a) = bench_lease(i);
            (lease::subnet_key(cluster::PREFIX, s), a.to_json())
        })
        .collect();
    let store_state = st
        .store
        .clone()
        .ok_or_else(|| other("the lab has no store"))?;
    cluster::with_store(&store_state, |s| async move {
        // A few writers at once: etcd takes them faster than one by one.
        for chunk in writes.chunks(64) {
            let puts = chunk
                .iter()
                .map(|(k, v)| s.put(k, v.as_bytes(), Some(lease::LEASE_TTL)));
            for r in futures::future::join_all(puts).await {
                r.map_err(other)?;
            }
        }
        Ok(())
    })?;
    progress(&format!("wrote them in {:.1} s", t.elapsed().as_secs_f64()));

    let client = sluice_api::Client::new(&st.nodes[0].api_socket);
    let want = leases + 1; // and node 2's
    progress("starting node 1's agent");
    let t0 = Instant::now();
    cluster::start_agent(st, 0)?;
    let routes = loop {
        let n = client
            .routes()
            .map(|l| {
                l.routes
                    .iter()
                    .filter(|r| r.via == sluice_api::Via::Vxlan)
                    .count()
            })
            .unwrap_or(0);
        if n >= want {
            break n;
        }
        if t0.elapsed() > Duration::from_secs(120) {
            return Err(other(format!("only {n} of {want} routes after 120 s")));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let cold = t0.elapsed();
    progress(&format!(
        "{routes} routes in sluiced {:.0} ms after the agent started",
        cold.as_secs_f64() * 1e3
    ));
    // Let the agent settle (its first poll of sluiced's epoch).
    std::thread::sleep(Duration::from_millis(500));

    progress(&format!("{changes} single lease changes"));
    let (mut took, mut wrote) = cluster::with_store(&store_state, |s| async move {
        let (mut took, mut wrote) = (Vec::with_capacity(changes), Vec::with_capacity(changes));
        for j in 0..changes {
            let (subnet, mut attrs) = bench_lease((j * 7919) % leases);
            attrs.backend_data = Some(serde_json::json!({
                "VNI": 1,
                "VtepMAC": format!("02:cc:00:{:02x}:{:02x}:{:02x}", (j >> 16) as u8, (j >> 8) as u8, j as u8),
            }));
            let (key, value) = (lease::subnet_key(cluster::PREFIX, subnet), attrs.to_json());
            let before = client.node().map_err(other)?.generation;
            let t = Instant::now();
            s.put(&key, value.as_bytes(), Some(lease::LEASE_TTL))
                .await
                .map_err(other)?;
            wrote.push(t.elapsed().as_secs_f64() * 1e3);
            while client.node().map_err(other)?.generation == before {
                if t.elapsed() > Duration::from_secs(10) {
                    return Err(other(format!("change {j} did not reach sluiced in 10 s")));
                }
            }
            took.push(t.elapsed().as_secs_f64() * 1e3);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok((took, wrote))
    })?;
    wrote.sort_by(f64::total_cmp);
    took.sort_by(f64::total_cmp);
    Ok(AgentBench {
        store,
        leases,
        routes,
        cold_start_ms: cold.as_secs_f64() * 1e3,
        change_ms: [
            percentile(&took, 0.5),
            percentile(&took, 0.9),
            percentile(&took, 1.0),
        ],
        write_ms: percentile(&wrote, 0.5),
        changes,
    })
}

/// The figures as a table.
pub fn table(r: &AgentBench) -> String {
    format!(
        "store: {:?}\nleases: {} (+ the lab's two), routes in sluiced: {}\n\
         agent start to every route in sluiced: {:.0} ms\n\
         one lease change to sluiced ({} changes): median {:.2} ms, p90 {:.2} ms, worst {:.2} ms\n\
         of which the store write: median {:.2} ms\n",
        r.store,
        r.leases,
        r.routes,
        r.cold_start_ms,
        r.changes,
        r.change_ms[0],
        r.change_ms[1],
        r.change_ms[2],
        r.write_ms
    )
}
