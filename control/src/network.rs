//! The cluster's network configuration: flannel's `<prefix>/config` JSON.
//!
//! Read exactly as flanneld reads it (`pkg/subnet/config.go`), so one etcd
//! serves both: `Network`, `SubnetLen`, `SubnetMin`, `SubnetMax` and
//! `Backend` with `Type`, `VNI`, `Port` and `DirectRouting`. Defaults follow
//! flannel's `CheckNetworkConfig`:
//! - `SubnetLen` 0 or absent: 24 when `Network` is /22 or larger, otherwise
//!   the network's length + 2; above 30 is refused, as is a `Network` smaller
//!   than /28;
//! - `SubnetMin`: the network plus one subnet (the first subnet is skipped);
//!   `SubnetMax`: the last subnet; both must be subnet-aligned inside
//!   `Network`;
//! - `VNI` 0 or absent: 1; `Port` 0 or absent: 8472 (the kernel's VXLAN port).
//!
//! Differences, each refused with the field named rather than guessed at:
//! a missing `Backend.Type` (flanneld would fall back to `udp`, which sluice
//! does not do), backend types other than `vxlan`, `host-gw` and `ipip`,
//! `EnableIPv6` (sluice is IPv4 only), and VXLAN `GBP`. Keys flannel knows
//! that change nothing here (`EnableNFTables`, `Backend.MTU`, `Learning`…) are
//! accepted; unknown keys are ignored as flanneld ignores them, and listed in
//! [`NetworkConfig::ignored`] so the agent can log them.

use serde_json::{Map, Value};
use sluice_api::Ipv4Net;
use std::fmt;
use std::net::Ipv4Addr;

/// The kernel's (and flannel's) VXLAN port, used when `Port` is 0 or absent.
pub const DEFAULT_VXLAN_PORT: u16 = 8472;
/// flannel's default VNI.
pub const DEFAULT_VNI: u32 = 1;

/// How pod traffic crosses between nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendType {
    /// VXLAN (flannel's `vxlan`).
    Vxlan,
    /// Plain routing via the other node, same L2 segment (`host-gw`).
    HostGw,
    /// IP in IP (`ipip`).
    Ipip,
}

impl BackendType {
    /// flannel's name, as written in the config and in leases.
    pub fn name(self) -> &'static str {
        match self {
            BackendType::Vxlan => "vxlan",
            BackendType::HostGw => "host-gw",
            BackendType::Ipip => "ipip",
        }
    }

    /// Bytes the encapsulation adds (flannel's `encapOverhead`): the pods'
    /// MTU is the uplink's less this.
    pub fn overhead(self) -> u16 {
        match self {
            BackendType::Vxlan => 50,
            BackendType::HostGw => 0,
            BackendType::Ipip => 20,
        }
    }
}

impl fmt::Display for BackendType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `Backend`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// `Type`.
    pub kind: BackendType,
    /// `VNI` (vxlan).
    pub vni: u32,
    /// `Port` (vxlan).
    pub port: u16,
    /// `DirectRouting` (vxlan, ipip): host-gw to nodes on this node's L2
    /// subnet, the tunnel to the rest.
    pub direct_routing: bool,
}

/// The validated network configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// `Network`: the cluster's pod network.
    pub network: Ipv4Net,
    /// `SubnetLen`: each node's subnet length.
    pub subnet_len: u8,
    /// `SubnetMin`: the first subnet that may be leased.
    pub subnet_min: Ipv4Addr,
    /// `SubnetMax`: the last subnet that may be leased.
    pub subnet_max: Ipv4Addr,
    /// `Backend`.
    pub backend: Backend,
    /// Keys present but not used (for a log line), as `Backend.Foo`.
    pub ignored: Vec<String>,
}

