//! Privileged tier for `sluice-lab`: two nodes, each running sluiced, pods
//! across nodes in every mode; the underlay, captured and decoded by
//! tshark, carries what the mode says; `down` leaves nothing behind.
//!
//! ```text
//! cargo build -p sluice-dataplane --bins
//! cargo test -p sluice-perf --features privileged-tests --test lab -- --test-threads=1
//! ```

mod support;

use sluice_perf::lab::{self, LabSpec, Mode};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{eventually, ping, pinger, require_root, tcp, up, Guard};

fn udp(from: &str, to_ns: &str, to_ip: &str, port: u16) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("recv");
    let mut server = Command::new("ip")
        .args([
            "netns",
            "exec",
            to_ns,
            "timeout",
            "3",
            "nc",
            "-u",
            "-l",
            "-p",
            &port.to_string(),
        ])
        .stdout(std::fs::File::create(&out).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let _ = Command::new("sh")
        .args([
            "-c",
            &format!("echo sluice-udp | ip netns exec {from} timeout 2 nc -u -w 1 {to_ip} {port}"),
        ])
        .status();
    let _ = server.wait();
    std::fs::read_to_string(&out).unwrap()
}

/// Captures `count` frames on the underlay port of node 1 while pinging.
fn capture(st: &lab::LabState, filter: &str, decode: &[&str], fields: &[&str]) -> Vec<Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ul.pcap");
    let ul = format!("{}-ul", st.name);
    let mut cap = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ul,
            "tshark",
            "-q",
            "-i",
            "n1",
            "-f",
            filter,
            "-c",
            "4",
            "-a",
            "duration:10",
            "-F",
            "pcap",
            "-w",
        ])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(ping(&st.nodes[0].pods[0].0, &st.nodes[1].pods[1].1));
    let _ = cap.wait();
    let mut cmd = Command::new("tshark");
    cmd.args(["-n", "-r"])
        .arg(&file)
        .args(["-o", "ip.check_checksum:TRUE"])
        .args(decode)
        .args(["-T", "fields", "-E", "separator=/t"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

fn across_nodes(mode: Mode, name: &str) {
    across_nodes_with(mode, name, 1)
}

fn across_nodes_with(mode: Mode, name: &str, workers: u8) {
    require_root();
    let _guard = Guard(name.to_string());
    let st = up(name, mode, workers);
    let (a, b) = (&st.nodes[0], &st.nodes[1]);
    assert!(
        ping(&a.pods[0].0, &b.pods[1].1),
        "{mode}: node 1 pod to node 2 pod"
    );
    assert!(ping(&b.pods[0].0, &a.pods[1].1), "{mode}: and back");
    assert_eq!(
        tcp(&a.pods[0].0, &b.pods[1].0, &b.pods[1].1, 5101, 4 << 20),
        4 << 20,
        "{mode}: TCP across"
    );
    assert_eq!(
        tcp(&b.pods[1].0, &a.pods[0].0, &a.pods[0].1, 5102, 4 << 20),
        4 << 20,
        "{mode}: TCP back"
    );
    assert_eq!(
        udp(&a.pods[1].0, &b.pods[0].0, &b.pods[0].1, 5103).trim(),
        "sluice-udp",
        "{mode}: UDP across"
    );
    assert_eq!(
        udp(&b.pods[0].0, &a.pods[1].0, &a.pods[1].1, 5104).trim(),
        "sluice-udp",
        "{mode}: UDP back"
    );
    let rows = match mode {
        Mode::Vxlan => capture(
            &st,
            "udp port 8472",
            &["-d", "udp.port==8472,vxlan"],
            &[
                "vxlan.vni",
                "ip.src",
                "ip.dst",
                "ip.checksum.status",
                "udp.dstport",
            ],
        ),
        Mode::Ipip => capture(
            &st,
            "ip proto 4",
            &[],
            &["ip.proto", "ip.src", "ip.dst", "ip.checksum.status"],
        ),
        Mode::HostGw => capture(
            &st,
            "icmp",
            &[],
            &["eth.dst", "ip.src", "ip.dst", "ip.checksum.status"],
        ),
    };
    assert!(!rows.is_empty(), "{mode}: nothing captured on the underlay");
    let to_b = rows
        .iter()
        .find(|r| r.iter().any(|c| c.contains(&b.pods[1].1)))
        .unwrap_or_else(|| panic!("{mode}: no frame towards node 2's pod: {rows:?}"));
    match mode {
        Mode::Vxlan => {
            assert_eq!(to_b[0], "1", "VNI 1");
            assert_eq!(to_b[1], format!("{},{}", a.ip, a.pods[0].1));
            assert_eq!(to_b[2], format!("{},{}", b.ip, b.pods[1].1));
            assert_eq!(to_b[3], "1,1");
            assert!(to_b[4].starts_with("8472"));
        }
        Mode::Ipip => {
            assert_eq!(to_b[0], "4,1");
            assert_eq!(to_b[1], format!("{},{}", a.ip, a.pods[0].1));
            assert_eq!(to_b[3], "1,1");
        }
        Mode::HostGw => {
            assert_eq!(to_b[0], b.uplink_mac, "the next hop's MAC");
            assert_eq!(to_b[1], a.pods[0].1);
            assert_eq!(to_b[2], b.pods[1].1);
            assert_eq!(to_b[3], "1");
        }
    }
    let pids: Vec<u32> = st.nodes.iter().filter_map(|n| n.sluiced_pid).collect();
    lab::down(name).expect("lab down");
    let list = lab::run(&["ip", "netns", "list"]).unwrap();
    assert!(
        !list.lines().any(|l| l.starts_with(&format!("{name}-"))),
        "namespaces left: {list}"
    );
    for pid in pids {
        assert!(
            !lab::pid_alive(pid) && !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "sluiced {pid} still running or not reaped"
        );
    }
    assert!(lab::load(name).is_none(), "state file removed");
}

#[test]
fn vxlan_across_nodes() {
    across_nodes(Mode::Vxlan, "tvx");
}

/// Two workers per node, uplink and pod veths with two queues each: flows
/// land on either queue, and each worker serves its own.
#[test]
fn vxlan_across_nodes_with_two_workers_and_multi_queue_veths() {
    across_nodes_with(Mode::Vxlan, "tv2", 2);
}

#[test]
fn ipip_across_nodes() {
    across_nodes(Mode::Ipip, "tip");
}

#[test]
fn host_gw_across_nodes() {
    across_nodes(Mode::HostGw, "thg");
}

#[test]
fn down_cleans_up_after_an_interrupted_up() {
    require_root();
    // A lab whose sluiced cannot start: up fails and removes what it made.
    std::env::set_var("SLUICED", "/nonexistent/sluiced");
    let r = lab::up(&LabSpec::new("tbad", 2, Mode::Vxlan), &mut |_| {});
    std::env::remove_var("SLUICED");
    assert!(r.is_err());
    let list = lab::run(&["ip", "netns", "list"]).unwrap();
    assert!(
        !list.lines().any(|l| l.starts_with("tbad-")),
        "namespaces left after a failed up: {list}"
    );
    assert!(lab::load("tbad").is_none());
}

/// Interop with kernel flannel: node 1 runs sluiced, node 2 is configured
/// exactly as flanneld configures a kernel node.
fn interop(mode: Mode, name: &str) {
    require_root();
    let _guard = Guard(name.to_string());
    let st = lab::up(
        &LabSpec {
            kernel_nodes: vec![2],
            ..LabSpec::new(name, 2, mode)
        },
        &mut |_| {},
    )
    .expect("lab up");
    let (s, k) = (&st.nodes[0], &st.nodes[1]);
    assert!(!s.kernel && k.kernel);
    for (from, to) in [
        (&s.pods[0], &k.pods[1]),
        (&k.pods[0], &s.pods[1]),
        (&s.pods[1], &k.pods[0]),
    ] {
        assert!(ping(&from.0, &to.1), "{mode}: {} pings {}", from.0, to.1);
    }
    assert_eq!(
        tcp(&s.pods[0].0, &k.pods[1].0, &k.pods[1].1, 5201, 4 << 20),
        4 << 20,
        "{mode}: TCP sluice -> kernel"
    );
    assert_eq!(
        tcp(&k.pods[0].0, &s.pods[1].0, &s.pods[1].1, 5202, 4 << 20),
        4 << 20,
        "{mode}: TCP kernel -> sluice"
    );
    lab::down(name).unwrap();
}

#[test]
fn interop_with_kernel_flannel_vxlan() {
    interop(Mode::Vxlan, "tfv");
}

#[test]
fn interop_with_kernel_flannel_host_gw() {
    interop(Mode::HostGw, "tfh");
}

#[test]
fn path_mtu_over_vxlan_and_the_node_through_its_host_port() {
    require_root();
    let name = "tmtu";
    let _guard = Guard(name.to_string());
    let st = up(name, Mode::Vxlan, 1);
    let (a, b) = (&st.nodes[0], &st.nodes[1]);
    // From node 1's kernel (1500-byte host port) to a pod on node 2: a
    // 1500-byte ping with DF gets "fragmentation needed", MTU 1450, from the switch.
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &a.ns,
            "ping",
            "-M",
            "do",
            "-s",
            "1472",
            "-c",
            "2",
            "-W",
            "2",
            &b.pods[0].1,
        ])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("mtu = 1450") || text.contains("mtu=1450"),
        "ping reports the next-hop MTU: {text}"
    );
    // Path MTU discovery then lets a bulk transfer through.
    assert_eq!(
        tcp(&a.ns, &b.pods[0].0, &b.pods[0].1, 5301, 8 << 20),
        8 << 20,
        "bulk TCP from the node to a remote pod"
    );
    // A pod reaches its own node's host and back through the host port.
    assert!(ping(&a.pods[0].0, &format!("10.77.{}.1", a.index)));
    assert_eq!(
        tcp(
            &a.pods[1].0,
            &a.ns,
            &format!("10.77.{}.1", a.index),
            5302,
            1 << 20
        ),
        1 << 20,
        "pod to its node over TCP"
    );
    lab::down(name).unwrap();
}

