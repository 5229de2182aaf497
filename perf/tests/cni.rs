//! Privileged tier for the `sluice` CNI plugin, called as a container
//! runtime calls it ([`sluice_cni::libcni`]: conflist, environment,
//! `prevResult` chaining, result cache, DEL in reverse) on lab nodes whose
//! sluiced and agent run for real; Debian's `portmap` and `host-local` are
//! the chained and delegated plugins.
//!
//! ```text
//! cargo build --release -p sluiced -p sluice-control -p sluice-cni --bins
//! cargo test -p sluice-perf --features privileged-tests --test cni -- --test-threads=1
//! ```

mod support;

use serde_json::{json, Value};
use sluice_cni::libcni::{Cni, ConfList, Error as CniCallError, RuntimeConf};
use sluice_perf::lab::{self, LabState, Mode};
use sluice_perf::pods;
use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use support::{eventually, holdings, ping, require_root, sh, up, Guard};

/// A pod namespace belonging to the lab (removed by `down`).
fn pod_ns(st: &mut LabState, tag: &str) -> String {
    let ns = format!("{}-x{tag}", st.name);
    sh(&["ip", "netns", "add", &ns]);
    sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
    st.namespaces.push(ns.clone());
    lab::save(st).unwrap();
    ns
}

fn rt(cid: &str, ns: &str) -> RuntimeConf {
    RuntimeConf::new(cid, Some(PathBuf::from(format!("/run/netns/{ns}"))), "eth0")
}

/// Node `i`'s conflist at `version`: the plugin with `extra` keys, then
/// `chained` plugins.
fn conflist(st: &LabState, i: usize, version: &str, extra: Value, chained: &[Value]) -> ConfList {
    let mut base: Value = serde_json::from_str(&pods::conflist(st, i)).unwrap();
    base["cniVersion"] = json!(version);
    base.as_object_mut().unwrap().remove("cniVersions");
    if let (Some(p), Some(e)) = (base["plugins"][0].as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            p.insert(k.clone(), v.clone());
        }
    }
    for c in chained {
        base["plugins"].as_array_mut().unwrap().push(c.clone());
    }
    ConfList::parse(base.to_string().as_bytes()).unwrap()
}

fn cni(st: &LabState, i: usize) -> Cni {
    pods::cni(st, i).unwrap()
}

fn code(e: &CniCallError) -> u32 {
    e.cni().map(|c| c.code).unwrap_or(0)
}

