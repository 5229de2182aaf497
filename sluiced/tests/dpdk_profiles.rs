//! Hardware profiles on the DPDK backend, with vdevs (EAL `--no-huge`):
//! a profile the device cannot honour is refused naming the rule that
//! failed, and nothing is left running; a profile that fits is applied and
//! reported; cores and drivers are checked against the profile.
//!
//! Needs Debian's DPDK and root (EAL's runtime directory); no network.

use std::path::Path;
use std::process::Command;

/// An empty capture (the crate's own pcap writer: the header alone).
fn write_empty_pcap(path: &Path) {
    sluice_dataplane::pcap::PcapWriter::new(std::fs::File::create(path).unwrap()).unwrap();
}

/// Runs sluiced with `profile` (and `workers`) on a net_pcap uplink for up
/// to `secs`, then stops it; returns its exit success and its log.
fn run(dir: &Path, tag: &str, profile: &Path, workers: &str, secs: u64) -> (bool, String) {
    let empty = dir.join("empty.pcap");
    write_empty_pcap(&empty);
    let cfg = format!(
        "[daemon]\nbackend = \"dpdk\"\napi_socket = \"{}\"\nmetrics_address = \"127.0.0.1:0\"\npod_records = \"\"\nworkers = {workers}\n\
         [daemon.dpdk]\nno_huge = true\nmemory_mb = 128\nfile_prefix = \"sluice-prof-{}-{tag}\"\nmbufs = 2047\nmbuf_cache = 64\nprofile = \"{}\"\n\n\
         [node]\npod_network = \"10.5.0.0/16\"\npod_subnet = \"10.5.1.0/24\"\nrouter_mac = \"02:00:00:00:00:01\"\n\n\
         [[port]]\nname = \"eth0\"\nkind = \"uplink\"\ndevargs = \"net_pcap_{tag},rx_pcap={},tx_pcap={}\"\nmac = \"02:00:00:00:aa:01\"\naddress = \"192.168.50.1/24\"\n",
        dir.join(format!("{tag}.sock")).display(),
        std::process::id(),
        profile.display(),
        empty.display(),
        dir.join(format!("{tag}-out.pcap")).display(),
    );
    let path = dir.join(format!("{tag}.toml"));
    std::fs::write(&path, cfg).unwrap();
    let out = Command::new("timeout")
        .args([
            "-s",
            "TERM",
            &secs.to_string(),
            env!("CARGO_BIN_EXE_sluiced"),
            "--config",
        ])
        .arg(&path)
        .output()
        .unwrap();
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    // timeout(1) exits 124 when it had to stop a sluiced that was running.
    (out.status.code() == Some(124), log)
}

fn profiles() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../hw-profiles")
}

#[test]
fn a_profile_the_device_cannot_honour_is_refused_naming_the_rule() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("steer-profile.toml");
    std::fs::write(
        &p,
        "name = \"pcap-steer\"\n[[steer]]\nname = \"vxlan-to-workers\"\nmatch = \"vxlan\"\nto = \"workers\"\n",
    )
    .unwrap();
    let (ran, log) = run(d.path(), "refuse", &p, "[]", 10);
    assert!(
        !ran,
        "sluiced must not run with a profile it cannot apply:\n{log}"
    );
    assert!(
        log.contains("hardware profile `pcap-steer`, rule `vxlan-to-workers`:"),
        "the error names the profile and the rule:\n{log}"
    );
    assert!(log.contains("nothing left set up"), "{log}");
}

#[test]
fn a_profile_for_other_drivers_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let (ran, log) = run(
        d.path(),
        "drv",
        &profiles().join("lab-tap-steering.toml"),
        "[]",
        10,
    );
    assert!(!ran, "{log}");
    assert!(
        log.contains(
            "rule `drivers`: written for [\"net_tap\"], but the uplink's driver is net_pcap"
        ),
        "{log}"
    );
}

#[test]
fn a_profile_whose_cores_differ_from_the_workers_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("one-core-profile.toml");
    std::fs::write(&p, "name = \"one-core\"\ncores = [0]\n").unwrap();
    let (ran, log) = run(d.path(), "cores", &p, "[1]", 10);
    assert!(!ran, "{log}");
    assert!(
        log.contains("differ from the cores of hardware profile `one-core`"),
        "{log}"
    );
}

#[test]
fn the_lab_profile_is_applied_and_reported() {
    let d = tempfile::tempdir().unwrap();
    let (ran, log) = run(d.path(), "lab", &profiles().join("lab-vdev.toml"), "[]", 3);
    assert!(ran, "sluiced runs with the lab profile:\n{log}");
    let line = log
        .lines()
        .find(|l| l.contains(" port ") && l.contains("port=eth0"))
        .unwrap_or_else(|| panic!("a port report:\n{log}"));
    assert!(
        line.contains("driver=net_pcap") && line.contains("mode=dpdk") && line.contains("queues=1"),
        "{line}"
    );
}
