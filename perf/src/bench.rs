//! `sluice-lab bench`: the same pod-to-pod traffic across two nodes, through
//! sluice and through the kernel path flannel uses, in one run.
//!
//! For each dataplane a fresh two-node lab is built (sluice: `sluiced` on
//! both nodes; kernel: both nodes set up as flanneld sets up a vxlan or
//! host-gw node, pods on `cni0` with the veth's offloads as the kernel
//! leaves them), then, from pod 0 of node 1 to pod 0 of node 2, in each of
//! `windows` rounds:
//!
//! - 64-byte UDP: `iperf3 -u -l 64 -b 0`, packets per second *received*, and
//!   where the rest were lost (every interface's drop counters, the
//!   receiving pod's UDP buffer errors, sluiced's drop reasons and its
//!   AF_XDP sockets' kernel drops, as deltas over the window);
//! - TCP throughput: `iperf3`, one stream;
//! - request/response latency: `sockperf ping-pong`, 64-byte messages, p50/p99.
//!
//! **Placement.** On a machine with two cores or more the generators
//! (iperf3 and sockperf, both ends) run on core 0 and forwarding on the
//! last core: sluiced's worker is pinned there, and a kernel node's receive
//! processing is steered there with RPS ([`LabSpec::forwarding_core`]). The
//! kernel lab then also measures TCP the way the kernel path is measured on
//! its own (`kernel_alone`): no RPS, client on core 0, server on core 1.
//!
//! Each figure is the median of the windows, with their minimum and
//! maximum. Results are ratios of sluice to the kernel measured in the same
//! run, on the same machine, one after the other. Output: a table on the
//! terminal, a JSON file and a Markdown report with SVG charts.

use crate::lab::{self, LabSpec, LabState, Mode};
use crate::measure::{self, Spread};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// One dataplane's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    /// 64-byte UDP packets per second received.
    pub udp64_pps: Spread,
    /// 64-byte UDP packets per second the sender sent.
    pub udp64_sent_pps: Spread,
    /// 64-byte UDP loss, percent.
    pub udp64_loss_pct: Spread,
    /// Where 64-byte UDP packets were dropped, summed over the windows:
    /// counter (namespace, interface or sluiced, name) to packets.
    pub udp64_drops: BTreeMap<String, u64>,
    /// TCP throughput, Gbit/s.
    pub tcp_gbps: Spread,
    /// Request/response latency, median, microseconds.
    pub rr_p50_us: Spread,
    /// Request/response latency, 99th percentile, microseconds.
    pub rr_p99_us: Spread,
    /// Kernel lab only: TCP measured as the kernel path is on its own (no
    /// RPS, client on core 0, server on core 1), Gbit/s.
    pub tcp_alone_gbps: Option<Spread>,
    /// sluice only: the CPU both sluiceds use with no traffic, percent of
    /// one core (measured over 2 s before the first window).
    pub idle_cpu_pct: Option<f64>,
}

/// A whole bench run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Forwarding mode.
    pub mode: Mode,
    /// Seconds per measurement.
    pub seconds: u32,
    /// Rounds of the three measurements.
    pub windows: u32,
    /// sluiced's rx mode.
    pub rx_mode: String,
    /// Where generators and forwarding ran.
    pub placement: String,
    /// Through sluice.
    pub sluice: Figures,
    /// Through the kernel (flannel's configuration).
    pub kernel: Figures,
    /// sluice over kernel, of the medians.
    pub ratios: Ratios,
    /// The machine: cores and CPU model.
    pub machine: String,
}

/// sluice / kernel, of the medians.
#[derive(Debug, Clone, Serialize)]
pub struct Ratios {
    /// UDP pps ratio (target at least 3).
    pub udp64_pps: f64,
    /// TCP throughput ratio (target at least 0.8).
    pub tcp: f64,
    /// p50 latency ratio (target below 1).
    pub rr_p50: f64,
    /// p99 latency ratio (target at most 1 in adaptive mode, 0.7 in poll mode).
    pub rr_p99: f64,
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

/// Cores for the generators and for forwarding: core 0 and the last core
/// on a machine with two or more, else nothing pinned.
pub fn placement() -> (Option<usize>, Option<usize>) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores >= 2 {
        (Some(0), Some(cores - 1))
    } else {
        (None, None)
    }
}

/// `args` run on `core` (with `taskset`) when one is given.
fn on_core<'a>(core: Option<usize>, core_text: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut v = Vec::new();
    if core.is_some() {
        v.extend_from_slice(&["taskset", "-c", core_text]);
    }
    v.extend_from_slice(args);
    v
}

