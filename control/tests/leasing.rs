//! Leasing as flanneld does it, against a real etcd (Debian's etcd-server,
//! started by the test) and against the embedded store: nodes get different
//! subnets, a node gets its own stale lease back, a race for one subnet has
//! one winner, reservations are honoured, and the agent's lease reads as
//! flanneld's.
//!
//! `cargo test -p sluice-control --test leasing`

mod support;

use sluice_api::{Ipv4Net, MacAddr};
use sluice_control::lease::{self, acquire, subnet_key, Choice, LeaseAttrs};
use sluice_control::network::{BackendType, NetworkConfig};
use sluice_control::store::etcd::EtcdStore;
use sluice_control::store::local::LocalStore;
use sluice_control::store::Store;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use support::etcd::Etcd;

const PREFIX: &str = "/coreos.com/network";
const TTL: Duration = Duration::from_secs(600);

fn cfg(json: &str) -> NetworkConfig {
    NetworkConfig::parse(json.as_bytes()).unwrap()
}

fn node(i: u8) -> LeaseAttrs {
    LeaseAttrs::new(
        Ipv4Addr::new(192, 168, 50, i),
        BackendType::Vxlan,
        1,
        MacAddr::from([2, 0, 0, 0, 0xbb, i]),
    )
}

/// A deterministic "random" pick per call site.
fn picker(seed: u64) -> impl FnMut(usize) -> usize {
    let state = AtomicU64::new(seed | 1);
    move |n| {
        let mut x = state.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.store(x, Ordering::Relaxed);
        (x % n as u64) as usize
    }
}

fn subnet(c: Choice) -> Ipv4Net {
    match c {
        Choice::Existing(s) | Choice::Free(s) => s,
    }
}

