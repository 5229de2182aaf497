//! sluiced's memory at its limits (`sluice-lab limits`).
//!
//! 1. A two-node host-gw lab; node 1's agent is stopped, so nothing but
//!    this benchmark changes its sluiced's tables.
//! 2. The resident set (`VmRSS`) and its peak (`VmHWM`) of node 1's sluiced
//!    are read from `/proc/<pid>/status` after each step:
//!    - at start (the lab's two pods attached);
//!    - after up to `pods` more pod ports on veths made in node 1's
//!      namespace, added through `ports.add` one at a time, as the CNI
//!      plugin adds them, until one is refused;
//!    - after `routes` host-gw `/24`s in all (`32.0.0.0` upwards, to node
//!      2), added through `routes.add` in batches of 65,536;
//!    - after `neighbours` static underlay neighbours (`172.16.0.0/12`,
//!      outside the underlay), in batches of 65,536.
//! 3. One more route, neighbour and (when `pods` reaches the port limit)
//!    port is sent past each limit; the refusals are reported.
//!
//! At the defaults (`routes` 1,048,576 and `neighbours` 65,536, the
//! `[daemon.limits]` defaults) the figures are the daemon's memory at its
//! maxima. Ports are bounded in practice by the workers' UMEM frames before
//! the 1023-port limit (one worker holds frames for 104 pods), so pods are
//! added until one is refused. Nothing here is asserted: these are
//! benchmark figures.

use crate::cluster;
use crate::lab::{self, LabError, LabSpec, LabState, Mode};
use serde::Serialize;
use sluice_api::{Client, Ipv4Net, MacAddr, NeighbourConfig, PortConfig, RouteConfig};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, LabError>;

fn other(e: impl std::fmt::Display) -> LabError {
    LabError::Other(e.to_string())
}

/// Entries per request.
const BATCH: usize = 65_536;

/// sluiced's memory after one step.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// What the switch held then.
    pub what: String,
    /// Resident set, MiB.
    pub rss_mib: f64,
    /// Peak resident set so far, MiB.
    pub hwm_mib: f64,
    /// Seconds the step took (the API calls).
    pub seconds: f64,
}

/// The figures.
#[derive(Debug, Clone, Serialize)]
pub struct LimitsBench {
    /// Routes added.
    pub routes: usize,
    /// Neighbours set.
    pub neighbours: usize,
    /// Pod ports added (besides the lab's own).
    pub pods: usize,
    /// Memory after each step.
    pub steps: Vec<Step>,
    /// The error of each request past a limit (`None`: it was accepted).
    pub past_limits: Vec<(String, Option<String>)>,
    /// The size of the saved tables file at the end, bytes.
    pub saved_tables_bytes: u64,
}

/// `VmRSS` and `VmHWM` of `pid`, MiB.
pub fn memory_mib(pid: u32) -> Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(other)?;
    let field = |name: &str| -> Result<f64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .ok_or_else(|| other(format!("no {name} in /proc/{pid}/status")))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// Reads sluiced's memory after a step.
fn record(
    pid: u32,
    steps: &mut Vec<Step>,
    progress: &mut dyn FnMut(&str),
    what: String,
    t: Instant,
) -> Result<()> {
    let seconds = t.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));
    let (rss, hwm) = memory_mib(pid)?;
    progress(&format!(
        "{what}: RSS {rss:.1} MiB (peak {hwm:.1}) after {seconds:.2} s"
    ));
    steps.push(Step {
        what,
        rss_mib: rss,
        hwm_mib: hwm,
        seconds,
    });
    Ok(())
}

/// The i-th benchmark route: `/24`s from `32.0.0.0`.
fn route_prefix(i: usize) -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::from(0x2000_0000u32 + ((i as u32) << 8)), 24).expect("aligned")
}

/// Runs the benchmark (see the module docs).
pub fn run(
    name: &str,
    routes: usize,
    neighbours: usize,
    pods: usize,
    progress: &mut dyn FnMut(&str),
) -> Result<LimitsBench> {
    let _ = lab::down(name);
    let mut state = lab::up(&LabSpec::new(name, 2, Mode::HostGw), progress)?;
    let r = measure(&mut state, routes, neighbours, pods, progress);
    let _ = lab::down(name);
    r
}

