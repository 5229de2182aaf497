//! The etcd v3 store (to be written).
