//! ICMP errors are rate limited per source host as well as per worker: a pod
//! that keeps provoking errors must not use up the budget that other pods'
//! path MTU discovery depends on.

use sluice_dataplane::config::NodeConfig;
use sluice_dataplane::craft::*;
use sluice_dataplane::replay::replay_in_memory;
use sluice_dataplane::wire::{icmp, ipv4};

#[test]
fn a_pod_flooding_ttl_1_does_not_starve_another_pods_fragmentation_needed() {
    let node = NodeConfig::from_toml_str(REFERENCE_NODE).unwrap();
    let mut inputs = Vec::new();
    // Pod A: 200 packets with TTL 1, all in the same instant.
    for i in 0..200u16 {
        let mut f = pod_a_udp(REMOTE_POD_B, 1000 + i, 2, 30);
        f[22] = 1;
        fix_ipv4_checksum(&mut f, 14);
        inputs.push(("pod-a", f));
    }
    // Then pod B sends a DF packet too big for the VXLAN path.
    let u = udp_datagram(POD_B_IP, REMOTE_POD_B, 5, 6, &[7u8; 1472]);
    let big = eth(
        ROUTER_MAC,
        POD_B_MAC,
        0x0800,
        &ipv4_packet(
            Ip {
                df: true,
                ..Ip::new(POD_B_IP, REMOTE_POD_B, 17)
            },
            &u,
        ),
    );
    inputs.push(("pod-b", big));
    let r = replay_in_memory(&node, &inputs).unwrap();
    let to_b: Vec<_> = r.outputs["pod-b"]
        .iter()
        .filter_map(|f| {
            let ip = ipv4::Packet::new_checked(&f[14..]).ok()?;
            let m = icmp::Packet::new_checked(ip.payload()).ok()?;
            Some((m.msg_type(), m.code(), m.next_hop_mtu()))
        })
        .collect();
    assert_eq!(
        to_b,
        vec![(3, 4, 1450)],
        "pod B gets its fragmentation needed"
    );
    let to_a = r.outputs["pod-a"].len() as u64;
    assert_eq!(
        to_a, 10,
        "pod A gets its own burst of time exceeded, no more"
    );
    assert_eq!(r.stats.drops["ttl_exceeded"], 200);
    assert_eq!(r.stats.events["icmp_rate_limited"], 190);
}
