//! The lab's control plane: a store, the network config, and one
//! `sluice-agent` per sluiced node.
//!
//! - The store is the agent's embedded store in `<state>/<lab>-store`
//!   (default) or a real etcd (`--store etcd`): Debian's `etcd` started on
//!   loopback with its data in `<state>/<lab>-etcd`, stopped by PID.
//! - The network config is flannel's JSON for the lab's mode, written once
//!   (`{"Network":"10.77.0.0/16","Backend":{"Type":"vxlan"}}`).
//! - Each sluiced node's agent runs in the host's namespace: it needs only
//!   the store (a directory, or etcd on loopback) and its sluiced's API
//!   socket, and takes its `PublicIP` and VTEP MAC from that sluiced. Before
//!   it starts, the lab writes the node's subnet file naming `10.77.K.0/24`,
//!   the subnet the lab's pods were given: the agent tries the previous
//!   subnet file's subnet first, as flanneld does, so subnets stay
//!   predictable without being written into sluiced by hand.
//! - Kernel-flannel nodes have no agent: the lab does what flanneld would,
//!   writing their lease (their `flannel.1` MAC as `VtepMAC`) and, once
//!   every lease is in, programming their kernel routes from the store.

use crate::lab::{self, LabError, LabState, Mode};
use serde::{Deserialize, Serialize};
use sluice_control::lease::{self, LeaseAttrs};
use sluice_control::network::BackendType;
use sluice_control::store::etcd::{EtcdConfig, EtcdStore};
use sluice_control::store::local::LocalStore;
use sluice_control::store::{AnyStore, Store};
use sluice_control::subnet_file::SubnetFile;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, LabError>;

/// The lab's network prefix and the store prefix.
pub const NETWORK: &str = "10.77.0.0/16";
/// flannel's default prefix, used by the lab as by a cluster.
pub const PREFIX: &str = "/coreos.com/network";

/// Which store the lab's agents share.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoreKind {
    /// The agent's embedded store in a directory.
    #[default]
    Embedded,
    /// A real etcd on loopback.
    Etcd,
}

impl std::str::FromStr for StoreKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "embedded" | "local" => Ok(StoreKind::Embedded),
            "etcd" => Ok(StoreKind::Etcd),
            other => Err(format!("store `{other}`: expected embedded or etcd")),
        }
    }
}

/// The lab's store, as recorded in its state file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StoreState {
    /// Which store.
    pub kind: StoreKind,
    /// The embedded store's directory, or etcd's data directory.
    pub dir: PathBuf,
    /// etcd's client URL.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// etcd's peer URL (kept so a restart reuses it).
    #[serde(default)]
    pub peer: Option<String>,
    /// etcd's PID and start time.
    #[serde(default)]
    pub etcd_pid: Option<u32>,
    /// See [`lab::process_start_time`].
    #[serde(default)]
    pub etcd_start: Option<u64>,
}

