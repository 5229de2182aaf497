//! Leases in flannel's layout: keys, values, and which subnet to take.
//!
//! A lease is the key `<prefix>/subnets/10.244.3.0-24` holding
//! `{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan",
//! "BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}` (flannel's
//! `LeaseAttrs`; host-gw and ipip write no `BackendData`). [`LeaseAttrs::to_json`]
//! writes it byte for byte as flanneld does (Go's field order, `PublicIPv6`
//! written as `null`), so flanneld and the agent read each other's leases.
//!
//! Choosing a subnet ([`choose_subnet`], flannel's `tryAcquireLease`):
//! 1. a lease already holding this node's `PublicIP` is reused (a restart
//!    keeps its subnet, so its pods keep their addresses);
//! 2. else the subnet of the previous subnet file, if free and leasable;
//! 3. else a random pick among the first 100 free subnets (random so that
//!    nodes starting together rarely collide; the create transaction settles
//!    the collisions that remain).

use crate::network::{BackendType, NetworkConfig};
use crate::store::{Revision, Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_api::{Ipv4Net, MacAddr};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// flannel's `subnetTTL`: a lease lives 24 hours unless renewed.
pub const LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// flannel's `--subnet-lease-renew-margin` default: renew an hour early.
pub const RENEW_MARGIN: std::time::Duration = std::time::Duration::from_secs(3600);
/// flannel's `raceRetries`: creates tried before giving up.
pub const RACE_RETRIES: usize = 10;

/// The key of `subnet`'s lease under `prefix` (`/coreos.com/network`).
pub fn subnet_key(prefix: &str, subnet: Ipv4Net) -> String {
    format!(
        "{}/subnets/{}-{}",
        prefix.trim_end_matches('/'),
        subnet.addr(),
        subnet.len()
    )
}

/// The prefix every lease key starts with.
pub fn subnets_prefix(prefix: &str) -> String {
    format!("{}/subnets/", prefix.trim_end_matches('/'))
}

/// The config key.
pub fn config_key(prefix: &str) -> String {
    format!("{}/config", prefix.trim_end_matches('/'))
}

/// The IPv4 subnet a lease key names (`…/10.244.3.0-24`, or flannel's
/// dual-stack `…/10.244.3.0-24&fc00::-64`, whose IPv6 half is ignored).
pub fn parse_subnet_key(key: &str) -> Option<Ipv4Net> {
    let name = key.rsplit('/').next()?;
    let v4 = name.split('&').next()?;
    let (addr, len) = v4.rsplit_once('-')?;
    Ipv4Net::new(addr.parse().ok()?, len.parse().ok()?)
}

/// VXLAN's `BackendData`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxlanData {
    /// `VNI`.
    #[serde(rename = "VNI")]
    pub vni: u32,
    /// `VtepMAC`: the MAC other nodes put as the inner destination.
    #[serde(rename = "VtepMAC")]
    pub vtep_mac: MacAddr,
}

/// flannel's `LeaseAttrs` (IPv4 part), in Go's field order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseAttrs {
    /// `PublicIP`: the node's underlay address.
    #[serde(rename = "PublicIP")]
    pub public_ip: Ipv4Addr,
    /// `PublicIPv6`: always `null` here; kept when read.
    #[serde(rename = "PublicIPv6", default)]
    pub public_ipv6: Option<String>,
    /// `BackendType`: `vxlan`, `host-gw`, `ipip` (others are read and
    /// ignored by [`crate::routes`]).
    #[serde(rename = "BackendType", default)]
    pub backend_type: String,
    /// `BackendData` (vxlan: [`VxlanData`]).
    #[serde(
        rename = "BackendData",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub backend_data: Option<Value>,
}

impl LeaseAttrs {
    /// This node's attributes for `backend`: VXLAN carries `vni` and the VTEP MAC.
    pub fn new(public_ip: Ipv4Addr, backend: BackendType, vni: u32, vtep_mac: MacAddr) -> Self {
        let backend_data = (backend == BackendType::Vxlan)
            .then(|| serde_json::to_value(VxlanData { vni, vtep_mac }).expect("plain struct"));
        LeaseAttrs {
            public_ip,
            public_ipv6: None,
            backend_type: backend.name().to_string(),
            backend_data,
        }
    }

