//! Hardware profiles (`hw-profiles/*.toml`): what a NIC family and core
//! layout need from sluice, applied to the uplink device with `rte_flow`.
//!
//! A profile names the drivers it is written for, the worker cores and
//! their NUMA node, whether the device runs in flow isolation (a bifurcated
//! driver such as mlx5: only traffic a rule matches reaches sluice, the
//! rest stays with the kernel's netdev), and steering rules: which traffic
//! (`vxlan`: UDP to the node's address on the VXLAN port; `ipip`: IP
//! protocol 4 to the node's address; `node`: anything to the node's
//! address) goes to which of sluice's queues (one, or RSS over all).
//!
//! Every rule is validated (`rte_flow_validate`) before any is created, so
//! a profile the device cannot honour is refused whole, naming the rule and
//! the device's reason, and nothing is left half-applied.

use super::{sys, DpdkError};
use serde::{Deserialize, Serialize};
use std::ffi::CStr;
use std::net::Ipv4Addr;

/// A hardware profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HwProfile {
    /// Short name (`intel-e810-vf`).
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// DPDK drivers the profile is written for (`net_iavf`, `net_mlx5`);
    /// empty: any.
    #[serde(default)]
    pub drivers: Vec<String>,
    /// Worker cores (used when `daemon.workers` is empty; must match it
    /// otherwise).
    #[serde(default)]
    pub cores: Vec<usize>,
    /// The NUMA node the cores and the NIC share.
    #[serde(default)]
    pub numa_node: Option<i32>,
    /// Flow isolation: only traffic the rules match reaches sluice.
    #[serde(default)]
    pub isolate: bool,
    /// Steering rules, in order.
    #[serde(default, rename = "steer")]
    pub rules: Vec<SteerRule>,
}

/// Which traffic a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Match {
    /// UDP to the node's address on the VXLAN port.
    Vxlan,
    /// IPIP (IP protocol 4) to the node's address.
    Ipip,
    /// Any IPv4 to the node's address.
    Node,
}

/// Where matched traffic goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// RSS across every worker's queue.
    Workers,
    /// One worker's queue.
    Queue(u16),
}

/// One steering rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SteerRule {
    /// Name, for reports and errors.
    pub name: String,
    /// The traffic.
    #[serde(rename = "match")]
    pub matches: Match,
    /// Its queue(s).
    pub to: Target,
}

impl HwProfile {
    /// Reads and checks a profile file.
    pub fn load(path: &std::path::Path) -> Result<HwProfile, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let p: HwProfile =
            toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.message()))?;
        let mut names = std::collections::HashSet::new();
        for r in &p.rules {
            if !names.insert(r.name.as_str()) {
                return Err(format!(
                    "{}: rule `{}` is named twice",
                    path.display(),
                    r.name
                ));
            }
        }
        Ok(p)
    }
}

/// What the switch needs to turn rules into patterns.
#[derive(Debug, Clone, Copy)]
pub struct NodeAddrs {
    /// The node's underlay address.
    pub node_ip: Ipv4Addr,
    /// The VXLAN UDP port.
    pub vxlan_port: u16,
    /// Queues (workers).
    pub queues: u16,
}

/// Rules created on a device; destroyed (flushed) when dropped.
#[derive(Debug)]
pub struct AppliedFlows {
    port: u16,
    /// The rules created, by name.
    pub rules: Vec<String>,
}

impl Drop for AppliedFlows {
    fn drop(&mut self) {
        let mut err = sys::rte_flow_error::default();
        // SAFETY: removes only rules on our own port; the device is still
        // open (this value is dropped before the device).
        unsafe { sys::rte_flow_flush(self.port, &mut err) };
    }
}

fn flow_err(e: &sys::rte_flow_error, rc: i32) -> String {
    if e.message.is_null() {
        super::strerror(rc)
    } else {
        // SAFETY: the PMD's static message.
        unsafe { CStr::from_ptr(e.message) }
            .to_string_lossy()
            .into_owned()
    }
}

/// Puts the device in flow-isolation mode (before it is configured).
pub fn isolate(port: u16, profile: &str) -> Result<(), DpdkError> {
    let mut err = sys::rte_flow_error::default();
    // SAFETY: a valid, not yet configured port and an out pointer.
    let rc = unsafe { sys::rte_flow_isolate(port, 1, &mut err) };
    if rc != 0 {
        return Err(DpdkError::Flow {
            profile: profile.into(),
            rule: "isolate".into(),
            reason: flow_err(&err, rc),
        });
    }
    Ok(())
}