fn measure(
    state: &mut LabState,
    routes: usize,
    neighbours: usize,
    pods: usize,
    progress: &mut dyn FnMut(&str),
) -> Result<LimitsBench> {
    cluster::stop_agent(state, 0, false);
    let node = state.nodes[0].clone();
    let pid = node
        .sluiced_pid
        .ok_or_else(|| other("node 1 runs no sluiced"))?;
    let client = Client::new(&node.api_socket).with_timeout(Duration::from_secs(120));
    let mut steps = Vec::new();
    record(
        pid,
        &mut steps,
        progress,
        "start: the lab's pods".into(),
        Instant::now(),
    )?;

    let t = Instant::now();
    let mut added = 0;
    let subnet: Ipv4Net = node.subnet.parse().map_err(other)?;
    for k in 0..pods {
        let dev = format!("lim{k}");
        let peer_dev = format!("lip{k}");
        lab::ns_run(
            &node.ns,
            &[
                "ip", "link", "add", &dev, "type", "veth", "peer", "name", &peer_dev,
            ],
        )?;
        lab::ns_run(&node.ns, &["ip", "link", "set", &dev, "up"])?;
        lab::ns_run(&node.ns, &["ip", "link", "set", &peer_dev, "up"])?;
        let ip = Ipv4Addr::from(u32::from(subnet.addr()) + 100 + k as u32);
        let mac = MacAddr::from([2, 0xdd, 0, 0, (k >> 8) as u8, k as u8]);
        let port = PortConfig::pod(dev, mac, ip, Mode::HostGw.pod_mtu());
        match client.add_ports(vec![port]) {
            Ok(_) => added += 1,
            Err(e) => {
                progress(&format!("pod {k} refused, stopping there: {e}"));
                break;
            }
        }
    }
    record(pid, &mut steps, progress, format!("{added} more pods"), t)?;

    let peer: Ipv4Addr = state.nodes[1].ip.parse().map_err(other)?;
    // The lab's own routes count too (pods' own /32s do not).
    let held = client
        .routes()
        .map_err(other)?
        .routes
        .iter()
        .filter(|r| r.via != sluice_api::Via::Pod)
        .count();
    let add = routes.saturating_sub(held);
    let t = Instant::now();
    for start in (0..add).step_by(BATCH) {
        let batch: Vec<RouteConfig> = (start..(start + BATCH).min(add))
            .map(|i| RouteConfig {
                prefix: route_prefix(i),
                via: sluice_api::Via::HostGw,
                node: Some(peer),
                vtep_mac: None,
                port: None,
            })
            .collect();
        client.add_routes(batch).map_err(other)?;
    }
    record(pid, &mut steps, progress, format!("{routes} routes"), t)?;

    let t = Instant::now();
    let neighbour = |i: usize| NeighbourConfig {
        ip: Ipv4Addr::from(0xac10_0000u32 + i as u32),
        mac: MacAddr::from([2, 0xee, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8]),
        learned: false,
    };
    let held = client.neighbours().map_err(other)?.neighbours.len();
    let want = neighbours.saturating_sub(held);
    for start in (0..want).step_by(BATCH) {
        let batch: Vec<NeighbourConfig> =
            (start..(start + BATCH).min(want)).map(neighbour).collect();
        client.set_neighbours(batch).map_err(other)?;
    }
    record(
        pid,
        &mut steps,
        progress,
        format!("{neighbours} neighbours"),
        t,
    )?;

    // The saved tables catch up: a file written after the last change
    // (writes are spaced ten times their own length apart).
    let saved = lab::saved_tables_path(state, 0);
    let changed = std::time::SystemTime::now();
    let t = Instant::now();
    let mut saved_tables_bytes = 0;
    while t.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(200));
        if let Ok(m) = std::fs::metadata(&saved) {
            if m.modified().is_ok_and(|w| w > changed) {
                saved_tables_bytes = m.len();
                break;
            }
        }
    }
    progress(&format!(
        "saved tables ({}): {:.1} MB, written {:.1} s after the last change",
        saved.display(),
        saved_tables_bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    ));
    let mut past = Vec::new();
    let refusal =
        |r: std::result::Result<(), sluice_api::ClientError>| r.err().map(|e| e.to_string());
    past.push((
        "one more route".to_string(),
        refusal(
            client
                .add_routes(vec![RouteConfig {
                    prefix: route_prefix(add),
                    via: sluice_api::Via::HostGw,
                    node: Some(peer),
                    vtep_mac: None,
                    port: None,
                }])
                .map(|_| ()),
        ),
    ));
    past.push((
        "one more neighbour".to_string(),
        refusal(client.set_neighbours(vec![neighbour(want)]).map(|_| ())),
    ));
    Ok(LimitsBench {
        routes,
        neighbours,
        pods: added,
        steps,
        past_limits: past,
        saved_tables_bytes,
    })
}

/// A Markdown table of the figures.
pub fn table(b: &LimitsBench) -> String {
    let mut s =
        String::from("| sluiced holds | RSS MiB | peak MiB | step s |\n|---|---|---|---|\n");
    for st in &b.steps {
        s += &format!(
            "| {} | {:.1} | {:.1} | {:.2} |\n",
            st.what, st.rss_mib, st.hwm_mib, st.seconds
        );
    }
    s += &format!(
        "\nsaved tables: {:.1} MB\n",
        b.saved_tables_bytes as f64 / 1e6
    );
    for (what, e) in &b.past_limits {
        s += &format!(
            "{what}: {}\n",
            e.as_deref().unwrap_or("accepted (below the limit)")
        );
    }
    s
}