    /// The value as flanneld writes it.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain struct")
    }

    /// Reads a lease value; the error names what is wrong.
    pub fn parse(value: &[u8]) -> Result<LeaseAttrs, String> {
        serde_json::from_slice(value).map_err(|e| format!("lease value: {e}"))
    }

    /// The VXLAN data, if this is a VXLAN lease with valid data.
    pub fn vxlan(&self) -> Result<VxlanData, String> {
        let data = self
            .backend_data
            .as_ref()
            .ok_or("vxlan lease without BackendData")?;
        serde_json::from_value(data.clone()).map_err(|e| format!("BackendData: {e}"))
    }
}

/// One node's lease as the agent tracks it.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    /// The subnet.
    pub subnet: Ipv4Net,
    /// Its attributes.
    pub attrs: LeaseAttrs,
}

/// Why no subnet could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChooseError {
    /// Every leasable subnet is taken.
    #[error("no free subnet in {min}..{max} (/{len}): all {count} are leased")]
    Exhausted {
        /// `SubnetMin`.
        min: Ipv4Addr,
        /// `SubnetMax`.
        max: Ipv4Addr,
        /// `SubnetLen`.
        len: u8,
        /// How many there are.
        count: usize,
    },
}

/// What [`choose_subnet`] picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// This node's existing lease: renew it in place.
    Existing(Ipv4Net),
    /// A free subnet: create its lease.
    Free(Ipv4Net),
}

/// Picks this node's subnet given every lease in the store (see the module
/// docs). `random` maps a bound `n` to `0..n`.
pub fn choose_subnet(
    cfg: &NetworkConfig,
    leases: &BTreeMap<Ipv4Net, LeaseAttrs>,
    public_ip: Ipv4Addr,
    previous: Option<Ipv4Net>,
    exclude: &[Ipv4Net],
    random: &mut dyn FnMut(usize) -> usize,
) -> Result<Choice, ChooseError> {
    if let Some((subnet, _)) = leases
        .iter()
        .find(|(s, a)| a.public_ip == public_ip && cfg.may_lease(**s) && !exclude.contains(s))
    {
        return Ok(Choice::Existing(*subnet));
    }
    let taken =
        |s: &Ipv4Net| leases.keys().any(|l| l.covers(s) || s.covers(l)) || exclude.contains(s);
    if let Some(p) = previous {
        if cfg.may_lease(p) && !taken(&p) {
            return Ok(Choice::Free(p));
        }
    }
    let free: Vec<Ipv4Net> = cfg.subnets().filter(|s| !taken(s)).take(100).collect();
    if free.is_empty() {
        return Err(ChooseError::Exhausted {
            min: cfg.subnet_min,
            max: cfg.subnet_max,
            len: cfg.subnet_len,
            count: cfg.subnets().count(),
        });
    }
    Ok(Choice::Free(free[random(free.len()) % free.len()]))
}

/// Every lease in the store.
#[derive(Debug, Clone, Default)]
pub struct Listed {
    /// The leases by subnet.
    pub leases: BTreeMap<Ipv4Net, LeaseAttrs>,
    /// Which of them have a TTL (false: a reservation).
    pub expiring: BTreeMap<Ipv4Net, bool>,
    /// Keys that are not leases, or whose value cannot be read, with why.
    pub invalid: Vec<(String, String)>,
    /// The `mod_revision` of every lease key, its value readable or not.
    pub revisions: BTreeMap<Ipv4Net, Revision>,
    /// The list's revision.
    pub revision: Revision,
}

/// Lists every lease under `prefix`.
pub async fn list<S: Store>(store: &S, prefix: &str) -> Result<Listed, StoreError> {
    let (kvs, revision) = store.list(&subnets_prefix(prefix)).await?;
    let mut out = Listed {
        revision,
        ..Listed::default()
    };
    for kv in kvs {
        let Some(subnet) = parse_subnet_key(&kv.key) else {
            out.invalid.push((
                kv.key,
                "not a lease key (want <prefix>/subnets/10.244.3.0-24)".into(),
            ));
            continue;
        };
        out.revisions.insert(subnet, kv.mod_revision);
        match LeaseAttrs::parse(&kv.value) {
            Ok(a) => {
                out.leases.insert(subnet, a);
                out.expiring.insert(subnet, kv.leased);
            }
            Err(e) => out.invalid.push((kv.key, e)),
        }
    }
    Ok(out)
}