fn spawn_in(ns: &str, args: &[&str]) -> std::io::Result<Child> {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
}

fn stop(mut c: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &c.id().to_string()])
        .status();
    let _ = c.wait();
}

/// Where the two ends of a measurement run.
#[derive(Debug, Clone, Copy)]
struct Ends {
    client: Option<usize>,
    server: Option<usize>,
}

fn iperf3(
    client_ns: &str,
    server_ns: &str,
    server_ip: &str,
    extra: &[&str],
    seconds: u32,
    ends: Ends,
) -> Result<serde_json::Value, lab::LabError> {
    let (cc, sc) = (
        ends.client.unwrap_or(0).to_string(),
        ends.server.unwrap_or(0).to_string(),
    );
    let server = spawn_in(
        server_ns,
        &on_core(ends.server, &sc, &["iperf3", "-s", "-1", "-p", "5201"]),
    )
    .map_err(|e| lab::LabError::Other(format!("iperf3: {e}")))?;
    std::thread::sleep(Duration::from_millis(500));
    let t = seconds.to_string();
    let mut args = on_core(
        ends.client,
        &cc,
        &["iperf3", "-c", server_ip, "-p", "5201", "-t", &t, "-J"],
    );
    args.extend_from_slice(extra);
    let out = lab::ns_run(client_ns, &args);
    stop(server);
    let out = out?;
    serde_json::from_str(&out).map_err(|e| lab::LabError::Other(format!("iperf3 output: {e}")))
}

/// Parses sockperf's percentile lines (`---> percentile 99.000 =   12.345`).
pub fn sockperf_percentile(text: &str, pct: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.contains("percentile") && l.contains(pct))
        .and_then(|l| l.rsplit('=').next())
        .and_then(|v| v.trim().parse().ok())
}

/// The `Udp:` counters of `/proc/net/snmp` (header line, then values).
pub fn udp_snmp(text: &str) -> BTreeMap<String, u64> {
    let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return BTreeMap::new();
    };
    names
        .split_whitespace()
        .skip(1)
        .zip(values.split_whitespace().skip(1))
        .filter_map(|(n, v)| Some((n.to_string(), v.parse().ok()?)))
        .collect()
}

/// Every drop counter of the lab: each interface's RX and TX drops in each
/// namespace, the pods' UDP errors, and each sluiced's drop reasons and
/// its AF_XDP sockets' kernel-side drops.
fn drop_counters(st: &LabState) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for ns in &st.namespaces {
        if let Ok(out) = lab::run(&["ip", "-n", ns, "-s", "-j", "link", "show"]) {
            let links: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
            for l in links.as_array().into_iter().flatten() {
                let dev = l["ifname"].as_str().unwrap_or("?");
                for (dir, what) in [("rx", "dropped"), ("rx", "missed"), ("tx", "dropped")] {
                    if let Some(v) = l["stats64"][dir][what].as_u64() {
                        m.insert(format!("{ns} {dev} {dir}_{what}"), v);
                    }
                }
            }
        }
        if st.nodes.iter().any(|n| n.pods.iter().any(|p| &p.0 == ns)) {
            if let Ok(out) = lab::ns_run(ns, &["cat", "/proc/net/snmp"]) {
                for (k, v) in udp_snmp(&out) {
                    if k.contains("Errors") {
                        m.insert(format!("{ns} udp {k}"), v);
                    }
                }
            }
        }
    }
    for n in st.nodes.iter().filter(|n| !n.kernel) {
        let Ok(stats) = sluice_api::Client::new(&n.api_socket).stats() else {
            continue;
        };
        for (reason, v) in stats.nonzero_drops() {
            m.insert(format!("{} sluiced drop {reason}", n.ns), v);
        }
        for (port, p) in &stats.ports {
            m.insert(format!("{} sluiced {port} tx_dropped", n.ns), p.tx_dropped);
            if let Some(x) = &p.xsk {
                m.insert(
                    format!("{} sluiced {port} xsk rx_dropped", n.ns),
                    x.rx_dropped,
                );
                m.insert(
                    format!("{} sluiced {port} xsk rx_ring_full", n.ns),
                    x.rx_ring_full,
                );
            }
        }
    }
    m
}

fn add_deltas(
    into: &mut BTreeMap<String, u64>,
    before: &BTreeMap<String, u64>,
    after: BTreeMap<String, u64>,
) {
    for (k, v) in after {
        let d = v.saturating_sub(before.get(&k).copied().unwrap_or(0));
        if d > 0 {
            *into.entry(k).or_default() += d;
        }
    }
}

