//! Plain IPv4 from the uplink to the pod network: accepted only from the
//! node that, by this node's routes, owns the source's subnet (host-gw),
//! recognised by its MAC. Every other source is dropped with a named reason.
//! (The reference node: 10.5.4.0/24 is host-gw via 192.168.50.4, MAC
//! aa:04; 10.5.2.0/24 is VXLAN via 192.168.50.2, MAC aa:02; pods 10.5.1.2
//! and 10.5.1.3 are local.)

use sluice_dataplane::config::NodeConfig;
use sluice_dataplane::counters::DropReason;
use sluice_dataplane::craft::*;
use sluice_dataplane::replay::{replay_in_memory, MemoryReplay};
use sluice_dataplane::wire::MacAddr;
use std::net::Ipv4Addr;

fn from_uplink(src: Ipv4Addr, src_mac: MacAddr) -> MemoryReplay {
    let u = udp_datagram(src, POD_B_IP, 1, 2, b"x");
    let f = eth(
        UPLINK_MAC,
        src_mac,
        0x0800,
        &ipv4_packet(Ip::new(src, POD_B_IP, 17), &u),
    );
    let node = NodeConfig::from_toml_str(REFERENCE_NODE).unwrap();
    replay_in_memory(&node, &[("eth0", f)]).unwrap()
}

fn dropped_as(r: &MemoryReplay) -> Vec<&'static str> {
    assert!(
        r.outputs.values().all(Vec::is_empty),
        "nothing may be forwarded: {:?}",
        r.outputs.keys().collect::<Vec<_>>()
    );
    r.stats
        .drops
        .iter()
        .filter(|(_, &v)| v > 0)
        .map(|(&k, _)| k)
        .collect()
}

const HOST_GW_NODE_MAC: MacAddr = mac(0xaa, 4);

#[test]
fn the_host_gw_node_that_owns_the_source_subnet_is_accepted() {
    let r = from_uplink(Ipv4Addr::new(10, 5, 4, 9), HOST_GW_NODE_MAC);
    assert_eq!(r.outputs["pod-b"].len(), 1);
    assert_eq!(r.stats.total_drops(), 0);
}

#[test]
fn a_neighbour_spoofing_a_host_gw_pod_is_dropped() {
    let r = from_uplink(Ipv4Addr::new(10, 5, 4, 9), mac(0xaa, 7));
    assert_eq!(
        dropped_as(&r),
        vec![DropReason::HostGwSourceMismatch.name()]
    );
}

#[test]
fn a_tunnel_mode_node_sending_unencapsulated_is_dropped() {
    // Node B is reached by VXLAN: its pods' traffic must come encapsulated.
    let r = from_uplink(Ipv4Addr::new(10, 5, 2, 9), NODE_B_MAC);
    assert_eq!(
        dropped_as(&r),
        vec![DropReason::HostGwSourceMismatch.name()]
    );
}

#[test]
fn spoofing_a_local_pod_from_the_uplink_is_dropped() {
    let r = from_uplink(POD_A_IP, HOST_GW_NODE_MAC);
    assert_eq!(
        dropped_as(&r),
        vec![DropReason::HostGwSourceMismatch.name()]
    );
}

#[test]
fn sources_outside_the_pod_network_are_dropped() {
    // Even the host-gw node's own underlay address: only pod subnets are
    // routed host-gw to it.
    for src in [Ipv4Addr::new(192, 168, 50, 4), Ipv4Addr::new(8, 8, 8, 8)] {
        let r = from_uplink(src, HOST_GW_NODE_MAC);
        assert_eq!(
            dropped_as(&r),
            vec![DropReason::HostGwSourceMismatch.name()],
            "{src}"
        );
    }
}

#[test]
fn martian_sources_are_dropped_in_every_mode() {
    for src in [
        Ipv4Addr::new(127, 0, 0, 1),
        Ipv4Addr::new(0, 0, 0, 1),
        Ipv4Addr::new(224, 0, 0, 5),
        Ipv4Addr::new(240, 0, 0, 1),
        Ipv4Addr::BROADCAST,
    ] {
        let r = from_uplink(src, HOST_GW_NODE_MAC);
        assert_eq!(
            dropped_as(&r),
            vec![DropReason::Ipv4Martian.name()],
            "{src}"
        );
    }
}