fn ip_of(result: &Value) -> String {
    result["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn a_chain_with_portmap_adds_checks_and_deletes_in_reverse_and_leaves_nothing() {
    require_root();
    let name = "cnichain";
    let _g = Guard(name.into());
    let mut st = up(name, Mode::Vxlan, 1);
    let before = holdings(&st, 0);
    assert_eq!(
        before.0.len(),
        2,
        "the lab's two pods came through the plugin: {before:?}"
    );
    assert_eq!(before.0, before.1);
    let ns = pod_ns(&mut st, "c");
    let portmap = json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": true});
    // Debian's portmap stops at 1.0.0; GC and STATUS (1.1.0) are asked of
    // the plugin alone below.
    let list = conflist(&st, 0, "1.0.0", json!({}), &[portmap]);
    let list11 = conflist(&st, 0, "1.1.0", json!({}), &[]);
    let mut r = rt("chain1", &ns);
    r.capability_args.insert(
        "portMappings".into(),
        json!([{"hostPort": 18080, "containerPort": 8080, "protocol": "tcp"}]),
    );
    let c = cni(&st, 0);
    let result = c.add_network_list(&list, &r).expect("ADD");
    assert_eq!(result["cniVersion"], "1.0.0", "{result}");
    let ifs = result["interfaces"].as_array().unwrap();
    assert_eq!(ifs.len(), 2, "{result}");
    assert!(ifs[0]["name"].as_str().unwrap().starts_with("sl"));
    assert_eq!(ifs[1]["name"], "eth0");
    assert_eq!(ifs[1]["sandbox"], format!("/run/netns/{ns}"));
    assert!(
        ifs[1].get("mtu").is_none(),
        "interface MTU is a 1.1.0 field"
    );
    assert_eq!(result["ips"][0]["interface"], 1);
    assert_eq!(result["ips"][0]["gateway"], "10.77.1.1");
    assert!(
        result["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["dst"] == "0.0.0.0/0" && r["gw"] == "10.77.1.1"),
        "{result}"
    );
    let ip = ip_of(&result);
    // The pod end: its address, MTU, default route, offloads off.
    let addr = sh(&["ip", "-n", &ns, "-o", "addr", "show", "eth0"]);
    assert!(addr.contains(&format!("{ip}/24")), "{addr}");
    assert!(sh(&["ip", "-n", &ns, "link", "show", "eth0"]).contains("mtu 1450"));
    assert!(sh(&["ip", "-n", &ns, "route"]).contains("default via 10.77.1.1 dev eth0"));
    let k = sh(&["ip", "netns", "exec", &ns, "ethtool", "-k", "eth0"]);
    assert!(k.contains("tx-checksumming: off"), "{k}");
    // Forwarding across nodes, and the cache libcni keeps.
    assert!(ping(&ns, &st.nodes[1].pods[0].1));
    assert!(c.cached_result(&list, &r).unwrap().is_some());
    // portmap got the plugin's result as prevResult and mapped the port:
    // the node reaches the pod through its own address.
    let nat = sh(&[
        "ip",
        "netns",
        "exec",
        &st.nodes[0].ns,
        "iptables-save",
        "-t",
        "nat",
    ]);
    assert!(nat.contains("18080"), "{nat}");
    let mut server = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            "timeout",
            "10",
            "sh",
            "-c",
            "echo from-the-pod | nc -l -p 8080",
        ])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let got = sh(&[
        "ip",
        "netns",
        "exec",
        &st.nodes[0].ns,
        "timeout",
        "5",
        "nc",
        "-w",
        "2",
        &st.nodes[0].ip,
        "18080",
    ]);
    let _ = server.wait();
    assert_eq!(got.trim(), "from-the-pod");
    // Debian's portmap 1.1.1 CHECK looks for its IPv4 rule in ip6tables
    // too and fails (fixed upstream); it runs after the plugin, so this
    // error means the plugin's CHECK passed.
    if let Err(e) = c.check_network_list(&list, &r) {
        let p = e.cni().expect("a plugin's error");
        assert!(p.plugin == "portmap" && p.msg.contains("ipv6 dnat"), "{e}");
    }
    c.check_network_list(&list11, &r)
        .expect("CHECK of the plugin alone");
    c.status_network_list(&list11).expect("STATUS");
    let mut valid: Vec<(String, String)> = st.nodes[0]
        .pods
        .iter()
        .map(|p| (p.0.clone(), "eth0".to_string()))
        .collect();
    valid.push(("chain1".into(), "eth0".into()));
    c.gc_network_list(&list, &valid)
        .expect("GC keeping everything");
    assert_eq!(holdings(&st, 0).0.len(), 3);
    c.del_network_list(&list, &r).expect("DEL");
    let nat = sh(&[
        "ip",
        "netns",
        "exec",
        &st.nodes[0].ns,
        "iptables-save",
        "-t",
        "nat",
    ]);
    assert!(!nat.contains("18080"), "portmap's DEL ran: {nat}");
    assert_eq!(holdings(&st, 0), before, "DEL released everything");
    assert!(c.cached_result(&list, &r).unwrap().is_none());
    c.del_network_list(&list, &r)
        .expect("a second DEL succeeds");
}

#[test]
fn results_follow_the_version_the_runtime_asked_for() {
    require_root();
    let name = "cnivers";
    let _g = Guard(name.into());
    let mut st = up(name, Mode::Vxlan, 1);
    let c = cni(&st, 0);
    for (k, v) in ["0.3.1", "0.4.0", "1.0.0", "1.1.0"].iter().enumerate() {
        let ns = pod_ns(&mut st, &k.to_string());
        let list = conflist(&st, 0, v, json!({}), &[]);
        let r = rt(&format!("v{k}"), &ns);
        let res = c
            .add_network_list(&list, &r)
            .unwrap_or_else(|e| panic!("{v}: {e}"));
        assert_eq!(res["cniVersion"], *v, "{res}");
        let legacy = v.starts_with("0.");
        assert_eq!(res["ips"][0].get("version").is_some(), legacy, "{v}: {res}");
        assert_eq!(
            res["interfaces"][1].get("mtu").is_some(),
            *v == "1.1.0",
            "{v}: {res}"
        );
        if *v != "0.3.1" {
            c.check_network_list(&list, &r)
                .unwrap_or_else(|e| panic!("{v} CHECK: {e}"));
        }
        assert!(ping(&ns, &st.nodes[1].pods[1].1), "{v}");
        c.del_network_list(&list, &r)
            .unwrap_or_else(|e| panic!("{v} DEL: {e}"));
    }
    // A version the plugin does not know is refused with code 1.
    let ns = pod_ns(&mut st, "u");
    let e = c
        .add_network_list(&conflist(&st, 0, "9.9.9", json!({}), &[]), &rt("vu", &ns))
        .unwrap_err();
    assert_eq!(code(&e), 1, "{e}");
}

