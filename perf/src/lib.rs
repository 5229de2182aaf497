//! `sluice-lab`: builds multi-node labs out of network namespaces on one
//! machine (nodes joined by an underlay bridge, two pods per node attached to
//! that node's `sluiced` over AF_XDP), in VXLAN, IPIP or host-gw mode, and
//! tears them down again. See [`lab`]. Each sluiced node is programmed by its
//! own `sluice-agent` over a shared store (embedded, or a real etcd), see
//! [`cluster`].
//!
//! [`bench`] runs the same traffic through sluice and through the kernel
//! path flannel uses and reports ratios; the per-packet pipeline figures come
//! from the criterion benchmarks in `dataplane/benches`. [`dpdk_bench`]
//! measures one forwarding core on DPDK vdevs: testpmd io, OVS-DPDK and
//! sluice side by side. [`capacity`] measures one node's per-core
//! forwarding capacity on AF_XDP against the kernel path flannel uses.

pub mod agent_bench;
pub mod bench;
pub mod bgp_bench;
pub mod capacity;
pub mod cluster;
pub mod cni_bench;
pub mod dpdk_bench;
pub mod lab;
pub mod limits_bench;
pub mod measure;
pub mod mrt;
pub mod peers;
pub mod pods;
