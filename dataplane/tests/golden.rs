//! Golden tests: pcap in, pcap out, through the `sluice-replay` command.
//!
//! Inputs under `tests/golden/cases/<case>/in-<port>.pcap` are made by
//! scapy (`make_inputs.py`), not by sluice. Each case replays them through
//! the reference node (`tests/golden/node.toml`), then:
//! 1. every output capture must equal `expected/<port>.pcap` byte for byte
//!    (ports without an expected file must stay silent);
//! 2. the counters printed as JSON must show the drops and events expected;
//! 3. tshark, an independent dissector, must decode the outputs as claimed:
//!    VXLAN on the configured port and VNI, inner and outer addresses, good
//!    IPv4 header checksums, ICMP types, codes and next-hop MTU.
//!
//! `SLUICE_BLESS=1 cargo test --test golden` rewrites the expected captures
//! after a deliberate change; review the diff with tshark before committing.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

struct Run {
    case: String,
    out: tempfile::TempDir,
    stats: Value,
}

impl Run {
    fn output(&self, port: &str) -> PathBuf {
        self.out.path().join(format!("{port}.pcap"))
    }

    fn drops(&self) -> BTreeMap<String, u64> {
        nonzero(&self.stats["stats"]["drops"])
    }

    fn events(&self) -> BTreeMap<String, u64> {
        nonzero(&self.stats["stats"]["events"])
    }

    fn written(&self) -> BTreeMap<String, u64> {
        nonzero(&self.stats["written"])
    }

    /// tshark's view of `port`'s output: one row per frame, one column per
    /// field; repeated fields (outer and inner headers) joined with commas.
    fn tshark(&self, port: &str, vxlan_port: Option<u16>, fields: &[&str]) -> Vec<Vec<String>> {
        tshark(&self.output(port), vxlan_port, fields)
    }
}

fn nonzero(v: &Value) -> BTreeMap<String, u64> {
    v.as_object()
        .expect("an object")
        .iter()
        .filter_map(|(k, v)| v.as_u64().filter(|&n| n > 0).map(|n| (k.clone(), n)))
        .collect()
}

