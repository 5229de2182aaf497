#!/usr/bin/env bash
# Installs everything sluice's tests and demo need on a Debian 12 machine.
# Run as root. Idempotent: what is already there is left alone.
set -euo pipefail

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: run as root (it installs Debian packages)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Debian packages: build tools; clang, libclang and the libxdp/libbpf headers
# for the XDP program and its bindings; the independent dissector (tshark);
# Python for the fixture generator; iproute2 and xdp-tools for namespaces
# and XDP status; protoc for etcd-client's build; etcd-server and openssl
# for the agent's etcd store tests (control/tests/support/etcd.rs), and
# etcd-client's etcdctl, the soak's witness watch (perf/tests/soak.rs); podman,
# Debian's CNI plugins and a static busybox for the real-runtime CNI tests
# (perf/tests/support/podman.rs); Debian's DPDK 22.11 for the DPDK backend
# (headers and drivers) and dpdk-testpmd for its tests and benchmarks;
# OVS-DPDK (ovs-vswitchd-dpdk, run privately by sluice-lab dpdk-bench, never as a service); BIRD 2 and GoBGP, the
# agent's BGP peers in the tests and the BGP benchmark (run in namespaces by
# perf/src/peers.rs, never as services). Recommends stay out (--no-install-recommends
# below), so podman's network backend is CNI, not netavark.
PKGS=(build-essential pkg-config clang libclang-dev libxdp-dev libbpf-dev xdp-tools
      tshark python3 iproute2 ethtool iputils-ping netcat-openbsd iperf3 sockperf bsdextrautils linux-perf
      ca-certificates curl protobuf-compiler etcd-server etcd-client openssl
      podman containernetworking-plugins busybox-static
      libdpdk-dev dpdk dpdk-dev
      openvswitch-switch-dpdk
      bird2 gobgpd)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    # tshark asks whether non-root users may capture; the tests run as root.
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    # iperf3 asks whether to run a system-wide server; the benches start their own.
    echo "iperf3 iperf3/start_daemon boolean false" | debconf-set-selections
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # BIRD and GoBGP run only inside the tests' namespaces: a system
    # service started by the packages would speak BGP on the host.
    for svc in bird gobgpd; do
        if printf '%s\n' "${missing[@]}" | grep -qx "bird2\|gobgpd" && command -v systemctl >/dev/null 2>&1; then
            systemctl disable --now "$svc" >/dev/null 2>&1 || true
        fi
    done
fi

# Rust: stable for the workspace, nightly for cargo-fuzz.
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cargo >/dev/null 2>&1; then
    log "installing Rust with rustup"
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if command -v rustup >/dev/null 2>&1; then
    rustup toolchain list | grep -q '^nightly' || { log "installing the nightly toolchain (for cargo fuzz)"; rustup toolchain install nightly --profile minimal; }
    rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    log "installing cargo-fuzz"
    cargo install --locked --quiet cargo-fuzz
fi
# libxdp keeps its multi-program dispatcher state on the BPF filesystem.
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf

log "ready: $(cargo --version), $(tshark --version | head -1)"
