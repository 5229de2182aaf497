//! The `sluice` CNI plugin, installed as `/opt/cni/bin/sluice`.
//!
//! Called by the container runtime once per pod operation (ADD, DEL, CHECK,
//! VERSION, GC, STATUS per the CNI spec 1.1): it delegates addressing to an
//! IPAM plugin (Debian's `host-local` by default), creates the pod interface
//! (a veth pair served over AF_XDP, or a vhost-user socket for DPDK pods and
//! VMs) and asks `sluiced` to attach it.
//!
//! Status: not built yet.

pub mod libcni;