/// The CPU the lab's sluiceds use over `secs` with no traffic, percent of one core.
fn idle_cpu(st: &LabState, secs: u64) -> Option<f64> {
    let pids: Vec<u32> = st.nodes.iter().filter_map(|n| n.sluiced_pid).collect();
    if pids.is_empty() {
        return None;
    }
    let total = |pids: &[u32]| -> Option<u64> {
        pids.iter()
            .map(|&p| measure::pid_cpu_ticks(p).map(|(u, s)| u + s))
            .sum()
    };
    let before = total(&pids)?;
    std::thread::sleep(Duration::from_secs(secs));
    let after = total(&pids)?;
    let hz = measure::clock_ticks_per_second();
    Some((after - before) as f64 / hz / secs as f64 * 100.0)
}

/// One round: 64-byte UDP, TCP, request/response.
#[derive(Debug, Default)]
struct Round {
    udp_pps: f64,
    udp_sent_pps: f64,
    udp_loss_pct: f64,
    tcp_gbps: f64,
    rr_p50: f64,
    rr_p99: f64,
}

fn tcp_gbps(v: &serde_json::Value) -> f64 {
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0)
        / 1e9
}

fn round(
    st: &LabState,
    seconds: u32,
    ends: Ends,
    drops: &mut BTreeMap<String, u64>,
    progress: &mut dyn FnMut(&str),
) -> Result<Round, lab::LabError> {
    let (c, s) = (&st.nodes[0].pods[0], &st.nodes[1].pods[0]);
    let mut r = Round::default();
    progress("  64-byte UDP, iperf3");
    let before = drop_counters(st);
    let u = iperf3(
        &c.0,
        &s.0,
        &s.1,
        &["-u", "-b", "0", "-l", "64"],
        seconds,
        ends,
    )?;
    add_deltas(drops, &before, drop_counters(st));
    let sum = &u["end"]["sum"];
    let packets = sum["packets"].as_f64().unwrap_or(0.0);
    let lost = sum["lost_packets"].as_f64().unwrap_or(0.0);
    let secs = sum["seconds"].as_f64().unwrap_or(seconds as f64).max(0.001);
    r.udp_pps = (packets - lost).max(0.0) / secs;
    r.udp_sent_pps = packets / secs;
    r.udp_loss_pct = sum["lost_percent"].as_f64().unwrap_or(0.0);
    progress("  TCP, iperf3");
    r.tcp_gbps = tcp_gbps(&iperf3(&c.0, &s.0, &s.1, &[], seconds, ends)?);
    progress("  request/response, sockperf ping-pong");
    let (cc, sc) = (
        ends.client.unwrap_or(0).to_string(),
        ends.server.unwrap_or(0).to_string(),
    );
    let server = spawn_in(
        &s.0,
        &on_core(
            ends.server,
            &sc,
            &["sockperf", "sr", "-i", &s.1, "-p", "11111"],
        ),
    )
    .map_err(|e| lab::LabError::Other(format!("sockperf: {e}")))?;
    std::thread::sleep(Duration::from_millis(500));
    let t = seconds.to_string();
    let mut args = vec!["netns", "exec", &c.0];
    args.extend(on_core(
        ends.client,
        &cc,
        &[
            "sockperf", "pp", "-i", &s.1, "-p", "11111", "-m", "64", "-t", &t,
        ],
    ));
    let out = Command::new("ip").args(&args).output();
    stop(server);
    let out = out.map_err(|e| lab::LabError::Other(format!("sockperf: {e}")))?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    r.rr_p50 = sockperf_percentile(&text, "50.000").unwrap_or(0.0);
    r.rr_p99 = sockperf_percentile(&text, "99.000").unwrap_or(0.0);
    Ok(r)
}