#[test]
fn host_local_is_delegated_with_the_subnet_file_range_and_released_on_del() {
    require_root();
    let name = "cnihl";
    let _g = Guard(name.into());
    let mut st = up(name, Mode::Vxlan, 1);
    let dir = tempfile::tempdir().unwrap();
    let hl = dir.path().join("host-local");
    // host-local 1.1.1 stops at 1.0.0: the plugin asks it again at 1.0.0.
    let list = conflist(
        &st,
        0,
        "1.1.0",
        json!({"ipam": {"type": "host-local", "dataDir": hl,
            "ranges": [[{"subnet": "10.77.1.0/24", "rangeStart": "10.77.1.100"}]]}}),
        &[],
    );
    let ns = pod_ns(&mut st, "h");
    let r = rt("hl1", &ns);
    let c = cni(&st, 0);
    let res = c.add_network_list(&list, &r).expect("ADD with host-local");
    let ip = ip_of(&res);
    assert!(ip.starts_with("10.77.1."), "{res}");
    assert!(
        hl.join("sluice").join(&ip).exists(),
        "host-local's lease file"
    );
    assert!(ping(&ns, &st.nodes[1].pods[0].1));
    c.check_network_list(&list, &r).expect("CHECK");
    c.del_network_list(&list, &r).expect("DEL");
    assert!(
        !hl.join("sluice").join(&ip).exists(),
        "host-local released it"
    );
}

#[test]
fn gc_removes_every_attachment_not_listed_as_valid() {
    require_root();
    let name = "cnigc";
    let _g = Guard(name.into());
    let mut st = up(name, Mode::Vxlan, 1);
    let before = holdings(&st, 0);
    let (na, nb) = (pod_ns(&mut st, "a"), pod_ns(&mut st, "b"));
    let list = conflist(&st, 0, "1.1.0", json!({}), &[]);
    let c = cni(&st, 0);
    c.add_network_list(&list, &rt("gc-a", &na)).unwrap();
    c.add_network_list(&list, &rt("gc-b", &nb)).unwrap();
    assert_eq!(holdings(&st, 0).0.len(), 4);
    let mut valid: Vec<(String, String)> = st.nodes[0]
        .pods
        .iter()
        .map(|p| (p.0.clone(), "eth0".to_string()))
        .collect();
    valid.push(("gc-a".into(), "eth0".into()));
    c.gc_network_list(&list, &valid).expect("GC");
    let after = holdings(&st, 0);
    assert_eq!(after.0.len(), 3, "{after:?}");
    assert_eq!(after.0, after.1);
    assert_eq!(after.2.len(), 3);
    assert_eq!(after.3.len(), 3);
    assert!(
        ping(&na, &st.nodes[1].pods[0].1),
        "the valid one still forwards"
    );
    assert!(Command::new("ip")
        .args(["-n", &nb, "link", "show", "eth0"])
        .output()
        .unwrap()
        .stdout
        .is_empty());
    // A damaged record: its port and veth go with it; a file that is not
    // a record of the plugin's (not named as its host ends are) stays.
    let host_a = sluice_api::attachment::host_ifname("sluice", "gc-a", "eth0");
    let dir = pods::records_dir(&st.nodes[0]);
    std::fs::write(dir.join(format!("{host_a}.json")), b"{damaged").unwrap();
    std::fs::write(dir.join("eth0.json"), b"{not ours").unwrap();
    c.gc_network_list(&list, &valid).expect("GC");
    assert!(!dir.join(format!("{host_a}.json")).exists());
    assert!(dir.join("eth0.json").exists());
    assert!(sh(&["ip", "-n", &st.nodes[0].ns, "link", "show", "eth0"]).contains("eth0"));
    std::fs::remove_file(dir.join("eth0.json")).unwrap();
    valid.pop();
    c.gc_network_list(&list, &valid).expect("GC");
    assert_eq!(holdings(&st, 0), before);
}