/// A config that cannot be used: the field at fault and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("network config: {field}: {reason}")]
pub struct ConfigError {
    /// The field, as flannel spells it (`Backend.VNI`), or `config` for the
    /// document itself.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

fn err(field: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// Top-level keys flannel defines that sluice reads or safely ignores.
const KNOWN_TOP: &[&str] = &[
    "Network",
    "SubnetLen",
    "SubnetMin",
    "SubnetMax",
    "Backend",
    "EnableIPv4",
    "EnableIPv6",
    "EnableNFTables",
    "IPv6Network",
    "IPv6SubnetLen",
    "IPv6SubnetMin",
    "IPv6SubnetMax",
];
/// Backend keys flannel defines that sluice reads or safely ignores.
const KNOWN_BACKEND: &[&str] = &[
    "Type",
    "VNI",
    "Port",
    "DirectRouting",
    "MTU",
    "Learning",
    "GBP",
    "MacPrefix",
];

impl NetworkConfig {
    /// Parses and validates flannel's config JSON.
    pub fn parse(json: &[u8]) -> Result<NetworkConfig, ConfigError> {
        let doc: Value =
            serde_json::from_slice(json).map_err(|e| err("config", format!("not JSON: {e}")))?;
        let top = doc
            .as_object()
            .ok_or_else(|| err("config", "not a JSON object"))?;
        let mut ignored: Vec<String> = top
            .keys()
            .filter(|k| !KNOWN_TOP.contains(&k.as_str()))
            .cloned()
            .collect();

        if let Some(v) = top.get("EnableIPv4") {
            if v.as_bool() == Some(false) {
                return Err(err("EnableIPv4", "false: sluice needs an IPv4 network"));
            }
            opt_bool(top, "EnableIPv4")?;
        }
        if opt_bool(top, "EnableIPv6")? == Some(true) {
            return Err(err("EnableIPv6", "true: sluice routes IPv4 only"));
        }
        let network: Ipv4Net = match top.get("Network") {
            None | Some(Value::Null) => return Err(err("Network", "missing")),
            Some(Value::String(s)) => s.parse().map_err(|e: String| err("Network", e))?,
            Some(_) => return Err(err("Network", "not a string like \"10.244.0.0/16\"")),
        };
        if network.len() > 28 {
            return Err(err(
                "Network",
                format!("{network} is smaller than /28, too small to hold subnets"),
            ));
        }
        let subnet_len = match opt_uint(top, "SubnetLen", 32)? {
            None | Some(0) => {
                if network.len() <= 22 {
                    24
                } else {
                    network.len() + 2
                }
            }
            Some(n) => n as u8,
        };
        if subnet_len > 30 {
            return Err(err("SubnetLen", format!("{subnet_len} is above 30")));
        }
        if subnet_len <= network.len() {
            return Err(err(
                "SubnetLen",
                format!(
                    "{subnet_len} must be longer than the network's /{}",
                    network.len()
                ),
            ));
        }
        let size = 1u32 << (32 - subnet_len);
        let net = network.addr_u32();
        let last = net | !network.mask();
        let default_min = Ipv4Addr::from(net + size);
        let default_max = Ipv4Addr::from(last - (size - 1));
        let subnet_min = opt_ip(top, "SubnetMin")?.unwrap_or(default_min);
        let subnet_max = opt_ip(top, "SubnetMax")?.unwrap_or(default_max);
        for (field, ip) in [("SubnetMin", subnet_min), ("SubnetMax", subnet_max)] {
            if !network.contains(ip) {
                return Err(err(field, format!("{ip} is outside Network {network}")));
            }
            if u32::from(ip) & (size - 1) != 0 {
                return Err(err(
                    field,
                    format!("{ip} is not on a /{subnet_len} boundary"),
                ));
            }
        }
        if u32::from(subnet_min) > u32::from(subnet_max) {
            return Err(err(
                "SubnetMin",
                format!("{subnet_min} is above SubnetMax {subnet_max}"),
            ));
        }

        let backend = match top.get("Backend") {
            None | Some(Value::Null) => {
                return Err(err(
                    "Backend",
                    "missing (flanneld would fall back to udp, which sluice does not do): \
                     set {\"Type\":\"vxlan\"}, \"host-gw\" or \"ipip\"",
                ))
            }
            Some(Value::Object(b)) => b,
            Some(_) => return Err(err("Backend", "not a JSON object")),
        };
        ignored.extend(
            backend
                .keys()
                .filter(|k| !KNOWN_BACKEND.contains(&k.as_str()))
                .map(|k| format!("Backend.{k}")),
        );
        let kind = match backend.get("Type") {
            None | Some(Value::Null) => {
                return Err(err(
                    "Backend.Type",
                    "missing (flanneld would fall back to udp, which sluice does not do)",
                ))
            }
            Some(Value::String(t)) => match t.as_str() {
                "vxlan" => BackendType::Vxlan,
                "host-gw" => BackendType::HostGw,
                "ipip" => BackendType::Ipip,
                other => {
                    return Err(err(
                        "Backend.Type",
                        format!("`{other}` is not supported: vxlan, host-gw or ipip"),
                    ))
                }
            },
            Some(_) => return Err(err("Backend.Type", "not a string")),
        };
        let vni = match opt_uint(backend, "VNI", 0xff_ffff).map_err(|e| ConfigError {
            field: format!("Backend.{}", e.field),
            ..e
        })? {
            None | Some(0) => DEFAULT_VNI,
            Some(v) => v as u32,
        };
        let port =
            match opt_uint(backend, "Port", u64::from(u16::MAX)).map_err(|e| ConfigError {
                field: format!("Backend.{}", e.field),
                ..e
            })? {
                None | Some(0) => DEFAULT_VXLAN_PORT,
                Some(p) => p as u16,
            };
        let direct_routing = opt_bool(backend, "DirectRouting")
            .map_err(|e| ConfigError {
                field: format!("Backend.{}", e.field),
                ..e
            })?
            .unwrap_or(false);
        if opt_bool(backend, "GBP").map_err(|e| ConfigError {
            field: format!("Backend.{}", e.field),
            ..e
        })? == Some(true)
        {
            return Err(err(
                "Backend.GBP",
                "true: group-based policy is not supported",
            ));
        }
        if kind == BackendType::HostGw && direct_routing {
            ignored.push("Backend.DirectRouting (host-gw routes directly anyway)".into());
        }
        Ok(NetworkConfig {
            network,
            subnet_len,
            subnet_min,
            subnet_max,
            backend: Backend {
                kind,
                vni,
                port,
                direct_routing,
            },
            ignored,
        })
    }

    /// The subnets that may be leased, in address order.
    pub fn subnets(&self) -> impl Iterator<Item = Ipv4Net> + '_ {
        let size = 1u64 << (32 - self.subnet_len);
        let min = u64::from(u32::from(self.subnet_min));
        let max = u64::from(u32::from(self.subnet_max));
        (min..=max)
            .step_by(size as usize)
            .filter_map(move |a| Ipv4Net::new(Ipv4Addr::from(a as u32), self.subnet_len))
    }

    /// True if `subnet` is one this config may lease.
    pub fn may_lease(&self, subnet: Ipv4Net) -> bool {
        subnet.len() == self.subnet_len
            && u32::from(subnet.addr()) >= u32::from(self.subnet_min)
            && u32::from(subnet.addr()) <= u32::from(self.subnet_max)
    }
}

fn opt_bool(obj: &Map<String, Value>, key: &str) -> Result<Option<bool>, ConfigError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(err(key, "not true or false")),
    }
}

