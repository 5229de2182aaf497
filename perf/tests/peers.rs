//! Privileged tier for `sluice_perf::peers` and `sluice_perf::mrt`: real
//! BIRD 2 and GoBGP in network namespaces joined by a veth pair, an iBGP
//! session (AS 64512) between them, routes added and withdrawn on GoBGP as
//! BIRD sees them, graceful restart as BIRD shows it, and 100,000 prefixes
//! from an MRT file through GoBGP into BIRD (the figures are printed: the
//! baseline half of "100,000 prefixes from a GoBGP peer learned by sluice
//! vs by BIRD").
//!
//! ```text
//! flock -o /tmp/sluice-privileged.lock cargo test -p sluice-perf \
//!     --features privileged-tests --test peers -- --test-threads=1 --nocapture
//! ```
//!
//! Every namespace is `pP<pid>-...` and is deleted when its test ends; the
//! daemons are stopped by PID when their handles drop.

mod support;

use sluice_perf::mrt;
use sluice_perf::peers::{
    bird_config, gobgp_config, Bird, BirdPeer, Gobgp, GobgpNeighbor, StaticTarget,
};
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};
use support::{eventually, require_root, sh};

const ASN: u32 = 64512;
const API_PORT: u16 = 50151;

/// Two namespaces, BIRD's and GoBGP's, joined by a veth pair on
/// 192.168.`net`.0/24 (BIRD .1, GoBGP .2); deleted on drop.
struct Pair {
    bird_ns: String,
    gobgp_ns: String,
    bird_ip: Ipv4Addr,
    gobgp_ip: Ipv4Addr,
}

impl Pair {
    fn new(tag: &str, net: u8) -> Pair {
        require_root();
        let p = Pair {
            bird_ns: format!("pP{}-{tag}-b", std::process::id()),
            gobgp_ns: format!("pP{}-{tag}-g", std::process::id()),
            bird_ip: Ipv4Addr::new(192, 168, net, 1),
            gobgp_ip: Ipv4Addr::new(192, 168, net, 2),
        };
        for ns in [&p.bird_ns, &p.gobgp_ns] {
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        sh(&[
            "ip",
            "link",
            "add",
            "vb0",
            "netns",
            &p.bird_ns,
            "type",
            "veth",
            "peer",
            "name",
            "vg0",
            "netns",
            &p.gobgp_ns,
        ]);
        for (ns, dev, ip) in [
            (&p.bird_ns, "vb0", p.bird_ip),
            (&p.gobgp_ns, "vg0", p.gobgp_ip),
        ] {
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                dev,
            ]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        p
    }

    fn tag(&self) -> String {
        self.bird_ns.trim_end_matches("-b").to_string()
    }

    /// BIRD with one iBGP peer, `gobgp`, graceful restart on.
    fn bird(&self, statics: &[(&str, StaticTarget)], kernel_export: bool) -> Bird {
        let conf = bird_config(
            self.bird_ip,
            ASN,
            &[BirdPeer {
                name: "gobgp".into(),
                address: self.gobgp_ip,
                asn: ASN,
                passive: false,
                rr_client: false,
                graceful_restart: true,
            }],
            statics,
            kernel_export,
            None,
        );
        Bird::start(&self.bird_ns, &self.tag(), &conf).expect("BIRD starts")
    }

    /// gobgpd with one iBGP neighbour, BIRD, passive, graceful restart on.
    fn gobgp(&self) -> Gobgp {
        let conf = gobgp_config(
            self.gobgp_ip,
            ASN,
            179,
            &[GobgpNeighbor {
                address: self.bird_ip,
                asn: ASN,
                passive: true,
                rr_client: false,
                graceful_restart: true,
            }],
        );
        Gobgp::start(&self.gobgp_ns, &self.tag(), &conf, API_PORT).expect("gobgpd starts")
    }

    fn kernel_routes(&self) -> Vec<String> {
        sh(&[
            "ip",
            "-n",
            &self.bird_ns,
            "-4",
            "route",
            "show",
            "proto",
            "bird",
        ])
        .lines()
        .map(|l| l.trim().to_string())
        .collect()
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.bird_ns, &self.gobgp_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        // The daemons' logs stay only when the test failed.
        if !std::thread::panicking() {
            let dir = sluice_perf::lab::state_dir();
            for d in ["bird", "gobgp"] {
                let _ = std::fs::remove_file(dir.join(format!("{}-{d}.log", self.tag())));
            }
        }
    }
}

/// Command lines of the processes whose arguments contain `tag`.
fn processes_naming(tag: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if e.file_name().to_string_lossy() == me {
            continue;
        }
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(tag) {
                found.push(cmd);
            }
        }
    }
    found
}