/// `node.set` reaches the kernel, not only the tables: moving every node's
/// VXLAN port to 4789 re-steers each uplink's XDP program, and pods keep
/// talking, now on the new port (tshark on the underlay).
#[test]
fn changing_the_vxlan_port_at_runtime_reaches_the_xdp_program() {
    require_root();
    let name = "tvp";
    let _guard = Guard(name.to_string());
    let st = up(name, Mode::Vxlan, 1);
    let (a, b) = (&st.nodes[0], &st.nodes[1]);
    assert!(ping(&a.pods[0].0, &b.pods[1].1), "on 8472 first");
    for n in &st.nodes {
        let c = sluice_api::Client::new(&n.api_socket);
        let mut tunnel = c.node().expect("node.get").tunnel;
        tunnel.vxlan_port = 4789;
        c.set_node(None, Some(tunnel)).expect("node.set");
        assert_eq!(c.node().unwrap().tunnel.vxlan_port, 4789);
    }
    let rows = capture(
        &st,
        "udp port 4789",
        &["-d", "udp.port==4789,vxlan"],
        &["vxlan.vni", "udp.dstport"],
    );
    assert!(
        rows.iter().any(|r| r[0] == "1" && r[1].starts_with("4789")),
        "VXLAN on 4789 across the underlay, and the ping inside it got through: {rows:?}"
    );
    assert!(ping(&b.pods[1].0, &a.pods[0].1), "and back");
}