/// Finds a sibling binary: `$ENV`, next to this executable, or `PATH`.
pub fn binary(name: &str, env: &str) -> PathBuf {
    if let Ok(p) = std::env::var(env) {
        return p.into();
    }
    if let Ok(me) = std::env::current_exe() {
        for dir in [me.parent(), me.parent().and_then(Path::parent)]
            .into_iter()
            .flatten()
        {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    name.into()
}

/// `sluice-agent`: `$SLUICE_AGENT`, next to this executable, or `PATH`.
pub fn agent_path() -> PathBuf {
    binary("sluice-agent", "SLUICE_AGENT")
}

fn other(e: impl std::fmt::Display) -> LabError {
    LabError::Other(e.to_string())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(other)
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(other)?;
    Ok(l.local_addr().map_err(other)?.port())
}

/// Opens the lab's store and runs `f` on it to completion.
pub fn with_store<T, F, Fut>(st: &StoreState, f: F) -> Result<T>
where
    F: FnOnce(AnyStore) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    runtime()?.block_on(async {
        let store = match st.kind {
            StoreKind::Embedded => AnyStore::Local(LocalStore::open(&st.dir).map_err(other)?),
            StoreKind::Etcd => {
                let cfg = EtcdConfig {
                    endpoints: vec![st
                        .endpoint
                        .clone()
                        .ok_or_else(|| other("etcd has no endpoint"))?],
                    ..EtcdConfig::default()
                };
                AnyStore::Etcd(Box::new(EtcdStore::connect(&cfg).await.map_err(other)?))
            }
        };
        f(store).await
    })
}

/// The lab's store state, or an error saying it has none.
fn store_of(state: &LabState) -> Result<&StoreState> {
    state
        .store
        .as_ref()
        .ok_or_else(|| other("the lab has no store"))
}

/// Starts the lab's store (etcd is started; the embedded store is a
/// directory) and writes the network config.
pub fn start_store(state: &mut LabState, kind: StoreKind, direct_routing: bool) -> Result<()> {
    let base = lab::state_dir();
    let mut st = StoreState {
        kind,
        ..StoreState::default()
    };
    match kind {
        StoreKind::Embedded => {
            st.dir = base.join(format!("{}-store", state.name));
            let _ = std::fs::remove_dir_all(&st.dir);
        }
        StoreKind::Etcd => {
            st.dir = base.join(format!("{}-etcd", state.name));
            let _ = std::fs::remove_dir_all(&st.dir);
            st.endpoint = Some(format!("http://127.0.0.1:{}", free_port()?));
            st.peer = Some(format!("http://127.0.0.1:{}", free_port()?));
        }
    }
    state.store = Some(st);
    lab::save(state)?;
    if kind == StoreKind::Etcd {
        start_etcd(state)?;
    }
    let backend = match state.mode {
        Mode::Vxlan => "vxlan",
        Mode::Ipip => "ipip",
        Mode::HostGw => "host-gw",
    };
    let json = format!(
        r#"{{"Network":"{}","Backend":{{"Type":"{backend}"{}}}}}"#,
        state.network,
        if direct_routing {
            r#","DirectRouting":true"#
        } else {
            ""
        }
    );
    with_store(store_of(state)?, |s| async move {
        s.put(&lease::config_key(PREFIX), json.as_bytes(), None)
            .await
            .map_err(other)
    })
}

/// Starts (or restarts, on the same data) the lab's etcd and waits for it.
pub fn start_etcd(state: &mut LabState) -> Result<()> {
    let st = state
        .store
        .clone()
        .ok_or_else(|| other("the lab has no store"))?;
    let (client, peer) = (
        st.endpoint
            .clone()
            .ok_or_else(|| other("no etcd endpoint"))?,
        st.peer.clone().ok_or_else(|| other("no etcd peer URL"))?,
    );
    let etcd = binary("etcd", "ETCD");
    let log = std::fs::File::create(lab::state_dir().join(format!("{}-etcd.log", state.name)))
        .map_err(other)?;
    let name = format!("{}-etcd", state.name);
    let child = Command::new(&etcd)
        .args(["--name", &name, "--data-dir"])
        .arg(&st.dir)
        .args([
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args(["--initial-cluster", &format!("{name}={peer}")])
        .stdout(log.try_clone().map_err(other)?)
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| {
            other(format!(
                "cannot start etcd ({}): {e}; install Debian's etcd-server",
                etcd.display()
            ))
        })?;
    let pid = child.id();
    lab::adopt(child);
    if let Some(s) = state.store.as_mut() {
        s.etcd_pid = Some(pid);
        s.etcd_start = lab::process_start_time(pid);
    }
    lab::save(state)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ping = with_store(store_of(state)?, |s| async move {
            s.get("/sluice-lab/ping").await.map(drop).map_err(other)
        });
        match ping {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(other(format!(
                    "etcd did not come up: {e}; see {}-etcd.log",
                    state.name
                )))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Stops the lab's etcd (by PID); the data stays for [`start_etcd`].
pub fn stop_etcd(state: &mut LabState) {
    if let Some(st) = state.store.as_mut() {
        if let Some(pid) = st.etcd_pid.take() {
            lab::stop_daemon(pid, st.etcd_start.take());
        }
    }
    let _ = lab::save(state);
}

/// Writes a kernel node's lease as flanneld would (its `flannel.1` MAC as
/// the VTEP MAC for VXLAN).
pub fn write_kernel_lease(state: &LabState, i: usize) -> Result<()> {
    let n = &state.nodes[i];
    let kind = backend(state.mode);
    let attrs = LeaseAttrs::new(
        n.ip.parse().map_err(other)?,
        kind,
        1,
        n.vtep_mac.parse::<sluice_api::MacAddr>().map_err(other)?,
    );
    let key = lease::subnet_key(PREFIX, n.subnet.parse().map_err(|e: String| other(e))?);
    with_store(store_of(state)?, |s| async move {
        match s
            .create(&key, attrs.to_json().as_bytes(), lease::LEASE_TTL)
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(other(format!("{key} is leased already"))),
            Err(e) => Err(other(e)),
        }
    })
}

fn backend(mode: Mode) -> BackendType {
    match mode {
        Mode::Vxlan => BackendType::Vxlan,
        Mode::Ipip => BackendType::Ipip,
        Mode::HostGw => BackendType::HostGw,
    }
}

/// Every lease in the lab's store.
pub fn leases(state: &LabState) -> Result<lease::Listed> {
    with_store(store_of(state)?, |s| async move {
        lease::list(&s, PREFIX).await.map_err(other)
    })
}

/// The node's subnet file.
pub fn subnet_file(state: &LabState, i: usize) -> PathBuf {
    lab::state_dir().join(format!("{}-subnet.env", state.nodes[i].ns))
}

/// Starts node `i`'s agent and records its PID.
pub fn start_agent(state: &mut LabState, i: usize) -> Result<()> {
    start_agent_with(state, i, &[])
}

/// [`start_agent`] with extra flags (tests: `--lease-ttl 6`).
pub fn start_agent_with(state: &mut LabState, i: usize, extra: &[&str]) -> Result<()> {
    let n = state.nodes[i].clone();
    let path = subnet_file(state, i);
    if !path.exists() {
        // The subnet the lab's pods were given: the agent tries it first.
        SubnetFile {
            network: state.network.parse().map_err(|e: String| other(e))?,
            subnet: n.subnet.parse().map_err(|e: String| other(e))?,
            mtu: state.mode.pod_mtu(),
            ip_masq: false,
        }
        .write(&path)
        .map_err(other)?;
    }
    let st = store_of(state)?.clone();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(lab::state_dir().join(format!("{}-agent.log", n.ns)))
        .map_err(other)?;
    let healthz = match (&n.agent_healthz, &state.bgp) {
        (Some(a), _) => a.clone(),
        // Inside the node's namespace: its own loopback.
        (None, Some(_)) => AGENT_HEALTHZ_IN_NODE.to_string(),
        (None, None) => format!("127.0.0.1:{}", free_port()?),
    };
    let mut cmd = match &state.bgp {
        None => Command::new(agent_path()),
        Some(bgp) => {
            let conf = lab::state_dir().join(format!("{}-agent.toml", n.ns));
            std::fs::write(&conf, agent_bgp_config(state, i, bgp)).map_err(other)?;
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &n.ns])
                .arg(agent_path())
                .arg("--config")
                .arg(conf);
            c
        }
    };
    cmd.arg("--sluiced-socket")
        .arg(&n.api_socket)
        .arg("--subnet-file")
        .arg(&path)
        .args(["--healthz-address", &healthz, "--sluiced-poll-ms", "200"]);
    cmd.args(extra);
    match st.kind {
        StoreKind::Embedded => cmd.arg("--store-dir").arg(&st.dir),
        StoreKind::Etcd => cmd.args(["--etcd-endpoints", st.endpoint.as_deref().unwrap_or("")]),
    };
    let child = cmd
        .stdout(log.try_clone().map_err(other)?)
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| {
            other(format!(
                "cannot start sluice-agent ({}): {e}",
                agent_path().display()
            ))
        })?;
    state.nodes[i].agent_pid = Some(child.id());
    state.nodes[i].agent_start = lab::process_start_time(child.id());
    state.nodes[i].agent_healthz = Some(healthz);
    lab::adopt(child);
    lab::save(state)
}

