//! Privileged tier: the vhost-user pod that tests attach to sluiced's DPDK
//! backend ([`support::testpmd::Testpmd::pod`], `dpdk-testpmd` with
//! `net_virtio_user` in server mode, no hugepages), proved against a
//! second testpmd as the vhost-user client (`net_vhost`, `client=1`, what
//! sluiced opens): ARP and ping from a kernel answered by the pod's
//! `icmpecho`, traffic both ways, the client restarted and traffic back
//! without restarting the pod, and two queue pairs negotiated. Then the
//! whole path on a DPDK node: sluiced on DPDK, the CNI plugin attaching a
//! veth pod and a vhost-user pod that reach each other, across a SIGKILL.
//!
//! ```text
//! cargo test -p sluice-perf --features privileged-tests --test vhost_pod -- --test-threads=1
//! ```

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::testpmd::{parse_stats, Testpmd};
use support::{eventually, require_root, sh};

const POD_MAC: &str = "0a:58:0a:4d:01:05";
const LCORES: &str = "0,1";

/// A network namespace removed when the test ends.
struct Netns(String);
impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("slvh-{tag}-{}", std::process::id());
        sh(&["ip", "netns", "add", &name]);
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Netns(name)
    }
}
impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn wait_socket(p: &Path) {
    eventually(20, &format!("the pod creates {}", p.display()), || {
        p.exists()
    });
}

/// One counter of `show port xstats`.
fn xstat(text: &str, name: &str) -> u64 {
    let key = format!("{name}:");
    text.lines()
        .find_map(|l| l.trim().strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn stats_are_read_from_the_prompt() {
    let text = "\n  ######################## NIC statistics for port 0  ########################\n  RX-packets: 10         RX-missed: 0          RX-bytes:  812\n  RX-errors: 0\n  RX-nombuf:  0         \n  TX-packets: 4          TX-errors: 0          TX-bytes:  336\n";
    let s = parse_stats(text).unwrap();
    assert_eq!((s.rx, s.tx), (10, 4));
    assert!(parse_stats("testpmd> ").is_none());
}

#[test]
fn a_testpmd_pod_answers_arp_and_ping_from_a_kernel_through_a_vhost_client() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("net1.sock");
    let ns = Netns::new("ping");
    let mut pod = Testpmd::pod(&sock, POD_MAC, 1, "icmpecho", LCORES);
    wait_socket(&sock);
    // The switch's stand-in: vhost client, joined by `io` forwarding to a
    // TAP in the test's namespace.
    let mut sw = Testpmd::vhost_client(Some(&ns.0), &sock, 1, Some("slvhtap0"), "io", LCORES);
    sw.wait_ready(60);
    pod.wait_ready(60);
    sh(&[
        "ip",
        "-n",
        &ns.0,
        "addr",
        "add",
        "10.77.1.9/24",
        "dev",
        "slvhtap0",
    ]);
    sh(&["ip", "-n", &ns.0, "link", "set", "slvhtap0", "up"]);
    let ok = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.0,
            "ping",
            "-c",
            "5",
            "-i",
            "0.2",
            "-W",
            "2",
            "10.77.1.5",
        ])
        .status()
        .unwrap()
        .success();
    assert!(
        ok,
        "no answer from the pod; pod:\n{}\nswitch:\n{}",
        pod.log(),
        sw.log()
    );
    let neigh = sh(&["ip", "-n", &ns.0, "neigh", "show", "10.77.1.5"]);
    assert!(
        neigh.contains(POD_MAC),
        "the pod answered ARP with its MAC: {neigh}"
    );
    let s = pod.stats(0);
    assert!(s.rx >= 6 && s.tx >= 6, "ARP and 5 echoes each way: {s:?}");
    sw.stop();
    pod.stop();
}

