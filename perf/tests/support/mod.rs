//! What the privileged test files share: the root check, a lab guard,
//! ping, lab construction and waiting; [`podman`], a real container
//! runtime on CNI; [`testpmd`], `dpdk-testpmd` as a vhost-user pod.

#![allow(dead_code)]

pub mod podman;
pub mod testpmd;

use sluice_perf::lab::{self, LabSpec, LabState, Mode};
use sluice_perf::pods;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Fails (never skips) when not root.
pub fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("");
    assert_eq!(uid, "0", "the privileged tier needs root (network namespaces, XDP, AF_XDP): run `sudo scripts/test.sh`");
}

/// Takes the lab down when the test ends, passing or not.
pub struct Guard(pub String);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = lab::down(&self.0);
    }
}

/// Three pings from namespace `from` to `to`; whether any came back.
pub fn ping(from: &str, to: &str) -> bool {
    Command::new("ip")
        .args([
            "netns", "exec", from, "ping", "-c", "3", "-i", "0.2", "-W", "2", to,
        ])
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// `count` quiet pings every 10 ms from namespace `from` to `to`, each
/// waited for up to 1 s; the summary is on its stdout.
pub fn pinger(from: &str, to: &str, count: u64) -> std::process::Child {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            from,
            "ping",
            "-q",
            "-i",
            "0.01",
            "-W",
            "1",
            "-c",
            &count.to_string(),
            to,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Two sluiced nodes in `mode`, `workers` workers each.
pub fn up(name: &str, mode: Mode, workers: u8) -> lab::LabState {
    lab::up(
        &LabSpec {
            workers,
            ..LabSpec::new(name, 2, mode)
        },
        &mut |_| {},
    )
    .expect("lab up")
}

/// Waits up to `secs` for `f` to hold.
pub fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a command; its stdout, or a failure naming it.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What the node holds for pods: (sluiced ports, host veths, records, leases).
pub fn holdings(st: &LabState, i: usize) -> (Vec<String>, Vec<String>, Vec<String>, Vec<String>) {
    let n = &st.nodes[i];
    let mut ports: Vec<String> = sluice_api::Client::new(&n.api_socket)
        .ports()
        .map(|l| {
            l.ports
                .into_iter()
                .filter(|p| p.kind == sluice_api::PortKind::Pod)
                .map(|p| p.name)
                .collect()
        })
        .unwrap_or_default();
    ports.sort();
    let mut veths: Vec<String> = sh(&["ip", "-n", &n.ns, "-o", "link", "show", "type", "veth"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|s| s.split('@').next().unwrap().to_string())
        .filter(|s| s.starts_with("sl"))
        .collect();
    veths.sort();
    let names = |d: PathBuf| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.') && n != "last_reserved_ip")
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let records = names(pods::records_dir(n));
    let leases = names(pods::data_dir(n).join("ipam/sluice"));
    (ports, veths, records, leases)
}

/// Sends `bytes` random bytes over TCP from namespace `from` to `to_ip`
/// (`nc` listening in `to_ns`); the bytes the listener wrote out.
pub fn tcp(from: &str, to_ns: &str, to_ip: &str, port: u16, bytes: usize) -> u64 {
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
