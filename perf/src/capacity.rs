//! `sluice-lab capacity`: per-core forwarding capacity of one node, sluice
//! on AF_XDP against the kernel path flannel uses (issue 12, "measure the
//! switch, not the generator").
//!
//! Each case gets its own small topology of three namespaces, so that what
//! receives the node's output does not land on the measured core:
//!
//! ```text
//!  <p>-p (pod)  eth0 ─── veth ─── pod-a ┐
//!                                       │ <p>-n (node): sluiced, or flannel's kernel config
//!  <p>-w (wire) wire0 ── veth ─── eth0 ─┘ 192.168.50.1/24 (uplink)
//! ```
//!
//! The node is the reference node of `dataplane/tests/golden/node.toml`
//! (pod-a 10.5.1.2, VXLAN peer 192.168.50.2 for 10.5.2.0/24, host-gw peer
//! 192.168.50.4 for 10.5.4.0/24), the input frames those of
//! [`crate::dpdk_bench`]: 64-byte UDP frames from pod-a (encap, host-gw) and
//! 110-byte VXLAN frames from node B (decap).
//!
//! - **generator**: `dpdk-testpmd --forward-mode=io` in the sending
//!   namespace (pod for encap and host-gw, wire for decap), a `net_pcap` vdev
//!   replaying the capture forever into a `net_af_packet` vdev on the sending
//!   veth (`qdisc_bypass=1`), the whole process on core 0 (`taskset -c 0`,
//!   `--lcores=0@0,1@0`).
//! - **sink**: the far end of the node's output veth (`wire0`, or the pod's
//!   `eth0` for decap) has a MAC the frames do not carry, so its kernel drops
//!   them as `PACKET_OTHERHOST` in `ip_rcv`, inline on the core that sent
//!   them (the forwarding core), the same small cost for every contender.
//!   Steering that drop to core 0 with RPS was tried and dropped: each RPS
//!   batch costs the sending core an IPI, a VM exit on this machine's vCPUs
//!   (39% of sluice's core in `native_write_msr`), far more than the drop.
//! - **count**: the node's output interface's `tx_packets` (what the veth
//!   handed to the sink), the same counter for both dataplanes.
//! - **sluice**: `sluiced` with one worker on core 1, `rx_mode = "poll"`,
//!   AF_XDP in copy mode (veth has no zero-copy) with its XDP program native
//!   on the node's veths. veth runs XDP in its NAPI, scheduled on the CPU
//!   that sent the frame (core 0, the generator's): `sluice` makes that NAPI
//!   threaded and pins its kthread to core 1, so every forwarding step is on
//!   core 1; `sluice-softirq-napi` leaves it in the sender's softirq on core
//!   0 (charged to sluice's CPU time per packet, not to its core).
//! - **kernel**: the node as flanneld and the flannel CNI plugin set it up
//!   (`cni0` bridge, `flannel.1` VXLAN VNI 1 port 8472 with its neighbour,
//!   FDB entry and onlink route; host-gw: a route via the peer), offloads
//!   left as they are; the receiving veth's RPS steers all of the node's
//!   forwarding softirq to core 1.
//! - **generator ceiling**: the generator into the same veth with nothing
//!   forwarding (the node drops the frames, RPS on core 1), counted as the
//!   node's `rx_packets`.
//!
//! CPU time per packet: the busy ticks of every core in `/proc/stat`
//! (user, nice, system, irq, softirq) over the window, less the generator's
//! own time (its `utime` + `stime` from `/proc/PID/stat`, less the irq and
//! softirq ticks taken on core 0 in its context: without
//! `CONFIG_IRQ_TIME_ACCOUNTING` a softirq is charged to the task it
//! interrupts), divided by the packets counted. It includes the sink's
//! cheap drop, which the generator-ceiling run measures on its own.

use crate::dpdk_bench::{self as db, Case, Proc};
use crate::lab::LabError;
use crate::measure::{pid_cpu_ticks, Spread};
use serde::Serialize;
use sluice_dataplane::craft;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn other(e: impl std::fmt::Display) -> LabError {
    LabError::Other(e.to_string())
}

/// Where the generator runs.
pub const GENERATOR_CPU: usize = 0;
/// The measured core.
pub const FORWARDING_CPU: usize = 1;

/// What is measured on a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Contender {
    /// The generator alone into a dropping node.
    Generator,
    /// The kernel path flannel uses.
    Kernel,
    /// sluiced on AF_XDP, veth NAPI threaded on the forwarding core.
    Sluice,
    /// sluiced on AF_XDP, veth NAPI in the sender's softirq (core 0).
    SluiceSoftirqNapi,
}

impl Contender {
    /// Every contender, in table order.
    pub const ALL: [Contender; 4] = [
        Contender::Generator,
        Contender::Kernel,
        Contender::Sluice,
        Contender::SluiceSoftirqNapi,
    ];

    /// Short name (JSON, options).
    pub fn name(self) -> &'static str {
        match self {
            Contender::Generator => "generator",
            Contender::Kernel => "kernel",
            Contender::Sluice => "sluice",
            Contender::SluiceSoftirqNapi => "sluice-softirq-napi",
        }
    }
}

impl std::str::FromStr for Contender {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Contender::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| {
                format!("unknown contender `{s}` (generator, kernel, sluice, sluice-softirq-napi)")
            })
    }
}

// ---------------------------------------------------------------------------
// /proc parsing and CPU arithmetic

/// One CPU's line of `/proc/stat`, in clock ticks (`USER_HZ`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CpuTicks {
    /// user + nice.
    pub user: u64,
    /// system.
    pub system: u64,
    /// idle + iowait.
    pub idle: u64,
    /// irq.
    pub irq: u64,
    /// softirq.
    pub softirq: u64,
    /// steal.
    pub steal: u64,
}