#[test]
fn traffic_flows_both_ways_and_resumes_after_the_client_restarts() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("eth0.sock");
    let mut pod = Testpmd::pod(&sock, POD_MAC, 1, "rxonly", LCORES);
    wait_socket(&sock);
    let mut sw = Testpmd::vhost_client(None, &sock, 1, None, "txonly", LCORES);
    sw.wait_ready(60);
    pod.wait_ready(60);
    eventually(20, "the pod receives the client's packets", || {
        pod.stats(0).rx > 1000
    });
    // The other way: the pod sends, the client counts.
    pod.forward("txonly");
    sw.forward("rxonly");
    eventually(20, "the client receives the pod's packets", || {
        sw.stats(0).rx > 1000
    });
    // The client (sluiced) goes away and comes back; the pod stays.
    sw.stop();
    pod.forward("rxonly");
    let before = pod.stats(0).rx;
    std::thread::sleep(Duration::from_millis(500));
    assert!(pod.running(), "the pod outlives its client");
    let mut sw = Testpmd::vhost_client(None, &sock, 1, None, "txonly", LCORES);
    sw.wait_ready(60);
    eventually(
        20,
        "the pod receives again after the client's restart",
        || pod.stats(0).rx > before + 1000,
    );
    sw.stop();
    pod.stop();
}

#[test]
fn two_queue_pairs_are_negotiated_from_the_plugins_contract_file() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("eth0.sock");
    // What the CNI plugin writes beside the socket for a 2-worker sluiced.
    let contract = sluice_cni::vhost::Contract {
        socket: "eth0.sock".into(),
        role: "server".into(),
        mac: POD_MAC.into(),
        ip: "10.77.1.5/24".into(),
        gateway: "10.77.1.1".parse().unwrap(),
        mtu: 1450,
        queues: 2,
        routes: Vec::new(),
    };
    std::fs::write(
        dir.path().join("eth0.json"),
        serde_json::to_vec(&contract).unwrap(),
    )
    .unwrap();
    let mut pod = Testpmd::pod_from_contract(dir.path(), "eth0", "rxonly", LCORES);
    wait_socket(&sock);
    let mut sw = Testpmd::vhost_client(None, &sock, 2, None, "txonly", LCORES);
    sw.wait_ready(60);
    pod.wait_ready(60);
    eventually(30, "the client enables both queue pairs", || {
        sw.log().contains("qp idx: 3")
    });
    // The client sends on both queues; the pod receives on both.
    eventually(20, "the pod receives on its second queue", || {
        let x = pod.cmd("show port xstats 0");
        xstat(&x, "rx_q1_good_packets") > 100 && xstat(&x, "rx_q0_good_packets") > 100
    });
    sw.stop();
    pod.stop();
}

