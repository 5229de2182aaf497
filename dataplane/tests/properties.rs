//! Property tests over the whole pipeline: fragmentation carries exactly the
//! payload, and tables published while a worker runs are seen whole.

use proptest::prelude::*;
use sluice_dataplane::buffer::{BufPool, Burst, HeapBuf, HeapPool, PacketBuf};
use sluice_dataplane::config::NodeConfig;
use sluice_dataplane::counters::{StatsSnapshot, WorkerCounters};
use sluice_dataplane::craft::*;
use sluice_dataplane::pipeline::{Pipeline, PipelineConfig};
use sluice_dataplane::replay::replay_in_memory;
use sluice_dataplane::tables::{Tables, TablesHandle};
use sluice_dataplane::wire::{checksum, ipv4};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A frame from the host port to `dst` with an IPv4 header carrying
/// `options` (a multiple of 4 bytes), `payload` after it.
fn host_frame(
    dst: Ipv4Addr,
    options: &[u8],
    payload: &[u8],
    more_frags: bool,
    offset: u16,
    ident: u16,
) -> Vec<u8> {
    let hl = 20 + options.len();
    let mut ip = vec![0u8; hl + payload.len()];
    {
        let mut p = ipv4::Packet::new_unchecked(&mut ip[..]);
        p.set_version_and_header_len(hl);
        p.set_dscp_ecn(0);
        p.set_total_len((hl + payload.len()) as u16);
        p.set_ident(ident);
        p.set_flags_and_frag_offset(false, more_frags, offset);
        p.set_ttl(64);
        p.set_protocol(17);
        p.set_src_addr(NODE_A_IP);
        p.set_dst_addr(dst);
    }
    ip[20..hl].copy_from_slice(options);
    ip[hl..].copy_from_slice(payload);
    let c = checksum::checksum(&ip[..hl]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    eth(ROUTER_MAC, mac(0xee, 1), 0x0800, &ip)
}

fn node_with_mtus(uplink: u16, pod: u16) -> NodeConfig {
    let mut cfg = NodeConfig::from_toml_str(REFERENCE_NODE).unwrap();
    cfg.ports[0].mtu = uplink;
    cfg.ports[3].mtu = pod;
    cfg
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Fragments of a packet carry exactly its payload: to a local pod with a
    /// small MTU, and through VXLAN; with and without options (copied and
    /// not), and when the packet was already a fragment.
    #[test]
    fn fragments_carry_exactly_the_payload(
        // At least a UDP header's worth: a shorter unfragmented datagram is
        // dropped as `l4_truncated` before fragmentation is considered.
        payload in proptest::collection::vec(any::<u8>(), 8..4000),
        pod_mtu in 68u16..1500,
        uplink_mtu in 576u16..1600,
        to_vxlan in any::<bool>(),
        // (options, the ones fragments after the first keep): router alert
        // (copied), record route (not copied), security (copied) + NOP.
        (options, copied) in prop_oneof![
            Just((vec![], vec![])),
            Just((vec![0x94, 4, 0, 0], vec![0x94, 4, 0, 0])),
            Just((vec![0x07, 7, 4, 0, 0, 0, 0, 0], vec![])),
            Just((vec![0x82, 4, 1, 2, 1, 0, 0, 0], vec![0x82, 4, 1, 2])),
        ],
        already in prop_oneof![Just(None), (0u16..512).prop_map(|o| Some((o * 8, true))), (0u16..512).prop_map(|o| Some((o * 8, false)))],
    ) {
        let dst = if to_vxlan { REMOTE_POD_B } else { POD_B_IP };
        let (base_off, orig_mf) = already.unwrap_or((0, false));
        prop_assume!(base_off as usize + payload.len() <= 0xfff8);
        let frame = host_frame(dst, &options, &payload, orig_mf, base_off, 0x4242);
        let r = replay_in_memory(&node_with_mtus(uplink_mtu, pod_mtu), &[("host", frame.clone())]).unwrap();
        let (port, l3, max) = if to_vxlan { ("eth0", 64usize, uplink_mtu as usize - 50) } else { ("pod-b", 14usize, pod_mtu as usize) };
        let outs = &r.outputs[port];
        let drops: Vec<_> = r.stats.drops.iter().filter(|(_, &v)| v > 0).collect();
        if outs.is_empty() {
            // Only allowed when the MTU cannot carry a fragment at all.
            prop_assert_eq!(drops, vec![(&"too_many_fragments", &1)]);
            return Ok(());
        }
        prop_assert!(drops.is_empty(), "drops {:?}", drops);
        let mut got = vec![None; payload.len()];
        let mut saw_last = false;
        for (i, o) in outs.iter().enumerate() {
            let ip = ipv4::Packet::new_checked(&o[l3..]).unwrap();
            prop_assert!(ip.verify_checksum());
            prop_assert!(ip.total_len() as usize <= max, "fragment {} of {} bytes over {}", i, ip.total_len(), max);
            prop_assert_eq!(ip.ident(), 0x4242);
            prop_assert_eq!(ip.ttl(), 63);
            prop_assert!(!ip.dont_frag());
            let off = ip.frag_offset() as usize;
            prop_assert!(off >= base_off as usize);
            let rel = off - base_off as usize;
            if outs.len() > 1 && i + 1 < outs.len() {
                prop_assert!(ip.more_frags());
                prop_assert_eq!(ip.payload().len() % 8, 0, "non-last fragments carry multiples of 8");
            }
            if i + 1 == outs.len() {
                prop_assert_eq!(ip.more_frags(), orig_mf);
                saw_last = true;
            }
            if i == 0 {
                prop_assert_eq!(ip.options(), &options[..], "the first fragment keeps every option");
            } else {
                prop_assert_eq!(ip.options(), &copied[..], "later fragments keep copied options only");
            }
            for (k, b) in ip.payload().iter().enumerate() {
                prop_assert!(got[rel + k].is_none(), "byte {} carried twice", rel + k);
                got[rel + k] = Some(*b);
            }
        }
        prop_assert!(saw_last);
        let got: Vec<u8> = got.into_iter().map(|b| b.expect("every byte carried")).collect();
        prop_assert_eq!(got, payload);
    }
}

/// The control side republishes tables while a worker processes bursts:
/// the worker never stalls or panics, every packet is accounted for, and
/// the output port always matches one whole version of the tables.
#[test]
fn tables_published_during_traffic_are_seen_whole() {
    let mut with_vxlan = NodeConfig::from_toml_str(REFERENCE_NODE).unwrap();
    let mut without = with_vxlan.clone();
    without
        .routes
        .retain(|r| r.prefix.to_string() != "10.5.2.0/24");
    with_vxlan.routes.retain(|r| r.prefix.len() != 0);
    let handle = Arc::new(TablesHandle::new(Tables::from_config(&with_vxlan).unwrap()));
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (handle, stop) = (handle.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let cfg = if n.is_multiple_of(2) {
                    &without
                } else {
                    &with_vxlan
                };
                handle.publish(Tables::from_config(cfg).unwrap());
                n += 1;
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            n
        })
    };
    let counters = Arc::new(WorkerCounters::new());
    let mut p: Pipeline<HeapBuf> = Pipeline::new(PipelineConfig::default(), counters.clone());
    let mut pool = HeapPool::new(64, 2048);
    let mut burst = Burst::new(32);
    let frame = pod_a_udp(REMOTE_POD_B, 1, 2, 18);
    let mut cache = handle.cache();
    let (mut to_uplink, mut to_host, mut sent) = (0u64, 0u64, 0u64);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut seen = Vec::new();
    while seen.len() < 40 && std::time::Instant::now() < deadline {
        let tables = cache.load().clone();
        if seen.last() != Some(&tables.generation) {
            seen.push(tables.generation);
        }
        for _ in 0..32 {
            let mut b = pool.alloc().unwrap();
            assert!(b.append(frame.len()));
            b.data_mut().copy_from_slice(&frame);
            burst.push(b).unwrap();
        }
        sent += 32;
        p.process(&tables, 2, &mut burst, &mut pool, 0);
        let has_vxlan = tables.lpm.lookup(u32::from(REMOTE_POD_B)).is_some_and(|a| {
            matches!(
                tables.adjacencies[a as usize],
                sluice_dataplane::tables::Adjacency::Vxlan(_)
            )
        });
        p.tx().flush(|port, l| {
            for b in l.drain(..) {
                match port {
                    0 => {
                        assert!(
                            has_vxlan,
                            "a packet went out by VXLAN under tables without that route"
                        );
                        to_uplink += 1
                    }
                    1 => {
                        assert!(
                            !has_vxlan,
                            "a packet went to the host under tables with the VXLAN route"
                        );
                        to_host += 1
                    }
                    other => panic!("unexpected port {other}"),
                }
                pool.free(b);
            }
        });
    }
    stop.store(true, Ordering::Relaxed);
    let versions = publisher.join().unwrap();
    let snap = StatsSnapshot::collect([&*counters], [(2u16, "pod-a".to_string())]);
    assert_eq!(
        to_uplink + to_host + snap.total_drops(),
        sent,
        "every packet accounted for"
    );
    assert_eq!(snap.total_drops(), 0);
    assert!(
        seen.len() >= 40,
        "the worker saw {} versions of {versions} published",
        seen.len()
    );
    assert!(
        to_uplink > 0 && to_host > 0,
        "both versions carried traffic ({to_uplink}, {to_host})"
    );
    assert_eq!(pool.available(), 64);
}