#[test]
fn del_succeeds_whatever_is_already_gone() {
    require_root();
    let name = "cnidel";
    let _g = Guard(name.into());
    let mut st = up(name, Mode::Vxlan, 1);
    let before = holdings(&st, 0);
    let list = conflist(&st, 0, "1.0.0", json!({}), &[]);
    let c = cni(&st, 0);
    let nss: Vec<String> = (0..4).map(|k| pod_ns(&mut st, &k.to_string())).collect();
    let results: Vec<Value> = (0..4)
        .map(|k| {
            c.add_network_list(&list, &rt(&format!("d{k}"), &nss[k]))
                .unwrap()
        })
        .collect();
    // 0: the pod's namespace is gone (and the veth with it).
    sh(&["ip", "netns", "del", &nss[0]]);
    c.del_network_list(&list, &rt("d0", &nss[0]))
        .expect("DEL without a netns");
    // 1: the interface is gone.
    let host1 = results[1]["interfaces"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    sh(&["ip", "-n", &st.nodes[0].ns, "link", "del", &host1]);
    c.del_network_list(&list, &rt("d1", &nss[1]))
        .expect("DEL without the veth");
    // 2: the address was released already.
    let lease = pods::data_dir(&st.nodes[0])
        .join("ipam/sluice")
        .join(ip_of(&results[2]));
    std::fs::remove_file(&lease).unwrap();
    c.del_network_list(&list, &rt("d2", &nss[2]))
        .expect("DEL of a released address");
    // 3: sluiced is not running.
    let pid = st.nodes[0].sluiced_pid.unwrap();
    lab::end_daemon(pid, st.nodes[0].sluiced_start, true);
    c.del_network_list(&list, &rt("d3", &nss[3]))
        .expect("DEL with sluiced down");
    lab::restart_sluiced(&mut st, 0, false).unwrap();
    let n = st.nodes[0].clone();
    eventually(10, "the lab's pods back from their records", || {
        sluice_api::Client::new(&n.api_socket)
            .ports()
            .map(|l| {
                l.ports
                    .iter()
                    .filter(|p| p.kind == sluice_api::PortKind::Pod)
                    .count()
                    == 2
            })
            .unwrap_or(false)
    });
    assert_eq!(
        holdings(&st, 0),
        before,
        "nothing of d0..d3 is left, and d3 was not re-attached"
    );
}

#[test]
fn a_failed_add_leaves_nothing_behind_and_names_the_problem() {
    require_root();
    let name = "cnifail";
    let _g = Guard(name.into());
    let mut st = up(name, Mode::Vxlan, 1);
    let before = holdings(&st, 0);
    let c = cni(&st, 0);
    let ns = pod_ns(&mut st, "f");
    // Bad config fields: code 7, naming the field.
    for (extra, field) in [
        (json!({"mtu": "big"}), "mtu"),
        (json!({"sluicedSocket": 7}), "sluicedSocket"),
        (json!({"ipam": {"type": "no-such-ipam"}}), "no-such-ipam"),
    ] {
        let e = c
            .add_network_list(&conflist(&st, 0, "1.0.0", extra, &[]), &rt("f1", &ns))
            .unwrap_err();
        assert_eq!(code(&e), 7, "{e}");
        assert!(e.to_string().contains(field), "{e}");
        assert_eq!(holdings(&st, 0), before);
    }
    // CNI_IFNAME exists in the pod already: the address taken is given back.
    sh(&[
        "ip", "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
    ]);
    let list = conflist(&st, 0, "1.0.0", json!({}), &[]);
    let e = c.add_network_list(&list, &rt("f2", &ns)).unwrap_err();
    assert_eq!(code(&e), 103, "{e}");
    assert!(e.to_string().contains("already exists"), "{e}");
    assert_eq!(holdings(&st, 0), before);
    sh(&["ip", "-n", &ns, "link", "del", "eth0"]);
    // sluiced refuses the port (host-local hands out a lab pod's address):
    // veth, lease and record are taken back.
    let dir = tempfile::tempdir().unwrap();
    let taken = st.nodes[0].pods[0].1.clone();
    let hl = json!({"ipam": {"type": "host-local", "dataDir": dir.path(),
        "ranges": [[{"subnet": "10.77.1.0/24", "rangeStart": taken, "rangeEnd": taken}]]}});
    let e = c
        .add_network_list(&conflist(&st, 0, "1.0.0", hl, &[]), &rt("f3", &ns))
        .unwrap_err();
    assert_eq!(code(&e), 101, "{e}");
    assert!(e.to_string().contains(&taken), "{e}");
    assert_eq!(holdings(&st, 0), before);
    assert!(
        !dir.path().join("sluice").join(&taken).exists(),
        "host-local's lease released"
    );
    // sluiced unreachable: try again later (11).
    let pid = st.nodes[0].sluiced_pid.unwrap();
    lab::end_daemon(pid, st.nodes[0].sluiced_start, false);
    let e = c.add_network_list(&list, &rt("f4", &ns)).unwrap_err();
    assert_eq!(code(&e), 11, "{e}");
    assert!(e.to_string().contains("not reachable"), "{e}");
    let (_, veths, records, leases) = holdings(&st, 0);
    assert_eq!(
        (veths, records, leases),
        (before.1.clone(), before.2.clone(), before.3.clone())
    );
    assert!(Command::new("ip")
        .args(["-n", &ns, "link", "show", "eth0"])
        .output()
        .unwrap()
        .stdout
        .is_empty());
}

#[test]
fn status_fails_with_the_spec_codes_while_sluiced_or_the_subnet_file_is_missing() {
    require_root();
    let name = "cnistat";
    let _g = Guard(name.into());
    let mut st = up(name, Mode::Vxlan, 1);
    let c = cni(&st, 0);
    let list = conflist(&st, 0, "1.1.0", json!({}), &[]);
    c.status_network_list(&list).expect("ready");
    // The subnet file is missing (50): the agent has not leased yet.
    let sf = sluice_perf::cluster::subnet_file(&st, 0);
    let aside = sf.with_extension("aside");
    // Stop the agent so it does not write the file back.
    let agent = st.nodes[0].agent_pid.unwrap();
    lab::end_daemon(agent, st.nodes[0].agent_start, false);
    std::fs::rename(&sf, &aside).unwrap();
    let e = c.status_network_list(&list).unwrap_err();
    assert_eq!(code(&e), 50, "{e}");
    assert!(e.to_string().contains("subnet file"), "{e}");
    std::fs::rename(&aside, &sf).unwrap();
    c.status_network_list(&list).expect("ready again");
    // sluiced down (51): existing pods lose connectivity.
    let pid = st.nodes[0].sluiced_pid.unwrap();
    lab::end_daemon(pid, st.nodes[0].sluiced_start, false);
    let e = c.status_network_list(&list).unwrap_err();
    assert_eq!(code(&e), 51, "{e}");
    lab::restart_sluiced(&mut st, 0, false).unwrap();
    c.status_network_list(&list)
        .expect("ready after sluiced restarts");
}

#[test]
fn a_hundred_concurrent_adds_then_dels_share_no_address_and_leak_nothing() {
    require_root();
    let name = "cni100";
    let _g = Guard(name.into());
    let mut st = up(name, Mode::Vxlan, 1);
    let before = holdings(&st, 0);
    let nss: Vec<String> = (0..100).map(|k| pod_ns(&mut st, &k.to_string())).collect();
    let list = std::sync::Arc::new(conflist(&st, 0, "1.1.0", json!({}), &[]));
    let started = Instant::now();
    let adds: Vec<_> = nss
        .iter()
        .enumerate()
        .map(|(k, ns)| {
            let (c, list, r) = (cni(&st, 0), list.clone(), rt(&format!("p{k}"), ns));
            std::thread::spawn(move || {
                c.add_network_list(&list, &r)
                    .map(|v| ip_of(&v))
                    .map_err(|e| e.to_string())
            })
        })
        .collect();
    let ips: Vec<String> = adds
        .into_iter()
        .map(|h| h.join().unwrap().expect("ADD"))
        .collect();
    println!("100 concurrent ADDs: {:?}", started.elapsed());
    let unique: HashSet<&String> = ips.iter().collect();
    assert_eq!(unique.len(), 100, "duplicate addresses: {ips:?}");
    for ip in &ips {
        assert!(
            !st.nodes[0].pods.iter().any(|p| &p.1 == ip),
            "{ip} is a lab pod's"
        );
    }
    let during = holdings(&st, 0);
    assert_eq!(
        (
            during.0.len(),
            during.1.len(),
            during.2.len(),
            during.3.len()
        ),
        (102, 102, 102, 102)
    );
    assert!(ping(&nss[99], &st.nodes[1].pods[0].1));
    let dels: Vec<_> = nss
        .iter()
        .enumerate()
        .map(|(k, ns)| {
            let (c, list, r) = (cni(&st, 0), list.clone(), rt(&format!("p{k}"), ns));
            std::thread::spawn(move || c.del_network_list(&list, &r).map_err(|e| e.to_string()))
        })
        .collect();
    for h in dels {
        h.join().unwrap().expect("DEL");
    }
    assert_eq!(
        holdings(&st, 0),
        before,
        "no veth, port, lease or record left"
    );
}

/// Milliseconds since the epoch.
fn now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1e3
}