impl CpuTicks {
    /// Ticks spent working: user, nice, system, irq, softirq.
    pub fn busy(&self) -> u64 {
        self.user + self.system + self.irq + self.softirq
    }
    /// Every tick.
    pub fn total(&self) -> u64 {
        self.busy() + self.idle + self.steal
    }
    /// `self - earlier`, field by field (saturating).
    pub fn since(&self, earlier: &CpuTicks) -> CpuTicks {
        CpuTicks {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
            idle: self.idle.saturating_sub(earlier.idle),
            irq: self.irq.saturating_sub(earlier.irq),
            softirq: self.softirq.saturating_sub(earlier.softirq),
            steal: self.steal.saturating_sub(earlier.steal),
        }
    }
}

/// The per-CPU lines (`cpu0`, `cpu1`, …) of `/proc/stat`, indexed by CPU.
pub fn parse_proc_stat(text: &str) -> Vec<CpuTicks> {
    let mut out: Vec<CpuTicks> = Vec::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let Some(name) = f.next() else { continue };
        let Some(idx) = name
            .strip_prefix("cpu")
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        let v: Vec<u64> = f.map(|x| x.parse().unwrap_or(0)).collect();
        let g = |i: usize| v.get(i).copied().unwrap_or(0);
        if out.len() <= idx {
            out.resize(idx + 1, CpuTicks::default());
        }
        out[idx] = CpuTicks {
            user: g(0) + g(1),
            system: g(2),
            idle: g(3) + g(4),
            irq: g(5),
            softirq: g(6),
            steal: g(7),
        };
    }
    out
}

fn read_cpus() -> Result<Vec<CpuTicks>, LabError> {
    Ok(parse_proc_stat(
        &std::fs::read_to_string("/proc/stat").map_err(other)?,
    ))
}

/// The kernel threads whose command name is `comm` exactly, or starts with
/// `prefix` when `comm` ends in `*`.
fn kthreads(comm: &str) -> Vec<u32> {
    let mut v = Vec::new();
    let Ok(d) = std::fs::read_dir("/proc") else {
        return v;
    };
    for e in d.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let c = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let c = c.trim_end();
        let hit = match comm.strip_suffix('*') {
            Some(p) => c.starts_with(p),
            None => c == comm,
        };
        if hit {
            v.push(pid);
        }
    }
    v.sort_unstable();
    v
}

/// Everything read at a window's edge.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When.
    pub at: Instant,
    /// The output counter (packets).
    pub packets: u64,
    /// Packets the output veth could not hand over (its `tx_dropped`).
    pub dropped: u64,
    /// Per-CPU ticks.
    pub cpus: Vec<CpuTicks>,
    /// The generator's (utime, stime).
    pub generator: (u64, u64),
    /// `ksoftirqd/<generator CPU>`'s utime + stime.
    pub ksoftirqd_gen: u64,
}

/// One measurement window, reduced.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WindowFigures {
    /// Packets counted.
    pub packets: u64,
    /// Packets dropped on the output veth.
    pub dropped: u64,
    /// Seconds.
    pub seconds: f64,
    /// Packets per second.
    pub pps: f64,
    /// CPU time of every core, generator excluded, per packet (ns).
    pub cpu_ns_per_packet: f64,
    /// The forwarding core's busy share, 0 to 1.
    pub fwd_core_busy: f64,
    /// The generator's core's busy share, 0 to 1.
    pub gen_core_busy: f64,
    /// Ticks charged to the generator, less the softirq/irq taken in its context.
    pub generator_ticks: u64,
    /// Busy ticks of every core.
    pub busy_ticks: u64,
}

/// Reduces two samples to a window: `tick_ns` is one clock tick in ns.
pub fn window(a: &Sample, b: &Sample, tick_ns: f64) -> WindowFigures {
    let packets = b.packets.saturating_sub(a.packets);
    let seconds = b.at.duration_since(a.at).as_secs_f64();
    let n = a.cpus.len().min(b.cpus.len());
    let d: Vec<CpuTicks> = (0..n).map(|i| b.cpus[i].since(&a.cpus[i])).collect();
    let busy: u64 = d.iter().map(CpuTicks::busy).sum();
    let gen = generator_ticks(
        (
            b.generator.0.saturating_sub(a.generator.0),
            b.generator.1.saturating_sub(a.generator.1),
        ),
        d.get(GENERATOR_CPU).copied().unwrap_or_default(),
        b.ksoftirqd_gen.saturating_sub(a.ksoftirqd_gen),
    );
    let share = |i: usize| {
        d.get(i)
            .map_or(0.0, |c| c.busy() as f64 / c.total().max(1) as f64)
    };
    WindowFigures {
        packets,
        dropped: b.dropped.saturating_sub(a.dropped),
        seconds,
        pps: if seconds > 0.0 {
            packets as f64 / seconds
        } else {
            0.0
        },
        cpu_ns_per_packet: if packets > 0 {
            busy.saturating_sub(gen) as f64 * tick_ns / packets as f64
        } else {
            0.0
        },
        fwd_core_busy: share(FORWARDING_CPU),
        gen_core_busy: share(GENERATOR_CPU),
        generator_ticks: gen,
        busy_ticks: busy,
    }
}

/// The generator's own ticks: its `utime` + `stime`, less the irq and
/// softirq ticks its core took while it was the running task (the core's
/// irq + softirq ticks not charged to `ksoftirqd`), which are the node's
/// work, not the generator's.
pub fn generator_ticks(gen: (u64, u64), gen_core: CpuTicks, ksoftirqd: u64) -> u64 {
    let in_its_context = (gen_core.irq + gen_core.softirq)
        .saturating_sub(ksoftirqd)
        .min(gen.1);
    gen.0 + gen.1 - in_its_context
}

