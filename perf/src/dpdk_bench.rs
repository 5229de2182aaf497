//! `sluice-lab dpdk-bench`: one forwarding core, three contenders, the same
//! DPDK vdevs (issue 11's figures).
//!
//! Every contender gets the same input: a `net_pcap` vdev replaying a
//! capture forever (`infinite_rx=1`) and a `net_null` vdev (`no-rx=1`) that
//! takes what is sent, EAL with `--no-huge`, the forwarding thread pinned to
//! core 1 and everything else on core 0. `net_pcap`'s replay copies each
//! frame into a fresh mbuf inside the receiving thread's RX call, so the
//! generator's cost lands on core 1 too, the same for every contender.
//!
//! - **testpmd io**: `dpdk-testpmd --forward-mode=io`, the no-work limit of
//!   this input and output;
//! - **OVS-DPDK**: Debian's `ovs-vswitchd-dpdk` with its own ovsdb in a
//!   private directory and a private network namespace (its bridges' TAPs
//!   live there), one PMD (`pmd-cpu-mask=0x2`), EMC/SMC defaults, VXLAN the
//!   userspace-tunnel way (`br-int` with a `vxlan` port, `br-phy` holding
//!   the underlay address, the neighbour set with `tnl/arp/set`), so encap is
//!   `tnl_push` and decap `tnl_pop` in the datapath (the actions are recorded);
//! - **sluice**: `sluiced` on its DPDK backend with the reference node
//!   (`dataplane/tests/golden/node.toml`), one worker on core 1.
//!
//! Cases: VXLAN encap (pod to a remote node's pod), VXLAN decap (a remote
//! node to a local pod), host-gw (pod to a host-gw node's pod). Rates are
//! frames *sent* on the output vdev over a fixed window after a warm-up.

use crate::lab::LabError;
use serde::Serialize;
use sluice_dataplane::craft;
use sluice_dataplane::pcap;
use sluice_dataplane::wire::{ethernet, ipv4};
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Frames on the wire for "64-byte frames": 60 bytes captured plus the FCS.
pub const FRAME_LEN: usize = 60;
/// The remote pod the encap case sends to (node B's subnet, VXLAN).
pub const ENCAP_DST: Ipv4Addr = Ipv4Addr::new(10, 5, 2, 9);
/// The pod on the host-gw node (10.5.4.0/24 via 192.168.50.4).
pub const HOSTGW_DST: Ipv4Addr = Ipv4Addr::new(10, 5, 4, 9);
/// flannel's VXLAN port and VNI, as in the reference node.
pub const VXLAN_PORT: u16 = 8472;
/// The VNI.
pub const VNI: u32 = 1;

/// A forwarding case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Case {
    /// Pod to a remote node's pod: VXLAN encapsulation out of the uplink.
    Encap,
    /// VXLAN from a remote node to a local pod.
    Decap,
    /// Pod to a host-gw node's pod: routed, no encapsulation.
    HostGw,
}

impl Case {
    /// Every case, in table order.
    pub const ALL: [Case; 3] = [Case::Encap, Case::Decap, Case::HostGw];

    /// Short name (JSON, file names).
    pub fn name(self) -> &'static str {
        match self {
            Case::Encap => "encap",
            Case::Decap => "decap",
            Case::HostGw => "host-gw",
        }
    }

    /// What the table calls it.
    pub fn title(self) -> &'static str {
        match self {
            Case::Encap => "VXLAN encap (pod to remote node)",
            Case::Decap => "VXLAN decap (to a local pod)",
            Case::HostGw => "host-gw (pod to host-gw node)",
        }
    }

    /// The issue's targets: (at least this times testpmd io, at least this
    /// times OVS-DPDK).
    pub fn targets(self) -> (f64, Option<f64>) {
        match self {
            Case::Encap => (0.8, Some(3.0)),
            Case::Decap => (0.7, Some(4.0)),
            Case::HostGw => (0.85, None),
        }
    }
}

impl std::str::FromStr for Case {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Case::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| format!("unknown case `{s}` (encap, decap, host-gw)"))
    }
}

/// A contender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Contender {
    /// `dpdk-testpmd --forward-mode=io`.
    TestpmdIo,
    /// Debian's OVS-DPDK.
    OvsDpdk,
    /// `sluiced` on its DPDK backend.
    Sluice,
}

impl Contender {
    /// Every contender, in table order.
    pub const ALL: [Contender; 3] = [Contender::TestpmdIo, Contender::OvsDpdk, Contender::Sluice];

    /// Display name.
    pub fn title(self) -> &'static str {
        match self {
            Contender::TestpmdIo => "testpmd io",
            Contender::OvsDpdk => "OVS-DPDK",
            Contender::Sluice => "sluice",
        }
    }
}

/// One contender on one case.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The contender.
    pub contender: Contender,
    /// The case.
    pub case: Case,
    /// `measured`, `not-available` or `failed`.
    pub status: &'static str,
    /// Frames sent on the output vdev per second, over the window; absent
    /// unless measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pps: Option<f64>,
    /// Frames counted over the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packets: Option<u64>,
    /// The window actually measured, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_s: Option<f64>,
    /// Why there is no figure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Contender-specific evidence (OVS datapath actions, sluice counters).
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
}

impl Outcome {
    fn measured(c: Contender, case: Case, w: Window, detail: serde_json::Value) -> Self {
        Outcome {
            contender: c,
            case,
            status: "measured",
            pps: Some(w.pps()),
            packets: Some(w.packets),
            window_s: Some(w.seconds),
            reason: None,
            detail,
        }
    }

    fn without(c: Contender, case: Case, status: &'static str, reason: String) -> Self {
        Outcome {
            contender: c,
            case,
            status,
            pps: None,
            packets: None,
            window_s: None,
            reason: Some(reason),
            detail: serde_json::Value::Null,
        }
    }
}

/// A counter read over the window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Frames counted between the two reads.
    pub packets: u64,
    /// Seconds between the two reads.
    pub seconds: f64,
}