/// Validates every rule of `p` on `port`, then creates them all.
pub fn apply(port: u16, p: &HwProfile, addrs: NodeAddrs) -> Result<AppliedFlows, DpdkError> {
    let mut applied = AppliedFlows {
        port,
        rules: Vec::new(),
    };
    for create in [false, true] {
        for r in &p.rules {
            let fail = |reason: String| DpdkError::Flow {
                profile: p.name.clone(),
                rule: r.name.clone(),
                reason,
            };
            if let Target::Queue(q) = r.to {
                if q >= addrs.queues {
                    return Err(fail(format!(
                        "queue {q} does not exist (sluice has {} queues)",
                        addrs.queues
                    )));
                }
            }
            let mut attr = sys::rte_flow_attr::default();
            attr.set_ingress(1);
            let mut ip_spec = sys::rte_flow_item_ipv4::default();
            let mut ip_mask = sys::rte_flow_item_ipv4::default();
            ip_spec.hdr.dst_addr = u32::from(addrs.node_ip).to_be();
            ip_mask.hdr.dst_addr = u32::MAX;
            if r.matches == Match::Ipip {
                ip_spec.hdr.next_proto_id = 4;
                ip_mask.hdr.next_proto_id = 0xff;
            }
            let mut udp_spec = sys::rte_flow_item_udp::default();
            let mut udp_mask = sys::rte_flow_item_udp::default();
            udp_spec.hdr.dst_port = addrs.vxlan_port.to_be();
            udp_mask.hdr.dst_port = u16::MAX;
            let item = |type_, spec: *const std::ffi::c_void, mask: *const std::ffi::c_void| {
                sys::rte_flow_item {
                    type_,
                    spec,
                    last: std::ptr::null(),
                    mask,
                }
            };
            let none = std::ptr::null();
            let mut pattern = vec![
                item(sys::RTE_FLOW_ITEM_TYPE_ETH, none, none),
                item(
                    sys::RTE_FLOW_ITEM_TYPE_IPV4,
                    (&raw const ip_spec).cast(),
                    (&raw const ip_mask).cast(),
                ),
            ];
            if r.matches == Match::Vxlan {
                pattern.push(item(
                    sys::RTE_FLOW_ITEM_TYPE_UDP,
                    (&raw const udp_spec).cast(),
                    (&raw const udp_mask).cast(),
                ));
            }
            pattern.push(item(sys::RTE_FLOW_ITEM_TYPE_END, none, none));
            let queues: Vec<u16> = (0..addrs.queues).collect();
            let queue = sys::rte_flow_action_queue {
                index: match r.to {
                    Target::Queue(q) => q,
                    Target::Workers => 0,
                },
            };
            let rss = sys::rte_flow_action_rss {
                func: sys::RTE_ETH_HASH_FUNCTION_DEFAULT,
                level: 0,
                types: (1 << 2) | (1 << 3) | (1 << 4) | (1 << 5),
                key_len: 0,
                queue_num: u32::from(addrs.queues),
                key: std::ptr::null(),
                queue: queues.as_ptr(),
            };
            let action = match r.to {
                Target::Workers if addrs.queues > 1 => sys::rte_flow_action {
                    type_: sys::RTE_FLOW_ACTION_TYPE_RSS,
                    conf: (&raw const rss).cast(),
                },
                _ => sys::rte_flow_action {
                    type_: sys::RTE_FLOW_ACTION_TYPE_QUEUE,
                    conf: (&raw const queue).cast(),
                },
            };
            let actions = [
                action,
                sys::rte_flow_action {
                    type_: sys::RTE_FLOW_ACTION_TYPE_END,
                    conf: std::ptr::null(),
                },
            ];
            let mut err = sys::rte_flow_error::default();
            if create {
                // SAFETY: pattern and actions are END-terminated arrays of
                // items whose spec, mask and conf point at locals alive for
                // the call; the port is started.
                let f = unsafe {
                    sys::rte_flow_create(port, &attr, pattern.as_ptr(), actions.as_ptr(), &mut err)
                };
                if f.is_null() {
                    return Err(fail(flow_err(&err, -libc::EINVAL)));
                }
                applied.rules.push(r.name.clone());
            } else {
                // SAFETY: as above; validation creates nothing.
                let rc = unsafe {
                    sys::rte_flow_validate(
                        port,
                        &attr,
                        pattern.as_ptr(),
                        actions.as_ptr(),
                        &mut err,
                    )
                };
                if rc != 0 {
                    return Err(fail(flow_err(&err, rc)));
                }
            }
        }
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_profiles_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../hw-profiles");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "toml") {
                let p = HwProfile::load(&e.path()).unwrap_or_else(|m| panic!("{m}"));
                assert!(!p.name.is_empty());
                n += 1;
            }
        }
        assert!(n >= 3, "hw-profiles/ ships profiles ({n} found)");
    }

    #[test]
    fn a_bad_profile_names_its_problem() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.toml");
        std::fs::write(
            &p,
            "name = \"x\"\n[[steer]]\nname = \"a\"\nmatch = \"gre\"\nto = \"workers\"\n",
        )
        .unwrap();
        let e = HwProfile::load(&p).unwrap_err();
        assert!(e.contains("gre") || e.contains("variant"), "{e}");
        std::fs::write(&p, "name = \"x\"\n[[steer]]\nname = \"a\"\nmatch = \"vxlan\"\nto = \"workers\"\n[[steer]]\nname = \"a\"\nmatch = \"ipip\"\nto = { queue = 0 }\n").unwrap();
        assert!(HwProfile::load(&p).unwrap_err().contains("named twice"));
    }
}