/// Where a BGP lab's agent serves health and `/bgp`, inside its node's
/// namespace.
pub const AGENT_HEALTHZ_IN_NODE: &str = "127.0.0.1:9473";

/// Node `i`'s agent config in a BGP lab (see [`lab::BgpLab`]).
pub fn agent_bgp_config(state: &LabState, i: usize, bgp: &lab::BgpLab) -> String {
    let me = &state.nodes[i];
    let mut peers: Vec<(String, bool)> = Vec::new();
    if bgp.reflectors.is_empty() {
        for m in state.nodes.iter().filter(|m| m.index != me.index) {
            let mine: std::net::Ipv4Addr = me.ip.parse().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
            let theirs: std::net::Ipv4Addr =
                m.ip.parse().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
            // Calico: `passive on` when the peer's address is greater.
            peers.push((m.ip.clone(), theirs > mine));
        }
    } else {
        peers.extend(bgp.reflectors.iter().map(|r| (r.clone(), false)));
    }
    peers.extend(bgp.extra_peers.iter().map(|p| (p.clone(), false)));
    let mode = bgp.ipip_mode.clone().unwrap_or_else(|| {
        match state.mode {
            Mode::Ipip => "Always",
            _ => "Never",
        }
        .to_string()
    });
    let (ipip, vxlan) = match state.mode {
        Mode::Vxlan => ("Never".to_string(), mode),
        _ => (mode, "Never".to_string()),
    };
    let mut s = format!(
        "[bgp]\nasn = 64512\nlisten_address = \"{}\"\nhold_time = {}\nconnect_retry = 1\ndeferral_time = {}\n\n[[bgp.pools]]\ncidr = \"{}\"\nipip_mode = \"{ipip}\"\nvxlan_mode = \"{vxlan}\"\n",
        me.ip,
        bgp.hold_time.unwrap_or(9),
        bgp.deferral_time.unwrap_or(30),
        state.network,
    );
    for (ip, passive) in peers {
        s.push_str(&format!(
            "\n[[bgp.peers]]\naddress = \"{ip}\"\npassive = {passive}\n"
        ));
    }
    s
}

