//! FFI to the system C libraries sluice drives: DPDK (found through
//! pkg-config `libdpdk`, with a small C shim for its `static inline` burst
//! functions) and libxdp/libbpf for AF_XDP, generated with bindgen.
//!
//! This is one of the two places in the workspace where `unsafe` code is
//! allowed (the other is the dataplane's port/buffer modules); every block
//! carries a `// SAFETY:` comment.
//!
//! Status: not built yet.
