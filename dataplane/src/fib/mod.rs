//! Route table and flow cache (placeholder; being written).
