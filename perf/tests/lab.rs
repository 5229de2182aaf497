//! Privileged tier for `sluice-lab`: two nodes, each running sluiced, pods
//! across nodes in every mode; the underlay, captured and decoded by
//! tshark, carries what the mode says; `down` leaves nothing behind.
//!
//! ```text
//! cargo build -p sluice-dataplane --bins
//! cargo test -p sluice-perf --features privileged-tests --test lab -- --test-threads=1
//! ```

use sluice_perf::lab::{self, LabSpec, Mode};
use std::process::{Command, Stdio};
use std::time::Duration;

fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("");
    assert_eq!(uid, "0", "the privileged tier needs root (network namespaces, XDP, AF_XDP): run `sudo scripts/test.sh`");
}

struct Guard(String);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = lab::down(&self.0);
    }
}

fn ping(from: &str, to: &str) -> bool {
    Command::new("ip")
        .args([
            "netns", "exec", from, "ping", "-c", "3", "-i", "0.2", "-W", "2", to,
        ])
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success()
}

fn tcp(from: &str, to_ns: &str, to_ip: &str, port: u16, bytes: usize) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("recv");
    let mut server = Command::new("ip")
        .args([
            "netns",
            "exec",
            to_ns,
            "timeout",
            "30",
            "nc",
            "-l",
            "-p",
            &port.to_string(),
        ])
        .stdout(std::fs::File::create(&out).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let ok = Command::new("sh").args(["-c", &format!("head -c {bytes} /dev/urandom | ip netns exec {from} timeout 30 nc -N {to_ip} {port}")]).status().unwrap();
    let _ = server.wait();
    assert!(ok.success());
    std::fs::metadata(&out).unwrap().len()
}

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

/// Two sluiced nodes in `mode`, `workers` workers each.
fn up(name: &str, mode: Mode, workers: u8) -> lab::LabState {
    lab::up(
        &LabSpec {
            name: name.into(),
            nodes: 2,
            mode,
            sluiced: true,
            kernel_nodes: vec![],
            rx_mode: None,
            workers,
            store: Default::default(),
            direct_routing: false,
        },
        &mut |_| {},
    )
    .expect("lab up")
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
    let r = lab::up(
        &LabSpec {
            name: "tbad".into(),
            nodes: 2,
            mode: Mode::Vxlan,
            sluiced: true,
            kernel_nodes: vec![],
            rx_mode: None,
            workers: 1,
            store: Default::default(),
            direct_routing: false,
        },
        &mut |_| {},
    );
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
            name: name.into(),
            nodes: 2,
            mode,
            sluiced: true,
            kernel_nodes: vec![2],
            rx_mode: None,
            workers: 1,
            store: Default::default(),
            direct_routing: false,
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
