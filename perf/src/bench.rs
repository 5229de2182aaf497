//! `sluice-lab bench`: the same pod-to-pod traffic across two nodes, through
//! sluice and through the kernel path flannel uses, in one run.
//!
//! For each dataplane a fresh two-node lab is built (sluice: `sluiced` on
//! both nodes; kernel: both nodes set up as flanneld sets up a vxlan or
//! host-gw node, pods on `cni0`), then, from pod 0 of node 1 to pod 0 of
//! node 2:
//!
//! - 64-byte UDP: `iperf3 -u -l 64 -b 0`, packets per second *received*;
//! - TCP throughput: `iperf3`, one stream;
//! - request/response latency: `sockperf ping-pong`, 64-byte messages, p50/p99.
//!
//! Results are ratios of sluice to the kernel measured in the same run, on
//! the same machine, one after the other. Output: a table on the terminal,
//! a JSON file and a Markdown report with SVG charts.

use crate::lab::{self, LabSpec, LabState, Mode};
use serde::Serialize;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// One dataplane's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    /// 64-byte UDP packets per second received.
    pub udp64_pps: f64,
    /// 64-byte UDP loss, percent.
    pub udp64_loss_pct: f64,
    /// TCP throughput, Gbit/s.
    pub tcp_gbps: f64,
    /// Request/response latency, median, microseconds.
    pub rr_p50_us: f64,
    /// Request/response latency, 99th percentile, microseconds.
    pub rr_p99_us: f64,
}

/// A whole bench run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Forwarding mode.
    pub mode: Mode,
    /// Seconds per measurement.
    pub seconds: u32,
    /// Through sluice.
    pub sluice: Figures,
    /// Through the kernel (flannel's configuration).
    pub kernel: Figures,
    /// sluice over kernel: UDP pps, TCP throughput, p50, p99 (lower is better for latency).
    pub ratios: Ratios,
    /// The machine: cores and CPU model.
    pub machine: String,
}