impl Window {
    /// Frames per second.
    pub fn pps(&self) -> f64 {
        if self.seconds > 0.0 {
            self.packets as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Seconds measured per contender and case.
    pub seconds: u32,
    /// Seconds of warm-up before each window.
    pub warmup_s: u32,
    /// Distinct flows (5-tuples) in each capture.
    pub flows: usize,
    /// Frame lengths in each input capture, without FCS (add 4 for the wire).
    pub input_frame_len: serde_json::Value,
    /// Cores, CPU model and load average when the run started.
    pub machine: String,
    /// How the contenders were run.
    pub setup: Vec<String>,
    /// Every contender on every case.
    pub outcomes: Vec<Outcome>,
}

impl Report {
    /// The outcome of `c` on `case`.
    pub fn get(&self, c: Contender, case: Case) -> Option<&Outcome> {
        self.outcomes
            .iter()
            .find(|o| o.contender == c && o.case == case)
    }

    fn pps(&self, c: Contender, case: Case) -> Option<f64> {
        self.get(c, case).and_then(|o| o.pps)
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seconds per measurement window.
    pub seconds: u32,
    /// Seconds of warm-up before the window.
    pub warmup: u32,
    /// Distinct flows per capture.
    pub flows: usize,
    /// Where the report goes; captures and logs go under `work/` in it.
    pub out: PathBuf,
    /// Cases to run.
    pub cases: Vec<Case>,
    /// Contenders to run.
    pub contenders: Vec<Contender>,
    /// The `sluiced` binary; `None`: next to this executable, then `PATH`.
    pub sluiced: Option<PathBuf>,
}

// ---------------------------------------------------------------------------
// Input captures

/// Flow `i`'s UDP ports: sources walk upwards, destinations cycle through 16.
fn flow_ports(i: usize) -> (u16, u16) {
    (10_000 + i as u16, 5_001 + (i % 16) as u16)
}

/// A UDP frame from `pod-a` to `dst` padded to [`FRAME_LEN`].
fn pod_frame(dst: Ipv4Addr, i: usize) -> Vec<u8> {
    let (sp, dp) = flow_ports(i);
    craft::pod_a_udp(dst, sp, dp, FRAME_LEN - 42)
}

/// The encap case's input: `flows` frames from pod-a (10.5.1.2) to 10.5.2.9.
pub fn encap_frames(flows: usize) -> Vec<Vec<u8>> {
    (0..flows).map(|i| pod_frame(ENCAP_DST, i)).collect()
}

/// The host-gw case's input: `flows` frames from pod-a to 10.5.4.9.
pub fn hostgw_frames(flows: usize) -> Vec<Vec<u8>> {
    (0..flows).map(|i| pod_frame(HOSTGW_DST, i)).collect()
}

/// The decap case's input: VXLAN (port 8472, VNI 1) from node B
/// (192.168.50.2) to this node's uplink (192.168.50.1), each carrying a
/// 60-byte frame (node B's VTEP MAC to ours) from 10.5.2.9 to pod-a
/// 10.5.1.2. The outer UDP source port follows the inner flow, as the
/// kernel's and sluice's VXLAN set it.
pub fn decap_frames(flows: usize) -> Vec<Vec<u8>> {
    (0..flows)
        .map(|i| {
            let (sp, dp) = flow_ports(i);
            let payload = vec![0x5a; FRAME_LEN - 42];
            let u = craft::udp_datagram(ENCAP_DST, craft::POD_A_IP, sp, dp, &payload);
            let inner = craft::eth(
                craft::VTEP_MAC,
                craft::mac(0xbb, 2),
                ethernet::ethertype::IPV4,
                &craft::ipv4_packet(
                    craft::Ip::new(ENCAP_DST, craft::POD_A_IP, ipv4::protocol::UDP),
                    &u,
                ),
            );
            let mut f = craft::vxlan_frame(
                craft::UPLINK_MAC,
                craft::NODE_B_MAC,
                craft::NODE_B_IP,
                craft::NODE_A_IP,
                VXLAN_PORT,
                VNI,
                &inner,
            );
            // Outer UDP source port (checksum 0, so nothing else changes).
            let sport = 32_768 + (i % 16_384) as u16;
            f[34..36].copy_from_slice(&sport.to_be_bytes());
            f
        })
        .collect()
}

/// The case's input frames.
pub fn frames(case: Case, flows: usize) -> Vec<Vec<u8>> {
    match case {
        Case::Encap => encap_frames(flows),
        Case::Decap => decap_frames(flows),
        Case::HostGw => hostgw_frames(flows),
    }
}

pub(crate) fn write_capture(path: &Path, frames: &[Vec<u8>]) -> std::io::Result<()> {
    let records: Vec<pcap::Record> = frames
        .iter()
        .enumerate()
        .map(|(i, f)| pcap::Record {
            ts_ns: 1_000 * i as u64,
            data: f.clone(),
        })
        .collect();
    pcap::write_file(path, &records)
}

// ---------------------------------------------------------------------------
// Processes

fn other(e: impl std::fmt::Display) -> LabError {
    LabError::Other(e.to_string())
}

/// A child stopped by its PID when dropped (SIGTERM or SIGINT, then SIGKILL).
pub(crate) struct Proc {
    pub(crate) child: Child,
    pub(crate) signal: &'static str,
    pub(crate) what: String,
}

impl Proc {
    pub(crate) fn spawn(
        what: &str,
        cmd: &mut Command,
        log: &Path,
        signal: &'static str,
    ) -> Result<Self, LabError> {
        let f = std::fs::File::create(log).map_err(other)?;
        let e = f.try_clone().map_err(other)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(f))
            .stderr(Stdio::from(e))
            .spawn()
            .map_err(|e| LabError::Other(format!("{what}: {e}")))?;
        Ok(Proc {
            child,
            signal,
            what: what.into(),
        })
    }

    pub(crate) fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub(crate) fn stop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        let pid = self.child.id().to_string();
        let _ = Command::new("kill")
            .args([self.signal, &pid])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for Proc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (pid {})", self.what, self.child.id())
    }
}

pub(crate) fn sh(cmd: &str, args: &[&str]) -> Result<String, LabError> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| LabError::Other(format!("{cmd}: {e}")))?;
    if !out.status.success() {
        return Err(LabError::Other(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let t = std::fs::read_to_string(path).unwrap_or_default();
    let v: Vec<&str> = t.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Removes EAL's runtime directory for `prefix` (left behind by `--no-huge` runs).
pub(crate) fn remove_eal_dir(prefix: &str) {
    let _ = std::fs::remove_dir_all(Path::new("/var/run/dpdk").join(prefix));
}

/// Reads `counter` after the warm-up and again `seconds` later.
fn measure_window(
    warmup: u32,
    seconds: u32,
    alive: &mut dyn FnMut() -> Result<(), LabError>,
    counter: &mut dyn FnMut() -> Result<(Instant, u64), LabError>,
    at_start: &mut dyn FnMut(),
) -> Result<Window, LabError> {
    std::thread::sleep(Duration::from_secs(warmup as u64));
    alive()?;
    at_start();
    let (t0, c0) = counter()?;
    std::thread::sleep(Duration::from_secs(seconds as u64));
    alive()?;
    let (t1, c1) = counter()?;
    if c1 < c0 {
        return Err(other("the output counter went backwards"));
    }
    Ok(Window {
        packets: c1 - c0,
        seconds: t1.duration_since(t0).as_secs_f64(),
    })
}

// ---------------------------------------------------------------------------
// testpmd

/// Follows testpmd's periodic `--stats-period` output: port statistics
/// blocks, each with a `TX-packets:` line.
#[derive(Debug, Default)]
pub struct TestpmdStats {
    port: Option<u16>,
}

impl TestpmdStats {
    /// Feeds one line; returns `(port, TX-packets)` when the line gives a
    /// port's TX total in a `NIC statistics` block.
    pub fn feed(&mut self, line: &str) -> Option<(u16, u64)> {
        if let Some(i) = line.find("NIC statistics for port") {
            self.port = line[i + "NIC statistics for port".len()..]
                .split_whitespace()
                .next()
                .and_then(|p| p.parse().ok());
            return None;
        }
        if line.contains("statistics for")
            || line.contains("#####################") && !line.contains("port")
        {
            // Forward statistics at exit, or the end of a NIC block.
            if !line.contains("NIC statistics") {
                self.port = None;
            }
            return None;
        }
        let port = self.port?;
        let rest = line.trim_start().strip_prefix("TX-packets:")?;
        rest.split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .map(|n| (port, n))
    }
}

fn testpmd(
    capture: &Path,
    work: &Path,
    case: Case,
    opts: &Options,
) -> Result<(Window, serde_json::Value), LabError> {
    let prefix = format!("sluice-bench-testpmd-{}", std::process::id());
    let rx = format!("net_pcap0,rx_pcap={},infinite_rx=1", capture.display());
    let args: Vec<String> = [
        "--no-huge",
        "-m",
        "512",
        "--no-pci",
        "-l",
        "0,1",
        "--file-prefix",
        &prefix,
        "--vdev",
        &rx,
        "--vdev",
        "net_null0,no-rx=1",
        "--",
        "--forward-mode=io",
        "--nb-cores=1",
        "--total-num-mbufs=16384",
        "--stats-period=1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let log = work.join(format!("testpmd-{}.log", case.name()));
    let stderr = std::fs::File::create(&log).map_err(other)?;
    let mut child = Command::new("dpdk-testpmd")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .spawn()
        .map_err(|e| LabError::Other(format!("dpdk-testpmd: {e}")))?;
    let stdout = child.stdout.take().expect("piped");
    let mut p = Proc {
        child,
        signal: "-INT",
        what: "dpdk-testpmd".into(),
    };
    let samples: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::default();
    let s2 = samples.clone();
    let reader = std::thread::spawn(move || {
        let mut st = TestpmdStats::default();
        let mut text = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some((1, n)) = st.feed(&line) {
                s2.lock().expect("samples").push((Instant::now(), n));
            }
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    let started = Instant::now();
    let latest = |after: Instant| -> Result<(Instant, u64), LabError> {
        // The newest sample taken after `after` (samples come every second).
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            if let Some(s) = samples.lock().expect("samples").last().copied() {
                if s.0 >= after {
                    return Ok(s);
                }
            }
            if Instant::now() > deadline {
                return Err(other("dpdk-testpmd printed no port statistics"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let mut alive_err = None;
    let mut alive = || match p.exited() {
        Some(st) => Err(LabError::Other(format!("dpdk-testpmd exited ({st})"))),
        None => Ok(()),
    };
    let mut counter = || latest(Instant::now());
    let w = measure_window(
        opts.warmup,
        opts.seconds,
        &mut alive,
        &mut counter,
        &mut || {},
    );
    if let Err(e) = &w {
        alive_err = Some(e.to_string());
    }
    p.stop();
    let text = reader.join().unwrap_or_default();
    std::fs::write(work.join(format!("testpmd-{}.out", case.name())), &text).map_err(other)?;
    remove_eal_dir(&prefix);
    let _ = started;
    match (w, alive_err) {
        (Ok(w), _) => Ok((
            w,
            serde_json::json!({ "command": format!("dpdk-testpmd {}", args.join(" ")) }),
        )),
        (Err(_), Some(e)) => Err(LabError::Other(format!("{e}; log: {}", tail(&log, 5)))),
        (Err(e), None) => Err(e),
    }
}

// ---------------------------------------------------------------------------
// OVS-DPDK

const OVS_VSWITCHD: &str = "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk";
const OVS_SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

/// The OVS layout of a case: bridges and ports (`ovs-vsctl` arguments,
/// joined by `--`), and OpenFlow rules per bridge. `input` and `output`
/// are the two vdevs' devargs.
#[derive(Debug, Clone, PartialEq)]
pub struct OvsLayout {
    /// One `ovs-vsctl` transaction.
    pub vsctl: Vec<String>,
    /// `(bridge, flow)` for `ovs-ofctl add-flow`, after `del-flows` on each bridge.
    pub flows: Vec<(String, String)>,
    /// Bridges that need the underlay address (their TAP in the namespace).
    pub underlay_bridge: Option<&'static str>,
    /// The interface whose `tx_packets` is the case's output.
    pub output: &'static str,
    /// The datapath action the case must use (`tnl_push`, `tnl_pop`), if any.
    pub must_use: Option<&'static str>,
}

/// The OVS set-up of `case`, as OVS's userspace-tunnelling guide sets a
/// VTEP up: `br-int` for the pods and the `vxlan` port, `br-phy` holding
/// the uplink and the node's underlay address (MAC = the uplink's).
pub fn ovs_layout(case: Case, input: &str, output: &str) -> OvsLayout {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let br = |name: &str, mac: Option<&str>| {
        let mut v = s(&[
            "--",
            "add-br",
            name,
            "--",
            "set",
            "bridge",
            name,
            "datapath_type=netdev",
        ]);
        if let Some(m) = mac {
            v.push(format!("other-config:hwaddr={m}"));
        }
        v
    };
    let dpdk = |bridge: &str, port: &str, devargs: &str| {
        s(&[
            "--",
            "add-port",
            bridge,
            port,
            "--",
            "set",
            "interface",
            port,
            "type=dpdk",
            &format!("options:dpdk-devargs={devargs}"),
        ])
    };
    let vxlan = s(&[
        "--",
        "add-port",
        "br-int",
        "vxlan0",
        "--",
        "set",
        "interface",
        "vxlan0",
        "type=vxlan",
        "options:remote_ip=192.168.50.2",
        "options:local_ip=192.168.50.1",
        "options:key=1",
        "options:dst_port=8472",
    ]);
    let uplink_mac = craft::UPLINK_MAC.to_string();
    let f = |b: &str, r: &str| (b.to_string(), r.to_string());
    match case {
        Case::Encap => OvsLayout {
            vsctl: [
                br("br-int", None),
                dpdk("br-int", "pod0", input),
                vxlan,
                br("br-phy", Some(&uplink_mac)),
                dpdk("br-phy", "up0", output),
            ]
            .concat(),
            flows: vec![
                // Routed into the tunnel as flannel's node does: TTL, the
                // VTEP MACs, then the VXLAN port.
                f("br-int", "priority=100,ip,in_port=pod0,nw_dst=10.5.2.0/24,actions=dec_ttl,mod_dl_src:02:00:00:00:bb:01,mod_dl_dst:02:00:00:00:bb:02,output:vxlan0"),
                f("br-phy", "priority=100,in_port=LOCAL,actions=output:up0"),
                f("br-phy", "priority=100,in_port=up0,actions=LOCAL"),
            ],
            underlay_bridge: Some("br-phy"),
            output: "up0",
            must_use: Some("tnl_push"),
        },
        Case::Decap => OvsLayout {
            vsctl: [
                br("br-int", None),
                dpdk("br-int", "pod0", output),
                vxlan,
                br("br-phy", Some(&uplink_mac)),
                dpdk("br-phy", "up0", input),
            ]
            .concat(),
            flows: vec![
                f("br-phy", "priority=100,in_port=LOCAL,actions=output:up0"),
                // To the node's own address: OVS pops the tunnel here.
                f("br-phy", "priority=100,in_port=up0,actions=LOCAL"),
                f("br-int", "priority=100,ip,in_port=vxlan0,tun_id=1,nw_dst=10.5.1.2,actions=dec_ttl,mod_dl_src:02:00:00:00:00:01,mod_dl_dst:02:00:00:00:01:02,output:pod0"),
            ],
            underlay_bridge: Some("br-phy"),
            output: "pod0",
            must_use: Some("tnl_pop"),
        },
        Case::HostGw => OvsLayout {
            vsctl: [
                br("br-int", None),
                dpdk("br-int", "pod0", input),
                dpdk("br-int", "up0", output),
            ]
            .concat(),
            flows: vec![f(
                "br-int",
                "priority=100,ip,in_port=pod0,nw_dst=10.5.4.0/24,actions=dec_ttl,mod_dl_src:02:00:00:00:aa:01,mod_dl_dst:02:00:00:00:aa:04,output:up0",
            )],
            underlay_bridge: None,
            output: "up0",
            must_use: None,
        },
    }
}

/// The PMD flows of `ovs-appctl dpctl/dump-flows` (the lines after
/// `flow-dump from pmd`), without their statistics.
pub fn pmd_flows(dump: &str) -> Vec<String> {
    let mut in_pmd = false;
    let mut out = Vec::new();
    for l in dump.lines() {
        if l.starts_with("flow-dump from") {
            in_pmd = l.contains("pmd");
            continue;
        }
        if in_pmd && !l.trim().is_empty() {
            out.push(l.trim().to_string());
        }
    }
    out
}

/// The `actions:` part of a datapath flow line.
pub fn flow_actions(flow: &str) -> &str {
    flow.split_once("actions:").map_or("", |(_, a)| a)
}

/// `avg processing cycles per packet: 312.11 (…)` from `pmd-stats-show`.
pub fn pmd_cycles_per_packet(stats: &str) -> Option<f64> {
    stats
        .lines()
        .find(|l| l.contains("avg processing cycles per packet:"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

struct Ovs {
    dir: PathBuf,
    ns: String,
    procs: Vec<Proc>,
}

impl Ovs {
    fn env(&self, c: &mut Command) {
        for k in ["OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR"] {
            c.env(k, &self.dir);
        }
        c.env("OVS_PKGDATADIR", "/usr/share/openvswitch");
    }

    fn cmd(&self, prog: &str, args: &[&str]) -> Result<String, LabError> {
        let mut c = Command::new(prog);
        self.env(&mut c);
        let out = c
            .args(args)
            .output()
            .map_err(|e| LabError::Other(format!("{prog}: {e}")))?;
        if !out.status.success() {
            return Err(LabError::Other(format!(
                "{prog} {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn vsctl(&self, args: &[&str]) -> Result<String, LabError> {
        let db = format!("--db=unix:{}/db.sock", self.dir.display());
        let mut a = vec![db.as_str(), "--timeout=30"];
        a.extend_from_slice(args);
        self.cmd("ovs-vsctl", &a)
    }

    fn appctl(&self, args: &[&str]) -> Result<String, LabError> {
        let t = format!("--target={}/ovs-vswitchd.ctl", self.dir.display());
        let mut a = vec![t.as_str()];
        a.extend_from_slice(args);
        self.cmd("ovs-appctl", &a)
    }

    fn ofctl(&self, bridge: &str, args: &[&str]) -> Result<String, LabError> {
        let sock = format!("unix:{}/{bridge}.mgmt", self.dir.display());
        let mut a = vec![args[0], sock.as_str()];
        a.extend_from_slice(&args[1..]);
        self.cmd("ovs-ofctl", &a)
    }

    fn spawn_in_ns(&mut self, what: &str, args: &[&str]) -> Result<(), LabError> {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).args(args);
        self.env(&mut c);
        let p = Proc::spawn(what, &mut c, &self.dir.join(format!("{what}.out")), "-TERM")?;
        self.procs.push(p);
        Ok(())
    }

    fn start(dir: PathBuf, ns: String, prefix: &str) -> Result<Ovs, LabError> {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(other)?;
        let _ = sh("ip", &["netns", "del", &ns]);
        sh("ip", &["netns", "add", &ns])?;
        let mut o = Ovs {
            dir,
            ns,
            procs: Vec::new(),
        };
        let db = o.dir.join("conf.db");
        o.cmd("ovsdb-tool", &["create", &db.to_string_lossy(), OVS_SCHEMA])?;
        let d = o.dir.display().to_string();
        o.spawn_in_ns(
            "ovsdb-server",
            &[
                "ovsdb-server",
                &db.to_string_lossy(),
                &format!("--remote=punix:{d}/db.sock"),
                &format!("--unixctl={d}/ovsdb-server.ctl"),
                &format!("--log-file={d}/ovsdb-server.log"),
            ],
        )?;
        wait_for(&o.dir.join("db.sock"), Duration::from_secs(10))?;
        o.vsctl(&["--no-wait", "init"])?;
        let extra = format!("other_config:dpdk-extra=--no-huge --legacy-mem -m 1024 --no-pci --file-prefix={prefix}");
        o.vsctl(&[
            "--no-wait",
            "set",
            "Open_vSwitch",
            ".",
            "other_config:dpdk-init=true",
            &extra,
            "other_config:dpdk-lcore-mask=0x1",
            "other_config:pmd-cpu-mask=0x2",
        ])?;
        o.spawn_in_ns(
            "ovs-vswitchd",
            &[
                OVS_VSWITCHD,
                &format!("unix:{d}/db.sock"),
                &format!("--unixctl={d}/ovs-vswitchd.ctl"),
                &format!("--log-file={d}/ovs-vswitchd.log"),
                "-vconsole:off",
            ],
        )?;
        wait_for(&o.dir.join("ovs-vswitchd.ctl"), Duration::from_secs(30))?;
        // dpdk_initialized flips once EAL is up.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = o.vsctl(&["get", "Open_vSwitch", ".", "dpdk_initialized"])?;
            if v.trim() == "true" {
                break;
            }
            if Instant::now() > deadline {
                return Err(LabError::Other(format!(
                    "OVS: DPDK did not initialise: {}",
                    tail(&o.dir.join("ovs-vswitchd.log"), 5)
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(o)
    }
}

impl Drop for Ovs {
    fn drop(&mut self) {
        // ovs-vswitchd first, then the database.
        while let Some(mut p) = self.procs.pop() {
            p.stop();
        }
        let _ = sh("ip", &["netns", "del", &self.ns]);
    }
}

fn wait_for(path: &Path, t: Duration) -> Result<(), LabError> {
    let deadline = Instant::now() + t;
    while !path.exists() {
        if Instant::now() > deadline {
            return Err(LabError::Other(format!(
                "{} did not appear",
                path.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn ovs(
    capture: &Path,
    work: &Path,
    case: Case,
    opts: &Options,
) -> Result<(Window, serde_json::Value), LabError> {
    for p in [OVS_VSWITCHD, OVS_SCHEMA] {
        if !Path::new(p).exists() {
            return Err(LabError::Other(format!(
                "{p} is missing (Debian's openvswitch-switch-dpdk)"
            )));
        }
    }
    let prefix = format!("sluice-bench-ovs-{}", std::process::id());
    let dir = work.join(format!("ovs-{}", case.name()));
    let ns = format!("sbench-ovs{}", std::process::id() % 100_000);
    let input = format!("net_pcap0,rx_pcap={},infinite_rx=1", capture.display());
    let layout = ovs_layout(case, &input, "net_null0,no-rx=1");
    let o = Ovs::start(dir, ns, &prefix);
    let o = match o {
        Ok(o) => o,
        Err(e) => {
            remove_eal_dir(&prefix);
            return Err(e);
        }
    };
    let r = ovs_measure(&o, &layout, opts);
    let log = o.dir.join("ovs-vswitchd.log");
    drop(o);
    remove_eal_dir(&prefix);
    r.map_err(|e| LabError::Other(format!("{e}; ovs-vswitchd.log: {}", tail(&log, 4))))
}

fn ovs_measure(
    o: &Ovs,
    layout: &OvsLayout,
    opts: &Options,
) -> Result<(Window, serde_json::Value), LabError> {
    let args: Vec<&str> = layout.vsctl.iter().map(String::as_str).collect();
    o.vsctl(&args)?;
    for iface in ["pod0", "up0"] {
        let err = o.vsctl(&["get", "interface", iface, "error"])?;
        if !err.trim().is_empty() && err.trim() != "[]" {
            return Err(LabError::Other(format!(
                "OVS interface {iface}: {}",
                err.trim()
            )));
        }
    }
    let mut bridges: Vec<&str> = layout.flows.iter().map(|(b, _)| b.as_str()).collect();
    bridges.dedup();
    for b in &bridges {
        o.ofctl(b, &["del-flows"])?;
    }
    for (b, f) in &layout.flows {
        o.ofctl(b, &["add-flow", f])?;
    }
    if let Some(b) = layout.underlay_bridge {
        sh(
            "ip",
            &["-n", &o.ns, "addr", "add", "192.168.50.1/24", "dev", b],
        )?;
        sh("ip", &["-n", &o.ns, "link", "set", b, "up"])?;
        // The remote node's MAC, as a resolved neighbour (no ARP on net_null).
        o.appctl(&[
            "tnl/arp/set",
            b,
            "192.168.50.2",
            &craft::NODE_B_MAC.to_string(),
        ])?;
    }
    let output = layout.output;
    let mut alive = || Ok(());
    let mut counter = || -> Result<(Instant, u64), LabError> {
        let v = o.vsctl(&["get", "interface", output, "statistics:tx_packets"])?;
        let t = Instant::now();
        v.trim()
            .parse::<u64>()
            .map(|n| (t, n))
            .map_err(|e| LabError::Other(format!("OVS tx_packets `{}`: {e}", v.trim())))
    };
    let mut clear = || {
        let _ = o.appctl(&["dpif-netdev/pmd-stats-clear"]);
    };
    let w = measure_window(
        opts.warmup,
        opts.seconds,
        &mut alive,
        &mut counter,
        &mut clear,
    )?;
    let pmd = o
        .appctl(&["dpif-netdev/pmd-stats-show"])
        .unwrap_or_default();
    let dump = o.appctl(&["dpctl/dump-flows"])?;
    let flows = pmd_flows(&dump);
    let actions: Vec<String> = flows.iter().map(|f| flow_actions(f).to_string()).collect();
    if let Some(needle) = layout.must_use {
        if !actions.iter().any(|a| a.contains(needle)) {
            return Err(LabError::Other(format!(
                "OVS did not use {needle}: datapath flows {flows:?}"
            )));
        }
    }
    Ok((
        w,
        serde_json::json!({
            "datapath_flows": flows,
            "datapath_actions": actions,
            "required_action": layout.must_use,
            "pmd_cycles_per_packet": pmd_cycles_per_packet(&pmd),
            "openflow": layout.flows.iter().map(|(b, f)| format!("{b}: {f}")).collect::<Vec<_>>(),
        }),
    ))
}

// ---------------------------------------------------------------------------
// sluice

/// The reference node on the DPDK backend for `case`: the input port a
/// `net_pcap` replaying `capture`, every other port a silent `net_null`.
pub fn sluiced_config(case: Case, capture: &Path, dir: &Path, prefix: &str) -> String {
    let input_port = match case {
        Case::Encap | Case::HostGw => "pod-a",
        Case::Decap => "eth0",
    };
    let mut text = format!(
        "[daemon]\nbackend = \"dpdk\"\nworkers = [1]\nrx_mode = \"poll\"\napi_socket = \"{}\"\n\
         metrics_address = \"127.0.0.1:0\"\npod_records = \"\"\n\n\
         [daemon.dpdk]\nno_huge = true\nmemory_mb = 512\nfile_prefix = \"{prefix}\"\n",
        dir.join("api.sock").display()
    );
    let mut in_port = false;
    for line in craft::REFERENCE_NODE.lines() {
        text.push_str(line);
        text.push('\n');
        if line.starts_with("[[") {
            in_port = line == "[[port]]";
        }
        if let (true, Some(name)) = (
            in_port,
            line.strip_prefix("name = \"")
                .and_then(|l| l.strip_suffix('"')),
        ) {
            let vdev = name.replace('-', "_");
            let devargs = if name == input_port {
                format!(
                    "net_pcap_{vdev},rx_pcap={},infinite_rx=1",
                    capture.display()
                )
            } else {
                format!("net_null_{vdev},no-rx=1")
            };
            text.push_str(&format!("devargs = \"{devargs}\"\n"));
        }
    }
    text
}

/// The port whose TX is the case's output on the reference node.
pub fn sluice_output_port(case: Case) -> &'static str {
    match case {
        Case::Encap | Case::HostGw => "eth0",
        Case::Decap => "pod-a",
    }
}

/// The `sluiced` binary: the given one, else next to this executable, else on `PATH`.
pub fn find_sluiced(given: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = given {
        return p.exists().then(|| p.to_path_buf());
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("sluiced")))
        .filter(|p| p.exists());
    beside.or_else(|| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("sluiced"))
                .find(|p| p.exists())
        })
    })
}

/// Whether `sluiced` at `bin` has the DPDK backend: `None` if it does,
/// else why not.
fn sluiced_lacks_dpdk(bin: &Path) -> Option<String> {
    let out = Command::new(bin).arg("--help").output();
    match out {
        Err(e) => Some(format!("{}: {e}", bin.display())),
        Ok(_) => {
            // The backend's EAL is linked in: look for it in the binary.
            let b = std::fs::read(bin).unwrap_or_default();
            let needle = b"rte_eal_init";
            if b.windows(needle.len()).any(|w| w == needle) {
                None
            } else {
                Some(format!(
                    "{} has no DPDK backend (built before it landed on main)",
                    bin.display()
                ))
            }
        }
    }
}

fn sluice(
    bin: &Path,
    capture: &Path,
    work: &Path,
    case: Case,
    opts: &Options,
) -> Result<(Window, serde_json::Value), LabError> {
    let dir = work.join(format!("sluice-{}", case.name()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(other)?;
    let prefix = format!("sluice-bench-sluiced-{}", std::process::id());
    let cfg = sluiced_config(case, capture, &dir, &prefix);
    let cfg_path = dir.join("sluiced.toml");
    std::fs::write(&cfg_path, cfg).map_err(other)?;
    let log = dir.join("sluiced.log");
    let mut cmd = Command::new(bin);
    cmd.arg("--config").arg(&cfg_path);
    let p = Proc::spawn("sluiced", &mut cmd, &log, "-TERM")?;
    let p = RefCell::new(p);
    let client =
        sluice_api::client::Client::new(dir.join("api.sock")).with_timeout(Duration::from_secs(2));
    let deadline = Instant::now() + Duration::from_secs(30);
    let result = (|| {
        loop {
            if let Some(st) = p.borrow_mut().exited() {
                return Err(LabError::Other(format!(
                    "sluiced exited ({st}): {}",
                    tail(&log, 6)
                )));
            }
            if client.stats().is_ok() {
                break;
            }
            if Instant::now() > deadline {
                return Err(LabError::Other(format!(
                    "sluiced did not answer in 30 s: {}",
                    tail(&log, 6)
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let out_port = sluice_output_port(case);
        let first: RefCell<Option<sluice_api::response::Stats>> = RefCell::new(None);
        let mut alive = || match p.borrow_mut().exited() {
            Some(st) => Err(LabError::Other(format!(
                "sluiced exited ({st}): {}",
                tail(&log, 6)
            ))),
            None => Ok(()),
        };
        let mut counter = || -> Result<(Instant, u64), LabError> {
            let s = client.stats().map_err(other)?;
            let t = Instant::now();
            let n = s.ports.get(out_port).map_or(0, |p| p.tx_packets);
            let mut f = first.borrow_mut();
            if f.is_none() {
                *f = Some(s);
            }
            Ok((t, n))
        };
        let w = measure_window(
            opts.warmup,
            opts.seconds,
            &mut alive,
            &mut counter,
            &mut || {},
        )?;
        let end = client.stats().map_err(other)?;
        let start = first.take();
        let delta = |m: &std::collections::BTreeMap<String, u64>,
                     s: Option<&std::collections::BTreeMap<String, u64>>| {
            m.iter()
                .filter_map(|(k, v)| {
                    let d = v - s.and_then(|s| s.get(k)).copied().unwrap_or(0);
                    (d > 0).then(|| (k.clone(), d))
                })
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        let drops = delta(&end.drops, start.as_ref().map(|s| &s.drops));
        let events = delta(&end.events, start.as_ref().map(|s| &s.events));
        Ok((
            w,
            serde_json::json!({
                "output_port": out_port,
                "events_in_window": events,
                "drops_in_window": drops,
                "config": cfg_path.display().to_string(),
            }),
        ))
    })();
    p.borrow_mut().stop();
    remove_eal_dir(&prefix);
    result
}

use std::cell::RefCell;

// ---------------------------------------------------------------------------
// The run

pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!("{cores} cores, {cpu}, load average {}", load.join(" "))
}

/// Runs every contender on every case.
pub fn run(opts: &Options, progress: &mut dyn FnMut(&str)) -> Result<Report, LabError> {
    let work = opts.out.join("work");
    std::fs::create_dir_all(&work).map_err(other)?;
    let work = work.canonicalize().map_err(other)?;
    let machine = machine();
    let sluiced = find_sluiced(opts.sluiced.as_deref());
    let sluice_missing = match &sluiced {
        None => Some(
            "sluiced not found (build it: cargo build --release -p sluiced, or pass --sluiced)"
                .to_string(),
        ),
        Some(b) => sluiced_lacks_dpdk(b),
    };
    let mut outcomes = Vec::new();
    let mut input_len = serde_json::Map::new();
    for &case in &opts.cases {
        let fr = frames(case, opts.flows);
        input_len.insert(case.name().into(), fr[0].len().into());
        let capture = work.join(format!("in-{}.pcap", case.name()));
        write_capture(&capture, &fr).map_err(other)?;
        for &c in &opts.contenders {
            progress(&format!(
                "{}: {} ({} s warm-up, {} s window)",
                case.name(),
                c.title(),
                opts.warmup,
                opts.seconds
            ));
            let r = match c {
                Contender::TestpmdIo => testpmd(&capture, &work, case, opts),
                Contender::OvsDpdk => ovs(&capture, &work, case, opts),
                Contender::Sluice => match (&sluiced, &sluice_missing) {
                    (Some(b), None) => sluice(b, &capture, &work, case, opts),
                    (_, Some(why)) => {
                        outcomes.push(Outcome::without(c, case, "not-available", why.clone()));
                        progress(&format!("  not available: {why}"));
                        continue;
                    }
                    (None, None) => unreachable!("no binary means a reason"),
                },
            };
            match r {
                Ok((w, detail)) => {
                    progress(&format!("  {:.3} Mpps", w.pps() / 1e6));
                    outcomes.push(Outcome::measured(c, case, w, detail));
                }
                Err(e) => {
                    progress(&format!("  failed: {e}"));
                    outcomes.push(Outcome::without(c, case, "failed", e.to_string()));
                }
            }
        }
    }
    Ok(Report {
        seconds: opts.seconds,
        warmup_s: opts.warmup,
        flows: opts.flows,
        input_frame_len: serde_json::Value::Object(input_len),
        machine,
        setup: vec![
            "inputs: net_pcap with infinite_rx=1 (the replay runs inside the forwarding thread's RX call, on core 1, for every contender); output: net_null with no-rx=1; EAL --no-huge".into(),
            "testpmd: dpdk-testpmd -l 0,1 --no-huge -m 512 --no-pci -- --forward-mode=io --nb-cores=1 --total-num-mbufs=16384 --stats-period=1".into(),
            "OVS-DPDK: ovs-vswitchd-dpdk in a private namespace and ovsdb, dpdk-lcore-mask=0x1, pmd-cpu-mask=0x2 (one PMD on core 1), EMC/SMC defaults, userspace VXLAN tunnelling (br-int + vxlan port, br-phy with 192.168.50.1/24 and the uplink MAC, tnl/arp/set for node B)".into(),
            "sluice: sluiced, backend dpdk, workers [1], the reference node (dataplane/tests/golden/node.toml)".into(),
        ],
        outcomes,
    })
}

fn fmt_mpps(p: Option<f64>) -> String {
    p.map_or("n/a".into(), |p| format!("{:.2}", p / 1e6))
}

fn fmt_ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "n/a".into(),
    }
}

/// The terminal table: Mpps per contender and case, ratios against
/// testpmd io (and sluice against OVS-DPDK) from the same run.
pub fn table(r: &Report) -> String {
    let mut s = format!(
        "| case ({} s windows, {} flows) | testpmd io, Mpps | OVS-DPDK, Mpps (x testpmd) | sluice, Mpps (x testpmd) | sluice / OVS-DPDK | target |\n|---|---:|---:|---:|---:|---|\n",
        r.seconds, r.flows
    );
    for case in Case::ALL {
        if r.outcomes.iter().all(|o| o.case != case) {
            continue;
        }
        let t = r.pps(Contender::TestpmdIo, case);
        let o = r.pps(Contender::OvsDpdk, case);
        let sl = r.pps(Contender::Sluice, case);
        let (tx, ox) = r_targets(case);
        s += &format!(
            "| {} | {} | {} ({}) | {} ({}) | {} | {} |\n",
            case.title(),
            fmt_mpps(t),
            fmt_mpps(o),
            fmt_ratio(o, t),
            fmt_mpps(sl),
            fmt_ratio(sl, t),
            fmt_ratio(sl, o),
            match ox {
                Some(ox) => format!(">= {tx}x testpmd, >= {ox}x OVS"),
                None => format!(">= {tx}x testpmd"),
            }
        );
    }
    for o in &r.outcomes {
        if let Some(why) = &o.reason {
            s += &format!(
                "\n{} on {}: {}: {}",
                o.contender.title(),
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

fn r_targets(case: Case) -> (f64, Option<f64>) {
    case.targets()
}

/// A grouped bar chart (SVG): Mpps per contender for each case.
pub fn svg(r: &Report) -> String {
    let cases: Vec<Case> = Case::ALL
        .into_iter()
        .filter(|c| r.outcomes.iter().any(|o| o.case == *c))
        .collect();
    let max = r
        .outcomes
        .iter()
        .filter_map(|o| o.pps)
        .fold(1.0f64, f64::max);
    let colours = ["#999999", "#d08c2a", "#2a7ab8"];
    let (bar_h, gap, x0, width) = (18.0, 4.0, 200.0, 360.0);
    let group_h = 3.0 * (bar_h + gap) + 22.0;
    let h = 40.0 + group_h * cases.len() as f64;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"680\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\
<text x=\"10\" y=\"20\" font-weight=\"bold\">Mpps forwarded by one core, 64-byte frames in (sluice-lab dpdk-bench)</text>"
    );
    for (gi, case) in cases.iter().enumerate() {
        let y = 40.0 + gi as f64 * group_h;
        s += &format!(
            "<text x=\"10\" y=\"{}\" font-weight=\"bold\">{}</text>",
            y + 12.0,
            case.title()
        );
        let t = r.pps(Contender::TestpmdIo, *case);
        for (ci, c) in Contender::ALL.iter().enumerate() {
            let by = y + 18.0 + ci as f64 * (bar_h + gap);
            s += &format!("<text x=\"20\" y=\"{}\">{}</text>", by + 13.0, c.title());
            match r.pps(*c, *case) {
                Some(p) => {
                    let w = (p / max * width).round();
                    s += &format!(
                        "<rect x=\"{x0}\" y=\"{by}\" width=\"{w}\" height=\"{bar_h}\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{:.2} Mpps ({})</text>",
                        colours[ci],
                        x0 + w + 6.0,
                        by + 13.0,
                        p / 1e6,
                        fmt_ratio(Some(p), t)
                    );
                }
                None => {
                    s += &format!(
                        "<text x=\"{x0}\" y=\"{}\" fill=\"#b00\">{}</text>",
                        by + 13.0,
                        r.get(*c, *case).map_or("not run", |o| o.status)
                    );
                }
            }
        }
    }
    s += "</svg>\n";
    s
}

/// Writes `dpdk-bench.json`, `dpdk-bench.svg` and `dpdk-bench.md` into `dir`.
pub fn write(r: &Report, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("dpdk-bench.json"),
        serde_json::to_vec_pretty(r).expect("report serializes"),
    )?;
    std::fs::write(dir.join("dpdk-bench.svg"), svg(r))?;
    let mut md = format!(
        "# sluice, OVS-DPDK and testpmd io on one core\n\n{} ({} s warm-up, {} s window per figure, {} flows). `sluice-lab dpdk-bench`.\n\n{}\n![dpdk-bench.svg](dpdk-bench.svg)\n\n",
        r.machine, r.warmup_s, r.seconds, r.flows, table(r)
    );
    for l in &r.setup {
        md += &format!("- {l}\n");
    }
    for o in &r.outcomes {
        if let Some(a) = o.detail.get("datapath_actions") {
            md += &format!("\nOVS-DPDK {} datapath actions: `{}`\n", o.case.name(), a);
        }
    }
    std::fs::write(dir.join("dpdk-bench.md"), md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_are_64_byte_frames_with_distinct_flows() {
        for case in [Case::Encap, Case::HostGw] {
            let f = frames(case, 300);
            assert!(f.iter().all(|x| x.len() == FRAME_LEN), "{case:?}");
            let mut uniq = f.clone();
            uniq.sort();
            uniq.dedup();
            assert_eq!(uniq.len(), 300);
        }
        let d = decap_frames(300);
        // 50 bytes of VXLAN around a 60-byte frame.
        assert!(d.iter().all(|x| x.len() == FRAME_LEN + 50));
        let f = &d[7];
        assert_eq!(&f[26..30], &[192, 168, 50, 2]);
        assert_eq!(&f[30..34], &[192, 168, 50, 1]);
        assert_eq!(u16::from_be_bytes([f[36], f[37]]), 8472);
        // Inner destination: pod-a.
        assert_eq!(&f[50 + 30..50 + 34], &[10, 5, 1, 2]);
    }

    #[test]
    fn captures_do_what_their_case_says_in_the_pipeline() {
        // Each case's frames, through the reference node in memory.
        use sluice_dataplane::config::NodeConfig;
        use sluice_dataplane::replay::replay_in_memory;
        let node = NodeConfig::from_toml_str(craft::REFERENCE_NODE).unwrap();
        for (case, port, event, out) in [
            (Case::Encap, "pod-a", "vxlan_encap", "eth0"),
            (Case::Decap, "eth0", "vxlan_decap", "pod-a"),
            (Case::HostGw, "pod-a", "host_gw", "eth0"),
        ] {
            assert_eq!(sluice_output_port(case), out);
            let inputs: Vec<(&str, Vec<u8>)> =
                frames(case, 50).into_iter().map(|f| (port, f)).collect();
            let r = replay_in_memory(&node, &inputs).unwrap();
            assert_eq!(r.stats.events.get(event).copied(), Some(50), "{case:?}");
            assert_eq!(r.stats.total_drops(), 0, "{case:?}: {:?}", r.stats.drops);
            assert_eq!(r.outputs[out].len(), 50, "{case:?}");
        }
    }

    #[test]
    fn testpmd_stats_lines() {
        let text = "\x1b[2J\x1b[1;1H\nPort statistics ====================================\n  ######################## NIC statistics for port 0  ########################\n  RX-packets: 500        RX-missed: 0          RX-bytes:  0\n  RX-errors: 0\n  RX-nombuf:  0         \n  TX-packets: 0          TX-errors: 0          TX-bytes:  0\n\n  Throughput (since last show)\n  Rx-pps:            0          Rx-bps:            0\n  Tx-pps:            0          Tx-bps:            0\n  ############################################################################\n\n  ######################## NIC statistics for port 1  ########################\n  RX-packets: 0          RX-missed: 0          RX-bytes:  0\n  RX-errors: 0\n  RX-nombuf:  0         \n  TX-packets: 95230144   TX-errors: 0          TX-bytes:  0\n  ############################################################################\n  ---------------------- Forward statistics for port 1  ----------------------\n  RX-packets: 0              RX-dropped: 0             RX-total: 0\n  TX-packets: 112676096      TX-dropped: 0             TX-total: 112676096\n";
        let mut st = TestpmdStats::default();
        let got: Vec<(u16, u64)> = text.lines().filter_map(|l| st.feed(l)).collect();
        assert_eq!(got, vec![(0, 0), (1, 95_230_144)]);
    }

    #[test]
    fn ovs_flow_dump_and_pmd_stats() {
        let dump = "flow-dump from the main thread:\nrecirc_id(0),in_port(3),eth_type(0x86dd), packets:0, bytes:0, used:never, actions:4\nflow-dump from pmd on cpu core: 1\nrecirc_id(0),in_port(5),eth_type(0x0800),ipv4(dst=10.5.2.9/255.255.255.0,proto=17,frag=no), packets:25226431, bytes:1513585860, used:0.000s, actions:set(ipv4(ttl=63)),tnl_push(tnl_port(2),header(size=50,type=4),out_port(3)),4\n";
        let f = pmd_flows(dump);
        assert_eq!(f.len(), 1);
        assert_eq!(
            flow_actions(&f[0]),
            "set(ipv4(ttl=63)),tnl_push(tnl_port(2),header(size=50,type=4),out_port(3)),4"
        );
        let pmd = "  avg cycles per packet: 312.11 (13073932794/41889024)\n  avg processing cycles per packet: 311.50 (13073932794/41889024)\n";
        assert_eq!(pmd_cycles_per_packet(pmd), Some(311.5));
    }

    #[test]
    fn ovs_layouts_name_their_ports() {
        for case in Case::ALL {
            let l = ovs_layout(
                case,
                "net_pcap0,rx_pcap=/x,infinite_rx=1",
                "net_null0,no-rx=1",
            );
            let j = l.vsctl.join(" ");
            assert!(j.contains("options:dpdk-devargs=net_pcap0,rx_pcap=/x,infinite_rx=1"));
            assert!(j.contains("options:dpdk-devargs=net_null0,no-rx=1"));
            assert!(j.contains("add-port br-int pod0"));
            assert!(l.flows.iter().any(|(_, f)| f.contains(&format!(
                "output:{}",
                if case == Case::Decap {
                    "pod0"
                } else if case == Case::Encap {
                    "vxlan0"
                } else {
                    "up0"
                }
            ))));
        }
        assert_eq!(ovs_layout(Case::Encap, "a", "b").must_use, Some("tnl_push"));
        assert_eq!(ovs_layout(Case::Decap, "a", "b").must_use, Some("tnl_pop"));
    }

    #[test]
    fn sluiced_config_puts_the_input_on_the_right_port() {
        let c = sluiced_config(Case::Decap, Path::new("/t/in.pcap"), Path::new("/t"), "p");
        assert!(c.contains("devargs = \"net_pcap_eth0,rx_pcap=/t/in.pcap,infinite_rx=1\""));
        assert!(c.contains("devargs = \"net_null_pod_a,no-rx=1\""));
        assert!(c.contains("devargs = \"net_null_host,no-rx=1\""));
        let c = sluiced_config(Case::Encap, Path::new("/t/in.pcap"), Path::new("/t"), "p");
        assert!(c.contains("devargs = \"net_pcap_pod_a,rx_pcap=/t/in.pcap,infinite_rx=1\""));
        assert!(c.contains("devargs = \"net_null_eth0,no-rx=1\""));
        assert!(c.contains("backend = \"dpdk\"") && c.contains("workers = [1]"));
    }

    #[test]
    fn table_marks_missing_figures() {
        let w = Window {
            packets: 10_000_000,
            seconds: 1.0,
        };
        let r = Report {
            seconds: 1,
            warmup_s: 1,
            flows: 1,
            input_frame_len: serde_json::Value::Null,
            machine: String::new(),
            setup: vec![],
            outcomes: vec![
                Outcome::measured(
                    Contender::TestpmdIo,
                    Case::Encap,
                    w,
                    serde_json::Value::Null,
                ),
                Outcome::measured(
                    Contender::OvsDpdk,
                    Case::Encap,
                    Window {
                        packets: 5_000_000,
                        seconds: 1.0,
                    },
                    serde_json::Value::Null,
                ),
                Outcome::without(
                    Contender::Sluice,
                    Case::Encap,
                    "not-available",
                    "later".into(),
                ),
            ],
        };
        let t = table(&r);
        assert!(
            t.contains("| 10.00 | 5.00 (0.50x) | n/a (n/a) | n/a |"),
            "{t}"
        );
        assert!(t.contains("sluice on encap: not-available: later"));
        assert!(svg(&r).contains("not-available"));
    }
}