fn gone(pid: u32) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn bird_learns_and_forgets_gobgp_routes_over_ibgp() {
    let pair = Pair::new("x", 93);
    let mut gobgp = pair.gobgp();
    let mut bird = pair.bird(&[("10.200.0.0/26", StaticTarget::Blackhole)], true);
    bird.wait_established("gobgp", Duration::from_secs(20))
        .expect("BIRD established");
    gobgp
        .wait_established(pair.bird_ip, Duration::from_secs(20))
        .expect("GoBGP established");
    assert_eq!(bird.protocol_state("gobgp").unwrap(), "Established");
    assert_eq!(gobgp.neighbor_state(pair.bird_ip).unwrap(), "established");

    // BIRD's static block reaches GoBGP with BIRD as next hop.
    eventually(10, "BIRD's static route in GoBGP's RIB", || {
        gobgp.rib().unwrap() == vec![("10.200.0.0/26".to_string(), pair.bird_ip)]
    });

    for p in ["10.201.0.0/24", "10.201.1.0/24"] {
        gobgp.add_route(p, pair.gobgp_ip).unwrap();
    }
    assert_eq!(gobgp.rib_count().unwrap(), 3);
    eventually(10, "GoBGP's routes in BIRD", || {
        bird.protocol_route_count("gobgp").unwrap() == 2
    });
    let routes = bird.routes().unwrap();
    let learned: Vec<_> = routes.iter().filter(|r| r.from_proto == "gobgp").collect();
    assert_eq!(learned.len(), 2, "{routes:?}");
    for (r, p) in learned.iter().zip(["10.201.0.0/24", "10.201.1.0/24"]) {
        assert_eq!(r.prefix, p);
        assert_eq!(r.next_hop, Some(pair.gobgp_ip));
        assert!(!r.stale && r.primary, "{r:?}");
    }
    assert!(routes
        .iter()
        .any(|r| r.prefix == "10.200.0.0/26" && r.from_proto == "static1" && r.next_hop.is_none()));
    assert_eq!(bird.route_count().unwrap(), 3);
    // Exported to the namespace's kernel table.
    eventually(15, "learned routes in BIRD's kernel table", || {
        let k = pair.kernel_routes();
        k.iter()
            .any(|l| l.starts_with("10.201.0.0/24 via 192.168.93.2 dev vb0"))
            && k.iter()
                .any(|l| l.starts_with("10.201.1.0/24 via 192.168.93.2 dev vb0"))
    });

    // A withdrawal on GoBGP leaves BIRD and its kernel table.
    gobgp.del_route("10.201.1.0/24").unwrap();
    eventually(10, "the withdrawn route gone from BIRD", || {
        bird.protocol_route_count("gobgp").unwrap() == 1
    });
    let left: Vec<_> = bird
        .routes()
        .unwrap()
        .into_iter()
        .filter(|r| r.from_proto == "gobgp")
        .map(|r| r.prefix)
        .collect();
    assert_eq!(left, vec!["10.201.0.0/24".to_string()]);
    eventually(15, "the withdrawn route gone from the kernel", || {
        !pair
            .kernel_routes()
            .iter()
            .any(|l| l.starts_with("10.201.1.0/24"))
    });

    // GoBGP dies without a NOTIFICATION: BIRD keeps its route, stale, for
    // the restart time GoBGP advertised (120 s).
    let gpid = gobgp.pid();
    gobgp.kill();
    assert!(gone(gpid) && !gobgp.running());
    eventually(10, "BIRD to see the neighbour's graceful restart", || {
        bird.graceful_restart_active("gobgp").unwrap()
    });
    let kept: Vec<_> = bird
        .routes()
        .unwrap()
        .into_iter()
        .filter(|r| r.from_proto == "gobgp")
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].stale, "{kept:?}");
    assert_ne!(bird.protocol_state("gobgp").unwrap(), "Established");

    // GoBGP comes back restarting gracefully (restart-state bit set) with
    // an empty RIB: once it has sent End-of-RIB, BIRD drops the stale
    // route and ends the graceful restart.
    gobgp.restart(true).unwrap();
    assert!(gobgp.running() && gobgp.pid() != gpid);
    bird.wait_established("gobgp", Duration::from_secs(20))
        .expect("BIRD established again");
    gobgp
        .wait_established(pair.bird_ip, Duration::from_secs(20))
        .expect("GoBGP established again");
    eventually(30, "the stale route flushed after End-of-RIB", || {
        bird.protocol_route_count("gobgp").unwrap() == 0
            && !bird.graceful_restart_active("gobgp").unwrap()
    });
    gobgp.add_route("10.201.2.0/24", pair.gobgp_ip).unwrap();
    eventually(10, "a new route after the restart", || {
        bird.routes()
            .unwrap()
            .iter()
            .any(|r| r.prefix == "10.201.2.0/24" && r.from_proto == "gobgp" && !r.stale)
    });

    // stop() leaves no process.
    let bpid = bird.pid();
    bird.stop();
    assert!(gone(bpid) && !bird.running());
    let gpid = gobgp.pid();
    gobgp.stop();
    assert!(gone(gpid) && !gobgp.running());
    assert_eq!(processes_naming(&pair.tag()), Vec::<String>::new());
}