fn measure(
    st: &LabState,
    seconds: u32,
    windows: u32,
    generators: Option<usize>,
    progress: &mut dyn FnMut(&str),
) -> Result<Figures, lab::LabError> {
    let ends = Ends {
        client: generators,
        server: generators,
    };
    let idle_cpu_pct = idle_cpu(st, 2);
    let mut rounds = Vec::new();
    let mut drops = BTreeMap::new();
    for w in 1..=windows {
        progress(&format!(" window {w} of {windows}"));
        rounds.push(round(st, seconds, ends, &mut drops, progress)?);
    }
    let spread = |f: fn(&Round) -> f64| {
        Spread::of(&rounds.iter().map(f).collect::<Vec<_>>()).unwrap_or_default()
    };
    Ok(Figures {
        udp64_pps: spread(|r| r.udp_pps),
        udp64_sent_pps: spread(|r| r.udp_sent_pps),
        udp64_loss_pct: spread(|r| r.udp_loss_pct),
        udp64_drops: drops,
        tcp_gbps: spread(|r| r.tcp_gbps),
        rr_p50_us: spread(|r| r.rr_p50),
        rr_p99_us: spread(|r| r.rr_p99),
        tcp_alone_gbps: None,
        idle_cpu_pct,
    })
}

/// TCP through a kernel lab measured as the kernel path is on its own:
/// RPS off, client on core 0, server on core 1.
fn kernel_alone_tcp(
    st: &LabState,
    seconds: u32,
    windows: u32,
    progress: &mut dyn FnMut(&str),
) -> Result<Spread, lab::LabError> {
    for n in &st.nodes {
        let mut devs: Vec<String> = (0..n.pods.len()).map(|j| format!("pod{j}")).collect();
        devs.push("eth0".into());
        for dev in &devs {
            lab::steer_receive(&n.ns, dev, None)?;
        }
    }
    let (c, s) = (&st.nodes[0].pods[0], &st.nodes[1].pods[0]);
    let ends = Ends {
        client: Some(0),
        server: Some(1),
    };
    let mut v = Vec::new();
    for w in 1..=windows {
        progress(&format!(
            "  TCP as measured on its own, window {w} of {windows}"
        ));
        v.push(tcp_gbps(&iperf3(&c.0, &s.0, &s.1, &[], seconds, ends)?));
    }
    Ok(Spread::of(&v).unwrap_or_default())
}