/// The packet counters of `dev` in `ns`: (rx, tx, tx_dropped), from
/// `ip -s -j link show`.
pub fn parse_ip_link_stats(json: &str) -> Option<(u64, u64, u64)> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let s = v.get(0)?.get("stats64")?;
    let g = |dir: &str, k: &str| s.get(dir)?.get(k)?.as_u64();
    Some((
        g("rx", "packets")?,
        g("tx", "packets")?,
        g("tx", "dropped").unwrap_or(0),
    ))
}

fn link_stats(ns: &str, dev: &str) -> Result<(u64, u64, u64), LabError> {
    let out = db::sh("ip", &["-n", ns, "-s", "-j", "link", "show", "dev", dev])?;
    parse_ip_link_stats(&out).ok_or_else(|| other(format!("no statistics for {dev} in {ns}")))
}

// ---------------------------------------------------------------------------
// Topology

/// The three namespaces of one case, removed (after their processes) on drop.
struct Topo {
    node: String,
    pod: String,
    wire: String,
    procs: Vec<Proc>,
    eal_prefixes: Vec<String>,
}

impl Drop for Topo {
    fn drop(&mut self) {
        while let Some(mut p) = self.procs.pop() {
            p.stop();
        }
        for ns in [&self.pod, &self.wire, &self.node] {
            let _ = db::sh("ip", &["netns", "del", ns]);
        }
        for p in &self.eal_prefixes {
            db::remove_eal_dir(p);
        }
    }
}

fn ip(args: &[&str]) -> Result<(), LabError> {
    db::sh("ip", args).map(|_| ())
}

fn ns_sh(ns: &str, script: &str) -> Result<(), LabError> {
    db::sh("ip", &["netns", "exec", ns, "sh", "-c", script]).map(|_| ())
}

/// The sinks' MAC: one the node's output frames never carry.
const SINK_MAC: &str = "02:00:00:00:ff:02";

