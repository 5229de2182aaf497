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
//! A vhost-user network (for DPDK pods, usually a Multus
//! NetworkAttachmentDefinition beside the pods' veth network) adds
//! `"mode": "vhost-user"` and optionally
//! `"vhostUser": {"socketDir": "/run/sluice/vhost", "volume": "sluice-vhost",
//! "kubeletDir": "/var/lib/kubelet"}` (see [`VhostUserConf`] and
//! `docs/vhost-user.md`).
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

/// Default `vhostUser.socketDir`.
pub const DEFAULT_VHOST_SOCKET_DIR: &str = "/run/sluice/vhost";
/// Default `vhostUser.volume`: the pod's emptyDir volume for its sockets.
pub const DEFAULT_VHOST_VOLUME: &str = "sluice-vhost";
/// Default `vhostUser.kubeletDir`.
pub const DEFAULT_KUBELET_DIR: &str = "/var/lib/kubelet";

/// How pods of this network are attached (`mode`).
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// `veth` (the default): a veth pair, served by sluiced over AF_XDP.
    Veth,
    /// `vhost-user`: no kernel interface; the pod is the vhost-user server
    /// of a socket in its volume and sluiced (DPDK backend) connects to it.
    VhostUser(VhostUserConf),
}

/// The `vhostUser` keys (vhost-user mode only).
#[derive(Debug, Clone, PartialEq)]
pub struct VhostUserConf {
    /// Node directory for the pods' socket directories (not on Kubernetes:
    /// `<socketDir>/<container id>/`) and, on Kubernetes, the short names
    /// sluiced connects through (`<socketDir>/<port name>`, a symbolic link
    /// to the pod's volume).
    pub socket_dir: PathBuf,
    /// The name of the pod's emptyDir volume that holds its sockets.
    pub volume: String,
    /// The kubelet's root directory (pods' volumes are under
    /// `<kubeletDir>/pods/<pod uid>/volumes/`).
    pub kubelet_dir: PathBuf,
}

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
    /// Own allocator: the pool (`ipam.pool`), a network name whose
    /// addresses this network shares; its own name when unset.
    pub ipam_pool: Option<String>,
    /// veth or vhost-user.
    pub mode: Mode,
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

fn vhost_user_conf(c: &std::collections::HashMap<String, Value>) -> Result<VhostUserConf> {
    let empty = std::collections::HashMap::new();
    let v: std::collections::HashMap<String, Value> = match c.get("vhostUser") {
        None | Some(Value::Null) => empty,
        Some(Value::Object(m)) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        Some(other) => {
            return Err(PluginError::config(format!(
                "network config: vhostUser: expected an object, got {other}"
            )))
        }
    };
    let named = |e: PluginError| PluginError::config(e.msg.replacen(": ", ": vhostUser.", 1));
    let volume = match v.get("volume") {
        None | Some(Value::Null) => DEFAULT_VHOST_VOLUME.to_string(),
        Some(Value::String(s)) if is_dns_label(s) => s.clone(),
        Some(other) => {
            return Err(PluginError::config(format!(
            "network config: vhostUser.volume: expected a volume name (a DNS label), got {other}"
        )))
        }
    };
    Ok(VhostUserConf {
        socket_dir: path_key(&v, "socketDir", DEFAULT_VHOST_SOCKET_DIR).map_err(named)?,
        volume,
        kubelet_dir: path_key(&v, "kubeletDir", DEFAULT_KUBELET_DIR).map_err(named)?,
    })
}

