#!/usr/bin/env python3
"""Writes the golden tests' input captures with scapy, an independent packet
builder (sluice's own builders are not used, so a bug in them cannot hide).

    pip install scapy && python3 dataplane/tests/golden/make_inputs.py

Addresses follow the reference node in node.toml (node A of a lab):
pods 10.5.1.2 (pod-a) and 10.5.1.3 (pod-b), gateway 10.5.1.1, router MAC
02:00:00:00:00:01, uplink 192.168.50.1 (02:00:00:00:aa:01), VTEP MAC
02:00:00:00:bb:01; node B 192.168.50.2 (VXLAN), node C .3 (IPIP), node D .4
(host-gw). Timestamps are fixed so the files are reproducible.
"""
import os
from scapy.all import Ether, ARP, IP, UDP, TCP, ICMP, Raw, wrpcap
from scapy.layers.vxlan import VXLAN

HERE = os.path.dirname(os.path.abspath(__file__))
ROUTER = "02:00:00:00:00:01"
POD_A, POD_A_MAC = "10.5.1.2", "02:00:00:00:01:02"
POD_B, POD_B_MAC = "10.5.1.3", "02:00:00:00:01:03"
UPLINK_MAC, NODE_A = "02:00:00:00:aa:01", "192.168.50.1"
NODE_B, NODE_B_MAC, VTEP_B = "192.168.50.2", "02:00:00:00:aa:02", "02:00:00:00:bb:02"
NODE_C, NODE_C_MAC = "192.168.50.3", "02:00:00:00:aa:03"
VTEP_A = "02:00:00:00:bb:01"
HOST_MAC = "02:00:00:00:ee:01"


def from_pod_a(ip_fields):
    return Ether(dst=ROUTER, src=POD_A_MAC) / IP(src=POD_A, **ip_fields)


def write(case, port, pkts):
    d = os.path.join(HERE, "cases", case)
    os.makedirs(d, exist_ok=True)
    for i, p in enumerate(pkts):
        p.time = 1700000000 + i / 1000
    wrpcap(os.path.join(d, f"in-{port}.pcap"), pkts)


def vxlan_in(src, vni, inner, dport=8472, vxflags=0x08):
    return (Ether(dst=UPLINK_MAC, src=NODE_B_MAC) / IP(src=src, dst=NODE_A, flags="DF")
            / UDP(sport=40000, dport=dport, chksum=0) / VXLAN(vni=vni, flags=vxflags) / inner)


payload = Raw(b"sluice golden payload ")

write("vxlan-encap", "pod-a", [
    from_pod_a(dict(dst="10.5.2.7", id=1, flags="DF")) / UDP(sport=1000 + i, dport=5201) / payload
    for i in range(3)
] + [
    from_pod_a(dict(dst="10.5.2.7", id=7, flags="DF")) / ICMP(type=8, id=1, seq=1) / payload,
    from_pod_a(dict(dst="10.5.2.9", id=8, flags="DF")) / TCP(sport=43000, dport=80, flags="S"),
])

write("vxlan-encap-4789", "pod-a", [
    from_pod_a(dict(dst="10.5.2.7", id=1, flags="DF")) / UDP(sport=1000, dport=5201) / payload,
])

inner_to_pod_a = (Ether(dst=VTEP_A, src=VTEP_B) / IP(src="10.5.2.7", dst=POD_A, ttl=63, id=9)
                  / UDP(sport=5201, dport=1000) / payload)
write("vxlan-decap", "eth0", [
    vxlan_in(NODE_B, 1, inner_to_pod_a),
    vxlan_in("192.168.50.77", 1, inner_to_pod_a),          # unknown tunnel source
    vxlan_in(NODE_B, 2, inner_to_pod_a),                   # wrong VNI
    vxlan_in(NODE_B, 1, inner_to_pod_a, vxflags=0x00),     # I flag clear
])

write("ipip-encap", "pod-a", [
    from_pod_a(dict(dst="10.5.3.3", id=3, flags="DF")) / UDP(sport=1000, dport=5201) / payload,
])

write("ipip-decap", "eth0", [
    Ether(dst=UPLINK_MAC, src=NODE_C_MAC) / IP(src=NODE_C, dst=NODE_A, proto=4)
    / IP(src="10.5.3.3", dst=POD_B, ttl=63) / ICMP(type=8, id=2, seq=1) / payload,
    Ether(dst=UPLINK_MAC, src=NODE_B_MAC) / IP(src=NODE_B, dst=NODE_A, proto=4)   # not an IPIP peer
    / IP(src="10.5.3.3", dst=POD_B, ttl=63) / ICMP(type=8, id=2, seq=2) / payload,
])

write("host-gw", "pod-a", [
    from_pod_a(dict(dst="10.5.4.4", id=4, flags="DF")) / TCP(sport=43001, dport=443, flags="S"),
])

write("local-delivery", "pod-a", [
    from_pod_a(dict(dst=POD_B, id=5, ttl=64)) / ICMP(type=8, id=3, seq=1) / payload,
])

write("to-host", "pod-a", [
    from_pod_a(dict(dst="93.184.216.34", id=6)) / UDP(sport=40000, dport=53) / payload,
    from_pod_a(dict(dst="10.5.1.1", id=7)) / ICMP(type=8, id=4, seq=1),
])

write("arp-reply", "pod-a", [
    Ether(dst="ff:ff:ff:ff:ff:ff", src=POD_A_MAC) / ARP(op=1, hwsrc=POD_A_MAC, psrc=POD_A, pdst="10.5.1.1"),
    Ether(dst="ff:ff:ff:ff:ff:ff", src=POD_A_MAC) / ARP(op=1, hwsrc=POD_A_MAC, psrc=POD_A, pdst="8.8.8.8"),
])

write("ttl-exceeded", "pod-a", [
    from_pod_a(dict(dst="10.5.2.7", id=10, ttl=1)) / UDP(sport=33434, dport=33435) / payload,
    from_pod_a(dict(dst="10.5.2.7", id=11, ttl=0)) / UDP(sport=33434, dport=33436) / payload,
])

big = Raw(bytes(range(256)) * 8)  # 2048 bytes
write("frag-needed", "host", [
    Ether(dst=ROUTER, src=HOST_MAC) / IP(src=NODE_A, dst="10.5.2.7", id=12, flags="DF") / UDP(sport=7000, dport=7001) / big,
])

write("fragment", "host", [
    Ether(dst=ROUTER, src=HOST_MAC) / IP(src=NODE_A, dst="10.5.2.7", id=13) / UDP(sport=7000, dport=7001) / big,
])

write("anti-spoofing", "pod-a", [
    Ether(dst=ROUTER, src=POD_A_MAC) / IP(src="10.5.1.99", dst=POD_B) / UDP(sport=1, dport=2) / payload,
    Ether(dst=ROUTER, src="02:00:00:00:06:66") / IP(src=POD_A, dst=POD_B) / UDP(sport=1, dport=2) / payload,
    from_pod_a(dict(dst="10.5.9.1")) / UDP(sport=1, dport=2) / payload,   # blackhole route
])