async fn two_nodes_get_different_subnets<S: Store>(s: &S) {
    let c = cfg(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#);
    let (n1, n2) = (node(1), node(2));
    let (mut p1, mut p2) = (picker(1), picker(1));
    let (a, b) = tokio::join!(
        acquire(s, PREFIX, &c, &n1, None, TTL, &mut p1),
        acquire(s, PREFIX, &c, &n2, None, TTL, &mut p2),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(matches!(a.choice, Choice::Free(_)) && matches!(b.choice, Choice::Free(_)));
    assert_ne!(subnet(a.choice), subnet(b.choice), "two nodes, two subnets");
    let listed = lease::list(s, PREFIX).await.unwrap();
    assert_eq!(listed.leases.len(), 2);
    assert_eq!(listed.leases[&subnet(a.choice)], node(1));
    assert_eq!(listed.leases[&subnet(b.choice)], node(2));
    assert!(listed.expiring.values().all(|e| *e), "both bound to a TTL");

    // A third node whose lease is already there (a restart) gets it back,
    // renewed in place with its current attributes.
    let old = "10.5.77.0/24".parse().unwrap();
    s.create(&subnet_key(PREFIX, old), node(3).to_json().as_bytes(), TTL)
        .await
        .unwrap();
    let mut again = node(3);
    again.backend_data = node(9).backend_data; // a new VTEP MAC since
    let got = acquire(s, PREFIX, &c, &again, None, TTL, &mut picker(7))
        .await
        .unwrap();
    assert_eq!(got.choice, Choice::Existing(old));
    assert!(got.expires);
    let kv = s.get(&subnet_key(PREFIX, old)).await.unwrap().unwrap();
    assert_eq!(
        LeaseAttrs::parse(&kv.value).unwrap(),
        again,
        "renewed with the new attributes"
    );
    assert!(kv.leased);
}

async fn a_race_for_one_subnet_has_one_winner<S: Store + Clone>(s: &S) {
    // Eight nodes, eight subnets, every node asking for the same one first
    // (as if each had it in an old subnet file).
    let c = cfg(
        r#"{"Network":"10.6.0.0/16","SubnetMin":"10.6.1.0","SubnetMax":"10.6.8.0","Backend":{"Type":"vxlan"}}"#,
    );
    let wanted: Ipv4Net = "10.6.4.0/24".parse().unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 1..=8u8 {
        let (s, c) = (s.clone(), c.clone());
        tasks.spawn(async move {
            let mut pick = picker(u64::from(i));
            acquire(&s, PREFIX, &c, &node(i), Some(wanted), TTL, &mut pick)
                .await
                .map(|a| (i, subnet(a.choice), a.races_lost))
        });
    }
    let mut got = Vec::new();
    while let Some(r) = tasks.join_next().await {
        got.push(r.unwrap().expect("every node gets a lease"));
    }
    let mut subnets: Vec<Ipv4Net> = got.iter().map(|g| g.1).collect();
    subnets.sort();
    subnets.dedup();
    assert_eq!(subnets.len(), 8, "all different: {got:?}");
    assert_eq!(
        got.iter().filter(|g| g.1 == wanted).count(),
        1,
        "one winner: {got:?}"
    );
    // The store agrees with what each node believes.
    let listed = lease::list(s, PREFIX).await.unwrap();
    for (i, sub, _) in &got {
        assert_eq!(
            listed.leases[sub].public_ip,
            Ipv4Addr::new(192, 168, 50, *i)
        );
    }
    // A ninth node finds nothing free and says so.
    let e = acquire(s, PREFIX, &c, &node(9), None, TTL, &mut picker(9))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no free subnet"), "{e}");
}

async fn reservations_are_taken_and_stay_reservations<S: Store>(s: &S) {
    let c = cfg(r#"{"Network":"10.7.0.0/16","Backend":{"Type":"host-gw"}}"#);
    let reserved: Ipv4Net = "10.7.42.0/24".parse().unwrap();
    let me = LeaseAttrs::new(
        Ipv4Addr::new(192, 168, 50, 42),
        BackendType::HostGw,
        1,
        MacAddr::from([2, 0, 0, 0, 0, 42]),
    );
    // As an operator writes a reservation: no TTL.
    s.put(
        &subnet_key(PREFIX, reserved),
        br#"{"PublicIP":"192.168.50.42"}"#,
        None,
    )
    .await
    .unwrap();
    let got = acquire(s, PREFIX, &c, &me, None, TTL, &mut picker(3))
        .await
        .unwrap();
    assert_eq!(got.choice, Choice::Existing(reserved));
    assert!(!got.expires, "a reservation is not renewed");
    let kv = s.get(&subnet_key(PREFIX, reserved)).await.unwrap().unwrap();
    assert!(!kv.leased, "still without a TTL");
    assert_eq!(
        String::from_utf8(kv.value).unwrap(),
        r#"{"PublicIP":"192.168.50.42","PublicIPv6":null,"BackendType":"host-gw"}"#
    );
}

async fn leases_read_as_flanneld_reads_them<S: Store>(s: &S) {
    let c = cfg(r#"{"Network":"10.8.0.0/16","Backend":{"Type":"vxlan","VNI":7}}"#);
    let me = LeaseAttrs::new(
        Ipv4Addr::new(192, 168, 64, 3),
        BackendType::Vxlan,
        7,
        "c6:d2:32:6f:8f:44".parse().unwrap(),
    );
    let got = acquire(s, "/custom/prefix/", &c, &me, None, TTL, &mut picker(5))
        .await
        .unwrap();
    let (kvs, _) = s.list("/custom/prefix/subnets/").await.unwrap();
    assert_eq!(kvs.len(), 1);
    let sub = subnet(got.choice);
    assert_eq!(
        kvs[0].key,
        format!("/custom/prefix/subnets/{}-{}", sub.addr(), sub.len())
    );
    // Field by field, as flannel's LeaseAttrs unmarshals it.
    let v: serde_json::Value = serde_json::from_slice(&kvs[0].value).unwrap();
    let o = v.as_object().unwrap();
    assert_eq!(
        o.keys().cloned().collect::<Vec<_>>(),
        ["BackendData", "BackendType", "PublicIP", "PublicIPv6"]
    );
    assert_eq!(o["PublicIP"], "192.168.64.3");
    assert!(o["PublicIPv6"].is_null());
    assert_eq!(o["BackendType"], "vxlan");
    assert_eq!(o["BackendData"]["VNI"], 7);
    assert_eq!(o["BackendData"]["VtepMAC"], "c6:d2:32:6f:8f:44");
    assert_eq!(o["BackendData"].as_object().unwrap().len(), 2);
    assert!(kvs[0].leased);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_two_nodes_get_different_subnets_and_a_stale_lease_comes_back() {
    let etcd = Etcd::start();
    let s = EtcdStore::connect(&etcd.config()).await.unwrap();
    two_nodes_get_different_subnets(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_a_race_for_one_subnet_has_one_winner() {
    let etcd = Etcd::start();
    let s = EtcdStore::connect(&etcd.config()).await.unwrap();
    a_race_for_one_subnet_has_one_winner(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_reservations_are_honoured() {
    let etcd = Etcd::start();
    let s = EtcdStore::connect(&etcd.config()).await.unwrap();
    reservations_are_taken_and_stay_reservations(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_leases_read_as_flanneld_reads_them() {
    let etcd = Etcd::start();
    let s = EtcdStore::connect(&etcd.config()).await.unwrap();
    leases_read_as_flanneld_reads_them(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_leases_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let s = LocalStore::open(dir.path()).unwrap();
    two_nodes_get_different_subnets(&s).await;
    a_race_for_one_subnet_has_one_winner(&s).await;
    reservations_are_taken_and_stay_reservations(&s).await;
    leases_read_as_flanneld_reads_them(&s).await;
}