/// sluice / kernel.
#[derive(Debug, Clone, Serialize)]
pub struct Ratios {
    /// UDP pps ratio (target at least 3).
    pub udp64_pps: f64,
    /// TCP throughput ratio.
    pub tcp: f64,
    /// p50 latency ratio.
    pub rr_p50: f64,
    /// p99 latency ratio (target at most 0.7).
    pub rr_p99: f64,
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
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

fn output_of(ns: &str, args: &[&str]) -> Result<String, lab::LabError> {
    lab::ns_run(ns, args)
}

fn iperf3(
    client_ns: &str,
    server_ns: &str,
    server_ip: &str,
    extra: &[&str],
    seconds: u32,
) -> Result<serde_json::Value, lab::LabError> {
    let server = spawn_in(server_ns, &["iperf3", "-s", "-1", "-p", "5201"])
        .map_err(|e| lab::LabError::Other(format!("iperf3: {e}")))?;
    std::thread::sleep(Duration::from_millis(500));
    let t = seconds.to_string();
    let mut args = vec!["iperf3", "-c", server_ip, "-p", "5201", "-t", &t, "-J"];
    args.extend_from_slice(extra);
    let out = output_of(client_ns, &args);
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

fn measure(
    st: &LabState,
    seconds: u32,
    progress: &mut dyn FnMut(&str),
) -> Result<Figures, lab::LabError> {
    let (c, s) = (&st.nodes[0].pods[0], &st.nodes[1].pods[0]);
    let mut f = Figures::default();
    progress("  64-byte UDP, iperf3");
    let u = iperf3(&c.0, &s.0, &s.1, &["-u", "-b", "0", "-l", "64"], seconds)?;
    let sum = &u["end"]["sum"];
    let packets = sum["packets"].as_f64().unwrap_or(0.0);
    let lost = sum["lost_packets"].as_f64().unwrap_or(0.0);
    let secs = sum["seconds"].as_f64().unwrap_or(seconds as f64).max(0.001);
    f.udp64_pps = (packets - lost).max(0.0) / secs;
    f.udp64_loss_pct = sum["lost_percent"].as_f64().unwrap_or(0.0);
    progress("  TCP, iperf3");
    let t = iperf3(&c.0, &s.0, &s.1, &[], seconds)?;
    f.tcp_gbps = t["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0)
        / 1e9;
    progress("  request/response, sockperf ping-pong");
    let server = spawn_in(&s.0, &["sockperf", "sr", "-i", &s.1, "-p", "11111"])
        .map_err(|e| lab::LabError::Other(format!("sockperf: {e}")))?;
    std::thread::sleep(Duration::from_millis(500));
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &c.0,
            "sockperf",
            "pp",
            "-i",
            &s.1,
            "-p",
            "11111",
            "-m",
            "64",
            "-t",
            &seconds.to_string(),
        ])
        .output();
    stop(server);
    let out = out.map_err(|e| lab::LabError::Other(format!("sockperf: {e}")))?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    f.rr_p50_us = sockperf_percentile(&text, "50.000").unwrap_or(0.0);
    f.rr_p99_us = sockperf_percentile(&text, "99.000").unwrap_or(0.0);
    Ok(f)
}

/// Runs the comparison; `name` is the lab name used for both labs.
pub fn run(
    name: &str,
    mode: Mode,
    seconds: u32,
    rx_mode: Option<&str>,
    progress: &mut dyn FnMut(&str),
) -> Result<Report, lab::LabError> {
    let mut results = Vec::new();
    for (label, kernel) in [("sluice", false), ("kernel", true)] {
        progress(&format!("{label}: building a two-node {mode} lab"));
        let spec = LabSpec {
            name: name.into(),
            nodes: 2,
            mode,
            sluiced: !kernel,
            kernel_nodes: if kernel { vec![1, 2] } else { vec![] },
            rx_mode: rx_mode.map(str::to_string),
            workers: 1,
            store: Default::default(),
            direct_routing: false,
            network: None,
        };
        let st = lab::up(&spec, progress)?;
        // A first ping warms ARP and neighbour tables on both paths.
        let _ = output_of(
            &st.nodes[0].pods[0].0,
            &["ping", "-c", "2", "-W", "2", &st.nodes[1].pods[0].1],
        );
        let r = measure(&st, seconds, progress);
        lab::down(name)?;
        results.push(r?);
    }
    let kernel = results.pop().expect("two runs");
    let sluice = results.pop().expect("two runs");
    let ratios = Ratios {
        udp64_pps: ratio(sluice.udp64_pps, kernel.udp64_pps),
        tcp: ratio(sluice.tcp_gbps, kernel.tcp_gbps),
        rr_p50: ratio(sluice.rr_p50_us, kernel.rr_p50_us),
        rr_p99: ratio(sluice.rr_p99_us, kernel.rr_p99_us),
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
    Ok(Report {
        mode,
        seconds,
        sluice,
        kernel,
        ratios,
        machine: format!("{cores} cores, {cpu}"),
    })
}

/// The terminal table.
pub fn table(r: &Report) -> String {
    let rows = [
        (
            "64-byte UDP, packets/s received",
            r.sluice.udp64_pps,
            r.kernel.udp64_pps,
            r.ratios.udp64_pps,
            "≥ 3",
        ),
        (
            "TCP throughput, Gbit/s",
            r.sluice.tcp_gbps,
            r.kernel.tcp_gbps,
            r.ratios.tcp,
            "reported",
        ),
        (
            "request/response p50, µs",
            r.sluice.rr_p50_us,
            r.kernel.rr_p50_us,
            r.ratios.rr_p50,
            "reported",
        ),
        (
            "request/response p99, µs",
            r.sluice.rr_p99_us,
            r.kernel.rr_p99_us,
            r.ratios.rr_p99,
            "≤ 0.7",
        ),
    ];
    let mut s = format!("| {} mode, pod to pod across nodes, {} s each | sluice | kernel (flannel) | sluice / kernel | target |\n|---|---:|---:|---:|---|\n", r.mode, r.seconds);
    for (what, a, b, q, t) in rows {
        s += &format!("| {what} | {a:.2} | {b:.2} | {q:.2} | {t} |\n");
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
                r.sluice.udp64_pps,
                r.kernel.udp64_pps,
            ),
        ),
        (
            "tcp.svg",
            svg_bars(
                "TCP throughput",
                "Gbit/s",
                r.sluice.tcp_gbps,
                r.kernel.tcp_gbps,
            ),
        ),
        (
            "rr-p99.svg",
            svg_bars(
                "request/response p99 (lower is better)",
                "µs",
                r.sluice.rr_p99_us,
                r.kernel.rr_p99_us,
            ),
        ),
    ];
    let mut md = format!(
        "# sluice vs kernel flannel, {} mode\n\nTwo nodes in network namespaces on one machine ({}), pod to pod across nodes, {} s per measurement, sluice and the kernel measured one after the other in the same run (`sluice-lab bench`).\n\n{}\n",
        r.mode,
        r.machine,
        r.seconds,
        table(r)
    );
    for (file, svg) in &charts {
        std::fs::write(dir.join(file), svg)?;
        md += &format!("\n![{file}]({file})\n");
    }
    std::fs::write(dir.join("report.md"), md)
}
