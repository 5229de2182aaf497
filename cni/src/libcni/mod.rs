//! A runtime-side CNI library: calls CNI plugins exactly as a container
//! runtime built on the reference Go `libcni` (containernetworking/cni,
//! `libcni/api.go`) does. The tests and the lab use it to drive plugins —
//! Debian's and ours — through the real protocol.
//!
//! ```no_run
//! use sluice_cni::libcni::{Cni, ConfList, RuntimeConf};
//! let list = ConfList::load("/etc/cni/net.d/10-pods.conflist")?;
//! let cni = Cni::new(vec!["/usr/lib/cni".into()]);
//! let rt = RuntimeConf::new("c1", Some("/run/netns/pod1".into()), "eth0");
//! let result = cni.add_network_list(&list, &rt)?;
//! cni.check_network_list(&list, &rt)?;
//! cni.del_network_list(&list, &rt)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Invariants (as libcni and the spec)
//!
//! - A plugin is the file `<dir>/<type>` in the first of
//!   [`Cni::plugin_dirs`] that has a regular file by that name.
//! - Every invocation inherits this process's environment and sets all six
//!   of `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`,
//!   `CNI_ARGS` (`K=V;K=V`) and `CNI_PATH` (the plugin dirs joined by `:`),
//!   empty when they do not apply (GC, STATUS).
//! - The request on stdin is the plugin's object from the conflist with
//!   `name` and `cniVersion` set to the list's; for ADD/DEL/CHECK also
//!   `runtimeConfig` = the plugin's enabled `capabilities` ∩
//!   [`RuntimeConf::capability_args`] (left out when empty) and `prevResult`
//!   (left out on the first ADD of a chain).
//! - ADD runs the chain in order, each plugin getting the previous one's
//!   result, stops at the first error and does **not** DEL (the caller
//!   decides, as the spec says a runtime must; [`Cni::del_network_list`] is
//!   the call). The final result is cached (see [the cache](#the-cache)).
//! - DEL runs the chain in reverse with `prevResult` = the cached result
//!   (config version ≥ 0.4.0), then removes the cache entry; a DEL with no
//!   cache entry runs without `prevResult`. An unreadable entry is removed and
//!   the DEL goes on without it.
//! - CHECK (config version ≥ 0.4.0, else an error) runs in order with the
//!   cached result; with `disableCheck` it does nothing.
//! - GC (unless `disableGC`) first DELs every cached attachment of this
//!   network that is not in the valid set (as libcni's `GCNetworkList`), then,
//!   for config version ≥ 1.1.0 only, sends GC to every plugin with
//!   `cni.dev/valid-attachments` and `cni.dev/attachments` (libcni sends both:
//!   the 1.1.0 spec text named the second); it goes on past errors and
//!   returns them all.
//! - STATUS is sent only for config version ≥ 1.1.0 (else a no-op), in
//!   order, stopping at the first error.
//! - No version negotiation: the list's `cniVersion` is sent to every plugin
//!   as is, even to a plugin that only supports older versions (libcni does
//!   not downgrade either; the plugin answers with error code 1).
//!
//! # The cache
//!
//! `<cache_dir>/results/<network>-<containerID>-<ifname>` (directory mode
//! 0700, file mode 0600), in libcni's `cniCacheV1` JSON format, so entries
//! written by a libcni runtime are read here and the other way round:
//!
//! ```text
//! {"kind":"cniCacheV1","containerId":…,"config":<base64 of the conflist>,
//!  "ifName":…,"networkName":…,"netns":…,"cniArgs":[[k,v],…],
//!  "capabilityArgs":{…},"result":{…}}
//! ```
//!
//! `netns`, `cniArgs`, `capabilityArgs` and `result` are left out when empty
//! (Go's `omitempty`). Entries of old libcni versions, which hold the bare
//! result, are read too.
//!
//! # Where this differs from libcni
//!
//! - `capabilities` is removed from ADD/DEL/CHECK requests, as the spec says
//!   ("`capabilities`: must not be set"); libcni passes it through. GC and
//!   STATUS requests keep it, as in libcni.
//! - Results stay raw JSON objects: no typed parse and no conversion of the
//!   cached result to the config's version (libcni's `GetAsVersion`). As in
//!   libcni, a result without `cniVersion` gets the config's.
//! - Only inlined `plugins` are read: no plugin objects from
//!   `<confdir>/<name>/*.conf`, no single-plugin `.conf` files;
//!   `loadOnlyInlinedPlugins` is ignored. `plugins` must be non-empty.
//! - Stricter parse: a missing `cniVersion` (with no usable `cniVersions`) is
//!   an error (libcni reads it as 0.1.0), and `name` and `type` are checked
//!   when parsing (libcni checks the name only on ADD).
//! - A plugin that fails without a JSON error on stdout gives code 999
//!   ([`ERR_INTERNAL`]) with the raw output; libcni reports code 0.
//! - Synchronous, no context/timeout. The "text file busy" retry waits
//!   50 ms doubling up to five times (libcni: 1 s, five times).
//! - [`Cni::host_netns`]: plugins can be run inside a named network
//!   namespace (`ip netns exec NAME plugin`) instead of this process's, which
//!   is how the lab runs one node per namespace.
//! - A plugin's stderr is captured: in [`CniError::stderr`] on failure,
//!   written to this process's stderr (`eprint!`) on success.

