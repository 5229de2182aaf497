//! Privileged tier: the real container runtime the CNI tests use (podman
//! 4.3 with its CNI backend, `support/podman.rs`), proven with Debian's
//! `bridge` and `host-local` plugins in a node namespace this test makes.
//!
//! ```text
//! cargo test -p sluice-perf --features privileged-tests --test podman -- --test-threads=1
//! ```

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use support::podman::Podman;
use support::require_root;

/// Debian's CNI plugins (containernetworking-plugins).
const DEBIAN_CNI: &str = "/usr/lib/cni";

/// A network namespace this test made; deleted when dropped.
struct Netns(String);

impl Netns {
    fn new(name: &str) -> Netns {
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(std::process::Stdio::null())
            .status();
        let ok = Command::new("ip")
            .args(["netns", "add", name])
            .status()
            .unwrap();
        assert!(ok.success(), "ip netns add {name}");
        let ok = Command::new("ip")
            .args(["-n", name, "link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(ok.success());
        Netns(name.to_string())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn leases(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.parse::<std::net::Ipv4Addr>().is_ok())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn podman_runs_containers_on_a_cni_bridge_inside_a_node_namespace() {
    require_root();
    let tag = format!("spod{}", std::process::id() % 100_000);
    let node = Netns::new(&tag);
    let conf = tempfile::tempdir().unwrap();
    let leases_dir = conf.path().join("host-local");
    let bridge = format!("{tag}br");
    std::fs::write(
        conf.path().join("10-testnet.conflist"),
        format!(
            r#"{{"cniVersion":"1.0.0","name":"testnet","plugins":[{{"type":"bridge","bridge":"{bridge}","isGateway":true,"ipMasq":false,"ipam":{{"type":"host-local","ranges":[[{{"subnet":"10.231.7.0/24"}}]],"dataDir":"{}"}}}}]}}"#,
            leases_dir.display()
        ),
    )
    .unwrap();
    let mut podman = Podman::new(&tag, &node.0, conf.path(), &[PathBuf::from(DEBIAN_CNI)]);
    assert_eq!(podman.network_backend(), "cni");

    let id = podman.run("c1", "testnet");
    assert!(
        id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "container id: {id}"
    );
    let ip = podman.ip("c1");
    assert!(ip.starts_with("10.231.7."), "address from host-local: {ip}");
    assert_eq!(leases(&leases_dir.join("testnet")), vec![ip.clone()]);
    // The bridge is the node namespace's: the plugins ran there.
    let br = Command::new("ip")
        .args(["-n", &node.0, "-4", "addr", "show", &bridge])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&br.stdout).contains("10.231.7.1/24"),
        "bridge gateway in {}: {}",
        node.0,
        String::from_utf8_lossy(&br.stderr)
    );
    let addr = podman.exec("c1", &["ip", "-4", "addr", "show", "eth0"]);
    assert!(
        String::from_utf8_lossy(&addr.stdout).contains(&format!("{ip}/24")),
        "{addr:?}"
    );
    let ping = podman.exec("c1", &["ping", "-c", "2", "-W", "2", "10.231.7.1"]);
    assert!(ping.status.success(), "ping the bridge gateway: {ping:?}");
    assert_eq!(podman.container_netns().len(), 1);

    // A second container on the same network reaches the first.
    podman.run("c2", "testnet");
    let ping = podman.exec("c2", &["ping", "-c", "2", "-W", "2", &ip]);
    assert!(ping.status.success(), "c2 to c1: {ping:?}");

    // rm runs CNI DEL: the lease and the namespace go.
    podman.rm("c1");
    let left = leases(&leases_dir.join("testnet"));
    assert!(!left.contains(&ip), "lease {ip} left after rm: {left:?}");
    assert_eq!(left.len(), 1, "c2's lease stays: {left:?}");
    assert_eq!(podman.container_netns().len(), 1);
    podman.rm("c2");
    assert!(leases(&leases_dir.join("testnet")).is_empty());
    assert!(podman.container_netns().is_empty());
    drop(podman);
}

/// Pod ports, host veths, records and own-IPAM addresses node `i` holds.
fn held(st: &sluice_perf::lab::LabState, i: usize) -> (usize, usize, usize, usize) {
    let (ports, veths, records, leases) = support::holdings(st, i);
    (ports.len(), veths.len(), records.len(), leases.len())
}

#[test]
fn podman_runs_containers_on_sluice_across_two_lab_nodes() {
    require_root();
    let name = "podsl";
    let _g = support::Guard(name.into());
    let st = support::up(name, sluice_perf::lab::Mode::Vxlan, 1);
    let plugins = vec![
        sluice_perf::pods::plugin_dir().expect("the sluice plugin is built"),
        PathBuf::from(DEBIAN_CNI),
    ];
    let confs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut podmans = Vec::new();
    for (i, conf) in confs.iter().enumerate() {
        // The shipped list (the plugin, then portmap) at 1.0.0, podman
        // 4.3's newest, with this node's socket, subnet file and data dir.
        let mut list: serde_json::Value =
            serde_json::from_str(&sluice_perf::pods::conflist(&st, i)).unwrap();
        list["cniVersion"] = "1.0.0".into();
        list.as_object_mut().unwrap().remove("cniVersions");
        list["plugins"].as_array_mut().unwrap().push(
            serde_json::json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}),
        );
        std::fs::write(conf.path().join("10-sluice.conflist"), list.to_string()).unwrap();
        podmans.push(Podman::new(
            &format!("{name}{i}"),
            &st.nodes[i].ns,
            conf.path(),
            &plugins,
        ));
    }
    let before: Vec<_> = (0..2).map(|i| held(&st, i)).collect();
    assert_eq!(before[0], (2, 2, 2, 2), "the lab's own pods");
    podmans[0].run("a", "sluice");
    podmans[1].run_with(
        "srv",
        "sluice",
        &[],
        &[
            "sh",
            "-c",
            "while true; do echo pong-from-node-2 | nc -l -p 7000; done",
        ],
    );
    let (a, srv) = (podmans[0].ip("a"), podmans[1].ip("srv"));
    assert!(a.starts_with("10.77.1."), "{a}");
    assert!(srv.starts_with("10.77.2."), "{srv}");
    assert_eq!(held(&st, 0), (3, 3, 3, 3));
    assert_eq!(held(&st, 1), (3, 3, 3, 3));
    let ping = podmans[0].exec("a", &["ping", "-c", "3", "-W", "2", &srv]);
    assert!(ping.status.success(), "a to srv across nodes: {ping:?}");
    let ping = podmans[1].exec("srv", &["ping", "-c", "3", "-W", "2", &a]);
    assert!(ping.status.success(), "srv to a: {ping:?}");
    let got = podmans[0].exec(
        "a",
        &["sh", "-c", &format!("nc -w 3 {srv} 7000 </dev/null")],
    );
    assert_eq!(
        String::from_utf8_lossy(&got.stdout).trim(),
        "pong-from-node-2",
        "TCP across nodes: {got:?}"
    );
    // podman's removal runs DEL: port, veth, record and address go.
    podmans[0].rm("a");
    podmans[1].rm("srv");
    assert_eq!(held(&st, 0), before[0]);
    assert_eq!(held(&st, 1), before[1]);
    drop(podmans);
}