#[test]
fn gobgp_loads_an_mrt_table_dump() {
    let pair = Pair::new("m", 94);
    let gobgp = pair.gobgp();
    let dir = tempfile::tempdir().unwrap();

    // A small file, read back path by path.
    let small = dir.path().join("small.mrt");
    let list = vec![
        (Ipv4Addr::new(10, 128, 0, 0), 26),
        (Ipv4Addr::new(10, 128, 0, 64), 26),
        (Ipv4Addr::new(10, 128, 0, 128), 32),
    ];
    mrt::write_table_dump(
        &small,
        pair.gobgp_ip,
        65001,
        pair.gobgp_ip,
        list.into_iter(),
    )
    .unwrap();
    let added = gobgp.inject_mrt(&small).unwrap();
    println!("3-prefix MRT file: {added} added after `gobgp mrt inject`");
    assert_eq!(gobgp.rib_count().unwrap(), 3);
    assert_eq!(
        gobgp.rib().unwrap(),
        vec![
            ("10.128.0.0/26".to_string(), pair.gobgp_ip),
            ("10.128.0.128/32".to_string(), pair.gobgp_ip),
            ("10.128.0.64/26".to_string(), pair.gobgp_ip),
        ]
    );
    let json = gobgp
        .gobgp(&["global", "rib", "-a", "ipv4", "10.128.0.64/26", "-j"])
        .unwrap();
    assert!(
        json.contains("65001") && json.contains("\"type\":1,\"value\":0"),
        "AS_PATH 65001 and ORIGIN IGP: {json}"
    );

    // 100,000 Calico-sized blocks.
    let big = dir.path().join("100k.mrt");
    let t = Instant::now();
    let n = mrt::write_table_dump(
        &big,
        pair.gobgp_ip,
        65001,
        pair.gobgp_ip,
        mrt::prefixes(100_000, Ipv4Addr::new(10, 129, 0, 0), 26).unwrap(),
    )
    .unwrap();
    let write = t.elapsed();
    assert_eq!(n, 100_000);
    let t = Instant::now();
    let added = gobgp.inject_mrt(&big).unwrap();
    let all = t.elapsed();
    assert_eq!(gobgp.rib_count().unwrap(), 100_003);
    assert!(gobgp.has_route("10.129.0.0/26").unwrap());
    assert!(
        gobgp.has_route("10.226.167.192/26").unwrap(),
        "the last of 100,000"
    );
    println!(
        "MRT 100,000 /26: written in {:.3} s ({} bytes); GoBGP's RIB held all {:.3} s after \
         `gobgp mrt inject` started ({added} of the tail added one by one)",
        write.as_secs_f64(),
        std::fs::metadata(&big).unwrap().len(),
        all.as_secs_f64()
    );
}