fn map(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn tshark(pcap: &Path, vxlan_port: Option<u16>, fields: &[&str]) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.args(["-n", "-r"]).arg(pcap).args([
        "-o",
        "ip.check_checksum:TRUE",
        "-o",
        "udp.check_checksum:TRUE",
    ]);
    if let Some(p) = vxlan_port {
        cmd.args(["-d", &format!("udp.port=={p},vxlan")]);
    }
    cmd.args([
        "-T",
        "fields",
        "-E",
        "separator=/t",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=,",
    ]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().unwrap_or_else(|e| panic!("tshark could not run ({e}): install Debian's tshark package, which scripts/setup.sh does"));
    assert!(
        out.status.success(),
        "tshark failed on {}: {}",
        pcap.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// Replays a case and checks its outputs against the expected captures.
fn replay(case: &str, config: &str) -> Run {
    let dir = golden_dir().join("cases").join(case);
    let out = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice-replay"));
    cmd.arg("--config")
        .arg(golden_dir().join(config))
        .arg("--out-dir")
        .arg(out.path());
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if let Some(port) = name
            .strip_prefix("in-")
            .and_then(|n| n.strip_suffix(".pcap"))
        {
            cmd.arg("--input").arg(format!("{port}={}", path.display()));
            inputs += 1;
        }
    }
    assert!(inputs > 0, "case {case} has no inputs: run make_inputs.py");
    let res = cmd.output().expect("sluice-replay runs");
    assert!(
        res.status.success(),
        "sluice-replay failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    let stats: Value = serde_json::from_slice(&res.stdout).expect("JSON counters on stdout");

    let expected_dir = dir.join("expected");
    let bless = std::env::var_os("SLUICE_BLESS").is_some();
    for entry in std::fs::read_dir(out.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_owned();
        let got = std::fs::read(&path).unwrap();
        let empty = got.len() == 24; // the pcap global header alone
        let want_path = expected_dir.join(&name);
        if bless {
            if empty {
                let _ = std::fs::remove_file(&want_path);
            } else {
                std::fs::create_dir_all(&expected_dir).unwrap();
                std::fs::write(&want_path, &got).unwrap();
            }
            continue;
        }
        match std::fs::read(&want_path) {
            Ok(want) => assert!(
                want == got,
                "{case}: {} differs from the golden capture {}",
                path.display(),
                want_path.display()
            ),
            Err(_) => assert!(
                empty,
                "{case}: port {:?} sent frames but no golden capture exists",
                name
            ),
        }
    }
    Run {
        case: case.to_string(),
        out,
        stats,
    }
}

fn assert_all(rows: &[Vec<String>], col: usize, want: &str, what: &str) {
    assert!(!rows.is_empty(), "{what}: no frames");
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r[col], want, "{what}, frame {}", i + 1);
    }
}

const GOOD: &str = "1";

#[test]
fn vxlan_encap_on_flannels_port_and_vni() {
    let r = replay("vxlan-encap", "node.toml");
    assert_eq!(r.written(), map(&[("eth0", 5)]));
    assert_eq!(r.events().get("vxlan_encap"), Some(&5));
    let rows = r.tshark(
        "eth0",
        Some(8472),
        &[
            "eth.dst",
            "eth.src",
            "ip.src",
            "ip.dst",
            "ip.checksum.status",
            "udp.srcport",
            "udp.dstport",
            "udp.checksum",
            "vxlan.vni",
            "ip.ttl",
            "vxlan.flags",
        ],
    );
    assert_eq!(rows.len(), 5);
    assert_all(
        &rows,
        0,
        "02:00:00:00:aa:02,02:00:00:00:bb:02",
        "outer next-hop MAC, inner remote VTEP MAC",
    );
    assert_all(
        &rows,
        1,
        "02:00:00:00:aa:01,02:00:00:00:bb:01",
        "outer uplink MAC, inner own VTEP MAC",
    );
    assert_all(&rows, 2, "192.168.50.1,10.5.1.2", "outer and inner sources");
    assert_all(&rows, 4, "1,1", "outer and inner IPv4 header checksums");
    assert_all(&rows, 8, "1", "VNI");
    assert_all(&rows, 9, "64,63", "outer TTL, inner TTL decremented");
    assert_all(
        &rows,
        10,
        "0x0800",
        "VXLAN flags: I set, reserved bits zero",
    );
    let mut sports = std::collections::BTreeSet::new();
    for (i, row) in rows.iter().enumerate() {
        assert!(
            row[3] == "192.168.50.2,10.5.2.7" || row[3] == "192.168.50.2,10.5.2.9",
            "destinations {:?}",
            row[3]
        );
        let sport: u16 = row[5].split(',').next().unwrap().parse().unwrap();
        assert!(
            sport >= 49152,
            "frame {}: VXLAN source port {sport} outside 49152-65535",
            i + 1
        );
        sports.insert(sport);
        assert_eq!(row[6].split(',').next().unwrap(), "8472");
        assert_eq!(
            row[7].split(',').next().unwrap(),
            "0x0000",
            "outer UDP checksum 0"
        );
    }
    assert!(
        sports.len() >= 4,
        "distinct flows get distinct source ports: {sports:?}"
    );
    let inner = r.tshark(
        "eth0",
        Some(8472),
        &["icmp.type", "tcp.flags.syn", "udp.srcport"],
    );
    assert_eq!(inner[3][0], "8", "the ICMP echo is carried as such");
    assert_eq!(inner[4][1], "1", "the TCP SYN is carried as such");
}

#[test]
fn vxlan_encap_on_the_iana_port_with_another_vni() {
    let r = replay("vxlan-encap-4789", "node-4789.toml");
    // tshark knows 4789 as VXLAN without being told.
    let rows = r.tshark(
        "eth0",
        None,
        &["udp.dstport", "vxlan.vni", "ip.dst", "ip.checksum.status"],
    );
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0], ["4789,5201", "42", "192.168.50.2,10.5.2.7", "1,1"]);
}

#[test]
fn vxlan_decap_only_from_known_nodes() {
    let r = replay("vxlan-decap", "node.toml");
    assert_eq!(r.written(), map(&[("pod-a", 1)]));
    assert_eq!(
        r.drops(),
        map(&[
            ("unknown_tunnel_source", 1),
            ("vxlan_unknown_vni", 1),
            ("vxlan_bad_flags", 1)
        ])
    );
    let rows = r.tshark(
        "pod-a",
        None,
        &[
            "eth.dst",
            "eth.src",
            "ip.src",
            "ip.dst",
            "ip.ttl",
            "ip.checksum.status",
            "udp.dstport",
            "vxlan.vni",
        ],
    );
    assert_eq!(
        rows,
        [[
            "02:00:00:00:01:02",
            "02:00:00:00:00:01",
            "10.5.2.7",
            "10.5.1.2",
            "62",
            GOOD,
            "1000",
            ""
        ]]
    );
}