impl Topo {
    fn new(prefix: &str) -> Result<Topo, LabError> {
        let t = Topo {
            node: format!("{prefix}-n"),
            pod: format!("{prefix}-p"),
            wire: format!("{prefix}-w"),
            procs: Vec::new(),
            eal_prefixes: Vec::new(),
        };
        for ns in [&t.pod, &t.wire, &t.node] {
            let _ = db::sh("ip", &["netns", "del", ns]);
        }
        for ns in [&t.node, &t.pod, &t.wire] {
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        let (n, p, w) = (&t.node, &t.pod, &t.wire);
        ip(&[
            "-n", n, "link", "add", "eth0", "type", "veth", "peer", "name", "wire0", "netns", w,
        ])?;
        ip(&[
            "-n", n, "link", "add", "pod-a", "type", "veth", "peer", "name", "eth0", "netns", p,
        ])?;
        let uplink = craft::UPLINK_MAC.to_string();
        ip(&["-n", n, "link", "set", "eth0", "address", &uplink, "up"])?;
        ip(&["-n", n, "addr", "add", "192.168.50.1/24", "dev", "eth0"])?;
        ip(&["-n", n, "link", "set", "pod-a", "up"])?;
        ip(&["-n", w, "link", "set", "wire0", "address", SINK_MAC, "up"])?;
        ip(&[
            "-n",
            p,
            "link",
            "set",
            "eth0",
            "address",
            "02:00:00:00:ff:03",
            "up",
        ])?;
        Ok(t)
    }

    /// The generator's namespace and interface for `case`.
    fn sender(&self, case: Case) -> (&str, &'static str) {
        match case {
            Case::Decap => (&self.wire, "wire0"),
            _ => (&self.pod, "eth0"),
        }
    }

    /// The node's interface frames come in on, and the one they leave by.
    fn node_ports(case: Case) -> (&'static str, &'static str) {
        match case {
            Case::Decap => ("eth0", "pod-a"),
            _ => ("pod-a", "eth0"),
        }
    }

    /// The kernel node as flanneld and the flannel CNI plugin leave it.
    fn kernel_node(&self) -> Result<Vec<String>, LabError> {
        let n = self.node.as_str();
        let router = craft::ROUTER_MAC.to_string();
        let pod_mac = craft::POD_A_MAC.to_string();
        let node_b = craft::NODE_B_MAC.to_string();
        let vtep = craft::VTEP_MAC.to_string();
        let cmds: Vec<Vec<String>> = [
            "sysctl -qw net.ipv4.ip_forward=1",
            "ip link add cni0 type bridge",
            &format!("ip link set cni0 address {router}"),
            "ip addr add 10.5.1.1/24 dev cni0",
            "ip link set cni0 up",
            "ip link set pod-a master cni0",
            // The pod's neighbour entry and bridge FDB entry, as ARP and
            // learning would leave them (the sink itself answers nothing).
            &format!("ip neigh replace 10.5.1.2 lladdr {pod_mac} dev cni0 nud permanent"),
            &format!("bridge fdb replace {pod_mac} dev pod-a master static"),
            // Underlay neighbours (node B, the host-gw peer).
            &format!("ip neigh replace 192.168.50.2 lladdr {node_b} dev eth0 nud permanent"),
            "ip neigh replace 192.168.50.4 lladdr 02:00:00:00:aa:04 dev eth0 nud permanent",
            // flanneld's VXLAN device and its entries for node B.
            "ip link add flannel.1 type vxlan id 1 local 192.168.50.1 dev eth0 dstport 8472 nolearning",
            &format!("ip link set flannel.1 address {vtep}"),
            "ip addr add 10.5.1.0/32 dev flannel.1",
            "ip link set flannel.1 mtu 1450 up",
            "ip neigh replace 10.5.2.0 lladdr 02:00:00:00:bb:02 dev flannel.1 nud permanent",
            "bridge fdb replace 02:00:00:00:bb:02 dev flannel.1 dst 192.168.50.2",
            "ip route add 10.5.2.0/24 via 10.5.2.0 dev flannel.1 onlink",
            // host-gw: the peer's subnet via the peer.
            "ip route add 10.5.4.0/24 via 192.168.50.4 dev eth0",
        ]
        .iter()
        .map(|c| c.split_whitespace().map(String::from).collect())
        .collect();
        let mut done = Vec::new();
        for c in cmds {
            let mut a = vec!["netns", "exec", n];
            a.extend(c.iter().map(String::as_str));
            db::sh("ip", &a)?;
            done.push(c.join(" "));
        }
        Ok(done)
    }
}

/// sluiced's configuration for the capacity node: the reference node's
/// addresses with one pod (`pod-a`), one worker on the forwarding core.
pub fn sluiced_config(dir: &Path, rx_mode: &str) -> String {
    format!(
        "[daemon]\nworkers = [{FORWARDING_CPU}]\nrx_mode = \"{rx_mode}\"\napi_socket = \"{}\"\n\
         metrics_address = \"127.0.0.1:0\"\npod_records = \"\"\n\n\
         [node]\npod_network = \"10.5.0.0/16\"\npod_subnet = \"10.5.1.0/24\"\nrouter_mac = \"{}\"\n\n\
         [tunnel]\nvni = 1\nvxlan_port = 8472\nvtep_mac = \"{}\"\n\n\
         [[port]]\nname = \"eth0\"\nkind = \"uplink\"\nmac = \"{}\"\naddress = \"192.168.50.1/24\"\nmtu = 1500\n\n\
         [[port]]\nname = \"sl-host\"\nkind = \"host\"\nmac = \"02:00:00:00:ee:01\"\nmtu = 1500\n\n\
         [[port]]\nname = \"pod-a\"\nkind = \"pod\"\nmac = \"{}\"\nip = \"10.5.1.2\"\nmtu = 1450\n\n\
         [[route]]\nprefix = \"10.5.2.0/24\"\nvia = \"vxlan\"\nnode = \"192.168.50.2\"\nvtep_mac = \"02:00:00:00:bb:02\"\n\n\
         [[route]]\nprefix = \"10.5.4.0/24\"\nvia = \"host-gw\"\nnode = \"192.168.50.4\"\n\n\
         [[route]]\nprefix = \"0.0.0.0/0\"\nvia = \"host\"\n\n\
         [[neighbour]]\nip = \"192.168.50.2\"\nmac = \"{}\"\n\n\
         [[neighbour]]\nip = \"192.168.50.4\"\nmac = \"02:00:00:00:aa:04\"\n",
        dir.join("api.sock").display(),
        craft::ROUTER_MAC,
        craft::VTEP_MAC,
        craft::UPLINK_MAC,
        craft::POD_A_MAC,
        craft::NODE_B_MAC,
    )
}

// ---------------------------------------------------------------------------
// Running

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seconds per window.
    pub seconds: u32,
    /// Windows per measurement.
    pub windows: u32,
    /// Seconds of warm-up before the first window.
    pub warmup: u32,
    /// Distinct flows per capture.
    pub flows: usize,
    /// Where the report goes (captures and logs under `work/`).
    pub out: PathBuf,
    /// Cases.
    pub cases: Vec<Case>,
    /// Contenders.
    pub contenders: Vec<Contender>,
    /// The sluiced binary; `None`: next to this executable, then `PATH`.
    pub sluiced: Option<PathBuf>,
    /// Seconds of `perf record -e cpu-clock -C <forwarding core>` after the
    /// windows, while the traffic still runs (0: none); the symbols' shares
    /// go into the JSON and `work/perf-<case>-<contender>.txt`.
    pub profile: u32,
}

/// One contender on one case.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The case.
    pub case: Case,
    /// The contender.
    pub contender: Contender,
    /// `measured` or `failed`.
    pub status: &'static str,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Every window.
    pub windows: Vec<WindowFigures>,
    /// pps over the windows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pps: Option<Spread>,
    /// CPU ns per packet over the windows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_ns_per_packet: Option<Spread>,
    /// Forwarding core's busy share over the windows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fwd_core_busy: Option<Spread>,
    /// How it was set up and what else was seen.
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
}

impl Outcome {
    fn from_windows(
        case: Case,
        contender: Contender,
        windows: Vec<WindowFigures>,
        detail: serde_json::Value,
    ) -> Outcome {
        let col = |f: fn(&WindowFigures) -> f64| windows.iter().map(f).collect::<Vec<_>>();
        Outcome {
            case,
            contender,
            status: "measured",
            reason: None,
            pps: Spread::of(&col(|w| w.pps)),
            cpu_ns_per_packet: Spread::of(&col(|w| w.cpu_ns_per_packet)),
            fwd_core_busy: Spread::of(&col(|w| w.fwd_core_busy)),
            windows,
            detail,
        }
    }

    fn failed(case: Case, contender: Contender, reason: String) -> Outcome {
        Outcome {
            case,
            contender,
            status: "failed",
            reason: Some(reason),
            windows: vec![],
            pps: None,
            cpu_ns_per_packet: None,
            fwd_core_busy: None,
            detail: serde_json::Value::Null,
        }
    }
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Seconds per window.
    pub seconds: u32,
    /// Windows per measurement.
    pub windows: u32,
    /// Warm-up seconds.
    pub warmup_s: u32,
    /// Flows per capture.
    pub flows: usize,
    /// Cores, CPU model, load.
    pub machine: String,
    /// How things were set up.
    pub setup: Vec<String>,
    /// Every outcome.
    pub outcomes: Vec<Outcome>,
}

