//! Privileged tier for BGP: sluice nodes whose agents learn routes over
//! BGP, against real BIRD 2 and GoBGP in network namespaces.
//!
//! - A Calico node (BIRD on a kernel node, pods on a bridge, its learned
//!   routes in its kernel) in a full mesh with two sluice nodes over
//!   host-gw: pods ping and exchange TCP across all three, a withdrawal in
//!   BIRD removes the route in sluiced, an agent killed during traffic
//!   comes back through graceful restart with nothing lost and no route
//!   changed, and a flap of node 1's session to BIRD (`ss -K`) loses no
//!   ping and leaves sluiced's route alone.
//! - Route reflection over IPIP: the sluice nodes peer only with the BIRD
//!   node, a route reflector, and their pods talk over IPIP on the reflected
//!   routes. Where the kernel has IPIP (`tunl0`; this CI kernel has no
//!   CONFIG_NET_IPIP), the BIRD node's pods are reached too, with Felix's
//!   part (its `tunl0` routes from BIRD's table) done by the test.
//! - BIRD and GoBGP as outside peers of a sluice node: routes both ways,
//!   withdrawals on either side.
//!
//! ```text
//! cargo build -p sluiced -p sluicectl -p sluice-control -p sluice-cni --bins
//! cargo test -p sluice-perf --features privileged-tests --test bgp -- --test-threads=1
//! ```

mod support;

use sluice_perf::cluster;
use sluice_perf::lab::{self, BgpLab, LabSpec, LabState, Mode};
use sluice_perf::peers::{bird_config, Bird, BirdPeer, Gobgp, GobgpNeighbor, StaticTarget};
use std::net::Ipv4Addr;
use std::time::Duration;
use support::{eventually, ping, pinger, require_root, tcp, Guard};

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn routes_of(n: &lab::NodeState) -> Vec<sluice_api::RouteConfig> {
    let mut r = sluice_api::Client::new(&n.api_socket)
        .routes()
        .unwrap()
        .routes;
    r.sort_by_key(|r| r.prefix.to_string());
    r
}

fn route_to(n: &lab::NodeState, prefix: &str) -> Option<sluice_api::RouteConfig> {
    routes_of(n)
        .into_iter()
        .find(|r| r.prefix.to_string() == prefix)
}

fn agent_log(st: &LabState, i: usize) -> String {
    std::fs::read_to_string(lab::state_dir().join(format!("{}-agent.log", st.nodes[i].ns)))
        .unwrap_or_default()
}

/// BIRD on kernel node `i` as a Calico node: its block as a blackhole
/// route, a session to each of `peers` (name, address, rr client).
fn calico_bird(st: &LabState, i: usize, peers: &[(&str, &str, bool)], kernel_export: bool) -> Bird {
    let n = &st.nodes[i];
    let me = ip(&n.ip);
    let bird_peers: Vec<BirdPeer> = peers
        .iter()
        .map(|(name, addr, rr)| BirdPeer {
            name: name.to_string(),
            address: ip(addr),
            asn: 64512,
            // Calico: passive when the peer's address is greater.
            passive: ip(addr) > me,
            rr_client: *rr,
            graceful_restart: true,
        })
        .collect();
    let rr = peers.iter().any(|p| p.2).then_some(me);
    let conf = bird_config(
        me,
        64512,
        &bird_peers,
        &[(n.subnet.as_str(), StaticTarget::Blackhole)],
        kernel_export,
        rr,
    );
    Bird::start(&n.ns, &format!("{}-bird", n.ns), &conf).expect("BIRD starts")
}

