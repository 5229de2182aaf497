//! Attachment records on disk ([`sluice_api::attachment::Attachment`]), one
//! file per pod interface, `<dir>/<host end>.json`.
//!
//! A record is replaced atomically: written to a hidden temporary file in
//! the same directory, then renamed over the name, so a reader (sluiced at
//! start, a concurrent GC) sees a whole record or none. Records are not
//! fsynced: they describe pods, which do not outlive the machine, and a
//! record cut short by a power loss parses as invalid, which sluiced skips
//! and GC removes (with the port and veth its
//! name gives).

use crate::error::{PluginError, Result};
use sluice_api::attachment::Attachment;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The record of `port_name` in `dir`.
pub fn path(dir: &Path, port_name: &str) -> PathBuf {
    dir.join(format!("{port_name}.json"))
}

/// Writes (or replaces) `record` as `<dir>/<record.port.name>.json`.
pub fn write(dir: &Path, record: &Attachment) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| PluginError::io(dir.display(), e))?;
    let target = path(dir, &record.port.name);
    let tmp = dir.join(format!(".{}.{}.tmp", record.port.name, std::process::id()));
    let text = serde_json::to_vec_pretty(record)
        .map_err(|e| PluginError::new(crate::error::IO_FAILURE, format!("record: {e}")))?;
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(&text))
        .and_then(|()| std::fs::rename(&tmp, &target));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(PluginError::io(target.display(), e));
    }
    Ok(())
}

/// Reads the record of `port_name`; `Ok(None)` when there is none.
pub fn read(dir: &Path, port_name: &str) -> std::result::Result<Option<Attachment>, String> {
    let p = path(dir, port_name);
    match std::fs::read(&p) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{}: {e}", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", p.display())),
    }
}

/// Removes the record of `port_name`; a missing one is not an error.
pub fn remove(dir: &Path, port_name: &str) -> Result<()> {
    let p = path(dir, port_name);
    match std::fs::remove_file(&p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(PluginError::io(p.display(), e)),
        _ => Ok(()),
    }
}

/// Every record in `dir` (temporary files excluded), each parsed or with
/// the reason it does not parse. A missing directory has none.
pub fn list(dir: &Path) -> Vec<(PathBuf, std::result::Result<Attachment, String>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .map(|p| {
            let parsed = std::fs::read(&p)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Attachment>(&b).map_err(|e| e.to_string()));
            (p, parsed)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_api::{PortConfig, PortKind};

    fn record(name: &str) -> Attachment {
        Attachment {
            version: sluice_api::attachment::RECORD_VERSION,
            network: "pods".into(),
            container_id: "c1".into(),
            ifname: "eth0".into(),
            netns: Some("/run/netns/x".into()),
            port: PortConfig {
                name: name.into(),
                kind: PortKind::Pod,
                mtu: 1450,
                mac: "02:00:00:00:00:05".parse().unwrap(),
                address: None,
                gateway: None,
                ip: Some("10.77.1.5".parse().unwrap()),
                rx_mode: None,
                removed: false,
                devargs: None,
                vhost_user: None,
            },
            ipam: serde_json::json!({"type": "sluice"}),
            result: serde_json::json!({}),
        }
    }

    #[test]
    fn records_write_read_list_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("attachments");
        assert!(list(&d).is_empty());
        assert_eq!(read(&d, "sl1").unwrap(), None);
        write(&d, &record("sl1")).unwrap();
        write(&d, &record("sl2")).unwrap();
        std::fs::write(d.join("broken.json"), b"{").unwrap();
        std::fs::write(d.join(".sl3.99.tmp"), b"{").unwrap();
        assert_eq!(read(&d, "sl1").unwrap(), Some(record("sl1")));
        let all = list(&d);
        assert_eq!(all.len(), 3, "{all:?}");
        assert!(all[0].1.is_err(), "broken.json sorts first and fails");
        assert_eq!(all[1].1.as_ref().unwrap().port.name, "sl1");
        remove(&d, "sl1").unwrap();
        remove(&d, "sl1").unwrap();
        assert_eq!(read(&d, "sl1").unwrap(), None);
        let names: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            !names.iter().any(|n| n.to_string_lossy().contains("sl1")),
            "{names:?}"
        );
    }
}
