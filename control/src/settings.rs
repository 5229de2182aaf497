//! The agent's settings: a TOML file, then flags in flannel's spelling.
//!
//! ```toml
//! [agent]
//! sluiced_socket = "/run/sluice/sluiced.sock"
//! subnet_file = "/run/flannel/subnet.env"   # flannel's --subnet-file
//! public_ip = "192.168.50.1"                # flannel's --public-ip; default: sluiced's uplink address
//! ip_masq = false                           # flannel's --ip-masq
//! healthz_address = "127.0.0.1:9473"        # /metrics, /healthz, /readyz ("" to disable)
//! subnet_lease_renew_margin = 60            # minutes, flannel's --subnet-lease-renew-margin
//! lease_check_interval = 10                 # seconds between checks of the watch against a list (0: off)
//! log_level = "info"
//!
//! [store]
//! prefix = "/coreos.com/network"            # flannel's --etcd-prefix
//! dir = "/var/lib/sluice/store"             # the embedded store, used when [etcd] is absent
//!
//! [etcd]                                    # present (or --etcd-endpoints given): use etcd
//! endpoints = ["https://10.0.0.1:2379"]
//! ca_file = "/etc/sluice/etcd-ca.pem"
//! cert_file = "/etc/sluice/etcd.pem"
//! key_file = "/etc/sluice/etcd-key.pem"
//!
//! [bgp]                                     # present: routes over BGP (docs/bgp.md)
//! asn = 64512
//! [[bgp.peers]]
//! address = "192.168.50.2"
//! [[bgp.pools]]
//! cidr = "10.244.0.0/16"
//! ipip_mode = "CrossSubnet"
//! ```
//!
//! A flag given wins over the file; the file wins over the defaults. Unknown
//! keys are refused with the key named.

use crate::agent::AgentSettings;
use crate::store::etcd::EtcdConfig;
use serde::Deserialize;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the embedded store lives by default.
pub const DEFAULT_STORE_DIR: &str = "/var/lib/sluice/store";
/// The default health and metrics address.
pub const DEFAULT_HEALTHZ: &str = "127.0.0.1:9473";

/// `[agent]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// sluiced's API socket.
    pub sluiced_socket: Option<PathBuf>,
    /// The subnet file.
    pub subnet_file: Option<PathBuf>,
    /// This node's underlay address.
    pub public_ip: Option<Ipv4Addr>,
    /// `FLANNEL_IPMASQ`.
    pub ip_masq: Option<bool>,
    /// `/metrics`, `/healthz`, `/readyz`; empty: off.
    pub healthz_address: Option<String>,
    /// Minutes before expiry to renew the lease.
    pub subnet_lease_renew_margin: Option<u64>,
    /// Seconds between checks of the lease watch against a list (0: off).
    pub lease_check_interval: Option<u64>,
    /// A `tracing` filter.
    pub log_level: Option<String>,
}

/// `[store]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// The key prefix.
    pub prefix: Option<String>,
    /// The embedded store's directory.
    pub dir: Option<PathBuf>,
}

/// The file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    /// `[agent]`.
    #[serde(default)]
    pub agent: AgentSection,
    /// `[store]`.
    #[serde(default)]
    pub store: StoreSection,
    /// `[etcd]`.
    pub etcd: Option<EtcdConfig>,
    /// `[bgp]`.
    pub bgp: Option<crate::bgp::BgpSection>,
}

impl FileSettings {
    /// Reads and checks the file.
    pub fn load(path: &Path) -> Result<FileSettings, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Which store to use.
#[derive(Debug, Clone)]
pub enum StoreChoice {
    /// etcd.
    Etcd(EtcdConfig),
    /// The embedded store in this directory.
    Local(PathBuf),
}

/// Everything the process needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The loop's settings.
    pub agent: AgentSettings,
    /// The store.
    pub store: StoreChoice,
    /// Where to serve `/metrics` and health (`None`: nowhere).
    pub healthz: Option<SocketAddr>,
    /// The log filter.
    pub log_level: String,
}