impl Report {
    /// The outcome of `c` on `case`.
    pub fn get(&self, c: Contender, case: Case) -> Option<&Outcome> {
        self.outcomes
            .iter()
            .find(|o| o.contender == c && o.case == case)
    }
}

fn tick_ns() -> f64 {
    1e9 / crate::measure::clock_ticks_per_second()
}

/// The generator: testpmd replaying `capture` into `dev` in `ns`, on core 0.
fn start_generator(
    t: &mut Topo,
    ns: &str,
    dev: &str,
    capture: &Path,
    log: &Path,
    tag: &str,
) -> Result<(u32, String), LabError> {
    let prefix = format!("sluice-cap-{}-{tag}", std::process::id());
    t.eal_prefixes.push(prefix.clone());
    let rx = format!("net_pcap0,rx_pcap={},infinite_rx=1", capture.display());
    let tx = format!("net_af_packet0,iface={dev},qdisc_bypass=1");
    let args: Vec<String> = [
        "netns",
        "exec",
        ns,
        "taskset",
        "-c",
        &GENERATOR_CPU.to_string(),
        "dpdk-testpmd",
        "--no-huge",
        "-m",
        "512",
        "--no-pci",
        &format!("--lcores=0@{GENERATOR_CPU},1@{GENERATOR_CPU}"),
        "--file-prefix",
        &prefix,
        "--vdev",
        &rx,
        "--vdev",
        &tx,
        "--",
        "--forward-mode=io",
        "--nb-cores=1",
        "--total-num-mbufs=16384",
        "--stats-period=1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let f = std::fs::File::create(log).map_err(other)?;
    let e = f.try_clone().map_err(other)?;
    let child = Command::new("ip")
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::from(f))
        .stderr(Stdio::from(e))
        .spawn()
        .map_err(|e| other(format!("dpdk-testpmd: {e}")))?;
    let pid = child.id();
    t.procs.push(Proc {
        child,
        signal: "-INT",
        what: "dpdk-testpmd".into(),
    });
    Ok((pid, format!("ip {}", args.join(" "))))
}

fn sample(
    counter: &mut dyn FnMut() -> Result<(u64, u64), LabError>,
    gen_pid: u32,
    ksoftirqd: Option<u32>,
) -> Result<Sample, LabError> {
    let cpus = read_cpus()?;
    let generator = pid_cpu_ticks(gen_pid).unwrap_or((0, 0));
    let ks = ksoftirqd.and_then(pid_cpu_ticks).map_or(0, |(u, s)| u + s);
    let (packets, dropped) = counter()?;
    Ok(Sample {
        at: Instant::now(),
        packets,
        dropped,
        cpus,
        generator,
        ksoftirqd_gen: ks,
    })
}

fn measure(
    opts: &Options,
    t: &mut Topo,
    gen_pid: u32,
    counter: &mut dyn FnMut() -> Result<(u64, u64), LabError>,
    log: &Path,
) -> Result<Vec<WindowFigures>, LabError> {
    let tick = tick_ns();
    let ks = kthreads(&format!("ksoftirqd/{GENERATOR_CPU}"))
        .first()
        .copied();
    let alive = |t: &mut Topo| -> Result<(), LabError> {
        for p in t.procs.iter_mut() {
            if let Some(st) = p.exited() {
                return Err(other(format!(
                    "{} exited ({st}): {}",
                    p.what,
                    db::tail(log, 5)
                )));
            }
        }
        Ok(())
    };
    std::thread::sleep(Duration::from_secs(opts.warmup as u64));
    alive(t)?;
    let mut prev = sample(counter, gen_pid, ks)?;
    let mut out = Vec::new();
    for _ in 0..opts.windows {
        std::thread::sleep(Duration::from_secs(opts.seconds as u64));
        alive(t)?;
        let s = sample(counter, gen_pid, ks)?;
        out.push(window(&prev, &s, tick));
        prev = s;
    }
    if out.iter().all(|w| w.packets == 0) {
        return Err(other("nothing was counted at the output"));
    }
    Ok(out)
}