#[test]
fn ipip_encap() {
    let r = replay("ipip-encap", "node.toml");
    let rows = r.tshark(
        "eth0",
        None,
        &[
            "eth.dst",
            "ip.proto",
            "ip.src",
            "ip.dst",
            "ip.ttl",
            "ip.checksum.status",
        ],
    );
    assert_eq!(
        rows,
        [[
            "02:00:00:00:aa:03",
            "4,17",
            "192.168.50.1,10.5.1.2",
            "192.168.50.3,10.5.3.3",
            "64,63",
            "1,1"
        ]]
    );
}

#[test]
fn ipip_decap_only_from_known_nodes() {
    let r = replay("ipip-decap", "node.toml");
    assert_eq!(r.drops(), map(&[("unknown_tunnel_source", 1)]));
    let rows = r.tshark(
        "pod-b",
        None,
        &[
            "eth.dst",
            "ip.proto",
            "ip.src",
            "ip.dst",
            "ip.ttl",
            "ip.checksum.status",
            "icmp.type",
        ],
    );
    assert_eq!(
        rows,
        [[
            "02:00:00:00:01:03",
            "1",
            "10.5.3.3",
            "10.5.1.3",
            "62",
            GOOD,
            "8"
        ]]
    );
}

#[test]
fn host_gw_rewrites_to_the_next_hops_mac() {
    let r = replay("host-gw", "node.toml");
    let rows = r.tshark(
        "eth0",
        None,
        &[
            "eth.dst",
            "eth.src",
            "ip.src",
            "ip.dst",
            "ip.ttl",
            "ip.checksum.status",
            "tcp.flags.syn",
        ],
    );
    assert_eq!(
        rows,
        [[
            "02:00:00:00:aa:04",
            "02:00:00:00:aa:01",
            "10.5.1.2",
            "10.5.4.4",
            "63",
            GOOD,
            "1"
        ]]
    );
}

#[test]
fn local_delivery() {
    let r = replay("local-delivery", "node.toml");
    let rows = r.tshark(
        "pod-b",
        None,
        &[
            "eth.dst",
            "eth.src",
            "ip.src",
            "ip.dst",
            "ip.ttl",
            "ip.checksum.status",
            "icmp.type",
            "icmp.checksum.status",
        ],
    );
    assert_eq!(
        rows,
        [[
            "02:00:00:00:01:03",
            "02:00:00:00:00:01",
            "10.5.1.2",
            "10.5.1.3",
            "63",
            GOOD,
            "8",
            GOOD
        ]]
    );
}

#[test]
fn default_route_and_gateway_go_to_the_host() {
    let r = replay("to-host", "node.toml");
    let rows = r.tshark(
        "host",
        None,
        &["eth.dst", "eth.src", "ip.dst", "ip.checksum.status"],
    );
    assert_eq!(
        rows,
        [
            [
                "02:00:00:00:ee:01",
                "02:00:00:00:00:01",
                "93.184.216.34",
                GOOD
            ],
            ["02:00:00:00:ee:01", "02:00:00:00:00:01", "10.5.1.1", GOOD]
        ]
    );
}

#[test]
fn arp_for_the_gateway_is_answered() {
    let r = replay("arp-reply", "node.toml");
    assert_eq!(r.drops(), map(&[("arp_not_for_us", 1)]));
    let rows = r.tshark(
        "pod-a",
        None,
        &[
            "eth.dst",
            "arp.opcode",
            "arp.src.hw_mac",
            "arp.src.proto_ipv4",
            "arp.dst.hw_mac",
            "arp.dst.proto_ipv4",
        ],
    );
    assert_eq!(
        rows,
        [[
            "02:00:00:00:01:02",
            "2",
            "02:00:00:00:00:01",
            "10.5.1.1",
            "02:00:00:00:01:02",
            "10.5.1.2"
        ]]
    );
}

#[test]
fn ttl_one_and_zero_answer_time_exceeded() {
    let r = replay("ttl-exceeded", "node.toml");
    assert_eq!(r.drops(), map(&[("ttl_exceeded", 2)]));
    assert_eq!(r.events().get("icmp_time_exceeded"), Some(&2));
    let rows = r.tshark(
        "pod-a",
        None,
        &[
            "ip.src",
            "ip.dst",
            "ip.checksum.status",
            "icmp.type",
            "icmp.code",
            "icmp.checksum.status",
            "udp.dstport",
        ],
    );
    assert_eq!(rows.len(), 2);
    for (row, port) in rows.iter().zip(["33435", "33436"]) {
        // The quoted header shows as a second IPv4 layer inside the ICMP error.
        assert_eq!(
            row[0], "10.5.1.0,10.5.1.2",
            "sent from the pod subnet's .0 address"
        );
        assert_eq!(row[1], "10.5.1.2,10.5.2.7");
        assert_eq!(row[2], "1,1");
        assert_eq!(
            (row[3].as_str(), row[4].as_str(), row[5].as_str()),
            ("11", "0", GOOD)
        );
        assert_eq!(row[6], port, "the quote names the offending datagram");
    }
}

