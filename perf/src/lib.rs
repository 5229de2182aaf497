//! `sluice-lab`: builds multi-node labs out of network namespaces on one
//! machine (nodes joined by an underlay, pods attached to each node's
//! `sluiced`), runs pod-to-pod traffic in VXLAN, IPIP and host-gw modes, and
//! compares sluice with the kernel paths flannel and Calico use.
//!
//! Status: not built yet. The per-packet pipeline figures come from the
//! criterion benchmarks in `dataplane/benches`.
