//! Zero-copy header views (placeholder; being written).