/// BIRD on node 3 of a three-node BGP lab, peering with nodes 1 and 2 (as
/// their route reflector when `rr`): its sessions come up, and both sluice
/// nodes route each other node's block `via` to the node that announced it.
fn bird_on_node_3(st: &LabState, rr: bool, kernel_export: bool, via: sluice_api::Via) -> Bird {
    let (n1, n2) = (st.nodes[0].ip.clone(), st.nodes[1].ip.clone());
    let bird = calico_bird(st, 2, &[("n1", &n1, rr), ("n2", &n2, rr)], kernel_export);
    for p in ["n1", "n2"] {
        bird.wait_established(p, Duration::from_secs(20))
            .expect("BIRD's sessions");
    }
    cluster::wait_for_routes(st, Duration::from_secs(20)).expect("every block in sluiced");
    for (i, other) in [(0, 1), (0, 2), (1, 0), (1, 2)] {
        let r = route_to(&st.nodes[i], &st.nodes[other].subnet).unwrap();
        assert_eq!(r.via, via, "{r:?}");
        assert_eq!(r.node, Some(ip(&st.nodes[other].ip)), "{r:?}");
    }
    bird
}

/// Every pod of node `a` reaches every pod of node `b` (ping), and TCP
/// carries 200 kB from the first to the second.
fn pods_talk(st: &LabState, a: usize, b: usize, port: u16) {
    for (from, _) in &st.nodes[a].pods {
        for (_, to) in &st.nodes[b].pods {
            assert!(ping(from, to), "{from} -> {to}");
        }
    }
    let (from, _) = &st.nodes[a].pods[0];
    let (to_ns, to_ip) = &st.nodes[b].pods[1];
    assert_eq!(
        tcp(from, to_ns, to_ip, port, 200_000),
        200_000,
        "TCP {from} -> {to_ip}"
    );
}

fn bgp_lab(name: &str, mode: Mode, bgp: BgpLab) -> LabState {
    lab::up(
        &LabSpec {
            kernel_nodes: vec![3],
            bgp: Some(bgp),
            ..LabSpec::new(name, 3, mode)
        },
        &mut |_| {},
    )
    .expect("lab up")
}