/// Asks node `i`'s agent (inside its namespace in a BGP lab) for `/bgp`.
pub fn agent_bgp_status(
    state: &LabState,
    i: usize,
) -> Result<sluice_control::bgp::speaker::BgpStatus> {
    let n = &state.nodes[i];
    let healthz = n.agent_healthz.as_deref().unwrap_or(AGENT_HEALTHZ_IN_NODE);
    let agent = agent_path();
    let out = lab::ns_run(
        &n.ns,
        &[
            &agent.to_string_lossy(),
            "--healthz-address",
            healthz,
            "bgp",
            "peers",
            "--json",
        ],
    )?;
    serde_json::from_str(&out).map_err(|e| other(format!("{out}: {e}")))
}

/// Stops node `i`'s agent: SIGTERM, or SIGKILL when `kill`.
pub fn stop_agent(state: &mut LabState, i: usize, kill: bool) {
    let n = &mut state.nodes[i];
    if let Some(pid) = n.agent_pid {
        lab::end_daemon(pid, n.agent_start, kill);
    }
    n.agent_pid = None;
    n.agent_start = None;
    let _ = lab::save(state);
}

/// Waits until every sluiced node routes every other node's subnet.
pub fn wait_for_routes(state: &LabState, timeout: Duration) -> Result<()> {
    wait_for_routes_to(state, |_| true, timeout)
}