#[test]
fn bird_learns_100k_prefixes_from_gobgp() {
    let pair = Pair::new("k", 95);
    let gobgp = pair.gobgp();
    let t = Instant::now();
    let n = gobgp
        .load(
            mrt::prefixes(100_000, Ipv4Addr::new(10, 128, 0, 0), 26).unwrap(),
            pair.gobgp_ip,
            65001,
        )
        .unwrap();
    assert_eq!(n, 100_000);
    assert_eq!(gobgp.rib_count().unwrap(), 100_000);
    let injected = t.elapsed();

    println!(
        "100,000 /26 loaded into GoBGP in {:.3} s",
        injected.as_secs_f64()
    );

    // BIRD connects to a GoBGP that already holds the table: from BIRD's
    // start to all 100,000 in its table (the initial transfer), first
    // without a kernel protocol, then exporting to the namespace's kernel
    // table (what Calico's BIRD does), until the kernel has them all too.
    let count_kernel = || {
        let out = Command::new("ip")
            .args(["-n", &pair.bird_ns, "-4", "route", "show", "proto", "bird"])
            .output()
            .unwrap();
        out.stdout.iter().filter(|b| **b == b'\n').count()
    };
    for kernel_export in [false, true] {
        let t = Instant::now();
        let mut bird = pair.bird(&[], kernel_export);
        bird.wait_established("gobgp", Duration::from_secs(30))
            .expect("BIRD established");
        let established = t.elapsed();
        let deadline = Instant::now() + Duration::from_secs(300);
        while bird.protocol_route_count("gobgp").unwrap() < 100_000 {
            assert!(
                Instant::now() < deadline,
                "BIRD has {} of 100,000",
                bird.protocol_route_count("gobgp").unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let learned = t.elapsed();
        assert_eq!(bird.route_count().unwrap(), 100_000);
        let mut in_kernel = String::new();
        if kernel_export {
            let deadline = Instant::now() + Duration::from_secs(300);
            while count_kernel() < 100_000 {
                assert!(Instant::now() < deadline, "kernel has {}", count_kernel());
                std::thread::sleep(Duration::from_millis(250));
            }
            in_kernel = format!(", in the kernel after {:.3} s", t.elapsed().as_secs_f64());
        } else {
            assert_eq!(count_kernel(), 0);
        }
        println!(
            "BIRD (kernel export {kernel_export}): established after {:.3} s, all 100,000 after \
             {:.3} s ({:.3} s after established){in_kernel}",
            established.as_secs_f64(),
            learned.as_secs_f64(),
            (learned - established).as_secs_f64(),
        );
        let sample = bird.birdc("show route 10.128.0.64/26 all").unwrap();
        assert!(
            sample.contains("via 192.168.95.2 on vb0") && sample.contains("BGP.as_path: 65001"),
            "{sample}"
        );
        bird.stop();
        if kernel_export {
            // BIRD takes its routes out of the kernel when it stops.
            assert_eq!(count_kernel(), 0);
        }
        gobgp
            .wait_established(pair.bird_ip, Duration::from_secs(1))
            .expect_err("the session is gone with BIRD");
    }
}

#[test]
fn refused_configurations_start_nothing() {
    let pair = Pair::new("r", 96);
    let err = Bird::start(
        &pair.bird_ns,
        &pair.tag(),
        "protocol bgp x { local as 1; }\n",
    )
    .expect_err("a config BIRD refuses");
    assert!(err.to_string().contains("bird -p"), "{err}");
    let err = Gobgp::start(
        &pair.gobgp_ns,
        &pair.tag(),
        "[global.config]\n  as = \"x\"\n",
        API_PORT,
    )
    .expect_err("a config gobgpd refuses");
    assert!(err.to_string().contains("gobgpd"), "{err}");
    // A namespace that does not exist: the daemon exits at once.
    let conf = bird_config(pair.bird_ip, ASN, &[], &[], false, None);
    let err = Bird::start("pP-no-such-ns", &pair.tag(), &conf).expect_err("no namespace");
    assert!(err.to_string().contains("exited"), "{err}");
    assert_eq!(processes_naming(&pair.tag()), Vec::<String>::new());
    let dir = sluice_perf::lab::state_dir();
    for f in ["bird.conf", "bird.ctl", "bird.pid", "gobgp.toml"] {
        assert!(
            !dir.join(format!("{}-{f}", pair.tag())).exists(),
            "{f} left"
        );
    }
}

/// BIRD between two GoBGP speakers, both its route-reflector clients: a
/// route from one reaches the other with its next hop unchanged, and a
/// withdrawal follows.
#[test]
fn bird_reflects_routes_between_its_clients() {
    let a = Pair::new("a", 97);
    let b_ns = format!("{}-c", a.tag());
    struct Ns(String);
    impl Drop for Ns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    let _b_guard = Ns(b_ns.clone());
    sh(&["ip", "netns", "add", &b_ns]);
    sh(&[
        "ip", "link", "add", "vb1", "netns", &a.bird_ns, "type", "veth", "peer", "name", "vc0",
        "netns", &b_ns,
    ]);
    let (bird_ip2, c_ip) = (
        Ipv4Addr::new(192, 168, 98, 1),
        Ipv4Addr::new(192, 168, 98, 2),
    );
    sh(&[
        "ip",
        "-n",
        &a.bird_ns,
        "addr",
        "add",
        "192.168.98.1/24",
        "dev",
        "vb1",
    ]);
    sh(&["ip", "-n", &a.bird_ns, "link", "set", "vb1", "up"]);
    sh(&[
        "ip",
        "-n",
        &b_ns,
        "addr",
        "add",
        "192.168.98.2/24",
        "dev",
        "vc0",
    ]);
    sh(&["ip", "-n", &b_ns, "link", "set", "vc0", "up"]);

    let client = |name: &str, address| BirdPeer {
        name: name.into(),
        address,
        asn: ASN,
        passive: false,
        rr_client: true,
        graceful_restart: false,
    };
    let conf = bird_config(
        a.bird_ip,
        ASN,
        &[client("left", a.gobgp_ip), client("right", c_ip)],
        &[],
        false,
        Some(Ipv4Addr::new(10, 255, 255, 1)),
    );
    let neighbor = |address| GobgpNeighbor {
        address,
        asn: ASN,
        passive: true,
        rr_client: false,
        graceful_restart: false,
    };
    let left = Gobgp::start(
        &a.gobgp_ns,
        &format!("{}-l", a.tag()),
        &gobgp_config(a.gobgp_ip, ASN, 179, &[neighbor(a.bird_ip)]),
        API_PORT,
    )
    .unwrap();
    let right = Gobgp::start(
        &b_ns,
        &format!("{}-r", a.tag()),
        &gobgp_config(c_ip, ASN, 179, &[neighbor(bird_ip2)]),
        API_PORT,
    )
    .unwrap();
    let bird = Bird::start(&a.bird_ns, &a.tag(), &conf).unwrap();
    for p in ["left", "right"] {
        bird.wait_established(p, Duration::from_secs(20)).unwrap();
    }
    let info = bird.birdc("show protocols all right").unwrap();
    assert!(info.contains("route-reflector"), "{info}");

    left.add_route("10.202.0.0/26", a.gobgp_ip).unwrap();
    eventually(10, "the reflected route at the other client", || {
        right.rib().unwrap() == vec![("10.202.0.0/26".to_string(), a.gobgp_ip)]
    });
    let json = right
        .gobgp(&["global", "rib", "-a", "ipv4", "10.202.0.0/26", "-j"])
        .unwrap();
    // ORIGINATOR_ID (9) and CLUSTER_LIST (10) added by the reflector.
    assert!(
        json.contains("\"type\":9") && json.contains("\"type\":10"),
        "{json}"
    );
    left.del_route("10.202.0.0/26").unwrap();
    eventually(10, "the withdrawal at the other client", || {
        right.rib().unwrap().is_empty()
    });
    let _ = std::fs::remove_file(
        sluice_perf::lab::state_dir().join(format!("{}-l-gobgp.log", a.tag())),
    );
    let _ = std::fs::remove_file(
        sluice_perf::lab::state_dir().join(format!("{}-r-gobgp.log", a.tag())),
    );
}