/// Flags (see `main.rs`), already parsed.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--etcd-endpoints` (comma-separated).
    pub etcd_endpoints: Option<String>,
    /// `--etcd-prefix`.
    pub etcd_prefix: Option<String>,
    /// `--etcd-cafile`.
    pub etcd_cafile: Option<PathBuf>,
    /// `--etcd-certfile`.
    pub etcd_certfile: Option<PathBuf>,
    /// `--etcd-keyfile`.
    pub etcd_keyfile: Option<PathBuf>,
    /// `--etcd-username`.
    pub etcd_username: Option<String>,
    /// `--etcd-password`.
    pub etcd_password: Option<String>,
    /// `--store-dir`.
    pub store_dir: Option<PathBuf>,
    /// `--sluiced-socket`.
    pub sluiced_socket: Option<PathBuf>,
    /// `--subnet-file`.
    pub subnet_file: Option<PathBuf>,
    /// `--public-ip`.
    pub public_ip: Option<Ipv4Addr>,
    /// `--ip-masq`.
    pub ip_masq: bool,
    /// `--healthz-address`.
    pub healthz_address: Option<String>,
    /// `--subnet-lease-renew-margin` (minutes).
    pub renew_margin: Option<u64>,
    /// `--lease-ttl` (seconds; tests and labs).
    pub lease_ttl: Option<u64>,
    /// `--sluiced-poll-ms`.
    pub sluiced_poll_ms: Option<u64>,
    /// `--lease-check-interval` (seconds; 0: off).
    pub lease_check_interval: Option<u64>,
    /// `--log-level`.
    pub log_level: Option<String>,
}

