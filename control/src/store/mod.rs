//! The cluster store: where leases live and how they are watched.
//!
//! Two implementations share one contract, etcd's v3 semantics reduced to
//! what flannel's layout needs:
//! - [`etcd::EtcdStore`]: a real etcd cluster (several endpoints, TLS client
//!   certificates), the store flanneld shares.
//! - [`local::LocalStore`]: an embedded store in a directory, crash-safe,
//!   which several agents on one machine share (labs, demos, single nodes).
//!
//! The contract ([`Store`]):
//! - every change gets a new, strictly larger store-wide revision;
//! - [`Store::list`] returns the keys under a prefix *and* the revision the
//!   snapshot was taken at; [`Store::watch`] from `revision + 1` then misses
//!   nothing and repeats nothing;
//! - a key may be bound to a lease with a TTL; when the lease expires the key
//!   is deleted and watchers see a delete event;
//! - [`Store::create`] succeeds only if the key does not exist (etcd's
//!   `Compare(Version(key), "=", 0)` transaction);
//! - a watch whose start revision has been compacted away fails with
//!   [`StoreError::Compacted`]: the caller lists again;
//! - [`StoreError::Unavailable`] is transient (retry with backoff), anything
//!   else is [`StoreError::Other`].

pub mod etcd;
pub mod local;

use std::future::Future;
use std::time::Duration;

/// A store-wide revision (etcd's `mod_revision`).
pub type Revision = i64;

/// One key with its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The full key.
    pub key: String,
    /// The value's bytes.
    pub value: Vec<u8>,
    /// The revision of the key's last change.
    pub mod_revision: Revision,
    /// The key is bound to a lease (false: flannel's reservations, which
    /// never expire).
    pub leased: bool,
    /// Time the key's lease has left, where the store knows it cheaply (the
    /// embedded store always; etcd on [`Store::get`] only: asking etcd per
    /// key would make a list of 5,000 leases ten times slower).
    pub ttl_left: Option<Duration>,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was created or changed.
    Put(KeyValue),
    /// The key was deleted (by hand or because its lease expired).
    Delete {
        /// The key.
        key: String,
        /// The revision of the deletion.
        mod_revision: Revision,
    },
}

impl WatchEvent {
    /// The event's revision.
    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Put(kv) => kv.mod_revision,
            WatchEvent::Delete { mod_revision, .. } => *mod_revision,
        }
    }

    /// The event's key.
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put(kv) => &kv.key,
            WatchEvent::Delete { key, .. } => key,
        }
    }
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached now; retry with backoff.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The watch's start revision was compacted; list again.
    #[error("revision {requested} compacted (oldest kept: {compact_revision})")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The store's compaction revision.
        compact_revision: Revision,
    },
    /// Anything else (bad request, corrupt store, permission denied).
    #[error("{0}")]
    Other(String),
}

/// A cluster store (see the module docs for the contract).
pub trait Store: Send + Sync + 'static {
    /// The stream of a watch.
    type Watch: Watch;

    /// The key's value, if it exists.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<KeyValue>, StoreError>> + Send;

    /// Every key under `prefix` (sorted by key) and the revision of the
    /// snapshot.
    fn list(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<(Vec<KeyValue>, Revision), StoreError>> + Send;

    /// Creates `key` bound to a new lease of `ttl`, only if the key does not
    /// exist. `Ok(true)`: created; `Ok(false)`: the key exists (someone else
    /// won the race).
    fn create(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Writes `key` (created or replaced) bound to a new lease of `ttl`
    /// (flannel's renewal: a fresh lease, the same key), or without a lease
    /// when `ttl` is `None`.
    fn put(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Deletes `key`; deleting a missing key is fine.
    fn delete(&self, key: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Watches every key under `prefix` from revision `from` (inclusive).
    fn watch(
        &self,
        prefix: &str,
        from: Revision,
    ) -> impl Future<Output = Result<Self::Watch, StoreError>> + Send;
}

/// An open watch.
pub trait Watch: Send + 'static {
    /// The next events, in revision order (waits until there are some).
    /// An error ends the watch: the caller opens a new one.
    fn next(&mut self) -> impl Future<Output = Result<Vec<WatchEvent>, StoreError>> + Send;
}

/// Either store, chosen at run time (the agent's settings, `sluice-lab`'s
/// `--store`): one type for code that works on whichever is configured.
#[derive(Debug, Clone)]
pub enum AnyStore {
    /// etcd.
    Etcd(Box<etcd::EtcdStore>),
    /// The embedded store.
    Local(local::LocalStore),
}

/// A watch on [`AnyStore`].
#[derive(Debug)]
pub enum AnyWatch {
    /// On etcd.
    Etcd(etcd::EtcdWatch),
    /// On the embedded store.
    Local(local::LocalWatch),
}

impl AnyStore {
    /// Drops the history up to `revision`; watches from at or below it must
    /// list again.
    pub async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        match self {
            AnyStore::Etcd(s) => s.compact(revision).await,
            AnyStore::Local(s) => s.compact(revision).await,
        }
    }
}

impl Store for AnyStore {
    type Watch = AnyWatch;

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        match self {
            AnyStore::Etcd(s) => s.get(key).await,
            AnyStore::Local(s) => s.get(key).await,
        }
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        match self {
            AnyStore::Etcd(s) => s.list(prefix).await,
            AnyStore::Local(s) => s.list(prefix).await,
        }
    }

    async fn create(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, StoreError> {
        match self {
            AnyStore::Etcd(s) => s.create(key, value, ttl).await,
            AnyStore::Local(s) => s.create(key, value, ttl).await,
        }
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), StoreError> {
        match self {
            AnyStore::Etcd(s) => s.put(key, value, ttl).await,
            AnyStore::Local(s) => s.put(key, value, ttl).await,
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self {
            AnyStore::Etcd(s) => s.delete(key).await,
            AnyStore::Local(s) => s.delete(key).await,
        }
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<AnyWatch, StoreError> {
        Ok(match self {
            AnyStore::Etcd(s) => AnyWatch::Etcd(s.watch(prefix, from).await?),
            AnyStore::Local(s) => AnyWatch::Local(s.watch(prefix, from).await?),
        })
    }
}

impl Watch for AnyWatch {
    async fn next(&mut self) -> Result<Vec<WatchEvent>, StoreError> {
        match self {
            AnyWatch::Etcd(w) => w.next().await,
            AnyWatch::Local(w) => w.next().await,
        }
    }
}
