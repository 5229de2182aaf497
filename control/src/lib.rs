//! `sluice-agent`, the control side of a sluice node.
//!
//! It leases this node's pod subnet in flannel's etcd layout (or in an
//! embedded local store), learns every other node's subnet, and programs
//! `sluiced` through its control API; it writes the subnet file the CNI
//! plugin reads. BGP comes later (issue 13).

pub mod agent;
pub mod cli;
pub mod lease;
pub mod network;
pub mod routes;
pub mod settings;
pub mod status;
pub mod store;
pub mod subnet_file;
pub mod switch;
