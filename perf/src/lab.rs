//! A multi-node lab in network namespaces on one machine.
//!
//! Layout for a lab named `L` with `N` nodes:
//!
//! ```text
//!  L-ul (underlay): bridge br0 ── veth nK ─┐
//!                                          │ eth0 192.168.77.K/24 (uplink)
//!  L-nK (node K): sluiced (AF_XDP on eth0 and the pod veths, TAP sluice0)
//!                 pod0, pod1 ── veth ──┐
//!  L-nK-p0, L-nK-p1 (pods): eth0 10.77.K.2 / 10.77.K.3, default via 10.77.K.1
//! ```
//!
//! Every namespace the lab creates starts with its name, and the lab's
//! state file (`/run/sluice-lab/L.json`) lists them with the daemons' PIDs,
//! so `down` removes everything also after a failure or an interrupted run.
//! Daemons are stopped by PID (SIGTERM, then SIGKILL).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How nodes carry pod traffic between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// VXLAN, VNI 1, port 8472 (flannel's defaults).
    Vxlan,
    /// IPv4 in IPv4.
    Ipip,
    /// Plain routing to the next node's MAC.
    HostGw,
}

impl Mode {
    /// Pod MTU on a 1500-byte underlay.
    pub fn pod_mtu(self) -> u16 {
        match self {
            Mode::Vxlan => 1450,
            Mode::Ipip => 1480,
            Mode::HostGw => 1500,
        }
    }
    /// The route kind in sluiced's configuration.
    pub fn via(self) -> &'static str {
        match self {
            Mode::Vxlan => "vxlan",
            Mode::Ipip => "ipip",
            Mode::HostGw => "host-gw",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.via())
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "vxlan" => Ok(Mode::Vxlan),
            "ipip" => Ok(Mode::Ipip),
            "host-gw" | "hostgw" => Ok(Mode::HostGw),
            other => Err(format!("mode `{other}`: expected vxlan, ipip or host-gw")),
        }
    }
}

/// Errors building or tearing down a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A command failed.
    #[error("`{cmd}` failed: {stderr}")]
    Command {
        /// The command line.
        cmd: String,
        /// What it said.
        stderr: String,
    },
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

type Result<T> = std::result::Result<T, LabError>;

/// What a running lab consists of (written to its state file).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    /// Lab name (namespace prefix).
    pub name: String,
    /// Forwarding mode.
    pub mode: Mode,
    /// Nodes.
    pub nodes: Vec<NodeState>,
    /// Every namespace created, in creation order.
    pub namespaces: Vec<String>,
    /// Workers per sluiced, and queues per veth.
    #[serde(default = "one_worker")]
    pub workers: u8,
    /// The store the agents share (see [`crate::cluster`]).
    #[serde(default)]
    pub store: Option<crate::cluster::StoreState>,
    /// The pod network.
    #[serde(default = "default_network")]
    pub network: String,
    /// sluiced's rx mode (kept for restarts).
    #[serde(default = "default_rx_mode")]
    pub rx_mode: String,
    /// The core forwarding is confined to (see [`LabSpec::forwarding_core`]).
    #[serde(default)]
    pub forwarding_core: Option<usize>,
    /// Routes over BGP (see [`BgpLab`]).
    #[serde(default)]
    pub bgp: Option<BgpLab>,
}

/// A lab whose agents learn routes over BGP, Calico style.
///
/// Every sluice node's agent runs inside its node's namespace (BGP speaks
/// over the node's underlay address, through sluiced's host path, as on a
/// real node) with the embedded store for its lease, AS 64512, and either a
/// full mesh of the other nodes (the node with the lower address connects,
/// the other is `passive`, as Calico's template) or the given route
/// reflectors. Kernel nodes get no routes from the lab: the tests run BIRD
/// on them (`crate::peers`), standing in for Calico nodes. In IPIP labs a
/// kernel node has `tunl0` up, as Calico leaves it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpLab {
    /// Route reflectors every sluice node peers with instead of the mesh.
    #[serde(default)]
    pub reflectors: Vec<String>,
    /// More peers of every sluice node (BIRD, GoBGP on the underlay).
    #[serde(default)]
    pub extra_peers: Vec<String>,
    /// The pool's `ipipMode`, Calico's words (default: from the lab's mode,
    /// `Always` for ipip, `Never` for host-gw).
    #[serde(default)]
    pub ipip_mode: Option<String>,
    /// The agents' hold time (default 9 s: failures show within a test).
    #[serde(default)]
    pub hold_time: Option<u16>,
    /// The agents' selection deferral after a start, seconds.
    #[serde(default)]
    pub deferral_time: Option<u64>,
}

fn default_rx_mode() -> String {
    "adaptive".to_string()
}

fn default_network() -> String {
    crate::cluster::NETWORK.to_string()
}