// ---- The nodes' agents: leases, outages, restarts -------------------------

use sluice_perf::cluster::{self, StoreKind};

fn up_with(name: &str, mode: Mode, store: StoreKind, kernel_nodes: Vec<u8>) -> lab::LabState {
    lab::up(
        &LabSpec {
            kernel_nodes,
            store,
            ..LabSpec::new(name, 2, mode)
        },
        &mut |_| {},
    )
    .expect("lab up")
}

fn routes_of(n: &lab::NodeState) -> Vec<sluice_api::RouteConfig> {
    sluice_api::Client::new(&n.api_socket)
        .routes()
        .unwrap()
        .routes
}

fn route_to(n: &lab::NodeState, prefix: &str) -> Option<sluice_api::RouteConfig> {
    routes_of(n)
        .into_iter()
        .find(|r| r.prefix.to_string() == prefix)
}

fn generation(n: &lab::NodeState) -> u32 {
    sluice_api::Client::new(&n.api_socket)
        .node()
        .unwrap()
        .generation
}

fn agent_log(st: &lab::LabState, i: usize) -> String {
    std::fs::read_to_string(lab::state_dir().join(format!("{}-agent.log", st.nodes[i].ns)))
        .unwrap_or_default()
}

fn agent_alive(st: &lab::LabState, i: usize) -> bool {
    st.nodes[i].agent_pid.is_some_and(lab::pid_alive)
}

const SUBNETS: &str = "/coreos.com/network/subnets";

/// `GET path` from `addr`: the status code and the body.
fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(c, "GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).unwrap();
    let code = text
        .split_whitespace()
        .nth(1)
        .unwrap_or("0")
        .parse()
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (code, body)
}

