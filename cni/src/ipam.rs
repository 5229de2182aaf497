//! Addresses for pods: the plugin's own allocator, or an IPAM plugin.
//!
//! **Own allocator** ([`OwnIpam`]): the node's subnet from the subnet
//! file, one file per address in `<dataDir>/ipam/<network>/`, named by the
//! address and holding its owner (`containerID`, `ifname`). An address is
//! taken by hard-linking a complete temporary file to its name, which fails
//! if the name exists: concurrent ADDs never share an address, and no reader
//! ever sees a record without its owner. The subnet's network address, the
//! gateway (first address) and the broadcast address are never given out.
//! `last_reserved_ip` remembers where the last search stopped, so addresses
//! are handed out round-robin (a released address is not reused at once).
//!
//! **Delegation** ([`delegate`]): any other `ipam.type` is an IPAM plugin
//! found on `CNI_PATH`. It receives the whole configuration with its `ipam`
//! object, given `ranges` (the node's subnet and gateway) when it names
//! neither `ranges` nor `subnet`, and this process's environment, as the
//! spec has a delegating plugin do. A plugin older than the runtime's
//! version (Debian's `host-local` stops at 1.0.0) is asked again at the
//! newest version both support.

use crate::error::{PluginError, Result, IPAM_FAILED};
use serde_json::{json, Map, Value};
use sluice_api::Ipv4Net;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Who holds an address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Owner {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// The network holding it, when that is not the pool's own (a network
    /// whose `ipam.pool` names another's, such as a vhost-user network
    /// sharing the veth network's addresses); a third line in the file.
    pub network: Option<String>,
}

impl Owner {
    fn render(&self) -> String {
        match &self.network {
            None => format!("{}\n{}\n", self.container_id, self.ifname),
            Some(n) => format!("{}\n{}\n{n}\n", self.container_id, self.ifname),
        }
    }
    fn parse(text: &str) -> Option<Owner> {
        let mut lines = text.lines();
        let container_id = lines.next()?.trim().to_string();
        let ifname = lines.next()?.trim().to_string();
        let network = lines
            .next()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty());
        (!container_id.is_empty()).then_some(Owner {
            container_id,
            ifname,
            network,
        })
    }
}

/// The plugin's own allocator over one directory.
#[derive(Debug, Clone)]
pub struct OwnIpam {
    dir: PathBuf,
}

const LAST_RESERVED: &str = "last_reserved_ip";

impl OwnIpam {
    /// The allocator keeping its files in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> OwnIpam {
        OwnIpam { dir: dir.into() }
    }

    /// Takes a free address of `subnet` for `owner`.
    pub fn allocate(&self, subnet: Ipv4Net, owner: &Owner) -> Result<Ipv4Addr> {
        std::fs::create_dir_all(&self.dir).map_err(|e| PluginError::io(self.dir.display(), e))?;
        let base = subnet.addr_u32();
        let size = 1u64 << (32 - u32::from(subnet.len()));
        if size < 4 {
            return Err(PluginError::config(format!(
                "subnet {subnet}: too small for pods (a /30 or larger is needed)"
            )));
        }
        // Hosts are base+2 ..= base+size-2 (base+1 is the gateway).
        let first = 2u64;
        let count = size - 3;
        let start = std::fs::read_to_string(self.dir.join(LAST_RESERVED))
            .ok()
            .and_then(|s| s.trim().parse::<Ipv4Addr>().ok())
            .map(u32::from)
            .filter(|&a| a >= base + first as u32 && u64::from(a - base) < first + count)
            .map(|a| u64::from(a - base) - first + 1)
            .unwrap_or(0);
        let tmp = self
            .dir
            .join(format!(".claim.{}.{}", std::process::id(), owner.ifname));
        std::fs::write(&tmp, owner.render()).map_err(|e| PluginError::io(tmp.display(), e))?;
        let mut found = None;
        for i in 0..count {
            let ip = Ipv4Addr::from(base + (first + (start + i) % count) as u32);
            match std::fs::hard_link(&tmp, self.dir.join(ip.to_string())) {
                Ok(()) => {
                    found = Some(ip);
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(PluginError::io(self.dir.join(ip.to_string()).display(), e));
                }
            }
        }
        let _ = std::fs::remove_file(&tmp);
        let ip = found.ok_or_else(|| {
            PluginError::new(
                crate::error::ADDRESS_EXHAUSTED,
                format!(
                    "no free address in {subnet}: all {count} are in use ({})",
                    self.dir.display()
                ),
            )
        })?;
        // Best effort: only the search's starting point depends on it.
        let hint = self
            .dir
            .join(format!(".{LAST_RESERVED}.{}", std::process::id()));
        if std::fs::write(&hint, ip.to_string()).is_ok() {
            let _ = std::fs::rename(&hint, self.dir.join(LAST_RESERVED));
        }
        Ok(ip)
    }

    /// Every address held, with its owner (`None`: unreadable).
    pub fn held(&self) -> Vec<(Ipv4Addr, Option<Owner>)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<_> = entries
            .flatten()
            .filter_map(|e| {
                let ip: Ipv4Addr = e.file_name().to_str()?.parse().ok()?;
                let owner = std::fs::read_to_string(e.path())
                    .ok()
                    .and_then(|t| Owner::parse(&t));
                Some((ip, owner))
            })
            .collect();
        out.sort();
        out
    }

    /// Releases what `owner` holds (`hint` first); releasing nothing is fine.
    pub fn release(&self, owner: &Owner, hint: Option<Ipv4Addr>) -> Result<()> {
        if let Some(ip) = hint {
            if self.owner_of(ip).as_ref() == Some(owner) {
                return self.remove(ip);
            }
        }
        for (ip, o) in self.held() {
            if o.as_ref() == Some(owner) {
                self.remove(ip)?;
            }
        }
        Ok(())
    }

    /// Releases every address whose owner `keep` refuses; returns them.
    pub fn gc(&self, keep: impl Fn(&Owner) -> bool) -> Result<Vec<Ipv4Addr>> {
        let mut gone = Vec::new();
        for (ip, o) in self.held() {
            if !o.as_ref().is_some_and(&keep) {
                self.remove(ip)?;
                gone.push(ip);
            }
        }
        Ok(gone)
    }

    fn owner_of(&self, ip: Ipv4Addr) -> Option<Owner> {
        Owner::parse(&std::fs::read_to_string(self.dir.join(ip.to_string())).ok()?)
    }

    fn remove(&self, ip: Ipv4Addr) -> Result<()> {
        let p = self.dir.join(ip.to_string());
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(PluginError::io(p.display(), e))
            }
            _ => Ok(()),
        }
    }
}

