//! The subnet file, `/run/flannel/subnet.env`, as flanneld writes it.
//!
//! ```text
//! FLANNEL_NETWORK=10.5.0.0/16
//! FLANNEL_SUBNET=10.5.72.1/24
//! FLANNEL_MTU=1450
//! FLANNEL_IPMASQ=false
//! ```
//!
//! `FLANNEL_SUBNET` is the subnet's first usable address with the subnet's
//! length (the pods' gateway). The CNI plugin (sluice's, or flannel's) reads
//! it on every pod ADD, so it is replaced atomically: written to a temporary
//! file in the same directory, synced, renamed over the old one, and the
//! directory synced. A reader sees the old file or the new one, never half.
//! The agent also reads it back at start: the subnet it names is the one to
//! try first when this node has no lease (flannel does the same).

use crate::Ipv4Net;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;

/// flannel's default location.
pub const DEFAULT_PATH: &str = "/run/flannel/subnet.env";

/// The file's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetFile {
    /// `FLANNEL_NETWORK`.
    pub network: Ipv4Net,
    /// The leased subnet (`FLANNEL_SUBNET` is its first address).
    pub subnet: Ipv4Net,
    /// `FLANNEL_MTU`: the pods' MTU.
    pub mtu: u16,
    /// `FLANNEL_IPMASQ`.
    pub ip_masq: bool,
}

impl SubnetFile {
    /// The file's text.
    pub fn render(&self) -> String {
        let first = Ipv4Addr::from(self.subnet.addr_u32() + 1);
        format!(
            "FLANNEL_NETWORK={}\nFLANNEL_SUBNET={}/{}\nFLANNEL_MTU={}\nFLANNEL_IPMASQ={}\n",
            self.network,
            first,
            self.subnet.len(),
            self.mtu,
            self.ip_masq
        )
    }

    /// Reads a subnet file's text; the error names the line at fault.
    pub fn parse(text: &str) -> Result<SubnetFile, String> {
        let (mut network, mut subnet, mut mtu, mut masq) = (None, None, None, None);
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| format!("line {}: not KEY=value", n + 1))?;
            let bad = |what: &str| format!("line {}: {k}: `{v}` is not {what}", n + 1);
            match k {
                "FLANNEL_NETWORK" => {
                    network = Some(v.parse::<Ipv4Net>().map_err(|_| bad("a prefix"))?)
                }
                "FLANNEL_SUBNET" => {
                    let (ip, len) = v.split_once('/').ok_or_else(|| bad("address/length"))?;
                    let ip: Ipv4Addr = ip.parse().map_err(|_| bad("address/length"))?;
                    let len: u8 = len.parse().map_err(|_| bad("address/length"))?;
                    if len > 32 {
                        return Err(bad("address/length"));
                    }
                    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                    subnet = Ipv4Net::new(Ipv4Addr::from(u32::from(ip) & mask), len);
                }
                "FLANNEL_MTU" => mtu = Some(v.parse::<u16>().map_err(|_| bad("an MTU"))?),
                "FLANNEL_IPMASQ" => {
                    masq = Some(v.parse::<bool>().map_err(|_| bad("true or false"))?)
                }
                _ => {}
            }
        }
        Ok(SubnetFile {
            network: network.ok_or("FLANNEL_NETWORK missing")?,
            subnet: subnet.ok_or("FLANNEL_SUBNET missing")?,
            mtu: mtu.ok_or("FLANNEL_MTU missing")?,
            ip_masq: masq.unwrap_or(false),
        })
    }

    /// Reads the file at `path`; `None` if it does not exist or cannot be read.
    pub fn read(path: &Path) -> Option<SubnetFile> {
        SubnetFile::parse(&std::fs::read_to_string(path).ok()?).ok()
    }

    /// Replaces the file at `path` atomically (see the module docs).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let name = path
            .file_name()
            .ok_or_else(|| std::io::Error::other(format!("{}: not a file path", path.display())))?;
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(self.render().as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            std::fs::File::open(dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> SubnetFile {
        SubnetFile {
            network: "10.5.0.0/16".parse().unwrap(),
            subnet: "10.5.72.0/24".parse().unwrap(),
            mtu: 1450,
            ip_masq: false,
        }
    }

    #[test]
    fn renders_as_flanneld_and_reads_back() {
        let text = file().render();
        assert_eq!(
            text,
            "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.72.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"
        );
        assert_eq!(SubnetFile::parse(&text).unwrap(), file());
    }

    #[test]
    fn bad_lines_are_named() {
        assert!(SubnetFile::parse("FLANNEL_MTU=x\n")
            .unwrap_err()
            .contains("line 1: FLANNEL_MTU"));
        assert!(SubnetFile::parse("garbage\n")
            .unwrap_err()
            .contains("line 1"));
        assert!(SubnetFile::parse("FLANNEL_MTU=1450\n")
            .unwrap_err()
            .contains("FLANNEL_NETWORK"));
    }

    #[test]
    fn writes_atomically_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flannel/subnet.env");
        file().write(&path).unwrap();
        let mut other = file();
        other.mtu = 1480;
        other.write(&path).unwrap();
        assert_eq!(SubnetFile::read(&path), Some(other));
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["subnet.env"]);
    }
}
