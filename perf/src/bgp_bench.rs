//! How fast a sluice node learns a large BGP feed (`sluice-lab bgp-bench`),
//! against BIRD learning the same feed in the same run.
//!
//! 1. A two-node host-gw BGP lab (network `10.0.0.0/8`, so the feed is
//!    inside the pool) and two hosts on its underlay: GoBGP
//!    (192.168.77.202) and BIRD (192.168.77.201, as Calico runs it: iBGP,
//!    graceful restart, its learned routes exported to its kernel).
//! 2. GoBGP is loaded with `prefixes` /26 prefixes in `10.128.0.0/9`
//!    (Calico's block size; an MRT file through `gobgp mrt inject`), next
//!    hop itself, AS_PATH 65001 (a path from outside: one holding the
//!    cluster's own AS would be a loop, ignored by BIRD and sluice alike),
//!    before it has any neighbour.
//! 3. Then node 1 and BIRD are added as GoBGP's neighbours at once (t0);
//!    both connect within their retry time. Polled every 50 ms:
//!    - sluice: the session Established (`/bgp`), every prefix in the
//!      agent's Loc-RIB (`best_routes`), every route programmed into
//!      sluiced (the agent's `routes`, its view of what sluiced accepted);
//!    - BIRD: Established (`show protocols`), every prefix in its table
//!      (`show route count`), every route in its kernel table.
//!
//!    Each is reported from t0 and from that side's Established.
//! 4. sluiced's own route list is read once at the end and must hold every
//!    prefix.
//!
//! The figures are timings of one run, not asserted; the goal (issue 13)
//! is under 3 s from Established to every route in sluiced.

use crate::cluster;
use crate::lab::{self, BgpLab, LabError, LabSpec, LabState, Mode};
use crate::peers::{bird_config, Bird, BirdPeer, Gobgp};
use serde::Serialize;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, LabError>;

fn other(e: impl std::fmt::Display) -> LabError {
    LabError::Other(e.to_string())
}

const GOBGP: &str = "192.168.77.202";
const BIRD: &str = "192.168.77.201";

/// One side's timings, seconds (from t0; `None`: not reached).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Side {
    /// Session Established.
    pub established_s: Option<f64>,
    /// Every prefix in its RIB.
    pub learned_s: Option<f64>,
    /// Every route programmed (sluiced, or BIRD's kernel table).
    pub programmed_s: Option<f64>,
}

impl Side {
    fn since_up(&self, t: Option<f64>) -> Option<f64> {
        Some(t? - self.established_s?)
    }
}

/// The figures.
#[derive(Debug, Clone, Serialize)]
pub struct BgpBench {
    /// Prefixes in the feed.
    pub prefixes: usize,
    /// Loading them into GoBGP, seconds.
    pub gobgp_load_s: f64,
    /// sluice (node 1's agent and sluiced).
    pub sluice: Side,
    /// BIRD 2 with kernel export.
    pub bird: Side,
    /// Routes sluiced listed at the end inside the feed's range.
    pub sluiced_routes: usize,
    /// Routes in BIRD's table at the end.
    pub bird_routes: usize,
    /// Routes BIRD put in its kernel table, at the end.
    pub bird_kernel_routes: usize,
    /// The agent's CPU time over the run, seconds.
    pub agent_cpu_s: f64,
    /// BIRD's CPU time over the run, seconds.
    pub bird_cpu_s: f64,
}

/// utime + stime of `pid`, clock ticks.
fn cpu(pid: u32) -> u64 {
    crate::measure::pid_cpu_ticks(pid).map_or(0, |(u, s)| u + s)
}

fn secs(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64()
}

fn healthz_json(st: &LabState, path: &str) -> Option<serde_json::Value> {
    let out = lab::ns_run(
        &st.nodes[0].ns,
        &[
            "curl",
            "-s",
            "--max-time",
            "2",
            &format!("http://{}{path}", cluster::AGENT_HEALTHZ_IN_NODE),
        ],
    )
    .ok()?;
    serde_json::from_str(&out).ok()
}

