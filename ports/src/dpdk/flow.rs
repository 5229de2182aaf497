//! Hardware profiles' steering rules, applied with `rte_flow`. Filled in
//! with the profiles (`hw-profiles/`).