/// Waits until every sluiced node routes the subnet of every other node
/// that `to` selects.
pub fn wait_for_routes_to(
    state: &LabState,
    to: impl Fn(&lab::NodeState) -> bool,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    for n in state.nodes.iter().filter(|n| !n.kernel) {
        loop {
            let have: Vec<String> = sluice_api::Client::new(&n.api_socket)
                .routes()
                .map(|l| l.routes.iter().map(|r| r.prefix.to_string()).collect())
                .unwrap_or_default();
            let missing: Vec<&str> = state
                .nodes
                .iter()
                .filter(|m| m.index != n.index && to(m) && !have.contains(&m.subnet))
                .map(|m| m.subnet.as_str())
                .collect();
            if missing.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                return Err(other(format!(
                    "node {}: its agent did not program routes to {missing:?}; see {}-agent.log",
                    n.index, n.ns
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

/// Programs a kernel node's routes from the store, as flanneld does from
/// its lease watch: per other lease, for VXLAN the ARP entry, the FDB entry
/// and the route via `flannel.1`; for host-gw the route via the node.
pub fn kernel_routes_from_store(state: &LabState, i: usize) -> Result<()> {
    let n = &state.nodes[i];
    let ns = n.ns.as_str();
    let listed = leases(state)?;
    let own: sluice_api::Ipv4Net = n.subnet.parse().map_err(|e: String| other(e))?;
    for (subnet, attrs) in listed.leases.iter().filter(|(s, _)| **s != own) {
        let (dst, ip) = (subnet.to_string(), attrs.public_ip.to_string());
        match state.mode {
            Mode::Vxlan => {
                let mac = attrs.vxlan().map_err(other)?.vtep_mac.to_string();
                let dot0 = subnet.addr().to_string();
                lab::run(&[
                    "ip",
                    "-n",
                    ns,
                    "neigh",
                    "replace",
                    &dot0,
                    "lladdr",
                    &mac,
                    "dev",
                    "flannel.1",
                    "nud",
                    "permanent",
                ])?;
                lab::run(&[
                    "bridge",
                    "-n",
                    ns,
                    "fdb",
                    "append",
                    &mac,
                    "dev",
                    "flannel.1",
                    "dst",
                    &ip,
                ])?;
                lab::run(&[
                    "ip",
                    "-n",
                    ns,
                    "route",
                    "replace",
                    &dst,
                    "via",
                    &dot0,
                    "dev",
                    "flannel.1",
                    "onlink",
                ])?;
            }
            Mode::HostGw => {
                lab::run(&[
                    "ip", "-n", ns, "route", "replace", &dst, "via", &ip, "dev", "eth0",
                ])?;
            }
            Mode::Ipip => {}
        }
    }
    Ok(())
}

/// Removes the store's files (after etcd has been stopped).
pub fn remove_store(st: &StoreState) {
    if !st.dir.as_os_str().is_empty() {
        let _ = std::fs::remove_dir_all(&st.dir);
    }
}

/// Writes `value` at `key` as given (tests write leases by hand, as an
/// operator or flanneld would), bound to a TTL or not.
pub fn put_raw(state: &LabState, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
    with_store(store_of(state)?, |s| async move {
        s.put(key, value, ttl).await.map_err(other)
    })
}

/// Deletes `key`.
pub fn delete(state: &LabState, key: &str) -> Result<()> {
    with_store(store_of(state)?, |s| async move {
        s.delete(key).await.map_err(other)
    })
}

/// Compacts the store's history up to its current revision: a watch from
/// an older revision must list again.
pub fn compact(state: &LabState) -> Result<()> {
    with_store(store_of(state)?, |s| async move {
        // A prefix that holds nothing: only the store's revision is wanted.
        let (_, rev) = s.list("/sluice-lab/revision/").await.map_err(other)?;
        s.compact(rev).await.map_err(other)
    })
}
