#!/usr/bin/env bash
# The demo, as root on a fresh Debian 12 machine:
#   sudo scripts/demo.sh
# Installs what is needed, builds, brings up a 2-node lab (network
# namespaces; sluiced and sluice-agent on each node, the agents sharing the
# embedded store, two pods per node), shows the leases, pods pinging
# and exchanging TCP across nodes through sluice over VXLAN, runs a short
# comparison with the kernel path flannel uses, prints the table, writes the
# report, and cleans up (also when interrupted).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

echo "== building (release)"
cargo build --release --quiet -p sluiced -p sluicectl -p sluice-control -p sluice-cni -p sluice-perf --bins
lab=target/release/sluice-lab
name=demo
trap '"$lab" down --name "$name" >/dev/null 2>&1 || true' EXIT INT TERM

echo "== a 2-node lab, VXLAN (VNI 1, port 8472, as flannel); each node's sluice-agent leases its subnet and programs its sluiced"
"$lab" up --name "$name" --nodes 2 --mode vxlan
a=demo-n1-p0; b=demo-n2-p1; b_ip=10.77.2.3
echo
echo "== the leases, in flannel's layout (sluice-agent leases)"
target/release/sluice-agent --store-dir /run/sluice-lab/demo-store leases | sed 's/^/   /'
echo
echo "== node 1's subnet file (/run/flannel/subnet.env in a cluster)"
sed 's/^/   /' /run/sluice-lab/demo-n1-subnet.env
echo
echo "== the route node 1's agent programmed into its sluiced (sluicectl routes)"
target/release/sluicectl --socket /run/sluice-lab/demo-n1.sock routes | sed 's/^/   /'
echo
echo "== $a pings $b ($b_ip) across nodes through sluice"
ip netns exec "$a" ping -c 3 "$b_ip"
echo
echo "== TCP, 50 MiB from $a to $b"
ip netns exec "$b" timeout 30 nc -l -p 5000 > /dev/null &
sleep 0.5
start=$(date +%s.%N)
head -c 52428800 /dev/zero | ip netns exec "$a" timeout 30 nc -N "$b_ip" 5000
end=$(date +%s.%N)
wait
python3 -c "print(f'   50 MiB in {($end - $start):.2f} s: {50*8*1.048576/($end - $start):.0f} Mbit/s')"
echo
echo "== what the switch on node 1 counted (sluicectl stats)"
target/release/sluicectl --socket /run/sluice-lab/demo-n1.sock stats | sed 's/^/   /'
"$lab" down --name "$name"

echo
echo "== comparison with the kernel path flannel uses (same machine, same run)"
"$lab" bench --name "$name" --seconds 3 --out sluice-lab-report
echo
echo "== done: sluice-lab-report/report.md has the table and charts; every namespace and process is gone"
