//! Host integration: what sluiced does to the node around it. A lock per
//! interface so a second sluiced is refused, the host TAP's addresses and
//! route, and NUMA placement read from sysfs.

use crate::config::NodeConfig;

/// An advisory lock on one interface of this network namespace, held for the
/// daemon's life (`/run/sluice/locks/<netns>-<ifname>.lock`, holding our PID).
#[derive(Debug)]
pub(crate) struct PortLock {
    _file: std::fs::File,
}

impl PortLock {
    pub(crate) fn claim(ifname: &str) -> Result<PortLock, String> {
        use std::io::{Read, Seek, Write};
        let netns = std::fs::read_link("/proc/self/ns/net")
            .map(|p| {
                p.to_string_lossy()
                    .chars()
                    .filter(char::is_ascii_digit)
                    .collect::<String>()
            })
            .unwrap_or_default();
        let dir = std::path::Path::new("/run/sluice/locks");
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let path = dir.join(format!("{netns}-{ifname}.lock"));
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        if let Err(e) = f.try_lock() {
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
            return Err(match e {
                std::fs::TryLockError::WouldBlock => format!("pid {}", pid.trim()),
                std::fs::TryLockError::Error(e) => format!("lock {}: {e}", path.display()),
            });
        }
        let _ = f.set_len(0);
        let _ = f.rewind();
        let _ = write!(f, "{}", std::process::id());
        Ok(PortLock { _file: f })
    }
}

/// Parses a sysfs CPU list such as `0-3,8,10-11`.
pub(crate) fn parse_cpulist(s: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                    out.extend(a..=b);
                }
            }
            None => out.extend(part.parse::<usize>().ok()),
        }
    }
    out
}

/// Where the uplink's NIC sits and whether the workers' cores are on the
/// same NUMA node (from sysfs, as hwloc reads it). `None` when the kernel
/// does not say (virtual NICs, single-node machines).
pub fn numa_report(uplink: &str, cores: &[usize]) -> Option<String> {
    let node: i64 = std::fs::read_to_string(format!("/sys/class/net/{uplink}/device/numa_node"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    if node < 0 {
        return None;
    }
    let local = parse_cpulist(
        &std::fs::read_to_string(format!("/sys/devices/system/node/node{node}/cpulist")).ok()?,
    );
    let remote: Vec<usize> = cores
        .iter()
        .copied()
        .filter(|c| !local.contains(c))
        .collect();
    Some(if cores.is_empty() {
        format!("uplink {uplink} is on NUMA node {node} (cores {local:?}); the worker is not pinned: set daemon.workers to cores of that node")
    } else if remote.is_empty() {
        format!("uplink {uplink} is on NUMA node {node}; every worker core is local")
    } else {
        format!("uplink {uplink} is on NUMA node {node}; worker cores {remote:?} are on another node (local cores: {local:?})")
    })
}

/// Gives the host TAP the kernel-side MAC, brings it up, puts the pods'
/// gateway address on it and routes the pod network through it.
pub(crate) fn configure_host_port(
    cfg: &NodeConfig,
    name: &str,
    mac: crate::wire::MacAddr,
) -> Result<(), String> {
    let gw = format!("{}/32", cfg.node.gateway());
    let net = cfg.node.pod_network.to_string();
    let mac = mac.to_string();
    let steps: [&[&str]; 3] = [
        &["link", "set", "dev", name, "address", &mac, "up"],
        &["addr", "replace", &gw, "dev", name],
        &[
            "route",
            "replace",
            &net,
            "dev",
            name,
            "src",
            &cfg.node.gateway().to_string(),
        ],
    ];
    for args in steps {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .map_err(|e| format!("cannot run ip: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "`ip {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpulists_parse() {
        assert_eq!(
            super::parse_cpulist("0-3,8,10-11\n"),
            vec![0, 1, 2, 3, 8, 10, 11]
        );
        assert_eq!(super::parse_cpulist(""), Vec::<usize>::new());
    }
}
