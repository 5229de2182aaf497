//! vhost-user pods (`"mode": "vhost-user"`): where the pod's socket is,
//! the short path sluiced connects through, the pod's MAC, and the
//! contract file the pod reads. `docs/vhost-user.md` is the pod's side.
//!
//! The pod is the vhost-user **server** (DPDK's `net_virtio_user` with
//! `server=1`): it creates the socket and keeps it across restarts of
//! sluiced, which connects as the client (DPDK's `net_vhost` with
//! `client=1`, OVS's `dpdkvhostuserclient`) and reconnects on its own.
//!
//! The socket path rule, per pod interface `<ifname>` ([`plan`]):
//! - **Kubernetes** (`K8S_POD_UID` in `CNI_ARGS`): the pod's emptyDir
//!   volume named `vhostUser.volume` (default `sluice-vhost`), i.e.
//!   `<kubeletDir>/pods/<uid>/volumes/kubernetes.io~empty-dir/<volume>/`;
//!   the socket is `<ifname>.sock` in it, the pod sees it at its
//!   `volumeMounts[].mountPath`. The kubelet makes the volume before the
//!   sandbox (and so before ADD); a pod without it is refused. sluiced
//!   connects through a symbolic link `<socketDir>/<port name>` to the
//!   volume, so its path stays short (a Unix socket path has at most 107
//!   bytes; kubelet paths with a long root would not fit).
//! - **elsewhere** (podman, tests): `<socketDir>/<container id>/`, made by
//!   the plugin, socket `<ifname>.sock` in it.
//!
//! Next to the socket the plugin writes `<ifname>.json` ([`Contract`]):
//! the socket's name, the MAC, address, gateway, MTU, routes and queue
//! count the pod uses. The switch port's name is still
//! [`sluice_api::attachment::host_ifname`].

use crate::conf::VhostUserConf;
use crate::error::{self, PluginError, Result};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// The longest Unix socket path (`sun_path` less its NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// The value of `key` in `CNI_ARGS` (`K1=V1;K2=V2`).
pub fn cni_arg<'a>(args: Option<&'a str>, key: &str) -> Option<&'a str> {
    args?
        .split(';')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim())
}

/// Where one pod interface's socket is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The directory the pod sees (its volume, or `<socketDir>/<id>`).
    pub dir: PathBuf,
    /// The socket, `<dir>/<ifname>.sock`, as the node sees it: the CNI
    /// result's `socketPath`.
    pub socket: PathBuf,
    /// The path sluiced connects to (the port's `vhost_user`): `socket`,
    /// or on Kubernetes `<socketDir>/<port name>/<ifname>.sock` through
    /// [`Place::alias`].
    pub switch_path: PathBuf,
    /// Kubernetes: the symbolic link `<socketDir>/<port name>` to `dir`.
    pub alias: Option<PathBuf>,
}

impl Place {
    /// The contract file, `<dir>/<ifname>.json`.
    pub fn contract_file(&self) -> PathBuf {
        self.socket.with_extension("json")
    }
}

fn bad_arg(msg: String) -> PluginError {
    PluginError::new(error::BAD_ENV, msg)
}

/// A name usable as one path component: not empty, no `/` or `,` (DPDK's
/// devargs separator), not `.` or `..`, no NUL.
fn component_ok(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains(['/', ',', '\0'])
}

/// Where the socket of (`container_id`, `ifname`) goes, by the rule in the
/// module docs; touches nothing. `port` is the switch port's name.
pub fn plan(
    conf: &VhostUserConf,
    cni_args: Option<&str>,
    container_id: &str,
    ifname: &str,
    port: &str,
) -> Result<Place> {
    if !component_ok(ifname) {
        return Err(bad_arg(format!(
            "CNI_IFNAME `{ifname}` cannot name a vhost-user socket (no `/` or `,`)"
        )));
    }
    let sock_name = format!("{ifname}.sock");
    let place = match cni_arg(cni_args, "K8S_POD_UID").filter(|u| !u.is_empty()) {
        Some(uid) => {
            if uid.len() > 64 || !uid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(bad_arg(format!(
                    "CNI_ARGS: K8S_POD_UID `{uid}` is not a pod UID"
                )));
            }
            let dir = conf
                .kubelet_dir
                .join("pods")
                .join(uid)
                .join("volumes/kubernetes.io~empty-dir")
                .join(&conf.volume);
            let alias = conf.socket_dir.join(port);
            Place {
                socket: dir.join(&sock_name),
                switch_path: alias.join(&sock_name),
                alias: Some(alias),
                dir,
            }
        }
        None => {
            if !component_ok(container_id) {
                return Err(bad_arg(format!(
                    "CNI_CONTAINERID `{container_id}` cannot name a directory"
                )));
            }
            let dir = conf.socket_dir.join(container_id);
            Place {
                socket: dir.join(&sock_name),
                switch_path: dir.join(&sock_name),
                alias: None,
                dir,
            }
        }
    };
    let s = place.switch_path.to_string_lossy();
    if s.len() > MAX_SOCKET_PATH || s.contains(',') {
        return Err(PluginError::config(format!(
            "network config: vhostUser.socketDir: the socket path `{s}` is over {MAX_SOCKET_PATH} bytes or has a comma; choose a shorter socketDir"
        )));
    }
    Ok(place)
}