fn one_worker() -> u8 {
    1
}

/// One node of a lab.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeState {
    /// Node index (1-based).
    pub index: u8,
    /// Its namespace.
    pub ns: String,
    /// Its underlay address.
    pub ip: String,
    /// Its uplink MAC.
    pub uplink_mac: String,
    /// Its pod subnet.
    pub subnet: String,
    /// Its pods: (namespace, address).
    pub pods: Vec<(String, String)>,
    /// sluiced's PID, when running.
    pub sluiced_pid: Option<u32>,
    /// That process's start time (clock ticks since boot, `/proc/PID/stat`
    /// field 22): `down` signals the PID only while it is still this process.
    #[serde(default)]
    pub sluiced_start: Option<u64>,
    /// sluiced's API socket.
    pub api_socket: PathBuf,
    /// Configured as kernel flannel instead of sluiced.
    #[serde(default)]
    pub kernel: bool,
    /// The MAC other nodes' VXLAN frames must carry (the uplink's for
    /// sluiced, `flannel.1`'s for a kernel node).
    #[serde(default)]
    pub vtep_mac: String,
    /// sluice-agent's PID, when running.
    #[serde(default)]
    pub agent_pid: Option<u32>,
    /// That process's start time.
    #[serde(default)]
    pub agent_start: Option<u64>,
    /// Where the agent serves `/metrics`, `/healthz` and `/readyz`.
    #[serde(default)]
    pub agent_healthz: Option<String>,
    /// The underlay gateway, when the lab has two underlay subnets.
    #[serde(default)]
    pub underlay_gateway: Option<String>,
}