/// Runs the comparison; `name` is the lab name used for both labs.
pub fn run(
    name: &str,
    mode: Mode,
    seconds: u32,
    windows: u32,
    rx_mode: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<Report, lab::LabError> {
    if windows == 0 {
        return Err(lab::LabError::Other("--windows: at least 1".into()));
    }
    let (generators, forwarding) = placement();
    let mut results = Vec::new();
    for (label, kernel) in [("sluice", false), ("kernel", true)] {
        progress(&format!("{label}: building a two-node {mode} lab"));
        let spec = LabSpec {
            sluiced: !kernel,
            kernel_nodes: if kernel { vec![1, 2] } else { vec![] },
            rx_mode: Some(rx_mode.to_string()),
            forwarding_core: forwarding,
            ..LabSpec::new(name, 2, mode)
        };
        let st = lab::up(&spec, progress)?;
        // A first ping warms ARP and neighbour tables on both paths.
        let _ = lab::ns_run(
            &st.nodes[0].pods[0].0,
            &["ping", "-c", "2", "-W", "2", &st.nodes[1].pods[0].1],
        );
        let mut r = measure(&st, seconds, windows, generators, progress);
        if kernel && generators.is_some() {
            if let Ok(f) = &mut r {
                match kernel_alone_tcp(&st, seconds, windows, progress) {
                    Ok(t) => f.tcp_alone_gbps = Some(t),
                    Err(e) => r = Err(e),
                }
            }
        }
        lab::down(name)?;
        results.push(r?);
    }
    let kernel = results.pop().expect("two runs");
    let sluice = results.pop().expect("two runs");
    let ratios = Ratios {
        udp64_pps: ratio(sluice.udp64_pps.median, kernel.udp64_pps.median),
        tcp: ratio(sluice.tcp_gbps.median, kernel.tcp_gbps.median),
        rr_p50: ratio(sluice.rr_p50_us.median, kernel.rr_p50_us.median),
        rr_p99: ratio(sluice.rr_p99_us.median, kernel.rr_p99_us.median),
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let placement = match (generators, forwarding) {
        (Some(g), Some(f)) => format!(
            "generators (both ends) on core {g}; forwarding on core {f} (sluiced's worker pinned, the kernel nodes' receive steered with RPS)"
        ),
        _ => "one core: nothing pinned".to_string(),
    };
    Ok(Report {
        mode,
        seconds,
        windows,
        rx_mode: rx_mode.to_string(),
        placement,
        sluice,
        kernel,
        ratios,
        machine: format!("{cores} cores, {cpu}"),
    })
}

/// The p99 target for an rx mode: no worse than the kernel in the default
/// (adaptive) mode, 0.7x with dedicated polling cores.
pub fn p99_target(rx_mode: &str) -> &'static str {
    match rx_mode {
        "poll" => "≤ 0.7",
        "adaptive" => "≤ 1",
        _ => "reported",
    }
}

/// A target with whether the ratio `q` meets it: `≥ 3: met`, `≤ 1: missed`;
/// rows without a numeric target are shown as they are.
pub fn verdict(target: &str, q: f64) -> String {
    let parse = |t: &str| t.trim().parse::<f64>().ok();
    let met = [
        ("≥", f64::ge as fn(&f64, &f64) -> bool),
        ("≤", f64::le),
        ("<", f64::lt),
    ]
    .into_iter()
    .find_map(|(op, cmp)| target.strip_prefix(op).and_then(parse).map(|v| cmp(&q, &v)));
    match met {
        Some(true) => format!("{target}: met"),
        Some(false) => format!("{target}: missed"),
        None => target.to_string(),
    }
}

/// The largest drop counters of one dataplane's UDP windows, at most `n`.
pub fn top_drops(f: &Figures, n: usize) -> Vec<(&str, u64)> {
    let mut v: Vec<(&str, u64)> = f
        .udp64_drops
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    v.truncate(n);
    v
}

/// The terminal table: medians with (min–max) over the windows, then where
/// 64-byte UDP packets were dropped.
pub fn table(r: &Report) -> String {
    let rows = [
        (
            "64-byte UDP, packets/s received",
            &r.sluice.udp64_pps,
            &r.kernel.udp64_pps,
            r.ratios.udp64_pps,
            "≥ 3",
            0,
        ),
        (
            "64-byte UDP, packets/s sent",
            &r.sluice.udp64_sent_pps,
            &r.kernel.udp64_sent_pps,
            ratio(
                r.sluice.udp64_sent_pps.median,
                r.kernel.udp64_sent_pps.median,
            ),
            "",
            0,
        ),
        (
            "64-byte UDP, loss %",
            &r.sluice.udp64_loss_pct,
            &r.kernel.udp64_loss_pct,
            ratio(
                r.sluice.udp64_loss_pct.median,
                r.kernel.udp64_loss_pct.median,
            ),
            "",
            1,
        ),
        (
            "TCP throughput, Gbit/s",
            &r.sluice.tcp_gbps,
            &r.kernel.tcp_gbps,
            r.ratios.tcp,
            "≥ 0.8",
            2,
        ),
        (
            "request/response p50, µs",
            &r.sluice.rr_p50_us,
            &r.kernel.rr_p50_us,
            r.ratios.rr_p50,
            "< 1",
            1,
        ),
        (
            "request/response p99, µs",
            &r.sluice.rr_p99_us,
            &r.kernel.rr_p99_us,
            r.ratios.rr_p99,
            p99_target(&r.rx_mode),
            1,
        ),
    ];
    let mut s = format!(
        "| {} mode, rx mode {}, pod to pod across nodes, median (min–max) of {} windows of {} s | sluice | kernel (flannel) | sluice / kernel | target |\n|---|---:|---:|---:|---|\n",
        r.mode, r.rx_mode, r.windows, r.seconds
    );
    for (what, a, b, q, t, d) in rows {
        s += &format!(
            "| {what} | {} | {} | {q:.2} | {} |\n",
            a.show(d),
            b.show(d),
            verdict(t, q)
        );
    }
    if let Some(idle) = r.sluice.idle_cpu_pct {
        s += &format!("| CPU with no traffic, % of a core (both nodes) | {idle:.1} | 0 | | |\n");
    }
    if let Some(alone) = &r.kernel.tcp_alone_gbps {
        s += &format!(
            "| TCP, kernel as measured on its own (no RPS, client core 0, server core 1), Gbit/s | | {} | {:.2} | |\n",
            alone.show(2),
            ratio(r.sluice.tcp_gbps.median, alone.median)
        );
    }
    s += &format!("\nPlacement: {}.\n", r.placement);
    for (label, f) in [("sluice", &r.sluice), ("kernel", &r.kernel)] {
        let top = top_drops(f, 6);
        if top.is_empty() {
            s += &format!("\n{label}: no drop counter moved during the UDP windows.\n");
        } else {
            s += &format!("\n{label}: drops during the UDP windows (all windows):\n");
            for (k, v) in top {
                s += &format!("  {v:>12}  {k}\n");
            }
        }
    }
    s
}

fn svg_bars(title: &str, unit: &str, sluice: f64, kernel: f64) -> String {
    let max = sluice.max(kernel).max(1e-9);
    let w = |v: f64| (v / max * 300.0).round();
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"480\" height=\"110\" font-family=\"sans-serif\" font-size=\"13\">\
<text x=\"10\" y=\"18\" font-weight=\"bold\">{title}</text>\
<text x=\"10\" y=\"48\">sluice</text><rect x=\"70\" y=\"35\" width=\"{}\" height=\"20\" fill=\"#2a7ab8\"/><text x=\"{}\" y=\"50\">{sluice:.2} {unit}</text>\
<text x=\"10\" y=\"83\">kernel</text><rect x=\"70\" y=\"70\" width=\"{}\" height=\"20\" fill=\"#999\"/><text x=\"{}\" y=\"85\">{kernel:.2} {unit}</text></svg>",
        w(sluice),
        w(sluice) + 76.0,
        w(kernel),
        w(kernel) + 76.0
    )
}