/// Makes the socket's directory: on Kubernetes checks the pod's volume
/// and links `<socketDir>/<port>` to it; elsewhere creates
/// `<socketDir>/<container id>/`. Idempotent.
pub fn prepare(conf: &VhostUserConf, place: &Place) -> Result<()> {
    std::fs::create_dir_all(&conf.socket_dir)
        .map_err(|e| PluginError::io(conf.socket_dir.display(), e))?;
    match &place.alias {
        Some(alias) => {
            if !place.dir.is_dir() {
                return Err(PluginError::new(
                    error::NO_VHOST_VOLUME,
                    format!(
                        "the pod has no emptyDir volume `{}` ({} is missing): a vhost-user pod declares it (vhostUser.volume) and mounts it where its DPDK app opens the socket",
                        conf.volume,
                        place.dir.display()
                    ),
                ));
            }
            match std::fs::read_link(alias) {
                Ok(t) if t == place.dir => return Ok(()),
                Ok(_) => {
                    std::fs::remove_file(alias).map_err(|e| PluginError::io(alias.display(), e))?
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(PluginError::io(alias.display(), e)),
            }
            std::os::unix::fs::symlink(&place.dir, alias)
                .map_err(|e| PluginError::io(alias.display(), e))
        }
        None => {
            std::fs::create_dir_all(&place.dir).map_err(|e| PluginError::io(place.dir.display(), e))
        }
    }
}

/// What the pod needs to open its interface, written next to the socket as
/// `<ifname>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contract {
    /// The socket's file name in the same directory.
    pub socket: String,
    /// Always `server`: the pod creates the socket, sluiced connects.
    pub role: String,
    /// The pod's MAC (sluiced drops frames from any other).
    pub mac: String,
    /// The pod's address with the subnet's prefix length.
    pub ip: String,
    /// The gateway (sluiced answers its ARP).
    pub gateway: Ipv4Addr,
    /// The MTU (the largest IP packet).
    pub mtu: u16,
    /// Queue pairs sluiced opens (one per worker): `queues=` for
    /// `net_virtio_user` (the pod may use fewer).
    pub queues: u32,
    /// Routes: `dst` (a prefix) and `gw`.
    pub routes: Vec<ContractRoute>,
}

/// One route of a [`Contract`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContractRoute {
    /// Destination prefix.
    pub dst: String,
    /// Next hop.
    pub gw: Option<Ipv4Addr>,
}

/// Writes the contract file (temporary file, then rename).
pub fn write_contract(place: &Place, c: &Contract) -> Result<()> {
    let target = place.contract_file();
    let tmp = place
        .dir
        .join(format!(".sluice.{}.tmp", std::process::id()));
    let text = serde_json::to_vec_pretty(c)
        .map_err(|e| PluginError::new(error::IO_FAILURE, format!("contract file: {e}")))?;
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &target))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            PluginError::io(target.display(), e)
        })
}