/// Runs a command; its stderr becomes the error.
pub fn run(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| LabError::Command {
            cmd: args.join(" "),
            stderr: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(LabError::Command {
            cmd: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command inside a namespace.
pub fn ns_run(ns: &str, args: &[&str]) -> Result<String> {
    let mut v = vec!["ip", "netns", "exec", ns];
    v.extend_from_slice(args);
    run(&v)
}

/// Where lab state files live.
pub fn state_dir() -> PathBuf {
    PathBuf::from(std::env::var("SLUICE_LAB_STATE").unwrap_or_else(|_| "/run/sluice-lab".into()))
}

fn state_path(name: &str) -> PathBuf {
    state_dir().join(format!("{name}.json"))
}

/// Writes the lab's state file.
pub fn save(state: &LabState) -> Result<()> {
    std::fs::create_dir_all(state_dir())
        .map_err(|e| LabError::Other(format!("{}: {e}", state_dir().display())))?;
    let tmp = state_path(&state.name).with_extension("json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(state).expect("state serializes"),
    )
    .map_err(|e| LabError::Other(e.to_string()))?;
    std::fs::rename(&tmp, state_path(&state.name)).map_err(|e| LabError::Other(e.to_string()))
}

/// The lab's state, if it exists.
pub fn load(name: &str) -> Option<LabState> {
    serde_json::from_slice(&std::fs::read(state_path(name)).ok()?).ok()
}

/// Finds the `sluiced` binary: `$SLUICED`, next to this executable, or `PATH`.
pub fn sluiced_path() -> PathBuf {
    crate::cluster::binary("sluiced", "SLUICED")
}

fn mac_of(ns: &str, dev: &str) -> Result<String> {
    Ok(
        ns_run(ns, &["cat", &format!("/sys/class/net/{dev}/address")])?
            .trim()
            .to_string(),
    )
}

/// Options of `up`.
#[derive(Debug, Clone)]
pub struct LabSpec {
    /// Lab name (namespace prefix, at most 8 characters).
    pub name: String,
    /// Nodes (2 to 8).
    pub nodes: u8,
    /// Forwarding mode.
    pub mode: Mode,
    /// Start sluiced on each node (false: the namespaces only).
    pub sluiced: bool,
    /// Nodes (1-based) set up as flanneld sets up a kernel node instead of
    /// running sluiced: pods on a `cni0` bridge, `flannel.1` (VXLAN) or
    /// host-gw routes. For interop tests and kernel baselines.
    pub kernel_nodes: Vec<u8>,
    /// sluiced's rx mode (`adaptive` by default).
    pub rx_mode: Option<String>,
    /// Workers per sluiced (1 to 8), pinned to cores 0..workers; the uplink
    /// and pod veths get as many queues, one per worker.
    pub workers: u8,
    /// The store the nodes' agents share.
    pub store: crate::cluster::StoreKind,
    /// flannel's `DirectRouting` in the network config (vxlan, ipip).
    pub direct_routing: bool,
    /// The pod network (`Network`); default [`crate::cluster::NETWORK`]. The
    /// nodes' subnets are `10.77.K.0/24` either way, so it must hold them.
    pub network: Option<String>,
    /// Confine forwarding to one core (benchmarks): each sluiced's single
    /// worker is pinned to it, and a kernel node's receive processing (its
    /// pods' host ends, `eth0`) is steered to it with RPS, so traffic
    /// generators pinned elsewhere do not share it. `None`: one unpinned
    /// worker, the kernel's defaults.
    pub forwarding_core: Option<usize>,
    /// Routes over BGP instead of from the store's leases.
    pub bgp: Option<BgpLab>,
}

impl LabSpec {
    /// `nodes` sluiced nodes in `mode`: one worker each, the embedded store,
    /// no kernel nodes, no DirectRouting, the default network and rx mode.
    pub fn new(name: &str, nodes: u8, mode: Mode) -> LabSpec {
        LabSpec {
            name: name.into(),
            nodes,
            mode,
            sluiced: true,
            kernel_nodes: vec![],
            rx_mode: None,
            workers: 1,
            store: Default::default(),
            direct_routing: false,
            network: None,
            forwarding_core: None,
            bgp: None,
        }
    }
}

/// Builds the lab; on any failure removes what it made.
pub fn up(spec: &LabSpec, progress: &mut dyn FnMut(&str)) -> Result<LabState> {
    if spec.name.is_empty()
        || spec.name.len() > 8
        || !spec.name.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return Err(LabError::Other(format!(
            "lab name `{}`: 1 to 8 letters or digits",
            spec.name
        )));
    }
    if !(2..=8).contains(&spec.nodes) {
        return Err(LabError::Other(format!("{} nodes: 2 to 8", spec.nodes)));
    }
    if !(1..=8).contains(&spec.workers) {
        return Err(LabError::Other(format!("{} workers: 1 to 8", spec.workers)));
    }
    if let Some(old) = load(&spec.name) {
        progress(&format!("removing the earlier lab `{}`", old.name));
        down(&spec.name)?;
    }
    let mut state = LabState {
        name: spec.name.clone(),
        mode: spec.mode,
        nodes: Vec::new(),
        namespaces: Vec::new(),
        workers: spec.workers,
        store: None,
        network: spec
            .network
            .clone()
            .unwrap_or_else(|| crate::cluster::NETWORK.to_string()),
        rx_mode: spec.rx_mode.clone().unwrap_or_else(default_rx_mode),
        forwarding_core: spec.forwarding_core,
        bgp: spec.bgp.clone(),
    };
    match build(spec, &mut state, progress) {
        Ok(()) => Ok(state),
        Err(e) => {
            let _ = save(&state);
            let _ = down(&spec.name);
            Err(e)
        }
    }
}

fn add_ns(state: &mut LabState, ns: &str) -> Result<()> {
    run(&["ip", "netns", "add", ns])?;
    state.namespaces.push(ns.to_string());
    save(state)?;
    ns_run(ns, &["ip", "link", "set", "lo", "up"])?;
    Ok(())
}

/// A veth pair `name` in namespace `ns` with its peer `eth0` in `peer_ns`,
/// `queues` queues each way on both ends.
fn add_veth(ns: &str, name: &str, peer_ns: &str, queues: u8) -> Result<()> {
    let q = queues.to_string();
    run(&[
        "ip",
        "-n",
        ns,
        "link",
        "add",
        "name",
        name,
        "numtxqueues",
        &q,
        "numrxqueues",
        &q,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "numtxqueues",
        &q,
        "numrxqueues",
        &q,
        "netns",
        peer_ns,
    ])?;
    Ok(())
}

fn build(spec: &LabSpec, state: &mut LabState, progress: &mut dyn FnMut(&str)) -> Result<()> {
    let name = &spec.name;
    let ul = format!("{name}-ul");
    progress("underlay: a bridge in its own namespace");
    add_ns(state, &ul)?;
    run(&["ip", "-n", &ul, "link", "add", "br0", "type", "bridge"])?;
    run(&["ip", "-n", &ul, "link", "set", "br0", "up"])?;
    // The underlay is a wire and a switch: its bridge does not hand frames
    // to iptables (br_netfilter, when loaded, does by default, per namespace).
    ns_run(
        &ul,
        &[
            "sh",
            "-c",
            "[ ! -d /proc/sys/net/bridge ] || sysctl -qw net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0 net.bridge.bridge-nf-call-arptables=0",
        ],
    )?;
    // With DirectRouting and three nodes or more, the last node sits on a
    // second underlay subnet, 192.168.78.0/24 on br1, routed by the
    // underlay namespace (.254 on each side): host-gw within a subnet, the
    // tunnel across.
    let two_underlays = spec.direct_routing && spec.nodes >= 3;
    if two_underlays {
        run(&["ip", "-n", &ul, "link", "add", "br1", "type", "bridge"])?;
        run(&["ip", "-n", &ul, "link", "set", "br1", "up"])?;
        run(&[
            "ip",
            "-n",
            &ul,
            "addr",
            "add",
            "192.168.77.254/24",
            "dev",
            "br0",
        ])?;
        run(&[
            "ip",
            "-n",
            &ul,
            "addr",
            "add",
            "192.168.78.254/24",
            "dev",
            "br1",
        ])?;
        ns_run(&ul, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    }
    for k in 1..=spec.nodes {
        let node = format!("{name}-n{k}");
        progress(&format!("node {k}: namespace, uplink, pods"));
        add_ns(state, &node)?;
        let port = format!("n{k}");
        add_veth(&ul, &port, &node, spec.workers)?;
        let second = two_underlays && k == spec.nodes;
        let (bridge, net, other) = if second {
            ("br1", 78, 77)
        } else {
            ("br0", 77, 78)
        };
        run(&[
            "ip", "-n", &ul, "link", "set", &port, "master", bridge, "up",
        ])?;
        let ip = format!("192.168.{net}.{k}");
        run(&[
            "ip",
            "-n",
            &node,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            "eth0",
        ])?;
        run(&["ip", "-n", &node, "link", "set", "eth0", "up"])?;
        let underlay_gateway = two_underlays.then(|| format!("192.168.{net}.254"));
        if let Some(gw) = &underlay_gateway {
            run(&[
                "ip",
                "-n",
                &node,
                "route",
                "add",
                &format!("192.168.{other}.0/24"),
                "via",
                gw,
            ])?;
        }
        let uplink_mac = mac_of(&node, "eth0")?;
        let subnet = format!("10.77.{k}.0/24");
        let kernel = spec.kernel_nodes.contains(&k);
        let mut pods = Vec::new();
        for j in 0..2u8 {
            let pod = format!("{node}-p{j}");
            add_ns(state, &pod)?;
            if !kernel {
                // Attached by the sluice CNI plugin once the node's agent
                // has written its subnet file (see `crate::pods`).
                pods.push((pod, String::new()));
                continue;
            }
            let host_end = format!("pod{j}");
            let pip = format!("10.77.{k}.{}", j + 2);
            let pmac = format!("02:77:00:00:{k:02x}:{:02x}", j + 2);
            add_veth(&node, &host_end, &pod, spec.workers)?;
            run(&[
                "ip",
                "-n",
                &pod,
                "link",
                "set",
                "eth0",
                "address",
                &pmac,
                "mtu",
                &spec.mode.pod_mtu().to_string(),
            ])?;
            run(&[
                "ip",
                "-n",
                &pod,
                "addr",
                "add",
                &format!("{pip}/24"),
                "dev",
                "eth0",
            ])?;
            run(&["ip", "-n", &pod, "link", "set", "eth0", "up"])?;
            run(&[
                "ip",
                "-n",
                &pod,
                "route",
                "add",
                "default",
                "via",
                &format!("10.77.{k}.1"),
            ])?;
            // A flannel pod keeps the veth's offloads (checksum, TSO, GSO)
            // as the kernel and the flannel CNI plugin leave them.
            run(&["ip", "-n", &node, "link", "set", &host_end, "up"])?;
            pods.push((pod, pip));
        }
        let api_socket = state_dir().join(format!("{node}.sock"));
        let vtep_mac = uplink_mac.clone();
        state.nodes.push(NodeState {
            index: k,
            ns: node,
            ip,
            uplink_mac,
            subnet,
            pods,
            sluiced_pid: None,
            sluiced_start: None,
            api_socket,
            kernel,
            vtep_mac,
            agent_pid: None,
            agent_start: None,
            agent_healthz: None,
            underlay_gateway,
        });
        save(state)?;
    }
    for i in 0..state.nodes.len() {
        if state.nodes[i].kernel {
            progress(&format!(
                "node {}: kernel networking as flanneld sets it up ({})",
                i + 1,
                spec.mode
            ));
            kernel_node_local(state, i)?;
        }
    }
    progress(&format!(
        "store: {:?}, network config for {}",
        spec.store, spec.mode
    ));
    crate::cluster::start_store(state, spec.store, spec.direct_routing)?;
    for i in 0..state.nodes.len() {
        if state.nodes[i].kernel {
            crate::cluster::write_kernel_lease(state, i)?;
        }
    }
    save(state)?;
    if spec.sluiced && state.nodes.iter().any(|n| !n.kernel) {
        for i in 0..state.nodes.len() {
            if !state.nodes[i].kernel {
                progress(&format!("node {}: starting sluiced and its agent", i + 1));
                // A new lab's sluiced starts empty: never with the tables an
                // earlier lab of the same name left (`down` removes them too).
                let _ = std::fs::remove_file(saved_tables_path(state, i));
                start_sluiced(state, i)?;
                crate::cluster::start_agent(state, i)?;
                save(state)?;
            }
        }
        progress("waiting for the agents to lease and program every node's routes");
        if let Some(bgp) = &state.bgp {
            // Kernel nodes' BIRD starts after `up`: wait for the sluice
            // nodes' mesh (with reflectors, for nothing: they run BIRD).
            let mesh = bgp.reflectors.is_empty();
            crate::cluster::wait_for_routes_to(
                state,
                |m| mesh && !m.kernel,
                Duration::from_secs(30),
            )?;
        } else {
            crate::cluster::wait_for_routes(state, Duration::from_secs(30))?;
        }
        progress("attaching the pods through the sluice CNI plugin");
        for i in 0..state.nodes.len() {
            if !state.nodes[i].kernel {
                crate::pods::attach_all(state, i)?;
                save(state)?;
            }
        }
    }
    for i in 0..state.nodes.len() {
        if state.nodes[i].kernel && state.bgp.is_none() {
            crate::cluster::kernel_routes_from_store(state, i)?;
        }
    }
    // With reflectors the nodes have no routes to each other until the
    // reflector's BIRD runs; sluiced resolves them once they come.
    let reflected = state.bgp.as_ref().is_some_and(|b| !b.reflectors.is_empty());
    if spec.sluiced && state.nodes.iter().any(|n| !n.kernel) && !reflected {
        progress("waiting for every node to learn the others' MACs from its kernel");
        wait_for_neighbours(state)?;
    }
    save(state)
}

/// A kernel node's own side, as flanneld and the flannel CNI plugin leave
/// it: pods on the `cni0` bridge holding the subnet's first address,
/// forwarding on, and for VXLAN `flannel.1` (VNI 1, port 8472) with the
/// subnet's `.0` as a `/32` and MTU 1450.
fn kernel_node_local(state: &mut LabState, i: usize) -> Result<()> {
    let n = state.nodes[i].clone();
    let ns = n.ns.as_str();
    let gw = format!("10.77.{}.1/24", n.index);
    run(&["ip", "-n", ns, "link", "add", "cni0", "type", "bridge"])?;
    run(&["ip", "-n", ns, "addr", "add", &gw, "dev", "cni0"])?;
    run(&["ip", "-n", ns, "link", "set", "cni0", "up"])?;
    ns_run(ns, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    // A NIC completes the checksums the kernel leaves partial; a veth passes
    // them on partial, and a sluice peer's XDP program cannot tell. In a lab
    // with sluice nodes the uplink does it in software, as a NIC would in
    // hardware; an all-kernel lab keeps the veth's offloads.
    if state.nodes.iter().any(|m| !m.kernel) {
        ns_run(ns, &["ethtool", "-K", "eth0", "tx", "off"])?;
    }
    if let Some(core) = state.forwarding_core {
        let mut devs: Vec<String> = (0..n.pods.len()).map(|j| format!("pod{j}")).collect();
        devs.push("eth0".into());
        for dev in &devs {
            steer_receive(ns, dev, Some(core))?;
        }
    }
    for j in 0..n.pods.len() {
        run(&[
            "ip",
            "-n",
            ns,
            "link",
            "set",
            &format!("pod{j}"),
            "master",
            "cni0",
        ])?;
    }
    if state.mode == Mode::Vxlan {
        run(&[
            "ip",
            "-n",
            ns,
            "link",
            "add",
            "flannel.1",
            "type",
            "vxlan",
            "id",
            "1",
            "local",
            &n.ip,
            "dev",
            "eth0",
            "dstport",
            "8472",
            "nolearning",
        ])?;
        run(&[
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            &format!("10.77.{}.0/32", n.index),
            "dev",
            "flannel.1",
        ])?;
        run(&[
            "ip",
            "-n",
            ns,
            "link",
            "set",
            "flannel.1",
            "mtu",
            "1450",
            "up",
        ])?;
        // Frames for AF_XDP peers must carry complete checksums; an
        // all-kernel lab keeps the kernel's offloads.
        if state.nodes.iter().any(|m| !m.kernel) {
            ns_run(ns, &["ethtool", "-K", "flannel.1", "tx", "off"])?;
        }
        state.nodes[i].vtep_mac = mac_of(ns, "flannel.1")?;
    } else if state.mode == Mode::Ipip && state.bgp.is_some() {
        // Calico's IPIP: the fallback `tunl0` up (routes via it `onlink`
        // are programmed from what BIRD learns), where the kernel has IPIP
        // (CONFIG_NET_IPIP); without it the node is a control-plane peer
        // only (a route reflector), its pods unreachable over IPIP.
        let _ = run(&["modprobe", "ipip"]);
        if run(&["ip", "-n", ns, "link", "show", "tunl0"]).is_ok() {
            run(&["ip", "-n", ns, "link", "set", "tunl0", "mtu", "1480", "up"])?;
        }
    } else if state.mode == Mode::Ipip {
        return Err(LabError::Other("kernel nodes are set up for vxlan and host-gw (flannel's backends tested here), or for ipip in BGP labs (Calico's), not ipip otherwise".into()));
    }
    Ok(())
}

/// A namespace `ns` on the lab's underlay bridge (port `port` there), with
/// `addr`/24 on its `eth0`: a host beside the nodes (a BGP peer, a route
/// reflector). Recorded in the lab, so `down` removes it.
pub fn add_underlay_host(state: &mut LabState, ns: &str, port: &str, addr: &str) -> Result<()> {
    let ul = format!("{}-ul", state.name);
    add_ns(state, ns)?;
    run(&[
        "ip", "-n", &ul, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns,
    ])?;
    run(&["ip", "-n", &ul, "link", "set", port, "master", "br0", "up"])?;
    run(&[
        "ip",
        "-n",
        ns,
        "addr",
        "add",
        &format!("{addr}/24"),
        "dev",
        "eth0",
    ])?;
    run(&["ip", "-n", ns, "link", "set", "eth0", "up"])?;
    Ok(())
}

/// Steers `dev`'s receive processing in `ns` to `core` with RPS (every RX
/// queue), as an operator confines a kernel node's forwarding to a core;
/// `None` turns RPS off again (the kernel's default).
pub fn steer_receive(ns: &str, dev: &str, core: Option<usize>) -> Result<()> {
    let mask = format!("{:x}", core.map_or(0, |c| 1u64 << c));
    let script =
        format!("for q in /sys/class/net/{dev}/queues/rx-*; do echo {mask} > $q/rps_cpus; done");
    ns_run(ns, &["sh", "-c", &script]).map(|_| ())
}

/// Waits until every node's sluiced knows every other node's uplink MAC.
fn wait_for_neighbours(state: &LabState) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    for n in state.nodes.iter().filter(|n| !n.kernel) {
        loop {
            let known: Vec<String> = sluice_api::Client::new(&n.api_socket)
                .neighbours()
                .map_err(|e| LabError::Other(e.to_string()))?
                .neighbours
                .iter()
                .map(|e| e.ip.to_string())
                .collect();
            let same_subnet = |a: &str, b: &str| {
                a.rsplit_once('.').map(|x| x.0) == b.rsplit_once('.').map(|x| x.0)
            };
            // A BGP lab's kernel nodes are reached once their BIRD runs.
            let others = state
                .nodes
                .iter()
                .filter(|m| m.index != n.index && !(m.kernel && state.bgp.is_some()));
            if others.clone().all(|m| {
                if same_subnet(&m.ip, &n.ip) {
                    known.contains(&m.ip)
                } else {
                    n.underlay_gateway
                        .as_ref()
                        .is_some_and(|g| known.contains(g))
                }
            }) {
                break;
            }
            if Instant::now() > deadline {
                return Err(LabError::Other(format!(
                    "node {} did not learn the other nodes' MACs (knows {known:?})",
                    n.index
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

fn node_config(state: &LabState, n: &NodeState) -> String {
    let rx_mode = &state.rx_mode;
    let mut s = format!(
        "[daemon]\napi_socket = \"{}\"\nmetrics_address = \"127.0.0.1:9472\"\nrx_mode = \"{rx_mode}\"\npod_records = \"{}\"\n{}\n[node]\npod_network = \"{}\"\npod_subnet = \"{}\"\nrouter_mac = \"02:77:00:00:{:02x}:01\"\n\n[tunnel]\nvni = 1\nvxlan_port = 8472\n\n",
        n.api_socket.display(),
        crate::pods::records_dir(n).display(),
        if state.workers > 1 {
            let cores: Vec<String> = (0..state.workers).map(|c| c.to_string()).collect();
            format!("workers = [{}]\n", cores.join(", "))
        } else if let Some(core) = state.forwarding_core {
            format!("workers = [{core}]\n")
        } else {
            String::new()
        },
        state.network,
        n.subnet,
        n.index
    );
    s += &format!(
        "[[port]]\nname = \"eth0\"\nkind = \"uplink\"\nmac = \"{}\"\naddress = \"{}/24\"\n{}\n",
        n.uplink_mac,
        n.ip,
        n.underlay_gateway
            .as_ref()
            .map(|g| format!("gateway = \"{g}\"\n"))
            .unwrap_or_default()
    );
    s += &format!(
        "[[port]]\nname = \"sluice0\"\nkind = \"host\"\nmac = \"02:77:00:ee:{:02x}:01\"\n\n",
        n.index
    );
    // What has no route of its own (the node's address, the outside)
    // goes to the node's kernel, as on a real node (deploy/kubernetes).
    s += "[[route]]\nprefix = \"0.0.0.0/0\"\nvia = \"host\"\n\n";
    s
}

/// Stops node `i`'s sluiced (SIGKILL when `kill`, else SIGTERM) and starts
/// it again from its configuration file: no routes but its own until its
/// agent programs them again.
pub fn restart_sluiced(state: &mut LabState, i: usize, kill: bool) -> Result<()> {
    stop_sluiced(state, i, kill);
    start_sluiced_again(state, i)
}

/// Upgrades node `i`'s sluiced as `sluicectl upgrade` does: the running
/// one starts `binary` (its own by default) with `--take-over` and exits
/// once the new one has taken its ports over. Waits until the API answers
/// from the new process and the old one is gone, and records the new pid.
/// Returns (old pid, new pid, time from the request to the new pid
/// answering).
pub fn upgrade_sluiced(
    state: &mut LabState,
    i: usize,
    binary: Option<&std::path::Path>,
) -> Result<(u32, u32, Duration)> {
    let t0 = Instant::now();
    let client = sluice_api::Client::new(&state.nodes[i].api_socket);
    let started = client
        .upgrade(binary.map(|b| b.display().to_string()))
        .map_err(|e| LabError::Other(format!("upgrade on {}: {e}", state.nodes[i].ns)))?;
    let deadline = t0 + Duration::from_secs(30);
    let took = loop {
        let serving = client
            .node()
            .ok()
            .and_then(|n| u32::from_str_radix(n.epoch.split('-').next()?, 16).ok());
        if serving == Some(started.pid) {
            break t0.elapsed();
        }
        if Instant::now() > deadline {
            return Err(LabError::Other(format!(
                "sluiced {} on {} did not take over within 30 s (still {serving:?})",
                started.pid, state.nodes[i].ns
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    while pid_alive(started.from_pid) && Instant::now() < deadline {
        // The old one is this process's child: reap it.
        for c in CHILDREN
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter_mut()
        {
            let _ = c.try_wait();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    state.nodes[i].sluiced_pid = Some(started.pid);
    state.nodes[i].sluiced_start = process_start_time(started.pid);
    save(state)?;
    Ok((started.from_pid, started.pid, took))
}

/// Stops node `i`'s sluiced by PID (SIGKILL if `kill`, else SIGTERM).
pub fn stop_sluiced(state: &mut LabState, i: usize, kill: bool) {
    if let Some(pid) = state.nodes[i].sluiced_pid.take() {
        end_daemon(pid, state.nodes[i].sluiced_start, kill);
    }
    let _ = std::fs::remove_file(&state.nodes[i].api_socket);
}

/// Starts node `i`'s sluiced after [`stop_sluiced`].
pub fn start_sluiced_again(state: &mut LabState, i: usize) -> Result<()> {
    start_sluiced(state, i)?;
    save(state)
}

/// Where node `i`'s sluiced keeps its saved tables (beside its API
/// socket, the default of `daemon.state_file`).
pub fn saved_tables_path(state: &LabState, i: usize) -> PathBuf {
    state.nodes[i].api_socket.with_extension("tables.json")
}

fn start_sluiced(state: &mut LabState, i: usize) -> Result<()> {
    let cfg_path = state_dir().join(format!("{}.toml", state.nodes[i].ns));
    std::fs::write(&cfg_path, node_config(state, &state.nodes[i]))
        .map_err(|e| LabError::Other(e.to_string()))?;
    let log = std::fs::File::create(state_dir().join(format!("{}.log", state.nodes[i].ns)))
        .map_err(|e| LabError::Other(e.to_string()))?;
    let child = Command::new("ip")
        .args(["netns", "exec", &state.nodes[i].ns])
        .arg(sluiced_path())
        .arg("--config")
        .arg(&cfg_path)
        .stdout(
            log.try_clone()
                .map_err(|e| LabError::Other(e.to_string()))?,
        )
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| {
            LabError::Other(format!(
                "cannot start sluiced ({}): {e}",
                sluiced_path().display()
            ))
        })?;
    state.nodes[i].sluiced_pid = Some(child.id());
    state.nodes[i].sluiced_start = process_start_time(child.id());
    // The lab may outlive this process (`down` then stops it by PID); while
    // it does not, `down` reaps the child here so no zombie is left.
    CHILDREN
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !state.nodes[i].api_socket.exists() {
        if Instant::now() > deadline {
            let log = state_dir().join(format!("{}.log", state.nodes[i].ns));
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(8).collect();
            return Err(LabError::Other(format!(
                "sluiced on {} did not come up; the end of {}:\n{}",
                state.nodes[i].ns,
                log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Daemons this process started, reaped by `down`.
static CHILDREN: std::sync::Mutex<Vec<std::process::Child>> = std::sync::Mutex::new(Vec::new());

/// Keeps a daemon this process started, so `down` can reap it.
pub fn adopt(child: std::process::Child) {
    CHILDREN
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(child);
}

fn reap(pid: u32) {
    let mut children = CHILDREN.lock().unwrap_or_else(|p| p.into_inner());
    children.retain_mut(|c| !(c.id() == pid && c.try_wait().ok().flatten().is_some()));
}

/// True if `pid` is a live process (not a zombie).
pub fn pid_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // A killed process's leader turns zombie before its other threads have
    // exited (and closed its sockets): alive while any thread remains.
    !stat.contains(") Z ")
        || std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| d.count() > 1)
            .unwrap_or(false)
}

/// When process `pid` started (clock ticks since boot), from
/// `/proc/PID/stat` field 22; `None` if there is no such process.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    crate::measure::stat_fields(&stat)?.nth(19)?.parse().ok()
}

/// Stops the daemon `pid` with SIGTERM (SIGKILL after 5 s), but only while
/// it is still the process that started at `start`: a PID from an old state
/// file may belong to something else by now. Returns whether it signalled.
pub fn stop_daemon(pid: u32, start: Option<u64>) -> bool {
    let Some(start) = start else {
        return false;
    };
    if process_start_time(pid) != Some(start) || !pid_alive(pid) {
        return false;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while pid_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if pid_alive(pid) && process_start_time(pid) == Some(start) {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        std::thread::sleep(Duration::from_millis(100));
    }
    reap(pid);
    true
}

/// Stops the daemon `pid` while it is the process that started at `start`:
/// with SIGKILL at once (waiting for it to go) when `kill`, else as
/// [`stop_daemon`] does.
pub fn end_daemon(pid: u32, start: Option<u64>, kill: bool) {
    if !kill {
        stop_daemon(pid, start);
        return;
    }
    if start.is_none() || process_start_time(pid) != start {
        return;
    }
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while pid_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    reap(pid);
}

/// Stops the lab's daemons by PID and deletes its namespaces. Works from a
/// partial state file; a missing lab is not an error.
pub fn down(name: &str) -> Result<()> {
    let Some(state) = load(name) else {
        return Ok(());
    };
    for n in &state.nodes {
        if let Some(pid) = n.agent_pid {
            stop_daemon(pid, n.agent_start);
        }
    }
    for n in &state.nodes {
        if let Some(pid) = n.sluiced_pid {
            stop_daemon(pid, n.sluiced_start);
        }
        let _ = std::fs::remove_file(&n.api_socket);
    }
    if let Some(st) = &state.store {
        if let Some(pid) = st.etcd_pid {
            stop_daemon(pid, st.etcd_start);
        }
        crate::cluster::remove_store(st);
        let _ = std::fs::remove_file(state_dir().join(format!("{name}-etcd.log")));
    }
    let mut failed = Vec::new();
    for ns in state.namespaces.iter().rev() {
        let exists = run(&["ip", "netns", "list"])
            .map(|l| l.lines().any(|x| x.split_whitespace().next() == Some(ns)))
            .unwrap_or(false);
        if exists && run(&["ip", "netns", "del", ns]).is_err() {
            failed.push(ns.clone());
        }
    }
    if !failed.is_empty() {
        return Err(LabError::Other(format!(
            "could not delete namespaces {failed:?}"
        )));
    }
    for n in &state.nodes {
        for ext in [".toml", ".log", "-agent.log", "-subnet.env", ".tables.json"] {
            let _ = std::fs::remove_file(state_dir().join(format!("{}{ext}", n.ns)));
        }
        let _ = std::fs::remove_dir_all(crate::pods::data_dir(n));
    }
    let _ = std::fs::remove_file(state_path(name));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_reads_past_a_command_name_with_spaces_and_parentheses() {
        let me = std::process::id();
        let t = process_start_time(me).expect("our own start time");
        assert_eq!(process_start_time(me), Some(t), "stable");
        assert_eq!(process_start_time(u32::MAX), None);
    }

    #[test]
    fn down_signals_a_pid_only_while_it_is_the_process_it_started() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        let start = process_start_time(pid).unwrap();
        // A recycled PID: same number, another start time. Left alone.
        assert!(!stop_daemon(pid, Some(start + 1)));
        assert!(
            !stop_daemon(pid, None),
            "no start time recorded: left alone"
        );
        assert!(child.try_wait().unwrap().is_none(), "still running");
        // The process it started: stopped.
        assert!(stop_daemon(pid, Some(start)));
        let status = child.wait().unwrap();
        assert!(!status.success(), "ended by a signal: {status:?}");
    }
}
