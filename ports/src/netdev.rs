//! Facts about a kernel network device that decide how the switch may use
//! it, read from sysfs.
//!
//! sysfs shows the network namespace it was mounted in (`ip netns exec`
//! remounts it for the namespace). A reading is trusted only when the
//! device's `ifindex` there matches the one this process's namespace gives
//! the name; otherwise it is "unknown" rather than another device's.
//!
//! [`disable_tx_offloads`] is the one write: the pod end of a veth served by
//! AF_XDP must send complete frames (checksums filled in, no GSO), because
//! XDP sees the frame as written and the switch forwards it as is.

#![allow(unsafe_code)]

use crate::afxdp::{ifindex, XdpError};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// `struct ethtool_value`: a legacy ethtool command and its value.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// `struct ifreq` with `ifr_data` pointing at an ethtool command.
#[repr(C)]
struct IfReqData {
    name: [u8; libc::IFNAMSIZ],
    data: *mut EthtoolValue,
    _pad: [u8; 16],
}

const SIOCETHTOOL: libc::c_ulong = 0x8946;
/// Set TX checksumming, TSO and generic segmentation offload.
const ETHTOOL_STXCSUM: u32 = 0x17;
const ETHTOOL_STSO: u32 = 0x1f;
const ETHTOOL_SGSO: u32 = 0x24;

/// Turns off TX checksum offload, TSO and GSO on `ifname` in the calling
/// thread's network namespace (`ethtool -K ifname tx off tso off gso off`).
pub fn disable_tx_offloads(ifname: &str) -> std::io::Result<()> {
    if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ || ifname.contains('\0') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("`{ifname}` is not an interface name"),
        ));
    }
    // SAFETY: a plain socket call; the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor this function owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    for cmd in [ETHTOOL_STXCSUM, ETHTOOL_STSO, ETHTOOL_SGSO] {
        let mut value = EthtoolValue { cmd, data: 0 };
        let mut req = IfReqData {
            name: [0; libc::IFNAMSIZ],
            data: &mut value,
            _pad: [0; 16],
        };
        req.name[..ifname.len()].copy_from_slice(ifname.as_bytes());
        // SAFETY: SIOCETHTOOL reads an `ifreq` (name, then `ifr_data`) whose
        // data pointer names a live `ethtool_value` for the call's duration;
        // `IfReqData` is ifreq-sized (40 bytes).
        let rc = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, &mut req as *mut IfReqData) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            // A device without the offload has nothing to turn off.
            if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("`{ifname}`: ethtool command {cmd:#x}: {e}"),
                ));
            }
        }
    }
    Ok(())
}

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
    #[test]
    fn offloads_refuse_a_bad_name_and_name_a_missing_device() {
        assert!(super::disable_tx_offloads("").is_err());
        assert!(super::disable_tx_offloads("a-name-far-too-long").is_err());
        let e = super::disable_tx_offloads("nosuch-sl0").unwrap_err();
        assert!(e.to_string().contains("nosuch-sl0"), "{e}");
    }

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