#[test]
fn vxlan_across_nodes_programmed_by_agents_over_etcd() {
    require_root();
    let name = "tae";
    let _guard = Guard(name.to_string());
    let st = up_with(name, Mode::Vxlan, StoreKind::Etcd, vec![]);
    let (a, b) = (&st.nodes[0], &st.nodes[1]);
    assert!(ping(&a.pods[0].0, &b.pods[1].1), "node 1 pod to node 2 pod");
    assert_eq!(
        tcp(&b.pods[0].0, &a.pods[1].0, &a.pods[1].1, 5401, 4 << 20),
        4 << 20
    );
    // Each agent leased the subnet of its pods, as flanneld writes leases.
    let listed = cluster::leases(&st).unwrap();
    assert_eq!(listed.leases.len(), 2);
    for n in &st.nodes {
        let l = &listed.leases[&n.subnet.parse().unwrap()];
        assert_eq!(l.public_ip.to_string(), n.ip);
        assert_eq!(l.backend_type, "vxlan");
        assert_eq!(l.vxlan().unwrap().vtep_mac.to_string(), n.uplink_mac);
        assert_eq!(l.vxlan().unwrap().vni, 1);
    }
    // The subnet file, as flanneld writes it.
    let env = std::fs::read_to_string(cluster::subnet_file(&st, 0)).unwrap();
    assert_eq!(
        env,
        "FLANNEL_NETWORK=10.77.0.0/16\nFLANNEL_SUBNET=10.77.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"
    );
    // The agent's health and metrics.
    let (code, body) = http_get(a.agent_healthz.as_deref().unwrap(), "/readyz");
    assert_eq!(code, 200, "{body}");
    let state: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(state["phase"], "running");
    assert_eq!(state["subnet"], "10.77.1.0/24");
    assert_eq!(
        (state["store_up"].as_bool(), state["sluiced_up"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(
        (state["leases"].as_u64(), state["routes"].as_u64()),
        (Some(1), Some(1))
    );
    let (code, metrics) = http_get(a.agent_healthz.as_deref().unwrap(), "/metrics");
    assert_eq!(code, 200);
    for line in [
        "sluice_agent_leases 1",
        "sluice_agent_routes 1",
        "sluice_agent_store_up 1",
        "sluice_agent_sluiced_up 1",
        "sluice_agent_full_syncs_total 1",
        "sluice_agent_route_changes_total{op=\"upsert\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
    // A route per other node, from its lease.
    let r = route_to(a, &b.subnet).unwrap();
    assert_eq!(
        (r.via, r.node.map(|n| n.to_string())),
        (sluice_api::Via::Vxlan, Some(b.ip.clone()))
    );
    assert_eq!(
        r.vtep_mac.map(|m| m.to_string()),
        Some(b.uplink_mac.clone())
    );
    lab::down(name).unwrap();
    assert!(
        !lab::state_dir().join(format!("{name}-etcd")).exists(),
        "etcd's data removed"
    );
}

#[test]
fn leases_written_as_flanneld_writes_them_are_programmed_and_bad_ones_are_not() {
    require_root();
    let name = "tal";
    let _guard = Guard(name.to_string());
    let st = up_with(name, Mode::Vxlan, StoreKind::Etcd, vec![]);
    let (a, b) = (&st.nodes[0], &st.nodes[1]);
    // Byte for byte what flanneld writes for a VXLAN node.
    let flanneld = br#"{"PublicIP":"192.168.77.9","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#;
    cluster::put_raw(
        &st,
        &format!("{SUBNETS}/10.77.9.0-24"),
        flanneld,
        Some(Duration::from_secs(600)),
    )
    .unwrap();
    for n in [a, b] {
        eventually(5, "the hand-written lease's route", || {
            route_to(n, "10.77.9.0/24").is_some()
        });
        let r = route_to(n, "10.77.9.0/24").unwrap();
        assert_eq!(r.via, sluice_api::Via::Vxlan);
        assert_eq!(r.node.unwrap().to_string(), "192.168.77.9");
        assert_eq!(r.vtep_mac.unwrap().to_string(), "c6:d2:32:6f:8f:44");
    }
    let before_a = routes_of(a);
    // Malformed values, a key that is not a lease, another backend's lease:
    // logged, counted, no route, nothing else touched, the agents run on.
    cluster::put_raw(
        &st,
        &format!("{SUBNETS}/10.77.10.0-24"),
        b"{\"PublicIP\":",
        None,
    )
    .unwrap();
    cluster::put_raw(
        &st,
        &format!("{SUBNETS}/10.77.11.0-24"),
        br#"{"PublicIP":"192.168.77.11","BackendType":"vxlan"}"#,
        None,
    )
    .unwrap();
    cluster::put_raw(&st, &format!("{SUBNETS}/not-a-subnet"), b"{}", None).unwrap();
    cluster::put_raw(
        &st,
        &format!("{SUBNETS}/10.77.12.0-24"),
        br#"{"PublicIP":"192.168.77.12","PublicIPv6":null,"BackendType":"host-gw"}"#,
        None,
    )
    .unwrap();
    // A valid change after them still arrives: the agents kept going.
    cluster::put_raw(&st, &format!("{SUBNETS}/10.77.13.0-24"), br#"{"PublicIP":"192.168.77.13","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:13"}}"#, None).unwrap();
    eventually(5, "the valid lease after the bad ones", || {
        route_to(a, "10.77.13.0/24").is_some()
    });
    let mut after: Vec<_> = routes_of(a)
        .into_iter()
        .filter(|r| r.prefix.to_string() != "10.77.13.0/24")
        .collect();
    after.sort_by_key(|r| r.prefix);
    let mut before = before_a.clone();
    before.sort_by_key(|r| r.prefix);
    assert_eq!(after, before, "the bad leases changed nothing");
    assert!(agent_alive(&st, 0) && agent_alive(&st, 1));
    let log = agent_log(&st, 0);
    assert!(
        log.contains("10.77.10.0-24") && log.contains("lease value"),
        "{log}"
    );
    assert!(log.contains("vxlan lease without BackendData"), "{log}");
    assert!(log.contains("not a lease key"), "{log}");
    assert!(log.contains("backend `host-gw`"), "{log}");
    // A lease that goes (deleted, or expired) takes its route with it.
    cluster::delete(&st, &format!("{SUBNETS}/10.77.9.0-24")).unwrap();
    cluster::put_raw(&st, &format!("{SUBNETS}/10.77.14.0-24"), br#"{"PublicIP":"192.168.77.14","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:14"}}"#, Some(Duration::from_secs(3))).unwrap();
    for n in [a, b] {
        eventually(5, "the deleted lease's route gone", || {
            route_to(n, "10.77.9.0/24").is_none()
        });
        eventually(5, "the short lease's route", || {
            route_to(n, "10.77.14.0/24").is_some()
        });
    }
    for n in [a, b] {
        eventually(15, "the expired lease's route gone", || {
            route_to(n, "10.77.14.0/24").is_none()
        });
    }
    assert!(
        ping(&a.pods[0].0, &b.pods[1].1),
        "pods still reach each other"
    );
    lab::down(name).unwrap();
}

#[test]
fn a_host_gw_lease_written_by_hand_is_programmed_on_link_only() {
    require_root();
    let name = "tah";
    let _guard = Guard(name.to_string());
    let st = up_with(name, Mode::HostGw, StoreKind::Embedded, vec![]);
    let a = &st.nodes[0];
    let r = route_to(a, &st.nodes[1].subnet).unwrap();
    assert_eq!(r.via, sluice_api::Via::HostGw);
    cluster::put_raw(
        &st,
        &format!("{SUBNETS}/10.77.9.0-24"),
        br#"{"PublicIP":"192.168.77.9","PublicIPv6":null,"BackendType":"host-gw"}"#,
        None,
    )
    .unwrap();
    cluster::put_raw(
        &st,
        &format!("{SUBNETS}/10.77.10.0-24"),
        br#"{"PublicIP":"192.168.99.10","PublicIPv6":null,"BackendType":"host-gw"}"#,
        None,
    )
    .unwrap();
    eventually(5, "the host-gw route", || {
        route_to(a, "10.77.9.0/24").is_some()
    });
    let r = route_to(a, "10.77.9.0/24").unwrap();
    assert_eq!(
        (r.via, r.node.unwrap().to_string()),
        (sluice_api::Via::HostGw, "192.168.77.9".to_string())
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        route_to(a, "10.77.10.0/24").is_none(),
        "a node off the uplink subnet gets no host-gw route"
    );
    assert!(agent_log(&st, 0).contains("host-gw needs 192.168.99.10 on this node's uplink subnet"));
    lab::down(name).unwrap();
}

#[test]
fn an_etcd_outage_keeps_routes_and_the_agent_resyncs_after_it() {
    require_root();
    let name = "tao";
    let _guard = Guard(name.to_string());
    let mut st = up_with(name, Mode::Vxlan, StoreKind::Etcd, vec![]);
    let before = routes_of(&st.nodes[0]);
    let gen = generation(&st.nodes[0]);
    // Traffic across the nodes throughout the outage and etcd's return.
    let pinger = pinger(&st.nodes[0].pods[0].0, &st.nodes[1].pods[1].1, 600);
    std::thread::sleep(Duration::from_millis(500));
    cluster::stop_etcd(&mut st);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        routes_of(&st.nodes[0]),
        before,
        "routes kept through the outage"
    );
    assert_eq!(generation(&st.nodes[0]), gen, "nothing changed in sluiced");
    assert!(
        ping(&st.nodes[0].pods[0].0, &st.nodes[1].pods[1].1),
        "traffic flows without etcd"
    );
    assert!(agent_alive(&st, 0) && agent_alive(&st, 1));
    cluster::start_etcd(&mut st).unwrap();
    let out = pinger.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("600 packets transmitted, 600 received"),
        "every packet through the outage and etcd's return: {text}"
    );
    assert_eq!(generation(&st.nodes[0]), gen, "nothing changed in sluiced");
    cluster::put_raw(&st, &format!("{SUBNETS}/10.77.9.0-24"), br#"{"PublicIP":"192.168.77.9","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:09"}}"#, None).unwrap();
    for i in 0..2 {
        eventually(20, "the agent back on etcd", || {
            route_to(&st.nodes[i], "10.77.9.0/24").is_some()
        });
        assert!(
            agent_log(&st, i).contains("watch resumed"),
            "{}",
            agent_log(&st, i)
        );
    }
    lab::down(name).unwrap();
}

#[test]
fn a_compacted_watch_makes_the_agent_list_again() {
    require_root();
    let name = "tac";
    let _guard = Guard(name.to_string());
    let st = up_with(name, Mode::Vxlan, StoreKind::Embedded, vec![]);
    let pid = st.nodes[0].agent_pid.unwrap();
    // Freeze node 1's agent, change and compact behind its back.
    lab::run(&["kill", "-STOP", &pid.to_string()]).unwrap();
    let lease = |ip: u8| {
        format!(
            r#"{{"PublicIP":"192.168.77.{ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"02:00:00:00:00:{ip:02x}"}}}}"#
        )
    };
    cluster::put_raw(
        &st,
        &format!("{SUBNETS}/10.77.9.0-24"),
        lease(9).as_bytes(),
        None,
    )
    .unwrap();
    cluster::put_raw(
        &st,
        &format!("{SUBNETS}/10.77.10.0-24"),
        lease(10).as_bytes(),
        None,
    )
    .unwrap();
    cluster::delete(&st, &format!("{SUBNETS}/10.77.9.0-24")).unwrap();
    cluster::compact(&st).unwrap();
    lab::run(&["kill", "-CONT", &pid.to_string()]).unwrap();
    eventually(10, "the change seen through a new list", || {
        route_to(&st.nodes[0], "10.77.10.0/24").is_some()
    });
    assert!(route_to(&st.nodes[0], "10.77.9.0/24").is_none());
    let log = agent_log(&st, 0);
    assert!(
        log.contains("compacted") && log.contains("listed the leases again"),
        "{log}"
    );
    lab::down(name).unwrap();
}

#[test]
fn agents_killed_during_traffic_lose_nothing_and_change_no_route() {
    require_root();
    let name = "tak";
    let _guard = Guard(name.to_string());
    let mut st = up_with(name, Mode::Vxlan, StoreKind::Embedded, vec![]);
    let before: Vec<_> = st.nodes.iter().map(routes_of).collect();
    let gens: Vec<u32> = st.nodes.iter().map(generation).collect();
    let pinger = pinger(&st.nodes[0].pods[0].0, &st.nodes[1].pods[1].1, 400);
    std::thread::sleep(Duration::from_millis(800));
    for i in 0..2 {
        cluster::stop_agent(&mut st, i, true);
    }
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..2 {
        cluster::start_agent(&mut st, i).unwrap();
    }
    let out = pinger.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("400 packets transmitted, 400 received"),
        "every packet through the restart: {text}"
    );
    // Each new agent synced in full and changed nothing.
    for i in 0..2 {
        eventually(10, "the new agent's full sync", || {
            agent_log(&st, i).matches("full sync with sluiced").count() >= 2
        });
        assert!(
            agent_log(&st, i).contains("reusing this node's lease"),
            "{}",
            agent_log(&st, i)
        );
        assert_eq!(
            routes_of(&st.nodes[i]),
            before[i],
            "node {}: routes unchanged",
            i + 1
        );
        assert_eq!(
            generation(&st.nodes[i]),
            gens[i],
            "node {}: no table change at all",
            i + 1
        );
    }
    let listed = cluster::leases(&st).unwrap();
    assert_eq!(listed.leases.len(), 2, "same two leases");
    lab::down(name).unwrap();
}

#[test]
fn a_restarted_sluiced_is_programmed_again_by_its_agent() {
    require_root();
    let name = "tar";
    let _guard = Guard(name.to_string());
    let mut st = up_with(name, Mode::Ipip, StoreKind::Embedded, vec![]);
    let before = routes_of(&st.nodes[0]);
    // Without its saved tables, the new sluiced has only its file's
    // configuration: the agent brings the rest.
    lab::stop_sluiced(&mut st, 0, false);
    std::fs::remove_file(lab::saved_tables_path(&st, 0)).expect("sluiced saved its tables");
    lab::start_sluiced_again(&mut st, 0).unwrap();
    eventually(10, "routes back in the new sluiced", || {
        routes_of(&st.nodes[0]) == before
    });
    eventually(10, "traffic across again", || {
        ping(&st.nodes[0].pods[0].0, &st.nodes[1].pods[1].1)
    });
    assert!(agent_log(&st, 0).contains("sluiced restarted or reloaded"));
    lab::down(name).unwrap();
}

/// `(unix time, icmp_seq)` of each reply `ping -D` printed.
fn replies(text: &str) -> Vec<(f64, u64)> {
    text.lines()
        .filter_map(|l| {
            let t = l.strip_prefix('[')?.split(']').next()?.parse().ok()?;
            let seq = l
                .split("icmp_seq=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()?;
            Some((t, seq))
        })
        .collect()
}

/// sluiced SIGKILLed during traffic, with both agents stopped: the new
/// sluiced forwards across the nodes with the tables it saved and to its
/// pods from their records, with no call from the agent or the runtime.
/// The gap (last reply before the kill to the first after, and from the new
/// process's start to that reply) and the pings lost are printed, not
/// asserted. The agents, started again, change no route.
#[test]
fn a_sluiced_killed_during_traffic_forwards_again_from_its_saved_tables_without_the_agent() {
    require_root();
    let name = "tsk";
    let _guard = Guard(name.to_string());
    let mut st = up_with(name, Mode::Vxlan, StoreKind::Embedded, vec![]);
    for i in 0..2 {
        cluster::stop_agent(&mut st, i, false);
    }
    let before = routes_of(&st.nodes[0]);
    assert!(
        before.iter().any(|r| r.via == sluice_api::Via::Vxlan),
        "{before:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let across = ping_d(&st.nodes[0].pods[0].0, &st.nodes[1].pods[1].1, 500);
    let local = ping_d(&st.nodes[0].pods[1].0, &st.nodes[0].pods[0].1, 500);
    std::thread::sleep(Duration::from_millis(1500));
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    let killed = now();
    lab::stop_sluiced(&mut st, 0, true);
    let spawned = now();
    lab::start_sluiced_again(&mut st, 0).unwrap();
    for (what, child) in [("across the nodes", across), ("on node 1", local)] {
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let r = replies(&text);
        // The outage: the longest time between two replies.
        let (i, _) = r
            .windows(2)
            .enumerate()
            .max_by(|a, b| (a.1[1].0 - a.1[0].0).total_cmp(&(b.1[1].0 - b.1[0].0)))
            .expect("replies");
        let ((t0, s0), (t1, s1)) = (r[i], r[i + 1]);
        eprintln!(
            "{what}: {} of 500 pings answered; the longest gap {:.0} ms ({} pings lost in it), \
             from {:.0} ms before the SIGKILL; forwarding again {:.0} ms after the new sluiced \
             was spawned ({:.0} ms after the kill)",
            r.len(),
            (t1 - t0) * 1e3,
            s1 - s0 - 1,
            (killed - t0) * 1e3,
            (t1 - spawned) * 1e3,
            (t1 - killed) * 1e3,
        );
        assert!(t1 > killed, "{what}: the outage is the restart's: {text}");
        assert!(
            r.last().is_some_and(|(_, s)| *s >= 490),
            "{what}: forwarding again to the end: {text}"
        );
    }
    assert_eq!(
        routes_of(&st.nodes[0]),
        before,
        "the saved routes, no agent"
    );
    let generation0 = generation(&st.nodes[0]);
    cluster::start_agent(&mut st, 0).unwrap();
    eventually(10, "the agent's full sync", || {
        agent_log(&st, 0).matches("full sync with sluiced").count() >= 2
    });
    assert_eq!(
        routes_of(&st.nodes[0]),
        before,
        "the agent changed no route"
    );
    assert_eq!(generation(&st.nodes[0]), generation0, "nor anything else");
    lab::down(name).unwrap();
}

/// `ping -D -i 0.01 -c count` from `from` to `to`, printing each reply.
fn ping_d(from: &str, to: &str, count: u32) -> std::process::Child {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            from,
            "ping",
            "-D",
            "-i",
            "0.01",
            "-W",
            "1",
            "-c",
            &count.to_string(),
            to,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The replies of a finished `ping_d`, and the longest time between two
/// (ms).
fn gap_of(child: std::process::Child) -> (Vec<(f64, u64)>, f64, String) {
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let r = replies(&text);
    let gap = r
        .windows(2)
        .map(|w| (w[1].0 - w[0].0) * 1e3)
        .fold(0.0, f64::max);
    (r, gap, text)
}

/// A new sluiced takes over the running one's ports during 10 ms pings
/// across the nodes and between two pods of the node (`sluicectl upgrade`
/// through the API): not one ping is lost, the routes and ports are the
/// same, and the new process serves the API on the same socket. Then a pod
/// is detached and attached again on the new process (a socket on the
/// handed-over UMEM), and the new process hands over again, losing
/// nothing either. Two workers, so two UMEMs and pools are handed over.
/// The longest gap between two replies is printed.
#[test]
fn sluiced_upgraded_during_traffic_loses_no_packet() {
    require_root();
    let name = "tup";
    let _guard = Guard(name.to_string());
    // Two workers: each hands over its own UMEM, pool and sockets.
    let mut st = up(name, Mode::Vxlan, 2);
    let mut before = routes_of(&st.nodes[0]);
    let ports_of = |n: &lab::NodeState| -> Vec<String> {
        sluice_api::Client::new(&n.api_socket)
            .ports()
            .unwrap()
            .ports
            .into_iter()
            .map(|p| p.name)
            .collect()
    };
    let mut ports_before = ports_of(&st.nodes[0]);
    for round in 1..=2 {
        let count = 400;
        let across = ping_d(&st.nodes[0].pods[0].0, &st.nodes[1].pods[1].1, count);
        let local = ping_d(&st.nodes[0].pods[1].0, &st.nodes[0].pods[0].1, count);
        std::thread::sleep(Duration::from_millis(1500));
        let (old, new, took) = lab::upgrade_sluiced(&mut st, 0, None).unwrap();
        assert_ne!(old, new);
        assert!(!lab::pid_alive(old), "the old sluiced exited");
        for (what, child) in [("across the nodes", across), ("on node 1", local)] {
            let (r, gap, text) = gap_of(child);
            eprintln!(
                "upgrade {round}, {what}: {} of {count} pings answered, the longest gap between \
                 two replies {gap:.0} ms (pid {old} -> {new}, {} ms from the request to the new \
                 pid answering)",
                r.len(),
                took.as_millis()
            );
            if r.len() != count as usize {
                let log = std::fs::read_to_string(
                    lab::state_dir().join(format!("{}.log", st.nodes[0].ns)),
                )
                .unwrap_or_default();
                let seqs: Vec<u64> = r.iter().map(|x| x.1).collect();
                let lost: Vec<u64> = (1..=u64::from(count))
                    .filter(|s| !seqs.contains(s))
                    .collect();
                panic!("{what}: pings lost: {lost:?}\n{text}\nnode 1's sluiced:\n{log}");
            }
        }
        assert_eq!(routes_of(&st.nodes[0]), before, "the same routes");
        assert_eq!(ports_of(&st.nodes[0]), ports_before, "the same ports");
        let log = std::fs::read_to_string(lab::state_dir().join(format!("{}.log", st.nodes[0].ns)))
            .unwrap();
        assert!(log.contains("upgrade done"), "{log}");
        if round == 1 {
            // A pod detached and attached again on the new process: its
            // socket shares the UMEM the old one registered.
            sluice_perf::pods::detach(&st, 0, 1).unwrap();
            sluice_perf::pods::attach(&mut st, 0, 1).unwrap();
            eventually(5, "the re-attached pod answers", || {
                ping(&st.nodes[0].pods[1].0, &st.nodes[0].pods[0].1)
                    && ping(&st.nodes[0].pods[1].0, &st.nodes[1].pods[0].1)
            });
            // Its new address (IPAM) and port are what the next round keeps.
            before = routes_of(&st.nodes[0]);
            ports_before = ports_of(&st.nodes[0]);
        }
    }
    // Every frame is accounted for: none leaked by the handovers.
    let stats = sluice_api::Client::new(&st.nodes[0].api_socket)
        .stats()
        .unwrap();
    assert_eq!(
        stats.frames_unaccounted(),
        0,
        "every frame is free, retired or held by a port: {:?}",
        stats.workers
    );
    lab::down(name).unwrap();
}

#[test]
fn bad_config_and_unreachable_etcd_leave_routes_alone_and_the_agent_running() {
    require_root();
    let name = "tab";
    let _guard = Guard(name.to_string());
    let mut st = up_with(name, Mode::Vxlan, StoreKind::Etcd, vec![]);
    let before = routes_of(&st.nodes[0]);
    let gen = generation(&st.nodes[0]);
    // A config sluice cannot use: the restarted agent waits and says why.
    cluster::put_raw(
        &st,
        "/coreos.com/network/config",
        br#"{"Network":"10.77.0.0/16","Backend":{"Type":"udp"}}"#,
        None,
    )
    .unwrap();
    cluster::stop_agent(&mut st, 0, false);
    cluster::start_agent(&mut st, 0).unwrap();
    eventually(10, "the agent naming the bad field", || {
        agent_log(&st, 0).contains("Backend.Type: `udp` is not supported")
    });
    assert!(agent_alive(&st, 0));
    assert_eq!(routes_of(&st.nodes[0]), before);
    cluster::put_raw(
        &st,
        "/coreos.com/network/config",
        br#"{"Network":"10.77.0.0/16","Backend":{"Type":"vxlan"}}"#,
        None,
    )
    .unwrap();
    eventually(15, "the agent going on once the config is fixed", || {
        agent_log(&st, 0).matches("full sync with sluiced").count() >= 2
    });
    assert_eq!(routes_of(&st.nodes[0]), before);
    // etcd down when the agent starts: it keeps trying, routes stay.
    cluster::stop_etcd(&mut st);
    cluster::stop_agent(&mut st, 0, false);
    cluster::start_agent(&mut st, 0).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(agent_alive(&st, 0));
    assert!(
        agent_log(&st, 0).contains("connecting to etcd"),
        "{}",
        agent_log(&st, 0)
    );
    assert_eq!(routes_of(&st.nodes[0]), before);
    assert!(ping(&st.nodes[0].pods[0].0, &st.nodes[1].pods[1].1));
    cluster::start_etcd(&mut st).unwrap();
    eventually(20, "the agent once etcd is back", || {
        agent_log(&st, 0).matches("full sync with sluiced").count() >= 3
    });
    assert_eq!(routes_of(&st.nodes[0]), before);
    assert_eq!(generation(&st.nodes[0]), gen, "no route ever changed");
    lab::down(name).unwrap();
}

#[test]
fn direct_routing_uses_host_gw_on_the_subnet_and_vxlan_across_two_underlay_subnets() {
    require_root();
    let name = "tad";
    let _guard = Guard(name.to_string());
    let st = lab::up(
        &LabSpec {
            store: StoreKind::Embedded,
            direct_routing: true,
            ..LabSpec::new(name, 3, Mode::Vxlan)
        },
        &mut |_| {},
    )
    .expect("lab up");
    let (a, b, c) = (&st.nodes[0], &st.nodes[1], &st.nodes[2]);
    assert_eq!(
        (a.ip.as_str(), b.ip.as_str(), c.ip.as_str()),
        ("192.168.77.1", "192.168.77.2", "192.168.78.3")
    );
    let via = |from: &lab::NodeState, to: &lab::NodeState| route_to(from, &to.subnet).unwrap().via;
    use sluice_api::Via;
    assert_eq!(via(a, b), Via::HostGw, "same underlay subnet: host-gw");
    assert_eq!(via(b, a), Via::HostGw);
    assert_eq!(via(a, c), Via::Vxlan, "across the router: the tunnel");
    assert_eq!(via(c, a), Via::Vxlan);
    assert_eq!(via(c, b), Via::Vxlan);
    for (from, to) in [(a, b), (b, a), (a, c), (c, a), (b, c), (c, b)] {
        assert!(
            ping(&from.pods[0].0, &to.pods[1].1),
            "node {} pod to node {} pod",
            from.index,
            to.index
        );
    }
    assert_eq!(
        tcp(&a.pods[0].0, &c.pods[1].0, &c.pods[1].1, 5501, 4 << 20),
        4 << 20,
        "TCP across subnets"
    );
    assert_eq!(
        tcp(&b.pods[1].0, &a.pods[0].0, &a.pods[0].1, 5502, 4 << 20),
        4 << 20,
        "TCP within a subnet"
    );
    lab::down(name).unwrap();
}

#[test]
fn the_lease_is_renewed_before_it_expires() {
    require_root();
    let name = "taw";
    let _guard = Guard(name.to_string());
    let mut st = up_with(name, Mode::HostGw, StoreKind::Embedded, vec![]);
    // A 6 s lease (renewed at half its life, the margin being longer).
    cluster::stop_agent(&mut st, 0, false);
    cluster::start_agent_with(&mut st, 0, &["--lease-ttl", "6"]).unwrap();
    let key = format!("{SUBNETS}/10.77.1.0-24");
    let renewals = |st: &lab::LabState| {
        let (code, metrics) = http_get(st.nodes[0].agent_healthz.as_deref().unwrap(), "/metrics");
        assert_eq!(code, 200);
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("sluice_agent_lease_renewals_total "))
            .map(|v| v.parse::<u64>().unwrap())
            .unwrap_or(0)
    };
    // Three lifetimes later the lease is still there and the route with it.
    std::thread::sleep(Duration::from_secs(18));
    let listed = cluster::leases(&st).unwrap();
    assert!(
        listed.leases.contains_key(&"10.77.1.0/24".parse().unwrap()),
        "{key} still leased"
    );
    assert!(
        route_to(&st.nodes[1], &st.nodes[0].subnet).is_some(),
        "node 2 still routes to node 1"
    );
    let renewals = renewals(&st);
    assert!(renewals >= 4, "renewed every 3 s: {renewals} renewals");
    assert!(ping(&st.nodes[1].pods[0].0, &st.nodes[0].pods[1].1));
    lab::down(name).unwrap();
}

/// `Cpus_allowed_list` of `pid`'s thread named `name`.
fn thread_cpus(pid: u32, name: &str) -> Option<String> {
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let status = std::fs::read_to_string(t.ok()?.path().join("status")).ok()?;
        if status.lines().next() == Some(&format!("Name:\t{name}")) {
            return status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|v| v.trim().to_string());
        }
    }
    None
}

/// The bench's lab: a kernel lab keeps flannel's offloads and steers its
/// receive processing to the forwarding core; a sluice lab pins its
/// workers there; the underlay bridge does not call iptables.
#[test]
fn a_bench_lab_confines_forwarding_to_one_core_and_keeps_flannels_offloads() {
    require_root();
    let core = std::thread::available_parallelism().map_or(1, |n| n.get()) - 1;
    let name = "tplace";
    let _guard = Guard(name.to_string());
    let kernel = lab::up(
        &LabSpec {
            sluiced: false,
            kernel_nodes: vec![1, 2],
            forwarding_core: Some(core),
            ..LabSpec::new(name, 2, Mode::Vxlan)
        },
        &mut |_| {},
    )
    .expect("kernel lab up");
    let (n1, pod) = (&kernel.nodes[0], &kernel.nodes[0].pods[0]);
    let offloads = lab::ns_run(&pod.0, &["ethtool", "-k", "eth0"]).unwrap();
    for feature in [
        "tx-checksumming: on",
        "tcp-segmentation-offload: on",
        "generic-segmentation-offload: on",
    ] {
        assert!(
            offloads.lines().any(|l| l.starts_with(feature)),
            "a flannel pod keeps `{feature}`:\n{offloads}"
        );
    }
    let mask = format!("{:x}", 1u64 << core);
    for dev in ["pod0", "pod1", "eth0"] {
        let rps = lab::ns_run(
            &n1.ns,
            &["cat", &format!("/sys/class/net/{dev}/queues/rx-0/rps_cpus")],
        )
        .unwrap();
        assert_eq!(
            rps.trim().trim_start_matches(['0', ',']),
            mask,
            "{dev}'s receive steered to core {core}"
        );
    }
    let nf = lab::ns_run(
        &format!("{name}-ul"),
        &[
            "sh",
            "-c",
            "cat /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null || echo 0",
        ],
    )
    .unwrap();
    assert_eq!(nf.trim(), "0", "the underlay bridge does not call iptables");
    assert!(ping(&pod.0, &kernel.nodes[1].pods[0].1));
    lab::down(name).unwrap();

    let sluice = lab::up(
        &LabSpec {
            forwarding_core: Some(core),
            ..LabSpec::new(name, 2, Mode::Vxlan)
        },
        &mut |_| {},
    )
    .expect("sluice lab up");
    for n in &sluice.nodes {
        let pid = n.sluiced_pid.expect("sluiced runs");
        assert_eq!(
            thread_cpus(pid, "sluice-w0").as_deref(),
            Some(core.to_string().as_str()),
            "{}'s worker pinned to core {core}",
            n.ns
        );
    }
    assert!(ping(&sluice.nodes[0].pods[0].0, &sluice.nodes[1].pods[0].1));
    lab::down(name).unwrap();
}