fn kernel_routes(ns: &str) -> usize {
    lab::ns_run(ns, &["sh", "-c", "ip route show proto bird | wc -l"])
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Runs the benchmark (see the module docs); `progress` hears each step.
pub fn run(name: &str, prefixes: usize, progress: &mut dyn FnMut(&str)) -> Result<BgpBench> {
    if prefixes == 0 || prefixes > 2_000_000 {
        return Err(other(format!("{prefixes} prefixes: 1 to 2000000")));
    }
    progress("a two-node host-gw BGP lab");
    let mut st = lab::up(
        &LabSpec {
            network: Some("10.0.0.0/8".into()),
            bgp: Some(BgpLab {
                extra_peers: vec![GOBGP.into()],
                deferral_time: Some(5),
                ..BgpLab::default()
            }),
            ..LabSpec::new(name, 2, Mode::HostGw)
        },
        progress,
    )?;
    let r = measure(&mut st, prefixes, progress);
    if std::env::var_os("SLUICE_LAB_KEEP").is_none() {
        let _ = lab::down(name);
    }
    r
}

fn measure(st: &mut LabState, prefixes: usize, progress: &mut dyn FnMut(&str)) -> Result<BgpBench> {
    let (gns, bns) = (format!("{}-gobgp", st.name), format!("{}-bird", st.name));
    lab::add_underlay_host(st, &gns, "gobgp0", GOBGP)?;
    lab::add_underlay_host(st, &bns, "bird0", BIRD)?;
    let gobgp_ip: Ipv4Addr = GOBGP.parse().map_err(other)?;
    let bird_ip: Ipv4Addr = BIRD.parse().map_err(other)?;
    let node_ip: Ipv4Addr = st.nodes[0].ip.parse().map_err(other)?;
    progress("GoBGP with no neighbour yet");
    let gobgp = Gobgp::start(
        &gns,
        &format!("{}-gobgp", st.name),
        &crate::peers::gobgp_config(gobgp_ip, 64512, 179, &[]),
        50051,
    )?;
    progress(&format!("loading {prefixes} /26 prefixes into GoBGP"));
    let t = Instant::now();
    let feed = crate::mrt::prefixes(prefixes, Ipv4Addr::new(10, 128, 0, 0), 26)?;
    // Paths from an upstream AS, as a feed from outside the cluster.
    gobgp.load(feed, gobgp_ip, 65001)?;
    let gobgp_load_s = secs(t);
    let mut bird = Bird::start(
        &bns,
        &format!("{}-bird", st.name),
        &bird_config(
            bird_ip,
            64512,
            &[BirdPeer {
                name: "gobgp".into(),
                address: gobgp_ip,
                asn: 64512,
                passive: false,
                rr_client: false,
                graceful_restart: true,
            }],
            &[],
            true,
            None,
        ),
    )?;
    let agent_pid = st.nodes[0]
        .agent_pid
        .ok_or_else(|| other("node 1 has no agent"))?;
    let cpu0 = (cpu(agent_pid), cpu(bird.pid()));
    progress("adding node 1 and BIRD as GoBGP's neighbours: t0");
    let t0 = Instant::now();
    for n in [node_ip, bird_ip] {
        gobgp.gobgp(&["neighbor", "add", &n.to_string(), "as", "64512"])?;
    }
    let (mut s, mut b) = (Side::default(), Side::default());
    let deadline = t0 + Duration::from_secs(120);
    while Instant::now() < deadline && (s.programmed_s.is_none() || b.programmed_s.is_none()) {
        if s.learned_s.is_none() || s.established_s.is_none() {
            if let Some(v) = healthz_json(st, "/bgp") {
                let peer = v["peers"]
                    .as_array()
                    .and_then(|a| a.iter().find(|p| p["address"] == GOBGP))
                    .cloned()
                    .unwrap_or_default();
                if s.established_s.is_none() && peer["state"] == "Established" {
                    s.established_s = Some(secs(t0));
                }
                if v["best_routes"].as_u64().unwrap_or(0) as usize >= prefixes {
                    s.learned_s = Some(secs(t0));
                }
            }
        }
        if s.programmed_s.is_none() {
            if let Some(v) = healthz_json(st, "/healthz") {
                if v["routes"].as_u64().unwrap_or(0) as usize >= prefixes {
                    s.programmed_s = Some(secs(t0));
                }
            }
        }
        if b.established_s.is_none()
            && bird
                .protocol_state("gobgp")
                .is_ok_and(|x| x == "Established")
        {
            b.established_s = Some(secs(t0));
        }
        if b.learned_s.is_none() && bird.route_count().unwrap_or(0) >= prefixes {
            b.learned_s = Some(secs(t0));
        }
        if b.learned_s.is_some() && b.programmed_s.is_none() && kernel_routes(&bns) >= prefixes {
            b.programmed_s = Some(secs(t0));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let tck = crate::measure::clock_ticks_per_second().max(1.0);
    let agent_cpu_s = cpu(agent_pid).saturating_sub(cpu0.0) as f64 / tck;
    let bird_cpu_s = cpu(bird.pid()).saturating_sub(cpu0.1) as f64 / tck;
    let feed: sluice_api::Ipv4Net = "10.128.0.0/9".parse().map_err(other)?;
    let sluiced_routes = sluice_api::Client::new(&st.nodes[0].api_socket)
        .routes()
        .map_err(other)?
        .routes
        .iter()
        .filter(|r| feed.covers(&r.prefix))
        .count();
    if std::env::var_os("SLUICE_BGPB_DEBUG").is_some() {
        eprintln!("{:?}", bird.birdc("show protocols all gobgp"));
        eprintln!("{:?}", bird.birdc("show route count"));
        eprintln!("{:?}", bird.route_count());
    }
    let bird_routes = bird.route_count().unwrap_or(0);
    let bird_kernel_routes = kernel_routes(&bns);
    bird.stop();
    drop(gobgp);
    Ok(BgpBench {
        prefixes,
        gobgp_load_s,
        sluice: s,
        bird: b,
        sluiced_routes,
        bird_routes,
        bird_kernel_routes,
        agent_cpu_s,
        bird_cpu_s,
    })
}

fn show(t: Option<f64>) -> String {
    t.map(|t| format!("{t:.2} s"))
        .unwrap_or_else(|| "not reached".into())
}

/// The figures as text.
pub fn table(r: &BgpBench) -> String {
    let row = |name: &str, x: &Side, what: &str, cpu: f64| {
        format!(
            "{name:<6} Established {:>10}   all in its RIB {:>10} ({:>10} after Established)   all in {what} {:>10} ({:>10} after Established)   CPU {cpu:.2} s\n",
            show(x.established_s),
            show(x.learned_s),
            show(x.since_up(x.learned_s)),
            show(x.programmed_s),
            show(x.since_up(x.programmed_s)),
        )
    };
    format!(
        "{} prefixes (/26) from GoBGP (loaded in {:.1} s), timed from both neighbours' addition:\n{}{}sluiced lists {} of them, BIRD's table {}, its kernel {}; goal: every route in sluiced under 3 s after Established\n",
        r.prefixes,
        r.gobgp_load_s,
        row("sluice", &r.sluice, "sluiced", r.agent_cpu_s),
        row("BIRD", &r.bird, "kernel ", r.bird_cpu_s),
        r.sluiced_routes,
        r.bird_routes,
        r.bird_kernel_routes
    )
}