/// The whole path on a DPDK node: `sluiced` with `daemon.backend = "dpdk"`,
/// the `sluice` CNI plugin (through libcni) attaching a veth pod (served
/// by `net_af_xdp`) and, on a second network in vhost-user mode sharing the
/// same address pool, a vhost-user pod; the pod (testpmd) is started from
/// the plugin's contract file. The two pods reach each other; DEL takes
/// both ports back; a killed sluiced brings the vhost-user pod back from
/// its record without the pod restarting.
#[test]
fn the_plugin_attaches_a_vhost_user_pod_and_a_veth_pod_on_a_dpdk_node() {
    use serde_json::json;
    use sluice_cni::libcni::{Cni, ConfList, RuntimeConf};
    require_root();
    let node = Netns::new("dn");
    let pod_a = Netns::new("da");
    let pod_v = Netns::new("dv");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let api = dir.path().join("sluiced.sock");
    let subnet = dir.path().join("subnet.env");
    sluice_api::subnet_file::SubnetFile {
        network: "10.77.0.0/16".parse().unwrap(),
        subnet: "10.77.1.0/24".parse().unwrap(),
        mtu: 1450,
        ip_masq: false,
    }
    .write(&subnet)
    .unwrap();
    let cfg = dir.path().join("sluiced.toml");
    std::fs::write(
        &cfg,
        format!(
            "[daemon]\nbackend = \"dpdk\"\napi_socket = \"{}\"\nmetrics_address = \"127.0.0.1:0\"\npod_records = \"{}\"\n\
             [daemon.dpdk]\nno_huge = true\nmemory_mb = 256\nfile_prefix = \"{}-sluiced\"\nmbufs = 4095\n\n\
             [node]\npod_network = \"10.77.0.0/16\"\npod_subnet = \"10.77.1.0/24\"\nrouter_mac = \"02:00:00:00:00:01\"\n",
            api.display(),
            data.join("attachments").display(),
            node.0
        ),
    )
    .unwrap();
    let sluiced_bin = sluice_perf::cluster::binary("sluiced", "SLUICED");
    let start = || {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(dir.path().join("sluiced.log"))
            .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &node.0])
            .arg(&sluiced_bin)
            .arg("--config")
            .arg(&cfg)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("sluiced starts");
        let client = sluice_api::Client::new(&api);
        eventually(30, "sluiced serves its API", || client.node().is_ok());
        child
    };
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut sluiced = Kill(start());
    let plugins = sluice_perf::pods::plugin_dir().expect("the plugin is built");
    let cni = Cni::new(vec![plugins, "/usr/lib/cni".into()])
        .with_cache_dir(data.join("cache"))
        .with_host_netns(node.0.clone());
    let base = |name: &str, extra: serde_json::Value| {
        let mut plugin = json!({
            "type": "sluice",
            "sluicedSocket": api,
            "subnetFile": subnet,
            "dataDir": data,
            "ipam": {"type": "sluice", "pool": "sluice"},
        });
        for (k, v) in extra.as_object().unwrap() {
            plugin[k] = v.clone();
        }
        ConfList::parse(
            json!({"cniVersion": "1.1.0", "name": name, "plugins": [plugin]})
                .to_string()
                .as_bytes(),
        )
        .unwrap()
    };
    let veth_net = base("sluice", json!({}));
    let sockets = dir.path().join("vhost");
    let vhost_net = base(
        "sluice-vhost",
        json!({"mode": "vhost-user", "vhostUser": {"socketDir": sockets}}),
    );
    let rt = |cid: &str, ns: &str| {
        RuntimeConf::new(cid, Some(format!("/run/netns/{ns}").into()), "eth0")
    };
    let a = cni
        .add_network_list(&veth_net, &rt("pa", &pod_a.0))
        .expect("veth ADD");
    let v = cni
        .add_network_list(&vhost_net, &rt("pv", &pod_v.0))
        .expect("vhost-user ADD");
    let ip = |r: &serde_json::Value| {
        r["ips"][0]["address"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string()
    };
    let (ip_a, ip_v) = (ip(&a), ip(&v));
    assert_ne!(ip_a, ip_v, "one pool, two addresses");
    let sock = v["interfaces"][0]["socketPath"]
        .as_str()
        .expect("socketPath in the 1.1.0 result");
    assert!(sock.ends_with("pv/eth0.sock"), "{sock}");
    let mut pod = Testpmd::pod_from_contract(&sockets.join("pv"), "eth0", "icmpecho", LCORES);
    pod.wait_ready(60);
    eventually(20, "the veth pod reaches the vhost-user pod", || {
        support::ping(&pod_a.0, &ip_v)
    });

    // SIGKILL: the record brings the vhost-user port back; the pod stays.
    drop(sluiced);
    sluiced = Kill(start());
    eventually(
        20,
        "the vhost-user pod is reachable after sluiced's restart",
        || support::ping(&pod_a.0, &ip_v),
    );
    assert!(pod.running(), "the pod did not restart");

    cni.del_network_list(&vhost_net, &rt("pv", &pod_v.0))
        .expect("vhost-user DEL");
    cni.del_network_list(&veth_net, &rt("pa", &pod_a.0))
        .expect("veth DEL");
    let ports = sluice_api::Client::new(&api).ports().unwrap();
    assert!(
        ports
            .ports
            .iter()
            .all(|p| p.kind != sluice_api::PortKind::Pod),
        "DEL took both ports back: {ports:?}"
    );
    let _ = pod.stop();
    drop(sluiced);
}
