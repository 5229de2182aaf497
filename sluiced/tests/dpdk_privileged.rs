//! Privileged tier, DPDK backend: `sluiced` with `daemon.backend = "dpdk"`
//! (EAL with `--no-huge`) in network namespaces this test creates.
//!
//! - The uplink is DPDK's `net_af_packet` on a veth whose far end is a
//!   peer namespace set up as flanneld sets up a VXLAN node (the kernel's
//!   `flannel.1`); pods are veths served through DPDK's `net_af_xdp`.
//! - A vhost-user pod is `dpdk-testpmd` with `net_virtio_user` in server
//!   mode (the pod side), in `icmpecho` mode (it answers ARP and ping);
//!   sluiced connects to its socket as the client.
//! - tshark, on the peer's end of the underlay, checks what sluiced writes.
//! - The vhost-user pod's reconnect window across a restart of sluiced
//!   (SIGTERM, SIGKILL) is measured and printed (run with `--nocapture`).
//!
//! Needs root and Debian's DPDK (scripts/setup.sh). Run by scripts/test.sh:
//!
//! ```text
//! cargo test -p sluiced --features privileged-tests --test dpdk_privileged -- --test-threads=1
//! ```
//!
//! Namespaces and processes are removed by guards, also when an assertion
//! fails; processes are stopped by PID.

use sluice_api::client::Client;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn require_root() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        });
    assert_eq!(
        uid.as_deref(),
        Some("0"),
        "the privileged tier needs root (network namespaces, DPDK's runtime directory): run `sudo scripts/test.sh`"
    );
}

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "`{}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ns_sh(ns: &str, args: &[&str]) -> String {
    let mut v = vec!["ip", "netns", "exec", ns];
    v.extend_from_slice(args);
    sh(&v)
}

fn mac_of(ns: &str, dev: &str) -> String {
    ns_sh(ns, &["cat", &format!("/sys/class/net/{dev}/address")])
        .trim()
        .to_string()
}

