//! BGP-4 for `sluice-agent`, without I/O (boringtun's shape): what the
//! agent's speaker (`sluice_control::bgp::speaker`) feeds bytes and time
//! into, and what tests and the fuzz target drive with bytes alone.
//!
//! - [`message`]: BGP-4 messages over NetGauze's codec, with the RFC's
//!   NOTIFICATION for everything malformed;
//! - [`session`]: one peer's RFC 4271 state machine and Adj-RIB-In, with
//!   RFC 4724 graceful restart as helper and as restarting speaker;
//! - [`rib`]: best-path selection (RFC 4271 §9.1.2.2).

pub mod message;
pub mod rib;
pub mod session;
