//! The commands: ADD, DEL, CHECK, GC and STATUS (VERSION is the
//! skeleton's), each a function of a [`Call`], so tests drive them without
//! a process.
//!
//! ADD runs its steps in order and keeps an [`Undo`] list: an error at any
//! step undoes the ones before it, newest first (IPAM lease, veth, record),
//! so a failed ADD leaves nothing behind. The record is written before
//! sluiced is asked for the port: a sluiced that restarts in between reads
//! it and attaches the pod itself, and the `ports.add` that follows is then
//! a no-op (ports.add is idempotent).
//!
//! DEL is best effort and idempotent: the port leaves sluiced (an
//! unreachable sluiced is fine: it reads records only at start, and the
//! record goes too), the veth goes (absent: fine), the address is released
//! (already released: fine), then the record.

use crate::conf::{IpamConf, Mode, PluginConf, VhostUserConf, OWN_IPAM};
use crate::error::{self, PluginError, Result};
use crate::ipam::{self, OwnIpam, Owner};
use crate::{link, records, vhost};
use ipnet::{IpNet, Ipv4Net as NetV4};
use rscni_plugin::types::{CNIResult, Dns, GcAttachment, Interface, IpConfig, NetConf, Route};
use rscni_plugin::version::SpecVersion;
use serde_json::{json, Value};
use sluice_api::attachment::{host_ifname, Attachment, RECORD_VERSION};
use sluice_api::subnet_file::SubnetFile;
use sluice_api::{Client, ClientError, Ipv4Net, PortConfig, PortKind};
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a call to sluiced may take (ports.add waits for the workers,
/// and concurrent ADDs queue behind each other).
pub const SLUICED_TIMEOUT: Duration = Duration::from_secs(30);

/// The versions this plugin speaks.
pub fn supported_versions() -> Vec<SpecVersion> {
    ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
        .iter()
        .map(|v| v.parse().expect("valid version"))
        .collect()
}

/// One invocation's inputs.
#[derive(Debug, Clone)]
pub struct Call {
    /// The plugin's keys.
    pub conf: PluginConf,
    /// The whole configuration (delegated to the IPAM plugin).
    pub netconf: NetConf,
    /// `CNI_CONTAINERID` (empty for GC and STATUS).
    pub container_id: String,
    /// `CNI_IFNAME` (empty for GC and STATUS).
    pub ifname: String,
    /// `CNI_NETNS`.
    pub netns: Option<PathBuf>,
    /// `CNI_PATH`.
    pub cni_path: Vec<PathBuf>,
    /// `CNI_ARGS` (`K8S_POD_UID` places a vhost-user pod's socket).
    pub cni_args: Option<String>,
}

impl Call {
    fn host_end(&self) -> String {
        host_ifname(&self.conf.network, &self.container_id, &self.ifname)
    }
    fn owner(&self) -> Owner {
        Owner {
            container_id: self.container_id.clone(),
            ifname: self.ifname.clone(),
            network: self.conf.owner_network(),
        }
    }
    fn client(&self) -> Sluiced {
        Sluiced(Client::new(&self.conf.sluiced_socket).with_timeout(SLUICED_TIMEOUT))
    }
    fn version(&self) -> SpecVersion {
        self.netconf.version().unwrap_or(SpecVersion::CURRENT)
    }
}

/// Whether sluiced turned the connection away before reading the request:
/// its answer says so, or it closed while the request was being written.
fn turned_away(e: &ClientError) -> bool {
    match e {
        ClientError::Api(a) => a.message.starts_with("too many connections"),
        ClientError::Io { source, .. } => matches!(
            source.kind(),
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
        ),
        ClientError::Protocol { .. } => false,
    }
}

/// sluiced's API, retried while sluiced turns connections away because it
/// serves its maximum at once (a runtime attaching many pods together
/// meets that limit): with growing, jittered waits up to
/// [`SLUICED_TIMEOUT`].
#[derive(Debug)]
struct Sluiced(Client);

impl Sluiced {
    fn retry<T>(
        &self,
        f: impl Fn(&Client) -> std::result::Result<T, ClientError>,
    ) -> std::result::Result<T, ClientError> {
        let deadline = std::time::Instant::now() + SLUICED_TIMEOUT;
        let mut wait_us = 1_000u64;
        let mut seed = u64::from(std::process::id()) | 1;
        loop {
            match f(&self.0) {
                Err(e) if turned_away(&e) && std::time::Instant::now() < deadline => {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    std::thread::sleep(Duration::from_micros(wait_us + seed % wait_us));
                    wait_us = (wait_us * 2).min(50_000);
                }
                other => return other,
            }
        }
    }
    fn node(&self) -> std::result::Result<sluice_api::NodeInfo, ClientError> {
        self.retry(|c| c.node())
    }
    fn ports(&self) -> std::result::Result<sluice_api::PortList, ClientError> {
        self.retry(|c| c.ports())
    }
    fn add_ports(
        &self,
        ports: Vec<PortConfig>,
    ) -> std::result::Result<sluice_api::PortsAdded, ClientError> {
        self.retry(|c| c.add_ports(ports.clone()))
    }
    fn remove_ports(
        &self,
        names: Vec<String>,
    ) -> std::result::Result<sluice_api::Removed, ClientError> {
        self.retry(|c| c.remove_ports(names.clone()))
    }
}

fn unreachable(conf: &PluginConf, e: &ClientError) -> PluginError {
    PluginError::new(
        error::TRY_AGAIN_LATER,
        format!(
            "sluiced is not reachable at {}: {e}",
            conf.sluiced_socket.display()
        ),
    )
}

fn subnet_file(conf: &PluginConf) -> Result<SubnetFile> {
    let text = std::fs::read_to_string(&conf.subnet_file).map_err(|e| {
        PluginError::new(
            error::TRY_AGAIN_LATER,
            format!(
                "subnet file {}: {e} (sluice-agent writes it once this node has its subnet)",
                conf.subnet_file.display()
            ),
        )
    })?;
    SubnetFile::parse(&text).map_err(|e| {
        PluginError::new(
            error::TRY_AGAIN_LATER,
            format!("subnet file {}: {e}", conf.subnet_file.display()),
        )
    })
}

/// What a failed ADD takes back, newest first.
#[derive(Debug, Default)]
struct Undo {
    steps: Vec<Step>,
}

#[derive(Debug)]
enum Step {
    ReleaseOwn(OwnIpam, Owner, Ipv4Addr),
    ReleaseDelegated(PathBuf, Value),
    DeleteVeth(String),
    RemoveRecord(PathBuf, String),
    RemoveVhostSocketDir(PathBuf),
}

impl Undo {
    fn run(self) {
        for step in self.steps.into_iter().rev() {
            let outcome = match &step {
                Step::ReleaseOwn(ipam, owner, ip) => ipam.release(owner, Some(*ip)),
                Step::ReleaseDelegated(path, cfg) => ipam::delegate("DEL", path, cfg).map(|_| ()),
                Step::DeleteVeth(host) => link::delete(host).map(|_| ()),
                Step::RemoveRecord(dir, name) => records::remove(dir, name),
                Step::RemoveVhostSocketDir(sock) => vhost::cleanup(sock),
            };
            if let Err(e) = outcome {
                eprintln!("sluice: undoing {step:?}: {e}");
            }
        }
    }
}

/// The address IPAM gave, and what else it said.
#[derive(Debug, Clone)]
pub struct Lease {
    /// The pod's address.
    pub ip: Ipv4Addr,
    /// Its prefix length.
    pub prefix_len: u8,
    /// The IPAM configuration as sent (kept in the record).
    pub ipam_record: Value,
    /// Routes IPAM gave.
    pub routes: Vec<Route>,
    /// DNS IPAM gave.
    pub dns: Option<Dns>,
}

fn delegate_config(call: &Call, ipam: Value) -> Value {
    let mut cfg = serde_json::to_value(&call.netconf).unwrap_or_else(|_| json!({}));
    if let Some(m) = cfg.as_object_mut() {
        m.remove("prevResult");
        m.insert("ipam".into(), ipam);
    }
    cfg
}

fn lease(call: &Call, subnet: Ipv4Net, gateway: Ipv4Addr, undo: &mut Undo) -> Result<Lease> {
    match &call.conf.ipam {
        IpamConf::Own => {
            let own = OwnIpam::new(call.conf.ipam_dir());
            let ip = own.allocate(subnet, &call.owner())?;
            undo.steps.push(Step::ReleaseOwn(own, call.owner(), ip));
            Ok(Lease {
                ip,
                prefix_len: subnet.len(),
                ipam_record: json!({"type": OWN_IPAM}),
                routes: Vec::new(),
                dns: None,
            })
        }
        IpamConf::Delegate(m) => {
            let rendered = ipam::render_delegate(m, subnet, gateway);
            let path = ipam::find_plugin(call.conf.ipam.kind(), &call.cni_path)?;
            let cfg = delegate_config(call, rendered.clone());
            let out = ipam::delegate("ADD", &path, &cfg)?;
            undo.steps.push(Step::ReleaseDelegated(path, cfg));
            let result: CNIResult = out
                .ok_or_else(|| {
                    PluginError::new(
                        error::IPAM_FAILED,
                        format!("IPAM plugin `{}` ADD: no result", call.conf.ipam.kind()),
                    )
                })
                .and_then(|v| {
                    serde_json::from_value(v).map_err(|e| {
                        PluginError::new(
                            error::IPAM_FAILED,
                            format!("IPAM plugin `{}` ADD: result: {e}", call.conf.ipam.kind()),
                        )
                    })
                })?;
            let (ip, prefix_len) = result
                .ips
                .iter()
                .find_map(|c| match c.address {
                    IpNet::V4(n) => Some((n.addr(), n.prefix_len())),
                    IpNet::V6(_) => None,
                })
                .ok_or_else(|| {
                    PluginError::new(
                        error::IPAM_FAILED,
                        format!(
                            "IPAM plugin `{}` ADD gave no IPv4 address",
                            call.conf.ipam.kind()
                        ),
                    )
                })?;
            if !subnet.contains(ip) {
                return Err(PluginError::new(
                    error::IPAM_FAILED,
                    format!(
                        "IPAM plugin `{}` gave {ip}, outside this node's subnet {subnet}",
                        call.conf.ipam.kind()
                    ),
                ));
            }
            Ok(Lease {
                ip,
                prefix_len,
                ipam_record: rendered,
                routes: result.routes,
                dns: result.dns,
            })
        }
    }
}

fn mac_string(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// ADD: address, veth, record, port; the result.
pub fn add(call: &Call) -> Result<CNIResult> {
    let netns = call
        .netns
        .clone()
        .ok_or_else(|| PluginError::new(error::BAD_ENV, "CNI_NETNS is required for ADD"))?;
    let sf = subnet_file(&call.conf)?;
    let client = call.client();
    let node = client.node().map_err(|e| unreachable(&call.conf, &e))?;
    if node.node.pod_subnet != sf.subnet {
        return Err(PluginError::new(
            error::TRY_AGAIN_LATER,
            format!(
                "sluiced serves pod subnet {} but the subnet file {} says {}: wait for sluice-agent to reconcile",
                node.node.pod_subnet,
                call.conf.subnet_file.display(),
                sf.subnet
            ),
        ));
    }
    let gateway = node.node.gateway();
    let mtu = call.conf.mtu.unwrap_or(sf.mtu);
    let host = call.host_end();
    if let Mode::VhostUser(v) = &call.conf.mode {
        return add_vhost(call, v, &netns, &sf, &node, &client);
    }
    let mut undo = Undo::default();
    let done = (|| {
        let lease = lease(call, sf.subnet, gateway, &mut undo)?;
        let veth = link::create(&link::VethSpec {
            host: &host,
            pod_ifname: &call.ifname,
            netns: &netns,
            mtu,
            queues: node.workers.max(1),
            address: lease.ip,
            prefix_len: lease.prefix_len,
            gateway,
        })?;
        undo.steps.push(Step::DeleteVeth(host.clone()));
        let result = build_result(call, &netns, &host, &veth, mtu, &lease, gateway);
        let port = PortConfig {
            name: host.clone(),
            kind: PortKind::Pod,
            mtu,
            mac: mac_string(veth.pod_mac)
                .parse()
                .map_err(|e| PluginError::new(error::LINK_FAILED, format!("pod MAC: {e}")))?,
            address: None,
            gateway: None,
            ip: Some(lease.ip),
            rx_mode: None,
            removed: false,
            devargs: None,
            vhost_user: None,
        };
        let record = Attachment {
            version: RECORD_VERSION,
            network: call.conf.network.clone(),
            container_id: call.container_id.clone(),
            ifname: call.ifname.clone(),
            netns: Some(netns.display().to_string()),
            port: port.clone(),
            ipam: lease.ipam_record.clone(),
            result: serde_json::to_value(&result).unwrap_or(Value::Null),
        };
        let dir = call.conf.attachments_dir();
        records::write(&dir, &record)?;
        undo.steps.push(Step::RemoveRecord(dir, host.clone()));
        client.add_ports(vec![port]).map_err(|e| match e {
            ClientError::Api(a) => PluginError::new(
                error::PORT_REFUSED,
                format!("sluiced refused port `{host}` for {}: {a}", lease.ip),
            ),
            other => unreachable(&call.conf, &other),
        })?;
        Ok(result)
    })();
    if done.is_err() {
        undo.run();
    }
    done
}

/// ADD in vhost-user mode: address, socket directory, contract file,
/// record, port (with `vhost_user`); no veth.
fn add_vhost(
    call: &Call,
    v: &VhostUserConf,
    netns: &Path,
    sf: &SubnetFile,
    node: &sluice_api::NodeInfo,
    client: &Sluiced,
) -> Result<CNIResult> {
    let gateway = node.node.gateway();
    let mtu = call.conf.mtu.unwrap_or(sf.mtu);
    let host = call.host_end();
    let place = vhost::plan(
        v,
        call.cni_args.as_deref(),
        &call.container_id,
        &call.ifname,
        &host,
    )?;
    let mut undo = Undo::default();
    let done = (|| {
        let lease = lease(call, sf.subnet, gateway, &mut undo)?;
        vhost::prepare(v, &place)?;
        undo.steps
            .push(Step::RemoveVhostSocketDir(place.switch_path.clone()));
        let mac = vhost::mac_for(lease.ip);
        let result = build_vhost_result(call, netns, &place, &mac, mtu, &lease, gateway);
        let contract = vhost::Contract {
            socket: format!("{}.sock", call.ifname),
            role: "server".into(),
            mac: mac.clone(),
            ip: format!("{}/{}", lease.ip, lease.prefix_len),
            gateway,
            mtu,
            queues: node.workers.max(1),
            routes: result
                .routes
                .iter()
                .filter_map(|r| match (r.dst, r.gw) {
                    (IpNet::V4(d), gw) => Some(vhost::ContractRoute {
                        dst: d.to_string(),
                        gw: match gw {
                            Some(IpAddr::V4(g)) => Some(g),
                            _ => None,
                        },
                    }),
                    _ => None,
                })
                .collect(),
        };
        vhost::write_contract(&place, &contract)?;
        let port = PortConfig {
            name: host.clone(),
            kind: PortKind::Pod,
            mtu,
            mac: mac
                .parse()
                .map_err(|e| PluginError::new(error::IO_FAILURE, format!("pod MAC: {e}")))?,
            address: None,
            gateway: None,
            ip: Some(lease.ip),
            rx_mode: None,
            removed: false,
            devargs: None,
            vhost_user: Some(place.switch_path.clone()),
        };
        let record = Attachment {
            version: RECORD_VERSION,
            network: call.conf.network.clone(),
            container_id: call.container_id.clone(),
            ifname: call.ifname.clone(),
            netns: Some(netns.display().to_string()),
            port: port.clone(),
            ipam: lease.ipam_record.clone(),
            result: serde_json::to_value(&result).unwrap_or(Value::Null),
        };
        let dir = call.conf.attachments_dir();
        records::write(&dir, &record)?;
        undo.steps.push(Step::RemoveRecord(dir, host.clone()));
        client.add_ports(vec![port]).map_err(|e| match e {
            ClientError::Api(a) => PluginError::new(
                error::PORT_REFUSED,
                format!(
                    "sluiced refused vhost-user port `{host}` ({}) for {}: {a}",
                    place.switch_path.display(),
                    lease.ip
                ),
            ),
            other => unreachable(&call.conf, &other),
        })?;
        Ok(result)
    })();
    if done.is_err() {
        undo.run();
    }
    done
}

/// The vhost-user ADD result: one interface, `CNI_IFNAME` in the pod's
/// sandbox, with its MAC and, from 1.1.0, `mtu` and `socketPath` (the
/// socket as the node sees it); the address, gateway and default route.
pub fn build_vhost_result(
    call: &Call,
    netns: &Path,
    place: &vhost::Place,
    mac: &str,
    mtu: u16,
    lease: &Lease,
    gateway: Ipv4Addr,
) -> CNIResult {
    let v1_1 = call.version() >= "1.1.0".parse().expect("valid version");
    let mut result = call.netconf.prev_result.clone().unwrap_or_default();
    let index = result.interfaces.len() as u32;
    result.interfaces.push(Interface {
        name: call.ifname.clone(),
        mac: mac.to_string(),
        mtu: v1_1.then_some(u32::from(mtu)),
        sandbox: Some(netns.display().to_string()),
        socket_path: v1_1.then(|| place.socket.display().to_string()),
        pci_id: None,
    });
    add_address_and_routes(&mut result, index, lease, gateway);
    result
}

fn add_address_and_routes(result: &mut CNIResult, index: u32, lease: &Lease, gateway: Ipv4Addr) {
    result.ips.push(IpConfig {
        interface: Some(index),
        address: IpNet::V4(
            NetV4::new(lease.ip, lease.prefix_len).expect("prefix length checked by IPAM"),
        ),
        gateway: Some(IpAddr::V4(gateway)),
    });
    let default = Route {
        dst: "0.0.0.0/0".parse().expect("valid prefix"),
        gw: Some(IpAddr::V4(gateway)),
        mtu: None,
        advmss: None,
        priority: None,
        table: None,
        scope: None,
    };
    for r in std::iter::once(default).chain(lease.routes.iter().cloned()) {
        if !result.routes.contains(&r) {
            result.routes.push(r);
        }
    }
    if lease.dns.is_some() {
        result.dns = lease.dns.clone();
    }
}

fn build_result(
    call: &Call,
    netns: &Path,
    host: &str,
    veth: &link::Veth,
    mtu: u16,
    lease: &Lease,
    gateway: Ipv4Addr,
) -> CNIResult {
    let with_mtu = call.version() >= "1.1.0".parse().expect("valid version");
    let mut result = call.netconf.prev_result.clone().unwrap_or_default();
    let base = result.interfaces.len() as u32;
    result.interfaces.push(Interface {
        name: host.to_string(),
        mac: mac_string(veth.host_mac),
        mtu: with_mtu.then_some(u32::from(mtu)),
        sandbox: None,
        socket_path: None,
        pci_id: None,
    });
    result.interfaces.push(Interface {
        name: call.ifname.clone(),
        mac: mac_string(veth.pod_mac),
        mtu: with_mtu.then_some(u32::from(mtu)),
        sandbox: Some(netns.display().to_string()),
        socket_path: None,
        pci_id: None,
    });
    add_address_and_routes(&mut result, base + 1, lease, gateway);
    result
}

/// DEL: port, veth, address, record; missing pieces are fine.
pub fn del(call: &Call) -> Result<()> {
    let host = call.host_end();
    let dir = call.conf.attachments_dir();
    let record = records::read(&dir, &host).unwrap_or_else(|e| {
        eprintln!("sluice: DEL: unreadable record ({e}); releasing by configuration");
        None
    });
    release(call, &host, record.as_ref())
}

fn release(call: &Call, host: &str, record: Option<&Attachment>) -> Result<()> {
    match call.client().remove_ports(vec![host.to_string()]) {
        Ok(_) => {}
        Err(ClientError::Api(a)) => eprintln!("sluice: DEL: sluiced: {a}"),
        Err(e) => {
            eprintln!("sluice: DEL: sluiced not reachable ({e}); it re-reads records only at start")
        }
    }
    let vhost_sock = match (record, &call.conf.mode) {
        (Some(r), _) => r.port.vhost_user.clone(),
        // No record: where ADD would have put the socket.
        (None, Mode::VhostUser(v)) => vhost::plan(
            v,
            call.cni_args.as_deref(),
            &call.container_id,
            &call.ifname,
            host,
        )
        .ok()
        .map(|p| p.switch_path),
        (None, Mode::Veth) => None,
    };
    match vhost_sock {
        Some(sock) => vhost::cleanup(&sock)?,
        None => {
            link::delete(host)?;
        }
    }
    let owner = Owner {
        container_id: record.map_or(call.container_id.clone(), |r| r.container_id.clone()),
        ifname: record.map_or(call.ifname.clone(), |r| r.ifname.clone()),
        network: call.conf.owner_network(),
    };
    let recorded_kind = record.and_then(|r| {
        r.ipam
            .get("type")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let kind = recorded_kind.unwrap_or_else(|| call.conf.ipam.kind().to_string());
    if kind == OWN_IPAM {
        OwnIpam::new(call.conf.ipam_dir()).release(&owner, record.and_then(|r| r.port.ip))?;
    } else {
        let ipam_cfg = match (record, &call.conf.ipam) {
            (Some(r), _) => r.ipam.clone(),
            (None, IpamConf::Delegate(m)) => match subnet_file(&call.conf) {
                Ok(sf) => {
                    ipam::render_delegate(m, sf.subnet, Ipv4Addr::from(sf.subnet.addr_u32() + 1))
                }
                Err(_) => Value::Object(m.clone()),
            },
            (None, IpamConf::Own) => unreachable!("kind is not own"),
        };
        let path = ipam::find_plugin(&kind, &call.cni_path)?;
        ipam::delegate("DEL", &path, &delegate_config(call, ipam_cfg))?;
    }
    records::remove(&call.conf.attachments_dir(), host)
}

/// CHECK: the pod's interface, address, route and MTU, the host end, and
/// sluiced's port are as ADD left them.
pub fn check(call: &Call) -> Result<()> {
    let host = call.host_end();
    let netns = call
        .netns
        .clone()
        .ok_or_else(|| PluginError::new(error::BAD_ENV, "CNI_NETNS is required for CHECK"))?;
    let record = records::read(&call.conf.attachments_dir(), &host)
        .map_err(|e| PluginError::new(error::CHECK_FAILED, format!("record: {e}")))?
        .ok_or_else(|| {
            PluginError::new(
                error::UNKNOWN_CONTAINER,
                format!(
                    "no attachment of container {} interface {} on network {}",
                    call.container_id, call.ifname, call.conf.network
                ),
            )
        })?;
    let fail = |m: String| Err(PluginError::new(error::CHECK_FAILED, m));
    let ip = record.port.ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
    if let Some(prev) = &call.netconf.prev_result {
        if !prev.ips.iter().any(|c| c.address.addr() == IpAddr::V4(ip)) {
            return fail(format!("prevResult does not list {ip}"));
        }
    }
    if let Some(sock) = &record.port.vhost_user {
        // vhost-user: no interface in the pod; its socket's directory (the
        // pod's volume) and sluiced's port.
        if !matches!(call.conf.mode, Mode::VhostUser(_)) {
            return fail(format!(
                "the attachment is vhost-user ({}) but the network's mode is not",
                sock.display()
            ));
        }
        if !sock.parent().is_some_and(Path::is_dir) {
            return fail(format!(
                "the vhost-user socket's directory {} is missing",
                sock.parent().unwrap_or(sock).display()
            ));
        }
    } else {
        check_veth(call, &netns, &record, ip, &host)?;
    }
    let ports = call
        .client()
        .ports()
        .map_err(|e| unreachable(&call.conf, &e))?;
    match ports.ports.iter().find(|p| p.name == host) {
        None => return fail(format!("sluiced has no port `{host}`")),
        Some(p) if p.ip != Some(ip) || p.mac != record.port.mac => {
            return fail(format!(
                "sluiced binds `{host}` to {:?} {} instead of {ip} {}",
                p.ip, p.mac, record.port.mac
            ))
        }
        Some(p) if p.vhost_user != record.port.vhost_user => {
            return fail(format!(
                "sluiced serves `{host}` over {} instead of {}",
                p.vhost_user
                    .as_ref()
                    .map_or("AF_XDP".into(), |s| format!("vhost-user {}", s.display())),
                record
                    .port
                    .vhost_user
                    .as_ref()
                    .map_or("AF_XDP".into(), |s| format!("vhost-user {}", s.display())),
            ))
        }
        Some(_) => {}
    }
    if let IpamConf::Delegate(_) = &call.conf.ipam {
        let path = ipam::find_plugin(call.conf.ipam.kind(), &call.cni_path)?;
        let mut cfg = delegate_config(call, record.ipam.clone());
        if let Some(prev) = &call.netconf.prev_result {
            cfg["prevResult"] = serde_json::to_value(prev).unwrap_or(Value::Null);
        }
        ipam::delegate("CHECK", &path, &cfg)?;
    } else if !OwnIpam::new(call.conf.ipam_dir())
        .held()
        .iter()
        .any(|(a, o)| *a == ip && o.as_ref() == Some(&call.owner()))
    {
        return fail(format!("{ip} is not recorded as held by this attachment"));
    }
    Ok(())
}

/// CHECK's veth part: the pod's interface, address, MTU and default
/// route, and the host end.
fn check_veth(
    call: &Call,
    netns: &Path,
    record: &Attachment,
    ip: Ipv4Addr,
    host: &str,
) -> Result<()> {
    let fail = |m: String| Err(PluginError::new(error::CHECK_FAILED, m));
    let Some(view) = link::inspect(netns, &call.ifname)? else {
        return fail(format!(
            "interface `{}` is missing from {}",
            call.ifname,
            netns.display()
        ));
    };
    if mac_string(view.mac) != record.port.mac.to_string() {
        return fail(format!(
            "`{}` has MAC {} but sluiced binds {}",
            call.ifname,
            mac_string(view.mac),
            record.port.mac
        ));
    }
    if !view.addresses.iter().any(|(a, _)| *a == ip) {
        return fail(format!(
            "`{}` lacks its address {ip} (has {:?})",
            call.ifname, view.addresses
        ));
    }
    if view.mtu != u32::from(record.port.mtu) {
        return fail(format!(
            "`{}` has MTU {} instead of {}",
            call.ifname, view.mtu, record.port.mtu
        ));
    }
    let node = call
        .client()
        .node()
        .map_err(|e| unreachable(&call.conf, &e))?;
    if view.default_gateway != Some(node.node.gateway()) {
        return fail(format!(
            "`{}` has no default route via {} (has {:?})",
            call.ifname,
            node.node.gateway(),
            view.default_gateway
        ));
    }
    if !link::exists(host)? {
        return fail(format!("the host end `{host}` is missing"));
    }
    Ok(())
}

/// GC: every attachment of this network not in `valid` is released; then
/// own-IPAM addresses without a valid owner; then GC goes on to a
/// delegated IPAM plugin. Errors do not stop it; the first is returned.
pub fn gc(call: &Call, valid: &[GcAttachment]) -> Result<Vec<String>> {
    let keep: HashSet<(String, String)> = valid
        .iter()
        .map(|a| (a.container_id.clone(), a.ifname.clone()))
        .collect();
    let mut first_error = None;
    let mut released = Vec::new();
    for (path, rec) in records::list(&call.conf.attachments_dir()) {
        let Ok(rec) = rec else {
            // Records are replaced atomically, so one that does not parse
            // is damaged, not half-written: its port and veth (named by
            // the file) go; an own-IPAM address is freed below by owner.
            let name = path
                .file_stem()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            // Only a name this plugin gives a host end: never another link.
            let ours = name.len() == 14
                && name.starts_with("sl")
                && name[2..].bytes().all(|b| b.is_ascii_hexdigit());
            if !ours {
                eprintln!(
                    "sluice: GC: {}: not a record of this plugin; left alone",
                    path.display()
                );
                continue;
            }
            eprintln!(
                "sluice: GC: {}: unreadable record: releasing `{name}`",
                path.display()
            );
            let _ = call.client().remove_ports(vec![name.clone()]);
            if let Mode::VhostUser(v) = &call.conf.mode {
                // Its link to a pod's volume, if it had one (never a directory).
                let alias = v.socket_dir.join(&name);
                if std::fs::symlink_metadata(&alias).is_ok_and(|m| m.file_type().is_symlink()) {
                    let _ = std::fs::remove_file(&alias);
                }
            }
            let gone = link::delete(&name)
                .and_then(|_| records::remove(&call.conf.attachments_dir(), &name));
            if let Err(e) = gone {
                first_error.get_or_insert(e);
            }
            continue;
        };
        if rec.network != call.conf.network
            || keep.contains(&(rec.container_id.clone(), rec.ifname.clone()))
        {
            continue;
        }
        let sub = Call {
            container_id: rec.container_id.clone(),
            ifname: rec.ifname.clone(),
            ..call.clone()
        };
        match release(&sub, &rec.port.name, Some(&rec)) {
            Ok(_) => released.push(rec.port.name.clone()),
            Err(e) => {
                eprintln!("sluice: GC: {}: {e}", path.display());
                first_error.get_or_insert(e);
            }
        }
    }
    // In a shared pool, only this network's addresses are its to collect.
    let mine = call.conf.owner_network();
    if let Err(e) = OwnIpam::new(call.conf.ipam_dir())
        .gc(|o| o.network != mine || keep.contains(&(o.container_id.clone(), o.ifname.clone())))
    {
        first_error.get_or_insert(e);
    }
    if let IpamConf::Delegate(m) = &call.conf.ipam {
        match ipam::find_plugin(call.conf.ipam.kind(), &call.cni_path) {
            Ok(path) => {
                let cfg = delegate_config(call, Value::Object(m.clone()));
                match ipam::delegate("GC", &path, &cfg) {
                    // A plugin from before 1.1 knows no GC: nothing to pass on.
                    Err(e)
                        if e.code == error::INCOMPATIBLE_VERSION
                            || e.msg.contains("unknown CNI_COMMAND") => {}
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                    Ok(_) => {}
                }
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(released),
    }
}

/// STATUS: ready when sluiced answers and the subnet file names the subnet
/// sluiced serves.
pub fn status(call: &Call) -> Result<()> {
    let node = call.client().node().map_err(|e| {
        PluginError::new(
            error::NOT_AVAILABLE_LIMITED,
            format!(
                "sluiced is not reachable at {}: {e}",
                call.conf.sluiced_socket.display()
            ),
        )
    })?;
    let sf = subnet_file(&call.conf).map_err(|e| PluginError::new(error::NOT_AVAILABLE, e.msg))?;
    if sf.subnet != node.node.pod_subnet {
        return Err(PluginError::new(
            error::NOT_AVAILABLE,
            format!(
                "the subnet file says {} but sluiced serves {}",
                sf.subnet, node.node.pod_subnet
            ),
        ));
    }
    Ok(())
}

/// The skeleton's callbacks.
#[derive(Debug)]
struct Sluice;

fn call_of(args: &rscni_plugin::types::Args) -> Result<Call> {
    let netconf = args.config().clone();
    Ok(Call {
        conf: PluginConf::from_netconf(&netconf)?,
        netconf,
        container_id: args
            .container_id()
            .map(|c| c.to_string())
            .unwrap_or_default(),
        ifname: args.ifname().map(|i| i.to_string()).unwrap_or_default(),
        netns: args.netns().cloned(),
        cni_path: args.path().to_vec(),
        cni_args: args.args().map(str::to_string),
    })
}

type CniResult<T> = std::result::Result<T, rscni_plugin::error::Error>;

impl rscni_plugin::cni::Cni for Sluice {
    fn add(&self, args: rscni_plugin::types::Args) -> CniResult<CNIResult> {
        Ok(add(&call_of(&args)?)?)
    }
    fn del(&self, args: rscni_plugin::types::Args) -> CniResult<()> {
        Ok(del(&call_of(&args)?)?)
    }
    fn check(&self, args: rscni_plugin::types::Args) -> CniResult<()> {
        Ok(check(&call_of(&args)?)?)
    }
    fn status(&self, args: rscni_plugin::types::Args) -> CniResult<()> {
        Ok(status(&call_of(&args)?)?)
    }
    fn gc(&self, args: rscni_plugin::types::Args) -> CniResult<()> {
        let call = call_of(&args)?;
        let valid = call.netconf.valid_attachments.clone().unwrap_or_default();
        gc(&call, &valid)?;
        Ok(())
    }
}

/// The process: runs one command and returns the exit status.
pub fn main() -> i32 {
    let plugin = rscni_plugin::cni::Plugin::new(SpecVersion::CURRENT, supported_versions())
        .msg("sluice: the sluice CNI plugin (pods on sluiced over AF_XDP)");
    match plugin.run(&Sluice) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rscni_plugin::types::CNIResultWithVersion;

    fn call(version: &str) -> Call {
        let netconf: NetConf = serde_json::from_str(&format!(
            r#"{{"cniVersion":"{version}","name":"dpdk","type":"sluice","mode":"vhost-user"}}"#
        ))
        .unwrap();
        Call {
            conf: PluginConf::from_netconf(&netconf).unwrap(),
            netconf,
            container_id: "c0ffee".into(),
            ifname: "net1".into(),
            netns: Some("/var/run/netns/p".into()),
            cni_path: Vec::new(),
            cni_args: Some("K8S_POD_UID=u-1".into()),
        }
    }

    fn vhost_result(version: &str) -> Value {
        let c = call(version);
        let Mode::VhostUser(v) = &c.conf.mode else {
            panic!()
        };
        let place = vhost::plan(v, c.cni_args.as_deref(), "c0ffee", "net1", "sl0123").unwrap();
        let lease = Lease {
            ip: Ipv4Addr::new(10, 77, 1, 5),
            prefix_len: 24,
            ipam_record: json!({"type": "sluice"}),
            routes: Vec::new(),
            dns: None,
        };
        let gw = Ipv4Addr::new(10, 77, 1, 1);
        let r = build_vhost_result(
            &c,
            Path::new("/var/run/netns/p"),
            &place,
            "0a:58:0a:4d:01:05",
            1450,
            &lease,
            gw,
        );
        serde_json::to_value(CNIResultWithVersion::new(c.version(), r)).unwrap()
    }

    #[test]
    fn a_vhost_user_result_carries_the_socket_from_1_1_0() {
        let r = vhost_result("1.1.0");
        assert_eq!(
            r,
            json!({
                "cniVersion": "1.1.0",
                "interfaces": [{
                    "name": "net1",
                    "mac": "0a:58:0a:4d:01:05",
                    "mtu": 1450,
                    "sandbox": "/var/run/netns/p",
                    "socketPath": "/var/lib/kubelet/pods/u-1/volumes/kubernetes.io~empty-dir/sluice-vhost/net1.sock"
                }],
                "ips": [{"interface": 0, "address": "10.77.1.5/24", "gateway": "10.77.1.1"}],
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.77.1.1"}]
            })
        );
    }

    #[test]
    fn before_1_1_0_the_result_has_no_socket_path_or_mtu() {
        for v in ["1.0.0", "0.4.0", "0.3.1"] {
            let r = vhost_result(v);
            let iface = &r["interfaces"][0];
            assert_eq!(iface["name"], "net1", "{v}");
            assert_eq!(iface["mac"], "0a:58:0a:4d:01:05", "{v}");
            assert!(iface.get("socketPath").is_none(), "{v}: {r}");
            assert!(iface.get("mtu").is_none(), "{v}: {r}");
            assert_eq!(r["ips"][0]["address"], "10.77.1.5/24", "{v}");
        }
    }

    #[test]
    fn a_prev_result_is_kept_and_the_new_interface_indexed_after_it() {
        let mut c = call("1.1.0");
        c.netconf.prev_result = Some(
            serde_json::from_value(json!({
                "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/p"}],
                "ips": [{"interface": 0, "address": "10.0.0.2/24"}]
            }))
            .unwrap(),
        );
        let Mode::VhostUser(v) = &c.conf.mode else {
            panic!()
        };
        let place = vhost::plan(v, None, "c0ffee", "net1", "sl0123").unwrap();
        let lease = Lease {
            ip: Ipv4Addr::new(10, 77, 1, 6),
            prefix_len: 24,
            ipam_record: json!({"type": "sluice"}),
            routes: Vec::new(),
            dns: None,
        };
        let r = build_vhost_result(
            &c,
            Path::new("/var/run/netns/p"),
            &place,
            "0a:58:0a:4d:01:06",
            1450,
            &lease,
            Ipv4Addr::new(10, 77, 1, 1),
        );
        assert_eq!(r.interfaces.len(), 2);
        assert_eq!(
            r.interfaces[1].socket_path.as_deref(),
            Some("/run/sluice/vhost/c0ffee/net1.sock")
        );
        assert_eq!(r.ips[1].interface, Some(1));
    }
}
