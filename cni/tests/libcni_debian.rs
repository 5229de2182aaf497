//! Privileged tier: `sluice_cni::libcni` driving Debian's real CNI plugins
//! (package containernetworking-plugins, `/usr/lib/cni`: bridge,
//! host-local, portmap, tuning) as a container runtime does. Needs root;
//! built only with the `privileged-tests` feature:
//!
//! ```text
//! cargo test -p sluice-cni --features privileged-tests --test libcni_debian -- --test-threads=1
//! ```
//!
//! Nothing touches the machine's own network: each test makes a "host"
//! namespace (where the plugins run, through `Cni::host_netns`, and where the
//! bridge and portmap's iptables rules live) and pod namespaces, all named
//! after this process's PID, and removes them in its guard, also when an
//! assertion fails. IPAM state and the result cache are in a tempdir.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use sluice_cni::libcni::{Cni, ConfList, RuntimeConf};

const PLUGIN_DIR: &str = "/usr/lib/cni";

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
        "the privileged tier needs root (network namespaces, Debian's CNI plugins): run `sudo scripts/test.sh`"
    );
    for p in ["bridge", "host-local", "portmap", "tuning"] {
        assert!(
            Path::new(PLUGIN_DIR).join(p).is_file(),
            "{PLUGIN_DIR}/{p} is missing: install Debian's containernetworking-plugins"
        );
    }
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

fn succeeds(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The namespaces and files of one test; dropped, it deletes the namespaces
/// it created (which takes the bridge, the veths and the iptables rules with
/// them).
struct Lab {
    host: String,
    pods: Vec<String>,
    bridge: String,
    subnet: &'static str,
    dir: tempfile::TempDir,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.pods.iter().chain(std::iter::once(&self.host)) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

impl Lab {
    /// `tag` keeps the names of the tests of one run apart.
    fn new(tag: &str, subnet: &'static str) -> Lab {
        require_root();
        let id = std::process::id() % 100_000;
        let host = format!("slcni{id}{tag}-host");
        let lab = Lab {
            host: host.clone(),
            pods: Vec::new(),
            bridge: format!("slbr{id}{tag}"),
            subnet,
            dir: tempfile::tempdir().unwrap(),
        };
        assert!(lab.bridge.len() <= 15, "{}", lab.bridge);
        sh(&["ip", "netns", "add", &host]);
        sh(&["ip", "-n", &host, "link", "set", "lo", "up"]);
        lab
    }

    fn pod(&mut self) -> String {
        let ns = format!(
            "{}-p{}",
            self.host.trim_end_matches("-host"),
            self.pods.len()
        );
        sh(&["ip", "netns", "add", &ns]);
        self.pods.push(ns.clone());
        ns
    }

    fn cni(&self) -> Cni {
        Cni::new(vec![PathBuf::from(PLUGIN_DIR)])
            .with_cache_dir(self.dir.path().join("cache"))
            .with_host_netns(self.host.clone())
    }

    fn ipam_dir(&self) -> PathBuf {
        self.dir.path().join("ipam")
    }

    /// bridge (+ host-local) then portmap, and `extra` plugin objects after.
    fn conflist(&self, extra: &[Value]) -> ConfList {
        let mut plugins = vec![
            json!({
                "type": "bridge",
                "bridge": self.bridge,
                "isGateway": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": self.subnet}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": self.ipam_dir(),
                }
            }),
            json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}),
        ];
        plugins.extend(extra.iter().cloned());
        let conf = json!({"cniVersion": "1.0.0", "name": "slnet", "plugins": plugins});
        ConfList::parse(conf.to_string().as_bytes()).unwrap()
    }

    fn rt(&self, cid: &str, pod: &str) -> RuntimeConf {
        let mut rt = RuntimeConf::new(cid, Some(format!("/run/netns/{pod}").into()), "eth0");
        rt.args = vec![
            ("IgnoreUnknown".into(), "1".into()),
            ("K8S_POD_NAME".into(), cid.into()),
        ];
        rt.capability_args.insert(
            "portMappings".into(),
            json!([{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]),
        );
        rt
    }

    fn lease(&self, ip: &str) -> PathBuf {
        self.ipam_dir().join("slnet").join(ip)
    }

    fn nat_rules(&self) -> String {
        sh(&[
            "ip", "netns", "exec", &self.host, "iptables", "-t", "nat", "-S",
        ])
    }
}