/// Why [`acquire`] did not get a lease.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcquireError {
    /// The store failed.
    #[error("leasing: {0}")]
    Store(StoreError),
    /// No subnet is free.
    #[error("leasing: {0}")]
    Exhausted(ChooseError),
    /// Every round lost its race.
    #[error("leasing: lost {RACE_RETRIES} races for a free subnet")]
    Races,
}

/// A lease taken by [`acquire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acquired {
    /// The subnet, and whether it was this node's already.
    pub choice: Choice,
    /// The lease has a TTL (false: a reservation kept as one).
    pub expires: bool,
    /// Races lost on the way.
    pub races_lost: usize,
}

/// Takes a lease for the node `attrs` describes, as flanneld does: this
/// node's existing lease renewed in place (a reservation stays one), else a
/// free subnet created with create-if-absent; a lost race excludes that
/// subnet and tries again, up to [`RACE_RETRIES`] rounds.
pub async fn acquire<S: Store>(
    store: &S,
    prefix: &str,
    cfg: &NetworkConfig,
    attrs: &LeaseAttrs,
    previous: Option<Ipv4Net>,
    ttl: std::time::Duration,
    random: &mut (dyn FnMut(usize) -> usize + Send),
) -> Result<Acquired, AcquireError> {
    let json = attrs.to_json();
    let mut exclude = Vec::new();
    for _ in 0..RACE_RETRIES {
        let listed = list(store, prefix).await.map_err(AcquireError::Store)?;
        let choice = choose_subnet(
            cfg,
            &listed.leases,
            attrs.public_ip,
            previous,
            &exclude,
            random,
        )
        .map_err(AcquireError::Exhausted)?;
        match choice {
            Choice::Existing(s) => {
                let expires = listed.expiring.get(&s).copied().unwrap_or(true);
                store
                    .put(
                        &subnet_key(prefix, s),
                        json.as_bytes(),
                        expires.then_some(ttl),
                    )
                    .await
                    .map_err(AcquireError::Store)?;
                return Ok(Acquired {
                    choice,
                    expires,
                    races_lost: exclude.len(),
                });
            }
            Choice::Free(s) => {
                if store
                    .create(&subnet_key(prefix, s), json.as_bytes(), ttl)
                    .await
                    .map_err(AcquireError::Store)?
                {
                    return Ok(Acquired {
                        choice,
                        expires: true,
                        races_lost: exclude.len(),
                    });
                }
                exclude.push(s);
            }
        }
    }
    Err(AcquireError::Races)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn keys_are_flannels() {
        assert_eq!(
            subnet_key("/coreos.com/network", net("10.244.3.0/24")),
            "/coreos.com/network/subnets/10.244.3.0-24"
        );
        assert_eq!(
            subnet_key("/x/", net("10.0.0.0/26")),
            "/x/subnets/10.0.0.0-26"
        );
        assert_eq!(
            parse_subnet_key("/coreos.com/network/subnets/10.244.3.0-24"),
            Some(net("10.244.3.0/24"))
        );
        assert_eq!(
            parse_subnet_key("/coreos.com/network/subnets/10.5.52.0-24&fc00::-64"),
            Some(net("10.5.52.0/24"))
        );
        for bad in [
            "/p/subnets/10.244.3.1-24",
            "/p/subnets/x-24",
            "/p/subnets/10.0.0.0-33",
            "/p/subnets/10.0.0.0",
        ] {
            assert_eq!(parse_subnet_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn values_are_written_byte_for_byte_as_flanneld_writes_them() {
        let mac: MacAddr = "c6:d2:32:6f:8f:44".parse().unwrap();
        let v = LeaseAttrs::new(Ipv4Addr::new(192, 168, 64, 3), BackendType::Vxlan, 1, mac);
        assert_eq!(
            v.to_json(),
            r#"{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#
        );
        let h = LeaseAttrs::new(Ipv4Addr::new(192, 168, 64, 4), BackendType::HostGw, 1, mac);
        assert_eq!(
            h.to_json(),
            r#"{"PublicIP":"192.168.64.4","PublicIPv6":null,"BackendType":"host-gw"}"#
        );
        assert_eq!(LeaseAttrs::parse(v.to_json().as_bytes()).unwrap(), v);
        assert_eq!(v.vxlan().unwrap().vtep_mac, mac);
    }

    #[test]
    fn bad_values_are_errors_not_panics() {
        for bad in [
            &b""[..],
            b"{}",
            b"{\"PublicIP\":\"300.1.1.1\"}",
            b"{\"PublicIP\":7}",
            b"\xff\xfe",
        ] {
            assert!(LeaseAttrs::parse(bad).is_err(), "{bad:?}");
        }
        let no_data =
            LeaseAttrs::parse(br#"{"PublicIP":"1.2.3.4","BackendType":"vxlan"}"#).unwrap();
        assert!(no_data.vxlan().is_err());
        let bad_mac = LeaseAttrs::parse(
            br#"{"PublicIP":"1.2.3.4","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"zz"}}"#,
        )
        .unwrap();
        assert!(bad_mac.vxlan().is_err());
    }

    fn cfg() -> NetworkConfig {
        NetworkConfig::parse(
            br#"{"Network":"10.5.0.0/16","SubnetMax":"10.5.3.0","Backend":{"Type":"vxlan"}}"#,
        )
        .unwrap()
    }

    fn attrs(ip: [u8; 4]) -> LeaseAttrs {
        LeaseAttrs::new(
            Ipv4Addr::from(ip),
            BackendType::HostGw,
            1,
            MacAddr::from([2, 0, 0, 0, 0, 1]),
        )
    }

    #[test]
    fn own_lease_then_previous_then_random_free() {
        let me = Ipv4Addr::new(192, 168, 1, 9);
        let mut leases = BTreeMap::new();
        leases.insert(net("10.5.1.0/24"), attrs([192, 168, 1, 2]));
        let mut first = |_: usize| 0;
        // Free pick skips the taken one.
        assert_eq!(
            choose_subnet(&cfg(), &leases, me, None, &[], &mut first),
            Ok(Choice::Free(net("10.5.2.0/24")))
        );
        let mut last = |n: usize| n - 1;
        assert_eq!(
            choose_subnet(&cfg(), &leases, me, None, &[], &mut last),
            Ok(Choice::Free(net("10.5.3.0/24")))
        );
        // The previous subnet file's subnet, when free.
        assert_eq!(
            choose_subnet(
                &cfg(),
                &leases,
                me,
                Some(net("10.5.3.0/24")),
                &[],
                &mut first
            ),
            Ok(Choice::Free(net("10.5.3.0/24")))
        );
        // …but not when taken.
        assert_eq!(
            choose_subnet(
                &cfg(),
                &leases,
                me,
                Some(net("10.5.1.0/24")),
                &[],
                &mut first
            ),
            Ok(Choice::Free(net("10.5.2.0/24")))
        );
        // Our own lease wins over everything.
        leases.insert(net("10.5.3.0/24"), attrs([192, 168, 1, 9]));
        assert_eq!(
            choose_subnet(
                &cfg(),
                &leases,
                me,
                Some(net("10.5.2.0/24")),
                &[],
                &mut first
            ),
            Ok(Choice::Existing(net("10.5.3.0/24")))
        );
        // Lost races are excluded on retry.
        leases.remove(&net("10.5.3.0/24"));
        assert_eq!(
            choose_subnet(&cfg(), &leases, me, None, &[net("10.5.2.0/24")], &mut first),
            Ok(Choice::Free(net("10.5.3.0/24")))
        );
        leases.insert(net("10.5.2.0/24"), attrs([192, 168, 1, 3]));
        leases.insert(net("10.5.3.0/24"), attrs([192, 168, 1, 4]));
        assert!(matches!(
            choose_subnet(&cfg(), &leases, me, None, &[], &mut first),
            Err(ChooseError::Exhausted { count: 3, .. })
        ));
    }
}
