//! The embedded store: etcd's semantics (as [`super`] states them) in a
//! directory, for single machines, labs and demos where no etcd runs.
//!
//! Layout: `<dir>/state.json` holds everything (a format number, the
//! revision, the compaction revision, every key with its value, revision and
//! expiry, and the recent events); `<dir>/lock` is the lock file.
//!
//! Invariants and reasons:
//! - **Several processes share it** (a lab's agents, each in its own network
//!   namespace, one filesystem). Every operation takes an exclusive lock on
//!   `lock` (`flock`, released when the file closes, also when the process
//!   dies), reads the state, changes it and writes it back. An embedded
//!   database (redb, sled) locks its file to one process, so files it is.
//! - **Crash-safe**: the new state is written to a temporary file in the same
//!   directory, synced, renamed over `state.json`, and the directory synced.
//!   A crash leaves the old state or the new one, never a torn one; a
//!   leftover temporary file is ignored (and replaced by the next write).
//! - **Revisions** are store-wide and strictly increasing; each change
//!   (put, delete, expiry) takes the next one.
//! - **Leases** are absolute expiry times (milliseconds since the Unix
//!   epoch), so every process agrees. An expired key is deleted, with its own
//!   revision and a delete event, by whichever process next takes the lock:
//!   a writer, a reader, or a watcher whose poll finds an expiry due.
//! - **History**: the last [`DEFAULT_HISTORY`] events are kept; older ones
//!   are dropped and `compacted` becomes the revision of the last dropped
//!   one. A watch from a revision at or below `compacted` fails with
//!   [`StoreError::Compacted`], as etcd's does.
//! - **Watches poll**: every [`DEFAULT_POLL`] a watcher looks at the state
//!   file's size, time and inode; only if they changed (or an expiry is due)
//!   does it read the file. A change reaches a watcher in half the poll
//!   interval on average.
//! - A corrupt state file is an error naming the file, never a panic, and is
//!   never overwritten: the operator decides what to do with it.

use super::{KeyValue, Revision, Store, StoreError, Watch, WatchEvent};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Events kept for watches.
pub const DEFAULT_HISTORY: usize = 10_000;
/// How often a watcher looks at the state file.
pub const DEFAULT_POLL: Duration = Duration::from_millis(10);
/// The state file's format.
const FORMAT: u32 = 1;
const STATE: &str = "state.json";
const LOCK: &str = "lock";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    value: String,
    mod_revision: Revision,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Event {
    revision: Revision,
    key: String,
    /// The new value; `None` for a delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    format: u32,
    revision: Revision,
    compacted: Revision,
    keys: BTreeMap<String, Entry>,
    events: VecDeque<Event>,
}

