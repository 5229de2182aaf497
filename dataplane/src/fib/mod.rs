//! Route table and flow cache.
//!
//! - [`lpm`]: IPv4 longest-prefix match (DIR-24-8), built on the control side
//!   and shared read-only with workers through an `Arc`.
//! - [`flow_cache`]: per-worker exact-match cache of per-flow decisions,
//!   invalidated wholesale by bumping a generation number.

pub mod flow_cache;
pub mod lpm;

pub use flow_cache::{FlowCache, FlowKey};
pub use lpm::{Lpm, LpmError, MAX_NEXT_HOP};