fn opt_uint(obj: &Map<String, Value>, key: &str, max: u64) -> Result<Option<u64>, ConfigError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n <= max => Ok(Some(n)),
            Some(n) => Err(err(key, format!("{n} is above {max}"))),
            None => Err(err(
                key,
                format!("{v} is not a whole number from 0 to {max}"),
            )),
        },
    }
}

fn opt_ip(obj: &Map<String, Value>, key: &str) -> Result<Option<Ipv4Addr>, ConfigError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| err(key, format!("`{s}` is not an IPv4 address"))),
        Some(_) => Err(err(key, "not a string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<NetworkConfig, ConfigError> {
        NetworkConfig::parse(s.as_bytes())
    }

    #[test]
    fn flannel_defaults_for_a_slash_16() {
        let c = parse(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#).unwrap();
        assert_eq!(c.subnet_len, 24);
        assert_eq!(c.subnet_min, Ipv4Addr::new(10, 244, 1, 0));
        assert_eq!(c.subnet_max, Ipv4Addr::new(10, 244, 255, 0));
        assert_eq!(c.backend.vni, 1);
        assert_eq!(c.backend.port, 8472);
        assert!(!c.backend.direct_routing);
        assert_eq!(c.subnets().count(), 255);
        assert!(c.ignored.is_empty());
    }

    #[test]
    fn small_networks_get_two_more_bits() {
        let c = parse(r#"{"Network":"10.5.0.0/24","Backend":{"Type":"host-gw"}}"#).unwrap();
        assert_eq!(c.subnet_len, 26);
        assert_eq!(c.subnet_min, Ipv4Addr::new(10, 5, 0, 64));
        assert_eq!(c.subnet_max, Ipv4Addr::new(10, 5, 0, 192));
        assert_eq!(c.subnets().count(), 3);
    }

    #[test]
    fn explicit_values_are_kept() {
        let c = parse(
            r#"{"Network":"10.5.0.0/16","SubnetLen":25,"SubnetMin":"10.5.8.0","SubnetMax":"10.5.9.128",
                "Backend":{"Type":"ipip","DirectRouting":true},"EnableNFTables":false,"Foo":1}"#,
        )
        .unwrap();
        assert_eq!(c.subnet_len, 25);
        assert_eq!(c.subnets().count(), 4);
        assert_eq!(c.backend.kind, BackendType::Ipip);
        assert!(c.backend.direct_routing);
        assert_eq!(c.ignored, vec!["Foo".to_string()]);
        let v =
            parse(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","VNI":42,"Port":4789}}"#)
                .unwrap();
        assert_eq!((v.backend.vni, v.backend.port), (42, 4789));
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            ("", "config"),
            ("[]", "config"),
            (r#"{"Backend":{"Type":"vxlan"}}"#, "Network"),
            (
                r#"{"Network":"10.5.0.1/16","Backend":{"Type":"vxlan"}}"#,
                "Network",
            ),
            (
                r#"{"Network":"10.5.0.0/29","Backend":{"Type":"vxlan"}}"#,
                "Network",
            ),
            (
                r#"{"Network":"10.5.0.0/16","SubnetLen":31,"Backend":{"Type":"vxlan"}}"#,
                "SubnetLen",
            ),
            (
                r#"{"Network":"10.5.0.0/16","SubnetLen":16,"Backend":{"Type":"vxlan"}}"#,
                "SubnetLen",
            ),
            (
                r#"{"Network":"10.5.0.0/16","SubnetLen":"24","Backend":{"Type":"vxlan"}}"#,
                "SubnetLen",
            ),
            (
                r#"{"Network":"10.5.0.0/16","SubnetMin":"10.6.0.0","Backend":{"Type":"vxlan"}}"#,
                "SubnetMin",
            ),
            (
                r#"{"Network":"10.5.0.0/16","SubnetMax":"10.5.3.7","Backend":{"Type":"vxlan"}}"#,
                "SubnetMax",
            ),
            (
                r#"{"Network":"10.5.0.0/16","SubnetMin":"10.5.9.0","SubnetMax":"10.5.3.0","Backend":{"Type":"vxlan"}}"#,
                "SubnetMin",
            ),
            (r#"{"Network":"10.5.0.0/16"}"#, "Backend"),
            (r#"{"Network":"10.5.0.0/16","Backend":{}}"#, "Backend.Type"),
            (
                r#"{"Network":"10.5.0.0/16","Backend":{"Type":"udp"}}"#,
                "Backend.Type",
            ),
            (
                r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","VNI":16777216}}"#,
                "Backend.VNI",
            ),
            (
                r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","VNI":-1}}"#,
                "Backend.VNI",
            ),
            (
                r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","Port":70000}}"#,
                "Backend.Port",
            ),
            (
                r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","DirectRouting":"yes"}}"#,
                "Backend.DirectRouting",
            ),
            (
                r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","GBP":true}}"#,
                "Backend.GBP",
            ),
            (
                r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"Backend":{"Type":"vxlan"}}"#,
                "EnableIPv6",
            ),
        ];
        for (json, field) in cases {
            let e = parse(json).expect_err(json);
            assert_eq!(e.field, field, "{json}: {e}");
        }
        let e = parse(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"udp"}}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "network config: Backend.Type: `udp` is not supported: vxlan, host-gw or ipip"
        );
    }

    #[test]
    fn may_lease_follows_min_max_and_length() {
        let c = parse(r#"{"Network":"10.5.0.0/16","SubnetMin":"10.5.2.0","SubnetMax":"10.5.4.0","Backend":{"Type":"vxlan"}}"#).unwrap();
        let n = |s: &str| s.parse::<Ipv4Net>().unwrap();
        assert!(c.may_lease(n("10.5.2.0/24")));
        assert!(c.may_lease(n("10.5.4.0/24")));
        assert!(!c.may_lease(n("10.5.1.0/24")));
        assert!(!c.may_lease(n("10.5.5.0/24")));
        assert!(!c.may_lease(n("10.5.2.0/25")));
    }
}
