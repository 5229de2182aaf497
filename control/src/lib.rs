//! `sluice-agent`, the control side of a sluice node.
//!
//! It leases this node's pod subnet (flannel's etcd layout by default, or an
//! embedded local store for single-machine labs), learns every other node's
//! subnet from etcd and/or BGP (peering with BIRD 2 and GoBGP, Calico style),
//! picks host-gw, VXLAN or IPIP per remote node, and programs `sluiced`
//! through its control API. It also writes the subnet file the CNI plugin reads.
//!
//! Status: not built yet. The dataplane's route and neighbour types
//! (`sluice_dataplane::config`) are what this crate will program.