fn ping(ns: &str, dst: &str, count: u32) -> bool {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "ping",
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-W",
            "2",
            dst,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Stops a child by its PID (SIGKILL) and reaps it.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const POD_A_MAC: &str = "02:00:00:00:01:02";
const VHOST_MAC: &str = "02:00:00:00:01:05";

/// A node (sluiced on DPDK), its uplink's kernel VXLAN peer and a veth pod.
struct Lab {
    node: String,
    peer: String,
    pod_a: String,
    dir: tempfile::TempDir,
    up0_mac: String,
    up1_mac: String,
    peer_vtep: String,
    sluiced: Option<Proc>,
    testpmd: Option<Proc>,
    tag: String,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.sluiced.take();
        self.testpmd.take();
        for ns in [&self.pod_a, &self.peer, &self.node] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

impl Lab {
    fn new(tag: &str) -> Lab {
        require_root();
        let p = format!("sld{}{tag}", std::process::id() % 100_000);
        let (node, peer, pod_a) = (format!("{p}-node"), format!("{p}-peer"), format!("{p}-pa"));
        for ns in [&node, &peer, &pod_a] {
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        let mut lab = Lab {
            node: node.clone(),
            peer: peer.clone(),
            pod_a: pod_a.clone(),
            dir: tempfile::tempdir().unwrap(),
            up0_mac: String::new(),
            up1_mac: String::new(),
            peer_vtep: String::new(),
            sluiced: None,
            testpmd: None,
            tag: p.clone(),
        };
        // The underlay. The node's kernel has no address on up0: DPDK owns
        // the link, so the peer knows the node's MAC statically.
        sh(&[
            "ip", "-n", &node, "link", "add", "up0", "type", "veth", "peer", "name", "up1",
            "netns", &peer,
        ]);
        sh(&["ip", "-n", &node, "link", "set", "up0", "up"]);
        sh(&[
            "ip",
            "-n",
            &peer,
            "addr",
            "add",
            "192.168.50.2/24",
            "dev",
            "up1",
        ]);
        sh(&["ip", "-n", &peer, "link", "set", "up1", "up"]);
        lab.up0_mac = mac_of(&node, "up0");
        lab.up1_mac = mac_of(&peer, "up1");
        sh(&[
            "ip",
            "-n",
            &peer,
            "neigh",
            "replace",
            "192.168.50.1",
            "lladdr",
            &lab.up0_mac,
            "dev",
            "up1",
            "nud",
            "permanent",
        ]);
        // The peer as flanneld sets up a vxlan-backend node: flannel.1 with
        // VNI 1 on port 8472, its subnet's .0 as a /32, and for this node a
        // permanent ARP entry, an FDB entry and an onlink route.
        sh(&[
            "ip",
            "-n",
            &peer,
            "link",
            "add",
            "flannel.1",
            "type",
            "vxlan",
            "id",
            "1",
            "local",
            "192.168.50.2",
            "dev",
            "up1",
            "dstport",
            "8472",
            "nolearning",
        ]);
        sh(&[
            "ip",
            "-n",
            &peer,
            "addr",
            "add",
            "10.5.9.0/32",
            "dev",
            "flannel.1",
        ]);
        sh(&[
            "ip",
            "-n",
            &peer,
            "link",
            "set",
            "flannel.1",
            "mtu",
            "1450",
            "up",
        ]);
        lab.peer_vtep = mac_of(&peer, "flannel.1");
        sh(&[
            "ip",
            "-n",
            &peer,
            "neigh",
            "replace",
            "10.5.1.0",
            "lladdr",
            &lab.up0_mac,
            "dev",
            "flannel.1",
            "nud",
            "permanent",
        ]);
        sh(&[
            "bridge",
            "-n",
            &peer,
            "fdb",
            "append",
            &lab.up0_mac,
            "dev",
            "flannel.1",
            "dst",
            "192.168.50.1",
        ]);
        sh(&[
            "ip",
            "-n",
            &peer,
            "route",
            "replace",
            "10.5.1.0/24",
            "via",
            "10.5.1.0",
            "dev",
            "flannel.1",
            "onlink",
        ]);
        // Pod A: a veth, set up as the CNI plugin does.
        sh(&[
            "ip", "-n", &node, "link", "add", "sva", "type", "veth", "peer", "name", "eth0",
            "netns", &pod_a,
        ]);
        sh(&[
            "ip", "-n", &pod_a, "link", "set", "eth0", "address", POD_A_MAC,
        ]);
        sh(&[
            "ip",
            "-n",
            &pod_a,
            "addr",
            "add",
            "10.5.1.2/24",
            "dev",
            "eth0",
        ]);
        sh(&[
            "ip", "-n", &pod_a, "link", "set", "eth0", "mtu", "1450", "up",
        ]);
        sh(&[
            "ip", "-n", &pod_a, "route", "add", "default", "via", "10.5.1.1",
        ]);
        ns_sh(
            &pod_a,
            &[
                "ethtool", "-K", "eth0", "tx", "off", "tso", "off", "gso", "off",
            ],
        );
        sh(&["ip", "-n", &node, "link", "set", "sva", "up"]);
        lab
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("sluiced.sock")
    }

    fn vhost_socket(&self) -> PathBuf {
        self.dir.path().join("vhost/pod.sock")
    }

    fn client(&self) -> Client {
        Client::new(self.socket()).with_timeout(Duration::from_secs(5))
    }

    /// The node's configuration; `vhost_pod`: the vhost-user pod is in it.
    fn config(&self, vhost_pod: bool) -> PathBuf {
        let mut s = format!(
            "[daemon]\nbackend = \"dpdk\"\napi_socket = \"{}\"\nmetrics_address = \"127.0.0.1:0\"\npod_records = \"\"\n\
             [daemon.dpdk]\nno_huge = true\nmemory_mb = 256\nfile_prefix = \"{}-sluiced\"\nmbufs = 4095\n\n\
             [node]\npod_network = \"10.5.0.0/16\"\npod_subnet = \"10.5.1.0/24\"\nrouter_mac = \"02:00:00:00:00:01\"\n\n\
             [[port]]\nname = \"up0\"\nkind = \"uplink\"\ndevargs = \"net_af_packet_{},iface=up0\"\nmac = \"{}\"\naddress = \"192.168.50.1/24\"\n\n\
             [[port]]\nname = \"sva\"\nkind = \"pod\"\nmac = \"{POD_A_MAC}\"\nip = \"10.5.1.2\"\nmtu = 1450\n\n",
            self.socket().display(),
            self.tag,
            self.tag,
            self.up0_mac,
        );
        if vhost_pod {
            s += &format!(
                "[[port]]\nname = \"vhp\"\nkind = \"pod\"\nmac = \"{VHOST_MAC}\"\nip = \"10.5.1.5\"\nmtu = 1450\nvhost_user = \"{}\"\n\n",
                self.vhost_socket().display()
            );
        }
        s += &format!(
            "[[route]]\nprefix = \"10.5.9.0/24\"\nvia = \"vxlan\"\nnode = \"192.168.50.2\"\nvtep_mac = \"{}\"\n\n\
             [[neighbour]]\nip = \"192.168.50.2\"\nmac = \"{}\"\n",
            self.peer_vtep, self.up1_mac
        );
        let path = self.dir.path().join(if vhost_pod {
            "with-vhost.toml"
        } else {
            "node.toml"
        });
        std::fs::write(&path, s).unwrap();
        path
    }

    /// Starts sluiced in the node and waits until its API answers.
    fn start(&mut self, config: &Path) -> Instant {
        let t0 = self.spawn_sluiced(config);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.client().node().is_err() {
            if let Some(st) = self.sluiced.as_mut().unwrap().0.try_wait().unwrap() {
                panic!("sluiced exited during start-up ({st}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "sluiced did not serve its API in 30 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        t0
    }

    /// Spawns sluiced in the node without waiting for it; when it was spawned.
    fn spawn_sluiced(&mut self, config: &Path) -> Instant {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("sluiced.log"))
            .unwrap();
        let t0 = Instant::now();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.node,
                env!("CARGO_BIN_EXE_sluiced"),
                "--config",
            ])
            .arg(config)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("sluiced starts");
        self.sluiced = Some(Proc(child));
        t0
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sluiced.log")).unwrap_or_default()
    }

    fn kill_sluiced(&mut self) {
        self.sluiced.take();
    }

    /// Starts the vhost-user pod: dpdk-testpmd with net_virtio_user as the
    /// vhost-user server on the pod's socket, answering ARP and ping.
    fn start_testpmd(&mut self) {
        let sock = self.vhost_socket();
        std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
        let log = std::fs::File::create(self.dir.path().join("testpmd.log")).unwrap();
        let child = Command::new("dpdk-testpmd")
            .args([
                "-l",
                "0,1",
                "--no-huge",
                "-m",
                "256",
                "--no-pci",
                "--file-prefix",
            ])
            .arg(format!("{}-pod", self.tag))
            .arg("--vdev")
            .arg(format!(
                "net_virtio_user0,path={},server=1,queues=1,mac={VHOST_MAC}",
                sock.display()
            ))
            .args([
                "--",
                "--forward-mode=icmpecho",
                "--auto-start",
                "--nb-cores=1",
                "--total-num-mbufs=4096",
                "--no-mlockall",
            ])
            // Non-interactive testpmd runs until its stdin closes.
            .stdin(Stdio::piped())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("dpdk-testpmd starts (Debian's dpdk-dev)");
        self.testpmd = Some(Proc(child));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !sock.exists() {
            assert!(
                Instant::now() < deadline,
                "testpmd made no vhost-user socket:\n{}",
                std::fs::read_to_string(self.dir.path().join("testpmd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn vhost_port(&self) -> sluice_api::PortConfig {
        serde_json::from_value(serde_json::json!({
            "name": "vhp", "kind": "pod", "mac": VHOST_MAC, "ip": "10.5.1.5", "mtu": 1450,
            "vhost_user": self.vhost_socket(),
        }))
        .unwrap()
    }

    /// Waits until `ns` pings `dst`; returns how long it took.
    fn reaches(&self, ns: &str, dst: &str, within: Duration) -> Duration {
        let t0 = Instant::now();
        loop {
            if ping(ns, dst, 1) {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < within,
                "{ns} did not reach {dst} within {within:?}:\n{}",
                self.log()
            );
        }
    }
}

/// A steady stream: `ping` every 2 ms from namespace `ns` to `dst`, run
/// until dropped. Its PID names its namespace: the receiving side's
/// counters are read from `/proc/<pid>/net/dev` without spawning anything.
fn stream(ns: &str, dst: &str) -> Proc {
    let p = Proc(
        Command::new("ip")
            .args([
                "netns", "exec", ns, "ping", "-q", "-i", "0.002", "-W", "1", dst,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // `ip netns exec` enters the namespace, then execs ping: until then
    // the PID's /proc/<pid>/net is the host's.
    let comm = format!("/proc/{}/comm", p.0.id());
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(&comm).unwrap_or_default().trim() != "ping" {
        assert!(Instant::now() < deadline, "ping did not start in {ns}");
        std::thread::sleep(Duration::from_millis(5));
    }
    p
}

/// ICMP echo replies received in the network namespace of process `pid`
/// (`InEchoReps` of `/proc/<pid>/net/snmp`). Not the device's RX-packets:
/// the node's kernel sends IPv6 router solicitations and the like to a
/// pod when sluiced lets go of its veth, which would move that counter
/// while nothing is forwarded.
fn echo_replies(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/snmp")).unwrap();
    let mut icmp = text.lines().filter(|l| l.starts_with("Icmp:"));
    let (names, values) = (icmp.next(), icmp.next());
    names
        .zip(values)
        .and_then(|(n, v)| {
            n.split_whitespace()
                .zip(v.split_whitespace())
                .find(|(n, _)| *n == "InEchoReps")
                .and_then(|(_, v)| v.parse().ok())
        })
        .unwrap_or_else(|| panic!("no InEchoReps in /proc/{pid}/net/snmp:\n{text}"))
}

/// A receiving side: a stream's process, whose namespace counts the
/// echo replies it receives.
struct Receiver<'a> {
    what: &'a str,
    pid: u32,
}

impl Receiver<'_> {
    fn count(&self) -> u64 {
        echo_replies(self.pid)
    }
}

/// One restart of sluiced, as the receivers saw it.
struct Window {
    /// From the signal until the old process was reaped.
    exit: Duration,
    /// From the signal until the new process was spawned.
    spawned: Duration,
    /// From the new process's spawn until its API answered.
    api: Duration,
    /// Per receiver: from the signal until the last sample whose count had
    /// moved, and from the new process's spawn until the first sample
    /// whose count moved again.
    last: Vec<Duration>,
    resumed: Vec<Duration>,
}

/// Samples the receivers every 10 ms from `t0` while `done` says to go
/// on; returns each one's last moving sample (since `t0`) and count.
fn sample_until(
    rx: &[Receiver],
    t0: Instant,
    mut done: impl FnMut() -> bool,
) -> (Vec<Duration>, Vec<u64>) {
    let mut counts: Vec<u64> = rx.iter().map(Receiver::count).collect();
    let mut last = vec![Duration::ZERO; rx.len()];
    while !done() {
        std::thread::sleep(Duration::from_millis(10));
        for (i, r) in rx.iter().enumerate() {
            let c = r.count();
            if c != counts[i] {
                counts[i] = c;
                last[i] = t0.elapsed();
            }
        }
    }
    (last, counts)
}

/// The vhost-user pod's reconnect window: `signal` to the running sluiced,
/// its end awaited, a new one spawned at once with `config`; the receivers'
/// counters sampled every 10 ms until each has moved again (asserted
/// within 30 s of the spawn). Reports, never asserts, the figures.
fn restart_measured(lab: &mut Lab, signal: i32, config: &Path, rx: &[Receiver]) -> Window {
    let pid = lab.sluiced.as_ref().unwrap().0.id();
    // The stream flows before the signal.
    let before: Vec<u64> = rx.iter().map(Receiver::count).collect();
    std::thread::sleep(Duration::from_millis(100));
    for (r, b) in rx.iter().zip(&before) {
        assert!(r.count() > *b, "{} flows before the restart", r.what);
    }
    let t_signal = Instant::now();
    // SAFETY: a signal to our own child, by its PID (not reaped yet).
    #[allow(unsafe_code)]
    let rc = unsafe { libc::kill(pid as i32, signal) };
    assert_eq!(rc, 0, "signal {signal} to sluiced");
    let mut exited = None;
    let (last, _) = sample_until(rx, t_signal, || {
        let child = &mut lab.sluiced.as_mut().unwrap().0;
        if let Some(st) = child.try_wait().unwrap() {
            exited = Some(st);
            return true;
        }
        assert!(
            t_signal.elapsed() < Duration::from_secs(30),
            "sluiced did not end within 30 s of signal {signal}"
        );
        false
    });
    let exit = t_signal.elapsed();
    eprintln!("old sluiced ended: {}", exited.unwrap());
    lab.sluiced.take();

    let baseline: Vec<u64> = rx.iter().map(Receiver::count).collect();
    let t_spawn = lab.spawn_sluiced(config);
    let api_socket = lab.socket();
    let api = std::thread::spawn(move || {
        let client = Client::new(api_socket).with_timeout(Duration::from_secs(5));
        while t_spawn.elapsed() < Duration::from_secs(30) {
            if client.node().is_ok() {
                return Some(t_spawn.elapsed());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    });
    let mut resumed: Vec<Option<Duration>> = vec![None; rx.len()];
    while resumed.iter().any(Option::is_none) {
        std::thread::sleep(Duration::from_millis(10));
        let at = t_spawn.elapsed();
        for (i, r) in rx.iter().enumerate() {
            if resumed[i].is_none() && r.count() != baseline[i] {
                resumed[i] = Some(at);
            }
        }
        if let Some(st) = lab.sluiced.as_mut().unwrap().0.try_wait().unwrap() {
            panic!("the new sluiced exited ({st}):\n{}", lab.log());
        }
        assert!(
            at < Duration::from_secs(30),
            "traffic did not resume within 30 s of the new sluiced's spawn ({:?}):\n{}",
            rx.iter()
                .zip(&resumed)
                .map(|(r, t)| format!("{}: {t:?}", r.what))
                .collect::<Vec<_>>(),
            lab.log()
        );
    }
    let api = api.join().unwrap().unwrap_or_else(|| {
        panic!(
            "the new sluiced's API did not answer in 30 s:\n{}",
            lab.log()
        )
    });
    Window {
        exit,
        spawned: t_spawn - t_signal,
        api,
        last,
        resumed: resumed.into_iter().map(Option::unwrap).collect(),
    }
}

/// tshark's view of a capture: one row per frame, the fields asked for.
fn tshark(pcap: &Path, fields: &[&str]) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.args(["-n", "-r"]).arg(pcap).args([
        "-o",
        "ip.check_checksum:TRUE",
        "-d",
        "udp.port==8472,vxlan",
        "-Y",
        "vxlan",
        "-T",
        "fields",
        "-E",
        "separator=/t",
    ]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("tshark runs");
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// A DPDK uplink (net_af_packet) speaks VXLAN with a kernel node set up as
/// flanneld does, both ways, as tshark on the underlay confirms; a pod
/// served through net_af_xdp reaches the peer; after SIGKILL a new sluiced
/// forwards again.
#[test]
fn a_dpdk_uplink_speaks_vxlan_with_a_flannel_node_and_survives_kill9() {
    let mut lab = Lab::new("u");
    let cfg = lab.config(false);
    lab.start(&cfg);
    let capture = lab.dir.path().join("underlay.pcap");
    let tshark_cap = Proc(
        Command::new("ip")
            .args([
                "netns", "exec", &lab.peer, "tshark", "-n", "-i", "up1", "-w",
            ])
            .arg(&capture)
            .args(["-f", "udp port 8472"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // tshark needs a moment before it captures.
    std::thread::sleep(Duration::from_millis(1500));
    let took = lab.reaches(&lab.peer, "10.5.1.2", Duration::from_secs(10));
    eprintln!("first ping through the DPDK uplink after {took:?}");
    assert!(
        ping(&lab.peer, "10.5.1.2", 3),
        "the kernel VXLAN peer reaches the pod"
    );
    assert!(
        ping(&lab.pod_a, "10.5.9.0", 3),
        "the pod reaches the peer's flannel.1"
    );
    std::thread::sleep(Duration::from_millis(500));
    // SIGTERM so tshark finishes the file.
    let pid = tshark_cap.0.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    std::thread::sleep(Duration::from_millis(500));
    drop(tshark_cap);
    let rows = tshark(
        &capture,
        &[
            "ip.src",
            "ip.dst",
            "vxlan.vni",
            "ip.checksum.status",
            "udp.dstport",
            "icmp.type",
        ],
    );
    let from_node: Vec<_> = rows
        .iter()
        .filter(|r| r[0].starts_with("192.168.50.1,"))
        .collect();
    let to_node: Vec<_> = rows
        .iter()
        .filter(|r| r[0].starts_with("192.168.50.2,"))
        .collect();
    assert!(
        from_node.len() >= 6,
        "sluiced sent VXLAN on the underlay: {rows:?}"
    );
    assert!(
        to_node.len() >= 6,
        "the peer sent VXLAN to sluiced: {rows:?}"
    );
    for r in &from_node {
        assert_eq!(r[1].split(',').next(), Some("192.168.50.2"), "{r:?}");
        assert_eq!(r[2], "1", "VNI 1: {r:?}");
        assert!(
            r[3].split(',').all(|s| s == "1"),
            "good (1) outer and inner IPv4 checksums: {r:?}"
        );
        assert!(r[4].starts_with("8472"), "flannel's port: {r:?}");
    }
    let inner: Vec<&str> = from_node
        .iter()
        .map(|r| r[0].split(',').nth(1).unwrap_or(""))
        .collect();
    assert!(
        inner.contains(&"10.5.1.2"),
        "pod A's packets inside: {inner:?}"
    );

    let stats = lab.client().stats().unwrap();
    assert!(stats.event_count("vxlan_encap") >= 6);
    assert!(stats.event_count("vxlan_decap") >= 6);
    let up = &stats.ports["up0"];
    assert!(up.dpdk.is_some(), "DPDK counters in stats: {up:?}");

    lab.kill_sluiced();
    let t0 = lab.start(&cfg);
    let gap = lab.reaches(&lab.pod_a, "10.5.9.0", Duration::from_secs(10));
    eprintln!(
        "after SIGKILL: API up in {:?}, pod forwarding again {:?} after the new process started",
        t0.elapsed() - gap,
        t0.elapsed()
    );
    assert!(ping(&lab.peer, "10.5.1.2", 3));
}

/// A vhost-user pod (testpmd, net_virtio_user in server mode) attached at
/// runtime as the CNI plugin attaches it, reaches the veth pod and the
/// kernel peer; removed, it is unreachable; added again, reachable; and it
/// keeps its traffic across a SIGKILL of sluiced without restarting.
#[test]
fn a_vhost_user_pod_and_an_af_xdp_pod_reach_each_other_and_outlive_a_restart() {
    let mut lab = Lab::new("v");
    lab.start_testpmd();
    let cfg = lab.config(false);
    lab.start(&cfg);
    let added = lab.client().add_ports(vec![lab.vhost_port()]).unwrap();
    assert_eq!(added.added, 1);
    let took = lab.reaches(&lab.pod_a, "10.5.1.5", Duration::from_secs(10));
    eprintln!("vhost-user pod reachable {took:?} after ports.add");
    assert!(
        ping(&lab.pod_a, "10.5.1.5", 3),
        "the AF_XDP pod reaches the vhost-user pod"
    );
    assert!(
        ping(&lab.peer, "10.5.1.5", 3),
        "the kernel VXLAN peer reaches the vhost-user pod"
    );
    let stats = lab.client().stats().unwrap();
    let vhp = &stats.ports["vhp"];
    assert!(
        vhp.rx_packets >= 6 && vhp.tx_packets >= 6,
        "the vhost-user port carried the pings: {vhp:?}"
    );
    assert_eq!(stats.drop_count("spoofed_source_ip"), 0);

    let removed = lab.client().remove_ports(vec!["vhp".to_string()]).unwrap();
    assert_eq!(removed.removed, 1);
    assert!(
        !ping(&lab.pod_a, "10.5.1.5", 2),
        "a removed vhost-user pod is unreachable"
    );
    // The vdev was detached: the same name and socket can be added again.
    lab.client().add_ports(vec![lab.vhost_port()]).unwrap();
    lab.reaches(&lab.pod_a, "10.5.1.5", Duration::from_secs(10));

    // SIGKILL: the pod (the vhost-user server) stays; the new sluiced
    // connects again as the client.
    lab.kill_sluiced();
    let with_vhost = lab.config(true);
    let t0 = lab.start(&with_vhost);
    lab.reaches(&lab.pod_a, "10.5.1.5", Duration::from_secs(10));
    eprintln!(
        "after SIGKILL the vhost-user pod answers {:?} after the new sluiced started",
        t0.elapsed()
    );
    assert!(ping(&lab.peer, "10.5.1.5", 3));
    assert!(
        lab.testpmd
            .as_mut()
            .unwrap()
            .0
            .try_wait()
            .unwrap()
            .is_none(),
        "the pod did not restart"
    );
}

/// The reconnect window of a vhost-user pod when sluiced (DPDK backend)
/// restarts, as an upgrade restarts it: SIGTERM, then SIGKILL, each time a
/// new sluiced spawned as soon as the old one is gone, with the same
/// configuration (the vhost-user port in it). The veth pod pings the
/// vhost-user pod (testpmd, `icmpecho`) every 2 ms; the echo replies its
/// namespace received, sampled every 10 ms, move again once they come
/// back through the reconnected vhost-user port. For comparison, the kernel VXLAN peer
/// pings the veth pod (AF_XDP and the uplink, no vhost-user) the same way.
/// Asserts that traffic resumes within 30 s and that the pod never
/// restarted; prints the figures (docs/upgrade.md quotes them).
#[test]
fn a_vhost_user_pods_reconnect_window_when_sluiced_restarts() {
    let mut lab = Lab::new("w");
    lab.start_testpmd();
    let cfg = lab.config(true);
    lab.start(&cfg);
    lab.reaches(&lab.pod_a, "10.5.1.5", Duration::from_secs(10));
    lab.reaches(&lab.peer, "10.5.1.2", Duration::from_secs(10));
    let to_vhost = stream(&lab.pod_a, "10.5.1.5");
    let to_veth = stream(&lab.peer, "10.5.1.2");
    let rx = [
        Receiver {
            what: "the vhost-user pod's replies at the veth pod",
            pid: to_vhost.0.id(),
        },
        Receiver {
            what: "the veth pod's replies at the VXLAN peer (no vhost-user)",
            pid: to_veth.0.id(),
        },
    ];
    // Both streams answered before anything is measured.
    let start = rx.iter().map(Receiver::count).collect::<Vec<_>>();
    let deadline = Instant::now() + Duration::from_secs(10);
    while rx.iter().zip(&start).any(|(r, s)| r.count() < s + 50) {
        assert!(
            Instant::now() < deadline,
            "the streams flow:\n{}",
            lab.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for (name, signal) in [("SIGTERM", libc::SIGTERM), ("SIGKILL", libc::SIGKILL)] {
        let w = restart_measured(&mut lab, signal, &cfg, &rx);
        eprintln!(
            "{name}: old sluiced gone {:.3} s after the signal; new sluiced's API up {:.3} s after its spawn",
            w.exit.as_secs_f64(),
            w.api.as_secs_f64()
        );
        for (i, r) in rx.iter().enumerate() {
            eprintln!(
                "{name}: {}: last moved {:.3} s after the signal, moved again {:.3} s after the spawn ({:.3} s after the signal; no packet for {:.3} s)",
                r.what,
                w.last[i].as_secs_f64(),
                w.resumed[i].as_secs_f64(),
                (w.spawned + w.resumed[i]).as_secs_f64(),
                (w.spawned + w.resumed[i])
                    .saturating_sub(w.last[i])
                    .as_secs_f64(),
            );
        }
        assert!(
            lab.testpmd
                .as_mut()
                .unwrap()
                .0
                .try_wait()
                .unwrap()
                .is_none(),
            "the pod did not restart"
        );
    }
    drop(to_vhost);
    drop(to_veth);
}

/// A hardware profile on a PMD with rte_flow (net_tap turns rules into TC
/// flower filters on its kernel side): the rules are created and listed by
/// `tc`, or, on a kernel without the multiq qdisc and flower classifier
/// (net_tap then turns rte_flow off), the profile is refused naming the
/// rule, and sluiced does not run. Either way nothing is half-applied.
#[test]
fn a_tap_uplinks_steering_profile_is_applied_or_refused_by_rule() {
    require_root();
    let ns = format!("sld{}tap", std::process::id() % 100_000);
    sh(&["ip", "netns", "add", &ns]);
    struct Ns(String);
    impl Drop for Ns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    let _guard = Ns(ns.clone());
    let dir = tempfile::tempdir().unwrap();
    let profile =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../hw-profiles/lab-tap-steering.toml");
    let cfg = dir.path().join("tap.toml");
    std::fs::write(
        &cfg,
        format!(
            "[daemon]\nbackend = \"dpdk\"\napi_socket = \"{}\"\nmetrics_address = \"127.0.0.1:0\"\npod_records = \"\"\n\
             [daemon.dpdk]\nno_huge = true\nmemory_mb = 128\nfile_prefix = \"{ns}\"\nmbufs = 2047\nmbuf_cache = 64\nprofile = \"{}\"\n\n\
             [node]\npod_network = \"10.5.0.0/16\"\npod_subnet = \"10.5.1.0/24\"\nrouter_mac = \"02:00:00:00:00:01\"\n\n\
             [[port]]\nname = \"up0\"\nkind = \"uplink\"\ndevargs = \"net_tap_up0,iface=up0\"\nmac = \"02:00:00:00:aa:01\"\naddress = \"192.168.50.1/24\"\n",
            dir.path().join("api.sock").display(),
            profile.display()
        ),
    )
    .unwrap();
    let mut child = Proc(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                env!("CARGO_BIN_EXE_sluiced"),
                "--config",
            ])
            .arg(&cfg)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let client = Client::new(dir.path().join("api.sock"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let running = loop {
        if child.0.try_wait().unwrap().is_some() {
            break false;
        }
        if client.node().is_ok() {
            break true;
        }
        assert!(Instant::now() < deadline, "sluiced neither ran nor exited");
        std::thread::sleep(Duration::from_millis(50));
    };
    if running {
        let filters = ns_sh(&ns, &["tc", "filter", "show", "dev", "up0", "ingress"]);
        assert!(
            filters.contains("flower"),
            "the profile's rules are TC flower filters:\n{filters}"
        );
    } else {
        let out = std::mem::replace(&mut child.0, Command::new("true").spawn().unwrap())
            .wait_with_output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{log}");
        assert!(
            log.contains("hardware profile `lab-tap-steering`, rule `vxlan-to-workers`:"),
            "refused naming the rule:\n{log}"
        );
        eprintln!("this kernel cannot take net_tap's flower rules; refused as expected");
    }
}
