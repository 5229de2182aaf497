//! Facts about a kernel network device that decide how the switch may use
//! it, read from sysfs.
//!
//! sysfs shows the network namespace it was mounted in (`ip netns exec`
//! remounts it for the namespace). A reading is trusted only when the
//! device's `ifindex` there matches the one this process's namespace gives
//! the name; otherwise it is "unknown" rather than another device's.

use crate::afxdp::{ifindex, XdpError};
use std::path::Path;

/// How many RX queues `ifname` has, if sysfs tells for this namespace.
pub fn rx_queues(ifname: &str) -> Result<Option<u32>, XdpError> {
    rx_queues_under(Path::new("/sys/class/net"), ifname, ifindex(ifname)?)
}

fn rx_queues_under(root: &Path, ifname: &str, idx: u32) -> Result<Option<u32>, XdpError> {
    let dev = root.join(ifname);
    let same = std::fs::read_to_string(dev.join("ifindex"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        == Some(idx);
    if !same {
        return Ok(None);
    }
    let Ok(entries) = std::fs::read_dir(dev.join("queues")) else {
        return Ok(None);
    };
    let n = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count();
    Ok(Some(n as u32))
}

/// Refuses a pod device whose RX queues are not one per worker: fewer, and
/// some worker has no queue to bind; more, and RSS bypasses the switch.
pub fn check_pod_queues(ifname: &str, workers: usize) -> Result<(), String> {
    match rx_queues(ifname).map_err(|e| e.to_string())? {
        Some(q) if (q as usize) < workers => Err(format!(
            "`{ifname}` has {q} RX queue{} but sluiced runs {workers} workers, each serving its own queue: \
             create it with `numrxqueues {workers} numtxqueues {workers}` (both ends of the veth)",
            if q == 1 { "" } else { "s" },
        )),
        q => too_many_queues(ifname, q, workers),
    }
}

/// Refuses a device with more RX queues than there are workers: RSS would
/// put flows on queues no worker has a socket on, and those packets would
/// bypass the switch.
pub fn check_queues(ifname: &str, workers: usize) -> Result<(), String> {
    too_many_queues(
        ifname,
        rx_queues(ifname).map_err(|e| e.to_string())?,
        workers,
    )
}

fn too_many_queues(ifname: &str, queues: Option<u32>, workers: usize) -> Result<(), String> {
    match queues {
        Some(q) if q as usize > workers => Err(format!(
            "`{ifname}` has {q} RX queues but sluiced runs {workers} worker{}: \
             traffic the NIC spreads onto queues {workers}..{} would bypass the switch. \
             Set `ethtool -L {ifname} combined {workers}` (or `rx {workers} tx {workers}`), \
             or give daemon.workers {q} cores",
            if workers == 1 { "" } else { "s" },
            q - 1
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(root: &Path, name: &str, idx: u32, queues: u32) {
        let q = root.join(name).join("queues");
        std::fs::create_dir_all(&q).unwrap();
        std::fs::write(root.join(name).join("ifindex"), format!("{idx}\n")).unwrap();
        for i in 0..queues {
            std::fs::create_dir(q.join(format!("rx-{i}"))).unwrap();
            std::fs::create_dir(q.join(format!("tx-{i}"))).unwrap();
        }
    }

    #[test]
    fn queues_are_counted_only_for_the_same_device() {
        let d = tempfile::tempdir().unwrap();
        fake(d.path(), "eth0", 7, 4);
        assert_eq!(rx_queues_under(d.path(), "eth0", 7).unwrap(), Some(4));
        assert_eq!(
            rx_queues_under(d.path(), "eth0", 8).unwrap(),
            None,
            "another namespace's eth0"
        );
        assert_eq!(rx_queues_under(d.path(), "eth9", 7).unwrap(), None);
    }

    #[test]
    fn the_loopback_has_one_queue_and_passes_for_one_worker() {
        // `lo` exists in every namespace and has one RX queue.
        assert_eq!(rx_queues("lo").unwrap(), Some(1));
        assert!(check_queues("lo", 1).is_ok());
        let e = check_queues("lo", 0).unwrap_err();
        assert!(
            e.contains("has 1 RX queues but sluiced runs 0 workers"),
            "{e}"
        );
    }
}