impl Default for State {
    fn default() -> Self {
        State {
            format: FORMAT,
            revision: 0,
            compacted: 0,
            keys: BTreeMap::new(),
            events: VecDeque::new(),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl State {
    fn record(&mut self, key: &str, value: Option<String>, expires_at_ms: Option<u64>) -> Revision {
        self.revision += 1;
        let revision = self.revision;
        match &value {
            Some(v) => {
                self.keys.insert(
                    key.to_string(),
                    Entry {
                        value: v.clone(),
                        mod_revision: revision,
                        expires_at_ms,
                    },
                );
            }
            None => {
                self.keys.remove(key);
            }
        }
        self.events.push_back(Event {
            revision,
            key: key.to_string(),
            value,
            expires_at_ms,
        });
        revision
    }

    /// Deletes expired keys; true if any.
    fn expire(&mut self, now: u64) -> bool {
        let gone: Vec<String> = self
            .keys
            .iter()
            .filter(|(_, e)| e.expires_at_ms.is_some_and(|t| t <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &gone {
            self.record(k, None, None);
        }
        !gone.is_empty()
    }

    fn trim(&mut self, history: usize) {
        while self.events.len() > history {
            if let Some(e) = self.events.pop_front() {
                self.compacted = e.revision;
            }
        }
    }

    fn next_expiry(&self) -> Option<u64> {
        self.keys.values().filter_map(|e| e.expires_at_ms).min()
    }

    fn kv(&self, key: &str, e: &Entry, now: u64) -> KeyValue {
        KeyValue {
            key: key.to_string(),
            value: e.value.clone().into_bytes(),
            mod_revision: e.mod_revision,
            leased: e.expires_at_ms.is_some(),
            ttl_left: e
                .expires_at_ms
                .map(|t| Duration::from_millis(t.saturating_sub(now))),
        }
    }
}

/// The embedded store in one directory (see the module docs).
#[derive(Debug, Clone)]
pub struct LocalStore {
    dir: PathBuf,
    history: usize,
    poll: Duration,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Other(format!("{what} {}: {e}", path.display()))
}

fn utf8(value: &[u8]) -> Result<String, StoreError> {
    String::from_utf8(value.to_vec())
        .map_err(|_| StoreError::Other("the embedded store keeps UTF-8 values only".into()))
}

impl LocalStore {
    /// Opens (creating it if needed) the store in `dir`, checking that its
    /// state can be read.
    pub fn open(dir: &Path) -> Result<LocalStore, StoreError> {
        LocalStore::open_with(dir, DEFAULT_HISTORY, DEFAULT_POLL)
    }

    /// [`LocalStore::open`] with another history length and poll interval.
    pub fn open_with(dir: &Path, history: usize, poll: Duration) -> Result<LocalStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| io_err("creating", dir, e))?;
        let store = LocalStore {
            dir: dir.to_path_buf(),
            history: history.max(1),
            poll,
        };
        store.locked(|_| Ok(((), false)))?;
        Ok(store)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join(STATE)
    }

    fn read_state(&self) -> Result<State, StoreError> {
        let path = self.state_path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
            Err(e) => return Err(io_err("reading", &path, e)),
        };
        let state: State = serde_json::from_slice(&bytes).map_err(|e| {
            StoreError::Other(format!(
                "{}: not a sluice store state file ({e}); move it away to start empty",
                path.display()
            ))
        })?;
        if state.format != FORMAT {
            return Err(StoreError::Other(format!(
                "{}: format {} (this agent reads format {FORMAT})",
                path.display(),
                state.format
            )));
        }
        Ok(state)
    }

    fn write_state(&self, state: &State) -> Result<(), StoreError> {
        let path = self.state_path();
        let tmp = self
            .dir
            .join(format!(".{STATE}.{}.tmp", std::process::id()));
        let bytes = serde_json::to_vec(state)
            .map_err(|e| StoreError::Other(format!("encoding the store state: {e}")))?;
        let result = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(io_err("writing", &path, e));
        }
        Ok(())
    }

    /// Runs `f` on the state under the lock, after expiring leases; `f`
    /// says whether it changed the state. The state is written back only if
    /// something changed.
    fn locked<T>(
        &self,
        f: impl FnOnce(&mut State) -> Result<(T, bool), StoreError>,
    ) -> Result<T, StoreError> {
        let lock_path = self.dir.join(LOCK);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_err("opening", &lock_path, e))?;
        lock.lock().map_err(|e| io_err("locking", &lock_path, e))?;
        let mut state = self.read_state()?;
        let expired = state.expire(now_ms());
        let (out, changed) = f(&mut state)?;
        if expired || changed {
            state.trim(self.history);
            self.write_state(&state)?;
        }
        drop(lock);
        Ok(out)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&LocalStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me))
            .await
            .map_err(|e| StoreError::Other(format!("store task: {e}")))?
    }

    /// Drops the history up to `revision` (etcd's compaction): watches from
    /// at or below it must list again.
    pub fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.locked(|s| {
            if revision > s.revision {
                return Err(StoreError::Other(format!(
                    "cannot compact to {revision}: the store is at {}",
                    s.revision
                )));
            }
            let before = s.events.len();
            while s.events.front().is_some_and(|e| e.revision <= revision) {
                s.events.pop_front();
            }
            let changed = before != s.events.len() || s.compacted < revision;
            s.compacted = s.compacted.max(revision);
            Ok(((), changed))
        })
    }

    /// The current revision.
    pub fn revision(&self) -> Result<Revision, StoreError> {
        self.locked(|s| Ok((s.revision, false)))
    }
}

