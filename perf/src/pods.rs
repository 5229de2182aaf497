//! A lab node's pods, attached as a container runtime attaches them: the
//! `sluice` CNI plugin called through [`sluice_cni::libcni`] (conflist,
//! environment, result cache), run in the node's namespace.
//!
//! Each sluiced node has `/run/sluice-lab/<node>-cni/` holding its
//! conflist, the plugin's records (`attachments/`, which the node's sluiced
//! reads back at start: `daemon.pod_records`), its own-IPAM files and the
//! result cache. The pods' addresses come from the plugin's own IPAM: a
//! fresh node hands out `.2`, `.3`, … in order.

use crate::lab::{self, LabError, LabState, NodeState};
use sluice_cni::libcni::{Cni, ConfList, RuntimeConf};
use std::path::PathBuf;

type Result<T> = std::result::Result<T, LabError>;

/// The node's CNI directory.
pub fn data_dir(n: &NodeState) -> PathBuf {
    lab::state_dir().join(format!("{}-cni", n.ns))
}

/// Where the node's sluiced reads attachment records.
pub fn records_dir(n: &NodeState) -> PathBuf {
    data_dir(n).join("attachments")
}

/// The node's conflist: the plugin alone, its socket, subnet file and
/// data directory the node's.
pub fn conflist(state: &LabState, i: usize) -> String {
    let n = &state.nodes[i];
    serde_json::json!({
        "cniVersion": "1.1.0",
        "cniVersions": ["1.0.0", "1.1.0"],
        "name": "sluice",
        "plugins": [{
            "type": "sluice",
            "sluicedSocket": n.api_socket,
            "subnetFile": crate::cluster::subnet_file(state, i),
            "dataDir": data_dir(n),
        }]
    })
    .to_string()
}

/// The directory holding the `sluice` plugin binary.
pub fn plugin_dir() -> Result<PathBuf> {
    let bin = crate::cluster::binary("sluice", "SLUICE_CNI_PLUGIN");
    bin.parent()
        .filter(|d| !d.as_os_str().is_empty() && bin.is_file())
        .map(PathBuf::from)
        .ok_or_else(|| {
            LabError::Other(
                "the sluice CNI plugin is not built: `cargo build --release -p sluice-cni` (or set SLUICE_CNI_PLUGIN)".into(),
            )
        })
}

/// A libcni caller for node `i`: plugins from the plugin's directory and
/// Debian's (`/usr/lib/cni`), run in the node's namespace.
pub fn cni(state: &LabState, i: usize) -> Result<Cni> {
    let n = &state.nodes[i];
    Ok(Cni::new(vec![plugin_dir()?, PathBuf::from("/usr/lib/cni")])
        .with_cache_dir(data_dir(n).join("cache"))
        .with_host_netns(n.ns.clone()))
}

fn list(state: &LabState, i: usize) -> Result<ConfList> {
    let text = conflist(state, i);
    let dir = data_dir(&state.nodes[i]);
    std::fs::create_dir_all(&dir)
        .map_err(|e| LabError::Other(format!("{}: {e}", dir.display())))?;
    let _ = std::fs::write(dir.join("10-sluice.conflist"), &text);
    ConfList::parse(text.as_bytes()).map_err(|e| LabError::Other(format!("lab conflist: {e}")))
}

/// The runtime arguments of pod `j` of node `i`: its namespace as
/// container ID, `eth0`.
pub fn runtime_conf(state: &LabState, i: usize, j: usize) -> RuntimeConf {
    let ns = &state.nodes[i].pods[j].0;
    RuntimeConf::new(
        ns.clone(),
        Some(PathBuf::from(format!("/run/netns/{ns}"))),
        "eth0",
    )
}

/// ADD for pod `j` of node `i`; returns its address.
pub fn attach(state: &mut LabState, i: usize, j: usize) -> Result<String> {
    let result = cni(state, i)?
        .add_network_list(&list(state, i)?, &runtime_conf(state, i, j))
        .map_err(|e| LabError::Other(format!("CNI ADD for {}: {e}", state.nodes[i].pods[j].0)))?;
    let ip = result["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .ok_or_else(|| LabError::Other(format!("CNI ADD gave no address: {result}")))?
        .to_string();
    state.nodes[i].pods[j].1 = ip.clone();
    Ok(ip)
}

/// DEL for pod `j` of node `i`.
pub fn detach(state: &LabState, i: usize, j: usize) -> Result<()> {
    cni(state, i)?
        .del_network_list(&list(state, i)?, &runtime_conf(state, i, j))
        .map_err(|e| LabError::Other(format!("CNI DEL for {}: {e}", state.nodes[i].pods[j].0)))
}

/// Attaches every pod of node `i`.
pub fn attach_all(state: &mut LabState, i: usize) -> Result<()> {
    for j in 0..state.nodes[i].pods.len() {
        attach(state, i, j)?;
    }
    Ok(())
}
