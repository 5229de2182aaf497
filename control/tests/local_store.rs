//! `LocalStore` against the store contract: several instances on one
//! directory stand in for several agent processes.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_control::store::local::{LocalStore, LocalStoreOptions};
use sluice_control::store::{Revision, Store, StoreError, Watch, WatchEvent};

const CHILD_ENV: &str = "SLUICE_LOCAL_STORE_CHILD_DIR";

fn fast() -> LocalStoreOptions {
    LocalStoreOptions {
        poll_interval: Duration::from_millis(5),
        ..Default::default()
    }
}

/// Collects at least `n` events from `w` (fails after 10 s).
async fn collect(w: &mut impl Watch, n: usize) -> Vec<WatchEvent> {
    let mut out = Vec::new();
    while out.len() < n {
        let batch = tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .expect("watch timed out")
            .expect("watch failed");
        assert!(!batch.is_empty(), "next() returned no events");
        out.extend(batch);
    }
    out
}

/// Asserts `w` yields nothing for a while.
async fn quiet(w: &mut impl Watch) {
    let r = tokio::time::timeout(Duration::from_millis(150), w.next()).await;
    assert!(r.is_err(), "unexpected events: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_if_absent_has_exactly_one_winner_across_instances() {
    let d = tempfile::tempdir().unwrap();
    let a = LocalStore::open(d.path()).unwrap();
    let b = LocalStore::open(d.path()).unwrap();
    for round in 0..10 {
        let key = format!("/coreos.com/network/subnets/10.1.{round}.0-24");
        let wins = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for t in 0..8 {
            let store = if t % 2 == 0 { a.clone() } else { b.clone() };
            let (key, wins) = (key.clone(), wins.clone());
            tasks.push(tokio::spawn(async move {
                let value = format!("{{\"node\":{t}}}");
                if store
                    .create(&key, value.as_bytes(), Duration::from_secs(60))
                    .await
                    .unwrap()
                {
                    wins.fetch_add(1, Ordering::SeqCst);
                    Some(value)
                } else {
                    None
                }
            }));
        }
        let mut winner = None;
        for t in tasks {
            if let Some(v) = t.await.unwrap() {
                winner = Some(v);
            }
        }
        assert_eq!(wins.load(Ordering::SeqCst), 1, "round {round}");
        let kv = b.get(&key).await.unwrap().expect("created key");
        assert_eq!(kv.value, winner.unwrap().into_bytes());
    }
    // Plain threads with their own runtimes and their own instances too.
    let wins = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (dir, wins) = (d.path().to_owned(), wins.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let s = LocalStore::open(&dir).unwrap();
                let created = rt
                    .block_on(s.create(
                        "/race/threads",
                        format!("{t}").as_bytes(),
                        Duration::from_secs(60),
                    ))
                    .unwrap();
                if created {
                    wins.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(wins.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_then_watch_sees_later_changes_in_order_and_nothing_before() {
    let d = tempfile::tempdir().unwrap();
    let a = LocalStore::open_with(d.path(), fast()).unwrap();
    let b = LocalStore::open_with(d.path(), fast()).unwrap();
    a.put("/p/x", b"x1", None).await.unwrap();
    b.put("/p/y", b"y1", Some(Duration::from_secs(60)))
        .await
        .unwrap();
    b.put("/q/outside", b"o", None).await.unwrap();
    let (kvs, rev) = a.list("/p/").await.unwrap();
    assert_eq!(
        kvs.iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>(),
        ["/p/x", "/p/y"]
    );
    assert_eq!(rev, 3);
    assert!(kvs.iter().all(|kv| kv.mod_revision <= rev));

    let mut w = a.watch("/p/", rev + 1).await.unwrap();
    quiet(&mut w).await;
    // Changes by the other instance (another process) and by this one.
    b.put("/p/z", b"z1", None).await.unwrap();
    a.delete("/p/x").await.unwrap();
    b.put("/q/outside", b"o2", None).await.unwrap();
    b.put("/p/y", b"y2", None).await.unwrap();
    a.delete("/p/missing").await.unwrap(); // no change, no event
    let ev = collect(&mut w, 3).await;
    assert_eq!(ev.len(), 3, "{ev:?}");
    match &ev[0] {
        WatchEvent::Put(kv) => {
            assert_eq!((kv.key.as_str(), kv.value.as_slice()), ("/p/z", &b"z1"[..]));
            assert_eq!(kv.mod_revision, rev + 1);
            assert_eq!(kv.ttl_left, None);
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(
        ev[1],
        WatchEvent::Delete {
            key: "/p/x".into(),
            mod_revision: rev + 2
        }
    );
    assert!(
        matches!(&ev[2], WatchEvent::Put(kv) if kv.key == "/p/y" && kv.value == b"y2" && kv.mod_revision == rev + 4)
    );
    quiet(&mut w).await;

    // A second watch from the same list revision sees the same events.
    let mut w2 = b.watch("/p/", rev + 1).await.unwrap();
    assert_eq!(collect(&mut w2, 3).await, ev);
    // Revisions are store-wide and strictly increasing.
    let (_, rev2) = b.list("").await.unwrap();
    assert_eq!(rev2, rev + 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_lease_is_deleted_and_watchers_see_it_without_other_writers() {
    let d = tempfile::tempdir().unwrap();
    let a = LocalStore::open_with(d.path(), fast()).unwrap();
    let start = Instant::now();
    a.put("/t/lease", b"l", Some(Duration::from_secs(1)))
        .await
        .unwrap();
    a.put("/t/forever", b"f", None).await.unwrap();
    // A lease replaced by a put without one no longer expires.
    a.put("/t/was-leased", b"w", Some(Duration::from_millis(300)))
        .await
        .unwrap();
    a.put("/t/was-leased", b"w2", None).await.unwrap();
    let (kvs, rev) = a.list("/t/").await.unwrap();
    let by_key: BTreeMap<_, _> = kvs.iter().map(|kv| (kv.key.as_str(), kv)).collect();
    let left = by_key["/t/lease"]
        .ttl_left
        .expect("leased key has ttl_left");
    assert!(
        left <= Duration::from_secs(1) && left > Duration::from_millis(500),
        "{left:?}"
    );
    assert_eq!(by_key["/t/forever"].ttl_left, None);
    assert_eq!(by_key["/t/was-leased"].ttl_left, None);

    // The watcher is the only one touching the store: its poll expires.
    let b = LocalStore::open_with(d.path(), fast()).unwrap();
    let mut w = b.watch("/t/", rev + 1).await.unwrap();
    let ev = collect(&mut w, 1).await;
    let waited = start.elapsed();
    assert_eq!(
        ev,
        [WatchEvent::Delete {
            key: "/t/lease".into(),
            mod_revision: rev + 1
        }]
    );
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    eprintln!("lease of 1 s: delete seen after {waited:?}");

    assert_eq!(a.get("/t/lease").await.unwrap(), None);
    let (kvs, rev2) = a.list("/t/").await.unwrap();
    assert_eq!(rev2, rev + 1);
    assert_eq!(
        kvs.iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>(),
        ["/t/forever", "/t/was-leased"]
    );
    // The key can be created again once expired.
    assert!(a
        .create("/t/lease", b"l2", Duration::from_secs(30))
        .await
        .unwrap());
    assert!(!b
        .create("/t/lease", b"l3", Duration::from_secs(30))
        .await
        .unwrap());
    let kv = b.get("/t/lease").await.unwrap().unwrap();
    assert_eq!(kv.value, b"l2");
    assert!(kv.ttl_left.unwrap() > Duration::from_secs(29));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(a.get("/t/forever").await.unwrap().is_some());
}

#[tokio::test]
async fn list_expires_leases_too() {
    let d = tempfile::tempdir().unwrap();
    let a = LocalStore::open(d.path()).unwrap();
    a.put("/k", b"v", Some(Duration::from_millis(50)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    let (kvs, rev) = a.list("").await.unwrap();
    assert!(kvs.is_empty());
    assert_eq!(rev, 2, "the expiry took its own revision");
}

#[tokio::test]
async fn watch_from_compacted_revision_fails() {
    let d = tempfile::tempdir().unwrap();
    let a = LocalStore::open_with(d.path(), fast()).unwrap();
    for i in 0..6 {
        a.put(&format!("/c/{i}"), b"v", None).await.unwrap();
    }
    a.compact(4).await.unwrap();
    for from in [1, 4] {
        match a.watch("/c/", from).await {
            Err(StoreError::Compacted {
                requested,
                compact_revision,
            }) => assert_eq!((requested, compact_revision), (from, 4)),
            r => panic!("{r:?}"),
        }
    }
    let mut w = a.watch("/c/", 5).await.unwrap();
    let ev = collect(&mut w, 2).await;
    assert_eq!(
        ev.iter().map(WatchEvent::revision).collect::<Vec<_>>(),
        [5, 6]
    );
    assert!(matches!(a.compact(100).await, Err(StoreError::Other(_))));
}

#[tokio::test]
async fn bounded_log_compacts_by_itself() {
    let d = tempfile::tempdir().unwrap();
    let opts = LocalStoreOptions {
        max_events: 5,
        ..fast()
    };
    let a = LocalStore::open_with(d.path(), opts).unwrap();
    let mut slow = a.watch("/", 1).await.unwrap();
    for i in 0..12 {
        a.put(&format!("/k/{i}"), b"v", None).await.unwrap();
    }
    // 12 events, the last 5 kept: 1..=7 dropped.
    match a.watch("/", 3).await {
        Err(StoreError::Compacted {
            requested: 3,
            compact_revision: 7,
        }) => {}
        r => panic!("{r:?}"),
    }
    let mut w = a.watch("/", 8).await.unwrap();
    assert_eq!(
        collect(&mut w, 5)
            .await
            .iter()
            .map(WatchEvent::revision)
            .collect::<Vec<_>>(),
        [8, 9, 10, 11, 12]
    );
    // A watch that fell behind fails, and stays failed.
    for _ in 0..2 {
        match slow.next().await {
            Err(StoreError::Compacted {
                requested: 1,
                compact_revision: 7,
            }) => {}
            r => panic!("{r:?}"),
        }
    }
    // The keys themselves are all there.
    assert_eq!(a.list("/k/").await.unwrap().0.len(), 12);
}

#[tokio::test]
async fn watch_from_zero_starts_at_the_next_change() {
    let d = tempfile::tempdir().unwrap();
    let a = LocalStore::open_with(d.path(), fast()).unwrap();
    a.put("/a", b"1", None).await.unwrap();
    let mut w = a.watch("", 0).await.unwrap();
    a.put("/b", b"2", None).await.unwrap();
    let ev = collect(&mut w, 1).await;
    assert_eq!(ev.len(), 1);
    assert_eq!((ev[0].key(), ev[0].revision()), ("/b", 2));
}

#[tokio::test]
async fn bad_input_is_an_error_not_a_panic() {
    let d = tempfile::tempdir().unwrap();
    let a = LocalStore::open(d.path()).unwrap();
    assert!(matches!(
        a.put("/k", &[0xff, 0xfe], None).await,
        Err(StoreError::Other(m)) if m.contains("UTF-8")
    ));
    assert!(matches!(
        a.put("", b"v", None).await,
        Err(StoreError::Other(_))
    ));
    assert_eq!(a.list("").await.unwrap(), (vec![], 0));
}

#[tokio::test]
async fn corrupt_state_file_is_a_clear_error_naming_the_file() {
    let d = tempfile::tempdir().unwrap();
    let a = LocalStore::open(d.path()).unwrap();
    a.put("/k", b"v", None).await.unwrap();
    let state = d.path().join("state.json");
    let good = std::fs::read(&state).unwrap();
    // Torn: the first half of a valid state.
    std::fs::write(&state, &good[..good.len() / 2]).unwrap();
    let name = state.display().to_string();
    match LocalStore::open(d.path()) {
        Err(StoreError::Other(m)) => assert!(m.contains(&name) && m.contains("corrupt"), "{m}"),
        r => panic!("{r:?}"),
    }
    // An open store reports it on every operation.
    match a.list("").await {
        Err(StoreError::Other(m)) => assert!(m.contains(&name), "{m}"),
        r => panic!("{r:?}"),
    }
    match a.put("/k2", b"v", None).await {
        Err(StoreError::Other(m)) => assert!(m.contains(&name), "{m}"),
        r => panic!("{r:?}"),
    }
    std::fs::write(&state, b"\x00\x01garbage").unwrap();
    assert!(matches!(LocalStore::open(d.path()), Err(StoreError::Other(m)) if m.contains(&name)));
    std::fs::write(&state, br#"{"format":7,"whatever":true}"#).unwrap();
    assert!(
        matches!(LocalStore::open(d.path()), Err(StoreError::Other(m)) if m.contains("format 7"))
    );
    // Restored, it works again.
    std::fs::write(&state, &good).unwrap();
    assert_eq!(a.list("").await.unwrap().0.len(), 1);
}

#[tokio::test]
async fn leftover_temp_file_is_ignored_and_cleaned() {
    let d = tempfile::tempdir().unwrap();
    let a = LocalStore::open(d.path()).unwrap();
    a.put("/k", b"v", None).await.unwrap();
    let tmp = d.path().join("state.json.tmp");
    std::fs::write(&tmp, b"{\"format\":1,\"revision\":9").unwrap();
    // A running store ignores it and overwrites it on its next write.
    assert_eq!(a.list("").await.unwrap().1, 1);
    a.put("/k2", b"v", None).await.unwrap();
    assert!(!tmp.exists());
    // Opening removes one.
    std::fs::write(&tmp, b"garbage").unwrap();
    let b = LocalStore::open(d.path()).unwrap();
    assert!(!tmp.exists());
    assert_eq!(b.list("").await.unwrap().0.len(), 2);
}

/// The child side of the SIGKILL test: writes forever (does nothing when
/// run as an ordinary test).
#[test]
fn child_writer() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let s = LocalStore::open(Path::new(&dir)).unwrap();
    let value = "x".repeat(150);
    rt.block_on(async {
        for i in 0u64.. {
            s.put(
                &format!("/crash/{}", i % 500),
                value.as_bytes(),
                Some(Duration::from_secs(600)),
            )
            .await
            .unwrap();
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_killed_mid_write_leaves_a_readable_store() {
    let d = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut last: Revision = 0;
    for round in 0..4u64 {
        let mut child = Command::new(&exe)
            .args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, d.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let s = LocalStore::open(d.path()).unwrap();
        // Let it write a while, then SIGKILL at an arbitrary point.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, rev) = s.list("/crash/").await.unwrap();
            if rev >= last + 20 {
                break;
            }
            assert!(Instant::now() < deadline, "child wrote nothing");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(3 * round + 1)).await;
        child.kill().unwrap();
        child.wait().unwrap();

        let s = LocalStore::open(d.path()).unwrap();
        let (kvs, rev) = s.list("/crash/").await.unwrap();
        assert!(rev > last, "round {round}: {rev} <= {last}");
        assert!(!kvs.is_empty() && kvs.len() <= 500);
        assert!(kvs.iter().all(|kv| kv.value.len() == 150));
        // The lock died with the child: writing goes on.
        s.put("/after", b"ok", None).await.unwrap();
        last = rev + 1;
        eprintln!(
            "round {round}: killed at revision {rev}, {} keys",
            kvs.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_leases_timings() {
    let d = tempfile::tempdir().unwrap();
    let value = format!(
        "{{\"PublicIP\":\"192.168.0.1\",\"BackendType\":\"vxlan\",\"BackendData\":{{\"VNI\":1,\"VtepMAC\":\"{}\"}}}}",
        "aa:bb:cc:dd:ee:ff".repeat(4)
    );
    assert!(value.len() > 140 && value.len() < 170, "{}", value.len());
    // Populate the documented state format directly (5,000 rewrites of a
    // growing file would take minutes): 5,000 leased keys and a full log.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let key = |i: usize| {
        format!(
            "/coreos.com/network/subnets/10.{}.{}.0-24",
            i / 256,
            i % 256
        )
    };
    let mut keys = serde_json::Map::new();
    let mut events = Vec::new();
    let n = 5_000;
    let log = 10_000;
    for r in 1..=log {
        let i = (r - 1) % n;
        let exp = now_ms + 3_600_000 + r as u64;
        events.push(serde_json::json!({"revision": r, "key": key(i), "kind": "put", "value": value, "expires_at_ms": exp}));
        keys.insert(
            key(i),
            serde_json::json!({"value": value, "mod_revision": r, "expires_at_ms": exp}),
        );
    }
    let state = serde_json::json!({"format": 1, "revision": log, "compacted": 0, "keys": keys, "events": events});
    let bytes = serde_json::to_vec(&state).unwrap();
    std::fs::write(d.path().join("state.json"), &bytes).unwrap();

    let t = Instant::now();
    let s = LocalStore::open(d.path()).unwrap();
    let open = t.elapsed();
    let t = Instant::now();
    let (kvs, rev) = s.list("/coreos.com/network/subnets/").await.unwrap();
    let list = t.elapsed();
    assert_eq!((kvs.len(), rev), (n, log as i64));
    assert!(kvs.iter().all(|kv| kv.ttl_left.is_some()));

    let rounds = 20;
    let t = Instant::now();
    for i in 0..rounds {
        s.put(&key(i), value.as_bytes(), Some(Duration::from_secs(3600)))
            .await
            .unwrap();
    }
    let put = t.elapsed() / rounds as u32;
    let t = Instant::now();
    assert!(s
        .create(
            "/coreos.com/network/subnets/10.200.0.0-24",
            value.as_bytes(),
            Duration::from_secs(60)
        )
        .await
        .unwrap());
    let create = t.elapsed();
    let t = Instant::now();
    let mut w = s.watch("/coreos.com/", rev + 1).await.unwrap();
    let ev = collect(&mut w, rounds + 1).await;
    let watch = t.elapsed();
    assert_eq!(ev.len(), rounds + 1);
    let size = std::fs::metadata(d.path().join("state.json"))
        .unwrap()
        .len();
    eprintln!(
        "5,000 leases, {log} events, state {:.1} MB: open {open:?}, list {list:?}, put {put:?} (mean of {rounds}), create {create:?}, watch+first read {watch:?}",
        size as f64 / 1e6
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_reads_and_polls_do_not_rewrite_the_state() {
    use std::os::unix::fs::MetadataExt;
    let d = tempfile::tempdir().unwrap();
    let a = LocalStore::open_with(d.path(), fast()).unwrap();
    a.put("/k", b"v", Some(Duration::from_secs(60)))
        .await
        .unwrap();
    let id = |p: &Path| {
        let m = std::fs::metadata(p.join("state.json")).unwrap();
        (m.ino(), m.mtime_nsec(), m.size())
    };
    let before = id(d.path());
    let mut w = a.watch("/", 2).await.unwrap();
    quiet(&mut w).await;
    a.list("/").await.unwrap();
    a.get("/k").await.unwrap();
    a.delete("/missing").await.unwrap();
    assert!(!a.create("/k", b"x", Duration::from_secs(1)).await.unwrap());
    assert_eq!(id(d.path()), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_latency_with_the_default_poll_interval() {
    let d = tempfile::tempdir().unwrap();
    let a = LocalStore::open(d.path()).unwrap();
    let b = LocalStore::open(d.path()).unwrap();
    let (_, rev) = a.list("/").await.unwrap();
    let mut w = a.watch("/", rev + 1).await.unwrap();
    let n = 25;
    // The watcher runs concurrently and stamps each event on arrival.
    let watcher = tokio::spawn(async move {
        let mut seen = Vec::new();
        while seen.len() < n {
            for e in collect(&mut w, 1).await {
                seen.push((e.revision(), Instant::now()));
            }
        }
        seen
    });
    let mut written = Vec::new();
    for i in 0..n {
        // Spread the writes over the poll period.
        tokio::time::sleep(Duration::from_millis(13 + 7 * i as u64 % 20)).await;
        b.put(&format!("/l/{i}"), b"v", None).await.unwrap();
        written.push(Instant::now());
    }
    let seen = watcher.await.unwrap();
    let revs: Vec<_> = seen.iter().map(|s| s.0).collect();
    assert_eq!(revs, (rev + 1..=rev + n as i64).collect::<Vec<_>>());
    let lat: Vec<_> = seen
        .iter()
        .zip(&written)
        .map(|((_, at), w)| at.saturating_duration_since(*w))
        .collect();
    let mean = lat.iter().sum::<Duration>() / n as u32;
    let max = lat.iter().max().unwrap();
    eprintln!("watch latency (default poll interval, small state): mean {mean:?}, max {max:?}");
}
