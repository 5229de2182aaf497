//! What the privileged test files share: the root check, a lab guard,
//! ping, lab construction and waiting; [`podman`], a real container
//! runtime on CNI.

#![allow(dead_code)]

pub mod podman;

use sluice_perf::lab::{self, LabSpec, Mode};
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