/// Pings every 5 ms from `from` to `to` for `secs`, printing timestamps.
fn ping_log(from: &str, to: &str, secs: u32) -> std::process::Child {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            from,
            "ping",
            "-D",
            "-n",
            "-i",
            "0.005",
            "-W",
            "1",
            "-w",
            &secs.to_string(),
            to,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// The first reply at or after `t_ms` (epoch milliseconds).
fn first_reply_after(out: &str, t_ms: f64) -> Option<f64> {
    out.lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| l.strip_prefix('[')?.split(']').next()?.parse::<f64>().ok())
        .map(|s| s * 1e3)
        .find(|&ms| ms >= t_ms)
}

#[test]
fn a_killed_sluiced_forwards_for_its_pods_again_from_their_records() {
    require_root();
    let name = "cnirst";
    let _g = Guard(name.into());
    let mut st = up(name, Mode::Vxlan, 1);
    let (p0, p1) = (st.nodes[0].pods[0].clone(), st.nodes[0].pods[1].clone());
    let remote = st.nodes[1].pods[0].1.clone();
    assert!(ping(&p0.0, &p1.1) && ping(&p0.0, &remote));
    let local = ping_log(&p0.0, &p1.1, 12);
    let across = ping_log(&p1.0, &remote, 12);
    std::thread::sleep(Duration::from_secs(2));
    let killed = now_ms();
    lab::restart_sluiced(&mut st, 0, true).unwrap();
    let started = now_ms();
    let local = String::from_utf8_lossy(&local.wait_with_output().unwrap().stdout).into_owned();
    let across = String::from_utf8_lossy(&across.wait_with_output().unwrap().stdout).into_owned();
    let back_local = first_reply_after(&local, started).expect("pods on the node forward again");
    let back_across = first_reply_after(&across, started).expect("pods forward across nodes again");
    println!(
        "sluiced killed (SIGKILL) and restarted: start took {:.0} ms; pod to pod on the node back {:.0} ms after the start ({:.0} ms after the kill); across nodes {:.0} ms after the start",
        started - killed,
        back_local - started,
        back_local - killed,
        back_across - started
    );
    assert_eq!(
        holdings(&st, 0).0.len(),
        2,
        "both pods re-attached from their records"
    );
}

