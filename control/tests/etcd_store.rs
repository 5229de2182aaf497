//! `EtcdStore` against a real etcd (Debian's etcd-server; see
//! `support/etcd.rs`): the store contract of `sluice_control::store`.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_control::store::etcd::{EtcdConfig, EtcdStore};
use sluice_control::store::{Store, StoreError, Watch, WatchEvent};
use support::etcd::Etcd;

async fn connect(etcd: &Etcd) -> EtcdStore {
    EtcdStore::connect(&etcd.config()).await.expect("connect")
}

/// The next batch of a watch, failing the test after `limit`.
async fn next_within<W: Watch>(w: &mut W, limit: Duration) -> Result<Vec<WatchEvent>, StoreError> {
    tokio::time::timeout(limit, w.next())
        .await
        .unwrap_or_else(|_| panic!("watch gave nothing within {limit:?}"))
}

/// Collects at least `n` events.
async fn collect<W: Watch>(w: &mut W, n: usize) -> Vec<WatchEvent> {
    let mut all = Vec::new();
    while all.len() < n {
        all.extend(
            next_within(w, Duration::from_secs(10))
                .await
                .expect("watch"),
        );
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_if_absent_has_one_winner() {
    let etcd = Etcd::start();
    let (a, b) = (connect(&etcd).await, connect(&etcd).await);
    let ttl = Duration::from_secs(60);
    for i in 0..20 {
        let key = format!("/coreos.com/network/subnets/10.5.{i}.0-24");
        let (ra, rb) = tokio::join!(a.create(&key, b"a", ttl), b.create(&key, b"b", ttl));
        let (ra, rb) = (ra.expect("create a"), rb.expect("create b"));
        assert!(ra ^ rb, "{key}: exactly one create wins ({ra}, {rb})");
        let kv = a.get(&key).await.expect("get").expect("the key exists");
        assert_eq!(kv.value, if ra { b"a" } else { b"b" });
        let left = kv.ttl_left.expect("a created key has a lease");
        assert!(
            left <= ttl && left >= ttl - Duration::from_secs(5),
            "{left:?}"
        );
        // A third try loses too.
        assert!(!a.create(&key, b"c", ttl).await.expect("create again"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_then_watch_from_the_next_revision() {
    let etcd = Etcd::start();
    let s = connect(&etcd).await;
    s.put("/n/a/1", b"one", None).await.unwrap();
    s.put("/n/a/2", b"two", None).await.unwrap();
    s.put("/n/b/1", b"other prefix", None).await.unwrap();
    let (kvs, rev) = s.list("/n/a/").await.unwrap();
    let keys: Vec<&str> = kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/n/a/1", "/n/a/2"]);
    assert!(kvs
        .iter()
        .all(|kv| kv.mod_revision <= rev && !kv.leased && kv.ttl_left.is_none()));
    assert_eq!(s.revision().await.unwrap(), rev);

    // Changes after the snapshot, before the watch opens.
    s.put("/n/a/3", b"three", None).await.unwrap();
    s.delete("/n/a/1").await.unwrap();
    s.put("/n/b/2", b"other prefix", None).await.unwrap();
    s.delete("/n/a/missing").await.unwrap(); // deleting nothing is fine
    let mut w = s.watch("/n/a/", rev + 1).await.unwrap();
    // And after it opened.
    s.put("/n/a/2", b"two again", None).await.unwrap();

    let events = collect(&mut w, 3).await;
    assert_eq!(events.len(), 3, "{events:?}");
    match &events[0] {
        WatchEvent::Put(kv) => {
            assert_eq!(
                (kv.key.as_str(), kv.value.as_slice()),
                ("/n/a/3", &b"three"[..])
            );
            assert_eq!(kv.mod_revision, rev + 1);
        }
        e => panic!("expected the put of /n/a/3, got {e:?}"),
    }
    assert!(matches!(&events[1], WatchEvent::Delete { key, .. } if key == "/n/a/1"));
    match &events[2] {
        WatchEvent::Put(kv) => assert_eq!(
            (kv.key.as_str(), kv.value.as_slice()),
            ("/n/a/2", &b"two again"[..])
        ),
        e => panic!("expected the put of /n/a/2, got {e:?}"),
    }
    assert!(events.windows(2).all(|p| p[0].revision() < p[1].revision()));
    assert!(events
        .iter()
        .all(|e| e.revision() > rev && e.key().starts_with("/n/a/")));

    // The store-wide view agrees.
    let (kvs, rev2) = s.list("/n/").await.unwrap();
    let keys: Vec<&str> = kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/n/a/2", "/n/a/3", "/n/b/1", "/n/b/2"]);
    assert_eq!(rev2, events[2].revision());
    assert_eq!(s.get("/n/a/1").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leased_key_expires_and_the_watch_sees_the_delete() {
    let etcd = Etcd::start();
    // A request timeout shorter than the wait below: an idle watch must not
    // be cut by it.
    let config = EtcdConfig {
        request_timeout: Duration::from_secs(2),
        ..etcd.config()
    };
    let s = EtcdStore::connect(&config).await.unwrap();
    let ttl = Duration::from_secs(3);
    let rev = s.revision().await.unwrap();
    let mut w = s.watch("/t/", rev + 1).await.unwrap();
    s.put("/t/forever", b"no lease", None).await.unwrap();
    s.put("/t/leased", b"lease", Some(ttl)).await.unwrap();
    let put_at = Instant::now();

    let kv = s.get("/t/leased").await.unwrap().unwrap();
    let left = kv.ttl_left.expect("a leased key has ttl_left");
    assert!(left <= ttl && left >= Duration::from_secs(1), "{left:?}");
    assert_eq!(s.get("/t/forever").await.unwrap().unwrap().ttl_left, None);
    let (kvs, _) = s.list("/t/").await.unwrap();
    assert_eq!(kvs.len(), 2);
    assert!(
        !kvs[0].leased && kvs[1].leased,
        "list says which keys have a lease"
    );
    assert_eq!(kvs[1].ttl_left, None, "list does not ask etcd for TTLs");

    let events = collect(&mut w, 2).await;
    assert!(matches!(&events[0], WatchEvent::Put(kv) if !kv.leased));
    assert!(matches!(&events[1], WatchEvent::Put(kv) if kv.leased));

    // The lease expires: the key goes, the watch says so.
    let events = next_within(&mut w, ttl + Duration::from_secs(10))
        .await
        .unwrap();
    let gone = put_at.elapsed();
    assert!(
        matches!(&events[..], [WatchEvent::Delete { key, .. }] if key == "/t/leased"),
        "{events:?}"
    );
    eprintln!("a {ttl:?} lease expired after {gone:?}");
    assert!(
        gone >= ttl - Duration::from_millis(500),
        "expired early: {gone:?}"
    );
    assert_eq!(s.get("/t/leased").await.unwrap(), None);
    assert!(s.get("/t/forever").await.unwrap().is_some());

    // Renewal as flannel does it: a fresh lease on every put.
    s.put("/t/renewed", b"1", Some(ttl)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.put("/t/renewed", b"2", Some(ttl)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kv = s
        .get("/t/renewed")
        .await
        .unwrap()
        .expect("renewed key still there");
    assert_eq!(kv.value, b"2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_a_compacted_revision_fails() {
    let etcd = Etcd::start();
    let s = connect(&etcd).await;
    let first = s.revision().await.unwrap() + 1;
    for i in 0..5 {
        s.put("/c/k", format!("{i}").as_bytes(), None)
            .await
            .unwrap();
    }
    let rev = s.revision().await.unwrap();
    s.compact(rev).await.unwrap();
    s.compact(rev - 1).await.expect("compacting again is fine");
    assert!(matches!(
        s.compact(rev + 100).await,
        Err(StoreError::Other(_))
    ));

    let err = match s.watch("/c/", first).await {
        Err(e) => e,
        Ok(mut w) => next_within(&mut w, Duration::from_secs(10))
            .await
            .expect_err("a watch from a compacted revision fails"),
    };
    assert_eq!(
        err,
        StoreError::Compacted {
            requested: first,
            compact_revision: rev
        }
    );

    // From the compaction revision on, watching works (list + watch).
    let (kvs, lrev) = s.list("/c/").await.unwrap();
    assert_eq!(kvs[0].value, b"4");
    let mut w = s.watch("/c/", lrev + 1).await.unwrap();
    s.put("/c/k", b"5", None).await.unwrap();
    let events = next_within(&mut w, Duration::from_secs(10)).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].revision(), lrev + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_is_unavailable_and_the_store_recovers() {
    let mut etcd = Etcd::start();
    let s = connect(&etcd).await; // request timeout 3 s (support::etcd)
    s.put("/o/kept", b"1", None).await.unwrap();
    let rev = s.revision().await.unwrap();
    let mut w = s.watch("/o/", rev + 1).await.unwrap();

    etcd.stop();
    let t = Instant::now();
    let err = next_within(&mut w, Duration::from_secs(30))
        .await
        .expect_err("the watch ends when etcd goes");
    eprintln!("open watch ended after {:?}: {err}", t.elapsed());
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");

    for op in ["get", "put", "list", "create", "watch"] {
        let t = Instant::now();
        let err = match op {
            "get" => s.get("/o/kept").await.map(drop),
            "put" => s.put("/o/x", b"x", Some(Duration::from_secs(10))).await,
            "list" => s.list("/o/").await.map(drop),
            "create" => s
                .create("/o/y", b"y", Duration::from_secs(10))
                .await
                .map(drop),
            _ => s.watch("/o/", rev + 1).await.map(drop),
        }
        .expect_err("etcd is down");
        let took = t.elapsed();
        eprintln!("{op} with etcd down: {took:?}: {err}");
        assert!(matches!(err, StoreError::Unavailable(_)), "{op}: {err:?}");
        assert!(took < Duration::from_secs(5), "{op} took {took:?}");
    }
    let t = Instant::now();
    let err = EtcdStore::connect(&etcd.config())
        .await
        .expect_err("connect to a down etcd");
    eprintln!("connect with etcd down: {:?}: {err}", t.elapsed());
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(t.elapsed() < Duration::from_secs(6));

    // Back on the same data: the same store recovers by itself.
    etcd.restart();
    let t = Instant::now();
    let kv = loop {
        match s.get("/o/kept").await {
            Ok(kv) => break kv,
            Err(StoreError::Unavailable(e)) if t.elapsed() < Duration::from_secs(20) => {
                eprintln!("still unavailable: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("store did not recover: {e:?}"),
        }
    };
    eprintln!(
        "same store usable again {:?} after the restart",
        t.elapsed()
    );
    assert_eq!(kv.unwrap().value, b"1");
    let (_, rev) = s.list("/o/").await.unwrap();
    let mut w = s.watch("/o/", rev + 1).await.unwrap();
    assert!(s
        .create("/o/new", b"n", Duration::from_secs(10))
        .await
        .unwrap());
    let events = next_within(&mut w, Duration::from_secs(10)).await.unwrap();
    assert_eq!(events[0].key(), "/o/new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_of_5000_leased_keys() {
    const N: usize = 5000;
    let etcd = Etcd::start();
    let s = Arc::new(connect(&etcd).await);
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    const WORKERS: usize = 32;
    for w in 0..WORKERS {
        let s = s.clone();
        tasks.spawn(async move {
            for i in (w..N).step_by(WORKERS) {
                let key = format!(
                    "/coreos.com/network/subnets/10.{}.{}.0-24",
                    i / 256,
                    i % 256
                );
                let value = format!(
                    r#"{{"PublicIP":"192.0.2.{}","BackendType":"vxlan"}}"#,
                    i % 250
                );
                s.put(&key, value.as_bytes(), Some(Duration::from_secs(600)))
                    .await
                    .expect("put");
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("writer");
    }
    eprintln!("{N} leased puts: {:?}", t.elapsed());

    // The same number of keys without leases: the range read alone.
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..WORKERS {
        let s = s.clone();
        tasks.spawn(async move {
            for i in (w..N).step_by(WORKERS) {
                s.put(&format!("/plain/{i:05}"), b"x", None)
                    .await
                    .expect("put");
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("writer");
    }
    let t = Instant::now();
    let (kvs, _) = s.list("/plain/").await.unwrap();
    eprintln!(
        "list of {} keys without leases: {:?}",
        kvs.len(),
        t.elapsed()
    );
    assert_eq!(kvs.len(), N);
    assert!(kvs.iter().all(|kv| !kv.leased));

    let mut best = Duration::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let (kvs, _) = s.list("/coreos.com/network/subnets/").await.unwrap();
        let took = t.elapsed();
        best = best.min(took);
        eprintln!("list of {} leased keys: {took:?}", kvs.len());
        assert_eq!(kvs.len(), N);
        assert!(kvs.windows(2).all(|p| p[0].key < p[1].key), "sorted by key");
        assert!(kvs.iter().all(|kv| kv.leased));
    }
    // Well under 1 s on a quiet machine; loose here for loaded CI runners.
    assert!(best < Duration::from_secs(3), "list took {best:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_etcd_times_out_and_the_watch_notices() {
    let etcd = Etcd::start();
    let s = connect(&etcd).await; // request timeout 3 s (support::etcd)
    let rev = s.revision().await.unwrap();
    let mut w = s.watch("/h/", rev + 1).await.unwrap();

    // The TCP connection stays up; only HTTP/2 keep-alive can tell.
    etcd.pause();
    let t = Instant::now();
    let err = s.get("/h/k").await.expect_err("etcd is frozen");
    eprintln!("get with etcd frozen: {:?}: {err}", t.elapsed());
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(t.elapsed() < Duration::from_secs(5));

    let err = next_within(&mut w, Duration::from_secs(40))
        .await
        .expect_err("the watch ends when etcd stops answering");
    eprintln!(
        "open watch on a frozen etcd ended after {:?}: {err}",
        t.elapsed()
    );
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");

    etcd.resume();
    let t = Instant::now();
    loop {
        match s.put("/h/k", b"v", None).await {
            Ok(()) => break,
            Err(StoreError::Unavailable(e)) if t.elapsed() < Duration::from_secs(20) => {
                eprintln!("still unavailable: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("store did not recover: {e:?}"),
        }
    }
    eprintln!("usable again {:?} after the thaw", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates() {
    let etcd = Etcd::start_tls();
    let config = etcd.config();
    let s = EtcdStore::connect(&config).await.expect("connect over TLS");
    s.put("/tls/k", b"v", Some(Duration::from_secs(30)))
        .await
        .unwrap();
    let kv = s.get("/tls/k").await.unwrap().unwrap();
    assert_eq!(kv.value, b"v");
    assert!(kv.ttl_left.is_some());

    // TLS files with a plain endpoint: a configuration error.
    let plain = EtcdConfig {
        endpoints: vec![config.endpoints[0].replace("https://", "http://")],
        ..config.clone()
    };
    let err = EtcdStore::connect(&plain)
        .await
        .expect_err("http with TLS files");
    assert!(matches!(err, StoreError::Other(_)), "{err:?}");
    // A missing certificate file too.
    let missing = EtcdConfig {
        cert_file: Some("/nonexistent/client.pem".into()),
        ..config.clone()
    };
    let err = EtcdStore::connect(&missing)
        .await
        .expect_err("missing file");
    assert!(matches!(err, StoreError::Other(_)), "{err:?}");
    // Without a client certificate etcd refuses (the handshake fails).
    let anonymous = EtcdConfig {
        cert_file: None,
        key_file: None,
        ..config.clone()
    };
    let err = EtcdStore::connect(&anonymous)
        .await
        .expect_err("no client certificate");
    eprintln!("TLS without a client certificate: {err}");
}

/// A synced watch gets one response per revision; a consumer that falls
/// behind gets what has arrived in one batch, in order, nothing missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_that_falls_behind_gets_what_arrived_in_one_batch() {
    let etcd = Etcd::start();
    let s = connect(&etcd).await;
    let from = s.revision().await.unwrap() + 1;
    let mut w = s.watch("/b/", from).await.unwrap();
    // Written one by one while the watch is synced, not consumed meanwhile.
    for i in 0..300 {
        s.put(&format!("/b/{}", i % 7), b"v", None).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let first = next_within(&mut w, Duration::from_secs(10))
        .await
        .expect("watch");
    assert!(
        first.len() > 100,
        "one batch holds what had arrived: {} events",
        first.len()
    );
    let mut all = first;
    all.extend(collect(&mut w, 300 - all.len()).await);
    let revs: Vec<_> = all.iter().map(WatchEvent::revision).collect();
    assert_eq!(revs, (from..from + 300).collect::<Vec<_>>());
}