/// Undoes [`prepare`] and [`write_contract`] for the port whose
/// `vhost_user` is `switch_path`: on Kubernetes the contract file in the
/// pod's volume and the link (the volume is the kubelet's); elsewhere the
/// contract file, the socket and the directory if nothing else is in it.
/// Missing pieces are fine.
pub fn cleanup(switch_path: &Path) -> Result<()> {
    let (Some(parent), Some(sock)) = (switch_path.parent(), switch_path.file_name()) else {
        return Ok(());
    };
    let contract = Path::new(sock).with_extension("json");
    let gone = |r: std::io::Result<()>, what: &Path| match r {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(PluginError::io(what.display(), e))
        }
        _ => Ok(()),
    };
    match std::fs::symlink_metadata(parent) {
        Ok(m) if m.file_type().is_symlink() => {
            if let Ok(target) = std::fs::read_link(parent) {
                let f = target.join(&contract);
                gone(std::fs::remove_file(&f), &f)?;
            }
            gone(std::fs::remove_file(parent), parent)
        }
        Ok(m) if m.is_dir() => {
            let f = parent.join(&contract);
            gone(std::fs::remove_file(&f), &f)?;
            gone(std::fs::remove_file(switch_path), switch_path)?;
            // Whatever else the pod left there stays, with its directory.
            let _ = std::fs::remove_dir(parent);
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The pod's MAC: `0a:58` and the four bytes of its address (the
/// convention of kubenet and OVN-Kubernetes), locally administered,
/// unicast and unique on the node while the address is.
pub fn mac_for(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("0a:58:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vconf(dir: &Path) -> VhostUserConf {
        VhostUserConf {
            socket_dir: dir.join("vhost"),
            volume: "sluice-vhost".into(),
            kubelet_dir: dir.join("kubelet"),
        }
    }

    #[test]
    fn cni_args_are_read_by_key() {
        let a = Some("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_UID=1234-ab");
        assert_eq!(cni_arg(a, "K8S_POD_UID"), Some("1234-ab"));
        assert_eq!(cni_arg(a, "K8S_POD_NAME"), None);
        assert_eq!(cni_arg(None, "K8S_POD_UID"), None);
        assert_eq!(cni_arg(Some("garbage"), "K8S_POD_UID"), None);
    }

    #[test]
    fn the_socket_is_in_the_pods_volume_on_kubernetes_and_reached_through_a_short_link() {
        let conf = VhostUserConf {
            socket_dir: "/run/sluice/vhost".into(),
            volume: "sluice-vhost".into(),
            kubelet_dir: "/var/lib/kubelet".into(),
        };
        let uid = "0d1c5e4e-8f1a-4c55-9b2e-6f9d1a2b3c4d";
        let p = plan(
            &conf,
            Some(&format!("IgnoreUnknown=1;K8S_POD_UID={uid}")),
            "c0ffee",
            "net1",
            "sl0123456789ab",
        )
        .unwrap();
        let dir =
            format!("/var/lib/kubelet/pods/{uid}/volumes/kubernetes.io~empty-dir/sluice-vhost");
        assert_eq!(p.dir, PathBuf::from(&dir));
        assert_eq!(p.socket, PathBuf::from(format!("{dir}/net1.sock")));
        assert_eq!(
            p.switch_path,
            PathBuf::from("/run/sluice/vhost/sl0123456789ab/net1.sock")
        );
        assert_eq!(
            p.alias,
            Some(PathBuf::from("/run/sluice/vhost/sl0123456789ab"))
        );
        assert_eq!(p.contract_file(), PathBuf::from(format!("{dir}/net1.json")));
    }

    #[test]
    fn elsewhere_the_socket_is_in_a_directory_per_container() {
        let conf = VhostUserConf {
            socket_dir: "/run/sluice/vhost".into(),
            volume: "sluice-vhost".into(),
            kubelet_dir: "/var/lib/kubelet".into(),
        };
        let p = plan(&conf, Some("IgnoreUnknown=1"), "c0ffee", "eth0", "sl1").unwrap();
        assert_eq!(p.dir, PathBuf::from("/run/sluice/vhost/c0ffee"));
        assert_eq!(
            p.socket,
            PathBuf::from("/run/sluice/vhost/c0ffee/eth0.sock")
        );
        assert_eq!(p.switch_path, p.socket);
        assert_eq!(p.alias, None);
    }

    #[test]
    fn paths_that_cannot_be_sockets_are_refused_naming_the_cause() {
        let mut conf = VhostUserConf {
            socket_dir: "/run/sluice/vhost".into(),
            volume: "v".into(),
            kubelet_dir: "/var/lib/kubelet".into(),
        };
        let e = plan(&conf, None, "a/b", "eth0", "sl1").unwrap_err();
        assert_eq!(e.code, error::BAD_ENV);
        assert!(e.msg.contains("CNI_CONTAINERID"), "{}", e.msg);
        let e = plan(&conf, None, "c", "et,h0", "sl1").unwrap_err();
        assert!(e.msg.contains("CNI_IFNAME"), "{}", e.msg);
        let e = plan(&conf, Some("K8S_POD_UID=../../etc"), "c", "eth0", "sl1").unwrap_err();
        assert!(e.msg.contains("K8S_POD_UID"), "{}", e.msg);
        conf.socket_dir = PathBuf::from(format!("/{}", "d".repeat(100)));
        let e = plan(&conf, None, "c0ffee", "eth0", "sl1").unwrap_err();
        assert_eq!(e.code, error::INVALID_CONFIG);
        assert!(e.msg.contains("vhostUser.socketDir"), "{}", e.msg);
        // A 64-hex-digit container id under the default directory fits.
        conf.socket_dir = "/run/sluice/vhost".into();
        let id = "f".repeat(64);
        let p = plan(&conf, None, &id, "eth0", "sl1").unwrap();
        assert!(p.switch_path.as_os_str().len() <= MAX_SOCKET_PATH);
    }

    #[test]
    fn prepare_and_cleanup_on_kubernetes_leave_the_volume_to_the_kubelet() {
        let t = tempfile::tempdir().unwrap();
        let conf = vconf(t.path());
        let p = plan(&conf, Some("K8S_POD_UID=u1"), "c", "net1", "sl1").unwrap();
        let e = prepare(&conf, &p).unwrap_err();
        assert_eq!(e.code, error::NO_VHOST_VOLUME);
        assert!(e.msg.contains("sluice-vhost"), "{}", e.msg);
        std::fs::create_dir_all(&p.dir).unwrap();
        prepare(&conf, &p).unwrap();
        prepare(&conf, &p).unwrap();
        assert_eq!(
            std::fs::read_link(p.alias.as_ref().unwrap()).unwrap(),
            p.dir
        );
        assert!(
            p.switch_path.parent().unwrap().is_dir(),
            "the link leads to the volume"
        );
        write_contract(&p, &contract()).unwrap();
        let back: Contract =
            serde_json::from_slice(&std::fs::read(p.contract_file()).unwrap()).unwrap();
        assert_eq!(back, contract());
        std::fs::write(&p.socket, b"").unwrap();
        cleanup(&p.switch_path).unwrap();
        assert!(!p.alias.as_ref().unwrap().exists());
        assert!(!p.contract_file().exists());
        assert!(p.dir.is_dir(), "the volume stays");
        cleanup(&p.switch_path).unwrap();
    }

    #[test]
    fn prepare_and_cleanup_elsewhere_make_and_remove_the_directory() {
        let t = tempfile::tempdir().unwrap();
        let conf = vconf(t.path());
        let p = plan(&conf, None, "c0ffee", "eth0", "sl1").unwrap();
        prepare(&conf, &p).unwrap();
        assert!(p.dir.is_dir());
        write_contract(&p, &contract()).unwrap();
        std::fs::write(&p.socket, b"").unwrap();
        cleanup(&p.switch_path).unwrap();
        assert!(!p.dir.exists());
        cleanup(&p.switch_path).unwrap();
        // Something else of the pod's in it: the directory stays.
        prepare(&conf, &p).unwrap();
        std::fs::write(p.dir.join("eth1.sock"), b"").unwrap();
        cleanup(&p.switch_path).unwrap();
        assert!(p.dir.join("eth1.sock").exists());
    }

    fn contract() -> Contract {
        Contract {
            socket: "net1.sock".into(),
            role: "server".into(),
            mac: mac_for(Ipv4Addr::new(10, 77, 1, 5)),
            ip: "10.77.1.5/24".into(),
            gateway: Ipv4Addr::new(10, 77, 1, 1),
            mtu: 1450,
            queues: 2,
            routes: vec![ContractRoute {
                dst: "0.0.0.0/0".into(),
                gw: Some(Ipv4Addr::new(10, 77, 1, 1)),
            }],
        }
    }

    #[test]
    fn macs_follow_the_address() {
        assert_eq!(mac_for(Ipv4Addr::new(10, 77, 1, 5)), "0a:58:0a:4d:01:05");
        let m: sluice_api::MacAddr = mac_for(Ipv4Addr::new(10, 77, 1, 5)).parse().unwrap();
        assert_eq!(m.to_string(), "0a:58:0a:4d:01:05");
    }
}