/// Writes `bench.json`, `report.md` and the charts into `dir`.
pub fn write(r: &Report, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("bench.json"),
        serde_json::to_vec_pretty(r).expect("report serializes"),
    )?;
    let charts = [
        (
            "udp64.svg",
            svg_bars(
                "64-byte UDP received",
                "pps",
                r.sluice.udp64_pps.median,
                r.kernel.udp64_pps.median,
            ),
        ),
        (
            "tcp.svg",
            svg_bars(
                "TCP throughput",
                "Gbit/s",
                r.sluice.tcp_gbps.median,
                r.kernel.tcp_gbps.median,
            ),
        ),
        (
            "rr-p99.svg",
            svg_bars(
                "request/response p99 (lower is better)",
                "µs",
                r.sluice.rr_p99_us.median,
                r.kernel.rr_p99_us.median,
            ),
        ),
    ];
    let mut md = format!(
        "# sluice vs kernel flannel, {} mode\n\nTwo nodes in network namespaces on one machine ({}), pod to pod across nodes, {} windows of {} s per measurement, sluice (rx mode {}) and the kernel measured one after the other in the same run (`sluice-lab bench`).\n\n{}\n",
        r.mode,
        r.machine,
        r.windows,
        r.seconds,
        r.rx_mode,
        table(r)
    );
    for (file, svg) in &charts {
        std::fs::write(dir.join(file), svg)?;
        md += &format!("\n![{file}]({file})\n");
    }
    std::fs::write(dir.join("report.md"), md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_counters_are_read_from_proc_net_snmp() {
        let text = "Ip: Forwarding DefaultTTL\nIp: 1 64\nUdp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\nUdp: 100 0 7 5 7 0 0 0 0\nUdpLite: InDatagrams\nUdpLite: 0\n";
        let m = udp_snmp(text);
        assert_eq!(m.get("InDatagrams"), Some(&100));
        assert_eq!(m.get("RcvbufErrors"), Some(&7));
        assert_eq!(m.len(), 9);
        assert!(udp_snmp("Ip: 1\n").is_empty());
    }

    #[test]
    fn drops_count_only_what_moved() {
        let before = BTreeMap::from([("a".to_string(), 5u64), ("b".to_string(), 1)]);
        let after = BTreeMap::from([
            ("a".to_string(), 9u64),
            ("b".to_string(), 1),
            ("c".to_string(), 2),
        ]);
        let mut into = BTreeMap::from([("a".to_string(), 1u64)]);
        add_deltas(&mut into, &before, after);
        assert_eq!(
            into,
            BTreeMap::from([("a".to_string(), 5), ("c".to_string(), 2)])
        );
    }

    #[test]
    fn verdicts_compare_the_ratio_with_the_target() {
        assert_eq!(verdict("≥ 3", 3.2), "≥ 3: met");
        assert_eq!(verdict("≥ 3", 1.4), "≥ 3: missed");
        assert_eq!(verdict("≤ 1", 1.03), "≤ 1: missed");
        assert_eq!(verdict("≤ 0.7", 0.5), "≤ 0.7: met");
        assert_eq!(verdict("< 1", 0.75), "< 1: met");
        assert_eq!(verdict("reported", 2.0), "reported");
        assert_eq!(verdict("", 2.0), "");
    }

    #[test]
    fn the_p99_target_follows_the_rx_mode() {
        assert_eq!(p99_target("adaptive"), "≤ 1");
        assert_eq!(p99_target("poll"), "≤ 0.7");
        assert_eq!(p99_target("interrupt"), "reported");
    }
}
