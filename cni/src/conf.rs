//! The plugin's network configuration: the keys of its entry in the
//! conflist, with defaults, checked before anything is changed.
//!
//! ```json
//! {"type": "sluice",
//!  "sluicedSocket": "/run/sluice/sluiced.sock",
//!  "subnetFile": "/run/flannel/subnet.env",
//!  "dataDir": "/var/lib/sluice/cni",
//!  "mtu": 1450,
//!  "ipam": {"type": "sluice"}}
//! ```
//!
//! Every key is optional. `ipam` absent or of type `sluice` selects the
//! plugin's own allocator; any other type is an IPAM plugin found on
//! `CNI_PATH` (Debian's `host-local` is the tested one) and receives the
//! whole configuration, its `ipam` given `ranges` from the subnet file when
//! it names none (as flannel's CNI plugin does). Unknown keys are left for
//! other plugins; a known key of the wrong type is an error naming it.

use crate::error::{PluginError, Result};
use rscni_plugin::types::NetConf;
use serde_json::{Map, Value};
use std::path::PathBuf;

/// Default `dataDir`: records in `attachments/` (what sluiced's
/// `daemon.pod_records` reads by default), own IPAM in `ipam/<network>/`.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/sluice/cni";

/// The IPAM type that selects the plugin's own allocator.
pub const OWN_IPAM: &str = "sluice";

/// Where addresses come from.
#[derive(Debug, Clone, PartialEq)]
pub enum IpamConf {
    /// The plugin's allocator: the node's subnet, one file per address.
    Own,
    /// An IPAM plugin: its `ipam` object as configured.
    Delegate(Map<String, Value>),
}

impl IpamConf {
    /// The IPAM plugin's type, or [`OWN_IPAM`].
    pub fn kind(&self) -> &str {
        match self {
            IpamConf::Own => OWN_IPAM,
            IpamConf::Delegate(m) => m.get("type").and_then(Value::as_str).unwrap_or(""),
        }
    }
}

/// The plugin's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConf {
    /// The network's name.
    pub network: String,
    /// sluiced's API socket.
    pub sluiced_socket: PathBuf,
    /// The subnet file sluice-agent (or flanneld) writes.
    pub subnet_file: PathBuf,
    /// Records and own-IPAM state.
    pub data_dir: PathBuf,
    /// The pods' MTU; the subnet file's `FLANNEL_MTU` when unset.
    pub mtu: Option<u16>,
    /// Where addresses come from.
    pub ipam: IpamConf,
}

fn path_key(
    custom: &std::collections::HashMap<String, Value>,
    key: &str,
    default: &str,
) -> Result<PathBuf> {
    match custom.get(key) {
        None | Some(Value::Null) => Ok(PathBuf::from(default)),
        Some(Value::String(s)) if !s.is_empty() && s.starts_with('/') => Ok(PathBuf::from(s)),
        Some(other) => Err(PluginError::config(format!(
            "network config: {key}: expected an absolute path, got {other}"
        ))),
    }
}

impl PluginConf {
    /// Reads the plugin's keys from the configuration on stdin.
    pub fn from_netconf(conf: &NetConf) -> Result<PluginConf> {
        let c = &conf.custom;
        let mtu = match c.get("mtu") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(m) if (576..=9000).contains(&m) => Some(m as u16),
                _ => {
                    return Err(PluginError::config(format!(
                        "network config: mtu: expected 576 to 9000, got {v}"
                    )))
                }
            },
        };
        let ipam = match &conf.ipam {
            None => IpamConf::Own,
            Some(i) if i.r#type == OWN_IPAM => IpamConf::Own,
            Some(i) if i.r#type.is_empty() => {
                return Err(PluginError::config("network config: ipam.type: empty"))
            }
            Some(i) => {
                if i.r#type.contains('/') {
                    return Err(PluginError::config(format!(
                        "network config: ipam.type: `{}` is a path; name a plugin on CNI_PATH",
                        i.r#type
                    )));
                }
                let mut m: Map<String, Value> = i
                    .custom
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                m.insert("type".into(), Value::String(i.r#type.clone()));
                IpamConf::Delegate(m)
            }
        };
        Ok(PluginConf {
            network: conf.name.clone(),
            sluiced_socket: path_key(c, "sluicedSocket", sluice_api::DEFAULT_SOCKET)?,
            subnet_file: path_key(c, "subnetFile", sluice_api::subnet_file::DEFAULT_PATH)?,
            data_dir: path_key(c, "dataDir", DEFAULT_DATA_DIR)?,
            mtu,
            ipam,
        })
    }

    /// Where attachment records live (sluiced's `daemon.pod_records`).
    pub fn attachments_dir(&self) -> PathBuf {
        self.data_dir.join("attachments")
    }

    /// Where the own allocator keeps this network's addresses.
    pub fn ipam_dir(&self) -> PathBuf {
        self.data_dir.join("ipam").join(&self.network)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(json: &str) -> Result<PluginConf> {
        let nc: NetConf = serde_json::from_str(json).unwrap();
        PluginConf::from_netconf(&nc)
    }

    #[test]
    fn defaults_fill_every_key() {
        let c = conf(r#"{"cniVersion":"1.0.0","name":"pods","type":"sluice"}"#).unwrap();
        assert_eq!(c.sluiced_socket, PathBuf::from("/run/sluice/sluiced.sock"));
        assert_eq!(c.subnet_file, PathBuf::from("/run/flannel/subnet.env"));
        assert_eq!(
            c.attachments_dir(),
            PathBuf::from(sluice_api::attachment::DEFAULT_DIR)
        );
        assert_eq!(c.ipam_dir(), PathBuf::from("/var/lib/sluice/cni/ipam/pods"));
        assert_eq!(c.ipam, IpamConf::Own);
        assert_eq!(c.mtu, None);
    }

    #[test]
    fn a_delegated_ipam_keeps_its_keys() {
        let c = conf(r#"{"cniVersion":"1.0.0","name":"pods","type":"sluice","ipam":{"type":"host-local","dataDir":"/tmp/x"}}"#).unwrap();
        let IpamConf::Delegate(m) = &c.ipam else {
            panic!()
        };
        assert_eq!(m["type"], "host-local");
        assert_eq!(m["dataDir"], "/tmp/x");
        assert_eq!(c.ipam.kind(), "host-local");
    }

    #[test]
    fn bad_keys_are_named() {
        for (json, key) in [
            (r#""sluicedSocket":3"#, "sluicedSocket"),
            (r#""subnetFile":"relative/path""#, "subnetFile"),
            (r#""dataDir":"""#, "dataDir"),
            (r#""mtu":70000"#, "mtu"),
            (r#""mtu":"1450""#, "mtu"),
            (r#""ipam":{"type":"../../bin/sh"}"#, "ipam.type"),
        ] {
            let e = conf(&format!(
                r#"{{"cniVersion":"1.0.0","name":"n","type":"sluice",{json}}}"#
            ))
            .unwrap_err();
            assert_eq!(e.code, crate::error::INVALID_CONFIG, "{json}");
            assert!(e.msg.contains(key), "{json}: {}", e.msg);
        }
    }
}
