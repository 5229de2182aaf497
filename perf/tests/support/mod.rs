//! Helpers shared by the privileged integration tests; each test crate
//! uses what it needs.
#![allow(dead_code)]

pub mod podman;
