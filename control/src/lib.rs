//! `sluice-agent`, the control side of a sluice node.
//!
//! It leases this node's pod subnet in flannel's etcd layout (or in an
//! embedded local store), learns every other node's subnet, and programs
//! `sluiced` through its control API; it writes the subnet file the CNI
//! plugin reads. It can learn the other nodes' subnets over BGP instead
//! (Calico style, [`bgp`]).

pub mod agent;
pub mod bgp;
pub mod cli;
pub mod lease;
pub mod network;
pub mod reconcile;
pub mod routes;
pub mod settings;
pub mod status;
pub mod store;
/// The subnet file, shared with the CNI plugin (defined in `sluice-api`).
pub use sluice_api::subnet_file;
pub mod switch;
