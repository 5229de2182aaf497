//! Helpers shared by the agent's integration tests (`mod support;`).

#![allow(dead_code)] // each test binary uses part of it

pub mod etcd;
