#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every tier.
#   sudo scripts/test.sh
# Tiers: lint; unit + property + golden (pcap through the replay tool, checked
# by tshark) + malformed corpus + the agent's stores against a real etcd;
# privileged (sluiced on AF_XDP in network namespaces, and labs whose nodes
# are programmed by sluice-agent, as root), ending with a bounded soak (pods
# churned through the CNI plugin and 1,000 lease changes a second through
# the agent, under traffic: perf/tests/soak.rs, docs/lab.md); then the fuzz
# targets for a bounded time.
# SLUICE_FUZZ_SECONDS sets the time per fuzz target (default 30);
# SLUICE_SOAK_SECONDS the soak's churn (default 60; about 2.5 min in all
# with the lab's start, the settling and the checks).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
start=$(date +%s)

step "set-up"
scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

step "lint: rustfmt and clippy"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --all-features --quiet -- -D warnings

step "tier 1-3: unit, property, golden and malformed-input tests; the agent against etcd"
cargo test --workspace --quiet

step "tier 4: privileged (root): sluiced on AF_XDP and on DPDK (vhost-user pods are dpdk-testpmd), sluice-lab with its agents (etcd, BGP with BIRD 2 and GoBGP), podman on CNI, and a ${SLUICE_SOAK_SECONDS:-60}s soak, in network namespaces"
cargo build -p sluiced -p sluicectl -p sluice-control -p sluice-cni --bins --quiet
cargo test -p sluiced --features privileged-tests --test privileged -- --test-threads=1
cargo test -p sluiced --features privileged-tests --test dpdk_privileged -- --test-threads=1
cargo test -p sluice-cni --features privileged-tests --test libcni_debian -- --test-threads=1
cargo test -p sluice-perf --features privileged-tests --test lab -- --test-threads=1
cargo test -p sluice-perf --features privileged-tests --test cni -- --test-threads=1
cargo test -p sluice-perf --features privileged-tests --test vhost_pod -- --test-threads=1
cargo test -p sluice-perf --features privileged-tests --test podman -- --test-threads=1
cargo test -p sluice-perf --features privileged-tests --test deploy -- --test-threads=1
cargo test -p sluice-perf --features privileged-tests --test peers -- --test-threads=1
cargo test -p sluice-perf --features privileged-tests --test bgp -- --test-threads=1
SLUICE_SOAK_SECONDS="${SLUICE_SOAK_SECONDS:-60}" \
  cargo test -p sluice-perf --features privileged-tests --test soak -- --test-threads=1

step "tier 5: fuzz targets, ${SLUICE_FUZZ_SECONDS:-30}s each"
scripts/fuzz.sh "${SLUICE_FUZZ_SECONDS:-30}"

step "all tiers passed in $(( $(date +%s) - start ))s"