/// The delegated plugin's `ipam` object for this node: `ranges` from the
/// subnet file unless it names `ranges` or `subnet`.
pub fn render_delegate(ipam: &Map<String, Value>, subnet: Ipv4Net, gateway: Ipv4Addr) -> Value {
    let mut m = ipam.clone();
    if !m.contains_key("ranges") && !m.contains_key("subnet") {
        m.insert(
            "ranges".into(),
            json!([[{"subnet": subnet.to_string(), "gateway": gateway.to_string()}]]),
        );
    }
    Value::Object(m)
}

/// Finds `plugin` in the `CNI_PATH` directories.
pub fn find_plugin(plugin: &str, cni_path: &[PathBuf]) -> Result<PathBuf> {
    cni_path
        .iter()
        .map(|d| d.join(plugin))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            PluginError::config(format!(
                "network config: ipam.type: no plugin `{plugin}` in CNI_PATH ({})",
                cni_path
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":")
            ))
        })
}

/// Runs IPAM plugin `path` for `command` (`ADD`, `DEL`, `CHECK`, `GC`)
/// with `config` on stdin; returns its stdout parsed (`None` when empty).
/// On "incompatible version" it asks the plugin's VERSION and tries once
/// more at the newest version both know.
pub fn delegate(command: &str, path: &Path, config: &Value) -> Result<Option<Value>> {
    match exec(command, path, config) {
        Err(e) if e.code == crate::error::INCOMPATIBLE_VERSION => {
            let asked = config
                .get("cniVersion")
                .and_then(Value::as_str)
                .unwrap_or("");
            let Some(version) = newest_common(path, asked) else {
                return Err(e);
            };
            let mut again = config.clone();
            again["cniVersion"] = Value::String(version);
            exec(command, path, &again)
        }
        other => other,
    }
}

fn newest_common(path: &Path, asked: &str) -> Option<String> {
    let out = exec("VERSION", path, &json!({"cniVersion": "0.4.0"})).ok()??;
    let key = |v: &str| -> Vec<u32> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    out.get("supportedVersions")?
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .filter(|v| key(v) <= key(asked))
        .max_by_key(|v| key(v))
        .map(str::to_string)
}