fn run_one(
    opts: &Options,
    work: &Path,
    case: Case,
    c: Contender,
    capture: &Path,
    sluiced: Option<&Path>,
) -> Result<(Vec<WindowFigures>, serde_json::Value), LabError> {
    let tag = format!("{}-{}", case.name(), c.name());
    let prefix = format!("cap{}", std::process::id() % 100_000);
    let mut t = Topo::new(&prefix)?;
    let (in_dev, out_dev) = Topo::node_ports(case);
    let (gen_ns, gen_dev) = t.sender(case);
    let (gen_ns, gen_dev) = (gen_ns.to_string(), gen_dev);
    let node = t.node.clone();
    let mut detail = serde_json::Map::new();
    match c {
        Contender::Generator => {
            // Nothing forwards: the node drops what arrives (not its MAC),
            // on the forwarding core.
            crate::lab::steer_receive(&node, in_dev, Some(FORWARDING_CPU))?;
        }
        Contender::Kernel => {
            let cmds = t.kernel_node()?;
            crate::lab::steer_receive(&node, in_dev, Some(FORWARDING_CPU))?;
            detail.insert("node_setup".into(), cmds.into());
        }
        Contender::Sluice | Contender::SluiceSoftirqNapi => {
            let bin = sluiced.ok_or_else(|| {
                other("sluiced not found (cargo build --release -p sluiced, or --sluiced)")
            })?;
            let dir = work.join(format!("sluice-{tag}"));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).map_err(other)?;
            let cfg = dir.join("sluiced.toml");
            std::fs::write(&cfg, sluiced_config(&dir, "poll")).map_err(other)?;
            let log = dir.join("sluiced.log");
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", &node])
                .arg(bin)
                .arg("--config")
                .arg(&cfg);
            let napi_before = kthreads(&format!("napi/{in_dev}-*"));
            t.procs
                .push(Proc::spawn("sluiced", &mut cmd, &log, "-TERM")?);
            let client = sluice_api::client::Client::new(dir.join("api.sock"))
                .with_timeout(Duration::from_secs(2));
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(st) = t.procs.last_mut().and_then(Proc::exited) {
                    return Err(other(format!(
                        "sluiced exited ({st}): {}",
                        db::tail(&log, 6)
                    )));
                }
                if client.stats().is_ok() {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(other(format!(
                        "sluiced did not answer in 30 s: {}",
                        db::tail(&log, 6)
                    )));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            detail.insert("config".into(), cfg.display().to_string().into());
            if c == Contender::Sluice {
                ns_sh(&node, &format!("echo 1 > /sys/class/net/{in_dev}/threaded"))?;
                std::thread::sleep(Duration::from_millis(200));
                let new: Vec<u32> = kthreads(&format!("napi/{in_dev}-*"))
                    .into_iter()
                    .filter(|p| !napi_before.contains(p))
                    .collect();
                if new.is_empty() {
                    return Err(other(format!(
                        "no napi/{in_dev}-* kthread appeared after threaded=1"
                    )));
                }
                for p in &new {
                    db::sh(
                        "taskset",
                        &["-p", "-c", &FORWARDING_CPU.to_string(), &p.to_string()],
                    )?;
                }
                detail.insert(
                    "veth_napi".into(),
                    format!("threaded, kthread(s) {new:?} pinned to core {FORWARDING_CPU}").into(),
                );
            } else {
                detail.insert(
                    "veth_napi".into(),
                    format!("softirq on the sending CPU (core {GENERATOR_CPU})").into(),
                );
            }
        }
    }
    let glog = work.join(format!("testpmd-{tag}.log"));
    let (gen_pid, gen_cmd) = start_generator(&mut t, &gen_ns, gen_dev, capture, &glog, &tag)?;
    detail.insert("generator".into(), gen_cmd.into());
    let (count_ns, count_dev, rx) = match c {
        Contender::Generator => (node.clone(), in_dev, true),
        _ => (node.clone(), out_dev, false),
    };
    detail.insert(
        "counted".into(),
        format!(
            "{count_dev} {} in {count_ns}",
            if rx { "rx_packets" } else { "tx_packets" }
        )
        .into(),
    );
    let mut counter = || -> Result<(u64, u64), LabError> {
        let (r, tx, drop) = link_stats(&count_ns, count_dev)?;
        Ok(if rx { (r, 0) } else { (tx, drop) })
    };
    let sluice_stats_before = sluice_stats(work, &tag);
    let w = measure(opts, &mut t, gen_pid, &mut counter, &glog)?;
    if opts.profile > 0 && c != Contender::Generator {
        match profile(work, &tag, opts.profile) {
            Ok(top) => {
                detail.insert("profile_core1_top_symbols".into(), top.into());
            }
            Err(e) => {
                detail.insert("profile_error".into(), e.to_string().into());
            }
        }
    }
    if let (Some(a), Some(b)) = (sluice_stats_before, sluice_stats(work, &tag)) {
        detail.insert("sluice_drops_during_run".into(), delta(&a.drops, &b.drops));
        detail.insert(
            "sluice_events_during_run".into(),
            delta(&a.events, &b.events),
        );
    }
    drop(t);
    Ok((w, serde_json::Value::Object(detail)))
}

/// `perf record -e cpu-clock -C <forwarding core>` for `seconds`, then the
/// symbols' shares (`perf report --sort sym`), the top 30 lines.
fn profile(work: &Path, tag: &str, seconds: u32) -> Result<Vec<String>, LabError> {
    let data = work.join(format!("perf-{tag}.data"));
    let cpu = FORWARDING_CPU.to_string();
    db::sh(
        "perf",
        &[
            "record",
            "-q",
            "-e",
            "cpu-clock",
            "-a",
            "-C",
            &cpu,
            "-o",
            &data.to_string_lossy(),
            "--",
            "sleep",
            &seconds.to_string(),
        ],
    )?;
    let rep = db::sh(
        "perf",
        &[
            "report",
            "-i",
            &data.to_string_lossy(),
            "--stdio",
            "--no-children",
            "--sort",
            "sym",
            "--percent-limit",
            "0.5",
        ],
    )?;
    std::fs::write(work.join(format!("perf-{tag}.txt")), &rep).map_err(other)?;
    let _ = std::fs::remove_file(&data);
    Ok(parse_perf_report(&rep, 30))
}

/// The first `n` symbol lines of `perf report --stdio --sort sym`
/// (`  12.34%  [k] name`), trimmed.
pub fn parse_perf_report(text: &str, n: usize) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && l.contains('%') && l.contains('['))
        .take(n)
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

fn sluice_stats(work: &Path, tag: &str) -> Option<sluice_api::response::Stats> {
    let sock = work.join(format!("sluice-{tag}")).join("api.sock");
    if !sock.exists() {
        return None;
    }
    sluice_api::client::Client::new(sock)
        .with_timeout(Duration::from_secs(2))
        .stats()
        .ok()
}

fn delta(
    a: &std::collections::BTreeMap<String, u64>,
    b: &std::collections::BTreeMap<String, u64>,
) -> serde_json::Value {
    let m: serde_json::Map<String, serde_json::Value> = b
        .iter()
        .filter_map(|(k, v)| {
            let d = v.saturating_sub(a.get(k).copied().unwrap_or(0));
            (d > 0).then(|| (k.clone(), d.into()))
        })
        .collect();
    serde_json::Value::Object(m)
}

