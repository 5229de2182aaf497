//! The golden cases through the DPDK backend: `sluiced` with every port a
//! `net_pcap` vdev (the case's input capture in, a capture out), EAL with
//! `--no-huge`. Each port's output must carry exactly the frames the memory
//! port's replay produced (`dataplane/tests/golden/cases/*/expected`), so
//! the mbuf path and the memory path cannot drift apart. Timestamps differ
//! (net_pcap stamps the wall clock) and are not compared.
//!
//! Needs Debian's DPDK (scripts/setup.sh installs it) and root (EAL's
//! runtime directory under /var/run/dpdk); no network namespace.

use sluice_api::client::Client;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dataplane/tests/golden")
}

/// The frames of a classic pcap file, in order.
fn frames(path: &Path) -> Vec<Vec<u8>> {
    sluice_dataplane::pcap::read_file(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .map(|r| r.data)
        .collect()
}

/// An empty capture (the crate's own pcap writer: the header alone).
fn write_empty_pcap(path: &Path) {
    sluice_dataplane::pcap::PcapWriter::new(std::fs::File::create(path).unwrap()).unwrap();
}

/// The reference node's configuration on the DPDK backend: each port a
/// net_pcap reading `in-<port>.pcap` (or nothing) and writing `<port>.pcap`.
fn dpdk_config(node_toml: &str, case_dir: &Path, out: &Path, prefix: &str) -> String {
    let empty = out.join("empty.pcap");
    write_empty_pcap(&empty);
    let mut text = format!(
        "[daemon]\nbackend = \"dpdk\"\napi_socket = \"{}\"\nmetrics_address = \"127.0.0.1:0\"\npod_records = \"\"\n\
         [daemon.dpdk]\nno_huge = true\nmemory_mb = 128\nfile_prefix = \"{prefix}\"\nmbufs = 2047\nmbuf_cache = 64\n\n",
        out.join("api.sock").display()
    );
    let mut in_port = false;
    for line in node_toml.lines() {
        text.push_str(line);
        text.push('\n');
        if line.starts_with("[[") {
            in_port = line == "[[port]]";
        }
        if let (true, Some(name)) = (
            in_port,
            line.strip_prefix("name = \"")
                .and_then(|l| l.strip_suffix('"')),
        ) {
            let input = case_dir.join(format!("in-{name}.pcap"));
            let rx = if input.exists() { input } else { empty.clone() };
            text.push_str(&format!(
                "devargs = \"net_pcap_{},rx_pcap={},tx_pcap={}\"\n",
                name.replace('-', "_"),
                rx.display(),
                out.join(format!("{name}.pcap")).display()
            ));
        }
    }
    text
}

/// Cases whose input is a frame from the host port longer than its MTU
/// (1500): the memory port takes any frame, but a DPDK device, like a
/// NIC, drops a frame longer than its mbufs (sized for the MTU). These run
/// with the host port at MTU 9000, which changes nothing else they test
/// (fragmentation and frag-needed depend on the egress port's MTU).
const JUMBO_HOST: [&str; 2] = ["fragment", "frag-needed"];

/// `node` with the host port's MTU raised to 9000.
fn jumbo_host(node: &str) -> String {
    let mut out = String::new();
    let mut in_host = false;
    for line in node.lines() {
        if line.starts_with("[[") {
            in_host = false;
        }
        if line == "kind = \"host\"" {
            in_host = true;
        }
        if in_host && line.starts_with("mtu = ") {
            out.push_str("mtu = 9000\n");
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    assert!(out.contains("mtu = 9000"), "the host port has an MTU line");
    out
}

struct Sluiced(Child);

impl Drop for Sluiced {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `case` through sluiced on DPDK; returns the output directory and
/// the port names.
fn run_case(
    case: &str,
    config: &str,
) -> (tempfile::TempDir, Vec<String>, sluice_api::response::Stats) {
    let case_dir = golden().join("cases").join(case);
    let mut node = std::fs::read_to_string(golden().join(config)).unwrap();
    if JUMBO_HOST.contains(&case) {
        node = jumbo_host(&node);
    }
    let out = tempfile::tempdir().unwrap();
    let prefix = format!("sluice-golden-{}-{case}", std::process::id());
    let cfg = dpdk_config(&node, &case_dir, out.path(), &prefix);
    let cfg_path = out.path().join("sluiced.toml");
    std::fs::write(&cfg_path, &cfg).unwrap();
    let inputs: usize = std::fs::read_dir(&case_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("in-"))
        .map(|e| frames(&e.path()).len())
        .sum();
    let log = std::fs::File::create(out.path().join("sluiced.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_sluiced"))
        .arg("--config")
        .arg(&cfg_path)
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("sluiced starts");
    let mut d = Sluiced(child);
    let client = Client::new(out.path().join("api.sock")).with_timeout(Duration::from_secs(2));
    let deadline = Instant::now() + Duration::from_secs(30);
    let stats = loop {
        if let Ok(Some(st)) = d.0.try_wait() {
            panic!(
                "{case}: sluiced exited ({st}):\n{}",
                std::fs::read_to_string(out.path().join("sluiced.log")).unwrap_or_default()
            );
        }
        if let Ok(s) = client.stats() {
            let rx: u64 = s.ports.values().map(|p| p.rx_packets).sum();
            if rx as usize >= inputs {
                // The turn that received the last burst has sent it too;
                // read again once it surely has.
                std::thread::sleep(Duration::from_millis(100));
                break client.stats().expect("stats");
            }
        }
        assert!(
            Instant::now() < deadline,
            "{case}: sluiced did not receive the {inputs} input frames in 30 s:\n{}",
            std::fs::read_to_string(out.path().join("sluiced.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // SIGTERM: sluiced stops its workers and closes the devices, which
    // flushes net_pcap's output files.
    // SAFETY: a signal to our own child, by its PID.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(d.0.id() as i32, libc::SIGTERM)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match d.0.try_wait() {
            Ok(Some(st)) => {
                assert!(st.success(), "{case}: sluiced exited with {st}");
                break;
            }
            _ if Instant::now() > deadline => panic!("{case}: sluiced did not stop on SIGTERM"),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let names = stats.ports.keys().cloned().collect();
    (out, names, stats)
}

fn check_case(case: &str, config: &str) {
    let (out, ports, stats) = run_case(case, config);
    let expected = golden().join("cases").join(case).join("expected");
    let multi_input = std::fs::read_dir(golden().join("cases").join(case))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("in-"))
        .count()
        > 1;
    let mut compared = 0;
    for port in &ports {
        let mut got = frames(&out.path().join(format!("{port}.pcap")));
        let want_path = expected.join(format!("{port}.pcap"));
        let mut want = if want_path.exists() {
            frames(&want_path)
        } else {
            Vec::new()
        };
        if multi_input {
            got.sort();
            want.sort();
        }
        assert_eq!(
            got.len(),
            want.len(),
            "{case}: port {port} sent {} frames on DPDK, the memory port {}",
            got.len(),
            want.len()
        );
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g, w,
                "{case}: port {port}, frame {i} differs from the memory port's"
            );
        }
        compared += got.len();
    }
    let sent: u64 = stats.ports.values().map(|p| p.tx_packets).sum();
    assert_eq!(
        sent as usize, compared,
        "{case}: the counters agree with the captures"
    );
    assert_eq!(
        stats.drop_count("tx_failed"),
        0,
        "{case}: nothing lost at TX"
    );
}

macro_rules! golden_cases {
    ($($test:ident => ($case:expr, $config:expr)),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                check_case($case, $config);
            }
        )*
    };
}

golden_cases! {
    vxlan_encap => ("vxlan-encap", "node.toml"),
    vxlan_encap_4789 => ("vxlan-encap-4789", "node-4789.toml"),
    vxlan_decap => ("vxlan-decap", "node.toml"),
    ipip_encap => ("ipip-encap", "node.toml"),
    ipip_decap => ("ipip-decap", "node.toml"),
    host_gw => ("host-gw", "node.toml"),
    local_delivery => ("local-delivery", "node.toml"),
    to_host => ("to-host", "node.toml"),
    arp_reply => ("arp-reply", "node.toml"),
    ttl_exceeded => ("ttl-exceeded", "node.toml"),
    frag_needed => ("frag-needed", "node.toml"),
    fragment => ("fragment", "node.toml"),
    anti_spoofing => ("anti-spoofing", "node.toml"),
}

/// Every case directory has a test above.
#[test]
fn every_golden_case_runs_on_dpdk() {
    let src = include_str!("dpdk_golden.rs");
    for e in std::fs::read_dir(golden().join("cases")).unwrap().flatten() {
        let case = e.file_name().to_string_lossy().into_owned();
        assert!(
            src.contains(&format!("(\"{case}\",")),
            "golden case `{case}` has no DPDK test"
        );
    }
}