impl Settings {
    /// Merges flags over the file over the defaults.
    pub fn resolve(flags: &Flags) -> Result<Settings, String> {
        let file = match &flags.config {
            Some(p) => FileSettings::load(p)?,
            None => FileSettings::default(),
        };
        let mut agent = AgentSettings::default();
        if let Some(p) = flags.etcd_prefix.clone().or(file.store.prefix.clone()) {
            if !p.starts_with('/') {
                return Err(format!("etcd prefix `{p}` must start with /"));
            }
            agent.prefix = p.trim_end_matches('/').to_string();
        }
        if let Some(s) = flags
            .sluiced_socket
            .clone()
            .or(file.agent.sluiced_socket.clone())
        {
            agent.sluiced_socket = s;
        }
        if let Some(s) = flags.subnet_file.clone().or(file.agent.subnet_file.clone()) {
            agent.subnet_file = s;
        }
        agent.public_ip = flags.public_ip.or(file.agent.public_ip);
        agent.ip_masq = flags.ip_masq || file.agent.ip_masq.unwrap_or(false);
        if let Some(m) = flags.renew_margin.or(file.agent.subnet_lease_renew_margin) {
            agent.renew_margin = Duration::from_secs(m * 60);
        }
        if let Some(t) = flags.lease_ttl {
            if t < 5 {
                return Err(format!("--lease-ttl {t}: at least 5 seconds"));
            }
            agent.lease_ttl = Duration::from_secs(t);
        }
        if let Some(ms) = flags.sluiced_poll_ms {
            agent.sluiced_poll = Duration::from_millis(ms.max(10));
        }
        if let Some(secs) = flags
            .lease_check_interval
            .or(file.agent.lease_check_interval)
        {
            agent.lease_check = Duration::from_secs(secs);
        }
        if let Some(b) = &file.bgp {
            agent.bgp = Some(b.resolve()?);
        }
        let mut etcd = file.etcd.clone();
        if let Some(list) = &flags.etcd_endpoints {
            let mut e = etcd.unwrap_or_default();
            e.endpoints = EtcdConfig::parse_endpoints(list);
            if e.endpoints.is_empty() {
                return Err("--etcd-endpoints: no endpoint given".into());
            }
            etcd = Some(e);
        }
        if let Some(e) = etcd.as_mut() {
            if let Some(f) = &flags.etcd_cafile {
                e.ca_file = Some(f.clone());
            }
            if let Some(f) = &flags.etcd_certfile {
                e.cert_file = Some(f.clone());
            }
            if let Some(f) = &flags.etcd_keyfile {
                e.key_file = Some(f.clone());
            }
            if let Some(u) = &flags.etcd_username {
                e.username = Some(u.clone());
            }
            if let Some(p) = &flags.etcd_password {
                e.password = Some(p.clone());
            }
            if e.cert_file.is_some() != e.key_file.is_some() {
                return Err("etcd: a client certificate needs both cert_file and key_file".into());
            }
        } else if flags.etcd_cafile.is_some()
            || flags.etcd_certfile.is_some()
            || flags.etcd_keyfile.is_some()
        {
            return Err(
                "--etcd-cafile/--etcd-certfile/--etcd-keyfile need --etcd-endpoints".into(),
            );
        }
        let store = match etcd {
            Some(e) => StoreChoice::Etcd(e),
            None => StoreChoice::Local(
                flags
                    .store_dir
                    .clone()
                    .or(file.store.dir.clone())
                    .unwrap_or_else(|| DEFAULT_STORE_DIR.into()),
            ),
        };
        let healthz = flags
            .healthz_address
            .clone()
            .or(file.agent.healthz_address.clone())
            .unwrap_or_else(|| DEFAULT_HEALTHZ.into());
        let healthz = if healthz.is_empty() {
            None
        } else {
            Some(
                healthz
                    .parse()
                    .map_err(|_| format!("healthz address `{healthz}` is not ip:port"))?,
            )
        };
        Ok(Settings {
            agent,
            store,
            healthz,
            log_level: flags
                .log_level
                .clone()
                .or(file.agent.log_level.clone())
                .unwrap_or_else(|| "info".into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_use_the_embedded_store_and_flannels_paths() {
        let s = Settings::resolve(&Flags::default()).unwrap();
        assert!(matches!(s.store, StoreChoice::Local(ref d) if d == Path::new(DEFAULT_STORE_DIR)));
        assert_eq!(s.agent.prefix, "/coreos.com/network");
        assert_eq!(s.agent.subnet_file, Path::new("/run/flannel/subnet.env"));
        assert_eq!(s.healthz, Some("127.0.0.1:9473".parse().unwrap()));
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            "[agent]\npublic_ip = \"192.168.1.1\"\nhealthz_address = \"\"\n[store]\nprefix = \"/x/\"\n[etcd]\nendpoints = [\"http://10.0.0.1:2379\"]\n",
        )
        .unwrap();
        let mut f = Flags {
            config: Some(path.clone()),
            ..Flags::default()
        };
        let s = Settings::resolve(&f).unwrap();
        assert_eq!(s.agent.public_ip, Some(Ipv4Addr::new(192, 168, 1, 1)));
        assert_eq!(s.agent.prefix, "/x");
        assert_eq!(s.healthz, None);
        assert!(
            matches!(s.store, StoreChoice::Etcd(ref e) if e.endpoints == ["http://10.0.0.1:2379"])
        );
        f.etcd_endpoints = Some("http://a:1, http://b:2".into());
        f.public_ip = Some(Ipv4Addr::new(192, 168, 1, 2));
        let s = Settings::resolve(&f).unwrap();
        assert_eq!(s.agent.public_ip, Some(Ipv4Addr::new(192, 168, 1, 2)));
        assert!(
            matches!(s.store, StoreChoice::Etcd(ref e) if e.endpoints == ["http://a:1", "http://b:2"])
        );
    }

    #[test]
    fn bad_settings_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, "[agent]\npublic_ipp = \"1.2.3.4\"\n").unwrap();
        let e = Settings::resolve(&Flags {
            config: Some(path),
            ..Flags::default()
        })
        .unwrap_err();
        assert!(e.contains("public_ipp"), "{e}");
        let e = Settings::resolve(&Flags {
            etcd_certfile: Some("/x".into()),
            ..Flags::default()
        })
        .unwrap_err();
        assert!(e.contains("--etcd-endpoints"), "{e}");
        let e = Settings::resolve(&Flags {
            etcd_prefix: Some("x".into()),
            ..Flags::default()
        })
        .unwrap_err();
        assert!(e.contains("must start with /"), "{e}");
    }
}