/// A Kubernetes volume name: 1 to 63 of `a-z`, `0-9`, `-`, not starting or
/// ending with `-`.
fn is_dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
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
        let ipam_pool = match (&ipam, conf.ipam.as_ref().and_then(|i| i.custom.get("pool"))) {
            (_, None | Some(Value::Null)) => None,
            (IpamConf::Own, Some(Value::String(p)))
                if !p.is_empty()
                    && p.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)) =>
            {
                Some(p.clone())
            }
            (IpamConf::Own, Some(other)) => {
                return Err(PluginError::config(format!(
                    "network config: ipam.pool: expected a network name, got {other}"
                )))
            }
            (IpamConf::Delegate(_), Some(_)) => None,
        };
        let mode = match c.get("mode") {
            None | Some(Value::Null) => Mode::Veth,
            Some(Value::String(m)) if m == "veth" => Mode::Veth,
            Some(Value::String(m)) if m == "vhost-user" => Mode::VhostUser(vhost_user_conf(c)?),
            Some(other) => {
                return Err(PluginError::config(format!(
                    "network config: mode: expected \"veth\" or \"vhost-user\", got {other}"
                )))
            }
        };
        if mode == Mode::Veth && c.get("vhostUser").is_some_and(|v| !v.is_null()) {
            return Err(PluginError::config(
                "network config: vhostUser is set but mode is not \"vhost-user\"",
            ));
        }
        Ok(PluginConf {
            network: conf.name.clone(),
            sluiced_socket: path_key(c, "sluicedSocket", sluice_api::DEFAULT_SOCKET)?,
            subnet_file: path_key(c, "subnetFile", sluice_api::subnet_file::DEFAULT_PATH)?,
            data_dir: path_key(c, "dataDir", DEFAULT_DATA_DIR)?,
            mtu,
            ipam_pool,
            ipam,
            mode,
        })
    }

    /// Where attachment records live (sluiced's `daemon.pod_records`).
    pub fn attachments_dir(&self) -> PathBuf {
        self.data_dir.join("attachments")
    }

    /// Where the own allocator keeps this network's addresses: its pool's
    /// (`ipam.pool`, by default the network's own).
    pub fn ipam_dir(&self) -> PathBuf {
        self.data_dir
            .join("ipam")
            .join(self.ipam_pool.as_deref().unwrap_or(&self.network))
    }

    /// What the own allocator writes as an owner's network: this network's
    /// name when it uses another's pool, else nothing.
    pub fn owner_network(&self) -> Option<String> {
        self.ipam_pool
            .as_ref()
            .filter(|p| **p != self.network)
            .map(|_| self.network.clone())
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
        assert_eq!(c.mode, Mode::Veth);
    }

    #[test]
    fn vhost_user_mode_has_defaults_and_takes_its_keys() {
        let c = conf(r#"{"cniVersion":"1.1.0","name":"dpdk","type":"sluice","mode":"vhost-user"}"#)
            .unwrap();
        assert_eq!(
            c.mode,
            Mode::VhostUser(VhostUserConf {
                socket_dir: PathBuf::from("/run/sluice/vhost"),
                volume: "sluice-vhost".into(),
                kubelet_dir: PathBuf::from("/var/lib/kubelet"),
            })
        );
        let c = conf(
            r#"{"cniVersion":"1.1.0","name":"dpdk","type":"sluice","mode":"vhost-user",
               "vhostUser":{"socketDir":"/run/v","volume":"vhu","kubeletDir":"/var/lib/k0s/kubelet"}}"#,
        )
        .unwrap();
        let Mode::VhostUser(v) = c.mode else { panic!() };
        assert_eq!(v.socket_dir, PathBuf::from("/run/v"));
        assert_eq!(v.volume, "vhu");
        assert_eq!(v.kubelet_dir, PathBuf::from("/var/lib/k0s/kubelet"));
        let c = conf(r#"{"cniVersion":"1.1.0","name":"p","type":"sluice","mode":"veth"}"#).unwrap();
        assert_eq!(c.mode, Mode::Veth);
    }

    #[test]
    fn a_network_can_share_another_networks_address_pool() {
        let c = conf(r#"{"cniVersion":"1.1.0","name":"dpdk","type":"sluice","mode":"vhost-user","ipam":{"type":"sluice","pool":"sluice"}}"#).unwrap();
        assert_eq!(c.ipam, IpamConf::Own);
        assert_eq!(
            c.ipam_dir(),
            PathBuf::from("/var/lib/sluice/cni/ipam/sluice")
        );
        assert_eq!(c.owner_network(), Some("dpdk".into()));
        let c = conf(r#"{"cniVersion":"1.1.0","name":"sluice","type":"sluice","ipam":{"type":"sluice","pool":"sluice"}}"#).unwrap();
        assert_eq!(c.owner_network(), None, "its own pool");
        let c = conf(r#"{"cniVersion":"1.1.0","name":"sluice","type":"sluice"}"#).unwrap();
        assert_eq!(c.owner_network(), None);
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
            (r#""mode":"vhostuser""#, "mode"),
            (r#""ipam":{"type":"sluice","pool":"../x"}"#, "ipam.pool"),
            (r#""mode":1"#, "mode"),
            (r#""vhostUser":{"socketDir":"/x"}"#, "vhostUser"),
            (r#""mode":"vhost-user","vhostUser":"/run/x""#, "vhostUser"),
            (
                r#""mode":"vhost-user","vhostUser":{"socketDir":"run/x"}"#,
                "vhostUser.socketDir",
            ),
            (
                r#""mode":"vhost-user","vhostUser":{"kubeletDir":7}"#,
                "vhostUser.kubeletDir",
            ),
            (
                r#""mode":"vhost-user","vhostUser":{"volume":"../x"}"#,
                "vhostUser.volume",
            ),
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
