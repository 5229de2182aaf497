//! A bounded soak (privileged): a two-node VXLAN lab whose agents share a
//! real etcd, run for `SLUICE_SOAK_SECONDS` (default 60; docs/lab.md gives
//! a longer run) with, all at once:
//! - traffic: 10 ms pings between pods across the nodes and on one node;
//! - pods coming and going on node 1 through the CNI plugin (ADD, a ping
//!   from the new pod, DEL), as a runtime churns them;
//! - routes churned through node 1's agent: 1,000 lease changes per second
//!   in etcd (100 remote nodes' leases, each written and deleted in turn),
//!   each one a route added to or removed from sluiced by the agent.
//!
//! Then it checks that nothing was lost or leaked: every ping answered,
//! every churned pod reached, the routes in sluiced exactly the leases in
//! etcd, node 1's ports, veths, records and IPAM leases as at the start,
//! every UMEM frame back in the pool, port ids reused (the highest id never
//! grows), packets conserved on both nodes (received + made = sent +
//! dropped, over every port either node has had), and sluiced's and the
//! agent's resident memory at the end within bounds of what they used once
//! warm. The figures are printed, with a witness: `etcdctl watch` on the
//! leases from the churn's start revision counts the events etcd delivers
//! to a second watcher, against the agent's counts of the events it took
//! and of those its periodic check found lost and repaired.

mod support;

use sluice_control::lease::{self, LeaseAttrs};
use sluice_control::network::BackendType;
use sluice_control::store::Store;
use sluice_perf::cluster::{self, StoreKind};
use sluice_perf::lab::{self, LabSpec, LabState, Mode};
use sluice_perf::limits_bench::memory_mib;
use sluice_perf::pods;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

/// Remote nodes whose leases are churned.
const CHURNED: usize = 100;
/// Lease changes per second.
const RATE: u64 = 1000;

fn churn_lease(i: usize) -> (String, String) {
    let subnet = sluice_api::Ipv4Net::new(Ipv4Addr::new(10, 100, i as u8, 0), 24).expect("a /24");
    let ip = Ipv4Addr::new(192, 168, 100, 1 + i as u8);
    let mac = sluice_api::MacAddr::from([2, 0xcc, 0, 0, 0, i as u8]);
    (
        lease::subnet_key(cluster::PREFIX, subnet),
        LeaseAttrs::new(ip, BackendType::Vxlan, 1, mac).to_json(),
    )
}

/// A child killed (by its PID) when dropped, also when the test panics.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ping_summary(child: std::process::Child) -> (u64, u64, String) {
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or("")
        .to_string();
    let num = |what: &str| -> u64 {
        line.split(", ")
            .find(|p| p.contains(what))
            .and_then(|p| p.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (num("transmitted"), num("received"), line)
}

fn vxlan_routes(n: &lab::NodeState) -> Vec<String> {
    let mut v: Vec<String> = sluice_api::Client::new(&n.api_socket)
        .routes()
        .unwrap()
        .routes
        .into_iter()
        .filter(|r| r.via == sluice_api::Via::Vxlan)
        .map(|r| r.prefix.to_string())
        .collect();
    v.sort();
    v
}

fn stats(n: &lab::NodeState) -> sluice_api::Stats {
    sluice_api::Client::new(&n.api_socket).stats().unwrap()
}

fn max_port_id(n: &lab::NodeState) -> u16 {
    sluice_api::Client::new(&n.api_socket)
        .ports()
        .unwrap()
        .ports
        .iter()
        .map(|p| p.id)
        .max()
        .unwrap_or(0)
}

fn free_frames(n: &lab::NodeState) -> Vec<u64> {
    stats(n).workers.iter().map(|w| w.free).collect()
}

/// Node 1's pods come and go through the CNI plugin until `stop`; each new
/// pod pings one of the lab's. Returns (cycles, pods that reached, highest
/// port id seen, errors).
fn churn_pods(st: &LabState, stop: &AtomicBool) -> (u64, u64, u16, Vec<String>) {
    let ns = format!("{}-churn", st.name);
    let quiet = |args: &[&str]| {
        let _ = Command::new("ip").args(args).stderr(Stdio::null()).status();
    };
    quiet(&["netns", "del", &ns]);
    sh(&["ip", "netns", "add", &ns]);
    sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
    let cni = pods::cni(st, 0).unwrap();
    let list = sluice_cni::libcni::ConfList::parse(pods::conflist(st, 0).as_bytes()).unwrap();
    let rt = sluice_cni::libcni::RuntimeConf::new(
        ns.clone(),
        Some(format!("/run/netns/{ns}").into()),
        "eth0",
    );
    let target = st.nodes[0].pods[1].1.clone();
    let (mut cycles, mut reached, mut top) = (0u64, 0u64, 0u16);
    let mut errors = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        cycles += 1;
        match cni.add_network_list(&list, &rt) {
            Ok(_) => {
                top = top.max(max_port_id(&st.nodes[0]));
                let ok = Command::new("ip")
                    .args(["netns", "exec", &ns, "ping", "-c", "1", "-W", "2", &target])
                    .stdout(Stdio::null())
                    .status()
                    .unwrap()
                    .success();
                reached += u64::from(ok);
            }
            Err(e) => errors.push(format!("ADD {cycles}: {e}")),
        }
        if let Err(e) = cni.del_network_list(&list, &rt) {
            errors.push(format!("DEL {cycles}: {e}"));
        }
    }
    quiet(&["netns", "del", &ns]);
    (cycles, reached, top, errors)
}

