//! The result cache, in libcni's on-disk format, so that a runtime built on
//! libcni and this library read each other's entries:
//! `<cache_dir>/results/<network>-<containerID>-<ifname>` holding
//!
//! ```text
//! {"kind":"cniCacheV1","containerId":…,"config":<base64 of the conflist>,
//!  "ifName":…,"networkName":…,"netns":…,"cniArgs":[[k,v],…],
//!  "capabilityArgs":{…},"result":{…}}
//! ```
//!
//! (`netns`, `cniArgs`, `capabilityArgs` and `result` are left out when
//! empty, as Go's `omitempty` does.) Directory mode 0700, file mode 0600.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The `kind` of a cache entry.
pub const CACHE_KIND: &str = "cniCacheV1";

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct CachedInfo {
    pub kind: String,
    #[serde(rename = "containerId")]
    pub container_id: String,
    /// Base64 (Go's encoding of `[]byte`).
    #[serde(default)]
    pub config: Option<String>,
    #[serde(rename = "ifName")]
    pub if_name: String,
    #[serde(rename = "networkName")]
    pub network_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub netns: String,
    #[serde(rename = "cniArgs", default, skip_serializing_if = "Option::is_none")]
    pub cni_args: Option<Vec<(String, String)>>,
    #[serde(
        rename = "capabilityArgs",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub capability_args: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Map<String, Value>>,
}

impl CachedInfo {
    pub fn config_bytes(&self) -> Result<Vec<u8>, String> {
        match &self.config {
            None => Ok(Vec::new()),
            Some(s) => base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| format!("config is not base64: {e}")),
        }
    }

    pub fn encode_config(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }
}

/// One network attachment found in the cache (libcni's
/// `NetworkAttachment`).
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    /// `CNI_CONTAINERID` of the ADD.
    pub container_id: String,
    /// The network (conflist) name.
    pub network: String,
    /// `CNI_IFNAME` of the ADD.
    pub ifname: String,
    /// The conflist bytes the ADD ran with.
    pub config: Vec<u8>,
    /// `CNI_NETNS` of the ADD, when one was given.
    pub netns: Option<PathBuf>,
    /// `CNI_ARGS` of the ADD.
    pub args: Vec<(String, String)>,
    /// The capability arguments of the ADD.
    pub capability_args: Map<String, Value>,
    /// The final result of the ADD.
    pub result: Option<Value>,
}

pub(crate) fn write(path: &Path, info: &CachedInfo) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let bytes = serde_json::to_vec(info).map_err(std::io::Error::other)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(&bytes)
}

/// Reads an entry: `Ok(None)` when it cannot be read (libcni ignores read
/// errors: the entry may simply not exist).
pub(crate) fn read(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

/// Removes an entry; a missing one is fine.
pub(crate) fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