impl Store for LocalStore {
    type Watch = LocalWatch;

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let key = key.to_string();
        self.blocking(move |me| {
            me.locked(|s| {
                let now = now_ms();
                Ok((s.keys.get(&key).map(|e| s.kv(&key, e, now)), false))
            })
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let prefix = prefix.to_string();
        self.blocking(move |me| {
            me.locked(|s| {
                let now = now_ms();
                let kvs = s
                    .keys
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .map(|(k, e)| s.kv(k, e, now))
                    .collect();
                Ok(((kvs, s.revision), false))
            })
        })
        .await
    }

    async fn create(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, StoreError> {
        let (key, value) = (key.to_string(), utf8(value)?);
        self.blocking(move |me| {
            me.locked(|s| {
                if s.keys.contains_key(&key) {
                    return Ok((false, false));
                }
                let expires = now_ms() + ttl.as_millis() as u64;
                s.record(&key, Some(value), Some(expires));
                Ok((true, true))
            })
        })
        .await
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), StoreError> {
        let (key, value) = (key.to_string(), utf8(value)?);
        self.blocking(move |me| {
            me.locked(|s| {
                let expires = ttl.map(|t| now_ms() + t.as_millis() as u64);
                s.record(&key, Some(value), expires);
                Ok(((), true))
            })
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let key = key.to_string();
        self.blocking(move |me| {
            me.locked(|s| {
                if !s.keys.contains_key(&key) {
                    return Ok(((), false));
                }
                s.record(&key, None, None);
                Ok(((), true))
            })
        })
        .await
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<LocalWatch, StoreError> {
        let mut w = LocalWatch {
            store: self.clone(),
            prefix: prefix.to_string(),
            next: from.max(1),
            seen: None,
            next_expiry: None,
            pending: Vec::new(),
        };
        // Fails now if `from` is compacted; keeps what is already there.
        w.pending = w.refresh().await?;
        Ok(w)
    }
}

/// A watch on the embedded store (polls; see the module docs).
#[derive(Debug)]
pub struct LocalWatch {
    store: LocalStore,
    prefix: String,
    next: Revision,
    /// The state file's (len, mtime, inode) when last read.
    seen: Option<(u64, SystemTime, u64)>,
    next_expiry: Option<u64>,
    pending: Vec<WatchEvent>,
}

impl LocalWatch {
    fn stamp(&self) -> Option<(u64, SystemTime, u64)> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(self.store.state_path()).ok()?;
        Some((m.len(), m.modified().ok()?, m.ino()))
    }

    /// Events from `next` under the prefix, and the next expiry.
    fn read_events(&mut self) -> Result<(Vec<WatchEvent>, Option<u64>), StoreError> {
        let stamp_before = self.stamp();
        let (prefix, next) = (self.prefix.clone(), self.next);
        let out = self.store.locked(|s| {
            if next <= s.compacted {
                return Err(StoreError::Compacted {
                    requested: next,
                    compact_revision: s.compacted,
                });
            }
            let events = s
                .events
                .iter()
                .filter(|e| e.revision >= next && e.key.starts_with(&prefix))
                .map(|e| match &e.value {
                    Some(v) => WatchEvent::Put(KeyValue {
                        key: e.key.clone(),
                        value: v.clone().into_bytes(),
                        mod_revision: e.revision,
                        leased: e.expires_at_ms.is_some(),
                        ttl_left: e
                            .expires_at_ms
                            .map(|t| Duration::from_millis(t.saturating_sub(now_ms()))),
                    }),
                    None => WatchEvent::Delete {
                        key: e.key.clone(),
                        mod_revision: e.revision,
                    },
                })
                .collect::<Vec<_>>();
            Ok(((events, s.revision, s.next_expiry()), false))
        })?;
        let (events, revision, next_expiry) = out;
        self.next = self.next.max(revision + 1);
        // An expiry done by this read rewrote the file: take the new stamp.
        self.seen = self.stamp().or(stamp_before);
        Ok((events, next_expiry))
    }
}

impl LocalWatch {
    /// [`LocalWatch::read_events`] off the async threads.
    async fn refresh(&mut self) -> Result<Vec<WatchEvent>, StoreError> {
        let mut me = LocalWatch {
            store: self.store.clone(),
            prefix: self.prefix.clone(),
            next: self.next,
            seen: self.seen,
            next_expiry: self.next_expiry,
            pending: Vec::new(),
        };
        let (me, r) = tokio::task::spawn_blocking(move || {
            let r = me.read_events();
            (me, r)
        })
        .await
        .map_err(|e| StoreError::Other(format!("watch task: {e}")))?;
        self.next = me.next;
        self.seen = me.seen;
        let (events, next_expiry) = r?;
        self.next_expiry = next_expiry;
        Ok(events)
    }
}

impl Watch for LocalWatch {
    async fn next(&mut self) -> Result<Vec<WatchEvent>, StoreError> {
        if !self.pending.is_empty() {
            return Ok(std::mem::take(&mut self.pending));
        }
        loop {
            let changed = self.stamp() != self.seen;
            let expiry_due = self.next_expiry.is_some_and(|t| t <= now_ms());
            if changed || expiry_due {
                let events = self.refresh().await?;
                if !events.is_empty() {
                    return Ok(events);
                }
            }
            tokio::time::sleep(self.store.poll).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn revisions_increase_and_list_is_sorted_by_key_under_the_prefix() {
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let s = LocalStore::open(dir.path()).unwrap();
            s.put("/p/b", b"2", None).await.unwrap();
            s.put("/p/a", b"1", None).await.unwrap();
            s.put("/q/a", b"x", None).await.unwrap();
            let (kvs, rev) = s.list("/p/").await.unwrap();
            assert_eq!(rev, 3);
            let keys: Vec<_> = kvs.iter().map(|k| (k.key.as_str(), k.mod_revision)).collect();
            assert_eq!(keys, [("/p/a", 2), ("/p/b", 1)]);
            assert!(kvs.iter().all(|k| !k.leased && k.ttl_left.is_none()));
            assert!(!s.create("/p/a", b"again", Duration::from_secs(5)).await.unwrap());
            assert!(s.create("/p/c", b"3", Duration::from_secs(5)).await.unwrap());
            let c = s.get("/p/c").await.unwrap().unwrap();
            assert!(c.leased && c.ttl_left.unwrap() <= Duration::from_secs(5));
            s.delete("/p/a").await.unwrap();
            s.delete("/p/missing").await.unwrap();
            assert_eq!(s.revision().unwrap(), 5, "deleting a missing key is no change");
        });
    }

    #[test]
    fn a_corrupt_state_file_is_named_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE), b"{\"format\":1,\"revis").unwrap();
        let e = LocalStore::open(dir.path()).unwrap_err();
        assert!(e.to_string().contains("state.json"), "{e}");
        assert_eq!(std::fs::read(dir.path().join(STATE)).unwrap(), b"{\"format\":1,\"revis");
        std::fs::write(dir.path().join(STATE), br#"{"format":9,"revision":0,"compacted":0,"keys":{},"events":[]}"#).unwrap();
        let e = LocalStore::open(dir.path()).unwrap_err();
        assert!(e.to_string().contains("format 9"), "{e}");
    }

    #[test]
    fn a_leftover_temporary_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let s = LocalStore::open(dir.path()).unwrap();
            s.put("/k", b"v", None).await.unwrap();
            std::fs::write(dir.path().join(".state.json.1.tmp"), b"half a wri").unwrap();
            let s = LocalStore::open(dir.path()).unwrap();
            assert_eq!(s.get("/k").await.unwrap().unwrap().value, b"v");
            s.put("/k", b"w", None).await.unwrap();
        });
    }

    #[test]
    fn the_history_is_bounded_and_old_watches_are_told_to_list_again() {
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let s = LocalStore::open_with(dir.path(), 3, DEFAULT_POLL).unwrap();
            for i in 0..5 {
                s.put(&format!("/k/{i}"), b"v", None).await.unwrap();
            }
            // Revisions 1 and 2 are gone; 3, 4, 5 remain.
            assert!(matches!(
                s.watch("/k/", 2).await,
                Err(StoreError::Compacted { requested: 2, compact_revision: 2 })
            ));
            let mut w = s.watch("/k/", 3).await.unwrap();
            let revs: Vec<_> = w.next().await.unwrap().iter().map(|e| e.revision()).collect();
            assert_eq!(revs, [3, 4, 5]);
            s.compact(5).unwrap();
            assert!(matches!(s.watch("/k/", 5).await, Err(StoreError::Compacted { .. })));
            assert!(s.compact(99).is_err());
        });
    }
}