mod cache;
mod conf;

pub use cache::{Attachment, CACHE_KIND};
pub use conf::{ConfError, ConfList, PluginConf, Version, CURRENT_VERSION};

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::{json, Map, Value};

use cache::CachedInfo;

/// libcni's default cache directory.
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/cni";

/// The code given to a failure that came without a spec error on stdout
/// (libcni's `ErrInternal`).
pub const ERR_INTERNAL: u32 = 999;

/// A CNI operation (`CNI_COMMAND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// ADD
    Add,
    /// DEL
    Del,
    /// CHECK
    Check,
    /// GC
    Gc,
    /// STATUS
    Status,
    /// VERSION
    Version,
}

impl Command {
    /// The `CNI_COMMAND` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Gc => "GC",
            Command::Status => "STATUS",
            Command::Version => "VERSION",
        }
    }

    fn is_attachment_op(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The per-attachment arguments of one call (libcni's `RuntimeConf`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimeConf {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`: the container's namespace, e.g. `/run/netns/pod1`.
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS`, in order.
    pub args: Vec<(String, String)>,
    /// Capability arguments; each plugin gets those it declares in
    /// `capabilities`, as `runtimeConfig`.
    pub capability_args: Map<String, Value>,
}

impl RuntimeConf {
    /// An attachment with no `CNI_ARGS` and no capability arguments.
    pub fn new(
        container_id: impl Into<String>,
        netns: Option<PathBuf>,
        ifname: impl Into<String>,
    ) -> RuntimeConf {
        RuntimeConf {
            container_id: container_id.into(),
            netns,
            ifname: ifname.into(),
            ..RuntimeConf::default()
        }
    }

    /// The `CNI_ARGS` string, `K=V;K=V`.
    pub fn args_string(&self) -> String {
        self.args
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";")
    }
}

/// A plugin's failure: it exited non-zero. `code`, `msg` and `details` are
/// its spec error object from stdout (`{cniVersion, code, msg, details}`);
/// when stdout held none, `code` is [`ERR_INTERNAL`] and `msg`/`details`
/// carry what it printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    /// The plugin's `type`.
    pub plugin: String,
    /// The network (conflist) name; empty for VERSION.
    pub network: String,
    /// The operation.
    pub command: Command,
    /// The spec error code.
    pub code: u32,
    /// `msg`.
    pub msg: String,
    /// `details`.
    pub details: String,
    /// Whatever the plugin wrote to stderr.
    pub stderr: String,
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "plugin type={:?}", self.plugin)?;
        if !self.network.is_empty() {
            write!(f, " name={:?}", self.network)?;
        }
        write!(
            f,
            " failed ({}): [code {}] {}",
            self.command, self.code, self.msg
        )?;
        if !self.details.is_empty() {
            write!(f, "; {}", self.details)?;
        }
        if !self.stderr.trim().is_empty() {
            write!(f, " (stderr: {})", self.stderr.trim())?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

/// Anything a call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The plugin ran and failed.
    #[error(transparent)]
    Plugin(Box<CniError>),
    /// No plugin binary of that type in the plugin dirs.
    #[error("failed to find plugin {plugin:?} in path {dirs:?}")]
    NotFound {
        /// The `type`.
        plugin: String,
        /// Where it was looked for.
        dirs: Vec<PathBuf>,
    },
    /// The plugin could not be started.
    #[error("plugin type={plugin:?} ({command}): cannot run {}: {source}", path.display())]
    Spawn {
        /// The `type`.
        plugin: String,
        /// The operation.
        command: Command,
        /// The binary.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The plugin succeeded but its output is not what the operation returns.
    #[error("plugin type={plugin:?} ({command}): unusable output: {reason}")]
    BadOutput {
        /// The `type`.
        plugin: String,
        /// The operation.
        command: Command,
        /// What is wrong with it.
        reason: String,
    },
    /// A runtime argument the spec constrains is invalid (checked on ADD,
    /// as libcni does).
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidArgument {
        /// `container ID`, `interface name` or `network name`.
        what: &'static str,
        /// The value.
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// CHECK on a list whose version predates it.
    #[error("configuration version {0:?} does not support the CHECK command")]
    CheckNotSupported(String),
    /// The result cache could not be written or read.
    #[error("result cache {}: {reason}", path.display())]
    Cache {
        /// The entry.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl Error {
    /// The plugin's error, when a plugin failed.
    pub fn cni(&self) -> Option<&CniError> {
        match self {
            Error::Plugin(e) => Some(e),
            _ => None,
        }
    }
}

/// Every failure of a GC, in the order they happened.
#[derive(Debug, thiserror::Error)]
#[error("GC failed: {}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
pub struct GcErrors(pub Vec<Error>);

/// A plugin's VERSION answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    /// `cniVersion` of the answer.
    pub cni_version: String,
    /// `supportedVersions`.
    pub supported_versions: Vec<String>,
}

/// The environment of one invocation.
struct Invocation<'a> {
    command: Command,
    network: &'a str,
    container_id: &'a str,
    netns: String,
    ifname: &'a str,
    args: String,
    path: String,
}

/// The runtime side: where plugins are, where results are cached, and the
/// namespace plugins run in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cni {
    /// Searched in order for a plugin's binary; also `CNI_PATH`.
    pub plugin_dirs: Vec<PathBuf>,
    /// The result cache's root (default [`DEFAULT_CACHE_DIR`]).
    pub cache_dir: PathBuf,
    /// When set, each plugin runs as `ip netns exec <name> <plugin>`: in
    /// that named network namespace instead of this process's.
    pub host_netns: Option<String>,
}

impl Cni {
    /// Plugins from `plugin_dirs`, results cached under
    /// [`DEFAULT_CACHE_DIR`], plugins run in this process's namespace.
    pub fn new(plugin_dirs: Vec<PathBuf>) -> Cni {
        Cni {
            plugin_dirs,
            cache_dir: PathBuf::from(DEFAULT_CACHE_DIR),
            host_netns: None,
        }
    }

    /// The same, caching under `dir`.
    pub fn with_cache_dir(mut self, dir: impl Into<PathBuf>) -> Cni {
        self.cache_dir = dir.into();
        self
    }

    /// The same, running plugins in the named network namespace.
    pub fn with_host_netns(mut self, name: impl Into<String>) -> Cni {
        self.host_netns = Some(name.into());
        self
    }

    /// The binary for `plugin_type` (libcni's `FindInPath`).
    pub fn find_plugin(&self, plugin_type: &str) -> Result<PathBuf, Error> {
        let not_found = || Error::NotFound {
            plugin: plugin_type.to_string(),
            dirs: self.plugin_dirs.clone(),
        };
        if plugin_type.is_empty() || plugin_type.contains('/') {
            return Err(not_found());
        }
        self.plugin_dirs
            .iter()
            .map(|d| d.join(plugin_type))
            .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file()))
            .ok_or_else(not_found)
    }

    fn cni_path(&self) -> String {
        self.plugin_dirs
            .iter()
            .map(|d| d.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(":")
    }

    fn invocation<'a>(
        &self,
        command: Command,
        network: &'a str,
        rt: &'a RuntimeConf,
    ) -> Invocation<'a> {
        Invocation {
            command,
            network,
            container_id: &rt.container_id,
            netns: rt
                .netns
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
            ifname: &rt.ifname,
            args: rt.args_string(),
            path: self.cni_path(),
        }
    }

    /// The request a plugin of `list` gets on stdin for an ADD, DEL or CHECK
    /// (see the module docs for what is added and removed).
    pub fn request(
        list: &ConfList,
        plugin: &PluginConf,
        command: Command,
        prev_result: Option<&Value>,
        rt: &RuntimeConf,
    ) -> Map<String, Value> {
        let mut conf = plugin.raw.clone();
        conf.insert("name".into(), Value::String(list.name.clone()));
        conf.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
        if let Some(prev) = prev_result {
            conf.insert("prevResult".into(), prev.clone());
        }
        if command.is_attachment_op() {
            let runtime_config: Map<String, Value> = plugin
                .enabled_capabilities()
                .filter_map(|c| {
                    rt.capability_args
                        .get(c)
                        .map(|v| (c.to_string(), v.clone()))
                })
                .collect();
            if !runtime_config.is_empty() {
                conf.insert("runtimeConfig".into(), Value::Object(runtime_config));
            }
            conf.remove("capabilities");
        }
        conf
    }

    /// The request a plugin of `list` gets for GC: `name`, `cniVersion` and
    /// the valid attachments under both keys libcni sends.
    pub fn gc_request(
        list: &ConfList,
        plugin: &PluginConf,
        valid: &[(String, String)],
    ) -> Map<String, Value> {
        let mut conf = plugin.raw.clone();
        conf.insert("name".into(), Value::String(list.name.clone()));
        conf.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
        let attachments: Vec<Value> = valid
            .iter()
            .map(|(cid, ifname)| json!({"containerID": cid, "ifname": ifname}))
            .collect();
        conf.insert(
            "cni.dev/valid-attachments".into(),
            Value::Array(attachments.clone()),
        );
        conf.insert("cni.dev/attachments".into(), Value::Array(attachments));
        conf
    }

    /// Runs one plugin; its stdout on success.
    fn exec(
        &self,
        plugin_type: &str,
        inv: &Invocation<'_>,
        stdin: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let path = self.find_plugin(plugin_type)?;
        let mut delay = Duration::from_millis(50);
        let mut tries = 0;
        let output = loop {
            match self.run(&path, inv, stdin) {
                // ETXTBSY: the binary is still open for writing somewhere
                // (being installed); libcni retries too.
                Err(e) if e.raw_os_error() == Some(26) && tries < 5 => {
                    tries += 1;
                    std::thread::sleep(delay);
                    delay *= 2;
                }
                Err(source) => {
                    return Err(Error::Spawn {
                        plugin: plugin_type.to_string(),
                        command: inv.command,
                        path,
                        source,
                    })
                }
                Ok(out) => break out,
            }
        };
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if output.status.success() {
            if !stderr.is_empty() {
                eprint!("{stderr}");
            }
            return Ok(output.stdout);
        }
        Err(Error::Plugin(Box::new(plugin_error(
            plugin_type,
            inv,
            &output,
            stderr,
        ))))
    }

    fn run(&self, path: &Path, inv: &Invocation<'_>, stdin: &[u8]) -> std::io::Result<Output> {
        let mut cmd = match &self.host_netns {
            Some(ns) => {
                let mut c = std::process::Command::new("ip");
                c.args(["netns", "exec", ns]).arg(path);
                c
            }
            None => std::process::Command::new(path),
        };
        cmd.env("CNI_COMMAND", inv.command.as_str())
            .env("CNI_CONTAINERID", inv.container_id)
            .env("CNI_NETNS", &inv.netns)
            .env("CNI_IFNAME", inv.ifname)
            .env("CNI_ARGS", &inv.args)
            .env("CNI_PATH", &inv.path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        let mut input = child.stdin.take().expect("stdin is piped");
        // Written from a thread so that a plugin that writes before it
        // reads cannot deadlock us; a plugin that exits without reading
        // gives EPIPE, which is its business.
        std::thread::scope(|s| {
            s.spawn(move || {
                let _ = input.write_all(stdin);
            });
            child.wait_with_output()
        })
    }

    fn check_attachment_args(list: &ConfList, rt: &RuntimeConf) -> Result<(), Error> {
        let invalid = |what, value: &str, reason| {
            Err(Error::InvalidArgument {
                what,
                value: value.to_string(),
                reason,
            })
        };
        if rt.container_id.is_empty() {
            return invalid("container ID", &rt.container_id, "missing");
        }
        if !conf::valid_name(&rt.container_id) {
            return invalid("container ID", &rt.container_id, "invalid characters");
        }
        if !conf::valid_name(&list.name) {
            return invalid("network name", &list.name, "invalid characters");
        }
        let ifname = &rt.ifname;
        if ifname.is_empty() {
            return invalid("interface name", ifname, "empty");
        }
        if ifname.len() > 15 {
            return invalid("interface name", ifname, "longer than 15 bytes");
        }
        if ifname == "." || ifname == ".." {
            return invalid("interface name", ifname, "is . or ..");
        }
        if ifname
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
        {
            return invalid("interface name", ifname, "contains / or : or whitespace");
        }
        Ok(())
    }

    /// ADD: runs the chain in order and returns (and caches) the last
    /// plugin's result. On error nothing is undone: call
    /// [`Cni::del_network_list`].
    pub fn add_network_list(&self, list: &ConfList, rt: &RuntimeConf) -> Result<Value, Error> {
        Self::check_attachment_args(list, rt)?;
        let mut result: Option<Value> = None;
        for plugin in &list.plugins {
            let conf = Self::request(list, plugin, Command::Add, result.as_ref(), rt);
            let stdin = serde_json::to_vec(&conf).expect("JSON values serialize");
            let inv = self.invocation(Command::Add, &list.name, rt);
            let out = self.exec(&plugin.plugin_type, &inv, &stdin)?;
            result = Some(parse_result(&plugin.plugin_type, &list.cni_version, &out)?);
        }
        let result = result.expect("a conflist has at least one plugin");
        self.cache_add(list, rt, &result)?;
        Ok(result)
    }

    /// DEL: runs the chain in reverse with the cached ADD result as
    /// `prevResult` (version ≥ 0.4.0), then drops the cache entry. Stops at
    /// the first failing plugin (the entry is then kept).
    pub fn del_network_list(&self, list: &ConfList, rt: &RuntimeConf) -> Result<(), Error> {
        let cache_path = self.cache_path(&list.name, rt);
        let cached = if list.version() >= Version::V0_4_0 {
            match self.cached_result(list, rt) {
                Ok(r) => r,
                Err(_) => {
                    if let Some(p) = &cache_path {
                        let _ = cache::remove(p);
                    }
                    None
                }
            }
        } else {
            None
        };
        for plugin in list.plugins.iter().rev() {
            let conf = Self::request(list, plugin, Command::Del, cached.as_ref(), rt);
            let stdin = serde_json::to_vec(&conf).expect("JSON values serialize");
            let inv = self.invocation(Command::Del, &list.name, rt);
            self.exec(&plugin.plugin_type, &inv, &stdin)?;
        }
        if let Some(p) = &cache_path {
            let _ = cache::remove(p);
        }
        Ok(())
    }

    /// CHECK: runs the chain in order with the cached ADD result as
    /// `prevResult`. A no-op with `disableCheck`; an error for versions
    /// before 0.4.0.
    pub fn check_network_list(&self, list: &ConfList, rt: &RuntimeConf) -> Result<(), Error> {
        if list.version() < Version::V0_4_0 {
            return Err(Error::CheckNotSupported(list.cni_version.clone()));
        }
        if list.disable_check {
            return Ok(());
        }
        let cached = self.cached_result(list, rt)?;
        for plugin in &list.plugins {
            let conf = Self::request(list, plugin, Command::Check, cached.as_ref(), rt);
            let stdin = serde_json::to_vec(&conf).expect("JSON values serialize");
            let inv = self.invocation(Command::Check, &list.name, rt);
            self.exec(&plugin.plugin_type, &inv, &stdin)?;
        }
        Ok(())
    }

    /// GC with `valid` = the `(containerID, ifname)` attachments still in
    /// use. A no-op with `disableGC`. First DELs the cached attachments of
    /// this network not in `valid`; then, for version ≥ 1.1.0, sends GC to
    /// every plugin. Goes on past failures and returns them all.
    pub fn gc_network_list(
        &self,
        list: &ConfList,
        valid: &[(String, String)],
    ) -> Result<(), GcErrors> {
        if list.disable_gc {
            return Ok(());
        }
        let mut errors = Vec::new();
        // libcni gives up silently when the cache cannot be listed.
        for a in self.cached_attachments(None).unwrap_or_default() {
            if a.network != list.name
                || valid
                    .iter()
                    .any(|(cid, ifn)| *cid == a.container_id && *ifn == a.ifname)
            {
                continue;
            }
            let rt = RuntimeConf {
                container_id: a.container_id,
                netns: a.netns,
                ifname: a.ifname,
                args: a.args,
                capability_args: a.capability_args,
            };
            if let Err(e) = self.del_network_list(list, &rt) {
                errors.push(e);
            }
        }
        if list.version() >= Version::V1_1_0 {
            let empty = RuntimeConf::default();
            for plugin in &list.plugins {
                let conf = Self::gc_request(list, plugin, valid);
                let stdin = serde_json::to_vec(&conf).expect("JSON values serialize");
                let inv = self.invocation(Command::Gc, &list.name, &empty);
                if let Err(e) = self.exec(&plugin.plugin_type, &inv, &stdin) {
                    errors.push(e);
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(GcErrors(errors))
        }
    }

    /// STATUS: asks each plugin in order whether it can serve ADDs; the
    /// first failure is returned (codes 50/51 per the spec). A no-op for
    /// versions before 1.1.0.
    pub fn status_network_list(&self, list: &ConfList) -> Result<(), Error> {
        if list.version() < Version::V1_1_0 {
            return Ok(());
        }
        let empty = RuntimeConf::default();
        for plugin in &list.plugins {
            let conf = Self::request(list, plugin, Command::Status, None, &empty);
            let stdin = serde_json::to_vec(&conf).expect("JSON values serialize");
            let inv = self.invocation(Command::Status, &list.name, &empty);
            self.exec(&plugin.plugin_type, &inv, &stdin)?;
        }
        Ok(())
    }

    /// VERSION of the plugin `plugin_type` (asked with
    /// `{"cniVersion":"1.1.0"}`; like libcni, `CNI_NETNS`, `CNI_IFNAME` and
    /// `CNI_PATH` are set to `dummy` for plugins built on old skels). A
    /// plugin that does not know VERSION supports 0.1.0 only.
    pub fn version(&self, plugin_type: &str) -> Result<VersionInfo, Error> {
        let inv = Invocation {
            command: Command::Version,
            network: "",
            container_id: "",
            netns: "dummy".into(),
            ifname: "dummy",
            args: String::new(),
            path: "dummy".into(),
        };
        let stdin = format!(r#"{{"cniVersion":"{CURRENT_VERSION}"}}"#);
        let out = match self.exec(plugin_type, &inv, stdin.as_bytes()) {
            Err(Error::Plugin(e)) if e.msg == "unknown CNI_COMMAND: VERSION" => {
                return Ok(VersionInfo {
                    cni_version: "0.1.0".into(),
                    supported_versions: vec!["0.1.0".into()],
                })
            }
            r => r?,
        };
        let bad = |reason: String| Error::BadOutput {
            plugin: plugin_type.to_string(),
            command: Command::Version,
            reason,
        };
        let v: Value = serde_json::from_slice(&out).map_err(|e| bad(format!("not JSON: {e}")))?;
        let cni_version = v
            .get("cniVersion")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad("missing cniVersion".into()))?
            .to_string();
        let supported: Vec<String> = v
            .get("supportedVersions")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let supported_versions = if !supported.is_empty() {
            supported
        } else if cni_version == "0.2.0" {
            vec!["0.1.0".into(), "0.2.0".into()]
        } else {
            return Err(bad("missing supportedVersions".into()));
        };
        Ok(VersionInfo {
            cni_version,
            supported_versions,
        })
    }

    /// The cache entry of an attachment; `None` when the network name,
    /// container ID or interface name is empty.
    pub fn cache_path(&self, network: &str, rt: &RuntimeConf) -> Option<PathBuf> {
        if network.is_empty() || rt.container_id.is_empty() || rt.ifname.is_empty() {
            return None;
        }
        Some(
            self.cache_dir
                .join("results")
                .join(format!("{network}-{}-{}", rt.container_id, rt.ifname)),
        )
    }

    fn cache_add(&self, list: &ConfList, rt: &RuntimeConf, result: &Value) -> Result<(), Error> {
        let path = self
            .cache_path(&list.name, rt)
            .ok_or_else(|| Error::Cache {
                path: self.cache_dir.join("results"),
                reason: "network name, container ID and interface name are all needed".into(),
            })?;
        let info = CachedInfo {
            kind: CACHE_KIND.into(),
            container_id: rt.container_id.clone(),
            config: Some(CachedInfo::encode_config(&list.bytes)),
            if_name: rt.ifname.clone(),
            network_name: list.name.clone(),
            netns: rt
                .netns
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
            cni_args: (!rt.args.is_empty()).then(|| rt.args.clone()),
            capability_args: (!rt.capability_args.is_empty()).then(|| rt.capability_args.clone()),
            result: result.as_object().filter(|m| !m.is_empty()).cloned(),
        };
        cache::write(&path, &info).map_err(|e| Error::Cache {
            path,
            reason: e.to_string(),
        })
    }

    /// The cached final ADD result of an attachment: `Ok(None)` when there
    /// is no entry, an error when there is one that cannot be understood.
    /// Entries written by old libcni versions (the bare result, no `kind`)
    /// are read too.
    pub fn cached_result(&self, list: &ConfList, rt: &RuntimeConf) -> Result<Option<Value>, Error> {
        let Some(path) = self.cache_path(&list.name, rt) else {
            return Err(Error::Cache {
                path: self.cache_dir.join("results"),
                reason: "network name, container ID and interface name are all needed".into(),
            });
        };
        let Some(bytes) = cache::read(&path) else {
            return Ok(None);
        };
        let bad = |reason: String| Error::Cache {
            path: path.clone(),
            reason,
        };
        match serde_json::from_slice::<CachedInfo>(&bytes) {
            Ok(info) if info.kind == CACHE_KIND => Ok(info.result.map(Value::Object)),
            _ => {
                // libcni's legacy format: the file is the result itself.
                let v: Value = serde_json::from_slice(&bytes)
                    .map_err(|e| bad(format!("neither a cache entry nor a result: {e}")))?;
                match v.get("cniVersion") {
                    Some(Value::String(_)) => Ok(Some(v)),
                    _ => Err(bad("neither a cache entry nor a result".into())),
                }
            }
        }
    }

    /// Every attachment in the cache (of `container_id` only, when given),
    /// sorted by file name; unreadable entries are skipped (libcni's
    /// `GetCachedAttachments`).
    pub fn cached_attachments(&self, container_id: Option<&str>) -> Result<Vec<Attachment>, Error> {
        let dir = self.cache_dir.join("results");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(Error::Cache {
                    path: dir,
                    reason: e.to_string(),
                })
            }
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        let mut out = Vec::new();
        for path in paths {
            let Some(bytes) = cache::read(&path) else {
                continue;
            };
            let Ok(info) = serde_json::from_slice::<CachedInfo>(&bytes) else {
                continue;
            };
            if info.kind != CACHE_KIND
                || info.if_name.is_empty()
                || info.network_name.is_empty()
                || container_id.is_some_and(|c| c != info.container_id)
            {
                continue;
            }
            let Ok(config) = info.config_bytes() else {
                continue;
            };
            out.push(Attachment {
                container_id: info.container_id,
                network: info.network_name,
                ifname: info.if_name,
                config,
                netns: (!info.netns.is_empty()).then(|| PathBuf::from(info.netns)),
                args: info.cni_args.unwrap_or_default(),
                capability_args: info.capability_args.unwrap_or_default(),
                result: info.result.map(Value::Object),
            });
        }
        Ok(out)
    }
}

/// An ADD's stdout as a result: a JSON object (`null` counts as `{}`), with
/// `cniVersion` set to the config's when missing or empty (libcni's
/// `fixupResultVersion`).
fn parse_result(plugin: &str, cni_version: &str, out: &[u8]) -> Result<Value, Error> {
    let bad = |reason: String| Error::BadOutput {
        plugin: plugin.to_string(),
        command: Command::Add,
        reason,
    };
    let v: Value = serde_json::from_slice(out).map_err(|e| {
        bad(format!(
            "result is not JSON ({e}): {:?}",
            String::from_utf8_lossy(out)
        ))
    })?;
    let mut map = match v {
        Value::Object(m) => m,
        Value::Null => Map::new(),
        other => return Err(bad(format!("result is not a JSON object: {other}"))),
    };
    if !matches!(map.get("cniVersion"), Some(Value::String(s)) if !s.is_empty()) {
        map.insert("cniVersion".into(), Value::String(cni_version.to_string()));
    }
    Ok(Value::Object(map))
}

/// A failed plugin's error from its output (libcni's `pluginErr`).
fn plugin_error(plugin: &str, inv: &Invocation<'_>, output: &Output, stderr: String) -> CniError {
    let mut e = CniError {
        plugin: plugin.to_string(),
        network: inv.network.to_string(),
        command: inv.command,
        code: ERR_INTERNAL,
        msg: String::new(),
        details: String::new(),
        stderr,
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    if stdout.trim().is_empty() {
        e.msg = if e.stderr.trim().is_empty() {
            format!("netplugin failed with no error message: {}", output.status)
        } else {
            format!("netplugin failed: {:?}: {}", e.stderr.trim(), output.status)
        };
        return e;
    }
    match serde_json::from_str::<Value>(&stdout) {
        Ok(Value::Object(m)) => {
            if let Some(code) = m
                .get("code")
                .and_then(Value::as_u64)
                .and_then(|c| u32::try_from(c).ok())
            {
                e.code = code;
            }
            e.msg = m
                .get("msg")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            e.details = m
                .get("details")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if e.msg.is_empty() && e.details.is_empty() {
                e.msg = format!(
                    "netplugin failed ({}) with {}",
                    output.status,
                    stdout.trim()
                );
            }
        }
        _ => {
            e.msg = format!(
                "netplugin failed ({}) but its diagnostic message is not a JSON object",
                output.status
            );
            e.details = stdout.trim().to_string();
        }
    }
    e
}

#[cfg(test)]
mod tests;