/// Runs every contender on every case.
pub fn run(opts: &Options, progress: &mut dyn FnMut(&str)) -> Result<Report, LabError> {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        return Err(other(
            "capacity needs two cores (generator on 0, forwarding on 1)",
        ));
    }
    let work = opts.out.join("work");
    std::fs::create_dir_all(&work).map_err(other)?;
    let work = work.canonicalize().map_err(other)?;
    let machine = db::machine();
    let sluiced = db::find_sluiced(opts.sluiced.as_deref());
    let mut outcomes = Vec::new();
    for &case in &opts.cases {
        let capture = work.join(format!("in-{}.pcap", case.name()));
        db::write_capture(&capture, &db::frames(case, opts.flows)).map_err(other)?;
        for &c in &opts.contenders {
            progress(&format!(
                "{}: {} ({} s warm-up, {} x {} s)",
                case.name(),
                c.name(),
                opts.warmup,
                opts.windows,
                opts.seconds
            ));
            match run_one(opts, &work, case, c, &capture, sluiced.as_deref()) {
                Ok((w, detail)) => {
                    let o = Outcome::from_windows(case, c, w, detail);
                    if let (Some(p), Some(n)) = (&o.pps, &o.cpu_ns_per_packet) {
                        progress(&format!(
                            "  {:.3} Mpps ({:.3}-{:.3}), {:.0} ns/packet",
                            p.median / 1e6,
                            p.min / 1e6,
                            p.max / 1e6,
                            n.median
                        ));
                    }
                    outcomes.push(o);
                }
                Err(e) => {
                    progress(&format!("  failed: {e}"));
                    outcomes.push(Outcome::failed(case, c, e.to_string()));
                }
            }
        }
    }
    let _ = std::io::stderr().flush();
    Ok(Report {
        seconds: opts.seconds,
        windows: opts.windows,
        warmup_s: opts.warmup,
        flows: opts.flows,
        machine,
        setup: setup_notes(),
        outcomes,
    })
}

fn setup_notes() -> Vec<String> {
    vec![
        format!("generator: dpdk-testpmd --forward-mode=io, net_pcap (infinite_rx=1) into net_af_packet (qdisc_bypass=1) on the sending veth, taskset -c {GENERATOR_CPU}, --lcores=0@{GENERATOR_CPU},1@{GENERATOR_CPU}, --no-huge"),
        format!("sink: the far end of the node's output veth drops the frames (not its MAC: PACKET_OTHERHOST), receive steered to core {GENERATOR_CPU} by RPS; counted: the node's output veth tx_packets"),
        format!("kernel: cni0 bridge + flannel.1 (vxlan id 1 local 192.168.50.1 dev eth0 dstport 8472 nolearning, permanent neighbour, FDB entry, onlink route) or a host-gw route, offloads as the kernel sets them, RPS on the input veth to core {FORWARDING_CPU}"),
        format!("sluice: sluiced (AF_XDP copy mode, native XDP on the veths), workers = [{FORWARDING_CPU}], rx_mode = poll; `sluice`: veth NAPI threaded and its kthread pinned to core {FORWARDING_CPU}; `sluice-softirq-napi`: veth NAPI in the sender's softirq on core {GENERATOR_CPU}"),
        "generator ceiling: the generator into the node's input veth with nothing forwarding (dropped as not for this MAC, RPS to the forwarding core), counted as rx_packets".into(),
        "CPU ns/packet: busy ticks of every core (/proc/stat user+nice+system+irq+softirq) less the generator's utime+stime (less the irq/softirq ticks core 0 took in its context), over the packets counted; includes the sink's drop".into(),
    ]
}

fn fmt_spread(s: &Option<Spread>, scale: f64, prec: usize) -> String {
    match s {
        Some(s) => format!(
            "{:.p$} ({:.p$}–{:.p$})",
            s.median / scale,
            s.min / scale,
            s.max / scale,
            p = prec
        ),
        None => "n/a".into(),
    }
}

fn ratio(a: &Option<Spread>, b: &Option<Spread>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b.median > 0.0 => format!("{:.2}x", a.median / b.median),
        _ => "n/a".into(),
    }
}

/// The terminal table.
pub fn table(r: &Report) -> String {
    let mut s = format!(
        "| case ({} x {} s windows, median (min–max)) | contender | Mpps leaving the node | CPU ns/packet, all cores, generator excluded | core {FORWARDING_CPU} busy | vs kernel: pps, ns/packet |\n|---|---|---:|---:|---:|---|\n",
        r.windows, r.seconds
    );
    for case in Case::ALL {
        let k = r.get(Contender::Kernel, case);
        for c in Contender::ALL {
            let Some(o) = r.get(c, case) else { continue };
            let vs = match (c, k) {
                (Contender::Sluice | Contender::SluiceSoftirqNapi, Some(k)) => format!(
                    "{} pps, {} ns (goal ≥3x, ≤0.33x)",
                    ratio(&o.pps, &k.pps),
                    ratio(&o.cpu_ns_per_packet, &k.cpu_ns_per_packet)
                ),
                _ => String::new(),
            };
            s += &format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                case.name(),
                if c == Contender::Generator {
                    "generator ceiling".to_string()
                } else {
                    c.name().to_string()
                },
                fmt_spread(&o.pps, 1e6, 3),
                fmt_spread(&o.cpu_ns_per_packet, 1.0, 0),
                o.fwd_core_busy
                    .as_ref()
                    .map_or("n/a".into(), |b| format!("{:.0}%", b.median * 100.0)),
                vs
            );
        }
    }
    for o in &r.outcomes {
        if let Some(why) = &o.reason {
            s += &format!(
                "\n{} on {}: {}: {}",
                o.contender.name(),
                o.case.name(),
                o.status,
                why
            );
        }
    }
    if r.outcomes.iter().any(|o| o.reason.is_some()) {
        s.push('\n');
    }
    s
}