/// The IPv4 addresses (with prefix) of `dev` in namespace `ns`.
fn addrs(ns: &str, dev: &str) -> Vec<String> {
    sh(&["ip", "-n", ns, "-4", "-o", "addr", "show", "dev", dev])
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            w.find(|t| *t == "inet").and(w.next()).map(str::to_string)
        })
        .collect()
}

/// The container's address from an ADD result: `ips[0].address`.
fn result_ip(result: &Value) -> (String, String) {
    let cidr = result["ips"][0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no ips[0].address in {result}"))
        .to_string();
    let ip = cidr.split('/').next().unwrap().to_string();
    (cidr, ip)
}

#[test]
fn add_check_del_with_debians_bridge_host_local_and_portmap() {
    let mut lab = Lab::new("a", "10.99.7.0/24");
    let pod = lab.pod();
    let cni = lab.cni();
    let list = lab.conflist(&[]);
    let rt = lab.rt("ctr-a1", &pod);

    let result = cni.add_network_list(&list, &rt).unwrap();
    assert_eq!(result["cniVersion"], "1.0.0", "{result}");
    let (cidr, ip) = result_ip(&result);
    assert!(
        cidr.starts_with("10.99.7.") && cidr.ends_with("/24"),
        "{cidr}"
    );
    assert_eq!(result["ips"][0]["gateway"], "10.99.7.1", "{result}");
    let sandbox = result["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "eth0")
        .unwrap_or_else(|| panic!("no eth0 in {result}"));
    assert_eq!(sandbox["sandbox"], format!("/run/netns/{pod}"));

    // The pod has eth0 with the result's address, the host the bridge.
    assert_eq!(addrs(&pod, "eth0"), std::slice::from_ref(&cidr));
    assert_eq!(addrs(&lab.host, &lab.bridge), ["10.99.7.1/24"]);
    // host-local's lease, and the cache entry.
    let lease = lab.lease(&ip);
    let held = std::fs::read_to_string(&lease).unwrap();
    assert!(held.starts_with("ctr-a1"), "{held:?}");
    let cache = cni.cache_path("slnet", &rt).unwrap();
    assert_eq!(
        cache,
        lab.dir.path().join("cache/results/slnet-ctr-a1-eth0")
    );
    let cached: Value = serde_json::from_slice(&std::fs::read(&cache).unwrap()).unwrap();
    assert_eq!(cached["kind"], "cniCacheV1");
    assert_eq!(cached["result"], result);
    // portmap got the portMappings capability as runtimeConfig.
    let nat = lab.nat_rules();
    assert!(
        nat.contains("--dport 18080") && nat.contains(&format!("{ip}:80")),
        "no DNAT for 18080 to {ip}:80 in\n{nat}"
    );

    // CHECK runs bridge, host-local (through bridge) and portmap in order
    // with the cached result. Debian's portmap 1.1.1 also looks for the
    // IPv4 DNAT chain in ip6tables, so an IPv4-only pod with port mappings
    // fails its CHECK (fixed upstream: it now checks only the address's
    // family). Its failure, being the last plugin's, still shows that
    // bridge and host-local passed.
    match cni.check_network_list(&list, &rt) {
        Ok(()) => {}
        Err(e) => {
            let ce = e.cni().unwrap_or_else(|| panic!("CHECK: {e}"));
            assert!(
                ce.plugin == "portmap" && ce.msg.starts_with("could not check ipv6 dnat"),
                "CHECK failed other than by portmap 1.1.1's IPv6 check: {e}"
            );
        }
    }
    // Without port mappings portmap has nothing to check: all pass.
    let mut plain = rt.clone();
    plain.capability_args.clear();
    cni.check_network_list(&list, &plain).unwrap();

    cni.del_network_list(&list, &rt).unwrap();
    assert!(
        !succeeds(&["ip", "-n", &pod, "link", "show", "eth0"]),
        "eth0 is still in the pod after DEL"
    );
    assert!(
        !lease.exists(),
        "the IPAM lease {} survived DEL",
        lease.display()
    );
    assert!(!cache.exists(), "the cache entry survived DEL");
    let nat = lab.nat_rules();
    assert!(
        !nat.contains("--dport 18080"),
        "portmap's DNAT survived DEL:\n{nat}"
    );

    // DEL again: the spec wants it idempotent.
    cni.del_network_list(&list, &rt).unwrap();
    // And CHECK after DEL fails (the interface is gone).
    assert!(cni.check_network_list(&list, &rt).is_err());
}

#[test]
fn a_failed_add_is_not_undone_until_the_runtime_dels() {
    let mut lab = Lab::new("b", "10.99.8.0/24");
    let pod = lab.pod();
    let cni = lab.cni();
    // tuning fails on a sysctl that does not exist, after bridge and
    // host-local have done their work.
    let list = lab.conflist(&[json!({
        "type": "tuning",
        "sysctl": {"net.ipv4.conf.eth0.no_such_knob": "1"}
    })]);
    let rt = lab.rt("ctr-b1", &pod);
    let err = cni.add_network_list(&list, &rt).unwrap_err();
    let ce = err
        .cni()
        .unwrap_or_else(|| panic!("not a plugin error: {err}"));
    assert_eq!(ce.plugin, "tuning", "{err}");
    assert!(err.to_string().contains("tuning") && err.to_string().contains("ADD"));
    // Nothing was undone and nothing cached.
    let left = addrs(&pod, "eth0");
    assert_eq!(left.len(), 1, "{left:?}");
    let ip = left[0].split('/').next().unwrap().to_string();
    assert!(lab.lease(&ip).exists());
    assert!(!cni.cache_path("slnet", &rt).unwrap().exists());
    // The runtime's DEL cleans up (without a prevResult).
    cni.del_network_list(&list, &rt).unwrap();
    assert!(!succeeds(&["ip", "-n", &pod, "link", "show", "eth0"]));
    assert!(!lab.lease(&ip).exists());
}

#[test]
fn gc_dels_the_attachments_not_in_the_valid_set() {
    let mut lab = Lab::new("c", "10.99.9.0/24");
    let (pod1, pod2) = (lab.pod(), lab.pod());
    let cni = lab.cni();
    let list = lab.conflist(&[]);
    let (rt1, rt2) = (lab.rt("ctr-c1", &pod1), lab.rt("ctr-c2", &pod2));
    let (_, ip1) = result_ip(&cni.add_network_list(&list, &rt1).unwrap());
    let (_, ip2) = result_ip(&cni.add_network_list(&list, &rt2).unwrap());
    assert_ne!(ip1, ip2);

    // 1.0.0: no GC command, but libcni's GC DELs the stale cached attachment.
    cni.gc_network_list(&list, &[("ctr-c1".into(), "eth0".into())])
        .unwrap();
    assert!(succeeds(&["ip", "-n", &pod1, "link", "show", "eth0"]));
    assert!(lab.lease(&ip1).exists());
    assert!(!succeeds(&["ip", "-n", &pod2, "link", "show", "eth0"]));
    assert!(!lab.lease(&ip2).exists());
    let left: Vec<_> = cni
        .cached_attachments(None)
        .unwrap()
        .into_iter()
        .map(|a| a.container_id)
        .collect();
    assert_eq!(left, ["ctr-c1"]);

    cni.del_network_list(&list, &rt1).unwrap();
    assert!(!lab.lease(&ip1).exists());
    // STATUS is not in 1.0.0: a no-op.
    cni.status_network_list(&list).unwrap();
}

#[test]
fn host_local_version_lists_1_0_0() {
    let lab = Lab::new("d", "10.99.10.0/24");
    for cni in [lab.cni(), Cni::new(vec![PathBuf::from(PLUGIN_DIR)])] {
        let v = cni.version("host-local").unwrap();
        assert!(v.supported_versions.iter().any(|s| s == "1.0.0"), "{v:?}");
        assert!(
            !v.supported_versions.iter().any(|s| s == "1.1.0"),
            "Debian bookworm's plugins stop at 1.0.0: {v:?}"
        );
    }
}

#[test]
fn a_config_newer_than_the_plugins_is_refused_by_them_not_downgraded() {
    let mut lab = Lab::new("e", "10.99.11.0/24");
    let pod = lab.pod();
    let cni = lab.cni();
    let mut conf: Value = serde_json::from_slice(&lab.conflist(&[]).bytes).unwrap();
    conf["cniVersion"] = json!("1.1.0");
    let list = ConfList::parse(conf.to_string().as_bytes()).unwrap();
    let rt = lab.rt("ctr-e1", &pod);
    let err = cni.add_network_list(&list, &rt).unwrap_err();
    let ce = err
        .cni()
        .unwrap_or_else(|| panic!("not a plugin error: {err}"));
    assert_eq!((ce.plugin.as_str(), ce.code), ("bridge", 1), "{err}");
    assert!(!succeeds(&["ip", "-n", &pod, "link", "show", "eth0"]));
}
