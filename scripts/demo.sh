#!/usr/bin/env bash
# The demo: installs what is needed, builds, and shows what a sluice node does
# with real traffic. Until the multi-node lab (sluice-lab) lands, it replays
# captures made with scapy through node A of a lab, offline, with the same
# pipeline sluiced runs, and has tshark decode what the node sends.
#   sudo scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

echo "== building sluice-replay (release)"
cargo build --release --quiet -p sluice-dataplane --bin sluice-replay
replay=target/release/sluice-replay
golden=dataplane/tests/golden
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

show() {  # case, port, vxlan port, fields...
    local case=$1 port=$2 vx=$3; shift 3
    local args=(); for f in "$@"; do args+=(-e "$f"); done
    tshark -n -r "$out/$case/$port.pcap" ${vx:+-d udp.port==$vx,vxlan} -o ip.check_checksum:TRUE \
        -T fields -E header=y -E separator=/t "${args[@]}" 2>/dev/null | column -t -s $'\t' | sed 's/^/    /'
}

for case in vxlan-encap vxlan-decap ipip-encap host-gw local-delivery ttl-exceeded frag-needed fragment anti-spoofing; do
    inputs=()
    for f in "$golden/cases/$case"/in-*.pcap; do
        p=$(basename "$f" .pcap); inputs+=(--input "${p#in-}=$f")
    done
    "$replay" --config "$golden/node.toml" "${inputs[@]}" --out-dir "$out/$case" > "$out/$case.json"
    python3 - "$case" "$out/$case.json" <<'PY'
import json, sys
case, r = sys.argv[1], json.load(open(sys.argv[2]))
rx = sum(p["rx_packets"] for p in r["stats"]["ports"].values())
sent = {k: v for k, v in r["written"].items() if v}
drops = {k: v for k, v in r["stats"]["drops"].items() if v}
print(f"\n== {case}: {rx} frames in, sent {sent or 'nothing'}, dropped {drops or 'nothing'}")
PY
    case $case in
        vxlan-encap) show $case eth0 8472 ip.src ip.dst udp.srcport udp.dstport vxlan.vni ip.checksum.status ;;
        vxlan-decap) show $case pod-a "" eth.dst ip.src ip.dst ip.ttl ;;
        ipip-encap) show $case eth0 "" ip.proto ip.src ip.dst ;;
        host-gw) show $case eth0 "" eth.dst ip.dst ip.ttl ;;
        local-delivery) show $case pod-b "" eth.dst ip.dst ip.ttl icmp.type ;;
        ttl-exceeded) show $case pod-a "" ip.src ip.dst icmp.type icmp.code ;;
        frag-needed) show $case host "" ip.src ip.dst icmp.type icmp.code icmp.mtu ;;
        fragment) show $case eth0 8472 ip.len ip.flags.mf ip.frag_offset ;;
    esac
done
echo
echo "== done. Replay your own captures through your node's configuration: docs/replay.md"