#[test]
fn a_vhost_user_pod_on_an_af_xdp_node_is_refused_naming_the_backend_and_leaves_nothing() {
    require_root();
    let name = "cnivhu";
    let _g = Guard(name.into());
    let mut st = up(name, Mode::Vxlan, 1);
    let before = holdings(&st, 0);
    let c = cni(&st, 0);
    let ns = pod_ns(&mut st, "v");
    let dir = tempfile::tempdir().unwrap();
    let sockets = dir.path().join("vhost");
    // vhost-user mode (not on Kubernetes: <socketDir>/<container id>/):
    // the address, the socket directory and its contract file, the record,
    // then ports.add, which sluiced on AF_XDP refuses; all taken back.
    let extra = json!({"mode": "vhost-user", "vhostUser": {"socketDir": sockets}});
    let e = c
        .add_network_list(&conflist(&st, 0, "1.0.0", extra, &[]), &rt("v1", &ns))
        .unwrap_err();
    assert_eq!(code(&e), 101, "{e}");
    assert!(e.to_string().contains("DPDK backend"), "{e}");
    assert!(
        e.to_string().contains("v1/eth0.sock"),
        "names the socket: {e}"
    );
    assert_eq!(holdings(&st, 0), before);
    let left: Vec<_> = std::fs::read_dir(&sockets)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "the socket directory is gone: {left:?}");
    assert!(
        Command::new("ip")
            .args(["-n", &ns, "link", "show", "eth0"])
            .output()
            .unwrap()
            .stdout
            .is_empty(),
        "no interface in the pod"
    );
}