fn exec(command: &str, path: &Path, config: &Value) -> Result<Option<Value>> {
    use std::io::Write;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut child = Command::new(path)
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            PluginError::new(
                IPAM_FAILED,
                format!("IPAM plugin `{name}`: cannot run {}: {e}", path.display()),
            )
        })?;
    let input = serde_json::to_vec(config).unwrap_or_default();
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(&input);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| PluginError::new(IPAM_FAILED, format!("IPAM plugin `{name}`: {e}")))?;
    let parsed: Option<Value> = serde_json::from_slice(&out.stdout).ok();
    if out.status.success() {
        return Ok(parsed);
    }
    let (code, msg) = match &parsed {
        Some(v) => (
            v.get("code")
                .and_then(Value::as_u64)
                .unwrap_or(u64::from(IPAM_FAILED)) as u32,
            format!(
                "{}{}",
                v.get("msg").and_then(Value::as_str).unwrap_or("failed"),
                v.get("details")
                    .and_then(Value::as_str)
                    .filter(|d| !d.is_empty())
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            ),
        ),
        None => (
            IPAM_FAILED,
            format!(
                "{} {}",
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ),
    };
    // Version mismatches keep their code (the caller retries); anything
    // else is the IPAM plugin's failure, named as such.
    let (code, theirs) = if code == crate::error::INCOMPATIBLE_VERSION {
        (code, String::new())
    } else {
        (IPAM_FAILED, format!(" (its code {code})"))
    };
    Err(PluginError::new(
        code,
        format!("IPAM plugin `{name}` {command}: {msg}{theirs}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(c: &str) -> Owner {
        Owner {
            container_id: c.into(),
            ifname: "eth0".into(),
            network: None,
        }
    }

    #[test]
    fn an_owner_of_another_network_reads_back_and_old_files_have_none() {
        let mut o = owner("c1");
        assert_eq!(Owner::parse(&o.render()), Some(o.clone()));
        assert_eq!(Owner::parse("c1\neth0\n"), Some(o.clone()));
        o.network = Some("dpdk".into());
        assert_eq!(o.render(), "c1\neth0\ndpdk\n");
        assert_eq!(Owner::parse(&o.render()), Some(o));
    }

    #[test]
    fn addresses_skip_network_gateway_and_broadcast_and_run_out_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = OwnIpam::new(dir.path());
        let net: Ipv4Net = "10.9.0.0/29".parse().unwrap();
        let got: Vec<Ipv4Addr> = (0..5)
            .map(|i| ipam.allocate(net, &owner(&format!("c{i}"))).unwrap())
            .collect();
        let want: Vec<Ipv4Addr> = (2..=6).map(|h| Ipv4Addr::new(10, 9, 0, h)).collect();
        assert_eq!(got, want);
        let e = ipam.allocate(net, &owner("c9")).unwrap_err();
        assert_eq!(e.code, crate::error::ADDRESS_EXHAUSTED);
        assert!(e.msg.contains("10.9.0.0/29"), "{}", e.msg);
        // Released addresses come back, round-robin after the last one.
        ipam.release(&owner("c1"), None).unwrap();
        ipam.release(&owner("c1"), None).unwrap();
        assert_eq!(
            ipam.allocate(net, &owner("c10")).unwrap(),
            Ipv4Addr::new(10, 9, 0, 3)
        );
        assert_eq!(ipam.held().len(), 5);
        let gone = ipam.gc(|o| o.container_id == "c0").unwrap();
        assert_eq!(gone.len(), 4);
        assert_eq!(
            ipam.held(),
            vec![(Ipv4Addr::new(10, 9, 0, 2), Some(owner("c0")))]
        );
    }

    #[test]
    fn concurrent_allocations_never_share_an_address() {
        let dir = tempfile::tempdir().unwrap();
        let net: Ipv4Net = "10.9.0.0/24".parse().unwrap();
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let ipam = OwnIpam::new(dir.path());
                std::thread::spawn(move || {
                    (0..25)
                        .map(|i| {
                            ipam.allocate(
                                net,
                                &Owner {
                                    container_id: format!("t{t}c{i}"),
                                    ifname: format!("e{t}"),
                                    network: None,
                                },
                            )
                            .unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<Ipv4Addr> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.sort();
        let n = all.len();
        all.dedup();
        assert_eq!(all.len(), n);
        assert_eq!(n, 200);
        assert!(all
            .iter()
            .all(|ip| ip.octets()[3] >= 2 && ip.octets()[3] <= 254));
    }

    #[test]
    fn a_delegate_gets_ranges_from_the_subnet_file_unless_it_names_some() {
        let m: Map<String, Value> =
            serde_json::from_str(r#"{"type":"host-local","dataDir":"/x"}"#).unwrap();
        let v = render_delegate(
            &m,
            "10.77.1.0/24".parse().unwrap(),
            Ipv4Addr::new(10, 77, 1, 1),
        );
        assert_eq!(v["ranges"][0][0]["subnet"], "10.77.1.0/24");
        assert_eq!(v["ranges"][0][0]["gateway"], "10.77.1.1");
        assert_eq!(v["dataDir"], "/x");
        let m: Map<String, Value> =
            serde_json::from_str(r#"{"type":"host-local","subnet":"10.1.0.0/16"}"#).unwrap();
        let v = render_delegate(
            &m,
            "10.77.1.0/24".parse().unwrap(),
            Ipv4Addr::new(10, 77, 1, 1),
        );
        assert!(v.get("ranges").is_none());
    }
}