/// Writes `capacity.json` and `capacity.md` into `dir`.
pub fn write(r: &Report, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("capacity.json"),
        serde_json::to_vec_pretty(r).expect("report serializes"),
    )?;
    let mut md = format!(
        "# Per-core forwarding capacity: sluice (AF_XDP) and the kernel path flannel uses\n\n{} ({} s warm-up, {} windows of {} s, {} flows). `sluice-lab capacity`.\n\n{}\n",
        r.machine, r.warmup_s, r.windows, r.seconds, r.flows, table(r)
    );
    for l in &r.setup {
        md += &format!("- {l}\n");
    }
    for o in &r.outcomes {
        if let Some(top) = o
            .detail
            .get("profile_core1_top_symbols")
            .and_then(|v| v.as_array())
        {
            md += &format!(
                "\n## Core {FORWARDING_CPU} profile, {} {} (`perf record -e cpu-clock -C {FORWARDING_CPU}`)\n\n```text\n",
                o.case.name(),
                o.contender.name()
            );
            for l in top {
                md += &format!("{}\n", l.as_str().unwrap_or_default());
            }
            md += "```\n";
        }
    }
    std::fs::write(dir.join("capacity.md"), md)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  5192625 0 606540 4156020 34465 0 12171 7519 0 0\n\
cpu0 2427582 3 299093 2259592 9242 7 4549 3668 0 0\n\
cpu1 2765042 0 307447 1896427 25223 0 7622 3850 0 0\n\
intr 1 2 3\nctxt 99\n";

    #[test]
    fn proc_stat_per_cpu_lines() {
        let c = parse_proc_stat(STAT);
        assert_eq!(c.len(), 2);
        assert_eq!(
            c[0],
            CpuTicks {
                user: 2427585,
                system: 299093,
                idle: 2259592 + 9242,
                irq: 7,
                softirq: 4549,
                steal: 3668,
            }
        );
        assert_eq!(c[1].busy(), 2765042 + 307447 + 7622);
        assert_eq!(c[1].total(), c[1].busy() + 1896427 + 25223 + 3850);
    }

    #[test]
    fn generator_time_excludes_softirq_in_its_context() {
        let core0 = CpuTicks {
            user: 300,
            system: 150,
            softirq: 40,
            irq: 2,
            ..Default::default()
        };
        // 42 irq+softirq ticks, 10 of them in ksoftirqd: 32 charged to the
        // generator's stime are the node's.
        assert_eq!(generator_ticks((300, 180), core0, 10), 300 + 180 - 32);
        // Never more than its stime.
        assert_eq!(generator_ticks((300, 5), core0, 0), 300);
    }

    fn s(at: Instant, packets: u64, c0: CpuTicks, c1: CpuTicks, gen: (u64, u64)) -> Sample {
        Sample {
            at,
            packets,
            dropped: 0,
            cpus: vec![c0, c1],
            generator: gen,
            ksoftirqd_gen: 0,
        }
    }

    #[test]
    fn window_arithmetic() {
        let t0 = Instant::now();
        let z = CpuTicks::default();
        let a = s(t0, 1_000, z, z, (0, 0));
        // 5 s: core 0 all generator (400 user + 100 system, 20 of it
        // softirq), core 1 450 busy of 500.
        let c0 = CpuTicks {
            user: 400,
            system: 80,
            softirq: 20,
            ..Default::default()
        };
        let c1 = CpuTicks {
            system: 50,
            softirq: 400,
            idle: 50,
            ..Default::default()
        };
        let b = s(
            t0 + Duration::from_secs(5),
            1_000 + 5_000_000,
            c0,
            c1,
            (400, 100),
        );
        let w = window(&a, &b, 10_000_000.0);
        assert_eq!(w.packets, 5_000_000);
        assert!((w.pps - 1_000_000.0).abs() < 1e-6);
        // Busy 500 + 450; the generator's own: 400 + 100 - 20.
        assert_eq!(w.busy_ticks, 950);
        assert_eq!(w.generator_ticks, 480);
        // 470 ticks of 10 ms over 5 M packets: 940 ns.
        assert!((w.cpu_ns_per_packet - 940.0).abs() < 1e-9, "{w:?}");
        assert!((w.fwd_core_busy - 0.9).abs() < 1e-9);
        assert!((w.gen_core_busy - 1.0).abs() < 1e-9);
    }

    #[test]
    fn ip_link_json() {
        let j = r#"[{"ifindex":2,"ifname":"eth0","stats64":{"rx":{"bytes":10,"packets":7,"errors":0,"dropped":0},"tx":{"bytes":99,"packets":12345,"errors":0,"dropped":3}}}]"#;
        assert_eq!(parse_ip_link_stats(j), Some((7, 12345, 3)));
        assert_eq!(parse_ip_link_stats("[]"), None);
    }

    #[test]
    fn perf_report_lines() {
        let r = "# Samples: 5K of event 'cpu-clock'\n#\n# Overhead  Symbol\n# ........\n#\n    23.10%  [k] __xsk_generic_xmit\n     9.00%  [.] sluice_dataplane::pipeline::run\n\n";
        assert_eq!(
            parse_perf_report(r, 30),
            vec![
                "23.10% [k] __xsk_generic_xmit",
                "9.00% [.] sluice_dataplane::pipeline::run"
            ]
        );
    }

    #[test]
    fn sluiced_config_is_valid() {
        let c = sluiced_config(Path::new("/t"), "poll");
        let n = sluice_dataplane::config::NodeConfig::from_toml_str(&c).unwrap();
        assert_eq!(n.daemon.workers, vec![FORWARDING_CPU]);
        assert_eq!(n.ports.len(), 3);
    }
}
