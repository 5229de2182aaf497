//! The record of one pod attachment, written by the CNI plugin and read
//! back by `sluiced` when it starts.
//!
//! The `sluice` CNI plugin writes one record per successful ADD, as
//! `<dir>/<port name>.json` (default dir [`DEFAULT_DIR`]), atomically
//! (temporary file, fsync, rename, directory fsync), before it asks
//! `sluiced` for the port; DEL removes it after the port is gone. `sluiced`
//! (`daemon.pod_records`) reads every record at start and adds the ports
//! whose interfaces still exist, so a restarted switch forwards for its pods
//! again without any call from the container runtime.
//!
//! Invariants:
//! - the file name is `port.name` plus `.json`; `port.name` is the host end
//!   of the pod's veth ([`host_ifname`]), unique per (network, container,
//!   interface);
//! - `port.kind` is `pod`, `port.ip` and `port.mac` are the pod's (the
//!   anti-spoofing binding);
//! - a record is complete or absent: readers never see half a file.

use crate::types::PortConfig;
use serde::{Deserialize, Serialize};

/// Where the plugin keeps attachment records and `sluiced` reads them,
/// unless configured otherwise.
pub const DEFAULT_DIR: &str = "/var/lib/sluice/cni/attachments";

/// The record format's version.
pub const RECORD_VERSION: u32 = 1;

/// One pod attachment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    /// [`RECORD_VERSION`].
    pub version: u32,
    /// The CNI network name.
    pub network: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`: the interface's name inside the pod.
    pub ifname: String,
    /// `CNI_NETNS` at ADD.
    #[serde(default)]
    pub netns: Option<String>,
    /// The switch port: the host end of the veth, the pod's IP and MAC.
    pub port: PortConfig,
    /// How the address was obtained: the IPAM configuration as passed to
    /// the IPAM plugin (DEL and GC hand the same one back), or
    /// `{"type":"sluice"}` for the plugin's own allocator.
    pub ipam: serde_json::Value,
    /// The ADD result the plugin returned.
    pub result: serde_json::Value,
}

/// The host end's name for a pod attachment: `sl` and 12 hex digits of the
/// 64-bit FNV-1a hash of `network`, `container_id` and `ifname` (separated
/// by NUL bytes), 14 characters, within the kernel's 15. Stable across
/// releases: records and running pods depend on it.
pub fn host_ifname(network: &str, container_id: &str, ifname: &str) -> String {
    let bytes = network
        .bytes()
        .chain([0])
        .chain(container_id.bytes())
        .chain([0])
        .chain(ifname.bytes());
    let h = bytes.fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("sl{:012x}", h >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_stable_short_and_distinct() {
        let a = host_ifname("sluice", "c0ffee", "eth0");
        assert_eq!(a.len(), 14);
        assert!(a.starts_with("sl"));
        // Pinned: running pods and records depend on this value.
        assert_eq!(a, "sl216f4972c228");
        assert_ne!(a, host_ifname("sluice", "c0ffee", "eth1"));
        assert_ne!(a, host_ifname("sluice", "c0ffe", "eeth0"));
        assert_ne!(host_ifname("a", "bc", "d"), host_ifname("ab", "c", "d"));
    }

    #[test]
    fn a_record_reads_back() {
        let text = r#"{"version":1,"network":"sluice","container_id":"c1","ifname":"eth0",
            "netns":"/var/run/netns/p","port":{"name":"sl0123456789ab","kind":"pod","mtu":1450,
            "mac":"02:00:00:00:00:02","ip":"10.77.1.2"},"ipam":{"type":"sluice"},"result":{}}"#;
        let r: Attachment = serde_json::from_str(text).unwrap();
        assert_eq!(r.port.name, "sl0123456789ab");
        assert_eq!(r.port.ip, Some("10.77.1.2".parse().unwrap()));
        let again: Attachment = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(again, r);
    }
}