#[test]
fn a_soak_with_pod_and_route_churn_under_traffic_loses_and_leaks_nothing() {
    require_root();
    let secs: u64 = std::env::var("SLUICE_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let name = "soak";
    let _guard = Guard(name.to_string());
    let st = lab::up(
        &LabSpec {
            store: StoreKind::Etcd,
            network: Some("10.0.0.0/8".into()),
            ..LabSpec::new(name, 2, Mode::Vxlan)
        },
        &mut |_| {},
    )
    .expect("lab up");
    let n0 = st.nodes[0].clone();
    let sluiced_pid = n0.sluiced_pid.expect("node 1 runs sluiced");
    let agent_pid = n0.agent_pid.expect("node 1 runs an agent");
    let base_routes = vxlan_routes(&n0);
    let holdings0 = holdings(&st, 0);
    let frames0 = free_frames(&n0);
    let top0 = max_port_id(&n0);
    let mem0 = (
        memory_mib(sluiced_pid).unwrap(),
        memory_mib(agent_pid).unwrap(),
    );
    let store = st.store.clone().expect("the lab has a store");
    let subnets = lease::subnets_prefix(cluster::PREFIX);
    let start_rev = cluster::leases(&st).expect("leases listed").revision;
    let witness_out = lab::state_dir().join(format!("{name}-witness.out"));
    let mut witness = KillOnDrop(
        Command::new("etcdctl")
            .args([
                "--endpoints",
                store.endpoint.as_deref().expect("etcd's endpoint"),
                "watch",
                "--prefix",
                &subnets,
                &format!("--rev={}", start_rev + 1),
            ])
            .env("ETCDCTL_API", "3")
            .stdout(std::fs::File::create(&witness_out).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcdctl (Debian's etcd-client)"),
    );

    // ping's 10 ms interval comes out nearer 15 ms here: about as many as
    // fit in the soak.
    let count = secs * 65;
    let across = pinger(&n0.pods[0].0, &st.nodes[1].pods[1].1, count);
    let local = pinger(&n0.pods[1].0, &n0.pods[0].1, count);
    let stop = Arc::new(AtomicBool::new(false));
    let changes = Arc::new(AtomicU64::new(0));
    let started = Instant::now();

    let (churn, warm) = std::thread::scope(|scope| {
        let pod_churn = scope.spawn(|| churn_pods(&st, &stop));
        let route_churn = scope.spawn(|| {
            let stop = stop.clone();
            let changes = changes.clone();
            cluster::with_store(&store, |s| async move {
                let start = Instant::now();
                let mut n: u64 = 0;
                while !stop.load(Ordering::Relaxed) {
                    // 10 changes every 10 ms, written together.
                    let due = start + Duration::from_millis(n * 1000 / RATE);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        tokio::time::sleep(wait).await;
                    }
                    let ops = (n..n + 10).map(|k| {
                        let i = (k as usize) % CHURNED;
                        let (key, value) = churn_lease(i);
                        let s = &s;
                        async move {
                            if (k as usize / CHURNED).is_multiple_of(2) {
                                s.put(&key, value.as_bytes(), Some(lease::LEASE_TTL)).await
                            } else {
                                s.delete(&key).await
                            }
                        }
                    });
                    for r in futures::future::join_all(ops).await {
                        r.map_err(|e| lab::LabError::Other(e.to_string()))?;
                    }
                    n += 10;
                    changes.store(n, Ordering::Relaxed);
                }
                Ok(())
            })
        });
        // Warm: a tenth of the way in (at least 5 s), both are at work.
        std::thread::sleep(Duration::from_secs((secs / 10).max(5)));
        let warm = (
            memory_mib(sluiced_pid).unwrap(),
            memory_mib(agent_pid).unwrap(),
        );
        std::thread::sleep(Duration::from_secs(secs.saturating_sub((secs / 10).max(5))));
        stop.store(true, Ordering::Relaxed);
        route_churn
            .join()
            .unwrap()
            .expect("lease changes written to etcd");
        (pod_churn.join().unwrap(), warm)
    });
    let churned_for = started.elapsed();
    let written = changes.load(Ordering::Relaxed);
    let (tx_a, rx_a, line_a) = ping_summary(across);
    let (tx_l, rx_l, line_l) = ping_summary(local);
    let (cycles, reached, top, errors) = churn;

    // The routes settle to exactly the leases in etcd.
    let want = |st: &LabState| -> Vec<String> {
        let mut v: Vec<String> = cluster::leases(st)
            .unwrap()
            .leases
            .keys()
            .map(|subnet| subnet.to_string())
            .filter(|s| *s != n0.subnet)
            .collect();
        v.sort();
        v
    };
    let agent_metrics = || -> String {
        n0.agent_healthz
            .as_ref()
            .and_then(|a| {
                Command::new("curl")
                    .args(["-s", &format!("http://{a}/metrics")])
                    .output()
                    .ok()
            })
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    // The agent may lag the churn: it has caught up once sluiced's routes
    // are etcd's leases and stay so for 3 s (while it replays a backlog they
    // match only in passing).
    let stopped = std::time::Instant::now();
    let mut equal_since: Option<std::time::Instant> = None;
    while equal_since.is_none_or(|t| t.elapsed() < Duration::from_secs(3)) {
        if stopped.elapsed() > Duration::from_secs(60) {
            break;
        }
        if vxlan_routes(&n0) == want(&st) {
            equal_since.get_or_insert_with(std::time::Instant::now);
        } else {
            equal_since = None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let caught_up = equal_since.map_or(stopped.elapsed(), |t| t.duration_since(stopped));
    let settled = std::time::Instant::now();
    while vxlan_routes(&n0) != want(&st) {
        if settled.elapsed() > Duration::ZERO {
            let (have, leases) = (vxlan_routes(&n0), want(&st));
            let extra: Vec<_> = have.iter().filter(|r| !leases.contains(r)).collect();
            let missing: Vec<_> = leases.iter().filter(|r| !have.contains(r)).collect();
            let log =
                std::fs::read_to_string(lab::state_dir().join(format!("{}-agent.log", n0.ns)))
                    .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            let metrics = agent_metrics();
            let metrics: Vec<&str> = metrics
                .lines()
                .filter(|l| {
                    !l.starts_with('#')
                        && (l.contains("lease")
                            || l.contains("route")
                            || l.contains("watch")
                            || l.contains("sync"))
                })
                .collect();
            panic!(
                "sluiced's routes are not etcd's leases 60 s after the churn: routes without a lease {extra:?}, leases without a route {missing:?}; the agent's metrics:\n{}\nits log ends:\n{}",
                metrics.join("\n"),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let present = want(&st).len();
    // The witness has had the whole settling time to catch up.
    let _ = witness.0.kill();
    let _ = witness.0.wait();
    let witnessed = std::fs::read_to_string(&witness_out)
        .unwrap_or_default()
        .lines()
        .filter(|l| *l == "PUT" || *l == "DELETE")
        .count();
    let _ = std::fs::remove_file(&witness_out);
    let metrics = agent_metrics();
    let metric = |name: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    };
    let seen = (
        metric("sluice_agent_lease_events_total{kind=\"put\"}"),
        metric("sluice_agent_lease_events_total{kind=\"delete\"}"),
    );
    let repaired = (
        metric("sluice_agent_watch_repairs_total{kind=\"put\"}"),
        metric("sluice_agent_watch_repairs_total{kind=\"delete\"}"),
    );
    let restarts = metric("sluice_agent_watch_restarts_total");
    eprintln!(
        "soak: lease events: {written} written, {witnessed} delivered to etcdctl watch, \
         node 1's agent took {} put + {} delete from its watch and repaired {} put + {} delete \
         after its checks ({restarts} watches reopened)",
        seen.0, seen.1, repaired.0, repaired.1
    );
    std::thread::sleep(Duration::from_secs(1));
    let mem1 = (
        memory_mib(sluiced_pid).unwrap(),
        memory_mib(agent_pid).unwrap(),
    );
    let s0 = stats(&n0);
    let s1 = stats(&st.nodes[1]);
    eprintln!(
        "soak: {:.1} s; {written} lease changes ({:.0}/s), sluiced's routes were etcd's leases for good {:.1} s after the churn; {cycles} pod ADD/DEL cycles, \
         {reached} reached; highest port id {top} (start {top0}); pings across {line_a}; \
         pings on node 1 {line_l}; routes at the end {} ({present} leases); \
         sluiced RSS {:.1} -> {:.1} (warm) -> {:.1} MiB (peak {:.1}); \
         agent RSS {:.1} -> {:.1} -> {:.1} MiB; node 1: {} in, {} sent, {} made, {} dropped {:?}",
        churned_for.as_secs_f64(),
        written as f64 / churned_for.as_secs_f64(),
        caught_up.as_secs_f64(),
        vxlan_routes(&n0).len(),
        mem0.0 .0,
        warm.0 .0,
        mem1.0 .0,
        mem1.0 .1,
        mem0.1 .0,
        warm.1 .0,
        mem1.1 .0,
        s0.port_totals.rx_packets,
        s0.port_totals.tx_packets,
        s0.made(),
        s0.total_drops(),
        s0.nonzero_drops().collect::<Vec<_>>(),
    );

    for (i, s) in [(1, &s0), (2, &s1)] {
        eprintln!(
            "soak: node {i}: drops {:?}; AF_XDP socket counters {:?}",
            s.nonzero_drops().collect::<Vec<_>>(),
            s.ports
                .iter()
                .filter_map(|(name, p)| p.xsk.map(|x| (name, x)))
                .collect::<Vec<_>>()
        );
    }
    assert!(errors.is_empty(), "CNI errors: {errors:?}");
    assert!(cycles >= 5, "pods came and went: {cycles} cycles");
    assert_eq!(reached, cycles, "every churned pod reached its peer");
    assert_eq!((tx_a, rx_a), (count, count), "across the nodes: {line_a}");
    assert_eq!((tx_l, rx_l), (count, count), "on node 1: {line_l}");
    assert!(
        written >= RATE * secs * 8 / 10,
        "the churn kept up: {written} changes in {churned_for:?}"
    );
    assert!(
        top <= top0 + 1,
        "port ids are reused: the highest was {top}, {top0} at the start"
    );
    assert_eq!(max_port_id(&n0), top0);
    assert_eq!(
        holdings(&st, 0),
        holdings0,
        "ports, veths, records, IPAM leases"
    );
    eventually(5, "every frame back in the pool", || {
        free_frames(&n0) == frames0
    });
    assert_eq!(base_routes.len(), 1, "node 2's route at the start");
    for (i, s) in [(1, &s0), (2, &s1)] {
        assert_eq!(
            s.unaccounted(),
            0,
            "node {i}: received + made = sent + dropped ({:?})",
            s.port_totals
        );
    }
    let bound = |warm: f64| warm + (warm * 0.25).max(16.0);
    assert!(
        mem1.0 .0 <= bound(warm.0 .0),
        "sluiced's RSS grew from {:.1} MiB (warm) to {:.1} MiB",
        warm.0 .0,
        mem1.0 .0
    );
    assert!(
        mem1.1 .0 <= bound(warm.1 .0),
        "the agent's RSS grew from {:.1} MiB (warm) to {:.1} MiB",
        warm.1 .0,
        mem1.1 .0
    );
    lab::down(name).unwrap();
}