#[test]
fn df_too_big_answers_fragmentation_needed_with_mtu_1450() {
    let r = replay("frag-needed", "node.toml");
    assert_eq!(r.drops(), map(&[("frag_needed", 1)]));
    let rows = r.tshark(
        "host",
        None,
        &[
            "ip.src",
            "ip.dst",
            "ip.checksum.status",
            "icmp.type",
            "icmp.code",
            "icmp.mtu",
            "icmp.checksum.status",
        ],
    );
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0][..2],
        ["10.5.1.0,192.168.50.1", "192.168.50.1,10.5.2.7"]
    );
    assert_eq!(rows[0][2..], ["1,1", "3", "4", "1450", GOOD]);
}

#[test]
fn df_clear_too_big_is_fragmented_then_encapsulated() {
    let r = replay("fragment", "node.toml");
    assert_eq!(r.events().get("fragments_created"), Some(&2));
    let rows = r.tshark(
        "eth0",
        Some(8472),
        &[
            "ip.len",
            "ip.flags.mf",
            "ip.frag_offset",
            "ip.id",
            "ip.checksum.status",
            "vxlan.vni",
            "ip.dst",
        ],
    );
    assert_eq!(rows.len(), 2);
    let outer_len = |r: &Vec<String>| r[0].split(',').next().unwrap().parse::<u32>().unwrap();
    assert!(
        rows.iter().all(|r| outer_len(r) <= 1500),
        "every outer packet fits the 1500-byte underlay"
    );
    assert_eq!(rows[0][1..4], ["0,1", "0,0", "0x0000,0x000d"]);
    // tshark shows the offset field as sent, in 8-byte units: 178 * 8 = 1424,
    // the first fragment's payload ((1450 - 20) rounded down to 8).
    assert_eq!(rows[1][1..4], ["0,0", "0,178", "0x0000,0x000d"]);
    assert_all(&rows, 4, "1,1", "header checksums");
    assert_all(&rows, 5, "1", "VNI");
    // Fragments carry the whole 2056-byte UDP datagram between them.
    let inner_payload: u32 = rows
        .iter()
        .map(|r| r[0].split(',').nth(1).unwrap().parse::<u32>().unwrap() - 20)
        .sum();
    assert_eq!(inner_payload, 8 + 2048);
    // tshark reassembles them into the original datagram.
    let reassembled = r.tshark("eth0", Some(8472), &["udp.length", "udp.checksum.status"]);
    assert_eq!(reassembled[1][0].split(',').next_back().unwrap(), "2056");
    assert_eq!(
        reassembled[1][1].split(',').next_back().unwrap(),
        GOOD,
        "the reassembled UDP checksum is right"
    );
}

#[test]
fn spoofed_pods_and_blackholes_are_dropped() {
    let r = replay("anti-spoofing", "node.toml");
    assert_eq!(r.written(), map(&[]));
    assert_eq!(
        r.drops(),
        map(&[
            ("spoofed_source_ip", 1),
            ("spoofed_source_mac", 1),
            ("blackhole", 1)
        ])
    );
    assert_eq!(
        r.stats["stats"]["ports"]["pod-a"]["rx_dropped"], 3,
        "{}",
        r.case
    );
}

#[test]
fn a_bad_invocation_names_the_problem() {
    let out = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_sluice-replay");
    let res = Command::new(bin)
        .arg("--config")
        .arg(golden_dir().join("node.toml"))
        .args(["--input", "eth9=x.pcap"])
        .arg("--out-dir")
        .arg(out.path())
        .output()
        .unwrap();
    assert_eq!(res.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&res.stderr).contains("x.pcap"),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let input = golden_dir().join("cases/host-gw/in-pod-a.pcap");
    let res = Command::new(bin)
        .arg("--config")
        .arg(golden_dir().join("node.toml"))
        .arg("--input")
        .arg(format!("eth9={}", input.display()))
        .arg("--out-dir")
        .arg(out.path())
        .output()
        .unwrap();
    assert_eq!(res.status.code(), Some(2));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("eth9") && err.contains("pod-a"), "{err}");
    let bad = out.path().join("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(golden_dir().join("node.toml"))
            .unwrap()
            .replace("vni = 1", "vni = 0"),
    )
    .unwrap();
    let res = Command::new(bin)
        .arg("--config")
        .arg(&bad)
        .arg("--out-dir")
        .arg(out.path())
        .output()
        .unwrap();
    assert_eq!(res.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&res.stderr).contains("tunnel.vni"),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
}
