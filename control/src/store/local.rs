//! The embedded local store (to be written).