fn metric(st: &LabState, i: usize, name: &str) -> String {
    let n = &st.nodes[i];
    let out = lab::ns_run(
        &n.ns,
        &[
            "curl",
            "-s",
            &format!("http://{}/metrics", cluster::AGENT_HEALTHZ_IN_NODE),
        ],
    )
    .unwrap_or_default();
    out.lines()
        .filter(|l| l.starts_with(name))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_bird_node_and_two_sluice_nodes_in_a_full_mesh_over_host_gw() {
    require_root();
    let name = "bgpm";
    let _guard = Guard(name.to_string());
    let mut st = bgp_lab(name, Mode::HostGw, BgpLab::default());
    // sluiced: host-gw to the BIRD node and to the other sluice node.
    let mut bird = bird_on_node_3(&st, false, true, sluice_api::Via::HostGw);
    // BIRD learned both sluice blocks and put them in its kernel.
    eventually(10, "BIRD's kernel routes", || {
        let kr = lab::ns_run(&st.nodes[2].ns, &["ip", "route"]).unwrap_or_default();
        kr.contains("10.77.1.0/24 via 192.168.77.1") && kr.contains("10.77.2.0/24 via 192.168.77.2")
    });
    pods_talk(&st, 0, 1, 5301);
    pods_talk(&st, 0, 2, 5302);
    pods_talk(&st, 2, 1, 5303);

    // The agent reports its sessions.
    let s = cluster::agent_bgp_status(&st, 0).unwrap();
    assert!(s.converged);
    assert_eq!(s.announced, vec!["10.77.1.0/24".to_string()]);
    for p in &s.peers {
        assert_eq!(p.state, "Established", "{p:?}");
        assert_eq!(p.prefixes_received, 1, "{p:?}");
        assert!(p.end_of_rib);
    }
    let table = lab::ns_run(
        &st.nodes[0].ns,
        &[
            &cluster::agent_path().to_string_lossy(),
            "--healthz-address",
            cluster::AGENT_HEALTHZ_IN_NODE,
            "bgp",
            "peers",
        ],
    )
    .unwrap();
    assert!(
        table.contains("192.168.77.3") && table.contains("Established"),
        "{table}"
    );
    assert!(
        metric(&st, 0, "sluice_agent_bgp_session_state").contains("{peer=\"192.168.77.3\"} 6"),
        "{}",
        metric(&st, 0, "sluice_agent_bgp")
    );

    // A withdrawal in BIRD removes the route in sluiced; back again.
    bird.birdc("disable static1").unwrap();
    eventually(10, "the BIRD node's block withdrawn from sluiced", || {
        route_to(&st.nodes[0], "10.77.3.0/24").is_none()
            && route_to(&st.nodes[1], "10.77.3.0/24").is_none()
    });
    bird.birdc("enable static1").unwrap();
    eventually(10, "the BIRD node's block back", || {
        route_to(&st.nodes[0], "10.77.3.0/24").is_some()
    });

    // The path to the BIRD node's pods works again (sluiced resolved the
    // re-added route's next hop).
    assert!(ping(&st.nodes[0].pods[0].0, &st.nodes[2].pods[1].1));

    // Graceful restart: node 1's agent killed during traffic to both other
    // nodes, then started again.
    let before = routes_of(&st.nodes[0]);
    let drops_before: Vec<_> = st.nodes[..2]
        .iter()
        .map(|n| {
            sluice_api::Client::new(&n.api_socket)
                .stats()
                .unwrap()
                .drops
        })
        .collect();
    let pingers: Vec<_> = [(0usize, 2usize), (1, 0)]
        .iter()
        .map(|&(a, b)| pinger(&st.nodes[a].pods[0].0, &st.nodes[b].pods[1].1, 500))
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    cluster::stop_agent(&mut st, 0, true);
    // BIRD keeps node 1's block, stale, while the agent is away.
    eventually(10, "BIRD helping node 1's graceful restart", || {
        bird.graceful_restart_active("n1").unwrap_or(false)
    });
    let stale = bird.routes().unwrap();
    let r = stale
        .iter()
        .find(|r| r.prefix == "10.77.1.0/24")
        .expect("kept through the restart");
    assert!(r.stale, "{r:?}");
    assert!(lab::ns_run(&st.nodes[2].ns, &["ip", "route"])
        .unwrap()
        .contains("10.77.1.0/24 via 192.168.77.1"));
    cluster::start_agent(&mut st, 0).unwrap();
    for p in pingers {
        let out = p.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let drops: Vec<_> = st.nodes[..2]
            .iter()
            .zip(&drops_before)
            .map(|(n, b)| {
                let now = sluice_api::Client::new(&n.api_socket)
                    .stats()
                    .unwrap()
                    .drops;
                now.into_iter()
                    .filter(|(k, v)| *v > b.get(k).copied().unwrap_or(0))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert!(
            text.contains("500 packets transmitted, 500 received"),
            "every packet through the restart: {text}\nsluiced drops that moved: {drops:?}\nthe BIRD node's routes: {}",
            lab::ns_run(&st.nodes[2].ns, &["ip", "route"]).unwrap_or_default()
        );
    }
    eventually(
        20,
        "BIRD's graceful restart over, the block refreshed",
        || {
            !bird.graceful_restart_active("n1").unwrap_or(true)
                && bird
                    .routes()
                    .unwrap_or_default()
                    .iter()
                    .any(|r| r.prefix == "10.77.1.0/24" && !r.stale)
        },
    );
    eventually(20, "the new agent converged", || {
        cluster::agent_bgp_status(&st, 0).is_ok_and(|s| s.converged)
    });
    assert_eq!(
        routes_of(&st.nodes[0]),
        before,
        "no route changed in sluiced"
    );
    let log = agent_log(&st, 0);
    let last_run = &log[log.rfind("BGP speaker started").unwrap()..];
    assert!(
        last_run.contains("BGP converged after the start"),
        "{last_run}"
    );
    assert!(!last_run.contains("route removed"), "{last_run}");
    assert!(
        metric(&st, 0, "sluice_agent_route_changes_total").is_empty()
            || !metric(&st, 0, "sluice_agent_route_changes_total")
                .lines()
                .any(|l| !l.ends_with(" 0")),
        "the new agent changed routes: {}",
        metric(&st, 0, "sluice_agent_route_changes_total")
    );

    peer_flap_loses_nothing(&st, &bird);
    bird.stop();
}

/// The value of counter line `line` (name and labels) in node `i`'s agent
/// metrics; 0 when absent.
fn counter(st: &LabState, i: usize, line: &str) -> u64 {
    metric(st, i, line)
        .lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Node `i`'s sluiced drop counters.
fn drops(st: &LabState, i: usize) -> std::collections::BTreeMap<String, u64> {
    sluice_api::Client::new(&st.nodes[i].api_socket)
        .stats()
        .unwrap()
        .drops
}

/// A peer flap in the mesh: the TCP connection of the BIRD <-> node 1
/// session killed (`ss -K`, so no NOTIFICATION either way) during 10 ms
/// pings both ways between a pod of the BIRD node and a pod of node 1 (the
/// BIRD node's host is no source sluiced's host-gw check admits). BIRD did
/// not restart, so its new OPEN has F (and R) clear; node 1's agent keeps
/// BIRD's block, stale, through the new session until BIRD's End-of-RIB
/// has announced it again. Nothing is lost, and neither sluiced's route
/// nor the agent's programming of it moves.
fn peer_flap_loses_nothing(st: &LabState, bird: &Bird) {
    const BIRD: &str = "192.168.77.3";
    let bird_block = st.nodes[2].subnet.clone();
    let peer = |s: &sluice_control::bgp::speaker::BgpStatus| {
        s.peers.iter().find(|p| p.address == ip(BIRD)).cloned()
    };
    let s = cluster::agent_bgp_status(st, 0).unwrap();
    let before = peer(&s).expect("node 1 peers with BIRD");
    assert_eq!(before.state, "Established", "{before:?}");
    let route_before = route_to(&st.nodes[0], &bird_block).expect("the BIRD node's block");
    let removes = "sluice_agent_route_changes_total{op=\"remove\"}";
    let upserts = "sluice_agent_route_changes_total{op=\"upsert\"}";
    let (removes_before, upserts_before) = (counter(st, 0, removes), counter(st, 0, upserts));
    let drops_before = drops(st, 0);

    const COUNT: u64 = 1000;
    let (n1_pod, n1_pod_ip) = &st.nodes[0].pods[0];
    let (n3_pod, n3_pod_ip) = &st.nodes[2].pods[0];
    let mut pingers = vec![
        (
            "node 1's pod -> the BIRD node's pod",
            pinger(n1_pod, n3_pod_ip, COUNT),
        ),
        (
            "the BIRD node's pod -> node 1's pod",
            pinger(n3_pod, n1_pod_ip, COUNT),
        ),
    ];
    std::thread::sleep(Duration::from_secs(1));
    let killed = lab::ns_run(
        &st.nodes[0].ns,
        &[
            "ss",
            "-n",
            "-t",
            "-K",
            "dst",
            BIRD,
            "and",
            "( sport = :179 or dport = :179 )",
        ],
    )
    .unwrap();
    assert!(
        killed.contains(&format!("{BIRD}:")),
        "ss -K killed the session's connection: {killed}"
    );
    eventually(
        8,
        "node 1's session to BIRD Established again, End-of-RIB in",
        || {
            cluster::agent_bgp_status(st, 0)
                .ok()
                .and_then(|s| peer(&s))
                .is_some_and(|p| {
                    p.state == "Established"
                        && p.flaps > before.flaps
                        && p.end_of_rib
                        && p.prefixes_stale == 0
                })
        },
    );
    bird.wait_established("n1", Duration::from_secs(5))
        .expect("BIRD's session to node 1");
    // The session came back while the pings still ran: they cover it.
    for (what, p) in &mut pingers {
        assert!(
            p.try_wait().unwrap().is_none(),
            "{what}: the pings ended before the session was back"
        );
    }
    let mut lost = Vec::new();
    for (what, p) in pingers {
        let out = p.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let received = text
            .split(", ")
            .find_map(|f| f.strip_suffix(" received")?.parse::<u64>().ok())
            .unwrap_or(0);
        lost.push((what, COUNT - received, text));
    }
    let moved: Vec<_> = drops(st, 0)
        .into_iter()
        .filter(|(k, v)| *v > drops_before.get(k).copied().unwrap_or(0))
        .collect();
    eprintln!(
        "peer flap: pings lost {:?}",
        lost.iter().map(|(w, n, _)| (*w, *n)).collect::<Vec<_>>()
    );
    assert!(
        lost.iter().all(|(_, n, _)| *n == 0),
        "every ping through the flap: {lost:?}\nnode 1's sluiced drops that moved: {moved:?}\nagent log:\n{}",
        agent_log(st, 0)
    );
    for reason in ["host_gw_source_mismatch", "neighbour_unresolved"] {
        assert!(
            !moved.iter().any(|(k, _)| k == reason),
            "{reason} moved: {moved:?}"
        );
    }
    assert_eq!(
        route_to(&st.nodes[0], &bird_block).as_ref(),
        Some(&route_before),
        "sluiced's route to the BIRD node's block"
    );
    assert_eq!(
        (counter(st, 0, removes), counter(st, 0, upserts)),
        (removes_before, upserts_before),
        "the agent removed or re-added routes over the flap: {}",
        metric(st, 0, "sluice_agent_route_changes_total")
    );
    let after = peer(&cluster::agent_bgp_status(st, 0).unwrap()).unwrap();
    assert_eq!(after.prefixes_received, 1, "{after:?}");
}

#[test]
fn sluice_nodes_as_clients_of_a_bird_route_reflector_over_ipip() {
    require_root();
    let name = "bgprr";
    let _guard = Guard(name.to_string());
    let st = bgp_lab(
        name,
        Mode::Ipip,
        BgpLab {
            reflectors: vec!["192.168.77.3".into()],
            ..BgpLab::default()
        },
    );
    // The two sluice nodes learn each other's block through the reflector,
    // with the next hop of the node that announced it, over IPIP.
    let mut bird = bird_on_node_3(&st, true, false, sluice_api::Via::Ipip);
    let s = cluster::agent_bgp_status(&st, 0).unwrap();
    assert_eq!(s.peers.len(), 1, "only the reflector");
    assert_eq!(s.peers[0].prefixes_received, 2, "{s:?}");
    // Pods across the sluice nodes, over IPIP, on reflected routes.
    pods_talk(&st, 0, 1, 5311);
    pods_talk(&st, 1, 0, 5312);
    // The reflector passed each block on with its originator's next hop.
    let reflected = bird.routes().unwrap();
    for n in &st.nodes[..2] {
        assert!(
            reflected
                .iter()
                .any(|r| r.prefix == n.subnet && r.next_hop == Some(ip(&n.ip))),
            "{reflected:?}"
        );
    }
    // Pods on the BIRD node need the kernel's IPIP (tunl0, Felix's routes):
    // where the kernel has it, they are reached too.
    if lab::ns_run(&st.nodes[2].ns, &["ip", "link", "show", "tunl0"]).is_ok() {
        for r in &reflected {
            if let (Some(nh), true) = (r.next_hop, r.from_proto.starts_with('n')) {
                let nh = nh.to_string();
                let route = [
                    "ip", "route", "replace", &r.prefix, "via", &nh, "dev", "tunl0", "onlink",
                ];
                lab::ns_run(&st.nodes[2].ns, &route).unwrap();
            }
        }
        pods_talk(&st, 0, 2, 5313);
        pods_talk(&st, 2, 1, 5314);
    }
    bird.stop();
}

#[test]
fn bird_and_gobgp_peers_exchange_routes_with_a_sluice_node_both_ways() {
    require_root();
    let name = "bgpx";
    let _guard = Guard(name.to_string());
    let mut st = lab::up(
        &LabSpec {
            bgp: Some(BgpLab {
                extra_peers: vec!["192.168.77.201".into(), "192.168.77.202".into()],
                ..BgpLab::default()
            }),
            ..LabSpec::new(name, 2, Mode::HostGw)
        },
        &mut |_| {},
    )
    .expect("lab up");
    lab::add_underlay_host(&mut st, "bgpx-bird", "bird0", "192.168.77.201").unwrap();
    lab::add_underlay_host(&mut st, "bgpx-gobgp", "gobgp0", "192.168.77.202").unwrap();
    let peers = |passive| -> Vec<BirdPeer> {
        (0..2)
            .map(|i| BirdPeer {
                name: format!("n{}", i + 1),
                address: ip(&st.nodes[i].ip),
                asn: 64512,
                passive,
                rr_client: false,
                graceful_restart: true,
            })
            .collect()
    };
    let mut bird = Bird::start(
        "bgpx-bird",
        "bgpx-bird",
        &bird_config(
            ip("192.168.77.201"),
            64512,
            &peers(false),
            &[("10.77.201.0/24", StaticTarget::Blackhole)],
            false,
            None,
        ),
    )
    .unwrap();
    let neighbors: Vec<GobgpNeighbor> = (0..2)
        .map(|i| GobgpNeighbor {
            address: ip(&st.nodes[i].ip),
            asn: 64512,
            passive: false,
            rr_client: false,
            graceful_restart: true,
        })
        .collect();
    let mut gobgp = Gobgp::start(
        "bgpx-gobgp",
        "bgpx-gobgp",
        &sluice_perf::peers::gobgp_config(ip("192.168.77.202"), 64512, 179, &neighbors),
        50051,
    )
    .unwrap();
    for i in 0..2 {
        bird.wait_established(&format!("n{}", i + 1), Duration::from_secs(20))
            .unwrap();
        gobgp
            .wait_established(ip(&st.nodes[i].ip), Duration::from_secs(20))
            .unwrap();
    }
    gobgp
        .add_route("10.77.202.0/24", ip("192.168.77.202"))
        .unwrap();
    // Both peers' routes in both sluice nodes, host-gw to the peer.
    eventually(15, "BIRD's and GoBGP's routes in sluiced", || {
        (0..2).all(|i| {
            route_to(&st.nodes[i], "10.77.201.0/24")
                .is_some_and(|r| r.node == Some(ip("192.168.77.201")))
                && route_to(&st.nodes[i], "10.77.202.0/24")
                    .is_some_and(|r| r.node == Some(ip("192.168.77.202")))
        })
    });
    // The sluice nodes' blocks in BIRD and GoBGP, next hop the node.
    eventually(10, "the sluice blocks in BIRD and GoBGP", || {
        let b = bird.routes().unwrap_or_default();
        let g = gobgp.rib().unwrap_or_default();
        (0..2).all(|i| {
            let n = &st.nodes[i];
            b.iter()
                .any(|r| r.prefix == n.subnet && r.next_hop == Some(ip(&n.ip)))
                && g.iter().any(|(p, nh)| *p == n.subnet && *nh == ip(&n.ip))
        })
    });
    let s = cluster::agent_bgp_status(&st, 0).unwrap();
    assert_eq!(s.peers.len(), 3, "{s:?}");
    assert!(s.peers.iter().all(|p| p.state == "Established"), "{s:?}");
    // Withdrawals on either side remove the route in sluiced.
    gobgp.del_route("10.77.202.0/24").unwrap();
    eventually(10, "GoBGP's withdrawal in sluiced", || {
        (0..2).all(|i| route_to(&st.nodes[i], "10.77.202.0/24").is_none())
    });
    assert!(
        route_to(&st.nodes[0], "10.77.201.0/24").is_some(),
        "BIRD's route stays"
    );
    bird.birdc("disable static1").unwrap();
    eventually(10, "BIRD's withdrawal in sluiced", || {
        (0..2).all(|i| route_to(&st.nodes[i], "10.77.201.0/24").is_none())
    });
    // The sluice nodes still reach each other throughout.
    assert!(ping(&st.nodes[0].pods[0].0, &st.nodes[1].pods[0].1));
    gobgp.stop();
    bird.stop();
}
