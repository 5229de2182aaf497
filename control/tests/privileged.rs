//! Agent tests that start sluiced (root, network namespaces): to be written.
